//! The conformance suite: one check per requirement id of RFC 4787 (UDP), RFC 5382
//! with RFC 7857 (TCP) and RFC 5508 (ICMP), as listed in RFC-REQUIREMENTS.md, and of
//! RFC 6888 (carrier-grade NAT) where traffic can show it, run against natgw or
//! against the Linux kernel's own NAT (nftables masquerade) on the same testbed.
//!
//! Every check builds its own testbed, drives real traffic between the LAN and WAN
//! hosts (sockets, raw sockets for what sockets cannot show: ICMP errors, TTLs,
//! fragments, crafted segments) and returns a [`CheckResult`]: what was sent, what was
//! observed on the wire, and a verdict. A check passes only on positive evidence; when
//! the evidence cannot be gathered with that NAT it says so
//! ([`Verdict::NotApplicable`]) instead of passing.
//!
//! `cargo xtask conformance` runs this crate's `natgw-conformance` binary, which prints
//! the table for natgw and nftables side by side; `tests/conformance.rs` (in the
//! integration tests) runs each natgw check as a test named after its requirement.
//!
//! - [`nat`]: the NAT under test, what a check needs from it, the testbed it runs in.
//! - [`rfc4787`], [`rfc5382`], [`rfc5508`], [`rfc6888`]: the checks.
//! - [`flows`]: traffic patterns the checks share.
//! - [`sock`], [`packet`]: sockets in namespaces, packets as bytes.
//! - [`report`]: the table, as text, Markdown or JSON.
//! - [`cli`]: the suite's command line, shared with `cargo xtask conformance`.

pub mod cli;
pub mod flows;
pub mod nat;
pub mod packet;
pub mod report;
pub mod rfc4787;
pub mod rfc5382;
pub mod rfc5508;
pub mod rfc6888;
pub mod sock;

use std::fmt;
use std::panic::AssertUnwindSafe;

pub use nat::{Env, Filtering, NatConfig, NatUnderTest};

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The requirement was observed to hold.
    Pass,
    /// It was observed not to hold (or the check could not run).
    Fail,
    /// It cannot be observed with this NAT, for the reason given.
    NotApplicable(String),
}

impl Verdict {
    /// `PASS`, `FAIL` or `n/a`.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::NotApplicable(_) => "n/a",
        }
    }
}

/// What one check did and saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Requirement id, e.g. `RFC 4787 REQ-8 ADF`.
    pub id: &'static str,
    /// What was sent (and configured).
    pub sent: String,
    /// What was observed; unmet expectations are listed as `expected: ...`.
    pub observed: String,
    /// The verdict.
    pub verdict: Verdict,
}

/// Why a check stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The NAT cannot be configured or observed the way the check needs.
    NotApplicable(String),
    /// Something failed that is not an observation (setup, a socket call).
    Error(String),
}

/// `?` for the checks: turns any error into [`Stop::Error`] naming the step.
pub trait Step<T> {
    /// The value, or a [`Stop::Error`] saying "`what`: error".
    ///
    /// # Errors
    /// When `self` is an error.
    fn step(self, what: &str) -> Result<T, Stop>;
}

impl<T, E: fmt::Display> Step<T> for Result<T, E> {
    fn step(self, what: &str) -> Result<T, Stop> {
        self.map_err(|e| Stop::Error(format!("{what}: {e}")))
    }
}

/// A check's notebook: what it sent, what it saw, which expectations failed.
#[derive(Debug, Default)]
pub struct Record {
    sent: Vec<String>,
    observed: Vec<String>,
    unmet: Vec<String>,
    expectations: usize,
}

impl Record {
    /// Notes something sent or configured.
    pub fn sent(&mut self, what: impl Into<String>) {
        self.sent.push(what.into());
    }

    /// Notes something observed.
    pub fn saw(&mut self, what: impl Into<String>) {
        self.observed.push(what.into());
    }

    /// Records an expectation; returns `ok`.
    pub fn expect(&mut self, ok: bool, expectation: impl Into<String>) -> bool {
        self.expectations += 1;
        if !ok {
            self.unmet.push(expectation.into());
        }
        ok
    }

    fn finish(self, id: &'static str, stop: Result<(), Stop>) -> CheckResult {
        let mut observed = self.observed;
        let verdict = match stop {
            Err(Stop::NotApplicable(reason)) => Verdict::NotApplicable(reason),
            Err(Stop::Error(e)) => {
                observed.push(format!("error: {e}"));
                Verdict::Fail
            }
            Ok(()) if self.expectations == 0 => {
                observed.push("error: the check recorded no expectation".to_owned());
                Verdict::Fail
            }
            Ok(()) if self.unmet.is_empty() => Verdict::Pass,
            Ok(()) => Verdict::Fail,
        };
        // A check that stopped after an unmet expectation fails whatever stopped it.
        let verdict = if self.unmet.is_empty() {
            verdict
        } else {
            Verdict::Fail
        };
        observed.extend(self.unmet.iter().map(|u| format!("expected: {u}")));
        CheckResult {
            id,
            sent: self.sent.join("; "),
            observed: observed.join("; "),
            verdict,
        }
    }
}

/// A check's body.
pub type CheckFn = fn(&NatUnderTest, &mut Record) -> Result<(), Stop>;

/// One requirement's check.
#[derive(Clone, Copy)]
pub struct Check {
    /// Requirement id, e.g. `RFC 5382 REQ-4`.
    pub id: &'static str,
    /// The integration test in `tests/conformance.rs` that runs it against natgw.
    pub test: &'static str,
    /// One line: the requirement.
    pub title: &'static str,
    /// The check.
    pub run: CheckFn,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("id", &self.id)
            .field("test", &self.test)
            .finish_non_exhaustive()
    }
}

impl Check {
    /// Runs the check against `nat`. A panic inside it (a helper's assertion) is a
    /// failure with the panic's message, never a crash of the suite.
    #[must_use]
    pub fn run(&self, nat: &NatUnderTest) -> CheckResult {
        let mut record = Record::default();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (self.run)(nat, &mut record)));
        let stop = match outcome {
            Ok(stop) => stop,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panic".to_owned());
                Err(Stop::Error(format!("panicked: {msg}")))
            }
        };
        record.finish(self.id, stop)
    }

    /// Whether `query` selects this check: its test name, or a run of its id's words
    /// (`4787-REQ-8`, `REQ-12a`, `"RFC 5382 REQ-4"`, `7857`).
    #[must_use]
    pub fn matches(&self, query: &str) -> bool {
        if query == self.test {
            return true;
        }
        let words = |s: &str| -> Vec<String> {
            s.split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_ascii_lowercase)
                .map(|w| {
                    w.strip_prefix("rfc")
                        .filter(|r| !r.is_empty())
                        .map_or(w.clone(), str::to_owned)
                })
                .filter(|w| w != "rfc")
                .collect()
        };
        let (id, q) = (words(self.id), words(query));
        !q.is_empty() && id.windows(q.len()).any(|w| w == q.as_slice())
    }
}

/// Every check, in the order of RFC-REQUIREMENTS.md.
#[must_use]
pub fn all() -> Vec<Check> {
    let mut checks = rfc4787::checks();
    checks.extend(rfc5382::checks());
    checks.extend(rfc5508::checks());
    checks.extend(rfc6888::checks());
    checks
}

/// The check named `test` (for the integration tests).
///
/// # Panics
/// When there is none.
#[must_use]
pub fn by_test(test: &str) -> Check {
    all()
        .into_iter()
        .find(|c| c.test == test)
        .unwrap_or_else(|| panic!("no conformance check is named {test}"))
}

/// Runs the check named `test` against natgw and fails unless it passes; the body
/// of every test in `tests/conformance.rs`.
///
/// # Panics
/// When the check does not pass (the message has what was sent and observed).
pub fn assert_natgw_passes(test: &str) {
    testbed::require_root();
    let check = by_test(test);
    let result = check.run(&NatUnderTest::natgw());
    assert!(
        result.verdict == Verdict::Pass,
        "{} ({}): {}\n  sent:     {}\n  observed: {}",
        result.id,
        check.title,
        result.verdict.label(),
        result.sent,
        result.observed
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_test_names_are_unique_and_named_after_the_requirement() {
        let checks = all();
        for (i, a) in checks.iter().enumerate() {
            for b in &checks[i + 1..] {
                assert_ne!(a.id, b.id);
                assert_ne!(a.test, b.test);
            }
            let rfc = a.id.split_whitespace().nth(1).expect("RFC number");
            assert!(
                a.id == "port preservation" || a.test.starts_with(&format!("rfc{rfc}_")),
                "{} / {}",
                a.id,
                a.test
            );
        }
    }

    #[test]
    fn queries_select_by_words_of_the_id() {
        let checks = all();
        let picked = |q: &str| -> Vec<&str> {
            checks
                .iter()
                .filter(|c| c.matches(q))
                .map(|c| c.id)
                .collect()
        };
        assert_eq!(picked("4787-REQ-1"), ["RFC 4787 REQ-1"]);
        assert_eq!(picked("rfc4787 REQ-12a"), ["RFC 4787 REQ-12a"]);
        assert_eq!(picked("4787 REQ-8").len(), 3);
        assert!(picked("REQ-8").len() >= 5);
        assert!(picked("7857").len() >= 4);
    }

    #[test]
    fn a_record_without_expectations_fails() {
        let r = Record::default().finish("x", Ok(()));
        assert_eq!(r.verdict, Verdict::Fail);
        let mut rec = Record::default();
        rec.expect(true, "fine");
        assert_eq!(rec.finish("x", Ok(())).verdict, Verdict::Pass);
        let mut rec = Record::default();
        rec.expect(false, "broken");
        let r = rec.finish("x", Err(Stop::NotApplicable("why".to_owned())));
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.observed.contains("expected: broken"));
    }
}
