//! How many mappings the tables hold, by protocol and origin, and how many external
//! ports each address of the pool has in use: counted by the garbage collector from
//! the snapshot it reads on every pass anyway ([`crate::nat_table::gc::Sweeper`]), so
//! the metrics endpoint reports them without a walk of its own over the tables.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use natgw_common::{FwdKey, Mapping, RevKey, RevValue};

use crate::datapath::maps::ipv4;

/// The external ports of one address and protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortUse {
    /// Claimed by a mapping (reverse entries that are no hold).
    pub used: u64,
    /// Freed and held from other hosts (RFC 6888 REQ-8).
    pub held: u64,
}

/// What the tables held at one garbage-collection pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Forward entries by (IP protocol, `Mapping::origin` byte).
    pub mappings: BTreeMap<(u8, u8), u64>,
    /// Reverse entries by (external address, IP protocol).
    pub ports: BTreeMap<(Ipv4Addr, u8), PortUse>,
    /// Sessions (remote endpoints of mappings).
    pub sessions: u64,
}

impl Census {
    /// Counts a snapshot of the tables.
    #[must_use]
    pub fn of(fwd: &[(FwdKey, Mapping)], rev: &[(RevKey, RevValue)], sessions: usize) -> Self {
        let mut census = Self {
            sessions: sessions as u64,
            ..Self::default()
        };
        for (key, m) in fwd {
            *census.mappings.entry((key.proto, m.origin)).or_default() += 1;
        }
        for (key, r) in rev {
            let entry = census
                .ports
                .entry((ipv4(key.addr_be), key.proto))
                .or_default();
            if r.is_held() {
                entry.held += 1;
            } else {
                entry.used += 1;
            }
        }
        census
    }

    /// Counts the mappings and sessions again from a newer snapshot of the forward
    /// table and the number of sessions (a probe between surveys); the ports stay as
    /// the last full snapshot counted them.
    pub fn recount_mappings(&mut self, fwd: &[(FwdKey, Mapping)], sessions: usize) {
        self.sessions = sessions as u64;
        self.mappings.clear();
        for (key, m) in fwd {
            *self.mappings.entry((key.proto, m.origin)).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_common::{addr_be, Origin, IPPROTO_TCP, IPPROTO_UDP};

    #[test]
    fn mappings_count_by_protocol_and_origin_and_ports_by_address() {
        let int = addr_be([10, 0, 1, 2]);
        let (a, b) = ([192, 0, 2, 1], [192, 0, 2, 2]);
        let mapping = |ext: [u8; 4], port: u16, origin: Origin| Mapping {
            ext_addr_be: addr_be(ext),
            ext_port_be: port.to_be(),
            origin: origin as u8,
            ..Mapping::default()
        };
        let fwd = [
            (
                FwdKey::new(int, 1000u16.to_be(), IPPROTO_UDP),
                mapping(a, 1000, Origin::Traffic),
            ),
            (
                FwdKey::new(int, 1001u16.to_be(), IPPROTO_UDP),
                mapping(a, 1001, Origin::Traffic),
            ),
            (
                FwdKey::new(int, 1002u16.to_be(), IPPROTO_UDP),
                mapping(b, 1002, Origin::Pcp),
            ),
            (
                FwdKey::new(int, 80u16.to_be(), IPPROTO_TCP),
                mapping(a, 8080, Origin::Static),
            ),
        ];
        let rev_value = |held: bool| {
            if held {
                RevValue::held(int, 1)
            } else {
                RevValue::default()
            }
        };
        let rev = [
            (
                RevKey::new(addr_be(a), 1000u16.to_be(), IPPROTO_UDP),
                rev_value(false),
            ),
            (
                RevKey::new(addr_be(a), 1001u16.to_be(), IPPROTO_UDP),
                rev_value(false),
            ),
            (
                RevKey::new(addr_be(a), 1003u16.to_be(), IPPROTO_UDP),
                rev_value(true),
            ),
            (
                RevKey::new(addr_be(b), 1002u16.to_be(), IPPROTO_UDP),
                rev_value(false),
            ),
            (
                RevKey::new(addr_be(a), 8080u16.to_be(), IPPROTO_TCP),
                rev_value(false),
            ),
        ];
        let c = Census::of(&fwd, &rev, 7);
        assert_eq!(c.mappings[&(IPPROTO_UDP, Origin::Traffic as u8)], 2);
        assert_eq!(c.mappings[&(IPPROTO_UDP, Origin::Pcp as u8)], 1);
        assert_eq!(c.mappings[&(IPPROTO_TCP, Origin::Static as u8)], 1);
        assert_eq!(c.mappings.len(), 3);
        assert_eq!(
            c.ports[&(Ipv4Addr::from(a), IPPROTO_UDP)],
            PortUse { used: 2, held: 1 }
        );
        assert_eq!(
            c.ports[&(Ipv4Addr::from(b), IPPROTO_UDP)],
            PortUse { used: 1, held: 0 }
        );
        assert_eq!(c.ports[&(Ipv4Addr::from(a), IPPROTO_TCP)].used, 1);
        assert_eq!(c.sessions, 7);
    }
}
