//! Translation on the kernel's path, at the WAN interface's TC hooks.
//!
//! `egress` sees every packet the kernel sends out of the WAN: forwarded packets the
//! XDP fast path left to the kernel, and the gateway's own. Sources inside the
//! internal prefixes are translated, or dropped when they cannot be, so no internal
//! address ever leaves. `ingress` translates inbound packets that `xdp_wan` let
//! through untouched because the fast path could not deliver them.
//!
//! Rewrites go through `bpf_l3_csum_replace`/`bpf_l4_csum_replace`, which keep the
//! socket buffer's checksum state right, partial (offloaded) checksums included.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use natgw_common::{
    packet::{ipv4_offset, parse_ipv4, Ipv4Packet, Rewrite, Side},
    Counter,
};

use crate::{
    buf::TcBuf,
    counters::count,
    nat::{self, mapping},
};

/// Entry point of `tc_wan_egress`.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    match try_egress(ctx) {
        Ok(()) => TC_ACT_OK,
        Err(None) => TC_ACT_OK,
        Err(Some(counter)) => {
            count(counter);
            TC_ACT_SHOT
        }
    }
}

/// `Err(None)`: not for the NAT, let it go. `Err(Some(c))`: drop, counted as `c`.
#[inline(always)]
fn try_egress(ctx: &TcContext) -> Result<(), Option<Counter>> {
    let cfg = nat::config().ok_or(None)?;
    let pkt = parse(ctx)?;
    if !nat::is_internal(pkt.src) {
        return Err(None); // the gateway's own traffic
    }
    if !pkt.has_ports() {
        return Err(Some(Counter::DropUntranslatable));
    }
    let ext = mapping::outbound(ctx, cfg, &pkt).map_err(Some)?;
    apply(
        ctx,
        &Rewrite::new(&pkt, Side::Source, ext.addr, ext.port_be),
    )
    .map_err(Some)?;
    count(Counter::TcOutTranslated);
    Ok(())
}

/// Entry point of `tc_wan_ingress`.
#[inline(always)]
pub fn ingress(ctx: &TcContext) -> i32 {
    match try_ingress(ctx) {
        Ok(()) | Err(None) => TC_ACT_OK,
        Err(Some(counter)) => {
            count(counter);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn try_ingress(ctx: &TcContext) -> Result<(), Option<Counter>> {
    let cfg = nat::config().ok_or(None)?;
    let pkt = parse(ctx)?;
    if u32::from_ne_bytes(pkt.dst) != cfg.ext_addr_be || !pkt.has_ports() {
        return Err(None);
    }
    // xdp_wan already dropped what has no mapping and is not the gateway's own.
    let hit = mapping::inbound(&pkt).ok_or(None)?;
    hit.account(&pkt);
    apply(
        ctx,
        &Rewrite::new(
            &pkt,
            Side::Destination,
            hit.internal.addr,
            hit.internal.port_be,
        ),
    )
    .map_err(Some)?;
    count(Counter::TcInTranslated);
    Ok(())
}

/// Parses an IPv4 packet; non-IPv4 is `Err(None)`, a malformed one is dropped.
#[inline(always)]
fn parse(ctx: &TcContext) -> Result<Ipv4Packet, Option<Counter>> {
    let buf = TcBuf::new(ctx);
    let l3 = ipv4_offset(&buf)
        .map_err(|_| Some(Counter::DropMalformed))?
        .ok_or(None)?;
    parse_ipv4(&buf, l3).map_err(|_| Some(Counter::DropMalformed))
}

/// Executes `rw` with the skb helpers: L4 checksum (pseudo-header address, then
/// port), IP checksum, then the fields themselves.
#[inline(always)]
fn apply(ctx: &TcContext, rw: &Rewrite) -> Result<(), Counter> {
    let old_addr = u64::from(u32::from_ne_bytes(rw.old_addr));
    let new_addr = u64::from(u32::from_ne_bytes(rw.new_addr));
    if let Some(off) = rw.l4_csum_off {
        let mangled = if rw.udp {
            u64::from(BPF_F_MARK_MANGLED_0)
        } else {
            0
        };
        ctx.l4_csum_replace(
            off,
            old_addr,
            new_addr,
            u64::from(BPF_F_PSEUDO_HDR) | mangled | 4,
        )
        .map_err(|_| Counter::DropInternal)?;
        ctx.l4_csum_replace(
            off,
            u64::from(rw.old_port_be),
            u64::from(rw.new_port_be),
            mangled | 2,
        )
        .map_err(|_| Counter::DropInternal)?;
    }
    ctx.l3_csum_replace(rw.ip_csum_off, old_addr, new_addr, 4)
        .map_err(|_| Counter::DropInternal)?;
    ctx.store(rw.addr_off, &rw.new_addr, 0)
        .map_err(|_| Counter::DropInternal)?;
    ctx.store(rw.port_off, &rw.new_port_be, 0)
        .map_err(|_| Counter::DropInternal)
}
