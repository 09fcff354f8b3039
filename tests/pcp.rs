//! The PCP (RFC 6887) and NAT-PMP (RFC 6886) server end to end: requests from LAN
//! hosts — natgw's own `natgw pcp` client, Debian's `natpmpc`, and hand-built
//! datagrams where a request must be wrong on purpose — create mappings in the data
//! path, and WAN hosts' traffic shows what they do.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    process::Output,
    time::Duration,
};

use natgw_integration_tests::pcp_bytes::{
    map_response_external, pcp_announce, pcp_map_request, IPPROTO_UDP, OP_ANNOUNCE, OP_MAP,
    PCP_PORT, PCP_VERSION, RESPONSE,
};
use natgw_integration_tests::{
    command_output, natgw_bin, recv, recv_nothing, require_root, restore_gateway_default_route,
    run_natgw, udp, wait_for, Natgw, Setup, WAIT,
};
use serde_json::Value;
use testbed::{Netns, Testbed, GW_LAN_A_ADDR, GW_WAN_ADDR, LAN_A_ADDR, WAN_A_ADDR, WAN_B_ADDR};

/// Where clients hear announcements (RFC 6887 §14.1.3, RFC 6886 §3.2.1).
const CLIENT_PORT: u16 = 5350;
/// ADDRESS_MISMATCH (RFC 6887 §7.4).
const ADDRESS_MISMATCH: u8 = natgw_proto::pcp::wire::ResultCode::AddressMismatch.to_wire();

/// Runs `natgw pcp ACTION --server 10.0.1.1 --json ARGS...` on lan-a; (success,
/// the printed report).
fn pcp(s: &Setup, action: &str, args: &[&str]) -> (bool, Value) {
    let server = GW_LAN_A_ADDR.to_string();
    let out = s.tb.lan[0]
        .ns
        .command(natgw_bin())
        .args(["pcp", action, "--server", &server, "--json"])
        .args(args)
        .output()
        .expect("running natgw pcp");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "natgw pcp {action} {args:?} printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// `natgw pcp ACTION` that must succeed; its report.
fn pcp_ok(s: &Setup, action: &str, args: &[&str]) -> Value {
    let (ok, report) = pcp(s, action, args);
    assert!(
        ok && report["result"] == "SUCCESS",
        "natgw pcp {action} {args:?} failed: {report}\nnatgw log:\n{}",
        s.natgw.log()
    );
    report
}

/// The external endpoint a MAP or PEER report names.
fn external(report: &Value) -> SocketAddrV4 {
    report["external"]
        .as_str()
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("no external endpoint in {report}"))
}

/// Sends `request` from a fresh socket of `ns` at `from` to `to` and waits for one
/// datagram.
fn exchange(
    ns: &Netns,
    from: Ipv4Addr,
    to: SocketAddrV4,
    request: &[u8],
    within: Duration,
) -> Option<Vec<u8>> {
    let sock = udp(ns, from, 0);
    sock.send_to(request, to).expect("send request");
    recv_nothing(&sock, within).map(|(bytes, _)| bytes)
}

/// One TCP connection from `client` to `to`, accepted by `listener` (a socket in
/// another namespace): the bytes go through both ways. Returns the peer address the
/// listener saw.
fn tcp_through(client: &Netns, listener: TcpListener, to: SocketAddrV4) -> SocketAddrV4 {
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("echo");
        peer
    });
    let mut conn = client
        .run(|| TcpStream::connect_timeout(&to.into(), WAIT))
        .unwrap_or_else(|e| panic!("connecting to {to} through the mapping: {e}"));
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    conn.write_all(b"ping").expect("send");
    let mut echo = [0u8; 4];
    conn.read_exact(&mut echo).expect("echo back");
    assert_eq!(&echo, b"ping");
    match server.join().expect("server thread") {
        std::net::SocketAddr::V4(peer) => peer,
        other => panic!("IPv6 peer {other}"),
    }
}

#[test]
fn map_opens_udp_and_tcp_ports_to_the_wan() {
    // rfc6887 §11: MAP creates an inbound mapping, in the same tables the data path
    // uses, for UDP and for TCP.
    let s = Setup::new(&[]);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 5000);
    let report = pcp_ok(&s, "map", &["--internal-port", "5000", "--lifetime", "600"]);
    let ext_udp = external(&report);
    assert_eq!(*ext_udp.ip(), GW_WAN_ADDR);
    assert_eq!(report["lifetime"], 600);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    wan.send_to(b"to-mapped-udp", ext_udp).expect("send");
    let (got, from) = recv(&lan).expect("the WAN host's datagram reaches the LAN socket");
    assert_eq!(got, b"to-mapped-udp");
    assert_eq!(from, SocketAddrV4::new(WAN_A_ADDR, 7000));

    let listener = s.tb.lan[0]
        .ns
        .run(|| TcpListener::bind((LAN_A_ADDR, 5001)))
        .expect("listen");
    let report = pcp_ok(&s, "map", &["--protocol", "tcp", "--internal-port", "5001"]);
    let ext_tcp = external(&report);
    let peer = tcp_through(&s.tb.wan[0].ns, listener, ext_tcp);
    assert_eq!(
        *peer.ip(),
        WAN_A_ADDR,
        "the internal host sees the real peer"
    );

    // `natgw mappings` tells who holds them and for how long.
    let m = s
        .natgw
        .mapping_of("udp", SocketAddrV4::new(LAN_A_ADDR, 5000))
        .expect("listed");
    assert_eq!(m["origin"], "pcp");
    assert_eq!(m["external"], ext_udp.to_string());
    assert!(
        m["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("10.0.1.2:")),
        "the nonce holder is listed: {m}"
    );
    let remaining = m["remaining_ms"].as_u64().expect("remaining_ms");
    assert!((590_000..=600_000).contains(&remaining), "{m}");
    let m = s
        .natgw
        .mapping_of("tcp", SocketAddrV4::new(LAN_A_ADDR, 5001))
        .expect("listed");
    assert_eq!(m["origin"], "pcp");
}

#[test]
fn renewal_keeps_the_port_and_deletion_closes_it() {
    // rfc6887 §11.3: a renewal with the same nonce keeps the external port; §15:
    // lifetime 0 deletes, and inbound traffic is dropped again.
    let s = Setup::new(&[]);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 5002);
    let first = pcp_ok(&s, "map", &["--internal-port", "5002"]);
    let nonce = first["nonce"].as_str().expect("nonce").to_owned();
    let ext = external(&first);
    let renewed = pcp_ok(
        &s,
        "map",
        &[
            "--internal-port",
            "5002",
            "--nonce",
            &nonce,
            "--lifetime",
            "900",
        ],
    );
    assert_eq!(
        external(&renewed),
        ext,
        "renewal keeps the external endpoint"
    );
    assert_eq!(renewed["lifetime"], 900);
    // Another nonce may not take it over.
    let (ok, other) = pcp(&s, "map", &["--internal-port", "5002"]);
    assert!(!ok);
    assert_eq!(other["result"], "NOT_AUTHORIZED");

    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7001);
    wan.send_to(b"open", ext).expect("send");
    assert!(recv(&lan).is_some(), "mapped port is open");

    pcp_ok(
        &s,
        "delete",
        &["--internal-port", "5002", "--nonce", &nonce],
    );
    assert!(
        s.natgw
            .mapping_of("udp", SocketAddrV4::new(LAN_A_ADDR, 5002))
            .is_none(),
        "deleted from the tables"
    );
    let dropped = s.natgw.counter("drop_no_mapping");
    wan.send_to(b"closed", ext).expect("send");
    assert!(
        recv_nothing(&lan, Duration::from_millis(800)).is_none(),
        "nothing arrives after deletion"
    );
    assert!(
        wait_for(WAIT, || (s.natgw.counter("drop_no_mapping") > dropped)
            .then_some(()))
        .is_some(),
        "the data path drops it for want of a mapping"
    );
}

#[test]
fn peer_returns_the_external_port_traffic_then_uses() {
    // rfc6887 §12: PEER creates the implicit mapping and reports its external
    // endpoint; the internal host's traffic to that peer then leaves from it.
    let s = Setup::new(&[]);
    let report = pcp_ok(
        &s,
        "peer",
        &[
            "--internal-port",
            "6000",
            "--peer",
            "198.51.100.2:7002",
            "--suggest",
            "0.0.0.0:16000",
        ],
    );
    let ext = external(&report);
    assert_eq!(
        ext,
        SocketAddrV4::new(GW_WAN_ADDR, 16000),
        "the suggestion is honoured"
    );
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7002);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 6000);
    lan.send_to(b"hole-punch", SocketAddrV4::new(WAN_A_ADDR, 7002))
        .expect("send");
    let (_, seen) = recv(&wan).expect("arrives at the peer");
    assert_eq!(seen, ext, "the traffic uses the endpoint PEER reported");
    let m = s
        .natgw
        .mapping_of("udp", SocketAddrV4::new(LAN_A_ADDR, 6000))
        .expect("listed");
    assert_eq!(m["origin"], "traffic", "PEER mappings are implicit ones");
}

#[test]
fn natpmpc_maps_a_port_and_reads_the_external_address() {
    // rfc6886 §3.2, §3.3: an independent NAT-PMP client is served on the same port.
    let s = Setup::new(&[]);
    let run = |args: &[&str]| -> Output {
        s.tb.lan[0]
            .ns
            .command("natpmpc")
            .args(args)
            .output()
            .expect("natpmpc not found: install it with `apt-get install natpmpc` (`cargo xtask test` does)")
    };
    let gw = GW_LAN_A_ADDR.to_string();
    let out = run(&["-g", &gw]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "natpmpc -g: {text}\n{}",
        s.natgw.log()
    );
    assert!(
        text.contains("Public IP address : 192.0.2.1"),
        "natpmpc reports the external address: {text}"
    );
    let out = run(&["-g", &gw, "-a", "5000", "5000", "udp", "60"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "natpmpc -a: {text}\n{}",
        s.natgw.log()
    );
    assert!(
        text.contains("Mapped public port 5000 protocol UDP to local port 5000"),
        "{text}"
    );
    let m = s
        .natgw
        .mapping_of("udp", SocketAddrV4::new(LAN_A_ADDR, 5000))
        .expect("listed");
    assert_eq!(m["origin"], "nat-pmp");
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 5000);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7003);
    wan.send_to(b"via-nat-pmp", SocketAddrV4::new(GW_WAN_ADDR, 5000))
        .expect("send");
    let (got, _) = recv(&lan).expect("the NAT-PMP mapping lets it in");
    assert_eq!(got, b"via-nat-pmp");
}

#[test]
fn requests_from_the_wan_get_no_answer() {
    // rfc6887 §8.3 (and rfc6886 §3): the server listens on internal interfaces only.
    let s = Setup::new(&[]);
    let lan_server = SocketAddrV4::new(GW_LAN_A_ADDR, PCP_PORT);
    let announce = pcp_announce(LAN_A_ADDR);
    let answer = exchange(&s.tb.lan[0].ns, LAN_A_ADDR, lan_server, &announce, WAIT);
    assert!(answer.is_some(), "a LAN host gets an answer");

    let wan_server = SocketAddrV4::new(GW_WAN_ADDR, PCP_PORT);
    let ns = &s.tb.wan[0].ns;
    let announce = pcp_announce(WAN_A_ADDR);
    let quiet = Duration::from_millis(1500);
    assert!(
        exchange(ns, WAN_A_ADDR, wan_server, &announce, quiet).is_none(),
        "no PCP answer on the WAN side"
    );
    let map = pcp_map_request(WAN_A_ADDR, IPPROTO_UDP, 5000, 600);
    assert!(exchange(ns, WAN_A_ADDR, wan_server, &map, quiet).is_none());
    let natpmp_address = [0u8, 0];
    assert!(
        exchange(ns, WAN_A_ADDR, wan_server, &natpmp_address, quiet).is_none(),
        "no NAT-PMP answer on the WAN side"
    );
    assert!(
        s.natgw
            .mapping_of("udp", SocketAddrV4::new(WAN_A_ADDR, 5000))
            .is_none(),
        "and no mapping"
    );
}

#[test]
fn mismatched_client_address_gets_address_mismatch() {
    // rfc6887 §8.3: the client address field must be the packet's source address.
    let s = Setup::new(&[]);
    let server = SocketAddrV4::new(GW_LAN_A_ADDR, PCP_PORT);
    let request = pcp_map_request(Ipv4Addr::new(10, 0, 1, 99), IPPROTO_UDP, 5000, 600);
    let answer =
        exchange(&s.tb.lan[0].ns, LAN_A_ADDR, server, &request, WAIT).expect("an error response");
    assert_eq!(answer[0], PCP_VERSION);
    assert_eq!(answer[1], RESPONSE | OP_MAP);
    assert_eq!(answer[3], ADDRESS_MISMATCH, "result code: {answer:?}");
    assert!(s
        .natgw
        .mapping_of("udp", SocketAddrV4::new(LAN_A_ADDR, 5000))
        .is_none());
    assert!(
        s.natgw.log().contains("result=ADDRESS_MISMATCH"),
        "the refusal is logged"
    );
}

#[test]
fn exceeding_the_quota_gets_user_ex_quota() {
    // rfc6887 §7.4 USER_EX_QUOTA, with pcp.max_mappings_per_host from the config file.
    let dir = std::env::temp_dir().join(format!("natgw-pcp-quota-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("natgw.toml");
    std::fs::write(&config, "[pcp]\nmax_mappings_per_host = 1\n").expect("write config");
    let s = Setup::new(&["--config", config.to_str().expect("UTF-8 path")]);
    pcp_ok(&s, "map", &["--internal-port", "5003"]);
    let (ok, report) = pcp(&s, "map", &["--internal-port", "5004"]);
    assert!(!ok, "the second mapping is refused");
    assert_eq!(report["result"], "USER_EX_QUOTA");
    assert!(s.natgw.log().contains("result=USER_EX_QUOTA"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_epoch_goes_on_across_a_restart_and_back_after_a_flush() {
    // rfc6887 §8.5: the epoch goes back exactly when mapping state is lost. A restart
    // adopts the maps (issue #17), so it goes on; a flush loses them, so it goes back.
    let mut s = Setup::new(&[]);
    std::thread::sleep(Duration::from_millis(2500));
    let before = pcp_ok(&s, "announce", &[])["epoch"]
        .as_u64()
        .expect("epoch");
    assert!(before >= 2, "epoch counts seconds: {before}");
    s.natgw.stop();
    s.natgw = Natgw::start(&s.tb.gateway.ns, &[]);
    let kept = pcp_ok(&s, "announce", &[])["epoch"]
        .as_u64()
        .expect("epoch");
    assert!(
        kept >= before,
        "state kept, epoch goes on: {before} -> {kept}"
    );
    s.natgw.stop();
    let (st, out, err) = run_natgw(&s.tb.gateway.ns, &["stop", "--flush"]);
    assert!(st.success(), "{out}{err}");
    s.natgw = Natgw::start(&s.tb.gateway.ns, &[]);
    let after = pcp_ok(&s, "announce", &[])["epoch"]
        .as_u64()
        .expect("epoch");
    assert!(
        after < before,
        "state lost, epoch went back: {kept} -> {after}"
    );
}

#[test]
fn filter_option_admits_only_the_named_peer() {
    // rfc6887 §13.3: with FILTER, only the remote peers it names may reach the mapping.
    let s = Setup::new(&[]);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 5005);
    let report = pcp_ok(
        &s,
        "map",
        &["--internal-port", "5005", "--filter", "198.51.100.2/32:0"],
    );
    let ext = external(&report);
    let filtered = s.natgw.counter("drop_filtered");
    let stranger = udp(&s.tb.wan[1].ns, WAN_B_ADDR, 7004);
    stranger.send_to(b"not-allowed", ext).expect("send");
    assert!(
        recv_nothing(&lan, Duration::from_millis(800)).is_none(),
        "wan-b is filtered"
    );
    assert!(
        wait_for(WAIT, || (s.natgw.counter("drop_filtered") > filtered)
            .then_some(()))
        .is_some(),
        "and counted as filtered"
    );
    let friend = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7004);
    friend.send_to(b"allowed", ext).expect("send");
    let (got, from) = recv(&lan).expect("wan-a's datagram arrives");
    assert_eq!(got, b"allowed");
    assert_eq!(from, SocketAddrV4::new(WAN_A_ADDR, 7004));
    let m = s
        .natgw
        .mapping_of("udp", SocketAddrV4::new(LAN_A_ADDR, 5005))
        .expect("listed");
    assert_eq!(m["filter"], "pcp-filter");
    assert_eq!(m["pcp_filters"][0], "198.51.100.2/32:0");
}

#[test]
fn static_forward_is_open_from_the_start_and_never_expires() {
    // The configuration's [[forward]]: the same explicit mapping, origin static.
    let dir = std::env::temp_dir().join(format!("natgw-pcp-forward-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("natgw.toml");
    std::fs::write(
        &config,
        "[[forward]]\nprotocol = \"udp\"\nexternal_port = 9000\ninternal = \"10.0.1.2:9001\"\n",
    )
    .expect("write config");
    let s = Setup::new(&["--config", config.to_str().expect("UTF-8 path")]);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 9001);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7005);
    wan.send_to(b"forwarded", SocketAddrV4::new(GW_WAN_ADDR, 9000))
        .expect("send");
    let (got, _) = recv(&lan).expect("the forward lets it in");
    assert_eq!(got, b"forwarded");
    let m = s
        .natgw
        .mapping_of("udp", SocketAddrV4::new(LAN_A_ADDR, 9001))
        .expect("listed");
    assert_eq!(m["origin"], "static");
    assert_eq!(m["expires"], false);
    // The host's own traffic from that port leaves from the forwarded port (one
    // endpoint-independent mapping).
    lan.send_to(b"reply", SocketAddrV4::new(WAN_A_ADDR, 7005))
        .expect("send");
    let (_, seen) = recv(&wan).expect("reply arrives");
    assert_eq!(seen, SocketAddrV4::new(GW_WAN_ADDR, 9000));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn address_change_moves_mappings_and_tells_pcp_clients() {
    // rfc6887 §14.2: when the external address changes, PCP clients get unsolicited
    // MAP responses with their mapping's new external endpoint.
    let s = Setup::new(&[]);
    let server = SocketAddrV4::new(GW_LAN_A_ADDR, PCP_PORT);
    let client = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 0);
    client
        .send_to(&pcp_map_request(LAN_A_ADDR, IPPROTO_UDP, 5006, 600), server)
        .expect("send MAP");
    let (answer, _) = recv(&client).expect("MAP answered");
    assert_eq!(answer[3], 0, "SUCCESS: {answer:?}");
    let ext_port = map_response_external(&answer)
        .expect("a MAP response")
        .port();

    let new = Ipv4Addr::new(192, 0, 2, 7);
    let gw = &s.tb.gateway.ns;
    let _ = command_output(gw, "ip", &["addr", "del", "192.0.2.1/24", "dev", "wan0"]);
    let _ = command_output(gw, "ip", &["addr", "add", "192.0.2.7/24", "dev", "wan0"]);
    restore_gateway_default_route(gw);
    let update = wait_for(WAIT, || {
        let (bytes, from) = recv(&client)?;
        let external = map_response_external(&bytes)?;
        (from == server && *external.ip() == new).then_some(external)
    })
    .unwrap_or_else(|| panic!("no unsolicited MAP response:\n{}", s.natgw.log()));
    let moved_to = update.port();
    assert_eq!(moved_to, ext_port, "the mapping keeps its port");

    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 5006);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7006);
    wan.send_to(b"to-new-address", SocketAddrV4::new(new, ext_port))
        .expect("send");
    let (got, _) = recv(&lan).expect("the moved mapping works");
    assert_eq!(got, b"to-new-address");
    // New traffic leaves from the new address too.
    let other = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 5007);
    other
        .send_to(b"out", SocketAddrV4::new(WAN_A_ADDR, 7006))
        .expect("send");
    let (_, seen) = recv(&wan).expect("arrives");
    assert_eq!(*seen.ip(), new);
    assert_eq!(s.natgw.status()["external_address"], "192.0.2.7");
}

#[test]
fn start_is_announced_to_the_lan() {
    // rfc6887 §14.1.3 (ANNOUNCE) and rfc6886 §3.2.1 (address notice): multicast to
    // 224.0.0.1:5350 when the server's state begins.
    require_root();
    let tb = Testbed::new().expect("testbed");
    let listener = udp(&tb.lan[0].ns, Ipv4Addr::UNSPECIFIED, CLIENT_PORT);
    let natgw = Natgw::start(&tb.gateway.ns, &[]);
    let server = SocketAddrV4::new(GW_LAN_A_ADDR, PCP_PORT);
    let (mut announce, mut natpmp) = (false, false);
    let heard = wait_for(WAIT, || {
        let (bytes, from) = recv(&listener)?;
        assert_eq!(
            from, server,
            "announced from the LAN address and server port"
        );
        match bytes.as_slice() {
            [PCP_VERSION, op, _, 0, ..] if *op == RESPONSE | OP_ANNOUNCE => announce = true,
            // NAT-PMP: version 0, opcode 128, result 0, epoch, the external address.
            [0, 128, 0, 0, _, _, _, _, a, b, c, d] => {
                assert_eq!(Ipv4Addr::new(*a, *b, *c, *d), GW_WAN_ADDR);
                natpmp = true;
            }
            other => panic!("unexpected announcement {other:?}"),
        }
        (announce && natpmp).then_some(())
    });
    assert!(
        heard.is_some(),
        "ANNOUNCE and the NAT-PMP notice heard:\n{}",
        natgw.log()
    );
}
