//! PCP MAP (RFC 6887 §11) and PEER (§12): creating, renewing and deleting explicit
//! mappings, the quotas they are held to, and the one grant path NAT-PMP shares.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use super::events::{Event, MappingEvent};
use super::{
    refuse, secs, suggested_ipv4, suggests_ipv6, table_refusal, Engine, Refusal, RequestOptions,
};
use crate::pcp::policy::PcpConfig;
use crate::pcp::table::{
    ExplicitMapping, Filter, Install, MappingKey, MappingTable, Origin, PeerRequest, Protocol,
    TableError,
};
use crate::pcp::wire::{self, MapRepr, OpRepr, Opcode, PeerRepr, ResultCode};
use crate::prefix::Ipv4Prefix;

/// A quota a new mapping would exceed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The host's own quota (USER_EX_QUOTA) rather than a shared one (NO_RESOURCES).
    pub per_host: bool,
    /// Why, for the log.
    pub reason: String,
}

impl Engine {
    /// RFC 6887 §11.3: create, renew or delete an explicit mapping.
    pub(super) fn map(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        requested: u32,
        map: &MapRepr,
        options: &RequestOptions,
        table: &mut impl MappingTable,
    ) -> Result<wire::Response, Refusal> {
        let protocol = Protocol::from_wire(map.protocol).ok_or_else(|| {
            refuse(
                ResultCode::UnsuppProtocol,
                format!(
                    "protocol {} cannot be mapped (only 0, 6 and 17)",
                    map.protocol
                ),
            )
        })?;
        if protocol == Protocol::All && map.internal_port != 0 {
            return Err(refuse(
                ResultCode::MalformedRequest,
                format!("protocol 0 (all) with internal port {}", map.internal_port),
            ));
        }
        let internal = options.third_party.unwrap_or(*src.ip());
        if requested == 0 {
            return self.map_delete(now, src, protocol, internal, map, options, table);
        }
        if protocol != Protocol::All && map.internal_port == 0 {
            return Err(refuse(
                ResultCode::MalformedRequest,
                "internal port 0 (all ports) is only valid with protocol 0 or lifetime 0",
            ));
        }
        if protocol == Protocol::All && !self.config.allow_all_protocols {
            return Err(refuse(
                ResultCode::NotAuthorized,
                "protocol 0 (all protocols) mappings are off (pcp.allow_all_protocols)",
            ));
        }
        let external_address = table.external_address().ok_or_else(|| {
            refuse(
                ResultCode::NetworkFailure,
                "the gateway has no external address",
            )
        })?;
        let key = MappingKey {
            internal,
            protocol,
            internal_port: map.internal_port,
        };
        let existing = table.explicit(&key).filter(|m| m.expires > now);
        match &existing {
            // RFC 6887 §11.3: the nonce must match on every renewal. A UPnP mapping's
            // fixed nonce is no secret, so it is never PCP's to renew.
            Some(m) if m.nonce != map.nonce || m.origin == Origin::Upnp => {
                return Err(refuse(
                    ResultCode::NotAuthorized,
                    format!(
                        "nonce does not match the one {} {} was mapped with",
                        protocol,
                        key.internal_endpoint()
                    ),
                ));
            }
            Some(_) => {}
            None => self.admit_new(&key, now, table).map_err(|q| {
                let result = if q.per_host {
                    ResultCode::UserExQuota
                } else {
                    ResultCode::NoResources
                };
                refuse(result, q.reason)
            })?,
        }
        let external_ports = if protocol == Protocol::All {
            Vec::new()
        } else {
            let ports = self
                .config
                .permitted_external_ports(internal, map.internal_port);
            let still_permitted = |port| ports.iter().any(|s| s.contains(port));
            if ports.is_empty()
                || existing
                    .as_ref()
                    .is_some_and(|m| !still_permitted(m.external.port()))
            {
                return Err(refuse(
                    ResultCode::NotAuthorized,
                    format!(
                        "the port rules (pcp.rules) deny {protocol} {}",
                        key.internal_endpoint()
                    ),
                ));
            }
            ports
        };
        let suggested_address = suggested_ipv4(map.external_address);
        let suggested_port = (map.external_port != 0).then_some(map.external_port);
        if options.prefer_failure {
            // RFC 6887 §13.2: the suggested endpoint or nothing.
            let unavailable = if suggests_ipv6(map.external_address)
                || suggested_address.is_some_and(|a| a != external_address)
            {
                Some("the suggested external address is not the gateway's")
            } else if suggested_port.is_some_and(|p| {
                !external_ports.iter().any(|s| s.contains(p)) && protocol != Protocol::All
            }) {
                Some("the port rules do not permit the suggested external port")
            } else if existing
                .as_ref()
                .is_some_and(|m| suggested_port.is_some_and(|p| p != m.external.port()))
            {
                Some("the mapping exists with another external port")
            } else {
                None
            };
            if let Some(why) = unavailable {
                return Err(refuse(ResultCode::CannotProvideExternal, why));
            }
        }
        let filters = self.filters(options, existing.as_ref())?;
        let lifetime = self.config.clamp_lifetime(requested);
        let install = Install {
            key,
            origin: Origin::Pcp,
            nonce: map.nonce,
            lifetime,
            expires: now + secs(lifetime),
            suggested_address,
            suggested_port,
            prefer_failure: options.prefer_failure,
            external_ports,
            filters,
            reply_to: src,
            description: String::new(),
        };
        let external = self
            .grant(&install, existing.is_some(), table)
            .map_err(table_refusal)?;
        Ok(self.map_success(now, lifetime, map, external, options.echo(true)))
    }

    /// A successful MAP response: `map` with the assigned `external` endpoint.
    fn map_success(
        &self,
        now: Instant,
        lifetime: u32,
        map: &MapRepr,
        external: SocketAddrV4,
        options: Vec<wire::OptionRepr>,
    ) -> wire::Response {
        wire::Response {
            opcode: Opcode::Map,
            result: ResultCode::Success,
            lifetime,
            epoch: self.epoch(now),
            op: Some(OpRepr::Map(MapRepr {
                external_port: external.port(),
                external_address: external.ip().to_ipv6_mapped(),
                ..*map
            })),
            options,
        }
    }

    /// The one way a PCP MAP or a NAT-PMP request deletes mappings: the table forgets
    /// each of `victims`, and an event says so.
    pub(super) fn delete(
        &mut self,
        client: SocketAddrV4,
        victims: &[ExplicitMapping],
        table: &mut impl MappingTable,
    ) {
        for m in victims {
            table.remove(&m.key);
            self.push(Event::Deleted(MappingEvent {
                client,
                origin: m.origin,
                protocol: m.key.protocol,
                internal: m.key.internal_endpoint(),
                external: m.external,
                lifetime: 0,
            }));
        }
    }

    /// The one way a PCP MAP or a NAT-PMP request gets its mapping, once every check
    /// has passed: the table creates it (or renews it when it `existed`), and the
    /// event says which. Returns the external endpoint.
    pub(super) fn grant(
        &mut self,
        install: &Install,
        existed: bool,
        table: &mut impl MappingTable,
    ) -> Result<SocketAddrV4, TableError> {
        let external = table.install(install)?;
        let event = MappingEvent {
            client: install.reply_to,
            origin: install.origin,
            protocol: install.key.protocol,
            internal: install.key.internal_endpoint(),
            external,
            lifetime: install.lifetime,
        };
        self.push(if existed {
            Event::Renewed(event)
        } else {
            Event::Created(event)
        });
        Ok(external)
    }

    /// Whether a new explicit mapping `key` fits the quotas: the host's
    /// (`max_mappings_per_host`), its LAN interface's (`max_mappings_per_interface`)
    /// and the server's (`max_mappings`). The last two hold however many addresses
    /// a host speaks from.
    pub(super) fn admit_new(
        &self,
        key: &MappingKey,
        now: Instant,
        table: &impl MappingTable,
    ) -> Result<(), Quota> {
        admit(&self.config, key, now, table)
    }

    /// RFC 6887 §13.3: the mapping's filter list after this request. No FILTER keeps
    /// the current list; a FILTER with prefix length 0 clears it (all peers allowed);
    /// otherwise the request's filters replace it.
    pub(super) fn filters(
        &self,
        options: &RequestOptions,
        existing: Option<&ExplicitMapping>,
    ) -> Result<Vec<Filter>, Refusal> {
        if options.filters.is_empty() {
            return Ok(existing.map(|m| m.filters.clone()).unwrap_or_default());
        }
        if options.filters.iter().any(|f| f.prefix_len == 0) {
            return Ok(Vec::new());
        }
        let mut out: Vec<Filter> = Vec::new();
        for f in &options.filters {
            let addr = f.remote_address.to_ipv4_mapped();
            let prefix = addr
                .zip(f.prefix_len.checked_sub(96))
                .and_then(|(a, len)| Ipv4Prefix::new(a, len))
                .ok_or_else(|| {
                    refuse(
                        ResultCode::MalformedOption,
                        format!(
                            "FILTER {}/{} is not an IPv4 prefix (IPv4-mapped, length 96-128)",
                            f.remote_address, f.prefix_len
                        ),
                    )
                })?;
            let filter = Filter {
                remote: prefix.network_prefix(),
                port: f.remote_port,
            };
            if !out.contains(&filter) {
                out.push(filter);
            }
        }
        if out.len() > self.config.max_filters as usize {
            return Err(refuse(
                ResultCode::ExcessiveRemotePeers,
                format!(
                    "{} filters, more than pcp.max_filters = {}",
                    out.len(),
                    self.config.max_filters
                ),
            ));
        }
        Ok(out)
    }

    /// RFC 6887 §11.3 and §15, lifetime 0: delete one mapping (internal port set) or
    /// the set of the host's mappings of the protocol (internal port 0; protocol 0 =
    /// every protocol) that carry this nonce. Deleting what does not exist succeeds.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn map_delete(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        protocol: Protocol,
        internal: Ipv4Addr,
        map: &MapRepr,
        options: &RequestOptions,
        table: &mut impl MappingTable,
    ) -> Result<wire::Response, Refusal> {
        let victims: Vec<ExplicitMapping> = if map.internal_port != 0 {
            let key = MappingKey {
                internal,
                protocol,
                internal_port: map.internal_port,
            };
            match table.explicit(&key) {
                Some(m)
                    if (m.nonce != map.nonce || m.origin == Origin::Upnp) && m.expires > now =>
                {
                    return Err(refuse(
                        ResultCode::NotAuthorized,
                        format!(
                            "nonce does not match the one {} {} was mapped with",
                            protocol,
                            key.internal_endpoint()
                        ),
                    ));
                }
                found => found.into_iter().collect(),
            }
        } else {
            table
                .explicit_of(internal)
                .into_iter()
                .filter(|m| protocol == Protocol::All || m.key.protocol == protocol)
                .filter(|m| m.nonce == map.nonce && m.origin != Origin::Upnp)
                .collect()
        };
        self.delete(src, &victims, table);
        let external = match victims.as_slice() {
            [one] => one.external,
            _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        };
        Ok(self.map_success(now, 0, map, external, options.echo(false)))
    }

    /// RFC 6887 §12.3: create or refresh the implicit mapping towards one peer.
    pub(super) fn peer(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        requested: u32,
        peer: &PeerRepr,
        options: &RequestOptions,
        table: &mut impl MappingTable,
    ) -> Result<wire::Response, Refusal> {
        let protocol = match Protocol::from_wire(peer.protocol) {
            Some(Protocol::All) => {
                return Err(refuse(
                    ResultCode::MalformedRequest,
                    "PEER needs a protocol; 0 (all) is not valid",
                ))
            }
            Some(p) => p,
            None => {
                return Err(refuse(
                    ResultCode::UnsuppProtocol,
                    format!(
                        "protocol {} cannot be mapped (only 6 and 17)",
                        peer.protocol
                    ),
                ))
            }
        };
        if peer.internal_port == 0 || peer.remote_port == 0 {
            return Err(refuse(
                ResultCode::MalformedRequest,
                "PEER needs an internal port and a remote peer port",
            ));
        }
        let remote = suggested_ipv4(peer.remote_address).ok_or_else(|| {
            refuse(
                ResultCode::MalformedRequest,
                format!(
                    "remote peer address {} is not an IPv4 host address",
                    peer.remote_address
                ),
            )
        })?;
        if table.external_address().is_none() {
            return Err(refuse(
                ResultCode::NetworkFailure,
                "the gateway has no external address",
            ));
        }
        let internal =
            SocketAddrV4::new(options.third_party.unwrap_or(*src.ip()), peer.internal_port);
        let remote = SocketAddrV4::new(remote, peer.remote_port);
        let request = PeerRequest {
            internal,
            protocol,
            remote,
            nonce: peer.nonce,
            lifetime: if requested == 0 {
                0
            } else {
                self.config.clamp_lifetime(requested)
            },
            suggested_address: suggested_ipv4(peer.external_address),
            suggested_port: (peer.external_port != 0).then_some(peer.external_port),
            reply_to: src,
        };
        let grant = table.peer(&request).map_err(table_refusal)?;
        self.push(Event::Peer {
            client: src,
            protocol,
            internal,
            remote,
            external: grant.external,
            lifetime: grant.lifetime,
        });
        Ok(wire::Response {
            opcode: Opcode::Peer,
            result: ResultCode::Success,
            lifetime: grant.lifetime,
            epoch: self.epoch(now),
            op: Some(OpRepr::Peer(PeerRepr {
                external_port: grant.external.port(),
                external_address: grant.external.ip().to_ipv6_mapped(),
                ..*peer
            })),
            options: options.echo(false),
        })
    }
}

/// Whether a new explicit mapping `key` fits the quotas: the host's
/// (`max_mappings_per_host`), its LAN interface's (`max_mappings_per_interface`)
/// and the server's (`max_mappings`). The last two hold however many addresses
/// a host speaks from.
///
/// Every protocol that creates explicit mappings (PCP, NAT-PMP, UPnP) is held to
/// these same quotas.
///
/// # Errors
/// The quota that would be exceeded.
pub fn admit(
    config: &PcpConfig,
    key: &MappingKey,
    now: Instant,
    table: &impl MappingTable,
) -> Result<(), Quota> {
    let held = table
        .explicit_of(key.internal)
        .iter()
        .filter(|m| m.expires > now && m.key != *key)
        .count();
    if held >= config.max_mappings_per_host as usize {
        return Err(Quota {
            per_host: true,
            reason: format!(
                "{} already holds {held} mappings (pcp.max_mappings_per_host)",
                key.internal
            ),
        });
    }
    let lan = table.lan_of(key.internal);
    let on_lan = table.explicit_count(lan);
    if lan.is_some() && on_lan >= config.max_mappings_per_interface as usize {
        return Err(Quota {
            per_host: false,
            reason: format!(
                "the hosts of {}'s LAN interface hold {on_lan} mappings \
                 (pcp.max_mappings_per_interface)",
                key.internal
            ),
        });
    }
    let all = table.explicit_count(None);
    if all >= config.max_mappings as usize {
        return Err(Quota {
            per_host: false,
            reason: format!("{all} mappings exist (pcp.max_mappings)"),
        });
    }
    Ok(())
}
