//! Hole punching end to end on the two-site testbed ([`testbed::Sites`]): `natgw
//! punch` peers behind two natgw gateways, behind one natgw (hairpinning), and behind
//! the kernel's own NAT (nftables masquerade), introduced by `natgw rendezvous` on the
//! internet.
//!
//! What proves the path is direct, on the wire: a raw packet capture in the inet
//! namespace sees the peers' probes go from one gateway's external endpoint to the
//! other's, and nothing but registrations and lookups go to or come from the
//! rendezvous; the rendezvous's own counters agree (it saw no probe, relayed nothing).
//!
//! How a peer learns its public endpoint is shown on the wire too: the STUN Binding
//! response the capture sees carries the endpoint the report names, and natgw's
//! mapping table holds it; PCP PEER opens an APDF gateway for a passive peer; a
//! silent, refusing or lying STUN server leaves the rendezvous's observation in charge.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use natgw_integration_tests::{
    natgw_bin, recv, recv_nothing, require_root, terminate, udp, wait_for, Capture, Natgw,
};
use serde_json::Value;
use testbed::sites::{
    K1_ADDR, RENDEZVOUS_ADDR, SITE_B_LAN_ADDR, SITE_K_WAN_ADDR, SITE_LAN_IF, SITE_WAN_IF,
};
use testbed::{Netns, Site, Sites, SitesOptions};

/// Where the rendezvous listens (UDP and TCP).
const RENDEZVOUS_PORT: u16 = 7000;
/// The punch protocol's version (natgw-proto/src/punch/wire.rs), the third byte of every
/// message after "NP".
const PUNCH_VERSION: u8 = 3;
/// RFC 8489 §5: the magic cookie, and the Binding request and success types.
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const STUN_BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const STUN_BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];
/// RFC 8489 §14.2.
const STUN_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// A STUN server on the rendezvous host besides the rendezvous (RFC 8489 §18.6).
const STUN_PORT: u16 = 3478;
/// A port on the rendezvous host nobody listens on.
const DEAD_PORT: u16 = 9;
/// natgw flags: address-and-port-dependent filtering (RFC 4787 REQ-8, RFC 5382 REQ-3)
/// for UDP and TCP, the strictest.
const APDF: [&str; 4] = [
    "--udp-filtering",
    "address-and-port-dependent",
    "--tcp-filtering",
    "address-and-port-dependent",
];
/// `--timeout` of the punches that should succeed: plenty, they take milliseconds.
const PUNCH_TIMEOUT: &str = "5";
/// How long a punch process may take in all before the test kills it: a hang is a
/// failure, not a stuck test.
const PROCESS_LIMIT: Duration = Duration::from_secs(30);

/// Message kinds of the punch protocol (natgw-proto/src/punch/wire.rs), as seen on the wire.
mod kind {
    pub const REGISTER: u8 = 0x01;
    pub const REGISTERED: u8 = 0x02;
    pub const CONNECT: u8 = 0x03;
    pub const PEER: u8 = 0x04;
    pub const UNKNOWN_PEER: u8 = 0x05;
    pub const CHALLENGE: u8 = 0x07;
    pub const PROBE: u8 = 0x10;
    pub const ACK: u8 = 0x11;
}

fn rendezvous_endpoint() -> SocketAddrV4 {
    SocketAddrV4::new(RENDEZVOUS_ADDR, RENDEZVOUS_PORT)
}

// ---------------------------------------------------------------------------------
// The world: sites, natgw on the gateways, the rendezvous.
// ---------------------------------------------------------------------------------

/// Builds the sites (after checking for root).
fn sites() -> Sites {
    require_root();
    Sites::new(SitesOptions::default()).expect("building the two-site testbed")
}

/// `natgw run --wan wan0 --lan lan0 EXTRA...` on each of `gateways`.
///
/// Loading the programs runs the verifier over them, seconds of CPU each: the tests of
/// this file start natgw one at a time (a process-wide lock), so that two tests
/// starting four gateways at once on a small machine do not push each other past the
/// start-up limit. A start that still times out is tried once more, for the same
/// reason; one that fails otherwise fails the test at once.
fn start_natgw(gateways: &[(&Site, &[&str])]) -> Vec<Natgw> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    gateways
        .iter()
        .map(|(site, extra)| {
            let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
            let ifaces = ["--wan", SITE_WAN_IF, "--lan", SITE_LAN_IF];
            match Natgw::try_start_on(&site.gateway, &ifaces, extra) {
                Ok(natgw) => natgw,
                Err(e) if e.starts_with("natgw did not come up") => {
                    eprintln!(
                        "natgw on site {} was slow to start; trying again",
                        site.name
                    );
                    Natgw::try_start_on(&site.gateway, &ifaces, extra)
                        .unwrap_or_else(|e| panic!("{e}"))
                }
                Err(e) => panic!("{e}"),
            }
        })
        .collect()
}

/// `natgw rendezvous --json` on the rendezvous host ([`natgw_integration_tests::Rendezvous`]).
struct Rendezvous(natgw_integration_tests::Rendezvous);

impl Rendezvous {
    fn start(sites: &Sites) -> Self {
        Self::start_with(sites, &[])
    }

    /// With more flags (`--auth-secret ...`); its stderr is kept for [`Self::stop_with_stderr`].
    fn start_with(sites: &Sites, extra: &[&str]) -> Self {
        Self(natgw_integration_tests::Rendezvous::start(
            &sites.rendezvous.ns,
            rendezvous_endpoint(),
            extra,
            !extra.is_empty(),
        ))
    }

    /// Stops it and returns its last line and everything it wrote to stderr.
    fn stop_with_stderr(self) -> (Value, String) {
        self.0.stop_with_stderr()
    }

    /// Stops it and returns the counters it printed.
    fn stop(self) -> Value {
        self.0.stop()["counters"].clone()
    }

    /// Stops it and returns its whole last line (`counters`, `stun`, ...).
    fn stop_all(self) -> Value {
        self.0.stop()
    }
}

// ---------------------------------------------------------------------------------
// Running `natgw punch`.
// ---------------------------------------------------------------------------------

/// What one `natgw punch --json` did.
#[derive(Debug)]
struct Punch {
    /// Exit status 0.
    success: bool,
    /// The JSON report.
    report: Value,
    stderr: String,
    elapsed: Duration,
}

impl Punch {
    fn ok(&self) -> bool {
        self.success && self.report["ok"] == true
    }

    fn endpoint(&self, field: &str) -> SocketAddrV4 {
        self.report[field]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no endpoint `{field}` in {}", self.report))
    }

    fn method(&self) -> &str {
        self.report["method"].as_str().unwrap_or("")
    }

    fn notes(&self) -> Vec<&str> {
        self.report["notes"]
            .as_array()
            .map(|n| n.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }
}

/// A peer: its namespace and name.
#[derive(Clone, Copy)]
struct Peer<'a> {
    ns: &'a Netns,
    id: &'a str,
}

fn spawn_punch(me: Peer<'_>, peer: Peer<'_>, extra: &[&str]) -> (Child, Instant) {
    let mut cmd = me.ns.command(natgw_bin());
    cmd.args(["punch", "--json", "--rendezvous"])
        .arg(rendezvous_endpoint().to_string())
        .args(["--id", me.id, "--peer", peer.id])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !extra.contains(&"--timeout") {
        cmd.args(["--timeout", PUNCH_TIMEOUT]);
    }
    let child = cmd.spawn().expect("starting natgw punch");
    (child, Instant::now())
}

fn wait_punch(mut child: Child, started: Instant) -> Punch {
    while child.try_wait().expect("waiting for natgw punch").is_none() {
        if started.elapsed() > PROCESS_LIMIT {
            let _ = child.kill();
            panic!("natgw punch still running after {PROCESS_LIMIT:?}: it must never hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    let out = child
        .wait_with_output()
        .expect("collecting natgw punch output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("natgw punch printed no JSON ({e}):\n{stdout}\n{stderr}"));
    Punch {
        success: out.status.success(),
        report,
        stderr,
        elapsed,
    }
}

/// Runs both peers at once; each with its own extra arguments.
fn punch_pair(a: Peer<'_>, b: Peer<'_>, extra_a: &[&str], extra_b: &[&str]) -> (Punch, Punch) {
    let (child_a, started_a) = spawn_punch(a, b, extra_a);
    let (child_b, started_b) = spawn_punch(b, a, extra_b);
    (
        wait_punch(child_a, started_a),
        wait_punch(child_b, started_b),
    )
}

/// Fails with both reports unless both peers succeeded.
fn assert_both_ok(what: &str, a: &Punch, b: &Punch) {
    assert!(
        a.ok() && b.ok(),
        "{what}: punching failed\nfirst: {:#}\n{}\nsecond: {:#}\n{}",
        a.report,
        a.stderr,
        b.report,
        b.stderr
    );
}

// ---------------------------------------------------------------------------------
// A raw capture in the inet namespace: what crosses the internet.
// ---------------------------------------------------------------------------------

/// One IPv4 UDP or TCP packet the inet router received.
#[derive(Clone, Debug)]
struct Seen {
    tcp: bool,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    /// The punch-protocol kind of the first message in the payload, if any.
    kind: Option<u8>,
    syn: bool,
    /// The payload is a STUN Binding request.
    stun_request: bool,
    /// The payload is a STUN Binding success response: its XOR-MAPPED-ADDRESS.
    stun_mapped: Option<SocketAddrV4>,
}

/// Ethernet + IPv4 + UDP/TCP headers, and the punch kind of the payload.
fn parse_frame(f: &[u8]) -> Option<Seen> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let proto = ip[9];
    let addr = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
    let (src_ip, dst_ip) = (addr(12), addr(16));
    let l4 = ip.get(ihl..)?;
    if l4.len() < 8 {
        return None;
    }
    let port = |o: usize| u16::from_be_bytes([l4[o], l4[o + 1]]);
    let (payload, tcp, syn) = match proto {
        17 => (&l4[8..], false, false),
        6 => {
            let offset = usize::from(l4.get(12)? >> 4) * 4;
            (l4.get(offset..)?, true, l4.get(13)? & 0x02 != 0)
        }
        _ => return None,
    };
    let kind = (payload.len() >= 4 && payload[..2] == *b"NP" && payload[2] == PUNCH_VERSION)
        .then(|| payload[3]);
    let stun = payload.len() >= 20 && payload[4..8] == STUN_MAGIC_COOKIE;
    Some(Seen {
        tcp,
        src: SocketAddrV4::new(src_ip, port(0)),
        dst: SocketAddrV4::new(dst_ip, port(2)),
        kind,
        syn,
        stun_request: stun && payload[..2] == STUN_BINDING_REQUEST,
        stun_mapped: (stun && payload[..2] == STUN_BINDING_SUCCESS)
            .then(|| xor_mapped_address(payload))
            .flatten(),
    })
}

/// The IPv4 XOR-MAPPED-ADDRESS of a STUN message (RFC 8489 §14.2), read by hand so the
/// test does not share natgw's codec.
fn xor_mapped_address(message: &[u8]) -> Option<SocketAddrV4> {
    let mut attrs = message.get(20..)?;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if kind == STUN_XOR_MAPPED_ADDRESS && len == 8 && value[1] == 0x01 {
            let port = u16::from_be_bytes([value[2], value[3]])
                ^ u16::from_be_bytes([STUN_MAGIC_COOKIE[0], STUN_MAGIC_COOKIE[1]]);
            let mut ip = [0; 4];
            for (i, b) in ip.iter_mut().enumerate() {
                *b = value[4 + i] ^ STUN_MAGIC_COOKIE[i];
            }
            return Some(SocketAddrV4::new(Ipv4Addr::from(ip), port));
        }
        attrs = attrs.get(4 + len.div_ceil(4) * 4..)?;
    }
    None
}

/// Probes and acks that went straight from `from` to `to`.
fn direct_probes(seen: &[Seen], from: SocketAddrV4, to: SocketAddrV4) -> usize {
    seen.iter()
        .filter(|s| s.src == from && s.dst == to)
        .filter(|s| matches!(s.kind, Some(kind::PROBE | kind::ACK)))
        .count()
}

/// Every punch-protocol kind exchanged with the rendezvous.
fn rendezvous_kinds(seen: &[Seen]) -> BTreeSet<u8> {
    seen.iter()
        .filter(|s| *s.src.ip() == RENDEZVOUS_ADDR || *s.dst.ip() == RENDEZVOUS_ADDR)
        .filter_map(|s| s.kind)
        .collect()
}

/// The rendezvous only ever registered and introduced: no probe or ack reached it.
fn assert_rendezvous_only_introduced(seen: &[Seen]) {
    let allowed: BTreeSet<u8> = [
        kind::REGISTER,
        kind::REGISTERED,
        kind::CONNECT,
        kind::PEER,
        kind::UNKNOWN_PEER,
        kind::CHALLENGE,
    ]
    .into();
    let kinds = rendezvous_kinds(seen);
    assert!(
        !kinds.is_empty() && kinds.is_subset(&allowed),
        "traffic with the rendezvous had kinds {kinds:x?}: only registrations and lookups \
         belong there"
    );
}

/// The direct path in both directions between the two peers' public endpoints.
fn assert_direct_on_the_wire(what: &str, seen: &[Seen], a: &Punch, b: &Punch) {
    let (a_pub, b_pub) = (a.endpoint("public"), b.endpoint("public"));
    let (ab, ba) = (
        direct_probes(seen, a_pub, b_pub),
        direct_probes(seen, b_pub, a_pub),
    );
    assert!(
        ab > 0 && ba > 0,
        "{what}: the inet router saw {ab} probes/acks {a_pub} → {b_pub} and {ba} back: the \
         path was not direct"
    );
    assert_rendezvous_only_introduced(seen);
}

// ---------------------------------------------------------------------------------
// natgw ↔ natgw
// ---------------------------------------------------------------------------------

#[test]
fn udp_hole_punching_between_natgw_sites_with_eif_adf_and_apdf_filtering() {
    // rfc4787 REQ-8 (filtering), REQ-1 (the mapping the rendezvous saw is the one the
    // peer reaches): each side's first probe opens its own NAT for the other's.
    let sites = sites();
    let rendezvous = Rendezvous::start(&sites);
    let (a1, b1) = (&sites.a.hosts[0], &sites.b.hosts[0]);
    for mode in [
        "endpoint-independent",
        "address-dependent",
        "address-and-port-dependent",
    ] {
        let flags: &[&str] = &["--udp-filtering", mode];
        let natgw = start_natgw(&[(&sites.a, flags), (&sites.b, flags)]);
        let capture = Capture::start(&sites.inet, parse_frame);
        let (ida, idb) = (format!("a1-{mode}"), format!("b1-{mode}"));
        let (a, b) = punch_pair(
            Peer {
                ns: &a1.ns,
                id: &ida,
            },
            Peer {
                ns: &b1.ns,
                id: &idb,
            },
            &[],
            &[],
        );
        let seen = capture.finish();
        assert_both_ok(mode, &a, &b);
        assert_eq!(a.method(), "direct-public", "{mode}: {:#}", a.report);
        assert_eq!(b.method(), "direct-public", "{mode}: {:#}", b.report);
        assert_eq!(a.endpoint("remote"), b.endpoint("public"), "{mode}");
        assert_eq!(b.endpoint("remote"), a.endpoint("public"), "{mode}");
        // The peer saw us at the public endpoint the rendezvous saw (one mapping for
        // both destinations), with our own port (port preservation).
        assert_eq!(a.endpoint("seen_as"), a.endpoint("public"), "{mode}");
        assert_eq!(
            a.endpoint("public").port(),
            a.endpoint("local").port(),
            "{mode}"
        );
        assert_eq!(*a.endpoint("public").ip(), sites.a.wan_addr);
        assert_direct_on_the_wire(mode, &seen, &a, &b);
        drop(natgw);
    }
    let counters = rendezvous.stop();
    assert_eq!(counters["unexpected"], 0, "{counters}");
    assert_eq!(counters["malformed"], 0, "{counters}");
    assert!(counters["introductions"].as_u64() >= Some(3), "{counters}");
}

#[test]
fn tcp_simultaneous_open_between_natgw_sites() {
    // rfc5382 REQ-3 (filtering) and REQ-4 (an unsolicited SYN is held silently: the
    // peer's own SYN then opens the way, and nobody sees a RST or an ICMP error).
    let sites = sites();
    let rendezvous = Rendezvous::start(&sites);
    let (a1, b1) = (&sites.a.hosts[0], &sites.b.hosts[0]);
    for mode in ["endpoint-independent", "address-and-port-dependent"] {
        let flags: &[&str] = &["--tcp-filtering", mode];
        let natgw = start_natgw(&[(&sites.a, flags), (&sites.b, flags)]);
        let capture = Capture::start(&sites.inet, parse_frame);
        let (ida, idb) = (format!("a1-{mode}"), format!("b1-{mode}"));
        let (a, b) = punch_pair(
            Peer {
                ns: &a1.ns,
                id: &ida,
            },
            Peer {
                ns: &b1.ns,
                id: &idb,
            },
            &["--tcp"],
            &["--tcp"],
        );
        let seen = capture.finish();
        assert_both_ok(mode, &a, &b);
        for p in [&a, &b] {
            assert_eq!(p.method(), "direct-public", "{mode}: {:#}", p.report);
            assert_eq!(p.report["transport"], "tcp");
            assert!(p.report["tcp_open"].is_string(), "{:#}", p.report);
        }
        assert_eq!(a.endpoint("remote"), b.endpoint("public"), "{mode}");
        assert_direct_on_the_wire(mode, &seen, &a, &b);
        if mode == "address-and-port-dependent" {
            // Neither SYN could get in before the other side's SYN went out: both
            // crossed the internet, and natgw answered the early one with nothing.
            let (a_pub, b_pub) = (a.endpoint("public"), b.endpoint("public"));
            for (from, to) in [(a_pub, b_pub), (b_pub, a_pub)] {
                assert!(
                    seen.iter()
                        .any(|s| s.tcp && s.syn && s.src == from && s.dst == to),
                    "no SYN {from} → {to} crossed the internet"
                );
            }
            for p in [&a, &b] {
                assert_eq!(
                    p.report["tcp_attempts"]["refused"], 0,
                    "natgw must not answer a held SYN with a RST: {:#}",
                    p.report
                );
            }
        }
        drop(natgw);
    }
    let counters = rendezvous.stop();
    assert_eq!(counters["unexpected"], 0, "{counters}");
}

// ---------------------------------------------------------------------------------
// Two peers behind one natgw
// ---------------------------------------------------------------------------------

#[test]
fn peers_behind_one_natgw_connect_by_hairpinning_and_on_their_lan() {
    // rfc4787 REQ-9 (hairpinning) and REQ-9a (the hairpinned packet's source is the
    // sender's external endpoint); rfc5382 REQ-8 for TCP.
    let sites = sites();
    let _natgw = start_natgw(&[(&sites.a, &[])]);
    let rendezvous = Rendezvous::start(&sites);
    let (h1, h2) = (&sites.a.hosts[0], &sites.a.hosts[1]);
    for (transport, only, method) in [
        ("udp", "public", "direct-public"),
        ("udp", "private", "direct-private"),
        ("tcp", "public", "direct-public"),
        ("tcp", "private", "direct-private"),
    ] {
        let what = format!("{transport} --only {only}");
        let mut extra = vec!["--only", only];
        if transport == "tcp" {
            extra.push("--tcp");
        }
        let capture = Capture::start(&sites.inet, parse_frame);
        let (id1, id2) = (
            format!("a1-{transport}-{only}"),
            format!("a2-{transport}-{only}"),
        );
        let (p1, p2) = punch_pair(
            Peer {
                ns: &h1.ns,
                id: &id1,
            },
            Peer {
                ns: &h2.ns,
                id: &id2,
            },
            &extra,
            &extra,
        );
        let seen = capture.finish();
        assert_both_ok(&what, &p1, &p2);
        assert_eq!(p1.method(), method, "{what}: {:#}", p1.report);
        assert_eq!(p2.method(), method, "{what}: {:#}", p2.report);
        if only == "public" {
            // a2 sent to a1's external endpoint and the gateway turned it around,
            // with a2's external endpoint as the source.
            assert_eq!(p1.endpoint("remote"), p2.endpoint("public"), "{what}");
            assert_eq!(p1.endpoint("seen_as"), p1.endpoint("public"), "{what}");
            assert_eq!(*p1.endpoint("seen_as").ip(), sites.a.wan_addr, "{what}");
        } else {
            assert_eq!(p1.endpoint("remote"), p2.endpoint("local"), "{what}");
            assert_eq!(p1.endpoint("seen_as"), p1.endpoint("local"), "{what}");
        }
        // Either way the probes never left the site.
        let probes_outside = seen
            .iter()
            .filter(|s| matches!(s.kind, Some(kind::PROBE | kind::ACK)))
            .count();
        assert_eq!(probes_outside, 0, "{what}: probes crossed the internet");
    }
    let counters = rendezvous.stop();
    assert_eq!(counters["unexpected"], 0, "{counters}");
}

// ---------------------------------------------------------------------------------
// PCP, and what happens without it
// ---------------------------------------------------------------------------------

#[test]
fn a_pcp_mapped_peer_is_reached_without_punching() {
    // b1's gateway filters address-and-port dependently and b1 sends nothing first
    // (--passive): only the PCP mapping b1 asked its gateway for lets a1 in.
    let sites = sites();
    let _natgw = start_natgw(&[
        (&sites.a, &[]),
        (&sites.b, &["--udp-filtering", "address-and-port-dependent"]),
    ]);
    let rendezvous = Rendezvous::start(&sites);
    let capture = Capture::start(&sites.inet, parse_frame);
    let gateway = SITE_B_LAN_ADDR.to_string();
    let (a, b) = punch_pair(
        Peer {
            ns: &sites.a.hosts[0].ns,
            id: "a1",
        },
        Peer {
            ns: &sites.b.hosts[0].ns,
            id: "b1",
        },
        &["--only", "mapped"],
        &["--pcp", &gateway, "--passive"],
    );
    let seen = capture.finish();
    assert_both_ok("PCP", &a, &b);
    assert_eq!(a.method(), "pcp-mapped", "{:#}", a.report);
    assert_eq!(a.endpoint("remote"), b.endpoint("mapped"));
    assert_eq!(*b.endpoint("mapped").ip(), sites.b.wan_addr);
    // With --pcp, b1 also sent PEER towards a1: natgw answers with the mapping the
    // MAP made (one mapping per internal endpoint, rfc6887 §12.3).
    let peer = &b.report["pcp_peer"][0];
    assert_eq!(
        endpoint_in(&peer["remote"]),
        Some(a.endpoint("public")),
        "{peer}"
    );
    assert_eq!(
        endpoint_in(&peer["external"]),
        Some(b.endpoint("mapped")),
        "{peer}"
    );
    // a1 → b1's mapping, straight through the internet.
    assert!(direct_probes(&seen, a.endpoint("public"), b.endpoint("mapped")) > 0);
    assert_rendezvous_only_introduced(&seen);
    rendezvous.stop();
}

#[test]
fn punch_failures_are_reported_with_their_reason_and_a_nonzero_exit() {
    // The control for the PCP test: the same passive peer behind address-and-port
    // dependent filtering, without a PCP mapping, cannot be reached — and both sides
    // say why within their timeout. And a peer that never shows up is named.
    let sites = sites();
    let _natgw = start_natgw(&[
        (&sites.a, &[]),
        (&sites.b, &["--udp-filtering", "address-and-port-dependent"]),
    ]);
    let rendezvous = Rendezvous::start(&sites);
    let (a1, b1) = (&sites.a.hosts[0], &sites.b.hosts[0]);
    let (a, b) = punch_pair(
        Peer {
            ns: &a1.ns,
            id: "a1",
        },
        Peer {
            ns: &b1.ns,
            id: "b1",
        },
        &["--timeout", "2"],
        &["--timeout", "2", "--passive"],
    );
    for (p, says) in [(&a, "peer never answered"), (&b, "peer never reached us")] {
        assert!(!p.success, "{:#}", p.report);
        assert_eq!(p.report["ok"], false);
        assert_eq!(p.report["stage"], "punching", "{:#}", p.report);
        let error = p.report["error"].as_str().unwrap_or("");
        assert!(error.starts_with(says), "{error}");
        assert!(
            p.stderr.contains(says),
            "the error goes to stderr too: {}",
            p.stderr
        );
        assert!(p.elapsed < Duration::from_secs(10), "took {:?}", p.elapsed);
    }
    // a1 probed b1's public endpoint, and b1's gateway dropped every probe.
    let paths = a.report["paths"].as_array().cloned().unwrap_or_default();
    assert!(
        paths.iter().any(|p| p["kind"] == "public"
            && p["probes_sent"].as_u64() > Some(5)
            && p["verified"] == false),
        "{paths:?}"
    );

    let (lonely, started) = spawn_punch(
        Peer {
            ns: &a1.ns,
            id: "lonely",
        },
        Peer {
            ns: &b1.ns,
            id: "nobody",
        },
        &["--timeout", "1"],
    );
    let lonely = wait_punch(lonely, started);
    assert!(!lonely.success);
    assert_eq!(
        lonely.report["stage"], "waiting-for-peer",
        "{:#}",
        lonely.report
    );
    let error = lonely.report["error"].as_str().unwrap_or("");
    assert!(error.contains("peer nobody never showed up"), "{error}");
    let counters = rendezvous.stop();
    assert!(counters["unknown_peer"].as_u64() >= Some(1), "{counters}");
}

// ---------------------------------------------------------------------------------
// The kernel's NAT (nftables masquerade)
// ---------------------------------------------------------------------------------

#[test]
fn kernel_nat_masquerade_keeps_ports_filters_by_endpoint_and_moves_ports_on_conflict() {
    // What decides hole punching through the Linux kernel's NAT, shown with plain
    // sockets between k1 (behind masquerade) and the rendezvous host (no NAT):
    //
    // 1. Mapping: conntrack keeps the source port whenever the resulting connection is
    //    unique, so one socket appears with one port everywhere: endpoint-independent
    //    in practice, as long as nothing conflicts.
    // 2. Filtering: only replies to a connection conntrack knows come in: address-
    //    and-port-dependent filtering (RFC 4787 REQ-8 names it the least friendly).
    // 3. UDP, the trap: a packet from the peer that arrives before k1 has sent to that
    //    peer is not forwarded, but conntrack keeps an (unreplied) entry for it, 30 s.
    //    When k1 then sends to the peer, the translated connection would clash with
    //    that entry, so masquerade picks *another* source port. A peer with address-
    //    and-port-dependent filtering only accepts the port it sent to: punching
    //    fails if its packet came first. A peer with endpoint-independent filtering
    //    (natgw's default) accepts the new port and answers it (`natgw punch` learns
    //    it as a peer-reflexive path).
    // 4. TCP: the early SYN is answered with a RST (not held silently like natgw
    //    does, RFC 5382 REQ-4), but the entry it leaves is closed, and a closed entry
    //    does not force a new port: k1's own SYN keeps its port, and the peer's retry
    //    meets it. TCP punching works in either order.
    let sites = sites();
    let k1 = &sites.k.hosts[0].ns;
    let rdv = &sites.rendezvous.ns;
    let public = |port| SocketAddrV4::new(SITE_K_WAN_ADDR, port);

    // 1. One socket, two destinations, one port: its own.
    let k = udp(k1, Ipv4Addr::UNSPECIFIED, 5000);
    let (r1, r2) = (
        udp(rdv, RENDEZVOUS_ADDR, 9001),
        udp(rdv, RENDEZVOUS_ADDR, 9002),
    );
    for r in [&r1, &r2] {
        let to = r.local_addr().expect("bound");
        k.send_to(b"hello", to).expect("k1 sends");
        let (_, from) = recv(r).expect("the rendezvous host hears k1");
        assert_eq!(from, public(5000), "masquerade keeps k1's port");
    }
    // 2. Someone k1 never sent to gets nothing through.
    let stranger = udp(rdv, RENDEZVOUS_ADDR, 9003);
    stranger.send_to(b"let me in", public(5000)).expect("send");
    assert_eq!(
        recv_nothing(&k, Duration::from_millis(500)),
        None,
        "masquerade filters by address and port"
    );
    // 3. ... and now k1 answers the stranger: the port moves.
    k.send_to(b"hello stranger", stranger.local_addr().expect("bound"))
        .expect("send");
    let (_, from) = recv(&stranger).expect("the stranger hears k1");
    assert_eq!(*from.ip(), SITE_K_WAN_ADDR);
    assert_ne!(
        from.port(),
        5000,
        "after an early inbound packet, masquerade maps k1 to another port towards that peer"
    );
    // The first two destinations still see port 5000: the mapping now depends on the
    // destination.
    k.send_to(b"again", r1.local_addr().expect("bound"))
        .expect("send");
    assert_eq!(recv(&r1).map(|(_, from)| from), Some(public(5000)));

    // 4. TCP: an early SYN gets a RST; k1's own SYN still keeps its port.
    let rdv_port = 9100;
    let early = rdv.run(|| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket.set_reuse_port(true).expect("SO_REUSEPORT");
        socket
            .bind(&SocketAddrV4::new(RENDEZVOUS_ADDR, rdv_port).into())
            .expect("bind");
        socket.connect_timeout(&public(5300).into(), Duration::from_secs(2))
    });
    let refused = early.expect_err("nothing listens behind masquerade yet");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "the kernel NAT answers an unsolicited SYN with a RST: {refused}"
    );
    let listener = rdv.run(|| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket.set_reuse_port(true).expect("SO_REUSEPORT");
        socket
            .bind(&SocketAddrV4::new(RENDEZVOUS_ADDR, rdv_port).into())
            .expect("bind");
        socket.listen(4).expect("listen");
        TcpListener::from(socket)
    });
    k1.run(|| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        socket
            .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5300).into())
            .expect("bind");
        socket
            .connect_timeout(
                &SocketAddrV4::new(RENDEZVOUS_ADDR, rdv_port).into(),
                Duration::from_secs(2),
            )
            .expect("k1 connects out");
    });
    let (_, from) = listener.accept().expect("accepting k1");
    assert_eq!(
        from,
        std::net::SocketAddr::V4(public(5300)),
        "the RST's closed entry does not move k1's TCP port"
    );
}

#[test]
fn punching_from_natgw_sites_to_the_kernel_nat_site() {
    // The end-to-end consequences of the test above. From a natgw site with
    // endpoint-independent filtering (the default) UDP punching to the kernel NAT
    // works whichever packet arrives first: if the kernel NAT moved k1's port, the
    // natgw side still accepts it and answers there. TCP works even from a natgw
    // site with address-and-port-dependent filtering. (UDP from such a site works only
    // if k1's first probe leaves before the peer's arrives: a race, not tested.)
    let sites = sites();
    let _natgw = start_natgw(&[(&sites.a, &[]), (&sites.b, &APDF)]);
    let rendezvous = Rendezvous::start(&sites);
    let k1 = Peer {
        ns: &sites.k.hosts[0].ns,
        id: "k1-udp",
    };
    let a1 = Peer {
        ns: &sites.a.hosts[0].ns,
        id: "a1-udp",
    };
    let capture = Capture::start(&sites.inet, parse_frame);
    let (a, k) = punch_pair(a1, k1, &[], &[]);
    let seen = capture.finish();
    assert_both_ok("UDP natgw (EIF) ↔ kernel NAT", &a, &k);
    assert!(
        ["direct-public", "peer-reflexive"].contains(&a.method()),
        "{:#}",
        a.report
    );
    assert_eq!(*a.endpoint("remote").ip(), SITE_K_WAN_ADDR);
    assert_eq!(k.method(), "direct-public", "{:#}", k.report);
    assert!(direct_probes(&seen, a.endpoint("public"), a.endpoint("remote")) > 0);
    assert!(direct_probes(&seen, a.endpoint("remote"), a.endpoint("public")) > 0);
    assert_rendezvous_only_introduced(&seen);

    let (b, k) = punch_pair(
        Peer {
            ns: &sites.b.hosts[0].ns,
            id: "b1-tcp",
        },
        Peer {
            ns: &sites.k.hosts[0].ns,
            id: "k1-tcp",
        },
        &["--tcp"],
        &["--tcp"],
    );
    assert_both_ok("TCP natgw (APDF) ↔ kernel NAT", &b, &k);
    assert_eq!(b.method(), "direct-public", "{:#}", b.report);
    assert_eq!(k.method(), "direct-public", "{:#}", k.report);
    assert_eq!(b.endpoint("remote"), k.endpoint("public"));
    rendezvous.stop();
}

// ---------------------------------------------------------------------------------
// Learning our own endpoint: STUN, PCP PEER, and falling back
// ---------------------------------------------------------------------------------

/// a1 (site A) and b1 (site B), named `a1-TAG` and `b1-TAG`, punch at once under a
/// capture in the inet namespace; fails with both reports unless both succeeded.
fn punch_a1_b1(
    sites: &Sites,
    tag: &str,
    extra_a: &[&str],
    extra_b: &[&str],
) -> (Punch, Punch, Vec<Seen>) {
    let capture = Capture::start(&sites.inet, parse_frame);
    let (ida, idb) = (format!("a1-{tag}"), format!("b1-{tag}"));
    let (a, b) = punch_pair(
        Peer {
            ns: &sites.a.hosts[0].ns,
            id: &ida,
        },
        Peer {
            ns: &sites.b.hosts[0].ns,
            id: &idb,
        },
        extra_a,
        extra_b,
    );
    let seen = capture.finish();
    assert_both_ok(tag, &a, &b);
    (a, b, seen)
}

fn endpoint_in(v: &Value) -> Option<SocketAddrV4> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// A Binding request with transaction id `id`, written by hand.
fn stun_binding_request(id: [u8; 12]) -> Vec<u8> {
    let mut m = STUN_BINDING_REQUEST.to_vec();
    m.extend([0, 0]);
    m.extend(STUN_MAGIC_COOKIE);
    m.extend(id);
    m
}

/// `natgw stun serve --listen ADDR` (UDP only); stopped with SIGTERM when dropped.
struct StunServer(Child);

impl StunServer {
    /// Starts it in `ns` and waits until it answers a Binding request.
    fn start(ns: &Netns, listen: SocketAddrV4) -> Self {
        let child = ns
            .command(natgw_bin())
            .args(["stun", "serve", "--listen"])
            .arg(listen.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting natgw stun serve");
        let server = Self(child);
        let asker = udp(ns, *listen.ip(), 0);
        let answered = wait_for(Duration::from_secs(10), || {
            asker
                .send_to(&stun_binding_request([5; 12]), listen)
                .expect("sending a Binding request");
            recv_nothing(&asker, Duration::from_millis(200)).map(drop)
        });
        assert!(
            answered.is_some(),
            "natgw stun serve on {listen} never answered"
        );
        server
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

/// What every punch whose STUN server answered must show: `public` is STUN's answer,
/// the rendezvous saw the same, and natgw's mapping of our local endpoint is it.
fn assert_learned_by_stun(what: &str, p: &Punch, server: SocketAddrV4, natgw: &Natgw) {
    let r = &p.report;
    assert_eq!(r["public_from"], "stun", "{what}: {r:#}");
    assert_eq!(endpoint_in(&r["stun"]["server"]), Some(server), "{what}");
    assert_eq!(r["stun"]["transport"], r["transport"], "{what}");
    assert_eq!(
        endpoint_in(&r["stun"]["mapped"]),
        Some(p.endpoint("public"))
    );
    assert_eq!(
        p.endpoint("public"),
        p.endpoint("observed"),
        "{what}: {r:#}"
    );
    assert_eq!(r["stun"]["agrees_with_rendezvous"], true, "{what}");
    assert!(p.notes().is_empty(), "{what}: {:?}", p.notes());
    let proto = r["transport"].as_str().unwrap_or("");
    let mapping = natgw
        .mapping_of(proto, p.endpoint("local"))
        .unwrap_or_else(|| panic!("{what}: natgw has no {proto} mapping of {}", r["local"]));
    assert_eq!(
        endpoint_in(&mapping["external"]),
        Some(p.endpoint("public")),
        "{what}: natgw maps {} elsewhere: {mapping}",
        r["local"]
    );
}

#[test]
fn punch_learns_its_public_endpoint_by_stun_from_the_rendezvous_or_another_server() {
    // rfc8489 (Binding, XOR-MAPPED-ADDRESS) from the punching port: over UDP to the
    // rendezvous's port, over TCP on the connection to the rendezvous (RFC 8489
    // §6.2.2), and over UDP to a separate STUN server — which, natgw's mapping being
    // endpoint-independent (rfc4787 REQ-1), sees the same endpoint as the rendezvous.
    let sites = sites();
    let natgw = start_natgw(&[(&sites.a, &[]), (&sites.b, &[])]);
    let rendezvous = Rendezvous::start(&sites);
    let stun_server = SocketAddrV4::new(RENDEZVOUS_ADDR, STUN_PORT);
    let _stun = StunServer::start(&sites.rendezvous.ns, stun_server);
    let other = stun_server.to_string();
    for (transport, extra, server) in [
        ("udp", vec![], rendezvous_endpoint()),
        ("tcp", vec!["--tcp"], rendezvous_endpoint()),
        ("udp", vec!["--stun", other.as_str()], stun_server),
    ] {
        let what = format!("{transport}-{}", server.port());
        let (a, b, seen) = punch_a1_b1(&sites, &what, &extra, &extra);
        for (p, gateway) in [(&a, &natgw[0]), (&b, &natgw[1])] {
            assert_learned_by_stun(&what, p, server, gateway);
            // On the wire: the Binding request left from the public endpoint and the
            // answer that came back carries it.
            let public = p.endpoint("public");
            assert!(
                seen.iter()
                    .any(|s| s.stun_request && s.src == public && s.dst == server),
                "{what}: no Binding request {public} → {server} crossed the internet"
            );
            assert!(
                seen.iter()
                    .any(|s| s.src == server && s.dst == public && s.stun_mapped == Some(public)),
                "{what}: no Binding response {server} → {public} saying {public}"
            );
        }
        // The learned endpoint is what the peer was given and reached.
        assert_eq!(a.endpoint("remote"), b.endpoint("public"), "{what}");
        assert_eq!(b.endpoint("remote"), a.endpoint("public"), "{what}");
        assert_eq!(a.method(), "direct-public", "{what}: {:#}", a.report);
        assert_direct_on_the_wire(&what, &seen, &a, &b);
    }
    let stopped = rendezvous.stop_all();
    assert_eq!(stopped["counters"]["malformed"], 0, "{stopped}");
    assert!(
        stopped["stun"]["success"].as_u64() >= Some(4),
        "two peers over UDP and two over TCP asked the rendezvous: {stopped}"
    );
}

#[test]
fn pcp_peer_opens_an_apdf_gateway_for_a_passive_peer_without_a_map() {
    // rfc6887 §12 (PEER creates the mapping towards one peer and, on natgw, its filter
    // entry) under rfc4787 REQ-8 / rfc5382 REQ-3 address-and-port-dependent filtering:
    // b1 sends nothing first and asks for no MAP (--pcp-peer-only), so the only thing
    // that lets a1's first packet in is the PEER b1 sent once it knew a1's endpoint.
    // The control — the same passive peer without PCP fails — is in
    // `punch_failures_are_reported_with_their_reason_and_a_nonzero_exit`.
    let sites = sites();
    let _natgw = start_natgw(&[(&sites.a, &[]), (&sites.b, &APDF)]);
    let rendezvous = Rendezvous::start(&sites);
    let gateway = SITE_B_LAN_ADDR.to_string();
    for transport in ["udp", "tcp"] {
        let mut extra_a = vec!["--only", "public"];
        let mut extra_b = vec!["--pcp", &gateway, "--pcp-peer-only", "--passive"];
        if transport == "tcp" {
            extra_a.push("--tcp");
            extra_b.push("--tcp");
        }
        let tag = format!("peer-{transport}");
        let (a, b, seen) = punch_a1_b1(&sites, &tag, &extra_a, &extra_b);
        assert_eq!(a.method(), "direct-public", "{transport}: {:#}", a.report);
        assert_eq!(a.endpoint("remote"), b.endpoint("public"), "{transport}");
        // PEER was used, towards a1's public endpoint, and said where b1 is.
        assert!(b.report["mapped"].is_null(), "no MAP: {:#}", b.report);
        let peers = b.report["pcp_peer"].as_array().cloned().unwrap_or_default();
        let towards_a = peers
            .iter()
            .find(|p| endpoint_in(&p["remote"]) == Some(a.endpoint("public")))
            .unwrap_or_else(|| panic!("{transport}: no PEER towards a1: {:#}", b.report));
        assert!(towards_a["error"].is_null(), "{towards_a}");
        assert_eq!(
            endpoint_in(&towards_a["external"]),
            Some(b.endpoint("public")),
            "{transport}: {towards_a}"
        );
        assert!(towards_a["lifetime"].as_u64() > Some(0), "{towards_a}");
        // On the wire: a1's packets went straight to b1's public endpoint, and b1 —
        // passive — sent nothing to a1 before the first of them.
        let (a_pub, b_pub) = (a.endpoint("public"), b.endpoint("public"));
        let first = |from: SocketAddrV4, to: SocketAddrV4| {
            seen.iter()
                .position(|s| s.src == from && s.dst == to)
                .unwrap_or_else(|| panic!("{transport}: nothing {from} → {to} on the wire"))
        };
        assert!(
            first(a_pub, b_pub) < first(b_pub, a_pub),
            "{transport}: the passive peer sent first"
        );
        if transport == "udp" {
            assert!(direct_probes(&seen, a_pub, b_pub) > 0);
            assert!(direct_probes(&seen, b_pub, a_pub) > 0);
        } else {
            assert_eq!(b.report["tcp_open"], "accept", "{:#}", b.report);
        }
    }
    // The TCP control (the UDP one is in the failures test): without PEER, a1's SYNs
    // never reach the passive b1.
    let (a, b) = punch_pair(
        Peer {
            ns: &sites.a.hosts[0].ns,
            id: "a1-nopeer-tcp",
        },
        Peer {
            ns: &sites.b.hosts[0].ns,
            id: "b1-nopeer-tcp",
        },
        &["--tcp", "--only", "public", "--timeout", "2"],
        &["--tcp", "--passive", "--timeout", "2"],
    );
    for p in [&a, &b] {
        assert!(
            !p.ok(),
            "without PEER the passive peer was reached: {:#}",
            p.report
        );
        assert_eq!(p.report["stage"], "punching", "{:#}", p.report);
    }
    assert_eq!(b.report["tcp_attempts"]["accepted"], 0, "{:#}", b.report);
    rendezvous.stop();
}

/// A STUN server that answers every request with garbage, with a success for another
/// transaction, and with a success for the right one that says 0.0.0.0:0. Returns how
/// many requests it got when stopped.
struct LyingStunServer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u32>,
}

impl LyingStunServer {
    fn start(ns: &Netns, listen: SocketAddrV4) -> Self {
        let socket = udp(ns, *listen.ip(), listen.port());
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("setting timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut requests = 0;
            let mut buf = [0u8; 1500];
            while !stop_thread.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if n < 20 || buf[..2] != STUN_BINDING_REQUEST {
                    continue;
                }
                requests += 1;
                let mut transaction = [0; 12];
                transaction.copy_from_slice(&buf[8..20]);
                let success = |transaction: [u8; 12], xored: [u8; 8]| {
                    let mut m = STUN_BINDING_SUCCESS.to_vec();
                    m.extend(12u16.to_be_bytes());
                    m.extend(STUN_MAGIC_COOKIE);
                    m.extend(transaction);
                    m.extend(STUN_XOR_MAPPED_ADDRESS.to_be_bytes());
                    m.extend(8u16.to_be_bytes());
                    m.extend(xored);
                    m
                };
                // XORed with the cookie: 0.0.0.0:0 on the wire is the cookie itself.
                let zero = [
                    0,
                    1,
                    STUN_MAGIC_COOKIE[0],
                    STUN_MAGIC_COOKIE[1],
                    STUN_MAGIC_COOKIE[0],
                    STUN_MAGIC_COOKIE[1],
                    STUN_MAGIC_COOKIE[2],
                    STUN_MAGIC_COOKIE[3],
                ];
                let mut other = transaction;
                other[0] ^= 0xff;
                for answer in [
                    b"\x00\x01 this is not a STUN message".to_vec(),
                    success(other, [0, 1, 0x21, 0x12, 0x27, 0x14, 0xa2, 0x44]),
                    success(transaction, zero),
                ] {
                    let _ = socket.send_to(&answer, from);
                }
            }
            requests
        });
        Self { stop, thread }
    }

    fn finish(self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("lying STUN server thread")
    }
}

#[test]
fn a_silent_refusing_or_lying_stun_server_falls_back_to_the_rendezvous_observation() {
    // The peer never hangs on STUN and never believes an impossible answer: with no
    // STUN answer (nothing on the port: ICMP port unreachable over UDP, a RST over
    // TCP) or a lying one, the public endpoint is the rendezvous's observation, the
    // report says why, and the punch still connects.
    let sites = sites();
    let _natgw = start_natgw(&[(&sites.a, &[]), (&sites.b, &[])]);
    let rendezvous = Rendezvous::start(&sites);
    let liar_addr = SocketAddrV4::new(RENDEZVOUS_ADDR, STUN_PORT + 1);
    let liar = LyingStunServer::start(&sites.rendezvous.ns, liar_addr);
    let dead = SocketAddrV4::new(RENDEZVOUS_ADDR, DEAD_PORT).to_string();
    let liar_arg = liar_addr.to_string();
    for (transport, extra_a, extra_b, says_a, says_b) in [
        (
            "udp",
            vec!["--stun", dead.as_str()],
            vec!["--stun", liar_arg.as_str()],
            "no answer",
            "says we are 0.0.0.0:0, which cannot be a public endpoint",
        ),
        (
            "tcp",
            vec!["--tcp", "--stun", dead.as_str()],
            vec!["--tcp", "--stun", liar_arg.as_str()],
            "refused our TCP connection",
            "refused our TCP connection",
        ),
    ] {
        let tag = format!("nostun-{transport}");
        let (a, b, seen) = punch_a1_b1(&sites, &tag, &extra_a, &extra_b);
        for (p, server, says) in [(&a, dead.as_str(), says_a), (&b, liar_arg.as_str(), says_b)] {
            let r = &p.report;
            assert_eq!(r["public_from"], "rendezvous", "{transport}: {r:#}");
            assert_eq!(p.endpoint("public"), p.endpoint("observed"));
            assert!(r["stun"]["mapped"].is_null(), "{r:#}");
            let error = r["stun"]["error"].as_str().unwrap_or("");
            assert!(error.contains(says), "{transport}: {error}");
            let notes = p.notes();
            assert!(
                notes.iter().any(|n| n.starts_with(&format!(
                    "no public endpoint from the STUN server {server} over {}",
                    transport.to_uppercase()
                )) && n.contains(says)
                    && n.ends_with("using the endpoint the rendezvous saw instead")),
                "{transport}: {notes:?}"
            );
            // The request really went out from the punching port's mapping.
            let (observed, to) = (p.endpoint("observed"), server.parse().ok());
            assert!(
                seen.iter()
                    .any(|s| s.src == observed && Some(s.dst) == to && (s.stun_request || s.syn)),
                "{transport}: nothing from {observed} to the STUN server {server} on the wire"
            );
            assert!(
                p.elapsed < Duration::from_secs(10),
                "{transport}: took {:?}",
                p.elapsed
            );
        }
        assert_eq!(a.endpoint("remote"), b.endpoint("observed"), "{transport}");
        assert_eq!(a.method(), "direct-public", "{transport}: {:#}", a.report);
    }
    assert_eq!(
        liar.finish(),
        1,
        "b1 asked the lying server once (over UDP)"
    );
    rendezvous.stop();
}

#[test]
fn stun_and_the_rendezvous_disagreeing_is_reported_as_endpoint_dependent_mapping() {
    // The kernel NAT's trap (see the masquerade test above) makes a NAT whose mapping
    // depends on the destination: a packet from the rendezvous's port to k1's future
    // public endpoint leaves a conntrack entry, so k1 keeps its port towards the STUN
    // server (asked first) but gets another one towards the rendezvous. The report
    // says so (rfc4787 §4.1: endpoint-dependent mapping is what defeats hole
    // punching), passes both endpoints on, and the punch to a natgw site with
    // endpoint-independent filtering still works. (The other order does not show it:
    // once a source is mapped, masquerade reuses that mapping for new destinations
    // whenever it can.)
    let sites = sites();
    let _natgw = start_natgw(&[(&sites.a, &[])]);
    let k1_port = 5555;
    {
        let early = udp(&sites.rendezvous.ns, RENDEZVOUS_ADDR, RENDEZVOUS_PORT);
        early
            .send_to(b"early", SocketAddrV4::new(SITE_K_WAN_ADDR, k1_port))
            .expect("sending the early packet");
    }
    let rendezvous = Rendezvous::start(&sites);
    let stun_server = SocketAddrV4::new(RENDEZVOUS_ADDR, STUN_PORT);
    let _stun = StunServer::start(&sites.rendezvous.ns, stun_server);
    let local = SocketAddrV4::new(K1_ADDR, k1_port).to_string();
    let server = stun_server.to_string();
    let (a, k) = punch_pair(
        Peer {
            ns: &sites.a.hosts[0].ns,
            id: "a1-edm",
        },
        Peer {
            ns: &sites.k.hosts[0].ns,
            id: "k1-edm",
        },
        &[],
        &["--local", &local, "--stun", &server],
    );
    assert_both_ok("kernel NAT, endpoint-dependent", &a, &k);
    let r = &k.report;
    assert_eq!(r["public_from"], "stun", "{r:#}");
    assert_eq!(r["stun"]["agrees_with_rendezvous"], false, "{r:#}");
    let (learned, observed) = (k.endpoint("public"), k.endpoint("observed"));
    assert_eq!(learned, SocketAddrV4::new(SITE_K_WAN_ADDR, k1_port));
    assert_eq!(*observed.ip(), SITE_K_WAN_ADDR);
    assert_ne!(
        observed.port(),
        k1_port,
        "masquerade moved the port for the rendezvous"
    );
    assert!(
        k.notes()
            .iter()
            .any(|n| n.contains("endpoint-dependent") && n.contains(&observed.to_string())),
        "{:?}",
        k.notes()
    );
    // Both endpoints reached the peer: the rendezvous's as the public one, STUN's as
    // another public path to try.
    assert_eq!(a.endpoint("peer_public"), observed);
    assert_eq!(a.endpoint("peer_stun"), learned);
    let paths = a.report["paths"].as_array().cloned().unwrap_or_default();
    assert!(
        paths
            .iter()
            .any(|p| p["kind"] == "public" && endpoint_in(&p["remote"]) == Some(learned)),
        "{paths:?}"
    );
    rendezvous.stop();
}

// ---------------------------------------------------------------------------------
// Rendezvous authentication (--auth-secret) and the rendezvous over TCP
// ---------------------------------------------------------------------------------

/// The warning `natgw rendezvous` prints without --auth-secret.
const OPEN_WARNING: &str = "no --auth-secret: anyone can register any id and look up any \
registered peer";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `<expiry>:<id>:<password>` for --auth-user, made with `secret` the way coturn's
/// use-auth-secret does: base64(HMAC-SHA1(secret, "<expiry>:<id>")).
fn auth_user(secret: &str, expiry: u64, id: &str) -> String {
    let username = format!("{expiry}:{id}");
    let password = natgw_proto::turn::auth::rest_password(secret, &username);
    format!("{username}:{password}")
}

/// What the rendezvous answers one datagram from `socket`.
fn ask_rendezvous(socket: &std::net::UdpSocket, bytes: &[u8]) -> Vec<u8> {
    socket
        .send_to(bytes, rendezvous_endpoint())
        .expect("sending to the rendezvous");
    recv(socket).expect("the rendezvous answers").0
}

#[test]
fn an_authenticating_rendezvous_introduces_only_peers_with_a_valid_credential() {
    use natgw_proto::punch::wire::{Connect, Message, PeerId, Repr};
    let sites = sites();
    let _natgw = start_natgw(&[(&sites.a, &[]), (&sites.b, &[])]);
    // Two secrets: the one being retired and its successor (rotation).
    let rendezvous = Rendezvous::start_with(
        &sites,
        &["--auth-secret", "new-s3cret", "--auth-secret", "old"],
    );
    let (a1, b1) = (&sites.a.hosts[0], &sites.b.hosts[0]);
    let capture = Capture::start(&sites.inet, parse_frame);
    // a1 computes its credential from the old secret; b1 was handed one made with the
    // new secret by someone who holds it.
    let b1_user = auth_user("new-s3cret", unix_now() + 3600, "b1");
    let (a, b) = punch_pair(
        Peer {
            ns: &a1.ns,
            id: "a1",
        },
        Peer {
            ns: &b1.ns,
            id: "b1",
        },
        &["--auth-secret", "old"],
        &["--auth-user", &b1_user],
    );
    let seen = capture.finish();
    assert_both_ok("authenticated", &a, &b);
    assert_eq!(a.report["authenticated"], true, "{:#}", a.report);
    assert_eq!(a.method(), "direct-public", "{:#}", a.report);
    assert_direct_on_the_wire("authenticated", &seen, &a, &b);
    assert!(
        rendezvous_kinds(&seen).contains(&kind::CHALLENGE),
        "the rendezvous challenged the credentials on the wire"
    );

    // Refused peers: no credential, a wrong secret, an expired credential, someone
    // else's credential. Each is told why, exits non-zero, and says it in --json.
    let stale = auth_user("new-s3cret", unix_now() - 60, "c1");
    let bobs = auth_user("new-s3cret", unix_now() + 3600, "b1");
    for (extra, reason, says) in [
        (
            &[][..],
            "authentication-required",
            "requires authentication: give --auth-secret or --auth-user",
        ),
        (
            &["--auth-secret", "guess"][..],
            "wrong-credential",
            "refused our credential: wrong credential",
        ),
        (
            &["--auth-user", &stale][..],
            "expired",
            "refused our credential: expired",
        ),
    ] {
        let (child, started) = spawn_punch(
            Peer {
                ns: &a1.ns,
                id: "c1",
            },
            Peer {
                ns: &b1.ns,
                id: "b1",
            },
            extra,
        );
        let p = wait_punch(child, started);
        assert!(!p.success, "{extra:?}: {:#}", p.report);
        assert_eq!(p.report["ok"], false);
        assert_eq!(p.report["refused"], reason, "{extra:?}: {:#}", p.report);
        assert_eq!(p.report["stage"], "rendezvous", "{:#}", p.report);
        let error = p.report["error"].as_str().unwrap_or("");
        assert!(error.contains(says), "{extra:?}: {error}");
        assert!(p.stderr.contains(says), "{}", p.stderr);
        assert!(p.elapsed < Duration::from_secs(5), "took {:?}", p.elapsed);
    }
    // b1's credential used as "c1": refused by natgw punch itself, before sending.
    let (child, started) = spawn_punch(
        Peer {
            ns: &a1.ns,
            id: "c1",
        },
        Peer {
            ns: &b1.ns,
            id: "b1",
        },
        &["--auth-user", &bobs],
    );
    let mut child = child;
    while child.try_wait().expect("waiting").is_none() && started.elapsed() < PROCESS_LIMIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("natgw punch output");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the credential is for id `b1`, but --id is `c1`"),
        "{stderr}"
    );

    // A stranger cannot look b1 up: with b1 registered (waiting for a peer that does
    // not come), a CONNECT for b1 and one for a peer nobody registered get the same
    // answer, and b1 is not introduced to anyone.
    let (waiting, waiting_started) = spawn_punch(
        Peer {
            ns: &b1.ns,
            id: "b1",
        },
        Peer {
            ns: &a1.ns,
            id: "nobody",
        },
        &["--auth-user", &bobs, "--timeout", "3"],
    );
    std::thread::sleep(Duration::from_millis(1000));
    let stranger = udp(&sites.a.hosts[1].ns, Ipv4Addr::UNSPECIFIED, 0);
    let connect = |peer: &str| {
        Repr {
            transaction: 77,
            message: Message::Connect(Connect {
                id: PeerId::new("mallory").expect("id"),
                peer: PeerId::new(peer).expect("id"),
                punch: None,
                credential: None,
            }),
        }
        .to_bytes()
    };
    let for_b1 = ask_rendezvous(&stranger, &connect("b1"));
    let for_nobody = ask_rendezvous(&stranger, &connect("zz-not-there"));
    assert_eq!(
        for_b1, for_nobody,
        "the answers tell registered peers apart"
    );
    assert_eq!(for_b1[3], 0x06, "an ERROR: {for_b1:?}");
    assert_eq!(for_b1[12], 5, "authentication required: {for_b1:?}");
    assert!(for_b1.len() <= connect("b1").len());
    let waiting = wait_punch(waiting, waiting_started);
    assert!(!waiting.success);
    assert_eq!(
        waiting.report["stage"], "waiting-for-peer",
        "b1 was not introduced to the stranger: {:#}",
        waiting.report
    );

    let (last, stderr) = rendezvous.stop_with_stderr();
    let c = &last["counters"];
    assert!(!stderr.contains(OPEN_WARNING), "{stderr}");
    // a1 and b1 each asked for the other (one or two introductions), nobody else met.
    assert!(
        matches!(c["introductions"].as_u64(), Some(1 | 2)),
        "only a1 and b1 met: {c}"
    );
    assert!(c["auth_missing"].as_u64() >= Some(3), "{c}");
    assert!(c["auth_bad_mac"].as_u64() >= Some(1), "{c}");
    assert!(c["auth_expired"].as_u64() >= Some(1), "{c}");
    assert!(c["challenges"].as_u64() >= Some(3), "{c}");
    assert!(c["authenticated"].as_u64() >= Some(4), "{c}");
}

#[test]
fn a_peer_talking_tcp_to_the_rendezvous_registers_for_udp_punching() {
    let sites = sites();
    let _natgw = start_natgw(&[(&sites.a, &[]), (&sites.b, &[])]);
    // Authenticated, so that the challenge goes over TCP to a1 and over UDP to b1.
    let rendezvous = Rendezvous::start_with(&sites, &["--auth-secret", "s3cret"]);
    let (a1, b1) = (&sites.a.hosts[0], &sites.b.hosts[0]);
    let capture = Capture::start(&sites.inet, parse_frame);
    let (a, b) = punch_pair(
        Peer {
            ns: &a1.ns,
            id: "a1",
        },
        Peer {
            ns: &b1.ns,
            id: "b1",
        },
        &["--rendezvous-tcp", "--auth-secret", "s3cret"],
        &["--auth-secret", "s3cret"],
    );
    let seen = capture.finish();
    assert_both_ok("rendezvous over TCP", &a, &b);
    assert_eq!(a.report["transport"], "udp", "{:#}", a.report);
    assert_eq!(a.report["rendezvous_transport"], "tcp", "{:#}", a.report);
    assert_eq!(a.method(), "direct-public", "{:#}", a.report);
    assert_eq!(b.method(), "direct-public", "{:#}", b.report);
    // a1's public UDP endpoint came from STUN over UDP; b1 reached it.
    assert_eq!(a.report["public_from"], "stun", "{:#}", a.report);
    assert_eq!(b.endpoint("remote"), a.endpoint("public"));
    // On the wire: a1's REGISTER and CONNECT went over TCP, none over UDP; b1's over
    // UDP; the probes went directly over UDP.
    let a_wan = sites.a.wan_addr;
    let to_rendezvous = |tcp: bool, kind: u8| {
        seen.iter()
            .filter(|s| *s.src.ip() == a_wan && *s.dst.ip() == RENDEZVOUS_ADDR)
            .filter(|s| s.tcp == tcp && s.kind == Some(kind))
            .count()
    };
    assert!(
        to_rendezvous(true, kind::REGISTER) >= 2,
        "signed after a challenge"
    );
    assert!(to_rendezvous(true, kind::CONNECT) >= 1);
    assert!(
        seen.iter().any(|s| s.tcp
            && *s.src.ip() == RENDEZVOUS_ADDR
            && *s.dst.ip() == a_wan
            && s.kind == Some(kind::CHALLENGE)),
        "a1 was challenged on its TCP connection"
    );
    assert_eq!(to_rendezvous(false, kind::REGISTER), 0);
    assert_eq!(to_rendezvous(false, kind::CONNECT), 0);
    assert!(seen.iter().any(|s| !s.tcp
        && *s.src.ip() == sites.b.wan_addr
        && *s.dst.ip() == RENDEZVOUS_ADDR
        && s.kind == Some(kind::REGISTER)));
    assert_direct_on_the_wire("rendezvous over TCP", &seen, &a, &b);
    let (last, stderr) = rendezvous.stop_with_stderr();
    assert!(!stderr.contains(OPEN_WARNING), "{stderr}");
    assert!(
        matches!(last["counters"]["introductions"].as_u64(), Some(1 | 2)),
        "{last}"
    );
    assert_eq!(last["counters"]["auth_bad_mac"], 0, "{last}");
}

#[test]
fn an_open_rendezvous_warns_that_anyone_can_register_and_look_up_peers() {
    let sites = sites();
    let rendezvous = Rendezvous::start_with(&sites, &["--lifetime", "30"]);
    let (last, stderr) = rendezvous.stop_with_stderr();
    assert_eq!(last["counters"]["authenticated"], 0, "{last}");
    assert!(
        stderr.contains(OPEN_WARNING),
        "the open-mode warning: {stderr}"
    );
}
