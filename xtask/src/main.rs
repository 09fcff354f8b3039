//! `cargo xtask`: the developer commands of natgw, one module per verb.
//!
//! - `provision` installs what building and testing need (Debian packages, bpf-linker).
//! - `build` builds the eBPF object and the `natgw` binary that embeds it.
//! - `test` builds, then runs rustfmt, clippy and every test in the workspace.
//! - `package` builds natgw's Debian package: the binary, the systemd unit, the
//!   configuration file, man pages and shell completions.
//! - `run` builds, starts natgw inside a testbed of network namespaces, demonstrates
//!   it with UDP and TCP traffic and shows its live mapping table until Ctrl-C.
//! - `bench` measures packets per second against the kernel's NAT, per-packet cost
//!   and natgw at a million mappings.
//! - `conformance` runs the RFC conformance suite against natgw and nftables masquerade.
//! - `fuzz` runs the cargo-fuzz targets (protocol codecs and engines, the kernel
//!   programs' packet code) for a while each and fails on a crash.
//! - `verifier` loads every program and prints the instructions the kernel's verifier
//!   processed for each, against its limit.
//!
//! `.ci/run` is `cargo xtask test`; everything CI does is stated here, in Rust.

mod bench;
mod build;
mod conformance;
mod exec;
mod fuzz;
mod package;
mod paths;
mod provision;
mod run;
mod signals;
mod test;
mod verifier;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer commands for natgw.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what `build` and `test` need (Debian packages, bpf-linker); a no-op when
    /// everything is present.
    Provision(provision::Args),
    /// Build the eBPF object and the release `natgw` binary that embeds it.
    Build(build::Args),
    /// Build, then check formatting, run clippy and run every test (needs root).
    Test(test::Args),
    /// Build natgw's Debian package (binary, systemd unit, /etc/natgw/natgw.toml, man
    /// pages, shell completions) into target/debian/.
    Package(package::Args),
    /// Build, start natgw in a testbed of network namespaces, demonstrate it with UDP and
    /// TCP traffic (first on the kernel's path, TC, as a fresh veth testbed makes it take;
    /// then on the XDP fast path, with GRO on the veths' peers), then show its live
    /// mapping table until Ctrl-C (needs root).
    Run(run::Args),
    /// Measure natgw against the kernel's NAT (packets per second, new mappings per
    /// second), per-packet cost, and a million mappings (needs root, 2 CPUs).
    Bench(bench::Args),
    /// Run the RFC 4787/5382/5508 conformance suite against natgw and the kernel's
    /// nftables masquerade, side by side (needs root).
    Conformance(conformance::Args),
    /// Run every fuzz target (or the ones named) for `--time` seconds each, on the
    /// corpus in fuzz/corpus/ and the seeds in fuzz/seeds/; fail on any crash.
    Fuzz(fuzz::Args),
    /// Load every program of the eBPF object and print the instructions the verifier
    /// processed for each, against its limit of a million (needs root).
    Verifier(verifier::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Provision(args) => provision::run(&args).map(drop),
        Command::Build(args) => build::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Package(args) => package::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Conformance(args) => conformance::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Verifier(args) => verifier::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The chain of contexts reads as "step: because: because"; a backtrace of
            // xtask itself would only bury it.
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
