//! When no direct path exists, on the two-site testbed ([`testbed::Sites`]):
//!
//! - **Two endpoint-dependent NATs.** Sites A and B run no natgw but the kernel's
//!   `masquerade random,fully-random` ([`KernelNat::EndpointDependent`]). The wire
//!   shows one socket getting a new public port per destination, and only the
//!   destination a mapping was made for getting in; `natgw punch` between the two
//!   sites fails, with its reason, because each side's probes leave from a port the
//!   other side was never told about. With TURN credentials both fall back to the
//!   rendezvous's relay and report `relayed`.
//! - **A firewall that drops all UDP.** The kernel-NAT site K gets
//!   [`drop_udp_ruleset`] beside its masquerade: nothing UDP crosses it either way
//!   (its counters say so), while TCP to the rendezvous works, so a peer there can
//!   only register over TCP. With `--rendezvous-tcp --turn-tcp` it reaches the
//!   rendezvous's relay over TCP and both peers report `relayed`.
//! - **An ICE agent nobody here wrote**: aioice (PyPI; tests/aioice_agent.py), one
//!   agent behind each natgw site, using the rendezvous's port as its STUN server and
//!   its TURN relay. Punching works between natgw sites, and the agents select a
//!   server-reflexive pair, straight across the internet; with the inet router
//!   dropping everything between the two sites they select a relayed pair, and the
//!   relay's counters show the traffic.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use natgw_integration_tests::{
    natgw_bin, recv, recv_nothing, require_root, terminate, test_python, udp, Capture, Natgw,
};
use serde_json::Value;
use testbed::sites::{
    drop_udp_ruleset, load_nft, nft_counters, FIREWALL_TABLE, RENDEZVOUS_ADDR, SITE_A_WAN_ADDR,
    SITE_B_WAN_ADDR, SITE_K_WAN_ADDR, SITE_LAN_IF, SITE_WAN_IF,
};
use testbed::{KernelNat, Netns, Site, Sites, SitesOptions};

/// Where the rendezvous listens (UDP and TCP), and so its STUN responder and TURN
/// relay.
const RENDEZVOUS_PORT: u16 = 7000;
/// The relay ports the rendezvous hands out.
const RELAY_MIN: u16 = 50_000;
const RELAY_MAX: u16 = 50_099;
/// The TURN user every test configures.
const TURN_USER: &str = "ice";
const TURN_PASSWORD: &str = "candidates";
/// Message kinds of the punch protocol (natgw-proto/src/punch/wire.rs): "NP",
/// version, kind.
const PROBE: u8 = 0x10;
const ACK: u8 = 0x11;
/// `--timeout` of the relayed punch behind the UDP-dropping firewall (see there).
const RELAY_TIMEOUT: &str = "5";
/// How long a child process may take in all before the test kills it.
const PROCESS_LIMIT: Duration = Duration::from_secs(45);

fn rendezvous_endpoint() -> SocketAddrV4 {
    SocketAddrV4::new(RENDEZVOUS_ADDR, RENDEZVOUS_PORT)
}

fn sites(opts: SitesOptions) -> Sites {
    require_root();
    Sites::new(opts).expect("building the two-site testbed")
}

fn start_natgw(site: &Site) -> Natgw {
    let ifaces = ["--wan", SITE_WAN_IF, "--lan", SITE_LAN_IF];
    Natgw::try_start_on(&site.gateway, &ifaces, &[])
        .or_else(|_| Natgw::try_start_on(&site.gateway, &ifaces, &[]))
        .unwrap_or_else(|e| panic!("natgw on site {}: {e}", site.name))
}

// ---------------------------------------------------------------------------------
// The rendezvous, with its TURN relay.
// ---------------------------------------------------------------------------------

/// `natgw rendezvous --json` with TURN (user [`TURN_USER`]) on the rendezvous host
/// ([`natgw_integration_tests::Rendezvous`]).
struct Rendezvous(natgw_integration_tests::Rendezvous);

impl Rendezvous {
    fn start(sites: &Sites) -> Self {
        let user = format!("{TURN_USER}:{TURN_PASSWORD}");
        let ports = format!("{RELAY_MIN}-{RELAY_MAX}");
        let r = natgw_integration_tests::Rendezvous::start(
            &sites.rendezvous.ns,
            rendezvous_endpoint(),
            &["--turn-user", &user, "--relay-ports", &ports],
            false,
        );
        assert_eq!(r.first["turn"], true, "{}", r.first);
        Self(r)
    }

    /// Stops it and returns its last line (`counters`, `stun`, `turn`).
    fn stop(self) -> Value {
        self.0.stop()
    }
}

fn turn_counter(summary: &Value, name: &str) -> u64 {
    summary["turn"]["engine"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no TURN counter {name} in {summary}"))
}

// ---------------------------------------------------------------------------------
// `natgw punch`.
// ---------------------------------------------------------------------------------

/// What one `natgw punch --json` did.
#[derive(Debug)]
struct Punch {
    success: bool,
    report: Value,
    stderr: String,
}

impl Punch {
    fn endpoint(&self, field: &str) -> SocketAddrV4 {
        self.report[field]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no endpoint `{field}` in {:#}", self.report))
    }

    fn assert_failed(&self, stage: &str) {
        assert!(!self.success, "exit status 0: {:#}", self.report);
        assert_eq!(self.report["ok"], false, "{:#}", self.report);
        assert_eq!(self.report["stage"], stage, "{:#}", self.report);
        let error = self.report["error"].as_str().unwrap_or("");
        assert!(!error.is_empty(), "no reason given: {:#}", self.report);
        assert!(
            self.stderr.contains(error),
            "the reason goes to stderr too: {}",
            self.stderr
        );
    }
}

fn spawn_punch(ns: &Netns, id: &str, peer: &str, extra: &[&str]) -> (Child, Instant) {
    let child = ns
        .command(natgw_bin())
        .args(["punch", "--json", "--rendezvous"])
        .arg(rendezvous_endpoint().to_string())
        .args(["--id", id, "--peer", peer])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting natgw punch");
    (child, Instant::now())
}

fn wait_punch((mut child, started): (Child, Instant)) -> Punch {
    while child.try_wait().expect("waiting for natgw punch").is_none() {
        if started.elapsed() > PROCESS_LIMIT {
            let _ = child.kill();
            panic!("natgw punch still running after {PROCESS_LIMIT:?}: it must never hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
    }
}

// ---------------------------------------------------------------------------------
// What crosses the internet.
// ---------------------------------------------------------------------------------

/// One IPv4 UDP packet the inet router received.
#[derive(Clone, Debug)]
struct Seen {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    /// The punch-protocol kind of the payload ("NP", any version, kind).
    kind: Option<u8>,
}

fn parse_udp(f: &[u8]) -> Option<Seen> {
    if f.len() < 42 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 17 {
        return None;
    }
    let addr = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
    let l4 = ip.get(ihl..)?;
    let port = |o: usize| u16::from_be_bytes([l4[o], l4[o + 1]]);
    let payload = l4.get(8..)?;
    Some(Seen {
        src: SocketAddrV4::new(addr(12), port(0)),
        dst: SocketAddrV4::new(addr(16), port(2)),
        kind: (payload.len() >= 4 && payload[..2] == *b"NP").then(|| payload[3]),
    })
}

// ---------------------------------------------------------------------------------
// Two endpoint-dependent NATs
// ---------------------------------------------------------------------------------

/// Sites A and B behind `masquerade random,fully-random` instead of natgw.
fn endpoint_dependent_sites() -> Sites {
    let sites = sites(SitesOptions::default());
    let ruleset = KernelNat::EndpointDependent
        .ruleset()
        .expect("a masquerade rule set");
    for site in [&sites.a, &sites.b] {
        site.load_nft(&ruleset)
            .unwrap_or_else(|e| panic!("site {}: {}", site.name, e.chain()));
    }
    sites
}

#[test]
fn endpoint_dependent_nats_on_both_sites_defeat_punching_and_natgw_punch_relays() {
    let sites = endpoint_dependent_sites();
    let rdv = &sites.rendezvous.ns;

    // On the wire: one socket behind each NAT, two destinations, two public ports
    // (RFC 4787 §4.1 address-and-port-dependent mapping); and a third party sending
    // to one of those public endpoints gets nothing through (§5, address-and-port-
    // dependent filtering).
    let (r1, r2, stranger) = (
        udp(rdv, RENDEZVOUS_ADDR, 9001),
        udp(rdv, RENDEZVOUS_ADDR, 9002),
        udp(rdv, RENDEZVOUS_ADDR, 9003),
    );
    for (site, wan) in [(&sites.a, SITE_A_WAN_ADDR), (&sites.b, SITE_B_WAN_ADDR)] {
        let host = udp(&site.hosts[0].ns, Ipv4Addr::UNSPECIFIED, 5000);
        let mut seen = Vec::new();
        for r in [&r1, &r2] {
            host.send_to(b"hello", r.local_addr().expect("bound"))
                .expect("sending");
            let (_, from) = recv(r).expect("the rendezvous host hears the site");
            assert_eq!(*from.ip(), wan, "site {}", site.name);
            seen.push(from);
        }
        eprintln!(
            "site {}: 0.0.0.0:5000 appears as {} and {}",
            site.name, seen[0], seen[1]
        );
        assert_ne!(
            seen[0].port(),
            seen[1].port(),
            "site {}: one socket, two destinations, one port: the NAT is not \
             endpoint-dependent",
            site.name
        );
        stranger.send_to(b"let me in", seen[0]).expect("sending");
        assert_eq!(
            recv_nothing(&host, Duration::from_millis(500)),
            None,
            "site {}: a stranger got through to the mapping made for {}",
            site.name,
            r1.local_addr().expect("bound")
        );
        // The destination the mapping was made for does get in.
        r1.send_to(b"reply", seen[0]).expect("sending");
        assert!(
            recv(&host).is_some(),
            "site {}: the reply was dropped",
            site.name
        );
    }

    // natgw punch between the two sites: no direct path, and both sides say so.
    let rendezvous = Rendezvous::start(&sites);
    let capture = Capture::start(&sites.inet, parse_udp);
    let a = spawn_punch(
        &sites.a.hosts[0].ns,
        "a1-edm",
        "b1-edm",
        &["--timeout", "3"],
    );
    let b = spawn_punch(
        &sites.b.hosts[0].ns,
        "b1-edm",
        "a1-edm",
        &["--timeout", "3"],
    );
    let (a, b) = (wait_punch(a), wait_punch(b));
    let seen = capture.finish();
    for p in [&a, &b] {
        eprintln!("{}: {}", p.report["id"], p.report["error"]);
        p.assert_failed("punching");
        let paths = p.report["paths"].as_array().cloned().unwrap_or_default();
        assert!(
            paths.iter().all(|path| path["verified"] == false),
            "{paths:?}"
        );
        assert!(
            paths
                .iter()
                .any(|path| path["kind"] == "public" && path["probes_sent"].as_u64() > Some(2)),
            "{paths:?}"
        );
    }
    // Why, on the wire: each side's probes towards the other's public endpoint (the
    // one the rendezvous saw) left from public ports other than its own public
    // endpoint's, which is the only one the other side was told about and probed.
    for (me, peer, wan) in [(&a, &b, SITE_A_WAN_ADDR), (&b, &a, SITE_B_WAN_ADDR)] {
        let (public, peer_public) = (me.endpoint("public"), peer.endpoint("public"));
        assert_eq!(*public.ip(), wan);
        let ports: BTreeSet<u16> = seen
            .iter()
            .filter(|s| *s.src.ip() == wan && s.dst == peer_public && s.kind == Some(PROBE))
            .map(|s| s.src.port())
            .collect();
        eprintln!(
            "{}: public endpoint {public}, probes to {peer_public} left from ports {ports:?}",
            me.report["id"]
        );
        assert!(
            !ports.is_empty(),
            "no probe {wan} → {peer_public} crossed the internet"
        );
        assert!(
            !ports.contains(&public.port()),
            "a probe left from the public endpoint {public}: the mapping did not depend on \
             the destination"
        );
        // And none of the other side's probes was answered.
        assert!(
            !seen.iter().any(|s| *s.src.ip() == wan
                && *s.dst.ip() != RENDEZVOUS_ADDR
                && s.kind == Some(ACK)),
            "an ack crossed the internet"
        );
    }

    // With TURN credentials (the relay is the rendezvous's): after the same failed
    // direct attempt both peers fall back to their allocations and report `relayed`.
    let turn = format!("{TURN_USER}:{TURN_PASSWORD}");
    let extra = ["--timeout", "2", "--turn-user", turn.as_str()];
    let a = spawn_punch(&sites.a.hosts[0].ns, "a1-relay", "b1-relay", &extra);
    let b = spawn_punch(&sites.b.hosts[0].ns, "b1-relay", "a1-relay", &extra);
    let (a, b) = (wait_punch(a), wait_punch(b));
    assert_relayed("endpoint-dependent NATs", [(&a, "udp"), (&b, "udp")]);
    let summary = rendezvous.stop();
    assert_relay_carried(&summary);
}

/// Both punches succeeded through natgw's relay, each reaching it over its
/// transport (`udp`, `tcp`): each report says `relayed`, names the rendezvous as the
/// TURN server, its own relayed address on the relay's port range, and the other's
/// as the peer's.
fn assert_relayed(what: &str, [(a, ta), (b, tb)]: [(&Punch, &str); 2]) {
    if !(a.success && b.success) {
        eprintln!(
            "{what}: both reports\n{:#}\n{}\n{:#}\n{}",
            a.report, a.stderr, b.report, b.stderr
        );
    }
    for (me, peer, transport) in [(a, b, ta), (b, a, tb)] {
        let r = &me.report;
        eprintln!(
            "{what}: {} relayed: {} (exit ok {})",
            r["id"], r["relay"], me.success
        );
        assert!(
            me.success && r["ok"] == true,
            "{what}: {r:#}\n{}",
            me.stderr
        );
        assert_eq!(r["method"], "relayed", "{what}: {r:#}");
        assert_eq!(r["upgraded"], false, "{what}: {r:#}");
        let relay = &r["relay"];
        assert_eq!(
            relay["server"],
            rendezvous_endpoint().to_string(),
            "{what}: {relay}"
        );
        assert_eq!(relay["transport"], transport, "{what}: {relay}");
        let relayed: SocketAddrV4 = relay["relayed"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no relayed address in {relay}"));
        assert_eq!(*relayed.ip(), RENDEZVOUS_ADDR, "{what}: {relay}");
        assert!(
            (RELAY_MIN..=RELAY_MAX).contains(&relayed.port()),
            "{what}: {relay}"
        );
        assert_eq!(
            peer.report["relay"]["peer_relayed"], relay["relayed"],
            "{what}: the peer was given our relayed address"
        );
        assert!(relay["rtt_ms"].as_f64() > Some(0.0), "{what}: {relay}");
        assert_eq!(r["rtt_ms"], relay["rtt_ms"], "{what}: {r:#}");
    }
}

/// The relay's own counters: packets went out of relay sockets to peers and came
/// back to clients (the probes and acks of the relayed path).
fn assert_relay_carried(summary: &Value) {
    let engine = &summary["turn"]["engine"];
    eprintln!("TURN: {engine}");
    assert!(
        turn_counter(summary, "allocations_created") >= 2,
        "{engine}"
    );
    assert!(turn_counter(summary, "to_peer_packets") > 0, "{engine}");
    assert!(turn_counter(summary, "to_client_packets") > 0, "{engine}");
}

// ---------------------------------------------------------------------------------
// A firewall that drops UDP
// ---------------------------------------------------------------------------------

/// The kernel-NAT site K behind masquerade and [`drop_udp_ruleset`], site A behind
/// natgw.
fn udp_dropping_sites() -> (Sites, Natgw) {
    let sites = sites(SitesOptions::default());
    sites
        .k
        .load_nft(&drop_udp_ruleset())
        .unwrap_or_else(|e| panic!("the firewall: {}", e.chain()));
    let natgw = start_natgw(&sites.a);
    (sites, natgw)
}

fn firewall_counters(site: &Site) -> [u64; 3] {
    let counts = site
        .nft_counters(FIREWALL_TABLE, &["outbound", "inbound", "to_gateway"])
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    [counts[0], counts[1], counts[2]]
}

#[test]
fn behind_a_firewall_dropping_udp_natgw_punch_relays_over_tcp() {
    let (sites, _natgw) = udp_dropping_sites();
    let k1 = &sites.k.hosts[0].ns;
    let rdv = &sites.rendezvous.ns;

    // UDP out: nothing arrives; UDP in (to the site's public address): dropped too.
    let host = udp(k1, Ipv4Addr::UNSPECIFIED, 5000);
    let r = udp(rdv, RENDEZVOUS_ADDR, 9001);
    for _ in 0..3 {
        host.send_to(b"hello", r.local_addr().expect("bound"))
            .expect("sending");
    }
    assert_eq!(
        recv_nothing(&r, Duration::from_millis(500)),
        None,
        "UDP got out"
    );
    for _ in 0..2 {
        r.send_to(b"let me in", SocketAddrV4::new(SITE_K_WAN_ADDR, 5000))
            .expect("sending");
    }
    assert_eq!(
        recv_nothing(&host, Duration::from_millis(500)),
        None,
        "UDP got in"
    );
    let [outbound, _, to_gateway] = firewall_counters(&sites.k);
    assert_eq!(
        outbound, 3,
        "the firewall counted the three outbound datagrams"
    );
    assert_eq!(
        to_gateway, 2,
        "the firewall counted the two inbound datagrams"
    );

    // TCP to the rendezvous works: a connection, and a registration over it.
    let rendezvous = Rendezvous::start(&sites);
    k1.run(|| TcpStream::connect_timeout(&rendezvous_endpoint().into(), Duration::from_secs(3)))
        .expect("TCP from behind the firewall to the rendezvous");
    let alone = wait_punch(spawn_punch(
        k1,
        "k1-tcp",
        "nobody",
        &["--tcp", "--timeout", "1"],
    ));
    alone.assert_failed("waiting-for-peer");
    assert_eq!(
        *alone.endpoint("observed").ip(),
        SITE_K_WAN_ADDR,
        "registered over TCP: {:#}",
        alone.report
    );

    // natgw punch over UDP: k1 never gets through to the rendezvous, a1 (natgw
    // site) registers and waits for a peer that never comes.
    let k = spawn_punch(k1, "k1-udp", "a1-udp", &["--timeout", "2"]);
    let a = spawn_punch(
        &sites.a.hosts[0].ns,
        "a1-udp",
        "k1-udp",
        &["--timeout", "2"],
    );
    let (k, a) = (wait_punch(k), wait_punch(a));
    eprintln!("k1: {}\na1: {}", k.report["error"], a.report["error"]);
    k.assert_failed("rendezvous");
    a.assert_failed("waiting-for-peer");
    let [outbound_after, _, _] = firewall_counters(&sites.k);
    assert!(
        outbound_after > outbound,
        "k1's registrations were dropped by the firewall"
    );

    // With TURN: k1 registers over TCP (--rendezvous-tcp, still for UDP punching)
    // and reaches the relay over TCP (--turn-tcp); a1 uses UDP as usual. Its direct
    // probes die in the firewall, and after --timeout both fall back to the relay.
    // k1 first waits 2 s for a STUN answer over UDP that the firewall never lets
    // through, and only then registers: a1's --timeout (also how long it waits for
    // its peer to show up) must outlast that.
    let turn = format!("{TURN_USER}:{TURN_PASSWORD}");
    let k = spawn_punch(
        k1,
        "k1-relay",
        "a1-relay",
        &[
            "--timeout",
            RELAY_TIMEOUT,
            "--rendezvous-tcp",
            "--turn-tcp",
            "--turn-user",
            &turn,
        ],
    );
    let a = spawn_punch(
        &sites.a.hosts[0].ns,
        "a1-relay",
        "k1-relay",
        &["--timeout", RELAY_TIMEOUT, "--turn-user", &turn],
    );
    let (k, a) = (wait_punch(k), wait_punch(a));
    assert_relayed("UDP dropped on k1's side", [(&k, "tcp"), (&a, "udp")]);
    assert_eq!(k.report["transport"], "udp", "{:#}", k.report);
    assert_eq!(k.report["rendezvous_transport"], "tcp", "{:#}", k.report);
    let [outbound_relayed, inbound_relayed, _] = firewall_counters(&sites.k);
    eprintln!(
        "firewall: {} outbound and {inbound_relayed} inbound UDP datagrams dropped during \
         the relayed punch",
        outbound_relayed - outbound_after
    );
    assert!(
        outbound_relayed > outbound_after,
        "k1 tried UDP (STUN, direct probes) and the firewall dropped it all the same"
    );
    let summary = rendezvous.stop();
    eprintln!("rendezvous: {}", summary["counters"]);
    assert_relay_carried(&summary);
}

// ---------------------------------------------------------------------------------
// aioice behind two natgw sites
// ---------------------------------------------------------------------------------

/// One aioice agent (tests/aioice_agent.py) in a namespace.
struct Agent {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
    name: &'static str,
}

impl Agent {
    fn start(ns: &Netns, name: &'static str, controlling: bool, turn_transport: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/aioice_agent.py");
        let rendezvous = rendezvous_endpoint().to_string();
        let mut child = ns
            .command(test_python())
            .arg(script)
            .arg(if controlling {
                "controlling"
            } else {
                "controlled"
            })
            .args(["--stun", &rendezvous, "--turn", &rendezvous])
            .args(["--turn-user", TURN_USER, "--turn-password", TURN_PASSWORD])
            .args(["--turn-transport", turn_transport])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python with aioice (`cargo xtask provision` installs it)");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "event": "noise", "line": line }));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
            name,
        }
    }

    /// The next line with `event`; an `error` line or silence fails the test.
    fn expect(&self, event: &str) -> Value {
        let deadline = Instant::now() + PROCESS_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{}: no `{event}` line from aioice", self.name));
            match line["event"].as_str() {
                Some(e) if e == event => return line,
                Some("error") => panic!("{}: aioice failed: {}", self.name, line["error"]),
                _ => eprintln!("{}: {line}", self.name),
            }
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("writing to aioice");
        self.stdin.flush().expect("flushing");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// The selected pair of both agents, once data went both ways.
struct Ice {
    a: Value,
    b: Value,
    candidates_a: Value,
    candidates_b: Value,
}

/// Runs one agent on a1 (controlling) and one on b1, passing each the other's
/// candidates; returns once both connected and each received all the other's data.
fn ice_between_a1_and_b1(sites: &Sites, turn_transport: &str) -> Ice {
    let mut a = Agent::start(&sites.a.hosts[0].ns, "a1", true, turn_transport);
    let mut b = Agent::start(&sites.b.hosts[0].ns, "b1", false, turn_transport);
    let (candidates_a, candidates_b) = (a.expect("candidates"), b.expect("candidates"));
    eprintln!("a1 candidates: {}", candidates_a["candidates"]);
    eprintln!("b1 candidates: {}", candidates_b["candidates"]);
    a.send(&candidates_b.to_string());
    b.send(&candidates_a.to_string());
    let (connected_a, connected_b) = (a.expect("connected"), b.expect("connected"));
    eprintln!(
        "a1 selected {} → {}",
        connected_a["local"], connected_a["remote"]
    );
    eprintln!(
        "b1 selected {} → {}",
        connected_b["local"], connected_b["remote"]
    );
    let (data_a, data_b) = (a.expect("data"), b.expect("data"));
    for (data, name) in [(&data_a, "a1"), (&data_b, "b1")] {
        assert_eq!(data["received"], 10, "{name}: {data}");
    }
    a.send("close");
    b.send("close");
    for agent in [&mut a, &mut b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while agent.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ice {
        a: connected_a,
        b: connected_b,
        candidates_a,
        candidates_b,
    }
}

/// The candidate types an agent offered.
fn offered(candidates: &Value) -> BTreeSet<String> {
    candidates["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let sdp = c.as_str()?;
            let words: Vec<&str> = sdp.split_whitespace().collect();
            let typ = words.iter().position(|w| *w == "typ")?;
            words.get(typ + 1).map(|t| (*t).to_owned())
        })
        .collect()
}

fn endpoint_of(candidate: &Value) -> SocketAddrV4 {
    let host: Ipv4Addr = candidate["host"]
        .as_str()
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("no host in {candidate}"));
    let port = candidate["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no port in {candidate}"));
    SocketAddrV4::new(host, port)
}

#[test]
fn aioice_agents_behind_two_natgw_sites_connect_server_reflexive() {
    let sites = sites(SitesOptions::default());
    let _natgw = [start_natgw(&sites.a), start_natgw(&sites.b)];
    let rendezvous = Rendezvous::start(&sites);
    let capture = Capture::start(&sites.inet, parse_udp);
    let ice = ice_between_a1_and_b1(&sites, "udp");
    let seen = capture.finish();
    for (name, c) in [("a1", &ice.candidates_a), ("b1", &ice.candidates_b)] {
        let types = offered(c);
        assert!(
            ["host", "srflx", "relay"]
                .iter()
                .all(|t| types.contains(*t)),
            "{name} gathered host, server-reflexive (natgw's STUN) and relayed (natgw's \
             TURN) candidates: {types:?}"
        );
    }
    // Both selected pairs: from the host candidate straight to the other side's
    // server-reflexive candidate, the natgw gateway's public endpoint.
    for (pair, wan, peer_wan) in [
        (&ice.a, SITE_A_WAN_ADDR, SITE_B_WAN_ADDR),
        (&ice.b, SITE_B_WAN_ADDR, SITE_A_WAN_ADDR),
    ] {
        assert_eq!(pair["local"]["type"], "host", "{pair}");
        assert_eq!(pair["remote"]["type"], "srflx", "{pair}");
        let remote = endpoint_of(&pair["remote"]);
        assert_eq!(*remote.ip(), peer_wan, "{pair}");
        // On the wire: datagrams went between the two public endpoints, both ways.
        let sent = seen
            .iter()
            .filter(|s| *s.src.ip() == wan && s.dst == remote)
            .count();
        assert!(sent >= 10, "{pair}: only {sent} datagrams {wan} → {remote}");
    }
    let summary = rendezvous.stop();
    eprintln!("TURN: {}", summary["turn"]["engine"]);
    assert!(
        summary["stun"]["success"].as_u64() >= Some(2),
        "both agents asked natgw's STUN responder: {summary}"
    );
    assert!(
        turn_counter(&summary, "allocations_created") >= 2,
        "{summary}"
    );
}

#[test]
fn aioice_agents_connect_through_the_natgw_relay_when_the_sites_cannot_reach_each_other() {
    let sites = sites(SitesOptions::default());
    let _natgw = [start_natgw(&sites.a), start_natgw(&sites.b)];
    // The inet router drops everything between the two sites: only the rendezvous
    // (and its relay) is reachable from either.
    load_nft(
        &sites.inet,
        &format!(
            "table ip cut {{\n  chain forward {{\n    type filter hook forward priority \
             filter; policy accept;\n    ip saddr {SITE_A_WAN_ADDR} ip daddr \
             {SITE_B_WAN_ADDR} counter drop comment \"a_to_b\"\n    ip saddr {SITE_B_WAN_ADDR} \
             ip daddr {SITE_A_WAN_ADDR} counter drop comment \"b_to_a\"\n  }}\n}}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("cutting the sites apart: {}", e.chain()));
    let mut dropped_before = vec![0, 0];
    // aioice reaching the TURN server over UDP, then over TCP (the relay is UDP).
    for transport in ["udp", "tcp"] {
        let rendezvous = Rendezvous::start(&sites);
        let capture = Capture::start(&sites.inet, parse_udp);
        let ice = ice_between_a1_and_b1(&sites, transport);
        let seen = capture.finish();
        // At least one end of each selected pair is a relayed candidate on natgw's
        // relay.
        for pair in [&ice.a, &ice.b] {
            let relayed: Vec<SocketAddrV4> = [&pair["local"], &pair["remote"]]
                .into_iter()
                .filter(|c| c["type"] == "relay")
                .map(endpoint_of)
                .collect();
            assert!(
                !relayed.is_empty(),
                "{transport}: no relayed candidate in {pair}"
            );
            for r in relayed {
                assert_eq!(*r.ip(), RENDEZVOUS_ADDR, "{transport}: {pair}");
                assert!(
                    (RELAY_MIN..=RELAY_MAX).contains(&r.port()),
                    "{transport}: {pair}"
                );
            }
        }
        // The cut held, and ICE did try the direct way: the inet router dropped
        // checks in both directions.
        let dropped = nft_counters(&sites.inet, "cut", &["a_to_b", "b_to_a"])
            .unwrap_or_else(|e| panic!("{}", e.chain()));
        eprintln!("{transport}: dropped between the sites: {dropped:?}");
        assert!(
            dropped
                .iter()
                .zip(&dropped_before)
                .all(|(n, before)| n > before),
            "{transport}: {dropped:?}"
        );
        dropped_before = dropped;
        assert!(
            seen.iter()
                .any(|s| *s.src.ip() == SITE_A_WAN_ADDR && *s.dst.ip() == SITE_B_WAN_ADDR),
            "{transport}: a1 never tried b1's server-reflexive candidate"
        );
        let summary = rendezvous.stop();
        let engine = &summary["turn"]["engine"];
        eprintln!("{transport}: TURN: {engine}");
        // Each agent received the other's ten messages, and every one of them crossed
        // a relay socket: out of it towards the peer (`to_peer`) or into it from the
        // peer and on to the client (`to_client`), whichever end of the pair is
        // relayed.
        assert!(turn_counter(&summary, "to_peer_packets") >= 10, "{engine}");
        assert!(
            turn_counter(&summary, "to_client_packets") >= 10,
            "{engine}"
        );
    }
}
