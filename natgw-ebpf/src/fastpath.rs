//! What both XDP programs share: parsing a frame, turning a counted verdict into an
//! XDP action, deciding whether the fast path can take a packet, and its last step
//! (rewrite, complete the L4 checksum, the router's TTL duty, MAC addresses from the
//! FIB result, redirect).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::generated::bpf_redirect,
    programs::XdpContext,
    EbpfContext,
};
use natgw_common::{
    packet::{
        apply_incremental, decrement_ttl, ipv4_offset, l4_checksum_is_partial, parse_ipv4,
        recompute_l4_checksum, Fragment, Ipv4Packet, PacketBufMut, ParseError, Rewrite,
        MAX_FULL_CSUM_LEN,
    },
    Counter, IfaceConfig, IfaceRole,
};

use crate::{
    buf::XdpBuf,
    counters::count,
    nat::{
        self,
        fib::{self, NextHop},
    },
};

/// Runs an XDP program body: `Ok` is the action to return, `Err` a verdict that is
/// counted and turned into `XDP_DROP` (drop counters) or `XDP_PASS` (the rest).
#[inline(always)]
pub fn run(ctx: &XdpContext, body: impl FnOnce(&XdpContext) -> Result<u32, Counter>) -> u32 {
    match body(ctx) {
        Ok(action) => action,
        Err(counter) => {
            count(counter);
            if counter.is_drop() {
                XDP_DROP
            } else {
                XDP_PASS
            }
        }
    }
}

/// Parses the frame as Ethernet/IPv4.
#[inline(always)]
pub fn parse(buf: &XdpBuf) -> Result<Ipv4Packet, Counter> {
    let l3 = match ipv4_offset(buf) {
        Ok(Some(l3)) => l3,
        Ok(None) => return Err(Counter::PassNotIpv4),
        Err(_) => return Err(Counter::DropMalformed),
    };
    match parse_ipv4(buf, l3) {
        Ok(pkt) => Ok(pkt),
        // Possibly a multi-buffer frame: the kernel's path sees all of it.
        Err(ParseError::Truncated) => Err(Counter::PassFib),
        Err(ParseError::Invalid) => Err(Counter::DropMalformed),
    }
}

/// The ingress interface's configuration when the frame's L4 checksum is partial and
/// must be completed before it is redirected: its checksum field holds just the
/// pseudo-header sum and it arrived on an interface whose frames may carry one (veth,
/// from a local socket). `None` for any other checksum, corrupt ones included, which
/// is updated incrementally and so stays as right or as wrong as it came.
///
/// The frame is looked at first: a complete checksum, the common case, costs no
/// `IFACES` lookup, and a partial one costs exactly one (its result goes on to
/// [`next_hop`]).
#[inline(always)]
pub fn partial_checksum(
    buf: &XdpBuf,
    pkt: &Ipv4Packet,
    ingress: u32,
) -> Option<&'static IfaceConfig> {
    if !l4_checksum_is_partial(buf, pkt) {
        return None;
    }
    nat::iface(ingress).filter(|i| i.rx_csum_partial != 0)
}

/// Applies `rw` to the frame and prepares it for `hop`.
///
/// `partial` (see [`partial_checksum`]): a redirected frame loses the socket
/// buffer's checksum state, so a partial checksum is completed here.
#[inline(always)]
pub fn forward(
    buf: &mut XdpBuf,
    pkt: &Ipv4Packet,
    rw: &Rewrite,
    partial: bool,
    hop: &NextHop,
) -> Result<(), Counter> {
    apply_incremental(buf, rw).ok_or(Counter::DropInternal)?;
    if partial {
        recompute_l4_checksum(buf, pkt).ok_or(Counter::DropInternal)?;
    }
    decrement_ttl(buf, pkt).ok_or(Counter::DropInternal)?;
    buf.store::<6>(0, hop.dmac).ok_or(Counter::DropInternal)?;
    buf.store::<6>(6, hop.smac).ok_or(Counter::DropInternal)
}

/// `XDP_REDIRECT` to `ifindex`.
#[inline(always)]
pub fn redirect(ifindex: u32) -> u32 {
    // SAFETY: plain helper call; the result is the XDP action to return.
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

/// Where the fast path sends `pkt` once its destination is `dst`, if it can take
/// it at all: the TTL survives the hop, the packet is not a fragment (nor, outbound,
/// a non-atomic datagram whose identification must be replaced), a partial
/// checksum (`partial`: the ingress interface's configuration, from
/// [`partial_checksum`]) can be completed, the route leads to an interface of role
/// `egress_role`, the neighbour is resolved, the MTU fits, and the egress device
/// accepts redirects. `Err` names why the kernel's path must take it instead.
#[inline(always)]
pub fn next_hop<C: EbpfContext>(
    ctx: &C,
    pkt: &Ipv4Packet,
    dst: [u8; 4],
    ingress: u32,
    partial: Option<&IfaceConfig>,
    egress_role: IfaceRole,
) -> Result<NextHop, Counter> {
    if pkt.ttl <= 1 {
        return Err(Counter::PassTtl);
    }
    if pkt.frag != Fragment::None {
        return Err(Counter::PassFragment);
    }
    if !pkt.dont_fragment && egress_role == IfaceRole::Wan {
        // Leaves with an identification of ours, which the TC path gives it.
        return Err(Counter::PassNonAtomic);
    }
    if let Some(rx) = partial {
        if rx.rx_xdp_generic != 0 {
            return Err(Counter::PassNoRedirect);
        }
        if pkt.l4_len() > MAX_FULL_CSUM_LEN {
            return Err(Counter::PassMtu);
        }
    }
    let hop = fib::lookup(ctx, pkt, dst, ingress, false)?;
    let Some(egress) = nat::iface(hop.ifindex) else {
        return Err(Counter::PassNotNat);
    };
    if egress.role != egress_role as u8 {
        return Err(Counter::PassNotNat);
    }
    if egress.redirect_ok == 0 {
        return Err(Counter::PassNoRedirect);
    }
    Ok(hop)
}
