//! The HTTP request framing and the whole IGD engine behind it, on arbitrary bytes
//! from a LAN host, against the in-memory table: no panics; an incomplete request is
//! answered only once the peer closes; a complete one never takes more bytes than
//! given, and a response is always a well-formed HTTP/1.1 status line with a
//! Content-Length equal to its body; no mapping is made for anyone but the
//! requester (allow_other_hosts is off), and every mapping made is UPnP's.

#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use natgw_proto::pcp::policy::PcpConfig;
use natgw_proto::pcp::table::Origin;
use natgw_proto::pcp::testing::MemoryTable;
use natgw_proto::upnp::engine::{Engine, UpnpConfig};
use natgw_proto::upnp::http::{Limits, Request};
use natgw_proto::upnp::{Device, Uuid};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    match Request::parse(data, &limits) {
        Ok(Some(r)) => {
            assert!(r.len <= data.len());
            assert!(r.body.len() <= limits.max_body);
            assert!(r.headers.len() <= limits.max_headers);
        }
        Ok(None) => assert!(data.len() < limits.max_head + limits.max_body),
        Err(e) => assert!((400..=501).contains(&e.status().code)),
    }
    let now = Instant::now();
    let host = Ipv4Addr::new(10, 0, 1, 2);
    let fresh = || {
        let device = Device::new(Uuid::from_random([1; 16]), 1);
        (
            Engine::new(
                UpnpConfig::default(),
                PcpConfig::default(),
                device,
                now,
                [2; 16],
            ),
            MemoryTable::new(Ipv4Addr::new(192, 0, 2, 1)),
        )
    };
    let src = SocketAddrV4::new(host, 40000);
    let lan = Ipv4Addr::new(10, 0, 0, 1);
    let (mut engine, mut table) = fresh();
    let open = engine.handle_bytes(now, src, lan, data, false, &mut table);
    let (mut engine, mut table) = fresh();
    let closed = engine
        .handle_bytes(now, src, lan, data, true, &mut table)
        .expect("an answer once the peer closed");
    if let Some(open) = &open {
        assert_eq!(open[..12], closed[..12], "the same status");
    }
    let text = String::from_utf8_lossy(&closed);
    assert!(text.starts_with("HTTP/1.1 "));
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("CONTENT-LENGTH: "))
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    assert_eq!(length, closed.len() - head.len() - 4);
    let _ = body;
    for m in table.explicit.values() {
        assert_eq!(m.origin, Origin::Upnp);
        assert_eq!(m.key.internal, host, "only the requester's own mappings");
    }
    while engine.poll_event().is_some() {}
    while let Some(n) = engine.poll_notify() {
        assert_eq!(*n.to.ip(), host, "events go to the subscriber only");
    }
});
