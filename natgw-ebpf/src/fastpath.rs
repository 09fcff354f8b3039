//! The last step of the XDP fast path, shared by both directions: rewrite the
//! packet, make its L4 checksum complete, do the router's TTL duty, set the MAC
//! addresses from the FIB result and redirect.

use aya_ebpf::{helpers::generated::bpf_redirect, EbpfContext};
use natgw_common::{
    packet::{
        apply_incremental, decrement_ttl, recompute_l4_checksum, Fragment, Ipv4Packet,
        PacketBufMut, Rewrite, MAX_FULL_CSUM_LEN,
    },
    Counter, IfaceRole,
};

use crate::{
    buf::XdpBuf,
    nat::{
        self,
        fib::{self, NextHop},
    },
};

/// Applies `rw` to the frame and prepares it for `hop`.
///
/// `rx_partial`: the frame arrived on an interface where its L4 checksum may be
/// partial (veth from a local socket). A redirected frame loses the socket buffer's
/// checksum state, so the checksum is recomputed in full instead of updated.
#[inline(always)]
pub fn forward(
    buf: &mut XdpBuf,
    pkt: &Ipv4Packet,
    rw: &Rewrite,
    rx_partial: bool,
    hop: &NextHop,
) -> Result<(), Counter> {
    apply_incremental(buf, rw).ok_or(Counter::DropInternal)?;
    if rx_partial && pkt.l4_csum.is_some() {
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
/// it at all: the TTL survives the hop, the packet is not a fragment, its checksum
/// can be completed, the route leads to an interface of role `egress_role`, the
/// neighbour is resolved, the MTU fits, and the egress device accepts redirects.
/// `Err` names why the kernel's path must take it instead.
#[inline(always)]
pub fn next_hop<C: EbpfContext>(
    ctx: &C,
    pkt: &Ipv4Packet,
    dst: [u8; 4],
    ingress: u32,
    egress_role: IfaceRole,
) -> Result<NextHop, Counter> {
    if pkt.ttl <= 1 {
        return Err(Counter::PassTtl);
    }
    if pkt.frag != Fragment::None {
        return Err(Counter::PassFragment);
    }
    if let Some(rx) = nat::iface(ingress) {
        if rx.rx_csum_partial != 0 {
            if rx.rx_xdp_generic != 0 {
                return Err(Counter::PassNoRedirect);
            }
            if pkt.l4_len() > MAX_FULL_CSUM_LEN {
                return Err(Counter::PassMtu);
            }
        }
    }
    let hop = fib::lookup(ctx, pkt, dst, ingress)?;
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
