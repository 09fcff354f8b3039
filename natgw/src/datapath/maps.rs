//! natgw's BPF maps from user space: taking them from the loaded object or opening
//! them from their pins (or kernel ids), reading the NAT tables and counters, and
//! writing the configuration maps the data path reads.
//!
//! [`NatTables`] and [`HeldSynTable`] are the narrow interfaces the garbage collector
//! works through, and [`NatWrites`] and [`PcpFilterTable`] what explicit mappings (PCP,
//! NAT-PMP, static forwards) add to them, so their tests can run against in-memory
//! tables.

mod batch;
pub mod hosts;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use aya::maps::lpm_trie::Key as LpmKey;
use aya::maps::{
    Array, HashMap, IterableMap as _, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf,
};
use aya::Ebpf;
use natgw_common::maps::{
    names, HeldSyn, LanSourceKey, PcpFilterKey, Session, SessionKey, LAN_SOURCE_FIXED_BITS,
};
use natgw_common::maps::{FragKey, FragValue, StashKey, StashedFragment};
use natgw_common::{Config, Counter, FwdKey, IfaceConfig, Mapping, RevKey, RevValue};

pub use hosts::{HostMaps, HostRules};

use crate::datapath::addresses::AddressPlan;
use crate::datapath::dirs::RuntimeDirs;
use natgw_proto::prefix::Ipv4Prefix;

/// A failed map operation, naming the map.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    /// The eBPF object lacks a map natgw expects.
    #[error("the eBPF object has no map {0}")]
    Missing(&'static str),
    /// A map operation failed.
    #[error("map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        source: MapError,
    },
    /// Pinning failed.
    #[error("pinning map {name} at {path}: {source}")]
    Pin {
        /// Map name.
        name: &'static str,
        /// Pin path.
        path: String,
        /// Cause.
        source: aya::pin::PinError,
    },
    /// Neither the pin nor the id from the state file could be opened.
    #[error("cannot open map {name} of the running natgw ({detail})")]
    Open {
        /// Map name.
        name: &'static str,
        /// What was tried.
        detail: String,
    },
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

/// `BPF_NOEXIST` (linux/bpf.h): insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;
/// `BPF_EXIST` (linux/bpf.h): update only if the key is present.
const BPF_EXIST: u64 = 2;

/// The OS error of a map operation, if it was a failed system call.
fn errno(e: &MapError) -> Option<i32> {
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

/// Whether a failed insert means the map is full (`E2BIG` from hash maps, `ENOSPC`
/// from LPM tries, `ENOMEM` when the kernel cannot allocate the element).
#[must_use]
pub fn is_full(e: &MapsError) -> bool {
    matches!(e, MapsError::Map { source, .. }
        if matches!(errno(source), Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM)))
}

/// Whether a map error means "no such key".
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// The NAT tables (mappings in both directions, and their sessions) as the garbage
/// collector sees them.
pub trait NatTables {
    /// Every forward entry (a snapshot).
    fn fwd_entries(&self) -> Result<Vec<(FwdKey, Mapping)>, MapsError>;
    /// Every reverse entry (a snapshot).
    fn rev_entries(&self) -> Result<Vec<(RevKey, RevValue)>, MapsError>;
    /// One forward entry.
    fn fwd(&self, key: &FwdKey) -> Result<Option<Mapping>, MapsError>;
    /// One reverse entry.
    fn rev(&self, key: &RevKey) -> Result<Option<RevValue>, MapsError>;
    /// Deletes a forward entry; `false` when it was already gone. A deleted mapping
    /// no longer counts against its host's port limit (RFC 6888 REQ-4).
    fn remove_fwd(&mut self, key: &FwdKey) -> Result<bool, MapsError>;
    /// Frees the external port `key` of a mapping of internal host `int_addr_be`
    /// that ends at `now_ns` (its forward entry gone): its reverse entry becomes a
    /// hold ([`RevValue::held`]), keeping the port from every other host for the
    /// hold-down (RFC 6888 REQ-8) without a moment unclaimed, or is deleted when
    /// there is no hold-down or no room for another hold. `false` when it was gone.
    fn free_port(&mut self, key: &RevKey, int_addr_be: u32, now_ns: u64)
        -> Result<bool, MapsError>;
    /// How many holds a snapshot of the reverse table just counted.
    fn count_holds(&mut self, held: usize) {
        let _ = held;
    }
    /// Deletes a reverse entry; `false` when it was already gone.
    fn remove_rev(&mut self, key: &RevKey) -> Result<bool, MapsError>;
    /// Deletes many forward entries ([`Self::remove_fwd`] each); for each key whether
    /// it was there.
    fn remove_fwds(&mut self, keys: &[FwdKey]) -> Result<Vec<bool>, MapsError> {
        keys.iter().map(|k| self.remove_fwd(k)).collect()
    }
    /// Frees many external ports ([`Self::free_port`] each): (reverse key, internal
    /// host).
    fn free_ports(&mut self, ports: &[(RevKey, u32)], now_ns: u64) -> Result<(), MapsError> {
        for (key, host) in ports {
            self.free_port(key, *host, now_ns)?;
        }
        Ok(())
    }
    /// Every session (a snapshot).
    fn session_entries(&self) -> Result<Vec<(SessionKey, Session)>, MapsError>;
    /// One session.
    fn session(&self, key: &SessionKey) -> Result<Option<Session>, MapsError>;
    /// Deletes a session; `false` when it was already gone.
    fn remove_session(&mut self, key: &SessionKey) -> Result<bool, MapsError>;
}

/// `HELD_SYNS`: unsolicited SYNs the data path dropped and remembered.
pub trait HeldSynTable {
    /// Every held SYN (a snapshot).
    fn held_syn_entries(&self) -> Result<Vec<(SessionKey, HeldSyn)>, MapsError>;
    /// One held SYN.
    fn held_syn(&self, key: &SessionKey) -> Result<Option<HeldSyn>, MapsError>;
    /// Forgets a held SYN; `false` when it was already gone (answered meanwhile).
    fn remove_held_syn(&mut self, key: &SessionKey) -> Result<bool, MapsError>;
}

/// What explicit mappings write into the NAT tables on top of what the garbage
/// collector reads and deletes: they claim external ports exactly as the data path
/// does (`BPF_NOEXIST` into `NAT_REV` first), and change entries only while they exist
/// (`BPF_EXIST`), so a concurrent deletion is noticed instead of undone.
pub trait NatWrites {
    /// Inserts a reverse entry unless its key exists — the port claim; `false` when
    /// the external endpoint is taken.
    fn claim_rev(&mut self, key: &RevKey, value: &RevValue) -> Result<bool, MapsError>;
    /// Inserts a forward entry unless its key exists; `false` when one does. The new
    /// mapping counts against its host's port limit.
    fn insert_fwd(&mut self, key: &FwdKey, value: &Mapping) -> Result<bool, MapsError>;
    /// Replaces a forward entry; `false` when it is gone.
    fn replace_fwd(&mut self, key: &FwdKey, value: &Mapping) -> Result<bool, MapsError>;
    /// Replaces a reverse entry; `false` when it is gone.
    fn replace_rev(&mut self, key: &RevKey, value: &RevValue) -> Result<bool, MapsError>;
    /// Creates or replaces a session.
    fn put_session(&mut self, key: &SessionKey, value: &Session) -> Result<(), MapsError>;
    /// Whether internal host `int_addr_be` already holds as many mappings of `proto`
    /// as it may (RFC 6888 REQ-4).
    fn host_at_limit(&self, int_addr_be: u32, proto: u8) -> Result<bool, MapsError>;
}

/// `PCP_FILTERS`: the remote peers PCP FILTER options let reach a mapping. A key is a
/// [`PcpFilterKey`] with the prefix length [`natgw_common::maps::PCP_FILTER_FIXED_BITS`]
/// plus the remote prefix's; the value is the remote port in wire order (0: any).
pub trait PcpFilterTable {
    /// Adds or replaces an entry.
    fn put_pcp_filter(
        &mut self,
        key: &PcpFilterKey,
        prefix_len: u32,
        port_be: u32,
    ) -> Result<(), MapsError>;
    /// Removes an entry; `false` when it was not there.
    fn remove_pcp_filter(&mut self, key: &PcpFilterKey, prefix_len: u32)
        -> Result<bool, MapsError>;
}

/// `NAT_FWD`, `NAT_REV`, `NAT_SESSIONS` and `HELD_SYNS`, with the per-host records
/// that go with creating and deleting mappings.
#[derive(Debug)]
pub struct NatMaps {
    /// (protocol, internal endpoint) -> mapping.
    pub fwd: HashMap<MapData, FwdKey, Mapping>,
    /// (protocol, external endpoint) -> internal endpoint.
    pub rev: HashMap<MapData, RevKey, RevValue>,
    /// (external endpoint, remote endpoint, protocol) -> session.
    pub sessions: HashMap<MapData, SessionKey, Session>,
    /// Unsolicited SYNs held back (RFC 5382 REQ-4).
    pub held_syns: HashMap<MapData, SessionKey, HeldSyn>,
    /// Per-host limits and port holds (RFC 6888).
    pub hosts: HostMaps,
}

/// Set once the kernel has refused a batch lookup: snapshots walk key by key from then
/// on.
static BATCH_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Reads a whole hash map: in batches of [`batch::BATCH_CHUNK`] entries per system
/// call, or key by key on kernels without batch operations (before 5.6). Entries the
/// data path adds or deletes meanwhile may be missed; none appears twice (the garbage
/// collector would cope: its second look at a key finds it deleted).
fn snapshot<K, V>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, MapsError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod,
{
    if !BATCH_UNSUPPORTED.load(Ordering::Relaxed) {
        match batch::lookup_batch::<K, V>(map.map(), batch::BATCH_CHUNK) {
            // No duplicates to remove: see `batch`.
            Ok(entries) => return Ok(entries),
            Err(e) if batch::is_unsupported(&e) => {
                if !BATCH_UNSUPPORTED.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "maps.batch_unsupported map={name} error=\"{e}\": reading the NAT \
                         tables key by key (two system calls per entry)"
                    );
                }
            }
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    snapshot_by_key(map, name)
}

/// Reads a whole hash map key by key. Keys deleted by the data path meanwhile are
/// skipped; a concurrent delete can make the kernel restart the walk, so duplicates
/// collapse and the walk is bounded.
fn snapshot_by_key<K, V>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, MapsError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod,
{
    let limit = map
        .map()
        .info()
        .map_or(1 << 20, |i| (i.max_entries() as usize).saturating_mul(4));
    let mut entries = Vec::new();
    for (i, entry) in map.iter().enumerate() {
        if i >= limit {
            break;
        }
        entries.push(entry.map_err(map_err(name))?);
    }
    Ok(batch::dedup_entries(entries))
}

fn get<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<Option<V>, MapsError> {
    match map.get(key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(map_err(name)(e)),
    }
}

fn remove<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<bool, MapsError> {
    match map.remove(key) {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(map_err(name)(e)),
    }
}

/// Deletes `keys` in `BPF_MAP_DELETE_BATCH` calls; for each whether it was there.
/// `None` on a kernel without batch operations (the caller goes key by key).
fn remove_batch<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    keys: &[K],
    name: &'static str,
) -> Result<Option<Vec<bool>>, MapsError> {
    if keys.is_empty() {
        return Ok(Some(Vec::new()));
    }
    if BATCH_UNSUPPORTED.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let mut removed = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(batch::BATCH_CHUNK) {
        match natgw_common::batch::delete_batch::<K, V>(map.map(), chunk) {
            Ok(r) => removed.extend(r),
            Err(e) if removed.is_empty() && batch::is_unsupported(&e) => return Ok(None),
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    Ok(Some(removed))
}

impl NatTables for NatMaps {
    fn fwd_entries(&self) -> Result<Vec<(FwdKey, Mapping)>, MapsError> {
        snapshot(&self.fwd, names::NAT_FWD)
    }

    fn rev_entries(&self) -> Result<Vec<(RevKey, RevValue)>, MapsError> {
        snapshot(&self.rev, names::NAT_REV)
    }

    fn fwd(&self, key: &FwdKey) -> Result<Option<Mapping>, MapsError> {
        get(&self.fwd, key, names::NAT_FWD)
    }

    fn rev(&self, key: &RevKey) -> Result<Option<RevValue>, MapsError> {
        get(&self.rev, key, names::NAT_REV)
    }

    fn remove_fwd(&mut self, key: &FwdKey) -> Result<bool, MapsError> {
        let removed = remove(&mut self.fwd, key, names::NAT_FWD)?;
        if removed {
            self.hosts.account(key.addr_be, key.proto, 1)?;
        }
        Ok(removed)
    }

    fn free_port(
        &mut self,
        key: &RevKey,
        int_addr_be: u32,
        now_ns: u64,
    ) -> Result<bool, MapsError> {
        if self.hosts.take_hold() {
            let held = RevValue::held(int_addr_be, now_ns);
            return insert_if(&mut self.rev, key, &held, BPF_EXIST, names::NAT_REV);
        }
        remove(&mut self.rev, key, names::NAT_REV)
    }

    fn count_holds(&mut self, held: usize) {
        self.hosts.set_held(held);
    }

    fn remove_rev(&mut self, key: &RevKey) -> Result<bool, MapsError> {
        remove(&mut self.rev, key, names::NAT_REV)
    }

    fn remove_fwds(&mut self, keys: &[FwdKey]) -> Result<Vec<bool>, MapsError> {
        let Some(removed) = remove_batch(&mut self.fwd, keys, names::NAT_FWD)? else {
            return keys.iter().map(|k| self.remove_fwd(k)).collect();
        };
        // One update of each host's released count, not one per mapping.
        let mut released: std::collections::HashMap<(u32, u8), i32> =
            std::collections::HashMap::new();
        for (key, _) in keys.iter().zip(&removed).filter(|(_, gone)| **gone) {
            *released.entry((key.addr_be, key.proto)).or_default() += 1;
        }
        for ((host, proto), n) in released {
            self.hosts.account(host, proto, n)?;
        }
        Ok(removed)
    }

    fn free_ports(&mut self, ports: &[(RevKey, u32)], now_ns: u64) -> Result<(), MapsError> {
        if ports.is_empty() {
            return Ok(());
        }
        if BATCH_UNSUPPORTED.load(Ordering::Relaxed) {
            for (key, host) in ports {
                self.free_port(key, *host, now_ns)?;
            }
            return Ok(());
        }
        // As `free_port` decides for each: a hold while there is room for one, else
        // a delete; then one batched update of the holds, one batched delete.
        let mut held_keys = Vec::new();
        let mut holds = Vec::new();
        let mut freed = Vec::new();
        for (key, host) in ports {
            if self.hosts.take_hold() {
                held_keys.push(*key);
                holds.push(RevValue::held(*host, now_ns));
            } else {
                freed.push(*key);
            }
        }
        // `free_port` replaces with `BPF_EXIST`, which batches do not take (the
        // kernel refuses element flags other than `BPF_F_LOCK`). The same here: a
        // mapping's claim outlives its forward entry until the controller frees it
        // (the data path deletes only claims it made itself a moment before, and
        // holds), so each of these keys is there.
        natgw_common::batch::update_batch(self.rev.map(), &held_keys, &holds).map_err(|e| {
            MapsError::Map {
                name: names::NAT_REV,
                source: e.error,
            }
        })?;
        if remove_batch(&mut self.rev, &freed, names::NAT_REV)?.is_none() {
            for key in &freed {
                remove(&mut self.rev, key, names::NAT_REV)?;
            }
        }
        Ok(())
    }

    fn session_entries(&self) -> Result<Vec<(SessionKey, Session)>, MapsError> {
        snapshot(&self.sessions, names::NAT_SESSIONS)
    }

    fn session(&self, key: &SessionKey) -> Result<Option<Session>, MapsError> {
        get(&self.sessions, key, names::NAT_SESSIONS)
    }

    fn remove_session(&mut self, key: &SessionKey) -> Result<bool, MapsError> {
        remove(&mut self.sessions, key, names::NAT_SESSIONS)
    }
}

impl HeldSynTable for NatMaps {
    fn held_syn_entries(&self) -> Result<Vec<(SessionKey, HeldSyn)>, MapsError> {
        snapshot(&self.held_syns, names::HELD_SYNS)
    }

    fn held_syn(&self, key: &SessionKey) -> Result<Option<HeldSyn>, MapsError> {
        get(&self.held_syns, key, names::HELD_SYNS)
    }

    fn remove_held_syn(&mut self, key: &SessionKey) -> Result<bool, MapsError> {
        remove(&mut self.held_syns, key, names::HELD_SYNS)
    }
}

/// Inserts with `flags`; `Ok(false)` when the flag's condition failed (`EEXIST` for
/// [`BPF_NOEXIST`], `ENOENT` for [`BPF_EXIST`]).
fn insert_if<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
    value: &V,
    flags: u64,
    name: &'static str,
) -> Result<bool, MapsError> {
    match map.insert(key, value, flags) {
        Ok(()) => Ok(true),
        Err(e) if flags == BPF_NOEXIST && errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) if flags == BPF_EXIST && is_not_found(&e) => Ok(false),
        Err(e) => Err(map_err(name)(e)),
    }
}

impl NatWrites for NatMaps {
    fn claim_rev(&mut self, key: &RevKey, value: &RevValue) -> Result<bool, MapsError> {
        insert_if(&mut self.rev, key, value, BPF_NOEXIST, names::NAT_REV)
    }

    fn insert_fwd(&mut self, key: &FwdKey, value: &Mapping) -> Result<bool, MapsError> {
        let inserted = insert_if(&mut self.fwd, key, value, BPF_NOEXIST, names::NAT_FWD)?;
        if inserted {
            self.hosts.account(key.addr_be, key.proto, -1)?;
        }
        Ok(inserted)
    }

    fn replace_fwd(&mut self, key: &FwdKey, value: &Mapping) -> Result<bool, MapsError> {
        insert_if(&mut self.fwd, key, value, BPF_EXIST, names::NAT_FWD)
    }

    fn replace_rev(&mut self, key: &RevKey, value: &RevValue) -> Result<bool, MapsError> {
        insert_if(&mut self.rev, key, value, BPF_EXIST, names::NAT_REV)
    }

    fn put_session(&mut self, key: &SessionKey, value: &Session) -> Result<(), MapsError> {
        self.sessions
            .insert(key, value, 0)
            .map_err(map_err(names::NAT_SESSIONS))
    }

    fn host_at_limit(&self, int_addr_be: u32, proto: u8) -> Result<bool, MapsError> {
        self.hosts.at_limit(int_addr_be, proto)
    }
}

/// The `PCP_FILTERS` trie, taken from the loaded object. Only the daemon writes it,
/// and nothing else reads it from user space (`natgw mappings` shows the filters
/// from the daemon's record of explicit mappings), so it is not pinned.
pub struct PcpFilters {
    map: LpmTrie<MapData, PcpFilterKey, u32>,
}

impl PcpFilters {
    /// Takes `PCP_FILTERS` out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        let map = ebpf
            .take_map(names::PCP_FILTERS)
            .ok_or(MapsError::Missing(names::PCP_FILTERS))?;
        Ok(Self {
            map: typed(map, names::PCP_FILTERS)?,
        })
    }
}

impl PcpFilterTable for PcpFilters {
    fn put_pcp_filter(
        &mut self,
        key: &PcpFilterKey,
        prefix_len: u32,
        port_be: u32,
    ) -> Result<(), MapsError> {
        self.map
            .insert(&LpmKey::new(prefix_len, *key), port_be, 0)
            .map_err(map_err(names::PCP_FILTERS))
    }

    fn remove_pcp_filter(
        &mut self,
        key: &PcpFilterKey,
        prefix_len: u32,
    ) -> Result<bool, MapsError> {
        match self.map.remove(&LpmKey::new(prefix_len, *key)) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_err(names::PCP_FILTERS)(e)),
        }
    }
}

/// Every map natgw uses.
pub struct GatewayMaps {
    /// The NAT tables.
    pub nat: NatMaps,
    /// `CONFIG[0]`.
    pub config: Array<MapData, Config>,
    /// ifindex -> interface facts.
    pub ifaces: HashMap<MapData, u32, IfaceConfig>,
    /// What each address is to the gateway (`addr_class` bits).
    pub addr_class: LpmTrie<MapData, u32, u32>,
    /// Which sources each LAN interface may carry.
    pub lan_sources: LpmTrie<MapData, LanSourceKey, u32>,
    /// Verdict counters.
    pub counters: PerCpuArray<MapData, u64>,
    /// Requests for ICMP errors from the data path; only in the daemon (taken from
    /// the loaded object, not pinned), and moved out to the task that reads it.
    pub events: Option<RingBuf<MapData>>,
}

/// Where to find the maps of a running gateway.
#[derive(Debug, Clone, Copy)]
pub struct MapSource<'a> {
    /// Its pin directory.
    pub dirs: &'a RuntimeDirs,
    /// Kernel map ids from its state file.
    pub ids: &'a BTreeMap<String, u32>,
}

impl MapSource<'_> {
    /// Opens map `name`: from its pin, else by id (verifying the name).
    fn open(&self, name: &'static str) -> Result<Map, MapsError> {
        let pin = self.dirs.pin_path(name);
        let data = match MapData::from_pin(&pin) {
            Ok(d) => d,
            Err(pin_err) => {
                let by_id = self.ids.get(name).map(|id| {
                    MapData::from_id(*id).and_then(|d| {
                        let info = d.info()?;
                        if info.name_as_str() == Some(name) {
                            Ok(d)
                        } else {
                            Err(MapError::InvalidName {
                                name: info.name_as_str().unwrap_or("?").to_owned(),
                            })
                        }
                    })
                });
                match by_id {
                    Some(Ok(d)) => d,
                    Some(Err(id_err)) => {
                        return Err(open_error(name, &pin, &pin_err, Some(&id_err)))
                    }
                    None => return Err(open_error(name, &pin, &pin_err, None)),
                }
            }
        };
        Map::from_map_data(data).map_err(map_err(name))
    }
}

fn open_error(
    name: &'static str,
    pin: &Path,
    pin_err: &MapError,
    id_err: Option<&MapError>,
) -> MapsError {
    let eperm = |e: &MapError| {
        matches!(e, MapError::SyscallError(s)
            if matches!(s.io_error.raw_os_error(), Some(libc::EPERM | libc::EACCES)))
    };
    let mut detail = if eperm(pin_err) || id_err.is_some_and(eperm) {
        "permission denied: run it as root".to_owned()
    } else {
        format!("{}: {}", pin.display(), chain(pin_err))
    };
    if let Some(e) = id_err.filter(|e| !eperm(e)) {
        detail.push_str(&format!("; by id: {}", chain(e)));
    }
    MapsError::Open { name, detail }
}

/// An error with its sources, on one line.
#[must_use]
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

fn typed<T>(map: Map, name: &'static str) -> Result<T, MapsError>
where
    T: TryFrom<Map, Error = MapError>,
{
    T::try_from(map).map_err(map_err(name))
}

impl GatewayMaps {
    /// Takes the maps out of a loaded object (after its programs are loaded).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(MapsError::Missing(name));
        Ok(Self {
            nat: NatMaps {
                fwd: typed(take(names::NAT_FWD)?, names::NAT_FWD)?,
                rev: typed(take(names::NAT_REV)?, names::NAT_REV)?,
                sessions: typed(take(names::NAT_SESSIONS)?, names::NAT_SESSIONS)?,
                held_syns: typed(take(names::HELD_SYNS)?, names::HELD_SYNS)?,
                hosts: HostMaps::new(
                    typed(take(names::HOST_STATE)?, names::HOST_STATE)?,
                    typed(take(names::HOST_RELEASED)?, names::HOST_RELEASED)?,
                ),
            },
            config: typed(take(names::CONFIG)?, names::CONFIG)?,
            ifaces: typed(take(names::IFACES)?, names::IFACES)?,
            addr_class: typed(take(names::ADDR_CLASS)?, names::ADDR_CLASS)?,
            lan_sources: typed(take(names::LAN_SOURCES)?, names::LAN_SOURCES)?,
            counters: typed(take(names::COUNTERS)?, names::COUNTERS)?,
            events: Some(typed(take(names::EVENTS)?, names::EVENTS)?),
        })
    }

    /// Opens the maps of the gateway running in this network namespace.
    pub fn open(source: MapSource<'_>) -> Result<Self, MapsError> {
        Ok(Self {
            nat: NatMaps {
                fwd: typed(source.open(names::NAT_FWD)?, names::NAT_FWD)?,
                rev: typed(source.open(names::NAT_REV)?, names::NAT_REV)?,
                sessions: typed(source.open(names::NAT_SESSIONS)?, names::NAT_SESSIONS)?,
                held_syns: typed(source.open(names::HELD_SYNS)?, names::HELD_SYNS)?,
                hosts: HostMaps::new(
                    typed(source.open(names::HOST_STATE)?, names::HOST_STATE)?,
                    typed(source.open(names::HOST_RELEASED)?, names::HOST_RELEASED)?,
                ),
            },
            config: typed(source.open(names::CONFIG)?, names::CONFIG)?,
            ifaces: typed(source.open(names::IFACES)?, names::IFACES)?,
            addr_class: typed(source.open(names::ADDR_CLASS)?, names::ADDR_CLASS)?,
            lan_sources: typed(source.open(names::LAN_SOURCES)?, names::LAN_SOURCES)?,
            counters: typed(source.open(names::COUNTERS)?, names::COUNTERS)?,
            events: None,
        })
    }

    /// The maps that are pinned (and listed by id in the state file).
    fn data(&self) -> [(&'static str, &MapData); 11] {
        [
            (names::NAT_FWD, self.nat.fwd.map()),
            (names::NAT_REV, self.nat.rev.map()),
            (names::NAT_SESSIONS, self.nat.sessions.map()),
            (names::HELD_SYNS, self.nat.held_syns.map()),
            (names::CONFIG, self.config.map()),
            (names::IFACES, self.ifaces.map()),
            (names::ADDR_CLASS, self.addr_class.map()),
            (names::LAN_SOURCES, self.lan_sources.map()),
            (names::COUNTERS, self.counters.map()),
            (names::HOST_STATE, self.nat.hosts.state.map()),
            (names::HOST_RELEASED, self.nat.hosts.released.map()),
        ]
    }

    /// Kernel ids of the maps, for the state file.
    pub fn ids(&self) -> Result<BTreeMap<String, u32>, MapsError> {
        self.data()
            .into_iter()
            .map(|(name, data)| {
                let info = data.info().map_err(map_err(name))?;
                Ok((name.to_owned(), info.id()))
            })
            .collect()
    }

    /// Capacity of `NAT_FWD` as created.
    pub fn max_mappings(&self) -> Result<u32, MapsError> {
        let info = self.nat.fwd.map().info().map_err(map_err(names::NAT_FWD))?;
        Ok(info.max_entries())
    }

    /// Writes `CONFIG[0]`.
    pub fn write_config(&mut self, config: &Config) -> Result<(), MapsError> {
        self.config
            .set(0, config, 0)
            .map_err(map_err(names::CONFIG))
    }

    /// Sets the facts of interface `ifindex`.
    pub fn set_iface(&mut self, ifindex: u32, iface: IfaceConfig) -> Result<(), MapsError> {
        self.ifaces
            .insert(ifindex, iface, 0)
            .map_err(map_err(names::IFACES))
    }

    /// The facts of interface `ifindex`, if set.
    pub fn iface(&self, ifindex: u32) -> Result<Option<IfaceConfig>, MapsError> {
        get(&self.ifaces, &ifindex, names::IFACES)
    }

    /// Forgets interface `ifindex`.
    pub fn remove_iface(&mut self, ifindex: u32) -> Result<bool, MapsError> {
        remove(&mut self.ifaces, &ifindex, names::IFACES)
    }

    /// Removes from `IFACES` every interface but `keep` (entries of a previous
    /// natgw whose maps were adopted).
    ///
    /// # Errors
    /// When the map cannot be read or written.
    pub fn retain_ifaces(&mut self, keep: &[u32]) -> Result<(), MapsError> {
        let stale: Vec<u32> = self
            .ifaces
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(names::IFACES))?
            .into_iter()
            .filter(|k| !keep.contains(k))
            .collect();
        for k in stale {
            remove(&mut self.ifaces, &k, names::IFACES)?;
        }
        Ok(())
    }

    /// Removes the entries of `ADDR_CLASS` and `LAN_SOURCES` that `plan` lacks
    /// (a previous natgw's, whose maps were adopted).
    ///
    /// # Errors
    /// When a map cannot be read or written.
    pub fn prune_address_plan(&mut self, plan: &AddressPlan) -> Result<(), MapsError> {
        let want: Vec<(u32, u32)> = plan
            .classes()
            .keys()
            .map(|p| {
                let k = class_key(p);
                (k.prefix_len(), k.data())
            })
            .collect();
        let stale: Vec<LpmKey<u32>> = self
            .addr_class
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(names::ADDR_CLASS))?
            .into_iter()
            .filter(|k| !want.contains(&(k.prefix_len(), k.data())))
            .collect();
        for k in stale {
            match self.addr_class.remove(&k) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_err(names::ADDR_CLASS)(e)),
            }
        }
        let want: Vec<(u32, LanSourceKey)> = plan
            .lan_sources()
            .keys()
            .map(|(ifindex, p)| {
                let k = lan_source_key(*ifindex, p);
                (k.prefix_len(), k.data())
            })
            .collect();
        let stale: Vec<LpmKey<LanSourceKey>> = self
            .lan_sources
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(names::LAN_SOURCES))?
            .into_iter()
            .filter(|k| !want.contains(&(k.prefix_len(), k.data())))
            .collect();
        for k in stale {
            match self.lan_sources.remove(&k) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_err(names::LAN_SOURCES)(e)),
            }
        }
        Ok(())
    }

    /// Moves `ADDR_CLASS` and `LAN_SOURCES` from plan `old` to plan `new`: new and
    /// changed entries first, then the ones `new` no longer has, so no address is
    /// ever unclassified in between.
    pub fn apply_address_plan(
        &mut self,
        old: &AddressPlan,
        new: &AddressPlan,
    ) -> Result<(), MapsError> {
        for (p, bits) in new.classes() {
            if old.classes().get(p) != Some(bits) {
                self.addr_class
                    .insert(&class_key(p), *bits, 0)
                    .map_err(map_err(names::ADDR_CLASS))?;
            }
        }
        for ((ifindex, p), verdict) in new.lan_sources() {
            if old.lan_sources().get(&(*ifindex, *p)) != Some(verdict) {
                self.lan_sources
                    .insert(&lan_source_key(*ifindex, p), *verdict, 0)
                    .map_err(map_err(names::LAN_SOURCES))?;
            }
        }
        for p in old
            .classes()
            .keys()
            .filter(|p| !new.classes().contains_key(p))
        {
            match self.addr_class.remove(&class_key(p)) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_err(names::ADDR_CLASS)(e)),
            }
        }
        for (ifindex, p) in old
            .lan_sources()
            .keys()
            .filter(|k| !new.lan_sources().contains_key(k))
        {
            match self.lan_sources.remove(&lan_source_key(*ifindex, p)) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_err(names::LAN_SOURCES)(e)),
            }
        }
        Ok(())
    }

    /// Every counter summed over CPUs, in index order.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, MapsError> {
        sum_counters(&self.counters)
    }

    /// Number of entries in `NAT_FWD`.
    pub fn mapping_count(&self) -> Result<usize, MapsError> {
        Ok(self.nat.fwd_entries()?.len())
    }

    /// Freed ports held from other hosts at `now_ns` under a hold-down of `hold_ns`
    /// (RFC 6888 REQ-8).
    pub fn held_ports(&self, now_ns: u64, hold_ns: u64) -> Result<usize, MapsError> {
        Ok(self
            .nat
            .rev_entries()?
            .iter()
            .filter(|(_, r)| r.is_held() && !r.hold_expired(now_ns, hold_ns))
            .count())
    }
}

/// Every counter of `map` summed over CPUs, in index order.
fn sum_counters(map: &PerCpuArray<MapData, u64>) -> Result<Vec<(Counter, u64)>, MapsError> {
    Counter::ALL
        .iter()
        .map(|c| {
            let per_cpu = map.get(&(*c as u32), 0).map_err(map_err(names::COUNTERS))?;
            Ok((*c, per_cpu.iter().copied().fold(0u64, u64::wrapping_add)))
        })
        .collect()
}

/// The verdict counters alone, through a handle of their own: what the metrics
/// endpoint reads on the blocking pool, apart from the daemon's handles.
pub struct CounterMap(PerCpuArray<MapData, u64>);

impl CounterMap {
    /// Opens `COUNTERS` of the gateway at `source` (its pin, else its id).
    ///
    /// # Errors
    /// When the map cannot be opened or is not the per-CPU array it should be.
    pub fn open(source: MapSource<'_>) -> Result<Self, MapsError> {
        Ok(Self(typed(source.open(names::COUNTERS)?, names::COUNTERS)?))
    }

    /// Every counter summed over CPUs, in index order.
    ///
    /// # Errors
    /// When a lookup fails.
    pub fn read(&self) -> Result<Vec<(Counter, u64)>, MapsError> {
        sum_counters(&self.0)
    }
}

/// Fills the external address pool the data path picks from (RFC 4787 REQ-2):
/// `EXT_ADDRS[i]` = `pool[i]` and `EXT_SET[pool[i]]` = `i`. Both maps stay in the
/// loaded object (not pinned: the state file lists the pool for `natgw status`).
/// Written before `CONFIG`, whose `ext_count` makes the data path use them.
///
/// # Errors
/// When a map is missing or an update fails, or the pool holds more than
/// `MAX_EXTERNAL_ADDRS` addresses.
pub fn write_external_pool(ebpf: &mut Ebpf, pool: &[Ipv4Addr]) -> Result<(), MapsError> {
    let mut addrs: Array<&mut MapData, u32> = typed_mut(ebpf, names::EXT_ADDRS)?;
    for (i, addr) in pool.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        addrs
            .set(index, natgw_common::addr_be(addr.octets()), 0)
            .map_err(map_err(names::EXT_ADDRS))?;
    }
    let mut set: HashMap<&mut MapData, u32, u32> = typed_mut(ebpf, names::EXT_SET)?;
    let members: Vec<u32> = pool
        .iter()
        .map(|a| natgw_common::addr_be(a.octets()))
        .collect();
    for (i, addr) in members.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        set.insert(*addr, index, 0)
            .map_err(map_err(names::EXT_SET))?;
    }
    // Addresses no longer in the pool (an earlier address of the WAN, or a previous
    // natgw's pool) stop counting as external.
    let stale: Vec<u32> = set
        .keys()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(names::EXT_SET))?
        .into_iter()
        .filter(|a| !members.contains(a))
        .collect();
    for a in stale {
        match set.remove(&a) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(map_err(names::EXT_SET)(e)),
        }
    }
    Ok(())
}

/// `FRAG_STASH` and `FRAGS_IN` as the fragment resender sees them (RFC 4787 REQ-14).
pub trait FragmentTables {
    /// The keys of every stashed fragment (a snapshot).
    fn stashed_keys(&self) -> Result<Vec<StashKey>, MapsError>;
    /// One stashed fragment.
    fn stashed(&self, key: &StashKey) -> Result<Option<StashedFragment>, MapsError>;
    /// Deletes a stashed fragment; `false` when it was already gone.
    fn remove_stashed(&mut self, key: &StashKey) -> Result<bool, MapsError>;
    /// Where the first fragment of `datagram` went, once it has been translated.
    fn first_fragment(&self, datagram: &FragKey) -> Result<Option<FragValue>, MapsError>;
}

/// `FRAG_STASH` and `FRAGS_IN`; only in the daemon, taken from the loaded object (not
/// pinned) and moved to the task that resends stashed fragments.
#[derive(Debug)]
pub struct FragmentMaps {
    /// Later fragments that came before their first fragment.
    pub stash: HashMap<MapData, StashKey, StashedFragment>,
    /// Datagrams whose first fragment was translated.
    pub first: HashMap<MapData, FragKey, FragValue>,
}

/// Takes `MAPPING_EVENTS`, the ring buffer of mappings the data path created, out
/// of a loaded object (for the daemon's reader; it is not pinned).
pub fn take_mapping_events(ebpf: &mut Ebpf) -> Result<RingBuf<MapData>, MapsError> {
    let map = ebpf
        .take_map(names::MAPPING_EVENTS)
        .ok_or(MapsError::Missing(names::MAPPING_EVENTS))?;
    typed(map, names::MAPPING_EVENTS)
}

impl FragmentMaps {
    /// Takes both maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(MapsError::Missing(name));
        Ok(Self {
            stash: typed(take(names::FRAG_STASH)?, names::FRAG_STASH)?,
            first: typed(take(names::FRAGS_IN)?, names::FRAGS_IN)?,
        })
    }
}

impl FragmentTables for FragmentMaps {
    fn stashed_keys(&self) -> Result<Vec<StashKey>, MapsError> {
        // Bounded like `snapshot`: a concurrent delete can restart the walk.
        let limit = (natgw_common::maps::MAX_STASHED_FRAGMENTS as usize).saturating_mul(4);
        let mut keys = Vec::new();
        for (i, key) in self.stash.keys().enumerate() {
            if i >= limit {
                break;
            }
            let key = key.map_err(map_err(names::FRAG_STASH))?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    fn stashed(&self, key: &StashKey) -> Result<Option<StashedFragment>, MapsError> {
        get(&self.stash, key, names::FRAG_STASH)
    }

    fn remove_stashed(&mut self, key: &StashKey) -> Result<bool, MapsError> {
        remove(&mut self.stash, key, names::FRAG_STASH)
    }

    fn first_fragment(&self, datagram: &FragKey) -> Result<Option<FragValue>, MapsError> {
        get(&self.first, datagram, names::FRAGS_IN)
    }
}

/// A typed view of map `name` left in the loaded object.
fn typed_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, MapsError>
where
    T: TryFrom<&'a mut Map, Error = MapError>,
{
    let map = ebpf.map_mut(name).ok_or(MapsError::Missing(name))?;
    T::try_from(map).map_err(map_err(name))
}

/// `ADDR_CLASS` key of a prefix: its network address as wire octets.
#[must_use]
pub fn class_key(p: &Ipv4Prefix) -> LpmKey<u32> {
    LpmKey::new(
        u32::from(p.len()),
        natgw_common::addr_be(p.network().octets()),
    )
}

/// `LAN_SOURCES` key of prefix `p` on interface `ifindex`.
#[must_use]
pub fn lan_source_key(ifindex: u32, p: &Ipv4Prefix) -> LpmKey<LanSourceKey> {
    LpmKey::new(
        LAN_SOURCE_FIXED_BITS + u32::from(p.len()),
        LanSourceKey::new(ifindex, natgw_common::addr_be(p.network().octets())),
    )
}

/// An address held in a `_be` map field.
#[must_use]
pub const fn ipv4(addr_be: u32) -> Ipv4Addr {
    let o = natgw_common::addr_octets(addr_be);
    Ipv4Addr::new(o[0], o[1], o[2], o[3])
}

/// A port held in a `_be` map field.
#[must_use]
pub const fn port(port_be: u16) -> u16 {
    u16::from_be(port_be)
}

/// The reverse-table key of a forward entry: its external endpoint.
#[must_use]
pub const fn rev_key_of(key: &FwdKey, m: &Mapping) -> RevKey {
    RevKey::new(m.ext_addr_be, m.ext_port_be, key.proto)
}

/// The forward-table key a reverse entry points back to: its internal endpoint.
#[must_use]
pub const fn fwd_key_of(key: &RevKey, r: &RevValue) -> FwdKey {
    FwdKey::new(r.int_addr_be, r.int_port_be, key.proto)
}

/// The reverse-table key of the mapping a session belongs to: its external endpoint.
#[must_use]
pub const fn session_rev_key(key: &SessionKey) -> RevKey {
    RevKey::new(key.ext_addr_be, key.ext_port_be, key.proto)
}

/// Whether `r` is the reverse entry of the mapping (`fk`, `m`) — same endpoints and
/// the same `created_ns`, so not a stale claim or one of a newer mapping.
#[must_use]
pub const fn rev_matches(fk: &FwdKey, m: &Mapping, r: &RevValue) -> bool {
    r.created_ns == m.created_ns && r.int_addr_be == fk.addr_be && r.int_port_be == fk.port_be
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_keys_hold_the_network_in_wire_order() {
        let k = class_key(&"10.0.1.77/24".parse().unwrap());
        assert_eq!(k.prefix_len(), 24);
        assert_eq!(k.data().to_ne_bytes(), [10, 0, 1, 0]);
        let k = lan_source_key(7, &"10.0.1.77/24".parse().unwrap());
        assert_eq!(
            k.prefix_len(),
            32 + 24,
            "the interface always matches whole"
        );
        assert_eq!(k.data().ifindex, 7);
        assert_eq!(k.data().addr_be.to_ne_bytes(), [10, 0, 1, 0]);
    }

    #[test]
    fn be_fields_convert_to_addresses_and_ports() {
        let a = natgw_common::addr_be([192, 0, 2, 1]);
        assert_eq!(ipv4(a), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(port(40000u16.to_be()), 40000);
    }

    #[test]
    fn keys_point_at_each_other() {
        let fk = FwdKey::new(natgw_common::addr_be([10, 0, 1, 2]), 40000u16.to_be(), 17);
        let m = Mapping {
            ext_addr_be: natgw_common::addr_be([192, 0, 2, 1]),
            ext_port_be: 40002u16.to_be(),
            created_ns: 5,
            ..Mapping::default()
        };
        let rk = rev_key_of(&fk, &m);
        let r = RevValue {
            int_addr_be: fk.addr_be,
            int_port_be: fk.port_be,
            created_ns: 5,
            ..RevValue::default()
        };
        assert_eq!(fwd_key_of(&rk, &r), fk);
        assert!(rev_matches(&fk, &m, &r));
        assert!(!rev_matches(&fk, &m, &RevValue { created_ns: 6, ..r }));
    }
}
