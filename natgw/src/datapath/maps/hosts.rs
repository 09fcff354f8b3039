//! The controller's side of the per-host rules (RFC 6888, see
//! [`natgw_common::limits`]): `HOST_RELEASED`, which only the controller writes and
//! so keeps a copy of in memory; the count of port holds in `NAT_REV`; and the
//! pruning of `HOST_STATE` (idle hosts).

use std::collections::HashMap as StdHashMap;

use aya::maps::{HashMap, MapData};
use natgw_common::limits::{in_use, proto_slot, HostReleased, HostState, PROTO_SLOTS};
use natgw_common::maps::names;
use natgw_common::NS_PER_SEC;

use super::{get, map_err, remove, snapshot, MapsError};

/// How long a host must have created no mapping before its `HOST_STATE` entry may
/// be deleted (with nothing in use): far longer than a packet takes from the
/// entry's lookup to its atomic add, so deleting it races with no creation.
pub const HOST_IDLE_NS: u64 = 10 * NS_PER_SEC;

/// What the controller enforces itself and needs for its records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostRules {
    /// Most mappings per host and protocol; 0: no limit (and no accounting).
    pub ports_per_host: u32,
    /// Hold-down of freed ports in ns; 0: none.
    pub hold_ns: u64,
    /// Most ports held at once.
    pub max_held: u32,
}

/// `HOST_STATE` and `HOST_RELEASED`, and what the controller knows of the holds.
#[derive(Debug)]
pub struct HostMaps {
    /// Internal host -> what the data path counted (read, and pruned, here).
    pub state: HashMap<MapData, u32, HostState>,
    /// Internal host -> mappings the controller released (written only here).
    pub released: HashMap<MapData, u32, HostReleased>,
    /// The controller's copy of `HOST_RELEASED`.
    shadow: StdHashMap<u32, HostReleased>,
    rules: HostRules,
    /// Holds in `NAT_REV` as of the last count, plus those made since.
    held: usize,
    /// Ports freed without a hold because `max_held` holds were in force.
    unheld: u64,
}

impl HostMaps {
    /// The maps, with no rules yet ([`HostMaps::set_rules`]).
    pub fn new(
        state: HashMap<MapData, u32, HostState>,
        released: HashMap<MapData, u32, HostReleased>,
    ) -> Self {
        Self {
            state,
            released,
            shadow: StdHashMap::new(),
            rules: HostRules::default(),
            held: 0,
            unheld: 0,
        }
    }

    /// Sets what the controller enforces (the data path reads the same from
    /// `CONFIG`).
    pub fn set_rules(&mut self, rules: HostRules) {
        self.rules = rules;
    }

    /// Ports freed without a hold because `max_held` holds were in force.
    #[must_use]
    pub const fn unheld(&self) -> u64 {
        self.unheld
    }

    /// Whether a freed port may become a hold now; counts it if so, or counts it
    /// as freed without one when the holds are at their most.
    pub fn take_hold(&mut self) -> bool {
        if self.rules.hold_ns == 0 {
            return false;
        }
        if self.held >= self.rules.max_held as usize {
            if self.unheld == 0 {
                log::warn!(
                    "ports.hold_full max={}: freed ports go without a hold-down (RFC 6888 \
                     REQ-8) until older holds run out; raise --max-held-ports",
                    self.rules.max_held
                );
            }
            self.unheld += 1;
            return false;
        }
        self.held += 1;
        true
    }

    /// Sets the count of holds from a snapshot of `NAT_REV`.
    pub fn set_held(&mut self, held: usize) {
        self.held = held;
    }

    /// Records that the controller released (`delta` > 0: deleted) or created
    /// (`delta` < 0) mappings of `proto` for `host_be`.
    pub fn account(&mut self, host_be: u32, proto: u8, delta: i32) -> Result<(), MapsError> {
        if self.rules.ports_per_host == 0 {
            return Ok(());
        }
        let next = self
            .shadow
            .get(&host_be)
            .copied()
            .unwrap_or_default()
            .add(proto, delta);
        self.released
            .insert(host_be, next, 0)
            .map_err(map_err(names::HOST_RELEASED))?;
        self.shadow.insert(host_be, next);
        Ok(())
    }

    /// Whether `host_be` holds as many mappings of `proto` as it may.
    pub fn at_limit(&self, host_be: u32, proto: u8) -> Result<bool, MapsError> {
        let limit = u64::from(self.rules.ports_per_host);
        if limit == 0 {
            return Ok(false);
        }
        let slot = proto_slot(proto);
        let created = get(&self.state, &host_be, names::HOST_STATE)?.map_or(0, |s| s.created[slot]);
        let released = self.shadow.get(&host_be).map_or(0, |r| r.released[slot]);
        Ok(in_use(created, released) >= limit)
    }

    /// Forgets the records of hosts with nothing in use that have created no
    /// mapping for [`HOST_IDLE_NS`]; returns how many.
    pub fn prune(&mut self, now_ns: u64) -> Result<usize, MapsError> {
        let mut hosts = 0;
        for (host, st) in snapshot(&self.state, names::HOST_STATE)? {
            let released = self.shadow.get(&host).copied().unwrap_or_default();
            // Without a port limit nothing is accounted, and only the bucket counts.
            let nothing_in_use = self.rules.ports_per_host == 0
                || (0..PROTO_SLOTS).all(|i| in_use(st.created[i], released.released[i]) == 0);
            let idle = nothing_in_use && st.bucket_ns.saturating_add(HOST_IDLE_NS) <= now_ns;
            if !idle {
                continue;
            }
            // HOST_STATE first: a mapping created in between finds the old
            // `released`, which only makes it look free (see `in_use`).
            remove(&mut self.state, &host, names::HOST_STATE)?;
            if self.shadow.remove(&host).is_some() {
                remove(&mut self.released, &host, names::HOST_RELEASED)?;
            }
            hosts += 1;
        }
        // Hosts the data path has no record of (explicit mappings only, or records
        // pruned above) whose books balance.
        let balanced: Vec<u32> = self
            .shadow
            .iter()
            .filter(|(_, r)| r.is_zero())
            .map(|(h, _)| *h)
            .collect();
        for host in balanced {
            if get(&self.state, &host, names::HOST_STATE)?.is_none() {
                self.shadow.remove(&host);
                remove(&mut self.released, &host, names::HOST_RELEASED)?;
            }
        }
        Ok(hosts)
    }
}
