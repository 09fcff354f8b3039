//! Replies of the gateway's own services to internal hosts that reached them through
//! an external address (`tc_lan_ingress::to_local_service`), at `lo`'s TC egress.
//!
//! Such a reply is addressed to the host's external endpoint, an address of the
//! gateway itself, so the kernel routes it through `lo`. Here its destination goes
//! back to the internal endpoint (the source stays the service's external endpoint,
//! as the host expects) and it is sent out of the host's LAN interface. Everything
//! else on `lo` passes untouched.

use aya_ebpf::programs::TcContext;
use natgw_common::{
    packet::{L4Kind, Side},
    Counter,
};

use crate::{
    counters::count,
    nat::{self, mapping, socket::local_socket_owns},
    tcpath::{self, lan_hop, send, Verdict},
};

/// Entry point of `tc_lo_egress`. It never drops: a reply it cannot send on is
/// counted and left to the kernel.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    tcpath::run_never_dropping(ctx, try_egress)
}

#[inline(always)]
fn try_egress(ctx: &TcContext) -> Verdict {
    let cfg = nat::config().ok_or(None)?;
    let pkt = tcpath::parse(ctx).map_err(|_| None)?;
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
    let hop = lan_hop(ctx, &pkt, target.internal.addr, lo).map_err(|_| None)?;
    target.account(&pkt);
    tcpath::rewrite(ctx, &pkt, Side::Destination, target.internal)?;
    count(Counter::HairpinLocalReply);
    send(ctx, &hop)
}
