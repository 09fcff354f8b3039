//! The natgw testbed: six namespaces wired with veth pairs (see the crate docs for the
//! picture), its address plan as constants, and [`Testbed`], which builds it and tears
//! it down on drop.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::Once;

use crate::error::{Error, Result};
use crate::netns::{write_sysctl_here, Netns};
use crate::registry::with_fresh_id;
use crate::rtnl::Rtnl;

/// Prefix length of every subnet in the testbed.
pub const SUBNET_PREFIX_LEN: u8 = 24;

/// lan-a's address (on its `eth0`).
pub const LAN_A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
/// lan-b's address (on its `eth0`).
pub const LAN_B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The gateway's address on `lan0`, lan-a's default route.
pub const GW_LAN_A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
/// The gateway's address on `lan1`, lan-b's default route.
pub const GW_LAN_B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
/// The gateway's external address on `wan0`: what the NAT translates to.
pub const GW_WAN_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The inet router's address on `gw0`, the gateway's default route.
pub const INET_GW_SIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
/// The inet router's address on `wana0`, wan-a's default route.
pub const INET_WAN_A_SIDE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The inet router's address on `wanb0`, wan-b's default route.
pub const INET_WAN_B_SIDE_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// wan-a's address (on its `eth0`).
pub const WAN_A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// wan-b's address (on its `eth0`).
pub const WAN_B_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The internal address space; the inet router has no route to it, so a packet that
/// leaves the gateway untranslated can never be answered.
pub const INTERNAL_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 0, 0), 8);

/// The gateway's LAN interfaces: `lan0` faces lan-a, `lan1` faces lan-b.
pub const GW_LAN_IFS: [&str; 2] = ["lan0", "lan1"];
/// The gateway's WAN interface, facing the inet router.
pub const GW_WAN_IF: &str = "wan0";
/// Every host's only interface.
pub const HOST_IF: &str = "eth0";
/// The inet router's interface facing the gateway.
pub const INET_GW_IF: &str = "gw0";
/// The inet router's interface facing wan-a.
pub const INET_WAN_A_IF: &str = "wana0";
/// The inet router's interface facing wan-b.
pub const INET_WAN_B_IF: &str = "wanb0";

/// The sysctl that turns a namespace into a router.
const IP_FORWARD: &str = "net/ipv4/ip_forward";

/// An end host: one namespace with `eth0` and a default route.
#[derive(Debug)]
pub struct Host {
    /// The host's namespace.
    pub ns: Netns,
    /// Its address on [`Host::ifname`].
    pub addr: Ipv4Addr,
    /// Prefix length of [`Host::addr`].
    pub prefix_len: u8,
    /// Its default route's next hop.
    pub gateway: Ipv4Addr,
    /// Its interface: always `eth0`.
    pub ifname: String,
}

/// The namespace where natgw runs: two LAN interfaces and one WAN interface,
/// IPv4 forwarding on, nothing attached.
#[derive(Debug)]
pub struct Gateway {
    /// The gateway's namespace.
    pub ns: Netns,
    /// LAN interfaces: `["lan0", "lan1"]`, facing lan-a and lan-b.
    pub lan_ifs: Vec<String>,
    /// The WAN interface: `wan0`.
    pub wan_if: String,
    /// The address on `wan0`: [`GW_WAN_ADDR`].
    pub wan_addr: Ipv4Addr,
    /// Prefix length of [`Gateway::wan_addr`].
    pub wan_prefix_len: u8,
    /// The default route's next hop: [`INET_GW_SIDE_ADDR`].
    pub wan_next_hop: Ipv4Addr,
    /// `(address, prefix length)` of each interface in [`Gateway::lan_ifs`], same order.
    pub lan_addrs: Vec<(Ipv4Addr, u8)>,
}

/// A complete testbed; every namespace is removed when it is dropped.
///
/// ```text
///  lan-a 10.0.1.2 --- lan0 10.0.1.1 ┐
///                                   gateway  wan0 192.0.2.1 --- gw0 192.0.2.254 ┐
///  lan-b 10.0.2.2 --- lan1 10.0.2.1 ┘                                           inet
///                                        wan-a 198.51.100.2 --- wana0 198.51.100.1 ┤
///                                        wan-b 203.0.113.2  --- wanb0 203.0.113.1  ┘
/// ```
#[derive(Debug)]
pub struct Testbed {
    /// The gateway, where natgw runs.
    pub gateway: Gateway,
    /// The "internet" router between the gateway and the WAN hosts.
    pub inet: Netns,
    /// LAN hosts behind the gateway: `[lan-a, lan-b]`.
    pub lan: Vec<Host>,
    /// Hosts on the internet side: `[wan-a, wan-b]`.
    pub wan: Vec<Host>,
    id: String,
}

/// The six namespaces of one testbed, before they are wired.
struct Namespaces {
    id: String,
    gw: Netns,
    inet: Netns,
    lan_a: Netns,
    lan_b: Netns,
    wan_a: Netns,
    wan_b: Netns,
}

impl Testbed {
    /// Builds the testbed: creates the namespaces, veth pairs, addresses and routes over
    /// netlink and enables forwarding in the gateway and the inet router.
    ///
    /// Synchronous; it may be called from inside a tokio runtime (all netlink work runs
    /// on short-lived threads with their own runtimes), but it blocks the calling thread
    /// for the few milliseconds it takes. The first call in a process also runs
    /// [`Testbed::cleanup_stale`]. On error, everything created so far is removed.
    pub fn new() -> Result<Testbed> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        static CLEANUP_STALE: Once = Once::new();
        CLEANUP_STALE.call_once(|| {
            if let Err(e) = Testbed::cleanup_stale() {
                eprintln!("testbed: removing stale namespaces: {}", e.chain());
            }
        });

        let ns = create_namespaces()?;
        wire(&ns)?;

        let host = |ns, addr, gateway| Host {
            ns,
            addr,
            prefix_len: SUBNET_PREFIX_LEN,
            gateway,
            ifname: HOST_IF.to_owned(),
        };
        Ok(Testbed {
            gateway: Gateway {
                ns: ns.gw,
                lan_ifs: GW_LAN_IFS.iter().map(|&name| name.to_owned()).collect(),
                wan_if: GW_WAN_IF.to_owned(),
                wan_addr: GW_WAN_ADDR,
                wan_prefix_len: SUBNET_PREFIX_LEN,
                wan_next_hop: INET_GW_SIDE_ADDR,
                lan_addrs: vec![
                    (GW_LAN_A_ADDR, SUBNET_PREFIX_LEN),
                    (GW_LAN_B_ADDR, SUBNET_PREFIX_LEN),
                ],
            },
            inet: ns.inet,
            lan: vec![
                host(ns.lan_a, LAN_A_ADDR, GW_LAN_A_ADDR),
                host(ns.lan_b, LAN_B_ADDR, GW_LAN_B_ADDR),
            ],
            wan: vec![
                host(ns.wan_a, WAN_A_ADDR, INET_WAN_A_SIDE_ADDR),
                host(ns.wan_b, WAN_B_ADDR, INET_WAN_B_SIDE_ADDR),
            ],
            id: ns.id,
        })
    }

    /// Removes namespaces left behind by testbeds of processes that no longer exist
    /// (e.g. a test run killed with SIGKILL); see [`crate::cleanup_stale`].
    pub fn cleanup_stale() -> Result<usize> {
        crate::registry::cleanup_stale()
    }

    /// This testbed's id, the common prefix of its namespace names (`ngw<pid>x<n>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Every namespace of the testbed: gateway, inet, LAN hosts, WAN hosts.
    pub fn namespaces(&self) -> Vec<&Netns> {
        [&self.gateway.ns, &self.inet]
            .into_iter()
            .chain(self.lan.iter().map(|host| &host.ns))
            .chain(self.wan.iter().map(|host| &host.ns))
            .collect()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let namespaces = [&mut self.gateway.ns, &mut self.inet]
            .into_iter()
            .chain(self.lan.iter_mut().map(|host| &mut host.ns))
            .chain(self.wan.iter_mut().map(|host| &mut host.ns));
        for ns in namespaces {
            if let Err(e) = ns.remove_if_owned() {
                eprintln!("testbed {}: {}", self.id, e.chain());
            }
        }
    }
}

/// Creates the six namespaces under a fresh testbed id, moving on to the next id if a
/// name is already taken.
fn create_namespaces() -> Result<Namespaces> {
    with_fresh_id(create_namespaces_for)
}

/// Creates `<id>-gw`, `<id>-inet`, `<id>-lana`, ...; a failure drops (removes) the
/// namespaces already created.
fn create_namespaces_for(id: &str) -> Result<Namespaces> {
    let create = |role: &str| Netns::create(&format!("{id}-{role}"));
    Ok(Namespaces {
        gw: create("gw")?,
        inet: create("inet")?,
        lan_a: create("lana")?,
        lan_b: create("lanb")?,
        wan_a: create("wana")?,
        wan_b: create("wanb")?,
        id: id.to_owned(),
    })
}

/// Creates the veth pairs, then configures every namespace.
fn wire(ns: &Namespaces) -> Result<()> {
    // Each pair is created in the router-side namespace with its peer placed straight
    // into the other namespace, under its final name.
    create_veths(
        &ns.gw,
        &[
            (GW_LAN_IFS[0], HOST_IF, &ns.lan_a),
            (GW_LAN_IFS[1], HOST_IF, &ns.lan_b),
            (GW_WAN_IF, INET_GW_IF, &ns.inet),
        ],
    )?;
    create_veths(
        &ns.inet,
        &[
            (INET_WAN_A_IF, HOST_IF, &ns.wan_a),
            (INET_WAN_B_IF, HOST_IF, &ns.wan_b),
        ],
    )?;

    configure(
        &ns.gw,
        &[
            (GW_LAN_IFS[0], GW_LAN_A_ADDR),
            (GW_LAN_IFS[1], GW_LAN_B_ADDR),
            (GW_WAN_IF, GW_WAN_ADDR),
        ],
        Some(INET_GW_SIDE_ADDR),
        true,
    )?;
    // No default route and no route to INTERNAL_NET: only connected subnets.
    configure(
        &ns.inet,
        &[
            (INET_GW_IF, INET_GW_SIDE_ADDR),
            (INET_WAN_A_IF, INET_WAN_A_SIDE_ADDR),
            (INET_WAN_B_IF, INET_WAN_B_SIDE_ADDR),
        ],
        None,
        true,
    )?;
    for (host, addr, gateway) in [
        (&ns.lan_a, LAN_A_ADDR, GW_LAN_A_ADDR),
        (&ns.lan_b, LAN_B_ADDR, GW_LAN_B_ADDR),
        (&ns.wan_a, WAN_A_ADDR, INET_WAN_A_SIDE_ADDR),
        (&ns.wan_b, WAN_B_ADDR, INET_WAN_B_SIDE_ADDR),
    ] {
        configure(host, &[(HOST_IF, addr)], Some(gateway), false)?;
    }
    Ok(())
}

/// Creates veth pairs `(local name, peer name, peer namespace)` inside `ns`.
pub(crate) fn create_veths(ns: &Netns, pairs: &[(&str, &str, &Netns)]) -> Result<()> {
    let peer_fds = pairs
        .iter()
        .map(|(_, _, peer_ns)| peer_ns.open_fd())
        .collect::<Result<Vec<_>>>()?;
    ns.try_run(|| {
        let rtnl = Rtnl::connect(ns.name())?;
        for ((local, peer, peer_ns), peer_fd) in pairs.iter().zip(&peer_fds) {
            rtnl.add_veth(local, peer, peer_fd.as_fd(), peer_ns.name())?;
        }
        Ok(())
    })?
}

/// Inside `ns`: brings up `lo` and each interface with its address (on a
/// [`SUBNET_PREFIX_LEN`] subnet), adds the default route and enables forwarding.
pub(crate) fn configure(
    ns: &Netns,
    interfaces: &[(&str, Ipv4Addr)],
    default_via: Option<Ipv4Addr>,
    forwarding: bool,
) -> Result<()> {
    ns.try_run(|| {
        let rtnl = Rtnl::connect(ns.name())?;
        rtnl.set_up("lo")?;
        for &(ifname, addr) in interfaces {
            rtnl.add_ipv4(ifname, addr, SUBNET_PREFIX_LEN)?;
            rtnl.set_up(ifname)?;
        }
        if let Some(next_hop) = default_via {
            rtnl.add_default_route(next_hop)?;
        }
        if forwarding {
            write_sysctl_here(ns.name(), IP_FORWARD, "1")?;
        }
        Ok(())
    })?
}
