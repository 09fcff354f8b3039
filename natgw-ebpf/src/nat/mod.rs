//! NAT decisions shared by the XDP and TC programs: configuration access, the
//! mapping tables, local-socket checks and the FIB lookup of the fast path.

pub mod events;
pub mod fib;
pub mod fragments;
pub mod mapping;
pub mod session;
pub mod socket;

use aya_ebpf::maps::lpm_trie::Key;
use natgw_common::{config::pool_index, Config, IfaceConfig};

use crate::maps::{CONFIG, EXT_ADDRS, EXT_SET, IFACES, LAN_NETS};

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

/// Whether `addr` lies in one of the internal prefixes.
#[inline(always)]
pub fn is_internal(addr: [u8; 4]) -> bool {
    LAN_NETS
        .get(&Key::new(32, u32::from_ne_bytes(addr)))
        .is_some()
}

/// Whether `addr` is one of the gateway's external addresses.
#[inline(always)]
pub fn is_external(cfg: &Config, addr: [u8; 4]) -> bool {
    let addr = u32::from_ne_bytes(addr);
    addr == cfg.ext_addr_be || EXT_SET.get_ptr(&addr).is_some()
}

/// The external address of internal host `int_addr`: always the same one for a
/// host (paired pooling, RFC 4787 REQ-2).
#[inline(always)]
pub fn external_for(cfg: &Config, int_addr: [u8; 4]) -> [u8; 4] {
    let index = pool_index(u32::from_ne_bytes(int_addr), cfg.ext_count);
    EXT_ADDRS
        .get(index)
        .copied()
        .filter(|a| *a != 0)
        .unwrap_or(cfg.ext_addr_be)
        .to_ne_bytes()
}
