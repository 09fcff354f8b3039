//! Per-internal-host resource rules (RFC 6888, the carrier-grade NAT requirements):
//! how many external ports one host may hold per protocol (REQ-4), how fast it may
//! create mappings (REQ-4c), and the hold-down that keeps a freed external port from
//! going to a different host for a while (REQ-8).
//!
//! Who writes what, so that no value has two writers:
//! - `HOST_STATE` ([`HostState`], by internal address) belongs to the data path: the
//!   mappings it created per protocol (an atomic add) and the host's token bucket.
//! - `HOST_RELEASED` ([`HostReleased`]) belongs to the controller: per protocol, the
//!   mappings of the host it deleted minus those it created itself (PCP, NAT-PMP,
//!   static forwards), wrapping. A host's mappings in use are the difference
//!   ([`in_use`]), exact whoever created or deleted them.
//! - The hold-down of a freed port is its reverse entry turned into a hold
//!   ([`crate::maps::RevValue::held`]), written by the controller in place of the
//!   mapping's, so the port is never unclaimed in between.

use crate::NS_PER_SEC;
#[cfg(test)]
use crate::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// Slots of a host's records: UDP, TCP and ICMP query identifiers each have their
/// own (the only protocols mapped); the fourth is unused.
pub const PROTO_SLOTS: usize = 4;

/// The slot of `proto` in [`HostState::created`] and [`HostReleased::released`]: UDP
/// 0, ICMP 1, TCP 2. Arithmetic, not a `match`: a branch on the protocol would split
/// the verifier's view of the packet into one path per protocol before the port
/// search, which it then explores once for each.
#[inline(always)]
#[must_use]
pub const fn proto_slot(proto: u8) -> usize {
    ((proto ^ (proto >> 4)) & 3) as usize
}

/// Default most external ports one internal host may hold per protocol (RFC 6888
/// REQ-4): a quarter of the default port range (1024-65535), so with one external
/// address a runaway host (a scan, a leak, a flood) leaves at least three quarters of
/// the address's ports to the others, while a busy host — a resolver sending every
/// query from a new port, a peer-to-peer client — stays far from it.
pub const DEFAULT_PORTS_PER_HOST: u32 = 16_384;
/// Default new mappings per second one internal host may create (RFC 6888 REQ-4c),
/// after its burst: far above what browsing or peer-to-peer needs, far below the
/// data path's own rate, so one host cannot take the whole of it.
pub const DEFAULT_MAPPINGS_PER_SEC: u32 = 1_000;
/// Default burst of new mappings one host may create at once (its bucket's size).
pub const DEFAULT_MAPPING_BURST: u32 = 1_000;
/// Default hold-down of a freed external port, in seconds: RFC 6888 REQ-8's 120 s.
pub const DEFAULT_PORT_HOLD_DOWN_SECS: u64 = 120;

/// Value of `HOST_STATE`: what the data path knows about one internal host. Only the
/// data path writes it (the controller reads it and deletes idle entries).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostState {
    /// Mappings the data path created, per [`proto_slot`] (wrapping counts; 64-bit
    /// because that is the width of the BPF atomic add every eBPF target has).
    pub created: [u64; PROTO_SLOTS],
    /// The token bucket as a virtual time (GCRA): the bucket is full when this is
    /// not after now, and each new mapping moves it one interval on ([`admit`]).
    /// Without a rate limit: when the host last created a mapping.
    pub bucket_ns: u64,
}

/// Value of `HOST_RELEASED`: per [`proto_slot`], the host's mappings the controller
/// deleted minus those it created, wrapping (it may go "below zero" while the host
/// holds explicit mappings). Only the controller writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostReleased {
    /// Per protocol slot.
    pub released: [u64; PROTO_SLOTS],
}

impl HostReleased {
    /// Nothing released.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            released: [0; PROTO_SLOTS],
        }
    }

    /// The record after `delta` more mappings of `proto` were released (negative:
    /// created by the controller).
    #[must_use]
    pub const fn add(mut self, proto: u8, delta: i32) -> Self {
        let slot = proto_slot(proto);
        self.released[slot] = self.released[slot].wrapping_add_signed(delta as i64);
        self
    }

    /// Whether every slot is zero (no mapping the controller deleted or created is
    /// outstanding).
    #[must_use]
    pub const fn is_zero(&self) -> bool {
        self.released[0] == 0
            && self.released[1] == 0
            && self.released[2] == 0
            && self.released[3] == 0
    }
}

/// A host's mappings of one protocol in use: `created` by the data path minus
/// `released` by the controller. Negative differences (a race with the controller's
/// clean-up, see [`crate::limits`]) count as none, so an error can only let a host
/// have a few ports more, never lock it out.
#[inline(always)]
#[must_use]
pub const fn in_use(created: u64, released: u64) -> u64 {
    let d = created.wrapping_sub(released);
    if d > i64::MAX as u64 {
        0
    } else {
        d
    }
}

/// The token bucket of new mappings as GCRA (the generic cell rate algorithm: one
/// virtual time instead of tokens and a refill stamp). `bucket_ns` is the host's
/// virtual time, `interval_ns` the time one mapping's token takes to come back (at
/// most a second, see [`interval_ns`], so that `interval_ns * burst` fits 64 bits:
/// the eBPF target has no 128-bit multiply for an overflow check), `burst` the
/// bucket's size. Returns the new virtual time when a mapping may be created at
/// `now_ns`, `None` when the bucket is empty.
#[inline(always)]
#[must_use]
pub const fn admit(bucket_ns: u64, now_ns: u64, interval_ns: u64, burst: u32) -> Option<u64> {
    let start = if bucket_ns > now_ns {
        bucket_ns
    } else {
        now_ns
    };
    let next = start.saturating_add(interval_ns);
    if next - now_ns > interval_ns.wrapping_mul(burst as u64) {
        None
    } else {
        Some(next)
    }
}

/// The interval between new mappings of a host at `per_sec` per second (0: no
/// limit).
#[must_use]
pub const fn interval_ns(per_sec: u32) -> u64 {
    if per_sec == 0 {
        0
    } else {
        NS_PER_SEC / per_sec as u64
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` structs of integers with explicit padding.
    unsafe impl aya::Pod for super::HostState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HostReleased {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    const S: u64 = NS_PER_SEC;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<HostState>(), 40);
        assert_eq!(size_of::<HostReleased>(), 32);
    }

    #[test]
    fn protocols_have_their_own_slots() {
        // rfc6888 REQ-4b: per protocol; ICMP identifiers count like ports.
        let slots = [
            proto_slot(IPPROTO_UDP),
            proto_slot(IPPROTO_TCP),
            proto_slot(IPPROTO_ICMP),
        ];
        assert_eq!(slots, [0, 2, 1]);
        assert!((0..=u8::MAX).all(|p| proto_slot(p) < PROTO_SLOTS));
    }

    #[test]
    fn in_use_is_created_minus_released_never_below_zero() {
        // rfc6888 REQ-4
        assert_eq!(in_use(10, 3), 7);
        assert_eq!(in_use(3, 3), 0);
        // Released ahead of created (a lost race): none in use, not four billion.
        assert_eq!(in_use(3, 4), 0);
        // Wrapped counters still subtract right.
        assert_eq!(in_use(2, u64::MAX), 3);
        // Controller-created (explicit) mappings push `released` below zero.
        let r = HostReleased::new().add(IPPROTO_UDP, -2);
        assert_eq!(in_use(0, r.released[proto_slot(IPPROTO_UDP)]), 2);
        assert_eq!(in_use(5, r.add(IPPROTO_UDP, 3).released[0]), 4);
        assert!(!r.is_zero());
        assert!(r.add(IPPROTO_UDP, 2).is_zero());
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        // rfc6888 REQ-4c
        let interval = interval_ns(10); // 10 per second
        assert_eq!(interval, S / 10);
        let t = 100 * S;
        let mut b = 0;
        for i in 0..5 {
            b = admit(b, t, interval, 5).unwrap_or_else(|| panic!("burst token {i}"));
        }
        assert_eq!(admit(b, t, interval, 5), None, "the burst is spent");
        assert_eq!(admit(b, t + interval / 2, interval, 5), None);
        let b = admit(b, t + interval, interval, 5).expect("one token back");
        assert_eq!(admit(b, t + interval, interval, 5), None);
        // A quiet while refills the whole burst, never more.
        let later = t + 60 * S;
        let mut b = b;
        for _ in 0..5 {
            b = admit(b, later, interval, 5).expect("full again");
        }
        assert_eq!(admit(b, later, interval, 5), None);
        // Over a long run, the rate.
        let (mut b, mut admitted) = (0, 0);
        for ms in 0..10_000u64 {
            let now = t + ms * S / 1000;
            if let Some(n) = admit(b, now, interval, 5) {
                b = n;
                admitted += 1;
            }
        }
        assert!((100..=106).contains(&admitted), "{admitted} in 10 s");
    }
}
