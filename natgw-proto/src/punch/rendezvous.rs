//! The rendezvous engine: a pure state machine in the manner of quinn-proto — a
//! message, where it came from and the time in; messages to send out — with no sockets
//! or timers, so every rule below is unit-tested. `server` runs it on UDP and TCP.
//!
//! What it does:
//!
//! - REGISTER records a peer under its id and punch transport (declared in the
//!   message, or else the one it arrived on: a peer may talk TCP to the rendezvous and
//!   punch UDP); answers always go back to where the message came from (the UDP
//!   source or the TCP connection). The source the message came
//!   from is the peer's public endpoint (what its NAT mapped it to), kept with the
//!   private and STUN/PCP-learned endpoints the peer announced. REGISTERED tells the
//!   peer that public endpoint. A registration lives [`Config::lifetime`] after the peer's last
//!   message; a REGISTER of the same id from another endpoint replaces it.
//! - CONNECT from a registered peer (same id, same source) for another peer of the same
//!   punch transport answers PEER with the other's endpoints and sends the other one a PEER
//!   introduction with the asker's, so both start punching at the same moment. Both
//!   get the same session token, derived from a secret and the two registrations, so
//!   repeated CONNECTs agree. An unknown peer gets UNKNOWN-PEER; the asker retries.
//! - Over UDP no answer is larger than [`AMPLIFICATION_FACTOR`] times the message that
//!   caused it, whoever it goes to (a spoofed CONNECT could otherwise make the
//!   rendezvous send a large PEER to a victim): PEER messages leave out private, then
//!   STUN/PCP-learned, then TURN relayed endpoints until they fit (`trimmed`); the
//!   public endpoint and the session always fit.
//! - Anything else is counted and dropped: malformed messages (answered with ERROR
//!   when at least the header parsed, which costs no more than the request), other
//!   versions (ERROR unsupported-version), unexpected kinds (silence).
//!
//! STUN Binding requests on the same port never reach this engine: `server` hands
//! them to the STUN responder (`crate::stun::responder`) by their first byte
//! (`super::demux`).
//!
//! The rendezvous only introduces; it never relays. Peers' probes go directly between
//! their NATs, which is what the counters (and the integration tests) show.
//!
//! # Authentication
//!
//! Without [`Auth`] the rendezvous is open: anyone can register any id and look up
//! any peer, and anyone who can send from a peer's public endpoint can speak for it.
//! With [`Auth`] (one or more shared secrets) every REGISTER and CONNECT must carry a
//! credential in coturn's `use-auth-secret` form: username `<unix-expiry>:<peer id>`,
//! password `base64(HMAC-SHA1(secret, username))` ([`crate::turn::auth::rest_password`]),
//! computed by whoever holds the secret. The password never travels; the request
//! carries the username, a nonce and a MAC keyed by the password over the whole
//! message (`super::wire`). The checks, in order, each refusal counted:
//!
//! 1. No credential: ERROR authentication-required (`auth_missing`).
//! 2. A username not of the form `<digits>:<id>` (`auth_bad_username`), an id part
//!    other than the request's id, so that nobody can register or ask as someone else
//!    (`auth_id_mismatch`), an expiry time in the past (`auth_expired`): ERROR naming
//!    the reason.
//! 3. No nonce, or a nonce that is not one this rendezvous issued to this source
//!    address (`auth_bad_nonce`: forged, or a captured message replayed from another
//!    address), or one older than [`NONCE_LIFETIME`] (`auth_stale_nonce`): a CHALLENGE
//!    with a fresh nonce (`challenges`). Nonces are stateless
//!    ([`crate::turn::auth::Nonces`]): a time and a MAC of it with the source address
//!    under a random key. The CHALLENGE is never longer than the request (a request
//!    with a credential holds a 20-byte MAC and a username; the CHALLENGE a 20-byte
//!    nonce), so a spoofed request cannot use it to amplify.
//! 4. A MAC that matches the password of none of the secrets: ERROR wrong-credential
//!    (`auth_bad_mac`). Several secrets are tried so that one can be rotated.
//!
//! Only then is the registration table looked at: an unauthenticated CONNECT learns
//! nothing about registrations, not even whether a peer exists. A message replayed
//! from the source it was captured from (an attacker who can spoof that address)
//! within the nonce's lifetime repeats what the peer asked for and its answers go to
//! the peer, not to the attacker.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::turn::auth::{rest_expiry, rest_password, NonceCheck, Nonces};

use super::wire::{
    verify_mac, Connect, Credential, ErrorCode, Mapped, MappedBy, Message, Packet, PeerId,
    PeerInfo, PunchTransport, Register, Registered, Repr, Session, VERSION,
};

/// How long a registration lives after the peer's last message unless configured.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30);
/// How many registrations the engine holds unless configured.
pub const DEFAULT_MAX_REGISTRATIONS: usize = 4096;
/// How many times the length of a UDP message its answers may be.
pub const AMPLIFICATION_FACTOR: usize = 3;
/// How often expired registrations are swept (on the next message or tick).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How long a CHALLENGE's nonce is accepted, in seconds.
pub const NONCE_LIFETIME: u64 = 120;

/// Shared secrets the rendezvous accepts credentials from, and what its nonces are
/// made with.
#[derive(Clone)]
pub struct Auth {
    secrets: Vec<String>,
    nonces: Nonces,
    /// The wall clock (Unix seconds) at an instant: credentials expire and nonces age
    /// in Unix time, the engine is told `Instant`s.
    epoch: (Instant, u64),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        f.debug_struct("Auth")
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Credentials made with any of `secrets` are accepted; `nonce_key` (random) keys
    /// the nonces; at `epoch.0` the Unix time is `epoch.1` seconds.
    #[must_use]
    pub fn new(secrets: Vec<String>, nonce_key: [u8; 32], epoch: (Instant, u64)) -> Self {
        Self {
            secrets,
            nonces: Nonces::new(nonce_key, NONCE_LIFETIME),
            epoch,
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }
}

/// The username of a credential for `id` that expires at `expiry` (Unix seconds).
#[must_use]
pub fn username(expiry: u64, id: &PeerId) -> String {
    format!("{expiry}:{id}")
}

/// The password of `username` under `secret` (coturn's `use-auth-secret`).
#[must_use]
pub fn password(secret: &str, username: &str) -> String {
    rest_password(secret, username)
}

/// The expiry time and id of a `<unix-expiry>:<peer id>` username.
///
/// # Errors
/// [`ErrorCode::BadUsername`] when it is not of that form.
pub fn parse_username(username: &str) -> Result<(u64, PeerId), ErrorCode> {
    let (time, id) = username.split_once(':').ok_or(ErrorCode::BadUsername)?;
    if time.is_empty() || !time.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ErrorCode::BadUsername);
    }
    let expiry = rest_expiry(username).ok_or(ErrorCode::BadUsername)?;
    let id = PeerId::new(id).map_err(|_| ErrorCode::BadUsername)?;
    Ok((expiry, id))
}

/// The transport a message arrived on; registrations of one transport only meet
/// peers of the same transport (a UDP mapping says nothing about the TCP one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Datagrams.
    Udp,
    /// A TCP connection (one per peer endpoint).
    Tcp,
}

impl Transport {
    /// The transport a REGISTER or CONNECT declares it punches over, or else the one
    /// it arrived on.
    #[must_use]
    pub const fn punching(declared: Option<PunchTransport>, arrived: Self) -> Self {
        match declared {
            None => arrived,
            Some(PunchTransport::Udp) => Self::Udp,
            Some(PunchTransport::Tcp) => Self::Tcp,
        }
    }
}

/// Where a message came from, and where an answer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// UDP or TCP.
    pub transport: Transport,
    /// The remote endpoint (for TCP, the connection's peer address).
    pub addr: SocketAddrV4,
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Whom to send it to (over UDP, or on that TCP connection).
    pub to: Origin,
    /// The encoded message.
    pub bytes: Vec<u8>,
}

/// Engine settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How long a registration lives after its peer's last message.
    pub lifetime: Duration,
    /// Most registrations held at once.
    pub max_registrations: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lifetime: DEFAULT_LIFETIME,
            max_registrations: DEFAULT_MAX_REGISTRATIONS,
        }
    }
}

/// What the engine has seen; `server` prints it when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Messages (datagrams or frames) handed to the engine.
    pub received: u64,
    /// New registrations.
    pub registered: u64,
    /// REGISTERs that refreshed an existing registration.
    pub refreshed: u64,
    /// CONNECTs.
    pub connects: u64,
    /// PEER answers sent to askers.
    pub peer_answers: u64,
    /// PEER introductions sent to the asked-for peers.
    pub introductions: u64,
    /// CONNECTs for a peer that was not registered.
    pub unknown_peer: u64,
    /// CONNECTs from an endpoint that had not registered the id.
    pub not_registered: u64,
    /// Registrations refused because the table was full.
    pub table_full: u64,
    /// Registrations that expired or whose TCP connection closed.
    pub expired: u64,
    /// Messages that did not parse.
    pub malformed: u64,
    /// Messages of another protocol version.
    pub unsupported_version: u64,
    /// Well-formed messages a rendezvous does not take (PROBE, ACK, answers).
    pub unexpected: u64,
    /// PEER messages over UDP that left endpoints out to stay within
    /// [`AMPLIFICATION_FACTOR`] times the CONNECT that caused them.
    pub trimmed: u64,
    /// REGISTERs and CONNECTs that passed the credential check.
    pub authenticated: u64,
    /// CHALLENGEs sent (a request with a credential but no, a stale or a foreign
    /// nonce).
    pub challenges: u64,
    /// Refused: no credential.
    pub auth_missing: u64,
    /// Refused: the username is not `<unix-expiry>:<id>`.
    pub auth_bad_username: u64,
    /// Refused: the username's id is not the request's id.
    pub auth_id_mismatch: u64,
    /// Refused: the username's expiry time has passed.
    pub auth_expired: u64,
    /// Challenged: the nonce was issued too long ago.
    pub auth_stale_nonce: u64,
    /// Challenged: the nonce was not issued to this source (forged, or replayed from
    /// another address).
    pub auth_bad_nonce: u64,
    /// Refused: the MAC matches no secret's password.
    pub auth_bad_mac: u64,
}

/// Why a request is not taken.
enum Refused {
    /// ERROR with this code.
    Error(ErrorCode),
    /// CHALLENGE with this nonce.
    Challenge(Vec<u8>),
}

impl From<ErrorCode> for Refused {
    fn from(code: ErrorCode) -> Self {
        Self::Error(code)
    }
}

/// A CHALLENGE's length without the nonce: header and the nonce's length byte.
const HEADER_AND_NONCE: usize = super::wire::HEADER_LEN + 1;

/// The bytes of a hex nonce as [`Nonces::issue`] writes it.
fn nonce_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// One peer's registration.
#[derive(Clone, Debug)]
struct Registration {
    origin: Origin,
    private: Vec<SocketAddrV4>,
    mapped: Vec<Mapped>,
    /// Changes when the registration is replaced, so a new pair gets a new session.
    generation: u64,
    last_seen: Instant,
}

/// The rendezvous engine.
#[derive(Debug)]
pub struct Rendezvous {
    config: Config,
    secret: u64,
    registrations: HashMap<(Transport, PeerId), Registration>,
    next_generation: u64,
    last_sweep: Option<Instant>,
    counters: Counters,
    auth: Option<Auth>,
}

impl Rendezvous {
    /// An engine with no registrations. `secret` keys the session tokens: take it from
    /// a random source so that nobody can predict them.
    #[must_use]
    pub fn new(config: Config, secret: u64) -> Self {
        Self {
            config,
            secret,
            registrations: HashMap::new(),
            next_generation: 1,
            last_sweep: None,
            counters: Counters::default(),
            auth: None,
        }
    }

    /// Requires credentials made with `auth`'s secrets (see the module
    /// documentation); without this the rendezvous is open.
    #[must_use]
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Whether credentials are required.
    #[must_use]
    pub const fn authenticates(&self) -> bool {
        self.auth.is_some()
    }

    /// What the engine has seen so far.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// How many peers are registered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.registrations.len()
    }

    /// Whether nobody is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.registrations.is_empty()
    }

    /// Handles one message (a datagram, or one frame of a TCP connection) from `from`
    /// at `now` and returns what to send.
    pub fn handle(&mut self, now: Instant, from: Origin, bytes: &[u8]) -> Vec<Transmit> {
        self.counters.received += 1;
        self.sweep(now);
        let packet = match Packet::new_checked(bytes) {
            Ok(packet) => packet,
            Err(_) => {
                // Not even a header of ours: no answer (it may not be meant for us).
                self.counters.malformed += 1;
                return Vec::new();
            }
        };
        let transaction = packet.transaction();
        let error = |code| {
            vec![Transmit {
                to: from,
                bytes: Repr {
                    transaction,
                    message: Message::Error(code),
                }
                .to_bytes(),
            }]
        };
        if packet.version() != VERSION {
            self.counters.unsupported_version += 1;
            return error(ErrorCode::UnsupportedVersion);
        }
        let repr = match Repr::parse(&packet) {
            Ok(repr) => repr,
            Err(_) => {
                self.counters.malformed += 1;
                return error(ErrorCode::BadRequest);
            }
        };
        let (id, credential) = match &repr.message {
            Message::Register(m) => (&m.id, m.credential.as_ref()),
            Message::Connect(m) => (&m.id, m.credential.as_ref()),
            _ => {
                self.counters.unexpected += 1;
                return Vec::new();
            }
        };
        if let Err(refusal) = self.authenticate(now, from, id, credential, bytes) {
            let message = match refusal {
                Refused::Error(code) => Message::Error(code),
                Refused::Challenge(nonce) => Message::Challenge(nonce),
            };
            return vec![Transmit {
                to: from,
                bytes: Repr {
                    transaction,
                    message,
                }
                .to_bytes(),
            }];
        }
        match repr.message {
            Message::Register(register) => self.register(now, from, transaction, register),
            Message::Connect(connect) => {
                self.connect(now, from, transaction, &connect, bytes.len())
            }
            _ => {
                self.counters.unexpected += 1;
                Vec::new()
            }
        }
    }

    /// Checks a REGISTER's or CONNECT's credential (`bytes` is the whole message) when
    /// credentials are required; the order is the module documentation's.
    fn authenticate(
        &mut self,
        now: Instant,
        from: Origin,
        id: &PeerId,
        credential: Option<&Credential>,
        bytes: &[u8],
    ) -> Result<(), Refused> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        let c = &mut self.counters;
        let Some(credential) = credential else {
            c.auth_missing += 1;
            return Err(Refused::Error(ErrorCode::AuthRequired));
        };
        let unix = auth.unix(now);
        let (expiry, named) = parse_username(&credential.username).inspect_err(|_| {
            c.auth_bad_username += 1;
        })?;
        if named != *id {
            c.auth_id_mismatch += 1;
            return Err(Refused::Error(ErrorCode::IdMismatch));
        }
        if expiry < unix {
            c.auth_expired += 1;
            return Err(Refused::Error(ErrorCode::Expired));
        }
        let client = std::net::SocketAddr::V4(from.addr);
        let nonce_check = if credential.nonce.is_empty() {
            None
        } else {
            let hex: String = credential
                .nonce
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Some(auth.nonces.check(&hex, unix, client))
        };
        match nonce_check {
            Some(NonceCheck::Fresh) => {}
            other => {
                match other {
                    Some(NonceCheck::Stale) => c.auth_stale_nonce += 1,
                    Some(NonceCheck::Forged) => c.auth_bad_nonce += 1,
                    _ => {}
                }
                let nonce = nonce_bytes(&auth.nonces.issue(unix, client));
                // A CHALLENGE is 33 bytes; a request with a credential at least 41.
                // Should that ever change, refuse rather than amplify.
                if HEADER_AND_NONCE + nonce.len() > bytes.len() {
                    c.auth_missing += 1;
                    return Err(Refused::Error(ErrorCode::AuthRequired));
                }
                c.challenges += 1;
                return Err(Refused::Challenge(nonce));
            }
        }
        let matches = auth
            .secrets
            .iter()
            .any(|secret| verify_mac(bytes, &password(secret, &credential.username)));
        if !matches {
            c.auth_bad_mac += 1;
            return Err(Refused::Error(ErrorCode::BadCredential));
        }
        c.authenticated += 1;
        Ok(())
    }

    /// Removes the registrations that arrived over a TCP connection that has closed.
    pub fn disconnected(&mut self, origin: Origin) {
        let before = self.registrations.len();
        self.registrations.retain(|_, r| r.origin != origin);
        self.counters.expired += (before - self.registrations.len()) as u64;
    }

    /// Removes registrations idle for longer than the lifetime (at most once per
    /// second; [`Rendezvous::handle`] calls it too).
    pub fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        let lifetime = self.config.lifetime;
        let before = self.registrations.len();
        self.registrations
            .retain(|_, r| now.saturating_duration_since(r.last_seen) <= lifetime);
        self.counters.expired += (before - self.registrations.len()) as u64;
    }

    fn register(
        &mut self,
        now: Instant,
        from: Origin,
        transaction: u32,
        register: Register,
    ) -> Vec<Transmit> {
        let key = (
            Transport::punching(register.punch, from.transport),
            register.id,
        );
        let generation = match self.registrations.get(&key) {
            Some(existing) if existing.origin == from => {
                self.counters.refreshed += 1;
                existing.generation
            }
            None if self.registrations.len() >= self.config.max_registrations => {
                self.counters.table_full += 1;
                return vec![Transmit {
                    to: from,
                    bytes: Repr {
                        transaction,
                        message: Message::Error(ErrorCode::TableFull),
                    }
                    .to_bytes(),
                }];
            }
            // New, or the same id from another endpoint: the peer restarted.
            _ => {
                self.counters.registered += 1;
                self.new_generation()
            }
        };
        self.registrations.insert(
            key,
            Registration {
                origin: from,
                private: register.private,
                mapped: register.mapped,
                generation,
                last_seen: now,
            },
        );
        let lifetime_secs = u16::try_from(self.config.lifetime.as_secs()).unwrap_or(u16::MAX);
        vec![Transmit {
            to: from,
            bytes: Repr {
                transaction,
                message: Message::Registered(Registered {
                    public: from.addr,
                    lifetime_secs,
                }),
            }
            .to_bytes(),
        }]
    }

    fn connect(
        &mut self,
        now: Instant,
        from: Origin,
        transaction: u32,
        connect: &Connect,
        request_len: usize,
    ) -> Vec<Transmit> {
        self.counters.connects += 1;
        let punch = Transport::punching(connect.punch, from.transport);
        let asker_key = (punch, connect.id.clone());
        let Some(asker) = self
            .registrations
            .get_mut(&asker_key)
            .filter(|r| r.origin == from)
        else {
            self.counters.not_registered += 1;
            return vec![Transmit {
                to: from,
                bytes: Repr {
                    transaction,
                    message: Message::Error(ErrorCode::NotRegistered),
                }
                .to_bytes(),
            }];
        };
        asker.last_seen = now;
        let asker = asker.clone();
        let Some(peer) = self
            .registrations
            .get(&(punch, connect.peer.clone()))
            .filter(|_| connect.peer != connect.id)
            .cloned()
        else {
            self.counters.unknown_peer += 1;
            return vec![Transmit {
                to: from,
                bytes: Repr {
                    transaction,
                    message: Message::UnknownPeer(connect.peer.clone()),
                }
                .to_bytes(),
            }];
        };
        let session = self.session(
            (&connect.id, asker.generation),
            (&connect.peer, peer.generation),
        );
        let info = |introduction, id: &PeerId, r: &Registration| PeerInfo {
            introduction,
            session,
            id: id.clone(),
            public: r.origin.addr,
            private: r.private.clone(),
            mapped: r.mapped.clone(),
        };
        self.counters.peer_answers += 1;
        self.counters.introductions += 1;
        // What goes over UDP is bounded, whoever it goes to: the introduction may go
        // over UDP to a registration made from a spoofed source even when the CONNECT
        // came over TCP.
        let limit = |to: Origin| match to.transport {
            Transport::Udp => request_len.saturating_mul(AMPLIFICATION_FACTOR),
            Transport::Tcp => usize::MAX,
        };
        let answer = info(false, &connect.peer, &peer);
        let introduction = info(true, &connect.id, &asker);
        let answer = self.peer_within(transaction, answer, limit(from));
        let introduction = self.peer_within(transaction, introduction, limit(peer.origin));
        vec![
            Transmit {
                to: from,
                bytes: answer,
            },
            Transmit {
                to: peer.origin,
                bytes: introduction,
            },
        ]
    }

    /// PEER `info` encoded in at most `limit` bytes: private endpoints, then STUN- and
    /// PCP-learned ones, then TURN relayed ones (the path of last resort, kept
    /// longest) are left out until it fits (the rest always does, see the module
    /// documentation).
    fn peer_within(&mut self, transaction: u32, mut info: PeerInfo, limit: usize) -> Vec<u8> {
        let mut trimmed = false;
        loop {
            let bytes = Repr {
                transaction,
                message: Message::Peer(info.clone()),
            }
            .to_bytes();
            if bytes.len() <= limit || (info.private.is_empty() && info.mapped.is_empty()) {
                self.counters.trimmed += u64::from(trimmed);
                return bytes;
            }
            trimmed = true;
            if info.private.pop().is_none() {
                let victim = info
                    .mapped
                    .iter()
                    .rposition(|m| m.by != MappedBy::Relay)
                    .unwrap_or(info.mapped.len() - 1);
                info.mapped.remove(victim);
            }
        }
    }

    fn new_generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }

    /// The pair's session token: the same whichever of the two asks, until one of them
    /// registers anew.
    fn session(&self, a: (&PeerId, u64), b: (&PeerId, u64)) -> Session {
        let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
        let mut hasher = std::hash::DefaultHasher::new();
        (self.secret, first, second).hash(&mut hasher);
        hasher.finish().to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::wire::{MappedBy, Probe};
    use super::*;

    fn id(s: &str) -> PeerId {
        PeerId::new(s).unwrap()
    }

    fn udp(a: [u8; 4], port: u16) -> Origin {
        Origin {
            transport: Transport::Udp,
            addr: SocketAddrV4::new(Ipv4Addr::from(a), port),
        }
    }

    fn register(name: &str, private: [u8; 4], port: u16) -> Vec<u8> {
        Repr {
            transaction: 1,
            message: Message::Register(Register {
                id: id(name),
                punch: None,
                private: vec![SocketAddrV4::new(Ipv4Addr::from(private), port)],
                mapped: Vec::new(),
                credential: None,
            }),
        }
        .to_bytes()
    }

    fn connect(me: &str, peer: &str) -> Vec<u8> {
        Repr {
            transaction: 2,
            message: Message::Connect(Connect {
                id: id(me),
                peer: id(peer),
                punch: None,
                credential: None,
            }),
        }
        .to_bytes()
    }

    fn decode(t: &Transmit) -> Message {
        Repr::decode(&t.bytes).unwrap().message
    }

    const A: Origin = Origin {
        transport: Transport::Udp,
        addr: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 40000),
    };
    const B: Origin = Origin {
        transport: Transport::Udp,
        addr: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 41000),
    };

    #[test]
    fn register_reports_the_source_as_the_public_endpoint() {
        let mut r = Rendezvous::new(Config::default(), 1);
        let now = Instant::now();
        let out = r.handle(now, A, &register("a", [10, 1, 0, 2], 40000));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, A);
        assert_eq!(
            decode(&out[0]),
            Message::Registered(Registered {
                public: A.addr,
                lifetime_secs: 30
            })
        );
        assert_eq!(r.counters().registered, 1);
        // The same again is a refresh, not a second registration.
        r.handle(now, A, &register("a", [10, 1, 0, 2], 40000));
        assert_eq!((r.counters().registered, r.counters().refreshed), (1, 1));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn connect_answers_the_asker_and_introduces_the_peer_with_one_session() {
        let mut r = Rendezvous::new(Config::default(), 42);
        let now = Instant::now();
        r.handle(now, A, &register("a", [10, 1, 0, 2], 40000));
        r.handle(now, B, &register("b", [10, 2, 0, 2], 41000));
        let out = r.handle(now, A, &connect("a", "b"));
        assert_eq!(out.len(), 2);
        let (Message::Peer(answer), Message::Peer(intro)) = (decode(&out[0]), decode(&out[1]))
        else {
            panic!("{out:?}");
        };
        assert_eq!((out[0].to, out[1].to), (A, B));
        assert!(!answer.introduction && intro.introduction);
        assert_eq!(answer.id, id("b"));
        assert_eq!(answer.public, B.addr);
        assert_eq!(
            answer.private,
            [SocketAddrV4::new([10, 2, 0, 2].into(), 41000)]
        );
        assert_eq!(intro.id, id("a"));
        assert_eq!(intro.public, A.addr);
        assert_eq!(answer.session, intro.session);

        // b asking for a gets the same session.
        let out = r.handle(now, B, &connect("b", "a"));
        let Message::Peer(again) = decode(&out[0]) else {
            panic!("{out:?}");
        };
        assert_eq!(again.session, answer.session);
        let c = r.counters();
        assert_eq!((c.connects, c.peer_answers, c.introductions), (2, 2, 2));
    }

    #[test]
    fn a_new_registration_gets_a_new_session() {
        let mut r = Rendezvous::new(Config::default(), 42);
        let now = Instant::now();
        r.handle(now, A, &register("a", [10, 1, 0, 2], 40000));
        r.handle(now, B, &register("b", [10, 2, 0, 2], 41000));
        let session = |out: Vec<Transmit>| match decode(&out[0]) {
            Message::Peer(p) => p.session,
            other => panic!("{other:?}"),
        };
        let first = session(r.handle(now, A, &connect("a", "b")));
        // b restarts behind another port.
        let b2 = udp([198, 51, 100, 1], 41002);
        r.handle(now, b2, &register("b", [10, 2, 0, 2], 41002));
        let second = session(r.handle(now, A, &connect("a", "b")));
        assert_ne!(first, second);
        // And the other secret gives other sessions.
        let mut other = Rendezvous::new(Config::default(), 43);
        other.handle(now, A, &register("a", [10, 1, 0, 2], 40000));
        other.handle(now, B, &register("b", [10, 2, 0, 2], 41000));
        assert_ne!(session(other.handle(now, A, &connect("a", "b"))), first);
    }

    #[test]
    fn unknown_peers_and_unregistered_askers_are_told_so() {
        let mut r = Rendezvous::new(Config::default(), 1);
        let now = Instant::now();
        let out = r.handle(now, A, &connect("a", "b"));
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::NotRegistered));
        r.handle(now, A, &register("a", [10, 1, 0, 2], 40000));
        let out = r.handle(now, A, &connect("a", "b"));
        assert_eq!(decode(&out[0]), Message::UnknownPeer(id("b")));
        // Speaking for "a" from another endpoint is refused.
        let out = r.handle(now, B, &connect("a", "a"));
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::NotRegistered));
        // Asking for oneself finds nobody.
        let out = r.handle(now, A, &connect("a", "a"));
        assert_eq!(decode(&out[0]), Message::UnknownPeer(id("a")));
        let c = r.counters();
        assert_eq!((c.not_registered, c.unknown_peer), (2, 2));
    }

    #[test]
    fn udp_and_tcp_registrations_do_not_meet() {
        let mut r = Rendezvous::new(Config::default(), 1);
        let now = Instant::now();
        let a_tcp = Origin {
            transport: Transport::Tcp,
            ..A
        };
        r.handle(now, a_tcp, &register("a", [10, 1, 0, 2], 40000));
        r.handle(now, B, &register("b", [10, 2, 0, 2], 41000));
        let out = r.handle(now, a_tcp, &connect("a", "b"));
        assert_eq!(decode(&out[0]), Message::UnknownPeer(id("b")));
        // A closed connection takes its registration with it.
        r.disconnected(a_tcp);
        assert_eq!(r.len(), 1);
        assert_eq!(r.counters().expired, 1);
    }

    #[test]
    fn registrations_expire_after_their_lifetime() {
        let config = Config {
            lifetime: Duration::from_secs(5),
            ..Config::default()
        };
        let mut r = Rendezvous::new(config, 1);
        let t0 = Instant::now();
        r.handle(t0, A, &register("a", [10, 1, 0, 2], 40000));
        r.handle(
            t0 + Duration::from_secs(4),
            B,
            &register("b", [10, 2, 0, 2], 1),
        );
        r.sweep(t0 + Duration::from_secs(6));
        assert_eq!(r.len(), 1, "a expired, b did not");
        let out = r.handle(t0 + Duration::from_secs(7), B, &connect("b", "a"));
        assert_eq!(decode(&out[0]), Message::UnknownPeer(id("a")));
        assert_eq!(r.counters().expired, 1);
    }

    #[test]
    fn the_table_has_a_limit() {
        let config = Config {
            max_registrations: 1,
            ..Config::default()
        };
        let mut r = Rendezvous::new(config, 1);
        let now = Instant::now();
        r.handle(now, A, &register("a", [10, 1, 0, 2], 40000));
        let out = r.handle(now, B, &register("b", [10, 2, 0, 2], 41000));
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::TableFull));
        // Refreshing an existing one still works.
        let out = r.handle(now, A, &register("a", [10, 1, 0, 2], 40000));
        assert!(matches!(decode(&out[0]), Message::Registered(_)));
        assert_eq!(r.counters().table_full, 1);
    }

    #[test]
    fn bad_input_is_counted_and_never_relayed() {
        let mut r = Rendezvous::new(Config::default(), 1);
        let now = Instant::now();
        assert!(r.handle(now, A, b"hello").is_empty());
        assert!(r.handle(now, A, &[]).is_empty());
        let mut v9 = register("a", [10, 1, 0, 2], 1);
        v9[2] = 9;
        let out = r.handle(now, A, &v9);
        assert_eq!(
            decode(&out[0]),
            Message::Error(ErrorCode::UnsupportedVersion)
        );
        let mut broken = register("a", [10, 1, 0, 2], 1);
        broken[12] = 0;
        let out = r.handle(now, A, &broken);
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::BadRequest));
        // A probe sent to the rendezvous is not for it.
        let probe = Repr {
            transaction: 1,
            message: Message::Probe(Probe {
                session: [0; 8],
                from: id("a"),
                to: id("b"),
                flags: Default::default(),
            }),
        }
        .to_bytes();
        assert!(r.handle(now, A, &probe).is_empty());
        let c = r.counters();
        assert_eq!(
            (c.received, c.malformed, c.unsupported_version, c.unexpected),
            (5, 3, 1, 1)
        );
        assert!(r.is_empty());
    }

    #[test]
    fn mapped_endpoints_are_passed_on() {
        let mut r = Rendezvous::new(Config::default(), 1);
        let now = Instant::now();
        let mapped = Mapped {
            by: MappedBy::Pcp,
            endpoint: SocketAddrV4::new([198, 51, 100, 1].into(), 5000),
        };
        let stun = Mapped {
            by: MappedBy::Stun,
            endpoint: SocketAddrV4::new([198, 51, 100, 1].into(), 4000),
        };
        let reg = Repr {
            transaction: 1,
            message: Message::Register(Register {
                id: id("b"),
                punch: None,
                private: Vec::new(),
                mapped: vec![stun, mapped],
                credential: None,
            }),
        }
        .to_bytes();
        r.handle(now, B, &reg);
        r.handle(now, A, &register("a", [10, 1, 0, 2], 40000));
        let out = r.handle(now, A, &connect("a", "b"));
        let Message::Peer(p) = decode(&out[0]) else {
            panic!("{out:?}");
        };
        assert_eq!(p.mapped, [stun, mapped]);
    }

    #[test]
    fn udp_answers_never_exceed_three_times_the_request() {
        // A spoofed CONNECT must not make the rendezvous send a large PEER to a victim
        // (issue #11: nothing amplifies). Over TCP there is no spoofing: all is sent.
        for transport in [Transport::Udp, Transport::Tcp] {
            let mut r = Rendezvous::new(Config::default(), 1);
            let now = Instant::now();
            let at = |a: [u8; 4], port| Origin {
                transport,
                addr: SocketAddrV4::new(Ipv4Addr::from(a), port),
            };
            let full = |name: &str| {
                Repr {
                    transaction: 1,
                    message: Message::Register(Register {
                        id: id(name),
                        punch: None,
                        credential: None,
                        private: (1..=4)
                            .map(|i| SocketAddrV4::new([10, 0, 0, i].into(), 5000))
                            .collect(),
                        mapped: vec![
                            Mapped {
                                by: MappedBy::Stun,
                                endpoint: SocketAddrV4::new([198, 51, 100, 1].into(), 4000),
                            },
                            Mapped {
                                by: MappedBy::Pcp,
                                endpoint: SocketAddrV4::new([198, 51, 100, 1].into(), 5000),
                            },
                        ],
                    }),
                }
                .to_bytes()
            };
            r.handle(now, at([198, 51, 100, 9], 1), &full("b"));
            r.handle(now, at([198, 51, 100, 7], 1), &full("a"));
            let request = connect("a", "b");
            let out = r.handle(now, at([198, 51, 100, 7], 1), &request);
            assert_eq!(out.len(), 2);
            for t in &out {
                let Message::Peer(p) = decode(t) else {
                    panic!("{t:?}")
                };
                if transport == Transport::Udp {
                    assert!(t.bytes.len() <= 3 * request.len(), "{}", t.bytes.len());
                    assert!(p.private.len() < 4, "trimmed");
                } else {
                    assert_eq!((p.private.len(), p.mapped.len()), (4, 2));
                }
            }
            let trimmed = r.counters().trimmed;
            assert_eq!(trimmed, if transport == Transport::Udp { 2 } else { 0 });
        }
    }

    #[test]
    fn trimming_keeps_relayed_endpoints_longest() {
        let mut r = Rendezvous::new(Config::default(), 1);
        let at = |port| SocketAddrV4::new([198, 51, 100, 1].into(), port);
        let relay = Mapped {
            by: MappedBy::Relay,
            endpoint: at(50000),
        };
        let info = PeerInfo {
            introduction: false,
            session: [0; 8],
            id: id("b"),
            public: at(1),
            private: vec![at(2), at(3)],
            mapped: vec![
                relay,
                Mapped {
                    by: MappedBy::Stun,
                    endpoint: at(4),
                },
                Mapped {
                    by: MappedBy::Pcp,
                    endpoint: at(5),
                },
            ],
        };
        let full = Repr {
            transaction: 1,
            message: Message::Peer(info.clone()),
        }
        .to_bytes()
        .len();
        // Room for one learned endpoint and no private one: the relay stays.
        let bytes = r.peer_within(1, info.clone(), full - 2 * 6 - 2 * 7);
        let Ok(Repr {
            message: Message::Peer(p),
            ..
        }) = Repr::decode(&bytes)
        else {
            panic!("{bytes:?}");
        };
        assert!(p.private.is_empty());
        assert_eq!(p.mapped, [relay]);
        // Room for nothing: the public endpoint and the session remain.
        let bytes = r.peer_within(1, info, 1);
        let Ok(Repr {
            message: Message::Peer(p),
            ..
        }) = Repr::decode(&bytes)
        else {
            panic!("{bytes:?}");
        };
        assert!(p.private.is_empty() && p.mapped.is_empty());
        assert_eq!(p.public, at(1));
        assert_eq!(r.counters().trimmed, 2);
    }

    #[test]
    fn a_tcp_peer_can_register_for_udp_punching() {
        let mut r = Rendezvous::new(Config::default(), 1);
        let now = Instant::now();
        let a_tcp = Origin {
            transport: Transport::Tcp,
            ..A
        };
        let declared = |message: Message| {
            let mut repr = Repr::decode(&match message {
                Message::Register(_) => register("a", [10, 1, 0, 2], 40000),
                _ => connect("a", "b"),
            })
            .unwrap();
            match &mut repr.message {
                Message::Register(m) => m.punch = Some(PunchTransport::Udp),
                Message::Connect(m) => m.punch = Some(PunchTransport::Udp),
                _ => unreachable!(),
            }
            repr.to_bytes()
        };
        let out = r.handle(now, a_tcp, &declared(Message::Register(dummy_register())));
        assert_eq!(out[0].to, a_tcp, "the answer goes back on the connection");
        r.handle(now, B, &register("b", [10, 2, 0, 2], 41000));
        // Without the declaration, a TCP CONNECT looks among TCP registrations.
        let out = r.handle(now, a_tcp, &connect("a", "b"));
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::NotRegistered));
        let out = r.handle(now, a_tcp, &declared(Message::Connect(dummy_connect())));
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].to, out[1].to), (a_tcp, B));
        let Message::Peer(intro) = decode(&out[1]) else {
            panic!("{out:?}");
        };
        assert_eq!(intro.id, id("a"));
        // b (UDP) asking for a finds it too; a's introduction goes on a's connection.
        let out = r.handle(now, B, &connect("b", "a"));
        assert_eq!((out[0].to, out[1].to), (B, a_tcp));
        // The connection closing takes the UDP registration made over it.
        r.disconnected(a_tcp);
        assert_eq!(r.len(), 1);
    }

    fn dummy_register() -> Register {
        Register {
            id: id("x"),
            punch: None,
            private: Vec::new(),
            mapped: Vec::new(),
            credential: None,
        }
    }

    fn dummy_connect() -> Connect {
        Connect {
            id: id("x"),
            peer: id("y"),
            punch: None,
            credential: None,
        }
    }

    /// Unix time at the tests' first instant.
    const UNIX0: u64 = 1_800_000_000;

    fn authenticated(secrets: &[&str], t0: Instant) -> Rendezvous {
        Rendezvous::new(Config::default(), 1).with_auth(Auth::new(
            secrets.iter().map(|s| (*s).to_owned()).collect(),
            [7; 32],
            (t0, UNIX0),
        ))
    }

    /// `message` (REGISTER or CONNECT) with a credential `username` / `nonce`, signed
    /// with `password`.
    fn signed(mut message: Message, username: &str, nonce: &[u8], password: &str) -> Vec<u8> {
        let credential = Some(Credential::unsigned(username, nonce));
        match &mut message {
            Message::Register(m) => m.credential = credential,
            Message::Connect(m) => m.credential = credential,
            _ => unreachable!(),
        }
        Repr {
            transaction: 3,
            message,
        }
        .to_signed_bytes(password)
    }

    fn reg_msg(name: &str) -> Message {
        Repr::decode(&register(name, [10, 1, 0, 2], 40000))
            .unwrap()
            .message
    }

    fn connect_msg(me: &str, peer: &str) -> Message {
        Repr::decode(&connect(me, peer)).unwrap().message
    }

    /// Registers `name` from `from` with a credential under `secret`, answering the
    /// challenge; returns the final answer.
    fn login(
        r: &mut Rendezvous,
        now: Instant,
        from: Origin,
        message: &Message,
        username: &str,
        secret: &str,
    ) -> Vec<Transmit> {
        let pw = password(secret, username);
        let out = r.handle(now, from, &signed(message.clone(), username, &[], &pw));
        let Message::Challenge(nonce) = decode(&out[0]) else {
            panic!("{out:?}");
        };
        r.handle(now, from, &signed(message.clone(), username, &nonce, &pw))
    }

    #[test]
    fn auth_a_valid_credential_registers_after_one_challenge() {
        let t0 = Instant::now();
        let mut r = authenticated(&["s3cret"], t0);
        assert!(r.authenticates());
        let user = username(UNIX0 + 3600, &id("a"));
        assert_eq!(user, "1800003600:a");
        // No credential: told so, nothing registered.
        let out = r.handle(t0, A, &register("a", [10, 1, 0, 2], 40000));
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::AuthRequired));
        // A credential without a nonce: a challenge, no longer than the request.
        let pw = password("s3cret", &user);
        let request = signed(reg_msg("a"), &user, &[], &pw);
        let out = r.handle(t0, A, &request);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, A);
        assert!(out[0].bytes.len() <= request.len());
        let Message::Challenge(nonce) = decode(&out[0]) else {
            panic!("{out:?}");
        };
        assert!(r.is_empty());
        // Repeated with the nonce: registered.
        let out = r.handle(t0, A, &signed(reg_msg("a"), &user, &nonce, &pw));
        assert!(matches!(decode(&out[0]), Message::Registered(_)), "{out:?}");
        assert_eq!(r.len(), 1);
        // The nonce serves CONNECTs too, until it ages.
        let out = r.handle(t0, A, &signed(connect_msg("a", "b"), &user, &nonce, &pw));
        assert_eq!(decode(&out[0]), Message::UnknownPeer(id("b")));
        let c = r.counters();
        assert_eq!(
            (c.auth_missing, c.challenges, c.authenticated, c.registered),
            (1, 1, 2, 1)
        );
    }

    #[test]
    fn auth_a_wrong_secret_is_refused() {
        let t0 = Instant::now();
        let mut r = authenticated(&["right"], t0);
        let user = username(UNIX0 + 60, &id("a"));
        let out = login(&mut r, t0, A, &reg_msg("a"), &user, "wrong");
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::BadCredential));
        // A MAC made with the right password over other bytes is wrong too.
        let pw = password("right", &user);
        let Message::Challenge(nonce) =
            decode(&r.handle(t0, A, &signed(reg_msg("a"), &user, &[], &pw))[0])
        else {
            panic!()
        };
        let mut tampered = signed(reg_msg("a"), &user, &nonce, &pw);
        tampered[18] ^= 1; // the private endpoint's address
        let out = r.handle(t0, A, &tampered);
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::BadCredential));
        assert!(r.is_empty());
        assert_eq!(r.counters().auth_bad_mac, 2);
    }

    #[test]
    fn auth_expired_credentials_are_refused() {
        let t0 = Instant::now();
        let mut r = authenticated(&["s"], t0);
        let user = username(UNIX0 - 1, &id("a"));
        let pw = password("s", &user);
        let out = r.handle(t0, A, &signed(reg_msg("a"), &user, &[], &pw));
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::Expired));
        // Valid now, expired later: the same credential stops working.
        let user = username(UNIX0 + 10, &id("a"));
        let out = login(&mut r, t0, A, &reg_msg("a"), &user, "s");
        assert!(matches!(decode(&out[0]), Message::Registered(_)));
        let later = t0 + Duration::from_secs(11);
        let pw = password("s", &user);
        let out = r.handle(later, A, &signed(reg_msg("a"), &user, &[], &pw));
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::Expired));
        assert_eq!(r.counters().auth_expired, 2);
    }

    #[test]
    fn auth_nobody_speaks_for_another_id() {
        let t0 = Instant::now();
        let mut r = authenticated(&["s"], t0);
        // b's valid credential cannot register "a", nor ask as "a".
        let user_b = username(UNIX0 + 60, &id("b"));
        let pw = password("s", &user_b);
        let out = r.handle(t0, A, &signed(reg_msg("a"), &user_b, &[], &pw));
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::IdMismatch));
        let out = r.handle(t0, A, &signed(connect_msg("a", "b"), &user_b, &[], &pw));
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::IdMismatch));
        // Usernames of other forms are refused as such.
        for bad in [
            "a",
            "a:1800000060",
            "x1:a",
            ":a",
            "1800000060:",
            "1800000060:a b",
        ] {
            let pw = password("s", bad);
            let bytes = signed(reg_msg("a"), bad, &[], &pw);
            let out = r.handle(t0, A, &bytes);
            match Repr::decode(&bytes) {
                Ok(_) => assert_eq!(decode(&out[0]), Message::Error(ErrorCode::BadUsername)),
                // "a b" does not fit the wire at all.
                Err(_) => assert_eq!(decode(&out[0]), Message::Error(ErrorCode::BadRequest)),
            }
        }
        let c = r.counters();
        assert_eq!((c.auth_id_mismatch, c.auth_bad_username), (2, 5));
        assert!(r.is_empty());
    }

    #[test]
    fn auth_a_captured_message_replayed_from_elsewhere_is_challenged() {
        let t0 = Instant::now();
        let mut r = authenticated(&["s"], t0);
        let user = username(UNIX0 + 60, &id("a"));
        let pw = password("s", &user);
        let Message::Challenge(nonce) =
            decode(&r.handle(t0, A, &signed(reg_msg("a"), &user, &[], &pw))[0])
        else {
            panic!()
        };
        let captured = signed(reg_msg("a"), &user, &nonce, &pw);
        // From another address the nonce is not valid: the attacker gets a challenge
        // it cannot answer without the password; nothing is registered.
        let c_addr = udp([203, 0, 113, 66], 5555);
        let out = r.handle(t0, c_addr, &captured);
        let Message::Challenge(other) = decode(&out[0]) else {
            panic!("{out:?}");
        };
        assert_ne!(other, nonce);
        assert!(r.is_empty());
        // From the same address but another port: the nonce is bound to both.
        let c_port = udp([192, 0, 2, 1], 40001);
        let out = r.handle(t0, c_port, &captured);
        assert!(matches!(decode(&out[0]), Message::Challenge(_)));
        // A nonce that was never issued is the same.
        let forged = signed(reg_msg("a"), &user, &[0; 20], &pw);
        let out = r.handle(t0, A, &forged);
        assert!(matches!(decode(&out[0]), Message::Challenge(_)));
        assert_eq!(r.counters().auth_bad_nonce, 3);
        // From the source it was issued to, it works.
        let out = r.handle(t0, A, &captured);
        assert!(matches!(decode(&out[0]), Message::Registered(_)));
    }

    #[test]
    fn auth_stale_nonces_get_a_new_challenge() {
        let t0 = Instant::now();
        let mut r = authenticated(&["s"], t0);
        let user = username(UNIX0 + 3600, &id("a"));
        let pw = password("s", &user);
        let Message::Challenge(nonce) =
            decode(&r.handle(t0, A, &signed(reg_msg("a"), &user, &[], &pw))[0])
        else {
            panic!()
        };
        let late = t0 + Duration::from_secs(NONCE_LIFETIME);
        let out = r.handle(late, A, &signed(reg_msg("a"), &user, &nonce, &pw));
        let Message::Challenge(fresh) = decode(&out[0]) else {
            panic!("{out:?}");
        };
        assert_eq!(r.counters().auth_stale_nonce, 1);
        let out = r.handle(late, A, &signed(reg_msg("a"), &user, &fresh, &pw));
        assert!(matches!(decode(&out[0]), Message::Registered(_)));
    }

    #[test]
    fn auth_several_secrets_rotate() {
        let t0 = Instant::now();
        let mut r = authenticated(&["new", "old"], t0);
        let user_a = username(UNIX0 + 60, &id("a"));
        let user_b = username(UNIX0 + 60, &id("b"));
        let out = login(&mut r, t0, A, &reg_msg("a"), &user_a, "old");
        assert!(matches!(decode(&out[0]), Message::Registered(_)));
        let out = login(&mut r, t0, B, &reg_msg("b"), &user_b, "new");
        assert!(matches!(decode(&out[0]), Message::Registered(_)));
        let c_addr = udp([203, 0, 113, 1], 1);
        let out = login(&mut r, t0, c_addr, &reg_msg("c"), "1800000060:c", "retired");
        assert_eq!(decode(&out[0]), Message::Error(ErrorCode::BadCredential));
        // a (old secret) meets b (new secret).
        let out = login(&mut r, t0, A, &connect_msg("a", "b"), &user_a, "old");
        assert_eq!(out.len(), 2);
        assert!(matches!(decode(&out[0]), Message::Peer(_)));
    }

    #[test]
    fn auth_strangers_learn_nothing_about_registrations() {
        let t0 = Instant::now();
        let mut r = authenticated(&["s"], t0);
        let user_b = username(UNIX0 + 60, &id("b"));
        login(&mut r, t0, B, &reg_msg("b"), &user_b, "s");
        assert_eq!(r.len(), 1);
        // A stranger asks for b (registered) and for z (not): the answers are the same
        // whatever it tries, and b hears nothing.
        let stranger = udp([203, 0, 113, 9], 7);
        let user_x = username(UNIX0 + 60, &id("x"));
        let wrong = password("guess", &user_x);
        let mut answers = Vec::new();
        for peer in ["b", "z"] {
            let plain = r.handle(t0, stranger, &connect("x", peer));
            let challenged = r.handle(
                t0,
                stranger,
                &signed(connect_msg("x", peer), &user_x, &[], &wrong),
            );
            let Message::Challenge(nonce) = decode(&challenged[0]) else {
                panic!("{challenged:?}");
            };
            let refused = r.handle(
                t0,
                stranger,
                &signed(connect_msg("x", peer), &user_x, &nonce, &wrong),
            );
            for out in [&plain, &challenged, &refused] {
                assert_eq!(out.len(), 1, "nothing goes to b");
                assert_eq!(out[0].to, stranger);
            }
            answers.push((
                decode(&plain[0]),
                challenged[0].bytes.len(),
                decode(&refused[0]),
            ));
        }
        assert_eq!(answers[0], answers[1]);
        assert_eq!(answers[0].0, Message::Error(ErrorCode::AuthRequired));
        assert_eq!(answers[0].2, Message::Error(ErrorCode::BadCredential));
        let c = r.counters();
        assert_eq!((c.connects, c.introductions, c.unknown_peer), (0, 0, 0));
    }

    #[test]
    fn auth_open_mode_takes_everyone() {
        let t0 = Instant::now();
        let mut r = Rendezvous::new(Config::default(), 1);
        assert!(!r.authenticates());
        r.handle(t0, A, &register("a", [10, 1, 0, 2], 40000));
        // A credential, even a nonsensical one, is ignored.
        let out = r.handle(t0, B, &signed(reg_msg("b"), "0:zz", &[1], "x"));
        assert!(matches!(decode(&out[0]), Message::Registered(_)));
        let out = r.handle(t0, A, &connect("a", "b"));
        assert_eq!(out.len(), 2);
        let c = r.counters();
        assert_eq!((c.authenticated, c.challenges, c.auth_missing), (0, 0, 0));
    }

    #[test]
    fn auth_random_input_never_panics() {
        let t0 = Instant::now();
        let mut r = authenticated(&["s"], t0);
        let user = username(UNIX0 + 60, &id("a"));
        let pw = password("s", &user);
        let valid = signed(reg_msg("a"), &user, &[0; 20], &pw);
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut bytes = valid.clone();
            let at = (x as usize) % bytes.len();
            bytes[at] = (x >> 32) as u8;
            for t in r.handle(t0, A, &bytes) {
                assert!(t.bytes.len() <= bytes.len().max(13) * AMPLIFICATION_FACTOR);
                assert!(Repr::decode(&t.bytes).is_ok());
            }
        }
        assert!(r.is_empty());
    }

    #[test]
    fn random_input_never_panics() {
        let mut r = Rendezvous::new(Config::default(), 7);
        let now = Instant::now();
        let valid = [register("a", [10, 1, 0, 2], 1), connect("a", "b")];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut bytes = valid[(i % 2) as usize].clone();
            let at = (x as usize) % bytes.len();
            bytes[at] = (x >> 32) as u8;
            if x & 1 == 0 {
                bytes.truncate((x >> 40) as usize % (bytes.len() + 1));
            }
            let from = udp([10, 0, 0, (x >> 48) as u8], (x >> 16) as u16 | 1);
            for t in r.handle(now, from, &bytes) {
                assert!(
                    Repr::decode(&t.bytes).is_ok(),
                    "the engine sends valid messages"
                );
            }
        }
    }
}
