//! The standby's side of explicit mappings under replication: records the active
//! replicated are taken into this table (and their PCP filters into `PCP_FILTERS`)
//! once their `NAT_FWD`/`NAT_REV` entries are installed, and forgotten when the
//! active ends them. The standby never creates or ends them on its own.

use super::*;

impl<F: PcpFilterTable> ExplicitMappings<F> {
    /// Takes the explicit mapping `entry` the active holds (its `created_ns` is
    /// ignored: the standby's own forward entry for it gives the identity). `false`
    /// when the maps hold no forward entry of that internal endpoint to that
    /// external one, or it is a static forward (those come from the configuration).
    pub fn replicated<N: NatTables>(
        &mut self,
        nat: &N,
        entry: &ExplicitEntry,
        now: Instant,
        now_ns: u64,
    ) -> bool {
        let Some(protocol) = protocol_named(&entry.protocol) else {
            return false;
        };
        let Some(proto) = ip_proto(protocol) else {
            return false;
        };
        let Ok(Some(m)) = nat.fwd(&fwd_key(proto, entry.internal)) else {
            return false;
        };
        if external_of(&m) != entry.external {
            return false;
        }
        let key = MappingKey {
            internal: *entry.internal.ip(),
            protocol,
            internal_port: entry.internal.port(),
        };
        if self
            .records
            .get(&key)
            .is_some_and(|r| r.holder == Holder::Static)
        {
            return false;
        }
        self.forget_replicated(protocol, entry.internal);
        let filters: Vec<Filter> = entry
            .filters
            .iter()
            .filter_map(|f| parse_filter(f))
            .collect();
        if self.add_filters(proto, entry.external, &filters).is_err() {
            return false;
        }
        let entry = ExplicitEntry {
            created_ns: m.created_ns,
            ..entry.clone()
        };
        self.restore(nat, std::slice::from_ref(&entry), now, now_ns) == 1
    }

    /// Forgets the replicated record of `internal` (and its PCP filters) without
    /// touching its `NAT_FWD`/`NAT_REV` entries; `false` when there was none.
    /// Static forwards stay.
    pub fn forget_replicated(&mut self, protocol: Protocol, internal: SocketAddrV4) -> bool {
        let key = MappingKey {
            internal: *internal.ip(),
            protocol,
            internal_port: internal.port(),
        };
        match self.records.get(&key) {
            Some(r) if r.holder != Holder::Static => {}
            _ => return false,
        }
        let Some(record) = self.records.remove(&key) else {
            return false;
        };
        self.generation = self.generation.wrapping_add(1);
        self.remove_filters(record.proto(), record.external, &record.filters);
        true
    }
}

/// `udp` or `tcp`.
#[must_use]
pub fn protocol_named(name: &str) -> Option<Protocol> {
    match name {
        "udp" => Some(Protocol::Udp),
        "tcp" => Some(Protocol::Tcp),
        _ => None,
    }
}
