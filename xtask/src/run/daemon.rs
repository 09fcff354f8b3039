//! natgw inside the testbed's gateway namespace: starting `natgw run` with its log in a
//! file, waiting until `natgw status` answers, running the CLI (`status`, `mappings`)
//! with a time limit, and stopping the daemon with SIGTERM — before the testbed is
//! removed, because removing a namespace SIGKILLs whatever still runs inside it.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use testbed::{Netns, GW_LAN_IFS, GW_WAN_IF};

use super::signals;

/// Where natgw pins each network namespace's maps, in `net-<namespace inode>`
/// (`natgw_common::maps::PIN_DIR`). Restated rather than imported so that xtask still
/// builds while the crates it builds do not.
pub const PIN_ROOT: &str = "/sys/fs/bpf/natgw";

/// Where natgw keeps each namespace's state file and lock, in `net-<namespace inode>`
/// (natgw's `state::STATE_ROOT`).
pub const STATE_ROOT: &str = "/run/natgw";

/// How long natgw may take to exit after SIGTERM before it is killed.
pub const STOP_WAIT: Duration = Duration::from_secs(10);

/// How long natgw may take to load its programs and answer `natgw status`.
const READY_WAIT: Duration = Duration::from_secs(10);

/// Time limit of one `natgw status` / `natgw mappings` call.
const CLI_WAIT: Duration = Duration::from_secs(5);

/// How often a wait looks at natgw again.
const POLL: Duration = Duration::from_millis(100);

/// How much of natgw's log a failure shows.
const LOG_TAIL_LINES: usize = 30;

/// The running natgw's pid (0: none), for [`force_stop`] on the signal thread.
static PID: AtomicI32 = AtomicI32::new(0);

/// natgw's per-namespace directories for the testbed's gateway, which are this run's
/// alone (the namespace is new), for the cleanup after natgw stopped.
static RUNTIME_DIRS: OnceLock<[PathBuf; 2]> = OnceLock::new();

/// `natgw run` in the gateway namespace; stopped with SIGTERM when dropped.
pub struct Natgw {
    child: Option<Child>,
    bin: PathBuf,
    /// A non-owning handle on the gateway namespace, for the CLI calls.
    gateway: Netns,
    log: PathBuf,
}

impl Natgw {
    /// Starts `natgw run --wan wan0 --lan lan0 --lan lan1 EXTRA...` in `gateway`, with
    /// stdout and stderr going to `log`, and waits until `natgw status` succeeds.
    pub fn start(bin: &Path, gateway: &Netns, extra: &[String], log: &Path) -> Result<Natgw> {
        let _ = RUNTIME_DIRS.set(runtime_dirs(gateway)?);
        let handle = Netns::open(gateway.name())
            .with_context(|| format!("opening namespace {}", gateway.name()))?;

        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating {} for natgw's log", dir.display()))?;
        }
        let log_file =
            File::create(log).with_context(|| format!("creating natgw's log {}", log.display()))?;
        let log_for_stdout = log_file
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", log.display()))?;
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
        let args: Vec<String> = [
            "run",
            "--wan",
            GW_WAN_IF,
            "--lan",
            GW_LAN_IFS[0],
            "--lan",
            GW_LAN_IFS[1],
        ]
        .iter()
        .map(|&arg| arg.to_owned())
        .chain(extra.iter().cloned())
        .collect();

        println!(
            "Starting natgw in the gateway namespace; its log: {}",
            log.display()
        );
        println!(
            "  $ RUST_LOG={rust_log} ip netns exec {} {} {} >{} 2>&1",
            gateway.name(),
            bin.display(),
            args.join(" "),
            log.display()
        );
        let mut cmd = gateway.command(bin);
        let child = signals::unblock_in_child(&mut cmd)
            .args(&args)
            .env("RUST_LOG", &rust_log)
            .stdin(Stdio::null())
            .stdout(log_for_stdout)
            .stderr(log_file)
            // Its own process group: a Ctrl-C at the terminal reaches xtask only, which
            // then stops natgw in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} in {}", bin.display(), gateway.name()))?;
        PID.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);

        let mut natgw = Natgw {
            child: Some(child),
            bin: bin.to_owned(),
            gateway: handle,
            log: log.to_owned(),
        };
        if let Err(e) = natgw.wait_ready() {
            // The error shows natgw's log already; how it then stops adds nothing.
            let _ = natgw.halt();
            return Err(e);
        }
        Ok(natgw)
    }

    /// Polls `natgw status` until it succeeds, natgw exits, [`READY_WAIT`] passes or a
    /// signal arrives.
    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            signals::check()?;
            if let Some(status) = self.exited()? {
                bail!(
                    "natgw exited during start-up ({status}); the end of its log:\n{}",
                    self.log_tail()
                );
            }
            let answer = self.cli(&["status"])?;
            if answer.status.success() {
                println!(
                    "natgw is ready (`natgw status` answered after {:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if started.elapsed() > READY_WAIT {
                bail!(
                    "natgw did not become ready within {} s: `natgw status` still fails \
                     ({}: {}); the end of natgw's log:\n{}",
                    READY_WAIT.as_secs(),
                    answer.status,
                    String::from_utf8_lossy(&answer.stderr).trim(),
                    self.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs `natgw ARGS` in the gateway namespace within [`CLI_WAIT`]; a non-zero exit
    /// is returned in the output, not as an error.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = self.gateway.command(&self.bin);
        signals::unblock_in_child(&mut cmd).args(args);
        output_within(&mut cmd, CLI_WAIT).with_context(|| format!("`natgw {}`", args.join(" ")))
    }

    /// Runs `natgw ARGS` and returns its standard output, failing with its standard error
    /// when it exits non-zero.
    pub fn cli_text(&self, args: &[&str]) -> Result<String> {
        let output = self.cli(args)?;
        if !output.status.success() {
            bail!(
                "`natgw {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `Some(status)` once natgw has exited (on its own: it is still ours to stop).
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child
                .try_wait()
                .context("checking whether natgw still runs"),
            None => Ok(None),
        }
    }

    /// The natgw binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// natgw's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last lines of natgw's log, indented, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        if tail.is_empty() {
            return format!("  ({} is empty)", self.log.display());
        }
        tail.iter()
            .map(|line| format!("  | {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops natgw: SIGTERM, up to [`STOP_WAIT`] to exit, then SIGKILL. Fails when it had
    /// already exited or did not exit cleanly. Removes whatever it left of its pinned
    /// maps and state.
    pub fn stop(&mut self) -> Result<()> {
        let Some(outcome) = self.halt() else {
            return Ok(());
        };
        let what = match outcome? {
            Stopped::Terminated(status) if status.success() => {
                say!("natgw stopped (SIGTERM, {status})");
                return Ok(());
            }
            Stopped::Terminated(status) => {
                format!("natgw did not exit cleanly after SIGTERM ({status})")
            }
            Stopped::AlreadyExited(status) => {
                format!("natgw had exited on its own ({status}) before xtask stopped it")
            }
            Stopped::Killed => format!(
                "natgw did not exit within {} s of SIGTERM and was killed",
                STOP_WAIT.as_secs()
            ),
        };
        bail!("{what}; the end of its log:\n{}", self.log_tail())
    }

    /// Ends natgw (see [`terminate`]) and removes its leftovers; `None` if it was
    /// already stopped.
    fn halt(&mut self) -> Option<Result<Stopped>> {
        let mut child = self.child.take()?;
        let outcome = terminate(&mut child);
        PID.store(0, Ordering::SeqCst);
        remove_leftovers();
        Some(outcome)
    }
}

impl Drop for Natgw {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            esay!("xtask run: stopping natgw: {e:#}");
        }
    }
}

/// How [`terminate`] ended natgw.
enum Stopped {
    AlreadyExited(ExitStatus),
    Terminated(ExitStatus),
    Killed,
}

/// SIGTERM, up to [`STOP_WAIT`] for `child` to exit, then SIGKILL.
fn terminate(child: &mut Child) -> Result<Stopped> {
    if let Some(status) = child
        .try_wait()
        .context("checking whether natgw still runs")?
    {
        return Ok(Stopped::AlreadyExited(status));
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).context("natgw's pid")?);
    kill(pid, Signal::SIGTERM).context("sending SIGTERM to natgw")?;
    let deadline = Instant::now() + STOP_WAIT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().context("waiting for natgw to exit")? {
            return Ok(Stopped::Terminated(status));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().context("killing natgw")?;
    child.wait().context("reaping natgw")?;
    Ok(Stopped::Killed)
}

/// natgw's pin and state directories for the namespace `gateway`:
/// `{PIN_ROOT,STATE_ROOT}/net-<inode of the namespace>`.
fn runtime_dirs(gateway: &Netns) -> Result<[PathBuf; 2]> {
    let inode = std::fs::metadata(gateway.path())
        .with_context(|| format!("reading the inode of {}", gateway.path().display()))?
        .ino();
    let name = format!("net-{inode}");
    Ok([PIN_ROOT, STATE_ROOT].map(|root| Path::new(root).join(&name)))
}

/// natgw's directories for the testbed's gateway that still exist.
pub fn leftovers() -> Vec<PathBuf> {
    RUNTIME_DIRS
        .get()
        .into_iter()
        .flatten()
        .filter(|dir| dir.exists())
        .cloned()
        .collect()
}

/// Removes what natgw left of its pinned maps and state (it was killed, or it failed
/// to clean up): they belong to a namespace that is about to disappear.
fn remove_leftovers() {
    for dir in leftovers() {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => say!("removed {}, which natgw left behind", dir.display()),
            Err(e) => esay!("xtask run: removing {}: {e}", dir.display()),
        }
        if let Some(root) = dir.parent() {
            // Only succeeds when no other namespace's natgw uses the root.
            let _ = std::fs::remove_dir(root);
        }
    }
}

/// The signal thread's last resort: SIGTERM natgw, give it a few seconds, SIGKILL it,
/// and remove its pinned maps. The main thread may hold natgw's `Child`; reaping it
/// here is harmless because the process exits right after.
pub fn force_stop() {
    let pid = PID.swap(0, Ordering::SeqCst);
    if pid > 0 {
        let pid = Pid::from_raw(pid);
        let _ = kill(pid, Signal::SIGTERM);
        if !reaped_within(pid, Duration::from_secs(3)) {
            let _ = kill(pid, Signal::SIGKILL);
            reaped_within(pid, Duration::from_secs(2));
        }
    }
    remove_leftovers();
}

/// Waits up to `limit` for child `pid` to exit; true once it is gone.
fn reaped_within(pid: Pid, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            // ECHILD: already reaped (by the main thread).
            Ok(_) | Err(Errno::ECHILD) => return true,
            Err(_) => return false,
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` with stdin closed and its output captured, killing it after `limit`.
/// The command gets a process group of its own, so a Ctrl-C at the terminal does not
/// cut it off half-way.
fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", cmd.get_program().to_string_lossy()))?;
    // Read both pipes on threads so a chatty command cannot block on a full pipe while
    // this thread watches the clock.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish within {} s and was killed", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}
