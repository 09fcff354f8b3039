//! `cargo xtask bench --ha-only`: state replication to a standby (issue #16): the
//! replication lag (from the packet that creates a mapping on the active to the
//! mapping in the standby's `NAT_FWD`) and the replication rate (mappings per second
//! the standby installs while the active creates a burst of them).
//!
//! The topology is `testbed::Pair`: natgw A (active) and B (standby) with the
//! replication link between them. The generator is a raw socket in the client
//! namespace sending one UDP datagram per new source port; the standby's table is
//! watched through its pinned `NAT_FWD` (batched lookups), so the figures are what
//! the kernel maps hold, not what a log says.

use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use aya::maps::MapData;
use natgw_common::{addr_be, FwdKey, Mapping, IPPROTO_UDP};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use testbed::pair::{PAIR_CLIENT_ADDR, PAIR_FAR_ADDR, PAIR_HA_A_ADDR, PAIR_HA_B_ADDR};
use testbed::{Natgw, Pair, PairSide};

/// The section of docs/benchmarks.md.
pub const HEADING: &str = "## State replication to a standby (issue #16)";

/// Lag samples: one new mapping at a time.
const LAG_SAMPLES: usize = 20;
/// Mappings in the burst.
pub const BURST: usize = 20_000;
/// Longest wait for the standby.
const WAIT: Duration = Duration::from_secs(60);
const HA_PORT: u16 = 7790;

/// One run's figures.
#[derive(Clone, Debug, Serialize)]
pub struct HaResult {
    /// Lag samples, ms: median, 90th percentile, max.
    pub lag_ms: [f64; 3],
    /// Mappings in the burst.
    pub burst: usize,
    /// Seconds the generator took to send the burst.
    pub send_s: f64,
    /// Seconds until the active's table held the whole burst.
    pub active_s: f64,
    /// Seconds until the standby's table held the whole burst.
    pub standby_s: f64,
    /// Mappings per second the standby installed (burst / standby_s).
    pub rate_per_s: f64,
    /// The active's data path could not write this many mapping events (full ring):
    /// the pass over the tables sent those.
    pub events_lost: u64,
    /// The active's `ha_reconciliations`.
    pub reconciliations: u64,
    /// Records the active sent over the whole run.
    pub records_sent: u64,
    /// `/proc/loadavg` before the run.
    pub loadavg: String,
}

struct KeyFile(PathBuf);

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn start(bin: &Path, pair: &Pair, side: PairSide, key: &Path, log: &Path) -> Result<Natgw> {
    let (own, peer, role) = match side {
        PairSide::A => (PAIR_HA_A_ADDR, PAIR_HA_B_ADDR, "active"),
        PairSide::B => (PAIR_HA_B_ADDR, PAIR_HA_A_ADDR, "standby"),
    };
    let args = [
        "--ha-listen".to_owned(),
        SocketAddrV4::new(own, HA_PORT).to_string(),
        "--ha-peer".to_owned(),
        SocketAddrV4::new(peer, HA_PORT).to_string(),
        "--ha-key-file".to_owned(),
        key.display().to_string(),
        "--ha-role".to_owned(),
        role.to_owned(),
        // One host makes every mapping: no per-host limits.
        "--max-ports-per-host".to_owned(),
        "0".to_owned(),
        "--host-mapping-rate".to_owned(),
        "0".to_owned(),
        "--no-upnp".to_owned(),
        "--no-stun".to_owned(),
    ];
    Ok(Natgw::builder(bin)
        .ifaces(["--wan", "wan0", "--lan", "lan0"])
        .args(args)
        .log(log)
        .rust_log(None)
        .ready_within(Duration::from_secs(120))
        .remove_leftovers()
        .start(pair.gateway(side))?)
}

fn fwd(natgw: &Natgw) -> Result<MapData> {
    let path = natgw.pin_dir().join("NAT_FWD");
    MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))
}

fn table(map: &MapData) -> Result<Vec<(FwdKey, Mapping)>> {
    natgw_common::batch::lookup_batch::<FwdKey, Mapping>(map, 4096)
        .map_err(|e| anyhow::anyhow!("reading NAT_FWD: {e}"))
}

/// How many mappings of the client have a source port in `ports`.
fn count(map: &MapData, ports: std::ops::Range<u16>) -> Result<usize> {
    let client = addr_be(PAIR_CLIENT_ADDR.octets());
    Ok(table(map)?
        .iter()
        .filter(|(k, _)| {
            k.addr_be == client
                && k.proto == IPPROTO_UDP
                && ports.contains(&u16::from_be(k.port_be))
        })
        .count())
}

/// A UDP datagram with source port `sport`, IPv4 header included (the kernel fills
/// in the length, identification and checksum; the UDP checksum is 0, none).
fn datagram(sport: u16) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[0] = 0x45;
    d[2..4].copy_from_slice(&32u16.to_be_bytes());
    d[6] = 0x40;
    d[8] = 64;
    d[9] = IPPROTO_UDP;
    d[12..16].copy_from_slice(&PAIR_CLIENT_ADDR.octets());
    d[16..20].copy_from_slice(&PAIR_FAR_ADDR.octets());
    d[20..22].copy_from_slice(&sport.to_be_bytes());
    d[22..24].copy_from_slice(&9u16.to_be_bytes());
    d[24..26].copy_from_slice(&12u16.to_be_bytes());
    d[28..32].copy_from_slice(b"sync");
    d
}

fn wait_until(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<Instant> {
    let deadline = Instant::now() + WAIT;
    loop {
        if done()? {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("{what} within {} s", WAIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn controller(natgw: &Natgw, name: &str) -> u64 {
    natgw
        .status()
        .ok()
        .and_then(|s| s["controller_counters"][name].as_u64())
        .unwrap_or(0)
}

/// One run: a fresh pair, the lag samples, then the burst.
pub fn run(bin: &Path, log_dir: &Path) -> Result<HaResult> {
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let pair = Pair::new().map_err(|e| anyhow::anyhow!("{}", e.chain()))?;
    let key = KeyFile(std::env::temp_dir().join(format!("natgw-bench-ha-{}.key", pair.id())));
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&key.0, b"a benchmark key of 32 bytes .....")?;
        std::fs::set_permissions(&key.0, std::fs::Permissions::from_mode(0o600))?;
    }
    let a = start(bin, &pair, PairSide::A, &key.0, &log_dir.join("ha-a.log"))?;
    let b = start(bin, &pair, PairSide::B, &key.0, &log_dir.join("ha-b.log"))?;
    wait_until("the active connecting to the standby", || {
        Ok(controller(&a, "ha_connected") == 1)
    })?;
    let (fwd_a, fwd_b) = (fwd(&a)?, fwd(&b)?);
    let sock = pair
        .client
        .run(|| {
            Socket::new(
                Domain::IPV4,
                Type::RAW,
                Some(Protocol::from(libc::IPPROTO_RAW)),
            )
        })
        .context("raw socket in the client namespace")?;
    let far = SocketAddrV4::new(PAIR_FAR_ADDR, 9).into();

    let mut lags = Vec::new();
    for i in 0..LAG_SAMPLES {
        let sport = 2000 + u16::try_from(i).unwrap_or(0);
        let key = FwdKey::new(
            addr_be(PAIR_CLIENT_ADDR.octets()),
            sport.to_be(),
            IPPROTO_UDP,
        );
        let t0 = Instant::now();
        sock.send_to(&datagram(sport), &far)?;
        let seen = wait_until("a mapping on the standby", || {
            Ok(table(&fwd_b)?.iter().any(|(k, _)| *k == key))
        })?;
        lags.push(seen.duration_since(t0).as_secs_f64() * 1e3);
        // Land the next one at another point of the 100 ms drain cycle.
        std::thread::sleep(Duration::from_millis(37));
    }
    lags.sort_by(f64::total_cmp);

    let base = 10_000u16;
    let burst_ports = base..base + u16::try_from(BURST).unwrap_or(u16::MAX);
    let lost_before = a.counter("event_lost").unwrap_or(0);
    let t0 = Instant::now();
    for sport in burst_ports.clone() {
        sock.send_to(&datagram(sport), &far)?;
    }
    let sent = Instant::now();
    let mut active_at = None;
    let done = wait_until("the whole burst on the standby", || {
        if active_at.is_none() && count(&fwd_a, burst_ports.clone())? >= BURST {
            active_at = Some(Instant::now());
        }
        Ok(count(&fwd_b, burst_ports.clone())? >= BURST)
    })?;
    let standby_s = done.duration_since(t0).as_secs_f64();
    // Let the counters reach `natgw status` (once a second).
    std::thread::sleep(Duration::from_millis(1500));
    #[allow(clippy::cast_precision_loss)]
    let rate = BURST as f64 / standby_s;
    let pick = |q: f64| {
        let i = ((lags.len() as f64 * q).ceil() as usize).clamp(1, lags.len()) - 1;
        lags[i]
    };
    Ok(HaResult {
        lag_ms: [pick(0.5), pick(0.9), lags[lags.len() - 1]],
        burst: BURST,
        send_s: sent.duration_since(t0).as_secs_f64(),
        active_s: active_at.unwrap_or(done).duration_since(t0).as_secs_f64(),
        standby_s,
        rate_per_s: rate,
        events_lost: a.counter("event_lost").unwrap_or(0) - lost_before,
        reconciliations: controller(&a, "ha_reconciliations"),
        records_sent: controller(&a, "ha_records_sent"),
        loadavg,
    })
}

/// The figures as text.
#[must_use]
pub fn text(r: &HaResult) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Replication lag (packet on the active -> mapping in the standby's NAT_FWD), {LAG_SAMPLES} single mappings:"
    );
    let _ = writeln!(
        o,
        "  median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        r.lag_ms[0], r.lag_ms[1], r.lag_ms[2]
    );
    let _ = writeln!(
        o,
        "Replication rate, a burst of {} new UDP mappings:",
        r.burst
    );
    let _ = writeln!(
        o,
        "  sent in {:.2} s; all in the active's table after {:.2} s, in the standby's after {:.2} s: {:.0} mappings/s",
        r.send_s, r.active_s, r.standby_s, r.rate_per_s
    );
    let _ = writeln!(
        o,
        "  mapping events the active's ring lost: {} (sent by the pass over the tables); reconciliations: {}; records sent in all: {}",
        r.events_lost, r.reconciliations, r.records_sent
    );
    let _ = writeln!(o, "  /proc/loadavg before: {}", r.loadavg);
    o
}

/// How it measures, for docs/benchmarks.md.
pub const METHOD: &str = "\
How it measures (`xtask/src/bench/ha.rs`; `cargo xtask bench --ha-only`, `--reps N`):
`testbed::Pair` (two gateways side by side, a replication link between them), natgw
A active and B standby with the per-host limits off. A raw socket in the client
namespace sends one UDP datagram per new source port to the far host through A. The
lag is from sending one datagram to the mapping appearing in B's pinned `NAT_FWD`
(polled every millisecond with batched lookups), 20 times one mapping at a time; it
is at most about the 100 ms period at which the controller drains the data path's
`MAPPING_EVENTS` ring plus the 20 ms it batches events for, and where a sample falls
in that cycle decides the rest. The rate is the burst's size over the time from its
first datagram to the last of its mappings in B's `NAT_FWD`; what the ring could not
hold (a burst beyond 8,192 mappings per 100 ms) reaches B through a pass over the
tables — at once when the controller notices that events were lost (its event
subscription fell behind: the `reconciliations`), at the latest with the next
second's pass — which the figure includes.
";

/// The section of docs/benchmarks.md.
#[must_use]
pub fn markdown(runs: &[HaResult], date: &str, command: &str) -> String {
    let mut out = format!("{HEADING}\n\nRun: {date}. Command:\n\n```sh\n{command}\n```\n\n");
    for (i, r) in runs.iter().enumerate() {
        if runs.len() > 1 {
            let _ = write!(out, "Run {} of {}:\n\n", i + 1, runs.len());
        }
        let _ = write!(out, "```text\n{}```\n\n", text(r));
    }
    out.push_str(METHOD);
    out
}
