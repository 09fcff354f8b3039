//! The TURN relay of `natgw rendezvous` (RFC 8656): a thin loop around
//! [`natgw_proto::turn::engine::Server`]. The rendezvous hands it the TURN messages
//! and ChannelData it receives on its own port (UDP datagrams, TCP frames); this
//! module owns the relay sockets: [`SocketAllocator`] binds one UDP socket per
//! allocation on the relay address within the configured port range (EVEN-PORT with
//! its reserved neighbour too), a task per relay socket feeds what peers send into
//! the engine, sends to peers set DF (`IP_PMTUDISC_DO`) when the client asked for
//! DONT-FRAGMENT, and a socket is closed when its allocation ends.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use natgw_proto::prefix::Ipv4Prefix;
use natgw_proto::turn::auth::Credentials;
use natgw_proto::turn::engine::{
    self, Action, AllocError, Bandwidth, Counters, Event, FiveTuple, Now, RelayAllocator,
};

/// Largest datagram a relay socket reads (the engine drops longer payloads).
const RELAY_BUFFER: usize = 65_536;

/// What `natgw rendezvous` is told about its relay.
#[derive(Debug, Clone)]
pub struct Options {
    /// REALM.
    pub realm: String,
    /// Static users or shared secrets.
    pub credentials: Credentials,
    /// The address relay sockets bind to.
    pub relay_ip: Ipv4Addr,
    /// Their port range.
    pub relay_ports: RangeInclusive<u16>,
    /// Allocations per username; `None` for the engine's default.
    pub user_quota: Option<usize>,
    /// Bytes per second per allocation; `None` for no cap.
    pub bandwidth: Option<u64>,
    /// Peer prefixes allowed even in the default denied ranges.
    pub allowed_peers: Vec<Ipv4Prefix>,
}

/// Sockets bound by the allocator and not yet picked up by the service.
type Handover = Arc<Mutex<HashMap<SocketAddrV4, std::net::UdpSocket>>>;

/// A [`RelayAllocator`] that binds real UDP sockets: a port is free when the kernel
/// lets us bind it. Sockets of new allocations wait in the handover map until the
/// service starts relaying on them; a reserved neighbour port (EVEN-PORT with R) is
/// held by a bound socket until claimed or released.
#[derive(Debug)]
pub struct SocketAllocator {
    ip: Ipv4Addr,
    ports: RangeInclusive<u16>,
    /// Where the next search starts (ports are tried in turn, wrapping).
    cursor: u16,
    in_use: HashSet<u16>,
    reserved: HashMap<u16, std::net::UdpSocket>,
    handover: Handover,
}

impl SocketAllocator {
    fn new(ip: Ipv4Addr, ports: RangeInclusive<u16>, handover: Handover) -> Self {
        let span = u32::from(*ports.end()) - u32::from(*ports.start()) + 1;
        let offset =
            u16::try_from(natgw_proto::util::rng::random_u64() % u64::from(span)).unwrap_or(0);
        Self {
            cursor: ports.start().saturating_add(offset),
            ip,
            ports,
            in_use: HashSet::new(),
            reserved: HashMap::new(),
            handover,
        }
    }

    fn bind(&self, port: u16) -> Option<std::net::UdpSocket> {
        if self.in_use.contains(&port) || self.reserved.contains_key(&port) {
            return None;
        }
        let socket = std::net::UdpSocket::bind(SocketAddrV4::new(self.ip, port)).ok()?;
        socket.set_nonblocking(true).ok()?;
        Some(socket)
    }

    fn handover(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddrV4, std::net::UdpSocket>> {
        self.handover.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RelayAllocator for SocketAllocator {
    fn allocate(
        &mut self,
        even_port: bool,
        reserve_next: bool,
    ) -> Result<SocketAddrV4, AllocError> {
        let (start, end) = (*self.ports.start(), *self.ports.end());
        let span = u32::from(end) - u32::from(start) + 1;
        let mut port = self.cursor;
        for _ in 0..span {
            let candidate = port;
            port = if port >= end { start } else { port + 1 };
            if even_port && candidate % 2 != 0 {
                continue;
            }
            let next = candidate.checked_add(1).filter(|n| *n <= end);
            if reserve_next && next.is_none() {
                continue;
            }
            let Some(socket) = self.bind(candidate) else {
                continue;
            };
            let held = match (reserve_next, next) {
                (true, Some(n)) => match self.bind(n) {
                    Some(s) => Some((n, s)),
                    None => continue,
                },
                _ => None,
            };
            if let Some((n, s)) = held {
                self.reserved.insert(n, s);
            }
            self.cursor = port;
            self.in_use.insert(candidate);
            let addr = SocketAddrV4::new(self.ip, candidate);
            self.handover().insert(addr, socket);
            return Ok(addr);
        }
        Err(AllocError::Exhausted)
    }

    fn claim(&mut self, reserved: SocketAddrV4) -> Result<(), AllocError> {
        if *reserved.ip() != self.ip {
            return Err(AllocError::NotReserved);
        }
        let socket = self
            .reserved
            .remove(&reserved.port())
            .ok_or(AllocError::NotReserved)?;
        self.in_use.insert(reserved.port());
        self.handover().insert(reserved, socket);
        Ok(())
    }

    fn release(&mut self, addr: SocketAddrV4) {
        if *addr.ip() == self.ip {
            self.in_use.remove(&addr.port());
            self.reserved.remove(&addr.port());
            self.handover().remove(&addr);
        }
    }
}

/// A datagram a relay socket received.
#[derive(Debug)]
pub struct PeerDatagram {
    relay: SocketAddrV4,
    peer: SocketAddrV4,
    bytes: Vec<u8>,
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    dont_fragment: bool,
}

/// What the relay's socket side counted (the engine counts the protocol).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServiceCounters {
    /// Relay sockets open now.
    pub relay_sockets: usize,
    /// Datagrams to peers the kernel refused (or the socket was full).
    pub peer_send_failed: u64,
    /// Messages to clients that could not be sent or queued.
    pub client_send_failed: u64,
}

/// What the relay saw, when the rendezvous stops.
#[derive(Debug, Clone, Serialize)]
pub struct Stopped {
    /// The engine's counters.
    pub engine: Counters,
    /// The service's.
    pub service: ServiceCounters,
}

/// The engine and its relay sockets, driven by the rendezvous's task.
pub struct Turn {
    engine: engine::Server<SocketAllocator>,
    handover: Handover,
    relays: HashMap<SocketAddrV4, Relay>,
    peers_tx: mpsc::Sender<PeerDatagram>,
    counters: ServiceCounters,
}

impl Turn {
    /// The engine over a [`SocketAllocator`]; `own_addresses` are refused as peers
    /// (unless allowed), except the relay address on a relay port (another
    /// allocation of this server). Returns the receiver of relay sockets' datagrams, for the
    /// rendezvous's loop to hand to [`Self::on_peer`].
    ///
    /// # Errors
    /// When the configuration does not validate.
    pub fn new(
        options: Options,
        own_addresses: Vec<Ipv4Addr>,
    ) -> anyhow::Result<(Self, mpsc::Receiver<PeerDatagram>)> {
        let mut config = engine::Config::new(options.realm, options.credentials);
        if options.user_quota.is_some() {
            config.user_quota = options.user_quota;
        }
        config.bandwidth = options.bandwidth.map(|b| Bandwidth {
            bytes_per_second: b,
            burst_bytes: b.max(65_536),
        });
        config.allowed_peers = options.allowed_peers;
        config.own_addresses = own_addresses;
        // Relay to relay (two allocations of this server talking, as ICE's relayed
        // pairs and two punch peers on one relay do) stays possible.
        config.relay_addresses = vec![options.relay_ip];
        config.relay_ports = options.relay_ports.clone();
        let handover = Handover::default();
        let allocator =
            SocketAllocator::new(options.relay_ip, options.relay_ports, Arc::clone(&handover));
        let engine = engine::Server::new(config, allocator)
            .map_err(|e| anyhow::anyhow!("configuring TURN: {e}"))?;
        let (peers_tx, peers_rx) = mpsc::channel(1024);
        Ok((
            Self {
                engine,
                handover,
                relays: HashMap::new(),
                peers_tx,
                counters: ServiceCounters::default(),
            },
            peers_rx,
        ))
    }

    /// A client's message; returns what to send to clients (the rest is done here).
    pub fn on_message(&mut self, tuple: FiveTuple, bytes: &[u8]) -> Vec<(FiveTuple, Vec<u8>)> {
        let actions = self.engine.on_message(Now::system(), tuple, bytes);
        self.act(actions)
    }

    /// A relay socket's datagram.
    pub fn on_peer(&mut self, d: &PeerDatagram) -> Vec<(FiveTuple, Vec<u8>)> {
        let actions = self
            .engine
            .on_peer_datagram(Now::system(), d.relay, d.peer, &d.bytes);
        self.act(actions)
    }

    /// A client's TCP connection closed: its allocation ends.
    pub fn on_connection_closed(&mut self, tuple: FiveTuple) {
        let actions = self.engine.on_connection_closed(tuple);
        let _ = self.act(actions);
    }

    /// When [`Self::expire`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.engine.poll_timeout()
    }

    /// Ends what has expired.
    pub fn expire(&mut self) -> Vec<(FiveTuple, Vec<u8>)> {
        let actions = self.engine.expire(Now::system());
        self.act(actions)
    }

    /// Whether the client on `tuple` has an allocation.
    #[must_use]
    pub fn has_allocation(&self, tuple: &FiveTuple) -> bool {
        self.engine.relay_of(tuple).is_some()
    }

    /// Counts a message to a client that could not be sent.
    pub fn client_send_failed(&mut self) {
        self.counters.client_send_failed += 1;
    }

    /// Closes every relay socket and reports.
    #[must_use]
    pub fn stop(mut self) -> Stopped {
        let service = ServiceCounters {
            relay_sockets: self.relays.len(),
            ..self.counters
        };
        for (_, relay) in self.relays.drain() {
            relay.reader.abort();
        }
        Stopped {
            engine: self.engine.counters().clone(),
            service,
        }
    }

    fn act(&mut self, actions: Vec<Action>) -> Vec<(FiveTuple, Vec<u8>)> {
        let mut to_clients = Vec::new();
        for action in actions {
            match action {
                Action::ToClient { tuple, bytes } => to_clients.push((tuple, bytes)),
                Action::ToPeer {
                    relay,
                    peer,
                    bytes,
                    dont_fragment,
                } => self.send_to_peer(relay, peer, &bytes, dont_fragment),
                Action::Event(Event::AllocationCreated {
                    tuple,
                    relay,
                    username,
                    lifetime,
                }) => {
                    log::info!(
                        "turn.allocated client={} transport={:?} relay={relay} user={username} lifetime={}s",
                        tuple.client,
                        tuple.transport,
                        lifetime.as_secs()
                    );
                    self.start_relay(relay);
                }
                Action::Event(Event::AllocationEnded {
                    tuple,
                    relay,
                    reason,
                }) => {
                    log::info!(
                        "turn.ended client={} relay={relay} reason={reason:?}",
                        tuple.client
                    );
                    if let Some(r) = self.relays.remove(&relay) {
                        r.reader.abort();
                    }
                    self.counters.relay_sockets = self.relays.len();
                }
            }
        }
        to_clients
    }

    fn start_relay(&mut self, relay: SocketAddrV4) {
        let socket = self
            .handover
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&relay);
        let Some(socket) = socket.and_then(|s| UdpSocket::from_std(s).ok()) else {
            log::warn!("turn.relay_socket_missing relay={relay}");
            return;
        };
        let socket = Arc::new(socket);
        let reader = tokio::spawn(read_relay(
            Arc::clone(&socket),
            relay,
            self.peers_tx.clone(),
        ));
        self.relays.insert(
            relay,
            Relay {
                socket,
                reader,
                dont_fragment: false,
            },
        );
        self.counters.relay_sockets = self.relays.len();
    }

    fn send_to_peer(&mut self, relay: SocketAddrV4, peer: SocketAddrV4, bytes: &[u8], df: bool) {
        let Some(r) = self.relays.get_mut(&relay) else {
            self.counters.peer_send_failed += 1;
            return;
        };
        if r.dont_fragment != df {
            if set_dont_fragment(&r.socket, df).is_ok() {
                r.dont_fragment = df;
            } else {
                self.counters.peer_send_failed += 1;
                return;
            }
        }
        if r.socket.try_send_to(bytes, SocketAddr::V4(peer)).is_err() {
            self.counters.peer_send_failed += 1;
        }
    }
}

/// Sets or clears DF on a socket's datagrams (`IP_MTU_DISCOVER`: `IP_PMTUDISC_DO` or
/// `IP_PMTUDISC_DONT`).
fn set_dont_fragment(socket: &UdpSocket, df: bool) -> std::io::Result<()> {
    let value: libc::c_int = if df {
        libc::IP_PMTUDISC_DO
    } else {
        libc::IP_PMTUDISC_DONT
    };
    // SAFETY: a valid socket descriptor, and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            std::ptr::from_ref(&value).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Forwards what a relay socket receives until it is closed (its task aborted).
async fn read_relay(socket: Arc<UdpSocket>, relay: SocketAddrV4, tx: mpsc::Sender<PeerDatagram>) {
    let mut buf = vec![0; RELAY_BUFFER];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, SocketAddr::V4(peer))) => {
                let d = PeerDatagram {
                    relay,
                    peer,
                    bytes: buf[..n].to_vec(),
                };
                if tx.send(d).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) if crate::services::transient(&e) => {}
            Err(e) => {
                log::warn!("turn.relay_recv_failed relay={relay} error={e}");
                return;
            }
        }
    }
}

/// This host's IPv4 addresses (refused as peers unless allowed).
#[must_use]
pub fn own_addresses() -> Vec<Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<Ipv4Addr> = addrs
        .filter_map(|a| a.address)
        .filter_map(|a| a.as_sockaddr_in().map(nix::sys::socket::SockaddrIn::ip))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether a message's first bytes, received on UDP, are ChannelData rather than a
/// punch message: top bits 01, and not "NP" unless the sender has an allocation
/// (a channel 0x4E50 is then ChannelData; punch messages from a TURN client's
/// 5-tuple are not served).
#[must_use]
pub fn is_channel_data(bytes: &[u8], has_allocation: bool) -> bool {
    match bytes.first() {
        Some(b) if b >> 6 == 1 => {
            has_allocation || !bytes.starts_with(&natgw_proto::punch::wire::MAGIC)
        }
        _ => false,
    }
}

/// Whether a STUN message is for TURN (any method but Binding).
#[must_use]
pub fn is_turn_stun(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && (u16::from_be_bytes([bytes[0], bytes[1]]) & 0x3eef) != 0x0001
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_binds_even_ports_and_holds_the_next() {
        let handover = Handover::default();
        let mut a = SocketAllocator::new(Ipv4Addr::LOCALHOST, 41_000..=41_099, handover.clone());
        let addr = a.allocate(true, true).unwrap();
        assert_eq!(addr.port() % 2, 0);
        assert!(handover.lock().unwrap().contains_key(&addr));
        let next = SocketAddrV4::new(Ipv4Addr::LOCALHOST, addr.port() + 1);
        // The reserved port is bound: nobody else gets it.
        assert!(std::net::UdpSocket::bind(next).is_err());
        a.claim(next).unwrap();
        assert!(handover.lock().unwrap().contains_key(&next));
        assert_eq!(a.claim(next), Err(AllocError::NotReserved));
        a.release(addr);
        a.release(next);
        assert!(handover.lock().unwrap().is_empty());
        assert!(std::net::UdpSocket::bind(addr).is_ok());
    }

    #[test]
    fn allocator_exhausts_its_range() {
        let mut a = SocketAllocator::new(Ipv4Addr::LOCALHOST, 41_200..=41_201, Handover::default());
        let one = a.allocate(false, false).unwrap();
        let two = a.allocate(false, false).unwrap();
        assert_ne!(one, two);
        assert_eq!(a.allocate(false, false), Err(AllocError::Exhausted));
        a.release(one);
        assert_eq!(a.allocate(false, false), Ok(one));
    }

    #[test]
    fn demultiplexing() {
        assert!(is_turn_stun(&[0x00, 0x03]));
        assert!(!is_turn_stun(&[0x00, 0x01]));
        assert!(is_channel_data(&[0x40, 0x00, 0, 0], false));
        assert!(!is_channel_data(b"NP\x02\x01", false));
        assert!(is_channel_data(b"NP\x02\x01", true));
        assert!(!is_channel_data(&[0x00, 0x01], true));
    }
}
