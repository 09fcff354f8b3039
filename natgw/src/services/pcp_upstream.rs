//! The upstream side of the PCP proxy (double NAT, RFC 7648) on a socket: the thin
//! loop around the sans-IO [`Upstream`].
//!
//! One UDP socket on natgw's external address, bound to the WAN interface and
//! connected to the upstream server (so an ICMP port unreachable comes back as
//! `ECONNREFUSED` and an absent server is known at once).
//!
//! [`UpstreamLink::sync`] compares the explicit mappings of the shared table (PCP,
//! NAT-PMP and UPnP alike) with the upstream entries: a new or renewed mapping is
//! wanted upstream, an ended one is released. [`UpstreamLink::outgoing`] looks at
//! each answer the server engine makes: a successful PCP MAP or NAT-PMP mapping
//! response gets the upstream external endpoint when it is known; when the upstream
//! request is still out, the answer is held for at most [`HOLD`] and sent —
//! rewritten or as it was — when the upstream answers or the time is up. NAT-PMP's
//! external address response carries the upstream's address once one is known.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use tokio::net::UdpSocket;

use natgw_proto::pcp::natpmp;
use natgw_proto::pcp::table::{
    ExplicitMapping, Install, MappingKey, MappingTable, PeerGrant, PeerRequest, Protocol,
    TableError,
};
use natgw_proto::pcp::upstream::{Event, Key, Transmit, Upstream};
use natgw_proto::pcp::wire::{self, OpRepr, Opcode, ResultCode};

/// Longest a local answer waits for the upstream's: shorter than a PCP client's
/// first retransmission (3 s, RFC 6887 §8.1.1) and NAT-PMP's second (RFC 6886 §3.1).
pub const HOLD: Duration = Duration::from_millis(1500);

/// An answer held until the upstream answers.
#[derive(Debug)]
pub struct Held {
    /// The upstream mapping it waits for.
    pub key: Key,
    /// When it goes out as it is.
    pub deadline: Instant,
    /// The LAN socket it leaves from.
    pub socket: usize,
    /// The client.
    pub destination: SocketAddrV4,
    /// The answer (rewritten when released after the upstream answered).
    pub payload: Vec<u8>,
}

/// What to do with a local answer.
enum Verdict {
    /// Send it (rewritten or not).
    Send(Vec<u8>),
    /// Wait for the upstream mapping `key`.
    Wait(Key, Vec<u8>),
}

/// The upstream client and its socket.
pub struct UpstreamLink {
    engine: Upstream,
    /// Where answers are read (tokio, for readiness).
    socket: UdpSocket,
    /// The same socket, for sending. tokio's `try_send` fails with "would block"
    /// until its reactor has seen the socket writable once, so the first requests
    /// (made as the link opens) would wait for a retry; a non-blocking send on the
    /// plain socket does not depend on the reactor.
    sender: std::net::UdpSocket,
    /// The WAN interface the socket is bound to.
    iface: String,
    /// natgw's external address (the upstream mappings' internal address).
    external: Ipv4Addr,
    held: Vec<Held>,
    /// The table's generation at the last sync.
    generation: Option<u64>,
    /// When the link was opened, until the first sync: the mappings a restarted
    /// natgw adopted are wanted upstream at once, not at the first table change.
    unsynced_since: Option<Instant>,
}

/// The default gateway of `iface` from `/proc/net/route`.
#[must_use]
pub fn default_gateway(iface: &str) -> Option<Ipv4Addr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8
            || fields[0] != iface
            || fields[1] != "00000000"
            || fields[7] != "00000000"
        {
            return None;
        }
        let gateway = u32::from_str_radix(fields[2], 16).ok()?;
        // The kernel prints the network-order address as a host-order integer.
        let gateway = Ipv4Addr::from(gateway.to_ne_bytes());
        (!gateway.is_unspecified()).then_some(gateway)
    })
}

/// The socket to the upstream server, for receiving (tokio) and for sending.
fn open_socket(
    server: SocketAddrV4,
    iface: &str,
    external: Ipv4Addr,
) -> io::Result<(UdpSocket, std::net::UdpSocket)> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(SockProtocol::UDP))?;
    socket.bind_device(Some(iface.as_bytes()))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddrV4::new(external, 0).into())?;
    socket.connect(&server.into())?;
    let sender = socket.try_clone()?;
    Ok((UdpSocket::from_std(socket.into())?, sender.into()))
}

/// A new random nonce seed.
///
/// # Errors
/// When `/dev/urandom` cannot be read.
pub fn random_seed() -> io::Result<[u8; 12]> {
    natgw_proto::util::rng::random_bytes()
}

impl UpstreamLink {
    /// A client of the upstream PCP server `server`, from natgw's external address
    /// `external` on WAN interface `iface`, nonces from `seed` (see
    /// [`Upstream::nonce_for`]); its discovery starts at once.
    ///
    /// # Errors
    /// When the socket cannot be made.
    pub fn open(
        server: SocketAddrV4,
        iface: &str,
        external: Ipv4Addr,
        seed: [u8; 12],
        now: Instant,
    ) -> io::Result<Self> {
        let (socket, sender) = open_socket(server, iface, external)?;
        let mut link = Self {
            engine: Upstream::new(server, external, seed, now),
            socket,
            sender,
            iface: iface.to_owned(),
            external,
            held: Vec::new(),
            generation: None,
            unsynced_since: Some(now),
        };
        link.engine.handle_timeout(now);
        link.flush(now);
        Ok(link)
    }

    /// The upstream server.
    #[must_use]
    pub const fn server(&self) -> SocketAddrV4 {
        self.engine.server()
    }

    /// natgw's address the upstream mappings point at.
    #[must_use]
    pub const fn local_address(&self) -> Ipv4Addr {
        self.external
    }

    /// natgw's external address changed to `external`: the socket moves to it, and
    /// every upstream mapping is requested again for the new address (the old ones
    /// pointed at the old address, and expire upstream).
    ///
    /// # Errors
    /// When the new socket cannot be made (the link keeps the old one).
    pub fn set_external(&mut self, external: Ipv4Addr, now: Instant) -> io::Result<()> {
        if external == self.external {
            return Ok(());
        }
        let (socket, sender) = open_socket(self.server(), &self.iface, external)?;
        info!(
            "pcp.upstream.moved server={} from={} to={external}",
            self.server(),
            self.external
        );
        (self.socket, self.sender, self.external) = (socket, sender, external);
        self.engine.set_client(external, now);
        // The table's mappings on the new address are wanted at the next sync.
        self.generation = None;
        self.unsynced_since = Some(now);
        self.engine.handle_timeout(now);
        self.flush(now);
        Ok(())
    }

    /// Whether an answer about `key` is worth waiting for (see
    /// [`Upstream::awaiting`]).
    #[must_use]
    pub fn awaiting(&self, key: &Key) -> bool {
        self.engine.awaiting(key)
    }

    /// The upstream's external address, once a grant showed it.
    #[must_use]
    pub fn external_address(&self, now: Instant) -> Option<Ipv4Addr> {
        self.engine.external_address(now)
    }

    /// The upstream external endpoint of the local mapping `key`, when granted.
    #[must_use]
    pub fn external(&self, key: &Key, now: Instant) -> Option<SocketAddrV4> {
        self.engine.external(key, now)
    }

    /// Wants upstream every live explicit mapping on natgw's external address, and
    /// releases the upstream mappings of those that ended.
    pub fn sync(&mut self, now: Instant, table: &impl MappingTable) {
        let generation = table.generation();
        if self.unsynced_since.take().is_none()
            && generation.is_some()
            && generation == self.generation
        {
            return;
        }
        self.generation = generation;
        let live: BTreeMap<Key, Instant> = table
            .explicit_all()
            .into_iter()
            .filter(|m| {
                m.key.protocol != Protocol::All
                    && *m.external.ip() == self.external
                    && m.expires > now
            })
            .map(|m| ((m.key.protocol, m.external.port()), m.expires))
            .collect();
        let gone: Vec<Key> = self
            .engine
            .keys()
            .filter(|k| !live.contains_key(k))
            .collect();
        for key in gone {
            self.engine.release(key, now);
        }
        for (key, expires) in live {
            self.engine.want(key, expires, now);
        }
        self.engine.handle_timeout(now);
        self.flush(now);
    }

    /// A local answer: `Some` to send now (rewritten when the upstream mapping is
    /// known), `None` when it is held (see [`UpstreamLink::on_timeout`]).
    pub fn outgoing(
        &mut self,
        now: Instant,
        socket: usize,
        destination: SocketAddrV4,
        payload: Vec<u8>,
    ) -> Option<Vec<u8>> {
        match self.verdict(now, payload, true) {
            Verdict::Send(p) => Some(p),
            Verdict::Wait(key, payload) => {
                debug!(
                    "pcp.upstream.hold client={destination} local=\"{} {}\"",
                    key.0, key.1
                );
                self.held.push(Held {
                    key,
                    deadline: now + HOLD,
                    socket,
                    destination,
                    payload,
                });
                None
            }
        }
    }

    /// An answer that cannot wait (an unsolicited MAP response, RFC 6887 §14.2),
    /// rewritten with the upstream endpoint when it is known.
    #[must_use]
    pub fn rewrite(&self, now: Instant, payload: Vec<u8>) -> Vec<u8> {
        match self.verdict(now, payload, false) {
            Verdict::Send(p) | Verdict::Wait(_, p) => p,
        }
    }

    fn verdict(&self, now: Instant, payload: Vec<u8>, may_wait: bool) -> Verdict {
        let decide = |key: Key, rewritten: Option<Vec<u8>>, payload: Vec<u8>| match rewritten {
            Some(p) => Verdict::Send(p),
            None if may_wait && self.engine.awaiting(&key) => Verdict::Wait(key, payload),
            None => Verdict::Send(payload),
        };
        match payload.first() {
            Some(&wire::VERSION) => {
                let Some(key) = pcp_map_key(&payload) else {
                    return Verdict::Send(payload);
                };
                let rewritten = self
                    .engine
                    .external(&key, now)
                    .and_then(|e| rewrite_pcp(&payload, e));
                decide(key, rewritten, payload)
            }
            Some(&natpmp::VERSION) => {
                let Ok(packet) = natpmp::Packet::new_checked(&payload[..]) else {
                    return Verdict::Send(payload);
                };
                if !packet.is_response() || packet.result_code() != natpmp::ResultCode::Success {
                    return Verdict::Send(payload);
                }
                let opcode = packet.opcode() & !natpmp::RESPONSE_BIT;
                match opcode {
                    natpmp::OP_EXTERNAL_ADDRESS
                        if payload.len() >= natpmp::EXTERNAL_ADDRESS_RESPONSE_LEN =>
                    {
                        let mut out = payload.clone();
                        if let Some(address) = self.engine.external_address(now) {
                            natpmp::Packet::new_unchecked(&mut out[..])
                                .set_external_address(address);
                        }
                        Verdict::Send(out)
                    }
                    natpmp::OP_MAP_UDP | natpmp::OP_MAP_TCP
                        if payload.len() >= natpmp::MAP_RESPONSE_LEN && packet.lifetime() > 0 =>
                    {
                        let protocol = if opcode == natpmp::OP_MAP_UDP {
                            Protocol::Udp
                        } else {
                            Protocol::Tcp
                        };
                        let key = (protocol, packet.mapped_external_port());
                        let rewritten = self.engine.external(&key, now).map(|e| {
                            let mut out = payload.clone();
                            natpmp::Packet::new_unchecked(&mut out[..])
                                .set_mapped_external_port(e.port());
                            out
                        });
                        decide(key, rewritten, payload)
                    }
                    _ => Verdict::Send(payload),
                }
            }
            _ => Verdict::Send(payload),
        }
    }

    /// Waits until the socket has datagrams. Cancel-safe.
    pub async fn readable(&self) {
        if let Err(e) = self.socket.readable().await {
            debug!("pcp.upstream.socket_error error=\"{e}\"");
        }
    }

    /// Reads the upstream's answers; returns the held answers that can go now.
    pub fn receive(&mut self, now: Instant) -> Vec<Held> {
        let mut buf = [0u8; wire::MAX_LEN + 1];
        let mut answered = Vec::new();
        for _ in 0..64 {
            match self.socket.try_recv_from(&mut buf) {
                Ok((len, SocketAddr::V4(src))) => {
                    if let Some(key) = self.engine.handle_response(now, src, &buf[..len]) {
                        answered.push(key);
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if crate::services::transient(&e) => {
                    debug!(
                        "pcp.upstream.unreachable server={} error=\"{e}\"",
                        self.server()
                    );
                    self.engine.unreachable(now);
                }
                Err(e) => {
                    warn!("pcp.upstream.receive_failed error=\"{e}\"");
                    break;
                }
            }
        }
        self.engine.handle_timeout(now);
        self.flush(now);
        // Every held answer whose mapping was answered, or that is waiting for nothing
        // any more (absent server, refusal).
        self.release(now, |h, engine| {
            answered.contains(&h.key) || !engine.awaiting(&h.key)
        })
    }

    /// When [`UpstreamLink::on_timeout`] is next due.
    #[must_use]
    pub fn next_timeout(&self) -> Option<Instant> {
        let held = self
            .held
            .iter()
            .map(|h| h.deadline)
            .chain(self.unsynced_since)
            .min();
        match (held, self.engine.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Retransmits, renews, deletes what is due; returns the held answers whose
    /// time is up (or that wait for nothing any more).
    pub fn on_timeout(&mut self, now: Instant) -> Vec<Held> {
        self.engine.handle_timeout(now);
        self.flush(now);
        self.release(now, |h, engine| {
            h.deadline <= now || !engine.awaiting(&h.key)
        })
    }

    fn release(&mut self, now: Instant, due: impl Fn(&Held, &Upstream) -> bool) -> Vec<Held> {
        let (out, keep): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| due(h, &self.engine));
        self.held = keep;
        out.into_iter()
            .map(|mut h| {
                if let Verdict::Send(p) = self.verdict(now, std::mem::take(&mut h.payload), false) {
                    h.payload = p;
                }
                h
            })
            .collect()
    }

    fn flush(&mut self, now: Instant) {
        while let Some(Transmit { payload, .. }) = self.engine.poll_transmit() {
            match self.sender.send(&payload) {
                Ok(_) => {}
                Err(e) if crate::services::transient(&e) => {
                    debug!(
                        "pcp.upstream.unreachable server={} error=\"{e}\"",
                        self.server()
                    );
                    self.engine.unreachable(now);
                }
                Err(e) => {
                    debug!("pcp.upstream.send_failed error=\"{e}\"");
                    self.engine.send_failed(now);
                }
            }
        }
        while let Some(event) = self.engine.poll_event() {
            match event {
                Event::Present(_)
                | Event::Absent(_)
                | Event::Mapped { .. }
                | Event::EpochLost { .. } => {
                    info!("{event}");
                }
                Event::Refused { .. } | Event::Unanswered(_) | Event::Expired(_) => {
                    warn!("{event}");
                }
                Event::Released(_) => debug!("{event}"),
            }
        }
    }
}

/// The upstream key a successful PCP MAP response (lifetime > 0) is about.
fn pcp_map_key(payload: &[u8]) -> Option<Key> {
    let response = wire::Response::parse(&wire::Packet::new_checked(payload).ok()?).ok()?;
    if response.opcode != Opcode::Map
        || response.result != ResultCode::Success
        || response.lifetime == 0
    {
        return None;
    }
    let Some(OpRepr::Map(map)) = response.op else {
        return None;
    };
    let protocol = Protocol::from_wire(map.protocol).filter(|p| *p != Protocol::All)?;
    Some((protocol, map.external_port))
}

/// The shared table as a PCP proxy's LAN clients should see it: its external
/// address is the upstream's once a grant showed it (UPnP's GetExternalIPAddress and
/// ExternalIPAddress events), everything else is the table's.
pub struct OuterView<'a, T> {
    table: &'a mut T,
    upstream: Option<Ipv4Addr>,
}

impl<'a, T: MappingTable> OuterView<'a, T> {
    /// `table`, with `upstream`'s external address when it is known.
    pub fn new(table: &'a mut T, upstream: Option<&UpstreamLink>, now: Instant) -> Self {
        let upstream = upstream.and_then(|u| u.external_address(now));
        Self { table, upstream }
    }
}

impl<T: MappingTable> MappingTable for OuterView<'_, T> {
    fn external_address(&self) -> Option<Ipv4Addr> {
        // Without an address of its own natgw has nothing to proxy either.
        let local = self.table.external_address()?;
        Some(self.upstream.unwrap_or(local))
    }
    fn explicit(&self, key: &MappingKey) -> Option<ExplicitMapping> {
        self.table.explicit(key)
    }
    fn explicit_of(&self, internal: Ipv4Addr) -> Vec<ExplicitMapping> {
        self.table.explicit_of(internal)
    }
    fn explicit_all(&self) -> Vec<ExplicitMapping> {
        self.table.explicit_all()
    }
    fn generation(&self) -> Option<u64> {
        self.table.generation()
    }
    fn lan_of(&self, host: Ipv4Addr) -> Option<u32> {
        self.table.lan_of(host)
    }
    fn explicit_count(&self, lan: Option<u32>) -> usize {
        self.table.explicit_count(lan)
    }
    fn install(&mut self, request: &Install) -> Result<SocketAddrV4, TableError> {
        self.table.install(request)
    }
    fn remove(&mut self, key: &MappingKey) {
        self.table.remove(key);
    }
    fn peer(&mut self, request: &PeerRequest) -> Result<PeerGrant, TableError> {
        self.table.peer(request)
    }
}

/// The PCP MAP response with the upstream external endpoint.
fn rewrite_pcp(payload: &[u8], external: SocketAddrV4) -> Option<Vec<u8>> {
    let mut response = wire::Response::parse(&wire::Packet::new_checked(payload).ok()?).ok()?;
    let Some(OpRepr::Map(mut map)) = response.op else {
        return None;
    };
    map.external_port = external.port();
    map.external_address = external.ip().to_ipv6_mapped();
    response.op = Some(OpRepr::Map(map));
    Some(response.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcp_map_response_is_rewritten_with_the_upstream_endpoint() {
        let map = wire::MapRepr {
            nonce: [1; 12],
            protocol: 17,
            internal_port: 5000,
            external_port: 40000,
            external_address: Ipv4Addr::new(100, 64, 0, 2).to_ipv6_mapped(),
        };
        let response = wire::Response {
            opcode: Opcode::Map,
            result: ResultCode::Success,
            lifetime: 600,
            epoch: 9,
            op: Some(OpRepr::Map(map)),
            options: Vec::new(),
        };
        let bytes = response.to_bytes();
        assert_eq!(pcp_map_key(&bytes), Some((Protocol::Udp, 40000)));
        let out = rewrite_pcp(&bytes, "203.0.113.7:50000".parse().unwrap()).unwrap();
        let parsed = wire::Response::parse(&wire::Packet::new_checked(&out[..]).unwrap()).unwrap();
        let Some(OpRepr::Map(m)) = parsed.op else {
            panic!("no MAP data");
        };
        assert_eq!(m.external_port, 50000);
        assert_eq!(
            m.external_address,
            Ipv4Addr::new(203, 0, 113, 7).to_ipv6_mapped()
        );
        assert_eq!(
            (m.nonce, m.internal_port, parsed.lifetime, parsed.epoch),
            (map.nonce, 5000, 600, 9)
        );
        // A deletion's answer is not about a live mapping.
        let deleted = wire::Response {
            lifetime: 0,
            ..response
        };
        assert_eq!(pcp_map_key(&deleted.to_bytes()), None);
    }
}
