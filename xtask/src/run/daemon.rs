//! natgw as `cargo xtask run` runs it: [`testbed::Natgw`] in the testbed's gateway
//! namespace with its log in the target directory, the command line printed for the
//! reader, Ctrl-C honoured while it starts, CLI calls with a time limit, and a stop
//! that says how natgw ended — before the testbed is removed, because removing a
//! namespace SIGKILLs whatever still runs inside. What natgw leaves in
//! [`PIN_ROOT`] and [`STATE_ROOT`] when it is killed is removed with it.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Result;
use testbed::{NatgwError, Netns};

pub use testbed::natgw::{PIN_ROOT, STATE_ROOT};

use crate::signals;

/// How long natgw may take to exit after SIGTERM before it is killed.
pub const STOP_WAIT: Duration = Duration::from_secs(10);

/// How long natgw may take to load its programs and answer `natgw status`: loading runs
/// the verifier over every program, about 3–6 s on an idle 2-core machine and 9 s or
/// more when builds or tests run beside it (10 s was too short there). A natgw that is
/// quick is waited for no longer; a slow one shows its progress every
/// [`PROGRESS_EVERY`].
pub const READY_WAIT: Duration = Duration::from_secs(120);

/// How often a wait for natgw says it is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How much of natgw's last log line a progress line quotes.
const PROGRESS_LOG_CHARS: usize = 100;

/// Time limit of one `natgw status` / `natgw mappings` call.
const CLI_WAIT: Duration = Duration::from_secs(5);

/// How much of natgw's log a failure shows.
const LOG_TAIL_LINES: usize = 30;

/// natgw's per-namespace directories for the testbed's gateway, which are this run's
/// alone (the namespace is new), for the report after natgw stopped.
static RUNTIME_DIRS: OnceLock<[PathBuf; 2]> = OnceLock::new();

/// `natgw run` in the gateway namespace; stopped with SIGTERM when dropped.
pub struct Natgw(testbed::Natgw);

impl Natgw {
    /// Starts `natgw run --wan wan0 --lan lan0 --lan lan1 EXTRA...` in `gateway`, with
    /// stdout and stderr going to `log`, and waits until `natgw status` succeeds.
    pub fn start(bin: &Path, gateway: &Netns, extra: &[String], log: &Path) -> Result<Natgw> {
        let _ = RUNTIME_DIRS.set(testbed::natgw::runtime_dirs(gateway)?);
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
        let builder = testbed::Natgw::builder(bin)
            .args(extra)
            .log(log)
            .rust_log(Some(&rust_log))
            .ready_within(READY_WAIT)
            .stop_within(STOP_WAIT)
            .cli_within(CLI_WAIT)
            .log_lines_in_errors(LOG_TAIL_LINES)
            .own_process_group()
            .remove_leftovers()
            .interrupted_by(signals::stop_requested);
        println!(
            "Starting natgw in the gateway namespace; its log: {}",
            log.display()
        );
        println!(
            "  $ RUST_LOG={rust_log} ip netns exec {} {} {} >{} 2>&1",
            gateway.name(),
            bin.display(),
            builder.run_args().join(" "),
            log.display()
        );
        let mut natgw = builder.spawn(gateway)?;
        let took = wait_ready(&mut natgw)?;
        println!(
            "natgw is ready (`natgw status` answered after {:.1} s)",
            took.as_secs_f64()
        );
        Ok(Natgw(natgw))
    }

    /// Runs `natgw ARGS` and returns its standard output, failing with its standard error
    /// when it exits non-zero.
    pub fn cli_text(&self, args: &[&str]) -> Result<String, NatgwError> {
        self.0.cli_text(args)
    }

    /// `Some(status)` once natgw has exited (on its own: it is still ours to stop).
    pub fn exited(&mut self) -> Result<Option<ExitStatus>, NatgwError> {
        self.0.exited()
    }

    /// The natgw binary.
    pub fn bin(&self) -> &Path {
        self.0.bin()
    }

    /// natgw's log file.
    pub fn log_path(&self) -> &Path {
        self.0.log_path()
    }

    /// The last lines of natgw's log, indented, for error messages.
    pub fn log_tail(&self) -> String {
        self.0.log_tail(LOG_TAIL_LINES)
    }

    /// Stops natgw: SIGTERM, up to [`STOP_WAIT`] to exit, then SIGKILL. Fails when it had
    /// already exited or did not exit cleanly.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(status) = self.0.stop_cleanly()? {
            say!("natgw stopped (SIGTERM, {status})");
        }
        Ok(())
    }
}

impl Drop for Natgw {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            esay!("xtask run: stopping natgw: {e:#}");
        }
    }
}

/// Waits until `natgw` answers `natgw status` (its control socket is up: the programs
/// are loaded and attached), at most its builder's `ready_within`, printing a line with
/// the time waited and natgw's last log line every [`PROGRESS_EVERY`] meanwhile.
pub fn wait_ready(natgw: &mut testbed::Natgw) -> Result<Duration> {
    let ns = natgw.namespace().name().to_owned();
    let log = natgw.log_path().to_owned();
    let (done, finished) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let started = Instant::now();
            while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(PROGRESS_EVERY) {
                say!(
                    "  ... natgw in {ns} is still starting ({:.0} s); its log ends with: {}",
                    started.elapsed().as_secs_f64(),
                    last_line(&log)
                );
            }
        });
        let outcome = natgw.wait_ready().map_err(interrupted_or);
        drop(done);
        outcome
    })
}

/// The last non-empty line of the file at `log`, shortened to [`PROGRESS_LOG_CHARS`].
fn last_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let Some(line) = text.lines().rev().find(|line| !line.trim().is_empty()) else {
        return "(nothing yet)".to_owned();
    };
    let mut short: String = line.chars().take(PROGRESS_LOG_CHARS).collect();
    if short.len() < line.len() {
        short.push_str(" ...");
    }
    short
}

/// `e`, or [`signals::Interrupted`] when a signal cut natgw's start short.
pub fn interrupted_or(e: NatgwError) -> anyhow::Error {
    match e {
        NatgwError::Interrupted => signals::Interrupted.into(),
        e => anyhow::Error::new(e),
    }
}

/// natgw's directories for the testbed's gateway that still exist.
pub fn leftovers() -> Vec<PathBuf> {
    RUNTIME_DIRS
        .get()
        .into_iter()
        .flatten()
        .filter(|dir| dir.exists())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_testbed_knows_where_natgw_pins_its_maps() {
        assert_eq!(testbed::natgw::PIN_ROOT, natgw_common::maps::PIN_DIR);
    }
}
