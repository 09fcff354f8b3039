//! natgw's STUN responder on the external address, asked from the WAN side and
//! from LAN hosts (hairpinned to it): by raw Binding requests written here byte by
//! byte (so the test does not share natgw's codec), by `natgw stun probe`, and by
//! Debian's `stun` client (package `stun-client`, an RFC 3489 implementation
//! independent of natgw).

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use natgw_integration_tests::{
    command_output, natgw_bin, recv, recv_nothing, restore_gateway_default_route, udp, wait_for,
    Natgw, Setup, WAIT,
};
use serde_json::Value;
use testbed::{Testbed, GW_WAN_ADDR, LAN_A_ADDR, WAN_A_ADDR};

/// The second external address the RFC 5780 tests add to the gateway's WAN.
const GW_WAN_ALT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// RFC 8489 §18.6.
const STUN_PORT: u16 = 3478;
/// natgw's default RFC 5780 alternate port.
const ALT_PORT: u16 = 3479;

/// RFC 8489 §5.
const MAGIC_COOKIE: u32 = 0x2112_a442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
/// RFC 8489 §14.2.
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RFC 5780 §7.2, §7.4 and §7.6.
const CHANGE_REQUEST: u16 = 0x0003;
const PADDING: u16 = 0x0026;
const OTHER_ADDRESS: u16 = 0x802c;
/// CHANGE-REQUEST flags (RFC 5780 §7.2).
const CHANGE_IP: u32 = 0x04;
const CHANGE_PORT: u32 = 0x02;

/// A testbed whose gateway has a second WAN address, with natgw pooling both (the
/// responder's RFC 5780 mode).
fn setup_with_two_external_addresses() -> Setup {
    setup_with_two_external_addresses_and(&[])
}

/// [`setup_with_two_external_addresses`] with more arguments for `natgw run`.
fn setup_with_two_external_addresses_and(extra: &[&str]) -> Setup {
    natgw_integration_tests::require_root();
    let tb = Testbed::new().expect("building the testbed");
    let _ = command_output(
        &tb.gateway.ns,
        "ip",
        &["addr", "add", &format!("{GW_WAN_ALT}/24"), "dev", "wan0"],
    );
    let (primary, alternate) = (GW_WAN_ADDR.to_string(), GW_WAN_ALT.to_string());
    let mut args = vec!["--external", &primary, "--external", &alternate];
    args.extend_from_slice(extra);
    let natgw = Natgw::start(&tb.gateway.ns, &args);
    Setup { natgw, tb }
}

/// A Binding request with transaction id `id` and, if given, CHANGE-REQUEST `flags`.
fn binding_request(id: [u8; 12], change: Option<u32>) -> Vec<u8> {
    let mut attrs = Vec::new();
    if let Some(flags) = change {
        attrs.extend_from_slice(&CHANGE_REQUEST.to_be_bytes());
        attrs.extend_from_slice(&4u16.to_be_bytes());
        attrs.extend_from_slice(&flags.to_be_bytes());
    }
    message(id, &attrs)
}

/// A Binding request with transaction id `id` and a PADDING attribute of `len`
/// bytes (a multiple of 4), as RFC 5780 clients send to find out whether large
/// datagrams get through.
fn padded_binding_request(id: [u8; 12], len: u16) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&PADDING.to_be_bytes());
    attrs.extend_from_slice(&len.to_be_bytes());
    attrs.resize(attrs.len() + usize::from(len), 0);
    message(id, &attrs)
}

/// A Binding request with transaction id `id` carrying `attrs`.
fn message(id: [u8; 12], attrs: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
    let len = u16::try_from(attrs.len()).expect("attributes fit");
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m.extend_from_slice(&id);
    m.extend_from_slice(attrs);
    m
}

/// What a Binding success response says.
#[derive(Debug, Default)]
struct Answer {
    xor_mapped: Option<SocketAddrV4>,
    other: Option<SocketAddrV4>,
}

/// Parses a Binding success response to transaction `id`.
fn parse_success(bytes: &[u8], id: [u8; 12]) -> Answer {
    assert!(bytes.len() >= 20, "short STUN message: {bytes:?}");
    assert_eq!(
        u16::from_be_bytes([bytes[0], bytes[1]]),
        BINDING_SUCCESS,
        "a Binding success response: {bytes:?}"
    );
    assert_eq!(&bytes[4..8], &MAGIC_COOKIE.to_be_bytes());
    assert_eq!(&bytes[8..20], &id, "our transaction");
    let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    assert_eq!(bytes.len(), 20 + len, "length field");
    let address = |v: &[u8], xor: bool| {
        assert_eq!(v[1], 0x01, "IPv4");
        let mut port = u16::from_be_bytes([v[2], v[3]]);
        let mut ip = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
        if xor {
            port ^= (MAGIC_COOKIE >> 16) as u16;
            ip ^= MAGIC_COOKIE;
        }
        SocketAddrV4::new(Ipv4Addr::from(ip), port)
    };
    let mut answer = Answer::default();
    let mut at = 20;
    while at + 4 <= bytes.len() {
        let kind = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let vlen = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        let value = &bytes[at + 4..at + 4 + vlen];
        match kind {
            XOR_MAPPED_ADDRESS => answer.xor_mapped = Some(address(value, true)),
            OTHER_ADDRESS => answer.other = Some(address(value, false)),
            _ => {}
        }
        at += 4 + vlen.div_ceil(4) * 4;
    }
    answer
}

/// Sends a Binding request from `sock` to `server`; returns the answer and where it
/// came from.
fn ask(
    sock: &UdpSocket,
    server: SocketAddrV4,
    change: Option<u32>,
    id: u8,
) -> (Answer, SocketAddrV4) {
    let id = [id; 12];
    let (answer, from, _) = ask_with(sock, server, &binding_request(id, change), id);
    (answer, from)
}

/// Sends the Binding request `request` (transaction `id`) from `sock` to `server`;
/// returns the answer, where it came from and its length.
fn ask_with(
    sock: &UdpSocket,
    server: SocketAddrV4,
    request: &[u8],
    id: [u8; 12],
) -> (Answer, SocketAddrV4, usize) {
    // UDP may lose the first one while the neighbour is resolved: retransmit
    // (RFC 8489 §6.2.1), as any client does.
    for _ in 0..3 {
        sock.send_to(request, server)
            .expect("sending the Binding request");
        if let Some((bytes, from)) = recv_nothing(sock, Duration::from_secs(1)) {
            return (parse_success(&bytes, id), from, bytes.len());
        }
    }
    panic!("no answer from the STUN responder at {server}");
}

#[test]
fn binding_request_from_the_wan_returns_the_senders_address() {
    // rfc8489 §3: the server reflects the request's source transport address
    let s = Setup::new(&[]);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 40500);
    let (answer, from) = ask(&wan, SocketAddrV4::new(GW_WAN_ADDR, STUN_PORT), None, 1);
    assert_eq!(from, SocketAddrV4::new(GW_WAN_ADDR, STUN_PORT));
    assert_eq!(
        answer.xor_mapped,
        Some(SocketAddrV4::new(WAN_A_ADDR, 40500))
    );
    assert_eq!(answer.other, None, "one external address: no RFC 5780");
    // A CHANGE-REQUEST the responder cannot honour gets 420 (RFC 5780 §6.1).
    wan.send_to(
        &binding_request([2; 12], Some(CHANGE_IP | CHANGE_PORT)),
        SocketAddrV4::new(GW_WAN_ADDR, STUN_PORT),
    )
    .expect("send");
    let (bytes, _) = recv(&wan).expect("an error response");
    assert_eq!(
        u16::from_be_bytes([bytes[0], bytes[1]]),
        0x0111,
        "Binding error"
    );

    // The probe that ships with natgw, from the WAN host.
    let out = s.tb.wan[0]
        .ns
        .command(natgw_bin())
        .args([
            "stun",
            "probe",
            "--server",
            &GW_WAN_ADDR.to_string(),
            "--json",
        ])
        .output()
        .expect("running natgw stun probe on wan-a");
    assert!(
        out.status.success(),
        "natgw stun probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("probe JSON");
    let public: SocketAddrV4 = report["public_address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no public address: {report}"));
    assert_eq!(*public.ip(), WAN_A_ADDR, "{report}");

    // The responder's counters reach `natgw status` (rewritten once a second).
    let success = wait_for(WAIT, || {
        let status = s.natgw.status();
        let n = status["stun"]["counters"]["success"].as_u64()?;
        (n >= 2).then_some(n)
    });
    assert!(
        success.is_some(),
        "stun counters: {}",
        s.natgw.status()["stun"]
    );
}

#[test]
fn change_request_answers_come_from_the_other_address_and_port() {
    // rfc5780 §6.1: OTHER-ADDRESS, and CHANGE-REQUEST answered from the address and
    // port asked for
    let s = setup_with_two_external_addresses();
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 40502);
    let server = SocketAddrV4::new(GW_WAN_ADDR, STUN_PORT);
    let mine = SocketAddrV4::new(WAN_A_ADDR, 40502);

    let (answer, from) = ask(&wan, server, None, 1);
    assert_eq!(from, server);
    assert_eq!(answer.xor_mapped, Some(mine));
    assert_eq!(answer.other, Some(SocketAddrV4::new(GW_WAN_ALT, ALT_PORT)));

    for (flags, expected, id) in [
        (
            CHANGE_IP | CHANGE_PORT,
            SocketAddrV4::new(GW_WAN_ALT, ALT_PORT),
            2,
        ),
        (CHANGE_PORT, SocketAddrV4::new(GW_WAN_ADDR, ALT_PORT), 3),
        (CHANGE_IP, SocketAddrV4::new(GW_WAN_ALT, STUN_PORT), 4),
    ] {
        let (answer, from) = ask(&wan, server, Some(flags), id);
        assert_eq!(from, expected, "CHANGE-REQUEST {flags:#x}");
        assert_eq!(answer.xor_mapped, Some(mine));
    }
    // The other address answers too, and names the primary as its other address.
    let (answer, from) = ask(&wan, SocketAddrV4::new(GW_WAN_ALT, ALT_PORT), None, 5);
    assert_eq!(from, SocketAddrV4::new(GW_WAN_ALT, ALT_PORT));
    assert_eq!(
        answer.other,
        Some(SocketAddrV4::new(GW_WAN_ADDR, STUN_PORT))
    );
    let status = s.natgw.status();
    assert_eq!(
        status["stun"]["other_address"], "192.0.2.2:3479",
        "{status}"
    );
}

#[test]
fn debian_stun_client_on_the_wan_finds_an_open_internet() {
    // rfc5780 (RFC 3489 classic tests I-III through natgw's responder): a host with a
    // public address sees "Open", return value 0x000001 (which is also its exit status)
    let s = setup_with_two_external_addresses();
    let out = s.tb.wan[0]
        .ns
        .command("stun")
        .arg(GW_WAN_ADDR.to_string())
        .output()
        .unwrap_or_else(|e| {
            panic!("running Debian's `stun` (package stun-client, `cargo xtask provision`): {e}")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Primary: Open"), "{stdout}");
    assert!(stdout.contains("Return value is 0x000001"), "{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}");
}

#[test]
fn no_stun_turns_the_responder_off() {
    let s = Setup::new(&["--no-stun"]);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 40504);
    wan.send_to(
        &binding_request([9; 12], None),
        SocketAddrV4::new(GW_WAN_ADDR, STUN_PORT),
    )
    .expect("send");
    wan.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 1500];
    // Nothing, or an ICMP error surfacing as ECONNREFUSED: no STUN answer either way.
    assert!(wan.recv_from(&mut buf).is_err(), "no answer with --no-stun");
    assert!(s.natgw.status()["stun"].is_null());
}

#[test]
fn the_responder_follows_a_change_of_the_wan_address() {
    // rfc8489 §3 after a DHCP renumbering: the responder answers on the new external
    // address, reflecting the sender's address as before, and no longer on the old one
    let s = Setup::new(&[]);
    let renumbered = Ipv4Addr::new(192, 0, 2, 7);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 40506);
    let mine = SocketAddrV4::new(WAN_A_ADDR, 40506);
    let old = SocketAddrV4::new(GW_WAN_ADDR, STUN_PORT);
    let new = SocketAddrV4::new(renumbered, STUN_PORT);

    let (answer, from) = ask(&wan, old, None, 1);
    assert_eq!(from, old);
    assert_eq!(answer.xor_mapped, Some(mine));
    let before = wait_for(WAIT, || {
        s.natgw.status()["stun"]["counters"]["success"]
            .as_u64()
            .filter(|n| *n >= 1)
    })
    .unwrap_or_else(|| panic!("stun counters: {}", s.natgw.status()["stun"]));

    // Renumber the way a DHCP client does: the old lease goes, the new one comes.
    let _ = command_output(
        &s.tb.gateway.ns,
        "ip",
        &["addr", "del", "192.0.2.1/24", "dev", "wan0"],
    );
    let _ = command_output(
        &s.tb.gateway.ns,
        "ip",
        &["addr", "add", "192.0.2.7/24", "dev", "wan0"],
    );
    restore_gateway_default_route(&s.tb.gateway.ns);
    let moved = wait_for(WAIT, || {
        let status = s.natgw.status();
        (status["stun"]["addresses"] == serde_json::json!(["192.0.2.7:3478"])).then_some(status)
    })
    .unwrap_or_else(|| {
        panic!(
            "status never showed the responder on {new}: {}\n{}",
            s.natgw.status()["stun"],
            s.natgw.log()
        )
    });
    assert_eq!(moved["stun"]["listening"], true, "{moved}");
    assert_eq!(moved["external_address"], "192.0.2.7", "{moved}");
    assert!(
        s.natgw.log().contains("stun.moved"),
        "the move is logged:\n{}",
        s.natgw.log()
    );

    let (answer, from) = ask(&wan, new, None, 2);
    assert_eq!(from, new, "answered from the new address");
    assert_eq!(answer.xor_mapped, Some(mine));

    // The old address back on the WAN, now as a second address outside the pool:
    // nobody answers STUN there any more.
    let _ = command_output(
        &s.tb.gateway.ns,
        "ip",
        &["addr", "add", "192.0.2.1/24", "dev", "wan0"],
    );
    wan.send_to(&binding_request([3; 12], None), old)
        .expect("send");
    assert!(
        recv_nothing(&wan, Duration::from_secs(2)).is_none(),
        "an answer from the old address"
    );
    let (_, from) = ask(&wan, new, None, 4);
    assert_eq!(from, new, "still answering on the new address");

    // The counters went on across the move: both answers on the new address add to
    // those from before it.
    let after = wait_for(WAIT, || {
        s.natgw.status()["stun"]["counters"]["success"]
            .as_u64()
            .filter(|n| *n >= before + 2)
    });
    assert!(
        after.is_some(),
        "stun counters kept counting from {before}: {}",
        s.natgw.status()["stun"]
    );
}

#[test]
fn a_new_address_whose_stun_port_is_taken_leaves_natgw_running_and_is_retried() {
    // Binding the new address fails: natgw keeps running, says why in status, and
    // binds on the next address change.
    let s = Setup::new(&[]);
    let renumbered = Ipv4Addr::new(192, 0, 2, 7);
    let new = SocketAddrV4::new(renumbered, STUN_PORT);
    // The new address arrives before the old one goes (kept when the old primary is
    // deleted), and another program takes its STUN port meanwhile.
    let sysctl =
        s.tb.gateway
            .ns
            .command("sysctl")
            .args(["-qw", "net.ipv4.conf.wan0.promote_secondaries=1"])
            .status()
            .expect("running sysctl");
    assert!(sysctl.success(), "sysctl promote_secondaries");
    let _ = command_output(
        &s.tb.gateway.ns,
        "ip",
        &["addr", "add", "192.0.2.7/24", "dev", "wan0"],
    );
    let squatter = udp(&s.tb.gateway.ns, renumbered, STUN_PORT);
    let _ = command_output(
        &s.tb.gateway.ns,
        "ip",
        &["addr", "del", "192.0.2.1/24", "dev", "wan0"],
    );
    restore_gateway_default_route(&s.tb.gateway.ns);
    let failed = wait_for(WAIT, || {
        let status = s.natgw.status();
        (status["external_address"] == "192.0.2.7" && status["stun"]["listening"] == false)
            .then_some(status)
    })
    .unwrap_or_else(|| {
        panic!(
            "status never showed the responder not listening: {}\n{}",
            s.natgw.status(),
            s.natgw.log()
        )
    });
    let reason = failed["stun"]["not_listening"].as_str().unwrap_or_default();
    assert!(reason.contains("192.0.2.7:3478"), "{failed}");
    assert_eq!(
        failed["stun"]["addresses"],
        serde_json::json!([]),
        "{failed}"
    );
    assert!(
        s.natgw.log().contains("stun.bind_failed"),
        "{}",
        s.natgw.log()
    );

    // The port is free again; the next change of the WAN's addresses binds it.
    drop(squatter);
    let _ = command_output(
        &s.tb.gateway.ns,
        "ip",
        &["addr", "add", "192.0.2.9/24", "dev", "wan0"],
    );
    let listening = wait_for(WAIT, || {
        let status = s.natgw.status();
        (status["stun"]["listening"] == true).then_some(status)
    })
    .unwrap_or_else(|| panic!("never listening again:\n{}", s.natgw.log()));
    assert_eq!(
        listening["stun"]["addresses"],
        serde_json::json!(["192.0.2.7:3478"]),
        "{listening}"
    );
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 40508);
    let (answer, from) = ask(&wan, new, None, 1);
    assert_eq!(from, new);
    assert_eq!(
        answer.xor_mapped,
        Some(SocketAddrV4::new(WAN_A_ADDR, 40508))
    );
}

/// PADDING that makes a Binding request (and natgw's padded answer) larger than the
/// 1500-byte MTU of the testbed's links, so both travel in fragments.
const LARGE_PADDING: u16 = 1700;

#[test]
fn padded_binding_request_from_the_wan_is_answered() {
    // rfc5780 §7.6 (PADDING), rfc4787 REQ-14: the request reaches the responder in
    // two fragments, the padded answer leaves in two.
    let s = Setup::new(&[]);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 40510);
    let server = SocketAddrV4::new(GW_WAN_ADDR, STUN_PORT);
    let id = [7; 12];
    let request = padded_binding_request(id, LARGE_PADDING);
    assert!(request.len() > 1500);
    let (answer, from, len) = ask_with(&wan, server, &request, id);
    assert_eq!(from, server);
    assert_eq!(
        answer.xor_mapped,
        Some(SocketAddrV4::new(WAN_A_ADDR, 40510))
    );
    assert!(len > 1500, "the answer is padded too: {len} bytes");
}

#[test]
fn padded_binding_request_from_a_lan_host_is_answered() {
    // rfc5780 §7.6, rfc4787 REQ-9a, REQ-14: hairpinned to the responder, every
    // fragment with the host's external address; the padded answer, larger than the
    // LAN's MTU, is fragmented on its way back and names the host's external
    // endpoint.
    let s = Setup::new(&[]);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 40512);
    let server = SocketAddrV4::new(GW_WAN_ADDR, STUN_PORT);
    let id = [8; 12];
    let (answer, from, len) =
        ask_with(&lan, server, &padded_binding_request(id, LARGE_PADDING), id);
    assert_eq!(from, server);
    assert_eq!(
        answer.xor_mapped,
        Some(SocketAddrV4::new(GW_WAN_ADDR, 40512)),
        "the host's external endpoint (its port is free, so kept)"
    );
    assert!(len > 1500, "the answer is padded too: {len} bytes");
    assert!(s.natgw.counter("hairpin_local_reply_routed") >= 1);
}

/// A LAN host runs RFC 5780 filtering discovery against natgw's own responder
/// (two external addresses) with natgw filtering UDP as `mode`: Debian's `stun`
/// (RFC 3489's tests, independent of natgw) must report `expected`, and natgw's
/// probe `mode`. A refused answer is dropped and counted, as from the outside.
fn lan_host_discovers_filtering(mode: &str, expected: &str) {
    let s = setup_with_two_external_addresses_and(&["--udp-filtering", mode]);
    let out = s.tb.lan[0]
        .ns
        .command("stun")
        .arg(GW_WAN_ADDR.to_string())
        .output()
        .unwrap_or_else(|e| {
            panic!("running Debian's `stun` (package stun-client, `cargo xtask provision`): {e}")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("Primary: {expected}")),
        "--udp-filtering {mode}: {stdout}"
    );

    let out = s.tb.lan[0]
        .ns
        .command(natgw_bin())
        .args([
            "stun",
            "probe",
            "--server",
            &GW_WAN_ADDR.to_string(),
            "--timeout",
            "2",
            "--json",
        ])
        .output()
        .expect("running natgw stun probe on lan-a");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe JSON: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["filtering"]["result"], mode, "{report:#}");
    let filtered = s.natgw.counter("drop_filtered");
    if mode == "endpoint-independent" {
        assert_eq!(filtered, 0);
    } else {
        assert!(filtered >= 1, "refused answers are counted");
    }
}

#[test]
fn lan_host_discovers_endpoint_independent_filtering_at_the_gateway() {
    // rfc5780 §4.4, rfc4787 REQ-8
    lan_host_discovers_filtering(
        "endpoint-independent",
        "Independent Mapping, Independent Filter",
    );
}

#[test]
fn lan_host_discovers_address_dependent_filtering_at_the_gateway() {
    // rfc5780 §4.4, rfc4787 REQ-8: the answer from the other address is refused
    lan_host_discovers_filtering(
        "address-dependent",
        "Independent Mapping, Address Dependent Filter",
    );
}

#[test]
fn lan_host_discovers_address_and_port_dependent_filtering_at_the_gateway() {
    // rfc5780 §4.4, rfc4787 REQ-8: answers from the other address or port are
    // refused
    lan_host_discovers_filtering(
        "address-and-port-dependent",
        "Independent Mapping, Port Dependent Filter",
    );
}
