//! Inbound fast path and filter on the WAN interface: outside -> internal host.
//!
//! A packet to an external port with a mapping is translated and redirected to the
//! LAN when the fast path allows it, otherwise handed to the kernel untouched for
//! `tc_wan_ingress` to translate. A packet to an external port in the NAT range with
//! no mapping is dropped here, unless a socket of the gateway itself owns the port.
//! Everything else is the gateway's own traffic and goes to the kernel.

use aya_ebpf::{bindings::xdp_action::XDP_PASS, helpers::bpf_ktime_get_ns, programs::XdpContext};
use natgw_common::{
    packet::{Fragment, Ipv4Packet, L4Kind, Rewrite, Side},
    Config, Counter, IfaceRole, IPPROTO_ICMP,
};

use crate::{
    buf::XdpBuf,
    counters::count,
    fastpath::{self, forward, next_hop, redirect},
    nat::{self, mapping, session, socket::local_socket_owns},
};

/// Entry point of `xdp_wan`.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    fastpath::run(ctx, try_run)
}

#[inline(always)]
fn try_run(ctx: &XdpContext) -> Result<u32, Counter> {
    let Some(cfg) = nat::config() else {
        return Ok(XDP_PASS);
    };
    let mut buf = XdpBuf::new(ctx);
    let pkt = fastpath::parse(&buf)?;
    if !nat::is_external(cfg, pkt.dst) {
        return Err(Counter::PassNotNat);
    }
    if !pkt.maps_inbound() {
        return Err(match pkt.kind {
            L4Kind::IcmpError => Counter::PassIcmpError,
            _ if pkt.frag == Fragment::Later => Counter::PassFragment,
            _ => Counter::PassLocal,
        });
    }
    let Some(hit) = mapping::inbound(&pkt) else {
        return Err(unmapped(ctx, cfg, &pkt));
    };
    let ingress = ctx.ingress_ifindex() as u32;
    let hop = next_hop(ctx, &pkt, hit.internal.addr, ingress, IfaceRole::Lan)?;
    hit.admit(&pkt)?;
    hit.account(&pkt);
    let rw = Rewrite::new(
        &pkt,
        Side::Destination,
        hit.internal.addr,
        hit.internal.port_be,
    );
    let rx_partial = nat::iface(ingress).is_some_and(|i| i.rx_csum_partial != 0);
    forward(&mut buf, &pkt, &rw, rx_partial, &hop)?;
    count(Counter::XdpInRedirected);
    Ok(redirect(hop.ifindex))
}

/// Verdict for a packet to the external address with no mapping.
#[inline(always)]
fn unmapped(ctx: &XdpContext, cfg: &Config, pkt: &Ipv4Packet) -> Counter {
    if pkt.proto == IPPROTO_ICMP {
        return Counter::PassLocal; // a reply to the gateway's own query
    }
    let port = u16::from_be(pkt.dport_be);
    let in_nat_range = port >= cfg.port_min && port <= cfg.port_max;
    if !in_nat_range
        || local_socket_owns(ctx, pkt.proto, pkt.dst, pkt.dport_be, pkt.src, pkt.sport_be)
    {
        Counter::PassLocal
    } else {
        // SAFETY: no preconditions.
        session::hold_syn(pkt, unsafe { bpf_ktime_get_ns() });
        Counter::DropNoMapping
    }
}
