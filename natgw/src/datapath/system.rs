//! What natgw needs from the host before it can load anything: privileges, a mounted
//! bpffs, the memlock limit on old kernels; and the clock and network-namespace
//! identity shared by every command.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
use nix::sys::statfs::{statfs, BPF_FS_MAGIC};

/// Where bpffs is conventionally mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// `CAP_NET_ADMIN`: attach XDP/TC, change qdiscs.
const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN`: implies BPF on kernels without `CAP_BPF`, and mounting bpffs.
const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_BPF` (Linux 5.8+): create maps, load programs.
const CAP_BPF: u32 = 39;

/// Problems with the host that stop `natgw run`.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// Missing privileges.
    #[error(
        "natgw run needs root (or the capabilities CAP_BPF and CAP_NET_ADMIN) to load \
         eBPF programs and attach them to interfaces; missing: {}", .0.join(", ")
    )]
    NotPrivileged(Vec<&'static str>),
    /// bpffs absent and could not be mounted.
    #[error(
        "bpffs is not mounted at {BPFFS} and mounting it failed ({0}); mount it with \
         `mount -t bpf bpf {BPFFS}`"
    )]
    NoBpffs(nix::Error),
    /// Reading something under /proc failed.
    #[error("reading {what}: {source}")]
    Proc {
        /// What was read.
        what: &'static str,
        /// Cause.
        source: io::Error,
    },
}

/// Capabilities `natgw run` needs that `cap_eff` (the `CapEff` mask) lacks.
#[must_use]
pub fn missing_capabilities(cap_eff: u64) -> Vec<&'static str> {
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

/// Parses the `CapEff:` line of `/proc/self/status`.
#[must_use]
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Fails with a sentence when the process cannot load and attach eBPF programs.
pub fn check_privileges() -> Result<(), SystemError> {
    let status = fs::read_to_string("/proc/self/status").map_err(|source| SystemError::Proc {
        what: "/proc/self/status",
        source,
    })?;
    let missing = missing_capabilities(parse_cap_eff(&status).unwrap_or(0));
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SystemError::NotPrivileged(missing))
    }
}

/// Whether `path` is a bpffs mount.
#[must_use]
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Mounts bpffs at [`BPFFS`] unless it is there already. Returns whether it mounted.
pub fn ensure_bpffs() -> Result<bool, SystemError> {
    if is_bpffs(Path::new(BPFFS)) {
        return Ok(false);
    }
    mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(SystemError::NoBpffs)?;
    Ok(true)
}

/// Whether this process runs in a mount namespace other than init's (as under `ip
/// netns exec`, which gives each command its own, with a fresh `/sys`): a bpffs
/// mounted there goes away with the process. `false` when it cannot be told.
#[must_use]
pub fn private_mount_namespace() -> bool {
    let ino = |p: &str| fs::metadata(p).map(|m| m.ino()).ok();
    match (ino("/proc/self/ns/mnt"), ino("/proc/1/ns/mnt")) {
        (Some(me), Some(init)) => me != init,
        _ => false,
    }
}

/// Lifts `RLIMIT_MEMLOCK`, which kernels before 5.11 charge BPF maps against. Newer
/// kernels account maps to the memory cgroup instead, so failure only matters there.
pub fn raise_memlock_limit() -> nix::Result<()> {
    setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY)
}

pub use natgw_common::time::monotonic_ns;

/// Inode of this process's network namespace: the name under which its gateway's
/// state lives, since bpffs and `/run` are shared by every namespace.
pub fn netns_inode() -> Result<u64, SystemError> {
    fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(|source| SystemError::Proc {
            what: "/proc/self/ns/net",
            source,
        })
}

/// Whether process `pid` exists and lives in the network namespace `netns`. When its
/// namespace cannot be read (no privileges), existence alone decides.
#[must_use]
pub fn process_alive_in_netns(pid: u32, netns: u64) -> bool {
    let Ok(pid_i) = i32::try_from(pid) else {
        return false;
    };
    if pid_i <= 0
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid_i), None)
            == Err(nix::errno::Errno::ESRCH)
    {
        return false;
    }
    match fs::metadata(format!("/proc/{pid}/ns/net")) {
        Ok(m) => m.ino() == netns,
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The sysctl that lets `lo` accept packets whose source is one of the gateway's own
/// addresses: the hairpin path delivers LAN hosts' packets to the gateway's services
/// on its external addresses through `lo` (see `tc_lan_ingress`).
pub const LO_ACCEPT_LOCAL: &str = "net/ipv4/conf/lo/accept_local";

/// The sysctl that lets interface `iface` forward what it receives (IPv4 decides
/// by the interface a packet arrives on).
#[must_use]
pub fn forwarding_key(iface: &str) -> String {
    format!("net/ipv4/conf/{iface}/forwarding")
}

fn sysctl_path(key: &str) -> io::Result<String> {
    let safe = !key.is_empty()
        && key
            .split('/')
            .all(|part| !part.is_empty() && !part.starts_with('.'));
    if !safe {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad sysctl name {key}"),
        ));
    }
    Ok(format!("/proc/sys/{key}"))
}

/// Reads sysctl `key` (`net/ipv4/conf/lo/accept_local`) in natgw's network namespace.
///
/// # Errors
/// When it does not exist or cannot be read.
pub fn read_sysctl(key: &str) -> io::Result<String> {
    Ok(fs::read_to_string(sysctl_path(key)?)?.trim().to_owned())
}

/// Writes sysctl `key` in natgw's network namespace.
///
/// # Errors
/// When it does not exist or cannot be written (read-only /proc).
pub fn write_sysctl(key: &str, value: &str) -> io::Result<()> {
    fs::write(sysctl_path(key)?, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_capabilities_are_enough() {
        assert!(missing_capabilities(0x0000_01ff_ffff_ffff).is_empty());
    }

    #[test]
    fn cap_sys_admin_stands_in_for_cap_bpf() {
        let mask = (1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN);
        assert!(missing_capabilities(mask).is_empty());
    }

    #[test]
    fn missing_capabilities_are_named() {
        assert_eq!(missing_capabilities(0), vec!["CAP_BPF", "CAP_NET_ADMIN"]);
        assert_eq!(missing_capabilities(1 << CAP_BPF), vec!["CAP_NET_ADMIN"]);
        let msg = SystemError::NotPrivileged(missing_capabilities(0)).to_string();
        assert!(msg.starts_with("natgw run needs root"), "{msg}");
        assert!(msg.ends_with("missing: CAP_BPF, CAP_NET_ADMIN"), "{msg}");
    }

    #[test]
    fn cap_eff_is_parsed_from_proc_status() {
        let status = "Name:\tnatgw\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x01ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_is_alive_in_its_namespace() {
        let ns = netns_inode().unwrap();
        assert!(process_alive_in_netns(std::process::id(), ns));
        assert!(!process_alive_in_netns(0, ns));
    }

    #[test]
    fn sysctl_names_stay_inside_proc_sys() {
        assert!(read_sysctl("net/ipv4/ip_forward").is_ok());
        for bad in ["", "../etc/passwd", "net/../../etc", "net//x", "/net/ipv4"] {
            assert_eq!(
                read_sysctl(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad}"
            );
        }
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
