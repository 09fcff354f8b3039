//! The ICMP errors the data path cannot send itself, sent by the controller through
//! a raw IPv4 socket (`IPPROTO_RAW`, so natgw writes the IPv4 header and chooses the
//! source address):
//! - port unreachable for an unsolicited SYN held 6 s without an outbound SYN
//!   answering it (RFC 5382 REQ-4; the garbage collector finds them, see
//!   [`crate::nat_table::gc::held_syns`]);
//! - for a packet no mapping could be created for (ports or table exhausted, or a
//!   per-host limit reached), which the data path reports through the `EVENTS` ring
//!   buffer: communication administratively prohibited (code 13, RFC 5508 REQ-8) or
//!   host unreachable (code 1, RFC 6888 REQ-11), as `--no-mapping-icmp` says; it
//!   goes from the address of the LAN interface the packet arrived on.
//!
//! Every error passes one token bucket ([`RATE_PER_SEC`], [`BURST`]), so neither a
//! SYN scan of the external address nor a LAN host hammering a full table turns
//! natgw into an ICMP flood (RFC 1812 §4.3.2.8). What is sent, limited or failed is
//! counted in [`Counters`], which `natgw status` shows.

pub mod packet;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};
use natgw_common::maps::{Event, EventKind, HeldSyn, SessionKey};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

use crate::config::NoMappingIcmp;
use crate::datapath::maps::{ipv4, port};
use natgw_common::packet::icmp::{CODE_ADMIN_PROHIBITED, CODE_HOST_UNREACHABLE};
use natgw_proto::util::bucket::{TokenBucket, Verdict};
use natgw_proto::util::clock::Nanos;

/// Errors per second the bucket refills.
pub const RATE_PER_SEC: u64 = 100;
/// Errors the bucket holds when full.
pub const BURST: u64 = 50;

/// Which error a packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Type 3 code 3 for a held SYN.
    PortUnreachable,
    /// Type 3 code 13 for a packet without a mapping.
    AdminProhibited,
    /// Type 3 code 1 for a packet without a mapping.
    HostUnreachable,
}

impl ErrorKind {
    /// The error for packets without a mapping under `choice`, and its ICMP code.
    #[must_use]
    pub const fn for_no_mapping(choice: NoMappingIcmp) -> (Self, u8) {
        match choice {
            NoMappingIcmp::AdminProhibited => (Self::AdminProhibited, CODE_ADMIN_PROHIBITED),
            NoMappingIcmp::HostUnreachable => (Self::HostUnreachable, CODE_HOST_UNREACHABLE),
        }
    }
}

/// The controller's counters.
#[derive(Debug, Default)]
pub struct Counters {
    sent_port_unreachable: AtomicU64,
    sent_admin_prohibited: AtomicU64,
    sent_host_unreachable: AtomicU64,
    rate_limited: AtomicU64,
    send_failed: AtomicU64,
    not_answerable: AtomicU64,
    held_syns_expired: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a held SYN that waited its 6 s (answered or not, by policy).
    pub fn held_syn_expired(&self) {
        Self::add(&self.held_syns_expired);
    }

    /// Every counter by its name in `natgw status`.
    #[must_use]
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        [
            ("icmp_sent_port_unreachable", &self.sent_port_unreachable),
            ("icmp_sent_admin_prohibited", &self.sent_admin_prohibited),
            ("icmp_sent_host_unreachable", &self.sent_host_unreachable),
            ("icmp_rate_limited", &self.rate_limited),
            ("icmp_send_failed", &self.send_failed),
            ("icmp_not_answerable", &self.not_answerable),
            ("held_syns_expired", &self.held_syns_expired),
        ]
        .into_iter()
        .map(|(name, c)| (name.to_owned(), c.load(Ordering::Relaxed)))
        .collect()
    }
}

/// Sends natgw's ICMP errors: the raw socket, the rate limit and the counters.
/// Shared by the garbage collector and the event reader.
#[derive(Debug)]
pub struct IcmpSender {
    socket: Option<OwnedFd>,
    bucket: Mutex<TokenBucket<Nanos>>,
    counters: Counters,
    warned: AtomicBool,
    /// The error for packets without a mapping.
    no_mapping: NoMappingIcmp,
}

impl IcmpSender {
    /// Opens the raw socket. Without it (no `CAP_NET_RAW`) natgw runs on and counts
    /// every error it cannot send. Packets without a mapping are answered as
    /// `no_mapping` says.
    #[must_use]
    pub fn open(now_ns: u64, no_mapping: NoMappingIcmp) -> Self {
        let socket = match socket::socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::Raw,
        ) {
            Ok(fd) => Some(fd),
            Err(e) => {
                log::warn!(
                    "icmp.unavailable error=\"{e}\": natgw cannot send ICMP errors (needs \
                     CAP_NET_RAW); held SYNs expire silently"
                );
                None
            }
        };
        Self {
            socket,
            bucket: Mutex::new(TokenBucket::new(RATE_PER_SEC, BURST, Nanos(now_ns))),
            counters: Counters::default(),
            warned: AtomicBool::new(false),
            no_mapping,
        }
    }

    /// The counters.
    #[must_use]
    pub const fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Sends `packet` (a complete IPv4 packet) to `dst` unless the rate limit says no.
    pub fn send(&self, kind: ErrorKind, dst: Ipv4Addr, packet: &[u8], now_ns: u64) {
        let allowed = self
            .bucket
            .lock()
            .is_ok_and(|mut b| b.take(Nanos(now_ns)) == Verdict::Allow);
        if !allowed {
            Counters::add(&self.counters.rate_limited);
            return;
        }
        let result = match &self.socket {
            Some(fd) => socket::sendto(
                fd.as_raw_fd(),
                packet,
                &socket::SockaddrIn::from(SocketAddrV4::new(dst, 0)),
                MsgFlags::MSG_DONTWAIT,
            )
            .map(drop)
            .map_err(|e| e.to_string()),
            None => Err("no raw socket".to_owned()),
        };
        match result {
            Ok(()) => Counters::add(match kind {
                ErrorKind::PortUnreachable => &self.counters.sent_port_unreachable,
                ErrorKind::AdminProhibited => &self.counters.sent_admin_prohibited,
                ErrorKind::HostUnreachable => &self.counters.sent_host_unreachable,
            }),
            Err(e) => {
                Counters::add(&self.counters.send_failed);
                if self.socket.is_some() && !self.warned.swap(true, Ordering::Relaxed) {
                    log::warn!("icmp.send_failed to={dst} kind={kind:?} error=\"{e}\"");
                } else {
                    log::debug!("icmp.send_failed to={dst} kind={kind:?} error=\"{e}\"");
                }
            }
        }
    }

    /// Ends a held SYN: port unreachable to its sender (RFC 5382 REQ-4).
    pub fn port_unreachable(&self, key: &SessionKey, held: &HeldSyn, now_ns: u64) {
        let (dst, p) = packet::port_unreachable_for(key, held);
        self.send(ErrorKind::PortUnreachable, dst, &p, now_ns);
    }

    /// Handles one event from the data path; `lan_addrs` maps a LAN ifindex to the
    /// address errors about packets that arrived there come from.
    pub fn handle_event(&self, event: &Event, lan_addrs: &HashMap<u32, Ipv4Addr>, now_ns: u64) {
        if event.kind != EventKind::NoMapping as u8 {
            Counters::add(&self.counters.not_answerable);
            log::debug!("event.unknown kind={}", event.kind);
            return;
        }
        let Some(from) = lan_addrs.get(&event.ifindex) else {
            Counters::add(&self.counters.not_answerable);
            log::debug!(
                "event.no_source ifindex={}: no IPv4 address to send ICMP from",
                event.ifindex
            );
            return;
        };
        let (kind, code) = ErrorKind::for_no_mapping(self.no_mapping);
        let Some((dst, p)) = packet::no_mapping_error_for(&event.snippet, *from, code) else {
            Counters::add(&self.counters.not_answerable);
            return;
        };
        log::debug!(
            "icmp.no_mapping to={dst} from={from} code={code} proto={} sport={}",
            event.snippet[9],
            u16::from_be_bytes([event.snippet[20], event.snippet[21]]),
        );
        self.send(kind, dst, &p, now_ns);
    }
}

/// An event record from the ring buffer; `None` when it is too short.
#[must_use]
pub fn decode_event(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: `bytes` holds at least one `Event`, a plain `repr(C)` struct of
    // integers for which every bit pattern is valid; the read is unaligned-safe.
    Some(unsafe { bytes.as_ptr().cast::<Event>().read_unaligned() })
}

/// Reads `EVENTS` until aborted and answers each event.
pub fn spawn_event_reader(
    ring: RingBuf<MapData>,
    sender: Arc<IcmpSender>,
    lan_addrs: HashMap<u32, Ipv4Addr>,
) -> Option<JoinHandle<()>> {
    // SAFETY: the ring buffer owns the map fd it returns; the fd stays open and
    // unchanged for as long as the ring buffer (owned by the AsyncFd) lives.
    let registered = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!(
                "events.unavailable error={e}: no ICMP errors for packets without a mapping"
            );
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    log::warn!("events.stopped error={e}");
                    return;
                }
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                match decode_event(&item) {
                    Some(event) => {
                        sender.handle_event(
                            &event,
                            &lan_addrs,
                            crate::datapath::system::monotonic_ns(),
                        );
                    }
                    None => log::debug!("events.short len={}", item.len()),
                }
            }
            guard.clear_ready();
        }
    }))
}

/// `remote -> ext` of a held SYN, for log lines.
#[must_use]
pub fn describe_held(key: &SessionKey) -> String {
    format!(
        "remote={} ext={}",
        SocketAddrV4::new(ipv4(key.remote_addr_be), port(key.remote_port_be)),
        SocketAddrV4::new(ipv4(key.ext_addr_be), port(key.ext_port_be)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_common::maps::EVENT_SNIPPET;

    fn event(kind: u8, ifindex: u32) -> Event {
        let mut snippet = [0u8; EVENT_SNIPPET];
        snippet[0] = 0x45;
        snippet[9] = natgw_common::IPPROTO_UDP;
        snippet[12..16].copy_from_slice(&[10, 0, 2, 2]);
        snippet[16..20].copy_from_slice(&[198, 51, 100, 2]);
        Event::new(kind, ifindex, snippet)
    }

    #[test]
    fn events_decode_from_ring_bytes() {
        let e = event(EventKind::NoMapping as u8, 7);
        // SAFETY: viewing a plain struct as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<Event>()) };
        assert_eq!(decode_event(bytes), Some(e));
        assert_eq!(decode_event(&bytes[..10]), None);
    }

    fn offline_sender() -> IcmpSender {
        IcmpSender {
            socket: None,
            bucket: Mutex::new(TokenBucket::new(RATE_PER_SEC, 2, Nanos(0))),
            counters: Counters::default(),
            warned: AtomicBool::new(false),
            no_mapping: NoMappingIcmp::AdminProhibited,
        }
    }

    #[test]
    fn the_no_mapping_error_is_the_configured_one() {
        // rfc5508 REQ-8 (code 13), rfc6888 REQ-11b (code 1)
        assert_eq!(
            ErrorKind::for_no_mapping(NoMappingIcmp::AdminProhibited),
            (ErrorKind::AdminProhibited, 13)
        );
        assert_eq!(
            ErrorKind::for_no_mapping(NoMappingIcmp::HostUnreachable),
            (ErrorKind::HostUnreachable, 1)
        );
    }

    #[test]
    fn events_without_a_source_address_or_of_unknown_kind_are_counted() {
        let s = offline_sender();
        let lans = HashMap::from([(3, Ipv4Addr::new(10, 0, 2, 1))]);
        s.handle_event(&event(EventKind::NoMapping as u8, 9), &lans, 0);
        s.handle_event(&event(99, 3), &lans, 0);
        let c = s.counters().snapshot();
        assert_eq!(c["icmp_not_answerable"], 2);
        assert_eq!(c["icmp_send_failed"], 0);
    }

    #[test]
    fn sends_beyond_the_burst_are_counted_as_rate_limited() {
        let s = offline_sender();
        let lans = HashMap::from([(3, Ipv4Addr::new(10, 0, 2, 1))]);
        for _ in 0..5 {
            s.handle_event(&event(EventKind::NoMapping as u8, 3), &lans, 0);
        }
        let c = s.counters().snapshot();
        // Two passed the bucket (and failed: no socket), three were limited.
        assert_eq!(c["icmp_send_failed"], 2);
        assert_eq!(c["icmp_rate_limited"], 3);
        assert_eq!(c["icmp_sent_admin_prohibited"], 0);
    }
}
