//! Forwarded packets per second through the gateway namespace, and new mappings per
//! second under a flood of TCP SYNs, for natgw, the kernel's nftables masquerade (with
//! and without a flowtable), plain forwarding and a bare XDP forwarder — the same
//! topology, generator and receiver for each, run interleaved.
//!
//! One *mode run* builds a fresh [`Bench`] topology (so no conntrack entry, mapping or
//! neighbour state survives from the run before), sets the gateway up for one mode,
//! measures every UDP workload for one window each, then sends one SYN burst, and
//! tears everything down. A repetition is one mode run of every mode, in an order
//! rotated from one repetition to the next.
//!
//! - Generator: `xdp_gen` in `BPF_PROG_TEST_RUN` live-frame mode, from a thread in the
//!   generator namespace pinned to [`GEN_CPU`]; its `XDP_TX` puts every frame straight
//!   into the gateway's LAN veth, as fast as the CPU allows (frames the gateway cannot
//!   take are dropped at its veth's ring).
//! - Gateway: the NAPI thread of `blan0`, pinned to [`GW_CPU`], does all the gateway's
//!   per-packet work — natgw's `xdp_lan`, or `xdp_pass` and the kernel's forwarding
//!   (with conntrack and masquerade in the nft mode) — up to handing the frame to
//!   `bwan0`. natgw's controller (garbage collection) is pinned to [`GEN_CPU`].
//! - Receiver: `xdp_count_drop` on `brcv0`, whose NAPI thread is pinned to
//!   [`GEN_CPU`]; forwarded packets per second are its count over the window.
//! - XDP forwarder (`xdp-forward`): `xdp_fwd` on `blan0` (FIB lookup, MAC rewrite,
//!   `bpf_redirect` to `bwan0`; no NAT, no state): what an XDP program can reach on
//!   these veths, the ceiling natgw is set against.
//! - nftables flowtable (`nft-flowtable`): masquerade plus `flow add @ft`, every flow
//!   made established by replies before its window ([`super::flowtable`]); the bench
//!   fails if offload did not engage.
//! - Ceiling: the generator alone, with `xdp_count_drop` on the gateway's LAN veth,
//!   shows how many frames per second the generator can put into the gateway.
//!
//! Every mode also runs WAN → LAN ([`Direction::WanToLan`]): a mode run of its own
//! with the generator on the WAN side and the receiver on the LAN side, sending to
//! the external endpoints the outbound traffic set up ([`super::inbound`]).

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sched::{setns, CloneFlags};
use testbed::Netns;

use super::bpf;
use super::cpu::{self, Sampler, Task, Usage};
use super::daemon::Natgw;
use super::flowtable;
use super::frames::{self, Endpoints, L4};
use super::inbound;
use super::net::{self, Bench, Direction};
use super::profile;
use super::programs::{names, FlowSpec, Rx, Tools, Tuple};
use crate::signals;

/// The CPU of the generator, the receiver's NAPI thread and natgw's controller.
pub const GEN_CPU: usize = 0;
/// The CPU of the gateway's NAPI thread: all of the gateway's per-packet work.
pub const GW_CPU: usize = 1;

/// Frames per live-frame `BPF_PROG_TEST_RUN` call: far more than a window needs; the
/// bench ends the call with a signal (each call costs tens of milliseconds of setup).
const GEN_REPEAT: u32 = 1 << 28;
/// Frames per batch (the kernel's default, NAPI's budget).
const GEN_BATCH: u32 = 64;
/// Frames the paced burst keeps in flight at most: below a veth ring (256), so the
/// gateway never drops a SYN for want of room.
pub const PACED_IN_FLIGHT: u32 = 192;
/// How long a burst may make no progress at the receiver before it is over.
pub const BURST_STALL: Duration = Duration::from_millis(100);
/// First source port of the generated flows (natgw keeps it when it is free).
const FIRST_SPORT: u16 = 1024;
/// Destination port of flow 0; further destinations count up from it.
pub const FIRST_DPORT: u16 = 9;
/// Source ports per source address: endpoint `e` is address `10.0.1.2 + e / 500`,
/// port `1024 + e % 500`.
pub const PORTS_PER_ADDR: u32 = 500;
/// The first internal address; endpoints count up from it.
pub const FIRST_INTERNAL: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 1, 2);
/// Distinct internal endpoints at most: half the external port space of one address,
/// so natgw's port choice (one external address, endpoint-independent mappings) works
/// in its ordinary regime. Flows beyond it differ in the destination port.
pub const MAX_ENDPOINTS: u32 = 32_768;
/// natgw's table size for these runs: every UDP endpoint plus every SYN, with room.
pub const NATGW_MAX_MAPPINGS: &str = "262144";

/// The gateway under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Mode {
    /// natgw: XDP fast path.
    Natgw,
    /// nftables masquerade with conntrack.
    Nft,
    /// nftables masquerade plus a flowtable (the kernel's software fast path).
    NftFlowtable,
    /// Forwarding alone.
    Plain,
    /// A bare XDP forwarder: FIB lookup, MAC rewrite, redirect; no NAT.
    XdpForward,
    /// The generator's ceiling: the gateway's LAN veth counts and drops in XDP.
    Ceiling,
}

impl Mode {
    /// The modes compared side by side in the first table (and run the SYN burst).
    pub const COMPARED: [Mode; 3] = [Mode::Natgw, Mode::Nft, Mode::Plain];

    /// The strongest peers, in the second table: the kernel's software fast path and
    /// the bare XDP forwarder.
    pub const PEERS: [Mode; 2] = [Mode::NftFlowtable, Mode::XdpForward];

    /// Every mode, in the order of a repetition's first run.
    pub const ALL: [Mode; 6] = [
        Mode::Natgw,
        Mode::Nft,
        Mode::NftFlowtable,
        Mode::Plain,
        Mode::XdpForward,
        Mode::Ceiling,
    ];

    /// Short name (JSON keys).
    pub const fn key(self) -> &'static str {
        match self {
            Mode::Natgw => "natgw",
            Mode::Nft => "nft",
            Mode::NftFlowtable => "nft-flowtable",
            Mode::Plain => "plain",
            Mode::XdpForward => "xdp-forward",
            Mode::Ceiling => "ceiling",
        }
    }

    /// Column heading.
    pub const fn label(self) -> &'static str {
        match self {
            Mode::Natgw => "natgw (XDP)",
            Mode::Nft => "nft masquerade",
            Mode::NftFlowtable => "nft flowtable",
            Mode::Plain => "plain forwarding",
            Mode::XdpForward => "XDP forwarder",
            Mode::Ceiling => "generator ceiling",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A UDP traffic pattern.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Workload {
    /// Short name (JSON keys).
    pub key: &'static str,
    /// Row heading.
    pub label: &'static str,
    /// Distinct 5-tuples.
    pub flows: u32,
}

impl Workload {
    /// Distinct internal endpoints (source address and port) among the flows.
    pub fn endpoints(&self) -> u32 {
        self.flows.min(MAX_ENDPOINTS)
    }

    /// How the generator makes its LAN → WAN flows.
    pub fn spec(&self) -> FlowSpec {
        FlowSpec {
            flows: self.flows,
            endpoints: self.endpoints(),
            ports_per_addr: PORTS_PER_ADDR,
        }
    }

    /// The LAN → WAN flows, in the generator's order: the tuples `xdp_gen` writes for
    /// [`Workload::spec`] (the WAN → LAN traffic answers them).
    pub fn tuples(&self) -> Vec<Tuple> {
        tuples(self.spec())
    }
}

/// The tuples `xdp_gen` writes for `spec` from [`template`]'s flow 0, flow by flow.
pub fn tuples(spec: FlowSpec) -> Vec<Tuple> {
    let endpoints = spec.endpoints.max(1);
    let per_addr = spec.ports_per_addr.max(1);
    (0..spec.flows.max(1))
        .map(|flow| {
            let endpoint = flow % endpoints;
            let addr = u32::from(FIRST_INTERNAL).wrapping_add(endpoint / per_addr);
            let sport = FIRST_SPORT.wrapping_add((endpoint % per_addr) as u16);
            let dport = FIRST_DPORT.wrapping_add((flow / endpoints) as u16);
            Tuple {
                src: std::net::SocketAddrV4::new(addr.into(), sport),
                dst: std::net::SocketAddrV4::new(net::RCV_ADDR, dport),
            }
        })
        .collect()
}

/// The internal addresses of `endpoints` endpoints.
pub fn internal_addrs(endpoints: u32) -> impl Iterator<Item = std::net::Ipv4Addr> {
    (0..endpoints.div_ceil(PORTS_PER_ADDR))
        .map(|i| std::net::Ipv4Addr::from(u32::from(FIRST_INTERNAL) + i))
}

/// The UDP workloads, in table order.
pub const WORKLOADS: [Workload; 3] = [
    Workload {
        key: "udp_1_flow",
        label: "UDP, 1 flow",
        flows: 1,
    },
    Workload {
        key: "udp_1k_flows",
        label: "UDP, 1k flows",
        flows: 1_000,
    },
    Workload {
        key: "udp_100k_flows",
        label: "UDP, 100k flows",
        flows: 100_000,
    },
];

/// The same workloads WAN → LAN: the same flows, answered from the WAN side to the
/// external endpoints the LAN → WAN traffic set up (named apart so that every
/// workload key is one direction).
pub const WAN_TO_LAN: [Workload; 3] = [
    Workload {
        key: "udp_1_flow_wan_to_lan",
        label: "UDP, 1 flow, WAN→LAN",
        flows: 1,
    },
    Workload {
        key: "udp_1k_flows_wan_to_lan",
        label: "UDP, 1k flows, WAN→LAN",
        flows: 1_000,
    },
    Workload {
        key: "udp_100k_flows_wan_to_lan",
        label: "UDP, 100k flows, WAN→LAN",
        flows: 100_000,
    },
];

/// The workloads of `direction`.
pub const fn workloads(direction: Direction) -> &'static [Workload; 3] {
    match direction {
        Direction::LanToWan => &WORKLOADS,
        Direction::WanToLan => &WAN_TO_LAN,
    }
}

/// How long and how often.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Plan {
    /// Repetitions of every mode.
    pub reps: usize,
    /// Traffic before the window opens (mappings and conntrack entries get created).
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// SYNs in the burst, each from a new internal endpoint.
    pub syn_burst: u32,
}

/// One window of one workload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PpsSample {
    /// Forwarded packets per second (received).
    pub pps: f64,
    /// Frames the receiver counted over the window.
    pub received: u64,
    /// Where the CPU went.
    pub cpu: Usage,
    /// natgw only: its counters over the window (did the packets take the fast path,
    /// was anything dropped).
    pub natgw: Option<NatgwCounters>,
    /// nft-flowtable only: did offload engage.
    pub flowtable: Option<super::flowtable::Check>,
    /// WAN → LAN only: the state the flows were sent to.
    pub inbound: Option<inbound::Check>,
}

/// natgw counters over a window.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct NatgwCounters {
    /// Translated and redirected by XDP.
    pub xdp_out_redirected: u64,
    /// Translated by TC on the kernel's path.
    pub tc_out_translated: u64,
    /// Inbound packets translated and redirected by XDP.
    pub xdp_in_redirected: u64,
    /// Inbound packets translated by TC on the kernel's path.
    pub tc_in_translated: u64,
    /// Mappings created.
    pub mapping_created: u64,
    /// Every `drop_*` counter summed.
    pub drops: u64,
}

/// One SYN burst.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SynSample {
    /// SYNs sent.
    pub sent: u64,
    /// SYNs that reached the receiver.
    pub forwarded: u64,
    /// Mappings (natgw) or conntrack entries (nft) created; `None` for plain forwarding.
    pub created: Option<u64>,
    /// From the first to the last SYN at the receiver.
    pub seconds: f64,
    /// Where the CPU went during the burst.
    pub cpu: Usage,
}

impl SynSample {
    /// New mappings (or conntrack entries) per second.
    pub fn created_per_s(&self) -> Option<f64> {
        let c = self.created?;
        (self.seconds > 0.0).then(|| c as f64 / self.seconds)
    }

    /// SYNs forwarded per second.
    pub fn pps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.forwarded as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Everything measured.
#[derive(Debug, Default, serde::Serialize)]
pub struct Results {
    /// `(mode, workload key, sample)` in the order measured.
    pub pps: Vec<(Mode, &'static str, PpsSample)>,
    /// `(mode, sample)`.
    pub syn: Vec<(Mode, SynSample)>,
    /// nf_conntrack_max in a fresh namespace (the nft mode's table size).
    pub conntrack_max: Option<u64>,
    /// Where the gateway's NAPI thread spent its time, per mode (UDP, 1 flow).
    pub profiles: Vec<(Mode, Vec<profile::Entry>)>,
    /// Why there is no profile, if there is none.
    pub profile_note: Option<String>,
    /// Modes that could not run on this machine, and why.
    pub unavailable: Vec<(Mode, String)>,
}

impl Results {
    /// The samples of `mode` and `workload`.
    pub fn pps_of(&self, mode: Mode, workload: &str) -> Vec<&PpsSample> {
        self.pps
            .iter()
            .filter(|(m, w, _)| *m == mode && *w == workload)
            .map(|(_, _, s)| s)
            .collect()
    }

    /// Why `mode` could not run here, if it could not.
    pub fn unavailable(&self, mode: Mode) -> Option<&str> {
        self.unavailable
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, why)| why.as_str())
    }

    /// The SYN bursts of `mode`.
    pub fn syn_of(&self, mode: Mode) -> Vec<&SynSample> {
        self.syn
            .iter()
            .filter(|(m, _)| *m == mode)
            .map(|(_, s)| s)
            .collect()
    }
}

/// What the runs need.
pub struct Rig<'a> {
    /// The natgw binary.
    pub natgw_bin: &'a Path,
    /// Where natgw's logs go.
    pub log_dir: &'a Path,
    /// `xdp_pass`, the receiver and the generator.
    pub tools: Tools,
}

/// Flow 0's frame in `direction`: LAN → WAN from the first internal endpoint to the
/// receiver; WAN → LAN the reverse toward the gateway's external address (the
/// generator's table then writes every flow's addresses and ports).
pub fn template(l4: L4, direction: Direction) -> [u8; frames::FRAME_LEN] {
    let (dst_mac, src_mac) = direction.macs();
    let (src, sport, dst, dport) = match direction {
        Direction::LanToWan => (FIRST_INTERNAL, FIRST_SPORT, net::RCV_ADDR, FIRST_DPORT),
        Direction::WanToLan => (net::RCV_ADDR, FIRST_DPORT, net::GW_WAN_ADDR, FIRST_SPORT),
    };
    frames::build(
        l4,
        &Endpoints {
            dst_mac,
            src_mac,
            src,
            sport,
            dst,
            dport,
        },
    )
}

/// Runs every repetition of every mode.
pub fn run(rig: &mut Rig<'_>, plan: &Plan, results: &mut Results) -> Result<()> {
    let mut modes = Mode::ALL.to_vec();
    if let Some(reason) = flowtable::unsupported()? {
        eprintln!(
            "xtask bench: warning: the {} mode cannot run here: {reason}",
            Mode::NftFlowtable.key()
        );
        modes.retain(|&m| m != Mode::NftFlowtable);
        results.unavailable.push((Mode::NftFlowtable, reason));
    }
    let perf = profile::available();
    if !perf {
        results.profile_note =
            Some("no profile: `perf` is not installed (Debian: linux-perf)".to_owned());
    }
    for rep in 0..plan.reps {
        for i in 0..modes.len() {
            let mode = modes[(i + rep) % modes.len()];
            for direction in [Direction::LanToWan, Direction::WanToLan] {
                signals::check()?;
                eprintln!(
                    "xtask bench: repetition {}/{}: {}, {}",
                    rep + 1,
                    plan.reps,
                    mode.label(),
                    direction.label()
                );
                let profile = perf && rep == 0 && direction == Direction::LanToWan;
                mode_run(rig, mode, direction, plan, profile, results)
                    .with_context(|| format!("{} run, {}", mode.label(), direction.label()))?;
            }
        }
    }
    Ok(())
}

/// The gateway's state for one mode run; dropped in field order (natgw stops, then
/// the programs detach, then the namespaces go).
pub(super) struct Gateway {
    pub mode: Mode,
    pub direction: Direction,
    pub natgw: Option<Natgw>,
    _links: Vec<aya::programs::xdp::XdpLink>,
    pub net: Bench,
}

fn mode_run(
    rig: &mut Rig<'_>,
    mode: Mode,
    direction: Direction,
    plan: &Plan,
    profile: bool,
    results: &mut Results,
) -> Result<()> {
    let net = Bench::create()?;
    if direction == Direction::WanToLan {
        net.add_lan_neighbours(internal_addrs(MAX_ENDPOINTS))?;
    }
    let mut links = Vec::new();
    let counter = if mode == Mode::Ceiling {
        net.ingress(direction)
    } else {
        net.receiver(direction)
    };
    links.push(
        rig.tools
            .attach(names::XDP_COUNT_DROP, counter.ns, counter.iface.ifindex)?,
    );
    // The kernel modes' veths must take the generator's `XDP_TX` frames: both
    // gateway veths get `xdp_pass` when the traffic enters by the WAN (the LAN one
    // for the outbound traffic that makes the state).
    let pass_on = |net: &Bench| -> Vec<u32> {
        match direction {
            Direction::LanToWan => vec![net.lan_if.ifindex],
            Direction::WanToLan => vec![net.lan_if.ifindex, net.wan_if.ifindex],
        }
    };
    let mut natgw = None;
    match mode {
        Mode::Natgw => {
            let log = rig.log_dir.join("natgw-bench.log");
            let extra = ["--max-mappings", NATGW_MAX_MAPPINGS].map(str::to_owned);
            natgw = Some(Natgw::start(
                rig.natgw_bin,
                &net.gw,
                &extra,
                Some(GEN_CPU),
                &log,
            )?);
        }
        Mode::Nft => {
            for ifindex in pass_on(&net) {
                links.push(rig.tools.attach(names::XDP_PASS, &net.gw, ifindex)?);
            }
            nft_masquerade(&net.gw)?;
            if results.conntrack_max.is_none() {
                results.conntrack_max = net
                    .gw
                    .sysctl("net/netfilter/nf_conntrack_max")
                    .ok()
                    .and_then(|v| v.parse().ok());
            }
        }
        Mode::NftFlowtable => {
            for ifindex in pass_on(&net) {
                links.push(rig.tools.attach(names::XDP_PASS, &net.gw, ifindex)?);
            }
            flowtable::install(&net)?;
        }
        Mode::Plain => {
            for ifindex in pass_on(&net) {
                links.push(rig.tools.attach(names::XDP_PASS, &net.gw, ifindex)?);
            }
        }
        Mode::XdpForward => {
            let ingress = net.ingress(direction).iface.ifindex;
            links.push(rig.tools.attach(names::XDP_FWD, &net.gw, ingress)?);
        }
        Mode::Ceiling => {}
    }
    let gw = Gateway {
        mode,
        direction,
        natgw,
        _links: links,
        net,
    };

    let mut sampler = Sampler::default();
    let gw_threads = Bench::thread_napi(&gw.net.gw, gw.net.ingress(direction).name)?;
    for &tid in &gw_threads {
        cpu::pin(tid, GW_CPU)?;
        cpu::boost(tid)?;
        sampler.add("gateway", Task::kthread(tid));
    }
    if mode != Mode::Ceiling {
        let receiver = gw.net.receiver(direction);
        for tid in Bench::thread_napi(receiver.ns, receiver.name)? {
            cpu::pin(tid, GEN_CPU)?;
            cpu::boost(tid)?;
            sampler.add("receiver", Task::kthread(tid));
        }
    }
    if let Some(n) = &gw.natgw {
        sampler.add("natgw", Task::Process { pid: n.pid() });
    }

    let all = workloads(direction);
    let workloads: &[Workload] = if mode == Mode::Ceiling {
        &all[..1]
    } else {
        all
    };
    for (i, w) in workloads.iter().enumerate() {
        signals::check()?;
        let inbound = match direction {
            Direction::LanToWan => None,
            Direction::WanToLan => Some(inbound::establish(rig, w, &gw, plan)?),
        };
        let unreplied = match (mode, &inbound) {
            (Mode::NftFlowtable, None) => Some(prime_flowtable(rig, i, &gw, plan)?),
            (_, Some(table)) => table.unreplied,
            _ => None,
        };
        let table = inbound.as_ref().map(|t| t.flows.as_slice());
        let mut sample = flood_window(rig, i, &gw, &sampler, plan, table)?;
        if let Some(table) = &inbound {
            let check = inbound::check(table, &gw, &sample)
                .with_context(|| format!("{}, {}", mode.label(), w.label))?;
            eprintln!("  {:<16} {}", "", check.summary());
            sample.inbound = Some(check);
        }
        eprintln!(
            "  {:<16} {:>7.3} Mpps  CPU% gen/gw/rcv/natgw, cpu busy/si/steal: {}",
            w.label,
            sample.pps / 1e6,
            super::report::cpu_cells(&sample.cpu)
        );
        if let Some(check) = &mut sample.flowtable {
            check.flows = w.flows;
            check.unreplied_after_priming = unreplied.unwrap_or(0);
            eprintln!(
                "  {:<16} {} flows offloaded, {:.2}% of the forwarded packets through the \
                 forward chain",
                "",
                check.offloaded,
                check.slow_share() * 100.0
            );
            check
                .verdict()
                .with_context(|| format!("{}, {}", mode.label(), w.label))?;
        }
        results.pps.push((mode, w.key, sample));
    }
    if profile && mode != Mode::Ceiling && direction == Direction::LanToWan {
        signals::check()?;
        let entries = profile_window(rig, &gw, gw_threads[0], plan)?;
        results.profiles.push((mode, entries));
    }
    if Mode::COMPARED.contains(&mode) && direction == Direction::LanToWan {
        signals::check()?;
        let sample = syn_burst(rig, mode, &gw, &sampler, plan)?;
        eprintln!(
            "  {:<16} {:>7.3} Mpps forwarded, {} created",
            "TCP SYN burst",
            sample.pps() / 1e6,
            sample.created_per_s().map_or_else(
                || "no mappings".to_owned(),
                |r| format!("{:.3} M/s", r / 1e6)
            )
        );
        results.syn.push((mode, sample));
    }
    drop(gw);
    Ok(())
}

/// Installs the kernel's NAT: masquerade to `bwan0`'s address, conntrack implied.
pub fn nft_masquerade(gw: &Netns) -> Result<()> {
    let ruleset = format!(
        "table ip natgw_bench {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"{}\" masquerade\n  }}\n}}\n",
        net::GW_WAN_IF
    );
    nft_apply(gw, &ruleset)
}

/// Loads `ruleset` with `nft -f -` in `gw`.
pub fn nft_apply(gw: &Netns, ruleset: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = gw
        .command("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting nft (install the nftables package)")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(ruleset.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f - failed ({}): {}\nfor:\n{ruleset}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// natgw's counters now.
pub(super) fn natgw_counters(natgw: &Natgw) -> Result<NatgwCounters> {
    let status = natgw.status()?;
    let c = &status["counters"];
    let get = |name: &str| c[name].as_u64().unwrap_or(0);
    let drops = c
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.starts_with("drop_"))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0);
    Ok(NatgwCounters {
        xdp_out_redirected: get("xdp_out_redirected"),
        tc_out_translated: get("tc_out_translated"),
        xdp_in_redirected: get("xdp_in_redirected"),
        tc_in_translated: get("tc_in_translated"),
        mapping_created: get("mapping_created"),
        drops,
    })
}

impl NatgwCounters {
    fn since(self, before: NatgwCounters) -> NatgwCounters {
        NatgwCounters {
            xdp_out_redirected: self.xdp_out_redirected - before.xdp_out_redirected,
            tc_out_translated: self.tc_out_translated - before.tc_out_translated,
            xdp_in_redirected: self.xdp_in_redirected - before.xdp_in_redirected,
            tc_in_translated: self.tc_in_translated - before.tc_in_translated,
            mapping_created: self.mapping_created - before.mapping_created,
            drops: self.drops - before.drops,
        }
    }
}

/// The running generator: a thread in the generator namespace, pinned to [`GEN_CPU`]
/// at nice -20, running `xdp_gen` in live-frame mode until stopped.
pub(super) struct GenThread<'s> {
    handle: std::thread::ScopedJoinHandle<'s, Result<()>>,
    tid: i32,
    pthread: libc::pthread_t,
    stop: &'s AtomicBool,
}

impl<'s> GenThread<'s> {
    pub(super) fn start(
        scope: &'s std::thread::Scope<'s, '_>,
        gen_ns: &Netns,
        prog: OwnedFd,
        frame: [u8; frames::FRAME_LEN],
        ifindex: u32,
        stop: &'s AtomicBool,
    ) -> Result<GenThread<'s>> {
        let ns_file = File::open(gen_ns.path())
            .with_context(|| format!("opening {}", gen_ns.path().display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("bench generator".to_owned())
            .spawn_scoped(scope, move || -> Result<()> {
                let setup = setns(ns_file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .context("entering the generator namespace")
                    .and_then(|()| cpu::pin(0, GEN_CPU))
                    .and_then(|()| cpu::boost(0));
                // SAFETY: no preconditions.
                let me = unsafe { libc::pthread_self() };
                let _ = tx.send(
                    setup
                        .as_ref()
                        .map(|()| (cpu::gettid(), me))
                        .map_err(|e| format!("{e:#}")),
                );
                setup?;
                while !stop.load(Ordering::SeqCst) {
                    bpf::live_run(prog.as_fd(), &frame, ifindex, GEN_REPEAT, GEN_BATCH)?;
                }
                Ok(())
            })
            .context("starting the generator thread")?;
        let (tid, pthread) = rx
            .recv()
            .context("the generator thread ended before starting")?
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(GenThread {
            handle,
            tid,
            pthread,
            stop,
        })
    }

    /// The thread as a sampled task.
    fn task(&self) -> Task {
        Task::Thread {
            pid: i32::try_from(std::process::id()).unwrap_or(0),
            tid: self.tid,
        }
    }

    /// Stops it: raises the flag and interrupts its system call until it has ended.
    pub(super) fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        while !self.handle.is_finished() {
            // SAFETY: the thread is alive (not finished, not joined).
            unsafe { libc::pthread_kill(self.pthread, signals::WAKE as libc::c_int) };
            std::thread::sleep(Duration::from_millis(2));
        }
        self.handle
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
            .context("generator")
    }
}

/// Floods with workload `index` of the gateway's direction (WAN → LAN: the flows of
/// `table`) and measures one window.
fn flood_window(
    rig: &mut Rig<'_>,
    index: usize,
    gw: &Gateway,
    sampler: &Sampler,
    plan: &Plan,
    table: Option<&[Tuple]>,
) -> Result<PpsSample> {
    let net = &gw.net;
    let frame = template(L4::Udp, gw.direction);
    let workload = workloads(gw.direction)[index];
    rig.tools.configure_gen(&frame, workload.spec(), 0, 0)?;
    if let Some(table) = table {
        rig.tools.set_flow_table(table)?;
    }
    let prog = rig.tools.gen_fd()?.try_clone_to_owned()?;
    let stop = AtomicBool::new(false);
    let tools = &rig.tools;
    let sender = net.sender(gw.direction);
    std::thread::scope(|scope| -> Result<PpsSample> {
        let gen = GenThread::start(scope, sender.ns, prog, frame, sender.iface.ifindex, &stop)?;
        let mut sampler = sampler.clone();
        sampler.add("generator", gen.task());
        let flowtable = gw.mode == Mode::NftFlowtable;
        let slow_path = || -> Result<Option<u64>> {
            flowtable
                .then(|| flowtable::slow_path_packets(&net.gw))
                .transpose()
        };
        let measured = (|| -> Result<PpsSample> {
            signals::sleep(plan.warmup)?;
            let natgw_before = gw.natgw.as_ref().map(natgw_counters).transpose()?;
            let slow_before = slow_path()?;
            let (rx0, cpu0) = (tools.rx()?, sampler.snapshot()?);
            signals::sleep(plan.window)?;
            let (rx1, cpu1) = (tools.rx()?, sampler.snapshot()?);
            let slow_after = slow_path()?;
            let natgw_after = gw.natgw.as_ref().map(natgw_counters).transpose()?;
            Ok(PpsSample {
                pps: (rx1.packets - rx0.packets) as f64 / cpu0.seconds_until(&cpu1),
                received: rx1.packets - rx0.packets,
                cpu: sampler.usage(&cpu0, &cpu1),
                natgw: natgw_before.zip(natgw_after).map(|(b, a)| a.since(b)),
                flowtable: slow_before.zip(slow_after).map(|(b, a)| flowtable::Check {
                    slow_path_packets: a.saturating_sub(b),
                    forwarded: rx1.packets - rx0.packets,
                    ..flowtable::Check::default()
                }),
                inbound: None,
            })
        })();
        let stopped = gen.stop();
        let mut sample = measured?;
        stopped?;
        if let Some(check) = &mut sample.flowtable {
            check.offloaded = flowtable::entries(&net.gw)?
                .iter()
                .filter(|e| e.offloaded)
                .count() as u64;
        }
        Ok(sample)
    })
}

/// Rounds of the workload at most until conntrack has an entry for every flow.
const PRIME_ROUNDS: usize = 5;

/// Makes every flow of workload `index` established for the flowtable: the workload
/// runs (a warm-up, at least a second, repeated up to [`PRIME_ROUNDS`] times) until
/// conntrack has an entry per flow, then the receiver replies to each. Returns how
/// many entries stayed unreplied.
fn prime_flowtable(rig: &mut Rig<'_>, index: usize, gw: &Gateway, plan: &Plan) -> Result<usize> {
    let net = &gw.net;
    let flows = WORKLOADS[index].flows;
    let mut seen = 0;
    for _ in 0..PRIME_ROUNDS {
        signals::check()?;
        send_outbound(
            rig,
            &WORKLOADS[index],
            gw,
            plan.warmup.max(Duration::from_secs(1)),
        )?;
        seen = flowtable::entries(&net.gw)?
            .iter()
            .filter(|e| *e.reply_src.ip() == net::RCV_ADDR)
            .count();
        if seen >= flows as usize {
            return flowtable::prime(net);
        }
    }
    bail!(
        "after {PRIME_ROUNDS} rounds of the workload conntrack has entries for {seen} of its \
         {flows} flows"
    )
}

/// Sends workload `w`'s LAN → WAN flows from the generator namespace for `how_long`
/// (whatever the gateway's direction): the traffic that makes mappings and conntrack
/// entries.
pub(super) fn send_outbound(
    rig: &mut Rig<'_>,
    w: &Workload,
    gw: &Gateway,
    how_long: Duration,
) -> Result<()> {
    let net = &gw.net;
    let frame = template(L4::Udp, Direction::LanToWan);
    rig.tools.configure_gen(&frame, w.spec(), 0, 0)?;
    let prog = rig.tools.gen_fd()?.try_clone_to_owned()?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<()> {
        let gen = GenThread::start(scope, &net.gen, prog, frame, net.gen_if.ifindex, &stop)?;
        let slept = signals::sleep(how_long);
        let stopped = gen.stop();
        slept?;
        stopped
    })
}

/// Floods with the first workload and profiles the gateway's NAPI thread `tid` for a
/// second (not a measured window: perf's sampling costs the gateway a little).
fn profile_window(
    rig: &mut Rig<'_>,
    gw: &Gateway,
    tid: i32,
    plan: &Plan,
) -> Result<Vec<profile::Entry>> {
    let net = &gw.net;
    let frame = template(L4::Udp, Direction::LanToWan);
    rig.tools.configure_gen(&frame, WORKLOADS[0].spec(), 0, 0)?;
    let prog = rig.tools.gen_fd()?.try_clone_to_owned()?;
    let stop = AtomicBool::new(false);
    let data = rig.log_dir.join("perf-gateway.data");
    let bpf_label = match gw.mode {
        Mode::Natgw => "BPF, natgw's xdp_lan",
        Mode::XdpForward => "BPF, xdp_fwd",
        _ => "BPF, xdp_pass",
    };
    std::thread::scope(|scope| -> Result<Vec<profile::Entry>> {
        let gen = GenThread::start(scope, &net.gen, prog, frame, net.gen_if.ifindex, &stop)?;
        let recorded = signals::sleep(plan.warmup.min(Duration::from_millis(500)))
            .and_then(|()| profile::record(tid, Duration::from_secs(1), &data, bpf_label));
        let stopped = gen.stop();
        let entries = recorded?;
        stopped?;
        Ok(entries)
    })
}

/// Sends `plan.syn_burst` SYNs, each from a new internal endpoint, paced so that no
/// more than [`PACED_IN_FLIGHT`] are between the generator and the receiver, and
/// measures from the first to the last arrival.
fn syn_burst(
    rig: &mut Rig<'_>,
    mode: Mode,
    gw: &Gateway,
    sampler: &Sampler,
    plan: &Plan,
) -> Result<SynSample> {
    let net = &gw.net;
    let created = |gw: &Gateway| -> Result<Option<u64>> {
        Ok(match mode {
            Mode::Natgw => Some(
                gw.natgw
                    .as_ref()
                    .context("natgw")?
                    .counter("mapping_created")?,
            ),
            Mode::Nft => Some(
                gw.net
                    .gw
                    .sysctl("net/netfilter/nf_conntrack_count")?
                    .parse()
                    .context("nf_conntrack_count")?,
            ),
            Mode::NftFlowtable => Some(
                gw.net
                    .gw
                    .sysctl("net/netfilter/nf_conntrack_count")?
                    .parse()
                    .context("nf_conntrack_count")?,
            ),
            Mode::Plain | Mode::XdpForward | Mode::Ceiling => None,
        })
    };
    let before = created(gw)?;
    let total = plan.syn_burst;
    let frame = template(L4::TcpSyn, Direction::LanToWan);
    rig.tools.configure_gen(
        &frame,
        FlowSpec {
            flows: total,
            endpoints: total,
            ports_per_addr: PORTS_PER_ADDR,
        },
        total,
        PACED_IN_FLIGHT,
    )?;
    let prog = rig.tools.gen_fd()?.try_clone_to_owned()?;
    let stop = AtomicBool::new(false);
    let tools = &rig.tools;
    let (rx, cpu0, cpu1, sampler) = std::thread::scope(|scope| -> Result<_> {
        let gen = GenThread::start(scope, &net.gen, prog, frame, net.gen_if.ifindex, &stop)?;
        let mut sampler = sampler.clone();
        sampler.add("generator", gen.task());
        let cpu0 = sampler.snapshot()?;
        let waited = wait_for_receiver(tools, total, BURST_STALL, None);
        let cpu1 = sampler.snapshot()?;
        let stopped = gen.stop();
        let rx = waited?;
        stopped?;
        Ok((rx, cpu0, cpu1, sampler))
    })?;
    let after = created(gw)?;
    let seconds = rx.last_ns.saturating_sub(rx.first_ns) as f64 / 1e9;
    Ok(SynSample {
        sent: u64::from(total),
        forwarded: rx.packets,
        created: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
        seconds,
        cpu: sampler.usage(&cpu0, &cpu1),
    })
}

/// Where natgw's logs go: below the target directory.
pub fn log_dir() -> PathBuf {
    crate::paths::target_dir().join("bench")
}

/// Polls the receiver every 5 ms until it has counted `total` frames, its count made
/// no progress for `stall`, or `limit` (if any) passed; the last count.
pub fn wait_for_receiver(
    tools: &Tools,
    total: u32,
    stall: Duration,
    limit: Option<Duration>,
) -> Result<Rx> {
    let start = Instant::now();
    let mut rx = tools.rx()?;
    let mut progress = Instant::now();
    while rx.packets < u64::from(total)
        && progress.elapsed() < stall
        && limit.is_none_or(|l| start.elapsed() < l)
    {
        signals::check()?;
        std::thread::sleep(Duration::from_millis(5));
        let now = tools.rx()?;
        if now.packets != rx.packets {
            progress = Instant::now();
        }
        rx = now;
    }
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_follow_the_generators_arithmetic() {
        // 100k flows: 32,768 endpoints (500 per address), then the next destination.
        let t = WORKLOADS[2].tuples();
        assert_eq!(t.len(), 100_000);
        assert_eq!(t[0].src, "10.0.1.2:1024".parse().unwrap());
        assert_eq!(
            t[0].dst,
            std::net::SocketAddrV4::new(net::RCV_ADDR, FIRST_DPORT)
        );
        assert_eq!(t[499].src, "10.0.1.2:1523".parse().unwrap());
        assert_eq!(t[500].src, "10.0.1.3:1024".parse().unwrap());
        assert_eq!(t[32_768].src, t[0].src);
        assert_eq!(t[32_768].dst.port(), FIRST_DPORT + 1);
        let distinct: std::collections::HashSet<_> = t.iter().collect();
        assert_eq!(distinct.len(), 100_000);
        assert_eq!(internal_addrs(32_768).count(), 66);
        assert_eq!(t[0].reversed().dst, t[0].src);
    }
}
