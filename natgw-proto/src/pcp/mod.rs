//! PCP (RFC 6887) and NAT-PMP (RFC 6886), without I/O.
//!
//! - [`wire`]: PCP version 2 messages and options.
//! - [`natpmp`]: NAT-PMP version 0 messages.
//! - [`engine`]: the server engine — datagram and time in, answer and events out —
//!   answering PCP and NAT-PMP through one grant path.
//! - [`table`]: the [`table::MappingTable`] trait the engine drives (natgw implements
//!   it over the BPF maps).
//! - [`policy`]: the `[pcp]` configuration and the port rules.
//! - [`upstream`]: the upstream client of the PCP proxy (double NAT, RFC 7648).
//! - [`testing`]: an in-memory [`table::MappingTable`] for tests and fuzzing.

pub mod engine;
pub mod natpmp;
pub mod policy;
pub mod table;
pub mod testing;
pub mod upstream;
pub mod wire;
