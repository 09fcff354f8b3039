//! Ctrl-C and SIGTERM during the verbs that build testbeds (`cargo xtask run` and
//! `cargo xtask bench`).
//!
//! Both signals are blocked in every thread and taken by one watcher thread with
//! `sigwait`, so no code runs in a raw signal handler. The first signal only raises a
//! flag: the main flow notices it within a fraction of a second (every wait polls it and
//! every socket has a timeout of a few seconds), stops natgw and drops its namespaces
//! itself. If a second signal arrives, or (where the verb sets a [`Verb::grace`]) the
//! main flow has not finished in time, the watcher tears everything down on its own —
//! every natgw this process started first ([`testbed::natgw::force_stop_all`]), then
//! every namespace it registered — and exits with status 130.
//!
//! Children would inherit the blocked mask (`std::process::Command` keeps it), so every
//! command xtask starts from here on goes through [`unblock_in_child`] (natgw itself is
//! started by [`testbed::Natgw`], which does the same); they also get process groups of
//! their own, so a Ctrl-C typed at the terminal reaches xtask only and the shutdown
//! happens in order.
//!
//! [`WAKE`] is the bench's: a signal whose only effect is to end a blocking call.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::sys::signal::{SigSet, Signal};

/// How a verb reacts to the signals.
#[derive(Debug)]
pub struct Verb {
    /// The verb, for messages (`xtask run: ...`).
    pub name: &'static str,
    /// What the first signal makes the main flow do, for the message it prints.
    pub on_first: &'static str,
    /// How long the main flow has to clean up after the first signal before the watcher
    /// does it instead; `None`: until a second signal.
    pub grace: Option<Duration>,
}

/// `cargo xtask run`: the main flow stops natgw and removes the testbed; 20 s is
/// longer than stopping natgw can take (see `run::daemon::STOP_WAIT`).
pub const RUN: Verb = Verb {
    name: "run",
    on_first: "stopping natgw and removing the testbed",
    grace: Some(Duration::from_secs(20)),
};

/// `cargo xtask bench`: the run stops at the next step and cleans up on its way out
/// (natgw stopped, programs detached, namespaces removed), which may take a while.
pub const BENCH: Verb = Verb {
    name: "bench",
    on_first: "stopping after the current step",
    grace: None,
};

/// How often interruptible waits look at the flag.
const POLL: Duration = Duration::from_millis(20);

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
/// afterwards — and starts the watcher for `verb`. Call before any other thread exists.
pub fn install(verb: &'static Verb) -> Result<()> {
    let signals = handled();
    signals
        .thread_block()
        .context("blocking SIGINT and SIGTERM so one thread can wait for them")?;
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || watch(verb, signals))
        .context("starting the signal-watching thread")?;
    Ok(())
}

/// Makes the process `cmd` starts begin with SIGINT and SIGTERM unblocked, as any
/// program expects.
pub fn unblock_in_child(cmd: &mut Command) -> &mut Command {
    let signals = handled();
    // SAFETY: between fork and exec the closure only calls pthread_sigmask, which is
    // async-signal-safe, on a set built before the fork; it neither allocates nor locks.
    unsafe { cmd.pre_exec(move || signals.thread_unblock().map_err(io::Error::from)) }
}

/// Waits for a forced cleanup that is under way, which then exits the process; returns
/// at once otherwise. The main flow calls it after dropping its namespaces, before it
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

/// The signals the watcher takes.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// The watcher thread: the first signal asks the main flow to stop, a second one (or
/// the main flow overrunning the verb's grace) forces the cleanup.
fn watch(verb: &'static Verb, signals: SigSet) {
    let first = match signals.wait() {
        Ok(signal) => signal,
        Err(errno) => {
            eprintln!(
                "xtask {}: waiting for signals failed ({errno}); Ctrl-C will not clean up",
                verb.name
            );
            return;
        }
    };
    STOP.store(true, Ordering::SeqCst);
    eprintln!(
        "\nxtask {}: {} received: {} (send it again to force)",
        verb.name,
        first.as_str(),
        verb.on_first
    );
    if let Some(grace) = verb.grace {
        let watchdog = std::thread::Builder::new()
            .name("cleanup-watchdog".to_owned())
            .spawn(move || {
                std::thread::sleep(grace);
                force(verb, &format!("cleanup still running after {grace:?}"));
            });
        if let Err(e) = watchdog {
            eprintln!("xtask {}: starting the cleanup watchdog: {e}", verb.name);
        }
    }
    if let Ok(second) = signals.wait() {
        force(verb, &format!("{} received again", second.as_str()));
    }
}

/// Tears everything down from the watcher thread, whatever the main flow is doing,
/// and exits.
fn force(verb: &Verb, reason: &str) -> ! {
    let _forcing = FORCING.lock().unwrap_or_else(PoisonError::into_inner);
    eprintln!("xtask {}: {reason}: forcing the cleanup", verb.name);
    testbed::natgw::force_stop_all();
    match testbed::remove_all_registered() {
        Ok(_) => eprintln!("xtask {}: forced cleanup done", verb.name),
        Err(e) => eprintln!(
            "xtask {}: removing the namespaces: {}",
            verb.name,
            e.chain()
        ),
    }
    std::process::exit(FORCED_EXIT)
}

/// The signal that ends a bench generator's `BPF_PROG_TEST_RUN` call early.
pub const WAKE: Signal = Signal::SIGUSR1;

extern "C" fn ignore(_: libc::c_int) {}

/// Installs a handler for [`WAKE`] that does nothing, without `SA_RESTART`: the
/// signal's only effect is that a blocking call in the thread it hits returns `EINTR`.
pub fn install_wake() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler};
    let action = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, which is async-signal-safe.
    unsafe { sigaction(WAKE, &action) }.context("installing the SIGUSR1 handler")?;
    Ok(())
}
