//! `cargo xtask fuzz [--time S] [--cmin] [TARGET...]`: runs the cargo-fuzz targets of
//! `fuzz/` (natgw-proto's codecs and engines, natgw-common's packet code) one after
//! the other, S seconds each, and fails when any of them finds a crash.
//!
//! Each target runs on two corpora: `fuzz/corpus/<target>/`, committed and grown by
//! the run (`--cmin` minimises it afterwards, to keep what is committed small), and
//! `fuzz/seeds/<target>/`, the hand-built seeds and the inputs of past crashes, which
//! libFuzzer only reads. A crash's input lands in `fuzz/artifacts/<target>/`. The
//! targets build with rustup's nightly, through cargo-fuzz (installed when missing,
//! see [`provision::ensure_fuzz_tools`]), with the address sanitizer, debug
//! assertions and overflow checks. What each target asserts is in docs/fuzzing.md.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::build::HOST_BUILD_ENV;
use crate::{exec, paths, provision};

/// A run of one input longer than this is a finding (a hang), in seconds.
const INPUT_TIMEOUT_SECS: u64 = 20;

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds to fuzz each target for.
    #[arg(long, value_name = "S", default_value_t = 60)]
    time: u64,

    /// Minimise each target's corpus (`cargo fuzz cmin`) after its run, so only inputs
    /// that add coverage stay in fuzz/corpus/.
    #[arg(long)]
    cmin: bool,

    /// Show every line libFuzzer prints (by default its NEW/REDUCE lines are left out).
    #[arg(long)]
    verbose: bool,

    /// The targets to run (default: all of them, as `cargo fuzz list` names them).
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
}

/// What one target's run came to.
#[derive(Debug, Default)]
struct Report {
    target: String,
    duration: Duration,
    executions: Option<u64>,
    corpus_before: usize,
    corpus_after: usize,
    /// Inputs libFuzzer wrote as findings (crash-, timeout-, oom-, leak-).
    artifacts: Vec<String>,
    failed: bool,
}

/// `cargo xtask fuzz`.
pub fn run(args: &Args) -> Result<()> {
    let cargo_fuzz = provision::ensure_fuzz_tools().context("provisioning cargo-fuzz")?;
    let dir = paths::workspace_root().join(paths::FUZZ_CRATE_DIR);
    let available = list_targets(&cargo_fuzz, &dir)?;
    let targets = if args.targets.is_empty() {
        available
    } else {
        for target in &args.targets {
            if !available.contains(target) {
                bail!(
                    "no fuzz target `{target}`; fuzz/Cargo.toml has: {}",
                    available.join(", ")
                );
            }
        }
        args.targets.clone()
    };

    exec::run(
        cargo_fuzz_cmd(&cargo_fuzz, &dir).arg("build"),
        "building the fuzz targets (nightly, address sanitizer, debug assertions)",
    )?;
    let mut reports = Vec::new();
    for target in &targets {
        let mut report = fuzz_one(&cargo_fuzz, &dir, target, args)?;
        if args.cmin && !report.failed {
            let corpus = dir.join("corpus").join(target);
            exec::run(
                cargo_fuzz_cmd(&cargo_fuzz, &dir)
                    .args(["cmin", target])
                    .arg(&corpus),
                &format!("minimising fuzz/corpus/{target}"),
            )?;
            report.corpus_after = count_files(&corpus);
        }
        reports.push(report);
    }

    print_summary(&reports, args.cmin.then(|| corpus_sizes(&dir, &targets)));
    let failed: Vec<&Report> = reports.iter().filter(|r| r.failed).collect();
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|r| match r.artifacts.first() {
                Some(input) => format!(
                    "{} (reproduce: cd fuzz && cargo +nightly fuzz run {} {input})",
                    r.target, r.target
                ),
                None => r.target.clone(),
            })
            .collect();
        bail!("fuzzing found a crash in {}", list.join("; "));
    }
    Ok(())
}

/// `rustup run nightly cargo-fuzz fuzz …` in `dir`, with the host build's variables
/// cleared so nothing steers the build back to stable.
fn cargo_fuzz_cmd(cargo_fuzz: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    for var in HOST_BUILD_ENV {
        cmd.env_remove(var);
    }
    cmd.current_dir(dir)
        .args(["run", provision::NIGHTLY])
        .arg(cargo_fuzz)
        .arg("fuzz");
    cmd
}

fn list_targets(cargo_fuzz: &Path, dir: &Path) -> Result<Vec<String>> {
    let listing = exec::probe(cargo_fuzz_cmd(cargo_fuzz, dir).arg("list"))
        .with_context(|| format!("`cargo fuzz list` failed in {}", dir.display()))?;
    Ok(listing
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .count()
    })
}

/// Runs `target` for `args.time` seconds and reads libFuzzer's report as it streams by.
fn fuzz_one(cargo_fuzz: &Path, dir: &Path, target: &str, args: &Args) -> Result<Report> {
    let corpus = dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = dir.join("seeds").join(target);
    let mut cmd = cargo_fuzz_cmd(cargo_fuzz, dir);
    cmd.args(["run", target]).arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={}", args.time))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1");

    let what = format!("fuzzing {target} for {} s", args.time);
    eprintln!("xtask: {what}");
    eprintln!("  $ {}", exec::display(&cmd));
    let mut report = Report {
        target: target.to_owned(),
        corpus_before: count_files(&corpus),
        ..Report::default()
    };
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{what}: starting `{}`", exec::display(&cmd)))?;
    let stderr = child.stderr.take().context("libFuzzer's stderr")?;
    for line in BufReader::new(stderr).split(b'\n') {
        let line =
            String::from_utf8_lossy(&line.context("reading libFuzzer's output")?).into_owned();
        read_line(&line, &mut report);
        if args.verbose || !is_progress_noise(&line) {
            eprintln!("{line}");
        }
    }
    let status = child.wait().with_context(|| format!("{what}: waiting"))?;
    report.duration = started.elapsed();
    report.corpus_after = count_files(&corpus);
    report.failed = !status.success();
    Ok(report)
}

/// libFuzzer's line for each input that grew or shrank the corpus
/// (`#1234\tNEW    cov: …`).
fn is_progress_noise(line: &str) -> bool {
    line.starts_with('#') && matches!(line.split_whitespace().nth(1), Some("NEW" | "REDUCE"))
}

/// Picks the numbers and findings out of one line of libFuzzer's output.
fn read_line(line: &str, report: &mut Report) {
    if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
        report.executions = n.trim().parse().ok().or(report.executions);
    } else if let Some(rest) = line.strip_prefix('#') {
        // "#123456 pulse cov: ..." / "#123456 DONE ...": executions so far.
        if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
            if report.executions.is_none_or(|seen| n > seen) {
                report.executions = Some(n);
            }
        }
    }
    if let Some((_, path)) = line.split_once("Test unit written to ") {
        let path = path.trim();
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.starts_with("slow-unit-") {
            report.artifacts.push(path.to_owned());
        }
    }
}

fn corpus_sizes(dir: &Path, targets: &[String]) -> Vec<(String, u64)> {
    targets
        .iter()
        .map(|t| {
            let corpus: PathBuf = dir.join("corpus").join(t);
            let bytes = std::fs::read_dir(&corpus).map_or(0, |entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            });
            (t.clone(), bytes)
        })
        .collect()
}

fn print_summary(reports: &[Report], minimised: Option<Vec<(String, u64)>>) {
    println!();
    println!(
        "{:<16} {:>8} {:>14} {:>9} {:>16}  findings",
        "target", "seconds", "executions", "exec/s", "corpus (new)"
    );
    for r in reports {
        let secs = r.duration.as_secs_f64();
        let (execs, rate) = match r.executions {
            Some(n) => (n.to_string(), format!("{:.0}", n as f64 / secs.max(1.0))),
            None => ("?".to_owned(), "?".to_owned()),
        };
        let grown = r.corpus_after.saturating_sub(r.corpus_before);
        let findings = match (r.failed, r.artifacts.as_slice()) {
            (false, _) => "none".to_owned(),
            (true, []) => "failed (see above)".to_owned(),
            (true, inputs) => inputs.join(", "),
        };
        println!(
            "{:<16} {:>8.0} {:>14} {:>9} {:>16}  {findings}",
            r.target,
            secs,
            execs,
            rate,
            format!("{} (+{grown})", r.corpus_after)
        );
    }
    if let Some(sizes) = minimised {
        let total: u64 = sizes.iter().map(|(_, b)| b).sum();
        println!("fuzz/corpus/ after cmin: {} KiB", total.div_ceil(1024));
    }
}
