//! Outbound fast path on LAN interfaces: internal host -> outside.
//!
//! Every frame is first checked for a genuine source: a host address of the prefixes
//! of the interface it arrived on ([`nat::check_lan_source`]); anything else is
//! dropped as spoofed before the kernel or the NAT sees it.
//!
//! Translates and redirects a packet only when everything needed is known here: the
//! route leads to the WAN, the neighbour is resolved, the packet fits the MTU, the
//! TTL survives the hop and the WAN device accepts XDP redirects. Anything else is
//! handed to the kernel untouched; the kernel routes it (and sends ICMP time
//! exceeded or fragmentation needed where due) and `tc_wan_egress` translates it.
//!
//! A packet to the external address is left to `tc_lan_ingress`, which hairpins it
//! (RFC 4787 REQ-9) or lets it reach the gateway's own services.
//!
//! Nothing invalid creates or refreshes state ([`validate`]): a packet with IP
//! options goes to the kernel, which validates them (and records routes and
//! timestamps as a router must); a UDP/TCP packet with a bad UDP length or TCP flag
//! combination is dropped; a packet that would create a mapping must carry a right
//! L4 checksum.

use aya_ebpf::{bindings::xdp_action::XDP_PASS, programs::XdpContext};
use natgw_common::{
    packet::{Fragment, L4Kind, Rewrite, Side},
    validate, Counter, IfaceRole,
};

use crate::{
    buf::XdpBuf,
    counters::count,
    fastpath::{self, forward, next_hop, redirect},
    nat::{self, events, mapping},
};

/// Entry point of `xdp_lan`.
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
    let ingress = ctx.ingress_ifindex() as u32;
    nat::check_lan_source(ingress, &pkt)?;
    if !pkt.maps_outbound() {
        return Err(match pkt.kind {
            L4Kind::IcmpError => Counter::PassIcmpError,
            _ if pkt.frag == Fragment::Later => Counter::PassFragment,
            _ => Counter::PassNotNat,
        });
    }
    if nat::is_external(cfg, pkt.dst) {
        // Hairpinning happens in tc_lan_ingress: one more branch of this size here
        // would take the program past the verifier's complexity limit.
        return Err(Counter::PassHairpin);
    }
    if validate::has_ip_options(&pkt) {
        return Err(Counter::PassIpOptions);
    }
    let rx_partial = fastpath::partial_checksum(&buf, &pkt, ingress);
    let partial = rx_partial.is_some();
    let hop = next_hop(ctx, &pkt, pkt.dst, ingress, rx_partial, IfaceRole::Wan)?;
    validate::check_header(&buf, &pkt)?;
    let admit_new = || validate::check_checksum(&buf, &pkt, partial);
    let ext = mapping::outbound(ctx, cfg, &pkt, admit_new).inspect_err(|c| {
        if c.is_no_mapping() {
            events::no_mapping(&buf, &pkt, ingress);
        }
    })?;
    let rw = Rewrite::new(&pkt, Side::Source, ext.addr, ext.port_be);
    forward(&mut buf, &pkt, &rw, partial, &hop)?;
    count(Counter::XdpOutRedirected);
    Ok(redirect(hop.ifindex))
}
