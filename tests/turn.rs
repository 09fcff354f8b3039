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

use std::io::{BufRead as _, BufReader};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

use natgw_integration_tests::{natgw_bin, require_root, terminate};
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

/// `natgw rendezvous --json` with TURN on wan-a; stopped with SIGTERM.
struct Rendezvous {
    child: Option<Child>,
    stdout: BufReader<ChildStdout>,
}

impl Rendezvous {
    fn start(ns: &Netns, extra: &[&str]) -> Self {
        let mut child = ns
            .command(natgw_bin())
            .args(["rendezvous", "--json", "--listen"])
            .arg(SocketAddrV4::new(WAN_A_ADDR, PORT).to_string())
            .arg("--relay-ports")
            .arg(format!("{RELAY_MIN}-{RELAY_MAX}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting natgw rendezvous");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("reading the rendezvous's first line");
        let first: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("rendezvous did not start ({e}): {line:?}"));
        assert_eq!(first["event"], "listening", "{first}");
        assert_eq!(first["turn"], true, "{first}");
        Self {
            child: Some(child),
            stdout,
        }
    }

    /// Stops it and returns the TURN engine's counters from its last line.
    fn stop(mut self) -> Value {
        let mut child = self.child.take().expect("running");
        terminate(&mut child);
        let mut rest = String::new();
        let mut last = Value::Null;
        while self.stdout.read_line(&mut rest).unwrap_or(0) > 0 {
            if let Ok(v) = serde_json::from_str::<Value>(&rest) {
                last = v;
            }
            rest.clear();
        }
        assert_eq!(last["event"], "stopped", "rendezvous summary: {last}");
        last["turn"]["engine"].clone()
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
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
        let socket = ns
            .bind_udp(SocketAddrV4::new(GW_WAN_ADDR, 0))
            .expect("client socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
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

    /// Sends a request (signed once a nonce is known) and returns the response.
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
        self.socket.send(&bytes).expect("send");
        let mut buf = [0; 2048];
        for _ in 0..10 {
            let n = self.socket.recv(&mut buf).expect("a response");
            if buf[8..20] == id {
                return buf[..n].to_vec();
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
    let send = Repr {
        class: Class::Indication,
        method: METHOD_SEND,
        cookie: MAGIC_COOKIE,
        transaction_id: [0x55; 12],
        attributes: vec![
            Attribute::XorPeerAddress(SocketAddr::V4(SocketAddrV4::new(WAN_B_ADDR, 7000))),
            Attribute::Data(b"hello peer"),
        ],
    }
    .to_bytes();
    alice.socket.send(&send).expect("send indication");
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
    let to_server = Repr {
        class: Class::Indication,
        method: METHOD_SEND,
        cookie: MAGIC_COOKIE,
        transaction_id: [0x56; 12],
        attributes: vec![
            Attribute::XorPeerAddress(SocketAddr::V4(SocketAddrV4::new(WAN_A_ADDR, PORT))),
            Attribute::Data(b"to the server itself"),
        ],
    }
    .to_bytes();
    alice.socket.send(&to_server).expect("send indication");

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
