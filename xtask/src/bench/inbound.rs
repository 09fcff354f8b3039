//! WAN → LAN traffic (issue #18): packets from the outside to the external endpoints
//! that LAN → WAN traffic set up, for every mode.
//!
//! A NAT forwards inbound packets only to state that outbound packets made: natgw's
//! mapping of the internal endpoint, or conntrack's entry of the 5-tuple. So before a
//! WAN → LAN window the generator sends the workload's LAN → WAN flows
//! ([`super::throughput::send_outbound`]) until every flow has its state, and the
//! bench reads that state back — `natgw mappings --json`, or `conntrack -L` — to learn
//! the external port the gateway chose for each flow. The WAN → LAN flows are then the
//! LAN → WAN flows reversed, sent to those external endpoints from the very remote
//! endpoint each was made toward (so any filtering, natgw's or conntrack's, lets them
//! in); the generator takes them from its flow table (`BENCH_GEN_FLOWS`). Modes
//! without NAT (plain forwarding, the XDP forwarder, the ceiling) get the reversed
//! flows as they are, to the internal addresses.
//!
//! A packet the gateway did not translate is addressed to the gateway itself and cannot
//! reach the LAN, so every frame the receiver (on `bgen0`) counts went through the
//! state; [`check`] also holds natgw's inbound counters against the count.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{bail, Result};
use testbed::Netns;

use super::daemon::Natgw;
use super::flowtable;
use super::programs::Tuple;
use super::throughput::{self, natgw_counters, Gateway, Mode, Plan, PpsSample, Rig, Workload};
use crate::signals;

/// Rounds of the outbound workload at most until every flow has its state.
const ROUNDS: usize = 5;
/// natgw must have translated at least this share of the frames the receiver counted
/// (the counters are read a little before and after the receiver's count).
const TRANSLATED_SHARE: f64 = 0.95;

/// The WAN → LAN flows of one workload, and where they came from.
#[derive(Debug)]
pub struct Inbound {
    /// The flows, in the generator's order.
    pub flows: Vec<Tuple>,
    /// The state entries they were read from (natgw's UDP mappings or conntrack's UDP
    /// entries); `None` for the modes without NAT.
    pub state_entries: Option<usize>,
    /// nft-flowtable: conntrack entries left unreplied after the priming.
    pub unreplied: Option<usize>,
}

/// What a WAN → LAN window showed about the state it used.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Check {
    /// Flows sent to.
    pub flows: u32,
    /// Distinct external endpoints among them (natgw: one per internal endpoint).
    pub external_endpoints: usize,
    /// The state entries the flows were read from.
    pub state_entries: Option<usize>,
    /// Frames the receiver counted on the LAN side over the window.
    pub received: u64,
    /// natgw only: inbound packets it translated over the window (XDP and TC).
    pub translated: Option<u64>,
}

impl Check {
    /// One line for the progress output.
    #[must_use]
    pub fn summary(&self) -> String {
        let state = self.state_entries.map_or_else(
            || "no NAT state (routed to the internal addresses)".to_owned(),
            |n| {
                format!(
                    "{n} state entries, {} external endpoints",
                    self.external_endpoints
                )
            },
        );
        let translated = self.translated.map_or_else(String::new, |t| {
            format!(
                ", natgw translated {t} inbound packets (its counters are read around the \
                 window, so they span a little more time)"
            )
        });
        format!(
            "{} flows toward {state}; {} frames counted{translated}",
            self.flows, self.received
        )
    }
}

/// Sets up the state of workload `w` (LAN → WAN traffic, then for the flowtable the
/// replies) and returns the WAN → LAN flows toward it.
pub fn establish(rig: &mut Rig<'_>, w: &Workload, gw: &Gateway, plan: &Plan) -> Result<Inbound> {
    let outbound = w.tuples();
    if matches!(gw.mode, Mode::Plain | Mode::XdpForward | Mode::Ceiling) {
        return Ok(Inbound {
            flows: outbound.iter().map(|t| t.reversed()).collect(),
            state_entries: None,
            unreplied: None,
        });
    }
    let mut missing = outbound.len();
    for _ in 0..ROUNDS {
        signals::check()?;
        throughput::send_outbound(rig, w, gw, plan.warmup.max(Duration::from_secs(1)))?;
        let unreplied = if gw.mode == Mode::NftFlowtable {
            Some(flowtable::prime(&gw.net)?)
        } else {
            None
        };
        let (flows, entries) = state_flows(gw.natgw.as_ref(), &gw.net.gw, &outbound)?;
        missing = outbound.len() - flows.len();
        if missing == 0 {
            return Ok(Inbound {
                flows,
                state_entries: Some(entries),
                unreplied,
            });
        }
    }
    bail!(
        "after {ROUNDS} rounds of the LAN → WAN workload {missing} of its {} flows had no \
         state to send WAN → LAN traffic to",
        outbound.len()
    )
}

/// The WAN → LAN flows toward the state the `outbound` flows made — natgw's mappings
/// when `natgw` runs, conntrack's entries in `gw_ns` otherwise — for those flows that
/// have state, and how many state entries there were.
pub fn state_flows(
    natgw: Option<&Natgw>,
    gw_ns: &Netns,
    outbound: &[Tuple],
) -> Result<(Vec<Tuple>, usize)> {
    match natgw {
        Some(n) => natgw_flows(n, outbound),
        None => conntrack_flows(gw_ns, outbound),
    }
}

/// The reversed flows toward natgw's UDP mappings of their internal endpoints (only
/// those that have one), and how many UDP mappings natgw listed.
fn natgw_flows(natgw: &Natgw, outbound: &[Tuple]) -> Result<(Vec<Tuple>, usize)> {
    let mut external: HashMap<SocketAddrV4, SocketAddrV4> = HashMap::new();
    for m in natgw.mappings()? {
        if m["protocol"].as_str() != Some("udp") {
            continue;
        }
        let parse = |key: &str| m[key].as_str().and_then(|v| v.parse::<SocketAddrV4>().ok());
        if let (Some(int), Some(ext)) = (parse("internal"), parse("external")) {
            external.insert(int, ext);
        }
    }
    let flows = outbound
        .iter()
        .filter_map(|t| {
            external.get(&t.src).map(|&ext| Tuple {
                src: t.dst,
                dst: ext,
            })
        })
        .collect();
    Ok((flows, external.len()))
}

/// The reply tuples of conntrack's UDP entries for the flows (only those that have
/// one), and how many UDP entries conntrack listed.
fn conntrack_flows(gw_ns: &Netns, outbound: &[Tuple]) -> Result<(Vec<Tuple>, usize)> {
    let entries = flowtable::entries(gw_ns)?;
    let reply: HashMap<(SocketAddrV4, SocketAddrV4), Tuple> = entries
        .iter()
        .map(|e| {
            (
                (e.orig_src, e.orig_dst),
                Tuple {
                    src: e.reply_src,
                    dst: e.reply_dst,
                },
            )
        })
        .collect();
    let flows = outbound
        .iter()
        .filter_map(|t| reply.get(&(t.src, t.dst)).copied())
        .collect();
    Ok((flows, entries.len()))
}

/// Checks a WAN → LAN window: traffic reached the LAN, and natgw's inbound counters
/// account for it.
pub fn check(inbound: &Inbound, gw: &Gateway, sample: &PpsSample) -> Result<Check> {
    let received = sample.received;
    let mut external: Vec<SocketAddrV4> = inbound.flows.iter().map(|t| t.dst).collect();
    external.sort_unstable();
    external.dedup();
    let translated = sample
        .natgw
        .map(|c| c.xdp_in_redirected + c.tc_in_translated);
    let check = Check {
        flows: inbound.flows.len() as u32,
        external_endpoints: external.len(),
        state_entries: inbound.state_entries,
        received,
        translated,
    };
    if received == 0 {
        bail!("no WAN → LAN frame reached the LAN: {}", check.summary());
    }
    if gw.mode == Mode::Natgw {
        let t = translated.unwrap_or(0);
        if (t as f64) < received as f64 * TRANSLATED_SHARE {
            bail!(
                "natgw's inbound counters show {t} translated packets for {received} frames \
                 at the LAN: {}",
                check.summary()
            );
        }
    }
    // natgw's counters are read on their own: make sure it is still there.
    if let Some(n) = &gw.natgw {
        natgw_counters(n)?;
    }
    Ok(check)
}
