//! Replies of the gateway's own services to internal hosts that reached them through
//! an external address (`tc_lan_ingress::to_local_service`), at `lo`'s TC egress.
//!
//! Such a reply is addressed to the host's external endpoint, an address of the
//! gateway itself, so the kernel routes it through `lo`. Here it passes the
//! mapping's filter like any inbound packet (RFC 4787 REQ-8: the service is a remote
//! endpoint like any other, and RFC 5780 filtering discovery against the gateway's
//! own STUN responder must see the filter the outside sees), its destination goes
//! back to the internal endpoint (the source stays the service's external endpoint,
//! as the host expects) and it is sent out of the host's LAN interface. A reply
//! larger than that interface's MTU — `lo`'s is 64 KiB, so the service's stack
//! never fragmented it — goes through the kernel's forwarding instead, which
//! fragments it as the service's stack would have. Everything else on `lo` passes
//! untouched.

use aya_ebpf::{bindings::TC_ACT_SHOT, helpers::bpf_ktime_get_ns, programs::TcContext};
use natgw_common::{
    packet::{clear_dont_fragment, Ipv4Packet, L4Kind, Side},
    Counter,
};

use crate::{
    buf::TcBuf,
    counters::count,
    nat::{self, mapping, socket::local_socket_owns},
    tcpath::{self, lan_hop, send, Verdict},
};

/// Entry point of `tc_lo_egress`. It drops only what the mapping's filter refuses:
/// any other reply it cannot send on is counted and left to the kernel.
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
    let hop = match lan_hop(ctx, &pkt, target.internal.addr, lo) {
        Ok(hop) => Some(hop),
        Err(Counter::PassMtu) => None,
        Err(_) => return Err(None),
    };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Err(refused) = target.admit(&pkt, now) {
        count(refused);
        return Ok(TC_ACT_SHOT);
    }
    target.account(&pkt, now);
    tcpath::rewrite(ctx, &pkt, Side::Destination, target.internal)?;
    count(Counter::HairpinLocalReply);
    match hop {
        Some(hop) => send(ctx, &hop),
        None => through_the_kernel(ctx, &pkt),
    }
}

/// Sends a translated reply too large for its LAN interface through the kernel's
/// forwarding, which fragments it there (a GSO packet is segmented instead).
///
/// Its DF flag is cleared: the service's stack set it only because the datagram fit
/// `lo`, the route the stack saw. Over the route to the host it would have
/// fragmented the datagram itself (Linux's default `IP_PMTUDISC_WANT`), and no ICMP
/// "fragmentation needed" can reach it here: the kernel would report the internal
/// destination, not the external endpoint the service sent to.
#[inline(always)]
fn through_the_kernel(ctx: &TcContext, pkt: &Ipv4Packet) -> Verdict {
    // SAFETY: reading a field of the live context.
    let gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    if !gso {
        clear_dont_fragment(&mut TcBuf::new(ctx), pkt).ok_or(Some(Counter::DropInternal))?;
    }
    count(Counter::HairpinLocalReplyRouted);
    tcpath::to_lo(ctx)
}
