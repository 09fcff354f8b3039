//! The protocol engines of `natgw_proto` on sockets: thin tokio loops, as quinn is
//! around quinn-proto.
//!
//! - [`pcp`]: the PCP/NAT-PMP server on the LAN sockets.
//! - [`stun`]: the STUN responder.
//! - [`rendezvous`]: `natgw rendezvous` on UDP and TCP.
//! - [`replies`], [`neighbours`]: how their replies leave — never waiting, never
//!   queued behind the resolution of a spoofed source.
//! - [`frames`]: reading STUN and punch messages from a TCP stream.

pub mod frames;
pub mod neighbours;
pub mod pcp;
pub mod rendezvous;
pub mod replies;
pub mod stun;
