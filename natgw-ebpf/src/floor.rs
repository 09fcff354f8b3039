//! Programs for `cargo xtask bench` only; natgw never attaches them. They live in
//! natgw's object so that the bench measures exactly the build natgw runs.
//!
//! - [`pass`] (`xdp_pass`): returns `XDP_PASS` and does nothing else. It is the floor
//!   the translation programs' per-packet cost is set against, and what the bench
//!   attaches to a veth that must accept redirected frames (its peer's `XDP_TX` or
//!   `XDP_REDIRECT`) while the kernel does the forwarding.
//! - [`count_drop`] (`xdp_count_drop`): the receiver. Counts packets and bytes per CPU
//!   in `BENCH_RX`, stamps the first and last arrival, and drops the frame.
//! - [`generate`] (`xdp_gen`): the traffic generator, run by `BPF_PROG_TEST_RUN` in
//!   live-frame mode. It writes the frame's headers from a template the loader sets,
//!   varies the flow with a per-CPU sequence number and transmits the frame
//!   (`XDP_TX`). Live-frame mode recycles pages without restoring their content, and
//!   the gateway rewrites the headers it forwards, so every header byte is written on
//!   every run.
//!
//! Configuration comes from read-only globals the loader sets by name
//! (`EbpfLoader::set_global`); the bench reads `BENCH_RX` by the slot numbers below.

use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use natgw_common::{
    csum::{replace16, replace32, udp_nonzero},
    IPPROTO_UDP,
};

/// `BENCH_RX` slot: frames received.
pub const RX_PACKETS: u32 = 0;
/// `BENCH_RX` slot: bytes received (frame length).
pub const RX_BYTES: u32 = 1;
/// `BENCH_RX` slot: `CLOCK_MONOTONIC` ns of the first frame since the slots were zeroed.
pub const RX_FIRST_NS: u32 = 2;
/// `BENCH_RX` slot: `CLOCK_MONOTONIC` ns of the latest frame.
pub const RX_LAST_NS: u32 = 3;
/// Number of `BENCH_RX` slots.
const RX_SLOTS: u32 = 4;

/// What the receiver saw, per CPU, by the `RX_*` slots.
#[map]
static BENCH_RX: PerCpuArray<u64> = PerCpuArray::with_max_entries(RX_SLOTS, 0);

/// The generator's sequence number, per CPU (slot 0).
#[map]
static BENCH_GEN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Length of the generated frames: a 64-byte Ethernet frame without its FCS.
pub const GEN_FRAME_LEN: usize = 60;

/// The frame of flow 0, with valid IPv4 and TCP/UDP checksums (IHL 5).
#[no_mangle]
static GEN_TEMPLATE: [u8; GEN_FRAME_LEN] = [0; GEN_FRAME_LEN];
/// Flows the sequence cycles through (at least 1).
#[no_mangle]
static GEN_FLOWS: u32 = 1;
/// Distinct internal endpoints (source address and port) among the flows; flow `f`
/// uses endpoint `f % GEN_ENDPOINTS` and destination port `template + f / GEN_ENDPOINTS`.
#[no_mangle]
static GEN_ENDPOINTS: u32 = 1;
/// Source ports used per source address before the next address is taken: endpoint
/// `e` is `(template address + e / GEN_PORTS_PER_ADDR, template port + e % ...)`.
#[no_mangle]
static GEN_PORTS_PER_ADDR: u32 = 1;

/// Ethernet + IPv4 offsets the generator writes (IHL 5, as in its template).
mod off {
    pub const IP_CSUM: usize = 14 + 10;
    pub const IP_PROTO: usize = 14 + 9;
    pub const IP_SRC: usize = 14 + 12;
    pub const SPORT: usize = 14 + 20;
    pub const DPORT: usize = 14 + 22;
    pub const UDP_CSUM: usize = 14 + 20 + 6;
    pub const TCP_CSUM: usize = 14 + 20 + 16;
}

/// `xdp_pass`: nothing at all.
#[inline(always)]
pub fn pass(_ctx: &XdpContext) -> u32 {
    XDP_PASS
}

/// `xdp_count_drop`: count, stamp, drop.
#[inline(always)]
pub fn count_drop(ctx: &XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
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
    XDP_DROP
}

/// A configuration global, read through a volatile load so the compiler keeps the
/// value the loader wrote instead of folding in the default.
#[inline(always)]
fn global<T: Copy>(value: &'static T) -> T {
    // SAFETY: a valid, aligned static.
    unsafe { core::ptr::read_volatile(value) }
}

/// The next sequence number of this CPU.
#[inline(always)]
fn next_seq() -> u64 {
    match BENCH_GEN_SEQ.get_ptr_mut(0) {
        Some(seq) => {
            // SAFETY: per-CPU value, only touched by this CPU while it runs us.
            unsafe {
                let n = *seq;
                *seq = n + 1;
                n
            }
        }
        None => 0,
    }
}

/// `xdp_gen`: the template with flow `seq % GEN_FLOWS` written in, transmitted.
#[inline(always)]
pub fn generate(ctx: &XdpContext) -> u32 {
    let start = ctx.data();
    if start + GEN_FRAME_LEN > ctx.data_end() {
        return XDP_ABORTED;
    }
    let frame = start as *mut [u8; GEN_FRAME_LEN];
    let mut bytes: [u8; GEN_FRAME_LEN] = global(&GEN_TEMPLATE);

    let flows = global(&GEN_FLOWS).max(1);
    let endpoints = global(&GEN_ENDPOINTS).max(1);
    let per_addr = global(&GEN_PORTS_PER_ADDR).max(1);
    let flow = (next_seq() % u64::from(flows)) as u32;
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
    let new_dport = old_dport.wrapping_add(dst_step);

    let ip_csum = replace32(field16(&bytes, off::IP_CSUM), old_src, new_src);
    let is_udp = bytes[off::IP_PROTO] == IPPROTO_UDP;
    let l4_at = if is_udp { off::UDP_CSUM } else { off::TCP_CSUM };
    let mut l4_csum = replace32(field16(&bytes, l4_at), old_src, new_src);
    l4_csum = replace16(l4_csum, old_sport, new_sport);
    l4_csum = replace16(l4_csum, old_dport, new_dport);
    if is_udp {
        l4_csum = udp_nonzero(l4_csum);
    }

    bytes[off::IP_SRC..off::IP_SRC + 4].copy_from_slice(&new_src);
    bytes[off::SPORT..off::SPORT + 2].copy_from_slice(&new_sport.to_be_bytes());
    bytes[off::DPORT..off::DPORT + 2].copy_from_slice(&new_dport.to_be_bytes());
    bytes[off::IP_CSUM..off::IP_CSUM + 2].copy_from_slice(&ip_csum.to_be_bytes());
    bytes[l4_at..l4_at + 2].copy_from_slice(&l4_csum.to_be_bytes());
    // SAFETY: the frame holds at least GEN_FRAME_LEN bytes (checked above) and is
    // writable in XDP.
    unsafe { frame.write_unaligned(bytes) };
    XDP_TX
}
