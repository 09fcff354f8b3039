//! Fuzzes natgw's STUN codec and Binding responder (natgw/src/stun/{wire,responder}.rs):
//! no input may panic; whatever parses must re-emit to an equal message; every reply
//! must be a well-formed STUN message for the same transaction, within the
//! amplification bound.

#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;

// Crate-root modules, so the responder's `super::wire` resolves as in natgw.
#[allow(dead_code, missing_docs)]
#[path = "../../natgw/src/stun/wire.rs"]
mod wire;

#[allow(dead_code, missing_docs)]
#[path = "../../natgw/src/stun/responder.rs"]
mod responder;

use responder::{Config, Outcome, RateLimit, Responder, MAX_RESPONSE_GROWTH, MAX_SOFTWARE_LEN};
use wire::{Attribute, Class, Packet, Repr};

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

fn respond(responder: &mut Responder, data: &[u8]) {
    let (head, datagram) = match data.split_first() {
        Some((h, rest)) => (*h, rest),
        None => (0, data),
    };
    let local = LOCALS[usize::from(head % 5)];
    let src = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, head >> 4), 40000);
    let now = base() + Duration::from_millis(u64::from(head) * 37);
    match responder.handle(now, local, src, datagram) {
        Outcome::Drop(_) => {}
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
            let padding = request
                .attributes
                .iter()
                .any(|a| matches!(a, Attribute::Padding(_)));
            let allowance = MAX_RESPONSE_GROWTH + if padding { 1500 } else { 0 };
            assert!(
                bytes.len() <= datagram.len() + allowance,
                "amplification: {} → {}",
                datagram.len(),
                bytes.len()
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    codec_round_trip(data);
    if data.len() > 1 {
        codec_round_trip(&data[1..]);
    }

    let mut plain = Config::new(PRIMARY);
    plain.rate_limit = None;
    plain.software = Some("s".repeat(MAX_SOFTWARE_LEN));
    let mut plain = Responder::new(plain, Arc::default()).expect("valid config");
    respond(&mut plain, data);

    let mut rfc5780 = Config::new(PRIMARY);
    rfc5780.alternate = Some(ALT);
    rfc5780.rate_limit = Some(RateLimit {
        per_second: 1,
        burst: 2,
        max_sources: 4,
    });
    let mut rfc5780 = Responder::new(rfc5780, Arc::default()).expect("valid config");
    // Several datagrams through one engine exercise the rate limiter's table.
    for chunk in data.chunks(64).take(8) {
        respond(&mut rfc5780, chunk);
    }
    respond(&mut rfc5780, data);
});
