//! Connection setup in the manner of RFC 9693 (Benchmarking Methodology for Stateful
//! NATxy Gateways): the maximum connection establishment rate and the connection
//! tracking table capacity, for natgw and nftables masquerade (issue #18).
//!
//! Every *trial* runs on a fresh topology and a fresh gateway, so its state table
//! starts empty, in the RFC's two phases:
//!
//! 1. **Preliminary phase**: the generator (the RFC's Initiator) on the LAN side sends
//!    one UDP datagram for each of `n` new connections, each from a new internal
//!    endpoint, at the offered rate (`GEN_RATE`), never more than
//!    [`PACED_IN_FLIGHT`] frames ahead of the receiver (the Responder, `xdp_count_drop`
//!    on `brcv0`).
//! 2. **Validation** (the real test phase, reduced to its check): the bench reads the
//!    state the gateway made (natgw's mappings, conntrack's entries) and the
//!    Responder's side sends one datagram back on every connection, to the external
//!    endpoint the gateway chose, from the WAN; the receiver on `bgen0` counts what
//!    reaches the internal hosts.
//!
//! A trial passes when all `n` datagrams reached the Responder at the offered rate (at
//! least [`RATE_KEPT`] of it, from the first to the last arrival), the gateway holds
//! state for all `n` connections, and all `n` validation datagrams reached the LAN.
//!
//! - **Maximum connection establishment rate**: a binary search over the offered rate
//!   between 0 and [`SetupPlan::max_rate`], [`SetupPlan::steps`] trials; the result is
//!   the highest rate that passed.
//! - **Table capacity**: one trial at a safe rate offering more connections than
//!   natgw's table (`--max-mappings`) holds; the capacity is the number of connections
//!   that passed the validation. The kernel's `nf_conntrack_max` is one value for the
//!   whole machine (read-only in a network namespace), so the bench cannot size
//!   conntrack like natgw without changing the host's setting: nft runs at the host's
//!   limit, reported beside what it held.
//! - The connection tear-down rate of the RFC is not measured: natgw removes UDP
//!   mappings by timeout only (no tear-down signal), and its expiry is measured by the
//!   million-mapping GC part of the bench.

use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::cpu;
use super::daemon::Natgw;
use super::frames::L4;
use super::inbound;
use super::net::{Bench, Direction, End};
use super::programs::{names, FlowSpec, Rx, Tools};
use super::throughput::{
    self, internal_addrs, nft_masquerade, template, tuples, GenThread, Mode, Rig, BURST_STALL,
    GEN_CPU, GW_CPU, PACED_IN_FLIGHT, PORTS_PER_ADDR,
};
use crate::signals;

/// A trial keeps the rate when its connections reached the Responder at no less than
/// this share of the offered rate.
pub const RATE_KEPT: f64 = 0.95;
/// The validation's rate and the capacity trial's: far below what either gateway
/// manages, so that nothing is lost for want of time.
const SAFE_RATE: u32 = 50_000;
/// How long a phase may take at most (a stalled phase ends sooner, after
/// [`BURST_STALL`] without progress).
const PHASE_LIMIT: Duration = Duration::from_secs(30);

/// The modes measured: those that keep per-connection state.
pub const MODES: [Mode; 2] = [Mode::Natgw, Mode::Nft];

/// Sizes and bounds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SetupPlan {
    /// New connections per rate trial.
    pub connections: u32,
    /// Trials of the binary search per mode.
    pub steps: u32,
    /// The upper bound of the search (connections per second).
    pub max_rate: u32,
    /// natgw's `--max-mappings` in the capacity trial.
    pub natgw_table: u32,
    /// Connections the capacity trial offers (more than `natgw_table`).
    pub capacity_offered: u32,
}

impl SetupPlan {
    /// The bench's plan (`quick`: fewer connections and steps).
    #[must_use]
    pub fn new(quick: bool) -> SetupPlan {
        SetupPlan {
            connections: if quick { 8_192 } else { 16_384 },
            steps: if quick { 7 } else { 9 },
            max_rate: 2_000_000,
            natgw_table: 32_768,
            capacity_offered: 40_960,
        }
    }
}

/// One trial.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Trial {
    /// Offered connections per second.
    pub offered_rate: u32,
    /// Connections offered.
    pub connections: u32,
    /// Preliminary-phase datagrams that reached the Responder.
    pub forwarded: u64,
    /// Their rate from the first to the last arrival.
    pub achieved_rate: f64,
    /// Connections the gateway holds state for afterwards.
    pub with_state: usize,
    /// State entries the gateway listed (natgw's UDP mappings, conntrack's UDP entries).
    pub state_entries: usize,
    /// Validation datagrams that reached the internal hosts.
    pub validated: u64,
    /// Whether the trial passed (all of the above complete, the rate kept).
    pub pass: bool,
}

/// One mode's binary search.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RateSearch {
    /// The mode.
    pub mode: Mode,
    /// The highest offered rate that passed (`None`: none did).
    pub max_rate: Option<u32>,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
}

/// One mode's table capacity.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Capacity {
    /// The mode.
    pub mode: Mode,
    /// The configured limit: natgw's `--max-mappings`, the host's `nf_conntrack_max`.
    pub limit: Option<u64>,
    /// Where the limit comes from.
    pub limit_source: &'static str,
    /// The trial.
    pub trial: Trial,
}

impl Capacity {
    /// Connections that passed the validation: what the gateway really held.
    #[must_use]
    pub fn held(&self) -> u64 {
        self.trial.validated
    }
}

/// Everything the setup part measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SetupResults {
    /// The plan.
    pub plan: Option<SetupPlan>,
    /// Per mode.
    pub rates: Vec<RateSearch>,
    /// Per mode.
    pub capacity: Vec<Capacity>,
    /// Modes that could not run here, and why.
    pub unavailable: Vec<(Mode, String)>,
}

impl SetupResults {
    /// The search of `mode`.
    #[must_use]
    pub fn rate(&self, mode: Mode) -> Option<&RateSearch> {
        self.rates.iter().find(|r| r.mode == mode)
    }

    /// The capacity of `mode`.
    #[must_use]
    pub fn capacity_of(&self, mode: Mode) -> Option<&Capacity> {
        self.capacity.iter().find(|c| c.mode == mode)
    }
}

/// Runs the searches and the capacity trials; `unavailable` carries the modes the
/// packet-rate part found unable to run (the flowtable).
pub fn run(
    rig: &mut Rig<'_>,
    plan: &SetupPlan,
    unavailable: &[(Mode, String)],
) -> Result<SetupResults> {
    let mut out = SetupResults {
        plan: Some(*plan),
        unavailable: unavailable.to_vec(),
        ..SetupResults::default()
    };
    for mode in MODES {
        let mut trials = Vec::new();
        let best = binary_search(plan.max_rate, plan.steps, |rate| {
            signals::check()?;
            let trial = trial(rig, mode, plan.connections, rate, None)
                .with_context(|| format!("{} setup trial at {rate}/s", mode.label()))?;
            eprintln!(
                "  {} setup {}/{}: {rate}/s offered, {} forwarded at {:.0}/s, {} with state, \
                 {} validated: {}",
                mode.label(),
                trials.len() + 1,
                plan.steps,
                trial.forwarded,
                trial.achieved_rate,
                trial.with_state,
                trial.validated,
                if trial.pass { "pass" } else { "fail" }
            );
            let pass = trial.pass;
            trials.push(trial);
            Ok(pass)
        })?;
        out.rates.push(RateSearch {
            mode,
            max_rate: best,
            trials,
        });
    }
    for mode in MODES {
        signals::check()?;
        let table = (mode == Mode::Natgw).then_some(plan.natgw_table);
        let trial = trial(rig, mode, plan.capacity_offered, SAFE_RATE, table)
            .with_context(|| format!("{} capacity trial", mode.label()))?;
        let (limit, limit_source) = match mode {
            Mode::Natgw => (Some(u64::from(plan.natgw_table)), "natgw --max-mappings"),
            _ => (conntrack_max(), "nf_conntrack_max (the host's)"),
        };
        eprintln!(
            "  {} capacity: {} of {} offered connections held and validated (limit {})",
            mode.label(),
            trial.validated,
            trial.connections,
            limit.map_or_else(|| "unknown".to_owned(), |l| l.to_string())
        );
        out.capacity.push(Capacity {
            mode,
            limit,
            limit_source,
            trial,
        });
    }
    Ok(out)
}

/// The highest value in `0..=max` for which `pass` holds, by `steps` halvings of the
/// interval (RFC 9693's binary search): each probe is the middle of what is left; a
/// pass moves the lower bound up, a failure the upper bound down. `None` when no probe
/// passed.
fn binary_search(
    max: u32,
    steps: u32,
    mut pass: impl FnMut(u32) -> Result<bool>,
) -> Result<Option<u32>> {
    let (mut lo, mut hi) = (0u32, max);
    let mut best = None;
    for _ in 0..steps {
        let probe = lo + (hi - lo) / 2;
        if probe == lo && best.is_some() {
            break;
        }
        if pass(probe)? {
            lo = probe;
            best = Some(probe);
        } else {
            hi = probe;
        }
    }
    Ok(best)
}

/// The host's conntrack limit.
fn conntrack_max() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A gateway for one trial, dropped in field order.
struct TrialGateway {
    natgw: Option<Natgw>,
    _links: Vec<aya::programs::xdp::XdpLink>,
    net: Bench,
}

/// Builds the topology with receivers on both ends and `mode`'s gateway.
fn gateway(rig: &mut Rig<'_>, mode: Mode, n: u32, table: Option<u32>) -> Result<TrialGateway> {
    let net = Bench::create()?;
    net.add_lan_neighbours(internal_addrs(n))?;
    let mut links = Vec::new();
    for end in [
        net.receiver(Direction::LanToWan),
        net.receiver(Direction::WanToLan),
    ] {
        links.push(
            rig.tools
                .attach(names::XDP_COUNT_DROP, end.ns, end.iface.ifindex)?,
        );
    }
    let mut natgw = None;
    match mode {
        Mode::Natgw => {
            let log = rig.log_dir.join("natgw-bench-setup.log");
            let size = table.map_or_else(
                || throughput::NATGW_MAX_MAPPINGS.to_owned(),
                |t| t.to_string(),
            );
            let extra = ["--max-mappings".to_owned(), size];
            natgw = Some(Natgw::start(
                rig.natgw_bin,
                &net.gw,
                &extra,
                Some(GEN_CPU),
                &log,
            )?);
        }
        _ => {
            for ifindex in [net.lan_if.ifindex, net.wan_if.ifindex] {
                links.push(rig.tools.attach(names::XDP_PASS, &net.gw, ifindex)?);
            }
            nft_masquerade(&net.gw)?;
        }
    }
    for (ns, ifname, cpu_) in [
        (&net.gw, net.ingress(Direction::LanToWan).name, GW_CPU),
        (&net.gw, net.ingress(Direction::WanToLan).name, GW_CPU),
        (&net.rcv, net.receiver(Direction::LanToWan).name, GEN_CPU),
        (&net.gen, net.receiver(Direction::WanToLan).name, GEN_CPU),
    ] {
        for tid in Bench::thread_napi(ns, ifname)? {
            cpu::pin(tid, cpu_)?;
            cpu::boost(tid)?;
        }
    }
    Ok(TrialGateway {
        natgw,
        _links: links,
        net,
    })
}

/// One trial: `n` new connections at `rate` per second, then their validation.
fn trial(rig: &mut Rig<'_>, mode: Mode, n: u32, rate: u32, table: Option<u32>) -> Result<Trial> {
    let gw = gateway(rig, mode, n, table)?;
    let spec = FlowSpec {
        flows: n,
        endpoints: n,
        ports_per_addr: PORTS_PER_ADDR,
    };
    let outbound = tuples(spec);

    // Preliminary phase.
    let frame = template(L4::Udp, Direction::LanToWan);
    rig.tools.configure_gen(&frame, spec, n, PACED_IN_FLIGHT)?;
    rig.tools.set_rate(rate)?;
    let rx = send(&mut rig.tools, gw.net.sender(Direction::LanToWan), frame, n)?;
    let seconds = rx.last_ns.saturating_sub(rx.first_ns) as f64 / 1e9;
    let achieved_rate = if seconds > 0.0 {
        rx.packets.saturating_sub(1) as f64 / seconds
    } else {
        0.0
    };

    // The state, and the validation.
    let (flows, state_entries) = inbound::state_flows(gw.natgw.as_ref(), &gw.net.gw, &outbound)?;
    let validated = if flows.is_empty() {
        0
    } else {
        let frame = template(L4::Udp, Direction::WanToLan);
        let k = flows.len() as u32;
        rig.tools.configure_gen(
            &frame,
            FlowSpec {
                flows: k,
                endpoints: 1,
                ports_per_addr: 1,
            },
            k,
            PACED_IN_FLIGHT,
        )?;
        rig.tools.set_flow_table(&flows)?;
        rig.tools.set_rate(SAFE_RATE)?;
        send(&mut rig.tools, gw.net.sender(Direction::WanToLan), frame, k)?.packets
    };
    let pass = rx.packets == u64::from(n)
        && achieved_rate >= f64::from(rate) * RATE_KEPT
        && flows.len() == n as usize
        && validated == u64::from(n);
    drop(gw);
    Ok(Trial {
        offered_rate: rate,
        connections: n,
        forwarded: rx.packets,
        achieved_rate,
        with_state: flows.len(),
        state_entries,
        validated,
        pass,
    })
}

/// Runs the configured generator from `from` until the receiver has counted `total`
/// frames, it made no progress for [`BURST_STALL`], or [`PHASE_LIMIT`] passed.
fn send(
    tools: &mut Tools,
    from: End<'_>,
    frame: [u8; super::frames::FRAME_LEN],
    total: u32,
) -> Result<Rx> {
    let prog: OwnedFd = tools.gen_fd()?.try_clone_to_owned()?;
    let stop = AtomicBool::new(false);
    let tools = &*tools;
    std::thread::scope(|scope| -> Result<Rx> {
        let gen = GenThread::start(scope, from.ns, prog, frame, from.iface.ifindex, &stop)?;
        let waited = throughput::wait_for_receiver(
            tools,
            total,
            BURST_STALL.max(Duration::from_millis(200)),
            Some(PHASE_LIMIT),
        );
        let stopped = gen.stop();
        let rx = waited?;
        stopped?;
        Ok(rx)
    })
}

/// The heading of the section `--setup-only --write-docs` replaces.
pub const HEADING: &str = "## Connection setup and table capacity, RFC 9693 (issue #18)";

/// natgw's figure over nft's, if both are there.
fn over(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

impl SetupResults {
    /// natgw's maximum connection establishment rate over nft's.
    #[must_use]
    pub fn rate_ratio(&self) -> Option<f64> {
        let rate = |m| self.rate(m).and_then(|r| r.max_rate).map(f64::from);
        over(rate(Mode::Natgw), rate(Mode::Nft))
    }

    /// natgw's validated connections over nft's in the capacity trial.
    #[must_use]
    pub fn capacity_ratio(&self) -> Option<f64> {
        let held = |m| self.capacity_of(m).map(|c| c.held() as f64);
        over(held(Mode::Natgw), held(Mode::Nft))
    }
}

/// The text rows.
#[must_use]
pub fn text(s: &SetupResults) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let Some(plan) = s.plan else {
        return o;
    };
    let _ = writeln!(
        o,
        "Connection setup, RFC 9693 style (UDP; a fresh gateway per trial; validated by one \
         datagram back on every connection)"
    );
    let _ = writeln!(
        o,
        "  {:<44} {:>16} {:>16} {:>10}",
        "",
        Mode::Natgw.label(),
        Mode::Nft.label(),
        "natgw/nft"
    );
    let rate = |m: Mode| {
        s.rate(m).map_or_else(
            || "—".to_owned(),
            |r| {
                r.max_rate.map_or_else(
                    || "none passed".to_owned(),
                    |v| format!("{:.3} M/s", f64::from(v) / 1e6),
                )
            },
        )
    };
    let ratio = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}×"));
    let _ = writeln!(
        o,
        "  {:<44} {:>16} {:>16} {:>10}",
        format!(
            "max. connection establishment rate ({}k)",
            plan.connections / 1024
        ),
        rate(Mode::Natgw),
        rate(Mode::Nft),
        ratio(s.rate_ratio())
    );
    let held = |m: Mode| {
        s.capacity_of(m).map_or_else(
            || "—".to_owned(),
            |c| format!("{} of {}", c.held(), c.trial.connections),
        )
    };
    let _ = writeln!(
        o,
        "  {:<44} {:>16} {:>16} {:>10}",
        "table capacity: connections held + validated",
        held(Mode::Natgw),
        held(Mode::Nft),
        ratio(s.capacity_ratio())
    );
    for c in &s.capacity {
        let reached = if c.held() >= u64::from(c.trial.connections) {
            ": it held all it was offered, its limit was not reached (the ratio compares \
             natgw's configured table with what was offered, not two limits)"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "    {}: limit {} ({}); {} state entries after {} offered at {}/s{reached}",
            c.mode.label(),
            c.limit
                .map_or_else(|| "unknown".to_owned(), |l| l.to_string()),
            c.limit_source,
            c.trial.state_entries,
            c.trial.connections,
            c.trial.offered_rate
        );
    }
    let _ = writeln!(
        o,
        "  search: {} trials of {} connections per mode, offered 0–{} M/s; pass = all \
         forwarded at ≥ {:.0}% of the offered rate, all with state, all validated",
        plan.steps,
        plan.connections,
        f64::from(plan.max_rate) / 1e6,
        RATE_KEPT * 100.0
    );
    for (mode, why) in &s.unavailable {
        let _ = writeln!(o, "  {} could not run here: {why}", mode.label());
    }
    o
}

/// The `--json` form.
#[must_use]
pub fn json(s: &SetupResults) -> serde_json::Value {
    let unavailable: serde_json::Map<String, serde_json::Value> = s
        .unavailable
        .iter()
        .map(|(m, why)| (m.key().to_owned(), serde_json::json!(why)))
        .collect();
    serde_json::json!({
        "ratios": {
            "natgw/nft-masquerade": s.rate_ratio(),
            "natgw/nft-masquerade/capacity": s.capacity_ratio(),
        },
        "max_connection_rate_per_s": MODES
            .iter()
            .map(|&m| (m.key().to_owned(), serde_json::json!(s.rate(m).and_then(|r| r.max_rate))))
            .collect::<serde_json::Map<_, _>>(),
        "capacity_held": MODES
            .iter()
            .map(|&m| (m.key().to_owned(), serde_json::json!(s.capacity_of(m).map(Capacity::held))))
            .collect::<serde_json::Map<_, _>>(),
        "unavailable": unavailable,
        "plan": s.plan,
        "rates": s.rates,
        "capacity": s.capacity,
    })
}

/// The section of docs/benchmarks.md.
#[must_use]
pub fn markdown(s: &SetupResults, date: &str, command: &str) -> String {
    format!(
        "{HEADING}\n\nRun: {date}. Command:\n\n```sh\n{command}\n```\n\n```text\n{}```\n",
        text(s)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_search_finds_the_threshold_within_its_resolution() {
        let threshold = 300_000;
        let mut probes = Vec::new();
        let found = binary_search(2_000_000, 9, |r| {
            probes.push(r);
            Ok(r <= threshold)
        })
        .unwrap()
        .unwrap();
        assert_eq!(probes.len(), 9);
        assert_eq!(probes[0], 1_000_000);
        assert!(found <= threshold, "{found}");
        assert!(threshold - found <= 2_000_000 >> 9, "{found}");
    }

    #[test]
    fn binary_search_reports_none_when_nothing_passes() {
        assert_eq!(binary_search(1000, 5, |_| Ok(false)).unwrap(), None);
    }

    #[test]
    fn ratios_are_natgw_over_nft() {
        let trial = |validated| Trial {
            offered_rate: 1,
            connections: 10,
            forwarded: 10,
            achieved_rate: 1.0,
            with_state: 10,
            state_entries: 10,
            validated,
            pass: true,
        };
        let s = SetupResults {
            plan: Some(SetupPlan::new(true)),
            rates: vec![
                RateSearch {
                    mode: Mode::Natgw,
                    max_rate: Some(300_000),
                    trials: vec![],
                },
                RateSearch {
                    mode: Mode::Nft,
                    max_rate: Some(100_000),
                    trials: vec![],
                },
            ],
            capacity: vec![
                Capacity {
                    mode: Mode::Natgw,
                    limit: Some(8),
                    limit_source: "test",
                    trial: trial(8),
                },
                Capacity {
                    mode: Mode::Nft,
                    limit: Some(100),
                    limit_source: "test",
                    trial: trial(10),
                },
            ],
            unavailable: vec![],
        };
        assert!((s.rate_ratio().unwrap() - 3.0).abs() < 1e-9);
        assert!((s.capacity_ratio().unwrap() - 0.8).abs() < 1e-9);
        let j = json(&s);
        assert_eq!(j["max_connection_rate_per_s"]["natgw"], 300_000);
        assert_eq!(j["capacity_held"]["nft"], 10);
        assert!(text(&s).contains("3.00×"), "{}", text(&s));
    }
}
