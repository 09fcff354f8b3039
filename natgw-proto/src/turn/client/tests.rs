//! The client against natgw's own server engine, both without I/O: what one emits
//! the other takes, on one made-up clock.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::*;
use crate::stun::wire::Packet;
use crate::turn::auth::Credentials;
use crate::turn::engine::testing::FakeAllocator;
use crate::turn::engine::{self, Action, Config, FiveTuple, Now, Server};
use crate::turn::wire::{Frame, Framer};

const RELAY_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const SERVER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 3478));
const PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 20), 6000);
const UNIX: u64 = 1_733_318_000;

fn config() -> Config {
    let mut config = Config::new(
        "natgw",
        Credentials::from_users(["alice:wonderland", "bob:builder"]).unwrap(),
    );
    config.secret = [7; 32];
    config
}

fn server(config: Config) -> Server<FakeAllocator> {
    Server::new(config, FakeAllocator::new(RELAY_IP, 50_000..=50_009)).unwrap()
}

fn tuple(port: u16, transport: engine::Transport) -> FiveTuple {
    FiveTuple {
        transport,
        client: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), port)),
        server: SERVER,
    }
}

/// A client, its 5-tuple, a clock, and a TCP framer for what the server sends.
struct Side {
    client: Client,
    tuple: FiveTuple,
    framer: Framer,
    data: Vec<(SocketAddrV4, Vec<u8>)>,
    events: Vec<Event>,
}

impl Side {
    fn new(user: &str, password: &str, port: u16, transport: Transport) -> Self {
        let t = match transport {
            Transport::Udp => engine::Transport::Udp,
            Transport::Tcp => engine::Transport::Tcp,
        };
        Self {
            client: Client::new(transport, user, password, Settings::default()),
            tuple: tuple(port, t),
            framer: Framer::new(),
            data: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Feeds what the server sent to this client (over TCP through the framer).
    fn take(&mut self, now: Instant, bytes: &[u8]) {
        let frames = if self.client.transport() == Transport::Tcp {
            self.framer.push(bytes);
            let mut frames = Vec::new();
            while let Some(f) = self.framer.next_frame().unwrap() {
                frames.push(match f {
                    Frame::Stun(b) | Frame::ChannelData(b) => b,
                });
            }
            frames
        } else {
            vec![bytes.to_vec()]
        };
        for f in frames {
            if let Received::Data { peer, data } = self.client.handle(now, &f) {
                self.data.push((peer, data));
            }
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push(e);
        }
    }
}

/// The clock both sides share.
struct World {
    server: Server<FakeAllocator>,
    start: Instant,
    now: Instant,
    /// Datagrams the relays sent to peers: (relay, peer, bytes).
    to_peers: Vec<(SocketAddrV4, SocketAddrV4, Vec<u8>)>,
}

impl World {
    fn new(config: Config) -> Self {
        let start = Instant::now();
        Self {
            server: server(config),
            start,
            now: start,
            to_peers: Vec::new(),
        }
    }

    fn engine_now(&self) -> Now {
        Now {
            instant: self.now,
            unix_secs: UNIX + (self.now - self.start).as_secs(),
        }
    }

    fn deliver(&mut self, side: &mut Side, bytes: &[u8]) {
        let actions = self.server.on_message(self.engine_now(), side.tuple, bytes);
        self.apply(side, actions);
    }

    fn apply(&mut self, side: &mut Side, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::ToClient { tuple, bytes } => {
                    assert_eq!(tuple, side.tuple);
                    side.take(self.now, &bytes);
                }
                Action::ToPeer {
                    relay, peer, bytes, ..
                } => self.to_peers.push((relay, peer, bytes)),
                Action::Event(_) => {}
            }
        }
    }

    /// Runs the exchange until the client has nothing to send.
    fn pump(&mut self, side: &mut Side) {
        for _ in 0..10 {
            let out = side.client.poll_transmit(self.now);
            if out.is_empty() {
                return;
            }
            for bytes in out {
                self.deliver(side, &bytes);
            }
        }
        panic!("the client kept sending");
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// A datagram from `peer` to `relay`, through the server.
    fn peer_sends(
        &mut self,
        side: &mut Side,
        relay: SocketAddrV4,
        peer: SocketAddrV4,
        data: &[u8],
    ) {
        let actions = self
            .server
            .on_peer_datagram(self.engine_now(), relay, peer, data);
        self.apply(side, actions);
    }
}

fn allocated(world: &mut World, side: &mut Side) -> SocketAddrV4 {
    side.client.allocate(world.now);
    world.pump(side);
    match side.events.first() {
        Some(Event::Allocated { relayed, .. }) => *relayed,
        other => panic!("no allocation: {other:?} ({:?})", side.client.state()),
    }
}

#[test]
fn allocates_after_the_challenge_and_relays_both_ways() {
    let mut world = World::new(config());
    let mut alice = Side::new("alice", "wonderland", 40_000, Transport::Udp);
    let relayed = allocated(&mut world, &mut alice);
    assert_eq!(*relayed.ip(), RELAY_IP);
    assert_eq!(alice.client.realm(), Some("natgw"));
    assert_eq!(world.server.relay_of(&alice.tuple), Some(relayed));
    let c = world.server.counters();
    assert_eq!((c.auth_challenges, c.allocations_created), (1, 1));
    // Two requests: the unsigned one and the signed one.
    assert_eq!(alice.client.counters().requests_sent, 2);
    match &alice.events[0] {
        Event::Allocated {
            mapped, lifetime, ..
        } => {
            assert_eq!(*mapped, Some(alice.tuple.client));
            assert_eq!(*lifetime, Duration::from_secs(600));
        }
        e => panic!("{e:?}"),
    }

    // Without a permission the server drops what we send.
    let send = alice.client.send_to(PEER, b"early").unwrap();
    world.deliver(&mut alice, &send);
    assert!(world.to_peers.is_empty());

    alice.client.create_permission(world.now, &[*PEER.ip()]);
    world.pump(&mut alice);
    assert!(alice
        .events
        .contains(&Event::PermissionCreated(vec![*PEER.ip()])));
    let send = alice.client.send_to(PEER, b"ping").unwrap();
    world.deliver(&mut alice, &send);
    assert_eq!(world.to_peers, [(relayed, PEER, b"ping".to_vec())]);
    world.peer_sends(&mut alice, relayed, PEER, b"pong");
    assert_eq!(alice.data, [(PEER, b"pong".to_vec())]);

    // Close: Refresh with LIFETIME 0 deletes it.
    alice.client.close(world.now);
    world.pump(&mut alice);
    assert_eq!(alice.events.last(), Some(&Event::Closed));
    assert_eq!(alice.client.state(), &State::Closed);
    assert_eq!(world.server.counters().allocations_deleted, 1);
    assert_eq!(world.server.relay_of(&alice.tuple), None);
    assert!(alice.client.send_to(PEER, b"late").is_none());
}

#[test]
fn shared_secret_credentials_are_accepted() {
    let mut config = config();
    config.credentials = Credentials::SharedSecret(vec!["s3cr3t".into()]);
    let mut world = World::new(config);
    let (user, password) = rest_credential("s3cr3t", "alice", UNIX + 3600);
    assert_eq!(user, format!("{}:alice", UNIX + 3600));
    let mut alice = Side::new(&user, &password, 40_000, Transport::Udp);
    allocated(&mut world, &mut alice);

    // Expired, or from another secret: 401, a clear error.
    for (secret, expiry) in [("s3cr3t", UNIX - 1), ("other", UNIX + 3600)] {
        let (user, password) = rest_credential(secret, "bob", expiry);
        let mut bob = Side::new(&user, &password, 40_001, Transport::Udp);
        bob.client.allocate(world.now);
        world.pump(&mut bob);
        assert!(
            matches!(
                bob.client.state(),
                State::Failed(Error::Unauthorized { .. })
            ),
            "{:?}",
            bob.client.state()
        );
    }
}

#[test]
fn a_wrong_password_is_a_clear_error() {
    let mut world = World::new(config());
    let mut alice = Side::new("alice", "looking-glass", 40_000, Transport::Udp);
    alice.client.allocate(world.now);
    world.pump(&mut alice);
    let State::Failed(error) = alice.client.state().clone() else {
        panic!("{:?}", alice.client.state());
    };
    assert_eq!(
        error,
        Error::Unauthorized {
            realm: "natgw".into(),
            username: "alice".into()
        }
    );
    let text = error.to_string();
    assert!(text.contains("wrong password"), "{text}");
    assert!(alice.events.contains(&Event::Failed(error)));
    assert_eq!(world.server.counters().allocations_created, 0);
    // Failed: nothing more is sent.
    world.advance(Duration::from_secs(60));
    assert!(alice.client.poll_transmit(world.now).is_empty());
}

#[test]
fn quota_and_capacity_refusals_are_reported() {
    let mut config = config();
    config.user_quota = Some(1);
    let mut world = World::new(config);
    let mut first = Side::new("alice", "wonderland", 40_000, Transport::Udp);
    allocated(&mut world, &mut first);
    let mut second = Side::new("alice", "wonderland", 40_001, Transport::Udp);
    second.client.allocate(world.now);
    world.pump(&mut second);
    let State::Failed(e) = second.client.state() else {
        panic!("{:?}", second.client.state());
    };
    assert!(matches!(e, Error::Rejected { code: 486, .. }), "{e:?}");
    assert!(e.to_string().contains("486"), "{e}");

    // One relay port: the next user gets 508.
    let mut world = World {
        server: Server::new(
            self::config(),
            FakeAllocator::new(RELAY_IP, 50_000..=50_000),
        )
        .unwrap(),
        ..World::new(self::config())
    };
    let mut alice = Side::new("alice", "wonderland", 40_000, Transport::Udp);
    allocated(&mut world, &mut alice);
    let mut bob = Side::new("bob", "builder", 40_001, Transport::Udp);
    bob.client.allocate(world.now);
    world.pump(&mut bob);
    let State::Failed(e) = bob.client.state() else {
        panic!("{:?}", bob.client.state());
    };
    assert!(matches!(e, Error::Rejected { code: 508, .. }), "{e:?}");
    assert!(e.to_string().contains("Insufficient Capacity"), "{e}");
}

#[test]
fn udp_requests_are_retransmitted_then_time_out() {
    let start = Instant::now();
    let mut client = Client::new(Transport::Udp, "alice", "pw", Settings::default());
    client.allocate(start);
    let mut sent_at = Vec::new();
    let mut now = start;
    while now - start < Duration::from_secs(60) {
        for _ in client.poll_transmit(now) {
            sent_at.push(now - start);
        }
        if !matches!(client.state(), State::Allocating) {
            break;
        }
        now += Duration::from_millis(100);
    }
    // RFC 8489 §6.2.1: 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; failure 8 s later.
    let secs: Vec<f64> = sent_at.iter().map(Duration::as_secs_f64).collect();
    assert_eq!(secs, [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]);
    assert_eq!((now - start).as_secs_f64(), 39.5);
    assert_eq!(
        client.state(),
        &State::Failed(Error::Timeout {
            request: "Allocate",
            transmissions: 7
        })
    );
    assert_eq!(client.counters().retransmissions, 6);
}

#[test]
fn tcp_requests_are_sent_once_and_time_out() {
    let start = Instant::now();
    let settings = Settings {
        tcp_timeout: Duration::from_secs(5),
        ..Settings::default()
    };
    let mut client = Client::new(Transport::Tcp, "alice", "pw", settings);
    client.allocate(start);
    assert_eq!(client.poll_transmit(start).len(), 1);
    assert_eq!(client.poll_timeout(), Some(start + Duration::from_secs(5)));
    assert!(client
        .poll_transmit(start + Duration::from_secs(4))
        .is_empty());
    assert!(client
        .poll_transmit(start + Duration::from_secs(5))
        .is_empty());
    assert!(
        matches!(
            client.state(),
            State::Failed(Error::Timeout {
                transmissions: 1,
                ..
            })
        ),
        "{:?}",
        client.state()
    );
}

#[test]
fn over_tcp_with_a_channel() {
    let mut world = World::new(config());
    let mut alice = Side::new("alice", "wonderland", 40_000, Transport::Tcp);
    let relayed = allocated(&mut world, &mut alice);
    let channel = alice.client.bind_channel(world.now, PEER).unwrap();
    world.pump(&mut alice);
    assert!(alice.events.contains(&Event::ChannelBound(channel, PEER)));
    // Bound: ChannelData, padded over TCP.
    let message = alice.client.send_to(PEER, b"hello").unwrap();
    assert_eq!(message.len(), 12);
    assert_eq!(u16::from_be_bytes([message[0], message[1]]), channel);
    world.deliver(&mut alice, &message[..9]);
    assert_eq!(world.to_peers, [(relayed, PEER, b"hello".to_vec())]);
    world.peer_sends(&mut alice, relayed, PEER, b"there");
    assert_eq!(alice.data, [(PEER, b"there".to_vec())]);
}

#[test]
fn a_stale_nonce_is_replaced_and_the_request_retried() {
    let mut config = config();
    config.nonce_lifetime = Duration::from_secs(10);
    let mut world = World::new(config);
    let mut alice = Side::new("alice", "wonderland", 40_000, Transport::Udp);
    allocated(&mut world, &mut alice);
    world.advance(Duration::from_secs(20));
    alice.client.create_permission(world.now, &[*PEER.ip()]);
    world.pump(&mut alice);
    assert!(alice
        .events
        .contains(&Event::PermissionCreated(vec![*PEER.ip()])));
    assert_eq!(world.server.counters().stale_nonces, 1);
}

#[test]
fn allocation_and_permissions_are_refreshed_before_they_expire() {
    let mut world = World::new(config());
    let mut alice = Side::new("alice", "wonderland", 40_000, Transport::Udp);
    let relayed = allocated(&mut world, &mut alice);
    alice.client.create_permission(world.now, &[*PEER.ip()]);
    world.pump(&mut alice);
    // The permission (300 s) is asked again at 240 s, the allocation (600 s) at 540 s.
    let mut refreshed = 0;
    for _ in 0..(25 * 60 / 10) {
        world.advance(Duration::from_secs(10));
        world.pump(&mut alice);
        let _ = world.server.expire(world.engine_now());
        refreshed = alice
            .events
            .iter()
            .filter(|e| matches!(e, Event::Refreshed { .. }))
            .count();
    }
    assert!(refreshed >= 2, "{:?}", alice.events);
    let permissions = alice
        .events
        .iter()
        .filter(|e| matches!(e, Event::PermissionCreated(_)))
        .count();
    assert!(permissions >= 6, "{permissions}");
    // 25 minutes later it still relays both ways.
    assert_eq!(world.server.relay_of(&alice.tuple), Some(relayed));
    let send = alice.client.send_to(PEER, b"still").unwrap();
    world.deliver(&mut alice, &send);
    assert_eq!(
        world.to_peers.last(),
        Some(&(relayed, PEER, b"still".to_vec()))
    );
    world.peer_sends(&mut alice, relayed, PEER, b"here");
    assert_eq!(alice.data.last(), Some(&(PEER, b"here".to_vec())));
    assert!(alice.client.poll_timeout().is_some());
}

#[test]
fn two_allocations_of_one_server_relay_to_each_other() {
    let mut config = config();
    config.own_addresses = vec![RELAY_IP];
    config.relay_addresses = vec![RELAY_IP];
    config.relay_ports = 50_000..=50_009;
    let mut world = World::new(config);
    let mut alice = Side::new("alice", "wonderland", 40_000, Transport::Udp);
    let mut bob = Side::new("bob", "builder", 40_001, Transport::Udp);
    let (ra, rb) = (
        allocated(&mut world, &mut alice),
        allocated(&mut world, &mut bob),
    );
    alice.client.create_permission(world.now, &[*rb.ip()]);
    world.pump(&mut alice);
    bob.client.create_permission(world.now, &[*ra.ip()]);
    world.pump(&mut bob);
    assert!(alice
        .events
        .contains(&Event::PermissionCreated(vec![RELAY_IP])));
    let send = alice.client.send_to(rb, b"relay to relay").unwrap();
    world.deliver(&mut alice, &send);
    let (relay, peer, bytes) = world.to_peers.pop().expect("sent to bob's relay");
    assert_eq!((relay, peer), (ra, rb));
    // The service's socket `rb` receives it from `ra`.
    world.peer_sends(&mut bob, rb, ra, &bytes);
    assert_eq!(bob.data, [(ra, b"relay to relay".to_vec())]);
}

/// A response of `class` to the request `request`, with `attributes`.
fn answer(request: &[u8], class: Class, attributes: Vec<Attribute<'_>>) -> Vec<u8> {
    let packet = Packet::new_checked(request).unwrap();
    let repr = Repr::parse(&packet).unwrap();
    Repr {
        class,
        method: repr.method,
        cookie: MAGIC_COOKIE,
        transaction_id: repr.transaction_id,
        attributes,
    }
    .to_bytes()
}

fn error_code(code: u16) -> Attribute<'static> {
    Attribute::ErrorCode(crate::stun::wire::ErrorCode {
        code,
        reason: error_code::reason(code),
    })
}

#[test]
fn bad_answers_are_dropped_or_clear_errors_never_panics() {
    let now = Instant::now();
    // Junk, truncated messages and unmatched responses are dropped and counted.
    let mut client = Client::new(Transport::Udp, "alice", "pw", Settings::default());
    client.allocate(now);
    let request = client.poll_transmit(now).pop().unwrap();
    let unmatched = answer(&request, Class::Success, vec![]);
    let mut other_id = unmatched.clone();
    other_id[8] ^= 0xff;
    for junk in [
        &[][..],
        &[0x80, 1, 2, 3],
        &request[..10],
        &other_id,
        &[0x40, 0x00, 0x00, 0x02, 1, 2],
    ] {
        assert_eq!(client.handle(now, junk), Received::Dropped);
    }
    assert_eq!(client.counters().dropped, 5);
    assert_eq!(client.state(), &State::Allocating);

    // A 401 without REALM and NONCE.
    let reply = answer(&request, Class::Error, vec![error_code(401)]);
    assert_eq!(client.handle(now, &reply), Received::Consumed);
    assert!(
        matches!(client.state(), State::Failed(Error::Protocol(_))),
        "{:?}",
        client.state()
    );

    // A success signed with another key is dropped; the right one is taken.
    let mut client = Client::new(Transport::Udp, "alice", "pw", Settings::default());
    client.allocate(now);
    let first = client.poll_transmit(now).pop().unwrap();
    let challenge = answer(
        &first,
        Class::Error,
        vec![
            error_code(401),
            Attribute::Realm("r"),
            Attribute::Nonce("n1"),
        ],
    );
    client.handle(now, &challenge);
    let signed = client.poll_transmit(now).pop().unwrap();
    let success = |key: &Key| {
        let mut bytes = answer(
            &signed,
            Class::Success,
            vec![
                Attribute::XorRelayedAddress("203.0.113.1:50000".parse().unwrap()),
                Attribute::Lifetime(600),
                Attribute::MessageIntegrity(&[0; INTEGRITY_LEN]),
            ],
        );
        auth::sign(&mut bytes, key);
        bytes
    };
    let wrong = long_term_key("alice", "r", "not-pw");
    assert_eq!(client.handle(now, &success(&wrong)), Received::Dropped);
    assert_eq!(client.state(), &State::Allocating);
    let right = long_term_key("alice", "r", "pw");
    assert_eq!(client.handle(now, &success(&right)), Received::Consumed);
    assert!(client.is_allocated());

    // 438 again and again: given up after MAX_STALE_RETRIES with a clear error.
    client.create_permission(now, &[*PEER.ip()]);
    for round in 0..=MAX_STALE_RETRIES {
        let request = client.poll_transmit(now).pop().expect("a retry");
        let stale = answer(
            &request,
            Class::Error,
            vec![
                error_code(438),
                Attribute::Realm("r"),
                Attribute::Nonce("n2"),
            ],
        );
        assert_eq!(client.handle(now, &stale), Received::Consumed, "{round}");
    }
    let events: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::PermissionFailed(_, Error::Protocol(text)) if text.contains("438")
        )),
        "{events:?}"
    );
    // A failed permission does not end the allocation.
    assert!(client.is_allocated());
}
