//! Inbound fast path and filter on the WAN interface: outside -> internal host.
//!
//! Every frame is first checked for a source that can come from outside
//! ([`nat::check_wan_source`]: no internal, own, martian or network/broadcast
//! address), and frames addressed straight to an internal host are dropped: the
//! kernel would otherwise route them into the LAN, past the NAT.
//!
//! A packet to an external port with a mapping is translated and redirected to the
//! LAN when the fast path allows it, otherwise handed to the kernel untouched for
//! `tc_wan_ingress` to translate. A packet to an external port in the NAT range with
//! no mapping is dropped here, unless a socket of the gateway itself owns the port.
//! Everything else is the gateway's own traffic and goes to the kernel.

use aya_ebpf::{bindings::xdp_action::XDP_PASS, helpers::bpf_ktime_get_ns, programs::XdpContext};
use natgw_common::{
    packet::{Fragment, Ipv4Packet, L4Kind, Rewrite, Side},
    validate, Config, Counter, IfaceRole, IPPROTO_ICMP,
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
    nat::check_wan_source(&pkt)?;
    if !nat::is_external(cfg, pkt.dst) {
        return Err(not_for_the_nat(&pkt));
    }
    if !pkt.maps_inbound() {
        return Err(match pkt.kind {
            L4Kind::IcmpError => Counter::PassIcmpError,
            _ if pkt.frag == Fragment::Later => Counter::PassFragment,
            _ => Counter::PassLocal,
        });
    }
    let Some(hit) = mapping::inbound(&pkt) else {
        return Err(unmapped(ctx, cfg, &buf, &pkt));
    };
    // Invalid packets neither refresh the mapping nor open or advance a session.
    validate::check_header(&buf, &pkt)?;
    let ingress = ctx.ingress_ifindex() as u32;
    let rx_partial = fastpath::partial_checksum(&buf, &pkt, ingress);
    let partial = rx_partial.is_some();
    let hop = next_hop(
        ctx,
        &pkt,
        hit.internal.addr,
        ingress,
        rx_partial,
        IfaceRole::Lan,
    )?;
    // One timestamp for the packet: its session and its mapping.
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    hit.admit(&pkt, now)?;
    hit.account(&pkt, now);
    let rw = Rewrite::new(
        &pkt,
        Side::Destination,
        hit.internal.addr,
        hit.internal.port_be,
    );
    forward(&mut buf, &pkt, &rw, partial, &hop)?;
    count(Counter::XdpInRedirected);
    Ok(redirect(hop.ifindex))
}

/// Verdict for a packet not addressed to an external address: dropped when it is
/// addressed straight to an internal host (only a mapping leads inside), otherwise
/// the gateway's own business.
#[inline(always)]
pub fn not_for_the_nat(pkt: &Ipv4Packet) -> Counter {
    if nat::is_internal(pkt.dst) {
        Counter::DropToInternal
    } else {
        Counter::PassNotNat
    }
}

/// Verdict for a packet to the external address with no mapping. A valid SYN to a
/// port of the NAT is remembered as held (an invalid one, SYN+FIN say, is not).
#[inline(always)]
fn unmapped(ctx: &XdpContext, cfg: &Config, buf: &XdpBuf, pkt: &Ipv4Packet) -> Counter {
    if pkt.proto == IPPROTO_ICMP {
        return Counter::PassLocal; // a reply to the gateway's own query
    }
    let port = u16::from_be(pkt.dport_be);
    let in_nat_range = port >= cfg.port_min && port <= cfg.port_max;
    if !in_nat_range
        || local_socket_owns(ctx, pkt.proto, pkt.dst, pkt.dport_be, pkt.src, pkt.sport_be)
    {
        Counter::PassLocal
    } else if let Err(invalid) = validate::check_header(buf, pkt) {
        invalid
    } else {
        // SAFETY: no preconditions.
        session::hold_syn(pkt, unsafe { bpf_ktime_get_ns() });
        Counter::DropNoMapping
    }
}
