//! Creating and removing named network namespaces on disk, the way iproute2's
//! `ip netns add/del` does: a namespace is kept alive by a bind mount of its nsfs
//! inode on `/run/netns/NAME`, and removed by unmounting and unlinking that file.
//!
//! No process is forked: the namespace is unshared by a short-lived thread, which is
//! safe in a multi-threaded test harness (forking one is not).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::registry::lock;

/// Where named network namespaces are mounted (same place as iproute2).
pub const NETNS_DIR: &str = "/run/netns";

/// The calling thread's own network namespace (`/proc/self` would name the main thread's).
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Set once `/run/netns` exists and is a shared mount, so the work is done once per process.
static NETNS_DIR_READY: Mutex<bool> = Mutex::new(false);

/// The mount point of the namespace called `name`.
pub(crate) fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Rejects names that cannot be a plain file name in `/run/netns`.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name == "." || name == ".." {
        "not a file name"
    } else if name.contains('/') || name.contains('\0') {
        "contains '/' or NUL"
    } else if name.len() > 255 {
        "longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidNamespaceName {
        name: name.to_owned(),
        reason,
    })
}

/// Makes `/run/netns` exist and be a shared mount, as `ip netns add` does, so that
/// namespace mounts made here are visible from other mount namespaces too.
fn prepare_netns_dir() -> Result<()> {
    let mut ready = lock(&NETNS_DIR_READY);
    if *ready {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_DIR)
        .map_err(|e| Error::os(format!("creating {NETNS_DIR}"), e))?;

    let make_shared = || {
        mount(
            None::<&str>,
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => {}
        // Not a mount point yet: bind it onto itself first, then retry.
        Err(Errno::EINVAL) => {
            mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| Error::os(format!("bind-mounting {NETNS_DIR} onto itself"), e.into()))?;
            make_shared()
                .map_err(|e| Error::os(format!("making {NETNS_DIR} a shared mount"), e.into()))?;
        }
        Err(e) => {
            return Err(Error::os(
                format!("making {NETNS_DIR} a shared mount"),
                e.into(),
            ))
        }
    }
    *ready = true;
    Ok(())
}

/// Creates a new, empty network namespace mounted at `/run/netns/NAME`.
///
/// Fails with an [`io::ErrorKind::AlreadyExists`] source if the name is taken.
pub(crate) fn create_namespace(name: &str) -> Result<PathBuf> {
    validate_name(name)?;
    prepare_netns_dir()?;
    let path = netns_path(name);

    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .map_err(|e| Error::os(format!("creating mount point {}", path.display()), e))?;

    let bound = std::thread::scope(|scope| {
        let unshare_and_bind = || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                Error::os(
                    format!("unsharing a new network namespace for {name}"),
                    e.into(),
                )
            })?;
            mount(
                Some(THREAD_NETNS),
                &path,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                Error::os(
                    format!(
                        "bind-mounting network namespace {name} on {}",
                        path.display()
                    ),
                    e.into(),
                )
            })
        };
        std::thread::Builder::new()
            .name("netns-create".to_owned())
            .spawn_scoped(scope, unshare_and_bind)
            .map_err(|e| Error::os(format!("spawning a thread to create namespace {name}"), e))
            .and_then(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
    });

    if let Err(err) = bound {
        let _ = fs::remove_file(&path);
        return Err(err);
    }
    Ok(path)
}

/// Removes the namespace called `name`: kills the processes still inside it, unmounts
/// `/run/netns/NAME` and removes the file. Interfaces inside die with the namespace once
/// nothing else (a socket, a thread) holds it.
///
/// Returns whether there was anything to remove; a namespace that is already gone is not
/// an error, so concurrent removals (Drop racing a Ctrl-C handler) are harmless.
pub(crate) fn remove_namespace(name: &str) -> Result<bool> {
    validate_name(name)?;
    let path = netns_path(name);
    kill_processes_in(&path);
    // natgw leaves its data path pinned when it stops; what it pinned for this
    // namespace goes with the namespace.
    let inode = fs::metadata(&path).ok().map(|m| m.ino());
    let _remove_runtime_dirs = RemoveOnDrop(inode);
    match umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (creation failed half-way, or already unmounted).
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(e) => {
            return Err(Error::os(
                format!("unmounting network namespace {}", path.display()),
                e.into(),
            ))
        }
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::os(format!("removing {}", path.display()), e)),
    }
}

/// Removes natgw's pin and state directories of the namespace with this inode when
/// dropped (after the namespace is gone), so no pinned maps outlive a testbed.
struct RemoveOnDrop(Option<u64>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(inode) = self.0 {
            crate::natgw::remove_runtime_dirs(inode);
        }
    }
}

/// Sends SIGKILL to every other process whose network namespace is the one mounted at
/// `ns_path`, so that a daemon a test started there cannot keep the namespace (and
/// anything attached to its interfaces) alive. Best effort: failures are ignored.
fn kill_processes_in(ns_path: &Path) {
    let Ok(target) = fs::metadata(ns_path) else {
        return;
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    let own_pid = nix::unistd::getpid();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .map(Pid::from_raw)
        else {
            continue;
        };
        if pid == own_pid {
            continue;
        }
        let Ok(ns) = fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if ns.dev() == target.dev() && ns.ino() == target.ino() {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_plain_file_names_are_rejected() {
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name("ngw1x2-gw").is_ok());
    }
}
