//! Replies of the gateway's own services to internal hosts that reached them through
//! an external address (`tc_lan_ingress::to_local_service`), at `lo`'s TC egress.
//!
//! Such a reply is addressed to the host's external endpoint, an address of the
//! gateway itself, so the kernel routes it through `lo`. Here its destination goes
//! back to the internal endpoint (the source stays the service's external endpoint,
//! as the host expects) and it is sent out of the host's LAN interface. Everything
//! else on `lo` passes untouched.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use natgw_common::{
    packet::{L4Kind, Rewrite, Side},
    Counter, IfaceRole,
};

use crate::{
    counters::count,
    nat::{self, fib, mapping, socket::local_socket_owns},
    tc_lan::send,
    tc_wan::{apply, parse},
};

/// Entry point of `tc_lo_egress`.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    match try_egress(ctx) {
        Ok(action) => action,
        Err(None) => TC_ACT_OK,
        Err(Some(counter)) => {
            count(counter);
            TC_ACT_OK
        }
    }
}

#[inline(always)]
fn try_egress(ctx: &TcContext) -> Result<i32, Option<Counter>> {
    let cfg = nat::config().ok_or(None)?;
    let pkt = parse(ctx).map_err(|_| None)?;
    if pkt.kind != L4Kind::Ports
        || !nat::is_external(cfg, pkt.dst)
        || !nat::is_external(cfg, pkt.src)
    {
        return Err(None);
    }
    let target = mapping::inbound(&pkt).ok_or(None)?;
    // A socket of the gateway on the destination port is the real recipient.
    if local_socket_owns(ctx, pkt.proto, pkt.dst, pkt.dport_be, pkt.src, pkt.sport_be) {
        return Err(None);
    }
    // An input lookup as if the reply entered on `lo` (needs forwarding on, as on
    // any router); an output lookup would be pinned to `lo` as its egress.
    // SAFETY: reading a field of the live context.
    let lo = unsafe { (*ctx.skb.skb).ifindex };
    let hop = fib::lookup(ctx, &pkt, target.internal.addr, lo, true).map_err(|_| None)?;
    if !nat::iface(hop.ifindex).is_some_and(|i| i.role == IfaceRole::Lan as u8) {
        return Err(None);
    }
    target.account(&pkt);
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
    count(Counter::HairpinLocalReply);
    send(ctx, &hop)
}
