//! Hairpinning on the kernel's path, at the LAN interfaces' TC ingress.
//!
//! `xdp_lan` hands a hairpinned packet (internal host to an external endpoint that
//! maps to an internal endpoint) to the kernel untouched when its fast path cannot
//! deliver it, e.g. because the LAN device does not accept XDP redirects. The kernel
//! itself would deliver such a packet locally, so this program translates it here —
//! source to the sender's external endpoint (RFC 4787 REQ-9a), destination to the
//! target's internal endpoint — does the router's TTL duty and sends it back out
//! with `bpf_redirect` (or `bpf_redirect_neigh` when the neighbour is unresolved).
//! A packet for a service of the gateway itself on an external address gets the
//! same source and is delivered through `lo`.
//!
//! Fragments of a datagram to an external address are looked at first
//! ([`fragment`]): the first fragment of a datagram for a local service gets an
//! identification of the gateway's sequence and leaves a record (`FRAGS_IN`) that
//! its later fragments follow — the same source and identification, through `lo` —
//! so the gateway's kernel can reassemble it; a datagram left to the kernel leaves
//! one that lets its later fragments pass untouched. A later fragment that comes
//! before its first fragment is held for the controller, as on the WAN.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use natgw_common::{
    maps::{FragFate, FragKey, FragValue},
    packet::{
        ipv4, ipv4_offset, parse_icmp_error, parse_ipv4, rewrite_address, rewrite_ip_id, Fragment,
        Ipv4Packet, L4Kind, PacketBuf as _, Side,
    },
    validate, Config, Counter,
};

use crate::{
    buf::TcBuf,
    counters::count,
    nat::{self, fragments, mapping, socket::local_socket_owns},
    tcpath::{self, lan_hop, send, Verdict},
};

/// What [`fragment_step`] answers when the rest of the program is to handle the
/// packet: no TC action has this value.
const CARRY_ON: i32 = i32::MIN;

/// Entry point of `tc_lan_ingress`.
#[inline(always)]
pub fn ingress(ctx: &TcContext) -> i32 {
    let action = fragment_step(ctx);
    if action != CARRY_ON {
        return action;
    }
    tcpath::run(ctx, try_ingress)
}

/// [`fragment`] as a function of its own, called before [`try_ingress`] rather than
/// from it: the verifier then walks `try_ingress` — its port search above all — once
/// whatever this did, where the same steps inside it took the program past the
/// verifier's complexity limit; and the two frames are never on the stack together,
/// which has room for only one of `try_ingress`'s size.
#[inline(never)]
fn fragment_step(ctx: &TcContext) -> i32 {
    tcpath::run(ctx, |ctx| {
        fragment(ctx).map(|action| action.unwrap_or(CARRY_ON))
    })
}

#[inline(never)]
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
    // The sender's mapping before the hop: the hop, kept across the port search,
    // would take stack this program's call chain has no room for.
    let from = mapping::outbound(ctx, cfg, &pkt, || admit_new(ctx, &pkt)).map_err(Some)?;
    let hop = lan_hop(ctx, &pkt, target.internal.addr, ingress).map_err(Some)?;
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    target.admit_hairpin(&pkt, from, now).map_err(Some)?;
    target.account(&pkt, now);
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
    count(Counter::HairpinLocal);
    tcpath::to_lo(ctx)
}

/// What a packet must pass before it creates its sender's mapping: a right L4
/// checksum (see `natgw_common::validate`). Inlined: `try_ingress`'s frame leaves no
/// room on the stack for another call's.
#[inline(always)]
fn admit_new(ctx: &TcContext, pkt: &Ipv4Packet) -> Result<(), Counter> {
    let partial = tcpath::partial_checksum(ctx, pkt);
    validate::check_checksum(&TcBuf::new(ctx), pkt, partial)
}

/// A fragment of a datagram from an internal host to an external address, looked at
/// before the rest of the program: a later fragment is dealt with here (`Some`
/// action), a first fragment leaves the record its later fragments follow and goes
/// on to the rest (`None`), like everything else.
#[inline(always)]
fn fragment(ctx: &TcContext) -> Verdict<Option<i32>> {
    let Some(cfg) = nat::config() else {
        return Ok(None);
    };
    let buf = TcBuf::new(ctx);
    // Two loads for the common case, an unfragmented packet.
    let Ok(Some(l3)) = ipv4_offset(&buf) else {
        return Ok(None);
    };
    let Some(word) = buf.load::<2>(l3 + ipv4::FRAG) else {
        return Ok(None);
    };
    if u16::from_be_bytes(word) & (ipv4::MF | ipv4::OFFSET_MASK) == 0 {
        return Ok(None);
    }
    let pkt = parse_ipv4(&buf, l3).map_err(|_| Some(Counter::DropMalformed))?;
    if !nat::is_external(cfg, pkt.dst) || !nat::is_internal(pkt.src) {
        return Ok(None);
    }
    let datagram = FragKey::new(
        u32::from_ne_bytes(pkt.src),
        u32::from_ne_bytes(pkt.dst),
        pkt.ip_id_be,
        pkt.proto,
    );
    if pkt.frag == Fragment::Later {
        return later_fragment(ctx, &pkt, datagram).map(Some);
    }
    first_fragment(ctx, cfg, &pkt, &datagram).map_err(Some)?;
    Ok(None)
}

/// The first fragment of a datagram from an internal host to an external address:
/// what [`try_ingress`] is about to do with it decides what its later fragments get.
/// For a service of the gateway, an identification of the gateway's sequence (with
/// the source rewritten, the datagrams of all the hosts behind one external address
/// would otherwise share the gateway's reassembly by identification alone, RFC
/// 6864) and the host's external address (every mapping of a host has it: paired
/// pooling); for the gateway's kernel (a ping of the external address, a port no
/// socket holds), nothing. Hairpinned to another host (an ICMP error, or through a
/// mapping), no record: its later fragments are not translated.
#[inline(always)]
fn first_fragment(
    ctx: &TcContext,
    cfg: &Config,
    pkt: &Ipv4Packet,
    datagram: &FragKey,
) -> Result<(), Counter> {
    let to_kernel = pkt.ttl <= 1 || !matches!(pkt.kind, L4Kind::Ports | L4Kind::IcmpError);
    if !to_kernel && (pkt.kind == L4Kind::IcmpError || mapping::inbound(pkt).is_some()) {
        return Ok(());
    }
    if to_kernel || !local_socket_owns(ctx, pkt.proto, pkt.dst, pkt.dport_be, pkt.src, pkt.sport_be)
    {
        return fragments::record_local(pkt, true, datagram);
    }
    let new_id_be = fragments::next_nonzero_ip_id(cfg)?;
    let ext = nat::external_for(cfg, pkt.src);
    if ext == [0; 4] {
        return Err(nat::refusal(cfg, u32::from_ne_bytes(pkt.src)));
    }
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let first = FragValue::hairpin_local(u32::from_ne_bytes(ext), new_id_be, now);
    fragments::record_first(pkt.src, true, datagram, &first)?;
    rewrite_ip_id(&mut TcBuf::new(ctx), pkt, new_id_be).ok_or(Counter::DropInternal)?;
    count(Counter::IpIdRewritten);
    Ok(())
}

/// A later fragment from an internal host to an external address follows its
/// first fragment: to a service of the gateway with the same source and
/// identification, or untouched to the gateway's kernel; held until its first
/// fragment comes when that has not been seen yet (RFC 4787 REQ-14).
#[inline(always)]
fn later_fragment(ctx: &TcContext, pkt: &Ipv4Packet, datagram: FragKey) -> Verdict {
    let Some(first) = fragments::first_of(&datagram) else {
        return Err(Some(fragments::stash(ctx, pkt, datagram, true)));
    };
    if !pkt.more_fragments {
        fragments::give_back(pkt.src, true);
    }
    if first.fate != FragFate::HairpinLocal as u8 {
        return Err(Some(Counter::FragmentLocal));
    }
    let mut buf = TcBuf::new(ctx);
    rewrite_ip_id(&mut buf, pkt, first.new_id_be).ok_or(Some(Counter::DropInternal))?;
    rewrite_address(&mut buf, pkt, Side::Source, first.addr_be.to_ne_bytes())
        .ok_or(Some(Counter::DropInternal))?;
    count(Counter::FragmentTranslated);
    tcpath::to_lo(ctx)
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
