//! The second part of `cargo xtask run`'s demonstration: natgw's XDP fast path.
//!
//! The first part runs on the testbed as a first run finds it: GRO is off on every veth
//! and nothing is attached to the hosts' ends, so a frame redirected into one of the
//! gateway's veths would be lost. natgw sees that (`redirect_ok` = no on `lan0`,
//! `lan1` and `wan0`), and `xdp_lan` / `xdp_wan` hand every packet to the kernel
//! (`pass_no_redirect`), where `tc_wan_egress` / `tc_wan_ingress` translate it. This
//! part says so from the counters, turns GRO on at the peers' ends
//! ([`testbed::Testbed::accept_redirects`]), waits until natgw has noticed, sends the
//! same kind of UDP and TCP traffic from another port, and prints natgw's counters
//! before and after it: which packets XDP translated and which still took TC. The
//! testbed keeps accepting redirects for the rest of the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::Value;
use testbed::{offload, Testbed};

use super::daemon::Natgw;
use super::demo;
use crate::signals;

/// The port the LAN hosts send from in this part: not the first part's
/// ([`demo::CLIENT_PORT`]), so every mapping here is new and made on the fast path.
const CLIENT_PORT: u16 = 41_000;

/// How often natgw's interfaces are looked at while waiting for `redirect_ok`.
const POLL: Duration = Duration::from_millis(200);

/// natgw looks at its interfaces every `--gc-interval`; it may take this many of them
/// (plus [`NOTICE_SLACK`]) to notice a change.
const NOTICE_INTERVALS: u64 = 3;

/// Added to the wait for `redirect_ok`, for a loaded machine.
const NOTICE_SLACK: Duration = Duration::from_secs(5);

/// The counters this part compares, with what each says.
const PATH_COUNTERS: [(&str, &str); 5] = [
    (
        "xdp_out_redirected",
        "LAN to WAN, translated in XDP (xdp_lan)",
    ),
    (
        "xdp_in_redirected",
        "WAN to LAN, translated in XDP (xdp_wan)",
    ),
    (
        "tc_out_translated",
        "LAN to WAN, translated on the kernel's path (tc_wan_egress)",
    ),
    (
        "tc_in_translated",
        "WAN to LAN, translated on the kernel's path (tc_wan_ingress)",
    ),
    (
        "pass_no_redirect",
        "left by XDP to the kernel: the egress accepts no redirects",
    ),
];

/// The width explanations are wrapped at.
const WIDTH: usize = 88;

/// natgw's data-path counters at one moment, by name.
type Counters = BTreeMap<String, u64>;

/// Runs this part; returns how many of its steps failed.
pub fn demonstrate(testbed: &Testbed, natgw: &Natgw) -> Result<usize> {
    println!(
        "\n=== Part 2: the XDP fast path ===\n\nHow the packets of part 1 crossed the \
         gateway (natgw's counters so far):"
    );
    let before = counters(natgw)?;
    explain_part_one(&before);
    println!("\nnatgw's interfaces (`natgw status`):");
    print_interfaces(natgw)?;

    println!(
        "\nTurning GRO on at the peers' ends of the gateway's veths \
         (`testbed::Testbed::accept_redirects`, the ETHTOOL_SGRO ioctl):"
    );
    testbed
        .accept_redirects()
        .context("turning GRO on at the peers of the gateway's veths")?;
    for peer in testbed.redirect_peers() {
        let on = offload::gro(peer.peer_ns, peer.peer_if)?;
        println!(
            "  {:<5} {} GRO {:<3}  (peer of {}; by hand: ip netns exec {} ethtool -K {} gro on)",
            peer.peer_if,
            peer.peer_ns.name(),
            if on { "on" } else { "off" },
            peer.gateway_if,
            peer.peer_ns.name(),
            peer.peer_if
        );
    }
    let mut failures = 0;
    match wait_for_redirects(testbed, natgw)? {
        Some(took) => println!(
            "natgw noticed after {:.1} s (it reads the kernel's xdp-features of its \
             interfaces every --gc-interval):",
            took.as_secs_f64()
        ),
        None => {
            println!(
                "  FAIL  natgw still shows an interface that accepts no redirects (below); \
                 its traffic will take the kernel's path"
            );
            failures += 1;
        }
    }
    print_interfaces(natgw)?;
    signals::check()?;

    println!("\nThe same kind of traffic as in part 1, from port {CLIENT_PORT} (new mappings):");
    let start = counters(natgw)?;
    failures += demo::udp(testbed, CLIENT_PORT)?;
    failures += demo::tcp(testbed, CLIENT_PORT)?;
    signals::check()?;
    let end = counters(natgw)?;
    failures += report(&start, &end);
    Ok(failures)
}

/// Says what the counters tell of part 1: which path its packets took, and why.
fn explain_part_one(counters: &Counters) {
    let get = |name: &str| counters.get(name).copied().unwrap_or(0);
    let (xdp, tc, no_redirect) = (
        get("xdp_out_redirected") + get("xdp_in_redirected"),
        get("tc_out_translated") + get("tc_in_translated"),
        get("pass_no_redirect"),
    );
    for (name, meaning) in PATH_COUNTERS {
        println!("  {name:<20} {:>8}  {meaning}", get(name));
    }
    if xdp == 0 && tc > 0 {
        print_wrapped(&format!(
            "Part 1 ran on the kernel's path (TC): {tc} packets were translated by \
             tc_wan_egress / tc_wan_ingress and none in XDP. Why: a frame that XDP \
             redirects into a veth is delivered only when the veth's peer has GRO on or an \
             XDP program, and the testbed's veths start with GRO off and no program, as \
             veths are created (and as a first run finds them). So natgw marks lan0, lan1 \
             and wan0 redirect_ok = no, and xdp_lan / xdp_wan handed the packets to the \
             kernel instead ({no_redirect} times pass_no_redirect)."
        ));
    } else {
        print_wrapped(&format!(
            "Part 1's packets: {xdp} translated in XDP, {tc} on the kernel's path (TC), \
             {no_redirect} left to the kernel for want of redirects."
        ));
    }
}

/// Prints `text` in lines of at most [`WIDTH`] characters, broken between words.
fn print_wrapped(text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > WIDTH {
            println!("{line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        println!("{line}");
    }
}

/// Polls `natgw status` until every interface of the gateway accepts redirects;
/// `None` when that did not happen within the limit.
fn wait_for_redirects(testbed: &Testbed, natgw: &Natgw) -> Result<Option<Duration>> {
    let wanted: Vec<&str> = testbed
        .redirect_peers()
        .iter()
        .map(|peer| peer.gateway_if)
        .collect();
    let status = status(natgw)?;
    let gc_interval = status["config"]["gc_interval"].as_u64().unwrap_or(1);
    let limit = Duration::from_secs(gc_interval * NOTICE_INTERVALS) + NOTICE_SLACK;
    let started = Instant::now();
    loop {
        let status = self::status(natgw)?;
        let accepting = |name: &&str| {
            status["interfaces"].as_array().is_some_and(|ifaces| {
                ifaces
                    .iter()
                    .any(|i| i["name"] == **name && i["redirect_ok"] == true)
            })
        };
        if wanted.iter().all(accepting) {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() > limit {
            return Ok(None);
        }
        signals::sleep(POLL)?;
    }
}

/// Prints natgw's interfaces with their XDP program and `redirect_ok`.
fn print_interfaces(natgw: &Natgw) -> Result<()> {
    let status = status(natgw)?;
    let Some(ifaces) = status["interfaces"].as_array() else {
        println!("  (natgw status --json lists no interfaces)");
        return Ok(());
    };
    println!("  INTERFACE  ROLE  XDP                  REDIRECT_OK");
    for iface in ifaces {
        let text = |key: &str| iface[key].as_str().unwrap_or("?").to_owned();
        println!(
            "  {:<9}  {:<4}  {:<19}  {}",
            text("name"),
            text("role"),
            format!("{} ({})", text("xdp_program"), text("xdp_mode")),
            match iface["redirect_ok"].as_bool() {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            }
        );
    }
    Ok(())
}

/// Prints the path counters before and after this part's traffic (and any other
/// `pass_*` that rose), and whether XDP translated it; returns 1 if it did not.
fn report(start: &Counters, end: &Counters) -> usize {
    let delta = |name: &str| {
        end.get(name)
            .copied()
            .unwrap_or(0)
            .saturating_sub(start.get(name).copied().unwrap_or(0))
    };
    println!("\nnatgw's counters around this part's traffic (`natgw status --json`):");
    println!(
        "  {:<20} {:>8} {:>8} {:>10}  meaning",
        "counter", "before", "after", "this part"
    );
    let other_passes = end
        .keys()
        .filter(|name| name.starts_with("pass_") && *name != "pass_no_redirect")
        .filter(|name| delta(name) > 0)
        .map(|name| {
            (
                name.as_str(),
                "left by XDP to the kernel (see docs/counters.md)",
            )
        });
    for (name, meaning) in PATH_COUNTERS.into_iter().chain(other_passes) {
        println!(
            "  {name:<20} {:>8} {:>8} {:>10}  {meaning}",
            start.get(name).copied().unwrap_or(0),
            end.get(name).copied().unwrap_or(0),
            format!("+{}", delta(name))
        );
    }
    let (xdp_out, xdp_in) = (delta("xdp_out_redirected"), delta("xdp_in_redirected"));
    let tc = delta("tc_out_translated") + delta("tc_in_translated");
    if xdp_out > 0 && xdp_in > 0 {
        println!(
            "  ok    {} packets of this part were translated in XDP ({xdp_out} LAN to WAN, \
             {xdp_in} WAN to LAN) and {tc} on the kernel's path",
            xdp_out + xdp_in
        );
        if tc > 0 {
            println!("        the {tc} on the kernel's path: the pass_* rows that rose say why");
        }
        0
    } else {
        println!(
            "  FAIL  the fast path did not carry this part's traffic both ways: \
             +{xdp_out} LAN to WAN and +{xdp_in} WAN to LAN in XDP, +{tc} on the kernel's path"
        );
        1
    }
}

/// `natgw status --json`.
fn status(natgw: &Natgw) -> Result<Value> {
    let text = natgw.cli_text(&["status", "--json"])?;
    serde_json::from_str(&text).context("parsing `natgw status --json`")
}

/// natgw's data-path counters now.
fn counters(natgw: &Natgw) -> Result<Counters> {
    let status = status(natgw)?;
    super::counters(&status)
        .map(|list| list.into_iter().collect())
        .context("`natgw status --json` holds no counters in a shape this understands")
}
