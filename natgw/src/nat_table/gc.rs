//! Expiry of idle mappings and of their sessions ([`sessions`]), and the end of held
//! SYNs ([`held_syns`]). The data path only creates entries and stamps them; this
//! module decides when they die and deletes them.
//!
//! The policy is pure functions over what the maps hold ([`Observed`]) and the time:
//! - idle time: since the last outbound packet, or the last packet either way when
//!   inbound refresh is on (RFC 4787 REQ-6);
//! - timeout: UDP and other protocols the UDP timeout (REQ-5), ICMP query mappings
//!   the ICMP timeout (RFC 5508 REQ-2); TCP the established timeout when a SYN was
//!   seen both ways and no FIN or RST either way, else the transitory one (RFC 5382
//!   REQ-5);
//! - a TCP mapping also lives as long as any of its sessions does: its expiry is the
//!   later of its own rule's and its live sessions' (each timed by its own TCP state,
//!   since the last packet either way), so a connection the mapping's coarse flags
//!   call closing, or one kept busy only by inbound segments, keeps its mapping;
//! - two phases: a tick that finds a mapping expired only remembers it as a
//!   [`Candidate`]; the next tick deletes it if the timestamps that count as refresh
//!   are unchanged and it is still expired (a TCP mapping's sessions are weighed
//!   again), so a mapping refreshed in between survives;
//! - the forward entry goes first, then the reverse entry if its `created_ns` is the
//!   forward entry's (otherwise it belongs to a newer mapping of the same port);
//!   with a hold-down (RFC 6888 REQ-8) the reverse entry is not deleted but turned
//!   into a hold ([`NatTables::free_port`]), which keeps the port from other hosts
//!   and is deleted here once the hold-down has passed (holds are not orphans);
//! - reverse entries no forward entry points back to (orphans) are deleted once they
//!   are older than [`ORPHAN_GRACE_NS`] and seen orphaned on two ticks, since the data
//!   path inserts the reverse entry (the port claim) before the forward one;
//! - the sessions of a deleted mapping go right after it, in the same tick;
//! - explicit mappings (origin PCP, NAT-PMP or static) are not this module's: they
//!   live by the lifetime their holder was granted, and [`crate::nat_table::explicit`] ends them
//!   (their sessions still expire here).
//!
//! [`Sweeper::plan`] makes every decision from a snapshot; a survey
//! ([`Sweeper::tick`] when one is due) takes the snapshot and applies the plan through
//! [`NatTables`], re-checking each entry right before deleting it. A survey also fills
//! the [`schedule`] with the mappings it can judge from their own two entries, and the
//! ticks between surveys look only at those whose deadline has come, so an idle
//! million mappings cost nothing between surveys (see [`schedule`] for what waits
//! for a survey). Many expiries at once go in batches: one batched re-read of the
//! tables and `BPF_MAP_DELETE_BATCH` calls instead of a few system calls per mapping;
//! the re-read then precedes the deletes by the few milliseconds a batch takes.

pub mod held_syns;
pub mod probe;
pub mod reason;
pub mod schedule;
pub mod sessions;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddrV4;
use std::time::Instant;

use natgw_common::maps::{tcp_seen, Session, SessionKey};
use natgw_common::{
    FwdKey, Mapping, Origin, RevKey, RevValue, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, NS_PER_SEC,
};

use super::census::Census;
use crate::config::Timeouts;
use crate::datapath::maps::{
    fwd_key_of, ipv4, port, rev_key_of, rev_matches, session_rev_key, MapsError, NatTables,
};
use reason::{Due, Earliest, SurveyReason};
use schedule::{
    probe_period, survey_period, Schedule, BATCH_READ_MIN, CONFIRM_GUARD_NS, CREATED_SKEW_NS,
};
use sessions::{SessionCandidate, SessionEnd, SessionObserved, SessionVerdict};

/// How long a reverse entry without a forward entry is left alone: far longer than
/// the data path needs between inserting the two halves of a mapping.
pub const ORPHAN_GRACE_NS: u64 = 10 * NS_PER_SEC;

/// Timeouts in nanoseconds and the refresh rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// UDP and every non-TCP protocol.
    pub udp_ns: u64,
    /// Established TCP.
    pub tcp_established_ns: u64,
    /// Opening or closing TCP.
    pub tcp_transitory_ns: u64,
    /// ICMP query mappings.
    pub icmp_ns: u64,
    /// Inbound packets refresh the idle timer.
    pub inbound_refresh: bool,
    /// How long a freed port is held from other hosts (RFC 6888 REQ-8); 0: none.
    pub hold_ns: u64,
}

impl Policy {
    /// The policy of the configured timeouts.
    #[must_use]
    pub const fn new(t: &Timeouts, inbound_refresh: bool) -> Self {
        Self {
            udp_ns: t.udp.saturating_mul(NS_PER_SEC),
            tcp_established_ns: t.tcp_established.saturating_mul(NS_PER_SEC),
            tcp_transitory_ns: t.tcp_transitory.saturating_mul(NS_PER_SEC),
            icmp_ns: t.icmp.saturating_mul(NS_PER_SEC),
            inbound_refresh,
            hold_ns: 0,
        }
    }

    /// The same with freed ports held for `hold_s` seconds.
    #[must_use]
    pub const fn with_hold_down(self, hold_s: u64) -> Self {
        Self {
            hold_ns: hold_s.saturating_mul(NS_PER_SEC),
            ..self
        }
    }
}

/// TCP connection state as far as the NAT can tell from the flags it saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    /// No SYN seen both ways yet.
    Opening,
    /// SYN seen both ways, no FIN or RST.
    Established,
    /// A FIN or RST was seen.
    Closing,
}

impl TcpState {
    /// Lower-case name for listings.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Opening => "opening",
            Self::Established => "established",
            Self::Closing => "closing",
        }
    }
}

/// The state of a TCP mapping from the [`tcp_seen`] bits of each direction.
#[must_use]
pub const fn tcp_state(flags_out: u8, flags_in: u8) -> TcpState {
    let any = flags_out | flags_in;
    if any & (tcp_seen::FIN | tcp_seen::RST) != 0 {
        TcpState::Closing
    } else if flags_out & tcp_seen::SYN != 0 && flags_in & tcp_seen::SYN != 0 {
        TcpState::Established
    } else {
        TcpState::Opening
    }
}

/// What the maps say about one mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// IP protocol.
    pub proto: u8,
    /// The mapping's identity.
    pub created_ns: u64,
    /// Last outbound packet.
    pub last_out_ns: u64,
    /// Last inbound packet; 0 if none (or no matching reverse entry).
    pub last_in_ns: u64,
    /// [`tcp_seen`] bits outbound.
    pub flags_out: u8,
    /// [`tcp_seen`] bits inbound.
    pub flags_in: u8,
    /// Until when its live sessions keep it (TCP), 0 when none do.
    pub sessions_until_ns: u64,
}

impl Observed {
    /// From a forward entry and its reverse entry, if that matches.
    #[must_use]
    pub fn new(key: &FwdKey, m: &Mapping, rev: Option<&RevValue>) -> Self {
        let rev = rev.filter(|r| rev_matches(key, m, r));
        Self {
            proto: key.proto,
            created_ns: m.created_ns,
            last_out_ns: m.last_out_ns,
            last_in_ns: rev.map_or(0, |r| r.last_in_ns),
            flags_out: m.tcp_flags_out,
            flags_in: rev.map_or(0, |r| r.tcp_flags_in),
            sessions_until_ns: 0,
        }
    }

    /// The same, kept until `until_ns` by live sessions.
    #[must_use]
    pub const fn kept_until(self, until_ns: u64) -> Self {
        Self {
            sessions_until_ns: until_ns,
            ..self
        }
    }

    /// The last packet either way (what `natgw mappings` calls idle).
    #[must_use]
    pub fn last_packet_ns(&self) -> u64 {
        self.last_out_ns.max(self.last_in_ns).max(self.created_ns)
    }

    /// The last packet that refreshes the mapping under `policy`.
    #[must_use]
    pub fn last_refresh_ns(&self, policy: &Policy) -> u64 {
        let last = if policy.inbound_refresh {
            self.last_out_ns.max(self.last_in_ns)
        } else {
            self.last_out_ns
        };
        last.max(self.created_ns)
    }

    /// The TCP state; `None` for other protocols.
    #[must_use]
    pub const fn tcp_state(&self) -> Option<TcpState> {
        if self.proto == IPPROTO_TCP {
            Some(tcp_state(self.flags_out, self.flags_in))
        } else {
            None
        }
    }
}

/// The idle timeout of a mapping by its own rule.
#[must_use]
pub const fn timeout_ns(policy: &Policy, obs: &Observed) -> u64 {
    match obs.tcp_state() {
        Some(TcpState::Established) => policy.tcp_established_ns,
        Some(_) => policy.tcp_transitory_ns,
        None if obs.proto == IPPROTO_ICMP => policy.icmp_ns,
        None => policy.udp_ns,
    }
}

/// Time since the last refreshing packet.
#[must_use]
pub fn idle_ns(policy: &Policy, obs: &Observed, now_ns: u64) -> u64 {
    now_ns.saturating_sub(obs.last_refresh_ns(policy))
}

/// Whether the mapping has been idle for its whole timeout and no live session
/// keeps it.
#[must_use]
pub fn is_expired(policy: &Policy, obs: &Observed, now_ns: u64) -> bool {
    idle_ns(policy, obs, now_ns) >= timeout_ns(policy, obs) && now_ns >= obs.sessions_until_ns
}

/// Time left before the mapping expires (0 once expired).
#[must_use]
pub fn remaining_ns(policy: &Policy, obs: &Observed, now_ns: u64) -> u64 {
    timeout_ns(policy, obs)
        .saturating_sub(idle_ns(policy, obs, now_ns))
        .max(obs.sessions_until_ns.saturating_sub(now_ns))
}

/// What one tick remembers of an expired mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Identity of the mapping.
    pub created_ns: u64,
    /// `last_out_ns` when found expired.
    pub last_out_ns: u64,
    /// `last_in_ns` when found expired.
    pub last_in_ns: u64,
}

impl Candidate {
    /// The snapshot of `obs`.
    #[must_use]
    pub const fn of(obs: &Observed) -> Self {
        Self {
            created_ns: obs.created_ns,
            last_out_ns: obs.last_out_ns,
            last_in_ns: obs.last_in_ns,
        }
    }

    /// Whether `obs` is the same mapping, not refreshed since. Inbound packets count
    /// only with inbound refresh; otherwise a peer could keep a mapping alive
    /// forever. (A TCP connection kept busy by inbound segments keeps its mapping
    /// through its session, whose expiry [`is_expired`] weighs on every tick; the
    /// mapping's own inbound stamp also moves for segments that refresh no session,
    /// such as a peer's SYNs to a reset connection, RFC 7857 §2.1.)
    #[must_use]
    pub const fn unchanged(&self, obs: &Observed, policy: &Policy) -> bool {
        self.created_ns == obs.created_ns
            && self.last_out_ns == obs.last_out_ns
            && (!policy.inbound_refresh || self.last_in_ns == obs.last_in_ns)
    }
}

/// The decision about one mapping on one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Alive.
    Keep,
    /// Expired for the first time (or refreshed and expired again): remember it.
    Candidate(Candidate),
    /// Expired on two ticks with nothing in between: delete it.
    Delete,
}

/// Decides about one mapping given what the previous tick remembered of it.
#[must_use]
pub fn judge(
    policy: &Policy,
    now_ns: u64,
    previous: Option<&Candidate>,
    obs: &Observed,
) -> Verdict {
    if !is_expired(policy, obs, now_ns) {
        return Verdict::Keep;
    }
    match previous {
        Some(c) if c.unchanged(obs, policy) => Verdict::Delete,
        _ => Verdict::Candidate(Candidate::of(obs)),
    }
}

/// A mapping to delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// Forward key.
    pub key: FwdKey,
    /// Forward value as seen.
    pub mapping: Mapping,
    /// What the decision was based on.
    pub observed: Observed,
    /// Idle time at decision.
    pub idle_ns: u64,
}

impl Expiry {
    /// The reverse key of this mapping.
    #[must_use]
    pub const fn rev_key(&self) -> RevKey {
        rev_key_of(&self.key, &self.mapping)
    }
}

/// A reverse entry to delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Orphan {
    /// Reverse key.
    pub key: RevKey,
    /// Its `created_ns` when found orphaned.
    pub created_ns: u64,
}

/// A session to delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionExpiry {
    /// Its key.
    pub key: SessionKey,
    /// What the decision was based on.
    pub observed: SessionObserved,
    /// Why.
    pub end: SessionEnd,
}

/// Everything one tick decided to delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Expired mappings.
    pub expire: Vec<Expiry>,
    /// Orphaned reverse entries.
    pub orphans: Vec<Orphan>,
    /// Dead sessions; those ending [`SessionEnd::WithMapping`] only if their mapping
    /// is really deleted.
    pub sessions: Vec<SessionExpiry>,
    /// Holds of freed ports whose hold-down has passed (key, `created_ns`).
    pub holds_ended: Vec<(RevKey, u64)>,
    /// Mappings the ticks until the next survey may judge on their own (traffic
    /// mappings, not TCP, without sessions), with the stamps seen now and when to look
    /// at them next: [`CONFIRM_GUARD_NS`] past their expiry, or a tick past now for a
    /// candidate.
    pub schedule: Vec<(FwdKey, Candidate, u64)>,
    /// By when the next survey must come for what only a survey judges (TCP mappings
    /// and mappings with sessions, sessions, orphans, holds, candidates); `None`:
    /// nothing of that kind. Conservative: a TCP entry counts as if a FIN could make
    /// it transitory on its next packet.
    pub survey_by_ns: Option<u64>,
    /// What is due at [`Self::survey_by_ns`].
    pub survey_by_why: Option<Due>,
    /// The same without the reverse entries in their orphan grace: a probe that finds
    /// their forward entries need not survey for them.
    pub survey_by_rest: Option<(u64, Due)>,
    /// Reverse entries no forward entry owned yet, in their [`ORPHAN_GRACE_NS`].
    pub in_grace: Vec<(RevKey, RevValue)>,
}

/// What a tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickStats {
    /// Forward entries seen.
    pub mappings: usize,
    /// Mappings deleted.
    pub expired: usize,
    /// Mappings spared because they were refreshed just before deletion.
    pub refreshed: usize,
    /// Orphaned reverse entries deleted.
    pub orphans: usize,
    /// Candidates remembered for the next tick.
    pub candidates: usize,
    /// Sessions seen.
    pub sessions: usize,
    /// Sessions deleted.
    pub sessions_expired: usize,
    /// Holds of freed ports in force.
    pub held: usize,
    /// Holds deleted after their hold-down.
    pub holds_ended: usize,
    /// Whether this tick surveyed the whole tables (otherwise it looked only at the
    /// scheduled mappings that were due, `mappings` of them).
    pub survey: bool,
    /// Whether this tick probed the forward and session tables for new entries and
    /// found none (it then looked at the due mappings as well).
    pub probe: bool,
    /// Why this tick surveyed (`Some` exactly when `survey`).
    pub reason: Option<SurveyReason>,
}

/// How often the collector surveys the whole tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cadence {
    /// Every tick (no schedule between surveys).
    EveryTick,
    /// As often as [`survey_period`] allows for the last survey's cost.
    Adaptive,
    /// Every so many nanoseconds.
    Fixed(u64),
}

/// The garbage collector: the policy and what it remembers between ticks.
#[derive(Debug)]
pub struct Sweeper {
    policy: Policy,
    census: Census,
    candidates: FastMap<FwdKey, Candidate>,
    orphan_candidates: HashMap<RevKey, u64>,
    session_candidates: HashMap<SessionKey, SessionCandidate>,
    schedule: Schedule<(FwdKey, Candidate)>,
    cadence: Cadence,
    /// When the next survey is due.
    next_survey_ns: u64,
    /// Why it comes then.
    next_survey_reason: SurveyReason,
    /// When a candidate found between surveys gets its second look: one tick later.
    confirm_ns: u64,
    /// When the next probe for new entries is due (`None`: surveys come often enough).
    next_probe_ns: Option<u64>,
    /// Entries created from this time on are new to the collector (the start of the
    /// last survey or clean probe, less [`CREATED_SKEW_NS`]).
    seen_since_ns: u64,
    /// Forward entries and sessions the tables should hold if nothing was created or
    /// deleted behind the collector's back since the last survey.
    expect_fwd: usize,
    expect_sessions: usize,
    /// The forward entries the last survey and the probes since saw, by
    /// [`probe::fingerprint`] (not kept with [`Cadence::EveryTick`]): a probe
    /// schedules the others itself.
    known: FastSet<u64>,
    /// When the next survey is due, as the last survey left it ([`probe::Pending`]).
    pending: probe::Pending,
}

impl Sweeper {
    /// New timeouts (a reloaded configuration): they apply from the next pass on,
    /// which is a survey.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
        self.next_survey_ns = 0;
        self.next_survey_reason = SurveyReason::Start;
        self.next_probe_ns = None;
    }

    /// How long past its deadline a scheduled mapping gets its second look.
    fn guard_ns(&self) -> u64 {
        self.confirm_ns.min(CONFIRM_GUARD_NS)
    }

    /// Puts a mapping of the schedule's kind, judged alive or expired once, on the
    /// schedule: an alive one when its idle time runs out (past the guard), a
    /// candidate for its second look a confirmation period from now. A mapping to
    /// delete is the caller's.
    fn schedule_judged(&mut self, key: FwdKey, verdict: Verdict, obs: &Observed, now_ns: u64) {
        match verdict {
            Verdict::Keep => {
                let due = now_ns + remaining_ns(&self.policy, obs, now_ns);
                self.schedule
                    .insert((key, Candidate::of(obs)), due + self.guard_ns());
            }
            Verdict::Candidate(c) => {
                self.schedule.insert((key, c), now_ns + self.confirm_ns);
            }
            Verdict::Delete => {}
        }
    }

    /// The same collector surveying at `cadence`, its ticks `interval_ns` apart (the
    /// second look at a candidate found between surveys comes that much later).
    #[must_use]
    pub fn scheduled(self, cadence: Cadence, interval_ns: u64) -> Self {
        Self {
            cadence,
            confirm_ns: interval_ns.max(1),
            ..self
        }
    }

    /// A new tick interval (a reloaded configuration).
    pub fn set_interval(&mut self, interval_ns: u64) {
        self.confirm_ns = interval_ns.max(1);
    }

    /// When the earliest scheduled mapping is due: the collector wants a tick then,
    /// if that is before its next regular one. (Surveys come on ticks: the first at or
    /// after the survey time.)
    #[must_use]
    pub fn next_due_ns(&self) -> Option<u64> {
        match self.cadence {
            Cadence::EveryTick => None,
            _ => self.schedule.next_due_ns(),
        }
    }

    /// Mappings scheduled for a look before the next survey.
    #[must_use]
    pub const fn scheduled_len(&self) -> usize {
        self.schedule.len()
    }

    /// What the tables held at the start of the last pass (empty before the first).
    #[must_use]
    pub const fn census(&self) -> &Census {
        &self.census
    }

    /// A collector with no memory yet.
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            census: Census::default(),
            candidates: fast_map(0),
            orphan_candidates: HashMap::new(),
            session_candidates: HashMap::new(),
            schedule: Schedule::default(),
            cadence: Cadence::EveryTick,
            next_survey_ns: 0,
            next_survey_reason: SurveyReason::Start,
            confirm_ns: NS_PER_SEC,
            next_probe_ns: None,
            seen_since_ns: 0,
            expect_fwd: 0,
            expect_sessions: 0,
            known: FastSet::default(),
            pending: probe::Pending::default(),
        }
    }

    /// Decides from a snapshot of the tables; updates the memory for the next tick.
    pub fn plan(
        &mut self,
        now_ns: u64,
        fwd: &[(FwdKey, Mapping)],
        rev: &[(RevKey, RevValue)],
        sessions: &[(SessionKey, Session)],
    ) -> Plan {
        // Holds of freed ports are no mapping's: they own no session, keep no
        // mapping alive and are no orphans.
        // Each with whether a forward entry owns it (set by the walk over `fwd`).
        let mut rev_by_key: FastMap<RevKey, (RevValue, bool)> = fast_map(rev.len());
        rev_by_key.extend(
            rev.iter()
                .filter(|(_, r)| !r.is_held())
                .map(|(k, r)| (*k, (*r, false))),
        );
        let mut plan = Plan::default();

        // Sessions first: the live ones of TCP mappings extend their mappings.
        let mut session_candidates = HashMap::new();
        let mut kept_until: HashMap<RevKey, u64> = HashMap::new();
        // Sessions not deleted on their own this tick.
        let mut undecided: Vec<(SessionKey, SessionObserved)> = Vec::new();
        // What only a survey judges, by when it is due at the earliest.
        let mut survey_by = Earliest::default();
        let confirm_at = now_ns.saturating_add(self.confirm_ns);
        let transitory = Policy {
            tcp_established_ns: self
                .policy
                .tcp_established_ns
                .min(self.policy.tcp_transitory_ns),
            ..self.policy
        };
        for (key, s) in sessions {
            let obs = SessionObserved::new(key, s);
            let rk = session_rev_key(key);
            let owner = rev_by_key.get(&rk).map(|(r, _)| r);
            match sessions::judge(
                &self.policy,
                now_ns,
                self.session_candidates.get(key),
                &obs,
                owner,
            ) {
                SessionVerdict::Keep => {
                    if key.proto == IPPROTO_TCP {
                        let until = sessions::expires_at_ns(&self.policy, &obs);
                        let e = kept_until.entry(rk).or_default();
                        *e = (*e).max(until);
                    }
                    survey_by.at(sessions::expires_at_ns(&transitory, &obs), Due::Session);
                    undecided.push((*key, obs));
                }
                SessionVerdict::Candidate(c) => {
                    session_candidates.insert(*key, c);
                    survey_by.at(confirm_at, Due::Candidate);
                    undecided.push((*key, obs));
                }
                SessionVerdict::Delete(end) => plan.sessions.push(SessionExpiry {
                    key: *key,
                    observed: obs,
                    end,
                }),
            }
        }
        self.session_candidates = session_candidates;

        // Mappings with sessions wait for surveys: their sessions are judged there.
        let with_sessions: HashSet<RevKey> =
            sessions.iter().map(|(k, _)| session_rev_key(k)).collect();
        let mut candidates = fast_map(self.candidates.len());
        for (key, m) in fwd {
            let rk = rev_key_of(key, m);
            let rev = rev_by_key.get_mut(&rk).map(|(r, owned)| {
                *owned |= fwd_key_of(&rk, r) == *key && m.created_ns == r.created_ns;
                &*r
            });
            if m.origin != Origin::Traffic as u8 {
                continue; // an explicit mapping: `crate::nat_table::explicit` ends it
            }
            let obs =
                Observed::new(key, m, rev).kept_until(kept_until.get(&rk).copied().unwrap_or(0));
            let schedulable = key.proto != IPPROTO_TCP && !with_sessions.contains(&rk);
            match judge(&self.policy, now_ns, self.candidates.get(key), &obs) {
                Verdict::Keep => {
                    if schedulable {
                        let due = now_ns + remaining_ns(&self.policy, &obs, now_ns);
                        plan.schedule
                            .push((*key, Candidate::of(&obs), due + self.guard_ns()));
                    } else {
                        // Without its sessions' extension: they count on their own.
                        let own = Observed {
                            sessions_until_ns: 0,
                            ..obs
                        };
                        survey_by.at(
                            now_ns + remaining_ns(&transitory, &own, now_ns),
                            Due::Mapping,
                        );
                    }
                }
                Verdict::Candidate(c) => {
                    candidates.insert(*key, c);
                    if schedulable {
                        plan.schedule.push((*key, c, confirm_at));
                    } else {
                        survey_by.at(confirm_at, Due::Candidate);
                    }
                }
                // Spared if a packet comes before the delete: then judged again.
                Verdict::Delete => plan.expire.push(Expiry {
                    key: *key,
                    mapping: *m,
                    observed: obs,
                    idle_ns: idle_ns(&self.policy, &obs, now_ns),
                }),
            }
        }
        self.candidates = candidates;

        // The remaining sessions of mappings deleted now go with them.
        let dying: HashSet<RevKey> = plan.expire.iter().map(Expiry::rev_key).collect();
        for (key, obs) in undecided {
            if dying.contains(&session_rev_key(&key)) {
                self.session_candidates.remove(&key);
                plan.sessions.push(SessionExpiry {
                    key,
                    observed: obs,
                    end: SessionEnd::WithMapping,
                });
            }
        }
        let mut orphans = HashMap::new();
        if !plan.expire.is_empty() {
            survey_by.at(
                now_ns + schedule::shortest_timeout_ns(&self.policy),
                Due::AfterExpiry,
            );
        }
        for (key, r) in rev {
            if r.is_held() {
                if r.hold_expired(now_ns, self.policy.hold_ns) {
                    plan.holds_ended.push((*key, r.created_ns));
                } else {
                    survey_by.at(r.created_ns.saturating_add(self.policy.hold_ns), Due::Hold);
                }
                continue;
            }
            let owned = rev_by_key.get(key).is_some_and(|(_, owned)| *owned);
            if owned {
                continue;
            }
            if now_ns.saturating_sub(r.created_ns) < ORPHAN_GRACE_NS {
                plan.in_grace.push((*key, *r));
                continue;
            }
            if self.orphan_candidates.get(key) == Some(&r.created_ns) {
                plan.orphans.push(Orphan {
                    key: *key,
                    created_ns: r.created_ns,
                });
            } else {
                orphans.insert(*key, r.created_ns);
                survey_by.at(confirm_at, Due::Orphan);
            }
        }
        self.orphan_candidates = orphans;
        plan.survey_by_rest = survey_by.get();
        for (_, r) in &plan.in_grace {
            survey_by.at(r.created_ns + ORPHAN_GRACE_NS, Due::OrphanGrace);
        }
        plan.survey_by_ns = survey_by.get().map(|(at, _)| at);
        plan.survey_by_why = survey_by.why;
        plan
    }

    /// One garbage-collection tick at time `now_ns`: a survey of the whole tables when
    /// one is due ([`Cadence`]), otherwise a look at the scheduled mappings that are
    /// due.
    pub fn tick<T: NatTables>(
        &mut self,
        tables: &mut T,
        now_ns: u64,
    ) -> Result<TickStats, MapsError> {
        let mut reason = self.next_survey_reason;
        let survey_due = now_ns >= self.next_survey_ns;
        let probe_due = self.next_probe_ns.is_some_and(|probe| now_ns >= probe);
        if !survey_due && !probe_due {
            return self.due_tick(tables, now_ns);
        }
        // A survey due only for reverse entries in their grace waits for a probe: it
        // finds their forward entries in the usual case.
        if probe_due && (!survey_due || reason == SurveyReason::Due(Due::OrphanGrace)) {
            match self.probe(tables, now_ns)? {
                None => {
                    let mut stats = self.due_tick(tables, now_ns)?;
                    stats.probe = true;
                    return Ok(stats);
                }
                // Something was created or deleted behind the collector's back.
                Some(why) => reason = why,
            }
        }
        let started = Instant::now();
        let stats = self.survey(tables, now_ns);
        let cost_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        (
            self.next_survey_ns,
            self.next_probe_ns,
            self.next_survey_reason,
        ) = match (self.cadence, &stats) {
            (_, Err(_)) => (0, None, SurveyReason::Start),
            (Cadence::EveryTick, _) => (0, None, SurveyReason::EveryTick),
            (Cadence::Adaptive, Ok((stats, survey_by))) => {
                let period = survey_period(cost_ns, stats.mappings);
                self.pending.after_survey(now_ns, period, &self.policy);
                self.next_looks(now_ns, period, *survey_by)
            }
            (Cadence::Fixed(period), Ok(_)) => {
                (now_ns.saturating_add(period), None, SurveyReason::Period)
            }
        };
        stats.map(|(stats, _)| TickStats {
            reason: Some(reason),
            ..stats
        })
    }

    /// After a survey at `now_ns` whose cost allows the next one `period` later and
    /// whose plan needs one by `survey_by`: when the next survey comes, and the next
    /// probe if probes come before it. Probes every [`probe_period`] catch what is
    /// created meanwhile; a survey comes when something only a survey judges is due,
    /// but no sooner than a probe would (surveys came that often before probes).
    fn next_looks(
        &self,
        now_ns: u64,
        period: u64,
        survey_by: Option<(u64, Due)>,
    ) -> (u64, Option<u64>, SurveyReason) {
        let probe = probe_period(&self.policy);
        if period <= probe {
            let reason = if period == 0 {
                SurveyReason::EveryTick
            } else {
                SurveyReason::Period
            };
            return (now_ns.saturating_add(period), None, reason);
        }
        let by_period = now_ns.saturating_add(period);
        let next_probe = Some(now_ns.saturating_add(probe));
        match survey_by.map(|(by, why)| (by.max(now_ns.saturating_add(probe)), why)) {
            Some((due, why)) if due < by_period => (due, next_probe, SurveyReason::Due(why)),
            _ => (by_period, next_probe, SurveyReason::Period),
        }
    }

    /// The ticks between surveys: re-reads the scheduled mappings that are due (one
    /// lookup each, or one batched read when many are) and judges each against the
    /// stamps last seen (the first phase): unchanged and expired, it goes; refreshed,
    /// it goes back into the schedule at its new deadline.
    fn due_tick<T: NatTables>(
        &mut self,
        tables: &mut T,
        now_ns: u64,
    ) -> Result<TickStats, MapsError> {
        let due = self.schedule.take_due(now_ns);
        let mut stats = TickStats {
            mappings: due.len(),
            candidates: self.candidates.len(),
            ..TickStats::default()
        };
        if due.is_empty() {
            return Ok(stats);
        }
        let batched = due.len() >= BATCH_READ_MIN;
        let seen = if batched {
            // Without inbound refresh the reverse entries tell nothing about a
            // non-TCP mapping's expiry, and a traffic mapping's claim stays until the
            // controller frees it: the forward table alone is read.
            let keys: Vec<FwdKey> = due.iter().map(|(k, _)| *k).collect();
            read_batched(tables, &keys, self.policy.inbound_refresh)?
        } else {
            let mut seen = Vec::with_capacity(due.len());
            for (key, _) in &due {
                let m = tables.fwd(key)?;
                let r = match &m {
                    Some(m) => tables.rev(&rev_key_of(key, m))?,
                    None => None,
                };
                seen.push((*key, m, r));
            }
            seen
        };
        let mut expire = Vec::new();
        for ((key, m, r), (_, last)) in seen.into_iter().zip(due) {
            let Some(m) = m else {
                continue; // gone (a flush, or its address went): nothing to do
            };
            if m.origin != Origin::Traffic as u8 || key.proto == IPPROTO_TCP {
                continue; // no longer this schedule's: the next survey judges it
            }
            let obs = Observed::new(&key, &m, r.as_ref());
            match judge(&self.policy, now_ns, Some(&last), &obs) {
                verdict @ (Verdict::Keep | Verdict::Candidate(_)) => {
                    self.schedule_judged(key, verdict, &obs, now_ns);
                }
                Verdict::Delete => {
                    self.candidates.remove(&key);
                    let e = Expiry {
                        key,
                        mapping: m,
                        observed: obs,
                        idle_ns: idle_ns(&self.policy, &obs, now_ns),
                    };
                    let owns_port = !self.policy.inbound_refresh
                        || r.is_some_and(|r| r.created_ns == m.created_ns);
                    expire.push((e, owns_port));
                }
            }
        }
        let mut deleted = HashSet::new();
        if batched {
            // This tick's batched read was the re-read before deleting.
            expire_batched(tables, &expire, now_ns, &mut stats, &mut deleted)?;
        } else {
            let expire: Vec<Expiry> = expire.into_iter().map(|(e, _)| e).collect();
            self.expire_each(tables, &expire, now_ns, &mut stats, &mut deleted)?;
        }
        stats.candidates = self.candidates.len();
        self.expect_fwd = self.expect_fwd.saturating_sub(stats.expired);
        if stats.expired > 0 && self.policy.hold_ns > 0 {
            // Their ports' holds end with the next survey after the hold-down.
            let by = now_ns
                .saturating_add(self.policy.hold_ns)
                .max(now_ns.saturating_add(probe_period(&self.policy)));
            if by < self.next_survey_ns {
                self.next_survey_ns = by;
                self.next_survey_reason = SurveyReason::HoldsEnd;
            }
        }
        Ok(stats)
    }

    /// A survey: one pass over the whole tables, which also refills the schedule.
    /// Returns by when the next survey must come ([`Plan::survey_by_ns`]).
    fn survey<T: NatTables>(
        &mut self,
        tables: &mut T,
        now_ns: u64,
    ) -> Result<(TickStats, Option<(u64, Due)>), MapsError> {
        // Sessions before mappings, forward before reverse: the data path creates
        // them in the opposite order, so every entry in a snapshot finds the entries
        // it was created after in the later snapshots.
        let sessions = tables.session_entries()?;
        let fwd = tables.fwd_entries()?;
        let rev = tables.rev_entries()?;
        self.census = Census::of(&fwd, &rev, sessions.len());
        let mut plan = self.plan(now_ns, &fwd, &rev, &sessions);
        self.known.clear();
        if self.cadence != Cadence::EveryTick {
            (self.known).extend(fwd.iter().map(|(k, m)| probe::fingerprint(k, m.created_ns)));
        }
        self.pending.rest = plan.survey_by_rest;
        self.pending.grace = std::mem::take(&mut plan.in_grace);
        let held = rev.iter().filter(|(_, r)| r.is_held()).count();
        let mut stats = TickStats {
            mappings: fwd.len(),
            candidates: self.candidates.len(),
            sessions: sessions.len(),
            held: held - plan.holds_ended.len(),
            ..TickStats::default()
        };
        tables.count_holds(stats.held);
        stats.survey = true;
        self.seen_since_ns = now_ns.saturating_sub(CREATED_SKEW_NS);
        self.schedule.clear();
        for &(key, seen, due) in &plan.schedule {
            self.schedule.insert((key, seen), due);
        }
        let mut deleted: HashSet<RevKey> = HashSet::new();
        if plan.expire.len() >= BATCH_READ_MIN {
            let confirmed = self.reread_batched(tables, &plan.expire, &mut stats)?;
            expire_batched(tables, &confirmed, now_ns, &mut stats, &mut deleted)?;
        } else {
            self.expire_each(tables, &plan.expire, now_ns, &mut stats, &mut deleted)?;
        }

        for o in &plan.orphans {
            let Some(r) = tables.rev(&o.key)? else {
                continue;
            };
            if r.created_ns != o.created_ns {
                continue;
            }
            let fk = fwd_key_of(&o.key, &r);
            if tables
                .fwd(&fk)?
                .is_some_and(|m| rev_key_of(&fk, &m) == o.key && m.created_ns == r.created_ns)
            {
                continue;
            }
            if tables.remove_rev(&o.key)? {
                stats.orphans += 1;
                log::debug!(
                    "mapping.orphan_removed proto={} ext={} int={}",
                    proto_name(o.key.proto),
                    SocketAddrV4::new(ipv4(o.key.addr_be), port(o.key.port_be)),
                    SocketAddrV4::new(ipv4(r.int_addr_be), port(r.int_port_be)),
                );
            }
        }

        for (key, created_ns) in &plan.holds_ended {
            // Unless the host took its port back meanwhile (the data path deletes
            // its own hold and claims the port afresh).
            let same = tables
                .rev(key)?
                .is_some_and(|r| r.is_held() && r.created_ns == *created_ns);
            if same && tables.remove_rev(key)? {
                stats.holds_ended += 1;
            }
        }

        for s in &plan.sessions {
            if s.end == SessionEnd::WithMapping && !deleted.contains(&session_rev_key(&s.key)) {
                continue; // the mapping was spared after all
            }
            let Some(current) = tables.session(&s.key)? else {
                continue;
            };
            let was = SessionCandidate {
                observed: s.observed,
                end: s.end,
            };
            if !was.unchanged(&SessionObserved::new(&s.key, &current), &self.policy) {
                continue;
            }
            if tables.remove_session(&s.key)? {
                stats.sessions_expired += 1;
                log::debug!(
                    "session.expired proto={} ext={} remote={} reason={} idle={} state={}",
                    proto_name(s.key.proto),
                    SocketAddrV4::new(ipv4(s.key.ext_addr_be), port(s.key.ext_port_be)),
                    SocketAddrV4::new(ipv4(s.key.remote_addr_be), port(s.key.remote_port_be)),
                    s.end.name(),
                    Secs(now_ns.saturating_sub(s.observed.last_packet_ns())),
                    s.observed
                        .tcp_state()
                        .map_or("-", natgw_common::tcp::TcpState::name),
                );
            }
        }
        self.expect_fwd = fwd.len().saturating_sub(stats.expired);
        self.expect_sessions = sessions.len().saturating_sub(stats.sessions_expired);
        Ok((stats, plan.survey_by_ns.zip(plan.survey_by_why)))
    }

    /// Deletes `expire` one by one, each after a re-read that shows it unchanged since
    /// it was judged.
    fn expire_each<T: NatTables>(
        &self,
        tables: &mut T,
        expire: &[Expiry],
        now_ns: u64,
        stats: &mut TickStats,
        deleted: &mut HashSet<RevKey>,
    ) -> Result<(), MapsError> {
        for e in expire {
            // Re-read right before deleting: a packet may have arrived since the
            // snapshot.
            let Some(m) = tables.fwd(&e.key)? else {
                continue;
            };
            let rev_key = e.rev_key();
            let now_obs = Observed::new(&e.key, &m, tables.rev(&rev_key)?.as_ref());
            if !Candidate::of(&e.observed).unchanged(&now_obs, &self.policy) {
                stats.refreshed += 1;
                continue;
            }
            if !tables.remove_fwd(&e.key)? {
                continue;
            }
            if let Some(r) = tables.rev(&rev_key)? {
                if r.created_ns == m.created_ns {
                    tables.free_port(&rev_key, e.key.addr_be, now_ns)?;
                }
            }
            deleted.insert(rev_key);
            stats.expired += 1;
            crate::nat_table::events::emit_mapping(
                natgw_common::maps::MappingEventKind::Expire,
                &e.key,
                &m,
                now_ns,
            );
            log::debug!(
                "mapping.expired proto={} int={} ext={} idle={} state={}",
                proto_name(e.key.proto),
                SocketAddrV4::new(ipv4(e.key.addr_be), port(e.key.port_be)),
                SocketAddrV4::new(ipv4(m.ext_addr_be), port(m.ext_port_be)),
                Secs(e.idle_ns),
                e.observed.tcp_state().map_or("-", TcpState::name),
            );
        }

        Ok(())
    }

    /// The mappings of `expire` that one batched re-read of both tables shows
    /// unchanged since they were judged, with their reverse entries; the others count
    /// as refreshed.
    fn reread_batched<T: NatTables>(
        &self,
        tables: &T,
        expire: &[Expiry],
        stats: &mut TickStats,
    ) -> Result<Vec<(Expiry, bool)>, MapsError> {
        let keys: Vec<FwdKey> = expire.iter().map(|e| e.key).collect();
        let mut confirmed = Vec::with_capacity(expire.len());
        for (e, (_, m, r)) in expire.iter().zip(read_batched(tables, &keys, true)?) {
            let Some(m) = m else {
                continue;
            };
            let now_obs = Observed::new(&e.key, &m, r.as_ref());
            if Candidate::of(&e.observed).unchanged(&now_obs, &self.policy) {
                let owns_port = r.is_some_and(|r| r.created_ns == m.created_ns);
                confirmed.push((Expiry { mapping: m, ..*e }, owns_port));
            } else {
                stats.refreshed += 1;
            }
        }
        Ok(confirmed)
    }
}

/// Deletes the mappings of `expire` (each with whether its reverse entry is its
/// own) in batches: the forward entries in `BPF_MAP_DELETE_BATCH` calls, then the
/// reverse entries of those deleted that belong to them (freed ports).
fn expire_batched<T: NatTables>(
    tables: &mut T,
    expire: &[(Expiry, bool)],
    now_ns: u64,
    stats: &mut TickStats,
    deleted: &mut HashSet<RevKey>,
) -> Result<(), MapsError> {
    let keys: Vec<FwdKey> = expire.iter().map(|(e, _)| e.key).collect();
    let removed = tables.remove_fwds(&keys)?;
    let mut ports = Vec::new();
    for ((e, owns_port), gone) in expire.iter().zip(removed) {
        if !gone {
            continue;
        }
        let rev_key = e.rev_key();
        if *owns_port {
            ports.push((rev_key, e.key.addr_be));
        }
        deleted.insert(rev_key);
        stats.expired += 1;
        crate::nat_table::events::emit_mapping(
            natgw_common::maps::MappingEventKind::Expire,
            &e.key,
            &e.mapping,
            now_ns,
        );
        log::debug!(
            "mapping.expired proto={} int={} ext={} idle={} state={}",
            proto_name(e.key.proto),
            SocketAddrV4::new(ipv4(e.key.addr_be), port(e.key.port_be)),
            SocketAddrV4::new(ipv4(e.mapping.ext_addr_be), port(e.mapping.ext_port_be)),
            Secs(e.idle_ns),
            e.observed.tcp_state().map_or("-", TcpState::name),
        );
    }
    tables.free_ports(&ports, now_ns)?;
    Ok(())
}

/// A hash map with a fast (non-cryptographic, randomly seeded) hasher: the survey
/// builds one over a million reverse entries on each pass.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

fn fast_map<K, V>(capacity: usize) -> FastMap<K, V> {
    HashMap::with_capacity_and_hasher(capacity, foldhash::fast::RandomState::default())
}

/// A mapping as one look found it: its key, its forward entry and its reverse entry
/// (`None`: not there).
type Seen = (FwdKey, Option<Mapping>, Option<RevValue>);

/// The forward entries of `keys` and (with `with_rev`) their reverse entries, from
/// one batched read of each table (forward first: the data path inserts the reverse
/// entry first, so a forward entry read finds its reverse entry in the later read). A
/// reverse entry that is a hold counts as none.
fn read_batched<T: NatTables>(
    tables: &T,
    keys: &[FwdKey],
    with_rev: bool,
) -> Result<Vec<Seen>, MapsError> {
    let mut fwd: FastMap<FwdKey, Option<Mapping>> = fast_map(keys.len());
    fwd.extend(keys.iter().map(|k| (*k, None)));
    for (k, m) in tables.fwd_entries()? {
        if let Some(slot) = fwd.get_mut(&k) {
            *slot = Some(m);
        }
    }
    let mut rev: FastMap<RevKey, Option<RevValue>> =
        fast_map(if with_rev { keys.len() } else { 0 });
    if with_rev {
        rev.extend(
            fwd.iter()
                .filter_map(|(k, m)| m.map(|m| (rev_key_of(k, &m), None))),
        );
    }
    for (k, r) in if with_rev {
        tables.rev_entries()?
    } else {
        Vec::new()
    } {
        if let Some(slot) = rev.get_mut(&k) {
            *slot = Some(r).filter(|r| !r.is_held());
        }
    }
    Ok(keys
        .iter()
        .map(|k| {
            let m = fwd.get(k).copied().flatten();
            let r = m.and_then(|m| rev.get(&rev_key_of(k, &m)).copied().flatten());
            (*k, m, r)
        })
        .collect())
}

/// Deletes the traffic mappings whose external address is `addr_be` (both entries),
/// after that address was removed from the gateway: their flows cannot continue,
/// and while the entries exist the internal endpoints' packets would keep leaving
/// from it. Their sessions follow on the next ticks (their mapping is gone).
/// Returns how many were deleted.
pub fn remove_traffic_on<T: NatTables>(tables: &mut T, addr_be: u32) -> Result<usize, MapsError> {
    let mut removed = 0;
    for (key, m) in tables.fwd_entries()? {
        if m.ext_addr_be != addr_be || m.origin != Origin::Traffic as u8 {
            continue;
        }
        if !tables.remove_fwd(&key)? {
            continue;
        }
        let rk = rev_key_of(&key, &m);
        if tables
            .rev(&rk)?
            .is_some_and(|r| r.created_ns == m.created_ns)
        {
            tables.remove_rev(&rk)?;
        }
        removed += 1;
        crate::nat_table::events::emit_mapping(
            natgw_common::maps::MappingEventKind::Delete,
            &key,
            &m,
            crate::datapath::system::monotonic_ns(),
        );
    }
    Ok(removed)
}

/// Lower-case protocol name.
#[must_use]
pub fn proto_name(proto: u8) -> String {
    match proto {
        IPPROTO_UDP => "udp".to_owned(),
        IPPROTO_TCP => "tcp".to_owned(),
        IPPROTO_ICMP => "icmp".to_owned(),
        other => format!("proto-{other}"),
    }
}

/// Nanoseconds shown as whole seconds (`301s`).
struct Secs(u64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0 / NS_PER_SEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat_table::testing::MemoryMaps;
    use natgw_common::addr_be;

    const S: u64 = NS_PER_SEC;

    fn policy(inbound_refresh: bool) -> Policy {
        Policy::new(
            &Timeouts {
                udp: 300,
                tcp_established: 7440,
                tcp_transitory: 240,
                icmp: 60,
            },
            inbound_refresh,
        )
    }

    fn obs(proto: u8, last_out: u64, last_in: u64) -> Observed {
        Observed {
            proto,
            created_ns: S,
            last_out_ns: last_out,
            last_in_ns: last_in,
            flags_out: 0,
            flags_in: 0,
            sessions_until_ns: 0,
        }
    }

    fn tcp(flags_out: u8, flags_in: u8) -> Observed {
        Observed {
            flags_out,
            flags_in,
            ..obs(IPPROTO_TCP, S, S)
        }
    }

    #[test]
    fn udp_expires_after_its_timeout_and_not_before() {
        // rfc4787 REQ-5
        let p = policy(false);
        let o = obs(IPPROTO_UDP, 100 * S, 0);
        assert!(!is_expired(&p, &o, 399 * S));
        assert!(is_expired(&p, &o, 400 * S));
        assert_eq!(remaining_ns(&p, &o, 350 * S), 50 * S);
        assert_eq!(remaining_ns(&p, &o, 500 * S), 0);
    }

    #[test]
    fn other_protocols_use_the_udp_timeout() {
        let p = policy(false);
        assert_eq!(timeout_ns(&p, &obs(47, S, 0)), 300 * S);
    }

    #[test]
    fn icmp_query_mappings_use_the_icmp_timeout() {
        // rfc5508 REQ-2
        let p = policy(false);
        let o = obs(IPPROTO_ICMP, 10 * S, 0);
        assert_eq!(timeout_ns(&p, &o), 60 * S);
        assert!(!is_expired(&p, &o, 70 * S - 1));
        assert!(is_expired(&p, &o, 70 * S));
    }

    #[test]
    fn live_sessions_keep_a_tcp_mapping_past_its_own_rule() {
        // rfc5382 REQ-5: the mapping's flags say closing (transitory), its session
        // is still half-closed (established timeout).
        use tcp_seen::{ACK, FIN, SYN};
        let p = policy(false);
        let o = tcp(SYN | ACK | FIN, SYN | ACK);
        assert!(is_expired(&p, &o, 300 * S));
        let kept = o.kept_until(1000 * S);
        assert!(!is_expired(&p, &kept, 300 * S));
        assert_eq!(remaining_ns(&p, &kept, 300 * S), 700 * S);
        assert!(is_expired(&p, &kept, 1000 * S));
        // Its own rule still wins when it is later.
        assert_eq!(
            remaining_ns(&p, &tcp(SYN | ACK, SYN | ACK).kept_until(2 * S), S),
            7440 * S
        );
    }

    #[test]
    fn tcp_mappings_are_kept_by_live_sessions_not_by_their_inbound_stamp() {
        // rfc7857: a peer's SYNs to a reset connection stamp the mapping's inbound
        // time but refresh no session; they must not keep the mapping.
        let p = policy(false);
        let o1 = Observed {
            last_in_ns: 2 * S,
            ..tcp(0, 0)
        };
        let o2 = Observed {
            last_in_ns: 3 * S,
            ..o1
        };
        assert!(Candidate::of(&o1).unchanged(&o2, &p));
        let now = o1.last_out_ns + p.tcp_transitory_ns + S;
        assert_eq!(
            judge(&p, now, Some(&Candidate::of(&o1)), &o2),
            Verdict::Delete
        );
        // A session refreshed by inbound segments keeps it.
        let kept = o2.kept_until(now + S);
        assert_eq!(
            judge(&p, now, Some(&Candidate::of(&o1)), &kept),
            Verdict::Keep
        );
    }

    #[test]
    fn tcp_is_established_only_with_syn_both_ways_and_no_fin_or_rst() {
        // rfc5382 REQ-5
        use tcp_seen::{ACK, FIN, RST, SYN};
        let p = policy(false);
        assert_eq!(tcp_state(SYN, 0), TcpState::Opening);
        assert_eq!(tcp_state(SYN | ACK, SYN | ACK), TcpState::Established);
        assert_eq!(tcp_state(SYN | ACK | FIN, SYN | ACK), TcpState::Closing);
        assert_eq!(tcp_state(SYN | ACK, SYN | ACK | RST), TcpState::Closing);
        assert_eq!(tcp_state(ACK, ACK), TcpState::Opening);
        assert_eq!(timeout_ns(&p, &tcp(SYN | ACK, SYN | ACK)), 7440 * S);
        assert_eq!(timeout_ns(&p, &tcp(SYN, 0)), 240 * S);
        assert_eq!(timeout_ns(&p, &tcp(SYN | FIN, SYN | ACK)), 240 * S);
        assert_eq!(tcp(SYN, SYN).tcp_state(), Some(TcpState::Established));
        assert_eq!(obs(IPPROTO_UDP, S, 0).tcp_state(), None);
    }

    #[test]
    fn inbound_packets_refresh_only_with_inbound_refresh() {
        // rfc4787 REQ-6
        let o = obs(IPPROTO_UDP, 100 * S, 350 * S);
        assert!(is_expired(&policy(false), &o, 400 * S));
        assert!(!is_expired(&policy(true), &o, 400 * S));
        assert_eq!(idle_ns(&policy(true), &o, 400 * S), 50 * S);
        assert_eq!(o.last_packet_ns(), 350 * S);
    }

    #[test]
    fn first_expired_tick_only_marks_a_candidate() {
        let p = policy(false);
        let o = obs(IPPROTO_UDP, S, 0);
        assert_eq!(
            judge(&p, 400 * S, None, &o),
            Verdict::Candidate(Candidate::of(&o))
        );
        assert_eq!(
            judge(&p, 401 * S, Some(&Candidate::of(&o)), &o),
            Verdict::Delete
        );
    }

    #[test]
    fn refreshed_candidate_is_spared() {
        let p = policy(false);
        let old = obs(IPPROTO_UDP, S, 0);
        let c = Candidate::of(&old);
        let refreshed = obs(IPPROTO_UDP, 400 * S, 0);
        assert_eq!(judge(&p, 401 * S, Some(&c), &refreshed), Verdict::Keep);
        // Changed but still expired (a very short timeout): re-marked, not deleted.
        let p_short = Policy { udp_ns: S, ..p };
        assert_eq!(
            judge(&p_short, 500 * S, Some(&c), &refreshed),
            Verdict::Candidate(Candidate::of(&refreshed))
        );
    }

    #[test]
    fn inbound_changes_matter_to_candidates_only_with_inbound_refresh() {
        let o1 = obs(IPPROTO_UDP, S, 2 * S);
        let o2 = obs(IPPROTO_UDP, S, 3 * S);
        let c = Candidate::of(&o1);
        assert!(c.unchanged(&o2, &policy(false)));
        assert!(!c.unchanged(&o2, &policy(true)));
        // A recreated mapping (new identity) is never the same candidate.
        let recreated = Observed {
            created_ns: 9 * S,
            ..o1
        };
        assert!(!c.unchanged(&recreated, &policy(false)));
    }

    fn udp_key(host: u8, port: u16) -> FwdKey {
        FwdKey::new(addr_be([10, 0, 1, host]), port.to_be(), IPPROTO_UDP)
    }

    /// Inserts a complete mapping (both halves) created and last used at `t`.
    fn add(t: &mut MemoryMaps, key: FwdKey, ext_port: u16, created: u64) -> RevKey {
        let m = Mapping {
            ext_addr_be: addr_be([192, 0, 2, 1]),
            ext_port_be: ext_port.to_be(),
            created_ns: created,
            last_out_ns: created,
            ..Mapping::default()
        };
        let rk = rev_key_of(&key, &m);
        t.fwd.insert(key, m);
        t.rev.insert(
            rk,
            RevValue {
                int_addr_be: key.addr_be,
                int_port_be: key.port_be,
                created_ns: created,
                ..RevValue::default()
            },
        );
        rk
    }

    #[test]
    fn tick_deletes_both_halves_on_the_second_expired_tick() {
        let mut t = MemoryMaps::default();
        let k = udp_key(2, 40000);
        let rk = add(&mut t, k, 40000, S);
        let keep = udp_key(3, 40001);
        add(&mut t, keep, 40001, 200 * S);
        let mut gc = Sweeper::new(policy(false));

        let s = gc.tick(&mut t, 302 * S).unwrap();
        assert_eq!((s.expired, s.candidates), (0, 1));
        assert!(t.fwd.contains_key(&k));

        let s = gc.tick(&mut t, 303 * S).unwrap();
        assert_eq!(s.expired, 1);
        assert!(!t.fwd.contains_key(&k));
        assert!(!t.rev.contains_key(&rk));
        assert!(t.fwd.contains_key(&keep));
        assert_eq!(t.rev.len(), 1);
    }

    #[test]
    fn an_expired_mapping_leaves_a_hold_that_ends_after_the_hold_down() {
        // rfc6888 REQ-8: the port stays claimed, by a hold naming its host, then goes.
        let mut t = MemoryMaps {
            holding: true,
            ..MemoryMaps::default()
        };
        let k = udp_key(2, 40000);
        let rk = add(&mut t, k, 40000, S);
        let mut gc = Sweeper::new(policy(false).with_hold_down(120));
        gc.tick(&mut t, 302 * S).unwrap();
        let s = gc.tick(&mut t, 303 * S).unwrap();
        assert_eq!(s.expired, 1);
        assert!(!t.fwd.contains_key(&k));
        assert_eq!(t.rev[&rk], RevValue::held(k.addr_be, 303 * S));
        // A hold is no orphan, and it owns no session: it stays for the hold-down.
        let s = gc.tick(&mut t, 303 * S + ORPHAN_GRACE_NS * 3).unwrap();
        assert_eq!((s.orphans, s.held, s.holds_ended), (0, 1, 0));
        let s = gc.tick(&mut t, 422 * S).unwrap();
        assert_eq!((s.held, s.holds_ended), (1, 0), "119 s in");
        let s = gc.tick(&mut t, 423 * S).unwrap();
        assert_eq!((s.held, s.holds_ended), (0, 1), "120 s in");
        assert!(!t.rev.contains_key(&rk));
        // rfc6888 REQ-4: the controller's deletion counts as released for the host.
        assert_eq!(t.released[&k.addr_be].released[0], 1);
    }

    #[test]
    fn a_hold_the_host_took_back_is_not_deleted() {
        // rfc6888 REQ-8: the same host may have its port again at once.
        let mut t = MemoryMaps {
            holding: true,
            ..MemoryMaps::default()
        };
        let k = udp_key(2, 40000);
        let rk = add(&mut t, k, 40000, S);
        let mut gc = Sweeper::new(policy(false).with_hold_down(120));
        gc.tick(&mut t, 302 * S).unwrap();
        gc.tick(&mut t, 303 * S).unwrap();
        assert!(t.rev[&rk].is_held());
        // The data path deletes the host's own hold and claims the port afresh.
        add(&mut t, k, 40000, 400 * S);
        let s = gc.tick(&mut t, 430 * S).unwrap();
        assert_eq!((s.held, s.holds_ended, s.expired), (0, 0, 0));
        assert!(t.fwd.contains_key(&k) && !t.rev[&rk].is_held());
    }

    #[test]
    fn packet_between_ticks_saves_the_mapping() {
        let mut t = MemoryMaps::default();
        let k = udp_key(2, 40000);
        add(&mut t, k, 40000, S);
        let mut gc = Sweeper::new(policy(false));
        gc.tick(&mut t, 302 * S).unwrap();
        t.fwd.get_mut(&k).unwrap().last_out_ns = 302 * S;
        let s = gc.tick(&mut t, 303 * S).unwrap();
        assert_eq!((s.expired, s.candidates), (0, 0));
        assert!(t.fwd.contains_key(&k));
    }

    #[test]
    fn packet_racing_the_delete_saves_the_mapping() {
        let mut t = MemoryMaps::default();
        let k = udp_key(2, 40000);
        add(&mut t, k, 40000, S);
        let mut gc = Sweeper::new(policy(false));
        gc.tick(&mut t, 302 * S).unwrap();
        // The snapshot still shows the old time; the re-read shows the new one.
        t.fwd_race = Some((k, 303 * S));
        let s = gc.tick(&mut t, 303 * S).unwrap();
        assert_eq!((s.expired, s.refreshed), (0, 1));
        assert!(t.fwd.contains_key(&k));
    }

    #[test]
    fn reverse_entry_of_a_newer_mapping_is_kept() {
        let mut t = MemoryMaps::default();
        let k = udp_key(2, 40000);
        let rk = add(&mut t, k, 40000, S);
        // The external port was claimed again by a newer mapping of another host.
        let newer = udp_key(3, 41000);
        let m = t.fwd[&k];
        t.fwd.insert(
            newer,
            Mapping {
                created_ns: 250 * S,
                last_out_ns: 250 * S,
                ..m
            },
        );
        t.rev.insert(
            rk,
            RevValue {
                int_addr_be: newer.addr_be,
                int_port_be: newer.port_be,
                created_ns: 250 * S,
                ..RevValue::default()
            },
        );
        let mut gc = Sweeper::new(policy(false));
        gc.tick(&mut t, 302 * S).unwrap();
        let s = gc.tick(&mut t, 303 * S).unwrap();
        assert_eq!(s.expired, 1);
        assert!(!t.fwd.contains_key(&k));
        assert!(t.rev.contains_key(&rk), "newer claim must survive");
    }

    #[test]
    fn orphans_go_after_the_grace_period_and_two_sightings() {
        let mut t = MemoryMaps::default();
        let k = udp_key(2, 40000);
        let rk = add(&mut t, k, 40000, 100 * S);
        t.fwd.remove(&k);
        let mut gc = Sweeper::new(policy(false));
        // Young: inside the grace period, the data path may still be inserting.
        gc.tick(&mut t, 100 * S + ORPHAN_GRACE_NS - 1).unwrap();
        let s = gc.tick(&mut t, 100 * S + ORPHAN_GRACE_NS).unwrap();
        assert_eq!(s.orphans, 0, "first sighting after grace only marks it");
        let s = gc.tick(&mut t, 101 * S + ORPHAN_GRACE_NS).unwrap();
        assert_eq!(s.orphans, 1);
        assert!(!t.rev.contains_key(&rk));
    }

    #[test]
    fn owned_reverse_entries_are_not_orphans() {
        let mut t = MemoryMaps::default();
        let k = udp_key(2, 40000);
        add(&mut t, k, 40000, S);
        let mut gc = Sweeper::new(policy(false));
        for i in 0..3 {
            let s = gc.tick(&mut t, (20 + i) * S).unwrap();
            assert_eq!(s.orphans, 0);
        }
        assert_eq!(t.rev.len(), 1);
    }

    #[test]
    fn mapping_without_reverse_entry_ages_on_outbound_time() {
        let mut t = MemoryMaps::default();
        let k = udp_key(2, 40000);
        let rk = add(&mut t, k, 40000, S);
        t.rev.remove(&rk);
        let mut gc = Sweeper::new(policy(true));
        gc.tick(&mut t, 302 * S).unwrap();
        assert_eq!(gc.tick(&mut t, 303 * S).unwrap().expired, 1);
    }

    /// Inserts a session of the mapping with reverse key `rk` with a remote port.
    fn add_session(
        t: &mut MemoryMaps,
        rk: RevKey,
        remote_port: u16,
        last_out: u64,
        last_in: u64,
        state: natgw_common::tcp::TcpState,
    ) -> SessionKey {
        let key = SessionKey::new(
            rk.addr_be,
            addr_be([198, 51, 100, 2]),
            rk.port_be,
            remote_port.to_be(),
            rk.proto,
        );
        t.sessions
            .insert(key, Session::new(S, last_out, last_in, state as u8));
        key
    }

    fn tcp_key(port: u16) -> FwdKey {
        FwdKey {
            proto: IPPROTO_TCP,
            ..udp_key(2, port)
        }
    }

    #[test]
    fn tcp_mapping_with_a_live_session_is_kept() {
        // rfc5382 REQ-5: an established connection busy only inbound.
        use natgw_common::tcp::TcpState as T;
        let mut t = MemoryMaps::default();
        let k = tcp_key(40000);
        let rk = add(&mut t, k, 40000, S);
        t.fwd.get_mut(&k).unwrap().tcp_flags_out = tcp_seen::SYN;
        let sk = add_session(&mut t, rk, 80, S, 200 * S, T::Established);
        let mut gc = Sweeper::new(policy(false));
        for now in [300, 301, 302, 7000] {
            let s = gc.tick(&mut t, now * S).unwrap();
            assert_eq!((s.expired, s.candidates, s.sessions_expired), (0, 0, 0));
        }
        // Once the session is idle past the established timeout both go, the
        // session with its mapping in the same tick.
        gc.tick(&mut t, 7640 * S).unwrap();
        let s = gc.tick(&mut t, 7641 * S).unwrap();
        assert_eq!((s.expired, s.sessions_expired), (1, 1));
        assert!(!t.fwd.contains_key(&k));
        assert!(!t.sessions.contains_key(&sk));
    }

    #[test]
    fn closed_tcp_session_no_longer_keeps_its_mapping() {
        use natgw_common::tcp::TcpState as T;
        let mut t = MemoryMaps::default();
        let k = tcp_key(40000);
        let rk = add(&mut t, k, 40000, S);
        t.fwd.get_mut(&k).unwrap().tcp_flags_out = tcp_seen::SYN | tcp_seen::FIN;
        add_session(&mut t, rk, 80, S, 10 * S, T::BothFin);
        let mut gc = Sweeper::new(policy(false));
        assert_eq!(gc.tick(&mut t, 250 * S).unwrap().candidates, 1);
        let s = gc.tick(&mut t, 251 * S).unwrap();
        assert_eq!((s.expired, s.sessions_expired), (1, 1));
        assert!(t.sessions.is_empty());
    }

    #[test]
    fn sessions_of_a_deleted_mapping_go_in_the_same_tick() {
        use natgw_common::tcp::TcpState as T;
        let mut t = MemoryMaps::default();
        let k = udp_key(2, 40000);
        let rk = add(&mut t, k, 40000, S);
        // A session that is not idle itself (it cannot happen with real UDP traffic,
        // where each outbound packet refreshes both; here it shows the rule).
        add_session(&mut t, rk, 7000, 250 * S, 0, T::Closed);
        let mut gc = Sweeper::new(policy(false));
        gc.tick(&mut t, 302 * S).unwrap();
        assert_eq!(t.sessions.len(), 1);
        let s = gc.tick(&mut t, 303 * S).unwrap();
        assert_eq!((s.expired, s.sessions_expired), (1, 1));
        assert!(t.sessions.is_empty());
    }

    #[test]
    fn session_of_a_spared_mapping_stays() {
        use natgw_common::tcp::TcpState as T;
        let mut t = MemoryMaps::default();
        let k = udp_key(2, 40000);
        let rk = add(&mut t, k, 40000, S);
        add_session(&mut t, rk, 7000, 250 * S, 0, T::Closed);
        let mut gc = Sweeper::new(policy(false));
        gc.tick(&mut t, 302 * S).unwrap();
        t.fwd_race = Some((k, 303 * S));
        let s = gc.tick(&mut t, 303 * S).unwrap();
        assert_eq!((s.expired, s.refreshed, s.sessions_expired), (0, 1, 0));
        assert_eq!(t.sessions.len(), 1);
    }

    #[test]
    fn session_without_a_mapping_goes_on_the_second_tick() {
        use natgw_common::tcp::TcpState as T;
        let mut t = MemoryMaps::default();
        let rk = RevKey::new(addr_be([192, 0, 2, 1]), 40000u16.to_be(), IPPROTO_UDP);
        let sk = add_session(&mut t, rk, 7000, 10 * S, 0, T::Closed);
        let mut gc = Sweeper::new(policy(false));
        assert_eq!(gc.tick(&mut t, 11 * S).unwrap().sessions_expired, 0);
        assert!(t.sessions.contains_key(&sk));
        assert_eq!(gc.tick(&mut t, 12 * S).unwrap().sessions_expired, 1);
        assert!(!t.sessions.contains_key(&sk));
    }

    #[test]
    fn idle_session_of_a_live_mapping_goes_and_a_racing_packet_saves_it() {
        // rfc4787 REQ-5 for the filter state of an APDF mapping.
        use natgw_common::tcp::TcpState as T;
        let mut t = MemoryMaps::default();
        let k = udp_key(2, 40000);
        let rk = add(&mut t, k, 40000, S);
        t.fwd.get_mut(&k).unwrap().last_out_ns = 300 * S;
        let old = add_session(&mut t, rk, 7000, 10 * S, 0, T::Closed);
        let racing = add_session(&mut t, rk, 7001, 10 * S, 0, T::Closed);
        let mut gc = Sweeper::new(policy(false));
        gc.tick(&mut t, 310 * S).unwrap();
        t.session_race = Some((racing, 311 * S));
        let s = gc.tick(&mut t, 311 * S).unwrap();
        assert_eq!((s.expired, s.sessions_expired), (0, 1));
        assert!(!t.sessions.contains_key(&old));
        assert!(t.sessions.contains_key(&racing));
        assert!(t.fwd.contains_key(&k));
    }

    #[test]
    fn explicit_mappings_are_left_to_their_holder() {
        // PCP, NAT-PMP and static mappings live by their granted lifetime, not idle.
        let mut t = MemoryMaps::default();
        let pcp = udp_key(2, 5000);
        add(&mut t, pcp, 5000, S);
        t.fwd.get_mut(&pcp).unwrap().origin = Origin::Pcp as u8;
        let idle = udp_key(3, 5001);
        add(&mut t, idle, 5001, S);
        let mut gc = Sweeper::new(policy(false));
        gc.tick(&mut t, 1000 * S).unwrap();
        let s = gc.tick(&mut t, 1001 * S).unwrap();
        assert_eq!(s.expired, 1);
        assert!(t.fwd.contains_key(&pcp) && !t.fwd.contains_key(&idle));
        assert_eq!(t.rev.len(), 1, "its claim stays too");
    }

    #[test]
    fn a_lost_address_takes_its_traffic_mappings_along() {
        let mut t = MemoryMaps::default();
        let old = udp_key(2, 40000);
        add(&mut t, old, 40000, S);
        let forward = udp_key(3, 80);
        add(&mut t, forward, 8080, S);
        t.fwd.get_mut(&forward).unwrap().origin = Origin::Static as u8;
        assert_eq!(
            remove_traffic_on(&mut t, addr_be([192, 0, 2, 9])).unwrap(),
            0
        );
        assert_eq!(
            remove_traffic_on(&mut t, addr_be([192, 0, 2, 1])).unwrap(),
            1
        );
        assert!(!t.fwd.contains_key(&old) && t.fwd.contains_key(&forward));
        assert_eq!(t.rev.len(), 1);
    }

    /// A collector surveying every 100 s, ticking every second.
    fn scheduled(policy: Policy) -> Sweeper {
        Sweeper::new(policy).scheduled(Cadence::Fixed(100 * S), S)
    }

    #[test]
    fn between_surveys_a_due_mapping_goes_in_two_looks_and_the_rest_waits() {
        let mut t = MemoryMaps::default();
        let old = udp_key(2, 40000);
        let old_rk = add(&mut t, old, 40000, S);
        let young = udp_key(3, 40001);
        add(&mut t, young, 40001, 200 * S);
        let mut gc = scheduled(policy(false));
        // The survey finds `old` expired (a candidate) and schedules both.
        let s = gc.tick(&mut t, 302 * S).unwrap();
        assert!(s.survey);
        assert_eq!((s.expired, s.candidates), (0, 1));
        assert_eq!(gc.scheduled_len(), 2);
        assert_eq!(gc.next_due_ns(), Some(303 * S));
        // One tick later, a look at `old` alone deletes both its halves.
        let s = gc.tick(&mut t, 303 * S).unwrap();
        assert!(!s.survey);
        assert_eq!((s.mappings, s.expired), (1, 1));
        assert!(!t.fwd.contains_key(&old) && !t.rev.contains_key(&old_rk));
        // rfc6888 REQ-4: released for its host like any deletion.
        assert_eq!(t.released[&old.addr_be].released[0], 1);
        // Nothing else is due until `young` expires at 500 s (looked at the guard
        // later, not a whole tick).
        assert_eq!(gc.next_due_ns(), Some(500 * S + CONFIRM_GUARD_NS));
        let s = gc.tick(&mut t, 304 * S).unwrap();
        assert_eq!((s.mappings, s.expired), (0, 0));
        assert!(t.fwd.contains_key(&young));
    }

    #[test]
    fn a_refreshed_mapping_goes_back_into_the_schedule_at_its_new_deadline() {
        // rfc4787 REQ-5: it expires 300 s after its last outbound packet; the survey's
        // look is the first phase, the look the guard past the deadline the second.
        const G: u64 = CONFIRM_GUARD_NS;
        let mut t = MemoryMaps::default();
        let k = udp_key(2, 40000);
        add(&mut t, k, 40000, 100 * S);
        let mut gc = Sweeper::new(policy(false)).scheduled(Cadence::Fixed(10_000 * S), S);
        gc.tick(&mut t, 101 * S).unwrap();
        assert_eq!(gc.next_due_ns(), Some(400 * S + G));
        t.fwd.get_mut(&k).unwrap().last_out_ns = 350 * S;
        let s = gc.tick(&mut t, 400 * S + G).unwrap();
        assert_eq!((s.mappings, s.expired), (1, 0));
        assert_eq!(gc.next_due_ns(), Some(650 * S + G));
        // A packet right before the second look saves it again.
        t.fwd.get_mut(&k).unwrap().last_out_ns = 650 * S;
        assert_eq!(gc.tick(&mut t, 650 * S + G).unwrap().expired, 0);
        assert_eq!(gc.next_due_ns(), Some(950 * S + G));
        // Never at the deadline itself; unchanged since, and expired for the guard:
        // it goes.
        assert_eq!(gc.tick(&mut t, 950 * S + G - 1).unwrap().mappings, 0);
        assert_eq!(gc.tick(&mut t, 950 * S + G).unwrap().expired, 1);
        assert!(t.fwd.is_empty() && t.rev.is_empty());
    }

    #[test]
    fn a_packet_seen_by_the_scheduled_look_saves_the_mapping() {
        let mut t = MemoryMaps::default();
        let k = udp_key(2, 40000);
        add(&mut t, k, 40000, S);
        let mut gc = Sweeper::new(policy(false)).scheduled(Cadence::Fixed(10_000 * S), S);
        gc.tick(&mut t, 2 * S).unwrap();
        // The snapshot would show the old stamp; the look reads the new one.
        t.fwd_race = Some((k, 302 * S));
        let s = gc.tick(&mut t, 302 * S).unwrap();
        assert_eq!((s.mappings, s.expired), (1, 0));
        assert!(t.fwd.contains_key(&k));
        assert_eq!(gc.next_due_ns(), Some(602 * S + CONFIRM_GUARD_NS));
    }

    #[test]
    fn tcp_mappings_and_mappings_with_sessions_wait_for_the_survey() {
        use natgw_common::tcp::TcpState as T;
        let mut t = MemoryMaps::default();
        let tcp = tcp_key(40000);
        add(&mut t, tcp, 40000, S);
        let apdf = udp_key(3, 40001);
        let rk = add(&mut t, apdf, 40001, S);
        add_session(&mut t, rk, 7000, S, 0, T::Closed);
        let mut gc = scheduled(policy(false));
        assert_eq!(gc.tick(&mut t, 10 * S).unwrap().candidates, 0);
        assert_eq!(gc.scheduled_len(), 0, "neither is judged between surveys");
        for now in 11..110 {
            let s = gc.tick(&mut t, now * S).unwrap();
            assert_eq!((s.survey, s.expired), (now == 110, 0));
        }
        // The surveys expire them by the full rules, sessions with their mapping.
        gc.tick(&mut t, 310 * S).unwrap();
        gc.set_policy(policy(false)); // a reload: the next tick surveys
        let s = gc.tick(&mut t, 311 * S).unwrap();
        assert!(s.survey);
        assert_eq!((s.expired, s.sessions_expired), (2, 1));
        assert!(t.fwd.is_empty() && t.sessions.is_empty());
    }

    #[test]
    fn a_mapping_created_after_a_survey_is_scheduled_by_the_next() {
        let mut t = MemoryMaps::default();
        let mut gc = scheduled(policy(false));
        gc.tick(&mut t, 10 * S).unwrap();
        let k = udp_key(2, 40000);
        add(&mut t, k, 40000, 20 * S);
        assert_eq!(gc.tick(&mut t, 21 * S).unwrap().mappings, 0);
        assert_eq!(gc.next_due_ns(), None, "not seen yet");
        let s = gc.tick(&mut t, 110 * S).unwrap();
        assert!(s.survey);
        assert_eq!(gc.next_due_ns(), Some(320 * S + CONFIRM_GUARD_NS));
        assert!(!gc.tick(&mut t, 209 * S).unwrap().survey);
        assert!(gc.tick(&mut t, 210 * S).unwrap().survey);
        assert_eq!(gc.next_due_ns(), Some(320 * S + CONFIRM_GUARD_NS));
        assert!(gc.tick(&mut t, 319 * S).unwrap().survey);
        assert_eq!(gc.tick(&mut t, 320 * S).unwrap().expired, 0);
        assert_eq!(
            gc.tick(&mut t, 320 * S + CONFIRM_GUARD_NS).unwrap().expired,
            1
        );
    }

    #[test]
    fn many_due_mappings_are_read_and_deleted_in_batches() {
        let n = u16::try_from(BATCH_READ_MIN).unwrap() + 100;
        let mut t = MemoryMaps {
            holding: true,
            ..MemoryMaps::default()
        };
        let keys: Vec<FwdKey> = (0..n)
            .map(|i| {
                let k = FwdKey::new(
                    addr_be([10, 0, 2, (i % 200) as u8]),
                    (1000 + i).to_be(),
                    IPPROTO_UDP,
                );
                add(&mut t, k, 20000 + i, S);
                k
            })
            .collect();
        let mut gc = Sweeper::new(policy(false).with_hold_down(120))
            .scheduled(Cadence::Fixed(10_000 * S), S);
        gc.tick(&mut t, 2 * S).unwrap();
        assert_eq!(gc.scheduled_len(), usize::from(n));
        assert_eq!(gc.tick(&mut t, 301 * S).unwrap().mappings, 0);
        // One is refreshed before the look, one deleted by someone else.
        t.fwd.get_mut(&keys[0]).unwrap().last_out_ns = 301 * S;
        t.fwd.remove(&keys[1]);
        let s = gc.tick(&mut t, 302 * S).unwrap();
        assert!(!s.survey);
        assert_eq!(
            (s.mappings, s.expired),
            (usize::from(n), usize::from(n) - 2)
        );
        assert_eq!(t.fwd.len(), 1);
        // Their ports are held (rfc6888 REQ-8), the refreshed mapping's is its own.
        assert_eq!(
            t.rev.values().filter(|r| r.is_held()).count(),
            usize::from(n) - 2
        );
        let released: u64 = t.released.values().map(|r| r.released[0]).sum();
        assert_eq!(released, u64::from(n) - 2);
        assert_eq!(gc.next_due_ns(), Some(601 * S + CONFIRM_GUARD_NS));
    }

    #[test]
    fn a_probe_schedules_new_udp_mappings_and_surveys_for_what_it_cannot_judge() {
        let mut t = MemoryMaps::default();
        for i in 0..3 {
            add(&mut t, udp_key(2, 40000 + i), 40000 + i, S);
        }
        let mut gc = Sweeper::new(policy(false)).scheduled(Cadence::Fixed(10_000 * S), S);
        let s = gc.tick(&mut t, 10 * S).unwrap();
        assert_eq!(s.reason, Some(SurveyReason::Start));
        // Nothing changed: the probe passes, the census is recounted.
        assert_eq!(gc.probe(&mut t, 20 * S).unwrap(), None);
        assert_eq!(gc.census().mappings.values().sum::<u64>(), 3);
        // A mapping created since the last look, and one written with an old stamp
        // the survey did not see (a table being filled): the probe schedules both.
        let late = udp_key(3, 40100);
        add(&mut t, late, 40100, 25 * S);
        let back = udp_key(4, 40200);
        add(&mut t, back, 40200, S);
        assert_eq!(gc.probe(&mut t, 30 * S).unwrap(), None);
        assert_eq!(gc.scheduled_len(), 5);
        assert_eq!(gc.census().mappings.values().sum::<u64>(), 5);
        // One deleted behind the collector's back: a survey.
        let first = udp_key(2, 40000);
        let m = t.fwd.remove(&first).unwrap();
        assert_eq!(
            gc.probe(&mut t, 40 * S).unwrap(),
            Some(SurveyReason::ProbeCounts)
        );
        // One replaced behind its back (another `created_ns`): a survey too.
        t.fwd.insert(
            first,
            Mapping {
                created_ns: 35 * S,
                ..m
            },
        );
        assert_eq!(
            gc.probe(&mut t, 40 * S).unwrap(),
            Some(SurveyReason::ProbeCounts)
        );
        t.fwd.insert(first, m);
        assert_eq!(gc.probe(&mut t, 40 * S).unwrap(), None);
        // A new TCP mapping, or a new UDP mapping with a session: a survey judges them.
        let tcp = tcp_key(40300);
        let tcp_rk = add(&mut t, tcp, 40300, 41 * S);
        assert_eq!(
            gc.probe(&mut t, 50 * S).unwrap(),
            Some(SurveyReason::ProbeNew)
        );
        t.fwd.remove(&tcp);
        t.rev.remove(&tcp_rk);
        let filtered = udp_key(5, 40400);
        let rk = add(&mut t, filtered, 40400, 42 * S);
        let sk = add_session(
            &mut t,
            rk,
            7000,
            42 * S,
            0,
            natgw_common::tcp::TcpState::Closed,
        );
        t.sessions.get_mut(&sk).unwrap().created_ns = 42 * S;
        assert_eq!(
            gc.probe(&mut t, 50 * S).unwrap(),
            Some(SurveyReason::ProbeNew)
        );
        t.fwd.remove(&filtered);
        t.rev.remove(&rk);
        t.sessions.clear();
        assert_eq!(gc.probe(&mut t, 50 * S).unwrap(), None);
        // What the probe scheduled expires by the schedule, with no survey between:
        // the four stamped 1 s at 301 s (and the guard), `late` at 325 s.
        assert_eq!(gc.next_due_ns(), Some(301 * S + CONFIRM_GUARD_NS));
        let s = gc.tick(&mut t, 302 * S).unwrap();
        assert_eq!((s.survey, s.expired), (false, 4));
        assert!(t.fwd.contains_key(&late));
        assert_eq!(gc.tick(&mut t, 324 * S).unwrap().expired, 0);
        let s = gc.tick(&mut t, 326 * S).unwrap();
        assert_eq!((s.survey, s.expired), (false, 1));
        assert!(t.fwd.is_empty());
        // The next probe finds what it expects.
        assert_eq!(gc.probe(&mut t, 330 * S).unwrap(), None);
    }

    #[test]
    fn a_probe_finds_the_owners_of_reverse_entries_in_their_grace() {
        let mut t = MemoryMaps::default();
        for i in 0..2 {
            add(&mut t, udp_key(2, 40000 + i), 40000 + i, S);
        }
        // The port claim of a mapping being created: its forward entry comes later.
        let coming = udp_key(3, 40100);
        let rk = add(&mut t, coming, 40100, 9 * S);
        let m = t.fwd.remove(&coming).unwrap();
        let mut gc = Sweeper::new(policy(false)).scheduled(Cadence::Fixed(10_000 * S), S);
        let plan = gc.plan(
            10 * S,
            &t.fwd_entries().unwrap(),
            &t.rev_entries().unwrap(),
            &[],
        );
        assert_eq!(plan.in_grace.len(), 1);
        assert_eq!(plan.survey_by_rest, None);
        assert_eq!(
            (plan.survey_by_ns, plan.survey_by_why),
            (Some(9 * S + ORPHAN_GRACE_NS), Some(Due::OrphanGrace))
        );
        // As an adaptive collector leaves it after a survey at 10 s that allows the
        // next at 60 s: the survey for the grace's end (19 s) no sooner than the
        // probe (half the 60 s ICMP timeout later, 40 s).
        gc.tick(&mut t, 10 * S).unwrap();
        gc.pending.after_survey(10 * S, 50 * S, &gc.policy.clone());
        (gc.next_survey_ns, gc.next_survey_reason) = gc.pending.next_survey();
        assert_eq!(
            (gc.next_survey_ns, gc.next_survey_reason),
            (40 * S, SurveyReason::Due(Due::OrphanGrace))
        );
        gc.next_probe_ns = Some(40 * S);
        // The forward entry arrived: the tick at the grace's end probes, finds it,
        // schedules it, and the survey waits for its period.
        t.fwd.insert(coming, m);
        let s = gc.tick(&mut t, 40 * S).unwrap();
        assert_eq!((s.survey, s.probe, s.orphans), (false, true, 0));
        assert_eq!(
            (gc.next_survey_ns, gc.next_survey_reason),
            (60 * S, SurveyReason::Period)
        );
        assert_eq!(gc.scheduled_len(), 3);
        assert!(t.rev.contains_key(&rk));

        // A port claim whose forward entry never comes: the survey at its grace's end.
        let lost = udp_key(4, 40200);
        add(&mut t, lost, 40200, 58 * S);
        t.fwd.remove(&lost);
        let s = gc.tick(&mut t, 60 * S).unwrap();
        assert_eq!(s.reason, Some(SurveyReason::Period));
        assert_eq!(gc.pending.grace.len(), 1);
        gc.pending.after_survey(60 * S, 50 * S, &gc.policy.clone());
        (gc.next_survey_ns, gc.next_survey_reason) = gc.pending.next_survey();
        gc.next_probe_ns = Some(61 * S);
        assert_eq!(
            gc.probe(&mut t, 61 * S).unwrap(),
            None,
            "still in its grace"
        );
        assert_eq!(gc.next_survey_ns, 90 * S);
        let s = gc.tick(&mut t, 90 * S).unwrap();
        assert_eq!(s.reason, Some(SurveyReason::Due(Due::OrphanGrace)));
    }

    #[test]
    fn the_next_survey_comes_by_the_time_what_only_a_survey_judges_is_due() {
        use natgw_common::tcp::TcpState as T;
        use tcp_seen::{ACK, SYN};
        let p = policy(false).with_hold_down(120);
        let mut gc = Sweeper::new(p);
        let mut t = MemoryMaps::default();
        // UDP mappings alone: all in the schedule, no survey needed.
        add(&mut t, udp_key(2, 40000), 40000, S);
        let fwd: Vec<_> = t.fwd.iter().map(|(k, m)| (*k, *m)).collect();
        let rev: Vec<_> = t.rev.iter().map(|(k, r)| (*k, *r)).collect();
        let plan = gc.plan(2 * S, &fwd, &rev, &[]);
        assert_eq!((plan.survey_by_ns, plan.schedule.len()), (None, 1));
        // An established TCP mapping counts as if its next packet were a FIN: by its
        // last packet plus the transitory timeout (rfc5382 REQ-5).
        let tk = tcp_key(40001);
        add(&mut t, tk, 40001, S);
        let m = t.fwd.get_mut(&tk).unwrap();
        m.tcp_flags_out = SYN | ACK;
        m.last_out_ns = 100 * S;
        let trk = rev_key_of(&tk, m);
        t.rev.get_mut(&trk).unwrap().tcp_flags_in = SYN | ACK;
        let fwd: Vec<_> = t.fwd.iter().map(|(k, m)| (*k, *m)).collect();
        let rev: Vec<_> = t.rev.iter().map(|(k, r)| (*k, *r)).collect();
        let plan = gc.plan(200 * S, &fwd, &rev, &[]);
        assert_eq!(plan.survey_by_ns, Some(340 * S));
        // A session, the same.
        let sk = add_session(&mut t, trk, 7000, 150 * S, 0, T::Established);
        let sessions = [(sk, t.sessions[&sk])];
        let plan = gc.plan(200 * S, &fwd, &rev, &sessions);
        assert_eq!(plan.survey_by_ns, Some(340 * S));
        // A hold ends 120 s after the port was freed (rfc6888 REQ-8); an orphan is
        // looked at after its grace.
        let hold = RevKey::new(addr_be([192, 0, 2, 1]), 5000u16.to_be(), IPPROTO_UDP);
        let orphan = RevKey::new(addr_be([192, 0, 2, 1]), 5001u16.to_be(), IPPROTO_UDP);
        let mut rev2 = rev.clone();
        rev2.push((hold, RevValue::held(addr_be([10, 0, 2, 9]), 195 * S)));
        rev2.push((
            orphan,
            RevValue {
                int_addr_be: addr_be([10, 0, 2, 9]),
                int_port_be: 9u16.to_be(),
                created_ns: 195 * S,
                ..RevValue::default()
            },
        ));
        let plan = gc.plan(200 * S, &fwd, &rev2, &sessions);
        assert_eq!(plan.survey_by_ns, Some(195 * S + ORPHAN_GRACE_NS));
        rev2.pop();
        let plan = gc.plan(200 * S, &fwd, &rev2, &sessions);
        assert_eq!(plan.survey_by_ns, Some(315 * S));
    }

    #[test]
    fn probes_come_every_half_shortest_timeout_and_surveys_when_due() {
        let gc = Sweeper::new(policy(false)).scheduled(Cadence::Adaptive, S);
        // Surveys cheap enough to come before a probe would: no probes.
        assert_eq!(
            gc.next_looks(100 * S, 20 * S, None),
            (120 * S, None, SurveyReason::Period)
        );
        assert_eq!(
            gc.next_looks(100 * S, 0, None),
            (100 * S, None, SurveyReason::EveryTick)
        );
        // Costly ones: a probe every 30 s (half the 60 s ICMP timeout), the survey by
        // its period…
        assert_eq!(
            gc.next_looks(100 * S, 60 * S, None),
            (160 * S, Some(130 * S), SurveyReason::Period)
        );
        // …or when something only it judges is due, never sooner than the probe.
        assert_eq!(
            gc.next_looks(100 * S, 60 * S, Some((140 * S, Due::Hold))),
            (140 * S, Some(130 * S), SurveyReason::Due(Due::Hold))
        );
        assert_eq!(
            gc.next_looks(100 * S, 60 * S, Some((101 * S, Due::OrphanGrace))),
            (130 * S, Some(130 * S), SurveyReason::Due(Due::OrphanGrace))
        );
        assert_eq!(
            gc.next_looks(100 * S, 60 * S, Some((170 * S, Due::Session))),
            (160 * S, Some(130 * S), SurveyReason::Period)
        );
    }

    #[test]
    fn expiry_log_line_has_structured_fields() {
        assert_eq!(Secs(301 * S + 5).to_string(), "301s");
        assert_eq!(proto_name(17), "udp");
        assert_eq!(proto_name(6), "tcp");
        assert_eq!(proto_name(1), "icmp");
        assert_eq!(proto_name(132), "proto-132");
    }
}
