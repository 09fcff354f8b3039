//! Where a running gateway leaves what `natgw status` and `natgw mappings` read: the
//! pinned maps under `/sys/fs/bpf/natgw/net-<netns inode>/` and a JSON state file
//! under `/run/natgw/net-<netns inode>/`, plus the lock that keeps one daemon per
//! network namespace.
//!
//! Both roots are shared by every network namespace of the machine (tests run several
//! gateways side by side), hence the per-namespace directories. The state file cannot
//! live next to the pins: bpffs holds only BPF objects, directories and symlinks.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Root of the per-namespace state directories.
pub const STATE_ROOT: &str = "/run/natgw";
const STATE_FILE: &str = "state.json";
const EXPLICIT_FILE: &str = "explicit.json";
const LOCK_FILE: &str = "lock";
const SYSCTL_FILE: &str = "sysctl-restore.json";

/// The directories of the gateway of one network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeDirs {
    /// Inode of the network namespace.
    pub netns_inode: u64,
    /// Where the maps are pinned.
    pub pin_dir: PathBuf,
    /// Where the state file and lock live.
    pub state_dir: PathBuf,
}

/// What can go wrong with the runtime state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another natgw holds the namespace.
    #[error(
        "natgw is already running in this network namespace (pid {}); stop it first",
        .pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
    )]
    AlreadyRunning {
        /// Its pid, when the state file says.
        pid: Option<u32>,
    },
    /// No gateway runs here.
    #[error(
        "natgw is not running in this network namespace (net:[{netns}]): no {}",
        .path.display()
    )]
    NotRunning {
        /// Namespace inode.
        netns: u64,
        /// The missing state file.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The state file does not parse.
    #[error("state file {} is unreadable: {source}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: serde_json::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_owned();
    move |source| StateError::Io { what, path, source }
}

/// Reads a JSON file; `T::default()` when it does not exist.
fn read_json_or_default<T: DeserializeOwned + Default>(path: PathBuf) -> Result<T, StateError> {
    match fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text).map_err(|source| StateError::Corrupt { path, source })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(io_err("reading", &path)(e)),
    }
}

/// Writes `value` as JSON to `path` atomically (a temporary file in `dir`, then
/// rename), so readers never see half of it.
fn write_json_atomic<T: Serialize + ?Sized>(
    dir: &Path,
    path: &Path,
    value: &T,
) -> Result<(), StateError> {
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!("{name}.tmp"));
    let mut json = serde_json::to_vec_pretty(value).map_err(|source| StateError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    json.push(b'\n');
    fs::write(&tmp, json).map_err(io_err("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming into", path))
}

impl RuntimeDirs {
    /// The directories for network namespace `netns_inode`.
    #[must_use]
    pub fn new(pin_root: &Path, state_root: &Path, netns_inode: u64) -> Self {
        let name = format!("net-{netns_inode}");
        Self {
            netns_inode,
            pin_dir: pin_root.join(&name),
            state_dir: state_root.join(name),
        }
    }

    /// The default locations for the current network namespace.
    pub fn for_current_netns() -> Result<Self, crate::datapath::system::SystemError> {
        Ok(Self::new(
            Path::new(natgw_common::maps::PIN_DIR),
            Path::new(STATE_ROOT),
            crate::datapath::system::netns_inode()?,
        ))
    }

    /// The JSON state file.
    #[must_use]
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join(STATE_FILE)
    }

    /// Pin path of map `name`.
    #[must_use]
    pub fn pin_path(&self, name: &str) -> PathBuf {
        self.pin_dir.join(name)
    }

    /// Takes the per-namespace lock, held as long as the returned value lives.
    pub fn lock(&self) -> Result<InstanceLock, StateError> {
        fs::create_dir_all(&self.state_dir).map_err(io_err("creating", &self.state_dir))?;
        // Root's alone: the explicit mappings file holds PCP clients' nonces.
        fs::set_permissions(&self.state_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("restricting", &self.state_dir))?;
        let path = self.state_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(InstanceLock { _lock: lock, path }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                /// The one field of the holder's state file needed here.
                #[derive(Deserialize)]
                struct Holder {
                    pid: u32,
                }
                Err(StateError::AlreadyRunning {
                    pid: self.read_state::<Holder>().ok().map(|h| h.pid),
                })
            }
            Err((_, errno)) => Err(StateError::Io {
                what: "locking",
                path,
                source: errno.into(),
            }),
        }
    }

    /// Reads the state file (its format is the daemon's, `daemon::state`).
    ///
    /// # Errors
    /// [`StateError::NotRunning`] when there is none; unreadable or not `T`.
    pub fn read_state<T: DeserializeOwned>(&self) -> Result<T, StateError> {
        let path = self.state_file();
        match fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|source| StateError::Corrupt { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StateError::NotRunning {
                netns: self.netns_inode,
                path,
            }),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    /// Writes the state file atomically.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn write_state<T: Serialize + ?Sized>(&self, state: &T) -> Result<(), StateError> {
        write_json_atomic(&self.state_dir, &self.state_file(), state)
    }

    /// Names of the entries in the pin directory (empty when it does not exist).
    pub fn existing_pins(&self) -> Vec<String> {
        fs::read_dir(&self.pin_dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Creates the pin directory.
    pub fn create_pin_dir(&self) -> Result<(), StateError> {
        fs::create_dir_all(&self.pin_dir).map_err(io_err("creating", &self.pin_dir))
    }

    /// Removes every pin and the pin directory, and the parent `natgw` directory if
    /// no other namespace uses it. Returns the first error but tries everything.
    pub fn remove_pins(&self) -> Result<(), StateError> {
        let mut first = None;
        if let Ok(rd) = fs::read_dir(&self.pin_dir) {
            for entry in rd.filter_map(Result::ok) {
                let path = entry.path();
                if let Err(e) = fs::remove_file(&path) {
                    first.get_or_insert(io_err("removing", &path)(e));
                }
            }
        }
        match fs::remove_dir(&self.pin_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                first.get_or_insert(io_err("removing", &self.pin_dir)(e));
            }
        }
        if let Some(parent) = self.pin_dir.parent() {
            // Fails harmlessly while another namespace's gateway runs.
            let _ = fs::remove_dir(parent);
        }
        first.map_or(Ok(()), Err)
    }

    /// Removes the state file and the explicit mappings file (the lock file goes
    /// with the [`InstanceLock`]).
    pub fn remove_state(&self) -> Result<(), StateError> {
        let mut first = None;
        for path in [self.explicit_file(), self.state_file()] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first.get_or_insert(io_err("removing", &path)(e));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The JSON file of explicit mappings.
    #[must_use]
    pub fn explicit_file(&self) -> PathBuf {
        self.state_dir.join(EXPLICIT_FILE)
    }

    /// Writes the explicit mappings file atomically (its records are
    /// `nat_table::explicit::ExplicitEntry`).
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn write_explicit<T: Serialize>(&self, entries: &[T]) -> Result<(), StateError> {
        write_json_atomic(&self.state_dir, &self.explicit_file(), entries)
    }

    /// Reads the explicit mappings file; none when it does not exist (a natgw that
    /// has none, or predates the file).
    ///
    /// # Errors
    /// Unreadable, or not a list of `T`.
    pub fn read_explicit<T: DeserializeOwned>(&self) -> Result<Vec<T>, StateError> {
        read_json_or_default(self.explicit_file())
    }
}

impl RuntimeDirs {
    /// Reads record `name` from the state directory; `None` when there is none.
    ///
    /// # Errors
    /// Unreadable, or not a `T`.
    pub fn read_record<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StateError> {
        read_json_or_default::<Option<T>>(self.state_dir.join(name))
    }

    /// Writes record `name` to the state directory atomically.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn write_record<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), StateError> {
        fs::create_dir_all(&self.state_dir).map_err(io_err("creating", &self.state_dir))?;
        write_json_atomic(&self.state_dir, &self.state_dir.join(name), value)
    }

    /// Removes record `name`, if there is one.
    ///
    /// # Errors
    /// When it exists and cannot be removed.
    pub fn remove_record(&self, name: &str) -> Result<(), StateError> {
        let path = self.state_dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &path)(e)),
        }
    }

    /// The file of sysctl values natgw changed, with the values to put back. It is
    /// written before a value changes and removed once it is restored, so a natgw that
    /// dies in between leaves it for the next start to restore.
    #[must_use]
    pub fn sysctl_file(&self) -> PathBuf {
        self.state_dir.join(SYSCTL_FILE)
    }

    /// The sysctl values to restore (sysctl name → original value); none when there
    /// is no file.
    pub fn read_sysctl_restore(&self) -> Result<BTreeMap<String, String>, StateError> {
        read_json_or_default(self.sysctl_file())
    }

    /// Records the sysctl values to restore (atomically); an empty set removes the
    /// file.
    pub fn write_sysctl_restore(
        &self,
        values: &BTreeMap<String, String>,
    ) -> Result<(), StateError> {
        let path = self.sysctl_file();
        if values.is_empty() {
            return match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("removing", &path)(e)),
            };
        }
        write_json_atomic(&self.state_dir, &path, values)
    }
}

/// The per-namespace lock. Dropping it removes the lock file and the state directory
/// (when empty), then releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dirs(tag: &str) -> RuntimeDirs {
        let root =
            std::env::temp_dir().join(format!("natgw-state-test-{}-{tag}", std::process::id()));
        RuntimeDirs::new(&root.join("pins"), &root.join("run"), 4_026_531_840)
    }

    #[test]
    fn explicit_mappings_file_round_trips_and_goes_with_the_state() {
        let d = dirs("explicit");
        let lock = d.lock().unwrap();
        assert!(
            d.read_explicit::<serde_json::Value>().unwrap().is_empty(),
            "none written yet"
        );
        let entries = vec![json!({"protocol": "udp", "internal": "10.0.1.2:5000"})];
        d.write_explicit(&entries).unwrap();
        assert_eq!(d.read_explicit::<serde_json::Value>().unwrap(), entries);
        d.remove_state().unwrap();
        assert!(!d.explicit_file().exists());
        drop(lock);
        assert!(!d.state_dir.exists(), "nothing left behind");
    }

    #[test]
    fn sysctl_restore_file_outlives_a_crash_until_emptied() {
        let d = dirs("sysctl");
        let lock = d.lock().unwrap();
        assert!(d.read_sysctl_restore().unwrap().is_empty());
        let values = BTreeMap::from([("net/ipv4/conf/lo/accept_local".to_owned(), "0".to_owned())]);
        d.write_sysctl_restore(&values).unwrap();
        // A natgw killed here leaves the file (and so the directory) behind.
        drop(lock);
        assert_eq!(d.read_sysctl_restore().unwrap(), values);
        let lock = d.lock().unwrap();
        d.write_sysctl_restore(&BTreeMap::new()).unwrap();
        assert!(!d.sysctl_file().exists());
        drop(lock);
        assert!(!d.state_dir.exists(), "nothing left behind");
    }

    #[test]
    fn dirs_are_per_namespace() {
        let d = RuntimeDirs::new(Path::new("/sys/fs/bpf/natgw"), Path::new("/run/natgw"), 123);
        assert_eq!(d.pin_dir, Path::new("/sys/fs/bpf/natgw/net-123"));
        assert_eq!(d.state_file(), Path::new("/run/natgw/net-123/state.json"));
        assert_eq!(
            d.pin_path("NAT_FWD"),
            Path::new("/sys/fs/bpf/natgw/net-123/NAT_FWD")
        );
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn state_file_round_trips_and_lock_is_exclusive() {
        let root =
            std::env::temp_dir().join(format!("natgw-state-test-{}-lock", std::process::id()));
        let d = RuntimeDirs::new(&root.join("pins"), &root.join("run"), 4_026_531_840);
        let lock = d.lock().unwrap();
        let state = json!({"version": 1, "pid": 42});
        d.write_state(&state).unwrap();
        assert_eq!(d.read_state::<serde_json::Value>().unwrap(), state);
        match d.lock() {
            Err(StateError::AlreadyRunning { pid: Some(42) }) => {}
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        let msg = d.lock().unwrap_err().to_string();
        assert_eq!(
            msg,
            "natgw is already running in this network namespace (pid 42); stop it first"
        );
        d.remove_state().unwrap();
        assert!(matches!(
            d.read_state::<serde_json::Value>(),
            Err(StateError::NotRunning { .. })
        ));
        drop(lock);
        assert!(!d.state_dir.exists());
        let _ = fs::remove_dir_all(root);
    }
}
