//! Small pieces the engines share, each written once.
//!
//! - [`bucket`]: a token bucket and a per-key rate limiter over any clock.
//! - [`log_budget`]: log lines that traffic can trigger, at a bounded rate.
//! - [`rng`]: random bytes from the kernel.

pub mod bucket;
pub mod log_budget;
pub mod rng;
