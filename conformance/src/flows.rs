//! Traffic patterns several checks share: a UDP datagram out through the NAT (and
//! what source the WAN host saw), a datagram in to a mapping, ICMP errors crafted on
//! a WAN host about a flow, and the wording of what was seen.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use testbed::Netns;

use super::packet::{self, icmp_type, Ipv4Header, PROTO_ICMP, PROTO_UDP};
use super::sock::{self, Raw, Received};
use super::{Step as _, Stop};

/// lan-a's address.
pub const LAN_A: Ipv4Addr = testbed::LAN_A_ADDR;
/// lan-b's address.
pub const LAN_B: Ipv4Addr = testbed::LAN_B_ADDR;
/// wan-a's address.
pub const WAN_A: Ipv4Addr = testbed::WAN_A_ADDR;
/// wan-b's address.
pub const WAN_B: Ipv4Addr = testbed::WAN_B_ADDR;
/// The gateway's (first) external address.
pub const EXT: Ipv4Addr = testbed::GW_WAN_ADDR;

/// TTL of a packet from a LAN host as it reaches a WAN host: two routers (the
/// gateway and the inet router) took one each. What the gateway makes itself arrives
/// with one more, which is how the checks tell a NAT's translation of a host's answer
/// from an answer of the gateway's own stack.
pub const TTL_FROM_INSIDE: u8 = 64 - 2;

/// `a:p` as a socket address.
#[must_use]
pub fn ep(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}

/// "nothing" or the address.
#[must_use]
pub fn show(seen: Option<SocketAddrV4>) -> String {
    seen.map_or_else(|| "nothing".to_owned(), |a| a.to_string())
}

/// A UDP socket for a check; errors name the endpoint.
///
/// # Errors
/// When it cannot be bound.
pub fn udp(ns: &Netns, addr: Ipv4Addr, port: u16) -> Result<UdpSocket, Stop> {
    sock::udp(ns, addr, port).step(&format!("binding UDP {addr}:{port}"))
}

/// Sends `payload` from `from` to `to` and returns the source the receiving socket
/// `at` saw (`None` when nothing arrived within [`sock::ARRIVE`]).
///
/// # Errors
/// When sending fails.
pub fn udp_through(
    from: &UdpSocket,
    to: SocketAddrV4,
    at: &UdpSocket,
    payload: &[u8],
) -> Result<Option<SocketAddrV4>, Stop> {
    sock::send(from, payload, to).step(&format!("sending to {to}"))?;
    Ok(sock::recv_payload(at, payload, sock::ARRIVE))
}

/// Like [`udp_through`], but waits only [`sock::SILENCE`]: for datagrams that should
/// not arrive.
///
/// # Errors
/// When sending fails.
pub fn udp_blocked(
    from: &UdpSocket,
    to: SocketAddrV4,
    at: &UdpSocket,
    payload: &[u8],
) -> Result<Option<SocketAddrV4>, Stop> {
    sock::send(from, payload, to).step(&format!("sending to {to}"))?;
    Ok(sock::recv_payload(at, payload, sock::SILENCE))
}

/// An ICMP error that `wan` would send about the UDP datagram `ext -> wan_ep`, which
/// the NAT sent on behalf of an internal endpoint mapped to `ext`: outer header from
/// `from` to `ext`'s address.
#[must_use]
pub fn udp_error_about(
    from: Ipv4Addr,
    ext: SocketAddrV4,
    wan_ep: SocketAddrV4,
    kind: u8,
    code: u8,
) -> Vec<u8> {
    let inner = quoted_udp(ext, wan_ep, 0x5151);
    let msg = packet::icmp_error(kind, code, [0; 4], &inner);
    Ipv4Header::new(from, *ext.ip(), PROTO_ICMP).packet(&msg)
}

/// The IPv4 + UDP packet `src -> dst` as an ICMP error quotes it.
#[must_use]
pub fn quoted_udp(src: SocketAddrV4, dst: SocketAddrV4, id: u16) -> Vec<u8> {
    let mut h = Ipv4Header::new(*src.ip(), *dst.ip(), PROTO_UDP);
    h.id = id;
    h.ttl = 62;
    h.packet(&packet::udp(
        *src.ip(),
        *dst.ip(),
        src.port(),
        dst.port(),
        b"quoted payload",
    ))
}

/// Whether `got` is an ICMP error whose quoted packet is UDP from `src` to `dst`.
#[must_use]
pub fn is_error_about(got: &Received, src: SocketAddrV4, dst: SocketAddrV4) -> bool {
    got.icmp().is_some_and(|m| {
        m.is_error()
            && m.quoted().is_some_and(|q| {
                q.src() == *src.ip()
                    && q.dst() == *dst.ip()
                    && q.ports() == Some((src.port(), dst.port()))
            })
    })
}

/// One line describing an ICMP packet a raw socket received: outer addresses, type,
/// code, checksums and the quoted packet.
#[must_use]
pub fn describe_icmp(got: &Received) -> String {
    let ip = got.ip();
    let Some(m) = got.icmp() else {
        return format!("non-ICMP packet {} -> {}", ip.src(), ip.dst());
    };
    let mut s = format!(
        "ICMP {}/{} {} -> {} ttl {}{}",
        m.kind(),
        m.code(),
        ip.src(),
        ip.dst(),
        ip.ttl(),
        if m.checksum_ok() {
            ""
        } else {
            " (bad ICMP checksum)"
        }
    );
    if m.kind() == icmp_type::ECHO_REQUEST
        || m.kind() == icmp_type::ECHO_REPLY
        || m.kind() == icmp_type::TIMESTAMP
        || m.kind() == icmp_type::TIMESTAMP_REPLY
    {
        s.push_str(&format!(" id {:#06x}", m.ident()));
    } else if let Some(q) = m.quoted() {
        let ports = q
            .ports()
            .map_or_else(String::new, |(s, d)| format!(" ports {s}->{d}"));
        s.push_str(&format!(
            " quoting {} -> {}{ports}{}",
            q.src(),
            q.dst(),
            if q.checksum_ok() {
                ""
            } else {
                " (bad quoted IP checksum)"
            }
        ));
    }
    s
}

/// Waits for an ICMP error about UDP `src -> dst` on `raw` within `within`.
#[must_use]
pub fn error_about(
    raw: &Raw,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    within: Duration,
) -> Option<Received> {
    raw.recv_matching(within, |g| is_error_about(g, src, dst))
}

/// Milliseconds of `d`, for observations.
#[must_use]
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// A check's clock: `at(2.5)` sleeps until 2.5 s after the start.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    t0: std::time::Instant,
}

impl Timeline {
    /// Starts the clock now.
    #[must_use]
    pub fn start() -> Self {
        Self {
            t0: std::time::Instant::now(),
        }
    }

    /// Sleeps until `secs` after the start (returns at once if that has passed).
    pub fn at(&self, secs: f64) {
        let when = self.t0 + Duration::from_secs_f64(secs);
        if let Some(left) = when.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(left);
        }
    }

    /// Seconds since the start.
    #[must_use]
    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Seconds from the start to `instant`.
    #[must_use]
    pub fn since_start(&self, instant: std::time::Instant) -> f64 {
        instant.saturating_duration_since(self.t0).as_secs_f64()
    }
}
