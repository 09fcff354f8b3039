//! The daemon's explicit port mappings: the configuration's static forwards
//! (installed before the data path is marked ready), the PCP/NAT-PMP server on the
//! LAN sockets, the end of explicit mappings' lifetimes, and their move to a new
//! external address.
//!
//! How a change of the WAN's address reaches them: see `Daemon::wan_addresses_changed`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use log::{info, warn};

use crate::config::{Forward, ForwardProtocol, PcpUpstream, Settings};
use crate::datapath::addresses::AddressPlan;
use crate::datapath::deploy::DataPath;
use crate::datapath::dirs::RuntimeDirs;
use crate::datapath::maps::{NatMaps, PcpFilters};
use crate::datapath::netlink::AddressWatch;
use crate::datapath::system;
use crate::datapath::topology::Topology;
use crate::nat_table::events::MappingFilter;
use crate::nat_table::explicit::ExplicitEntry;
use crate::nat_table::explicit::{Defaults, ExplicitMappings};
use crate::nat_table::gc::Policy;
use crate::services::pcp::{LanAddress, PcpService};
use crate::services::pcp_upstream::{default_gateway, random_seed, OuterView, UpstreamLink, HOLD};
use crate::services::upnp::{Answer, LanInterface, PendingRequest, UpnpService};
use natgw_proto::pcp::engine::DropReason;
use natgw_proto::pcp::table::{MappingKey, MappingTable as _, Protocol, TableError};
use natgw_proto::upnp::soap::UpnpError;
use natgw_proto::upnp::{Device, Uuid};

/// What the daemon keeps for explicit mappings.
#[derive(Default)]
pub(super) struct PortMapping {
    explicit: Option<ExplicitMappings<PcpFilters>>,
    server: Option<PcpService>,
    /// The UPnP IGD server.
    upnp: Option<UpnpService>,
    /// UPnP answers waiting for the upstream PCP server's (double NAT): a client is
    /// told of success only once the port is reachable from the real outside.
    upnp_held: Vec<(Instant, Answer)>,
    watch: Option<AddressWatch>,
    /// What the explicit mappings file holds.
    written: Option<Vec<ExplicitEntry>>,
    /// The explicit records' generation when the file was last written: until it
    /// changes there is nothing new to write (a request that only read, such as one
    /// of a thousand GetGenericPortMappingEntry, costs no walk over the records).
    written_generation: Option<u64>,
}

/// Why the main loop woke up for port mapping.
pub(super) enum Wake {
    /// A datagram waits on PCP socket N.
    Request(usize),
    /// Announcements are due.
    Announce,
    /// A UPnP HTTP request waits for the engine.
    Upnp(PendingRequest),
    /// The UPnP engine's timer (a subscription ends).
    UpnpTimer,
    /// An IPv4 address of interface N was added or removed.
    Addresses(u32),
    /// The address notifications stopped.
    WatchEnded,
}

impl PortMapping {
    /// Which hosts may hold explicit mappings from now on.
    pub(super) fn set_hosts(&mut self, plan: &AddressPlan) {
        if let Some(explicit) = self.explicit.as_mut() {
            explicit.set_hosts(plan.clone());
        }
    }

    /// The PCP and NAT-PMP server's counters, named for `natgw status`; none when
    /// it is off.
    pub(super) fn counters(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = self
            .upnp
            .iter()
            .flat_map(UpnpService::counters)
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let Some(server) = self.server.as_ref() else {
            return out;
        };
        let (engine, replies) = server.stats();
        out.extend([
            ("pcp_requests".to_owned(), engine.requests),
            ("pcp_succeeded".to_owned(), engine.succeeded),
            ("pcp_refused".to_owned(), engine.refused),
            ("natpmp_requests".to_owned(), engine.natpmp_requests),
            ("natpmp_succeeded".to_owned(), engine.natpmp_succeeded),
            ("natpmp_refused".to_owned(), engine.natpmp_refused),
            ("pcp_unresolved".to_owned(), replies.unresolved),
            ("pcp_send_failed".to_owned(), replies.send_failed),
        ]);
        for reason in DropReason::ALL {
            out.insert(
                format!("pcp_dropped_{}", reason.name().replace('-', "_")),
                engine.dropped[reason.index()],
            );
        }
        out
    }

    /// Waits for the next thing to do. Cancel-safe: it only waits.
    pub(super) async fn wake(&mut self) -> Wake {
        let server = self.server.as_ref();
        let held = self.upnp_held.iter().map(|(deadline, _)| *deadline).min();
        let deadline = match (server.and_then(PcpService::next_timeout), held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let watch = self.watch.as_mut();
        let upnp_deadline = self.upnp.as_ref().and_then(UpnpService::next_timeout);
        let upnp = self.upnp.as_mut();
        let upnp_request = async {
            match upnp {
                Some(u) => match u.next_request().await {
                    Some(r) => Wake::Upnp(r),
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let upnp_timer = async {
            match upnp_deadline {
                Some(t) => {
                    tokio::time::sleep_until(t.into()).await;
                    Wake::UpnpTimer
                }
                None => std::future::pending().await,
            }
        };
        let request = async {
            match server {
                Some(s) => Wake::Request(s.readable().await),
                None => std::future::pending().await,
            }
        };
        let announce = async {
            match deadline {
                Some(t) => {
                    tokio::time::sleep_until(t.into()).await;
                    Wake::Announce
                }
                None => std::future::pending().await,
            }
        };
        let addresses = async {
            match watch {
                Some(w) => w.next().await.map_or(Wake::WatchEnded, Wake::Addresses),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            w = request => w,
            w = announce => w,
            w = addresses => w,
            w = upnp_request => w,
            w = upnp_timer => w,
        }
    }
}

/// Proxies mappings to the upstream PCP server `upstream` names (RFC 7648): the
/// WAN's default gateway for `auto`. Nothing is proxied when there is none, or its
/// socket cannot be made.
fn start_upstream(
    server: &mut PcpService,
    upstream: PcpUpstream,
    topology: &Topology,
    dirs: &RuntimeDirs,
    now: Instant,
) {
    let wan = &topology.wan.name;
    let target = match upstream {
        PcpUpstream::Off => {
            info!("pcp.upstream.off: mappings are not proxied upstream (pcp.upstream = \"off\")");
            return;
        }
        PcpUpstream::Server(a) => a,
        PcpUpstream::Auto => match default_gateway(wan) {
            Some(g) => SocketAddrV4::new(g, natgw_proto::pcp::wire::SERVER_PORT),
            None => {
                info!("pcp.upstream.none iface={wan}: no default gateway on the WAN; mappings are not proxied upstream");
                return;
            }
        },
    };
    let external = topology.external.addr();
    // The nonce seed outlives restarts, so the upstream keeps renewing the mappings
    // a restarted natgw adopts.
    let seed = match dirs.read_record::<UpstreamRecord>(UPSTREAM_FILE) {
        Ok(Some(r)) => Ok(r.seed),
        _ => random_seed().inspect(|seed| {
            if let Err(e) = dirs.write_record(UPSTREAM_FILE, &UpstreamRecord { seed: *seed }) {
                warn!("pcp.upstream.seed_unrecorded error=\"{e}\": after a restart the upstream refuses renewals until its mappings expire");
            }
        }),
    };
    let seed = match seed {
        Ok(s) => s,
        Err(e) => {
            warn!("pcp.upstream.no_seed error=\"{e}\": mappings are not proxied upstream");
            return;
        }
    };
    match UpstreamLink::open(target, wan, external, seed, now) {
        Ok(link) => {
            info!("pcp.upstream.discovering server={target} from={external} mode={upstream}");
            server.set_upstream(link);
        }
        Err(e) => warn!(
            "pcp.upstream.socket_failed server={target} error=\"{e}\": mappings are not proxied upstream"
        ),
    }
}

/// The protocol of a forward as the mapping table names it.
const fn forward_protocol(f: &Forward) -> Protocol {
    match f.protocol {
        ForwardProtocol::Udp => Protocol::Udp,
        ForwardProtocol::Tcp => Protocol::Tcp,
    }
}

/// Installs static forward `f`. A forward the maps already hold (a previous natgw's,
/// adopted) is taken over with its port.
fn install_forward(
    explicit: &mut ExplicitMappings<PcpFilters>,
    nat: &mut NatMaps,
    addresses: &AddressPlan,
    f: &Forward,
    now_ns: u64,
) -> Result<()> {
    if let Some(why) = addresses.refusal(*f.internal.ip()) {
        bail!("[[forward]] {f}: {why}; a forward leads to an internal host");
    }
    let external = explicit
        .add_static(
            nat,
            forward_protocol(f),
            f.external_port,
            f.internal,
            now_ns,
        )
        .map_err(|e| anyhow!("[[forward]] {f}: {}", static_refusal(e)))?;
    info!(
        "forward.installed proto={} ext={external} int={}",
        f.protocol, f.internal
    );
    Ok(())
}

impl PortMapping {
    /// Applies a reloaded configuration: the explicit mappings' defaults (port
    /// range, filtering, timeouts), the PCP policy, and the static forwards (those no
    /// longer configured end, new ones are installed; an unchanged one stays as it
    /// is). Problems are logged; what cannot be applied keeps its old value.
    pub(super) fn reload(
        &mut self,
        old: &Settings,
        new: &Settings,
        nat: &mut NatMaps,
        hosts: &AddressPlan,
    ) {
        let Some(explicit) = self.explicit.as_mut() else {
            return;
        };
        explicit.set_defaults(Defaults {
            port_range: new.port_range,
            filter_udp: new.filtering.udp.mode(),
            filter_tcp: new.filtering.tcp.mode(),
            policy: Policy::new(&new.timeouts, new.inbound_refresh),
            blocks: new.blocks.as_ref().map_or_else(Default::default, |b| {
                b.plan(new.external.len(), new.port_range)
            }),
        });
        if let Some(server) = self.server.as_mut() {
            if new.pcp.server != old.pcp.server {
                match server.set_config(new.pcp.server.clone(), Instant::now()) {
                    Ok(()) => info!("reload.pcp_policy applied"),
                    Err(e) => warn!("reload.pcp_policy_refused error=\"{e:#}\": the old one stays"),
                }
            }
        }
        if let Some(upnp) = self.upnp.as_mut() {
            if new.upnp != old.upnp || new.pcp.server != old.pcp.server {
                upnp.set_config(new.upnp.engine(), new.pcp.server.clone());
                info!(
                    "reload.upnp applied allow_other_hosts={} max_lease={}s \
                     requests_per_second={}",
                    new.upnp.allow_other_hosts, new.upnp.max_lease, new.upnp.requests_per_second
                );
            }
        }
        let now_ns = system::monotonic_ns();
        let wanted = |p: Protocol, internal: SocketAddrV4, port: u16| {
            new.forwards.iter().any(|f| {
                forward_protocol(f) == p && f.internal == internal && f.external_port == port
            })
        };
        for (protocol, internal, port) in explicit.statics() {
            if !wanted(protocol, internal, port) {
                if let Some(e) = explicit.remove_static(nat, protocol, internal, now_ns) {
                    info!(
                        "forward.removed proto={protocol} ext={} int={internal} outcome={}",
                        e.external,
                        e.outcome.name()
                    );
                }
            }
        }
        let installed = explicit.statics();
        for f in &new.forwards {
            let present = installed.iter().any(|(p, internal, port)| {
                *p == forward_protocol(f) && *internal == f.internal && *port == f.external_port
            });
            if !present {
                if let Err(e) = install_forward(explicit, nat, hosts, f, now_ns) {
                    warn!("reload.forward_failed error=\"{e:#}\"");
                }
            }
        }
    }
}

/// When the PCP epoch began, on `CLOCK_MONOTONIC` (ns): kept in the runtime
/// directory with the maps, so a natgw that adopts them goes on with the epoch.
#[derive(serde::Serialize, serde::Deserialize)]
struct EpochRecord {
    start_ns: u64,
}

/// The upstream client's nonce seed, kept in the runtime directory.
#[derive(serde::Serialize, serde::Deserialize)]
struct UpstreamRecord {
    seed: [u8; 12],
}

/// The upstream record's file in the runtime directory.
const UPSTREAM_FILE: &str = "pcp-upstream.json";

/// The epoch record's file in the runtime directory.
pub(super) const EPOCH_FILE: &str = "pcp-epoch.json";

/// Who the UPnP device is across restarts: control points remember its UUID, and
/// `BOOTID.UPNP.ORG` must grow with every start (UDA 1.1 §1.2.2).
#[derive(serde::Serialize, serde::Deserialize)]
struct UpnpDeviceRecord {
    uuid: String,
    boot_id: u32,
}

/// The UPnP device record's file in the runtime directory.
pub(super) const UPNP_DEVICE_FILE: &str = "upnp-device.json";

/// The speed of link `iface`, bits per second, as the kernel reports it
/// (`/sys/class/net/IFACE/speed`, in Mbit/s); 0 when it does not (veth, a link that
/// is down), at most `u32::MAX` (WANCommonInterfaceConfig's ui4).
fn link_bitrate(iface: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/speed"))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|mbit| *mbit > 0)
        .map_or(0, |mbit| {
            u32::try_from(mbit.saturating_mul(1_000_000)).unwrap_or(u32::MAX)
        })
}

/// The UPnP device: the recorded UUID with the next boot id, or a new one.
fn upnp_device(dirs: &RuntimeDirs) -> Result<Device> {
    let recorded = dirs
        .read_record::<UpnpDeviceRecord>(UPNP_DEVICE_FILE)
        .ok()
        .flatten()
        .and_then(|r| Some((r.uuid.parse::<Uuid>().ok()?, r.boot_id)));
    let (uuid, boot_id) = match recorded {
        Some((uuid, boot)) => (uuid, boot.wrapping_add(1).max(1)),
        None => {
            let bytes: [u8; 16] = natgw_proto::util::rng::random_bytes()
                .map_err(|e| anyhow!("reading a UUID from /dev/urandom: {e}"))?;
            (Uuid::from_random(bytes), 1)
        }
    };
    let record = UpnpDeviceRecord {
        uuid: uuid.to_string(),
        boot_id,
    };
    if let Err(e) = dirs.write_record(UPNP_DEVICE_FILE, &record) {
        warn!("upnp.device_unrecorded error=\"{e}\": the next start gets a new UUID");
    }
    Ok(Device::new(uuid, boot_id))
}

/// Why a static forward could not be installed, as the end of a sentence.
const fn static_refusal(e: TableError) -> &'static str {
    match e {
        TableError::CannotProvideExternal => {
            "the external port is taken (a socket of the gateway itself holds it?)"
        }
        TableError::NoResources => "the NAT table is full",
        TableError::NetworkFailure => "the NAT tables cannot be written",
        TableError::NotAuthorized
        | TableError::NonceMismatch
        | TableError::QuotaExceeded
        | TableError::ExcessiveRemotePeers => "refused by the mapping table",
    }
}

impl PortMapping {
    /// Installs the static forwards and starts the PCP server (unless disabled).
    /// Runs before `CONFIG` is marked ready, so forwards exist before any traffic.
    ///
    /// # Errors
    /// A forward that cannot be installed, or PCP sockets that cannot be bound.
    pub(super) fn start(
        settings: &Settings,
        topology: &Topology,
        dp: &mut DataPath,
        dirs: &RuntimeDirs,
    ) -> Result<Self> {
        let filters = PcpFilters::take(dp.ebpf_mut())?;
        let s = settings;
        let defaults = Defaults {
            port_range: s.port_range,
            filter_udp: s.filtering.udp.mode(),
            filter_tcp: s.filtering.tcp.mode(),
            policy: Policy::new(&s.timeouts, s.inbound_refresh)
                .with_hold_down(s.limits.port_hold_down),
            blocks: s.blocks.as_ref().map_or_else(Default::default, |b| {
                b.plan(topology.pool.len(), s.port_range)
            }),
        };
        let addresses = dp.addresses().clone();
        let mut explicit =
            ExplicitMappings::new(topology.pool.clone(), addresses.clone(), defaults, filters);
        let now_ns = system::monotonic_ns();
        let adopted = dp.adopted();
        let nat = &mut dp.maps_mut().nat;
        if adopted {
            match dirs.read_explicit::<ExplicitEntry>() {
                Ok(entries) => {
                    let n = explicit.restore(nat, &entries, Instant::now(), now_ns);
                    info!(
                        "explicit.restored mappings={n} recorded={}: PCP and NAT-PMP clients \
                         keep their mappings",
                        entries.len()
                    );
                }
                Err(e) => warn!(
                    "explicit.unreadable error=\"{e}\": PCP and NAT-PMP mappings of the \
                     previous natgw stay in the maps until they idle out, but their holders \
                     must map them again"
                ),
            }
        }
        for f in &settings.forwards {
            install_forward(&mut explicit, nat, &addresses, f, now_ns)?;
        }
        if adopted {
            match explicit.end_unrecorded(nat, now_ns) {
                Ok(ended) => {
                    for e in ended {
                        info!(
                            "explicit.unrecorded_ended proto={} int={} ext={} holder={} \
                             outcome={}: no record or forward holds it any more",
                            e.key.protocol,
                            e.key.internal_endpoint(),
                            e.external,
                            e.holder.name(),
                            e.outcome.name()
                        );
                    }
                }
                Err(e) => warn!(
                    "explicit.unrecorded_unread error=\"{e}\": explicit mappings of the \
                     previous natgw that nothing holds any more stay in the maps"
                ),
            }
        }

        let server = if settings.pcp.enabled {
            let lans: Vec<LanAddress> = topology
                .lans
                .iter()
                .flat_map(|l| {
                    l.ipv4.iter().map(|p| LanAddress {
                        iface: l.name.clone(),
                        prefix: *p,
                    })
                })
                .collect();
            let now = Instant::now();
            let mut server = PcpService::bind(settings.pcp.server.clone(), &lans, now)?;
            // The epoch runs as long as the mapping state: across restarts that kept
            // the maps, from when a natgw first made them (RFC 6887 §8.5).
            let epoch = adopted
                .then(|| dirs.read_record::<EpochRecord>(EPOCH_FILE).ok().flatten())
                .flatten();
            match epoch {
                Some(r) => {
                    let elapsed =
                        std::time::Duration::from_nanos(now_ns.saturating_sub(r.start_ns));
                    server.continue_epoch(elapsed, now);
                    info!("pcp.epoch_continued seconds={}", elapsed.as_secs());
                }
                None => {
                    if let Err(e) = dirs.write_record(EPOCH_FILE, &EpochRecord { start_ns: now_ns })
                    {
                        warn!("pcp.epoch_unrecorded error=\"{e}\": a restart will reset it");
                    }
                }
            }
            start_upstream(&mut server, settings.pcp.upstream, topology, dirs, now);
            let locals: Vec<String> = server.locals().map(|a| a.to_string()).collect();
            let c = server.config();
            info!(
                "pcp.listening on={} natpmp={} lifetimes={}-{}s max_mappings_per_host={} \
                 rules={}",
                if locals.is_empty() {
                    "-".to_owned()
                } else {
                    locals.join(",")
                },
                c.natpmp,
                c.min_lifetime,
                c.max_lifetime,
                c.max_mappings_per_host,
                c.rules
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            Some(server)
        } else {
            info!("pcp.disabled: no PCP or NAT-PMP server (--no-pcp or pcp.enabled = false)");
            None
        };
        let upnp = if settings.upnp.enabled {
            let lans: Vec<LanInterface> = topology
                .lans
                .iter()
                .map(|l| LanInterface {
                    name: l.name.clone(),
                    ifindex: l.ifindex,
                    prefixes: l.ipv4.clone(),
                })
                .collect();
            let mut device = upnp_device(dirs)?;
            device.wan_bitrate = link_bitrate(&topology.wan.name);
            device.http_port = settings.upnp.http_port;
            let uuid = device.uuid;
            let service = UpnpService::start(
                settings.upnp.engine(),
                settings.pcp.server.clone(),
                device,
                &lans,
                Instant::now(),
            )?;
            let locals: Vec<String> = service.locals().iter().map(ToString::to_string).collect();
            info!(
                "upnp.listening http={} ssdp={} uuid={uuid} allow_other_hosts={} max_lease={}s",
                if locals.is_empty() {
                    "-".to_owned()
                } else {
                    locals.join(",")
                },
                lans.iter()
                    .filter(|l| !l.prefixes.is_empty())
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                settings.upnp.allow_other_hosts,
                settings.upnp.max_lease
            );
            Some(service)
        } else {
            info!("upnp.disabled: no UPnP IGD server (--no-upnp or upnp.enabled = false)");
            None
        };
        let watch = match AddressWatch::open() {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(
                    "wan.watch_failed error=\"{e}\": a change of the WAN's address will not be \
                     noticed; restart natgw after one"
                );
                None
            }
        };
        Ok(Self {
            explicit: Some(explicit),
            server,
            upnp,
            upnp_held: Vec::new(),
            watch,
            written: None,
            written_generation: None,
        })
    }

    /// Answers the datagram waiting on PCP socket `index`.
    pub(super) fn receive(&mut self, index: usize, nat: &mut NatMaps) {
        let (Some(server), Some(explicit)) = (self.server.as_mut(), self.explicit.as_mut()) else {
            return;
        };
        let (now, now_ns) = (Instant::now(), system::monotonic_ns());
        let upstream = index == server.locals().count();
        server.receive(index, now, &mut explicit.table(nat, now, now_ns));
        self.release_upnp(nat, now);
        if upstream {
            // The upstream's address may be known or changed now (ExternalIPAddress
            // events to UPnP subscribers).
            self.upnp_refresh(nat);
        }
    }

    /// Sends the announcements that are due.
    pub(super) fn announce(&mut self, nat: &mut NatMaps) {
        let (Some(server), Some(explicit)) = (self.server.as_mut(), self.explicit.as_mut()) else {
            return;
        };
        let (now, now_ns) = (Instant::now(), system::monotonic_ns());
        server.on_timeout(now, &explicit.table(nat, now, now_ns));
        self.release_upnp(nat, now);
    }

    /// Answers a UPnP request with the shared table. Behind an upstream PCP server,
    /// an answer that made a mapping waits (at most [`HOLD`]) for the upstream's.
    pub(super) fn upnp_request(&mut self, request: PendingRequest, nat: &mut NatMaps) {
        let (Some(upnp), Some(explicit)) = (self.upnp.as_mut(), self.explicit.as_mut()) else {
            return;
        };
        let (now, now_ns) = (Instant::now(), system::monotonic_ns());
        let mut table = explicit.table(nat, now, now_ns);
        let upstream = self.server.as_ref().and_then(PcpService::upstream);
        let answer = upnp.handle(request, now, &mut OuterView::new(&mut table, upstream, now));
        if let Some(server) = self.server.as_mut() {
            server.sync_upstream(now, &table);
        }
        if let Some(answer) = answer {
            self.upnp_held.push((now + HOLD, answer));
            self.release_upnp(nat, now);
        }
    }

    /// Sends the held UPnP answers whose upstream mappings were answered (or that
    /// waited long enough, or wait for nothing). UPnP has no way to tell a control
    /// point that the port it got differs further out: AddPortMapping answers only
    /// success, and the port is the entry's key. So when the upstream grants another
    /// port, the mapping is undone and the client refused, 718 ConflictInMappingEntry
    /// (AddPortMapping) or 728 NoPortMapsAvailable (AddAnyPortMapping), rather than
    /// told of a port nobody outside can reach. PCP and NAT-PMP carry the outer port.
    fn release_upnp(&mut self, nat: &mut NatMaps, now: Instant) {
        if self.upnp_held.is_empty() {
            return;
        }
        let upstream = self.server.as_ref().and_then(PcpService::upstream);
        let waiting = |a: &Answer| {
            upstream.is_some_and(|up| {
                a.mapped
                    .iter()
                    .any(|m| up.awaiting(&(m.protocol, m.external.port())))
            })
        };
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.upnp_held)
            .into_iter()
            .partition(|(deadline, a)| *deadline <= now || !waiting(a));
        self.upnp_held = keep;
        let mut undone = false;
        for (_, mut answer) in due {
            let moved = upstream.and_then(|up| {
                answer.mapped.iter().find_map(|m| {
                    let outer = up.external(&(m.protocol, m.external.port()), now)?;
                    (outer.port() != m.external.port()).then_some((m.clone(), outer))
                })
            });
            if let (Some((m, outer)), Some(upnp), Some(explicit)) =
                (moved, self.upnp.as_ref(), self.explicit.as_mut())
            {
                warn!(
                    "upnp.upstream_port_differs client={} proto={} int={} ext={} outer={outer}: \
                     mapping undone, the client is refused",
                    answer.client, m.protocol, m.internal, m.external
                );
                let key = MappingKey {
                    internal: *m.internal.ip(),
                    protocol: m.protocol,
                    internal_port: m.internal.port(),
                };
                explicit
                    .table(nat, now, system::monotonic_ns())
                    .remove(&key);
                answer.bytes = upnp.fault_bytes(if m.any {
                    UpnpError::NoPortMapsAvailable
                } else {
                    UpnpError::ConflictInMappingEntry
                });
                undone = true;
            }
            answer.send();
        }
        if undone {
            if let (Some(server), Some(explicit)) = (self.server.as_mut(), self.explicit.as_mut()) {
                let now_ns = system::monotonic_ns();
                server.sync_upstream(now, &explicit.table(nat, now, now_ns));
            }
            self.upnp_refresh(nat);
        }
    }

    /// Lets the UPnP engine compare what its subscribers last heard with the table
    /// (and end subscriptions that ran out).
    pub(super) fn upnp_refresh(&mut self, nat: &mut NatMaps) {
        let (Some(upnp), Some(explicit)) = (self.upnp.as_mut(), self.explicit.as_mut()) else {
            return;
        };
        let (now, now_ns) = (Instant::now(), system::monotonic_ns());
        let mut table = explicit.table(nat, now, now_ns);
        let upstream = self.server.as_ref().and_then(PcpService::upstream);
        upnp.refresh(now, &OuterView::new(&mut table, upstream, now));
    }

    /// The explicit mappings, for replication to install the active's in.
    pub(super) fn explicit_mut(&mut self) -> Option<&mut ExplicitMappings<PcpFilters>> {
        self.explicit.as_mut()
    }

    /// The explicit mappings as replication sends them.
    pub(super) fn explicit_entries(&self) -> Vec<ExplicitEntry> {
        self.explicit
            .as_ref()
            .map_or_else(Vec::new, ExplicitMappings::entries)
    }

    /// Stops the UPnP server (its `ssdp:byebye`s go out).
    pub(super) fn stop(&mut self) {
        if let Some(mut upnp) = self.upnp.take() {
            upnp.stop();
        }
    }

    /// Stops following address notifications (they ended).
    pub(super) fn unwatch(&mut self) {
        self.watch = None;
    }

    /// `natgw flush` of explicit mappings (see [`ExplicitMappings::flush`]); the
    /// UPnP subscribers and the upstream PCP server are told.
    pub(super) fn flush(
        &mut self,
        nat: &mut NatMaps,
        filter: &MappingFilter,
        include_static: bool,
        now_ns: u64,
    ) -> usize {
        let Some(explicit) = self.explicit.as_mut() else {
            return 0;
        };
        let deleted = explicit.flush(nat, filter, include_static, now_ns);
        if deleted > 0 {
            self.upnp_refresh(nat);
            if let (Some(server), Some(explicit)) = (self.server.as_mut(), self.explicit.as_mut()) {
                let now = Instant::now();
                server.sync_upstream(now, &explicit.table(nat, now, now_ns));
            }
        }
        deleted
    }

    /// Ends the explicit mappings whose lifetime is over.
    pub(super) fn expire(&mut self, nat: &mut NatMaps) {
        let Some(explicit) = self.explicit.as_mut() else {
            return;
        };
        let expired = explicit.expire(nat, Instant::now(), system::monotonic_ns());
        for e in &expired {
            info!(
                "explicit.expired proto={} int={} ext={} holder={} outcome={}",
                e.key.protocol,
                e.key.internal_endpoint(),
                e.external,
                e.holder.name(),
                e.outcome.name()
            );
        }
        if !expired.is_empty() {
            self.upnp_refresh(nat);
            if let (Some(server), Some(explicit)) = (self.server.as_mut(), self.explicit.as_mut()) {
                let (now, now_ns) = (Instant::now(), system::monotonic_ns());
                server.sync_upstream(now, &explicit.table(nat, now, now_ns));
            }
        }
    }

    /// Rewrites the explicit mappings file for `natgw mappings` when it changed.
    pub(super) fn write_file(&mut self, dirs: &RuntimeDirs) {
        let Some(explicit) = self.explicit.as_ref() else {
            return;
        };
        let generation = explicit.generation();
        if self.written_generation == Some(generation) {
            return;
        }
        let entries = explicit.entries();
        if self.written.as_ref() == Some(&entries) {
            self.written_generation = Some(generation);
            return;
        }
        match dirs.write_explicit(&entries) {
            Ok(()) => {
                self.written = Some(entries);
                self.written_generation = Some(generation);
            }
            Err(e) => warn!("explicit.write_failed error=\"{e}\""),
        }
    }

    /// Moves the explicit mappings to the external address pool `pool` (empty: the
    /// WAN has no address left, and requests fail until one comes).
    pub(super) fn set_pool(&mut self, nat: &mut NatMaps, pool: Vec<Ipv4Addr>, wan: &str) {
        let Some(explicit) = self.explicit.as_mut() else {
            return;
        };
        let now_ns = system::monotonic_ns();
        if pool.is_empty() {
            if !explicit.pool().is_empty() {
                warn!(
                    "wan.address_lost iface={wan}: no IPv4 address left; PCP and NAT-PMP \
                     requests fail with NETWORK_FAILURE until one is added"
                );
                explicit.set_pool(nat, Vec::new(), now_ns);
                self.upnp_refresh(nat);
            }
            return;
        }
        let upstream = self.server.as_mut().and_then(PcpService::upstream_mut);
        if let Some(up) = upstream.filter(|up| !pool.contains(&up.local_address())) {
            if let Err(e) = up.set_external(pool[0], Instant::now()) {
                warn!(
                    "pcp.upstream.socket_failed server={} error=\"{e}\": upstream mappings \
                     stay on the old address",
                    up.server()
                );
            }
        }
        for m in explicit.set_pool(nat, pool, now_ns) {
            info!(
                "explicit.moved proto={} int={} from={} to={}",
                m.key.protocol,
                m.key.internal_endpoint(),
                m.from,
                m.to.map_or_else(|| "removed".to_owned(), |t| t.to_string())
            );
        }
        if let (Some(server), Some(explicit)) = (self.server.as_mut(), self.explicit.as_mut()) {
            let (now, now_ns) = (Instant::now(), system::monotonic_ns());
            server.sync_upstream(now, &explicit.table(nat, now, now_ns));
        }
        self.upnp_refresh(nat);
    }

    /// Tells PCP and NAT-PMP clients that the external address changed.
    pub(super) fn external_address_changed(&mut self) {
        if let Some(server) = self.server.as_mut() {
            server.external_address_changed(Instant::now());
        }
    }
}
