//! The interfaces natgw runs on as found at start: the WAN, the LANs, the gateway's
//! addresses and the external address pool.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Result};
use log::warn;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::datapath::netlink::{Link, NetlinkError, Rtnl};
use crate::datapath::pool;
use natgw_proto::prefix::{check_no_overlap, IfacePrefix, Ipv4Prefix};

/// What an interface is to the NAT, in the state file and status output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Internal side.
    Lan,
    /// External side.
    Wan,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Lan => "lan",
            Self::Wan => "wan",
        })
    }
}

/// The interfaces as found at start.
#[derive(Debug)]
pub struct Topology {
    /// The WAN interface.
    pub wan: Link,
    /// The LAN interfaces, in the order given.
    pub lans: Vec<Link>,
    /// Every IPv4 address of the gateway (all interfaces), kept current.
    pub attached: Vec<Ipv4Prefix>,
    /// The main external address (the pool's first) with its WAN prefix.
    pub external: Ipv4Prefix,
    /// The external address pool, `external` first (RFC 4787 REQ-2).
    pub pool: Vec<Ipv4Addr>,
    /// The pool is keepalived's virtual addresses (`--ha`): they count as the
    /// gateway's own in the source checks whether present or not.
    pub virtual_pool: bool,
}

impl Topology {
    /// Looks up the interfaces `settings` name and their addresses, checks that the
    /// LAN prefixes do not overlap each other or the WAN's, and resolves the external
    /// address pool.
    ///
    /// # Errors
    /// A missing interface, overlapping prefixes, no usable external address, or
    /// one interface named twice.
    pub async fn resolve(rtnl: &Rtnl, settings: &Settings) -> Result<Self> {
        let lookup = |name: String, role: &'static str| async move {
            rtnl.link(&name).await.map_err(|e| match e {
                NetlinkError::NoSuchInterface(_) => anyhow!(e),
                other => anyhow!(other).context(format!("looking up {role} interface {name}")),
            })
        };
        let wan = lookup(settings.wan.clone(), "WAN").await?;
        let mut lans = Vec::new();
        for name in &settings.lan {
            lans.push(lookup(name.clone(), "LAN").await?);
        }
        let tag = |l: &Link| {
            l.ipv4
                .iter()
                .map(|p| IfacePrefix {
                    iface: l.name.clone(),
                    prefix: *p,
                })
                .collect::<Vec<_>>()
        };
        let lan_prefixes: Vec<_> = lans.iter().flat_map(tag).collect();
        check_no_overlap(&lan_prefixes, &tag(&wan))?;
        let pool = pool::resolve(
            &settings.external,
            &wan.name,
            &wan.ipv4,
            &lan_prefixes,
            settings.ha.keepalived,
        )?;
        let external = pool[0];
        let pool = pool.iter().map(Ipv4Prefix::addr).collect();
        for l in &lans {
            if l.ipv4.is_empty() {
                warn!(
                    "iface.no_ipv4 name={}: no IPv4 address, so no internal prefix comes from it; \
                     its hosts are translated only if they fall inside another LAN's prefix",
                    l.name
                );
            }
        }
        let all = rtnl.all_ipv4().await?.into_iter().map(|(_, p)| p).collect();
        let distinct: BTreeSet<_> = lans
            .iter()
            .map(|l| l.ifindex)
            .chain([wan.ifindex])
            .collect();
        if distinct.len() != lans.len() + 1 {
            bail!("the WAN and LAN interface names must refer to distinct interfaces");
        }
        let mut topology = Self {
            wan,
            lans,
            attached: Vec::new(),
            external,
            pool,
            virtual_pool: settings.ha.keepalived,
        };
        topology.set_attached(all);
        Ok(topology)
    }

    /// Sets the gateway's addresses to `all` (every IPv4 address of every
    /// interface), with the virtual pool's addresses added where absent: the WAN must
    /// never accept them as a source, on the standby too.
    pub fn set_attached(&mut self, mut all: Vec<Ipv4Prefix>) {
        if self.virtual_pool {
            for a in &self.pool {
                if !all.iter().any(|p| p.addr() == *a) {
                    all.push(Ipv4Prefix::host(*a));
                }
            }
        }
        self.attached = all;
    }

    /// Whether every address of the pool is on the WAN now (with `--ha`: this
    /// gateway holds keepalived's virtual addresses).
    #[must_use]
    pub fn pool_present(&self) -> bool {
        self.pool
            .iter()
            .all(|a| self.wan.ipv4.iter().any(|p| p.addr() == *a))
    }
}
