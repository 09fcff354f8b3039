//! Running child processes: echo the command so a reader can rerun it by hand, let its
//! output stream through, and turn a failure into an error naming what was being done.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

/// The cargo that runs xtask (rustup's stable on the machines we know), for host builds.
pub fn host_cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd` to completion with stdin closed (CI has none) and its output streaming
/// through; `what` names the step in messages ("building the eBPF programs").
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    eprintln!("xtask: {what}");
    eprintln!("  $ {}", display(cmd));
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("{what}: starting `{}`", program_name(cmd)))?;
    if !status.success() {
        bail!("{what}: `{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its standard output, or `None` when it cannot be
/// started or fails; for cheap probes such as "is this toolchain installed?".
pub fn probe(cmd: &mut Command) -> Option<String> {
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether xtask runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn program_name(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// The command as a shell line: the variables it sets (except PATH, which is long and
/// rarely the point), the program and its arguments.
pub fn display(cmd: &Command) -> String {
    let envs = cmd
        .get_envs()
        .filter(|(key, _)| *key != OsStr::new("PATH"))
        .filter_map(|(key, value)| {
            value.map(|value| format!("{}={}", key.to_string_lossy(), value.to_string_lossy()))
        });
    let words = std::iter::once(program_name(cmd))
        .chain(cmd.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    envs.chain(words).collect::<Vec<_>>().join(" ")
}
