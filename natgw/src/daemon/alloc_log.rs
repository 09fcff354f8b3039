//! The allocation log (`--log-allocations`, docs/operations.md#abuse-handling): one
//! `start` and one `end` record per mapping (see [`crate::nat_table::alloc_log`]),
//! written to a file, a JSON-lines file or syslog.
//!
//! The records come from the mapping event hub `natgw monitor` reads
//! ([`crate::nat_table::events`]): the data path's creations through its
//! `MAPPING_EVENTS` ring buffer, and what the controller does itself (PCP, NAT-PMP,
//! UPnP and static forwards, expiries by the garbage collector, deletions). The
//! writer is a subscriber of the hub from before the data path is enabled, so the
//! data path keeps writing mapping events (`CONFIG_F_MAPPING_EVENTS`) as long as
//! natgw runs. Records that cannot be had — the ring buffer was full (the data path
//! counts `event_lost`), or this writer fell more than
//! [`crate::nat_table::events::QUEUE`] events behind — are never lost silently: a
//! `lost count=N` record says how many.
//!
//! Files are opened for appending and reopened on SIGHUP, so logrotate can rename
//! them. Syslog messages go to a unix datagram socket (/dev/log unless the target
//! names another) in the RFC 3164 form glibc's `syslog(3)` sends locally,
//! `<30>Mmm dd hh:mm:ss natgw[PID]: RECORD` (facility daemon, severity info).
//! The form is one `format!`, and a socket of our choosing is needed for tests, so
//! there is no syslog crate.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use jiff::Timestamp;
use natgw_common::maps::{MappingEvent, MappingEventKind};
use natgw_common::{FwdKey, Mapping, Origin};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::control;
use crate::config::AllocLogTarget;
use crate::datapath::maps::{ipv4, port};
use crate::datapath::system::monotonic_ns;
use crate::nat_table::alloc_log::{Allocation, Record};
use crate::nat_table::events;

/// What the daemon tells the writer besides the events.
#[derive(Debug)]
enum Note {
    /// SIGHUP: reopen the file.
    Reopen,
    /// The data path could not report `n` mappings (its ring buffer was full).
    Lost(u64),
    /// natgw stops: write what is queued and end.
    Stop,
}

/// The running writer.
pub struct AllocLog {
    notes: mpsc::UnboundedSender<Note>,
    task: JoinHandle<()>,
}

impl AllocLog {
    /// Opens `target` and starts writing every mapping event from now on.
    /// `existing` are the mappings already in the table (adopted from a previous
    /// natgw): each gets a `start` record with its creation time first, since the
    /// ones created while no natgw ran were never logged (`natgw who` counts a
    /// start logged twice as one hold).
    ///
    /// # Errors
    /// When the target cannot be opened.
    ///
    /// In port-block mode (`blocks`: host, external address, first and last port of
    /// each block of the shares owned here) the log has one record per block
    /// instead (RFC 7422): a `start` for each now, an `end` for each when natgw
    /// stops, protocol `all` and origin `block`. A host's mappings all lie in its
    /// block, so per-mapping records would say nothing more, and the data path is
    /// not asked for mapping events.
    pub fn start(
        target: &AllocLogTarget,
        existing: &[(FwdKey, Mapping)],
        blocks: Option<Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr, u16, u16)>>,
    ) -> Result<Self> {
        let sink = Sink::open(target)?;
        let (notes, notes_rx) = mpsc::unbounded_channel();
        if let Some(blocks) = blocks {
            let mut writer = BlockWriter::new(sink, &blocks);
            writer.start();
            log::info!("alloc_log.started target={target} blocks={}", blocks.len());
            let task = tokio::spawn(writer.run(notes_rx));
            return Ok(Self { notes, task });
        }
        events::install();
        let receiver = events::subscribe_internal().context("the mapping event hub is missing")?;
        let mut writer = Writer {
            sink,
            open: HashMap::new(),
            clock: Clock::now(),
        };
        let mut adopted: Vec<MappingEvent> = existing
            .iter()
            .map(|(k, m)| MappingEvent::new(MappingEventKind::Create as u8, k, m, m.created_ns))
            .collect();
        adopted.sort_by_key(|e| e.time_ns);
        let records: Vec<Record> = adopted
            .into_iter()
            .filter_map(|e| writer.record(Item::Event(e)))
            .collect();
        writer.sink.write(&records);
        log::info!(
            "alloc_log.started target={target} mappings_in_table={}",
            existing.len()
        );
        let task = tokio::spawn(writer.run(receiver, notes_rx));
        Ok(Self { notes, task })
    }

    /// SIGHUP: the file is reopened (after logrotate renamed it).
    pub fn reopen(&self) {
        let _ = self.notes.send(Note::Reopen);
    }

    /// The data path's `event_lost` counter grew by `n`.
    pub fn lost(&self, n: u64) {
        if n > 0 {
            let _ = self.notes.send(Note::Lost(n));
        }
    }

    /// Stops writing at once (what is still queued is not written).
    pub fn stop(self) {
        self.task.abort();
    }

    /// Stops writing after the events of the last [`control::DRAIN_INTERVAL`] (the
    /// ring buffer's last drain) are written; waits at most a second for it.
    pub async fn finish(self) {
        tokio::time::sleep(control::DRAIN_INTERVAL * 2).await;
        let _ = self.notes.send(Note::Stop);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(1), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// `CLOCK_MONOTONIC` (event times) to wall clock, re-read for every batch so a
/// wall-clock step shows in the next records.
#[derive(Clone, Copy)]
struct Clock {
    wall: Timestamp,
    mono_ns: u64,
}

impl Clock {
    fn now() -> Self {
        Self {
            wall: Timestamp::now(),
            mono_ns: monotonic_ns(),
        }
    }

    fn wall_of(self, mono_ns: u64) -> Timestamp {
        let (sign, ns) = if mono_ns <= self.mono_ns {
            (-1, self.mono_ns - mono_ns)
        } else {
            (1, mono_ns - self.mono_ns)
        };
        let d = jiff::SignedDuration::from_nanos(i64::try_from(ns).unwrap_or(i64::MAX) * sign);
        self.wall.checked_add(d).unwrap_or(self.wall)
    }
}

/// Open mappings: (proto, external address, external port) -> (internal address,
/// internal port, start), all as the maps hold them.
type OpenMappings = HashMap<(u8, u32, u16), (u32, u16, u64)>;

struct Writer {
    sink: Sink,
    open: OpenMappings,
    clock: Clock,
}

impl Writer {
    async fn run(
        mut self,
        mut events: broadcast::Receiver<MappingEvent>,
        mut notes: mpsc::UnboundedReceiver<Note>,
    ) {
        let mut stop = false;
        while !stop {
            let mut batch = Vec::new();
            tokio::select! {
                r = events.recv() => match r {
                    Ok(e) => batch.push(Item::Event(e)),
                    Err(broadcast::error::RecvError::Lagged(n)) => batch.push(Item::Lost(n)),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some(note) = notes.recv() => match note {
                    Note::Reopen => self.sink.reopen(),
                    Note::Lost(n) => batch.push(Item::Lost(n)),
                    Note::Stop => stop = true,
                },
            }
            // Whatever else is waiting goes in the same write.
            while batch.len() < events::QUEUE {
                match events.try_recv() {
                    Ok(e) => batch.push(Item::Event(e)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => batch.push(Item::Lost(n)),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            self.clock = Clock::now();
            let records: Vec<Record> = batch
                .into_iter()
                .filter_map(|item| self.record(item))
                .collect();
            self.sink.write(&records);
        }
    }

    /// The record of one event (and the open mappings brought up to date).
    fn record(&mut self, item: Item) -> Option<Record> {
        let e = match item {
            Item::Lost(n) => {
                log::warn!(
                    "alloc_log.lost count={n}: mapping events were lost; a `lost` record marks \
                     the gap"
                );
                return Some(Record::lost(millis(self.clock.wall), n));
            }
            Item::Event(e) => e,
        };
        let kind = MappingEventKind::from_u8(e.kind)?;
        let allocation = Allocation {
            protocol: crate::nat_table::gc::proto_name(e.proto),
            internal: std::net::SocketAddrV4::new(ipv4(e.int_addr_be), port(e.int_port_be)),
            external: ipv4(e.ext_addr_be),
            port_first: port(e.ext_port_be),
            port_last: port(e.ext_port_be),
            origin: Origin::from_u8(e.origin)
                .map_or_else(|| format!("unknown-{}", e.origin), |o| o.name().to_owned()),
        };
        let time = millis(self.clock.wall_of(e.time_ns));
        let key = (e.proto, e.ext_addr_be, e.ext_port_be);
        Some(match kind {
            MappingEventKind::Create => {
                self.open
                    .insert(key, (e.int_addr_be, e.int_port_be, e.time_ns));
                Record::start(time, allocation)
            }
            MappingEventKind::Delete | MappingEventKind::Expire => {
                let duration = match self.open.get(&key) {
                    Some(&(a, p, start)) if a == e.int_addr_be && p == e.int_port_be => {
                        self.open.remove(&key);
                        Some(Duration::from_nanos(e.time_ns.saturating_sub(start)))
                    }
                    _ => None,
                };
                Record::end(time, allocation, kind.name(), duration)
            }
        })
    }
}

/// The writer of port-block mode: a `start` record per block when natgw starts, an
/// `end` per block when it stops.
struct BlockWriter {
    sink: Sink,
    blocks: Vec<Allocation>,
    started: Timestamp,
}

impl BlockWriter {
    fn new(sink: Sink, blocks: &[(std::net::Ipv4Addr, std::net::Ipv4Addr, u16, u16)]) -> Self {
        Self {
            sink,
            blocks: blocks
                .iter()
                .map(|&(host, external, port_first, port_last)| Allocation {
                    protocol: "all".to_owned(),
                    internal: std::net::SocketAddrV4::new(host, 0),
                    external,
                    port_first,
                    port_last,
                    origin: "block".to_owned(),
                })
                .collect(),
            started: millis(Timestamp::now()),
        }
    }

    fn start(&mut self) {
        let records: Vec<Record> = self
            .blocks
            .iter()
            .map(|a| Record::start(self.started, a.clone()))
            .collect();
        self.sink.write(&records);
    }

    async fn run(mut self, mut notes: mpsc::UnboundedReceiver<Note>) {
        while let Some(note) = notes.recv().await {
            match note {
                Note::Reopen => self.sink.reopen(),
                Note::Lost(_) => {} // no mapping events are read in block mode
                Note::Stop => break,
            }
        }
        let now = millis(Timestamp::now());
        let duration = now.duration_since(self.started).unsigned_abs();
        let records: Vec<Record> = self
            .blocks
            .iter()
            .map(|a| Record::end(now, a.clone(), "stop", Some(duration)))
            .collect();
        self.sink.write(&records);
    }
}

/// `t` to the millisecond the records show.
fn millis(t: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(t.as_millisecond()).unwrap_or(t)
}

#[derive(Clone, Copy)]
enum Item {
    Event(MappingEvent),
    Lost(u64),
}

/// Where records go.
enum Sink {
    /// A text or JSON-lines file.
    File {
        path: PathBuf,
        json: bool,
        file: File,
        failing: bool,
    },
    /// A syslog socket.
    Syslog {
        socket: UnixDatagram,
        path: PathBuf,
        failing: bool,
    },
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("opening the allocation log {}", path.display()))
}

impl Sink {
    fn open(target: &AllocLogTarget) -> Result<Self> {
        Ok(match target {
            AllocLogTarget::File(path) | AllocLogTarget::Json(path) => Self::File {
                file: open_append(path)?,
                path: path.clone(),
                json: matches!(target, AllocLogTarget::Json(_)),
                failing: false,
            },
            AllocLogTarget::Syslog(path) => {
                let socket = UnixDatagram::unbound().context("creating a unix datagram socket")?;
                // A slow syslog daemon must not stall the controller: a full socket
                // queue is a write error, logged.
                socket.set_nonblocking(true)?;
                if !path.exists() {
                    anyhow::bail!(
                        "the syslog socket {} does not exist (is a syslog daemon or \
                         systemd-journald running?)",
                        path.display()
                    );
                }
                Self::Syslog {
                    socket,
                    path: path.clone(),
                    failing: false,
                }
            }
        })
    }

    fn reopen(&mut self) {
        if let Self::File { path, file, .. } = self {
            match open_append(path) {
                Ok(f) => {
                    *file = f;
                    log::info!("alloc_log.reopened path={}", path.display());
                }
                Err(e) => log::error!(
                    "alloc_log.reopen_failed error=\"{e:#}\": records keep going to the file \
                     open before"
                ),
            }
        }
    }

    fn write(&mut self, records: &[Record]) {
        match self {
            Self::File {
                path,
                json,
                file,
                failing,
            } => {
                let mut text = String::new();
                for r in records {
                    text.push_str(&if *json { r.to_json() } else { r.to_text() });
                    text.push('\n');
                }
                let result = file.write_all(text.as_bytes());
                report(result, failing, records.len(), &path.display().to_string());
            }
            Self::Syslog {
                socket,
                path,
                failing,
            } => {
                let header = syslog_header(Timestamp::now());
                let mut result = Ok(());
                for r in records {
                    let message = format!("{header}{}", r.to_text());
                    if let Err(e) = socket.send_to(message.as_bytes(), &*path) {
                        result = Err(e);
                    }
                }
                report(result, failing, records.len(), &path.display().to_string());
            }
        }
    }
}

/// Logs a failed write once per episode of failures.
fn report(result: std::io::Result<()>, failing: &mut bool, records: usize, target: &str) {
    match result {
        Ok(()) => {
            if *failing {
                log::info!("alloc_log.writing_again target={target}");
            }
            *failing = false;
        }
        Err(e) => {
            if !*failing {
                log::error!(
                    "alloc_log.write_failed target={target} records={records} error=\"{e}\": \
                     records are being lost (logged once until writes succeed again)"
                );
            }
            *failing = true;
        }
    }
}

/// `<30>Mmm dd hh:mm:ss natgw[PID]: ` — RFC 3164 as glibc sends it to /dev/log:
/// facility daemon (3), severity info (6), local time.
fn syslog_header(now: Timestamp) -> String {
    let local = now.to_zoned_datetime(jiff::tz::TimeZone::system());
    format!(
        "<30>{} natgw[{}]: ",
        local.strftime("%b %e %H:%M:%S"),
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_common::{addr_be, IPPROTO_UDP};

    fn event(kind: MappingEventKind, internal: [u8; 4], time_ns: u64) -> MappingEvent {
        let key = FwdKey::new(addr_be(internal), 5000u16.to_be(), IPPROTO_UDP);
        let m = Mapping {
            ext_addr_be: addr_be([192, 0, 2, 1]),
            ext_port_be: 6000u16.to_be(),
            origin: Origin::Traffic as u8,
            ..Mapping::default()
        };
        MappingEvent::new(kind as u8, &key, &m, time_ns)
    }

    fn writer(path: &Path) -> Writer {
        Writer {
            sink: Sink::open(&AllocLogTarget::File(path.to_owned())).unwrap(),
            open: HashMap::new(),
            clock: Clock {
                wall: "2026-12-04T10:00:00Z".parse().unwrap(),
                mono_ns: 1_000_000_000_000,
            },
        }
    }

    #[test]
    fn events_become_start_and_end_records_with_the_duration() {
        let dir = std::env::temp_dir().join(format!("natgw-alloc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = writer(&dir.join("a.log"));
        let s = w
            .record(Item::Event(event(
                MappingEventKind::Create,
                [10, 0, 1, 2],
                999_000_000_000,
            )))
            .unwrap();
        assert_eq!(
            s.to_text(),
            "2026-12-04T09:59:59.000Z start proto=udp int=10.0.1.2:5000 ext=192.0.2.1 \
             ports=6000-6000 origin=traffic"
        );
        // Another host's end of the same external port (its start unknown): no
        // duration; the open one stays.
        let other = w
            .record(Item::Event(event(
                MappingEventKind::Delete,
                [10, 0, 1, 3],
                1_000_000_000_000,
            )))
            .unwrap();
        assert_eq!(other.duration, None);
        let e = w
            .record(Item::Event(event(
                MappingEventKind::Expire,
                [10, 0, 1, 2],
                1_061_500_000_000,
            )))
            .unwrap();
        assert_eq!(
            e.to_text(),
            "2026-12-04T10:01:01.500Z end proto=udp int=10.0.1.2:5000 ext=192.0.2.1 \
             ports=6000-6000 origin=traffic reason=expire duration=62.500s"
        );
        assert!(w.open.is_empty());
        let lost = w.record(Item::Lost(4)).unwrap();
        assert_eq!(lost.count, Some(4));
        w.sink.write(&[s.clone(), e.clone(), lost.clone()]);
        let text = std::fs::read_to_string(dir.join("a.log")).unwrap();
        let parsed: Vec<Record> = text
            .lines()
            .map(|l| Record::parse_line(l).unwrap())
            .collect();
        assert_eq!(parsed, [s, e, lost]);
        // Renamed away (logrotate), then reopened: new records go to a new file.
        std::fs::rename(dir.join("a.log"), dir.join("a.log.1")).unwrap();
        w.sink.reopen();
        w.sink.write(&[Record::lost(Timestamp::UNIX_EPOCH, 1)]);
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log")).unwrap(),
            "1970-01-01T00:00:00.000Z lost count=1\n"
        );
        assert_eq!(std::fs::read_to_string(dir.join("a.log.1")).unwrap(), text);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn mappings_in_the_table_at_start_are_logged_with_their_creation_time() {
        let dir = std::env::temp_dir().join(format!("natgw-alloc-start-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        // Addresses no other test uses: the hub is the process's, and other tests
        // running meanwhile may emit into it.
        let key = FwdKey::new(addr_be([10, 99, 1, 2]), 5999u16.to_be(), IPPROTO_UDP);
        let m = Mapping {
            ext_addr_be: addr_be([192, 0, 2, 99]),
            ext_port_be: 6999u16.to_be(),
            origin: Origin::Traffic as u8,
            created_ns: monotonic_ns() - 5_000_000_000,
            ..Mapping::default()
        };
        let before = Timestamp::now();
        let log = AllocLog::start(&AllocLogTarget::File(path.clone()), &[(key, m)], None).unwrap();
        let ours = |event: &str| {
            let text = std::fs::read_to_string(&path).unwrap();
            let line = text
                .lines()
                .find(|l| l.contains(&format!(" {event} proto=udp int=10.99.1.2:5999 ")))
                .unwrap_or_else(|| panic!("no {event} record: {text}"))
                .to_owned();
            (Record::from_text(&line).unwrap(), text)
        };
        let (r, text) = ours("start");
        assert_eq!(r.event, crate::nat_table::alloc_log::Event::Start);
        let age = before.duration_since(r.time).as_secs_f64();
        assert!((4.5..6.0).contains(&age), "{text}");
        // Its end, emitted through the hub, is written before `finish` returns, with
        // the duration from the creation time.
        events::emit(MappingEvent::new(
            MappingEventKind::Expire as u8,
            &key,
            &m,
            monotonic_ns(),
        ));
        log.finish().await;
        let (end, text) = ours("end");
        let d = end.duration.expect("a duration").as_secs_f64();
        assert!((4.5..6.0).contains(&d), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn block_mode_logs_one_start_and_one_end_per_block_and_no_mappings() {
        // rfc7422 §2, rfc6888 REQ-12: a record per block, and `natgw who` finds the
        // block's host for any of its ports and any protocol.
        let dir = std::env::temp_dir().join(format!("natgw-alloc-blocks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.log");
        let ext = std::net::Ipv4Addr::new(192, 0, 2, 7);
        let blocks = vec![
            (std::net::Ipv4Addr::new(10, 7, 0, 1), ext, 1024, 2023),
            (std::net::Ipv4Addr::new(10, 7, 0, 2), ext, 2024, 3023),
        ];
        let log = AllocLog::start(&AllocLogTarget::File(path.clone()), &[], Some(blocks)).unwrap();
        log.finish().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<Record> = text
            .lines()
            .map(|l| Record::from_text(l).unwrap())
            .collect();
        assert_eq!(records.len(), 4, "{text}");
        assert!(
            text.lines().next().unwrap().ends_with(
                " start proto=all int=10.7.0.1:0 ext=192.0.2.7 ports=1024-2023 origin=block"
            ),
            "{text}"
        );
        assert!(text.lines().nth(3).unwrap().contains(" end proto=all int=10.7.0.2:0 ext=192.0.2.7 ports=2024-3023 origin=block reason=stop"), "{text}");
        let at = records[0].time;
        let who = crate::nat_table::alloc_log::who(
            records,
            std::net::SocketAddrV4::new(ext, 2500),
            Some("tcp"),
            at,
        );
        assert_eq!(who.len(), 1, "{who:?}");
        assert_eq!(*who[0].internal.ip(), std::net::Ipv4Addr::new(10, 7, 0, 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_json_target_gets_json_lines() {
        let dir = std::env::temp_dir().join(format!("natgw-alloc-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.jsonl");
        let mut sink = Sink::open(&AllocLogTarget::Json(path.clone())).unwrap();
        let mut w = writer(&dir.join("unused.log"));
        let records: Vec<Record> = [
            Item::Event(event(
                MappingEventKind::Create,
                [10, 0, 1, 2],
                1_000_000_000_000,
            )),
            Item::Event(event(
                MappingEventKind::Delete,
                [10, 0, 1, 2],
                1_002_000_000_000,
            )),
        ]
        .into_iter()
        .filter_map(|i| w.record(i))
        .collect();
        sink.write(&records);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        let parsed: Vec<Record> = text
            .lines()
            .map(|l| Record::from_json(l).unwrap())
            .collect();
        assert_eq!(parsed, records);
        assert!(
            text.contains(r#""event":"end","#) && text.contains(r#""duration_s":2.0"#),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syslog_messages_are_rfc3164_datagrams() {
        let dir = std::env::temp_dir().join(format!("natgw-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut sink = Sink::open(&AllocLogTarget::Syslog(path.clone())).unwrap();
        let r = Record::lost("2026-12-04T10:00:00Z".parse().unwrap(), 2);
        sink.write(std::slice::from_ref(&r));
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        let (header, body) = msg.split_once(": ").unwrap();
        assert!(header.starts_with("<30>"), "{msg}");
        assert!(
            header.ends_with(&format!(" natgw[{}]", std::process::id())),
            "{msg}"
        );
        // `<30>Mmm dd hh:mm:ss`: 4 + 15 characters before the tag.
        assert_eq!(
            header.len(),
            4 + 15 + " natgw[]".len() + std::process::id().to_string().len()
        );
        assert_eq!(Record::from_text(body).unwrap(), r);
        assert!(Sink::open(&AllocLogTarget::Syslog(dir.join("none"))).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
