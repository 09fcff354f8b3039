//! Hairpinning on the kernel's path, at the LAN interfaces' TC ingress.
//!
//! `xdp_lan` hands a hairpinned packet (internal host to an external endpoint that
//! maps to an internal endpoint) to the kernel untouched when its fast path cannot
//! deliver it, e.g. because the LAN device does not accept XDP redirects. The kernel
//! itself would deliver such a packet locally, so this program translates it here —
//! source to the sender's external endpoint (RFC 4787 REQ-9a), destination to the
//! target's internal endpoint — does the router's TTL duty and sends it back out
//! with `bpf_redirect` (or `bpf_redirect_neigh` when the neighbour is unresolved).

use aya_ebpf::{bindings::BPF_F_INGRESS, helpers::generated::bpf_redirect, programs::TcContext};
use natgw_common::{
    packet::{ipv4, parse_icmp_error, Ipv4Packet, L4Kind, Side},
    validate, Config, Counter,
};

use crate::{
    buf::TcBuf,
    counters::count,
    nat::{self, mapping, socket::local_socket_owns},
    tcpath::{self, lan_hop, send, Verdict},
};

/// Entry point of `tc_lan_ingress`.
#[inline(always)]
pub fn ingress(ctx: &TcContext) -> i32 {
    tcpath::run(ctx, try_ingress)
}

#[inline(always)]
fn try_ingress(ctx: &TcContext) -> Verdict {
    let cfg = nat::config().ok_or(None)?;
    let pkt = tcpath::parse(ctx)?;
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
        // Options are the kernel's to validate, after this hook (xdp_lan counted
        // it): the kernel delivers it locally, untranslated.
        || validate::has_ip_options(&pkt)
    {
        return Err(None);
    }
    validate::check_header(&TcBuf::new(ctx), &pkt).map_err(Some)?;
    let Some(target) = mapping::inbound(&pkt) else {
        return to_local_service(ctx, cfg, &pkt);
    };
    // SAFETY: reading a field of the live context.
    let ingress = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let hop = lan_hop(ctx, &pkt, target.internal.addr, ingress).map_err(Some)?;
    let from = mapping::outbound(ctx, cfg, &pkt, || admit_new(ctx, &pkt)).map_err(Some)?;
    target.admit_hairpin(&pkt, from).map_err(Some)?;
    target.account(&pkt);
    tcpath::rewrite(ctx, &pkt, Side::Source, from)?;
    tcpath::rewrite(ctx, &pkt, Side::Destination, target.internal)?;
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
fn hairpin_icmp_error(ctx: &TcContext, pkt: &Ipv4Packet) -> Verdict {
    let emb = parse_icmp_error(&TcBuf::new(ctx), pkt).map_err(|_| Some(Counter::DropMalformed))?;
    let a = mapping::external_of(emb.proto, emb.dst, emb.dport_be).ok_or(None)?;
    let b = mapping::internal_of(emb.proto, emb.src, emb.sport_be).ok_or(None)?;
    // SAFETY: reading a field of the live context.
    let ingress = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let hop = lan_hop(ctx, pkt, b.addr, ingress).map_err(Some)?;
    // Each rewrite reads the checksums it updates back from the packet, so the
    // second one builds on the first.
    tcpath::rewrite_error(ctx, pkt, &emb, Side::Destination, a, Some(Side::Source))?;
    tcpath::rewrite_error(ctx, pkt, &emb, Side::Source, b, Some(Side::Destination))?;
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
fn to_local_service(ctx: &TcContext, cfg: &Config, pkt: &Ipv4Packet) -> Verdict {
    if !local_socket_owns(ctx, pkt.proto, pkt.dst, pkt.dport_be, pkt.src, pkt.sport_be) {
        return Err(None);
    }
    let from = mapping::outbound(ctx, cfg, pkt, || admit_new(ctx, pkt)).map_err(Some)?;
    tcpath::rewrite(ctx, pkt, Side::Source, from)?;
    // lo's address is all zeros: a frame addressed to anything else would count as
    // for another host and be dropped.
    ctx.store(0, &[0u8; 6], 0)
        .map_err(|_| Some(Counter::DropInternal))?;
    count(Counter::HairpinLocal);
    // SAFETY: plain helper call; its result is the TC action to return.
    Ok(unsafe { bpf_redirect(LOOPBACK_IFINDEX, u64::from(BPF_F_INGRESS)) } as i32)
}

/// What a packet must pass before it creates its sender's mapping: a right L4
/// checksum (see `natgw_common::validate`).
#[inline(always)]
fn admit_new(ctx: &TcContext, pkt: &Ipv4Packet) -> Result<(), Counter> {
    let partial = tcpath::partial_checksum(ctx, pkt);
    validate::check_checksum(&TcBuf::new(ctx), pkt, partial)
}

/// `lo`'s interface index, the same in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

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
