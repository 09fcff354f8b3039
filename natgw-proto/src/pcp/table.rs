//! What the PCP server needs from the NAT: the [`MappingTable`] trait — implemented
//! by the controller over the BPF maps, and by an in-memory fake in the tests — and
//! the plain types that cross it.
//!
//! The division of labour: the server engine decides everything the protocol and the
//! policy say (nonce checks, lifetime clamping, quotas, port rules, FILTER semantics,
//! which mapping a request names); the table stores explicit mappings and allocates
//! external endpoints, honouring a suggestion when it is free.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use super::policy::PortSpan;
use super::wire::{Nonce, PROTOCOL_ALL, PROTOCOL_TCP, PROTOCOL_UDP};
use crate::prefix::Ipv4Prefix;

/// The protocols a mapping can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// Every protocol and port of the host (PCP MAP protocol 0).
    All,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The protocol with this IANA number, if supported.
    #[must_use]
    pub const fn from_wire(value: u8) -> Option<Self> {
        match value {
            PROTOCOL_ALL => Some(Self::All),
            PROTOCOL_TCP => Some(Self::Tcp),
            PROTOCOL_UDP => Some(Self::Udp),
            _ => None,
        }
    }

    /// IANA protocol number (0 for all).
    #[must_use]
    pub const fn to_wire(self) -> u8 {
        match self {
            Self::All => PROTOCOL_ALL,
            Self::Tcp => PROTOCOL_TCP,
            Self::Udp => PROTOCOL_UDP,
        }
    }

    /// `all`, `tcp` or `udp`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What identifies an explicit mapping (RFC 6887 §11.3): the internal host, the
/// protocol and the internal port — never the port the request came from, so a
/// client may renew or delete from a new socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MappingKey {
    /// Internal host (the sender, or the THIRD_PARTY address).
    pub internal: Ipv4Addr,
    /// Protocol.
    pub protocol: Protocol,
    /// Internal port; 0 exactly when `protocol` is [`Protocol::All`].
    pub internal_port: u16,
}

impl MappingKey {
    /// Internal address and port.
    #[must_use]
    pub const fn internal_endpoint(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.internal, self.internal_port)
    }
}

/// Which protocol created an explicit mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// PCP MAP; gets unsolicited MAP responses when its external address changes.
    Pcp,
    /// NAT-PMP; stored with [`super::engine::NATPMP_NONCE`].
    NatPmp,
    /// UPnP IGD (AddPortMapping, AddAnyPortMapping); stored with
    /// [`crate::upnp::engine::UPNP_NONCE`] and the control point's description.
    Upnp,
}

impl Origin {
    /// `pcp`, `nat-pmp` or `upnp`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pcp => "pcp",
            Self::NatPmp => "nat-pmp",
            Self::Upnp => "upnp",
        }
    }
}

/// A remote peer allowed to reach a mapping (RFC 6887 §13.3). A mapping without
/// filters accepts every peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Remote address prefix (host bits cleared).
    pub remote: Ipv4Prefix,
    /// Remote port; 0 = any.
    pub port: u16,
}

impl Filter {
    /// Whether a packet from `remote` passes this filter.
    #[must_use]
    pub fn permits(&self, remote: SocketAddrV4) -> bool {
        let host = Ipv4Prefix::new(*remote.ip(), 32);
        host.is_some_and(|h| self.remote.overlaps(&h))
            && (self.port == 0 || self.port == remote.port())
    }
}

/// An explicit mapping as the table stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExplicitMapping {
    /// Its identity.
    pub key: MappingKey,
    /// Who created it.
    pub origin: Origin,
    /// The nonce every renewal and deletion must carry.
    pub nonce: Nonce,
    /// External endpoint (port 0 for [`Protocol::All`]).
    pub external: SocketAddrV4,
    /// When it expires unless renewed.
    pub expires: Instant,
    /// Remote peers allowed in; empty = all.
    pub filters: Vec<Filter>,
    /// Where the last request came from: unsolicited responses go there (§14.2).
    pub reply_to: SocketAddrV4,
    /// What the holder called it (UPnP's NewPortMappingDescription); empty for PCP
    /// and NAT-PMP, which have no such field.
    pub description: String,
}

/// A request to create an explicit mapping, or to renew or update the one with the
/// same key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    /// Its identity.
    pub key: MappingKey,
    /// Who asks.
    pub origin: Origin,
    /// Nonce to store.
    pub nonce: Nonce,
    /// Granted lifetime in seconds, already clamped by policy (never 0).
    pub lifetime: u32,
    /// `now + lifetime`.
    pub expires: Instant,
    /// External address the client would like; `None` = no preference.
    pub suggested_address: Option<Ipv4Addr>,
    /// External port the client would like; `None` = no preference.
    pub suggested_port: Option<u16>,
    /// PREFER_FAILURE: when the suggestion cannot be had, fail with
    /// [`TableError::CannotProvideExternal`] instead of choosing another.
    pub prefer_failure: bool,
    /// External ports policy permits, sorted and disjoint; a new mapping's port must
    /// come from these (empty for [`Protocol::All`], whose external port is 0).
    pub external_ports: Vec<PortSpan>,
    /// The mapping's complete filter list after this request (empty = all peers).
    pub filters: Vec<Filter>,
    /// Where the request came from.
    pub reply_to: SocketAddrV4,
    /// The mapping's description (UPnP); empty for PCP and NAT-PMP.
    pub description: String,
}

/// A PEER request (RFC 6887 §12): create or refresh the implicit, traffic-style
/// mapping of an internal endpoint towards one remote peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRequest {
    /// Internal endpoint.
    pub internal: SocketAddrV4,
    /// [`Protocol::Tcp`] or [`Protocol::Udp`].
    pub protocol: Protocol,
    /// The remote peer.
    pub remote: SocketAddrV4,
    /// The client's nonce, to be checked against the one stored when an earlier PEER
    /// refreshed the same mapping.
    pub nonce: Nonce,
    /// Seconds the mapping must stay up at least, clamped to policy's maximum; 0 =
    /// report without extending.
    pub lifetime: u32,
    /// External address the client would like (honoured only if no mapping exists).
    pub suggested_address: Option<Ipv4Addr>,
    /// External port the client would like (idem).
    pub suggested_port: Option<u16>,
    /// Where the request came from.
    pub reply_to: SocketAddrV4,
}

/// What the table granted a PEER request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerGrant {
    /// External endpoint traffic from the internal endpoint uses (or will use) towards
    /// the peer — with endpoint-independent mapping, the same for every peer.
    pub external: SocketAddrV4,
    /// Seconds the mapping is guaranteed to live without traffic.
    pub lifetime: u32,
}

/// Why the table could not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// No free external port or no room in the maps (NO_RESOURCES).
    #[error("no free external port or table space")]
    NoResources,
    /// A limit the table itself enforces (USER_EX_QUOTA).
    #[error("the host's mapping quota is used up")]
    QuotaExceeded,
    /// PREFER_FAILURE and the suggested endpoint is taken (CANNOT_PROVIDE_EXTERNAL).
    #[error("the suggested external endpoint is not available")]
    CannotProvideExternal,
    /// No external address, or the maps cannot be written (NETWORK_FAILURE).
    #[error("the gateway's external side is not working")]
    NetworkFailure,
    /// More filters than the data path can hold (EXCESSIVE_REMOTE_PEERS).
    #[error("more remote-peer filters than the data path holds")]
    ExcessiveRemotePeers,
    /// Refused by a rule the table enforces (NOT_AUTHORIZED).
    #[error("refused by the mapping table")]
    NotAuthorized,
    /// PEER nonce differs from the one stored (NOT_AUTHORIZED).
    #[error("the nonce does not match the one the mapping was created with")]
    NonceMismatch,
}

/// The NAT's mapping state as the PCP server sees it. The controller implements it
/// over the BPF maps (explicit and implicit mappings live in the same maps, so the
/// data path honours them at line rate) plus a user-space record of the PCP-only
/// fields (nonce, expiry, filters, reply address).
///
/// Calls are synchronous and made from the server task; none may block for long.
pub trait MappingTable {
    /// The external address the NAT uses now; `None` (no address yet) makes requests
    /// fail with NETWORK_FAILURE.
    fn external_address(&self) -> Option<Ipv4Addr>;

    /// The explicit mapping with this key, expired or not.
    fn explicit(&self, key: &MappingKey) -> Option<ExplicitMapping>;

    /// Every explicit mapping of one internal host (quota, deletion of a set).
    fn explicit_of(&self, internal: Ipv4Addr) -> Vec<ExplicitMapping>;

    /// Every explicit mapping (unsolicited updates after an address change).
    fn explicit_all(&self) -> Vec<ExplicitMapping>;

    /// A number that changes whenever an explicit mapping is added, removed or
    /// changed, so an engine may keep a view of them (UPnP's port mapping array)
    /// until then; `None` (the default): no such number, views are made afresh.
    fn generation(&self) -> Option<u64> {
        None
    }

    /// The LAN interface internal host `host` is on, or `None` when `host` is no
    /// host the NAT serves: outside every LAN prefix, an address of the gateway
    /// itself, or a LAN prefix's network or broadcast address. Such an address never
    /// holds a mapping and its requests are not answered.
    fn lan_of(&self, host: Ipv4Addr) -> Option<u32>;

    /// How many live explicit mappings of PCP and NAT-PMP clients exist: on LAN
    /// interface `lan`, or on all of them (`None`).
    fn explicit_count(&self, lan: Option<u32>) -> usize;

    /// Creates the explicit mapping `request.key`, or renews and updates it when it
    /// exists: then it keeps its external endpoint and takes the new nonce, expiry,
    /// filters and reply address. A new mapping gets the suggested endpoint when it
    /// is free and within `external_ports`, else (unless `prefer_failure`) another
    /// free port from `external_ports` — for UDP and TCP the same external port
    /// traffic from the internal endpoint gets (endpoint-independent mapping), so an
    /// existing implicit mapping's port is reused. Returns the external endpoint.
    fn install(&mut self, request: &Install) -> Result<SocketAddrV4, TableError>;

    /// Deletes the explicit mapping with this key; nothing when there is none.
    fn remove(&mut self, key: &MappingKey);

    /// Creates or refreshes the implicit mapping of `request.internal` towards
    /// `request.remote`, as outbound traffic would, and returns the external endpoint
    /// the data path uses for it.
    fn peer(&mut self, request: &PeerRequest) -> Result<PeerGrant, TableError>;
}
