//! TURN relay throughput (issue #14): packets and megabits per second through one
//! allocation of natgw's relay (`natgw rendezvous`), beside coturn's `turnserver`
//! measured in the same run with the same load generator.
//!
//! Three network namespaces of their own ([`TurnNet`]):
//!
//! ```text
//!  client  tcli0 198.51.100.2 ──veth── 198.51.100.1 tsrv-c  server  tsrv-p 203.0.113.1 ──veth── 203.0.113.2 tpeer0  peer
//! ```
//!
//! The server listens on 198.51.100.1:3478 and relays from 203.0.113.1 (ports
//! 50000–50099); no routing is involved. One run: a fresh server (natgw or coturn,
//! pinned to CPU [`SERVER_CPU`], nice -20), then a client of our own (natgw-proto's
//! STUN/TURN codec and long-term credentials) allocates, binds channel 0x4000 to the
//! peer, and sends ChannelData as fast as one thread can (`sendmmsg`, batches of
//! [`BATCH`]) for the warm-up plus the window, while the peer (`recvmmsg`, its socket
//! connected to the relayed address) checks and counts what arrives. Both load
//! threads run on CPU [`LOAD_CPU`]. Every payload carries a run tag and a sequence
//! number, so the peer counts only this run's packets of the right size, and notices
//! duplicates and reordering.
//!
//! A run that relays nothing, or delivers a packet the client never sent, fails the
//! bench.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use natgw_proto::stun::wire::{
    Attribute, Class, ErrorCode, Packet, Repr, MAGIC_COOKIE, METHOD_BINDING,
};
use natgw_proto::turn::auth::{self, long_term_key, INTEGRITY_LEN};
use natgw_proto::turn::wire::{
    ChannelData, CHANNEL_DATA_HEADER_LEN, CHANNEL_MIN, METHOD_ALLOCATE, METHOD_CHANNEL_BIND,
    PROTOCOL_UDP,
};
use testbed::{Netns, Rtnl, NAME_PREFIX};

use super::report::Spread;

/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The server's address on the client's side: where it listens.
pub const LISTEN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The server's address on the peer's side: its relayed addresses.
pub const RELAY_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The peer's address.
pub const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const PREFIX_LEN: u8 = 24;
/// The TURN port.
const PORT: u16 = 3478;
/// The peer's port.
const PEER_PORT: u16 = 40_000;
/// The relay port range of both servers.
const RELAY_PORT_MIN: u16 = 50_000;
const RELAY_PORT_MAX: u16 = 50_099;
/// The static user of both servers.
const USER: &str = "bench";
const PASSWORD: &str = "relay-bench";
const REALM: &str = "natgw-bench";
/// The channel the client binds to the peer.
const CHANNEL: u16 = CHANNEL_MIN;
/// UDP payload sizes measured (the application data; ChannelData adds 4 bytes).
pub const PAYLOADS: [usize; 2] = [100, 1200];
/// The relay's CPU.
pub const SERVER_CPU: usize = 1;
/// The client's and the peer's CPU.
pub const LOAD_CPU: usize = 0;
/// Datagrams per `sendmmsg`/`recvmmsg`.
const BATCH: usize = 32;
/// Bytes before the sequence number in a payload: the run tag.
const TAG_LEN: usize = 4;
/// Smallest payload: tag and sequence number.
const MIN_PAYLOAD: usize = TAG_LEN + 8;
/// How long a server may take to answer a STUN Binding request after its start.
const READY_WAIT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How long the peer keeps reading after the client stopped.
const DRAIN: Duration = Duration::from_millis(300);
/// The peer socket's receive buffer (`SO_RCVBUFFORCE`), so that the peer is not where
/// packets are lost.
const PEER_RCVBUF: libc::c_int = 8 << 20;
/// The I/O timeout of the load sockets, so their threads notice the end.
const IO_TIMEOUT: Duration = Duration::from_millis(50);

/// Namespace ids, distinct from the other bench parts'.
static NEXT_ID: AtomicU32 = AtomicU32::new(3000);

/// Which relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    /// `natgw rendezvous` with `--turn-user`.
    Natgw,
    /// coturn's `turnserver`.
    Coturn,
}

impl Server {
    /// Its name in the table.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Server::Natgw => "natgw",
            Server::Coturn => "coturn",
        }
    }
}

/// Repetitions and times.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TurnPlan {
    /// Repetitions of every (payload, server) pair.
    pub reps: usize,
    /// Flooding before the window opens.
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// The measured window.
    #[serde(serialize_with = "secs")]
    pub window: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One run: one server, one payload size.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TurnSample {
    /// The relay.
    pub server: Server,
    /// UDP payload bytes at the peer.
    pub payload: usize,
    /// Repetition (0-based).
    pub rep: usize,
    /// The window's length, seconds.
    pub window_s: f64,
    /// What the client sent per second in the window.
    pub offered_pps: f64,
    /// Packets per second the peer received in the window.
    pub pps: f64,
    /// Payload megabits per second the peer received in the window.
    pub mbps: f64,
    /// Packets the client sent over the whole run.
    pub sent: u64,
    /// Packets the peer received over the whole run (valid ones).
    pub received: u64,
    /// `1 - received / sent` over the whole run.
    pub loss: f64,
    /// Packets that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// The server's CPU over the window, cores (its threads' `schedstat`).
    pub server_cpu_cores: f64,
    /// The server's CPU per relayed packet in the window, microseconds.
    pub server_cpu_us_per_packet: f64,
    /// UDP `RcvbufErrors` in the server's namespace over the run: datagrams the
    /// kernel dropped because the server did not read them in time.
    pub server_rcvbuf_errors: u64,
    /// The same in the peer's namespace (should be 0: the peer is not the limit).
    pub peer_rcvbuf_errors: u64,
    /// natgw's own count of packets it relayed to peers (`to_peer_packets`).
    pub server_relayed: Option<u64>,
}

/// The medians of one (server, payload) pair over the repetitions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TurnRow {
    /// The relay.
    pub server: Server,
    /// UDP payload bytes.
    pub payload: usize,
    /// Packets per second at the peer.
    pub pps: Spread,
    /// Payload Mbit/s at the peer.
    pub mbps: Spread,
    /// What the client sent per second.
    pub offered_pps: Spread,
    /// Loss over the run.
    pub loss: Spread,
    /// The server's CPU, cores.
    pub server_cpu_cores: Spread,
    /// The server's CPU per relayed packet, microseconds.
    pub server_cpu_us_per_packet: Spread,
}

/// natgw over coturn for one payload size (medians).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TurnRatio {
    /// UDP payload bytes.
    pub payload: usize,
    /// natgw's packets per second over coturn's.
    pub pps: f64,
    /// natgw's Mbit/s over coturn's.
    pub mbps: f64,
}

/// What the TURN part measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TurnResult {
    /// How busy the machine's CPUs were in the second before, percent.
    pub busy_before_pct: f64,
    /// Repetitions and times.
    pub plan: TurnPlan,
    /// natgw over coturn, per payload size.
    pub ratios: Vec<TurnRatio>,
    /// Medians per server and payload size.
    pub rows: Vec<TurnRow>,
    /// Every run.
    pub samples: Vec<TurnSample>,
}

/// Runs every (payload, server) pair `plan.reps` times, the server order alternating,
/// in one topology.
///
/// # Errors
/// When the topology or a server cannot be set up, or a run relays nothing.
pub fn run(natgw_bin: &Path, log_dir: &Path, plan: &TurnPlan) -> Result<TurnResult> {
    let net = TurnNet::create()?;
    let busy_before_pct = super::cpu::machine_busy(Duration::from_secs(1))?;
    let mut samples = Vec::new();
    for rep in 0..plan.reps {
        for (i, &payload) in PAYLOADS.iter().enumerate() {
            let order = if (rep + i) % 2 == 0 {
                [Server::Natgw, Server::Coturn]
            } else {
                [Server::Coturn, Server::Natgw]
            };
            for server in order {
                crate::signals::check()?;
                let s = measure(&net, server, payload, rep, natgw_bin, log_dir, plan)
                    .with_context(|| {
                        format!(
                            "TURN relay throughput, {} with {payload}-byte payloads, \
                             repetition {}",
                            server.name(),
                            rep + 1
                        )
                    })?;
                eprintln!(
                    "xtask bench: TURN {:<6} {payload:>4} B rep {}: {:.0} pps, {:.1} Mbit/s \
                     (offered {:.0} pps, loss {:.1}%, relay CPU {:.2})",
                    server.name(),
                    rep + 1,
                    s.pps,
                    s.mbps,
                    s.offered_pps,
                    s.loss * 100.0,
                    s.server_cpu_cores
                );
                samples.push(s);
            }
        }
    }
    let rows = rows(&samples);
    Ok(TurnResult {
        busy_before_pct,
        plan: *plan,
        ratios: ratios(&rows),
        rows,
        samples,
    })
}

/// Medians per (server, payload), in [`PAYLOADS`] order, natgw first.
#[must_use]
pub fn rows(samples: &[TurnSample]) -> Vec<TurnRow> {
    let mut out = Vec::new();
    for payload in PAYLOADS {
        for server in [Server::Natgw, Server::Coturn] {
            let of: Vec<&TurnSample> = samples
                .iter()
                .filter(|s| s.server == server && s.payload == payload)
                .collect();
            let spread = |f: fn(&TurnSample) -> f64| {
                Spread::of(&of.iter().map(|s| f(s)).collect::<Vec<_>>())
            };
            let (
                Some(pps),
                Some(mbps),
                Some(offered_pps),
                Some(loss),
                Some(server_cpu_cores),
                Some(server_cpu_us_per_packet),
            ) = (
                spread(|s| s.pps),
                spread(|s| s.mbps),
                spread(|s| s.offered_pps),
                spread(|s| s.loss),
                spread(|s| s.server_cpu_cores),
                spread(|s| s.server_cpu_us_per_packet),
            )
            else {
                continue;
            };
            out.push(TurnRow {
                server,
                payload,
                pps,
                mbps,
                offered_pps,
                loss,
                server_cpu_cores,
                server_cpu_us_per_packet,
            });
        }
    }
    out
}

/// natgw over coturn per payload size, where both were measured.
#[must_use]
pub fn ratios(rows: &[TurnRow]) -> Vec<TurnRatio> {
    let find = |server, payload| {
        rows.iter()
            .find(|r| r.server == server && r.payload == payload)
    };
    PAYLOADS
        .iter()
        .filter_map(|&payload| {
            let n = find(Server::Natgw, payload)?;
            let c = find(Server::Coturn, payload)?;
            (c.pps.median > 0.0 && c.mbps.median > 0.0).then(|| TurnRatio {
                payload,
                pps: n.pps.median / c.pps.median,
                mbps: n.mbps.median / c.mbps.median,
            })
        })
        .collect()
}

/// The result as the text report shows it: the ratios first, then the table.
#[must_use]
pub fn text(r: &TurnResult) -> String {
    use std::fmt::Write as _;
    let mut o = format!(
        "TURN relay throughput (issue #14): one allocation, ChannelData over UDP from a client \
         through the relay to a peer, sent as fast as one thread can ({:.1} s warm-up, then \
         a {:.1} s window), {} repetition{} alternating natgw and coturn; relay on CPU \
         {SERVER_CPU}, client and peer on CPU {LOAD_CPU} (CPUs {:.0}% busy before the start)\n",
        r.plan.warmup.as_secs_f64(),
        r.plan.window.as_secs_f64(),
        r.plan.reps,
        if r.plan.reps == 1 { "" } else { "s" },
        r.busy_before_pct,
    );
    for q in &r.ratios {
        let _ = writeln!(
            o,
            "  natgw/coturn, {:>4}-byte payload: {:.2}× packets/s, {:.2}× Mbit/s",
            q.payload, q.pps, q.mbps
        );
    }
    let _ = writeln!(
        o,
        "  {:<7} {:<6} {:>28} {:>26} {:>12} {:>6} {:>10} {:>11}",
        "payload",
        "relay",
        "relayed pps [min–max]",
        "Mbit/s [min–max]",
        "offered pps",
        "loss",
        "relay CPU",
        "µs CPU/pkt"
    );
    for row in &r.rows {
        let _ = writeln!(
            o,
            "  {:<7} {:<6} {:>28} {:>26} {:>12} {:>5.1}% {:>10.2} {:>11.2}",
            format!("{} B", row.payload),
            row.server.name(),
            format!(
                "{:.0} [{:.0}–{:.0}]",
                row.pps.median, row.pps.min, row.pps.max
            ),
            format!(
                "{:.1} [{:.1}–{:.1}]",
                row.mbps.median, row.mbps.min, row.mbps.max
            ),
            format!("{:.0}", row.offered_pps.median),
            row.loss.median * 100.0,
            row.server_cpu_cores.median,
            row.server_cpu_us_per_packet.median,
        );
    }
    if !r.samples.is_empty() {
        let (sent, received, at_relay, at_peer) = r.samples.iter().fold((0, 0, 0, 0), |a, s| {
            (
                a.0 + s.sent,
                a.1 + s.received,
                a.2 + s.server_rcvbuf_errors,
                a.3 + s.peer_rcvbuf_errors,
            )
        });
        let other =
            i128::from(sent) - i128::from(received) - i128::from(at_relay) - i128::from(at_peer);
        let _ = writeln!(
            o,
            "  where the packets went (all runs): {sent} sent, {received} received, {at_relay} \
             dropped at the relay's listening socket and {at_peer} at the peer's (UDP \
             RcvbufErrors), {other} otherwise lost"
        );
    }
    o
}

// ---------------------------------------------------------------------------------
// The topology.
// ---------------------------------------------------------------------------------

/// The three namespaces, wired; removed on drop.
pub struct TurnNet {
    /// The TURN client.
    pub client: Netns,
    /// The relay.
    pub server: Netns,
    /// The peer.
    pub peer: Netns,
}

impl TurnNet {
    /// Creates the namespaces, the two veth pairs and their addresses.
    ///
    /// # Errors
    /// When a namespace or a link cannot be made.
    pub fn create() -> Result<TurnNet> {
        let id = format!(
            "{NAME_PREFIX}{}t{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let create = |role: &str| {
            Netns::create(&format!("{id}-{role}"))
                .with_context(|| format!("creating namespace {id}-{role}"))
        };
        let (client, server, peer) = (create("tcli")?, create("tsrv")?, create("tpeer")?);
        let open = |ns: &Netns| {
            File::open(ns.path()).with_context(|| format!("opening {}", ns.path().display()))
        };
        let (client_fd, peer_fd) = (open(&client)?, open(&peer)?);
        server.try_run(|| -> Result<()> {
            let rtnl = Rtnl::connect(server.name())?;
            rtnl.add_veth("tsrv-c", "tcli0", client_fd.as_fd(), client.name())?;
            rtnl.add_veth("tsrv-p", "tpeer0", peer_fd.as_fd(), peer.name())?;
            rtnl.add_ipv4("tsrv-c", LISTEN_ADDR, PREFIX_LEN)?;
            rtnl.add_ipv4("tsrv-p", RELAY_ADDR, PREFIX_LEN)?;
            for link in ["lo", "tsrv-c", "tsrv-p"] {
                rtnl.set_up(link)?;
            }
            Ok(())
        })??;
        for (ns, link, addr) in [
            (&client, "tcli0", CLIENT_ADDR),
            (&peer, "tpeer0", PEER_ADDR),
        ] {
            ns.try_run(|| -> Result<()> {
                let rtnl = Rtnl::connect(ns.name())?;
                rtnl.add_ipv4(link, addr, PREFIX_LEN)?;
                rtnl.set_up("lo")?;
                rtnl.set_up(link)?;
                Ok(())
            })??;
        }
        Ok(TurnNet {
            client,
            server,
            peer,
        })
    }
}

// ---------------------------------------------------------------------------------
// The servers.
// ---------------------------------------------------------------------------------

/// `natgw rendezvous`'s arguments.
fn natgw_args() -> Vec<String> {
    [
        "rendezvous",
        "--json",
        "--listen",
        &SocketAddrV4::new(LISTEN_ADDR, PORT).to_string(),
        "--turn-user",
        &format!("{USER}:{PASSWORD}"),
        "--realm",
        REALM,
        "--relay-address",
        &RELAY_ADDR.to_string(),
        "--relay-ports",
        &format!("{RELAY_PORT_MIN}-{RELAY_PORT_MAX}"),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// coturn's configuration: UDP on the namespace's address only, a static user, no
/// TLS/DTLS, no TCP, no CLI, its files in `dir`.
#[must_use]
pub fn coturn_config(dir: &Path) -> String {
    format!(
        "# cargo xtask bench: coturn's turnserver for the TURN relay throughput part\n\
         listening-ip={LISTEN_ADDR}\n\
         listening-port={PORT}\n\
         relay-ip={RELAY_ADDR}\n\
         min-port={RELAY_PORT_MIN}\n\
         max-port={RELAY_PORT_MAX}\n\
         realm={REALM}\n\
         lt-cred-mech\n\
         user={USER}:{PASSWORD}\n\
         no-tcp\n\
         no-tls\n\
         no-dtls\n\
         no-tcp-relay\n\
         no-cli\n\
         no-multicast-peers\n\
         userdb={db}\n\
         pidfile={pid}\n\
         log-file=stdout\n\
         simple-log\n",
        db = dir.join("turnserver-bench.db").display(),
        pid = dir.join("turnserver-bench.pid").display(),
    )
}

/// A running relay, killed on drop.
struct Running {
    server: Server,
    child: Option<Child>,
    log: PathBuf,
    /// Files of coturn's to remove afterwards.
    leftovers: Vec<PathBuf>,
}

impl Running {
    fn start(server: Server, net: &TurnNet, natgw_bin: &Path, log_dir: &Path) -> Result<Running> {
        let log = log_dir.join(format!("turn-bench-{}.log", server.name()));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut leftovers = Vec::new();
        let mut cmd = match server {
            Server::Natgw => {
                let mut c = net.server.command(natgw_bin);
                c.args(natgw_args());
                c
            }
            Server::Coturn => {
                let config = log_dir.join("turnserver-bench.conf");
                std::fs::write(&config, coturn_config(log_dir))
                    .with_context(|| format!("writing {}", config.display()))?;
                leftovers.extend([
                    log_dir.join("turnserver-bench.db"),
                    log_dir.join("turnserver-bench.pid"),
                ]);
                let mut c = net.server.command("turnserver");
                c.arg("-c").arg(&config).arg("--no-cli");
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        crate::signals::unblock_in_child(&mut cmd);
        pin_in_child(&mut cmd, SERVER_CPU);
        let child = cmd.spawn().with_context(|| match server {
            Server::Natgw => format!("starting {}", natgw_bin.display()),
            Server::Coturn => "starting turnserver (is coturn installed? `apt-get install \
                               coturn`; `cargo xtask bench` installs it on Debian)"
                .to_owned(),
        })?;
        let running = Running {
            server,
            child: Some(child),
            log,
            leftovers,
        };
        Ok(running)
    }

    fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .unwrap_or(0)
    }

    /// Fails with its log's tail if it has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({status}); the end of {}:\n{}",
                    self.server.name(),
                    self.log.display(),
                    tail(&self.log, 20)
                );
            }
        }
        Ok(())
    }

    /// Stops it with SIGTERM (SIGKILL after [`STOP_WAIT`]) and returns its log.
    fn stop(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
        for f in &self.leftovers {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// SIGTERM, up to [`STOP_WAIT`] for the exit, then SIGKILL.
fn terminate(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + STOP_WAIT;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `lines` lines of a file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Makes the child start on `cpu` only, at nice -20 (its threads inherit both), and
/// die with SIGKILL when the thread that started it ends: when a second Ctrl-C makes
/// xtask exit at once ([`crate::signals`]), no relay is left running. The servers
/// are started from the bench's main thread, which lives until the process ends.
fn pin_in_child(cmd: &mut Command, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET only writes into it (and
    // ignores CPUs beyond its size).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: between fork and exec the closure only makes system calls on data built
    // before the fork; it neither allocates nor locks.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setpriority(libc::PRIO_PROCESS, 0, -20) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// natgw's count of packets relayed to peers, from the `stopped` line `natgw
/// rendezvous --json` prints last.
#[must_use]
pub fn natgw_relayed(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        (v["event"] == "stopped").then_some(())?;
        v["turn"]["engine"]["to_peer_packets"].as_u64()
    })
}

// ---------------------------------------------------------------------------------
// The kernel's UDP counters.
// ---------------------------------------------------------------------------------

/// UDP counters of `/proc/net/snmp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpSnmp {
    /// Datagrams delivered to sockets.
    pub in_datagrams: u64,
    /// Datagrams dropped because a socket's receive buffer was full.
    pub rcvbuf_errors: u64,
}

/// The `Udp:` counters from `/proc/net/snmp`'s text (a header line of names, then a
/// line of values).
#[must_use]
pub fn parse_udp_snmp(text: &str) -> Option<UdpSnmp> {
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let names: Vec<&str> = udp.next()?.split_whitespace().skip(1).collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().skip(1).collect();
    let get = |name: &str| -> Option<u64> {
        values
            .get(names.iter().position(|n| *n == name)?)?
            .parse()
            .ok()
    };
    Some(UdpSnmp {
        in_datagrams: get("InDatagrams")?,
        rcvbuf_errors: get("RcvbufErrors")?,
    })
}

/// The UDP counters of `ns`.
fn udp_snmp(ns: &Netns) -> Result<UdpSnmp> {
    let text = ns
        .try_run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))?
        .with_context(|| format!("reading the UDP counters of {}", ns.name()))?;
    parse_udp_snmp(&text).with_context(|| format!("no Udp: lines in {}'s snmp", ns.name()))
}

// ---------------------------------------------------------------------------------
// The client's TURN exchanges.
// ---------------------------------------------------------------------------------

/// What a response says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Success (`true`) or error.
    pub success: bool,
    /// Transaction id.
    pub transaction_id: [u8; 12],
    /// ERROR-CODE.
    pub error: Option<u16>,
    /// REALM.
    pub realm: Option<String>,
    /// NONCE.
    pub nonce: Option<String>,
    /// XOR-RELAYED-ADDRESS.
    pub relayed: Option<SocketAddrV4>,
}

/// Parses a STUN response; `None` for anything else.
#[must_use]
pub fn parse_response(bytes: &[u8]) -> Option<Response> {
    let packet = Packet::new_checked(bytes).ok()?;
    let repr = Repr::parse(&packet).ok()?;
    let success = match repr.class {
        Class::Success => true,
        Class::Error => false,
        _ => return None,
    };
    Some(Response {
        success,
        transaction_id: repr.transaction_id,
        error: repr.find(|a| match a {
            Attribute::ErrorCode(ErrorCode { code, .. }) => Some(*code),
            _ => None,
        }),
        realm: repr.find(|a| match a {
            Attribute::Realm(r) => Some((*r).to_owned()),
            _ => None,
        }),
        nonce: repr.find(|a| match a {
            Attribute::Nonce(n) => Some((*n).to_owned()),
            _ => None,
        }),
        relayed: repr.find(|a| match a {
            Attribute::XorRelayedAddress(SocketAddr::V4(r)) => Some(*r),
            _ => None,
        }),
    })
}

/// The long-term credentials once the server's REALM and NONCE are known.
#[derive(Debug, Clone)]
pub struct Auth {
    /// REALM from the server.
    pub realm: String,
    /// NONCE from the server.
    pub nonce: String,
}

/// A request, signed with [`USER`]/[`PASSWORD`] when `auth` is given.
#[must_use]
pub fn request<'a>(
    method: u16,
    transaction_id: [u8; 12],
    mut attributes: Vec<Attribute<'a>>,
    auth: Option<&'a Auth>,
) -> Vec<u8> {
    if let Some(a) = auth {
        attributes.extend([
            Attribute::Username(USER),
            Attribute::Realm(&a.realm),
            Attribute::Nonce(&a.nonce),
            Attribute::MessageIntegrity(&[0; INTEGRITY_LEN]),
        ]);
    }
    let mut bytes = Repr {
        class: Class::Request,
        method,
        cookie: MAGIC_COOKIE,
        transaction_id,
        attributes,
    }
    .to_bytes();
    if let Some(a) = auth {
        auth::sign(&mut bytes, &long_term_key(USER, &a.realm, PASSWORD));
    }
    bytes
}

/// Sends `bytes` and waits for the response with the same transaction id (one
/// second, three tries).
fn exchange(socket: &UdpSocket, bytes: &[u8]) -> Result<Response> {
    let id: [u8; 12] = bytes[8..20].try_into().context("a STUN message")?;
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        socket.send(bytes).context("sending a TURN request")?;
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    if let Some(r) = parse_response(&buf[..n]) {
                        if r.transaction_id == id {
                            return Ok(r);
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => return Err(e).context("receiving a TURN response"),
            }
        }
    }
    bail!(
        "no response from the server to a request of method {:#05x}",
        { u16::from_be_bytes([bytes[0], bytes[1]]) & 0x3eef }
    )
}

/// A transaction id: random enough for one run.
fn transaction_id(n: u32) -> [u8; 12] {
    let mut id = [0u8; 12];
    id[..8].copy_from_slice(&natgw_proto::util::rng::random_u64().to_be_bytes());
    id[8..].copy_from_slice(&n.to_be_bytes());
    id
}

/// Allocate (answering the 401 challenge) and ChannelBind [`CHANNEL`] to `peer`;
/// returns the relayed address.
fn allocate_and_bind(socket: &UdpSocket, peer: SocketAddrV4) -> Result<SocketAddrV4> {
    let udp = || vec![Attribute::RequestedTransport(PROTOCOL_UDP)];
    let challenge = exchange(
        socket,
        &request(METHOD_ALLOCATE, transaction_id(1), udp(), None),
    )?;
    let (Some(realm), Some(nonce), Some(401)) = (challenge.realm, challenge.nonce, challenge.error)
    else {
        bail!("the first Allocate was not answered with 401 and a REALM and NONCE");
    };
    let mut auth = Auth { realm, nonce };
    let mut allocated = None;
    for n in 2..5 {
        let r = exchange(
            socket,
            &request(METHOD_ALLOCATE, transaction_id(n), udp(), Some(&auth)),
        )?;
        match (r.success, r.error, r.nonce) {
            (true, _, _) => {
                allocated = Some(
                    r.relayed
                        .context("Allocate succeeded without an IPv4 XOR-RELAYED-ADDRESS")?,
                );
                break;
            }
            (false, Some(438), Some(nonce)) => auth.nonce = nonce,
            (false, code, _) => bail!("Allocate refused: error {code:?}"),
        }
    }
    let relayed = allocated.context("Allocate: stale nonce three times")?;
    for n in 5..8 {
        let r = exchange(
            socket,
            &request(
                METHOD_CHANNEL_BIND,
                transaction_id(n),
                vec![
                    Attribute::ChannelNumber(CHANNEL),
                    Attribute::XorPeerAddress(SocketAddr::V4(peer)),
                ],
                Some(&auth),
            ),
        )?;
        match (r.success, r.error, r.nonce) {
            (true, _, _) => return Ok(relayed),
            (false, Some(438), Some(nonce)) => auth.nonce = nonce,
            (false, code, _) => bail!("ChannelBind refused: error {code:?}"),
        }
    }
    bail!("ChannelBind: stale nonce three times")
}

/// Waits until the server answers a STUN Binding request from the client's namespace.
fn wait_ready(net: &TurnNet, running: &mut Running) -> Result<()> {
    let deadline = Instant::now() + READY_WAIT;
    let binding = request(METHOD_BINDING, transaction_id(0), Vec::new(), None);
    loop {
        running.check_alive()?;
        let answered = net.client.try_run(|| -> Result<bool> {
            let s = UdpSocket::bind(SocketAddrV4::new(CLIENT_ADDR, 0))?;
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            s.connect(SocketAddrV4::new(LISTEN_ADDR, PORT))?;
            let _ = s.send(&binding);
            let mut buf = [0u8; 1024];
            Ok(matches!(s.recv(&mut buf), Ok(n) if parse_response(&buf[..n]).is_some_and(|r| r.success)))
        })??;
        if answered {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not answer a STUN Binding request on {LISTEN_ADDR}:{PORT} within {} s; \
                 the end of {}:\n{}",
                running.server.name(),
                READY_WAIT.as_secs(),
                running.log.display(),
                tail(&running.log, 20)
            );
        }
        crate::signals::sleep(Duration::from_millis(50))?;
    }
}

// ---------------------------------------------------------------------------------
// The load.
// ---------------------------------------------------------------------------------

/// A payload: the run tag, the sequence number, then filler.
#[must_use]
pub fn payload(tag: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut p = vec![0xa5; len.max(MIN_PAYLOAD)];
    p[..TAG_LEN].copy_from_slice(&tag.to_be_bytes());
    p[TAG_LEN..MIN_PAYLOAD].copy_from_slice(&seq.to_be_bytes());
    p
}

/// The sequence number of a payload of this run of the expected length.
#[must_use]
pub fn payload_seq(bytes: &[u8], tag: u32, len: usize) -> Option<u64> {
    if bytes.len() != len || bytes.get(..TAG_LEN)? != tag.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(
        bytes.get(TAG_LEN..MIN_PAYLOAD)?.try_into().ok()?,
    ))
}

/// What the peer saw: each sequence number at most once, and in what order.
#[derive(Debug, Default)]
pub struct SeqTracker {
    seen: Vec<u64>,
    highest: Option<u64>,
    /// Distinct sequence numbers received.
    pub received: u64,
    /// Sequence numbers received again.
    pub duplicates: u64,
    /// Packets received after one with a higher sequence number.
    pub reordered: u64,
    /// Datagrams that were not this run's payload of the right size.
    pub invalid: u64,
}

impl SeqTracker {
    /// Records one datagram.
    pub fn record(&mut self, bytes: &[u8], tag: u32, len: usize) {
        let Some(seq) = payload_seq(bytes, tag, len) else {
            self.invalid += 1;
            return;
        };
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            // Sequence numbers are bounded by what one thread sends in seconds; a bad
            // one past a billion is counted, not stored.
            if word > (1 << 24) {
                self.invalid += 1;
                return;
            }
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.received += 1;
        match self.highest {
            Some(h) if seq < h => self.reordered += 1,
            _ => self.highest = Some(seq),
        }
    }
}

/// Sends ChannelData on the connected `socket` until `stop`, counting into `sent`.
fn flood(
    socket: &UdpSocket,
    len: usize,
    tag: u32,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> Result<()> {
    let template = ChannelData {
        channel: CHANNEL,
        data: &payload(tag, 0, len),
    }
    .to_bytes(false);
    let mut bufs = vec![template; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: an all-zero mmsghdr is valid (no name, no control data).
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = std::ptr::from_mut(iov);
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let seq_at = CHANNEL_DATA_HEADER_LEN + TAG_LEN..CHANNEL_DATA_HEADER_LEN + MIN_PAYLOAD;
    let mut seq: u64 = 0;
    let fd = socket.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        for (i, m) in msgs.iter().enumerate() {
            // SAFETY: every iov points into its own buffer of `bufs`, which outlives
            // the loop and is not moved; we write inside its length.
            let buf = unsafe {
                std::slice::from_raw_parts_mut(
                    (*m.msg_hdr.msg_iov).iov_base.cast::<u8>(),
                    (*m.msg_hdr.msg_iov).iov_len,
                )
            };
            buf[seq_at.clone()].copy_from_slice(&(seq + i as u64).to_be_bytes());
        }
        // SAFETY: `msgs` holds BATCH valid headers whose buffers live in `bufs`.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as libc::c_uint, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN | libc::ENOBUFS | libc::ECONNREFUSED) => continue,
                _ => return Err(e).context("sendmmsg to the relay"),
            }
        }
        let n = u64::try_from(n).unwrap_or(0);
        seq += n;
        sent.fetch_add(n, Ordering::Relaxed);
    }
    drop(bufs);
    Ok(())
}

/// Reads the peer's socket until `stop`, publishing the count of valid packets in
/// `received`.
fn receive(
    socket: &UdpSocket,
    len: usize,
    tag: u32,
    stop: &AtomicBool,
    received: &AtomicU64,
) -> Result<SeqTracker> {
    let size = len + 64;
    let mut bufs = vec![vec![0u8; size]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero mmsghdr is valid (no name, no control data).
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = std::ptr::from_mut(iov);
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut tracker = SeqTracker::default();
    let fd = socket.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `msgs` holds BATCH valid headers whose buffers live in `bufs`; the
        // socket's SO_RCVTIMEO bounds the wait.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN | libc::ECONNREFUSED) => continue,
                _ => return Err(e).context("recvmmsg at the peer"),
            }
        }
        for i in 0..usize::try_from(n).unwrap_or(0) {
            let got = msgs[i].msg_len as usize;
            tracker.record(&bufs[i][..got.min(size)], tag, len);
        }
        received.store(tracker.received, Ordering::Relaxed);
    }
    Ok(tracker)
}

fn set_int_option(socket: &UdpSocket, name: libc::c_int, value: libc::c_int) -> Result<()> {
    // SAFETY: a valid socket and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            std::ptr::from_ref(&value).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setsockopt");
    }
    Ok(())
}

/// One run: a fresh server, an allocation, the flood, the counts.
fn measure(
    net: &TurnNet,
    server: Server,
    len: usize,
    rep: usize,
    natgw_bin: &Path,
    log_dir: &Path,
    plan: &TurnPlan,
) -> Result<TurnSample> {
    let mut running = Running::start(server, net, natgw_bin, log_dir)?;
    wait_ready(net, &mut running)?;

    let client = net.client.bind_udp(SocketAddrV4::new(CLIENT_ADDR, 0))?;
    client.connect(SocketAddrV4::new(LISTEN_ADDR, PORT))?;
    client.set_read_timeout(Some(Duration::from_millis(200)))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let peer_addr = SocketAddrV4::new(PEER_ADDR, PEER_PORT);
    let peer = net.peer.bind_udp(peer_addr)?;
    set_int_option(&peer, libc::SO_RCVBUFFORCE, PEER_RCVBUF)?;
    peer.set_read_timeout(Some(IO_TIMEOUT))?;

    let relayed = allocate_and_bind(&client, peer_addr)
        .with_context(|| format!("setting up the allocation on {}", server.name()))?;
    if *relayed.ip() != RELAY_ADDR {
        bail!(
            "{} relays from {relayed}, not from {RELAY_ADDR}",
            server.name()
        );
    }
    // Only the relayed address's datagrams reach the peer's socket.
    peer.connect(relayed)?;

    let tag = u32::try_from(rep * 1000 + len).unwrap_or(0) ^ 0x5455_524e;
    let pid = running.pid();
    let (server_before, peer_before) = (udp_snmp(&net.server)?, udp_snmp(&net.peer)?);
    let stop_client = AtomicBool::new(false);
    let stop_peer = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let (tracker, window) = std::thread::scope(|scope| -> Result<_> {
        let receiver = scope.spawn(|| -> Result<SeqTracker> {
            super::cpu::pin(0, LOAD_CPU)?;
            super::cpu::boost(0)?;
            receive(&peer, len, tag, &stop_peer, &received)
        });
        let sender = scope.spawn(|| -> Result<()> {
            super::cpu::pin(0, LOAD_CPU)?;
            super::cpu::boost(0)?;
            flood(&client, len, tag, &stop_client, &sent)
        });
        let timed = (|| -> Result<_> {
            crate::signals::sleep(plan.warmup)?;
            let a = (
                Instant::now(),
                sent.load(Ordering::Relaxed),
                received.load(Ordering::Relaxed),
                super::upnp::schedstat_seconds(pid),
            );
            crate::signals::sleep(plan.window)?;
            let b = (
                Instant::now(),
                sent.load(Ordering::Relaxed),
                received.load(Ordering::Relaxed),
                super::upnp::schedstat_seconds(pid),
            );
            Ok((a, b))
        })();
        stop_client.store(true, Ordering::Relaxed);
        let sent_result = sender
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        std::thread::sleep(DRAIN);
        stop_peer.store(true, Ordering::Relaxed);
        let tracker = receiver
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        sent_result?;
        Ok((tracker?, timed?))
    })?;
    let (server_after, peer_after) = (udp_snmp(&net.server)?, udp_snmp(&net.peer)?);
    running.check_alive()?;
    let log = running.stop();
    let (a, b) = window;
    let window_s = (b.0 - a.0).as_secs_f64();
    let in_window = b.2.saturating_sub(a.2);
    let sent_total = sent.load(Ordering::Relaxed);
    let sample = TurnSample {
        server,
        payload: len,
        rep,
        window_s,
        offered_pps: b.1.saturating_sub(a.1) as f64 / window_s,
        pps: in_window as f64 / window_s,
        mbps: in_window as f64 * len as f64 * 8.0 / window_s / 1e6,
        sent: sent_total,
        received: tracker.received,
        loss: loss(sent_total, tracker.received),
        reordered: tracker.reordered,
        server_cpu_cores: (b.3 - a.3) / window_s,
        server_cpu_us_per_packet: if in_window > 0 {
            (b.3 - a.3) / in_window as f64 * 1e6
        } else {
            0.0
        },
        server_rcvbuf_errors: server_after
            .rcvbuf_errors
            .saturating_sub(server_before.rcvbuf_errors),
        peer_rcvbuf_errors: peer_after
            .rcvbuf_errors
            .saturating_sub(peer_before.rcvbuf_errors),
        server_relayed: match server {
            Server::Natgw => natgw_relayed(&log),
            Server::Coturn => None,
        },
    };
    check(&sample, &tracker)?;
    Ok(sample)
}

/// `1 - received / sent` (0 when nothing was sent).
#[must_use]
pub fn loss(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        1.0 - received as f64 / sent as f64
    }
}

/// Fails when a run relayed nothing or delivered what the client did not send.
fn check(s: &TurnSample, t: &SeqTracker) -> Result<()> {
    let what = format!("{} with {}-byte payloads", s.server.name(), s.payload);
    if s.sent == 0 {
        bail!("{what}: the client sent nothing");
    }
    if s.pps <= 0.0 || t.received == 0 {
        bail!(
            "{what}: the relay relayed nothing (the client sent {} packets, the peer \
             received {} of them in the whole run, {} in the window)",
            s.sent,
            t.received,
            s.pps * s.window_s
        );
    }
    if t.duplicates > 0 || t.invalid > 0 || t.received > s.sent {
        bail!(
            "{what}: the peer received {} duplicates and {} datagrams that were not the \
             client's ({} distinct of {} sent)",
            t.duplicates,
            t.invalid,
            t.received,
            s.sent
        );
    }
    if let Some(relayed) = s.server_relayed {
        if relayed < t.received {
            bail!(
                "{what}: natgw counted {relayed} packets to peers, the peer received {}",
                t.received
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// docs/benchmarks.md.
// ---------------------------------------------------------------------------------

/// The heading of the TURN section of docs/benchmarks.md.
pub const HEADING: &str = "## TURN relay throughput (issue #14)";

/// How the TURN part measures, for docs/benchmarks.md.
pub const METHOD: &str = "\
How it measures (`xtask/src/bench/turn.rs`; `cargo xtask bench --turn-only` runs this
part alone, `--reps N` sets the repetitions, `--quick` shortens the windows):

- **Topology**: three namespaces of its own, client 198.51.100.2 — 198.51.100.1
  server 203.0.113.1 — 203.0.113.2 peer, two veth pairs, nothing routed. The server
  listens on 198.51.100.1:3478 (UDP) and relays from 203.0.113.1, ports 50000–50099.
- **Servers**: `natgw rendezvous --listen 198.51.100.1:3478 --turn-user bench:… --realm
  natgw-bench --relay-address 203.0.113.1 --relay-ports 50000-50099` (no bandwidth
  cap, the default), and coturn's `turnserver` (Debian's coturn) with a config file of
  the bench's (`listening-ip`, `relay-ip`, `min-port`/`max-port`, `lt-cred-mech` with
  the same static user, `no-tcp`, `no-tls`, `no-dtls`, `no-cli`, its own `userdb`,
  pid and log files), in the foreground. Each starts fresh for every run, pinned to
  CPU 1 at nice -20, and is stopped with SIGTERM afterwards. Both relays are user-space
  programs reading and writing UDP sockets, one `recvfrom`/`recvmsg` and one `sendto`
  per packet: natgw's a current-thread tokio runtime (`natgw/src/cli/mod.rs`),
  coturn's libevent loops (by
  default one relay thread per CPU of the machine); all their threads on CPU 1.
- **Load**: one and the same generator for both, written for the bench with
  natgw-proto's STUN/TURN codec: Allocate (answering the 401 challenge with long-term
  credentials), ChannelBind 0x4000 to the peer 203.0.113.2:40000, then ChannelData
  (4-byte header + payload, no padding) from one thread with `sendmmsg` in batches of
  32, as fast as it goes, for the warm-up and the window. The peer reads with
  `recvmmsg` on a socket connected to the relayed address (8 MiB receive buffer). Both
  threads run on CPU 0 at nice -20. Every payload carries a run tag and a sequence
  number: the peer counts only this run's datagrams of the right length, once each; a
  duplicate, a foreign datagram or a run with nothing relayed fails the bench.
- **Figures**: packets per second received at the peer in the window, Mbit/s of UDP
  payload (headers not counted), the client's sending rate (offered), loss over the
  whole run (1 − received/sent: the flood is meant to saturate the relay, so this is
  what the relay could not take), the relay's CPU over the window from its threads'
  `schedstat`, and that CPU per relayed packet. The kernel's UDP `RcvbufErrors` in the
  server's and the peer's namespace are recorded per run (`--json`): loss at the
  server's socket is the relay not keeping up; at the peer's it would be the bench's
  own limit. Median and [min–max] over the repetitions; the server order alternates
  from one run to the next.
";

/// What the runs showed, for docs/benchmarks.md; the figures above it are the latest
/// run's.
pub const NOTES: &str = "\
Observations from the runs of 2026-12-04:

- **natgw's relay moves 0.92–0.94× what coturn's does** (the run above, on a quiet
  machine; 0.85–0.91× in a three-repetition run while other builds kept both CPUs
  busy), for 100- and 1200-byte payloads alike: the cost is per packet, not per byte.
  Both relays use their whole CPU while the client offers 190–200 kpps, and both lose
  only at their own listening socket: the kernel's UDP `RcvbufErrors` in the server's
  namespace plus the packets the peer received equal what the client sent, to the
  packet (the table's last line). The relays, not the load, are the limit.
- **A/B: the current-thread runtime (0.6× → 0.93×).** The first version ran the
  rendezvous loop in `block_on` on the main thread of a two-worker runtime, while the
  I/O driver (`epoll_wait`) belonged to a worker thread: every datagram woke that
  worker, which preempted the loop on the one CPU. It relayed 0.59–0.63× coturn in five
  runs (79–91 kpps against 128–149 kpps; 10.9–12.5 µs of CPU per packet against
  6.7–7.8 µs). A trace of CPU 1 (`perf record -a -C 1 -e
  sched:sched_switch,syscalls:sys_enter_epoll_wait`) counted 71,000 switches of each
  thread and 84,000 `epoll_wait` calls for 219,000 packets relayed, against coturn's
  1,600 switches and 22,000 `epoll_wait` for 375,000 packets; natgw's own code (engine,
  allocation maps, the `select!` loop) was under 10% of the profile. `natgw rendezvous`
  now runs on a current-thread runtime (`natgw/src/cli/mod.rs`), so the loop waits in
  epoll itself: 7.0–7.3 µs per packet, close to coturn's 6.7–7.0 µs.
- **What is left**: both make the same two system calls per packet (natgw `recvfrom` +
  `sendto`, coturn `recvmsg` + `sendto`), and the kernel's UDP path dominates both
  profiles. Reading and sending in batches (`recvmmsg`/`sendmmsg`, or `try_recv_from`
  until `WouldBlock` per wake-up) instead of one datagram per `select!` turn is the next
  step; not done.
- **Caveats**: one allocation, one direction (client to peer), one sending thread, over
  veth pairs (no NIC, no interrupts), on two shared virtual CPUs: the ratios of the
  run that started on a quiet machine (5% busy) were those of the busy ones, but a
  `rustc` took ~10% of CPU 1 during one profile, so absolute figures move by ±10%.
  coturn runs with its defaults apart from the listed options. A relay faster than
  what one thread offers (150–210 kpps here) would be measured at the client's rate,
  with its loss near zero.
";

/// The TURN section of docs/benchmarks.md.
#[must_use]
pub fn markdown(r: &TurnResult, m: &super::report::Machine) -> String {
    format!(
        "{HEADING}\n\nRun: {}. Machine: {} × {}, Linux {}. Command:\n\n```sh\n{}\n```\n\n\
         ```text\n{}```\n\n{NOTES}\n{METHOD}",
        m.date,
        m.cpus,
        m.cpu,
        m.kernel,
        m.command,
        text(r)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(server: Server, payload: usize, rep: usize, pps: f64) -> TurnSample {
        TurnSample {
            server,
            payload,
            rep,
            window_s: 2.0,
            offered_pps: pps * 2.0,
            pps,
            mbps: pps * payload as f64 * 8.0 / 1e6,
            sent: 1000,
            received: 500,
            loss: 0.5,
            reordered: 0,
            server_cpu_cores: 1.0,
            server_cpu_us_per_packet: 1e6 / pps,
            server_rcvbuf_errors: 0,
            peer_rcvbuf_errors: 0,
            server_relayed: None,
        }
    }

    #[test]
    fn medians_and_ratios_per_payload() {
        let mut samples = Vec::new();
        for (rep, (n, c)) in [(100.0, 400.0), (300.0, 200.0), (200.0, 300.0)]
            .into_iter()
            .enumerate()
        {
            samples.push(sample(Server::Natgw, 100, rep, n));
            samples.push(sample(Server::Coturn, 100, rep, c));
            samples.push(sample(Server::Natgw, 1200, rep, n * 2.0));
        }
        let rows = rows(&samples);
        assert_eq!(rows.len(), 3, "no coturn row for 1200 bytes");
        assert_eq!((rows[0].server, rows[0].payload), (Server::Natgw, 100));
        assert!((rows[0].pps.median - 200.0).abs() < 1e-9);
        assert!((rows[0].pps.min - 100.0).abs() < 1e-9);
        assert!((rows[1].pps.median - 300.0).abs() < 1e-9);
        assert!((rows[1].mbps.median - 300.0 * 800.0 / 1e6).abs() < 1e-12);
        let q = ratios(&rows);
        assert_eq!(q.len(), 1, "a ratio only where both ran");
        assert_eq!(q[0].payload, 100);
        assert!((q[0].pps - 2.0 / 3.0).abs() < 1e-9);
        assert!((q[0].mbps - 2.0 / 3.0).abs() < 1e-9);
        let t = text(&TurnResult {
            busy_before_pct: 0.0,
            plan: TurnPlan {
                reps: 3,
                warmup: Duration::from_millis(500),
                window: Duration::from_secs(2),
            },
            ratios: q,
            rows,
            samples,
        });
        let ratio_line = t.find("natgw/coturn,  100-byte payload: 0.67×").expect(&t);
        let table = t.find("relayed pps").expect(&t);
        assert!(ratio_line < table, "ratios first:\n{t}");
        assert!(t.contains("200 [100–300]"), "{t}");
        assert!(
            t.contains("9000 sent, 4500 received, 0 dropped at the relay's listening socket and 0 at the peer's (UDP RcvbufErrors), 4500 otherwise lost"),
            "{t}"
        );
    }

    #[test]
    fn loss_is_what_did_not_arrive() {
        assert!((loss(1000, 250) - 0.75).abs() < 1e-12);
        assert!(loss(0, 0).abs() < 1e-12);
        assert!(loss(10, 10).abs() < 1e-12);
    }

    #[test]
    fn udp_snmp_counters_are_read_by_name() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors \
                    InCsumErrors IgnoredMulti MemErrors\n\
                    Udp: 1234 5 77 99 70 0 0 0 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors \
                    InCsumErrors IgnoredMulti MemErrors\nUdpLite: 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(
            parse_udp_snmp(text),
            Some(UdpSnmp {
                in_datagrams: 1234,
                rcvbuf_errors: 70
            })
        );
        assert_eq!(parse_udp_snmp("Ip: a\nIp: 1\n"), None);
        assert_eq!(parse_udp_snmp("Udp: InDatagrams\nUdp: x\n"), None);
    }

    #[test]
    fn natgw_counters_come_from_the_stopped_line() {
        let log = "{\"event\":\"listening\",\"turn\":true}\n\
                   [INFO] turn.allocated client=198.51.100.2:1 relay=203.0.113.1:50000\n\
                   {\"event\":\"stopped\",\"turn\":{\"engine\":{\"to_peer_packets\":4242},\
                   \"service\":{}}}\n";
        assert_eq!(natgw_relayed(log), Some(4242));
        assert_eq!(natgw_relayed("{\"event\":\"listening\"}\n"), None);
        assert_eq!(natgw_relayed(""), None);
    }

    #[test]
    fn payloads_carry_tag_and_sequence() {
        let p = payload(7, 0x0102_0304_0506_0708, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(payload_seq(&p, 7, 100), Some(0x0102_0304_0506_0708));
        assert_eq!(payload_seq(&p, 8, 100), None, "another run's tag");
        assert_eq!(payload_seq(&p[..99], 7, 100), None, "truncated");
        let mut t = SeqTracker::default();
        for seq in [0, 1, 3, 2, 3] {
            t.record(&payload(7, seq, 100), 7, 100);
        }
        t.record(&payload(9, 4, 100), 7, 100);
        t.record(&payload(7, 1 << 40, 100), 7, 100);
        assert_eq!(t.received, 4);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.reordered, 1, "2 after 3");
        assert_eq!(t.invalid, 2);
    }

    #[test]
    fn a_run_that_relays_nothing_fails() {
        let mut s = sample(Server::Coturn, 100, 0, 0.0);
        s.received = 0;
        let err = check(&s, &SeqTracker::default()).unwrap_err();
        assert!(err.to_string().contains("relayed nothing"), "{err}");
        let mut t = SeqTracker::default();
        t.record(&payload(1, 0, 100), 1, 100);
        t.record(&payload(1, 0, 100), 1, 100);
        let s = sample(Server::Natgw, 100, 0, 10.0);
        assert!(check(&s, &t)
            .unwrap_err()
            .to_string()
            .contains("duplicates"));
        let mut ok = SeqTracker::default();
        ok.record(&payload(1, 0, 100), 1, 100);
        check(&s, &ok).unwrap();
        let mut short = s.clone();
        short.server_relayed = Some(0);
        assert!(
            check(&short, &ok).is_err(),
            "natgw counted fewer than arrived"
        );
    }

    #[test]
    fn requests_are_signed_and_responses_parsed() {
        let auth = Auth {
            realm: REALM.to_owned(),
            nonce: "abc".to_owned(),
        };
        let id = [3; 12];
        let bytes = request(
            METHOD_CHANNEL_BIND,
            id,
            vec![Attribute::ChannelNumber(CHANNEL)],
            Some(&auth),
        );
        assert_eq!(
            auth::check_integrity(&bytes, &long_term_key(USER, REALM, PASSWORD)),
            auth::Integrity::Valid
        );
        assert_ne!(
            auth::check_integrity(&bytes, &long_term_key(USER, REALM, "wrong")),
            auth::Integrity::Valid
        );
        // A request is not a response.
        assert_eq!(parse_response(&bytes), None);
        let relayed = SocketAddrV4::new(RELAY_ADDR, 50_001);
        let success = Repr {
            class: Class::Success,
            method: METHOD_ALLOCATE,
            cookie: MAGIC_COOKIE,
            transaction_id: id,
            attributes: vec![Attribute::XorRelayedAddress(SocketAddr::V4(relayed))],
        }
        .to_bytes();
        let r = parse_response(&success).unwrap();
        assert!(r.success);
        assert_eq!(
            (r.transaction_id, r.relayed, r.error),
            (id, Some(relayed), None)
        );
        let challenge = Repr {
            class: Class::Error,
            method: METHOD_ALLOCATE,
            cookie: MAGIC_COOKIE,
            transaction_id: id,
            attributes: vec![
                Attribute::ErrorCode(ErrorCode {
                    code: 401,
                    reason: "Unauthorized",
                }),
                Attribute::Realm(REALM),
                Attribute::Nonce("n1"),
            ],
        }
        .to_bytes();
        let r = parse_response(&challenge).unwrap();
        assert!(!r.success);
        assert_eq!(r.error, Some(401));
        assert_eq!(r.realm.as_deref(), Some(REALM));
        assert_eq!(r.nonce.as_deref(), Some("n1"));
        assert_eq!(parse_response(b"not stun"), None);
    }

    #[test]
    fn coturn_listens_only_on_the_namespace_address() {
        let c = coturn_config(Path::new("/tmp/x"));
        for line in [
            "listening-ip=198.51.100.1",
            "relay-ip=203.0.113.1",
            "user=bench:relay-bench",
            "lt-cred-mech",
            "no-cli",
            "userdb=/tmp/x/turnserver-bench.db",
            "pidfile=/tmp/x/turnserver-bench.pid",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} missing:\n{c}");
        }
        assert!(!c.contains("daemon"), "{c}");
    }

    #[test]
    fn turn_section_is_replaced_in_place_or_appended() {
        use super::super::report::replace_section;
        let new = format!("{HEADING}\n\nnew\n");
        let upnp = super::super::upnp::HEADING;
        let doc = format!("# B\n\n{upnp}\n\nu\n\n{HEADING}\n\nold\n");
        assert_eq!(
            replace_section(&doc, HEADING, &new),
            format!("# B\n\n{upnp}\n\nu\n\n{new}")
        );
        let appended = replace_section(&format!("# B\n\n{upnp}\n\nu\n"), HEADING, &new);
        assert!(appended.ends_with(&format!("u\n\n{new}")), "{appended}");
        // The UPnP section stops at the TURN heading.
        let both = format!("# B\n\n{upnp}\n\nu\n\n{HEADING}\n\nold\n");
        assert_eq!(
            replace_section(&both, upnp, &format!("{upnp}\n\nv\n")),
            format!("# B\n\n{upnp}\n\nv\n\n{HEADING}\n\nold\n")
        );
        assert!(!METHOD.contains("\n## ") && !NOTES.contains("\n## "));
    }
}
