//! What `natgw mappings` and `natgw status` print: the row types (also their JSON
//! form, which scripts read) and the text tables. Pure functions of a snapshot, so
//! formatting is tested without a running gateway.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use natgw_common::maps::{tcp_seen, FilterMode, Session, SessionKey};
use natgw_common::{FwdKey, Mapping, Origin, RevKey, RevValue, IPPROTO_TCP, NS_PER_SEC};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::daemon::state::{IfaceState, StunState};
use crate::datapath::maps::{ipv4, port, rev_key_of, rev_matches, session_rev_key};
use crate::nat_table::events::EventLine;
use crate::nat_table::explicit::ExplicitEntry;
use crate::nat_table::gc::sessions::{self, SessionObserved};
use crate::nat_table::gc::{self, Observed, Policy};

/// One session of a mapping: its traffic with one remote endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    /// Remote endpoint; port 0 with `address_only`.
    pub remote: SocketAddrV4,
    /// The address-only record of address-dependent filtering (any port of
    /// `remote`'s address).
    pub address_only: bool,
    /// TCP state (`established`, `syn-out`, `fin-both`, ...); `None` for other
    /// protocols.
    pub state: Option<String>,
    /// Seconds since the last packet either way.
    pub idle_s: u64,
    /// Seconds until the garbage collector may remove it.
    pub expires_in_s: u64,
}

/// One live mapping, as `natgw mappings` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingRow {
    /// `udp`, `tcp`, `icmp`, or `proto-N`.
    pub protocol: String,
    /// Internal endpoint (for ICMP the port is the query identifier).
    pub internal: SocketAddrV4,
    /// External endpoint.
    pub external: SocketAddrV4,
    /// Who created it: `traffic`, `pcp`, `nat-pmp`, `upnp`, `static`.
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
    /// Inbound filtering (`endpoint-independent`, `address-dependent`,
    /// `address-and-port-dependent`); `None` without a reverse entry.
    pub filter: Option<String>,
    /// Its sessions, sorted by remote endpoint (only TCP mappings and filtered ones
    /// have any).
    pub sessions: Vec<SessionRow>,
    /// The PCP or NAT-PMP client holding an explicit mapping — the one whose nonce
    /// renews or deletes it; `None` for traffic mappings and static forwards.
    #[serde(default)]
    pub client: Option<SocketAddrV4>,
    /// False for static forwards, which never expire (`remaining_ms` is then 0).
    /// For PCP and NAT-PMP mappings `remaining_ms` is their remaining lifetime.
    #[serde(default = "yes")]
    pub expires: bool,
    /// Remote peers a PCP FILTER lets in (`PREFIX:PORT`, port 0: any); empty:
    /// everyone the filter mode lets in.
    #[serde(default)]
    pub pcp_filters: Vec<String>,
    /// What its holder called it: a UPnP control point's
    /// `NewPortMappingDescription`; empty for the others.
    #[serde(default)]
    pub description: String,
}

const fn yes() -> bool {
    true
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
    /// The external address pool (RFC 4787 REQ-2), `external_address` first.
    #[serde(default)]
    pub external_addresses: Vec<Ipv4Addr>,
    /// Interfaces, WAN first; `redirect_ok` is read live from the `IFACES` map.
    pub interfaces: Vec<IfaceState>,
    /// Effective configuration.
    pub config: Settings,
    /// Data-path counters summed over CPUs, by name.
    pub counters: BTreeMap<String, u64>,
    /// Counters of the controller itself (ICMP errors it sent), by name.
    pub controller_counters: BTreeMap<String, u64>,
    /// The STUN responder on the external address; `None` when it does not run.
    #[serde(default)]
    pub stun: Option<StunState>,
    /// Live mappings.
    pub mappings: usize,
    /// Capacity of the NAT tables.
    pub max_mappings: u32,
    /// Freed external ports held from other hosts now (RFC 6888 REQ-8).
    #[serde(default)]
    pub held_ports: usize,
    /// The active/standby role (`--ha`).
    #[serde(default)]
    pub ha: Option<crate::daemon::keepalived::HaStatus>,
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

/// Short name of a filter mode for the table.
fn filter_abbrev(name: &str) -> &'static str {
    match name {
        "endpoint-independent" => "EIF",
        "address-dependent" => "ADF",
        "address-and-port-dependent" => "APDF",
        "pcp-filter" => "PCP",
        _ => "?",
    }
}

/// The sessions of the mapping whose reverse entry is `r` (under `rk`), as rows,
/// and until when the live ones keep a TCP mapping (as the garbage collector
/// reckons it).
fn session_rows(
    rk: &RevKey,
    r: &RevValue,
    sessions: Option<&Vec<(SessionKey, Session)>>,
    policy: &Policy,
    now_ns: u64,
) -> (Vec<SessionRow>, u64) {
    let mut until = 0;
    let mut rows: Vec<SessionRow> = sessions
        .into_iter()
        .flatten()
        .filter_map(|(k, s)| {
            let obs = SessionObserved::new(k, s);
            if !obs.belongs_to(r) {
                return None;
            }
            if rk.proto == IPPROTO_TCP && !sessions::is_expired(policy, &obs, now_ns) {
                until = sessions::expires_at_ns(policy, &obs).max(until);
            }
            Some(SessionRow {
                remote: SocketAddrV4::new(ipv4(k.remote_addr_be), port(k.remote_port_be)),
                address_only: k.remote_port_be == 0,
                state: obs.tcp_state().map(|t| t.name().to_owned()),
                idle_s: now_ns.saturating_sub(obs.last_packet_ns()) / NS_PER_SEC,
                expires_in_s: sessions::remaining_ns(policy, &obs, now_ns) / NS_PER_SEC,
            })
        })
        .collect();
    rows.sort_by_key(|s| (*s.remote.ip(), s.remote.port()));
    (rows, until)
}

/// Rows for every forward entry, with its sessions, sorted by protocol and internal
/// endpoint.
#[must_use]
pub fn mapping_rows(
    fwd: &[(FwdKey, Mapping)],
    rev: &[(RevKey, RevValue)],
    sessions: &[(SessionKey, Session)],
    policy: &Policy,
    now_ns: u64,
) -> Vec<MappingRow> {
    let rev: HashMap<RevKey, RevValue> = rev.iter().copied().collect();
    let mut by_mapping: HashMap<RevKey, Vec<(SessionKey, Session)>> = HashMap::new();
    for (k, s) in sessions {
        by_mapping
            .entry(session_rev_key(k))
            .or_default()
            .push((*k, *s));
    }
    let mut rows: Vec<_> = fwd
        .iter()
        .map(|(k, m)| {
            let rk = rev_key_of(k, m);
            let r = rev.get(&rk).filter(|r| rev_matches(k, m, r));
            let (sessions, until) = r.map_or_else(
                || (Vec::new(), 0),
                |r| session_rows(&rk, r, by_mapping.get(&rk), policy, now_ns),
            );
            let obs = Observed::new(k, m, r).kept_until(until);
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
                timeout_s: gc::timeout_ns(policy, &obs) / NS_PER_SEC,
                remaining_ms: gc::remaining_ns(policy, &obs, now_ns) / NS_PER_MS,
                reverse_ok: r.is_some(),
                filter: r.map(|r| {
                    FilterMode::from_u8(r.filter)
                        .map_or_else(|| format!("unknown-{}", r.filter), |f| f.name().to_owned())
                }),
                sessions,
                client: None,
                expires: true,
                pcp_filters: Vec::new(),
                description: String::new(),
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

/// Adds what the daemon records about explicit mappings (PCP, NAT-PMP, static
/// forwards) to their rows: the client holding each, its remaining lifetime (the
/// garbage collector leaves explicit mappings alone, so their idle timeout does not
/// apply) and its PCP filters.
pub fn apply_explicit(rows: &mut [MappingRow], explicit: &[ExplicitEntry], now_ns: u64) {
    for row in rows
        .iter_mut()
        .filter(|r| r.origin != Origin::Traffic.name())
    {
        let Some(e) = explicit.iter().find(|e| {
            e.protocol == row.protocol && e.internal == row.internal && e.external == row.external
        }) else {
            continue;
        };
        row.client = e.client;
        row.pcp_filters.clone_from(&e.filters);
        row.description.clone_from(&e.description);
        match e.expires_ns {
            Some(at) => row.remaining_ms = at.saturating_sub(now_ns) / NS_PER_MS,
            None => {
                row.expires = false;
                row.remaining_ms = 0;
            }
        }
    }
}

/// A mapping event for people, like `conntrack -E`:
/// `[NEW] udp 10.0.1.2:5000 -> 192.0.2.1:5000 origin=traffic` (`NEW`, `DESTROY`,
/// `EXPIRE`).
#[must_use]
pub fn event_text(e: &EventLine) -> String {
    let tag = match e.event.as_str() {
        "create" => "NEW",
        "delete" => "DESTROY",
        "expire" => "EXPIRE",
        other => other,
    };
    format!(
        "[{tag}] {} {} -> {} origin={}",
        e.protocol, e.internal, e.external, e.origin
    )
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

/// `natgw mappings` as text; with `sessions`, each mapping's sessions follow it on
/// indented lines.
#[must_use]
pub fn mappings_text(report: &MappingsReport, sessions: bool) -> String {
    let rows: Vec<Vec<String>> = report
        .mappings
        .iter()
        .map(|m| {
            vec![
                m.protocol.clone(),
                m.internal.to_string(),
                m.external.to_string(),
                m.origin.clone(),
                m.client.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                m.filter.as_deref().map_or("-", filter_abbrev).to_owned(),
                human_duration(m.age_ms),
                human_duration(m.idle_ms),
                format!("{}/{}", m.packets_out, m.packets_in),
                format!("{}/{}", m.bytes_out, m.bytes_in),
                match (&m.tcp_flags_out, &m.tcp_flags_in) {
                    (Some(o), Some(i)) => format!("{o}/{i}"),
                    _ => "-".to_owned(),
                },
                m.tcp_state.clone().unwrap_or_else(|| "-".to_owned()),
                m.sessions.len().to_string(),
                if m.expires {
                    human_duration(m.remaining_ms)
                } else {
                    "never".to_owned()
                },
                if m.description.is_empty() {
                    "-".to_owned()
                } else {
                    m.description.clone()
                },
            ]
        })
        .collect();
    let mut out = table(
        &[
            "PROTO",
            "INTERNAL",
            "EXTERNAL",
            "ORIGIN",
            "CLIENT",
            "FILTER",
            "AGE",
            "IDLE",
            "PKTS OUT/IN",
            "BYTES OUT/IN",
            "TCP OUT/IN",
            "STATE",
            "SESSIONS",
            "EXPIRES IN",
            "DESCRIPTION",
        ],
        &rows,
    );
    if sessions {
        out = with_sessions(&out, report);
    }
    let _ = writeln!(
        out,
        "{} mapping{} (capacity {})",
        report.count,
        if report.count == 1 { "" } else { "s" },
        report.max_mappings
    );
    out
}

/// The table of `mappings_text` with each mapping's sessions on indented lines
/// after its own line.
fn with_sessions(table_text: &str, report: &MappingsReport) -> String {
    let mut lines = table_text.lines();
    let mut out = String::new();
    if let Some(header) = lines.next() {
        out.push_str(header);
        out.push('\n');
    }
    for m in &report.mappings {
        let Some(line) = lines.next() else { break };
        out.push_str(line);
        out.push('\n');
        for s in &m.sessions {
            let remote = if s.address_only {
                format!("{}:*", s.remote.ip())
            } else {
                s.remote.to_string()
            };
            let line = format!(
                "    session {remote:<21}  {:<11}  idle {:<6}  expires in {}",
                s.state.as_deref().unwrap_or("-"),
                human_duration(s.idle_s.saturating_mul(1000)),
                human_duration(s.expires_in_s.saturating_mul(1000)),
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    for rest in lines {
        out.push_str(rest);
        out.push('\n');
    }
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
    if s.external_addresses.len() > 1 {
        let pool: Vec<String> = s
            .external_addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(
            out,
            "external addresses {} on {} (paired pooling: each internal host always uses \
             the same one)",
            pool.join(", "),
            s.config.wan
        );
    } else {
        let _ = writeln!(
            out,
            "external address {} on {}",
            s.external_address, s.config.wan
        );
    }
    if let Some(ha) = &s.ha {
        let _ = writeln!(
            out,
            "ha role {} (keepalived {}, {} role change{} since start); virtual addresses {}",
            ha.role,
            ha.keepalived
                .map_or_else(|| "not heard from yet".to_owned(), |k| k.to_string()),
            ha.transitions,
            if ha.transitions == 1 { "" } else { "s" },
            if ha.vip_present {
                "held here"
            } else {
                "held elsewhere"
            }
        );
    }
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
         tcp established   {}s\n  tcp transitory    {}s\n  icmp timeout      {}s\n  \
         inbound refresh   {}\n  udp filtering     {}\n  tcp filtering     {}\n  \
         icmp filtering    {}\n  unsolicited syn   {}\n  \
         max mappings      {}\n  xdp mode          {}\n  gc interval       {}s\n  \
         no mapping icmp   {}\n  ports per host    {}\n  host mapping rate {}/s, burst {}\n  \
         port hold-down    {}s\n",
        c.port_range,
        c.timeouts.udp,
        c.timeouts.tcp_established,
        c.timeouts.tcp_transitory,
        c.timeouts.icmp,
        yes_no(c.inbound_refresh),
        c.filtering.udp,
        c.filtering.tcp,
        c.filtering.icmp,
        c.unsolicited_syn,
        c.max_mappings,
        c.xdp_mode,
        c.gc_interval,
        c.no_mapping_icmp,
        c.limits.ports_per_host,
        c.limits.new_mappings_per_sec,
        c.limits.new_mappings_burst,
        c.limits.port_hold_down,
    );
    let _ = writeln!(
        out,
        "\nmappings {} of {}, {} freed ports held",
        s.mappings, s.max_mappings, s.held_ports
    );
    out.push_str("\ncounters\n");
    let width = s.counters.keys().map(String::len).max().unwrap_or(0);
    // Index order (the data path's), not the JSON object's alphabetical order.
    for c in natgw_common::Counter::ALL {
        if let Some(v) = s.counters.get(c.name()) {
            let _ = writeln!(out, "  {:<width$}  {v}", c.name());
        }
    }
    if !s.controller_counters.is_empty() {
        out.push_str("\ncontroller counters\n");
        let width = s
            .controller_counters
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0);
        for (name, v) in &s.controller_counters {
            let _ = writeln!(out, "  {name:<width$}  {v}");
        }
    }
    stun_text(&mut out, s);
    out
}

/// The STUN responder's part of `natgw status`.
fn stun_text(out: &mut String, s: &StatusReport) {
    let Some(stun) = &s.stun else {
        if !s.config.stun.enabled {
            out.push_str("\nstun responder off\n");
        }
        return;
    };
    if stun.listening {
        let addresses: Vec<String> = stun.addresses.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "\nstun responder on {}", addresses.join(", "));
        match stun.other_address {
            Some(other) => {
                let _ = writeln!(out, "  rfc 5780: other address {other}");
            }
            None => out.push_str("  rfc 5780: no (needs a second external address)\n"),
        }
    } else {
        let _ = writeln!(
            out,
            "\nstun responder not listening: {}",
            stun.not_listening.as_deref().unwrap_or("unknown reason")
        );
    }
    let width = stun.counters.keys().map(String::len).max().unwrap_or(0);
    for (name, v) in &stun.counters {
        let _ = writeln!(out, "  {name:<width$}  {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve, FileConfig, Overrides, Timeouts};
    use crate::daemon::state::Role;
    use natgw_common::tcp::TcpState;
    use natgw_common::{addr_be, IPPROTO_UDP};

    const S: u64 = NS_PER_SEC;

    fn policy() -> Policy {
        Policy::new(&Timeouts::default(), false)
    }

    fn entry(proto: u8, int_port: u16, ext_port: u16) -> (FwdKey, Mapping, RevKey, RevValue) {
        let k = FwdKey::new(addr_be([10, 0, 1, 2]), int_port.to_be(), proto);
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
            filter: FilterMode::AddressAndPortDependent as u8,
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
        let rows = mapping_rows(&[(k, m)], &[(rk, r)], &[], &policy(), 100 * S);
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
        let rows = mapping_rows(&[(k, m)], &[(rk, r)], &[], &policy(), 100 * S);
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
        let rows = mapping_rows(
            &[(k1, m1), (k2, m2), (k3, m3)],
            &[],
            &[],
            &policy(),
            100 * S,
        );
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
            mappings: mapping_rows(&[(k, m)], &[(rk, r)], &[], &policy(), 100 * S),
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
            external_addresses: vec![Ipv4Addr::new(192, 0, 2, 1)],
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
            controller_counters: BTreeMap::from([("icmp_sent_port_unreachable".to_owned(), 3)]),
            stun: None,
            mappings: 2,
            max_mappings: 65536,
            held_ports: 4,
            ha: None,
        }
    }

    #[test]
    fn status_text_shows_the_ha_role() {
        let mut s = status();
        assert!(!status_text(&s).contains("ha role"));
        s.ha = Some(crate::daemon::keepalived::HaStatus {
            role: "standby".into(),
            keepalived: Some(crate::daemon::keepalived::VrrpState::Backup),
            since_unix: 0,
            transitions: 1,
            vip_present: false,
        });
        let text = status_text(&s);
        assert!(
            text.contains(
                "ha role standby (keepalived BACKUP, 1 role change since start); virtual \
                 addresses held elsewhere"
            ),
            "{text}"
        );
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
            text.contains("\nexternal address 192.0.2.1 on wan0\n"),
            "{text}"
        );
        assert!(
            text.contains("lan0       3        lan   10.0.1.1/24"),
            "{text}"
        );
        assert!(text.contains("xdp_lan (driver)"), "{text}");
        assert!(text.contains("port range        1024-65535"), "{text}");
        assert!(text.contains("icmp timeout      60s"), "{text}");
        assert!(
            text.contains("udp filtering     endpoint-independent"),
            "{text}"
        );
        assert!(text.contains("unsolicited syn   icmp"), "{text}");
        assert!(
            text.contains("controller counters\n  icmp_sent_port_unreachable  3"),
            "{text}"
        );
        let first = text.find("xdp_out_redirected").unwrap();
        let last = text.find("drop_internal").unwrap();
        assert!(first < last);
        assert!(text.lines().all(|l| l == l.trim_end()));
    }

    #[test]
    fn status_text_shows_the_stun_responder_and_its_counters() {
        let mut s = status();
        s.stun = Some(StunState {
            addresses: vec![
                "192.0.2.1:3478".parse().unwrap(),
                "192.0.2.1:3479".parse().unwrap(),
                "192.0.2.2:3478".parse().unwrap(),
                "192.0.2.2:3479".parse().unwrap(),
            ],
            other_address: Some("192.0.2.2:3479".parse().unwrap()),
            listening: true,
            not_listening: None,
            counters: BTreeMap::from([("received".to_owned(), 5), ("success".to_owned(), 4)]),
        });
        let text = status_text(&s);
        assert!(
            text.contains("\nstun responder on 192.0.2.1:3478, 192.0.2.1:3479, 192.0.2.2:3478"),
            "{text}"
        );
        assert!(
            text.contains("  rfc 5780: other address 192.0.2.2:3479\n"),
            "{text}"
        );
        assert!(text.contains("  received  5\n  success   4\n"), "{text}");
        s.stun = Some(StunState {
            addresses: Vec::new(),
            other_address: None,
            listening: false,
            not_listening: Some("the WAN has no IPv4 address".to_owned()),
            counters: BTreeMap::from([("received".to_owned(), 5)]),
        });
        let text = status_text(&s);
        assert!(
            text.contains(
                "\nstun responder not listening: the WAN has no IPv4 address\n  received  5\n"
            ),
            "{text}"
        );
        s.stun = None;
        s.config.stun.enabled = false;
        assert!(status_text(&s).contains("\nstun responder off\n"));
    }

    #[test]
    fn status_text_lists_the_address_pool() {
        // rfc4787 REQ-2
        let mut s = status();
        s.external_addresses = vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];
        let text = status_text(&s);
        assert!(
            text.contains("external addresses 192.0.2.1, 192.0.2.2 on wan0 (paired pooling"),
            "{text}"
        );
    }

    #[test]
    fn mappings_text_has_a_header_and_a_summary() {
        let (k, m, rk, r) = entry(IPPROTO_UDP, 40000, 40000);
        let report = MappingsReport {
            count: 1,
            max_mappings: 10,
            mappings: mapping_rows(&[(k, m)], &[(rk, r)], &[], &policy(), 100 * S),
        };
        let text = mappings_text(&report, false);
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].starts_with("PROTO  INTERNAL"));
        assert!(
            lines[1].starts_with(
                "udp    10.0.1.2:40000  192.0.2.1:40000  traffic  -       APDF    1m30s  10s"
            ),
            "{text}"
        );
        assert_eq!(lines[2], "1 mapping (capacity 10)");
    }

    fn session(
        rk: &RevKey,
        remote_port: u16,
        state: TcpState,
        last_in: u64,
    ) -> (SessionKey, Session) {
        (
            SessionKey::new(
                rk.addr_be,
                addr_be([198, 51, 100, 2]),
                rk.port_be,
                remote_port.to_be(),
                rk.proto,
            ),
            Session::new(10 * S, 70 * S, last_in, state as u8),
        )
    }

    #[test]
    fn rows_list_filter_and_sessions() {
        let (k, m, rk, r) = entry(IPPROTO_TCP, 40000, 40002);
        let sessions = [
            session(&rk, 7000, TcpState::Established, 95 * S),
            session(&rk, 0, TcpState::Closed, 0),
            // A leftover of an older mapping of the same external port.
            (
                session(&rk, 9, TcpState::Established, 0).0,
                Session {
                    created_ns: S,
                    last_out_ns: 2 * S,
                    ..Session::default()
                },
            ),
        ];
        let rows = mapping_rows(&[(k, m)], &[(rk, r)], &sessions, &policy(), 100 * S);
        let row = &rows[0];
        assert_eq!(row.filter.as_deref(), Some("address-and-port-dependent"));
        assert_eq!(row.sessions.len(), 2, "{:?}", row.sessions);
        let addr = &row.sessions[0];
        assert!(addr.address_only);
        assert_eq!(addr.state.as_deref(), Some("closed"));
        assert_eq!(addr.expires_in_s, 240 - 30);
        let s = &row.sessions[1];
        assert_eq!(s.remote.to_string(), "198.51.100.2:7000");
        assert_eq!(s.state.as_deref(), Some("established"));
        assert_eq!(s.idle_s, 5);
        assert_eq!(s.expires_in_s, 7440 - 5);
        // The live session keeps the mapping beyond its own outbound-only rule.
        assert_eq!(row.remaining_ms, (7440 - 5) * 1000);
        let json = serde_json::to_value(row).unwrap();
        assert_eq!(json["filter"], "address-and-port-dependent");
        assert_eq!(json["sessions"][1]["remote"], "198.51.100.2:7000");
        assert_eq!(json["sessions"][1]["state"], "established");
        assert_eq!(json["sessions"][1]["idle_s"], 5);
    }

    #[test]
    fn mappings_text_lists_sessions_only_when_asked() {
        let (k, m, rk, r) = entry(IPPROTO_TCP, 40000, 40002);
        let sessions = [session(&rk, 7000, TcpState::Established, 95 * S)];
        let report = MappingsReport {
            count: 1,
            max_mappings: 10,
            mappings: mapping_rows(&[(k, m)], &[(rk, r)], &sessions, &policy(), 100 * S),
        };
        let short = mappings_text(&report, false);
        assert_eq!(short.lines().count(), 3, "{short}");
        let long = mappings_text(&report, true);
        let lines: Vec<_> = long.lines().collect();
        assert_eq!(lines.len(), 4, "{long}");
        assert!(lines[1].starts_with("tcp "), "{long}");
        assert_eq!(
            lines[2],
            "    session 198.51.100.2:7000      established  idle 5s      expires in 2h03m"
        );
        assert!(lines[3].starts_with("1 mapping"));
    }

    #[test]
    fn explicit_mappings_show_their_client_and_lifetime() {
        let (k1, mut m1, rk1, r1) = entry(IPPROTO_UDP, 5000, 15000);
        m1.origin = Origin::Pcp as u8;
        let (k2, mut m2, rk2, r2) = entry(IPPROTO_UDP, 80, 8080);
        m2.origin = Origin::Static as u8;
        let (k3, mut m3, rk3, r3) = entry(IPPROTO_UDP, 6000, 16000);
        m3.origin = Origin::Upnp as u8;
        let now = 100 * S;
        let mut rows = mapping_rows(
            &[(k1, m1), (k2, m2), (k3, m3)],
            &[(rk1, r1), (rk2, r2), (rk3, r3)],
            &[],
            &policy(),
            now,
        );
        let client: SocketAddrV4 = "10.0.1.2:40000".parse().unwrap();
        let entry = |internal: &str, external: &str, origin: &str| ExplicitEntry {
            protocol: "udp".into(),
            internal: internal.parse().unwrap(),
            external: external.parse().unwrap(),
            origin: origin.into(),
            client: (origin != "static").then_some(client),
            expires_ns: (origin != "static").then_some(700 * S),
            filters: vec!["198.51.100.0/24:0".into()],
            nonce: None,
            created_ns: 0,
            ports: Vec::new(),
            description: if origin == "upnp" {
                "game server".into()
            } else {
                String::new()
            },
        };
        apply_explicit(
            &mut rows,
            &[
                entry("10.0.1.2:5000", "192.0.2.1:15000", "pcp"),
                entry("10.0.1.2:80", "192.0.2.1:8080", "static"),
                entry("10.0.1.2:6000", "192.0.2.1:16000", "upnp"),
            ],
            now,
        );
        let (forward, pcp, upnp) = (&rows[0], &rows[1], &rows[2]);
        assert_eq!(upnp.origin, "upnp");
        assert_eq!(upnp.description, "game server");
        assert!(pcp.description.is_empty());
        assert_eq!((pcp.origin.as_str(), pcp.client), ("pcp", Some(client)));
        assert_eq!(
            pcp.remaining_ms, 600_000,
            "the PCP lifetime, not the idle timeout"
        );
        assert_eq!(pcp.pcp_filters, ["198.51.100.0/24:0"]);
        assert!(pcp.expires);
        assert_eq!(forward.origin, "static");
        assert!(!forward.expires);
        let report = MappingsReport {
            count: rows.len(),
            max_mappings: 10,
            mappings: rows,
        };
        let text = mappings_text(&report, false);
        assert!(text.contains("pcp     10.0.1.2:40000"), "{text}");
        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with("EXPIRES IN  DESCRIPTION"),
            "{text}"
        );
        assert!(
            text.lines().nth(1).unwrap().ends_with("never       -"),
            "{text}"
        );
        assert!(
            text.lines().nth(3).unwrap().ends_with("game server"),
            "{text}"
        );
        let json = serde_json::to_value(&report.mappings[2]).unwrap();
        assert_eq!(json["description"], "game server");
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

    #[test]
    fn events_read_like_conntrack() {
        let mut e = EventLine {
            event: "create".into(),
            protocol: "udp".into(),
            internal: "10.0.1.2:5000".parse().unwrap(),
            external: "192.0.2.1:6000".parse().unwrap(),
            origin: "traffic".into(),
            time_ns: 1,
        };
        assert_eq!(
            event_text(&e),
            "[NEW] udp 10.0.1.2:5000 -> 192.0.2.1:6000 origin=traffic"
        );
        e.event = "expire".into();
        assert!(event_text(&e).starts_with("[EXPIRE] udp"));
        e.event = "delete".into();
        assert!(event_text(&e).starts_with("[DESTROY] udp"));
    }
}
