//! `natgw run`: check the host, resolve the interfaces, deploy the data path
//! ([`DataPath`]), start the services beside it, then run the garbage collector,
//! expire held SYNs and explicit mappings, follow address and interface changes and
//! keep the state file current until SIGINT/SIGTERM, and finally undo everything it
//! did.
//!
//! Interfaces that vanish at run time: a LAN interface is dropped from `IFACES` and
//! `LAN_NETS` with an error logged, and natgw keeps translating for the remaining
//! ones; losing the WAN interface or the last LAN interface shuts natgw down cleanly
//! with a non-zero exit status. A vanished interface is not re-attached if it comes
//! back; restart natgw for that.
//!
//! The parts: [`state`] (the state file), `port_mapping` (static forwards, PCP and
//! NAT-PMP, explicit mappings), `stun_responder`, [`icmp`] (the ICMP errors the data
//! path asks for), [`fragments`] (fragments that came before their first one),
//! [`episodes`] (logging drop episodes), [`metrics`] (the Prometheus endpoint),
//! [`notify`] (readiness, reload and stop notifications to systemd), [`replication`]
//! (NAT state replication to a standby), [`role`] (active or standby) and
//! [`keepalived`] (the role keepalived gives natgw, `--ha`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use log::{debug, error, info, warn};
use natgw_common::addr_be;
use natgw_common::config::{CONFIG_F_INBOUND_REFRESH, CONFIG_F_MAPPING_EVENTS, CONFIG_F_READY};
use natgw_common::limits::interval_ns;
use natgw_common::{Config, NS_PER_SEC};
use tokio::task::JoinHandle;

use self::episodes::{Episodes, Note};
use self::icmp::IcmpSender;
use self::port_mapping::{PortMapping, Wake};
use self::state::{IfaceState, Role, StateFile, STATE_VERSION};
use self::stun_responder::StunResponder;
use crate::config::{Settings, UnsolicitedSyn};
use crate::datapath::deploy::{lans_forwarding_off, restore_sysctls, DataPath, IfaceEvent};
use crate::datapath::dirs::{InstanceLock, RuntimeDirs};
use crate::datapath::layout::{self, Layout, LayoutRecord};
use crate::datapath::loader;
use crate::datapath::maps::{
    take_mapping_events, CounterMap, FragmentMaps, HostRules, MapSource, NatTables as _,
};
use crate::datapath::netlink::Rtnl;
use crate::datapath::system;
use crate::datapath::topology::Topology;
use crate::nat_table::events::{flush_traffic, MappingFilter};
use crate::nat_table::gc::{self, held_syns, Policy, Sweeper};
use crate::services::Shutdown;

pub mod alloc_log;
pub mod control;
pub mod episodes;
pub mod fragments;
pub mod icmp;
pub mod keepalived;
pub mod metrics;
pub mod notify;
mod port_mapping;
pub mod replication;
pub mod role;
pub mod state;
mod stun_responder;

/// `natgw run` with `settings`: deploys the data path (or adopts the one a previous
/// natgw left running), serves until SIGINT or SIGTERM (or the loss of the WAN or of
/// every LAN interface), and leaves the data path running for the next natgw.
///
/// # Errors
/// When the host, the interfaces or the data path cannot be set up, or natgw stops
/// on its own.
pub async fn run(settings: Settings, reloader: Reloader) -> Result<()> {
    if loader::EBPF_OBJECT.is_empty() {
        bail!(loader::LoadError::NoObject);
    }
    system::check_privileges()?;
    let started = std::time::Instant::now();
    // Signals are caught from here on, so one arriving during setup still leads to an
    // orderly exit.
    let mut shutdown = Shutdown::install()?;
    // SIGHUP would end the process if not caught: caught from the start.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;

    if system::ensure_bpffs()? {
        info!("bpffs.mounted path={}", system::BPFFS);
        if system::private_mount_namespace() {
            warn!(
                "bpffs.private path={}: natgw runs in a mount namespace of its own (as under \
                 `ip netns exec`), whose bpffs goes away with it; the data path then cannot \
                 outlive natgw. Run it with `nsenter --net=...` or mount bpffs on {} first",
                system::BPFFS,
                system::BPFFS
            );
        }
    }
    if let Err(e) = system::raise_memlock_limit() {
        debug!("memlock.unchanged error={e}");
    }
    let dirs = RuntimeDirs::for_current_netns()?;
    let lock = dirs.lock()?;
    let previous = Previous::find(&dirs)?;

    let rtnl = Rtnl::connect()?;
    let topology = Topology::resolve(&rtnl, &settings).await?;
    // Refused before anything is touched.
    metrics::check_listen(&settings.metrics, &topology)?;

    let ours = Layout::of_object(
        loader::EBPF_OBJECT,
        settings.max_mappings,
        settings.limits.held_ports_capacity(settings.max_mappings),
    )?;
    let adopt = match &previous.record {
        Some(record) => {
            let pinned = Layout::of_pins(&dirs, record.layout.version)?;
            let adoption = layout::check(&ours, record, &pinned, &dirs)?;
            for (map, kept, wanted) in &adoption.capacity_kept {
                warn!(
                    "maps.capacity_kept map={map} entries={kept} configured={wanted}: the \
                     adopted table keeps its size; `natgw stop --flush` and a new start \
                     apply the new one (every mapping is lost)"
                );
            }
            true
        }
        None => false,
    };
    if adopt {
        // A LAN interface the adopted data path does not serve yet has no source
        // checks and no guard entry until it is attached: no forwarding until then.
        let served: Vec<&str> = previous.state.as_ref().map_or_else(Vec::new, |s| {
            s.interfaces.iter().map(|i| i.name.as_str()).collect()
        });
        let new_lans: Vec<_> = topology
            .lans
            .iter()
            .filter(|l| !served.contains(&l.name.as_str()))
            .cloned()
            .collect();
        let were_on = lans_forwarding_off(&new_lans)?;
        if !were_on.is_empty() {
            info!(
                "start.forwarding_off ifaces={}: new LAN interfaces, until they are attached",
                were_on.join(",")
            );
        }
        info!(
            "datapath.adopting pins={} made_by={}: existing mappings are kept and the \
             programs are replaced in place",
            dirs.pin_dir.display(),
            previous
                .record
                .as_ref()
                .map_or("?", |r| r.natgw_version.as_str())
        );
    } else {
        // Fail closed while starting: nothing the LAN sends is routed until the leak
        // guard is attached and the data path is ready.
        let were_on = lans_forwarding_off(&topology.lans)?;
        if !were_on.is_empty() {
            info!(
                "start.forwarding_off ifaces={}: until the data path is ready",
                were_on.join(",")
            );
        }
    }
    dirs.create_pin_dir()?;
    let (ebpf, log_task) = match loader::load(
        settings.max_mappings,
        settings.limits.held_ports_capacity(settings.max_mappings),
        &dirs.pin_dir,
    ) {
        Ok(loaded) => loaded,
        Err(e) => {
            if !adopt {
                let _ = dirs.remove_pins();
            }
            return Err(e.into());
        }
    };
    if !adopt {
        let record = LayoutRecord {
            layout: ours,
            natgw_version: env!("CARGO_PKG_VERSION").to_owned(),
            netns_cookie: previous.cookie,
        };
        if let Err(e) = dirs.write_layout(&record) {
            let _ = dirs.remove_pins();
            return Err(e.into());
        }
    }
    let mut services = Services {
        icmp: Arc::new(IcmpSender::open(
            system::monotonic_ns(),
            settings.no_mapping_icmp,
        )),
        fragments: Arc::default(),
        stun: None,
        port_mapping: PortMapping::default(),
        metrics: None,
        tasks: log_task.into_iter().collect(),
        control: Arc::default(),
        alloc_log: None,
        event_lost_seen: None,
    };
    let mut datapath = match DataPath::new(ebpf, adopt) {
        Ok(dp) => dp,
        Err(e) => {
            if !adopt {
                let _ = dirs.remove_pins();
                let _ = dirs.remove_layout();
            }
            services.stop();
            return Err(e);
        }
    };
    datapath
        .maps_mut()
        .nat
        .hosts
        .set_rules(host_rules(&settings));
    let ha = settings.ha.clone();
    let mut daemon = Daemon {
        settings,
        dirs,
        _lock: lock,
        rtnl,
        topology,
        datapath,
        services,
        report: Report::default(),
        reloader,
        orders: None,
        keepalived: None,
        ha: None,
        role: tokio::sync::watch::channel(if ha.keepalived {
            role::Role::Standby
        } else {
            replication::initial_role(&ha)
        })
        .0,
    };
    if let Err(e) = daemon.deploy(previous.clsact(), adopt) {
        if adopt {
            // The data path is still the previous natgw's, or partly replaced by this
            // one's programs on the same maps: either translates. Leave it.
            daemon.stop();
        } else {
            daemon.teardown().await;
        }
        return Err(e);
    }
    info!(
        "natgw.start_time seconds={:.2} adopted={adopt}",
        started.elapsed().as_secs_f64()
    );
    // Only now: the programs are attached, forwarding is on, the services answer
    // and the state file `natgw status` reads is written.
    notify::ready(&daemon.status_line());

    let outcome = daemon.serve(&mut shutdown, &mut hangup).await;
    notify::stopping(match &outcome {
        Ok(()) => "stopping; the data path keeps translating",
        Err(_) => "stopping on an error; the data path keeps translating",
    });
    if let Some(log) = daemon.services.alloc_log.take() {
        log.finish().await;
    }
    daemon.stop();
    outcome
}

/// What `natgw stop` did.
#[derive(Debug, Default)]
pub struct StopReport {
    /// The controller it stopped.
    pub stopped_pid: Option<u32>,
    /// Pins of a data path are left (without --flush).
    pub data_path_left: bool,
    /// What --flush removed.
    pub flushed: Option<Flushed>,
}

/// What `natgw stop --flush` removed.
#[derive(Debug, Default)]
pub struct Flushed {
    /// Links unpinned (programs detached).
    pub links: usize,
    /// Map pins removed.
    pub maps: usize,
    /// LAN interfaces whose forwarding was turned off.
    pub forwarding_off: Vec<String>,
}

/// `natgw stop`: SIGTERM to the natgw running in this network namespace, then wait
/// up to `timeout` for it to exit; with `flush`, then remove the data path it left
/// (see [`flush`]).
///
/// # Errors
/// Not root, a controller that does not exit in time, or a flush that fails.
pub async fn stop(flush_too: bool, timeout: Duration) -> Result<StopReport> {
    system::check_privileges()?;
    let dirs = RuntimeDirs::for_current_netns()?;
    let mut report = StopReport::default();
    if let Ok(state) = dirs.read_state::<StateFile>() {
        if system::process_alive_in_netns(state.pid, dirs.netns_inode) {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(state.pid).unwrap_or(i32::MAX));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
                .with_context(|| format!("sending SIGTERM to natgw (pid {})", state.pid))?;
            let deadline = std::time::Instant::now() + timeout;
            while system::process_alive_in_netns(state.pid, dirs.netns_inode) {
                if std::time::Instant::now() >= deadline {
                    bail!(
                        "natgw (pid {}) did not exit within {}s of SIGTERM",
                        state.pid,
                        timeout.as_secs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            report.stopped_pid = Some(state.pid);
        }
    }
    if flush_too {
        // Held until done: no natgw starts meanwhile.
        let _lock = dirs.lock()?;
        report.flushed = Some(flush(&dirs).await?);
    } else {
        report.data_path_left = !dirs.existing_pins().is_empty();
    }
    Ok(report)
}

/// Removes the data path a natgw left in this namespace, in the order that fails
/// closed: forwarding off on its LAN interfaces first (nothing they send is routed
/// untranslated once the programs are gone), then the links unpinned (programs
/// detached), the clsact qdisc it added removed, sysctls restored, the maps and the
/// records removed. Call with the lock held.
///
/// # Errors
/// When forwarding cannot be turned off (nothing else is removed then) or the pins
/// cannot be removed.
pub async fn flush(dirs: &RuntimeDirs) -> Result<Flushed> {
    let state = dirs.read_state::<StateFile>().ok();
    let mut flushed = Flushed::default();
    if let Some(state) = &state {
        for i in state.interfaces.iter().filter(|i| i.role == Role::Lan) {
            let key = system::forwarding_key(&i.name);
            match system::write_sysctl(&key, "0") {
                Ok(()) => flushed.forwarding_off.push(i.name.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "turning off forwarding on {} (nothing removed: without the data path \
                         it would forward untranslated)",
                        i.name
                    )))
                }
            }
        }
    }
    let pins = dirs.existing_pins();
    for name in pins
        .iter()
        .filter(|n| n.starts_with(loader::LINK_PIN_PREFIX))
    {
        std::fs::remove_file(dirs.pin_path(name))
            .with_context(|| format!("removing {}", dirs.pin_path(name).display()))?;
        flushed.links += 1;
    }
    if let Some(state) = state.as_ref().filter(|s| s.clsact_created) {
        if let Some(wan) = state.interfaces.iter().find(|i| i.role == Role::Wan) {
            let rtnl = Rtnl::connect()?;
            if let Err(e) = rtnl.delete_clsact(wan.ifindex, &wan.name).await {
                warn!("flush.clsact_failed iface={} error=\"{e}\"", wan.name);
            }
        }
    }
    restore_sysctls(dirs, "flush.sysctl_restored");
    flushed.maps = pins
        .iter()
        .filter(|n| !n.starts_with(loader::LINK_PIN_PREFIX))
        .count();
    dirs.remove_pins().context("removing the pinned maps")?;
    dirs.remove_layout()?;
    dirs.remove_record(port_mapping::EPOCH_FILE)?;
    dirs.remove_state()?;
    info!(
        "natgw.flushed links={} maps={} forwarding_off={}",
        flushed.links,
        flushed.maps,
        flushed.forwarding_off.join(",")
    );
    Ok(flushed)
}

/// What a previous natgw in this namespace left: its state file (whose owner is
/// dead) and the layout record of pinned maps to adopt.
struct Previous {
    state: Option<StateFile>,
    /// The layout record of pins this namespace's natgw made (`None`: nothing to
    /// adopt; pins of a namespace that no longer exists have been removed).
    record: Option<LayoutRecord>,
    /// This namespace's cookie.
    cookie: u64,
}

impl Previous {
    /// Looks at what the runtime directories hold. Called with the lock held, so
    /// nothing here belongs to a live natgw.
    fn find(dirs: &RuntimeDirs) -> Result<Self> {
        let state = dirs.read_state::<StateFile>().ok();
        if let Some(s) = &state {
            if s.pid != std::process::id()
                && system::process_alive_in_netns(s.pid, dirs.netns_inode)
            {
                bail!(crate::datapath::dirs::StateError::AlreadyRunning { pid: Some(s.pid) });
            }
        }
        let cookie = layout::netns_cookie().context("reading the network namespace's cookie")?;
        let pins = dirs.existing_pins();
        let record = match dirs.read_layout() {
            Some(r) if r.netns_cookie == cookie && !pins.is_empty() => Some(r),
            _ if pins.is_empty() => None,
            other => {
                warn!(
                    "stale.removed pins={} dir={}: {}",
                    pins.len(),
                    dirs.pin_dir.display(),
                    if other.is_some() {
                        "left by a network namespace that no longer exists (its inode was \
                         reused)"
                    } else {
                        "no layout record: left by a natgw that died while starting"
                    }
                );
                restore_sysctls(dirs, "stale.sysctl_restored");
                dirs.remove_pins().context("removing stale pins")?;
                dirs.remove_layout()?;
                dirs.remove_record(port_mapping::EPOCH_FILE)?;
                dirs.remove_state()?;
                None
            }
        };
        Ok(Self {
            state: if record.is_some() { state } else { None },
            record,
            cookie,
        })
    }

    /// The WAN ifindex whose clsact qdisc the previous natgw added, if any.
    fn clsact(&self) -> Option<u32> {
        self.state
            .as_ref()
            .filter(|s| s.clsact_created)
            .and_then(|s| {
                s.interfaces
                    .iter()
                    .find(|i| i.role == Role::Wan)
                    .map(|i| i.ifindex)
            })
    }
}

/// The controller's work beside the data path.
struct Services {
    /// Sends the ICMP errors of held SYNs and of `EVENTS`.
    icmp: Arc<IcmpSender>,
    /// Counters of the fragment resender.
    fragments: Arc<fragments::Counters>,
    /// The STUN responder on the external addresses.
    stun: Option<StunResponder>,
    /// Static forwards, the PCP/NAT-PMP server and the explicit mappings they make.
    port_mapping: PortMapping,
    /// The Prometheus endpoint, when configured.
    metrics: Option<metrics::Endpoint>,
    /// Background tasks: the eBPF log reader, the `EVENTS` reader, the fragment
    /// resender, the `MAPPING_EVENTS` reader, the control socket.
    tasks: Vec<JoinHandle<()>>,
    /// Counters of the control socket.
    control: Arc<control::Counters>,
    /// The allocation log (`--log-allocations`), when configured.
    alloc_log: Option<alloc_log::AllocLog>,
    /// The data path's `event_lost` counter as last read (for the allocation log).
    event_lost_seen: Option<u64>,
}

impl Services {
    fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(stun) = self.stun.take() {
            stun.stop();
        }
        if let Some(mut metrics) = self.metrics.take() {
            metrics.stop();
        }
        self.port_mapping.stop();
        if let Some(log) = self.alloc_log.take() {
            log.stop();
        }
    }
}

/// What the daemon last told the operator.
#[derive(Default)]
struct Report {
    /// The state file as last written.
    state: Option<StateFile>,
    /// The controller counters it holds.
    counters: BTreeMap<String, u64>,
    /// Data-path drop episodes in progress.
    episodes: Episodes,
}

/// Reads the configuration again (file and flags) for SIGHUP.
pub type Reloader = Box<dyn Fn() -> Result<Settings> + Send>;

/// How often idle hosts' records are looked for (each look reads the whole of
/// `HOST_STATE`).
const PRUNE_INTERVAL_NS: u64 = 10 * NS_PER_SEC;

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Daemon {
    settings: Settings,
    reloader: Reloader,
    dirs: RuntimeDirs,
    _lock: InstanceLock,
    rtnl: Rtnl,
    topology: Topology,
    datapath: DataPath,
    services: Services,
    report: Report,
    /// What the control socket asks (flushes, monitors coming and going).
    orders: Option<tokio::sync::mpsc::Receiver<control::Order>>,
    /// What keepalived reported (`--ha`, `natgw ha-state`).
    keepalived: Option<keepalived::Tracker>,
    /// State replication to a standby (`[ha]`), when configured.
    ha: Option<replication::Replication>,
    /// The role in an active/standby pair (`--ha-role`, `natgw ha-role`).
    role: tokio::sync::watch::Sender<role::Role>,
}

/// Why the daemon stops on its own.
enum Fatal {
    WanGone(String),
    NoLanLeft,
}

impl Daemon {
    /// Attaches the data path (replacing the programs of an `adopted` one in place),
    /// starts the services, marks the data path ready, and turns on forwarding.
    fn deploy(&mut self, stale_clsact: Option<u32>, adopted: bool) -> Result<()> {
        let dp = &mut self.datapath;
        if let Some(ring) = dp.maps_mut().events.take() {
            let lan_addresses = self
                .topology
                .lans
                .iter()
                .filter_map(|l| l.ipv4.first().map(|p| (l.ifindex, p.addr())))
                .collect();
            self.services.tasks.extend(icmp::spawn_event_reader(
                ring,
                Arc::clone(&self.services.icmp),
                lan_addresses,
            ));
        }
        match take_mapping_events(dp.ebpf_mut()) {
            Ok(ring) => self.services.tasks.push(control::spawn_ring_reader(ring)),
            Err(e) => warn!(
                "mapping_events.unavailable error=\"{e}\": `natgw monitor` shows no mapping the \
                 data path creates"
            ),
        }
        let (orders, received) = tokio::sync::mpsc::channel(8);
        self.orders = Some(received);
        self.services.tasks.push(control::spawn(
            &self.dirs.state_dir,
            orders,
            Arc::clone(&self.services.control),
        )?);
        if self.settings.ha.keepalived {
            // After the socket is bound: a state reported from now on arrives there.
            let track = keepalived::read_track(&self.dirs);
            let tracker = keepalived::Tracker::new(track.as_ref(), &self.role);
            info!(
                "ha.role role={} keepalived={} vip_present={}",
                keepalived::role_name(*self.role.borrow()),
                track.map_or_else(|| "-".to_owned(), |t| t.state.to_string()),
                self.topology.pool_present()
            );
            self.keepalived = Some(tracker);
        }
        if self.settings.ha.enabled() {
            // Subscribed to the mapping events before CONFIG is written, as the
            // allocation log below.
            self.ha = Some(replication::Replication::start(
                &self.settings.ha,
                self.role.subscribe(),
            )?);
        }
        if let Some(target) = &self.settings.log_allocations {
            // A subscriber of the mapping events before the data path is enabled:
            // CONFIG_F_MAPPING_EVENTS stays set while natgw runs.
            let existing = dp
                .maps()
                .nat
                .fwd_entries()
                .context("reading NAT_FWD for the allocation log")?;
            let blocks = self
                .settings
                .blocks
                .as_ref()
                .map(|b| b.owned_blocks(&self.settings.external, self.settings.port_range));
            self.services.alloc_log = Some(alloc_log::AllocLog::start(target, &existing, blocks)?);
            self.services.event_lost_seen = dp.maps().counters().ok().and_then(|c| {
                c.iter()
                    .find(|(c, _)| *c == natgw_common::Counter::EventLost)
                    .map(|(_, v)| *v)
            });
        }
        let stash = FragmentMaps::take(dp.ebpf_mut())?;
        self.services.tasks.push(fragments::spawn(
            stash,
            Arc::clone(&self.services.fragments),
        ));

        dp.attach(
            &self.topology,
            self.settings.xdp_mode,
            stale_clsact,
            &self.dirs,
        )?;
        dp.write_pool(&self.topology.pool)
            .context("filling the external address pool (EXT_ADDRS, EXT_SET)")?;
        // Before the forwards: a static forward of a STUN port then fails to claim it.
        self.services.stun = StunResponder::start(self.settings.stun, &self.topology.pool)?;
        self.services.port_mapping =
            PortMapping::start(&self.settings, &self.topology, dp, &self.dirs)?;
        self.services.port_mapping.write_file(&self.dirs);
        let config = self.data_path_config();
        self.datapath.enable(&config).context("writing CONFIG")?;
        self.datapath
            .forward_lans()
            .context("turning on forwarding on the gateway's interfaces")?;
        if adopted {
            let mappings = self.datapath.mapping_count();
            info!("datapath.adopted mappings={mappings}");
        }

        let state = self.build_state()?;
        self.dirs.write_state(&state)?;
        self.start_metrics(&state)?;
        self.report.counters = state.controller_counters.clone();
        self.report.state = Some(state);
        self.log_started();
        Ok(())
    }

    /// Starts the Prometheus endpoint when an address is configured (checked before
    /// the data path was touched, see [`metrics::check_listen`]).
    fn start_metrics(&mut self, state: &StateFile) -> Result<()> {
        let Some(listen) = self.settings.metrics.listen else {
            return Ok(());
        };
        let device = metrics::check_listen(&self.settings.metrics, &self.topology)?;
        let counters = CounterMap::open(MapSource {
            dirs: &self.dirs,
            ids: &state.map_ids,
        })
        .context("opening COUNTERS for the metrics endpoint")?;
        let mut published = metrics::Published {
            started_unix: state.started_unix,
            max_mappings: self
                .datapath
                .maps()
                .max_mappings()
                .unwrap_or(self.settings.max_mappings),
            ..metrics::Published::default()
        };
        self.publish_counters(&mut published, &state.controller_counters);
        self.services.metrics = Some(metrics::Endpoint::start(
            listen,
            device.as_deref(),
            counters,
            published,
        )?);
        Ok(())
    }

    /// What the metrics endpoint reports of the controller: its counters, the STUN
    /// responder's, the pool and the port range.
    fn publish_counters(&self, p: &mut metrics::Published, controller: &BTreeMap<String, u64>) {
        p.controller.clone_from(controller);
        p.stun = self
            .services
            .stun
            .as_ref()
            .map(|s| s.state().counters)
            .unwrap_or_default();
        p.pool.clone_from(&self.topology.pool);
        p.ports_per_address = self.settings.port_range.len();
        p.ha = self.ha_status();
    }

    /// One line for the service manager's status: `translating lan0,lan1 to
    /// 192.0.2.1 on wan0`.
    fn status_line(&self) -> String {
        let lans: Vec<&str> = self.topology.lans.iter().map(|l| l.name.as_str()).collect();
        let pool: Vec<String> = self.topology.pool.iter().map(ToString::to_string).collect();
        format!(
            "translating {} to {} on {}",
            lans.join(","),
            pool.join(","),
            self.topology.wan.name
        )
    }

    fn data_path_config(&self) -> Config {
        let s = &self.settings;
        Config {
            ext_addr_be: natgw_common::addr_be(self.topology.external.addr().octets()),
            wan_ifindex: self.topology.wan.ifindex,
            port_min: s.port_range.min,
            port_max: s.port_range.max,
            flags: CONFIG_F_READY
                | if s.inbound_refresh {
                    CONFIG_F_INBOUND_REFRESH
                } else {
                    0
                }
                | if crate::nat_table::events::subscribers() > 0 {
                    CONFIG_F_MAPPING_EVENTS
                } else {
                    0
                },
            filter_udp: s.filtering.udp.mode() as u8,
            filter_tcp: s.filtering.tcp.mode() as u8,
            filter_icmp: s.filtering.icmp.mode() as u8,
            // At most MAX_EXTERNAL_ADDRS (16), checked with the settings.
            ext_count: u8::try_from(self.topology.pool.len()).unwrap_or(u8::MAX),
            cpus: possible_cpus(),
            host_ports_max: s.limits.ports_per_host,
            host_rate_burst: s.limits.new_mappings_burst,
            host_rate_interval_ns: interval_ns(s.limits.new_mappings_per_sec),
            port_hold_ns: s.limits.port_hold_down.saturating_mul(NS_PER_SEC),
            blocks: s.blocks.as_ref().map_or_else(Default::default, |b| {
                b.plan(self.topology.pool.len(), s.port_range)
            }),
        }
    }

    /// Re-reads the gateway's addresses after a change anywhere and brings the source
    /// checks and the explicit mappings' idea of the internal hosts up to date.
    async fn refresh_addresses(&mut self) {
        match self.rtnl.all_ipv4().await {
            Ok(all) => self
                .topology
                .set_attached(all.into_iter().map(|(_, p)| p).collect()),
            Err(e) => {
                warn!("addresses.unreadable error=\"{e}\": the source checks keep the old ones");
                return;
            }
        }
        self.apply_addresses();
    }

    fn apply_addresses(&mut self) {
        let applied = self.datapath.apply_addresses(&self.topology.attached);
        self.services
            .port_mapping
            .set_hosts(self.datapath.addresses());
        if let Err(e) = applied {
            error!("addresses.apply_failed error=\"{e}\"");
        }
    }

    fn build_state(&self) -> Result<StateFile> {
        let dp = &self.datapath;
        let interfaces = dp
            .ifaces()
            .iter()
            .map(|i| {
                let xdp = dp.xdp_on(i.link.ifindex);
                IfaceState {
                    name: i.link.name.clone(),
                    ifindex: i.link.ifindex,
                    role: i.role,
                    mtu: i.link.mtu,
                    kind: i.link.kind.clone(),
                    addresses: i.link.ipv4.clone(),
                    xdp_program: xdp.map_or("-", |a| a.program).to_owned(),
                    xdp_mode: xdp.map_or("-", |a| a.mode.name()).to_owned(),
                    tc_programs: dp
                        .tc_on(i.link.ifindex)
                        .map(|t| format!("{} ({})", t.program, t.hook))
                        .collect(),
                    redirect_ok: i.redirect_ok,
                    rx_csum_partial: i.link.is_veth(),
                    present: i.present,
                }
            })
            .collect();
        Ok(StateFile {
            version: STATE_VERSION,
            natgw_version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            netns_inode: self.dirs.netns_inode,
            started_unix: self
                .report
                .state
                .as_ref()
                .map_or_else(system::unix_time, |s| s.started_unix),
            pin_dir: self.dirs.pin_dir.clone(),
            map_ids: dp.maps().ids()?,
            external_address: self.topology.external.addr(),
            external_addresses: self.topology.pool.clone(),
            interfaces,
            clsact_created: dp.owns_clsact(),
            settings: self.settings.clone(),
            controller_counters: self.controller_counters(),
            stun: self.services.stun.as_ref().map(StunResponder::state),
            ha: self.ha_status(),
        })
    }

    fn log_started(&self) {
        info!(
            "natgw.started version={} pid={} netns=net:[{}] external={} wan={}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            self.dirs.netns_inode,
            self.topology
                .pool
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            self.topology.wan.name
        );
        for i in self.datapath.ifaces() {
            let xdp = self.datapath.xdp_on(i.link.ifindex);
            let addrs: Vec<String> = i.link.ipv4.iter().map(ToString::to_string).collect();
            info!(
                "iface.attached name={} ifindex={} role={} addrs={} kind={} mtu={} xdp={} \
                 mode={} redirect_ok={} rx_csum_partial={}",
                i.link.name,
                i.link.ifindex,
                i.role,
                if addrs.is_empty() {
                    "-".to_owned()
                } else {
                    addrs.join(",")
                },
                i.link.kind.as_deref().unwrap_or("-"),
                i.link.mtu,
                xdp.map_or("-", |a| a.program),
                xdp.map_or("-", |a| a.mode.name()),
                i.redirect_ok,
                i.link.is_veth(),
            );
        }
        let tc: Vec<String> = self
            .datapath
            .tc()
            .map(|t| format!("{}({})", t.program, t.hook))
            .collect();
        info!(
            "tc.attached iface={} programs={} clsact={}",
            self.topology.wan.name,
            tc.join(","),
            if self.datapath.owns_clsact() {
                "created"
            } else {
                "existing"
            }
        );
        let s = &self.settings;
        info!(
            "config ports={} ({} ports) udp_timeout={}s tcp_established_timeout={}s \
             tcp_transitory_timeout={}s icmp_timeout={}s inbound_refresh={} \
             udp_filtering={} tcp_filtering={} icmp_filtering={} unsolicited_syn={} \
             max_mappings={} xdp_mode={} gc_interval={}s no_mapping_icmp={} \
             ports_per_host={} host_mapping_rate={}/s host_mapping_burst={} \
             port_hold_down={}s",
            s.port_range,
            s.port_range.len(),
            s.timeouts.udp,
            s.timeouts.tcp_established,
            s.timeouts.tcp_transitory,
            s.timeouts.icmp,
            s.inbound_refresh,
            s.filtering.udp,
            s.filtering.tcp,
            s.filtering.icmp,
            s.unsolicited_syn,
            s.max_mappings,
            s.xdp_mode,
            s.gc_interval,
            s.no_mapping_icmp,
            s.limits.ports_per_host,
            s.limits.new_mappings_per_sec,
            s.limits.new_mappings_burst,
            s.limits.port_hold_down,
        );
        info!(
            "natgw.ready pins={} state={}",
            self.dirs.pin_dir.display(),
            self.dirs.state_file().display()
        );
    }

    /// Runs until a signal or a fatal interface loss.
    async fn serve(
        &mut self,
        shutdown: &mut Shutdown,
        hangup: &mut tokio::signal::unix::Signal,
    ) -> Result<()> {
        let mut sweeper = Sweeper::new(
            Policy::new(&self.settings.timeouts, self.settings.inbound_refresh)
                .with_hold_down(self.settings.limits.port_hold_down),
        )
        .scheduled(
            gc::Cadence::Adaptive,
            self.settings.gc_interval.saturating_mul(NS_PER_SEC),
        );
        // Between ticks, when the collector's schedule has a mapping due earlier.
        let mut gc_wake: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(self.settings.gc_interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Held SYNs are due 6 s after they arrived, whatever the GC interval.
        let mut held_tick = tokio::time::interval(held_syns::CHECK_INTERVAL);
        held_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gc_failing = false;
        let mut held_failing = false;
        let mut next_prune = system::monotonic_ns();
        loop {
            tokio::select! {
                signal = shutdown.recv() => {
                    info!("natgw.stopping signal={signal}");
                    return Ok(());
                }
                _ = hangup.recv() => {
                    let interval = self.settings.gc_interval;
                    notify::reloading();
                    self.reload(&mut sweeper);
                    if let Some(log) = &self.services.alloc_log {
                        log.reopen();
                    }
                    // A failed reload keeps the running configuration: ready either way.
                    notify::ready(&self.status_line());
                    if self.settings.gc_interval != interval {
                        tick = tokio::time::interval(Duration::from_secs(self.settings.gc_interval));
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        sweeper.set_interval(self.settings.gc_interval.saturating_mul(NS_PER_SEC));
                    }
                }
                _ = held_tick.tick() => {
                    self.prune_host_records(&mut next_prune);
                    self.expire_held_syns(&mut held_failing);
                    self.expire_explicit();
                    self.report_counters();
                    self.log_drop_episodes();
                    self.count_lost_mapping_events();
                    self.replication_tick();
                }
                wake = next_replication(&mut self.ha) => self.on_replication(wake),
                wake = self.services.port_mapping.wake() => self.on_port_mapping(wake).await,
                Some(order) = next_order(&mut self.orders) => self.on_order(order),
                _ = tick.tick() => {
                    match self.watch_interfaces() {
                        Ok(()) => {}
                        Err(Fatal::WanGone(name)) => {
                            error!("natgw.stopping reason=wan_gone iface={name}");
                            bail!("WAN interface {name} disappeared; natgw cannot translate without it");
                        }
                        Err(Fatal::NoLanLeft) => {
                            error!("natgw.stopping reason=no_lan_left");
                            bail!("every LAN interface disappeared; nothing left to translate");
                        }
                    }
                    gc_wake = self.collect_garbage(&mut sweeper, &mut gc_failing);
                }
                () = sleep_until_some(gc_wake) => {
                    gc_wake = self.collect_garbage(&mut sweeper, &mut gc_failing);
                }
            }
        }
    }

    /// One garbage-collection tick (a survey of the tables, or a look at the mappings
    /// the collector's schedule has due); returns when the collector wants its next
    /// tick if that is before the next regular one.
    fn collect_garbage(
        &mut self,
        sweeper: &mut Sweeper,
        gc_failing: &mut bool,
    ) -> Option<tokio::time::Instant> {
        if self.is_standby() {
            // The active expires them and replicates the deletions.
            return None;
        }
        let now = system::monotonic_ns();
        let started = std::time::Instant::now();
        // A survey is many map syscalls; let the runtime move other tasks (the eBPF
        // log reader) to the other worker meanwhile.
        let result =
            tokio::task::block_in_place(|| sweeper.tick(&mut self.datapath.maps_mut().nat, now));
        if let Some(m) = &self.services.metrics {
            m.publish(|p| p.gc_pass(started.elapsed(), result.as_ref().ok(), sweeper.census()));
        }
        match result {
            Ok(stats) => {
                *gc_failing = false;
                if let Some(reason) = stats.reason {
                    debug!(
                        "gc.survey reason={reason} mappings={} sessions={} took_ms={} scheduled={}",
                        stats.mappings,
                        stats.sessions,
                        started.elapsed().as_millis(),
                        sweeper.scheduled_len(),
                    );
                }
                if stats.expired + stats.orphans + stats.refreshed + stats.sessions_expired > 0 {
                    debug!(
                        "gc.tick survey={} mappings={} expired={} orphans={} refreshed={} \
                         candidates={} sessions={} sessions_expired={} scheduled={}",
                        stats.survey,
                        stats.mappings,
                        stats.expired,
                        stats.orphans,
                        stats.refreshed,
                        stats.candidates,
                        stats.sessions,
                        stats.sessions_expired,
                        sweeper.scheduled_len(),
                    );
                }
            }
            Err(e) => {
                if !*gc_failing {
                    error!("gc.failed error=\"{e}\": will retry every tick");
                }
                *gc_failing = true;
            }
        }
        let gc_interval_ns = self.settings.gc_interval.saturating_mul(NS_PER_SEC);
        let after = system::monotonic_ns();
        sweeper
            .next_due_ns()
            .filter(|&due| due < after.saturating_add(gc_interval_ns))
            .map(|due| {
                tokio::time::Instant::now() + Duration::from_nanos(due.saturating_sub(after))
            })
    }

    /// SIGHUP: reads the configuration again and applies what can change without
    /// recreating the data path — timeouts, filtering of new mappings, the port
    /// range of new mappings, unsolicited SYNs, the GC interval, the PCP policy and
    /// the static forwards. Every mapping stays. Interfaces, external addresses, the
    /// table size, the XDP mode, STUN and turning PCP on or off need a restart (which
    /// keeps the mappings too); they keep their running values.
    fn reload(&mut self, sweeper: &mut Sweeper) {
        let mut new = match (self.reloader)() {
            Ok(s) => s,
            Err(e) => {
                error!("reload.failed error=\"{e:#}\": the running configuration stays");
                return;
            }
        };
        let kept = keep_restart_only(&self.settings, &mut new);
        if !kept.is_empty() {
            warn!(
                "reload.needs_restart settings={}: they keep their running values; restart \
                 natgw to apply them (mappings are kept)",
                kept.join(",")
            );
        }
        let old = std::mem::replace(&mut self.settings, new);
        sweeper.set_policy(
            Policy::new(&self.settings.timeouts, self.settings.inbound_refresh)
                .with_hold_down(self.settings.limits.port_hold_down),
        );
        let rules = host_rules(&self.settings);
        self.datapath.maps_mut().nat.hosts.set_rules(rules);
        let config = self.data_path_config();
        if let Err(e) = self.datapath.enable(&config) {
            error!("reload.config_failed error=\"{e}\"");
        }
        let hosts = self.datapath.addresses().clone();
        let nat = &mut self.datapath.maps_mut().nat;
        self.services
            .port_mapping
            .reload(&old, &self.settings, nat, &hosts);
        self.services.port_mapping.write_file(&self.dirs);
        self.refresh_state_file();
        let s = &self.settings;
        info!(
            "reload.applied ports={} udp_timeout={}s tcp_established_timeout={}s \
             tcp_transitory_timeout={}s icmp_timeout={}s udp_filtering={} tcp_filtering={} \
             icmp_filtering={} forwards={} mappings={}",
            s.port_range,
            s.timeouts.udp,
            s.timeouts.tcp_established,
            s.timeouts.tcp_transitory,
            s.timeouts.icmp,
            s.filtering.udp,
            s.filtering.tcp,
            s.filtering.icmp,
            s.forwards.len(),
            self.datapath.mapping_count()
        );
    }

    /// Every [`PRUNE_INTERVAL_NS`], forgets the records of idle hosts (see
    /// [`crate::datapath::maps::hosts`]).
    fn prune_host_records(&mut self, next: &mut u64) {
        let now = system::monotonic_ns();
        if now < *next {
            return;
        }
        *next = now + PRUNE_INTERVAL_NS;
        match self.datapath.maps_mut().nat.hosts.prune(now) {
            Ok(hosts) if hosts > 0 => debug!("limits.pruned hosts={hosts}"),
            Ok(_) => {}
            Err(e) => warn!("limits.prune_failed error=\"{e}\""),
        }
    }

    /// Ends the held SYNs that waited their 6 s: ICMP port unreachable to the sender,
    /// or nothing, by policy (RFC 5382 REQ-4).
    fn expire_held_syns(&mut self, failing: &mut bool) {
        let now = system::monotonic_ns();
        let policy = self.settings.unsolicited_syn;
        let sender = &self.services.icmp;
        let result = held_syns::sweep(&mut self.datapath.maps_mut().nat, now, |key, held| {
            sender.counters().held_syn_expired();
            debug!(
                "held_syn.expired {} action={policy}",
                icmp::describe_held(key)
            );
            if policy == UnsolicitedSyn::Icmp {
                sender.port_unreachable(key, held, now);
            }
        });
        match result {
            Ok(_) => *failing = false,
            Err(e) => {
                if !*failing {
                    error!("held_syns.failed error=\"{e}\": will retry every second");
                }
                *failing = true;
            }
        }
    }

    /// The controller's own counters: ICMP errors, resent fragments, PCP/NAT-PMP.
    fn controller_counters(&self) -> BTreeMap<String, u64> {
        let mut counters = self.services.icmp.counters().snapshot();
        counters.insert(
            "ports_freed_unheld".to_owned(),
            self.datapath.maps().nat.hosts.unheld(),
        );
        counters.extend(self.services.fragments.snapshot());
        if let Some(ha) = &self.ha {
            ha.counters(&mut counters);
        }
        counters.extend(self.services.port_mapping.counters());
        let c = &self.services.control;
        counters.insert(
            "monitor_events_lost".to_owned(),
            c.monitor_events_lost
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        counters.insert(
            "monitors_refused".to_owned(),
            c.monitors_refused
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        counters
    }

    /// Rewrites the state file when the controller counters changed; publishes them
    /// for the metrics endpoint.
    fn report_counters(&mut self) {
        let now = self.controller_counters();
        if let Some(m) = &self.services.metrics {
            m.publish(|p| self.publish_counters(p, &now));
        }
        let stun_changed = self
            .services
            .stun
            .as_mut()
            .is_some_and(StunResponder::counters_changed);
        if now != self.report.counters || stun_changed {
            self.refresh_state_file();
            self.report.counters = now;
        }
    }

    /// Tells the allocation log how many mapping events the data path could not
    /// report since the last look (its `event_lost` counter).
    fn count_lost_mapping_events(&mut self) {
        let Some(log) = &self.services.alloc_log else {
            return;
        };
        let Ok(counters) = self.datapath.maps().counters() else {
            return;
        };
        let Some(now) = counters
            .iter()
            .find(|(c, _)| *c == natgw_common::Counter::EventLost)
            .map(|(_, v)| *v)
        else {
            return;
        };
        if let Some(seen) = self.services.event_lost_seen {
            log.lost(now.saturating_sub(seen));
        }
        self.services.event_lost_seen = Some(now);
    }

    /// Logs the start and end of episodes of data-path drops worth attention (see
    /// [`crate::daemon::episodes`]): a line per episode, never per packet.
    fn log_drop_episodes(&mut self) {
        let Ok(counters) = self.datapath.maps().counters() else {
            return;
        };
        for note in self
            .report
            .episodes
            .observe(std::time::Instant::now(), &counters)
        {
            match note {
                Note::Started {
                    counter,
                    meaning,
                    dropped,
                } => warn!(
                    "datapath.drops counter={} dropped={dropped}: {meaning}; one line per \
                     episode, see `natgw status`",
                    counter.name()
                ),
                Note::Ended {
                    counter,
                    dropped,
                    lasted,
                } => info!(
                    "datapath.drops_ended counter={} dropped={dropped} over={:.0}s",
                    counter.name(),
                    lasted.as_secs_f64()
                ),
            }
        }
    }

    /// Notices vanished interfaces and changes of `redirect_ok`.
    fn watch_interfaces(&mut self) -> Result<(), Fatal> {
        let events = self.datapath.watch_interfaces();
        if events.is_empty() {
            return Ok(());
        }
        let mut fatal = None;
        for event in events {
            match event {
                IfaceEvent::Redirect { name, ok } => info!(
                    "iface.redirect name={name} redirect_ok={ok}{}",
                    if ok {
                        ": XDP redirects into it are delivered now"
                    } else {
                        ": XDP redirects into it would be lost; the kernel forwards instead"
                    }
                ),
                IfaceEvent::Vanished {
                    name,
                    role: Role::Wan,
                } => {
                    error!("iface.vanished name={name} role=wan");
                    fatal = Some(Fatal::WanGone(name));
                }
                IfaceEvent::Vanished {
                    name,
                    role: Role::Lan,
                } => {
                    self.apply_addresses();
                    let left: Vec<&str> = self
                        .datapath
                        .ifaces()
                        .iter()
                        .filter(|f| f.role == Role::Lan && f.present)
                        .map(|f| f.link.name.as_str())
                        .collect();
                    if left.is_empty() {
                        error!("iface.vanished name={name} role=lan remaining=none");
                        fatal = fatal.or(Some(Fatal::NoLanLeft));
                    } else {
                        error!(
                            "iface.vanished name={name} role=lan remaining={}: natgw keeps \
                             translating for the remaining LAN interfaces; restart it to use \
                             {name} again",
                            left.join(",")
                        );
                    }
                }
            }
        }
        self.refresh_state_file();
        fatal.map_or(Ok(()), Err)
    }

    /// Handles what [`PortMapping::wake`] returned.
    async fn on_port_mapping(&mut self, wake: Wake) {
        match wake {
            Wake::Request(index) => {
                let nat = &mut self.datapath.maps_mut().nat;
                self.services.port_mapping.receive(index, nat);
                self.services.port_mapping.write_file(&self.dirs);
            }
            Wake::Announce => {
                let nat = &mut self.datapath.maps_mut().nat;
                self.services.port_mapping.announce(nat);
            }
            Wake::Upnp(request) => {
                let nat = &mut self.datapath.maps_mut().nat;
                self.services.port_mapping.upnp_request(request, nat);
                self.services.port_mapping.write_file(&self.dirs);
            }
            Wake::UpnpTimer => {
                let nat = &mut self.datapath.maps_mut().nat;
                self.services.port_mapping.upnp_refresh(nat);
            }
            Wake::Addresses(ifindex) => {
                // Any interface: the source checks know every address of the gateway.
                self.refresh_addresses().await;
                if ifindex == self.topology.wan.ifindex {
                    self.wan_addresses_changed().await;
                }
            }
            Wake::WatchEnded => {
                warn!(
                    "wan.watch_ended: address notifications stopped; a change of the WAN's \
                     address will not be noticed any more"
                );
                self.services.port_mapping.unwatch();
            }
        }
    }

    /// Carries out what the control socket asks.
    fn on_order(&mut self, order: control::Order) {
        match order {
            control::Order::Flush(filter, include_static, reply) => {
                let _ = reply.send(self.flush(&filter, include_static));
            }
            control::Order::Role(role, reply) => {
                let _ = reply.send(if self.ha.is_some() {
                    self.role.send_replace(role);
                    self.on_replication(replication::Wake::Flush);
                    Ok(())
                } else {
                    Err("replication is not configured (--ha-peer)".to_owned())
                });
            }
            control::Order::Monitors(done) => {
                let config = self.data_path_config();
                if let Err(e) = self.datapath.enable(&config) {
                    warn!("monitor.config_failed error=\"{e}\"");
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            control::Order::HaState(state, reply) => {
                let _ = reply.send(self.on_keepalived(state));
            }
        }
    }

    fn ha_status(&self) -> Option<keepalived::HaStatus> {
        let present = self.topology.pool_present();
        let role = *self.role.borrow();
        self.keepalived.as_ref().map(|k| k.status(role, present))
    }

    /// keepalived reported `state` (`natgw ha-state`): the role follows, logged,
    /// shown by `natgw status` and the metrics.
    fn on_keepalived(&mut self, state: keepalived::VrrpState) -> Result<(String, bool), String> {
        let vip_present = self.topology.pool_present();
        let Some(tracker) = self.keepalived.as_mut() else {
            return Err("natgw runs without --ha: it has no role to change".to_owned());
        };
        let changed = tracker.apply(state, &self.role);
        if changed.is_some() && self.ha.is_some() {
            self.on_replication(replication::Wake::Flush);
        }
        let role = keepalived::role_name(*self.role.borrow());
        match changed {
            Some(old) => info!(
                "ha.role_changed from={} to={role} keepalived={state} vip_present={vip_present}",
                keepalived::role_name(old)
            ),
            None => info!("ha.keepalived state={state} role={role} (unchanged)"),
        }
        self.refresh_state_file();
        if let Some(m) = &self.services.metrics {
            let status = self.ha_status();
            m.publish(|p| p.ha = status);
        }
        Ok((role.to_owned(), changed.is_some()))
    }

    /// `natgw flush`: deletes the explicit mappings (through their engines' table,
    /// so PCP, UPnP and the explicit mappings file agree) and the traffic mappings
    /// `filter` selects; how many.
    fn flush(&mut self, filter: &MappingFilter, include_static: bool) -> Result<usize, String> {
        let now_ns = system::monotonic_ns();
        let nat = &mut self.datapath.maps_mut().nat;
        let explicit = self
            .services
            .port_mapping
            .flush(nat, filter, include_static, now_ns);
        self.services.port_mapping.write_file(&self.dirs);
        let nat = &mut self.datapath.maps_mut().nat;
        let traffic = if filter
            .origin
            .is_none_or(|o| o == natgw_common::Origin::Traffic as u8)
        {
            flush_traffic(nat, filter, now_ns).map_err(|e| format!("deleting mappings: {e}"))?
        } else {
            0
        };
        info!(
            "mappings.flushed explicit={explicit} traffic={traffic} filter={filter:?} \
             include_static={include_static}"
        );
        Ok(explicit + traffic)
    }

    /// Ends the explicit mappings whose lifetime is over.
    fn expire_explicit(&mut self) {
        if self.is_standby() {
            return;
        }
        let nat = &mut self.datapath.maps_mut().nat;
        self.services.port_mapping.expire(nat);
        self.services.port_mapping.write_file(&self.dirs);
    }

    /// The WAN's IPv4 addresses changed. When the external address comes from the
    /// WAN (no `--external` pool) and its first IPv4 address changed:
    /// 1. the STUN responder binds the new address and stops answering on the old one
    ///    (first, so its ports are held before anything can be mapped there);
    /// 2. explicit mappings move to the new address, keeping their ports where free;
    /// 3. the data path is pointed at it (`EXT_ADDRS`, `CONFIG.ext_addr_be`), so new
    ///    traffic mappings use it;
    /// 4. traffic mappings on the old address are deleted: their connections cannot
    ///    survive the change, and while they exist their internal endpoints' packets
    ///    would keep leaving from an address the gateway no longer has;
    /// 5. the PCP server announces the new address and sends every PCP client an
    ///    unsolicited MAP response with its mapping's new external endpoint (RFC 6887
    ///    §14.2; NAT-PMP clients get the address announcement, RFC 6886 §3.2.1).
    ///
    /// While the WAN has no IPv4 address at all, PCP and NAT-PMP requests fail with
    /// NETWORK_FAILURE, the data path keeps the old address, and the STUN responder
    /// does not answer (keeping its ports reserved).
    async fn wan_addresses_changed(&mut self) {
        let wan = self.topology.wan.name.clone();
        let link = match self.rtnl.link(&wan).await {
            Ok(l) => l,
            Err(e) => {
                warn!("wan.addresses_unreadable iface={wan} error=\"{e}\"");
                return;
            }
        };
        let had_pool = self.topology.pool_present();
        self.topology.wan.ipv4.clone_from(&link.ipv4);
        if self.topology.virtual_pool {
            // keepalived moved the virtual addresses: the data path translates to them
            // either way; only what answers for them changed.
            let has_pool = self.topology.pool_present();
            if has_pool != had_pool {
                info!(
                    "ha.vip_{} iface={wan} addresses={} role={}",
                    if has_pool { "present" } else { "absent" },
                    self.topology
                        .pool
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    keepalived::role_name(*self.role.borrow())
                );
                self.refresh_state_file();
            }
            return;
        }
        if !self.settings.external.is_empty() {
            let gone: Vec<String> = self
                .topology
                .pool
                .iter()
                .filter(|a| !link.ipv4.iter().any(|p| p.addr() == **a))
                .map(ToString::to_string)
                .collect();
            if !gone.is_empty() {
                warn!(
                    "wan.pool_address_missing iface={wan} addresses={}: the configured \
                     external addresses (--external) stay in use",
                    gone.join(",")
                );
            }
            return;
        }
        let old_pool = self.topology.pool.clone();
        let pool: Vec<std::net::Ipv4Addr> = link
            .ipv4
            .first()
            .map(|p| vec![p.addr()])
            .unwrap_or_default();
        if self.services.stun.as_mut().is_some_and(|s| s.follow(&pool)) {
            self.refresh_state_file();
        }
        let nat = &mut self.datapath.maps_mut().nat;
        self.services.port_mapping.set_pool(nat, pool.clone(), &wan);
        let Some(main) = link.ipv4.first().copied() else {
            return;
        };
        if pool == old_pool {
            return;
        }
        info!(
            "wan.address_changed iface={wan} old={} new={}",
            old_pool
                .first()
                .map_or_else(|| "-".to_owned(), ToString::to_string),
            main.addr()
        );
        self.topology.external = main;
        self.topology.pool.clone_from(&pool);
        if let Err(e) = self.point_data_path_at(&pool) {
            warn!("wan.readdress_failed error=\"{e:#}\"");
        }
        let nat = &mut self.datapath.maps_mut().nat;
        for old in old_pool.iter().filter(|a| !pool.contains(a)) {
            match gc::remove_traffic_on(nat, addr_be(old.octets())) {
                Ok(n) => info!("wan.old_address_flushed address={old} mappings={n}"),
                Err(e) => warn!("wan.flush_failed address={old} error=\"{e}\""),
            }
        }
        self.refresh_state_file();
        self.services.port_mapping.write_file(&self.dirs);
        self.services.port_mapping.external_address_changed();
    }

    /// Writes the new pool and `CONFIG`: new traffic mappings use the new address.
    fn point_data_path_at(&mut self, pool: &[std::net::Ipv4Addr]) -> Result<()> {
        self.datapath
            .write_pool(pool)
            .context("writing the external address pool")?;
        let config = self.data_path_config();
        self.datapath.enable(&config).context("writing CONFIG")?;
        Ok(())
    }

    fn refresh_state_file(&mut self) {
        match self.build_state() {
            Ok(state) => {
                if let Err(e) = self.dirs.write_state(&state) {
                    warn!("state.write_failed error=\"{e}\"");
                }
                self.report.state = Some(state);
            }
            Err(e) => warn!("state.write_failed error=\"{e:#}\""),
        }
    }

    /// Undoes everything a first `deploy` did, as far as it got: for a start that
    /// failed with nothing to fall back on. Never fails: problems are logged and the
    /// rest is still undone.
    async fn teardown(&mut self) {
        if let Some(ha) = self.ha.as_mut() {
            ha.stop();
        }
        let _ = std::fs::remove_file(control::socket_path(&self.dirs.state_dir));
        let mappings = self.datapath.mapping_count();
        let undone = self.datapath.teardown(&self.rtnl, &self.dirs).await;
        let _ = self.dirs.remove_record(port_mapping::EPOCH_FILE);
        if let Err(e) = self.dirs.remove_state() {
            warn!("teardown.state_failed error=\"{e}\"");
        }
        self.services.stop();
        info!(
            "natgw.stopped detached={} mappings_dropped={mappings} pins_removed={}",
            if undone.detached.is_empty() {
                "-".to_owned()
            } else {
                undone.detached.join(",")
            },
            undone.unpinned
        );
    }

    /// Stops the controller and leaves the data path running: the pinned programs
    /// keep translating existing and new flows (without garbage collection, PCP or
    /// STUN) until the next natgw adopts them, or `natgw stop --flush` removes them.
    /// The state file stays: it describes that data path.
    fn stop(&mut self) {
        if let Some(ha) = self.ha.as_mut() {
            ha.stop();
        }
        let _ = std::fs::remove_file(control::socket_path(&self.dirs.state_dir));
        // Nobody reads the mapping events once the controller is gone.
        let maps = self.datapath.maps_mut();
        if let Ok(mut config) = maps.config.get(&0, 0) {
            if config.mapping_events() {
                config.flags &= !CONFIG_F_MAPPING_EVENTS;
                let _ = maps.write_config(&config);
            }
        }
        self.refresh_state_file();
        let mappings = self.datapath.mapping_count();
        let kept = self.datapath.release();
        self.services.stop();
        if kept.is_empty() {
            info!("natgw.stopped data_path=detached mappings={mappings}");
        } else {
            info!(
                "natgw.stopped data_path=running programs={} mappings={mappings}: the data \
                 path keeps translating; the next `natgw run` adopts it, `natgw stop --flush` \
                 removes it",
                kept.join(",")
            );
        }
    }
}

/// What replication wants next; never without it.
async fn next_replication(ha: &mut Option<replication::Replication>) -> replication::Wake {
    match ha {
        Some(ha) => ha.next().await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    /// Whether this natgw is the standby of a pair.
    fn is_standby(&self) -> bool {
        self.ha.is_some() && *self.role.borrow() == role::Role::Standby
    }
}

/// The next flush order, once the control socket is served (never before).
async fn next_order(
    orders: &mut Option<tokio::sync::mpsc::Receiver<control::Order>>,
) -> Option<control::Order> {
    match orders {
        Some(o) => o.recv().await,
        None => std::future::pending().await,
    }
}

/// Copies into `new` the settings of `running` that only a restart can change, and
/// names those that differed.
fn keep_restart_only(running: &Settings, new: &mut Settings) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $name:literal) => {
            if new.$($field).+ != running.$($field).+ {
                new.$($field).+ = running.$($field).+.clone();
                kept.push($name);
            }
        };
    }
    keep!(wan, "wan");
    keep!(lan, "lan");
    keep!(external, "external");
    keep!(max_mappings, "max_mappings");
    keep!(xdp_mode, "xdp_mode");
    keep!(stun, "stun");
    keep!(pcp.enabled, "pcp.enabled");
    keep!(upnp.enabled, "upnp.enabled");
    keep!(upnp.http_port, "upnp.http_port");
    keep!(metrics, "metrics");
    keep!(log_allocations, "log_allocations");
    keep!(ha, "ha");
    // The reverse table was sized with room for this many holds.
    keep!(limits.max_held_ports, "limits.max_held_ports");
    // Port blocks are a function of these: a change would move hosts to other blocks
    // under their live mappings and the allocation log's block records.
    keep!(blocks, "blocks");
    if running.blocks.is_some() {
        keep!(port_range, "port_range");
    }
    kept
}

/// The per-host rules the controller applies when it creates and deletes mappings
/// (the data path reads its own from `CONFIG`).
fn host_rules(settings: &Settings) -> HostRules {
    HostRules {
        ports_per_host: settings.limits.ports_per_host,
        hold_ns: settings.limits.port_hold_down.saturating_mul(NS_PER_SEC),
        max_held: settings.limits.held_ports_capacity(settings.max_mappings),
    }
}

/// Possible CPUs (what per-CPU maps are sized by): the stride of the data path's
/// per-CPU IP identification sequences. When it cannot be read, 64: more than the
/// boxes natgw targets have, at the cost of shorter sequences.
fn possible_cpus() -> u32 {
    aya::util::nr_cpus().map_or(64, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve, FileConfig, Overrides};

    fn settings(wan: &str, udp_timeout: u64, max_mappings: Option<u32>) -> Settings {
        let flags = Overrides {
            wan: Some(wan.to_owned()),
            lan: vec!["lan0".to_owned()],
            udp_timeout: Some(udp_timeout),
            max_mappings,
            ..Overrides::default()
        };
        resolve(&FileConfig::default(), &flags).unwrap().0
    }

    #[test]
    fn a_reload_applies_what_it_can_and_keeps_what_needs_a_restart() {
        let running = settings("wan0", 300, None);
        let mut new = settings("wan9", 60, Some(1000));
        let kept = keep_restart_only(&running, &mut new);
        assert_eq!(kept, ["wan", "max_mappings"]);
        assert_eq!(new.wan, "wan0");
        assert_eq!(new.max_mappings, running.max_mappings);
        assert_eq!(new.timeouts.udp, 60, "timeouts apply");
        let mut same = running.clone();
        assert!(keep_restart_only(&running, &mut same).is_empty());
    }

    #[test]
    fn the_metrics_address_needs_a_restart() {
        let running = settings("wan0", 300, None);
        let mut new = running.clone();
        new.metrics.listen = Some("10.0.1.1:9100".parse().unwrap());
        assert_eq!(keep_restart_only(&running, &mut new), ["metrics"]);
        assert_eq!(new.metrics, running.metrics, "keeps its running value");
    }

    #[test]
    fn upnp_settings_reload_but_turning_it_off_needs_a_restart() {
        let running = settings("wan0", 300, None);
        let mut new = running.clone();
        new.upnp.enabled = false;
        new.upnp.allow_other_hosts = true;
        new.upnp.max_lease = 3600;
        let kept = keep_restart_only(&running, &mut new);
        assert_eq!(kept, ["upnp.enabled"]);
        assert!(new.upnp.enabled, "keeps its running value");
        assert!(
            new.upnp.allow_other_hosts && new.upnp.max_lease == 3600,
            "these apply"
        );
    }
}
