//! `natgw stun probe` classifies natgw's behaviour correctly: run from a LAN host
//! against an RFC 5780 STUN server with two addresses on the WAN side, it reports
//! the mapping and the filtering mode natgw is configured with, and its public
//! address. (The probe's logic is unit-tested in natgw-proto/src/stun/discovery.rs; this is the
//! same probe against the real data path.)

use std::process::{Child, Stdio};

use natgw_integration_tests::{command_output, natgw_bin, Setup};
use serde_json::Value;
use testbed::{Testbed, GW_WAN_ADDR};

/// A second address of wan-a, the RFC 5780 "other" address.
const WAN_A_ALT: &str = "198.51.100.3";

/// `natgw stun serve` on wan-a with an alternate address; killed on drop.
struct StunServer(Child);

impl StunServer {
    fn start(tb: &Testbed) -> Self {
        let ns = &tb.wan[0].ns;
        let _ = command_output(
            ns,
            "ip",
            &["addr", "add", &format!("{WAN_A_ALT}/24"), "dev", "eth0"],
        );
        let child = ns
            .command(natgw_bin())
            .args([
                "stun",
                "serve",
                "--listen",
                "198.51.100.2:3478",
                "--alternate",
                WAN_A_ALT,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting natgw stun serve on wan-a");
        std::thread::sleep(std::time::Duration::from_millis(500));
        Self(child)
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the probe from lan-a and returns its JSON report.
fn probe(s: &Setup) -> Value {
    let out = s.tb.lan[0]
        .ns
        .command(natgw_bin())
        .args([
            "stun",
            "probe",
            "--server",
            "198.51.100.2:3478",
            "--timeout",
            "2",
            "--json",
        ])
        .output()
        .expect("running the probe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("probe --json output {text}: {e}"))
}

fn check(mode: &str, expected_filtering: &str) {
    let s = Setup::new(&["--udp-filtering", mode]);
    let _server = StunServer::start(&s.tb);
    let report = probe(&s);
    assert_eq!(
        report["mapping"]["result"], "endpoint-independent",
        "{report:#}"
    );
    assert_eq!(
        report["filtering"]["result"], expected_filtering,
        "{report:#}"
    );
    let public = report["public_address"].as_str().expect("a public address");
    assert!(public.starts_with(&format!("{GW_WAN_ADDR}:")), "{report:#}");
    if mode == "endpoint-independent" {
        // RFC 4787 REQ-9 seen from the client: its own public address reaches it.
        assert_eq!(report["hairpinning"]["result"], "supported", "{report:#}");
    }
}

#[test]
fn probe_reports_endpoint_independent_filtering() {
    // rfc5780 §4.4, rfc4787 REQ-1, REQ-8
    check("endpoint-independent", "endpoint-independent");
}

#[test]
fn probe_reports_address_dependent_filtering() {
    // rfc5780 §4.4, rfc4787 REQ-8
    check("address-dependent", "address-dependent");
}

#[test]
fn probe_reports_address_and_port_dependent_filtering() {
    // rfc5780 §4.4, rfc4787 REQ-8
    check("address-and-port-dependent", "address-and-port-dependent");
}

#[test]
fn lan_host_learns_its_real_external_mapping_from_the_gateway() {
    // rfc8489 §14.2 (XOR-MAPPED-ADDRESS), rfc4787 REQ-9a: a LAN host reaches natgw's
    // own STUN responder on the external address through hairpinning and learns the
    // very external endpoint its traffic to the outside uses.
    let s = Setup::new(&[]);
    let lan = natgw_integration_tests::udp(&s.tb.lan[0].ns, testbed::LAN_A_ADDR, 46100);
    let wan = natgw_integration_tests::udp(&s.tb.wan[0].ns, testbed::WAN_A_ADDR, 7000);
    lan.send_to(b"out", (testbed::WAN_A_ADDR, 7000))
        .expect("send to wan-a");
    let (_, seen) = natgw_integration_tests::recv(&wan).expect("wan-a got it");
    // A minimal Binding request: type 0x0001, length 0, magic cookie, transaction id.
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(b"natgw-hairpn");
    lan.send_to(&req, (GW_WAN_ADDR, 3478))
        .expect("send the binding request");
    let (resp, from) = natgw_integration_tests::recv(&lan).expect("a binding response");
    assert_eq!(from, std::net::SocketAddrV4::new(GW_WAN_ADDR, 3478));
    assert_eq!(&resp[0..2], &[0x01, 0x01], "binding success response");
    assert_eq!(&resp[8..20], b"natgw-hairpn");
    // Find XOR-MAPPED-ADDRESS (0x0020) and decode it.
    let mut at = 20;
    let mut mapped = None;
    while at + 4 <= resp.len() {
        let kind = u16::from_be_bytes([resp[at], resp[at + 1]]);
        let len = usize::from(u16::from_be_bytes([resp[at + 2], resp[at + 3]]));
        if kind == 0x0020 && len == 8 {
            let v = &resp[at + 4..at + 12];
            let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
            let ip = std::net::Ipv4Addr::new(v[4] ^ 0x21, v[5] ^ 0x12, v[6] ^ 0xa4, v[7] ^ 0x42);
            mapped = Some(std::net::SocketAddrV4::new(ip, port));
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    assert_eq!(
        mapped,
        Some(seen),
        "the STUN answer names the endpoint wan-a saw"
    );
    assert!(s.natgw.counter("hairpin_local") >= 1);
    assert!(s.natgw.counter("hairpin_local_reply") >= 1);
}

#[test]
fn probe_classifies_the_kernel_nat_too() {
    // rfc5780 §4.3/§4.4 against nftables masquerade in the same topology: the Linux
    // kernel keeps ports (endpoint-independent mapping in practice) and lets in only
    // replies conntrack knows (address-and-port-dependent filtering).
    natgw_integration_tests::require_root();
    let tb = Testbed::new().expect("testbed");
    let mut nft = tb
        .gateway
        .ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    std::io::Write::write_all(
        nft.stdin.as_mut().expect("stdin"),
        b"table ip natgwtest {\n chain post {\n  type nat hook postrouting priority 100;\n  oifname \"wan0\" masquerade\n }\n}\n",
    )
    .expect("nft rules");
    drop(nft.stdin.take());
    assert!(
        nft.wait().expect("nft").success(),
        "nft accepted the masquerade rule"
    );
    let _server = StunServer::start(&tb);
    let out = tb.lan[0]
        .ns
        .command(natgw_bin())
        .args([
            "stun",
            "probe",
            "--server",
            "198.51.100.2:3478",
            "--timeout",
            "2",
            "--json",
        ])
        .output()
        .expect("running the probe");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(
        report["mapping"]["result"], "endpoint-independent",
        "{report:#}"
    );
    assert_eq!(
        report["filtering"]["result"], "address-and-port-dependent",
        "{report:#}"
    );
    assert!(
        report["public_address"]
            .as_str()
            .is_some_and(|p| p.starts_with("192.0.2.1:")),
        "{report:#}"
    );
}
