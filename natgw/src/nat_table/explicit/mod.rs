//! Explicit mappings — PCP MAP and NAT-PMP requests (RFC 6887, RFC 6886) and the
//! configuration's static forwards — in the same BPF maps as the mappings traffic
//! creates, so the data path translates them at line rate; and the PCP engine's
//! [`MappingTable`] over them.
//!
//! What lives where:
//! - `NAT_REV` and `NAT_FWD` hold an explicit mapping exactly like a traffic one, with
//!   the forward entry's `origin` saying who made it. The external port is claimed as
//!   the data path claims it (`BPF_NOEXIST` into `NAT_REV` first), so the two can
//!   never hand out one port. Mapping is endpoint-independent whoever creates it: a
//!   MAP for an internal endpoint that traffic already mapped takes over that mapping
//!   and its external port (RFC 6887 §11.3, RFC 4787 REQ-1).
//! - Inbound filtering: a mapping without FILTER options is endpoint-independent
//!   (anyone may reach it, which is what a MAP asks for); with them its reverse
//!   entry's filter is `PcpFilter` and `PCP_FILTERS` holds the permitted remote
//!   prefixes (RFC 6887 §13.3). The trie holds one port per prefix: two FILTERs with
//!   the same prefix and different ports are refused (EXCESSIVE_REMOTE_PEERS), and of
//!   nested prefixes the longest matching one decides.
//! - This module keeps in memory what only the controller needs: holder, nonce,
//!   lifetime, filters, where to send unsolicited responses.
//!
//! Lifetimes: the garbage collector leaves mappings whose origin is not traffic
//! alone; this module ends them when their lifetime runs out ([`ExplicitMappings::expire`])
//! or their holder deletes them. Ending one follows RFC 6887 §15: if the internal
//! endpoint sent traffic through it within its idle timeout, the mapping stays as an
//! ordinary implicit one (origin traffic, the configured filtering) and expires like
//! one; otherwise both entries are deleted at once. Static forwards never expire.
//!
//! When the external address changes, explicit mappings move to the new address,
//! keeping their ports where free ([`ExplicitMappings::set_pool`]).
//!
//! Here: the records, lifetimes and static forwards. Beside it, by job: `install`
//! (claiming ports, creating and adopting mappings), `filters` (PCP FILTER),
//! `peer` (PCP PEER), `address_change` (a new pool), `table` (the engine's view).

mod address_change;
mod filters;
mod install;
mod peer;
mod replica;
mod table;
#[cfg(test)]
mod tests;

pub use replica::protocol_named;
pub use table::Table;

use filters::{check_filters, filter_mode};

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use log::{info, warn};
use std::time::{Duration, Instant};

use natgw_common::config::pool_index;
use natgw_common::maps::{FilterMode, PcpFilterKey, Session, SessionKey, PCP_FILTER_FIXED_BITS};

use natgw_common::{
    addr_be, FwdKey, Mapping, RevKey, RevValue, IPPROTO_TCP, IPPROTO_UDP, NS_PER_SEC,
};

use crate::config::PortRange;
use serde::{Deserialize, Serialize};

use crate::datapath::addresses::{AddressPlan, Host};
use crate::datapath::maps::{
    ipv4, is_full, port, rev_key_of, MapsError, NatTables, NatWrites, PcpFilterTable,
};

use crate::nat_table::events::{self, MappingFilter};
use crate::nat_table::gc::{self, Observed, Policy};
use natgw_common::maps::MappingEventKind;
use natgw_proto::pcp::policy::PortSpan;

use natgw_proto::pcp::table::{
    ExplicitMapping, Filter, Install, MappingKey, MappingTable, Origin, PeerGrant, PeerRequest,
    Protocol, TableError,
};

use natgw_proto::pcp::wire::Nonce;
use natgw_proto::util::log_budget::{suppressed_note, LogBudget};

/// One explicit mapping (PCP, NAT-PMP, static forward) as the daemon records it for
/// `natgw mappings`: what the maps do not hold. Rewritten when they change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplicitEntry {
    /// `udp` or `tcp`.
    pub protocol: String,
    /// Internal endpoint.
    pub internal: SocketAddrV4,
    /// External endpoint.
    pub external: SocketAddrV4,
    /// `pcp`, `nat-pmp`, `upnp`, `static`, or `peer-static` (the active peer's
    /// static forward, replicated).
    pub origin: String,
    /// The client that holds it (its nonce): where its last request came from;
    /// `None` for static forwards.
    pub client: Option<SocketAddrV4>,
    /// When its lifetime ends, on `CLOCK_MONOTONIC` (ns); `None`: never.
    pub expires_ns: Option<u64>,
    /// Remote peers its PCP FILTER options let in, `PREFIX:PORT` (port 0: any);
    /// empty: everyone.
    pub filters: Vec<String>,
    /// The holder's nonce, so that a restarted natgw still knows the holder.
    #[serde(default)]
    pub nonce: Option<Nonce>,
    /// `created_ns` of its `NAT_FWD` entry (its identity in the maps).
    #[serde(default)]
    pub created_ns: u64,
    /// External port spans policy allowed it, `[first, last]`.
    #[serde(default)]
    pub ports: Vec<[u16; 2]>,
    /// What its holder called it (UPnP's description); empty for the others.
    #[serde(default)]
    pub description: String,
}

/// How often the PEER nonces of mappings that no longer exist are forgotten (each
/// look costs a map lookup per nonce).
const PEER_NONCE_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Who holds an explicit mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A PCP client (MAP).
    Pcp,
    /// A NAT-PMP client.
    NatPmp,
    /// A `[[forward]]` of the configuration.
    Static,
    /// A UPnP IGD control point.
    Upnp,
    /// A `[[forward]]` of the active peer's configuration, replicated to this
    /// standby (issue #16): it holds the forward until the peer no longer has it.
    /// This gateway's own configuration wins over it.
    PeerStatic,
}

impl Holder {
    const fn from_engine(origin: Origin) -> Self {
        match origin {
            Origin::Pcp => Self::Pcp,
            Origin::NatPmp => Self::NatPmp,
            Origin::Upnp => Self::Upnp,
        }
    }

    const fn engine(self) -> Option<Origin> {
        match self {
            Self::Pcp => Some(Origin::Pcp),
            Self::NatPmp => Some(Origin::NatPmp),
            Self::Upnp => Some(Origin::Upnp),
            Self::Static | Self::PeerStatic => None,
        }
    }

    /// A static forward, of this gateway's configuration or of its peer's: never
    /// expires, and no PCP, NAT-PMP or UPnP request takes it over.
    #[must_use]
    pub const fn is_static(self) -> bool {
        matches!(self, Self::Static | Self::PeerStatic)
    }

    /// `pcp`, `nat-pmp`, `upnp`, `static` or `peer-static`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::PeerStatic => "peer-static",
            _ => self.origin().name(),
        }
    }

    /// The `origin` the forward entry carries.
    #[must_use]
    pub const fn origin(self) -> natgw_common::Origin {
        match self {
            Self::Pcp => natgw_common::Origin::Pcp,
            Self::NatPmp => natgw_common::Origin::NatPmp,
            Self::Static | Self::PeerStatic => natgw_common::Origin::Static,
            Self::Upnp => natgw_common::Origin::Upnp,
        }
    }
}

/// What the data path does with mappings that are not explicit: explicit mappings
/// that end while in use fall back to it, and PEER creates mappings by it.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    /// Ports traffic mappings are allocated from.
    pub port_range: PortRange,
    /// Filtering of UDP traffic mappings.
    pub filter_udp: FilterMode,
    /// Filtering of TCP traffic mappings.
    pub filter_tcp: FilterMode,
    /// Idle timeouts.
    pub policy: Policy,
    /// Port blocks (RFC 7422): when on, a host's explicit mappings come from its
    /// block, as its traffic mappings do, and hosts without one get none.
    pub blocks: natgw_common::blocks::BlockPlan,
}

impl Defaults {
    const fn filter_for(&self, proto: u8) -> FilterMode {
        if proto == IPPROTO_TCP {
            self.filter_tcp
        } else {
            self.filter_udp
        }
    }
}

/// One explicit mapping.
#[derive(Clone, Debug)]
struct Record {
    key: MappingKey,
    holder: Holder,
    nonce: Nonce,
    external: SocketAddrV4,
    /// `None`: never (static forwards).
    expires: Option<Instant>,
    /// The same on `CLOCK_MONOTONIC`, for `natgw mappings`.
    expires_ns: Option<u64>,
    filters: Vec<Filter>,
    /// Where the last request came from (unsolicited responses go there).
    reply_to: Option<SocketAddrV4>,
    /// External ports policy allowed it; used if it must move to another port.
    ports: Vec<PortSpan>,
    /// `created_ns` of its `NAT_FWD` entry: the mapping's identity in the maps.
    created_ns: u64,
    /// What its holder called it (UPnP); empty for the others.
    description: String,
}

impl Record {
    fn engine_view(&self) -> Option<ExplicitMapping> {
        Some(ExplicitMapping {
            key: self.key,
            origin: self.holder.engine()?,
            nonce: self.nonce,
            external: self.external,
            expires: self.expires?,
            filters: self.filters.clone(),
            reply_to: self.reply_to?,
            description: self.description.clone(),
        })
    }

    /// What its forward entry says of it: external endpoint and origin.
    fn mapping_view(&self) -> Mapping {
        Mapping {
            ext_addr_be: addr_be(self.external.ip().octets()),
            ext_port_be: self.external.port().to_be(),
            origin: self.holder.origin() as u8,
            created_ns: self.created_ns,
            ..Mapping::default()
        }
    }

    fn proto(&self) -> u8 {
        ip_proto(self.key.protocol).unwrap_or(IPPROTO_UDP)
    }

    fn fwd_key(&self) -> FwdKey {
        fwd_key(self.proto(), self.key.internal_endpoint())
    }
}

/// How an explicit mapping ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its entries were deleted: the external port is closed.
    Removed,
    /// The internal endpoint had sent traffic through it within its idle timeout: it
    /// stays as an implicit mapping (RFC 6887 §15).
    Implicit,
    /// Its entries had disappeared already.
    Gone,
}

impl Outcome {
    /// Short name for logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Removed => "removed",
            Self::Implicit => "kept-as-implicit",
            Self::Gone => "gone",
        }
    }
}

/// An explicit mapping that ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    /// Its identity.
    pub key: MappingKey,
    /// Who held it.
    pub holder: Holder,
    /// External endpoint it had.
    pub external: SocketAddrV4,
    /// What became of its entries.
    pub outcome: Outcome,
}

/// An explicit mapping moved to a new external endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    /// Its identity.
    pub key: MappingKey,
    /// Where it was.
    pub from: SocketAddrV4,
    /// Where it is now; `None`: it could not move and was removed.
    pub to: Option<SocketAddrV4>,
}

/// Whether a socket of the gateway itself holds `port` on `addr`: an explicit mapping
/// must not take it, or the socket's traffic would be sent to an internal host (the
/// data path checks the same before it hands out a port). Probed by binding: `UDP`
/// fails while a socket is bound there; `TCP` (`SO_REUSEADDR`, as std binds) while one
/// listens or is connected from it.
#[must_use]
pub fn gateway_socket_holds(protocol: Protocol, addr: Ipv4Addr, port: u16) -> bool {
    let in_use = |e: &std::io::Error| e.kind() == std::io::ErrorKind::AddrInUse;
    match protocol {
        Protocol::Udp => UdpSocket::bind((addr, port)).is_err_and(|e| in_use(&e)),
        Protocol::Tcp => TcpListener::bind((addr, port)).is_err_and(|e| in_use(&e)),
        Protocol::All => false,
    }
}

/// Every explicit mapping and what is needed to manage them: the external address
/// pool, the data path's defaults, the `PCP_FILTERS` trie, and the nonces PEER
/// requests were made with.
pub struct ExplicitMappings<F> {
    records: BTreeMap<MappingKey, Record>,
    /// Changes whenever a record is added, removed or changed: lets an engine keep
    /// a view of the records until they change ([`MappingTable::generation`]).
    generation: u64,
    /// PEER nonce per implicit mapping, with the `created_ns` of the mapping it was
    /// given for (a new mapping of the same endpoint takes any nonce).
    peer_nonces: HashMap<(Protocol, SocketAddrV4), (Nonce, u64)>,
    /// When stale PEER nonces are next looked for.
    next_prune: Option<Instant>,
    pool: Vec<Ipv4Addr>,
    /// Which hosts may hold explicit mappings.
    hosts: AddressPlan,
    defaults: Defaults,
    filters: F,
    socket_probe: fn(Protocol, Ipv4Addr, u16) -> bool,
    hasher: RandomState,
}

/// A map operation failed: logged, reported to the client as NETWORK_FAILURE (the
/// gateway cannot do its job) or NO_RESOURCES (a table is full).
fn map_failure(what: &str, e: &MapsError) -> TableError {
    thread_local! {
        // Requests can trigger these at their rate: a line per request would flood.
        static BUDGET: std::cell::RefCell<LogBudget> =
            const { std::cell::RefCell::new(LogBudget::new(10, Duration::from_secs(60))) };
    }
    let full = is_full(e);
    if let Some(suppressed) = BUDGET.with(|b| b.borrow_mut().admit(Instant::now())) {
        let event = if full { "table_full" } else { "map_failed" };
        warn!(
            "explicit.{event} op={what} error=\"{e}\"{}",
            suppressed_note(suppressed)
        );
    }
    if full {
        TableError::NoResources
    } else {
        TableError::NetworkFailure
    }
}

/// The IP protocol number of a single-protocol mapping.
const fn ip_proto(protocol: Protocol) -> Option<u8> {
    match protocol {
        Protocol::Udp => Some(IPPROTO_UDP),
        Protocol::Tcp => Some(IPPROTO_TCP),
        Protocol::All => None,
    }
}

fn fwd_key(proto: u8, internal: SocketAddrV4) -> FwdKey {
    FwdKey::new(
        addr_be(internal.ip().octets()),
        internal.port().to_be(),
        proto,
    )
}

fn rev_key(proto: u8, external: SocketAddrV4) -> RevKey {
    RevKey::new(
        addr_be(external.ip().octets()),
        external.port().to_be(),
        proto,
    )
}

fn external_of(m: &Mapping) -> SocketAddrV4 {
    SocketAddrV4::new(ipv4(m.ext_addr_be), port(m.ext_port_be))
}

fn secs_ns(secs: u32) -> u64 {
    u64::from(secs) * NS_PER_SEC
}

impl<F: PcpFilterTable> ExplicitMappings<F> {
    /// No explicit mappings yet. `pool` is the external address pool (the first is
    /// the main address; empty: none, so requests fail with NETWORK_FAILURE);
    /// `hosts` says which internal hosts may hold mappings.
    pub fn new(pool: Vec<Ipv4Addr>, hosts: AddressPlan, defaults: Defaults, filters: F) -> Self {
        Self {
            records: BTreeMap::new(),
            generation: 0,
            peer_nonces: HashMap::new(),
            next_prune: None,
            pool,
            hosts,
            defaults,
            filters,
            socket_probe: gateway_socket_holds,
            hasher: RandomState::new(),
        }
    }

    /// Replaces how ports held by the gateway's own sockets are recognised (tests).
    #[cfg(test)]
    fn with_socket_probe(mut self, probe: fn(Protocol, Ipv4Addr, u16) -> bool) -> Self {
        self.socket_probe = probe;
        self
    }

    /// The external address pool.
    #[must_use]
    pub fn pool(&self) -> &[Ipv4Addr] {
        &self.pool
    }

    /// Which hosts may hold mappings from now on (the gateway's addresses changed or
    /// a LAN interface went away). Existing mappings stay.
    pub fn set_hosts(&mut self, hosts: AddressPlan) {
        self.hosts = hosts;
    }

    /// The engine's view of the mappings at `now`, over the NAT tables `nat`.
    pub fn table<'a, N: NatTables + NatWrites>(
        &'a mut self,
        nat: &'a mut N,
        now: Instant,
        now_ns: u64,
    ) -> Table<'a, F, N> {
        Table {
            explicit: self,
            nat,
            now,
            now_ns,
        }
    }

    /// The external address of internal host `host`: the same one traffic from it
    /// gets (paired pooling, RFC 4787 REQ-2).
    fn address_for(&self, host: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.defaults.blocks.is_on() {
            return self.block_of(host).and_then(|(a, _)| a);
        }
        let count = u8::try_from(self.pool.len()).unwrap_or(u8::MAX);
        let index = pool_index(addr_be(host.octets()), count) as usize;
        self.pool.get(index).or(self.pool.first()).copied()
    }

    /// [`Self::address_for`] as a request's answer: a host without a block here is not
    /// authorised (block mode); no address at all is a network failure.
    fn address_or_refusal(&self, host: Ipv4Addr) -> Result<Ipv4Addr, TableError> {
        self.address_for(host)
            .ok_or(if self.defaults.blocks.is_on() {
                TableError::NotAuthorized
            } else {
                TableError::NetworkFailure
            })
    }

    /// In block mode, the external address (if the pool has it) and the port span of
    /// `host`'s block, when this gateway owns it; `None` outside block mode or
    /// without a block here.
    fn block_of(&self, host: Ipv4Addr) -> Option<(Option<Ipv4Addr>, PortSpan)> {
        let plan = &self.defaults.blocks;
        if !plan.is_on() {
            return None;
        }
        let b = plan
            .owned_block_of(u32::from(host), self.defaults.port_range.min)
            .ok()?;
        let addr = self.pool.get(usize::try_from(b.addr_index).ok()?).copied();
        Some((addr, PortSpan::new(b.first, b.last)?))
    }

    /// New defaults (a reloaded configuration): timeouts and filtering that
    /// explicit mappings fall back to when they end.
    pub fn set_defaults(&mut self, defaults: Defaults) {
        self.defaults = defaults;
    }

    /// The static forwards installed: protocol, internal endpoint, external port.
    #[must_use]
    pub fn statics(&self) -> Vec<(Protocol, SocketAddrV4, u16)> {
        self.records
            .values()
            .filter(|r| r.holder == Holder::Static)
            .map(|r| (r.key.protocol, r.key.internal_endpoint(), r.external.port()))
            .collect()
    }

    /// Removes the static forward of `internal` (a reloaded configuration no longer
    /// has it), as any explicit mapping ends.
    pub fn remove_static<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        protocol: Protocol,
        internal: SocketAddrV4,
        now_ns: u64,
    ) -> Option<Ended> {
        let key = MappingKey {
            internal: *internal.ip(),
            protocol,
            internal_port: internal.port(),
        };
        if self.records.get(&key)?.holder != Holder::Static {
            return None;
        }
        self.end(nat, &key, now_ns, MappingEventKind::Delete)
    }

    /// Installs a static forward: `internal` reachable at `external_port` of its
    /// external address, for anyone, for as long as natgw runs. Fails when that
    /// port is not free. The same forward replicated from the peer becomes this
    /// configuration's; a different one of the peer's for `internal` gives way.
    pub fn add_static<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        protocol: Protocol,
        external_port: u16,
        internal: SocketAddrV4,
        now_ns: u64,
    ) -> Result<SocketAddrV4, TableError> {
        let key = MappingKey {
            internal: *internal.ip(),
            protocol,
            internal_port: internal.port(),
        };
        if let Some(r) = self.records.get_mut(&key) {
            if r.holder != Holder::PeerStatic {
                return Err(TableError::NotAuthorized);
            }
            if r.external.port() == external_port {
                r.holder = Holder::Static;
                self.generation = self.generation.wrapping_add(1);
                return Ok(r.external);
            }
            self.end(nat, &key, now_ns, MappingEventKind::Delete);
        }
        self.add_forward(nat, Holder::Static, key, external_port, now_ns)
    }

    /// Creates the entries and the record of a static forward held by `holder`.
    pub(super) fn add_forward<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        holder: Holder,
        key: MappingKey,
        external_port: u16,
        now_ns: u64,
    ) -> Result<SocketAddrV4, TableError> {
        let span = PortSpan::new(external_port, external_port).ok_or(TableError::NoResources)?;
        let request = NewMapping {
            key,
            holder,
            ports: vec![span],
            suggested_address: None,
            suggested_port: Some(external_port),
            prefer_failure: true,
            filters: Vec::new(),
        };
        let (external, created_ns) = self.create(nat, &request, now_ns)?;
        self.generation = self.generation.wrapping_add(1);
        self.records.insert(
            key,
            Record {
                key,
                holder,
                nonce: [0; 12],
                external,
                expires: None,
                expires_ns: None,
                filters: Vec::new(),
                reply_to: None,
                ports: request.ports,
                created_ns,
                description: String::new(),
            },
        );
        Ok(external)
    }

    /// Ends the explicit mappings whose lifetime is over at `now`.
    pub fn expire<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        now: Instant,
        now_ns: u64,
    ) -> Vec<Ended> {
        let due: Vec<MappingKey> = self
            .records
            .values()
            .filter(|r| r.expires.is_some_and(|e| e <= now))
            .map(|r| r.key)
            .collect();
        let ended = due
            .iter()
            .filter_map(|k| self.end(nat, k, now_ns, MappingEventKind::Expire))
            .collect();
        if self.next_prune.is_none_or(|t| t <= now) {
            self.forget_stale_peer_nonces(nat);
            self.next_prune = Some(now + PEER_NONCE_PRUNE_INTERVAL);
        }
        ended
    }

    /// Drops PEER nonces of mappings that no longer exist.
    fn forget_stale_peer_nonces<N: NatTables>(&mut self, nat: &N) {
        self.peer_nonces.retain(|(protocol, internal), (_, created)| {
            let Some(proto) = ip_proto(*protocol) else {
                return false;
            };
            matches!(nat.fwd(&fwd_key(proto, *internal)), Ok(Some(m)) if m.created_ns == *created)
        });
    }

    /// Ends one explicit mapping (RFC 6887 §15): kept as an implicit mapping if its
    /// internal endpoint sent traffic within the idle timeout, else deleted.
    ///
    /// A deletion is reported to `natgw monitor` as `kind`.
    fn end<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        key: &MappingKey,
        now_ns: u64,
        kind: MappingEventKind,
    ) -> Option<Ended> {
        let record = self.records.remove(key)?;
        self.generation = self.generation.wrapping_add(1);
        let proto = record.proto();
        let fk = record.fwd_key();
        let outcome = match self.release(nat, &record, &fk, now_ns) {
            Ok(o) => o,
            Err(e) => {
                warn!(
                    "explicit.end_failed proto={} int={} ext={} error=\"{e}\"",
                    record.key.protocol,
                    record.key.internal_endpoint(),
                    record.external
                );
                Outcome::Gone
            }
        };
        self.remove_filters(proto, record.external, &record.filters);
        if matches!(outcome, Outcome::Removed) {
            events::emit_mapping(kind, &fk, &record.mapping_view(), now_ns);
        }
        Some(Ended {
            key: *key,
            holder: record.holder,
            external: record.external,
            outcome,
        })
    }

    fn release<N: NatTables + NatWrites>(
        &self,
        nat: &mut N,
        record: &Record,
        fk: &FwdKey,
        now_ns: u64,
    ) -> Result<Outcome, MapsError> {
        let Some(mut m) = nat.fwd(fk)?.filter(|m| m.created_ns == record.created_ns) else {
            return Ok(Outcome::Gone);
        };
        let rk = rev_key_of(fk, &m);
        let rev = nat.rev(&rk)?.filter(|r| r.created_ns == m.created_ns);
        let observed = Observed::new(fk, &m, rev.as_ref());
        let timeout = gc::timeout_ns(&self.defaults.policy, &observed);
        let in_use = m.last_out_ns != 0 && now_ns.saturating_sub(m.last_out_ns) < timeout;
        if in_use {
            // The configured filter first, so the PCP filter entries can go next.
            if let Some(mut r) = rev {
                r.filter = self.defaults.filter_for(fk.proto) as u8;
                nat.replace_rev(&rk, &r)?;
            }
            m.origin = natgw_common::Origin::Traffic as u8;
            nat.replace_fwd(fk, &m)?;
            return Ok(Outcome::Implicit);
        }
        nat.remove_fwd(fk)?;
        if rev.is_some() {
            nat.free_port(&rk, fk.addr_be, now_ns)?;
        }
        Ok(Outcome::Removed)
    }

    /// `natgw flush`: deletes the explicit mappings `filter` selects at once, in use
    /// or not (unlike their end of life, none stays as an implicit mapping); static
    /// forwards only with `include_static` (a reload installs them again). Each is
    /// reported to `natgw monitor` as deleted. Returns how many were deleted.
    pub fn flush<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        filter: &MappingFilter,
        include_static: bool,
        now_ns: u64,
    ) -> usize {
        let due: Vec<MappingKey> = self
            .records
            .values()
            .filter(|r| include_static || !r.holder.is_static())
            .filter(|r| filter.matches(&r.fwd_key(), &r.mapping_view()))
            .map(|r| r.key)
            .collect();
        let mut deleted = 0;
        for key in &due {
            let Some(record) = self.records.remove(key) else {
                continue;
            };
            self.generation = self.generation.wrapping_add(1);
            let fk = record.fwd_key();
            match delete_entries(nat, &fk, Some(record.created_ns), now_ns) {
                Ok(true) => {
                    deleted += 1;
                    events::emit_mapping(
                        MappingEventKind::Delete,
                        &fk,
                        &record.mapping_view(),
                        now_ns,
                    );
                }
                Ok(false) => {}
                Err(e) => warn!(
                    "explicit.flush_failed proto={} int={} ext={} error=\"{e}\"",
                    record.key.protocol,
                    record.key.internal_endpoint(),
                    record.external
                ),
            }
            self.remove_filters(record.proto(), record.external, &record.filters);
        }
        deleted
    }

    /// Changes whenever a record is added, removed or changed (what
    /// [`MappingTable::generation`] reports).
    #[must_use]
    pub const fn generation(&self) -> u64 {
        self.generation
    }

    /// What `natgw mappings` shows about each explicit mapping.
    #[must_use]
    pub fn entries(&self) -> Vec<ExplicitEntry> {
        self.records
            .values()
            .map(|r| ExplicitEntry {
                protocol: r.key.protocol.name().to_owned(),
                internal: r.key.internal_endpoint(),
                external: r.external,
                origin: r.holder.name().to_owned(),
                client: r.reply_to,
                expires_ns: r.expires_ns,
                filters: r
                    .filters
                    .iter()
                    .map(|f| format!("{}:{}", f.remote, f.port))
                    .collect(),
                nonce: Some(r.nonce),
                created_ns: r.created_ns,
                ports: r.ports.iter().map(|p| [p.first(), p.last()]).collect(),
                description: r.description.clone(),
            })
            .collect()
    }

    /// Takes back the PCP, NAT-PMP and UPnP mappings a previous natgw recorded
    /// (`entries`, its explicit mappings file) whose mapping the adopted maps still
    /// hold unchanged (same external endpoint, same `created_ns`): their holders keep
    /// them, with the same nonce and the rest of their lifetime (one that ran out
    /// while no natgw ran ends at the next [`Self::expire`]). The peer's static
    /// forwards come back as such (a reload or a resync settles them); this
    /// gateway's own come back from the configuration instead. Returns how many
    /// came back.
    pub fn restore(
        &mut self,
        nat: &impl NatTables,
        entries: &[ExplicitEntry],
        now: Instant,
        now_ns: u64,
    ) -> usize {
        let mut restored = 0;
        for e in entries {
            let holder = match e.origin.as_str() {
                "pcp" => Holder::Pcp,
                "nat-pmp" => Holder::NatPmp,
                "upnp" => Holder::Upnp,
                "peer-static" => Holder::PeerStatic,
                _ => continue,
            };
            let protocol = match e.protocol.as_str() {
                "udp" => Protocol::Udp,
                "tcp" => Protocol::Tcp,
                _ => continue,
            };
            let Some(nonce) = e.nonce else { continue };
            let key = MappingKey {
                internal: *e.internal.ip(),
                protocol,
                internal_port: e.internal.port(),
            };
            let record = Record {
                key,
                holder,
                nonce,
                external: e.external,
                expires: None,
                expires_ns: e.expires_ns,
                filters: e.filters.iter().filter_map(|f| parse_filter(f)).collect(),
                reply_to: e.client,
                ports: e
                    .ports
                    .iter()
                    .filter_map(|[first, last]| PortSpan::new(*first, *last))
                    .collect(),
                created_ns: e.created_ns,
                description: e.description.clone(),
            };
            let held = nat
                .fwd(&record.fwd_key())
                .ok()
                .flatten()
                .is_some_and(|m| m.created_ns == e.created_ns && external_of(&m) == e.external);
            if !held {
                continue;
            }
            let expires = e
                .expires_ns
                .map(|t| now + Duration::from_nanos(t.saturating_sub(now_ns)));
            self.generation = self.generation.wrapping_add(1);
            self.records.insert(key, Record { expires, ..record });
            restored += 1;
        }
        restored
    }

    /// Ends the explicit mappings the maps hold that no record here accounts for:
    /// a previous natgw's whose record did not come back ([`Self::restore`]) and
    /// that no `[[forward]]` of the configuration took over, such as a forward
    /// removed from the configuration while natgw was down, or a PCP mapping whose
    /// record was lost with the explicit mappings file. The data path would keep
    /// them for ever (the garbage collector leaves explicit mappings alone), an
    /// inbound port nobody configured or holds. They end as any explicit mapping
    /// ends (RFC 6887 §15): kept as implicit mappings if their internal endpoint
    /// sent traffic within the idle timeout, else deleted. Call once at start,
    /// after [`Self::restore`] and the configuration's forwards.
    ///
    /// # Errors
    /// When `NAT_FWD` cannot be read.
    pub fn end_unrecorded<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        now_ns: u64,
    ) -> Result<Vec<Ended>, MapsError> {
        let recorded: std::collections::HashSet<FwdKey> =
            self.records.values().map(Record::fwd_key).collect();
        let mut ended = Vec::new();
        for (fk, m) in nat.fwd_entries()? {
            let holder = match natgw_common::Origin::from_u8(m.origin) {
                Some(natgw_common::Origin::Pcp) => Holder::Pcp,
                Some(natgw_common::Origin::NatPmp) => Holder::NatPmp,
                Some(natgw_common::Origin::Upnp) => Holder::Upnp,
                Some(natgw_common::Origin::Static) => Holder::Static,
                _ => continue,
            };
            let protocol = match fk.proto {
                IPPROTO_UDP => Protocol::Udp,
                IPPROTO_TCP => Protocol::Tcp,
                _ => continue,
            };
            if recorded.contains(&fk) {
                continue;
            }
            let key = MappingKey {
                internal: ipv4(fk.addr_be),
                protocol,
                internal_port: port(fk.port_be),
            };
            // What the record would have said that matters for ending it: the
            // entries' identity. Its PCP filters, if it had any, are not known.
            self.records.insert(
                key,
                Record {
                    key,
                    holder,
                    nonce: [0; 12],
                    external: external_of(&m),
                    expires: None,
                    expires_ns: None,
                    filters: Vec::new(),
                    reply_to: None,
                    ports: Vec::new(),
                    created_ns: m.created_ns,
                    description: String::new(),
                },
            );
            ended.extend(self.end(nat, &key, now_ns, MappingEventKind::Delete));
        }
        Ok(ended)
    }
}

/// A filter as [`ExplicitEntry::filters`] writes it, `PREFIX:PORT`.
/// Deletes the mapping of `fk` whose forward entry was created at `created_ns`
/// (`None`: whichever it is) and frees its port; `false` when it was gone.
pub(crate) fn delete_entries<N: NatTables>(
    nat: &mut N,
    fk: &FwdKey,
    created_ns: Option<u64>,
    now_ns: u64,
) -> Result<bool, MapsError> {
    let Some(m) = nat
        .fwd(fk)?
        .filter(|m| created_ns.is_none_or(|c| c == m.created_ns))
    else {
        return Ok(false);
    };
    if !nat.remove_fwd(fk)? {
        return Ok(false);
    }
    let rk = rev_key_of(fk, &m);
    if nat.rev(&rk)?.is_some_and(|r| r.created_ns == m.created_ns) {
        nat.free_port(&rk, fk.addr_be, now_ns)?;
    }
    Ok(true)
}

fn parse_filter(text: &str) -> Option<Filter> {
    let (prefix, port) = text.rsplit_once(':')?;
    Some(Filter {
        remote: prefix.parse().ok()?,
        port: port.parse().ok()?,
    })
}

/// A mapping to create (from [`Install`], a static forward or a move).
struct NewMapping {
    key: MappingKey,
    holder: Holder,
    ports: Vec<PortSpan>,
    suggested_address: Option<Ipv4Addr>,
    suggested_port: Option<u16>,
    prefer_failure: bool,
    filters: Vec<Filter>,
}
