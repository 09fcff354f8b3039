//! The TURN server (RFC 8656, UDP relays over UDP or TCP client connections) as a
//! sans-IO engine. See [the module docs](crate::turn) for the design and limits.
//!
//! Inputs: [`Server::on_message`] (a datagram, or one [`Frame`](super::wire::Frame)
//! of a TCP stream, from a client's 5-tuple), [`Server::on_peer_datagram`] (a
//! datagram a relay socket received) and [`Server::expire`]; [`Server::poll_timeout`]
//! says when `expire` is next due. Outputs: [`Action`]s. Relay addresses come from a
//! [`RelayAllocator`] the service implements (binding UDP sockets in a port range).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::auth::{self, Credentials, Integrity, Key, NonceCheck, Nonces, INTEGRITY_LEN};
use super::wire::{self as turn, error_code, ChannelData, Kind};
use crate::prefix::Ipv4Prefix;
use crate::stun::wire::{
    self as stun, attr, Attribute, Class, ErrorCode, Packet, Repr, MAGIC_COOKIE,
};
use crate::util::bucket::{TokenBucket, Verdict};

pub mod testing;
#[cfg(test)]
mod tests;

/// RFC 8656 §7.2: the lifetime of an allocation when the client asks for none.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// natgw's longest allocation lifetime (RFC 8656 §7.2 suggests one hour).
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// RFC 8656 §9: permissions last 300 s.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: channel bindings last 600 s.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §7.2: a port reserved by EVEN-PORT is held about 30 s.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// How long a nonce is accepted (coturn's default stale-nonce time).
pub const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(600);
/// Permissions one allocation may hold (a bound on memory per allocation).
pub const DEFAULT_MAX_PERMISSIONS: usize = 64;
/// Payloads longer than this are dropped (the largest that fits any TURN framing).
pub const MAX_PAYLOAD: usize = 65_000;
/// Longest SOFTWARE natgw sends.
pub const MAX_SOFTWARE_LEN: usize = 64;

/// The time, as the engine needs it: a monotonic instant for lifetimes, and Unix
/// seconds for nonces and shared-secret usernames (which carry wall-clock times).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// For lifetimes and rate limits.
    pub instant: Instant,
    /// Seconds since the Unix epoch.
    pub unix_secs: u64,
}

impl Now {
    /// The system's clocks (for the service; tests make their own).
    #[must_use]
    pub fn system() -> Self {
        Self {
            instant: Instant::now(),
            unix_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// This time plus `d` on both clocks.
    #[must_use]
    pub fn after(self, d: Duration) -> Self {
        Self {
            instant: self.instant + d,
            unix_secs: self.unix_secs + d.as_secs(),
        }
    }
}

/// The client's transport to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Transport {
    /// Datagrams: one message each; ChannelData unpadded.
    Udp,
    /// A stream cut by [`turn::Framer`]; ChannelData padded to 4 bytes.
    Tcp,
}

/// The 5-tuple an allocation belongs to (RFC 8656 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct FiveTuple {
    /// UDP or TCP.
    pub transport: Transport,
    /// The client's address as the server sees it.
    pub client: SocketAddr,
    /// The server address the client talks to.
    pub server: SocketAddr,
}

/// Why a [`RelayAllocator`] gave no address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// No port left in the range (or none of the kind asked for).
    Exhausted,
    /// A reserved address is no longer held.
    NotReserved,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Exhausted => "no relay port left",
            Self::NotReserved => "the reserved relay port is no longer held",
        })
    }
}

impl std::error::Error for AllocError {}

/// Where relay addresses come from: the service binds a UDP socket per allocation
/// in its port range; tests use [`testing::FakeAllocator`].
pub trait RelayAllocator {
    /// A relay address: an even port when `even_port`; with `reserve_next` also the
    /// port after it, held (not handed out) until [`Self::claim`] or
    /// [`Self::release`] (RFC 8656 §7.2, EVEN-PORT with R).
    ///
    /// # Errors
    /// [`AllocError::Exhausted`] when no suitable port is free.
    fn allocate(&mut self, even_port: bool, reserve_next: bool)
        -> Result<SocketAddrV4, AllocError>;

    /// Hands out an address an earlier `allocate` reserved.
    ///
    /// # Errors
    /// [`AllocError::NotReserved`] when it is not held.
    fn claim(&mut self, reserved: SocketAddrV4) -> Result<(), AllocError>;

    /// Gives an address back: its allocation ended, or its reservation lapsed.
    fn release(&mut self, addr: SocketAddrV4);
}

impl<A: RelayAllocator + ?Sized> RelayAllocator for Box<A> {
    fn allocate(
        &mut self,
        even_port: bool,
        reserve_next: bool,
    ) -> Result<SocketAddrV4, AllocError> {
        (**self).allocate(even_port, reserve_next)
    }

    fn claim(&mut self, reserved: SocketAddrV4) -> Result<(), AllocError> {
        (**self).claim(reserved)
    }

    fn release(&mut self, addr: SocketAddrV4) {
        (**self).release(addr);
    }
}

/// Per-allocation bandwidth cap: a token bucket of bytes, counted on payloads both
/// ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bandwidth {
    /// Sustained bytes per second.
    pub bytes_per_second: u64,
    /// Bytes allowed in a burst.
    pub burst_bytes: u64,
}

/// The peer ranges refused by default (SSRF protection): this host and networks
/// (0/8), loopback, private (RFC 1918), shared address space (RFC 6598, CGN),
/// link-local, and multicast plus reserved (224/3, broadcast included).
#[must_use]
pub fn default_denied_peers() -> Vec<Ipv4Prefix> {
    [
        ([0, 0, 0, 0], 8),
        ([127, 0, 0, 0], 8),
        ([10, 0, 0, 0], 8),
        ([172, 16, 0, 0], 12),
        ([192, 168, 0, 0], 16),
        ([100, 64, 0, 0], 10),
        ([169, 254, 0, 0], 16),
        ([224, 0, 0, 0], 3),
    ]
    .into_iter()
    .filter_map(|(octets, len)| Ipv4Prefix::new(Ipv4Addr::from(octets), len))
    .collect()
}

/// The server's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// REALM sent in challenges and used in every key.
    pub realm: String,
    /// SOFTWARE in responses (at most [`MAX_SOFTWARE_LEN`] bytes); `None` to omit.
    pub software: Option<String>,
    /// Where passwords come from.
    pub credentials: Credentials,
    /// The secret nonces and reservation tokens are derived from.
    pub secret: [u8; 32],
    /// How long a nonce is accepted before 438.
    pub nonce_lifetime: Duration,
    /// Allocation lifetime when none is asked for, and the least granted.
    pub default_lifetime: Duration,
    /// The most granted.
    pub max_lifetime: Duration,
    /// Lifetime of a permission.
    pub permission_lifetime: Duration,
    /// Lifetime of a channel binding.
    pub channel_lifetime: Duration,
    /// How long a port reserved by EVEN-PORT is held.
    pub reservation_lifetime: Duration,
    /// Allocations per username at once (486 beyond); `None` for no limit.
    pub user_quota: Option<usize>,
    /// Allocations at once (508 beyond); `None` for no limit.
    pub total_quota: Option<usize>,
    /// Permissions per allocation (508 beyond).
    pub max_permissions: usize,
    /// Peer ranges refused with 403.
    pub denied_peers: Vec<Ipv4Prefix>,
    /// Peer ranges allowed even inside `denied_peers` or `own_addresses`.
    pub allowed_peers: Vec<Ipv4Prefix>,
    /// This host's own addresses, refused as peers.
    pub own_addresses: Vec<Ipv4Addr>,
    /// The addresses relay sockets are bound on and their port range: a peer there
    /// is another allocation of this server (relay to relay: an ICE relayed pair, or
    /// two peers on the same relay) and is allowed although it is one of
    /// `own_addresses` or in `denied_peers` — on a port inside the range only.
    /// Permissions (which are per IP) for these addresses are granted; what is sent
    /// to or received from them is checked with the port. Empty: relay to relay is
    /// refused like any own address.
    pub relay_addresses: Vec<Ipv4Addr>,
    /// The relay port range that goes with `relay_addresses` (unused while that is
    /// empty).
    pub relay_ports: std::ops::RangeInclusive<u16>,
    /// Per-allocation bandwidth cap; `None` for none.
    pub bandwidth: Option<Bandwidth>,
}

impl Config {
    /// Defaults around a realm and credentials: a random secret, RFC 8656's
    /// lifetimes, 10 allocations per user, 1000 in all, the default denied peers,
    /// no bandwidth cap.
    #[must_use]
    pub fn new(realm: impl Into<String>, credentials: Credentials) -> Self {
        Self {
            realm: realm.into(),
            software: Some(concat!("natgw ", env!("CARGO_PKG_VERSION")).to_owned()),
            credentials,
            secret: crate::util::rng::random_array(),
            nonce_lifetime: DEFAULT_NONCE_LIFETIME,
            default_lifetime: DEFAULT_LIFETIME,
            max_lifetime: MAX_LIFETIME,
            permission_lifetime: PERMISSION_LIFETIME,
            channel_lifetime: CHANNEL_LIFETIME,
            reservation_lifetime: RESERVATION_LIFETIME,
            user_quota: Some(10),
            total_quota: Some(1000),
            max_permissions: DEFAULT_MAX_PERMISSIONS,
            denied_peers: default_denied_peers(),
            allowed_peers: Vec::new(),
            own_addresses: Vec::new(),
            relay_addresses: Vec::new(),
            relay_ports: 0..=0,
            bandwidth: None,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.realm.is_empty() || self.realm.len() > stun::MAX_REALM_LEN {
            return Err(ConfigError::Realm);
        }
        if self
            .software
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SOFTWARE_LEN)
        {
            return Err(ConfigError::SoftwareTooLong);
        }
        if self.default_lifetime.is_zero()
            || self.default_lifetime > self.max_lifetime
            || self.max_lifetime.as_secs() > u64::from(u32::MAX)
        {
            return Err(ConfigError::Lifetimes);
        }
        if self.nonce_lifetime.as_secs() == 0 {
            return Err(ConfigError::NonceLifetime);
        }
        if let Credentials::SharedSecret(secrets) = &self.credentials {
            if secrets.is_empty() {
                return Err(ConfigError::NoSecret);
            }
        }
        if self
            .bandwidth
            .is_some_and(|b| b.bytes_per_second == 0 || b.burst_bytes == 0)
        {
            return Err(ConfigError::Bandwidth);
        }
        Ok(())
    }

    fn peer_allowed(&self, ip: Ipv4Addr) -> bool {
        if self.allowed_peers.iter().any(|p| p.contains(ip)) {
            return true;
        }
        !(self.denied_peers.iter().any(|p| p.contains(ip)) || self.own_addresses.contains(&ip))
    }

    /// Whether `ip` is one of this server's relay addresses (a permission for it is
    /// granted; the port is checked per datagram).
    fn is_relay_ip(&self, ip: Ipv4Addr) -> bool {
        self.relay_addresses.contains(&ip)
    }

    /// Whether datagrams may go to, or come from, `peer`: an allowed IP, or another
    /// relay socket of this server (a relay address, a port in the relay range).
    fn peer_endpoint_allowed(&self, peer: SocketAddrV4) -> bool {
        if self.is_relay_ip(*peer.ip())
            && !self.allowed_peers.iter().any(|p| p.contains(*peer.ip()))
        {
            return self.relay_ports.contains(&peer.port());
        }
        self.peer_allowed(*peer.ip())
    }

    /// RFC 8656 §7.2: the asked-for lifetime within [default, max]; none → default.
    fn lifetime(&self, requested: Option<u32>) -> Duration {
        requested.map_or(self.default_lifetime, |secs| {
            Duration::from_secs(u64::from(secs)).clamp(self.default_lifetime, self.max_lifetime)
        })
    }
}

/// A [`Config`] that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The realm is empty or longer than 763 bytes.
    #[error("the TURN realm must be 1 to 763 bytes")]
    Realm,
    /// SOFTWARE is too long.
    #[error("SOFTWARE is longer than 64 bytes")]
    SoftwareTooLong,
    /// Default lifetime zero or above the maximum.
    #[error("the default allocation lifetime must be non-zero and at most the maximum")]
    Lifetimes,
    /// Nonce lifetime below a second.
    #[error("the nonce lifetime must be at least a second")]
    NonceLifetime,
    /// Shared-secret credentials without a secret.
    #[error("shared-secret authentication needs at least one secret")]
    NoSecret,
    /// A zero bandwidth cap.
    #[error("bandwidth cap values must be at least 1")]
    Bandwidth,
}

/// Why a message got no answer and relayed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum DropReason {
    /// Neither STUN nor ChannelData, bad length, bad attribute.
    Malformed,
    /// FINGERPRINT wrong or not last.
    BadFingerprint,
    /// A response, an indication other than Send, or an RFC 3489 message.
    NotARequest,
    /// Send indication or ChannelData on a 5-tuple without allocation, or a peer
    /// datagram on a relay address without one.
    NoAllocation,
    /// Send indication without XOR-PEER-ADDRESS or DATA, or with an IPv6 peer.
    BadIndication,
    /// No permission for the peer's IP.
    NoPermission,
    /// ChannelData on a channel not bound.
    NoChannel,
    /// A Send indication to a peer in a denied range.
    PeerDenied,
    /// Over the allocation's bandwidth cap.
    Bandwidth,
    /// A payload longer than [`MAX_PAYLOAD`].
    TooLarge,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 10] = [
        Self::Malformed,
        Self::BadFingerprint,
        Self::NotARequest,
        Self::NoAllocation,
        Self::BadIndication,
        Self::NoPermission,
        Self::NoChannel,
        Self::PeerDenied,
        Self::Bandwidth,
        Self::TooLarge,
    ];

    /// Name for logs and counters.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadFingerprint => "bad_fingerprint",
            Self::NotARequest => "not_a_request",
            Self::NoAllocation => "no_allocation",
            Self::BadIndication => "bad_indication",
            Self::NoPermission => "no_permission",
            Self::NoChannel => "no_channel",
            Self::PeerDenied => "peer_denied",
            Self::Bandwidth => "bandwidth",
            Self::TooLarge => "too_large",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the engine counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Allocations now.
    pub allocations_active: u64,
    /// Allocations created.
    pub allocations_created: u64,
    /// Allocations that ran out of lifetime.
    pub allocations_expired: u64,
    /// Allocations deleted by a Refresh with LIFETIME 0.
    pub allocations_deleted: u64,
    /// 401s to requests without MESSAGE-INTEGRITY (the normal first round trip).
    pub auth_challenges: u64,
    /// 401s to wrong credentials: unknown user, expired shared-secret username, a
    /// MESSAGE-INTEGRITY that does not verify, another realm.
    pub auth_failures: u64,
    /// 438s.
    pub stale_nonces: u64,
    /// 486s.
    pub quota_refusals: u64,
    /// 508s.
    pub capacity_refusals: u64,
    /// 403s, and Send indications dropped for a denied peer.
    pub peer_denied: u64,
    /// Error responses of any code.
    pub error_responses: u64,
    /// Success responses.
    pub success_responses: u64,
    /// Datagrams relayed from clients to peers.
    pub to_peer_packets: u64,
    /// Their payload bytes.
    pub to_peer_bytes: u64,
    /// Datagrams relayed from peers to clients.
    pub to_client_packets: u64,
    /// Their payload bytes.
    pub to_client_bytes: u64,
    /// Drops per reason, in [`DropReason::ALL`] order.
    pub dropped: [u64; DropReason::ALL.len()],
}

impl Counters {
    /// Drops for one reason.
    #[must_use]
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize]
    }
}

/// Why an allocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EndReason {
    /// Refresh with LIFETIME 0.
    Deleted,
    /// Its lifetime ran out.
    Expired,
}

/// Something that happened, for the service and its logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An allocation was made: the service starts relaying on `relay`'s socket.
    AllocationCreated {
        /// Its 5-tuple.
        tuple: FiveTuple,
        /// Its relay address.
        relay: SocketAddrV4,
        /// Who made it.
        username: String,
        /// Its lifetime.
        lifetime: Duration,
    },
    /// An allocation ended; its relay address was released to the allocator.
    AllocationEnded {
        /// Its 5-tuple.
        tuple: FiveTuple,
        /// Its relay address.
        relay: SocketAddrV4,
        /// Why.
        reason: EndReason,
    },
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `bytes` to the client on its 5-tuple (over TCP: write them to the stream).
    ToClient {
        /// The client's 5-tuple.
        tuple: FiveTuple,
        /// A STUN message or ChannelData.
        bytes: Vec<u8>,
    },
    /// Send `bytes` from the relay socket `relay` to `peer`.
    ToPeer {
        /// The allocation's relay address.
        relay: SocketAddrV4,
        /// The peer.
        peer: SocketAddrV4,
        /// The payload.
        bytes: Vec<u8>,
        /// The client asked for the DF bit (DONT-FRAGMENT).
        dont_fragment: bool,
    },
    /// Something happened.
    Event(Event),
}

#[derive(Clone, Copy, Debug)]
struct Channel {
    peer: SocketAddrV4,
    expires: Instant,
}

#[derive(Debug)]
struct Allocation {
    relay: SocketAddrV4,
    username: String,
    expires: Instant,
    permissions: HashMap<Ipv4Addr, Instant>,
    channels: HashMap<u16, Channel>,
    peer_channels: HashMap<SocketAddrV4, u16>,
    bucket: Option<TokenBucket>,
    dont_fragment: bool,
    /// The Allocate that made it and the response, resent to a retransmission.
    allocate_id: [u8; 12],
    allocate_response: Vec<u8>,
}

impl Allocation {
    fn permitted(&self, ip: Ipv4Addr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }

    fn channel_of(&self, peer: SocketAddrV4, now: Instant) -> Option<u16> {
        let n = *self.peer_channels.get(&peer)?;
        self.channels
            .get(&n)
            .is_some_and(|c| c.expires > now)
            .then_some(n)
    }

    fn within_bandwidth(&mut self, now: Instant, bytes: usize) -> bool {
        self.bucket.as_mut().is_none_or(|b| {
            b.take_many(now, u64::try_from(bytes).unwrap_or(u64::MAX)) == Verdict::Allow
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct Reservation {
    addr: SocketAddrV4,
    expires: Instant,
}

/// A request's outcome before it is encoded.
type Outcome = Result<Vec<Attribute<'static>>, u16>;

/// The TURN server engine, taking relay addresses from an `A` (a boxed trait object
/// by default, so the service can choose its allocator at run time).
pub struct Server<A: RelayAllocator = Box<dyn RelayAllocator + Send>> {
    config: Config,
    nonces: Nonces,
    allocator: A,
    allocations: HashMap<FiveTuple, Allocation>,
    by_relay: HashMap<SocketAddrV4, FiveTuple>,
    per_user: HashMap<String, usize>,
    reservations: HashMap<[u8; 8], Reservation>,
    sequence: u64,
    counters: Counters,
}

impl<A: RelayAllocator> fmt::Debug for Server<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("realm", &self.config.realm)
            .field("allocations", &self.allocations.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<A: RelayAllocator> Server<A> {
    /// A server with `config`, taking relay addresses from `allocator`.
    ///
    /// # Errors
    /// When the configuration does not validate.
    pub fn new(config: Config, allocator: A) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            nonces: Nonces::new(config.secret, config.nonce_lifetime.as_secs()),
            config,
            allocator,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            reservations: HashMap::new(),
            sequence: 0,
            counters: Counters::default(),
        })
    }

    /// What has been counted.
    #[must_use]
    pub const fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The settings.
    #[must_use]
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// The relay address of the allocation on `tuple`, if any.
    #[must_use]
    pub fn relay_of(&self, tuple: &FiveTuple) -> Option<SocketAddrV4> {
        self.allocations.get(tuple).map(|a| a.relay)
    }

    /// The allocator (the service's, or a test's fake).
    #[must_use]
    pub const fn allocator(&self) -> &A {
        &self.allocator
    }

    /// A message from a client: a UDP datagram, or one frame of a TCP stream.
    pub fn on_message(&mut self, now: Now, tuple: FiveTuple, bytes: &[u8]) -> Vec<Action> {
        let mut actions = Vec::new();
        self.reap(now.instant, tuple, &mut actions);
        let result = match turn::kind(bytes) {
            Kind::Stun => self.on_stun(now, tuple, bytes, &mut actions),
            Kind::ChannelData => self.on_channel_data(now.instant, tuple, bytes, &mut actions),
            Kind::Other => Err(DropReason::Malformed),
        };
        if let Err(reason) = result {
            self.drop_for(reason);
        }
        actions
    }

    /// A datagram that `relay`'s socket received from `peer`.
    pub fn on_peer_datagram(
        &mut self,
        now: Now,
        relay: SocketAddrV4,
        peer: SocketAddrV4,
        bytes: &[u8],
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Err(reason) = self.relay_to_client(now.instant, relay, peer, bytes, &mut actions) {
            self.drop_for(reason);
        }
        actions
    }

    /// The client's TCP connection on `tuple` closed: its allocation, if any, ends
    /// now (RFC 8656 §3.1: a TCP allocation lives no longer than its connection),
    /// counted as deleted, its relay address released.
    pub fn on_connection_closed(&mut self, tuple: FiveTuple) -> Vec<Action> {
        let mut actions = Vec::new();
        self.end(tuple, EndReason::Deleted, &mut actions);
        actions
    }

    /// When [`Self::expire`] is next due: the earliest expiry of an allocation,
    /// permission, channel or reservation.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let allocations = self.allocations.values().flat_map(|a| {
            std::iter::once(a.expires)
                .chain(a.permissions.values().copied())
                .chain(a.channels.values().map(|c| c.expires))
        });
        allocations
            .chain(self.reservations.values().map(|r| r.expires))
            .min()
    }

    /// Ends what has expired at `now`: allocations (with an event each, their relay
    /// addresses released), permissions, channels, reservations.
    pub fn expire(&mut self, now: Now) -> Vec<Action> {
        let now = now.instant;
        let mut actions = Vec::new();
        let expired: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for tuple in expired {
            self.end(tuple, EndReason::Expired, &mut actions);
        }
        for a in self.allocations.values_mut() {
            a.permissions.retain(|_, e| *e > now);
            a.channels.retain(|_, c| c.expires > now);
            let channels = &a.channels;
            a.peer_channels.retain(|_, n| channels.contains_key(n));
        }
        let lapsed: Vec<[u8; 8]> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in lapsed {
            if let Some(r) = self.reservations.remove(&token) {
                self.allocator.release(r.addr);
            }
        }
        actions
    }

    fn drop_for(&mut self, reason: DropReason) {
        self.counters.dropped[reason as usize] += 1;
        if reason == DropReason::PeerDenied {
            self.counters.peer_denied += 1;
        }
    }

    /// Ends the allocation on `tuple` if its lifetime has run out, before anything
    /// uses it (`expire` may not have run yet).
    fn reap(&mut self, now: Instant, tuple: FiveTuple, actions: &mut Vec<Action>) {
        if self
            .allocations
            .get(&tuple)
            .is_some_and(|a| a.expires <= now)
        {
            self.end(tuple, EndReason::Expired, actions);
        }
    }

    fn end(&mut self, tuple: FiveTuple, reason: EndReason, actions: &mut Vec<Action>) {
        let Some(a) = self.allocations.remove(&tuple) else {
            return;
        };
        self.by_relay.remove(&a.relay);
        if let Some(n) = self.per_user.get_mut(&a.username) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(&a.username);
            }
        }
        self.allocator.release(a.relay);
        self.counters.allocations_active = self.counters.allocations_active.saturating_sub(1);
        match reason {
            EndReason::Deleted => self.counters.allocations_deleted += 1,
            EndReason::Expired => self.counters.allocations_expired += 1,
        }
        actions.push(Action::Event(Event::AllocationEnded {
            tuple,
            relay: a.relay,
            reason,
        }));
    }

    /// 8 or 12 unguessable bytes: an HMAC of a counter under the server secret.
    fn next_tag(&mut self) -> [u8; 20] {
        self.sequence += 1;
        auth::hmac_sha1_tag(&self.config.secret, &self.sequence.to_be_bytes())
    }

    fn on_stun(
        &mut self,
        now: Now,
        tuple: FiveTuple,
        bytes: &[u8],
        actions: &mut Vec<Action>,
    ) -> Result<(), DropReason> {
        let packet = Packet::new_checked(bytes).map_err(from_wire)?;
        let request = Repr::parse(&packet).map_err(from_wire)?;
        if request.is_legacy() {
            return Err(DropReason::NotARequest);
        }
        let reply = match (request.class, request.method) {
            (Class::Indication, turn::METHOD_SEND) => {
                return self.on_send(now.instant, tuple, &request, actions)
            }
            (Class::Request, stun::METHOD_BINDING) => {
                // RFC 8656 §7: a TURN server is a STUN server too; no credentials.
                self.counters.success_responses += 1;
                let mapped = vec![Attribute::XorMappedAddress(tuple.client)];
                self.encode(&request, Class::Success, mapped, None)
            }
            (
                Class::Request,
                turn::METHOD_ALLOCATE
                | turn::METHOD_REFRESH
                | turn::METHOD_CREATE_PERMISSION
                | turn::METHOD_CHANNEL_BIND,
            ) => self.on_request(now, tuple, bytes, &request, actions),
            (Class::Request, _) => {
                self.counters.error_responses += 1;
                self.error(&request, error_code::BAD_REQUEST, Vec::new(), None)
            }
            _ => return Err(DropReason::NotARequest),
        };
        actions.push(Action::ToClient {
            tuple,
            bytes: reply,
        });
        Ok(())
    }

    fn on_request(
        &mut self,
        now: Now,
        tuple: FiveTuple,
        bytes: &[u8],
        request: &Repr<'_>,
        actions: &mut Vec<Action>,
    ) -> Vec<u8> {
        let (username, key) = match self.authenticate(now, tuple, bytes, request) {
            Ok(credentials) => credentials,
            Err(reply) => {
                self.counters.error_responses += 1;
                return reply;
            }
        };
        let unknown = unknown_attributes(request);
        if !unknown.is_empty() {
            self.counters.error_responses += 1;
            let list = vec![Attribute::UnknownAttributes(unknown)];
            return self.error(request, error_code::UNKNOWN_ATTRIBUTE, list, Some(&key));
        }
        // A retransmitted Allocate gets the response its first copy got (RFC 8656
        // §7.2: the server remembers it for the transaction's lifetime).
        if request.method == turn::METHOD_ALLOCATE {
            if let Some(a) = self.allocations.get(&tuple) {
                if a.allocate_id == request.transaction_id && a.username == username {
                    return a.allocate_response.clone();
                }
            }
        }
        let now_i = now.instant;
        let outcome = match request.method {
            turn::METHOD_ALLOCATE => self.allocate(now_i, tuple, request, &username, actions),
            turn::METHOD_REFRESH => self.refresh(now_i, tuple, request, &username, actions),
            turn::METHOD_CREATE_PERMISSION => {
                self.create_permission(now_i, tuple, request, &username)
            }
            _ => self.channel_bind(now_i, tuple, request, &username),
        };
        match outcome {
            Ok(attributes) => {
                self.counters.success_responses += 1;
                let reply = self.encode(request, Class::Success, attributes, Some(&key));
                if request.method == turn::METHOD_ALLOCATE {
                    if let Some(a) = self.allocations.get_mut(&tuple) {
                        a.allocate_response.clone_from(&reply);
                    }
                }
                reply
            }
            Err(code) => {
                self.counters.error_responses += 1;
                match code {
                    error_code::ALLOCATION_QUOTA_REACHED => self.counters.quota_refusals += 1,
                    error_code::INSUFFICIENT_CAPACITY => self.counters.capacity_refusals += 1,
                    error_code::FORBIDDEN => self.counters.peer_denied += 1,
                    _ => {}
                }
                self.error(request, code, Vec::new(), Some(&key))
            }
        }
    }

    /// RFC 8489 §9.2.4, in its order: no MESSAGE-INTEGRITY → 401; USERNAME, REALM or
    /// NONCE missing → 400; unknown user (or expired shared-secret username) → 401;
    /// wrong MESSAGE-INTEGRITY → 401; stale nonce → 438. Returns the username and
    /// key, or the error response.
    fn authenticate(
        &mut self,
        now: Now,
        tuple: FiveTuple,
        bytes: &[u8],
        request: &Repr<'_>,
    ) -> Result<(String, Key), Vec<u8>> {
        let has_integrity = request
            .attributes
            .iter()
            .any(|a| matches!(a, Attribute::MessageIntegrity(_)));
        if !has_integrity {
            self.counters.auth_challenges += 1;
            return Err(self.challenge(now, tuple, request, error_code::UNAUTHORIZED, None));
        }
        let username = request.find(|a| match a {
            Attribute::Username(u) => Some(*u),
            _ => None,
        });
        let realm = request.find(|a| match a {
            Attribute::Realm(r) => Some(*r),
            _ => None,
        });
        let nonce = request.find(|a| match a {
            Attribute::Nonce(n) => Some(*n),
            _ => None,
        });
        let (Some(username), Some(realm), Some(nonce)) = (username, realm, nonce) else {
            return Err(self.error(request, error_code::BAD_REQUEST, Vec::new(), None));
        };
        let keys = if realm == self.config.realm {
            self.config
                .credentials
                .keys(username, &self.config.realm, now.unix_secs)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let Some(key) = keys
            .into_iter()
            .find(|k| auth::check_integrity(bytes, k) == Integrity::Valid)
        else {
            self.counters.auth_failures += 1;
            return Err(self.challenge(now, tuple, request, error_code::UNAUTHORIZED, None));
        };
        if self.nonces.check(nonce, now.unix_secs, tuple.client) != NonceCheck::Fresh {
            self.counters.stale_nonces += 1;
            return Err(self.challenge(now, tuple, request, error_code::STALE_NONCE, Some(&key)));
        }
        Ok((username.to_owned(), key))
    }

    /// A 401 or 438 with REALM and a fresh NONCE.
    fn challenge(
        &self,
        now: Now,
        tuple: FiveTuple,
        request: &Repr<'_>,
        code: u16,
        key: Option<&Key>,
    ) -> Vec<u8> {
        let nonce = self.nonces.issue(now.unix_secs, tuple.client);
        let extra = vec![
            Attribute::Realm(&self.config.realm),
            Attribute::Nonce(&nonce),
        ];
        self.error(request, code, extra, key)
    }

    fn error<'a>(
        &'a self,
        request: &Repr<'_>,
        code: u16,
        extra: Vec<Attribute<'a>>,
        key: Option<&Key>,
    ) -> Vec<u8> {
        let mut attributes = vec![Attribute::ErrorCode(ErrorCode {
            code,
            reason: error_code::reason(code),
        })];
        attributes.extend(extra);
        self.encode(request, Class::Error, attributes, key)
    }

    /// A response to `request`: `attributes`, SOFTWARE, MESSAGE-INTEGRITY with `key`,
    /// FINGERPRINT when the request had one.
    fn encode<'a>(
        &'a self,
        request: &Repr<'_>,
        class: Class,
        mut attributes: Vec<Attribute<'a>>,
        key: Option<&Key>,
    ) -> Vec<u8> {
        if let Some(software) = &self.config.software {
            attributes.push(Attribute::Software(software));
        }
        if key.is_some() {
            attributes.push(Attribute::MessageIntegrity(&[0; INTEGRITY_LEN]));
        }
        if request.attributes.contains(&Attribute::Fingerprint) {
            attributes.push(Attribute::Fingerprint);
        }
        let mut bytes = Repr {
            class,
            method: request.method,
            cookie: MAGIC_COOKIE,
            transaction_id: request.transaction_id,
            attributes,
        }
        .to_bytes();
        if let Some(key) = key {
            auth::sign(&mut bytes, key);
        }
        bytes
    }

    fn allocate(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        request: &Repr<'_>,
        username: &str,
        actions: &mut Vec<Action>,
    ) -> Outcome {
        if self.allocations.contains_key(&tuple) {
            return Err(error_code::ALLOCATION_MISMATCH);
        }
        let mut transport = None;
        let mut even_port = None;
        let mut token = None;
        let mut family = None;
        let mut lifetime = None;
        let mut dont_fragment = false;
        for a in &request.attributes {
            match a {
                Attribute::RequestedTransport(p) => {
                    transport.get_or_insert(*p);
                }
                Attribute::EvenPort(r) => {
                    even_port.get_or_insert(*r);
                }
                Attribute::ReservationToken(t) => {
                    token.get_or_insert(*t);
                }
                Attribute::RequestedAddressFamily(f) => {
                    family.get_or_insert(*f);
                }
                Attribute::Lifetime(l) => {
                    lifetime.get_or_insert(*l);
                }
                Attribute::DontFragment => dont_fragment = true,
                _ => {}
            }
        }
        match transport {
            None => return Err(error_code::BAD_REQUEST),
            Some(turn::PROTOCOL_UDP) => {}
            Some(_) => return Err(error_code::UNSUPPORTED_TRANSPORT_PROTOCOL),
        }
        // RFC 8656 §7.2: RESERVATION-TOKEN excludes EVEN-PORT and
        // REQUESTED-ADDRESS-FAMILY.
        if token.is_some() && (even_port.is_some() || family.is_some()) {
            return Err(error_code::BAD_REQUEST);
        }
        if family.is_some_and(|f| f != turn::FAMILY_IPV4) {
            return Err(error_code::ADDRESS_FAMILY_NOT_SUPPORTED);
        }
        let held = self.per_user.get(username).copied().unwrap_or(0);
        if self.config.user_quota.is_some_and(|q| held >= q) {
            return Err(error_code::ALLOCATION_QUOTA_REACHED);
        }
        if self
            .config
            .total_quota
            .is_some_and(|q| self.allocations.len() >= q)
        {
            return Err(error_code::INSUFFICIENT_CAPACITY);
        }
        let relay = if let Some(token) = token {
            // An unknown or lapsed token: 508 (RFC 8656 §7.2).
            let r = self
                .reservations
                .remove(&token)
                .ok_or(error_code::INSUFFICIENT_CAPACITY)?;
            if r.expires <= now {
                self.allocator.release(r.addr);
                return Err(error_code::INSUFFICIENT_CAPACITY);
            }
            self.allocator
                .claim(r.addr)
                .map_err(|_| error_code::INSUFFICIENT_CAPACITY)?;
            r.addr
        } else {
            let reserve = even_port == Some(true);
            self.allocator
                .allocate(even_port.is_some(), reserve)
                .map_err(|_| error_code::INSUFFICIENT_CAPACITY)?
        };
        let mut attributes = Vec::new();
        if even_port == Some(true) {
            if let Some(next) = relay.port().checked_add(1) {
                let mut t = [0; 8];
                t.copy_from_slice(&self.next_tag()[..8]);
                self.reservations.insert(
                    t,
                    Reservation {
                        addr: SocketAddrV4::new(*relay.ip(), next),
                        expires: now + self.config.reservation_lifetime,
                    },
                );
                attributes.push(Attribute::ReservationToken(t));
            }
        }
        let lifetime = self.config.lifetime(lifetime);
        let bucket = self
            .config
            .bandwidth
            .map(|b| TokenBucket::new(b.bytes_per_second, b.burst_bytes, now));
        self.allocations.insert(
            tuple,
            Allocation {
                relay,
                username: username.to_owned(),
                expires: now + lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                peer_channels: HashMap::new(),
                bucket,
                dont_fragment,
                allocate_id: request.transaction_id,
                allocate_response: Vec::new(),
            },
        );
        self.by_relay.insert(relay, tuple);
        *self.per_user.entry(username.to_owned()).or_default() += 1;
        self.counters.allocations_created += 1;
        self.counters.allocations_active += 1;
        actions.push(Action::Event(Event::AllocationCreated {
            tuple,
            relay,
            username: username.to_owned(),
            lifetime,
        }));
        let mut reply = vec![
            Attribute::XorRelayedAddress(SocketAddr::V4(relay)),
            Attribute::Lifetime(secs(lifetime)),
        ];
        reply.extend(attributes);
        reply.push(Attribute::XorMappedAddress(tuple.client));
        Ok(reply)
    }

    /// The allocation on `tuple` made by `username`: 437 without one, 441 when
    /// another user made it.
    fn owned(&mut self, tuple: FiveTuple, username: &str) -> Result<&mut Allocation, u16> {
        let a = self
            .allocations
            .get_mut(&tuple)
            .ok_or(error_code::ALLOCATION_MISMATCH)?;
        if a.username != username {
            return Err(error_code::WRONG_CREDENTIALS);
        }
        Ok(a)
    }

    fn refresh(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        request: &Repr<'_>,
        username: &str,
        actions: &mut Vec<Action>,
    ) -> Outcome {
        let requested = request.find(|a| match a {
            Attribute::Lifetime(l) => Some(*l),
            _ => None,
        });
        let family = request.find(|a| match a {
            Attribute::RequestedAddressFamily(f) => Some(*f),
            _ => None,
        });
        let lifetime = self.config.lifetime(requested);
        self.owned(tuple, username)?;
        // RFC 8656 §7.5: a family other than the allocation's → 443.
        if family.is_some_and(|f| f != turn::FAMILY_IPV4) {
            return Err(error_code::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if requested == Some(0) {
            self.end(tuple, EndReason::Deleted, actions);
            return Ok(vec![Attribute::Lifetime(0)]);
        }
        let a = self.owned(tuple, username)?;
        a.expires = now + lifetime;
        Ok(vec![Attribute::Lifetime(secs(lifetime))])
    }

    /// The IPv4 peer in `a`, checked against the denied ranges: 443 for IPv6, 403
    /// for a denied one. One of our relay addresses is allowed: with `port` (a
    /// channel's peer) when the port is a relay port, without (a permission, which
    /// is per IP) always.
    fn check_peer(&self, peer: SocketAddr, port: bool) -> Result<SocketAddrV4, u16> {
        let SocketAddr::V4(peer) = peer else {
            return Err(error_code::PEER_ADDRESS_FAMILY_MISMATCH);
        };
        let allowed = if port {
            self.config.peer_endpoint_allowed(peer)
        } else {
            self.config.peer_allowed(*peer.ip()) || self.config.is_relay_ip(*peer.ip())
        };
        if !allowed {
            return Err(error_code::FORBIDDEN);
        }
        Ok(peer)
    }

    fn create_permission(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        request: &Repr<'_>,
        username: &str,
    ) -> Outcome {
        self.owned(tuple, username)?;
        let mut peers = Vec::new();
        for a in &request.attributes {
            if let Attribute::XorPeerAddress(p) = a {
                peers.push(*self.check_peer(*p, false)?.ip());
            }
        }
        if peers.is_empty() {
            return Err(error_code::BAD_REQUEST);
        }
        peers.sort_unstable();
        peers.dedup();
        let (max, lifetime) = (self.config.max_permissions, self.config.permission_lifetime);
        let a = self.owned(tuple, username)?;
        let new = peers
            .iter()
            .filter(|ip| !a.permissions.contains_key(ip))
            .count();
        if a.permissions.len() + new > max {
            return Err(error_code::INSUFFICIENT_CAPACITY);
        }
        // All or nothing (RFC 8656 §9.2): only now, with every peer accepted.
        for ip in peers {
            a.permissions.insert(ip, now + lifetime);
        }
        Ok(Vec::new())
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        request: &Repr<'_>,
        username: &str,
    ) -> Outcome {
        self.owned(tuple, username)?;
        let channel = request.find(|a| match a {
            Attribute::ChannelNumber(n) => Some(*n),
            _ => None,
        });
        let peer = request.find(|a| match a {
            Attribute::XorPeerAddress(p) => Some(*p),
            _ => None,
        });
        let (Some(channel), Some(peer)) = (channel, peer) else {
            return Err(error_code::BAD_REQUEST);
        };
        if !turn::is_channel(channel) {
            return Err(error_code::BAD_REQUEST);
        }
        let peer = self.check_peer(peer, true)?;
        let (max, permission, binding) = (
            self.config.max_permissions,
            self.config.permission_lifetime,
            self.config.channel_lifetime,
        );
        let a = self.owned(tuple, username)?;
        // RFC 8656 §12.2: a channel bound to another peer, or the peer bound to
        // another channel → 400.
        if a.channels.get(&channel).is_some_and(|c| c.peer != peer) {
            return Err(error_code::BAD_REQUEST);
        }
        if a.peer_channels.get(&peer).is_some_and(|n| *n != channel) {
            return Err(error_code::BAD_REQUEST);
        }
        if !a.permissions.contains_key(peer.ip()) && a.permissions.len() >= max {
            return Err(error_code::INSUFFICIENT_CAPACITY);
        }
        a.channels.insert(
            channel,
            Channel {
                peer,
                expires: now + binding,
            },
        );
        a.peer_channels.insert(peer, channel);
        // Binding a channel installs or refreshes the peer's permission.
        a.permissions.insert(*peer.ip(), now + permission);
        Ok(Vec::new())
    }

    fn on_send(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        request: &Repr<'_>,
        actions: &mut Vec<Action>,
    ) -> Result<(), DropReason> {
        if !self.allocations.contains_key(&tuple) {
            return Err(DropReason::NoAllocation);
        }
        let peer = request.find(|a| match a {
            Attribute::XorPeerAddress(SocketAddr::V4(p)) => Some(*p),
            _ => None,
        });
        let data = request.find(|a| match a {
            Attribute::Data(d) => Some(*d),
            _ => None,
        });
        let (Some(peer), Some(data)) = (peer, data) else {
            return Err(DropReason::BadIndication);
        };
        let dont_fragment = request.attributes.contains(&Attribute::DontFragment);
        self.relay_to_peer(now, tuple, peer, data, dont_fragment, actions)
    }

    fn on_channel_data(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        bytes: &[u8],
        actions: &mut Vec<Action>,
    ) -> Result<(), DropReason> {
        let message = ChannelData::parse(bytes).map_err(|_| DropReason::Malformed)?;
        let a = self
            .allocations
            .get(&tuple)
            .ok_or(DropReason::NoAllocation)?;
        let peer = a
            .channels
            .get(&message.channel)
            .filter(|c| c.expires > now)
            .ok_or(DropReason::NoChannel)?
            .peer;
        let dont_fragment = a.dont_fragment;
        self.relay_to_peer(now, tuple, peer, message.data, dont_fragment, actions)
    }

    fn relay_to_peer(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        peer: SocketAddrV4,
        data: &[u8],
        dont_fragment: bool,
        actions: &mut Vec<Action>,
    ) -> Result<(), DropReason> {
        // The deny list is checked again: the operator's lists may have changed
        // since the permission was made, and a permission never reaches a denied IP.
        if !self.config.peer_endpoint_allowed(peer) {
            return Err(DropReason::PeerDenied);
        }
        let a = self
            .allocations
            .get_mut(&tuple)
            .ok_or(DropReason::NoAllocation)?;
        if !a.permitted(*peer.ip(), now) {
            return Err(DropReason::NoPermission);
        }
        if !a.within_bandwidth(now, data.len()) {
            return Err(DropReason::Bandwidth);
        }
        self.counters.to_peer_packets += 1;
        self.counters.to_peer_bytes += data.len() as u64;
        actions.push(Action::ToPeer {
            relay: a.relay,
            peer,
            bytes: data.to_vec(),
            dont_fragment,
        });
        Ok(())
    }

    fn relay_to_client(
        &mut self,
        now: Instant,
        relay: SocketAddrV4,
        peer: SocketAddrV4,
        data: &[u8],
        actions: &mut Vec<Action>,
    ) -> Result<(), DropReason> {
        let tuple = *self.by_relay.get(&relay).ok_or(DropReason::NoAllocation)?;
        self.reap(now, tuple, actions);
        if data.len() > MAX_PAYLOAD {
            return Err(DropReason::TooLarge);
        }
        // A permission for one of our relay addresses lets in the other relay
        // sockets only, not whatever else on this host sends from that address.
        if self.config.is_relay_ip(*peer.ip()) && !self.config.peer_endpoint_allowed(peer) {
            return Err(DropReason::PeerDenied);
        }
        let a = self
            .allocations
            .get_mut(&tuple)
            .ok_or(DropReason::NoAllocation)?;
        if !a.permitted(*peer.ip(), now) {
            return Err(DropReason::NoPermission);
        }
        if !a.within_bandwidth(now, data.len()) {
            return Err(DropReason::Bandwidth);
        }
        let channel = a.channel_of(peer, now);
        let bytes = if let Some(channel) = channel {
            ChannelData { channel, data }.to_bytes(tuple.transport == Transport::Tcp)
        } else {
            let mut id = [0; 12];
            id.copy_from_slice(&self.next_tag()[..12]);
            Repr {
                class: Class::Indication,
                method: turn::METHOD_DATA,
                cookie: MAGIC_COOKIE,
                transaction_id: id,
                attributes: vec![
                    Attribute::XorPeerAddress(SocketAddr::V4(peer)),
                    Attribute::Data(data),
                ],
            }
            .to_bytes()
        };
        self.counters.to_client_packets += 1;
        self.counters.to_client_bytes += data.len() as u64;
        actions.push(Action::ToClient { tuple, bytes });
        Ok(())
    }
}

/// Comprehension-required attributes a TURN server does not understand. The
/// RFC 8489 security features natgw does not implement (MESSAGE-INTEGRITY-SHA256,
/// PASSWORD-ALGORITHM, USERHASH) are ignored rather than refused: a client that
/// sends them also sends MESSAGE-INTEGRITY, or gets its 401.
fn unknown_attributes(request: &Repr<'_>) -> Vec<u16> {
    const IGNORED: [u16; 3] = [
        attr::MESSAGE_INTEGRITY_SHA256,
        attr::PASSWORD_ALGORITHM,
        attr::USERHASH,
    ];
    let mut unknown = Vec::new();
    for a in &request.attributes {
        if let Attribute::Other { kind, .. } = a {
            if attr::is_comprehension_required(*kind)
                && !IGNORED.contains(kind)
                && !unknown.contains(kind)
            {
                unknown.push(*kind);
            }
        }
    }
    unknown
}

const fn from_wire(e: stun::Error) -> DropReason {
    match e {
        stun::Error::BadFingerprint | stun::Error::FingerprintNotLast => DropReason::BadFingerprint,
        _ => DropReason::Malformed,
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// Whether `ip` is one a peer may have under `config` (for tests and the service's
/// status output).
#[must_use]
pub fn peer_allowed(config: &Config, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => config.peer_allowed(ip),
        IpAddr::V6(_) => false,
    }
}
