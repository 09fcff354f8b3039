//! The forwarding decision of the XDP fast path: `bpf_fib_lookup` gives the egress
//! interface and both MAC addresses, and says when the kernel must handle the packet
//! instead (unresolved neighbour, MTU exceeded, local delivery, no route).

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::generated::bpf_fib_lookup,
    EbpfContext,
};
use natgw_common::{packet::Ipv4Packet, Counter};

/// `AF_INET`.
const AF_INET: u8 = 2;

/// Where to send a packet.
pub struct NextHop {
    /// The neighbour's MAC address is known (`dmac` is valid).
    pub resolved: bool,
    /// Egress interface.
    pub ifindex: u32,
    /// Source MAC (the egress interface's).
    pub smac: [u8; 6],
    /// Destination MAC (the neighbour's).
    pub dmac: [u8; 6],
}

/// Looks up the route of `pkt` as if its destination were `dst`, entering on
/// `ifindex`. `Err` carries the counter naming why the kernel should take it. With
/// `allow_unresolved`, an unresolved neighbour is a next hop too (`resolved` false).
#[inline(always)]
pub fn lookup<C: EbpfContext>(
    ctx: &C,
    pkt: &Ipv4Packet,
    dst: [u8; 4],
    ifindex: u32,
    allow_unresolved: bool,
) -> Result<NextHop, Counter> {
    // SAFETY: an all-zero parameter block is valid input for the helper.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = pkt.proto;
    p.sport = 0;
    p.dport = 0;
    p.ifindex = ifindex;
    p.__bindgen_anon_1.tot_len = pkt.tot_len;
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(pkt.src);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    // SAFETY: valid context and parameter block of the size passed.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match ret as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Ok(NextHop {
            resolved: true,
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
        }),
        // The kernel's TC path can still send it with bpf_redirect_neigh.
        BPF_FIB_LKUP_RET_NO_NEIGH if allow_unresolved => Ok(NextHop {
            resolved: false,
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
        }),
        BPF_FIB_LKUP_RET_NO_NEIGH => Err(Counter::PassNoNeigh),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Err(Counter::PassMtu),
        // Addressed to the gateway itself.
        BPF_FIB_LKUP_RET_NOT_FWDED => Err(Counter::PassLocal),
        _ => Err(Counter::PassFib),
    }
}
