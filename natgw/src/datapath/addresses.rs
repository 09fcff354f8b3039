//! What every address is to the gateway: the internal hosts natgw translates and
//! grants mappings to, its own addresses, and what can only be spoofed.
//!
//! [`AddressPlan`] is computed from the interfaces and turned into the entries of the
//! data path's two source checks:
//! - `ADDR_CLASS` (address → [`addr_class`] bits): the internal prefixes, whose
//!   sources are translated, and what no packet from the WAN may carry as its
//!   source: internal addresses, the gateway's own addresses (on any interface), the
//!   network and broadcast addresses of every attached prefix, and the martian ranges.
//! - `LAN_SOURCES` ((LAN ifindex, address) → [`lan_source`] verdict): the only
//!   sources a LAN interface may carry are host addresses of its own prefixes — not
//!   the gateway's addresses, not a prefix's network or broadcast address.
//!
//! The controller asks the same plan which hosts may hold explicit mappings
//! ([`AddressPlan::lan_host`]): PCP, NAT-PMP and static forwards never map to the
//! gateway itself or to anything outside the LAN prefixes.
//!
//! LAN prefixes are those the LAN interfaces had when natgw started; the gateway's own
//! addresses are re-read whenever an address changes anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use natgw_common::maps::{addr_class, lan_source};

use natgw_proto::prefix::Ipv4Prefix;

/// Never a valid source on any network: "this network" 0/8, loopback 127/8,
/// multicast 224/4 and the reserved 240/4 with the limited broadcast address
/// (RFC 1122 §3.2.1.3, RFC 5735). Private and shared (100.64/10) space is not here:
/// natgw may sit behind another NAT.
pub const MARTIANS: [(Ipv4Addr, u8); 4] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// A LAN interface and the prefixes it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LanIface {
    /// Interface index.
    pub ifindex: u32,
    /// Its IPv4 addresses with their prefix lengths.
    pub prefixes: Vec<Ipv4Prefix>,
}

/// What an address is to the controller deciding whether it may hold a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// A host address of the prefixes of LAN interface `ifindex`.
    Lan {
        /// The interface.
        ifindex: u32,
    },
    /// An address of the gateway itself.
    Own,
    /// The network or broadcast address of a LAN prefix.
    Reserved,
    /// Outside every LAN prefix.
    Outside,
}

/// The address plan; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressPlan {
    lans: Vec<LanIface>,
    classes: BTreeMap<Ipv4Prefix, u32>,
    lan_sources: BTreeMap<(u32, Ipv4Prefix), u32>,
}

impl AddressPlan {
    /// The plan for LAN interfaces `lans`, given every IPv4 address (with its prefix)
    /// of every interface of the gateway, `attached`.
    #[must_use]
    pub fn new(lans: Vec<LanIface>, attached: &[Ipv4Prefix]) -> Self {
        let own: BTreeSet<Ipv4Addr> = attached.iter().map(Ipv4Prefix::addr).collect();
        // Entries before the covering flags are merged in.
        let mut raw: BTreeMap<Ipv4Prefix, u32> = BTreeMap::new();
        let mut add = |p: Ipv4Prefix, bits: u32| *raw.entry(p).or_default() |= bits;
        for (addr, len) in MARTIANS {
            if let Some(p) = Ipv4Prefix::new(addr, len) {
                add(p, addr_class::MARTIAN);
            }
        }
        for lan in &lans {
            for p in &lan.prefixes {
                add(p.network_prefix(), addr_class::INTERNAL);
            }
        }
        for p in attached.iter().chain(lans.iter().flat_map(|l| &l.prefixes)) {
            if p.has_network_and_broadcast() {
                add(Ipv4Prefix::host(p.network()), addr_class::NOT_HOST);
                add(Ipv4Prefix::host(p.broadcast()), addr_class::NOT_HOST);
            }
        }
        for a in &own {
            add(Ipv4Prefix::host(*a), addr_class::OWN);
        }
        // The data path takes the longest match only, so each entry carries the bits
        // of every entry that covers it (an own address inside a LAN prefix is
        // internal too).
        let classes = raw
            .iter()
            .map(|(p, bits)| {
                let covering = raw
                    .iter()
                    .filter(|(q, _)| q.len() < p.len() && q.contains(p.addr()))
                    .fold(*bits, |acc, (_, b)| acc | b);
                (*p, covering)
            })
            .collect();

        let mut lan_sources = BTreeMap::new();
        for lan in &lans {
            for p in &lan.prefixes {
                lan_sources
                    .entry((lan.ifindex, p.network_prefix()))
                    .or_insert(lan_source::HOST);
                if p.has_network_and_broadcast() {
                    for a in [p.network(), p.broadcast()] {
                        lan_sources
                            .insert((lan.ifindex, Ipv4Prefix::host(a)), lan_source::NOT_HOST);
                    }
                }
            }
            for a in own
                .iter()
                .filter(|a| lan.prefixes.iter().any(|p| p.contains(**a)))
            {
                lan_sources.insert((lan.ifindex, Ipv4Prefix::host(*a)), lan_source::OWN);
            }
        }
        Self {
            lans,
            classes,
            lan_sources,
        }
    }

    /// The `ADDR_CLASS` entries: network prefix → [`addr_class`] bits.
    #[must_use]
    pub const fn classes(&self) -> &BTreeMap<Ipv4Prefix, u32> {
        &self.classes
    }

    /// The `LAN_SOURCES` entries: (ifindex, network prefix) → [`lan_source`] verdict.
    #[must_use]
    pub const fn lan_sources(&self) -> &BTreeMap<(u32, Ipv4Prefix), u32> {
        &self.lan_sources
    }

    /// What `addr` is to a request for a mapping: only [`Host::Lan`] may hold one.
    #[must_use]
    pub fn lan_host(&self, addr: Ipv4Addr) -> Host {
        let Some(lan) = self
            .lans
            .iter()
            .find(|l| l.prefixes.iter().any(|p| p.contains(addr)))
        else {
            return Host::Outside;
        };
        match self.lan_sources.get(&(lan.ifindex, Ipv4Prefix::host(addr))) {
            Some(&lan_source::OWN) => Host::Own,
            Some(&lan_source::NOT_HOST) => Host::Reserved,
            _ => Host::Lan {
                ifindex: lan.ifindex,
            },
        }
    }

    /// Why `addr` may not hold a mapping, as the end of a sentence; `None` when it
    /// may.
    #[must_use]
    pub fn refusal(&self, addr: Ipv4Addr) -> Option<String> {
        let nets = || {
            self.lans
                .iter()
                .flat_map(|l| l.prefixes.iter().map(|p| p.network_prefix().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.lan_host(addr) {
            Host::Lan { .. } => None,
            Host::Own => Some(format!("{addr} is an address of the gateway itself")),
            Host::Reserved => Some(format!(
                "{addr} is the network or broadcast address of a LAN prefix"
            )),
            Host::Outside => Some(format!("{addr} is not inside a LAN prefix ({})", nets())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_common::maps::addr_class::{INTERNAL, MARTIAN, NOT_HOST, OWN};

    fn p(s: &str) -> Ipv4Prefix {
        s.parse().unwrap()
    }

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// lan0 (ifindex 3) 10.0.1.1/24, lan1 (4) 10.0.2.1/24, wan0 192.0.2.1/24, lo.
    fn plan() -> AddressPlan {
        AddressPlan::new(
            vec![
                LanIface {
                    ifindex: 3,
                    prefixes: vec![p("10.0.1.1/24")],
                },
                LanIface {
                    ifindex: 4,
                    prefixes: vec![p("10.0.2.1/24")],
                },
            ],
            &[
                p("10.0.1.1/24"),
                p("10.0.2.1/24"),
                p("192.0.2.1/24"),
                p("127.0.0.1/8"),
            ],
        )
    }

    /// What the data path's longest-prefix match finds for `addr`.
    fn class_of(plan: &AddressPlan, addr: &str) -> u32 {
        plan.classes()
            .iter()
            .filter(|(q, _)| q.contains(a(addr)))
            .max_by_key(|(q, _)| q.len())
            .map_or(0, |(_, bits)| *bits)
    }

    fn lan_verdict(plan: &AddressPlan, ifindex: u32, addr: &str) -> Option<u32> {
        plan.lan_sources()
            .iter()
            .filter(|((i, q), _)| *i == ifindex && q.contains(a(addr)))
            .max_by_key(|((_, q), _)| q.len())
            .map(|(_, v)| *v)
    }

    #[test]
    fn wan_sources_that_can_only_be_spoofed_are_classified() {
        let plan = plan();
        assert_eq!(class_of(&plan, "10.0.1.11"), INTERNAL);
        assert_eq!(class_of(&plan, "10.0.1.1"), INTERNAL | OWN);
        assert_eq!(class_of(&plan, "10.0.1.255"), INTERNAL | NOT_HOST);
        assert_eq!(class_of(&plan, "192.0.2.1"), OWN);
        assert_eq!(class_of(&plan, "192.0.2.255"), NOT_HOST);
        assert_eq!(class_of(&plan, "127.0.0.1"), MARTIAN | OWN);
        assert_eq!(class_of(&plan, "0.0.0.0"), MARTIAN);
        assert_eq!(class_of(&plan, "224.0.0.5"), MARTIAN);
        assert_eq!(class_of(&plan, "255.255.255.255"), MARTIAN);
        // Ordinary outside hosts, private ones included (natgw may sit behind a NAT).
        assert_eq!(class_of(&plan, "198.51.100.10"), 0);
        assert_eq!(class_of(&plan, "192.0.2.254"), 0);
        assert_eq!(class_of(&plan, "192.168.1.1"), 0);
        assert_eq!(class_of(&plan, "100.64.0.1"), 0);
    }

    #[test]
    fn lan_interfaces_carry_only_their_own_hosts() {
        let plan = plan();
        assert_eq!(lan_verdict(&plan, 3, "10.0.1.10"), Some(lan_source::HOST));
        assert_eq!(lan_verdict(&plan, 3, "10.0.1.1"), Some(lan_source::OWN));
        assert_eq!(
            lan_verdict(&plan, 3, "10.0.1.0"),
            Some(lan_source::NOT_HOST)
        );
        assert_eq!(
            lan_verdict(&plan, 3, "10.0.1.255"),
            Some(lan_source::NOT_HOST)
        );
        // Another LAN's host, the outside, the WAN address: not on lan0.
        assert_eq!(lan_verdict(&plan, 3, "10.0.2.10"), None);
        assert_eq!(lan_verdict(&plan, 3, "198.51.100.10"), None);
        assert_eq!(lan_verdict(&plan, 3, "192.0.2.1"), None);
        assert_eq!(lan_verdict(&plan, 4, "10.0.2.10"), Some(lan_source::HOST));
    }

    #[test]
    fn only_lan_hosts_may_hold_mappings() {
        let plan = plan();
        assert_eq!(plan.lan_host(a("10.0.1.10")), Host::Lan { ifindex: 3 });
        assert_eq!(plan.lan_host(a("10.0.2.10")), Host::Lan { ifindex: 4 });
        assert_eq!(plan.lan_host(a("10.0.1.1")), Host::Own);
        assert_eq!(plan.lan_host(a("10.0.1.255")), Host::Reserved);
        assert_eq!(plan.lan_host(a("10.0.1.0")), Host::Reserved);
        assert_eq!(plan.lan_host(a("198.51.100.10")), Host::Outside);
        assert_eq!(plan.lan_host(a("192.0.2.1")), Host::Outside);
        assert!(plan.refusal(a("10.0.1.10")).is_none());
        let why = plan.refusal(a("198.51.100.10")).unwrap();
        assert!(why.contains("10.0.1.0/24, 10.0.2.0/24"), "{why}");
        assert!(plan
            .refusal(a("10.0.1.1"))
            .unwrap()
            .contains("gateway itself"));
    }

    #[test]
    fn point_to_point_prefixes_have_no_network_or_broadcast() {
        // RFC 3021: both addresses of a /31 are hosts.
        let plan = AddressPlan::new(
            vec![LanIface {
                ifindex: 3,
                prefixes: vec![p("10.0.9.0/31")],
            }],
            &[p("10.0.9.0/31")],
        );
        assert_eq!(plan.lan_host(a("10.0.9.1")), Host::Lan { ifindex: 3 });
        assert_eq!(plan.lan_host(a("10.0.9.0")), Host::Own);
    }

    #[test]
    fn broadcast_sources_are_never_lan_hosts() {
        // issue #17 item 6: a directed broadcast on a /24; on a /31 (no broadcast of
        // its own) and a /32 (the gateway alone) the limited broadcast and the old
        // /24 broadcast fall outside every prefix: a miss, which the data path drops.
        let plan = plan();
        assert_eq!(
            lan_verdict(&plan, 3, "10.0.1.255"),
            Some(lan_source::NOT_HOST)
        );
        assert_eq!(lan_verdict(&plan, 3, "255.255.255.255"), None);
        for prefix in ["10.0.9.1/31", "10.0.9.1/32"] {
            let plan = AddressPlan::new(
                vec![LanIface {
                    ifindex: 3,
                    prefixes: vec![p(prefix)],
                }],
                &[p(prefix)],
            );
            for src in ["255.255.255.255", "10.0.9.255"] {
                assert_eq!(lan_verdict(&plan, 3, src), None, "{src} on {prefix}");
            }
            assert_eq!(lan_verdict(&plan, 3, "10.0.9.1"), Some(lan_source::OWN));
        }
    }
}
