//! `cargo xtask verifier [--ebpf-object FILE]`: loads every program of natgw's eBPF
//! object into the kernel and prints, per program, how many instructions the
//! verifier processed against its limit of a million, and how long it took.
//!
//! The programs that create mappings come close to that limit: the verifier walks the
//! port search once for every distinct state that reaches it, so a change far from
//! the search (a value the compiler keeps in a register across it, a check placed in
//! front of it) can multiply its cost. Run this after any change to `natgw-ebpf` or
//! to the packet code of `natgw-common`, and keep the figures in the change's record
//! (docs/benchmarks.md). Needs root (`CAP_BPF`); the maps are created small and
//! nothing is attached.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use aya::programs::Program;
use aya::EbpfLoader;
use natgw_common::maps::names;

use crate::paths;

/// The verifier's limit of processed instructions per program (`BPF_COMPLEXITY_LIMIT_INSNS`).
const LIMIT: u32 = 1_000_000;

/// Arguments of `cargo xtask verifier`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The eBPF object (default: the one `cargo xtask build` wrote).
    #[arg(long, value_name = "FILE")]
    ebpf_object: Option<PathBuf>,
}

/// `cargo xtask verifier`.
pub fn run(args: &Args) -> Result<()> {
    let object = args.ebpf_object.clone().unwrap_or_else(paths::ebpf_object);
    if !object.exists() {
        bail!(
            "{} does not exist: build it first (cargo xtask build)",
            object.display()
        );
    }
    let mut loader = EbpfLoader::new();
    // The verifier's work does not depend on capacities: keep the tables small.
    for name in [
        names::NAT_FWD,
        names::NAT_REV,
        names::NAT_SESSIONS,
        names::HOST_STATE,
        names::HOST_RELEASED,
    ] {
        loader.map_max_entries(name, 1024);
    }
    let mut ebpf = loader
        .load_file(&object)
        .with_context(|| format!("loading {} (root needed)", object.display()))?;
    let mut programs: Vec<(&str, &mut Program)> = ebpf.programs_mut().collect();
    programs.sort_by_key(|(name, _)| *name);
    println!(
        "{:<16} {:>12} {:>9} {:>9}",
        "program", "instructions", "of limit", "seconds"
    );
    let mut failed = Vec::new();
    for (name, program) in programs {
        let started = Instant::now();
        let loaded = match program {
            Program::Xdp(p) => p.load(),
            Program::SchedClassifier(p) => p.load(),
            _ => continue,
        };
        let took = started.elapsed().as_secs_f64();
        match loaded {
            Ok(()) => {
                let count = program
                    .info()
                    .ok()
                    .and_then(|info| info.verified_instruction_count());
                match count {
                    Some(n) => println!(
                        "{name:<16} {n:>12} {:>8.1}% {took:>9.2}",
                        f64::from(n) * 100.0 / f64::from(LIMIT)
                    ),
                    None => println!("{name:<16} {:>12} {:>9} {took:>9.2}", "?", "?"),
                }
            }
            Err(e) => {
                // The verifier's log ends with its verdict and the totals.
                let text = format!("{e}");
                let tail: Vec<&str> = text.lines().rev().take(4).collect();
                println!("{name:<16} {:>12} {:>9} {took:>9.2}", "REJECTED", "-");
                for line in tail.into_iter().rev() {
                    println!("    {line}");
                }
                failed.push(name.to_owned());
            }
        }
    }
    if !failed.is_empty() {
        bail!("the verifier rejected {}", failed.join(", "));
    }
    Ok(())
}
