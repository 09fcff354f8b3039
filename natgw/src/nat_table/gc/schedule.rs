//! When the garbage collector looks at what: a deadline-ordered schedule of the
//! mappings it can expire on their own (a timing wheel with one bucket per
//! [`SLOT_NS`] of deadline), and how often it surveys the whole tables.
//!
//! A survey (the full pass of [`super::Sweeper`]) reads every table and decides about
//! every entry; at a million mappings it costs several hundred milliseconds of CPU,
//! too much to repeat every `--gc-interval`. So a survey also puts each traffic
//! mapping it can judge from its own two entries — not TCP, no session — into the
//! [`Schedule`] with the stamps it saw, at one tick past the time it would expire
//! with them, [`CONFIRM_GUARD_NS`] past the time it would expire with them; the ticks
//! between surveys look only at the mappings whose time has come. The survey's look
//! is the first of the two phases, the look at the due time the second: a mapping
//! whose stamps did not move goes then (it has been expired for the guard, so a packet
//! the look could miss was sent after the mapping had expired), one a packet
//! refreshed goes back in at its new deadline with its new stamps. Everything else
//! (TCP mappings, mappings with sessions, sessions, orphans, holds) waits for a
//! survey, which comes by the time the earliest of them is due.
//!
//! Surveys come as often as their cost allows ([`survey_period`]): every tick on
//! small tables (the behaviour of a collector without a schedule), and at most
//! 1/[`SURVEY_SHARE`] of the time at a million mappings. A mapping created after a
//! survey must be scheduled before it can expire, so every half shortest timeout
//! ([`probe_period`]) a *probe* reads the forward and session tables (not the
//! reverse table, and no plan): it schedules the new mappings it can judge on their
//! own and finds the forward entries of port claims the last survey saw in their
//! orphan grace; anything else new turns it into a survey ([`super::probe`]).

use std::collections::BTreeMap;

use natgw_common::NS_PER_SEC;

use super::Policy;

/// Width of one bucket: a scheduled mapping is looked at no earlier than its deadline
/// and at most this much later.
pub const SLOT_NS: u64 = NS_PER_SEC / 10;

/// Surveys may take at most 1/`SURVEY_SHARE` of the time (2%).
pub const SURVEY_SHARE: u64 = 50;

/// Longest time between surveys, whatever the timeouts.
pub const MAX_SURVEY_PERIOD_NS: u64 = 60 * NS_PER_SEC;

/// How long past its deadline a scheduled mapping gets its second look: enough that
/// a packet still on its way to the maps when the look reads them (microseconds)
/// was sent after the mapping had expired. The look no longer waits a whole
/// `--gc-interval` (the second phase of a mapping found expired by a survey still
/// does: that first look may be from a snapshot older than the expiry).
pub const CONFIRM_GUARD_NS: u64 = NS_PER_SEC / 10;

/// How far before the last look's start a probe counts an entry as created since:
/// the data path stamps `created_ns` a few microseconds before its insert lands.
pub const CREATED_SKEW_NS: u64 = NS_PER_SEC / 10;

/// Mappings due at the same tick from which one batched read of the whole tables
/// (`BPF_MAP_LOOKUP_BATCH`) is cheaper than one lookup per mapping.
pub const BATCH_READ_MIN: usize = 4096;

/// Entries (mappings, with what was last seen of them) by deadline, in buckets of
/// [`SLOT_NS`]. Each mapping is in it at most once: a survey rebuilds it from
/// scratch, and a tick takes out the entries it looks at before it puts any back.
#[derive(Debug)]
pub struct Schedule<T> {
    /// Bucket index (deadline / `SLOT_NS`, rounded up) -> entries.
    slots: BTreeMap<u64, Vec<T>>,
    len: usize,
}

impl<T> Default for Schedule<T> {
    fn default() -> Self {
        Self {
            slots: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<T> Schedule<T> {
    /// Forgets everything (before a survey fills it again).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.len = 0;
    }

    /// Schedules `entry` for `due_ns`: it is taken at the first [`Self::take_due`]
    /// at or after `due_ns` (rounded up to the next bucket boundary).
    pub fn insert(&mut self, entry: T, due_ns: u64) {
        self.slots
            .entry(due_ns.div_ceil(SLOT_NS))
            .or_default()
            .push(entry);
        self.len += 1;
    }

    /// Takes out every entry due at `now_ns`, earliest bucket first.
    pub fn take_due(&mut self, now_ns: u64) -> Vec<T> {
        let later = self.slots.split_off(&(now_ns / SLOT_NS + 1));
        let due = std::mem::replace(&mut self.slots, later);
        let entries: Vec<T> = due.into_values().flatten().collect();
        self.len -= entries.len();
        entries
    }

    /// When the earliest scheduled key is due.
    #[must_use]
    pub fn next_due_ns(&self) -> Option<u64> {
        self.slots
            .keys()
            .next()
            .map(|slot| slot.saturating_mul(SLOT_NS))
    }

    /// Keys scheduled.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is scheduled.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The shortest idle timeout of `policy`: no mapping expires sooner after its last
/// refresh.
#[must_use]
pub fn shortest_timeout_ns(policy: &Policy) -> u64 {
    policy
        .udp_ns
        .min(policy.icmp_ns)
        .min(policy.tcp_transitory_ns)
        .min(policy.tcp_established_ns)
}

/// Below this many forward entries every tick is a survey (the census behind the
/// metrics stays a tick old, and a survey costs little even when walking the
/// preallocated tables' empty buckets).
pub const SCHEDULE_FROM_MAPPINGS: usize = 65_536;

/// How long after a survey of `mappings` forward entries that took `cost_ns` the
/// next one comes at the latest: 0 (every tick) below [`SCHEDULE_FROM_MAPPINGS`];
/// otherwise `SURVEY_SHARE` times its cost, so surveys use at most 1/`SURVEY_SHARE`
/// of a CPU, and at most [`MAX_SURVEY_PERIOD_NS`]. (A survey comes sooner when
/// something only a survey judges is due, or when a probe finds new entries.)
#[must_use]
pub fn survey_period(cost_ns: u64, mappings: usize) -> u64 {
    if mappings < SCHEDULE_FROM_MAPPINGS {
        return 0;
    }
    cost_ns
        .saturating_mul(SURVEY_SHARE)
        .min(MAX_SURVEY_PERIOD_NS)
}

/// How often the tables are probed for entries created since the last look: every
/// half shortest timeout, so a mapping created just after a look is scheduled by the
/// next one before it can expire.
#[must_use]
pub fn probe_period(policy: &Policy) -> u64 {
    (shortest_timeout_ns(policy) / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;
    use natgw_common::{FwdKey, IPPROTO_UDP};

    const S: u64 = NS_PER_SEC;

    fn key(port: u16) -> FwdKey {
        FwdKey::new(0x0a00_0102, port.to_be(), IPPROTO_UDP)
    }

    #[test]
    fn keys_come_out_at_their_deadline_not_before_and_in_order() {
        let mut s = Schedule::<FwdKey>::default();
        s.insert(key(3), 30 * S);
        s.insert(key(1), 10 * S);
        s.insert(key(2), 10 * S + 1);
        s.insert(key(4), 10 * S + 50);
        assert_eq!(s.len(), 4);
        assert_eq!(s.next_due_ns(), Some(10 * S));
        assert!(s.take_due(10 * S - 1).is_empty());
        assert_eq!(s.take_due(10 * S), vec![key(1)]);
        // Rounded up to the next bucket: never early, at most SLOT_NS late.
        assert_eq!(s.next_due_ns(), Some(10 * S + SLOT_NS));
        assert!(s.take_due(10 * S + SLOT_NS - 1).is_empty());
        assert_eq!(s.take_due(10 * S + SLOT_NS), vec![key(2), key(4)]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.take_due(100 * S), vec![key(3)]);
        assert!(s.is_empty());
        assert_eq!(s.next_due_ns(), None);
    }

    #[test]
    fn a_late_tick_takes_every_overdue_bucket() {
        let mut s = Schedule::<FwdKey>::default();
        for i in 0..100u16 {
            s.insert(key(i), u64::from(i) * S);
        }
        assert_eq!(s.take_due(49 * S + 1).len(), 50);
        assert_eq!(s.len(), 50);
        s.clear();
        assert!(s.is_empty() && s.take_due(u64::MAX).is_empty());
    }

    fn policy() -> Policy {
        Policy::new(
            &Timeouts {
                udp: 300,
                tcp_established: 7440,
                tcp_transitory: 240,
                icmp: 60,
            },
            false,
        )
    }

    #[test]
    fn cheap_surveys_run_every_tick_and_costly_ones_are_spread() {
        let p = policy();
        assert_eq!(shortest_timeout_ns(&p), 60 * S);
        // A small table: every tick, however slow the survey was.
        assert_eq!(survey_period(S, SCHEDULE_FROM_MAPPINGS - 1), 0);
        let m = 1_000_000;
        assert_eq!(survey_period(1_000_000, m), 50_000_000);
        // A million mappings: 300 ms every 15 s (2% of a CPU).
        assert_eq!(survey_period(300_000_000, m), 15 * S);
        // Never rarer than MAX_SURVEY_PERIOD_NS.
        assert_eq!(survey_period(2 * S, m), MAX_SURVEY_PERIOD_NS);
        // Probes come every half shortest timeout.
        assert_eq!(probe_period(&p), 30 * S);
        let short = Policy { udp_ns: 5 * S, ..p };
        assert_eq!(probe_period(&short), 2_500_000_000);
    }
}
