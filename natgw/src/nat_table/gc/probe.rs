//! The probe between surveys: a read of the session and forward tables (not the
//! reverse table, and no plan) every half shortest timeout ([`probe_period`]).
//!
//! It spares a survey when what changed since the last look is only what a busy
//! gateway (or a table being filled) always has:
//! - traffic mappings the collector does not know yet (no survey or probe saw that
//!   key with that `created_ns`) that it can judge on their own (not TCP,
//!   without sessions): the probe puts them into the schedule itself, with the stamps
//!   it saw, like a survey does;
//! - reverse entries the last survey found without a forward entry, in their orphan
//!   grace (the data path claims the port a few microseconds before it writes the
//!   forward entry, so every survey during traffic sees some): the probe finds their
//!   forward entries, and the survey the grace's end would have forced is not needed.
//!
//! Anything else turns the probe into a survey: sessions created since or a session
//! count it does not expect, new TCP mappings or new mappings with sessions (a
//! survey weighs sessions), fewer forward entries than it can account for (deleted
//! behind its back), or a reverse entry still without its forward entry after its
//! grace. Without inbound refresh a reverse entry tells nothing about a non-TCP
//! mapping's expiry; with it, the probe schedules a new mapping by its outbound stamp
//! alone, which is never later than its real deadline: its look then reads the
//! reverse entry too, sees a stamp the probe did not, and schedules it again at its
//! real deadline (RFC 6888: never sooner).

use std::collections::HashSet;

use natgw_common::{FwdKey, Mapping, Origin, RevKey, RevValue, IPPROTO_TCP};

use super::reason::{Due, Earliest, SurveyReason};
use super::schedule::{probe_period, CREATED_SKEW_NS};
use super::{judge, FastMap, Observed, Policy, Sweeper, ORPHAN_GRACE_NS};
use crate::datapath::maps::{fwd_key_of, rev_key_of, session_rev_key, MapsError, NatTables};

/// When the next survey is due, as the last survey left it: by its period, or by what
/// only a survey judges, the reverse entries in their grace apart (a probe may find
/// their forward entries).
#[derive(Debug, Default)]
pub struct Pending {
    /// The end of the period the last survey's cost allows.
    period_end_ns: u64,
    /// No survey sooner than this (a probe period after the last).
    floor_ns: u64,
    /// What else only a survey judges, by when.
    pub rest: Option<(u64, Due)>,
    /// Reverse entries the last survey found unowned and in their grace.
    pub grace: Vec<(RevKey, RevValue)>,
}

impl Pending {
    /// After a survey at `now_ns` whose cost allows the next `period_ns` later.
    pub fn after_survey(&mut self, now_ns: u64, period_ns: u64, policy: &Policy) {
        self.period_end_ns = now_ns.saturating_add(period_ns);
        self.floor_ns = now_ns.saturating_add(probe_period(policy));
    }

    /// When the next survey comes, and why.
    pub(super) fn next_survey(&self) -> (u64, SurveyReason) {
        let mut by = Earliest::default();
        if let Some((at, why)) = self.rest {
            by.at(at, why);
        }
        for (_, r) in &self.grace {
            by.at(
                r.created_ns.saturating_add(ORPHAN_GRACE_NS),
                Due::OrphanGrace,
            );
        }
        match by.get().map(|(at, why)| (at.max(self.floor_ns), why)) {
            Some((at, why)) if at < self.period_end_ns => (at, SurveyReason::Due(why)),
            _ => (self.period_end_ns, SurveyReason::Period),
        }
    }
}

/// What identifies a forward entry to the probe: its key and its `created_ns` (a
/// mapping deleted and created again is another). Two entries with the same
/// fingerprint are possible, and harmless: the second is taken for known, the
/// forward entries then outnumber what the probe accounts for, and it surveys.
pub fn fingerprint(key: &FwdKey, created_ns: u64) -> u64 {
    let key_bits = (u64::from(key.addr_be) << 32)
        | (u64::from(key.port_be) << 16)
        | (u64::from(key.proto) << 8);
    key_bits ^ created_ns.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Sweeper {
    /// A probe (see the module's documentation). `None`: the tables hold what the
    /// collector knows of plus new mappings it has now scheduled; the census's
    /// mapping and session counts are refreshed and the next probe comes a probe
    /// period later. `Some`: a survey is needed, and why.
    pub(super) fn probe<T: NatTables>(
        &mut self,
        tables: &mut T,
        now_ns: u64,
    ) -> Result<Option<SurveyReason>, MapsError> {
        let sessions = tables.session_entries()?;
        let fwd = tables.fwd_entries()?;
        let since = self.seen_since_ns;
        let new_sessions = sessions
            .iter()
            .filter(|(_, s)| s.created_ns >= since)
            .count();
        let new: Vec<&(FwdKey, Mapping)> = fwd
            .iter()
            .filter(|(k, m)| !self.known.contains(&fingerprint(k, m.created_ns)))
            .collect();
        let (expect_fwd, expect_sessions) = (self.expect_fwd, self.expect_sessions);
        let fail = |reason: SurveyReason| {
            log::debug!(
                "gc.probe_failed reason={reason} mappings={} expected={} new={} sessions={} \
                 expected_sessions={} new_sessions={new_sessions}",
                fwd.len(),
                expect_fwd,
                new.len(),
                sessions.len(),
                expect_sessions,
            );
            Ok(Some(reason))
        };
        if new_sessions > 0 {
            return fail(SurveyReason::ProbeNew);
        }
        if sessions.len() != self.expect_sessions
            || fwd.len() != expect_fwd.saturating_add(new.len())
        {
            return fail(SurveyReason::ProbeCounts);
        }
        let with_sessions: HashSet<RevKey> = if new.is_empty() {
            HashSet::new()
        } else {
            sessions.iter().map(|(k, _)| session_rev_key(k)).collect()
        };
        let traffic = |m: &Mapping| m.origin == Origin::Traffic as u8;
        if new.iter().any(|(k, m)| {
            traffic(m) && (k.proto == IPPROTO_TCP || with_sessions.contains(&rev_key_of(k, m)))
        }) {
            return fail(SurveyReason::ProbeNew);
        }
        // The reverse entries in their grace whose forward entries are there now.
        let before = self.pending.grace.len();
        if before > 0 {
            let owners: FastMap<FwdKey, (RevKey, u64)> = self
                .pending
                .grace
                .iter()
                .map(|(rk, r)| (fwd_key_of(rk, r), (*rk, r.created_ns)))
                .collect();
            let owned: HashSet<RevKey> = fwd
                .iter()
                .filter_map(|(k, m)| {
                    owners
                        .get(k)
                        .filter(|(rk, created)| rev_key_of(k, m) == *rk && m.created_ns == *created)
                        .map(|(rk, _)| *rk)
                })
                .collect();
            self.pending.grace.retain(|(rk, _)| !owned.contains(rk));
        }
        if self
            .pending
            .grace
            .iter()
            .any(|(_, r)| r.created_ns.saturating_add(ORPHAN_GRACE_NS) <= now_ns)
        {
            return fail(SurveyReason::Due(Due::OrphanGrace));
        }

        // Everything is accounted for: schedule the new traffic mappings.
        for &&(key, m) in new.iter().filter(|(_, m)| traffic(m)) {
            let obs = Observed::new(&key, &m, None);
            // Expired already: this was the first look, the second comes a tick later
            // (as for a survey's candidate).
            self.schedule_judged(key, judge(&self.policy, now_ns, None, &obs), &obs, now_ns);
        }
        if !new.is_empty() || self.pending.grace.len() != before {
            log::debug!(
                "gc.probe mappings={} scheduled_new={} grace_resolved={} grace_left={}",
                fwd.len(),
                new.len(),
                before - self.pending.grace.len(),
                self.pending.grace.len(),
            );
        }
        self.known
            .extend(new.iter().map(|(k, m)| fingerprint(k, m.created_ns)));
        self.expect_fwd = fwd.len();
        if self.next_survey_reason == SurveyReason::Due(Due::OrphanGrace) {
            (self.next_survey_ns, self.next_survey_reason) = self.pending.next_survey();
        }
        self.census.recount_mappings(&fwd, sessions.len());
        self.seen_since_ns = now_ns.saturating_sub(CREATED_SKEW_NS);
        self.next_probe_ns = Some(now_ns.saturating_add(probe_period(&self.policy)));
        Ok(None)
    }
}
