//! PCP (RFC 6887) and NAT-PMP (RFC 6886): the wire codecs, the sans-IO server engine
//! and the `natgw pcp` client.
//!
//! - [`wire`]: PCP version 2 messages and options.
//! - [`natpmp`]: NAT-PMP version 0 messages.
//! - [`server`]: the engine — datagram and time in, answer and events out.
//! - [`table`]: the [`table::MappingTable`] trait the engine drives, implemented by
//!   the controller over the BPF maps ([`crate::explicit`]).
//! - [`policy`]: the `[pcp]` configuration, port rules and rate limiting.
//! - [`service`]: the engine on the LAN sockets, driven by the daemon's main loop.
//! - [`client`]: `natgw pcp ...`, a small client for trying a server by hand.

pub mod client;
pub mod natpmp;
pub mod policy;
pub mod server;
pub mod service;
pub mod table;
#[cfg(test)]
pub mod testing;
pub mod wire;
