//! Does a socket of the gateway itself own an address and port? Inbound packets for
//! it are the gateway's own traffic (pass them to the kernel), and new mappings must
//! not take its port.

use aya_ebpf::{
    bindings::{bpf_sock_tuple, BPF_F_CURRENT_NETNS},
    helpers::generated::{bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    EbpfContext,
};
use natgw_common::{IPPROTO_TCP, IPPROTO_UDP};

/// Whether a local socket would receive a `proto` packet from `remote`:`remote_port_be`
/// to `local`:`local_port_be` (listening, bound or connected).
#[inline(always)]
pub fn local_socket_owns<C: EbpfContext>(
    ctx: &C,
    proto: u8,
    local: [u8; 4],
    local_port_be: u16,
    remote: [u8; 4],
    remote_port_be: u16,
) -> bool {
    // SAFETY: an all-zero tuple is a valid value of this plain C union.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    tuple.__bindgen_anon_1.ipv4.saddr = u32::from_ne_bytes(remote);
    tuple.__bindgen_anon_1.ipv4.daddr = u32::from_ne_bytes(local);
    tuple.__bindgen_anon_1.ipv4.sport = remote_port_be;
    tuple.__bindgen_anon_1.ipv4.dport = local_port_be;
    let size = core::mem::size_of::<u32>() as u32 * 2 + core::mem::size_of::<u16>() as u32 * 2;
    let netns = BPF_F_CURRENT_NETNS as u32 as u64;
    // SAFETY: helper calls with a valid context and a tuple on the stack; every
    // socket returned is released before returning, as the verifier requires.
    unsafe {
        let sk = match proto {
            IPPROTO_UDP => bpf_sk_lookup_udp(ctx.as_ptr(), &mut tuple, size, netns, 0),
            IPPROTO_TCP => bpf_skc_lookup_tcp(ctx.as_ptr(), &mut tuple, size, netns, 0),
            _ => return false,
        };
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk.cast());
        true
    }
}
