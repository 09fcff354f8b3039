//! The hole-punching protocol's message codec: what peers say to the rendezvous
//! (`natgw rendezvous`) and to each other while punching (`natgw punch`). A typed view
//! over the bytes ([`Packet`]) and a plain representation ([`Repr`]) with `parse` and
//! `emit`, in the manner of smoltcp's `wire` module.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------+---------------+---------------+---------------+
//! |      'N'      |      'P'      |  version (3)  |     kind      |
//! +---------------+---------------+---------------+---------------+
//! |          body length          |      reserved (0, ignored)    |
//! +---------------+---------------+---------------+---------------+
//! |               transaction (requests, echoed) / sequence       |
//! +---------------+---------------+---------------+---------------+
//! |  body: fields of the kind, in order (below)                  ...
//! ```
//!
//! Over UDP one datagram is one message, and the body length must match it exactly.
//! Over TCP messages follow each other on the stream; the header's body length frames
//! them ([`frame_len`]). Body fields:
//!
//! - id: length (1 byte, 1..=32) + that many bytes of `[A-Za-z0-9._-]`
//! - endpoint: IPv4 address (4) + port (2), port and address not zero
//! - endpoint list: count (1 byte, at most [`MAX_PRIVATE`]) + endpoints
//! - learned endpoints: count (1 byte, at most [`MAX_MAPPED`]) + that many of how (1
//!   byte: 1 STUN, 2 PCP, 3 RELAY: a TURN relayed address) + endpoint
//! - session: 8 bytes the rendezvous chose for one pair of peers
//! - flags: 1 byte; bit 0 verified, bit 1 nominate, bit 2 done; others ignored
//! - punch transport: 1 byte; 0 the transport the message arrives on, 1 UDP, 2 TCP.
//!   A peer whose firewall drops UDP can talk to the rendezvous over TCP and still
//!   register (and ask) for UDP punching.
//! - credential: 1 byte, 0 none (the field ends there) or 1, then username (length, 1
//!   byte, 1..=[`MAX_USERNAME_LEN`], + that many printable ASCII bytes 0x21..=0x7e),
//!   nonce (length, 1 byte, 0..=[`MAX_NONCE_LEN`], + bytes; empty until the
//!   rendezvous sent a CHALLENGE) and a MAC ([`MAC_LEN`] bytes): HMAC-SHA1 keyed by
//!   the password over every byte of the message before the MAC (header included).
//!   The credential is always the last field, so the MAC is the message's last 20
//!   bytes ([`Repr::to_signed_bytes`], [`verify_mac`]). The password never travels.
//!
//! | kind | name | body |
//! | --- | --- | --- |
//! | 0x01 | REGISTER | id, punch transport, private endpoints, learned endpoints, credential |
//! | 0x02 | REGISTERED | public endpoint (the request's source), lifetime (2 bytes, s) |
//! | 0x03 | CONNECT | id, peer id, punch transport, credential |
//! | 0x04 | PEER | introduction (1 byte: 0 answer, 1 unsolicited), session, id, public, private endpoints, learned endpoints |
//! | 0x05 | UNKNOWN-PEER | peer id |
//! | 0x06 | ERROR | code (1 byte) |
//! | 0x07 | CHALLENGE | nonce (length, 1 byte, 1..=[`MAX_NONCE_LEN`], + bytes) |
//! | 0x10 | PROBE | session, from id, to id, flags |
//! | 0x11 | ACK | session, from id, to id, flags, observed endpoint (the probe's source) |
//!
//! ERROR codes: 1 bad request, 2 not registered, 3 unsupported version, 4 table full,
//! 5 authentication required (no credential), 6 wrong credential (the MAC matches no
//! secret), 7 credential expired, 8 the username's id is not the message's id, 9 the
//! username is not `<unix-expiry>:<id>`.
//!
//! Everything is length-checked: a message with bytes left over, a count or length
//! beyond its limit or an unknown kind does not parse.
//!
//! Version 2 replaced version 1's single optional mapped endpoint with the list of
//! learned endpoints (a peer may know one from STUN and one from PCP). Version 3 added
//! RELAY learned endpoints, the punch transport, the credential and CHALLENGE (see
//! `super::rendezvous` for the authentication exchange). The first byte
//! of every message is 'N' (0x4E, top bits 01), never a STUN message's (top bits 00,
//! RFC 8489 §5): the rendezvous answers both on one port (see `super::demux`).

use crate::wire::{get_u16, get_u32, set_u16, set_u32};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// First two bytes of every message: "NP" (natgw punch).
pub const MAGIC: [u8; 2] = *b"NP";
/// The protocol version this codec speaks.
pub const VERSION: u8 = 3;
/// Length of the header.
pub const HEADER_LEN: usize = 12;
/// Longest body accepted (the longest valid one is well below).
pub const MAX_BODY_LEN: usize = 512;
/// Longest peer id.
pub const MAX_ID_LEN: usize = 32;
/// Most private endpoints one peer may announce.
pub const MAX_PRIVATE: usize = 4;
/// Most learned (STUN, PCP, RELAY) endpoints one peer may announce.
pub const MAX_MAPPED: usize = 3;
/// Longest credential username.
pub const MAX_USERNAME_LEN: usize = 64;
/// Longest nonce.
pub const MAX_NONCE_LEN: usize = 32;
/// Length of a credential's MAC (HMAC-SHA1).
pub const MAC_LEN: usize = 20;
/// Length of a session token.
pub const SESSION_LEN: usize = 8;

/// A session token: chosen by the rendezvous for one pair of peers and carried in
/// every probe, so each peer knows the probes it gets are from the peer it was
/// introduced to.
pub type Session = [u8; SESSION_LEN];

/// Byte ranges of the header.
pub mod field {
    use crate::wire::Field;
    /// "NP".
    pub const MAGIC: Field = 0..2;
    /// Protocol version.
    pub const VERSION: usize = 2;
    /// Message kind.
    pub const KIND: usize = 3;
    /// Body length, big-endian.
    pub const LENGTH: Field = 4..6;
    /// Reserved: zero when sent, ignored when received.
    pub const RESERVED: Field = 6..8;
    /// Transaction id or sequence number, big-endian.
    pub const TRANSACTION: Field = 8..12;
}

/// Message kinds.
pub mod kind {
    /// Peer → rendezvous: here I am.
    pub const REGISTER: u8 = 0x01;
    /// Rendezvous → peer: registered; this is where your message came from.
    pub const REGISTERED: u8 = 0x02;
    /// Peer → rendezvous: introduce me to that peer.
    pub const CONNECT: u8 = 0x03;
    /// Rendezvous → peer: the other peer's endpoints (answer or introduction).
    pub const PEER: u8 = 0x04;
    /// Rendezvous → peer: that peer is not registered (yet).
    pub const UNKNOWN_PEER: u8 = 0x05;
    /// Rendezvous → peer: the request was refused.
    pub const ERROR: u8 = 0x06;
    /// Rendezvous → peer: repeat the request with this nonce in its credential.
    pub const CHALLENGE: u8 = 0x07;
    /// Peer → peer: can you hear me?
    pub const PROBE: u8 = 0x10;
    /// Peer → peer: yes, and your probe came from this endpoint.
    pub const ACK: u8 = 0x11;
}

/// Why bytes are not a message this codec accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the header or than a field needs.
    Truncated,
    /// The first two bytes are not "NP".
    BadMagic,
    /// A version this codec does not speak.
    UnsupportedVersion(u8),
    /// The body length field does not match the message.
    BadLength,
    /// The body is longer than [`MAX_BODY_LEN`].
    TooLong,
    /// A kind this codec does not know.
    UnknownKind(u8),
    /// An id that is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    BadId,
    /// An endpoint with address 0.0.0.0 or port 0.
    BadEndpoint,
    /// More private endpoints than [`MAX_PRIVATE`].
    TooManyEndpoints,
    /// A learned-endpoint kind other than 1, 2 or 3.
    BadMappedKind(u8),
    /// A punch transport other than 0, 1 or 2.
    BadTransport(u8),
    /// A credential that is malformed (presence byte, username or nonce).
    BadCredential,
    /// More learned endpoints than [`MAX_MAPPED`].
    TooManyMapped,
    /// An introduction flag other than 0 or 1.
    BadFlag,
    /// Bytes left over after the last field.
    TrailingBytes,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated"),
            Self::BadMagic => f.write_str("not a natgw punch message (bad magic)"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported version {v}"),
            Self::BadLength => f.write_str("body length does not match the message"),
            Self::TooLong => write!(f, "body longer than {MAX_BODY_LEN} bytes"),
            Self::UnknownKind(k) => write!(f, "unknown kind {k:#04x}"),
            Self::BadId => f.write_str("invalid id (use 1 to 32 of A-Z a-z 0-9 . _ -)"),
            Self::BadEndpoint => f.write_str("invalid endpoint (address or port zero)"),
            Self::TooManyEndpoints => write!(f, "more than {MAX_PRIVATE} private endpoints"),
            Self::BadMappedKind(k) => write!(f, "unknown learned-endpoint kind {k}"),
            Self::BadTransport(t) => write!(f, "unknown punch transport {t}"),
            Self::BadCredential => f.write_str("malformed credential"),
            Self::TooManyMapped => write!(f, "more than {MAX_MAPPED} learned endpoints"),
            Self::BadFlag => f.write_str("invalid introduction flag"),
            Self::TrailingBytes => f.write_str("bytes after the last field"),
        }
    }
}

impl std::error::Error for Error {}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// A peer's name: 1 to [`MAX_ID_LEN`] characters of `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(String);

impl PeerId {
    /// Checks and wraps an id.
    ///
    /// # Errors
    /// [`Error::BadId`] when it is empty, too long or has other characters.
    pub fn new(id: &str) -> Result<Self> {
        let valid = (1..=MAX_ID_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(id.to_owned()))
        } else {
            Err(Error::BadId)
        }
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PeerId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// How a peer learned an endpoint of its own that is not its rendezvous source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappedBy {
    /// A STUN Binding response.
    Stun,
    /// A PCP MAP response: an inbound mapping the gateway holds open.
    Pcp,
    /// A TURN allocation: the peer's relayed transport address.
    Relay,
}

impl MappedBy {
    const fn to_wire(self) -> u8 {
        match self {
            Self::Stun => 1,
            Self::Pcp => 2,
            Self::Relay => 3,
        }
    }
}

/// The transport a peer punches over, declared in REGISTER and CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PunchTransport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// A credential in REGISTER or CONNECT (see the module documentation).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// `<unix-expiry>:<peer id>` (coturn's `use-auth-secret` form).
    pub username: String,
    /// The nonce of the rendezvous's last CHALLENGE to this source, or empty.
    pub nonce: Vec<u8>,
    /// HMAC-SHA1 keyed by the password over the message before it; written by
    /// [`Repr::to_signed_bytes`].
    pub mac: [u8; MAC_LEN],
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("nonce_len", &self.nonce.len())
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A credential to be signed: `username`, `nonce`, the MAC still zero.
    #[must_use]
    pub fn unsigned(username: &str, nonce: &[u8]) -> Self {
        Self {
            username: username.to_owned(),
            nonce: nonce.to_vec(),
            mac: [0; MAC_LEN],
        }
    }

    /// Whether `username` fits the wire: 1..=[`MAX_USERNAME_LEN`] printable ASCII
    /// bytes, no spaces.
    #[must_use]
    pub fn valid_username(username: &str) -> bool {
        (1..=MAX_USERNAME_LEN).contains(&username.len())
            && username.bytes().all(|b| (0x21..=0x7e).contains(&b))
    }
}

/// Whether the last [`MAC_LEN`] bytes of `message` (a REGISTER or CONNECT with a
/// credential) are the HMAC-SHA1 under `password` of the bytes before them; checked
/// in constant time.
#[must_use]
pub fn verify_mac(message: &[u8], password: &str) -> bool {
    use hmac::Mac as _;
    let Some(split) = message.len().checked_sub(MAC_LEN) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(password.as_bytes()) else {
        return false;
    };
    mac.update(&message[..split]);
    mac.verify_slice(&message[split..]).is_ok()
}

/// An endpoint a peer learned for itself (STUN or PCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// How it was learned.
    pub by: MappedBy,
    /// The endpoint.
    pub endpoint: SocketAddrV4,
}

/// PROBE and ACK flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// The sender has verified a path to us (got an ACK).
    pub verified: bool,
    /// The sender (the controlling peer) chose the path this arrives on.
    pub nominate: bool,
    /// The sender has finished and will stop answering soon.
    pub done: bool,
}

impl Flags {
    const VERIFIED: u8 = 1;
    const NOMINATE: u8 = 2;
    const DONE: u8 = 4;

    const fn from_wire(b: u8) -> Self {
        Self {
            verified: b & Self::VERIFIED != 0,
            nominate: b & Self::NOMINATE != 0,
            done: b & Self::DONE != 0,
        }
    }

    const fn to_wire(self) -> u8 {
        (if self.verified { Self::VERIFIED } else { 0 })
            | (if self.nominate { Self::NOMINATE } else { 0 })
            | (if self.done { Self::DONE } else { 0 })
    }
}

/// ERROR codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request did not parse.
    BadRequest,
    /// CONNECT from an endpoint that has not registered that id.
    NotRegistered,
    /// The request's version is not spoken here.
    UnsupportedVersion,
    /// The rendezvous holds as many registrations as it will.
    TableFull,
    /// The rendezvous requires a credential and the request had none.
    AuthRequired,
    /// The credential's MAC matches none of the rendezvous's secrets.
    BadCredential,
    /// The credential's expiry time has passed.
    Expired,
    /// The id in the credential's username is not the request's id.
    IdMismatch,
    /// The username is not `<unix-expiry>:<id>`.
    BadUsername,
    /// A code this codec does not name.
    Other(u8),
}

impl ErrorCode {
    const fn from_wire(b: u8) -> Self {
        match b {
            1 => Self::BadRequest,
            2 => Self::NotRegistered,
            3 => Self::UnsupportedVersion,
            4 => Self::TableFull,
            5 => Self::AuthRequired,
            6 => Self::BadCredential,
            7 => Self::Expired,
            8 => Self::IdMismatch,
            9 => Self::BadUsername,
            other => Self::Other(other),
        }
    }

    const fn to_wire(self) -> u8 {
        match self {
            Self::BadRequest => 1,
            Self::NotRegistered => 2,
            Self::UnsupportedVersion => 3,
            Self::TableFull => 4,
            Self::AuthRequired => 5,
            Self::BadCredential => 6,
            Self::Expired => 7,
            Self::IdMismatch => 8,
            Self::BadUsername => 9,
            Self::Other(b) => b,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRequest => f.write_str("bad request"),
            Self::NotRegistered => f.write_str("not registered"),
            Self::UnsupportedVersion => f.write_str("unsupported version"),
            Self::TableFull => f.write_str("registration table full"),
            Self::AuthRequired => f.write_str("authentication required"),
            Self::BadCredential => f.write_str("wrong credential"),
            Self::Expired => f.write_str("expired"),
            Self::IdMismatch => f.write_str("the credential's id is not ours"),
            Self::BadUsername => f.write_str("username is not <unix-expiry>:<id>"),
            Self::Other(b) => write!(f, "error {b}"),
        }
    }
}

/// REGISTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    /// Who registers.
    pub id: PeerId,
    /// The transport it punches over; `None`: the one the message arrives on.
    pub punch: Option<PunchTransport>,
    /// Its own addresses on its LAN.
    pub private: Vec<SocketAddrV4>,
    /// Endpoints it learned for itself with STUN, PCP or TURN (at most
    /// [`MAX_MAPPED`]).
    pub mapped: Vec<Mapped>,
    /// Its credential, when the rendezvous requires one.
    pub credential: Option<Credential>,
}

/// REGISTERED.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// Where the REGISTER came from: the peer's public endpoint.
    pub public: SocketAddrV4,
    /// Seconds the registration lives without another message.
    pub lifetime_secs: u16,
}

/// CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// Who asks (must be registered from the request's source).
    pub id: PeerId,
    /// Whom to meet.
    pub peer: PeerId,
    /// The transport both punch over; `None`: the one the message arrives on.
    pub punch: Option<PunchTransport>,
    /// The asker's credential, when the rendezvous requires one.
    pub credential: Option<Credential>,
}

/// PEER: another peer's endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Sent because the other peer asked for us (not an answer to our CONNECT).
    pub introduction: bool,
    /// The pair's session token.
    pub session: Session,
    /// The other peer.
    pub id: PeerId,
    /// Its public endpoint, as the rendezvous saw it.
    pub public: SocketAddrV4,
    /// Its private endpoints.
    pub private: Vec<SocketAddrV4>,
    /// Its STUN-, PCP- and TURN-learned endpoints.
    pub mapped: Vec<Mapped>,
}

/// PROBE: sent between peers over every path being tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The pair's session token.
    pub session: Session,
    /// Sender.
    pub from: PeerId,
    /// Intended receiver.
    pub to: PeerId,
    /// Sender's state.
    pub flags: Flags,
}

/// ACK: the answer to a PROBE (same transaction number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The pair's session token.
    pub session: Session,
    /// Sender (the one who got the probe).
    pub from: PeerId,
    /// Receiver (the one who sent the probe).
    pub to: PeerId,
    /// Sender's state.
    pub flags: Flags,
    /// Where the probe came from, as the sender saw it.
    pub observed: SocketAddrV4,
}

/// Every message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// REGISTER.
    Register(Register),
    /// REGISTERED.
    Registered(Registered),
    /// CONNECT.
    Connect(Connect),
    /// PEER.
    Peer(PeerInfo),
    /// UNKNOWN-PEER: the peer asked for.
    UnknownPeer(PeerId),
    /// ERROR.
    Error(ErrorCode),
    /// CHALLENGE: the nonce to repeat the request with.
    Challenge(Vec<u8>),
    /// PROBE.
    Probe(Probe),
    /// ACK.
    Ack(Ack),
}

impl Message {
    /// The wire kind.
    #[must_use]
    pub const fn kind(&self) -> u8 {
        match self {
            Self::Register(_) => kind::REGISTER,
            Self::Registered(_) => kind::REGISTERED,
            Self::Connect(_) => kind::CONNECT,
            Self::Peer(_) => kind::PEER,
            Self::UnknownPeer(_) => kind::UNKNOWN_PEER,
            Self::Error(_) => kind::ERROR,
            Self::Challenge(_) => kind::CHALLENGE,
            Self::Probe(_) => kind::PROBE,
            Self::Ack(_) => kind::ACK,
        }
    }
}

/// A read/write view of one message in a buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on short buffers.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    ///
    /// # Errors
    /// As [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds exactly one message: a full header with the magic,
    /// and a body length that covers the rest of the buffer and is within
    /// [`MAX_BODY_LEN`]. The version is checked by [`Repr::parse`], so that a
    /// rendezvous can still answer a message of another version.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::BadMagic`], [`Error::TooLong`] or
    /// [`Error::BadLength`].
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if data[field::MAGIC] != MAGIC {
            return Err(Error::BadMagic);
        }
        let length = usize::from(self.body_len());
        if length > MAX_BODY_LEN {
            return Err(Error::TooLong);
        }
        if HEADER_LEN + length != data.len() {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field.
    #[must_use]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The kind field.
    #[must_use]
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }

    /// The body length field.
    #[must_use]
    pub fn body_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The transaction (or sequence) number.
    #[must_use]
    pub fn transaction(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::TRANSACTION)
    }

    /// The body.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes the header fields (magic, version, kind, body length, reserved zero,
    /// transaction).
    pub fn set_header(&mut self, kind: u8, body_len: u16, transaction: u32) {
        let data = self.buffer.as_mut();
        data[field::MAGIC].copy_from_slice(&MAGIC);
        data[field::VERSION] = VERSION;
        data[field::KIND] = kind;
        set_u16(data, field::LENGTH, body_len);
        data[field::RESERVED].fill(0);
        set_u32(data, field::TRANSACTION, transaction);
    }

    /// The body, writable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The total length of the message whose header starts `header` (for framing a TCP
/// stream): checks the magic and the body length limit only.
///
/// # Errors
/// [`Error::Truncated`], [`Error::BadMagic`] or [`Error::TooLong`].
pub fn frame_len(header: &[u8]) -> Result<usize> {
    if header.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    if header[field::MAGIC] != MAGIC {
        return Err(Error::BadMagic);
    }
    let length = usize::from(get_u16(header, field::LENGTH));
    if length > MAX_BODY_LEN {
        return Err(Error::TooLong);
    }
    Ok(HEADER_LEN + length)
}

/// A parsed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repr {
    /// Transaction (requests and their answers) or sequence number (probes and acks).
    pub transaction: u32,
    /// The message.
    pub message: Message,
}

impl Repr {
    /// Parses a checked packet.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`], [`Error::UnknownKind`] or any field error.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Self> {
        if packet.version() != VERSION {
            return Err(Error::UnsupportedVersion(packet.version()));
        }
        let mut r = Reader(packet.body());
        let message = match packet.kind() {
            kind::REGISTER => Message::Register(Register {
                id: r.id()?,
                punch: r.punch()?,
                private: r.endpoints()?,
                mapped: r.mapped()?,
                credential: r.credential()?,
            }),
            kind::REGISTERED => Message::Registered(Registered {
                public: r.endpoint()?,
                lifetime_secs: r.u16()?,
            }),
            kind::CONNECT => Message::Connect(Connect {
                id: r.id()?,
                peer: r.id()?,
                punch: r.punch()?,
                credential: r.credential()?,
            }),
            kind::PEER => Message::Peer(PeerInfo {
                introduction: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(Error::BadFlag),
                },
                session: r.session()?,
                id: r.id()?,
                public: r.endpoint()?,
                private: r.endpoints()?,
                mapped: r.mapped()?,
            }),
            kind::UNKNOWN_PEER => Message::UnknownPeer(r.id()?),
            kind::ERROR => Message::Error(ErrorCode::from_wire(r.u8()?)),
            kind::CHALLENGE => {
                let nonce = r.nonce()?;
                if nonce.is_empty() {
                    return Err(Error::BadCredential);
                }
                Message::Challenge(nonce)
            }
            kind::PROBE => Message::Probe(Probe {
                session: r.session()?,
                from: r.id()?,
                to: r.id()?,
                flags: Flags::from_wire(r.u8()?),
            }),
            kind::ACK => Message::Ack(Ack {
                session: r.session()?,
                from: r.id()?,
                to: r.id()?,
                flags: Flags::from_wire(r.u8()?),
                observed: r.endpoint()?,
            }),
            other => return Err(Error::UnknownKind(other)),
        };
        if !r.0.is_empty() {
            return Err(Error::TrailingBytes);
        }
        Ok(Self {
            transaction: packet.transaction(),
            message,
        })
    }

    /// Checks and parses `bytes` (one datagram or one frame).
    ///
    /// # Errors
    /// As [`Packet::check_len`] and [`Repr::parse`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::parse(&Packet::new_checked(bytes)?)
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(64);
        match &self.message {
            Message::Register(m) => {
                put_id(&mut w, &m.id);
                put_punch(&mut w, m.punch);
                put_endpoints(&mut w, &m.private);
                put_mapped(&mut w, &m.mapped);
                put_credential(&mut w, m.credential.as_ref());
            }
            Message::Registered(m) => {
                put_endpoint(&mut w, m.public);
                w.extend_from_slice(&m.lifetime_secs.to_be_bytes());
            }
            Message::Connect(m) => {
                put_id(&mut w, &m.id);
                put_id(&mut w, &m.peer);
                put_punch(&mut w, m.punch);
                put_credential(&mut w, m.credential.as_ref());
            }
            Message::Peer(m) => {
                w.push(u8::from(m.introduction));
                w.extend_from_slice(&m.session);
                put_id(&mut w, &m.id);
                put_endpoint(&mut w, m.public);
                put_endpoints(&mut w, &m.private);
                put_mapped(&mut w, &m.mapped);
            }
            Message::UnknownPeer(id) => put_id(&mut w, id),
            Message::Error(code) => w.push(code.to_wire()),
            Message::Challenge(nonce) => put_nonce(&mut w, nonce),
            Message::Probe(m) => {
                w.extend_from_slice(&m.session);
                put_id(&mut w, &m.from);
                put_id(&mut w, &m.to);
                w.push(m.flags.to_wire());
            }
            Message::Ack(m) => {
                w.extend_from_slice(&m.session);
                put_id(&mut w, &m.from);
                put_id(&mut w, &m.to);
                w.push(m.flags.to_wire());
                put_endpoint(&mut w, m.observed);
            }
        }
        w
    }

    /// Bytes [`Repr::emit`] writes.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body().len()
    }

    /// Writes the message into `packet`, whose buffer is [`Repr::buffer_len`] long.
    ///
    /// # Panics
    /// When the buffer is shorter, or the body would exceed [`MAX_BODY_LEN`] (it
    /// cannot with valid ids and at most [`MAX_PRIVATE`] endpoints).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let body = self.body();
        let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
        assert!(usize::from(len) <= MAX_BODY_LEN, "message body too long");
        packet.set_header(self.message.kind(), len, self.transaction);
        packet.body_mut()[..body.len()].copy_from_slice(&body);
    }

    /// The message as bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut packet = Packet::new_unchecked(vec![0; self.buffer_len()]);
        self.emit(&mut packet);
        packet.into_inner()
    }

    /// The message as bytes, its credential's MAC computed with `password` (a
    /// message without a credential is returned as [`Repr::to_bytes`] writes it).
    #[must_use]
    pub fn to_signed_bytes(&self, password: &str) -> Vec<u8> {
        use hmac::Mac as _;
        let mut bytes = self.to_bytes();
        let signed = matches!(
            &self.message,
            Message::Register(Register {
                credential: Some(_),
                ..
            }) | Message::Connect(Connect {
                credential: Some(_),
                ..
            })
        );
        if signed {
            let split = bytes.len() - MAC_LEN;
            // HMAC takes keys of any length.
            if let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(password.as_bytes()) {
                mac.update(&bytes[..split]);
                bytes[split..].copy_from_slice(&mac.finalize().into_bytes());
            }
        }
        bytes
    }
}

/// Reads body fields front to back, checking lengths.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(Error::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(get_u16(self.take(2)?, 0..2))
    }

    fn session(&mut self) -> Result<Session> {
        let mut s = [0; SESSION_LEN];
        s.copy_from_slice(self.take(SESSION_LEN)?);
        Ok(s)
    }

    fn id(&mut self) -> Result<PeerId> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > MAX_ID_LEN {
            return Err(Error::BadId);
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map_err(|_| Error::BadId)
            .and_then(PeerId::new)
    }

    fn endpoint(&mut self) -> Result<SocketAddrV4> {
        let b = self.take(6)?;
        let addr = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        let port = get_u16(b, 4..6);
        if addr.is_unspecified() || port == 0 {
            return Err(Error::BadEndpoint);
        }
        Ok(SocketAddrV4::new(addr, port))
    }

    fn endpoints(&mut self) -> Result<Vec<SocketAddrV4>> {
        let count = usize::from(self.u8()?);
        if count > MAX_PRIVATE {
            return Err(Error::TooManyEndpoints);
        }
        (0..count).map(|_| self.endpoint()).collect()
    }

    fn punch(&mut self) -> Result<Option<PunchTransport>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(PunchTransport::Udp)),
            2 => Ok(Some(PunchTransport::Tcp)),
            other => Err(Error::BadTransport(other)),
        }
    }

    fn nonce(&mut self) -> Result<Vec<u8>> {
        let len = usize::from(self.u8()?);
        if len > MAX_NONCE_LEN {
            return Err(Error::BadCredential);
        }
        Ok(self.take(len)?.to_vec())
    }

    fn credential(&mut self) -> Result<Option<Credential>> {
        match self.u8()? {
            0 => return Ok(None),
            1 => {}
            _ => return Err(Error::BadCredential),
        }
        let len = usize::from(self.u8()?);
        if len == 0 || len > MAX_USERNAME_LEN {
            return Err(Error::BadCredential);
        }
        let username = std::str::from_utf8(self.take(len)?)
            .ok()
            .filter(|u| Credential::valid_username(u))
            .ok_or(Error::BadCredential)?
            .to_owned();
        let nonce = self.nonce()?;
        let mut mac = [0; MAC_LEN];
        mac.copy_from_slice(self.take(MAC_LEN)?);
        Ok(Some(Credential {
            username,
            nonce,
            mac,
        }))
    }

    fn mapped(&mut self) -> Result<Vec<Mapped>> {
        let count = usize::from(self.u8()?);
        if count > MAX_MAPPED {
            return Err(Error::TooManyMapped);
        }
        (0..count)
            .map(|_| {
                let by = match self.u8()? {
                    1 => MappedBy::Stun,
                    2 => MappedBy::Pcp,
                    3 => MappedBy::Relay,
                    other => return Err(Error::BadMappedKind(other)),
                };
                Ok(Mapped {
                    by,
                    endpoint: self.endpoint()?,
                })
            })
            .collect()
    }
}

fn put_id(w: &mut Vec<u8>, id: &PeerId) {
    // PeerId guarantees 1..=32 bytes.
    w.push(u8::try_from(id.0.len()).unwrap_or(0));
    w.extend_from_slice(id.0.as_bytes());
}

fn put_punch(w: &mut Vec<u8>, punch: Option<PunchTransport>) {
    w.push(match punch {
        None => 0,
        Some(PunchTransport::Udp) => 1,
        Some(PunchTransport::Tcp) => 2,
    });
}

/// Writes at most [`MAX_NONCE_LEN`] bytes of `nonce`.
fn put_nonce(w: &mut Vec<u8>, nonce: &[u8]) {
    let nonce = &nonce[..nonce.len().min(MAX_NONCE_LEN)];
    w.push(u8::try_from(nonce.len()).unwrap_or(0));
    w.extend_from_slice(nonce);
}

/// Writes the credential field. A username that does not fit the wire is written
/// empty, which no rendezvous accepts (callers check with
/// [`Credential::valid_username`]).
fn put_credential(w: &mut Vec<u8>, credential: Option<&Credential>) {
    let Some(c) = credential else {
        w.push(0);
        return;
    };
    w.push(1);
    if Credential::valid_username(&c.username) {
        w.push(u8::try_from(c.username.len()).unwrap_or(0));
        w.extend_from_slice(c.username.as_bytes());
    } else {
        w.push(0);
    }
    put_nonce(w, &c.nonce);
    w.extend_from_slice(&c.mac);
}

fn put_endpoint(w: &mut Vec<u8>, e: SocketAddrV4) {
    w.extend_from_slice(&e.ip().octets());
    w.extend_from_slice(&e.port().to_be_bytes());
}

/// Writes at most [`MAX_PRIVATE`] endpoints (the rest are left out).
fn put_endpoints(w: &mut Vec<u8>, list: &[SocketAddrV4]) {
    let list = &list[..list.len().min(MAX_PRIVATE)];
    w.push(u8::try_from(list.len()).unwrap_or(0));
    for e in list {
        put_endpoint(w, *e);
    }
}

/// Writes at most [`MAX_MAPPED`] learned endpoints (the rest are left out).
fn put_mapped(w: &mut Vec<u8>, list: &[Mapped]) {
    let list = &list[..list.len().min(MAX_MAPPED)];
    w.push(u8::try_from(list.len()).unwrap_or(0));
    for m in list {
        w.push(m.by.to_wire());
        put_endpoint(w, m.endpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> PeerId {
        PeerId::new(s).unwrap()
    }

    fn ep(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    /// REGISTER from "a1", punch over the message's transport, private
    /// 10.1.0.2:40000, no learned endpoint, no credential, transaction 7.
    const REGISTER: [u8; 25] = [
        b'N', b'P', 3, 0x01, // magic, version, kind
        0, 13, 0, 0, // body length, reserved
        0, 0, 0, 7, // transaction
        2, b'a', b'1', // id
        0,    // punch transport: the message's
        1, 10, 1, 0, 2, 0x9c, 0x40, // one private endpoint
        0,    // no learned endpoint
        0,    // no credential
    ];

    /// REGISTER from "b" for UDP punching, no private endpoint, learned by STUN
    /// 192.0.2.1:4000, by PCP 192.0.2.1:4001 and a TURN relay 203.0.113.5:50000,
    /// no credential, transaction 1.
    const REGISTER_LEARNED: [u8; 39] = [
        b'N', b'P', 3, 0x01, // magic, version, kind
        0, 27, 0, 0, // body length, reserved
        0, 0, 0, 1, // transaction
        1, b'b', // id
        1,    // punch transport: UDP
        0,    // no private endpoint
        3,    // three learned endpoints
        1, 192, 0, 2, 1, 0x0f, 0xa0, // STUN
        2, 192, 0, 2, 1, 0x0f, 0xa1, // PCP
        3, 203, 0, 113, 5, 0xc3, 0x50, // RELAY
        0,    // no credential
    ];

    /// CONNECT "a" → "b", punch over TCP, credential username "9:a", nonce [1, 2], MAC
    /// under password "pw", transaction 5.
    fn connect_signed() -> Repr {
        Repr {
            transaction: 5,
            message: Message::Connect(Connect {
                id: id("a"),
                peer: id("b"),
                punch: Some(PunchTransport::Tcp),
                credential: Some(Credential::unsigned("9:a", &[1, 2])),
            }),
        }
    }

    #[test]
    fn register_parses_from_literal_bytes_and_emits_them_again() {
        let repr = Repr::decode(&REGISTER).unwrap();
        assert_eq!(
            repr,
            Repr {
                transaction: 7,
                message: Message::Register(Register {
                    id: id("a1"),
                    punch: None,
                    private: vec![ep([10, 1, 0, 2], 40000)],
                    mapped: Vec::new(),
                    credential: None,
                }),
            }
        );
        assert_eq!(repr.to_bytes(), REGISTER);
    }

    #[test]
    fn learned_endpoints_parse_from_literal_bytes_and_emit_them_again() {
        let repr = Repr::decode(&REGISTER_LEARNED).unwrap();
        let Message::Register(register) = &repr.message else {
            panic!("{repr:?}");
        };
        assert_eq!(
            register.mapped,
            [
                Mapped {
                    by: MappedBy::Stun,
                    endpoint: ep([192, 0, 2, 1], 4000),
                },
                Mapped {
                    by: MappedBy::Pcp,
                    endpoint: ep([192, 0, 2, 1], 4001),
                },
                Mapped {
                    by: MappedBy::Relay,
                    endpoint: ep([203, 0, 113, 5], 50000),
                },
            ]
        );
        assert_eq!(register.punch, Some(PunchTransport::Udp));
        assert_eq!(repr.to_bytes(), REGISTER_LEARNED);
        // A fourth would be one too many; emitting leaves it out rather than fail.
        let mut four = register.clone();
        four.mapped.push(four.mapped[0]);
        let bytes = Repr {
            transaction: 1,
            message: Message::Register(four),
        }
        .to_bytes();
        assert_eq!(bytes, REGISTER_LEARNED);
        let mut too_many = REGISTER_LEARNED.to_vec();
        too_many[16] = 4;
        assert_eq!(Repr::decode(&too_many), Err(Error::TooManyMapped));
        let mut kind_zero = REGISTER_LEARNED;
        kind_zero[17] = 0;
        assert_eq!(Repr::decode(&kind_zero), Err(Error::BadMappedKind(0)));
        let mut kind_four = REGISTER_LEARNED;
        kind_four[31] = 4;
        assert_eq!(Repr::decode(&kind_four), Err(Error::BadMappedKind(4)));
        let mut transport = REGISTER_LEARNED;
        transport[14] = 2;
        assert!(matches!(
            Repr::decode(&transport).unwrap().message,
            Message::Register(Register {
                punch: Some(PunchTransport::Tcp),
                ..
            })
        ));
        transport[14] = 3;
        assert_eq!(Repr::decode(&transport), Err(Error::BadTransport(3)));
    }

    #[test]
    fn credentials_parse_from_literal_bytes_and_sign_the_whole_message() {
        let repr = connect_signed();
        let bytes = repr.to_signed_bytes("pw");
        let body: &[u8] = &[
            1, b'a', 1, b'b', // ids
            2,    // punch transport: TCP
            1,    // credential
            3, b'9', b':', b'a', // username
            2, 1, 2, // nonce
        ];
        assert_eq!(
            &bytes[..12],
            &[b'N', b'P', 3, kind::CONNECT, 0, 33, 0, 0, 0, 0, 0, 5]
        );
        assert_eq!(&bytes[12..12 + body.len()], body);
        assert_eq!(bytes.len(), 12 + body.len() + MAC_LEN);
        // The MAC: HMAC-SHA1("pw", bytes before it), by Python's hmac module.
        assert_eq!(
            hex(&bytes[bytes.len() - MAC_LEN..]),
            "d1497b786f557303a4c132206a8ca1bd679da65a"
        );
        assert!(verify_mac(&bytes, "pw"));
        assert!(!verify_mac(&bytes, "pW"));
        // Any changed byte, header included, breaks it.
        for i in 0..bytes.len() - MAC_LEN {
            let mut changed = bytes.clone();
            changed[i] ^= 0x20;
            assert!(!verify_mac(&changed, "pw"), "byte {i}");
        }
        assert!(!verify_mac(&bytes[..10], "pw"));
        // It parses back with the MAC.
        let parsed = Repr::decode(&bytes).unwrap();
        let Message::Connect(Connect {
            credential: Some(c),
            ..
        }) = &parsed.message
        else {
            panic!("{parsed:?}");
        };
        assert_eq!(
            (c.username.as_str(), c.nonce.as_slice()),
            ("9:a", &[1u8, 2][..])
        );
        assert_eq!(&c.mac[..], &bytes[bytes.len() - MAC_LEN..]);
        assert_eq!(parsed.to_bytes(), bytes);
        // Signing a message without a credential changes nothing.
        let plain = Repr::decode(&REGISTER).unwrap();
        assert_eq!(plain.to_signed_bytes("pw"), REGISTER);
        // The Debug form shows no MAC.
        assert!(!format!("{c:?}").contains("mac"));
    }

    #[test]
    fn malformed_credentials_and_challenges_are_refused() {
        let good = connect_signed().to_signed_bytes("pw");
        let at = 12 + 4; // the punch transport
        let mut presence = good.clone();
        presence[at + 1] = 2;
        let mut empty_user = good.clone();
        empty_user[at + 2] = 0;
        let mut long_user = good.clone();
        long_user[at + 2] = 65;
        let mut space = good.clone();
        space[at + 3] = b' ';
        let mut long_nonce = good.clone();
        long_nonce[at + 6] = 33;
        let short_mac = {
            let mut b = good[..good.len() - 1].to_vec();
            b[5] -= 1;
            b
        };
        for (bytes, want) in [
            (&presence[..], Error::BadCredential),
            (&empty_user[..], Error::BadCredential),
            (&long_user[..], Error::BadCredential),
            (&space[..], Error::BadCredential),
            (&long_nonce[..], Error::BadCredential),
            (&short_mac[..], Error::Truncated),
        ] {
            assert_eq!(Repr::decode(bytes), Err(want), "{bytes:?}");
        }
        let challenge = Repr {
            transaction: 9,
            message: Message::Challenge(vec![7; 20]),
        };
        let bytes = challenge.to_bytes();
        assert_eq!(&bytes[..4], &[b'N', b'P', 3, kind::CHALLENGE]);
        assert_eq!(bytes.len(), 12 + 1 + 20);
        assert_eq!(Repr::decode(&bytes).unwrap(), challenge);
        let empty = Repr {
            transaction: 9,
            message: Message::Challenge(Vec::new()),
        };
        assert_eq!(Repr::decode(&empty.to_bytes()), Err(Error::BadCredential));
        // Unsigned usernames that do not fit are written empty, and do not parse.
        let mut bad = connect_signed();
        if let Message::Connect(c) = &mut bad.message {
            c.credential = Some(Credential::unsigned("has space:a", &[]));
        }
        assert_eq!(Repr::decode(&bad.to_bytes()), Err(Error::BadCredential));
        assert!(Credential::valid_username(&"9".repeat(64)));
        assert!(!Credential::valid_username(&"9".repeat(65)));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn probe_and_ack_carry_session_ids_and_flags() {
        let probe = Repr {
            transaction: 0xdead_beef,
            message: Message::Probe(Probe {
                session: *b"sessionX",
                from: id("a1"),
                to: id("b1"),
                flags: Flags {
                    verified: true,
                    nominate: false,
                    done: true,
                },
            }),
        };
        let bytes = probe.to_bytes();
        assert_eq!(&bytes[..4], &[b'N', b'P', 3, kind::PROBE]);
        assert_eq!(&bytes[8..12], &[0xde, 0xad, 0xbe, 0xef]);
        // session, "a1", "b1", flags = verified|done
        assert_eq!(&bytes[12..20], b"sessionX");
        assert_eq!(&bytes[20..], &[2, b'a', b'1', 2, b'b', b'1', 0b101]);
        assert_eq!(Repr::decode(&bytes).unwrap(), probe);

        let ack = Repr {
            transaction: 1,
            message: Message::Ack(Ack {
                session: [1; 8],
                from: id("b1"),
                to: id("a1"),
                flags: Flags::default(),
                observed: ep([192, 0, 2, 1], 40000),
            }),
        };
        assert_eq!(Repr::decode(&ack.to_bytes()).unwrap(), ack);
    }

    #[test]
    fn peer_info_round_trips_with_private_and_pcp_endpoints() {
        let peer = Repr {
            transaction: 3,
            message: Message::Peer(PeerInfo {
                introduction: true,
                session: [9; 8],
                id: id("b1.site-B_2"),
                public: ep([198, 51, 100, 1], 4000),
                private: vec![ep([10, 2, 0, 2], 4000), ep([10, 9, 0, 2], 4000)],
                mapped: vec![Mapped {
                    by: MappedBy::Pcp,
                    endpoint: ep([198, 51, 100, 1], 4001),
                }],
            }),
        };
        assert_eq!(Repr::decode(&peer.to_bytes()).unwrap(), peer);
        for message in [
            Message::Registered(Registered {
                public: ep([192, 0, 2, 1], 1),
                lifetime_secs: 30,
            }),
            Message::Connect(Connect {
                id: id("a"),
                peer: id("b"),
                punch: Some(PunchTransport::Udp),
                credential: None,
            }),
            Message::UnknownPeer(id("b")),
            Message::Error(ErrorCode::NotRegistered),
            Message::Error(ErrorCode::AuthRequired),
            Message::Error(ErrorCode::BadCredential),
            Message::Error(ErrorCode::Expired),
            Message::Error(ErrorCode::IdMismatch),
            Message::Error(ErrorCode::BadUsername),
            Message::Error(ErrorCode::Other(200)),
            Message::Challenge(vec![1; MAX_NONCE_LEN]),
        ] {
            let repr = Repr {
                transaction: 1,
                message,
            };
            assert_eq!(Repr::decode(&repr.to_bytes()).unwrap(), repr);
        }
    }

    #[test]
    fn malformed_messages_are_refused_with_the_reason() {
        let mut bad_magic = REGISTER;
        bad_magic[0] = b'X';
        let mut v2 = REGISTER;
        v2[2] = 2;
        let mut short_length = REGISTER;
        short_length[5] = 10;
        let mut unknown = REGISTER;
        unknown[3] = 0x7f;
        let mut bad_id = REGISTER;
        bad_id[14] = b' ';
        let mut zero_id = REGISTER;
        zero_id[12] = 0;
        let mut zero_port = REGISTER;
        zero_port[21] = 0;
        zero_port[22] = 0;
        let mut too_many = REGISTER;
        too_many[16] = 5;
        let mut bad_mapped = REGISTER.to_vec();
        bad_mapped[5] = 20;
        bad_mapped[23] = 1;
        bad_mapped.splice(24..24, [9, 192, 0, 2, 1, 0, 1]);
        let mut no_credential_byte = REGISTER.to_vec();
        no_credential_byte.pop();
        no_credential_byte[5] = 12;
        let mut trailing = REGISTER.to_vec();
        trailing.push(0);
        trailing[5] = 14;
        let mut too_long = REGISTER.to_vec();
        too_long[4] = 0xff;
        for (bytes, want) in [
            (&REGISTER[..11], Error::Truncated),
            (&bad_magic[..], Error::BadMagic),
            (&v2[..], Error::UnsupportedVersion(2)),
            (&short_length[..], Error::BadLength),
            (&unknown[..], Error::UnknownKind(0x7f)),
            (&bad_id[..], Error::BadId),
            (&zero_id[..], Error::BadId),
            (&zero_port[..], Error::BadEndpoint),
            (&too_many[..], Error::TooManyEndpoints),
            (&bad_mapped[..], Error::BadMappedKind(9)),
            (&no_credential_byte[..], Error::Truncated),
            (&trailing[..], Error::TrailingBytes),
            (&too_long[..], Error::TooLong),
        ] {
            assert_eq!(Repr::decode(bytes), Err(want), "{bytes:?}");
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(PeerId::new("site-a.host_1").is_ok());
        assert!(PeerId::new(&"x".repeat(32)).is_ok());
        for bad in ["", "a b", "é", "a/b", &"x".repeat(33)] {
            assert_eq!(PeerId::new(bad), Err(Error::BadId), "{bad:?}");
        }
    }

    #[test]
    fn frames_are_delimited_by_the_header() {
        assert_eq!(frame_len(&REGISTER[..HEADER_LEN]), Ok(REGISTER.len()));
        assert_eq!(frame_len(&REGISTER[..4]), Err(Error::Truncated));
        assert_eq!(frame_len(b"GET / HTTP/1.1\r\n"), Err(Error::BadMagic));
        let mut long = REGISTER;
        long[4] = 0x10;
        assert_eq!(frame_len(&long), Err(Error::TooLong));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Every prefix and a deterministic stream of single-byte corruptions of valid
        // messages: parse must return, never panic.
        let samples = [
            REGISTER.to_vec(),
            REGISTER_LEARNED.to_vec(),
            connect_signed().to_signed_bytes("pw"),
            Repr {
                transaction: 1,
                message: Message::Ack(Ack {
                    session: [0; 8],
                    from: id("a"),
                    to: id("b"),
                    flags: Flags::default(),
                    observed: ep([1, 2, 3, 4], 5),
                }),
            }
            .to_bytes(),
        ];
        let mut x: u32 = 0x1234_5678;
        for sample in &samples {
            for n in 0..=sample.len() {
                let _ = Repr::decode(&sample[..n]);
            }
            for _ in 0..5000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let mut bytes = sample.clone();
                let i = x as usize % bytes.len();
                bytes[i] = (x >> 8) as u8;
                let _ = Repr::decode(&bytes);
            }
        }
    }
}
