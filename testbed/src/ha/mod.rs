//! An active/standby pair: two gateways on one LAN and one WAN segment, keepalived
//! (VRRPv3) in each gateway's namespace moving the LAN gateway address and the
//! external address between them.
//!
//! ```text
//!                         ┌ lan0 10.0.1.2 GW1 (natgw, keepalived prio 150) wan0 192.0.2.2 ┐
//!  client 10.0.1.100 ── LAN switch                                                WAN switch ── server 192.0.2.100
//!  (default via VIP)      └ lan0 10.0.1.3 GW2 (natgw, keepalived prio 100) wan0 192.0.2.3 ┘
//!
//!  virtual addresses, on whichever gateway is MASTER: 10.0.1.1 on lan0 (the client's
//!  default route), 192.0.2.1 on wan0 (the external address natgw translates to)
//! ```
//!
//! The switches are bridges in namespaces of their own (`lsw`, `wsw`), their ports
//! plain veths with default offloads (no GRO, no XDP at the peers), so natgw works on
//! the kernel's path as on a first deployment. The server has only its connected
//! subnet: an untranslated packet from 10/8 can reach it but never be answered. The
//! gateways route to it directly (it stands for the upstream router).
//!
//! keepalived runs one VRRPv3 instance per gateway on `lan0` with unicast adverts to
//! the peer's LAN address every [`ADVERT_INT`], tracks `wan0` and `lan0` (a link down
//! puts the instance in FAULT: it releases the addresses and stops advertising), and
//! reports each state change with `natgw ha-state` ([`keepalived_conf`]). GW1 has the
//! higher priority and preempts: it becomes MASTER whenever it is up, after
//! [`PREEMPT_DELAY`] when the other one is MASTER.
//!
//! What a test can do to a gateway: [`HaTestbed::kill_box`] (a dead box: keepalived
//! killed, its links down, so it neither answers nor holds the addresses for anyone),
//! [`HaTestbed::revive_box`] (it comes back as after a reboot: links up,
//! the virtual addresses it held removed), [`HaTestbed::set_link`] (one cable pulled
//! at the switch). Namespaces are named `ngw<pid>x<n>-<role>` (roles `client`,
//! `server`, `lsw`, `wsw`, `gw1`, `gw2`); dropping the [`HaTestbed`] kills the
//! keepalived processes and removes the namespaces (with whatever runs in them).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::registry::with_fresh_id;
use crate::rtnl::Rtnl;
use crate::topology::{configure, create_veths, Host, SUBNET_PREFIX_LEN};

pub mod flows;

/// The LAN client.
pub const HA_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 100);
/// The server on the WAN.
pub const HA_SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// The LAN gateway address keepalived moves (the client's default route).
pub const HA_LAN_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
/// The external address keepalived moves: natgw's `--external`.
pub const HA_WAN_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Each gateway's own LAN address.
pub const HA_GW_LAN_ADDRS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 3)];
/// Each gateway's own WAN address.
pub const HA_GW_WAN_ADDRS: [Ipv4Addr; 2] =
    [Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3)];
/// Each gateway's VRRP priority: GW1 is the preferred MASTER.
pub const HA_PRIORITIES: [u8; 2] = [150, 100];
/// The gateways' LAN interface.
pub const HA_LAN_IF: &str = "lan0";
/// The gateways' WAN interface.
pub const HA_WAN_IF: &str = "wan0";
/// VRRP advertisement interval (VRRPv3 takes centiseconds). A BACKUP declares the
/// MASTER dead after three intervals plus a skew of (256 - priority)/256 of one:
/// about 0.69 s for GW2 here.
pub const ADVERT_INT: Duration = Duration::from_millis(200);
/// How long a gateway that comes back waits before it preempts the MASTER
/// (keepalived's `preempt_delay`, counted from its start or from the first advert
/// of a lower-priority MASTER): time for its natgw to receive the state of the
/// flows from the current active before the traffic moves back.
pub const PREEMPT_DELAY: Duration = Duration::from_secs(2);
/// The VRRP router id both instances share.
pub const VIRTUAL_ROUTER_ID: u8 = 51;

/// The interface hosts have.
const HOST_IF: &str = "eth0";
/// The bridge in each switch namespace.
const BRIDGE: &str = "br0";
/// Gateway names, also their ports' names on both switches.
pub const HA_GATEWAYS: [&str; 2] = ["gw1", "gw2"];

/// Which side of a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `lan0`, on the LAN switch.
    Lan,
    /// `wan0`, on the WAN switch.
    Wan,
}

/// One gateway of the pair.
#[derive(Debug)]
pub struct HaGateway {
    /// `gw1` or `gw2`.
    pub name: &'static str,
    /// Its namespace (natgw and keepalived run here).
    pub ns: Netns,
    /// Its own LAN address.
    pub lan_addr: Ipv4Addr,
    /// Its own WAN address.
    pub wan_addr: Ipv4Addr,
    /// Its VRRP priority.
    pub priority: u8,
    keepalived: Option<Keepalived>,
    /// Killed by [`HaTestbed::kill_box`] and not revived: what it holds counts for
    /// no one.
    dead: bool,
}

/// keepalived running in a gateway's namespace, in a process group of its own
/// (its VRRP child included).
#[derive(Debug)]
struct Keepalived {
    child: Child,
}

impl Keepalived {
    fn signal(&mut self, signal: nix::sys::signal::Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// SIGKILL to the group; reaps the parent.
    fn kill(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM (keepalived releases its addresses and sends a priority-0 advert),
    /// then SIGKILL after `limit`.
    fn stop(&mut self, limit: Duration) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // The VRRP child may outlive the parent by a moment.
                self.signal(nix::sys::signal::Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

/// The two-gateway testbed; see the module documentation.
#[derive(Debug)]
pub struct HaTestbed {
    /// The LAN client (default route via [`HA_LAN_VIP`]).
    pub client: Host,
    /// The server on the WAN.
    pub server: Host,
    /// GW1 (preferred) and GW2.
    pub gateways: [HaGateway; 2],
    /// The LAN switch's namespace.
    pub lan_switch: Netns,
    /// The WAN switch's namespace.
    pub wan_switch: Netns,
    /// keepalived's configuration, pid and log files.
    pub dir: PathBuf,
    id: String,
}

struct Namespaces {
    id: String,
    client: Netns,
    server: Netns,
    lsw: Netns,
    wsw: Netns,
    gw1: Netns,
    gw2: Netns,
}

impl HaTestbed {
    /// Builds the namespaces, the switches, addresses and routes. Nothing runs yet:
    /// start natgw in each gateway, then [`HaTestbed::start_keepalived`].
    ///
    /// # Errors
    /// Not root, or a netlink or sysctl step failed (what was made is removed).
    pub fn new() -> Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        let ns = with_fresh_id(|id| {
            let create = |role: &str| Netns::create(&format!("{id}-{role}"));
            Ok(Namespaces {
                client: create("client")?,
                server: create("server")?,
                lsw: create("lsw")?,
                wsw: create("wsw")?,
                gw1: create("gw1")?,
                gw2: create("gw2")?,
                id: id.to_owned(),
            })
        })?;
        wire(&ns)?;
        let dir = std::env::temp_dir().join(format!("natgw-ha-{}", ns.id));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::os(format!("creating {}", dir.display()), e))?;
        let host = |ns, addr, gateway| Host {
            ns,
            addr,
            prefix_len: SUBNET_PREFIX_LEN,
            gateway,
            ifname: HOST_IF.to_owned(),
        };
        let gateway = |i: usize, ns| HaGateway {
            name: HA_GATEWAYS[i],
            ns,
            lan_addr: HA_GW_LAN_ADDRS[i],
            wan_addr: HA_GW_WAN_ADDRS[i],
            priority: HA_PRIORITIES[i],
            keepalived: None,
            dead: false,
        };
        Ok(Self {
            client: host(ns.client, HA_CLIENT_ADDR, HA_LAN_VIP),
            server: host(ns.server, HA_SERVER_ADDR, Ipv4Addr::UNSPECIFIED),
            gateways: [gateway(0, ns.gw1), gateway(1, ns.gw2)],
            lan_switch: ns.lsw,
            wan_switch: ns.wsw,
            dir,
            id: ns.id,
        })
    }

    /// The testbed's id (`ngw<pid>x<n>`), the prefix of its namespaces' names.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Every namespace of the testbed.
    #[must_use]
    pub fn namespaces(&self) -> Vec<&Netns> {
        vec![
            &self.client.ns,
            &self.server.ns,
            &self.lan_switch,
            &self.wan_switch,
            &self.gateways[0].ns,
            &self.gateways[1].ns,
        ]
    }

    /// Starts keepalived in gateway `i` with [`keepalived_conf`], its notify scripts
    /// running `natgw_bin ha-state STATE`; its log goes to `keepalived-gwN.log` in
    /// [`HaTestbed::dir`].
    ///
    /// # Errors
    /// When the files cannot be written or keepalived cannot be started.
    pub fn start_keepalived(&mut self, i: usize, natgw_bin: &Path) -> Result<()> {
        let gw = &self.gateways[i];
        let conf = self.dir.join(format!("keepalived-{}.conf", gw.name));
        std::fs::write(&conf, keepalived_conf(i, natgw_bin))
            .map_err(|e| Error::os(format!("writing {}", conf.display()), e))?;
        let log = self.dir.join(format!("keepalived-{}.log", gw.name));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::os(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::os(format!("duplicating {}", log.display()), e))?;
        let pid = |what: &str| self.dir.join(format!("{}-{what}.pid", gw.name));
        let mut cmd = gw.ns.command("keepalived");
        cmd.arg("--dont-fork")
            .arg("--log-console")
            .arg("--log-detail")
            .arg("--no-syslog")
            .arg("--vrrp")
            .arg("--dont-respawn")
            .arg("--use-file")
            .arg(&conf)
            .arg("--pid")
            .arg(pid("keepalived"))
            .arg("--vrrp_pid")
            .arg(pid("vrrp"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn().map_err(|e| {
            Error::os(
                format!(
                    "starting keepalived in {} (is it installed? `cargo xtask provision` \
                     installs it)",
                    gw.ns.name()
                ),
                e,
            )
        })?;
        self.gateways[i].keepalived = Some(Keepalived { child });
        Ok(())
    }

    /// SIGKILL to gateway `i`'s keepalived: its addresses stay where they are.
    pub fn kill_keepalived(&mut self, i: usize) {
        if let Some(mut k) = self.gateways[i].keepalived.take() {
            k.kill();
        }
    }

    /// SIGTERM to gateway `i`'s keepalived: it releases its addresses and tells the
    /// peer (priority 0), as a clean shutdown does.
    pub fn stop_keepalived(&mut self, i: usize) {
        if let Some(mut k) = self.gateways[i].keepalived.take() {
            k.stop(Duration::from_secs(5));
        }
    }

    /// Whether gateway `i`'s keepalived is running.
    pub fn keepalived_running(&mut self, i: usize) -> bool {
        self.gateways[i]
            .keepalived
            .as_mut()
            .is_some_and(|k| matches!(k.child.try_wait(), Ok(None)))
    }

    /// Gateway `i`'s keepalived log so far (empty if it never ran).
    #[must_use]
    pub fn keepalived_log(&self, i: usize) -> String {
        let path = self
            .dir
            .join(format!("keepalived-{}.log", self.gateways[i].name));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Gateway `i`'s link on `side` up or down at the switch: a cable pulled or
    /// plugged back. The gateway's own interface loses carrier and keepalived (which
    /// tracks it) goes to FAULT.
    ///
    /// # Errors
    /// A netlink failure.
    pub fn set_link(&self, i: usize, side: Side, up: bool) -> Result<()> {
        let switch = match side {
            Side::Lan => &self.lan_switch,
            Side::Wan => &self.wan_switch,
        };
        let port = self.gateways[i].name;
        switch.try_run(|| {
            let rtnl = Rtnl::connect(switch.name())?;
            if up {
                rtnl.set_up(port)
            } else {
                rtnl.set_down(port)
            }
        })?
    }

    /// Gateway `i` dies as a box does: its keepalived is killed, both its cables go
    /// dead, and whatever still runs in it (natgw, its pinned data path) reaches no
    /// one; its virtual addresses are unreachable there, so only the peer's
    /// gratuitous ARPs are heard. natgw itself is the caller's to kill (SIGKILL) at the
    /// same moment.
    ///
    /// # Errors
    /// A netlink failure.
    pub fn kill_box(&mut self, i: usize) -> Result<()> {
        // keepalived first: with a cable down first, it would see the link go
        // (tracked), enter FAULT and release the addresses, as a dying box does not.
        self.kill_keepalived(i);
        self.gateways[i].dead = true;
        self.set_link(i, Side::Lan, false)?;
        self.set_link(i, Side::Wan, false)
    }

    /// Gateway `i` comes back as after a reboot: the virtual addresses it held are
    /// gone (keepalived adds them again if it becomes MASTER), its cables work again.
    /// keepalived and natgw are the caller's to start.
    ///
    /// # Errors
    /// A netlink or `ip` failure.
    pub fn revive_box(&mut self, i: usize) -> Result<()> {
        let gw = &self.gateways[i];
        for (vip, dev) in [(HA_LAN_VIP, HA_LAN_IF), (HA_WAN_VIP, HA_WAN_IF)] {
            if has_address(&gw.ns, dev, vip)? {
                run_ip(&gw.ns, &["addr", "del", &format!("{vip}/32"), "dev", dev])?;
            }
        }
        self.set_link(i, Side::Lan, true)?;
        self.set_link(i, Side::Wan, true)?;
        self.gateways[i].dead = false;
        Ok(())
    }

    /// Whether gateway `i` is a dead box ([`HaTestbed::kill_box`], not revived).
    #[must_use]
    pub fn is_dead(&self, i: usize) -> bool {
        self.gateways[i].dead
    }

    /// Which gateways hold the external virtual address on their WAN now (a dead
    /// box's included: it still has it configured, reaching no one).
    ///
    /// # Errors
    /// When `ip` cannot be run.
    pub fn wan_vip_holders(&self) -> Result<Vec<usize>> {
        let mut holders = Vec::new();
        for (i, gw) in self.gateways.iter().enumerate() {
            if has_address(&gw.ns, HA_WAN_IF, HA_WAN_VIP)? {
                holders.push(i);
            }
        }
        Ok(holders)
    }

    /// Waits up to `limit` until gateway `i` holds both virtual addresses and the
    /// other one, unless it is a dead box, holds neither; returns how long it took.
    ///
    /// # Errors
    /// When it does not happen in time (the keepalived logs are in the message).
    pub fn wait_master(&self, i: usize, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let other = &self.gateways[1 - i];
            let other_holds = !other.dead
                && (has_address(&other.ns, HA_LAN_IF, HA_LAN_VIP)?
                    || has_address(&other.ns, HA_WAN_IF, HA_WAN_VIP)?);
            let holds = has_address(&self.gateways[i].ns, HA_LAN_IF, HA_LAN_VIP)?
                && has_address(&self.gateways[i].ns, HA_WAN_IF, HA_WAN_VIP)?;
            if holds && !other_holds {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                let mut logs = String::new();
                for j in 0..2 {
                    let log = self.keepalived_log(j);
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    let _ = write!(
                        logs,
                        "\n--- keepalived {} ---\n{}",
                        self.gateways[j].name,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                return Err(Error::os(
                    format!(
                        "{} did not become the only live holder of {HA_LAN_VIP} and \
                         {HA_WAN_VIP} within {limit:?} (WAN VIP holders: {:?}){logs}",
                        self.gateways[i].name,
                        self.wan_vip_holders()?
                    ),
                    std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HaTestbed {
    fn drop(&mut self) {
        for gw in &mut self.gateways {
            if let Some(mut k) = gw.keepalived.take() {
                k.kill();
            }
        }
        let namespaces = [
            &mut self.client.ns,
            &mut self.server.ns,
            &mut self.lan_switch,
            &mut self.wan_switch,
        ]
        .into_iter()
        .chain(self.gateways.iter_mut().map(|g| &mut g.ns));
        for ns in namespaces {
            if let Err(e) = ns.remove_if_owned() {
                eprintln!("ha testbed {}: {}", self.id, e.chain());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// keepalived.conf for gateway `i` (0 or 1) of the testbed: one VRRPv3 instance on
/// `lan0`, unicast to the peer, both virtual addresses, `wan0` and `lan0` tracked,
/// every state reported to natgw with `natgw_bin ha-state`.
#[must_use]
pub fn keepalived_conf(i: usize, natgw_bin: &Path) -> String {
    let natgw = natgw_bin.display();
    let advert = ADVERT_INT.as_secs_f64();
    format!(
        "global_defs {{
    router_id natgw-{name}
    script_user root
    vrrp_version 3
    # gratuitous ARPs at once on becoming MASTER, repeated, and again 1 s later
    vrrp_garp_master_delay 1
    vrrp_garp_master_repeat 3
    vrrp_garp_interval 0.001
}}

vrrp_instance natgw {{
    state BACKUP
    interface {lan}
    virtual_router_id {VIRTUAL_ROUTER_ID}
    priority {prio}
    advert_int {advert}
    # GW1 takes the addresses back when it returns, after this many seconds
    preempt_delay {preempt}
    unicast_src_ip {own}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {HA_LAN_VIP}/32 dev {lan}
        {HA_WAN_VIP}/32 dev {wan}
    }}
    track_interface {{
        {lan}
        {wan}
    }}
    notify_master \"{natgw} ha-state MASTER\"
    notify_backup \"{natgw} ha-state BACKUP\"
    notify_fault \"{natgw} ha-state FAULT\"
    notify_stop \"{natgw} ha-state STOP\"
}}
",
        name = HA_GATEWAYS[i],
        lan = HA_LAN_IF,
        wan = HA_WAN_IF,
        prio = HA_PRIORITIES[i],
        own = HA_GW_LAN_ADDRS[i],
        peer = HA_GW_LAN_ADDRS[1 - i],
        preempt = PREEMPT_DELAY.as_secs(),
    )
}

fn has_address(ns: &Netns, dev: &str, addr: Ipv4Addr) -> Result<bool> {
    let out = ns
        .command("ip")
        .args(["-4", "-o", "addr", "show", "dev", dev])
        .output()
        .map_err(|e| Error::os(format!("running ip in {}", ns.name()), e))?;
    let needle = format!(" {addr}/");
    Ok(String::from_utf8_lossy(&out.stdout).contains(&needle))
}

fn run_ip(ns: &Netns, args: &[&str]) -> Result<()> {
    let out = ns
        .command("ip")
        .args(args)
        .output()
        .map_err(|e| Error::os(format!("running ip in {}", ns.name()), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::os(
            format!(
                "ip {} in {}: {}",
                args.join(" "),
                ns.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            std::io::Error::from_raw_os_error(libc::EINVAL),
        ))
    }
}

fn wire(ns: &Namespaces) -> Result<()> {
    let [g1, g2] = HA_GATEWAYS;
    create_veths(
        &ns.lsw,
        &[
            (g1, HA_LAN_IF, &ns.gw1),
            (g2, HA_LAN_IF, &ns.gw2),
            ("client", HOST_IF, &ns.client),
        ],
    )?;
    create_veths(
        &ns.wsw,
        &[
            (g1, HA_WAN_IF, &ns.gw1),
            (g2, HA_WAN_IF, &ns.gw2),
            ("server", HOST_IF, &ns.server),
        ],
    )?;
    make_switch(&ns.lsw, &[g1, g2, "client"])?;
    make_switch(&ns.wsw, &[g1, g2, "server"])?;
    for (gw, i) in [(&ns.gw1, 0), (&ns.gw2, 1)] {
        // No default route: the server's subnet is connected, nothing else exists.
        configure(
            gw,
            &[
                (HA_LAN_IF, HA_GW_LAN_ADDRS[i]),
                (HA_WAN_IF, HA_GW_WAN_ADDRS[i]),
            ],
            None,
            true,
        )?;
    }
    configure(
        &ns.client,
        &[(HOST_IF, HA_CLIENT_ADDR)],
        Some(HA_LAN_VIP),
        false,
    )?;
    configure(&ns.server, &[(HOST_IF, HA_SERVER_ADDR)], None, false)
}

fn make_switch(ns: &Netns, ports: &[&str]) -> Result<()> {
    ns.try_run(|| {
        let rtnl = Rtnl::connect(ns.name())?;
        rtnl.set_up("lo")?;
        rtnl.add_bridge(BRIDGE)?;
        for port in ports {
            rtnl.set_bridge_port(port, BRIDGE)?;
            rtnl.set_up(port)?;
        }
        rtnl.set_up(BRIDGE)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_gateway_advertises_to_the_other_and_reports_to_natgw() {
        let conf = keepalived_conf(1, Path::new("/usr/sbin/natgw"));
        assert!(conf.contains("priority 100"), "{conf}");
        assert!(conf.contains("unicast_src_ip 10.0.1.3"), "{conf}");
        assert!(
            conf.contains("unicast_peer {\n        10.0.1.2\n"),
            "{conf}"
        );
        assert!(conf.contains("advert_int 0.2\n"), "{conf}");
        assert!(conf.contains("192.0.2.1/32 dev wan0"), "{conf}");
        assert!(
            conf.contains("notify_fault \"/usr/sbin/natgw ha-state FAULT\""),
            "{conf}"
        );
    }
}
