//! The hole-punching part of `cargo xtask run`: the two-site topology
//! ([`testbed::Sites`]) with natgw on both site gateways and the kernel's NAT on the
//! third, `natgw rendezvous` on the internet, and pairs of `natgw punch` peers; then a
//! table of how each pair connected and where each peer learned its public endpoint
//! (STUN from the rendezvous, PCP PEER), and the rendezvous's counters, which show
//! that it only introduced the peers and answered STUN.
//!
//! Every process here is ours alone: started with SIGINT/SIGTERM unblocked in its own
//! process group and stopped with SIGTERM when its [`Natgw`] or [`Process`] is dropped
//! (and killed with the namespaces if a second Ctrl-C forces the cleanup).

use std::io::{BufRead as _, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use testbed::sites::{
    A1_ADDR, A2_ADDR, B1_ADDR, INET_RENDEZVOUS_SIDE_ADDR, K1_ADDR, RENDEZVOUS_ADDR,
    SITE_A_LAN_ADDR, SITE_A_WAN_ADDR, SITE_B_LAN_ADDR, SITE_B_WAN_ADDR, SITE_K_LAN_ADDR,
    SITE_K_WAN_ADDR, SITE_LAN_IF, SITE_WAN_IF,
};
use testbed::{Natgw, Netns, Sites, SitesOptions};

use super::daemon;
use crate::paths;
use crate::signals;

/// Where the rendezvous listens.
const RENDEZVOUS_PORT: u16 = 7000;
/// `natgw punch --timeout`.
const PUNCH_TIMEOUT: &str = "5";
/// How long a punch may run before it is killed (it never should be).
const PUNCH_LIMIT: Duration = Duration::from_secs(20);
/// How much of natgw's log a failure shows.
const LOG_TAIL_LINES: usize = 30;
/// How long a process may take to exit after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// Site B's filtering: the strictest, to show that punching does not need a lenient NAT.
const SITE_B_ARGS: [&str; 4] = [
    "--udp-filtering",
    "address-and-port-dependent",
    "--tcp-filtering",
    "address-and-port-dependent",
];

/// A child process we stop on drop.
struct Process {
    child: Option<Child>,
    what: String,
}

impl Process {
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        esay!(
            "xtask run: {} did not stop within {STOP_WAIT:?}; killing it",
            self.what
        );
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the second peer of a pair asks its gateway with PCP.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pcp {
    /// Nothing.
    No,
    /// A MAP of its port, and PEER towards the first peer (`--pcp GATEWAY`).
    Map,
    /// Only PEER towards the first peer (`--pcp GATEWAY --pcp-peer-only`).
    PeerOnly,
}

/// One pair of peers to punch.
struct Case {
    what: &'static str,
    transport: &'static str,
    first: (usize, &'static str),
    second: (usize, &'static str),
    first_args: &'static [&'static str],
    second_args: &'static [&'static str],
    /// The second peer opens its port (MAP) or its NAT towards the first peer (PEER)
    /// with PCP at its gateway and waits to be reached (`--passive`).
    second_pcp: Pcp,
}

/// Hosts by index: a1, a2, b1, k1.
const HOSTS: [&str; 4] = ["a1", "a2", "b1", "k1"];
/// Each host's gateway (LAN address), by the same index.
const GATEWAYS: [Ipv4Addr; 4] = [
    SITE_A_LAN_ADDR,
    SITE_A_LAN_ADDR,
    SITE_B_LAN_ADDR,
    SITE_K_LAN_ADDR,
];

const CASES: [Case; 8] = [
    Case {
        what: "site A ↔ site B",
        transport: "udp",
        first: (0, "a1"),
        second: (2, "b1"),
        first_args: &[],
        second_args: &[],
        second_pcp: Pcp::No,
    },
    Case {
        what: "site A ↔ site B",
        transport: "tcp",
        first: (0, "a1-tcp"),
        second: (2, "b1-tcp"),
        first_args: &["--tcp"],
        second_args: &["--tcp"],
        second_pcp: Pcp::No,
    },
    Case {
        what: "a1 ↔ a2 via the gateway (hairpin)",
        transport: "udp",
        first: (0, "a1-hairpin"),
        second: (1, "a2-hairpin"),
        first_args: &["--only", "public"],
        second_args: &["--only", "public"],
        second_pcp: Pcp::No,
    },
    Case {
        what: "a1 ↔ a2 on their LAN",
        transport: "udp",
        first: (0, "a1-lan"),
        second: (1, "a2-lan"),
        first_args: &["--only", "private"],
        second_args: &["--only", "private"],
        second_pcp: Pcp::No,
    },
    Case {
        what: "site A ↔ kernel-NAT site",
        transport: "udp",
        first: (0, "a1-k"),
        second: (3, "k1-a"),
        first_args: &[],
        second_args: &[],
        second_pcp: Pcp::No,
    },
    Case {
        what: "site B ↔ kernel-NAT site",
        transport: "tcp",
        first: (2, "b1-k-tcp"),
        second: (3, "k1-b-tcp"),
        first_args: &["--tcp"],
        second_args: &["--tcp"],
        second_pcp: Pcp::No,
    },
    Case {
        what: "site A → b1's PCP mapping",
        transport: "udp",
        first: (0, "a1-pcp"),
        second: (2, "b1-pcp"),
        first_args: &["--only", "mapped"],
        second_args: &[],
        second_pcp: Pcp::Map,
    },
    Case {
        what: "site A → b1, let in by PCP PEER",
        transport: "udp",
        first: (0, "a1-peer"),
        second: (2, "b1-peer"),
        first_args: &["--only", "public"],
        second_args: &[],
        second_pcp: Pcp::PeerOnly,
    },
];

/// Runs the demonstration; returns how many pairs failed.
pub fn demonstrate(natgw_bin: &Path) -> Result<usize> {
    println!("\n{}", topology());
    let sites = Sites::new(SitesOptions::default()).context("building the two-site testbed")?;
    println!(
        "Sites {} are up: {} namespaces",
        sites.id(),
        sites.namespaces().len()
    );
    let outcome = with_processes(&sites, natgw_bin);
    drop(sites);
    outcome
}

fn with_processes(sites: &Sites, bin: &Path) -> Result<usize> {
    let logs = paths::target_dir();
    let gateways = [(&sites.a, &[][..]), (&sites.b, &SITE_B_ARGS[..])];
    let mut natgw = Vec::new();
    for (site, extra) in gateways {
        let log = logs.join(format!("natgw-run-site-{}.log", site.name));
        println!(
            "Starting natgw on site {}'s gateway{}; its log: {}",
            site.name.to_uppercase(),
            if extra.is_empty() {
                String::new()
            } else {
                format!(" ({})", extra.join(" "))
            },
            log.display()
        );
        natgw.push(natgw_builder(bin, extra, &log).spawn(&site.gateway)?);
    }
    // Both load their programs at once; then each must answer.
    for process in &mut natgw {
        let ns = process.namespace().name().to_owned();
        let took = daemon::wait_ready(process).with_context(|| format!("natgw in {ns}"))?;
        println!(
            "natgw in {ns} is ready (`natgw status` answered after {:.1} s)",
            took.as_secs_f64()
        );
    }
    let rendezvous = format!("{RENDEZVOUS_ADDR}:{RENDEZVOUS_PORT}");
    println!("Starting `natgw rendezvous --listen {rendezvous}` on the rendezvous host");
    let (mut rendezvous_process, rendezvous_out) = start_rendezvous(bin, &sites.rendezvous.ns)?;

    let hosts = [
        &sites.a.hosts[0].ns,
        &sites.a.hosts[1].ns,
        &sites.b.hosts[0].ns,
        &sites.k.hosts[0].ns,
    ];
    println!(
        "\nEach pair runs `natgw punch --rendezvous {rendezvous} --id X --peer Y ...` on both \
         hosts at once:"
    );
    let mut rows = Vec::new();
    for case in &CASES {
        signals::check()?;
        let (a, b) = run_case(bin, &hosts, case, &rendezvous)?;
        rows.push((case, a, b));
    }
    print_table(&rows);

    rendezvous_process.stop();
    match rendezvous_summary(rendezvous_out) {
        Some(summary) => {
            let c = &summary["counters"];
            println!(
                "\nThe rendezvous saw {} messages: {} registrations, {} lookups, {} \
                 introductions, {} malformed, {} it had no business with (probes, acks); \
                 and it answered {} STUN Binding requests on the same port. Everything \
                 else went directly between the peers' gateways.",
                c["received"],
                c["registered"],
                c["connects"],
                c["introductions"],
                c["malformed"],
                c["unexpected"],
                summary["stun"]["success"]
            );
        }
        None => println!("\nThe rendezvous printed no counters."),
    }
    drop(natgw);
    Ok(rows.iter().filter(|(_, a, b)| !(ok(a) && ok(b))).count())
}

fn ok(report: &Value) -> bool {
    report["ok"] == true
}

/// `natgw run --wan wan0 --lan lan0 EXTRA...` for a site's gateway, logging to `log`.
fn natgw_builder(bin: &Path, extra: &[&str], log: &Path) -> testbed::NatgwBuilder {
    Natgw::builder(bin)
        .ifaces(["--wan", SITE_WAN_IF, "--lan", SITE_LAN_IF])
        .args(extra)
        .log(log)
        .rust_log(None)
        .ready_within(daemon::READY_WAIT)
        .stop_within(STOP_WAIT)
        .log_lines_in_errors(LOG_TAIL_LINES)
        .own_process_group()
        .remove_leftovers()
        .interrupted_by(signals::stop_requested)
}

/// Starts the rendezvous and waits for its `listening` line.
fn start_rendezvous(
    bin: &Path,
    ns: &Netns,
) -> Result<(Process, BufReader<std::process::ChildStdout>)> {
    let mut cmd = ns.command(bin);
    let mut child = signals::unblock_in_child(&mut cmd)
        .args(["rendezvous", "--json", "--listen"])
        .arg(format!("{RENDEZVOUS_ADDR}:{RENDEZVOUS_PORT}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting natgw rendezvous")?;
    let mut out = BufReader::new(child.stdout.take().context("rendezvous stdout")?);
    let process = Process {
        child: Some(child),
        what: "natgw rendezvous".to_owned(),
    };
    let mut line = String::new();
    out.read_line(&mut line)
        .context("reading the rendezvous's first line")?;
    if !line.contains("listening") {
        bail!("natgw rendezvous did not start: {line:?}");
    }
    Ok((process, out))
}

/// What the rendezvous printed when it stopped: its counters and its STUN
/// responder's.
fn rendezvous_summary(out: BufReader<std::process::ChildStdout>) -> Option<Value> {
    out.lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .find(|v| v["event"] == "stopped")
}

/// Runs both peers of `case` at once and returns their JSON reports.
fn run_case(
    bin: &Path,
    hosts: &[&Netns; 4],
    case: &Case,
    rendezvous: &str,
) -> Result<(Value, Value)> {
    let spawn = |(host, id): (usize, &str), (_, peer): (usize, &str), extra: &[&str]| {
        let mut cmd = hosts[host].command(bin);
        signals::unblock_in_child(&mut cmd)
            .args([
                "punch",
                "--json",
                "--timeout",
                PUNCH_TIMEOUT,
                "--rendezvous",
                rendezvous,
            ])
            .args(["--id", id, "--peer", peer])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting natgw punch on {}", HOSTS[host]))
    };
    let gateway = GATEWAYS[case.second.0].to_string();
    let mut second_args = case.second_args.to_vec();
    match case.second_pcp {
        Pcp::No => {}
        Pcp::Map => second_args.extend(["--pcp", &gateway, "--passive"]),
        Pcp::PeerOnly => {
            second_args.extend(["--pcp", &gateway, "--pcp-peer-only", "--passive"]);
        }
    }
    let first = spawn(case.first, case.second, case.first_args)?;
    let second = spawn(case.second, case.first, &second_args)?;
    Ok((collect(first)?, collect(second)?))
}

/// Waits for a punch (killing it after [`PUNCH_LIMIT`]) and parses its report.
fn collect(mut child: Child) -> Result<Value> {
    let started = Instant::now();
    loop {
        if child
            .try_wait()
            .context("waiting for natgw punch")?
            .is_some()
        {
            break;
        }
        if started.elapsed() > PUNCH_LIMIT || signals::stop_requested() {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child
        .wait_with_output()
        .context("reading natgw punch's report")?;
    Ok(serde_json::from_slice(&out.stdout).unwrap_or_else(
        |_| serde_json::json!({"ok": false, "error": "natgw punch printed no report"}),
    ))
}

/// Where a peer's public endpoint came from, and whether its gateway answered PCP
/// PEER: `stun`, `rendezvous` (STUN failed), `pcp`; `+peer` when PEER opened the way.
fn learned(report: &Value) -> String {
    let from = report["public_from"].as_str().unwrap_or("-");
    let peer = report["pcp_peer"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["external"].is_string()));
    if peer {
        format!("{from}+peer")
    } else {
        from.to_owned()
    }
}

/// The result table: one row per pair.
fn print_table(rows: &[(&Case, Value, Value)]) {
    let header = [
        "pair",
        "proto",
        "ok",
        "method (first → second)",
        "public endpoint from",
        "time to connect",
        "rtt",
    ];
    let mut table: Vec<[String; 7]> = vec![header.map(str::to_owned)];
    let mut problems = Vec::new();
    for (case, a, b) in rows {
        let both = ok(a) && ok(b);
        let method = |r: &Value| r["method"].as_str().unwrap_or("-").to_owned();
        let methods = if method(a) == method(b) {
            method(a)
        } else {
            format!("{} / {}", method(a), method(b))
        };
        // Connected once both sides verified the path.
        let connect = [a, b]
            .iter()
            .filter_map(|r| r["connect_ms"].as_f64())
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let sources = if learned(a) == learned(b) {
            learned(a)
        } else {
            format!("{} / {}", learned(a), learned(b))
        };
        table.push([
            case.what.to_owned(),
            case.transport.to_uppercase(),
            if both { "yes" } else { "FAIL" }.to_owned(),
            if both { methods } else { "-".to_owned() },
            sources,
            connect
                .filter(|_| both)
                .map_or("-".to_owned(), |ms| format!("{ms:.1} ms")),
            a["rtt_ms"]
                .as_f64()
                .filter(|_| both)
                .map_or("-".to_owned(), |ms| format!("{ms:.2} ms")),
        ]);
        for r in [a, b] {
            if let Some(e) = r["error"].as_str() {
                problems.push(format!(
                    "{} ({}): {}: {e}",
                    case.what, case.transport, r["id"]
                ));
            }
        }
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    println!();
    for (n, row) in table.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
            .collect();
        println!("  {}", line.join("  ").trim_end());
        if n == 0 {
            println!(
                "  {}",
                widths
                    .iter()
                    .map(|&w| "-".repeat(w))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
    }
    for p in problems {
        println!("  FAIL  {p}");
    }
}

/// The two-site topology as a picture, with the addresses from the `testbed` crate.
fn topology() -> String {
    let sites = [
        (
            format!("a2 {A2_ADDR} ┴─ {SITE_A_LAN_ADDR} [site A: natgw] {SITE_A_WAN_ADDR} "),
            "┐".to_owned(),
        ),
        (
            format!("b1 {B1_ADDR} ── {SITE_B_LAN_ADDR} [site B: natgw, APDF] {SITE_B_WAN_ADDR} "),
            format!("┤ inet {INET_RENDEZVOUS_SIDE_ADDR} ── {RENDEZVOUS_ADDR} rendezvous"),
        ),
        (
            format!(
                "k1 {K1_ADDR} ── {SITE_K_LAN_ADDR} [site K: nftables masquerade] \
                 {SITE_K_WAN_ADDR} "
            ),
            "┘".to_owned(),
        ),
    ];
    let width = sites
        .iter()
        .map(|(left, _)| left.chars().count())
        .max()
        .unwrap_or(0);
    let mut lines = vec![
        "Hole punching between two real sites (a second testbed; each box a namespace):".to_owned(),
        String::new(),
        format!("    a1 {A1_ADDR} ┐"),
    ];
    for (left, right) in sites {
        let fill = "─".repeat(width - left.chars().count() + 1);
        lines.push(format!("    {left}{fill}{right}"));
    }
    lines.push(String::new());
    lines.join("\n")
}
