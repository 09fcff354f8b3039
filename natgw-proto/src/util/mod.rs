//! Small pieces the engines share, each written once.
//!
//! - [`bucket`]: a token bucket and a per-key rate limiter over any clock.
//! - [`clock`]: the clocks they measure on.
//! - [`log_budget`]: log lines that traffic can trigger, at a bounded rate.
//! - [`rng`]: random bytes from the kernel.

pub mod bucket;
pub mod clock;
pub mod log_budget;
pub mod rng;
