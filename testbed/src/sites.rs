//! A second topology for hole punching: two sites, each a LAN behind its own natgw
//! gateway, a third site behind the kernel's own NAT (nftables masquerade) for
//! comparison, and a rendezvous host, all joined by an "internet" router.
//!
//! ```text
//!  a1 10.1.0.2 ┐ swa                  GWA (natgw)
//!              ├ (bridge) ── lan0 10.1.0.1  wan0 192.0.2.1 ── sitea 192.0.2.254 ───────┐
//!  a2 10.1.0.3 ┘                                                                       │
//!                            GWB (natgw)                                               │ INET (router,
//!  b1 10.2.0.2 ───────────── lan0 10.2.0.1  wan0 198.51.100.1 ── siteb 198.51.100.254 ─┤ forwarding,
//!                            GWK (nftables masquerade)                                 │ connected
//!  k1 10.3.0.2 ───────────── lan0 10.3.0.1  wan0 203.0.113.1 ── sitek 203.0.113.254 ───┤ routes only)
//!                                                                                      │
//!              rendezvous host rdv: eth0 198.18.0.1 ── rdv0 198.18.0.254 ──────────────┘
//! ```
//!
//! The internet uses documentation prefixes (RFC 5737) for the three gateways and the
//! benchmarking prefix 198.18.0.0/24 (RFC 2544) for the rendezvous host; the LANs are
//! 10.1.0.0/24, 10.2.0.0/24 and 10.3.0.0/24. The inet router knows only its connected
//! subnets, so nothing from a LAN is answered unless a NAT translated it, and two sites
//! can reach each other only through their gateways' external addresses.
//!
//! Site A has two hosts on one Ethernet segment (a bridge in its own namespace `swa`),
//! so they can reach each other directly on the LAN or through the gateway
//! (hairpinning). Nothing is started on the natgw gateways: the caller runs
//! `natgw run --wan wan0 --lan lan0` there, or loads a kernel NAT with
//! [`Site::load_nft`] instead (two endpoint-dependent NATs, [`KernelNat::EndpointDependent`],
//! make a direct path impossible). The kernel-NAT gateway gets its nftables rule set
//! from [`Sites::new`] (see [`KernelNat`]); [`drop_udp_ruleset`] adds a firewall that
//! drops all UDP in both directions to any gateway.
//!
//! Namespaces are named `ngw<pid>x<n>-<role>` like the main testbed's (roles `inet`,
//! `rdv`, `gwa`, `swa`, `a1`, `a2`, `gwb`, `b1`, `gwk`, `k1`) and removed when the
//! [`Sites`] value is dropped.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::registry::with_fresh_id;
use crate::rtnl::Rtnl;
use crate::topology::{configure, create_veths, Host, SUBNET_PREFIX_LEN};

/// Site A gateway's external address (natgw).
pub const SITE_A_WAN_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Site B gateway's external address (natgw).
pub const SITE_B_WAN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The kernel-NAT site's gateway external address (nftables masquerade).
pub const SITE_K_WAN_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The inet router's address facing site A, site A gateway's default route.
pub const INET_SITE_A_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
/// The inet router's address facing site B.
pub const INET_SITE_B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
/// The inet router's address facing the kernel-NAT site.
pub const INET_SITE_K_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
/// The inet router's address facing the rendezvous host.
pub const INET_RENDEZVOUS_SIDE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// The rendezvous host's address: where `natgw rendezvous` listens.
pub const RENDEZVOUS_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// Site A gateway's LAN address.
pub const SITE_A_LAN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// Site B gateway's LAN address.
pub const SITE_B_LAN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
/// The kernel-NAT gateway's LAN address.
pub const SITE_K_LAN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 1);
/// Host a1 on site A's LAN.
pub const A1_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
/// Host a2 on site A's LAN (same segment as a1).
pub const A2_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);
/// Host b1 on site B's LAN.
pub const B1_ADDR: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
/// Host k1 on the kernel-NAT site's LAN.
pub const K1_ADDR: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 2);

/// Every site gateway's external interface.
pub const SITE_WAN_IF: &str = "wan0";
/// Every site gateway's LAN interface.
pub const SITE_LAN_IF: &str = "lan0";
/// The inet router's interfaces facing site A, site B, the kernel-NAT site and the
/// rendezvous host.
pub const INET_IFS: [&str; 4] = ["sitea", "siteb", "sitek", "rdv0"];
/// The bridge of site A's LAN, in the `swa` namespace.
pub const SITE_A_BRIDGE: &str = "br0";

/// The interface every host has.
const HOST_IF: &str = "eth0";
/// Site A's switch ports: to the gateway, a1 and a2.
const SITE_A_PORTS: [&str; 3] = ["gw", "a1", "a2"];
/// The nftables table the kernel-NAT gateway gets.
pub const KERNEL_NAT_TABLE: &str = "sites_kernel_nat";
/// How the kernel-NAT site's gateway translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelNat {
    /// `oifname "wan0" masquerade`: conntrack keeps the source port when the
    /// resulting connection is unique, and picks another one otherwise.
    #[default]
    Masquerade,
    /// `masquerade fully-random`: every new connection gets a random source port.
    MasqueradeFullyRandom,
    /// `masquerade random,fully-random`: an endpoint-dependent ("symmetric") NAT.
    /// Every new connection, so every new destination of one socket, gets a new
    /// random source port (RFC 4787 §4.1: address-and-port-dependent mapping), and
    /// only the destination a mapping was made for gets through (address-and-port-
    /// dependent filtering). Hole punching cannot get through two of these.
    EndpointDependent,
    /// No rule: the gateway only routes (the caller configures it).
    Unconfigured,
}

impl KernelNat {
    /// The nftables rule set for this mode, or `None` for [`KernelNat::Unconfigured`].
    #[must_use]
    pub fn ruleset(self) -> Option<String> {
        let flags = match self {
            Self::Masquerade => "",
            Self::MasqueradeFullyRandom => " fully-random",
            Self::EndpointDependent => " random,fully-random",
            Self::Unconfigured => return None,
        };
        Some(format!(
            "table ip {KERNEL_NAT_TABLE} {{\n  chain postrouting {{\n    type nat hook \
             postrouting priority srcnat; policy accept;\n    oifname \"{SITE_WAN_IF}\" \
             masquerade{flags}\n  }}\n}}\n"
        ))
    }
}

/// The nftables table of [`drop_udp_ruleset`].
pub const FIREWALL_TABLE: &str = "sites_firewall";

/// A firewall that drops every UDP packet through or to the gateway, in both
/// directions, and lets everything else pass; each drop rule counts what it
/// dropped (`nft list table ip sites_firewall`): `outbound` (LAN → WAN), `inbound`
/// (WAN → LAN, replies included) and `to_gateway` (UDP addressed to the gateway
/// itself, such as an unsolicited packet to its external address).
#[must_use]
pub fn drop_udp_ruleset() -> String {
    format!(
        "table ip {FIREWALL_TABLE} {{\n  chain forward {{\n    type filter hook forward \
         priority filter; policy accept;\n    iifname \"{SITE_LAN_IF}\" meta l4proto udp \
         counter drop comment \"outbound\"\n    iifname \"{SITE_WAN_IF}\" meta l4proto udp \
         counter drop comment \"inbound\"\n  }}\n  chain input {{\n    type filter hook \
         input priority filter; policy accept;\n    meta l4proto udp counter drop comment \
         \"to_gateway\"\n  }}\n}}\n"
    )
}

/// What [`Sites::new`] builds.
#[derive(Debug, Clone, Copy, Default)]
pub struct SitesOptions {
    /// The kernel-NAT site's translation.
    pub kernel_nat: KernelNat,
}

/// One site: a gateway with `wan0` and `lan0`, and the hosts on its LAN.
#[derive(Debug)]
pub struct Site {
    /// Short name: `a`, `b` or `k`.
    pub name: &'static str,
    /// The gateway's namespace (natgw or nftables runs here).
    pub gateway: Netns,
    /// The gateway's external address on [`SITE_WAN_IF`].
    pub wan_addr: Ipv4Addr,
    /// The gateway's address on [`SITE_LAN_IF`], the hosts' default route (and where a
    /// PCP server would listen).
    pub lan_addr: Ipv4Addr,
    /// The LAN prefix, `(network, length)`.
    pub lan_net: (Ipv4Addr, u8),
    /// The hosts on the LAN, each with `eth0` and a default route via
    /// [`Site::lan_addr`].
    pub hosts: Vec<Host>,
    /// The bridge namespace joining the LAN, when the site has more than one host.
    pub switch: Option<Netns>,
}

impl Site {
    /// Loads an nftables rule set (`nft -f -`) in the gateway's namespace: a kernel
    /// NAT ([`KernelNat::ruleset`]) on a gateway that runs no natgw, or a firewall
    /// ([`drop_udp_ruleset`]) beside whatever translates.
    ///
    /// # Errors
    /// When `nft` is missing or refuses the rule set.
    pub fn load_nft(&self, ruleset: &str) -> Result<()> {
        load_nft(&self.gateway, ruleset)
    }

    /// The packet counts of the named counters of one nftables table on the
    /// gateway (see [`nft_counters`]).
    ///
    /// # Errors
    /// When `nft` fails, or a named rule is not in the table.
    pub fn nft_counters(&self, table: &str, names: &[&str]) -> Result<Vec<u64>> {
        nft_counters(&self.gateway, table, names)
    }

    fn namespaces_mut(&mut self) -> impl Iterator<Item = &mut Netns> {
        std::iter::once(&mut self.gateway)
            .chain(self.switch.as_mut())
            .chain(self.hosts.iter_mut().map(|host| &mut host.ns))
    }

    fn namespaces(&self) -> impl Iterator<Item = &Netns> {
        std::iter::once(&self.gateway)
            .chain(self.switch.as_ref())
            .chain(self.hosts.iter().map(|host| &host.ns))
    }
}

/// The hole-punching topology (see the module docs); every namespace is removed when it
/// is dropped.
#[derive(Debug)]
pub struct Sites {
    /// The "internet": routes between the three gateways and the rendezvous host.
    pub inet: Netns,
    /// The rendezvous host on the internet ([`RENDEZVOUS_ADDR`]).
    pub rendezvous: Host,
    /// Site A (natgw): hosts a1 and a2 on one segment.
    pub a: Site,
    /// Site B (natgw): host b1.
    pub b: Site,
    /// The kernel-NAT site (nftables masquerade): host k1.
    pub k: Site,
    /// How the kernel-NAT gateway was configured.
    pub kernel_nat: KernelNat,
    id: String,
}

/// The namespaces of one [`Sites`], before they are wired.
struct Namespaces {
    id: String,
    inet: Netns,
    rdv: Netns,
    gwa: Netns,
    swa: Netns,
    a1: Netns,
    a2: Netns,
    gwb: Netns,
    b1: Netns,
    gwk: Netns,
    k1: Netns,
}

impl Sites {
    /// Builds the topology over netlink, enables forwarding on the inet router and
    /// the three gateways, and loads the kernel-NAT gateway's nftables rule set.
    ///
    /// Synchronous and safe to call from async code, like [`crate::Testbed::new`]. On
    /// error, everything created so far is removed.
    ///
    /// # Errors
    /// When not root, when a namespace, link, address or route cannot be created, or
    /// when `nft` is missing or refuses the rule set.
    pub fn new(opts: SitesOptions) -> Result<Sites> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        let ns = create_namespaces()?;
        wire(&ns)?;
        if let Some(ruleset) = opts.kernel_nat.ruleset() {
            load_nft(&ns.gwk, &ruleset)?;
        }

        let host = |ns, addr, gateway| Host {
            ns,
            addr,
            prefix_len: SUBNET_PREFIX_LEN,
            gateway,
            ifname: HOST_IF.to_owned(),
        };
        let lan_net = |lan_addr: Ipv4Addr| {
            let [a, b, c, _] = lan_addr.octets();
            (Ipv4Addr::new(a, b, c, 0), SUBNET_PREFIX_LEN)
        };
        Ok(Sites {
            rendezvous: host(ns.rdv, RENDEZVOUS_ADDR, INET_RENDEZVOUS_SIDE_ADDR),
            a: Site {
                name: "a",
                gateway: ns.gwa,
                wan_addr: SITE_A_WAN_ADDR,
                lan_addr: SITE_A_LAN_ADDR,
                lan_net: lan_net(SITE_A_LAN_ADDR),
                hosts: vec![
                    host(ns.a1, A1_ADDR, SITE_A_LAN_ADDR),
                    host(ns.a2, A2_ADDR, SITE_A_LAN_ADDR),
                ],
                switch: Some(ns.swa),
            },
            b: Site {
                name: "b",
                gateway: ns.gwb,
                wan_addr: SITE_B_WAN_ADDR,
                lan_addr: SITE_B_LAN_ADDR,
                lan_net: lan_net(SITE_B_LAN_ADDR),
                hosts: vec![host(ns.b1, B1_ADDR, SITE_B_LAN_ADDR)],
                switch: None,
            },
            k: Site {
                name: "k",
                gateway: ns.gwk,
                wan_addr: SITE_K_WAN_ADDR,
                lan_addr: SITE_K_LAN_ADDR,
                lan_net: lan_net(SITE_K_LAN_ADDR),
                hosts: vec![host(ns.k1, K1_ADDR, SITE_K_LAN_ADDR)],
                switch: None,
            },
            inet: ns.inet,
            kernel_nat: opts.kernel_nat,
            id: ns.id,
        })
    }

    /// The common prefix of the namespace names (`ngw<pid>x<n>`).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Every namespace: inet, rendezvous, then each site's gateway, switch and hosts.
    #[must_use]
    pub fn namespaces(&self) -> Vec<&Netns> {
        [&self.inet, &self.rendezvous.ns]
            .into_iter()
            .chain(self.a.namespaces())
            .chain(self.b.namespaces())
            .chain(self.k.namespaces())
            .collect()
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        let namespaces = [&mut self.inet, &mut self.rendezvous.ns]
            .into_iter()
            .chain(self.a.namespaces_mut())
            .chain(self.b.namespaces_mut())
            .chain(self.k.namespaces_mut());
        for ns in namespaces {
            if let Err(e) = ns.remove_if_owned() {
                eprintln!("sites {}: {}", self.id, e.chain());
            }
        }
    }
}

/// Creates the namespaces under a fresh id, moving on to the next id if a name is taken.
fn create_namespaces() -> Result<Namespaces> {
    with_fresh_id(create_namespaces_for)
}

/// Creates `<id>-inet`, `<id>-rdv`, ...; a failure drops (removes) those created.
fn create_namespaces_for(id: &str) -> Result<Namespaces> {
    let create = |role: &str| Netns::create(&format!("{id}-{role}"));
    Ok(Namespaces {
        inet: create("inet")?,
        rdv: create("rdv")?,
        gwa: create("gwa")?,
        swa: create("swa")?,
        a1: create("a1")?,
        a2: create("a2")?,
        gwb: create("gwb")?,
        b1: create("b1")?,
        gwk: create("gwk")?,
        k1: create("k1")?,
        id: id.to_owned(),
    })
}

/// Creates the veth pairs and the bridge, then addresses, routes and forwarding.
fn wire(ns: &Namespaces) -> Result<()> {
    create_veths(
        &ns.inet,
        &[
            (INET_IFS[0], SITE_WAN_IF, &ns.gwa),
            (INET_IFS[1], SITE_WAN_IF, &ns.gwb),
            (INET_IFS[2], SITE_WAN_IF, &ns.gwk),
            (INET_IFS[3], HOST_IF, &ns.rdv),
        ],
    )?;
    create_veths(&ns.gwa, &[(SITE_LAN_IF, SITE_A_PORTS[0], &ns.swa)])?;
    create_veths(
        &ns.swa,
        &[
            (SITE_A_PORTS[1], HOST_IF, &ns.a1),
            (SITE_A_PORTS[2], HOST_IF, &ns.a2),
        ],
    )?;
    create_veths(&ns.gwb, &[(SITE_LAN_IF, HOST_IF, &ns.b1)])?;
    create_veths(&ns.gwk, &[(SITE_LAN_IF, HOST_IF, &ns.k1)])?;
    make_switch(&ns.swa)?;

    // Only connected subnets: no default route, no route to 10/8.
    configure(
        &ns.inet,
        &[
            (INET_IFS[0], INET_SITE_A_ADDR),
            (INET_IFS[1], INET_SITE_B_ADDR),
            (INET_IFS[2], INET_SITE_K_ADDR),
            (INET_IFS[3], INET_RENDEZVOUS_SIDE_ADDR),
        ],
        None,
        true,
    )?;
    for (gateway, lan, wan, next_hop) in [
        (&ns.gwa, SITE_A_LAN_ADDR, SITE_A_WAN_ADDR, INET_SITE_A_ADDR),
        (&ns.gwb, SITE_B_LAN_ADDR, SITE_B_WAN_ADDR, INET_SITE_B_ADDR),
        (&ns.gwk, SITE_K_LAN_ADDR, SITE_K_WAN_ADDR, INET_SITE_K_ADDR),
    ] {
        configure(
            gateway,
            &[(SITE_LAN_IF, lan), (SITE_WAN_IF, wan)],
            Some(next_hop),
            true,
        )?;
    }
    for (host, addr, gateway) in [
        (&ns.rdv, RENDEZVOUS_ADDR, INET_RENDEZVOUS_SIDE_ADDR),
        (&ns.a1, A1_ADDR, SITE_A_LAN_ADDR),
        (&ns.a2, A2_ADDR, SITE_A_LAN_ADDR),
        (&ns.b1, B1_ADDR, SITE_B_LAN_ADDR),
        (&ns.k1, K1_ADDR, SITE_K_LAN_ADDR),
    ] {
        configure(host, &[(HOST_IF, addr)], Some(gateway), false)?;
    }
    Ok(())
}

/// Inside `swa`: the bridge with the gateway's and the hosts' ports, all up.
fn make_switch(ns: &Netns) -> Result<()> {
    ns.try_run(|| {
        let rtnl = Rtnl::connect(ns.name())?;
        rtnl.set_up("lo")?;
        rtnl.add_bridge(SITE_A_BRIDGE)?;
        for port in SITE_A_PORTS {
            rtnl.set_bridge_port(port, SITE_A_BRIDGE)?;
            rtnl.set_up(port)?;
        }
        rtnl.set_up(SITE_A_BRIDGE)
    })?
}

/// The packet counts of the rules of `table` (family ip) in `ns` whose comments are
/// `names`, read with `nft list table ip TABLE`; each rule needs a `counter`.
///
/// # Errors
/// When `nft` fails, or a named rule is not in the table.
pub fn nft_counters(ns: &Netns, table: &str, names: &[&str]) -> Result<Vec<u64>> {
    let out = ns
        .command("nft")
        .args(["list", "table", "ip", table])
        .output()
        .map_err(|e| Error::os(format!("running nft in {}", ns.name()), e))?;
    let listing = String::from_utf8_lossy(&out.stdout);
    names
        .iter()
        .map(|name| {
            let tag = format!("comment \"{name}\"");
            listing
                .lines()
                .find(|line| line.contains(&tag))
                .and_then(|line| {
                    let rest = &line[line.find("packets ")? + "packets ".len()..];
                    rest.split_whitespace().next()?.parse().ok()
                })
                .ok_or_else(|| {
                    Error::os(
                        format!("no counter {name:?} in table {table}:\n{listing}"),
                        std::io::Error::from_raw_os_error(libc::ENOENT),
                    )
                })
        })
        .collect()
}

/// Loads `ruleset` with `nft -f -` inside `ns` (any namespace: a gateway, or the
/// inet router to cut paths between sites).
///
/// # Errors
/// When `nft` is missing or refuses the rule set.
pub fn load_nft(ns: &Netns, ruleset: &str) -> Result<()> {
    let what = format!(
        "loading the kernel NAT's rule set with nft in {}",
        ns.name()
    );
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::os(format!("{what} (is nftables installed?)"), e))?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(ruleset.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| Error::os(what.clone(), e))?;
    if let Some(Err(e)) = written {
        return Err(Error::os(what, e));
    }
    if !out.status.success() {
        return Err(Error::os(
            format!(
                "{what}: nft refused it: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            std::io::Error::from_raw_os_error(libc::EINVAL),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_nat_rulesets_name_the_wan_and_the_port_policy() {
        let plain = KernelNat::Masquerade.ruleset().unwrap_or_default();
        assert!(plain.contains("oifname \"wan0\" masquerade\n"), "{plain}");
        let random = KernelNat::MasqueradeFullyRandom
            .ruleset()
            .unwrap_or_default();
        assert!(random.contains("masquerade fully-random"), "{random}");
        assert_eq!(KernelNat::Unconfigured.ruleset(), None);
        let edm = KernelNat::EndpointDependent.ruleset().unwrap_or_default();
        assert!(edm.contains("masquerade random,fully-random"), "{edm}");
    }

    #[test]
    fn the_firewall_drops_udp_both_ways_and_names_its_counters() {
        let rules = drop_udp_ruleset();
        for needle in [
            "hook forward",
            "hook input",
            "iifname \"lan0\" meta l4proto udp counter drop comment \"outbound\"",
            "iifname \"wan0\" meta l4proto udp counter drop comment \"inbound\"",
            "meta l4proto udp counter drop comment \"to_gateway\"",
        ] {
            assert!(rules.contains(needle), "{needle} not in {rules}");
        }
    }
}
