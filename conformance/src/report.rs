//! Running the suite against one or two NATs and presenting the results: a wrapped
//! text table for terminals, a Markdown table for the README, JSON for scripts.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{json, Value};

use super::{Check, CheckResult, NatUnderTest, Verdict};

/// One requirement's results, one per NAT run (in the order of the NATs).
#[derive(Debug, Clone)]
pub struct Row {
    /// The check.
    pub check: Check,
    /// `(nat name, result)`.
    pub results: Vec<(&'static str, CheckResult)>,
}

impl Row {
    /// What was sent: the first non-empty description among the runs.
    #[must_use]
    pub fn sent(&self) -> &str {
        self.results
            .iter()
            .map(|(_, r)| r.sent.as_str())
            .find(|s| !s.is_empty())
            .unwrap_or("")
    }
}

/// Runs `checks` against each of `nats`, reporting progress on stderr.
#[must_use]
pub fn run(checks: &[Check], nats: &[NatUnderTest]) -> Vec<Row> {
    let total = checks.len();
    checks
        .iter()
        .enumerate()
        .map(|(i, check)| {
            let results = nats
                .iter()
                .map(|nat| {
                    let started = Instant::now();
                    let result = check.run(nat);
                    eprintln!(
                        "[{:>2}/{total}] {:<24} {:<8} {:<4} ({:.1} s)",
                        i + 1,
                        check.id,
                        nat.name(),
                        result.verdict.label(),
                        started.elapsed().as_secs_f64()
                    );
                    (nat.name(), result)
                })
                .collect();
            Row {
                check: *check,
                results,
            }
        })
        .collect()
}

/// The observation column of a result: n/a results lead with their reason.
fn observed(r: &CheckResult) -> String {
    match &r.verdict {
        Verdict::NotApplicable(reason) if r.observed.is_empty() => format!("n/a: {reason}"),
        Verdict::NotApplicable(reason) => format!("{}; n/a: {reason}", r.observed),
        _ => r.observed.clone(),
    }
}

/// The header cells: requirement, sent, then observed and verdict per NAT.
fn header(rows: &[Row]) -> Vec<String> {
    let mut h = vec!["requirement".to_owned(), "what was sent".to_owned()];
    if let Some(first) = rows.first() {
        for (nat, _) in &first.results {
            h.push(format!("{nat} observed"));
            h.push((*nat).to_owned());
        }
    }
    h
}

fn cells(row: &Row) -> Vec<String> {
    let mut c = vec![row.check.id.to_owned(), row.sent().to_owned()];
    for (_, r) in &row.results {
        c.push(observed(r));
        c.push(r.verdict.label().to_owned());
    }
    c
}

/// Splits `text` into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// A text table with wrapped columns.
#[must_use]
pub fn text(rows: &[Row]) -> String {
    let header = header(rows);
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| match i {
            0 => 22,
            1 => 38,
            i if i % 2 == 0 => 44,
            _ => h.len().max(4),
        })
        .collect();
    let mut out = String::new();
    let rule: String = widths
        .iter()
        .map(|w| "-".repeat(*w))
        .collect::<Vec<_>>()
        .join("-+-");
    let emit = |cols: &[String], out: &mut String| {
        let wrapped: Vec<Vec<String>> =
            cols.iter().zip(&widths).map(|(c, w)| wrap(c, *w)).collect();
        let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
        for line in 0..height {
            let parts: Vec<String> = wrapped
                .iter()
                .zip(&widths)
                .map(|(w, width)| format!("{:<width$}", w.get(line).map_or("", String::as_str)))
                .collect();
            let _ = writeln!(out, "{}", parts.join(" | ").trim_end());
        }
    };
    emit(&header, &mut out);
    let _ = writeln!(out, "{rule}");
    for row in rows {
        emit(&cells(row), &mut out);
        let _ = writeln!(out, "{rule}");
    }
    out
}

/// A Markdown table (for the README).
#[must_use]
pub fn markdown(rows: &[Row]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let header = header(rows);
    let mut out = format!("| {} |\n", header.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(header.len()));
    for row in rows {
        let c: Vec<String> = cells(row).iter().map(|c| esc(c)).collect();
        let _ = writeln!(out, "| {} |", c.join(" | "));
    }
    out
}

/// The results as JSON: one object per requirement.
#[must_use]
pub fn to_json(rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|row| {
                let mut o = json!({
                    "id": row.check.id,
                    "title": row.check.title,
                    "test": row.check.test,
                    "sent": row.sent(),
                });
                for (nat, r) in &row.results {
                    o[*nat] = json!({
                        "verdict": r.verdict.label(),
                        "observed": r.observed,
                        "reason": match &r.verdict {
                            Verdict::NotApplicable(reason) => Value::from(reason.as_str()),
                            _ => Value::Null,
                        },
                    });
                }
                o
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_words_and_width() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("", 5), [""]);
        assert_eq!(wrap("toolongword x", 4), ["toolongword", "x"]);
    }
}
