//! The NAT's mapping table over the BPF maps: expiry of idle mappings and sessions
//! ([`gc`]) and the explicit mappings PCP, NAT-PMP and static forwards make
//! ([`explicit`], the `MappingTable` the PCP engine drives), and the [`census`] of
//! both the garbage collector takes on its way.

pub mod census;
pub mod explicit;
pub mod gc;
#[cfg(test)]
pub mod testing;
