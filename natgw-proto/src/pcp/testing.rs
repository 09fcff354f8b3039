//! An in-memory [`MappingTable`] for the server's unit tests and the fuzz target:
//! explicit mappings in a map, implicit (PEER) mappings with endpoint-independent
//! external ports, a capacity, and a log of what the server asked for.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::policy::PortSpan;
use super::table::{
    ExplicitMapping, Install, MappingKey, MappingTable, PeerGrant, PeerRequest, Protocol,
    TableError,
};
use super::wire::Nonce;
use crate::prefix::Ipv4Prefix;

/// An implicit mapping created by PEER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Implicit {
    /// External endpoint.
    pub external: SocketAddrV4,
    /// Nonce of the last PEER request.
    pub nonce: Nonce,
    /// Lifetime last granted.
    pub lifetime: u32,
}

/// The fake table.
#[derive(Clone, Debug)]
pub struct MemoryTable {
    /// External address; `None` = no address (NETWORK_FAILURE).
    pub external: Option<Ipv4Addr>,
    /// Explicit mappings.
    pub explicit: BTreeMap<MappingKey, ExplicitMapping>,
    /// Implicit mappings, keyed by internal endpoint and protocol (EIM).
    pub implicit: BTreeMap<(Protocol, SocketAddrV4), Implicit>,
    /// Most explicit plus implicit mappings the table holds.
    pub capacity: usize,
    /// Every install request, in order.
    pub installs: Vec<Install>,
    /// Every PEER request, in order.
    pub peers: Vec<PeerRequest>,
    /// LAN prefixes: the hosts the table serves, on "interface" index + 1.
    pub lans: Vec<Ipv4Prefix>,
    /// Addresses of the gateway itself, inside the LAN prefixes or not.
    pub gateway: Vec<Ipv4Addr>,
    /// What [`MappingTable::generation`] reports: `None` (the default) for none;
    /// when `Some`, counted up by `install` and `remove` (not by changes made to the
    /// fields directly).
    pub generation: Option<u64>,
}

impl MemoryTable {
    /// An empty table with this external address and room for 1000 mappings,
    /// serving the hosts of 10.0.0.0/8 but the gateway's own 10.0.0.1.
    #[must_use]
    pub fn new(external: Ipv4Addr) -> Self {
        Self {
            external: Some(external),
            explicit: BTreeMap::new(),
            implicit: BTreeMap::new(),
            capacity: 1000,
            installs: Vec::new(),
            peers: Vec::new(),
            lans: vec![Ipv4Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8).expect("a valid length")],
            gateway: vec![Ipv4Addr::new(10, 0, 0, 1)],
            generation: None,
        }
    }

    fn changed(&mut self) {
        if let Some(g) = self.generation.as_mut() {
            *g += 1;
        }
    }

    fn port_taken(&self, protocol: Protocol, port: u16) -> bool {
        self.explicit
            .values()
            .any(|m| m.key.protocol == protocol && m.external.port() == port)
            || self
                .implicit
                .iter()
                .any(|((p, _), i)| *p == protocol && i.external.port() == port)
    }

    /// The external port traffic from `internal` already uses (EIM), if any.
    fn eim_port(&self, protocol: Protocol, internal: SocketAddrV4) -> Option<u16> {
        let key = MappingKey {
            internal: *internal.ip(),
            protocol,
            internal_port: internal.port(),
        };
        self.explicit
            .get(&key)
            .map(|m| m.external.port())
            .or_else(|| {
                self.implicit
                    .get(&(protocol, internal))
                    .map(|i| i.external.port())
            })
    }

    fn allocate(
        &self,
        protocol: Protocol,
        spans: &[PortSpan],
        suggested: Option<u16>,
        prefer_failure: bool,
    ) -> Result<u16, TableError> {
        if let Some(p) = suggested {
            if spans.iter().any(|s| s.contains(p)) && !self.port_taken(protocol, p) {
                return Ok(p);
            }
            if prefer_failure {
                return Err(TableError::CannotProvideExternal);
            }
        }
        spans
            .iter()
            .flat_map(|s| s.first()..=s.last())
            .find(|&p| p != 0 && !self.port_taken(protocol, p))
            .ok_or(TableError::NoResources)
    }

    fn used(&self) -> usize {
        self.explicit.len() + self.implicit.len()
    }
}

impl MappingTable for MemoryTable {
    fn lan_of(&self, host: Ipv4Addr) -> Option<u32> {
        let (index, prefix) = self
            .lans
            .iter()
            .enumerate()
            .find(|(_, p)| p.contains(host))?;
        let reserved = prefix.has_network_and_broadcast()
            && (host == prefix.network() || host == prefix.broadcast());
        if reserved || self.gateway.contains(&host) {
            return None;
        }
        u32::try_from(index + 1).ok()
    }

    fn explicit_count(&self, lan: Option<u32>) -> usize {
        self.explicit
            .values()
            .filter(|m| lan.is_none() || self.lan_of(m.key.internal) == lan)
            .count()
    }

    fn external_address(&self) -> Option<Ipv4Addr> {
        self.external
    }

    fn explicit(&self, key: &MappingKey) -> Option<ExplicitMapping> {
        self.explicit.get(key).cloned()
    }

    fn explicit_of(&self, internal: Ipv4Addr) -> Vec<ExplicitMapping> {
        self.explicit
            .values()
            .filter(|m| m.key.internal == internal)
            .cloned()
            .collect()
    }

    fn explicit_all(&self) -> Vec<ExplicitMapping> {
        self.explicit.values().cloned().collect()
    }

    fn install(&mut self, request: &Install) -> Result<SocketAddrV4, TableError> {
        self.changed();
        self.installs.push(request.clone());
        let address = self.external.ok_or(TableError::NetworkFailure)?;
        if let Some(m) = self.explicit.get_mut(&request.key) {
            m.nonce = request.nonce;
            m.origin = request.origin;
            m.expires = request.expires;
            m.filters.clone_from(&request.filters);
            m.reply_to = request.reply_to;
            m.description.clone_from(&request.description);
            return Ok(m.external);
        }
        if request.prefer_failure && request.suggested_address.is_some_and(|a| a != address) {
            return Err(TableError::CannotProvideExternal);
        }
        let internal = request.key.internal_endpoint();
        let port = match request.key.protocol {
            Protocol::All => 0,
            proto => match self.eim_port(proto, internal) {
                // As the real table adopts a traffic mapping: its port or nothing.
                Some(p)
                    if request.prefer_failure && request.suggested_port.is_some_and(|s| s != p) =>
                {
                    return Err(TableError::CannotProvideExternal)
                }
                Some(p) if !request.external_ports.iter().any(|s| s.contains(p)) => {
                    return Err(TableError::NotAuthorized)
                }
                Some(p) => p,
                None => {
                    if self.used() >= self.capacity {
                        return Err(TableError::NoResources);
                    }
                    self.allocate(
                        proto,
                        &request.external_ports,
                        request.suggested_port,
                        request.prefer_failure,
                    )?
                }
            },
        };
        let external = SocketAddrV4::new(address, port);
        self.explicit.insert(
            request.key,
            ExplicitMapping {
                key: request.key,
                origin: request.origin,
                nonce: request.nonce,
                external,
                expires: request.expires,
                filters: request.filters.clone(),
                reply_to: request.reply_to,
                description: request.description.clone(),
            },
        );
        Ok(external)
    }

    fn remove(&mut self, key: &MappingKey) {
        self.changed();
        self.explicit.remove(key);
    }

    fn generation(&self) -> Option<u64> {
        self.generation
    }

    fn peer(&mut self, request: &PeerRequest) -> Result<PeerGrant, TableError> {
        self.peers.push(request.clone());
        let address = self.external.ok_or(TableError::NetworkFailure)?;
        let id = (request.protocol, request.internal);
        if let Some(i) = self.implicit.get_mut(&id) {
            if i.nonce != request.nonce {
                return Err(TableError::NonceMismatch);
            }
            i.lifetime = request.lifetime.max(i.lifetime);
            return Ok(PeerGrant {
                external: i.external,
                lifetime: i.lifetime,
            });
        }
        let port = match self.eim_port(request.protocol, request.internal) {
            Some(p) => p,
            None => {
                if self.used() >= self.capacity {
                    return Err(TableError::NoResources);
                }
                self.allocate(
                    request.protocol,
                    &[PortSpan::new(1024, 65535).ok_or(TableError::NoResources)?],
                    request.suggested_port,
                    false,
                )?
            }
        };
        let external = SocketAddrV4::new(address, port);
        self.implicit.insert(
            id,
            Implicit {
                external,
                nonce: request.nonce,
                lifetime: request.lifetime,
            },
        );
        Ok(PeerGrant {
            external,
            lifetime: request.lifetime,
        })
    }
}
