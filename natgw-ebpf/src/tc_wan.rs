//! Translation on the kernel's path, at the WAN interface's TC hooks.
//!
//! `egress` sees every packet the kernel sends out of the WAN: forwarded packets the
//! XDP fast path left to the kernel, and the gateway's own. Sources inside the
//! internal prefixes are translated, or dropped when they cannot be, so no internal
//! address ever leaves; ICMP errors about mapped flows, whoever sent them, get their
//! embedded packet translated too (RFC 5508 REQ-5). `ingress` translates inbound
//! packets that `xdp_wan` let through untouched because the fast path could not
//! deliver them, and inbound ICMP errors about mapped flows (REQ-4).
//!
//! Parsing, the rewrites through the skb checksum helpers and the verdict's TC action
//! are `tcpath`'s.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_ktime_get_ns,
    programs::TcContext,
};
use natgw_common::{
    maps::{FragFate, FragKey, FragOutKey, FragOutValue, FragValue},
    packet::{
        ipv4, ipv4_offset, parse_icmp_error, rewrite_address, rewrite_ip_id, Fragment, Ipv4Packet,
        L4Kind, PacketBuf as _, Side,
    },
    Config, Counter,
};

use crate::{
    buf::TcBuf,
    counters::count,
    maps::{FRAGS_IN, FRAGS_OUT},
    nat::{self, events, fragments, mapping},
    tcpath::{self, Verdict},
    xdp_wan,
};

/// Entry point of `tc_wan_egress`: translation, then the leak guard on whatever
/// translation lets go.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    let action = tcpath::run(ctx, |ctx| try_egress(ctx).map(|()| TC_ACT_OK));
    if action == TC_ACT_OK {
        leak_guard(ctx)
    } else {
        action
    }
}

/// The last check before the WAN: a packet whose source is inside the internal
/// prefixes does not leave (`drop_leak_guard`). It holds before the controller has
/// marked the data path ready (`CONFIG` is not consulted, only `ADDR_CLASS`, which
/// is filled before this program is attached), while the controller is down, and
/// whatever path a packet took to get here: everything the kernel transmits on the
/// WAN passes this hook (forwarded packets, the neighbour queue, the fragments the
/// kernel makes, GSO packets before they are segmented). Only `xdp_lan`'s redirect
/// bypasses it, and it sends nothing it has not just rewritten to an external
/// address.
#[inline(always)]
fn leak_guard(ctx: &TcContext) -> i32 {
    let buf = TcBuf::new(ctx);
    let Ok(Some(l3)) = ipv4_offset(&buf) else {
        return TC_ACT_OK;
    };
    let Some(src) = buf.load::<4>(l3 + ipv4::SRC) else {
        return TC_ACT_OK;
    };
    if nat::is_internal(src) {
        count(Counter::DropLeakGuard);
        return TC_ACT_SHOT;
    }
    TC_ACT_OK
}

#[inline(always)]
fn try_egress(ctx: &TcContext) -> Verdict<()> {
    let cfg = nat::config().ok_or(None)?;
    let pkt = tcpath::parse(ctx)?;
    let internal_src = nat::is_internal(pkt.src);
    if pkt.kind == L4Kind::IcmpError {
        return icmp_error_out(ctx, &pkt, internal_src);
    }
    if !internal_src {
        return Err(None); // the gateway's own traffic
    }
    if pkt.frag == Fragment::Later {
        // No ports to map by, and none needed: every mapping of a host shares its
        // external address, the only field a later fragment has to change.
        let ext = nat::external_for(cfg, pkt.src);
        if ext == [0; 4] {
            return Err(Some(nat::refusal(cfg, u32::from_ne_bytes(pkt.src))));
        }
        fragment_id(ctx, cfg, &pkt).map_err(Some)?;
        rewrite_address(&mut TcBuf::new(ctx), &pkt, Side::Source, ext)
            .ok_or(Some(Counter::DropInternal))?;
        count(Counter::FragmentTranslated);
        return Ok(());
    }
    if !pkt.maps_outbound() {
        return Err(Some(Counter::DropUntranslatable));
    }
    // What conntrack would mark invalid creates and refreshes nothing (and, as
    // natgw cannot translate it, never leaves).
    tcpath::check_header(ctx, &pkt).map_err(Some)?;
    let admit_new = || tcpath::check_checksum(ctx, &pkt);
    let ext = mapping::outbound(ctx, cfg, &pkt, admit_new).map_err(|c| {
        if c.is_no_mapping() {
            // SAFETY: reading the ifindex field of the live context.
            let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
            events::no_mapping(&TcBuf::new(ctx), &pkt, ifindex);
        }
        Some(c)
    })?;
    if pkt.frag == Fragment::First {
        fragment_id(ctx, cfg, &pkt).map_err(Some)?;
    } else if !pkt.dont_fragment {
        // Unfragmented but non-atomic: a router on the way may still fragment it.
        set_ip_id(ctx, &pkt, fragments::next_ip_id(cfg).map_err(Some)?).map_err(Some)?;
    }
    tcpath::rewrite(ctx, &pkt, Side::Source, ext)?;
    count(Counter::TcOutTranslated);
    Ok(())
}

/// Gives an outbound fragment its datagram's identification from the gateway's own
/// sequence (see [`FragOutValue`]), chosen when the datagram's first fragment to
/// pass (in whatever order) is seen. A datagram costs its host one unit of fragment
/// budget until its last fragment passes.
#[inline(always)]
fn fragment_id(ctx: &TcContext, cfg: &Config, pkt: &Ipv4Packet) -> Result<(), Counter> {
    let key = FragOutKey::new(
        u32::from_ne_bytes(pkt.src),
        u32::from_ne_bytes(pkt.dst),
        pkt.ip_id_be,
        pkt.proto,
    );
    // SAFETY: read-only use of a live map value.
    let new_id_be = if let Some(known) = unsafe { FRAGS_OUT.get(&key) } {
        known.new_id_be
    } else {
        // SAFETY: no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        fragments::take(pkt.src, true, now)?;
        let value = FragOutValue::new(fragments::next_ip_id(cfg)?, now);
        // Another CPU translating a fragment of the same datagram right now would
        // have inserted first: take its identification.
        if FRAGS_OUT
            .insert(&key, &value, u64::from(BPF_NOEXIST))
            .is_err()
        {
            fragments::give_back(pkt.src, true);
        }
        // SAFETY: as above.
        unsafe { FRAGS_OUT.get(&key) }.map_or(value.new_id_be, |v| v.new_id_be)
    };
    if !pkt.more_fragments {
        fragments::give_back(pkt.src, true);
    }
    set_ip_id(ctx, pkt, new_id_be)
}

/// Replaces the IP identification of outbound `pkt` (header checksum kept right).
#[inline(always)]
fn set_ip_id(ctx: &TcContext, pkt: &Ipv4Packet, new_id_be: u16) -> Result<(), Counter> {
    rewrite_ip_id(&mut TcBuf::new(ctx), pkt, new_id_be).ok_or(Counter::DropInternal)?;
    count(Counter::IpIdRewritten);
    Ok(())
}

/// An ICMP error leaving through the WAN about a packet that came in through a
/// mapping: the embedded packet's destination (the internal endpoint) becomes the
/// external endpoint again, and an internal outer source the external address.
/// Never refreshes the mapping (RFC 7857).
#[inline(always)]
fn icmp_error_out(ctx: &TcContext, pkt: &Ipv4Packet, internal_src: bool) -> Verdict<()> {
    let untranslatable = if internal_src {
        Some(Counter::DropUntranslatable)
    } else {
        None
    };
    let Ok(emb) = parse_icmp_error(&TcBuf::new(ctx), pkt) else {
        return Err(if internal_src {
            Some(Counter::DropMalformed)
        } else {
            None
        });
    };
    if !nat::is_internal(emb.dst) {
        return Err(untranslatable);
    }
    let ext = mapping::external_of(emb.proto, emb.dst, emb.dport_be).ok_or(untranslatable)?;
    let outer = internal_src.then_some(Side::Source);
    tcpath::rewrite_error(ctx, pkt, &emb, Side::Destination, ext, outer)?;
    count(Counter::IcmpErrorOutTranslated);
    Ok(())
}

/// Entry point of `tc_wan_ingress`.
#[inline(always)]
pub fn ingress(ctx: &TcContext) -> i32 {
    tcpath::run(ctx, |ctx| try_ingress(ctx).map(|()| TC_ACT_OK))
}

#[inline(always)]
fn try_ingress(ctx: &TcContext) -> Verdict<()> {
    let cfg = nat::config().ok_or(None)?;
    let pkt = tcpath::parse(ctx)?;
    // xdp_wan checked these already; checked again so that no packet reaches the
    // LAN unchecked whichever program sees it first.
    nat::check_wan_source(&pkt).map_err(|c| c.is_drop().then_some(c))?;
    if !nat::is_external(cfg, pkt.dst) {
        let verdict = xdp_wan::not_for_the_nat(&pkt);
        return Err(verdict.is_drop().then_some(verdict));
    }
    let datagram = FragKey::new(
        u32::from_ne_bytes(pkt.src),
        u32::from_ne_bytes(pkt.dst),
        pkt.ip_id_be,
        pkt.proto,
    );
    if pkt.frag == Fragment::Later {
        return later_fragment_in(ctx, &pkt, datagram);
    }
    let verdict = if pkt.kind == L4Kind::IcmpError {
        icmp_error_in(ctx, &pkt)
    } else {
        translate_in(ctx, &pkt, &datagram)
    };
    if pkt.frag == Fragment::First && matches!(verdict, Err(None)) {
        // For the gateway itself (a local socket, or the kernel's own answer): its
        // later fragments must reach the kernel untouched too.
        fragments::record_local(&pkt, false, &datagram).map_err(Some)?;
    }
    verdict
}

/// An inbound packet through a mapping; `Err(None)` leaves it to the gateway.
#[inline(always)]
fn translate_in(ctx: &TcContext, pkt: &Ipv4Packet, datagram: &FragKey) -> Verdict<()> {
    if !pkt.maps_inbound() {
        return Err(None);
    }
    // xdp_wan already dropped what has no mapping and is not the gateway's own.
    let hit = mapping::inbound(pkt).ok_or(None)?;
    tcpath::check_header(ctx, pkt).map_err(Some)?;
    // One timestamp for the packet: its session, its fragment budget, its mapping.
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    hit.admit(pkt, now).map_err(Some)?;
    if pkt.frag == Fragment::First {
        fragments::take(pkt.src, false, now).map_err(Some)?;
    }
    hit.account(pkt, now);
    tcpath::rewrite(ctx, pkt, Side::Destination, hit.internal)?;
    if pkt.frag == Fragment::First {
        let first = FragValue::new(u32::from_ne_bytes(hit.internal.addr), now);
        let _ = FRAGS_IN.insert(datagram, &first, 0);
    }
    count(Counter::TcInTranslated);
    Ok(())
}

/// A later fragment from the WAN follows its first fragment: to the internal host
/// it was translated to, or untouched to the gateway; held until its first fragment
/// comes when that has not been seen yet (RFC 4787 REQ-14).
#[inline(always)]
fn later_fragment_in(ctx: &TcContext, pkt: &Ipv4Packet, datagram: FragKey) -> Verdict<()> {
    let Some(first) = fragments::first_of(&datagram) else {
        return Err(Some(fragments::stash(ctx, pkt, datagram, false)));
    };
    if !pkt.more_fragments {
        fragments::give_back(pkt.src, false);
    }
    if first.fate != FragFate::ToInternal as u8 {
        return Err(Some(Counter::FragmentLocal));
    }
    rewrite_address(
        &mut TcBuf::new(ctx),
        pkt,
        Side::Destination,
        first.addr_be.to_ne_bytes(),
    )
    .ok_or(Some(Counter::DropInternal))?;
    count(Counter::FragmentTranslated);
    Ok(())
}

/// An ICMP error arriving for a packet that left through a mapping (from any
/// source, RFC 4787 REQ-12a): the embedded packet's source becomes the internal
/// endpoint again and the outer destination the internal host (RFC 5508 REQ-4).
/// Errors with a bad ICMP or embedded IP checksum are dropped (REQ-3); errors about
/// the gateway's own traffic go to the kernel.
#[inline(always)]
fn icmp_error_in(ctx: &TcContext, pkt: &Ipv4Packet) -> Verdict<()> {
    let emb = parse_icmp_error(&TcBuf::new(ctx), pkt).map_err(|_| Some(Counter::DropMalformed))?;
    if emb.src != pkt.dst {
        return Err(None);
    }
    let int = mapping::internal_of(emb.proto, emb.src, emb.sport_be).ok_or(None)?;
    tcpath::rewrite_error(ctx, pkt, &emb, Side::Source, int, Some(Side::Destination))?;
    count(Counter::IcmpErrorInTranslated);
    Ok(())
}
