//! What `natgw mappings` and `natgw status` print: the row types (also their JSON
//! form, which scripts read) and the text tables. Pure functions of a snapshot, so
//! formatting is tested without a running gateway.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use natgw_common::maps::tcp_seen;
use natgw_common::{FwdKey, Mapping, Origin, RevKey, RevValue};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::gc::{self, Observed, Policy};
use crate::maps::{ipv4, port, rev_key_of, rev_matches};
use crate::state::IfaceState;

/// One live mapping, as `natgw mappings` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingRow {
    /// `udp`, `tcp`, `icmp`, or `proto-N`.
    pub protocol: String,
    /// Internal endpoint (for ICMP the port is the query identifier).
    pub internal: SocketAddrV4,
    /// External endpoint.
    pub external: SocketAddrV4,
    /// Who created it: `traffic`, `pcp`, `nat-pmp`, `static`.
    pub origin: String,
    /// Time since creation.
    pub age_ms: u64,
    /// Time since the last packet either way.
    pub idle_ms: u64,
    /// Outbound packets.
    pub packets_out: u64,
    /// Outbound bytes (IP length).
    pub bytes_out: u64,
    /// Inbound packets.
    pub packets_in: u64,
    /// Inbound bytes (IP length).
    pub bytes_in: u64,
    /// TCP flags seen outbound (`S`, `A`, `F`, `R`); `None` for other protocols.
    pub tcp_flags_out: Option<String>,
    /// TCP flags seen inbound.
    pub tcp_flags_in: Option<String>,
    /// `opening`, `established` or `closing`; `None` for other protocols.
    pub tcp_state: Option<String>,
    /// Idle timeout that applies now, in seconds.
    pub timeout_s: u64,
    /// Time until the garbage collector may remove it.
    pub remaining_ms: u64,
    /// Whether its reverse entry (the port claim) is present and belongs to it.
    pub reverse_ok: bool,
}

/// `natgw mappings --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingsReport {
    /// Number of mappings.
    pub count: usize,
    /// Capacity of the table.
    pub max_mappings: u32,
    /// The mappings, sorted by protocol and internal endpoint.
    pub mappings: Vec<MappingRow>,
}

/// `natgw status --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Daemon version.
    pub natgw_version: String,
    /// Daemon pid.
    pub pid: u32,
    /// Network namespace inode.
    pub netns_inode: u64,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Where the maps are pinned.
    pub pin_dir: String,
    /// External address.
    pub external_address: Ipv4Addr,
    /// Interfaces, WAN first; `redirect_ok` is read live from the `IFACES` map.
    pub interfaces: Vec<IfaceState>,
    /// Effective configuration.
    pub config: Settings,
    /// Data-path counters summed over CPUs, by name.
    pub counters: BTreeMap<String, u64>,
    /// Live mappings.
    pub mappings: usize,
    /// Capacity of the NAT tables.
    pub max_mappings: u32,
}

/// TCP flag letters in a fixed order, `-` for none.
#[must_use]
pub fn tcp_flags(bits: u8) -> String {
    let s: String = [
        (tcp_seen::SYN, 'S'),
        (tcp_seen::ACK, 'A'),
        (tcp_seen::FIN, 'F'),
        (tcp_seen::RST, 'R'),
    ]
    .iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, c)| *c)
    .collect();
    if s.is_empty() {
        "-".to_owned()
    } else {
        s
    }
}

const NS_PER_MS: u64 = 1_000_000;

/// Rows for every forward entry, sorted by protocol and internal endpoint.
#[must_use]
pub fn mapping_rows(
    fwd: &[(FwdKey, Mapping)],
    rev: &[(RevKey, RevValue)],
    policy: &Policy,
    now_ns: u64,
) -> Vec<MappingRow> {
    let rev: HashMap<RevKey, RevValue> = rev.iter().copied().collect();
    let mut rows: Vec<_> = fwd
        .iter()
        .map(|(k, m)| {
            let r = rev.get(&rev_key_of(k, m)).filter(|r| rev_matches(k, m, r));
            let obs = Observed::new(k, m, r);
            let tcp = obs.tcp_state();
            MappingRow {
                protocol: gc::proto_name(k.proto),
                internal: SocketAddrV4::new(ipv4(k.addr_be), port(k.port_be)),
                external: SocketAddrV4::new(ipv4(m.ext_addr_be), port(m.ext_port_be)),
                origin: Origin::from_u8(m.origin)
                    .map_or_else(|| format!("unknown-{}", m.origin), |o| o.name().to_owned()),
                age_ms: now_ns.saturating_sub(m.created_ns) / NS_PER_MS,
                idle_ms: now_ns.saturating_sub(obs.last_packet_ns()) / NS_PER_MS,
                packets_out: m.packets_out,
                bytes_out: m.bytes_out,
                packets_in: r.map_or(0, |r| r.packets_in),
                bytes_in: r.map_or(0, |r| r.bytes_in),
                tcp_flags_out: tcp.map(|_| tcp_flags(obs.flags_out)),
                tcp_flags_in: tcp.map(|_| tcp_flags(obs.flags_in)),
                tcp_state: tcp.map(|s| s.name().to_owned()),
                timeout_s: gc::timeout_ns(policy, &obs) / 1_000_000_000,
                remaining_ms: gc::remaining_ns(policy, &obs, now_ns) / NS_PER_MS,
                reverse_ok: r.is_some(),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        (&a.protocol, a.internal.ip(), a.internal.port()).cmp(&(
            &b.protocol,
            b.internal.ip(),
            b.internal.port(),
        ))
    });
    rows
}

/// A duration for people: `850ms`, `42s`, `4m05s`, `2h04m`, `3d01h`.
#[must_use]
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Left-aligned columns separated by two spaces; no trailing blanks.
#[must_use]
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{cell:<w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `natgw mappings` as text.
#[must_use]
pub fn mappings_text(report: &MappingsReport) -> String {
    let rows: Vec<Vec<String>> = report
        .mappings
        .iter()
        .map(|m| {
            vec![
                m.protocol.clone(),
                m.internal.to_string(),
                m.external.to_string(),
                m.origin.clone(),
                human_duration(m.age_ms),
                human_duration(m.idle_ms),
                format!("{}/{}", m.packets_out, m.packets_in),
                format!("{}/{}", m.bytes_out, m.bytes_in),
                match (&m.tcp_flags_out, &m.tcp_flags_in) {
                    (Some(o), Some(i)) => format!("{o}/{i}"),
                    _ => "-".to_owned(),
                },
                m.tcp_state.clone().unwrap_or_else(|| "-".to_owned()),
                human_duration(m.remaining_ms),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "PROTO",
            "INTERNAL",
            "EXTERNAL",
            "ORIGIN",
            "AGE",
            "IDLE",
            "PKTS OUT/IN",
            "BYTES OUT/IN",
            "TCP OUT/IN",
            "STATE",
            "EXPIRES IN",
        ],
        &rows,
    );
    let _ = writeln!(
        out,
        "{} mapping{} (capacity {})",
        report.count,
        if report.count == 1 { "" } else { "s" },
        report.max_mappings
    );
    out
}

const fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `natgw status` as text.
#[must_use]
pub fn status_text(s: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "natgw {} running as pid {} for {} in network namespace net:[{}]",
        s.natgw_version,
        s.pid,
        human_duration(s.uptime_s.saturating_mul(1000)),
        s.netns_inode
    );
    let _ = writeln!(
        out,
        "external address {} on {}",
        s.external_address, s.config.wan
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .interfaces
        .iter()
        .map(|i| {
            let addrs: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
            vec![
                i.name.clone(),
                i.ifindex.to_string(),
                i.role.to_string(),
                if addrs.is_empty() {
                    "-".to_owned()
                } else {
                    addrs.join(",")
                },
                if i.present {
                    format!("{} ({})", i.xdp_program, i.xdp_mode)
                } else {
                    "gone".to_owned()
                },
                if i.tc_programs.is_empty() {
                    "-".to_owned()
                } else {
                    i.tc_programs.join(", ")
                },
                yes_no(i.redirect_ok).to_owned(),
                i.kind.clone().unwrap_or_else(|| "-".to_owned()),
                i.mtu.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "INTERFACE",
            "IFINDEX",
            "ROLE",
            "ADDRESSES",
            "XDP",
            "TC",
            "REDIRECT_OK",
            "KIND",
            "MTU",
        ],
        &rows,
    ));
    let c = &s.config;
    let _ = write!(
        out,
        "\nconfiguration\n  port range        {}\n  udp timeout       {}s\n  \
         tcp established   {}s\n  tcp transitory    {}s\n  inbound refresh   {}\n  \
         max mappings      {}\n  xdp mode          {}\n  gc interval       {}s\n",
        c.port_range,
        c.timeouts.udp,
        c.timeouts.tcp_established,
        c.timeouts.tcp_transitory,
        yes_no(c.inbound_refresh),
        c.max_mappings,
        c.xdp_mode,
        c.gc_interval,
    );
    let _ = writeln!(out, "\nmappings {} of {}", s.mappings, s.max_mappings);
    out.push_str("\ncounters\n");
    let width = s.counters.keys().map(String::len).max().unwrap_or(0);
    // Index order (the data path's), not the JSON object's alphabetical order.
    for c in natgw_common::Counter::ALL {
        if let Some(v) = s.counters.get(c.name()) {
            let _ = writeln!(out, "  {:<width$}  {v}", c.name());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve, FileConfig, Overrides, Timeouts};
    use crate::state::Role;
    use natgw_common::{addr_be, IPPROTO_TCP, IPPROTO_UDP};

    const S: u64 = 1_000_000_000;

    fn policy() -> Policy {
        Policy::new(&Timeouts::default(), false)
    }

    fn entry(proto: u8, int_port: u16, ext_port: u16) -> (FwdKey, Mapping, RevKey, RevValue) {
        let k = FwdKey {
            addr_be: addr_be([10, 0, 1, 2]),
            port_be: int_port.to_be(),
            proto,
            _pad: 0,
        };
        let m = Mapping {
            ext_addr_be: addr_be([192, 0, 2, 1]),
            ext_port_be: ext_port.to_be(),
            origin: 0,
            tcp_flags_out: tcp_seen::SYN | tcp_seen::ACK,
            created_ns: 10 * S,
            last_out_ns: 70 * S,
            packets_out: 3,
            bytes_out: 300,
        };
        let rk = rev_key_of(&k, &m);
        let r = RevValue {
            int_addr_be: k.addr_be,
            int_port_be: k.port_be,
            tcp_flags_in: tcp_seen::SYN | tcp_seen::ACK,
            _pad: 0,
            created_ns: 10 * S,
            last_in_ns: 90 * S,
            packets_in: 2,
            bytes_in: 200,
        };
        (k, m, rk, r)
    }

    #[test]
    fn rows_carry_stats_state_and_lifetime() {
        let (k, m, rk, r) = entry(IPPROTO_TCP, 40000, 40002);
        let rows = mapping_rows(&[(k, m)], &[(rk, r)], &policy(), 100 * S);
        let row = &rows[0];
        assert_eq!(row.protocol, "tcp");
        assert_eq!(row.internal.to_string(), "10.0.1.2:40000");
        assert_eq!(row.external.to_string(), "192.0.2.1:40002");
        assert_eq!(row.origin, "traffic");
        assert_eq!(row.age_ms, 90_000);
        assert_eq!(row.idle_ms, 10_000, "idle counts inbound packets");
        assert_eq!((row.packets_out, row.packets_in), (3, 2));
        assert_eq!((row.bytes_out, row.bytes_in), (300, 200));
        assert_eq!(row.tcp_flags_out.as_deref(), Some("SA"));
        assert_eq!(row.tcp_state.as_deref(), Some("established"));
        assert_eq!(row.timeout_s, 7440);
        // Without inbound refresh the lifetime runs from the last outbound packet.
        assert_eq!(row.remaining_ms, (7440 - 30) * 1000);
        assert!(row.reverse_ok);
    }

    #[test]
    fn rows_without_a_matching_reverse_entry_say_so() {
        let (k, m, rk, mut r) = entry(IPPROTO_UDP, 5000, 5000);
        r.created_ns = 99 * S;
        let rows = mapping_rows(&[(k, m)], &[(rk, r)], &policy(), 100 * S);
        assert!(!rows[0].reverse_ok);
        assert_eq!(rows[0].packets_in, 0);
        assert_eq!(rows[0].tcp_state, None);
        assert_eq!(rows[0].timeout_s, 300);
    }

    #[test]
    fn rows_are_sorted() {
        let (k1, m1, ..) = entry(IPPROTO_UDP, 6000, 6000);
        let (k2, m2, ..) = entry(IPPROTO_TCP, 7000, 7000);
        let (k3, m3, ..) = entry(IPPROTO_UDP, 5000, 5000);
        let rows = mapping_rows(&[(k1, m1), (k2, m2), (k3, m3)], &[], &policy(), 100 * S);
        let order: Vec<_> = rows
            .iter()
            .map(|r| (r.protocol.as_str(), r.internal.port()))
            .collect();
        assert_eq!(order, [("tcp", 7000), ("udp", 5000), ("udp", 6000)]);
    }

    #[test]
    fn mappings_json_round_trips() {
        let (k, m, rk, r) = entry(IPPROTO_TCP, 40000, 40002);
        let report = MappingsReport {
            count: 1,
            max_mappings: 65536,
            mappings: mapping_rows(&[(k, m)], &[(rk, r)], &policy(), 100 * S),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"internal\":\"10.0.1.2:40000\""), "{json}");
        assert_eq!(
            serde_json::from_str::<MappingsReport>(&json).unwrap(),
            report
        );
    }

    fn status() -> StatusReport {
        let flags = Overrides {
            wan: Some("wan0".into()),
            lan: vec!["lan0".into()],
            ..Overrides::default()
        };
        let (config, _) = resolve(&FileConfig::default(), &flags).unwrap();
        StatusReport {
            natgw_version: "0.1.0".into(),
            pid: 7,
            netns_inode: 4_026_532_000,
            uptime_s: 65,
            pin_dir: "/sys/fs/bpf/natgw/net-4026532000".into(),
            external_address: Ipv4Addr::new(192, 0, 2, 1),
            interfaces: vec![IfaceState {
                name: "lan0".into(),
                ifindex: 3,
                role: Role::Lan,
                mtu: 1500,
                kind: Some("veth".into()),
                addresses: vec!["10.0.1.1/24".parse().unwrap()],
                xdp_program: "xdp_lan".into(),
                xdp_mode: "driver".into(),
                tc_programs: vec![],
                redirect_ok: true,
                rx_csum_partial: true,
                present: true,
            }],
            config,
            counters: natgw_common::Counter::ALL
                .iter()
                .map(|c| (c.name().to_owned(), 1))
                .collect(),
            mappings: 2,
            max_mappings: 65536,
        }
    }

    #[test]
    fn status_json_round_trips() {
        let s = status();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"drop_no_mapping\":1"), "{json}");
        assert!(json.contains("\"role\":\"lan\""), "{json}");
        assert_eq!(serde_json::from_str::<StatusReport>(&json).unwrap(), s);
    }

    #[test]
    fn status_text_shows_interfaces_config_and_counters_in_index_order() {
        let text = status_text(&status());
        assert!(text.contains("running as pid 7 for 1m05s"), "{text}");
        assert!(
            text.contains("lan0       3        lan   10.0.1.1/24"),
            "{text}"
        );
        assert!(text.contains("xdp_lan (driver)"), "{text}");
        assert!(text.contains("port range        1024-65535"), "{text}");
        let first = text.find("xdp_out_redirected").unwrap();
        let last = text.find("drop_internal").unwrap();
        assert!(first < last);
        assert!(text.lines().all(|l| l == l.trim_end()));
    }

    #[test]
    fn mappings_text_has_a_header_and_a_summary() {
        let (k, m, rk, r) = entry(IPPROTO_UDP, 40000, 40000);
        let report = MappingsReport {
            count: 1,
            max_mappings: 10,
            mappings: mapping_rows(&[(k, m)], &[(rk, r)], &policy(), 100 * S),
        };
        let text = mappings_text(&report);
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].starts_with("PROTO  INTERNAL"));
        assert!(lines[1].starts_with("udp    10.0.1.2:40000  192.0.2.1:40000  traffic  1m30s  10s"));
        assert_eq!(lines[2], "1 mapping (capacity 10)");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(42_000), "42s");
        assert_eq!(human_duration(245_000), "4m05s");
        assert_eq!(human_duration(7_440_000), "2h04m");
        assert_eq!(human_duration(90_000_000), "1d01h");
    }

    #[test]
    fn tcp_flags_are_letters() {
        assert_eq!(tcp_flags(0), "-");
        assert_eq!(tcp_flags(tcp_seen::SYN | tcp_seen::FIN), "SF");
        assert_eq!(
            tcp_flags(tcp_seen::SYN | tcp_seen::ACK | tcp_seen::FIN | tcp_seen::RST),
            "SAFR"
        );
    }
}
