//! A token bucket, and token buckets per key: `burst` tokens, refilled at
//! `per_second`, one taken per event. Tokens are kept in billionths, so the refill is
//! exact integer arithmetic whatever the clock's resolution.
//!
//! The clock is a type parameter ([`Moment`], from [`super::clock`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

pub use super::clock::{Moment, Nanos};

const BILLION: u64 = 1_000_000_000;

/// The decision on one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget.
    Allow,
    /// Over it. `first` is true for the first refusal of a run, so callers log once
    /// per episode rather than once per event.
    Drop {
        /// First refusal since the budget last allowed one.
        first: bool,
    },
}

/// One token bucket.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket<M: Moment = Instant> {
    per_second: u64,
    burst: u64,
    /// Tokens × 10⁹.
    credit: u64,
    last: M,
    limited: bool,
}

impl<M: Moment> TokenBucket<M> {
    /// A full bucket at `now`; `per_second == 0` allows everything.
    #[must_use]
    pub fn new(per_second: u64, burst: u64, now: M) -> Self {
        Self {
            per_second,
            burst,
            credit: burst.saturating_mul(BILLION),
            last: now,
            limited: false,
        }
    }

    fn refilled(&self, now: M) -> u64 {
        let added = now.nanos_since(self.last).saturating_mul(self.per_second);
        self.credit
            .saturating_add(added)
            .min(self.burst.saturating_mul(BILLION))
    }

    /// Whether the bucket is full at `now` (its owner has been idle).
    #[must_use]
    pub fn is_full(&self, now: M) -> bool {
        self.refilled(now) >= self.burst.saturating_mul(BILLION)
    }

    /// Whether `n` tokens could be taken at `now` (nothing is taken).
    #[must_use]
    pub fn has(&self, now: M, n: u64) -> bool {
        self.per_second == 0 || self.refilled(now) >= n.saturating_mul(BILLION)
    }

    /// When the bucket last took or refused a token.
    #[must_use]
    pub const fn last(&self) -> M {
        self.last
    }

    /// Takes one token at `now`.
    pub fn take(&mut self, now: M) -> Verdict {
        self.take_many(now, 1)
    }

    /// Takes `n` tokens at `now` (bytes, for a bandwidth cap), all or none.
    pub fn take_many(&mut self, now: M, n: u64) -> Verdict {
        if self.per_second == 0 {
            return Verdict::Allow;
        }
        self.credit = self.refilled(now);
        self.last = self.last.max(now);
        let cost = n.saturating_mul(BILLION);
        if self.credit >= cost {
            self.credit -= cost;
            self.limited = false;
            Verdict::Allow
        } else {
            let first = !self.limited;
            self.limited = true;
            Verdict::Drop { first }
        }
    }
}

/// What a [`RateLimiter`] with `max_keys` busy buckets does with a new key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuses it: during a flood from that many sources, serving the ones already
    /// known beats serving none.
    RefuseNew,
    /// Forgets the longest-idle key to make room.
    EvictOldest,
}

/// A [`TokenBucket`] per key in a bounded table. Full (idle) buckets are forgotten
/// first when the table is full; then `when_full` decides.
#[derive(Debug)]
pub struct RateLimiter<K, M: Moment = Instant> {
    per_second: u64,
    burst: u64,
    max_keys: usize,
    when_full: WhenFull,
    buckets: HashMap<K, TokenBucket<M>>,
    overflowing: bool,
}

impl<K: Eq + Hash + Copy, M: Moment> RateLimiter<K, M> {
    /// A limiter; `per_second == 0` allows everything.
    #[must_use]
    pub fn new(per_second: u64, burst: u64, max_keys: usize, when_full: WhenFull) -> Self {
        Self {
            per_second,
            burst,
            max_keys,
            when_full,
            buckets: HashMap::new(),
            overflowing: false,
        }
    }

    /// Takes one token from `key`'s bucket at `now`.
    pub fn check(&mut self, key: K, now: M) -> Verdict {
        self.check_many(key, now, 1)
    }

    /// Takes `n` tokens (bytes, for a byte budget) from `key`'s bucket at `now`, all
    /// or none.
    pub fn check_many(&mut self, key: K, now: M, n: u64) -> Verdict {
        if self.per_second == 0 {
            return Verdict::Allow;
        }
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= self.max_keys {
                match self.when_full {
                    WhenFull::RefuseNew => {
                        let first = !self.overflowing;
                        self.overflowing = true;
                        return Verdict::Drop { first };
                    }
                    WhenFull::EvictOldest => {
                        if let Some(oldest) = self
                            .buckets
                            .iter()
                            .min_by_key(|(_, b)| b.last())
                            .map(|(k, _)| *k)
                        {
                            self.buckets.remove(&oldest);
                        }
                    }
                }
            }
            self.overflowing = false;
        }
        let (per_second, burst) = (self.per_second, self.burst);
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(per_second, burst, now))
            .take_many(now, n)
    }

    /// Keys tracked now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    #[test]
    fn has_looks_without_taking() {
        let mut b = TokenBucket::new(100, 50, Nanos(0));
        assert!(b.has(Nanos(0), 50) && !b.has(Nanos(0), 51));
        assert_eq!(b.take_many(Nanos(0), 50), Verdict::Allow);
        assert!(!b.has(Nanos(0), 1));
        assert!(b.has(Nanos(10 * MS), 1));
        assert_eq!(b.take(Nanos(10 * MS)), Verdict::Allow);
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::new(100, 50, Nanos(0));
        let passed = (0..60)
            .filter(|_| b.take(Nanos(0)) == Verdict::Allow)
            .count();
        assert_eq!(passed, 50);
        // 10 ms at 100/s: one more token.
        assert_eq!(b.take(Nanos(10 * MS)), Verdict::Allow);
        assert_eq!(b.take(Nanos(10 * MS)), Verdict::Drop { first: true });
        assert_eq!(b.take(Nanos(10 * MS)), Verdict::Drop { first: false });
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let mut b = TokenBucket::new(100, 1, Nanos(1000 * MS));
        assert_eq!(b.take(Nanos(1000 * MS)), Verdict::Allow);
        assert!(matches!(b.take(Nanos(0)), Verdict::Drop { .. }));
        assert!(matches!(b.take(Nanos(1005 * MS)), Verdict::Drop { .. }));
        assert_eq!(b.take(Nanos(1010 * MS)), Verdict::Allow);
    }

    #[test]
    fn take_many_takes_all_or_nothing() {
        // A byte budget: 1000 bytes/s, 1500 bytes of burst.
        let mut b = TokenBucket::new(1000, 1500, Nanos(0));
        assert_eq!(b.take_many(Nanos(0), 1200), Verdict::Allow);
        assert_eq!(b.take_many(Nanos(0), 400), Verdict::Drop { first: true });
        // What was refused was not taken: 300 bytes remain.
        assert_eq!(b.take_many(Nanos(0), 300), Verdict::Allow);
        // 100 ms later, 100 more.
        assert_eq!(b.take_many(Nanos(100 * MS), 100), Verdict::Allow);
        assert!(matches!(
            b.take_many(Nanos(100 * MS), 1),
            Verdict::Drop { .. }
        ));
    }

    #[test]
    fn zero_rate_allows_everything() {
        let now = Instant::now();
        let mut b = TokenBucket::new(0, 0, now);
        assert!((0..1000).all(|_| b.take(now) == Verdict::Allow));
    }

    #[test]
    fn keys_have_their_own_buckets_and_a_full_table_refuses_or_evicts() {
        let t0 = Instant::now();
        let mut refuse = RateLimiter::new(1, 1, 2, WhenFull::RefuseNew);
        assert_eq!(refuse.check(1, t0), Verdict::Allow);
        assert_eq!(refuse.check(2, t0), Verdict::Allow);
        assert_eq!(refuse.check(3, t0), Verdict::Drop { first: true });
        assert_eq!(refuse.check(4, t0), Verdict::Drop { first: false });
        // Once a bucket has refilled (its key idle), a new key takes its place.
        assert_eq!(refuse.check(3, t0 + Duration::from_secs(1)), Verdict::Allow);

        let mut evict = RateLimiter::new(1, 1, 2, WhenFull::EvictOldest);
        assert_eq!(evict.check(1, t0), Verdict::Allow);
        assert_eq!(
            evict.check(2, t0 + Duration::from_millis(10)),
            Verdict::Allow
        );
        assert_eq!(
            evict.check(3, t0 + Duration::from_millis(20)),
            Verdict::Allow
        );
        assert_eq!(evict.len(), 2, "key 1, the longest idle, was forgotten");
        assert!(matches!(
            evict.check(2, t0 + Duration::from_millis(30)),
            Verdict::Drop { .. }
        ));
    }
}
