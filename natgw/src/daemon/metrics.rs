//! What `GET /metrics` reports, and how it is gathered without holding up the loop.
//!
//! The daemon's loop publishes into [`Published`] what only it knows, at moments it
//! passes anyway: the controller's counters once a second (where it compares them
//! for the state file), the [`Census`] of the tables, the duration and the deletions
//! of each garbage-collection pass right after the pass (which reads every table
//! anyway). A scrape locks [`Published`] only to copy it, reads the data path's
//! per-CPU counters through a map handle of its own, the process's memory from
//! `/proc/self/statm`, and writes the exposition on the blocking pool
//! ([`crate::services::metrics`]). So a scrape costs the loop nothing but a short
//! lock, and the mapping gauges are as old as the last GC pass (`gc_interval`).
//!
//! The metric names are the reference in docs/operations.md#metrics; the Grafana
//! dashboard docs/grafana-natgw.json uses them (checked by a test here).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};

use natgw_common::{Counter, Origin, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::config::MetricsSettings;
use crate::datapath::maps::CounterMap;
use crate::datapath::topology::Topology;
use crate::nat_table::census::Census;
use crate::nat_table::gc::reason::SurveyReason;
use crate::nat_table::gc::{proto_name, TickStats};
use crate::services::exposition::{Exposition, Histogram, Kind};
use crate::services::metrics::{MetricsServer, Render};

/// Upper bounds of the GC pass duration buckets, seconds: a pass over a few
/// mappings takes well under a millisecond, over a million about a second.
pub const GC_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Protocols every mapping and pool series is written for, zero or not.
const PROTOCOLS: [u8; 3] = [IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP];

/// Origins every mapping series is written for.
const ORIGINS: [Origin; 5] = [
    Origin::Traffic,
    Origin::Pcp,
    Origin::NatPmp,
    Origin::Upnp,
    Origin::Static,
];

/// What the loop publishes for scrapes.
#[derive(Clone, Debug)]
pub struct Published {
    /// The controller's counters by their `natgw status` names.
    pub controller: BTreeMap<String, u64>,
    /// The STUN responder's, by theirs.
    pub stun: BTreeMap<String, u64>,
    /// The tables at the last GC pass.
    pub census: Census,
    /// The external address pool.
    pub pool: Vec<Ipv4Addr>,
    /// Ports of the range, per address and protocol.
    pub ports_per_address: u32,
    /// Capacity of each NAT table.
    pub max_mappings: u32,
    /// GC pass durations.
    pub gc_duration: Histogram,
    /// Mappings the GC deleted.
    pub gc_expired: u64,
    /// Sessions it deleted.
    pub gc_sessions_expired: u64,
    /// Orphaned reverse entries it deleted.
    pub gc_orphans: u64,
    /// Holds of freed ports it ended.
    pub gc_holds_ended: u64,
    /// Passes that failed.
    pub gc_failures: u64,
    /// Surveys of the whole tables, by [`SurveyReason::index`].
    pub gc_surveys: [u64; SurveyReason::ALL.len()],
    /// Probes that found the tables as expected.
    pub gc_probes: u64,
    /// When the controller started, seconds since the Unix epoch.
    pub started_unix: u64,
    /// The active/standby role (`--ha`).
    pub ha: Option<super::keepalived::HaStatus>,
}

impl Default for Published {
    fn default() -> Self {
        Self {
            controller: BTreeMap::new(),
            stun: BTreeMap::new(),
            census: Census::default(),
            pool: Vec::new(),
            ports_per_address: 0,
            max_mappings: 0,
            gc_duration: Histogram::new(GC_BUCKETS),
            gc_expired: 0,
            gc_sessions_expired: 0,
            gc_orphans: 0,
            gc_holds_ended: 0,
            gc_failures: 0,
            gc_surveys: [0; SurveyReason::ALL.len()],
            gc_probes: 0,
            started_unix: 0,
            ha: None,
        }
    }
}

impl Published {
    /// Records a GC pass that took `took`.
    pub fn gc_pass(&mut self, took: Duration, result: Option<&TickStats>, census: &Census) {
        self.gc_duration.observe(took.as_secs_f64());
        match result {
            Some(stats) => {
                self.gc_expired += stats.expired as u64;
                self.gc_sessions_expired += stats.sessions_expired as u64;
                self.gc_orphans += stats.orphans as u64;
                self.gc_holds_ended += stats.holds_ended as u64;
                if let Some(reason) = stats.reason {
                    self.gc_surveys[reason.index()] += 1;
                }
                self.gc_probes += u64::from(stats.probe);
                self.census.clone_from(census);
            }
            None => self.gc_failures += 1,
        }
    }
}

/// The running endpoint and what the loop publishes for it.
pub struct Endpoint {
    /// Shared with the scrapes.
    pub published: Arc<Mutex<Published>>,
    server: MetricsServer,
}

impl Endpoint {
    /// Starts serving on `listen` (bound to `device`), reading the data path's
    /// counters through `counters`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn start(
        listen: SocketAddrV4,
        device: Option<&str>,
        counters: CounterMap,
        published: Published,
    ) -> Result<Self> {
        let published = Arc::new(Mutex::new(published));
        let shared = Arc::clone(&published);
        let render: Render = Arc::new(move || {
            let snapshot = match shared.lock() {
                Ok(p) => p.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            let datapath = counters.read().ok();
            render(&snapshot, datapath.as_deref(), Memory::read()).finish()
        });
        Ok(Self {
            published,
            server: MetricsServer::start(listen, device, render)?,
        })
    }

    /// Applies `f` to what is published.
    pub fn publish(&self, f: impl FnOnce(&mut Published)) {
        match self.published.lock() {
            Ok(mut p) => f(&mut p),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Stops serving.
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

/// Where the endpoint may listen: loopback, or an address of a LAN interface (then
/// bound to that interface, so it is not reached through another one); anything
/// else — the WAN's address, 0.0.0.0, an address of no interface of natgw's — only
/// with `allow_wan`. Returns the interface to bind to.
///
/// # Errors
/// An address refused, with what to do instead.
pub fn check_listen(settings: &MetricsSettings, topology: &Topology) -> Result<Option<String>> {
    let Some(listen) = settings.listen else {
        return Ok(None);
    };
    let ip = *listen.ip();
    if ip.is_loopback() {
        return Ok(None);
    }
    if let Some(lan) = topology
        .lans
        .iter()
        .find(|l| l.ipv4.iter().any(|p| p.addr() == ip))
    {
        return Ok(Some(lan.name.clone()));
    }
    if settings.allow_wan {
        return Ok(None);
    }
    let lans: Vec<String> = topology
        .lans
        .iter()
        .flat_map(|l| {
            l.ipv4
                .iter()
                .map(move |p| format!("{} ({})", p.addr(), l.name))
        })
        .collect();
    let what = if ip.is_unspecified() {
        "listens on every interface, the WAN's too".to_owned()
    } else if topology.wan.ipv4.iter().any(|p| p.addr() == ip) || topology.pool.contains(&ip) {
        format!("is on the WAN interface {}", topology.wan.name)
    } else {
        "is neither a LAN interface's address nor loopback".to_owned()
    };
    bail!(
        "the metrics address {listen} {what}: the counters would be readable from outside. \
         Listen on a LAN address ({}) or 127.0.0.1, or pass --metrics-allow-wan (`[metrics] \
         allow_wan = true`) if a firewall guards it",
        if lans.is_empty() {
            "-".to_owned()
        } else {
            lans.join(", ")
        }
    );
}

/// The process's memory, from `/proc/self/statm`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size, bytes.
    pub resident: u64,
    /// Virtual size, bytes.
    pub virtual_size: u64,
}

impl Memory {
    /// Reads it; `None` when `/proc` is not there.
    #[must_use]
    pub fn read() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/self/statm").ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self::parse(&text, u64::try_from(page).ok()?)
    }

    /// `size resident ...` in pages.
    fn parse(statm: &str, page: u64) -> Option<Self> {
        let mut fields = statm.split_whitespace().map(str::parse::<u64>);
        let size = fields.next()?.ok()?;
        let resident = fields.next()?.ok()?;
        Some(Self {
            resident: resident.saturating_mul(page),
            virtual_size: size.saturating_mul(page),
        })
    }
}

/// The exposition of `p`, the data path's counters (`None`: unreadable) and the
/// process's memory.
#[must_use]
#[allow(clippy::too_many_lines)] // one family after another
pub fn render(
    p: &Published,
    datapath: Option<&[(Counter, u64)]>,
    memory: Option<Memory>,
) -> Exposition {
    let mut doc = Exposition::new();
    doc.family(
        "natgw_build_info",
        Kind::Gauge,
        "natgw's version, as a label; always 1.",
    )
    .int(&[("version", env!("CARGO_PKG_VERSION"))], 1);
    doc.family(
        "process_start_time_seconds",
        Kind::Gauge,
        "When the controller started, seconds since the Unix epoch.",
    )
    .int(&[], p.started_unix);
    if let Some(m) = memory {
        doc.family(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "The controller's resident set size (the kernel's maps are not counted).",
        )
        .int(&[], m.resident);
        doc.family(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "The controller's virtual memory size.",
        )
        .int(&[], m.virtual_size);
    }
    doc.family(
        "natgw_datapath_up",
        Kind::Gauge,
        "1 when the data path's counters could be read for this scrape.",
    )
    .int(&[], u64::from(datapath.is_some()));
    datapath_families(&mut doc, datapath.unwrap_or_default());

    let mut mappings = doc.family(
        "natgw_mappings",
        Kind::Gauge,
        "Mappings in the NAT table by protocol and origin, at the last GC pass.",
    );
    let mut seen = p.census.mappings.clone();
    for proto in PROTOCOLS {
        for origin in ORIGINS {
            let n = seen.remove(&(proto, origin as u8)).unwrap_or(0);
            mappings.int(
                &[("proto", &proto_name(proto)), ("origin", origin.name())],
                n,
            );
        }
    }
    for ((proto, origin), n) in seen {
        let origin = Origin::from_u8(origin)
            .map_or_else(|| format!("unknown-{origin}"), |o| o.name().to_owned());
        mappings.int(&[("proto", &proto_name(proto)), ("origin", &origin)], n);
    }
    doc.family(
        "natgw_mappings_capacity",
        Kind::Gauge,
        "Mappings each NAT table holds at most (--max-mappings).",
    )
    .int(&[], u64::from(p.max_mappings));
    doc.family(
        "natgw_sessions",
        Kind::Gauge,
        "Sessions (remote endpoints of mappings), at the last GC pass.",
    )
    .int(&[], p.census.sessions);
    if let Some(ha) = &p.ha {
        // With replication configured its counters carry the role (`ha_families`);
        // a second family of the same name would be invalid exposition.
        if !p.controller.contains_key("ha_active") {
            let mut role = doc.family(
                "natgw_ha_role",
                Kind::Gauge,
                "1 for the role keepalived gave this natgw (--ha), 0 for the other.",
            );
            for name in ["active", "standby"] {
                role.int(&[("role", name)], u64::from(ha.role == name));
            }
        }
        doc.family(
            "natgw_ha_role_changes_total",
            Kind::Counter,
            "Role changes since natgw started.",
        )
        .int(&[], ha.transitions);
    }

    let mut addresses: Vec<Ipv4Addr> = p.pool.clone();
    for (addr, _) in p.census.ports.keys() {
        if !addresses.contains(addr) {
            addresses.push(*addr);
        }
    }
    let mut protos: Vec<u8> = PROTOCOLS.to_vec();
    for (_, proto) in p.census.ports.keys() {
        if !protos.contains(proto) {
            protos.push(*proto);
        }
    }
    let series = || {
        addresses
            .iter()
            .flat_map(|a| protos.iter().map(move |pr| (*a, *pr)))
            .collect::<Vec<_>>()
    };
    let mut used = doc.family(
        "natgw_pool_ports_used",
        Kind::Gauge,
        "External ports claimed by a mapping, per external address and protocol.",
    );
    for (addr, proto) in series() {
        let n = p.census.ports.get(&(addr, proto)).map_or(0, |u| u.used);
        used.int(
            &[
                ("address", &addr.to_string()),
                ("proto", &proto_name(proto)),
            ],
            n,
        );
    }
    let mut held = doc.family(
        "natgw_pool_ports_held",
        Kind::Gauge,
        "External ports freed and held from other hosts (RFC 6888 REQ-8).",
    );
    for (addr, proto) in series() {
        let n = p.census.ports.get(&(addr, proto)).map_or(0, |u| u.held);
        held.int(
            &[
                ("address", &addr.to_string()),
                ("proto", &proto_name(proto)),
            ],
            n,
        );
    }
    let mut capacity = doc.family(
        "natgw_pool_ports_capacity",
        Kind::Gauge,
        "External ports of the port range, per external address and protocol.",
    );
    for (addr, proto) in series() {
        capacity.int(
            &[
                ("address", &addr.to_string()),
                ("proto", &proto_name(proto)),
            ],
            u64::from(p.ports_per_address),
        );
    }

    doc.family(
        "natgw_gc_duration_seconds",
        Kind::Histogram,
        "How long each garbage-collection pass over the NAT tables took.",
    )
    .histogram(&[], &p.gc_duration);
    doc.family(
        "natgw_gc_deleted_total",
        Kind::Counter,
        "Entries the garbage collector deleted: expired mappings and sessions, orphaned \
         reverse entries, ended port holds.",
    )
    .int(&[("what", "mappings")], p.gc_expired)
    .int(&[("what", "sessions")], p.gc_sessions_expired)
    .int(&[("what", "orphans")], p.gc_orphans)
    .int(&[("what", "holds")], p.gc_holds_ended);
    doc.family(
        "natgw_gc_failures_total",
        Kind::Counter,
        "Garbage-collection passes that failed (a map operation refused).",
    )
    .int(&[], p.gc_failures);
    let mut surveys = doc.family(
        "natgw_gc_surveys_total",
        Kind::Counter,
        "Garbage-collection passes over the whole tables, by why each ran.",
    );
    for (reason, n) in SurveyReason::ALL.iter().zip(p.gc_surveys) {
        surveys.int(&[("reason", reason.name())], n);
    }
    doc.family(
        "natgw_gc_probes_total",
        Kind::Counter,
        "Probes of the forward and session tables that spared the collector a survey.",
    )
    .int(&[], p.gc_probes);

    controller_families(&mut doc, p.controller.clone());
    stun_families(&mut doc, p.stun.clone());
    doc
}

/// The data path's counters: `drop_*` and `pass_*` by reason, the rest by name.
fn datapath_families(doc: &mut Exposition, counters: &[(Counter, u64)]) {
    let with_prefix = |prefix: &'static str| {
        counters
            .iter()
            .filter_map(move |(c, v)| c.name().strip_prefix(prefix).map(|r| (r, *v)))
    };
    let mut f = doc.family(
        "natgw_datapath_dropped_packets_total",
        Kind::Counter,
        "Packets the data path dropped, by reason (the drop_* counters of natgw status; \
         see docs/counters.md).",
    );
    for (reason, v) in with_prefix("drop_") {
        f.int(&[("reason", reason)], v);
    }
    let mut f = doc.family(
        "natgw_datapath_passed_packets_total",
        Kind::Counter,
        "Packets the data path left to the kernel untranslated, by reason (the pass_* \
         counters; see docs/counters.md).",
    );
    for (reason, v) in with_prefix("pass_") {
        f.int(&[("reason", reason)], v);
    }
    let mut f = doc.family(
        "natgw_datapath_packets_total",
        Kind::Counter,
        "The data path's other counters by their natgw status names: packets translated \
         on the XDP (xdp_*) and TC (tc_*) paths, hairpins, fragments, ICMP errors, \
         mappings created.",
    );
    for (c, v) in counters {
        let name = c.name();
        if !name.starts_with("drop_") && !name.starts_with("pass_") {
            f.int(&[("counter", name)], *v);
        }
    }
}

/// Takes `name` out of `counters`.
fn take(counters: &mut BTreeMap<String, u64>, name: &str) -> Option<u64> {
    counters.remove(name)
}

/// Takes every counter named `prefix<rest>`: `(rest, value)`.
fn take_prefixed(counters: &mut BTreeMap<String, u64>, prefix: &str) -> Vec<(String, u64)> {
    let names: Vec<String> = counters
        .keys()
        .filter(|k| k.starts_with(prefix))
        .cloned()
        .collect();
    names
        .into_iter()
        .filter_map(|n| {
            let v = counters.remove(&n)?;
            Some((n[prefix.len()..].to_owned(), v))
        })
        .collect()
}

/// The controller's counters: PCP and NAT-PMP, UPnP, ICMP errors and fragments in
/// families of their own; whatever is left by name.
#[allow(clippy::needless_pass_by_value)] // consumed: what is left is the last family
fn controller_families(doc: &mut Exposition, mut c: BTreeMap<String, u64>) {
    ha_families(doc, &mut c);
    let requests = take(&mut c, "pcp_requests");
    let succeeded = take(&mut c, "pcp_succeeded");
    let refused = take(&mut c, "pcp_refused");
    let natpmp = (
        take(&mut c, "natpmp_requests").unwrap_or(0),
        take(&mut c, "natpmp_succeeded").unwrap_or(0),
        take(&mut c, "natpmp_refused").unwrap_or(0),
    );
    let mut f = doc.family(
        "natgw_pcp_requests_total",
        Kind::Counter,
        "Requests the PCP server received, by protocol: PCP (RFC 6887) or NAT-PMP (RFC \
         6886, version 0).",
    );
    if let Some(all) = requests {
        f.int(&[("protocol", "pcp")], all.saturating_sub(natpmp.0))
            .int(&[("protocol", "nat-pmp")], natpmp.0);
    }
    let mut f = doc.family(
        "natgw_pcp_responses_total",
        Kind::Counter,
        "Answers of the PCP server by protocol and result: success, or refused with an \
         error result code.",
    );
    if let (Some(ok), Some(no)) = (succeeded, refused) {
        f.int(
            &[("protocol", "pcp"), ("result", "success")],
            ok.saturating_sub(natpmp.1),
        )
        .int(
            &[("protocol", "pcp"), ("result", "refused")],
            no.saturating_sub(natpmp.2),
        )
        .int(&[("protocol", "nat-pmp"), ("result", "success")], natpmp.1)
        .int(&[("protocol", "nat-pmp"), ("result", "refused")], natpmp.2);
    }
    let dropped = take_prefixed(&mut c, "pcp_dropped_");
    let mut f = doc.family(
        "natgw_pcp_dropped_total",
        Kind::Counter,
        "PCP and NAT-PMP requests dropped without an answer, by reason.",
    );
    for (reason, v) in &dropped {
        f.int(&[("reason", reason)], *v);
    }
    let unresolved = take(&mut c, "pcp_unresolved");
    let send_failed = take(&mut c, "pcp_send_failed");
    let mut f = doc.family(
        "natgw_pcp_reply_failures_total",
        Kind::Counter,
        "PCP and NAT-PMP answers not sent: the client's link-layer address unknown \
         (unresolved), or the socket refused it (send_failed).",
    );
    if let Some(v) = unresolved {
        f.int(&[("reason", "unresolved")], v);
    }
    if let Some(v) = send_failed {
        f.int(&[("reason", "send_failed")], v);
    }

    let upnp = |c: &mut BTreeMap<String, u64>, name: &str| take(c, &format!("upnp_{name}"));
    let mut f = doc.family(
        "natgw_upnp_requests_total",
        Kind::Counter,
        "HTTP requests the UPnP IGD server answered (descriptions, SOAP control, GENA).",
    );
    if let Some(v) = upnp(&mut c, "requests") {
        f.int(&[], v);
    }
    let errors: Vec<(&str, Option<u64>)> = [
        ("refused", "refused"),
        ("rejected", "rejected"),
        ("busy", "busy"),
        ("read_timeout", "read_timeouts"),
        ("connection_refused", "connections_refused"),
    ]
    .into_iter()
    .map(|(label, name)| (label, upnp(&mut c, name)))
    .collect();
    let mut f = doc.family(
        "natgw_upnp_errors_total",
        Kind::Counter,
        "UPnP requests that failed, by kind: refused (a SOAP fault), rejected (an HTTP \
         error), busy (503), read_timeout (no whole request in 5 s), connection_refused \
         (over the connection limits).",
    );
    for (kind, v) in errors {
        if let Some(v) = v {
            f.int(&[("kind", kind)], v);
        }
    }
    let mut f = doc.family(
        "natgw_upnp_connections_total",
        Kind::Counter,
        "HTTP connections the UPnP server accepted.",
    );
    if let Some(v) = upnp(&mut c, "connections") {
        f.int(&[], v);
    }
    let searches = upnp(&mut c, "ssdp_searches");
    let foreign = upnp(&mut c, "ssdp_foreign");
    let mut f = doc.family(
        "natgw_upnp_ssdp_total",
        Kind::Counter,
        "SSDP datagrams: searches answered, and foreign ones dropped (not from a host of \
         the LAN interface they came in on).",
    );
    if let Some(v) = searches {
        f.int(&[("result", "answered")], v);
    }
    if let Some(v) = foreign {
        f.int(&[("result", "foreign")], v);
    }
    let delivered = upnp(&mut c, "events_delivered");
    let failed = upnp(&mut c, "events_failed");
    let mut f = doc.family(
        "natgw_upnp_events_total",
        Kind::Counter,
        "GENA event messages to subscribers, delivered or failed.",
    );
    if let Some(v) = delivered {
        f.int(&[("result", "delivered")], v);
    }
    if let Some(v) = failed {
        f.int(&[("result", "failed")], v);
    }

    let sent = take_prefixed(&mut c, "icmp_sent_");
    let mut f = doc.family(
        "natgw_icmp_errors_sent_total",
        Kind::Counter,
        "ICMP errors the controller sent, by type (port_unreachable for held SYNs, \
         admin_prohibited or host_unreachable for packets that got no mapping).",
    );
    for (kind, v) in &sent {
        f.int(&[("type", kind)], *v);
    }
    let fragments = take_prefixed(&mut c, "fragments_");
    let mut f = doc.family(
        "natgw_fragments_total",
        Kind::Counter,
        "Fragments that came before their first one, by fate: resent, expired, dropped.",
    );
    for (fate, v) in &fragments {
        f.int(&[("fate", fate)], *v);
    }
    let mut f = doc.family(
        "natgw_controller_events_total",
        Kind::Counter,
        "The controller's other counters by their natgw status names (icmp_rate_limited, \
         held_syns_expired, ports_freed_unheld, ...; see docs/counters.md).",
    );
    for (name, v) in &c {
        f.int(&[("counter", name)], *v);
    }
}

/// State replication to a standby (`ha_*` controller counters; none when it is not
/// configured, and then no family either).
fn ha_families(doc: &mut Exposition, c: &mut BTreeMap<String, u64>) {
    let Some(active) = take(c, "ha_active") else {
        return;
    };
    doc.family(
        "natgw_ha_role",
        Kind::Gauge,
        "This natgw's role in its active/standby pair: 1 for the role it has.",
    )
    .int(&[("role", "active")], active)
    .int(&[("role", "standby")], 1 - active.min(1));
    let connected = take(c, "ha_connected").unwrap_or(0);
    doc.family(
        "natgw_ha_connected",
        Kind::Gauge,
        "1 while the replication peer is connected and authenticated.",
    )
    .int(&[], connected);
    let mut f = doc.family(
        "natgw_ha_records_total",
        Kind::Counter,
        "Replication records: sent and acknowledged by the peer (active), received, \
         installed and rejected (standby).",
    );
    for (event, name) in [
        ("sent", "ha_records_sent"),
        ("acked", "ha_records_acked"),
        ("received", "ha_records_received"),
        ("installed", "ha_records_installed"),
        ("rejected", "ha_records_rejected"),
    ] {
        f.int(&[("event", event)], take(c, name).unwrap_or(0));
    }
    let rejected = take_prefixed(c, "ha_rejected_");
    let mut f = doc.family(
        "natgw_ha_rejected_total",
        Kind::Counter,
        "Replicated records the standby refused, by reason (internal_address, \
         external_address, external_port, clash, ...).",
    );
    for (reason, v) in &rejected {
        f.int(&[("reason", reason)], *v);
    }
    let mut f = doc.family(
        "natgw_ha_connections_total",
        Kind::Counter,
        "Replication connections: authenticated, ended on an error, refused (not from \
         the peer's address).",
    );
    for (result, name) in [
        ("authenticated", "ha_connects"),
        ("error", "ha_connection_errors"),
        ("refused", "ha_peers_refused"),
    ] {
        f.int(&[("result", result)], take(c, name).unwrap_or(0));
    }
    let mut f = doc.family(
        "natgw_ha_resyncs_total",
        Kind::Counter,
        "Full resyncs sent (active) or received (standby); reconciliations: passes \
         over the tables after lost mapping events.",
    );
    f.int(&[("kind", "resync")], take(c, "ha_resyncs").unwrap_or(0))
        .int(
            &[("kind", "reconciliation")],
            take(c, "ha_reconciliations").unwrap_or(0),
        );
    #[allow(clippy::cast_precision_loss)] // milliseconds and microseconds: exact enough
    {
        let lag = take(c, "ha_lag_ms").unwrap_or(0) as f64 / 1e3;
        let rtt = take(c, "ha_ack_rtt_us").unwrap_or(0) as f64 / 1e6;
        doc.family(
            "natgw_ha_lag_seconds",
            Kind::Gauge,
            "How long the oldest unacknowledged replication frame has waited (active).",
        )
        .real(&[], lag);
        doc.family(
            "natgw_ha_ack_rtt_seconds",
            Kind::Gauge,
            "From sending a replication frame to its acknowledgement, the last one (active).",
        )
        .real(&[], rtt);
    }
}

/// The STUN responder's counters.
#[allow(clippy::needless_pass_by_value)]
fn stun_families(doc: &mut Exposition, mut c: BTreeMap<String, u64>) {
    let mut f = doc.family(
        "natgw_stun_requests_total",
        Kind::Counter,
        "Datagrams the STUN responder on the external address received.",
    );
    if let Some(v) = take(&mut c, "received") {
        f.int(&[], v);
    }
    let responses: Vec<(&str, Option<u64>)> = [
        ("success", "success"),
        ("bad_request", "error_400_bad_request"),
        ("unknown_attribute", "error_420_unknown_attribute"),
    ]
    .into_iter()
    .map(|(label, name)| (label, take(&mut c, name)))
    .collect();
    let mut f = doc.family(
        "natgw_stun_responses_total",
        Kind::Counter,
        "STUN responses sent by result: success, or an error response (400, 420).",
    );
    for (result, v) in responses {
        if let Some(v) = v {
            f.int(&[("result", result)], v);
        }
    }
    let dropped = take_prefixed(&mut c, "dropped_");
    let mut f = doc.family(
        "natgw_stun_dropped_total",
        Kind::Counter,
        "STUN datagrams dropped without an answer, by reason.",
    );
    for (reason, v) in &dropped {
        f.int(&[("reason", reason)], *v);
    }
    let mut f = doc.family(
        "natgw_stun_send_failures_total",
        Kind::Counter,
        "STUN responses the socket would not take at once (dropped).",
    );
    if let Some(v) = take(&mut c, "send_failed") {
        f.int(&[], v);
    }
}

#[cfg(test)]
mod tests;
