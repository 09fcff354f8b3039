//! Everything natgw's kernel programs and its controller must agree on: the layout
//! of every BPF map key and value, the configuration the loader writes, the counter
//! indices, and the pure packet logic (parsing, checksums, port choice) that both the
//! eBPF programs and plain `cargo test` run.
//!
//! With the `user` feature (the controller and xtask) the crate uses `std`, implements
//! `aya::Pod` for the map types and adds `batch`, the batched map reads and writes
//! aya does not offer.
//!
//! Addresses and ports that travel on the wire are stored in network byte order;
//! fields holding them end in `_be` and hold the octets as they appear on the wire
//! (`u32::from_ne_bytes(addr.octets())`).
#![cfg_attr(not(any(test, feature = "user")), no_std)]

#[cfg(feature = "user")]
pub mod batch;
pub mod bench;
pub mod blocks;
pub mod config;
pub mod counters;
pub mod csum;
pub mod limits;
pub mod maps;
pub mod packet;
pub mod ports;
pub mod tcp;
pub mod time;
pub mod validate;

pub use config::{Config, IfaceConfig, IfaceRole};
pub use counters::Counter;
pub use maps::{FwdKey, Mapping, Origin, RevKey, RevValue};
pub use time::NS_PER_SEC;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Converts an address held as wire octets in a `u32` (`_be` fields) to its octets.
#[must_use]
pub const fn addr_octets(addr_be: u32) -> [u8; 4] {
    addr_be.to_ne_bytes()
}

/// Converts address octets to the `_be` representation used in the maps.
#[must_use]
pub const fn addr_be(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}
