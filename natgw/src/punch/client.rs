//! A peer's conversation with the rendezvous, over a UDP socket (the one that will
//! punch) or a TCP connection (from the port that will punch): REGISTER until
//! REGISTERED, then CONNECT until the peer's endpoints arrive — as the answer, or as an
//! introduction because the peer asked for us first.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

use super::wire::{
    self, Connect, ErrorCode, Message, PeerId, PeerInfo, Register, Registered, Repr, HEADER_LEN,
};

/// First wait for an answer to REGISTER; doubles up to [`MAX_RTO`].
const INITIAL_RTO: Duration = Duration::from_millis(250);
/// Longest wait between two REGISTERs.
const MAX_RTO: Duration = Duration::from_secs(1);
/// Gap between CONNECTs while the peer is not there.
const CONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// A way to talk to the rendezvous.
pub trait Channel {
    /// Sends one message.
    fn send(&mut self, bytes: &[u8]) -> impl std::future::Future<Output = io::Result<()>> + Send;
    /// The next message from the rendezvous (anything else is skipped).
    fn recv(&mut self) -> impl std::future::Future<Output = io::Result<Vec<u8>>> + Send;
    /// "UDP" or "TCP", for messages.
    fn name(&self) -> &'static str;
}

/// The punching UDP socket, talking to the rendezvous.
pub struct UdpChannel<'a> {
    /// The socket.
    pub socket: &'a UdpSocket,
    /// The rendezvous.
    pub server: SocketAddrV4,
}

impl Channel for UdpChannel<'_> {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.socket.send_to(bytes, self.server).await.map(drop)
    }

    async fn recv(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = [0; 2048];
        loop {
            match self.socket.recv_from(&mut buf).await {
                Ok((n, SocketAddr::V4(from))) if from == self.server => {
                    return Ok(buf[..n].to_vec())
                }
                // Early probes from the peer and the like: not for this conversation.
                Ok(_) => {}
                // An ICMP error about an earlier datagram (e.g. port unreachable while
                // the rendezvous starts): the retransmissions take care of it.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn name(&self) -> &'static str {
        "UDP"
    }
}

/// A TCP connection to the rendezvous; messages are framed by their headers.
pub struct TcpChannel {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
}

impl TcpChannel {
    /// Wraps a connected stream.
    #[must_use]
    pub fn new(stream: TcpStream) -> Self {
        let (reader, writer) = stream.into_split();
        Self { reader, writer }
    }
}

impl Channel for TcpChannel {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await
    }

    async fn recv(&mut self) -> io::Result<Vec<u8>> {
        read_frame(&mut self.reader).await
    }

    fn name(&self) -> &'static str {
        "TCP"
    }
}

/// Reads one message from a stream (header, then the body it announces).
///
/// # Errors
/// End of stream (`UnexpectedEof`), a read error, or a header that is not ours
/// (`InvalidData`: the stream cannot be resynchronised).
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut frame = vec![0; HEADER_LEN];
    reader.read_exact(&mut frame).await?;
    let len = wire::frame_len(&frame).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    frame.resize(len, 0);
    reader.read_exact(&mut frame[HEADER_LEN..]).await?;
    Ok(frame)
}

/// Registers `register` and returns what the rendezvous saw, retransmitting over UDP
/// (250 ms, doubling to 1 s) until `within` has passed.
///
/// # Errors
/// No answer in time, a refusal, or a socket error.
pub async fn register<C: Channel>(
    channel: &mut C,
    server: SocketAddrV4,
    register: &Register,
    within: Duration,
) -> anyhow::Result<Registered> {
    let transaction = transaction();
    let request = Repr {
        transaction,
        message: Message::Register(register.clone()),
    }
    .to_bytes();
    let started = Instant::now();
    let deadline = started + within;
    let mut rto = INITIAL_RTO;
    let mut sent = 0;
    while Instant::now() < deadline {
        channel
            .send(&request)
            .await
            .with_context(|| format!("sending REGISTER to the rendezvous {server}"))?;
        sent += 1;
        let wait_until = (Instant::now() + rto).min(deadline);
        rto = (rto * 2).min(MAX_RTO);
        loop {
            let Ok(received) = timeout_at(wait_until, channel.recv()).await else {
                break;
            };
            let bytes = received.with_context(|| {
                format!(
                    "receiving from the rendezvous {server} over {}",
                    channel.name()
                )
            })?;
            match Repr::decode(&bytes) {
                Ok(Repr {
                    transaction: t,
                    message: Message::Registered(registered),
                }) if t == transaction => return Ok(registered),
                Ok(Repr {
                    transaction: t,
                    message: Message::Error(code),
                }) if t == transaction => {
                    bail!("the rendezvous {server} refused to register us: {code}")
                }
                _ => {}
            }
        }
    }
    bail!(
        "no answer from the rendezvous at {server} ({sent} REGISTER over {} in {:.1} s): is \
         `natgw rendezvous --listen {server}` running there, and can this host reach it?",
        channel.name(),
        started.elapsed().as_secs_f64()
    )
}

/// Asks for `peer` every 500 ms until its endpoints arrive (answer or introduction)
/// or `deadline` passes; re-registers if the rendezvous forgot us. Returns the peer's
/// endpoints.
///
/// # Errors
/// The peer did not show up in time, a refusal, or a socket error.
pub async fn find_peer<C: Channel>(
    channel: &mut C,
    server: SocketAddrV4,
    register: &Register,
    peer: &PeerId,
    deadline: Instant,
) -> anyhow::Result<PeerInfo> {
    let started = Instant::now();
    let transaction = transaction();
    let connect = Repr {
        transaction,
        message: Message::Connect(Connect {
            id: register.id.clone(),
            peer: peer.clone(),
        }),
    }
    .to_bytes();
    let reregister = Repr {
        transaction,
        message: Message::Register(register.clone()),
    }
    .to_bytes();
    let mut unknown = 0u32;
    while Instant::now() < deadline {
        channel
            .send(&connect)
            .await
            .with_context(|| format!("sending CONNECT to the rendezvous {server}"))?;
        let wait_until = (Instant::now() + CONNECT_INTERVAL).min(deadline);
        loop {
            let Ok(received) = timeout_at(wait_until, channel.recv()).await else {
                break;
            };
            let bytes = received.with_context(|| {
                format!(
                    "receiving from the rendezvous {server} over {}",
                    channel.name()
                )
            })?;
            let Ok(repr) = Repr::decode(&bytes) else {
                continue;
            };
            match repr.message {
                // An introduction may answer nothing of ours; an answer must be ours.
                Message::Peer(info)
                    if info.id == *peer
                        && (info.introduction || repr.transaction == transaction) =>
                {
                    return Ok(info)
                }
                Message::UnknownPeer(_) if repr.transaction == transaction => unknown += 1,
                Message::Error(ErrorCode::NotRegistered) if repr.transaction == transaction => {
                    // The rendezvous restarted or expired us: register again.
                    channel
                        .send(&reregister)
                        .await
                        .with_context(|| format!("sending REGISTER to the rendezvous {server}"))?;
                }
                Message::Error(code) if repr.transaction == transaction => {
                    bail!("the rendezvous {server} refused our CONNECT: {code}")
                }
                _ => {}
            }
        }
    }
    bail!(
        "peer {peer} never showed up at the rendezvous {server} within {:.1} s (it said \
         {unknown} times that {peer} is not registered over {}): start `natgw punch --id \
         {peer} --peer {}` there with the same rendezvous{}",
        started.elapsed().as_secs_f64(),
        channel.name(),
        register.id,
        if channel.name() == "TCP" {
            " and --tcp"
        } else {
            ""
        }
    )
}

/// A random transaction number.
fn transaction() -> u32 {
    // The low half of 64 random bits.
    (super::random_u64() & u64::from(u32::MAX)) as u32
}
