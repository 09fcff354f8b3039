//! Expiry of sessions (`NAT_SESSIONS`): what a mapping has exchanged with one remote
//! endpoint. The data path creates them for every TCP mapping (their state picks the
//! timeout) and for UDP and ICMP mappings with address-dependent or
//! address-and-port-dependent filtering (they are the filter).
//!
//! A session dies when
//! - its mapping is gone: no `NAT_REV` entry for its (protocol, external endpoint),
//!   or only one created after the session last saw a packet (a newer mapping of the
//!   same external port must not inherit an older mapping's permissions); or
//! - it is idle past its timeout: UDP and other protocols the UDP timeout and ICMP
//!   the ICMP timeout, since the last outbound packet (or the last packet either way
//!   with inbound refresh), like their mappings; TCP the established or transitory
//!   timeout of its [`TcpState`]'s [`TimeoutClass`], since the last packet either
//!   way (RFC 5382 REQ-5 speaks of idle connections, whichever side is quiet).
//!
//! Deletion is two-phase like the mappings': a session found dead is only
//! remembered ([`SessionCandidate`]) and deleted on the next tick if its timestamps
//! did not move. The sessions of a mapping the collector deletes go in the same tick,
//! right after it, unless one was touched meanwhile.

use natgw_common::maps::{Session, SessionKey};
use natgw_common::tcp::{TcpState, TimeoutClass};
use natgw_common::{RevValue, IPPROTO_ICMP, IPPROTO_TCP};

use super::Policy;

/// What the map says about one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionObserved {
    /// IP protocol.
    pub proto: u8,
    /// Creation time.
    pub created_ns: u64,
    /// Last outbound packet, 0 if none.
    pub last_out_ns: u64,
    /// Last inbound packet, 0 if none.
    pub last_in_ns: u64,
    /// [`TcpState`] byte (TCP only).
    pub tcp_state: u8,
}

impl SessionObserved {
    /// From a `NAT_SESSIONS` entry.
    #[must_use]
    pub const fn new(key: &SessionKey, s: &Session) -> Self {
        Self {
            proto: key.proto,
            created_ns: s.created_ns,
            last_out_ns: s.last_out_ns,
            last_in_ns: s.last_in_ns,
            tcp_state: s.tcp_state,
        }
    }

    /// The TCP state; `None` for other protocols.
    #[must_use]
    pub const fn tcp_state(&self) -> Option<TcpState> {
        if self.proto == IPPROTO_TCP {
            Some(TcpState::from_u8(self.tcp_state))
        } else {
            None
        }
    }

    /// Whether inbound packets refresh this session: always for TCP, otherwise only
    /// with inbound refresh (RFC 4787 REQ-6).
    #[must_use]
    pub const fn inbound_refreshes(&self, policy: &Policy) -> bool {
        self.proto == IPPROTO_TCP || policy.inbound_refresh
    }

    /// The last packet either way (what listings call idle), or the creation.
    #[must_use]
    pub fn last_packet_ns(&self) -> u64 {
        self.created_ns.max(self.last_out_ns).max(self.last_in_ns)
    }

    /// The last packet that refreshes the session under `policy`.
    #[must_use]
    pub fn last_refresh_ns(&self, policy: &Policy) -> u64 {
        if self.inbound_refreshes(policy) {
            self.last_packet_ns()
        } else {
            self.created_ns.max(self.last_out_ns)
        }
    }

    /// Whether the session belongs to the mapping whose reverse entry is `rev`: a
    /// reverse entry created after the session's last packet belongs to a newer
    /// mapping of the same external port.
    #[must_use]
    pub fn belongs_to(&self, rev: &RevValue) -> bool {
        self.last_packet_ns() >= rev.created_ns
    }
}

/// The idle timeout of a session.
#[must_use]
pub const fn timeout_ns(policy: &Policy, s: &SessionObserved) -> u64 {
    match s.tcp_state() {
        Some(state) => match state.timeout_class() {
            TimeoutClass::Established => policy.tcp_established_ns,
            TimeoutClass::Transitory => policy.tcp_transitory_ns,
        },
        None if s.proto == IPPROTO_ICMP => policy.icmp_ns,
        None => policy.udp_ns,
    }
}

/// When the session expires unless refreshed.
#[must_use]
pub fn expires_at_ns(policy: &Policy, s: &SessionObserved) -> u64 {
    s.last_refresh_ns(policy)
        .saturating_add(timeout_ns(policy, s))
}

/// Whether the session has been idle for its whole timeout.
#[must_use]
pub fn is_expired(policy: &Policy, s: &SessionObserved, now_ns: u64) -> bool {
    now_ns >= expires_at_ns(policy, s)
}

/// Time left before the session expires (0 once expired).
#[must_use]
pub fn remaining_ns(policy: &Policy, s: &SessionObserved, now_ns: u64) -> u64 {
    expires_at_ns(policy, s).saturating_sub(now_ns)
}

/// Why a session is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// Idle past its timeout.
    Idle,
    /// Its mapping no longer exists.
    MappingGone,
    /// Its mapping is deleted in the same tick.
    WithMapping,
}

impl SessionEnd {
    /// Name for log lines.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::MappingGone => "mapping_gone",
            Self::WithMapping => "with_mapping",
        }
    }
}

/// What one tick remembers of a dead session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionCandidate {
    /// The session as found.
    pub observed: SessionObserved,
    /// Why it is dead.
    pub end: SessionEnd,
}

impl SessionCandidate {
    /// Whether `now` is the same session, not refreshed since. For an idle session
    /// the timestamps that refresh it count; for one whose mapping is gone any
    /// packet does, since a packet means the data path found a mapping again.
    #[must_use]
    pub fn unchanged(&self, now: &SessionObserved, policy: &Policy) -> bool {
        let was = &self.observed;
        let inbound_counts = self.end != SessionEnd::Idle || was.inbound_refreshes(policy);
        was.created_ns == now.created_ns
            && was.last_out_ns == now.last_out_ns
            && (!inbound_counts || was.last_in_ns == now.last_in_ns)
    }
}

/// The decision about one session on one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionVerdict {
    /// Alive.
    Keep,
    /// Dead for the first time (or touched since last time): remember it.
    Candidate(SessionCandidate),
    /// Dead on two ticks with nothing in between: delete it.
    Delete(SessionEnd),
}

/// Decides about one session, given whether its mapping still exists (`owner`: the
/// reverse entry of its external endpoint, if any) and what the previous tick
/// remembered of it.
#[must_use]
pub fn judge(
    policy: &Policy,
    now_ns: u64,
    previous: Option<&SessionCandidate>,
    s: &SessionObserved,
    owner: Option<&RevValue>,
) -> SessionVerdict {
    let end = if !owner.is_some_and(|r| s.belongs_to(r)) {
        SessionEnd::MappingGone
    } else if is_expired(policy, s, now_ns) {
        SessionEnd::Idle
    } else {
        return SessionVerdict::Keep;
    };
    match previous {
        Some(c) if c.end == end && c.unchanged(s, policy) => SessionVerdict::Delete(end),
        _ => SessionVerdict::Candidate(SessionCandidate { observed: *s, end }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;
    use natgw_common::IPPROTO_UDP;

    const S: u64 = natgw_common::NS_PER_SEC;

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

    fn session(proto: u8, last_out: u64, last_in: u64, state: TcpState) -> SessionObserved {
        SessionObserved {
            proto,
            created_ns: S,
            last_out_ns: last_out,
            last_in_ns: last_in,
            tcp_state: state as u8,
        }
    }

    fn udp(last_out: u64, last_in: u64) -> SessionObserved {
        session(IPPROTO_UDP, last_out, last_in, TcpState::Closed)
    }

    fn rev(created: u64) -> RevValue {
        RevValue {
            created_ns: created,
            ..RevValue::default()
        }
    }

    #[test]
    fn udp_session_uses_the_udp_timeout_since_the_last_outbound_packet() {
        // rfc4787 REQ-5, REQ-6
        let p = policy(false);
        let s = udp(100 * S, 390 * S);
        assert_eq!(timeout_ns(&p, &s), 300 * S);
        assert!(!is_expired(&p, &s, 399 * S));
        assert!(is_expired(&p, &s, 400 * S), "inbound does not refresh");
        assert!(!is_expired(&policy(true), &s, 400 * S));
        assert_eq!(remaining_ns(&policy(true), &s, 400 * S), 290 * S);
    }

    #[test]
    fn icmp_session_uses_the_icmp_timeout() {
        // rfc5508 REQ-2
        let p = policy(false);
        let s = session(IPPROTO_ICMP, 10 * S, 0, TcpState::Closed);
        assert_eq!(timeout_ns(&p, &s), 60 * S);
        assert!(!is_expired(&p, &s, 69 * S));
        assert!(is_expired(&p, &s, 70 * S));
        assert_eq!(
            timeout_ns(&p, &session(47, S, 0, TcpState::Closed)),
            300 * S
        );
    }

    #[test]
    fn tcp_session_timeout_follows_its_state_and_counts_both_directions() {
        // rfc5382 REQ-5
        let p = policy(false);
        for (state, timeout) in [
            (TcpState::Established, 7440),
            (TcpState::OutboundFin, 7440),
            (TcpState::InboundFin, 7440),
            (TcpState::OutboundSyn, 240),
            (TcpState::InboundSyn, 240),
            (TcpState::BothFin, 240),
            (TcpState::Reset, 240),
            (TcpState::Closed, 240),
        ] {
            let s = session(IPPROTO_TCP, 10 * S, 20 * S, state);
            assert_eq!(timeout_ns(&p, &s), timeout * S, "{state:?}");
            // Idle since the last packet either way, even without inbound refresh.
            assert!(!is_expired(&p, &s, (20 + timeout) * S - 1), "{state:?}");
            assert!(is_expired(&p, &s, (20 + timeout) * S), "{state:?}");
        }
    }

    #[test]
    fn live_session_of_a_live_mapping_is_kept() {
        let p = policy(false);
        let s = udp(100 * S, 0);
        assert_eq!(
            judge(&p, 200 * S, None, &s, Some(&rev(S))),
            SessionVerdict::Keep
        );
    }

    #[test]
    fn session_without_mapping_goes_in_two_phases() {
        let p = policy(false);
        let s = udp(100 * S, 0);
        let first = judge(&p, 101 * S, None, &s, None);
        let SessionVerdict::Candidate(c) = first else {
            panic!("{first:?}");
        };
        assert_eq!(c.end, SessionEnd::MappingGone);
        assert_eq!(
            judge(&p, 102 * S, Some(&c), &s, None),
            SessionVerdict::Delete(SessionEnd::MappingGone)
        );
        // Any packet in between, even inbound without inbound refresh, spares it.
        let touched = udp(100 * S, 101 * S);
        assert!(matches!(
            judge(&p, 102 * S, Some(&c), &touched, None),
            SessionVerdict::Candidate(_)
        ));
    }

    #[test]
    fn session_older_than_its_mappings_reverse_entry_belongs_to_an_older_mapping() {
        let p = policy(false);
        let s = udp(100 * S, 120 * S);
        assert!(s.belongs_to(&rev(120 * S)));
        assert!(!s.belongs_to(&rev(121 * S)));
        assert!(matches!(
            judge(&p, 130 * S, None, &s, Some(&rev(125 * S))),
            SessionVerdict::Candidate(SessionCandidate {
                end: SessionEnd::MappingGone,
                ..
            })
        ));
    }

    #[test]
    fn idle_session_goes_in_two_phases_unless_refreshed() {
        let p = policy(false);
        let owner = rev(S);
        let s = udp(100 * S, 0);
        let SessionVerdict::Candidate(c) = judge(&p, 400 * S, None, &s, Some(&owner)) else {
            panic!("expected a candidate");
        };
        assert_eq!(c.end, SessionEnd::Idle);
        assert_eq!(
            judge(&p, 401 * S, Some(&c), &s, Some(&owner)),
            SessionVerdict::Delete(SessionEnd::Idle)
        );
        // An outbound packet in between: alive again.
        let refreshed = udp(400 * S, 0);
        assert_eq!(
            judge(&p, 401 * S, Some(&c), &refreshed, Some(&owner)),
            SessionVerdict::Keep
        );
        // An inbound one does not count without inbound refresh...
        let poked = udp(100 * S, 400 * S);
        assert!(c.unchanged(&poked, &p));
        // ...but does for TCP.
        let tcp = session(IPPROTO_TCP, 100 * S, 0, TcpState::Reset);
        let c = SessionCandidate {
            observed: tcp,
            end: SessionEnd::Idle,
        };
        assert!(!c.unchanged(
            &SessionObserved {
                last_in_ns: 400 * S,
                ..tcp
            },
            &p
        ));
    }

    #[test]
    fn a_changed_reason_restarts_the_two_phases() {
        let p = policy(false);
        let s = udp(100 * S, 0);
        let c = SessionCandidate {
            observed: s,
            end: SessionEnd::Idle,
        };
        assert!(matches!(
            judge(&p, 500 * S, Some(&c), &s, None),
            SessionVerdict::Candidate(SessionCandidate {
                end: SessionEnd::MappingGone,
                ..
            })
        ));
    }
}
