//! Counting verdicts in the per-CPU `COUNTERS` array (no atomics needed: each CPU
//! owns its slot).

use natgw_common::Counter;

use crate::maps::COUNTERS;

/// Adds one to `counter` on this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from the map and is only touched by this CPU.
        unsafe { *slot += 1 };
    }
}
