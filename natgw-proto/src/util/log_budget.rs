//! Log lines that clients or the network can trigger, at a bounded rate.
//!
//! What a packet or request can cause is logged at most [`LogBudget`]'s number of
//! lines per window; the rest are counted, and the count is reported with the next
//! line that is logged. The counters in `natgw status` keep every event; the log
//! keeps its readability, and nobody can fill the disk at packet rate.

use std::time::{Duration, Instant};

/// The budget of one kind of line.
#[derive(Debug, Clone)]
pub struct LogBudget {
    lines: u32,
    window: Duration,
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    /// At most `lines` lines per `window`.
    #[must_use]
    pub const fn new(lines: u32, window: Duration) -> Self {
        Self {
            lines,
            window,
            window_start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`. When it may: how many lines were
    /// suppressed since the last one logged (to say so in this one).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        let start = *self.window_start.get_or_insert(now);
        if now.saturating_duration_since(start) >= self.window {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used >= self.lines {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `" (N similar lines suppressed)"`, or nothing for 0: the tail of a logged line.
#[must_use]
pub fn suppressed_note(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} similar lines suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_a_few_lines_then_one_with_the_count() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(3, Duration::from_secs(10));
        let logged: Vec<Option<u64>> = (0..1000).map(|_| b.admit(t0)).collect();
        assert_eq!(logged.iter().filter(|l| l.is_some()).count(), 3);
        assert_eq!(b.admit(t0 + Duration::from_secs(10)), Some(997));
        assert_eq!(b.admit(t0 + Duration::from_secs(11)), Some(0));
        assert_eq!(suppressed_note(0), "");
        assert_eq!(suppressed_note(997), " (997 similar lines suppressed)");
    }
}
