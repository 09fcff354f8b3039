//! Allocation log records for abuse handling (RFC 6888 REQ-12, RFC 6908, RFC 7422)
//! and the lookup `natgw who` makes in them.
//!
//! natgw allocates dynamically, one mapping per internal endpoint, so the log has one
//! record per mapping: a `start` when it is created, an `end` (with its duration)
//! when it expires or is deleted. Each names the time, the protocol, the internal
//! endpoint and the external address with a port range (in dynamic mode one port:
//! `6000-6000`; the field has the shape RFC 7422 port blocks will need). A record
//! never names a destination: the mapping events it is made from carry none.
//!
//! Two renderings of one [`Record`]:
//!
//! ```text
//! 2026-12-04T18:20:01.123Z start proto=udp int=10.0.1.2:5000 ext=192.0.2.1 ports=6000-6000 origin=traffic
//! 2026-12-04T18:21:02.456Z end proto=udp int=10.0.1.2:5000 ext=192.0.2.1 ports=6000-6000 origin=traffic reason=expire duration=61.333s
//! 2026-12-04T18:21:03.000Z lost count=12
//! ```
//!
//! and JSON lines with the fields `time`, `event`, `protocol`, `internal`,
//! `external`, `port_first`, `port_last`, `origin`, `reason`, `duration_s`, `count`
//! (the last three only where they apply). A `lost` record says that `count` records
//! could not be written (the data path's ring buffer or the controller's queue was
//! full): the log has a gap there.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// What a record says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A mapping was created.
    Start,
    /// A mapping ended (expired or deleted).
    End,
    /// Records were lost.
    Lost,
}

impl Event {
    /// `start`, `end` or `lost`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::End => "end",
            Self::Lost => "lost",
        }
    }
}

/// The mapping a `start` or `end` record is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// `udp`, `tcp`, `icmp` or `proto-N`.
    pub protocol: String,
    /// Internal endpoint (ICMP: the query identifier as the port).
    pub internal: SocketAddrV4,
    /// External address.
    pub external: Ipv4Addr,
    /// First external port of the range.
    pub port_first: u16,
    /// Last external port of the range (dynamic mode: `port_first`).
    pub port_last: u16,
    /// `traffic`, `pcp`, `nat-pmp`, `upnp` or `static`.
    pub origin: String,
}

/// One record of the allocation log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// When it happened (wall clock).
    pub time: Timestamp,
    /// What happened.
    pub event: Event,
    /// The mapping (`start`, `end`).
    pub allocation: Option<Allocation>,
    /// Why it ended: `expire` or `delete` (`end`).
    pub reason: Option<String>,
    /// How long it lasted (`end`, when its start is known).
    pub duration: Option<Duration>,
    /// How many records were lost (`lost`).
    pub count: Option<u64>,
}

/// A line that is not a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an allocation log record: {0}")]
pub struct ParseError(pub String);

/// A record as a JSON line holds it.
#[derive(Debug, Serialize, Deserialize)]
struct JsonRecord {
    time: String,
    event: Event,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    internal: Option<SocketAddrV4>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    external: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    port_first: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    port_last: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    duration_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    count: Option<u64>,
}

/// RFC 3339 in UTC with milliseconds.
fn time_text(t: Timestamp) -> String {
    format!("{t:.3}")
}

fn parse_time(s: &str) -> Result<Timestamp, ParseError> {
    s.parse()
        .map_err(|e| ParseError(format!("time `{s}`: {e}")))
}

impl Record {
    /// A `start` record.
    #[must_use]
    pub const fn start(time: Timestamp, allocation: Allocation) -> Self {
        Self {
            time,
            event: Event::Start,
            allocation: Some(allocation),
            reason: None,
            duration: None,
            count: None,
        }
    }

    /// An `end` record; `duration` when the start is known.
    #[must_use]
    pub fn end(
        time: Timestamp,
        allocation: Allocation,
        reason: &str,
        duration: Option<Duration>,
    ) -> Self {
        Self {
            time,
            event: Event::End,
            allocation: Some(allocation),
            reason: Some(reason.to_owned()),
            duration,
            count: None,
        }
    }

    /// A `lost` record.
    #[must_use]
    pub const fn lost(time: Timestamp, count: u64) -> Self {
        Self {
            time,
            event: Event::Lost,
            allocation: None,
            reason: None,
            duration: None,
            count: Some(count),
        }
    }

    /// The text line (no newline).
    #[must_use]
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = format!("{} {}", time_text(self.time), self.event.name());
        if let Some(a) = &self.allocation {
            let _ = write!(
                s,
                " proto={} int={} ext={} ports={}-{} origin={}",
                a.protocol, a.internal, a.external, a.port_first, a.port_last, a.origin
            );
        }
        if let Some(r) = &self.reason {
            let _ = write!(s, " reason={r}");
        }
        if let Some(d) = self.duration {
            let _ = write!(s, " duration={:.3}s", d.as_secs_f64());
        }
        if let Some(c) = self.count {
            let _ = write!(s, " count={c}");
        }
        s
    }

    /// Parses a text line.
    ///
    /// # Errors
    /// When a field is missing, unknown or malformed.
    pub fn from_text(line: &str) -> Result<Self, ParseError> {
        let bad = |what: &str| ParseError(format!("{what} in `{line}`"));
        let mut words = line.split_ascii_whitespace();
        let time = parse_time(words.next().ok_or_else(|| bad("no time"))?)?;
        let event = match words.next() {
            Some("start") => Event::Start,
            Some("end") => Event::End,
            Some("lost") => Event::Lost,
            _ => return Err(bad("no event (start, end or lost)")),
        };
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| bad(&format!("`{w}` is not KEY=VALUE")))?;
            fields.insert(k, v);
        }
        let mut json = JsonRecord {
            time: String::new(),
            event,
            protocol: fields.get("proto").map(|s| (*s).to_owned()),
            internal: fields
                .get("int")
                .map(|s| s.parse().map_err(|_| bad("int is not ADDR:PORT")))
                .transpose()?,
            external: fields
                .get("ext")
                .map(|s| s.parse().map_err(|_| bad("ext is not an address")))
                .transpose()?,
            port_first: None,
            port_last: None,
            origin: fields.get("origin").map(|s| (*s).to_owned()),
            reason: fields.get("reason").map(|s| (*s).to_owned()),
            duration_s: fields
                .get("duration")
                .map(|s| {
                    s.strip_suffix('s')
                        .and_then(|s| s.parse::<f64>().ok())
                        .ok_or_else(|| bad("duration is not SECONDSs"))
                })
                .transpose()?,
            count: fields
                .get("count")
                .map(|s| s.parse().map_err(|_| bad("count is not a number")))
                .transpose()?,
        };
        if let Some(p) = fields.get("ports") {
            let (a, b) = p
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .ok_or_else(|| bad("ports is not FIRST-LAST"))?;
            json.port_first = Some(a);
            json.port_last = Some(b);
        }
        Self::from_json_record(time, json).map_err(|e| bad(&e.0))
    }

    /// The JSON line (no newline).
    #[must_use]
    pub fn to_json(&self) -> String {
        let a = self.allocation.as_ref();
        let j = JsonRecord {
            time: time_text(self.time),
            event: self.event,
            protocol: a.map(|a| a.protocol.clone()),
            internal: a.map(|a| a.internal),
            external: a.map(|a| a.external),
            port_first: a.map(|a| a.port_first),
            port_last: a.map(|a| a.port_last),
            origin: a.map(|a| a.origin.clone()),
            reason: self.reason.clone(),
            // Milliseconds, as the text has.
            duration_s: self
                .duration
                .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
            count: self.count,
        };
        serde_json::to_string(&j).unwrap_or_default()
    }

    /// Parses a JSON line.
    ///
    /// # Errors
    /// When it is not JSON of a record.
    pub fn from_json(line: &str) -> Result<Self, ParseError> {
        let j: JsonRecord =
            serde_json::from_str(line).map_err(|e| ParseError(format!("{e} in `{line}`")))?;
        let time = parse_time(&j.time)?;
        Self::from_json_record(time, j)
    }

    /// Either rendering: a line starting with `{` is JSON.
    ///
    /// # Errors
    /// As [`Self::from_text`] and [`Self::from_json`].
    pub fn parse_line(line: &str) -> Result<Self, ParseError> {
        if line.trim_start().starts_with('{') {
            Self::from_json(line)
        } else {
            Self::from_text(line)
        }
    }

    fn from_json_record(time: Timestamp, j: JsonRecord) -> Result<Self, ParseError> {
        let allocation = match j.event {
            Event::Lost => None,
            Event::Start | Event::End => Some(Allocation {
                protocol: j.protocol.ok_or_else(|| ParseError("no protocol".into()))?,
                internal: j
                    .internal
                    .ok_or_else(|| ParseError("no internal endpoint".into()))?,
                external: j
                    .external
                    .ok_or_else(|| ParseError("no external address".into()))?,
                port_first: j
                    .port_first
                    .ok_or_else(|| ParseError("no port range".into()))?,
                port_last: j
                    .port_last
                    .ok_or_else(|| ParseError("no port range".into()))?,
                origin: j.origin.unwrap_or_else(|| "traffic".to_owned()),
            }),
        };
        if allocation
            .as_ref()
            .is_some_and(|a| a.port_first > a.port_last)
        {
            return Err(ParseError("port range ends before it starts".into()));
        }
        if j.event == Event::Lost && j.count.is_none() {
            return Err(ParseError("a lost record without count".into()));
        }
        let duration = j
            .duration_s
            .map(|s| Duration::try_from_secs_f64(s).map_err(|_| ParseError("bad duration".into())))
            .transpose()?;
        Ok(Self {
            time,
            event: j.event,
            allocation,
            reason: j.reason,
            duration,
            count: j.count,
        })
    }
}

/// One internal endpoint's hold of an external port, as the log tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holding {
    /// Protocol.
    pub protocol: String,
    /// Internal endpoint.
    pub internal: SocketAddrV4,
    /// External endpoint.
    pub external: SocketAddrV4,
    /// Origin of the mapping.
    pub origin: String,
    /// Start (RFC 3339); `None`: before the log begins.
    pub from: Option<String>,
    /// End (RFC 3339); `None`: no end in the log (still held, or held at least until
    /// the log ends).
    pub until: Option<String>,
    /// Records were lost between its start and the time asked about: another
    /// mapping's records may be missing.
    pub records_lost: bool,
}

/// A hold while it is being assembled.
#[derive(Clone)]
struct Span {
    allocation: Allocation,
    port: u16,
    from: Option<Timestamp>,
    until: Option<Timestamp>,
}

/// Who held external port `external` (of `protocol`, or any) at `at`, from the
/// records in log order: every hold whose start is at or before `at` and whose end is
/// at or after it (both ends count, so at a change-over both holders are named).
///
/// A `start` without an `end` holds until the next `start` of the same external
/// endpoint by another internal endpoint, or, without one, open-ended. An `end`
/// without a `start` (the log began later) starts at its time minus its duration,
/// or at an unknown time.
pub fn who<I: IntoIterator<Item = Record>>(
    records: I,
    external: SocketAddrV4,
    protocol: Option<&str>,
    at: Timestamp,
) -> Vec<Holding> {
    let mut open: HashMap<(String, u16), Span> = HashMap::new();
    let mut spans: Vec<Span> = Vec::new();
    let mut lost: Vec<Timestamp> = Vec::new();
    for r in records {
        if r.event == Event::Lost {
            lost.push(r.time);
            continue;
        }
        let Some(a) = r.allocation else { continue };
        let port = external.port();
        if a.external != *external.ip()
            || !(a.port_first..=a.port_last).contains(&port)
            // A port block's record (protocol `all`) covers every protocol.
            || protocol.is_some_and(|p| p != a.protocol && a.protocol != "all")
        {
            continue;
        }
        let key = (a.protocol.clone(), port);
        match r.event {
            Event::Start => {
                if let Some(mut prev) = open.remove(&key) {
                    if prev.allocation.internal == a.internal {
                        // The same mapping logged again (a restart): one hold.
                        open.insert(key, prev);
                        continue;
                    }
                    prev.until = Some(r.time);
                    spans.push(prev);
                }
                open.insert(
                    key,
                    Span {
                        allocation: a,
                        port,
                        from: Some(r.time),
                        until: None,
                    },
                );
            }
            Event::End => {
                let from = match open.remove(&key) {
                    Some(prev) if prev.allocation.internal == a.internal => prev.from,
                    other => {
                        if let Some(mut prev) = other {
                            // Another host's start with no end: ended by this one's
                            // hold at the latest.
                            prev.until = Some(r.time);
                            spans.push(prev);
                        }
                        r.duration
                            .and_then(|d| jiff::SignedDuration::try_from(d).ok())
                            .and_then(|d| r.time.checked_sub(d).ok())
                    }
                };
                spans.push(Span {
                    allocation: a,
                    port,
                    from,
                    until: Some(r.time),
                });
            }
            Event::Lost => {}
        }
    }
    spans.extend(open.into_values());
    let mut found: Vec<(Option<Timestamp>, Holding)> = spans
        .into_iter()
        .filter(|s| s.from.is_none_or(|f| f <= at) && s.until.is_none_or(|u| at <= u))
        .map(|s| {
            let records_lost = lost
                .iter()
                .any(|&t| s.from.is_none_or(|f| f <= t) && t <= at);
            (
                s.from,
                Holding {
                    protocol: s.allocation.protocol,
                    internal: s.allocation.internal,
                    external: SocketAddrV4::new(s.allocation.external, s.port),
                    origin: s.allocation.origin,
                    from: s.from.map(time_text),
                    until: s.until.map(time_text),
                    records_lost,
                },
            )
        })
        .collect();
    found.sort_by_key(|(from, h)| (*from, h.protocol.clone()));
    found.into_iter().map(|(_, h)| h).collect()
}

/// Parses a `--at` time: RFC 3339 (`2026-12-04T18:20:01Z`, an offset or `Z`
/// required) or Unix seconds (`1796408401`, fractions allowed).
///
/// # Errors
/// When it is neither.
pub fn parse_at(s: &str) -> Result<Timestamp, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            let d =
                jiff::SignedDuration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))?;
            return Timestamp::from_duration(d).map_err(|e| format!("`{s}`: {e}"));
        }
        return Err(format!("`{s}`: Unix seconds must be 0 or more"));
    }
    s.parse::<Timestamp>().map_err(|e| {
        format!(
            "`{s}` is neither an RFC 3339 time (2026-12-04T18:20:01Z, with Z or an offset) \
             nor Unix seconds: {e}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn alloc(internal: &str, ext_port: u16, proto: &str) -> Allocation {
        Allocation {
            protocol: proto.to_owned(),
            internal: internal.parse().unwrap(),
            external: Ipv4Addr::new(192, 0, 2, 1),
            port_first: ext_port,
            port_last: ext_port,
            origin: "traffic".to_owned(),
        }
    }

    #[test]
    fn records_render_and_parse_back_in_both_forms() {
        let a = alloc("10.0.1.2:5000", 6000, "udp");
        let start = Record::start(t("2026-12-04T18:20:01.123Z"), a.clone());
        assert_eq!(
            start.to_text(),
            "2026-12-04T18:20:01.123Z start proto=udp int=10.0.1.2:5000 ext=192.0.2.1 \
             ports=6000-6000 origin=traffic"
        );
        let end = Record::end(
            t("2026-12-04T18:21:02.456Z"),
            a,
            "expire",
            Some(Duration::from_millis(61_333)),
        );
        assert_eq!(
            end.to_text(),
            "2026-12-04T18:21:02.456Z end proto=udp int=10.0.1.2:5000 ext=192.0.2.1 \
             ports=6000-6000 origin=traffic reason=expire duration=61.333s"
        );
        assert_eq!(
            end.to_json(),
            r#"{"time":"2026-12-04T18:21:02.456Z","event":"end","protocol":"udp","internal":"10.0.1.2:5000","external":"192.0.2.1","port_first":6000,"port_last":6000,"origin":"traffic","reason":"expire","duration_s":61.333}"#
        );
        let lost = Record::lost(t("2026-12-04T18:21:03Z"), 12);
        assert_eq!(lost.to_text(), "2026-12-04T18:21:03.000Z lost count=12");
        assert_eq!(
            lost.to_json(),
            r#"{"time":"2026-12-04T18:21:03.000Z","event":"lost","count":12}"#
        );
        for r in [start, end, lost] {
            assert_eq!(Record::parse_line(&r.to_text()).unwrap(), r);
            assert_eq!(Record::parse_line(&r.to_json()).unwrap(), r);
        }
    }

    #[test]
    fn records_never_name_a_destination() {
        // The record has no field for one; its renderings hold two addresses only.
        let r = Record::end(
            t("2026-12-04T18:21:02Z"),
            alloc("10.0.1.2:5000", 6000, "tcp"),
            "delete",
            None,
        );
        for line in [r.to_text(), r.to_json()] {
            let addrs = line
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .filter(|w| w.parse::<Ipv4Addr>().is_ok())
                .collect::<Vec<_>>();
            assert_eq!(addrs, ["10.0.1.2", "192.0.2.1"], "{line}");
        }
    }

    #[test]
    fn bad_lines_are_errors() {
        for line in [
            "",
            "yesterday start",
            "2026-12-04T18:20:01Z begin",
            "2026-12-04T18:20:01Z start proto=udp",
            "2026-12-04T18:20:01Z start proto=udp int=10.0.1.2 ext=192.0.2.1 ports=1-1",
            "2026-12-04T18:20:01Z start proto=udp int=10.0.1.2:1 ext=192.0.2.1 ports=9-1",
            "2026-12-04T18:20:01Z start proto=udp int=10.0.1.2:1 ext=192.0.2.1 ports=1",
            "2026-12-04T18:20:01Z end proto=udp int=10.0.1.2:1 ext=192.0.2.1 ports=1-1 duration=x",
            "2026-12-04T18:20:01Z lost",
            "2026-12-04T18:20:01Z lost junk",
            "{\"time\":\"x\",\"event\":\"lost\",\"count\":1}",
            "{not json",
        ] {
            assert!(Record::parse_line(line).is_err(), "{line}");
        }
    }

    fn log() -> Vec<Record> {
        // Port 6000/udp: host .2 from 10:00 to 10:05, host .3 from 10:07, still open.
        // Port 6000/tcp: host .4 from 10:01 to 10:02.
        vec![
            Record::start(
                t("2026-12-04T10:00:00Z"),
                alloc("10.0.1.2:5000", 6000, "udp"),
            ),
            Record::start(
                t("2026-12-04T10:01:00Z"),
                alloc("10.0.1.4:7000", 6000, "tcp"),
            ),
            Record::end(
                t("2026-12-04T10:02:00Z"),
                alloc("10.0.1.4:7000", 6000, "tcp"),
                "expire",
                Some(Duration::from_secs(60)),
            ),
            Record::end(
                t("2026-12-04T10:05:00Z"),
                alloc("10.0.1.2:5000", 6000, "udp"),
                "expire",
                Some(Duration::from_secs(300)),
            ),
            Record::start(
                t("2026-12-04T10:07:00Z"),
                alloc("10.0.1.3:5001", 6000, "udp"),
            ),
            Record::start(t("2026-12-04T10:08:00Z"), alloc("10.0.1.9:1", 6001, "udp")),
        ]
    }

    fn hosts(at: &str, proto: Option<&str>) -> Vec<String> {
        who(log(), "192.0.2.1:6000".parse().unwrap(), proto, t(at))
            .into_iter()
            .map(|h| format!("{} {}", h.protocol, h.internal))
            .collect()
    }

    #[test]
    fn who_names_the_holder_at_the_time_asked() {
        assert!(hosts("2026-12-04T09:59:59Z", None).is_empty(), "before");
        assert_eq!(hosts("2026-12-04T10:00:00Z", None), ["udp 10.0.1.2:5000"]);
        assert_eq!(
            hosts("2026-12-04T10:01:30Z", None),
            ["udp 10.0.1.2:5000", "tcp 10.0.1.4:7000"]
        );
        assert_eq!(
            hosts("2026-12-04T10:01:30Z", Some("udp")),
            ["udp 10.0.1.2:5000"]
        );
        assert_eq!(hosts("2026-12-04T10:05:00Z", None), ["udp 10.0.1.2:5000"]);
        assert!(hosts("2026-12-04T10:05:01Z", None).is_empty(), "between");
        assert!(hosts("2026-12-04T10:06:59Z", None).is_empty(), "between");
        // The reuse by another host, open-ended.
        assert_eq!(hosts("2026-12-04T10:07:00Z", None), ["udp 10.0.1.3:5001"]);
        assert_eq!(hosts("2027-01-01T00:00:00Z", None), ["udp 10.0.1.3:5001"]);
        let h = &who(
            log(),
            "192.0.2.1:6000".parse().unwrap(),
            None,
            t("2026-12-04T10:03:00Z"),
        )[0];
        assert_eq!(h.from.as_deref(), Some("2026-12-04T10:00:00.000Z"));
        assert_eq!(h.until.as_deref(), Some("2026-12-04T10:05:00.000Z"));
        assert!(!h.records_lost);
        let other = who(
            log(),
            "192.0.2.2:6000".parse().unwrap(),
            None,
            t("2026-12-04T10:03:00Z"),
        );
        assert!(other.is_empty(), "another external address");
    }

    #[test]
    fn who_closes_a_start_without_end_at_the_next_holder_and_flags_losses() {
        let mut log = vec![
            Record::start(
                t("2026-12-04T10:00:00Z"),
                alloc("10.0.1.2:5000", 6000, "udp"),
            ),
            Record::lost(t("2026-12-04T10:04:00Z"), 3),
            Record::start(
                t("2026-12-04T10:07:00Z"),
                alloc("10.0.1.3:5001", 6000, "udp"),
            ),
        ];
        let ext = "192.0.2.1:6000".parse().unwrap();
        let at = |s| who(log.clone(), ext, None, t(s));
        assert_eq!(
            at("2026-12-04T10:03:00Z")[0].internal.to_string(),
            "10.0.1.2:5000"
        );
        assert!(!at("2026-12-04T10:03:00Z")[0].records_lost);
        let h = at("2026-12-04T10:06:00Z");
        assert_eq!(h.len(), 1);
        assert!(h[0].records_lost, "its end may be among the lost");
        assert_eq!(h[0].until.as_deref(), Some("2026-12-04T10:07:00.000Z"));
        // An end whose start predates the log starts at end - duration.
        log = vec![Record::end(
            t("2026-12-04T10:05:00Z"),
            alloc("10.0.1.2:5000", 6000, "udp"),
            "expire",
            Some(Duration::from_secs(60)),
        )];
        assert!(who(log.clone(), ext, None, t("2026-12-04T10:03:59Z")).is_empty());
        assert_eq!(who(log, ext, None, t("2026-12-04T10:04:00Z")).len(), 1);
    }

    #[test]
    fn at_times_parse() {
        assert_eq!(parse_at("0").unwrap(), Timestamp::UNIX_EPOCH);
        assert_eq!(
            parse_at("1796408401").unwrap(),
            Timestamp::from_second(1_796_408_401).unwrap()
        );
        assert_eq!(
            parse_at("2026-12-04T19:20:01+01:00").unwrap(),
            t("2026-12-04T18:20:01Z")
        );
        assert!(parse_at("2026-12-04 18:20:01").is_err(), "no offset");
        assert!(parse_at("-5").is_err());
        assert!(parse_at("tomorrow").unwrap_err().contains("RFC 3339"));
    }
}
