//! The PCP / NAT-PMP server engine (`natgw_proto::pcp::engine`) end to end on arbitrary
//! datagram sequences from chosen sources against the in-memory table, with three
//! LAN prefixes and the gateway's own addresses configured. After every step:
//!
//! - no panics; answers at most 1100 bytes and never much longer than the request
//!   (no amplification), always marked as responses, PCP answers a multiple of 4;
//! - no mapping (explicit MAP / NAT-PMP, or implicit PEER) — nor a request to the
//!   table for one — for an address that is not an internal host: outside the LAN
//!   prefixes, an address of the gateway, or a LAN's network or broadcast address
//!   (checked with `MappingTable::lan_of` and with an independent model of the
//!   address plan); unsolicited MAP responses only to internal hosts;
//! - a request from a source that is not an internal host gets no answer and leaves
//!   the table untouched (THIRD_PARTY or not);
//! - quotas hold over the live mappings: per host (`max_mappings_per_host`), per LAN
//!   interface (`max_mappings_per_interface`) and in all (`max_mappings`), set small
//!   so the fuzzer reaches them;
//! - `Engine::stats()`: each datagram counted exactly once, as succeeded, refused or
//!   dropped (dropped exactly when there is no answer), so `requests == succeeded +
//!   refused + sum(dropped)`.
//!
//! Input: one configuration byte, then records of
//! `[client][flags][delay][len_lo][len_hi][len bytes]`. `client & 31` picks the
//! source address from [`SOURCES`] (ordinary hosts, gateway addresses, network and
//! broadcast addresses, outside hosts), `client >> 5` its port. Flag bit 0 writes
//! the sender's address into a PCP header's client address field, so the fuzzer
//! gets past ADDRESS_MISMATCH; bits 1-3 trigger an address change, an epoch reset
//! and an unsolicited poll; bits 4-7, when not 0, overwrite the address of every
//! THIRD_PARTY option in a PCP request with `SOURCES[THIRD_PARTY_TARGETS[n - 1]]`.

#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use natgw_proto::pcp::engine::{Engine, Stats, ANNOUNCE_GROUP};
use natgw_proto::pcp::policy::PcpConfig;
use natgw_proto::pcp::table::MappingTable as _;
use natgw_proto::pcp::testing::MemoryTable;
use natgw_proto::pcp::wire;
use natgw_proto::prefix::Ipv4Prefix;

/// The LAN prefixes, on interfaces 1, 2, 3. A /31 has no network or broadcast
/// address (RFC 3021).
const LANS: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 24),
    (Ipv4Addr::new(192, 168, 9, 0), 31),
];
/// The gateway's own addresses: one on each LAN and its WAN address.
const GATEWAY: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 0, 0, 1),
    Ipv4Addr::new(172, 16, 0, 1),
    Ipv4Addr::new(192, 168, 9, 0),
    WAN,
];
const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// Source addresses the fuzzer picks from, each with whether it is an internal host
/// (written out by hand: the oracle the model and the table are checked against).
#[rustfmt::skip]
const SOURCES: [(Ipv4Addr, bool); 32] = [
    (Ipv4Addr::new(10, 0, 0, 0), false),        // 0: network address of LAN 1
    (Ipv4Addr::new(10, 0, 0, 2), true),         // 1: host (pcp.third_party_from)
    (Ipv4Addr::new(10, 0, 0, 3), true),         // 2: host (pcp.third_party_from)
    (Ipv4Addr::new(10, 0, 0, 4), true),         // 3: host
    (Ipv4Addr::new(10, 0, 0, 5), true),         // 4: host
    (Ipv4Addr::new(10, 200, 7, 9), true),       // 5: host, same LAN
    (Ipv4Addr::new(10, 0, 0, 255), true),       // 6: host (.255, but not the broadcast)
    (Ipv4Addr::new(172, 16, 0, 10), true),      // 7: host on LAN 2 (third_party_from)
    (Ipv4Addr::new(172, 16, 0, 11), true),      // 8: host on LAN 2
    (Ipv4Addr::new(192, 168, 9, 1), true),      // 9: host on the /31 LAN 3
    (Ipv4Addr::new(10, 0, 0, 1), false),        // 10: gateway on LAN 1
    (Ipv4Addr::new(172, 16, 0, 1), false),      // 11: gateway on LAN 2
    (Ipv4Addr::new(192, 168, 9, 0), false),     // 12: gateway on LAN 3
    (WAN, false),                               // 13: gateway's WAN address
    (Ipv4Addr::new(10, 255, 255, 255), false),  // 14: broadcast address of LAN 1
    (Ipv4Addr::new(172, 16, 0, 0), false),      // 15: network address of LAN 2
    (Ipv4Addr::new(172, 16, 0, 255), false),    // 16: broadcast address of LAN 2
    (Ipv4Addr::new(172, 16, 1, 10), false),     // 17: just outside LAN 2
    (Ipv4Addr::new(192, 168, 9, 2), false),     // 18: just outside LAN 3
    (Ipv4Addr::new(198, 51, 100, 7), false),    // 19: outside (third_party_from)
    (Ipv4Addr::new(198, 51, 100, 1), false),    // 20: outside (third_party_from)
    (Ipv4Addr::new(192, 0, 2, 1), false),       // 21: outside
    (Ipv4Addr::new(192, 0, 2, 77), false),      // 22: outside
    (Ipv4Addr::new(11, 0, 0, 2), false),        // 23: outside, next to LAN 1
    (Ipv4Addr::new(9, 255, 255, 255), false),   // 24: outside, below LAN 1
    (Ipv4Addr::new(100, 64, 0, 1), false),      // 25: outside (shared space)
    (Ipv4Addr::new(127, 0, 0, 1), false),       // 26: loopback
    (Ipv4Addr::UNSPECIFIED, false),             // 27: 0.0.0.0
    (Ipv4Addr::BROADCAST, false),               // 28: 255.255.255.255
    (Ipv4Addr::new(224, 0, 0, 1), false),       // 29: all-hosts multicast
    (Ipv4Addr::new(10, 0, 0, 2), true),         // 30: host, as 1 (more ordinary traffic)
    (Ipv4Addr::new(172, 16, 0, 10), true),      // 31: host on LAN 2, as 7
];

/// Indices into [`SOURCES`] that flags bits 4-7 (1..=15) write into THIRD_PARTY.
const THIRD_PARTY_TARGETS: [usize; 15] = [3, 7, 9, 10, 11, 12, 13, 0, 14, 16, 19, 21, 17, 27, 5];

/// Third-party senders: two hosts and the gateway (10.0.0.0/30), hosts of LAN 2 and
/// LAN 3, and outside hosts, whose requests must be dropped however authorised.
const THIRD_PARTY_FROM: [&str; 4] = [
    "10.0.0.0/30",
    "172.16.0.8/29",
    "192.168.9.0/31",
    "198.51.100.0/24",
];

/// Per host, per LAN interface, in all: normal and tight.
const QUOTAS: [(u32, u32, u32); 2] = [(4, 6, 8), (2, 3, 4)];

fn prefix(addr: Ipv4Addr, len: u8) -> Ipv4Prefix {
    Ipv4Prefix::new(addr, len).unwrap()
}

/// The address plan's own answer, independent of `MemoryTable::lan_of`: the LAN
/// index (1-based) of an internal host, `None` for any other address.
fn model_lan(addr: Ipv4Addr) -> Option<u32> {
    if GATEWAY.contains(&addr) {
        return None;
    }
    let a = u32::from(addr);
    for (i, (net, len)) in LANS.iter().enumerate() {
        let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
        let net = u32::from(*net) & mask;
        if a & mask != net {
            continue;
        }
        if *len <= 30 && (a == net || a == net | !mask) {
            return None;
        }
        return Some(i as u32 + 1);
    }
    None
}

/// An internal host by the table and by the model, which must agree.
fn internal(table: &MemoryTable, addr: Ipv4Addr) -> bool {
    let lan = table.lan_of(addr);
    assert_eq!(
        lan,
        model_lan(addr),
        "lan_of({addr}) disagrees with the address plan"
    );
    lan.is_some()
}

fn dropped(stats: &Stats) -> u64 {
    stats.dropped.iter().sum()
}

/// Overwrites the address of every THIRD_PARTY option of a PCP request.
fn set_third_party(datagram: &mut [u8], addr: Ipv4Addr) {
    if datagram.len() < wire::HEADER_LEN || datagram[0] != wire::VERSION {
        return;
    }
    let mut at = wire::HEADER_LEN
        + match datagram[1] & 0x7f {
            1 => wire::MAP_LEN,
            2 => wire::PEER_LEN,
            _ => 0,
        };
    while at + wire::OPTION_HEADER_LEN <= datagram.len() {
        let len = usize::from(u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]));
        let data = at + wire::OPTION_HEADER_LEN;
        if datagram[at] == wire::OPTION_THIRD_PARTY && data + 16 <= datagram.len() {
            datagram[data..data + 16].copy_from_slice(&addr.to_ipv6_mapped().octets());
        }
        at = data + len.div_ceil(4) * 4;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&config_byte, mut rest)) = data.split_first() else {
        return;
    };
    let (per_host, per_lan, total) = QUOTAS[usize::from(config_byte >> 7)];
    let config = PcpConfig {
        natpmp: config_byte & 1 == 0,
        allow_all_protocols: config_byte & 2 != 0,
        third_party_from: if config_byte & 4 != 0 {
            THIRD_PARTY_FROM
                .iter()
                .map(|p| p.parse().unwrap())
                .collect()
        } else {
            Vec::new()
        },
        max_mappings_per_host: per_host,
        max_mappings_per_interface: per_lan,
        max_mappings: total,
        max_filters: 2,
        requests_per_second: if config_byte & 8 != 0 { 1 } else { 0 },
        burst: 3,
        requests_per_second_total: if config_byte & 64 != 0 { 2 } else { 0 },
        burst_total: 5,
        min_lifetime: 60,
        max_lifetime: 3600,
        // The default rule allows 0.0.0.0/0: only the server's own check keeps
        // outside hosts and gateway addresses from mapping.
        rules: if config_byte & 16 != 0 {
            vec![
                "deny 5000-5999 10.0.0.0/30 1-65535".parse().unwrap(),
                "allow 1024-65535 10.0.0.0/8 1-65535".parse().unwrap(),
                "allow 1024-65535 0.0.0.0/0 1024-65535".parse().unwrap(),
            ]
        } else {
            PcpConfig::default().rules
        },
        ..PcpConfig::default()
    };
    let start = Instant::now();
    let mut now = start;
    let mut server = Engine::new(config, now).unwrap();
    let mut table = MemoryTable::new(WAN);
    table.capacity = 16;
    table.lans = LANS.iter().map(|&(a, l)| prefix(a, l)).collect();
    table.gateway = GATEWAY.to_vec();
    if config_byte & 32 != 0 {
        table.external = None;
    }
    for (addr, is_internal) in SOURCES {
        assert_eq!(internal(&table, addr), is_internal, "{addr}");
    }

    while rest.len() >= 5 {
        let (head, tail) = rest.split_at(5);
        let len = usize::from(u16::from_le_bytes([head[3], head[4]])).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        rest = tail;
        let (client, flags, delay) = (head[0], head[1], head[2]);
        now += Duration::from_millis(u64::from(delay) * 50);
        let (src_ip, src_internal) = SOURCES[usize::from(client & 31)];
        let src = SocketAddrV4::new(src_ip, 5350 + u16::from(client >> 5));
        let mut datagram = datagram.to_vec();
        if flags & 1 != 0 && datagram.len() >= wire::HEADER_LEN && datagram[0] == wire::VERSION {
            datagram[8..24].copy_from_slice(&src.ip().to_ipv6_mapped().octets());
        }
        if flags >> 4 != 0 {
            let target = THIRD_PARTY_TARGETS[usize::from(flags >> 4) - 1];
            set_third_party(&mut datagram, SOURCES[target].0);
        }
        if flags & 2 != 0 {
            table.external = Some(Ipv4Addr::new(198, 51, 100, flags));
            server.external_address_changed(now);
        }
        if flags & 4 != 0 {
            table.explicit.clear();
            server.reset_epoch(now);
        }

        let before = *server.stats();
        let (explicit, implicit) = (table.explicit.clone(), table.implicit.clone());
        let (installs, peers) = (table.installs.len(), table.peers.len());
        let reply = server.handle(now, src, &datagram, &mut table);
        let after = *server.stats();

        // Every datagram counted once: answered (succeeded or refused) or dropped.
        assert_eq!(after.requests, before.requests + 1);
        let answered = (after.succeeded + after.refused) - (before.succeeded + before.refused);
        let newly_dropped = dropped(&after) - dropped(&before);
        assert_eq!(
            (answered, newly_dropped),
            if reply.is_some() { (1, 0) } else { (0, 1) },
            "stats {before:?} -> {after:?}, answer: {}",
            reply.is_some()
        );
        assert_eq!(
            after.requests,
            after.succeeded + after.refused + dropped(&after),
            "{after:?}"
        );

        if !src_internal {
            // Spoofed or foreign source: silence, and the table never consulted for
            // a mapping.
            assert!(reply.is_none(), "answered {src}: {:02x?}", reply.as_deref());
            assert_eq!(
                table.explicit, explicit,
                "explicit mappings changed by {src}"
            );
            assert_eq!(
                table.implicit, implicit,
                "implicit mappings changed by {src}"
            );
            assert_eq!(table.installs.len(), installs, "install asked for by {src}");
            assert_eq!(table.peers.len(), peers, "PEER asked for by {src}");
        }
        // Nothing was even asked for a non-internal host (the fake table refuses
        // nothing by address, and with no external address it stores nothing).
        for install in &table.installs[installs..] {
            let host = install.key.internal;
            assert!(internal(&table, host), "install for {host} from {src}");
        }
        for peer in &table.peers[peers..] {
            let host = *peer.internal.ip();
            assert!(internal(&table, host), "PEER for {host} from {src}");
        }

        if let Some(reply) = &reply {
            assert!(reply.len() <= wire::MAX_LEN, "{} bytes", reply.len());
            assert!(reply.len() >= 4);
            assert!(reply[1] & 0x80 != 0, "not marked as a response");
            // NAT-PMP answers are at most 16 bytes, PCP ones at most the request
            // padded to 4 and to a whole header.
            let bound = datagram.len().div_ceil(4) * 4;
            assert!(reply.len() <= bound.clamp(wire::HEADER_LEN, wire::MAX_LEN));
            if reply[0] == wire::VERSION {
                assert_eq!(reply.len() % 4, 0);
            }
        }
        if flags & 8 != 0 {
            for t in server.unsolicited(now, &table) {
                assert!(t.payload.len() <= wire::MAX_LEN);
                assert!(
                    t.destination == ANNOUNCE_GROUP || internal(&table, *t.destination.ip()),
                    "unsolicited to {}",
                    t.destination
                );
            }
            let _ = server.poll_timeout();
        }
        while let Some(event) = server.poll_event() {
            let _ = event.to_string();
        }

        // Mappings only for internal hosts, and within the quotas (live ones).
        let mut on_lan = [0usize; LANS.len() + 1];
        let mut live = 0;
        for (key, m) in &table.explicit {
            assert_eq!(key, &m.key);
            assert!(
                internal(&table, key.internal),
                "mapping for {}",
                key.internal
            );
            assert!(
                internal(&table, *m.reply_to.ip()),
                "mapping answers {}",
                m.reply_to
            );
            if m.expires > now {
                live += 1;
                on_lan[table.lan_of(key.internal).unwrap() as usize] += 1;
                let held = table
                    .explicit
                    .values()
                    .filter(|o| o.key.internal == key.internal && o.expires > now)
                    .count();
                assert!(held <= per_host as usize, "{} holds {held}", key.internal);
            }
        }
        for (lan, held) in on_lan.iter().enumerate() {
            assert!(*held <= per_lan as usize, "LAN {lan} holds {held}");
        }
        assert!(live <= total as usize, "{live} mappings");
        for (_, endpoint) in table.implicit.keys() {
            assert!(
                internal(&table, *endpoint.ip()),
                "PEER mapping for {endpoint}"
            );
        }
    }
});
