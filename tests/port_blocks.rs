//! Deterministic port blocks (RFC 7422, issue #16 item 2), asserted on the wire: the
//! external address and port a WAN server sees for each internal host are the ones
//! the configuration's function gives, stay the same for new flows (EIM), lead back
//! inside, and hosts without a block here are dropped and counted, never leaked.
//!
//! The single-gateway tests use the standard testbed (LAN A 10.0.1.2, LAN B
//! 10.0.2.2) with the pool 192.0.2.1, 192.0.2.2 and the internal space 10.0.0.0/22:
//! with blocks of 126 ports over 1024-65535, 512 blocks fit one address, so host i
//! of the space has block i % 512 of address i / 512. LAN A is host 258 (address
//! 192.0.2.1, ports 33532-33657), LAN B host 514 (192.0.2.2, ports 1276-1401).
//! The three-gateway tests are in `scale_out` below.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use natgw_integration_tests::{command_output, recv, recv_nothing, udp, LeakWatch, Natgw};
use testbed::{Testbed, GW_WAN_ADDR, LAN_A_ADDR, LAN_B_ADDR, WAN_A_ADDR, WAN_B_ADDR};

/// The pool's second address.
const GW_WAN_2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// LAN A's block: host 258 of 10.0.0.0/22, on 192.0.2.1.
const A_BLOCK: (u16, u16) = (1024 + 258 * 126, 1024 + 259 * 126 - 1);
/// LAN B's block: host 514, on 192.0.2.2.
const B_BLOCK: (u16, u16) = (1024 + 2 * 126, 1024 + 3 * 126 - 1);

/// The testbed with both pool addresses on the WAN and natgw in block mode with
/// `extra` block flags.
fn setup(extra: &[&str]) -> (Natgw, Testbed) {
    natgw_integration_tests::require_root();
    let tb = Testbed::new().expect("building the testbed");
    let _ = command_output(
        &tb.gateway.ns,
        "ip",
        &["addr", "add", &format!("{GW_WAN_2}/24"), "dev", "wan0"],
    );
    let (a, b) = (GW_WAN_ADDR.to_string(), GW_WAN_2.to_string());
    let mut args = vec![
        "--external",
        &a,
        "--external",
        &b,
        "--block-size",
        "126",
        "--no-upnp",
    ];
    args.extend_from_slice(extra);
    let natgw = Natgw::start(&tb.gateway.ns, &args);
    (natgw, tb)
}

/// Sends from `lan` to `wan`'s address `to` and returns the source the WAN host saw.
fn seen_at(lan: &std::net::UdpSocket, wan: &std::net::UdpSocket, to: SocketAddrV4) -> SocketAddrV4 {
    lan.send_to(b"out", to).expect("send from the LAN host");
    let (data, seen) = recv(wan).expect("the WAN host received the datagram");
    assert_eq!(data, b"out");
    seen
}

fn in_block(seen: SocketAddrV4, addr: Ipv4Addr, block: (u16, u16)) -> bool {
    *seen.ip() == addr && (block.0..=block.1).contains(&seen.port())
}

#[test]
fn each_host_gets_its_block_keeps_it_for_new_flows_and_is_reachable_through_it() {
    // rfc7422 §2: address and ports a function of the internal address;
    // rfc4787 REQ-1 (EIM) and REQ-4 (parity) inside the block.
    let (natgw, tb) = setup(&["--block-space", "10.0.0.0/22", "--block-shares", "2"]);
    let wan_a = udp(&tb.wan[0].ns, WAN_A_ADDR, 7000);
    let wan_b = udp(&tb.wan[1].ns, WAN_B_ADDR, 7001);
    let to_a = SocketAddrV4::new(WAN_A_ADDR, 7000);
    let to_b = SocketAddrV4::new(WAN_B_ADDR, 7001);

    // An internal port outside the block: a port of the block, same parity.
    let a = udp(&tb.lan[0].ns, LAN_A_ADDR, 40000);
    let first = seen_at(&a, &wan_a, to_a);
    assert!(
        in_block(first, GW_WAN_ADDR, A_BLOCK),
        "LAN A seen as {first}, block {A_BLOCK:?}"
    );
    assert_eq!(first.port() % 2, 0, "parity kept (REQ-4)");
    // A new flow from the same endpoint to another server: the same endpoint.
    assert_eq!(seen_at(&a, &wan_b, to_b), first, "EIM across destinations");
    // An internal port inside the block is preserved.
    let a2 = udp(&tb.lan[0].ns, LAN_A_ADDR, A_BLOCK.0 + 60);
    assert_eq!(
        seen_at(&a2, &wan_a, to_a),
        SocketAddrV4::new(GW_WAN_ADDR, A_BLOCK.0 + 60),
        "port preserved inside the block"
    );
    // Inbound to the mapping reaches the host.
    wan_a
        .send_to(b"in", first)
        .expect("send to LAN A's external endpoint");
    let (data, from) = recv(&a).expect("LAN A got the inbound datagram");
    assert_eq!((data.as_slice(), from), (&b"in"[..], to_a));

    // LAN B is on the pool's second address, in its own block.
    let b = udp(&tb.lan[1].ns, LAN_B_ADDR, 40000);
    let seen_b = seen_at(&b, &wan_a, to_a);
    assert!(
        in_block(seen_b, GW_WAN_2, B_BLOCK),
        "LAN B seen as {seen_b}, block {B_BLOCK:?}"
    );
    wan_a
        .send_to(b"in-b", seen_b)
        .expect("send to LAN B's external endpoint");
    let (data, _) = recv(&b).expect("LAN B got the inbound datagram");
    assert_eq!(data, b"in-b");

    // The table holds what the wire showed; `natgw who` answers from the function.
    let m = natgw
        .mapping_of("udp", SocketAddrV4::new(LAN_A_ADDR, 40000))
        .expect("natgw mappings lists LAN A's mapping");
    assert_eq!(m["external"], first.to_string());
    let (status, out, err) = natgw.cli(&["who", &format!("{GW_WAN_2}:{}", B_BLOCK.1), "--json"]);
    assert!(status.success(), "natgw who failed: {err}");
    let who: serde_json::Value = serde_json::from_str(&out).expect("who --json");
    assert_eq!(who["block"]["internal"], LAN_B_ADDR.to_string(), "{who}");
    assert_eq!(who["block"]["port_first"], B_BLOCK.0, "{who}");
}

#[test]
fn hosts_without_a_block_here_are_dropped_counted_and_never_leaked() {
    // rfc7422: no translation outside the configured space, none for another
    // gateway's share; rfc6888 REQ-3 (no address leaks).
    let (mut natgw, tb) = setup(&["--block-space", "10.0.1.0/24"]);
    let watch = LeakWatch::start(&tb.inet);
    let wan = udp(&tb.wan[0].ns, WAN_A_ADDR, 7000);
    let to = SocketAddrV4::new(WAN_A_ADDR, 7000);
    let a = udp(&tb.lan[0].ns, LAN_A_ADDR, 40000);
    let b = udp(&tb.lan[1].ns, LAN_B_ADDR, 40000);
    // LAN A is host 2 of 10.0.1.0/24: block 2 of 192.0.2.1.
    let seen = seen_at(&a, &wan, to);
    assert!(
        in_block(seen, GW_WAN_ADDR, (1276, 1401)),
        "LAN A seen as {seen}"
    );
    // LAN B (10.0.2.2) is outside the space.
    for _ in 0..3 {
        b.send_to(b"outside", to).expect("send from LAN B");
    }
    assert_eq!(
        recv_nothing(&wan, Duration::from_secs(1)),
        None,
        "LAN B's datagrams must not leave"
    );
    assert!(
        natgw.counter("drop_outside_blocks") >= 3,
        "{}",
        natgw.status()
    );
    assert!(natgw
        .mapping_of("udp", SocketAddrV4::new(LAN_B_ADDR, 40000))
        .is_none());
    natgw.stop();
    drop(natgw);

    // Two shares, only share 1 (192.0.2.2: LAN B's) owned: LAN A is another
    // gateway's.
    let natgw = Natgw::start(
        &tb.gateway.ns,
        &[
            "--external",
            &GW_WAN_ADDR.to_string(),
            "--external",
            &GW_WAN_2.to_string(),
            "--block-size",
            "126",
            "--no-upnp",
            "--block-space",
            "10.0.0.0/22",
            "--block-shares",
            "2",
            "--block-owned",
            "1",
        ],
    );
    let a = udp(&tb.lan[0].ns, LAN_A_ADDR, 40100);
    for _ in 0..3 {
        a.send_to(b"not ours", to).expect("send from LAN A");
    }
    assert_eq!(
        recv_nothing(&wan, Duration::from_secs(1)),
        None,
        "LAN A's datagrams must not leave"
    );
    assert!(
        natgw.counter("drop_share_not_owned") >= 3,
        "{}",
        natgw.status()
    );
    let seen = seen_at(&b, &wan, to);
    assert!(in_block(seen, GW_WAN_2, B_BLOCK), "LAN B seen as {seen}");
    drop(natgw);
    watch.assert_none("hosts without a block");
}
