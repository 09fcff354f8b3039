//! Expiry of held SYNs (`HELD_SYNS`). The data path drops an unsolicited inbound SYN
//! silently and remembers it; if no outbound SYN to its sender is translated within
//! [`HOLD_NS`] (the data path then forgets it: a simultaneous open or a hole punch
//! is under way), RFC 5382 REQ-4 asks for an ICMP port unreachable, which the
//! controller sends (or, by policy, it drops the SYN silently for good).
//!
//! Checked every [`CHECK_INTERVAL`], independently of the mapping GC interval, so a
//! held SYN is answered between 6 and 7 seconds after it arrived.

use std::time::Duration;

use natgw_common::maps::{HeldSyn, SessionKey};
use natgw_common::NS_PER_SEC;

use crate::datapath::maps::{HeldSynTable, MapsError};

/// RFC 5382 REQ-4: an unsolicited SYN is held "for at least 6 seconds".
pub const HOLD_NS: u64 = 6 * NS_PER_SEC;

/// How often held SYNs are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a SYN held since `held.seen_ns` has waited long enough.
#[must_use]
pub const fn is_due(held: &HeldSyn, now_ns: u64) -> bool {
    now_ns.saturating_sub(held.seen_ns) >= HOLD_NS
}

/// The held SYNs of a snapshot that are due.
#[must_use]
pub fn due(entries: &[(SessionKey, HeldSyn)], now_ns: u64) -> Vec<(SessionKey, HeldSyn)> {
    entries
        .iter()
        .filter(|(_, h)| is_due(h, now_ns))
        .copied()
        .collect()
}

/// Deletes every due held SYN and calls `expired` for each one this call deleted
/// (not one the data path forgot meanwhile because an outbound SYN answered it).
/// Returns how many expired.
pub fn sweep<T: HeldSynTable>(
    table: &mut T,
    now_ns: u64,
    mut expired: impl FnMut(&SessionKey, &HeldSyn),
) -> Result<usize, MapsError> {
    let mut n = 0;
    for (key, held) in due(&table.held_syn_entries()?, now_ns) {
        // A different `seen_ns` is a newer SYN held after the first was answered.
        if table.held_syn(&key)? != Some(held) {
            continue;
        }
        if table.remove_held_syn(&key)? {
            expired(&key, &held);
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat_table::testing::MemoryMaps;

    const S: u64 = NS_PER_SEC;

    fn key(remote_port: u16) -> SessionKey {
        SessionKey::new(
            natgw_common::addr_be([192, 0, 2, 1]),
            natgw_common::addr_be([198, 51, 100, 2]),
            40000u16.to_be(),
            remote_port.to_be(),
            natgw_common::IPPROTO_TCP,
        )
    }

    fn held(seen: u64) -> HeldSyn {
        HeldSyn::new(seen, 1234u32.to_be(), 7u16.to_be(), 63)
    }

    #[test]
    fn syn_is_held_at_least_six_seconds() {
        // rfc5382 REQ-4
        let h = held(10 * S);
        assert!(!is_due(&h, 16 * S - 1));
        assert!(is_due(&h, 16 * S));
        assert!(!is_due(&h, 0), "a clock before seen_ns is not due");
    }

    #[test]
    fn sweep_expires_only_due_entries_and_reports_each_once() {
        let mut t = MemoryMaps::default();
        t.held_syns.insert(key(1), held(10 * S));
        t.held_syns.insert(key(2), held(12 * S));
        let mut seen = Vec::new();
        let n = sweep(&mut t, 17 * S, |k, _| {
            seen.push(u16::from_be(k.remote_port_be));
        })
        .unwrap();
        assert_eq!((n, seen.as_slice()), (1, &[1][..]));
        assert!(!t.held_syns.contains_key(&key(1)));
        assert!(t.held_syns.contains_key(&key(2)));
        let n = sweep(&mut t, 17 * S, |_, _| panic!("nothing due")).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn syn_answered_by_an_outbound_syn_meanwhile_is_not_reported() {
        let mut t = MemoryMaps::default();
        t.held_syns.insert(key(1), held(10 * S));
        t.answered_syn = Some(key(1));
        let n = sweep(&mut t, 20 * S, |_, _| panic!("answered SYNs get no ICMP")).unwrap();
        assert_eq!(n, 0);
    }
}
