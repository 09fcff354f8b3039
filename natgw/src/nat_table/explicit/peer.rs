//! PCP PEER (RFC 6887 §12): the outbound mapping towards one remote peer, created as
//! a traffic mapping would be, with its session opened so the peer's answers pass
//! the filter before the first packet leaves.

use super::*;

impl<F: PcpFilterTable> ExplicitMappings<F> {
    /// PEER (RFC 6887 §12): the implicit mapping of the internal endpoint, created
    /// as traffic would create it (or the explicit one, if it has one), refreshed as
    /// outbound traffic to the peer would refresh it.
    pub(super) fn peer<N: NatTables + NatWrites>(
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
                let address = self.address_or_refusal(*request.internal.ip())?;
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
                install::check_quota(nat, &fk)?;
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
    pub(super) fn open_session<N: NatTables + NatWrites>(
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
