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
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use natgw_proto::prefix::Ipv4Prefix;

/// Root of the per-namespace state directories.
pub const STATE_ROOT: &str = "/run/natgw";
/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;
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
fn read_json_or_default<T: serde::de::DeserializeOwned + Default>(
    path: PathBuf,
) -> Result<T, StateError> {
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
    let json = serde_json::to_vec_pretty(value).map_err(|source| StateError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
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
        let path = self.state_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(InstanceLock { _lock: lock, path }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StateError::AlreadyRunning {
                pid: self.read_state().ok().map(|s| s.pid),
            }),
            Err((_, errno)) => Err(StateError::Io {
                what: "locking",
                path,
                source: errno.into(),
            }),
        }
    }

    /// Reads the state file.
    pub fn read_state(&self) -> Result<StateFile, StateError> {
        let path = self.state_file();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotRunning {
                    netns: self.netns_inode,
                    path,
                })
            }
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        serde_json::from_str(&text).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Writes the state file atomically (temporary file, then rename), so readers never
    /// see half of it.
    pub fn write_state(&self, state: &StateFile) -> Result<(), StateError> {
        let path = self.state_file();
        let tmp = self.state_dir.join(format!("{STATE_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(state).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        f.write_all(&json)
            .and_then(|()| f.write_all(b"\n"))
            .map_err(io_err("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("renaming into", &path))
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

    /// Writes the explicit mappings file atomically.
    pub fn write_explicit(&self, entries: &[ExplicitEntry]) -> Result<(), StateError> {
        write_json_atomic(&self.state_dir, &self.explicit_file(), entries)
    }

    /// Reads the explicit mappings file; none when it does not exist (a natgw that
    /// has none, or predates the file).
    pub fn read_explicit(&self) -> Result<Vec<ExplicitEntry>, StateError> {
        read_json_or_default(self.explicit_file())
    }
}

impl RuntimeDirs {
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

/// What an interface is to the NAT, in the state file and status output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Internal side.
    Lan,
    /// External side.
    Wan,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Lan => "lan",
            Self::Wan => "wan",
        })
    }
}

/// One interface natgw runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceState {
    /// Name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// LAN or WAN.
    pub role: Role,
    /// MTU at start.
    pub mtu: u32,
    /// Link kind (`veth`, ...), when the kernel reports one.
    pub kind: Option<String>,
    /// IPv4 addresses with prefix lengths.
    pub addresses: Vec<Ipv4Prefix>,
    /// XDP program attached here.
    pub xdp_program: String,
    /// How it is attached: `driver` or `skb`.
    pub xdp_mode: String,
    /// TC programs attached here (`tc_wan_ingress (ingress)`, ...).
    pub tc_programs: Vec<String>,
    /// Frames redirected into this interface are delivered (`ndo_xdp_xmit`).
    pub redirect_ok: bool,
    /// Frames received here may carry partial checksums (veth).
    pub rx_csum_partial: bool,
    /// False once the interface has disappeared.
    pub present: bool,
}

/// The state file: everything `status` shows that the maps do not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// natgw version that wrote it.
    pub natgw_version: String,
    /// Daemon pid.
    pub pid: u32,
    /// Network namespace inode.
    pub netns_inode: u64,
    /// Start time, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Where the maps are pinned.
    pub pin_dir: PathBuf,
    /// Kernel map ids by map name: how `status` finds the maps when the pins are not
    /// visible (another mount namespace, as under `ip netns exec`).
    pub map_ids: BTreeMap<String, u32>,
    /// The external (WAN) address.
    pub external_address: Ipv4Addr,
    /// The external address pool (RFC 4787 REQ-2), `external_address` first.
    #[serde(default)]
    pub external_addresses: Vec<Ipv4Addr>,
    /// Interfaces, WAN first.
    pub interfaces: Vec<IfaceState>,
    /// natgw added the WAN's clsact qdisc (and removes it on exit); lets the next run
    /// remove one a crashed run left behind.
    #[serde(default)]
    pub clsact_created: bool,
    /// Effective settings.
    pub settings: Settings,
    /// The controller's own counters (ICMP errors sent, rate-limited, ...), by name;
    /// rewritten when they change, at most once a second.
    #[serde(default)]
    pub controller_counters: BTreeMap<String, u64>,
    /// The STUN responder on the external address, when it runs.
    #[serde(default)]
    pub stun: Option<StunState>,
}

/// The daemon's STUN responder, for `natgw status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StunState {
    /// UDP addresses it answers on, the primary first.
    pub addresses: Vec<SocketAddrV4>,
    /// The RFC 5780 OTHER-ADDRESS (second external address, alternate port), when
    /// there is a second external address.
    pub other_address: Option<SocketAddrV4>,
    /// Whether it answers now: not while the WAN has no address, nor after binding a
    /// new external address failed (it tries again on the next address change).
    #[serde(default = "listening_by_default")]
    pub listening: bool,
    /// Why it does not answer, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_listening: Option<String>,
    /// Responder counters by name (`received`, `success`, `dropped_<reason>`, ...);
    /// rewritten with the controller counters.
    pub counters: BTreeMap<String, u64>,
}

/// State files written before the responder followed address changes only had one
/// while it listened.
const fn listening_by_default() -> bool {
    true
}

/// One explicit mapping (PCP, NAT-PMP, static forward) as the daemon records it for
/// `natgw mappings`: what the maps do not hold. Rewritten when they change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplicitEntry {
    /// `udp` or `tcp`.
    pub protocol: String,
    /// Internal endpoint.
    pub internal: std::net::SocketAddrV4,
    /// External endpoint.
    pub external: std::net::SocketAddrV4,
    /// `pcp`, `nat-pmp` or `static`.
    pub origin: String,
    /// The client that holds it (its nonce): where its last request came from;
    /// `None` for static forwards.
    pub client: Option<std::net::SocketAddrV4>,
    /// When its lifetime ends, on `CLOCK_MONOTONIC` (ns); `None`: never.
    pub expires_ns: Option<u64>,
    /// Remote peers its PCP FILTER options let in, `PREFIX:PORT` (port 0: any);
    /// empty: everyone.
    pub filters: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve, FileConfig, Overrides};

    fn dirs(tag: &str) -> RuntimeDirs {
        let root =
            std::env::temp_dir().join(format!("natgw-state-test-{}-{tag}", std::process::id()));
        RuntimeDirs::new(&root.join("pins"), &root.join("run"), 4_026_531_840)
    }

    fn sample_state() -> StateFile {
        let flags = Overrides {
            wan: Some("wan0".into()),
            lan: vec!["lan0".into()],
            ..Overrides::default()
        };
        let (settings, _) = resolve(&FileConfig::default(), &flags).unwrap();
        StateFile {
            version: STATE_VERSION,
            natgw_version: "0.1.0".into(),
            pid: 42,
            netns_inode: 4_026_531_840,
            started_unix: 1_700_000_000,
            pin_dir: "/sys/fs/bpf/natgw/net-4026531840".into(),
            map_ids: BTreeMap::from([("NAT_FWD".to_owned(), 7)]),
            external_address: Ipv4Addr::new(192, 0, 2, 1),
            external_addresses: vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)],
            interfaces: vec![IfaceState {
                name: "wan0".into(),
                ifindex: 2,
                role: Role::Wan,
                mtu: 1500,
                kind: Some("veth".into()),
                addresses: vec!["192.0.2.1/24".parse().unwrap()],
                xdp_program: "xdp_wan".into(),
                xdp_mode: "driver".into(),
                tc_programs: vec!["tc_wan_ingress (ingress)".into()],
                redirect_ok: true,
                rx_csum_partial: true,
                present: true,
            }],
            clsact_created: true,
            settings,
            controller_counters: BTreeMap::from([("icmp_rate_limited".to_owned(), 1)]),
            stun: Some(StunState {
                addresses: vec!["192.0.2.1:3478".parse().unwrap()],
                other_address: None,
                listening: true,
                not_listening: None,
                counters: BTreeMap::from([("success".to_owned(), 2)]),
            }),
        }
    }

    #[test]
    fn explicit_mappings_file_round_trips_and_goes_with_the_state() {
        let d = dirs("explicit");
        let lock = d.lock().unwrap();
        assert!(d.read_explicit().unwrap().is_empty(), "none written yet");
        let entries = vec![ExplicitEntry {
            protocol: "udp".into(),
            internal: "10.0.1.2:5000".parse().unwrap(),
            external: "192.0.2.1:15000".parse().unwrap(),
            origin: "pcp".into(),
            client: Some("10.0.1.2:40000".parse().unwrap()),
            expires_ns: Some(42),
            filters: Vec::new(),
        }];
        d.write_explicit(&entries).unwrap();
        assert_eq!(d.read_explicit().unwrap(), entries);
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

    #[test]
    fn state_file_round_trips_and_lock_is_exclusive() {
        let d = dirs("roundtrip");
        let lock = d.lock().unwrap();
        let state = sample_state();
        d.write_state(&state).unwrap();
        assert_eq!(d.read_state().unwrap(), state);
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
        assert!(matches!(d.read_state(), Err(StateError::NotRunning { .. })));
        drop(lock);
        assert!(!d.state_dir.exists());
        let _ = fs::remove_dir_all(d.state_dir.parent().unwrap().parent().unwrap());
    }
}
