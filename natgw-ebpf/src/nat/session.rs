//! Sessions: what a mapping has exchanged with each remote endpoint. They carry the
//! inbound filter (RFC 4787 REQ-8, RFC 5382 REQ-3: endpoint-independent,
//! address-dependent, address-and-port-dependent; or a PCP FILTER list, RFC 6887
//! §13.3) and the TCP state (RFC 7857), and
//! the memory of unsolicited SYNs held back for hole punching (RFC 5382 REQ-4).
//!
//! Endpoint-independent UDP and ICMP mappings keep no sessions at all, so the common
//! case costs nothing extra.

use aya_ebpf::{bindings::BPF_NOEXIST, maps::lpm_trie::Key};
use natgw_common::{
    maps::{
        tcp_seen, FilterMode, HeldSyn, PcpFilterKey, Session, SessionKey, PCP_FILTER_FIXED_BITS,
    },
    packet::Ipv4Packet,
    tcp::TcpState,
    Counter, IPPROTO_TCP,
};

use crate::maps::{HELD_SYNS, NAT_SESSIONS, PCP_FILTERS};

#[inline(always)]
fn key(proto: u8, ext: ([u8; 4], u16), remote: [u8; 4], remote_port_be: u16) -> SessionKey {
    SessionKey::new(
        u32::from_ne_bytes(ext.0),
        u32::from_ne_bytes(remote),
        ext.1,
        remote_port_be,
        proto,
    )
}

/// Whether a PCP FILTER of the mapping `ext` admits `remote` (longest prefix match
/// on the remote address; a port of 0 admits every port).
#[inline(always)]
fn pcp_filter_allows(proto: u8, ext: ([u8; 4], u16), remote: ([u8; 4], u16)) -> bool {
    let data = PcpFilterKey::new(
        u32::from_ne_bytes(ext.0),
        ext.1,
        proto,
        u32::from_ne_bytes(remote.0),
    );
    match PCP_FILTERS.get(&Key::new(PCP_FILTER_FIXED_BITS + 32, data)) {
        Some(port_be) => *port_be == 0 || *port_be == u32::from(remote.1),
        None => false,
    }
}

/// Whether `mode` needs sessions for `proto` (TCP always has them, for its state).
#[inline(always)]
fn tracked(proto: u8, mode: u8) -> bool {
    proto == IPPROTO_TCP || mode != FilterMode::EndpointIndependent as u8
}

/// Records an outbound packet from external endpoint `ext` to `pkt.dst:dport`:
/// opens or refreshes the session (and the address record for address-dependent
/// filtering), advances the TCP state, and forgets a held SYN from that peer, which
/// the outbound SYN now answers.
#[inline(always)]
pub fn outbound(pkt: &Ipv4Packet, ext: ([u8; 4], u16), mode: u8, now: u64) {
    if !tracked(pkt.proto, mode) {
        return;
    }
    let k = key(pkt.proto, ext, pkt.dst, pkt.dport_be);
    touch(&k, pkt, true, now);
    if mode == FilterMode::AddressDependent as u8 {
        touch(&key(pkt.proto, ext, pkt.dst, 0), pkt, true, now);
    }
    if pkt.proto == IPPROTO_TCP && pkt.tcp_flags & tcp_seen::SYN != 0 {
        let _ = HELD_SYNS.remove(&k);
    }
}

/// Opens or refreshes one session entry.
#[inline(always)]
fn touch(k: &SessionKey, pkt: &Ipv4Packet, outbound: bool, now: u64) {
    let s = match NAT_SESSIONS.get_ptr_mut(k) {
        Some(s) => s,
        None => {
            let fresh = Session {
                created_ns: now,
                ..Session::default()
            };
            // EEXIST means another CPU created it meanwhile; a full table leaves the
            // packet to the filter (a filtered mode then refuses inbound traffic).
            let _ = NAT_SESSIONS.insert(k, &fresh, u64::from(BPF_NOEXIST));
            match NAT_SESSIONS.get_ptr_mut(k) {
                Some(s) => s,
                None => return,
            }
        }
    };
    // SAFETY: `s` points at a live NAT_SESSIONS value.
    unsafe {
        if outbound {
            // An outbound RST answers inbound traffic and refreshes nothing
            // (RFC 7857 §2.1); it still moves the state to Reset below.
            if pkt.tcp_flags & tcp_seen::RST == 0 {
                (*s).last_out_ns = now;
            }
        } else if pkt.proto != IPPROTO_TCP || (*s).tcp_state != TcpState::Reset as u8 {
            // Inbound segments to a reset session are still translated but neither
            // refresh nor revive it (see `TcpState::Reset`).
            (*s).last_in_ns = now;
        }
        if pkt.proto == IPPROTO_TCP {
            let next = TcpState::from_u8((*s).tcp_state).next(outbound, pkt.tcp_flags) as u8;
            if next != (*s).tcp_state {
                (*s).tcp_state = next;
            }
        }
    }
}

/// Applies the mapping's inbound filter to `pkt`, from `remote` (its source, or
/// for a hairpinned packet its sender's external endpoint) to external endpoint
/// `ext`, and records it at `now`. `Err` is the drop reason; a refused SYN is
/// remembered as held.
#[inline(always)]
pub fn inbound(
    pkt: &Ipv4Packet,
    ext: ([u8; 4], u16),
    remote: ([u8; 4], u16),
    mode: u8,
    now: u64,
) -> Result<(), Counter> {
    if !tracked(pkt.proto, mode) {
        return Ok(());
    }
    let exact = key(pkt.proto, ext, remote.0, remote.1);
    let allowed = if mode == FilterMode::AddressDependent as u8 {
        NAT_SESSIONS
            .get_ptr(&key(pkt.proto, ext, remote.0, 0))
            .is_some()
    } else if mode == FilterMode::AddressAndPortDependent as u8 {
        NAT_SESSIONS.get_ptr(&exact).is_some()
    } else if mode == FilterMode::PcpFilter as u8 {
        pcp_filter_allows(pkt.proto, ext, remote)
    } else {
        true
    };
    if !allowed {
        hold_syn(pkt, now);
        return Err(Counter::DropFiltered);
    }
    touch(&exact, pkt, false, now);
    Ok(())
}

/// Remembers an unsolicited inbound SYN (RFC 5382 REQ-4): it is dropped without a
/// reply now; the controller sends ICMP port unreachable after 6 s unless an
/// outbound SYN to its sender is translated meanwhile.
#[inline(always)]
pub fn hold_syn(pkt: &Ipv4Packet, now: u64) {
    if pkt.proto != IPPROTO_TCP
        || pkt.tcp_flags & (tcp_seen::SYN | tcp_seen::ACK | tcp_seen::RST) != tcp_seen::SYN
    {
        return;
    }
    let k = key(pkt.proto, (pkt.dst, pkt.dport_be), pkt.src, pkt.sport_be);
    let held = HeldSyn::new(now, pkt.tcp_seq_be, pkt.ip_id_be, pkt.ttl);
    // A retransmitted SYN keeps the first one's time: the 6 s run from the first.
    let _ = HELD_SYNS.insert(&k, &held, u64::from(BPF_NOEXIST));
}
