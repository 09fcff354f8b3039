//! Time as the data path and the controller share it: the programs stamp every map
//! entry with `bpf_ktime_get_ns` (`CLOCK_MONOTONIC` nanoseconds), and the controller
//! reads the same clock to age them.

/// Nanoseconds per second, the unit of every `_ns` field and timeout.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of `bpf_ktime_get_ns()`, which
/// stamps every map value.
#[cfg(feature = "user")]
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the kernel to write. CLOCK_MONOTONIC
    // cannot fail on Linux; a zero would only make nothing expire.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * NS_PER_SEC + u64::try_from(ts.tv_nsec).unwrap_or(0)
}
