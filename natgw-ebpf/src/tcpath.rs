//! What the TC programs share, as `fastpath` is for the XDP ones: turning a counted
//! verdict into a TC action, parsing a socket buffer, rewriting an endpoint through
//! the skb checksum helpers, and, for the programs that send a packet on themselves
//! (`tc_lan_ingress`, `tc_lo_egress`), the hop back into the LAN, the send, and the
//! way into the gateway's own kernel through `lo`.
//!
//! UDP/TCP rewrites go through `bpf_l3_csum_replace`/`bpf_l4_csum_replace`, which
//! keep the socket buffer's checksum state right, partial (offloaded) checksums
//! included. ICMP is rewritten by the shared code, which keeps its checksums
//! consistent itself.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use natgw_common::{
    packet::{
        apply_incremental, ipv4_offset, l4_checksum_is_partial, parse_ipv4, rewrite_icmp_error,
        Embedded, Ipv4Packet, Rewrite, Side, NO_CSUM,
    },
    validate, Counter, IfaceRole,
};

use crate::{
    buf::TcBuf,
    counters::count,
    nat::{self, fib::NextHop, mapping::Endpoint},
};

/// A TC program body's result: `Ok` is the action to return. `Err(None)`: not for
/// the NAT, let it go uncounted. `Err(Some(c))`: counted as `c`, and dropped when `c`
/// is a drop counter (see [`run`], [`run_never_dropping`]).
pub type Verdict<T = i32> = Result<T, Option<Counter>>;

/// Runs a TC program body: `Ok` is the action to return, `Err(None)` is `TC_ACT_OK`,
/// `Err(Some(c))` is counted and turned into `TC_ACT_SHOT` (drop counters) or
/// `TC_ACT_OK` (the rest).
#[inline(always)]
pub fn run(ctx: &TcContext, body: impl FnOnce(&TcContext) -> Verdict) -> i32 {
    action(body(ctx), true)
}

/// [`run`] for a program that never drops: `Err(Some(c))` is counted, and the packet
/// still goes its way untouched (`TC_ACT_OK`), drop counters included. `tc_lo_egress`
/// sees all of the gateway's local traffic; what it fails to translate is left to
/// the kernel.
#[inline(always)]
pub fn run_never_dropping(ctx: &TcContext, body: impl FnOnce(&TcContext) -> Verdict) -> i32 {
    action(body(ctx), false)
}

/// The TC action of `verdict`, counted; drop counters drop only when `drops`.
#[inline(always)]
fn action(verdict: Verdict, drops: bool) -> i32 {
    match verdict {
        Ok(action) => action,
        Err(None) => TC_ACT_OK,
        Err(Some(counter)) => {
            count(counter);
            if drops && counter.is_drop() {
                TC_ACT_SHOT
            } else {
                TC_ACT_OK
            }
        }
    }
}

/// Parses an IPv4 packet; non-IPv4 is `Err(None)`, a malformed one is dropped.
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Verdict<Ipv4Packet> {
    let buf = TcBuf::new(ctx);
    let l3 = ipv4_offset(&buf)
        .map_err(|_| Some(Counter::DropMalformed))?
        .ok_or(None)?;
    parse_ipv4(&buf, l3).map_err(|_| Some(Counter::DropMalformed))
}

/// Whether `pkt`'s L4 checksum may be partial (offloaded): it holds the
/// pseudo-header sum alone and the packet came from a local socket, on the gateway
/// (no ingress interface) or through an interface whose frames may carry one (as
/// the fast path decides, `fastpath::partial_checksum`).
#[inline(always)]
pub fn partial_checksum(ctx: &TcContext, pkt: &Ipv4Packet) -> bool {
    // SAFETY: reading a field of the live context.
    let ingress = unsafe { (*ctx.skb.skb).ingress_ifindex };
    (ingress == 0 || nat::iface(ingress).is_some_and(|i| i.rx_csum_partial != 0))
        && l4_checksum_is_partial(&TcBuf::new(ctx), pkt)
}

/// Rewrites `pkt`'s `side` (source or destination address and port) to `to`,
/// through [`apply`].
#[inline(always)]
pub fn rewrite(ctx: &TcContext, pkt: &Ipv4Packet, side: Side, to: Endpoint) -> Verdict<()> {
    apply(ctx, &Rewrite::new(pkt, side, to.addr, to.port_be)).map_err(Some)
}

/// Rewrites the ICMP error `pkt` about the packet `emb` it embeds: that packet's
/// `side` to `to`, and with `outer` that side of the outer header to `to`'s address.
/// The shared code keeps every checksum it touches consistent, the ICMP checksum
/// included, so each rewrite builds on the one before.
#[inline(always)]
pub fn rewrite_error(
    ctx: &TcContext,
    pkt: &Ipv4Packet,
    emb: &Embedded,
    side: Side,
    to: Endpoint,
    outer: Option<Side>,
) -> Verdict<()> {
    let outer = outer.map(|o| (o, to.addr));
    rewrite_icmp_error(
        &mut TcBuf::new(ctx),
        pkt,
        emb,
        side,
        to.addr,
        to.port_be,
        outer,
    )
    .ok_or(Some(Counter::DropInternal))
}

/// Executes `rw`. UDP/TCP go through the skb helpers: L4 checksum (pseudo-header
/// address, then port), IP checksum, then the fields. ICMP, whose checksum is never
/// offloaded, is rewritten by the shared incremental code.
#[inline(always)]
pub fn apply(ctx: &TcContext, rw: &Rewrite) -> Result<(), Counter> {
    if !rw.pseudo {
        return apply_incremental(&mut TcBuf::new(ctx), rw).ok_or(Counter::DropInternal);
    }
    let old_addr = u64::from(u32::from_ne_bytes(rw.old_addr));
    let new_addr = u64::from(u32::from_ne_bytes(rw.new_addr));
    if rw.l4_csum_off != NO_CSUM {
        let off = rw.l4_csum_off;
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

/// The next hop of `pkt` once its destination is `dst`, looked up as if it entered
/// on `ifindex`, when that hop is out of a LAN interface (an unresolved neighbour
/// included, for [`send`]). `Err` is the lookup's counter, or `PassNotNat` for a
/// route elsewhere.
#[inline(always)]
pub fn lan_hop(
    ctx: &TcContext,
    pkt: &Ipv4Packet,
    dst: [u8; 4],
    ifindex: u32,
) -> Result<NextHop, Counter> {
    let hop = nat::fib::lookup(ctx, pkt, dst, ifindex, true)?;
    if !nat::iface(hop.ifindex).is_some_and(|i| i.role == IfaceRole::Lan as u8) {
        return Err(Counter::PassNotNat);
    }
    Ok(hop)
}

/// Sends the translated packet out of `hop`'s interface.
#[inline(always)]
pub fn send(ctx: &TcContext, hop: &NextHop) -> Verdict {
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

/// `lo`'s interface index, the same in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Hands the packet to the gateway's kernel as if it arrived on `lo`: to be
/// delivered locally, or routed on when its destination is elsewhere.
#[inline(always)]
pub fn to_lo(ctx: &TcContext) -> Verdict {
    // lo's address is all zeros: a frame addressed to anything else would count as
    // for another host and be dropped.
    ctx.store(0, &[0u8; 6], 0)
        .map_err(|_| Some(Counter::DropInternal))?;
    // SAFETY: plain helper call; its result is the TC action to return.
    Ok(unsafe { bpf_redirect(LOOPBACK_IFINDEX, u64::from(BPF_F_INGRESS)) } as i32)
}

/// [`validate::check_header`] on the socket buffer, as a function of its own (a
/// BPF-to-BPF call). Inlined, the compiler keeps the UDP length and the TCP flags it
/// loaded for the rest of the program, and the verifier then walks the port search
/// once for every range of them it can tell apart: that took `tc_wan_egress` past
/// the verifier's million instructions. Behind a call, every valid packet leaves it
/// in the same state.
#[inline(always)]
pub fn check_header(ctx: &TcContext, pkt: &Ipv4Packet) -> Result<(), Counter> {
    match header_verdict(ctx, pkt) {
        VALID => Ok(()),
        BAD_UDP_LENGTH => Err(Counter::DropUdpLength),
        _ => Err(Counter::DropTcpFlags),
    }
}

/// [`header_verdict`]/[`checksum_verdict`]: nothing wrong.
const VALID: u32 = 0;
/// [`header_verdict`]: `DropUdpLength`.
const BAD_UDP_LENGTH: u32 = 1;
/// [`header_verdict`]: `DropTcpFlags`; [`checksum_verdict`]: `DropBadChecksum`.
const INVALID: u32 = 2;

#[inline(never)]
fn header_verdict(ctx: &TcContext, pkt: &Ipv4Packet) -> u32 {
    match validate::check_header(&TcBuf::new(ctx), pkt) {
        Ok(()) => VALID,
        Err(Counter::DropUdpLength) => BAD_UDP_LENGTH,
        Err(_) => INVALID,
    }
}

/// [`validate::check_checksum`] for a packet about to create a mapping, with
/// whether its checksum may be partial read from the interface it came in by, as a
/// function of its own for the reason [`check_header`] is.
#[inline(always)]
pub fn check_checksum(ctx: &TcContext, pkt: &Ipv4Packet) -> Result<(), Counter> {
    if checksum_verdict(ctx, pkt) == VALID {
        Ok(())
    } else {
        Err(Counter::DropBadChecksum)
    }
}

#[inline(never)]
fn checksum_verdict(ctx: &TcContext, pkt: &Ipv4Packet) -> u32 {
    let partial = partial_checksum(ctx, pkt);
    match validate::check_checksum(&TcBuf::new(ctx), pkt, partial) {
        Ok(()) => VALID,
        Err(_) => INVALID,
    }
}
