//! NAT decisions shared by the XDP and TC programs: configuration access, the
//! mapping tables, local-socket checks and the FIB lookup of the fast path.

pub mod events;
pub mod fib;
pub mod mapping;
pub mod session;
pub mod socket;

use aya_ebpf::maps::lpm_trie::Key;
use natgw_common::{Config, IfaceConfig};

use crate::maps::{CONFIG, IFACES, LAN_NETS};

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
