//! Endpoint-independent mappings (RFC 4787 REQ-1, RFC 5382 REQ-1): finding, creating
//! and refreshing them.
//!
//! Creation claims the external port first, with a `BPF_NOEXIST` insert into
//! `NAT_REV`, so no two CPUs ever hand out the same external port (REQ-3), and only
//! then inserts the forward entry; if another CPU created the forward entry in the
//! meantime, the claim is rolled back and that CPU's mapping is used.
//!
//! The per-host rules of RFC 6888 ([`super::limits`]): a new mapping is weighed
//! against its host's limits once it exists and undone if they refuse it (REQ-4);
//! a port freed within the hold-down is still claimed by its hold, so the search
//! passes over it like a port in use, unless the hold is the host's own (REQ-8).
//! Nothing here ever deletes a mapping to make room for another (REQ-11d).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    EbpfContext,
};
use natgw_common::{
    blocks::{port_space, unpack_space},
    maps::tcp_seen,
    packet::Ipv4Packet,
    ports::{candidate, MAX_PORT_ATTEMPTS},
    Config, Counter, FwdKey, Mapping, Origin, RevKey, RevValue, IPPROTO_TCP,
};

use super::{events, limits, session, socket::local_socket_owns};
use crate::{
    counters::count,
    maps::{NAT_FWD, NAT_REV},
};

/// `EEXIST`: the key is already present.
const EEXIST: i32 = 17;

/// An endpoint: address and port as on the wire.
#[derive(Clone, Copy)]
pub struct Endpoint {
    /// Address octets.
    pub addr: [u8; 4],
    /// Port, network order.
    pub port_be: u16,
}

/// TCP flags worth remembering, in `tcp_seen` bits (the wire bits coincide).
#[inline(always)]
fn seen_bits(pkt: &Ipv4Packet) -> u8 {
    if pkt.proto == IPPROTO_TCP {
        pkt.tcp_flags & (tcp_seen::FIN | tcp_seen::SYN | tcp_seen::RST | tcp_seen::ACK)
    } else {
        0
    }
}

/// Whether a packet with TCP `bits` (see [`seen_bits`]; 0 for UDP and ICMP) may
/// create a mapping: not a SYN-ACK, not a FIN.
#[inline(always)]
const fn may_start(bits: u8) -> bool {
    bits & tcp_seen::FIN == 0
        && bits & (tcp_seen::SYN | tcp_seen::ACK) != tcp_seen::SYN | tcp_seen::ACK
}

/// Adds to a statistics field of a map value. Not atomic: the BPF target offers no
/// atomic read-modify-write to Rust, and packets of one flow are normally handled by
/// one CPU, so concurrent updates (and lost increments) are rare and harmless.
#[inline(always)]
fn add(counter: *mut u64, v: u64) {
    // SAFETY: `counter` points into a live map value.
    unsafe { *counter = (*counter).wrapping_add(v) };
}

/// The external endpoint for an outbound packet, creating the mapping if needed.
/// Refreshes the mapping and counts the packet.
///
/// `admit_new` runs only when a mapping would be created, before anything is:
/// checks too costly for every packet (the full L4 checksum) that must pass before
/// a packet may claim a port; its `Err` is the drop reason.
#[inline(always)]
pub fn outbound<C: EbpfContext>(
    ctx: &C,
    cfg: &Config,
    pkt: &Ipv4Packet,
    admit_new: impl FnOnce() -> Result<(), Counter>,
) -> Result<Endpoint, Counter> {
    let key = FwdKey::new(u32::from_ne_bytes(pkt.src), pkt.sport_be, pkt.proto);
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let bits = seen_bits(pkt);
    // An outbound RST answers inbound traffic: it neither creates nor refreshes a
    // mapping (RFC 7857 §2.1).
    let rst = bits & tcp_seen::RST != 0;
    let m = match NAT_FWD.get_ptr_mut(&key) {
        Some(m) => m,
        // Nor do a SYN-ACK or a FIN start a connection: with no mapping they answer
        // or end one natgw never saw, and conntrack, too, starts nothing from them
        // (`tcp_conntracks`: from no state, only a SYN or, picked up mid-stream, an
        // ACK).
        None if rst || !may_start(bits) => return Err(Counter::DropNoMapping),
        None => {
            admit_new()?;
            if create(ctx, cfg, pkt, &key, now)? {
                limits::admit_created(cfg, &key, now)?;
                count(Counter::MappingCreated);
                if cfg.mapping_events() {
                    events::mapping_created(
                        key.addr_be,
                        u32::from(key.port_be) | u32::from(key.proto) << 16,
                        now,
                    );
                }
            }
            NAT_FWD.get_ptr_mut(&key).ok_or(Counter::DropInternal)?
        }
    };
    // SAFETY: `m` points at a live NAT_FWD value.
    let ext = unsafe {
        if !rst {
            (*m).last_out_ns = now;
        }
        if bits & tcp_seen::SYN != 0 && bits & tcp_seen::ACK == 0 {
            // A new connection from this endpoint: forget the old one's flags.
            (*m).tcp_flags_out = tcp_seen::SYN;
            // A mapping created by this packet (its creation time is this packet's
            // `now`) has a fresh reverse entry, its inbound flags still zero.
            if (*m).created_ns != now {
                reset_inbound_flags(pkt.proto, (*m).ext_addr_be, (*m).ext_port_be);
            }
        } else if (*m).tcp_flags_out | bits != (*m).tcp_flags_out {
            (*m).tcp_flags_out |= bits;
        }
        add(&raw mut (*m).packets_out, 1);
        add(&raw mut (*m).bytes_out, u64::from(pkt.tot_len));
        Endpoint {
            addr: (*m).ext_addr_be.to_ne_bytes(),
            port_be: (*m).ext_port_be,
        }
    };
    session::outbound(pkt, (ext.addr, ext.port_be), cfg.filter_for(pkt.proto), now);
    Ok(ext)
}

#[inline(always)]
fn reset_inbound_flags(proto: u8, ext_addr_be: u32, ext_port_be: u16) {
    let rk = RevKey::new(ext_addr_be, ext_port_be, proto);
    if let Some(rv) = NAT_REV.get_ptr_mut(&rk) {
        // SAFETY: `rv` points at a live NAT_REV value.
        unsafe { (*rv).tcp_flags_in = 0 };
    }
}

/// Creates the mapping for `key`: claim an external port, then insert the forward
/// entry. Succeeds also when another CPU created the same mapping concurrently:
/// `Ok(true)` when this call created it.
#[inline(always)]
fn create<C: EbpfContext>(
    ctx: &C,
    cfg: &Config,
    pkt: &Ipv4Packet,
    key: &FwdKey,
    now: u64,
) -> Result<bool, Counter> {
    let ext_addr = super::external_for(cfg, pkt.src);
    if ext_addr == [0; 4] {
        return Err(super::refusal(cfg, key.addr_be));
    }
    let ext_addr_be = u32::from_ne_bytes(ext_addr);
    let mut attempt = 0;
    while attempt < MAX_PORT_ATTEMPTS {
        // The span, the preferred port and a seed anew each time, from what is alive
        // anyway: kept across the loop, they would take stack that `tc_lan_ingress`
        // does not have (its call chain is at the 512-byte limit).
        let Ok((_, lo, hi)) = unpack_space(port_space(cfg, key.addr_be)) else {
            break; // the configuration changed under us: no block here any more
        };
        // SAFETY: no preconditions.
        let seed = unsafe { bpf_get_prandom_u32() };
        let port_be = candidate(u16::from_be(key.port_be), attempt, seed, lo, hi).to_be();
        attempt += 1;
        // A port the gateway's own sockets use would steal their replies.
        if local_socket_owns(ctx, key.proto, ext_addr, port_be, pkt.dst, pkt.dport_be) {
            continue;
        }
        let rk = RevKey::new(ext_addr_be, port_be, key.proto);
        if attempt == 1 {
            // The host's own port first: a hold of its own does not keep it out.
            limits::reclaim_own_hold(cfg, &rk, key.addr_be);
        }
        let rv = RevValue {
            int_addr_be: key.addr_be,
            int_port_be: key.port_be,
            filter: cfg.filter_for(key.proto),
            created_ns: now,
            ..RevValue::default()
        };
        match NAT_REV.insert(&rk, &rv, u64::from(BPF_NOEXIST)) {
            Ok(()) => {}
            Err(e) if e == -EEXIST => continue,
            Err(_) => return Err(Counter::DropTableFull),
        }
        let m = Mapping {
            ext_addr_be,
            ext_port_be: port_be,
            origin: Origin::Traffic as u8,
            created_ns: now,
            last_out_ns: now,
            ..Mapping::default()
        };
        return match NAT_FWD.insert(key, &m, u64::from(BPF_NOEXIST)) {
            Ok(()) => Ok(true),
            Err(e) => {
                let _ = NAT_REV.remove(&rk);
                if e == -EEXIST {
                    Ok(false) // another CPU won the race; its mapping serves us
                } else {
                    Err(Counter::DropTableFull)
                }
            }
        };
    }
    // Logged by the controller, once per episode, from the counters: a line per
    // packet would let any LAN host flood the log at packet rate. When another host's
    // hold keeps the host's own port, the hold-down is what left it without one.
    let own = RevKey::new(ext_addr_be, key.port_be, key.proto);
    Err(if limits::held(cfg, &own, key.addr_be, now) {
        Counter::DropPortHeld
    } else {
        Counter::DropPortsExhausted
    })
}

/// An inbound packet's mapping, found but not yet counted.
pub struct InboundHit {
    rv: *mut RevValue,
    /// The internal endpoint the packet goes to.
    pub internal: Endpoint,
    filter: u8,
}

/// The mapping of the external endpoint an inbound packet is addressed to
/// (`pkt.dst`, `pkt.dport_be`), if any. Endpoint-independent filtering: any remote
/// endpoint may use a mapping.
#[inline(always)]
pub fn inbound(pkt: &Ipv4Packet) -> Option<InboundHit> {
    let rk = RevKey::new(u32::from_ne_bytes(pkt.dst), pkt.dport_be, pkt.proto);
    let rv = NAT_REV.get_ptr_mut(&rk)?;
    // SAFETY: `rv` points at a live NAT_REV value.
    if unsafe { (*rv).is_held() } {
        return None; // a freed port, held (RFC 6888 REQ-8): no mapping
    }
    // SAFETY: as above.
    let internal = unsafe {
        Endpoint {
            addr: (*rv).int_addr_be.to_ne_bytes(),
            port_be: (*rv).int_port_be,
        }
    };
    // SAFETY: as above.
    let filter = unsafe { (*rv).filter };
    Some(InboundHit {
        rv,
        internal,
        filter,
    })
}

impl InboundHit {
    /// Applies the mapping's filter to `pkt` and records it in its session at
    /// `now` (the packet's one timestamp); `Err` is the drop reason. Called by
    /// whichever program translates the packet.
    #[inline(always)]
    pub fn admit(&self, pkt: &Ipv4Packet, now: u64) -> Result<(), Counter> {
        session::inbound(
            pkt,
            (pkt.dst, pkt.dport_be),
            (pkt.src, pkt.sport_be),
            self.filter,
            now,
        )
    }

    /// [`Self::admit`] for a hairpinned packet, whose remote endpoint is its sender's
    /// external endpoint `from` (RFC 4787 REQ-9a).
    #[inline(always)]
    pub fn admit_hairpin(&self, pkt: &Ipv4Packet, from: Endpoint, now: u64) -> Result<(), Counter> {
        session::inbound(
            pkt,
            (pkt.dst, pkt.dport_be),
            (from.addr, from.port_be),
            self.filter,
            now,
        )
    }

    /// Counts the packet and records its time (`now`, the one [`Self::admit`] got)
    /// and TCP flags; called by whichever program translates it, exactly once.
    #[inline(always)]
    pub fn account(&self, pkt: &Ipv4Packet, now: u64) {
        let rv = self.rv;
        let bits = seen_bits(pkt);
        // SAFETY: `rv` points at a live value (map values stay valid for the whole
        // program run, even if deleted meanwhile).
        unsafe {
            (*rv).last_in_ns = now;
            if (*rv).tcp_flags_in | bits != (*rv).tcp_flags_in {
                (*rv).tcp_flags_in |= bits;
            }
            add(&raw mut (*rv).packets_in, 1);
            add(&raw mut (*rv).bytes_in, u64::from(pkt.tot_len));
        }
    }
}

/// The external endpoint of the mapping of internal endpoint `addr`:`port_be`, if
/// any, without refreshing or counting it: ICMP errors never do (RFC 5508 REQ-6).
#[inline(always)]
pub fn external_of(proto: u8, addr: [u8; 4], port_be: u16) -> Option<Endpoint> {
    let key = FwdKey::new(u32::from_ne_bytes(addr), port_be, proto);
    // SAFETY: read-only use of a live map value.
    let m = unsafe { NAT_FWD.get(&key) }?;
    Some(Endpoint {
        addr: m.ext_addr_be.to_ne_bytes(),
        port_be: m.ext_port_be,
    })
}

/// The internal endpoint of external endpoint `addr`:`port_be`, if mapped, without
/// refreshing or counting it.
#[inline(always)]
pub fn internal_of(proto: u8, addr: [u8; 4], port_be: u16) -> Option<Endpoint> {
    let key = RevKey::new(u32::from_ne_bytes(addr), port_be, proto);
    // SAFETY: read-only use of a live map value.
    let rv = unsafe { NAT_REV.get(&key) }.filter(|rv| !rv.is_held())?;
    Some(Endpoint {
        addr: rv.int_addr_be.to_ne_bytes(),
        port_be: rv.int_port_be,
    })
}
