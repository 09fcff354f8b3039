//! natgw as the bench runs it: [`testbed::Natgw`] on the bench topology's interfaces
//! with every thread on one CPU at nice -20 (like the bench's own threads), its log in
//! the bench's log directory (which the bench creates and keeps), read through
//! `natgw status --json`, stopped with SIGTERM when dropped, its pins and state removed
//! if it left any.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use testbed::{NatgwError, Netns};

use super::net::{GW_LAN_IF, GW_WAN_IF};

/// How long natgw may take to come up: a million-entry table takes a while, and the
/// verifier far longer on a loaded machine (see [`testbed::natgw::READY_WAIT`]).
const READY_WAIT: Duration = Duration::from_secs(120);
/// How long natgw may take to exit after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// How much of natgw's log a failure shows.
const LOG_TAIL_LINES: usize = 20;
/// natgw's nice value: first in line, as the bench's own threads.
const NICE: i32 = -20;

/// A running `natgw run`.
pub struct Natgw(testbed::Natgw);

impl Natgw {
    /// Starts `natgw run --wan bwan0 --lan blan0 EXTRA...` in `gw` at nice -20, every
    /// thread on `cpu` if one is given, and waits until `natgw status` answers.
    pub fn start(
        bin: &Path,
        gw: &Netns,
        extra: &[String],
        cpu: Option<usize>,
        log: &Path,
    ) -> Result<Natgw> {
        let mut builder = testbed::Natgw::builder(bin)
            .ifaces(["--wan", GW_WAN_IF, "--lan", GW_LAN_IF])
            .args(extra)
            .log(log)
            .rust_log(None)
            .ready_within(READY_WAIT)
            .stop_within(STOP_WAIT)
            .log_lines_in_errors(LOG_TAIL_LINES)
            .own_process_group()
            .nice(NICE)
            .remove_leftovers();
        if let Some(cpu) = cpu {
            builder = builder.cpu(cpu);
        }
        Ok(Natgw(builder.start(gw)?))
    }

    /// natgw's process id (0 once it is stopped).
    pub fn pid(&self) -> i32 {
        self.0
            .pid()
            .and_then(|pid| i32::try_from(pid).ok())
            .unwrap_or(0)
    }

    /// Its pin directory (`/sys/fs/bpf/natgw/net-<inode>`).
    pub fn pin_dir(&self) -> &Path {
        self.0.pin_dir()
    }

    /// `natgw status --json`.
    pub fn status(&self) -> Result<Value, NatgwError> {
        self.0.status()
    }

    /// `natgw mappings --json`.
    pub fn mappings(&self) -> Result<Vec<Value>, NatgwError> {
        self.0.mappings()
    }

    /// A data-path counter from `natgw status --json`.
    pub fn counter(&self, name: &str) -> Result<u64, NatgwError> {
        self.0.counter(name)
    }
}

impl Drop for Natgw {
    fn drop(&mut self) {
        if let Err(e) = self.0.stop_cleanly() {
            eprintln!("xtask bench: stopping natgw: {e:#}");
        }
    }
}
