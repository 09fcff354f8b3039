//! `cargo xtask test`: what CI runs (`.ci/run`). Provisions, builds natgw and its
//! Debian package (`cargo xtask package`, for tests/package.rs), then checks
//! formatting, runs clippy, builds the API docs with rustdoc's warnings as errors and
//! runs every test in the workspace — unit tests and the integration tests, which load
//! natgw into network namespaces and so need root.
//!
//! After a successful build, the fmt, clippy, doc and test steps all run even when an earlier
//! one fails, so one CI run reports every problem; the last line sums them up.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::build::{self, NATGW_EBPF_OBJ};
use crate::provision::Purpose;
use crate::{exec, package, paths};

/// Arguments of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    build: build::Args,

    /// Arguments for the test binaries, after `--`: a name filter, `--nocapture`, ...
    #[arg(last = true)]
    test_args: Vec<String>,
}

/// `cargo xtask test`.
pub fn run(args: &Args) -> Result<()> {
    if !exec::is_root() {
        bail!(
            "integration tests need root: they create network namespaces and veth pairs \
             and attach XDP/TC programs; rerun `cargo xtask test` as root"
        );
    }
    let mut steps = Steps::default();

    let artifacts = steps.run("build", || build::build_all(&args.build, Purpose::Test));
    let Some(artifacts) = artifacts else {
        return steps.finish();
    };
    // The .deb, for tests/package.rs; a failure is reported and the other steps
    // still run (the package tests then fail, naming the missing package).
    let deb = steps.run("package", package::build_deb);
    let root = paths::workspace_root();
    let cargo = || {
        let mut cmd = exec::host_cargo();
        cmd.current_dir(&root)
            .env(NATGW_EBPF_OBJ, &artifacts.ebpf_object);
        cmd
    };

    steps.run("fmt", || {
        exec::run(
            cargo().args(["fmt", "--all", "--", "--check"]),
            "checking formatting",
        )?;
        // The kernel programs are their own workspace.
        exec::run(
            cargo()
                .arg("fmt")
                .arg("--manifest-path")
                .arg(paths::workspace_root().join("natgw-ebpf/Cargo.toml"))
                .args(["--", "--check"]),
            "checking formatting of natgw-ebpf",
        )
    });
    steps.run("clippy", || {
        exec::run(
            cargo()
                .args(["clippy", "--workspace", "--all-targets"])
                .args(["--", "-D", "warnings"]),
            "running clippy on the workspace",
        )
    });
    steps.run("doc", || {
        // Broken intra-doc links are how module docs go stale.
        exec::run(
            cargo()
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings"),
            "building the API docs (rustdoc warnings are errors)",
        )
    });
    steps.run("test", || {
        let mut cmd: Command = cargo();
        // --no-fail-fast: a failing unit-test binary must not hide the integration
        // tests' results (cargo stops at the first failing binary otherwise).
        cmd.args(["test", "--workspace", "--no-fail-fast"])
            .env(testbed::NATGW_BIN_ENV, &artifacts.natgw_bin)
            .env(
                "NATGW_TEST_PYTHON",
                paths::test_python_dir().join("bin").join("python3"),
            );
        if let Some(deb) = &deb {
            cmd.env(testbed::NATGW_DEB_ENV, deb);
        }
        if !args.test_args.is_empty() {
            cmd.arg("--").args(&args.test_args);
        }
        exec::run(&mut cmd, "running the unit and integration tests")
    });
    steps.finish()
}

/// The steps run so far, for the closing summary.
#[derive(Default)]
struct Steps {
    done: Vec<Step>,
}

struct Step {
    name: &'static str,
    elapsed: Duration,
    passed: bool,
}

impl Steps {
    /// Runs one step, reporting its error right away; `None` when it failed.
    fn run<T>(&mut self, name: &'static str, step: impl FnOnce() -> Result<T>) -> Option<T> {
        let started = Instant::now();
        let result = step();
        if let Err(error) = &result {
            eprintln!("xtask: {name} failed: {error:#}");
        }
        self.done.push(Step {
            name,
            elapsed: started.elapsed(),
            passed: result.is_ok(),
        });
        result.ok()
    }

    /// Prints the summary line and fails if any step failed.
    fn finish(self) -> Result<()> {
        let timings: Vec<String> = self
            .done
            .iter()
            .map(|step| {
                let verdict = if step.passed { "ok" } else { "FAILED" };
                format!("{} {verdict} {:.0?}", step.name, step.elapsed)
            })
            .collect();
        let failed: Vec<&str> = self
            .done
            .iter()
            .filter(|step| !step.passed)
            .map(|step| step.name)
            .collect();
        if failed.is_empty() {
            println!("xtask test: passed ({})", timings.join(", "));
            Ok(())
        } else {
            println!("xtask test: FAILED ({})", timings.join(", "));
            bail!("cargo xtask test failed at: {}", failed.join(", "))
        }
    }
}
