//! `natgw stun probe` classifies natgw's behaviour correctly: run from a LAN host
//! against an RFC 5780 STUN server with two addresses on the WAN side, it reports
//! the mapping and the filtering mode natgw is configured with, and its public
//! address. (The probe's logic is unit-tested in natgw/src/stun/probe.rs; this is the
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
