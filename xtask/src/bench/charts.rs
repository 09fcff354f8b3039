//! The bench's SVG charts (issue #18): forwarded packets per second per gateway mode
//! and workload (grouped bars, the median with min–max whiskers), and the per-packet
//! cost of every `BPF_PROG_TEST_RUN` case (horizontal bars, the floor marked).
//!
//! A chart is drawn from a small description ([`PacketChart`], [`CostChart`]) that is
//! built either from the bench's results or from a saved `--json` summary, so
//! `cargo xtask bench --charts DIR --from-json FILE` redraws a run without rerunning
//! it. Both descriptions take whatever workloads, modes, cases and `*_ns` columns the
//! results hold, so new rows appear in the charts without a change here.
//!
//! plotters runs without a font feature: its SVG backend writes `<text>` elements that
//! the viewer renders with its own sans-serif font, so drawing needs neither font
//! files nor font libraries; plotters' built-in width estimate (0.7 em a character, on
//! the generous side) lays the text out, and the margins below leave room for it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::{json, Value};

use super::cost::CostResults;
use super::report::{Machine, Spread};
use super::throughput::{Mode, Results, WAN_TO_LAN, WORKLOADS};

/// File name of the packet-rate chart.
pub const PACKETS_FILE: &str = "bench-packets.svg";
/// File name of the per-packet cost chart.
pub const COST_FILE: &str = "bench-cost.svg";

/// Bar colours, one per mode (packet chart) or column (cost chart), in order: the
/// Okabe–Ito palette, which stays distinguishable for colour-blind readers.
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(120, 120, 120),
];

/// Width of every chart in pixels.
const WIDTH: u32 = 1100;
/// Height of the title strip.
const HEADER: u32 = 64;
/// Height of one line of the footer (legend, notes).
const LINE: u32 = 20;
/// plotters' width estimate of one character of the footer's font, with some slack
/// for real fonts (pixels).
const CHAR_PX: f64 = 7.6;
/// The same for the notes' smaller font.
const NOTE_CHAR_PX: f64 = 6.6;
/// Font sizes as plotters counts them (the SVG's `font-size` is this / 1.24).
const TITLE_PT: f64 = 22.0;
const TEXT_PT: f64 = 16.0;
const LABEL_PT: f64 = 15.0;
const SANS: &str = "sans-serif";
/// Category axes count in thousandths of a group (plotters' tick labels can only be
/// placed by hand on an integer axis).
const UNIT: i32 = 1000;

/// The run a chart comes from: its date, machine and command.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
    /// CPUs, CPU model and kernel.
    pub machine: String,
    /// The command line.
    pub command: String,
    /// How busy the CPUs were before the bench started, in percent.
    pub busy_before_pct: Option<f64>,
}

impl Run {
    /// From the bench's machine description.
    #[must_use]
    pub fn of(m: &Machine) -> Run {
        Run::from_json(&json!(m))
    }

    /// From the `machine` object of a `--json` summary (missing fields say so).
    #[must_use]
    pub fn from_json(m: &Value) -> Run {
        let s = |k: &str| m[k].as_str().unwrap_or("?").to_owned();
        Run {
            date: s("date"),
            machine: format!(
                "{} × {}, Linux {}",
                m["cpus"]
                    .as_u64()
                    .map_or_else(|| "?".to_owned(), |n| n.to_string()),
                s("cpu"),
                s("kernel")
            ),
            command: s("command"),
            busy_before_pct: m["busy_before_pct"].as_f64(),
        }
    }

    /// The second line of a chart's title.
    fn subtitle(&self) -> String {
        let busy = self.busy_before_pct.map_or_else(String::new, |b| {
            format!(" (CPUs {b:.0}% busy before the start)")
        });
        format!("Run {} on {}{busy}", self.date, self.machine)
    }

    /// The footer's last note.
    fn command_note(&self) -> String {
        format!("Command: {}", self.command)
    }
}

/// Forwarded packets per second per mode and workload.
#[derive(Debug, Clone)]
pub struct PacketChart {
    /// Where the figures come from.
    pub run: Run,
    /// Repetitions each bar is the median of.
    pub reps: Option<u64>,
    /// Labels of the modes with at least one bar, in bar order.
    pub modes: Vec<String>,
    /// Workload labels, one group of bars each, in order.
    pub workloads: Vec<String>,
    /// `values[workload][mode]`, packets per second; `None` where that pair did not run.
    pub values: Vec<Vec<Option<Spread>>>,
    /// Modes that could not run here (label, why): named, never drawn.
    pub unavailable: Vec<(String, String)>,
}

/// A workload's label under its group of bars: WAN→LAN groups without the "UDP, "
/// their LAN→WAN twins already show, so that neighbouring labels do not overlap.
fn axis_label(label: &str) -> String {
    if label.contains("WAN→LAN") {
        label.trim_start_matches("UDP, ").to_owned()
    } else {
        label.to_owned()
    }
}

/// The group the SYN bursts are drawn as.
const SYN_GROUP: (&str, &str) = ("tcp_syn_burst", "TCP SYN burst");

/// A workload's label: the bench's own, or its key made readable.
fn workload_label(key: &str) -> String {
    WORKLOADS
        .iter()
        .chain(WAN_TO_LAN.iter())
        .find(|w| w.key == key)
        .map_or_else(|| key.replace('_', " "), |w| w.label.to_owned())
}

/// The workloads of `r` (key, label) in the order they were measured; the packet
/// chart's groups and the `workloads` of the `--json` form.
#[must_use]
pub fn workloads_of(r: &Results) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for (_, key, _) in &r.pps {
        if !out.iter().any(|(k, _)| k == key) {
            out.push((key, workload_label(key)));
        }
    }
    out
}

/// The modes drawn as bars: every gateway mode, not the generator's ceiling (it
/// measures the generator, not a gateway, and is printed in the table).
fn charted(mode: Mode) -> bool {
    mode != Mode::Ceiling
}

impl PacketChart {
    /// From the bench's results.
    #[must_use]
    pub fn from_results(m: &Machine, reps: usize, r: &Results) -> PacketChart {
        let unavailable: Vec<(String, String)> = r
            .unavailable
            .iter()
            .map(|(mode, why)| (mode.label().to_owned(), why.clone()))
            .collect();
        let modes: Vec<Mode> = Mode::ALL
            .into_iter()
            .filter(|&mode| charted(mode) && r.unavailable(mode).is_none())
            .filter(|&mode| {
                r.pps.iter().any(|(m, _, _)| *m == mode) || r.syn.iter().any(|(m, _)| *m == mode)
            })
            .collect();
        let mut workloads = Vec::new();
        let mut values = Vec::new();
        for (key, label) in workloads_of(r) {
            workloads.push(label);
            values.push(
                modes
                    .iter()
                    .map(|&mode| {
                        let v: Vec<f64> = r.pps_of(mode, key).iter().map(|s| s.pps).collect();
                        Spread::of(&v)
                    })
                    .collect(),
            );
        }
        if !r.syn.is_empty() {
            workloads.push(SYN_GROUP.1.to_owned());
            values.push(
                modes
                    .iter()
                    .map(|&mode| {
                        let v: Vec<f64> = r.syn_of(mode).iter().map(|s| s.pps()).collect();
                        Spread::of(&v)
                    })
                    .collect(),
            );
        }
        PacketChart {
            run: Run::of(m),
            reps: Some(reps as u64),
            modes: modes.iter().map(|m| m.label().to_owned()).collect(),
            workloads,
            values,
            unavailable,
        }
    }

    /// From a `--json` summary (`--packets-only --json` or the full bench's); `None`
    /// when it holds no packet rates.
    #[must_use]
    pub fn from_json(v: &Value) -> Option<PacketChart> {
        let pps = v.get("pps")?.as_object()?;
        // Workloads: the summary's own list when it has one (in measured order), else
        // the bench's workloads first and any others by name.
        let mut keys: Vec<(String, String)> = match v.get("workloads").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .filter_map(|w| {
                    let key = w["key"].as_str()?;
                    let label = w["label"]
                        .as_str()
                        .map_or_else(|| workload_label(key), str::to_owned);
                    Some((key.to_owned(), label))
                })
                .collect(),
            None => WORKLOADS
                .iter()
                .map(|w| (w.key.to_owned(), w.label.to_owned()))
                .collect(),
        };
        // A workload with no spread (only the ratio keys) did not run.
        let ran = |k: &str| {
            pps.get(k)
                .and_then(Value::as_object)
                .is_some_and(|m| m.values().any(|s| spread(s).is_some()))
        };
        keys.retain(|(k, _)| ran(k));
        for k in pps.keys() {
            if ran(k) && !keys.iter().any(|(have, _)| have == k) {
                keys.push((k.clone(), workload_label(k)));
            }
        }
        // Modes: the summary's list, else the bench's; then any other key whose value
        // is a spread.
        let mut mode_names: Vec<(String, String)> = match v.get("modes").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .filter_map(|m| {
                    Some((
                        m["key"].as_str()?.to_owned(),
                        m["label"].as_str()?.to_owned(),
                    ))
                })
                .collect(),
            None => Mode::ALL
                .iter()
                .map(|m| (m.key().to_owned(), m.label().to_owned()))
                .collect(),
        };
        for per_mode in pps.values().filter_map(Value::as_object) {
            for (k, s) in per_mode {
                if spread(s).is_some() && !mode_names.iter().any(|(have, _)| have == k) {
                    mode_names.push((k.clone(), k.clone()));
                }
            }
        }
        let label_of = |key: &str| {
            mode_names
                .iter()
                .find(|(k, _)| k == key)
                .map_or_else(|| key.to_owned(), |(_, l)| l.clone())
        };
        let unavailable: Vec<(String, String)> = v
            .get("unavailable")
            .and_then(Value::as_object)
            .map(|u| {
                u.iter()
                    .map(|(k, why)| (label_of(k), why.as_str().unwrap_or("").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let unavailable_keys: Vec<&String> = v
            .get("unavailable")
            .and_then(Value::as_object)
            .map(|u| u.keys().collect())
            .unwrap_or_default();
        let syn = v.get("syn_flood").and_then(Value::as_object);
        let syn_of = |mode: &str| syn.and_then(|s| spread(&s.get(mode)?["forwarded_pps"]));
        let modes: Vec<&(String, String)> = mode_names
            .iter()
            .filter(|(k, _)| k != Mode::Ceiling.key() && !unavailable_keys.contains(&k))
            .filter(|(k, _)| {
                pps.values().any(|w| spread(&w[k.as_str()]).is_some()) || syn_of(k).is_some()
            })
            .collect();
        let mut workloads = Vec::new();
        let mut values = Vec::new();
        for (key, label) in &keys {
            workloads.push(label.clone());
            values.push(
                modes
                    .iter()
                    .map(|(m, _)| spread(&pps[key][m.as_str()]))
                    .collect(),
            );
        }
        if modes.iter().any(|(m, _)| syn_of(m).is_some()) {
            workloads.push(SYN_GROUP.1.to_owned());
            values.push(modes.iter().map(|(m, _)| syn_of(m)).collect());
        }
        Some(PacketChart {
            run: Run::from_json(&v["machine"]),
            reps: v["plan"]["reps"].as_u64(),
            modes: modes.iter().map(|(_, l)| l.clone()).collect(),
            workloads,
            values,
            unavailable,
        })
    }

    /// The chart as an SVG document.
    ///
    /// # Errors
    /// When plotters fails to draw (it should not: the backend writes into memory).
    pub fn svg(&self) -> Result<String> {
        let mut legend: Vec<(Swatch, String)> = self
            .modes
            .iter()
            .enumerate()
            .map(|(i, m)| (Swatch::Bar(mode_colour(i)), m.clone()))
            .collect();
        for (mode, _) in &self.unavailable {
            legend.push((
                Swatch::Empty,
                format!("{mode}: unavailable here, not drawn"),
            ));
        }
        let mut notes = vec![format!(
            "Bars: median of {} interleaved runs per mode; whiskers: the smallest and largest \
             run. 64-byte frames, UDP unless named; WAN→LAN: the same flows answered from the \
             WAN side; the SYN burst forwards one SYN from each new internal endpoint (a new \
             mapping or conntrack entry each).",
            self.reps
                .map_or_else(|| "the".to_owned(), |n| n.to_string())
        )];
        for (mode, why) in &self.unavailable {
            notes.push(format!("{mode} could not run on this machine: {why}"));
        }
        notes.push(self.run.command_note());
        let footer = Footer::new(&legend, &notes);
        let plot_h = 470;
        canvas(
            "Forwarded packets per second per gateway mode and workload",
            &self.run,
            &footer,
            plot_h,
            |plot| {
                let groups = self.workloads.len().max(1);
                let top = self
                    .values
                    .iter()
                    .flatten()
                    .flatten()
                    .map(|s| s.max)
                    .fold(0.0_f64, f64::max)
                    / 1e6;
                let y_max = if top > 0.0 { top * 1.12 } else { 1.0 };
                let centres: Vec<i32> = (0..groups as i32).map(|g| g * UNIT + UNIT / 2).collect();
                let mut chart = ChartBuilder::on(plot)
                    .margin_left(10)
                    .margin_right(20)
                    .margin_top(10)
                    .x_label_area_size(40)
                    .y_label_area_size(80)
                    .build_cartesian_2d(
                        (0..groups as i32 * UNIT).with_key_points(centres),
                        0.0..y_max,
                    )?;
                let workload_at = |x: &i32| {
                    usize::try_from(x.div_euclid(UNIT))
                        .ok()
                        .and_then(|i| self.workloads.get(i))
                        .map(|w| axis_label(w))
                        .unwrap_or_default()
                };
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .x_label_formatter(&workload_at)
                    .y_label_formatter(&|y| format!("{y:.1}"))
                    .y_desc("forwarded packets per second (millions)")
                    .max_light_lines(0)
                    .label_style((SANS, LABEL_PT))
                    .axis_desc_style((SANS, TEXT_PT))
                    .draw()?;

                let n = i32::try_from(self.modes.len().max(1)).unwrap_or(1);
                let slot = UNIT * 84 / 100 / n;
                for (g, row) in (0..).zip(&self.values) {
                    for (i, cell) in (0..).zip(row) {
                        let Some(s) = cell else { continue };
                        let x0 = g * UNIT + UNIT * 8 / 100 + i * slot + slot * 8 / 100;
                        let x1 = x0 + slot * 84 / 100;
                        let colour = mode_colour(i as usize);
                        chart.draw_series(std::iter::once(Rectangle::new(
                            [(x0, 0.0), (x1, s.median / 1e6)],
                            colour.filled(),
                        )))?;
                        if s.n > 1 {
                            chart.draw_series(std::iter::once(ErrorBar::new_vertical(
                                (x0 + x1) / 2,
                                s.min / 1e6,
                                s.median / 1e6,
                                s.max / 1e6,
                                BLACK.stroke_width(1),
                                8,
                            )))?;
                        }
                        let label_y = s.max.max(s.median) / 1e6;
                        chart.draw_series(std::iter::once(Text::new(
                            format!("{:.2}", s.median / 1e6),
                            ((x0 + x1) / 2, label_y),
                            (SANS, 12.0)
                                .into_font()
                                .color(&BLACK)
                                .pos(Pos::new(HPos::Center, VPos::Bottom)),
                        )))?;
                    }
                }
                Ok(())
            },
        )
    }
}

/// The colour of the `i`-th mode or column.
#[must_use]
pub fn mode_colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A `{median, min, max, n}` object of the `--json` form.
fn spread(v: &Value) -> Option<Spread> {
    Some(Spread {
        median: v.get("median")?.as_f64()?,
        min: v.get("min")?.as_f64()?,
        max: v.get("max")?.as_f64()?,
        n: v.get("n").and_then(Value::as_u64).unwrap_or(1) as usize,
    })
}

/// Per-packet cost per case.
#[derive(Debug, Clone)]
pub struct CostChart {
    /// Where the figures come from.
    pub run: Run,
    /// Column names (the rows' `*_ns` fields without the suffix: median first).
    pub columns: Vec<String>,
    /// `(case label, value per column in ns)`, in the bench's order.
    pub cases: Vec<(String, Vec<Option<f64>>)>,
    /// The floor case's median (`xdp_pass`), ns.
    pub floor: Option<f64>,
    /// Cases without a figure, and why.
    pub not_measured: Vec<(String, String)>,
}

/// The floor case's key.
const FLOOR_KEY: &str = "floor_xdp_pass";

/// The cost results' lists of program-only timings (`xdp_replay`, repeat 1,000,000).
const PROGRAM_ONLY_LISTS: [&str; 2] = ["amortised_rows", "amortised_scale_rows"];

/// The column a case's program-only figure (ns above the replay floor) is drawn in.
const PROGRAM_ONLY_COLUMN: &str = "program_only_ns";

/// The program-only figure of the case `key`, ns above the replay floor.
fn program_only_ns(cost: &serde_json::Map<String, Value>, key: &str) -> Option<f64> {
    PROGRAM_ONLY_LISTS
        .iter()
        .filter_map(|list| cost.get(*list)?.as_array())
        .flatten()
        .find(|r| r.get("key").and_then(Value::as_str) == Some(key))?
        .get("over_floor_ns")?
        .as_f64()
}

impl CostChart {
    /// From the bench's cost results.
    #[must_use]
    pub fn from_results(m: &Machine, c: &CostResults) -> Option<CostChart> {
        CostChart::from_json(&json!({ "machine": m, "cost": c }))
    }

    /// From a `--json` summary that has a `cost` object (the full bench's or
    /// `--cost-only`'s); `None` when it has no measured case.
    #[must_use]
    pub fn from_json(v: &Value) -> Option<CostChart> {
        let cost = v.get("cost")?.as_object()?;
        // Every list of cases (`*rows`): `rows`, `scale_rows`, then any other, by
        // name; the program-only lists become a column of the cases they time again.
        // Other lists (the GC designs, the repeat ladder) are not per-packet cases.
        let mut lists: Vec<&String> = cost
            .keys()
            .filter(|k| k.ends_with("rows") && !PROGRAM_ONLY_LISTS.contains(&k.as_str()))
            .collect();
        lists.sort_by_key(|k| match k.as_str() {
            "rows" => 0,
            "scale_rows" => 1,
            _ => 2,
        });
        let rows: Vec<serde_json::Map<String, Value>> = lists
            .into_iter()
            .filter_map(|k| cost[k].as_array())
            .flatten()
            .filter_map(Value::as_object)
            .filter(|r| r.get("label").is_some_and(Value::is_string))
            .cloned()
            .map(|mut r| {
                let program_only = r
                    .get("key")
                    .and_then(Value::as_str)
                    .and_then(|key| program_only_ns(cost, key));
                if let Some(ns) = program_only {
                    r.insert(PROGRAM_ONLY_COLUMN.to_owned(), json!(ns));
                }
                r
            })
            .collect();
        let mut columns: Vec<String> = Vec::new();
        for r in &rows {
            for (k, value) in r {
                if k.ends_with("_ns") && value.is_number() && !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
        columns.sort_by_key(|k| (k != "median_ns", k.clone()));
        let mut cases = Vec::new();
        let mut not_measured = Vec::new();
        let mut floor = None;
        for r in &rows {
            let label = r["label"].as_str().unwrap_or_default().to_owned();
            let values: Vec<Option<f64>> = columns.iter().map(|c| r.get(c)?.as_f64()).collect();
            if values.iter().all(Option::is_none) {
                let why = r
                    .get("note")
                    .and_then(Value::as_str)
                    .unwrap_or("not measured");
                not_measured.push((label, why.to_owned()));
                continue;
            }
            if r.get("key").and_then(Value::as_str) == Some(FLOOR_KEY) {
                floor = r.get("median_ns").and_then(Value::as_f64);
            }
            cases.push((label, values));
        }
        if cases.is_empty() {
            return None;
        }
        Some(CostChart {
            run: Run::from_json(&v["machine"]),
            columns: columns
                .iter()
                .map(|c| c.trim_end_matches("_ns").replace('_', " "))
                .collect(),
            cases,
            floor,
            not_measured,
        })
    }

    /// The chart as an SVG document.
    ///
    /// # Errors
    /// When plotters fails to draw.
    pub fn svg(&self) -> Result<String> {
        let mut legend: Vec<(Swatch, String)> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let what = if c == "program only" {
                    "program only: ns per packet above xdp_pass, repeat = 1,000,000".to_owned()
                } else {
                    format!("{c} ns per packet")
                };
                (Swatch::Bar(mode_colour(i)), what)
            })
            .collect();
        if let Some(f) = self.floor {
            legend.push((
                Swatch::Line(BLACK),
                format!("floor: xdp_pass, {f:.0} ns (the test harness around one run)"),
            ));
        }
        let mut notes = vec![format!(
            "BPF_PROG_TEST_RUN on the programs a running natgw attached; median and mean of \
             one call per packet (repeat = 1) over {} endpoints per case, in ns as the kernel \
             times one run. The number at a bar's end is its value and, for the median, its \
             multiple of the floor.",
            super::cost::ENDPOINTS
        )];
        if self.columns.iter().any(|c| c == "program only") {
            notes.push(
                "Program only: xdp_replay writes the next endpoint's frame and tail-calls the \
                 program, 1,000,000 times per call; the bar is the time per packet above \
                 xdp_replay tail-calling xdp_pass, the program's own cost without the harness \
                 (the floor line is the one-call floor)."
                    .to_owned(),
            );
        }
        for (case, why) in &self.not_measured {
            notes.push(format!("Not measured: {case}: {why}"));
        }
        notes.push(self.run.command_note());
        let footer = Footer::new(&legend, &notes);
        let longest = self
            .cases
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(10);
        let label_area = (longest as f64 * 6.9 + 24.0) as u32;
        let band = 22 + 16 * self.columns.len() as u32;
        let plot_h = 60 + band * self.cases.len() as u32;
        canvas(
            "Per-packet cost of natgw's programs per case",
            &self.run,
            &footer,
            plot_h,
            |plot| {
                let n = self.cases.len();
                let top = self
                    .cases
                    .iter()
                    .flat_map(|(_, v)| v.iter().flatten())
                    .copied()
                    .fold(0.0_f64, f64::max);
                // Room right of the longest bar for its label.
                let x_max = if top > 0.0 { top * 1.3 } else { 1.0 };
                let rows = i32::try_from(n).unwrap_or(0);
                let centres: Vec<i32> = (0..rows).map(|i| i * UNIT + UNIT / 2).collect();
                let mut chart = ChartBuilder::on(plot)
                    .margin_left(10)
                    .margin_right(30)
                    .margin_top(10)
                    .x_label_area_size(50)
                    .y_label_area_size(label_area)
                    .build_cartesian_2d(0.0..x_max, (0..rows * UNIT).with_key_points(centres))?;
                // Case 0 at the top.
                let case_at = |y: &i32| {
                    usize::try_from(y.div_euclid(UNIT))
                        .ok()
                        .filter(|&i| i < n)
                        .map(|i| self.cases[n - 1 - i].0.clone())
                        .unwrap_or_default()
                };
                chart
                    .configure_mesh()
                    .disable_y_mesh()
                    .y_label_formatter(&case_at)
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .x_desc("nanoseconds per packet")
                    .max_light_lines(0)
                    .label_style((SANS, LABEL_PT))
                    .axis_desc_style((SANS, TEXT_PT))
                    .draw()?;

                let cols = i32::try_from(self.columns.len().max(1)).unwrap_or(1);
                let slot = UNIT * 80 / 100 / cols;
                for (c, (_, values)) in (0..).zip(&self.cases) {
                    let base = (rows - 1 - c) * UNIT;
                    for (i, v) in (0..).zip(values) {
                        let Some(ns) = *v else { continue };
                        // Column 0 at the top of the band.
                        let y1 = base + UNIT * 90 / 100 - i * slot;
                        let y0 = y1 - slot * 85 / 100;
                        chart.draw_series(std::iter::once(Rectangle::new(
                            [(0.0, y0), (ns, y1)],
                            mode_colour(i as usize).filled(),
                        )))?;
                        let label = match self.floor {
                            Some(f) if i == 0 && f > 0.0 => format!(" {ns:.0} ({:.1}×)", ns / f),
                            _ => format!(" {ns:.0}"),
                        };
                        chart.draw_series(std::iter::once(Text::new(
                            label,
                            (ns, (y0 + y1) / 2),
                            (SANS, 12.0)
                                .into_font()
                                .color(&BLACK)
                                .pos(Pos::new(HPos::Left, VPos::Center)),
                        )))?;
                    }
                }
                if let Some(f) = self.floor {
                    chart.draw_series(LineSeries::new(
                        [(f, 0), (f, rows * UNIT)],
                        BLACK.stroke_width(2),
                    ))?;
                }
                Ok(())
            },
        )
    }
}

/// A part of a chart's canvas, in pixels.
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// One chart's SVG: the title strip (`heading` and the run), a plot area `plot_h`
/// pixels high that `draw` fills, and the footer (legend and notes) below it.
fn canvas(
    heading: &str,
    run: &Run,
    footer: &Footer,
    plot_h: u32,
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEADER + plot_h + footer.height()))
            .into_drawing_area();
        root.fill(&WHITE)?;
        let (head, rest) = root.split_vertically(HEADER);
        let (plot, foot) = rest.split_vertically(plot_h);
        title(&head, heading, run)?;
        footer.draw(&foot)?;
        draw(&plot)?;
        root.present()?;
    }
    Ok(out)
}

/// The title strip: the chart's title and the run it comes from.
fn title(area: &Area<'_>, text: &str, run: &Run) -> Result<()> {
    area.draw(&Text::new(text, (16, 10), (SANS, TITLE_PT).into_font()))?;
    let sub = run.subtitle();
    let fits = (f64::from(WIDTH - 32) / CHAR_PX) as usize;
    let sub = if sub.chars().count() > fits {
        format!("{}…", sub.chars().take(fits - 1).collect::<String>())
    } else {
        sub
    };
    area.draw(&Text::new(sub, (16, 38), (SANS, 15.0).into_font()))?;
    Ok(())
}

/// What a legend entry shows beside its text.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    /// A filled square: a bar's colour.
    Bar(RGBColor),
    /// A short thick line: a marker line across the chart.
    Line(RGBColor),
    /// An empty square: something not drawn.
    Empty,
}

/// The legend and notes below a chart, laid out in lines that fit the width.
struct Footer {
    /// Lines of legend entries: `(x, swatch, text)`.
    legend: Vec<Vec<(u32, Swatch, String)>>,
    /// Wrapped note lines.
    notes: Vec<String>,
}

impl Footer {
    fn new(entries: &[(Swatch, String)], notes: &[String]) -> Footer {
        let mut legend: Vec<Vec<(u32, Swatch, String)>> = vec![Vec::new()];
        let mut x = 16;
        for (colour, text) in entries {
            let w = 22 + (text.chars().count() as f64 * CHAR_PX) as u32 + 24;
            if x + w > WIDTH - 16 && x > 16 {
                legend.push(Vec::new());
                x = 16;
            }
            if let Some(line) = legend.last_mut() {
                line.push((x, *colour, text.clone()));
            }
            x += w;
        }
        let fits = (f64::from(WIDTH - 32) / NOTE_CHAR_PX) as usize;
        let notes = notes.iter().flat_map(|n| wrap(n, fits)).collect();
        Footer { legend, notes }
    }

    fn height(&self) -> u32 {
        (self.legend.len() + self.notes.len()) as u32 * LINE + LINE
    }

    fn draw(&self, area: &Area<'_>) -> Result<()> {
        let mut y = 6;
        for line in &self.legend {
            for (x, swatch, text) in line {
                let x = i32::try_from(*x).unwrap_or(0);
                match swatch {
                    Swatch::Bar(c) => {
                        area.draw(&Rectangle::new([(x, y + 2), (x + 14, y + 16)], c.filled()))
                    }
                    Swatch::Line(c) => area.draw(&PathElement::new(
                        [(x + 7, y + 1), (x + 7, y + 17)],
                        c.stroke_width(2),
                    )),
                    // An unavailable mode: an empty box, no colour.
                    Swatch::Empty => area.draw(&Rectangle::new(
                        [(x, y + 2), (x + 14, y + 16)],
                        BLACK.stroke_width(1),
                    )),
                }?;
                area.draw(&Text::new(
                    text.as_str(),
                    (x + 22, y + 2),
                    (SANS, TEXT_PT).into_font(),
                ))?;
            }
            y += LINE as i32;
        }
        for note in &self.notes {
            area.draw(&Text::new(
                note.as_str(),
                (16, y + 2),
                (SANS, 14.0).into_font(),
            ))?;
            y += LINE as i32;
        }
        Ok(())
    }
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Writes the charts that have data into `dir` (created if missing); returns the
/// files written.
///
/// # Errors
/// When drawing or writing fails.
pub fn write(
    dir: &Path,
    packets: Option<&PacketChart>,
    cost: Option<&CostChart>,
) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let svgs = [
        (PACKETS_FILE, packets.map(PacketChart::svg)),
        (COST_FILE, cost.map(CostChart::svg)),
    ];
    for (name, svg) in svgs {
        let Some(svg) = svg else { continue };
        let path = dir.join(name);
        std::fs::write(&path, svg.with_context(|| format!("drawing {name}"))?)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The markers around the charts block of docs/benchmarks.md.
const BLOCK_BEGIN: &str =
    "<!-- charts: `cargo xtask bench --write-docs` (xtask/src/bench/charts.rs) -->";
const BLOCK_END: &str = "<!-- end of charts -->";

/// One chart's paragraph in docs/benchmarks.md: the image and the run it comes from.
fn embed(file: &str, alt: &str, what: &str, run: &Run) -> String {
    let busy = run.busy_before_pct.map_or_else(String::new, |b| {
        format!(", the CPUs {b:.0}% busy with other work before it started")
    });
    format!(
        "![{alt}]({file})\n\n*{what}: the run of {date} on {machine}{busy}: `{cmd}`.*\n",
        date = run.date,
        machine = run.machine,
        cmd = run.command
    )
}

/// `doc` (docs/benchmarks.md) with its charts block holding the charts just drawn
/// (`Some`) and keeping the paragraph of a chart not redrawn. A doc without the block
/// gets it after its first paragraph, near the top.
#[must_use]
pub fn update_docs(doc: &str, packets: Option<&Run>, cost: Option<&Run>) -> String {
    let (before, old, after) = match (doc.find(BLOCK_BEGIN), doc.find(BLOCK_END)) {
        (Some(b), Some(e)) if b < e => (
            doc[..b].to_owned(),
            &doc[b + BLOCK_BEGIN.len()..e],
            doc[e + BLOCK_END.len()..].to_owned(),
        ),
        _ => {
            // After the title and the paragraph below it.
            let at = doc
                .find("\n# ")
                .or_else(|| doc.starts_with("# ").then_some(0))
                .and_then(|t| doc[t..].find("\n\n").map(|i| t + i + 2))
                .and_then(|p| doc[p..].find("\n\n").map(|i| p + i + 2))
                .unwrap_or(doc.len());
            (doc[..at].to_owned(), "", format!("\n\n{}", &doc[at..]))
        }
    };
    // The old block's paragraph per chart: from its image line to the next image.
    let kept = |file: &str| -> Option<String> {
        let target = format!("]({file})");
        let start = old
            .match_indices("![")
            .map(|(i, _)| i)
            .find(|&i| old[i..].lines().next().is_some_and(|l| l.contains(&target)))?;
        let rest = &old[start..];
        let end = rest[2..].find("\n![").map_or(rest.len(), |i| i + 3);
        Some(format!("{}\n", rest[..end].trim_end()))
    };
    let mut block = String::new();
    let _ = writeln!(block, "{BLOCK_BEGIN}");
    let parts = [
        (
            PACKETS_FILE,
            packets.map(|r| {
                embed(
                    PACKETS_FILE,
                    "Forwarded packets per second per gateway mode and workload",
                    "Packet rates",
                    r,
                )
            }),
        ),
        (
            COST_FILE,
            cost.map(|r| {
                embed(
                    COST_FILE,
                    "Per-packet cost of natgw's programs per case",
                    "Per-packet cost",
                    r,
                )
            }),
        ),
    ];
    let mut first = true;
    for (file, new) in parts {
        if let Some(p) = new.or_else(|| kept(file)) {
            if !first {
                block.push('\n');
            }
            block.push_str(&p);
            first = false;
        }
    }
    let _ = write!(block, "{BLOCK_END}");
    format!("{before}{block}{after}")
}

#[cfg(test)]
mod tests {
    use quick_xml::events::Event;
    use quick_xml::Reader;

    use super::*;
    use crate::bench::cost::CostRow;
    use crate::bench::cpu::Usage;
    use crate::bench::throughput::PpsSample;

    /// report's test machine, busy and dated so that the subtitle shows both.
    fn machine() -> Machine {
        Machine {
            date: "2026-12-05 05:00 UTC".to_owned(),
            busy_before_pct: 12.0,
            ..crate::bench::report::tests::test_machine()
        }
    }

    fn sample(pps: f64) -> PpsSample {
        PpsSample {
            pps,
            received: 0,
            cpu: Usage::default(),
            natgw: None,
            flowtable: None,
            inbound: None,
        }
    }

    /// Three runs of natgw, nft, plain and the XDP forwarder in two workloads (plus a
    /// workload the bench does not name), the flowtable unavailable, and a ceiling.
    fn results() -> Results {
        let mut r = Results::default();
        for w in ["udp_1_flow", "udp_1k_flows", "udp_10_flows"] {
            for (mode, base) in [
                (Mode::Natgw, 0.8e6),
                (Mode::Nft, 0.2e6),
                (Mode::Plain, 0.5e6),
                (Mode::XdpForward, 1.4e6),
            ] {
                for k in [0.9, 1.0, 1.1] {
                    r.pps.push((mode, w, sample(base * k)));
                }
            }
        }
        r.pps.push((Mode::Ceiling, "udp_1_flow", sample(5e6)));
        r.unavailable.push((
            Mode::NftFlowtable,
            "nft refused the flowtable: No such file or directory".to_owned(),
        ));
        r
    }

    /// The attributes of every element named `name`.
    fn elements(svg: &str, name: &[u8]) -> Vec<Vec<(String, String)>> {
        let mut reader = Reader::from_str(svg);
        let mut out = Vec::new();
        loop {
            match reader.read_event().expect("well-formed SVG") {
                Event::Eof => break,
                Event::Start(e) | Event::Empty(e) if e.name().as_ref() == name => out.push(
                    e.attributes()
                        .map(|a| {
                            let a = a.expect("attribute");
                            (
                                String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                                a.unescape_value().expect("value").into_owned(),
                            )
                        })
                        .collect(),
                ),
                _ => {}
            }
        }
        out
    }

    /// Every text of the SVG, unescaped.
    fn texts(svg: &str) -> Vec<String> {
        let mut reader = Reader::from_str(svg);
        let mut out = Vec::new();
        loop {
            match reader.read_event().expect("well-formed SVG") {
                Event::Eof => break,
                Event::Text(t) => {
                    let t = t.unescape().expect("text");
                    if !t.trim().is_empty() {
                        out.push(t.trim().to_owned());
                    }
                }
                _ => {}
            }
        }
        out
    }

    fn fill_of(attrs: &[(String, String)]) -> Option<&str> {
        attrs
            .iter()
            .find(|(k, _)| k == "fill")
            .map(|(_, v)| v.as_str())
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    #[test]
    fn packet_chart_has_one_bar_per_mode_and_workload() {
        let chart = PacketChart::from_results(&machine(), 3, &results());
        assert_eq!(
            chart.modes,
            [
                "natgw (XDP)",
                "nft masquerade",
                "plain forwarding",
                "XDP forwarder"
            ]
        );
        assert_eq!(
            chart.workloads,
            ["UDP, 1 flow", "UDP, 1k flows", "udp 10 flows"]
        );
        let svg = chart.svg().expect("svg");
        let rects = elements(&svg, b"rect");
        for (i, _) in chart.modes.iter().enumerate() {
            let colour = hex(mode_colour(i)).to_lowercase();
            let n = rects
                .iter()
                .filter(|r| fill_of(r).is_some_and(|f| f.to_lowercase() == colour))
                .count();
            // One bar per workload, and the legend's swatch.
            assert_eq!(n, chart.workloads.len() + 1, "mode {i}: {svg}");
        }
        // No colour beyond the modes' (the unavailable mode has no bar).
        let unused = hex(mode_colour(chart.modes.len())).to_lowercase();
        assert!(!rects
            .iter()
            .any(|r| fill_of(r).is_some_and(|f| f.to_lowercase() == unused)));
        let texts = texts(&svg);
        assert!(
            texts
                .iter()
                .any(|t| t == "nft flowtable: unavailable here, not drawn"),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("nft flowtable could not run on this machine: nft refused")),
            "{texts:?}"
        );
        assert!(texts
            .iter()
            .any(|t| t.contains("2026-12-05 05:00 UTC") && t.contains("2 × test CPU")));
        assert!(texts
            .iter()
            .any(|t| t == "forwarded packets per second (millions)"));
        assert!(texts
            .iter()
            .any(|t| t == "Command: cargo xtask bench --packets-only"));
        // Every workload names its group; the medians label the bars.
        for w in &chart.workloads {
            assert!(texts.contains(w), "{w}: {texts:?}");
        }
        assert!(texts.iter().any(|t| t == "1.40"), "{texts:?}");
        assert!(!texts.iter().any(|t| t.contains("ceiling")), "{texts:?}");
    }

    #[test]
    fn packet_chart_from_json_matches_the_results() {
        let m = machine();
        let r = results();
        let plan = crate::bench::throughput::Plan {
            reps: 3,
            warmup: std::time::Duration::from_millis(500),
            window: std::time::Duration::from_secs(1),
            syn_burst: 16,
        };
        let j = crate::bench::report::packets_json(&m, &plan, &r);
        let a = PacketChart::from_results(&m, 3, &r);
        let b = PacketChart::from_json(&j).expect("packet rates");
        assert_eq!(a.modes, b.modes);
        assert_eq!(a.workloads, b.workloads);
        assert_eq!(a.unavailable, b.unavailable);
        assert_eq!(a.run, b.run);
        assert_eq!(b.reps, Some(3));
        for (ra, rb) in a.values.iter().zip(&b.values) {
            for (x, y) in ra.iter().zip(rb) {
                assert_eq!(
                    x.map(|s| (s.median, s.min, s.max)),
                    y.map(|s| (s.median, s.min, s.max))
                );
            }
        }
        // A summary from before the `workloads`/`modes` lists still draws.
        let mut old = j.clone();
        old.as_object_mut().unwrap().remove("workloads");
        old.as_object_mut().unwrap().remove("modes");
        let c = PacketChart::from_json(&old).expect("packet rates");
        assert_eq!(c.modes, a.modes);
        assert_eq!(&c.workloads[..2], &a.workloads[..2]);
        assert!(PacketChart::from_json(&json!({"machine": {}})).is_none());
    }

    fn row(key: &'static str, label: &'static str, median: Option<f64>) -> CostRow {
        CostRow {
            key,
            label,
            median_ns: median,
            mean_ns: median.map(|m| m * 1.1),
            calls: 10_000,
            unexpected: 0,
            note: median.is_none().then_some("no TC hairpin in this build"),
        }
    }

    #[test]
    fn cost_chart_has_a_bar_per_case_and_column_and_marks_the_floor() {
        let c = CostResults {
            rows: vec![
                row(FLOOR_KEY, "xdp_pass (floor)", Some(40.0)),
                row("existing_mapping", "xdp_lan, existing mapping", Some(600.0)),
                row("hairpin", "tc_lan_ingress, hairpin", None),
            ],
            scale_rows: vec![row(
                "new_mapping_1m",
                "xdp_lan, new mapping, 1M table",
                Some(2500.0),
            )],
            ..CostResults::default()
        };
        let chart = CostChart::from_results(&machine(), &c).expect("cost");
        assert_eq!(chart.columns, ["median", "mean"]);
        assert_eq!(chart.cases.len(), 3);
        assert_eq!(chart.floor, Some(40.0));
        let svg = chart.svg().expect("svg");
        let rects = elements(&svg, b"rect");
        for i in 0..2 {
            let colour = hex(mode_colour(i)).to_lowercase();
            let n = rects
                .iter()
                .filter(|r| fill_of(r).is_some_and(|f| f.to_lowercase() == colour))
                .count();
            assert_eq!(n, chart.cases.len() + 1, "column {i}: {svg}");
        }
        let texts = texts(&svg);
        for label in [
            "xdp_pass (floor)",
            "xdp_lan, existing mapping",
            "xdp_lan, new mapping, 1M table",
        ] {
            assert!(texts.iter().any(|t| t == label), "{label}: {texts:?}");
        }
        assert!(texts.iter().any(|t| t.trim() == "600 (15.0×)"), "{texts:?}");
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("floor: xdp_pass, 40 ns")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("Not measured: tc_lan_ingress, hairpin: no TC hairpin")),
            "{texts:?}"
        );
        assert!(texts.iter().any(|t| t == "nanoseconds per packet"));
        // The floor line: one 2-pixel vertical line across the plot (and a short one
        // in the legend).
        let floor_lines: Vec<Vec<(i32, i32)>> = elements(&svg, b"polyline")
            .into_iter()
            .filter(|p| p.iter().any(|(k, v)| k == "stroke-width" && v == "2"))
            .filter_map(|p| {
                let points = &p.iter().find(|(k, _)| k == "points")?.1;
                let xy: Vec<(i32, i32)> = points
                    .split_whitespace()
                    .filter_map(|xy| {
                        let (x, y) = xy.split_once(',')?;
                        Some((x.parse().ok()?, y.parse().ok()?))
                    })
                    .collect();
                (xy.len() == 2 && xy[0].0 == xy[1].0 && (xy[0].1 - xy[1].1).abs() > 100)
                    .then_some(xy)
            })
            .collect();
        assert_eq!(floor_lines.len(), 1, "{svg}");
        // A column another part of the bench adds (`*_ns`) is drawn without a change.
        let mut j = json!({ "machine": machine(), "cost": c });
        j["cost"]["rows"][1]["program_only_ns"] = json!(300.0);
        let wider = CostChart::from_json(&j).expect("cost");
        assert_eq!(wider.columns, ["median", "mean", "program only"]);
        assert_eq!(wider.cases[1].1, [Some(600.0), Some(660.0), Some(300.0)]);
        // The program-only timings join the case they time again as a column.
        let mut j = json!({ "machine": machine(), "cost": c });
        let key = j["cost"]["rows"][1]["key"].clone();
        j["cost"]["amortised_rows"] = json!([
            { "key": "replay_floor", "label": "floor: xdp_replay + xdp_pass", "ns": 9.0 },
            { "key": key, "label": "xdp_lan, existing mapping (UDP)", "ns": 180.0,
              "over_floor_ns": 170.0 },
        ]);
        j["cost"]["gc_designs"] = json!([
            { "key": "lazy", "label": "lazy expiry on lookup", "note": "not a case" },
        ]);
        let program = CostChart::from_json(&j).expect("cost");
        assert!(
            program
                .not_measured
                .iter()
                .all(|(l, _)| !l.starts_with("lazy")),
            "{:?}",
            program.not_measured
        );
        assert_eq!(program.columns, ["median", "mean", "program only"]);
        assert_eq!(program.cases.len(), wider.cases.len());
        assert_eq!(program.cases[1].1[2], Some(170.0));
        assert!(program
            .cases
            .iter()
            .all(|(l, _)| !l.starts_with("floor: xdp_replay")));
        let svg = program.svg().expect("svg");
        assert!(svg.contains("repeat = 1,000,000"), "{svg}");
        assert!(CostChart::from_json(&json!({"cost": {"rows": []}})).is_none());
    }

    #[test]
    fn docs_block_replaces_only_the_chart_redrawn() {
        let run = |date: &str| Run {
            date: date.to_owned(),
            machine: "2 × test CPU, Linux 6.18".to_owned(),
            command: "cargo xtask bench".to_owned(),
            busy_before_pct: None,
        };
        let doc = "# Benchmarks\n\nThe latest run.\n\nMachine: x.\n\n## A\n\na\n";
        let one = update_docs(doc, Some(&run("day 1")), Some(&run("day 1")));
        assert!(
            one.contains(&format!("{BLOCK_END}\n\nMachine: x.")),
            "{one}"
        );
        let begin = one.find(BLOCK_BEGIN).expect(&one);
        assert!(begin < one.find("Machine: x.").unwrap(), "{one}");
        assert!(one.find("The latest run.").unwrap() < begin, "{one}");
        assert!(one.contains(
            "![Forwarded packets per second per gateway mode and workload](bench-packets.svg)"
        ));
        assert!(one.contains("(bench-cost.svg)"));
        let two = update_docs(&one, None, Some(&run("day 2")));
        assert_eq!(two.matches(BLOCK_BEGIN).count(), 1, "{two}");
        assert!(two.contains("*Packet rates: the run of day 1"), "{two}");
        assert!(two.contains("*Per-packet cost: the run of day 2"), "{two}");
        assert!(!two.contains("cost: the run of day 1"), "{two}");
        assert!(two.ends_with("## A\n\na\n"), "{two}");
        assert_eq!(update_docs(&two, None, Some(&run("day 2"))), two);
    }

    #[test]
    fn long_notes_wrap_at_spaces() {
        let lines = wrap("aaa bbb ccc ddd", 7);
        assert_eq!(lines, ["aaa bbb", "ccc ddd"]);
    }
}
