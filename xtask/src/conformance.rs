//! `cargo xtask conformance`: builds natgw, then runs the conformance suite (the
//! check library in `tests/conformance/`, through its `natgw-conformance` binary)
//! against natgw and the kernel's own NAT (nftables masquerade) on the veth testbed,
//! and prints requirement | what was sent | what each NAT showed | verdict.
//!
//! The suite runs as a separate binary of the tests package, like `xtask test` runs
//! the tests, so xtask keeps building while the crates it builds do not. It fails
//! when a natgw check fails; the nftables column is informational.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::build;
use crate::provision;
use crate::{exec, paths};

/// Which NATs to test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Nat {
    /// natgw only.
    Natgw,
    /// The kernel's NAT only: an nftables masquerade rule on the gateway's wan0.
    Nft,
    /// Both, side by side.
    Both,
}

/// Arguments of `cargo xtask conformance`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    build: build::Args,

    /// NAT(s) under test.
    #[arg(long, value_enum, default_value_t = Nat::Both)]
    nat: Nat,

    /// Run only these checks: requirement ids (`4787-REQ-8`, `"RFC 5382 REQ-4"`,
    /// `7857`) or test names.
    #[arg(long, value_name = "ID", num_args = 1..)]
    only: Vec<String>,

    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,

    /// Print a Markdown table (for the README).
    #[arg(long)]
    markdown: bool,

    /// Use this natgw binary instead of provisioning and building one.
    #[arg(long, value_name = "PATH", conflicts_with = "ebpf_toolchain")]
    natgw: Option<PathBuf>,

    /// Extra arguments for every `natgw run`, after `--` (e.g. `-- --xdp-mode skb`).
    #[arg(last = true, value_name = "NATGW_RUN_ARGS")]
    natgw_args: Vec<String>,
}

/// `cargo xtask conformance`.
pub fn run(args: &Args) -> Result<()> {
    if !exec::is_root() {
        bail!(
            "the conformance suite needs root: it creates network namespaces, loads natgw and \
             configures nftables; rerun `cargo xtask conformance` as root"
        );
    }
    let natgw_bin = if args.natgw.is_none() && args.nat == Nat::Nft {
        // The nftables column alone needs no natgw, but the suite still checks for
        // the binary's flags: point it at wherever a build would put it.
        provision::ensure_test_tools()?;
        paths::natgw_bin()
    } else {
        build::natgw_for_testbed(args.natgw.as_deref(), &args.build)?
    };
    if args.nat != Nat::Natgw && paths::find_in_path("nft").is_none() {
        bail!(
            "`nft` not found: the nftables column needs the nftables package \
             (`apt-get install nftables conntrack`), or run with `--nat natgw`"
        );
    }

    let mut cmd = exec::host_cargo();
    cmd.current_dir(paths::workspace_root())
        .args(["run", "--quiet", "--package", "natgw-integration-tests"])
        .args(["--bin", "natgw-conformance", "--"])
        .args(["--nat", nat_arg(args.nat)])
        .env("NATGW_BIN", &natgw_bin);
    if !args.only.is_empty() {
        cmd.arg("--only").args(&args.only);
    }
    if args.json {
        cmd.arg("--json");
    }
    if args.markdown {
        cmd.arg("--markdown");
    }
    if !args.natgw_args.is_empty() {
        cmd.arg("--").args(&args.natgw_args);
    }
    exec::run(&mut cmd, "running the conformance suite")
}

fn nat_arg(nat: Nat) -> &'static str {
    match nat {
        Nat::Natgw => "natgw",
        Nat::Nft => "nft",
        Nat::Both => "both",
    }
}
