//! The two kernel-side GC prototypes of `--gc-designs` (issue #18), run on maps of
//! natgw's layout with the programs of `natgw-ebpf/src/bench.rs` (`bench::gc`), driven
//! by `xdp_replay` through `BPF_PROG_TEST_RUN` (one frame per internal endpoint of
//! [`cost::fill_maps`]' million):
//!
//! - [`lazy`]: *lazy expiry on lookup* (`xdp_gc_lazy` on `GC_FWD`/`GC_REV`, filled by
//!   `cost::fill_maps`): the per-packet cost of the check on a hit against the same
//!   program without it; how many mappings are left after an idle window past their
//!   timeout; the time to expire them all if every endpoint sends one packet.
//! - [`timer`]: *in-kernel expiry with `bpf_timer`* (`xdp_gc_timer` on `GC_TIMED`, a
//!   BTF map whose values hold a `struct bpf_timer`): the million created with an
//!   armed timer each, the per-packet cost of re-arming on a hit, the time from the
//!   timeout to an empty table, and the kernel's softirq time while they live and
//!   when they fire.
//!
//! The measuring thread is pinned to one CPU throughout: `xdp_replay`'s sequence is
//! per CPU, so a migration between repetitions would skip endpoints.

use std::os::fd::AsFd as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues};
use natgw_common::bench::{
    names as map_names, GC_CFG_EXPIRE, GC_CFG_TIMEOUT_NS, GC_STAT_ARMED, GC_STAT_ERROR,
    GC_STAT_FIRED, GC_STAT_HIT, GC_STAT_LAZY_EXPIRED, GC_STAT_MISS, GC_STAT_SLOTS,
    GC_STAT_TIMER_INIT_FAILED, GC_TIMER_ERRNOS, GC_TIMER_ERR_SLOTS, GC_TIMER_HELPERS,
};
use natgw_common::time::monotonic_ns;
use natgw_common::{FwdKey, RevKey, NS_PER_SEC};

use super::bpf;
use super::cost;
use super::frames::{self, Endpoints, L4};
use super::programs::{FlowSpec, Tools};
use crate::signals;

/// The prototypes' programs (natgw-ebpf/src/main.rs).
pub mod names {
    /// Lazy expiry on lookup.
    pub const XDP_GC_LAZY: &str = "xdp_gc_lazy";
    /// In-kernel expiry with `bpf_timer`.
    pub const XDP_GC_TIMER: &str = "xdp_gc_timer";
}

/// Repetitions of one per-packet timing run (as the cost test's program-only rows).
pub const REPEAT: u32 = cost::AMORTISED_REPEAT;
/// Timing runs per variant, alternated with the other variant's.
pub const RUNS: usize = 3;
/// Frames per test run while the timer design creates its mappings.
const FILL_CHUNK: u32 = 4096;
/// Rounds over the endpoints the timer design may take to create them all.
const FILL_ROUNDS: u32 = 20;
/// ... and at most this long.
const FILL_LIMIT: Duration = Duration::from_secs(90);
/// The pause between two runs of the fill.
const FILL_PAUSE: Duration = Duration::from_millis(2);
/// How long the lazy table is left idle past the timeout before it is counted.
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// How long the timer design may take to empty its table.
const EXPIRE_LIMIT: Duration = Duration::from_secs(120);
/// `XDP_PASS`: what both programs return on a hit.
const XDP_PASS: u32 = 2;

/// What the lazy prototype measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lazy {
    /// ns per packet on a hit with the expiry check (median of [`RUNS`]).
    pub check_ns: f64,
    /// ns per packet on a hit without it (median of [`RUNS`]).
    pub base_ns: f64,
    /// Seconds the expired table was left without traffic.
    pub idle_window_s: f64,
    /// Mappings still in `GC_FWD` after that window.
    pub left_after_idle: u64,
    /// The measuring thread's CPU over the window (seconds).
    pub idle_thread_cpu_s: f64,
    /// Wall time of one packet from every endpoint after the timeout, which expires
    /// them all (seconds).
    pub expire_all_s: f64,
    /// The kernel's ns per packet of that run.
    pub expire_ns_per_packet: f64,
}

/// What the `bpf_timer` prototype measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Timer {
    /// Wall time to create the million with an armed timer each (seconds).
    pub fill_s: f64,
    /// ns per packet on a hit that re-arms the timer (median of [`RUNS`]).
    pub rearm_ns: f64,
    /// ns per packet on a hit without re-arming (median of [`RUNS`]).
    pub base_ns: f64,
    /// From the first mapping's deadline (the start of the last packet round + the
    /// timeout) to an empty table (seconds).
    pub expire_from_first_s: f64,
    /// From the last mapping's deadline (the end of that round + the timeout) to an
    /// empty table (seconds).
    pub expire_from_last_s: f64,
    /// Seconds the armed million lived idle (measured window).
    pub idle_window_s: f64,
    /// The measuring thread's CPU over that window (seconds).
    pub idle_thread_cpu_s: f64,
    /// Softirq CPU of all CPUs over the idle window (seconds, `/proc/stat`).
    pub idle_softirq_s: f64,
    /// Softirq CPU of all CPUs from the end of the idle window to the empty table.
    pub fire_softirq_s: f64,
    /// Length of that firing window (seconds).
    pub fire_window_s: f64,
    /// `HRTIMER` softirqs raised over the idle window (`/proc/softirqs`).
    pub idle_hrtimer_softirqs: u64,
    /// `HRTIMER` softirqs raised over the firing window.
    pub fire_hrtimer_softirqs: u64,
    /// Callbacks that deleted their mapping.
    pub fired: u64,
    /// `bpf_timer_init` failures while creating the million (each retried).
    pub init_failures: u64,
    /// The timer helpers' failures by error code ([`helper_errors`]), `none` if none.
    pub helper_errors: String,
}

/// The kernel-side prototypes on the same `mappings`: lazy expiry with the programs
/// of natgw's `object`, `bpf_timer` with those of the bench's BTF object (built
/// here; the error instead of figures if it cannot be built or loaded).
pub fn run(object: &Path, mappings: u32) -> Result<(Lazy, Result<Timer, String>)> {
    let _pin = Pinned::here()?;
    let lazy = {
        let mut tools = Tools::load_with(
            object,
            &[
                (map_names::GC_FWD, cost::SCALE_CAPACITY),
                (map_names::GC_REV, cost::SCALE_CAPACITY),
            ],
            &[names::XDP_GC_LAZY],
        )
        .context("loading the lazy-expiry prototype (xdp_gc_lazy)")?;
        let lazy = lazy(&mut tools, mappings)?;
        tools.clear_replay_target()?;
        lazy
    };
    signals::check()?;
    let timer_object = match crate::build::gc_timer_object() {
        Ok(path) => path,
        Err(e) => return Ok((lazy, Err(format!("{e:#}")))),
    };
    let mut tools = match Tools::load_with(
        &timer_object,
        &[
            (map_names::GC_REV, cost::SCALE_CAPACITY),
            (map_names::GC_TIMED, cost::SCALE_CAPACITY),
        ],
        &[names::XDP_GC_TIMER],
    ) {
        Ok(tools) => tools,
        Err(e) => {
            return Ok((
                lazy,
                Err(format!(
                    "loading xdp_gc_timer from {}: {e:#}",
                    timer_object.display()
                )),
            ))
        }
    };
    // A failure here (the timers could not all be armed) is the row's finding, not
    // the end of the bench.
    let timer = timer(&mut tools, mappings).map_err(|e| format!("{e:#}"));
    tools.clear_replay_target()?;
    Ok((lazy, timer))
}

/// The frame of the filler's endpoint 0; `xdp_replay` varies it into endpoint `f`.
fn template() -> [u8; frames::FRAME_LEN] {
    let (src, sport) = cost::filler_endpoint(0);
    frames::build(
        L4::Udp,
        &Endpoints {
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            src,
            sport,
            dst: std::net::Ipv4Addr::new(192, 0, 2, 9),
            dport: 9,
        },
    )
}

/// Restarts `xdp_replay` at endpoint 0 of `mappings`, into `target`.
fn replay_from_start(tools: &mut Tools, target: &str, mappings: u32) -> Result<()> {
    tools.configure_gen(
        &template(),
        FlowSpec {
            flows: mappings,
            endpoints: mappings,
            ports_per_addr: cost::FILLER_PORTS_PER_ADDR,
        },
        0,
        0,
    )?;
    let prog = tools.prog_fd(target)?;
    tools.set_replay_target(prog)
}

/// One `xdp_replay` test run of `repeat` frames.
fn replay(tools: &Tools, repeat: u32) -> Result<bpf::TestRun> {
    bpf::test_run(tools.replay_fd()?, &template(), 0, repeat)
}

fn set_cfg(tools: &mut Tools, timeout_ns: u64, expire: bool) -> Result<()> {
    let mut cfg: Array<&mut MapData, u64> =
        Array::try_from(tools.map_mut(map_names::GC_CFG)?).context("GC_CFG")?;
    cfg.set(GC_CFG_TIMEOUT_NS, timeout_ns, 0)
        .context("writing GC_CFG")?;
    cfg.set(GC_CFG_EXPIRE, u64::from(expire), 0)
        .context("writing GC_CFG")
}

/// `GC_STATS` summed over CPUs, by slot.
fn stats(tools: &Tools) -> Result<[u64; GC_STAT_SLOTS as usize]> {
    let map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(tools.map(map_names::GC_STATS)?).context("GC_STATS")?;
    let mut out = [0u64; GC_STAT_SLOTS as usize];
    for (slot, v) in out.iter_mut().enumerate() {
        let values = map.get(&(slot as u32), 0).context("reading GC_STATS")?;
        *v = values.iter().copied().fold(0, u64::wrapping_add);
    }
    Ok(out)
}

/// The timer helpers' failures counted in `GC_TIMER_ERR`, by helper and error code:
/// `bpf_timer_init: -ENOMEM 7748828`, `none` if there were none.
fn helper_errors(tools: &Tools) -> Result<String> {
    let map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(tools.map(map_names::GC_TIMER_ERR)?).context("GC_TIMER_ERR")?;
    let mut out = Vec::new();
    for slot in 0..GC_TIMER_ERR_SLOTS {
        let values = map.get(&slot, 0).context("reading GC_TIMER_ERR")?;
        let n = values.iter().copied().fold(0, u64::wrapping_add);
        if n > 0 {
            let helper = GC_TIMER_HELPERS[(slot / GC_TIMER_ERRNOS) as usize];
            out.push(format!(
                "{helper}: {} {n}",
                errno_name(slot % GC_TIMER_ERRNOS)
            ));
        }
    }
    Ok(if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(", ")
    })
}

/// `-ENAME` of the error codes the timer helpers return (kernel/bpf/helpers.c).
fn errno_name(errno: u32) -> String {
    let name = match errno.try_into().unwrap_or(0) {
        libc::EPERM => "EPERM",
        libc::ENOMEM => "ENOMEM",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::EDEADLK => "EDEADLK",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("-{errno}"),
    };
    format!("-{name}")
}

fn reset_stats(tools: &mut Tools) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    if let Ok(map) = tools.map_mut(map_names::GC_TIMER_ERR) {
        let mut map: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(map).context("GC_TIMER_ERR")?;
        for slot in 0..GC_TIMER_ERR_SLOTS {
            let zeros = PerCpuValues::try_from(vec![0u64; cpus]).context("zeros")?;
            map.set(slot, zeros, 0).context("zeroing GC_TIMER_ERR")?;
        }
    }
    let mut map: PerCpuArray<&mut MapData, u64> =
        PerCpuArray::try_from(tools.map_mut(map_names::GC_STATS)?).context("GC_STATS")?;
    for slot in 0..GC_STAT_SLOTS {
        let zeros = PerCpuValues::try_from(vec![0u64; cpus]).context("zeros")?;
        map.set(slot, zeros, 0).context("zeroing GC_STATS")?;
    }
    Ok(())
}

fn map_data<'a>(tools: &'a Tools, name: &str) -> Result<&'a MapData> {
    match tools.map(name)? {
        aya::maps::Map::HashMap(data) => Ok(data),
        _ => anyhow::bail!("{name} is not a hash map"),
    }
}

/// Alternating timing runs of the two variants (`expire` off, then on), each
/// starting where the last left off in the endpoints: the medians (off, on).
fn alternate(tools: &mut Tools, timeout_ns: u64) -> Result<(f64, f64)> {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        for expire in [false, true] {
            signals::check()?;
            set_cfg(tools, timeout_ns, expire)?;
            let r = replay(tools, REPEAT)?;
            ensure!(
                r.retval == XDP_PASS,
                "the replayed hit returned {} (not XDP_PASS)",
                r.retval
            );
            let ns = f64::from(r.duration_ns);
            if expire {
                on.push(ns);
            } else {
                off.push(ns);
            }
        }
    }
    Ok((super::report::median(&off), super::report::median(&on)))
}

/// Lazy expiry on lookup.
fn lazy(tools: &mut Tools, mappings: u32) -> Result<Lazy> {
    let timeout_ns = cost::GC_UDP_TIMEOUT * NS_PER_SEC;
    // (a) The check on a hit: the million live, every frame a hit.
    cost::fill_maps(
        map_data(tools, map_names::GC_FWD)?,
        map_data(tools, map_names::GC_REV)?,
        mappings,
        monotonic_ns(),
    )?;
    reset_stats(tools)?;
    replay_from_start(tools, names::XDP_GC_LAZY, mappings)?;
    let (base_ns, check_ns) = alternate(tools, timeout_ns)?;
    let s = stats(tools)?;
    ensure!(
        s[GC_STAT_HIT as usize] == 2 * RUNS as u64 * u64::from(REPEAT),
        "the live million were not all hits: {} hits, {} expired, {} missed",
        s[GC_STAT_HIT as usize],
        s[GC_STAT_LAZY_EXPIRED as usize],
        s[GC_STAT_MISS as usize]
    );

    // (b) The same million stamped a timeout ago, then no traffic for a while.
    let stamp = monotonic_ns().saturating_sub(timeout_ns + NS_PER_SEC);
    cost::fill_maps(
        map_data(tools, map_names::GC_FWD)?,
        map_data(tools, map_names::GC_REV)?,
        mappings,
        stamp,
    )?;
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    signals::sleep(IDLE_WINDOW)?;
    let idle_window_s = t0.elapsed().as_secs_f64();
    let idle_thread_cpu_s = (thread_cpu() - cpu0).as_secs_f64();
    let fwd = map_data(tools, map_names::GC_FWD)?;
    let left_after_idle =
        bpf::count_entries(fwd.fd().as_fd(), size_of::<FwdKey>(), cost::SCALE_CAPACITY)?;

    // (c) One packet from every endpoint: each finds its mapping expired.
    reset_stats(tools)?;
    set_cfg(tools, timeout_ns, true)?;
    replay_from_start(tools, names::XDP_GC_LAZY, mappings)?;
    let t0 = Instant::now();
    let r = replay(tools, mappings)?;
    let expire_all_s = t0.elapsed().as_secs_f64();
    let s = stats(tools)?;
    let fwd = map_data(tools, map_names::GC_FWD)?;
    let rev = map_data(tools, map_names::GC_REV)?;
    ensure!(
        s[GC_STAT_LAZY_EXPIRED as usize] == u64::from(mappings)
            && s[GC_STAT_ERROR as usize] == 0
            && bpf::is_empty(fwd.fd().as_fd(), size_of::<FwdKey>())?
            && bpf::is_empty(rev.fd().as_fd(), size_of::<RevKey>())?,
        "one packet per endpoint expired {} of {mappings} mappings ({} errors), the \
         tables are not empty",
        s[GC_STAT_LAZY_EXPIRED as usize],
        s[GC_STAT_ERROR as usize]
    );
    Ok(Lazy {
        check_ns,
        base_ns,
        idle_window_s,
        left_after_idle,
        idle_thread_cpu_s,
        expire_all_s,
        expire_ns_per_packet: f64::from(r.duration_ns),
    })
}

/// In-kernel expiry with `bpf_timer`.
fn timer(tools: &mut Tools, mappings: u32) -> Result<Timer> {
    let timeout_ns = cost::GC_UDP_TIMEOUT * NS_PER_SEC;
    let timed_key = size_of::<FwdKey>();
    // The million created, each with its timer armed (every frame a miss).
    reset_stats(tools)?;
    set_cfg(tools, timeout_ns, true)?;
    replay_from_start(tools, names::XDP_GC_TIMER, mappings)?;
    // In rounds of FILL_CHUNK frames: `bpf_timer_init` allocates, and an endpoint
    // whose timer could not be set up is undone and retried on a later round.
    let t0 = Instant::now();
    let mut sent = 0u64;
    let limit = u64::from(mappings) * u64::from(FILL_ROUNDS);
    let s = loop {
        signals::check()?;
        replay(tools, FILL_CHUNK)?;
        sent += u64::from(FILL_CHUNK);
        let s = stats(tools)?;
        if s[GC_STAT_ARMED as usize] >= u64::from(mappings)
            || sent >= limit
            || t0.elapsed() > FILL_LIMIT
        {
            break s;
        }
        // Time for the kernel's allocator between rounds of allocations.
        std::thread::sleep(FILL_PAUSE);
    };
    let fill_s = t0.elapsed().as_secs_f64();
    ensure!(
        s[GC_STAT_ARMED as usize] == u64::from(mappings) && s[GC_STAT_ERROR as usize] == 0,
        "xdp_gc_timer armed {} of {mappings} timers in {:.0} s ({} frames, at most \
         {FILL_ROUNDS} rounds of the endpoints in runs of {FILL_CHUNK} with {} ms \
         pauses): {} bpf_timer_init failures, {} other errors; by error code: {}",
        s[GC_STAT_ARMED as usize],
        t0.elapsed().as_secs_f64(),
        sent,
        FILL_PAUSE.as_millis(),
        s[GC_STAT_TIMER_INIT_FAILED as usize],
        s[GC_STAT_ERROR as usize],
        helper_errors(tools)?
    );
    let init_failures = s[GC_STAT_TIMER_INIT_FAILED as usize];

    // Re-arming on a hit against the hit alone.
    let (base_ns, rearm_ns) = alternate(tools, timeout_ns)?;

    // The last packet of every mapping (re-arming it), then silence.
    set_cfg(tools, timeout_ns, true)?;
    replay_from_start(tools, names::XDP_GC_TIMER, mappings)?;
    let first_touch = monotonic_ns();
    replay(tools, mappings)?;
    let last_touch = monotonic_ns();
    let s = stats(tools)?;
    ensure!(
        s[GC_STAT_FIRED as usize] == 0 && s[GC_STAT_ERROR as usize] == 0,
        "timers fired ({}) or failed ({}) before their timeout",
        s[GC_STAT_FIRED as usize],
        s[GC_STAT_ERROR as usize]
    );
    let first_due = first_touch + timeout_ns;
    let last_due = last_touch + timeout_ns;

    let k0 = KernelCpu::now()?;
    let cpu0 = thread_cpu();
    let idle_end = first_due.saturating_sub(NS_PER_SEC / 2);
    signals::sleep(Duration::from_nanos(
        idle_end.saturating_sub(monotonic_ns()),
    ))?;
    let idle_thread_cpu_s = (thread_cpu() - cpu0).as_secs_f64();
    let k1 = KernelCpu::now()?;

    let timed = map_data(tools, map_names::GC_TIMED)?.fd().as_fd();
    let deadline = Instant::now() + Duration::from_nanos(last_due - monotonic_ns()) + EXPIRE_LIMIT;
    let empty_at = loop {
        signals::check()?;
        if bpf::is_empty(timed, timed_key)? {
            break monotonic_ns();
        }
        ensure!(
            Instant::now() < deadline,
            "GC_TIMED was not empty {} s after the last timeout",
            EXPIRE_LIMIT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let k2 = KernelCpu::now()?;
    let s = stats(tools)?;
    let rev = map_data(tools, map_names::GC_REV)?;
    ensure!(
        s[GC_STAT_FIRED as usize] == u64::from(mappings)
            && s[GC_STAT_ERROR as usize] == 0
            && bpf::is_empty(rev.fd().as_fd(), size_of::<RevKey>())?,
        "{} of {mappings} timers fired ({} errors); GC_REV must be empty too",
        s[GC_STAT_FIRED as usize],
        s[GC_STAT_ERROR as usize]
    );
    Ok(Timer {
        fill_s,
        rearm_ns,
        base_ns,
        expire_from_first_s: signed_s(empty_at, first_due),
        expire_from_last_s: signed_s(empty_at, last_due),
        idle_window_s: k1.seconds_since(&k0),
        idle_thread_cpu_s,
        idle_softirq_s: k1.softirq_s - k0.softirq_s,
        fire_softirq_s: k2.softirq_s - k1.softirq_s,
        fire_window_s: k2.seconds_since(&k1),
        idle_hrtimer_softirqs: k1.hrtimer_softirqs.saturating_sub(k0.hrtimer_softirqs),
        fire_hrtimer_softirqs: k2.hrtimer_softirqs.saturating_sub(k1.hrtimer_softirqs),
        fired: s[GC_STAT_FIRED as usize],
        init_failures,
        helper_errors: helper_errors(tools)?,
    })
}

/// `a - b` in seconds, negative when `a` came first.
fn signed_s(a_ns: u64, b_ns: u64) -> f64 {
    (a_ns as f64 - b_ns as f64) / 1e9
}

/// This thread's CPU time (user and system).
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the call writes.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// The kernel's softirq accounting at one moment.
struct KernelCpu {
    at_ns: u64,
    /// Softirq time of all CPUs (`/proc/stat`, seconds).
    softirq_s: f64,
    /// `HRTIMER` softirqs raised on all CPUs (`/proc/softirqs`).
    hrtimer_softirqs: u64,
}

/// `USER_HZ`, the unit of `/proc/stat`.
const USER_HZ: f64 = 100.0;

impl KernelCpu {
    fn now() -> Result<KernelCpu> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let softirqs =
            std::fs::read_to_string("/proc/softirqs").context("reading /proc/softirqs")?;
        Ok(KernelCpu {
            at_ns: monotonic_ns(),
            softirq_s: stat_softirq_ticks(&stat).context("no cpu line in /proc/stat")? as f64
                / USER_HZ,
            hrtimer_softirqs: softirq_count(&softirqs, "HRTIMER")
                .context("no HRTIMER row in /proc/softirqs")?,
        })
    }

    fn seconds_since(&self, earlier: &KernelCpu) -> f64 {
        signed_s(self.at_ns, earlier.at_ns)
    }
}

/// The softirq column (the 7th number) of `/proc/stat`'s all-CPU `cpu` line.
fn stat_softirq_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    line.split_whitespace().nth(7)?.parse().ok()
}

/// The sum over CPUs of row `name` of `/proc/softirqs`.
fn softirq_count(softirqs: &str, name: &str) -> Option<u64> {
    let line = softirqs.lines().find(|l| {
        l.trim_start()
            .strip_prefix(name)
            .is_some_and(|r| r.starts_with(':'))
    })?;
    let (_, counts) = line.split_once(':')?;
    counts
        .split_whitespace()
        .map(str::parse::<u64>)
        .sum::<Result<u64, _>>()
        .ok()
}

/// The calling thread pinned to the CPU it runs on; its former affinity restored
/// on drop.
struct Pinned {
    before: nix::sched::CpuSet,
}

impl Pinned {
    fn here() -> Result<Pinned> {
        let me = nix::unistd::Pid::from_raw(0);
        let before = nix::sched::sched_getaffinity(me).context("sched_getaffinity")?;
        // SAFETY: no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        let cpu = usize::try_from(cpu).context("sched_getcpu")?;
        super::cpu::pin(0, cpu)?;
        Ok(Pinned { before })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &self.before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softirq_ticks_come_from_the_all_cpu_line() {
        let stat = "cpu  10 1 20 300 4 5 66 0 0 0\ncpu0 5 0 10 150 2 2 33 0 0 0\nintr 1\n";
        assert_eq!(stat_softirq_ticks(stat), Some(66));
        assert_eq!(stat_softirq_ticks("intr 1\n"), None);
    }

    #[test]
    fn softirq_rows_are_summed_over_cpus() {
        let softirqs = "                    CPU0       CPU1\n\
                                  HI:          1          0\n\
                             HRTIMER:         12         30\n\
                                 RCU:       5000       6000\n";
        assert_eq!(softirq_count(softirqs, "HRTIMER"), Some(42));
        assert_eq!(softirq_count(softirqs, "RCU"), Some(11_000));
        assert_eq!(softirq_count(softirqs, "TIMER"), None);
    }

    #[test]
    fn signed_seconds_go_negative_when_the_first_came_first() {
        assert!((signed_s(3_000_000_000, 1_000_000_000) - 2.0).abs() < 1e-9);
        assert!((signed_s(1_000_000_000, 1_500_000_000) + 0.5).abs() < 1e-9);
    }
}
