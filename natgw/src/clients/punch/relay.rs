//! The TURN fallback of `natgw punch`: one allocation on a TURN server
//! (`natgw rendezvous` with `--turn-user`/`--turn-secret`, coturn, any RFC 8656
//! server), driven by the sans-IO client `natgw_proto::turn::client` over a UDP
//! socket of its own or over a TCP connection (`--turn-tcp`). Not over the punching
//! socket: when the TURN server is the rendezvous, a 5-tuple with an allocation
//! makes the server read the punch protocol's messages (first byte `N`, top bits
//! `01`) as ChannelData.
//!
//! The allocation is made before registering, so its relayed address can be
//! announced to the peer (a RELAY learned endpoint). On introduction permissions are
//! created for the peer's public and relayed IPs; probes on the relay path go out as
//! Send indications to the peer's relayed address and come back as Data indications.
//! The allocation is deleted (Refresh with LIFETIME 0) when the punch ends.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use crate::services::transient;
use natgw_proto::turn::client::{self, Client, Event, Received, Settings, Transport};
use natgw_proto::turn::wire::{Frame, Framer};

/// How long a shared-secret username (`--turn-secret`) is valid.
pub const SECRET_TTL: Duration = Duration::from_secs(3600);
/// Longest wait for the allocation before the punch goes on without a relay.
pub const ALLOCATE_WAIT: Duration = Duration::from_secs(5);
/// Longest wait for the answer to the closing Refresh.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long to wait for the TCP connection to the TURN server.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// Frames read ahead from the TCP connection.
const TCP_QUEUE: usize = 64;

/// The credential for the TURN server.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A static user (`--turn-user USER:PASSWORD`).
    User {
        /// The username.
        user: String,
        /// The password.
        password: String,
    },
    /// A shared secret (`--turn-secret`): username `"<expiry>:<id>"`, password
    /// `base64(HMAC-SHA1(secret, username))`.
    Secret(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password or the secret.
        match self {
            Self::User { user, .. } => write!(f, "User({user})"),
            Self::Secret(_) => f.write_str("Secret"),
        }
    }
}

impl Credential {
    /// Username and password for peer `id` at `now`.
    #[must_use]
    pub fn username_password(&self, id: &str, now: SystemTime) -> (String, String) {
        match self {
            Self::User { user, password } => (user.clone(), password.clone()),
            Self::Secret(secret) => {
                let expiry = now
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    .saturating_add(SECRET_TTL.as_secs());
                client::rest_credential(secret, id, expiry)
            }
        }
    }
}

/// What the relay was, for the report.
#[derive(Clone, Copy, Debug)]
pub struct Allocation {
    /// The TURN server.
    pub server: SocketAddrV4,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// Our relayed address.
    pub relayed: SocketAddrV4,
    /// How long the allocation took.
    pub took: Duration,
}

enum Link {
    /// Over a UDP socket of its own.
    Udp(UdpSocket),
    /// Over a TCP connection, read by a task into frames.
    Tcp {
        writer: OwnedWriteHalf,
        frames: mpsc::Receiver<io::Result<Vec<u8>>>,
        reader: JoinHandle<()>,
    },
}

/// One allocation, and the way to its server.
pub struct Relay {
    client: Client,
    server: SocketAddrV4,
    link: Link,
    /// Where the TCP link was closed or broke.
    broken: Option<String>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Link::Tcp { reader, .. } = &self.link {
            reader.abort();
        }
    }
}

impl Relay {
    /// Connects (over TCP with `tcp`; over UDP there is nothing to connect) to the
    /// TURN server `server`, for `id`.
    ///
    /// # Errors
    /// The TCP connection fails.
    pub async fn connect(
        server: SocketAddrV4,
        tcp: bool,
        local: Ipv4Addr,
        credential: &Credential,
        id: &str,
    ) -> anyhow::Result<Self> {
        let (user, password) = credential.username_password(id, SystemTime::now());
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let settings = Settings {
            // Short enough that a silent server costs the punch little (it goes on
            // without a relay after ALLOCATE_WAIT anyway).
            rto: Duration::from_millis(250),
            tcp_timeout: ALLOCATE_WAIT,
            ..Settings::default()
        };
        let client = Client::new(transport, user, password, settings);
        let link = if tcp {
            let stream = tokio::time::timeout(CONNECT_WAIT, TcpStream::connect(server))
                .await
                .map_err(|_| anyhow!("connecting to the TURN server {server} over TCP timed out"))?
                .with_context(|| format!("connecting to the TURN server {server} over TCP"))?;
            let _ = stream.set_nodelay(true);
            let (mut read, writer) = stream.into_split();
            let (tx, frames) = mpsc::channel(TCP_QUEUE);
            let reader = tokio::spawn(async move {
                let mut framer = Framer::new();
                let mut buf = vec![0; 16 * 1024];
                loop {
                    let n = match read.read(&mut buf).await {
                        Ok(0) => {
                            let _ = tx
                                .send(Err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "the TURN server closed the connection",
                                )))
                                .await;
                            return;
                        }
                        Ok(n) => n,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    framer.push(&buf[..n]);
                    loop {
                        match framer.next_frame() {
                            Ok(Some(Frame::Stun(f) | Frame::ChannelData(f))) => {
                                if tx.send(Ok(f)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                let _ = tx
                                    .send(Err(io::Error::new(io::ErrorKind::InvalidData, e)))
                                    .await;
                                return;
                            }
                        }
                    }
                }
            });
            Link::Tcp {
                writer,
                frames,
                reader,
            }
        } else {
            let socket = UdpSocket::bind(SocketAddrV4::new(local, 0))
                .await
                .with_context(|| format!("binding a UDP socket on {local} for TURN"))?;
            Link::Udp(socket)
        };
        Ok(Self {
            client,
            server,
            link,
            broken: None,
        })
    }

    /// The TURN server.
    #[must_use]
    pub const fn server(&self) -> SocketAddrV4 {
        self.server
    }

    /// `udp` or `tcp`.
    #[must_use]
    pub const fn transport(&self) -> &'static str {
        self.client.transport().name()
    }

    /// Our relayed address while the allocation lives.
    #[must_use]
    pub fn relayed(&self) -> Option<SocketAddrV4> {
        self.client
            .is_allocated()
            .then(|| self.client.relayed())
            .flatten()
    }

    /// Sends what the client has due.
    ///
    /// # Errors
    /// A TCP write fails (a UDP send failure is left to the retransmissions).
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        for bytes in self.client.poll_transmit(Instant::now().into_std()) {
            self.write(&bytes).await?;
        }
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match &mut self.link {
            Link::Udp(socket) => {
                if let Err(e) = socket.send_to(bytes, self.server).await {
                    log::debug!("punch.turn_send_failed to={} error={e}", self.server);
                }
            }
            Link::Tcp { writer, .. } => {
                if let Some(why) = &self.broken {
                    bail!(
                        "the TCP connection to the TURN server {}: {why}",
                        self.server
                    );
                }
                writer.write_all(bytes).await.with_context(|| {
                    format!("writing to the TURN server {} over TCP", self.server)
                })?;
            }
        }
        Ok(())
    }

    /// The next message from the server: a datagram from it, or a frame of the TCP
    /// stream; never, once the stream broke (for `select!`).
    pub async fn next_frame(&mut self) -> io::Result<Vec<u8>> {
        if self.broken.is_some() {
            return std::future::pending().await;
        }
        match &mut self.link {
            Link::Tcp { frames, .. } => frames.recv().await.unwrap_or_else(|| {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "reader ended"))
            }),
            Link::Udp(socket) => {
                let mut buf = vec![0; 2048];
                loop {
                    match socket.recv_from(&mut buf).await {
                        Ok((n, SocketAddr::V4(from))) if from == self.server => {
                            buf.truncate(n);
                            return Ok(buf);
                        }
                        Ok(_) => {}
                        Err(e) if transient(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Marks the link broken (after [`Self::next_frame`] failed): nothing more is
    /// read, nor written over TCP.
    pub fn broke(&mut self, why: &io::Error) {
        self.broken = Some(why.to_string());
    }

    /// A message from the server: a peer's datagram, or `None`.
    pub fn handle(&mut self, bytes: &[u8]) -> Option<(SocketAddrV4, Vec<u8>)> {
        match self.client.handle(Instant::now().into_std(), bytes) {
            Received::Data { peer, data } => Some((peer, data)),
            Received::Consumed | Received::Dropped => None,
        }
    }

    /// Events of the client since the last call.
    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }

    /// Allocates, waiting until the allocation exists, fails or `within` passes.
    ///
    /// # Errors
    /// The server refused (the error says why: wrong password, quota, ...), did not
    /// answer, or the connection broke.
    pub async fn allocate(&mut self, within: Duration) -> anyhow::Result<Allocation> {
        let started = Instant::now();
        let deadline = started + within;
        self.client.allocate(started.into_std());
        loop {
            self.flush().await?;
            for event in self.events() {
                match event {
                    Event::Allocated { relayed, .. } => {
                        return Ok(Allocation {
                            server: self.server,
                            transport: self.transport(),
                            relayed,
                            took: started.elapsed(),
                        })
                    }
                    Event::Failed(e) => {
                        return Err(anyhow!(e)).with_context(|| {
                            format!("allocating on the TURN server {}", self.server)
                        })
                    }
                    _ => {}
                }
            }
            let wake = self
                .client
                .poll_timeout()
                .map_or(deadline, |t| Instant::from_std(t).min(deadline));
            if Instant::now() >= deadline {
                bail!(
                    "no allocation from the TURN server {} over {} within {:.1} s",
                    self.server,
                    self.transport().to_uppercase(),
                    within.as_secs_f64()
                );
            }
            match timeout_at(wake, self.next_frame()).await {
                Err(_) => {}
                Ok(Ok(frame)) => {
                    self.handle(&frame);
                }
                Ok(Err(e)) => {
                    self.broke(&e);
                    return Err(e).with_context(|| {
                        format!("receiving from the TURN server {}", self.server)
                    });
                }
            }
        }
    }

    /// Asks for permissions for `ips` (one request; an IP the server refuses fails
    /// only its own request).
    pub fn permit(&mut self, ips: &[Ipv4Addr]) {
        self.client
            .create_permission(Instant::now().into_std(), ips);
    }

    /// Sends `data` to `peer` through the relay.
    ///
    /// # Errors
    /// The TCP connection fails.
    pub async fn send_to(&mut self, peer: SocketAddrV4, data: &[u8]) -> anyhow::Result<()> {
        if let Some(bytes) = self.client.send_to(peer, data) {
            self.write(&bytes).await?;
        }
        Ok(())
    }

    /// Deletes the allocation (Refresh with LIFETIME 0), waiting at most
    /// [`CLOSE_WAIT`] for the answer.
    pub async fn close(&mut self) {
        if !self.client.is_allocated() {
            return;
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        self.client.close(Instant::now().into_std());
        while Instant::now() < deadline {
            if self.flush().await.is_err() {
                return;
            }
            if self.events().contains(&Event::Closed) {
                return;
            }
            let wake = self
                .client
                .poll_timeout()
                .map_or(deadline, |t| Instant::from_std(t).min(deadline));
            match timeout_at(wake, self.next_frame()).await {
                Ok(Ok(frame)) => {
                    self.handle(&frame);
                }
                Ok(Err(_)) => return,
                Err(_) => {}
            }
        }
    }
}
