//! UDP hole punching: one socket asks a STUN server where it comes from, registers
//! with the rendezvous and then probes every path to the peer from the same port, so
//! the mapping STUN and the rendezvous saw is the one the peer is sent to, and our
//! first probe (or, with `--pcp`, our gateway's PEER mapping) opens our NAT for the
//! peer's.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::services::transient;

use super::client::{self, UdpChannel};
use super::learn::{self, pcp_map};
use super::report::{stage, Report};
use super::{candidates, pcp_nonce, policy, private_endpoint, stun_server, Options};
use natgw_proto::punch::prober::{Prober, Settings, Status};
use natgw_proto::punch::wire::{Message, PeerId, PeerInfo, Register, Repr, Session};

/// How often the prober is polled for probes to send.
const TICK: Duration = Duration::from_millis(10);

/// `natgw punch` over UDP; fills `report` as it goes.
pub(super) async fn run(options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let local = options
        .local
        .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    let socket = UdpSocket::bind(local)
        .await
        .with_context(|| format!("binding a UDP socket to {local}"))?;
    let private = private_endpoint(socket.local_addr()?, options.rendezvous)?;
    report.local = Some(private);
    let map = match options.pcp.filter(|_| !options.pcp_peer_only) {
        Some(gateway) => Some(pcp_map(gateway, false, private.port()).await?),
        None => None,
    };
    report.mapped = map.map(|m| m.endpoint);
    let stun = stun_server(options);
    let stun_answer = learn::stun_udp(&socket, stun).await;
    let learned = learn::announced(stun_answer.as_ref().ok().copied(), map);
    report.stun_answered(stun, "udp", stun_answer);

    report.stage = Some(stage::RENDEZVOUS);
    let mut channel = UdpChannel {
        socket: &socket,
        server: options.rendezvous,
    };
    let register = Register {
        id: options.id.clone(),
        punch: None,
        private: vec![private],
        mapped: learned,
        credential: None,
    };
    let (peer, asked, mut introduced_at) =
        client::meet(&mut channel, options, &register, report).await?;

    report.stage = Some(stage::PUNCHING);
    let nonce = pcp_nonce();
    let open_gateway = |peer: PeerInfo| async move {
        if let Some(gateway) = options.pcp {
            let targets = learn::peer_targets(&peer);
            Some(learn::pcp_peers(gateway, false, private.port(), &targets, nonce).await)
        } else {
            None
        }
    };
    if let Some(answers) = open_gateway(peer.clone()).await {
        report.pcp_peer_answered(answers);
    }
    let new_prober = |peer: &PeerInfo, now: Instant| {
        Prober::new(
            options.id.clone(),
            options.peer.clone(),
            peer.session,
            &candidates(peer),
            policy(options, options.passive),
            Settings::default(),
            now.into_std(),
        )
    };
    let mut prober = new_prober(&peer, introduced_at);
    let mut session = peer.session;
    let deadline = introduced_at + options.timeout;
    let mut tick = tokio::time::interval(TICK);
    let mut buf = [0; 2048];
    loop {
        let now = Instant::now();
        if let Status::Done(outcome) = prober.status(now.into_std()) {
            if let Some((to, bytes)) = prober.farewell() {
                let _ = socket.send_to(&bytes, to).await;
            }
            report.prober_state(&prober);
            report.succeeded(&outcome);
            return Ok(());
        }
        if now >= deadline {
            report.prober_state(&prober);
            return Err(anyhow!("{}", prober.failure()));
        }
        tokio::select! {
            _ = tick.tick() => {
                for (to, bytes) in prober.poll_transmit(Instant::now().into_std()) {
                    if let Err(e) = socket.send_to(&bytes, to).await {
                        // No route to one candidate (a private address far away) is
                        // normal; the other paths go on.
                        log::debug!("punch.send_failed to={to} error={e}");
                    }
                }
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, SocketAddr::V4(from))) => {
                    // A newer introduction: the endpoints we got were a stale
                    // registration (an earlier run of the peer), and the peer has just
                    // registered anew. Start over with the new ones.
                    if let Some(newer) = (from == options.rendezvous)
                        .then(|| newer_introduction(&buf[..n], &options.peer, session))
                        .flatten()
                    {
                        log::info!("punch.reintroduced peer={} public={}", newer.id, newer.public);
                        if let Some(answers) = open_gateway(newer.clone()).await {
                            report.pcp_peer_answered(answers);
                        }
                        introduced_at = Instant::now();
                        report.peer_found(&newer, introduced_at - asked);
                        prober = new_prober(&newer, introduced_at);
                        session = newer.session;
                        continue;
                    }
                    let now = Instant::now().into_std();
                    if let Some(answer) = prober.handle(now, from, &buf[..n]) {
                        if let Err(e) = socket.send_to(&answer, from).await {
                            log::debug!("punch.answer_failed to={from} error={e}");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) if transient(&e) => {}
                Err(e) => return Err(e).context("receiving on the punching socket"),
            },
        }
    }
}

/// A PEER introduction of `peer` with another session than `session`.
fn newer_introduction(bytes: &[u8], peer: &PeerId, session: Session) -> Option<PeerInfo> {
    match Repr::decode(bytes).ok()?.message {
        Message::Peer(info) if info.id == *peer && info.introduction && info.session != session => {
            Some(info)
        }
        _ => None,
    }
}
