//! Hairpinning on the kernel's path, at the LAN interfaces' TC ingress.
//!
//! `xdp_lan` hands a hairpinned packet (internal host to an external endpoint that
//! maps to an internal endpoint) to the kernel untouched when its fast path cannot
//! deliver it, e.g. because the LAN device does not accept XDP redirects. The kernel
//! itself would deliver such a packet locally, so this program translates it here —
//! source to the sender's external endpoint (RFC 4787 REQ-9a), destination to the
//! target's internal endpoint — does the router's TTL duty and sends it back out
//! with `bpf_redirect` (or `bpf_redirect_neigh` when the neighbour is unresolved).

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use natgw_common::{
    packet::{ipv4, parse_icmp_error, rewrite_icmp_error, Ipv4Packet, L4Kind, Rewrite, Side},
    Config, Counter, IfaceRole,
};

use crate::{
    buf::TcBuf,
    counters::count,
    nat::{self, fib, mapping, socket::local_socket_owns},
    tc_wan::{apply, parse},
};

/// Entry point of `tc_lan_ingress`.
#[inline(always)]
pub fn ingress(ctx: &TcContext) -> i32 {
    match try_ingress(ctx) {
        Ok(action) => action,
        Err(None) => TC_ACT_OK,
        Err(Some(counter)) => {
            count(counter);
            if counter.is_drop() {
                TC_ACT_SHOT
            } else {
                TC_ACT_OK
            }
        }
    }
}

#[inline(always)]
fn try_ingress(ctx: &TcContext) -> Result<i32, Option<Counter>> {
    let cfg = nat::config().ok_or(None)?;
    let pkt = parse(ctx)?;
    if pkt.kind == L4Kind::IcmpError
        && nat::is_external(cfg, pkt.dst)
        && nat::is_internal(pkt.src)
        && pkt.ttl > 1
    {
        return hairpin_icmp_error(ctx, &pkt);
    }
    if !nat::is_external(cfg, pkt.dst)
        || pkt.kind != L4Kind::Ports
        || !nat::is_internal(pkt.src)
        || pkt.ttl <= 1
    {
        return Err(None);
    }
    let Some(target) = mapping::inbound(&pkt) else {
        return to_local_service(ctx, cfg, &pkt);
    };
    // SAFETY: reading a field of the live context.
    let ingress = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let hop = fib::lookup(ctx, &pkt, target.internal.addr, ingress, true).map_err(Some)?;
    if !nat::iface(hop.ifindex).is_some_and(|i| i.role == IfaceRole::Lan as u8) {
        return Err(Some(Counter::PassNotNat));
    }
    let from = mapping::outbound(ctx, cfg, &pkt).map_err(Some)?;
    target.admit_hairpin(&pkt, from).map_err(Some)?;
    target.account(&pkt);
    apply(
        ctx,
        &Rewrite::new(&pkt, Side::Source, from.addr, from.port_be),
    )
    .map_err(Some)?;
    apply(
        ctx,
        &Rewrite::new(
            &pkt,
            Side::Destination,
            target.internal.addr,
            target.internal.port_be,
        ),
    )
    .map_err(Some)?;
    decrement_ttl(ctx, &pkt).map_err(Some)?;
    count(Counter::HairpinTranslated);
    send(ctx, &hop)
}

/// An ICMP error from internal host A about a hairpinned packet from B, sent to B's
/// external address (RFC 5508 REQ-7): the embedded packet goes back to the form B
/// sent (destination A's external endpoint, source B's internal one), the outer
/// source becomes A's external address and the outer destination B (REQ-7a).
/// Nothing is refreshed.
#[inline(always)]
fn hairpin_icmp_error(ctx: &TcContext, pkt: &Ipv4Packet) -> Result<i32, Option<Counter>> {
    let mut buf = TcBuf::new(ctx);
    let emb = parse_icmp_error(&buf, pkt).map_err(|_| Some(Counter::DropMalformed))?;
    let a = mapping::external_of(emb.proto, emb.dst, emb.dport_be).ok_or(None)?;
    let b = mapping::internal_of(emb.proto, emb.src, emb.sport_be).ok_or(None)?;
    // SAFETY: reading a field of the live context.
    let ingress = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let hop = fib::lookup(ctx, pkt, b.addr, ingress, true).map_err(Some)?;
    if !nat::iface(hop.ifindex).is_some_and(|i| i.role == IfaceRole::Lan as u8) {
        return Err(Some(Counter::PassNotNat));
    }
    // Each rewrite reads the checksums it updates back from the packet, so the
    // second one builds on the first.
    rewrite_icmp_error(
        &mut buf,
        pkt,
        &emb,
        Side::Destination,
        a.addr,
        a.port_be,
        Some((Side::Source, a.addr)),
    )
    .ok_or(Some(Counter::DropInternal))?;
    rewrite_icmp_error(
        &mut buf,
        pkt,
        &emb,
        Side::Source,
        b.addr,
        b.port_be,
        Some((Side::Destination, b.addr)),
    )
    .ok_or(Some(Counter::DropInternal))?;
    decrement_ttl(ctx, pkt).map_err(Some)?;
    count(Counter::HairpinTranslated);
    send(ctx, &hop)
}

/// A packet from an internal host to a service of the gateway itself on its
/// external address (the STUN responder, say): hairpinned like any other, so the
/// service sees the sender's external endpoint (RFC 4787 REQ-9a), and delivered
/// locally through `lo`. Its replies come back through `tc_lo_egress`.
///
/// Its source is now an address of the gateway, which the kernel accepts only on an
/// interface with `accept_local`. natgw sets that on `lo` alone, where nothing but
/// this redirect can inject packets: on a LAN interface it would let any LAN host
/// speak as the gateway.
#[inline(always)]
fn to_local_service(
    ctx: &TcContext,
    cfg: &Config,
    pkt: &Ipv4Packet,
) -> Result<i32, Option<Counter>> {
    if !local_socket_owns(ctx, pkt.proto, pkt.dst, pkt.dport_be, pkt.src, pkt.sport_be) {
        return Err(None);
    }
    let from = mapping::outbound(ctx, cfg, pkt).map_err(Some)?;
    apply(
        ctx,
        &Rewrite::new(pkt, Side::Source, from.addr, from.port_be),
    )
    .map_err(Some)?;
    // lo's address is all zeros: a frame addressed to anything else would count as
    // for another host and be dropped.
    ctx.store(0, &[0u8; 6], 0)
        .map_err(|_| Some(Counter::DropInternal))?;
    count(Counter::HairpinLocal);
    // SAFETY: plain helper call; its result is the TC action to return.
    Ok(unsafe { bpf_redirect(LOOPBACK_IFINDEX, u64::from(BPF_F_INGRESS)) } as i32)
}

/// `lo`'s interface index, the same in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Sends the translated packet out of `hop`'s interface.
#[inline(always)]
pub fn send(ctx: &TcContext, hop: &fib::NextHop) -> Result<i32, Option<Counter>> {
    // SAFETY: plain helper calls; their result is the TC action to return.
    let action = unsafe {
        if hop.resolved {
            ctx.store(0, &hop.dmac, 0)
                .map_err(|_| Some(Counter::DropInternal))?;
            ctx.store(6, &hop.smac, 0)
                .map_err(|_| Some(Counter::DropInternal))?;
            bpf_redirect(hop.ifindex, 0)
        } else {
            bpf_redirect_neigh(hop.ifindex, core::ptr::null_mut(), 0, 0)
        }
    };
    Ok(action as i32)
}

/// TTL minus one, with the IP checksum fixed by the skb helper.
#[inline(always)]
fn decrement_ttl(ctx: &TcContext, pkt: &Ipv4Packet) -> Result<(), Counter> {
    let old = u16::from_be_bytes([pkt.ttl, pkt.proto]).to_be();
    let new = u16::from_be_bytes([pkt.ttl - 1, pkt.proto]).to_be();
    ctx.l3_csum_replace(pkt.l3 + ipv4::CSUM, u64::from(old), u64::from(new), 2)
        .map_err(|_| Counter::DropInternal)?;
    ctx.store(pkt.l3 + ipv4::TTL, &(pkt.ttl - 1), 0)
        .map_err(|_| Counter::DropInternal)
}
