//! Out-of-order fragments (RFC 4787 REQ-14: a NAT MUST handle fragments arriving
//! out of order) of datagrams to an external address, from the WAN or from an
//! internal host. A later fragment that reaches `tc_wan_ingress` or `tc_lan_ingress`
//! before its datagram's first fragment cannot be handled yet — only the first
//! fragment says where the datagram goes: through a mapping to an internal host, to
//! the gateway itself, or from an internal host to a service of the gateway — so the
//! data path copies it into `FRAG_STASH` and drops it. Once the first fragment has
//! been seen (`FRAGS_IN` has the datagram and its [`FragFate`]), this module sends
//! the stashed fragment on through a raw socket (`IPPROTO_RAW`, which implies
//! `IP_HDRINCL`), as [`Onward`] says: to the internal host with the destination
//! rewritten and the TTL decremented as forwarding would, or to the gateway's own
//! address — untouched, or with the source and identification its first fragment
//! got — where the kernel reassembles it with the fragments that came through the
//! data path. The kernel keeps the identification, fragment offset and MF flag as
//! given (it only fills in a zero identification, so such fragments are dropped here
//! instead).
//!
//! Fragments still waiting after the reassembly timeout are deleted and counted. The
//! stash is polled every [`POLL_INTERVAL`]: one map syscall when it is empty.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, warn};
use natgw_common::csum;
use natgw_common::maps::{FragFate, FragValue, StashKey, MAX_STASHED_FRAGMENT_LEN};
use natgw_common::packet::{ipv4, IPV4_MIN_HLEN};
use natgw_common::NS_PER_SEC;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use tokio::task::JoinHandle;

use crate::datapath::maps::{ipv4, FragmentMaps, FragmentTables, MapsError};

/// How often the stash is checked: short enough that a datagram whose first
/// fragment came last is delivered a few tens of milliseconds late, long enough that
/// an idle gateway does not notice.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// How long a stashed fragment waits for its first fragment: the reassembly timeout
/// (RFC 791 suggests 15 s as a lower bound; Linux's `ipfrag_time` is 30 s), after
/// which the receiver would have discarded the datagram anyway.
pub const REASSEMBLY_TIMEOUT_NS: u64 = 30 * NS_PER_SEC;

/// Why a stashed fragment is not sent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsendable {
    /// Not a well-formed IPv4 later fragment: version, header length, total length,
    /// fragment offset or header checksum wrong (the data path stashes before the
    /// kernel's own header checks).
    Malformed,
    /// Its TTL would reach 0 at this hop.
    TtlExpired,
    /// Identification 0: the kernel replaces a zero identification in a raw packet,
    /// so the fragment could never join its datagram.
    ZeroId,
    /// The first fragment's record names no fate this controller knows.
    UnknownFate,
}

impl Unsendable {
    /// Name for log lines.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TtlExpired => "ttl_expired",
            Self::ZeroId => "zero_id",
            Self::UnknownFate => "unknown_fate",
        }
    }
}

/// Where a held fragment goes, as its datagram's first fragment decided
/// ([`FragFate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Onward {
    /// Forwarded to the internal host the datagram was translated to.
    ToInternal(Ipv4Addr),
    /// Delivered to the gateway itself untouched.
    Local,
    /// Delivered to the gateway itself from an internal host, with the source (the
    /// host's external address) and identification its first fragment got.
    HairpinLocal {
        /// The new source address.
        src: Ipv4Addr,
        /// The new identification.
        id: u16,
    },
}

impl Onward {
    /// What `first`'s record says; `None` for a fate this controller does not know.
    #[must_use]
    pub fn of(first: &FragValue) -> Option<Self> {
        Some(match FragFate::from_u8(first.fate)? {
            FragFate::ToInternal => Self::ToInternal(ipv4(first.addr_be)),
            FragFate::Local => Self::Local,
            FragFate::HairpinLocal => Self::HairpinLocal {
                src: ipv4(first.addr_be),
                id: u16::from_be(first.new_id_be),
            },
        })
    }

    /// Where a fragment of a datagram addressed to `ext` is sent.
    #[must_use]
    pub const fn destination(self, ext: Ipv4Addr) -> Ipv4Addr {
        match self {
            Self::ToInternal(int) => int,
            Self::Local | Self::HairpinLocal { .. } => ext,
        }
    }
}

/// The later fragment `packet` (a whole IPv4 packet as received) as it goes on
/// ([`Onward`]): to an internal host with the destination rewritten and the TTL
/// decremented, untouched to the gateway, or to the gateway with a new source and
/// identification; the header checksum updated (RFC 1624). Everything else — the
/// flags, offset and payload — is kept.
///
/// # Errors
/// [`Unsendable`] says why the fragment cannot be sent on.
pub fn translate(packet: &[u8], onward: Onward) -> Result<Vec<u8>, Unsendable> {
    let word = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    if packet.len() < IPV4_MIN_HLEN || packet[ipv4::VER_IHL] >> 4 != 4 {
        return Err(Unsendable::Malformed);
    }
    let header_len = usize::from(packet[ipv4::VER_IHL] & 0x0f) * 4;
    if header_len < IPV4_MIN_HLEN
        || header_len > packet.len()
        || usize::from(word(ipv4::TOT_LEN)) != packet.len()
        || word(ipv4::FRAG) & ipv4::OFFSET_MASK == 0
        || csum::checksum(&packet[..header_len], 0) != 0
    {
        return Err(Unsendable::Malformed);
    }
    let address = |at: usize| [packet[at], packet[at + 1], packet[at + 2], packet[at + 3]];
    let mut out = packet.to_vec();
    let mut check = word(ipv4::CSUM);
    let mut id = word(ipv4::ID);
    match onward {
        Onward::ToInternal(int_addr) => {
            if id == 0 {
                return Err(Unsendable::ZeroId);
            }
            let ttl = packet[ipv4::TTL];
            if ttl <= 1 {
                return Err(Unsendable::TtlExpired);
            }
            check = csum::replace32(check, address(ipv4::DST), int_addr.octets());
            out[ipv4::DST..ipv4::DST + 4].copy_from_slice(&int_addr.octets());
            // TTL shares its 16-bit word with the protocol.
            let proto = packet[ipv4::PROTO];
            check = csum::replace16(
                check,
                u16::from_be_bytes([ttl, proto]),
                u16::from_be_bytes([ttl - 1, proto]),
            );
            out[ipv4::TTL] = ttl - 1;
        }
        // Delivered, not forwarded: the TTL stays.
        Onward::Local => {}
        Onward::HairpinLocal { src, id: new_id } => {
            check = csum::replace32(check, address(ipv4::SRC), src.octets());
            out[ipv4::SRC..ipv4::SRC + 4].copy_from_slice(&src.octets());
            check = csum::replace16(check, id, new_id);
            out[ipv4::ID..ipv4::ID + 2].copy_from_slice(&new_id.to_be_bytes());
            id = new_id;
        }
    }
    if id == 0 {
        return Err(Unsendable::ZeroId);
    }
    out[ipv4::CSUM..ipv4::CSUM + 2].copy_from_slice(&check.to_be_bytes());
    Ok(out)
}

/// The resender's counters, in `natgw status` under the controller counters.
#[derive(Debug, Default)]
pub struct Counters {
    resent: AtomicU64,
    expired: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter by its name in `natgw status`.
    #[must_use]
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        [
            ("fragments_resent", &self.resent),
            ("fragments_expired", &self.expired),
            ("fragments_dropped", &self.dropped),
        ]
        .into_iter()
        .map(|(name, c)| (name.to_owned(), c.load(Ordering::Relaxed)))
        .collect()
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Fragments in the stash.
    pub stashed: usize,
    /// Sent on.
    pub resent: usize,
    /// Deleted after the reassembly timeout.
    pub expired: usize,
    /// Deleted because they could not be sent.
    pub dropped: usize,
}

/// Sends stashed fragments on once their first fragment has been seen.
#[derive(Debug)]
pub struct Resender {
    counters: Arc<Counters>,
    /// When each waiting fragment arrived, so a waiting fragment's 2 KiB value is
    /// read once, not every poll.
    waiting: HashMap<StashKey, u64>,
}

impl Resender {
    /// A resender counting into `counters`.
    #[must_use]
    pub fn new(counters: Arc<Counters>) -> Self {
        Self {
            counters,
            waiting: HashMap::new(),
        }
    }

    /// One pass over the stash at time `now_ns`; `send(dst, packet)` sends a
    /// fragment on (translated, or as it came for the gateway itself).
    ///
    /// # Errors
    /// A failed map operation; the pass stops there and the next one resumes.
    pub fn sweep<T: FragmentTables>(
        &mut self,
        tables: &mut T,
        now_ns: u64,
        mut send: impl FnMut(Ipv4Addr, &[u8]) -> io::Result<()>,
    ) -> Result<SweepStats, MapsError> {
        let keys = tables.stashed_keys()?;
        let mut stats = SweepStats {
            stashed: keys.len(),
            ..SweepStats::default()
        };
        self.waiting.retain(|k, _| keys.contains(k));
        for key in keys {
            let first = tables.first_fragment(&key.datagram)?;
            let seen_ns = match self.waiting.get(&key) {
                Some(seen) if first.is_none() => *seen,
                _ => {
                    let Some(fragment) = tables.stashed(&key)? else {
                        self.waiting.remove(&key);
                        continue;
                    };
                    // The first fragment of the same datagram: within one reassembly
                    // timeout of this fragment (an older datagram may have reused the
                    // identification).
                    let first = first
                        .filter(|f| f.seen_ns.abs_diff(fragment.seen_ns) < REASSEMBLY_TIMEOUT_NS);
                    if let Some(first) = first {
                        self.waiting.remove(&key);
                        let len = usize::from(fragment.len).min(MAX_STASHED_FRAGMENT_LEN);
                        let onward = Onward::of(&first);
                        let to = onward.map_or(Ipv4Addr::UNSPECIFIED, |o| {
                            o.destination(ipv4(key.datagram.ext_addr_be))
                        });
                        let sent = onward
                            .ok_or(Unsendable::UnknownFate)
                            .and_then(|o| translate(&fragment.packet[..len], o))
                            .map_err(|r| r.as_str().to_owned())
                            .and_then(|p| send(to, &p).map_err(|e| e.to_string()));
                        match sent {
                            Ok(()) => {
                                stats.resent += 1;
                                Counters::add(&self.counters.resent);
                                debug!("fragment.resent {}", describe(&key, to));
                            }
                            Err(reason) => {
                                stats.dropped += 1;
                                Counters::add(&self.counters.dropped);
                                debug!(
                                    "fragment.dropped {} reason=\"{reason}\"",
                                    describe(&key, to)
                                );
                            }
                        }
                        tables.remove_stashed(&key)?;
                        continue;
                    }
                    self.waiting.insert(key, fragment.seen_ns);
                    fragment.seen_ns
                }
            };
            if now_ns.saturating_sub(seen_ns) >= REASSEMBLY_TIMEOUT_NS {
                self.waiting.remove(&key);
                if tables.remove_stashed(&key)? {
                    stats.expired += 1;
                    Counters::add(&self.counters.expired);
                }
            }
        }
        Ok(stats)
    }
}

/// A stashed fragment, sent on `to`, for log lines.
fn describe(key: &StashKey, to: Ipv4Addr) -> String {
    format!(
        "src={} ext={} to={to} id={} proto={} offset={}",
        ipv4(key.datagram.remote_addr_be),
        ipv4(key.datagram.ext_addr_be),
        u16::from_be(key.datagram.ip_id_be),
        key.datagram.proto,
        u32::from(key.offset) * 8,
    )
}

/// The raw socket fragments leave through.
fn open_socket() -> Option<OwnedFd> {
    match socket::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::Raw,
    ) {
        Ok(fd) => Some(fd),
        Err(e) => {
            warn!(
                "fragments.unavailable error=\"{e}\": natgw cannot send on fragments that \
                 arrive before their first fragment (needs CAP_NET_RAW); they are dropped"
            );
            None
        }
    }
}

fn send_raw(socket: Option<&OwnedFd>, dst: Ipv4Addr, packet: &[u8]) -> io::Result<()> {
    let fd = socket.ok_or_else(|| io::Error::other("no raw socket"))?;
    socket::sendto(
        fd.as_raw_fd(),
        packet,
        &socket::SockaddrIn::from(SocketAddrV4::new(dst, 0)),
        MsgFlags::MSG_DONTWAIT,
    )
    .map(drop)
    .map_err(io::Error::from)
}

/// Polls the stash every [`POLL_INTERVAL`] until aborted.
pub fn spawn(mut maps: FragmentMaps, counters: Arc<Counters>) -> JoinHandle<()> {
    let socket = open_socket();
    tokio::spawn(async move {
        let mut resender = Resender::new(counters);
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let now = crate::datapath::system::monotonic_ns();
            match resender.sweep(&mut maps, now, |dst, p| send_raw(socket.as_ref(), dst, p)) {
                Ok(_) => failing = false,
                Err(e) => {
                    if !failing {
                        error!("fragments.failed error=\"{e}\": will retry");
                    }
                    failing = true;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_common::maps::{FragKey, FragValue, StashedFragment};
    use natgw_common::{addr_be, IPPROTO_UDP};

    const S: u64 = NS_PER_SEC;

    /// A later fragment (offset 1480 bytes, MF set) from 198.51.100.2 to 192.0.2.1.
    fn later_fragment(id: u16, ttl: u8) -> Vec<u8> {
        let payload = [0xabu8; 24];
        let mut p = vec![
            0x45,
            0x00,
            0,
            0, // version, IHL, DSCP, total length
            0,
            0,
            0x20,
            185, // id, MF + offset 185 (× 8 = 1480)
            ttl,
            IPPROTO_UDP,
            0,
            0, // TTL, protocol, checksum
            198,
            51,
            100,
            2, // source
            192,
            0,
            2,
            1, // destination
        ];
        p.extend_from_slice(&payload);
        let len = u16::try_from(p.len()).unwrap();
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        let check = csum::checksum(&p[..20], 0);
        p[10..12].copy_from_slice(&check.to_be_bytes());
        p
    }

    #[test]
    fn translation_rewrites_destination_and_ttl_and_keeps_the_fragment_fields() {
        // rfc4787 REQ-14
        let before = later_fragment(0x1234, 64);
        let after = translate(&before, Onward::ToInternal(Ipv4Addr::new(10, 0, 1, 2))).unwrap();
        assert_eq!(after.len(), before.len());
        assert_eq!(&after[16..20], &[10, 0, 1, 2], "destination");
        assert_eq!(&after[12..16], &[198, 51, 100, 2], "source untouched");
        assert_eq!(after[8], 63, "TTL decremented as forwarding would");
        assert_eq!(&after[4..8], &before[4..8], "id, MF and offset kept");
        assert_eq!(&after[20..], &before[20..], "payload untouched");
        assert_eq!(csum::checksum(&after[..20], 0), 0, "header checksum valid");
    }

    #[test]
    fn translation_walks_past_options() {
        let mut p = later_fragment(7, 64);
        // Insert 4 bytes of options (NOPs) and fix IHL, length and checksum.
        p.splice(20..20, [1u8, 1, 1, 1]);
        p[0] = 0x46;
        let len = u16::try_from(p.len()).unwrap();
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let check = csum::checksum(&p[..24], 0);
        p[10..12].copy_from_slice(&check.to_be_bytes());
        let out = translate(&p, Onward::ToInternal(Ipv4Addr::new(10, 0, 1, 2))).unwrap();
        assert_eq!(csum::checksum(&out[..24], 0), 0);
        assert_eq!(&out[20..24], &[1, 1, 1, 1]);
    }

    #[test]
    fn what_cannot_be_sent_says_why() {
        let int = Onward::ToInternal(Ipv4Addr::new(10, 0, 1, 2));
        assert_eq!(
            translate(&later_fragment(0, 64), int),
            Err(Unsendable::ZeroId)
        );
        assert_eq!(
            translate(&later_fragment(9, 1), int),
            Err(Unsendable::TtlExpired)
        );
        let mut bad_sum = later_fragment(9, 64);
        bad_sum[11] ^= 1;
        assert_eq!(translate(&bad_sum, int), Err(Unsendable::Malformed));
        let good = later_fragment(9, 64);
        assert_eq!(
            translate(&good[..good.len() - 1], int),
            Err(Unsendable::Malformed),
            "total length disagrees"
        );
        assert_eq!(translate(&good[..12], int), Err(Unsendable::Malformed));
        let mut first = later_fragment(9, 64);
        first[6..8].copy_from_slice(&[0x20, 0]);
        first[10..12].copy_from_slice(&[0, 0]);
        let check = csum::checksum(&first[..20], 0);
        first[10..12].copy_from_slice(&check.to_be_bytes());
        assert_eq!(
            translate(&first, int),
            Err(Unsendable::Malformed),
            "offset 0"
        );
    }

    #[test]
    fn a_fragment_for_the_gateway_itself_goes_on_untouched() {
        // rfc4787 REQ-14 for a datagram to a service of the gateway: the kernel
        // reassembles it, so the fragment is delivered as it came, TTL 1 included.
        for ttl in [64, 1] {
            let before = later_fragment(0x1234, ttl);
            assert_eq!(translate(&before, Onward::Local), Ok(before.clone()));
        }
        assert_eq!(
            translate(&later_fragment(0, 64), Onward::Local),
            Err(Unsendable::ZeroId)
        );
        assert_eq!(
            Onward::Local.destination(Ipv4Addr::new(192, 0, 2, 1)),
            Ipv4Addr::new(192, 0, 2, 1)
        );
    }

    #[test]
    fn a_hairpinned_fragment_gets_the_source_and_identification_of_its_first() {
        let before = later_fragment(0x1234, 64);
        let onward = Onward::HairpinLocal {
            src: Ipv4Addr::new(192, 0, 2, 1),
            id: 0x0707,
        };
        let after = translate(&before, onward).unwrap();
        assert_eq!(&after[12..16], &[192, 0, 2, 1], "source");
        assert_eq!(&after[16..20], &before[16..20], "destination kept");
        assert_eq!(&after[4..6], &[0x07, 0x07], "identification");
        assert_eq!(&after[6..10], &before[6..10], "MF, offset and TTL kept");
        assert_eq!(&after[20..], &before[20..], "payload untouched");
        assert_eq!(csum::checksum(&after[..20], 0), 0, "header checksum valid");
        assert_eq!(
            onward.destination(Ipv4Addr::new(192, 0, 2, 1)),
            Ipv4Addr::new(192, 0, 2, 1)
        );
        // The host's own identification 0 does not matter; a new one of 0 would.
        assert!(translate(&later_fragment(0, 64), onward).is_ok());
        let zero = Onward::HairpinLocal {
            src: Ipv4Addr::new(192, 0, 2, 1),
            id: 0,
        };
        assert_eq!(translate(&before, zero), Err(Unsendable::ZeroId));
    }

    #[test]
    fn the_record_of_the_first_fragment_says_where_fragments_go() {
        let int = addr_be([10, 0, 1, 2]);
        assert_eq!(
            Onward::of(&FragValue::new(int, 1)),
            Some(Onward::ToInternal(Ipv4Addr::new(10, 0, 1, 2)))
        );
        assert_eq!(Onward::of(&FragValue::local(1)), Some(Onward::Local));
        assert_eq!(
            Onward::of(&FragValue::hairpin_local(
                addr_be([192, 0, 2, 1]),
                0x0102u16.to_be(),
                1
            )),
            Some(Onward::HairpinLocal {
                src: Ipv4Addr::new(192, 0, 2, 1),
                id: 0x0102
            })
        );
        let mut unknown = FragValue::local(1);
        unknown.fate = 9;
        assert_eq!(Onward::of(&unknown), None);
    }

    /// In-memory `FRAG_STASH` and `FRAGS_IN`.
    #[derive(Default)]
    struct Tables {
        stash: Vec<(StashKey, StashedFragment)>,
        first: Vec<(FragKey, FragValue)>,
        reads: std::cell::Cell<usize>,
    }

    impl FragmentTables for Tables {
        fn stashed_keys(&self) -> Result<Vec<StashKey>, MapsError> {
            Ok(self.stash.iter().map(|(k, _)| *k).collect())
        }
        fn stashed(&self, key: &StashKey) -> Result<Option<StashedFragment>, MapsError> {
            self.reads.set(self.reads.get() + 1);
            Ok(self.stash.iter().find(|(k, _)| k == key).map(|(_, v)| *v))
        }
        fn remove_stashed(&mut self, key: &StashKey) -> Result<bool, MapsError> {
            let before = self.stash.len();
            self.stash.retain(|(k, _)| k != key);
            Ok(self.stash.len() != before)
        }
        fn first_fragment(&self, datagram: &FragKey) -> Result<Option<FragValue>, MapsError> {
            Ok(self
                .first
                .iter()
                .find(|(k, _)| k == datagram)
                .map(|(_, v)| *v))
        }
    }

    fn datagram(id: u16) -> FragKey {
        FragKey::new(
            addr_be([198, 51, 100, 2]),
            addr_be([192, 0, 2, 1]),
            id.to_be(),
            IPPROTO_UDP,
        )
    }

    fn stashed(id: u16, seen_ns: u64) -> (StashKey, StashedFragment) {
        let bytes = later_fragment(id, 64);
        let mut packet = [0u8; MAX_STASHED_FRAGMENT_LEN];
        packet[..bytes.len()].copy_from_slice(&bytes);
        (
            StashKey::new(datagram(id), 185),
            StashedFragment::new(seen_ns, u16::try_from(bytes.len()).unwrap(), packet),
        )
    }

    #[test]
    fn a_fragment_waits_for_its_first_fragment_then_is_sent_to_the_internal_host() {
        // rfc4787 REQ-14: out of order, later fragment first.
        let counters = Arc::new(Counters::default());
        let mut r = Resender::new(Arc::clone(&counters));
        let mut t = Tables::default();
        t.stash.push(stashed(0x1234, S));
        let mut sent = Vec::new();
        let mut send = |dst: Ipv4Addr, p: &[u8]| {
            sent.push((dst, p.to_vec()));
            Ok(())
        };
        let stats = r.sweep(&mut t, 2 * S, &mut send).unwrap();
        assert_eq!((stats.stashed, stats.resent), (1, 0), "still waiting");
        r.sweep(&mut t, 3 * S, &mut send).unwrap();
        assert_eq!(t.reads.get(), 1, "a waiting fragment is read once");
        t.first.push((
            datagram(0x1234),
            FragValue::new(addr_be([10, 0, 1, 2]), 4 * S),
        ));
        let stats = r.sweep(&mut t, 4 * S, &mut send).unwrap();
        assert_eq!(stats.resent, 1);
        assert!(t.stash.is_empty(), "deleted once sent");
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, Ipv4Addr::new(10, 0, 1, 2));
        assert_eq!(&sent[0].1[16..20], &[10, 0, 1, 2]);
        assert_eq!(counters.snapshot()["fragments_resent"], 1);
    }

    #[test]
    fn a_held_fragment_of_a_datagram_for_the_gateway_goes_to_its_address_untouched() {
        // The later fragment came first; its first fragment then went to a local
        // socket: the held one must reach the kernel as it came.
        let counters = Arc::new(Counters::default());
        let mut r = Resender::new(Arc::clone(&counters));
        let mut t = Tables::default();
        t.stash.push(stashed(0x2222, S));
        t.first.push((datagram(0x2222), FragValue::local(2 * S)));
        let mut sent = Vec::new();
        let stats = r
            .sweep(&mut t, 2 * S, |dst, p| {
                sent.push((dst, p.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(stats.resent, 1);
        assert!(t.stash.is_empty());
        assert_eq!(
            sent,
            vec![(Ipv4Addr::new(192, 0, 2, 1), later_fragment(0x2222, 64))]
        );
    }

    #[test]
    fn a_fragment_whose_record_names_an_unknown_fate_is_dropped() {
        let counters = Arc::new(Counters::default());
        let mut r = Resender::new(Arc::clone(&counters));
        let mut t = Tables::default();
        t.stash.push(stashed(3, S));
        let mut first = FragValue::local(S);
        first.fate = 200;
        t.first.push((datagram(3), first));
        let mut send = |_: Ipv4Addr, _: &[u8]| -> io::Result<()> { panic!("nowhere to send") };
        let stats = r.sweep(&mut t, 2 * S, &mut send).unwrap();
        assert_eq!(stats.dropped, 1);
        assert!(t.stash.is_empty());
    }

    #[test]
    fn a_fragment_never_joined_expires_after_the_reassembly_timeout() {
        let counters = Arc::new(Counters::default());
        let mut r = Resender::new(Arc::clone(&counters));
        let mut t = Tables::default();
        t.stash.push(stashed(1, S));
        let mut send = |_: Ipv4Addr, _: &[u8]| -> io::Result<()> { panic!("nothing to send") };
        r.sweep(&mut t, S + REASSEMBLY_TIMEOUT_NS - 1, &mut send)
            .unwrap();
        assert_eq!(t.stash.len(), 1);
        let stats = r
            .sweep(&mut t, S + REASSEMBLY_TIMEOUT_NS, &mut send)
            .unwrap();
        assert_eq!(stats.expired, 1);
        assert!(t.stash.is_empty());
        assert_eq!(counters.snapshot()["fragments_expired"], 1);
    }

    #[test]
    fn a_stale_first_fragment_of_a_reused_identification_is_not_matched() {
        let counters = Arc::new(Counters::default());
        let mut r = Resender::new(Arc::clone(&counters));
        let mut t = Tables::default();
        t.stash.push(stashed(5, 100 * S));
        t.first
            .push((datagram(5), FragValue::new(addr_be([10, 0, 1, 2]), 10 * S)));
        let mut send = |_: Ipv4Addr, _: &[u8]| -> io::Result<()> { panic!("must wait") };
        let stats = r.sweep(&mut t, 101 * S, &mut send).unwrap();
        assert_eq!((stats.resent, stats.stashed), (0, 1));
    }

    #[test]
    fn send_failures_and_unsendable_fragments_are_dropped_and_counted() {
        let counters = Arc::new(Counters::default());
        let mut r = Resender::new(Arc::clone(&counters));
        let mut t = Tables::default();
        t.stash.push(stashed(0, S));
        t.stash.push(stashed(6, S));
        for id in [0, 6] {
            t.first
                .push((datagram(id), FragValue::new(addr_be([10, 0, 1, 2]), S)));
        }
        let mut send = |_: Ipv4Addr, _: &[u8]| Err(io::Error::other("EMSGSIZE"));
        let stats = r.sweep(&mut t, 2 * S, &mut send).unwrap();
        assert_eq!(stats.dropped, 2);
        assert!(t.stash.is_empty());
        assert_eq!(counters.snapshot()["fragments_dropped"], 2);
    }
}
