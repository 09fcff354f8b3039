//! `natgw-conformance`: runs the conformance suite against natgw and/or the kernel's
//! nftables masquerade and prints the table. `cargo xtask conformance` builds natgw
//! and runs this; run by hand, set `NATGW_BIN` to the natgw binary first. The
//! command line is [`natgw_conformance::cli::SuiteArgs`].
//!
//! Exits 1 when a natgw check fails (nftables results are informational), 2 on a
//! usage error.

use std::process::ExitCode;

use clap::Parser;
use natgw_conformance::cli::{Nat, SuiteArgs};
use natgw_conformance::{report, NatUnderTest, Verdict};

/// Conformance of natgw (and of the kernel's NAT) to RFC 4787, 5382/7857 and 5508,
/// observed on a veth testbed (needs root).
#[derive(Debug, Parser)]
#[command(name = "natgw-conformance")]
struct Cli {
    #[command(flatten)]
    suite: SuiteArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse().suite;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("natgw-conformance needs root: it builds network namespaces and loads natgw");
        return ExitCode::from(2);
    }
    let checks: Vec<_> = natgw_conformance::all()
        .into_iter()
        .filter(|c| cli.only.is_empty() || cli.only.iter().any(|q| c.matches(q)))
        .collect();
    if checks.is_empty() {
        eprintln!("no check matches {:?}; the ids are:", cli.only);
        for c in natgw_conformance::all() {
            eprintln!("  {:<24} {}", c.id, c.test);
        }
        return ExitCode::from(2);
    }
    let mut nats = Vec::new();
    if cli.nat != Nat::Nft {
        nats.push(NatUnderTest::Natgw {
            extra_args: cli.natgw_args.clone(),
        });
    }
    if cli.nat != Nat::Natgw {
        nats.push(NatUnderTest::NftMasquerade);
    }
    // A check that panics is reported in the table; the default hook would also
    // print the panic in the middle of the progress lines.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let rows = report::run(&checks, &nats);
    std::panic::set_hook(hook);
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::to_json(&rows)).unwrap_or_default()
        );
    } else if cli.markdown {
        print!("{}", report::markdown(&rows));
    } else {
        print!("{}", report::text(&rows));
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|row| {
            row.results
                .iter()
                .any(|(nat, r)| *nat == "natgw" && r.verdict == Verdict::Fail)
        })
        .map(|row| row.check.id)
        .collect();
    for (nat, _) in rows.first().map_or(&[][..], |r| &r.results[..]) {
        let count = |v: &str| {
            rows.iter()
                .filter(|row| {
                    row.results
                        .iter()
                        .any(|(n, r)| n == nat && r.verdict.label() == v)
                })
                .count()
        };
        eprintln!(
            "{nat}: {} pass, {} fail, {} n/a",
            count("PASS"),
            count("FAIL"),
            count("n/a")
        );
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("natgw fails: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
