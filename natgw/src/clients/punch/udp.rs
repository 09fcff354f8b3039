//! UDP hole punching: one socket asks a STUN server where it comes from, registers
//! with the rendezvous and then probes every path to the peer from the same port, so
//! the mapping STUN and the rendezvous saw is the one the peer is sent to, and our
//! first probe (or, with `--pcp`, our gateway's PEER mapping) opens our NAT for the
//! peer's.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::services::transient;

use super::client::{self, TcpChannel, UdpChannel};
use super::learn::{self, pcp_map};
use super::relay::{self, Relay};
use super::report::{stage, Report};
use super::{candidates, pcp_nonce, policy, private_endpoint, stun_server, Options, REGISTER_WAIT};
use natgw_proto::punch::prober::{Outcome, PathKind, Prober, Settings, Status};
use natgw_proto::punch::wire::{
    Mapped, MappedBy, Message, PeerId, PeerInfo, PunchTransport, Register, Repr, Session,
};
use natgw_proto::turn::client::Event;

/// How often the prober is polled for probes to send.
const TICK: Duration = Duration::from_millis(10);

/// `natgw punch` over UDP; fills `report` as it goes. With a TURN credential the
/// allocation is made first and deleted at the end, whatever the outcome.
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
    let mut learned = learn::announced(stun_answer.as_ref().ok().copied(), map);
    report.stun_answered(stun, "udp", stun_answer);

    let mut relay = match &options.turn_credential {
        Some(credential) => {
            let server = options.turn.unwrap_or(options.rendezvous);
            match allocate(*private.ip(), server, options, credential).await {
                Ok((relay, allocation)) => {
                    report.relay_allocated(&allocation);
                    learned.push(Mapped {
                        by: MappedBy::Relay,
                        endpoint: allocation.relayed,
                    });
                    Some(relay)
                }
                Err(e) if options.relay_only => return Err(e),
                Err(e) => {
                    report.notes.push(format!(
                        "no TURN relay to fall back to: {e:#}; punching directly only"
                    ));
                    None
                }
            }
        }
        None => None,
    };
    let result = punch(options, report, &socket, private, learned, relay.as_mut()).await;
    if let Some(relay) = relay.as_mut() {
        relay.close().await;
    }
    result
}

/// Allocates on the TURN server `server`.
async fn allocate(
    local: Ipv4Addr,
    server: SocketAddrV4,
    options: &Options,
    credential: &relay::Credential,
) -> anyhow::Result<(Relay, relay::Allocation)> {
    let mut relay = Relay::connect(
        server,
        options.turn_tcp,
        local,
        credential,
        &options.id.to_string(),
    )
    .await?;
    let allocation = relay.allocate(relay::ALLOCATE_WAIT).await?;
    Ok((relay, allocation))
}

/// Where the punch stands.
enum Phase {
    /// Probing: direct paths, and the relay path after the fallback time.
    Probing,
    /// The relay works (its outcome kept); direct paths are probed by a second
    /// prober until `until`.
    Upgrading {
        relayed: Box<Outcome>,
        prober: Box<Prober>,
        until: Instant,
    },
}

/// Registers, meets the peer and probes; the relay (if any) is allocated.
async fn punch(
    options: &Options,
    report: &mut Report,
    socket: &UdpSocket,
    private: SocketAddrV4,
    learned: Vec<Mapped>,
    mut relay: Option<&mut Relay>,
) -> anyhow::Result<()> {
    report.stage = Some(stage::RENDEZVOUS);
    let register = Register {
        id: options.id.clone(),
        // Over TCP the rendezvous must be told that we punch UDP.
        punch: options.rendezvous_tcp.then_some(PunchTransport::Udp),
        private: vec![private],
        mapped: learned,
        credential: None,
    };
    // With --rendezvous-tcp the connection stays open until we are done: closing it
    // ends our registration.
    let mut rendezvous_tcp = None;
    let (peer, asked, mut introduced_at) = if options.rendezvous_tcp {
        let stream = tokio::time::timeout(
            REGISTER_WAIT.min(options.timeout),
            tokio::net::TcpStream::connect(options.rendezvous),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "connecting to the rendezvous {} over TCP timed out",
                options.rendezvous
            )
        })?
        .with_context(|| {
            format!(
                "connecting to the rendezvous {} over TCP (is `natgw rendezvous` running \
                 there?)",
                options.rendezvous
            )
        })?;
        let channel = rendezvous_tcp.insert(TcpChannel::new(stream));
        client::meet(channel, options, &register, report).await?
    } else {
        let mut channel = UdpChannel {
            socket,
            server: options.rendezvous,
        };
        client::meet(&mut channel, options, &register, report).await?
    };

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
    // The relay path: through our allocation to the peer's relayed address, when
    // both have one.
    let relay_path =
        |peer: &PeerInfo, relay: &Option<&mut Relay>| relay.as_ref().and(super::peer_relayed(peer));
    if let Some(relay) = relay.as_mut() {
        permit(relay, &peer);
        relay.flush().await?;
    }
    let fallback = if options.relay_only {
        Duration::ZERO
    } else {
        options.timeout
    };
    let new_prober = |peer: &PeerInfo, relay_path: Option<SocketAddrV4>, now: Instant| {
        let mut policy = policy(options, options.passive);
        let direct = if options.relay_only {
            policy.allowed.clear();
            Vec::new()
        } else {
            candidates(peer)
        };
        policy.allowed.push(PathKind::Relay);
        let mut prober = Prober::new(
            options.id.clone(),
            options.peer.clone(),
            peer.session,
            &direct,
            policy,
            Settings::default(),
            now.into_std(),
        );
        // Known, so that the peer's probes on it are answered at once, but probed
        // only from the fallback time on.
        if let Some(remote) = relay_path {
            prober.add_path(PathKind::Relay, remote, options.relay_only);
        }
        prober
    };
    let mut remote_relay = relay_path(&peer, &relay);
    if options.relay_only && remote_relay.is_none() {
        bail!("{}", no_relay_path(options, &peer, relay.is_some()));
    }
    let mut prober = new_prober(&peer, remote_relay, introduced_at);
    let mut phase = Phase::Probing;
    let mut relay_enabled = options.relay_only;
    let mut session = peer.session;
    let mut current = peer;
    let mut tick = tokio::time::interval(TICK);
    let mut buf = [0; 2048];
    loop {
        let now = Instant::now();
        let fallback_at = introduced_at + fallback;
        let deadline = if remote_relay.is_some() {
            fallback_at + options.timeout
        } else {
            introduced_at + options.timeout
        };
        if !relay_enabled && now >= fallback_at {
            if let Some(remote) = remote_relay {
                log::info!("punch.relay_fallback remote={remote}");
                prober.add_path(PathKind::Relay, remote, true);
                relay_enabled = true;
            }
        }
        match &mut phase {
            Phase::Probing => {
                if let Status::Done(outcome) = prober.status(now.into_std()) {
                    if let Some((to, bytes)) = prober.farewell() {
                        send(socket, relay.as_deref_mut(), &prober, to, &bytes).await?;
                    }
                    report.prober_state(&prober);
                    report.succeeded(&outcome);
                    if outcome.selected.kind != PathKind::Relay {
                        return Ok(());
                    }
                    report.relayed(&outcome, remote_relay);
                    let direct = candidates(&current);
                    if options.relay_only || options.upgrade_wait.is_zero() || direct.is_empty() {
                        return Ok(());
                    }
                    log::info!(
                        "punch.relayed remote={} upgrade_wait={:?}",
                        outcome.selected.remote,
                        options.upgrade_wait
                    );
                    let upgrade = Prober::new(
                        options.id.clone(),
                        options.peer.clone(),
                        session,
                        &direct,
                        policy(options, options.passive),
                        Settings::default(),
                        now.into_std(),
                    );
                    phase = Phase::Upgrading {
                        relayed: outcome,
                        prober: Box::new(upgrade),
                        until: now + options.upgrade_wait,
                    };
                    continue;
                }
                if now >= deadline {
                    report.prober_state(&prober);
                    return Err(anyhow!("{}", prober.failure()));
                }
            }
            Phase::Upgrading {
                relayed,
                prober: upgrade,
                until,
            } => {
                if let Status::Done(direct) = upgrade.status(now.into_std()) {
                    if let Some((to, bytes)) = upgrade.farewell() {
                        let _ = socket.send_to(&bytes, to).await;
                    }
                    report.upgraded(&direct);
                    return Ok(());
                }
                if now >= *until {
                    // The relay stays the path; the direct ones are reported as tried.
                    let mut paths = upgrade.paths();
                    paths.extend(
                        relayed
                            .paths
                            .iter()
                            .filter(|p| p.kind == PathKind::Relay)
                            .cloned(),
                    );
                    report.paths = paths;
                    report.notes.push(format!(
                        "no direct path verified within --upgrade-wait {:.1} s after the \
                         relay worked; staying on the relay",
                        options.upgrade_wait.as_secs_f64()
                    ));
                    return Ok(());
                }
            }
        }
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now().into_std();
                for (to, bytes) in prober.poll_transmit(now) {
                    send(socket, relay.as_deref_mut(), &prober, to, &bytes).await?;
                }
                if let Phase::Upgrading { prober: upgrade, .. } = &mut phase {
                    for (to, bytes) in upgrade.poll_transmit(now) {
                        if let Err(e) = socket.send_to(&bytes, to).await {
                            log::debug!("punch.send_failed to={to} error={e}");
                        }
                    }
                }
                if let Some(relay) = relay.as_deref_mut() {
                    // A broken TCP link to the TURN server ends the relay, not the
                    // punch (it was noted when the read failed).
                    if let Err(e) = relay.flush().await {
                        log::debug!("punch.turn_flush_failed error={e:#}");
                    }
                    for event in relay.events() {
                        relay_event(report, &event);
                    }
                }
            }
            frame = next_frame(relay.as_deref_mut()) => match frame {
                Ok(frame) => {
                    if let Some((from, data)) = relay.as_deref_mut().and_then(|r| r.handle(&frame)) {
                        on_relayed(relay.as_deref_mut(), &mut prober, from, &data).await?;
                    }
                }
                Err(e) => {
                    if let Some(relay) = relay.as_deref_mut() {
                        relay.broke(&e);
                    }
                    report.notes.push(format!("the link to the TURN server broke: {e}"));
                }
            },
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, SocketAddr::V4(from))) => {
                    let bytes = &buf[..n];
                    // A newer introduction: the endpoints we got were a stale
                    // registration (an earlier run of the peer), and the peer has just
                    // registered anew. Start over with the new ones.
                    if let Some(newer) = (from == options.rendezvous)
                        .then(|| newer_introduction(bytes, &options.peer, session))
                        .flatten()
                    {
                        log::info!("punch.reintroduced peer={} public={}", newer.id, newer.public);
                        if let Some(answers) = open_gateway(newer.clone()).await {
                            report.pcp_peer_answered(answers);
                        }
                        if let Some(relay) = relay.as_deref_mut() {
                            permit(relay, &newer);
                        }
                        introduced_at = Instant::now();
                        report.peer_found(&newer, introduced_at - asked);
                        remote_relay = relay_path(&newer, &relay);
                        relay_enabled = options.relay_only;
                        prober = new_prober(&newer, remote_relay, introduced_at);
                        phase = Phase::Probing;
                        session = newer.session;
                        current = newer;
                        continue;
                    }
                    let now = Instant::now().into_std();
                    // In the upgrade phase direct messages are the upgrade's, except
                    // those from the peer's relayed address.
                    let target = match &mut phase {
                        Phase::Upgrading { prober: upgrade, .. } if Some(from) != remote_relay => upgrade,
                        _ => &mut prober,
                    };
                    if let Some(answer) = target.handle(now, from, bytes) {
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

/// Permissions on our relay for the peer: its public IPs (where its own probes to
/// our relayed address would come from) and its relayed IP, in separate requests, so
/// a server that refuses one (a denied range) still grants the other.
fn permit(relay: &mut Relay, peer: &PeerInfo) {
    let mut public: Vec<Ipv4Addr> = std::iter::once(*peer.public.ip())
        .chain(
            peer.mapped
                .iter()
                .filter(|m| m.by != MappedBy::Relay)
                .map(|m| *m.endpoint.ip()),
        )
        .collect();
    public.sort_unstable();
    public.dedup();
    relay.permit(&public);
    if let Some(relayed) = super::peer_relayed(peer) {
        relay.permit(&[*relayed.ip()]);
    }
}

/// Why `--relay-only` has no path.
fn no_relay_path(options: &Options, peer: &PeerInfo, ours: bool) -> String {
    match (ours, super::peer_relayed(peer)) {
        (false, _) => "--relay-only: we have no TURN allocation".to_owned(),
        (true, None) => format!(
            "--relay-only: peer {} announced no relayed address: give it a TURN \
             credential too (--turn-user or --turn-secret)",
            options.peer
        ),
        (true, Some(_)) => "--relay-only: no relay path".to_owned(),
    }
}

/// Sends a probe: on a relay path through our allocation, otherwise from the socket.
async fn send(
    socket: &UdpSocket,
    relay: Option<&mut Relay>,
    prober: &Prober,
    to: SocketAddrV4,
    bytes: &[u8],
) -> anyhow::Result<()> {
    match relay {
        Some(relay) if prober.kind_of(to) == Some(PathKind::Relay) => {
            if let Err(e) = relay.send_to(to, bytes).await {
                log::debug!("punch.relay_send_failed to={to} error={e:#}");
            }
            Ok(())
        }
        _ => {
            if let Err(e) = socket.send_to(bytes, to).await {
                // No route to one candidate (a private address far away) is
                // normal; the other paths go on.
                log::debug!("punch.send_failed to={to} error={e}");
            }
            Ok(())
        }
    }
}

/// A message that came through our allocation from `from`: for the prober if `from`
/// is a relay path (the peer's relayed address), answered the same way.
async fn on_relayed(
    relay: Option<&mut Relay>,
    prober: &mut Prober,
    from: SocketAddrV4,
    data: &[u8],
) -> anyhow::Result<()> {
    let Some(relay) = relay else {
        return Ok(());
    };
    if prober.kind_of(from) != Some(PathKind::Relay) {
        // Not the peer's relayed address: a direct path's endpoint would be mixed up
        // with the relay's. Ignored.
        log::debug!("punch.relayed_from_unknown from={from}");
        return Ok(());
    }
    if let Some(answer) = prober.handle(Instant::now().into_std(), from, data) {
        if let Err(e) = relay.send_to(from, &answer).await {
            log::debug!("punch.relay_send_failed to={from} error={e:#}");
        }
    }
    Ok(())
}

/// The next frame of a TCP link to the TURN server; never, without one.
async fn next_frame(relay: Option<&mut Relay>) -> std::io::Result<Vec<u8>> {
    match relay {
        Some(relay) => relay.next_frame().await,
        None => std::future::pending().await,
    }
}

/// Notes what the relay said that matters.
fn relay_event(report: &mut Report, event: &Event) {
    match event {
        Event::PermissionFailed(ips, e) => report.notes.push(format!(
            "TURN permission for {}: {e}",
            ips.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Event::Failed(e) => report
            .notes
            .push(format!("the TURN allocation failed: {e}")),
        _ => {}
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
