//! Data-path drops worth an operator's attention, logged once per episode.
//!
//! The data path never logs per packet (a LAN host could otherwise flood the log at
//! packet rate); it counts. The controller reads the counters every second and
//! writes one line when a watched counter starts rising and one when it has been
//! still for [`QUIET`], with how many packets the episode dropped. `natgw status`
//! keeps the totals.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use natgw_common::Counter;

/// The drops that get a line per episode, with what they mean.
pub const WATCHED: [(Counter, &str); 8] = [
    (
        Counter::DropTableFull,
        "the NAT table is full: new flows get no mapping (raise --max-mappings?)",
    ),
    (
        Counter::DropPortsExhausted,
        "no free external port for new mappings (widen --port-range or add --external addresses?)",
    ),
    (
        Counter::DropSpoofed,
        "packets with sources that cannot be genuine where they arrived (spoofing, or a host \
         outside the LAN prefixes)",
    ),
    (
        Counter::DropToInternal,
        "packets from the WAN addressed straight to internal hosts",
    ),
    (
        Counter::DropFragmentBudget,
        "fragments over a source's budget of incomplete datagrams (a fragment flood?)",
    ),
    (
        Counter::DropHostPortLimit,
        "an internal host reached its limit of external ports (a scan, a leak, or raise \
         --max-ports-per-host?)",
    ),
    (
        Counter::DropHostRateLimited,
        "an internal host creates mappings faster than its rate allows (raise \
         --host-mapping-rate?)",
    ),
    (
        Counter::DropPortHeld,
        "no free external port but ports held from other hosts after they were freed \
         (shorten --port-hold-down or widen --port-range?)",
    ),
];

/// How long a counter must stay still for its episode to end.
pub const QUIET: Duration = Duration::from_secs(10);

/// What to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// `counter` started rising: `dropped` so far in this episode.
    Started {
        /// The counter.
        counter: Counter,
        /// What it means.
        meaning: &'static str,
        /// Packets dropped so far.
        dropped: u64,
    },
    /// `counter` has been still for [`QUIET`]: the episode dropped `dropped` packets
    /// over `lasted`.
    Ended {
        /// The counter.
        counter: Counter,
        /// Packets the episode dropped.
        dropped: u64,
        /// From its first drop seen to its last.
        lasted: Duration,
    },
}

#[derive(Clone, Copy, Debug)]
struct Episode {
    started: Instant,
    last_rise: Instant,
    dropped: u64,
}

/// The episodes in progress.
#[derive(Debug, Default)]
pub struct Episodes {
    last: BTreeMap<u32, u64>,
    open: BTreeMap<u32, Episode>,
}

impl Episodes {
    /// Takes the counters' values at `now` (every counter, as the data path reports
    /// them) and returns what to log.
    pub fn observe(&mut self, now: Instant, counters: &[(Counter, u64)]) -> Vec<Note> {
        let mut notes = Vec::new();
        for (counter, meaning) in WATCHED {
            let key = counter as u32;
            let Some(value) = counters
                .iter()
                .find(|(c, _)| *c == counter)
                .map(|(_, v)| *v)
            else {
                continue;
            };
            // The first reading is the baseline (a restarted controller may find old
            // counts).
            let previous = self.last.insert(key, value).unwrap_or(value);
            let rise = value.saturating_sub(previous);
            match self.open.get_mut(&key) {
                Some(e) if rise > 0 => {
                    e.dropped += rise;
                    e.last_rise = now;
                }
                Some(e) if now.saturating_duration_since(e.last_rise) >= QUIET => {
                    notes.push(Note::Ended {
                        counter,
                        dropped: e.dropped,
                        lasted: e.last_rise.saturating_duration_since(e.started),
                    });
                    self.open.remove(&key);
                }
                Some(_) => {}
                None if rise > 0 => {
                    self.open.insert(
                        key,
                        Episode {
                            started: now,
                            last_rise: now,
                            dropped: rise,
                        },
                    );
                    notes.push(Note::Started {
                        counter,
                        meaning,
                        dropped: rise,
                    });
                }
                None => {}
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_drops_make_two_lines() {
        // issue #11 finding 8: a full table once logged a line per dropped packet.
        let t0 = Instant::now();
        let mut e = Episodes::default();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let reading = |n: u64| vec![(Counter::DropTableFull, n), (Counter::DropSpoofed, 0)];
        assert!(e.observe(at(0), &reading(0)).is_empty(), "baseline");
        let mut notes = Vec::new();
        for s in 1..=10 {
            notes.extend(e.observe(at(s), &reading(s * 100)));
        }
        for s in 11..=30 {
            notes.extend(e.observe(at(s), &reading(1000)));
        }
        assert_eq!(
            notes,
            [
                Note::Started {
                    counter: Counter::DropTableFull,
                    meaning: WATCHED[0].1,
                    dropped: 100
                },
                Note::Ended {
                    counter: Counter::DropTableFull,
                    dropped: 1000,
                    lasted: Duration::from_secs(9)
                }
            ]
        );
        // A new episode later is reported again.
        assert_eq!(e.observe(at(31), &reading(1005)).len(), 1);
    }

    #[test]
    fn old_counts_found_at_start_are_no_episode() {
        let mut e = Episodes::default();
        let t0 = Instant::now();
        assert!(e.observe(t0, &[(Counter::DropSpoofed, 5000)]).is_empty());
        assert!(e
            .observe(t0 + Duration::from_secs(1), &[(Counter::DropSpoofed, 5000)])
            .is_empty());
    }
}
