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
    bindings::{BPF_NOEXIST, TC_ACT_OK},
    helpers::bpf_ktime_get_ns,
    programs::TcContext,
};
use natgw_common::{
    maps::{FragKey, FragOutKey, FragOutValue, FragValue, StashKey, MAX_STASHED_FRAGMENT_LEN},
    packet::{
        parse_icmp_error, rewrite_address, rewrite_ip_id, Fragment, Ipv4Packet, L4Kind, Side,
    },
    Config, Counter,
};

use crate::{
    buf::TcBuf,
    counters::count,
    maps::{FRAGS_IN, FRAGS_OUT, FRAG_SCRATCH, FRAG_STASH},
    nat::{self, events, fragments, mapping},
    tcpath::{self, Verdict},
    xdp_wan,
};

/// Entry point of `tc_wan_egress`.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    tcpath::run(ctx, |ctx| try_egress(ctx).map(|()| TC_ACT_OK))
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
        fragment_id(ctx, cfg, &pkt).map_err(Some)?;
        rewrite_address(&mut TcBuf::new(ctx), &pkt, Side::Source, ext)
            .ok_or(Some(Counter::DropInternal))?;
        count(Counter::FragmentTranslated);
        return Ok(());
    }
    if !pkt.maps_outbound() {
        return Err(Some(Counter::DropUntranslatable));
    }
    let ext = mapping::outbound(ctx, cfg, &pkt).map_err(|c| {
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
    if pkt.kind == L4Kind::IcmpError {
        return icmp_error_in(ctx, &pkt);
    }
    let frag_key = FragKey::new(
        u32::from_ne_bytes(pkt.src),
        u32::from_ne_bytes(pkt.dst),
        pkt.ip_id_be,
        pkt.proto,
    );
    if pkt.frag == Fragment::Later {
        // SAFETY: read-only use of a live map value.
        let Some(first) = (unsafe { FRAGS_IN.get(&frag_key) }) else {
            return stash(ctx, &pkt, frag_key);
        };
        let int = first.int_addr_be.to_ne_bytes();
        rewrite_address(&mut TcBuf::new(ctx), &pkt, Side::Destination, int)
            .ok_or(Some(Counter::DropInternal))?;
        if !pkt.more_fragments {
            fragments::give_back(pkt.src, false);
        }
        count(Counter::FragmentTranslated);
        return Ok(());
    }
    if !pkt.maps_inbound() {
        return Err(None);
    }
    // xdp_wan already dropped what has no mapping and is not the gateway's own.
    let hit = mapping::inbound(&pkt).ok_or(None)?;
    hit.admit(&pkt).map_err(Some)?;
    if pkt.frag == Fragment::First {
        // SAFETY: no preconditions.
        fragments::take(pkt.src, false, unsafe { bpf_ktime_get_ns() }).map_err(Some)?;
    }
    hit.account(&pkt);
    tcpath::rewrite(ctx, &pkt, Side::Destination, hit.internal)?;
    if pkt.frag == Fragment::First {
        let first = FragValue::new(
            u32::from_ne_bytes(hit.internal.addr),
            // SAFETY: no preconditions.
            unsafe { bpf_ktime_get_ns() },
        );
        let _ = FRAGS_IN.insert(&frag_key, &first, 0);
    }
    count(Counter::TcInTranslated);
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

/// Bytes copied per step when stashing a fragment.
const CHUNK: usize = 64;

/// Holds a later fragment that came before its first fragment: copied into
/// `FRAG_STASH` and dropped here; the controller sends it on, translated, once the
/// first fragment has been (RFC 4787 REQ-14).
#[inline(always)]
fn stash(ctx: &TcContext, pkt: &Ipv4Packet, datagram: FragKey) -> Verdict<()> {
    let tot_len = usize::from(pkt.tot_len);
    let scratch = FRAG_SCRATCH
        .get_ptr_mut(0)
        .ok_or(Some(Counter::DropInternal))?;
    if tot_len >= MAX_STASHED_FRAGMENT_LEN {
        return Err(Some(Counter::DropFragmentUnknown));
    }
    // A held fragment costs its source budget until the refill: nobody gives it
    // back, as its datagram may never come.
    // SAFETY: no preconditions.
    fragments::take(pkt.src, false, unsafe { bpf_ktime_get_ns() }).map_err(Some)?;
    // The compiler would fold the checks below into the one above; the verifier
    // needs them on the value it tracks, so hide the bound from the compiler.
    // SAFETY: reading a local.
    let len = unsafe { core::ptr::read_volatile(&tot_len) } & (MAX_STASHED_FRAGMENT_LEN - 1);
    // SAFETY: `scratch` points at this CPU's slot, used by nothing else while this
    // program runs.
    let slot = unsafe { &mut *scratch };
    // Copied in constant-size pieces, which the verifier can bound.
    let mut off = 0;
    while off + CHUNK <= len {
        let chunk: [u8; CHUNK] = ctx
            .load(pkt.l3 + off)
            .map_err(|_| Some(Counter::DropFragmentUnknown))?;
        if let Some(dst) = slot.packet.get_mut(off..off + CHUNK) {
            dst.copy_from_slice(&chunk);
        }
        off += CHUNK;
    }
    while off < len {
        let byte = ctx
            .load::<u8>(pkt.l3 + off)
            .map_err(|_| Some(Counter::DropFragmentUnknown))?;
        if let Some(dst) = slot.packet.get_mut(off) {
            *dst = byte;
        }
        off += 1;
    }
    slot.len = tot_len as u16;
    // SAFETY: no preconditions.
    slot.seen_ns = unsafe { bpf_ktime_get_ns() };
    let key = StashKey::new(datagram, pkt.frag_offset);
    FRAG_STASH
        .insert(&key, &*slot, 0)
        .map_err(|_| Some(Counter::DropFragmentUnknown))?;
    Err(Some(Counter::DropFragmentHeld))
}
