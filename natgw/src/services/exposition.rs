//! The Prometheus text exposition format, version 0.0.4 — what `GET /metrics`
//! answers with: `# HELP` and `# TYPE` lines, then the family's samples, one family
//! after another.
//!
//! Written by hand rather than with the `prometheus-client` crate: that crate writes
//! only OpenMetrics text (`# EOF`, `info` and `unknown` types, counters declared
//! without their `_total`), which the 0.0.4 parsers — `promtool check metrics`
//! among them — refuse. This module is small and its output is checked line by line
//! in its tests and by `promtool` in `tests/metrics.rs`.

use std::fmt::Write as _;

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in cumulative buckets, with `_sum` and `_count`.
    Histogram,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A histogram's state: bucket upper bounds (seconds, or any unit) and how many
/// observations fell at or under each, their sum and count.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative; the last one is `+Inf`'s.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (ascending).
    #[must_use]
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Observations so far.
    #[must_use]
    pub const fn count(&self) -> u64 {
        self.count
    }
}

/// A document being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    names: Vec<&'static str>,
}

/// One family's samples; write them before starting the next family.
pub struct Family<'a> {
    doc: &'a mut Exposition,
    name: &'static str,
}

impl Exposition {
    /// An empty document.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts family `name` of `kind`, described by `help` (one line).
    ///
    /// # Panics
    /// In debug builds, on a name that is not a metric name or is written twice, and
    /// on a counter whose name does not end in `_total`: natgw's own names, fixed in
    /// the code, which the tests exercise.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert!(valid_name(name), "metric name {name}");
        debug_assert!(!self.names.contains(&name), "{name} written twice");
        debug_assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name} without _total"
        );
        self.names.push(name);
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
        Family { doc: self, name }
    }

    /// The families written so far.
    #[must_use]
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// The document.
    #[must_use]
    pub fn finish(self) -> String {
        self.out
    }
}

impl Family<'_> {
    /// A sample with `labels` of an integer value (a counter or a count).
    pub fn int(&mut self, labels: &[(&str, &str)], value: u64) -> &mut Self {
        self.line("", labels, None, &value.to_string());
        self
    }

    /// A sample with `labels` of a real value.
    pub fn real(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.line("", labels, None, &real(value));
        self
    }

    /// A histogram's samples: `_bucket` per bound and `+Inf`, `_sum`, `_count`.
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &Histogram) -> &mut Self {
        let mut cumulative = 0;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = h
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| real(*b));
            self.line("_bucket", labels, Some(&le), &cumulative.to_string());
        }
        self.line("_sum", labels, None, &real(h.sum));
        self.line("_count", labels, None, &h.count.to_string());
        self
    }

    fn line(&mut self, suffix: &str, labels: &[(&str, &str)], le: Option<&str>, value: &str) {
        let out = &mut self.doc.out;
        out.push_str(self.name);
        out.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            out.push('{');
            let mut first = true;
            for (name, value) in labels.iter().copied().chain(le.map(|l| ("le", l))) {
                debug_assert!(valid_name(name) && !name.starts_with("__"), "label {name}");
                if !first {
                    out.push(',');
                }
                first = false;
                let _ = write!(out, "{name}=\"{}\"", escape_label(value));
            }
            out.push('}');
        }
        out.push(' ');
        out.push_str(value);
        out.push('\n');
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` (label names take no `:`, and natgw uses none).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as the format writes it (`+Inf`, `-Inf`, `NaN` spelled out).
fn real(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_written_in_the_0_0_4_text_format() {
        let mut doc = Exposition::new();
        doc.family(
            "natgw_drops_total",
            Kind::Counter,
            "Packets dropped, by reason.\nSee docs\\counters.md.",
        )
        .int(&[("reason", "spoofed")], 3)
        .int(&[("reason", "a \"quoted\"\\\nvalue")], 0);
        doc.family("natgw_up", Kind::Gauge, "Always 1.")
            .int(&[], 1)
            .real(&[("x", "y")], 0.25);
        let mut h = Histogram::new(&[0.001, 0.01]);
        for v in [0.0005, 0.001, 0.005, 2.0] {
            h.observe(v);
        }
        doc.family("natgw_gc_duration_seconds", Kind::Histogram, "GC passes.")
            .histogram(&[], &h);
        assert_eq!(
            doc.names(),
            ["natgw_drops_total", "natgw_up", "natgw_gc_duration_seconds"]
        );
        assert_eq!(
            doc.finish(),
            "# HELP natgw_drops_total Packets dropped, by reason.\\nSee docs\\\\counters.md.\n\
             # TYPE natgw_drops_total counter\n\
             natgw_drops_total{reason=\"spoofed\"} 3\n\
             natgw_drops_total{reason=\"a \\\"quoted\\\"\\\\\\nvalue\"} 0\n\
             # HELP natgw_up Always 1.\n\
             # TYPE natgw_up gauge\n\
             natgw_up 1\n\
             natgw_up{x=\"y\"} 0.25\n\
             # HELP natgw_gc_duration_seconds GC passes.\n\
             # TYPE natgw_gc_duration_seconds histogram\n\
             natgw_gc_duration_seconds_bucket{le=\"0.001\"} 2\n\
             natgw_gc_duration_seconds_bucket{le=\"0.01\"} 3\n\
             natgw_gc_duration_seconds_bucket{le=\"+Inf\"} 4\n\
             natgw_gc_duration_seconds_sum 2.0065\n\
             natgw_gc_duration_seconds_count 4\n"
        );
    }

    #[test]
    fn odd_floats_are_spelled_out_and_names_checked() {
        assert_eq!(real(f64::INFINITY), "+Inf");
        assert_eq!(real(f64::NEG_INFINITY), "-Inf");
        assert_eq!(real(f64::NAN), "NaN");
        assert_eq!(real(1e-7), "0.0000001");
        assert!(valid_name("natgw_x:y_total"));
        assert!(!valid_name("9x") && !valid_name("a-b") && !valid_name(""));
    }
}
