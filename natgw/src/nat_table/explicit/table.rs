//! The [`MappingTable`] the PCP engine drives: a borrow of the explicit mappings
//! together with the NAT maps for the length of one request.

use super::*;

/// [`ExplicitMappings`] over the NAT tables at one moment: what the PCP engine
/// drives ([`MappingTable`]).
pub struct Table<'a, F, N> {
    pub(super) explicit: &'a mut ExplicitMappings<F>,
    pub(super) nat: &'a mut N,
    pub(super) now: Instant,
    pub(super) now_ns: u64,
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

    fn generation(&self) -> Option<u64> {
        Some(self.explicit.generation)
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
        if let Some(ended) = self
            .explicit
            .end(self.nat, key, self.now_ns, MappingEventKind::Delete)
        {
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
