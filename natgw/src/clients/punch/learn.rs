//! How a peer learns its own endpoints: STUN (RFC 8489) from the very socket or port it
//! punches from, and with `--pcp` its gateway's word — PCP MAP (an inbound mapping the
//! peer is offered) and PCP PEER (RFC 6887 §12: the mapping towards one peer, which on
//! natgw also opens the gateway's filter for that peer before the first probe).
//!
//! The network parts are thin wrappers around the STUN client (`crate::clients::stun_probe`)
//! and the PCP client (`crate::clients::pcp`); what an answer means is decided by pure
//! functions here ([`stun_outcome`], [`peer_targets`]) and by the report
//! (`Report::stun_answered`, `Report::registered`, `Report::pcp_peer_answered`). No
//! failure here ends the punch: it falls back to what the rendezvous saw, with a note.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::net::UdpSocket;

use super::report::PcpPeer;
use crate::clients::pcp::{self, MapRequest, PeerRequest, Protocol};
use crate::clients::stun_probe;
use natgw_proto::pcp::wire::Nonce;
use natgw_proto::punch::wire::{Mapped, MappedBy, PeerInfo};
use natgw_proto::stun::client::Seen;
use natgw_proto::stun::wire::ChangeRequest;

/// How long a STUN exchange may take before the peer goes on without it: over UDP
/// three transmissions, at 0, 0.5 s and 1.5 s ([`natgw_proto::stun::client::transmit_offsets`]).
pub const STUN_WAIT: Duration = Duration::from_secs(2);
/// Lifetime asked for a PCP mapping made by `--pcp` (MAP and PEER): long enough for
/// the peer to come in, short enough to go away on its own.
pub const PCP_LIFETIME: u32 = 120;

/// What a Binding exchange taught us: our public endpoint, or why there is none.
///
/// # Errors
/// A sentence saying what the server did instead of answering usefully.
pub fn stun_outcome(seen: &Seen) -> Result<SocketAddrV4, String> {
    match seen {
        Seen::Response { mapped, from, .. } if usable_public(*mapped, *from) => Ok(*mapped),
        Seen::Response { mapped, from, .. } => Err(format!(
            "the answer from {from} says we are {mapped}, which cannot be a public endpoint"
        )),
        other => Err(other.to_string()),
    }
}

/// Whether a STUN server's claim about us could be true: a unicast address that is
/// not 0, broadcast, multicast or class E, and a port that is not 0; loopback only
/// from a server on loopback itself (`server`: where the answer came from).
#[must_use]
pub fn usable_public(endpoint: SocketAddrV4, server: SocketAddrV4) -> bool {
    let ip = endpoint.ip();
    endpoint.port() != 0
        && !(ip.is_unspecified()
            || ip.is_broadcast()
            || ip.is_multicast()
            || ip.octets()[0] >= 240
            || (ip.is_loopback() && !server.ip().is_loopback()))
}

/// A Binding exchange from the punching UDP socket.
///
/// # Errors
/// Why it taught us nothing (no answer, an error answer, an unusable one, a socket
/// error).
pub async fn stun_udp(socket: &UdpSocket, server: SocketAddrV4) -> Result<SocketAddrV4, String> {
    match stun_probe::transact(socket, server, ChangeRequest::default(), STUN_WAIT).await {
        Ok(exchange) => stun_outcome(&exchange.seen),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The endpoints we announce in REGISTER: STUN's answer (our public endpoint as a
/// server saw it), then the PCP MAP's (the inbound mapping we hold).
#[must_use]
pub fn announced(stun: Option<SocketAddrV4>, map: Option<Mapped>) -> Vec<Mapped> {
    stun.map(|endpoint| Mapped {
        by: MappedBy::Stun,
        endpoint,
    })
    .into_iter()
    .chain(map)
    .collect()
}

/// The peer's endpoints our gateway should open towards with PEER: its PCP mapping,
/// its public endpoint and its STUN-learned one, each once. Its private endpoints are
/// on its LAN: our gateway never sees traffic from them.
#[must_use]
pub fn peer_targets(peer: &PeerInfo) -> Vec<SocketAddrV4> {
    let mut targets = Vec::new();
    let pcp = peer.mapped.iter().filter(|m| m.by == MappedBy::Pcp);
    let stun = peer.mapped.iter().filter(|m| m.by == MappedBy::Stun);
    let endpoints = pcp
        .map(|m| m.endpoint)
        .chain(std::iter::once(peer.public))
        .chain(stun.map(|m| m.endpoint));
    for endpoint in endpoints {
        if !targets.contains(&endpoint) {
            targets.push(endpoint);
        }
    }
    targets
}

const fn protocol(tcp: bool) -> Protocol {
    if tcp {
        Protocol::Tcp
    } else {
        Protocol::Udp
    }
}

/// Asks the PCP server `gateway` to map our `port` (PCP MAP) and returns the
/// external endpoint it assigned.
///
/// # Errors
/// No answer, or a refusal.
pub async fn pcp_map(gateway: SocketAddrV4, tcp: bool, port: u16) -> anyhow::Result<Mapped> {
    let report = tokio::task::spawn_blocking(move || {
        pcp::map(gateway, &MapRequest::new(protocol(tcp), port, PCP_LIFETIME))
    })
    .await
    .context("the PCP request task failed")?
    .with_context(|| format!("PCP MAP of port {port} at {gateway}"))?;
    match report.external {
        Some(endpoint) => Ok(Mapped {
            by: MappedBy::Pcp,
            endpoint,
        }),
        None => bail!(
            "the PCP server at {gateway} refused to map port {port}: {}",
            report.result
        ),
    }
}

/// Sends PCP PEER for our `port` towards each of `remotes` at once, all with `nonce`
/// (natgw keeps one nonce per internal endpoint's PEER mapping), and reports what
/// each answer said. Never fails: a refusal or silence is in the result.
pub async fn pcp_peers(
    gateway: SocketAddrV4,
    tcp: bool,
    port: u16,
    remotes: &[SocketAddrV4],
    nonce: Nonce,
) -> Vec<PcpPeer> {
    let requests = remotes.iter().map(|&remote| async move {
        let answer = tokio::task::spawn_blocking(move || {
            pcp::peer(
                gateway,
                &PeerRequest {
                    protocol: protocol(tcp),
                    internal_port: port,
                    peer: remote,
                    suggest: None,
                    lifetime: PCP_LIFETIME,
                    nonce: Some(nonce),
                    third_party: None,
                },
            )
        })
        .await;
        let mut peer = PcpPeer {
            gateway,
            remote,
            external: None,
            lifetime: None,
            error: None,
        };
        match answer {
            Ok(Ok(report)) if report.external.is_some() => {
                peer.external = report.external;
                peer.lifetime = Some(report.lifetime);
            }
            Ok(Ok(report)) => peer.error = Some(format!("refused: {}", report.result)),
            Ok(Err(e)) => peer.error = Some(format!("{e:#}")),
            Err(e) => peer.error = Some(format!("the PCP request task failed: {e}")),
        }
        peer
    });
    futures::future::join_all(requests).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_proto::punch::wire::PeerId;

    fn ep(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_usable_stun_answer_is_a_public_endpoint() {
        let from = ep("198.18.0.1:7000");
        let answer = |mapped| Seen::Response {
            from,
            mapped,
            response_origin: None,
            other_address: None,
            software: None,
        };
        assert_eq!(
            stun_outcome(&answer(ep("192.0.2.1:4000"))),
            Ok(ep("192.0.2.1:4000"))
        );
        // Loopback is the truth from a server on loopback, a lie from anywhere else.
        let local = Seen::Response {
            from: ep("127.0.0.1:7000"),
            mapped: ep("127.0.0.1:4000"),
            response_origin: None,
            other_address: None,
            software: None,
        };
        assert_eq!(stun_outcome(&local), Ok(ep("127.0.0.1:4000")));
        for bogus in [
            "0.0.0.0:4000",
            "192.0.2.1:0",
            "127.0.0.1:4000",
            "255.255.255.255:4000",
            "224.0.0.1:4000",
            "240.0.0.1:4000",
        ] {
            let e = stun_outcome(&answer(ep(bogus))).unwrap_err();
            assert!(
                e.contains(bogus) && e.contains("cannot be a public endpoint"),
                "{e}"
            );
        }
        let e = stun_outcome(&Seen::Error {
            from,
            code: 400,
            reason: "Bad Request".to_owned(),
        })
        .unwrap_err();
        assert_eq!(e, "error 400 \"Bad Request\" from 198.18.0.1:7000");
        let e = stun_outcome(&Seen::Timeout {
            transmissions: 3,
            waited_ms: 2000,
        })
        .unwrap_err();
        assert_eq!(e, "no answer (3 transmissions, 2.0 s)");
        assert!(stun_outcome(&Seen::Unusable { from })
            .unwrap_err()
            .contains("without an IPv4 mapped address"));
    }

    #[test]
    fn we_announce_what_stun_and_pcp_map_taught_us() {
        let stun = ep("192.0.2.1:4000");
        let map = Mapped {
            by: MappedBy::Pcp,
            endpoint: ep("192.0.2.1:4001"),
        };
        assert_eq!(
            announced(Some(stun), Some(map)),
            [
                Mapped {
                    by: MappedBy::Stun,
                    endpoint: stun,
                },
                map
            ]
        );
        assert_eq!(announced(None, Some(map)), [map]);
        assert!(announced(None, None).is_empty());
    }

    #[test]
    fn peer_is_asked_for_every_endpoint_the_peer_could_come_from_once() {
        let mut peer = PeerInfo {
            introduction: false,
            session: [0; 8],
            id: PeerId::new("b").unwrap(),
            public: ep("198.51.100.1:4000"),
            private: vec![ep("10.2.0.2:4000")],
            mapped: vec![
                Mapped {
                    by: MappedBy::Stun,
                    endpoint: ep("198.51.100.1:4000"),
                },
                Mapped {
                    by: MappedBy::Pcp,
                    endpoint: ep("198.51.100.1:4001"),
                },
            ],
        };
        assert_eq!(
            peer_targets(&peer),
            [ep("198.51.100.1:4001"), ep("198.51.100.1:4000")]
        );
        // A STUN answer unlike the rendezvous's observation (a symmetric NAT): both.
        peer.mapped = vec![Mapped {
            by: MappedBy::Stun,
            endpoint: ep("198.51.100.1:5555"),
        }];
        assert_eq!(
            peer_targets(&peer),
            [ep("198.51.100.1:4000"), ep("198.51.100.1:5555")]
        );
    }
}
