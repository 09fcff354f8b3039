//! Fuzzes natgw's TURN codec, authentication and server engine
//! (`natgw_proto::turn::{wire, auth, engine}`):
//!
//! - no input may panic: STUN/TURN messages, ChannelData, the TCP framer, nonces,
//!   MESSAGE-INTEGRITY checks;
//! - whatever parses re-emits to an equal message (ChannelData padded or not);
//! - the framer's frames are whole messages of the stream, in order;
//! - driving the engine with a script the input spells (requests signed with right
//!   or wrong keys, with the last nonce the engine gave or a stale one, Send
//!   indications, ChannelData, peer datagrams, time passing): every message the
//!   engine emits parses back — STUN responses for the request's transaction, signed
//!   with the user's key when the request was, ChannelData padded over TCP; nothing
//!   goes to a peer in a denied range or from a relay address that is not an
//!   allocation's; the counters and the allocator's ports agree with the events.
//!
//! Input: the first bytes pick the settings; then the script, one operation per
//! chunk (see `Op`).

#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;

use natgw_proto::stun::wire::{Attribute, Class, Packet, Repr, MAGIC_COOKIE};
use natgw_proto::turn::auth::{self, long_term_key, Credentials, Integrity, Nonces};
use natgw_proto::turn::engine::testing::FakeAllocator;
use natgw_proto::turn::engine::{
    peer_allowed, Action, Bandwidth, ChallengeLimit, Config, Event, FiveTuple, Now, Server,
    Transport,
};
use natgw_proto::turn::wire::{self as turn, ChannelData, Frame, Framer, Kind};

const REALM: &str = "natgw";
const RELAY_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const USERS: [(&str, &str); 3] = [("alice", "wonderland"), ("bob", "builder"), ("eve", "x")];
const PEERS: [Ipv4Addr; 6] = [
    Ipv4Addr::new(198, 51, 100, 20),
    Ipv4Addr::new(198, 51, 100, 21),
    Ipv4Addr::new(10, 0, 0, 1),
    Ipv4Addr::new(127, 0, 0, 1),
    Ipv4Addr::new(192, 0, 2, 1),
    Ipv4Addr::new(224, 0, 0, 1),
];

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn codec(data: &[u8]) {
    if let Ok(packet) = Packet::new_checked(data) {
        if let Ok(repr) = Repr::parse(&packet) {
            let bytes = repr.to_bytes();
            let again = Repr::parse(&Packet::new_checked(&bytes[..]).expect("emitted checks"))
                .expect("emitted parses");
            assert_eq!(again, repr);
        }
    }
    if let Ok(message) = ChannelData::parse(data) {
        for pad in [false, true] {
            let bytes = message.to_bytes(pad);
            assert!(!pad || bytes.len() % 4 == 0);
            assert_eq!(ChannelData::parse(&bytes), Ok(message));
        }
    }
    // The framer, fed in pieces: frames are prefixes of what is left, in order.
    let mut framer = Framer::new();
    let mut offset = 0;
    for piece in data.chunks(7) {
        framer.push(piece);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    let (bytes, stun) = match &frame {
                        Frame::Stun(b) => (b, true),
                        Frame::ChannelData(b) => (b, false),
                    };
                    assert_eq!(&data[offset..offset + bytes.len()], &bytes[..]);
                    assert_eq!(
                        turn::kind(bytes),
                        if stun { Kind::Stun } else { Kind::ChannelData }
                    );
                    offset += if stun {
                        bytes.len()
                    } else {
                        (bytes.len() + 3) & !3
                    };
                    if !stun {
                        ChannelData::parse(bytes).expect("a framed ChannelData parses");
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(framer.next_frame().is_err(), "a broken stream stays broken");
                    break;
                }
            }
        }
    }
    // MESSAGE-INTEGRITY and nonces on anything.
    let key = long_term_key("alice", REALM, "wonderland");
    let _ = auth::check_integrity(data, &key);
    let nonces = Nonces::new([1; 32], 600);
    let client: SocketAddr = "198.51.100.10:5000".parse().expect("address");
    if let Ok(text) = std::str::from_utf8(data) {
        if text != nonces.issue(1000, client) {
            assert_ne!(
                nonces.check(text, 1000, client),
                auth::NonceCheck::Fresh,
                "a nonce the server never issued"
            );
        }
    }
}

/// The fuzzer's view of the engine: what it sent and what it expects.
struct Harness {
    server: Server<FakeAllocator>,
    now: Now,
    tuples: [FiveTuple; 4],
    nonces: HashMap<FiveTuple, String>,
    relays: HashSet<SocketAddrV4>,
    tokens: Vec<[u8; 8]>,
    config: Config,
    created: u64,
    ended: u64,
    next_id: u32,
}

impl Harness {
    fn new(settings: &[u8]) -> Self {
        let get = |i: usize| settings.get(i).copied().unwrap_or(0);
        let mut config = Config::new(
            REALM,
            Credentials::from_users(["alice:wonderland", "bob:builder"]).expect("users"),
        );
        config.secret = [7; 32];
        config.user_quota = Some(usize::from(get(0) % 4));
        config.total_quota = Some(usize::from(get(1) % 6));
        config.max_permissions = usize::from(get(2) % 4);
        if get(3) & 1 == 1 {
            config.bandwidth = Some(Bandwidth {
                bytes_per_second: 1 + u64::from(get(4)) * 16,
                burst_bytes: 1 + u64::from(get(5)) * 16,
            });
        }
        if get(3) & 2 == 2 {
            config.allowed_peers = vec!["10.0.0.0/24".parse().expect("prefix")];
        }
        // Unauthenticated answers: unlimited (so long scripts keep their 401s), or
        // within a tiny budget the script exhausts.
        config.challenge_limit = (get(3) & 4 == 4).then(|| ChallengeLimit {
            prefix_len: 1 + get(7) % 32,
            prefix_bytes_per_second: 1 + u64::from(get(7)),
            prefix_burst_bytes: 1 + u64::from(get(7)) * 8,
            bytes_per_second: 1 + u64::from(get(5)) * 4,
            burst_bytes: 1 + u64::from(get(4)) * 16,
            max_prefixes: 1 + usize::from(get(6) % 4),
        });
        if get(3) & 8 == 8 {
            config.max_channels = usize::from(get(7) % 4);
            config.max_transactions = usize::from(get(6) % 4);
        }
        config.own_addresses = vec![Ipv4Addr::new(192, 0, 2, 1)];
        config.software = None;
        let server_addr: SocketAddr = "192.0.2.1:3478".parse().expect("address");
        let tuple = |transport, port| FiveTuple {
            transport,
            client: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), port)),
            server: server_addr,
        };
        let ports = 50_000..=50_000 + u16::from(get(6) % 8);
        Self {
            server: Server::new(config.clone(), FakeAllocator::new(RELAY_IP, ports))
                .expect("valid config"),
            now: Now {
                instant: base(),
                unix_secs: 1_733_318_000,
            },
            tuples: [
                tuple(Transport::Udp, 1),
                tuple(Transport::Udp, 2),
                tuple(Transport::Tcp, 1),
                tuple(Transport::Tcp, 3),
            ],
            nonces: HashMap::new(),
            relays: HashSet::new(),
            tokens: Vec::new(),
            config,
            created: 0,
            ended: 0,
            next_id: 0,
        }
    }

    fn id(&mut self) -> [u8; 12] {
        self.next_id += 1;
        let mut id = [0; 12];
        id[..4].copy_from_slice(&self.next_id.to_be_bytes());
        id
    }

    /// Checks everything the engine asked for; `request` is the transaction the
    /// replies answer and the key it was signed with.
    fn check(&mut self, actions: &[Action], request: Option<([u8; 12], Option<[u8; 16]>)>) {
        for action in actions {
            match action {
                Action::ToClient { tuple, bytes } => {
                    assert!(self.tuples.contains(tuple));
                    match turn::kind(bytes) {
                        Kind::ChannelData => {
                            let m = ChannelData::parse(bytes).expect("emitted ChannelData");
                            assert!(turn::is_channel(m.channel));
                            if tuple.transport == Transport::Tcp {
                                assert_eq!(bytes.len() % 4, 0, "unpadded ChannelData over TCP");
                            } else {
                                assert_eq!(bytes.len(), 4 + m.data.len());
                            }
                        }
                        Kind::Stun => {
                            let repr = Repr::parse(
                                &Packet::new_checked(&bytes[..]).expect("emitted STUN checks"),
                            )
                            .expect("emitted STUN parses");
                            assert_eq!(repr.cookie, MAGIC_COOKIE);
                            if repr.class == Class::Indication {
                                assert_eq!(repr.method, turn::METHOD_DATA);
                                continue;
                            }
                            let (id, key) = request.expect("a response to no request");
                            assert_eq!(repr.transaction_id, id);
                            for a in &repr.attributes {
                                if let Attribute::Nonce(n) = a {
                                    self.nonces.insert(*tuple, (*n).to_owned());
                                }
                                if let Attribute::ReservationToken(t) = a {
                                    self.tokens.push(*t);
                                }
                            }
                            if repr.class == Class::Success {
                                if let Some(key) = key {
                                    assert_eq!(
                                        auth::check_integrity(bytes, &key),
                                        Integrity::Valid,
                                        "a success response not signed with the user's key"
                                    );
                                }
                            }
                        }
                        Kind::Other => panic!("emitted neither STUN nor ChannelData"),
                    }
                }
                Action::ToPeer {
                    relay, peer, bytes, ..
                } => {
                    assert!(
                        self.relays.contains(relay),
                        "sent from no allocation's relay"
                    );
                    assert!(
                        peer_allowed(&self.config, IpAddr::V4(*peer.ip())),
                        "sent to a denied peer {peer}"
                    );
                    assert!(bytes.len() <= natgw_proto::turn::engine::MAX_PAYLOAD);
                }
                Action::Event(Event::AllocationCreated { relay, .. }) => {
                    assert!(self.relays.insert(*relay), "relay handed out twice");
                    self.created += 1;
                }
                Action::Event(Event::AllocationEnded { relay, .. }) => {
                    assert!(self.relays.remove(relay), "ended an unknown allocation");
                    self.ended += 1;
                }
            }
        }
        let c = self.server.counters();
        assert_eq!(c.allocations_created, self.created);
        assert_eq!(c.allocations_expired + c.allocations_deleted, self.ended);
        assert_eq!(c.allocations_active, self.created - self.ended);
        assert_eq!(
            self.server.allocator().in_use.len() as u64,
            c.allocations_active
        );
    }

    /// One operation: `op` picks it, `args` fill it.
    fn step(&mut self, op: u8, args: &[u8]) {
        let get = |i: usize| args.get(i).copied().unwrap_or(0);
        let tuple = self.tuples[usize::from(get(0) % 4)];
        match op % 6 {
            // A request, built and signed from the arguments.
            0 | 1 => {
                let method = [
                    turn::METHOD_ALLOCATE,
                    turn::METHOD_REFRESH,
                    turn::METHOD_CREATE_PERMISSION,
                    turn::METHOD_CHANNEL_BIND,
                    natgw_proto::stun::wire::METHOD_BINDING,
                    0x0ff,
                ][usize::from(get(1) % 6)];
                let (user, password) = USERS[usize::from(get(2) % 3)];
                let password = if get(2) & 0x80 != 0 {
                    "wrong"
                } else {
                    password
                };
                let peer = |b: u8| {
                    SocketAddr::V4(SocketAddrV4::new(
                        PEERS[usize::from(b / 12 % 6)],
                        6000 + u16::from(b % 4),
                    ))
                };
                let token = self
                    .tokens
                    .get(usize::from(get(5)) % self.tokens.len().max(1))
                    .copied()
                    .unwrap_or([get(5); 8]);
                let mut attributes = Vec::new();
                for &pick in args.iter().skip(3).take(6) {
                    attributes.push(match pick % 12 {
                        0 => Attribute::RequestedTransport(if pick & 0x80 != 0 { 6 } else { 17 }),
                        1 => Attribute::Lifetime(u32::from(pick) * 40),
                        2 => Attribute::EvenPort(pick & 0x80 != 0),
                        3 => Attribute::ReservationToken(token),
                        4 | 5 => Attribute::XorPeerAddress(peer(pick)),
                        6 => Attribute::ChannelNumber(0x3ff0 + u16::from(pick) * 8),
                        7 => Attribute::DontFragment,
                        8 => Attribute::RequestedAddressFamily(pick >> 6),
                        9 => Attribute::Other {
                            kind: 0x7000 + u16::from(pick),
                            value: &[],
                        },
                        10 => Attribute::XorPeerAddress("[2001:db8::1]:9".parse().expect("v6")),
                        _ => Attribute::Lifetime(0),
                    });
                }
                let stale = "0".repeat(auth::NONCE_LEN);
                let nonce = match (op & 0x10 != 0, self.nonces.get(&tuple)) {
                    (false, Some(n)) => n.clone(),
                    _ => stale,
                };
                let signed = op & 0x20 == 0;
                if signed {
                    attributes.extend([
                        Attribute::Username(user),
                        Attribute::Realm(REALM),
                        Attribute::Nonce(&nonce),
                        Attribute::MessageIntegrity(&[0; 20]),
                    ]);
                }
                if op & 0x40 != 0 {
                    attributes.push(Attribute::Fingerprint);
                }
                let id = self.id();
                let mut bytes = Repr {
                    class: Class::Request,
                    method,
                    cookie: MAGIC_COOKIE,
                    transaction_id: id,
                    attributes,
                }
                .to_bytes();
                let key = long_term_key(user, REALM, password);
                if signed {
                    auth::sign(&mut bytes, &key);
                }
                let actions = self.server.on_message(self.now, tuple, &bytes);
                // A success to a user whose key is right is signed with it (Binding
                // needs no credentials and is answered unsigned).
                let right = USERS.iter().any(|(u, p)| *u == user && *p == password)
                    && method != natgw_proto::stun::wire::METHOD_BINDING;
                self.check(&actions, Some((id, (signed && right).then_some(key))));
                // Retransmitting is allowed and must not break anything.
                if op & 0x08 != 0 {
                    let actions = self.server.on_message(self.now, tuple, &bytes);
                    self.check(&actions, Some((id, (signed && right).then_some(key))));
                }
            }
            // A Send indication or ChannelData from the client.
            2 => {
                let peer = SocketAddrV4::new(PEERS[usize::from(get(1) % 6)], 6000);
                let data = args.get(3..).unwrap_or(&[]);
                let bytes = if get(2) & 1 == 0 {
                    Repr {
                        class: Class::Indication,
                        method: turn::METHOD_SEND,
                        cookie: MAGIC_COOKIE,
                        transaction_id: [9; 12],
                        attributes: vec![
                            Attribute::XorPeerAddress(SocketAddr::V4(peer)),
                            Attribute::Data(data),
                        ],
                    }
                    .to_bytes()
                } else {
                    ChannelData {
                        channel: 0x4000 + u16::from(get(2) >> 4),
                        data,
                    }
                    .to_bytes(tuple.transport == Transport::Tcp)
                };
                let actions = self.server.on_message(self.now, tuple, &bytes);
                self.check(&actions, None);
            }
            // A peer's datagram to a relay address.
            3 => {
                let relay = SocketAddrV4::new(RELAY_IP, 50_000 + u16::from(get(1) % 9));
                let peer = SocketAddrV4::new(
                    PEERS[usize::from(get(2) % 6)],
                    6000 + u16::from(get(2) >> 6),
                );
                let actions =
                    self.server
                        .on_peer_datagram(self.now, relay, peer, &args[args.len().min(3)..]);
                self.check(&actions, None);
            }
            // Raw bytes from a client.
            4 => {
                let actions = self
                    .server
                    .on_message(self.now, tuple, &args[args.len().min(1)..]);
                // A raw request may be answered; its transaction is in its bytes.
                let id = args.get(9..21).map(|b| {
                    let mut id = [0; 12];
                    id.copy_from_slice(b);
                    id
                });
                self.check(&actions, id.map(|id| (id, None)));
            }
            // Time passes; what is due expires.
            _ => {
                let secs = u64::from(get(0)) * u64::from(get(1) % 16 + 1);
                self.now = self.now.after(Duration::from_secs(secs));
                let due = self.server.poll_timeout();
                let actions = self.server.expire(self.now);
                self.check(&actions, None);
                if let Some(next) = self.server.poll_timeout() {
                    assert!(next > self.now.instant, "expire left something due");
                }
                if due.is_none_or(|d| d > self.now.instant) {
                    assert!(actions.is_empty(), "expired before it was due");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    codec(data);
    if data.len() < 8 {
        return;
    }
    let (settings, script) = data.split_at(8);
    let mut harness = Harness::new(settings);
    // Operations: [op][len][len bytes of arguments], at most 64.
    let mut rest = script;
    for _ in 0..64 {
        let [op, len, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(*len % 32).min(tail.len());
        let (args, after) = tail.split_at(len);
        harness.step(*op, args);
        rest = after;
    }
});
