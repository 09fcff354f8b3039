//! A peer's conversation with the rendezvous, over a UDP socket (the one that will
//! punch) or a TCP connection (from the port that will punch): REGISTER until
//! REGISTERED, then CONNECT until the peer's endpoints arrive — as the answer, or as an
//! introduction because the peer asked for us first. Over TCP the connection also
//! carries a STUN Binding exchange ([`TcpChannel::stun`]) before the registration.
//!
//! With a credential ([`Credential`], `--auth-secret` or `--auth-user`) every REGISTER
//! and CONNECT carries it, signed with the password ([`Signer`]). The first one has no
//! nonce; the rendezvous answers CHALLENGE with one, and the request is sent again at
//! once with it (and every later one too, until the rendezvous challenges again
//! because the nonce aged). A refusal ends the run with the reason ([`Refused`]).

use std::fmt;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use super::report::{stage, Report};
use super::{Credential, Options, REGISTER_WAIT};
use crate::services::frames::read_frame;
use natgw_proto::punch::demux::Frame;
use natgw_proto::punch::wire::{
    self, Connect, ErrorCode, Message, PeerId, PeerInfo, Register, Registered, Repr,
};
use natgw_proto::stun::client::{binding_request, interpret, random_transaction_id, Seen};
use natgw_proto::stun::wire::ChangeRequest;

/// Frames read ahead from a TCP connection.
const TCP_QUEUE: usize = 16;

/// First wait for an answer to REGISTER; doubles up to [`MAX_RTO`].
const INITIAL_RTO: Duration = Duration::from_millis(250);
/// Longest wait between two REGISTERs.
const MAX_RTO: Duration = Duration::from_secs(1);
/// Gap between CONNECTs while the peer is not there.
const CONNECT_INTERVAL: Duration = Duration::from_millis(500);
/// CHALLENGEs in a row (without another answer in between) before giving up.
const MAX_CHALLENGES: u32 = 3;

/// The rendezvous refused a request: ERROR with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The rendezvous.
    pub server: SocketAddrV4,
    /// REGISTER or CONNECT.
    pub request: &'static str,
    /// Its reason.
    pub code: ErrorCode,
}

impl Refused {
    /// The reason as a name for the JSON report: `authentication-required`,
    /// `wrong-credential`, `expired`, `id-mismatch`, `bad-username`, `not-registered`,
    /// `table-full`, `bad-request`, `unsupported-version` or `error-N`.
    #[must_use]
    pub fn reason(&self) -> String {
        match self.code {
            ErrorCode::BadRequest => "bad-request".to_owned(),
            ErrorCode::NotRegistered => "not-registered".to_owned(),
            ErrorCode::UnsupportedVersion => "unsupported-version".to_owned(),
            ErrorCode::TableFull => "table-full".to_owned(),
            ErrorCode::AuthRequired => "authentication-required".to_owned(),
            ErrorCode::BadCredential => "wrong-credential".to_owned(),
            ErrorCode::Expired => "expired".to_owned(),
            ErrorCode::IdMismatch => "id-mismatch".to_owned(),
            ErrorCode::BadUsername => "bad-username".to_owned(),
            ErrorCode::Other(n) => format!("error-{n}"),
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = self.server;
        match self.code {
            ErrorCode::AuthRequired => write!(
                f,
                "the rendezvous {server} requires authentication: give --auth-secret or \
                 --auth-user"
            ),
            ErrorCode::BadCredential
            | ErrorCode::Expired
            | ErrorCode::IdMismatch
            | ErrorCode::BadUsername => write!(
                f,
                "the rendezvous {server} refused our credential: {}",
                self.code
            ),
            code => write!(
                f,
                "the rendezvous {server} refused our {}: {code}",
                self.request
            ),
        }
    }
}

impl std::error::Error for Refused {}

/// Puts our credential, with the rendezvous's latest nonce, into REGISTERs and
/// CONNECTs and signs them.
#[derive(Debug, Default)]
pub struct Signer {
    credential: Option<Credential>,
    nonce: Vec<u8>,
    challenges: u32,
}

impl Signer {
    /// A signer for `credential`; one that adds nothing without it.
    #[must_use]
    pub fn new(credential: Option<Credential>) -> Self {
        Self {
            credential,
            nonce: Vec::new(),
            challenges: 0,
        }
    }

    /// `message` as bytes, with our credential when we have one.
    #[must_use]
    pub fn bytes(&self, transaction: u32, mut message: Message) -> Vec<u8> {
        let Some(credential) = &self.credential else {
            return Repr {
                transaction,
                message,
            }
            .to_bytes();
        };
        let field = Some(wire::Credential::unsigned(
            &credential.username,
            &self.nonce,
        ));
        match &mut message {
            Message::Register(m) => m.credential = field,
            Message::Connect(m) => m.credential = field,
            _ => {}
        }
        Repr {
            transaction,
            message,
        }
        .to_signed_bytes(&credential.password)
    }

    /// Takes the nonce of a CHALLENGE.
    ///
    /// # Errors
    /// We have no credential to repeat the request with, or the rendezvous keeps
    /// challenging.
    pub fn challenged(&mut self, server: SocketAddrV4, nonce: Vec<u8>) -> anyhow::Result<()> {
        if self.credential.is_none() {
            bail!(Refused {
                server,
                request: "request",
                code: ErrorCode::AuthRequired,
            });
        }
        self.challenges += 1;
        if self.challenges > MAX_CHALLENGES {
            bail!(
                "the rendezvous {server} challenged our credential {} times in a row: it \
                 does not take its own nonces back (is another rendezvous answering on \
                 that address, or does the path change our source port?)",
                self.challenges
            );
        }
        self.nonce = nonce;
        Ok(())
    }

    /// An answer other than a CHALLENGE arrived.
    fn answered(&mut self) {
        self.challenges = 0;
    }
}

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

/// A TCP connection to the rendezvous (or to a STUN server); messages are framed by
/// their headers. A task reads the frames into a queue, so that a wait for the next
/// one can time out without losing half a frame.
pub struct TcpChannel {
    frames: mpsc::Receiver<io::Result<Frame>>,
    writer: OwnedWriteHalf,
    reader: JoinHandle<()>,
}

impl TcpChannel {
    /// Wraps a connected stream.
    #[must_use]
    pub fn new(stream: TcpStream) -> Self {
        let (mut reader, writer) = stream.into_split();
        let (tx, frames) = mpsc::channel(TCP_QUEUE);
        let reader = tokio::spawn(async move {
            loop {
                let frame = read_frame(&mut reader).await;
                let end = frame.is_err();
                if tx.send(frame).await.is_err() || end {
                    return;
                }
            }
        });
        Self {
            frames,
            writer,
            reader,
        }
    }

    /// The next frame of either protocol.
    async fn next(&mut self) -> io::Result<Frame> {
        self.frames.recv().await.unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed",
            ))
        })
    }

    /// One STUN Binding transaction on this connection (RFC 8489 §6.2.2: over TCP the
    /// request is sent once and the answer is awaited, here at most `wait`). `server`
    /// is the connection's remote end, named in the result.
    ///
    /// # Errors
    /// Sending fails, the connection closes or breaks framing before an answer.
    pub async fn stun(&mut self, server: SocketAddrV4, wait: Duration) -> anyhow::Result<Seen> {
        let transaction_id = random_transaction_id().context("reading /dev/urandom")?;
        let started = Instant::now();
        self.writer
            .write_all(&binding_request(transaction_id, ChangeRequest::default()))
            .await
            .with_context(|| format!("sending a STUN Binding request to {server} over TCP"))?;
        loop {
            match timeout_at(started + wait, self.next()).await {
                Err(_) => {
                    return Ok(Seen::Timeout {
                        transmissions: 1,
                        waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    })
                }
                Ok(Err(e)) => {
                    return Err(e).with_context(|| {
                        format!("waiting for the STUN answer of {server} over TCP")
                    })
                }
                Ok(Ok(Frame::Stun(bytes))) => {
                    if let Some(seen) = interpret(&bytes, server, &transaction_id) {
                        return Ok(seen);
                    }
                }
                Ok(Ok(Frame::Punch(_))) => {}
            }
        }
    }
}

impl Drop for TcpChannel {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Channel for TcpChannel {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await
    }

    async fn recv(&mut self) -> io::Result<Vec<u8>> {
        loop {
            // A STUN answer that came too late for [`TcpChannel::stun`] is skipped.
            if let Frame::Punch(bytes) = self.next().await? {
                return Ok(bytes);
            }
        }
    }

    fn name(&self) -> &'static str {
        "TCP"
    }
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
    signer: &mut Signer,
    within: Duration,
) -> anyhow::Result<Registered> {
    let transaction = transaction();
    let started = Instant::now();
    let deadline = started + within;
    let mut rto = INITIAL_RTO;
    let mut sent = 0;
    let mut send_now = true;
    let mut wait_until = started;
    while Instant::now() < deadline {
        if send_now || Instant::now() >= wait_until {
            let request = signer.bytes(transaction, Message::Register(register.clone()));
            channel
                .send(&request)
                .await
                .with_context(|| format!("sending REGISTER to the rendezvous {server}"))?;
            sent += 1;
            if !send_now {
                rto = (rto * 2).min(MAX_RTO);
            }
            send_now = false;
            wait_until = (Instant::now() + rto).min(deadline);
        }
        while let Some(repr) = next_message(channel, server, wait_until).await? {
            match repr {
                Repr {
                    transaction: t,
                    message: Message::Registered(registered),
                } if t == transaction => {
                    signer.answered();
                    return Ok(registered);
                }
                Repr {
                    transaction: t,
                    message: Message::Challenge(nonce),
                } if t == transaction => {
                    // Again at once, with the nonce.
                    signer.challenged(server, nonce)?;
                    send_now = true;
                    break;
                }
                Repr {
                    transaction: t,
                    message: Message::Error(code),
                } if t == transaction => bail!(Refused {
                    server,
                    request: "REGISTER",
                    code
                }),
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
    signer: &mut Signer,
    peer: &PeerId,
    deadline: Instant,
) -> anyhow::Result<PeerInfo> {
    let started = Instant::now();
    let transaction = transaction();
    let connect = Message::Connect(Connect {
        id: register.id.clone(),
        peer: peer.clone(),
        punch: register.punch,
        credential: None,
    });
    let mut unknown = 0u32;
    // What to send again at once after a CHALLENGE: the CONNECT or a REGISTER.
    let mut repeat = None;
    'ask: while Instant::now() < deadline {
        let mut last_sent = repeat.take().unwrap_or_else(|| connect.clone());
        let what = name(&last_sent);
        channel
            .send(&signer.bytes(transaction, last_sent.clone()))
            .await
            .with_context(|| format!("sending {what} to the rendezvous {server}"))?;
        let wait_until = (Instant::now() + CONNECT_INTERVAL).min(deadline);
        while let Some(repr) = next_message(channel, server, wait_until).await? {
            match repr.message {
                // An introduction may answer nothing of ours; an answer must be ours.
                Message::Peer(info)
                    if info.id == *peer
                        && (info.introduction || repr.transaction == transaction) =>
                {
                    return Ok(info)
                }
                Message::UnknownPeer(_) if repr.transaction == transaction => {
                    signer.answered();
                    unknown += 1;
                }
                Message::Registered(_) if repr.transaction == transaction => signer.answered(),
                Message::Challenge(nonce) if repr.transaction == transaction => {
                    signer.challenged(server, nonce)?;
                    repeat = Some(last_sent);
                    continue 'ask;
                }
                Message::Error(ErrorCode::NotRegistered) if repr.transaction == transaction => {
                    // The rendezvous restarted or expired us: register again.
                    signer.answered();
                    last_sent = Message::Register(register.clone());
                    channel
                        .send(&signer.bytes(transaction, last_sent.clone()))
                        .await
                        .with_context(|| format!("sending REGISTER to the rendezvous {server}"))?;
                }
                Message::Error(code) if repr.transaction == transaction => bail!(Refused {
                    server,
                    request: name(&last_sent),
                    code
                }),
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

/// The next message from the rendezvous that decodes, or `None` once `until` has
/// passed.
async fn next_message<C: Channel>(
    channel: &mut C,
    server: SocketAddrV4,
    until: Instant,
) -> anyhow::Result<Option<Repr>> {
    loop {
        let Ok(received) = timeout_at(until, channel.recv()).await else {
            return Ok(None);
        };
        let bytes = received.with_context(|| {
            format!(
                "receiving from the rendezvous {server} over {}",
                channel.name()
            )
        })?;
        if let Ok(repr) = Repr::decode(&bytes) {
            return Ok(Some(repr));
        }
    }
}

/// Registers `register` and waits for the peer, recording both in `report`. Returns
/// the peer's endpoints, when we started asking for them and when they arrived.
///
/// # Errors
/// As [`register`] and [`find_peer`].
pub async fn meet<C: Channel>(
    channel: &mut C,
    options: &Options,
    register: &Register,
    report: &mut Report,
) -> anyhow::Result<(PeerInfo, Instant, Instant)> {
    let mut signer = Signer::new(options.credential.clone());
    let registered = self::register(
        channel,
        options.rendezvous,
        register,
        &mut signer,
        REGISTER_WAIT.min(options.timeout),
    )
    .await?;
    report.registered(registered.public);
    report.stage = Some(stage::WAITING_FOR_PEER);
    let asked = Instant::now();
    let peer = find_peer(
        channel,
        options.rendezvous,
        register,
        &mut signer,
        &options.peer,
        asked + options.timeout,
    )
    .await?;
    let introduced_at = Instant::now();
    report.peer_found(&peer, introduced_at - asked);
    Ok((peer, asked, introduced_at))
}

/// REGISTER or CONNECT, for messages.
const fn name(message: &Message) -> &'static str {
    match message {
        Message::Register(_) => "REGISTER",
        _ => "CONNECT",
    }
}

/// A random transaction number.
fn transaction() -> u32 {
    // The low half of 64 random bits.
    (natgw_proto::util::rng::random_u64() & u64::from(u32::MAX)) as u32
}
