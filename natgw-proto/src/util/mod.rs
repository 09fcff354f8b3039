//! Small pieces the engines share, each written once.
//!
//! - [`bucket`]: a token bucket and a per-key rate limiter over any clock.
//! - [`rng`]: random bytes from the kernel.

pub mod bucket;
pub mod rng;
