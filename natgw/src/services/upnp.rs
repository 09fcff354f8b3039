//! The UPnP IGD server on sockets — the thin loops around the sans-IO
//! [`ssdp::Responder`] and [`Engine`] of `natgw_proto::upnp`.
//!
//! **SSDP.** One UDP socket per LAN interface, bound to port 1900 and to the
//! interface (`SO_BINDTODEVICE`), joined to 239.255.255.250 on that interface only
//! (`IP_ADD_MEMBERSHIP` by interface index). `IP_PKTINFO` tells on which interface
//! and to which address each datagram came: one that did not come in on the
//! socket's LAN interface, or whose source is not on one of that interface's
//! prefixes, is dropped before the responder sees it, so nothing from the WAN is ever
//! answered. Every datagram leaves with `IP_PKTINFO` naming its LAN address and
//! interface. The responder's task sends the periodic `ssdp:alive` rounds, and
//! [`UpnpService::stop`] the `ssdp:byebye`s.
//!
//! **HTTP.** One `TcpListener` per LAN address (never the WAN's, never 0.0.0.0),
//! bound to its interface too. Connections are counted (at most
//! [`MAX_CONNECTIONS`], [`MAX_CONNECTIONS_PER_HOST`] of one host; beyond, a
//! connection is closed at once). A connection's task reads one request within
//! [`READ_TIMEOUT`] for the whole of it (a slow sender is cut off: slowloris), framed
//! by the engine's own limits, then hands it to the daemon's loop, which answers it
//! with the shared mapping table ([`UpnpService::handle`]); the task writes the
//! answer within [`WRITE_TIMEOUT`] and closes.
//!
//! **GENA.** Event messages go to the subscriber's callback (on its own LAN address:
//! the engine accepts no other) over a new TCP connection, within
//! [`DELIVERY_TIMEOUT`] for connecting, writing and reading the answer, at most
//! [`MAX_DELIVERIES`] at once (the rest are dropped and counted).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use log::{debug, info, warn};
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use natgw_proto::pcp::policy::PcpConfig;
use natgw_proto::pcp::table::MappingTable;
use natgw_proto::prefix::Ipv4Prefix;
use natgw_proto::upnp::engine::{Engine, Event, MappingEvent, UpnpConfig};
use natgw_proto::upnp::http;
use natgw_proto::upnp::soap::UpnpError;
use natgw_proto::upnp::ssdp::{self, Responder, MAX_SEARCH_LEN, MULTICAST};
use natgw_proto::upnp::{gena, Device};
use natgw_proto::util::log_budget::{suppressed_note, LogBudget};

use super::http::{read_request, write_response, ConnectionSlot, OpenConnections};

pub use super::http::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_HOST, READ_TIMEOUT, WRITE_TIMEOUT};
/// Time an event delivery may take: connecting, writing, reading the answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Event deliveries at once; more are dropped (and counted).
pub const MAX_DELIVERIES: usize = 16;
/// Requests waiting for the daemon's loop; beyond, 503.
const QUEUE: usize = 64;
/// The TTL of SSDP datagrams (UDA 1.1 §1.1.2: 2 by default).
const SSDP_TTL: u32 = 2;

/// A LAN interface to serve on, with its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LanInterface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub ifindex: u32,
    /// Its IPv4 addresses and prefixes.
    pub prefixes: Vec<Ipv4Prefix>,
}

/// An answer the engine made, not sent yet.
#[derive(Debug)]
pub struct Answer {
    reply: oneshot::Sender<Vec<u8>>,
    /// The control point.
    pub client: SocketAddrV4,
    /// The whole HTTP response.
    pub bytes: Vec<u8>,
    /// The mappings the request created or renewed.
    pub mapped: Vec<MappingEvent>,
}

impl Answer {
    /// Hands the response to the connection's task.
    pub fn send(self) {
        // The connection is gone (the client closed, or gave up): nothing to do.
        let _ = self.reply.send(self.bytes);
    }
}

/// A complete request (or all a client sent before closing), waiting for the
/// engine.
#[derive(Debug)]
pub struct PendingRequest {
    src: SocketAddrV4,
    local: Ipv4Addr,
    bytes: Vec<u8>,
    closed: bool,
    reply: oneshot::Sender<Vec<u8>>,
}

/// Counters for `natgw status`.
#[derive(Debug, Default)]
pub struct Counters {
    /// HTTP connections accepted.
    pub connections: AtomicU64,
    /// Connections closed at once: over the global or the per-host limit.
    pub connections_refused: AtomicU64,
    /// Connections closed because the request did not arrive within [`READ_TIMEOUT`].
    pub read_timeouts: AtomicU64,
    /// Requests answered 503 because the loop's queue was full.
    pub busy: AtomicU64,
    /// HTTP requests answered by the engine.
    pub requests: AtomicU64,
    /// SSDP datagrams dropped because they did not come from a host of the LAN
    /// interface.
    pub ssdp_foreign: AtomicU64,
    /// SSDP M-SEARCHes answered.
    pub ssdp_searches: AtomicU64,
    /// GENA event messages delivered.
    pub events_delivered: AtomicU64,
    /// GENA event messages that could not be delivered (or were dropped).
    pub events_failed: AtomicU64,
    /// Control requests refused with a SOAP fault (an action not authorized, a
    /// conflict, a bad argument...).
    pub refused: AtomicU64,
    /// Requests answered with an HTTP error (malformed, too large, unknown path,
    /// rate-limited...).
    pub rejected: AtomicU64,
}

/// The UPnP server: its engine, and the tasks that run its sockets.
pub struct UpnpService {
    engine: Engine,
    requests: mpsc::Receiver<PendingRequest>,
    ssdp_sockets: Vec<(Arc<UdpSocket>, LanInterface)>,
    tasks: Vec<JoinHandle<()>>,
    deliveries: Arc<Semaphore>,
    counters: Arc<Counters>,
    refusal_log: LogBudget,
    locals: Vec<SocketAddrV4>,
}

/// Refusals the service logs per [`LOG_WINDOW`].
const LOG_LINES: u32 = 20;
/// See [`LOG_LINES`].
const LOG_WINDOW: Duration = Duration::from_secs(60);

fn ssdp_socket(lan: &LanInterface) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Other SSDP listeners of the gateway (another device's stack) may hold the port
    // too: multicast reaches every one of them.
    socket.set_reuse_address(true)?;
    socket.bind_device(Some(lan.name.as_bytes()))?;
    socket.set_multicast_loop_v4(false)?;
    socket.set_multicast_ttl_v4(SSDP_TTL)?;
    if let Some(first) = lan.prefixes.first() {
        socket.set_multicast_if_v4(&first.addr())?;
    }
    socket.join_multicast_v4_n(
        MULTICAST.ip(),
        &socket2::InterfaceIndexOrAddress::Index(lan.ifindex),
    )?;
    setsockopt(&socket, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MULTICAST.port()).into())?;
    UdpSocket::from_std(socket.into())
}

fn http_listener(iface: &str, local: SocketAddrV4) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind_device(Some(iface.as_bytes()))?;
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

/// What one datagram was: its bytes' length, source, and where it arrived.
struct Received {
    len: usize,
    src: SocketAddrV4,
    ifindex: u32,
    destination: Ipv4Addr,
}

fn recv_with_info(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    socket.try_io(Interest::READABLE, || {
        let mut iov = [IoSliceMut::new(buf)];
        let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
        let msg = recvmsg::<SockaddrIn>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
        )
        .map_err(io::Error::from)?;
        let src = msg
            .address
            .map(|a| SocketAddrV4::new(a.ip(), a.port()))
            .ok_or_else(|| io::Error::other("datagram without a source"))?;
        let mut ifindex = 0;
        let mut destination = Ipv4Addr::UNSPECIFIED;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
                ifindex = u32::try_from(info.ipi_ifindex).unwrap_or(0);
                destination = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
            }
        }
        Ok(Received {
            len: msg.bytes,
            src,
            ifindex,
            destination,
        })
    })
}

/// Sends `payload` to `to` from LAN address `from` out of interface `ifindex`
/// without waiting; a datagram the socket cannot take at once is dropped.
fn send_from(
    socket: &UdpSocket,
    from: Ipv4Addr,
    ifindex: u32,
    to: SocketAddrV4,
    payload: &[u8],
) -> io::Result<()> {
    let info = libc::in_pktinfo {
        ipi_ifindex: i32::try_from(ifindex).unwrap_or(0),
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(from).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let to = SockaddrIn::from(to);
    socket.try_io(Interest::WRITABLE, || {
        sendmsg(
            socket.as_raw_fd(),
            &[IoSlice::new(payload)],
            &[ControlMessage::Ipv4PacketInfo(&info)],
            MsgFlags::MSG_DONTWAIT,
            Some(&to),
        )
        .map(|_| ())
        .map_err(io::Error::from)
    })
}

/// The LAN address of `lan` to answer `src` from: the one whose prefix holds it.
fn local_for(lan: &LanInterface, src: Ipv4Addr) -> Option<Ipv4Addr> {
    lan.prefixes
        .iter()
        .find(|p| p.contains(src) && p.addr() != src)
        .map(Ipv4Prefix::addr)
}

/// The SSDP loop of every LAN interface: searches in, answers and advertisements out.
async fn run_ssdp(
    mut responder: Responder,
    sockets: Vec<(Arc<UdpSocket>, LanInterface)>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; MAX_SEARCH_LEN + 1];
    let mut log = LogBudget::new(LOG_LINES, LOG_WINDOW);
    loop {
        let now = Instant::now();
        while let Some(t) = responder.poll_transmit(now) {
            let Some((socket, lan)) = sockets
                .iter()
                .find(|(_, l)| l.prefixes.iter().any(|p| p.addr() == t.from))
            else {
                continue;
            };
            if let Err(e) = send_from(socket, t.from, lan.ifindex, t.to, &t.payload) {
                debug!("upnp.ssdp_send_failed to={} error=\"{e}\"", t.to);
            }
        }
        let deadline = responder.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let readable = async {
            if sockets.is_empty() {
                return std::future::pending().await;
            }
            let ready = sockets.iter().map(|(s, _)| Box::pin(s.readable()));
            futures::future::select_all(ready).await.1
        };
        let index = tokio::select! {
            () = sleep => continue,
            i = readable => i,
        };
        let (socket, lan) = &sockets[index];
        for _ in 0..64 {
            let got = match recv_with_info(socket, &mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if super::transient(&e) => continue,
                Err(e) => {
                    debug!("upnp.ssdp_receive_failed iface={} error=\"{e}\"", lan.name);
                    break;
                }
            };
            // Only hosts of this LAN interface, seen coming in on it, are answered.
            let local = (got.ifindex == lan.ifindex)
                .then(|| local_for(lan, *got.src.ip()))
                .flatten();
            let Some(local) = local else {
                counters.ssdp_foreign.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let len = got.len.min(buf.len());
            let multicast = got.destination == *MULTICAST.ip();
            match responder.handle(Instant::now(), got.src, local, multicast, &buf[..len]) {
                Ok(n) if n > 0 => {
                    counters.ssdp_searches.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) | Err(ssdp::SsdpError::NotSearch(_)) => {}
                Err(e) => {
                    if let Some(suppressed) = log.admit(Instant::now()) {
                        debug!(
                            "upnp.ssdp_refused src={} error=\"{e}\"{}",
                            got.src,
                            suppressed_note(suppressed)
                        );
                    }
                }
            }
        }
    }
}

/// Accepts connections on one LAN address.
async fn run_listener(
    listener: TcpListener,
    local: SocketAddrV4,
    limits: http::Limits,
    open: OpenConnections,
    requests: mpsc::Sender<PendingRequest>,
    counters: Arc<Counters>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(got) => got,
            Err(e) => {
                debug!("upnp.accept_failed local={local} error=\"{e}\"");
                // Out of descriptors or memory: let it pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let SocketAddr::V4(peer) = peer else { continue };
        let Some(slot) = ConnectionSlot::take(&open, *peer.ip()) else {
            counters.connections_refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let requests = requests.clone();
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            serve_connection(stream, peer, *local.ip(), limits, requests, &counters).await;
            drop(slot);
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddrV4,
    local: Ipv4Addr,
    limits: http::Limits,
    requests: mpsc::Sender<PendingRequest>,
    counters: &Counters,
) {
    let (bytes, closed) =
        match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream, &limits)).await {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => {
                debug!("upnp.read_failed client={peer} error=\"{e}\"");
                return;
            }
            Err(_) => {
                counters.read_timeouts.fetch_add(1, Ordering::Relaxed);
                debug!(
                    "upnp.read_timeout client={peer}: no complete request within {}s; closed",
                    READ_TIMEOUT.as_secs()
                );
                return;
            }
        };
    if bytes.is_empty() {
        return;
    }
    let (reply, answer) = oneshot::channel();
    let request = PendingRequest {
        src: peer,
        local,
        bytes,
        closed,
        reply,
    };
    let response = if requests.try_send(request).is_ok() {
        match answer.await {
            Ok(r) => r,
            Err(_) => return,
        }
    } else {
        counters.busy.fetch_add(1, Ordering::Relaxed);
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_vec()
    };
    if let Err(e) = write_response(&mut stream, &response).await {
        debug!("upnp.write_failed client={peer} error=\"{e}\"");
    }
}

/// Delivers one GENA event message.
async fn deliver(notify: gena::Notify) -> io::Result<()> {
    let mut stream = TcpStream::connect(notify.to).await?;
    stream.write_all(&notify.request).await?;
    // The answer (200 OK) is read and ignored; it must come before we close.
    let mut answer = [0u8; 512];
    let _ = stream.read(&mut answer).await?;
    Ok(())
}

impl UpnpService {
    /// The server for `device` on every address of `lans`: the SSDP sockets and
    /// HTTP listeners bound, their tasks started. The first advertisements go out at
    /// once.
    ///
    /// # Errors
    /// A socket that cannot be bound (another UPnP server holds the HTTP port), or
    /// no random secret.
    pub fn start(
        config: UpnpConfig,
        policy: PcpConfig,
        device: Device,
        lans: &[LanInterface],
        now: Instant,
    ) -> Result<Self> {
        let secret: [u8; 16] = natgw_proto::util::rng::random_bytes()
            .context("reading the GENA secret from /dev/urandom")?;
        let seed: [u8; 8] = natgw_proto::util::rng::random_bytes()
            .context("reading a random seed from /dev/urandom")?;
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel(QUEUE);
        let open = OpenConnections::default();
        let mut tasks = Vec::new();
        let mut locals = Vec::new();
        let mut ssdp_sockets = Vec::new();
        for lan in lans.iter().filter(|l| !l.prefixes.is_empty()) {
            let socket = ssdp_socket(lan).with_context(|| {
                format!(
                    "binding SSDP to UDP 0.0.0.0:{} on {} (run natgw with --no-upnp to go \
                     without UPnP)",
                    MULTICAST.port(),
                    lan.name
                )
            })?;
            ssdp_sockets.push((Arc::new(socket), lan.clone()));
            for p in &lan.prefixes {
                let local = SocketAddrV4::new(p.addr(), device.http_port);
                let listener = http_listener(&lan.name, local).with_context(|| {
                    format!(
                        "binding the UPnP HTTP server to TCP {local} on {} (another service \
                         on the gateway holds the port? move UPnP's with [upnp] http_port, or \
                         run natgw with --no-upnp)",
                        lan.name
                    )
                })?;
                locals.push(local);
                tasks.push(tokio::spawn(run_listener(
                    listener,
                    local,
                    config.http,
                    Arc::clone(&open),
                    tx.clone(),
                    Arc::clone(&counters),
                )));
            }
        }
        let addresses: Vec<Ipv4Addr> = locals.iter().map(|a| *a.ip()).collect();
        let responder = Responder::new(
            device.clone(),
            ssdp::Config::default(),
            addresses,
            now,
            u64::from_le_bytes(seed),
        );
        tasks.push(tokio::spawn(run_ssdp(
            responder,
            ssdp_sockets.clone(),
            Arc::clone(&counters),
        )));
        Ok(Self {
            engine: Engine::new(config, policy, device, now, secret),
            requests: rx,
            ssdp_sockets,
            tasks,
            deliveries: Arc::new(Semaphore::new(MAX_DELIVERIES)),
            counters,
            refusal_log: LogBudget::new(LOG_LINES, LOG_WINDOW),
            locals,
        })
    }

    /// The HTTP addresses served on.
    #[must_use]
    pub fn locals(&self) -> &[SocketAddrV4] {
        &self.locals
    }

    /// The counters, named for `natgw status`.
    #[must_use]
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("upnp_connections", get(&c.connections)),
            ("upnp_connections_refused", get(&c.connections_refused)),
            ("upnp_read_timeouts", get(&c.read_timeouts)),
            ("upnp_busy", get(&c.busy)),
            ("upnp_requests", get(&c.requests)),
            ("upnp_refused", get(&c.refused)),
            ("upnp_rejected", get(&c.rejected)),
            ("upnp_ssdp_searches", get(&c.ssdp_searches)),
            ("upnp_ssdp_foreign", get(&c.ssdp_foreign)),
            ("upnp_events_delivered", get(&c.events_delivered)),
            ("upnp_events_failed", get(&c.events_failed)),
        ]
    }

    /// Waits for the next request. Cancel-safe.
    pub async fn next_request(&mut self) -> Option<PendingRequest> {
        self.requests.recv().await
    }

    /// When [`UpnpService::refresh`] is due.
    #[must_use]
    pub fn next_timeout(&self) -> Option<Instant> {
        self.engine.poll_timeout()
    }

    /// Answers `request` with the shared table and sends the events it caused; the
    /// answer is returned, not sent, so that a PCP proxy may hold it until its
    /// upstream has answered too (see [`Answer::send`]).
    pub fn handle(
        &mut self,
        request: PendingRequest,
        now: Instant,
        table: &mut impl MappingTable,
    ) -> Option<Answer> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .engine
            .handle_bytes(
                now,
                request.src,
                request.local,
                &request.bytes,
                request.closed,
                table,
            )
            .or_else(|| {
                // Incomplete although the connection's task saw it complete: answer as
                // if the client had closed.
                self.engine.handle_bytes(
                    now,
                    request.src,
                    request.local,
                    &request.bytes,
                    true,
                    table,
                )
            });
        let mapped = self.after(now);
        let bytes = response?;
        let status = bytes
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("-");
        debug!(
            "upnp.request client={} status={status} took_us={}",
            request.src,
            now.elapsed().as_micros()
        );
        Some(Answer {
            reply: request.reply,
            client: request.src,
            bytes,
            mapped,
        })
    }

    /// The whole HTTP answer of a SOAP fault carrying `error`.
    #[must_use]
    pub fn fault_bytes(&self, error: UpnpError) -> Vec<u8> {
        self.engine.fault_bytes(error)
    }

    /// Subscriptions that ended, and events for a table that changed behind the
    /// engine's back (expiry, a new external address).
    pub fn refresh(&mut self, now: Instant, table: &impl MappingTable) {
        self.engine.refresh(now, table);
        self.after(now);
    }

    /// A new configuration (a reload); mappings and subscriptions stay.
    pub fn set_config(&mut self, config: UpnpConfig, policy: PcpConfig) {
        self.engine.set_config(config, policy);
    }

    /// Sends the `ssdp:byebye`s and stops every task.
    pub fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let device = self.engine.device();
        let adverts = ssdp::adverts(device);
        for (socket, lan) in &self.ssdp_sockets {
            for p in &lan.prefixes {
                for a in &adverts {
                    let payload = ssdp::byebye(device, a);
                    if let Err(e) = send_from(socket, p.addr(), lan.ifindex, MULTICAST, &payload) {
                        debug!("upnp.byebye_failed iface={} error=\"{e}\"", lan.name);
                    }
                }
            }
        }
        info!("upnp.stopped: ssdp:byebye sent");
    }

    /// Delivers the engine's event messages and logs its events; returns the
    /// mappings created or renewed.
    fn after(&mut self, now: Instant) -> Vec<MappingEvent> {
        let mut mapped = Vec::new();
        while let Some(n) = self.engine.poll_notify() {
            let Ok(permit) = Arc::clone(&self.deliveries).try_acquire_owned() else {
                self.counters.events_failed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let counters = Arc::clone(&self.counters);
            tokio::spawn(async move {
                let to = n.to;
                match tokio::time::timeout(DELIVERY_TIMEOUT, deliver(n)).await {
                    Ok(Ok(())) => {
                        counters.events_delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        counters.events_failed.fetch_add(1, Ordering::Relaxed);
                        debug!("upnp.event_failed to={to} error=\"{e}\"");
                    }
                    Err(_) => {
                        counters.events_failed.fetch_add(1, Ordering::Relaxed);
                        debug!("upnp.event_failed to={to} error=\"timed out\"");
                    }
                }
                drop(permit);
            });
        }
        while let Some(event) = self.engine.poll_event() {
            match event {
                Event::Created(m) | Event::Renewed(m) => {
                    info!(
                        "upnp.mapped client={} proto={} int={} ext={} lease={}s{} \
                         description=\"{}\"",
                        m.client,
                        m.protocol,
                        m.internal,
                        m.external,
                        m.lease,
                        m.capped_from
                            .map_or_else(String::new, |c| format!(" asked={c}s")),
                        m.description.escape_debug()
                    );
                    mapped.push(m);
                }
                Event::Deleted(m) => info!(
                    "upnp.deleted client={} proto={} int={} ext={}",
                    m.client, m.protocol, m.internal, m.external
                ),
                Event::Refused {
                    client,
                    action,
                    error,
                    reason,
                } => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = self.refusal_log.admit(now) {
                        info!(
                            "upnp.refused client={client} action={action} error={} \
                             reason=\"{reason}\"{}",
                            error.code(),
                            suppressed_note(suppressed)
                        );
                    }
                }
                Event::Rejected {
                    client,
                    status,
                    reason,
                } => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = self.refusal_log.admit(now) {
                        info!(
                            "upnp.rejected client={client} status={status} reason=\"{reason}\"{}",
                            suppressed_note(suppressed)
                        );
                    }
                }
                Event::Lost { count } => warn!("upnp.events_lost count={count}"),
            }
        }
        mapped
    }
}
