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
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::natpmp::{self, MapProtocol};
use super::policy::{client_limiter, PcpConfig, PolicyError};
use super::table::{Filter, MappingTable, TableError};
use super::wire::{self, FilterRepr, Nonce, OpRepr, Opcode, OptionRepr, ResultCode};
use crate::util::bucket::{RateLimiter, TokenBucket, Verdict};

mod announce;
mod events;
mod mapping;
mod nat_pmp;
#[cfg(test)]
mod tests;

use announce::Burst;
pub use events::{Answer, DropReason, Event, MappingEvent, Stats};
pub use mapping::{admit, Quota};

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

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
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

    /// A new policy (a reloaded configuration), for requests from now on; the
    /// mappings already granted keep their lifetimes. Rate limits start afresh.
    ///
    /// # Errors
    /// When the policy is invalid (the old one stays).
    pub fn set_config(&mut self, config: PcpConfig, now: Instant) -> Result<(), PolicyError> {
        config.validate()?;
        self.limiter = client_limiter(config.requests_per_second, config.burst);
        self.total = TokenBucket::new(
            u64::from(config.requests_per_second_total),
            u64::from(config.burst_total),
            now,
        );
        self.config = config;
        Ok(())
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

    /// Mapping state was kept across a restart of the server (RFC 6887 §8.5): the
    /// epoch goes on from `elapsed` since it began, and there is no restart to
    /// announce, since clients' mappings are all still there.
    pub fn continue_epoch(&mut self, elapsed: Duration, now: Instant) {
        self.epoch_start = now.checked_sub(elapsed).unwrap_or(now);
        self.burst = None;
    }

    /// When the epoch began, as `elapsed` before `now` (to hand on across a restart).
    #[must_use]
    pub fn epoch_elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch_start)
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
        let natpmp = datagram.first() == Some(&natpmp::VERSION);
        let refused_before = self.stats.refused;
        let answer = self.answer(now, src, datagram, table);
        let refused = self.stats.refused != refused_before;
        if answer.is_some() && !refused {
            self.stats.succeeded += 1;
        }
        if natpmp {
            self.stats.natpmp_requests += 1;
            if refused {
                self.stats.natpmp_refused += 1;
            } else if answer.is_some() {
                self.stats.natpmp_succeeded += 1;
            }
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
