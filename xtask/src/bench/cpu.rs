//! Where the CPU time went during a measurement: per thread (the generator's thread,
//! the gateway's and the receiver's NAPI threads) from `/proc/<pid>/task/<tid>/schedstat`
//! (nanoseconds on the CPU), per process (natgw) from `/proc/<pid>/stat`, and per CPU
//! from `/proc/stat` (user, system, softirq, steal, idle).

use std::time::Instant;

use anyhow::{Context as _, Result};

/// Linux's `USER_HZ`: the unit of `/proc/stat` and `/proc/<pid>/stat` times.
const TICKS_PER_SEC: f64 = 100.0;

/// Something whose CPU time is sampled.
#[derive(Debug, Clone)]
pub enum Task {
    /// One thread, by process id and thread id (kernel threads: both the same).
    Thread { pid: i32, tid: i32 },
    /// A whole process, all its threads.
    Process { pid: i32 },
}

impl Task {
    /// A kernel thread.
    pub fn kthread(tid: i32) -> Task {
        Task::Thread { pid: tid, tid }
    }

    /// CPU time so far in seconds; 0 once the task is gone.
    fn cpu_seconds(&self) -> f64 {
        match *self {
            Task::Thread { pid, tid } => {
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                    .map_or(0.0, |ns| ns as f64 / 1e9)
            }
            Task::Process { pid } => std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // Fields after the parenthesised command name; utime and stime are
                    // fields 14 and 15 of the whole line.
                    let rest = &s[s.rfind(')')? + 2..];
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    let utime: u64 = f.get(11)?.parse().ok()?;
                    let stime: u64 = f.get(12)?.parse().ok()?;
                    Some((utime + stime) as f64 / TICKS_PER_SEC)
                })
                .unwrap_or(0.0),
        }
    }
}

/// One CPU's times from `/proc/stat`, in seconds.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    user: f64,
    system: f64,
    softirq: f64,
    steal: f64,
    idle: f64,
}

fn read_proc_stat() -> Result<Vec<CpuTimes>> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<f64> = l
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse::<f64>().unwrap_or(0.0) / TICKS_PER_SEC)
                .collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
            CpuTimes {
                user: at(0) + at(1),
                system: at(2) + at(5),
                softirq: at(6),
                steal: at(7),
                idle: at(3) + at(4),
            }
        })
        .collect())
}

/// A snapshot to subtract from a later one.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    tasks: Vec<f64>,
    cpus: Vec<CpuTimes>,
}

impl Snapshot {
    /// Seconds from this snapshot to `later`.
    pub fn seconds_until(&self, later: &Snapshot) -> f64 {
        later.at.duration_since(self.at).as_secs_f64().max(1e-9)
    }
}

/// Takes snapshots of a fixed list of named tasks.
#[derive(Debug, Clone, Default)]
pub struct Sampler {
    tasks: Vec<(&'static str, Task)>,
}

/// CPU use between two snapshots, in percent of one CPU.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    /// Per named task.
    pub tasks: Vec<(String, f64)>,
    /// Per CPU: busy (user + system + softirq), of which softirq, and steal.
    pub cpus: Vec<CpuUse>,
    /// Busy time of all CPUs not accounted to the named tasks: other processes on the
    /// machine, interrupts, kernel workers.
    pub others: f64,
}

/// One CPU's use, in percent.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuUse {
    /// user + system + softirq.
    pub busy: f64,
    /// Softirq alone.
    pub softirq: f64,
    /// Time the hypervisor gave to someone else.
    pub steal: f64,
}

impl Sampler {
    /// Adds a task under `name`.
    pub fn add(&mut self, name: &'static str, task: Task) {
        self.tasks.push((name, task));
    }

    /// Now.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            tasks: self.tasks.iter().map(|(_, t)| t.cpu_seconds()).collect(),
            cpus: read_proc_stat()?,
        })
    }

    /// Use between `a` and `b`.
    pub fn usage(&self, a: &Snapshot, b: &Snapshot) -> Usage {
        let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
        let pct = |d: f64| (d / wall * 100.0).max(0.0);
        let mut usage = Usage {
            tasks: self
                .tasks
                .iter()
                .zip(a.tasks.iter().zip(&b.tasks))
                .map(|((name, _), (x, y))| ((*name).to_owned(), pct(y - x)))
                .collect(),
            cpus: a
                .cpus
                .iter()
                .zip(&b.cpus)
                .map(|(x, y)| CpuUse {
                    busy: pct((y.user - x.user) + (y.system - x.system) + (y.softirq - x.softirq)),
                    softirq: pct(y.softirq - x.softirq),
                    steal: pct(y.steal - x.steal),
                })
                .collect(),
            others: 0.0,
        };
        let busy: f64 = usage.cpus.iter().map(|c| c.busy).sum();
        let ours: f64 = usage.tasks.iter().map(|(_, v)| v).sum();
        usage.others = (busy - ours).max(0.0);
        usage
    }
}

impl Usage {
    /// The use of the task called `name`, if sampled.
    pub fn task(&self, name: &str) -> Option<f64> {
        self.tasks.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// Pins thread `tid` (0: the calling thread) to `cpu`.
pub fn pin(tid: i32, cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set)
        .with_context(|| format!("pinning thread {tid} to CPU {cpu}"))
}

/// Raises thread `tid` (0: the calling thread) to nice -20, so that whatever else runs
/// on a shared machine gets what the bench leaves over rather than an equal share.
pub fn boost(tid: i32) -> Result<()> {
    let who = libc::id_t::try_from(tid).unwrap_or(0);
    // SAFETY: plain syscall on a thread id.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, -20) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("raising thread {tid} to nice -20"));
    }
    Ok(())
}

/// The bench's scheduling group raised to nice -20 while it lives. With
/// `kernel.sched_autogroup_enabled`, the scheduler first shares the CPUs between
/// sessions and only then applies nice within one, so a thread's nice alone does not
/// keep other sessions' work off the generator's CPU. The previous nice is restored on
/// drop.
pub struct AutogroupBoost {
    previous: Option<i32>,
}

const AUTOGROUP: &str = "/proc/self/autogroup";

impl AutogroupBoost {
    /// Raises this session's autogroup to nice -20 (no-op without autogroups).
    pub fn raise() -> AutogroupBoost {
        // "/autogroup-14 nice 0"
        let previous = std::fs::read_to_string(AUTOGROUP)
            .ok()
            .and_then(|s| s.split_whitespace().last()?.parse::<i32>().ok());
        if previous.is_some() && std::fs::write(AUTOGROUP, "-20").is_err() {
            return AutogroupBoost { previous: None };
        }
        AutogroupBoost { previous }
    }
}

impl Drop for AutogroupBoost {
    fn drop(&mut self) {
        if let Some(nice) = self.previous {
            let _ = std::fs::write(AUTOGROUP, nice.to_string());
        }
    }
}

/// Busy share of all CPUs over `over`, in percent of the whole machine.
pub fn machine_busy(over: std::time::Duration) -> Result<f64> {
    let a = read_proc_stat()?;
    std::thread::sleep(over);
    let b = read_proc_stat()?;
    let (mut busy, mut all) = (0.0, 0.0);
    for (x, y) in a.iter().zip(&b) {
        let d_busy = (y.user - x.user) + (y.system - x.system) + (y.softirq - x.softirq);
        busy += d_busy;
        all += d_busy + (y.idle - x.idle) + (y.steal - x.steal);
    }
    Ok(if all > 0.0 { busy / all * 100.0 } else { 0.0 })
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// Number of CPUs online.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}
