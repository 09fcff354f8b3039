//! Creating and taking over mappings: claiming an external port as the data path
//! does (`BPF_NOEXIST` into `NAT_REV` first), adopting the traffic mapping of an
//! internal endpoint that already has one (endpoint-independent mapping, RFC 4787
//! REQ-1), and the MAP install the engine asks for.

use super::*;

/// Takes port `rk` for `rev_value`'s host if the port is held by a hold of that
/// host's own: deletes the hold, then claims the port as any other.
fn reclaim_own_hold<N: NatTables + NatWrites>(
    nat: &mut N,
    rk: &RevKey,
    rev_value: &RevValue,
) -> Result<bool, TableError> {
    let held = nat
        .rev(rk)
        .map_err(|e| map_failure("read NAT_REV", &e))?
        .is_some_and(|r| r.is_held() && r.int_addr_be == rev_value.int_addr_be);
    if !held {
        return Ok(false);
    }
    nat.remove_rev(rk)
        .map_err(|e| map_failure("delete a hold in NAT_REV", &e))?;
    nat.claim_rev(rk, rev_value)
        .map_err(|e| map_failure("claim NAT_REV", &e))
}

/// Refuses a new mapping for internal endpoint `fk` when its host already holds as
/// many ports of the protocol as it may (RFC 6888 REQ-4): explicit mappings count
/// like traffic ones. Static forwards, the operator's own, are not held to it.
pub(super) fn check_quota<N: NatWrites>(nat: &N, fk: &FwdKey) -> Result<(), TableError> {
    if nat
        .host_at_limit(fk.addr_be, fk.proto)
        .map_err(|e| map_failure("read HOST_STATE", &e))?
    {
        return Err(TableError::QuotaExceeded);
    }
    Ok(())
}

impl<F: PcpFilterTable> ExplicitMappings<F> {
    /// A pseudo-random start for port searches, so mappings do not pile up at the
    /// bottom of the range.
    pub(super) fn random(&self, salt: u64) -> u64 {
        self.hasher.hash_one(salt)
    }

    /// Claims a free external port for `request` on `address` in `NAT_REV`: the
    /// suggestion, else the internal port, else the first free one from a random
    /// place in the permitted spans. A candidate no socket of the gateway holds is
    /// claimed directly: a taken one fails the `BPF_NOEXIST` insert, which is cheaper
    /// than reading the whole table. A port freed within the hold-down is taken too,
    /// by its hold (RFC 6888 REQ-8), unless the hold is this host's own and the port
    /// is the suggested or the internal one: the host gets that back.
    pub(super) fn claim_port<N: NatTables + NatWrites>(
        &self,
        nat: &mut N,
        request: &NewMapping,
        address: Ipv4Addr,
        rev_value: &RevValue,
        now_ns: u64,
    ) -> Result<u16, TableError> {
        let proto = ip_proto(request.key.protocol).ok_or(TableError::NotAuthorized)?;
        // Block mode: only the part of the permitted ports in the host's block.
        let clipped: Vec<PortSpan>;
        let spans = if self.defaults.blocks.is_on() {
            let (_, block) = self
                .block_of(request.key.internal)
                .ok_or(TableError::NotAuthorized)?;
            clipped = request
                .ports
                .iter()
                .filter_map(|s| {
                    PortSpan::new(s.first().max(block.first()), s.last().min(block.last()))
                })
                .collect();
            &clipped
        } else {
            &request.ports
        };
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
        let own = |p: u16| Some(p) == suggested || p == request.key.internal_port;
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
            if own(p) && reclaim_own_hold(nat, &rk, rev_value)? {
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
    pub(super) fn create<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        request: &NewMapping,
        now_ns: u64,
    ) -> Result<(SocketAddrV4, u64), TableError> {
        let proto = ip_proto(request.key.protocol).ok_or(TableError::NotAuthorized)?;
        let address = self.address_or_refusal(request.key.internal)?;
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
            if !request.holder.is_static() {
                check_quota(nat, &fk)?;
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
            crate::nat_table::events::emit_mapping(
                natgw_common::maps::MappingEventKind::Create,
                &fk,
                &m,
                now_ns,
            );
            return Ok((external, now_ns));
        }
        Err(TableError::NoResources)
    }

    /// Takes over the existing mapping `m` of the requested internal endpoint;
    /// `None` when it vanished meanwhile.
    pub(super) fn adopt<N: NatTables + NatWrites>(
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
    pub(super) fn still_installed<N: NatTables>(
        nat: &N,
        record: &Record,
    ) -> Result<bool, TableError> {
        Ok(nat
            .fwd(&record.fwd_key())
            .map_err(|e| map_failure("read NAT_FWD", &e))?
            .is_some_and(|m| m.created_ns == record.created_ns))
    }

    /// Creates or renews the explicit mapping of an [`Install`] request.
    pub(super) fn install<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        request: &Install,
        now_ns: u64,
    ) -> Result<SocketAddrV4, TableError> {
        let holder = Holder::from_engine(request.origin);
        let lifetime_ns = secs_ns(request.lifetime);
        let expires_ns = now_ns.saturating_add(lifetime_ns);
        if let Some(record) = self.records.get(&request.key).cloned() {
            if record.holder.is_static() {
                return Err(TableError::NotAuthorized);
            }
            if Self::still_installed(nat, &record)? {
                check_filters(&request.filters)?;
                self.change_filters(nat, &record, &request.filters)?;
                if record.holder != holder {
                    Self::set_origin(nat, &record, holder)?;
                }
                self.generation = self.generation.wrapping_add(1);
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
                r.description.clone_from(&request.description);
                return Ok(r.external);
            }
            // Its entries are gone (they should not be): start afresh.
            self.remove_filters(record.proto(), record.external, &record.filters);
            self.generation = self.generation.wrapping_add(1);
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
        self.generation = self.generation.wrapping_add(1);
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
                description: request.description.clone(),
            },
        );
        Ok(external)
    }

    pub(super) fn set_origin<N: NatTables + NatWrites>(
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
}
