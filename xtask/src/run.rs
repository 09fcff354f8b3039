//! `cargo xtask run`: builds natgw, creates the testbed of network namespaces (see the
//! `testbed` crate), starts natgw in the gateway namespace and shows it at work — a
//! short demonstration in which LAN hosts exchange UDP and TCP with WAN hosts, first on
//! the testbed as a first run finds it (natgw translates on the kernel's path, TC), then
//! with the veths' peers accepting XDP redirects (natgw's XDP fast path), then the
//! live mapping table until Ctrl-C — and removes everything on the way out.
//!
//! Cleanup holds on every path: natgw is stopped with SIGTERM (its `Drop` does it on an
//! error or a panic) before the testbed is dropped, since removing a namespace SIGKILLs
//! whatever still runs inside; Ctrl-C and SIGTERM are handled by [`crate::signals`]
//! (policy [`signals::RUN`]), which falls back to `testbed::natgw::force_stop_all` and
//! `testbed::remove_all_registered` if the main flow does not finish.
//!
//! - [`daemon`]: starting, querying and stopping natgw.
//! - [`demo`]: the UDP and TCP exchanges and their tables.
//! - [`fast_path`]: the second part, with GRO on the veths' peers: XDP against TC
//!   from natgw's counters.
//! - [`ha`]: `--ha`, instead of all of the above: a live failover and failback on a
//!   two-gateway testbed with keepalived.
//! - [`punch`]: hole punching between two sites (a second testbed) and its table.
//! - [`stun`]: NAT behaviour discovery with `natgw stun probe`.

/// `println!` for the cleanup paths, which must go on even when standard output is a
/// closed pipe (`cargo xtask run | head`): `println!` would panic there, and a second
/// panic while unwinding aborts before the testbed is removed.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` for the cleanup paths, for the same reason as [`say!`].
macro_rules! esay {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod daemon;
mod demo;
mod fast_path;
mod ha;
mod punch;
mod stun;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use testbed::{
    Testbed, GW_LAN_A_ADDR, GW_LAN_B_ADDR, GW_WAN_ADDR, INET_GW_SIDE_ADDR, INET_WAN_A_SIDE_ADDR,
    INET_WAN_B_SIDE_ADDR, LAN_A_ADDR, LAN_B_ADDR, NETNS_DIR, WAN_A_ADDR, WAN_B_ADDR,
};

use self::daemon::Natgw;
use crate::build;
use crate::signals;
use crate::{exec, paths};

/// natgw's log, below the target directory.
const LOG_NAME: &str = "natgw-run.log";

/// Arguments of `cargo xtask run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    build: build::Args,

    /// Exit after the demonstration instead of showing the live mapping table until
    /// Ctrl-C (for CI and smoke tests).
    #[arg(long, visible_alias = "demo-only")]
    no_live: bool,

    /// Skip the hole-punching demonstration (a second testbed with two natgw sites, a
    /// kernel-NAT site and a rendezvous, where `natgw punch` peers connect directly).
    #[arg(long)]
    no_punch: bool,

    /// Seconds between two live mapping tables.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 2,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    interval: u64,

    /// Instead of the demonstration: a live failover on a testbed of two gateways
    /// with keepalived (VRRP) moving the LAN gateway address and the external address
    /// between them. A UDP flow and a TCP connection run while the active gateway
    /// dies and comes back; a line every 0.25 s shows who holds the addresses, each
    /// natgw's role, the echoes and the external endpoints. About a minute; then
    /// everything is removed. Arguments after `--` go to both gateways' `natgw run`,
    /// with `{own}` and `{peer}` replaced by the gateway's and the other one's LAN
    /// address (e.g. `-- --ha-listen {own}:7780 --ha-peer {peer}:7780 ...`).
    #[arg(long, conflicts_with_all = ["no_punch", "no_live", "interval"])]
    ha: bool,

    /// Use this natgw binary instead of provisioning and building one.
    #[arg(long, value_name = "PATH", conflicts_with = "ebpf_toolchain")]
    natgw: Option<PathBuf>,

    /// Extra arguments for `natgw run`, after `--` (e.g. `-- --gc-interval 5`).
    #[arg(last = true, value_name = "NATGW_RUN_ARGS")]
    natgw_args: Vec<String>,
}

/// `cargo xtask run`.
pub fn run(args: &Args) -> Result<()> {
    if !exec::is_root() {
        bail!(
            "`cargo xtask run` needs root: it creates network namespaces and veth pairs, and \
             natgw loads eBPF programs; rerun it as root"
        );
    }
    // The demo compares natgw with the kernel's NAT (nft) and drives STUN and NAT-PMP
    // clients: the tests' tools.
    let natgw_bin = build::natgw_for_testbed(args.natgw.as_deref(), &args.build)?;

    if args.ha {
        signals::install(&signals::RUN)?;
        return ha::run(&natgw_bin, &args.natgw_args);
    }
    println!("{}", topology());
    // Before the testbed starts any thread, so that every thread inherits the mask.
    signals::install(&signals::RUN)?;
    let testbed = Testbed::new().context("building the testbed")?;
    let id = testbed.id().to_owned();
    println!(
        "Testbed {id} is up: namespaces {}",
        testbed
            .namespaces()
            .iter()
            .map(|ns| ns.name())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let outcome = with_natgw(&testbed, &natgw_bin, args);
    drop(testbed);
    signals::settle();
    report_cleanup(&id);
    outcome
}

/// Starts natgw, runs the demonstration and the live view, and stops natgw.
fn with_natgw(testbed: &Testbed, natgw_bin: &Path, args: &Args) -> Result<()> {
    let log = paths::target_dir().join(LOG_NAME);
    let mut natgw = Natgw::start(natgw_bin, &testbed.gateway.ns, &args.natgw_args, &log)?;
    let outcome = demonstrate(testbed, &natgw, natgw_bin)
        .and_then(|()| demonstrate_fast_path(testbed, &natgw))
        .and_then(|()| demonstrate_stun(natgw_bin, testbed))
        .and_then(|()| {
            if args.no_punch {
                Ok(())
            } else {
                demonstrate_punching(natgw_bin)
            }
        })
        .and_then(|()| {
            if args.no_live {
                Ok(())
            } else {
                live(testbed, &mut natgw, Duration::from_secs(args.interval))
            }
        });
    say!();
    let stopped = natgw.stop();
    match (outcome, stopped) {
        (Ok(()), stopped) => stopped,
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(stop)) => {
            eprintln!("xtask run: also, stopping natgw: {stop:#}");
            Err(e)
        }
    }
}

/// The UDP and TCP exchanges and the port mappings (PCP, UPnP), then what natgw
/// recorded: mappings and counters. The testbed is as a first run finds it, so natgw
/// translates on the kernel's path (TC); [`fast_path`] follows.
fn demonstrate(testbed: &Testbed, natgw: &Natgw, natgw_bin: &Path) -> Result<()> {
    println!(
        "\n=== Part 1: the testbed as a first run finds it ===\n\nThe veths have GRO off \
         and no XDP program on the hosts' ends, so they accept no XDP redirects: natgw \
         translates on the kernel's path (TC) here, and part 2 shows its XDP fast path."
    );
    let mut failures = demo::udp(testbed, demo::CLIENT_PORT)?;
    failures += demo::tcp(testbed, demo::CLIENT_PORT)?;
    failures += demo::port_mapping(testbed, natgw_bin)?;
    signals::check()?;

    println!("\nMappings (`natgw mappings`):");
    match natgw.cli_text(&["mappings"]) {
        Ok(table) => print_indented(&table),
        Err(e) => {
            println!("  FAIL  {e:#}");
            failures += 1;
        }
    }
    println!("\nData-path counters that are not zero (`natgw status`):");
    if let Err(e) = print_counters(natgw) {
        println!("  FAIL  {e:#}");
        failures += 1;
    }
    if failures > 0 {
        bail!(
            "{failures} demonstration step(s) failed (the FAIL lines above); natgw's log: {}",
            natgw.log_path().display()
        );
    }
    println!("\nThe demonstration passed.");
    Ok(())
}

/// The XDP fast path: redirects accepted, the same kind of traffic, the counters
/// ([`fast_path`]).
fn demonstrate_fast_path(testbed: &Testbed, natgw: &Natgw) -> Result<()> {
    let failures = fast_path::demonstrate(testbed, natgw)?;
    signals::check()?;
    if failures > 0 {
        bail!(
            "{failures} fast-path step(s) failed (the FAIL lines above); natgw's log: {}",
            natgw.log_path().display()
        );
    }
    println!("\nThe fast-path demonstration passed.");
    Ok(())
}

/// natgw's and the kernel NAT's behaviour as the STUN probe classifies them
/// ([`stun`]).
fn demonstrate_stun(natgw_bin: &Path, testbed: &Testbed) -> Result<()> {
    let failures = stun::demonstrate(natgw_bin, testbed)?;
    signals::check()?;
    if failures > 0 {
        bail!("{failures} STUN probe(s) failed (the FAIL lines above)");
    }
    Ok(())
}

/// The hole-punching demonstration on its own two-site testbed ([`punch`]).
fn demonstrate_punching(natgw_bin: &Path) -> Result<()> {
    let failures = punch::demonstrate(natgw_bin)?;
    signals::check()?;
    if failures > 0 {
        bail!("{failures} hole-punching pair(s) failed (the FAIL lines above)");
    }
    println!("\nThe hole-punching demonstration passed.");
    Ok(())
}

/// Prints the counters of `natgw status --json` that are not zero, or the plain
/// `natgw status` if its JSON is not in a shape this understands.
fn print_counters(natgw: &Natgw) -> Result<()> {
    let json = natgw.cli_text(&["status", "--json"])?;
    let counters = serde_json::from_str::<Value>(&json)
        .ok()
        .and_then(|status| counters(&status));
    let Some(counters) = counters else {
        print_indented(&natgw.cli_text(&["status"])?);
        return Ok(());
    };
    let nonzero: Vec<&(String, u64)> = counters.iter().filter(|(_, value)| *value > 0).collect();
    if nonzero.is_empty() {
        println!("  (all zero)");
    }
    let width = nonzero
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0);
    for (name, value) in nonzero {
        println!("  {name:<width$}  {value}");
    }
    Ok(())
}

/// The counters of `natgw status --json`, accepting `{"counters": {"name": n}}` and
/// `{"counters": [{"name": .., "value": n}]}`, with per-CPU arrays summed.
fn counters(status: &Value) -> Option<Vec<(String, u64)>> {
    let number = |value: &Value| {
        value.as_u64().or_else(|| {
            value
                .as_array()
                .map(|per_cpu| per_cpu.iter().filter_map(Value::as_u64).sum())
        })
    };
    match status.get("counters")? {
        Value::Object(map) => map
            .iter()
            .map(|(name, value)| Some((name.clone(), number(value)?)))
            .collect(),
        Value::Array(list) => list
            .iter()
            .map(|entry| {
                let name = entry.get("name")?.as_str()?.to_owned();
                Some((name, number(entry.get("value")?)?))
            })
            .collect(),
        _ => None,
    }
}

/// Prints the mapping table every `interval` until a signal arrives (the normal end) or
/// natgw exits (an error).
fn live(testbed: &Testbed, natgw: &mut Natgw, interval: Duration) -> Result<()> {
    let gw = testbed.gateway.ns.name();
    let lan_a = testbed.lan.first().map_or("", |host| host.ns.name());
    println!(
        "\nLive: the mapping table every {} s until Ctrl-C. Meanwhile, in another terminal:\n  \
         ip netns exec {lan_a} bash -c 'echo hi >/dev/udp/{WAN_B_ADDR}/9'   \
         # one more UDP mapping\n  \
         ip netns exec {gw} {} status\n\
         natgw's log: {}",
        interval.as_secs(),
        natgw.bin().display(),
        natgw.log_path().display()
    );
    loop {
        if let Some(status) = natgw.exited()? {
            bail!(
                "natgw exited on its own ({status}); the end of its log:\n{}",
                natgw.log_tail()
            );
        }
        println!("\n[{} UTC] natgw mappings", clock());
        match natgw.cli_text(&["mappings"]) {
            Ok(table) => print_indented(&table),
            Err(e) => println!("  {e:#}"),
        }
        if signals::sleep(interval).is_err() {
            // Ctrl-C is how the live view ends.
            return Ok(());
        }
    }
}

/// Says what is left after the testbed was dropped: nothing, normally.
fn report_cleanup(id: &str) {
    let prefix = format!("{id}-");
    let left: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter(|name| name.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    if !left.is_empty() {
        esay!(
            "xtask run: warning: namespaces left behind: {}; remove them with `ip netns del NAME`",
            left.join(", ")
        );
    }
    let natgw_left = daemon::leftovers();
    for dir in &natgw_left {
        esay!("xtask run: warning: {} is still there", dir.display());
    }
    if left.is_empty() && natgw_left.is_empty() {
        say!(
            "Cleaned up: no {NETNS_DIR}/{prefix}* namespace left, and nothing of this run \
             under {} or {}",
            daemon::PIN_ROOT,
            daemon::STATE_ROOT
        );
    }
}

/// The testbed as a picture, with the addresses from the `testbed` crate.
fn topology() -> String {
    let pair = |left: String, right: String| format!("    {left:<26}{right}");
    let middle = |text: String| format!("{text:^48}").trim_end().to_owned();
    [
        "The testbed (gateway, inet and each host are network namespaces):".to_owned(),
        String::new(),
        pair(format!("lan-a {LAN_A_ADDR}"), format!("lan-b {LAN_B_ADDR}")),
        pair("      |".to_owned(), "      |".to_owned()),
        pair(
            format!("lan0 {GW_LAN_A_ADDR}"),
            format!("lan1 {GW_LAN_B_ADDR}"),
        ),
        "    +------------- gateway ---------------+   natgw runs here".to_owned(),
        middle(format!("wan0 {GW_WAN_ADDR}")),
        middle("|".to_owned()),
        middle(format!("gw0 {INET_GW_SIDE_ADDR}")),
        "    +-------------- inet -----------------+   the \"internet\": a router".to_owned(),
        pair(
            format!("wana0 {INET_WAN_A_SIDE_ADDR}"),
            format!("wanb0 {INET_WAN_B_SIDE_ADDR}"),
        ),
        pair("      |".to_owned(), "      |".to_owned()),
        pair(format!("wan-a {WAN_A_ADDR}"), format!("wan-b {WAN_B_ADDR}")),
        String::new(),
    ]
    .join("\n")
}

fn print_indented(text: &str) {
    let text = text.trim_end();
    if text.is_empty() {
        println!("  (empty)");
    }
    for line in text.lines() {
        println!("  {line}");
    }
}

/// The time of day in UTC, `HH:MM:SS`.
fn clock() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() % 86_400);
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}
