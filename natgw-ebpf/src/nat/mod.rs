//! NAT decisions shared by the XDP and TC programs: configuration access, the
//! mapping tables, local-socket checks and the FIB lookup of the fast path.

pub mod events;
pub mod fib;
pub mod fragments;
pub mod limits;
pub mod mapping;
pub mod session;
pub mod socket;

use aya_ebpf::maps::lpm_trie::Key;
use natgw_common::{
    blocks::{port_space, unpack_space},
    maps::{addr_class, lan_source, unaddressed_local, LanSourceKey, LAN_SOURCE_FIXED_BITS},
    packet::Ipv4Packet,
    Config, Counter, IfaceConfig,
};

use crate::maps::{ADDR_CLASS, CONFIG, EXT_ADDRS, EXT_SET, IFACES, LAN_SOURCES};

/// The configuration, once the controller has marked it ready.
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0).filter(|c| c.is_ready())
}

/// What the controller knows about interface `ifindex`.
#[inline(always)]
pub fn iface(ifindex: u32) -> Option<&'static IfaceConfig> {
    // SAFETY: the value is read-only for the programs; the controller replaces
    // entries whole.
    unsafe { IFACES.get(&ifindex) }
}

/// What `addr` is to the gateway: `addr_class` bits, 0 for an ordinary outside
/// address.
#[inline(always)]
fn class(addr: [u8; 4]) -> u32 {
    ADDR_CLASS
        .get(&Key::new(32, u32::from_ne_bytes(addr)))
        .copied()
        .unwrap_or(0)
}

/// Whether `addr` lies in one of the internal prefixes.
#[inline(always)]
pub fn is_internal(addr: [u8; 4]) -> bool {
    class(addr) & addr_class::INTERNAL != 0
}

/// Source validation on the WAN: `Err(DropSpoofed)` for a source no genuine packet
/// from outside can have (an internal or own address, a martian, a network or
/// broadcast address); `Err(PassLocal)` for a local-only packet from 0.0.0.0, which
/// only the gateway itself may take.
#[inline(always)]
pub fn check_wan_source(pkt: &Ipv4Packet) -> Result<(), Counter> {
    if unaddressed_local(pkt.src, pkt.dst) {
        return Err(Counter::PassLocal);
    }
    if class(pkt.src) & addr_class::NEVER_FROM_WAN != 0 {
        return Err(Counter::DropSpoofed);
    }
    Ok(())
}

/// Source validation on LAN interface `ifindex`: only a host address of that
/// interface's prefixes passes (not the gateway's own addresses, not a prefix's
/// network or broadcast address, nothing from outside the prefixes), so no LAN host
/// can speak as the gateway, as another network or as the outside. A local-only
/// packet from 0.0.0.0 (DHCP) goes to the kernel as `Err(PassNotNat)`.
#[inline(always)]
pub fn check_lan_source(ifindex: u32, pkt: &Ipv4Packet) -> Result<(), Counter> {
    if unaddressed_local(pkt.src, pkt.dst) {
        return Err(Counter::PassNotNat);
    }
    let key = Key::new(
        LAN_SOURCE_FIXED_BITS + 32,
        LanSourceKey::new(ifindex, u32::from_ne_bytes(pkt.src)),
    );
    match LAN_SOURCES.get(&key) {
        Some(&lan_source::HOST) => Ok(()),
        _ => Err(Counter::DropSpoofed),
    }
}

/// Whether `addr` is one of the gateway's external addresses. A pool of one
/// address is just `ext_addr_be` (the pool's first address is the main one), so only
/// a larger pool costs an `EXT_SET` lookup.
#[inline(always)]
pub fn is_external(cfg: &Config, addr: [u8; 4]) -> bool {
    let addr = u32::from_ne_bytes(addr);
    addr == cfg.ext_addr_be || (cfg.ext_count > 1 && EXT_SET.get_ptr(&addr).is_some())
}

/// The drop counter of a refused [`port_space`] result's counter index.
#[inline(always)]
pub const fn refusal_of(counter: u32) -> Counter {
    if counter == Counter::DropShareNotOwned as u32 {
        Counter::DropShareNotOwned
    } else {
        Counter::DropOutsideBlocks
    }
}

/// Why internal host `int_addr_be` gets no external address here (see
/// [`external_for`]): the counter to count its packet under.
#[inline(always)]
pub fn refusal(cfg: &Config, int_addr_be: u32) -> Counter {
    match unpack_space(port_space(cfg, int_addr_be)) {
        Err(c) => refusal_of(c),
        Ok(_) => Counter::DropOutsideBlocks,
    }
}

/// The pool's `index`-th address (the main one when the pool is one address).
#[inline(always)]
pub fn pool_address(cfg: &Config, index: u32) -> [u8; 4] {
    EXT_ADDRS
        .get(index)
        .copied()
        .filter(|a| *a != 0)
        .unwrap_or(cfg.ext_addr_be)
        .to_ne_bytes()
}

/// The external address of internal host `int_addr`: always the same one for a
/// host (paired pooling, RFC 4787 REQ-2, or its port block's address, RFC 7422);
/// 0.0.0.0 for a host that gets none here in block mode ([`refusal`] says why). A
/// plain address rather than a `Result`: the callers have no stack for more.
#[inline(always)]
pub fn external_for(cfg: &Config, int_addr: [u8; 4]) -> [u8; 4] {
    match unpack_space(port_space(cfg, u32::from_ne_bytes(int_addr))) {
        Ok((index, _, _)) => pool_address(cfg, index),
        Err(_) => [0; 4],
    }
}
