//! Logging: `env_logger` configured from `RUST_LOG` (default `info`) in one of three
//! formats, and the task that forwards the eBPF programs' log records into it.
//!
//! - `human`: `[time LEVEL target] event k=v ...`, coloured on a terminal;
//! - `journald`: `<N>target: event k=v ...`, the priority prefix of sd-daemon(3) on
//!   every line and no timestamp (the journal stamps each entry itself);
//! - `json`: one object per line with `ts`, `level`, `target`, `message`, and the
//!   message's `event` and `k=v` fields split out.
//!
//! `auto` picks `journald` when standard error is the journal's stream (systemd sets
//! `JOURNAL_STREAM` to its device and inode, see systemd.exec(5)) and `human`
//! otherwise.

use std::io::Write as _;

use aya::Ebpf;
use aya_log::EbpfLogger;
use log::Level;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `journald` under systemd's journal, `human` otherwise.
    #[default]
    Auto,
    /// Timestamp, level and module, for a terminal or a file.
    Human,
    /// Priority prefixes and no timestamps, for systemd's journal.
    Journald,
    /// One JSON object per line.
    Json,
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Human => "human",
            Self::Journald => "journald",
            Self::Json => "json",
        })
    }
}

impl LogFormat {
    /// The format `auto` stands for, given whether standard error is the journal.
    #[must_use]
    pub const fn resolve(self, stderr_is_journal: bool) -> Self {
        match self {
            Self::Auto if stderr_is_journal => Self::Journald,
            Self::Auto => Self::Human,
            other => other,
        }
    }
}

/// The format [`init`] chose (`auto` resolved).
static ACTIVE: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The format log lines are written in: what [`init`] chose, `human` before it ran.
#[must_use]
pub fn active_format() -> LogFormat {
    ACTIVE.get().copied().unwrap_or(LogFormat::Human)
}

/// A fatal error of a command, as its last line on standard error: `natgw: error:
/// ...` as the journal or a log shipper reads it in their formats (at error priority),
/// plain otherwise.
#[must_use]
pub fn fatal_line(message: &str) -> String {
    let text = format!("natgw: error: {message}");
    match active_format() {
        LogFormat::Journald => journald_line(Level::Error, "natgw", &format!("error: {message}"))
            .trim_end()
            .to_owned(),
        LogFormat::Json => json_line(&now_rfc3339(), Level::Error, "natgw", &text),
        LogFormat::Auto | LogFormat::Human => text,
    }
}

/// The current time as env_logger prints it (RFC 3339, UTC, milliseconds).
fn now_rfc3339() -> String {
    format!("{:.3}", jiff::Timestamp::now())
}

/// Installs the process-wide logger in `format`.
pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    let format = format.resolve(stderr_is_journal());
    let _ = ACTIVE.set(format);
    match format {
        LogFormat::Auto | LogFormat::Human => {
            builder.format_timestamp_millis();
        }
        LogFormat::Journald => {
            builder
                .write_style(env_logger::WriteStyle::Never)
                .format(|buf, record| {
                    let line =
                        journald_line(record.level(), record.target(), &record.args().to_string());
                    buf.write_all(line.as_bytes())
                });
        }
        LogFormat::Json => {
            builder
                .write_style(env_logger::WriteStyle::Never)
                .format(|buf, record| {
                    let ts = buf.timestamp_millis().to_string();
                    let line = json_line(
                        &ts,
                        record.level(),
                        record.target(),
                        &record.args().to_string(),
                    );
                    writeln!(buf, "{line}")
                });
        }
    }
    builder.init();
}

/// Whether standard error is the stream systemd connected to the journal:
/// `JOURNAL_STREAM` holds `DEVICE:INODE` of that stream, and a child that inherited the
/// variable but writes elsewhere must not use the journal's format.
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(libc::STDERR_FILENO) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// sd-daemon(3) priority of a level: err, warning, info, debug.
const fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// A record for the journal: every line (a message may hold several) carries the
/// priority prefix, so the journal files each at the right level.
#[must_use]
pub fn journald_line(level: Level, target: &str, message: &str) -> String {
    let mut out = String::with_capacity(message.len() + target.len() + 8);
    for line in message.lines() {
        out.push_str(&format!("<{}>{target}: {line}\n", priority(level)));
    }
    if out.is_empty() {
        out.push_str(&format!("<{}>{target}:\n", priority(level)));
    }
    out
}

/// A record as one JSON object: the message whole, and split into its `event` (the
/// leading `word.word` natgw's lines start with) and `fields` (the `key=value` pairs
/// that follow it, values unquoted).
#[must_use]
pub fn json_line(ts: &str, level: Level, target: &str, message: &str) -> String {
    let mut object = serde_json::Map::new();
    object.insert("ts".into(), ts.into());
    object.insert("level".into(), level.as_str().to_ascii_lowercase().into());
    object.insert("target".into(), target.into());
    object.insert("message".into(), message.into());
    let (event, fields) = split_event(message);
    if let Some(event) = event {
        object.insert("event".into(), event.into());
    }
    if !fields.is_empty() {
        let fields = fields
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        object.insert("fields".into(), serde_json::Value::Object(fields));
    }
    serde_json::Value::Object(object).to_string()
}

/// `event.name k=v k2="a b" free text` → the event and the fields up to the first
/// word that is not `key=value`.
fn split_event(message: &str) -> (Option<&str>, Vec<(String, String)>) {
    let mut rest = message;
    let mut event = None;
    let first_end = rest.find(' ').unwrap_or(rest.len());
    let first = &rest[..first_end];
    if first.contains('.') && !first.contains('=') && !first.ends_with(':') {
        event = Some(first);
        rest = rest[first_end..].trim_start();
    }
    let mut fields = Vec::new();
    while let Some(eq) = rest.find('=') {
        let key = &rest[..eq];
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            break;
        }
        let after = &rest[eq + 1..];
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            value.push(next);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let Some(end) = end else { break };
            (value, &quoted[end..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (
                after[..end].trim_end_matches([':', ',']).to_owned(),
                &after[end..],
            )
        };
        fields.push((key.to_owned(), value));
        rest = remaining.trim_start();
    }
    (event, fields)
}

/// Starts forwarding the programs' log records. The logger owns the `AYA_LOGS` ring
/// buffer: it must outlive program loading (the programs refer to the map's fd), so
/// the returned task owns it for the daemon's lifetime. `None` when the object does
/// not log or the reader cannot be set up (then kernel log lines are lost, nothing
/// else).
pub fn forward_ebpf_logs(ebpf: &mut Ebpf) -> Option<JoinHandle<()>> {
    let logger = match EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(aya_log::Error::MapNotFound) => {
            log::debug!("ebpf_log.absent the eBPF object has no AYA_LOGS map");
            return None;
        }
        Err(e) => {
            log::warn!("ebpf_log.unavailable error={e}: kernel-side log lines will not be shown");
            return None;
        }
    };
    // SAFETY: the logger owns the ring buffer map whose fd it returns; the fd stays
    // open and unchanged for as long as the logger (owned by the AsyncFd) lives.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("ebpf_log.unavailable error={e}: kernel-side log lines will not be shown");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            match fd.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => {
                    log::warn!("ebpf_log.stopped error={e}");
                    // Keep the logger (and its map) alive even though it is unread.
                    std::future::pending::<()>().await;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_journald_only_on_the_journal() {
        assert_eq!(LogFormat::Auto.resolve(true), LogFormat::Journald);
        assert_eq!(LogFormat::Auto.resolve(false), LogFormat::Human);
        assert_eq!(LogFormat::Json.resolve(true), LogFormat::Json);
        assert_eq!(LogFormat::Human.resolve(true), LogFormat::Human);
    }

    #[test]
    fn journald_lines_carry_priorities_on_every_line() {
        assert_eq!(
            journald_line(Level::Warn, "natgw::daemon", "reload.failed error=x"),
            "<4>natgw::daemon: reload.failed error=x\n"
        );
        assert_eq!(
            journald_line(Level::Error, "natgw", "a\nb"),
            "<3>natgw: a\n<3>natgw: b\n"
        );
        assert!(journald_line(Level::Info, "t", "x").starts_with("<6>"));
        assert!(journald_line(Level::Debug, "t", "x").starts_with("<7>"));
    }

    #[test]
    fn json_lines_split_event_and_fields() {
        let line = json_line(
            "2026-12-04T14:00:00.000Z",
            Level::Info,
            "natgw::daemon",
            "datapath.attached wan=eth0 mode=\"native xdp\" quote=\"a\\\"b\" then free text",
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "info");
        assert_eq!(v["target"], "natgw::daemon");
        assert_eq!(v["event"], "datapath.attached");
        assert_eq!(v["fields"]["wan"], "eth0");
        assert_eq!(v["fields"]["mode"], "native xdp");
        assert_eq!(v["fields"]["quote"], "a\"b");
        assert!(v["fields"].get("then").is_none());
        assert!(v["message"].as_str().unwrap().ends_with("then free text"));
        assert!(!line.contains('\n'));
    }

    #[test]
    fn json_lines_without_fields_are_plain() {
        let line = json_line("t", Level::Error, "natgw", "cannot start: no such device");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("event").is_none(), "{v}");
        assert!(v.get("fields").is_none(), "{v}");
        assert_eq!(v["message"], "cannot start: no such device");
    }
}
