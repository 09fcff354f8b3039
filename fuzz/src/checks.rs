//! The assertions the rewrite targets share: a checksum is kept (its one's-complement
//! residue is unchanged by a rewrite, so what verified still verifies and what was
//! corrupt stays corrupt), and a rewrite undone restores the frame byte for byte.

use crate::input::{ICMP, UDP};
use crate::oracle::{residue, verifies};

/// The sum over a checksummed region (checksum field included) before and after an
/// operation.
#[derive(Clone, Copy, Debug)]
pub struct Kept {
    /// What the checksum covers, for messages.
    pub what: &'static str,
    /// The sum before.
    pub before: u64,
    /// The sum after.
    pub after: u64,
}

impl Kept {
    /// Panics unless the checksum was kept: same one's-complement value (RFC 1624
    /// updates preserve it exactly), and so verifying after whenever it verified
    /// before.
    pub fn assert(&self, op: &str) {
        assert_eq!(
            residue(self.after),
            residue(self.before),
            "{op}: the {} checksum's one's-complement sum changed ({:#x} -> {:#x})",
            self.what,
            self.before,
            self.after
        );
        if verifies(self.before) {
            assert!(
                verifies(self.after),
                "{op}: the {} checksum verified before and no longer does \
                 (sum {:#x} -> {:#x})",
                self.what,
                self.before,
                self.after
            );
        }
    }
}

/// How a checksum field may come back from a rewrite and its inverse: RFC 1624
/// eqn. 3 (`~(~HC + ~m + m')`) keeps the one's-complement value exactly, but of its
/// two zeros it returns 0xffff ("negative zero") only when given 0xffff and an
/// update that changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zero {
    /// Exactly as it was: UDP, whose computed zero is always sent as 0xffff (RFC 768)
    /// and whose 0x0000 means "no checksum" and is never updated.
    Exact,
    /// As it was, or 0x0000 where it was 0xffff: eqn. 3 alone (IP headers, TCP).
    MayLoseNegativeZero,
    /// As it was, or 0xffff where it was 0x0000: ICMP, whose updated checksum is
    /// never stored as 0x0000 (`natgw_common::csum::icmp_nonzero`).
    MayGainNegativeZero,
}

impl Zero {
    /// How the L4 checksum of protocol `proto` comes back.
    #[must_use]
    pub fn of_l4(proto: u8) -> Self {
        match proto {
            UDP => Self::Exact,
            ICMP => Self::MayGainNegativeZero,
            _ => Self::MayLoseNegativeZero,
        }
    }

    fn allows(self, before: &[u8], after: &[u8]) -> bool {
        match self {
            Self::Exact => false,
            Self::MayLoseNegativeZero => before == [0xff, 0xff] && after == [0, 0],
            Self::MayGainNegativeZero => before == [0, 0] && after == [0xff, 0xff],
        }
    }
}

/// A checksum field of a frame, for [`assert_restored`].
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// Its offset.
    pub off: usize,
    /// How it may come back.
    pub zero: Zero,
}

/// Panics unless `after` is `before` byte for byte, but for the one change of
/// representation of zero a round trip may make in each of `fields` (see [`Zero`]).
pub fn assert_restored(before: &[u8], after: &[u8], fields: &[Field], op: &str) {
    assert_eq!(before.len(), after.len(), "{op}: the frame changed length");
    for i in 0..before.len() {
        if before[i] == after[i] {
            continue;
        }
        let allowed = fields.iter().any(|f| {
            (f.off..f.off + 2).contains(&i)
                && f.zero
                    .allows(&before[f.off..f.off + 2], &after[f.off..f.off + 2])
        });
        assert!(
            allowed,
            "{op}: byte {i} is {:#04x}, was {:#04x}, after the rewrite and its inverse\n\
             before: {before:02x?}\nafter:  {after:02x?}",
            after[i], before[i]
        );
    }
}
