//! `natgw run`: check the host, resolve the interfaces, load and attach the data path,
//! then run the garbage collector, expire held SYNs, answer the data path's requests
//! for ICMP errors and watch the interfaces until SIGINT/SIGTERM, and finally undo
//! everything it did.
//!
//! Order matters: `IFACES` and `LAN_NETS` are filled before the programs are attached
//! and `CONFIG` (with `CONFIG_F_READY`) last, because until then the programs pass
//! all traffic untouched. Shutdown clears `CONFIG_F_READY` first for the same reason.
//!
//! Interfaces that vanish at run time: a LAN interface is dropped from `IFACES` and
//! `LAN_NETS` with an error logged, and natgw keeps translating for the remaining
//! ones; losing the WAN interface or the last LAN interface shuts natgw down cleanly
//! with a non-zero exit status. A vanished interface is not re-attached if it comes
//! back; restart natgw for that.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use aya::programs::TcAttachType;
use aya::Ebpf;
use log::{debug, error, info, warn};
use natgw_common::config::{CONFIG_F_INBOUND_REFRESH, CONFIG_F_READY};
use natgw_common::{Config, IfaceConfig, IfaceRole};

use self::episodes::{Episodes, Note};
use self::icmp::IcmpSender;
use crate::config::{Settings, UnsolicitedSyn};
use crate::daemon::state::{IfaceState, Role, StateFile, STATE_VERSION};
use crate::datapath::addresses::{AddressPlan, LanIface};
use crate::datapath::dirs::{InstanceLock, RuntimeDirs};
use crate::datapath::loader::{self, programs, AttachedMode, TcAttachment, XdpAttachment};
use crate::datapath::maps::{FragmentMaps, GatewayMaps};
use crate::datapath::netlink::netdev::{self, GenlError, Netdev};
use crate::datapath::netlink::{Link, NetlinkError, Rtnl};
use crate::datapath::pool;
use crate::datapath::system;
use crate::nat_table::gc::{held_syns, Policy, Sweeper};
use crate::services::Shutdown;
use natgw_proto::prefix::{check_no_overlap, IfacePrefix, Ipv4Prefix};

pub mod episodes;
pub mod fragments;
pub mod icmp;
mod port_mapping;
pub mod state;
mod stun_responder;

/// `natgw run` with `settings`: deploys the data path, serves until SIGINT or
/// SIGTERM (or the loss of the WAN or of every LAN interface), and undoes what it did.
///
/// # Errors
/// When the host, the interfaces or the data path cannot be set up, or natgw stops
/// on its own.
pub async fn run(settings: Settings) -> Result<()> {
    if loader::EBPF_OBJECT.is_empty() {
        bail!(loader::LoadError::NoObject);
    }
    system::check_privileges()?;
    // Signals are caught from here on, so one arriving during setup still leads to a
    // clean teardown instead of leaving pins behind.
    let mut shutdown = Shutdown::install()?;

    if system::ensure_bpffs()? {
        info!("bpffs.mounted path={}", system::BPFFS);
    }
    if let Err(e) = system::raise_memlock_limit() {
        debug!("memlock.unchanged error={e}");
    }
    let dirs = RuntimeDirs::for_current_netns()?;
    let lock = dirs.lock()?;
    let stale_clsact = remove_stale(&dirs)?;

    let rtnl = Rtnl::connect()?;
    let topology = resolve_interfaces(&rtnl, &settings).await?;

    let (ebpf, log_task) = loader::load(settings.max_mappings)?;
    let mut daemon = Daemon {
        icmp: Arc::new(IcmpSender::open(system::monotonic_ns())),
        events_task: None,
        fragments: Arc::default(),
        fragments_task: None,
        stun: None,
        port_mapping: port_mapping::PortMapping::default(),
        reported_counters: BTreeMap::new(),
        settings,
        dirs,
        _lock: lock,
        rtnl,
        netdev: None,
        ebpf,
        log_task,
        maps: None,
        xdp: Vec::new(),
        tc: Vec::new(),
        clsact_created: None,
        sysctl_restore: BTreeMap::new(),
        addresses: AddressPlan::default(),
        episodes: Episodes::default(),
        stale_clsact,
        topology,
        ifaces: Vec::new(),
        pinned: false,
        state: None,
    };
    if let Err(e) = daemon.deploy() {
        daemon.teardown().await;
        return Err(e);
    }

    let outcome = daemon.serve(&mut shutdown).await;
    daemon.teardown().await;
    outcome
}

/// Removes what a natgw that died without cleaning up left in this namespace. Called
/// with the lock held, so nothing here belongs to a live daemon. Returns the WAN
/// ifindex whose clsact qdisc that natgw had added, if any.
fn remove_stale(dirs: &RuntimeDirs) -> Result<Option<u32>> {
    let pins = dirs.existing_pins();
    let old = dirs.read_state::<StateFile>().ok();
    if let Some(s) = &old {
        if s.pid != std::process::id() && system::process_alive_in_netns(s.pid, dirs.netns_inode) {
            bail!(crate::datapath::dirs::StateError::AlreadyRunning { pid: Some(s.pid) });
        }
    }
    let stale_clsact = old.as_ref().filter(|s| s.clsact_created).and_then(|s| {
        s.interfaces
            .iter()
            .find(|i| i.role == Role::Wan)
            .map(|i| i.ifindex)
    });
    restore_sysctls(dirs, "stale.sysctl_restored");
    if !pins.is_empty() || old.is_some() {
        warn!(
            "stale.removed pid={} pins={} dir={}: natgw exited without cleaning up",
            old.map_or_else(|| "unknown".to_owned(), |s| s.pid.to_string()),
            pins.len(),
            dirs.pin_dir.display()
        );
        dirs.remove_pins().context("removing stale pinned maps")?;
        dirs.remove_state()?;
    }
    Ok(stale_clsact)
}

/// Puts back the sysctl values natgw changed (recorded in `dirs`, so also those of
/// a natgw that died), logging each as `event`, and forgets them.
fn restore_sysctls(dirs: &RuntimeDirs, event: &str) {
    let values = match dirs.read_sysctl_restore() {
        Ok(v) => v,
        Err(e) => {
            warn!("sysctl.restore_unreadable error=\"{e}\"");
            return;
        }
    };
    let mut left = BTreeMap::new();
    for (key, value) in values {
        match system::write_sysctl(&key, &value) {
            Ok(()) => info!("{event} sysctl={key} value={value}"),
            // The interface went away with its settings: nothing left to restore.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!("sysctl.restore_failed sysctl={key} value={value} error=\"{e}\"");
                left.insert(key, value);
            }
        }
    }
    if let Err(e) = dirs.write_sysctl_restore(&left) {
        warn!("sysctl.restore_unrecorded error=\"{e}\"");
    }
}

/// The interfaces as found at start.
#[derive(Debug)]
struct Topology {
    wan: Link,
    lans: Vec<Link>,
    /// Every IPv4 address of the gateway (all interfaces), kept current.
    attached: Vec<Ipv4Prefix>,
    /// The main external address (the pool's first) with its WAN prefix.
    external: Ipv4Prefix,
    /// The external address pool, `external` first (RFC 4787 REQ-2).
    pool: Vec<Ipv4Addr>,
}

async fn resolve_interfaces(rtnl: &Rtnl, settings: &Settings) -> Result<Topology> {
    let lookup = |name: String, role: &'static str| async move {
        rtnl.link(&name).await.map_err(|e| match e {
            NetlinkError::NoSuchInterface(_) => anyhow!(e),
            other => anyhow!(other).context(format!("looking up {role} interface {name}")),
        })
    };
    let wan = lookup(settings.wan.clone(), "WAN").await?;
    let mut lans = Vec::new();
    for name in &settings.lan {
        lans.push(lookup(name.clone(), "LAN").await?);
    }
    let tag = |l: &Link| {
        l.ipv4
            .iter()
            .map(|p| IfacePrefix {
                iface: l.name.clone(),
                prefix: *p,
            })
            .collect::<Vec<_>>()
    };
    let lan_prefixes: Vec<_> = lans.iter().flat_map(tag).collect();
    check_no_overlap(&lan_prefixes, &tag(&wan))?;
    let pool = pool::resolve(&settings.external, &wan.name, &wan.ipv4, &lan_prefixes)?;
    let external = pool[0];
    let pool = pool.iter().map(Ipv4Prefix::addr).collect();
    for l in &lans {
        if l.ipv4.is_empty() {
            warn!(
                "iface.no_ipv4 name={}: no IPv4 address, so no internal prefix comes from it; \
                 its hosts are translated only if they fall inside another LAN's prefix",
                l.name
            );
        }
    }
    let attached = rtnl.all_ipv4().await?.into_iter().map(|(_, p)| p).collect();
    let distinct: BTreeSet<_> = lans
        .iter()
        .map(|l| l.ifindex)
        .chain([wan.ifindex])
        .collect();
    if distinct.len() != lans.len() + 1 {
        bail!("the WAN and LAN interface names must refer to distinct interfaces");
    }
    Ok(Topology {
        wan,
        lans,
        attached,
        external,
        pool,
    })
}

/// One interface natgw runs on.
#[derive(Debug)]
struct Iface {
    link: Link,
    role: Role,
    redirect_ok: bool,
    present: bool,
    /// XDP runs here in generic (SKB) mode.
    xdp_generic: bool,
}

impl Iface {
    fn config(&self) -> IfaceConfig {
        IfaceConfig {
            role: match self.role {
                Role::Lan => IfaceRole::Lan as u8,
                Role::Wan => IfaceRole::Wan as u8,
            },
            redirect_ok: u8::from(self.redirect_ok),
            rx_csum_partial: u8::from(self.link.is_veth()),
            rx_xdp_generic: u8::from(self.xdp_generic),
        }
    }
}

struct Daemon {
    settings: Settings,
    dirs: RuntimeDirs,
    _lock: InstanceLock,
    rtnl: Rtnl,
    netdev: Option<Netdev>,
    ebpf: Ebpf,
    log_task: Option<tokio::task::JoinHandle<()>>,
    maps: Option<GatewayMaps>,
    xdp: Vec<XdpAttachment>,
    tc: Vec<TcAttachment>,
    clsact_created: Option<(String, u32)>,
    /// Sysctl values natgw changed, with the values to restore (also recorded in
    /// the runtime directory, for after a crash).
    sysctl_restore: BTreeMap<String, String>,
    /// The address plan in `ADDR_CLASS` and `LAN_SOURCES`.
    addresses: AddressPlan,
    /// Data-path drop episodes in progress.
    episodes: Episodes,
    /// WAN ifindex whose clsact a crashed natgw had added.
    stale_clsact: Option<u32>,
    topology: Topology,
    ifaces: Vec<Iface>,
    pinned: bool,
    state: Option<StateFile>,
    /// Sends the ICMP errors of held SYNs and of `EVENTS`.
    icmp: Arc<IcmpSender>,
    /// Reads `EVENTS`.
    events_task: Option<tokio::task::JoinHandle<()>>,
    /// Counters of the fragment resender.
    fragments: Arc<fragments::Counters>,
    /// Sends on fragments that came before their first fragment (`FRAG_STASH`).
    fragments_task: Option<tokio::task::JoinHandle<()>>,
    /// The STUN responder on the external addresses.
    stun: Option<stun_responder::StunResponder>,
    /// The controller counters the state file holds.
    reported_counters: BTreeMap<String, u64>,
    /// Static forwards, the PCP/NAT-PMP server and the explicit mappings they make.
    port_mapping: port_mapping::PortMapping,
}

/// Why the daemon stops on its own.
enum Fatal {
    WanGone(String),
    NoLanLeft,
}

impl Daemon {
    fn maps(&mut self) -> Result<&mut GatewayMaps> {
        self.maps
            .as_mut()
            .ok_or_else(|| anyhow!("internal error: maps not taken"))
    }

    /// Pins the maps, fills them and attaches the programs.
    fn deploy(&mut self) -> Result<()> {
        let mut maps = GatewayMaps::take(&mut self.ebpf)?;
        self.dirs.create_pin_dir()?;
        self.pinned = true;
        maps.pin(&self.dirs)?;
        if let Some(ring) = maps.events.take() {
            self.events_task =
                icmp::spawn_event_reader(ring, Arc::clone(&self.icmp), self.lan_addresses());
        }
        self.maps = Some(maps);
        let stash = FragmentMaps::take(&mut self.ebpf)?;
        self.fragments_task = Some(fragments::spawn(stash, Arc::clone(&self.fragments)));

        self.netdev = match Netdev::open() {
            Ok(n) => Some(n),
            Err(e) => {
                warn!(
                    "xdp_features.unavailable error=\"{e}\": assuming no interface accepts XDP \
                     redirects, so the kernel forwards those packets (slower, still correct)"
                );
                None
            }
        };
        let links: Vec<(Link, Role)> = std::iter::once((self.topology.wan.clone(), Role::Wan))
            .chain(self.topology.lans.iter().cloned().map(|l| (l, Role::Lan)))
            .collect();
        for (link, role) in links {
            let redirect_ok = self.read_redirect_ok(&link).unwrap_or(false);
            self.ifaces.push(Iface {
                link,
                role,
                redirect_ok,
                present: true,
                xdp_generic: false,
            });
        }

        for i in 0..self.ifaces.len() {
            let (ifindex, cfg) = (self.ifaces[i].link.ifindex, self.ifaces[i].config());
            let name = self.ifaces[i].link.name.clone();
            self.maps()?
                .set_iface(ifindex, cfg)
                .with_context(|| format!("registering {name} in IFACES"))?;
        }
        self.apply_addresses()
            .context("filling the source checks (ADDR_CLASS, LAN_SOURCES)")?;

        let mode = self.settings.xdp_mode;
        for i in 0..self.ifaces.len() {
            let (name, ifindex, role) = {
                let f = &self.ifaces[i];
                (f.link.name.clone(), f.link.ifindex, f.role)
            };
            let prog = match role {
                Role::Lan => programs::XDP_LAN,
                Role::Wan => programs::XDP_WAN,
            };
            let att = loader::attach_xdp(&mut self.ebpf, prog, &name, ifindex, mode)?;
            if att.mode == AttachedMode::Skb {
                self.ifaces[i].xdp_generic = true;
                let cfg = self.ifaces[i].config();
                self.maps()?
                    .set_iface(ifindex, cfg)
                    .with_context(|| format!("registering {name}'s XDP mode in IFACES"))?;
            }
            self.xdp.push(att);
        }

        let wan = self.topology.wan.clone();
        // A clsact left by a crashed natgw counts as ours, so this run removes it.
        if loader::add_clsact(&wan.name)? || self.stale_clsact == Some(wan.ifindex) {
            self.clsact_created = Some((wan.name.clone(), wan.ifindex));
        }
        for (prog, hook) in [
            (programs::TC_WAN_INGRESS, TcAttachType::Ingress),
            (programs::TC_WAN_EGRESS, TcAttachType::Egress),
        ] {
            let att = loader::attach_tc(&mut self.ebpf, prog, &wan.name, wan.ifindex, hook)?;
            self.tc.push(att);
        }
        let lans: Vec<(String, u32)> = self
            .ifaces
            .iter()
            .filter(|f| f.role == Role::Lan)
            .map(|f| (f.link.name.clone(), f.link.ifindex))
            .collect();
        // Internal hosts reach the gateway's own services on its external addresses
        // through the hairpin path, which delivers them through lo with a source that
        // is one of the gateway's addresses: accept_local on lo lets them in. Only on
        // lo: nothing but that path can inject packets there, while on a LAN
        // interface it would let LAN hosts speak as the gateway.
        if let Err(e) = self.set_sysctl(system::LO_ACCEPT_LOCAL, "1") {
            warn!(
                "lo.accept_local_failed error=\"{e:#}\": LAN hosts cannot reach the gateway's \
                 services on its external address through hairpinning"
            );
        }
        let lo = (
            "lo".to_owned(),
            1,
            programs::TC_LO_EGRESS,
            TcAttachType::Egress,
        );
        let lan_hooks = lans.into_iter().map(|(name, ifindex)| {
            (
                name,
                ifindex,
                programs::TC_LAN_INGRESS,
                TcAttachType::Ingress,
            )
        });
        for (name, ifindex, prog, hook) in lan_hooks.chain([lo]) {
            let att = match loader::attach_tc(&mut self.ebpf, prog, &name, ifindex, hook) {
                Ok(att) => att,
                Err(first) => {
                    // Kernels without tcx need a clsact qdisc; natgw leaves the one it
                    // adds on a LAN interface or lo in place when it exits.
                    if !loader::add_clsact(&name)? {
                        return Err(first.into());
                    }
                    loader::attach_tc(&mut self.ebpf, prog, &name, ifindex, hook)?
                }
            };
            self.tc.push(att);
        }

        let pool = self.topology.pool.clone();
        crate::datapath::maps::write_external_pool(&mut self.ebpf, &pool)
            .context("filling the external address pool (EXT_ADDRS, EXT_SET)")?;
        // Before the forwards: a static forward of a STUN port then fails to claim it.
        self.start_stun()?;
        self.start_port_mapping()?;
        let config = self.data_path_config();
        self.maps()?
            .write_config(&config)
            .context("writing CONFIG")?;

        let state = self.build_state()?;
        self.dirs.write_state(&state)?;
        self.reported_counters = state.controller_counters.clone();
        self.state = Some(state);
        self.log_started();
        Ok(())
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
                },
            filter_udp: s.filtering.udp.mode() as u8,
            filter_tcp: s.filtering.tcp.mode() as u8,
            filter_icmp: s.filtering.icmp.mode() as u8,
            // At most MAX_EXTERNAL_ADDRS (16), checked with the settings.
            ext_count: u8::try_from(self.topology.pool.len()).unwrap_or(u8::MAX),
            cpus: possible_cpus(),
        }
    }

    /// The address ICMP errors about packets from each LAN interface come from: its
    /// first IPv4 address.
    fn lan_addresses(&self) -> HashMap<u32, Ipv4Addr> {
        self.topology
            .lans
            .iter()
            .filter_map(|l| l.ipv4.first().map(|p| (l.ifindex, p.addr())))
            .collect()
    }

    /// The address plan of the present interfaces.
    fn address_plan(&self) -> AddressPlan {
        let lans = self
            .ifaces
            .iter()
            .filter(|i| i.role == Role::Lan && i.present)
            .map(|i| LanIface {
                ifindex: i.link.ifindex,
                prefixes: i.link.ipv4.clone(),
            })
            .collect();
        AddressPlan::new(lans, &self.topology.attached)
    }

    /// Brings `ADDR_CLASS`, `LAN_SOURCES` and the explicit mappings' idea of the
    /// internal hosts up to date with the interfaces.
    fn apply_addresses(&mut self) -> Result<()> {
        let plan = self.address_plan();
        if plan == self.addresses {
            return Ok(());
        }
        let old = std::mem::take(&mut self.addresses);
        let applied = self.maps()?.apply_address_plan(&old, &plan);
        self.port_mapping.set_hosts(&plan);
        self.addresses = plan;
        applied?;
        Ok(())
    }

    /// Re-reads the gateway's addresses after a change anywhere and applies them.
    async fn refresh_addresses(&mut self) {
        match self.rtnl.all_ipv4().await {
            Ok(all) => self.topology.attached = all.into_iter().map(|(_, p)| p).collect(),
            Err(e) => {
                warn!("addresses.unreadable error=\"{e}\": the source checks keep the old ones");
                return;
            }
        }
        if let Err(e) = self.apply_addresses() {
            error!("addresses.apply_failed error=\"{e:#}\"");
        }
    }

    /// Sets sysctl `key` to `value`, first recording its value to restore (in the
    /// runtime directory too, so the next start restores it after a crash).
    fn set_sysctl(&mut self, key: &str, value: &str) -> Result<()> {
        let previous = system::read_sysctl(key).with_context(|| format!("reading {key}"))?;
        if previous == value {
            return Ok(());
        }
        self.sysctl_restore
            .entry(key.to_owned())
            .or_insert(previous);
        self.dirs
            .write_sysctl_restore(&self.sysctl_restore)
            .context("recording the sysctl values to restore")?;
        system::write_sysctl(key, value).with_context(|| format!("writing {key}"))
    }

    fn read_redirect_ok(&mut self, link: &Link) -> Result<bool, GenlError> {
        match &mut self.netdev {
            Some(n) => n.xdp_features(link.ifindex).map(netdev::redirect_ok),
            None => Ok(false),
        }
    }

    fn build_state(&self) -> Result<StateFile> {
        let maps = self
            .maps
            .as_ref()
            .ok_or_else(|| anyhow!("internal error: maps not taken"))?;
        let interfaces = self
            .ifaces
            .iter()
            .map(|i| {
                let xdp = self.xdp.iter().find(|a| a.ifindex == i.link.ifindex);
                IfaceState {
                    name: i.link.name.clone(),
                    ifindex: i.link.ifindex,
                    role: i.role,
                    mtu: i.link.mtu,
                    kind: i.link.kind.clone(),
                    addresses: i.link.ipv4.clone(),
                    xdp_program: xdp.map_or("-", |a| a.program).to_owned(),
                    xdp_mode: xdp.map_or("-", |a| a.mode.name()).to_owned(),
                    tc_programs: self
                        .tc
                        .iter()
                        .filter(|t| t.ifindex == i.link.ifindex)
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
                .state
                .as_ref()
                .map_or_else(system::unix_time, |s| s.started_unix),
            pin_dir: self.dirs.pin_dir.clone(),
            map_ids: maps.ids()?,
            external_address: self.topology.external.addr(),
            external_addresses: self.topology.pool.clone(),
            interfaces,
            clsact_created: self.clsact_created.is_some(),
            settings: self.settings.clone(),
            controller_counters: self.controller_counters(),
            stun: self.stun.as_ref().map(stun_responder::StunResponder::state),
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
        for i in &self.ifaces {
            let xdp = self.xdp.iter().find(|a| a.ifindex == i.link.ifindex);
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
            .tc
            .iter()
            .map(|t| format!("{}({})", t.program, t.hook))
            .collect();
        info!(
            "tc.attached iface={} programs={} clsact={}",
            self.topology.wan.name,
            tc.join(","),
            if self.clsact_created.is_some() {
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
             max_mappings={} xdp_mode={} gc_interval={}s",
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
            s.gc_interval
        );
        info!(
            "natgw.ready pins={} state={}",
            self.dirs.pin_dir.display(),
            self.dirs.state_file().display()
        );
    }

    /// Runs until a signal or a fatal interface loss.
    async fn serve(&mut self, shutdown: &mut Shutdown) -> Result<()> {
        let mut sweeper = Sweeper::new(Policy::new(
            &self.settings.timeouts,
            self.settings.inbound_refresh,
        ));
        let mut tick = tokio::time::interval(Duration::from_secs(self.settings.gc_interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Held SYNs are due 6 s after they arrived, whatever the GC interval.
        let mut held_tick = tokio::time::interval(held_syns::CHECK_INTERVAL);
        held_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gc_failing = false;
        let mut held_failing = false;
        loop {
            tokio::select! {
                signal = shutdown.recv() => {
                    info!("natgw.stopping signal={signal}");
                    return Ok(());
                }
                _ = held_tick.tick() => {
                    self.expire_held_syns(&mut held_failing);
                    self.expire_explicit();
                    self.report_counters();
                    self.log_drop_episodes();
                }
                wake = self.port_mapping.wake() => self.on_port_mapping(wake).await,
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
                    let now = system::monotonic_ns();
                    let Some(maps) = self.maps.as_mut() else { continue };
                    // A full pass is many map syscalls; let the runtime move other tasks
                    // (the eBPF log reader) to the other worker meanwhile.
                    let result = tokio::task::block_in_place(|| sweeper.tick(&mut maps.nat, now));
                    match result {
                        Ok(stats) => {
                            gc_failing = false;
                            if stats.expired + stats.orphans + stats.refreshed
                                + stats.sessions_expired > 0
                            {
                                debug!(
                                    "gc.tick mappings={} expired={} orphans={} refreshed={} \
                                     candidates={} sessions={} sessions_expired={}",
                                    stats.mappings, stats.expired, stats.orphans,
                                    stats.refreshed, stats.candidates, stats.sessions,
                                    stats.sessions_expired
                                );
                            }
                        }
                        Err(e) => {
                            if !gc_failing {
                                error!("gc.failed error=\"{e}\": will retry every tick");
                            }
                            gc_failing = true;
                        }
                    }
                }
            }
        }
    }

    /// Ends the held SYNs that waited their 6 s: ICMP port unreachable to the sender,
    /// or nothing, by policy (RFC 5382 REQ-4).
    fn expire_held_syns(&mut self, failing: &mut bool) {
        let now = system::monotonic_ns();
        let policy = self.settings.unsolicited_syn;
        let sender = &self.icmp;
        let Some(maps) = self.maps.as_mut() else {
            return;
        };
        let result = held_syns::sweep(&mut maps.nat, now, |key, held| {
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
        let mut counters = self.icmp.counters().snapshot();
        counters.extend(self.fragments.snapshot());
        counters.extend(self.port_mapping.counters());
        counters
    }

    /// Rewrites the state file when the controller counters changed.
    fn report_counters(&mut self) {
        let now = self.controller_counters();
        let stun_changed = self
            .stun
            .as_mut()
            .is_some_and(stun_responder::StunResponder::counters_changed);
        if now != self.reported_counters || stun_changed {
            self.refresh_state_file();
            self.reported_counters = now;
        }
    }

    /// Logs the start and end of episodes of data-path drops worth attention (see
    /// [`crate::daemon::episodes`]): a line per episode, never per packet.
    fn log_drop_episodes(&mut self) {
        let Some(counters) = self.maps.as_ref().and_then(|m| m.counters().ok()) else {
            return;
        };
        for note in self.episodes.observe(std::time::Instant::now(), &counters) {
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
        let mut changed = false;
        for i in 0..self.ifaces.len() {
            if !self.ifaces[i].present {
                continue;
            }
            let (name, ifindex) = (
                self.ifaces[i].link.name.clone(),
                self.ifaces[i].link.ifindex,
            );
            let still_there = nix::net::if_::if_nametoindex(name.as_str()).ok() == Some(ifindex);
            let features = if still_there {
                let link = self.ifaces[i].link.clone();
                self.read_redirect_ok(&link)
            } else {
                Err(GenlError::NoDevice(ifindex))
            };
            match features {
                Ok(ok) if ok != self.ifaces[i].redirect_ok => {
                    self.ifaces[i].redirect_ok = ok;
                    let cfg = self.ifaces[i].config();
                    info!(
                        "iface.redirect name={name} ifindex={ifindex} redirect_ok={ok}{}",
                        if ok {
                            ": XDP redirects into it are delivered now"
                        } else {
                            ": XDP redirects into it would be lost; the kernel forwards instead"
                        }
                    );
                    if let Some(m) = self.maps.as_mut() {
                        if let Err(e) = m.set_iface(ifindex, cfg) {
                            error!("iface.update_failed name={name} error=\"{e}\"");
                        }
                    }
                    changed = true;
                }
                Ok(_) => {}
                Err(GenlError::NoDevice(_)) => {
                    self.interface_vanished(i)?;
                    changed = true;
                }
                Err(e) => debug!("xdp_features.failed name={name} error=\"{e}\""),
            }
        }
        if changed {
            self.refresh_state_file();
        }
        Ok(())
    }

    fn interface_vanished(&mut self, i: usize) -> Result<(), Fatal> {
        self.ifaces[i].present = false;
        let (name, ifindex, role) = (
            self.ifaces[i].link.name.clone(),
            self.ifaces[i].link.ifindex,
            self.ifaces[i].role,
        );
        // The kernel dropped the attachments with the device.
        self.xdp.retain(|a| a.ifindex != ifindex);
        self.tc.retain(|a| a.ifindex != ifindex);
        if role == Role::Wan {
            error!("iface.vanished name={name} ifindex={ifindex} role=wan");
            return Err(Fatal::WanGone(name));
        }
        if let Some(m) = self.maps.as_mut() {
            let _ = m.remove_iface(ifindex);
        }
        if let Err(e) = self.apply_addresses() {
            error!("addresses.apply_failed error=\"{e:#}\"");
        }
        let left: Vec<&str> = self
            .ifaces
            .iter()
            .filter(|f| f.role == Role::Lan && f.present)
            .map(|f| f.link.name.as_str())
            .collect();
        if left.is_empty() {
            error!("iface.vanished name={name} ifindex={ifindex} role=lan remaining=none");
            return Err(Fatal::NoLanLeft);
        }
        error!(
            "iface.vanished name={name} ifindex={ifindex} role=lan remaining={}: natgw keeps \
             translating for the remaining LAN interfaces; restart it to use {name} again",
            left.join(",")
        );
        Ok(())
    }

    fn refresh_state_file(&mut self) {
        match self.build_state() {
            Ok(state) => {
                if let Err(e) = self.dirs.write_state(&state) {
                    warn!("state.write_failed error=\"{e}\"");
                }
                self.state = Some(state);
            }
            Err(e) => warn!("state.write_failed error=\"{e:#}\""),
        }
    }

    /// Undoes everything `deploy` did, as far as it got. Never fails: problems are
    /// logged and the rest is still undone.
    async fn teardown(&mut self) {
        let mappings = self
            .maps
            .as_ref()
            .and_then(|m| m.mapping_count().ok())
            .unwrap_or(0);
        if let Some(m) = self.maps.as_mut() {
            if let Err(e) = m.write_config(&Config::default()) {
                debug!("teardown.config error=\"{e}\"");
            }
        }
        let mut detached = Vec::new();
        for att in self.xdp.drain(..) {
            let what = format!("{}@{}", att.program, att.iface);
            match att.detach() {
                Ok(()) => detached.push(what),
                Err(e) => warn!("teardown.detach_failed program={what} error=\"{e}\""),
            }
        }
        for att in self.tc.drain(..) {
            let what = format!("{}@{}({})", att.program, att.iface, att.hook);
            match att.detach() {
                Ok(()) => detached.push(what),
                Err(e) => warn!("teardown.detach_failed program={what} error=\"{e}\""),
            }
        }
        if !std::mem::take(&mut self.sysctl_restore).is_empty() {
            restore_sysctls(&self.dirs, "teardown.sysctl_restored");
        }
        if let Some((name, ifindex)) = self.clsact_created.take() {
            let wan_present = self.ifaces.iter().any(|i| i.role == Role::Wan && i.present);
            if wan_present || self.ifaces.is_empty() {
                match self.rtnl.delete_clsact(ifindex, &name).await {
                    Ok(()) => debug!("teardown.clsact_removed iface={name}"),
                    Err(e) => warn!("teardown.clsact_failed error=\"{e}\""),
                }
            }
        }
        if self.pinned {
            if let Err(e) = self.dirs.remove_pins() {
                warn!("teardown.unpin_failed error=\"{e}\"");
            }
        }
        if let Err(e) = self.dirs.remove_state() {
            warn!("teardown.state_failed error=\"{e}\"");
        }
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
        if let Some(task) = self.events_task.take() {
            task.abort();
        }
        if let Some(task) = self.fragments_task.take() {
            task.abort();
        }
        if let Some(stun) = self.stun.take() {
            stun.stop();
        }
        info!(
            "natgw.stopped detached={} mappings_dropped={mappings} pins_removed={}",
            if detached.is_empty() {
                "-".to_owned()
            } else {
                detached.join(",")
            },
            self.pinned
        );
    }
}

/// Possible CPUs (what per-CPU maps are sized by): the stride of the data path's
/// per-CPU IP identification sequences. When it cannot be read, 64: more than the
/// boxes natgw targets have, at the cost of shorter sequences.
fn possible_cpus() -> u32 {
    aya::util::nr_cpus().map_or(64, |n| u32::try_from(n).unwrap_or(u32::MAX))
}
