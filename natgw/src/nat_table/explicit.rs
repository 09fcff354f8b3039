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

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use log::{info, warn};
use natgw_common::config::pool_index;
use natgw_common::maps::{FilterMode, PcpFilterKey, Session, SessionKey, PCP_FILTER_FIXED_BITS};
use natgw_common::{
    addr_be, FwdKey, Mapping, RevKey, RevValue, IPPROTO_TCP, IPPROTO_UDP, NS_PER_SEC,
};
use serde::{Deserialize, Serialize};

use crate::config::PortRange;
use crate::datapath::addresses::{AddressPlan, Host};
use crate::datapath::maps::{
    ipv4, is_full, port, rev_key_of, MapsError, NatTables, NatWrites, PcpFilterTable,
};
use crate::nat_table::gc::{self, Observed, Policy};
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
    /// `pcp`, `nat-pmp` or `static`.
    pub origin: String,
    /// The client that holds it (its nonce): where its last request came from;
    /// `None` for static forwards.
    pub client: Option<SocketAddrV4>,
    /// When its lifetime ends, on `CLOCK_MONOTONIC` (ns); `None`: never.
    pub expires_ns: Option<u64>,
    /// Remote peers its PCP FILTER options let in, `PREFIX:PORT` (port 0: any);
    /// empty: everyone.
    pub filters: Vec<String>,
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
}

impl Holder {
    const fn from_engine(origin: Origin) -> Self {
        match origin {
            Origin::Pcp => Self::Pcp,
            Origin::NatPmp => Self::NatPmp,
        }
    }

    const fn engine(self) -> Option<Origin> {
        match self {
            Self::Pcp => Some(Origin::Pcp),
            Self::NatPmp => Some(Origin::NatPmp),
            Self::Static => None,
        }
    }

    /// `pcp`, `nat-pmp` or `static`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        self.origin().name()
    }

    /// The `origin` the forward entry carries.
    #[must_use]
    pub const fn origin(self) -> natgw_common::Origin {
        match self {
            Self::Pcp => natgw_common::Origin::Pcp,
            Self::NatPmp => natgw_common::Origin::NatPmp,
            Self::Static => natgw_common::Origin::Static,
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
        })
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

/// The `PCP_FILTERS` key and prefix length of a filter of mapping `external`.
fn filter_key(proto: u8, external: SocketAddrV4, f: &Filter) -> (PcpFilterKey, u32) {
    (
        PcpFilterKey::new(
            addr_be(external.ip().octets()),
            external.port().to_be(),
            proto,
            addr_be(f.remote.network().octets()),
        ),
        PCP_FILTER_FIXED_BITS + u32::from(f.remote.len()),
    )
}

/// The trie holds one port per prefix, so two filters of one prefix with different
/// ports cannot both be honoured.
fn check_filters(filters: &[Filter]) -> Result<(), TableError> {
    for (i, f) in filters.iter().enumerate() {
        if filters[..i]
            .iter()
            .any(|g| g.remote == f.remote && g.port != f.port)
        {
            return Err(TableError::ExcessiveRemotePeers);
        }
    }
    Ok(())
}

const fn filter_mode(filters: &[Filter]) -> FilterMode {
    if filters.is_empty() {
        FilterMode::EndpointIndependent
    } else {
        FilterMode::PcpFilter
    }
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
        let count = u8::try_from(self.pool.len()).unwrap_or(u8::MAX);
        let index = pool_index(addr_be(host.octets()), count) as usize;
        self.pool.get(index).or(self.pool.first()).copied()
    }

    /// Installs a static forward: `internal` reachable at `external_port` of its
    /// external address, for anyone, for as long as natgw runs. Fails when that
    /// port is not free.
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
        if self.records.contains_key(&key) {
            return Err(TableError::NotAuthorized);
        }
        let span = PortSpan::new(external_port, external_port).ok_or(TableError::NoResources)?;
        let request = NewMapping {
            key,
            holder: Holder::Static,
            ports: vec![span],
            suggested_address: None,
            suggested_port: Some(external_port),
            prefer_failure: true,
            filters: Vec::new(),
        };
        let (external, created_ns) = self.create(nat, &request, now_ns)?;
        self.records.insert(
            key,
            Record {
                key,
                holder: Holder::Static,
                nonce: [0; 12],
                external,
                expires: None,
                expires_ns: None,
                filters: Vec::new(),
                reply_to: None,
                ports: request.ports,
                created_ns,
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
            .filter_map(|k| self.end(nat, k, now_ns))
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
    fn end<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        key: &MappingKey,
        now_ns: u64,
    ) -> Option<Ended> {
        let record = self.records.remove(key)?;
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
            nat.remove_rev(&rk)?;
        }
        Ok(Outcome::Removed)
    }

    /// Adds `PCP_FILTERS` entries; on failure removes those it added.
    fn add_filters(
        &mut self,
        proto: u8,
        external: SocketAddrV4,
        filters: &[Filter],
    ) -> Result<(), TableError> {
        for (i, f) in filters.iter().enumerate() {
            let (key, len) = filter_key(proto, external, f);
            let port_be = u32::from(f.port.to_be());
            if let Err(e) = self.filters.put_pcp_filter(&key, len, port_be) {
                warn!(
                    "explicit.filter_failed ext={external} filter={}:{} error=\"{e}\"",
                    f.remote, f.port
                );
                let added = filters[..i].to_vec();
                self.remove_filters(proto, external, &added);
                return Err(TableError::ExcessiveRemotePeers);
            }
        }
        Ok(())
    }

    fn remove_filters(&mut self, proto: u8, external: SocketAddrV4, filters: &[Filter]) {
        for f in filters {
            let (key, len) = filter_key(proto, external, f);
            if let Err(e) = self.filters.remove_pcp_filter(&key, len) {
                warn!(
                    "explicit.filter_remove_failed ext={external} filter={}:{} error=\"{e}\"",
                    f.remote, f.port
                );
            }
        }
    }

    /// Sets the reverse entry's filter mode (a mapping whose entry vanished is left
    /// alone; the caller notices elsewhere).
    fn set_filter_mode<N: NatTables + NatWrites>(
        nat: &mut N,
        proto: u8,
        external: SocketAddrV4,
        created_ns: u64,
        mode: FilterMode,
    ) -> Result<(), TableError> {
        let rk = rev_key(proto, external);
        let rev = nat.rev(&rk).map_err(|e| map_failure("read NAT_REV", &e))?;
        if let Some(mut r) = rev.filter(|r| r.created_ns == created_ns) {
            if r.filter != mode as u8 {
                r.filter = mode as u8;
                nat.replace_rev(&rk, &r)
                    .map_err(|e| map_failure("update NAT_REV", &e))?;
            }
        }
        Ok(())
    }

    /// Replaces a mapping's filters: the new entries first, then the mode, then the
    /// stale entries, so the mapping is never open to peers neither list allows.
    fn change_filters<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        record: &Record,
        new: &[Filter],
    ) -> Result<(), TableError> {
        if record.filters == new {
            return Ok(());
        }
        let proto = record.proto();
        self.add_filters(proto, record.external, new)?;
        Self::set_filter_mode(
            nat,
            proto,
            record.external,
            record.created_ns,
            filter_mode(new),
        )?;
        let stale: Vec<Filter> = record
            .filters
            .iter()
            .filter(|f| !new.iter().any(|n| n.remote == f.remote))
            .copied()
            .collect();
        self.remove_filters(proto, record.external, &stale);
        Ok(())
    }

    /// A pseudo-random start for port searches, so mappings do not pile up at the
    /// bottom of the range.
    fn random(&self, salt: u64) -> u64 {
        self.hasher.hash_one(salt)
    }

    /// Claims a free external port for `request` on `address` in `NAT_REV`: the
    /// suggestion, else the internal port, else the first free one from a random
    /// place in the permitted spans. A candidate no socket of the gateway holds is
    /// claimed directly: a taken one fails the `BPF_NOEXIST` insert, which is cheaper
    /// than reading the whole table.
    fn claim_port<N: NatTables + NatWrites>(
        &self,
        nat: &mut N,
        request: &NewMapping,
        address: Ipv4Addr,
        rev_value: &RevValue,
        now_ns: u64,
    ) -> Result<u16, TableError> {
        let proto = ip_proto(request.key.protocol).ok_or(TableError::NotAuthorized)?;
        let spans = &request.ports;
        let permitted = |p: u16| p != 0 && spans.iter().any(|s| s.contains(p));
        let total: u64 = spans
            .iter()
            .map(|s| u64::from(s.last() - s.first()) + 1)
            .sum();
        let nth = |mut i: u64| {
            for s in spans {
                let len = u64::from(s.last() - s.first()) + 1;
                if i < len {
                    return u16::try_from(u64::from(s.first()) + i).ok();
                }
                i -= len;
            }
            None
        };
        let start = if total == 0 {
            0
        } else {
            self.random(now_ns) % total
        };
        let scan = (0..total).filter_map(|i| nth((start + i) % total));
        let suggested = request.suggested_port.filter(|p| permitted(*p));
        let candidates: Box<dyn Iterator<Item = u16>> = if request.prefer_failure {
            Box::new(suggested.into_iter())
        } else {
            let internal = Some(request.key.internal_port).filter(|p| permitted(*p));
            Box::new(suggested.into_iter().chain(internal).chain(scan))
        };
        for p in candidates {
            if (self.socket_probe)(request.key.protocol, address, p) {
                continue;
            }
            let rk = rev_key(proto, SocketAddrV4::new(address, p));
            if nat
                .claim_rev(&rk, rev_value)
                .map_err(|e| map_failure("claim NAT_REV", &e))?
            {
                return Ok(p);
            }
        }
        Err(if request.prefer_failure {
            TableError::CannotProvideExternal
        } else {
            TableError::NoResources
        })
    }

    /// Creates the entries of a new explicit mapping, or takes over the implicit
    /// mapping of the same internal endpoint (endpoint-independent mapping: the same
    /// external port whoever created it). Returns the external endpoint and the
    /// forward entry's `created_ns`.
    fn create<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        request: &NewMapping,
        now_ns: u64,
    ) -> Result<(SocketAddrV4, u64), TableError> {
        let proto = ip_proto(request.key.protocol).ok_or(TableError::NotAuthorized)?;
        let address = self
            .address_for(request.key.internal)
            .ok_or(TableError::NetworkFailure)?;
        if request.prefer_failure && request.suggested_address.is_some_and(|a| a != address) {
            return Err(TableError::CannotProvideExternal);
        }
        check_filters(&request.filters)?;
        let fk = fwd_key(proto, request.key.internal_endpoint());
        let mode = filter_mode(&request.filters);
        // A packet may create the forward entry between our reads and writes; then
        // the loop comes round and takes that mapping over.
        for _ in 0..3 {
            if let Some(m) = nat.fwd(&fk).map_err(|e| map_failure("read NAT_FWD", &e))? {
                if let Some(done) = self.adopt(nat, request, &fk, m)? {
                    return Ok(done);
                }
                continue;
            }
            let rev_value = RevValue {
                int_addr_be: fk.addr_be,
                int_port_be: fk.port_be,
                filter: mode as u8,
                created_ns: now_ns,
                ..RevValue::default()
            };
            let p = self.claim_port(nat, request, address, &rev_value, now_ns)?;
            let external = SocketAddrV4::new(address, p);
            let rk = rev_key(proto, external);
            let m = Mapping {
                ext_addr_be: rk.addr_be,
                ext_port_be: rk.port_be,
                origin: request.holder.origin() as u8,
                created_ns: now_ns,
                ..Mapping::default()
            };
            match nat.insert_fwd(&fk, &m) {
                Ok(true) => {}
                Ok(false) => {
                    let _ = nat.remove_rev(&rk);
                    continue;
                }
                Err(e) => {
                    let _ = nat.remove_rev(&rk);
                    return Err(map_failure("insert NAT_FWD", &e));
                }
            }
            if let Err(e) = self.add_filters(proto, external, &request.filters) {
                let _ = nat.remove_fwd(&fk);
                let _ = nat.remove_rev(&rk);
                return Err(e);
            }
            return Ok((external, now_ns));
        }
        Err(TableError::NoResources)
    }

    /// Takes over the existing mapping `m` of the requested internal endpoint;
    /// `None` when it vanished meanwhile.
    fn adopt<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        request: &NewMapping,
        fk: &FwdKey,
        mut m: Mapping,
    ) -> Result<Option<(SocketAddrV4, u64)>, TableError> {
        let external = external_of(&m);
        if request.prefer_failure && request.suggested_port.is_some_and(|p| p != external.port()) {
            return Err(TableError::CannotProvideExternal);
        }
        if !request.ports.iter().any(|s| s.contains(external.port())) {
            // The port traffic already uses is one policy does not permit.
            return Err(TableError::NotAuthorized);
        }
        let rk = rev_key_of(fk, &m);
        let rev = nat
            .rev(&rk)
            .map_err(|e| map_failure("read NAT_REV", &e))?
            .filter(|r| r.created_ns == m.created_ns);
        let Some(mut rev) = rev else {
            // A forward entry whose claim is not (yet) there: let the data path finish.
            return Ok(None);
        };
        self.add_filters(fk.proto, external, &request.filters)?;
        m.origin = request.holder.origin() as u8;
        if !nat
            .replace_fwd(fk, &m)
            .map_err(|e| map_failure("update NAT_FWD", &e))?
        {
            self.remove_filters(fk.proto, external, &request.filters);
            return Ok(None);
        }
        rev.filter = filter_mode(&request.filters) as u8;
        nat.replace_rev(&rk, &rev)
            .map_err(|e| map_failure("update NAT_REV", &e))?;
        Ok(Some((external, m.created_ns)))
    }

    /// Whether `record`'s forward entry is still the one it created.
    fn still_installed<N: NatTables>(nat: &N, record: &Record) -> Result<bool, TableError> {
        Ok(nat
            .fwd(&record.fwd_key())
            .map_err(|e| map_failure("read NAT_FWD", &e))?
            .is_some_and(|m| m.created_ns == record.created_ns))
    }

    /// Moves every explicit mapping whose external address changes with the new
    /// pool to its new address, keeping its port where free. The caller then points
    /// the data path at the new pool and removes the traffic mappings of addresses
    /// no longer in it.
    pub fn set_pool<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        pool: Vec<Ipv4Addr>,
        now_ns: u64,
    ) -> Vec<Moved> {
        self.pool = pool;
        let keys: Vec<MappingKey> = self.records.keys().copied().collect();
        let mut moved = Vec::new();
        for key in keys {
            let Some(record) = self.records.get(&key).cloned() else {
                continue;
            };
            let Some(address) = self.address_for(key.internal) else {
                continue; // no address at all: leave it until one comes back
            };
            if *record.external.ip() == address {
                continue;
            }
            let to = match self.move_to(nat, &record, address, now_ns) {
                Ok(external) => {
                    if let Some(r) = self.records.get_mut(&key) {
                        r.external = external;
                    }
                    Some(external)
                }
                Err(e) => {
                    warn!(
                        "explicit.move_failed proto={} int={} ext={} new_address={address} error=\"{e}\": removed",
                        key.protocol,
                        key.internal_endpoint(),
                        record.external
                    );
                    self.end(nat, &key, now_ns);
                    None
                }
            };
            moved.push(Moved {
                key,
                from: record.external,
                to,
            });
        }
        moved
    }

    fn move_to<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        record: &Record,
        address: Ipv4Addr,
        now_ns: u64,
    ) -> Result<SocketAddrV4, TableError> {
        let proto = record.proto();
        let fk = record.fwd_key();
        let Some(mut m) = nat
            .fwd(&fk)
            .map_err(|e| map_failure("read NAT_FWD", &e))?
            .filter(|m| m.created_ns == record.created_ns)
        else {
            return Err(TableError::NetworkFailure);
        };
        let request = NewMapping {
            key: record.key,
            holder: record.holder,
            ports: record.ports.clone(),
            suggested_address: None,
            suggested_port: Some(record.external.port()),
            prefer_failure: record.holder == Holder::Static,
            filters: record.filters.clone(),
        };
        let rev_value = RevValue {
            int_addr_be: fk.addr_be,
            int_port_be: fk.port_be,
            filter: filter_mode(&record.filters) as u8,
            created_ns: record.created_ns,
            ..RevValue::default()
        };
        let p = self.claim_port(nat, &request, address, &rev_value, now_ns)?;
        let external = SocketAddrV4::new(address, p);
        let new_rk = rev_key(proto, external);
        if let Err(e) = self.add_filters(proto, external, &record.filters) {
            let _ = nat.remove_rev(&new_rk);
            return Err(e);
        }
        let old_rk = rev_key_of(&fk, &m);
        m.ext_addr_be = new_rk.addr_be;
        m.ext_port_be = new_rk.port_be;
        if !nat
            .replace_fwd(&fk, &m)
            .map_err(|e| map_failure("update NAT_FWD", &e))?
        {
            let _ = nat.remove_rev(&new_rk);
            self.remove_filters(proto, external, &record.filters);
            return Err(TableError::NetworkFailure);
        }
        if nat
            .rev(&old_rk)
            .ok()
            .flatten()
            .is_some_and(|r| r.created_ns == record.created_ns)
        {
            let _ = nat.remove_rev(&old_rk);
        }
        self.remove_filters(proto, record.external, &record.filters);
        Ok(external)
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
                origin: r.holder.origin().name().to_owned(),
                client: r.reply_to,
                expires_ns: r.expires_ns,
                filters: r
                    .filters
                    .iter()
                    .map(|f| format!("{}:{}", f.remote, f.port))
                    .collect(),
            })
            .collect()
    }

    /// Creates or renews the explicit mapping of an [`Install`] request.
    fn install<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        request: &Install,
        now_ns: u64,
    ) -> Result<SocketAddrV4, TableError> {
        let holder = Holder::from_engine(request.origin);
        let lifetime_ns = secs_ns(request.lifetime);
        let expires_ns = now_ns.saturating_add(lifetime_ns);
        if let Some(record) = self.records.get(&request.key).cloned() {
            if record.holder == Holder::Static {
                return Err(TableError::NotAuthorized);
            }
            if Self::still_installed(nat, &record)? {
                check_filters(&request.filters)?;
                self.change_filters(nat, &record, &request.filters)?;
                if record.holder != holder {
                    Self::set_origin(nat, &record, holder)?;
                }
                let r = self
                    .records
                    .get_mut(&request.key)
                    .ok_or(TableError::NetworkFailure)?;
                r.holder = holder;
                r.nonce = request.nonce;
                r.expires = Some(request.expires);
                r.expires_ns = Some(expires_ns);
                r.filters.clone_from(&request.filters);
                r.reply_to = Some(request.reply_to);
                return Ok(r.external);
            }
            // Its entries are gone (they should not be): start afresh.
            self.remove_filters(record.proto(), record.external, &record.filters);
            self.records.remove(&request.key);
        }
        let new = NewMapping {
            key: request.key,
            holder,
            ports: request.external_ports.clone(),
            suggested_address: request.suggested_address,
            suggested_port: request.suggested_port,
            prefer_failure: request.prefer_failure,
            filters: request.filters.clone(),
        };
        let (external, created_ns) = self.create(nat, &new, now_ns)?;
        self.records.insert(
            request.key,
            Record {
                key: request.key,
                holder,
                nonce: request.nonce,
                external,
                expires: Some(request.expires),
                expires_ns: Some(expires_ns),
                filters: request.filters.clone(),
                reply_to: Some(request.reply_to),
                ports: new.ports,
                created_ns,
            },
        );
        Ok(external)
    }

    fn set_origin<N: NatTables + NatWrites>(
        nat: &mut N,
        record: &Record,
        holder: Holder,
    ) -> Result<(), TableError> {
        let fk = record.fwd_key();
        if let Some(mut m) = nat
            .fwd(&fk)
            .map_err(|e| map_failure("read NAT_FWD", &e))?
            .filter(|m| m.created_ns == record.created_ns)
        {
            m.origin = holder.origin() as u8;
            nat.replace_fwd(&fk, &m)
                .map_err(|e| map_failure("update NAT_FWD", &e))?;
        }
        Ok(())
    }

    /// PEER (RFC 6887 §12): the implicit mapping of the internal endpoint, created
    /// as traffic would create it (or the explicit one, if it has one), refreshed as
    /// outbound traffic to the peer would refresh it.
    fn peer<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        request: &PeerRequest,
        now: Instant,
        now_ns: u64,
    ) -> Result<PeerGrant, TableError> {
        let proto = ip_proto(request.protocol).ok_or(TableError::NotAuthorized)?;
        let fk = fwd_key(proto, request.internal);
        let id = (request.protocol, request.internal);
        let key = MappingKey {
            internal: *request.internal.ip(),
            protocol: request.protocol,
            internal_port: request.internal.port(),
        };
        let mut m = match nat.fwd(&fk).map_err(|e| map_failure("read NAT_FWD", &e))? {
            Some(m) => m,
            None => {
                let address = self
                    .address_for(*request.internal.ip())
                    .ok_or(TableError::NetworkFailure)?;
                let new = NewMapping {
                    key,
                    holder: Holder::Pcp,
                    ports: vec![PortSpan::new(
                        self.defaults.port_range.min,
                        self.defaults.port_range.max,
                    )
                    .ok_or(TableError::NoResources)?],
                    suggested_address: None,
                    suggested_port: request.suggested_port,
                    prefer_failure: false,
                    filters: Vec::new(),
                };
                let rev_value = RevValue {
                    int_addr_be: fk.addr_be,
                    int_port_be: fk.port_be,
                    filter: self.defaults.filter_for(proto) as u8,
                    created_ns: now_ns,
                    ..RevValue::default()
                };
                let p = self.claim_port(nat, &new, address, &rev_value, now_ns)?;
                let rk = rev_key(proto, SocketAddrV4::new(address, p));
                let m = Mapping {
                    ext_addr_be: rk.addr_be,
                    ext_port_be: rk.port_be,
                    origin: natgw_common::Origin::Traffic as u8,
                    created_ns: now_ns,
                    last_out_ns: now_ns,
                    ..Mapping::default()
                };
                match nat.insert_fwd(&fk, &m) {
                    Ok(true) => m,
                    Ok(false) => {
                        let _ = nat.remove_rev(&rk);
                        nat.fwd(&fk)
                            .map_err(|e| map_failure("read NAT_FWD", &e))?
                            .ok_or(TableError::NoResources)?
                    }
                    Err(e) => {
                        let _ = nat.remove_rev(&rk);
                        return Err(map_failure("insert NAT_FWD", &e));
                    }
                }
            }
        };
        match self.peer_nonces.get(&id) {
            Some((nonce, created)) if *created == m.created_ns && *nonce != request.nonce => {
                return Err(TableError::NonceMismatch);
            }
            _ => {
                self.peer_nonces.insert(id, (request.nonce, m.created_ns));
            }
        }
        let external = external_of(&m);
        if let Some(record) = self.records.get(&key) {
            // An explicit mapping: it lives by its own lifetime.
            let remaining = record
                .expires
                .map_or(Duration::MAX, |e| e.saturating_duration_since(now));
            let lifetime = u32::try_from(remaining.as_secs()).unwrap_or(u32::MAX);
            return Ok(PeerGrant {
                external,
                lifetime: if request.lifetime == 0 {
                    lifetime
                } else {
                    lifetime.min(request.lifetime)
                },
            });
        }
        // Refresh it as an outbound packet to the peer would.
        let rk = rev_key_of(&fk, &m);
        let rev = nat
            .rev(&rk)
            .map_err(|e| map_failure("read NAT_REV", &e))?
            .filter(|r| r.created_ns == m.created_ns);
        let timeout = gc::timeout_ns(&self.defaults.policy, &Observed::new(&fk, &m, rev.as_ref()));
        let remaining_ns = if request.lifetime == 0 {
            timeout.saturating_sub(now_ns.saturating_sub(m.last_out_ns.max(m.created_ns)))
        } else {
            m.last_out_ns = now_ns;
            nat.replace_fwd(&fk, &m)
                .map_err(|e| map_failure("update NAT_FWD", &e))?;
            self.open_session(nat, proto, external, request.remote, now_ns)?;
            timeout
        };
        let lifetime = u32::try_from(remaining_ns / NS_PER_SEC).unwrap_or(u32::MAX);
        Ok(PeerGrant {
            external,
            lifetime: if request.lifetime == 0 {
                lifetime
            } else {
                lifetime.min(request.lifetime)
            },
        })
    }

    /// Opens or refreshes the session towards the peer where the data path keeps
    /// one (TCP, and filtered modes: what lets the peer in), as an outbound packet
    /// would.
    fn open_session<N: NatTables + NatWrites>(
        &self,
        nat: &mut N,
        proto: u8,
        external: SocketAddrV4,
        remote: SocketAddrV4,
        now_ns: u64,
    ) -> Result<(), TableError> {
        let mode = self.defaults.filter_for(proto);
        let mut keys = Vec::new();
        if proto == IPPROTO_TCP || mode != FilterMode::EndpointIndependent {
            keys.push(remote.port());
        }
        if mode == FilterMode::AddressDependent {
            keys.push(0);
        }
        for remote_port in keys {
            let key = SessionKey::new(
                addr_be(external.ip().octets()),
                addr_be(remote.ip().octets()),
                external.port().to_be(),
                remote_port.to_be(),
                proto,
            );
            let mut s = nat
                .session(&key)
                .map_err(|e| map_failure("read NAT_SESSIONS", &e))?
                .unwrap_or(Session {
                    created_ns: now_ns,
                    ..Session::default()
                });
            s.last_out_ns = now_ns;
            nat.put_session(&key, &s)
                .map_err(|e| map_failure("update NAT_SESSIONS", &e))?;
        }
        Ok(())
    }
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

/// [`ExplicitMappings`] over the NAT tables at one moment: what the PCP engine
/// drives ([`MappingTable`]).
pub struct Table<'a, F, N> {
    explicit: &'a mut ExplicitMappings<F>,
    nat: &'a mut N,
    now: Instant,
    now_ns: u64,
}

impl<F: PcpFilterTable, N: NatTables + NatWrites> MappingTable for Table<'_, F, N> {
    fn lan_of(&self, host: Ipv4Addr) -> Option<u32> {
        match self.explicit.hosts.lan_host(host) {
            Host::Lan { ifindex } => Some(ifindex),
            Host::Own | Host::Reserved | Host::Outside => None,
        }
    }

    fn explicit_count(&self, lan: Option<u32>) -> usize {
        self.explicit
            .records
            .values()
            .filter(|r| r.holder.engine().is_some() && r.expires.is_some_and(|e| e > self.now))
            .filter(|r| lan.is_none() || self.lan_of(r.key.internal) == lan)
            .count()
    }

    fn external_address(&self) -> Option<Ipv4Addr> {
        self.explicit.pool.first().copied()
    }

    fn explicit(&self, key: &MappingKey) -> Option<ExplicitMapping> {
        self.explicit.records.get(key)?.engine_view()
    }

    fn explicit_of(&self, internal: Ipv4Addr) -> Vec<ExplicitMapping> {
        self.explicit
            .records
            .values()
            .filter(|r| r.key.internal == internal)
            .filter_map(Record::engine_view)
            .collect()
    }

    fn explicit_all(&self) -> Vec<ExplicitMapping> {
        self.explicit
            .records
            .values()
            .filter_map(Record::engine_view)
            .collect()
    }

    fn install(&mut self, request: &Install) -> Result<SocketAddrV4, TableError> {
        self.explicit.install(self.nat, request, self.now_ns)
    }

    fn remove(&mut self, key: &MappingKey) {
        if let Some(ended) = self.explicit.end(self.nat, key, self.now_ns) {
            info!(
                "explicit.deleted proto={} int={} ext={} holder={} outcome={}",
                ended.key.protocol,
                ended.key.internal_endpoint(),
                ended.external,
                ended.holder.name(),
                ended.outcome.name()
            );
        }
    }

    fn peer(&mut self, request: &PeerRequest) -> Result<PeerGrant, TableError> {
        self.explicit.peer(self.nat, request, self.now, self.now_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;
    use crate::nat_table::testing::MemoryMaps;
    use natgw_proto::prefix::Ipv4Prefix;

    const EXT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
    const S: u64 = NS_PER_SEC;
    const NONCE: Nonce = [7; 12];

    fn defaults() -> Defaults {
        Defaults {
            port_range: PortRange::new(1024, 65535).unwrap(),
            filter_udp: FilterMode::AddressDependent,
            filter_tcp: FilterMode::EndpointIndependent,
            policy: Policy::new(&Timeouts::default(), false),
        }
    }

    fn explicit() -> ExplicitMappings<MemoryMaps> {
        let lan = crate::datapath::addresses::LanIface {
            ifindex: 3,
            prefixes: vec![Ipv4Prefix::new(Ipv4Addr::new(10, 0, 1, 1), 24).unwrap()],
        };
        let hosts = AddressPlan::new(vec![lan.clone()], &lan.prefixes);
        ExplicitMappings::new(vec![EXT], hosts, defaults(), MemoryMaps::default())
            .with_socket_probe(|_, _, _| false)
    }

    fn key(port: u16) -> MappingKey {
        MappingKey {
            internal: HOST,
            protocol: Protocol::Udp,
            internal_port: port,
        }
    }

    fn install(port: u16, suggest: Option<u16>, now: Instant) -> Install {
        Install {
            key: key(port),
            origin: Origin::Pcp,
            nonce: NONCE,
            lifetime: 600,
            expires: now + Duration::from_secs(600),
            suggested_address: None,
            suggested_port: suggest,
            prefer_failure: false,
            external_ports: vec![PortSpan::new(1024, 65535).unwrap()],
            filters: Vec::new(),
            reply_to: SocketAddrV4::new(HOST, 40000),
        }
    }

    fn filter(prefix: &str, port: u16) -> Filter {
        Filter {
            remote: prefix.parse::<Ipv4Prefix>().unwrap(),
            port,
        }
    }

    /// A traffic mapping as the data path creates it, last used at `last_out`.
    fn traffic(nat: &mut MemoryMaps, port: u16, ext_port: u16, created: u64, last_out: u64) {
        let fk = fwd_key(IPPROTO_UDP, SocketAddrV4::new(HOST, port));
        let m = Mapping {
            ext_addr_be: addr_be(EXT.octets()),
            ext_port_be: ext_port.to_be(),
            created_ns: created,
            last_out_ns: last_out,
            ..Mapping::default()
        };
        nat.fwd.insert(fk, m);
        nat.rev.insert(
            rev_key_of(&fk, &m),
            RevValue {
                int_addr_be: fk.addr_be,
                int_port_be: fk.port_be,
                filter: FilterMode::AddressDependent as u8,
                created_ns: created,
                ..RevValue::default()
            },
        );
    }

    fn entries_of(nat: &MemoryMaps, port: u16) -> Option<(Mapping, RevValue)> {
        let fk = fwd_key(IPPROTO_UDP, SocketAddrV4::new(HOST, port));
        let m = *nat.fwd.get(&fk)?;
        let r = *nat.rev.get(&rev_key_of(&fk, &m))?;
        Some((m, r))
    }

    #[test]
    fn map_installs_both_entries_with_its_origin_and_endpoint_independent_filtering() {
        // rfc6887 §11.3, in the data path's own tables
        let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
        let mut t = x.table(&mut nat, now, 10 * S);
        let ext = t.install(&install(5000, Some(15000), now)).unwrap();
        assert_eq!(ext, SocketAddrV4::new(EXT, 15000), "the suggestion is free");
        assert_eq!(t.explicit(&key(5000)).unwrap().nonce, NONCE);
        let (m, r) = entries_of(&nat, 5000).unwrap();
        assert_eq!(m.origin, natgw_common::Origin::Pcp as u8);
        assert_eq!(m.created_ns, 10 * S);
        assert_eq!(r.created_ns, m.created_ns);
        assert_eq!(r.filter, FilterMode::EndpointIndependent as u8);
        assert_eq!(port(r.int_port_be), 5000);
    }

    #[test]
    fn map_takes_over_the_traffic_mapping_and_keeps_its_port() {
        // rfc4787 REQ-1: one external port per internal endpoint, whoever made it
        let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
        traffic(&mut nat, 5000, 40001, S, 2 * S);
        let mut t = x.table(&mut nat, now, 10 * S);
        let mut strict = install(5000, Some(15000), now);
        strict.prefer_failure = true;
        assert_eq!(t.install(&strict), Err(TableError::CannotProvideExternal));
        let ext = t.install(&install(5000, Some(15000), now)).unwrap();
        assert_eq!(ext.port(), 40001);
        let (m, r) = entries_of(&nat, 5000).unwrap();
        assert_eq!(m.origin, natgw_common::Origin::Pcp as u8);
        assert_eq!(m.created_ns, S, "the same mapping");
        assert_eq!(r.filter, FilterMode::EndpointIndependent as u8);
    }

    #[test]
    fn taken_or_gateway_held_ports_are_not_given() {
        let now = Instant::now();
        let mut nat = MemoryMaps::default();
        traffic(&mut nat, 6000, 15000, S, S);
        let mut x = explicit().with_socket_probe(|_, _, p| p == 5000);
        let mut t = x.table(&mut nat, now, 10 * S);
        let ext = t.install(&install(5000, Some(15000), now)).unwrap();
        assert!(
            ext.port() != 15000 && ext.port() != 5000,
            "neither the taken suggestion nor the port a gateway socket holds: {ext}"
        );
        let mut strict = install(5001, Some(15000), now);
        strict.prefer_failure = true;
        assert_eq!(t.install(&strict), Err(TableError::CannotProvideExternal));
    }

    #[test]
    fn filters_fill_the_trie_and_switch_the_mode() {
        // rfc6887 §13.3
        let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
        let mut req = install(5000, Some(15000), now);
        req.filters = vec![filter("198.51.100.0/24", 0), filter("203.0.113.7/32", 443)];
        x.table(&mut nat, now, S).install(&req).unwrap();
        let (_, r) = entries_of(&nat, 5000).unwrap();
        assert_eq!(r.filter, FilterMode::PcpFilter as u8);
        let key = PcpFilterKey::new(
            addr_be(EXT.octets()),
            15000u16.to_be(),
            IPPROTO_UDP,
            addr_be([203, 0, 113, 7]),
        );
        assert_eq!(
            x.filters
                .pcp_filters
                .get(&(key, PCP_FILTER_FIXED_BITS + 32)),
            Some(&u32::from(443u16.to_be()))
        );
        assert_eq!(x.filters.pcp_filters.len(), 2);
        // A renewal that drops them (the engine passes the complete list).
        req.filters.clear();
        x.table(&mut nat, now, S).install(&req).unwrap();
        let (_, r) = entries_of(&nat, 5000).unwrap();
        assert_eq!(r.filter, FilterMode::EndpointIndependent as u8);
        assert!(x.filters.pcp_filters.is_empty());
        // One prefix, two ports: the trie cannot hold both.
        req.filters = vec![
            filter("198.51.100.0/24", 80),
            filter("198.51.100.0/24", 443),
        ];
        assert_eq!(
            x.table(&mut nat, now, S).install(&req),
            Err(TableError::ExcessiveRemotePeers)
        );
    }

    #[test]
    fn an_unused_mapping_ends_with_its_entries() {
        // rfc6887 §15: lifetime over, no traffic: the port closes
        let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
        let mut req = install(5000, None, now);
        req.filters = vec![filter("198.51.100.0/24", 0)];
        x.table(&mut nat, now, S).install(&req).unwrap();
        assert!(x.expire(&mut nat, now, 2 * S).is_empty(), "not yet");
        let later = now + Duration::from_secs(601);
        let ended = x.expire(&mut nat, later, 602 * S);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].outcome, Outcome::Removed);
        assert!(nat.fwd.is_empty() && nat.rev.is_empty());
        assert!(x.filters.pcp_filters.is_empty());
        assert!(x.entries().is_empty());
    }

    #[test]
    fn a_mapping_in_use_ends_as_an_implicit_one() {
        // rfc6887 §15: the internal host still sends through it, so the mapping stays,
        // as traffic would have made it (the configured filtering: ADF here)
        let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
        x.table(&mut nat, now, S)
            .install(&install(5000, None, now))
            .unwrap();
        let fk = fwd_key(IPPROTO_UDP, SocketAddrV4::new(HOST, 5000));
        nat.fwd.get_mut(&fk).unwrap().last_out_ns = 500 * S;
        let mut t = x.table(&mut nat, now, 600 * S);
        t.remove(&key(5000));
        assert!(t.explicit(&key(5000)).is_none());
        let (m, r) = entries_of(&nat, 5000).unwrap();
        assert_eq!(m.origin, natgw_common::Origin::Traffic as u8);
        assert_eq!(r.filter, FilterMode::AddressDependent as u8);
    }

    #[test]
    fn static_forwards_never_expire_and_are_not_the_engines() {
        let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
        let internal = SocketAddrV4::new(HOST, 80);
        let ext = x
            .add_static(&mut nat, Protocol::Tcp, 8080, internal, S)
            .unwrap();
        assert_eq!(ext, SocketAddrV4::new(EXT, 8080));
        let ended = x.expire(
            &mut nat,
            now + Duration::from_secs(1_000_000),
            1_000_000 * S,
        );
        assert!(ended.is_empty());
        let tcp80 = MappingKey {
            internal: HOST,
            protocol: Protocol::Tcp,
            internal_port: 80,
        };
        let mut t = x.table(&mut nat, now, S);
        assert!(t.explicit(&tcp80).is_none());
        assert!(t.explicit_of(HOST).is_empty(), "not in the host's quota");
        let mut req = install(80, None, now);
        req.key = tcp80;
        assert_eq!(t.install(&req), Err(TableError::NotAuthorized));
        // A second forward of the same port cannot be had.
        let other = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 3), 80);
        assert_eq!(
            x.add_static(&mut nat, Protocol::Tcp, 8080, other, S),
            Err(TableError::CannotProvideExternal)
        );
        let e = x.entries();
        assert_eq!(e[0].origin, "static");
        assert_eq!(e[0].expires_ns, None);
    }

    #[test]
    fn peer_creates_a_traffic_mapping_and_holds_to_its_nonce() {
        // rfc6887 §12.3
        let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
        let request = PeerRequest {
            internal: SocketAddrV4::new(HOST, 6000),
            protocol: Protocol::Udp,
            remote: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 7000),
            nonce: NONCE,
            lifetime: 7200,
            suggested_address: None,
            suggested_port: Some(16000),
            reply_to: SocketAddrV4::new(HOST, 40000),
        };
        let mut t = x.table(&mut nat, now, 10 * S);
        let grant = t.peer(&request).unwrap();
        assert_eq!(grant.external, SocketAddrV4::new(EXT, 16000));
        assert_eq!(
            grant.lifetime, 300,
            "as long as the UDP idle timeout keeps it"
        );
        let other = PeerRequest {
            nonce: [9; 12],
            ..request.clone()
        };
        assert_eq!(t.peer(&other), Err(TableError::NonceMismatch));
        let (m, r) = entries_of(&nat, 6000).unwrap();
        assert_eq!(m.origin, natgw_common::Origin::Traffic as u8);
        assert_eq!(m.last_out_ns, 10 * S);
        assert_eq!(r.filter, FilterMode::AddressDependent as u8);
        // Address-dependent filtering: the peer's address may now send.
        let session = SessionKey::new(
            addr_be(EXT.octets()),
            addr_be([198, 51, 100, 2]),
            16000u16.to_be(),
            0,
            IPPROTO_UDP,
        );
        assert!(nat.sessions.contains_key(&session));
    }

    #[test]
    fn a_new_address_moves_explicit_mappings_keeping_their_ports() {
        let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
        let mut req = install(5000, Some(15000), now);
        req.filters = vec![filter("198.51.100.0/24", 0)];
        x.table(&mut nat, now, S).install(&req).unwrap();
        let new = Ipv4Addr::new(192, 0, 2, 9);
        let moved = x.set_pool(&mut nat, vec![new], 2 * S);
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].to, Some(SocketAddrV4::new(new, 15000)));
        let (m, r) = entries_of(&nat, 5000).unwrap();
        assert_eq!(ipv4(m.ext_addr_be), new);
        assert_eq!(r.created_ns, m.created_ns);
        assert_eq!(nat.rev.len(), 1, "the old claim is gone");
        assert!(x
            .filters
            .pcp_filters
            .keys()
            .all(|(k, _)| ipv4(k.ext_addr_be) == new));
        let t = x.table(&mut nat, now, 2 * S);
        assert_eq!(t.explicit(&key(5000)).unwrap().external.ip(), &new);
        assert_eq!(t.external_address(), Some(new));
        // No address at all: requests fail, mappings stay where they are.
        x.set_pool(&mut nat, Vec::new(), 3 * S);
        let mut t = x.table(&mut nat, now, 3 * S);
        assert_eq!(t.external_address(), None);
        assert_eq!(
            t.install(&install(5001, None, now)),
            Err(TableError::NetworkFailure)
        );
    }
}
