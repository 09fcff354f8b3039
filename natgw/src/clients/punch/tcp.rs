//! TCP hole punching by simultaneous open. Every socket — the listener, the
//! connection to the rendezvous, each connect() to the peer — is bound to the same
//! local port with SO_REUSEADDR and SO_REUSEPORT, so the NAT mapping the rendezvous saw
//! is the one the peer connects to.
//!
//! Our public endpoint is learned by STUN over TCP (RFC 8489 §6.2.2) from that port
//! too: on the connection to the rendezvous itself, before the registration, or with
//! `--stun` on a connection of its own to that server (a UDP-only server refuses it,
//! and the rendezvous's observation is used, with a note).
//!
//! Both peers connect() to each other's endpoints at the same time, again after each
//! failure, until the deadline. Each outbound SYN opens our NAT for the peer: when the
//! peer's SYN then arrives it meets our socket in SYN-SENT (simultaneous open, RFC 9293
//! §3.5) — or our listener, if it arrives between two attempts (listen + connect
//! fallback). An early SYN that reaches the peer's NAT before the peer's own SYN left
//! is dropped silently by natgw (RFC 5382 REQ-4) and answered with a RST by other
//! NATs; either way the next attempt goes through. On every connection that opens,
//! the peers run the same probe/ack check as over UDP ([`natgw_proto::punch::prober`]), framed on
//! the stream, and keep the one the controlling peer nominates.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use super::client::{self, TcpChannel};
use super::learn::{self, pcp_map, STUN_WAIT};
use super::report::{stage, Report, TcpAttempts, TcpOpen};
use super::{candidates, pcp_nonce, policy, private_endpoint, stun_server, Options, REGISTER_WAIT};
use crate::services::frames::read_frame;
use natgw_proto::punch::demux::Frame;
use natgw_proto::punch::prober::{Failure, PathKind, Prober, Settings, Status};
use natgw_proto::punch::wire::Register;

/// How long one connect() may take before it is abandoned and tried again. Linux
/// retransmits a SYN after 1 s; a fresh attempt does the same sooner.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Pause after a failed attempt (a RST) before the next one.
const RETRY_GAP: Duration = Duration::from_millis(100);
/// How often the prober is polled for probes to send.
const TICK: Duration = Duration::from_millis(10);
/// How long to wait for the peer to close after we closed the selected stream, so
/// that our last answers are read before the connection goes.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// A connection that opened, and how.
type Opened = (TcpStream, SocketAddrV4, TcpOpen);

/// What the stream readers report.
enum Event {
    Frame(SocketAddrV4, Vec<u8>),
    Closed(SocketAddrV4),
}

/// A TCP socket that may share its local port.
fn reusable_socket(local: SocketAddrV4) -> io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(SocketAddr::V4(local))?;
    Ok(socket)
}

/// `natgw punch --tcp`; fills `report` as it goes.
pub(super) async fn run(options: &Options, report: &mut Report) -> anyhow::Result<()> {
    let local = options
        .local
        .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    let listener_socket =
        reusable_socket(local).with_context(|| format!("binding a TCP socket to {local}"))?;
    let bound = match listener_socket.local_addr()? {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => anyhow::bail!("bound to IPv6 {a}"),
    };
    let listener = listener_socket
        .listen(16)
        .with_context(|| format!("listening on TCP {bound}"))?;
    let private = private_endpoint(SocketAddr::V4(bound), options.rendezvous)?;
    report.local = Some(private);
    let map = match options.pcp.filter(|_| !options.pcp_peer_only) {
        Some(gateway) => Some(pcp_map(gateway, true, bound.port()).await?),
        None => None,
    };
    report.mapped = map.map(|m| m.endpoint);
    let stun = stun_server(options);
    let mut learned = None;
    if stun != options.rendezvous {
        let answer = stun_over_own_connection(bound, stun).await;
        learned = answer.as_ref().ok().copied();
        report.stun_answered(stun, "tcp", answer);
    }

    report.stage = Some(stage::RENDEZVOUS);
    let stream = connect_from(
        bound,
        options.rendezvous,
        REGISTER_WAIT.min(options.timeout),
    )
    .await
    .map_err(|e| match e {
        ConnectError::Io(e) => anyhow::Error::new(e).context(format!(
            "connecting to the rendezvous {} over TCP (is `natgw rendezvous` running \
                 there?)",
            options.rendezvous
        )),
        ConnectError::TimedOut => anyhow!(
            "connecting to the rendezvous {} over TCP timed out",
            options.rendezvous
        ),
    })?;
    let mut channel = TcpChannel::new(stream);
    if stun == options.rendezvous {
        // The rendezvous answers STUN on the connection we register on: the same
        // mapping, by construction.
        let answer = match channel.stun(stun, STUN_WAIT).await {
            Ok(seen) => learn::stun_outcome(&seen),
            Err(e) => Err(format!("{e:#}")),
        };
        learned = answer.as_ref().ok().copied();
        report.stun_answered(stun, "tcp", answer);
    }
    let register = Register {
        id: options.id.clone(),
        punch: None,
        private: vec![private],
        mapped: learn::announced(learned, map),
        credential: None,
    };
    let (peer, _, introduced_at) = client::meet(&mut channel, options, &register, report).await?;

    report.stage = Some(stage::PUNCHING);
    if let Some(gateway) = options.pcp {
        let targets = learn::peer_targets(&peer);
        let answers = learn::pcp_peers(gateway, true, bound.port(), &targets, pcp_nonce()).await;
        report.pcp_peer_answered(answers);
    }
    // Paths become active when a connection on them opens.
    let mut prober = Prober::new(
        options.id.clone(),
        options.peer.clone(),
        peer.session,
        &candidates(&peer),
        policy(options, true),
        Settings::default(),
        introduced_at.into_std(),
    );
    let deadline = introduced_at + options.timeout;
    let attempts = Arc::new(Mutex::new(TcpAttempts::default()));
    let (opened_tx, mut opened_rx) = mpsc::channel::<Opened>(16);
    let mut tasks = JoinSet::new();
    if !options.passive {
        for (_, remote) in candidates(&peer) {
            if prober.kind_of(remote).is_some() {
                tasks.spawn(connect_loop(
                    bound,
                    remote,
                    opened_tx.clone(),
                    Arc::clone(&attempts),
                    deadline,
                ));
            }
        }
    }
    tasks.spawn(accept_loop(listener, opened_tx));

    let outcome = drive(&mut prober, &mut opened_rx, &attempts, deadline, &mut tasks).await;
    tasks.abort_all();
    report.tcp_attempts = Some(*lock(&attempts));
    match outcome {
        Ok((outcome, how)) => {
            report.prober_state(&prober);
            report.succeeded(&outcome);
            report.tcp_open = Some(how);
            Ok(())
        }
        Err(failure) => {
            report.prober_state(&prober);
            Err(anyhow!(
                "{}",
                describe_failure(&failure, &lock(&attempts), options.passive)
            ))
        }
    }
}

/// Why a connect() from our port did not open.
enum ConnectError {
    Io(io::Error),
    TimedOut,
}

/// connect() from our port `local` to `remote`, for at most `wait`.
async fn connect_from(
    local: SocketAddrV4,
    remote: SocketAddrV4,
    wait: Duration,
) -> Result<TcpStream, ConnectError> {
    let socket = reusable_socket(local).map_err(ConnectError::Io)?;
    match timeout(wait, socket.connect(SocketAddr::V4(remote))).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(ConnectError::Io(e)),
        Err(_) => Err(ConnectError::TimedOut),
    }
}

/// STUN over a TCP connection of its own from our port `local` to `server` (`--stun`).
/// The connection is closed after the answer; the next connections from the port go
/// elsewhere, so its TIME-WAIT is in nobody's way.
async fn stun_over_own_connection(
    local: SocketAddrV4,
    server: SocketAddrV4,
) -> Result<SocketAddrV4, String> {
    let started = Instant::now();
    let stream = match connect_from(local, server, STUN_WAIT).await {
        Ok(stream) => stream,
        Err(ConnectError::TimedOut) => {
            return Err(format!(
                "no answer to our TCP connection within {:.1} s",
                STUN_WAIT.as_secs_f64()
            ))
        }
        Err(ConnectError::Io(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(
                "it refused our TCP connection (a UDP-only STUN server, or nothing there)"
                    .to_owned(),
            )
        }
        Err(ConnectError::Io(e)) => return Err(format!("connecting over TCP: {e}")),
    };
    let wait = STUN_WAIT.saturating_sub(started.elapsed());
    match TcpChannel::new(stream).stun(server, wait).await {
        Ok(seen) => learn::stun_outcome(&seen),
        Err(e) => Err(format!("{e:#}")),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the prober over the connections that open until it is done or the deadline.
async fn drive(
    prober: &mut Prober,
    opened: &mut mpsc::Receiver<Opened>,
    attempts: &Mutex<TcpAttempts>,
    deadline: Instant,
    tasks: &mut JoinSet<()>,
) -> Result<(natgw_proto::punch::prober::Outcome, TcpOpen), Failure> {
    let (events_tx, mut events) = mpsc::channel::<Event>(64);
    let mut writers: HashMap<SocketAddrV4, OwnedWriteHalf> = HashMap::new();
    let mut how: HashMap<SocketAddrV4, TcpOpen> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        let now = Instant::now();
        if let Status::Done(outcome) = prober.status(now.into_std()) {
            let remote = outcome.selected.remote;
            if let Some((to, bytes)) = prober.farewell() {
                write(&mut writers, to, &bytes).await;
            }
            close(&mut writers, remote, &mut events).await;
            let open = how.get(&remote).copied().unwrap_or(TcpOpen::Connect);
            return Ok((*outcome, open));
        }
        if now >= deadline {
            return Err(prober.failure());
        }
        tokio::select! {
            Some((stream, remote, open)) = opened.recv() => {
                if open == TcpOpen::Accept {
                    lock(attempts).accepted += 1;
                }
                if writers.contains_key(&remote) {
                    continue;
                }
                let kind = prober.kind_of(remote).unwrap_or(PathKind::Reflexive);
                if prober.add_path(kind, remote, true).is_none() {
                    // A kind --only leaves out (e.g. a reflexive one): not ours to use.
                    continue;
                }
                log::debug!("punch.tcp_open remote={remote} how={open:?}");
                let _ = stream.set_nodelay(true);
                let (reader, writer) = stream.into_split();
                writers.insert(remote, writer);
                how.insert(remote, open);
                tasks.spawn(read_loop(reader, remote, events_tx.clone()));
            }
            Some(event) = events.recv() => match event {
                Event::Frame(remote, bytes) => {
                    if let Some(answer) = prober.handle(Instant::now().into_std(), remote, &bytes) {
                        write(&mut writers, remote, &answer).await;
                    }
                }
                Event::Closed(remote) => {
                    writers.remove(&remote);
                    prober.peer_closed(remote);
                }
            },
            _ = tick.tick() => {
                for (to, bytes) in prober.poll_transmit(Instant::now().into_std()) {
                    write(&mut writers, to, &bytes).await;
                }
            }
        }
    }
}

/// Writes a frame to the stream to `remote`, forgetting the stream if it fails.
async fn write(
    writers: &mut HashMap<SocketAddrV4, OwnedWriteHalf>,
    remote: SocketAddrV4,
    bytes: &[u8],
) {
    if let Some(writer) = writers.get_mut(&remote) {
        if writer.write_all(bytes).await.is_err() {
            writers.remove(&remote);
        }
    }
}

/// Closes our side of the selected stream and waits (briefly) for the peer to close
/// its side, so that nothing it still has to read is lost to a reset.
async fn close(
    writers: &mut HashMap<SocketAddrV4, OwnedWriteHalf>,
    remote: SocketAddrV4,
    events: &mut mpsc::Receiver<Event>,
) {
    let Some(mut writer) = writers.remove(&remote) else {
        return;
    };
    let _ = writer.shutdown().await;
    let _ = timeout(CLOSE_WAIT, async {
        while let Some(event) = events.recv().await {
            if matches!(event, Event::Closed(r) if r == remote) {
                break;
            }
        }
    })
    .await;
}

/// connect() from `local` to `remote` until one succeeds or the deadline passes.
async fn connect_loop(
    local: SocketAddrV4,
    remote: SocketAddrV4,
    opened: mpsc::Sender<Opened>,
    attempts: Arc<Mutex<TcpAttempts>>,
    deadline: Instant,
) {
    while Instant::now() < deadline {
        let socket = match reusable_socket(local) {
            Ok(socket) => socket,
            Err(e) => {
                log::debug!("punch.tcp_bind_failed local={local} error={e}");
                tokio::time::sleep(RETRY_GAP).await;
                continue;
            }
        };
        lock(&attempts).connects += 1;
        let wait = ATTEMPT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
        match timeout(wait, socket.connect(SocketAddr::V4(remote))).await {
            Ok(Ok(stream)) => {
                let _ = opened.send((stream, remote, TcpOpen::Connect)).await;
                return;
            }
            Ok(Err(e)) => {
                log::debug!("punch.tcp_connect_failed remote={remote} error={e}");
                let mut a = lock(&attempts);
                match e.kind() {
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {
                        a.refused += 1;
                    }
                    io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                        a.unreachable += 1;
                    }
                    io::ErrorKind::TimedOut => a.timed_out += 1,
                    // The four-tuple is taken: our listener accepted this very peer.
                    io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => return,
                    _ => {}
                }
            }
            Err(_) => lock(&attempts).timed_out += 1,
        }
        tokio::time::sleep(RETRY_GAP).await;
    }
}

/// Accepts connections until cancelled.
async fn accept_loop(listener: TcpListener, opened: mpsc::Sender<Opened>) {
    loop {
        match listener.accept().await {
            Ok((stream, SocketAddr::V4(remote))) => {
                if opened
                    .send((stream, remote, TcpOpen::Accept))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                log::debug!("punch.tcp_accept_failed error={e}");
                tokio::time::sleep(RETRY_GAP).await;
            }
        }
    }
}

/// Forwards the frames of one stream until it ends (a STUN message from the peer is
/// none of the prober's business).
async fn read_loop(mut reader: OwnedReadHalf, remote: SocketAddrV4, events: mpsc::Sender<Event>) {
    while let Ok(frame) = read_frame(&mut reader).await {
        let Frame::Punch(frame) = frame else {
            continue;
        };
        if events.send(Event::Frame(remote, frame)).await.is_err() {
            return;
        }
    }
    let _ = events.send(Event::Closed(remote)).await;
}

/// The failure, with what the connection attempts ran into.
fn describe_failure(failure: &Failure, a: &TcpAttempts, passive: bool) -> String {
    match failure {
        Failure::NeverHeard { paths, .. } => {
            let to = paths
                .iter()
                .map(|(kind, addr)| format!("{addr} ({})", kind.name()))
                .collect::<Vec<_>>()
                .join(", ");
            if passive {
                "peer never connected to us: nothing arrived on our listener (passive: we \
                 do not connect out; is our port open to them, by PCP or a port forward?)"
                    .to_owned()
            } else {
                format!(
                    "peer never answered: no TCP connection opened — {} connect() calls \
                     to {to}: {} refused (a RST came back: their NAT or host had nothing \
                     there), {} timed out (SYNs dropped: their NAT filtered our packets), \
                     {} unreachable; and no SYN of theirs reached our listener (our NAT \
                     filtered theirs)",
                    a.connects, a.refused, a.timed_out, a.unreachable
                )
            }
        }
        Failure::OneWay { heard_from, .. } => format!(
            "a TCP connection opened with {} but our probes on it were never answered",
            heard_from
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Failure::NotSelected => failure.to_string(),
    }
}
