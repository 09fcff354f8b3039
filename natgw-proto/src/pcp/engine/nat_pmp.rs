//! NAT-PMP (RFC 6886) over the same table and quotas as PCP, granted through the
//! same path.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use super::events::{Answer, Event};
use super::{secs, Engine, NATPMP_NONCE};
use crate::pcp::natpmp::{self, MapProtocol};
use crate::pcp::table::{
    ExplicitMapping, Install, MappingKey, MappingTable, Origin, Protocol, TableError,
};
use crate::pcp::wire;

/// A NAT-PMP request refused.
type NatPmpRefusal = (natpmp::ResultCode, String);

fn natpmp_table_refusal(e: TableError) -> NatPmpRefusal {
    let result = match e {
        TableError::NetworkFailure => natpmp::ResultCode::NetworkFailure,
        TableError::NotAuthorized | TableError::NonceMismatch => natpmp::ResultCode::NotAuthorized,
        TableError::NoResources
        | TableError::QuotaExceeded
        | TableError::CannotProvideExternal
        | TableError::ExcessiveRemotePeers => natpmp::ResultCode::OutOfResources,
    };
    (result, e.to_string())
}

impl Engine {
    pub(super) fn handle_natpmp(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        datagram: &[u8],
        table: &mut impl MappingTable,
    ) -> Vec<u8> {
        let epoch = self.epoch(now);
        let packet = natpmp::Packet::new_unchecked(datagram);
        let request = match natpmp::Request::parse(&packet) {
            Ok(request) => request,
            Err(e) => {
                // Only an unknown opcode remains: the silent drops came first.
                self.push(Event::Refused {
                    client: src,
                    op: "nat-pmp",
                    answer: Answer::NatPmp(natpmp::ResultCode::UnsupportedOpcode),
                    reason: e.to_string(),
                });
                return natpmp::unsupported_opcode_response(datagram, wire::MAX_LEN);
            }
        };
        let response = match request {
            natpmp::Request::ExternalAddress => {
                let address = table.external_address();
                let result = if address.is_some() {
                    natpmp::ResultCode::Success
                } else {
                    self.push(Event::Refused {
                        client: src,
                        op: "nat-pmp.address",
                        answer: Answer::NatPmp(natpmp::ResultCode::NetworkFailure),
                        reason: "the gateway has no external address".into(),
                    });
                    natpmp::ResultCode::NetworkFailure
                };
                natpmp::Response::ExternalAddress {
                    result,
                    epoch,
                    address: address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                }
            }
            natpmp::Request::Map {
                protocol,
                internal_port,
                suggested_external_port,
                lifetime,
            } => {
                let outcome = self.natpmp_map(
                    now,
                    src,
                    protocol,
                    internal_port,
                    suggested_external_port,
                    lifetime,
                    table,
                );
                let (result, external_port, lifetime) = match outcome {
                    Ok((port, lifetime)) => (natpmp::ResultCode::Success, port, lifetime),
                    Err((result, reason)) => {
                        self.push(Event::Refused {
                            client: src,
                            op: "nat-pmp.map",
                            answer: Answer::NatPmp(result),
                            reason,
                        });
                        (result, 0, 0)
                    }
                };
                natpmp::Response::Map {
                    protocol,
                    result,
                    epoch,
                    internal_port,
                    external_port,
                    lifetime,
                }
            }
        };
        response.to_bytes()
    }

    /// RFC 6886 §3.3 and §3.4 over the same table: returns the mapped external port
    /// and granted lifetime (both 0 for deletions).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn natpmp_map(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        protocol: MapProtocol,
        internal_port: u16,
        suggested_port: u16,
        requested: u32,
        table: &mut impl MappingTable,
    ) -> Result<(u16, u32), NatPmpRefusal> {
        let protocol = match protocol {
            MapProtocol::Udp => Protocol::Udp,
            MapProtocol::Tcp => Protocol::Tcp,
        };
        let internal = *src.ip();
        let key = MappingKey {
            internal,
            protocol,
            internal_port,
        };
        let live = |m: &ExplicitMapping| m.expires > now;
        if requested == 0 {
            // RFC 6886 §3.4: internal port 0 deletes all the client's mappings of the
            // protocol — the NAT-PMP ones; PCP ones are protected by their nonces.
            let victims: Vec<ExplicitMapping> = if internal_port == 0 {
                table
                    .explicit_of(internal)
                    .into_iter()
                    .filter(|m| m.key.protocol == protocol && m.origin == Origin::NatPmp)
                    .collect()
            } else {
                match table.explicit(&key) {
                    Some(m) if m.origin != Origin::NatPmp && live(&m) => {
                        return Err((
                            natpmp::ResultCode::NotAuthorized,
                            format!(
                                "{protocol} {} belongs to a {} client (delete it with that protocol)",
                                key.internal_endpoint(),
                                m.origin.name()
                            ),
                        ));
                    }
                    found => found.into_iter().collect(),
                }
            };
            self.delete(src, &victims, table);
            return Ok((0, 0));
        }
        if internal_port == 0 {
            return Err((
                natpmp::ResultCode::NotAuthorized,
                "internal port 0 is only valid when deleting".into(),
            ));
        }
        if table.external_address().is_none() {
            return Err((
                natpmp::ResultCode::NetworkFailure,
                "the gateway has no external address".into(),
            ));
        }
        let existing = table.explicit(&key).filter(live);
        match &existing {
            // NAT-PMP has no nonce: it may not take over what PCP or UPnP holds.
            Some(m) if m.origin != Origin::NatPmp => {
                return Err((
                    natpmp::ResultCode::NotAuthorized,
                    format!(
                        "{protocol} {} belongs to a {} client",
                        key.internal_endpoint(),
                        m.origin.name()
                    ),
                ));
            }
            Some(_) => {}
            None => self
                .admit_new(&key, now, table)
                .map_err(|q| (natpmp::ResultCode::OutOfResources, q.reason))?,
        }
        let external_ports = self
            .config
            .permitted_external_ports(internal, internal_port);
        if external_ports.is_empty()
            || existing
                .as_ref()
                .is_some_and(|m| !external_ports.iter().any(|s| s.contains(m.external.port())))
        {
            return Err((
                natpmp::ResultCode::NotAuthorized,
                format!(
                    "the port rules (pcp.rules) deny {protocol} {}",
                    key.internal_endpoint()
                ),
            ));
        }
        let lifetime = self.config.clamp_lifetime(requested);
        let install = Install {
            key,
            origin: Origin::NatPmp,
            nonce: NATPMP_NONCE,
            lifetime,
            expires: now + secs(lifetime),
            suggested_address: None,
            suggested_port: (suggested_port != 0).then_some(suggested_port),
            prefer_failure: false,
            external_ports,
            filters: Vec::new(),
            reply_to: src,
            description: String::new(),
        };
        let external = self
            .grant(&install, existing.is_some(), table)
            .map_err(natpmp_table_refusal)?;
        Ok((external.port(), lifetime))
    }
}
