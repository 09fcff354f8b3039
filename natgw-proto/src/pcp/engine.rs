//! The PCP server engine (RFC 6887) with NAT-PMP (RFC 6886) on the same port, sans
//! IO in the manner of quinn-proto: [`Engine::handle`] takes a datagram, the time and
//! the [`MappingTable`] and returns the answer to send back (if any);
//! [`Engine::unsolicited`] returns the announcements due at a time, and
//! [`Engine::poll_timeout`] says when the next ones are; [`Engine::poll_event`] yields
//! what happened, for the caller to log. No sockets, timers or logging in here.
//!
//! The caller must feed it only datagrams that arrived on LAN interfaces (RFC 6887
//! §8.3 and RFC 6886 §3: never answer on the external side) and send each answer from
//! the address and port the request was sent to.

use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::natpmp::{self, MapProtocol};
use super::policy::{client_limiter, PcpConfig, PolicyError};
use super::table::{
    ExplicitMapping, Filter, Install, MappingKey, MappingTable, Origin, PeerRequest, Protocol,
    TableError,
};
use super::wire::{
    self, FilterRepr, MapRepr, Nonce, OpRepr, Opcode, OptionRepr, PeerRepr, ResultCode,
};
use crate::prefix::Ipv4Prefix;
use crate::util::bucket::{RateLimiter, TokenBucket, Verdict};

/// Where unsolicited ANNOUNCE responses and NAT-PMP address announcements go: the
/// all-hosts group, client port 5350 (RFC 6887 §14.1.3, RFC 6886 §3.2.1).
pub const ANNOUNCE_GROUP: SocketAddrV4 =
    SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 1), wire::CLIENT_PORT);
/// The nonce NAT-PMP mappings are stored with (NAT-PMP has none).
pub const NATPMP_NONCE: Nonce = [0; 12];
/// Announcements sent after a restart or an external address change (RFC 6886
/// §3.2.1: ten, the first two 250 ms apart, each interval twice the one before; PCP
/// (RFC 6887 §14.1.3, §14.2) asks for a few sends and natgw uses the same schedule).
pub const UNSOLICITED_COUNT: u32 = 10;
/// Interval between the first two announcements.
pub const UNSOLICITED_FIRST_INTERVAL: Duration = Duration::from_millis(250);
/// Events kept for [`Engine::poll_event`]; later ones are counted, not queued.
pub const MAX_QUEUED_EVENTS: usize = 1024;

/// A datagram the caller should send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddrV4,
    /// What.
    pub payload: Vec<u8>,
}

/// The result code a refusal was answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A PCP result code.
    Pcp(ResultCode),
    /// A NAT-PMP result code.
    NatPmp(natpmp::ResultCode),
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pcp(r) => r.fmt(f),
            Self::NatPmp(r) => r.fmt(f),
        }
    }
}

/// Why a datagram got no answer at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Too short to hold a header (RFC 6887 §8.3, RFC 6886 §3.3).
    Short,
    /// A response (R bit set), not a request (RFC 6887 §8.3, RFC 6886 §3.5).
    Response,
    /// The client is over its request rate (RFC 6887 §8.3 allows discarding).
    RateLimited,
    /// All clients together are over the server's request rate.
    Busy,
    /// The source is no host the NAT serves (outside the LAN prefixes, an address
    /// of the gateway, a network or broadcast address): spoofed, since the data path
    /// lets no such source in, or a host the operator did not make internal.
    NotInternal,
}

impl DropReason {
    /// Every reason, in [`DropReason::index`] order.
    pub const ALL: [Self; 5] = [
        Self::Short,
        Self::Response,
        Self::RateLimited,
        Self::Busy,
        Self::NotInternal,
    ];

    /// Position in [`DropReason::ALL`] and [`Stats::dropped`].
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::Short => 0,
            Self::Response => 1,
            Self::RateLimited => 2,
            Self::Busy => 3,
            Self::NotInternal => 4,
        }
    }

    /// Short name for logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Response => "response",
            Self::RateLimited => "rate-limited",
            Self::Busy => "busy",
            Self::NotInternal => "not-internal",
        }
    }
}

/// What the server has seen since it started: every datagram is counted once as
/// answered (success or refusal) or dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to [`Engine::handle`].
    pub requests: u64,
    /// Answered with success.
    pub succeeded: u64,
    /// Answered with an error result.
    pub refused: u64,
    /// Not answered, by [`DropReason::index`].
    pub dropped: [u64; DropReason::ALL.len()],
}

/// A mapping a request created, renewed or deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingEvent {
    /// The request's source.
    pub client: SocketAddrV4,
    /// PCP or NAT-PMP.
    pub origin: Origin,
    /// Protocol.
    pub protocol: Protocol,
    /// Internal endpoint.
    pub internal: SocketAddrV4,
    /// External endpoint.
    pub external: SocketAddrV4,
    /// Granted lifetime (0 for deletions).
    pub lifetime: u32,
}

impl fmt::Display for MappingEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client={} origin={} proto={} internal={} external={} lifetime={}",
            self.client,
            self.origin.name(),
            self.protocol,
            self.internal,
            self.external,
            self.lifetime
        )
    }
}

/// Something the caller should log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new explicit mapping.
    Created(MappingEvent),
    /// An explicit mapping renewed (or its filters changed).
    Renewed(MappingEvent),
    /// An explicit mapping deleted by its owner.
    Deleted(MappingEvent),
    /// PEER created or refreshed an implicit mapping.
    Peer {
        /// The request's source.
        client: SocketAddrV4,
        /// Protocol.
        protocol: Protocol,
        /// Internal endpoint.
        internal: SocketAddrV4,
        /// Remote peer.
        remote: SocketAddrV4,
        /// External endpoint.
        external: SocketAddrV4,
        /// Lifetime granted.
        lifetime: u32,
    },
    /// A request answered with an error.
    Refused {
        /// The request's source.
        client: SocketAddrV4,
        /// `pcp.map`, `nat-pmp.map`, ...
        op: &'static str,
        /// Result code sent.
        answer: Answer,
        /// Why, in words.
        reason: String,
    },
    /// A datagram dropped without an answer.
    Dropped {
        /// Its source.
        client: SocketAddrV4,
        /// Why.
        reason: DropReason,
    },
    /// Events discarded because nobody polled them.
    Lost {
        /// How many.
        count: u64,
    },
}

impl Event {
    /// Whether a request was answered with an error (worth `info`; drops and
    /// routine mapping changes are `debug` material).
    #[must_use]
    pub const fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Created(m) => write!(f, "pcp.mapping.created {m}"),
            Self::Renewed(m) => write!(f, "pcp.mapping.renewed {m}"),
            Self::Deleted(m) => write!(f, "pcp.mapping.deleted {m}"),
            Self::Peer {
                client,
                protocol,
                internal,
                remote,
                external,
                lifetime,
            } => write!(
                f,
                "pcp.peer client={client} proto={protocol} internal={internal} \
                 remote={remote} external={external} lifetime={lifetime}"
            ),
            Self::Refused {
                client,
                op,
                answer,
                reason,
            } => write!(
                f,
                "pcp.refused client={client} op={op} result={answer} reason=\"{reason}\""
            ),
            Self::Dropped { client, reason } => {
                write!(f, "pcp.dropped client={client} reason={}", reason.name())
            }
            Self::Lost { count } => write!(f, "pcp.events_lost count={count}"),
        }
    }
}

/// A PCP request refused: the result code and why.
#[derive(Debug)]
struct Refusal {
    result: ResultCode,
    reason: String,
}

fn refuse(result: ResultCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        result,
        reason: reason.into(),
    }
}

/// A NAT-PMP request refused.
type NatPmpRefusal = (natpmp::ResultCode, String);

fn table_refusal(e: TableError) -> Refusal {
    let result = match e {
        TableError::NoResources => ResultCode::NoResources,
        TableError::QuotaExceeded => ResultCode::UserExQuota,
        TableError::CannotProvideExternal => ResultCode::CannotProvideExternal,
        TableError::NetworkFailure => ResultCode::NetworkFailure,
        TableError::ExcessiveRemotePeers => ResultCode::ExcessiveRemotePeers,
        TableError::NotAuthorized | TableError::NonceMismatch => ResultCode::NotAuthorized,
    };
    refuse(result, e.to_string())
}

fn natpmp_table_refusal(e: TableError) -> NatPmpRefusal {
    let result = match e {
        TableError::NetworkFailure => natpmp::ResultCode::NetworkFailure,
        TableError::NotAuthorized | TableError::NonceMismatch => natpmp::ResultCode::NotAuthorized,
        TableError::NoResources
        | TableError::QuotaExceeded
        | TableError::CannotProvideExternal
        | TableError::ExcessiveRemotePeers => natpmp::ResultCode::OutOfResources,
    };
    (result, e.to_string())
}

/// The options of a request, checked.
#[derive(Debug, Default)]
struct RequestOptions {
    third_party: Option<Ipv4Addr>,
    third_party_raw: Option<Ipv6Addr>,
    prefer_failure: bool,
    filters: Vec<FilterRepr>,
}

impl RequestOptions {
    /// The options a success response carries back (RFC 6887 §13: THIRD_PARTY,
    /// PREFER_FAILURE and the FILTERs accepted are included in the response).
    fn echo(&self, with_filters: bool) -> Vec<OptionRepr> {
        let mut out = Vec::new();
        if let Some(a) = self.third_party_raw {
            out.push(OptionRepr::ThirdParty(a));
        }
        if self.prefer_failure {
            out.push(OptionRepr::PreferFailure);
        }
        if with_filters {
            out.extend(self.filters.iter().copied().map(OptionRepr::Filter));
        }
        out
    }
}

/// A suggested external address, if it names one IPv4 address.
fn suggested_ipv4(addr: Ipv6Addr) -> Option<Ipv4Addr> {
    addr.to_ipv4_mapped().filter(|a| !a.is_unspecified())
}

/// A suggested address that no IPv4 NAT can provide (a real IPv6 address).
fn suggests_ipv6(addr: Ipv6Addr) -> bool {
    addr.to_ipv4_mapped().is_none() && !addr.is_unspecified()
}

fn filter_repr(f: &Filter) -> FilterRepr {
    FilterRepr {
        prefix_len: 96 + f.remote.len(),
        remote_port: f.port,
        remote_address: f.remote.network().to_ipv6_mapped(),
    }
}

/// A quota a new mapping would exceed.
struct Quota {
    /// The host's own quota (USER_EX_QUOTA) rather than a shared one (NO_RESOURCES).
    per_host: bool,
    /// Why, for the log.
    reason: String,
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// Schedule of one run of announcements.
#[derive(Debug, Clone, Copy)]
struct Burst {
    next: Instant,
    interval: Duration,
    remaining: u32,
    map_updates: bool,
}

impl Burst {
    const fn new(now: Instant, map_updates: bool) -> Self {
        Self {
            next: now,
            interval: UNSOLICITED_FIRST_INTERVAL,
            remaining: UNSOLICITED_COUNT,
            map_updates,
        }
    }
}

/// The PCP/NAT-PMP server state: policy, epoch, rate limiter, pending announcements
/// and events. Mappings themselves live in the [`MappingTable`].
#[derive(Debug)]
pub struct Engine {
    config: PcpConfig,
    epoch_start: Instant,
    limiter: RateLimiter<Ipv4Addr>,
    total: TokenBucket,
    events: VecDeque<Event>,
    events_lost: u64,
    burst: Option<Burst>,
    stats: Stats,
}

impl Engine {
    /// A server whose state (and epoch) begins `now`. Announcements of the (re)start
    /// are scheduled right away (RFC 6887 §14.1.3); see [`Engine::unsolicited`].
    pub fn new(config: PcpConfig, now: Instant) -> Result<Self, PolicyError> {
        config.validate()?;
        Ok(Self {
            limiter: client_limiter(config.requests_per_second, config.burst),
            total: TokenBucket::new(
                u64::from(config.requests_per_second_total),
                u64::from(config.burst_total),
                now,
            ),
            config,
            epoch_start: now,
            events: VecDeque::new(),
            events_lost: 0,
            burst: Some(Burst::new(now, false)),
            stats: Stats::default(),
        })
    }

    /// The policy in force.
    #[must_use]
    pub const fn config(&self) -> &PcpConfig {
        &self.config
    }

    /// What the server has seen so far.
    #[must_use]
    pub const fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Epoch time: seconds since the server's mapping state began, modulo 2^32
    /// (RFC 6887 §8.5, RFC 6886 §3.6).
    #[must_use]
    pub fn epoch(&self, now: Instant) -> u32 {
        // Truncation is the wrap-around the RFCs specify.
        now.saturating_duration_since(self.epoch_start).as_secs() as u32
    }

    /// Mapping state was lost (the maps were recreated): the epoch starts again, so
    /// clients notice and recreate their mappings (RFC 6887 §8.5), and ANNOUNCE is
    /// multicast again.
    pub fn reset_epoch(&mut self, now: Instant) {
        self.epoch_start = now;
        self.burst = Some(Burst::new(now, false));
    }

    /// The external address changed (mappings kept, re-addressed by the table):
    /// announce it and send every PCP client unsolicited MAP responses with its new
    /// external endpoint (RFC 6887 §14.2, RFC 6886 §3.2.1).
    pub fn external_address_changed(&mut self, now: Instant) {
        self.burst = Some(Burst::new(now, true));
    }

    /// When [`Engine::unsolicited`] next has something to send.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.burst.map(|b| b.next)
    }

    /// The next event to log.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        if self.events_lost > 0 {
            let count = std::mem::take(&mut self.events_lost);
            return Some(Event::Lost { count });
        }
        None
    }

    fn push(&mut self, event: Event) {
        if event.is_refusal() {
            self.stats.refused += 1;
        }
        if self.events.len() < MAX_QUEUED_EVENTS {
            self.events.push_back(event);
        } else {
            self.events_lost += 1;
        }
    }

    fn error_lifetime(&self, result: ResultCode) -> u32 {
        if result.is_short_lived() {
            self.config.short_error_lifetime
        } else {
            self.config.long_error_lifetime
        }
    }

    /// Handles one datagram from `src` received on a LAN interface at `now`, and
    /// returns the answer to send back to `src` — `None` when the RFCs say to drop
    /// it silently (fewer than 2 bytes, a response, a PCP message shorter than its
    /// header, a truncated NAT-PMP mapping request), when `src` is no host the NAT
    /// serves ([`MappingTable::lan_of`]), or when the client or all clients together
    /// are over their rate. Answers are never longer than 1100 bytes.
    pub fn handle(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        datagram: &[u8],
        table: &mut impl MappingTable,
    ) -> Option<Vec<u8>> {
        self.stats.requests += 1;
        let refused_before = self.stats.refused;
        let answer = self.answer(now, src, datagram, table);
        if answer.is_some() && self.stats.refused == refused_before {
            self.stats.succeeded += 1;
        }
        answer
    }

    fn drop_request(&mut self, src: SocketAddrV4, reason: DropReason, log: bool) {
        self.stats.dropped[reason.index()] += 1;
        if log {
            self.push(Event::Dropped {
                client: src,
                reason,
            });
        }
    }

    fn answer(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        datagram: &[u8],
        table: &mut impl MappingTable,
    ) -> Option<Vec<u8>> {
        if let Some(reason) = self.silent_drop(datagram) {
            self.drop_request(src, reason, true);
            return None;
        }
        // Before the rate limiters, so spoofed sources cannot crowd real clients out
        // of them.
        if table.lan_of(*src.ip()).is_none() {
            self.drop_request(src, DropReason::NotInternal, true);
            return None;
        }
        // The client's own budget first: a client over it takes nothing from the
        // shared one.
        let limited = match self.limiter.check(*src.ip(), now) {
            Verdict::Drop { first } => Some((first, DropReason::RateLimited)),
            Verdict::Allow => match self.total.take(now) {
                Verdict::Drop { first } => Some((first, DropReason::Busy)),
                Verdict::Allow => None,
            },
        };
        if let Some((first, reason)) = limited {
            self.drop_request(src, reason, first);
            return None;
        }
        let reply = match datagram[0] {
            wire::VERSION => self.handle_pcp(now, src, datagram, table),
            natpmp::VERSION if self.config.natpmp => self.handle_natpmp(now, src, datagram, table),
            version => self.unsupported_version(now, src, datagram, version),
        };
        debug_assert!(reply.len() <= wire::MAX_LEN);
        Some(reply)
    }

    /// RFC 6887 §8.3's silent drops (and RFC 6886's equivalents).
    fn silent_drop(&self, datagram: &[u8]) -> Option<DropReason> {
        if datagram.len() < 2 {
            return Some(DropReason::Short);
        }
        if datagram[1] & 0x80 != 0 {
            return Some(DropReason::Response);
        }
        let short = match datagram[0] {
            wire::VERSION => datagram.len() < wire::HEADER_LEN,
            natpmp::VERSION if self.config.natpmp => {
                MapProtocol::from_opcode(datagram[1]).is_some()
                    && datagram.len() < natpmp::MAP_REQUEST_LEN
            }
            _ => false,
        };
        short.then_some(DropReason::Short)
    }

    /// RFC 6887 §9: an unsupported version gets UNSUPP_VERSION naming version 2 (the
    /// only PCP version; NAT-PMP's 0 is handled separately when enabled).
    fn unsupported_version(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        datagram: &[u8],
        version: u8,
    ) -> Vec<u8> {
        let result = ResultCode::UnsuppVersion;
        self.push(Event::Refused {
            client: src,
            op: "pcp",
            answer: Answer::Pcp(result),
            reason: format!("version {version} is not supported; this server speaks PCP version 2"),
        });
        let header = &datagram[..datagram.len().min(wire::HEADER_LEN)];
        wire::error_response(header, result, self.error_lifetime(result), self.epoch(now))
    }

    fn handle_pcp(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        datagram: &[u8],
        table: &mut impl MappingTable,
    ) -> Vec<u8> {
        let packet = wire::Packet::new_unchecked(datagram);
        let (op, outcome) = match wire::Request::parse(&packet) {
            Ok(request) => (
                op_name(Some(request.op.opcode())),
                self.pcp_request(now, src, &request, table),
            ),
            Err(e) => (
                op_name(Opcode::from_wire(packet.opcode())),
                Err(parse_refusal(&e)),
            ),
        };
        match outcome {
            Ok(response) => response.to_bytes(),
            Err(refusal) => {
                let lifetime = self.error_lifetime(refusal.result);
                self.push(Event::Refused {
                    client: src,
                    op,
                    answer: Answer::Pcp(refusal.result),
                    reason: refusal.reason,
                });
                wire::error_response(datagram, refusal.result, lifetime, self.epoch(now))
            }
        }
    }

    fn pcp_request(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        request: &wire::Request,
        table: &mut impl MappingTable,
    ) -> Result<wire::Response, Refusal> {
        // RFC 6887 §8.3: a client behind another (non-PCP) NAT would otherwise map
        // that NAT's address.
        if request.client_address.to_ipv4_mapped() != Some(*src.ip()) {
            return Err(refuse(
                ResultCode::AddressMismatch,
                format!(
                    "client address field {} is not the source address {}",
                    request.client_address,
                    src.ip()
                ),
            ));
        }
        let options = self.check_options(src, request, table)?;
        match &request.op {
            OpRepr::Announce => Ok(wire::Response {
                opcode: Opcode::Announce,
                result: ResultCode::Success,
                lifetime: 0,
                epoch: self.epoch(now),
                op: Some(OpRepr::Announce),
                options: Vec::new(),
            }),
            OpRepr::Map(map) => self.map(now, src, request.lifetime, map, &options, table),
            OpRepr::Peer(peer) => self.peer(now, src, request.lifetime, peer, &options, table),
        }
    }

    /// RFC 6887 §7.3 and §13: unknown mandatory options, options not valid for the
    /// opcode or repeated, and THIRD_PARTY authorisation.
    fn check_options(
        &self,
        src: SocketAddrV4,
        request: &wire::Request,
        table: &impl MappingTable,
    ) -> Result<RequestOptions, Refusal> {
        let opcode = request.op.opcode();
        let mut out = RequestOptions::default();
        for option in &request.options {
            let valid_here = match option {
                OptionRepr::Unknown { code, .. } if *code < wire::OPTIONAL_OPTION_MIN => {
                    return Err(refuse(
                        ResultCode::UnsuppOption,
                        format!("mandatory option {code} is not supported"),
                    ));
                }
                // Unknown optional options are ignored and not echoed.
                OptionRepr::Unknown { .. } => continue,
                OptionRepr::ThirdParty(_) => matches!(opcode, Opcode::Map | Opcode::Peer),
                OptionRepr::PreferFailure | OptionRepr::Filter(_) => opcode == Opcode::Map,
            };
            if !valid_here {
                return Err(refuse(
                    ResultCode::MalformedOption,
                    format!("option {} is not valid in {opcode}", option.code()),
                ));
            }
            match option {
                OptionRepr::ThirdParty(addr) => {
                    if out.third_party_raw.is_some() {
                        return Err(refuse(
                            ResultCode::MalformedOption,
                            "THIRD_PARTY appears more than once",
                        ));
                    }
                    match self.config.third_party_allowed(*src.ip()) {
                        None => {
                            return Err(refuse(
                                ResultCode::UnsuppOption,
                                "THIRD_PARTY is not enabled (pcp.third_party_from is empty)",
                            ))
                        }
                        Some(false) => {
                            return Err(refuse(
                                ResultCode::NotAuthorized,
                                format!("{} is not in pcp.third_party_from", src.ip()),
                            ))
                        }
                        Some(true) => {}
                    }
                    let internal = suggested_ipv4(*addr).ok_or_else(|| {
                        refuse(
                            ResultCode::MalformedOption,
                            format!("THIRD_PARTY address {addr} is not an IPv4 host address"),
                        )
                    })?;
                    if table.lan_of(internal).is_none() {
                        return Err(refuse(
                            ResultCode::NotAuthorized,
                            format!(
                                "THIRD_PARTY address {internal} is no internal host (outside \
                                 the LAN prefixes, or an address of the gateway)"
                            ),
                        ));
                    }
                    out.third_party = Some(internal);
                    out.third_party_raw = Some(*addr);
                }
                OptionRepr::PreferFailure => {
                    if out.prefer_failure {
                        return Err(refuse(
                            ResultCode::MalformedOption,
                            "PREFER_FAILURE appears more than once",
                        ));
                    }
                    out.prefer_failure = true;
                }
                OptionRepr::Filter(f) => out.filters.push(*f),
                OptionRepr::Unknown { .. } => {}
            }
        }
        Ok(out)
    }

    /// RFC 6887 §11.3: create, renew or delete an explicit mapping.
    fn map(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        requested: u32,
        map: &MapRepr,
        options: &RequestOptions,
        table: &mut impl MappingTable,
    ) -> Result<wire::Response, Refusal> {
        let protocol = Protocol::from_wire(map.protocol).ok_or_else(|| {
            refuse(
                ResultCode::UnsuppProtocol,
                format!(
                    "protocol {} cannot be mapped (only 0, 6 and 17)",
                    map.protocol
                ),
            )
        })?;
        if protocol == Protocol::All && map.internal_port != 0 {
            return Err(refuse(
                ResultCode::MalformedRequest,
                format!("protocol 0 (all) with internal port {}", map.internal_port),
            ));
        }
        let internal = options.third_party.unwrap_or(*src.ip());
        if requested == 0 {
            return self.map_delete(now, src, protocol, internal, map, options, table);
        }
        if protocol != Protocol::All && map.internal_port == 0 {
            return Err(refuse(
                ResultCode::MalformedRequest,
                "internal port 0 (all ports) is only valid with protocol 0 or lifetime 0",
            ));
        }
        if protocol == Protocol::All && !self.config.allow_all_protocols {
            return Err(refuse(
                ResultCode::NotAuthorized,
                "protocol 0 (all protocols) mappings are off (pcp.allow_all_protocols)",
            ));
        }
        let external_address = table.external_address().ok_or_else(|| {
            refuse(
                ResultCode::NetworkFailure,
                "the gateway has no external address",
            )
        })?;
        let key = MappingKey {
            internal,
            protocol,
            internal_port: map.internal_port,
        };
        let existing = table.explicit(&key).filter(|m| m.expires > now);
        match &existing {
            // RFC 6887 §11.3: the nonce must match on every renewal.
            Some(m) if m.nonce != map.nonce => {
                return Err(refuse(
                    ResultCode::NotAuthorized,
                    format!(
                        "nonce does not match the one {} {} was mapped with",
                        protocol,
                        key.internal_endpoint()
                    ),
                ));
            }
            Some(_) => {}
            None => self.admit_new(&key, now, table).map_err(|q| {
                let result = if q.per_host {
                    ResultCode::UserExQuota
                } else {
                    ResultCode::NoResources
                };
                refuse(result, q.reason)
            })?,
        }
        let external_ports = if protocol == Protocol::All {
            Vec::new()
        } else {
            let ports = self
                .config
                .permitted_external_ports(internal, map.internal_port);
            let still_permitted = |port| ports.iter().any(|s| s.contains(port));
            if ports.is_empty()
                || existing
                    .as_ref()
                    .is_some_and(|m| !still_permitted(m.external.port()))
            {
                return Err(refuse(
                    ResultCode::NotAuthorized,
                    format!(
                        "the port rules (pcp.rules) deny {protocol} {}",
                        key.internal_endpoint()
                    ),
                ));
            }
            ports
        };
        let suggested_address = suggested_ipv4(map.external_address);
        let suggested_port = (map.external_port != 0).then_some(map.external_port);
        if options.prefer_failure {
            // RFC 6887 §13.2: the suggested endpoint or nothing.
            let unavailable = if suggests_ipv6(map.external_address)
                || suggested_address.is_some_and(|a| a != external_address)
            {
                Some("the suggested external address is not the gateway's")
            } else if suggested_port.is_some_and(|p| {
                !external_ports.iter().any(|s| s.contains(p)) && protocol != Protocol::All
            }) {
                Some("the port rules do not permit the suggested external port")
            } else if existing
                .as_ref()
                .is_some_and(|m| suggested_port.is_some_and(|p| p != m.external.port()))
            {
                Some("the mapping exists with another external port")
            } else {
                None
            };
            if let Some(why) = unavailable {
                return Err(refuse(ResultCode::CannotProvideExternal, why));
            }
        }
        let filters = self.filters(options, existing.as_ref())?;
        let lifetime = self.config.clamp_lifetime(requested);
        let install = Install {
            key,
            origin: Origin::Pcp,
            nonce: map.nonce,
            lifetime,
            expires: now + secs(lifetime),
            suggested_address,
            suggested_port,
            prefer_failure: options.prefer_failure,
            external_ports,
            filters,
            reply_to: src,
        };
        let external = table.install(&install).map_err(table_refusal)?;
        let event = MappingEvent {
            client: src,
            origin: Origin::Pcp,
            protocol,
            internal: key.internal_endpoint(),
            external,
            lifetime,
        };
        self.push(if existing.is_some() {
            Event::Renewed(event)
        } else {
            Event::Created(event)
        });
        Ok(wire::Response {
            opcode: Opcode::Map,
            result: ResultCode::Success,
            lifetime,
            epoch: self.epoch(now),
            op: Some(OpRepr::Map(MapRepr {
                external_port: external.port(),
                external_address: external.ip().to_ipv6_mapped(),
                ..*map
            })),
            options: options.echo(true),
        })
    }

    /// Whether a new explicit mapping `key` fits the quotas: the host's
    /// (`max_mappings_per_host`), its LAN interface's (`max_mappings_per_interface`)
    /// and the server's (`max_mappings`). The last two hold however many addresses
    /// a host speaks from.
    fn admit_new(
        &self,
        key: &MappingKey,
        now: Instant,
        table: &impl MappingTable,
    ) -> Result<(), Quota> {
        let held = table
            .explicit_of(key.internal)
            .iter()
            .filter(|m| m.expires > now && m.key != *key)
            .count();
        if held >= self.config.max_mappings_per_host as usize {
            return Err(Quota {
                per_host: true,
                reason: format!(
                    "{} already holds {held} mappings (pcp.max_mappings_per_host)",
                    key.internal
                ),
            });
        }
        let lan = table.lan_of(key.internal);
        let on_lan = table.explicit_count(lan);
        if lan.is_some() && on_lan >= self.config.max_mappings_per_interface as usize {
            return Err(Quota {
                per_host: false,
                reason: format!(
                    "the hosts of {}'s LAN interface hold {on_lan} mappings \
                     (pcp.max_mappings_per_interface)",
                    key.internal
                ),
            });
        }
        let all = table.explicit_count(None);
        if all >= self.config.max_mappings as usize {
            return Err(Quota {
                per_host: false,
                reason: format!("{all} mappings exist (pcp.max_mappings)"),
            });
        }
        Ok(())
    }

    /// RFC 6887 §13.3: the mapping's filter list after this request. No FILTER keeps
    /// the current list; a FILTER with prefix length 0 clears it (all peers allowed);
    /// otherwise the request's filters replace it.
    fn filters(
        &self,
        options: &RequestOptions,
        existing: Option<&ExplicitMapping>,
    ) -> Result<Vec<Filter>, Refusal> {
        if options.filters.is_empty() {
            return Ok(existing.map(|m| m.filters.clone()).unwrap_or_default());
        }
        if options.filters.iter().any(|f| f.prefix_len == 0) {
            return Ok(Vec::new());
        }
        let mut out: Vec<Filter> = Vec::new();
        for f in &options.filters {
            let addr = f.remote_address.to_ipv4_mapped();
            let prefix = addr
                .zip(f.prefix_len.checked_sub(96))
                .and_then(|(a, len)| Ipv4Prefix::new(a, len))
                .ok_or_else(|| {
                    refuse(
                        ResultCode::MalformedOption,
                        format!(
                            "FILTER {}/{} is not an IPv4 prefix (IPv4-mapped, length 96-128)",
                            f.remote_address, f.prefix_len
                        ),
                    )
                })?;
            let filter = Filter {
                remote: prefix.network_prefix(),
                port: f.remote_port,
            };
            if !out.contains(&filter) {
                out.push(filter);
            }
        }
        if out.len() > self.config.max_filters as usize {
            return Err(refuse(
                ResultCode::ExcessiveRemotePeers,
                format!(
                    "{} filters, more than pcp.max_filters = {}",
                    out.len(),
                    self.config.max_filters
                ),
            ));
        }
        Ok(out)
    }

    /// RFC 6887 §11.3 and §15, lifetime 0: delete one mapping (internal port set) or
    /// the set of the host's mappings of the protocol (internal port 0; protocol 0 =
    /// every protocol) that carry this nonce. Deleting what does not exist succeeds.
    #[allow(clippy::too_many_arguments)]
    fn map_delete(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        protocol: Protocol,
        internal: Ipv4Addr,
        map: &MapRepr,
        options: &RequestOptions,
        table: &mut impl MappingTable,
    ) -> Result<wire::Response, Refusal> {
        let victims: Vec<ExplicitMapping> = if map.internal_port != 0 {
            let key = MappingKey {
                internal,
                protocol,
                internal_port: map.internal_port,
            };
            match table.explicit(&key) {
                Some(m) if m.nonce != map.nonce && m.expires > now => {
                    return Err(refuse(
                        ResultCode::NotAuthorized,
                        format!(
                            "nonce does not match the one {} {} was mapped with",
                            protocol,
                            key.internal_endpoint()
                        ),
                    ));
                }
                found => found.into_iter().collect(),
            }
        } else {
            table
                .explicit_of(internal)
                .into_iter()
                .filter(|m| protocol == Protocol::All || m.key.protocol == protocol)
                .filter(|m| m.nonce == map.nonce)
                .collect()
        };
        for m in &victims {
            table.remove(&m.key);
            self.push(Event::Deleted(MappingEvent {
                client: src,
                origin: m.origin,
                protocol: m.key.protocol,
                internal: m.key.internal_endpoint(),
                external: m.external,
                lifetime: 0,
            }));
        }
        let external = match victims.as_slice() {
            [one] => one.external,
            _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        };
        Ok(wire::Response {
            opcode: Opcode::Map,
            result: ResultCode::Success,
            lifetime: 0,
            epoch: self.epoch(now),
            op: Some(OpRepr::Map(MapRepr {
                external_port: external.port(),
                external_address: external.ip().to_ipv6_mapped(),
                ..*map
            })),
            options: options.echo(false),
        })
    }

    /// RFC 6887 §12.3: create or refresh the implicit mapping towards one peer.
    fn peer(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        requested: u32,
        peer: &PeerRepr,
        options: &RequestOptions,
        table: &mut impl MappingTable,
    ) -> Result<wire::Response, Refusal> {
        let protocol = match Protocol::from_wire(peer.protocol) {
            Some(Protocol::All) => {
                return Err(refuse(
                    ResultCode::MalformedRequest,
                    "PEER needs a protocol; 0 (all) is not valid",
                ))
            }
            Some(p) => p,
            None => {
                return Err(refuse(
                    ResultCode::UnsuppProtocol,
                    format!(
                        "protocol {} cannot be mapped (only 6 and 17)",
                        peer.protocol
                    ),
                ))
            }
        };
        if peer.internal_port == 0 || peer.remote_port == 0 {
            return Err(refuse(
                ResultCode::MalformedRequest,
                "PEER needs an internal port and a remote peer port",
            ));
        }
        let remote = suggested_ipv4(peer.remote_address).ok_or_else(|| {
            refuse(
                ResultCode::MalformedRequest,
                format!(
                    "remote peer address {} is not an IPv4 host address",
                    peer.remote_address
                ),
            )
        })?;
        if table.external_address().is_none() {
            return Err(refuse(
                ResultCode::NetworkFailure,
                "the gateway has no external address",
            ));
        }
        let internal =
            SocketAddrV4::new(options.third_party.unwrap_or(*src.ip()), peer.internal_port);
        let remote = SocketAddrV4::new(remote, peer.remote_port);
        let request = PeerRequest {
            internal,
            protocol,
            remote,
            nonce: peer.nonce,
            lifetime: if requested == 0 {
                0
            } else {
                self.config.clamp_lifetime(requested)
            },
            suggested_address: suggested_ipv4(peer.external_address),
            suggested_port: (peer.external_port != 0).then_some(peer.external_port),
            reply_to: src,
        };
        let grant = table.peer(&request).map_err(table_refusal)?;
        self.push(Event::Peer {
            client: src,
            protocol,
            internal,
            remote,
            external: grant.external,
            lifetime: grant.lifetime,
        });
        Ok(wire::Response {
            opcode: Opcode::Peer,
            result: ResultCode::Success,
            lifetime: grant.lifetime,
            epoch: self.epoch(now),
            op: Some(OpRepr::Peer(PeerRepr {
                external_port: grant.external.port(),
                external_address: grant.external.ip().to_ipv6_mapped(),
                ..*peer
            })),
            options: options.echo(false),
        })
    }

    fn handle_natpmp(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        datagram: &[u8],
        table: &mut impl MappingTable,
    ) -> Vec<u8> {
        let epoch = self.epoch(now);
        let packet = natpmp::Packet::new_unchecked(datagram);
        let request = match natpmp::Request::parse(&packet) {
            Ok(request) => request,
            Err(e) => {
                // Only an unknown opcode remains: the silent drops came first.
                self.push(Event::Refused {
                    client: src,
                    op: "nat-pmp",
                    answer: Answer::NatPmp(natpmp::ResultCode::UnsupportedOpcode),
                    reason: e.to_string(),
                });
                return natpmp::unsupported_opcode_response(datagram, wire::MAX_LEN);
            }
        };
        let response = match request {
            natpmp::Request::ExternalAddress => {
                let address = table.external_address();
                let result = if address.is_some() {
                    natpmp::ResultCode::Success
                } else {
                    self.push(Event::Refused {
                        client: src,
                        op: "nat-pmp.address",
                        answer: Answer::NatPmp(natpmp::ResultCode::NetworkFailure),
                        reason: "the gateway has no external address".into(),
                    });
                    natpmp::ResultCode::NetworkFailure
                };
                natpmp::Response::ExternalAddress {
                    result,
                    epoch,
                    address: address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                }
            }
            natpmp::Request::Map {
                protocol,
                internal_port,
                suggested_external_port,
                lifetime,
            } => {
                let outcome = self.natpmp_map(
                    now,
                    src,
                    protocol,
                    internal_port,
                    suggested_external_port,
                    lifetime,
                    table,
                );
                let (result, external_port, lifetime) = match outcome {
                    Ok((port, lifetime)) => (natpmp::ResultCode::Success, port, lifetime),
                    Err((result, reason)) => {
                        self.push(Event::Refused {
                            client: src,
                            op: "nat-pmp.map",
                            answer: Answer::NatPmp(result),
                            reason,
                        });
                        (result, 0, 0)
                    }
                };
                natpmp::Response::Map {
                    protocol,
                    result,
                    epoch,
                    internal_port,
                    external_port,
                    lifetime,
                }
            }
        };
        response.to_bytes()
    }

    /// RFC 6886 §3.3 and §3.4 over the same table: returns the mapped external port
    /// and granted lifetime (both 0 for deletions).
    #[allow(clippy::too_many_arguments)]
    fn natpmp_map(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        protocol: MapProtocol,
        internal_port: u16,
        suggested_port: u16,
        requested: u32,
        table: &mut impl MappingTable,
    ) -> Result<(u16, u32), NatPmpRefusal> {
        let protocol = match protocol {
            MapProtocol::Udp => Protocol::Udp,
            MapProtocol::Tcp => Protocol::Tcp,
        };
        let internal = *src.ip();
        let key = MappingKey {
            internal,
            protocol,
            internal_port,
        };
        let live = |m: &ExplicitMapping| m.expires > now;
        if requested == 0 {
            // RFC 6886 §3.4: internal port 0 deletes all the client's mappings of the
            // protocol — the NAT-PMP ones; PCP ones are protected by their nonces.
            let victims: Vec<ExplicitMapping> = if internal_port == 0 {
                table
                    .explicit_of(internal)
                    .into_iter()
                    .filter(|m| m.key.protocol == protocol && m.origin == Origin::NatPmp)
                    .collect()
            } else {
                match table.explicit(&key) {
                    Some(m) if m.origin == Origin::Pcp && live(&m) => {
                        return Err((
                            natpmp::ResultCode::NotAuthorized,
                            format!(
                                "{protocol} {} belongs to a PCP client (delete it with its nonce)",
                                key.internal_endpoint()
                            ),
                        ));
                    }
                    found => found.into_iter().collect(),
                }
            };
            for m in &victims {
                table.remove(&m.key);
                self.push(Event::Deleted(MappingEvent {
                    client: src,
                    origin: m.origin,
                    protocol: m.key.protocol,
                    internal: m.key.internal_endpoint(),
                    external: m.external,
                    lifetime: 0,
                }));
            }
            return Ok((0, 0));
        }
        if internal_port == 0 {
            return Err((
                natpmp::ResultCode::NotAuthorized,
                "internal port 0 is only valid when deleting".into(),
            ));
        }
        if table.external_address().is_none() {
            return Err((
                natpmp::ResultCode::NetworkFailure,
                "the gateway has no external address".into(),
            ));
        }
        let existing = table.explicit(&key).filter(live);
        match &existing {
            Some(m) if m.origin == Origin::Pcp => {
                return Err((
                    natpmp::ResultCode::NotAuthorized,
                    format!(
                        "{protocol} {} belongs to a PCP client",
                        key.internal_endpoint()
                    ),
                ));
            }
            Some(_) => {}
            None => self
                .admit_new(&key, now, table)
                .map_err(|q| (natpmp::ResultCode::OutOfResources, q.reason))?,
        }
        let external_ports = self
            .config
            .permitted_external_ports(internal, internal_port);
        if external_ports.is_empty()
            || existing
                .as_ref()
                .is_some_and(|m| !external_ports.iter().any(|s| s.contains(m.external.port())))
        {
            return Err((
                natpmp::ResultCode::NotAuthorized,
                format!(
                    "the port rules (pcp.rules) deny {protocol} {}",
                    key.internal_endpoint()
                ),
            ));
        }
        let lifetime = self.config.clamp_lifetime(requested);
        let install = Install {
            key,
            origin: Origin::NatPmp,
            nonce: NATPMP_NONCE,
            lifetime,
            expires: now + secs(lifetime),
            suggested_address: None,
            suggested_port: (suggested_port != 0).then_some(suggested_port),
            prefer_failure: false,
            external_ports,
            filters: Vec::new(),
            reply_to: src,
        };
        let external = table.install(&install).map_err(natpmp_table_refusal)?;
        let event = MappingEvent {
            client: src,
            origin: Origin::NatPmp,
            protocol,
            internal: key.internal_endpoint(),
            external,
            lifetime,
        };
        self.push(if existing.is_some() {
            Event::Renewed(event)
        } else {
            Event::Created(event)
        });
        Ok((external.port(), lifetime))
    }

    /// The announcements due at `now`, if any: each run sends [`UNSOLICITED_COUNT`]
    /// rounds, 250 ms apart at first and doubling (see [`Engine::announcements`]).
    pub fn unsolicited(&mut self, now: Instant, table: &impl MappingTable) -> Vec<Transmit> {
        let Some(burst) = self.burst.as_mut() else {
            return Vec::new();
        };
        if now < burst.next {
            return Vec::new();
        }
        let map_updates = burst.map_updates;
        burst.remaining = burst.remaining.saturating_sub(1);
        if burst.remaining == 0 {
            self.burst = None;
        } else {
            burst.next = now + burst.interval;
            burst.interval = burst.interval.saturating_mul(2);
        }
        self.announcements(now, table, map_updates)
    }

    /// One round of announcements: a PCP ANNOUNCE response and (NAT-PMP enabled, an
    /// external address known) a NAT-PMP external address response to
    /// [`ANNOUNCE_GROUP`]; with `map_updates`, an unsolicited MAP response to each
    /// PCP client with a live mapping (RFC 6887 §14.2).
    #[must_use]
    pub fn announcements(
        &self,
        now: Instant,
        table: &impl MappingTable,
        map_updates: bool,
    ) -> Vec<Transmit> {
        let mut out = vec![Transmit {
            destination: ANNOUNCE_GROUP,
            payload: self.announce_response(now),
        }];
        let address = table.external_address();
        if let (true, Some(a)) = (self.config.natpmp, address) {
            out.push(Transmit {
                destination: ANNOUNCE_GROUP,
                payload: self.natpmp_address_response(now, a),
            });
        }
        if map_updates && address.is_some() {
            out.extend(
                table
                    .explicit_all()
                    .iter()
                    .filter_map(|m| self.unsolicited_map(now, m)),
            );
        }
        out
    }

    /// An unsolicited ANNOUNCE response: SUCCESS, lifetime 0, the epoch (RFC 6887
    /// §14.1.3).
    #[must_use]
    pub fn announce_response(&self, now: Instant) -> Vec<u8> {
        wire::Response {
            opcode: Opcode::Announce,
            result: ResultCode::Success,
            lifetime: 0,
            epoch: self.epoch(now),
            op: Some(OpRepr::Announce),
            options: Vec::new(),
        }
        .to_bytes()
    }

    /// A NAT-PMP external address response, as multicast when the address changes
    /// (RFC 6886 §3.2.1).
    #[must_use]
    pub fn natpmp_address_response(&self, now: Instant, address: Ipv4Addr) -> Vec<u8> {
        natpmp::Response::ExternalAddress {
            result: natpmp::ResultCode::Success,
            epoch: self.epoch(now),
            address,
        }
        .to_bytes()
    }

    /// The unsolicited MAP response telling a PCP client its mapping's current
    /// external endpoint and remaining lifetime (RFC 6887 §14.2); `None` for NAT-PMP
    /// mappings and expired ones.
    #[must_use]
    pub fn unsolicited_map(&self, now: Instant, mapping: &ExplicitMapping) -> Option<Transmit> {
        if mapping.origin != Origin::Pcp || mapping.expires <= now {
            return None;
        }
        let remaining = mapping.expires.saturating_duration_since(now);
        let lifetime = u32::try_from(remaining.as_secs().max(1)).unwrap_or(u32::MAX);
        let mut options = Vec::new();
        if mapping.key.internal != *mapping.reply_to.ip() {
            options.push(OptionRepr::ThirdParty(
                mapping.key.internal.to_ipv6_mapped(),
            ));
        }
        let mut response = wire::Response {
            opcode: Opcode::Map,
            result: ResultCode::Success,
            lifetime,
            epoch: self.epoch(now),
            op: Some(OpRepr::Map(MapRepr {
                nonce: mapping.nonce,
                protocol: mapping.key.protocol.to_wire(),
                internal_port: mapping.key.internal_port,
                external_port: mapping.external.port(),
                external_address: mapping.external.ip().to_ipv6_mapped(),
            })),
            options,
        };
        for f in &mapping.filters {
            let option = OptionRepr::Filter(filter_repr(f));
            if response.buffer_len() + option.buffer_len() > wire::MAX_LEN {
                break;
            }
            response.options.push(option);
        }
        Some(Transmit {
            destination: mapping.reply_to,
            payload: response.to_bytes(),
        })
    }
}

fn op_name(opcode: Option<Opcode>) -> &'static str {
    match opcode {
        Some(Opcode::Announce) => "pcp.announce",
        Some(Opcode::Map) => "pcp.map",
        Some(Opcode::Peer) => "pcp.peer",
        None => "pcp",
    }
}

/// RFC 6887 §8.3: what a request that does not parse is answered with.
fn parse_refusal(e: &wire::Error) -> Refusal {
    let result = match e {
        wire::Error::Opcode(_) => ResultCode::UnsuppOpcode,
        wire::Error::Option { .. } => ResultCode::MalformedOption,
        wire::Error::Length(_)
        | wire::Error::OpcodeData { .. }
        | wire::Error::Truncated { .. }
        | wire::Error::Version(_)
        | wire::Error::Direction => ResultCode::MalformedRequest,
    };
    refuse(result, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcp::policy::PortSpan;
    use crate::pcp::testing::MemoryTable;
    use crate::pcp::wire::{Packet, Request, Response};

    const EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    const NONCE: Nonce = [7; 12];
    const OTHER_NONCE: Nonce = [8; 12];

    fn client() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 5), 40000)
    }

    fn config() -> PcpConfig {
        PcpConfig {
            requests_per_second: 0,
            ..PcpConfig::default()
        }
    }

    struct Harness {
        server: Engine,
        table: MemoryTable,
        start: Instant,
        now: Instant,
    }

    impl Harness {
        fn new() -> Self {
            Self::with(config())
        }

        fn with(config: PcpConfig) -> Self {
            let now = Instant::now();
            Self {
                server: Engine::new(config, now).unwrap(),
                table: MemoryTable::new(EXT),
                start: now,
                now,
            }
        }

        fn advance(&mut self, secs: u64) {
            self.now += Duration::from_secs(secs);
        }

        fn send(&mut self, src: SocketAddrV4, datagram: &[u8]) -> Option<Vec<u8>> {
            let reply = self.server.handle(self.now, src, datagram, &mut self.table);
            if let Some(r) = &reply {
                assert!(r.len() <= wire::MAX_LEN);
            }
            reply
        }

        fn pcp(&mut self, src: SocketAddrV4, request: &Request) -> Response {
            let reply = self.send(src, &request.to_bytes()).expect("an answer");
            assert_eq!(reply.len() % 4, 0);
            Response::parse(&Packet::new_checked(&reply[..]).unwrap()).unwrap()
        }

        fn natpmp(&mut self, src: SocketAddrV4, request: natpmp::Request) -> natpmp::Response {
            let reply = self.send(src, &request.to_bytes()).expect("an answer");
            natpmp::Response::parse(&natpmp::Packet::new_checked(&reply[..]).unwrap()).unwrap()
        }

        /// How many `Dropped` events with `reason` are queued (taking all events).
        fn dropped(&mut self, reason: DropReason) -> usize {
            self.events()
                .iter()
                .filter(|e| matches!(e, Event::Dropped { reason: r, .. } if *r == reason))
                .count()
        }

        fn events(&mut self) -> Vec<Event> {
            std::iter::from_fn(|| self.server.poll_event()).collect()
        }
    }

    fn map_repr(protocol: u8, internal_port: u16, nonce: Nonce, suggest: u16) -> MapRepr {
        MapRepr {
            nonce,
            protocol,
            internal_port,
            external_port: suggest,
            external_address: Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
        }
    }

    fn request(src: SocketAddrV4, lifetime: u32, op: OpRepr, options: Vec<OptionRepr>) -> Request {
        Request {
            lifetime,
            client_address: src.ip().to_ipv6_mapped(),
            op,
            options,
        }
    }

    fn map(src: SocketAddrV4, port: u16, lifetime: u32, nonce: Nonce) -> Request {
        let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, port, nonce, port));
        request(src, lifetime, op, vec![])
    }

    fn map_data(response: &Response) -> MapRepr {
        match response.op {
            Some(OpRepr::Map(m)) => m,
            ref other => panic!("not MAP data: {other:?}"),
        }
    }

    fn external(response: &Response) -> SocketAddrV4 {
        let m = map_data(response);
        SocketAddrV4::new(
            m.external_address.to_ipv4_mapped().unwrap(),
            m.external_port,
        )
    }

    fn key(port: u16) -> MappingKey {
        MappingKey {
            internal: *client().ip(),
            protocol: Protocol::Udp,
            internal_port: port,
        }
    }

    fn filter(prefix: [u8; 4], len: u8, port: u16) -> OptionRepr {
        OptionRepr::Filter(FilterRepr {
            prefix_len: len,
            remote_port: port,
            remote_address: Ipv4Addr::from(prefix).to_ipv6_mapped(),
        })
    }

    fn refusals(events: &[Event]) -> Vec<Answer> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Refused { answer, .. } => Some(*answer),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn map_creates_a_mapping_with_the_suggested_port() {
        // rfc6887 11.3: the suggested external port is honoured when free
        let mut h = Harness::new();
        let r = h.pcp(client(), &map(client(), 8080, 7200, NONCE));
        assert_eq!(r.result, ResultCode::Success);
        assert_eq!(r.lifetime, 7200);
        assert_eq!(r.opcode, Opcode::Map);
        assert_eq!(external(&r), SocketAddrV4::new(EXT, 8080));
        assert_eq!(map_data(&r).nonce, NONCE);
        let m = h.table.explicit[&key(8080)].clone();
        assert_eq!(m.external, SocketAddrV4::new(EXT, 8080));
        assert_eq!(m.origin, Origin::Pcp);
        assert_eq!(m.reply_to, client());
        assert_eq!(m.expires, h.now + Duration::from_secs(7200));
        assert_eq!(
            h.table.installs[0].external_ports,
            [PortSpan::new(1024, 65535).unwrap()]
        );
        assert!(matches!(&h.events()[..], [Event::Created(e)] if e.external.port() == 8080));
    }

    #[test]
    fn taken_suggestion_gets_another_port() {
        // rfc6887 11.3: without PREFER_FAILURE the server assigns another port
        let mut h = Harness::new();
        h.pcp(client(), &map(client(), 8080, 600, NONCE));
        let other = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 6), 5000);
        let r = h.pcp(other, &map(other, 9090, 600, NONCE));
        let mut asked = map(other, 9090, 600, NONCE);
        if let OpRepr::Map(m) = &mut asked.op {
            m.external_port = 8080;
        }
        let r2 = h.pcp(other, &asked);
        assert_eq!(external(&r).port(), 9090);
        assert_eq!(r2.result, ResultCode::Success);
        assert_ne!(external(&r2).port(), 8080);
    }

    #[test]
    fn prefer_failure_refuses_rather_than_assign_another_port() {
        // rfc6887 13.2
        let mut h = Harness::new();
        h.pcp(client(), &map(client(), 8080, 600, NONCE));
        let other = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 6), 5000);
        let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 7000, NONCE, 8080));
        let r = h.pcp(
            other,
            &request(other, 600, op, vec![OptionRepr::PreferFailure]),
        );
        assert_eq!(r.result, ResultCode::CannotProvideExternal);
        assert_eq!(r.lifetime, 30, "short-lived error");
        assert_eq!(r.options, [OptionRepr::PreferFailure], "request copied");
        assert_eq!(h.table.explicit.len(), 1);
        // A free suggestion succeeds, and PREFER_FAILURE is echoed.
        let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 7000, NONCE, 7001));
        let r = h.pcp(
            other,
            &request(other, 600, op, vec![OptionRepr::PreferFailure]),
        );
        assert_eq!(r.result, ResultCode::Success);
        assert_eq!(external(&r).port(), 7001);
        assert_eq!(r.options, [OptionRepr::PreferFailure]);
        // A suggested address that is not the gateway's cannot be provided either.
        let mut op = map_repr(wire::PROTOCOL_UDP, 7100, NONCE, 7100);
        op.external_address = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped();
        let req = request(other, 600, OpRepr::Map(op), vec![OptionRepr::PreferFailure]);
        assert_eq!(h.pcp(other, &req).result, ResultCode::CannotProvideExternal);
    }

    #[test]
    fn renewal_from_a_new_source_port_keeps_the_mapping() {
        // rfc6887 11.3: mappings are keyed by (internal address, protocol, internal
        // port), never by the request's source port
        let mut h = Harness::new();
        let first = h.pcp(client(), &map(client(), 8080, 600, NONCE));
        h.advance(300);
        let moved = SocketAddrV4::new(*client().ip(), 41234);
        let mut renew = map(moved, 8080, 900, NONCE);
        if let OpRepr::Map(m) = &mut renew.op {
            m.external_port = 0;
        }
        let r = h.pcp(moved, &renew);
        assert_eq!(r.result, ResultCode::Success);
        assert_eq!(external(&r), external(&first));
        assert_eq!(r.lifetime, 900);
        assert_eq!(h.table.explicit.len(), 1);
        let m = &h.table.explicit[&key(8080)];
        assert_eq!(m.reply_to, moved);
        assert_eq!(m.expires, h.now + Duration::from_secs(900));
        assert!(matches!(h.events().last(), Some(Event::Renewed(_))));
    }

    #[test]
    fn renewal_with_another_nonce_is_not_authorized() {
        // rfc6887 11.3: the nonce is checked on every renewal
        let mut h = Harness::new();
        h.pcp(client(), &map(client(), 8080, 600, NONCE));
        let expires = h.table.explicit[&key(8080)].expires;
        h.advance(10);
        let r = h.pcp(client(), &map(client(), 8080, 600, OTHER_NONCE));
        assert_eq!(r.result, ResultCode::NotAuthorized);
        assert_eq!(r.lifetime, 1800, "long-lived error");
        assert_eq!(h.table.explicit[&key(8080)].expires, expires);
        assert_eq!(h.table.explicit[&key(8080)].nonce, NONCE);
        let events = h.events();
        assert_eq!(refusals(&events), [Answer::Pcp(ResultCode::NotAuthorized)]);
        let line = events.last().unwrap().to_string();
        assert!(
            line.starts_with("pcp.refused client=10.0.1.5:40000 op=pcp.map result=NOT_AUTHORIZED"),
            "{line}"
        );
        assert!(line.contains("nonce does not match"), "{line}");
    }

    #[test]
    fn an_expired_mapping_can_be_taken_with_a_new_nonce() {
        // rfc6887 11.3: only live mappings are protected by their nonce
        let mut h = Harness::new();
        h.pcp(client(), &map(client(), 8080, 120, NONCE));
        h.advance(121);
        let r = h.pcp(client(), &map(client(), 8080, 600, OTHER_NONCE));
        assert_eq!(r.result, ResultCode::Success);
        assert_eq!(h.table.explicit[&key(8080)].nonce, OTHER_NONCE);
    }

    #[test]
    fn deletion_checks_the_nonce_then_deletes() {
        // rfc6887 11.3, 15: lifetime 0 deletes; the nonce must match
        let mut h = Harness::new();
        let created = h.pcp(client(), &map(client(), 8080, 600, NONCE));
        let r = h.pcp(client(), &map(client(), 8080, 0, OTHER_NONCE));
        assert_eq!(r.result, ResultCode::NotAuthorized);
        assert!(h.table.explicit.contains_key(&key(8080)));
        let moved = SocketAddrV4::new(*client().ip(), 1);
        let r = h.pcp(moved, &map(moved, 8080, 0, NONCE));
        assert_eq!(r.result, ResultCode::Success);
        assert_eq!(r.lifetime, 0);
        assert_eq!(external(&r), external(&created));
        assert!(h.table.explicit.is_empty());
        assert!(matches!(h.events().last(), Some(Event::Deleted(e)) if e.lifetime == 0));
        // Deleting what does not exist succeeds.
        let r = h.pcp(client(), &map(client(), 8080, 0, NONCE));
        assert_eq!(r.result, ResultCode::Success);
        assert_eq!(r.lifetime, 0);
    }

    #[test]
    fn internal_port_zero_with_lifetime_zero_deletes_the_set_with_that_nonce() {
        // rfc6887 11.3: protocol set, internal port 0, lifetime 0 deletes a set
        let mut h = Harness::new();
        h.pcp(client(), &map(client(), 8080, 600, NONCE));
        h.pcp(client(), &map(client(), 8081, 600, NONCE));
        h.pcp(client(), &map(client(), 8082, 600, OTHER_NONCE));
        let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 0, NONCE, 0));
        let r = h.pcp(client(), &request(client(), 0, op, vec![]));
        assert_eq!(r.result, ResultCode::Success);
        let left: Vec<u16> = h.table.explicit.keys().map(|k| k.internal_port).collect();
        assert_eq!(left, [8082]);
    }

    #[test]
    fn lifetimes_are_clamped_to_the_configured_range() {
        // rfc6887 15: the server may grant a shorter or longer lifetime
        let mut h = Harness::with(PcpConfig {
            min_lifetime: 300,
            max_lifetime: 3600,
            ..config()
        });
        assert_eq!(h.pcp(client(), &map(client(), 1, 10, NONCE)).lifetime, 300);
        assert_eq!(
            h.pcp(client(), &map(client(), 2, 99_999, NONCE)).lifetime,
            3600
        );
        assert_eq!(h.table.installs[1].lifetime, 3600);
    }

    #[test]
    fn quota_gives_user_ex_quota_and_renewals_still_work() {
        // rfc6887 7.4: USER_EX_QUOTA is short-lived
        let mut h = Harness::with(PcpConfig {
            max_mappings_per_host: 2,
            ..config()
        });
        h.pcp(client(), &map(client(), 8080, 600, NONCE));
        h.pcp(client(), &map(client(), 8081, 600, NONCE));
        let r = h.pcp(client(), &map(client(), 8082, 600, NONCE));
        assert_eq!(r.result, ResultCode::UserExQuota);
        assert_eq!(r.lifetime, 30);
        assert_eq!(
            h.pcp(client(), &map(client(), 8081, 900, NONCE)).result,
            ResultCode::Success
        );
        // Another host has its own quota.
        let other = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 6), 5000);
        assert_eq!(
            h.pcp(other, &map(other, 8082, 600, NONCE)).result,
            ResultCode::Success
        );
        // NAT-PMP counts against the same quota.
        let r = h.natpmp(
            client(),
            natpmp::Request::Map {
                protocol: MapProtocol::Tcp,
                internal_port: 22,
                suggested_external_port: 0,
                lifetime: 600,
            },
        );
        assert_eq!(r.result(), natpmp::ResultCode::OutOfResources);
    }

    #[test]
    fn client_address_field_must_be_the_source_address() {
        // rfc6887 8.3: ADDRESS_MISMATCH, long-lived
        let mut h = Harness::new();
        let behind_another_nat = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 2), 40000);
        let r = h.pcp(client(), &map(behind_another_nat, 8080, 600, NONCE));
        assert_eq!(r.result, ResultCode::AddressMismatch);
        assert_eq!(r.lifetime, 1800);
        assert!(h.table.explicit.is_empty());
        let mut native_v6 = map(client(), 8080, 600, NONCE);
        native_v6.client_address = "2001:db8::5".parse().unwrap();
        assert_eq!(
            h.pcp(client(), &native_v6).result,
            ResultCode::AddressMismatch
        );
    }

    #[test]
    fn announce_is_answered_whatever_the_state_or_policy() {
        // rfc6887 14.1: SUCCESS, lifetime 0, the epoch
        let mut h = Harness::with(PcpConfig {
            rules: Vec::new(),
            ..config()
        });
        h.table.external = None;
        h.advance(5);
        let announce = request(
            client(),
            0,
            OpRepr::Announce,
            vec![OptionRepr::Unknown {
                code: 200,
                data: vec![1, 2, 3],
            }],
        );
        let r = h.pcp(client(), &announce);
        assert_eq!(r.result, ResultCode::Success);
        assert_eq!(r.opcode, Opcode::Announce);
        assert_eq!(r.lifetime, 0);
        assert_eq!(r.epoch, 5);
        assert!(
            r.options.is_empty(),
            "unknown optional options are not echoed"
        );
        // Everything else fails in this state.
        assert_ne!(
            h.pcp(client(), &map(client(), 8080, 600, NONCE)).result,
            ResultCode::Success
        );
    }

    #[test]
    fn epoch_counts_seconds_and_restarts_after_state_loss() {
        // rfc6887 8.5: epoch time; it goes back when mappings are lost
        let mut h = Harness::new();
        h.advance(100);
        let r = h.pcp(client(), &map(client(), 8080, 600, NONCE));
        assert_eq!(r.epoch, 100);
        h.advance(50);
        h.server.reset_epoch(h.now);
        h.advance(3);
        let r = h.pcp(client(), &request(client(), 0, OpRepr::Announce, vec![]));
        assert_eq!(r.epoch, 3);
        assert_eq!(h.server.epoch(h.start), 0, "saturates before the epoch");
    }

    #[test]
    fn filters_go_to_the_table_and_prefix_length_zero_clears_them() {
        // rfc6887 13.3
        let mut h = Harness::new();
        let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 8080, NONCE, 0));
        let filters = vec![
            filter([198, 51, 100, 77], 120, 443),
            filter([192, 0, 2, 9], 128, 0),
        ];
        let r = h.pcp(client(), &request(client(), 600, op, filters.clone()));
        assert_eq!(r.result, ResultCode::Success);
        assert_eq!(r.options, filters, "accepted filters are echoed");
        let stored = h.table.explicit[&key(8080)].filters.clone();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].remote.to_string(), "198.51.100.0/24");
        assert_eq!(stored[0].port, 443);
        assert!(stored[0].permits("198.51.100.200:443".parse().unwrap()));
        assert!(!stored[0].permits("198.51.100.200:80".parse().unwrap()));
        assert!(stored[1].permits("192.0.2.9:1".parse().unwrap()));
        // A renewal without FILTER keeps them.
        h.pcp(client(), &request(client(), 600, op, vec![]));
        assert_eq!(h.table.explicit[&key(8080)].filters, stored);
        // Prefix length 0 removes them all.
        let clear = vec![filter([0, 0, 0, 0], 0, 0)];
        assert_eq!(
            h.pcp(client(), &request(client(), 600, op, clear)).result,
            ResultCode::Success
        );
        assert!(h.table.explicit[&key(8080)].filters.is_empty());
        assert!(h.table.installs.last().unwrap().filters.is_empty());
    }

    #[test]
    fn too_many_or_non_ipv4_filters_are_refused() {
        // rfc6887 13.3: EXCESSIVE_REMOTE_PEERS; an IPv6 prefix is malformed here
        let mut h = Harness::with(PcpConfig {
            max_filters: 1,
            ..config()
        });
        let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 8080, NONCE, 0));
        let two = vec![
            filter([198, 51, 100, 0], 120, 0),
            filter([192, 0, 2, 0], 120, 0),
        ];
        let r = h.pcp(client(), &request(client(), 600, op, two));
        assert_eq!(r.result, ResultCode::ExcessiveRemotePeers);
        let short_prefix = vec![filter([198, 51, 100, 0], 64, 0)];
        let r = h.pcp(client(), &request(client(), 600, op, short_prefix));
        assert_eq!(r.result, ResultCode::MalformedOption);
        let v6 = vec![OptionRepr::Filter(FilterRepr {
            prefix_len: 64,
            remote_port: 0,
            remote_address: "2001:db8::".parse().unwrap(),
        })];
        let r = h.pcp(client(), &request(client(), 600, op, v6));
        assert_eq!(r.result, ResultCode::MalformedOption);
        assert!(h.table.explicit.is_empty());
    }

    #[test]
    fn requests_over_the_rate_get_no_answer_and_one_log_line() {
        // rfc6887 8.3: an overloaded server may silently discard requests
        let mut h = Harness::with(PcpConfig {
            requests_per_second: 1,
            burst: 2,
            ..config()
        });
        let announce = request(client(), 0, OpRepr::Announce, vec![]).to_bytes();
        assert!(h.send(client(), &announce).is_some());
        assert!(h.send(client(), &announce).is_some());
        assert!(h.send(client(), &announce).is_none());
        assert!(h.send(client(), &announce).is_none());
        assert_eq!(h.dropped(DropReason::RateLimited), 1);
        h.advance(1);
        assert!(h.send(client(), &announce).is_some());
    }

    #[test]
    fn only_internal_hosts_are_answered() {
        // rfc6887 8.3: only internal hosts are served. A spoofed source — the
        // gateway's own address, a host outside the LAN prefixes, the broadcast
        // address — gets no answer and no mapping (issue #11 findings 1 and 2).
        let mut h = Harness::new();
        for spoofed in [
            Ipv4Addr::new(10, 0, 0, 1),       // the gateway
            Ipv4Addr::new(198, 51, 100, 10),  // the internet
            Ipv4Addr::new(10, 255, 255, 255), // broadcast of 10.0.0.0/8
            Ipv4Addr::new(10, 0, 0, 0),       // its network address
        ] {
            let src = SocketAddrV4::new(spoofed, 40000);
            assert!(h
                .send(src, &map(src, 8022, 600, NONCE).to_bytes())
                .is_none());
            let natpmp_map = natpmp::Request::Map {
                protocol: MapProtocol::Udp,
                internal_port: 8023,
                suggested_external_port: 0,
                lifetime: 600,
            };
            assert!(h.send(src, &natpmp_map.to_bytes()).is_none());
        }
        assert!(h.table.explicit.is_empty(), "{:?}", h.table.explicit);
        assert_eq!(h.dropped(DropReason::NotInternal), 8);
        // The same request from a real host works.
        assert_eq!(
            h.pcp(client(), &map(client(), 8022, 600, NONCE)).result,
            ResultCode::Success
        );
        let stats = h.server.stats();
        assert_eq!(stats.requests, 9);
        assert_eq!(stats.dropped[DropReason::NotInternal.index()], 8);
        assert_eq!((stats.succeeded, stats.refused), (1, 0));
    }

    #[test]
    fn third_party_cannot_name_the_gateway_or_the_outside() {
        let controller = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), 7000);
        let mut h = Harness::with(PcpConfig {
            third_party_from: vec!["10.0.1.2/32".parse().unwrap()],
            ..config()
        });
        for target in [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(198, 51, 100, 10)] {
            let op = OpRepr::Map(map_repr(wire::PROTOCOL_TCP, 22, NONCE, 0));
            let third = vec![OptionRepr::ThirdParty(target.to_ipv6_mapped())];
            let r = h.pcp(controller, &request(controller, 600, op, third));
            assert_eq!(r.result, ResultCode::NotAuthorized, "{target}");
        }
        assert!(h.table.explicit.is_empty());
    }

    #[test]
    fn many_addresses_of_one_lan_share_its_caps() {
        // A host speaking from many addresses gets each a per-host quota, but the
        // interface's and the server's caps hold (issue #11 finding 7).
        let mut h = Harness::with(PcpConfig {
            max_mappings_per_host: 2,
            max_mappings_per_interface: 5,
            max_mappings: 7,
            ..config()
        });
        h.table.lans.push("172.16.0.0/24".parse().unwrap());
        let mut granted = 0;
        for host in 10..20 {
            let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, host), 5000);
            for port in [1000, 1001] {
                let r = h.pcp(src, &map(src, port, 600, NONCE));
                match r.result {
                    ResultCode::Success => granted += 1,
                    ResultCode::NoResources => assert_eq!(r.lifetime, 30, "short-lived"),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(granted, 5, "the interface's cap");
        // Another LAN still has room, up to the server's cap.
        let other = SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 9), 5000);
        for port in [1000, 1001] {
            assert_eq!(
                h.pcp(other, &map(other, port, 600, NONCE)).result,
                ResultCode::Success
            );
        }
        let third = SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 10), 5000);
        assert_eq!(
            h.pcp(third, &map(third, 1000, 600, NONCE)).result,
            ResultCode::NoResources,
            "the server's cap"
        );
        let r = h.natpmp(
            third,
            natpmp::Request::Map {
                protocol: MapProtocol::Udp,
                internal_port: 9,
                suggested_external_port: 0,
                lifetime: 600,
            },
        );
        assert_eq!(r.result(), natpmp::ResultCode::OutOfResources);
    }

    #[test]
    fn all_clients_together_are_rate_limited() {
        // rfc6887 8.3: an overloaded server may silently discard requests
        let mut h = Harness::with(PcpConfig {
            requests_per_second: 5,
            burst: 5,
            requests_per_second_total: 4,
            burst_total: 4,
            ..config()
        });
        let announce = |src| request(src, 0, OpRepr::Announce, vec![]).to_bytes();
        let answered = (1..=8)
            .filter(|i| {
                let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, *i), 5000);
                h.send(src, &announce(src)).is_some()
            })
            .count();
        assert_eq!(answered, 4);
        assert_eq!(h.server.stats().dropped[DropReason::Busy.index()], 4);
        assert_eq!(h.dropped(DropReason::Busy), 1, "logged once per episode");
        h.advance(1);
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 9), 5000);
        assert!(h.send(src, &announce(src)).is_some());
    }

    #[test]
    fn responses_and_short_datagrams_are_dropped_silently() {
        // rfc6887 8.3: under 2 bytes, R bit set, or shorter than the header
        let mut h = Harness::new();
        assert_eq!(h.send(client(), &[2]), None);
        let mut response = h.server.announce_response(h.now);
        assert_eq!(h.send(client(), &response), None);
        response[1] = 0x81;
        assert_eq!(h.send(client(), &response), None);
        let announce = request(client(), 0, OpRepr::Announce, vec![]).to_bytes();
        assert_eq!(h.send(client(), &announce[..20]), None);
        // NAT-PMP responses and truncated mapping requests too (rfc6886 3.5, 3.3).
        assert_eq!(h.send(client(), &[0, 128, 0, 0]), None);
        assert_eq!(h.send(client(), &[0, 1, 0, 0, 0x1f, 0x90]), None);
        let drops = h.events();
        assert_eq!(drops.len(), 6);
        assert!(drops.iter().all(|e| matches!(e, Event::Dropped { .. })));
    }

    #[test]
    fn unsupported_version_is_answered_naming_version_2() {
        // rfc6887 9: version 1 (pre-RFC drafts) and later versions
        let mut h = Harness::new();
        for version in [1u8, 3, 255] {
            let mut bytes = map(client(), 8080, 600, NONCE).to_bytes();
            bytes[0] = version;
            let reply = h.send(client(), &bytes).unwrap();
            assert_eq!(reply.len(), wire::HEADER_LEN);
            let r = Response::parse(&Packet::new_checked(&reply[..]).unwrap()).unwrap();
            assert_eq!(reply[0], 2);
            assert_eq!(r.result, ResultCode::UnsuppVersion);
            assert_eq!(r.opcode, Opcode::Map);
            assert_eq!(r.lifetime, 1800);
        }
        // Two bytes are enough to be answered.
        assert_eq!(h.send(client(), &[1, 1]).unwrap().len(), 24);
    }

    #[test]
    fn version_0_is_nat_pmp_unless_disabled() {
        // rfc6887 9 with rfc6886: version 0 is NAT-PMP
        let mut h = Harness::new();
        let r = h.natpmp(client(), natpmp::Request::ExternalAddress);
        assert_eq!(
            r,
            natpmp::Response::ExternalAddress {
                result: natpmp::ResultCode::Success,
                epoch: 0,
                address: EXT
            }
        );
        let mut h = Harness::with(PcpConfig {
            natpmp: false,
            ..config()
        });
        let reply = h.send(client(), &[0, 0]).unwrap();
        assert_eq!(reply[0], 2);
        assert_eq!(reply[3], ResultCode::UnsuppVersion.to_wire());
    }

    #[test]
    fn bad_lengths_are_malformed_requests() {
        // rfc6887 7, 8.3: multiple of 4, at most 1100, room for the opcode data
        let mut h = Harness::new();
        let mut bytes = map(client(), 8080, 600, NONCE).to_bytes();
        bytes.push(0);
        let reply = h.send(client(), &bytes).unwrap();
        assert_eq!(reply[3], ResultCode::MalformedRequest.to_wire());
        assert_eq!(reply.len(), 64, "copied and padded");
        bytes.resize(1500, 0);
        let reply = h.send(client(), &bytes).unwrap();
        assert_eq!(reply[3], ResultCode::MalformedRequest.to_wire());
        assert_eq!(reply.len(), wire::MAX_LEN);
        let short = map(client(), 8080, 600, NONCE).to_bytes();
        let reply = h.send(client(), &short[..56]).unwrap();
        assert_eq!(reply[3], ResultCode::MalformedRequest.to_wire());
        assert!(h.table.installs.is_empty());
    }

    #[test]
    fn unknown_opcode_is_unsupp_opcode() {
        // rfc6887 8.3
        let mut h = Harness::new();
        let mut bytes = request(client(), 0, OpRepr::Announce, vec![]).to_bytes();
        bytes[1] = 3;
        let reply = h.send(client(), &bytes).unwrap();
        assert_eq!(reply[1], 0x83);
        assert_eq!(reply[3], ResultCode::UnsuppOpcode.to_wire());
    }

    #[test]
    fn unknown_mandatory_option_is_unsupp_option_and_optional_is_ignored() {
        // rfc6887 7.3
        let mut h = Harness::new();
        let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 8080, NONCE, 0));
        let mandatory = vec![OptionRepr::Unknown {
            code: 99,
            data: vec![],
        }];
        let r = h.pcp(client(), &request(client(), 600, op, mandatory));
        assert_eq!(r.result, ResultCode::UnsuppOption);
        let optional = vec![OptionRepr::Unknown {
            code: 128,
            data: vec![9; 5],
        }];
        let r = h.pcp(client(), &request(client(), 600, op, optional));
        assert_eq!(r.result, ResultCode::Success);
        assert!(r.options.is_empty());
    }

    #[test]
    fn malformed_repeated_or_misplaced_options_are_malformed_option() {
        // rfc6887 7.3, 13.1-13.3
        let mut h = Harness::new();
        let mut bytes = request(
            client(),
            600,
            OpRepr::Map(map_repr(17, 8080, NONCE, 0)),
            vec![],
        )
        .to_bytes();
        bytes.extend_from_slice(&[2, 0, 0, 4, 0, 0, 0, 0]);
        let reply = h.send(client(), &bytes).unwrap();
        assert_eq!(reply[3], ResultCode::MalformedOption.to_wire());
        let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 8080, NONCE, 0));
        let twice = vec![OptionRepr::PreferFailure, OptionRepr::PreferFailure];
        assert_eq!(
            h.pcp(client(), &request(client(), 600, op, twice)).result,
            ResultCode::MalformedOption
        );
        let in_announce = vec![OptionRepr::PreferFailure];
        assert_eq!(
            h.pcp(
                client(),
                &request(client(), 0, OpRepr::Announce, in_announce)
            )
            .result,
            ResultCode::MalformedOption
        );
        let peer = OpRepr::Peer(PeerRepr {
            nonce: NONCE,
            protocol: wire::PROTOCOL_UDP,
            internal_port: 5000,
            external_port: 0,
            external_address: Ipv6Addr::UNSPECIFIED,
            remote_port: 3478,
            remote_address: Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped(),
        });
        let filter_in_peer = vec![filter([198, 51, 100, 0], 120, 0)];
        assert_eq!(
            h.pcp(client(), &request(client(), 600, peer, filter_in_peer))
                .result,
            ResultCode::MalformedOption
        );
        assert!(h.table.explicit.is_empty() && h.table.peers.is_empty());
    }

    #[test]
    fn only_udp_tcp_and_all_can_be_mapped() {
        // rfc6887 7.4: UNSUPP_PROTOCOL
        let mut h = Harness::new();
        let op = OpRepr::Map(map_repr(1, 8080, NONCE, 0));
        let r = h.pcp(client(), &request(client(), 600, op, vec![]));
        assert_eq!(r.result, ResultCode::UnsuppProtocol);
        assert_eq!(r.lifetime, 1800);
    }

    #[test]
    fn internal_port_zero_means_all_ports_only_with_protocol_zero() {
        // rfc6887 11.1
        let mut h = Harness::new();
        let tcp_all_ports = OpRepr::Map(map_repr(wire::PROTOCOL_TCP, 0, NONCE, 0));
        assert_eq!(
            h.pcp(client(), &request(client(), 600, tcp_all_ports, vec![]))
                .result,
            ResultCode::MalformedRequest
        );
        let all_with_port = OpRepr::Map(map_repr(wire::PROTOCOL_ALL, 80, NONCE, 0));
        assert_eq!(
            h.pcp(client(), &request(client(), 600, all_with_port, vec![]))
                .result,
            ResultCode::MalformedRequest
        );
        let all = OpRepr::Map(map_repr(wire::PROTOCOL_ALL, 0, NONCE, 0));
        assert_eq!(
            h.pcp(client(), &request(client(), 600, all, vec![])).result,
            ResultCode::NotAuthorized,
            "off by default"
        );
        let mut h = Harness::with(PcpConfig {
            allow_all_protocols: true,
            ..config()
        });
        let r = h.pcp(client(), &request(client(), 600, all, vec![]));
        assert_eq!(r.result, ResultCode::Success);
        assert_eq!(external(&r), SocketAddrV4::new(EXT, 0));
        assert!(h.table.installs[0].external_ports.is_empty());
    }

    #[test]
    fn third_party_is_off_by_default_then_limited_to_configured_hosts() {
        // rfc6887 13.1: UNSUPP_OPTION when unsupported, NOT_AUTHORIZED when refused
        let controller = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), 7000);
        let printer = Ipv4Addr::new(10, 0, 1, 9);
        let op = OpRepr::Map(map_repr(wire::PROTOCOL_TCP, 631, NONCE, 0));
        let third = vec![OptionRepr::ThirdParty(printer.to_ipv6_mapped())];
        let mut h = Harness::new();
        let r = h.pcp(controller, &request(controller, 600, op, third.clone()));
        assert_eq!(r.result, ResultCode::UnsuppOption);

        let mut h = Harness::with(PcpConfig {
            third_party_from: vec!["10.0.1.2/32".parse().unwrap()],
            ..config()
        });
        let r = h.pcp(client(), &request(client(), 600, op, third.clone()));
        assert_eq!(r.result, ResultCode::NotAuthorized);
        let r = h.pcp(controller, &request(controller, 600, op, third.clone()));
        assert_eq!(r.result, ResultCode::Success);
        assert_eq!(r.options, third, "THIRD_PARTY is echoed");
        let k = MappingKey {
            internal: printer,
            protocol: Protocol::Tcp,
            internal_port: 631,
        };
        assert_eq!(h.table.explicit[&k].reply_to, controller);
        // The sender's own address field still has to match.
        let mut lying = request(controller, 600, op, third);
        lying.client_address = printer.to_ipv6_mapped();
        assert_eq!(
            h.pcp(controller, &lying).result,
            ResultCode::AddressMismatch
        );
    }

    #[test]
    fn port_rules_refuse_with_not_authorized() {
        // policy: miniupnpd-style allow/deny rules
        let mut h = Harness::with(PcpConfig {
            rules: vec![
                "deny 1024-65535 10.0.1.6/32 1-65535".parse().unwrap(),
                "allow 2000-2999 10.0.1.0/24 1024-65535".parse().unwrap(),
            ],
            ..config()
        });
        let r = h.pcp(client(), &map(client(), 8080, 600, NONCE));
        assert_eq!(r.result, ResultCode::Success);
        assert!((2000..=2999).contains(&external(&r).port()), "{r:?}");
        let r = h.pcp(client(), &map(client(), 22, 600, NONCE));
        assert_eq!(r.result, ResultCode::NotAuthorized);
        let denied = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 6), 5000);
        assert_eq!(
            h.pcp(denied, &map(denied, 8080, 600, NONCE)).result,
            ResultCode::NotAuthorized
        );
        let r = h.natpmp(
            denied,
            natpmp::Request::Map {
                protocol: MapProtocol::Udp,
                internal_port: 8080,
                suggested_external_port: 0,
                lifetime: 600,
            },
        );
        assert_eq!(r.result(), natpmp::ResultCode::NotAuthorized);
        let line = h.events().last().unwrap().to_string();
        assert!(
            line.contains("op=nat-pmp.map result=NOT_AUTHORIZED"),
            "{line}"
        );
    }

    fn peer_request(src: SocketAddrV4, nonce: Nonce, protocol: u8, internal_port: u16) -> Request {
        request(
            src,
            600,
            OpRepr::Peer(PeerRepr {
                nonce,
                protocol,
                internal_port,
                external_port: 0,
                external_address: Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
                remote_port: 3478,
                remote_address: Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped(),
            }),
            vec![],
        )
    }

    #[test]
    fn peer_returns_the_endpoint_the_data_path_uses() {
        // rfc6887 12.3: PEER reports the implicit mapping's external endpoint
        let mut h = Harness::new();
        let mapped = h.pcp(client(), &map(client(), 5000, 600, NONCE));
        let r = h.pcp(
            client(),
            &peer_request(client(), NONCE, wire::PROTOCOL_UDP, 5000),
        );
        assert_eq!(r.result, ResultCode::Success);
        assert_eq!(r.lifetime, 600);
        let Some(OpRepr::Peer(p)) = r.op else {
            panic!("no PEER data")
        };
        assert_eq!(
            SocketAddrV4::new(EXT, p.external_port),
            external(&mapped),
            "EIM"
        );
        assert_eq!(p.remote_port, 3478);
        let sent = &h.table.peers[0];
        assert_eq!(sent.remote, "198.51.100.7:3478".parse().unwrap());
        assert_eq!(sent.internal, SocketAddrV4::new(*client().ip(), 5000));
        assert!(matches!(h.events().last(), Some(Event::Peer { .. })));
        // A refresh with another nonce is refused by the table.
        let r = h.pcp(
            client(),
            &peer_request(client(), OTHER_NONCE, wire::PROTOCOL_UDP, 5000),
        );
        assert_eq!(r.result, ResultCode::NotAuthorized);
        // PEER needs a protocol and ports.
        let r = h.pcp(
            client(),
            &peer_request(client(), NONCE, wire::PROTOCOL_ALL, 5000),
        );
        assert_eq!(r.result, ResultCode::MalformedRequest);
        let r = h.pcp(
            client(),
            &peer_request(client(), NONCE, wire::PROTOCOL_UDP, 0),
        );
        assert_eq!(r.result, ResultCode::MalformedRequest);
        let r = h.pcp(client(), &peer_request(client(), NONCE, 132, 5000));
        assert_eq!(r.result, ResultCode::UnsuppProtocol);
    }

    #[test]
    fn no_external_address_is_a_short_lived_network_failure() {
        // rfc6887 7.4: NETWORK_FAILURE
        let mut h = Harness::new();
        h.table.external = None;
        let r = h.pcp(client(), &map(client(), 8080, 600, NONCE));
        assert_eq!(r.result, ResultCode::NetworkFailure);
        assert_eq!(r.lifetime, 30);
        let r = h.pcp(
            client(),
            &peer_request(client(), NONCE, wire::PROTOCOL_UDP, 5000),
        );
        assert_eq!(r.result, ResultCode::NetworkFailure);
        let r = h.natpmp(client(), natpmp::Request::ExternalAddress);
        assert_eq!(r.result(), natpmp::ResultCode::NetworkFailure);
    }

    #[test]
    fn full_table_is_no_resources() {
        // rfc6887 7.4: NO_RESOURCES
        let mut h = Harness::new();
        h.table.capacity = 1;
        h.pcp(client(), &map(client(), 8080, 600, NONCE));
        let r = h.pcp(client(), &map(client(), 8081, 600, NONCE));
        assert_eq!(r.result, ResultCode::NoResources);
        assert_eq!(r.lifetime, 30);
    }

    #[test]
    fn natpmp_maps_renews_and_deletes_over_the_same_table() {
        // rfc6886 3.3, 3.4
        let mut h = Harness::new();
        h.advance(42);
        let map_udp = |port, suggest, lifetime| natpmp::Request::Map {
            protocol: MapProtocol::Udp,
            internal_port: port,
            suggested_external_port: suggest,
            lifetime,
        };
        let r = h.natpmp(client(), map_udp(5000, 45000, 3600));
        assert_eq!(
            r,
            natpmp::Response::Map {
                protocol: MapProtocol::Udp,
                result: natpmp::ResultCode::Success,
                epoch: 42,
                internal_port: 5000,
                external_port: 45000,
                lifetime: 3600
            }
        );
        assert_eq!(h.table.explicit[&key(5000)].origin, Origin::NatPmp);
        assert_eq!(h.table.explicit[&key(5000)].nonce, NATPMP_NONCE);
        h.natpmp(client(), map_udp(5001, 0, 3600));
        // A PCP mapping of the same host is not NAT-PMP's to touch.
        h.pcp(client(), &map(client(), 5002, 600, NONCE));
        let r = h.natpmp(client(), map_udp(5002, 0, 0));
        assert_eq!(r.result(), natpmp::ResultCode::NotAuthorized);
        let r = h.natpmp(client(), map_udp(5002, 0, 600));
        assert_eq!(r.result(), natpmp::ResultCode::NotAuthorized);
        // Lifetime 0 deletes one; internal port 0 deletes all of its NAT-PMP ones.
        let r = h.natpmp(client(), map_udp(5000, 0, 0));
        assert!(matches!(
            r,
            natpmp::Response::Map {
                result: natpmp::ResultCode::Success,
                external_port: 0,
                lifetime: 0,
                ..
            }
        ));
        h.natpmp(client(), map_udp(5000, 0, 3600));
        h.natpmp(client(), map_udp(0, 0, 0));
        let left: Vec<u16> = h.table.explicit.keys().map(|k| k.internal_port).collect();
        assert_eq!(left, [5002]);
        // Internal port 0 is only for deletion.
        assert_eq!(
            h.natpmp(client(), map_udp(0, 0, 60)).result(),
            natpmp::ResultCode::NotAuthorized
        );
    }

    #[test]
    fn natpmp_unknown_opcode_returns_the_request() {
        // rfc6886 3.5: result 5 with the request echoed
        let mut h = Harness::new();
        let reply = h.send(client(), &[0, 7, 1, 2, 3, 4]).unwrap();
        assert_eq!(reply, [0, 0x87, 0, 5, 3, 4]);
        assert_eq!(
            refusals(&h.events()),
            [Answer::NatPmp(natpmp::ResultCode::UnsupportedOpcode)]
        );
    }

    #[test]
    fn restart_is_announced_ten_times_with_doubling_intervals() {
        // rfc6887 14.1.3, rfc6886 3.2.1
        let mut h = Harness::new();
        let mut sent_at = Vec::new();
        while let Some(at) = h.server.poll_timeout() {
            let round = h.server.unsolicited(at, &h.table);
            assert_eq!(round.len(), 2, "PCP ANNOUNCE and NAT-PMP address");
            assert!(round.iter().all(|t| t.destination == ANNOUNCE_GROUP));
            let announce =
                Response::parse(&Packet::new_checked(&round[0].payload[..]).unwrap()).unwrap();
            assert_eq!(announce.opcode, Opcode::Announce);
            let address = natpmp::Response::parse(
                &natpmp::Packet::new_checked(&round[1].payload[..]).unwrap(),
            )
            .unwrap();
            assert!(matches!(
                address,
                natpmp::Response::ExternalAddress { address: EXT, .. }
            ));
            sent_at.push(at.duration_since(h.start).as_millis());
        }
        assert_eq!(
            sent_at,
            [0, 250, 750, 1750, 3750, 7750, 15750, 31750, 63750, 127_750]
        );
        assert!(h
            .server
            .unsolicited(h.now + Duration::from_secs(999), &h.table)
            .is_empty());
    }

    #[test]
    fn address_change_sends_unsolicited_map_responses_to_pcp_clients() {
        // rfc6887 14.2
        let mut h = Harness::with(PcpConfig {
            third_party_from: vec!["10.0.1.2/32".parse().unwrap()],
            ..config()
        });
        while let Some(at) = h.server.poll_timeout() {
            h.server.unsolicited(at, &h.table);
        }
        h.pcp(client(), &map(client(), 8080, 600, NONCE));
        let controller = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), 7000);
        let printer = Ipv4Addr::new(10, 0, 1, 9);
        let op = OpRepr::Map(map_repr(wire::PROTOCOL_TCP, 631, NONCE, 0));
        let third = vec![OptionRepr::ThirdParty(printer.to_ipv6_mapped())];
        h.pcp(controller, &request(controller, 600, op, third.clone()));
        h.natpmp(
            client(),
            natpmp::Request::Map {
                protocol: MapProtocol::Tcp,
                internal_port: 22,
                suggested_external_port: 0,
                lifetime: 600,
            },
        );
        // The controller re-addresses the table, then tells the server.
        let new_ext = Ipv4Addr::new(198, 51, 100, 1);
        h.table.external = Some(new_ext);
        for m in h.table.explicit.values_mut() {
            m.external = SocketAddrV4::new(new_ext, m.external.port());
        }
        h.advance(100);
        h.server.external_address_changed(h.now);
        assert_eq!(h.server.poll_timeout(), Some(h.now));
        let round = h.server.unsolicited(h.now, &h.table);
        let maps: Vec<&Transmit> = round
            .iter()
            .filter(|t| t.destination != ANNOUNCE_GROUP)
            .collect();
        assert_eq!(maps.len(), 2, "PCP mappings only");
        let to_client = maps.iter().find(|t| t.destination == client()).unwrap();
        let r = Response::parse(&Packet::new_checked(&to_client.payload[..]).unwrap()).unwrap();
        assert_eq!(external(&r), SocketAddrV4::new(new_ext, 8080));
        assert_eq!(r.lifetime, 500);
        assert_eq!(map_data(&r).nonce, NONCE);
        let to_controller = maps.iter().find(|t| t.destination == controller).unwrap();
        let r = Response::parse(&Packet::new_checked(&to_controller.payload[..]).unwrap()).unwrap();
        assert_eq!(r.options, third);
        // The epoch did not restart: mappings were kept.
        assert_eq!(r.epoch, 100);
    }

    #[test]
    fn error_responses_copy_the_request_and_fill_in_the_header() {
        // rfc6887 8.3: error responses copy the request
        let mut h = Harness::new();
        h.advance(9);
        let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 8080, OTHER_NONCE, 8080));
        let options = vec![OptionRepr::Unknown {
            code: 77,
            data: vec![1],
        }];
        let bytes = request(client(), 600, op, options.clone()).to_bytes();
        let reply = h.send(client(), &bytes).unwrap();
        assert_eq!(reply.len(), bytes.len());
        assert_eq!(&reply[24..], &bytes[24..]);
        let r = Response::parse(&Packet::new_checked(&reply[..]).unwrap()).unwrap();
        assert_eq!(r.result, ResultCode::UnsuppOption);
        assert_eq!(r.epoch, 9);
        assert_eq!(r.options, options);
    }

    #[test]
    fn unpolled_events_are_bounded_and_counted() {
        let mut h = Harness::new();
        for _ in 0..MAX_QUEUED_EVENTS + 5 {
            h.send(client(), &[9]);
        }
        let events = h.events();
        assert_eq!(events.len(), MAX_QUEUED_EVENTS + 1);
        assert_eq!(events.last(), Some(&Event::Lost { count: 5 }));
        assert_eq!(
            events[0].to_string(),
            "pcp.dropped client=10.0.1.5:40000 reason=short"
        );
    }

    #[test]
    fn invalid_policy_is_refused_at_start() {
        let bad = PcpConfig {
            min_lifetime: 10,
            max_lifetime: 5,
            ..config()
        };
        assert!(Engine::new(bad, Instant::now()).is_err());
    }
}
