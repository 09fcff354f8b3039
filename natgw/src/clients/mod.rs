//! The client side: `natgw pcp` ([`pcp`]), `natgw stun probe` ([`stun_probe`]) and
//! `natgw punch` ([`punch`]).

pub mod pcp;
pub mod punch;
pub mod stun_probe;
