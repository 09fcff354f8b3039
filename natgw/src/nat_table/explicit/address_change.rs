//! A new external address pool: explicit mappings move to it, keeping their ports
//! where free.

use super::*;

impl<F: PcpFilterTable> ExplicitMappings<F> {
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
                    self.generation = self.generation.wrapping_add(1);
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
                    self.end(nat, &key, now_ns, MappingEventKind::Delete);
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

    pub(super) fn move_to<N: NatTables + NatWrites>(
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
            prefer_failure: record.holder.is_static(),
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
}
