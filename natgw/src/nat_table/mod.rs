//! The NAT's mapping table over the BPF maps: expiry of idle mappings and sessions
//! ([`gc`]) and the explicit mappings PCP, NAT-PMP and static forwards make
//! ([`explicit`], the `MappingTable` the PCP engine drives), the [`census`] of both
//! the garbage collector takes on its way, and the events `natgw monitor` shows and
//! the filter of `natgw mappings` and `natgw flush` ([`events`]), and what HA
//! replication reads from the active's tables and installs in the standby's ([`replica`]).

pub mod alloc_log;
pub mod census;
pub mod events;
pub mod explicit;
pub mod gc;
pub mod replica;
#[cfg(test)]
pub mod testing;
