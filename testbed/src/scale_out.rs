//! Scale-out with deterministic port blocks (issue #16 item 2): three natgw gateways
//! behind a LAN router that routes each share of internal hosts to its gateway by
//! source address, and a WAN router that routes each share's external address to the
//! same gateway.
//!
//! ```text
//!                         LANR (router)                 G0 lan0 10.0.0.1/24  wan0 100.64.0.2 ─ w0 ┐
//! hosts eth0 10.0.0.N ── h0 10.0.0.254  g0 g1 g2 ────── G1 lan0 10.0.0.2/24  wan0 100.64.1.2 ─ w1 ┤ WANR
//!  (default via .254)      ip rule from SHARE → table   G2 lan0 10.0.0.3/24  wan0 100.64.2.2 ─ w2 ┤ (router)
//!                          default via Gk metric 10                                              │
//!                          default via Gk+1 metric 20                srv eth0 198.51.100.2 ── s0 ┘
//! ```
//!
//! - The internal hosts are addresses of one namespace (`hosts`), each a source a
//!   socket binds to; they reach everything through the LAN router 10.0.0.254.
//! - Each gateway's `lan0` is a point-to-point veth to the LAN router, addressed in
//!   the hosts' prefix (10.0.0.0/24), so that natgw's LAN source check sees the
//!   hosts as its own LAN's; the router answers ARP for the hosts there (proxy ARP).
//! - Share `k` (a list of internal prefixes) goes to gateway `k` (metric 10) and,
//!   when that gateway's link is down, to gateway `k+1` (metric 20): the router
//!   ignores routes over links without carrier (`ignore_routes_with_linkdown`).
//! - The pool (one external address per share, all of them on every gateway's
//!   `wan0` as /32s) is routed the same way by the WAN router: share `k`'s address via
//!   gateway `k`, metric 10, and via gateway `k+1`, metric 20.
//! - A server (`srv`, 198.51.100.2) sits behind the WAN router; the WAN router knows
//!   no route to 10/8, so only translated traffic gets through.
//!
//! Nothing runs on the gateways: the caller starts natgw there. Namespaces are named
//! `ngw<pid>x<n>-<role>` (roles `lanr`, `hosts`, `g0`-`g2`, `wanr`, `srv`) and removed
//! when the [`ScaleOut`] value is dropped.

use std::net::Ipv4Addr;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::registry::with_fresh_id;
use crate::topology::create_veths;

/// The LAN router's address, the hosts' default route.
pub const LAN_ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
/// The server behind the WAN router.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The WAN router's address facing the server.
pub const WAN_ROUTER_SERVER_SIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Gateways in the testbed.
pub const GATEWAYS: usize = 3;

/// Gateway `k`'s LAN address.
#[must_use]
pub const fn gateway_lan_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 1 + k as u8)
}

/// Gateway `k`'s address on its link to the WAN router.
#[must_use]
pub const fn gateway_wan_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, k as u8, 2)
}

/// The WAN router's address on its link to gateway `k`.
#[must_use]
pub const fn wan_router_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, k as u8, 1)
}

/// What the routers route: per share (one per gateway), its internal prefixes and
/// its external addresses.
#[derive(Debug, Clone)]
pub struct ShareRoutes {
    /// Internal prefixes, `(network, length)`.
    pub internal: Vec<(Ipv4Addr, u8)>,
    /// External addresses.
    pub external: Vec<Ipv4Addr>,
}

/// The testbed; removed when dropped.
#[derive(Debug)]
pub struct ScaleOut {
    /// The LAN router.
    pub lan_router: Netns,
    /// The internal hosts' namespace.
    pub hosts: Netns,
    /// The gateways (`lan0`, `wan0`).
    pub gateways: Vec<Netns>,
    /// The WAN router.
    pub wan_router: Netns,
    /// The server.
    pub server: Netns,
    id: String,
}

/// Runs `ip ARGS` in `ns`.
///
/// # Errors
/// When `ip` cannot run or fails.
pub fn ip(ns: &Netns, args: &[&str]) -> Result<()> {
    let out = ns
        .command("ip")
        .args(args)
        .output()
        .map_err(|e| Error::os(format!("running ip {} in {}", args.join(" "), ns.name()), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::os(
            format!("ip {} in {}", args.join(" "), ns.name()),
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        ))
    }
}

fn sysctl(ns: &Netns, key: &str, value: &str) -> Result<()> {
    ns.set_sysctl(key, value)
}

impl ScaleOut {
    /// Builds the topology: `hosts` are the internal hosts' addresses (in
    /// 10.0.0.0/24), `shares` what each gateway's share is (one per gateway).
    ///
    /// # Errors
    /// When not root, or a namespace, link, address, rule or route cannot be made;
    /// what was created is removed.
    pub fn new(hosts: &[Ipv4Addr], shares: &[ShareRoutes]) -> Result<ScaleOut> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        if shares.len() != GATEWAYS {
            return Err(Error::os(
                format!(
                    "building the scale-out testbed with {} shares",
                    shares.len()
                ),
                std::io::Error::other(format!("it has {GATEWAYS} gateways, one share each")),
            ));
        }
        let tb = with_fresh_id(|id| {
            let create = |role: &str| Netns::create(&format!("{id}-{role}"));
            Ok(ScaleOut {
                lan_router: create("lanr")?,
                hosts: create("hosts")?,
                gateways: (0..GATEWAYS)
                    .map(|k| create(&format!("g{k}")))
                    .collect::<Result<_>>()?,
                wan_router: create("wanr")?,
                server: create("srv")?,
                id: id.to_owned(),
            })
        })?;
        tb.wire(hosts, shares)?;
        Ok(tb)
    }

    /// The common prefix of the namespace names.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    fn wire(&self, hosts: &[Ipv4Addr], shares: &[ShareRoutes]) -> Result<()> {
        let (lanr, wanr) = (&self.lan_router, &self.wan_router);
        create_veths(lanr, &[("h0", "eth0", &self.hosts)])?;
        create_veths(wanr, &[("s0", "eth0", &self.server)])?;
        for (k, g) in self.gateways.iter().enumerate() {
            create_veths(lanr, &[(&format!("g{k}"), "lan0", g)])?;
            create_veths(wanr, &[(&format!("w{k}"), "wan0", g)])?;
        }
        for ns in [lanr, wanr, &self.hosts, &self.server]
            .into_iter()
            .chain(&self.gateways)
        {
            ip(ns, &["link", "set", "lo", "up"])?;
        }

        // The hosts: every address on eth0, default via the LAN router; no redirects.
        ip(&self.hosts, &["link", "set", "eth0", "up"])?;
        for h in hosts {
            ip(
                &self.hosts,
                &["addr", "add", &format!("{h}/24"), "dev", "eth0"],
            )?;
        }
        ip(
            &self.hosts,
            &[
                "route",
                "add",
                "default",
                "via",
                &LAN_ROUTER_ADDR.to_string(),
            ],
        )?;
        sysctl(&self.hosts, "net/ipv4/conf/all/accept_redirects", "0")?;

        // The LAN router: the hosts on h0; gateway k on gk as a /32, with proxy ARP
        // for the hosts; a table per share with the primary and the backup gateway.
        sysctl(lanr, "net/ipv4/ip_forward", "1")?;
        for key in ["all", "default"] {
            sysctl(lanr, &format!("net/ipv4/conf/{key}/rp_filter"), "0")?;
            sysctl(lanr, &format!("net/ipv4/conf/{key}/send_redirects"), "0")?;
            sysctl(
                lanr,
                &format!("net/ipv4/conf/{key}/ignore_routes_with_linkdown"),
                "1",
            )?;
        }
        ip(
            lanr,
            &["addr", "add", &format!("{LAN_ROUTER_ADDR}/24"), "dev", "h0"],
        )?;
        ip(lanr, &["link", "set", "h0", "up"])?;
        for k in 0..GATEWAYS {
            let dev = format!("g{k}");
            for key in ["rp_filter", "send_redirects"] {
                sysctl(lanr, &format!("net/ipv4/conf/{dev}/{key}"), "0")?;
            }
            sysctl(lanr, &format!("net/ipv4/conf/{dev}/proxy_arp"), "1")?;
            sysctl(
                lanr,
                &format!("net/ipv4/conf/{dev}/ignore_routes_with_linkdown"),
                "1",
            )?;
            ip(lanr, &["link", "set", &dev, "up"])?;
            ip(
                lanr,
                &[
                    "route",
                    "add",
                    &format!("{}/32", gateway_lan_addr(k)),
                    "dev",
                    &dev,
                ],
            )?;
        }
        for (k, share) in shares.iter().enumerate() {
            let table = (100 + k).to_string();
            for (net, len) in &share.internal {
                ip(
                    lanr,
                    &[
                        "rule",
                        "add",
                        "from",
                        &format!("{net}/{len}"),
                        "iif",
                        "h0",
                        "lookup",
                        &table,
                    ],
                )?;
            }
            for (gw, metric) in [(k, "10"), ((k + 1) % GATEWAYS, "20")] {
                ip(
                    lanr,
                    &[
                        "route",
                        "add",
                        "default",
                        "via",
                        &gateway_lan_addr(gw).to_string(),
                        "dev",
                        &format!("g{gw}"),
                        "metric",
                        metric,
                        "table",
                        &table,
                    ],
                )?;
            }
        }

        // The gateways: lan0 in the hosts' prefix, wan0 with its link address and the
        // whole pool as /32s, default via the WAN router.
        for (k, g) in self.gateways.iter().enumerate() {
            sysctl(g, "net/ipv4/ip_forward", "1")?;
            ip(
                g,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", gateway_lan_addr(k)),
                    "dev",
                    "lan0",
                ],
            )?;
            ip(
                g,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", gateway_wan_addr(k)),
                    "dev",
                    "wan0",
                ],
            )?;
            for share in shares {
                for a in &share.external {
                    ip(g, &["addr", "add", &format!("{a}/32"), "dev", "wan0"])?;
                }
            }
            ip(g, &["link", "set", "lan0", "up"])?;
            ip(g, &["link", "set", "wan0", "up"])?;
            ip(
                g,
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    &wan_router_addr(k).to_string(),
                ],
            )?;
        }

        // The WAN router: each share's addresses via its gateway, then the backup.
        sysctl(wanr, "net/ipv4/ip_forward", "1")?;
        for key in ["all", "default"] {
            sysctl(wanr, &format!("net/ipv4/conf/{key}/rp_filter"), "0")?;
            sysctl(
                wanr,
                &format!("net/ipv4/conf/{key}/ignore_routes_with_linkdown"),
                "1",
            )?;
        }
        ip(
            wanr,
            &[
                "addr",
                "add",
                &format!("{WAN_ROUTER_SERVER_SIDE}/24"),
                "dev",
                "s0",
            ],
        )?;
        ip(wanr, &["link", "set", "s0", "up"])?;
        for k in 0..GATEWAYS {
            let dev = format!("w{k}");
            sysctl(
                wanr,
                &format!("net/ipv4/conf/{dev}/ignore_routes_with_linkdown"),
                "1",
            )?;
            ip(
                wanr,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", wan_router_addr(k)),
                    "dev",
                    &dev,
                ],
            )?;
            ip(wanr, &["link", "set", &dev, "up"])?;
        }
        for (k, share) in shares.iter().enumerate() {
            for a in &share.external {
                for (gw, metric) in [(k, "10"), ((k + 1) % GATEWAYS, "20")] {
                    ip(
                        wanr,
                        &[
                            "route",
                            "add",
                            &format!("{a}/32"),
                            "via",
                            &gateway_wan_addr(gw).to_string(),
                            "dev",
                            &format!("w{gw}"),
                            "metric",
                            metric,
                        ],
                    )?;
                }
            }
        }

        ip(
            &self.server,
            &["addr", "add", &format!("{SERVER_ADDR}/24"), "dev", "eth0"],
        )?;
        ip(&self.server, &["link", "set", "eth0", "up"])?;
        ip(
            &self.server,
            &[
                "route",
                "add",
                "default",
                "via",
                &WAN_ROUTER_SERVER_SIDE.to_string(),
            ],
        )?;
        Ok(())
    }

    /// Takes gateway `k`'s links down from inside it (as a failed box or a pulled
    /// cable looks to the routers: no carrier on their side).
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn fail_links(&self, k: usize) -> Result<()> {
        let g = self.gateways.get(k).ok_or_else(|| {
            Error::os(
                format!("failing gateway {k}"),
                std::io::Error::other("no such gateway"),
            )
        })?;
        ip(g, &["link", "set", "lan0", "down"])?;
        ip(g, &["link", "set", "wan0", "down"])
    }

    /// Every namespace.
    #[must_use]
    pub fn namespaces(&self) -> Vec<&Netns> {
        [
            &self.lan_router,
            &self.hosts,
            &self.wan_router,
            &self.server,
        ]
        .into_iter()
        .chain(&self.gateways)
        .collect()
    }
}

impl Drop for ScaleOut {
    fn drop(&mut self) {
        let all = [
            &mut self.lan_router,
            &mut self.hosts,
            &mut self.wan_router,
            &mut self.server,
        ]
        .into_iter()
        .chain(self.gateways.iter_mut());
        for ns in all {
            if let Err(e) = ns.remove_if_owned() {
                eprintln!("scale-out testbed {}: {}", self.id, e.chain());
            }
        }
    }
}
