//! TCP session state as a NAT tracks it (RFC 6146 §3.5.2, as RFC 7857 asks of
//! NAT44): enough to choose the idle timeout (established vs transitory) and to keep
//! a reset session for 4 minutes, written as a pure transition function.

use crate::maps::tcp_seen;

/// State of one TCP session (mapping x remote endpoint).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    /// Nothing seen yet.
    Closed = 0,
    /// An outbound SYN was seen (RFC 6146 "V4 INIT" seen from the inside).
    OutboundSyn = 1,
    /// An inbound SYN was seen first (simultaneous open, or an allowed inbound open).
    InboundSyn = 2,
    /// SYNs seen both ways.
    Established = 3,
    /// FIN seen from the inside.
    OutboundFin = 4,
    /// FIN seen from the outside.
    InboundFin = 5,
    /// FINs seen both ways.
    BothFin = 6,
    /// A RST was seen: kept for the transitory timeout (RFC 7857 §2.2), revived by
    /// the next outbound segment that is not a RST. Inbound segments do not revive
    /// it: a peer's SYNs to a reset connection, each answered from the inside with
    /// another RST, must not keep it alive (RFC 7857 §2.1).
    Reset = 7,
}

/// Which idle timeout applies to a state (RFC 5382 REQ-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutClass {
    /// At least 2 h 4 min.
    Established,
    /// At least 4 min.
    Transitory,
}

impl TcpState {
    /// Decodes the byte stored in a session.
    #[must_use]
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::OutboundSyn,
            2 => Self::InboundSyn,
            3 => Self::Established,
            4 => Self::OutboundFin,
            5 => Self::InboundFin,
            6 => Self::BothFin,
            7 => Self::Reset,
            _ => Self::Closed,
        }
    }

    /// Name for listings.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::OutboundSyn => "syn-out",
            Self::InboundSyn => "syn-in",
            Self::Established => "established",
            Self::OutboundFin => "fin-out",
            Self::InboundFin => "fin-in",
            Self::BothFin => "fin-both",
            Self::Reset => "reset",
        }
    }

    /// The idle timeout class of the state (RFC 6146: established and half-closed
    /// sessions get the established timeout, the rest the transitory one).
    #[must_use]
    pub const fn timeout_class(self) -> TimeoutClass {
        match self {
            Self::Established | Self::OutboundFin | Self::InboundFin => TimeoutClass::Established,
            _ => TimeoutClass::Transitory,
        }
    }

    /// The state after a segment with `flags` (wire flag bits) in direction
    /// `outbound`.
    #[inline(always)]
    #[must_use]
    pub const fn next(self, outbound: bool, flags: u8) -> Self {
        if flags & tcp_seen::RST != 0 {
            return Self::Reset;
        }
        let syn = flags & tcp_seen::SYN != 0;
        let fin = flags & tcp_seen::FIN != 0;
        match self {
            Self::Closed => {
                if !syn {
                    Self::Closed
                } else if outbound {
                    Self::OutboundSyn
                } else {
                    Self::InboundSyn
                }
            }
            Self::OutboundSyn if syn && !outbound => Self::Established,
            Self::InboundSyn if syn && outbound => Self::Established,
            Self::Established if fin && outbound => Self::OutboundFin,
            Self::Established if fin => Self::InboundFin,
            Self::OutboundFin if fin && !outbound => Self::BothFin,
            Self::InboundFin if fin && outbound => Self::BothFin,
            Self::Reset if !outbound => Self::Reset,
            Self::Reset if syn && flags & tcp_seen::ACK == 0 => Self::OutboundSyn,
            Self::Reset => Self::Established,
            // A new connection reusing the 4-tuple after a close.
            Self::BothFin if syn && outbound && flags & tcp_seen::ACK == 0 => Self::OutboundSyn,
            s => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{TcpState as S, TimeoutClass};
    use crate::maps::tcp_seen::{ACK, FIN, RST, SYN};

    fn run(steps: &[(bool, u8)]) -> S {
        steps.iter().fold(S::Closed, |s, &(out, f)| s.next(out, f))
    }

    #[test]
    fn three_way_handshake_from_inside_establishes() {
        // rfc5382 REQ-2
        assert_eq!(
            run(&[(true, SYN), (false, SYN | ACK), (true, ACK)]),
            S::Established
        );
    }

    #[test]
    fn simultaneous_open_establishes() {
        // rfc5382 REQ-2: SYNs cross, then SYN-ACKs.
        assert_eq!(run(&[(true, SYN), (false, SYN)]), S::Established);
        assert_eq!(
            run(&[(false, SYN), (true, SYN), (false, SYN | ACK)]),
            S::Established
        );
    }

    #[test]
    fn close_goes_through_half_closed_to_transitory() {
        let s = run(&[(true, SYN), (false, SYN | ACK), (true, FIN | ACK)]);
        assert_eq!(s, S::OutboundFin);
        assert_eq!(s.timeout_class(), TimeoutClass::Established);
        let s = s.next(false, FIN | ACK);
        assert_eq!(s, S::BothFin);
        assert_eq!(s.timeout_class(), TimeoutClass::Transitory);
    }

    #[test]
    fn reset_is_kept_transitory_and_revived_by_traffic() {
        // RFC 7857 §2.2: a RST does not end the session at once.
        let s = run(&[(true, SYN), (false, SYN | ACK), (false, RST)]);
        assert_eq!(s, S::Reset);
        assert_eq!(s.timeout_class(), TimeoutClass::Transitory);
        assert_eq!(s.next(true, ACK), S::Established);
        assert_eq!(s.next(true, SYN), S::OutboundSyn);
    }

    #[test]
    fn inbound_segments_do_not_revive_a_reset_session() {
        // RFC 7857 §2.1: a peer's SYNs, each answered by the inside with a RST.
        let s = run(&[(true, SYN), (false, SYN | ACK), (true, RST)]);
        assert_eq!(s.next(false, SYN), S::Reset);
        assert_eq!(s.next(false, ACK), S::Reset);
        assert_eq!(s.next(false, SYN).next(true, RST | ACK), S::Reset);
    }

    #[test]
    fn byte_round_trip() {
        for v in 0..8u8 {
            assert_eq!(S::from_u8(v) as u8, v);
        }
    }
}
