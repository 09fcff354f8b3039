//! The TURN relay of `natgw rendezvous` (RFC 8656) on the plain testbed (no natgw on
//! the gateway, which only routes): the rendezvous runs on wan-a (198.51.100.2), TURN
//! clients on wan-b (203.0.113.2) or in the gateway namespace (192.0.2.1), peers on
//! wan-b.
//!
//! - coturn's `turnutils_uclient` relays messages client to client (`-y`) through
//!   natgw's relay, over UDP and TCP to the server, with static users and with
//!   coturn's shared-secret scheme; a wrong password or secret relays nothing.
//! - A client of our own (natgw-proto's STUN codec, long-term credentials) checks the
//!   relayed address is in `--relay-ports`, a Send indication reaches a peer from the
//!   relayed address, a peer's answer comes back as a Data indication, denied peers
//!   (loopback, private) get 403 and a Send to the server's own non-relay port is
//!   dropped (its relay address itself is an allowed peer: relay to relay), and the per-user quota
//!   gives 486 while another user still allocates; an allocation over TCP ends, and
//!   its relay port is free again, when its connection closes.
//! - A flood of unauthenticated Allocates (28 bytes each) is answered with a small
//!   fraction of its bytes (the per-prefix challenge budget), another prefix and a
//!   real client on the flooded address are still served; an allocation flood from
//!   one user stops at its quota while another user relays; TCP connections are
//!   bounded per address and a stream that breaks framing is closed.

use std::io::{BufRead as _, BufReader};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use natgw_integration_tests::require_root;
use natgw_proto::stun::wire::{Attribute, Class, ErrorCode, Packet, Repr, MAGIC_COOKIE};
use natgw_proto::turn::auth::{self, long_term_key, INTEGRITY_LEN};
use natgw_proto::turn::wire::{
    self as turn, METHOD_ALLOCATE, METHOD_CREATE_PERMISSION, METHOD_DATA, METHOD_SEND,
};
use serde_json::Value;
use testbed::{Netns, Testbed, GW_WAN_ADDR, WAN_A_ADDR, WAN_B_ADDR};

/// The TURN port (RFC 8656 §18.6... the STUN port).
const PORT: u16 = 3478;
const REALM: &str = "natgw";
/// The relay port range every test configures.
const RELAY_MIN: u16 = 50_000;
const RELAY_MAX: u16 = 50_099;

// ---------------------------------------------------------------------------------
// The rendezvous.
// ---------------------------------------------------------------------------------

/// `natgw rendezvous --json` with TURN on wan-a ([`natgw_integration_tests::Rendezvous`]).
struct Rendezvous(natgw_integration_tests::Rendezvous);

impl Rendezvous {
    fn start(ns: &Netns, extra: &[&str]) -> Self {
        let ports = format!("{RELAY_MIN}-{RELAY_MAX}");
        let args = [&["--relay-ports", ports.as_str()], extra].concat();
        let r = natgw_integration_tests::Rendezvous::start(
            ns,
            SocketAddrV4::new(WAN_A_ADDR, PORT),
            &args,
            false,
        );
        assert_eq!(r.first["turn"], true, "{}", r.first);
        Self(r)
    }

    /// Stops it and returns the TURN engine's counters from its last line.
    fn stop(self) -> Value {
        self.0.stop()["turn"]["engine"].clone()
    }
}

fn counter(c: &Value, name: &str) -> u64 {
    c[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {c}"))
}

// ---------------------------------------------------------------------------------
// turnutils_uclient.
// ---------------------------------------------------------------------------------

/// What `turnutils_uclient` printed at the end.
#[derive(Debug)]
struct Uclient {
    sent: u64,
    received: u64,
    lost: Option<u64>,
    output: String,
}

/// Runs `turnutils_uclient` on wan-b against the rendezvous (30 s at most):
/// `-y -c -n 10 -l 100` plus `args` (`-s`: Send/Data indications instead of
/// ChannelBind and ChannelData).
fn uclient(ns: &Netns, args: &[&str]) -> Uclient {
    let mut child = ns
        .command("timeout")
        .args(["30", "turnutils_uclient", "-y", "-c", "-n", "10", "-m", "1"])
        .args(["-l", "100", "-p", &PORT.to_string()])
        .args(args)
        .arg(WAN_A_ADDR.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running turnutils_uclient (is coturn installed?)");
    let mut output = String::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            output.push_str(&line);
            output.push('\n');
        }
    }
    let _ = child.wait();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut output);
    }
    // "start_mclient: tot_send_msgs=20, tot_recv_msgs=20" and
    // "Total lost packets 0 (0.000000%), ...".
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let totals = output
        .lines()
        .rev()
        .find(|l| l.contains("tot_send_msgs=") && !l.contains("msz="));
    let lost = output
        .lines()
        .rev()
        .find_map(|l| field(l, "Total lost packets "));
    Uclient {
        sent: totals.and_then(|l| field(l, "tot_send_msgs=")).unwrap_or(0),
        received: totals.and_then(|l| field(l, "tot_recv_msgs=")).unwrap_or(0),
        lost,
        output,
    }
}

fn assert_relayed(what: &str, u: &Uclient) {
    eprintln!(
        "{what}: sent {} received {} lost {:?}",
        u.sent, u.received, u.lost
    );
    assert!(
        u.sent > 0 && u.sent == u.received && u.lost == Some(0),
        "{what}: {u:?}"
    );
}

// The client-to-client mode relays between two relayed addresses of the server: its
// own address, denied by default, so the tests allow it.
const ALLOW_SELF: &str = "198.51.100.2/32";

#[test]
fn turnutils_uclient_relays_over_udp_and_tcp_with_static_users() {
    require_root();
    let tb = Testbed::new().expect("building the testbed");
    let server = Rendezvous::start(
        &tb.wan[0].ns,
        &[
            "--turn-user",
            "alice:wonderland",
            "--turn-allow-peer",
            ALLOW_SELF,
        ],
    );
    let client = &tb.wan[1].ns;
    let udp = uclient(client, &["-s", "-u", "alice", "-w", "wonderland"]);
    assert_relayed("UDP, Send/Data indications", &udp);
    let tcp = uclient(client, &["-s", "-t", "-u", "alice", "-w", "wonderland"]);
    assert_relayed("TCP, Send/Data indications", &tcp);
    // Without -s: ChannelBind (coturn picks channels above 0x4FFF) and ChannelData,
    // padded over TCP.
    let udp_channel = uclient(client, &["-u", "alice", "-w", "wonderland"]);
    assert_relayed("UDP, ChannelData", &udp_channel);
    let tcp_channel = uclient(client, &["-t", "-u", "alice", "-w", "wonderland"]);
    assert_relayed("TCP, ChannelData", &tcp_channel);
    let wrong = uclient(client, &["-s", "-u", "alice", "-w", "wrong"]);
    eprintln!("wrong password: {wrong:?}");
    assert_eq!(wrong.received, 0, "{wrong:?}");
    assert!(
        wrong.output.contains("401") || wrong.output.to_lowercase().contains("error"),
        "{wrong:?}"
    );
    let c = server.stop();
    eprintln!("TURN counters: {c}");
    assert!(counter(&c, "allocations_created") >= 4, "{c}");
    assert!(counter(&c, "auth_failures") >= 1, "{c}");
    let runs = [&udp, &tcp, &udp_channel, &tcp_channel];
    assert_eq!(
        counter(&c, "to_peer_packets"),
        runs.iter().map(|u| u.sent).sum::<u64>(),
        "every relayed message went out of a relay socket: {c}"
    );
    assert_eq!(
        counter(&c, "to_client_packets"),
        runs.iter().map(|u| u.received).sum::<u64>()
    );
}

#[test]
fn turnutils_uclient_relays_with_shared_secret_credentials() {
    require_root();
    let tb = Testbed::new().expect("building the testbed");
    let server = Rendezvous::start(
        &tb.wan[0].ns,
        &[
            "--turn-secret",
            "north",
            "--turn-secret",
            "south",
            "--turn-allow-peer",
            ALLOW_SELF,
        ],
    );
    let client = &tb.wan[1].ns;
    let ok = uclient(client, &["-u", "carol", "-W", "south"]);
    assert_relayed("shared secret", &ok);
    let wrong = uclient(client, &["-u", "carol", "-W", "east"]);
    eprintln!("wrong secret: {wrong:?}");
    assert_eq!(wrong.received, 0, "{wrong:?}");
    let c = server.stop();
    eprintln!("TURN counters: {c}");
    assert!(counter(&c, "auth_failures") >= 1, "{c}");
    assert_eq!(counter(&c, "to_peer_packets"), ok.sent, "{c}");
}

// ---------------------------------------------------------------------------------
// A client of our own.
// ---------------------------------------------------------------------------------

/// A TURN client on a UDP socket, with long-term credentials.
struct Client {
    socket: UdpSocket,
    user: &'static str,
    password: &'static str,
    nonce: String,
    next_id: u8,
}

impl Client {
    fn new(ns: &Netns, user: &'static str, password: &'static str) -> Self {
        Self::on(ns, GW_WAN_ADDR, user, password)
    }

    fn on(ns: &Netns, ip: Ipv4Addr, user: &'static str, password: &'static str) -> Self {
        let socket = ns
            .bind_udp(SocketAddrV4::new(ip, 0))
            .expect("client socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        socket
            .connect(SocketAddrV4::new(WAN_A_ADDR, PORT))
            .expect("connect");
        Self {
            socket,
            user,
            password,
            nonce: String::new(),
            next_id: 0,
        }
    }

    /// Sends a request (signed once a nonce is known) and returns the response,
    /// retransmitting every 500 ms as RFC 8489 §6.2.1 clients do (7 times at most).
    fn request(&mut self, method: u16, attributes: Vec<Attribute<'static>>) -> Vec<u8> {
        self.next_id += 1;
        let id = [self.next_id; 12];
        let signed = !self.nonce.is_empty();
        let mut attributes: Vec<Attribute<'_>> = attributes;
        if signed {
            attributes.extend([
                Attribute::Username(self.user),
                Attribute::Realm(REALM),
                Attribute::Nonce(&self.nonce),
                Attribute::MessageIntegrity(&[0; INTEGRITY_LEN]),
            ]);
        }
        let mut bytes = Repr {
            class: Class::Request,
            method,
            cookie: MAGIC_COOKIE,
            transaction_id: id,
            attributes,
        }
        .to_bytes();
        if signed {
            assert!(auth::sign(
                &mut bytes,
                &long_term_key(self.user, REALM, self.password)
            ));
        }
        let mut buf = [0; 2048];
        for _ in 0..7 {
            self.socket.send(&bytes).expect("send");
            // Responses to earlier transactions are skipped; a timeout retransmits.
            for _ in 0..10 {
                let Ok(n) = self.socket.recv(&mut buf) else {
                    break;
                };
                if buf[8..20] == id {
                    return buf[..n].to_vec();
                }
            }
        }
        panic!("no response to {method:#x}");
    }

    /// Allocate: the first round trip gets the nonce (401), the second the answer.
    fn allocate(&mut self) -> Vec<u8> {
        let udp = || vec![Attribute::RequestedTransport(turn::PROTOCOL_UDP)];
        if self.nonce.is_empty() {
            let challenge = self.request(METHOD_ALLOCATE, udp());
            assert_eq!(error(&challenge), Some(401));
            self.nonce = parse(&challenge)
                .find(|a| match a {
                    Attribute::Nonce(n) => Some((*n).to_owned()),
                    _ => None,
                })
                .expect("a NONCE");
        }
        self.request(METHOD_ALLOCATE, udp())
    }

    fn permit(&mut self, peer: Ipv4Addr) -> Vec<u8> {
        self.request(
            METHOD_CREATE_PERMISSION,
            vec![Attribute::XorPeerAddress(SocketAddr::V4(
                SocketAddrV4::new(peer, 9),
            ))],
        )
    }

    /// A Send indication of `data` to `peer` (no answer comes back).
    fn send_indication(&self, transaction: u8, peer: SocketAddrV4, data: &[u8]) {
        let send = Repr {
            class: Class::Indication,
            method: METHOD_SEND,
            cookie: MAGIC_COOKIE,
            transaction_id: [transaction; 12],
            attributes: vec![
                Attribute::XorPeerAddress(SocketAddr::V4(peer)),
                Attribute::Data(data),
            ],
        }
        .to_bytes();
        self.socket.send(&send).expect("send indication");
    }
}

fn parse(bytes: &[u8]) -> Repr<'_> {
    Repr::parse(&Packet::new_checked(bytes).expect("a STUN message")).expect("parses")
}

fn error(bytes: &[u8]) -> Option<u16> {
    parse(bytes).find(|a| match a {
        Attribute::ErrorCode(ErrorCode { code, .. }) => Some(*code),
        _ => None,
    })
}

fn relayed(bytes: &[u8]) -> Option<SocketAddrV4> {
    parse(bytes).find(|a| match a {
        Attribute::XorRelayedAddress(SocketAddr::V4(r)) => Some(*r),
        _ => None,
    })
}

#[test]
fn a_raw_client_relays_to_a_peer_and_is_refused_denied_peers_and_extra_allocations() {
    require_root();
    let tb = Testbed::new().expect("building the testbed");
    let server = Rendezvous::start(
        &tb.wan[0].ns,
        &[
            "--turn-user",
            "alice:wonderland",
            "--turn-user",
            "bob:builder",
            "--turn-user",
            "carol:cat",
            "--turn-quota",
            "1",
        ],
    );
    let mut alice = Client::new(&tb.gateway.ns, "alice", "wonderland");
    let response = alice.allocate();
    assert_eq!(error(&response), None, "Allocate failed");
    let relay = relayed(&response).expect("XOR-RELAYED-ADDRESS");
    assert_eq!(*relay.ip(), WAN_A_ADDR);
    assert!(
        (RELAY_MIN..=RELAY_MAX).contains(&relay.port()),
        "relay port {relay}"
    );

    // A peer on wan-b: permission, then a Send indication reaches it from the relay.
    let peer = tb.wan[1]
        .ns
        .bind_udp(SocketAddrV4::new(WAN_B_ADDR, 7000))
        .expect("peer socket");
    peer.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert_eq!(error(&alice.permit(WAN_B_ADDR)), None, "CreatePermission");
    alice.send_indication(0x55, SocketAddrV4::new(WAN_B_ADDR, 7000), b"hello peer");
    let mut buf = [0; 2048];
    let (n, from) = peer.recv_from(&mut buf).expect("the relayed datagram");
    assert_eq!(&buf[..n], b"hello peer");
    assert_eq!(
        from,
        SocketAddr::V4(relay),
        "it came from the relayed address"
    );
    // The peer answers: a Data indication to the client.
    peer.send_to(b"hello client", from).expect("peer answer");
    let mut got = None;
    for _ in 0..10 {
        let n = alice.socket.recv(&mut buf).expect("a Data indication");
        let repr = parse(&buf[..n]);
        if repr.class == Class::Indication && repr.method == METHOD_DATA {
            got = repr.find(|a| match a {
                Attribute::Data(d) => Some(d.to_vec()),
                _ => None,
            });
            break;
        }
    }
    assert_eq!(got.as_deref(), Some(&b"hello client"[..]));

    // Denied peers: loopback, a private address.
    for denied in [Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 0, 1, 2)] {
        assert_eq!(error(&alice.permit(denied)), Some(403), "peer {denied}");
    }
    // The server's own address is its relay address: a permission for it is
    // granted (relay to relay), but only its relay ports are reachable — a Send
    // indication to the server's TURN port is dropped as a denied peer.
    assert_eq!(
        error(&alice.permit(WAN_A_ADDR)),
        None,
        "relay-to-relay permission"
    );
    alice.send_indication(
        0x56,
        SocketAddrV4::new(WAN_A_ADDR, PORT),
        b"to the server itself",
    );

    // Quota 1: alice's second allocation (another 5-tuple) gets 486, bob's succeeds.
    let mut alice2 = Client::new(&tb.gateway.ns, "alice", "wonderland");
    assert_eq!(error(&alice2.allocate()), Some(486));
    let mut bob = Client::new(&tb.gateway.ns, "bob", "builder");
    let bob_response = bob.allocate();
    assert_eq!(error(&bob_response), None);
    assert_ne!(relayed(&bob_response), Some(relay));

    // Over TCP: carol's allocation ends, and its relay socket closes, with her
    // connection.
    let tcp_relay = tb.gateway.ns.run(|| {
        let mut stream = TcpStream::connect(SocketAddrV4::new(WAN_A_ADDR, PORT)).expect("TCP");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let challenge = tcp_exchange(&mut stream, &allocate_request(1, None));
        assert_eq!(error(&challenge), Some(401));
        let nonce = parse(&challenge)
            .find(|a| match a {
                Attribute::Nonce(n) => Some((*n).to_owned()),
                _ => None,
            })
            .expect("a NONCE");
        let granted = tcp_exchange(&mut stream, &allocate_request(2, Some(&nonce)));
        assert_eq!(error(&granted), None, "Allocate over TCP");
        relayed(&granted).expect("XOR-RELAYED-ADDRESS")
    });
    assert!((RELAY_MIN..=RELAY_MAX).contains(&tcp_relay.port()));
    let mut freed = false;
    for _ in 0..50 {
        if tb.wan[0].ns.bind_udp(tcp_relay).is_ok() {
            freed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        freed,
        "relay {tcp_relay} still bound after its TCP connection closed"
    );

    let c = server.stop();
    eprintln!("TURN counters: {c}");
    assert_eq!(counter(&c, "allocations_created"), 3, "{c}");
    assert_eq!(counter(&c, "allocations_deleted"), 1, "{c}");
    assert_eq!(counter(&c, "quota_refusals"), 1, "{c}");
    assert_eq!(counter(&c, "peer_denied"), 3, "{c}");
    assert_eq!(counter(&c, "to_peer_packets"), 1, "{c}");
    assert_eq!(counter(&c, "to_client_packets"), 1, "{c}");
}

/// carol's Allocate over TCP, signed when a nonce is given.
fn allocate_request(id: u8, nonce: Option<&str>) -> Vec<u8> {
    let mut attributes = vec![Attribute::RequestedTransport(turn::PROTOCOL_UDP)];
    if let Some(nonce) = nonce {
        attributes.extend([
            Attribute::Username("carol"),
            Attribute::Realm(REALM),
            Attribute::Nonce(nonce),
            Attribute::MessageIntegrity(&[0; INTEGRITY_LEN]),
        ]);
    }
    let mut bytes = Repr {
        class: Class::Request,
        method: METHOD_ALLOCATE,
        cookie: MAGIC_COOKIE,
        transaction_id: [id; 12],
        attributes,
    }
    .to_bytes();
    if nonce.is_some() {
        assert!(auth::sign(
            &mut bytes,
            &long_term_key("carol", REALM, "cat")
        ));
    }
    bytes
}

/// Writes a STUN message to the stream and reads the one that answers it.
fn tcp_exchange(stream: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    stream.write_all(request).expect("write");
    let mut header = [0; 20];
    stream.read_exact(&mut header).expect("a response header");
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut message = header.to_vec();
    message.resize(20 + len, 0);
    stream
        .read_exact(&mut message[20..])
        .expect("a response body");
    assert_eq!(
        message[8..20],
        request[8..20],
        "the response to our request"
    );
    message
}

/// The smallest request that is answered without credentials: an Allocate with
/// REQUESTED-TRANSPORT, 28 bytes.
fn tiny_allocate(n: u32) -> Vec<u8> {
    let mut id = [0x33; 12];
    id[..4].copy_from_slice(&n.to_be_bytes());
    Repr {
        class: Class::Request,
        method: METHOD_ALLOCATE,
        cookie: MAGIC_COOKIE,
        transaction_id: id,
        attributes: vec![Attribute::RequestedTransport(turn::PROTOCOL_UDP)],
    }
    .to_bytes()
}

#[test]
fn a_flood_of_unauthenticated_allocates_is_not_reflected_and_real_clients_still_allocate() {
    require_root();
    let tb = Testbed::new().expect("building the testbed");
    let server = Rendezvous::start(&tb.wan[0].ns, &["--turn-user", "alice:wonderland"]);
    // 3200 Allocates of 28 bytes from 16 ports of wan-b, in rounds of 100 every 5 ms
    // (the pace of a modest flood, slow enough that the kernel drops none of them).
    let flood: Vec<UdpSocket> = (0..16)
        .map(|_| {
            let s = tb.wan[1]
                .ns
                .bind_udp(SocketAddrV4::new(WAN_B_ADDR, 0))
                .expect("flood socket");
            s.connect(SocketAddrV4::new(WAN_A_ADDR, PORT))
                .expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            s
        })
        .collect();
    let started = std::time::Instant::now();
    let (mut sent, mut bytes_in) = (0_u64, 0_u64);
    for round in 0..32_u32 {
        for i in 0..100 {
            let request = tiny_allocate(round * 100 + i);
            flood[(i % 16) as usize].send(&request).expect("flood send");
            sent += 1;
            bytes_in += request.len() as u64;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let flooding = started.elapsed().as_secs_f64();
    // Another prefix is answered at once (the budget is per /24 before it is global).
    let probe = tb
        .gateway
        .ns
        .bind_udp(SocketAddrV4::new(GW_WAN_ADDR, 0))
        .expect("probe socket");
    probe
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    probe
        .send_to(
            &tiny_allocate(u32::MAX),
            SocketAddrV4::new(WAN_A_ADDR, PORT),
        )
        .expect("probe send");
    let mut buf = [0; 2048];
    let n = probe.recv(&mut buf).expect("a 401 to another prefix");
    assert_eq!(error(&buf[..n]), Some(401));
    let probe_bytes = n as u64;
    let (mut answers, mut bytes_out) = (0_u64, 0_u64);
    for s in &flood {
        while let Ok(n) = s.recv(&mut buf) {
            assert_eq!(error(&buf[..n]), Some(401));
            answers += 1;
            bytes_out += n as u64;
        }
    }
    eprintln!(
        "flood: {sent} requests, {bytes_in} bytes in {flooding:.2} s; answered {answers}, \
         {bytes_out} bytes ({:.3} of the bytes in)",
        bytes_out as f64 / bytes_in as f64
    );
    // Per /24: a burst of 8 KiB and 2 KiB/s (the 401 is 96 bytes with realm "natgw"),
    // with half a second's slack for the requests still queued when sending ended.
    assert!(answers > 0, "the flood's first requests are answered");
    assert!(
        bytes_out as f64 <= 8192.0 + 2048.0 * (flooding + 0.5),
        "{bytes_out} bytes answered in {flooding:.2} s"
    );
    assert!(bytes_out * 4 < bytes_in, "in {bytes_in}, out {bytes_out}");

    // A real client on the flooded address: its first Allocate may go unanswered; it
    // retransmits, gets its 401, and its signed Allocate succeeds.
    let mut alice = Client::on(&tb.wan[1].ns, WAN_B_ADDR, "alice", "wonderland");
    let response = alice.allocate();
    assert_eq!(error(&response), None, "Allocate after the flood");
    assert!(relayed(&response).is_some());

    let c = server.stop();
    eprintln!("TURN counters: {c}");
    let limited = c["dropped"]["challenge_limited"]
        .as_u64()
        .expect("dropped.challenge_limited");
    assert!(limited >= sent - answers, "{c}");
    assert!(counter(&c, "challenge_bytes_in") >= bytes_in, "{c}");
    let out = counter(&c, "challenge_bytes_out");
    assert!(
        out >= bytes_out + probe_bytes && out <= bytes_out + probe_bytes + 8 * 100,
        "what went out is what the test received, and alice's 401s: {c}"
    );
    assert_eq!(counter(&c, "allocations_created"), 1, "{c}");
}

#[test]
fn an_allocation_flood_from_one_user_stops_at_its_quota_and_another_user_relays() {
    require_root();
    let tb = Testbed::new().expect("building the testbed");
    let server = Rendezvous::start(
        &tb.wan[0].ns,
        &[
            "--turn-user",
            "alice:wonderland",
            "--turn-user",
            "bob:builder",
            "--turn-quota",
            "3",
        ],
    );
    // alice tries 20 allocations from 20 ports: 3 granted, 17 refused with 486.
    let mut alices: Vec<Client> = (0..20)
        .map(|_| Client::new(&tb.gateway.ns, "alice", "wonderland"))
        .collect();
    let codes: Vec<Option<u16>> = alices.iter_mut().map(|a| error(&a.allocate())).collect();
    let granted = codes.iter().filter(|c| c.is_none()).count();
    let refused = codes.iter().filter(|c| **c == Some(486)).count();
    assert_eq!((granted, refused), (3, 17), "{codes:?}");
    // bob allocates and relays to a peer and back.
    let mut bob = Client::new(&tb.gateway.ns, "bob", "builder");
    let response = bob.allocate();
    assert_eq!(error(&response), None, "bob's Allocate");
    let relay = relayed(&response).expect("XOR-RELAYED-ADDRESS");
    let peer = tb.wan[1]
        .ns
        .bind_udp(SocketAddrV4::new(WAN_B_ADDR, 7001))
        .expect("peer socket");
    peer.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert_eq!(error(&bob.permit(WAN_B_ADDR)), None, "CreatePermission");
    bob.send_indication(0x56, SocketAddrV4::new(WAN_B_ADDR, 7001), b"bob's data");
    let mut buf = [0; 2048];
    let (n, from) = peer.recv_from(&mut buf).expect("bob's relayed datagram");
    assert_eq!(&buf[..n], b"bob's data");
    assert_eq!(from, SocketAddr::V4(relay));
    // A datagram larger than the path MTU (sent in IP fragments) is relayed whole.
    let large: Vec<u8> = (0..6000_u32).map(|i| (i % 251) as u8).collect();
    bob.send_indication(0x57, SocketAddrV4::new(WAN_B_ADDR, 7001), &large);
    let mut big = vec![0; 65_536];
    let (n, _) = peer
        .recv_from(&mut big)
        .expect("bob's large relayed datagram");
    assert_eq!(&big[..n], &large[..], "6000 bytes relayed whole");
    // Once one of alice's allocations is deleted, she may allocate again.
    let first = codes
        .iter()
        .position(Option::is_none)
        .expect("a granted one");
    let deleted = alices[first].request(turn::METHOD_REFRESH, vec![Attribute::Lifetime(0)]);
    assert_eq!(error(&deleted), None, "Refresh with LIFETIME 0");
    let mut retry = Client::new(&tb.gateway.ns, "alice", "wonderland");
    assert_eq!(
        error(&retry.allocate()),
        None,
        "alice below her quota again"
    );
    let c = server.stop();
    eprintln!("TURN counters: {c}");
    assert_eq!(counter(&c, "quota_refusals"), 17, "{c}");
    assert_eq!(counter(&c, "allocations_created"), 5, "{c}");
    assert_eq!(counter(&c, "to_peer_packets"), 2, "{c}");
}

#[test]
fn tcp_connections_are_bounded_per_address_and_a_broken_stream_is_closed() {
    require_root();
    let tb = Testbed::new().expect("building the testbed");
    let server = Rendezvous::start(&tb.wan[0].ns, &["--turn-user", "carol:cat"]);
    let to = SocketAddrV4::new(WAN_A_ADDR, PORT);
    let closed = |stream: &mut TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut buf = [0; 64];
        matches!(stream.read(&mut buf), Ok(0) | Err(_))
    };
    tb.wan[1].ns.run(|| {
        // 16 connections from one address are served; the 17th is closed at once.
        let mut held: Vec<TcpStream> = (0..16)
            .map(|_| TcpStream::connect(to).expect("TCP"))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut extra = TcpStream::connect(to).expect("TCP");
        assert!(closed(&mut extra), "a 17th connection from one address");
        // A served connection still answers: a 401 to an Allocate.
        held[0]
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let challenge = tcp_exchange(&mut held[0], &allocate_request(1, None));
        assert_eq!(error(&challenge), Some(401));
        // A STUN header whose length is not a multiple of 4 breaks the stream: closed.
        held[1]
            .write_all(&[0x00, 0x03, 0x00, 0x03, 0x21, 0x12, 0xa4, 0x42])
            .expect("write");
        assert!(closed(&mut held[1]), "a broken stream is closed");
        // So is a stream that is neither STUN, ChannelData (first bits 01) nor the
        // punch protocol.
        held[2].write_all(&[0xff; 16]).expect("write");
        assert!(closed(&mut held[2]), "a stream of 0xff is closed");
    });
    // Another address allocates over TCP meanwhile.
    let relay = tb.gateway.ns.run(|| {
        let mut stream = TcpStream::connect(to).expect("TCP");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let challenge = tcp_exchange(&mut stream, &allocate_request(1, None));
        let nonce = parse(&challenge)
            .find(|a| match a {
                Attribute::Nonce(n) => Some((*n).to_owned()),
                _ => None,
            })
            .expect("a NONCE");
        let granted = tcp_exchange(&mut stream, &allocate_request(2, Some(&nonce)));
        assert_eq!(error(&granted), None, "Allocate over TCP");
        relayed(&granted)
    });
    assert!(relay.is_some());
    let c = server.stop();
    eprintln!("TURN counters: {c}");
    assert_eq!(counter(&c, "allocations_created"), 1, "{c}");
}
