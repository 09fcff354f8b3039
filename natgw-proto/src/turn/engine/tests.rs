//! The TURN engine against [`FakeAllocator`], a made-up clock and messages built
//! the way a client builds them (signed with its own key).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::testing::FakeAllocator;
use super::*;
use crate::stun::wire::{Attribute, Class, ErrorCode, Packet, Repr, MAGIC_COOKIE};
use crate::turn::auth::{self, long_term_key, Credentials, Integrity, INTEGRITY_LEN};
use crate::turn::wire::{
    self as turn, ChannelData, METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION,
    METHOD_REFRESH, METHOD_SEND,
};

const RELAY_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const SERVER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3478));
const REALM: &str = "natgw";
const PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 20), 6000);
const PEER_OTHER_PORT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 20), 6001);
const PEER2: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 21), 7000);
const UNIX: u64 = 1_733_318_000;

fn t0() -> Now {
    static BASE: OnceLock<Instant> = OnceLock::new();
    Now {
        instant: *BASE.get_or_init(Instant::now),
        unix_secs: UNIX,
    }
}

fn client(port: u16) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), port)),
        server: SERVER,
    }
}

fn config() -> Config {
    let mut config = Config::new(
        REALM,
        Credentials::from_users(["alice:wonderland", "bob:builder"]).unwrap(),
    );
    config.secret = [9; 32];
    config
}

fn server_with(config: Config, ports: std::ops::RangeInclusive<u16>) -> Server<FakeAllocator> {
    Server::new(config, FakeAllocator::new(RELAY_IP, ports)).unwrap()
}

fn server() -> Server<FakeAllocator> {
    server_with(config(), 50_000..=50_009)
}

/// A client's view: who it is and the nonce it last got.
struct User {
    name: &'static str,
    password: &'static str,
    nonce: String,
    next_id: u8,
}

impl User {
    fn new(name: &'static str, password: &'static str) -> Self {
        Self {
            name,
            password,
            nonce: String::new(),
            next_id: 0,
        }
    }

    fn key(&self) -> auth::Key {
        long_term_key(self.name, REALM, self.password)
    }

    fn id(&mut self) -> [u8; 12] {
        self.next_id += 1;
        [self.next_id; 12]
    }

    /// A request signed as this user, with a fresh transaction ID.
    fn request(&mut self, method: u16, attributes: Vec<Attribute<'static>>) -> Vec<u8> {
        let id = self.id();
        self.request_with_id(id, method, attributes)
    }

    fn request_with_id<'a>(
        &'a self,
        transaction_id: [u8; 12],
        method: u16,
        mut attributes: Vec<Attribute<'a>>,
    ) -> Vec<u8> {
        attributes.extend([
            Attribute::Username(self.name),
            Attribute::Realm(REALM),
            Attribute::Nonce(&self.nonce),
            Attribute::MessageIntegrity(&[0; INTEGRITY_LEN]),
            Attribute::Fingerprint,
        ]);
        let mut bytes = Repr {
            class: Class::Request,
            method,
            cookie: MAGIC_COOKIE,
            transaction_id,
            attributes,
        }
        .to_bytes();
        assert!(auth::sign(&mut bytes, &self.key()));
        bytes
    }

    /// Gets a nonce with an unauthenticated request, as clients start.
    fn login(&mut self, s: &mut Server<FakeAllocator>, now: Now, tuple: FiveTuple) {
        let reply = only_reply(&s.on_message(now, tuple, &unsigned(METHOD_ALLOCATE, udp())));
        assert_eq!(error(&reply), Some(401));
        self.nonce = nonce(&reply);
    }
}

fn udp() -> Vec<Attribute<'static>> {
    vec![Attribute::RequestedTransport(turn::PROTOCOL_UDP)]
}

fn unsigned(method: u16, attributes: Vec<Attribute<'_>>) -> Vec<u8> {
    Repr {
        class: Class::Request,
        method,
        cookie: MAGIC_COOKIE,
        transaction_id: [0xaa; 12],
        attributes,
    }
    .to_bytes()
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

fn nonce(bytes: &[u8]) -> String {
    parse(bytes)
        .find(|a| match a {
            Attribute::Nonce(n) => Some((*n).to_owned()),
            _ => None,
        })
        .expect("a NONCE")
}

fn lifetime(bytes: &[u8]) -> Option<u32> {
    parse(bytes).find(|a| match a {
        Attribute::Lifetime(l) => Some(*l),
        _ => None,
    })
}

fn relayed(bytes: &[u8]) -> Option<SocketAddr> {
    parse(bytes).find(|a| match a {
        Attribute::XorRelayedAddress(r) => Some(*r),
        _ => None,
    })
}

fn to_client(actions: &[Action]) -> Vec<(FiveTuple, Vec<u8>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToClient { tuple, bytes } => Some((*tuple, bytes.clone())),
            _ => None,
        })
        .collect()
}

fn only_reply(actions: &[Action]) -> Vec<u8> {
    let replies = to_client(actions);
    assert_eq!(replies.len(), 1, "{actions:?}");
    replies[0].1.clone()
}

fn to_peer(actions: &[Action]) -> Vec<(SocketAddrV4, SocketAddrV4, Vec<u8>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToPeer {
                relay, peer, bytes, ..
            } => Some((*relay, *peer, bytes.clone())),
            _ => None,
        })
        .collect()
}

fn events(actions: &[Action]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn peer_attr(peer: SocketAddrV4) -> Attribute<'static> {
    Attribute::XorPeerAddress(SocketAddr::V4(peer))
}

/// Logs in and allocates on `tuple`; returns the relay address.
fn allocate(
    s: &mut Server<FakeAllocator>,
    user: &mut User,
    now: Now,
    tuple: FiveTuple,
) -> SocketAddrV4 {
    user.login(s, now, tuple);
    let reply = only_reply(&s.on_message(now, tuple, &user.request(METHOD_ALLOCATE, udp())));
    assert_eq!(parse(&reply).class, Class::Success, "{:?}", error(&reply));
    match relayed(&reply) {
        Some(SocketAddr::V4(r)) => r,
        other => panic!("relayed address {other:?}"),
    }
}

fn ask(s: &mut Server<FakeAllocator>, now: Now, tuple: FiveTuple, bytes: &[u8]) -> Vec<u8> {
    only_reply(&s.on_message(now, tuple, bytes))
}

fn send_indication(peer: SocketAddrV4, data: &[u8]) -> Vec<u8> {
    Repr {
        class: Class::Indication,
        method: METHOD_SEND,
        cookie: MAGIC_COOKIE,
        transaction_id: [0x55; 12],
        attributes: vec![peer_attr(peer), Attribute::Data(data)],
    }
    .to_bytes()
}

fn permit(
    s: &mut Server<FakeAllocator>,
    user: &mut User,
    now: Now,
    tuple: FiveTuple,
    peer: SocketAddrV4,
) {
    let reply = ask(
        s,
        now,
        tuple,
        &user.request(METHOD_CREATE_PERMISSION, vec![peer_attr(peer)]),
    );
    assert_eq!(parse(&reply).class, Class::Success, "{:?}", error(&reply));
}

fn bind(
    s: &mut Server<FakeAllocator>,
    user: &mut User,
    now: Now,
    tuple: FiveTuple,
    channel: u16,
    peer: SocketAddrV4,
) -> Option<u16> {
    let reply = ask(
        s,
        now,
        tuple,
        &user.request(
            METHOD_CHANNEL_BIND,
            vec![Attribute::ChannelNumber(channel), peer_attr(peer)],
        ),
    );
    error(&reply)
}

#[test]
fn rfc8656_allocate_is_challenged_then_granted() {
    let mut s = server();
    let tuple = client(40_000);
    let mut alice = User::new("alice", "wonderland");
    // rfc8489 §9.2.4: no MESSAGE-INTEGRITY → 401 with REALM and NONCE, unsigned.
    let reply = ask(&mut s, t0(), tuple, &unsigned(METHOD_ALLOCATE, udp()));
    let repr = parse(&reply);
    assert_eq!(repr.class, Class::Error);
    assert_eq!(error(&reply), Some(401));
    assert!(repr.attributes.contains(&Attribute::Realm(REALM)));
    assert_eq!(nonce(&reply).len(), auth::NONCE_LEN);
    assert_eq!(
        auth::check_integrity(&reply, &alice.key()),
        Integrity::Absent
    );
    assert_eq!(s.counters().auth_challenges, 1);

    alice.nonce = nonce(&reply);
    let actions = s.on_message(t0(), tuple, &alice.request(METHOD_ALLOCATE, udp()));
    let reply = only_reply(&actions);
    let repr = parse(&reply);
    assert_eq!(repr.class, Class::Success);
    assert_eq!(repr.method, METHOD_ALLOCATE);
    let relay = SocketAddrV4::new(RELAY_IP, 50_000);
    assert_eq!(relayed(&reply), Some(SocketAddr::V4(relay)));
    assert_eq!(lifetime(&reply), Some(600));
    assert!(repr
        .attributes
        .contains(&Attribute::XorMappedAddress(tuple.client)));
    // Signed with alice's key, FINGERPRINT last as in the request.
    assert_eq!(
        auth::check_integrity(&reply, &alice.key()),
        Integrity::Valid
    );
    assert_eq!(repr.attributes.last(), Some(&Attribute::Fingerprint));
    assert_eq!(
        events(&actions),
        [Event::AllocationCreated {
            tuple,
            relay,
            username: "alice".into(),
            lifetime: Duration::from_secs(600),
        }]
    );
    assert_eq!(s.relay_of(&tuple), Some(relay));
    assert!(s.allocator().in_use.contains(&50_000));
    let c = s.counters();
    assert_eq!((c.allocations_active, c.allocations_created), (1, 1));
}

#[test]
fn rfc8489_wrong_credentials_get_401_and_missing_attributes_400() {
    let mut s = server();
    let tuple = client(40_000);
    let mut alice = User::new("alice", "wonderland");
    alice.login(&mut s, t0(), tuple);
    let nonce = alice.nonce.clone();
    for (name, password) in [("alice", "wrong"), ("mallory", "wonderland")] {
        let mut user = User::new(name, password);
        user.nonce.clone_from(&nonce);
        let reply = ask(&mut s, t0(), tuple, &user.request(METHOD_ALLOCATE, udp()));
        assert_eq!(error(&reply), Some(401), "{name}:{password}");
        // A 401 carries a new challenge and no MESSAGE-INTEGRITY.
        assert_eq!(self::nonce(&reply).len(), auth::NONCE_LEN);
        assert_eq!(
            auth::check_integrity(&reply, &alice.key()),
            Integrity::Absent
        );
    }
    // Another realm: the key is not the realm's.
    let mut bytes = Repr {
        class: Class::Request,
        method: METHOD_ALLOCATE,
        cookie: MAGIC_COOKIE,
        transaction_id: [1; 12],
        attributes: vec![
            Attribute::RequestedTransport(17),
            Attribute::Username("alice"),
            Attribute::Realm("elsewhere"),
            Attribute::Nonce(&nonce),
            Attribute::MessageIntegrity(&[0; 20]),
        ],
    }
    .to_bytes();
    auth::sign(
        &mut bytes,
        &long_term_key("alice", "elsewhere", "wonderland"),
    );
    assert_eq!(error(&ask(&mut s, t0(), tuple, &bytes)), Some(401));
    assert_eq!(s.counters().auth_failures, 3);
    // MESSAGE-INTEGRITY without NONCE → 400 (rfc8489 §9.2.4).
    let mut bytes = Repr {
        class: Class::Request,
        method: METHOD_ALLOCATE,
        cookie: MAGIC_COOKIE,
        transaction_id: [2; 12],
        attributes: vec![
            Attribute::RequestedTransport(17),
            Attribute::Username("alice"),
            Attribute::Realm(REALM),
            Attribute::MessageIntegrity(&[0; 20]),
        ],
    }
    .to_bytes();
    auth::sign(&mut bytes, &alice.key());
    assert_eq!(error(&ask(&mut s, t0(), tuple, &bytes)), Some(400));
    assert_eq!(s.counters().allocations_created, 0);
    assert!(s.allocator().in_use.is_empty());
}

#[test]
fn rfc8489_stale_nonce_gets_438_with_a_new_one() {
    let mut s = server();
    let tuple = client(40_000);
    let mut alice = User::new("alice", "wonderland");
    alice.login(&mut s, t0(), tuple);
    // The nonce lives 600 s (DEFAULT_NONCE_LIFETIME).
    let later = t0().after(Duration::from_secs(600));
    let reply = ask(&mut s, later, tuple, &alice.request(METHOD_ALLOCATE, udp()));
    assert_eq!(error(&reply), Some(438));
    // The credentials were right: the 438 is signed, and its nonce works.
    assert_eq!(
        auth::check_integrity(&reply, &alice.key()),
        Integrity::Valid
    );
    assert_ne!(nonce(&reply), alice.nonce);
    alice.nonce = nonce(&reply);
    let reply = ask(&mut s, later, tuple, &alice.request(METHOD_ALLOCATE, udp()));
    assert_eq!(parse(&reply).class, Class::Success);
    assert_eq!(s.counters().stale_nonces, 1);
    // A nonce issued to another client address is no good here either.
    let other = client(40_001);
    let reply = ask(&mut s, later, other, &alice.request(METHOD_ALLOCATE, udp()));
    assert_eq!(error(&reply), Some(438));
}

#[test]
fn coturn_shared_secret_usernames_authenticate_until_they_expire() {
    let mut config = config();
    config.credentials = Credentials::SharedSecret(vec!["north".into()]);
    let mut s = server_with(config, 50_000..=50_009);
    let tuple = client(40_000);
    // The password for "1733318400:alice" under "north", computed with Python's
    // hmac/hashlib/base64 (see auth's tests).
    let mut user = User::new("1733318400:alice", "SPch30c5XC4OXf1J/LwEmlU0ZKc=");
    let relay = allocate(&mut s, &mut user, t0(), tuple);
    assert_eq!(relay.port(), 50_000);
    // Past the username's time: 401, even with a fresh nonce.
    let late = Now {
        unix_secs: 1_733_318_401,
        ..t0()
    };
    user.login(&mut s, late, client(40_001));
    let reply = ask(
        &mut s,
        late,
        client(40_001),
        &user.request(METHOD_ALLOCATE, udp()),
    );
    assert_eq!(error(&reply), Some(401));
    assert_eq!(s.counters().auth_failures, 1);
}

#[test]
fn rfc8656_second_allocate_is_437_but_a_retransmission_gets_the_same_answer() {
    let mut s = server();
    let tuple = client(40_000);
    let mut alice = User::new("alice", "wonderland");
    alice.login(&mut s, t0(), tuple);
    let request = alice.request(METHOD_ALLOCATE, udp());
    let first = s.on_message(t0(), tuple, &request);
    assert_eq!(events(&first).len(), 1);
    let again = s.on_message(t0().after(Duration::from_millis(500)), tuple, &request);
    assert_eq!(to_client(&again), to_client(&first));
    assert!(events(&again).is_empty(), "no second allocation");
    // A new transaction: 437, signed.
    let reply = ask(&mut s, t0(), tuple, &alice.request(METHOD_ALLOCATE, udp()));
    assert_eq!(error(&reply), Some(437));
    assert_eq!(
        auth::check_integrity(&reply, &alice.key()),
        Integrity::Valid
    );
    assert_eq!(s.counters().allocations_created, 1);
    assert_eq!(s.allocator().in_use.len(), 1);
}

#[test]
fn rfc8656_allocate_checks_transport_and_family() {
    let mut s = server();
    let tuple = client(40_000);
    let mut alice = User::new("alice", "wonderland");
    alice.login(&mut s, t0(), tuple);
    let cases: [(Vec<Attribute<'_>>, u16); 5] = [
        (vec![], 400),
        (vec![Attribute::RequestedTransport(6)], 442),
        (
            vec![
                Attribute::RequestedTransport(17),
                Attribute::RequestedAddressFamily(turn::FAMILY_IPV6),
            ],
            440,
        ),
        (
            vec![
                Attribute::RequestedTransport(17),
                Attribute::ReservationToken([1; 8]),
                Attribute::EvenPort(false),
            ],
            400,
        ),
        (
            vec![
                Attribute::RequestedTransport(17),
                Attribute::ReservationToken([1; 8]),
            ],
            508,
        ),
    ];
    for (attributes, code) in cases {
        let reply = ask(
            &mut s,
            t0(),
            tuple,
            &alice.request(METHOD_ALLOCATE, attributes),
        );
        assert_eq!(error(&reply), Some(code));
    }
    // DONT-FRAGMENT and an explicit IPv4 family are fine.
    let reply = ask(
        &mut s,
        t0(),
        tuple,
        &alice.request(
            METHOD_ALLOCATE,
            vec![
                Attribute::RequestedTransport(17),
                Attribute::RequestedAddressFamily(turn::FAMILY_IPV4),
                Attribute::DontFragment,
            ],
        ),
    );
    assert_eq!(parse(&reply).class, Class::Success);
}

#[test]
fn rfc8656_lifetimes_are_clamped_and_allocations_expire() {
    let mut s = server();
    let mut alice = User::new("alice", "wonderland");
    for (port, asked, granted) in [(1, 30, 600), (2, 1200, 1200), (3, 100_000, 3600)] {
        let tuple = client(port);
        alice.login(&mut s, t0(), tuple);
        let mut attributes = udp();
        attributes.push(Attribute::Lifetime(asked));
        let reply = ask(
            &mut s,
            t0(),
            tuple,
            &alice.request(METHOD_ALLOCATE, attributes),
        );
        assert_eq!(lifetime(&reply), Some(granted), "asked {asked}");
    }
    assert_eq!(
        s.poll_timeout(),
        Some(t0().instant + Duration::from_secs(600))
    );
    assert!(s.expire(t0().after(Duration::from_secs(599))).is_empty());
    let actions = s.expire(t0().after(Duration::from_secs(600)));
    let relay = SocketAddrV4::new(RELAY_IP, 50_000);
    assert_eq!(
        events(&actions),
        [Event::AllocationEnded {
            tuple: client(1),
            relay,
            reason: EndReason::Expired
        }]
    );
    assert!(!s.allocator().in_use.contains(&50_000));
    assert_eq!(s.relay_of(&client(1)), None);
    assert_eq!(
        s.poll_timeout(),
        Some(t0().instant + Duration::from_secs(1200))
    );
    let actions = s.expire(t0().after(Duration::from_secs(3600)));
    assert_eq!(events(&actions).len(), 2);
    let c = s.counters();
    assert_eq!((c.allocations_active, c.allocations_expired), (0, 3));
    assert!(s.allocator().in_use.is_empty());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn rfc8656_refresh_extends_deletes_and_checks_the_owner() {
    let mut s = server();
    let tuple = client(40_000);
    let mut alice = User::new("alice", "wonderland");
    allocate(&mut s, &mut alice, t0(), tuple);
    // Refresh at 500 s for 900 s: now due at 1400 s.
    let at = t0().after(Duration::from_secs(500));
    let reply = ask(
        &mut s,
        at,
        tuple,
        &alice.request(METHOD_REFRESH, vec![Attribute::Lifetime(900)]),
    );
    assert_eq!(lifetime(&reply), Some(900));
    assert_eq!(
        s.poll_timeout(),
        Some(t0().instant + Duration::from_secs(1400))
    );
    assert!(events(&s.expire(t0().after(Duration::from_secs(1399)))).is_empty());
    // Another user's credentials on alice's 5-tuple: 441.
    let mut bob = User::new("bob", "builder");
    bob.login(&mut s, at, tuple);
    let reply = ask(&mut s, at, tuple, &bob.request(METHOD_REFRESH, vec![]));
    assert_eq!(error(&reply), Some(441));
    for method in [METHOD_CREATE_PERMISSION, METHOD_CHANNEL_BIND] {
        let attributes = vec![Attribute::ChannelNumber(0x4000), peer_attr(PEER)];
        let reply = ask(&mut s, at, tuple, &bob.request(method, attributes));
        assert_eq!(error(&reply), Some(441));
    }
    // LIFETIME 0 deletes.
    let actions = s.on_message(
        at,
        tuple,
        &alice.request(METHOD_REFRESH, vec![Attribute::Lifetime(0)]),
    );
    assert_eq!(lifetime(&only_reply(&actions)), Some(0));
    assert_eq!(
        events(&actions),
        [Event::AllocationEnded {
            tuple,
            relay: SocketAddrV4::new(RELAY_IP, 50_000),
            reason: EndReason::Deleted,
        }]
    );
    assert!(s.allocator().in_use.is_empty());
    assert_eq!(s.counters().allocations_deleted, 1);
    // Nothing left to refresh, permit or bind: 437.
    for method in [
        METHOD_REFRESH,
        METHOD_CREATE_PERMISSION,
        METHOD_CHANNEL_BIND,
    ] {
        let attributes = vec![Attribute::ChannelNumber(0x4000), peer_attr(PEER)];
        let reply = ask(&mut s, at, tuple, &alice.request(method, attributes));
        assert_eq!(error(&reply), Some(437));
    }
}

#[test]
fn user_quota_refuses_486_without_touching_other_users() {
    let mut config = config();
    config.user_quota = Some(2);
    let mut s = server_with(config, 50_000..=50_009);
    let mut alice = User::new("alice", "wonderland");
    allocate(&mut s, &mut alice, t0(), client(1));
    allocate(&mut s, &mut alice, t0(), client(2));
    alice.login(&mut s, t0(), client(3));
    let reply = ask(
        &mut s,
        t0(),
        client(3),
        &alice.request(METHOD_ALLOCATE, udp()),
    );
    assert_eq!(error(&reply), Some(486));
    assert_eq!(s.counters().quota_refusals, 1);
    let mut bob = User::new("bob", "builder");
    allocate(&mut s, &mut bob, t0(), client(4));
    // Once one of alice's ends, she may allocate again (nonces are per client
    // address: she logs in on each).
    alice.login(&mut s, t0(), client(1));
    let reply = ask(
        &mut s,
        t0(),
        client(1),
        &alice.request(METHOD_REFRESH, vec![Attribute::Lifetime(0)]),
    );
    assert_eq!(lifetime(&reply), Some(0));
    alice.login(&mut s, t0(), client(3));
    let reply = ask(
        &mut s,
        t0(),
        client(3),
        &alice.request(METHOD_ALLOCATE, udp()),
    );
    assert_eq!(parse(&reply).class, Class::Success);
}

#[test]
fn out_of_ports_or_over_the_total_is_508() {
    let mut s = server_with(config(), 50_000..=50_000);
    let mut alice = User::new("alice", "wonderland");
    allocate(&mut s, &mut alice, t0(), client(1));
    let mut bob = User::new("bob", "builder");
    bob.login(&mut s, t0(), client(2));
    let reply = ask(
        &mut s,
        t0(),
        client(2),
        &bob.request(METHOD_ALLOCATE, udp()),
    );
    assert_eq!(error(&reply), Some(508));

    let mut config = config();
    config.total_quota = Some(1);
    let mut s = server_with(config, 50_000..=50_009);
    allocate(&mut s, &mut alice, t0(), client(1));
    bob.login(&mut s, t0(), client(2));
    let reply = ask(
        &mut s,
        t0(),
        client(2),
        &bob.request(METHOD_ALLOCATE, udp()),
    );
    assert_eq!(error(&reply), Some(508));
    assert_eq!(s.counters().capacity_refusals, 1);
}

#[test]
fn rfc8656_even_port_reserves_the_next_one_behind_a_token() {
    let mut s = server();
    let mut alice = User::new("alice", "wonderland");
    // Take 50000 so the even port found is 50002.
    allocate(&mut s, &mut alice, t0(), client(1));
    alice.login(&mut s, t0(), client(2));
    let mut attributes = udp();
    attributes.push(Attribute::EvenPort(true));
    let reply = ask(
        &mut s,
        t0(),
        client(2),
        &alice.request(METHOD_ALLOCATE, attributes),
    );
    assert_eq!(
        relayed(&reply),
        Some(SocketAddr::V4(SocketAddrV4::new(RELAY_IP, 50_002)))
    );
    let token = parse(&reply)
        .find(|a| match a {
            Attribute::ReservationToken(t) => Some(*t),
            _ => None,
        })
        .expect("RESERVATION-TOKEN");
    assert!(s.allocator().reserved.contains(&50_003));
    // Another allocation does not get the reserved port.
    let r = allocate(&mut s, &mut alice, t0(), client(3));
    assert_eq!(r.port(), 50_001);
    // The token redeems it.
    alice.login(&mut s, t0(), client(4));
    let reply = ask(
        &mut s,
        t0(),
        client(4),
        &alice.request(
            METHOD_ALLOCATE,
            vec![
                Attribute::RequestedTransport(17),
                Attribute::ReservationToken(token),
            ],
        ),
    );
    assert_eq!(
        relayed(&reply),
        Some(SocketAddr::V4(SocketAddrV4::new(RELAY_IP, 50_003)))
    );
    assert!(s.allocator().reserved.is_empty());
    // Used once only.
    alice.login(&mut s, t0(), client(5));
    let reply = ask(
        &mut s,
        t0(),
        client(5),
        &alice.request(
            METHOD_ALLOCATE,
            vec![
                Attribute::RequestedTransport(17),
                Attribute::ReservationToken(token),
            ],
        ),
    );
    assert_eq!(error(&reply), Some(508));
    // An unredeemed reservation lapses after 30 s and its port is released.
    let mut attributes = udp();
    attributes.push(Attribute::EvenPort(true));
    let reply = ask(
        &mut s,
        t0(),
        client(5),
        &alice.request(METHOD_ALLOCATE, attributes),
    );
    assert_eq!(
        relayed(&reply),
        Some(SocketAddr::V4(SocketAddrV4::new(RELAY_IP, 50_004)))
    );
    assert!(s.allocator().reserved.contains(&50_005));
    s.expire(t0().after(Duration::from_secs(30)));
    assert!(s.allocator().reserved.is_empty());
}

#[test]
fn rfc8656_send_needs_a_permission_and_data_comes_back_as_indications() {
    let mut s = server();
    let tuple = client(40_000);
    let mut alice = User::new("alice", "wonderland");
    let relay = allocate(&mut s, &mut alice, t0(), tuple);
    // No permission yet: dropped both ways.
    assert!(s
        .on_message(t0(), tuple, &send_indication(PEER, b"hi"))
        .is_empty());
    assert!(s.on_peer_datagram(t0(), relay, PEER, b"yo").is_empty());
    assert_eq!(s.counters().dropped(DropReason::NoPermission), 2);

    permit(&mut s, &mut alice, t0(), tuple, PEER);
    let actions = s.on_message(t0(), tuple, &send_indication(PEER, b"hi"));
    assert_eq!(to_peer(&actions), [(relay, PEER, b"hi".to_vec())]);
    // Permissions are per IP: another port of the peer is fine, another IP not.
    let actions = s.on_peer_datagram(t0(), relay, PEER_OTHER_PORT, b"yo");
    let (back_to, bytes) = to_client(&actions).remove(0);
    assert_eq!(back_to, tuple);
    let data = parse(&bytes);
    assert_eq!(
        (data.class, data.method),
        (Class::Indication, turn::METHOD_DATA)
    );
    assert!(data.attributes.contains(&peer_attr(PEER_OTHER_PORT)));
    assert!(data.attributes.contains(&Attribute::Data(b"yo")));
    assert!(s.on_peer_datagram(t0(), relay, PEER2, b"no").is_empty());
    // A relay address without allocation.
    let stranger = SocketAddrV4::new(RELAY_IP, 50_009);
    assert!(s.on_peer_datagram(t0(), stranger, PEER, b"?").is_empty());
    assert_eq!(s.counters().dropped(DropReason::NoAllocation), 1);
    let c = s.counters();
    assert_eq!((c.to_peer_packets, c.to_peer_bytes), (1, 2));
    assert_eq!((c.to_client_packets, c.to_client_bytes), (1, 2));

    // Permissions last 300 s; CreatePermission refreshes them.
    let later = t0().after(Duration::from_secs(300));
    assert!(s
        .on_message(later, tuple, &send_indication(PEER, b"hi"))
        .is_empty());
    permit(&mut s, &mut alice, later, tuple, PEER);
    assert_eq!(
        to_peer(&s.on_message(later, tuple, &send_indication(PEER, b"hi"))).len(),
        1
    );
    // A Send indication from a 5-tuple without allocation.
    assert!(s
        .on_message(t0(), client(1), &send_indication(PEER, b"hi"))
        .is_empty());
    assert_eq!(s.counters().dropped(DropReason::NoAllocation), 2);
}

#[test]
fn denied_peers_get_403_unless_allowed() {
    let mut config = config();
    config.own_addresses = vec![Ipv4Addr::new(198, 51, 100, 99)];
    config.allowed_peers = vec!["10.1.0.0/16".parse().unwrap()];
    let mut s = server_with(config, 50_000..=50_009);
    let tuple = client(40_000);
    let mut alice = User::new("alice", "wonderland");
    allocate(&mut s, &mut alice, t0(), tuple);
    let denied = [
        "127.0.0.1",
        "0.1.2.3",
        "10.0.0.1",
        "172.16.5.5",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "224.0.0.1",
        "255.255.255.255",
        "198.51.100.99",
    ];
    for ip in denied {
        let peer = SocketAddrV4::new(ip.parse().unwrap(), 53);
        for (method, attributes) in [
            (
                METHOD_CREATE_PERMISSION,
                vec![peer_attr(PEER), peer_attr(peer)],
            ),
            (
                METHOD_CHANNEL_BIND,
                vec![Attribute::ChannelNumber(0x4000), peer_attr(peer)],
            ),
        ] {
            let reply = ask(&mut s, t0(), tuple, &alice.request(method, attributes));
            assert_eq!(error(&reply), Some(403), "{ip}");
        }
    }
    // All or nothing: PEER was in the refused requests and got no permission.
    assert!(s
        .on_message(t0(), tuple, &send_indication(PEER, b"x"))
        .is_empty());
    assert_eq!(s.counters().dropped(DropReason::NoPermission), 1);
    // A Send indication to a denied peer is dropped as such.
    assert!(s
        .on_message(
            t0(),
            tuple,
            &send_indication(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 53), b"x")
        )
        .is_empty());
    assert_eq!(s.counters().dropped(DropReason::PeerDenied), 1);
    assert_eq!(s.counters().peer_denied, 2 * denied.len() as u64 + 1);
    // The allow-list wins over the private range.
    permit(
        &mut s,
        &mut alice,
        t0(),
        tuple,
        SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 53),
    );
    // An IPv6 peer: 443.
    let v6: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
    let reply = ask(
        &mut s,
        t0(),
        tuple,
        &alice.request(
            METHOD_CREATE_PERMISSION,
            vec![Attribute::XorPeerAddress(v6)],
        ),
    );
    assert_eq!(error(&reply), Some(443));
    // No peer at all: 400.
    let reply = ask(
        &mut s,
        t0(),
        tuple,
        &alice.request(METHOD_CREATE_PERMISSION, vec![]),
    );
    assert_eq!(error(&reply), Some(400));
}

#[test]
fn relay_to_relay_is_allowed_on_relay_ports_only() {
    // The relay address is one of the host's own and in a denied range here; only
    // relay ports on it are allowed.
    let mut config = config();
    config.own_addresses = vec![RELAY_IP];
    config.denied_peers.push("203.0.113.0/24".parse().unwrap());
    config.relay_addresses = vec![RELAY_IP];
    config.relay_ports = 50_000..=50_009;
    let mut s = server_with(config, 50_000..=50_009);
    let (ta, tb) = (client(40_000), client(40_001));
    let (mut alice, mut bob) = (
        User::new("alice", "wonderland"),
        User::new("bob", "builder"),
    );
    let ra = allocate(&mut s, &mut alice, t0(), ta);
    let rb = allocate(&mut s, &mut bob, t0(), tb);
    // A permission is per IP: granted for the relay address.
    permit(&mut s, &mut alice, t0(), ta, rb);
    permit(&mut s, &mut bob, t0(), tb, ra);
    let sent = to_peer(&s.on_message(t0(), ta, &send_indication(rb, b"hi bob")));
    assert_eq!(sent, [(ra, rb, b"hi bob".to_vec())]);
    let delivered = to_client(&s.on_peer_datagram(t0(), rb, ra, b"hi bob"));
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].0, tb);
    // A channel to another allocation is fine; to the server's own port is not.
    assert_eq!(bind(&mut s, &mut alice, t0(), ta, 0x4000, rb), None);
    let service = SocketAddrV4::new(RELAY_IP, 3478);
    assert_eq!(
        bind(&mut s, &mut alice, t0(), ta, 0x4001, service),
        Some(403)
    );
    // Send to, and datagrams from, a non-relay port of the relay address: dropped.
    assert!(s
        .on_message(t0(), ta, &send_indication(service, b"x"))
        .is_empty());
    assert_eq!(s.counters().dropped(DropReason::PeerDenied), 1);
    assert!(s.on_peer_datagram(t0(), ra, service, b"x").is_empty());
    assert_eq!(s.counters().dropped(DropReason::PeerDenied), 2);
    // Another own address stays refused.
    let mut config = self::config();
    config.own_addresses = vec![RELAY_IP, Ipv4Addr::new(203, 0, 113, 2)];
    config.relay_addresses = vec![RELAY_IP];
    config.relay_ports = 50_000..=50_009;
    let mut s = server_with(config, 50_000..=50_009);
    let mut alice = User::new("alice", "wonderland");
    allocate(&mut s, &mut alice, t0(), ta);
    let other = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 2), 50_001);
    let reply = ask(
        &mut s,
        t0(),
        ta,
        &alice.request(METHOD_CREATE_PERMISSION, vec![peer_attr(other)]),
    );
    assert_eq!(error(&reply), Some(403));
    // Without relay addresses configured, the relay address is an own address: 403.
    let mut config = self::config();
    config.own_addresses = vec![RELAY_IP];
    let mut s = server_with(config, 50_000..=50_009);
    let mut alice = User::new("alice", "wonderland");
    allocate(&mut s, &mut alice, t0(), ta);
    let reply = ask(
        &mut s,
        t0(),
        ta,
        &alice.request(
            METHOD_CREATE_PERMISSION,
            vec![peer_attr(SocketAddrV4::new(RELAY_IP, 50_001))],
        ),
    );
    assert_eq!(error(&reply), Some(403));
}

#[test]
fn rfc8656_channel_bind_rules() {
    let mut s = server();
    let tuple = client(40_000);
    let mut alice = User::new("alice", "wonderland");
    allocate(&mut s, &mut alice, t0(), tuple);
    assert_eq!(
        bind(&mut s, &mut alice, t0(), tuple, 0x3fff, PEER),
        Some(400)
    );
    assert_eq!(
        bind(&mut s, &mut alice, t0(), tuple, 0x8000, PEER),
        Some(400)
    );
    assert_eq!(bind(&mut s, &mut alice, t0(), tuple, 0x4000, PEER), None);
    // Rebinding the same pair refreshes it.
    assert_eq!(bind(&mut s, &mut alice, t0(), tuple, 0x4000, PEER), None);
    // The channel to another peer, or the peer to another channel: 400.
    assert_eq!(
        bind(&mut s, &mut alice, t0(), tuple, 0x4000, PEER2),
        Some(400)
    );
    assert_eq!(
        bind(&mut s, &mut alice, t0(), tuple, 0x4001, PEER),
        Some(400)
    );
    // Another port of the same IP is another peer.
    assert_eq!(
        bind(&mut s, &mut alice, t0(), tuple, 0x4001, PEER_OTHER_PORT),
        None
    );
    // Missing CHANNEL-NUMBER: 400.
    let reply = ask(
        &mut s,
        t0(),
        tuple,
        &alice.request(METHOD_CHANNEL_BIND, vec![peer_attr(PEER2)]),
    );
    assert_eq!(error(&reply), Some(400));
}

#[test]
fn channel_data_relays_both_ways_padded_over_tcp() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut s = server();
        let tuple = FiveTuple {
            transport,
            ..client(40_000)
        };
        let mut alice = User::new("alice", "wonderland");
        let relay = allocate(&mut s, &mut alice, t0(), tuple);
        assert_eq!(bind(&mut s, &mut alice, t0(), tuple, 0x4001, PEER), None);
        // Client → peer: the binding installed the permission.
        let frame = ChannelData {
            channel: 0x4001,
            data: b"hello",
        }
        .to_bytes(transport == Transport::Tcp);
        let actions = s.on_message(t0(), tuple, &frame);
        assert_eq!(to_peer(&actions), [(relay, PEER, b"hello".to_vec())]);
        // Peer → client: ChannelData, padded to 4 bytes over TCP only.
        let back = to_client(&s.on_peer_datagram(t0(), relay, PEER, b"world"));
        let expected: &[u8] = match transport {
            Transport::Udp => &[0x40, 0x01, 0, 5, b'w', b'o', b'r', b'l', b'd'],
            Transport::Tcp => &[0x40, 0x01, 0, 5, b'w', b'o', b'r', b'l', b'd', 0, 0, 0],
        };
        assert_eq!(back, [(tuple, expected.to_vec())]);
        // A channel not bound: dropped.
        let unbound = ChannelData {
            channel: 0x4002,
            data: b"x",
        }
        .to_bytes(false);
        assert!(s.on_message(t0(), tuple, &unbound).is_empty());
        assert_eq!(s.counters().dropped(DropReason::NoChannel), 1);
        // After 300 s the permission is gone though the channel (600 s) is not: a
        // ChannelBind refresh renews both.
        let later = t0().after(Duration::from_secs(300));
        assert!(s.on_message(later, tuple, &frame).is_empty());
        assert_eq!(s.counters().dropped(DropReason::NoPermission), 1);
        assert_eq!(bind(&mut s, &mut alice, later, tuple, 0x4001, PEER), None);
        assert_eq!(to_peer(&s.on_message(later, tuple, &frame)).len(), 1);
        let refresh = alice.request(METHOD_REFRESH, vec![Attribute::Lifetime(3600)]);
        assert_eq!(lifetime(&ask(&mut s, later, tuple, &refresh)), Some(3600));
        // 600 s after its last refresh the channel is gone: Data indications.
        let much_later = t0().after(Duration::from_secs(900));
        s.expire(much_later);
        alice.login(&mut s, much_later, tuple); // the nonce went stale too
        permit(&mut s, &mut alice, much_later, tuple, PEER);
        let back = to_client(&s.on_peer_datagram(much_later, relay, PEER, b"w"));
        assert_eq!(parse(&back[0].1).method, turn::METHOD_DATA);
        assert!(s.on_message(much_later, tuple, &frame).is_empty());
    }
}

#[test]
fn bandwidth_cap_drops_the_excess() {
    let mut config = config();
    config.bandwidth = Some(Bandwidth {
        bytes_per_second: 1000,
        burst_bytes: 1500,
    });
    let mut s = server_with(config, 50_000..=50_009);
    let tuple = client(40_000);
    let mut alice = User::new("alice", "wonderland");
    let relay = allocate(&mut s, &mut alice, t0(), tuple);
    permit(&mut s, &mut alice, t0(), tuple, PEER);
    let payload = [7u8; 1000];
    let sent = (0..3)
        .filter(|_| {
            !to_peer(&s.on_message(t0(), tuple, &send_indication(PEER, &payload))).is_empty()
        })
        .count();
    assert_eq!(sent, 1);
    // The bucket is shared by both directions: 500 bytes left.
    assert_eq!(
        to_client(&s.on_peer_datagram(t0(), relay, PEER, &[1; 500])).len(),
        1
    );
    assert!(s.on_peer_datagram(t0(), relay, PEER, &[1; 1]).is_empty());
    assert_eq!(s.counters().dropped(DropReason::Bandwidth), 3);
    // A second later, 1000 bytes more.
    let later = t0().after(Duration::from_secs(1));
    assert_eq!(
        to_peer(&s.on_message(later, tuple, &send_indication(PEER, &payload))).len(),
        1
    );
    // Another allocation has its own bucket.
    let mut bob = User::new("bob", "builder");
    let other = client(40_001);
    allocate(&mut s, &mut bob, later, other);
    permit(&mut s, &mut bob, later, other, PEER);
    assert_eq!(
        to_peer(&s.on_message(later, other, &send_indication(PEER, &payload))).len(),
        1
    );
}

#[test]
fn unknown_comprehension_required_attributes_get_420() {
    let mut s = server();
    let tuple = client(40_000);
    let mut alice = User::new("alice", "wonderland");
    alice.login(&mut s, t0(), tuple);
    let mut attributes = udp();
    attributes.push(Attribute::Other {
        kind: 0x7777,
        value: &[1, 2],
    });
    attributes.push(Attribute::Other {
        kind: 0xc001,
        value: &[],
    });
    let reply = ask(
        &mut s,
        t0(),
        tuple,
        &alice.request(METHOD_ALLOCATE, attributes),
    );
    assert_eq!(error(&reply), Some(420));
    assert!(parse(&reply)
        .attributes
        .contains(&Attribute::UnknownAttributes(vec![0x7777])));
    assert_eq!(
        auth::check_integrity(&reply, &alice.key()),
        Integrity::Valid
    );
}

#[test]
fn binding_is_answered_and_junk_is_dropped_and_counted() {
    let mut s = server();
    let tuple = client(40_000);
    let reply = ask(
        &mut s,
        t0(),
        tuple,
        &unsigned(crate::stun::wire::METHOD_BINDING, vec![]),
    );
    assert!(parse(&reply)
        .attributes
        .contains(&Attribute::XorMappedAddress(tuple.client)));
    // An unknown method: 400.
    let reply = ask(&mut s, t0(), tuple, &unsigned(0x0ff, vec![]));
    assert_eq!(error(&reply), Some(400));
    // A response, a bad fingerprint, garbage, a bad ChannelData.
    let response = Repr {
        class: Class::Success,
        method: METHOD_ALLOCATE,
        cookie: MAGIC_COOKIE,
        transaction_id: [1; 12],
        attributes: vec![Attribute::Fingerprint],
    }
    .to_bytes();
    assert!(s.on_message(t0(), tuple, &response).is_empty());
    let mut corrupt = unsigned(
        METHOD_ALLOCATE,
        vec![Attribute::Lifetime(1), Attribute::Fingerprint],
    );
    corrupt[27] ^= 1;
    assert!(s.on_message(t0(), tuple, &corrupt).is_empty());
    assert!(s.on_message(t0(), tuple, &[0xff, 1, 2, 3]).is_empty());
    assert!(s.on_message(t0(), tuple, &[0x40, 0x00, 0, 9, 1]).is_empty());
    let c = s.counters();
    assert_eq!(c.dropped(DropReason::NotARequest), 1);
    assert_eq!(c.dropped(DropReason::BadFingerprint), 1);
    assert_eq!(c.dropped(DropReason::Malformed), 2);
}

#[test]
fn config_is_validated() {
    let mut c = config();
    c.realm = String::new();
    assert_eq!(c.validate(), Err(ConfigError::Realm));
    let mut c = config();
    c.default_lifetime = Duration::from_secs(7200);
    assert_eq!(c.validate(), Err(ConfigError::Lifetimes));
    let mut c = config();
    c.credentials = Credentials::SharedSecret(vec![]);
    assert_eq!(c.validate(), Err(ConfigError::NoSecret));
    let mut c = config();
    c.bandwidth = Some(Bandwidth {
        bytes_per_second: 0,
        burst_bytes: 1,
    });
    assert_eq!(c.validate(), Err(ConfigError::Bandwidth));
    assert_eq!(config().validate(), Ok(()));
    assert!(peer_allowed(&config(), "192.0.2.1".parse().unwrap()));
    assert!(!peer_allowed(&config(), "::1".parse().unwrap()));
}

#[test]
fn rfc8656_refresh_with_another_family_is_443() {
    let mut s = server();
    let tuple = client(40_000);
    let mut alice = User::new("alice", "wonderland");
    allocate(&mut s, &mut alice, t0(), tuple);
    let reply = ask(
        &mut s,
        t0(),
        tuple,
        &alice.request(
            METHOD_REFRESH,
            vec![Attribute::RequestedAddressFamily(turn::FAMILY_IPV6)],
        ),
    );
    assert_eq!(error(&reply), Some(443));
    // The allocation is untouched: it still expires at 600 s.
    assert_eq!(
        s.poll_timeout(),
        Some(t0().instant + Duration::from_secs(600))
    );
}

#[test]
fn a_tcp_stream_cut_by_the_framer_drives_the_engine() {
    // What the service will do: push the stream's bytes into a Framer and hand each
    // frame to on_message with the TCP 5-tuple.
    let mut s = server();
    let tuple = FiveTuple {
        transport: Transport::Tcp,
        ..client(40_000)
    };
    let mut alice = User::new("alice", "wonderland");
    let relay = allocate(&mut s, &mut alice, t0(), tuple);
    assert_eq!(bind(&mut s, &mut alice, t0(), tuple, 0x4abc, PEER), None);
    let mut stream = ChannelData {
        channel: 0x4abc,
        data: b"abc",
    }
    .to_bytes(true);
    stream.extend(send_indication(PEER, b"defgh"));
    stream.extend(
        ChannelData {
            channel: 0x4abc,
            data: b"",
        }
        .to_bytes(true),
    );
    let mut framer = turn::Framer::new();
    let mut sent = Vec::new();
    for piece in stream.chunks(5) {
        framer.push(piece);
        while let Some(frame) = framer.next_frame().unwrap() {
            let bytes = match frame {
                turn::Frame::Stun(b) | turn::Frame::ChannelData(b) => b,
            };
            sent.extend(to_peer(&s.on_message(t0(), tuple, &bytes)));
        }
    }
    assert_eq!(
        sent,
        [
            (relay, PEER, b"abc".to_vec()),
            (relay, PEER, b"defgh".to_vec()),
            (relay, PEER, Vec::new()),
        ]
    );
}

#[test]
fn a_closed_tcp_connection_ends_its_allocation() {
    let mut s = server();
    let tuple = FiveTuple {
        transport: Transport::Tcp,
        ..client(40_000)
    };
    let mut alice = User::new("alice", "wonderland");
    let relay = allocate(&mut s, &mut alice, t0(), tuple);
    assert!(s.allocator().in_use.contains(&relay.port()));
    let actions = s.on_connection_closed(tuple);
    assert_eq!(
        actions,
        vec![Action::Event(Event::AllocationEnded {
            tuple,
            relay,
            reason: EndReason::Deleted,
        })]
    );
    assert_eq!(s.relay_of(&tuple), None);
    assert!(!s.allocator().in_use.contains(&relay.port()));
    assert_eq!(s.counters().allocations_deleted, 1);
    assert_eq!(s.counters().allocations_active, 0);
    // Nothing left to end.
    assert!(s.on_connection_closed(tuple).is_empty());
}
