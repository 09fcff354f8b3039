//! The bench's output: statistics over repetitions, the text table `cargo xtask bench`
//! prints, its `--json` form, and the Markdown page `--write-docs` writes.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::cost::{self, CostResults, CostRow, GcResult, MapMemory};
use super::cpu::Usage;
use super::throughput::{Mode, Plan, PpsSample, Results, SynSample, WAN_TO_LAN, WORKLOADS};
use super::turn::{self, TurnResult};
use super::upnp::{self, UpnpResult};

/// Median of sorted or unsorted values (0 for none).
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Median, minimum and maximum.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// Of `values`; `None` when empty.
    #[must_use]
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        Some(Spread {
            median: median(values),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: values.len(),
        })
    }

    /// `3.21 M [3.10–3.30]` in millions.
    fn millions(&self) -> String {
        format!(
            "{:.2} M [{:.2}–{:.2}]",
            self.median / 1e6,
            self.min / 1e6,
            self.max / 1e6
        )
    }
}

/// The machine and the command, for the report's head.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// CPUs online.
    pub cpus: usize,
    /// Memory in GiB.
    pub memory_gib: f64,
    /// `uname -r`.
    pub kernel: String,
    /// OS name.
    pub os: String,
    /// UTC date and time of the run.
    pub date: String,
    /// The command that produced the report.
    pub command: String,
    /// How busy the CPUs were in the second before the bench started, in percent.
    pub busy_before_pct: f64,
}

/// Everything a report holds.
pub struct Report<'a> {
    /// Machine and command.
    pub machine: &'a Machine,
    /// Repetitions and windows.
    pub plan: &'a Plan,
    /// Throughput and SYN bursts.
    pub throughput: &'a Results,
    /// Per-packet cost, scale and GC.
    pub cost: &'a CostResults,
    /// UPnP IGD control, when it ran.
    pub upnp: Option<&'a UpnpResult>,
    /// TURN relay throughput, when it ran.
    pub turn: Option<&'a TurnResult>,
    /// Connection setup rate and table capacity (RFC 9693), when it ran.
    pub setup: Option<&'a super::setup::SetupResults>,
}

fn pps_spread(r: &Results, mode: Mode, workload: &str) -> Option<Spread> {
    let v: Vec<f64> = r.pps_of(mode, workload).iter().map(|s| s.pps).collect();
    Spread::of(&v)
}

fn syn_rate_spread(r: &Results, mode: Mode) -> Option<Spread> {
    let v: Vec<f64> = r
        .syn_of(mode)
        .iter()
        .filter_map(|s| s.created_per_s())
        .collect();
    Spread::of(&v)
}

fn syn_pps_spread(r: &Results, mode: Mode) -> Option<Spread> {
    let v: Vec<f64> = r.syn_of(mode).iter().map(|s| s.pps()).collect();
    Spread::of(&v)
}

/// The sample nearest the median, for its CPU figures.
fn median_sample<'s, T>(samples: &[&'s T], value: impl Fn(&T) -> f64) -> Option<&'s T> {
    let values: Vec<f64> = samples.iter().map(|s| value(s)).collect();
    let m = median(&values);
    samples
        .iter()
        .copied()
        .min_by(|a, b| (value(a) - m).abs().total_cmp(&(value(b) - m).abs()))
}

fn ratio(a: Option<Spread>, b: Option<Spread>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => format!("{:.1}×", a.median / b.median),
        _ => "—".to_owned(),
    }
}

fn cell(s: Option<Spread>) -> String {
    s.map_or_else(|| "—".to_owned(), |s| s.millions())
}

pub fn cpu_cells(u: &Usage) -> String {
    let task = |name: &str| {
        u.task(name)
            .map_or_else(|| "—".to_owned(), |v| format!("{v:.0}"))
    };
    let cpus: Vec<String> = u
        .cpus
        .iter()
        .map(|c| format!("{:.0}/{:.0}/{:.0}", c.busy, c.softirq, c.steal))
        .collect();
    format!(
        "{:>5} {:>5} {:>5} {:>5} {:>6}   {}",
        task("generator"),
        task("gateway"),
        task("receiver"),
        task("natgw"),
        format!("{:.0}", u.others),
        cpus.join("  ")
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn memory_line(mem: &[MapMemory]) -> String {
    let total: u64 = mem.iter().map(|m| m.bytes).sum();
    let top: Vec<String> = mem
        .iter()
        .take(4)
        .map(|m| format!("{} {}", m.name, mib(m.bytes)))
        .collect();
    format!("{} in all ({})", mib(total), top.join(", "))
}

fn cost_line(out: &mut String, row: &CostRow, floor: Option<f64>) {
    let _ = match (row.median_ns, row.note) {
        (Some(ns), _) => {
            let times = floor.map_or_else(|| "—".to_owned(), |f| format!("{:.1}×", ns / f));
            let net = floor.map_or_else(|| "—".to_owned(), |f| format!("{:.0}", ns - f));
            let odd = if row.unexpected > 0 {
                format!(
                    "  ({} of {} calls not translated)",
                    row.unexpected, row.calls
                )
            } else {
                String::new()
            };
            writeln!(
                out,
                "  {:<40} {:>8.0} {:>8.0} {:>8} {:>8}{odd}",
                row.label,
                ns,
                row.mean_ns.unwrap_or(0.0),
                times,
                net
            )
        }
        (None, note) => writeln!(out, "  {:<40} {}", row.label, note.unwrap_or("—")),
    };
}

/// The program-only rows, the ladder and the per-packet targets.
fn amortised_text(o: &mut String, c: &CostResults) {
    if c.amortised_rows.is_empty() {
        return;
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Program only: xdp_replay writes the next endpoint's frame and tail-calls the program, \
         repeat={} per call (ns per packet, median of the calls)",
        cost::AMORTISED_REPEAT
    );
    let _ = writeln!(o, "  {:<40} {:>8} {:>8}", "case", "ns", "− floor");
    for row in c.amortised_rows.iter().chain(&c.amortised_scale_rows) {
        let mut odd = if row.unexpected > 0 {
            format!("  ({} repetitions not translated)", row.unexpected)
        } else {
            String::new()
        };
        if row.repeat != cost::AMORTISED_REPEAT {
            let _ = write!(
                odd,
                "  (repeat={}, {} runs, every repetition a fresh endpoint)",
                row.repeat, row.runs
            );
        }
        let _ = writeln!(
            o,
            "  {:<40} {:>8.0} {:>8}{odd}",
            row.label,
            row.ns,
            row.over_floor_ns
                .map_or_else(|| "—".to_owned(), |v| format!("{v:.0}"))
        );
    }
    if !c.ladder.is_empty() {
        let steps: Vec<String> = c
            .ladder
            .iter()
            .map(|l| {
                format!(
                    "{}: {:.0}−{:.0}={:.0}",
                    l.repeat,
                    l.existing_ns,
                    l.floor_ns,
                    l.existing_ns - l.floor_ns
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "  existing mapping − floor by repeat count (ns per packet): {}",
            steps.join(", ")
        );
    }
    for t in c.targets() {
        let line = match (t.measured, t.met) {
            (Some(m), Some(true)) if t.at_most < 10.0 => format!("measured {m:.2}×  PASS"),
            (Some(m), Some(false)) if t.at_most < 10.0 => format!(
                "measured {m:.2}×  MISS ({:.0}% over)",
                (m / t.at_most - 1.0) * 100.0
            ),
            (Some(m), Some(true)) => format!("measured {m:.0} ns  PASS"),
            (Some(m), _) => format!(
                "measured {m:.0} ns  MISS ({:.0} ns over, {:.1}× the target)",
                m - t.at_most,
                m / t.at_most
            ),
            _ => "not measured".to_owned(),
        };
        let _ = writeln!(o, "  target: {} {}: {line}", t.what, t.target);
    }
}

/// The per-packet cost, the program-only timing, its targets and the million
/// mappings, as text.
#[must_use]
pub fn cost_text(c: &CostResults) -> String {
    let mut out = String::new();
    let o = &mut out;
    let floor = c
        .rows
        .iter()
        .find(|r| r.key == "floor_xdp_pass")
        .and_then(|r| r.median_ns);
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Per-packet cost, BPF_PROG_TEST_RUN on the programs natgw attached (one call per \
         packet; ns as the kernel times one run)"
    );
    let _ = writeln!(
        o,
        "  {:<40} {:>8} {:>8} {:>8} {:>8}",
        "case", "median", "mean", "× floor", "− floor"
    );
    for row in c.rows.iter().chain(&c.scale_rows) {
        cost_line(o, row, floor);
    }
    if let (Some(f), Some(a)) = (floor, c.floor_amortised_ns) {
        let _ = writeln!(
            o,
            "  (of the floor's {f:.0} ns, the program itself is {a:.0} ns — xdp_pass at \
             repeat=1,000,000; the rest is the test harness around one run)"
        );
    }
    amortised_text(o, c);

    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "A million mappings (natgw --max-mappings {})",
        c.capacity
    );
    if !c.memory_full.is_empty() {
        let _ = writeln!(o, "  map memory, full:  {}", memory_line(&c.memory_full));
        let _ = writeln!(o, "  map memory, empty: {}", memory_line(&c.memory_empty));
    }
    if let Some(m) = &c.nat_memory {
        o.push_str(&super::memory::text(m));
    }
    if let Some(s) = c.fill_seconds {
        let n = c.scale_mappings;
        let _ = writeln!(
            o,
            "  filled {n} mappings through the pinned maps in {s:.2} s"
        );
    }
    for (empty, full) in [
        ("existing_mapping", "existing_mapping_1m"),
        ("new_mapping", "new_mapping_1m"),
    ] {
        let get = |k: &str| {
            c.rows
                .iter()
                .chain(&c.scale_rows)
                .find(|r| r.key == k)
                .and_then(|r| r.median_ns)
        };
        if let (Some(e), Some(f)) = (get(empty), get(full)) {
            let _ = writeln!(
                o,
                "  {:<18} {e:.0} ns empty → {f:.0} ns at 1M ({:.2}×)",
                empty.replace('_', " "),
                f / e
            );
        }
    }
    if let Some(g) = &c.gc {
        let _ = writeln!(o, "{}", gc_line(g));
        if !c.gc_designs.is_empty() {
            let _ = write!(o, "{}", super::gc_designs::table(&c.gc_designs, g.mappings));
        }
    }
    out
}

impl Report<'_> {
    /// The text table: the ratios first, then the packet rates, the per-packet cost,
    /// the million mappings and the UPnP and TURN parts.
    #[must_use]
    pub fn text(&self) -> String {
        let mut o = packets_text(self.machine, self.plan, self.throughput);
        if let Some(s) = self.setup {
            let _ = writeln!(o);
            o.push_str(&super::setup::text(s));
        }
        self.cost_text(&mut o);
        if let Some(u) = self.upnp {
            let _ = writeln!(o);
            o.push_str(&upnp::text(u));
        }
        if let Some(t) = self.turn {
            let _ = writeln!(o);
            o.push_str(&turn::text(t));
        }
        o
    }

    fn cost_text(&self, o: &mut String) {
        o.push_str(&cost_text(self.cost));
    }

    /// The `--json` form.
    #[must_use]
    pub fn json(&self) -> Value {
        let mut out = packets_json(self.machine, self.plan, self.throughput);
        if let Value::Object(map) = &mut out {
            map.insert("cost".to_owned(), json!(self.cost));
            map.insert("cost_targets".to_owned(), json!(self.cost.targets()));
            map.insert("upnp".to_owned(), json!(self.upnp));
            map.insert("turn".to_owned(), json!(self.turn));
            if let Some(s) = self.setup {
                map.insert("connection_setup".to_owned(), super::setup::json(s));
            }
        }
        out
    }

    /// docs/benchmarks.md updated with this run: `doc`'s head (everything before its
    /// first `## ` section) becomes this run's, its "How it measures" section becomes
    /// [`super::METHOD`] and its UPnP and TURN sections this run's; every other section
    /// (the observations, the A/B records, the sections of single parts) is kept as
    /// it is. A `doc` without sections gets the whole of [`Self::markdown`].
    #[must_use]
    pub fn update_docs(&self, doc: &str) -> String {
        let fresh = self.markdown();
        let (Some(old_at), Some(new_at)) = (doc.find("\n## "), fresh.find("\n## ")) else {
            return fresh;
        };
        let mut out = format!("{}{}", &fresh[..=new_at], &doc[old_at + 1..]);
        let method_heading = super::METHOD.lines().next().unwrap_or_default();
        out = replace_section(&out, method_heading, super::METHOD);
        if let Some(u) = self.upnp {
            let section = upnp::markdown(
                std::slice::from_ref(u),
                &self.machine.date,
                &self.machine.command,
            );
            out = replace_section(&out, upnp::HEADING, &section);
        }
        if let Some(t) = self.turn {
            out = replace_section(&out, turn::HEADING, &turn::markdown(t, self.machine));
        }
        out
    }

    /// docs/benchmarks.md.
    #[must_use]
    pub fn markdown(&self) -> String {
        let m = self.machine;
        format!(
            "# Benchmarks\n\n\
             The latest run of `cargo xtask bench`; regenerate this page with\n\
             `{cmd} --write-docs`. How it measures is described in\n\
             `xtask/src/bench.rs` and below the table.\n\n\
             Machine: {cpus} × {cpu}, {mem:.0} GiB, Linux {kernel} ({os}), a shared virtual \
             machine (its steal time is in the CPU table). Run: {date}. Command:\n\n\
             ```sh\n{cmd}\n```\n\n\
             ```text\n{text}```\n\n{notes}\n{method}{upnp}{turn}",
            cmd = m.command,
            cpus = m.cpus,
            cpu = m.cpu,
            mem = m.memory_gib,
            kernel = m.kernel,
            os = m.os,
            date = m.date,
            text = self.text(),
            notes = super::NOTES,
            method = super::METHOD,
            upnp = self.upnp.map_or_else(String::new, |u| format!(
                "\n{}",
                upnp::markdown(std::slice::from_ref(u), &m.date, &m.command)
            )),
            turn = self
                .turn
                .map_or_else(String::new, |t| format!("\n{}", turn::markdown(t, m))),
        )
    }
}

/// The ratios (first), the machine and the packet-rate part: both tables, the CPU
/// table and the profiles.
#[must_use]
pub fn packets_text(m: &Machine, p: &Plan, r: &Results) -> String {
    let mut o = ratios_text(r);
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "natgw benchmark, {}: {} × {}, {:.0} GiB, Linux {} ({})",
        m.date, m.cpus, m.cpu, m.memory_gib, m.kernel, m.os
    );
    let _ = writeln!(
        o,
        "command: {}   (CPUs {:.0}% busy before the start)",
        m.command, m.busy_before_pct
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Forwarded packets per second, 64-byte frames, generator → gateway → receiver \
             (LAN → WAN);\nmedian [min–max] of {} interleaved runs of {:.1} s each \
             (after {:.1} s of warm-up)",
        p.reps,
        p.window.as_secs_f64(),
        p.warmup.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "  {:<22} {:<23} {:<23} {:<23} {:>9} {:>11}",
        "workload",
        Mode::Natgw.label(),
        Mode::Nft.label(),
        Mode::Plain.label(),
        "natgw/nft",
        "natgw/plain"
    );
    for w in WORKLOADS {
        let [a, b, c] = Mode::COMPARED.map(|mode| pps_spread(r, mode, w.key));
        let _ = writeln!(
            o,
            "  {:<22} {:<23} {:<23} {:<23} {:>9} {:>11}",
            w.label,
            cell(a),
            cell(b),
            cell(c),
            ratio(a, b),
            ratio(a, c)
        );
    }
    let [a, b, _] = Mode::COMPARED.map(|mode| syn_rate_spread(r, mode));
    let _ = writeln!(
        o,
        "  {:<22} {:<23} {:<23} {:<23} {:>9} {:>11}",
        "TCP SYNs: new map./s",
        cell(a),
        cell(b),
        "(no NAT state)",
        ratio(a, b),
        "—"
    );
    let [a, b, c] = Mode::COMPARED.map(|mode| syn_pps_spread(r, mode));
    let _ = writeln!(
        o,
        "  {:<22} {:<23} {:<23} {:<23} {:>9} {:>11}",
        "TCP SYNs: forwarded/s",
        cell(a),
        cell(b),
        cell(c),
        ratio(a, b),
        ratio(a, c)
    );
    let counters: Vec<_> = r
        .pps
        .iter()
        .filter_map(|(m, _, s)| (*m == Mode::Natgw).then_some(s.natgw).flatten())
        .collect();
    if !counters.is_empty() {
        let xdp: u64 = counters.iter().map(|c| c.xdp_out_redirected).sum();
        let tc: u64 = counters.iter().map(|c| c.tc_out_translated).sum();
        let drops: u64 = counters.iter().map(|c| c.drops).sum();
        let _ = writeln!(
            o,
            "  natgw's counters over its UDP windows: {:.2}% of translated packets took the \
                 XDP fast path ({xdp} XDP, {tc} TC), {drops} dropped",
            if xdp + tc > 0 {
                xdp as f64 * 100.0 / (xdp + tc) as f64
            } else {
                0.0
            }
        );
    }
    let _ = writeln!(
        o,
        "  generator ceiling (the gateway's LAN veth counts and drops in XDP): {} pps",
        cell(pps_spread(r, Mode::Ceiling, WORKLOADS[0].key))
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "The strongest peers, same runs: nftables masquerade with a flowtable (every flow \
         established by replies first), and a bare XDP forwarder (FIB lookup, MAC rewrite, \
         redirect; no NAT)"
    );
    let _ = writeln!(
        o,
        "  {:<22} {:<23} {:<23} {:>15} {:>13}",
        "workload",
        Mode::NftFlowtable.label(),
        Mode::XdpForward.label(),
        "natgw/flowtable",
        "natgw/xdp-fwd"
    );
    for w in WORKLOADS {
        let n = pps_spread(r, Mode::Natgw, w.key);
        let [f, x] = Mode::PEERS.map(|mode| pps_spread(r, mode, w.key));
        let _ = writeln!(
            o,
            "  {:<22} {:<23} {:<23} {:>15} {:>13}",
            w.label,
            cell(f),
            cell(x),
            ratio(n, f),
            ratio(n, x)
        );
    }
    for (mode, why) in &r.unavailable {
        let _ = writeln!(o, "  {} could not run here: {why}", mode.label());
    }
    let checks: Vec<_> = r.pps.iter().filter_map(|(_, _, s)| s.flowtable).collect();
    if !checks.is_empty() {
        let slow: u64 = checks.iter().map(|c| c.slow_path_packets).sum();
        let fwd: u64 = checks.iter().map(|c| c.forwarded).sum();
        let _ = writeln!(
            o,
            "  flowtable offload over its {} UDP windows: every flow offloaded ([OFFLOAD] in \
             conntrack -L), {slow} of {fwd} forwarded packets ({:.3}%) through the forward chain",
            checks.len(),
            if fwd > 0 {
                slow as f64 * 100.0 / fwd as f64
            } else {
                0.0
            }
        );
    }
    let _ = writeln!(
        o,
        "  UDP flows: 1, 1,000 and 100,000 distinct 5-tuples from at most {} internal \
             endpoints (natgw: one mapping per endpoint; conntrack: one entry per flow);\n  \
             SYN burst: {} SYNs, each from a new internal endpoint, paced to ≤ 192 in flight, \
             timed first to last arrival{}",
        super::throughput::MAX_ENDPOINTS,
        p.syn_burst,
        r.conntrack_max
            .map_or_else(String::new, |m| format!("; nf_conntrack_max {m}"))
    );

    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "CPU during the median run, % of one CPU: threads (generator, gateway NAPI, \
             receiver NAPI, natgw process), everything else (other), and per CPU \
             busy/softirq/steal"
    );
    let _ = writeln!(
        o,
        "  {:<22} {:<18} {:>5} {:>5} {:>5} {:>5} {:>6}   cpu0        cpu1",
        "workload", "gateway", "gen", "gw", "rcv", "natgw", "other"
    );
    for w in WORKLOADS {
        for mode in Mode::ALL {
            let samples = r.pps_of(mode, w.key);
            if let Some(s) = median_sample(&samples, |s: &PpsSample| s.pps) {
                let _ = writeln!(
                    o,
                    "  {:<22} {:<18} {}",
                    w.label,
                    mode.label(),
                    cpu_cells(&s.cpu)
                );
            }
        }
    }
    for mode in Mode::COMPARED {
        let samples = r.syn_of(mode);
        if let Some(s) = median_sample(&samples, SynSample::pps) {
            let _ = writeln!(
                o,
                "  {:<22} {:<18} {}",
                "TCP SYN burst",
                mode.label(),
                cpu_cells(&s.cpu)
            );
        }
    }

    wan_to_lan_text(&mut o, r);
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Where the gateway's NAPI thread spends its time (perf, cpu-clock, UDP 1 flow, \
             first repetition; symbols ≥ 1%)"
    );
    if let Some(note) = &r.profile_note {
        let _ = writeln!(o, "  {note}");
    }
    for (mode, entries) in &r.profiles {
        let _ = writeln!(o, "  {}:", mode.label());
        for e in entries.iter().take(14) {
            let _ = writeln!(o, "    {:>5.1}%  {}", e.percent, e.symbol);
        }
    }
    o
}

/// The modes of the WAN → LAN table, in column order.
const WAN_TO_LAN_MODES: [Mode; 5] = [
    Mode::Natgw,
    Mode::Nft,
    Mode::NftFlowtable,
    Mode::Plain,
    Mode::XdpForward,
];

/// The WAN → LAN table, then natgw's ratios to every peer in both directions.
fn wan_to_lan_text(o: &mut String, r: &Results) {
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "WAN → LAN, same runs: the generator on the WAN side sends the same flows back to the \
         external endpoints the LAN → WAN\ntraffic set up (natgw's mappings, conntrack's \
         entries); without NAT straight to the internal addresses"
    );
    let _ = writeln!(
        o,
        "  {:<26} {:<23} {:<23} {:<23} {:<23} {:<23}",
        "workload",
        Mode::Natgw.label(),
        Mode::Nft.label(),
        Mode::NftFlowtable.label(),
        Mode::Plain.label(),
        Mode::XdpForward.label()
    );
    for w in WAN_TO_LAN {
        let c = WAN_TO_LAN_MODES.map(|mode| cell(pps_spread(r, mode, w.key)));
        let _ = writeln!(
            o,
            "  {:<26} {:<23} {:<23} {:<23} {:<23} {:<23}",
            w.label, c[0], c[1], c[2], c[3], c[4]
        );
    }
    let _ = writeln!(
        o,
        "  natgw/peer, LAN→WAN | WAN→LAN  {:>17} {:>17} {:>17} {:>17}",
        "nft-masquerade", "nft-flowtable", "plain", "xdp-forward"
    );
    for (fw, rv) in WORKLOADS.iter().zip(WAN_TO_LAN.iter()) {
        let cells = [Mode::Nft, Mode::NftFlowtable, Mode::Plain, Mode::XdpForward].map(|peer| {
            let one = |w: &str| {
                natgw_over(r, peer, w).map_or_else(|| "—".to_owned(), |v| format!("{v:.2}×"))
            };
            format!("{} | {}", one(fw.key), one(rv.key))
        });
        let _ = writeln!(
            o,
            "  {:<32} {:>17} {:>17} {:>17} {:>17}",
            fw.label, cells[0], cells[1], cells[2], cells[3]
        );
    }
    let inbound: Vec<_> = r
        .pps
        .iter()
        .filter(|(m, _, _)| *m == Mode::Natgw)
        .filter_map(|(_, _, s)| s.inbound)
        .collect();
    if !inbound.is_empty() {
        let received: u64 = inbound.iter().map(|c| c.received).sum();
        let translated: u64 = inbound.iter().filter_map(|c| c.translated).sum();
        let xdp: u64 = r
            .pps
            .iter()
            .filter(|(m, _, s)| *m == Mode::Natgw && s.inbound.is_some())
            .filter_map(|(_, _, s)| s.natgw)
            .map(|c| c.xdp_in_redirected)
            .sum();
        let _ = writeln!(
            o,
            "  natgw's counters over its WAN→LAN windows: {translated} inbound packets \
             translated ({xdp} by XDP) for {received} frames at the LAN (the counters \
             are read around each window and span more time than the receiver's count)"
        );
    }
    let nft: Vec<_> = r
        .pps
        .iter()
        .filter(|(m, _, _)| *m == Mode::Nft)
        .filter_map(|(_, w, s)| s.inbound.map(|c| (*w, c)))
        .collect();
    if let Some((_, c)) = nft.iter().max_by_key(|(_, c)| c.flows) {
        let _ = writeln!(
            o,
            "  nft's WAN→LAN flows were read from conntrack: {} entries for {} flows \
             ({} external endpoints) in its largest workload",
            c.state_entries.unwrap_or(0),
            c.flows,
            c.external_endpoints
        );
    }
    let _ = writeln!(
        o,
        "  generator ceiling WAN→LAN (the gateway's WAN veth counts and drops in XDP): {} pps",
        cell(pps_spread(r, Mode::Ceiling, WAN_TO_LAN[0].key))
    );
}

/// The suffix of the WAN → LAN keys in `ratios`.
pub const WAN_TO_LAN_SUFFIX: &str = "/wan-to-lan";
/// The workload the WAN → LAN ratios are taken from: the ratio workload answered.
pub const RATIO_WORKLOAD_WAN_TO_LAN: &str = "udp_1k_flows_wan_to_lan";

/// The [`RATIOS`] WAN → LAN, keys with [`WAN_TO_LAN_SUFFIX`].
#[must_use]
pub fn ratios_wan_to_lan(r: &Results) -> Vec<(String, Option<f64>)> {
    RATIOS
        .iter()
        .map(|&(key, peer)| {
            (
                format!("{key}{WAN_TO_LAN_SUFFIX}"),
                natgw_over(r, peer, RATIO_WORKLOAD_WAN_TO_LAN),
            )
        })
        .collect()
}

/// `wan_to_lan` of the `--json` form: per workload (by its LAN → WAN key), every mode's
/// spread WAN → LAN and natgw's ratios to each peer in both directions.
fn wan_to_lan_json(r: &Results) -> Value {
    let mut out = serde_json::Map::new();
    for (fw, rv) in WORKLOADS.iter().zip(WAN_TO_LAN.iter()) {
        let mut row = serde_json::Map::new();
        row.insert("workload".to_owned(), json!(rv.key));
        for mode in Mode::ALL {
            if let Some(s) = pps_spread(r, mode, rv.key) {
                row.insert(mode.key().to_owned(), json!(s));
            }
        }
        for (suffix, w) in [("lan_to_wan", fw.key), ("wan_to_lan", rv.key)] {
            let ratios: serde_json::Map<String, Value> = RATIOS
                .iter()
                .map(|&(key, peer)| (key.to_owned(), json!(natgw_over(r, peer, w))))
                .collect();
            row.insert(format!("ratios_{suffix}"), Value::Object(ratios));
        }
        out.insert(fw.key.to_owned(), Value::Object(row));
    }
    Value::Object(out)
}

/// `pps` of the `--json` form: per workload, every mode's spread and the old ratios.
fn pps_json(r: &Results) -> Value {
    let mut pps = serde_json::Map::new();
    // The bench's workloads, then any other the results hold.
    let mut keys: Vec<&str> = WORKLOADS
        .iter()
        .chain(WAN_TO_LAN.iter())
        .map(|w| w.key)
        .collect();
    for (key, _) in super::charts::workloads_of(r) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for key in keys {
        let mut modes = serde_json::Map::new();
        for mode in Mode::ALL {
            if let Some(s) = pps_spread(r, mode, key) {
                modes.insert(mode.key().to_owned(), json!(s));
            }
        }
        modes.insert(
            "ratio_natgw_nft".to_owned(),
            json!(ratio_value(
                pps_spread(r, Mode::Natgw, key),
                pps_spread(r, Mode::Nft, key)
            )),
        );
        modes.insert(
            "ratio_natgw_plain".to_owned(),
            json!(ratio_value(
                pps_spread(r, Mode::Natgw, key),
                pps_spread(r, Mode::Plain, key)
            )),
        );
        pps.insert(key.to_owned(), Value::Object(modes));
    }
    Value::Object(pps)
}

/// The per-packet cost part alone (`--cost-only`): the machine, then the cost
/// cases and the million mappings as the full report prints them.
#[must_use]
pub fn cost_only_text(m: &Machine, c: &CostResults) -> String {
    let plan = Plan {
        reps: 0,
        warmup: std::time::Duration::ZERO,
        window: std::time::Duration::ZERO,
        syn_burst: 0,
    };
    let throughput = Results::default();
    let report = Report {
        machine: m,
        plan: &plan,
        throughput: &throughput,
        cost: c,
        upnp: None,
        turn: None,
        setup: None,
    };
    let mut o = format!(
        "natgw benchmark, {}: {} × {}, {:.0} GiB, Linux {} ({})\ncommand: {}   (CPUs {:.0}% \
         busy before the start)\n",
        m.date, m.cpus, m.cpu, m.memory_gib, m.kernel, m.os, m.command, m.busy_before_pct
    );
    report.cost_text(&mut o);
    o
}

/// The `--json` form of the packet-rate part (`--packets-only`, and the head of the
/// full bench's): `ratios` first, then what they are taken from, the targets, the
/// machine, the plan, every mode's spread per workload, the SYN bursts and every
/// sample.
#[must_use]
pub fn packets_json(m: &Machine, p: &Plan, r: &Results) -> Value {
    let syn: serde_json::Map<String, Value> = Mode::COMPARED
        .iter()
        .map(|&mode| {
            (
                mode.key().to_owned(),
                json!({
                    "created_per_s": syn_rate_spread(r, mode),
                    "forwarded_pps": syn_pps_spread(r, mode),
                }),
            )
        })
        .collect();
    let unavailable: serde_json::Map<String, Value> = r
        .unavailable
        .iter()
        .map(|(mode, why)| (mode.key().to_owned(), json!(why)))
        .collect();
    json!({
        "ratios": ratios_json(r),
        "ratio_basis": ratio_basis_json(),
        "targets": targets_json(r),
        "unavailable": unavailable,
        "machine": m,
        "plan": {
            "reps": p.reps,
            "warmup_s": p.warmup.as_secs_f64(),
            "window_s": p.window.as_secs_f64(),
            "syn_burst": p.syn_burst,
        },
        "pps": pps_json(r),
        "workloads": super::charts::workloads_of(r)
            .into_iter()
            .map(|(key, label)| json!({ "key": key, "label": label }))
            .collect::<Vec<_>>(),
        "modes": Mode::ALL
            .iter()
            .map(|m| json!({ "key": m.key(), "label": m.label() }))
            .collect::<Vec<_>>(),
        "wan_to_lan": wan_to_lan_json(r),
        "syn_flood": syn,
        "conntrack_max": r.conntrack_max,
        "samples": r,
    })
}

/// The heading of the packet-rate section `--packets-only --write-docs` replaces.
pub const PACKETS_HEADING: &str = "## Packet rate against the strongest peers (issue #18)";

/// The packet-rate section of docs/benchmarks.md.
#[must_use]
pub fn packets_markdown(m: &Machine, p: &Plan, r: &Results) -> String {
    format!(
        "{PACKETS_HEADING}\n\n\
         Run: {date}. Command:\n\n\
         ```sh\n{cmd}\n```\n\n\
         ```text\n{text}```\n\n\
         The modes: *natgw (XDP)* is natgw's `xdp_lan` translating and redirecting; *nft\n\
         masquerade* is conntrack and `masquerade` on the kernel's forwarding path; *nft\n\
         flowtable* adds a flowtable (`flow add @ft` in the forward chain), the kernel's\n\
         software fast path, with every flow established by replies from the receiver before\n\
         its window and offload verified after it; *plain forwarding* is the kernel's\n\
         forwarding without NAT; the *XDP forwarder* (`xdp_fwd`) does the FIB lookup, the TTL\n\
         decrement, the MAC rewrite and the redirect and nothing else: no NAT, no state, the\n\
         ceiling for natgw on these veths. How the bench measures is described under \"How it\n\
         measures\" above.\n",
        date = m.date,
        cmd = m.command,
        text = packets_text(m, p, r),
    )
}

/// The workload the ratios are taken from: 64-byte UDP, 1k flows, LAN → WAN.
pub const RATIO_WORKLOAD: &str = "udp_1k_flows";

/// The `ratios` keys and the peer natgw's median is divided by.
pub const RATIOS: [(&str, Mode); 4] = [
    ("natgw/nft-masquerade", Mode::Nft),
    ("natgw/nft-flowtable", Mode::NftFlowtable),
    ("natgw/xdp-forward", Mode::XdpForward),
    ("natgw/plain", Mode::Plain),
];

/// A target of issue #18 on a packet-rate ratio (natgw's median over a peer's).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// What is compared.
    pub what: &'static str,
    /// The peer.
    pub peer: Mode,
    /// The workload key.
    pub workload: &'static str,
    /// The least ratio that meets the target.
    pub at_least: f64,
}

/// Issue #18's targets on packet-rate ratios.
pub const TARGETS: [Target; 4] = [
    Target {
        what: "natgw vs the bare XDP forwarder, UDP 1k flows",
        peer: Mode::XdpForward,
        workload: "udp_1k_flows",
        at_least: 0.8,
    },
    Target {
        what: "natgw vs nftables flowtable, UDP 1k flows",
        peer: Mode::NftFlowtable,
        workload: "udp_1k_flows",
        at_least: 2.0,
    },
    Target {
        what: "natgw vs nftables masquerade, UDP 1k flows",
        peer: Mode::Nft,
        workload: "udp_1k_flows",
        at_least: 5.0,
    },
    Target {
        what: "natgw vs nftables masquerade, UDP 100k flows",
        peer: Mode::Nft,
        workload: "udp_100k_flows",
        at_least: 5.0,
    },
];

/// Issue #18's target on new mappings: natgw's TCP SYN burst, mappings created per
/// second (median of the bursts), on the one core the gateway's NAPI runs on.
pub const NEW_MAPPINGS_TARGET: f64 = 1_000_000.0;
/// What [`NEW_MAPPINGS_TARGET`] measures.
pub const NEW_MAPPINGS_WHAT: &str = "natgw new mappings, TCP SYN burst (one core)";

/// natgw's SYN burst in figures for its target: mappings created per second, the
/// gateway thread's CPU in the median burst, and the rate plain forwarding (the
/// same veths and generator, no NAT) forwarded the same burst at.
struct NewMappings {
    measured: Option<f64>,
    gateway_cpu_pct: Option<f64>,
    plain_forwarded_per_s: Option<f64>,
}

fn new_mappings(r: &Results) -> NewMappings {
    let samples = r.syn_of(Mode::Natgw);
    let with_rate: Vec<&SynSample> = samples
        .iter()
        .copied()
        .filter(|s| s.created_per_s().is_some())
        .collect();
    NewMappings {
        measured: syn_rate_spread(r, Mode::Natgw).map(|s| s.median),
        gateway_cpu_pct: median_sample(&with_rate, |s: &SynSample| {
            s.created_per_s().unwrap_or(0.0)
        })
        .and_then(|s| s.cpu.task("gateway")),
        plain_forwarded_per_s: syn_pps_spread(r, Mode::Plain).map(|s| s.median),
    }
}

/// The new-mapping target's line of the text output.
fn new_mappings_target_text(r: &Results) -> String {
    let n = new_mappings(r);
    let context = || {
        let mut parts = Vec::new();
        if let Some(b) = n.gateway_cpu_pct {
            parts.push(format!("natgw's gateway thread at {b:.0}%"));
        }
        if let Some(p) = n.plain_forwarded_per_s {
            parts.push(format!(
                "plain forwarding passed the same burst at {:.2} M/s",
                p / 1e6
            ));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("; {}", parts.join(", "))
        }
    };
    let line = match n.measured {
        Some(m) if m >= NEW_MAPPINGS_TARGET => format!("measured {:.2} M/s  PASS", m / 1e6),
        Some(m) => format!(
            "measured {:.2} M/s  MISS ({:.0}% short{})",
            m / 1e6,
            (1.0 - m / NEW_MAPPINGS_TARGET) * 100.0,
            context()
        ),
        None => match r.unavailable(Mode::Natgw) {
            Some(why) => format!("not measured (natgw could not run: {why})"),
            None => "not measured".to_owned(),
        },
    };
    format!(
        "  target: {NEW_MAPPINGS_WHAT} >= {:.2} M/s: {line}",
        NEW_MAPPINGS_TARGET / 1e6
    )
}

/// The new-mapping target's entry of the JSON `targets`.
fn new_mappings_target_json(r: &Results) -> Value {
    let n = new_mappings(r);
    json!({
        "what": NEW_MAPPINGS_WHAT,
        "quantity": "natgw's mappings created per second in the TCP SYN burst (median)",
        "workload": "tcp_syn_burst",
        "at_least": NEW_MAPPINGS_TARGET,
        "measured": n.measured,
        "met": n.measured.map(|m| m >= NEW_MAPPINGS_TARGET),
        "not_measured_because": r.unavailable(Mode::Natgw),
        "gateway_cpu_pct": n.gateway_cpu_pct,
        "plain_forwarding_syn_per_s": n.plain_forwarded_per_s,
    })
}

/// natgw's median packets per second over `peer`'s in `workload`, if both ran.
#[must_use]
pub fn natgw_over(r: &Results, peer: Mode, workload: &str) -> Option<f64> {
    ratio_value(
        pps_spread(r, Mode::Natgw, workload),
        pps_spread(r, peer, workload),
    )
}

/// Below this share of one CPU, the peer's gateway thread was not the limit of its
/// run (it waited for frames): the peer's rate is then a floor of what it can do, and
/// natgw's ratio to it a ceiling.
pub const SATURATED_PCT: f64 = 90.0;

/// The gateway thread's CPU (% of one CPU) in `mode`'s median run of `workload`.
#[must_use]
pub fn gateway_busy(r: &Results, mode: Mode, workload: &str) -> Option<f64> {
    let samples = r.pps_of(mode, workload);
    median_sample(&samples, |s: &PpsSample| s.pps)?
        .cpu
        .task("gateway")
}

/// The [`RATIOS`] with their values (`None`: a mode did not run).
#[must_use]
pub fn ratios(r: &Results) -> Vec<(&'static str, Option<f64>)> {
    RATIOS
        .iter()
        .map(|&(key, peer)| (key, natgw_over(r, peer, RATIO_WORKLOAD)))
        .collect()
}

/// `ratios` of the `--json` form: every key, `null` where a mode did not run.
#[must_use]
pub fn ratios_json(r: &Results) -> Value {
    Value::Object(
        ratios(r)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(ratios_wan_to_lan(r))
            .map(|(k, v)| (k, json!(v)))
            .collect(),
    )
}

/// What the ratios are taken from, for the `--json` form.
#[must_use]
pub fn ratio_basis_json() -> Value {
    json!({
        "workload": RATIO_WORKLOAD,
        "frame_bytes": 64,
        "protocol": "udp",
        "flows": 1000,
        "direction": "lan_to_wan",
        "wan_to_lan_keys": format!(
            "the same ratios with the suffix {WAN_TO_LAN_SUFFIX}: {RATIO_WORKLOAD_WAN_TO_LAN}, \
             the 1k flows answered from the WAN side"
        ),
        "statistic": "median",
        "quantity": "forwarded packets per second, natgw over the peer",
    })
}

/// `targets` of the `--json` form.
#[must_use]
pub fn targets_json(r: &Results) -> Value {
    Value::Array(
        TARGETS
            .iter()
            .map(|t| {
                let measured = natgw_over(r, t.peer, t.workload);
                json!({
                    "what": t.what,
                    "ratio": format!("natgw/{}", ratio_peer_name(t.peer)),
                    "workload": t.workload,
                    "at_least": t.at_least,
                    "measured": measured,
                    "met": measured.map(|m| m >= t.at_least),
                    "not_measured_because": r.unavailable(t.peer),
                    "peer_gateway_cpu_pct": gateway_busy(r, t.peer, t.workload),
                    "peer_saturated": gateway_busy(r, t.peer, t.workload)
                        .map(|b| b >= SATURATED_PCT),
                })
            })
            .chain([new_mappings_target_json(r)])
            .collect(),
    )
}

/// The peer's name in the ratio keys.
fn ratio_peer_name(mode: Mode) -> &'static str {
    RATIOS
        .iter()
        .find(|(_, m)| *m == mode)
        .map_or(mode.key(), |(k, _)| &k[k.find('/').map_or(0, |i| i + 1)..])
}

/// The first lines of the text output: the ratios, then measured against target.
#[must_use]
pub fn ratios_text(r: &Results) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Ratios: natgw's median packets/s over the peer's (64-byte UDP, 1k flows, LAN → WAN)"
    );
    for ((key, value), (_, peer)) in ratios(r).into_iter().zip(RATIOS) {
        let missing = || match r.unavailable(peer) {
            Some(why) => format!("— ({} could not run: {why})", peer.label()),
            None => "— (not run)".to_owned(),
        };
        let busy = gateway_busy(r, peer, RATIO_WORKLOAD)
            .filter(|&b| value.is_some() && b < SATURATED_PCT)
            .map_or_else(String::new, |b| {
                format!(
                    "  (the {}'s gateway thread was at {b:.0}%, not the limit: the \
                     generator's side was; the ratio is an upper bound)",
                    peer.label()
                )
            });
        let _ = writeln!(
            o,
            "  {key:<22} {}{busy}",
            value.map_or_else(missing, |v| format!("{v:.2}×"))
        );
    }
    let wan: Vec<String> = ratios_wan_to_lan(r)
        .into_iter()
        .filter_map(|(k, v)| Some(format!("{} {:.2}×", k.strip_suffix(WAN_TO_LAN_SUFFIX)?, v?)))
        .collect();
    if !wan.is_empty() {
        let _ = writeln!(o, "  WAN → LAN (the 1k flows answered): {}", wan.join(", "));
    }
    for t in TARGETS {
        let line = match natgw_over(r, t.peer, t.workload) {
            Some(m) if m >= t.at_least => format!("measured {m:.2}×  PASS"),
            Some(m) => format!(
                "measured {m:.2}×  MISS ({:.0}% short)",
                (1.0 - m / t.at_least) * 100.0
            ),
            None if r.unavailable(t.peer).is_some() => {
                format!("not measured ({} could not run here)", t.peer.label())
            }
            None => "not measured".to_owned(),
        };
        let _ = writeln!(o, "  target: {} >= {:.1}×: {line}", t.what, t.at_least);
    }
    let _ = writeln!(o, "{}", new_mappings_target_text(r));
    o
}

/// `doc` with its section `heading` (from that line to the next `## ` heading)
/// replaced by `section`, or `section` appended if it has none.
#[must_use]
pub fn replace_section(doc: &str, heading: &str, section: &str) -> String {
    let Some(start) = doc.find(&format!("\n{heading}\n")).map(|i| i + 1) else {
        return format!("{}\n\n{section}", doc.trim_end());
    };
    let rest = &doc[start + heading.len()..];
    let tail = rest.find("\n## ").map_or("", |i| &rest[i + 1..]);
    let mut out = format!("{}{section}", &doc[..start]);
    if !tail.is_empty() {
        out.push('\n');
        out.push_str(tail);
    }
    out
}

fn ratio_value(a: Option<Spread>, b: Option<Spread>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => Some(a.median / b.median),
        _ => None,
    }
}

/// The garbage-collection result as the text report shows it: what was measured,
/// then the two targets of issue #18 measured against target.
#[must_use]
pub fn gc_line(g: &GcResult) -> String {
    use super::cost::{GC_EXPIRE_TARGET_S, GC_LIVE_CPU_TARGET_PCT};
    let expire = match g.expire_seconds {
        Some(s) if s <= GC_EXPIRE_TARGET_S => format!("measured {s:.1} s  PASS"),
        Some(s) => format!(
            "measured {s:.1} s  MISS ({:.1} s over)",
            s - GC_EXPIRE_TARGET_S
        ),
        None => "not within the bench's limit  MISS".to_owned(),
    };
    let cpu = if g.live_cpu_pct <= GC_LIVE_CPU_TARGET_PCT {
        format!("measured {:.1}%  PASS", g.live_cpu_pct)
    } else {
        format!(
            "measured {:.1}%  MISS ({:.1} points over)",
            g.live_cpu_pct,
            g.live_cpu_pct - GC_LIVE_CPU_TARGET_PCT
        )
    };
    format!(
        "  garbage collection (--udp-timeout {} --gc-interval {}): natgw used {:.1}% of a CPU \
         while the {} mappings lived;\n    after they expired the table was empty in {} \
         (natgw CPU {:.1} s); natgw status then showed {} mappings\n  \
         target: {} mappings expired <= {GC_EXPIRE_TARGET_S:.0} s after their timeout: {expire}\n  \
         target: controller CPU with {} idle mappings <= {GC_LIVE_CPU_TARGET_PCT:.0}% of a core: {cpu}",
        g.udp_timeout_s,
        g.gc_interval_s,
        g.live_cpu_pct,
        g.mappings,
        g.expire_seconds.map_or_else(
            || "— (not within the limit)".to_owned(),
            |s| format!("{s:.1} s")
        ),
        g.expire_cpu_seconds,
        g.status_mappings
            .map_or_else(|| "?".to_owned(), |n| n.to_string()),
        g.mappings,
        g.mappings,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn full_report_carries_the_upnp_part() {
        let machine = Machine {
            date: "2026-12-04 14:00 UTC".to_owned(),
            command: "cargo xtask bench".to_owned(),
            ..test_machine()
        };
        let plan = Plan {
            reps: 1,
            ..test_plan()
        };
        let mut u = UpnpResult::default();
        u.add.p99_ms = 12.5;
        u.list_cpu.peak_cores = 0.4;
        let (throughput, cost) = (Results::default(), CostResults::default());
        let report = Report {
            machine: &machine,
            plan: &plan,
            throughput: &throughput,
            cost: &cost,
            upnp: Some(&u),
            turn: None,
            setup: None,
        };
        let text = report.text();
        assert!(
            text.contains("UPnP AddPortMapping p99 <= 10 ms: measured 12.50 ms  MISS"),
            "{text}"
        );
        assert!(
            text.contains(
                "controller CPU while listing 1000 mappings: peak 0.40 cores in a 100 ms \
                 window (target <= 1 core)  PASS"
            ),
            "{text}"
        );
        let md = report.markdown();
        assert!(md.contains(&format!("\n{}\n", upnp::HEADING)), "{md}");
        assert!(md.trim_end().ends_with(upnp::METHOD.trim_end()), "{md}");
        assert_eq!(report.json()["upnp"]["add"]["p99_ms"], 12.5);
    }

    #[test]
    fn full_report_carries_the_turn_part_after_the_upnp_part() {
        let machine = Machine {
            date: "2026-12-04 14:00 UTC".to_owned(),
            command: "cargo xtask bench".to_owned(),
            ..test_machine()
        };
        let plan = Plan {
            reps: 1,
            ..test_plan()
        };
        let t = TurnResult {
            busy_before_pct: 0.0,
            plan: turn::TurnPlan {
                reps: 1,
                warmup: Duration::from_millis(500),
                window: Duration::from_secs(2),
            },
            ratios: vec![turn::TurnRatio {
                payload: 100,
                pps: 0.5,
                mbps: 0.5,
            }],
            rows: Vec::new(),
            samples: Vec::new(),
        };
        let u = UpnpResult::default();
        let (throughput, cost) = (Results::default(), CostResults::default());
        let report = Report {
            machine: &machine,
            plan: &plan,
            throughput: &throughput,
            cost: &cost,
            upnp: Some(&u),
            turn: Some(&t),
            setup: None,
        };
        let text = report.text();
        assert!(
            text.contains("natgw/coturn,  100-byte payload: 0.50× packets/s"),
            "{text}"
        );
        let md = report.markdown();
        let upnp_at = md.find(&format!("\n{}\n", upnp::HEADING)).expect(&md);
        let turn_at = md.find(&format!("\n{}\n", turn::HEADING)).expect(&md);
        assert!(upnp_at < turn_at, "{md}");
        assert!(md.trim_end().ends_with(turn::METHOD.trim_end()), "{md}");
        assert_eq!(report.json()["turn"]["ratios"][0]["pps"], 0.5);
    }

    #[test]
    fn full_docs_keep_the_sections_the_run_does_not_write() {
        let machine = Machine {
            date: "2026-12-05 09:00 UTC".to_owned(),
            command: "cargo xtask bench".to_owned(),
            ..test_machine()
        };
        let plan = Plan {
            reps: 1,
            ..test_plan()
        };
        let (throughput, cost, u) = (
            Results::default(),
            CostResults::default(),
            UpnpResult::default(),
        );
        let report = Report {
            machine: &machine,
            plan: &plan,
            throughput: &throughput,
            cost: &cost,
            upnp: Some(&u),
            turn: None,
            setup: None,
        };
        let old = format!(
            "# Benchmarks\n\nRun: 2026-01-01.\n\n## Where the time goes\n\nhand-written \
             observations\n\n{}\n{}\n\nold UPnP run\n\n## An A/B record\n\nkept\n",
            "## How it measures\n\nan old method\n",
            upnp::HEADING
        );
        let md = report.update_docs(&old);
        assert!(md.contains("Run: 2026-12-05 09:00 UTC"), "{md}");
        assert!(!md.contains("Run: 2026-01-01"), "{md}");
        assert!(md.contains("hand-written observations"), "{md}");
        assert!(md.contains("## An A/B record\n\nkept"), "{md}");
        assert!(!md.contains("an old method"), "{md}");
        assert!(md.contains(super::super::METHOD.trim_end()), "{md}");
        assert!(!md.contains("old UPnP run"), "{md}");
        assert_eq!(
            md.matches(&format!("\n{}\n", upnp::HEADING)).count(),
            1,
            "{md}"
        );
        // A page without sections gets the whole page.
        assert_eq!(report.update_docs("# Benchmarks\n"), report.markdown());
    }

    fn sample(pps: f64) -> PpsSample {
        PpsSample {
            pps,
            received: pps as u64,
            cpu: Usage::default(),
            natgw: None,
            flowtable: None,
            inbound: None,
        }
    }

    /// A machine for the tests of the report and the charts.
    pub(crate) fn test_machine() -> Machine {
        Machine {
            cpu: "test CPU".to_owned(),
            cpus: 2,
            memory_gib: 1.0,
            kernel: "6.18".to_owned(),
            os: "Linux".to_owned(),
            date: "2026-12-04 18:00 UTC".to_owned(),
            command: "cargo xtask bench --packets-only".to_owned(),
            busy_before_pct: 0.0,
        }
    }

    fn test_plan() -> Plan {
        Plan {
            reps: 3,
            warmup: Duration::from_millis(500),
            window: Duration::from_secs(1),
            syn_burst: 16,
        }
    }

    /// Three repetitions of every mode at 1k flows (medians natgw 0.8 M, nft 0.2 M,
    /// flowtable 0.5 M, plain 0.5 M, XDP forwarder 1.6 M) and natgw and nft at 100k.
    fn packet_results() -> Results {
        let mut r = Results::default();
        for (mode, values) in [
            (Mode::Natgw, [0.9e6, 0.8e6, 0.7e6]),
            (Mode::Nft, [0.2e6, 0.25e6, 0.1e6]),
            (Mode::NftFlowtable, [0.5e6, 0.4e6, 0.6e6]),
            (Mode::Plain, [0.5e6, 0.5e6, 0.5e6]),
            (Mode::XdpForward, [1.6e6, 2.0e6, 1.0e6]),
        ] {
            for v in values {
                r.pps.push((mode, "udp_1k_flows", sample(v)));
            }
        }
        for (mode, v) in [(Mode::Natgw, 0.6e6), (Mode::Nft, 0.1e6)] {
            r.pps.push((mode, "udp_100k_flows", sample(v)));
        }
        r
    }

    #[test]
    fn ratios_are_natgws_median_over_the_peers_at_1k_flows() {
        let r = packet_results();
        let got: Vec<(&str, f64)> = ratios(&r)
            .into_iter()
            .map(|(k, v)| (k, v.expect(k)))
            .collect();
        let want = [
            ("natgw/nft-masquerade", 0.8 / 0.2),
            ("natgw/nft-flowtable", 0.8 / 0.5),
            ("natgw/xdp-forward", 0.8 / 1.6),
            ("natgw/plain", 0.8 / 0.5),
        ];
        assert_eq!(got.len(), want.len());
        for ((gk, gv), (wk, wv)) in got.iter().zip(want) {
            assert_eq!(*gk, wk);
            assert!((gv - wv).abs() < 1e-9, "{gk}: {gv} != {wv}");
        }
        // A mode that did not run gives no ratio, not a zero or an infinity.
        let mut partial = Results::default();
        partial.pps.push((Mode::Natgw, "udp_1k_flows", sample(1e6)));
        partial.pps.push((Mode::Nft, "udp_1k_flows", sample(0.0)));
        assert!(ratios(&partial).iter().all(|(_, v)| v.is_none()));
    }

    #[test]
    fn cost_targets_are_judged_on_the_program_only_rows() {
        let row = |key, ns: f64, over: Option<f64>| cost::AmortisedRow {
            key,
            label: key,
            ns,
            over_floor_ns: over,
            repeat: cost::AMORTISED_REPEAT,
            runs: 3,
            unexpected: 0,
        };
        let c = CostResults {
            amortised_rows: vec![
                row(cost::REPLAY_FLOOR, 40.0, None),
                row("existing_mapping", 240.0, Some(200.0)),
            ],
            amortised_scale_rows: vec![row("existing_mapping_1m", 270.0, Some(230.0))],
            ..CostResults::default()
        };
        let t = c.targets();
        assert_eq!(t[0].measured, Some(200.0));
        assert_eq!(t[0].met, Some(true));
        assert_eq!(t[1].measured, Some(1.15));
        assert_eq!(t[1].met, Some(false));
        let text = cost_text(&c);
        assert!(
            text.contains("<= 300 ns above the floor: measured 200 ns  PASS"),
            "{text}"
        );
        assert!(
            text.contains("within 10% of an empty table: measured 1.15×  MISS (5% over)"),
            "{text}"
        );

        // The program-only new-mapping row names its own repeat count.
        let mut fresh = row("new_mapping_tcp_syn", 2000.0, Some(1960.0));
        fresh.repeat = cost::NEW_REPEAT;
        let with_new = CostResults {
            amortised_rows: vec![fresh],
            ..CostResults::default()
        };
        let text = cost_text(&with_new);
        assert!(
            text.contains(
                "new_mapping_tcp_syn                          2000     1960  (repeat=5000, 3 \
                 runs, every repetition a fresh endpoint)"
            ),
            "{text}"
        );

        let slow = CostResults {
            amortised_rows: vec![row("existing_mapping", 1100.0, Some(1060.0))],
            ..CostResults::default()
        };
        let text = cost_text(&slow);
        assert!(
            text.contains("measured 1060 ns  MISS (760 ns over, 3.5× the target)"),
            "{text}"
        );
        assert_eq!(CostResults::default().targets()[0].met, None);
    }

    #[test]
    fn json_has_the_ratios_object_and_the_targets() {
        let r = packet_results();
        let j = packets_json(&test_machine(), &test_plan(), &r);
        let ratios = j["ratios"].as_object().expect("ratios object");
        for key in [
            "natgw/nft-masquerade",
            "natgw/nft-flowtable",
            "natgw/xdp-forward",
        ] {
            assert!(ratios[key].is_f64(), "{key}: {}", ratios[key]);
        }
        assert!((j["ratios"]["natgw/xdp-forward"].as_f64().unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(j["ratio_basis"]["workload"], "udp_1k_flows");
        assert_eq!(j["ratio_basis"]["frame_bytes"], 64);
        assert_eq!(j["ratio_basis"]["statistic"], "median");
        let targets = j["targets"].as_array().expect("targets");
        assert_eq!(targets.len(), TARGETS.len() + 1);
        assert_eq!(targets[0]["ratio"], "natgw/xdp-forward");
        assert_eq!(targets[0]["at_least"], 0.8);
        assert_eq!(targets[0]["met"], false);
        assert_eq!(targets[1]["ratio"], "natgw/nft-flowtable");
        assert_eq!(targets[1]["met"], false);
        assert_eq!(targets[2]["ratio"], "natgw/nft-masquerade");
        assert_eq!(targets[3]["workload"], "udp_100k_flows");
        assert_eq!(targets[3]["met"], true);
        assert_eq!(j["pps"]["udp_1k_flows"]["xdp-forward"]["median"], 1.6e6);
        assert_eq!(j["pps"]["udp_1k_flows"]["nft-flowtable"]["n"], 3);
        // WAN → LAN: its keys carry the suffix and come from the answered workload.
        assert!(j["ratios"]["natgw/nft-masquerade/wan-to-lan"].is_null());
        let mut both = packet_results();
        both.pps
            .push((Mode::Natgw, RATIO_WORKLOAD_WAN_TO_LAN, sample(0.9e6)));
        both.pps
            .push((Mode::Nft, RATIO_WORKLOAD_WAN_TO_LAN, sample(0.3e6)));
        let jb = packets_json(&test_machine(), &test_plan(), &both);
        let v = jb["ratios"]["natgw/nft-masquerade/wan-to-lan"]
            .as_f64()
            .unwrap();
        assert!((v - 3.0).abs() < 1e-9, "{v}");
        assert_eq!(
            jb["ratios"]["natgw/nft-masquerade"],
            j["ratios"]["natgw/nft-masquerade"]
        );
        let row = &jb["wan_to_lan"]["udp_1k_flows"];
        assert_eq!(row["workload"], RATIO_WORKLOAD_WAN_TO_LAN);
        assert!(
            (row["ratios_wan_to_lan"]["natgw/nft-masquerade"]
                .as_f64()
                .unwrap()
                - 3.0)
                .abs()
                < 1e-9
        );
        assert!(packets_text(&test_machine(), &test_plan(), &both).contains("WAN → LAN"));
        // Nothing ran: every key is still there, as null.
        let empty = packets_json(&test_machine(), &test_plan(), &Results::default());
        assert!(empty["ratios"]["natgw/nft-flowtable"].is_null());
        assert!(empty["targets"][0]["measured"].is_null());
        // The full bench's JSON carries the same ratios.
        let cost = CostResults::default();
        let full = Report {
            machine: &test_machine(),
            plan: &test_plan(),
            throughput: &r,
            cost: &cost,
            upnp: None,
            turn: None,
            setup: None,
        }
        .json();
        assert_eq!(full["ratios"], j["ratios"]);
        assert!(full.get("cost").is_some());
    }

    #[test]
    fn the_text_starts_with_the_ratios_and_the_targets() {
        let r = packet_results();
        let text = packets_text(&test_machine(), &test_plan(), &r);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("Ratios: natgw's median packets/s"),
            "{text}"
        );
        assert_eq!(lines[1], "  natgw/nft-masquerade   4.00×");
        assert_eq!(lines[2], "  natgw/nft-flowtable    1.60×");
        assert_eq!(lines[3], "  natgw/xdp-forward      0.50×");
        assert_eq!(lines[4], "  natgw/plain            1.60×");
        assert_eq!(
            lines[5],
            "  target: natgw vs the bare XDP forwarder, UDP 1k flows >= 0.8×: measured 0.50×  \
             MISS (38% short)"
        );
        assert_eq!(
            lines[8],
            "  target: natgw vs nftables masquerade, UDP 100k flows >= 5.0×: measured 6.00×  \
             PASS"
        );
        assert!(text.contains("nft flowtable"), "{text}");
        assert!(text.contains("XDP forwarder"), "{text}");
        let mut r = packet_results();
        r.pps.retain(|(m, _, _)| *m != Mode::NftFlowtable);
        r.unavailable.push((
            Mode::NftFlowtable,
            "no flowtables in this kernel".to_owned(),
        ));
        let text = packets_text(&test_machine(), &test_plan(), &r);
        assert!(
            text.contains(
                "  natgw/nft-flowtable    — (nft flowtable could not run: no flowtables in this \
                 kernel)"
            ),
            "{text}"
        );
        assert!(
            text.contains(">= 2.0×: not measured (nft flowtable could not run here)"),
            "{text}"
        );
        assert!(
            text.contains("  nft flowtable could not run here: no flowtables in this kernel"),
            "{text}"
        );
        let j = packets_json(&test_machine(), &test_plan(), &r);
        assert!(j["ratios"]["natgw/nft-flowtable"].is_null());
        assert_eq!(
            j["unavailable"]["nft-flowtable"],
            "no flowtables in this kernel"
        );
        assert_eq!(
            j["targets"][1]["not_measured_because"],
            "no flowtables in this kernel"
        );
        let empty = ratios_text(&Results::default());
        assert!(
            empty.contains("natgw/xdp-forward      — (not run)"),
            "{empty}"
        );
        assert!(empty.contains(">= 2.0×: not measured"), "{empty}");
    }

    fn syn(created: Option<u64>, forwarded: u64, seconds: f64, gateway: f64) -> SynSample {
        let mut cpu = Usage::default();
        cpu.tasks.push(("gateway".to_owned(), gateway));
        SynSample {
            sent: forwarded,
            forwarded,
            created,
            seconds,
            cpu,
        }
    }

    // issue #18: "New mappings (SYN burst, one core) >= 1 M/s"
    #[test]
    fn the_new_mapping_target_is_natgws_syn_burst_median() {
        let mut r = packet_results();
        // natgw: 0.2, 0.3 and 0.25 M/s created (median 0.25 M/s, gateway at 90% in
        // that burst); plain forwarding passed its bursts at 0.5 M/s.
        for (created, gw) in [(20_000, 80.0), (30_000, 95.0), (25_000, 90.0)] {
            r.syn
                .push((Mode::Natgw, syn(Some(created), 16_384, 0.1, gw)));
            r.syn.push((Mode::Plain, syn(None, 50_000, 0.1, 60.0)));
        }
        let text = ratios_text(&r);
        let want = "  target: natgw new mappings, TCP SYN burst (one core) >= 1.00 M/s: measured \
                    0.25 M/s  MISS (75% short; natgw's gateway thread at 90%, plain forwarding \
                    passed the same burst at 0.50 M/s)";
        assert_eq!(text.lines().last(), Some(want), "{text}");
        let j = targets_json(&r);
        let t = &j[TARGETS.len()];
        assert_eq!(t["what"], NEW_MAPPINGS_WHAT);
        assert_eq!(t["at_least"], 1e6);
        assert!(
            (t["measured"].as_f64().unwrap() - 0.25e6).abs() < 1e-3,
            "{t}"
        );
        assert_eq!(t["met"], false);
        assert_eq!(t["gateway_cpu_pct"], 90.0);
        assert!((t["plain_forwarding_syn_per_s"].as_f64().unwrap() - 0.5e6).abs() < 1e-3);

        // A million and more per second meets it.
        let mut fast = Results::default();
        fast.syn
            .push((Mode::Natgw, syn(Some(16_384), 16_384, 0.016, 99.0)));
        assert!(
            ratios_text(&fast).contains(">= 1.00 M/s: measured 1.02 M/s  PASS"),
            "{}",
            ratios_text(&fast)
        );
        assert_eq!(targets_json(&fast)[TARGETS.len()]["met"], true);

        // No burst: not measured, and why when natgw could not run.
        let empty = Results::default();
        assert!(ratios_text(&empty).ends_with(">= 1.00 M/s: not measured\n"));
        assert!(targets_json(&empty)[TARGETS.len()]["measured"].is_null());
        let mut failed = Results::default();
        failed
            .unavailable
            .push((Mode::Natgw, "natgw did not start".to_owned()));
        assert!(ratios_text(&failed)
            .contains("not measured (natgw could not run: natgw did not start)"));
        assert_eq!(
            targets_json(&failed)[TARGETS.len()]["not_measured_because"],
            "natgw did not start"
        );
    }

    #[test]
    fn a_peer_that_was_not_the_limit_is_flagged() {
        let mut r = packet_results();
        for (m, _, s) in &mut r.pps {
            let busy = if *m == Mode::XdpForward { 83.0 } else { 97.0 };
            s.cpu.tasks.push(("gateway".to_owned(), busy));
        }
        let text = ratios_text(&r);
        assert!(
            text.contains(
                "  natgw/xdp-forward      0.50×  (the XDP forwarder's gateway thread was at \
                 83%, not the limit: the generator's side was; the ratio is an upper bound)"
            ),
            "{text}"
        );
        assert!(text.contains("  natgw/nft-masquerade   4.00×\n"), "{text}");
        let j = targets_json(&r);
        assert_eq!(j[0]["peer_gateway_cpu_pct"], 83.0);
        assert_eq!(j[0]["peer_saturated"], false);
        assert_eq!(j[2]["peer_saturated"], true);
    }

    #[test]
    fn the_packet_section_replaces_only_itself() {
        let r = packet_results();
        let section = packets_markdown(&test_machine(), &test_plan(), &r);
        assert!(section.starts_with(PACKETS_HEADING));
        let doc = format!("# Benchmarks\n\n## A\n\na\n\n{PACKETS_HEADING}\n\nold\n\n## B\n\nb\n");
        let out = replace_section(&doc, PACKETS_HEADING, &section);
        assert!(!out.contains("\nold\n"), "{out}");
        assert!(
            out.contains("## A\n\na\n") && out.contains("## B\n\nb\n"),
            "{out}"
        );
        assert!(out.contains("natgw/xdp-forward      0.50×"), "{out}");
    }
}
