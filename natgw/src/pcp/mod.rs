//! PCP (RFC 6887) and NAT-PMP (RFC 6886) on natgw's sockets; the codecs and the
//! engine are `natgw_proto::pcp`.
//!
//! - [`service`]: the engine on the LAN sockets, driven by the daemon's main loop.
//! - [`client`]: `natgw pcp ...`, a small client for trying a server by hand.

pub mod client;
pub mod service;
