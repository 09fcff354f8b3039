//! [`Natgw`]: the `natgw` daemon as a child process inside a network namespace — the one
//! wrapper that the integration tests, the conformance suite, `cargo xtask run` and
//! `cargo xtask bench` start natgw with.
//!
//! [`Natgw::builder`] takes the binary (the caller finds it; the tests use
//! [`natgw_bin`]) and says how to run it; [`NatgwBuilder::start`] runs
//! `natgw run IFACES... ARGS...` in a namespace with stdout and stderr in a log file and
//! waits until `natgw status --json` answers. [`Natgw::cli`] and the JSON helpers
//! ([`Natgw::status`], [`Natgw::mappings`], [`Natgw::counter`]) run the CLI in the same
//! namespace; [`Natgw::stop`] sends SIGTERM and waits with a deadline before SIGKILL.
//! Dropping a running `Natgw` stops it, and that must happen before its namespace goes:
//! removing a namespace SIGKILLs whatever still runs inside.
//!
//! The defaults suit the integration tests on a [`crate::Testbed`]: its gateway's
//! interfaces, `RUST_LOG=debug`, a temporary log removed on drop and quoted whole in
//! errors, generous limits for a loaded 2-core machine. `cargo xtask` changes what it
//! needs (its own log file, a process group of natgw's own, the CPU natgw runs on, the
//! removal of what a killed natgw leaves in `/sys/fs/bpf` and `/run`).
//!
//! Every process started here begins with no signal blocked, whatever the caller
//! blocked in its own threads (xtask takes SIGINT and SIGTERM in one thread with
//! `sigwait`): natgw must stop on SIGTERM.

use std::fmt;
use std::io::{self, Read, Write as _};
use std::net::SocketAddrV4;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::CpuSet;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde_json::Value;

use crate::netns::Netns;
use crate::topology::{GW_LAN_IFS, GW_WAN_IF};

/// Where natgw pins each network namespace's maps, in `net-<namespace inode>`
/// (`natgw_common::maps::PIN_DIR`; restated because this crate does not depend on
/// natgw's, and checked against it by xtask's tests).
pub const PIN_ROOT: &str = "/sys/fs/bpf/natgw";

/// Where natgw keeps each network namespace's state file and lock, in
/// `net-<namespace inode>` (natgw's `state::STATE_ROOT`).
pub const STATE_ROOT: &str = "/run/natgw";

/// The environment variable that names the natgw binary under test (set by
/// `cargo xtask test` and `cargo xtask conformance`).
pub const NATGW_BIN_ENV: &str = "NATGW_BIN";

/// The environment variable that names natgw's Debian package under test (set by
/// `cargo xtask test`, which builds it as `cargo xtask package` does).
pub const NATGW_DEB_ENV: &str = "NATGW_DEB";

/// Default time natgw may take to answer `natgw status` after starting: loading the
/// programs runs the verifier over them, 3–6 s on an idle 2-core machine, more than
/// 20 s when the machine's load average is well above its CPU count (tests running
/// side by side with builds) and once 48 s for `xdp_lan` alone at a load average of
/// 15–22. Only a natgw that is slow waits this long.
pub const READY_WAIT: Duration = Duration::from_secs(180);

/// Default time natgw may take to exit after SIGTERM before it is killed: generous,
/// since a loaded 2-core machine can take seconds to schedule the shutdown.
pub const STOP_WAIT: Duration = Duration::from_secs(15);

/// How often a wait looks at natgw again.
const POLL: Duration = Duration::from_millis(100);

/// How often a stop looks whether natgw has exited.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// What can go wrong while starting, asking or stopping natgw. Errors that come from
/// natgw itself quote its log (whole, or its last lines: see
/// [`NatgwBuilder::log_lines_in_errors`]).
#[derive(Debug, thiserror::Error)]
pub enum NatgwError {
    /// Preparing or spawning a process failed.
    #[error("{what}: {error}")]
    Setup {
        /// The step, naming its object.
        what: String,
        /// Why.
        error: io::Error,
    },
    /// natgw exited before it answered `natgw status`.
    #[error("natgw exited during start-up ({status}):\n{log}")]
    ExitedDuringStartup {
        /// Its exit status.
        status: ExitStatus,
        /// Its log.
        log: String,
    },
    /// natgw did not answer `natgw status` in time; it was killed.
    #[error(
        "natgw did not come up within {} s: `natgw status --json` still fails ({last}):\n{log}",
        within.as_secs()
    )]
    NotReady {
        /// The limit.
        within: Duration,
        /// What the last `natgw status --json` said.
        last: String,
        /// Its log.
        log: String,
    },
    /// The caller's interruption check fired while natgw was starting; natgw was
    /// stopped.
    #[error("interrupted while natgw was starting")]
    Interrupted,
    /// natgw is not running (it was stopped or killed already).
    #[error("natgw is not running")]
    NotRunning,
    /// natgw did not exit in time after SIGTERM and was killed.
    #[error(
        "natgw did not exit within {} s of SIGTERM and was killed:\n{log}",
        within.as_secs()
    )]
    DidNotStop {
        /// The limit.
        within: Duration,
        /// Its log.
        log: String,
    },
    /// natgw had exited on its own before it was stopped.
    #[error("natgw had exited on its own ({status}) before it was stopped:\n{log}")]
    ExitedEarly {
        /// Its exit status.
        status: ExitStatus,
        /// Its log.
        log: String,
    },
    /// natgw exited with a failure after SIGTERM.
    #[error("natgw did not exit cleanly after SIGTERM ({status}):\n{log}")]
    Unclean {
        /// Its exit status.
        status: ExitStatus,
        /// Its log.
        log: String,
    },
    /// A CLI command exited non-zero.
    #[error("`natgw {command}` failed ({status}): {stderr}")]
    Cli {
        /// The arguments.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A CLI command ran past its time limit and was killed.
    #[error("`natgw {command}` did not finish within {} s and was killed", within.as_secs())]
    CliTimeout {
        /// The arguments.
        command: String,
        /// The limit.
        within: Duration,
    },
    /// A CLI command's output is not the JSON expected.
    #[error("`natgw {command}` did not print the JSON expected: {what}")]
    Json {
        /// The arguments.
        command: String,
        /// What is wrong with it.
        what: String,
    },
    /// `natgw status` does not list a counter.
    #[error("counter {name} not in natgw status: {status}")]
    NoCounter {
        /// The counter.
        name: String,
        /// The whole `natgw status --json`.
        status: Value,
    },
    /// The natgw binary is not where it should be.
    #[error(
        "natgw binary not found at {}: build it with `cargo xtask build` (or run `cargo xtask test`)",
        path.display()
    )]
    BinaryNotFound {
        /// Where it was looked for.
        path: PathBuf,
    },
}

impl NatgwError {
    fn setup(what: impl Into<String>, error: io::Error) -> Self {
        Self::Setup {
            what: what.into(),
            error,
        }
    }
}

/// The natgw binary the tests run: `$NATGW_BIN` ([`NATGW_BIN_ENV`]), set by
/// `cargo xtask test`, or else `target/release/natgw` of this workspace.
///
/// # Errors
/// [`NatgwError::BinaryNotFound`] when there is no file there.
pub fn natgw_bin_from_env() -> Result<PathBuf, NatgwError> {
    let path = std::env::var_os(NATGW_BIN_ENV).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/natgw"),
        PathBuf::from,
    );
    if path.exists() {
        Ok(path)
    } else {
        Err(NatgwError::BinaryNotFound { path })
    }
}

/// [`natgw_bin_from_env`] for tests.
///
/// # Panics
/// When the binary is missing.
#[must_use]
pub fn natgw_bin() -> PathBuf {
    natgw_bin_from_env().unwrap_or_else(|e| panic!("{e}"))
}

/// Fails a test with a clear message unless it runs as root.
///
/// # Panics
/// When not root: the tests create network namespaces and load BPF programs.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "natgw's integration tests need root (network namespaces, BPF): run them with `cargo xtask test` as root"
    );
}

/// natgw's pin and state directories for the namespace `ns`:
/// `{PIN_ROOT,STATE_ROOT}/net-<inode of the namespace>`.
///
/// # Errors
/// When the namespace file cannot be read.
pub fn runtime_dirs(ns: &Netns) -> Result<[PathBuf; 2], NatgwError> {
    let inode = std::fs::metadata(ns.path())
        .map_err(|e| NatgwError::setup(format!("reading the inode of {}", ns.path().display()), e))?
        .ino();
    let name = format!("net-{inode}");
    Ok([PIN_ROOT, STATE_ROOT].map(|root| Path::new(root).join(&name)))
}

/// Removes natgw's pin and state directories of the namespace with inode `inode`
/// (natgw leaves its data path pinned when it stops), if there are any.
pub fn remove_runtime_dirs(inode: u64) {
    let name = format!("net-{inode}");
    for root in [PIN_ROOT, STATE_ROOT] {
        let dir = Path::new(root).join(&name);
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                let _ = writeln!(io::stderr(), "testbed: removing {}: {e}", dir.display());
            }
        }
        // Only succeeds when no other namespace's natgw uses the root.
        let _ = std::fs::remove_dir(root);
    }
}

/// How to start natgw; made by [`Natgw::builder`], used by [`NatgwBuilder::start`].
#[derive(Debug, Clone)]
pub struct NatgwBuilder {
    bin: PathBuf,
    ifaces: Vec<String>,
    args: Vec<String>,
    log: Option<PathBuf>,
    rust_log: Option<String>,
    env: Vec<(String, String)>,
    ready_within: Duration,
    stop_within: Duration,
    cli_within: Option<Duration>,
    log_lines_in_errors: Option<usize>,
    own_process_group: bool,
    cpu: Option<usize>,
    nice: Option<i32>,
    remove_leftovers: bool,
    interrupted: Option<fn() -> bool>,
}

impl NatgwBuilder {
    /// The arguments that name natgw's interfaces (default: the [`crate::Testbed`]
    /// gateway's, `--wan wan0 --lan lan0 --lan lan1`).
    #[must_use]
    pub fn ifaces<I>(mut self, ifaces: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.ifaces = ifaces.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// Sets an environment variable for natgw (`NOTIFY_SOCKET`, say; `RUST_LOG` is
    /// [`NatgwBuilder::rust_log`]'s).
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds `natgw run` arguments, after the interfaces.
    #[must_use]
    pub fn args<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Writes natgw's stdout and stderr to `path` (its directory is created) and keeps
    /// the file. Without it, the log is a temporary file removed on drop.
    #[must_use]
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// `RUST_LOG` for natgw (default `debug`: tests read its debug lines); `None`
    /// leaves it to the caller's environment.
    #[must_use]
    pub fn rust_log(mut self, filter: Option<&str>) -> Self {
        self.rust_log = filter.map(str::to_owned);
        self
    }

    /// How long natgw may take to answer `natgw status` (default [`READY_WAIT`]).
    #[must_use]
    pub fn ready_within(mut self, limit: Duration) -> Self {
        self.ready_within = limit;
        self
    }

    /// How long natgw may take to exit after SIGTERM (default [`STOP_WAIT`]).
    #[must_use]
    pub fn stop_within(mut self, limit: Duration) -> Self {
        self.stop_within = limit;
        self
    }

    /// Kills a CLI command that runs longer than `limit` (default: no limit).
    #[must_use]
    pub fn cli_within(mut self, limit: Duration) -> Self {
        self.cli_within = Some(limit);
        self
    }

    /// Errors quote the last `lines` lines of natgw's log, indented (default: the
    /// whole log, as it is).
    #[must_use]
    pub fn log_lines_in_errors(mut self, lines: usize) -> Self {
        self.log_lines_in_errors = Some(lines);
        self
    }

    /// Gives natgw and every CLI command a process group of their own, so a Ctrl-C at
    /// the terminal reaches the caller only, which then stops natgw in order.
    #[must_use]
    pub fn own_process_group(mut self) -> Self {
        self.own_process_group = true;
        self
    }

    /// Runs every natgw thread on `cpu`.
    #[must_use]
    pub fn cpu(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// Runs natgw at this nice value (`-20`: first in line).
    #[must_use]
    pub fn nice(mut self, nice: i32) -> Self {
        self.nice = Some(nice);
        self
    }

    /// Removes natgw's pin and state directories ([`runtime_dirs`]) when it has
    /// exited, if it left them (it was killed, or failed to clean up): for namespaces
    /// about to disappear. Tests of what a crash leaves behind must not ask for this.
    #[must_use]
    pub fn remove_leftovers(mut self) -> Self {
        self.remove_leftovers = true;
        self
    }

    /// Checks `interrupted` while waiting for natgw to come up; when it returns true,
    /// natgw is stopped and the start fails with [`NatgwError::Interrupted`].
    #[must_use]
    pub fn interrupted_by(mut self, interrupted: fn() -> bool) -> Self {
        self.interrupted = Some(interrupted);
        self
    }

    /// The arguments natgw will be started with: `run IFACES... ARGS...`.
    #[must_use]
    pub fn run_args(&self) -> Vec<String> {
        std::iter::once("run".to_owned())
            .chain(self.ifaces.iter().cloned())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// The log file natgw will write: the one given to [`NatgwBuilder::log`], or a
    /// temporary one named after `ns`.
    #[must_use]
    pub fn log_path(&self, ns: &Netns) -> PathBuf {
        self.log
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("natgw-test-{}.log", ns.name())))
    }

    /// Starts natgw in `ns` and waits until `natgw status --json` answers.
    ///
    /// # Errors
    /// When natgw cannot be spawned, exits during start-up, does not answer within the
    /// limit (it is killed then) or the start is interrupted.
    pub fn start(self, ns: &Netns) -> Result<Natgw, NatgwError> {
        let mut natgw = self.spawn(ns)?;
        natgw.wait_ready()?;
        Ok(natgw)
    }

    /// Starts natgw in `ns` without waiting for it: for starting several at once, then
    /// [`Natgw::wait_ready`] on each.
    ///
    /// # Errors
    /// When the log file cannot be created or natgw cannot be spawned.
    pub fn spawn(self, ns: &Netns) -> Result<Natgw, NatgwError> {
        let gateway = Netns::open(ns.name()).map_err(|e| {
            NatgwError::setup(
                format!("opening namespace {}", ns.name()),
                io::Error::other(e.chain()),
            )
        })?;
        let dirs = runtime_dirs(ns)?;
        let log = self.log_path(ns);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                NatgwError::setup(format!("creating {} for natgw's log", dir.display()), e)
            })?;
        }
        let log_file = std::fs::File::create(&log)
            .map_err(|e| NatgwError::setup(format!("creating natgw's log {}", log.display()), e))?;
        let stdout = log_file.try_clone().map_err(|e| {
            NatgwError::setup(format!("duplicating the handle of {}", log.display()), e)
        })?;
        let cpus = match self.cpu {
            Some(cpu) => {
                let mut set = CpuSet::new();
                set.set(cpu).map_err(|e| {
                    NatgwError::setup(format!("choosing CPU {cpu} for natgw"), e.into())
                })?;
                Some(set)
            }
            None => None,
        };
        let mut cmd = child_command(ns, &self.bin, self.own_process_group, cpus, self.nice);
        cmd.args(self.run_args())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file);
        if let Some(filter) = &self.rust_log {
            cmd.env("RUST_LOG", filter);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().map_err(|e| {
            NatgwError::setup(
                format!("starting {} in {}", self.bin.display(), ns.name()),
                e,
            )
        })?;
        let leftovers = self.remove_leftovers.then(|| dirs.clone());
        let pid = child.id();
        register(pid, leftovers);
        Ok(Natgw {
            child: Some(child),
            pid,
            gateway,
            dirs,
            log,
            temporary_log: self.log.is_none(),
            config: self,
        })
    }
}

/// How natgw ended after [`Natgw::stop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited after SIGTERM.
    Terminated(ExitStatus),
    /// It had exited on its own before it was stopped.
    AlreadyExited(ExitStatus),
}

impl Exit {
    /// Its exit status.
    #[must_use]
    pub fn status(self) -> ExitStatus {
        match self {
            Self::Terminated(status) | Self::AlreadyExited(status) => status,
        }
    }
}

/// `natgw run` in a network namespace; stopped with SIGTERM when dropped.
pub struct Natgw {
    child: Option<Child>,
    /// The child's pid, also once it is reaped.
    pid: u32,
    /// A non-owning handle on the namespace, for the CLI calls.
    gateway: Netns,
    dirs: [PathBuf; 2],
    log: PathBuf,
    temporary_log: bool,
    config: NatgwBuilder,
}

impl fmt::Debug for Natgw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Natgw")
            .field("pid", &self.pid())
            .field("namespace", &self.gateway.name())
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl Natgw {
    /// How to start the natgw binary `bin`, with the defaults described in the module
    /// documentation.
    #[must_use]
    pub fn builder(bin: impl Into<PathBuf>) -> NatgwBuilder {
        NatgwBuilder {
            bin: bin.into(),
            ifaces: [
                "--wan",
                GW_WAN_IF,
                "--lan",
                GW_LAN_IFS[0],
                "--lan",
                GW_LAN_IFS[1],
            ]
            .map(str::to_owned)
            .to_vec(),
            args: Vec::new(),
            log: None,
            rust_log: Some("debug".to_owned()),
            env: Vec::new(),
            ready_within: READY_WAIT,
            stop_within: STOP_WAIT,
            cli_within: None,
            log_lines_in_errors: None,
            own_process_group: false,
            cpu: None,
            nice: None,
            remove_leftovers: false,
            interrupted: None,
        }
    }

    /// Polls `natgw status --json` until it answers and returns how long that took.
    /// natgw is killed when it does not answer in time, stopped when the start is
    /// interrupted.
    ///
    /// # Errors
    /// When natgw exits, does not answer in time or the start is interrupted.
    pub fn wait_ready(&mut self) -> Result<Duration, NatgwError> {
        let started = Instant::now();
        loop {
            if self
                .config
                .interrupted
                .is_some_and(|interrupted| interrupted())
            {
                let _ = self.stop();
                return Err(NatgwError::Interrupted);
            }
            if let Some(status) = self.exited()? {
                // Nothing left to stop: keep Drop from signalling a reaped pid.
                self.child = None;
                self.reaped();
                return Err(NatgwError::ExitedDuringStartup {
                    status,
                    log: self.log_excerpt(),
                });
            }
            let last = match self.cli(&["status", "--json"]) {
                Ok(out) if out.status.success() => return Ok(started.elapsed()),
                Ok(out) => format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > self.config.ready_within {
                // Killed rather than stopped: one that never came up may not stop either.
                let _ = self.kill();
                return Err(NatgwError::NotReady {
                    within: self.config.ready_within,
                    last,
                    log: self.log_excerpt(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs `natgw ARGS` in natgw's namespace (within the limit of
    /// [`NatgwBuilder::cli_within`]); a non-zero exit is in the output, not an error.
    ///
    /// # Errors
    /// When the command cannot be run or runs past its limit.
    pub fn cli(&self, args: &[&str]) -> Result<Output, NatgwError> {
        let mut cmd = child_command(
            &self.gateway,
            &self.config.bin,
            self.config.own_process_group,
            None,
            None,
        );
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = args.join(" ");
        let child = cmd
            .spawn()
            .map_err(|e| NatgwError::setup(format!("running `natgw {command}`"), e))?;
        match self.config.cli_within {
            None => child
                .wait_with_output()
                .map_err(|e| NatgwError::setup(format!("running `natgw {command}`"), e)),
            Some(within) => output_within(child, within)
                .map_err(|e| NatgwError::setup(format!("running `natgw {command}`"), e))?
                .ok_or(NatgwError::CliTimeout { command, within }),
        }
    }

    /// Runs `natgw ARGS` and returns its standard output.
    ///
    /// # Errors
    /// As [`Natgw::cli`], and [`NatgwError::Cli`] when it exits non-zero.
    pub fn cli_text(&self, args: &[&str]) -> Result<String, NatgwError> {
        let out = self.cli(args)?;
        if !out.status.success() {
            return Err(NatgwError::Cli {
                command: args.join(" "),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `natgw ARGS` and parses its standard output as JSON.
    ///
    /// # Errors
    /// As [`Natgw::cli_text`], and [`NatgwError::Json`] when it is not JSON.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value, NatgwError> {
        let text = self.cli_text(args)?;
        serde_json::from_str(&text).map_err(|e| NatgwError::Json {
            command: args.join(" "),
            what: e.to_string(),
        })
    }

    /// `natgw status --json`.
    ///
    /// # Errors
    /// As [`Natgw::cli_json`].
    pub fn status(&self) -> Result<Value, NatgwError> {
        self.cli_json(&["status", "--json"])
    }

    /// `natgw mappings --json`: a list, or the list under `mappings`.
    ///
    /// # Errors
    /// As [`Natgw::cli_json`], and when it holds no list.
    pub fn mappings(&self) -> Result<Vec<Value>, NatgwError> {
        let args = ["mappings", "--json"];
        let v = self.cli_json(&args)?;
        v.as_array()
            .or_else(|| v.get("mappings").and_then(Value::as_array))
            .cloned()
            .ok_or_else(|| NatgwError::Json {
                command: args.join(" "),
                what: "no list of mappings".to_owned(),
            })
    }

    /// The `proto` (`udp`, `tcp`, `icmp`) mapping whose internal endpoint is
    /// `internal`, if listed.
    ///
    /// # Errors
    /// As [`Natgw::mappings`].
    pub fn mapping_of(
        &self,
        proto: &str,
        internal: SocketAddrV4,
    ) -> Result<Option<Value>, NatgwError> {
        let internal = internal.to_string();
        Ok(self.mappings()?.into_iter().find(|m| {
            m["protocol"].as_str() == Some(proto)
                && m["internal"].as_str() == Some(internal.as_str())
        }))
    }

    /// A counter of `natgw status --json`, summed over CPUs: from
    /// `{"counters": {"name": n}}` or `{"counters": [{"name": .., "value": n}]}`.
    ///
    /// # Errors
    /// As [`Natgw::status`], and [`NatgwError::NoCounter`] when it is not listed.
    pub fn counter(&self, name: &str) -> Result<u64, NatgwError> {
        let status = self.status()?;
        let counters = &status["counters"];
        counters[name]
            .as_u64()
            .or_else(|| counters.as_array()?.iter().find(|c| c["name"] == name)?["value"].as_u64())
            .ok_or_else(|| NatgwError::NoCounter {
                name: name.to_owned(),
                status: status.clone(),
            })
    }

    /// `Some(status)` once natgw has exited on its own (it still counts as running
    /// for [`Natgw::stop`], which then reports [`Exit::AlreadyExited`]).
    ///
    /// # Errors
    /// When its state cannot be read.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>, NatgwError> {
        match self.child.as_mut() {
            Some(child) => child
                .try_wait()
                .map_err(|e| NatgwError::setup("checking whether natgw still runs", e)),
            None => Ok(None),
        }
    }

    /// Whether natgw was started and not yet stopped or killed.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// natgw's process id while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The natgw binary.
    #[must_use]
    pub fn bin(&self) -> &Path {
        &self.config.bin
    }

    /// The namespace natgw runs in.
    #[must_use]
    pub fn namespace(&self) -> &Netns {
        &self.gateway
    }

    /// The arguments natgw was started with: `run IFACES... ARGS...`.
    #[must_use]
    pub fn run_args(&self) -> Vec<String> {
        self.config.run_args()
    }

    /// Its pin directory (`/sys/fs/bpf/natgw/net-<inode>`).
    #[must_use]
    pub fn pin_dir(&self) -> &Path {
        &self.dirs[0]
    }

    /// Its state directory (`/run/natgw/net-<inode>`).
    #[must_use]
    pub fn state_dir(&self) -> &Path {
        &self.dirs[1]
    }

    /// natgw's log file.
    #[must_use]
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// natgw's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of natgw's log, each indented as `  | LINE`, for error
    /// messages.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        if tail.is_empty() {
            return format!("  ({} is empty)", self.log.display());
        }
        tail.iter()
            .map(|line| format!("  | {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The log as errors quote it.
    fn log_excerpt(&self) -> String {
        match self.config.log_lines_in_errors {
            Some(lines) => self.log_tail(lines),
            None => self.log(),
        }
    }

    /// Sends SIGTERM and waits for natgw to exit; SIGKILL after the limit of
    /// [`NatgwBuilder::stop_within`].
    ///
    /// # Errors
    /// [`NatgwError::NotRunning`] when it was stopped already,
    /// [`NatgwError::DidNotStop`] when it had to be killed.
    pub fn stop(&mut self) -> Result<Exit, NatgwError> {
        let mut child = self.child.take().ok_or(NatgwError::NotRunning)?;
        let outcome = terminate(&mut child, self.config.stop_within);
        self.reaped();
        match outcome? {
            Some(exit) => Ok(exit),
            None => Err(NatgwError::DidNotStop {
                within: self.config.stop_within,
                log: self.log_excerpt(),
            }),
        }
    }

    /// [`Natgw::stop`] that only succeeds when SIGTERM made natgw exit with success;
    /// `Ok(None)` when it was stopped already.
    ///
    /// # Errors
    /// As [`Natgw::stop`], and [`NatgwError::ExitedEarly`] or [`NatgwError::Unclean`].
    pub fn stop_cleanly(&mut self) -> Result<Option<ExitStatus>, NatgwError> {
        if self.child.is_none() {
            return Ok(None);
        }
        match self.stop()? {
            Exit::Terminated(status) if status.success() => Ok(Some(status)),
            Exit::Terminated(status) => Err(NatgwError::Unclean {
                status,
                log: self.log_excerpt(),
            }),
            Exit::AlreadyExited(status) => Err(NatgwError::ExitedEarly {
                status,
                log: self.log_excerpt(),
            }),
        }
    }

    /// Kills natgw with SIGKILL (a crash: natgw cleans nothing up) and waits for it.
    ///
    /// # Errors
    /// [`NatgwError::NotRunning`] when it was stopped already.
    pub fn kill(&mut self) -> Result<ExitStatus, NatgwError> {
        let mut child = self.child.take().ok_or(NatgwError::NotRunning)?;
        let _ = child.kill();
        let status = child.wait();
        self.reaped();
        status.map_err(|e| NatgwError::setup("waiting for the killed natgw", e))
    }

    /// Bookkeeping once natgw's process is gone: off the list of running ones, and its
    /// leftovers removed if asked for.
    fn reaped(&self) {
        if let Some(leftovers) = unregister(self.pid) {
            remove_leftovers(&leftovers);
        }
    }
}

impl Drop for Natgw {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.stop() {
                let _ = writeln!(
                    io::stderr(),
                    "testbed: stopping natgw in {}: {e}",
                    self.gateway.name()
                );
            }
        }
        if self.temporary_log {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A command for `bin` in `ns` that starts with no signal blocked, in a process group
/// of its own if `own_group`, on `cpus` and at `nice` if given.
fn child_command(
    ns: &Netns,
    bin: &Path,
    own_group: bool,
    cpus: Option<CpuSet>,
    nice: Option<i32>,
) -> Command {
    let mut cmd = ns.command(bin);
    if own_group {
        cmd.process_group(0);
    }
    let setup = move || -> io::Result<()> {
        SigSet::empty().thread_set_mask()?;
        if let Some(set) = &cpus {
            nix::sched::sched_setaffinity(Pid::from_raw(0), set)?;
        }
        if let Some(nice) = nice {
            // SAFETY: setpriority(2) on this process, with plain integers.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: between fork and exec the closure only calls pthread_sigmask,
    // sched_setaffinity(2) and setpriority(2) on values built before the fork; it
    // neither allocates nor locks.
    unsafe { cmd.pre_exec(setup) };
    cmd
}

/// SIGTERM, up to `within` for `child` to exit, then SIGKILL (`Ok(None)`).
fn terminate(child: &mut Child, within: Duration) -> Result<Option<Exit>, NatgwError> {
    let waiting = |e| NatgwError::setup("waiting for natgw to exit", e);
    if let Some(status) = child.try_wait().map_err(waiting)? {
        return Ok(Some(Exit::AlreadyExited(status)));
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().map_err(waiting)? {
            return Ok(Some(Exit::Terminated(status)));
        }
        std::thread::sleep(EXIT_POLL);
    }
    let _ = child.kill();
    child.wait().map_err(waiting)?;
    Ok(None)
}

/// Waits for `child`, whose stdout and stderr are piped, and collects its output;
/// `Ok(None)` when it ran past `limit` and was killed.
fn output_within(mut child: Child, limit: Duration) -> io::Result<Option<Output>> {
    // Both pipes are read on threads so a chatty command cannot block on a full pipe
    // while this thread watches the clock.
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
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Some(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }))
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

/// A natgw this process started and has not reaped yet, for [`force_stop_all`].
struct Running {
    pid: u32,
    /// Its directories, when it was started with [`NatgwBuilder::remove_leftovers`].
    leftovers: Option<[PathBuf; 2]>,
}

static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<Running>> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

fn register(pid: u32, leftovers: Option<[PathBuf; 2]>) {
    running().push(Running { pid, leftovers });
}

/// Takes `pid` off the list; the directories to remove if it was listed with them.
fn unregister(pid: u32) -> Option<[PathBuf; 2]> {
    let mut all = running();
    let at = all.iter().position(|r| r.pid == pid)?;
    all.swap_remove(at).leftovers
}

/// Removes the directories natgw left, if they still exist.
fn remove_leftovers(dirs: &[PathBuf; 2]) {
    for dir in dirs.iter().filter(|dir| dir.exists()) {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {
                let _ = writeln!(
                    io::stderr(),
                    "testbed: removed {}, which natgw left behind",
                    dir.display()
                );
            }
            Err(e) => {
                let _ = writeln!(io::stderr(), "testbed: removing {}: {e}", dir.display());
            }
        }
        if let Some(root) = dir.parent() {
            // Only succeeds when no other namespace's natgw uses the root.
            let _ = std::fs::remove_dir(root);
        }
    }
}

/// Stops every natgw this process started and has not stopped yet — SIGTERM, a few
/// seconds, SIGKILL — and removes what they left where asked to: the last resort of a
/// signal-handling thread while another thread may still hold the [`Natgw`] values
/// (reaping their processes here is harmless when the process exits right after).
pub fn force_stop_all() {
    let all = std::mem::take(&mut *running());
    let pids: Vec<Pid> = all
        .iter()
        .filter_map(|r| i32::try_from(r.pid).ok())
        .map(Pid::from_raw)
        .collect();
    for &pid in &pids {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let left = reap_within(&pids, Duration::from_secs(3));
    for &pid in &left {
        let _ = kill(pid, Signal::SIGKILL);
    }
    reap_within(&left, Duration::from_secs(2));
    for leftovers in all.iter().filter_map(|r| r.leftovers.as_ref()) {
        remove_leftovers(leftovers);
    }
}

/// Waits up to `limit` for the children `pids` to exit; those still running.
fn reap_within(pids: &[Pid], limit: Duration) -> Vec<Pid> {
    let deadline = Instant::now() + limit;
    let mut left = pids.to_vec();
    loop {
        left.retain(|&pid| {
            // ECHILD: already reaped (by the thread holding its `Child`).
            !matches!(
                waitpid(pid, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD)
            )
        });
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(EXIT_POLL);
    }
}
