//! The STUN Binding responder as a sans-IO engine (in the manner of quinn-proto): a
//! datagram, the address it arrived on, its source and the time go in; what to send
//! from where to where comes out. No sockets, no clocks, no allocation beyond the
//! reply and the rate limiter's table, so it is unit-tested and fuzzed as is;
//! `server.rs` is the thin tokio loop around it.
//!
//! Behaviour (RFC 8489, RFC 5780, RFC 5389 §12 for RFC 3489 clients):
//! - Binding request → success with XOR-MAPPED-ADDRESS and MAPPED-ADDRESS (RFC 5780
//!   §6.1 asks for both), SOFTWARE, and FINGERPRINT when the request had one. With an
//!   alternate address (RFC 5780 mode) also RESPONSE-ORIGIN and OTHER-ADDRESS.
//! - RFC 3489 request (no magic cookie) → MAPPED-ADDRESS, SOURCE-ADDRESS and, in RFC 5780
//!   mode, CHANGED-ADDRESS; never XOR-MAPPED-ADDRESS (0x0020 is comprehension-required
//!   and unknown to RFC 3489 clients, which then discard the response).
//! - Unknown comprehension-required attributes → 420 with UNKNOWN-ATTRIBUTES. So is
//!   CHANGE-REQUEST when no alternate address is configured (RFC 5780 §6.1: a server
//!   that cannot answer from another address MUST respond 420 to any request with
//!   CHANGE-REQUEST), and RESPONSE-ADDRESS, which RFC 5389 retired (reflection).
//! - CHANGE-REQUEST → the reply's `from` is the other IP and/or port (RFC 5780 §6.1,
//!   Table 1). RESPONSE-PORT → the reply goes to that port of the source IP; PADDING
//!   together with RESPONSE-PORT → 400 (RFC 5780 §6.1).
//! - MESSAGE-INTEGRITY (and USERNAME, REALM, NONCE, ...) are understood but not
//!   checked: natgw's Binding usage has no credentials (RFC 8489 §9: authentication
//!   is up to the usage), so it answers without MESSAGE-INTEGRITY. A client that
//!   insists on an authenticated response discards it (RFC 8489 §9.1.4, §9.2.5) — the
//!   honest outcome; a 420 would misreport them as unknown and a 401 would start a
//!   credential exchange natgw cannot finish.
//! - Indications, responses, other methods, malformed or fingerprint-failing messages
//!   are dropped silently (RFC 8489 §6.3), each with a counted [`DropReason`].
//! - Amplification bound ([`reply_limit`]): a reply is at most three times as long as
//!   its request and at most [`MAX_RESPONSE_GROWTH`] bytes longer. Optional
//!   attributes are left out, least useful first (SOFTWARE, MAPPED-ADDRESS,
//!   RESPONSE-ORIGIN, OTHER-ADDRESS), until it fits. PADDING (RFC 5780 §7.6) pads the
//!   reply at most to the request's own length, up to the configured PADDING length:
//!   a client that wants a 1500-byte reply sends a 1500-byte request. Replies are also
//!   limited per source IP by a token bucket.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::wire::{self, attr, error_code, Attribute, Class, ErrorCode, Packet, Repr};
use crate::util::bucket::{RateLimiter, Verdict, WhenFull};

/// The STUN port (RFC 8489 §18.6).
pub const DEFAULT_PORT: u16 = 3478;
/// natgw's default alternate port for RFC 5780 (the next one, as most servers use).
pub const DEFAULT_ALTERNATE_PORT: u16 = 3479;
/// Longest SOFTWARE value natgw sends.
pub const MAX_SOFTWARE_LEN: usize = 40;
/// How much longer than its request a reply may ever be: four IPv4 address
/// attributes (48 bytes) and SOFTWARE (at most 44 bytes) on a bare request;
/// FINGERPRINT is only sent back to a request that carried one.
pub const MAX_RESPONSE_GROWTH: usize = 96;
/// How many times its request's length a reply may be.
pub const AMPLIFICATION_FACTOR: usize = 3;
/// Longest PADDING in replies, when the request is long enough: RFC 5780 §6.1 says
/// the MTU of the outgoing interface, to make the response fragment.
pub const DEFAULT_PADDING_LEN: u16 = 1500;
/// Largest configurable PADDING length (keeps the datagram under 64 KiB).
pub const MAX_PADDING_LEN: u16 = 60_000;

/// Attributes natgw understands but has no use for in an unauthenticated Binding
/// usage: they never cause a 420.
const UNDERSTOOD_UNUSED: &[u16] = &[
    attr::USERNAME,
    attr::REALM,
    attr::NONCE,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::PASSWORD_ALGORITHM,
    attr::USERHASH,
];

/// Per-source-IP token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained replies per second.
    pub per_second: u32,
    /// Replies allowed in a burst.
    pub burst: u32,
    /// Sources tracked at once; when full, idle ones are forgotten first, then the
    /// longest-idle.
    pub max_sources: usize,
}

impl Default for RateLimit {
    fn default() -> Self {
        // A full RFC 5780 probe with retransmissions needs ~15 requests in a few
        // seconds; Debian's `stun` client about as many.
        Self {
            per_second: 10,
            burst: 30,
            max_sources: 4096,
        }
    }
}

/// What the responder answers as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Whether to answer at all (drops everything as [`DropReason::Disabled`] if not).
    pub enabled: bool,
    /// Primary address and port. An unspecified IP is allowed without an alternate
    /// address; then RESPONSE-ORIGIN / SOURCE-ADDRESS are left out.
    pub primary: SocketAddrV4,
    /// The RFC 5780 alternate ("other") IP. With it the responder listens on the four
    /// combinations of {primary, alternate} IP × {primary, alternate} port.
    pub alternate: Option<Ipv4Addr>,
    /// The RFC 5780 alternate port (used only with `alternate`).
    pub alternate_port: u16,
    /// SOFTWARE attribute value (at most [`MAX_SOFTWARE_LEN`] bytes); `None` to omit.
    pub software: Option<String>,
    /// Per-source rate limit; `None` for none.
    pub rate_limit: Option<RateLimit>,
    /// Longest PADDING in replies to requests with PADDING (never beyond the
    /// request's own length).
    pub padding_len: u16,
}

impl Config {
    /// Defaults around a primary address: no alternate, alternate port 3479, SOFTWARE
    /// "natgw VERSION", default rate limit, enabled.
    #[must_use]
    pub fn new(primary: SocketAddrV4) -> Self {
        Self {
            enabled: true,
            primary,
            alternate: None,
            alternate_port: DEFAULT_ALTERNATE_PORT,
            software: Some(concat!("natgw ", env!("CARGO_PKG_VERSION")).to_owned()),
            rate_limit: Some(RateLimit::default()),
            padding_len: DEFAULT_PADDING_LEN,
        }
    }

    /// The addresses to receive on: the primary, and with an alternate IP all four
    /// combinations (RFC 5780 §6: the same ports on both IPs).
    #[must_use]
    pub fn local_addresses(&self) -> Vec<SocketAddrV4> {
        match self.alternate {
            None => vec![self.primary],
            Some(alt) => {
                let (ip, port, alt_port) =
                    (*self.primary.ip(), self.primary.port(), self.alternate_port);
                vec![
                    SocketAddrV4::new(ip, port),
                    SocketAddrV4::new(ip, alt_port),
                    SocketAddrV4::new(alt, port),
                    SocketAddrV4::new(alt, alt_port),
                ]
            }
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(alt) = self.alternate {
            if self.primary.ip().is_unspecified() || alt.is_unspecified() {
                return Err(ConfigError::UnspecifiedWithAlternate);
            }
            if alt == *self.primary.ip() {
                return Err(ConfigError::AlternateIsPrimary);
            }
            if self.alternate_port == self.primary.port() || self.alternate_port == 0 {
                return Err(ConfigError::AlternatePortIsPrimary);
            }
        }
        if self.primary.port() == 0 {
            return Err(ConfigError::PortZero);
        }
        if let Some(s) = &self.software {
            if s.len() > MAX_SOFTWARE_LEN {
                return Err(ConfigError::SoftwareTooLong);
            }
        }
        if let Some(r) = &self.rate_limit {
            if r.per_second == 0 || r.burst == 0 || r.max_sources == 0 {
                return Err(ConfigError::RateLimitZero);
            }
        }
        if self.padding_len > MAX_PADDING_LEN {
            return Err(ConfigError::PaddingTooLong);
        }
        Ok(())
    }
}

/// A [`Config`] that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// RFC 5780 needs concrete addresses to report in OTHER-ADDRESS.
    UnspecifiedWithAlternate,
    /// The alternate IP equals the primary one.
    AlternateIsPrimary,
    /// The alternate port equals the primary one or is 0.
    AlternatePortIsPrimary,
    /// The primary port is 0.
    PortZero,
    /// SOFTWARE is longer than [`MAX_SOFTWARE_LEN`].
    SoftwareTooLong,
    /// A rate-limit parameter is zero.
    RateLimitZero,
    /// PADDING is longer than [`MAX_PADDING_LEN`].
    PaddingTooLong,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnspecifiedWithAlternate => {
                "with an alternate address, the primary and alternate IPs must be concrete addresses, not 0.0.0.0"
            }
            Self::AlternateIsPrimary => "the alternate IP must differ from the primary IP",
            Self::AlternatePortIsPrimary => {
                "the alternate port must be non-zero and differ from the primary port"
            }
            Self::PortZero => "the primary port must not be 0",
            Self::SoftwareTooLong => "SOFTWARE is longer than 40 bytes",
            Self::RateLimitZero => "rate-limit values must be at least 1",
            Self::PaddingTooLong => "PADDING length is above 60000 bytes",
        })
    }
}

impl std::error::Error for ConfigError {}

/// Why a datagram got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The responder is disabled.
    Disabled,
    /// Not STUN: first bits set, or no cookie and not an RFC 3489 Binding message.
    NotStun,
    /// Bad length, truncated attribute, or a known attribute with a bad value.
    Malformed,
    /// FINGERPRINT wrong or not last.
    BadFingerprint,
    /// A response or indication (Binding indications are keepalives: no answer).
    NotARequest,
    /// A request for a method other than Binding.
    UnsupportedMethod,
    /// Arrived on an address that is not one of the configured four.
    NotOurAddress,
    /// The source IP exceeded its rate limit.
    RateLimited,
    /// The reply would break the amplification bound (never expected).
    Oversized,
    /// The source's link-layer address is not known and the budget for replies that
    /// would wait for its resolution is spent (a spoofed-source flood; see
    /// `crate::neighbours`). Decided by the socket loop, before the engine.
    Unresolved,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 10] = [
        Self::Disabled,
        Self::NotStun,
        Self::Malformed,
        Self::BadFingerprint,
        Self::NotARequest,
        Self::UnsupportedMethod,
        Self::NotOurAddress,
        Self::RateLimited,
        Self::Oversized,
        Self::Unresolved,
    ];

    /// Name for logs and counters.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::NotStun => "not_stun",
            Self::Malformed => "malformed",
            Self::BadFingerprint => "bad_fingerprint",
            Self::NotARequest => "not_a_request",
            Self::UnsupportedMethod => "unsupported_method",
            Self::NotOurAddress => "not_our_address",
            Self::RateLimited => "rate_limited",
            Self::Oversized => "oversized",
            Self::Unresolved => "unresolved",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }

    const fn from_wire(e: wire::Error) -> Self {
        match e {
            wire::Error::NotStun | wire::Error::BadMagic => Self::NotStun,
            wire::Error::BadFingerprint | wire::Error::FingerprintNotLast => Self::BadFingerprint,
            wire::Error::Truncated | wire::Error::BadLength | wire::Error::BadAttribute(_) => {
                Self::Malformed
            }
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with a datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send nothing.
    Drop(DropReason),
    /// Send `bytes` from the local address `from` to `to`.
    Reply {
        /// Local address to send from: where the request arrived, or another one of
        /// the four when CHANGE-REQUEST asked for it.
        from: SocketAddrV4,
        /// The request's source, or its IP with the RESPONSE-PORT.
        to: SocketAddrV4,
        /// The STUN message.
        bytes: Vec<u8>,
    },
}

/// Responder counters, shared with whoever reports them (atomics, so a daemon task
/// can read them while the engine runs).
#[derive(Debug, Default)]
pub struct Counters {
    received: AtomicU64,
    success: AtomicU64,
    legacy: AtomicU64,
    bad_request: AtomicU64,
    unknown_attribute: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    send_failed: AtomicU64,
}

/// A copy of [`Counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Datagrams handled.
    pub received: u64,
    /// Success responses sent (RFC 3489 ones included).
    pub success: u64,
    /// Of those, to RFC 3489 clients.
    pub legacy: u64,
    /// 400 responses sent.
    pub bad_request: u64,
    /// 420 responses sent.
    pub unknown_attribute: u64,
    /// Drops per reason, in [`DropReason::ALL`] order.
    pub dropped: Vec<(DropReason, u64)>,
    /// Replies the socket would not take at once (dropped, never waited for).
    pub send_failed: u64,
}

impl Counters {
    /// Reads every counter.
    #[must_use]
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            received: get(&self.received),
            success: get(&self.success),
            legacy: get(&self.legacy),
            bad_request: get(&self.bad_request),
            unknown_attribute: get(&self.unknown_attribute),
            dropped: DropReason::ALL
                .iter()
                .map(|r| (*r, get(&self.dropped[r.index()])))
                .collect(),
            send_failed: get(&self.send_failed),
        }
    }

    /// A datagram the socket loop dropped before the engine saw it.
    pub fn dropped_before_engine(&self, reason: DropReason) {
        Self::bump(&self.received);
        Self::bump(&self.dropped[reason.index()]);
    }

    /// A reply the socket would not take.
    pub fn send_failed(&self) {
        Self::bump(&self.send_failed);
    }

    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which of the two IPs / two ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Primary,
    Alternate,
}

impl Side {
    const fn flip(self, flip: bool) -> Self {
        match (self, flip) {
            (s, false) => s,
            (Self::Primary, true) => Self::Alternate,
            (Self::Alternate, true) => Self::Primary,
        }
    }
}

/// What kind of reply is being sent, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplyKind {
    Success,
    Error(u16),
}

/// The Binding responder.
#[derive(Debug)]
pub struct Responder {
    config: Config,
    /// SOFTWARE padded with spaces to whole 32-bit words: RFC 3489 clients (Debian's
    /// `stun`) read 0x8022 as the draft's SERVER attribute and reject other lengths.
    legacy_software: Option<String>,
    limiter: Option<RateLimiter<Ipv4Addr>>,
    counters: Arc<Counters>,
}

impl Responder {
    /// A responder that counts into `counters` (shared with whoever reports them, and
    /// kept across reconfiguration).
    ///
    /// # Errors
    /// When the configuration does not validate.
    pub fn new(config: Config, counters: Arc<Counters>) -> Result<Self, ConfigError> {
        config.validate()?;
        let legacy_software = config.software.as_ref().map(|s| {
            let mut padded = s.clone();
            padded.extend(std::iter::repeat_n(' ', wire::padded(s.len()) - s.len()));
            padded
        });
        Ok(Self {
            limiter: config.rate_limit.map(|l| {
                RateLimiter::new(
                    u64::from(l.per_second),
                    u64::from(l.burst),
                    l.max_sources,
                    WhenFull::EvictOldest,
                )
            }),
            legacy_software,
            config,
            counters,
        })
    }

    /// Handles one datagram that arrived on `local` from `src` at `now`.
    pub fn handle(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        src: SocketAddrV4,
        datagram: &[u8],
    ) -> Outcome {
        Counters::bump(&self.counters.received);
        match self.decide(now, local, src, datagram) {
            Err(reason) => {
                Counters::bump(&self.counters.dropped[reason.index()]);
                Outcome::Drop(reason)
            }
            Ok(answer) => {
                let c = &self.counters;
                match answer.kind {
                    ReplyKind::Success => {
                        Counters::bump(&c.success);
                        if answer.legacy {
                            Counters::bump(&c.legacy);
                        }
                    }
                    ReplyKind::Error(error_code::BAD_REQUEST) => Counters::bump(&c.bad_request),
                    ReplyKind::Error(_) => Counters::bump(&c.unknown_attribute),
                }
                Outcome::Reply {
                    from: answer.from,
                    to: answer.to,
                    bytes: answer.bytes,
                }
            }
        }
    }

    fn decide(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        src: SocketAddrV4,
        datagram: &[u8],
    ) -> Result<Answer, DropReason> {
        if !self.config.enabled {
            return Err(DropReason::Disabled);
        }
        let sides = self.locate(local)?;
        let packet = Packet::new_checked(datagram).map_err(DropReason::from_wire)?;
        let request = Repr::parse(&packet).map_err(DropReason::from_wire)?;
        if request.class != Class::Request {
            return Err(DropReason::NotARequest);
        }
        if request.method != wire::METHOD_BINDING {
            return Err(DropReason::UnsupportedMethod);
        }
        if let Some(limiter) = &mut self.limiter {
            if limiter.check(*src.ip(), now) != Verdict::Allow {
                return Err(DropReason::RateLimited);
            }
        }

        let mut unknown: Vec<u16> = Vec::new();
        let mut change = None;
        let mut response_port = None;
        let mut padding = false;
        for a in &request.attributes {
            match a {
                Attribute::ChangeRequest(c) => {
                    if self.config.alternate.is_none() {
                        // RFC 5780 §6.1: no alternate address → 420, whatever the flags.
                        push_unique(&mut unknown, attr::CHANGE_REQUEST);
                    }
                    change.get_or_insert(*c);
                }
                Attribute::ResponsePort(p) => {
                    response_port.get_or_insert(*p);
                }
                Attribute::Padding(_) => padding = true,
                Attribute::Other { kind, .. }
                    if attr::is_comprehension_required(*kind)
                        && !UNDERSTOOD_UNUSED.contains(kind) =>
                {
                    push_unique(&mut unknown, *kind);
                }
                // The codec decodes TURN's attributes (RFC 8656 §18); they mean
                // nothing in a Binding request and are comprehension-required.
                Attribute::ChannelNumber(_)
                | Attribute::Lifetime(_)
                | Attribute::XorPeerAddress(_)
                | Attribute::Data(_)
                | Attribute::XorRelayedAddress(_)
                | Attribute::RequestedAddressFamily(_)
                | Attribute::EvenPort(_)
                | Attribute::RequestedTransport(_)
                | Attribute::DontFragment
                | Attribute::ReservationToken(_) => push_unique(&mut unknown, a.kind()),
                _ => {}
            }
        }
        let with_fingerprint =
            !request.is_legacy() && request.attributes.contains(&Attribute::Fingerprint);

        let (kind, from, to, bytes) = if !unknown.is_empty() {
            let code = error_code::UNKNOWN_ATTRIBUTE;
            let bytes = self.error(&request, code, unknown, with_fingerprint, datagram.len());
            (ReplyKind::Error(code), local, src, bytes)
        } else if (padding && response_port.is_some()) || response_port == Some(0) {
            // RFC 5780 §6.1: PADDING with RESPONSE-PORT → 400. Port 0 cannot be sent to.
            // Errors go back to the source, never to RESPONSE-PORT.
            let code = error_code::BAD_REQUEST;
            let bytes = self.error(&request, code, Vec::new(), with_fingerprint, datagram.len());
            (ReplyKind::Error(code), local, src, bytes)
        } else {
            let change = change.unwrap_or_default();
            let from = match sides {
                Some((ip, port)) => {
                    self.address(ip.flip(change.change_ip), port.flip(change.change_port))
                }
                None => local,
            };
            let other = sides.map(|(ip, port)| self.address(ip.flip(true), port.flip(true)));
            let to = SocketAddrV4::new(*src.ip(), response_port.unwrap_or(src.port()));
            let shape = Shape {
                request_len: datagram.len(),
                padding,
                with_fingerprint,
            };
            let bytes = self.success(&request, src, from, other, shape);
            (ReplyKind::Success, from, to, bytes)
        };

        // The amplification bound, checked rather than assumed.
        if bytes.len() > reply_limit(datagram.len()) {
            return Err(DropReason::Oversized);
        }
        Ok(Answer {
            kind,
            legacy: request.is_legacy(),
            from,
            to,
            bytes,
        })
    }

    /// Which IP and port `local` is, in RFC 5780 mode (`None` without an alternate:
    /// then any local address is the primary).
    fn locate(&self, local: SocketAddrV4) -> Result<Option<(Side, Side)>, DropReason> {
        let Some(alt) = self.config.alternate else {
            return Ok(None);
        };
        let ip = if local.ip() == self.config.primary.ip() {
            Side::Primary
        } else if *local.ip() == alt {
            Side::Alternate
        } else {
            return Err(DropReason::NotOurAddress);
        };
        let port = if local.port() == self.config.primary.port() {
            Side::Primary
        } else if local.port() == self.config.alternate_port {
            Side::Alternate
        } else {
            return Err(DropReason::NotOurAddress);
        };
        Ok(Some((ip, port)))
    }

    fn address(&self, ip: Side, port: Side) -> SocketAddrV4 {
        let ip = match (ip, self.config.alternate) {
            (Side::Alternate, Some(alt)) => alt,
            _ => *self.config.primary.ip(),
        };
        let port = match port {
            Side::Primary => self.config.primary.port(),
            Side::Alternate => self.config.alternate_port,
        };
        SocketAddrV4::new(ip, port)
    }

    fn success(
        &self,
        request: &Repr<'_>,
        mapped: SocketAddrV4,
        from: SocketAddrV4,
        other: Option<SocketAddrV4>,
        shape: Shape,
    ) -> Vec<u8> {
        let mapped = SocketAddr::V4(mapped);
        // Optional attributes in the order they are sent, each with its rank: when
        // the bound is short, the highest ranks are left out first.
        let (essential, mut optional) = if request.is_legacy() {
            // RFC 3489 §11.2: MAPPED-ADDRESS, SOURCE-ADDRESS, CHANGED-ADDRESS.
            let mut optional = Vec::new();
            if !from.ip().is_unspecified() {
                optional.push((1, Attribute::SourceAddress(SocketAddr::V4(from))));
            }
            if let Some(other) = other {
                optional.push((0, Attribute::ChangedAddress(SocketAddr::V4(other))));
            }
            (Attribute::MappedAddress(mapped), optional)
        } else {
            // MAPPED-ADDRESS for clients of RFC 3489's era that parse a STUN 2
            // response; RFC 5780 §6.1: RESPONSE-ORIGIN always, OTHER-ADDRESS with a
            // second IP, which discovery cannot do without.
            let mut optional = vec![(2, Attribute::MappedAddress(mapped))];
            if let Some(other) = other {
                optional.push((1, Attribute::ResponseOrigin(SocketAddr::V4(from))));
                optional.push((0, Attribute::OtherAddress(SocketAddr::V4(other))));
            }
            (Attribute::XorMappedAddress(mapped), optional)
        };
        if let Some(software) = self.software(request) {
            optional.push((3, Attribute::Software(software)));
        }
        self.finish(request, Class::Success, vec![essential], optional, shape)
    }

    fn error(
        &self,
        request: &Repr<'_>,
        code: u16,
        mut unknown: Vec<u16>,
        with_fingerprint: bool,
        request_len: usize,
    ) -> Vec<u8> {
        let legacy = request.is_legacy();
        // RFC 3489 §11.2.9: the reason is a multiple of 4 bytes; §11.2.10: an odd list
        // of unknown attributes repeats one so the value is too.
        let reason = match (code, legacy) {
            (error_code::UNKNOWN_ATTRIBUTE, false) => "Unknown Attribute",
            (error_code::UNKNOWN_ATTRIBUTE, true) => "Unknown Attribute   ",
            (_, false) => "Bad Request",
            (_, true) => "Bad Request ",
        };
        let mut essential = vec![Attribute::ErrorCode(ErrorCode { code, reason })];
        if let Some(&first) = unknown.first() {
            if legacy && unknown.len() % 2 == 1 {
                unknown.push(first);
            }
            essential.push(Attribute::UnknownAttributes(unknown));
        }
        let optional = self
            .software(request)
            .map(|s| (0, Attribute::Software(s)))
            .into_iter()
            .collect();
        let shape = Shape {
            request_len,
            padding: false,
            with_fingerprint,
        };
        self.finish(request, Class::Error, essential, optional, shape)
    }

    fn software(&self, request: &Repr<'_>) -> Option<&str> {
        if request.is_legacy() {
            self.legacy_software.as_deref()
        } else {
            self.config.software.as_deref()
        }
    }

    /// Encodes a reply: `essential` attributes, then those of `optional` that fit in
    /// [`reply_limit`] (taken by rank, lowest first, and sent in the order given),
    /// PADDING when asked for and the request is long enough, and FINGERPRINT when
    /// asked for.
    fn finish<'a>(
        &'a self,
        request: &Repr<'_>,
        class: Class,
        mut attributes: Vec<Attribute<'a>>,
        optional: Vec<(u8, Attribute<'a>)>,
        shape: Shape,
    ) -> Vec<u8> {
        let limit = reply_limit(shape.request_len);
        let fingerprint = if shape.with_fingerprint {
            Attribute::Fingerprint.wire_len()
        } else {
            0
        };
        let mut len = wire::HEADER_LEN
            + attributes.iter().map(Attribute::wire_len).sum::<usize>()
            + fingerprint;
        let mut by_rank: Vec<usize> = (0..optional.len()).collect();
        by_rank.sort_by_key(|i| optional[*i].0);
        let mut keep = vec![false; optional.len()];
        for i in by_rank {
            let wire_len = optional[i].1.wire_len();
            if len + wire_len <= limit {
                len += wire_len;
                keep[i] = true;
            }
        }
        attributes.extend(
            optional
                .into_iter()
                .zip(keep)
                .filter_map(|((_, a), kept)| kept.then_some(a)),
        );
        if shape.padding {
            // Up to the request's own length: the reply never outgrows it for it.
            let room = shape
                .request_len
                .saturating_sub(len + wire::ATTR_HEADER_LEN);
            let pad = usize::from(self.config.padding_len).min(room) / 4 * 4;
            if let Ok(pad) = u16::try_from(pad) {
                if pad > 0 {
                    attributes.push(Attribute::Padding(pad));
                }
            }
        }
        if shape.with_fingerprint {
            attributes.push(Attribute::Fingerprint);
        }
        Repr {
            class,
            method: request.method,
            // Echoed: for RFC 3489 clients these are the first 32 bits of their
            // transaction ID (RFC 5389 §12.2).
            cookie: request.cookie,
            transaction_id: request.transaction_id,
            attributes,
        }
        .to_bytes()
    }
}

/// Longest reply to a request of `request_len` bytes: [`AMPLIFICATION_FACTOR`] times
/// its length and at most [`MAX_RESPONSE_GROWTH`] bytes more. A bare 20-byte Binding
/// request (the smallest) may get 60 bytes back.
#[must_use]
pub const fn reply_limit(request_len: usize) -> usize {
    let times = request_len.saturating_mul(AMPLIFICATION_FACTOR);
    let plus = request_len.saturating_add(MAX_RESPONSE_GROWTH);
    if times < plus {
        times
    } else {
        plus
    }
}

/// What a reply must fit: its request's length, whether it asked for PADDING, and
/// whether it carried FINGERPRINT.
#[derive(Clone, Copy)]
struct Shape {
    request_len: usize,
    padding: bool,
    with_fingerprint: bool,
}

/// A reply decided on, before counting.
struct Answer {
    kind: ReplyKind,
    legacy: bool,
    from: SocketAddrV4,
    to: SocketAddrV4,
    bytes: Vec<u8>,
}

fn push_unique(list: &mut Vec<u16>, kind: u16) {
    if !list.contains(&kind) {
        list.push(kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::wire::{ChangeRequest, MAGIC_COOKIE, METHOD_BINDING};
    use std::time::Duration;

    const PRIMARY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3478);
    const PRIMARY_ALT_PORT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3479);
    const ALT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const ALT_PRIMARY_PORT: SocketAddrV4 = SocketAddrV4::new(ALT, 3478);
    const ALT_ALT_PORT: SocketAddrV4 = SocketAddrV4::new(ALT, 3479);
    const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 40000);
    const TID: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn plain() -> Responder {
        Responder::new(Config::new(PRIMARY), Arc::default()).unwrap()
    }

    fn rfc5780() -> Responder {
        let mut config = Config::new(PRIMARY);
        config.alternate = Some(ALT);
        Responder::new(config, Arc::default()).unwrap()
    }

    fn request(attributes: Vec<Attribute<'_>>) -> Vec<u8> {
        Repr {
            class: Class::Request,
            method: METHOD_BINDING,
            cookie: MAGIC_COOKIE,
            transaction_id: TID,
            attributes,
        }
        .to_bytes()
    }

    fn legacy_request(attributes: Vec<Attribute<'_>>) -> Vec<u8> {
        Repr {
            class: Class::Request,
            method: METHOD_BINDING,
            cookie: 0xdead_beef,
            transaction_id: TID,
            attributes,
        }
        .to_bytes()
    }

    fn change(change_ip: bool, change_port: bool) -> Attribute<'static> {
        Attribute::ChangeRequest(ChangeRequest {
            change_ip,
            change_port,
        })
    }

    fn now() -> Instant {
        // One base instant per test thread keeps the rate limiter's arithmetic simple.
        thread_local!(static BASE: Instant = Instant::now());
        BASE.with(|b| *b)
    }

    /// Handles `datagram` arriving on `local` from CLIENT; returns (from, to, parsed).
    fn answer(
        r: &mut Responder,
        local: SocketAddrV4,
        datagram: &[u8],
    ) -> (SocketAddrV4, SocketAddrV4, Vec<u8>) {
        match r.handle(now(), local, CLIENT, datagram) {
            Outcome::Reply { from, to, bytes } => (from, to, bytes),
            Outcome::Drop(reason) => panic!("dropped: {reason}"),
        }
    }

    fn parse(bytes: &[u8]) -> Repr<'_> {
        Repr::parse(&Packet::new_checked(bytes).unwrap()).unwrap()
    }

    fn dropped(snapshot: &CountersSnapshot, reason: DropReason) -> u64 {
        snapshot
            .dropped
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    fn v4(a: SocketAddrV4) -> SocketAddr {
        SocketAddr::V4(a)
    }

    #[test]
    fn binding_request_gets_xor_mapped_and_mapped_address() {
        // rfc8489 §6.3.1.1, rfc5780 §6.1 (both MAPPED-ADDRESS and XOR-MAPPED-ADDRESS)
        let mut r = plain();
        let (from, to, bytes) = answer(&mut r, PRIMARY, &request(vec![]));
        assert_eq!((from, to), (PRIMARY, CLIENT));
        let reply = parse(&bytes);
        assert_eq!(reply.class, Class::Success);
        assert_eq!(reply.transaction_id, TID);
        assert_eq!(reply.cookie, MAGIC_COOKIE);
        assert_eq!(
            reply.attributes,
            [
                Attribute::XorMappedAddress(v4(CLIENT)),
                Attribute::MappedAddress(v4(CLIENT)),
                Attribute::Software(concat!("natgw ", env!("CARGO_PKG_VERSION"))),
            ]
        );
        assert_eq!(r.counters.snapshot().success, 1);
    }

    #[test]
    fn fingerprint_is_answered_with_fingerprint() {
        // rfc8489 §14.7: a response carries FINGERPRINT when the request did.
        let mut r = plain();
        let (_, _, bytes) = answer(&mut r, PRIMARY, &request(vec![Attribute::Fingerprint]));
        assert_eq!(
            parse(&bytes).attributes.last(),
            Some(&Attribute::Fingerprint)
        );
        let (_, _, bytes) = answer(&mut r, PRIMARY, &request(vec![]));
        assert!(!parse(&bytes).attributes.contains(&Attribute::Fingerprint));
    }

    #[test]
    fn rfc5780_response_has_response_origin_and_other_address() {
        // rfc5780 §6.1: RESPONSE-ORIGIN = where it was sent from; OTHER-ADDRESS = the
        // alternate IP and port relative to where the request arrived.
        let mut r = rfc5780();
        let (from, _, bytes) = answer(&mut r, PRIMARY, &request(vec![]));
        assert_eq!(from, PRIMARY);
        let reply = parse(&bytes);
        assert!(reply
            .attributes
            .contains(&Attribute::ResponseOrigin(v4(PRIMARY))));
        assert!(reply
            .attributes
            .contains(&Attribute::OtherAddress(v4(ALT_ALT_PORT))));
        // Arriving on the alternate address, "other" is the primary.
        let (from, _, bytes) = answer(&mut r, ALT_ALT_PORT, &request(vec![]));
        assert_eq!(from, ALT_ALT_PORT);
        assert!(parse(&bytes)
            .attributes
            .contains(&Attribute::OtherAddress(v4(PRIMARY))));
    }

    #[test]
    fn rfc5780_change_request_selects_the_source_address() {
        // rfc5780 §6.1 Table 1.
        let mut r = rfc5780();
        let cases = [
            (PRIMARY, false, false, PRIMARY),
            (PRIMARY, true, false, ALT_PRIMARY_PORT),
            (PRIMARY, false, true, PRIMARY_ALT_PORT),
            (PRIMARY, true, true, ALT_ALT_PORT),
            (ALT_ALT_PORT, true, false, PRIMARY_ALT_PORT),
            (ALT_ALT_PORT, false, true, ALT_PRIMARY_PORT),
            (ALT_PRIMARY_PORT, true, true, PRIMARY_ALT_PORT),
            (PRIMARY_ALT_PORT, true, true, ALT_PRIMARY_PORT),
        ];
        for (local, ip, port, expected) in cases {
            let (from, to, bytes) = answer(&mut r, local, &request(vec![change(ip, port)]));
            assert_eq!(
                from, expected,
                "arrived on {local}, change ip={ip} port={port}"
            );
            assert_eq!(to, CLIENT);
            let reply = parse(&bytes);
            assert!(reply
                .attributes
                .contains(&Attribute::ResponseOrigin(v4(expected))));
            assert!(reply
                .attributes
                .contains(&Attribute::XorMappedAddress(v4(CLIENT))));
        }
    }

    #[test]
    fn rfc5780_change_request_without_alternate_is_420() {
        // rfc5780 §6.1: "If the Request contains the CHANGE-REQUEST attribute and the
        // server does not have an alternate address and port ..., the server MUST
        // generate an error response of type 420" — whatever the flags.
        let mut r = plain();
        for (ip, port) in [(true, true), (true, false), (false, true), (false, false)] {
            let (from, to, bytes) = answer(&mut r, PRIMARY, &request(vec![change(ip, port)]));
            assert_eq!((from, to), (PRIMARY, CLIENT));
            let reply = parse(&bytes);
            assert_eq!(reply.class, Class::Error);
            assert_eq!(
                reply.attributes[..2],
                [
                    Attribute::ErrorCode(ErrorCode {
                        code: 420,
                        reason: "Unknown Attribute"
                    }),
                    Attribute::UnknownAttributes(vec![attr::CHANGE_REQUEST]),
                ]
            );
        }
        assert_eq!(r.counters.snapshot().unknown_attribute, 4);
    }

    #[test]
    fn rfc5780_response_port_redirects_to_that_port_of_the_source_ip() {
        // rfc5780 §7.5: value of 4 bytes (port + padding) per the RFC, or 2 bytes as
        // some clients send it.
        let mut r = rfc5780();
        let four = request(vec![Attribute::ResponsePort(5555)]);
        let two = request(vec![Attribute::Other {
            kind: attr::RESPONSE_PORT,
            value: &[0x15, 0xb3],
        }]);
        assert_eq!(two[22..24], [0x00, 0x02]);
        for datagram in [four, two] {
            let (from, to, bytes) = answer(&mut r, PRIMARY, &datagram);
            assert_eq!(from, PRIMARY);
            assert_eq!(to, SocketAddrV4::new(*CLIENT.ip(), 5555));
            // The mapped address is still where the request came from.
            assert!(parse(&bytes)
                .attributes
                .contains(&Attribute::XorMappedAddress(v4(CLIENT))));
        }
    }

    #[test]
    fn rfc5780_padding_with_response_port_is_400() {
        // rfc5780 §6.1: "If the Request also contains the RESPONSE-PORT attribute the
        // server MUST return an error response of type 400."
        let mut r = rfc5780();
        let datagram = request(vec![Attribute::ResponsePort(5555), Attribute::Padding(8)]);
        let (from, to, bytes) = answer(&mut r, PRIMARY, &datagram);
        // Errors go back to the source, never to RESPONSE-PORT.
        assert_eq!((from, to), (PRIMARY, CLIENT));
        let reply = parse(&bytes);
        assert_eq!(reply.class, Class::Error);
        assert_eq!(
            reply.attributes[0],
            Attribute::ErrorCode(ErrorCode {
                code: 400,
                reason: "Bad Request"
            })
        );
        assert_eq!(r.counters.snapshot().bad_request, 1);
    }

    #[test]
    fn response_port_zero_is_400() {
        let mut r = rfc5780();
        let (_, to, bytes) = answer(&mut r, PRIMARY, &request(vec![Attribute::ResponsePort(0)]));
        assert_eq!(to, CLIENT);
        assert_eq!(parse(&bytes).class, Class::Error);
    }

    #[test]
    fn rfc5780_padding_request_gets_padded_response() {
        // rfc5780 §6.1, §7.6: PADDING in the request → PADDING in the response, as
        // long as the request itself: a 1500-byte request gets a 1500-byte reply.
        let mut r = rfc5780();
        let datagram = request(vec![Attribute::Padding(1476)]);
        assert_eq!(datagram.len(), 1500);
        let (_, _, bytes) = answer(&mut r, PRIMARY, &datagram);
        let pad = parse(&bytes).find(|a| match a {
            Attribute::Padding(n) => Some(*n),
            _ => None,
        });
        assert!(pad.is_some_and(|n| n > 1300), "{pad:?}");
        assert!(bytes.len() <= datagram.len(), "{} bytes", bytes.len());
        assert!(
            bytes.len() > datagram.len() - 4,
            "padded to the request's length"
        );
    }

    #[test]
    fn padding_never_amplifies() {
        // A 24-byte request with an empty PADDING got 1564 bytes back before (a 65×
        // amplification, issue #11 finding 3); now no PADDING fits and the reply
        // stays within three times the request.
        let mut r = rfc5780();
        for pad in [0, 4, 64] {
            let datagram = request(vec![Attribute::Padding(pad)]);
            let (_, _, bytes) = answer(&mut r, PRIMARY, &datagram);
            assert!(
                bytes.len() <= AMPLIFICATION_FACTOR * datagram.len(),
                "{} → {}",
                datagram.len(),
                bytes.len()
            );
            assert!(
                parse(&bytes).find(|a| match a {
                    Attribute::XorMappedAddress(m) => Some(*m),
                    _ => None,
                }) == Some(SocketAddr::V4(CLIENT))
            );
        }
    }

    #[test]
    fn rfc8489_unknown_comprehension_required_attributes_get_420() {
        // rfc8489 §6.3.1: 420 listing each unknown comprehension-required type once;
        // unknown comprehension-optional ones (0xc001) are ignored.
        let mut r = plain();
        let datagram = request(vec![
            Attribute::Other {
                kind: 0x7001,
                value: &[],
            },
            Attribute::Other {
                kind: 0xc001,
                value: &[1],
            },
            Attribute::Other {
                kind: 0x7002,
                value: &[1, 2],
            },
            Attribute::Other {
                kind: 0x7001,
                value: &[],
            },
            Attribute::Fingerprint,
        ]);
        let (_, _, bytes) = answer(&mut r, PRIMARY, &datagram);
        let reply = parse(&bytes);
        assert_eq!(reply.class, Class::Error);
        assert!(reply
            .attributes
            .contains(&Attribute::UnknownAttributes(vec![0x7001, 0x7002])));
        assert_eq!(reply.attributes.last(), Some(&Attribute::Fingerprint));
        // Optional only: success.
        let datagram = request(vec![Attribute::Other {
            kind: 0xc001,
            value: &[1],
        }]);
        let (_, _, bytes) = answer(&mut r, PRIMARY, &datagram);
        assert_eq!(parse(&bytes).class, Class::Success);
    }

    #[test]
    fn rfc5769_ice_check_gets_420_for_priority_only() {
        // rfc5769 §2.1 sample: USERNAME and MESSAGE-INTEGRITY are understood (and not
        // checked); PRIORITY (0x0024) is ICE's, unknown to a plain STUN server;
        // ICE-CONTROLLED (0x8029) is optional.
        let sample: [u8; 108] = [
            0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
            0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e,
            0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24,
            0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1,
            0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68,
            0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c,
            0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5,
            0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
        ];
        let mut r = plain();
        let (_, _, bytes) = answer(&mut r, PRIMARY, &sample);
        let reply = parse(&bytes);
        assert_eq!(reply.class, Class::Error);
        assert!(reply
            .attributes
            .contains(&Attribute::UnknownAttributes(vec![0x0024])));
        assert_eq!(reply.attributes.last(), Some(&Attribute::Fingerprint));
    }

    #[test]
    fn turn_attributes_in_a_binding_request_get_420() {
        // The codec decodes RFC 8656's attributes for the TURN engine; a Binding
        // responder still does not understand them (comprehension-required).
        let mut r = plain();
        let datagram = request(vec![
            Attribute::Lifetime(600),
            Attribute::XorPeerAddress("192.0.2.7:9".parse().unwrap()),
            Attribute::DontFragment,
        ]);
        let (_, _, bytes) = answer(&mut r, PRIMARY, &datagram);
        let reply = parse(&bytes);
        assert_eq!(reply.class, Class::Error);
        assert!(reply
            .attributes
            .contains(&Attribute::UnknownAttributes(vec![
                attr::LIFETIME,
                attr::XOR_PEER_ADDRESS,
                attr::DONT_FRAGMENT
            ])));
    }

    #[test]
    fn message_integrity_is_understood_and_not_checked() {
        // rfc8489 §9: no credentials in this usage → answered, without MESSAGE-INTEGRITY.
        let mut r = plain();
        let datagram = request(vec![
            Attribute::Other {
                kind: attr::USERNAME,
                value: b"user",
            },
            Attribute::MessageIntegrity(&[0x55; 20]),
            Attribute::Fingerprint,
        ]);
        let (_, _, bytes) = answer(&mut r, PRIMARY, &datagram);
        let reply = parse(&bytes);
        assert_eq!(reply.class, Class::Success);
        assert!(!reply
            .attributes
            .iter()
            .any(|a| matches!(a, Attribute::MessageIntegrity(_))));
    }

    #[test]
    fn rfc3489_request_gets_mapped_source_and_changed_address() {
        // rfc5389 §12.2 / rfc3489 §11.2: echo the 128-bit transaction ID, MAPPED-ADDRESS
        // (no XOR-MAPPED-ADDRESS), SOURCE-ADDRESS, CHANGED-ADDRESS; no FINGERPRINT.
        let mut r = rfc5780();
        let datagram = legacy_request(vec![change(false, false)]);
        let (from, to, bytes) = answer(&mut r, PRIMARY, &datagram);
        assert_eq!((from, to), (PRIMARY, CLIENT));
        let reply = parse(&bytes);
        assert!(reply.is_legacy());
        assert_eq!(reply.cookie, 0xdead_beef);
        assert_eq!(reply.transaction_id, TID);
        assert_eq!(
            reply.attributes[..3],
            [
                Attribute::MappedAddress(v4(CLIENT)),
                Attribute::SourceAddress(v4(PRIMARY)),
                Attribute::ChangedAddress(v4(ALT_ALT_PORT)),
            ]
        );
        assert!(!reply
            .attributes
            .iter()
            .any(|a| matches!(a, Attribute::XorMappedAddress(_) | Attribute::Fingerprint)));
        // SOFTWARE (RFC 3489's SERVER) in whole words, space-padded.
        let software = reply.find(|a| match a {
            Attribute::Software(s) => Some(*s),
            _ => None,
        });
        let software = software.unwrap();
        assert_eq!(software.len() % 4, 0);
        assert_eq!(
            software.trim_end(),
            concat!("natgw ", env!("CARGO_PKG_VERSION"))
        );
        // Change IP (RFC 3489 test II): sent from the alternate IP, and SOURCE-ADDRESS
        // says so.
        let (from, _, bytes) = answer(&mut r, PRIMARY, &legacy_request(vec![change(true, false)]));
        assert_eq!(from, ALT_PRIMARY_PORT);
        assert!(parse(&bytes)
            .attributes
            .contains(&Attribute::SourceAddress(v4(ALT_PRIMARY_PORT))));
        assert_eq!(r.counters.snapshot().legacy, 2);
    }

    #[test]
    fn rfc3489_request_without_alternate_has_no_changed_address() {
        let mut r = plain();
        let (_, _, bytes) = answer(&mut r, PRIMARY, &legacy_request(vec![]));
        let reply = parse(&bytes);
        assert_eq!(
            reply.attributes[..2],
            [
                Attribute::MappedAddress(v4(CLIENT)),
                Attribute::SourceAddress(v4(PRIMARY)),
            ]
        );
        assert!(!reply
            .attributes
            .iter()
            .any(|a| matches!(a, Attribute::ChangedAddress(_))));
    }

    #[test]
    fn rfc3489_response_address_gets_420_in_rfc3489_form() {
        // rfc5389 §12.2: RESPONSE-ADDRESS is unknown now → 420. rfc3489 §11.2.10: an
        // odd list repeats an attribute; §11.2.9: the reason is a multiple of 4 bytes.
        let mut r = plain();
        let datagram = legacy_request(vec![Attribute::Other {
            kind: attr::RESPONSE_ADDRESS,
            value: &[0, 1, 0, 80, 10, 0, 0, 1],
        }]);
        let (_, to, bytes) = answer(&mut r, PRIMARY, &datagram);
        assert_eq!(to, CLIENT);
        let reply = parse(&bytes);
        assert!(reply.is_legacy());
        assert_eq!(
            reply.attributes[..2],
            [
                Attribute::ErrorCode(ErrorCode {
                    code: 420,
                    reason: "Unknown Attribute   "
                }),
                Attribute::UnknownAttributes(vec![attr::RESPONSE_ADDRESS, attr::RESPONSE_ADDRESS]),
            ]
        );
    }

    #[test]
    fn malformed_and_non_request_messages_are_dropped_and_counted() {
        // rfc8489 §6.3: silently discarded.
        let mut r = plain();
        let mut bad_fp = request(vec![Attribute::Fingerprint]);
        let last = bad_fp.len() - 1;
        bad_fp[last] ^= 1;
        let mut truncated = request(vec![Attribute::Software("abcdefgh")]);
        truncated[23] = 9; // SOFTWARE length 9 > 8 bytes present
        let mut indication = request(vec![]);
        indication[1] = 0x11;
        let mut response = request(vec![]);
        response[0] = 0x01;
        let mut allocate = request(vec![]);
        allocate[1] = 0x03;
        let mut odd_length = request(vec![]);
        odd_length.push(0);
        let cases: [(&[u8], DropReason); 9] = [
            (b"", DropReason::Malformed),
            (b"GET / HTTP/1.1\r\n\r\n....", DropReason::NotStun),
            (&[0u8; 19], DropReason::Malformed),
            (&bad_fp, DropReason::BadFingerprint),
            (&truncated, DropReason::Malformed),
            (&indication, DropReason::NotARequest),
            (&response, DropReason::NotARequest),
            (&allocate, DropReason::UnsupportedMethod),
            (&odd_length, DropReason::Malformed),
        ];
        for (datagram, reason) in cases {
            assert_eq!(
                r.handle(now(), PRIMARY, CLIENT, datagram),
                Outcome::Drop(reason),
                "{datagram:02x?}"
            );
        }
        let snapshot = r.counters.snapshot();
        assert_eq!(snapshot.received, 9);
        assert_eq!(dropped(&snapshot, DropReason::Malformed), 4);
        assert_eq!(dropped(&snapshot, DropReason::NotARequest), 2);
        assert_eq!(snapshot.success, 0);
    }

    #[test]
    fn request_on_a_foreign_address_is_dropped() {
        let mut r = rfc5780();
        let elsewhere = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 9), 3478);
        assert_eq!(
            r.handle(now(), elsewhere, CLIENT, &request(vec![])),
            Outcome::Drop(DropReason::NotOurAddress)
        );
        let other_port = SocketAddrV4::new(*PRIMARY.ip(), 9999);
        assert_eq!(
            r.handle(now(), other_port, CLIENT, &request(vec![])),
            Outcome::Drop(DropReason::NotOurAddress)
        );
    }

    #[test]
    fn disabled_responder_answers_nothing() {
        let mut config = Config::new(PRIMARY);
        config.enabled = false;
        let mut r = Responder::new(config, Arc::default()).unwrap();
        assert_eq!(
            r.handle(now(), PRIMARY, CLIENT, &request(vec![])),
            Outcome::Drop(DropReason::Disabled)
        );
    }

    #[test]
    fn rate_limit_is_per_source_and_refills() {
        let mut config = Config::new(PRIMARY);
        config.rate_limit = Some(RateLimit {
            per_second: 2,
            burst: 3,
            max_sources: 16,
        });
        let mut r = Responder::new(config, Arc::default()).unwrap();
        let t0 = now();
        let datagram = request(vec![]);
        let send = |r: &mut Responder, t: Instant, src: SocketAddrV4| {
            matches!(r.handle(t, PRIMARY, src, &datagram), Outcome::Reply { .. })
        };
        for _ in 0..3 {
            assert!(send(&mut r, t0, CLIENT));
        }
        assert!(!send(&mut r, t0, CLIENT));
        // Another port of the same IP shares the bucket; another IP does not.
        assert!(!send(&mut r, t0, SocketAddrV4::new(*CLIENT.ip(), 1)));
        assert!(send(
            &mut r,
            t0,
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 8), 1)
        ));
        // Half a second at 2/s brings one token back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(send(&mut r, t1, CLIENT));
        assert!(!send(&mut r, t1, CLIENT));
        assert_eq!(dropped(&r.counters.snapshot(), DropReason::RateLimited), 3);
    }

    #[test]
    fn rate_limiter_table_stays_bounded() {
        // The responder's limiter as it configures it: 8 sources, the longest idle
        // forgotten for a newcomer.
        let mut config = Config::new(PRIMARY);
        config.rate_limit = Some(RateLimit {
            per_second: 1,
            burst: 2,
            max_sources: 8,
        });
        let mut r = Responder::new(config, Arc::default()).unwrap();
        let t0 = now();
        for i in 0..100u8 {
            let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 5000);
            assert!(matches!(
                r.handle(t0, PRIMARY, src, &request(vec![])),
                Outcome::Reply { .. }
            ));
            assert!(r.limiter.as_ref().is_some_and(|l| l.len() <= 8));
        }
        // Long idle sources are forgotten first.
        let t1 = t0 + Duration::from_secs(10);
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 1), 5000);
        assert!(matches!(
            r.handle(t1, PRIMARY, src, &request(vec![])),
            Outcome::Reply { .. }
        ));
        assert_eq!(r.limiter.as_ref().map(RateLimiter::len), Some(1));
    }

    #[test]
    fn replies_stay_within_the_amplification_bound() {
        // The largest replies: RFC 5780 mode with the longest SOFTWARE, to the smallest
        // requests of each kind.
        let mut config = Config::new(PRIMARY);
        config.alternate = Some(ALT);
        config.software = Some("s".repeat(MAX_SOFTWARE_LEN));
        config.rate_limit = None;
        let mut r = Responder::new(config, Arc::default()).unwrap();
        let unknown = |n: u16| {
            (0..n)
                .map(|k| Attribute::Other {
                    kind: 0x7000 + k,
                    value: &[],
                })
                .collect::<Vec<_>>()
        };
        let requests = [
            request(vec![]),
            request(vec![Attribute::Fingerprint]),
            request(vec![change(true, true)]),
            request(vec![Attribute::ResponsePort(1)]),
            request(vec![Attribute::ResponsePort(1), Attribute::Padding(0)]),
            request(unknown(1)),
            request(unknown(2)),
            request(unknown(3)),
            request(unknown(200)),
            legacy_request(vec![]),
            legacy_request(unknown(1)),
            legacy_request(vec![change(true, true)]),
        ];
        for datagram in &requests {
            for local in [PRIMARY, ALT_ALT_PORT] {
                let (_, _, bytes) = answer(&mut r, local, datagram);
                assert!(
                    bytes.len() <= datagram.len() + MAX_RESPONSE_GROWTH
                        && bytes.len() <= AMPLIFICATION_FACTOR * datagram.len(),
                    "{} byte request → {} byte reply",
                    datagram.len(),
                    bytes.len()
                );
            }
        }
        // The bare 20-byte request gets 60 bytes: XOR-MAPPED-ADDRESS, OTHER-ADDRESS
        // and RESPONSE-ORIGIN; MAPPED-ADDRESS and SOFTWARE are left out.
        let (_, _, bytes) = answer(&mut r, PRIMARY, &requests[0]);
        assert_eq!(bytes.len(), 20 + 3 * 12);
        let kinds: Vec<u16> = parse(&bytes)
            .attributes
            .iter()
            .map(Attribute::kind)
            .collect();
        assert_eq!(
            kinds,
            [
                attr::XOR_MAPPED_ADDRESS,
                attr::RESPONSE_ORIGIN,
                attr::OTHER_ADDRESS
            ]
        );
        // A longer request gets them all (an optional attribute it carries adds 44).
        let longer = request(vec![Attribute::Other {
            kind: 0x8123,
            value: &[0; 40],
        }]);
        let (_, _, bytes) = answer(&mut r, ALT_ALT_PORT, &longer);
        assert_eq!(bytes.len(), 20 + 4 * 12 + 4 + MAX_SOFTWARE_LEN);
    }

    #[test]
    fn config_rejects_inconsistent_rfc5780_addresses() {
        let mut config = Config::new(PRIMARY);
        config.alternate = Some(*PRIMARY.ip());
        assert_eq!(config.validate(), Err(ConfigError::AlternateIsPrimary));
        config.alternate = Some(ALT);
        config.alternate_port = PRIMARY.port();
        assert_eq!(config.validate(), Err(ConfigError::AlternatePortIsPrimary));
        let mut config = Config::new(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 3478));
        assert_eq!(config.validate(), Ok(()));
        config.alternate = Some(ALT);
        assert_eq!(
            config.validate(),
            Err(ConfigError::UnspecifiedWithAlternate)
        );
        let mut config = Config::new(PRIMARY);
        config.software = Some("x".repeat(41));
        assert_eq!(config.validate(), Err(ConfigError::SoftwareTooLong));
        assert_eq!(
            rfc5780().config.local_addresses(),
            [PRIMARY, PRIMARY_ALT_PORT, ALT_PRIMARY_PORT, ALT_ALT_PORT]
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic sweep; the fuzz target does this properly.
        let mut r = rfc5780();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let base = request(vec![change(true, false), Attribute::Fingerprint]);
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut datagram = base.clone();
            let at = (x as usize) % datagram.len();
            datagram[at] ^= (x >> 32) as u8;
            datagram.truncate(datagram.len() - (i % 3) * 4);
            let _ = r.handle(now(), PRIMARY, CLIENT, &datagram);
        }
    }
}
