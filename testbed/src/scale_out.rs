//! Scale-out with deterministic port blocks (issue #16 item 2): three natgw gateways
//! behind a LAN router that routes each share of internal hosts to its gateway by
//! source address, and a WAN router that routes each share's external addresses to
//! the same gateway. The routes come from BIRD: each gateway announces its shares by
//! BGP, with BFD watching every session, as a routing daemon would in a real network.
//!
//! ```text
//!                         LANR (router)                 G0 lan0 10.0.0.1/24  wan0 100.64.0.2 ─ w0 ┐
//! hosts eth0 10.0.0.N ── h0 10.0.0.254  g0 g1 g2 ────── G1 lan0 10.0.0.2/24  wan0 100.64.1.2 ─ w1 ┤ WANR
//!  (default via .254)      ip rule from SHARE → table   G2 lan0 10.0.0.3/24  wan0 100.64.2.2 ─ w2 ┤ (router)
//!                          default recursive via the                                             │
//!                          share's first address                     srv eth0 198.51.100.2 ── s0 ┘
//! ```
//!
//! - The internal hosts are addresses of one namespace (`hosts`), each a source a
//!   socket binds to; they reach everything through the LAN router 10.0.0.254.
//! - Each gateway's `lan0` is a point-to-point veth to the LAN router, addressed in
//!   the hosts' prefix (10.0.0.0/24), so that natgw's LAN source check sees the
//!   hosts as its own LAN's; the router answers ARP for the hosts there (proxy ARP).
//! - The pool (one external address per share, all of them on every gateway's
//!   `wan0` as /32s) is announced share by share: gateway `k` announces share `k`'s
//!   addresses with MED 10 and share `k-1`'s with MED 20 (its backup), over BGP
//!   sessions to both routers ([`gateway_bird_conf`]).
//! - The WAN router installs the best announcement of each address
//!   ([`wan_router_bird_conf`]). The LAN router steers each share's internal prefixes
//!   (`ip rule from PREFIX lookup 100+k`, static: BGP carries no source routes) to a
//!   table holding one default route whose next hop is resolved recursively through
//!   the share's first external address: wherever the best announcement of that
//!   address comes from ([`lan_router_bird_conf`]). So both sides follow the same
//!   announcements and cannot disagree.
//! - BFD (a hello every 100 ms, down after 5 missed) ends a session whose gateway
//!   stops answering with its links still up; a link without carrier ends it at once.
//! - A server (`srv`, 198.51.100.2) sits behind the WAN router; the WAN router knows
//!   no route to 10/8, so only translated traffic gets through.
//!
//! BIRD runs in the routers and the gateways from the start; natgw is the caller's
//! to start. Namespaces are named `ngw<pid>x<n>-<role>` (roles `lanr`, `hosts`,
//! `g0`-`g2`, `wanr`, `srv`); dropping the [`ScaleOut`] kills the BIRDs and removes
//! them and the namespaces.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

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
/// BFD's hello interval, both ways.
pub const BFD_INTERVAL: Duration = Duration::from_millis(100);
/// Hellos missed before BFD declares a neighbour down.
pub const BFD_MULTIPLIER: u32 = 5;
/// The routers' autonomous system.
const ROUTER_AS: u32 = 65000;
/// The gateways' autonomous system (one for all, so that the routers compare the
/// MEDs of their announcements).
const GATEWAY_AS: u32 = 65001;
/// MED of a share's announcement by its primary gateway.
const PRIMARY_MED: u32 = 10;
/// MED of a share's announcement by its backup.
const BACKUP_MED: u32 = 20;

/// The LAN router's routing table for share `k`.
#[must_use]
pub const fn share_table(k: usize) -> usize {
    100 + k
}

/// The gateway that backs share `k` up: the next one.
#[must_use]
pub const fn backup_of(k: usize) -> usize {
    (k + 1) % GATEWAYS
}

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
    /// The shares, as built.
    shares: Vec<ShareRoutes>,
    /// BIRD in the LAN router, the WAN router and each gateway (`None` once killed).
    birds: Vec<(String, Option<Bird>)>,
    /// BIRD's configurations, control sockets and logs.
    dir: PathBuf,
    id: String,
}

/// BIRD running in the foreground in a namespace, in a process group of its own.
#[derive(Debug)]
struct Bird {
    child: Child,
}

impl Bird {
    /// Checks `conf` (`bird -p`), then starts `bird -f -c CONF` in `ns`, its log
    /// (stderr) appended to `log`.
    fn start(ns: &Netns, conf: &Path, socket: &Path, log: &Path) -> Result<Bird> {
        let parsed = ns
            .command("bird")
            .arg("-p")
            .arg("-c")
            .arg(conf)
            .output()
            .map_err(|e| {
                Error::os(
                    format!(
                        "running bird in {} (is it installed? `cargo xtask provision` \
                         installs bird2)",
                        ns.name()
                    ),
                    e,
                )
            })?;
        if !parsed.status.success() {
            return Err(Error::os(
                format!("bird -p -c {}", conf.display()),
                std::io::Error::other(String::from_utf8_lossy(&parsed.stderr).trim().to_owned()),
            ));
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::os(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::os(format!("duplicating {}", log.display()), e))?;
        let child = ns
            .command("bird")
            .arg("-f")
            .arg("-c")
            .arg(conf)
            .arg("-s")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Error::os(
                    format!(
                        "starting bird in {} (is it installed? `cargo xtask provision` \
                         installs bird2)",
                        ns.name()
                    ),
                    e,
                )
            })?;
        Ok(Bird { child })
    }

    /// SIGKILL to the group; reaps it.
    fn kill(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `ip ARGS` in `ns`.
///
/// # Errors
/// When `ip` cannot run or fails.
pub fn ip(ns: &Netns, args: &[&str]) -> Result<()> {
    ip_output(ns, args).map(drop)
}

/// `ip ARGS` in `ns`, its output.
fn ip_output(ns: &Netns, args: &[&str]) -> Result<String> {
    let out = ns
        .command("ip")
        .args(args)
        .output()
        .map_err(|e| Error::os(format!("running ip {} in {}", args.join(" "), ns.name()), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::os(
            format!("ip {} in {}", args.join(" "), ns.name()),
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        ))
    }
}

/// The options every BGP session of the testbed shares: quick (re)connection, a
/// 3 s hold time as the backstop and BFD as the detector.
fn bgp_session_options(out: &mut String) {
    let _ = writeln!(
        out,
        "  hold time 3; keepalive time 1; connect delay time 1; connect retry time 1;\n  \
         error wait time 1, 2; bfd on;"
    );
}

/// BFD on the interfaces matching `patterns`.
fn bfd_protocol(out: &mut String, patterns: &[&str]) {
    let ms = BFD_INTERVAL.as_millis();
    let patterns: Vec<String> = patterns.iter().map(|p| format!("\"{p}\"")).collect();
    let _ = writeln!(
        out,
        "protocol bfd {{\n  interface {} {{ min rx interval {ms} ms; \
         min tx interval {ms} ms; multiplier {BFD_MULTIPLIER}; }};\n}}",
        patterns.join(", ")
    );
}

/// BIRD's configuration for gateway `k`: its own share (MED 10) and the one it
/// backs up (MED 20) announced to both routers, nothing learned, nothing installed.
#[must_use]
pub fn gateway_bird_conf(k: usize, shares: &[ShareRoutes]) -> String {
    let mut out = format!(
        "# gateway {k}: announces share {k} (primary) and share {} (backup)\n\
         router id {};\nlog stderr all;\nprotocol device {{ }}\n",
        (k + GATEWAYS - 1) % GATEWAYS,
        gateway_lan_addr(k)
    );
    bfd_protocol(&mut out, &["lan0", "wan0"]);
    let announced: Vec<(Ipv4Addr, u32)> = shares
        .iter()
        .enumerate()
        .flat_map(|(s, share)| {
            let med = if s == k {
                Some(PRIMARY_MED)
            } else if backup_of(s) == k {
                Some(BACKUP_MED)
            } else {
                None
            };
            share
                .external
                .iter()
                .filter_map(move |a| med.map(|m| (*a, m)))
        })
        .collect();
    out.push_str("protocol static shares {\n  ipv4;\n");
    for (a, _) in &announced {
        let _ = writeln!(out, "  route {a}/32 unreachable;");
    }
    out.push_str("}\nfilter announce {\n");
    for (a, med) in &announced {
        let _ = writeln!(out, "  if net = {a}/32 then {{ bgp_med = {med}; accept; }}");
    }
    out.push_str("  reject;\n}\ntemplate bgp to_routers {\n");
    let _ = writeln!(out, "  local as {GATEWAY_AS};");
    bgp_session_options(&mut out);
    out.push_str("  ipv4 { import none; export filter announce; };\n}\n");
    let _ = writeln!(
        out,
        "protocol bgp lan from to_routers {{ neighbor {LAN_ROUTER_ADDR} as {ROUTER_AS}; }}\n\
         protocol bgp wan from to_routers {{ neighbor {} as {ROUTER_AS}; }}",
        wan_router_addr(k)
    );
    out
}

/// The session template of a router towards the gateways.
fn router_template(out: &mut String) {
    out.push_str("template bgp from_gateways {\n");
    let _ = writeln!(out, "  local as {ROUTER_AS};");
    bgp_session_options(out);
    out.push_str("  ipv4 { import all; export none; };\n}\n");
}

/// BIRD's configuration for the LAN router: a session per gateway into the main
/// BIRD table (not installed), and per share a table with one default route
/// resolved recursively through the share's first external address, installed as
/// kernel table [`share_table`].
#[must_use]
pub fn lan_router_bird_conf(shares: &[ShareRoutes]) -> String {
    let mut out = format!(
        "# LAN router: each share's default route follows the announcements of the \
         share's addresses\nrouter id {LAN_ROUTER_ADDR};\nlog stderr all;\n\
         protocol device {{ }}\n"
    );
    bfd_protocol(&mut out, &["g*"]);
    router_template(&mut out);
    for k in 0..GATEWAYS {
        let _ = writeln!(
            out,
            "protocol bgp g{k} from from_gateways {{ neighbor {} as {GATEWAY_AS}; }}",
            gateway_lan_addr(k)
        );
    }
    for (k, share) in shares.iter().enumerate() {
        let Some(marker) = share.external.first() else {
            continue;
        };
        let _ = writeln!(
            out,
            "ipv4 table share{k};\n\
             protocol static share{k}_default {{\n  ipv4 {{ table share{k}; }};\n  igp table master4;\n  \
             route 0.0.0.0/0 recursive {marker};\n}}\n\
             protocol kernel share{k}_kernel {{\n  ipv4 {{ table share{k}; export all; }};\n  \
             kernel table {};\n}}",
            share_table(k)
        );
    }
    out
}

/// BIRD's configuration for the WAN router: a session per gateway, the best
/// announcement of each address installed in the main table.
#[must_use]
pub fn wan_router_bird_conf() -> String {
    let mut out = format!(
        "# WAN router: each external address via the gateway announcing it best\n\
         router id {WAN_ROUTER_SERVER_SIDE};\nlog stderr all;\nprotocol device {{ }}\n"
    );
    bfd_protocol(&mut out, &["w*"]);
    router_template(&mut out);
    out.push_str("protocol kernel {\n  ipv4 { export all; };\n}\n");
    for k in 0..GATEWAYS {
        let _ = writeln!(
            out,
            "protocol bgp w{k} from from_gateways {{ neighbor {} as {GATEWAY_AS}; }}",
            gateway_wan_addr(k)
        );
    }
    out
}

/// The gateway a `via` route in `routes` (`ip route` output) points to, found by
/// its next hop among `addrs`.
fn via_gateway(routes: &str, addr: impl Fn(usize) -> Ipv4Addr) -> Option<usize> {
    let line = routes.lines().find(|l| l.contains(" via "))?;
    let hop = line.split_whitespace().skip_while(|w| *w != "via").nth(1)?;
    (0..GATEWAYS).find(|k| addr(*k).to_string() == hop)
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
        let mut tb = with_fresh_id(|id| {
            let create = |role: &str| Netns::create(&format!("{id}-{role}"));
            Ok(ScaleOut {
                lan_router: create("lanr")?,
                hosts: create("hosts")?,
                gateways: (0..GATEWAYS)
                    .map(|k| create(&format!("g{k}")))
                    .collect::<Result<_>>()?,
                wan_router: create("wanr")?,
                server: create("srv")?,
                shares: shares.to_vec(),
                birds: Vec::new(),
                dir: std::env::temp_dir().join(format!("natgw-scale-out-{id}")),
                id: id.to_owned(),
            })
        })?;
        tb.wire(hosts, shares)?;
        tb.start_birds()?;
        tb.wait_routes(&[], Duration::from_secs(20))?;
        Ok(tb)
    }

    /// Writes the BIRD configurations and starts BIRD in the routers and gateways.
    fn start_birds(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::os(format!("creating {}", self.dir.display()), e))?;
        let mut confs = vec![
            ("lanr".to_owned(), lan_router_bird_conf(&self.shares)),
            ("wanr".to_owned(), wan_router_bird_conf()),
        ];
        for k in 0..GATEWAYS {
            confs.push((format!("g{k}"), gateway_bird_conf(k, &self.shares)));
        }
        for (role, conf) in confs {
            let path = self.dir.join(format!("{role}.conf"));
            std::fs::write(&path, conf)
                .map_err(|e| Error::os(format!("writing {}", path.display()), e))?;
            let ns = self.namespace(&role)?;
            let bird = Bird::start(
                ns,
                &path,
                &self.dir.join(format!("{role}.ctl")),
                &self.dir.join(format!("{role}.log")),
            )?;
            self.birds.push((role, Some(bird)));
        }
        Ok(())
    }

    /// The namespace of a router (`lanr`, `wanr`) or a gateway (`g0`-`g2`).
    fn namespace(&self, role: &str) -> Result<&Netns> {
        match role {
            "lanr" => Ok(&self.lan_router),
            "wanr" => Ok(&self.wan_router),
            _ => role
                .strip_prefix('g')
                .and_then(|k| k.parse::<usize>().ok())
                .and_then(|k| self.gateways.get(k))
                .ok_or_else(|| {
                    Error::os(
                        format!("the namespace of {role}"),
                        std::io::Error::other("no such router or gateway"),
                    )
                }),
        }
    }

    /// Which gateway share `k`'s traffic goes to now: `(LAN side, WAN side)`, from
    /// the LAN router's share table and the WAN router's route for the share's first
    /// address (`None`: no route).
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn share_route(&self, k: usize) -> Result<(Option<usize>, Option<usize>)> {
        // A table the kernel has no route in yet does not exist for `ip`: no route.
        let lan = match ip_output(
            &self.lan_router,
            &["-4", "route", "show", "table", &share_table(k).to_string()],
        ) {
            Err(e) if e.chain().contains("does not exist") => String::new(),
            other => other?,
        };
        let wan = match self.shares.get(k).and_then(|s| s.external.first()) {
            Some(a) => ip_output(
                &self.wan_router,
                &["-4", "route", "show", &format!("{a}/32")],
            )?,
            None => String::new(),
        };
        Ok((
            via_gateway(&lan, gateway_lan_addr),
            via_gateway(&wan, gateway_wan_addr),
        ))
    }

    /// Waits up to `limit` until every share's routes, on both sides, point to its
    /// primary gateway, or to its backup for the shares whose primary is in `failed`;
    /// returns how long it took.
    ///
    /// # Errors
    /// When it does not happen in time (the routes and BIRD's logs are in the
    /// message), or `ip` fails.
    pub fn wait_routes(&self, failed: &[usize], limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        let want = |k: usize| {
            let g = if failed.contains(&k) { backup_of(k) } else { k };
            (Some(g), Some(g))
        };
        loop {
            let now: Vec<_> = (0..self.shares.len())
                .map(|k| self.share_route(k))
                .collect::<Result<_>>()?;
            if now.iter().enumerate().all(|(k, r)| *r == want(k)) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= limit {
                let logs: Vec<String> = self
                    .birds
                    .iter()
                    .map(|(role, _)| {
                        let log = std::fs::read_to_string(self.dir.join(format!("{role}.log")))
                            .unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(15).collect();
                        format!(
                            "--- bird in {role}:\n{}",
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        )
                    })
                    .collect();
                return Err(Error::os(
                    format!("waiting {limit:?} for the shares' routes"),
                    std::io::Error::other(format!(
                        "(LAN, WAN) gateway per share: {now:?}, wanted with {failed:?} \
                         failed\n{}",
                        logs.join("\n")
                    )),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Gateway `k` dies as a box does with its cables plugged in: the routers' ports
    /// to it keep their carrier but nothing passes them any more (an nftables
    /// `netdev` table on each drops every frame both ways), and its BIRD is killed.
    /// Only BFD can tell. natgw is the caller's to kill.
    ///
    /// # Errors
    /// When `nft` fails.
    pub fn kill_box(&mut self, k: usize) -> Result<()> {
        if k >= GATEWAYS {
            return Err(Error::os(
                format!("killing gateway {k}"),
                std::io::Error::other("no such gateway"),
            ));
        }
        for (ns, dev) in self.router_ports(k) {
            let rules = format!(
                "table netdev dead_{dev} {{\n\
                 chain in {{ type filter hook ingress device \"{dev}\" priority 0; policy drop; }}\n\
                 chain out {{ type filter hook egress device \"{dev}\" priority 0; policy drop; }}\n\
                 }}\n"
            );
            let path = self.dir.join(format!("dead-{dev}.nft"));
            std::fs::write(&path, rules)
                .map_err(|e| Error::os(format!("writing {}", path.display()), e))?;
            let out = ns
                .command("nft")
                .arg("-f")
                .arg(&path)
                .output()
                .map_err(|e| Error::os(format!("running nft in {}", ns.name()), e))?;
            if !out.status.success() {
                return Err(Error::os(
                    format!("nft -f {} in {}", path.display(), ns.name()),
                    std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
                ));
            }
        }
        let role = format!("g{k}");
        if let Some((_, bird)) = self.birds.iter_mut().find(|(r, _)| *r == role) {
            if let Some(mut b) = bird.take() {
                b.kill();
            }
        }
        Ok(())
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

        // The LAN router: the hosts on h0; gateway k on gk as the peer of a
        // point-to-point address (BIRD's BGP and BFD see it as a direct neighbour),
        // with proxy ARP for the hosts; a rule per share prefix to the share's table,
        // which BIRD fills.
        sysctl(lanr, "net/ipv4/ip_forward", "1")?;
        for key in ["all", "default"] {
            sysctl(lanr, &format!("net/ipv4/conf/{key}/rp_filter"), "0")?;
            sysctl(lanr, &format!("net/ipv4/conf/{key}/send_redirects"), "0")?;
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
            ip(
                lanr,
                &[
                    "addr",
                    "add",
                    &LAN_ROUTER_ADDR.to_string(),
                    "peer",
                    &format!("{}/32", gateway_lan_addr(k)),
                    "dev",
                    &dev,
                ],
            )?;
            ip(lanr, &["link", "set", &dev, "up"])?;
        }
        for (k, share) in shares.iter().enumerate() {
            let table = share_table(k).to_string();
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

        // The WAN router: the gateways on their links; BIRD adds the shares' routes.
        sysctl(wanr, "net/ipv4/ip_forward", "1")?;
        for key in ["all", "default"] {
            sysctl(wanr, &format!("net/ipv4/conf/{key}/rp_filter"), "0")?;
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

    /// Gateway `k` comes back from [`ScaleOut::kill_box`] or
    /// [`ScaleOut::fail_links`]: the routers' ports to it are up and pass frames
    /// again, and its BIRD runs (started again if it was killed), so it announces its
    /// shares again and takes them back (their MED is better). Start natgw there
    /// first, so that the box translates before it attracts traffic.
    ///
    /// # Errors
    /// When `nft`, `ip` or BIRD fails.
    pub fn revive_box(&mut self, k: usize) -> Result<()> {
        let g = self.gateways.get(k).ok_or_else(|| {
            Error::os(
                format!("reviving gateway {k}"),
                std::io::Error::other("no such gateway"),
            )
        })?;
        for (ns, dev) in self.router_ports(k) {
            // Absent unless the box was killed; `nft delete` of a missing table fails.
            let _ = ns
                .command("nft")
                .args(["delete", "table", "netdev", &format!("dead_{dev}")])
                .output();
            ip(ns, &["link", "set", &dev, "up"])?;
        }
        let role = format!("g{k}");
        let running = self.birds.iter().any(|(r, b)| *r == role && b.is_some());
        if !running {
            let bird = Bird::start(
                g,
                &self.dir.join(format!("{role}.conf")),
                &self.dir.join(format!("{role}.ctl")),
                &self.dir.join(format!("{role}.log")),
            )?;
            match self.birds.iter_mut().find(|(r, _)| *r == role) {
                Some((_, slot)) => *slot = Some(bird),
                None => self.birds.push((role, Some(bird))),
            }
        }
        Ok(())
    }

    /// Pulls gateway `k`'s two cables: the routers' ports to it go down, so the
    /// routers' BIRD ends the sessions at once, and the gateway's `lan0` and `wan0`
    /// lose carrier. The gateway keeps its own configuration (addresses, default
    /// route), as a real box does when a cable is pulled; taking its links
    /// administratively down from inside would make its kernel delete the routes
    /// through them for good. [`ScaleOut::revive_box`] plugs them back in.
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn fail_links(&self, k: usize) -> Result<()> {
        if k >= GATEWAYS {
            return Err(Error::os(
                format!("failing gateway {k}"),
                std::io::Error::other("no such gateway"),
            ));
        }
        for (ns, dev) in self.router_ports(k) {
            ip(ns, &["link", "set", &dev, "down"])?;
        }
        Ok(())
    }

    /// The routers' ports to gateway `k`: `gk` on the LAN router, `wk` on the WAN
    /// router.
    fn router_ports(&self, k: usize) -> [(&Netns, String); 2] {
        [
            (&self.lan_router, format!("g{k}")),
            (&self.wan_router, format!("w{k}")),
        ]
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
        self.birds.clear();
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
