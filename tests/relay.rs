//! `natgw punch` falling back to a TURN relay (issue #14) on the two-site testbed
//! ([`testbed::Sites`]): peers behind two natgw gateways, `natgw rendezvous` with its
//! TURN relay (or coturn's `turnserver`) on the internet.
//!
//! - The inet router drops everything between the two sites' WAN addresses (an
//!   nftables rule in its forward hook) but not to the rendezvous: no direct path
//!   exists, both peers report `relayed` through their allocations, the relay path
//!   verified both ways, and the relay's own counters account for what the peers
//!   saw; once over UDP to the server, once over TCP (`--turn-tcp`).
//! - A site whose firewall drops all UDP (in the inet router): its peer talks TCP to
//!   the rendezvous (`--rendezvous-tcp`) and to the relay (`--turn-tcp`), the other
//!   peer UDP; both relayed.
//! - `--relay-only` between sites where a direct path works: relayed anyway, no
//!   direct probe. A wrong TURN password: a note and a direct path, or with
//!   `--relay-only` a failure naming the refusal.
//! - Upgrade: blocked until the relay works, then the block is lifted during
//!   `--upgrade-wait`: both peers report `upgraded` with a direct method, the relay
//!   still described.
//! - coturn's `turnserver` as the relay, with a static user and with
//!   `use-auth-secret`: both peers relayed through it.

use std::io::Write as _;
use std::net::SocketAddrV4;
use std::process::{Child, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use natgw_integration_tests::{natgw_bin, require_root, Natgw};
use serde_json::Value;
use testbed::sites::{RENDEZVOUS_ADDR, SITE_LAN_IF, SITE_WAN_IF};
use testbed::{Netns, Site, Sites, SitesOptions};

/// Where the rendezvous listens (UDP and TCP), TURN on the same port.
const RENDEZVOUS_PORT: u16 = 7000;
/// Where coturn listens.
const COTURN_PORT: u16 = 3478;
/// Relay ports of both servers.
const RELAY_PORTS: (u16, u16) = (50_000, 50_099);
/// `--timeout` of the punches: the fallback to the relay comes this long after the
/// introduction.
const TIMEOUT: &str = "2";
/// How long a punch process may take in all before the test kills it.
const PROCESS_LIMIT: Duration = Duration::from_secs(40);
/// The nftables table in the inet router that cuts the sites off from each other.
const BLOCK_TABLE: &str = "relay14_block";

fn sites() -> Sites {
    require_root();
    Sites::new(SitesOptions::default()).expect("building the two-site testbed")
}

/// natgw on both sites' gateways, one at a time (the verifier is slow on a small
/// machine), a second try for a slow start.
fn start_natgw(sites: &[&Site]) -> Vec<Natgw> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    sites
        .iter()
        .map(|site| {
            let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
            let ifaces = ["--wan", SITE_WAN_IF, "--lan", SITE_LAN_IF];
            Natgw::try_start_on(&site.gateway, &ifaces, &[])
                .or_else(|_| Natgw::try_start_on(&site.gateway, &ifaces, &[]))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

/// Drops everything between the two sites' WAN addresses in the inet router.
fn block_sites(sites: &Sites) {
    let (a, b) = (sites.a.wan_addr, sites.b.wan_addr);
    let ruleset = format!(
        "table inet {BLOCK_TABLE} {{\n  chain forward {{\n    type filter hook forward \
         priority 0; policy accept;\n    ip saddr {a} ip daddr {b} drop\n    ip saddr {b} \
         ip daddr {a} drop\n  }}\n}}\n"
    );
    nft(&sites.inet, &["-f", "-"], Some(&ruleset));
}

/// Drops all UDP to and from site B's WAN address in the inet router (a firewall
/// that lets only TCP out), besides [`block_sites`].
fn block_udp_of_site_b(sites: &Sites) {
    let b = sites.b.wan_addr;
    let ruleset = format!(
        "table inet {BLOCK_TABLE} {{\n  chain forward {{\n    type filter hook forward \
         priority 0; policy accept;\n    ip saddr {b} meta l4proto udp drop\n    ip daddr \
         {b} meta l4proto udp drop\n  }}\n}}\n"
    );
    nft(&sites.inet, &["-f", "-"], Some(&ruleset));
}

/// Lifts [`block_sites`].
fn unblock_sites(inet: &Netns) {
    nft(inet, &["delete", "table", "inet", BLOCK_TABLE], None);
}

/// `nft ARGS` in `ns`, with `stdin` as its input.
fn nft(ns: &Netns, args: &[&str], stdin: Option<&str>) {
    let mut child = ns
        .command("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running nft");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("writing the rule set");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------
// The servers.
// ---------------------------------------------------------------------------------

/// `natgw rendezvous --json` with (or without) TURN
/// ([`natgw_integration_tests::Rendezvous`]).
struct Rendezvous(natgw_integration_tests::Rendezvous);

impl Rendezvous {
    fn start(sites: &Sites, extra: &[&str]) -> Self {
        Self(natgw_integration_tests::Rendezvous::start(
            &sites.rendezvous.ns,
            SocketAddrV4::new(RENDEZVOUS_ADDR, RENDEZVOUS_PORT),
            extra,
            false,
        ))
    }

    /// With TURN: static user `alice:wonderland`, the relay ports.
    fn with_turn(sites: &Sites) -> Self {
        let ports = format!("{}-{}", RELAY_PORTS.0, RELAY_PORTS.1);
        Self::start(
            sites,
            &["--turn-user", "alice:wonderland", "--relay-ports", &ports],
        )
    }

    /// Stops it and returns the TURN engine's counters.
    fn stop_turn(self) -> Value {
        self.0.stop()["turn"]["engine"].clone()
    }
}

/// coturn's `turnserver` in the rendezvous namespace, foreground, on the rendezvous
/// address only, with its configuration in a temporary directory; killed on drop.
struct Coturn {
    child: Option<Child>,
    dir: std::path::PathBuf,
}

impl Coturn {
    fn start(ns: &Netns, auth: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "relay14-coturn-{}-{}",
            std::process::id(),
            ns.name()
        ));
        std::fs::create_dir_all(&dir).expect("coturn directory");
        let config = format!(
            "listening-ip={RENDEZVOUS_ADDR}\nrelay-ip={RENDEZVOUS_ADDR}\n\
             listening-port={COTURN_PORT}\nmin-port={}\nmax-port={}\nrealm=natgw\n\
             fingerprint\n{auth}\nno-cli\nno-tls\nno-dtls\nno-multicast-peers\n\
             log-file=stdout\nsimple-log\npidfile={}\nuserdb={}\n",
            RELAY_PORTS.0,
            RELAY_PORTS.1,
            dir.join("turnserver.pid").display(),
            dir.join("turndb").display(),
        );
        let path = dir.join("turnserver.conf");
        std::fs::write(&path, config).expect("writing turnserver.conf");
        let child = ns
            .command("turnserver")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting turnserver (Debian coturn)");
        let coturn = Self {
            child: Some(child),
            dir,
        };
        // Listening once a TCP connection to its port succeeds.
        let up = (0..50).any(|_| {
            let ok = ns.run(|| {
                std::net::TcpStream::connect_timeout(
                    &SocketAddrV4::new(RENDEZVOUS_ADDR, COTURN_PORT).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
            });
            if !ok {
                std::thread::sleep(Duration::from_millis(100));
            }
            ok
        });
        assert!(up, "turnserver did not start listening");
        coturn
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------
// `natgw punch`.
// ---------------------------------------------------------------------------------

/// One `natgw punch --json`.
#[derive(Debug)]
struct Punch {
    success: bool,
    report: Value,
    stderr: String,
}

impl Punch {
    fn ok(&self) -> bool {
        self.success && self.report["ok"] == true
    }

    fn method(&self) -> &str {
        self.report["method"].as_str().unwrap_or("")
    }

    fn relay(&self, field: &str) -> SocketAddrV4 {
        self.report["relay"][field]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no relay.{field} in {:#}", self.report))
    }

    /// The relay path as the prober reported it.
    fn relay_path(&self) -> Value {
        self.report["paths"]
            .as_array()
            .and_then(|paths| paths.iter().find(|p| p["kind"] == "relay").cloned())
            .unwrap_or_else(|| panic!("no relay path in {:#}", self.report))
    }
}

fn spawn_punch(ns: &Netns, id: &str, peer: &str, extra: &[&str]) -> Child {
    let timeout: &[&str] = if extra.contains(&"--timeout") {
        &[]
    } else {
        &["--timeout", TIMEOUT]
    };
    ns.command(natgw_bin())
        .args(["punch", "--json", "--rendezvous"])
        .arg(SocketAddrV4::new(RENDEZVOUS_ADDR, RENDEZVOUS_PORT).to_string())
        .args(["--id", id, "--peer", peer])
        .args(timeout)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting natgw punch")
}

fn wait_punch(mut child: Child, started: Instant) -> Punch {
    while child.try_wait().expect("waiting for natgw punch").is_none() {
        if started.elapsed() > PROCESS_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("natgw punch still running after {PROCESS_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("natgw punch output");
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

/// a1 and b1 punch with the same extra arguments; `during` runs while they do.
fn punch_pair(sites: &Sites, tag: &str, extra: &[&str], during: impl FnOnce()) -> (Punch, Punch) {
    let (a1, b1) = (&sites.a.hosts[0], &sites.b.hosts[0]);
    let (ida, idb) = (format!("a1-{tag}"), format!("b1-{tag}"));
    let started = Instant::now();
    let a = spawn_punch(&a1.ns, &ida, &idb, extra);
    let b = spawn_punch(&b1.ns, &idb, &ida, extra);
    during();
    (wait_punch(a, started), wait_punch(b, started))
}

fn assert_both_ok(what: &str, a: &Punch, b: &Punch) {
    assert!(
        a.ok() && b.ok(),
        "{what}: failed\nfirst: {:#}\n{}\nsecond: {:#}\n{}",
        a.report,
        a.stderr,
        b.report,
        b.stderr
    );
}

/// Both relayed through `server`, each to the other's relayed address, the relay
/// path verified both ways (our probes acknowledged, the peer's received).
fn assert_relayed(what: &str, a: &Punch, b: &Punch, server: SocketAddrV4, transport: &str) {
    assert_both_ok(what, a, b);
    for (p, other) in [(a, b), (b, a)] {
        assert_eq!(p.method(), "relayed", "{what}: {:#}", p.report);
        assert_eq!(p.report["upgraded"], false, "{what}");
        assert_eq!(p.relay("server"), server, "{what}");
        assert_eq!(p.report["relay"]["transport"], transport, "{what}");
        assert_eq!(p.relay("peer_relayed"), other.relay("relayed"), "{what}");
        assert_eq!(p.relay("remote"), other.relay("relayed"), "{what}");
        assert_eq!(*p.relay("relayed").ip(), RENDEZVOUS_ADDR, "{what}");
        let port = p.relay("relayed").port();
        assert!(
            (RELAY_PORTS.0..=RELAY_PORTS.1).contains(&port),
            "{what}: relay port {port}"
        );
        let rtt = p.report["relay"]["rtt_ms"].as_f64().unwrap_or(-1.0);
        assert!(rtt > 0.0 && rtt < 1000.0, "{what}: relay rtt {rtt}");
        assert_eq!(p.report["rtt_ms"].as_f64(), Some(rtt), "{what}");
        let path = p.relay_path();
        assert!(
            path["verified"] == true
                && path["acks"].as_u64() > Some(0)
                && path["probes_received"].as_u64() > Some(0),
            "{what}: relay path {path:#}"
        );
    }
}

/// Sum of a relay-path field over both peers.
fn relay_sum(a: &Punch, b: &Punch, field: &str) -> u64 {
    [a, b]
        .iter()
        .map(|p| p.relay_path()[field].as_u64().unwrap_or(0))
        .sum()
}

fn counter(c: &Value, name: &str) -> u64 {
    c[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {c}"))
}

/// The relay's counters account for the peers' traffic: every probe the peers sent
/// on the relay path went to a peer (their acks too), and every probe or ack they
/// received there came to a client; both allocations were made and deleted.
fn assert_counters_match(what: &str, c: &Value, a: &Punch, b: &Punch) {
    eprintln!("{what}: TURN counters {c}");
    assert_eq!(counter(c, "allocations_created"), 2, "{what}: {c}");
    assert_eq!(counter(c, "allocations_deleted"), 2, "{what}: {c}");
    assert_eq!(counter(c, "allocations_active"), 0, "{what}: {c}");
    let sent = relay_sum(a, b, "probes_sent");
    let received = relay_sum(a, b, "probes_received") + relay_sum(a, b, "acks");
    let (to_peer, to_client) = (
        counter(c, "to_peer_packets"),
        counter(c, "to_client_packets"),
    );
    assert!(
        to_peer >= sent,
        "{what}: {to_peer} to peers < {sent} probes sent"
    );
    assert!(
        to_client >= received,
        "{what}: {to_client} to clients < {received} probes and acks received"
    );
    // Relay to relay: every datagram a relay sent arrived at the other one.
    assert!(to_client <= to_peer, "{what}: {c}");
    assert!(to_client > 0, "{what}: {c}");
}

// ---------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------

#[test]
fn blocked_sites_fall_back_to_the_relay_over_udp_and_tcp() {
    let sites = sites();
    let _natgw = start_natgw(&[&sites.a, &sites.b]);
    block_sites(&sites);
    let server = SocketAddrV4::new(RENDEZVOUS_ADDR, RENDEZVOUS_PORT);
    for (tag, transport, extra) in [
        (
            "udp",
            "udp",
            &["--turn-user", "alice:wonderland", "--upgrade-wait", "1"][..],
        ),
        (
            "tcp",
            "tcp",
            &[
                "--turn-user",
                "alice:wonderland",
                "--turn-tcp",
                "--upgrade-wait",
                "1",
            ][..],
        ),
    ] {
        let rendezvous = Rendezvous::with_turn(&sites);
        let (a, b) = punch_pair(&sites, tag, extra, || {});
        let counters = rendezvous.stop_turn();
        assert_relayed(tag, &a, &b, server, transport);
        // No direct path was verified (the block held).
        for p in [&a, &b] {
            let direct_verified = p.report["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|path| path["kind"] != "relay" && path["verified"] == true);
            assert!(!direct_verified, "{tag}: {:#}", p.report);
            assert!(
                p.report["notes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n.as_str().is_some_and(|n| n.contains("--upgrade-wait"))),
                "{tag}: {:#}",
                p.report
            );
        }
        assert_counters_match(tag, &counters, &a, &b);
    }
}

#[test]
fn a_site_that_drops_udp_gets_out_over_tcp() {
    // b1 reaches the rendezvous and the relay over TCP only (--rendezvous-tcp,
    // --turn-tcp); a1 uses UDP. Nothing direct can work: both relayed.
    let sites = sites();
    let _natgw = start_natgw(&[&sites.a, &sites.b]);
    block_sites(&sites);
    block_udp_of_site_b(&sites);
    let rendezvous = Rendezvous::with_turn(&sites);
    let (a1, b1) = (&sites.a.hosts[0], &sites.b.hosts[0]);
    let started = Instant::now();
    // b1's STUN over UDP goes unanswered for 2 s before it registers: a1 waits
    // longer than that for it.
    let common = [
        "--turn-user",
        "alice:wonderland",
        "--upgrade-wait",
        "0",
        "--timeout",
        "5",
    ];
    let a = spawn_punch(&a1.ns, "a1-fw", "b1-fw", &common);
    let mut b_args = common.to_vec();
    b_args.extend(["--rendezvous-tcp", "--turn-tcp"]);
    let b = spawn_punch(&b1.ns, "b1-fw", "a1-fw", &b_args);
    let (a, b) = (wait_punch(a, started), wait_punch(b, started));
    let counters = rendezvous.stop_turn();
    assert_both_ok("udp-dropping site", &a, &b);
    for (p, other) in [(&a, &b), (&b, &a)] {
        assert_eq!(p.method(), "relayed", "{:#}", p.report);
        assert_eq!(p.relay("peer_relayed"), other.relay("relayed"));
        assert_eq!(p.relay_path()["verified"], true, "{:#}", p.report);
    }
    assert_eq!(a.report["relay"]["transport"], "udp");
    assert_eq!(b.report["relay"]["transport"], "tcp");
    // b1's STUN over UDP went unanswered: it says so and goes on.
    assert!(b.report["stun"]["error"].is_string(), "{:#}", b.report);
    assert_counters_match("udp-dropping site", &counters, &a, &b);
}

#[test]
fn relay_only_and_upgrade_to_a_direct_path() {
    let sites = sites();
    let _natgw = start_natgw(&[&sites.a, &sites.b]);
    let server = SocketAddrV4::new(RENDEZVOUS_ADDR, RENDEZVOUS_PORT);

    // --relay-only where a direct path works: relayed, and no direct path probed.
    let rendezvous = Rendezvous::with_turn(&sites);
    let (a, b) = punch_pair(
        &sites,
        "only",
        &["--turn-user", "alice:wonderland", "--relay-only"],
        || {},
    );
    let counters = rendezvous.stop_turn();
    assert_relayed("relay-only", &a, &b, server, "udp");
    for p in [&a, &b] {
        let paths = p.report["paths"].as_array().expect("paths");
        assert!(
            paths.iter().all(|path| path["kind"] == "relay"),
            "relay-only probed a direct path: {:#}",
            p.report
        );
    }
    assert_counters_match("relay-only", &counters, &a, &b);

    // A wrong TURN password: the punch says why and goes on directly; with
    // --relay-only it fails with the reason.
    let rendezvous = Rendezvous::with_turn(&sites);
    let (a, b) = punch_pair(
        &sites,
        "wrongpw",
        &["--turn-user", "alice:looking-glass"],
        || {},
    );
    let counters = rendezvous.stop_turn();
    assert_both_ok("wrong TURN password", &a, &b);
    for p in [&a, &b] {
        assert_eq!(p.method(), "direct-public", "{:#}", p.report);
        assert_eq!(p.report["relay"], Value::Null);
        let notes = p.report["notes"].to_string();
        assert!(
            notes.contains("no TURN relay") && notes.contains("refused the credentials"),
            "{notes}"
        );
    }
    assert_eq!(counter(&counters, "allocations_created"), 0, "{counters}");
    assert_eq!(counter(&counters, "auth_failures"), 2, "{counters}");
    let rendezvous = Rendezvous::with_turn(&sites);
    let (a, _b) = punch_pair(
        &sites,
        "wrongpw-only",
        &["--turn-user", "alice:looking-glass", "--relay-only"],
        || {},
    );
    drop(rendezvous);
    assert!(!a.success && a.report["ok"] == false, "{:#}", a.report);
    let error = a.report["error"].as_str().unwrap_or("");
    assert!(error.contains("refused the credentials"), "{error}");

    // Blocked until the relay works, then unblocked during --upgrade-wait.
    block_sites(&sites);
    let rendezvous = Rendezvous::with_turn(&sites);
    let (a, b) = punch_pair(
        &sites,
        "upgrade",
        &["--turn-user", "alice:wonderland", "--upgrade-wait", "10"],
        || {
            // Introduction within a second, fallback 2 s later, the relay verified
            // and measured within another second or so.
            std::thread::sleep(Duration::from_secs(5));
            unblock_sites(&sites.inet);
        },
    );
    let _ = rendezvous.stop_turn();
    assert_both_ok("upgrade", &a, &b);
    for (p, other) in [(&a, &b), (&b, &a)] {
        assert_eq!(p.report["upgraded"], true, "{:#}", p.report);
        assert_eq!(p.method(), "direct-public", "{:#}", p.report);
        assert_eq!(p.report["remote"], other.report["public"], "{:#}", p.report);
        assert_eq!(p.relay("peer_relayed"), other.relay("relayed"));
        assert!(p.report["relay"]["rtt_ms"].as_f64() > Some(0.0));
        assert!(p.report["rtt_ms"].as_f64() > Some(0.0));
        assert_eq!(p.relay_path()["verified"], true, "{:#}", p.report);
    }
}

#[test]
fn punch_relays_through_coturn() {
    let sites = sites();
    let _natgw = start_natgw(&[&sites.a, &sites.b]);
    block_sites(&sites);
    let coturn_addr = SocketAddrV4::new(RENDEZVOUS_ADDR, COTURN_PORT);
    let turn = coturn_addr.to_string();
    for (tag, auth, extra) in [
        (
            "static",
            "lt-cred-mech\nuser=alice:wonderland",
            vec!["--turn", turn.as_str(), "--turn-user", "alice:wonderland"],
        ),
        (
            "secret",
            "use-auth-secret\nstatic-auth-secret=s3cr3t",
            vec!["--turn", turn.as_str(), "--turn-secret", "s3cr3t"],
        ),
        (
            "tcp",
            "use-auth-secret\nstatic-auth-secret=s3cr3t",
            vec![
                "--turn",
                turn.as_str(),
                "--turn-secret",
                "s3cr3t",
                "--turn-tcp",
            ],
        ),
    ] {
        let coturn = Coturn::start(&sites.rendezvous.ns, auth);
        // The rendezvous only introduces here; the relay is coturn.
        let rendezvous = Rendezvous::start(&sites, &[]);
        let mut args = extra.clone();
        args.extend(["--upgrade-wait", "0"]);
        let (a, b) = punch_pair(&sites, tag, &args, || {});
        drop(rendezvous);
        drop(coturn);
        let transport = if tag == "tcp" { "tcp" } else { "udp" };
        eprintln!(
            "coturn {tag}: relayed in {} / {} ms, rtt {} ms",
            a.report["total_ms"], b.report["total_ms"], a.report["rtt_ms"]
        );
        assert_relayed(tag, &a, &b, coturn_addr, transport);
    }
}
