//! The per-host resource rules of RFC 6888 through natgw on the veth testbed: the
//! limit on a host's external ports (REQ-4) and on its rate of new mappings (REQ-4c),
//! the hold-down of freed ports (REQ-8), what happens when no mapping can be made
//! (REQ-11: drop, a configurable ICMP code, no eviction), and one host opening 60,000
//! flows while another still gets its mappings. Asserted on the wire, in the maps
//! (`natgw mappings`, `natgw status`) and in the counters.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use natgw_conformance::packet::{self, icmp_type, Ipv4Header, PROTO_UDP};
use natgw_conformance::sock::Raw;
use natgw_integration_tests::{natgw_bin, recv, recv_nothing, udp, wait_for, Setup, WAIT};
use serde_json::Value;
use testbed::{
    Netns, GW_LAN_A_ADDR, GW_LAN_B_ADDR, GW_WAN_ADDR, LAN_A_ADDR, LAN_B_ADDR, WAN_A_ADDR,
};

/// wan-a's receiving endpoint.
const TO: SocketAddrV4 = SocketAddrV4::new(WAN_A_ADDR, 7000);

/// Sends one datagram from `lan` and returns the source wan-a saw, if it arrived.
fn through(lan: &UdpSocket, wan: &UdpSocket, payload: &[u8]) -> Option<SocketAddrV4> {
    lan.send_to(payload, TO).expect("send from the LAN host");
    loop {
        let (data, from) = recv_nothing(wan, Duration::from_millis(700))?;
        if data == payload {
            return Some(from);
        }
    }
}

/// The UDP mappings `natgw mappings` lists for internal host `host`.
fn udp_mappings_of(s: &Setup, host: Ipv4Addr) -> Vec<Value> {
    let prefix = format!("{host}:");
    s.natgw
        .mappings()
        .into_iter()
        .filter(|m| {
            m["protocol"] == "udp"
                && m["internal"]
                    .as_str()
                    .is_some_and(|i| i.starts_with(&prefix))
        })
        .collect()
}

/// A controller counter of `natgw status --json`.
fn controller_counter(s: &Setup, name: &str) -> u64 {
    s.natgw.status()["controller_counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("natgw status has no controller counter {name}"))
}

/// Waits until controller counter `name` is at least `n` (the daemon writes its
/// counters out every second).
fn controller_counter_reaches(s: &Setup, name: &str, n: u64) -> bool {
    wait_for(WAIT, || (controller_counter(s, name) >= n).then_some(())).is_some()
}

/// `natgw pcp map --server GW --json ARGS` from `ns`; the report's result code name
/// and the external endpoint, if granted.
fn pcp_map(ns: &Netns, server: Ipv4Addr, args: &[&str]) -> (String, Option<SocketAddrV4>) {
    pcp(ns, "map", server, args)
}

/// `natgw pcp ACTION --server GW --json ARGS` from `ns`, as [`pcp_map`].
fn pcp(
    ns: &Netns,
    action: &str,
    server: Ipv4Addr,
    args: &[&str],
) -> (String, Option<SocketAddrV4>) {
    let server = server.to_string();
    let out = ns
        .command(natgw_bin())
        .args(["pcp", action, "--server", &server, "--json"])
        .args(args)
        .output()
        .expect("running natgw pcp");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "natgw pcp map printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        report["result"].as_str().unwrap_or("?").to_owned(),
        report["external"].as_str().and_then(|e| e.parse().ok()),
    )
}

#[test]
fn a_host_gets_no_more_ports_than_its_limit_and_regains_them_as_they_expire() {
    // rfc6888 REQ-4, REQ-4a: a configurable limit per host; others unaffected; ports
    // come back to the host when its mappings expire.
    let s = Setup::new(&[
        "--max-ports-per-host",
        "8",
        "--host-mapping-rate",
        "0",
        // Long enough that the first round's mappings outlive its four refused
        // datagrams (each waited for in `through`), short enough to see them expire.
        "--udp-timeout",
        "6",
        "--port-hold-down",
        "0",
    ]);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let socks: Vec<UdpSocket> = (0..12)
        .map(|i| udp(&s.tb.lan[0].ns, LAN_A_ADDR, 45000 + 2 * i))
        .collect();
    let before = s.natgw.counter("drop_host_port_limit");
    let passed = socks
        .iter()
        .filter(|sock| through(sock, &wan, b"first round").is_some())
        .count();
    assert_eq!(passed, 8, "exactly the limit of lan-a's datagrams leave");
    assert_eq!(
        udp_mappings_of(&s, LAN_A_ADDR).len(),
        8,
        "8 mappings in NAT_FWD"
    );
    assert_eq!(s.natgw.counter("drop_host_port_limit") - before, 4);
    // Another host is not held back by lan-a's limit.
    let b = udp(&s.tb.lan[1].ns, LAN_B_ADDR, 45000);
    assert!(
        through(&b, &wan, b"lan-b").is_some(),
        "lan-b gets a mapping"
    );
    // Once lan-a's mappings expired, its ports are its own again.
    wait_for(Duration::from_secs(25), || {
        udp_mappings_of(&s, LAN_A_ADDR).is_empty().then_some(())
    })
    .expect("lan-a's mappings expire");
    let again = socks[4..]
        .iter()
        .filter(|sock| through(sock, &wan, b"second round").is_some())
        .count();
    assert_eq!(again, 8, "the expired mappings no longer count");
}

#[test]
fn explicit_mappings_count_against_the_limit() {
    // rfc6888 REQ-4: a PCP mapping takes one of the host's ports, and a MAP beyond the
    // limit is refused with USER_EX_QUOTA (RFC 6887 §7.4).
    let s = Setup::new(&["--max-ports-per-host", "2", "--host-mapping-rate", "0"]);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let nonce = "00112233445566778899aabb";
    let (result, granted) = pcp_map(
        &s.tb.lan[0].ns,
        GW_LAN_A_ADDR,
        &["--internal-port", "5000", "--nonce", nonce],
    );
    assert_eq!(result, "SUCCESS");
    assert!(granted.is_some());
    let first = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 45100);
    let second = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 45102);
    assert!(through(&first, &wan, b"one").is_some(), "the second port");
    assert!(
        through(&second, &wan, b"two").is_none(),
        "a third port is over the limit"
    );
    let (result, granted) = pcp_map(&s.tb.lan[0].ns, GW_LAN_A_ADDR, &["--internal-port", "5002"]);
    assert_eq!(result, "USER_EX_QUOTA", "a MAP over the limit is refused");
    assert_eq!(granted, None);
    // Deleting the explicit mapping gives its port back.
    let (result, _) = pcp(
        &s.tb.lan[0].ns,
        "delete",
        GW_LAN_A_ADDR,
        &["--internal-port", "5000", "--nonce", nonce],
    );
    assert_eq!(result, "SUCCESS");
    assert!(
        through(&second, &wan, b"two again").is_some(),
        "the deleted mapping's port is free for the host again"
    );
}

#[test]
fn new_mappings_are_rate_limited_per_host() {
    // rfc6888 REQ-4c
    let s = Setup::new(&["--host-mapping-rate", "10", "--host-mapping-burst", "10"]);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let before = s.natgw.counter("drop_host_rate_limited");
    let socks: Vec<UdpSocket> = (0..40)
        .map(|i| udp(&s.tb.lan[0].ns, LAN_A_ADDR, 46000 + 2 * i))
        .collect();
    for sock in &socks {
        sock.send_to(b"burst", TO).expect("send");
    }
    let mut arrived = 0;
    while recv_nothing(&wan, Duration::from_millis(700)).is_some() {
        arrived += 1;
    }
    let limited = s.natgw.counter("drop_host_rate_limited") - before;
    assert!((10..=12).contains(&arrived), "{arrived} of 40 arrived");
    assert_eq!(
        arrived + limited as usize,
        40,
        "every refused packet is counted"
    );
    assert_eq!(udp_mappings_of(&s, LAN_A_ADDR).len(), arrived);
    let b = udp(&s.tb.lan[1].ns, LAN_B_ADDR, 46000);
    assert!(
        through(&b, &wan, b"lan-b").is_some(),
        "lan-b has its own bucket"
    );
}

#[test]
fn a_freed_port_is_held_from_other_hosts_but_not_from_its_own() {
    // rfc6888 REQ-8, on the traffic path and for PCP
    let s = Setup::new(&[
        "--port-range",
        "20000-20000",
        "--udp-timeout",
        "2",
        "--port-hold-down",
        "30",
    ]);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let a = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 20000);
    let b = udp(&s.tb.lan[1].ns, LAN_B_ADDR, 20000);
    let ext = SocketAddrV4::new(GW_WAN_ADDR, 20000);
    assert_eq!(through(&a, &wan, b"a"), Some(ext));
    wait_for(Duration::from_secs(25), || {
        udp_mappings_of(&s, LAN_A_ADDR).is_empty().then_some(())
    })
    .expect("lan-a's mapping expires");
    assert_eq!(s.natgw.status()["held_ports"], 1, "the port is held");
    let before = s.natgw.counter("drop_port_held");
    assert_eq!(through(&b, &wan, b"b"), None, "lan-b may not have it");
    assert_eq!(s.natgw.counter("drop_port_held") - before, 1);
    let (result, granted) = pcp_map(
        &s.tb.lan[1].ns,
        GW_LAN_B_ADDR,
        &[
            "--internal-port",
            "20000",
            "--suggest",
            "192.0.2.1:20000",
            "--prefer-failure",
        ],
    );
    assert_eq!(
        (result.as_str(), granted),
        ("CANNOT_PROVIDE_EXTERNAL", None),
        "nor through PCP"
    );
    assert_eq!(through(&a, &wan, b"a again"), Some(ext), "lan-a may");
    assert_eq!(udp_mappings_of(&s, LAN_A_ADDR).len(), 1);
}

#[test]
fn exhaustion_refuses_new_mappings_and_evicts_none() {
    // rfc6888 REQ-11a, REQ-11d; rfc4787 REQ-3
    let s = Setup::new(&["--port-range", "20000-20007"]);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    // lan-a from 20000-20003, lan-b from 20004-20007: every port, both parities.
    let mut held = Vec::new();
    for i in 0..8u16 {
        let (ns, addr) = if i < 4 {
            (&s.tb.lan[0].ns, LAN_A_ADDR)
        } else {
            (&s.tb.lan[1].ns, LAN_B_ADDR)
        };
        let sock = udp(ns, addr, 20000 + i);
        let ext = through(&sock, &wan, b"fill").expect("a port is free");
        held.push((sock, ext));
    }
    // The range is full: 8 more attempts from both hosts, odd ports and even.
    let before = s.natgw.counter("drop_ports_exhausted");
    for i in 0..4u16 {
        for (ns, addr) in [(&s.tb.lan[0].ns, LAN_A_ADDR), (&s.tb.lan[1].ns, LAN_B_ADDR)] {
            let sock = udp(ns, addr, 21001 + 2 * i);
            assert_eq!(through(&sock, &wan, b"no room"), None, "no port left");
        }
    }
    assert_eq!(s.natgw.counter("drop_ports_exhausted") - before, 8);
    // Every old mapping is still in the table and still translates both ways.
    let listed = s.natgw.mappings();
    assert_eq!(listed.len(), 8, "{listed:?}");
    for (sock, ext) in &held {
        let local = sock.local_addr().expect("local address");
        assert!(
            listed
                .iter()
                .any(|m| m["internal"] == local.to_string() && m["external"] == ext.to_string()),
            "{local} -> {ext} still listed"
        );
        wan.send_to(b"still there", *ext)
            .expect("send to the mapping");
        let (data, from) = recv(sock).expect("the old mapping still translates inbound");
        assert_eq!((data.as_slice(), from), (&b"still there"[..], TO));
        assert_eq!(through(sock, &wan, b"and outbound"), Some(*ext));
    }
}

/// Fills `20000-20001` from lan-a and sends one datagram from lan-b; the ICMP error
/// lan-b receives about it, as (type, code, source).
fn no_mapping_error(extra: &[&str]) -> ((u8, u8, Ipv4Addr), Setup) {
    let mut args = vec!["--port-range", "20000-20001"];
    args.extend_from_slice(extra);
    let s = Setup::new(&args);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let a0 = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 20000);
    let a1 = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 20001);
    assert!(through(&a0, &wan, b"a0").is_some() && through(&a1, &wan, b"a1").is_some());
    let b = udp(&s.tb.lan[1].ns, LAN_B_ADDR, 20000);
    let raw = Raw::icmp(&s.tb.lan[1].ns).expect("raw ICMP socket on lan-b");
    b.send_to(b"no room", TO).expect("send");
    let got = raw
        .recv_matching(WAIT, |g| {
            g.icmp().is_some_and(|m| {
                m.kind() == icmp_type::DEST_UNREACHABLE
                    && m.checksum_ok()
                    && m.quoted().is_some_and(|q| q.ports() == Some((20000, 7000)))
            })
        })
        .expect("lan-b receives an ICMP error about its datagram");
    let m = got.icmp().expect("ICMP");
    ((m.kind(), m.code(), got.ip().src()), s)
}

#[test]
fn no_mapping_answers_admin_prohibited_by_default() {
    // rfc5508 REQ-8: code 13 unless configured otherwise
    let (error, s) = no_mapping_error(&[]);
    assert_eq!(error, (3, 13, GW_LAN_B_ADDR));
    assert!(controller_counter_reaches(
        &s,
        "icmp_sent_admin_prohibited",
        1
    ));
}

#[test]
fn no_mapping_answers_host_unreachable_when_configured() {
    // rfc6888 REQ-11b: code 1
    let (error, s) = no_mapping_error(&["--no-mapping-icmp", "host-unreachable"]);
    assert_eq!(error, (3, 1, GW_LAN_B_ADDR));
    assert!(controller_counter_reaches(
        &s,
        "icmp_sent_host_unreachable",
        1
    ));
    assert_eq!(controller_counter(&s, "icmp_sent_admin_prohibited"), 0);
}

/// Flows lan-a opens in [`one_host_opening_60k_flows_leaves_room_for_others`].
const FLOWS: u16 = 60_000;

#[test]
fn one_host_opening_60k_flows_leaves_room_for_others() {
    // rfc6888 REQ-4 with the default limit (16384 per protocol); the rate limit is
    // off so that the port limit is what stops lan-a.
    let s = Setup::new(&["--host-mapping-rate", "0"]);
    let limit = s.natgw.status()["config"]["limits"]["ports_per_host"]
        .as_u64()
        .expect("natgw status shows the port limit");
    assert_eq!(limit, 16_384, "the default");
    // 60,000 datagrams from as many source ports, crafted on a raw socket (a socket
    // per port would take as many file descriptors), paced so the veths drop none.
    let sender = Raw::sender(&s.tb.lan[0].ns).expect("raw socket on lan-a");
    let started = Instant::now();
    for i in 0..FLOWS {
        let sport = 2000 + i;
        let datagram = packet::udp(LAN_A_ADDR, WAN_A_ADDR, sport, 9, b"flood");
        let mut header = Ipv4Header::new(LAN_A_ADDR, WAN_A_ADDR, PROTO_UDP);
        header.df = true;
        sender
            .send(&header.packet(&datagram))
            .expect("sending from lan-a");
        if i % 256 == 255 {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "sending is stuck"
        );
    }
    let refused = wait_for(WAIT, || {
        let refused = s.natgw.counter("drop_host_port_limit");
        (refused >= u64::from(FLOWS) - limit).then_some(refused)
    })
    .unwrap_or_else(|| {
        panic!(
            "lan-a's datagrams beyond its limit are counted as refused: {}",
            s.natgw.counter("drop_host_port_limit")
        )
    });
    assert_eq!(refused, u64::from(FLOWS) - limit);
    let mine = udp_mappings_of(&s, LAN_A_ADDR);
    assert_eq!(mine.len() as u64, limit, "lan-a holds exactly its limit");
    // lan-b still gets its mappings: on the wire, both ways, and in the table.
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    for port in [40000u16, 40002, 40004] {
        let b = udp(&s.tb.lan[1].ns, LAN_B_ADDR, port);
        let ext = through(&b, &wan, b"lan-b").expect("lan-b's datagram leaves");
        assert_eq!(*ext.ip(), GW_WAN_ADDR);
        wan.send_to(b"reply", ext).expect("reply");
        assert!(recv(&b).is_some(), "the reply reaches lan-b");
        assert!(
            s.natgw
                .mapping_of("udp", SocketAddrV4::new(LAN_B_ADDR, port))
                .is_some(),
            "lan-b's mapping is listed"
        );
    }
}
