//! Whether an answer to an address can leave at once: the link-layer address of its
//! next hop is known.
//!
//! A UDP service that answers a datagram with a spoofed on-link source makes the
//! kernel resolve that address (ARP). Until resolution fails, about 3 s, the answer
//! waits in the neighbour's queue, charged to the socket's send buffer. A flood
//! from a few dozen unused addresses fills the buffer, and then real clients' answers
//! cannot be sent either. Real on-link clients, on the other hand, have resolved the
//! gateway's address before sending — and the gateway learned theirs from that ARP
//! request — so their neighbour entry exists.
//!
//! [`Neighbours::check`] reads the kernel's route and neighbour tables over rtnetlink
//! (`RTM_GETROUTE`, `RTM_GETNEIGH`), with a short cache, and the services decide:
//! - PCP and NAT-PMP create state, so a request from an unresolved source is not
//!   processed; [`Neighbours::kick`] starts resolution without queueing anything
//!   (`NTF_USE`), and the client's retransmission finds its entry.
//! - STUN creates no state: an unresolved destination may get its answer (which
//!   starts resolution) within [`Neighbours::allow_unresolved`]'s budget.
//!
//! Both budgets are per destination (once per resolution attempt) and global, so the
//! queued answers can never fill a socket's send buffer. Routed destinations go
//! through a router whose entry is resolved; local destinations and links without
//! ARP (point-to-point, loopback) are always ready.
//!
//! When rtnetlink cannot be used, every destination counts as ready: the services
//! then behave as they would without this check (logged once).

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd as _;
use std::time::{Duration, Instant};

use log::warn;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use natgw_proto::util::bucket::{TokenBucket, Verdict};

/// How long the kernel tries to resolve an address before giving up (the default
/// three probes a second apart), and so how long an answer may wait.
pub const RESOLUTION_TIME: Duration = Duration::from_secs(3);
/// How long a "ready" answer is trusted.
const READY_TTL: Duration = Duration::from_secs(5);
/// How long an "unresolved" answer is trusted: short, so a client whose address was
/// just resolved is served at its next retransmission.
const UNRESOLVED_TTL: Duration = Duration::from_millis(200);
/// Destinations remembered at once (cache and budget); beyond, the oldest go.
const MAX_TRACKED: usize = 4096;
/// Answers to unresolved destinations (or resolutions started) per second.
const UNRESOLVED_PER_SECOND: u64 = 8;
/// ... and in a burst. With [`RESOLUTION_TIME`] this bounds what waits in neighbour
/// queues to a few dozen small datagrams, far below a socket's send buffer.
const UNRESOLVED_BURST: u64 = 16;
/// How long rtnetlink may take to answer.
const NETLINK_TIMEOUT: Duration = Duration::from_millis(200);

/// Whether an answer can leave at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The next hop's link-layer address is known, or none is needed.
    Ready,
    /// Sending would make the kernel resolve the next hop first (or cannot work).
    Unresolved,
}

/// The next hop towards a destination, as the route table says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// Delivered locally, broadcast or multicast: nothing to resolve.
    NoNeighbour,
    /// Through neighbour `hop` on interface `oif`.
    Via { oif: u32, hop: Ipv4Addr },
    /// No route.
    Unreachable,
}

/// The checker; see the module documentation.
pub struct Neighbours {
    socket: Option<Socket>,
    seq: u32,
    cache: HashMap<Ipv4Addr, (Instant, Reach)>,
    /// When each destination last got its unresolved allowance or resolution start.
    granted: HashMap<Ipv4Addr, Instant>,
    budget: TokenBucket,
    /// Interfaces that resolve no link-layer addresses (`IFF_NOARP`, loopback,
    /// point-to-point).
    noarp: HashMap<u32, bool>,
}

fn open_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let timeout = nix::sys::time::TimeVal::new(
        0,
        i64::try_from(NETLINK_TIMEOUT.as_micros()).unwrap_or(200_000),
    );
    nix::sys::socket::setsockopt(
        &socket.as_fd(),
        nix::sys::socket::sockopt::ReceiveTimeout,
        &timeout,
    )
    .map_err(io::Error::from)?;
    Ok(socket)
}

impl Neighbours {
    /// A checker on its own rtnetlink socket; `now` starts its budget. Without one
    /// (logged), every destination is ready.
    #[must_use]
    pub fn open(now: Instant) -> Self {
        let socket = match open_socket() {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(
                    "neighbours.unavailable error=\"{e}\": answers to unresolved (possibly \
                     spoofed) sources are not held back"
                );
                None
            }
        };
        Self {
            socket,
            seq: 0,
            cache: HashMap::new(),
            granted: HashMap::new(),
            budget: TokenBucket::new(UNRESOLVED_PER_SECOND, UNRESOLVED_BURST, now),
            noarp: HashMap::new(),
        }
    }

    /// Whether an answer to `dst` can leave at once.
    pub fn check(&mut self, now: Instant, dst: Ipv4Addr) -> Reach {
        if let Some((until, reach)) = self.cache.get(&dst) {
            if now < *until {
                return *reach;
            }
        }
        let reach = match self.lookup(dst) {
            Ok(r) => r,
            Err(e) => {
                if self.socket.take().is_some() {
                    warn!(
                        "neighbours.failed error=\"{e}\": answers to unresolved (possibly \
                         spoofed) sources are no longer held back"
                    );
                }
                Reach::Ready
            }
        };
        let ttl = match reach {
            Reach::Ready => READY_TTL,
            Reach::Unresolved => UNRESOLVED_TTL,
        };
        if self.cache.len() >= MAX_TRACKED {
            self.cache.retain(|_, (until, _)| now < *until);
            if self.cache.len() >= MAX_TRACKED {
                self.cache.clear();
            }
        }
        self.cache.insert(dst, (now + ttl, reach));
        reach
    }

    /// Whether one datagram may go to unresolved `dst` now (STUN): once per
    /// resolution attempt per destination, within a global budget.
    pub fn allow_unresolved(&mut self, now: Instant, dst: Ipv4Addr) -> bool {
        if let Some(last) = self.granted.get(&dst) {
            if now.saturating_duration_since(*last) < RESOLUTION_TIME {
                return false;
            }
        }
        if self.budget.take(now) != Verdict::Allow {
            return false;
        }
        if self.granted.len() >= MAX_TRACKED {
            self.granted
                .retain(|_, last| now.saturating_duration_since(*last) < RESOLUTION_TIME);
            if self.granted.len() >= MAX_TRACKED {
                self.granted.clear();
            }
        }
        self.granted.insert(dst, now);
        true
    }

    /// Starts resolving unresolved `dst` without sending it anything (PCP), within
    /// the budget of [`Neighbours::allow_unresolved`]. Returns whether it did.
    pub fn kick(&mut self, now: Instant, dst: Ipv4Addr) -> bool {
        if self.socket.is_none() || !self.allow_unresolved(now, dst) {
            return false;
        }
        let Ok(Route::Via { oif, hop }) = self.route(dst) else {
            return false;
        };
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = oif;
        // NUD_NONE, not PERMANENT: an entry for an address nobody has stays subject
        // to garbage collection.
        msg.header.state = NeighbourState::None;
        msg.header.flags = NeighbourFlags::Use;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(hop)));
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        self.request(RouteNetlinkMessage::NewNeighbour(msg), flags)
            .is_ok()
    }

    fn lookup(&mut self, dst: Ipv4Addr) -> io::Result<Reach> {
        if self.socket.is_none() {
            return Ok(Reach::Ready);
        }
        let (oif, hop) = match self.route(dst)? {
            Route::NoNeighbour => return Ok(Reach::Ready),
            Route::Unreachable => return Ok(Reach::Unresolved),
            Route::Via { oif, hop } => (oif, hop),
        };
        if self.link_resolves_nothing(oif)? {
            return Ok(Reach::Ready);
        }
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = oif;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(hop)));
        match self.request(RouteNetlinkMessage::GetNeighbour(msg), NLM_F_REQUEST) {
            Ok(Some(RouteNetlinkMessage::NewNeighbour(n))) => Ok(match n.header.state {
                NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp => Reach::Ready,
                _ => Reach::Unresolved,
            }),
            Ok(_) => Ok(Reach::Unresolved),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Reach::Unresolved),
            Err(e) => Err(e),
        }
    }

    fn route(&mut self, dst: Ipv4Addr) -> io::Result<Route> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = 32;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        let answer = match self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_REQUEST) {
            Ok(a) => a,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENOENT)
                ) =>
            {
                return Ok(Route::Unreachable)
            }
            Err(e) => return Err(e),
        };
        let Some(RouteNetlinkMessage::NewRoute(route)) = answer else {
            return Ok(Route::Unreachable);
        };
        match route.header.kind {
            RouteType::Unicast => {}
            RouteType::Local | RouteType::Broadcast | RouteType::Multicast => {
                return Ok(Route::NoNeighbour)
            }
            _ => return Ok(Route::Unreachable),
        }
        let mut oif = None;
        let mut gateway = None;
        for attr in route.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(g),
                _ => {}
            }
        }
        Ok(oif.map_or(Route::Unreachable, |oif| Route::Via {
            oif,
            hop: gateway.unwrap_or(dst),
        }))
    }

    fn link_resolves_nothing(&mut self, ifindex: u32) -> io::Result<bool> {
        if let Some(v) = self.noarp.get(&ifindex) {
            return Ok(*v);
        }
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        let v = match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST)? {
            Some(RouteNetlinkMessage::NewLink(link)) => link
                .header
                .flags
                .intersects(LinkFlags::Noarp | LinkFlags::Loopback | LinkFlags::Pointopoint),
            _ => false,
        };
        self.noarp.insert(ifindex, v);
        Ok(v)
    }

    /// Sends `message` and reads the answer to it: the message, `None` for a bare
    /// acknowledgement, or the kernel's error.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Option<RouteNetlinkMessage>> {
        let socket = self
            .socket
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut nl = NetlinkMessage::from(message);
        nl.header.flags = flags;
        nl.header.sequence_number = seq;
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        socket.send(&out, 0)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = socket.recv(&mut &mut buf[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == seq {
                    return match reply.payload {
                        NetlinkPayload::InnerMessage(m) => Ok(Some(m)),
                        NetlinkPayload::Error(e) => match e.code {
                            None => Ok(None),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        },
                        _ => Ok(None),
                    };
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_loopback_destinations_are_ready() {
        let now = Instant::now();
        let mut n = Neighbours::open(now);
        assert!(n.socket.is_some(), "rtnetlink is available to tests");
        assert_eq!(n.check(now, Ipv4Addr::LOCALHOST), Reach::Ready);
        // Cached: the same answer without asking again.
        assert_eq!(n.check(now, Ipv4Addr::LOCALHOST), Reach::Ready);
        assert!(n.cache.contains_key(&Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn unresolved_allowance_is_once_per_destination_and_bounded() {
        let now = Instant::now();
        let mut n = Neighbours::open(now);
        let a = Ipv4Addr::new(192, 0, 2, 10);
        assert!(n.allow_unresolved(now, a));
        assert!(!n.allow_unresolved(now, a), "once per resolution attempt");
        assert!(n.allow_unresolved(now + RESOLUTION_TIME, a));
        let granted = (0..100u8)
            .filter(|i| n.allow_unresolved(now + RESOLUTION_TIME, Ipv4Addr::new(192, 0, 2, *i)))
            .count();
        // The burst refilled by then; `a` itself was just granted.
        assert_eq!(granted as u64, UNRESOLVED_BURST - 1, "the global burst");
    }
}
