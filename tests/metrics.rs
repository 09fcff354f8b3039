//! The Prometheus endpoint end to end: natgw serves `GET /metrics` on its LAN
//! address, a LAN host scrapes it after real traffic, a PCP and a NAT-PMP request,
//! and the values moved; Prometheus's own `promtool check metrics` (Debian's
//! `prometheus`) accepts the document; an address on the WAN side is refused at
//! start unless allowed.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddrV4, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use natgw_integration_tests::pcp_bytes::{
    natpmp_map_request, pcp_map_request, IPPROTO_UDP, PCP_PORT,
};
use natgw_integration_tests::{
    command_output, recv, require_root, run_natgw, udp, wait_for, Natgw, Setup, WAIT,
};
use testbed::{Netns, Testbed, GW_LAN_A_ADDR, GW_WAN_ADDR, LAN_A_ADDR, WAN_A_ADDR};

/// The port the tests serve metrics on.
const PORT: u16 = 9100;

/// One HTTP exchange from `ns` with `to`: (status code, body).
fn http(ns: &Netns, to: SocketAddrV4, request: &str) -> (u16, String) {
    let mut conn = ns
        .run(|| TcpStream::connect_timeout(&to.into(), WAIT))
        .unwrap_or_else(|e| panic!("connecting to the metrics endpoint {to}: {e}"));
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    conn.write_all(request.as_bytes())
        .expect("send the request");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).expect("read the answer");
    let answer = String::from_utf8(answer).expect("a UTF-8 answer");
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {answer:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    if status == 200 {
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
    }
    (status, body.to_owned())
}

/// `GET /metrics` from `ns`; the document.
fn scrape(ns: &Netns, to: SocketAddrV4) -> String {
    let (status, body) = http(ns, to, "GET /metrics HTTP/1.1\r\nHost: natgw\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample written exactly `series` (name and labels as natgw
/// writes them).
fn value(doc: &str, series: &str) -> Option<f64> {
    doc.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// [`value`], which must exist.
fn must(doc: &str, series: &str) -> f64 {
    value(doc, series).unwrap_or_else(|| panic!("no {series} in\n{doc}"))
}

/// Runs `promtool check metrics` on `doc`; (success, what it printed).
fn promtool(doc: &str) -> (bool, String) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool not found: install it with `apt-get install prometheus` (`cargo xtask \
             test` does)",
        );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(doc.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Sends `request` from lan-a to the PCP server and waits for its answer.
fn pcp_exchange(s: &Setup, request: &[u8]) -> Vec<u8> {
    let sock = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 0);
    sock.send_to(request, SocketAddrV4::new(GW_LAN_A_ADDR, PCP_PORT))
        .expect("send");
    recv(&sock)
        .unwrap_or_else(|| panic!("no PCP answer\n{}", s.natgw.log()))
        .0
}

#[test]
fn a_lan_host_scrapes_traffic_mappings_and_port_mapping_and_promtool_accepts_it() {
    let listen = format!("{GW_LAN_A_ADDR}:{PORT}");
    let s = Setup::new(&["--metrics", &listen]);
    let to = SocketAddrV4::new(GW_LAN_A_ADDR, PORT);
    let lan = &s.tb.lan[0].ns;

    // UDP through the NAT: a mapping of origin traffic, translated packets.
    let server = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let client = udp(lan, LAN_A_ADDR, 40000);
    for _ in 0..3 {
        client
            .send_to(b"hello", SocketAddrV4::new(WAN_A_ADDR, 7000))
            .expect("send");
        let (_, from) = recv(&server).expect("the datagram went through");
        assert_eq!(*from.ip(), GW_WAN_ADDR, "translated");
    }
    // A PCP MAP and a NAT-PMP mapping request.
    let pcp = pcp_exchange(&s, &pcp_map_request(LAN_A_ADDR, IPPROTO_UDP, 41000, 600));
    assert_eq!(pcp[3], 0, "PCP SUCCESS: {pcp:?}");
    let natpmp = pcp_exchange(&s, &natpmp_map_request(IPPROTO_UDP, 42000, 600));
    assert_eq!(&natpmp[2..4], &[0, 0], "NAT-PMP success: {natpmp:?}");

    // The mapping gauges are as old as the last GC pass (every second).
    let traffic = "natgw_mappings{proto=\"udp\",origin=\"traffic\"}";
    let doc = wait_for(Duration::from_secs(10), || {
        let doc = scrape(lan, to);
        let pcp = "natgw_mappings{proto=\"udp\",origin=\"pcp\"}";
        (value(&doc, traffic)? >= 1.0 && value(&doc, pcp)? >= 1.0).then_some(doc)
    })
    .unwrap_or_else(|| {
        panic!(
            "the mapping gauges never counted the mappings:\n{}\n{}",
            scrape(lan, to),
            s.natgw.log()
        )
    });
    assert!(must(&doc, "natgw_mappings{proto=\"udp\",origin=\"nat-pmp\"}") >= 1.0);
    assert_eq!(
        must(&doc, "natgw_mappings{proto=\"tcp\",origin=\"static\"}"),
        0.0
    );
    let translated: f64 = ["xdp_out_redirected", "tc_out_translated"]
        .iter()
        .map(|c| {
            must(
                &doc,
                &format!("natgw_datapath_packets_total{{counter=\"{c}\"}}"),
            )
        })
        .sum();
    assert!(translated >= 3.0, "{translated} translated\n{doc}");
    assert!(
        must(
            &doc,
            "natgw_datapath_packets_total{counter=\"mapping_created\"}"
        ) >= 1.0
    );
    assert_eq!(
        must(
            &doc,
            "natgw_datapath_dropped_packets_total{reason=\"leak_guard\"}"
        ),
        0.0
    );
    assert!(must(&doc, "natgw_pcp_requests_total{protocol=\"pcp\"}") >= 1.0);
    assert!(must(&doc, "natgw_pcp_requests_total{protocol=\"nat-pmp\"}") >= 1.0);
    assert!(
        must(
            &doc,
            "natgw_pcp_responses_total{protocol=\"nat-pmp\",result=\"success\"}"
        ) >= 1.0
    );
    // Three mappings at least hold UDP ports of the external address.
    let pool = format!("{{address=\"{GW_WAN_ADDR}\",proto=\"udp\"}}");
    assert!(
        must(&doc, &format!("natgw_pool_ports_used{pool}")) >= 3.0,
        "{doc}"
    );
    assert_eq!(
        must(&doc, &format!("natgw_pool_ports_capacity{pool}")),
        64512.0
    );
    assert!(must(&doc, "natgw_gc_duration_seconds_count") >= 1.0);
    assert!(must(&doc, "process_resident_memory_bytes") > 1e6);
    assert_eq!(must(&doc, "natgw_datapath_up"), 1.0);
    assert!(
        doc.contains("\nnatgw_build_info{version=\""),
        "no build info:\n{doc}"
    );
    // The same counters `natgw status` shows.
    let status = s.natgw.status();
    let created = status["counters"]["mapping_created"]
        .as_f64()
        .expect("counter");
    let scraped = must(
        &doc,
        "natgw_datapath_packets_total{counter=\"mapping_created\"}",
    );
    assert!(
        scraped <= created && scraped >= 1.0,
        "{scraped} vs {created}"
    );

    let (ok, lint) = promtool(&doc);
    assert!(
        ok,
        "promtool check metrics refused the document:\n{lint}\n{doc}"
    );
    assert!(lint.trim().is_empty(), "promtool: {lint}");

    // Only GET /metrics.
    let (status, _) = http(lan, to, "GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, 404);
    let (status, _) = http(
        lan,
        to,
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 405);
}

#[test]
fn an_address_on_the_wan_side_is_refused_unless_allowed() {
    require_root();
    let tb = Testbed::new().expect("building the testbed");
    let gw = &tb.gateway.ns;
    for (listen, says) in [
        (
            format!("{GW_WAN_ADDR}:{PORT}"),
            "is on the WAN interface wan0",
        ),
        (format!("0.0.0.0:{PORT}"), "listens on every interface"),
    ] {
        let mut args = vec!["run"];
        args.extend(Natgw::IFACE_ARGS);
        args.extend(["--metrics", &listen]);
        let (status, stdout, stderr) = run_natgw(gw, &args);
        assert!(!status.success(), "{listen} accepted: {stdout}{stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("--metrics-allow-wan"),
            "{listen}: {stderr}"
        );
        // Refused before anything was attached.
        let links = command_output(gw, "ip", &["-d", "link", "show", "wan0"]);
        assert!(!links.contains("prog/xdp"), "{links}");
    }
    // Allowed, it serves on the WAN address (here scraped from the gateway itself).
    let listen = format!("{GW_WAN_ADDR}:{PORT}");
    let natgw = Natgw::start(gw, &["--metrics", &listen, "--metrics-allow-wan"]);
    let doc = scrape(gw, SocketAddrV4::new(GW_WAN_ADDR, PORT));
    assert!(doc.contains("# TYPE natgw_mappings gauge"), "{doc}");
    drop(natgw);
}
