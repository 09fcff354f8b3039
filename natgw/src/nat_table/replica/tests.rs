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
        (
            "origin",
            MappingRecord {
                origin: Origin::Static as u8,
                ..good
            },
        ),
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
    assert_eq!(installer.rejected_total(), 9, "{:?}", installer.rejected);
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
