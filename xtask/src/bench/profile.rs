//! Where a thread's time goes: `perf record` of the CPU clock on one thread (the
//! gateway's NAPI thread), summarised by symbol with `perf report`. JIT-compiled BPF
//! programs show up as `bpf_prog_<tag>_<name>`. Optional: without `perf` (Debian's
//! `linux-perf`) the bench says so and goes on.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// Symbols at or above this share are listed.
const MIN_PERCENT: f64 = 1.0;
/// Sampling frequency (Hz).
const FREQUENCY: &str = "4999";

/// One line of the profile.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    /// Share of the samples, in percent.
    pub percent: f64,
    /// Kernel symbol (or BPF program).
    pub symbol: String,
}

/// Whether `perf` can be run.
pub fn available() -> bool {
    Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Samples thread `tid` for `duration` and returns its symbols by share. JIT-compiled
/// BPF code appears as `bpf_prog_<tag>_<function>` (one symbol per BPF function); it
/// is labelled with `bpf_label`, the program the thread runs.
pub fn record(tid: i32, duration: Duration, data: &Path, bpf_label: &str) -> Result<Vec<Entry>> {
    let status = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", FREQUENCY, "-t"])
        .arg(tid.to_string())
        .arg("-o")
        .arg(data)
        .args(["--", "sleep"])
        .arg(format!("{:.3}", duration.as_secs_f64()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running perf record")?;
    if !status.success() {
        bail!("perf record failed ({status})");
    }
    let out = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "--sort",
            "symbol",
            "-i",
        ])
        .arg(data)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running perf report")?;
    let _ = std::fs::remove_file(data);
    let mut entries = parse(&String::from_utf8_lossy(&out.stdout));
    for e in &mut entries {
        if e.symbol.starts_with("bpf_prog_") {
            e.symbol = format!("{bpf_label}: {}", e.symbol);
        }
    }
    Ok(entries)
}

/// `   21.74%  [k] states_equal` lines.
fn parse(report: &str) -> Vec<Entry> {
    report
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let (pct, rest) = l.trim().split_once('%')?;
            let percent: f64 = pct.trim().parse().ok()?;
            let symbol = rest
                .trim()
                .trim_start_matches("[k]")
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            (percent >= MIN_PERCENT && !symbol.is_empty()).then_some(Entry { percent, symbol })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_become_entries() {
        let text = "# Overhead  Symbol\n    21.74%  [k] states_equal   -  -\n     0.50%  [k] tiny\n     7.59%  [k] bpf_prog_1234_xdp_lan\n";
        let e = parse(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].symbol, "states_equal");
        assert!((e[1].percent - 7.59).abs() < 1e-9);
    }
}
