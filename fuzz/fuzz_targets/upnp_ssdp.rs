//! SSDP on arbitrary datagrams: the M-SEARCH parser and the responder engine. No
//! panics; a search parses the same whether multicast or not (but for MX); every
//! answer goes to the searcher from the address it arrived on, is a `200 OK` that
//! names the target it answers, and one search never yields more than the eight
//! advertisements of the tree (bounded amplification); the pending queue stays
//! within its bound.

#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use natgw_proto::upnp::ssdp::{self, Config, Responder, Search, SsdpError};
use natgw_proto::upnp::{Device, Uuid};

const LAN: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

fuzz_target!(|data: &[u8]| {
    let multicast = Search::parse(data, true);
    let unicast = Search::parse(data, false);
    match (&multicast, &unicast) {
        (Ok(m), Ok(u)) => assert_eq!(m, u, "MX present: the same search"),
        (Err(SsdpError::Mx), Ok(u)) => assert_eq!(u.mx, None),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (m, u) => panic!("multicast {m:?} vs unicast {u:?}"),
    }
    let device = Device::new(Uuid::from_random([7; 16]), 3);
    let t0 = Instant::now();
    let config = Config {
        max_pending: 64,
        ..Config::default()
    };
    let mut responder = Responder::new(device.clone(), config, vec![LAN], t0, 99);
    while responder.poll_transmit(t0).is_some() {}
    let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), 50000);
    // The same datagram a few times: the rate limit and the queue bound.
    let mut scheduled = 0;
    for _ in 0..4 {
        if let Ok(n) = responder.handle(t0, src, LAN, true, data) {
            assert!(n <= ssdp::adverts(&device).len());
            scheduled += n;
        }
    }
    assert!(scheduled <= 64);
    let mut sent = 0;
    let until = t0 + Duration::from_secs(u64::from(ssdp::MX_MAX) + 1);
    let mut now = t0;
    while let Some(next) = responder.poll_timeout() {
        if next > until {
            break;
        }
        now = now.max(next);
        while let Some(t) = responder.poll_transmit(now) {
            if t.to == ssdp::MULTICAST {
                continue; // an advertisement round
            }
            assert_eq!((t.from, t.to), (LAN, src));
            let text = std::str::from_utf8(&t.payload).expect("ASCII answers");
            assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\n"));
            assert!(text.contains("\r\nST: ") && text.contains("\r\nUSN: uuid:"));
            sent += 1;
        }
    }
    assert_eq!(sent, scheduled, "every answer within MX");
});
