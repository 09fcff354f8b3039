//! NAT behaviour discovery (RFC 5780 §4) against any STUN server: mapping behaviour,
//! filtering behaviour, hairpinning, and the public address, each with the tests that
//! support the conclusion.
//!
//! The split follows the responder's: what the tests saw is an [`Observations`]
//! value, and [`classify`] — a pure function — turns it into a [`Report`]; which test
//! runs next is decided by pure functions of the observations too
//! ([`mapping_test2_target`], ...). The socket part ([`run`]) only sends requests,
//! retransmits, and records what came back.
//!
//! Sockets: A runs test I and the mapping tests II/III; B (fresh, so no earlier packet
//! to the alternate address has opened the NAT's filter) runs the filtering tests; H
//! sends to A's public address for the hairpinning test (RFC 5780 §4.5 on ordering).
//!
//! Retransmission (RFC 8489 §6.2.1, shortened for a command line): RTO 500 ms,
//! doubling, at most 3 transmissions — at 0, 0.5 s and 1.5 s — and the test gives up
//! when `--timeout` (default 3 s) has passed since the first one.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use natgw_proto::stun::client::{
    binding_request, interpret, random_transaction_id, transmit_offsets, Seen,
};
use natgw_proto::stun::discovery::{
    classify, filtering_tests_possible, hairpin_target, mapping_test2_target, mapping_test3_target,
    needs_filtering_test3, Exchange, HairpinExchange, Observations, Report,
};
use natgw_proto::stun::wire::{ChangeRequest, Class, Packet, Repr};

/// Probe settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The STUN server.
    pub server: SocketAddrV4,
    /// Local address of socket A (port 0: any); unspecified IP: the route's source.
    pub local: Option<SocketAddrV4>,
    /// How long each test waits.
    pub timeout: Duration,
}

/// Runs the tests and classifies what they saw.
///
/// # Errors
/// Socket errors (binding, sending); a silent server is a finding, not an error.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let server = options.server;
    let timeout = options.timeout;
    let local_ip = match options.local {
        Some(l) if !l.ip().is_unspecified() => *l.ip(),
        _ => route_source(server).await?,
    };
    let a = bind(SocketAddrV4::new(
        local_ip,
        options.local.map_or(0, |l| l.port()),
    ))
    .await?;
    let none = ChangeRequest::default();
    let test1 = transact(&a, server, none, timeout).await?;
    let mut obs = Observations::new(server, test1);
    if let Some(to) = mapping_test2_target(&obs) {
        obs.mapping2 = Some(transact(&a, to, none, timeout).await?);
    }
    if let Some(to) = mapping_test3_target(&obs) {
        obs.mapping3 = Some(transact(&a, to, none, timeout).await?);
    }
    if filtering_tests_possible(&obs) {
        let b = bind(SocketAddrV4::new(local_ip, 0)).await?;
        let test1 = transact(&b, server, none, timeout).await?;
        let answered = test1.seen.mapped().is_some();
        obs.filtering1 = Some(test1);
        if answered {
            let both = ChangeRequest {
                change_ip: true,
                change_port: true,
            };
            obs.filtering2 = Some(transact(&b, server, both, timeout).await?);
            if needs_filtering_test3(&obs) {
                let port = ChangeRequest {
                    change_ip: false,
                    change_port: true,
                };
                obs.filtering3 = Some(transact(&b, server, port, timeout).await?);
            }
        }
    }
    if let Some(target) = hairpin_target(&obs) {
        let h = bind(SocketAddrV4::new(local_ip, 0)).await?;
        let sender_mapped = transact(&h, server, none, timeout).await?.seen.mapped();
        obs.hairpin = Some(hairpin(&a, &h, target, sender_mapped, timeout).await?);
    }
    Ok(classify(&obs))
}

async fn bind(addr: SocketAddrV4) -> anyhow::Result<UdpSocket> {
    UdpSocket::bind(addr)
        .await
        .with_context(|| format!("binding a probe socket on UDP {addr}"))
}

/// The source address the kernel picks for the server (no packet is sent).
async fn route_source(server: SocketAddrV4) -> anyhow::Result<Ipv4Addr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .context("binding a socket to find the local address")?;
    s.connect(server)
        .await
        .with_context(|| format!("finding a route to {server}"))?;
    match s.local_addr().context("reading the local address")? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(a) => bail!("route to {server} has the IPv6 source {a}"),
    }
}

fn local_v4(socket: &UdpSocket) -> io::Result<SocketAddrV4> {
    match socket.local_addr()? {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(io::Error::other("probe socket is not IPv4")),
    }
}

/// One Binding transaction with retransmissions ([`transmit_offsets`]) from `socket`
/// to `to`; other datagrams that arrive meanwhile are ignored. Also how `natgw punch`
/// learns its public endpoint from the socket it punches from.
///
/// # Errors
/// Socket errors; a silent server is a [`Seen::Timeout`], not an error.
pub async fn transact(
    socket: &UdpSocket,
    to: SocketAddrV4,
    change: ChangeRequest,
    timeout: Duration,
) -> anyhow::Result<Exchange> {
    let local = local_v4(socket).context("reading a probe socket's address")?;
    let transaction_id = random_transaction_id().context("reading /dev/urandom")?;
    let request = binding_request(transaction_id, change);
    let offsets = transmit_offsets(timeout);
    let start = Instant::now();
    let mut buf = vec![0u8; 65_536];
    let mut transmissions = 0;
    let exchange = |seen| Exchange {
        local,
        to,
        change_ip: change.change_ip,
        change_port: change.change_port,
        seen,
    };
    for (i, _) in offsets.iter().enumerate() {
        socket
            .send_to(&request, to)
            .await
            .with_context(|| format!("sending a STUN request from {local} to {to}"))?;
        transmissions += 1;
        let deadline = start + offsets.get(i + 1).copied().unwrap_or(timeout);
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            let (len, from) = match received {
                Ok(r) => r,
                // ICMP errors from earlier sends; keep waiting.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e).with_context(|| format!("receiving on {local}")),
            };
            let SocketAddr::V4(from) = from else { continue };
            if let Some(seen) = interpret(&buf[..len], from, &transaction_id) {
                return Ok(exchange(seen));
            }
        }
    }
    Ok(exchange(Seen::Timeout {
        transmissions,
        waited_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

/// H sends a Binding request to `target` (A's public address) until A receives it.
async fn hairpin(
    a: &UdpSocket,
    h: &UdpSocket,
    target: SocketAddrV4,
    sender_mapped: Option<SocketAddrV4>,
    timeout: Duration,
) -> anyhow::Result<HairpinExchange> {
    let sender = local_v4(h).context("reading a probe socket's address")?;
    let transaction_id = random_transaction_id().context("reading /dev/urandom")?;
    let request = binding_request(transaction_id, ChangeRequest::default());
    let offsets = transmit_offsets(timeout);
    let start = Instant::now();
    let mut buf = vec![0u8; 65_536];
    let mut transmissions = 0;
    for (i, _) in offsets.iter().enumerate() {
        h.send_to(&request, target)
            .await
            .with_context(|| format!("sending the hairpin request from {sender} to {target}"))?;
        transmissions += 1;
        let deadline = start + offsets.get(i + 1).copied().unwrap_or(timeout);
        while let Ok(received) = tokio::time::timeout_at(deadline, a.recv_from(&mut buf)).await {
            let Ok((len, SocketAddr::V4(from))) = received else {
                continue;
            };
            let is_ours = Packet::new_checked(&buf[..len])
                .ok()
                .and_then(|p| Repr::parse(&p).ok())
                .is_some_and(|r| r.class == Class::Request && r.transaction_id == transaction_id);
            if is_ours {
                return Ok(HairpinExchange {
                    sender,
                    sender_mapped,
                    target,
                    arrived_from: Some(from),
                    transmissions,
                });
            }
        }
    }
    Ok(HairpinExchange {
        sender,
        sender_mapped,
        target,
        arrived_from: None,
        transmissions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_proto::stun::discovery::{Behaviour, Hairpinning, Nat};

    #[tokio::test]
    async fn probe_against_a_loopback_responder() {
        // The whole path on loopback: an RFC 5780 responder on 127.0.0.1 and 127.0.0.2.
        use crate::services::stun;
        use natgw_proto::stun::responder::{Config, Counters};
        use std::sync::Arc;
        // Two free ports (the alternate one must be free on 127.0.0.2 too; loopback
        // ports are per address, so one free on 127.0.0.1 almost always is).
        let free = || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let (port, alt_port) = (free(), free());
        let mut config = Config::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        config.alternate = Some(Ipv4Addr::new(127, 0, 0, 2));
        config.alternate_port = alt_port;
        let sockets = stun::bind(&config).await.unwrap();
        let task = tokio::spawn(stun::run(config, sockets, Arc::<Counters>::default()));
        let report = run(&Options {
            server: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            local: None,
            timeout: Duration::from_secs(2),
        })
        .await
        .unwrap();
        task.abort();
        assert_eq!(report.nat.result, Some(Nat::None), "{report:?}");
        assert_eq!(report.mapping.result, Some(Behaviour::EndpointIndependent));
        assert_eq!(
            report.filtering.result,
            Some(Behaviour::EndpointIndependent)
        );
        assert_eq!(report.hairpinning.result, Some(Hairpinning::Supported));
    }
}
