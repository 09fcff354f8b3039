//! A small PCP and NAT-PMP client, for trying a server by hand (`natgw pcp`, natgw's
//! own server or any other) and for `natgw punch --pcp`. It builds each request with
//! the codecs, sends it to the server's port 5351, waits for the matching answer and
//! returns it decoded ([`PcpReport`], [`NatPmpReport`]).
//!
//! Retransmission: RFC 6887 §8.1.1 starts at 3 s and backs off without bound, which
//! suits a daemon, not a command; this client sends [`TRIES`] times,
//! [`RETRY_INTERVAL`] apart, then gives up with an error. Nothing is stored: `map`
//! prints the nonce, which `map --nonce` (renew) and `delete --nonce` need.

use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;

use natgw_proto::pcp::natpmp::{self, MapProtocol};
use natgw_proto::pcp::wire::{
    self, FilterRepr, MapRepr, Nonce, OpRepr, Opcode, OptionRepr, PeerRepr, ResultCode,
};

/// Times a request is sent before giving up.
pub const TRIES: u32 = 3;
/// Wait for an answer before sending again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Lifetime requested unless `--lifetime` says otherwise (RFC 6886 §3.3 recommends
/// two hours).
pub const LIFETIME_DEFAULT: u32 = 7200;

/// Protocol of a PCP mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// Every protocol and port (MAP only, internal port 0).
    All,
}

impl Protocol {
    const fn wire(self) -> u8 {
        match self {
            Self::Udp => wire::PROTOCOL_UDP,
            Self::Tcp => wire::PROTOCOL_TCP,
            Self::All => wire::PROTOCOL_ALL,
        }
    }
}

/// A PCP MAP: create or renew an inbound mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRequest {
    /// Protocol to map.
    pub protocol: Protocol,
    /// Internal port to map (0 with [`Protocol::All`]).
    pub internal_port: u16,
    /// External endpoint to ask for; 0.0.0.0:PORT asks for the port only.
    pub suggest: Option<SocketAddrV4>,
    /// Requested lifetime in seconds; the server may grant less or more.
    pub lifetime: u32,
    /// Nonce of the mapping to renew; a new random one when `None`.
    pub nonce: Option<Nonce>,
    /// PREFER_FAILURE: no other external endpoint than `suggest`.
    pub prefer_failure: bool,
    /// FILTER options: only these remote prefixes and ports reach the mapping.
    pub filters: Vec<FilterRepr>,
    /// A FILTER with prefix length 0: remove the mapping's filters.
    pub clear_filters: bool,
    /// THIRD_PARTY: map for another internal host.
    pub third_party: Option<Ipv4Addr>,
}

impl MapRequest {
    /// A plain MAP of `internal_port`: no suggestion, options or nonce.
    #[must_use]
    pub const fn new(protocol: Protocol, internal_port: u16, lifetime: u32) -> Self {
        Self {
            protocol,
            internal_port,
            suggest: None,
            lifetime,
            nonce: None,
            prefer_failure: false,
            filters: Vec::new(),
            clear_filters: false,
            third_party: None,
        }
    }
}

/// A PCP PEER: create or refresh the outbound mapping towards one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRequest {
    /// UDP or TCP.
    pub protocol: Protocol,
    /// Internal port the traffic comes from.
    pub internal_port: u16,
    /// The remote peer.
    pub peer: SocketAddrV4,
    /// External endpoint to ask for, honoured only if no mapping exists yet.
    pub suggest: Option<SocketAddrV4>,
    /// Seconds the mapping should live without traffic.
    pub lifetime: u32,
    /// Nonce of an earlier PEER for the same mapping; random when `None`.
    pub nonce: Option<Nonce>,
    /// THIRD_PARTY: for another internal host.
    pub third_party: Option<Ipv4Addr>,
}

/// A PCP MAP with lifetime 0: delete a mapping made with `nonce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteRequest {
    /// Protocol of the mapping.
    pub protocol: Protocol,
    /// Internal port of the mapping; 0 deletes all of the host's mappings of the
    /// protocol made with this nonce.
    pub internal_port: u16,
    /// The nonce the mapping was made with.
    pub nonce: Nonce,
    /// THIRD_PARTY: for another internal host.
    pub third_party: Option<Ipv4Addr>,
}

/// Lower-case hex, as nonces are printed and given.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A nonce written as 24 hex digits (as [`hex`] prints it).
#[must_use]
pub fn nonce_from_hex(s: &str) -> Option<Nonce> {
    let digits = s.trim();
    if digits.len() != 24 || !digits.is_ascii() {
        return None;
    }
    let mut nonce = [0; 12];
    for (i, byte) in nonce.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(nonce)
}

/// A random mapping nonce (RFC 6887 §11.1, §12.1).
///
/// # Errors
/// When the kernel's random source cannot be read.
pub fn random_nonce() -> Result<Nonce> {
    natgw_proto::util::rng::random_bytes().context("reading a random nonce from /dev/urandom")
}

/// A UDP socket connected to the server.
struct Session {
    socket: UdpSocket,
    server: SocketAddrV4,
    local: SocketAddrV4,
}

impl Session {
    fn open(server: SocketAddrV4) -> Result<Self> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("opening a UDP socket")?;
        socket
            .connect(server)
            .with_context(|| format!("finding a route to {server}"))?;
        // The client address field must be the address the server sees (RFC 6887
        // §8.1): the one the kernel picked for reaching it.
        let local = match socket
            .local_addr()
            .context("reading the socket's address")?
        {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => {
                bail!("the socket has IPv6 address {a}; PCP over IPv6 is not supported")
            }
        };
        Ok(Self {
            socket,
            server,
            local,
        })
    }

    /// Sends `request` up to [`TRIES`] times and returns the first answer `decode`
    /// accepts; other datagrams (stale answers, other nonces) are ignored.
    fn exchange<T>(&self, request: &[u8], decode: impl Fn(&[u8]) -> Option<T>) -> Result<T> {
        let mut buf = [0; 2048];
        for _ in 0..TRIES {
            self.socket
                .send(request)
                .with_context(|| format!("sending to {}", self.server))?;
            let deadline = Instant::now() + RETRY_INTERVAL;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.socket.set_read_timeout(Some(left))?;
                match self.socket.recv(&mut buf) {
                    Ok(n) => {
                        if let Some(answer) = decode(&buf[..n]) {
                            return Ok(answer);
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                        break
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => bail!(
                        "{} refused the request (ICMP port unreachable): no PCP server listens there",
                        self.server
                    ),
                    Err(e) => return Err(e).with_context(|| format!("receiving from {}", self.server)),
                }
            }
        }
        bail!(
            "no answer from {} after {TRIES} tries {} s apart",
            self.server,
            RETRY_INTERVAL.as_secs()
        )
    }
}

/// What came back for a PCP request.
enum PcpAnswer {
    Pcp(wire::Response),
    /// A version-0 answer: the server speaks only NAT-PMP.
    NatPmpOnly,
}

fn decode_pcp(bytes: &[u8], opcode: Opcode, nonce: Option<Nonce>) -> Option<PcpAnswer> {
    if bytes.first() == Some(&natpmp::VERSION) {
        let packet = natpmp::Packet::new_checked(bytes).ok()?;
        return natpmp::Response::parse(&packet)
            .ok()
            .map(|_| PcpAnswer::NatPmpOnly);
    }
    let response = wire::Response::parse(&wire::Packet::new_checked(bytes).ok()?).ok()?;
    if response.opcode != opcode {
        return None;
    }
    let answer_nonce = match &response.op {
        Some(OpRepr::Map(m)) => Some(m.nonce),
        Some(OpRepr::Peer(p)) => Some(p.nonce),
        _ => None,
    };
    if nonce.is_some() && answer_nonce.is_some() && answer_nonce != nonce {
        return None;
    }
    Some(PcpAnswer::Pcp(response))
}

/// A decoded PCP answer, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PcpReport {
    /// Server asked.
    pub server: SocketAddrV4,
    /// Address and port the request came from.
    pub client: SocketAddrV4,
    /// `ANNOUNCE`, `MAP` or `PEER`.
    pub opcode: &'static str,
    /// Result code name.
    pub result: String,
    /// Result code value.
    pub result_code: u8,
    /// Granted lifetime, or how long an error will persist.
    pub lifetime: u32,
    /// Server epoch in seconds.
    pub epoch: u32,
    /// `udp`, `tcp`, `all` or `proto-N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Internal endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal: Option<SocketAddrV4>,
    /// Assigned external endpoint (success only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<SocketAddrV4>,
    /// Remote peer (PEER).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddrV4>,
    /// Nonce, 24 hex digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

impl PcpReport {
    fn from_response(
        server: SocketAddrV4,
        client: SocketAddrV4,
        internal_host: Ipv4Addr,
        response: &wire::Response,
    ) -> Self {
        let success = response.result == ResultCode::Success;
        let v4 = |a: std::net::Ipv6Addr| a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let protocol_name = |p: u8| match p {
            wire::PROTOCOL_ALL => "all".to_owned(),
            wire::PROTOCOL_TCP => "tcp".to_owned(),
            wire::PROTOCOL_UDP => "udp".to_owned(),
            other => format!("proto-{other}"),
        };
        let mut report = Self {
            server,
            client,
            opcode: response.opcode.name(),
            result: response.result.to_string(),
            result_code: response.result.to_wire(),
            lifetime: response.lifetime,
            epoch: response.epoch,
            protocol: None,
            internal: None,
            external: None,
            peer: None,
            nonce: None,
        };
        let (nonce, protocol, internal_port, ext_port, ext_addr) = match &response.op {
            Some(OpRepr::Map(m)) => (
                m.nonce,
                m.protocol,
                m.internal_port,
                m.external_port,
                m.external_address,
            ),
            Some(OpRepr::Peer(p)) => {
                report.peer = Some(SocketAddrV4::new(v4(p.remote_address), p.remote_port));
                (
                    p.nonce,
                    p.protocol,
                    p.internal_port,
                    p.external_port,
                    p.external_address,
                )
            }
            Some(OpRepr::Announce) | None => return report,
        };
        report.protocol = Some(protocol_name(protocol));
        report.internal = Some(SocketAddrV4::new(internal_host, internal_port));
        report.nonce = Some(hex(&nonce));
        if success && response.lifetime > 0 {
            report.external = Some(SocketAddrV4::new(v4(ext_addr), ext_port));
        }
        report
    }

    /// The answer as aligned text rows.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: &dyn std::fmt::Display| {
            let _ = writeln!(out, "{k:<10}{v}");
        };
        row("server", &self.server);
        row("opcode", &self.opcode);
        row("result", &self.result);
        row("lifetime", &format_args!("{} s", self.lifetime));
        row("epoch", &format_args!("{} s", self.epoch));
        if let (Some(p), Some(i)) = (&self.protocol, &self.internal) {
            row("internal", &format_args!("{p} {i}"));
        }
        if let Some(e) = &self.external {
            row("external", e);
        }
        if let Some(p) = &self.peer {
            row("peer", p);
        }
        if let Some(n) = &self.nonce {
            row("nonce", n);
        }
        out
    }
}

/// Sends one PCP request and decodes the answer.
fn pcp_exchange(
    server: SocketAddrV4,
    lifetime: u32,
    op: OpRepr,
    options: Vec<OptionRepr>,
    internal_host: Option<Ipv4Addr>,
) -> Result<PcpReport> {
    let session = Session::open(server)?;
    let request = wire::Request {
        lifetime,
        client_address: session.local.ip().to_ipv6_mapped(),
        op,
        options,
    };
    let nonce = match op {
        OpRepr::Map(m) => Some(m.nonce),
        OpRepr::Peer(p) => Some(p.nonce),
        OpRepr::Announce => None,
    };
    let opcode = op.opcode();
    match session.exchange(&request.to_bytes(), |b| decode_pcp(b, opcode, nonce))? {
        PcpAnswer::Pcp(response) => Ok(PcpReport::from_response(
            server,
            session.local,
            internal_host.unwrap_or(*session.local.ip()),
            &response,
        )),
        PcpAnswer::NatPmpOnly => Err(anyhow!(
            "{server} speaks only NAT-PMP (it answered with version 0); \
             use `natgw pcp natpmp-map` or `natgw pcp natpmp-address`"
        )),
    }
}

fn suggestion(s: Option<SocketAddrV4>) -> (u16, std::net::Ipv6Addr) {
    let s = s.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    (s.port(), s.ip().to_ipv6_mapped())
}

fn third_party_option(host: Option<Ipv4Addr>) -> Option<OptionRepr> {
    host.map(|h| OptionRepr::ThirdParty(h.to_ipv6_mapped()))
}

/// Sends a PCP MAP to `server` and decodes the answer.
///
/// # Errors
/// No answer, an answer in NAT-PMP, or a socket error.
pub fn map(server: SocketAddrV4, request: &MapRequest) -> Result<PcpReport> {
    let nonce = match request.nonce {
        Some(n) => n,
        None => random_nonce()?,
    };
    let (external_port, external_address) = suggestion(request.suggest);
    let mut options: Vec<OptionRepr> = third_party_option(request.third_party)
        .into_iter()
        .collect();
    if request.prefer_failure {
        options.push(OptionRepr::PreferFailure);
    }
    options.extend(request.filters.iter().copied().map(OptionRepr::Filter));
    if request.clear_filters {
        options.push(OptionRepr::Filter(FilterRepr {
            prefix_len: 0,
            remote_port: 0,
            remote_address: Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
        }));
    }
    let op = OpRepr::Map(MapRepr {
        nonce,
        protocol: request.protocol.wire(),
        internal_port: request.internal_port,
        external_port,
        external_address,
    });
    pcp_exchange(server, request.lifetime, op, options, request.third_party)
}

/// Sends a PCP PEER to `server` and decodes the answer.
///
/// # Errors
/// `Protocol::All`, no answer, an answer in NAT-PMP, or a socket error.
pub fn peer(server: SocketAddrV4, request: &PeerRequest) -> Result<PcpReport> {
    if request.protocol == Protocol::All {
        bail!("PEER needs protocol udp or tcp");
    }
    let nonce = match request.nonce {
        Some(n) => n,
        None => random_nonce()?,
    };
    let (external_port, external_address) = suggestion(request.suggest);
    let op = OpRepr::Peer(PeerRepr {
        nonce,
        protocol: request.protocol.wire(),
        internal_port: request.internal_port,
        external_port,
        external_address,
        remote_port: request.peer.port(),
        remote_address: request.peer.ip().to_ipv6_mapped(),
    });
    let options = third_party_option(request.third_party)
        .into_iter()
        .collect();
    pcp_exchange(server, request.lifetime, op, options, request.third_party)
}

/// Deletes a mapping at `server` (MAP with lifetime 0).
///
/// # Errors
/// No answer, an answer in NAT-PMP, or a socket error.
pub fn delete(server: SocketAddrV4, request: &DeleteRequest) -> Result<PcpReport> {
    let op = OpRepr::Map(MapRepr {
        nonce: request.nonce,
        protocol: request.protocol.wire(),
        internal_port: request.internal_port,
        external_port: 0,
        external_address: Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
    });
    let options = third_party_option(request.third_party)
        .into_iter()
        .collect();
    pcp_exchange(server, 0, op, options, request.third_party)
}

/// Asks `server` for its epoch (PCP ANNOUNCE).
///
/// # Errors
/// No answer, an answer in NAT-PMP, or a socket error.
pub fn announce(server: SocketAddrV4) -> Result<PcpReport> {
    pcp_exchange(server, 0, OpRepr::Announce, Vec::new(), None)
}

/// A decoded NAT-PMP answer, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatPmpReport {
    /// Server asked.
    pub server: SocketAddrV4,
    /// `address` or `map`.
    pub request: &'static str,
    /// Result code name.
    pub result: String,
    /// Result code value.
    pub result_code: u16,
    /// Seconds since the server's epoch began.
    pub epoch: u32,
    /// External address (address requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_address: Option<Ipv4Addr>,
    /// `udp` or `tcp` (map requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// Internal port (map requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_port: Option<u16>,
    /// Mapped external port (map requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_port: Option<u16>,
    /// Granted lifetime (map requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<u32>,
}

impl NatPmpReport {
    /// The answer as aligned text rows.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: &dyn std::fmt::Display| {
            let _ = writeln!(out, "{k:<10}{v}");
        };
        row("server", &self.server);
        row("result", &self.result);
        row("epoch", &format_args!("{} s", self.epoch));
        if let Some(a) = &self.external_address {
            row("external", a);
        }
        if let (Some(p), Some(i)) = (self.protocol, self.internal_port) {
            row("internal", &format_args!("{p} port {i}"));
        }
        if let Some(e) = self.external_port {
            row("external", &format_args!("port {e}"));
        }
        if let Some(l) = self.lifetime {
            row("lifetime", &format_args!("{l} s"));
        }
        out
    }
}

/// Sends one NAT-PMP request to `server` and decodes the answer.
///
/// # Errors
/// No answer, an answer in PCP, or a socket error.
pub fn natpmp(server: SocketAddrV4, request: natpmp::Request) -> Result<NatPmpReport> {
    let session = Session::open(server)?;
    let decode = |b: &[u8]| -> Option<Result<natpmp::Response, ()>> {
        if b.first() == Some(&wire::VERSION) {
            return Some(Err(()));
        }
        let response = natpmp::Response::parse(&natpmp::Packet::new_checked(b).ok()?).ok()?;
        let matches = match (request, response) {
            (natpmp::Request::ExternalAddress, natpmp::Response::ExternalAddress { .. }) => true,
            (
                natpmp::Request::Map {
                    protocol,
                    internal_port,
                    ..
                },
                natpmp::Response::Map {
                    protocol: p,
                    internal_port: i,
                    ..
                },
            ) => protocol == p && internal_port == i,
            (_, natpmp::Response::Bare { .. }) => true,
            _ => false,
        };
        matches.then_some(Ok(response))
    };
    let response = session
        .exchange(&request.to_bytes(), decode)?
        .map_err(|()| anyhow!("{server} answered with PCP: it does not speak NAT-PMP"))?;
    let mut report = NatPmpReport {
        server,
        request: match request {
            natpmp::Request::ExternalAddress => "address",
            natpmp::Request::Map { .. } => "map",
        },
        result: response.result().to_string(),
        result_code: response.result().to_wire(),
        epoch: response.epoch(),
        external_address: None,
        protocol: None,
        internal_port: None,
        external_port: None,
        lifetime: None,
    };
    match response {
        natpmp::Response::ExternalAddress { address, .. } => {
            report.external_address = Some(address);
        }
        natpmp::Response::Map {
            protocol,
            internal_port,
            external_port,
            lifetime,
            ..
        } => {
            report.protocol = Some(match protocol {
                MapProtocol::Udp => "udp",
                MapProtocol::Tcp => "tcp",
            });
            report.internal_port = Some(internal_port);
            report.external_port = Some(external_port);
            report.lifetime = Some(lifetime);
        }
        natpmp::Response::Bare { .. } => {}
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_proto::pcp::engine::Engine;
    use natgw_proto::pcp::policy::PcpConfig;
    use natgw_proto::pcp::testing::MemoryTable;
    use std::thread;

    /// A natgw PCP engine over loopback answering `count` datagrams.
    fn serve(count: usize) -> (SocketAddrV4, thread::JoinHandle<MemoryTable>) {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let SocketAddr::V4(addr) = socket.local_addr().unwrap() else {
            unreachable!()
        };
        let handle = thread::spawn(move || {
            let mut server = Engine::new(PcpConfig::default(), Instant::now()).unwrap();
            let mut table = MemoryTable::new(Ipv4Addr::new(203, 0, 113, 1));
            // The client speaks from loopback: serve it as the LAN.
            table.lans = vec!["127.0.0.0/8".parse().unwrap()];
            table.gateway.clear();
            let mut buf = [0; 2048];
            for _ in 0..count {
                let (n, SocketAddr::V4(from)) = socket.recv_from(&mut buf).unwrap() else {
                    unreachable!()
                };
                if let Some(reply) = server.handle(Instant::now(), from, &buf[..n], &mut table) {
                    socket.send_to(&reply, from).unwrap();
                }
            }
            table
        });
        (addr, handle)
    }

    #[test]
    fn map_renew_and_delete_against_the_engine() {
        // rfc6887 11: the client's own address goes in the header; the nonce renews
        let (addr, server) = serve(4);
        let mut request = MapRequest {
            suggest: Some("0.0.0.0:8080".parse().unwrap()),
            filters: vec![FilterRepr {
                prefix_len: 120,
                remote_port: 0,
                remote_address: Ipv4Addr::new(198, 51, 100, 0).to_ipv6_mapped(),
            }],
            ..MapRequest::new(Protocol::Tcp, 8080, 600)
        };
        let report = map(addr, &request).unwrap();
        assert_eq!(report.result, "SUCCESS");
        assert_eq!(report.external, Some("203.0.113.1:8080".parse().unwrap()));
        assert_eq!(report.internal, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(report.lifetime, 600);
        let nonce = report.nonce.clone().unwrap();
        assert!(report.text().contains("external  203.0.113.1:8080"));

        let nonce_bytes = nonce_from_hex(&nonce).unwrap();
        request.nonce = Some(nonce_bytes);
        request.lifetime = 1200;
        let renewed = map(addr, &request).unwrap();
        assert_eq!(renewed.lifetime, 1200);
        assert_eq!(renewed.external, report.external);

        let deleted = delete(
            addr,
            &DeleteRequest {
                protocol: Protocol::Tcp,
                internal_port: 8080,
                nonce: nonce_bytes,
                third_party: None,
            },
        )
        .unwrap();
        assert_eq!(deleted.result, "SUCCESS");
        assert_eq!(deleted.lifetime, 0);

        let announced = announce(addr).unwrap();
        assert_eq!(announced.opcode, "ANNOUNCE");
        let json = serde_json::to_value(&announced).unwrap();
        assert_eq!(json["result_code"], 0);
        let table = server.join().unwrap();
        assert!(table.explicit.is_empty());
        assert_eq!(table.installs.len(), 2);
    }

    #[test]
    fn natpmp_address_and_map_against_the_engine() {
        // rfc6886 3.2, 3.3
        let (addr, server) = serve(2);
        let report = natpmp(addr, natpmp::Request::ExternalAddress).unwrap();
        assert_eq!(report.external_address, Some(Ipv4Addr::new(203, 0, 113, 1)));
        let report = natpmp(
            addr,
            natpmp::Request::Map {
                protocol: MapProtocol::Udp,
                internal_port: 5000,
                suggested_external_port: 45000,
                lifetime: 3600,
            },
        )
        .unwrap();
        assert_eq!(report.result, "SUCCESS");
        assert_eq!(report.external_port, Some(45000));
        assert_eq!(report.lifetime, Some(3600));
        server.join().unwrap();
    }
}
