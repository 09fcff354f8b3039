//! Namespace naming, the process-wide registry of live namespaces and the two ways of
//! removing namespaces that a `Drop` did not: [`remove_all_registered`] (this process,
//! e.g. on Ctrl-C) and [`cleanup_stale`] (leftovers of processes that were killed).
//!
//! Names are `ngw<pid>x<counter>-<role>`, e.g. `ngw4242x3-gw`: the creator's pid makes
//! names unique across processes running in parallel and tells [`cleanup_stale`] whether
//! the creator is still alive; the counter makes them unique within a process.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::lifecycle::{remove_namespace, NETNS_DIR};

/// Every namespace name this crate generates starts with this.
pub const NAME_PREFIX: &str = "ngw";

/// Namespaces created (and still owned) by this process.
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Counter part of the next testbed id.
static NEXT_TESTBED: AtomicU32 = AtomicU32::new(1);

/// Locks `mutex`, ignoring poisoning: the guarded data stay consistent because no
/// code path panics while holding these locks.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fresh `ngw<pid>x<counter>` id; namespace names append `-<role>`.
pub(crate) fn next_testbed_id() -> String {
    let counter = NEXT_TESTBED.fetch_add(1, Ordering::Relaxed);
    format!("{NAME_PREFIX}{}x{counter}", std::process::id())
}

/// How many testbed ids to try when a name is taken (a stale namespace from a dead
/// process that had the same pid).
const NAME_ATTEMPTS: usize = 8;

/// Runs `create` with fresh testbed ids until it does not fail on a namespace name
/// that is already taken (at most [`NAME_ATTEMPTS`] times).
pub(crate) fn with_fresh_id<T>(create: impl Fn(&str) -> Result<T>) -> Result<T> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match create(&next_testbed_id()) {
            Err(e) if is_already_exists(&e) && attempt < NAME_ATTEMPTS => continue,
            result => return result,
        }
    }
}

/// Whether `e` reports that a namespace name is already taken.
pub(crate) fn is_already_exists(e: &Error) -> bool {
    matches!(e, Error::Os { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
}

/// Records that this process owns namespace `name`.
pub(crate) fn register(name: &str) {
    lock(&LIVE).insert(name.to_owned());
}

/// Forgets `name`; returns whether it was registered (so exactly one caller removes it).
pub(crate) fn unregister(name: &str) -> bool {
    lock(&LIVE).remove(name)
}

/// Names of the namespaces this process created and has not removed yet.
pub fn registered_namespaces() -> Vec<String> {
    lock(&LIVE).iter().cloned().collect()
}

/// Removes every namespace this process created and still owns (all live testbeds).
///
/// Meant for a binary such as `cargo xtask run` that must not leave namespaces behind
/// when the user presses Ctrl-C and the `Testbed` value would otherwise never be dropped
/// (e.g. because the handler ends with `std::process::exit`). Call it from ordinary
/// code — a thread waiting on `tokio::signal::ctrl_c()` or a `ctrlc`-style handler
/// thread — never from a raw async signal handler: it allocates and takes a lock.
///
/// ```no_run
/// std::thread::spawn(|| {
///     let runtime = tokio::runtime::Builder::new_current_thread()
///         .enable_all()
///         .build()
///         .expect("runtime for the Ctrl-C handler");
///     if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
///         if let Err(e) = testbed::remove_all_registered() {
///             eprintln!("cleanup: {}", e.chain());
///         }
///         std::process::exit(130);
///     }
/// });
/// ```
///
/// Testbeds dropped afterwards notice that their namespaces are gone and do nothing.
/// Every namespace is attempted; returns how many were removed, or the first error.
pub fn remove_all_registered() -> Result<usize> {
    let names = std::mem::take(&mut *lock(&LIVE));
    remove_each(names)
}

/// Removes each named namespace, attempting all; returns the count or the first error.
fn remove_each(names: impl IntoIterator<Item = String>) -> Result<usize> {
    let mut removed = 0;
    let mut first_error = None;
    for name in names {
        match remove_namespace(&name) {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(removed), Err)
}

/// The creator pid encoded in a name of the form `ngw<pid>x<counter>-<role>`.
pub(crate) fn creator_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, rest) = rest.split_once('x')?;
    let (counter, role) = rest.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(pid) || !all_digits(counter) || role.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Whether a process with this pid is running. `kill(pid, 0)` answers for most cases
/// (`EPERM` still means it exists); a zombie — killed but not yet reaped, which can last
/// a while under some init processes — counts as dead, since it has left its namespaces.
fn process_is_alive(pid: i32) -> bool {
    if matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH)) {
        return false;
    }
    let state = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Format: "pid (comm) state ...", and comm may itself contain ") ".
            let (_, after_comm) = stat.rsplit_once(") ")?;
            after_comm.chars().next()
        });
    !matches!(state, Some('Z' | 'X'))
}

/// Removes namespaces under `/run/netns` whose name carries this crate's prefix and a
/// creator pid that no longer exists (left behind by a killed run). Namespaces of live
/// processes — including this one — are never touched. Processes still running inside
/// a stale namespace are killed.
///
/// Returns how many namespaces were removed; every candidate is attempted and the first
/// failure is returned.
pub fn cleanup_stale() -> Result<usize> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::os(format!("listing {NETNS_DIR}"), e)),
    };
    let stale = entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| creator_pid(name).is_some_and(|pid| !process_is_alive(pid)));
    remove_each(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creator_pid_is_parsed_from_generated_names() {
        assert_eq!(creator_pid("ngw4242x3-gw"), Some(4242));
        assert_eq!(creator_pid(&format!("{}-lana", next_testbed_id())), {
            i32::try_from(std::process::id()).ok()
        });
    }

    #[test]
    fn foreign_names_have_no_creator_pid() {
        for name in [
            "ngw",
            "ngwx1-gw",
            "ngw12x-gw",
            "ngw12x3",
            "ngw12x3-",
            "ngw1a2x3-gw",
            "blue",
            "xngw12x3-gw",
            "ngw99999999999x1-gw",
        ] {
            assert_eq!(creator_pid(name), None, "{name}");
        }
    }

    #[test]
    fn this_process_is_alive() {
        let pid = i32::try_from(std::process::id()).unwrap_or(1);
        assert!(process_is_alive(pid));
    }

    #[test]
    fn an_unreaped_child_counts_as_dead() -> std::io::Result<()> {
        let mut child = std::process::Command::new("true").spawn()?;
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        // Wait for it to exit without reaping it.
        let exited = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            !process_is_alive(pid)
        });
        child.wait()?;
        assert!(exited, "zombie {pid} reported alive");
        Ok(())
    }

    #[test]
    fn testbed_ids_are_unique() {
        assert_ne!(next_testbed_id(), next_testbed_id());
    }
}
