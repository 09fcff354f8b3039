//! Why the garbage collector surveys the whole tables when it does: the `reason` of
//! the `gc.survey` debug line and of the `natgw_gc_surveys_total` metric. A survey
//! at a million mappings costs about a second of CPU, so each one should have a
//! reason an operator can see.

use std::fmt;

/// What only a survey judges, the earliest of which set the next survey's time
/// ([`super::Plan::survey_by_ns`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Due {
    /// A live session's expiry (counted as if its next packet were a FIN).
    Session,
    /// The second look at an expired session, or at an expired mapping the schedule
    /// does not hold (TCP, or with sessions).
    Candidate,
    /// A TCP mapping or a mapping with sessions reaching its own expiry.
    Mapping,
    /// Mappings expired by this survey: the next comes within the shortest timeout.
    AfterExpiry,
    /// The end of a freed port's hold-down.
    Hold,
    /// A reverse entry without a forward entry whose grace ends.
    OrphanGrace,
    /// The second look at an orphaned reverse entry.
    Orphan,
}

impl Due {
    /// The name in logs and metric labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Session => "due_session",
            Self::Candidate => "due_candidate",
            Self::Mapping => "due_mapping",
            Self::AfterExpiry => "due_after_expiry",
            Self::Hold => "due_hold",
            Self::OrphanGrace => "due_orphan_grace",
            Self::Orphan => "due_orphan",
        }
    }
}

/// The earliest of several due times, with what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Earliest {
    /// The time (`u64::MAX`: nothing due).
    pub at_ns: u64,
    /// What is due then.
    pub why: Option<Due>,
}

impl Default for Earliest {
    fn default() -> Self {
        Self {
            at_ns: u64::MAX,
            why: None,
        }
    }
}

impl Earliest {
    /// Takes `at_ns` if it is earlier than what is held.
    pub fn at(&mut self, at_ns: u64, why: Due) {
        if at_ns < self.at_ns {
            self.at_ns = at_ns;
            self.why = Some(why);
        }
    }

    /// The time and what, if anything is due.
    #[must_use]
    pub fn get(self) -> Option<(u64, Due)> {
        self.why.map(|why| (self.at_ns, why))
    }
}

/// Why a tick surveyed the whole tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SurveyReason {
    /// The first pass, or the first after a reload or after a pass that failed.
    Start,
    /// Tables too small for a schedule (below
    /// [`super::schedule::SCHEDULE_FROM_MAPPINGS`]): every tick.
    EveryTick,
    /// The period the last survey's cost allows
    /// ([`super::schedule::survey_period`]) ran out.
    Period,
    /// Something only a survey judges came due.
    Due(Due),
    /// Ports freed between surveys: their hold-downs end.
    HoldsEnd,
    /// A probe found more or fewer entries than the collector expects and could not
    /// account for them.
    ProbeCounts,
    /// A probe found entries created since the last look that it could not schedule
    /// itself (sessions, TCP mappings, explicit mappings).
    ProbeNew,
}

impl SurveyReason {
    /// Every reason, for metrics written zero or not.
    pub const ALL: [Self; 13] = [
        Self::Start,
        Self::EveryTick,
        Self::Period,
        Self::Due(Due::Session),
        Self::Due(Due::Candidate),
        Self::Due(Due::Mapping),
        Self::Due(Due::AfterExpiry),
        Self::Due(Due::Hold),
        Self::Due(Due::OrphanGrace),
        Self::Due(Due::Orphan),
        Self::HoldsEnd,
        Self::ProbeCounts,
        Self::ProbeNew,
    ];

    /// The name in logs and metric labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::EveryTick => "every_tick",
            Self::Period => "period",
            Self::Due(d) => d.name(),
            Self::HoldsEnd => "holds_end",
            Self::ProbeCounts => "probe_counts",
            Self::ProbeNew => "probe_new",
        }
    }

    /// Position in [`Self::ALL`].
    #[must_use]
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl fmt::Display for SurveyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_due_time_keeps_its_reason() {
        let mut e = Earliest::default();
        assert_eq!(e.get(), None);
        e.at(50, Due::Hold);
        e.at(70, Due::Session);
        e.at(20, Due::OrphanGrace);
        e.at(20, Due::Orphan);
        assert_eq!(e.get(), Some((20, Due::OrphanGrace)));
    }

    #[test]
    fn every_reason_has_its_own_name_and_index() {
        let names: std::collections::BTreeSet<_> =
            SurveyReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), SurveyReason::ALL.len());
        for (i, r) in SurveyReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
