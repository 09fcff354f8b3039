//! Time as the data path and the controller share it: the programs stamp every map
//! entry with `bpf_ktime_get_ns` (`CLOCK_MONOTONIC` nanoseconds), and the controller
//! reads the same clock to age them.

/// Nanoseconds per second, the unit of every `_ns` field and timeout.
pub const NS_PER_SEC: u64 = 1_000_000_000;
