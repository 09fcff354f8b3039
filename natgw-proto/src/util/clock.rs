//! The clocks the engines measure time on: [`Instant`] for most, [`Nanos`] for the
//! controller's parts that count on `CLOCK_MONOTONIC` nanoseconds as the data path's
//! map timestamps do. Engines take the time as an argument ([`Moment`]) and never read
//! a clock themselves, so tests drive them with made-up times.

use std::time::Instant;

/// A point in time an engine can measure from.
pub trait Moment: Copy + Ord {
    /// Nanoseconds from `earlier` to `self`; 0 when `earlier` is later (a clock that
    /// went backwards adds nothing).
    fn nanos_since(self, earlier: Self) -> u64;
}

impl Moment for Instant {
    fn nanos_since(self, earlier: Self) -> u64 {
        u64::try_from(self.saturating_duration_since(earlier).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Nanoseconds on `CLOCK_MONOTONIC`, as `bpf_ktime_get_ns` stamps map values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Nanos(pub u64);

impl Moment for Nanos {
    fn nanos_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
