//! Which path natgw translates on, seen in its counters: the XDP fast path once the
//! gateway's veths accept redirects ([`testbed::Testbed::accept_redirects`]: GRO on
//! their peers' ends), the kernel's path (TC, with `pass_no_redirect` counted) on the
//! testbed as a first run finds it — and natgw following the change while it runs. The
//! same split `cargo xtask run` shows in its two parts.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddrV4, TcpListener, TcpStream};

use natgw_integration_tests::{recv, require_root, udp, wait_for, Natgw, Setup, WAIT};
use serde_json::Value;
use testbed::{offload, Testbed, GW_WAN_ADDR, LAN_A_ADDR, WAN_A_ADDR};

/// The counters that say which path a translated packet took.
const PATH_COUNTERS: [&str; 5] = [
    "xdp_out_redirected",
    "xdp_in_redirected",
    "tc_out_translated",
    "tc_in_translated",
    "pass_no_redirect",
];

/// Round trips per measured round: each is one packet out and one in.
const ROUND_TRIPS: u64 = 10;

/// The WAN host's UDP echo port.
const ECHO_PORT: u16 = 7000;

/// The WAN host's TCP port.
const TCP_PORT: u16 = 8080;

/// The path counters, in [`PATH_COUNTERS`]'s order.
fn path_counters(natgw: &Natgw) -> [u64; 5] {
    PATH_COUNTERS.map(|name| natgw.counter(name))
}

/// How much each path counter rose from `before` to now, by name.
fn rise(natgw: &Natgw, before: [u64; 5]) -> Vec<(&'static str, u64)> {
    PATH_COUNTERS
        .iter()
        .zip(path_counters(natgw).iter().zip(before))
        .map(|(name, (now, then))| (*name, now - then))
        .collect()
}

fn of(rise: &[(&str, u64)], name: &str) -> u64 {
    rise.iter()
        .find(|(n, _)| *n == name)
        .map_or_else(|| panic!("no counter {name}"), |(_, value)| *value)
}

/// `ROUND_TRIPS` datagrams from lan-a:`port` to wan-a's echo port, each answered;
/// asserts every one was translated to the gateway's external address.
fn udp_round_trips(s: &Setup, port: u16, rounds: u64) {
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, port);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, ECHO_PORT);
    let to = SocketAddrV4::new(WAN_A_ADDR, ECHO_PORT);
    for round in 0..rounds {
        let payload = format!("round {round} from port {port}");
        lan.send_to(payload.as_bytes(), to)
            .expect("send from lan-a");
        let (data, seen) = recv(&wan).expect("wan-a received the datagram");
        assert_eq!(data, payload.as_bytes());
        assert_eq!(
            *seen.ip(),
            GW_WAN_ADDR,
            "translated to the external address"
        );
        wan.send_to(b"echo", seen).expect("echo from wan-a");
        let (reply, from) = recv(&lan).expect("lan-a received the echo through the NAT");
        assert_eq!((reply.as_slice(), from), (&b"echo"[..], to));
    }
}

/// A TCP connection from lan-a:`port` to wan-a, a line each way; asserts wan-a saw the
/// gateway's external address.
fn tcp_exchange(s: &Setup, port: u16) {
    let listen_at = SocketAddrV4::new(WAN_A_ADDR, TCP_PORT);
    let listener = s.tb.wan[0]
        .ns
        .run(|| TcpListener::bind(listen_at))
        .expect("listening on wan-a");
    let client = s.tb.lan[0]
        .ns
        .run(|| {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.bind(&SocketAddrV4::new(LAN_A_ADDR, port).into())?;
            socket.connect_timeout(&listen_at.into(), WAIT)?;
            std::io::Result::Ok(TcpStream::from(socket))
        })
        .expect("connecting through the NAT");
    let (mut accepted, peer) = listener.accept().expect("wan-a accepts");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(GW_WAN_ADDR),
        "translated to the external address"
    );
    for stream in [&client, &accepted] {
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
    }
    (&client).write_all(b"hello\n").expect("lan-a sends");
    let mut line = [0u8; 6];
    accepted.read_exact(&mut line).expect("wan-a reads");
    assert_eq!(&line, b"hello\n");
    accepted.write_all(b"howdy\n").expect("wan-a answers");
    (&client)
        .read_exact(&mut line)
        .expect("lan-a reads the answer");
    assert_eq!(&line, b"howdy\n");
}

/// Whether natgw lists every interface of the gateway with `redirect_ok == want`.
fn redirect_ok_everywhere(status: &Value, tb: &Testbed, want: bool) -> bool {
    let Some(listed) = status["interfaces"].as_array() else {
        return false;
    };
    tb.redirect_peers().iter().all(|peer| {
        listed
            .iter()
            .any(|i| i["name"] == peer.gateway_if && i["redirect_ok"] == want)
    })
}

fn gro_everywhere(tb: &Testbed) -> Vec<bool> {
    tb.redirect_peers()
        .iter()
        .map(|peer| offload::gro(peer.peer_ns, peer.peer_if).expect("reading GRO"))
        .collect()
}

/// Asserts that this round's traffic crossed in XDP both ways and none of it on the
/// kernel's path.
fn assert_fast_path(s: &Setup, rise: &[(&str, u64)], packets_each_way: u64) {
    let status = s.natgw.status();
    assert!(
        of(rise, "xdp_out_redirected") >= packets_each_way,
        "{rise:?}\n{status}"
    );
    assert!(
        of(rise, "xdp_in_redirected") >= packets_each_way,
        "{rise:?}\n{status}"
    );
    for kernel in ["tc_out_translated", "tc_in_translated", "pass_no_redirect"] {
        assert_eq!(of(rise, kernel), 0, "{kernel}: {rise:?}\n{status}");
    }
}

/// Asserts that this round's traffic crossed on the kernel's path both ways, handed
/// over by XDP for want of redirects, and none of it in XDP.
fn assert_kernel_path(s: &Setup, rise: &[(&str, u64)], packets_each_way: u64) {
    let status = s.natgw.status();
    assert!(
        of(rise, "tc_out_translated") >= packets_each_way,
        "{rise:?}\n{status}"
    );
    assert!(
        of(rise, "tc_in_translated") >= packets_each_way,
        "{rise:?}\n{status}"
    );
    assert!(
        of(rise, "pass_no_redirect") >= 2 * packets_each_way,
        "{rise:?}\n{status}"
    );
    for xdp in ["xdp_out_redirected", "xdp_in_redirected"] {
        assert_eq!(of(rise, xdp), 0, "{xdp}: {rise:?}\n{status}");
    }
}

#[test]
fn udp_and_tcp_are_translated_in_xdp_when_the_peers_accept_redirects() {
    require_root();
    let tb = Testbed::new().expect("building the testbed");
    tb.accept_redirects().expect("turning GRO on at the peers");
    assert_eq!(gro_everywhere(&tb), [true, true, true]);
    let natgw = Natgw::start(&tb.gateway.ns, &[]);
    let s = Setup { natgw, tb };
    let status = s.natgw.status();
    assert!(redirect_ok_everywhere(&status, &s.tb, true), "{status}");

    // The first packets may find the gateway's neighbours unresolved (pass_no_neigh).
    udp_round_trips(&s, 42_000, 1);
    let before = path_counters(&s.natgw);
    // A new port: its mapping is made on the fast path too.
    udp_round_trips(&s, 42_001, ROUND_TRIPS);
    assert_fast_path(&s, &rise(&s.natgw, before), ROUND_TRIPS);

    let before = path_counters(&s.natgw);
    tcp_exchange(&s, 42_002);
    // SYN, ACK, data out; SYN-ACK, ACK, data in (at least).
    assert_fast_path(&s, &rise(&s.natgw, before), 3);
}

#[test]
fn without_redirect_peers_traffic_takes_tc_and_counts_pass_no_redirect() {
    // The control: the testbed as a first run finds it.
    let s = Setup::new(&[]);
    assert_eq!(gro_everywhere(&s.tb), [false, false, false]);
    let status = s.natgw.status();
    assert!(redirect_ok_everywhere(&status, &s.tb, false), "{status}");

    udp_round_trips(&s, 42_000, 1);
    let before = path_counters(&s.natgw);
    udp_round_trips(&s, 42_001, ROUND_TRIPS);
    assert_kernel_path(&s, &rise(&s.natgw, before), ROUND_TRIPS);

    let before = path_counters(&s.natgw);
    tcp_exchange(&s, 42_002);
    assert_kernel_path(&s, &rise(&s.natgw, before), 3);
}

#[test]
fn natgw_follows_the_peers_accepting_and_refusing_redirects_while_it_runs() {
    let s = Setup::new(&[]);
    udp_round_trips(&s, 42_000, 1);

    s.tb.accept_redirects()
        .expect("turning GRO on at the peers");
    wait_for(WAIT, || {
        redirect_ok_everywhere(&s.natgw.status(), &s.tb, true).then_some(())
    })
    .unwrap_or_else(|| panic!("natgw did not notice GRO on: {}", s.natgw.status()));
    // The mapping made on the kernel's path is used by the fast path now.
    let before = path_counters(&s.natgw);
    udp_round_trips(&s, 42_000, ROUND_TRIPS);
    assert_fast_path(&s, &rise(&s.natgw, before), ROUND_TRIPS);

    s.tb.refuse_redirects()
        .expect("turning GRO off at the peers");
    assert_eq!(gro_everywhere(&s.tb), [false, false, false]);
    wait_for(WAIT, || {
        redirect_ok_everywhere(&s.natgw.status(), &s.tb, false).then_some(())
    })
    .unwrap_or_else(|| panic!("natgw did not notice GRO off: {}", s.natgw.status()));
    let before = path_counters(&s.natgw);
    udp_round_trips(&s, 42_000, ROUND_TRIPS);
    assert_kernel_path(&s, &rise(&s.natgw, before), ROUND_TRIPS);
}
