//! Fuzzes natgw's STUN codec and Binding responder (`natgw_proto::stun::{wire,
//! responder}`)
//! end to end:
//!
//! - no input may panic; whatever parses must re-emit to an equal message;
//! - every reply is a well-formed STUN message for the same transaction, to the
//!   request's source IP, from one of the responder's addresses;
//! - no reply toward the WAN is larger than 3 times its request, whatever the
//!   attributes (PADDING included): `len <= reply_limit(request)`, i.e. at most 3x
//!   and at most MAX_RESPONSE_GROWTH bytes more; a reply that carries PADDING is no
//!   longer than its request, and the engine never has to drop a reply as
//!   Oversized (it trims optional attributes instead);
//! - the counters: each datagram counted once as received and once as a success,
//!   400, 420 or a drop for the reason returned; reasons decided outside the engine
//!   (Unresolved) or configured away (Disabled) never come from it.
//!
//! Input: `[head][datagram]`: `head` picks the local address, the source IP and the
//! time; the rest is the datagram (and, in 64-byte chunks, a stream of datagrams
//! through a rate-limited RFC 5780 responder).

#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;

use natgw_proto::stun::responder::{
    reply_limit, Config, Counters, CountersSnapshot, DropReason, Outcome, RateLimit, Responder,
    AMPLIFICATION_FACTOR, MAX_PADDING_LEN, MAX_SOFTWARE_LEN,
};
use natgw_proto::stun::wire::{Attribute, Class, Packet, Repr};

const PRIMARY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3478);
const ALT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const LOCALS: [SocketAddrV4; 5] = [
    PRIMARY,
    SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3479),
    SocketAddrV4::new(ALT, 3478),
    SocketAddrV4::new(ALT, 3479),
    SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 9), 3478),
];

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn codec_round_trip(data: &[u8]) {
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let Ok(repr) = Repr::parse(&packet) else {
        return;
    };
    let bytes = repr.to_bytes();
    let packet = Packet::new_checked(&bytes[..]).expect("emitted message fails its checks");
    let again = Repr::parse(&packet).expect("emitted message does not parse");
    assert_eq!(again, repr, "round trip changed the message");
}

/// The bound: no reply toward the WAN more than 3 times its request.
const MAX_FACTOR: usize = 3;
const _: () = assert!(AMPLIFICATION_FACTOR <= MAX_FACTOR);

/// Replies and drops: every datagram the engine handled ends as exactly one of them.
fn outcomes(c: &CountersSnapshot) -> u64 {
    c.success + c.bad_request + c.unknown_attribute + c.dropped.iter().map(|(_, n)| n).sum::<u64>()
}

fn dropped(c: &CountersSnapshot, reason: DropReason) -> u64 {
    c.dropped
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| *n)
}

fn respond(responder: &mut Responder, counters: &Counters, data: &[u8]) {
    let (head, datagram) = match data.split_first() {
        Some((h, rest)) => (*h, rest),
        None => (0, data),
    };
    let local = LOCALS[usize::from(head % 5)];
    let src = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, head >> 4), 40000);
    let now = base() + Duration::from_millis(u64::from(head) * 37);
    let before = counters.snapshot();
    let outcome = responder.handle(now, local, src, datagram);
    let after = counters.snapshot();
    assert_eq!(after.received, before.received + 1, "{after:?}");
    assert_eq!(
        outcomes(&after),
        outcomes(&before) + 1,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.received, outcomes(&after), "{after:?}");
    assert_eq!(after.send_failed, before.send_failed);
    match outcome {
        Outcome::Drop(reason) => {
            assert_eq!(dropped(&after, reason), dropped(&before, reason) + 1);
            match reason {
                DropReason::NotStun
                | DropReason::Malformed
                | DropReason::BadFingerprint
                | DropReason::NotARequest
                | DropReason::UnsupportedMethod
                | DropReason::NotOurAddress
                | DropReason::RateLimited => {}
                DropReason::Oversized => panic!(
                    "a {}-byte request's reply was dropped as oversized: {datagram:02x?}",
                    datagram.len()
                ),
                DropReason::Disabled | DropReason::Unresolved => {
                    panic!("the engine returned {reason}")
                }
            }
        }
        Outcome::Reply { from, to, bytes } => {
            let request =
                Repr::parse(&Packet::new_checked(datagram).expect("answered a bad message"))
                    .expect("answered an unparsable message");
            assert_eq!(request.class, Class::Request);
            assert_eq!(to.ip(), src.ip(), "reply redirected to another host");
            assert!(LOCALS[..4].contains(&from) || from == local);
            let reply = Repr::parse(&Packet::new_checked(&bytes[..]).expect("reply fails checks"))
                .expect("reply does not parse");
            assert_eq!(reply.transaction_id, request.transaction_id);
            assert_eq!(reply.cookie, request.cookie);
            // The amplification bound, whatever the request carried (PADDING too).
            assert!(
                bytes.len() <= reply_limit(datagram.len())
                    && bytes.len() <= MAX_FACTOR * datagram.len(),
                "amplification: {} → {} bytes",
                datagram.len(),
                bytes.len()
            );
            // PADDING pads only up to the request's own length.
            if reply
                .attributes
                .iter()
                .any(|a| matches!(a, Attribute::Padding(_)))
            {
                assert!(
                    request
                        .attributes
                        .iter()
                        .any(|a| matches!(a, Attribute::Padding(_))),
                    "PADDING nobody asked for"
                );
                assert!(
                    bytes.len() <= datagram.len(),
                    "padded reply of {} bytes to a {}-byte request",
                    bytes.len(),
                    datagram.len()
                );
            }
        }
    }
}

fn engine(config: Config) -> (Responder, Arc<Counters>) {
    let counters = Arc::<Counters>::default();
    let responder = Responder::new(config, Arc::clone(&counters)).expect("valid config");
    (responder, counters)
}

fuzz_target!(|data: &[u8]| {
    codec_round_trip(data);
    if data.len() > 1 {
        codec_round_trip(&data[1..]);
    }

    let mut plain = Config::new(PRIMARY);
    plain.rate_limit = None;
    plain.software = Some("s".repeat(MAX_SOFTWARE_LEN));
    let (mut plain, counters) = engine(plain);
    respond(&mut plain, &counters, data);

    let mut rfc5780 = Config::new(PRIMARY);
    rfc5780.alternate = Some(ALT);
    rfc5780.padding_len = MAX_PADDING_LEN;
    rfc5780.rate_limit = Some(RateLimit {
        per_second: 1,
        burst: 2,
        max_sources: 4,
    });
    let (mut rfc5780, counters) = engine(rfc5780);
    // Several datagrams through one engine exercise the rate limiter's table.
    for chunk in data.chunks(64).take(8) {
        respond(&mut rfc5780, &counters, chunk);
    }
    respond(&mut rfc5780, &counters, data);
    // What the socket loop counts into the same counters keeps them consistent.
    counters.dropped_before_engine(DropReason::Unresolved);
    counters.send_failed();
    let c = counters.snapshot();
    assert_eq!(c.received, outcomes(&c));
    assert!(dropped(&c, DropReason::Unresolved) == 1 && c.send_failed == 1);
});
