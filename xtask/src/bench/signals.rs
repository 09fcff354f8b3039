//! Ctrl-C and SIGTERM during `cargo xtask bench`: both signals are blocked in every
//! thread and taken by one watcher thread. The first raises a flag that every wait of
//! the bench checks, so the run stops at the next step and cleans up on its way out
//! (natgw stopped, programs detached, namespaces removed); a second one kills natgw,
//! removes every namespace this process created and exits with status 130.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::sys::signal::{SigSet, Signal};

/// Raised by the first signal.
static STOP: AtomicBool = AtomicBool::new(false);

/// How often interruptible sleeps look at the flag.
const POLL: Duration = Duration::from_millis(20);

/// The error a stopped step returns.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by a signal (Ctrl-C or SIGTERM)")
    }
}

impl std::error::Error for Interrupted {}

/// The signals the bench handles (children must get them unblocked).
pub fn handled() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Blocks SIGINT and SIGTERM here (and so in every thread started afterwards) and
/// starts the watcher. Call before starting other threads.
pub fn install() -> Result<()> {
    install_wake()?;
    let set = handled();
    set.thread_block().context("blocking SIGINT and SIGTERM")?;
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || loop {
            if set.wait().is_err() {
                continue;
            }
            if STOP.swap(true, Ordering::SeqCst) {
                eprintln!("xtask bench: second signal: removing everything now");
                super::daemon::kill_running();
                let _ = testbed::remove_all_registered();
                std::process::exit(130);
            }
            eprintln!("xtask bench: stopping after the current step (again to force)");
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// The signal that ends a generator's `BPF_PROG_TEST_RUN` call early.
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

/// `Err(Interrupted)` once a stop was requested.
pub fn check() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

/// Sleeps for `duration` unless a stop is requested first.
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
