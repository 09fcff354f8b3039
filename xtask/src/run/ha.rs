//! `cargo xtask run --ha`: a live failover on the two-gateway testbed
//! ([`testbed::HaTestbed`]): natgw (`--ha`) and keepalived in each gateway, a UDP
//! flow and a TCP connection from the LAN client to the WAN server, then the active
//! gateway dies and comes back, with a line every quarter second showing who holds
//! the virtual addresses, each natgw's role, the echoes each flow gets and the
//! external endpoint the server sees. Bounded (about a minute), and everything is
//! removed on the way out (keepalived and natgw die with their namespaces; natgw is
//! stopped with SIGTERM first).

use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use testbed::ha::flows::{EchoServer, Flow};
use testbed::ha::{
    HaTestbed, ADVERT_INT, HA_CLIENT_ADDR, HA_GATEWAYS, HA_LAN_VIP, HA_SERVER_ADDR, HA_WAN_VIP,
    PREEMPT_DELAY,
};

use super::daemon::{interrupted_or, STOP_WAIT};
use crate::{paths, signals};

/// natgw's port range: the client's ports lie outside it, so natgw cannot preserve
/// them and maps each flow to a random port. A flow then keeps its external port
/// across a failover only if the new active holds the old one's mapping; with its
/// ports preserved on both gateways, it would keep it by coincidence.
const PORT_RANGE: &str = "20000-29999";

/// The flows' message interval.
const EVERY: Duration = Duration::from_millis(20);
/// One line of the live view this often.
const TICK: Duration = Duration::from_millis(250);
/// How long the view follows a failover or a failback at most.
const FOLLOW: Duration = Duration::from_secs(8);
/// How long it goes on once the addresses moved and both flows were heard again (or
/// not, for a flow that ended).
const AFTER_MOVE: Duration = Duration::from_secs(2);

/// The picture.
fn topology() -> String {
    format!(
        "\
Failover testbed (keepalived VRRPv3, advert every {advert:?}, GW1 preferred):

                           ┌ lan0 10.0.1.2  GW1 natgw --ha, keepalived prio 150  wan0 192.0.2.2 ┐
  client {HA_CLIENT_ADDR} ── LAN switch                                                       WAN switch ── server {HA_SERVER_ADDR}
  (default via {HA_LAN_VIP})   └ lan0 10.0.1.3  GW2 natgw --ha, keepalived prio 100  wan0 192.0.2.3 ┘

  virtual addresses on the MASTER: {HA_LAN_VIP} (LAN gateway), {HA_WAN_VIP} (external, natgw --external)",
        advert = ADVERT_INT
    )
}

/// `natgw run --ha` in one gateway.
fn start_natgw(tb: &HaTestbed, i: usize, bin: &Path, extra: &[String]) -> Result<testbed::Natgw> {
    let gw = &tb.gateways[i];
    let log = paths::target_dir().join(format!("natgw-run-ha-{}.log", gw.name));
    let mut args = vec![
        "--external".to_owned(),
        HA_WAN_VIP.to_string(),
        "--ha".to_owned(),
        "--port-range".to_owned(),
        PORT_RANGE.to_owned(),
    ];
    // `{own}` and `{peer}` stand for this gateway's and the other's LAN address, so
    // that per-gateway flags (a replication link) can be given once.
    let own = testbed::ha::HA_GW_LAN_ADDRS[i].to_string();
    let peer = testbed::ha::HA_GW_LAN_ADDRS[1 - i].to_string();
    args.extend(
        extra
            .iter()
            .map(|a| a.replace("{own}", &own).replace("{peer}", &peer)),
    );
    let builder = testbed::Natgw::builder(bin)
        .ifaces(["--wan", "wan0", "--lan", "lan0"])
        .args(&args)
        .log(&log)
        .rust_log(Some("info"))
        .stop_within(STOP_WAIT)
        .own_process_group()
        .interrupted_by(signals::stop_requested);
    println!(
        "  {}: $ nsenter --net=/run/netns/{} {} {}   (log: {})",
        gw.name,
        gw.ns.name(),
        bin.display(),
        builder.run_args().join(" "),
        log.display()
    );
    builder.start(&gw.ns).map_err(interrupted_or)
}

/// The role a natgw reports, `-` when it does not answer.
fn role(natgw: Option<&testbed::Natgw>) -> String {
    natgw
        .and_then(|n| n.status().ok())
        .and_then(|s| {
            let ha = &s["ha"];
            Some(format!(
                "{} ({})",
                ha["role"].as_str()?,
                ha["keepalived"].as_str().unwrap_or("?")
            ))
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// Who holds the external virtual address, as text.
fn vip_owner(tb: &HaTestbed) -> String {
    match tb.wan_vip_holders() {
        Ok(h) if h.is_empty() => "nobody".to_owned(),
        Ok(h) => h
            .iter()
            .map(|i| {
                if tb.is_dead(*i) {
                    format!("{}(dead)", HA_GATEWAYS[*i])
                } else {
                    HA_GATEWAYS[*i].to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("+"),
        Err(e) => format!("? ({e})"),
    }
}

/// A failover or failback the live view follows.
struct Event {
    what: &'static str,
    /// When it started.
    t0: Instant,
    /// The gateway the addresses should move to.
    to: usize,
    /// How long to follow it at most.
    limit: Duration,
}

struct Traffic {
    server: EchoServer,
    udp: Flow,
    tcp: Flow,
}

impl Traffic {
    /// The last external endpoint the server saw for each flow.
    fn endpoints(&self) -> (Option<SocketAddrV4>, Option<SocketAddrV4>) {
        let arrivals = self.server.arrivals();
        let last = |tcp| arrivals.iter().rev().find(|a| a.tcp == tcp).map(|a| a.from);
        (last(false), last(true))
    }

    fn line(&self, since: Instant, tb: &HaTestbed, natgw: &[Option<testbed::Natgw>; 2]) -> String {
        let (u, t) = self.endpoints();
        let ep = |e: Option<SocketAddrV4>| e.map_or_else(|| "-".to_owned(), |e| e.to_string());
        let mut line = format!(
            "  +{:5.2}s  VIP on {:<14} gw1 {:<17} gw2 {:<17} udp echoes {:>4} via {:<20} tcp echoes {:>4} via {}",
            since.elapsed().as_secs_f64(),
            vip_owner(tb),
            role(natgw[0].as_ref()),
            role(natgw[1].as_ref()),
            self.udp.replies(),
            ep(u),
            self.tcp.replies(),
            ep(t)
        );
        if let Some(e) = self.tcp.error() {
            let _ = write!(line, " (tcp ended: {e})");
        }
        line
    }

    /// Prints a line every [`TICK`] from `event.t0` until the addresses are on
    /// gateway `event.to` and [`AFTER_MOVE`] has passed, at most `event.limit`; then
    /// the summary: when they moved, each flow's longest silence and its external
    /// endpoint before (`before`) and after.
    fn follow(
        &self,
        event: &Event,
        tb: &HaTestbed,
        natgw: &[Option<testbed::Natgw>; 2],
        before: (Option<SocketAddrV4>, Option<SocketAddrV4>),
    ) -> Result<()> {
        let Event {
            what,
            t0,
            to,
            limit,
        } = *event;
        let mut moved: Option<Instant> = None;
        while t0.elapsed() < limit {
            signals::sleep(TICK)?;
            println!("{}", self.line(t0, tb, natgw));
            if moved.is_none() && tb.wait_master(to, Duration::ZERO).is_ok() {
                moved = Some(Instant::now());
            }
            if moved.is_some_and(|m| m.elapsed() >= AFTER_MOVE) {
                break;
            }
        }
        println!("\n  {what}:");
        let Some(m) = moved else {
            println!(
                "    the addresses did not move to {} in time",
                HA_GATEWAYS[to]
            );
            return Ok(());
        };
        println!(
            "    the virtual addresses moved to {} within {:.2} s",
            HA_GATEWAYS[to],
            m.duration_since(t0).as_secs_f64()
        );
        let after = self.endpoints();
        for (flow, b, a) in [
            (&self.udp, before.0, after.0),
            (&self.tcp, before.1, after.1),
        ] {
            let resumed = flow.reply_after(m).is_some();
            let gap = flow.longest_silence(t0, m);
            println!(
                "    {}: {}; longest silence {}; external endpoint {} -> {}{}",
                flow.kind,
                if resumed {
                    "echoes through the new active"
                } else {
                    "no echo through the new active"
                },
                gap.map_or_else(|| "-".to_owned(), |g| format!("{:.3} s", g.as_secs_f64())),
                b.map_or_else(|| "-".to_owned(), |e| e.to_string()),
                a.map_or_else(|| "-".to_owned(), |e| e.to_string()),
                if resumed && b == a {
                    " (kept)"
                } else if resumed {
                    " (changed: the new active had no mapping for it)"
                } else {
                    ""
                }
            );
        }
        Ok(())
    }
}

/// `cargo xtask run --ha`.
pub fn run(natgw_bin: &Path, extra: &[String]) -> Result<()> {
    println!("{}\n", topology());
    let mut tb = HaTestbed::new().context("building the failover testbed")?;
    let id = tb.id().to_owned();
    println!(
        "Testbed {id} is up: namespaces {}",
        tb.namespaces()
            .iter()
            .map(|ns| ns.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut natgw: [Option<testbed::Natgw>; 2] = [None, None];
    let outcome = demonstrate(&mut tb, &mut natgw, natgw_bin, extra);
    for n in natgw.iter_mut().flatten() {
        if let Err(e) = n.stop_cleanly() {
            esay!("xtask run --ha: stopping natgw: {e}");
        }
    }
    drop(tb);
    signals::settle();
    super::report_cleanup(&id);
    outcome
}

fn demonstrate(
    tb: &mut HaTestbed,
    natgw: &mut [Option<testbed::Natgw>; 2],
    bin: &Path,
    extra: &[String],
) -> Result<()> {
    println!("\nStarting natgw in both gateways (both start as the standby):");
    for (i, slot) in natgw.iter_mut().enumerate() {
        *slot = Some(start_natgw(tb, i, bin, extra)?);
    }
    println!("Starting keepalived in both gateways (its notify scripts run `natgw ha-state`):");
    for i in 0..2 {
        tb.start_keepalived(i, bin)?;
    }
    let took = tb
        .wait_master(0, Duration::from_secs(10))
        .context("waiting for gw1 to become MASTER")?;
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "  gw1 is MASTER after {:.2} s; natgw roles: gw1 {}, gw2 {}",
        took.as_secs_f64(),
        role(natgw[0].as_ref()),
        role(natgw[1].as_ref())
    );
    signals::check()?;

    let server_addr = SocketAddrV4::new(HA_SERVER_ADDR, 7000);
    let traffic = Traffic {
        server: EchoServer::start(&tb.server.ns, server_addr)?,
        udp: Flow::udp(
            &tb.client.ns,
            SocketAddrV4::new(HA_CLIENT_ADDR, 40_000),
            server_addr,
            EVERY,
        )?,
        tcp: Flow::tcp(&tb.client.ns, server_addr, EVERY)?,
    };
    signals::sleep(Duration::from_secs(1))?;
    let before = traffic.endpoints();
    println!(
        "\nA UDP flow and a TCP connection from the client to {server_addr}, a message every \
         {EVERY:?} each way; the server sees them from {} (UDP) and {} (TCP).",
        before.0.map_or_else(|| "-".to_owned(), |e| e.to_string()),
        before.1.map_or_else(|| "-".to_owned(), |e| e.to_string())
    );

    println!("\n=== Failover: gw1 dies (natgw and keepalived SIGKILLed, both cables dead) ===\n");
    let t0 = Instant::now();
    // The cables first: a natgw killed while its box still forwards would leave its
    // pinned data path translating, as designed (docs/restarts.md).
    tb.kill_box(0)?;
    if let Some(mut n) = natgw[0].take() {
        let _ = n.kill();
    }
    let event = Event {
        what: "failover",
        t0,
        to: 1,
        limit: FOLLOW,
    };
    traffic.follow(&event, tb, natgw, before)?;
    signals::check()?;

    println!(
        "\n=== Failback: gw1 comes back as after a reboot; natgw starts, then keepalived, \
         which takes the addresses back after its preempt_delay ({PREEMPT_DELAY:?}) ===\n"
    );
    let before = traffic.endpoints();
    tb.revive_box(0)?;
    let flushed = tb.gateways[0]
        .ns
        .command(bin)
        .args(["stop", "--flush"])
        .output()
        .context("natgw stop --flush in gw1")?;
    if !flushed.status.success() {
        esay!(
            "natgw stop --flush in gw1: {}",
            String::from_utf8_lossy(&flushed.stderr).trim()
        );
    }
    natgw[0] = Some(start_natgw(tb, 0, bin, extra)?);
    let t1 = Instant::now();
    tb.start_keepalived(0, bin)?;
    let event = Event {
        what: "failback",
        t0: t1,
        to: 0,
        limit: FOLLOW + PREEMPT_DELAY,
    };
    traffic.follow(&event, tb, natgw, before)?;

    println!(
        "\nWhat to look at:\n  - `natgw status` in a gateway: the `ha role` line (role, \
         keepalived's last state, whether the virtual addresses are held here);\n  - natgw's \
         log: `ha.role_changed` and `ha.vip_present`/`ha.vip_absent` lines;\n  - the \
         keepalived state changes:"
    );
    for (i, name) in HA_GATEWAYS.iter().enumerate() {
        for line in tb
            .keepalived_log(i)
            .lines()
            .filter(|l| l.contains("Entering") || l.contains("sent 0 priority"))
        {
            println!("      {name}: {line}");
        }
    }
    println!(
        "  - the external endpoints: kept across a failover only when the standby holds \
         the active's mappings (replication); otherwise the new active maps each flow \
         anew, and the TCP connection is reset by the server."
    );
    Ok(())
}
