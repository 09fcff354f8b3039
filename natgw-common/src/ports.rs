//! External port choice. The data path tries the internal port first (port
//! preservation, which hole punching relies on), then pseudo-random candidates of the
//! same range class (RFC 4787 REQ-3a) and the same parity (REQ-4), all inside the
//! configured range. Claiming a candidate is the caller's atomic map insert.

/// Candidates tried before a new mapping fails with "ports exhausted". Bounded so the
/// verifier accepts the loop.
pub const MAX_PORT_ATTEMPTS: u32 = 32;

/// Highest port of the well-known/system range (RFC 4787 REQ-3a).
pub const SYSTEM_PORT_MAX: u16 = 1023;

/// Odd multiplier spreading successive attempts over the range.
const STRIDE: u32 = 0x9e37_79b1;

/// The part of the configured range `[min, max]` in the same class as `preferred`
/// (0-1023 or 1024-65535). Falls back to the whole configured range when the class
/// and the range do not meet.
#[inline(always)]
#[must_use]
pub const fn class_range(preferred: u16, min: u16, max: u16) -> (u16, u16) {
    let (lo, hi) = if preferred <= SYSTEM_PORT_MAX {
        (0, SYSTEM_PORT_MAX)
    } else {
        (SYSTEM_PORT_MAX + 1, u16::MAX)
    };
    let lo = if min > lo { min } else { lo };
    let hi = if max < hi { max } else { hi };
    if lo > hi {
        (min, max)
    } else {
        (lo, hi)
    }
}

/// The `attempt`-th external port to try for internal port `preferred`.
///
/// Attempt 0 is `preferred` itself when the configured range allows it. Later
/// attempts walk the class range from a random `seed`, keeping the parity of
/// `preferred` whenever the range has room for it.
#[inline(always)]
#[must_use]
pub const fn candidate(preferred: u16, attempt: u32, seed: u32, min: u16, max: u16) -> u16 {
    let (lo, hi) = class_range(preferred, min, max);
    if attempt == 0 && preferred >= lo && preferred <= hi {
        return preferred;
    }
    let span = (hi - lo) as u32 + 1;
    let off = seed.wrapping_add(attempt.wrapping_mul(STRIDE)) % span;
    let port = lo + off as u16;
    if (port ^ preferred) & 1 == 0 {
        port
    } else if port < hi {
        port + 1
    } else if port > lo {
        port - 1
    } else {
        port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preserves_internal_port_when_in_range() {
        assert_eq!(candidate(40000, 0, 7, 1024, 65535), 40000);
        assert_eq!(candidate(53, 0, 7, 1, 65535), 53);
    }

    #[test]
    fn later_attempts_keep_parity_and_class() {
        // rfc4787 REQ-3a, REQ-4
        for seed in [0u32, 1, 12345, u32::MAX] {
            for attempt in 1..MAX_PORT_ATTEMPTS {
                let p = candidate(40001, attempt, seed, 1024, 65535);
                assert!(p >= 1024);
                assert_eq!(p & 1, 1, "odd stays odd");
                let p = candidate(500, attempt, seed, 1, 65535);
                assert!((1..=1023).contains(&p), "system port stays system: {p}");
                assert_eq!(p & 1, 0);
            }
        }
    }

    #[test]
    fn stays_inside_configured_range() {
        for attempt in 0..MAX_PORT_ATTEMPTS {
            let p = candidate(40000, attempt, attempt * 7, 20000, 20003);
            assert!((20000..=20003).contains(&p));
            assert_eq!(p & 1, 0);
        }
        // Single-port range: parity cannot be kept, the range wins.
        assert_eq!(candidate(40001, 3, 9, 20000, 20000), 20000);
        // Class and range disjoint: the range wins.
        let p = candidate(80, 1, 5, 30000, 30010);
        assert!((30000..=30010).contains(&p));
    }

    #[test]
    fn attempts_spread_over_the_range() {
        let mut seen = [false; 64];
        for attempt in 1..MAX_PORT_ATTEMPTS {
            let p = candidate(1024, attempt, 99, 1024, 1087);
            seen[usize::from(p - 1024)] = true;
        }
        assert!(seen.iter().filter(|s| **s).count() >= 16);
    }
}
