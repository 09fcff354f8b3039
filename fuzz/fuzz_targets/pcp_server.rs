//! The server engine on arbitrary datagram sequences against the in-memory table:
//! no panics, answers never longer than 1100 bytes nor much longer than the request
//! (no amplification), always marked as responses, PCP answers a multiple of 4, and
//! quotas hold.
//!
//! Input: one configuration byte, then records of
//! `[client][flags][delay][len_lo][len_hi][len bytes]`. Flag bit 0 writes the
//! sender's real address into a PCP header's client address field, so the fuzzer
//! gets past ADDRESS_MISMATCH; bits 1-3 trigger an address change, an epoch reset
//! and an unsolicited poll.

#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use natgw_fuzz::pcp::policy::PcpConfig;
use natgw_fuzz::pcp::server::Server;
use natgw_fuzz::pcp::table::MappingTable as _;
use natgw_fuzz::pcp::testing::MemoryTable;
use natgw_fuzz::pcp::wire;

const MAX_PER_HOST: u32 = 4;

fuzz_target!(|data: &[u8]| {
    let Some((&config_byte, mut rest)) = data.split_first() else {
        return;
    };
    let config = PcpConfig {
        natpmp: config_byte & 1 == 0,
        allow_all_protocols: config_byte & 2 != 0,
        third_party_from: if config_byte & 4 != 0 {
            vec!["10.0.0.0/30".parse().unwrap()]
        } else {
            Vec::new()
        },
        max_mappings_per_host: MAX_PER_HOST,
        max_filters: 2,
        requests_per_second: if config_byte & 8 != 0 { 1 } else { 0 },
        burst: 3,
        min_lifetime: 60,
        max_lifetime: 3600,
        rules: if config_byte & 16 != 0 {
            vec![
                "deny 5000-5999 10.0.0.0/30 1-65535".parse().unwrap(),
                "allow 1024-65535 10.0.0.0/8 1-65535".parse().unwrap(),
            ]
        } else {
            PcpConfig::default().rules
        },
        ..PcpConfig::default()
    };
    let start = Instant::now();
    let mut now = start;
    let mut server = Server::new(config, now).unwrap();
    let mut table = MemoryTable::new(Ipv4Addr::new(203, 0, 113, 1));
    table.capacity = 16;
    if config_byte & 32 != 0 {
        table.external = None;
    }

    while rest.len() >= 5 {
        let (head, tail) = rest.split_at(5);
        let len = usize::from(u16::from_le_bytes([head[3], head[4]])).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        rest = tail;
        let (client, flags, delay) = (head[0], head[1], head[2]);
        now += Duration::from_millis(u64::from(delay) * 50);
        let src = SocketAddrV4::new(
            Ipv4Addr::new(10, 0, 0, client & 7),
            5350 + u16::from(client >> 3),
        );
        let mut datagram = datagram.to_vec();
        if flags & 1 != 0 && datagram.len() >= wire::HEADER_LEN && datagram[0] == wire::VERSION {
            datagram[8..24].copy_from_slice(&src.ip().to_ipv6_mapped().octets());
        }
        if flags & 2 != 0 {
            table.external = Some(Ipv4Addr::new(198, 51, 100, flags));
            server.external_address_changed(now);
        }
        if flags & 4 != 0 {
            table.explicit.clear();
            server.reset_epoch(now);
        }

        if let Some(reply) = server.handle(now, src, &datagram, &mut table) {
            assert!(reply.len() <= wire::MAX_LEN, "{} bytes", reply.len());
            assert!(reply.len() >= 4);
            assert!(reply[1] & 0x80 != 0, "not marked as a response");
            // NAT-PMP answers are at most 16 bytes, PCP ones at most the request
            // padded to 4 and to a whole header.
            let bound = datagram.len().div_ceil(4) * 4;
            assert!(reply.len() <= bound.max(wire::HEADER_LEN).min(wire::MAX_LEN));
            if reply[0] == wire::VERSION {
                assert_eq!(reply.len() % 4, 0);
            }
        }
        if flags & 8 != 0 {
            for t in server.unsolicited(now, &table) {
                assert!(t.payload.len() <= wire::MAX_LEN);
            }
            let _ = server.poll_timeout();
        }
        while let Some(event) = server.poll_event() {
            let _ = event.to_string();
        }
        for host in 0..8 {
            let held = table.explicit_of(Ipv4Addr::new(10, 0, 0, host)).len();
            assert!(held <= MAX_PER_HOST as usize, "quota exceeded: {held}");
        }
    }
});
