//! Flows that run through a failover: an echo server (UDP and TCP) on the WAN that
//! records which source each packet came from, and client flows on the LAN that send
//! a numbered message every few milliseconds and record when each echo comes back,
//! so that the gap a failover causes can be measured from the client's side and the
//! external endpoint checked at the server's.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::netns::Netns;

/// Longest a flow or the server runs, whatever the caller does: 10 minutes.
pub const MAX_RUN: Duration = Duration::from_secs(600);

/// A message: an 8-byte sequence number.
const MESSAGE: usize = 8;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What reached the server: when, from where, over which protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When.
    pub at: Instant,
    /// Source address and port (the external endpoint, if translated).
    pub from: SocketAddrV4,
    /// `true`: TCP, `false`: UDP.
    pub tcp: bool,
}

/// A UDP and TCP echo server; see the module documentation.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    accepted: Arc<Mutex<Vec<SocketAddrV4>>>,
}

impl EchoServer {
    /// Serves UDP and TCP echo on `addr` in `ns` (the same port for both).
    ///
    /// # Errors
    /// When the sockets cannot be bound.
    pub fn start(ns: &Netns, addr: SocketAddrV4) -> Result<Self> {
        let udp = ns.bind_udp(addr)?;
        let tcp = ns.try_run(|| {
            TcpListener::bind(addr)
                .map_err(|e| Error::os(format!("binding TCP {addr} in {}", ns.name()), e))
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let io = |e| Error::os("setting up the echo server", e);
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(io)?;
        tcp.set_nonblocking(true).map_err(io)?;
        let mut threads = Vec::new();
        {
            let (stop, arrivals) = (Arc::clone(&stop), Arc::clone(&arrivals));
            threads.push(std::thread::spawn(move || {
                let started = Instant::now();
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
                    if let Ok((n, SocketAddr::V4(from))) = udp.recv_from(&mut buf) {
                        lock(&arrivals).push(Arrival {
                            at: Instant::now(),
                            from,
                            tcp: false,
                        });
                        let _ = udp.send_to(&buf[..n], from);
                    }
                }
            }));
        }
        {
            let (stop, arrivals, accepted) = (
                Arc::clone(&stop),
                Arc::clone(&arrivals),
                Arc::clone(&accepted),
            );
            threads.push(std::thread::spawn(move || {
                let started = Instant::now();
                let mut echoes = Vec::new();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
                    match tcp.accept() {
                        Ok((stream, SocketAddr::V4(peer))) => {
                            lock(&accepted).push(peer);
                            let (stop, arrivals) = (Arc::clone(&stop), Arc::clone(&arrivals));
                            echoes.push(std::thread::spawn(move || {
                                tcp_echo(stream, peer, &stop, &arrivals);
                            }));
                        }
                        _ => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                for e in echoes {
                    let _ = e.join();
                }
            }));
        }
        Ok(Self {
            stop,
            threads,
            arrivals,
            accepted,
        })
    }

    /// Everything that arrived so far.
    #[must_use]
    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.arrivals).clone()
    }

    /// The distinct sources of the protocol's packets after `at`, in order.
    #[must_use]
    pub fn sources_after(&self, tcp: bool, at: Instant) -> Vec<SocketAddrV4> {
        let mut out: Vec<SocketAddrV4> = Vec::new();
        for a in self.arrivals().iter().filter(|a| a.tcp == tcp && a.at > at) {
            if !out.contains(&a.from) {
                out.push(a.from);
            }
        }
        out
    }

    /// The TCP connections accepted so far (their peers).
    #[must_use]
    pub fn accepted(&self) -> Vec<SocketAddrV4> {
        lock(&self.accepted).clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tcp_echo(
    mut stream: TcpStream,
    peer: SocketAddrV4,
    stop: &AtomicBool,
    arrivals: &Mutex<Vec<Arrival>>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let started = Instant::now();
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                lock(arrivals).push(Arrival {
                    at: Instant::now(),
                    from: peer,
                    tcp: true,
                });
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// A client flow: a numbered message every `every`, the echoes' arrival times.
pub struct Flow {
    /// `udp` or `tcp`.
    pub kind: &'static str,
    /// The client's own endpoint.
    pub local: SocketAddrV4,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    replies: Arc<Mutex<Vec<Instant>>>,
    error: Arc<Mutex<Option<String>>>,
}

impl Flow {
    /// A UDP flow from `from` to `to`, created in `ns`.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub fn udp(ns: &Netns, from: SocketAddrV4, to: SocketAddrV4, every: Duration) -> Result<Self> {
        let socket = ns.bind_udp(from)?;
        let io = |e| Error::os("setting up the UDP flow", e);
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .map_err(io)?;
        let local = match socket.local_addr().map_err(io)? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => from,
        };
        let mut flow = Self::new("udp", local);
        let (stop, replies) = (Arc::clone(&flow.stop), Arc::clone(&flow.replies));
        flow.threads.push(std::thread::spawn(move || {
            udp_loop(&socket, to, every, &stop, &replies);
        }));
        Ok(flow)
    }

    /// A TCP connection to `to`, made from `ns` (an ephemeral port), carrying a
    /// message every `every`.
    ///
    /// # Errors
    /// When the connection cannot be made within 5 s.
    pub fn tcp(ns: &Netns, to: SocketAddrV4, every: Duration) -> Result<Self> {
        let stream = ns.try_run(|| {
            TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))
                .map_err(|e| Error::os(format!("connecting to {to} from {}", ns.name()), e))
        })??;
        let io = |e| Error::os("setting up the TCP flow", e);
        stream.set_nodelay(true).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(io)?;
        let local = match stream.local_addr().map_err(io)? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => to,
        };
        let mut flow = Self::new("tcp", local);
        let mut reader = stream.try_clone().map_err(io)?;
        let (stop, replies, error) = (
            Arc::clone(&flow.stop),
            Arc::clone(&flow.replies),
            Arc::clone(&flow.error),
        );
        flow.threads.push(std::thread::spawn(move || {
            tcp_read_loop(&mut reader, &stop, &replies, &error);
        }));
        let (stop, error) = (Arc::clone(&flow.stop), Arc::clone(&flow.error));
        let mut writer = stream;
        flow.threads.push(std::thread::spawn(move || {
            let started = Instant::now();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
                if let Err(e) = writer.write_all(&n.to_be_bytes()) {
                    lock(&error).get_or_insert(format!("write: {e}"));
                    return;
                }
                n += 1;
                std::thread::sleep(every);
            }
        }));
        Ok(flow)
    }

    fn new(kind: &'static str, local: SocketAddrV4) -> Self {
        Self {
            kind,
            local,
            stop: Arc::default(),
            threads: Vec::new(),
            replies: Arc::default(),
            error: Arc::default(),
        }
    }

    /// Echoes received so far.
    #[must_use]
    pub fn replies(&self) -> usize {
        lock(&self.replies).len()
    }

    /// The first echo after `at`, as the time since `at`.
    #[must_use]
    pub fn reply_after(&self, at: Instant) -> Option<Duration> {
        lock(&self.replies)
            .iter()
            .find(|t| **t > at)
            .map(|t| t.duration_since(at))
    }

    /// Waits up to `limit` for an echo after `at`; how long after `at` it came.
    #[must_use]
    pub fn wait_reply_after(&self, at: Instant, limit: Duration) -> Option<Duration> {
        loop {
            if let Some(d) = self.reply_after(at) {
                return Some(d);
            }
            if at.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The silence around `at`: from the last echo before it to the first after it
    /// (`None` while none came after it).
    #[must_use]
    pub fn gap_around(&self, at: Instant) -> Option<Duration> {
        let replies = lock(&self.replies);
        let before = replies.iter().rev().find(|t| **t <= at)?;
        let after = replies.iter().find(|t| **t > at)?;
        Some(after.duration_since(*before))
    }

    /// The longest silence between consecutive echoes from the last echo at or
    /// before `from` to the first echo after `until` (`None` while no echo came
    /// after `until`, or none came before `from`).
    #[must_use]
    pub fn longest_silence(&self, from: Instant, until: Instant) -> Option<Duration> {
        let replies = lock(&self.replies);
        let start = replies.iter().rposition(|t| *t <= from)?;
        let end = replies.iter().position(|t| *t > until)?;
        replies
            .get(start..=end)?
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .max()
    }

    /// Why the flow ended, if it did (a TCP reset, a closed connection).
    #[must_use]
    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn udp_loop(
    socket: &UdpSocket,
    to: SocketAddrV4,
    every: Duration,
    stop: &AtomicBool,
    replies: &Mutex<Vec<Instant>>,
) {
    let started = Instant::now();
    let mut n: u64 = 0;
    let mut next = Instant::now();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
        if Instant::now() >= next {
            // Errors (no route for a moment) are what a failover looks like.
            let _ = socket.send_to(&n.to_be_bytes(), to);
            n += 1;
            next += every;
        }
        if let Ok((len, from)) = socket.recv_from(&mut buf) {
            if len == MESSAGE && from == SocketAddr::V4(to) {
                lock(replies).push(Instant::now());
            }
        }
    }
}

fn tcp_read_loop(
    reader: &mut TcpStream,
    stop: &AtomicBool,
    replies: &Mutex<Vec<Instant>>,
    error: &Mutex<Option<String>>,
) {
    let started = Instant::now();
    let mut pending = 0usize;
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_RUN {
        match reader.read(&mut buf) {
            Ok(0) => {
                lock(error).get_or_insert_with(|| "closed by the server".to_owned());
                return;
            }
            Ok(n) => {
                pending += n;
                let now = Instant::now();
                let mut r = lock(replies);
                while pending >= MESSAGE {
                    pending -= MESSAGE;
                    r.push(now);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => {
                lock(error).get_or_insert(format!("read: {e}"));
                return;
            }
        }
    }
}
