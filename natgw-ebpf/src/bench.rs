//! Programs for `cargo xtask bench` only; natgw never attaches them. They live in
//! natgw's object so that the bench measures exactly the build natgw runs.
//!
//! - [`pass`] (`xdp_pass`): returns `XDP_PASS` and does nothing else. It is the floor
//!   the translation programs' per-packet cost is set against, and what the bench
//!   attaches to a veth that must accept redirected frames (its peer's `XDP_TX` or
//!   `XDP_REDIRECT`) while the kernel does the forwarding.
//! - [`count_drop`] (`xdp_count_drop`): the receiver. Counts unicast IPv4 UDP and TCP
//!   packets and bytes per
//!   CPU in `BENCH_RX`, stamps the first and last arrival, and drops the frame; other
//!   frames (the kernel's own chatter) pass.
//! - [`generate`] (`xdp_gen`): the traffic generator, run by `BPF_PROG_TEST_RUN` in
//!   live-frame mode. It writes the frame's headers from the template in
//!   `BENCH_GEN_TPL`, varies the flow with a per-CPU sequence number and transmits the
//!   frame (`XDP_TX`). Live-frame mode recycles pages without restoring their content,
//!   and the gateway rewrites the headers it forwards, so every header byte is written
//!   on every run. It can stop after a number of frames and pace itself: with
//!   `GEN_IN_FLIGHT` set it sends only while fewer frames than that are between it and
//!   the receiver (`BENCH_RX_TOTAL`), so it must run in the same object instance as
//!   the receiver; with `GEN_RATE` set it sends at most that many frames per second.
//!   With `GEN_TABLE` set, flow `f`'s addresses and ports come from entry `f` of
//!   `BENCH_GEN_FLOWS` (the WAN→LAN flows, toward the external ports the gateway
//!   chose).
//!
//! - [`replay`] (`xdp_replay`): the program-only timing of the per-packet cost. Run
//!   by `BPF_PROG_TEST_RUN` with a large repeat count (not live), it writes the next
//!   flow's frame exactly as `xdp_gen` does, then tail-calls the program in slot 0 of
//!   `BENCH_REPLAY` (natgw's `xdp_lan`, or `xdp_pass` for the floor). A repeated test
//!   run reuses one buffer, which the first run would have translated; rewriting it
//!   first makes every repetition a fresh packet of the next endpoint.
//!
//! - [`forward`] (`xdp_fwd`): the bare XDP forwarder, the ceiling of the
//!   `xdp-forward` mode: `bpf_fib_lookup` for the destination, the router's TTL
//!   decrement (with its incremental checksum update), both MAC addresses from the FIB
//!   result and `bpf_redirect` to the egress interface. No NAT, no state, no
//!   validation beyond what a forwarder needs; anything it cannot forward (not IPv4,
//!   IP options, TTL ≤ 1, no resolved route) goes to the kernel with `XDP_PASS`.
//!
//! The bench writes the generator's configuration into `BENCH_GEN_CFG` and reads
//! `BENCH_RX` by the slot numbers of `natgw_common::bench`.

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams,
        xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
        BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_fib_lookup, bpf_redirect},
    },
    macros::map,
    maps::{Array, PerCpuArray, ProgramArray},
    programs::XdpContext,
    EbpfContext as _,
};
use natgw_common::{
    bench::{
        GEN_CFG_SLOTS, GEN_ENDPOINTS, GEN_FLOWS, GEN_FLOW_LEN, GEN_FRAME_LEN, GEN_IN_FLIGHT,
        GEN_LIMIT, GEN_PORTS_PER_ADDR, GEN_RATE, GEN_TABLE, GEN_TABLE_MAX, RX_BYTES, RX_FIRST_NS,
        RX_LAST_NS, RX_PACKETS, RX_SLOTS, SEQ_SENT, SEQ_SLOTS, SEQ_START_NS,
    },
    csum::{replace16, replace32, udp_nonzero},
    packet::{ipv4, l4, ETH_HLEN, ETH_P_IP, ETH_TYPE, IPV4_MIN_HLEN},
    IPPROTO_TCP, IPPROTO_UDP,
};

/// What the receiver saw, per CPU, by the `RX_*` slots.
#[map]
static BENCH_RX: PerCpuArray<u64> = PerCpuArray::with_max_entries(RX_SLOTS, 0);

/// Frames the receiver counted (slot 0), for the generator's pacing; shared by all
/// CPUs, written by the receiver's.
#[map]
static BENCH_RX_TOTAL: Array<u64> = Array::with_max_entries(1, 0);

/// The generator's sequence number (`SEQ_SENT`: frames sent) and the time of its
/// first frame (`SEQ_START_NS`), per CPU.
#[map]
static BENCH_GEN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(SEQ_SLOTS, 0);

/// Explicit flows (`GEN_TABLE`): source, destination, source port, destination port.
#[map]
static BENCH_GEN_FLOWS: Array<[u8; GEN_FLOW_LEN]> = Array::with_max_entries(GEN_TABLE_MAX, 0);

/// The frame of flow 0, with valid IPv4 and TCP/UDP checksums (IHL 5).
#[map]
static BENCH_GEN_TPL: Array<[u8; GEN_FRAME_LEN]> = Array::with_max_entries(1, 0);

/// The generator's configuration, by the `GEN_*` slots.
#[map]
static BENCH_GEN_CFG: Array<u32> = Array::with_max_entries(GEN_CFG_SLOTS, 0);

/// Slot 0: the program `xdp_replay` hands its frame to.
#[map]
static BENCH_REPLAY: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Frame offsets the generator writes (IHL 5, as in its template).
mod off {
    use super::{ipv4, l4, ETH_HLEN, IPV4_MIN_HLEN};

    const L4: usize = ETH_HLEN + IPV4_MIN_HLEN;
    pub const IP_CSUM: usize = ETH_HLEN + ipv4::CSUM;
    pub const IP_PROTO: usize = ETH_HLEN + ipv4::PROTO;
    pub const IP_SRC: usize = ETH_HLEN + ipv4::SRC;
    pub const IP_DST: usize = ETH_HLEN + ipv4::DST;
    pub const SPORT: usize = L4 + l4::SPORT;
    pub const DPORT: usize = L4 + l4::DPORT;
    pub const UDP_CSUM: usize = L4 + l4::UDP_CSUM;
    pub const TCP_CSUM: usize = L4 + l4::TCP_CSUM;
}

/// `xdp_pass`: nothing at all.
#[inline(always)]
pub fn pass(_ctx: &XdpContext) -> u32 {
    XDP_PASS
}

/// First octet of the multicast (224/4), reserved (240/4) and broadcast addresses.
const MULTICAST_FIRST_OCTET: u8 = 224;

/// `xdp_count_drop`: count, stamp, drop unicast IPv4 frames; pass anything else.
#[inline(always)]
pub fn count_drop(ctx: &XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + ETH_HLEN > end {
        return XDP_PASS;
    }
    // SAFETY: the Ethernet header lies inside the frame (checked above).
    let ethertype = unsafe { *((start + ETH_TYPE) as *const [u8; 2]) };
    // IPv4, the only frames the receiver counts.
    if ethertype != ETH_P_IP.to_be_bytes() {
        return XDP_PASS;
    }
    // Unicast UDP and TCP only, the bench's traffic: the gateway's own announcements
    // (PCP, SSDP, ...) to multicast or broadcast addresses and its ICMP errors (a
    // refused new mapping) are not.
    if start + ETH_HLEN + IPV4_MIN_HLEN > end {
        return XDP_PASS;
    }
    // SAFETY: the IPv4 header's fixed part lies inside the frame (checked above).
    let (dst0, proto) = unsafe {
        (
            *((start + ETH_HLEN + ipv4::DST) as *const u8),
            *((start + ETH_HLEN + ipv4::PROTO) as *const u8),
        )
    };
    if dst0 >= MULTICAST_FIRST_OCTET || (proto != IPPROTO_UDP && proto != IPPROTO_TCP) {
        return XDP_PASS;
    }
    let len = (end - start) as u64;
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY (all slots): per-CPU values, only touched by this CPU while it runs us.
    if let Some(p) = BENCH_RX.get_ptr_mut(RX_PACKETS) {
        unsafe { *p += 1 };
    }
    if let Some(b) = BENCH_RX.get_ptr_mut(RX_BYTES) {
        unsafe { *b += len };
    }
    if let Some(first) = BENCH_RX.get_ptr_mut(RX_FIRST_NS) {
        if unsafe { *first } == 0 {
            unsafe { *first = now };
        }
    }
    if let Some(last) = BENCH_RX.get_ptr_mut(RX_LAST_NS) {
        unsafe { *last = now };
    }
    if let Some(total) = BENCH_RX_TOTAL.get_ptr_mut(0) {
        // SAFETY: a live map value. Not atomic (the BPF target offers Rust no atomic
        // read-modify-write): the receiver's NAPI runs on one CPU, the only writer.
        unsafe { *total += 1 };
    }
    XDP_DROP
}

/// A `BENCH_GEN_CFG` slot.
#[inline(always)]
fn cfg(slot: u32) -> u32 {
    BENCH_GEN_CFG.get(slot).copied().unwrap_or(0)
}

/// Nanoseconds per second, for the rate limit.
const NS_PER_S: u64 = 1_000_000_000;

/// The next sequence number of this CPU, or `None` when this frame must not be sent:
/// the limit is reached, as many frames as allowed are on their way, or the rate
/// limit says it is too early.
#[inline(always)]
fn next_seq() -> Option<u64> {
    let seq = BENCH_GEN_SEQ.get_ptr_mut(SEQ_SENT)?;
    // SAFETY: per-CPU value, only touched by this CPU while it runs us.
    let n = unsafe { *seq };
    let limit = u64::from(cfg(GEN_LIMIT));
    if limit != 0 && n >= limit {
        return None;
    }
    let in_flight = u64::from(cfg(GEN_IN_FLIGHT));
    if in_flight != 0 {
        let received = BENCH_RX_TOTAL.get(0).copied().unwrap_or(0);
        if n.saturating_sub(received) >= in_flight {
            return None;
        }
    }
    let rate = u64::from(cfg(GEN_RATE));
    if rate != 0 {
        let start = BENCH_GEN_SEQ.get_ptr_mut(SEQ_START_NS)?;
        // SAFETY: no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        if n == 0 {
            // SAFETY: per-CPU value, only touched by this CPU while it runs us.
            unsafe { *start = now };
        } else {
            // SAFETY: as above.
            let since = now.saturating_sub(unsafe { *start });
            if n > since * rate / NS_PER_S {
                return None;
            }
        }
    }
    // SAFETY: as above.
    unsafe { *seq = n + 1 };
    Some(n)
}

/// `xdp_gen`: the template with flow `seq % flows` written in, transmitted.
#[inline(always)]
pub fn generate(ctx: &XdpContext) -> u32 {
    match write_flow(ctx) {
        Ok(()) => XDP_TX,
        Err(action) => action,
    }
}

/// `xdp_replay`: the next flow's frame written in as by `xdp_gen`, then handed to
/// the program in `BENCH_REPLAY` slot 0 (`XDP_ABORTED` if there is none).
#[inline(always)]
pub fn replay(ctx: &XdpContext) -> u32 {
    if let Err(action) = write_flow(ctx) {
        return action;
    }
    // SAFETY: a tail call with this program's own context; it returns only when the
    // slot is empty.
    unsafe { BENCH_REPLAY.tail_call(ctx, 0) };
    XDP_ABORTED
}

/// Writes the template with flow `seq % flows` into the frame; `Err` is the action
/// to return instead (no frame to send).
#[inline(always)]
fn write_flow(ctx: &XdpContext) -> Result<(), u32> {
    let start = ctx.data();
    if start + GEN_FRAME_LEN > ctx.data_end() {
        return Err(XDP_ABORTED);
    }
    let frame = start as *mut [u8; GEN_FRAME_LEN];
    let Some(template) = BENCH_GEN_TPL.get(0) else {
        return Err(XDP_ABORTED);
    };
    let Some(seq) = next_seq() else {
        return Err(XDP_DROP);
    };
    let mut bytes: [u8; GEN_FRAME_LEN] = *template;

    let flows = cfg(GEN_FLOWS).max(1);
    let endpoints = cfg(GEN_ENDPOINTS).max(1);
    let per_addr = cfg(GEN_PORTS_PER_ADDR).max(1);
    let flow = (seq % u64::from(flows)) as u32;
    let endpoint = flow % endpoints;
    let dst_step = (flow / endpoints) as u16;
    let addr_step = endpoint / per_addr;
    let port_step = (endpoint % per_addr) as u16;

    let field16 = |b: &[u8; GEN_FRAME_LEN], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let old_src = [
        bytes[off::IP_SRC],
        bytes[off::IP_SRC + 1],
        bytes[off::IP_SRC + 2],
        bytes[off::IP_SRC + 3],
    ];
    let new_src = u32::from_be_bytes(old_src)
        .wrapping_add(addr_step)
        .to_be_bytes();
    let old_sport = field16(&bytes, off::SPORT);
    let new_sport = old_sport.wrapping_add(port_step);
    let old_dport = field16(&bytes, off::DPORT);
    let mut new_dport = old_dport.wrapping_add(dst_step);
    let old_dst = [
        bytes[off::IP_DST],
        bytes[off::IP_DST + 1],
        bytes[off::IP_DST + 2],
        bytes[off::IP_DST + 3],
    ];
    let mut new_dst = old_dst;
    let (mut new_src, mut new_sport) = (new_src, new_sport);
    if cfg(GEN_TABLE) != 0 {
        let Some(t) = BENCH_GEN_FLOWS.get(flow) else {
            return Err(XDP_ABORTED);
        };
        new_src = [t[0], t[1], t[2], t[3]];
        new_dst = [t[4], t[5], t[6], t[7]];
        new_sport = u16::from_be_bytes([t[8], t[9]]);
        new_dport = u16::from_be_bytes([t[10], t[11]]);
    }

    let mut ip_csum = replace32(field16(&bytes, off::IP_CSUM), old_src, new_src);
    ip_csum = replace32(ip_csum, old_dst, new_dst);
    let is_udp = bytes[off::IP_PROTO] == IPPROTO_UDP;
    let l4_at = if is_udp { off::UDP_CSUM } else { off::TCP_CSUM };
    let mut l4_csum = replace32(field16(&bytes, l4_at), old_src, new_src);
    l4_csum = replace32(l4_csum, old_dst, new_dst);
    l4_csum = replace16(l4_csum, old_sport, new_sport);
    l4_csum = replace16(l4_csum, old_dport, new_dport);
    if is_udp {
        l4_csum = udp_nonzero(l4_csum);
    }

    bytes[off::IP_SRC..off::IP_SRC + 4].copy_from_slice(&new_src);
    bytes[off::IP_DST..off::IP_DST + 4].copy_from_slice(&new_dst);
    bytes[off::SPORT..off::SPORT + 2].copy_from_slice(&new_sport.to_be_bytes());
    bytes[off::DPORT..off::DPORT + 2].copy_from_slice(&new_dport.to_be_bytes());
    bytes[off::IP_CSUM..off::IP_CSUM + 2].copy_from_slice(&ip_csum.to_be_bytes());
    bytes[l4_at..l4_at + 2].copy_from_slice(&l4_csum.to_be_bytes());
    // SAFETY: the frame holds at least GEN_FRAME_LEN bytes (checked above) and is
    // writable in XDP.
    unsafe { frame.write_unaligned(bytes) };
    Ok(())
}

/// `AF_INET`, the FIB lookup's family.
const AF_INET: u8 = 2;

/// `xdp_fwd`: forward an IPv4 frame as a router would, nothing more.
#[inline(always)]
pub fn forward(ctx: &XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + ETH_HLEN + IPV4_MIN_HLEN > end {
        return XDP_PASS;
    }
    // SAFETY: the Ethernet header lies inside the frame (checked above).
    let ethertype = unsafe { *((start + ETH_TYPE) as *const [u8; 2]) };
    if ethertype != ETH_P_IP.to_be_bytes() {
        return XDP_PASS;
    }
    let ip = (start + ETH_HLEN) as *mut [u8; IPV4_MIN_HLEN];
    // SAFETY: the IPv4 header's fixed part lies inside the frame (checked above).
    let mut hdr = unsafe { ip.read_unaligned() };
    // IPv4 without options, TTL left to spend: anything else is the kernel's.
    if hdr[0] != 0x45 || hdr[ipv4::TTL] <= 1 {
        return XDP_PASS;
    }
    // SAFETY: an all-zero parameter block is valid input for the helper.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = hdr[ipv4::PROTO];
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_1.tot_len = u16::from_be_bytes([hdr[ipv4::TOT_LEN], hdr[ipv4::TOT_LEN + 1]]);
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([
        hdr[ipv4::SRC],
        hdr[ipv4::SRC + 1],
        hdr[ipv4::SRC + 2],
        hdr[ipv4::SRC + 3],
    ]);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([
        hdr[ipv4::DST],
        hdr[ipv4::DST + 1],
        hdr[ipv4::DST + 2],
        hdr[ipv4::DST + 3],
    ]);
    // SAFETY: valid context and parameter block of the size passed.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    if ret as u32 != BPF_FIB_LKUP_RET_SUCCESS {
        return XDP_PASS;
    }
    // The router's duty: TTL − 1, the header checksum updated incrementally.
    let old = u16::from_be_bytes([hdr[ipv4::TTL], hdr[ipv4::PROTO]]);
    hdr[ipv4::TTL] -= 1;
    let new = u16::from_be_bytes([hdr[ipv4::TTL], hdr[ipv4::PROTO]]);
    let check = replace16(
        u16::from_be_bytes([hdr[ipv4::CSUM], hdr[ipv4::CSUM + 1]]),
        old,
        new,
    );
    hdr[ipv4::CSUM..ipv4::CSUM + 2].copy_from_slice(&check.to_be_bytes());
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&p.dmac);
    macs[6..].copy_from_slice(&p.smac);
    // SAFETY: both headers lie inside the frame (checked above), writable in XDP.
    unsafe {
        ip.write_unaligned(hdr);
        (start as *mut [u8; 12]).write_unaligned(macs);
    }
    // SAFETY: plain helper call; the result is the XDP action to return.
    unsafe { bpf_redirect(p.ifindex, 0) as u32 }
}

/// The two GC designs of issue #18 that live in the kernel, as prototypes on tables
/// of natgw's layout, driven by `xdp_replay` (one frame per internal endpoint):
///
/// - [`gc::lazy`] (`xdp_gc_lazy`): *lazy expiry on lookup*. A hit in `GC_FWD`
///   compares the mapping's stamp with the timeout and, when it has passed, deletes
///   the mapping and its reverse entry instead of refreshing it.
/// - [`gc::timer`] (`xdp_gc_timer`): *in-kernel expiry with `bpf_timer`*. A miss
///   creates the mapping in `GC_TIMED` (a BTF map whose value holds a `bpf_timer`)
///   with its reverse entry in `GC_REV` and arms its timer; a hit re-arms it. The
///   timer's callback deletes both entries.
///
/// `GC_CFG_EXPIRE` zero turns the expiry work off (lookup and stamp refresh only),
/// the baseline their per-packet cost is measured against.
pub mod gc {
    use aya_ebpf::{
        bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS},
        helpers::bpf_ktime_get_ns,
        macros::map,
        maps::{Array, HashMap, PerCpuArray},
        programs::XdpContext,
    };
    #[cfg(feature = "gc-timer")]
    use aya_ebpf::{
        bindings::{bpf_timer, BPF_NOEXIST},
        btf_maps,
        helpers::generated::{bpf_timer_init, bpf_timer_set_callback, bpf_timer_start},
        macros::btf_map,
    };
    #[cfg(feature = "gc-timer")]
    use natgw_common::{
        bench::{
            gc_timer_err_slot, GC_STAT_ARMED, GC_STAT_FIRED, GC_STAT_TIMER_INIT_FAILED,
            GC_TIMER_ERR_SLOTS,
        },
        Origin,
    };
    use natgw_common::{
        bench::{
            GC_CFG_EXPIRE, GC_CFG_SLOTS, GC_CFG_TIMEOUT_NS, GC_STAT_ERROR, GC_STAT_HIT,
            GC_STAT_LAZY_EXPIRED, GC_STAT_MISS, GC_STAT_SLOTS,
        },
        FwdKey, Mapping, RevKey, RevValue,
    };

    use super::{off, GEN_FRAME_LEN};

    /// The lazy design's forward table (room for the million set by the bench).
    #[map]
    static GC_FWD: HashMap<FwdKey, Mapping> = HashMap::with_max_entries(1, 0);

    /// The reverse entries of both designs' mappings.
    #[map]
    static GC_REV: HashMap<RevKey, RevValue> = HashMap::with_max_entries(1, 0);

    #[cfg(feature = "gc-timer")]
    /// A mapping with its own expiry timer. The kernel finds the timer through the
    /// map's BTF (a member of type `struct bpf_timer`); without it, the verifier
    /// refuses `bpf_timer_init`.
    #[repr(C)]
    pub struct TimedMapping {
        /// natgw's mapping.
        pub mapping: Mapping,
        /// Fires `timeout` after the last packet and deletes the mapping.
        pub timer: bpf_timer,
    }

    #[cfg(feature = "gc-timer")]
    /// The timer design's forward table (room for the million set by the bench).
    #[btf_map]
    static GC_TIMED: btf_maps::HashMap<FwdKey, TimedMapping, 1> = btf_maps::HashMap::new();

    #[cfg(feature = "gc-timer")]
    /// The timer helpers' error codes, by `gc_timer_err_slot`.
    #[map]
    static GC_TIMER_ERR: PerCpuArray<u64> = PerCpuArray::with_max_entries(GC_TIMER_ERR_SLOTS, 0);

    #[cfg(feature = "gc-timer")]
    /// Counts helper `helper`'s failure `ret` (nothing when `ret` is 0).
    #[inline(always)]
    fn count_err(helper: u32, ret: i64) {
        if ret == 0 {
            return;
        }
        if let Some(p) = GC_TIMER_ERR.get_ptr_mut(gc_timer_err_slot(helper, ret)) {
            // SAFETY: per-CPU value, only touched by this CPU while it runs us.
            unsafe { *p += 1 };
        }
    }

    /// The configuration, by the `GC_CFG_*` slots.
    #[map]
    static GC_CFG: Array<u64> = Array::with_max_entries(GC_CFG_SLOTS, 0);

    /// What the programs did, by the `GC_STAT_*` slots.
    #[map]
    static GC_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(GC_STAT_SLOTS, 0);

    #[cfg(feature = "gc-timer")]
    /// `CLOCK_MONOTONIC`, the timers' clock (the stamps' too).
    const CLOCK_MONOTONIC: u64 = 1;
    #[cfg(feature = "gc-timer")]
    /// The first external address of the timer design's mappings (198.18.0.0,
    /// RFC 2544 benchmarking space), as the bench's filler uses.
    const EXT_BASE: u32 = 0xc612_0000;
    #[cfg(feature = "gc-timer")]
    /// External ports per external address, from 1024 up.
    const EXT_PORTS: u64 = 60_000;
    #[cfg(feature = "gc-timer")]
    /// The first external port.
    const EXT_FIRST_PORT: u64 = 1024;

    #[inline(always)]
    fn cfg(slot: u32) -> u64 {
        GC_CFG.get(slot).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn count(slot: u32) {
        if let Some(p) = GC_STATS.get_ptr_mut(slot) {
            // SAFETY: per-CPU value, only touched by this CPU while it runs us.
            unsafe { *p += 1 };
        }
    }

    /// The internal endpoint of the replayed frame (IHL 5, as `xdp_replay` writes it).
    #[inline(always)]
    fn fwd_key(ctx: &XdpContext) -> Option<FwdKey> {
        let start = ctx.data();
        if start + GEN_FRAME_LEN > ctx.data_end() {
            return None;
        }
        // SAFETY: the frame holds GEN_FRAME_LEN bytes (checked above).
        let b = unsafe { (start as *const [u8; GEN_FRAME_LEN]).read_unaligned() };
        Some(FwdKey::new(
            u32::from_ne_bytes([
                b[off::IP_SRC],
                b[off::IP_SRC + 1],
                b[off::IP_SRC + 2],
                b[off::IP_SRC + 3],
            ]),
            u16::from_ne_bytes([b[off::SPORT], b[off::SPORT + 1]]),
            b[off::IP_PROTO],
        ))
    }

    /// Deletes `m`'s reverse entry if it is still `m`'s (same `created_ns`).
    #[inline(always)]
    fn remove_rev(m: &Mapping, proto: u8) {
        let rk = RevKey::new(m.ext_addr_be, m.ext_port_be, proto);
        // SAFETY: read before any update or delete of this entry.
        let ours = unsafe { GC_REV.get(&rk) }.is_some_and(|r| r.created_ns == m.created_ns);
        if ours && GC_REV.remove(&rk).is_err() {
            count(GC_STAT_ERROR);
        }
    }

    /// `xdp_gc_lazy`: a hit refreshes the mapping's stamp, unless (with
    /// `GC_CFG_EXPIRE`) the timeout has passed since it: then the mapping and its
    /// reverse entry go, as a lazy collector would on lookup.
    #[inline(always)]
    pub fn lazy(ctx: &XdpContext) -> u32 {
        let Some(key) = fwd_key(ctx) else {
            return XDP_ABORTED;
        };
        let Some(m) = GC_FWD.get_ptr_mut(&key) else {
            count(GC_STAT_MISS);
            return XDP_DROP;
        };
        // SAFETY: no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        if cfg(GC_CFG_EXPIRE) != 0 {
            // SAFETY: a live map value; copied before the entry may be deleted.
            let mapping = unsafe { *m };
            let last = mapping.last_out_ns.max(mapping.created_ns);
            if now.saturating_sub(last) >= cfg(GC_CFG_TIMEOUT_NS) {
                remove_rev(&mapping, key.proto);
                if GC_FWD.remove(&key).is_err() {
                    count(GC_STAT_ERROR);
                }
                count(GC_STAT_LAZY_EXPIRED);
                return XDP_DROP;
            }
        }
        // SAFETY: a live map value.
        unsafe { (*m).last_out_ns = now };
        count(GC_STAT_HIT);
        XDP_PASS
    }

    #[cfg(feature = "gc-timer")]
    /// The timer's callback: the mapping's timeout passed without a packet, so it
    /// and its reverse entry go. Must return 0.
    #[inline(never)]
    extern "C" fn expire(
        _map: *mut core::ffi::c_void,
        key: *mut FwdKey,
        value: *mut TimedMapping,
    ) -> i32 {
        // SAFETY: the kernel passes the key and value of the entry whose timer fired.
        let (key, mapping) = unsafe { (*key, (*value).mapping) };
        remove_rev(&mapping, key.proto);
        if GC_TIMED.remove(&key).is_err() {
            count(GC_STAT_ERROR);
        }
        count(GC_STAT_FIRED);
        0
    }

    #[cfg(feature = "gc-timer")]
    /// `xdp_gc_timer`: a hit refreshes the stamp and (with `GC_CFG_EXPIRE`) re-arms
    /// the mapping's timer; a miss creates the mapping (its external port claimed in
    /// `GC_REV` first, as the data path does, numbered by this CPU's count of
    /// mappings armed) and arms its timer.
    #[inline(always)]
    pub fn timer(ctx: &XdpContext) -> u32 {
        let Some(key) = fwd_key(ctx) else {
            return XDP_ABORTED;
        };
        // SAFETY: no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        let timeout = cfg(GC_CFG_TIMEOUT_NS);
        if let Some(v) = GC_TIMED.get_ptr_mut(&key) {
            // SAFETY: a live map value.
            unsafe { (*v).mapping.last_out_ns = now };
            if cfg(GC_CFG_EXPIRE) != 0 {
                // SAFETY: the timer of a live map value, initialised when it was created.
                let ret = unsafe { bpf_timer_start(&mut (*v).timer, timeout, 0) };
                if ret != 0 {
                    count_err(2, ret);
                    count(GC_STAT_ERROR);
                }
            }
            count(GC_STAT_HIT);
            return XDP_PASS;
        }
        count(GC_STAT_MISS);
        let n = GC_STATS
            .get_ptr_mut(GC_STAT_ARMED)
            // SAFETY: per-CPU value, only touched by this CPU while it runs us.
            .map_or(0, |p| unsafe { *p });
        let ext_addr_be = (EXT_BASE + (n / EXT_PORTS) as u32).to_be();
        let ext_port_be = (EXT_FIRST_PORT + n % EXT_PORTS) as u16;
        let ext_port_be = ext_port_be.to_be();
        let rev = RevValue {
            int_addr_be: key.addr_be,
            int_port_be: key.port_be,
            created_ns: now,
            ..RevValue::default()
        };
        let rk = RevKey::new(ext_addr_be, ext_port_be, key.proto);
        if GC_REV.insert(&rk, &rev, u64::from(BPF_NOEXIST)).is_err() {
            count(GC_STAT_ERROR);
            return XDP_DROP;
        }
        let value = TimedMapping {
            mapping: Mapping {
                ext_addr_be,
                ext_port_be,
                origin: Origin::Traffic as u8,
                created_ns: now,
                last_out_ns: now,
                ..Mapping::default()
            },
            timer: bpf_timer { __opaque: [0; 2] },
        };
        if GC_TIMED
            .insert(&key, &value, u64::from(BPF_NOEXIST))
            .is_err()
        {
            let _ = GC_REV.remove(&rk);
            count(GC_STAT_ERROR);
            return XDP_DROP;
        }
        let Some(v) = GC_TIMED.get_ptr_mut(&key) else {
            count(GC_STAT_ERROR);
            return XDP_DROP;
        };
        let map = core::ptr::from_ref(&GC_TIMED).cast_mut().cast();
        let callback = expire as *const () as *mut core::ffi::c_void;
        // SAFETY: the timer of the live map value just inserted, in its own map.
        let (init, armed) = unsafe {
            let t = &mut (*v).timer;
            let ret = bpf_timer_init(t, map, CLOCK_MONOTONIC);
            count_err(0, ret);
            let mut armed = ret == 0;
            if armed {
                let ret = bpf_timer_set_callback(t, callback);
                count_err(1, ret);
                armed = ret == 0;
            }
            if armed {
                let ret = bpf_timer_start(t, timeout, 0);
                count_err(2, ret);
                armed = ret == 0;
            }
            (ret == 0, armed)
        };
        if !armed {
            // Undone, so that the next packet of this endpoint tries again.
            let _ = GC_TIMED.remove(&key);
            let _ = GC_REV.remove(&rk);
            count(if init {
                GC_STAT_ERROR
            } else {
                GC_STAT_TIMER_INIT_FAILED
            });
            return XDP_DROP;
        }
        count(GC_STAT_ARMED);
        XDP_PASS
    }
}
