//! `--gc-designs`: garbage-collection designs measured against each other on the same
//! million-mapping table (issue #18).
//!
//! - *timing wheel + batched deletes* is natgw's own collector, measured by
//!   [`super::cost::gc`] on a running natgw (its CPU while the million live, the time
//!   from their timeout to an empty table);
//! - *batched deletes alone* (a full scan every `--gc-interval`, expired entries
//!   deleted with `BPF_MAP_DELETE_BATCH`) runs here, as a prototype of the same two
//!   phases on BPF hash maps of natgw's layout (`FwdKey -> Mapping`,
//!   `RevKey -> RevValue`, created here, preallocated like natgw's), filled like
//!   natgw's in the cost test;
//! - *lazy expiry on lookup* and *in-kernel expiry with `bpf_timer`* run as eBPF
//!   prototypes in natgw's object (`xdp_gc_lazy`, `xdp_gc_timer`), measured by
//!   [`super::gc_kernel`] on maps of the same layout holding the same million.
//!
//! CPU is the measuring thread's own (`CLOCK_THREAD_CPUTIME_ID`: user time plus the
//! kernel's time in its bpf(2) calls); the `bpf_timer` row also reports the kernel's
//! softirq time, where its callbacks run.

use std::collections::HashMap;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use aya::maps::MapData;
use natgw_common::batch;
use natgw_common::time::monotonic_ns;
use natgw_common::{FwdKey, Mapping, RevKey, RevValue, NS_PER_SEC};

use super::cost::{self, GcResult};
use super::gc_kernel::{self, REPEAT, RUNS};

/// Entries per `BPF_MAP_LOOKUP_BATCH` call (natgw's chunk).
const CHUNK: usize = 8192;
/// The tick interval of the designs that tick: natgw's default `--gc-interval`.
const INTERVAL: Duration = Duration::from_secs(1);
/// Idle scans measured (the median counts).
const IDLE_SCANS: usize = 3;

/// One design's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DesignRow {
    /// JSON key.
    pub key: &'static str,
    /// Row heading.
    pub label: &'static str,
    /// From the timeout to an empty table (seconds).
    pub expire_seconds: Option<f64>,
    /// Controller CPU while the million live idle (% of one core).
    pub idle_cpu_pct: Option<f64>,
    /// What it adds to a packet's cost (ns, `BPF_PROG_TEST_RUN` program-only, against
    /// the same program without it); `None` where it adds nothing to the data path.
    pub per_packet_ns: Option<f64>,
    /// What it adds to the per-packet path.
    pub per_packet: &'static str,
    /// How it was measured, or why it was not.
    pub note: String,
}

/// A preallocated BPF hash map of `K -> V` with room for `entries`.
fn hash_map<K, V>(entries: u32) -> Result<MapData> {
    /// The map-creation members of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_HASH: u32 = 1;
    let mut attr = CreateAttr {
        map_type: BPF_MAP_TYPE_HASH,
        key_size: u32::try_from(size_of::<K>())?,
        value_size: u32::try_from(size_of::<V>())?,
        max_entries: entries,
        map_flags: 0,
    };
    // SAFETY: `attr` is a properly laid out prefix of `union bpf_attr` (the kernel
    // zero-fills the rest) and points to nothing.
    let fd = unsafe { batch::bpf(BPF_MAP_CREATE, &mut attr) }.context("BPF_MAP_CREATE")?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd)?) };
    MapData::from_fd(fd).context("opening the new map")
}

/// The "batched deletes alone" collector: every tick a full batched scan of both
/// tables and the two-phase rule (a mapping expired on two scans with unchanged
/// stamps goes), the expired ones deleted with `BPF_MAP_DELETE_BATCH`.
struct ScanEveryTick<'a> {
    fwd: &'a MapData,
    rev: &'a MapData,
    timeout_ns: u64,
    candidates: HashMap<FwdKey, u64>,
}

impl ScanEveryTick<'_> {
    /// One tick; returns how many mappings it deleted.
    fn tick(&mut self, now_ns: u64) -> Result<usize> {
        let fwd: Vec<(FwdKey, Mapping)> = batch::lookup_batch(self.fwd, CHUNK)?;
        let rev: HashMap<RevKey, RevValue> =
            batch::lookup_batch(self.rev, CHUNK)?.into_iter().collect();
        let mut candidates = HashMap::new();
        let mut expired_fwd = Vec::new();
        let mut expired_rev = Vec::new();
        for (k, m) in fwd {
            let rk = RevKey::new(m.ext_addr_be, m.ext_port_be, k.proto);
            let last = m.last_out_ns.max(m.created_ns);
            if now_ns.saturating_sub(last) < self.timeout_ns {
                continue;
            }
            if self.candidates.get(&k) == Some(&last) {
                expired_fwd.push(k);
                if rev.get(&rk).is_some_and(|r| r.created_ns == m.created_ns) {
                    expired_rev.push(rk);
                }
            } else {
                candidates.insert(k, last);
            }
        }
        self.candidates = candidates;
        let mut deleted = 0;
        for chunk in expired_fwd.chunks(CHUNK) {
            deleted += batch::delete_batch::<FwdKey, Mapping>(self.fwd, chunk)?
                .iter()
                .filter(|d| **d)
                .count();
        }
        for chunk in expired_rev.chunks(CHUNK) {
            batch::delete_batch::<RevKey, RevValue>(self.rev, chunk)?;
        }
        Ok(deleted)
    }
}

/// "Batched deletes alone" on a fresh million: its CPU per idle scan (as a share of
/// the tick interval) and the time its two ticks take to empty the table.
fn scan_every_tick(mappings: u32) -> Result<DesignRow> {
    let fwd = hash_map::<FwdKey, Mapping>(cost::SCALE_CAPACITY)?;
    let rev = hash_map::<RevKey, RevValue>(cost::SCALE_CAPACITY)?;
    let stamp = monotonic_ns();
    cost::fill_maps(&fwd, &rev, mappings, stamp)?;
    let mut gc = ScanEveryTick {
        fwd: &fwd,
        rev: &rev,
        timeout_ns: cost::GC_UDP_TIMEOUT * NS_PER_SEC,
        candidates: HashMap::new(),
    };
    let mut idle = Vec::new();
    for _ in 0..IDLE_SCANS {
        crate::signals::check()?;
        let cpu = gc_kernel::thread_cpu();
        let deleted = gc.tick(monotonic_ns())?;
        anyhow::ensure!(
            deleted == 0,
            "the idle scan deleted {deleted} live mappings"
        );
        idle.push((gc_kernel::thread_cpu() - cpu).as_secs_f64());
    }
    let idle_cpu_pct = super::report::median(&idle) / INTERVAL.as_secs_f64() * 100.0;
    // Expiry: the tick that finds them expired, the interval, the tick that deletes,
    // as if the first tick came right at the timeout.
    let at = stamp + gc.timeout_ns;
    let started = Instant::now();
    let first = gc.tick(at)?;
    let first_took = started.elapsed();
    let second_started = Instant::now();
    let deleted = gc.tick(at + INTERVAL.as_nanos() as u64)?;
    let second_took = second_started.elapsed();
    anyhow::ensure!(
        first == 0 && deleted == mappings as usize,
        "the scans deleted {first} and {deleted} of {mappings} mappings"
    );
    let expire = first_took.as_secs_f64() + INTERVAL.as_secs_f64() + second_took.as_secs_f64();
    Ok(DesignRow {
        key: "batched_deletes",
        label: "batched deletes alone (full scan every tick)",
        expire_seconds: Some(expire),
        idle_cpu_pct: Some(idle_cpu_pct),
        per_packet_ns: None,
        per_packet: "nothing",
        note: format!(
            "prototype on maps of natgw's layout: an idle scan of both tables took \
             {:.0} ms CPU (median of {IDLE_SCANS}), every {} s tick; expiry = the first \
             scan ({:.2} s) + the interval + the deleting scan ({:.2} s)",
            super::report::median(&idle) * 1e3,
            INTERVAL.as_secs(),
            first_took.as_secs_f64(),
            second_took.as_secs_f64()
        ),
    })
}

/// natgw's own collector as the cost test measured it.
fn natgw_row(g: &GcResult) -> DesignRow {
    DesignRow {
        key: "timing_wheel",
        label: "timing wheel + batched deletes (natgw)",
        expire_seconds: g.expire_seconds,
        idle_cpu_pct: Some(g.live_cpu_pct),
        per_packet_ns: None,
        per_packet: "nothing",
        note: format!(
            "natgw itself (--udp-timeout {} --gc-interval {}): surveys of the whole \
             tables as often as their cost allows (2% of a CPU, at most 60 s apart, \
             sooner when something only a survey judges is due), a probe of the \
             forward and session tables every half shortest timeout that schedules \
             new mappings itself, only due mappings looked at in between",
            g.udp_timeout_s, g.gc_interval_s
        ),
    }
}

/// Lazy expiry on lookup, as `gc_kernel::lazy` measured it.
fn lazy_row(l: &gc_kernel::Lazy, mappings: u32) -> DesignRow {
    DesignRow {
        key: "lazy_on_lookup",
        label: "lazy expiry on lookup (idle: never)",
        expire_seconds: None,
        idle_cpu_pct: Some(l.idle_thread_cpu_s / l.idle_window_s * 100.0),
        per_packet_ns: Some(l.check_ns - l.base_ns),
        per_packet: "a compare of the mapping's stamp with the timeout on every hit \
                     (the delete of both entries on an expired one)",
        note: format!(
            "prototype xdp_gc_lazy (natgw-ebpf/src/bench.rs) on maps of natgw's layout, \
             driven by xdp_replay: a hit costs {:.1} ns with the check, {:.1} ns \
             without (median of {RUNS} alternating runs of {REPEAT}); left {:.0} s idle \
             past their timeout, {} of the {mappings} mappings were still there (expire \
             column: never, without traffic), the controller thread used {:.3} s CPU \
             over the window (nothing to do by construction); one packet from every \
             endpoint after the timeout expired all of them in {:.2} s ({:.0} ns per \
             packet, the best case). Alone it never frees idle mappings: their external \
             ports stay claimed, so the pool runs out (RFC 6888 REQ-3/REQ-4 budgets) and \
             no port is ever released into the REQ-8 hold-down; a sweeper is needed \
             anyway",
            l.check_ns,
            l.base_ns,
            l.idle_window_s,
            l.left_after_idle,
            l.idle_thread_cpu_s,
            l.expire_all_s,
            l.expire_ns_per_packet,
        ),
    }
}

/// In-kernel expiry with `bpf_timer`, as `gc_kernel::timer` measured it.
fn timer_row(t: &gc_kernel::Timer, mappings: u32) -> DesignRow {
    DesignRow {
        key: "bpf_timer",
        label: "in-kernel expiry with bpf_timer",
        expire_seconds: Some(t.expire_from_first_s),
        idle_cpu_pct: Some(t.idle_thread_cpu_s / t.idle_window_s * 100.0),
        per_packet_ns: Some(t.rearm_ns - t.base_ns),
        per_packet: "a bpf_timer (16 bytes) in every map value and a bpf_timer_start \
                     re-arming it on every packet",
        note: format!(
            "prototype xdp_gc_timer (natgw-ebpf/src/bench.rs): a BTF hash map \
             FwdKey -> {{Mapping, bpf_timer}}, each of the {mappings} mappings created with \
             its timer armed ({:.2} s for all, {} bpf_timer_init failures retried; \
             helper errors by code: {}), \
             the callback deleting it and its reverse entry; a hit costs {:.1} ns re-arming, {:.1} ns without (median of {RUNS} \
             alternating runs of {REPEAT}); after a last packet for each, the table was \
             empty {:.2} s after the first deadline, {:.2} s after the last; {} \
             callbacks fired. While they lived ({:.1} s) the controller thread used \
             {:.3} s CPU and all CPUs {:.2} s softirq ({} HRTIMER softirqs, machine \
             wide); the firing ({:.2} s) took {:.2} s softirq ({} HRTIMER softirqs). \
             Expiry is exact and costs the controller nothing, but every refresh \
             re-arms a timer on the packet path and the policy (TCP sessions holding \
             mappings, hold-downs, events, the allocation log) would move into eBPF",
            t.fill_s,
            t.init_failures,
            t.helper_errors,
            t.rearm_ns,
            t.base_ns,
            t.expire_from_first_s,
            t.expire_from_last_s,
            t.fired,
            t.idle_window_s,
            t.idle_thread_cpu_s,
            t.idle_softirq_s,
            t.idle_hrtimer_softirqs,
            t.fire_window_s,
            t.fire_softirq_s,
            t.fire_hrtimer_softirqs,
        ),
    }
}

/// The `bpf_timer` row when its prototype could not run, and why.
fn timer_unmeasured(why: &str) -> DesignRow {
    DesignRow {
        key: "bpf_timer",
        label: "in-kernel expiry with bpf_timer",
        expire_seconds: None,
        idle_cpu_pct: None,
        per_packet_ns: None,
        per_packet: "a bpf_timer (16 bytes) in every map value and a bpf_timer_start \
                     re-arming it on every packet",
        note: format!("the prototype could not run: {why}"),
    }
}

/// Runs the designs: natgw's collector through the cost test, the prototypes on
/// maps of their own.
pub fn run(
    tools: &mut super::programs::Tools,
    natgw_bin: &std::path::Path,
    log_dir: &std::path::Path,
    mappings: u32,
) -> Result<(GcResult, Vec<DesignRow>)> {
    let natgw = cost::gc(tools, natgw_bin, log_dir, mappings)?;
    crate::signals::check()?;
    let rows = compare(&natgw, mappings, tools.object())?;
    Ok((natgw, rows))
}

/// The rows: natgw's collector as `natgw` measured it, then the prototypes run now
/// (the kernel-side ones with the programs of `object`).
pub fn compare(
    natgw: &GcResult,
    mappings: u32,
    object: &std::path::Path,
) -> Result<Vec<DesignRow>> {
    let batched = scan_every_tick(mappings)?;
    crate::signals::check()?;
    let (lazy, timer) = gc_kernel::run(object, mappings)?;
    Ok(vec![
        natgw_row(natgw),
        batched,
        lazy_row(&lazy, mappings),
        match timer {
            Ok(t) => timer_row(&t, mappings),
            Err(why) => timer_unmeasured(&why),
        },
    ])
}

/// The designs as a table.
#[must_use]
pub fn table(rows: &[DesignRow], mappings: u32) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Garbage collection designs, {mappings} UDP mappings (timeout {} s, ticks every {} s)",
        cost::GC_UDP_TIMEOUT,
        INTERVAL.as_secs()
    );
    let _ = writeln!(
        o,
        "  {:<46} {:>12} {:>14} {:>16}",
        "design", "expire (s)", "idle CPU (%)", "per packet (ns)"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "  {:<46} {:>12} {:>14} {:>16}",
            r.label,
            r.expire_seconds
                .map_or_else(|| "—".to_owned(), |s| format!("{s:.2}")),
            r.idle_cpu_pct
                .map_or_else(|| "—".to_owned(), |c| format!("{c:.1}")),
            r.per_packet_ns
                .map_or_else(|| "+0".to_owned(), |n| format!("{n:+.1}")),
        );
    }
    for r in rows {
        let _ = writeln!(o, "  {}: per packet: {}; {}", r.key, r.per_packet, r.note);
    }
    o
}
