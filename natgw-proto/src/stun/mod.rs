//! STUN (RFC 8489) with RFC 5780 NAT behaviour discovery, without I/O.
//!
//! - [`wire`]: the message codec.
//! - [`responder`]: the Binding responder engine.
//! - [`client`]: Binding requests, reading responses, the retransmission schedule.
//! - [`discovery`]: RFC 5780 tests' observations turned into a report.

pub mod client;
pub mod discovery;
pub mod responder;
pub mod wire;
