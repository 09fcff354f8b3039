use super::*;
use crate::config::Timeouts;
use crate::nat_table::testing::MemoryMaps;
use natgw_proto::prefix::Ipv4Prefix;

const EXT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const S: u64 = NS_PER_SEC;
const NONCE: Nonce = [7; 12];

fn defaults() -> Defaults {
    Defaults {
        port_range: PortRange::new(1024, 65535).unwrap(),
        filter_udp: FilterMode::AddressDependent,
        filter_tcp: FilterMode::EndpointIndependent,
        policy: Policy::new(&Timeouts::default(), false),
        blocks: natgw_common::blocks::BlockPlan::default(),
    }
}

fn explicit() -> ExplicitMappings<MemoryMaps> {
    let lan = crate::datapath::addresses::LanIface {
        ifindex: 3,
        prefixes: vec![Ipv4Prefix::new(Ipv4Addr::new(10, 0, 1, 1), 24).unwrap()],
    };
    let hosts = AddressPlan::new(vec![lan.clone()], &lan.prefixes);
    ExplicitMappings::new(vec![EXT], hosts, defaults(), MemoryMaps::default())
        .with_socket_probe(|_, _, _| false)
}

fn key(port: u16) -> MappingKey {
    MappingKey {
        internal: HOST,
        protocol: Protocol::Udp,
        internal_port: port,
    }
}

fn install(port: u16, suggest: Option<u16>, now: Instant) -> Install {
    Install {
        key: key(port),
        origin: Origin::Pcp,
        nonce: NONCE,
        lifetime: 600,
        expires: now + Duration::from_secs(600),
        suggested_address: None,
        suggested_port: suggest,
        prefer_failure: false,
        external_ports: vec![PortSpan::new(1024, 65535).unwrap()],
        filters: Vec::new(),
        reply_to: SocketAddrV4::new(HOST, 40000),
        description: String::new(),
    }
}

fn filter(prefix: &str, port: u16) -> Filter {
    Filter {
        remote: prefix.parse::<Ipv4Prefix>().unwrap(),
        port,
    }
}

/// A traffic mapping as the data path creates it, last used at `last_out`.
fn traffic(nat: &mut MemoryMaps, port: u16, ext_port: u16, created: u64, last_out: u64) {
    let fk = fwd_key(IPPROTO_UDP, SocketAddrV4::new(HOST, port));
    let m = Mapping {
        ext_addr_be: addr_be(EXT.octets()),
        ext_port_be: ext_port.to_be(),
        created_ns: created,
        last_out_ns: last_out,
        ..Mapping::default()
    };
    nat.fwd.insert(fk, m);
    nat.rev.insert(
        rev_key_of(&fk, &m),
        RevValue {
            int_addr_be: fk.addr_be,
            int_port_be: fk.port_be,
            filter: FilterMode::AddressDependent as u8,
            created_ns: created,
            ..RevValue::default()
        },
    );
}

fn entries_of(nat: &MemoryMaps, port: u16) -> Option<(Mapping, RevValue)> {
    let fk = fwd_key(IPPROTO_UDP, SocketAddrV4::new(HOST, port));
    let m = *nat.fwd.get(&fk)?;
    let r = *nat.rev.get(&rev_key_of(&fk, &m))?;
    Some((m, r))
}

#[test]
fn map_installs_both_entries_with_its_origin_and_endpoint_independent_filtering() {
    // rfc6887 §11.3, in the data path's own tables
    let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
    let mut t = x.table(&mut nat, now, 10 * S);
    let ext = t.install(&install(5000, Some(15000), now)).unwrap();
    assert_eq!(ext, SocketAddrV4::new(EXT, 15000), "the suggestion is free");
    assert_eq!(t.explicit(&key(5000)).unwrap().nonce, NONCE);
    let (m, r) = entries_of(&nat, 5000).unwrap();
    assert_eq!(m.origin, natgw_common::Origin::Pcp as u8);
    assert_eq!(m.created_ns, 10 * S);
    assert_eq!(r.created_ns, m.created_ns);
    assert_eq!(r.filter, FilterMode::EndpointIndependent as u8);
    assert_eq!(port(r.int_port_be), 5000);
}

#[test]
fn map_takes_over_the_traffic_mapping_and_keeps_its_port() {
    // rfc4787 REQ-1: one external port per internal endpoint, whoever made it
    let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
    traffic(&mut nat, 5000, 40001, S, 2 * S);
    let mut t = x.table(&mut nat, now, 10 * S);
    let mut strict = install(5000, Some(15000), now);
    strict.prefer_failure = true;
    assert_eq!(t.install(&strict), Err(TableError::CannotProvideExternal));
    let ext = t.install(&install(5000, Some(15000), now)).unwrap();
    assert_eq!(ext.port(), 40001);
    let (m, r) = entries_of(&nat, 5000).unwrap();
    assert_eq!(m.origin, natgw_common::Origin::Pcp as u8);
    assert_eq!(m.created_ns, S, "the same mapping");
    assert_eq!(r.filter, FilterMode::EndpointIndependent as u8);
}

#[test]
fn taken_or_gateway_held_ports_are_not_given() {
    let now = Instant::now();
    let mut nat = MemoryMaps::default();
    traffic(&mut nat, 6000, 15000, S, S);
    let mut x = explicit().with_socket_probe(|_, _, p| p == 5000);
    let mut t = x.table(&mut nat, now, 10 * S);
    let ext = t.install(&install(5000, Some(15000), now)).unwrap();
    assert!(
        ext.port() != 15000 && ext.port() != 5000,
        "neither the taken suggestion nor the port a gateway socket holds: {ext}"
    );
    let mut strict = install(5001, Some(15000), now);
    strict.prefer_failure = true;
    assert_eq!(t.install(&strict), Err(TableError::CannotProvideExternal));
}

#[test]
fn filters_fill_the_trie_and_switch_the_mode() {
    // rfc6887 §13.3
    let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
    let mut req = install(5000, Some(15000), now);
    req.filters = vec![filter("198.51.100.0/24", 0), filter("203.0.113.7/32", 443)];
    x.table(&mut nat, now, S).install(&req).unwrap();
    let (_, r) = entries_of(&nat, 5000).unwrap();
    assert_eq!(r.filter, FilterMode::PcpFilter as u8);
    let key = PcpFilterKey::new(
        addr_be(EXT.octets()),
        15000u16.to_be(),
        IPPROTO_UDP,
        addr_be([203, 0, 113, 7]),
    );
    assert_eq!(
        x.filters
            .pcp_filters
            .get(&(key, PCP_FILTER_FIXED_BITS + 32)),
        Some(&u32::from(443u16.to_be()))
    );
    assert_eq!(x.filters.pcp_filters.len(), 2);
    // A renewal that drops them (the engine passes the complete list).
    req.filters.clear();
    x.table(&mut nat, now, S).install(&req).unwrap();
    let (_, r) = entries_of(&nat, 5000).unwrap();
    assert_eq!(r.filter, FilterMode::EndpointIndependent as u8);
    assert!(x.filters.pcp_filters.is_empty());
    // One prefix, two ports: the trie cannot hold both.
    req.filters = vec![
        filter("198.51.100.0/24", 80),
        filter("198.51.100.0/24", 443),
    ];
    assert_eq!(
        x.table(&mut nat, now, S).install(&req),
        Err(TableError::ExcessiveRemotePeers)
    );
}

#[test]
fn an_unused_mapping_ends_with_its_entries() {
    // rfc6887 §15: lifetime over, no traffic: the port closes
    let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
    let mut req = install(5000, None, now);
    req.filters = vec![filter("198.51.100.0/24", 0)];
    x.table(&mut nat, now, S).install(&req).unwrap();
    assert!(x.expire(&mut nat, now, 2 * S).is_empty(), "not yet");
    let later = now + Duration::from_secs(601);
    let ended = x.expire(&mut nat, later, 602 * S);
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].outcome, Outcome::Removed);
    assert!(nat.fwd.is_empty() && nat.rev.is_empty());
    assert!(x.filters.pcp_filters.is_empty());
    assert!(x.entries().is_empty());
}

#[test]
fn a_mapping_in_use_ends_as_an_implicit_one() {
    // rfc6887 §15: the internal host still sends through it, so the mapping stays,
    // as traffic would have made it (the configured filtering: ADF here)
    let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
    x.table(&mut nat, now, S)
        .install(&install(5000, None, now))
        .unwrap();
    let fk = fwd_key(IPPROTO_UDP, SocketAddrV4::new(HOST, 5000));
    nat.fwd.get_mut(&fk).unwrap().last_out_ns = 500 * S;
    let mut t = x.table(&mut nat, now, 600 * S);
    t.remove(&key(5000));
    assert!(t.explicit(&key(5000)).is_none());
    let (m, r) = entries_of(&nat, 5000).unwrap();
    assert_eq!(m.origin, natgw_common::Origin::Traffic as u8);
    assert_eq!(r.filter, FilterMode::AddressDependent as u8);
}

#[test]
fn static_forwards_never_expire_and_are_not_the_engines() {
    let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
    let internal = SocketAddrV4::new(HOST, 80);
    let ext = x
        .add_static(&mut nat, Protocol::Tcp, 8080, internal, S)
        .unwrap();
    assert_eq!(ext, SocketAddrV4::new(EXT, 8080));
    let ended = x.expire(
        &mut nat,
        now + Duration::from_secs(1_000_000),
        1_000_000 * S,
    );
    assert!(ended.is_empty());
    let tcp80 = MappingKey {
        internal: HOST,
        protocol: Protocol::Tcp,
        internal_port: 80,
    };
    let mut t = x.table(&mut nat, now, S);
    assert!(t.explicit(&tcp80).is_none());
    assert!(t.explicit_of(HOST).is_empty(), "not in the host's quota");
    let mut req = install(80, None, now);
    req.key = tcp80;
    assert_eq!(t.install(&req), Err(TableError::NotAuthorized));
    // A second forward of the same port cannot be had.
    let other = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 3), 80);
    assert_eq!(
        x.add_static(&mut nat, Protocol::Tcp, 8080, other, S),
        Err(TableError::CannotProvideExternal)
    );
    let e = x.entries();
    assert_eq!(e[0].origin, "static");
    assert_eq!(e[0].expires_ns, None);
}

#[test]
fn peer_creates_a_traffic_mapping_and_holds_to_its_nonce() {
    // rfc6887 §12.3
    let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
    let request = PeerRequest {
        internal: SocketAddrV4::new(HOST, 6000),
        protocol: Protocol::Udp,
        remote: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 7000),
        nonce: NONCE,
        lifetime: 7200,
        suggested_address: None,
        suggested_port: Some(16000),
        reply_to: SocketAddrV4::new(HOST, 40000),
    };
    let mut t = x.table(&mut nat, now, 10 * S);
    let grant = t.peer(&request).unwrap();
    assert_eq!(grant.external, SocketAddrV4::new(EXT, 16000));
    assert_eq!(
        grant.lifetime, 300,
        "as long as the UDP idle timeout keeps it"
    );
    let other = PeerRequest {
        nonce: [9; 12],
        ..request.clone()
    };
    assert_eq!(t.peer(&other), Err(TableError::NonceMismatch));
    let (m, r) = entries_of(&nat, 6000).unwrap();
    assert_eq!(m.origin, natgw_common::Origin::Traffic as u8);
    assert_eq!(m.last_out_ns, 10 * S);
    assert_eq!(r.filter, FilterMode::AddressDependent as u8);
    // Address-dependent filtering: the peer's address may now send.
    let session = SessionKey::new(
        addr_be(EXT.octets()),
        addr_be([198, 51, 100, 2]),
        16000u16.to_be(),
        0,
        IPPROTO_UDP,
    );
    assert!(nat.sessions.contains_key(&session));
}

#[test]
fn a_new_address_moves_explicit_mappings_keeping_their_ports() {
    let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
    let mut req = install(5000, Some(15000), now);
    req.filters = vec![filter("198.51.100.0/24", 0)];
    x.table(&mut nat, now, S).install(&req).unwrap();
    let new = Ipv4Addr::new(192, 0, 2, 9);
    let moved = x.set_pool(&mut nat, vec![new], 2 * S);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].to, Some(SocketAddrV4::new(new, 15000)));
    let (m, r) = entries_of(&nat, 5000).unwrap();
    assert_eq!(ipv4(m.ext_addr_be), new);
    assert_eq!(r.created_ns, m.created_ns);
    assert_eq!(nat.rev.len(), 1, "the old claim is gone");
    assert!(x
        .filters
        .pcp_filters
        .keys()
        .all(|(k, _)| ipv4(k.ext_addr_be) == new));
    let t = x.table(&mut nat, now, 2 * S);
    assert_eq!(t.explicit(&key(5000)).unwrap().external.ip(), &new);
    assert_eq!(t.external_address(), Some(new));
    // No address at all: requests fail, mappings stay where they are.
    x.set_pool(&mut nat, Vec::new(), 3 * S);
    let mut t = x.table(&mut nat, now, 3 * S);
    assert_eq!(t.external_address(), None);
    assert_eq!(
        t.install(&install(5001, None, now)),
        Err(TableError::NetworkFailure)
    );
}

#[test]
fn a_restarted_natgw_takes_back_what_the_maps_still_hold() {
    // issue #17: PCP clients keep their mappings across a restart that adopted the maps
    let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
    let mut t = x.table(&mut nat, now, 10 * S);
    let ext = t.install(&install(5000, Some(15000), now)).unwrap();
    t.install(&install(5001, Some(15001), now)).unwrap();
    let entries = x.entries();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].nonce, Some(NONCE));
    // The mapping of 5001 was replaced while no natgw ran (another created_ns).
    let fk = fwd_key(IPPROTO_UDP, SocketAddrV4::new(HOST, 5001));
    let mut m = nat.fwd(&fk).unwrap().unwrap();
    m.created_ns = 99 * S;
    nat.replace_fwd(&fk, &m).unwrap();

    let mut restarted = explicit();
    let later = now + Duration::from_secs(100);
    assert_eq!(restarted.restore(&nat, &entries, later, 110 * S), 1);
    let back = restarted.table(&mut nat, later, 110 * S);
    let held = back.explicit(&key(5000)).expect("5000 came back");
    assert_eq!((held.nonce, held.external), (NONCE, ext));
    let left = held.expires.saturating_duration_since(later).as_secs();
    assert!(
        (499..=500).contains(&left),
        "the rest of its lifetime: {left} s"
    );
    assert!(
        back.explicit(&key(5001)).is_none(),
        "not a mapping the maps hold"
    );
}

#[test]
fn explicit_mappings_count_against_the_hosts_port_limit() {
    // rfc6888 REQ-4: a MAP that would take the host past its limit gets
    // USER_EX_QUOTA; the host's traffic mappings count, and so do its MAPs.
    let now = Instant::now();
    let mut nat = MemoryMaps {
        ports_per_host: 2,
        ..MemoryMaps::default()
    };
    let host_be = addr_be(HOST.octets());
    // One traffic mapping, counted by the data path.
    traffic(&mut nat, 6000, 16000, S, S);
    nat.created.insert((host_be, IPPROTO_UDP), 1);
    let mut x = explicit();
    let mut t = x.table(&mut nat, now, 10 * S);
    t.install(&install(5000, None, now)).unwrap();
    assert_eq!(
        t.install(&install(5001, None, now)),
        Err(TableError::QuotaExceeded),
        "the MAP above counts too"
    );
    // Taking over an existing mapping needs no new port.
    assert!(t.install(&install(6000, None, now)).is_ok());
    assert_eq!(nat.in_use(host_be, IPPROTO_UDP), 2);
    // Once both MAPs are gone (unused, so their entries go), their ports count no
    // more.
    let later = now + Duration::from_secs(601);
    assert_eq!(x.expire(&mut nat, later, 602 * S).len(), 2);
    assert_eq!(nat.in_use(host_be, IPPROTO_UDP), 0);
    let mut t = x.table(&mut nat, later, 603 * S);
    assert!(t.install(&install(5001, None, later)).is_ok());
}

#[test]
fn a_port_held_for_another_host_is_not_given_but_the_own_one_is() {
    // rfc6888 REQ-8
    let now = Instant::now();
    let mut nat = MemoryMaps::default();
    let other = addr_be([10, 0, 1, 3]);
    let rk = rev_key(IPPROTO_UDP, SocketAddrV4::new(EXT, 15000));
    nat.rev.insert(rk, RevValue::held(other, S));
    let own = rev_key(IPPROTO_UDP, SocketAddrV4::new(EXT, 5001));
    nat.rev
        .insert(own, RevValue::held(addr_be(HOST.octets()), S));
    let mut x = explicit();
    let mut t = x.table(&mut nat, now, 10 * S);
    let mut strict = install(5000, Some(15000), now);
    strict.prefer_failure = true;
    assert_eq!(
        t.install(&strict),
        Err(TableError::CannotProvideExternal),
        "another host's hold"
    );
    let ext = t.install(&install(5000, Some(15000), now)).unwrap();
    assert_ne!(ext.port(), 15000);
    // The host's own internal port, held after its own mapping ended: it gets it.
    let ext = t.install(&install(5001, None, now)).unwrap();
    assert_eq!(ext.port(), 5001);
    assert!(!nat.rev[&own].is_held());
    // Deleting an explicit mapping holds its port when holds are on.
    nat.holding = true;
    let later = now + Duration::from_secs(601);
    x.expire(&mut nat, later, 602 * S);
    assert_eq!(
        nat.rev[&own],
        RevValue::held(addr_be(HOST.octets()), 602 * S)
    );
}

#[test]
fn a_upnp_mapping_carries_its_origin_and_description_across_a_restart() {
    // issue #13: one table for every protocol; `natgw mappings` shows origin upnp and
    // the description, and a restart keeps both
    let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
    let mut t = x.table(&mut nat, now, 10 * S);
    let mut upnp = install(6000, Some(16000), now);
    upnp.origin = Origin::Upnp;
    upnp.prefer_failure = true;
    upnp.description = "game server".into();
    assert_eq!(t.install(&upnp), Ok(SocketAddrV4::new(EXT, 16000)));
    let seen = t.explicit(&key(6000)).expect("the engine sees it");
    assert_eq!(
        (seen.origin, seen.description.as_str()),
        (Origin::Upnp, "game server")
    );
    assert_eq!(
        t.explicit_count(None),
        1,
        "it counts against the shared quotas"
    );
    // Another protocol asking for the port gets another one, or nothing.
    let mut pcp = install(6001, Some(16000), now);
    pcp.prefer_failure = true;
    assert_eq!(t.install(&pcp), Err(TableError::CannotProvideExternal));
    let (m, _) = entries_of(&nat, 6000).unwrap();
    assert_eq!(m.origin, natgw_common::Origin::Upnp as u8);

    let entries = x.entries();
    assert_eq!(entries[0].origin, "upnp");
    assert_eq!(entries[0].description, "game server");
    let mut restarted = explicit();
    assert_eq!(restarted.restore(&nat, &entries, now, 20 * S), 1);
    let back = restarted.table(&mut nat, now, 20 * S);
    let held = back.explicit(&key(6000)).expect("6000 came back");
    assert_eq!(
        (held.origin, held.description.as_str()),
        (Origin::Upnp, "game server")
    );
}

#[test]
fn the_generation_changes_with_every_change_of_the_records() {
    // What lets the UPnP engine keep its port mapping array between requests.
    let (mut x, mut nat, now) = (explicit(), MemoryMaps::default(), Instant::now());
    let generation = |x: &mut ExplicitMappings<MemoryMaps>, nat: &mut MemoryMaps| {
        x.table(nat, now, S)
            .generation()
            .expect("the real table has one")
    };
    let g0 = generation(&mut x, &mut nat);
    x.table(&mut nat, now, S)
        .install(&install(5000, Some(15000), now))
        .unwrap();
    let g1 = generation(&mut x, &mut nat);
    assert_ne!(g0, g1, "a new mapping");
    assert_eq!(g1, generation(&mut x, &mut nat), "reading changes nothing");
    x.table(&mut nat, now, 2 * S)
        .install(&install(5000, Some(15000), now))
        .unwrap();
    let g2 = generation(&mut x, &mut nat);
    assert_ne!(g1, g2, "a renewal");
    x.set_pool(&mut nat, vec![Ipv4Addr::new(192, 0, 2, 9)], 3 * S);
    let g3 = generation(&mut x, &mut nat);
    assert_ne!(g2, g3, "a move to a new address");
    x.table(&mut nat, now, 4 * S).remove(&key(5000));
    let g4 = generation(&mut x, &mut nat);
    assert_ne!(g3, g4, "a deletion");
    x.table(&mut nat, now, S)
        .install(&install(5001, None, now))
        .unwrap();
    let g5 = generation(&mut x, &mut nat);
    let later = now + Duration::from_secs(601);
    assert_eq!(x.expire(&mut nat, later, 602 * S).len(), 1);
    assert_ne!(g5, generation(&mut x, &mut nat), "an expiry");
}

/// Block mode over 10.0.1.0/24 with a pool of two addresses: blocks of 1000 ports
/// (64 per address), one share per address, only share 0 owned here.
fn explicit_in_blocks() -> ExplicitMappings<MemoryMaps> {
    let lan = crate::datapath::addresses::LanIface {
        ifindex: 3,
        prefixes: vec![Ipv4Prefix::new(Ipv4Addr::new(10, 0, 1, 1), 24).unwrap()],
    };
    let hosts = AddressPlan::new(vec![lan.clone()], &lan.prefixes);
    let blocks = natgw_common::blocks::BlockPlan {
        space_first: u32::from(Ipv4Addr::new(10, 0, 1, 0)),
        space_len: 256,
        block_size: 1000,
        blocks_per_addr: 64,
        owned: 0b01,
        addrs_per_share: 1,
        _pad: 0,
    };
    let pool = vec![EXT, Ipv4Addr::new(192, 0, 2, 2)];
    ExplicitMappings::new(
        pool,
        hosts,
        Defaults {
            blocks,
            ..defaults()
        },
        MemoryMaps::default(),
    )
    .with_socket_probe(|_, _, _| false)
}

#[test]
fn in_block_mode_explicit_mappings_come_from_the_hosts_block() {
    // rfc7422: HOST 10.0.1.2 is host 2: block 3024-4023 of the pool's first address.
    let (mut x, mut nat, now) = (explicit_in_blocks(), MemoryMaps::default(), Instant::now());
    let mut t = x.table(&mut nat, now, 10 * S);
    let ext = t.install(&install(5000, Some(15000), now)).unwrap();
    assert_eq!(*ext.ip(), EXT);
    assert!((3024..=4023).contains(&ext.port()), "{ext}");
    let ext = t.install(&install(3500, None, now)).unwrap();
    assert_eq!(
        ext,
        SocketAddrV4::new(EXT, 3500),
        "the internal port, in the block"
    );
    let ext = t.install(&install(3501, Some(3600), now)).unwrap();
    assert_eq!(
        ext,
        SocketAddrV4::new(EXT, 3600),
        "a suggestion in the block"
    );
    // Host 10.0.1.100 is on the second address: share 1, not owned here.
    let other = Install {
        key: MappingKey {
            internal: Ipv4Addr::new(10, 0, 1, 100),
            ..key(5000)
        },
        ..install(5000, None, now)
    };
    assert_eq!(
        t.install(&other).unwrap_err(),
        TableError::NotAuthorized,
        "no block here, no mapping"
    );
}

#[test]
fn explicit_mappings_nothing_holds_after_a_restart_end() {
    // A previous natgw's maps: a forward its configuration had (the new one does
    // not), a PCP mapping whose record was lost (its host still sends), and a
    // forward the new configuration has. Only the last stays explicit.
    let mut nat = MemoryMaps::default();
    let mut old = explicit();
    old.add_static(
        &mut nat,
        Protocol::Udp,
        9000,
        SocketAddrV4::new(HOST, 9000),
        S,
    )
    .unwrap();
    old.add_static(
        &mut nat,
        Protocol::Udp,
        9001,
        SocketAddrV4::new(HOST, 9001),
        S,
    )
    .unwrap();
    let now = Instant::now();
    let pcp = old
        .table(&mut nat, now, S)
        .install(&install(5000, Some(15000), now))
        .unwrap();
    let pcp_fk = fwd_key(IPPROTO_UDP, SocketAddrV4::new(HOST, 5000));
    nat.fwd.get_mut(&pcp_fk).unwrap().last_out_ns = 10 * S;

    let mut new = explicit();
    new.add_static(
        &mut nat,
        Protocol::Udp,
        9001,
        SocketAddrV4::new(HOST, 9001),
        10 * S,
    )
    .unwrap();
    let ended = new.end_unrecorded(&mut nat, 11 * S).unwrap();
    let mut outcomes: Vec<(u16, &str, &str)> = ended
        .iter()
        .map(|e| (e.key.internal_port, e.holder.name(), e.outcome.name()))
        .collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(outcomes[0].0, 5000);
    assert_eq!(outcomes[0].1, "pcp");
    assert_eq!(outcomes[1].0, 9000);
    assert_eq!(outcomes[1].1, "static");
    assert!(
        entries_of(&nat, 9000).is_none(),
        "the removed forward is gone"
    );
    let (m, _) = entries_of(&nat, 5000).expect("the PCP mapping in use stays");
    assert_eq!(m.origin, natgw_common::Origin::Traffic as u8, "as implicit");
    assert_eq!(external_of(&m), pcp);
    let (m, _) = entries_of(&nat, 9001).expect("the configured forward stays");
    assert_eq!(m.origin, natgw_common::Origin::Static as u8);
    assert_eq!(new.statics().len(), 1);
    assert!(
        new.end_unrecorded(&mut nat, 12 * S).unwrap().is_empty(),
        "nothing more"
    );
}
