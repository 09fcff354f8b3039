//! PCP (RFC 6887) and NAT-PMP (RFC 6886): the wire codecs, the sans-IO server engine
//! and the `natgw pcp` client.
//!
//! - [`wire`]: PCP version 2 messages and options.
//! - [`natpmp`]: NAT-PMP version 0 messages.
//! - [`server`]: the engine — datagram and time in, answer and events out.
//! - [`table`]: the [`table::MappingTable`] trait the engine drives, implemented by
//!   the controller over the BPF maps.
//! - [`policy`]: the `[pcp]` configuration, port rules and rate limiting.
//! - [`client`]: `natgw pcp ...`, a small client for trying a server by hand.

// The engine is driven by the daemon's PCP task, which lands separately; until then
// only the client uses the codecs, and the rest is exercised by the tests and the
// fuzz target. Remove this once the daemon serves PCP.
#![allow(dead_code)]

pub mod client;
pub mod natpmp;
pub mod policy;
pub mod server;
pub mod table;
#[cfg(test)]
pub mod testing;
pub mod wire;
