//! The bench's output: statistics over repetitions, the text table `cargo xtask bench`
//! prints, its `--json` form, and the Markdown page `--write-docs` writes.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::cost::{CostResults, CostRow, GcResult, MapMemory};
use super::cpu::Usage;
use super::throughput::{Mode, Plan, PpsSample, Results, SynSample, WORKLOADS};
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

impl Report<'_> {
    /// The text table.
    #[must_use]
    pub fn text(&self) -> String {
        let r = self.throughput;
        let p = self.plan;
        let m = self.machine;
        let mut o = String::new();
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
            for mode in [Mode::Natgw, Mode::Nft, Mode::Plain, Mode::Ceiling] {
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

        let c = self.cost;
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
            cost_line(&mut o, row, floor);
        }
        if let (Some(f), Some(a)) = (floor, c.floor_amortised_ns) {
            let _ = writeln!(
                o,
                "  (of the floor's {f:.0} ns, the program itself is {a:.0} ns — xdp_pass at \
                 repeat=1,000,000; the rest is the test harness around one run)"
            );
        }

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
        if let Some(s) = c.fill_seconds {
            let n = c.gc.as_ref().map_or(0, |g| g.mappings);
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
        }
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

    /// The `--json` form.
    #[must_use]
    pub fn json(&self) -> Value {
        let r = self.throughput;
        let mut pps = serde_json::Map::new();
        for w in WORKLOADS {
            let mut modes = serde_json::Map::new();
            for mode in [Mode::Natgw, Mode::Nft, Mode::Plain, Mode::Ceiling] {
                if let Some(s) = pps_spread(r, mode, w.key) {
                    modes.insert(mode.key().to_owned(), json!(s));
                }
            }
            modes.insert(
                "ratio_natgw_nft".to_owned(),
                json!(ratio_value(
                    pps_spread(r, Mode::Natgw, w.key),
                    pps_spread(r, Mode::Nft, w.key)
                )),
            );
            modes.insert(
                "ratio_natgw_plain".to_owned(),
                json!(ratio_value(
                    pps_spread(r, Mode::Natgw, w.key),
                    pps_spread(r, Mode::Plain, w.key)
                )),
            );
            pps.insert(w.key.to_owned(), Value::Object(modes));
        }
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
        json!({
            "machine": self.machine,
            "plan": {
                "reps": self.plan.reps,
                "warmup_s": self.plan.warmup.as_secs_f64(),
                "window_s": self.plan.window.as_secs_f64(),
                "syn_burst": self.plan.syn_burst,
            },
            "pps": pps,
            "syn_flood": syn,
            "conntrack_max": r.conntrack_max,
            "cost": self.cost,
            "upnp": self.upnp,
            "turn": self.turn,
            "samples": r,
        })
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

/// The garbage-collection result as the text report shows it (two lines).
#[must_use]
pub fn gc_line(g: &GcResult) -> String {
    format!(
        "  garbage collection (--udp-timeout 5 --gc-interval 1): natgw used {:.0}% of a CPU \
         while the {} mappings lived;\n    after they expired the table was empty in {} \
         (natgw CPU {:.1} s); natgw status then showed {} mappings",
        g.live_cpu_pct,
        g.mappings,
        g.expire_seconds.map_or_else(
            || "— (not within the limit)".to_owned(),
            |s| format!("{s:.1} s")
        ),
        g.expire_cpu_seconds,
        g.status_mappings
            .map_or_else(|| "?".to_owned(), |n| n.to_string())
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn full_report_carries_the_upnp_part() {
        let machine = Machine {
            cpu: "test CPU".to_owned(),
            cpus: 2,
            memory_gib: 1.0,
            kernel: "6.18".to_owned(),
            os: "Linux".to_owned(),
            date: "2026-12-04 14:00 UTC".to_owned(),
            command: "cargo xtask bench".to_owned(),
            busy_before_pct: 0.0,
        };
        let plan = Plan {
            reps: 1,
            warmup: Duration::from_millis(500),
            window: Duration::from_secs(1),
            syn_burst: 16,
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
            cpu: "test CPU".to_owned(),
            cpus: 2,
            memory_gib: 1.0,
            kernel: "6.18".to_owned(),
            os: "Linux".to_owned(),
            date: "2026-12-04 14:00 UTC".to_owned(),
            command: "cargo xtask bench".to_owned(),
            busy_before_pct: 0.0,
        };
        let plan = Plan {
            reps: 1,
            warmup: Duration::from_millis(500),
            window: Duration::from_secs(1),
            syn_burst: 16,
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
}
