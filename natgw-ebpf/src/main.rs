//! natgw's kernel programs.
//!
//! - `xdp_lan` (XDP, every LAN interface): outbound fast path — translate the source
//!   and redirect to the WAN when the FIB and the egress device allow it.
//! - `xdp_wan` (XDP, WAN interface): inbound fast path, and the filter: traffic for
//!   an external port with no mapping is dropped here.
//! - `tc_wan_ingress` / `tc_wan_egress` (TC on the WAN): the same translation for
//!   packets the fast path handed to the kernel, so that nothing leaves with an
//!   internal source address whatever path it took.
//! - `tc_lan_ingress` (TC ingress on every LAN interface): hairpinning, also to the
//!   gateway's own services on its external addresses.
//! - `tc_lo_egress` (TC egress on `lo`): those services' replies back to the hosts.
//!
//! The translation itself lives in `nat` and in `natgw_common::packet`, shared by all
//! the programs; `fastpath` holds what the XDP programs share, `tcpath` what the TC
//! programs share.
#![no_std]
#![no_main]
// The atomic add of `nat::limits`: the BPF target has atomic read-modify-write
// instructions but no compare-and-swap, so `core::sync::atomic` offers it no
// `fetch_add`; the intrinsic compiles to the BPF atomic add. The eBPF build already
// needs a nightly compiler (or RUSTC_BOOTSTRAP) for `-Z build-std`.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod buf;
mod counters;
mod fastpath;
mod maps;
mod nat;
mod tc_lan;
mod tc_lo;
mod tc_wan;
mod tcpath;
mod xdp_lan;
mod xdp_wan;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// Outbound fast path on LAN interfaces.
#[xdp]
pub fn xdp_lan(ctx: XdpContext) -> u32 {
    xdp_lan::run(&ctx)
}

/// Inbound fast path and filter on the WAN interface.
#[xdp]
pub fn xdp_wan(ctx: XdpContext) -> u32 {
    xdp_wan::run(&ctx)
}

/// Inbound translation of packets the XDP fast path left to the kernel.
#[classifier]
pub fn tc_wan_ingress(ctx: TcContext) -> i32 {
    tc_wan::ingress(&ctx)
}

/// Hairpinning of packets the XDP fast path left to the kernel.
#[classifier]
pub fn tc_lan_ingress(ctx: TcContext) -> i32 {
    tc_lan::ingress(&ctx)
}

/// Replies of the gateway's own services to internal hosts' external endpoints.
#[classifier]
pub fn tc_lo_egress(ctx: TcContext) -> i32 {
    tc_lo::egress(&ctx)
}

/// Outbound translation of everything that reaches the WAN through the kernel.
#[classifier]
pub fn tc_wan_egress(ctx: TcContext) -> i32 {
    tc_wan::egress(&ctx)
}

/// GPL-compatible licence: `bpf_fib_lookup`, `bpf_redirect` and the socket lookups
/// are GPL-only helpers.
#[no_mangle]
#[link_section = "license"]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// Programs for `cargo xtask bench`; natgw never attaches them (see `bench`).
mod bench;

/// Bench: the per-packet floor, `XDP_PASS` and nothing else.
#[xdp]
pub fn xdp_pass(ctx: XdpContext) -> u32 {
    bench::pass(&ctx)
}

/// Bench: the receiver, counting into `BENCH_RX` and dropping.
#[xdp]
pub fn xdp_count_drop(ctx: XdpContext) -> u32 {
    bench::count_drop(&ctx)
}

/// Bench: the traffic generator for `BPF_PROG_TEST_RUN` live-frame mode.
#[xdp]
pub fn xdp_gen(ctx: XdpContext) -> u32 {
    bench::generate(&ctx)
}

/// Bench: the program-only timing, a fresh frame per repetition, then a tail call
/// into `xdp_lan` (or `xdp_pass`).
#[xdp]
pub fn xdp_replay(ctx: XdpContext) -> u32 {
    bench::replay(&ctx)
}

/// Bench: the bare XDP forwarder (FIB lookup, MAC rewrite, redirect), the ceiling.
#[xdp]
pub fn xdp_fwd(ctx: XdpContext) -> u32 {
    bench::forward(&ctx)
}

/// Bench: the *lazy expiry on lookup* prototype (issue #18), behind `xdp_replay`.
#[xdp]
pub fn xdp_gc_lazy(ctx: XdpContext) -> u32 {
    bench::gc::lazy(&ctx)
}

/// Bench: the *in-kernel expiry with `bpf_timer`* prototype (issue #18), behind
/// `xdp_replay`. Only in the bench's BTF object (feature `gc-timer`).
#[cfg(feature = "gc-timer")]
#[xdp]
pub fn xdp_gc_timer(ctx: XdpContext) -> u32 {
    bench::gc::timer(&ctx)
}
