//! What the engine reports: the answer a refusal got, why a datagram got no answer,
//! the counters, and the events the caller logs.

use std::fmt;
use std::net::SocketAddrV4;

use super::super::natpmp;
use super::super::table::{Origin, Protocol};
use super::super::wire::ResultCode;

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
    /// Datagrams handed to [`super::Engine::handle`].
    pub requests: u64,
    /// Answered with success.
    pub succeeded: u64,
    /// Answered with an error result.
    pub refused: u64,
    /// Not answered, by [`DropReason::index`].
    pub dropped: [u64; DropReason::ALL.len()],
    /// Of [`Stats::requests`], those of NAT-PMP (version 0, RFC 6886); the rest
    /// are PCP's (or of no version the server speaks).
    pub natpmp_requests: u64,
    /// Of [`Stats::succeeded`], NAT-PMP's.
    pub natpmp_succeeded: u64,
    /// Of [`Stats::refused`], NAT-PMP's.
    pub natpmp_refused: u64,
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
