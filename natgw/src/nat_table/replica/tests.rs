use super::*;
use crate::datapath::addresses::LanIface;
use crate::nat_table::testing::MemoryMaps;
use natgw_proto::prefix::Ipv4Prefix;

const EXT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const NOW: u64 = 1_000 * 1_000_000_000;

fn plan() -> AddressPlan {
    let lan = LanIface {
        ifindex: 3,
        prefixes: vec![Ipv4Prefix::new(Ipv4Addr::new(10, 0, 1, 1), 24).unwrap()],
    };
    AddressPlan::new(vec![lan.clone()], &lan.prefixes)
}

fn bounds<'a>(plan: &'a AddressPlan, pool: &'a [Ipv4Addr]) -> Bounds<'a> {
    Bounds {
        plan,
        pool,
        ports: PortRange::new(1024, 65535).unwrap(),
    }
}

/// Puts a traffic mapping into `nat` as the data path would.
fn add(nat: &mut MemoryMaps, proto: u8, int: &str, ext_port: u16, created: u64, last_out: u64) {
    let int: SocketAddrV4 = int.parse().unwrap();
    let fk = fwd_key(proto, int);
    let m = Mapping {
        ext_addr_be: addr_be(EXT.octets()),
        ext_port_be: ext_port.to_be(),
        origin: Origin::Traffic as u8,
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
            created_ns: created,
            ..RevValue::default()
        },
    );
}

fn install(standby: &mut MemoryMaps, installer: &mut Installer, records: &[Record], now_ns: u64) {
    let (plan, pool) = (plan(), [EXT]);
    for r in records {
        installer
            .apply(
                standby,
                None::<&mut ExplicitMappings<MemoryMaps>>,
                &bounds(&plan, &pool),
                r,
                Instant::now(),
                now_ns,
            )
            .unwrap();
    }
}

fn externals(nat: &MemoryMaps) -> Vec<(u8, SocketAddrV4, SocketAddrV4)> {
    let mut v: Vec<_> = nat
        .fwd
        .iter()
        .map(|(k, m)| {
            (
                k.proto,
                endpoint(k.addr_be, k.port_be),
                endpoint(m.ext_addr_be, m.ext_port_be),
            )
        })
        .collect();
    v.sort_by_key(|e| (e.0, e.1));
    v
}

#[test]
fn a_full_resync_gives_the_standby_the_same_external_endpoints_and_ages() {
    let mut active = MemoryMaps::default();
    add(
        &mut active,
        IPPROTO_UDP,
        "10.0.1.2:5000",
        40000,
        NOW - 10_000_000_000,
        NOW - 1_000_000_000,
    );
    add(
        &mut active,
        IPPROTO_TCP,
        "10.0.1.2:6000",
        40001,
        NOW - 5_000_000_000,
        NOW - 2_000_000_000,
    );
    add(
        &mut active,
        IPPROTO_ICMP,
        "10.0.1.3:77",
        1030,
        NOW - 1_000_000_000,
        NOW - 1_000_000_000,
    );
    let sk = session_key(
        IPPROTO_TCP,
        "192.0.2.1:40001".parse().unwrap(),
        "198.51.100.2:80".parse().unwrap(),
    );
    active.sessions.insert(
        sk,
        Session::new(
            NOW - 5_000_000_000,
            NOW - 2_000_000_000,
            NOW - 3_000_000_000,
            TcpState::Established as u8,
        ),
    );
    let mut source = Source::default();
    let records = source.full(&active, &[], NOW).unwrap();
    assert_eq!(records.len(), 4);

    // The standby's clock is elsewhere: 7 s later in its own monotonic time.
    let standby_now = NOW / 3;
    let mut standby = MemoryMaps::default();
    let mut installer = Installer::default();
    installer.begin_resync();
    install(&mut standby, &mut installer, &records, standby_now);
    assert_eq!(
        installer
            .end_resync(
                &mut standby,
                None::<&mut ExplicitMappings<MemoryMaps>>,
                standby_now
            )
            .unwrap(),
        0
    );
    assert_eq!(installer.rejected_total(), 0, "{:?}", installer.rejected);
    assert_eq!(installer.installed, 4);
    assert_eq!(externals(&standby), externals(&active));
    let m = standby.fwd[&fwd_key(IPPROTO_UDP, "10.0.1.2:5000".parse().unwrap())];
    assert_eq!(
        standby_now - m.last_out_ns,
        1_000_000_000,
        "the age, not the timestamp"
    );
    assert_eq!(standby_now - m.created_ns, 10_000_000_000);
    let rev = standby.rev[&rev_key_of(&fwd_key(IPPROTO_UDP, "10.0.1.2:5000".parse().unwrap()), &m)];
    assert_eq!(
        rev.created_ns, m.created_ns,
        "the reverse entry belongs to it"
    );
    let s = standby.sessions[&sk];
    assert_eq!(s.tcp_state, TcpState::Established as u8);
    assert_eq!(standby_now - s.last_in_ns, 3_000_000_000);
    // The per-host books count the installed mappings.
    assert_eq!(standby.in_use(addr_be([10, 0, 1, 2]), IPPROTO_UDP), 1);
}

#[test]
fn deletions_and_refreshes_follow_and_unchanged_mappings_are_not_resent() {
    let mut active = MemoryMaps::default();
    add(
        &mut active,
        IPPROTO_UDP,
        "10.0.1.2:5000",
        40000,
        NOW - 1,
        NOW - 1,
    );
    add(
        &mut active,
        IPPROTO_UDP,
        "10.0.1.2:5001",
        40001,
        NOW - 1,
        NOW - 1,
    );
    let mut source = Source::default();
    let mut standby = MemoryMaps::default();
    let mut installer = Installer::default();
    let all = source.full(&active, &[], NOW).unwrap();
    install(&mut standby, &mut installer, &all, NOW);
    assert!(source.changes(&active, &[], NOW).unwrap().is_empty());

    // A packet a little later: below the refresh step, nothing; past it, a refresh.
    let fk = fwd_key(IPPROTO_UDP, "10.0.1.2:5000".parse().unwrap());
    active.fwd.get_mut(&fk).unwrap().last_out_ns = NOW + 1_000_000_000;
    assert!(source
        .changes(&active, &[], NOW + 1_000_000_000)
        .unwrap()
        .is_empty());
    let later = NOW + REFRESH_STEP_NS + 1;
    active.fwd.get_mut(&fk).unwrap().last_out_ns = later;
    let refresh = source.changes(&active, &[], later).unwrap();
    assert_eq!(refresh.len(), 1);
    install(&mut standby, &mut installer, &refresh, later);
    assert_eq!(standby.fwd[&fk].last_out_ns, later);

    // The GC ends one: a deletion.
    let gone = fwd_key(IPPROTO_UDP, "10.0.1.2:5001".parse().unwrap());
    active.fwd.remove(&gone);
    let deletion = source.changes(&active, &[], later).unwrap();
    assert!(matches!(deletion.as_slice(), [Record::MappingGone { .. }]));
    install(&mut standby, &mut installer, &deletion, later);
    assert!(!standby.fwd.contains_key(&gone));
    assert_eq!(externals(&standby), externals(&active));
}

#[test]
fn records_outside_the_configuration_are_counted_and_never_installed() {
    let good = MappingRecord {
        proto: IPPROTO_UDP,
        origin: Origin::Traffic as u8,
        filter: 0,
        tcp_flags_out: 0,
        tcp_flags_in: 0,
        internal: "10.0.1.2:5000".parse().unwrap(),
        external: "192.0.2.1:40000".parse().unwrap(),
        age_ms: 1,
        idle_out_ms: 1,
        idle_in_ms: NEVER,
    };
    let bad = [
        ("protocol", MappingRecord { proto: 47, ..good }),
        ("origin", MappingRecord { origin: 99, ..good }),
        ("filter", MappingRecord { filter: 77, ..good }),
        (
            "internal_address",
            MappingRecord {
                internal: "8.8.8.8:5000".parse().unwrap(),
                ..good
            },
        ),
        (
            "internal_address",
            MappingRecord {
                internal: "10.0.1.1:5000".parse().unwrap(),
                ..good
            },
        ),
        (
            "external_address",
            MappingRecord {
                external: "203.0.113.9:40000".parse().unwrap(),
                ..good
            },
        ),
        (
            "external_port",
            MappingRecord {
                external: "192.0.2.1:80".parse().unwrap(),
                ..good
            },
        ),
        (
            "external_port",
            MappingRecord {
                external: "192.0.2.1:0".parse().unwrap(),
                ..good
            },
        ),
    ];
    let mut standby = MemoryMaps::default();
    let mut installer = Installer::default();
    for (reason, r) in bad {
        let before = installer.rejected.get(reason).copied().unwrap_or(0);
        install(&mut standby, &mut installer, &[Record::Mapping(r)], NOW);
        assert_eq!(
            installer.rejected.get(reason).copied(),
            Some(before + 1),
            "{reason}"
        );
    }
    assert_eq!(installer.rejected_total(), 8, "{:?}", installer.rejected);
    assert!(standby.fwd.is_empty() && standby.rev.is_empty());

    // A static forward's mapping record installs nothing: its explicit record does.
    let static_mapping = MappingRecord {
        origin: Origin::Static as u8,
        ..good
    };
    install(
        &mut standby,
        &mut installer,
        &[Record::Mapping(static_mapping)],
        NOW,
    );
    assert_eq!(installer.rejected_total(), 8, "{:?}", installer.rejected);
    assert!(standby.fwd.is_empty() && standby.rev.is_empty());

    // A session of no mapping.
    install(
        &mut standby,
        &mut installer,
        &[Record::Session(SessionRecord {
            proto: IPPROTO_UDP,
            tcp_state: 0,
            external: "192.0.2.1:40000".parse().unwrap(),
            remote: "198.51.100.2:53".parse().unwrap(),
            age_ms: 1,
            idle_out_ms: 1,
            idle_in_ms: 1,
        })],
        NOW,
    );
    assert_eq!(installer.rejected["session_without_mapping"], 1);
    assert!(standby.sessions.is_empty());

    // The standby's own mapping of that external port (traffic that reached it) is
    // not overwritten by a different one.
    add(&mut standby, IPPROTO_UDP, "10.0.1.9:1234", 40000, NOW, NOW);
    install(&mut standby, &mut installer, &[Record::Mapping(good)], NOW);
    assert_eq!(installer.rejected["clash"], 1);
    assert_eq!(standby.fwd.len(), 1);
    let m = standby.fwd[&fwd_key(IPPROTO_UDP, "10.0.1.9:1234".parse().unwrap())];
    assert_eq!(port(m.ext_port_be), 40000, "left as it was");
}

#[test]
fn the_actives_later_view_replaces_what_it_sent_before() {
    let mut standby = MemoryMaps::default();
    let mut installer = Installer::default();
    let r = |ext: &str| {
        Record::Mapping(MappingRecord {
            proto: IPPROTO_UDP,
            origin: Origin::Traffic as u8,
            filter: 0,
            tcp_flags_out: 0,
            tcp_flags_in: 0,
            internal: "10.0.1.2:5000".parse().unwrap(),
            external: ext.parse().unwrap(),
            age_ms: 1,
            idle_out_ms: 1,
            idle_in_ms: NEVER,
        })
    };
    install(&mut standby, &mut installer, &[r("192.0.2.1:40000")], NOW);
    install(&mut standby, &mut installer, &[r("192.0.2.1:40005")], NOW);
    assert_eq!(installer.rejected_total(), 0);
    assert_eq!(
        externals(&standby),
        [(
            IPPROTO_UDP,
            "10.0.1.2:5000".parse().unwrap(),
            "192.0.2.1:40005".parse().unwrap()
        )]
    );
    assert_eq!(standby.rev.len(), 1, "the old port was freed");
}

#[test]
fn a_resync_removes_what_the_active_no_longer_has() {
    let mut standby = MemoryMaps::default();
    let mut installer = Installer::default();
    add(&mut standby, IPPROTO_UDP, "10.0.1.7:9", 41000, NOW, NOW);
    let mut active = MemoryMaps::default();
    add(&mut active, IPPROTO_UDP, "10.0.1.2:5000", 40000, NOW, NOW);
    let records = Source::default().full(&active, &[], NOW).unwrap();
    installer.begin_resync();
    install(&mut standby, &mut installer, &records, NOW);
    let removed = installer
        .end_resync(&mut standby, None::<&mut ExplicitMappings<MemoryMaps>>, NOW)
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(externals(&standby), externals(&active));
}

#[test]
fn ages_survive_the_clock_change() {
    assert_eq!(age_ms(NOW, 0), NEVER);
    assert_eq!(time_of(NOW, NEVER), 0);
    assert_eq!(time_of(5, 10), 1, "never 0 (which means never)");
    assert_eq!(age_ms(NOW, NOW - 1_500_000_000), 1500);
    assert_eq!(time_of(NOW, 1500), NOW - 1_500_000_000);
}

fn explicit_table() -> ExplicitMappings<MemoryMaps> {
    let defaults = crate::nat_table::explicit::Defaults {
        port_range: PortRange::new(1024, 65535).unwrap(),
        filter_udp: FilterMode::EndpointIndependent,
        filter_tcp: FilterMode::EndpointIndependent,
        policy: crate::nat_table::gc::Policy::new(&crate::config::Timeouts::default(), false),
        blocks: natgw_common::blocks::BlockPlan::default(),
    };
    ExplicitMappings::new(vec![EXT], plan(), defaults, MemoryMaps::default())
}

fn install_explicit(
    standby: &mut MemoryMaps,
    explicit: &mut ExplicitMappings<MemoryMaps>,
    installer: &mut Installer,
    records: &[Record],
) {
    let (plan, pool) = (plan(), [EXT]);
    for r in records {
        installer
            .apply(
                standby,
                Some(&mut *explicit),
                &bounds(&plan, &pool),
                r,
                Instant::now(),
                NOW,
            )
            .unwrap();
    }
}

fn resync(
    standby: &mut MemoryMaps,
    explicit: &mut ExplicitMappings<MemoryMaps>,
    installer: &mut Installer,
    records: &[Record],
) {
    installer.begin_resync();
    install_explicit(standby, explicit, installer, records);
    installer
        .end_resync(standby, Some(&mut *explicit), NOW)
        .unwrap();
}

#[test]
fn the_actives_static_forwards_reach_the_standby_and_go_when_it_drops_them() {
    use natgw_proto::pcp::table::Protocol;
    let host: SocketAddrV4 = "10.0.1.2:9000".parse().unwrap();
    let fk = fwd_key(IPPROTO_UDP, host);
    let (mut active, mut active_ex) = (MemoryMaps::default(), explicit_table());
    active_ex
        .add_static(&mut active, Protocol::Udp, 9000, host, NOW)
        .unwrap();
    let mut source = Source::default();
    let records = source.full(&active, &active_ex.entries(), NOW).unwrap();
    assert!(records.iter().any(|r| matches!(r,
        Record::Explicit(e) if e.origin == Origin::Static as u8 && e.lifetime_s == NEVER)));

    let (mut standby, mut standby_ex) = (MemoryMaps::default(), explicit_table());
    let mut installer = Installer::default();
    resync(&mut standby, &mut standby_ex, &mut installer, &records);
    assert_eq!(installer.rejected_total(), 0, "{:?}", installer.rejected);
    assert_eq!(externals(&standby), externals(&active));
    assert_eq!(standby.fwd[&fk].origin, Origin::Static as u8);
    assert!(standby_ex.holds_static(Protocol::Udp, host));
    assert!(
        standby_ex.statics().is_empty(),
        "the peer's, not this configuration's"
    );

    // A second resync naming it again changes nothing.
    let again = Source::default()
        .full(&active, &active_ex.entries(), NOW)
        .unwrap();
    resync(&mut standby, &mut standby_ex, &mut installer, &again);
    assert_eq!(externals(&standby), externals(&active));

    // The standby restarts: the peer's forward comes back from its explicit
    // mappings file as the peer's, and is replicated on if it becomes active.
    let entries = standby_ex.entries();
    assert!(entries
        .iter()
        .any(|e| e.origin == "peer-static" && e.internal == host));
    let mut restarted = explicit_table();
    assert_eq!(
        restarted.restore(&standby, &entries, Instant::now(), NOW),
        1
    );
    assert!(restarted.holds_static(Protocol::Udp, host));
    assert!(restarted.statics().is_empty());
    let onwards = Source::default()
        .full(&standby, &restarted.entries(), NOW)
        .unwrap();
    assert!(onwards.iter().any(|r| matches!(r,
        Record::Explicit(e) if e.origin == Origin::Static as u8 && e.internal == host)));

    // The active's configuration drops it: the standby's entries go too.
    active_ex.remove_static(&mut active, Protocol::Udp, host, NOW);
    let gone = source.changes(&active, &active_ex.entries(), NOW).unwrap();
    assert!(gone
        .iter()
        .any(|r| matches!(r, Record::ExplicitGone { internal, .. } if *internal == host)));
    install_explicit(&mut standby, &mut standby_ex, &mut installer, &gone);
    assert!(!standby_ex.holds_static(Protocol::Udp, host));
    assert!(standby.fwd.is_empty() && standby.rev.is_empty());

    // Dropped while the standby was away: the next resync removes it.
    active_ex
        .add_static(&mut active, Protocol::Udp, 9000, host, NOW)
        .unwrap();
    let records = Source::default()
        .full(&active, &active_ex.entries(), NOW)
        .unwrap();
    resync(&mut standby, &mut standby_ex, &mut installer, &records);
    assert!(standby.fwd.contains_key(&fk));
    active_ex.remove_static(&mut active, Protocol::Udp, host, NOW);
    let records = Source::default()
        .full(&active, &active_ex.entries(), NOW)
        .unwrap();
    resync(&mut standby, &mut standby_ex, &mut installer, &records);
    assert!(standby.fwd.is_empty() && standby.rev.is_empty());
    assert!(!standby_ex.holds_static(Protocol::Udp, host));
}

#[test]
fn the_standbys_own_static_forwards_win_and_take_the_peers_over() {
    use natgw_proto::pcp::table::Protocol;
    let host: SocketAddrV4 = "10.0.1.2:9000".parse().unwrap();
    let fk = fwd_key(IPPROTO_UDP, host);
    let (mut active, mut active_ex) = (MemoryMaps::default(), explicit_table());
    active_ex
        .add_static(&mut active, Protocol::Udp, 9000, host, NOW)
        .unwrap();
    let records = Source::default()
        .full(&active, &active_ex.entries(), NOW)
        .unwrap();

    // The standby's configuration forwards the same host port elsewhere: the two
    // configurations disagree, its own stays and the refusal is counted.
    let (mut standby, mut standby_ex) = (MemoryMaps::default(), explicit_table());
    standby_ex
        .add_static(&mut standby, Protocol::Udp, 9001, host, NOW)
        .unwrap();
    let mut installer = Installer::default();
    resync(&mut standby, &mut standby_ex, &mut installer, &records);
    assert_eq!(installer.rejected.get("static_conflict"), Some(&1));
    assert_eq!(port(standby.fwd[&fk].ext_port_be), 9001);
    assert_eq!(standby_ex.statics(), [(Protocol::Udp, host, 9001)]);

    // The same forward in both: nothing to do, and it stays this configuration's.
    let (mut same, mut same_ex) = (MemoryMaps::default(), explicit_table());
    same_ex
        .add_static(&mut same, Protocol::Udp, 9000, host, NOW)
        .unwrap();
    let mut installer = Installer::default();
    resync(&mut same, &mut same_ex, &mut installer, &records);
    assert_eq!(installer.rejected_total(), 0, "{:?}", installer.rejected);
    assert_eq!(same_ex.statics(), [(Protocol::Udp, host, 9000)]);
    assert_eq!(externals(&same), externals(&active));

    // The peer's forward first, then a reload of this configuration adds it: it
    // becomes this configuration's, entries untouched.
    let (mut later, mut later_ex) = (MemoryMaps::default(), explicit_table());
    let mut installer = Installer::default();
    resync(&mut later, &mut later_ex, &mut installer, &records);
    let created = later.fwd[&fk].created_ns;
    let got = later_ex
        .add_static(&mut later, Protocol::Udp, 9000, host, NOW + 1)
        .unwrap();
    assert_eq!(got.port(), 9000);
    assert_eq!(later_ex.statics(), [(Protocol::Udp, host, 9000)]);
    assert_eq!(later.fwd[&fk].created_ns, created, "the same entries");

    // A stale mapping of the host port to another external port gives way to the
    // active's forward.
    let (mut stale, mut stale_ex) = (MemoryMaps::default(), explicit_table());
    add(&mut stale, IPPROTO_UDP, "10.0.1.2:9000", 40000, NOW, NOW);
    let mut installer = Installer::default();
    resync(&mut stale, &mut stale_ex, &mut installer, &records);
    assert_eq!(installer.rejected_total(), 0, "{:?}", installer.rejected);
    assert_eq!(externals(&stale), externals(&active));
    assert_eq!(stale.rev.len(), 1, "port 40000 freed");
}
