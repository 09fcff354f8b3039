//! One in-memory stand-in for the BPF maps behind the table traits
//! ([`NatTables`], [`NatWrites`], [`HeldSynTable`], [`PcpFilterTable`]), for the unit
//! tests of this layer. It keeps the kernel maps' rules — a claim (`BPF_NOEXIST`)
//! fails on a taken key, a replace (`BPF_EXIST`) on a missing one — and can play the
//! data path acting between the controller's snapshot and its re-read of one entry.

use std::collections::HashMap;

use natgw_common::limits::{in_use, proto_slot, HostReleased};
use natgw_common::maps::{HeldSyn, PcpFilterKey, Session, SessionKey};
use natgw_common::{FwdKey, Mapping, RevKey, RevValue};

use crate::datapath::maps::{HeldSynTable, MapsError, NatTables, NatWrites, PcpFilterTable};

/// The maps, as plain hash maps.
#[derive(Debug, Default)]
pub struct MemoryMaps {
    /// `NAT_FWD`.
    pub fwd: HashMap<FwdKey, Mapping>,
    /// `NAT_REV`.
    pub rev: HashMap<RevKey, RevValue>,
    /// `NAT_SESSIONS`.
    pub sessions: HashMap<SessionKey, Session>,
    /// `HELD_SYNS`.
    pub held_syns: HashMap<SessionKey, HeldSyn>,
    /// `PCP_FILTERS`: (key, prefix length) → remote port in wire order.
    pub pcp_filters: HashMap<(PcpFilterKey, u32), u32>,
    /// A packet racing the collector: the next single read of this forward entry sees
    /// `last_out_ns` set to this time.
    pub fwd_race: Option<(FwdKey, u64)>,
    /// The same for a session.
    pub session_race: Option<(SessionKey, u64)>,
    /// A held SYN the data path forgot (an outbound SYN answered it) after the
    /// snapshot: single reads no longer find it.
    pub answered_syn: Option<SessionKey>,
    /// Whether freed ports become holds (a hold-down is configured).
    pub holding: bool,
    /// Most mappings per host and protocol (0: no limit).
    pub ports_per_host: u32,
    /// `HOST_STATE`'s counts: mappings the data path created, by host and protocol
    /// (what a test says traffic did).
    pub created: HashMap<(u32, u8), u64>,
    /// `HOST_RELEASED`, kept by `insert_fwd` and `remove_fwd` as the real maps keep
    /// it.
    pub released: HashMap<u32, HostReleased>,
}

impl MemoryMaps {
    /// Mappings of `proto` host `host_be` holds by the books.
    #[must_use]
    pub fn in_use(&self, host_be: u32, proto: u8) -> u64 {
        let created = self.created.get(&(host_be, proto)).copied().unwrap_or(0);
        let released = self
            .released
            .get(&host_be)
            .map_or(0, |r| r.released[proto_slot(proto)]);
        in_use(created, released)
    }

    fn account(&mut self, key: &FwdKey, delta: i32) {
        let r = self.released.entry(key.addr_be).or_default();
        *r = r.add(key.proto, delta);
    }
}

fn all<K: Copy, V: Copy>(map: &HashMap<K, V>) -> Vec<(K, V)> {
    map.iter().map(|(k, v)| (*k, *v)).collect()
}

impl NatTables for MemoryMaps {
    fn fwd_entries(&self) -> Result<Vec<(FwdKey, Mapping)>, MapsError> {
        Ok(all(&self.fwd))
    }
    fn rev_entries(&self) -> Result<Vec<(RevKey, RevValue)>, MapsError> {
        Ok(all(&self.rev))
    }
    fn fwd(&self, key: &FwdKey) -> Result<Option<Mapping>, MapsError> {
        let mut m = self.fwd.get(key).copied();
        if let (Some(m), Some((k, t))) = (m.as_mut(), self.fwd_race) {
            if k == *key {
                m.last_out_ns = t;
            }
        }
        Ok(m)
    }
    fn rev(&self, key: &RevKey) -> Result<Option<RevValue>, MapsError> {
        Ok(self.rev.get(key).copied())
    }
    fn remove_fwd(&mut self, key: &FwdKey) -> Result<bool, MapsError> {
        let removed = self.fwd.remove(key).is_some();
        if removed {
            self.account(key, 1);
        }
        Ok(removed)
    }
    fn free_port(
        &mut self,
        key: &RevKey,
        int_addr_be: u32,
        now_ns: u64,
    ) -> Result<bool, MapsError> {
        if self.holding {
            return Ok(self
                .rev
                .get_mut(key)
                .map(|r| *r = RevValue::held(int_addr_be, now_ns))
                .is_some());
        }
        Ok(self.rev.remove(key).is_some())
    }
    fn remove_rev(&mut self, key: &RevKey) -> Result<bool, MapsError> {
        Ok(self.rev.remove(key).is_some())
    }
    fn session_entries(&self) -> Result<Vec<(SessionKey, Session)>, MapsError> {
        Ok(all(&self.sessions))
    }
    fn session(&self, key: &SessionKey) -> Result<Option<Session>, MapsError> {
        let mut s = self.sessions.get(key).copied();
        if let (Some(s), Some((k, t))) = (s.as_mut(), self.session_race) {
            if k == *key {
                s.last_out_ns = t;
            }
        }
        Ok(s)
    }
    fn remove_session(&mut self, key: &SessionKey) -> Result<bool, MapsError> {
        Ok(self.sessions.remove(key).is_some())
    }
}

impl NatWrites for MemoryMaps {
    fn claim_rev(&mut self, key: &RevKey, value: &RevValue) -> Result<bool, MapsError> {
        if self.rev.contains_key(key) {
            return Ok(false);
        }
        self.rev.insert(*key, *value);
        Ok(true)
    }
    fn insert_fwd(&mut self, key: &FwdKey, value: &Mapping) -> Result<bool, MapsError> {
        if self.fwd.contains_key(key) {
            return Ok(false);
        }
        self.fwd.insert(*key, *value);
        self.account(key, -1);
        Ok(true)
    }
    fn replace_fwd(&mut self, key: &FwdKey, value: &Mapping) -> Result<bool, MapsError> {
        Ok(self.fwd.get_mut(key).map(|v| *v = *value).is_some())
    }
    fn replace_rev(&mut self, key: &RevKey, value: &RevValue) -> Result<bool, MapsError> {
        Ok(self.rev.get_mut(key).map(|v| *v = *value).is_some())
    }
    fn put_session(&mut self, key: &SessionKey, value: &Session) -> Result<(), MapsError> {
        self.sessions.insert(*key, *value);
        Ok(())
    }
    fn host_at_limit(&self, int_addr_be: u32, proto: u8) -> Result<bool, MapsError> {
        Ok(self.ports_per_host != 0
            && self.in_use(int_addr_be, proto) >= u64::from(self.ports_per_host))
    }
}

impl HeldSynTable for MemoryMaps {
    fn held_syn_entries(&self) -> Result<Vec<(SessionKey, HeldSyn)>, MapsError> {
        Ok(all(&self.held_syns))
    }
    fn held_syn(&self, key: &SessionKey) -> Result<Option<HeldSyn>, MapsError> {
        if self.answered_syn == Some(*key) {
            return Ok(None);
        }
        Ok(self.held_syns.get(key).copied())
    }
    fn remove_held_syn(&mut self, key: &SessionKey) -> Result<bool, MapsError> {
        Ok(self.held_syns.remove(key).is_some())
    }
}

impl PcpFilterTable for MemoryMaps {
    fn put_pcp_filter(
        &mut self,
        key: &PcpFilterKey,
        prefix_len: u32,
        port_be: u32,
    ) -> Result<(), MapsError> {
        self.pcp_filters.insert((*key, prefix_len), port_be);
        Ok(())
    }
    fn remove_pcp_filter(
        &mut self,
        key: &PcpFilterKey,
        prefix_len: u32,
    ) -> Result<bool, MapsError> {
        Ok(self.pcp_filters.remove(&(*key, prefix_len)).is_some())
    }
}
