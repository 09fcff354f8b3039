//! PCP FILTER options (RFC 6887 §13.3): the remote prefixes a mapping lets in, held
//! in `PCP_FILTERS`, and the reverse entry's filter mode that makes the data path
//! look there.

use super::*;

/// The `PCP_FILTERS` key and prefix length of a filter of mapping `external`.
pub(super) fn filter_key(proto: u8, external: SocketAddrV4, f: &Filter) -> (PcpFilterKey, u32) {
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
pub(super) fn check_filters(filters: &[Filter]) -> Result<(), TableError> {
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

pub(super) const fn filter_mode(filters: &[Filter]) -> FilterMode {
    if filters.is_empty() {
        FilterMode::EndpointIndependent
    } else {
        FilterMode::PcpFilter
    }
}

impl<F: PcpFilterTable> ExplicitMappings<F> {
    /// Adds `PCP_FILTERS` entries; on failure removes those it added.
    pub(super) fn add_filters(
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

    pub(super) fn remove_filters(&mut self, proto: u8, external: SocketAddrV4, filters: &[Filter]) {
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
    pub(super) fn set_filter_mode<N: NatTables + NatWrites>(
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
    pub(super) fn change_filters<N: NatTables + NatWrites>(
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
}
