//! What the data path tells the controller through ring buffers:
//! - requests for ICMP errors the data path cannot build itself (`EVENTS`). Rare by
//!   nature (failures), so a full ring simply loses the request; the packet's
//!   verdict never depends on it.
//! - the mappings it creates (`MAPPING_EVENTS`), for `natgw monitor`. A full ring
//!   loses the record and counts `event_lost`; the packet is translated all the
//!   same.

use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use natgw_common::{
    maps::{Event, EventKind, MappingEvent, MappingEventKind, EVENT_SNIPPET},
    packet::{Ipv4Packet, PacketBuf},
    Counter, FwdKey,
};

use crate::{
    counters::count,
    maps::{EVENTS, MAPPING_EVENTS, NAT_FWD},
};

/// Records that the mapping of `key` was created at `now`: one `MappingEvent` in
/// `MAPPING_EVENTS`, submitted without a wakeup (the controller polls, so a burst
/// of new mappings costs no wakeup each).
///
/// A BPF-to-BPF call taking only scalars, so the programs' paths through the port
/// search carry nothing of it; the mapping is looked up again here, on the rare
/// path, rather than kept in registers by the caller.
#[inline(never)]
pub fn mapping_created(addr_be: u32, port_proto: u32, now: u64) {
    // The port (network order) in the low half, the protocol above it.
    let key = FwdKey::new(addr_be, port_proto as u16, (port_proto >> 16) as u8);
    let Some(m) = NAT_FWD.get_ptr(&key) else {
        return;
    };
    // SAFETY: `m` points at a live NAT_FWD value; it is copied at once.
    let m = unsafe { *m };
    let event = MappingEvent::new(MappingEventKind::Create as u8, &key, &m, now);
    match MAPPING_EVENTS.reserve::<MappingEvent>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(u64::from(BPF_RB_NO_WAKEUP));
        }
        None => count(Counter::EventLost),
    }
}

/// Asks for ICMP destination unreachable code 13 to the sender of `pkt`, which
/// arrived on `ifindex` and could get no mapping (RFC 5508 REQ-8).
#[inline(always)]
pub fn no_mapping<B: PacketBuf + ?Sized>(buf: &B, pkt: &Ipv4Packet, ifindex: u32) {
    let (Some(ip), Some(l4)) = (buf.load::<20>(pkt.l3), buf.load::<8>(pkt.l4)) else {
        return;
    };
    let mut snippet = [0u8; EVENT_SNIPPET];
    snippet[..20].copy_from_slice(&ip);
    snippet[20..].copy_from_slice(&l4);
    let event = Event::new(EventKind::NoMapping as u8, ifindex, snippet);
    let _ = EVENTS.output::<Event>(&event, 0);
}
