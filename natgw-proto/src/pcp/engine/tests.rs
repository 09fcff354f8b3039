//! The engine's unit tests, over the in-memory table.

use super::*;
use crate::pcp::natpmp::MapProtocol;
use crate::pcp::policy::PortSpan;
use crate::pcp::table::{MappingKey, Origin, Protocol};
use crate::pcp::testing::MemoryTable;
use crate::pcp::wire::{MapRepr, Packet, PeerRepr, Request, Response};

const EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const NONCE: Nonce = [7; 12];
const OTHER_NONCE: Nonce = [8; 12];

fn client() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 5), 40000)
}

fn config() -> PcpConfig {
    PcpConfig {
        requests_per_second: 0,
        ..PcpConfig::default()
    }
}

struct Harness {
    server: Engine,
    table: MemoryTable,
    start: Instant,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: PcpConfig) -> Self {
        let now = Instant::now();
        Self {
            server: Engine::new(config, now).unwrap(),
            table: MemoryTable::new(EXT),
            start: now,
            now,
        }
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
    }

    fn send(&mut self, src: SocketAddrV4, datagram: &[u8]) -> Option<Vec<u8>> {
        let reply = self.server.handle(self.now, src, datagram, &mut self.table);
        if let Some(r) = &reply {
            assert!(r.len() <= wire::MAX_LEN);
        }
        reply
    }

    fn pcp(&mut self, src: SocketAddrV4, request: &Request) -> Response {
        let reply = self.send(src, &request.to_bytes()).expect("an answer");
        assert_eq!(reply.len() % 4, 0);
        Response::parse(&Packet::new_checked(&reply[..]).unwrap()).unwrap()
    }

    fn natpmp(&mut self, src: SocketAddrV4, request: natpmp::Request) -> natpmp::Response {
        let reply = self.send(src, &request.to_bytes()).expect("an answer");
        natpmp::Response::parse(&natpmp::Packet::new_checked(&reply[..]).unwrap()).unwrap()
    }

    /// How many `Dropped` events with `reason` are queued (taking all events).
    fn dropped(&mut self, reason: DropReason) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::Dropped { reason: r, .. } if *r == reason))
            .count()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }
}

fn map_repr(protocol: u8, internal_port: u16, nonce: Nonce, suggest: u16) -> MapRepr {
    MapRepr {
        nonce,
        protocol,
        internal_port,
        external_port: suggest,
        external_address: Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
    }
}

fn request(src: SocketAddrV4, lifetime: u32, op: OpRepr, options: Vec<OptionRepr>) -> Request {
    Request {
        lifetime,
        client_address: src.ip().to_ipv6_mapped(),
        op,
        options,
    }
}

fn map(src: SocketAddrV4, port: u16, lifetime: u32, nonce: Nonce) -> Request {
    let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, port, nonce, port));
    request(src, lifetime, op, vec![])
}

fn map_data(response: &Response) -> MapRepr {
    match response.op {
        Some(OpRepr::Map(m)) => m,
        ref other => panic!("not MAP data: {other:?}"),
    }
}

fn external(response: &Response) -> SocketAddrV4 {
    let m = map_data(response);
    SocketAddrV4::new(
        m.external_address.to_ipv4_mapped().unwrap(),
        m.external_port,
    )
}

fn key(port: u16) -> MappingKey {
    MappingKey {
        internal: *client().ip(),
        protocol: Protocol::Udp,
        internal_port: port,
    }
}

fn filter(prefix: [u8; 4], len: u8, port: u16) -> OptionRepr {
    OptionRepr::Filter(FilterRepr {
        prefix_len: len,
        remote_port: port,
        remote_address: Ipv4Addr::from(prefix).to_ipv6_mapped(),
    })
}

fn refusals(events: &[Event]) -> Vec<Answer> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Refused { answer, .. } => Some(*answer),
            _ => None,
        })
        .collect()
}

#[test]
fn map_creates_a_mapping_with_the_suggested_port() {
    // rfc6887 11.3: the suggested external port is honoured when free
    let mut h = Harness::new();
    let r = h.pcp(client(), &map(client(), 8080, 7200, NONCE));
    assert_eq!(r.result, ResultCode::Success);
    assert_eq!(r.lifetime, 7200);
    assert_eq!(r.opcode, Opcode::Map);
    assert_eq!(external(&r), SocketAddrV4::new(EXT, 8080));
    assert_eq!(map_data(&r).nonce, NONCE);
    let m = h.table.explicit[&key(8080)].clone();
    assert_eq!(m.external, SocketAddrV4::new(EXT, 8080));
    assert_eq!(m.origin, Origin::Pcp);
    assert_eq!(m.reply_to, client());
    assert_eq!(m.expires, h.now + Duration::from_secs(7200));
    assert_eq!(
        h.table.installs[0].external_ports,
        [PortSpan::new(1024, 65535).unwrap()]
    );
    assert!(matches!(&h.events()[..], [Event::Created(e)] if e.external.port() == 8080));
}

#[test]
fn taken_suggestion_gets_another_port() {
    // rfc6887 11.3: without PREFER_FAILURE the server assigns another port
    let mut h = Harness::new();
    h.pcp(client(), &map(client(), 8080, 600, NONCE));
    let other = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 6), 5000);
    let r = h.pcp(other, &map(other, 9090, 600, NONCE));
    let mut asked = map(other, 9090, 600, NONCE);
    if let OpRepr::Map(m) = &mut asked.op {
        m.external_port = 8080;
    }
    let r2 = h.pcp(other, &asked);
    assert_eq!(external(&r).port(), 9090);
    assert_eq!(r2.result, ResultCode::Success);
    assert_ne!(external(&r2).port(), 8080);
}

#[test]
fn prefer_failure_refuses_rather_than_assign_another_port() {
    // rfc6887 13.2
    let mut h = Harness::new();
    h.pcp(client(), &map(client(), 8080, 600, NONCE));
    let other = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 6), 5000);
    let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 7000, NONCE, 8080));
    let r = h.pcp(
        other,
        &request(other, 600, op, vec![OptionRepr::PreferFailure]),
    );
    assert_eq!(r.result, ResultCode::CannotProvideExternal);
    assert_eq!(r.lifetime, 30, "short-lived error");
    assert_eq!(r.options, [OptionRepr::PreferFailure], "request copied");
    assert_eq!(h.table.explicit.len(), 1);
    // A free suggestion succeeds, and PREFER_FAILURE is echoed.
    let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 7000, NONCE, 7001));
    let r = h.pcp(
        other,
        &request(other, 600, op, vec![OptionRepr::PreferFailure]),
    );
    assert_eq!(r.result, ResultCode::Success);
    assert_eq!(external(&r).port(), 7001);
    assert_eq!(r.options, [OptionRepr::PreferFailure]);
    // A suggested address that is not the gateway's cannot be provided either.
    let mut op = map_repr(wire::PROTOCOL_UDP, 7100, NONCE, 7100);
    op.external_address = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped();
    let req = request(other, 600, OpRepr::Map(op), vec![OptionRepr::PreferFailure]);
    assert_eq!(h.pcp(other, &req).result, ResultCode::CannotProvideExternal);
}

#[test]
fn renewal_from_a_new_source_port_keeps_the_mapping() {
    // rfc6887 11.3: mappings are keyed by (internal address, protocol, internal
    // port), never by the request's source port
    let mut h = Harness::new();
    let first = h.pcp(client(), &map(client(), 8080, 600, NONCE));
    h.advance(300);
    let moved = SocketAddrV4::new(*client().ip(), 41234);
    let mut renew = map(moved, 8080, 900, NONCE);
    if let OpRepr::Map(m) = &mut renew.op {
        m.external_port = 0;
    }
    let r = h.pcp(moved, &renew);
    assert_eq!(r.result, ResultCode::Success);
    assert_eq!(external(&r), external(&first));
    assert_eq!(r.lifetime, 900);
    assert_eq!(h.table.explicit.len(), 1);
    let m = &h.table.explicit[&key(8080)];
    assert_eq!(m.reply_to, moved);
    assert_eq!(m.expires, h.now + Duration::from_secs(900));
    assert!(matches!(h.events().last(), Some(Event::Renewed(_))));
}

#[test]
fn renewal_with_another_nonce_is_not_authorized() {
    // rfc6887 11.3: the nonce is checked on every renewal
    let mut h = Harness::new();
    h.pcp(client(), &map(client(), 8080, 600, NONCE));
    let expires = h.table.explicit[&key(8080)].expires;
    h.advance(10);
    let r = h.pcp(client(), &map(client(), 8080, 600, OTHER_NONCE));
    assert_eq!(r.result, ResultCode::NotAuthorized);
    assert_eq!(r.lifetime, 1800, "long-lived error");
    assert_eq!(h.table.explicit[&key(8080)].expires, expires);
    assert_eq!(h.table.explicit[&key(8080)].nonce, NONCE);
    let events = h.events();
    assert_eq!(refusals(&events), [Answer::Pcp(ResultCode::NotAuthorized)]);
    let line = events.last().unwrap().to_string();
    assert!(
        line.starts_with("pcp.refused client=10.0.1.5:40000 op=pcp.map result=NOT_AUTHORIZED"),
        "{line}"
    );
    assert!(line.contains("nonce does not match"), "{line}");
}

#[test]
fn an_expired_mapping_can_be_taken_with_a_new_nonce() {
    // rfc6887 11.3: only live mappings are protected by their nonce
    let mut h = Harness::new();
    h.pcp(client(), &map(client(), 8080, 120, NONCE));
    h.advance(121);
    let r = h.pcp(client(), &map(client(), 8080, 600, OTHER_NONCE));
    assert_eq!(r.result, ResultCode::Success);
    assert_eq!(h.table.explicit[&key(8080)].nonce, OTHER_NONCE);
}

#[test]
fn deletion_checks_the_nonce_then_deletes() {
    // rfc6887 11.3, 15: lifetime 0 deletes; the nonce must match
    let mut h = Harness::new();
    let created = h.pcp(client(), &map(client(), 8080, 600, NONCE));
    let r = h.pcp(client(), &map(client(), 8080, 0, OTHER_NONCE));
    assert_eq!(r.result, ResultCode::NotAuthorized);
    assert!(h.table.explicit.contains_key(&key(8080)));
    let moved = SocketAddrV4::new(*client().ip(), 1);
    let r = h.pcp(moved, &map(moved, 8080, 0, NONCE));
    assert_eq!(r.result, ResultCode::Success);
    assert_eq!(r.lifetime, 0);
    assert_eq!(external(&r), external(&created));
    assert!(h.table.explicit.is_empty());
    assert!(matches!(h.events().last(), Some(Event::Deleted(e)) if e.lifetime == 0));
    // Deleting what does not exist succeeds.
    let r = h.pcp(client(), &map(client(), 8080, 0, NONCE));
    assert_eq!(r.result, ResultCode::Success);
    assert_eq!(r.lifetime, 0);
}

#[test]
fn internal_port_zero_with_lifetime_zero_deletes_the_set_with_that_nonce() {
    // rfc6887 11.3: protocol set, internal port 0, lifetime 0 deletes a set
    let mut h = Harness::new();
    h.pcp(client(), &map(client(), 8080, 600, NONCE));
    h.pcp(client(), &map(client(), 8081, 600, NONCE));
    h.pcp(client(), &map(client(), 8082, 600, OTHER_NONCE));
    let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 0, NONCE, 0));
    let r = h.pcp(client(), &request(client(), 0, op, vec![]));
    assert_eq!(r.result, ResultCode::Success);
    let left: Vec<u16> = h.table.explicit.keys().map(|k| k.internal_port).collect();
    assert_eq!(left, [8082]);
}

#[test]
fn lifetimes_are_clamped_to_the_configured_range() {
    // rfc6887 15: the server may grant a shorter or longer lifetime
    let mut h = Harness::with(PcpConfig {
        min_lifetime: 300,
        max_lifetime: 3600,
        ..config()
    });
    assert_eq!(h.pcp(client(), &map(client(), 1, 10, NONCE)).lifetime, 300);
    assert_eq!(
        h.pcp(client(), &map(client(), 2, 99_999, NONCE)).lifetime,
        3600
    );
    assert_eq!(h.table.installs[1].lifetime, 3600);
}

#[test]
fn quota_gives_user_ex_quota_and_renewals_still_work() {
    // rfc6887 7.4: USER_EX_QUOTA is short-lived
    let mut h = Harness::with(PcpConfig {
        max_mappings_per_host: 2,
        ..config()
    });
    h.pcp(client(), &map(client(), 8080, 600, NONCE));
    h.pcp(client(), &map(client(), 8081, 600, NONCE));
    let r = h.pcp(client(), &map(client(), 8082, 600, NONCE));
    assert_eq!(r.result, ResultCode::UserExQuota);
    assert_eq!(r.lifetime, 30);
    assert_eq!(
        h.pcp(client(), &map(client(), 8081, 900, NONCE)).result,
        ResultCode::Success
    );
    // Another host has its own quota.
    let other = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 6), 5000);
    assert_eq!(
        h.pcp(other, &map(other, 8082, 600, NONCE)).result,
        ResultCode::Success
    );
    // NAT-PMP counts against the same quota.
    let r = h.natpmp(
        client(),
        natpmp::Request::Map {
            protocol: MapProtocol::Tcp,
            internal_port: 22,
            suggested_external_port: 0,
            lifetime: 600,
        },
    );
    assert_eq!(r.result(), natpmp::ResultCode::OutOfResources);
}

#[test]
fn client_address_field_must_be_the_source_address() {
    // rfc6887 8.3: ADDRESS_MISMATCH, long-lived
    let mut h = Harness::new();
    let behind_another_nat = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 2), 40000);
    let r = h.pcp(client(), &map(behind_another_nat, 8080, 600, NONCE));
    assert_eq!(r.result, ResultCode::AddressMismatch);
    assert_eq!(r.lifetime, 1800);
    assert!(h.table.explicit.is_empty());
    let mut native_v6 = map(client(), 8080, 600, NONCE);
    native_v6.client_address = "2001:db8::5".parse().unwrap();
    assert_eq!(
        h.pcp(client(), &native_v6).result,
        ResultCode::AddressMismatch
    );
}

#[test]
fn announce_is_answered_whatever_the_state_or_policy() {
    // rfc6887 14.1: SUCCESS, lifetime 0, the epoch
    let mut h = Harness::with(PcpConfig {
        rules: Vec::new(),
        ..config()
    });
    h.table.external = None;
    h.advance(5);
    let announce = request(
        client(),
        0,
        OpRepr::Announce,
        vec![OptionRepr::Unknown {
            code: 200,
            data: vec![1, 2, 3],
        }],
    );
    let r = h.pcp(client(), &announce);
    assert_eq!(r.result, ResultCode::Success);
    assert_eq!(r.opcode, Opcode::Announce);
    assert_eq!(r.lifetime, 0);
    assert_eq!(r.epoch, 5);
    assert!(
        r.options.is_empty(),
        "unknown optional options are not echoed"
    );
    // Everything else fails in this state.
    assert_ne!(
        h.pcp(client(), &map(client(), 8080, 600, NONCE)).result,
        ResultCode::Success
    );
}

#[test]
fn epoch_counts_seconds_and_restarts_after_state_loss() {
    // rfc6887 8.5: epoch time; it goes back when mappings are lost
    let mut h = Harness::new();
    h.advance(100);
    let r = h.pcp(client(), &map(client(), 8080, 600, NONCE));
    assert_eq!(r.epoch, 100);
    h.advance(50);
    h.server.reset_epoch(h.now);
    h.advance(3);
    let r = h.pcp(client(), &request(client(), 0, OpRepr::Announce, vec![]));
    assert_eq!(r.epoch, 3);
    assert_eq!(h.server.epoch(h.start), 0, "saturates before the epoch");
}

#[test]
fn a_restart_that_kept_state_continues_the_epoch_without_announcing() {
    // rfc6887 8.5: the epoch only goes back when mapping state is lost
    let mut h = Harness::new();
    h.advance(100);
    let before = h.server.epoch_elapsed(h.now);
    assert_eq!(before, Duration::from_secs(100));
    // A new server, as a restarted natgw builds it, handed the old epoch.
    let mut restarted = Engine::new(config(), h.now).unwrap();
    assert!(
        restarted.poll_timeout().is_some(),
        "a fresh server announces"
    );
    restarted.continue_epoch(before, h.now);
    h.server = restarted;
    assert_eq!(h.server.poll_timeout(), None, "nothing to announce");
    h.advance(5);
    let r = h.pcp(client(), &request(client(), 0, OpRepr::Announce, vec![]));
    assert_eq!(r.epoch, 105, "the epoch went on");
}

#[test]
fn filters_go_to_the_table_and_prefix_length_zero_clears_them() {
    // rfc6887 13.3
    let mut h = Harness::new();
    let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 8080, NONCE, 0));
    let filters = vec![
        filter([198, 51, 100, 77], 120, 443),
        filter([192, 0, 2, 9], 128, 0),
    ];
    let r = h.pcp(client(), &request(client(), 600, op, filters.clone()));
    assert_eq!(r.result, ResultCode::Success);
    assert_eq!(r.options, filters, "accepted filters are echoed");
    let stored = h.table.explicit[&key(8080)].filters.clone();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].remote.to_string(), "198.51.100.0/24");
    assert_eq!(stored[0].port, 443);
    assert!(stored[0].permits("198.51.100.200:443".parse().unwrap()));
    assert!(!stored[0].permits("198.51.100.200:80".parse().unwrap()));
    assert!(stored[1].permits("192.0.2.9:1".parse().unwrap()));
    // A renewal without FILTER keeps them.
    h.pcp(client(), &request(client(), 600, op, vec![]));
    assert_eq!(h.table.explicit[&key(8080)].filters, stored);
    // Prefix length 0 removes them all.
    let clear = vec![filter([0, 0, 0, 0], 0, 0)];
    assert_eq!(
        h.pcp(client(), &request(client(), 600, op, clear)).result,
        ResultCode::Success
    );
    assert!(h.table.explicit[&key(8080)].filters.is_empty());
    assert!(h.table.installs.last().unwrap().filters.is_empty());
}

#[test]
fn too_many_or_non_ipv4_filters_are_refused() {
    // rfc6887 13.3: EXCESSIVE_REMOTE_PEERS; an IPv6 prefix is malformed here
    let mut h = Harness::with(PcpConfig {
        max_filters: 1,
        ..config()
    });
    let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 8080, NONCE, 0));
    let two = vec![
        filter([198, 51, 100, 0], 120, 0),
        filter([192, 0, 2, 0], 120, 0),
    ];
    let r = h.pcp(client(), &request(client(), 600, op, two));
    assert_eq!(r.result, ResultCode::ExcessiveRemotePeers);
    let short_prefix = vec![filter([198, 51, 100, 0], 64, 0)];
    let r = h.pcp(client(), &request(client(), 600, op, short_prefix));
    assert_eq!(r.result, ResultCode::MalformedOption);
    let v6 = vec![OptionRepr::Filter(FilterRepr {
        prefix_len: 64,
        remote_port: 0,
        remote_address: "2001:db8::".parse().unwrap(),
    })];
    let r = h.pcp(client(), &request(client(), 600, op, v6));
    assert_eq!(r.result, ResultCode::MalformedOption);
    assert!(h.table.explicit.is_empty());
}

#[test]
fn requests_over_the_rate_get_no_answer_and_one_log_line() {
    // rfc6887 8.3: an overloaded server may silently discard requests
    let mut h = Harness::with(PcpConfig {
        requests_per_second: 1,
        burst: 2,
        ..config()
    });
    let announce = request(client(), 0, OpRepr::Announce, vec![]).to_bytes();
    assert!(h.send(client(), &announce).is_some());
    assert!(h.send(client(), &announce).is_some());
    assert!(h.send(client(), &announce).is_none());
    assert!(h.send(client(), &announce).is_none());
    assert_eq!(h.dropped(DropReason::RateLimited), 1);
    h.advance(1);
    assert!(h.send(client(), &announce).is_some());
}

#[test]
fn only_internal_hosts_are_answered() {
    // rfc6887 8.3: only internal hosts are served. A spoofed source — the
    // gateway's own address, a host outside the LAN prefixes, the broadcast
    // address — gets no answer and no mapping (issue #11 findings 1 and 2).
    let mut h = Harness::new();
    for spoofed in [
        Ipv4Addr::new(10, 0, 0, 1),       // the gateway
        Ipv4Addr::new(198, 51, 100, 10),  // the internet
        Ipv4Addr::new(10, 255, 255, 255), // broadcast of 10.0.0.0/8
        Ipv4Addr::new(10, 0, 0, 0),       // its network address
    ] {
        let src = SocketAddrV4::new(spoofed, 40000);
        assert!(h
            .send(src, &map(src, 8022, 600, NONCE).to_bytes())
            .is_none());
        let natpmp_map = natpmp::Request::Map {
            protocol: MapProtocol::Udp,
            internal_port: 8023,
            suggested_external_port: 0,
            lifetime: 600,
        };
        assert!(h.send(src, &natpmp_map.to_bytes()).is_none());
    }
    assert!(h.table.explicit.is_empty(), "{:?}", h.table.explicit);
    assert_eq!(h.dropped(DropReason::NotInternal), 8);
    // The same request from a real host works.
    assert_eq!(
        h.pcp(client(), &map(client(), 8022, 600, NONCE)).result,
        ResultCode::Success
    );
    let stats = h.server.stats();
    assert_eq!(stats.requests, 9);
    assert_eq!(stats.dropped[DropReason::NotInternal.index()], 8);
    assert_eq!((stats.succeeded, stats.refused), (1, 0));
}

#[test]
fn third_party_cannot_name_the_gateway_or_the_outside() {
    let controller = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), 7000);
    let mut h = Harness::with(PcpConfig {
        third_party_from: vec!["10.0.1.2/32".parse().unwrap()],
        ..config()
    });
    for target in [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(198, 51, 100, 10)] {
        let op = OpRepr::Map(map_repr(wire::PROTOCOL_TCP, 22, NONCE, 0));
        let third = vec![OptionRepr::ThirdParty(target.to_ipv6_mapped())];
        let r = h.pcp(controller, &request(controller, 600, op, third));
        assert_eq!(r.result, ResultCode::NotAuthorized, "{target}");
    }
    assert!(h.table.explicit.is_empty());
}

#[test]
fn many_addresses_of_one_lan_share_its_caps() {
    // A host speaking from many addresses gets each a per-host quota, but the
    // interface's and the server's caps hold (issue #11 finding 7).
    let mut h = Harness::with(PcpConfig {
        max_mappings_per_host: 2,
        max_mappings_per_interface: 5,
        max_mappings: 7,
        ..config()
    });
    h.table.lans.push("172.16.0.0/24".parse().unwrap());
    let mut granted = 0;
    for host in 10..20 {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, host), 5000);
        for port in [1000, 1001] {
            let r = h.pcp(src, &map(src, port, 600, NONCE));
            match r.result {
                ResultCode::Success => granted += 1,
                ResultCode::NoResources => assert_eq!(r.lifetime, 30, "short-lived"),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(granted, 5, "the interface's cap");
    // Another LAN still has room, up to the server's cap.
    let other = SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 9), 5000);
    for port in [1000, 1001] {
        assert_eq!(
            h.pcp(other, &map(other, port, 600, NONCE)).result,
            ResultCode::Success
        );
    }
    let third = SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 10), 5000);
    assert_eq!(
        h.pcp(third, &map(third, 1000, 600, NONCE)).result,
        ResultCode::NoResources,
        "the server's cap"
    );
    let r = h.natpmp(
        third,
        natpmp::Request::Map {
            protocol: MapProtocol::Udp,
            internal_port: 9,
            suggested_external_port: 0,
            lifetime: 600,
        },
    );
    assert_eq!(r.result(), natpmp::ResultCode::OutOfResources);
}

#[test]
fn all_clients_together_are_rate_limited() {
    // rfc6887 8.3: an overloaded server may silently discard requests
    let mut h = Harness::with(PcpConfig {
        requests_per_second: 5,
        burst: 5,
        requests_per_second_total: 4,
        burst_total: 4,
        ..config()
    });
    let announce = |src| request(src, 0, OpRepr::Announce, vec![]).to_bytes();
    let answered = (1..=8)
        .filter(|i| {
            let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, *i), 5000);
            h.send(src, &announce(src)).is_some()
        })
        .count();
    assert_eq!(answered, 4);
    assert_eq!(h.server.stats().dropped[DropReason::Busy.index()], 4);
    assert_eq!(h.dropped(DropReason::Busy), 1, "logged once per episode");
    h.advance(1);
    let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 9), 5000);
    assert!(h.send(src, &announce(src)).is_some());
}

#[test]
fn responses_and_short_datagrams_are_dropped_silently() {
    // rfc6887 8.3: under 2 bytes, R bit set, or shorter than the header
    let mut h = Harness::new();
    assert_eq!(h.send(client(), &[2]), None);
    let mut response = h.server.announce_response(h.now);
    assert_eq!(h.send(client(), &response), None);
    response[1] = 0x81;
    assert_eq!(h.send(client(), &response), None);
    let announce = request(client(), 0, OpRepr::Announce, vec![]).to_bytes();
    assert_eq!(h.send(client(), &announce[..20]), None);
    // NAT-PMP responses and truncated mapping requests too (rfc6886 3.5, 3.3).
    assert_eq!(h.send(client(), &[0, 128, 0, 0]), None);
    assert_eq!(h.send(client(), &[0, 1, 0, 0, 0x1f, 0x90]), None);
    let drops = h.events();
    assert_eq!(drops.len(), 6);
    assert!(drops.iter().all(|e| matches!(e, Event::Dropped { .. })));
}

#[test]
fn unsupported_version_is_answered_naming_version_2() {
    // rfc6887 9: version 1 (pre-RFC drafts) and later versions
    let mut h = Harness::new();
    for version in [1u8, 3, 255] {
        let mut bytes = map(client(), 8080, 600, NONCE).to_bytes();
        bytes[0] = version;
        let reply = h.send(client(), &bytes).unwrap();
        assert_eq!(reply.len(), wire::HEADER_LEN);
        let r = Response::parse(&Packet::new_checked(&reply[..]).unwrap()).unwrap();
        assert_eq!(reply[0], 2);
        assert_eq!(r.result, ResultCode::UnsuppVersion);
        assert_eq!(r.opcode, Opcode::Map);
        assert_eq!(r.lifetime, 1800);
    }
    // Two bytes are enough to be answered.
    assert_eq!(h.send(client(), &[1, 1]).unwrap().len(), 24);
}

#[test]
fn version_0_is_nat_pmp_unless_disabled() {
    // rfc6887 9 with rfc6886: version 0 is NAT-PMP
    let mut h = Harness::new();
    let r = h.natpmp(client(), natpmp::Request::ExternalAddress);
    assert_eq!(
        r,
        natpmp::Response::ExternalAddress {
            result: natpmp::ResultCode::Success,
            epoch: 0,
            address: EXT
        }
    );
    let mut h = Harness::with(PcpConfig {
        natpmp: false,
        ..config()
    });
    let reply = h.send(client(), &[0, 0]).unwrap();
    assert_eq!(reply[0], 2);
    assert_eq!(reply[3], ResultCode::UnsuppVersion.to_wire());
}

#[test]
fn bad_lengths_are_malformed_requests() {
    // rfc6887 7, 8.3: multiple of 4, at most 1100, room for the opcode data
    let mut h = Harness::new();
    let mut bytes = map(client(), 8080, 600, NONCE).to_bytes();
    bytes.push(0);
    let reply = h.send(client(), &bytes).unwrap();
    assert_eq!(reply[3], ResultCode::MalformedRequest.to_wire());
    assert_eq!(reply.len(), 64, "copied and padded");
    bytes.resize(1500, 0);
    let reply = h.send(client(), &bytes).unwrap();
    assert_eq!(reply[3], ResultCode::MalformedRequest.to_wire());
    assert_eq!(reply.len(), wire::MAX_LEN);
    let short = map(client(), 8080, 600, NONCE).to_bytes();
    let reply = h.send(client(), &short[..56]).unwrap();
    assert_eq!(reply[3], ResultCode::MalformedRequest.to_wire());
    assert!(h.table.installs.is_empty());
}

#[test]
fn unknown_opcode_is_unsupp_opcode() {
    // rfc6887 8.3
    let mut h = Harness::new();
    let mut bytes = request(client(), 0, OpRepr::Announce, vec![]).to_bytes();
    bytes[1] = 3;
    let reply = h.send(client(), &bytes).unwrap();
    assert_eq!(reply[1], 0x83);
    assert_eq!(reply[3], ResultCode::UnsuppOpcode.to_wire());
}

#[test]
fn unknown_mandatory_option_is_unsupp_option_and_optional_is_ignored() {
    // rfc6887 7.3
    let mut h = Harness::new();
    let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 8080, NONCE, 0));
    let mandatory = vec![OptionRepr::Unknown {
        code: 99,
        data: vec![],
    }];
    let r = h.pcp(client(), &request(client(), 600, op, mandatory));
    assert_eq!(r.result, ResultCode::UnsuppOption);
    let optional = vec![OptionRepr::Unknown {
        code: 128,
        data: vec![9; 5],
    }];
    let r = h.pcp(client(), &request(client(), 600, op, optional));
    assert_eq!(r.result, ResultCode::Success);
    assert!(r.options.is_empty());
}

#[test]
fn malformed_repeated_or_misplaced_options_are_malformed_option() {
    // rfc6887 7.3, 13.1-13.3
    let mut h = Harness::new();
    let mut bytes = request(
        client(),
        600,
        OpRepr::Map(map_repr(17, 8080, NONCE, 0)),
        vec![],
    )
    .to_bytes();
    bytes.extend_from_slice(&[2, 0, 0, 4, 0, 0, 0, 0]);
    let reply = h.send(client(), &bytes).unwrap();
    assert_eq!(reply[3], ResultCode::MalformedOption.to_wire());
    let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 8080, NONCE, 0));
    let twice = vec![OptionRepr::PreferFailure, OptionRepr::PreferFailure];
    assert_eq!(
        h.pcp(client(), &request(client(), 600, op, twice)).result,
        ResultCode::MalformedOption
    );
    let in_announce = vec![OptionRepr::PreferFailure];
    assert_eq!(
        h.pcp(
            client(),
            &request(client(), 0, OpRepr::Announce, in_announce)
        )
        .result,
        ResultCode::MalformedOption
    );
    let peer = OpRepr::Peer(PeerRepr {
        nonce: NONCE,
        protocol: wire::PROTOCOL_UDP,
        internal_port: 5000,
        external_port: 0,
        external_address: Ipv6Addr::UNSPECIFIED,
        remote_port: 3478,
        remote_address: Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped(),
    });
    let filter_in_peer = vec![filter([198, 51, 100, 0], 120, 0)];
    assert_eq!(
        h.pcp(client(), &request(client(), 600, peer, filter_in_peer))
            .result,
        ResultCode::MalformedOption
    );
    assert!(h.table.explicit.is_empty() && h.table.peers.is_empty());
}

#[test]
fn only_udp_tcp_and_all_can_be_mapped() {
    // rfc6887 7.4: UNSUPP_PROTOCOL
    let mut h = Harness::new();
    let op = OpRepr::Map(map_repr(1, 8080, NONCE, 0));
    let r = h.pcp(client(), &request(client(), 600, op, vec![]));
    assert_eq!(r.result, ResultCode::UnsuppProtocol);
    assert_eq!(r.lifetime, 1800);
}

#[test]
fn internal_port_zero_means_all_ports_only_with_protocol_zero() {
    // rfc6887 11.1
    let mut h = Harness::new();
    let tcp_all_ports = OpRepr::Map(map_repr(wire::PROTOCOL_TCP, 0, NONCE, 0));
    assert_eq!(
        h.pcp(client(), &request(client(), 600, tcp_all_ports, vec![]))
            .result,
        ResultCode::MalformedRequest
    );
    let all_with_port = OpRepr::Map(map_repr(wire::PROTOCOL_ALL, 80, NONCE, 0));
    assert_eq!(
        h.pcp(client(), &request(client(), 600, all_with_port, vec![]))
            .result,
        ResultCode::MalformedRequest
    );
    let all = OpRepr::Map(map_repr(wire::PROTOCOL_ALL, 0, NONCE, 0));
    assert_eq!(
        h.pcp(client(), &request(client(), 600, all, vec![])).result,
        ResultCode::NotAuthorized,
        "off by default"
    );
    let mut h = Harness::with(PcpConfig {
        allow_all_protocols: true,
        ..config()
    });
    let r = h.pcp(client(), &request(client(), 600, all, vec![]));
    assert_eq!(r.result, ResultCode::Success);
    assert_eq!(external(&r), SocketAddrV4::new(EXT, 0));
    assert!(h.table.installs[0].external_ports.is_empty());
}

#[test]
fn third_party_is_off_by_default_then_limited_to_configured_hosts() {
    // rfc6887 13.1: UNSUPP_OPTION when unsupported, NOT_AUTHORIZED when refused
    let controller = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), 7000);
    let printer = Ipv4Addr::new(10, 0, 1, 9);
    let op = OpRepr::Map(map_repr(wire::PROTOCOL_TCP, 631, NONCE, 0));
    let third = vec![OptionRepr::ThirdParty(printer.to_ipv6_mapped())];
    let mut h = Harness::new();
    let r = h.pcp(controller, &request(controller, 600, op, third.clone()));
    assert_eq!(r.result, ResultCode::UnsuppOption);

    let mut h = Harness::with(PcpConfig {
        third_party_from: vec!["10.0.1.2/32".parse().unwrap()],
        ..config()
    });
    let r = h.pcp(client(), &request(client(), 600, op, third.clone()));
    assert_eq!(r.result, ResultCode::NotAuthorized);
    let r = h.pcp(controller, &request(controller, 600, op, third.clone()));
    assert_eq!(r.result, ResultCode::Success);
    assert_eq!(r.options, third, "THIRD_PARTY is echoed");
    let k = MappingKey {
        internal: printer,
        protocol: Protocol::Tcp,
        internal_port: 631,
    };
    assert_eq!(h.table.explicit[&k].reply_to, controller);
    // The sender's own address field still has to match.
    let mut lying = request(controller, 600, op, third);
    lying.client_address = printer.to_ipv6_mapped();
    assert_eq!(
        h.pcp(controller, &lying).result,
        ResultCode::AddressMismatch
    );
}

#[test]
fn port_rules_refuse_with_not_authorized() {
    // policy: miniupnpd-style allow/deny rules
    let mut h = Harness::with(PcpConfig {
        rules: vec![
            "deny 1024-65535 10.0.1.6/32 1-65535".parse().unwrap(),
            "allow 2000-2999 10.0.1.0/24 1024-65535".parse().unwrap(),
        ],
        ..config()
    });
    let r = h.pcp(client(), &map(client(), 8080, 600, NONCE));
    assert_eq!(r.result, ResultCode::Success);
    assert!((2000..=2999).contains(&external(&r).port()), "{r:?}");
    let r = h.pcp(client(), &map(client(), 22, 600, NONCE));
    assert_eq!(r.result, ResultCode::NotAuthorized);
    let denied = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 6), 5000);
    assert_eq!(
        h.pcp(denied, &map(denied, 8080, 600, NONCE)).result,
        ResultCode::NotAuthorized
    );
    let r = h.natpmp(
        denied,
        natpmp::Request::Map {
            protocol: MapProtocol::Udp,
            internal_port: 8080,
            suggested_external_port: 0,
            lifetime: 600,
        },
    );
    assert_eq!(r.result(), natpmp::ResultCode::NotAuthorized);
    let line = h.events().last().unwrap().to_string();
    assert!(
        line.contains("op=nat-pmp.map result=NOT_AUTHORIZED"),
        "{line}"
    );
}

fn peer_request(src: SocketAddrV4, nonce: Nonce, protocol: u8, internal_port: u16) -> Request {
    request(
        src,
        600,
        OpRepr::Peer(PeerRepr {
            nonce,
            protocol,
            internal_port,
            external_port: 0,
            external_address: Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
            remote_port: 3478,
            remote_address: Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped(),
        }),
        vec![],
    )
}

#[test]
fn peer_returns_the_endpoint_the_data_path_uses() {
    // rfc6887 12.3: PEER reports the implicit mapping's external endpoint
    let mut h = Harness::new();
    let mapped = h.pcp(client(), &map(client(), 5000, 600, NONCE));
    let r = h.pcp(
        client(),
        &peer_request(client(), NONCE, wire::PROTOCOL_UDP, 5000),
    );
    assert_eq!(r.result, ResultCode::Success);
    assert_eq!(r.lifetime, 600);
    let Some(OpRepr::Peer(p)) = r.op else {
        panic!("no PEER data")
    };
    assert_eq!(
        SocketAddrV4::new(EXT, p.external_port),
        external(&mapped),
        "EIM"
    );
    assert_eq!(p.remote_port, 3478);
    let sent = &h.table.peers[0];
    assert_eq!(sent.remote, "198.51.100.7:3478".parse().unwrap());
    assert_eq!(sent.internal, SocketAddrV4::new(*client().ip(), 5000));
    assert!(matches!(h.events().last(), Some(Event::Peer { .. })));
    // A refresh with another nonce is refused by the table.
    let r = h.pcp(
        client(),
        &peer_request(client(), OTHER_NONCE, wire::PROTOCOL_UDP, 5000),
    );
    assert_eq!(r.result, ResultCode::NotAuthorized);
    // PEER needs a protocol and ports.
    let r = h.pcp(
        client(),
        &peer_request(client(), NONCE, wire::PROTOCOL_ALL, 5000),
    );
    assert_eq!(r.result, ResultCode::MalformedRequest);
    let r = h.pcp(
        client(),
        &peer_request(client(), NONCE, wire::PROTOCOL_UDP, 0),
    );
    assert_eq!(r.result, ResultCode::MalformedRequest);
    let r = h.pcp(client(), &peer_request(client(), NONCE, 132, 5000));
    assert_eq!(r.result, ResultCode::UnsuppProtocol);
}

#[test]
fn no_external_address_is_a_short_lived_network_failure() {
    // rfc6887 7.4: NETWORK_FAILURE
    let mut h = Harness::new();
    h.table.external = None;
    let r = h.pcp(client(), &map(client(), 8080, 600, NONCE));
    assert_eq!(r.result, ResultCode::NetworkFailure);
    assert_eq!(r.lifetime, 30);
    let r = h.pcp(
        client(),
        &peer_request(client(), NONCE, wire::PROTOCOL_UDP, 5000),
    );
    assert_eq!(r.result, ResultCode::NetworkFailure);
    let r = h.natpmp(client(), natpmp::Request::ExternalAddress);
    assert_eq!(r.result(), natpmp::ResultCode::NetworkFailure);
}

#[test]
fn full_table_is_no_resources() {
    // rfc6887 7.4: NO_RESOURCES
    let mut h = Harness::new();
    h.table.capacity = 1;
    h.pcp(client(), &map(client(), 8080, 600, NONCE));
    let r = h.pcp(client(), &map(client(), 8081, 600, NONCE));
    assert_eq!(r.result, ResultCode::NoResources);
    assert_eq!(r.lifetime, 30);
}

#[test]
fn natpmp_maps_renews_and_deletes_over_the_same_table() {
    // rfc6886 3.3, 3.4
    let mut h = Harness::new();
    h.advance(42);
    let map_udp = |port, suggest, lifetime| natpmp::Request::Map {
        protocol: MapProtocol::Udp,
        internal_port: port,
        suggested_external_port: suggest,
        lifetime,
    };
    let r = h.natpmp(client(), map_udp(5000, 45000, 3600));
    assert_eq!(
        r,
        natpmp::Response::Map {
            protocol: MapProtocol::Udp,
            result: natpmp::ResultCode::Success,
            epoch: 42,
            internal_port: 5000,
            external_port: 45000,
            lifetime: 3600
        }
    );
    assert_eq!(h.table.explicit[&key(5000)].origin, Origin::NatPmp);
    assert_eq!(h.table.explicit[&key(5000)].nonce, NATPMP_NONCE);
    h.natpmp(client(), map_udp(5001, 0, 3600));
    // A PCP mapping of the same host is not NAT-PMP's to touch.
    h.pcp(client(), &map(client(), 5002, 600, NONCE));
    let r = h.natpmp(client(), map_udp(5002, 0, 0));
    assert_eq!(r.result(), natpmp::ResultCode::NotAuthorized);
    let r = h.natpmp(client(), map_udp(5002, 0, 600));
    assert_eq!(r.result(), natpmp::ResultCode::NotAuthorized);
    // Lifetime 0 deletes one; internal port 0 deletes all of its NAT-PMP ones.
    let r = h.natpmp(client(), map_udp(5000, 0, 0));
    assert!(matches!(
        r,
        natpmp::Response::Map {
            result: natpmp::ResultCode::Success,
            external_port: 0,
            lifetime: 0,
            ..
        }
    ));
    h.natpmp(client(), map_udp(5000, 0, 3600));
    h.natpmp(client(), map_udp(0, 0, 0));
    let left: Vec<u16> = h.table.explicit.keys().map(|k| k.internal_port).collect();
    assert_eq!(left, [5002]);
    // Internal port 0 is only for deletion.
    assert_eq!(
        h.natpmp(client(), map_udp(0, 0, 60)).result(),
        natpmp::ResultCode::NotAuthorized
    );
    // NAT-PMP's share of the counters: 8 requests (3 refused), besides 1 of PCP.
    let stats = h.server.stats();
    assert_eq!(stats.requests, 9);
    assert_eq!(
        (
            stats.natpmp_requests,
            stats.natpmp_succeeded,
            stats.natpmp_refused
        ),
        (8, 5, 3)
    );
    assert_eq!((stats.succeeded, stats.refused), (6, 3));
}

#[test]
fn natpmp_unknown_opcode_returns_the_request() {
    // rfc6886 3.5: result 5 with the request echoed
    let mut h = Harness::new();
    let reply = h.send(client(), &[0, 7, 1, 2, 3, 4]).unwrap();
    assert_eq!(reply, [0, 0x87, 0, 5, 3, 4]);
    assert_eq!(
        refusals(&h.events()),
        [Answer::NatPmp(natpmp::ResultCode::UnsupportedOpcode)]
    );
}

#[test]
fn restart_is_announced_ten_times_with_doubling_intervals() {
    // rfc6887 14.1.3, rfc6886 3.2.1
    let mut h = Harness::new();
    let mut sent_at = Vec::new();
    while let Some(at) = h.server.poll_timeout() {
        let round = h.server.unsolicited(at, &h.table);
        assert_eq!(round.len(), 2, "PCP ANNOUNCE and NAT-PMP address");
        assert!(round.iter().all(|t| t.destination == ANNOUNCE_GROUP));
        let announce =
            Response::parse(&Packet::new_checked(&round[0].payload[..]).unwrap()).unwrap();
        assert_eq!(announce.opcode, Opcode::Announce);
        let address =
            natpmp::Response::parse(&natpmp::Packet::new_checked(&round[1].payload[..]).unwrap())
                .unwrap();
        assert!(matches!(
            address,
            natpmp::Response::ExternalAddress { address: EXT, .. }
        ));
        sent_at.push(at.duration_since(h.start).as_millis());
    }
    assert_eq!(
        sent_at,
        [0, 250, 750, 1750, 3750, 7750, 15750, 31750, 63750, 127_750]
    );
    assert!(h
        .server
        .unsolicited(h.now + Duration::from_secs(999), &h.table)
        .is_empty());
}

#[test]
fn address_change_sends_unsolicited_map_responses_to_pcp_clients() {
    // rfc6887 14.2
    let mut h = Harness::with(PcpConfig {
        third_party_from: vec!["10.0.1.2/32".parse().unwrap()],
        ..config()
    });
    while let Some(at) = h.server.poll_timeout() {
        h.server.unsolicited(at, &h.table);
    }
    h.pcp(client(), &map(client(), 8080, 600, NONCE));
    let controller = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), 7000);
    let printer = Ipv4Addr::new(10, 0, 1, 9);
    let op = OpRepr::Map(map_repr(wire::PROTOCOL_TCP, 631, NONCE, 0));
    let third = vec![OptionRepr::ThirdParty(printer.to_ipv6_mapped())];
    h.pcp(controller, &request(controller, 600, op, third.clone()));
    h.natpmp(
        client(),
        natpmp::Request::Map {
            protocol: MapProtocol::Tcp,
            internal_port: 22,
            suggested_external_port: 0,
            lifetime: 600,
        },
    );
    // The controller re-addresses the table, then tells the server.
    let new_ext = Ipv4Addr::new(198, 51, 100, 1);
    h.table.external = Some(new_ext);
    for m in h.table.explicit.values_mut() {
        m.external = SocketAddrV4::new(new_ext, m.external.port());
    }
    h.advance(100);
    h.server.external_address_changed(h.now);
    assert_eq!(h.server.poll_timeout(), Some(h.now));
    let round = h.server.unsolicited(h.now, &h.table);
    let maps: Vec<&Transmit> = round
        .iter()
        .filter(|t| t.destination != ANNOUNCE_GROUP)
        .collect();
    assert_eq!(maps.len(), 2, "PCP mappings only");
    let to_client = maps.iter().find(|t| t.destination == client()).unwrap();
    let r = Response::parse(&Packet::new_checked(&to_client.payload[..]).unwrap()).unwrap();
    assert_eq!(external(&r), SocketAddrV4::new(new_ext, 8080));
    assert_eq!(r.lifetime, 500);
    assert_eq!(map_data(&r).nonce, NONCE);
    let to_controller = maps.iter().find(|t| t.destination == controller).unwrap();
    let r = Response::parse(&Packet::new_checked(&to_controller.payload[..]).unwrap()).unwrap();
    assert_eq!(r.options, third);
    // The epoch did not restart: mappings were kept.
    assert_eq!(r.epoch, 100);
}

#[test]
fn error_responses_copy_the_request_and_fill_in_the_header() {
    // rfc6887 8.3: error responses copy the request
    let mut h = Harness::new();
    h.advance(9);
    let op = OpRepr::Map(map_repr(wire::PROTOCOL_UDP, 8080, OTHER_NONCE, 8080));
    let options = vec![OptionRepr::Unknown {
        code: 77,
        data: vec![1],
    }];
    let bytes = request(client(), 600, op, options.clone()).to_bytes();
    let reply = h.send(client(), &bytes).unwrap();
    assert_eq!(reply.len(), bytes.len());
    assert_eq!(&reply[24..], &bytes[24..]);
    let r = Response::parse(&Packet::new_checked(&reply[..]).unwrap()).unwrap();
    assert_eq!(r.result, ResultCode::UnsuppOption);
    assert_eq!(r.epoch, 9);
    assert_eq!(r.options, options);
}

#[test]
fn unpolled_events_are_bounded_and_counted() {
    let mut h = Harness::new();
    for _ in 0..MAX_QUEUED_EVENTS + 5 {
        h.send(client(), &[9]);
    }
    let events = h.events();
    assert_eq!(events.len(), MAX_QUEUED_EVENTS + 1);
    assert_eq!(events.last(), Some(&Event::Lost { count: 5 }));
    assert_eq!(
        events[0].to_string(),
        "pcp.dropped client=10.0.1.5:40000 reason=short"
    );
}

#[test]
fn invalid_policy_is_refused_at_start() {
    let bad = PcpConfig {
        min_lifetime: 10,
        max_lifetime: 5,
        ..config()
    };
    assert!(Engine::new(bad, Instant::now()).is_err());
}
