//! A TURN client (RFC 8656) as a state machine without I/O: one allocation on one
//! server, over UDP (with RFC 8489 retransmissions) or TCP (the caller cuts the
//! stream into frames with [`crate::turn::wire::Framer`] and hands each one in).
//!
//! What it does:
//! - Allocate: first without credentials, to learn REALM and NONCE from the 401
//!   (RFC 8489 §9.2.3), then signed with the long-term key of a static
//!   `user:password` or of a shared-secret username ([`rest_credential`], coturn's
//!   use-auth-secret). A 401 to the signed request is a wrong user or password
//!   ([`Error::Unauthorized`]); a 438 takes the new NONCE and retries (at most
//!   [`MAX_STALE_RETRIES`] times per transaction).
//! - Refresh before the allocation expires (a minute before its end, or at half
//!   its lifetime when that is later), CreatePermission per peer IP and again before the 300 s
//!   permission lifetime runs out, ChannelBind when asked (and again before its
//!   600 s), Refresh with LIFETIME 0 on [`Client::close`].
//! - Send indications ([`Client::send_to`]) or ChannelData on a bound channel, and
//!   Data indications / ChannelData from the server ([`Client::handle`] returns the
//!   peer's datagram).
//! - Over UDP a request is sent again after RTO, 2·RTO, ... ([`Settings::rto`],
//!   [`Settings::max_transmissions`] in all) and fails [`Settings::last_wait`]·RTO
//!   after the last one (RFC 8489 §6.2.1: 500 ms, Rc 7, Rm 16 → 39.5 s); over TCP it
//!   is sent once and fails after [`Settings::tcp_timeout`] (RFC 8489 §6.2.2, Ti
//!   39.5 s).
//!
//! Responses are matched by transaction ID; success responses to signed requests
//! must carry a valid MESSAGE-INTEGRITY (others are dropped and counted). The key
//! code (MD5 key, HMAC) is [`crate::turn::auth`]'s.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::stun::wire::{Attribute, Class, Packet, Repr, MAGIC_COOKIE};
use crate::turn::auth::{self, long_term_key, Integrity, Key, INTEGRITY_LEN};
use crate::turn::wire::{
    self as turn, error_code, ChannelData, Kind, CHANNEL_MIN, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_REFRESH, METHOD_SEND, PROTOCOL_UDP,
};

/// How many 438 answers one transaction follows with the new nonce before failing.
pub const MAX_STALE_RETRIES: u32 = 3;
/// How long a permission lives on the server (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// A permission is refreshed this long before it would expire.
pub const PERMISSION_MARGIN: Duration = Duration::from_secs(60);
/// How long a channel binding lives on the server (RFC 8656 §12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);

/// The shared-secret credential coturn's `use-auth-secret` accepts (and `natgw
/// rendezvous --turn-secret`): username `"<expiry>:<id>"` (Unix seconds), password
/// `base64(HMAC-SHA1(secret, username))`.
#[must_use]
pub fn rest_credential(secret: &str, id: &str, expiry_unix_secs: u64) -> (String, String) {
    let username = format!("{expiry_unix_secs}:{id}");
    let password = auth::rest_password(secret, &username);
    (username, password)
}

/// How the client reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams; requests are retransmitted.
    Udp,
    /// A stream; requests are sent once, ChannelData padded.
    Tcp,
}

impl Transport {
    /// `"udp"` or `"tcp"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// Timing of transactions.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// First retransmission timeout over UDP (RFC 8489: 500 ms recommended).
    pub rto: Duration,
    /// Transmissions of one request over UDP (Rc, 7).
    pub max_transmissions: u32,
    /// After the last transmission, wait this many RTOs (Rm, 16).
    pub last_wait: u32,
    /// How long a request over TCP waits for its answer (Ti, 39.5 s).
    pub tcp_timeout: Duration,
    /// LIFETIME asked for in Allocate and Refresh, in seconds (the server clamps it).
    pub lifetime: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            rto: Duration::from_millis(500),
            max_transmissions: 7,
            last_wait: 16,
            tcp_timeout: Duration::from_millis(39_500),
            lifetime: 600,
        }
    }
}

/// Why the allocation, or one request, failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The server refused our credentials (401 to a signed request).
    Unauthorized {
        /// The server's realm.
        realm: String,
        /// The username we used.
        username: String,
    },
    /// The server answered with an error.
    Rejected {
        /// The request (`"Allocate"`, ...).
        request: &'static str,
        /// The error code.
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// No answer in time.
    Timeout {
        /// The request.
        request: &'static str,
        /// How often it was sent.
        transmissions: u32,
    },
    /// The server's answer made no sense (no XOR-RELAYED-ADDRESS, no REALM/NONCE in a
    /// 401, repeated 438s, ...).
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unauthorized { realm, username } => write!(
                f,
                "the TURN server refused the credentials of user `{username}` in realm \
                 `{realm}` (401): wrong password or secret, unknown user, or an expired \
                 time-limited username"
            ),
            Self::Rejected {
                request,
                code: error_code::ALLOCATION_QUOTA_REACHED,
                ..
            } => write!(
                f,
                "TURN {request} refused with 486 (Allocation Quota Reached): this user \
                 holds as many allocations as the server allows"
            ),
            Self::Rejected {
                request,
                code: error_code::INSUFFICIENT_CAPACITY,
                ..
            } => write!(
                f,
                "TURN {request} refused with 508 (Insufficient Capacity): the server has \
                 no relay port or room left"
            ),
            Self::Rejected {
                request,
                code,
                reason,
            } => write!(f, "TURN {request} refused with {code} ({reason})"),
            Self::Timeout {
                request,
                transmissions,
            } => write!(
                f,
                "no answer from the TURN server to {request} ({transmissions} sent)"
            ),
            Self::Protocol(what) => write!(f, "TURN server: {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// Something the caller may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The allocation exists.
    Allocated {
        /// Our relayed transport address.
        relayed: SocketAddrV4,
        /// Our address as the server saw it (XOR-MAPPED-ADDRESS), if given.
        mapped: Option<SocketAddr>,
        /// Its lifetime.
        lifetime: Duration,
    },
    /// A Refresh extended it.
    Refreshed {
        /// The new lifetime.
        lifetime: Duration,
    },
    /// Peers at these IPs may now send to us (and we to them).
    PermissionCreated(Vec<Ipv4Addr>),
    /// A CreatePermission failed.
    PermissionFailed(Vec<Ipv4Addr>, Error),
    /// A channel is bound to a peer.
    ChannelBound(u16, SocketAddrV4),
    /// A ChannelBind failed.
    ChannelFailed(SocketAddrV4, Error),
    /// The allocation is gone (Allocate or Refresh failed); nothing more will be
    /// sent.
    Failed(Error),
    /// Our Refresh with LIFETIME 0 was answered (or given up on).
    Closed,
}

/// What [`Client::handle`] made of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A peer's datagram, relayed to us.
    Data {
        /// The peer.
        peer: SocketAddrV4,
        /// Its payload.
        data: Vec<u8>,
    },
    /// A response or something else for the client; see [`Client::poll_event`].
    Consumed,
    /// Not a TURN message the client can use (dropped and counted).
    Dropped,
}

/// Where the allocation stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing asked yet.
    Idle,
    /// Allocate in flight.
    Allocating,
    /// The allocation exists.
    Allocated,
    /// Refresh with LIFETIME 0 in flight.
    Closing,
    /// Deleted (or given up).
    Closed,
    /// Failed; see the error.
    Failed(Error),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Request {
    Allocate,
    Refresh { lifetime: u32 },
    Permission(Vec<Ipv4Addr>),
    Channel(u16, SocketAddrV4),
}

impl Request {
    const fn name(&self) -> &'static str {
        match self {
            Self::Allocate => "Allocate",
            Self::Refresh { .. } => "Refresh",
            Self::Permission(_) => "CreatePermission",
            Self::Channel(..) => "ChannelBind",
        }
    }

    const fn method(&self) -> u16 {
        match self {
            Self::Allocate => METHOD_ALLOCATE,
            Self::Refresh { .. } => METHOD_REFRESH,
            Self::Permission(_) => METHOD_CREATE_PERMISSION,
            Self::Channel(..) => METHOD_CHANNEL_BIND,
        }
    }
}

#[derive(Debug)]
struct Transaction {
    id: [u8; 12],
    request: Request,
    bytes: Vec<u8>,
    signed: bool,
    transmissions: u32,
    /// When to send again (UDP) or give up.
    next: Instant,
    rto: Duration,
    due: bool,
    stale_retries: u32,
}

/// Counters of what the client saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests sent, retransmissions included.
    pub requests_sent: u64,
    /// Retransmissions.
    pub retransmissions: u64,
    /// Send indications / ChannelData we built.
    pub data_sent: u64,
    /// Data indications / ChannelData received from peers.
    pub data_received: u64,
    /// Messages dropped: unmatched, badly signed, malformed.
    pub dropped: u64,
}

/// One allocation on one TURN server.
pub struct Client {
    transport: Transport,
    settings: Settings,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<Key>,
    state: State,
    relayed: Option<SocketAddrV4>,
    refresh_at: Option<Instant>,
    pending: Vec<Transaction>,
    /// Permission refresh times, per peer IP (installed or asked for).
    permissions: HashMap<Ipv4Addr, Instant>,
    /// Bound (or binding) channels: number → peer and refresh time.
    channels: HashMap<u16, (SocketAddrV4, Option<Instant>)>,
    events: VecDeque<Event>,
    counters: Counters,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password or the key.
        f.debug_struct("Client")
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("state", &self.state)
            .field("relayed", &self.relayed)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `username`/`password` (see [`rest_credential`] for a shared
    /// secret) over `transport`.
    #[must_use]
    pub fn new(
        transport: Transport,
        username: impl Into<String>,
        password: impl Into<String>,
        settings: Settings,
    ) -> Self {
        Self {
            transport,
            settings,
            username: username.into(),
            password: password.into(),
            realm: None,
            nonce: None,
            key: None,
            state: State::Idle,
            relayed: None,
            refresh_at: None,
            pending: Vec::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// Where the allocation stands.
    #[must_use]
    pub const fn state(&self) -> &State {
        &self.state
    }

    /// Our relayed transport address, once allocated.
    #[must_use]
    pub const fn relayed(&self) -> Option<SocketAddrV4> {
        self.relayed
    }

    /// The realm the server named in its 401.
    #[must_use]
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    /// What was counted.
    #[must_use]
    pub const fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The transport to the server.
    #[must_use]
    pub const fn transport(&self) -> Transport {
        self.transport
    }

    /// Whether the allocation exists.
    #[must_use]
    pub fn is_allocated(&self) -> bool {
        self.state == State::Allocated
    }

    /// Starts the Allocate (unsigned: its 401 brings REALM and NONCE).
    pub fn allocate(&mut self, now: Instant) {
        if self.state == State::Idle {
            self.state = State::Allocating;
            self.start(now, Request::Allocate);
        }
    }

    /// Asks for permissions for `ips` (one CreatePermission); IPs with a permission
    /// (or one being asked for) are left out. Does nothing before the allocation.
    pub fn create_permission(&mut self, now: Instant, ips: &[Ipv4Addr]) {
        if self.state != State::Allocated {
            return;
        }
        let mut new: Vec<Ipv4Addr> = ips
            .iter()
            .copied()
            .filter(|ip| !self.permissions.contains_key(ip))
            .collect();
        new.sort_unstable();
        new.dedup();
        if new.is_empty() {
            return;
        }
        // Refreshed well before the server forgets them; the time is moved on when
        // the answer comes.
        for ip in &new {
            self.permissions
                .insert(*ip, now + PERMISSION_LIFETIME - PERMISSION_MARGIN);
        }
        self.start(now, Request::Permission(new));
    }

    /// Binds a channel to `peer` (the next free number) and returns it; `None`
    /// before the allocation or when `peer` has one already (returned then too).
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddrV4) -> Option<u16> {
        if self.state != State::Allocated {
            return None;
        }
        if let Some((&n, _)) = self.channels.iter().find(|(_, (p, _))| *p == peer) {
            return Some(n);
        }
        let number = (CHANNEL_MIN..=0x4FFF).find(|n| !self.channels.contains_key(n))?;
        self.channels.insert(number, (peer, None));
        self.start(now, Request::Channel(number, peer));
        Some(number)
    }

    /// Deletes the allocation (Refresh with LIFETIME 0); [`Event::Closed`] follows.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            State::Allocated => {
                self.pending.clear();
                self.state = State::Closing;
                self.start(now, Request::Refresh { lifetime: 0 });
            }
            State::Idle | State::Allocating => {
                self.pending.clear();
                self.state = State::Closed;
                self.events.push_back(Event::Closed);
            }
            _ => {}
        }
    }

    /// The message that carries `data` to `peer` through the relay: ChannelData when
    /// a channel to it is bound, a Send indication otherwise. `None` without an
    /// allocation. The server drops it unless `peer`'s IP has a permission.
    pub fn send_to(&mut self, peer: SocketAddrV4, data: &[u8]) -> Option<Vec<u8>> {
        if self.state != State::Allocated {
            return None;
        }
        self.counters.data_sent += 1;
        let bound = self
            .channels
            .iter()
            .find(|(_, (p, confirmed))| *p == peer && confirmed.is_some());
        if let Some((&channel, _)) = bound {
            return Some(ChannelData { channel, data }.to_bytes(self.transport == Transport::Tcp));
        }
        Some(
            Repr {
                class: Class::Indication,
                method: METHOD_SEND,
                cookie: MAGIC_COOKIE,
                transaction_id: crate::util::rng::random_array(),
                attributes: vec![
                    Attribute::XorPeerAddress(SocketAddr::V4(peer)),
                    Attribute::Data(data),
                ],
            }
            .to_bytes(),
        )
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Messages due to the server at `now` (requests, retransmissions, refreshes).
    pub fn poll_transmit(&mut self, now: Instant) -> Vec<Vec<u8>> {
        self.schedule(now);
        let mut out = Vec::new();
        let mut failed = Vec::new();
        for (i, t) in self.pending.iter_mut().enumerate() {
            if t.due {
                t.due = false;
                t.transmissions += 1;
                self.counters.requests_sent += 1;
                out.push(t.bytes.clone());
                continue;
            }
            if now < t.next {
                continue;
            }
            let more = self.transport == Transport::Udp
                && t.transmissions < self.settings.max_transmissions;
            if more {
                t.transmissions += 1;
                self.counters.requests_sent += 1;
                self.counters.retransmissions += 1;
                t.rto *= 2;
                t.next = if t.transmissions == self.settings.max_transmissions {
                    now + self.settings.rto * self.settings.last_wait
                } else {
                    now + t.rto
                };
                out.push(t.bytes.clone());
            } else {
                failed.push(i);
            }
        }
        for i in failed.into_iter().rev() {
            let t = self.pending.remove(i);
            let error = Error::Timeout {
                request: t.request.name(),
                transmissions: t.transmissions,
            };
            self.fail(t.request, error);
        }
        out
    }

    /// When [`Self::poll_transmit`] has something to do next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.iter().map(|t| t.next);
        let timers = (self.state == State::Allocated).then(|| {
            self.refresh_at
                .into_iter()
                .chain(self.permissions.values().copied())
                .chain(self.channels.values().filter_map(|(_, at)| *at))
        });
        pending.chain(timers.into_iter().flatten()).min()
    }

    /// A message from the server (a UDP datagram, or one frame of the TCP stream).
    pub fn handle(&mut self, now: Instant, bytes: &[u8]) -> Received {
        let received = match turn::kind(bytes) {
            Kind::Stun => self.on_stun(now, bytes),
            Kind::ChannelData => self.on_channel_data(bytes),
            Kind::Other => None,
        };
        received.unwrap_or_else(|| {
            self.counters.dropped += 1;
            Received::Dropped
        })
    }

    fn on_channel_data(&mut self, bytes: &[u8]) -> Option<Received> {
        let message = ChannelData::parse(bytes).ok()?;
        let (peer, _) = self.channels.get(&message.channel)?;
        self.counters.data_received += 1;
        Some(Received::Data {
            peer: *peer,
            data: message.data.to_vec(),
        })
    }

    fn on_stun(&mut self, now: Instant, bytes: &[u8]) -> Option<Received> {
        let packet = Packet::new_checked(bytes).ok()?;
        let repr = Repr::parse(&packet).ok()?;
        if repr.class == Class::Indication {
            if repr.method != METHOD_DATA || self.state != State::Allocated {
                return None;
            }
            let peer = repr.find(|a| match a {
                Attribute::XorPeerAddress(SocketAddr::V4(p)) => Some(*p),
                _ => None,
            })?;
            let data = repr.find(|a| match a {
                Attribute::Data(d) => Some(d.to_vec()),
                _ => None,
            })?;
            self.counters.data_received += 1;
            return Some(Received::Data { peer, data });
        }
        let i = self
            .pending
            .iter()
            .position(|t| t.id == repr.transaction_id && t.request.method() == repr.method)?;
        match repr.class {
            Class::Success => {
                // A success to a signed request must be signed with our key.
                if self.pending[i].signed {
                    let key = self.key?;
                    if auth::check_integrity(bytes, &key) != Integrity::Valid {
                        return None;
                    }
                }
                let t = self.pending.remove(i);
                self.on_success(now, t.request, &repr);
            }
            Class::Error => {
                let (code, reason) = repr.find(|a| match a {
                    Attribute::ErrorCode(e) => Some((e.code, e.reason.to_owned())),
                    _ => None,
                })?;
                let t = self.pending.remove(i);
                self.on_error(now, t, code, reason, &repr);
            }
            _ => return None,
        }
        Some(Received::Consumed)
    }

    fn on_success(&mut self, now: Instant, request: Request, repr: &Repr<'_>) {
        let lifetime = repr.find(|a| match a {
            Attribute::Lifetime(l) => Some(Duration::from_secs(u64::from(*l))),
            _ => None,
        });
        match request {
            Request::Allocate => {
                let relayed = repr.find(|a| match a {
                    Attribute::XorRelayedAddress(SocketAddr::V4(r)) => Some(*r),
                    _ => None,
                });
                let Some(relayed) = relayed else {
                    self.fail(
                        Request::Allocate,
                        Error::Protocol(
                            "Allocate succeeded without an IPv4 XOR-RELAYED-ADDRESS".into(),
                        ),
                    );
                    return;
                };
                let lifetime =
                    lifetime.unwrap_or(Duration::from_secs(u64::from(self.settings.lifetime)));
                let mapped = repr.find(|a| match a {
                    Attribute::XorMappedAddress(m) => Some(*m),
                    _ => None,
                });
                self.relayed = Some(relayed);
                self.state = State::Allocated;
                self.refresh_at = Some(now + refresh_after(lifetime));
                self.events.push_back(Event::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                });
            }
            Request::Refresh { lifetime: 0 } => {
                self.state = State::Closed;
                self.events.push_back(Event::Closed);
            }
            Request::Refresh { .. } => {
                let lifetime =
                    lifetime.unwrap_or(Duration::from_secs(u64::from(self.settings.lifetime)));
                self.refresh_at = Some(now + refresh_after(lifetime));
                self.events.push_back(Event::Refreshed { lifetime });
            }
            Request::Permission(ips) => {
                for ip in &ips {
                    self.permissions
                        .insert(*ip, now + PERMISSION_LIFETIME - PERMISSION_MARGIN);
                }
                self.events.push_back(Event::PermissionCreated(ips));
            }
            Request::Channel(number, peer) => {
                self.channels.insert(
                    number,
                    (peer, Some(now + CHANNEL_LIFETIME - PERMISSION_MARGIN)),
                );
                // ChannelBind installs the peer's permission too.
                self.permissions
                    .insert(*peer.ip(), now + PERMISSION_LIFETIME - PERMISSION_MARGIN);
                self.events.push_back(Event::ChannelBound(number, peer));
            }
        }
    }

    fn on_error(
        &mut self,
        now: Instant,
        t: Transaction,
        code: u16,
        reason: String,
        repr: &Repr<'_>,
    ) {
        let realm = repr.find(|a| match a {
            Attribute::Realm(r) => Some((*r).to_owned()),
            _ => None,
        });
        let nonce = repr.find(|a| match a {
            Attribute::Nonce(n) => Some((*n).to_owned()),
            _ => None,
        });
        match code {
            error_code::UNAUTHORIZED if !t.signed => {
                // The challenge (RFC 8489 §9.2.3): sign from now on.
                let (Some(realm), Some(nonce)) = (realm, nonce) else {
                    self.fail(
                        t.request,
                        Error::Protocol("401 without REALM and NONCE".into()),
                    );
                    return;
                };
                self.key = Some(long_term_key(&self.username, &realm, &self.password));
                self.realm = Some(realm);
                self.nonce = Some(nonce);
                self.restart(now, t);
            }
            error_code::UNAUTHORIZED => {
                let error = Error::Unauthorized {
                    realm: self.realm.clone().unwrap_or_default(),
                    username: self.username.clone(),
                };
                self.fail(t.request, error);
            }
            error_code::STALE_NONCE if t.stale_retries < MAX_STALE_RETRIES => {
                let Some(nonce) = nonce else {
                    self.fail(t.request, Error::Protocol("438 without a NONCE".into()));
                    return;
                };
                if let Some(realm) = realm {
                    if self.realm.as_deref() != Some(realm.as_str()) {
                        self.key = Some(long_term_key(&self.username, &realm, &self.password));
                        self.realm = Some(realm);
                    }
                }
                self.nonce = Some(nonce);
                self.restart(now, t);
            }
            error_code::STALE_NONCE => {
                self.fail(
                    t.request,
                    Error::Protocol(format!(
                        "nonce stale {} times in a row (438)",
                        t.stale_retries + 1
                    )),
                );
            }
            _ => {
                let error = Error::Rejected {
                    request: t.request.name(),
                    code,
                    reason,
                };
                self.fail(t.request, error);
            }
        }
    }

    /// Sends `t`'s request again, signed with the current nonce, as a new
    /// transaction.
    fn restart(&mut self, now: Instant, t: Transaction) {
        let stale = t.stale_retries + u32::from(t.signed);
        self.start(now, t.request);
        if let Some(last) = self.pending.last_mut() {
            last.stale_retries = stale;
        }
    }

    fn fail(&mut self, request: Request, error: Error) {
        match request {
            Request::Allocate | Request::Refresh { lifetime: 1.. } => {
                self.pending.clear();
                self.state = State::Failed(error.clone());
                self.events.push_back(Event::Failed(error));
            }
            Request::Refresh { lifetime: 0 } => {
                self.state = State::Closed;
                self.events.push_back(Event::Closed);
            }
            Request::Permission(ips) => {
                for ip in &ips {
                    self.permissions.remove(ip);
                }
                self.events.push_back(Event::PermissionFailed(ips, error));
            }
            Request::Channel(number, peer) => {
                self.channels.remove(&number);
                self.events.push_back(Event::ChannelFailed(peer, error));
            }
        }
    }

    /// Starts the refreshes that are due.
    fn schedule(&mut self, now: Instant) {
        if self.state != State::Allocated {
            return;
        }
        let busy = |pending: &[Transaction], f: &dyn Fn(&Request) -> bool| {
            pending.iter().any(|t| f(&t.request))
        };
        if self.refresh_at.is_some_and(|at| at <= now)
            && !busy(&self.pending, &|r| matches!(r, Request::Refresh { .. }))
        {
            self.refresh_at = None;
            let lifetime = self.settings.lifetime.max(1);
            self.start(now, Request::Refresh { lifetime });
        }
        let due: Vec<Ipv4Addr> = self
            .permissions
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(ip, _)| *ip)
            .collect();
        if !due.is_empty() {
            for ip in &due {
                self.permissions
                    .insert(*ip, now + PERMISSION_LIFETIME - PERMISSION_MARGIN);
            }
            self.start(now, Request::Permission(due));
        }
        let channels: Vec<(u16, SocketAddrV4)> = self
            .channels
            .iter()
            .filter(|(_, (_, at))| at.is_some_and(|at| at <= now))
            .map(|(n, (p, _))| (*n, *p))
            .collect();
        for (n, peer) in channels {
            self.channels
                .insert(n, (peer, Some(now + CHANNEL_LIFETIME)));
            self.start(now, Request::Channel(n, peer));
        }
    }

    /// Builds `request` as a new transaction, to go out at the next poll.
    fn start(&mut self, now: Instant, request: Request) {
        let id: [u8; 12] = crate::util::rng::random_array();
        let mut attributes: Vec<Attribute<'_>> = Vec::new();
        let lifetime;
        match &request {
            Request::Allocate => {
                attributes.push(Attribute::RequestedTransport(PROTOCOL_UDP));
                attributes.push(Attribute::Lifetime(self.settings.lifetime));
            }
            Request::Refresh { lifetime: l } => {
                lifetime = *l;
                attributes.push(Attribute::Lifetime(lifetime));
            }
            Request::Permission(ips) => {
                for ip in ips {
                    attributes.push(Attribute::XorPeerAddress(SocketAddr::V4(
                        SocketAddrV4::new(*ip, 0),
                    )));
                }
            }
            Request::Channel(number, peer) => {
                attributes.push(Attribute::ChannelNumber(*number));
                attributes.push(Attribute::XorPeerAddress(SocketAddr::V4(*peer)));
            }
        }
        let signed = matches!(
            (&self.key, &self.realm, &self.nonce),
            (Some(_), Some(_), Some(_))
        );
        if signed {
            attributes.push(Attribute::Username(&self.username));
            attributes.push(Attribute::Realm(self.realm.as_deref().unwrap_or_default()));
            attributes.push(Attribute::Nonce(self.nonce.as_deref().unwrap_or_default()));
            attributes.push(Attribute::MessageIntegrity(&[0; INTEGRITY_LEN]));
        }
        attributes.push(Attribute::Fingerprint);
        let mut bytes = Repr {
            class: Class::Request,
            method: request.method(),
            cookie: MAGIC_COOKIE,
            transaction_id: id,
            attributes,
        }
        .to_bytes();
        if let (true, Some(key)) = (signed, self.key) {
            auth::sign(&mut bytes, &key);
        }
        let rto = self.settings.rto;
        let next = match self.transport {
            Transport::Udp => now + rto,
            Transport::Tcp => now + self.settings.tcp_timeout,
        };
        self.pending.push(Transaction {
            id,
            request,
            bytes,
            signed,
            transmissions: 0,
            next,
            rto,
            due: true,
            stale_retries: 0,
        });
    }
}

/// When to refresh an allocation of `lifetime`: a minute before its end, or at half
/// of it when that is later (a short lifetime).
fn refresh_after(lifetime: Duration) -> Duration {
    (lifetime / 2).max(lifetime.saturating_sub(Duration::from_secs(60)))
}

#[cfg(test)]
mod tests;
