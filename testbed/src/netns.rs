//! [`Netns`]: a handle on a named network namespace and the ways to do work inside it —
//! run a closure on a thread that entered it, spawn a process in it, read and write its
//! sysctls, bind sockets that belong to it.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};
use crate::lifecycle::{create_namespace, netns_path, remove_namespace, validate_name};
use crate::registry::{register, unregister};

/// A named network namespace, mounted at `/run/netns/NAME` like iproute2's, so
/// `ip netns exec NAME ...` works on it while debugging.
///
/// A namespace created with [`Netns::create`] is *owned*: it is removed when the value
/// is dropped (also while a test unwinds from a panic). One obtained with
/// [`Netns::open`] is only borrowed and outlives the value.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
    owned: bool,
}

impl Netns {
    /// Creates a new, empty network namespace called `name` (needs root) and registers
    /// it for [`crate::remove_all_registered`]. The loopback interface is left down.
    ///
    /// Names of the form `ngw<pid>x<n>-<role>` are subject to [`crate::cleanup_stale`]
    /// once process `<pid>` has exited.
    pub fn create(name: &str) -> Result<Netns> {
        validate_name(name)?;
        // Registered before anything exists on disk, so a Ctrl-C cleanup racing this
        // call still finds it.
        register(name);
        match create_namespace(name) {
            Ok(path) => Ok(Netns {
                name: name.to_owned(),
                path,
                owned: true,
            }),
            Err(e) => {
                unregister(name);
                Err(e)
            }
        }
    }

    /// A handle on an existing namespace `/run/netns/NAME`, which is not removed on drop.
    pub fn open(name: &str) -> Result<Netns> {
        validate_name(name)?;
        let path = netns_path(name);
        File::open(&path)
            .map_err(|e| Error::os(format!("opening network namespace {}", path.display()), e))?;
        Ok(Netns {
            name: name.to_owned(),
            path,
            owned: false,
        })
    }

    /// The namespace's name (the file name under `/run/netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the namespace is mounted: `/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether dropping this value removes the namespace.
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// Stops owning the namespace: it survives this value (and this process) until it is
    /// removed by hand (`ip netns del`) or, once this process has exited, by
    /// [`crate::cleanup_stale`].
    pub fn disown(mut self) -> Netns {
        if self.owned {
            unregister(&self.name);
            self.owned = false;
        }
        Netns {
            name: std::mem::take(&mut self.name),
            path: std::mem::take(&mut self.path),
            owned: false,
        }
    }

    /// Removes the namespace now (owned or not), killing any process still inside it.
    pub fn delete(mut self) -> Result<()> {
        self.owned = false;
        unregister(&self.name);
        remove_namespace(&self.name).map(drop)
    }

    /// Removes the namespace if this value owns it and nobody (e.g.
    /// [`crate::remove_all_registered`]) removed it already. Idempotent.
    pub(crate) fn remove_if_owned(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.owned) {
            return Ok(());
        }
        if unregister(&self.name) {
            remove_namespace(&self.name)?;
        }
        Ok(())
    }

    /// Opens the namespace file, the handle `setns(2)` needs.
    pub(crate) fn open_fd(&self) -> Result<OwnedFd> {
        File::open(&self.path).map(OwnedFd::from).map_err(|e| {
            Error::os(
                format!("opening network namespace {}", self.path.display()),
                e,
            )
        })
    }

    /// A [`std::process::Command`] that runs `program` inside this namespace.
    ///
    /// The namespace file is opened now (close-on-exec) and entered with `setns(2)`
    /// between fork and exec. Only the network namespace changes: the child keeps the
    /// caller's mount namespace, so unlike `ip netns exec` `/sys/class/net` still shows
    /// the caller's interfaces (and `/sys/fs/bpf` stays the caller's). If the namespace
    /// cannot be opened, the error is reported by `spawn`/`output`/`status`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        let ns_fd = File::open(&self.path)
            .map(OwnedFd::from)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
        let enter_namespace = move || match &ns_fd {
            Ok(fd) => setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from),
            Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
        };
        // SAFETY: the closure only calls setns(2) (async-signal-safe) on an fd opened
        // before the fork, or builds an io::Error from a raw errno; it does not allocate
        // or take locks, as required between fork and exec.
        unsafe {
            command.pre_exec(enter_namespace);
        }
        command
    }

    /// Same as [`Netns::command`], for tokio.
    pub fn tokio_command(&self, program: impl AsRef<OsStr>) -> tokio::process::Command {
        tokio::process::Command::from(self.command(program))
    }

    /// Runs `f` on a fresh OS thread that has entered this namespace and returns its
    /// result. Sockets created inside belong to this namespace, also after they are
    /// returned to the caller. `f` may block or build its own tokio runtime: the thread
    /// has no runtime context, so this is fine to call from async code too (it blocks the
    /// calling thread until `f` returns).
    ///
    /// # Panics
    /// A panic in `f` is resumed on the calling thread with its original payload. Panics
    /// if the namespace cannot be entered (it was removed, or privileges were dropped);
    /// use [`Netns::try_run`] to get that as an error instead.
    pub fn run<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        match self.try_run(f) {
            Ok(value) => value,
            Err(e) => panic!("Netns::run: {}", e.chain()),
        }
    }

    /// Like [`Netns::run`], but entering the namespace (or spawning the thread) failing
    /// is returned as an error. A panic in `f` is still resumed on the calling thread.
    pub fn try_run<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let ns_fd = self.open_fd()?;
        let name = &self.name;
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name(format!("netns {name}"))
                .spawn_scoped(scope, move || {
                    setns(&ns_fd, CloneFlags::CLONE_NEWNET).map_err(|e| {
                        Error::os(format!("entering network namespace {name}"), e.into())
                    })?;
                    drop(ns_fd);
                    Ok(f())
                })
                .map_err(|e| Error::os(format!("spawning a thread for namespace {name}"), e))?;
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Writes `value` to the sysctl `key` of this namespace. `key` is a path below
    /// `/proc/sys` (`"net/ipv4/ip_forward"`); the dotted form (`"net.ipv4.ip_forward"`)
    /// is accepted when it contains no `/`.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let key = sysctl_key(key)?;
        self.try_run(|| write_sysctl_here(&self.name, &key, value))?
    }

    /// Reads the sysctl `key` of this namespace (same key syntax as
    /// [`Netns::set_sysctl`]), without the trailing newline.
    pub fn sysctl(&self, key: &str) -> Result<String> {
        let key = sysctl_key(key)?;
        self.try_run(|| {
            std::fs::read_to_string(Path::new("/proc/sys").join(&key))
                .map(|value| value.trim_end().to_owned())
                .map_err(|e| Error::os(format!("reading sysctl {key} in {}", self.name), e))
        })?
    }

    /// Binds a UDP socket to `addr` inside this namespace. The socket stays in the
    /// namespace wherever it is used afterwards, so a test can drive several namespaces
    /// from one thread.
    pub fn bind_udp(&self, addr: impl Into<SocketAddr>) -> Result<UdpSocket> {
        let addr = addr.into();
        self.try_run(|| {
            UdpSocket::bind(addr).map_err(|e| {
                Error::os(
                    format!("binding a UDP socket to {addr} in {}", self.name),
                    e,
                )
            })
        })?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = self.remove_if_owned() {
            eprintln!("testbed: removing namespace {}: {}", self.name, e.chain());
        }
    }
}

/// Normalises a sysctl key to a relative path below `/proc/sys`, rejecting anything
/// that could escape it.
fn sysctl_key(key: &str) -> Result<String> {
    let path = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    let valid = !path.contains('\0')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if valid {
        Ok(path)
    } else {
        Err(Error::InvalidSysctlKey {
            key: key.to_owned(),
        })
    }
}

/// Writes a sysctl of the namespace the calling thread is in; `key` is already normalised.
pub(crate) fn write_sysctl_here(ns_name: &str, key: &str, value: &str) -> Result<()> {
    std::fs::write(Path::new("/proc/sys").join(key), value)
        .map_err(|e| Error::os(format!("setting sysctl {key}={value} in {ns_name}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_accept_slash_and_dot_forms() {
        assert_eq!(
            sysctl_key("net/ipv4/ip_forward").ok().as_deref(),
            Some("net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_key("net.ipv4.ip_forward").ok().as_deref(),
            Some("net/ipv4/ip_forward")
        );
        // Interface names may contain dots; the slash form keeps them.
        assert_eq!(
            sysctl_key("net/ipv4/conf/eth0.5/rp_filter").ok().as_deref(),
            Some("net/ipv4/conf/eth0.5/rp_filter")
        );
    }

    #[test]
    fn sysctl_keys_cannot_escape_proc_sys() {
        for bad in [
            "",
            "/etc/passwd",
            "net/../../etc",
            "net//ipv4",
            "net/ipv4/",
            "..",
        ] {
            assert!(
                matches!(sysctl_key(bad), Err(Error::InvalidSysctlKey { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
