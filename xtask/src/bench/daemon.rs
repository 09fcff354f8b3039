//! `natgw run` in the bench's gateway namespace: started with its log in a file and
//! its threads pinned to one CPU, ready once `natgw status` answers, read through
//! `natgw status --json`, stopped with SIGTERM (on drop too), its pins and state
//! removed if it left any.

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use testbed::Netns;

use super::net::{GW_LAN_IF, GW_WAN_IF};

/// Where natgw pins a namespace's maps (`natgw_common::maps::PIN_DIR`).
const PIN_ROOT: &str = natgw_common::maps::PIN_DIR;
/// Where natgw keeps a namespace's state file (natgw's `state::STATE_ROOT`).
const STATE_ROOT: &str = "/run/natgw";
/// How long natgw may take to come up (a million-entry table takes a while).
const READY_WAIT: Duration = Duration::from_secs(30);
/// How long natgw may take to exit after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// The running natgw's pid (0: none), for the signal thread's last resort.
static PID: AtomicI32 = AtomicI32::new(0);

/// A running `natgw run`.
pub struct Natgw {
    child: Option<Child>,
    bin: PathBuf,
    ns: Netns,
    log: PathBuf,
    dirs: [PathBuf; 2],
}

impl Natgw {
    /// Starts `natgw run --wan bwan0 --lan blan0 EXTRA...` in `gw` with every thread
    /// on `cpu` at nice -20 (like the bench's own threads), and waits until
    /// `natgw status` answers.
    pub fn start(
        bin: &Path,
        gw: &Netns,
        extra: &[String],
        cpu: usize,
        log: &Path,
    ) -> Result<Natgw> {
        let ns = Netns::open(gw.name())?;
        let inode = std::fs::metadata(gw.path())
            .with_context(|| format!("reading the inode of {}", gw.path().display()))?
            .ino();
        let dirs = [PIN_ROOT, STATE_ROOT].map(|root| Path::new(root).join(format!("net-{inode}")));
        let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = gw.command(bin);
        cmd.args(["run", "--wan", GW_WAN_IF, "--lan", GW_LAN_IF])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0);
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
        let signals = super::signals::handled();
        // SAFETY: between fork and exec the closure only calls sched_setaffinity(2),
        // pthread_sigmask and setpriority(2) on values built before the fork; it
        // neither allocates nor locks. (The bench blocks SIGINT and SIGTERM in all its threads; natgw must get
        // them.)
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::sched_setaffinity(Pid::from_raw(0), &set)
                    .and_then(|()| signals.thread_unblock())
                    .map_err(std::io::Error::from)?;
                if libc::setpriority(libc::PRIO_PROCESS, 0, -20) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} in {}", bin.display(), gw.name()))?;
        PID.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
        let mut natgw = Natgw {
            child: Some(child),
            bin: bin.to_owned(),
            ns,
            log: log.to_owned(),
            dirs,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = natgw.child_mut()?.try_wait()? {
                bail!(
                    "natgw exited during start-up ({status}):\n{}",
                    natgw.log_tail()
                );
            }
            if natgw.status().is_ok() {
                return Ok(natgw);
            }
            if started.elapsed() > READY_WAIT {
                bail!(
                    "natgw did not come up within {READY_WAIT:?}:\n{}",
                    natgw.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn child_mut(&mut self) -> Result<&mut Child> {
        self.child.as_mut().context("natgw is not running")
    }

    /// natgw's process id.
    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map_or(0, |c| i32::try_from(c.id()).unwrap_or(0))
    }

    /// Its pin directory (`/sys/fs/bpf/natgw/net-<inode>`).
    pub fn pin_dir(&self) -> &Path {
        &self.dirs[0]
    }

    /// `natgw status --json`.
    pub fn status(&self) -> Result<Value> {
        let out = self
            .ns
            .command(&self.bin)
            .args(["status", "--json"])
            .stdin(Stdio::null())
            .output()
            .context("running natgw status")?;
        if !out.status.success() {
            bail!(
                "natgw status failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("natgw status --json is not JSON")
    }

    /// A data-path counter from `natgw status --json`.
    pub fn counter(&self, name: &str) -> Result<u64> {
        let status = self.status()?;
        status["counters"][name]
            .as_u64()
            .with_context(|| format!("natgw status has no counter {name}"))
    }

    /// The last lines of natgw's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..]
            .iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM, then SIGKILL after [`STOP_WAIT`]; removes leftover pins and state.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        PID.store(0, Ordering::SeqCst);
        let pid = Pid::from_raw(i32::try_from(child.id()).context("natgw's pid")?);
        let result = if child.try_wait()?.is_some() {
            Err(anyhow::anyhow!(
                "natgw had exited on its own:\n{}",
                self.log_tail()
            ))
        } else {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_WAIT;
            loop {
                if let Some(status) = child.try_wait()? {
                    break if status.success() {
                        Ok(())
                    } else {
                        Err(anyhow::anyhow!(
                            "natgw exited with {status}:\n{}",
                            self.log_tail()
                        ))
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(anyhow::anyhow!(
                        "natgw did not stop within {STOP_WAIT:?} of SIGTERM and was killed"
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        result
    }
}

impl Drop for Natgw {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask bench: stopping natgw: {e:#}");
        }
    }
}

/// Kills the running natgw, if any (from the signal thread).
pub fn kill_running() {
    let pid = PID.swap(0, Ordering::SeqCst);
    if pid > 0 {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
