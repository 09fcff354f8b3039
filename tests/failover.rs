//! Active/standby failover with keepalived (issue #16 item 1): two natgw gateways
//! (`--ha`) with keepalived in each namespace moving the LAN gateway address and the
//! external address ([`testbed::HaTestbed`]). While a TCP connection and a UDP flow
//! run between the LAN client and the WAN server, the active gateway fails, then
//! comes back (failback: GW1 has the higher priority and preempts, after keepalived's
//! `preempt_delay`, which gives its natgw time to receive the state first):
//!
//! - `a_dead_active_box_fails_over_and_back`: the box dies. natgw and keepalived are
//!   killed (SIGKILL) and both its cables go dead in the same instant: a dead box
//!   answers nothing and holds no address for anyone. Killing the processes alone
//!   would not model it: a SIGKILLed keepalived leaves its virtual addresses
//!   configured, and natgw's pinned data path keeps translating by design
//!   (docs/restarts.md), so the "dead" gateway would go on answering ARP for the
//!   addresses beside the new MASTER. It comes back as after a reboot (the addresses
//!   it held gone, its data path flushed), natgw starts, then keepalived.
//! - `an_active_that_loses_its_wan_link_fails_over_and_back`: the active's WAN cable
//!   is pulled at the switch; keepalived tracks `wan0`, goes to FAULT, releases both
//!   addresses and stops advertising; the standby takes over. natgw on the old active
//!   keeps running. The cable comes back, GW1 preempts.
//!
//! Each asserts what keepalived and natgw's role do (the addresses move within
//! 3 s, `natgw status` shows the roles keepalived reported, a new flow is translated
//! by the new active) and what the flows do (both get echoes again within 3 s of the
//! failure, from the same external endpoint at the server, the TCP connection
//! unbroken; the same within 3 s of the addresses moving back). The flows' part needs
//! the active's state on the standby (replication, `--ha-peer`); every outcome is
//! printed with the gap the flows saw, and the test fails at the end with the list
//! of what did not hold. The port range excludes the client's ports ([`PORT_RANGE`]).
//! The WAN segment is watched for internal sources throughout.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use natgw_integration_tests::{require_root, LeakWatch, Natgw};
use testbed::ha::flows::{EchoServer, Flow};
use testbed::ha::{HA_CLIENT_ADDR, HA_SERVER_ADDR, HA_WAN_VIP, PREEMPT_DELAY};
use testbed::{HaTestbed, Side};

/// How soon the flows must get echoes again, and the addresses move (issue #16).
const FAILOVER_LIMIT: Duration = Duration::from_secs(3);
/// How long the test waits to measure a gap that exceeds the limit.
const MEASURE_LIMIT: Duration = Duration::from_secs(10);
/// The flows' message interval.
const EVERY: Duration = Duration::from_millis(20);
/// The echo server's port (UDP and TCP).
const SERVER_PORT: u16 = 7000;
/// The UDP flow's internal port.
const CLIENT_UDP_PORT: u16 = 40_000;

const IFACES: [&str; 4] = ["--wan", "wan0", "--lan", "lan0"];

/// natgw's port range: the client's ports (40000, and the kernel's ephemeral ports
/// for TCP) lie outside it, so natgw cannot preserve them and picks a random port
/// for each new mapping. A flow then keeps its external port across a failover only
/// because the standby holds the active's mapping, never because both gateways
/// happened to preserve the same internal port.
const PORT_RANGE: &str = "20000-29999";

fn natgw_args_for(i: usize) -> Vec<String> {
    let key = std::env::temp_dir().join("natgw-failover-scratch.key");
    if !key.exists() {
        std::fs::write(&key, "0123456789abcdef0123456789abcdef").expect("key file");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("key mode");
    }
    let own = testbed::ha::HA_GW_LAN_ADDRS[i];
    let peer = testbed::ha::HA_GW_LAN_ADDRS[1 - i];
    vec![
        "--external".into(),
        HA_WAN_VIP.to_string(),
        "--ha".into(),
        "--port-range".into(),
        PORT_RANGE.into(),
        "--ha-listen".into(),
        format!("{own}:7780"),
        "--ha-peer".into(),
        format!("{peer}:7780"),
        "--ha-key-file".into(),
        key.display().to_string(),
    ]
}

fn natgw_args() -> Vec<String> {
    natgw_args_for(0)
}

/// The pair with natgw and keepalived running, GW1 the MASTER.
struct Pair {
    tb: HaTestbed,
    natgw: [Option<Natgw>; 2],
}

impl Pair {
    fn start() -> Self {
        let mut tb = HaTestbed::new().expect("building the HA testbed");
        let natgw = [0, 1].map(|i| {
            let args = natgw_args_for(i);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Some(
                Natgw::try_start_on(&tb.gateways[i].ns, &IFACES, &args)
                    .unwrap_or_else(|e| panic!("natgw in gw{}: {e}", i + 1)),
            )
        });
        for (i, n) in natgw.iter().flatten().enumerate() {
            assert_eq!(
                role(n).0,
                "standby",
                "gw{}: natgw starts as the standby before keepalived says otherwise",
                i + 1
            );
        }
        let bin = testbed::natgw_bin();
        tb.start_keepalived(0, &bin).expect("keepalived in gw1");
        tb.start_keepalived(1, &bin).expect("keepalived in gw2");
        let took = tb
            .wait_master(0, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{}", e.chain()));
        eprintln!("gw1 is MASTER {took:?} after keepalived started");
        let pair = Self { tb, natgw };
        pair.wait_roles(["active", "standby"], "after start");
        pair
    }

    fn natgw(&self, i: usize) -> &Natgw {
        self.natgw[i].as_ref().expect("natgw runs there")
    }

    /// Waits until the gateways' natgw report `roles` (the notify scripts run
    /// asynchronously); a running natgw only.
    fn wait_roles(&self, roles: [&str; 2], when: &str) {
        let deadline = Instant::now() + FAILOVER_LIMIT;
        loop {
            let seen: Vec<Option<String>> = (0..2)
                .map(|i| self.natgw[i].as_ref().map(|n| role(n).0))
                .collect();
            let ok = (0..2).all(|i| seen[i].as_deref().is_none_or(|r| r == roles[i]));
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{when}: natgw's roles are {seen:?}, keepalived made them {roles:?}\n\
                 --- keepalived gw1 ---\n{}\n--- keepalived gw2 ---\n{}",
                self.tb.keepalived_log(0),
                self.tb.keepalived_log(1)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// natgw's role and keepalived state from `natgw status --json`.
fn role(natgw: &Natgw) -> (String, String) {
    let status = natgw.status();
    let ha = &status["ha"];
    (
        ha["role"].as_str().unwrap_or("-").to_owned(),
        ha["keepalived"].as_str().unwrap_or("-").to_owned(),
    )
}

/// The flows of one test, and what they must show.
struct Traffic {
    server: EchoServer,
    udp: Flow,
    tcp: Flow,
    /// What did not hold, to fail on at the end.
    failures: Vec<String>,
}

impl Traffic {
    fn start(tb: &HaTestbed) -> Self {
        let server_addr = SocketAddrV4::new(HA_SERVER_ADDR, SERVER_PORT);
        let server = EchoServer::start(&tb.server.ns, server_addr).expect("echo server");
        let udp = Flow::udp(
            &tb.client.ns,
            SocketAddrV4::new(HA_CLIENT_ADDR, CLIENT_UDP_PORT),
            server_addr,
            EVERY,
        )
        .expect("UDP flow");
        let tcp = Flow::tcp(&tb.client.ns, server_addr, EVERY).expect("TCP connection");
        let t = Self {
            server,
            udp,
            tcp,
            failures: Vec::new(),
        };
        let now = Instant::now();
        for flow in [&t.udp, &t.tcp] {
            assert!(
                flow.wait_reply_after(now, Duration::from_secs(5)).is_some(),
                "the {} flow gets echoes through the active gateway",
                flow.kind
            );
        }
        t
    }

    /// The external endpoints the server sees now (UDP, TCP), asserting they are the
    /// external address's.
    fn endpoints(&self) -> (SocketAddrV4, SocketAddrV4) {
        let now = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        let ep = |tcp| {
            let seen = self.server.sources_after(tcp, now);
            assert_eq!(seen.len(), 1, "one external endpoint per flow: {seen:?}");
            assert_eq!(
                *seen[0].ip(),
                HA_WAN_VIP,
                "translated to the virtual address"
            );
            seen[0]
        };
        (ep(false), ep(true))
    }

    /// After the event at `t0`, the addresses having moved at `moved`: both flows get
    /// echoes through the new gateway, the longest silence from `t0` on within the
    /// limit, from the endpoints they had, the TCP connection unbroken. Prints the
    /// gaps.
    fn check_continues(
        &mut self,
        what: &str,
        t0: Instant,
        moved: Instant,
        before: (SocketAddrV4, SocketAddrV4),
    ) {
        for (flow, ext) in [(&self.udp, before.0), (&self.tcp, before.1)] {
            let resumed = flow.wait_reply_after(moved, MEASURE_LIMIT).is_some();
            let gap = flow.longest_silence(t0, moved);
            let after = self.server.sources_after(flow.kind == "tcp", t0);
            eprintln!(
                "{what}: {} flow: {} (longest silence {}), external endpoints at the server \
                 since: {after:?} (before: {ext}){}",
                flow.kind,
                if resumed {
                    "echoes through the new gateway"
                } else {
                    "no echo through the new gateway"
                },
                gap.map_or_else(|| "-".to_owned(), |d| format!("{d:?}")),
                flow.error()
                    .map_or_else(String::new, |e| format!(", connection ended: {e}")),
            );
            match gap {
                Some(d) if resumed && d <= FAILOVER_LIMIT => {}
                Some(d) if resumed => self.failures.push(format!(
                    "{what}: the {} flow was silent for {d:?} (limit {FAILOVER_LIMIT:?})",
                    flow.kind
                )),
                _ => self.failures.push(format!(
                    "{what}: the {} flow got no echo through the new gateway within \
                     {MEASURE_LIMIT:?}{}",
                    flow.kind,
                    flow.error()
                        .map_or_else(String::new, |e| format!(" (connection ended: {e})"))
                )),
            }
            if after.iter().any(|a| *a != ext) {
                self.failures.push(format!(
                    "{what}: the {} flow reached the server from {after:?}, not only from \
                     {ext}",
                    flow.kind
                ));
            }
        }
        if self.server.accepted().len() != 1 {
            self.failures.push(format!(
                "{what}: the server accepted {:?}: the TCP connection did not stay one",
                self.server.accepted()
            ));
        }
    }

    fn assert_all_held(self, test: &str) {
        assert!(
            self.failures.is_empty(),
            "{test}: {} requirement(s) not met:\n- {}",
            self.failures.len(),
            self.failures.join("\n- ")
        );
    }
}

/// A new UDP flow from the client is translated by whichever gateway is active now
/// (the addresses and the client's neighbour entry followed keepalived).
fn new_flow_is_translated(tb: &HaTestbed, port: u16, what: &str) {
    let server_addr = SocketAddrV4::new(HA_SERVER_ADDR, SERVER_PORT);
    let flow = Flow::udp(
        &tb.client.ns,
        SocketAddrV4::new(HA_CLIENT_ADDR, port),
        server_addr,
        EVERY,
    )
    .expect("new UDP flow");
    let got = flow.wait_reply_after(Instant::now(), FAILOVER_LIMIT);
    assert!(
        got.is_some(),
        "{what}: a new UDP flow from port {port} gets echoes through the new active"
    );
}

/// The virtual addresses move to `to` within `limit` of `t0`; prints how long it
/// took and returns when they had moved.
fn vip_moves(tb: &HaTestbed, to: usize, t0: Instant, limit: Duration, what: &str) -> Instant {
    tb.wait_master(to, limit)
        .unwrap_or_else(|e| panic!("{what}: {}", e.chain()));
    eprintln!(
        "{what}: gw{} holds both virtual addresses {:?} after the event",
        to + 1,
        t0.elapsed()
    );
    Instant::now()
}

/// How long failback may take: keepalived's preempt delay, then the limit.
const FAILBACK_LIMIT: Duration = Duration::from_secs(PREEMPT_DELAY.as_secs() + 3);

#[test]
fn a_dead_active_box_fails_over_and_back() {
    require_root();
    let mut pair = Pair::start();
    let leaks = LeakWatch::start(&pair.tb.wan_switch);
    let mut traffic = Traffic::start(&pair.tb);
    let before = traffic.endpoints();
    eprintln!("before: UDP via {}, TCP via {}", before.0, before.1);

    // The active box dies.
    // keepalived and the cables first: natgw's pinned data path would go on
    // translating in a box that still forwarded, as designed (docs/restarts.md).
    let t0 = Instant::now();
    pair.tb.kill_box(0).expect("killing gw1");
    if let Some(mut natgw) = pair.natgw[0].take() {
        natgw.kill();
    }
    let moved = vip_moves(&pair.tb, 1, t0, FAILOVER_LIMIT, "gw1 died");
    pair.wait_roles(["-", "active"], "gw1 died");
    assert_eq!(role(pair.natgw(1)).1, "MASTER");
    traffic.check_continues("gw1 died", t0, moved, before);
    new_flow_is_translated(&pair.tb, CLIENT_UDP_PORT + 1, "gw1 died");

    // It comes back as after a reboot: its data path is gone, natgw starts, then
    // keepalived, which preempts.
    pair.tb.revive_box(0).expect("reviving gw1");
    let (status, _, err) =
        natgw_integration_tests::run_natgw(&pair.tb.gateways[0].ns, &["stop", "--flush"]);
    assert!(status.success(), "natgw stop --flush in gw1: {err}");
    let args = natgw_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pair.natgw[0] = Some(
        Natgw::try_start_on(&pair.tb.gateways[0].ns, &IFACES, &args)
            .unwrap_or_else(|e| panic!("natgw in gw1 again: {e}")),
    );
    assert_eq!(role(pair.natgw(0)).0, "standby", "a restarted natgw waits");
    let t1 = Instant::now();
    pair.tb
        .start_keepalived(0, &testbed::natgw_bin())
        .expect("keepalived in gw1 again");
    let moved = vip_moves(&pair.tb, 0, t1, FAILBACK_LIMIT, "gw1 back (failback)");
    pair.wait_roles(["active", "standby"], "failback");
    traffic.check_continues("failback after gw1 died", t1, moved, before);
    new_flow_is_translated(&pair.tb, CLIENT_UDP_PORT + 2, "failback");

    leaks.assert_none("failover and failback of a dead box");
    traffic.assert_all_held("a dead active box");
}

#[test]
fn an_active_that_loses_its_wan_link_fails_over_and_back() {
    require_root();
    let pair = Pair::start();
    let leaks = LeakWatch::start(&pair.tb.wan_switch);
    let mut traffic = Traffic::start(&pair.tb);
    let before = traffic.endpoints();
    eprintln!("before: UDP via {}, TCP via {}", before.0, before.1);

    let t0 = Instant::now();
    pair.tb
        .set_link(0, Side::Wan, false)
        .expect("pulling gw1's WAN cable");
    let moved = vip_moves(&pair.tb, 1, t0, FAILOVER_LIMIT, "gw1's WAN link down");
    pair.wait_roles(["standby", "active"], "gw1's WAN link down");
    assert_eq!(role(pair.natgw(0)).1, "FAULT", "keepalived tracks wan0");
    let status = pair.natgw(0).status();
    assert_eq!(
        status["ha"]["vip_present"], false,
        "gw1 released the external address"
    );
    traffic.check_continues("gw1's WAN link down", t0, moved, before);
    new_flow_is_translated(&pair.tb, CLIENT_UDP_PORT + 1, "gw1's WAN link down");

    let t1 = Instant::now();
    pair.tb
        .set_link(0, Side::Wan, true)
        .expect("plugging gw1's WAN cable back");
    let moved = vip_moves(
        &pair.tb,
        0,
        t1,
        FAILBACK_LIMIT,
        "gw1's WAN link back (failback)",
    );
    pair.wait_roles(["active", "standby"], "gw1's WAN link back");
    traffic.check_continues("failback after gw1's WAN link came back", t1, moved, before);
    new_flow_is_translated(&pair.tb, CLIENT_UDP_PORT + 2, "failback");

    leaks.assert_none("failover and failback on a WAN link");
    traffic.assert_all_held("an active that loses its WAN link");
}

#[test]
fn the_ha_state_command_takes_keepalived_notify_arguments_and_needs_ha() {
    require_root();
    let tb = HaTestbed::new().expect("building the HA testbed");
    let gw = &tb.gateways[0].ns;
    // Before natgw runs: recorded for the next start.
    let (status, out, err) =
        natgw_integration_tests::run_natgw(gw, &["ha-state", "INSTANCE", "natgw", "MASTER", "150"]);
    assert!(status.success(), "{err}");
    assert!(out.contains("recorded"), "{out}");
    let args = natgw_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let natgw = Natgw::try_start_on(gw, &IFACES, &args).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        role(&natgw),
        ("active".to_owned(), "MASTER".to_owned()),
        "the recorded state seeds the role"
    );
    let (status, out, err) = natgw.cli(&["ha-state", "backup"]);
    assert!(status.success(), "{err}");
    assert!(out.contains("is now standby"), "{out}");
    assert_eq!(role(&natgw).0, "standby");
    let (status, _, err) = natgw.cli(&["ha-state", "PRIMARY"]);
    assert!(!status.success());
    assert!(err.contains("MASTER, BACKUP, FAULT, STOP"), "{err}");
    assert!(
        natgw
            .log()
            .contains("ha.role_changed from=active to=standby keepalived=BACKUP"),
        "{}",
        natgw.log()
    );
    // Without the virtual address on the WAN, natgw still started (the standby has
    // none) and translates to it.
    let wan = natgw.status()["external_address"].clone();
    assert_eq!(wan, HA_WAN_VIP.to_string());
    drop(natgw);

    // A natgw without --ha refuses to take a role.
    let plain = Natgw::try_start_on(
        &tb.gateways[1].ns,
        &IFACES,
        &["--external", &Ipv4Addr::new(192, 0, 2, 3).to_string()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (status, _, err) = plain.cli(&["ha-state", "MASTER"]);
    assert!(!status.success());
    assert!(err.contains("without --ha"), "{err}");
}
