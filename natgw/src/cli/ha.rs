//! `natgw ha-state`: keepalived's notify script tells natgw its VRRP state.

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::daemon::control::{self, Reply, Request};
use crate::daemon::keepalived::{self, VrrpState};
use crate::datapath::dirs::RuntimeDirs;
use crate::datapath::system;

/// How long the running natgw may take to answer.
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Examples after `natgw ha-state --help`.
pub const AFTER_HELP: &str = "\
In keepalived.conf (vrrp_instance or vrrp_sync_group):
    notify_master \"/usr/sbin/natgw ha-state MASTER\"
    notify_backup \"/usr/sbin/natgw ha-state BACKUP\"
    notify_fault  \"/usr/sbin/natgw ha-state FAULT\"
    notify_stop   \"/usr/sbin/natgw ha-state STOP\"
or, with keepalived's generic notify (it appends TYPE NAME STATE PRIORITY):
    notify \"/usr/sbin/natgw ha-state\"";

/// Arguments of `natgw ha-state`.
#[derive(Debug, Args)]
pub struct HaStateArgs {
    /// The state (MASTER, BACKUP, FAULT, STOP; any case), or the four arguments
    /// keepalived's generic `notify` script gets: TYPE NAME STATE PRIORITY.
    #[arg(value_name = "STATE", num_args = 1..=4, required = true)]
    pub words: Vec<String>,
}

impl HaStateArgs {
    /// The state the arguments name.
    ///
    /// # Errors
    /// Not a state, or not keepalived's notify arguments.
    pub fn state(&self) -> Result<VrrpState, String> {
        match self.words.as_slice() {
            [state] | [_, _, state] | [_, _, state, _] => state.parse(),
            _ => Err(format!(
                "expected STATE, or TYPE NAME STATE [PRIORITY] as keepalived's notify passes \
                 them; got {} arguments",
                self.words.len()
            )),
        }
    }
}

/// Records the state (the track file a starting natgw reads) and tells the running
/// natgw, if any; prints the role that results.
///
/// # Errors
/// A bad state, not root, or a running natgw that refuses (it runs without --ha).
pub async fn ha_state(args: &HaStateArgs) -> Result<()> {
    let state = args.state().map_err(anyhow::Error::msg)?;
    system::check_privileges()?;
    let dirs = RuntimeDirs::for_current_netns()?;
    keepalived::write_track(&dirs, state, keepalived::Reporter::parent())
        .context("recording the state for natgw")?;
    let running = dirs
        .read_state::<crate::daemon::state::StateFile>()
        .ok()
        .filter(|s| system::process_alive_in_netns(s.pid, dirs.netns_inode));
    if running.is_none() {
        println!(
            "{state}: recorded; no natgw runs in this network namespace, the next `natgw run \
             --ha` starts as the {}",
            keepalived::role_name(state.role())
        );
        return Ok(());
    }
    // Bounded: a notify script that hangs would pile up in keepalived.
    let reply = tokio::time::timeout(
        ANSWER_WAIT,
        control::ask(&dirs.state_dir, &Request::HaState { state }),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "natgw did not answer within {} s (the state is recorded for its next start)",
            ANSWER_WAIT.as_secs()
        )
    })??;
    match reply {
        Reply::Role { role, changed } => println!(
            "{state}: natgw {} {role}",
            if changed { "is now" } else { "stays" }
        ),
        Reply::Error { message } => bail!("natgw refused: {message}"),
        other => bail!("natgw sent something unexpected: {other:?}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> HaStateArgs {
        HaStateArgs {
            words: words.iter().map(|w| (*w).to_owned()).collect(),
        }
    }

    #[test]
    fn takes_a_state_or_keepalived_notify_arguments() {
        assert_eq!(args(&["master"]).state(), Ok(VrrpState::Master));
        assert_eq!(
            args(&["INSTANCE", "natgw", "BACKUP", "100"]).state(),
            Ok(VrrpState::Backup)
        );
        assert_eq!(
            args(&["GROUP", "natgw", "FAULT"]).state(),
            Ok(VrrpState::Fault)
        );
        assert!(args(&["INSTANCE", "natgw"]).state().is_err());
        assert!(args(&["ACTIVE"]).state().unwrap_err().contains("MASTER"));
    }
}
