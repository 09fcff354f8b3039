//! Ctrl-C and SIGTERM during `cargo xtask bench`: [`crate::signals`] with the bench's
//! policy ([`crate::signals::BENCH`]: the first signal stops the run after the current
//! step, a second one removes everything now) and its [`WAKE`] signal.

pub use crate::signals::{check, sleep, WAKE};

/// Installs [`WAKE`]'s handler, blocks SIGINT and SIGTERM here (and so in every thread
/// started afterwards) and starts the watcher. Call before starting other threads.
pub fn install() -> anyhow::Result<()> {
    crate::signals::install_wake()?;
    crate::signals::install(&crate::signals::BENCH)
}
