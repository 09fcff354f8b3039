//! Ctrl-C and SIGTERM during `cargo xtask run`.
//!
//! Both signals are blocked in every thread and taken by one watcher thread with
//! `sigwait`, so no code runs in a raw signal handler. The first signal only raises a
//! flag: the main flow notices it within a fraction of a second (every wait polls it and
//! every socket has a timeout of a few seconds), stops natgw and drops the testbed
//! itself. If that has not finished after [`GRACE`], or a second signal arrives, the
//! watcher tears everything down on its own — natgw first, then every namespace this
//! process registered — and exits with status 130.
//!
//! Children would inherit the blocked mask (`std::process::Command` keeps it), so every
//! command xtask starts from here on goes through [`unblock_in_child`]; they also get
//! process groups of their own, so a Ctrl-C typed at the terminal reaches xtask only
//! and the shutdown happens in order.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::sys::signal::{SigSet, Signal};

use super::daemon;

/// How long the main flow has to clean up after the first signal before the watcher
/// does it instead; longer than stopping natgw can take (see [`daemon::STOP_WAIT`]).
const GRACE: Duration = Duration::from_secs(20);

/// How often interruptible waits look at the flag.
const POLL: Duration = Duration::from_millis(50);

/// Exit status after a forced cleanup: 128 + SIGINT, as shells report an interrupt.
const FORCED_EXIT: i32 = 130;

/// Raised by the first SIGINT or SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

/// Held by a forced cleanup from start to `exit`, so the main flow cannot end the
/// process half-way through it (see [`settle`]).
static FORCING: Mutex<()> = Mutex::new(());

/// The error the main flow returns when a signal cut a step short.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by a signal (Ctrl-C or SIGTERM)")
    }
}

impl std::error::Error for Interrupted {}

/// Blocks SIGINT and SIGTERM in the calling thread — and so in every thread it starts
/// afterwards — and starts the watcher. Call before any other thread exists.
pub fn install() -> Result<()> {
    let signals = handled();
    signals
        .thread_block()
        .context("blocking SIGINT and SIGTERM so one thread can wait for them")?;
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || watch(signals))
        .context("starting the signal-watching thread")?;
    Ok(())
}

/// Makes the process `cmd` starts begin with SIGINT and SIGTERM unblocked, as any
/// program expects (natgw must stop on SIGTERM).
pub fn unblock_in_child(cmd: &mut Command) -> &mut Command {
    let signals = handled();
    // SAFETY: between fork and exec the closure only calls pthread_sigmask, which is
    // async-signal-safe, on a set built before the fork; it neither allocates nor locks.
    unsafe { cmd.pre_exec(move || signals.thread_unblock().map_err(io::Error::from)) }
}

/// Waits for a forced cleanup that is under way, which then exits the process; returns
/// at once otherwise. The main flow calls it after dropping the testbed, before it
/// reports and returns.
pub fn settle() {
    drop(FORCING.lock().unwrap_or_else(PoisonError::into_inner));
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once a stop was requested: `signals::check()?` between steps.
pub fn check() -> Result<()> {
    if stop_requested() {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

/// Sleeps for `duration` unless a stop is requested first; `Err(Interrupted)` then.
pub fn sleep(duration: Duration) -> Result<()> {
    let deadline = Instant::now() + duration;
    loop {
        check()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(POLL));
    }
}

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// The watcher thread: the first signal asks the main flow to stop, a second one (or
/// the main flow overrunning [`GRACE`]) forces the cleanup.
fn watch(signals: SigSet) {
    let first = match signals.wait() {
        Ok(signal) => signal,
        Err(errno) => {
            eprintln!("xtask run: waiting for signals failed ({errno}); Ctrl-C will not clean up");
            return;
        }
    };
    STOP.store(true, Ordering::SeqCst);
    eprintln!(
        "\nxtask run: {} received: stopping natgw and removing the testbed \
         (send it again to force)",
        first.as_str()
    );
    let watchdog = std::thread::Builder::new()
        .name("cleanup-watchdog".to_owned())
        .spawn(|| {
            std::thread::sleep(GRACE);
            force(&format!("cleanup still running after {GRACE:?}"));
        });
    if let Err(e) = watchdog {
        eprintln!("xtask run: starting the cleanup watchdog: {e}");
    }
    if let Ok(second) = signals.wait() {
        force(&format!("{} received again", second.as_str()));
    }
}

/// Tears everything down from the watcher thread, whatever the main flow is doing,
/// and exits.
fn force(reason: &str) -> ! {
    let _forcing = FORCING.lock().unwrap_or_else(PoisonError::into_inner);
    eprintln!("xtask run: {reason}: forcing the cleanup");
    daemon::force_stop();
    match testbed::remove_all_registered() {
        Ok(_) => eprintln!("xtask run: forced cleanup done"),
        Err(e) => eprintln!("xtask run: removing the testbed: {}", e.chain()),
    }
    std::process::exit(FORCED_EXIT)
}
