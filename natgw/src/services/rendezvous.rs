//! `natgw rendezvous`: the [`Rendezvous`] engine on one UDP socket and one TCP listener
//! bound to the same address and port, and beside it natgw's STUN Binding responder
//! ([`Responder`]) on the same sockets, so a peer learns its public endpoint from the
//! server it registers with. Each datagram or frame goes to one or the other by its
//! first byte ([`natgw_proto::punch::demux`]). One task owns both engines; each TCP connection has
//! a reader task that hands it frames and a writer task that sends what they decide.
//! When told to stop it returns what it saw ([`Stopped`]); `natgw rendezvous` prints it.
//!
//! With a TURN configuration, TURN requests and indications (STUN methods other than
//! Binding) and ChannelData (first bits 01, see [`turn::is_channel_data`]) go to the
//! TURN relay ([`turn::Turn`]), which the same task drives. TCP connections are
//! bounded: [`MAX_CONNECTIONS`] in all, [`MAX_CONNECTIONS_PER_IP`] from one address,
//! and one that sends nothing for [`IDLE_TIMEOUT`] (or the registration lifetime, if
//! longer) is closed.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::frames::{read_message, Incoming};
use super::turn::{self, PeerDatagram, Turn};
use crate::services::replies::{Replies, ReplyStats};
use crate::services::transient;
use natgw_proto::punch::demux::{self, Protocol};
use natgw_proto::punch::rendezvous::{
    Auth, Config, Counters, Origin, Rendezvous, Transmit, Transport,
};
use natgw_proto::stun::responder::{self as stun, CountersSnapshot, Outcome, Responder};
use natgw_proto::turn::engine::{FiveTuple, Transport as TurnTransport};

/// Most TCP connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Most TCP connections from one IP address at once.
pub const MAX_CONNECTIONS_PER_IP: usize = 16;
/// A TCP connection that sends nothing for this long is closed (a TURN client
/// refreshes its permissions every 5 minutes).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Messages queued for one TCP connection before further ones are dropped.
const CONNECTION_QUEUE: usize = 256;

/// What a connection's reader tells the engine task.
enum Event {
    Frame(SocketAddrV4, Vec<u8>),
    /// A STUN message on the connection.
    Stun(SocketAddrV4, Vec<u8>),
    /// The stream broke framing: these bytes (a header that is not ours) are counted
    /// as malformed and the connection is closed.
    Garbage(SocketAddrV4, Vec<u8>),
    /// A TURN message or ChannelData on the connection.
    Turn(SocketAddrV4, Vec<u8>),
    Closed(SocketAddrV4),
}

/// What `natgw rendezvous` is told.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address and port for UDP and TCP alike; port 0 picks one (the same for both).
    pub listen: SocketAddrV4,
    /// How long a registration lives after its peer's last message.
    pub lifetime: Duration,
    /// The TURN relay's settings; `None` for no relay.
    pub turn: Option<turn::Options>,
    /// Shared secrets peers' credentials must be made with (any of them); empty: no
    /// authentication.
    pub auth_secrets: Vec<String>,
}

/// What the rendezvous saw, when it stops.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// How long it served.
    pub uptime: Duration,
    /// Registrations still live.
    pub registrations: usize,
    /// The rendezvous engine's counters.
    pub counters: Counters,
    /// The STUN responder's counters.
    pub stun: CountersSnapshot,
    /// Replies held back or lost.
    pub replies: ReplyStats,
    /// The TURN relay's counters, when it ran.
    pub turn: Option<turn::Stopped>,
}

/// The rendezvous's sockets, bound and not yet served.
pub struct Server {
    udp: UdpSocket,
    tcp: TcpListener,
    listen: SocketAddrV4,
    lifetime: Duration,
    turn: Option<turn::Options>,
    auth_secrets: Vec<String>,
}

impl Server {
    /// Binds UDP, then TCP on the port UDP got.
    ///
    /// # Errors
    /// When either cannot be bound.
    pub async fn bind(options: Options) -> anyhow::Result<Self> {
        let udp = UdpSocket::bind(options.listen)
            .await
            .with_context(|| format!("binding UDP {}", options.listen))?;
        let listen = match udp.local_addr()? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => anyhow::bail!("bound to IPv6 {a}"),
        };
        let tcp = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding TCP {listen}"))?;
        Ok(Self {
            udp,
            tcp,
            listen,
            lifetime: options.lifetime,
            turn: options.turn,
            auth_secrets: options.auth_secrets,
        })
    }

    /// Where it listens, UDP and TCP.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.listen
    }

    /// Serves until `stop` completes, then reports.
    ///
    /// # Errors
    /// When receiving on the UDP socket fails for good.
    pub async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<Stopped> {
        let Self {
            udp,
            tcp,
            listen,
            lifetime,
            turn,
            auth_secrets,
        } = self;
        let (mut turn, mut peer_datagrams) = match turn {
            Some(options) => {
                let (t, rx) = Turn::new(options, turn::own_addresses())?;
                (Some(t), Some(rx))
            }
            None => (None, None),
        };
        let idle = IDLE_TIMEOUT.max(lifetime);
        let config = Config {
            lifetime,
            ..Config::default()
        };
        let mut engine = Rendezvous::new(config, natgw_proto::util::rng::random_u64());
        if auth_secrets.is_empty() {
            log::warn!(
                "rendezvous.open addr={listen}: no authentication, anyone can register and \
                 look up peers"
            );
        } else {
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            engine = engine.with_auth(Auth::new(
                auth_secrets,
                natgw_proto::util::rng::random_array(),
                (Instant::now(), unix),
            ));
        }
        let stun_counters = Arc::<stun::Counters>::default();
        let mut stun = Responder::new(stun::Config::new(listen), Arc::clone(&stun_counters))
            .map_err(|e| anyhow::anyhow!("configuring the STUN responder on {listen}: {e}"))?;
        let started = Instant::now();
        let mut replies = Replies::new("rendezvous", started);
        log::info!(
            "rendezvous.listening addr={listen} lifetime={}s",
            lifetime.as_secs()
        );
        let (events_tx, mut events) = mpsc::channel::<Event>(1024);
        let mut connections: HashMap<SocketAddrV4, mpsc::Sender<Vec<u8>>> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut buf = vec![0; 2048];
        tokio::pin!(stop);
        loop {
            let mut to_clients = Vec::new();
            let transmits = tokio::select! {
                received = udp.recv_from(&mut buf) => match received {
                    Ok((n, SocketAddr::V4(from))) if turn.as_ref().is_some_and(|t| {
                        let tuple = udp_tuple(from, listen);
                        match demux::classify(&buf[..n]) {
                            Protocol::Stun => turn::is_turn_stun(&buf[..n]),
                            _ => turn::is_channel_data(&buf[..n], t.has_allocation(&tuple)),
                        }
                    }) => {
                        if let Some(t) = turn.as_mut() {
                            to_clients = t.on_message(udp_tuple(from, listen), &buf[..n]);
                        }
                        Vec::new()
                    }
                    Ok((n, SocketAddr::V4(from))) if demux::classify(&buf[..n]) == Protocol::Stun => {
                        let now = Instant::now();
                        if !replies.admit(now, *from.ip()) {
                            stun_counters.dropped_before_engine(stun::DropReason::Unresolved);
                        } else if let Outcome::Reply { to, bytes, .. } =
                            stun.handle(now, listen, from, &buf[..n])
                        {
                            if !replies.send(now, &udp, &bytes, to) {
                                stun_counters.send_failed();
                            }
                        }
                        Vec::new()
                    }
                    Ok((n, SocketAddr::V4(from))) => {
                        let origin = Origin { transport: Transport::Udp, addr: from };
                        engine.handle(Instant::now(), origin, &buf[..n])
                    }
                    Ok(_) => Vec::new(),
                    Err(e) if transient(&e) => Vec::new(),
                    Err(e) => return Err(e).context("receiving on the rendezvous UDP socket"),
                },
                accepted = tcp.accept() => {
                    match accepted {
                        Ok((stream, SocketAddr::V4(remote)))
                            if connections.len() < MAX_CONNECTIONS
                                && connections.keys().filter(|a| a.ip() == remote.ip()).count()
                                    < MAX_CONNECTIONS_PER_IP =>
                        {
                            let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
                            connections.insert(remote, tx);
                            let reader = Reader { remote, turn: turn.is_some(), idle };
                            spawn_connection(stream, reader, rx, events_tx.clone());
                        }
                        Ok((_, remote)) => {
                            log::warn!("rendezvous.refused remote={remote} too_many_connections");
                        }
                        Err(e) => log::debug!("rendezvous.accept_failed error={e}"),
                    }
                    Vec::new()
                }
                Some(event) = events.recv() => match event {
                    Event::Frame(remote, bytes) => {
                        let origin = Origin { transport: Transport::Tcp, addr: remote };
                        engine.handle(Instant::now(), origin, &bytes)
                    }
                    Event::Stun(remote, bytes) => {
                        // The answer goes back on the connection (RESPONSE-PORT means
                        // nothing over TCP).
                        if let Outcome::Reply { bytes, .. } =
                            stun.handle(Instant::now(), listen, remote, &bytes)
                        {
                            if let Some(tx) = connections.get(&remote) {
                                let _ = tx.try_send(bytes);
                            }
                        }
                        Vec::new()
                    }
                    Event::Garbage(remote, bytes) => {
                        let origin = Origin { transport: Transport::Tcp, addr: remote };
                        connections.remove(&remote);
                        engine.handle(Instant::now(), origin, &bytes)
                    }
                    Event::Turn(remote, bytes) => {
                        if let Some(t) = turn.as_mut() {
                            to_clients = t.on_message(tcp_tuple(remote, listen), &bytes);
                        }
                        Vec::new()
                    }
                    Event::Closed(remote) => {
                        connections.remove(&remote);
                        if let Some(t) = turn.as_mut() {
                            t.on_connection_closed(tcp_tuple(remote, listen));
                        }
                        engine.disconnected(Origin { transport: Transport::Tcp, addr: remote });
                        Vec::new()
                    }
                },
                Some(d) = recv_peer(&mut peer_datagrams) => {
                    if let Some(t) = turn.as_mut() {
                        to_clients = t.on_peer(&d);
                    }
                    Vec::new()
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    engine.sweep(now);
                    if let Some(t) = turn.as_mut() {
                        if t.poll_timeout().is_some_and(|due| due <= now) {
                            to_clients = t.expire();
                        }
                    }
                    Vec::new()
                }
                () = &mut stop => break,
            };
            for t in transmits {
                send(&udp, &connections, &mut replies, t);
            }
            for (tuple, bytes) in to_clients {
                if !send_turn(&udp, &connections, tuple, bytes) {
                    if let Some(t) = turn.as_mut() {
                        t.client_send_failed();
                    }
                }
            }
        }
        Ok(Stopped {
            uptime: started.elapsed(),
            registrations: engine.len(),
            counters: engine.counters(),
            stun: stun_counters.snapshot(),
            replies: replies.stats(),
            turn: turn.map(Turn::stop),
        })
    }
}

/// Sends `t` without waiting: over UDP through the reply path (held back while a
/// possibly spoofed destination is unresolved, dropped when the socket is full).
fn send(
    udp: &UdpSocket,
    connections: &HashMap<SocketAddrV4, mpsc::Sender<Vec<u8>>>,
    replies: &mut Replies,
    t: Transmit,
) {
    match t.to.transport {
        Transport::Udp => {
            let now = Instant::now();
            if replies.admit(now, *t.to.addr.ip()) {
                replies.send(now, udp, &t.bytes, t.to.addr);
            }
        }
        Transport::Tcp => {
            if let Some(tx) = connections.get(&t.to.addr) {
                // A connection that does not read is not waited for.
                let _ = tx.try_send(t.bytes);
            }
        }
    }
}

fn udp_tuple(client: SocketAddrV4, listen: SocketAddrV4) -> FiveTuple {
    FiveTuple {
        transport: TurnTransport::Udp,
        client: SocketAddr::V4(client),
        server: SocketAddr::V4(listen),
    }
}

fn tcp_tuple(client: SocketAddrV4, listen: SocketAddrV4) -> FiveTuple {
    FiveTuple {
        transport: TurnTransport::Tcp,
        ..udp_tuple(client, listen)
    }
}

/// The next datagram of a relay socket; never, without a relay.
async fn recv_peer(rx: &mut Option<mpsc::Receiver<PeerDatagram>>) -> Option<PeerDatagram> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends a TURN message to its client without waiting; false when it could not.
fn send_turn(
    udp: &UdpSocket,
    connections: &HashMap<SocketAddrV4, mpsc::Sender<Vec<u8>>>,
    tuple: FiveTuple,
    bytes: Vec<u8>,
) -> bool {
    let SocketAddr::V4(client) = tuple.client else {
        return false;
    };
    match tuple.transport {
        TurnTransport::Udp => udp.try_send_to(&bytes, tuple.client).is_ok(),
        TurnTransport::Tcp => connections
            .get(&client)
            .is_some_and(|tx| tx.try_send(bytes).is_ok()),
    }
}

/// How a connection's reader reads.
struct Reader {
    remote: SocketAddrV4,
    /// Whether TURN is served (ChannelData and long STUN messages accepted).
    turn: bool,
    /// Closed after this long without a message.
    idle: Duration,
}

/// A reader task feeding frames to the engine and a writer task sending its answers.
fn spawn_connection(
    stream: TcpStream,
    reader: Reader,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<Event>,
) {
    let (half, mut writer) = stream.into_split();
    tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(read_connection(half, reader, events));
}

async fn read_connection(mut half: OwnedReadHalf, reader: Reader, events: mpsc::Sender<Event>) {
    let remote = reader.remote;
    let mut spoke_turn = false;
    loop {
        let next = read_message(&mut half, reader.turn, &mut spoke_turn);
        let Ok(read) = tokio::time::timeout(reader.idle, next).await else {
            log::debug!("rendezvous.idle_closed remote={remote}");
            break;
        };
        match read {
            Ok(incoming) => {
                let event = match incoming {
                    Incoming::Punch(bytes) => Event::Frame(remote, bytes),
                    Incoming::Stun(bytes) if reader.turn && turn::is_turn_stun(&bytes) => {
                        Event::Turn(remote, bytes)
                    }
                    Incoming::Stun(bytes) => Event::Stun(remote, bytes),
                    Incoming::ChannelData(bytes) => Event::Turn(remote, bytes),
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let _ = events
                    .send(Event::Garbage(remote, b"garbage".to_vec()))
                    .await;
                break;
            }
            Err(_) => break,
        }
    }
    let _ = events.send(Event::Closed(remote)).await;
}
