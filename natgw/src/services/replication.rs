//! The replication channel on TCP: the socket loop around
//! [`natgw_proto::ha::engine`]'s [`Sender`] (while this natgw is active: it connects
//! to the peer) and [`Receiver`] (while standby: it accepts the peer's connection,
//! from the peer's address only).
//!
//! The loop owns no NAT state. The daemon hands it records to send
//! ([`ToService::Records`], [`ToService::Resync`]) and takes what arrives
//! ([`FromService::Deliver`]), installs it and says so (`Handles::installed`, the
//! connection and the sequence number installed up to), which the loop acknowledges
//! to the peer. After every (re)connection the active
//! side asks the daemon for a full resync ([`FromService::WantResync`]). Records
//! handed over while no peer is connected are dropped: the resync covers them.
//!
//! A peer that sends nothing (not even its keepalive) for [`PEER_SILENCE`] is
//! dropped, as is one whose frames fail their tag, sequence number or decoding.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use natgw_proto::ha::engine::{ChannelError, Delivery, Receiver, Sender};
use natgw_proto::ha::wire::Record;
use natgw_proto::util::rng::random_array;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How often each side sends a keepalive.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// Silence after which the peer is taken for gone.
pub const PEER_SILENCE: Duration = Duration::from_secs(5);
/// How long a connection attempt and the handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Wait between connection attempts.
pub const RETRY: Duration = Duration::from_secs(1);

/// What the daemon tells the loop.
#[derive(Debug)]
pub enum ToService {
    /// Changes to send (active).
    Records(Vec<Record>),
    /// The whole table, sent as a full resync (active).
    Resync(Vec<Record>),
}

/// What the loop tells the daemon.
#[derive(Debug)]
pub enum FromService {
    /// A peer is connected: send it the whole table ([`ToService::Resync`]).
    WantResync,
    /// Something to install (standby), from connection number `.0`.
    Deliver(u64, Delivery),
}

/// The channel's counters, read by `natgw status` and the metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// A peer is connected and authenticated.
    pub connected: AtomicBool,
    /// Connections authenticated.
    pub connects: AtomicU64,
    /// Connections that ended on an error (bad frame, silence, reset).
    pub errors: AtomicU64,
    /// Connections refused: from an address that is not the peer's.
    pub refused: AtomicU64,
    /// Records sent (active).
    pub sent: AtomicU64,
    /// Records acknowledged by the peer (active).
    pub acked: AtomicU64,
    /// Records received (standby).
    pub received: AtomicU64,
    /// Full resyncs sent (active) or received (standby).
    pub resyncs: AtomicU64,
    /// The age of the oldest unacknowledged frame, ms (active).
    pub lag_ms: AtomicU64,
    /// The last acknowledgement's round trip, µs (active).
    pub ack_rtt_us: AtomicU64,
}

/// The daemon's end of the running loop.
pub struct Handles {
    /// To the loop.
    pub to: mpsc::Sender<ToService>,
    /// From the loop.
    pub from: mpsc::Receiver<FromService>,
    /// What the daemon installed: connection number and sequence number (standby).
    pub installed: watch::Sender<(u64, u64)>,
    /// Its counters.
    pub stats: Arc<Stats>,
    /// The task.
    pub task: JoinHandle<()>,
}

/// Binds `listen` and starts the loop: with `active` true it connects to `peer`
/// and sends, else it accepts `peer`'s connection and receives; `active` may change
/// at any time.
///
/// # Errors
/// When `listen` cannot be bound.
pub fn spawn(
    listen: SocketAddrV4,
    peer: SocketAddrV4,
    key: Vec<u8>,
    active: watch::Receiver<bool>,
) -> std::io::Result<Handles> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let (to, to_rx) = mpsc::channel(64);
    let (from_tx, from) = mpsc::channel(64);
    let stats = Arc::new(Stats::default());
    let (installed, installed_rx) = watch::channel((0, 0));
    let service = Service {
        installed: installed_rx,
        connection: 0,
        listener,
        peer,
        key,
        active,
        to: to_rx,
        from: from_tx,
        stats: Arc::clone(&stats),
    };
    let task = tokio::spawn(service.run());
    Ok(Handles {
        to,
        from,
        installed,
        stats,
        task,
    })
}

struct Service {
    listener: TcpListener,
    peer: SocketAddrV4,
    key: Vec<u8>,
    active: watch::Receiver<bool>,
    to: mpsc::Receiver<ToService>,
    from: mpsc::Sender<FromService>,
    stats: Arc<Stats>,
    installed: watch::Receiver<(u64, u64)>,
    /// Number of the current connection (standby), so that an acknowledgement of
    /// an earlier connection's frames is never taken for one of this one's.
    connection: u64,
}

/// How a connection ended.
#[derive(Debug)]
enum End {
    /// The role changed.
    Role,
    /// The daemon went away.
    Stopped,
    /// An error.
    Failed(String),
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<ChannelError> for End {
    fn from(e: ChannelError) -> Self {
        Self::Failed(e.to_string())
    }
}

impl Service {
    async fn run(mut self) {
        loop {
            let active = *self.active.borrow_and_update();
            let end = if active {
                self.active_side().await
            } else {
                self.standby_side().await
            };
            self.stats.connected.store(false, Ordering::Relaxed);
            match end {
                End::Stopped => return,
                End::Role => {}
                End::Failed(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        "replication.disconnected peer={} role={} error=\"{e}\"",
                        self.peer,
                        if active { "active" } else { "standby" }
                    );
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => {}
                        r = self.active.changed() => if r.is_err() { return },
                    }
                }
            }
        }
    }

    /// Drops what the daemon sends while no peer listens (the resync covers it).
    fn discard(&mut self) {
        while self.to.try_recv().is_ok() {}
    }

    async fn active_side(&mut self) -> End {
        self.discard();
        let stream = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.peer)) => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return End::Failed(format!("connecting to {}: {e}", self.peer)),
                Err(_) => return End::Failed(format!("connecting to {}: timed out", self.peer)),
            },
            r = self.active.changed() => return if r.is_err() { End::Stopped } else { End::Role },
        };
        let _ = stream.set_nodelay(true);
        let mut sender = Sender::new(&self.key, random_array());
        match self.exchange(stream, &mut sender).await {
            Ok(end) | Err(end) => end,
        }
    }

    async fn exchange(&mut self, mut stream: TcpStream, sender: &mut Sender) -> Result<End, End> {
        let mut buf = vec![0u8; 64 * 1024];
        flush_sender(&mut stream, sender).await?;
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
            while !sender.is_open() {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(End::Failed("the peer closed during the handshake".into()));
                }
                sender.receive(&buf[..n], Instant::now())?;
            }
            Ok(())
        })
        .await;
        match opened {
            Ok(r) => r?,
            Err(_) => return Err(End::Failed("no handshake from the peer".into())),
        }
        self.stats.connected.store(true, Ordering::Relaxed);
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        info!("replication.connected peer={} role=active", self.peer);
        self.discard();
        if self.from.send(FromService::WantResync).await.is_err() {
            return Ok(End::Stopped);
        }
        let mut tick = tokio::time::interval(KEEPALIVE);
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                r = stream.read(&mut buf) => {
                    let n = r?;
                    if n == 0 {
                        return Err(End::Failed("the peer closed the connection".into()));
                    }
                    heard = Instant::now();
                    sender.receive(&buf[..n], heard)?;
                }
                m = self.to.recv() => {
                    let now = Instant::now();
                    match m {
                        None => return Ok(End::Stopped),
                        Some(ToService::Records(records)) => {
                            for r in records {
                                sender.push(r, now)?;
                            }
                            sender.flush(now)?;
                        }
                        Some(ToService::Resync(records)) => {
                            sender.begin_resync(now)?;
                            for r in records {
                                sender.push(r, now)?;
                            }
                            sender.end_resync(now)?;
                            self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                _ = tick.tick() => {
                    if heard.elapsed() > PEER_SILENCE {
                        return Err(End::Failed(format!(
                            "nothing from the peer for {} s", PEER_SILENCE.as_secs()
                        )));
                    }
                    sender.ping()?;
                }
                r = self.active.changed() => {
                    return Ok(if r.is_err() { End::Stopped } else { End::Role });
                }
            }
            let s = sender.stats();
            self.stats.sent.store(s.records_sent, Ordering::Relaxed);
            self.stats.acked.store(s.records_acked, Ordering::Relaxed);
            self.stats.ack_rtt_us.store(
                u64::try_from(s.last_ack_rtt.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            self.stats.lag_ms.store(
                u64::try_from(sender.lag(Instant::now()).as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            flush_sender(&mut stream, sender).await?;
        }
    }

    async fn standby_side(&mut self) -> End {
        self.stats.lag_ms.store(0, Ordering::Relaxed);
        loop {
            self.discard();
            let (stream, from) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => return End::Failed(format!("accepting: {e}")),
                },
                r = self.active.changed() => return if r.is_err() { End::Stopped } else { End::Role },
            };
            if !self.is_peer(from) {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "replication.refused from={from}: only the peer {} may connect",
                    self.peer.ip()
                );
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.connection += 1;
            let mut receiver = Receiver::new(&self.key, random_array());
            match self.receive_from(stream, &mut receiver).await {
                Ok(end) | Err(end) => return end,
            }
        }
    }

    fn is_peer(&self, from: SocketAddr) -> bool {
        match from {
            SocketAddr::V4(a) => a.ip() == self.peer.ip(),
            SocketAddr::V6(a) => a.ip().to_ipv4_mapped() == Some(*self.peer.ip()),
        }
    }

    async fn receive_from(
        &mut self,
        mut stream: TcpStream,
        receiver: &mut Receiver,
    ) -> Result<End, End> {
        let mut buf = vec![0u8; 64 * 1024];
        flush_receiver(&mut stream, receiver).await?;
        let mut tick = tokio::time::interval(KEEPALIVE);
        let mut heard = Instant::now();
        let mut was_open = false;
        loop {
            tokio::select! {
                r = stream.read(&mut buf) => {
                    let n = r?;
                    if n == 0 {
                        return Err(End::Failed("the peer closed the connection".into()));
                    }
                    heard = Instant::now();
                    let deliveries = receiver.receive(&buf[..n])?;
                    if receiver.is_open() && !was_open {
                        was_open = true;
                        self.stats.connected.store(true, Ordering::Relaxed);
                        self.stats.connects.fetch_add(1, Ordering::Relaxed);
                        info!("replication.connected peer={} role=standby", self.peer);
                    }
                    self.stats.received.store(receiver.records_received, Ordering::Relaxed);
                    for d in deliveries {
                        if matches!(d, Delivery::ResyncBegin { .. }) {
                            self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                        }
                        if self.from.send(FromService::Deliver(self.connection, d)).await.is_err() {
                            return Ok(End::Stopped);
                        }
                    }
                }
                r = self.installed.changed() => {
                    if r.is_err() {
                        return Ok(End::Stopped);
                    }
                    let (connection, seq) = *self.installed.borrow_and_update();
                    if connection == self.connection {
                        receiver.ack(seq)?;
                    }
                }
                _ = tick.tick() => {
                    let limit = if was_open { PEER_SILENCE } else { CONNECT_TIMEOUT };
                    if heard.elapsed() > limit {
                        return Err(End::Failed(format!(
                            "nothing from the peer for {} s", limit.as_secs()
                        )));
                    }
                    if receiver.is_open() {
                        receiver.ping()?;
                    }
                }
                r = self.active.changed() => {
                    return Ok(if r.is_err() { End::Stopped } else { End::Role });
                }
            }
            flush_receiver(&mut stream, receiver).await?;
        }
    }
}

async fn flush_sender(stream: &mut TcpStream, sender: &mut Sender) -> Result<(), End> {
    while let Some(bytes) = sender.poll_transmit() {
        stream.write_all(&bytes).await?;
    }
    Ok(())
}

async fn flush_receiver(stream: &mut TcpStream, receiver: &mut Receiver) -> Result<(), End> {
    while let Some(bytes) = receiver.poll_transmit() {
        stream.write_all(&bytes).await?;
    }
    Ok(())
}
