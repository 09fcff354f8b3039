//! How natgw learns its role from keepalived (`--ha`, docs/operations.md#failover).
//!
//! keepalived runs a notify script on every VRRP state change; the script runs
//! `natgw ha-state STATE`, which records the state in the runtime directory (the
//! track file, [`TRACK_FILE`]) and tells the running daemon over the control socket.
//! A natgw that starts later reads the track file, so the order in which keepalived
//! and natgw start does not matter. The file names the process that reported (the
//! notify script's parent, keepalived): a state whose reporter is gone (keepalived
//! was killed, the box crashed) is stale and ignored, so a natgw that starts after a
//! crash is the standby until keepalived speaks again. MASTER makes natgw the active side; BACKUP,
//! FAULT and STOP (and DELETED, an instance removed on a reload) the standby.
//!
//! The role only says what natgw does with its state (replicate or install it): the
//! data path translates whatever reaches it in either role, always to the virtual
//! external addresses, so no packet leaves untranslated while keepalived moves them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::role::Role;
use crate::datapath::dirs::{RuntimeDirs, StateError};

/// The track file in the runtime directory: the last state keepalived reported.
pub const TRACK_FILE: &str = "ha-state.json";

/// A VRRP instance's state as keepalived's notify scripts name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum VrrpState {
    /// Owns the virtual addresses.
    Master,
    /// Another gateway owns them.
    Backup,
    /// A tracked interface or script failed: owns nothing, sends no adverts.
    Fault,
    /// keepalived stops (or removed the instance, `DELETED`).
    Stop,
}

impl VrrpState {
    /// The role natgw takes in this state.
    #[must_use]
    pub const fn role(self) -> Role {
        match self {
            Self::Master => Role::Active,
            Self::Backup | Self::Fault | Self::Stop => Role::Standby,
        }
    }
}

impl fmt::Display for VrrpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Master => "MASTER",
            Self::Backup => "BACKUP",
            Self::Fault => "FAULT",
            Self::Stop => "STOP",
        })
    }
}

impl FromStr for VrrpState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "MASTER" => Ok(Self::Master),
            "BACKUP" => Ok(Self::Backup),
            "FAULT" => Ok(Self::Fault),
            "STOP" | "DELETED" => Ok(Self::Stop),
            _ => Err(format!(
                "`{s}` is not a keepalived state: MASTER, BACKUP, FAULT, STOP or DELETED"
            )),
        }
    }
}

/// A role's name in logs, `natgw status` and metrics.
#[must_use]
pub const fn role_name(role: Role) -> &'static str {
    match role {
        Role::Active => "active",
        Role::Standby => "standby",
    }
}

/// The process that reported a state: the notify script's parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reporter {
    /// Its pid.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), so that a reused pid is not taken for it.
    pub comm: String,
}

impl Reporter {
    /// The parent of this process (keepalived, for a notify script).
    #[must_use]
    pub fn parent() -> Option<Self> {
        let pid = u32::try_from(nix::unistd::getppid().as_raw()).ok()?;
        Some(Self {
            pid,
            comm: comm_of(pid)?,
        })
    }

    /// Whether it still runs: the same command under its pid, and not a zombie (a
    /// killed keepalived's VRRP process keeps its `/proc` entry until it is reaped).
    #[must_use]
    pub fn alive(&self) -> bool {
        comm_of(self.pid).is_some_and(|c| c == self.comm) && !exited(self.pid)
    }
}

/// Whether `pid` is a zombie (or dead): the state field of `/proc/PID/stat`, after
/// the command name in parentheses (which may itself hold spaces and parentheses).
fn exited(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    matches!(state, None | Some("Z" | "X" | "x"))
}

fn comm_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned())
}

/// The track file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    /// keepalived's last state.
    pub state: VrrpState,
    /// When it was reported, seconds since the Unix epoch.
    pub unix: u64,
    /// Who reported it.
    #[serde(default)]
    pub reporter: Option<Reporter>,
}

/// Records `state`, reported by `reporter`, in the track file of `dirs`.
///
/// # Errors
/// When the runtime directory cannot be written (not root).
pub fn write_track(
    dirs: &RuntimeDirs,
    state: VrrpState,
    reporter: Option<Reporter>,
) -> Result<(), StateError> {
    dirs.write_record(
        TRACK_FILE,
        &Track {
            state,
            unix: crate::datapath::system::unix_time(),
            reporter,
        },
    )
}

/// The last state keepalived reported in this network namespace, if any and if the
/// process that reported it still runs.
#[must_use]
pub fn read_track(dirs: &RuntimeDirs) -> Option<Track> {
    match dirs.read_record::<Track>(TRACK_FILE) {
        Ok(Some(t)) if t.reporter.as_ref().is_none_or(Reporter::alive) => Some(t),
        Ok(Some(t)) => {
            log::info!(
                "ha.track_stale state={} reporter={:?}: the keepalived that reported it is \
                 gone; starting as the standby",
                t.state,
                t.reporter
            );
            None
        }
        Ok(None) => None,
        Err(e) => {
            log::warn!("ha.track_unreadable error=\"{e}\": starting as the standby");
            None
        }
    }
}

/// What `natgw status` shows of the role (in the state file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    /// `active` or `standby`.
    pub role: String,
    /// keepalived's last state; `None`: not heard from yet.
    pub keepalived: Option<VrrpState>,
    /// Since when natgw has had this role, seconds since the Unix epoch.
    pub since_unix: u64,
    /// Role changes since natgw started.
    pub transitions: u64,
    /// The virtual external addresses are on the WAN (this gateway holds them).
    #[serde(default)]
    pub vip_present: bool,
}

/// What keepalived told natgw, beside the role itself, which the daemon holds in
/// its `watch::Sender<Role>` (the rest of natgw follows that channel).
#[derive(Debug)]
pub struct Tracker {
    keepalived: Option<VrrpState>,
    since_unix: u64,
    transitions: u64,
}

impl Tracker {
    /// Seeded from the track file's `track` (keepalived spoke before natgw started),
    /// which sets `role`; without it `role` stays as it is (the standby: natgw never
    /// claims to be active unless told).
    #[must_use]
    pub fn new(track: Option<&Track>, role: &tokio::sync::watch::Sender<Role>) -> Self {
        if let Some(t) = track {
            role.send_replace(t.state.role());
        }
        Self {
            keepalived: track.map(|t| t.state),
            since_unix: crate::datapath::system::unix_time(),
            transitions: 0,
        }
    }

    /// keepalived reported `state`: sets `role` and returns the old role when it
    /// changed.
    pub fn apply(
        &mut self,
        state: VrrpState,
        role: &tokio::sync::watch::Sender<Role>,
    ) -> Option<Role> {
        self.keepalived = Some(state);
        let new = state.role();
        let old = *role.borrow();
        if old == new {
            return None;
        }
        role.send_replace(new);
        self.since_unix = crate::datapath::system::unix_time();
        self.transitions += 1;
        Some(old)
    }

    /// What `natgw status` shows, with the role `role` and whether the WAN holds the
    /// virtual addresses now (`vip_present`).
    #[must_use]
    pub fn status(&self, role: Role, vip_present: bool) -> HaStatus {
        HaStatus {
            role: role_name(role).to_owned(),
            keepalived: self.keepalived,
            since_unix: self.since_unix,
            transitions: self.transitions,
            vip_present,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_reporter_is_not_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawning sleep");
        let reporter = Reporter {
            pid: child.id(),
            comm: "sleep".to_owned(),
        };
        assert!(reporter.alive(), "a running reporter");
        let wrong = Reporter {
            comm: "keepalived".to_owned(),
            ..reporter.clone()
        };
        assert!(!wrong.alive(), "another command under the pid");
        child.kill().expect("killing sleep");
        // Killed but not reaped: a zombie, its /proc entry (and comm) still there.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !exited(reporter.pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(comm_of(reporter.pid).as_deref(), Some("sleep"));
        assert!(!reporter.alive(), "a zombie is not alive");
        child.wait().expect("reaping sleep");
        assert!(!reporter.alive(), "a reaped reporter is not alive");
    }

    #[test]
    fn keepalived_states_parse_as_its_notify_scripts_name_them() {
        for (text, state) in [
            ("MASTER", VrrpState::Master),
            ("master", VrrpState::Master),
            ("BACKUP", VrrpState::Backup),
            ("FAULT", VrrpState::Fault),
            ("STOP", VrrpState::Stop),
            ("DELETED", VrrpState::Stop),
        ] {
            assert_eq!(text.parse::<VrrpState>(), Ok(state), "{text}");
        }
        let err = "PRIMARY".parse::<VrrpState>().unwrap_err();
        assert!(err.contains("MASTER, BACKUP, FAULT, STOP"), "{err}");
        assert_eq!(VrrpState::Fault.to_string(), "FAULT");
    }

    #[test]
    fn only_master_makes_natgw_active() {
        let (role, mut watch) = tokio::sync::watch::channel(Role::Standby);
        let mut tracker = Tracker::new(None, &role);
        assert_eq!(
            *watch.borrow_and_update(),
            Role::Standby,
            "standby until told"
        );
        assert_eq!(tracker.apply(VrrpState::Backup, &role), None);
        assert_eq!(tracker.apply(VrrpState::Master, &role), Some(Role::Standby));
        assert_eq!(*watch.borrow_and_update(), Role::Active);
        assert_eq!(tracker.apply(VrrpState::Master, &role), None, "no change");
        assert_eq!(tracker.apply(VrrpState::Fault, &role), Some(Role::Active));
        assert_eq!(*watch.borrow_and_update(), Role::Standby);
        let s = tracker.status(*role.borrow(), false);
        assert_eq!(
            (s.role.as_str(), s.keepalived, s.transitions),
            ("standby", Some(VrrpState::Fault), 2)
        );
    }

    #[test]
    fn the_track_file_seeds_the_role_across_restarts() {
        let tmp = std::env::temp_dir().join(format!("natgw-track-{}", std::process::id()));
        let dirs = RuntimeDirs::new(&tmp.join("pins"), &tmp.join("run"), 7);
        assert_eq!(read_track(&dirs), None);
        write_track(&dirs, VrrpState::Master, Reporter::parent()).unwrap();
        let track = read_track(&dirs).unwrap();
        assert_eq!(track.state, VrrpState::Master);
        let (role, _) = tokio::sync::watch::channel(Role::Standby);
        let _ = Tracker::new(Some(&track), &role);
        assert_eq!(*role.borrow(), Role::Active);
        // Reported by a process that is gone (a pid no process has, or one whose
        // name differs): stale.
        let gone = Reporter {
            pid: std::process::id(),
            comm: "keepalived-not-this".into(),
        };
        write_track(&dirs, VrrpState::Master, Some(gone)).unwrap();
        assert_eq!(read_track(&dirs), None);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
