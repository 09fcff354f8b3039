//! The hole-punching protocol between `natgw punch` peers and `natgw rendezvous`,
//! without I/O.
//!
//! - [`wire`]: the message codec.
//! - [`rendezvous`]: the rendezvous engine (registrations, introductions).
//! - [`prober`]: the peer's probing engine (which candidate paths to try, when, and
//!   what answered).
//! - [`demux`]: STUN and punch messages on one port, told apart by their first byte.

pub mod demux;
pub mod prober;
pub mod rendezvous;
pub mod wire;
