//! Requests to the controller for ICMP errors the data path cannot build itself,
//! through the `EVENTS` ring buffer. Rare by nature (failures), so a full ring
//! simply loses the request; the packet's verdict never depends on it.

use natgw_common::{
    maps::{Event, EventKind, EVENT_SNIPPET},
    packet::{Ipv4Packet, PacketBuf},
};

use crate::maps::EVENTS;

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
