//! The standby's side of explicit mappings under replication: records the active
//! replicated are taken into this table (and their PCP filters into `PCP_FILTERS`)
//! once their `NAT_FWD`/`NAT_REV` entries are installed, and forgotten when the
//! active ends them. The active's static forwards are installed here as forwards
//! of the peer ([`Holder::PeerStatic`]) unless this gateway's own configuration
//! has them already, and end when the active's configuration drops them. The
//! standby never creates or ends them on its own.

use super::*;

impl<F: PcpFilterTable> ExplicitMappings<F> {
    /// Takes the explicit mapping `entry` the active holds (its `created_ns` is
    /// ignored: the standby's own forward entry for it gives the identity). `false`
    /// when the maps hold no forward entry of that internal endpoint to that
    /// external one, or it is a static forward (those come by
    /// [`Self::replicated_static`]).
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
        if self.records.get(&key).is_some_and(|r| r.holder.is_static()) {
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

    /// Takes the static forward the active holds: `internal` reachable at
    /// `external`. Nothing to do when this gateway has it already (from its own
    /// configuration, or replicated before). Refused, with the reason to count,
    /// when this gateway's own configuration forwards `internal` to another port
    /// (the two configurations disagree; its own wins), or the port cannot be had
    /// here. A stale mapping of `internal` to another port gives way: the active's
    /// maps say the forward holds `internal`.
    ///
    /// # Errors
    /// The reason the forward was refused.
    pub fn replicated_static<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        protocol: Protocol,
        internal: SocketAddrV4,
        external: SocketAddrV4,
        now_ns: u64,
    ) -> Result<(), &'static str> {
        let proto = ip_proto(protocol).ok_or("protocol")?;
        let key = MappingKey {
            internal: *internal.ip(),
            protocol,
            internal_port: internal.port(),
        };
        if let Some(r) = self.records.get(&key).cloned() {
            let installed = Self::still_installed(nat, &r).unwrap_or(false);
            match r.holder {
                Holder::Static | Holder::PeerStatic if r.external == external && installed => {
                    return Ok(());
                }
                Holder::Static => return Err("static_conflict"),
                Holder::PeerStatic => {
                    self.end(nat, &key, now_ns, MappingEventKind::Delete);
                }
                Holder::Pcp | Holder::NatPmp | Holder::Upnp => {
                    self.forget_replicated(protocol, internal);
                }
            }
        }
        let fk = fwd_key(proto, internal);
        match nat.fwd(&fk) {
            Ok(Some(m)) if external_of(&m) != external => {
                delete_entries(nat, &fk, None, now_ns).map_err(|_| "maps")?;
            }
            Ok(_) => {}
            Err(_) => return Err("maps"),
        }
        match self.add_forward(nat, Holder::PeerStatic, key, external.port(), now_ns) {
            Ok(got) if got == external => Ok(()),
            Ok(_) => {
                self.end(nat, &key, now_ns, MappingEventKind::Delete);
                Err("external_address")
            }
            Err(_) => Err("static_port_taken"),
        }
    }

    /// What the active no longer holds for `internal`: a replicated PCP, NAT-PMP
    /// or UPnP record is forgotten (its entries go with the mapping's own deletion),
    /// a replicated static forward ends with its entries. This gateway's own static
    /// forwards stay.
    pub fn forget_peer<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        protocol: Protocol,
        internal: SocketAddrV4,
        now_ns: u64,
    ) {
        let key = MappingKey {
            internal: *internal.ip(),
            protocol,
            internal_port: internal.port(),
        };
        match self.records.get(&key).map(|r| r.holder) {
            Some(Holder::PeerStatic) => {
                self.end(nat, &key, now_ns, MappingEventKind::Delete);
            }
            Some(Holder::Static) | None => {}
            Some(Holder::Pcp | Holder::NatPmp | Holder::Upnp) => {
                self.forget_replicated(protocol, internal);
            }
        }
    }

    /// Whether `internal`'s mapping is a static forward this table holds (its own
    /// or the peer's).
    #[must_use]
    pub fn holds_static(&self, protocol: Protocol, internal: SocketAddrV4) -> bool {
        let key = MappingKey {
            internal: *internal.ip(),
            protocol,
            internal_port: internal.port(),
        };
        self.records.get(&key).is_some_and(|r| r.holder.is_static())
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
            Some(r) if !r.holder.is_static() => {}
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
