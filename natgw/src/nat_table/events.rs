//! Mapping events for `natgw monitor`, and the filter `natgw mappings` and
//! `natgw flush` select mappings with.
//!
//! Events come from two places. The data path creates traffic mappings and writes a
//! [`MappingEvent`] for each into its `MAPPING_EVENTS` ring buffer, which the daemon
//! drains. Everything else happens in the controller — explicit mappings (PCP,
//! NAT-PMP, UPnP, static forwards) are created and ended here, the garbage collector
//! expires idle mappings, `natgw flush` deletes — and cannot come from the ring
//! buffer, so the code that does it calls [`emit`] with the same record. Both reach
//! one hub, a bounded broadcast channel, whose subscribers are the `natgw monitor`
//! clients of the daemon's control socket.
//!
//! The hub exists only in a running daemon ([`install`]); elsewhere (unit tests, the
//! CLI) [`emit`] does nothing.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;

use natgw_common::maps::{MappingEvent, MappingEventKind};
use natgw_common::{FwdKey, Mapping, Origin, IPPROTO_TCP, IPPROTO_UDP};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::datapath::maps::{ipv4, port, MapsError, NatTables};

/// Events a subscriber may fall behind by before it loses the oldest ones (and is
/// told how many).
pub const QUEUE: usize = 1024;

static HUB: OnceLock<broadcast::Sender<MappingEvent>> = OnceLock::new();

/// Creates the hub (once per process; later calls keep the first).
pub fn install() {
    let _ = HUB.get_or_init(|| broadcast::channel(QUEUE).0);
}

/// A new subscriber to every event from now on; `None` without a hub.
#[must_use]
pub fn subscribe() -> Option<broadcast::Receiver<MappingEvent>> {
    HUB.get().map(broadcast::Sender::subscribe)
}

/// How many subscribers the hub has.
#[must_use]
pub fn subscribers() -> usize {
    HUB.get().map_or(0, broadcast::Sender::receiver_count)
}

/// Subscribers that are part of the daemon (the allocation log), not monitors.
static INTERNAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A subscriber that is part of the daemon: it does not count as a `natgw monitor`
/// client ([`monitors`]). `None` without a hub.
#[must_use]
pub fn subscribe_internal() -> Option<broadcast::Receiver<MappingEvent>> {
    let r = subscribe()?;
    INTERNAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(r)
}

/// How many `natgw monitor` clients the hub has.
#[must_use]
pub fn monitors() -> usize {
    subscribers().saturating_sub(INTERNAL.load(std::sync::atomic::Ordering::Relaxed))
}

/// Passes an event to every subscriber (none: it is dropped).
pub fn emit(event: MappingEvent) {
    if let Some(hub) = HUB.get() {
        let _ = hub.send(event);
    }
}

/// Emits an event of `kind` about the mapping `key` -> `m` the controller just
/// created or ended at `now_ns`.
pub fn emit_mapping(kind: MappingEventKind, key: &FwdKey, m: &Mapping, now_ns: u64) {
    emit(MappingEvent::new(kind as u8, key, m, now_ns));
}

/// Decodes a record of the `MAPPING_EVENTS` ring buffer.
#[must_use]
pub fn decode(bytes: &[u8]) -> Option<MappingEvent> {
    if bytes.len() < std::mem::size_of::<MappingEvent>() {
        return None;
    }
    // SAFETY: the length is checked; `MappingEvent` is plain old data and the read
    // is unaligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<MappingEvent>()) })
}

/// One event as `natgw monitor --json` prints it (one object per line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    /// `create`, `delete` or `expire`.
    pub event: String,
    /// `udp`, `tcp`, `icmp`, or `proto-N`.
    pub protocol: String,
    /// Internal endpoint.
    pub internal: SocketAddrV4,
    /// External endpoint.
    pub external: SocketAddrV4,
    /// `traffic`, `pcp`, `nat-pmp`, `upnp` or `static`.
    pub origin: String,
    /// When it happened, `CLOCK_MONOTONIC` ns.
    pub time_ns: u64,
}

impl EventLine {
    /// The line for `e`.
    #[must_use]
    pub fn of(e: &MappingEvent) -> Self {
        Self {
            event: MappingEventKind::from_u8(e.kind)
                .map_or_else(|| format!("unknown-{}", e.kind), |k| k.name().to_owned()),
            protocol: crate::nat_table::gc::proto_name(e.proto),
            internal: SocketAddrV4::new(ipv4(e.int_addr_be), port(e.int_port_be)),
            external: SocketAddrV4::new(ipv4(e.ext_addr_be), port(e.ext_port_be)),
            origin: Origin::from_u8(e.origin)
                .map_or_else(|| format!("unknown-{}", e.origin), |o| o.name().to_owned()),
            time_ns: e.time_ns,
        }
    }
}

/// Which mappings a `natgw mappings` listing or a `natgw flush` takes; every field
/// that is set must match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingFilter {
    /// IP protocol.
    pub proto: Option<u8>,
    /// Internal address.
    pub internal_addr: Option<Ipv4Addr>,
    /// Internal port (ICMP: query identifier).
    pub internal_port: Option<u16>,
    /// External address.
    pub external_addr: Option<Ipv4Addr>,
    /// External port.
    pub external_port: Option<u16>,
    /// Origin ([`Origin`] as its `u8` value).
    pub origin: Option<u8>,
}

impl MappingFilter {
    /// Whether the mapping `key` -> `m` is selected.
    #[must_use]
    pub fn matches(&self, key: &FwdKey, m: &Mapping) -> bool {
        self.proto.is_none_or(|p| p == key.proto)
            && self.internal_addr.is_none_or(|a| a == ipv4(key.addr_be))
            && self.internal_port.is_none_or(|p| p == port(key.port_be))
            && self.external_addr.is_none_or(|a| a == ipv4(m.ext_addr_be))
            && self.external_port.is_none_or(|p| p == port(m.ext_port_be))
            && self.origin.is_none_or(|o| o == m.origin)
    }
}

/// `natgw flush` of traffic mappings: deletes every mapping of origin traffic that
/// `filter` selects, as the garbage collector deletes an expired one (the port
/// held from other hosts for the hold-down; the sessions follow on its next tick),
/// and reports each to `natgw monitor`. Returns how many were deleted.
pub fn flush_traffic<T: NatTables>(
    tables: &mut T,
    filter: &MappingFilter,
    now_ns: u64,
) -> Result<usize, MapsError> {
    let mut deleted = 0;
    for (k, m) in tables.fwd_entries()? {
        if m.origin != Origin::Traffic as u8 || !filter.matches(&k, &m) {
            continue;
        }
        if crate::nat_table::explicit::delete_entries(tables, &k, Some(m.created_ns), now_ns)? {
            deleted += 1;
            emit_mapping(MappingEventKind::Delete, &k, &m, now_ns);
        }
    }
    Ok(deleted)
}

/// Parses a protocol name for a filter: `udp`, `tcp`, `icmp`.
pub fn parse_proto(s: &str) -> Result<u8, String> {
    match s.to_ascii_lowercase().as_str() {
        "udp" => Ok(IPPROTO_UDP),
        "tcp" => Ok(IPPROTO_TCP),
        "icmp" => Ok(natgw_common::IPPROTO_ICMP),
        _ => Err(format!(
            "`{s}` is not a protocol natgw maps: udp, tcp or icmp"
        )),
    }
}

/// Parses an origin for a filter: `traffic` (alias `dynamic`), `pcp`, `nat-pmp`
/// (alias `natpmp`), `upnp`, `static`.
pub fn parse_origin(s: &str) -> Result<u8, String> {
    let origin = match s.to_ascii_lowercase().as_str() {
        "traffic" | "dynamic" => Origin::Traffic,
        "pcp" => Origin::Pcp,
        "nat-pmp" | "natpmp" => Origin::NatPmp,
        "upnp" => Origin::Upnp,
        "static" => Origin::Static,
        _ => {
            return Err(format!(
                "`{s}` is not an origin: traffic (or dynamic), pcp, nat-pmp, upnp, static"
            ))
        }
    };
    Ok(origin as u8)
}

/// Parses `ADDR`, `ADDR:PORT` or `PORT` into an address and a port, either
/// optional.
pub fn parse_endpoint(s: &str) -> Result<(Option<Ipv4Addr>, Option<u16>), String> {
    if let Ok(e) = s.parse::<SocketAddrV4>() {
        return Ok((Some(*e.ip()), Some(e.port())));
    }
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        return Ok((Some(a), None));
    }
    if let Ok(p) = s.parse::<u16>() {
        return Ok((None, Some(p)));
    }
    Err(format!("`{s}` is not ADDR, ADDR:PORT or PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_common::addr_be;

    fn mapping(origin: Origin) -> (FwdKey, Mapping) {
        let key = FwdKey::new(addr_be([10, 0, 1, 2]), 5000u16.to_be(), IPPROTO_UDP);
        let m = Mapping {
            ext_addr_be: addr_be([192, 0, 2, 1]),
            ext_port_be: 6000u16.to_be(),
            origin: origin as u8,
            ..Mapping::default()
        };
        (key, m)
    }

    #[test]
    fn a_ring_record_becomes_an_event_line() {
        let (key, m) = mapping(Origin::Traffic);
        let e = MappingEvent::new(MappingEventKind::Create as u8, &key, &m, 7);
        let line = EventLine::of(&e);
        assert_eq!(
            (
                line.event.as_str(),
                line.protocol.as_str(),
                line.origin.as_str()
            ),
            ("create", "udp", "traffic")
        );
        assert_eq!(line.internal, "10.0.1.2:5000".parse().unwrap());
        assert_eq!(line.external, "192.0.2.1:6000".parse().unwrap());
        assert_eq!(line.time_ns, 7);
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const e).cast::<u8>(),
                std::mem::size_of::<MappingEvent>(),
            )
        };
        assert_eq!(decode(bytes), Some(e));
        assert_eq!(decode(&bytes[..10]), None);
    }

    #[test]
    fn filters_select_on_every_field_given() {
        let (key, m) = mapping(Origin::Pcp);
        assert!(MappingFilter::default().matches(&key, &m));
        let f = |f: MappingFilter| f.matches(&key, &m);
        assert!(f(MappingFilter {
            proto: Some(IPPROTO_UDP),
            internal_addr: Some(Ipv4Addr::new(10, 0, 1, 2)),
            internal_port: Some(5000),
            external_port: Some(6000),
            origin: Some(Origin::Pcp as u8),
            ..MappingFilter::default()
        }));
        assert!(!f(MappingFilter {
            proto: Some(IPPROTO_TCP),
            ..MappingFilter::default()
        }));
        assert!(!f(MappingFilter {
            internal_port: Some(5001),
            ..MappingFilter::default()
        }));
        assert!(!f(MappingFilter {
            origin: Some(Origin::Traffic as u8),
            ..MappingFilter::default()
        }));
    }

    #[test]
    fn filter_arguments_parse() {
        assert_eq!(parse_proto("UDP"), Ok(IPPROTO_UDP));
        assert!(parse_proto("sctp").is_err());
        assert_eq!(parse_origin("dynamic"), Ok(Origin::Traffic as u8));
        assert_eq!(parse_origin("natpmp"), Ok(Origin::NatPmp as u8));
        assert!(parse_origin("manual").is_err());
        assert_eq!(
            parse_endpoint("10.0.1.2:80"),
            Ok((Some(Ipv4Addr::new(10, 0, 1, 2)), Some(80)))
        );
        assert_eq!(
            parse_endpoint("10.0.1.2"),
            Ok((Some(Ipv4Addr::new(10, 0, 1, 2)), None))
        );
        assert_eq!(parse_endpoint("8080"), Ok((None, Some(8080))));
        assert!(parse_endpoint("x").is_err());
    }
}
