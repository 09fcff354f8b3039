//! `cargo xtask conformance`: builds natgw, then runs the conformance suite (the
//! `natgw-conformance` crate, through its `natgw-conformance` binary) against natgw and
//! the kernel's own NAT (nftables masquerade) on the veth testbed, and prints
//! requirement | what was sent | what each NAT showed | verdict.
//!
//! The suite's arguments are the binary's own ([`SuiteArgs`], flattened next to the
//! build options: xtask depends on the crate for them alone) and are passed on
//! unchanged. The suite itself runs as that binary — the one a developer can also run
//! by hand — like `xtask test` runs the tests. It fails when a natgw check fails; the
//! nftables column is informational.

use std::path::PathBuf;

use anyhow::{bail, Result};
use natgw_conformance::cli::{Nat, SuiteArgs};

use crate::build;
use crate::provision;
use crate::{exec, paths};

/// Arguments of `cargo xtask conformance`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    build: build::Args,

    #[command(flatten)]
    suite: SuiteArgs,

    /// Use this natgw binary instead of provisioning and building one.
    #[arg(long, value_name = "PATH", conflicts_with = "ebpf_toolchain")]
    natgw: Option<PathBuf>,
}

/// `cargo xtask conformance`.
pub fn run(args: &Args) -> Result<()> {
    if !exec::is_root() {
        bail!(
            "the conformance suite needs root: it creates network namespaces, loads natgw and \
             configures nftables; rerun `cargo xtask conformance` as root"
        );
    }
    let nat = args.suite.nat;
    let natgw_bin = if args.natgw.is_none() && nat == Nat::Nft {
        // The nftables column alone needs no natgw, but the suite still checks for
        // the binary's flags: point it at wherever a build would put it.
        provision::ensure_test_tools()?;
        paths::natgw_bin()
    } else {
        build::natgw_for_testbed(args.natgw.as_deref(), &args.build)?
    };
    if nat != Nat::Natgw && paths::find_in_path("nft").is_none() {
        bail!(
            "`nft` not found: the nftables column needs the nftables package \
             (`apt-get install nftables conntrack`), or run with `--nat natgw`"
        );
    }

    let mut cmd = exec::host_cargo();
    cmd.current_dir(paths::workspace_root())
        .args(["run", "--quiet", "--package", "natgw-conformance"])
        .args(["--bin", "natgw-conformance", "--"])
        .args(args.suite.to_args())
        .env(testbed::NATGW_BIN_ENV, &natgw_bin);
    exec::run(&mut cmd, "running the conformance suite")
}
