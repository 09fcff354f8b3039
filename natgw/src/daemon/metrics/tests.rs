//! The exposition's content, the address rules, and the Grafana dashboard against
//! the names natgw writes.

use super::*;
use crate::datapath::netlink::Link;
use crate::nat_table::census::PortUse;
use natgw_proto::prefix::Ipv4Prefix;

fn sample() -> Published {
    let mut p = Published {
        started_unix: 1_700_000_000,
        pool: vec![Ipv4Addr::new(192, 0, 2, 1)],
        ports_per_address: 64512,
        max_mappings: 65536,
        ha: Some(crate::daemon::keepalived::HaStatus {
            role: "active".to_owned(),
            keepalived: Some(crate::daemon::keepalived::VrrpState::Master),
            since_unix: 1_700_000_100,
            transitions: 2,
            vip_present: true,
        }),
        ..Published::default()
    };
    p.controller = [
        ("pcp_requests", 10),
        ("pcp_succeeded", 7),
        ("pcp_refused", 2),
        ("natpmp_requests", 4),
        ("natpmp_succeeded", 3),
        ("natpmp_refused", 1),
        ("pcp_dropped_rate_limited", 1),
        ("pcp_unresolved", 0),
        ("pcp_send_failed", 0),
        ("upnp_requests", 5),
        ("upnp_refused", 1),
        ("upnp_rejected", 2),
        ("upnp_busy", 0),
        ("upnp_read_timeouts", 0),
        ("upnp_connections_refused", 0),
        ("upnp_connections", 5),
        ("upnp_ssdp_searches", 3),
        ("upnp_ssdp_foreign", 0),
        ("upnp_events_delivered", 1),
        ("upnp_events_failed", 0),
        ("icmp_sent_port_unreachable", 6),
        ("icmp_rate_limited", 9),
        ("fragments_resent", 2),
        ("held_syns_expired", 4),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    p.stun = [
        ("received", 8),
        ("success", 6),
        ("success_rfc3489", 1),
        ("error_400_bad_request", 1),
        ("error_420_unknown_attribute", 0),
        ("dropped_not-a-request", 1),
        ("send_failed", 0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let ext = Ipv4Addr::new(192, 0, 2, 1);
    p.census
        .mappings
        .insert((IPPROTO_UDP, Origin::Traffic as u8), 2);
    p.census
        .mappings
        .insert((IPPROTO_TCP, Origin::Upnp as u8), 1);
    p.census
        .ports
        .insert((ext, IPPROTO_UDP), PortUse { used: 2, held: 1 });
    p.census.sessions = 3;
    let stats = TickStats {
        expired: 5,
        sessions_expired: 2,
        ..TickStats::default()
    };
    let census = p.census.clone();
    p.gc_pass(Duration::from_micros(300), Some(&stats), &census);
    p.gc_pass(Duration::from_millis(20), None, &census);
    p
}

fn datapath() -> Vec<(Counter, u64)> {
    Counter::ALL
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, i as u64))
        .collect()
}

fn memory() -> Option<Memory> {
    Some(Memory {
        resident: 4096 * 100,
        virtual_size: 4096 * 1000,
    })
}

#[test]
fn every_part_is_written_with_its_labels() {
    let doc = render(&sample(), Some(&datapath()), memory()).finish();
    let has = |line: &str| assert!(doc.lines().any(|l| l == line), "no `{line}` in\n{doc}");
    has(&format!(
        "natgw_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    ));
    has("process_resident_memory_bytes 409600");
    has("process_start_time_seconds 1700000000");
    has("natgw_datapath_up 1");
    // The data path's counters, split by prefix.
    let index = |c: Counter| Counter::ALL.iter().position(|x| *x == c).unwrap();
    has(&format!(
        "natgw_datapath_dropped_packets_total{{reason=\"spoofed\"}} {}",
        index(Counter::DropSpoofed)
    ));
    has(&format!(
        "natgw_datapath_passed_packets_total{{reason=\"no_neigh\"}} {}",
        index(Counter::PassNoNeigh)
    ));
    has(&format!(
        "natgw_datapath_packets_total{{counter=\"xdp_out_redirected\"}} {}",
        index(Counter::XdpOutRedirected)
    ));
    assert!(
        !doc.contains("counter=\"drop_"),
        "drops only in their family"
    );
    // Mappings: every protocol and origin, zero or not.
    has("natgw_mappings{proto=\"udp\",origin=\"traffic\"} 2");
    has("natgw_mappings{proto=\"tcp\",origin=\"upnp\"} 1");
    has("natgw_mappings{proto=\"icmp\",origin=\"nat-pmp\"} 0");
    has("natgw_mappings_capacity 65536");
    has("natgw_sessions 3");
    has("natgw_ha_role{role=\"active\"} 1");
    has("natgw_ha_role{role=\"standby\"} 0");
    has("natgw_ha_role_changes_total 2");
    has("natgw_pool_ports_used{address=\"192.0.2.1\",proto=\"udp\"} 2");
    has("natgw_pool_ports_held{address=\"192.0.2.1\",proto=\"udp\"} 1");
    has("natgw_pool_ports_used{address=\"192.0.2.1\",proto=\"tcp\"} 0");
    has("natgw_pool_ports_capacity{address=\"192.0.2.1\",proto=\"icmp\"} 64512");
    // GC: two passes, one failed.
    has("natgw_gc_duration_seconds_count 2");
    has("natgw_gc_duration_seconds_bucket{le=\"0.0005\"} 1");
    has("natgw_gc_duration_seconds_bucket{le=\"+Inf\"} 2");
    has("natgw_gc_deleted_total{what=\"mappings\"} 5");
    has("natgw_gc_deleted_total{what=\"sessions\"} 2");
    has("natgw_gc_failures_total 1");
    // PCP and NAT-PMP apart.
    has("natgw_pcp_requests_total{protocol=\"pcp\"} 6");
    has("natgw_pcp_requests_total{protocol=\"nat-pmp\"} 4");
    has("natgw_pcp_responses_total{protocol=\"pcp\",result=\"success\"} 4");
    has("natgw_pcp_responses_total{protocol=\"nat-pmp\",result=\"refused\"} 1");
    has("natgw_pcp_dropped_total{reason=\"rate_limited\"} 1");
    has("natgw_upnp_requests_total 5");
    has("natgw_upnp_errors_total{kind=\"refused\"} 1");
    has("natgw_upnp_errors_total{kind=\"rejected\"} 2");
    has("natgw_upnp_ssdp_total{result=\"answered\"} 3");
    has("natgw_icmp_errors_sent_total{type=\"port_unreachable\"} 6");
    has("natgw_fragments_total{fate=\"resent\"} 2");
    // What no family claims keeps its status name.
    has("natgw_controller_events_total{counter=\"icmp_rate_limited\"} 9");
    has("natgw_controller_events_total{counter=\"held_syns_expired\"} 4");
    assert!(!doc.contains("counter=\"pcp_"), "{doc}");
    assert!(!doc.contains("counter=\"upnp_"), "{doc}");
    has("natgw_stun_requests_total 8");
    has("natgw_stun_responses_total{result=\"bad_request\"} 1");
    has("natgw_stun_dropped_total{reason=\"not-a-request\"} 1");
    // Each family once, HELP before TYPE before samples.
    for name in render(&sample(), None, None).names() {
        assert_eq!(doc.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
    }
}

#[test]
fn unreadable_counters_say_so_and_leave_the_rest() {
    let doc = render(&sample(), None, None).finish();
    assert!(doc.contains("\nnatgw_datapath_up 0\n"), "{doc}");
    assert!(!doc.contains("process_resident_memory_bytes"), "{doc}");
    assert!(doc.contains("natgw_mappings{"), "{doc}");
}

#[test]
fn statm_is_read_in_pages() {
    assert_eq!(
        Memory::parse("1000 100 50 10 0 200 0\n", 4096),
        Some(Memory {
            resident: 409_600,
            virtual_size: 4_096_000
        })
    );
    assert_eq!(Memory::parse("", 4096), None);
    assert_eq!(Memory::parse("x y", 4096), None);
    assert!(Memory::read().is_some_and(|m| m.resident > 0));
}

fn topology() -> Topology {
    let link = |name: &str, ifindex: u32, addr: &str| Link {
        name: name.to_owned(),
        ifindex,
        mtu: 1500,
        kind: Some("veth".to_owned()),
        ipv4: vec![addr.parse::<Ipv4Prefix>().unwrap()],
        xdp_generic: false,
    };
    let wan = link("wan0", 2, "192.0.2.1/24");
    Topology {
        external: wan.ipv4[0],
        pool: vec![Ipv4Addr::new(192, 0, 2, 1)],
        lans: vec![
            link("lan0", 3, "10.0.1.1/24"),
            link("lan1", 4, "10.0.2.1/24"),
        ],
        attached: Vec::new(),
        virtual_pool: false,
        wan,
    }
}

#[test]
fn the_endpoint_listens_on_lan_or_loopback_unless_allowed_elsewhere() {
    let t = topology();
    let at = |listen: &str, allow_wan: bool| {
        check_listen(
            &MetricsSettings {
                listen: Some(listen.parse().unwrap()),
                allow_wan,
            },
            &t,
        )
    };
    assert_eq!(at("10.0.2.1:9100", false).unwrap().as_deref(), Some("lan1"));
    assert_eq!(at("127.0.0.1:9100", false).unwrap(), None);
    assert_eq!(check_listen(&MetricsSettings::default(), &t).unwrap(), None);
    let err = at("192.0.2.1:9100", false).unwrap_err().to_string();
    assert!(err.contains("WAN interface wan0"), "{err}");
    assert!(
        err.contains("10.0.1.1 (lan0)") && err.contains("--metrics-allow-wan"),
        "{err}"
    );
    let err = at("10.9.9.9:9100", false).unwrap_err().to_string();
    assert!(err.contains("neither a LAN"), "{err}");
    let err = at("0.0.0.0:9100", false).unwrap_err().to_string();
    assert!(err.contains("every interface"), "{err}");
    for allowed in ["192.0.2.1:9100", "0.0.0.0:9100", "10.9.9.9:9100"] {
        assert_eq!(at(allowed, true).unwrap(), None, "{allowed}");
    }
    // A LAN address stays bound to its interface even when allowed elsewhere.
    assert_eq!(at("10.0.1.1:9100", true).unwrap().as_deref(), Some("lan0"));
}

/// Every `expr` of the dashboard, wherever it is nested.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == "expr" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_owned());
                    }
                } else {
                    exprs(v, out);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_uses_only_metrics_natgw_writes() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../../docs/grafana-natgw.json"))
            .expect("docs/grafana-natgw.json is valid JSON");
    let doc = render(&sample(), Some(&datapath()), memory());
    let families = doc.names().to_vec();
    let text = doc.finish();
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 10, "{} queries", all.len());
    let mut used = std::collections::BTreeSet::new();
    for expr in &all {
        let mut names = 0;
        for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if !(token.starts_with("natgw_") || token.starts_with("process_")) {
                continue;
            }
            names += 1;
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| token.strip_suffix(s))
                .filter(|base| families.contains(base))
                .unwrap_or(token);
            assert!(
                families.contains(&family),
                "the dashboard's `{expr}` names {token}, which natgw does not write"
            );
            used.insert(family.to_owned());
        }
        assert!(names > 0, "`{expr}` names no natgw metric");
    }
    // Label values the dashboard filters on exist too.
    for needle in [
        "origin=\"traffic\"",
        "counter=\"xdp_out_redirected\"",
        "protocol=\"nat-pmp\"",
    ] {
        assert!(text.contains(needle), "{needle}");
    }
    for wanted in [
        "natgw_datapath_packets_total",
        "natgw_datapath_dropped_packets_total",
        "natgw_mappings",
        "natgw_pool_ports_used",
        "natgw_pcp_requests_total",
        "natgw_upnp_requests_total",
        "natgw_stun_requests_total",
        "natgw_gc_duration_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard has no panel for {wanted}"
        );
    }
}

#[test]
fn replication_has_families_of_its_own_only_when_configured() {
    let mut plain = sample();
    plain.ha = None;
    let plain = render(&plain, Some(&datapath()), memory()).finish();
    assert!(!plain.contains("natgw_ha_"), "no replication, no family");
    // keepalived's role (`ha`, from sample()) and replication's counters both name
    // the role: one family, from the counters.
    let mut p = sample();
    p.controller.extend(
        [
            ("ha_active", 0),
            ("ha_connected", 1),
            ("ha_records_received", 9),
            ("ha_records_installed", 7),
            ("ha_records_rejected", 2),
            ("ha_rejected_clash", 2),
            ("ha_connects", 3),
            ("ha_resyncs", 3),
            ("ha_lag_ms", 1500),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let doc = render(&p, Some(&datapath()), memory()).finish();
    let has = |line: &str| assert!(doc.lines().any(|l| l == line), "no `{line}` in\n{doc}");
    has("natgw_ha_role{role=\"standby\"} 1");
    has("natgw_ha_role{role=\"active\"} 0");
    has("natgw_ha_connected 1");
    has("natgw_ha_records_total{event=\"installed\"} 7");
    has("natgw_ha_rejected_total{reason=\"clash\"} 2");
    has("natgw_ha_resyncs_total{kind=\"resync\"} 3");
    has("natgw_ha_lag_seconds 1.5");
    has("natgw_ha_role_changes_total 2");
    assert_eq!(
        doc.matches("# TYPE natgw_ha_role gauge").count(),
        1,
        "one natgw_ha_role family in\n{doc}"
    );
    assert!(
        !doc.contains("counter=\"ha_"),
        "none left for natgw_controller_events_total"
    );
}
