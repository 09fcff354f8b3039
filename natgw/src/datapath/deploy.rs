//! The data path deployed on the host, as one handle: the loaded eBPF object, its
//! maps, the interfaces it runs on, and an undo log of every change deploying made
//! to the host (pins, attachments, the clsact qdisc, sysctls, `CONFIG`), so that a
//! failed start or a stop undoes exactly what was done, newest first.
//!
//! Deploying goes in the order that fails closed: `IFACES` and the source checks
//! (`ADDR_CLASS`: which sources are internal) are filled before any program is
//! attached; `tc_wan_egress`, whose leak guard drops any packet leaving the WAN with
//! an internal source whether or not natgw is ready, is attached first; `CONFIG`
//! (with `CONFIG_F_READY`) is written last ([`DataPath::enable`]), and only then does
//! natgw turn on forwarding on the LAN interfaces ([`DataPath::forward_lans`]).
//!
//! The attachments are pinned bpf links (see [`loader`]): the data path outlives the
//! process. A natgw that stops or dies leaves it translating; the next one adopts
//! the maps and replaces the programs in place ([`DataPath::adopted`]). Only a
//! failed first start, or the operator's `natgw stop --flush` ([`crate::daemon::flush`]), undoes
//! the deployment: forwarding off on the LAN interfaces first, then `CONFIG`
//! cleared, programs detached, pins removed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};
use aya::programs::TcAttachType;
use aya::Ebpf;
use log::{debug, info, warn};
use natgw_common::{Config, IfaceConfig, IfaceRole};

use crate::config::XdpModeChoice;
use crate::datapath::addresses::{AddressPlan, LanIface};
use crate::datapath::dirs::RuntimeDirs;
use crate::datapath::loader::{self, programs, AttachedMode, TcAttachment, XdpAttachment};
use crate::datapath::maps::{self, GatewayMaps, MapsError};
use crate::datapath::netlink::netdev::{self, GenlError, Netdev};
use crate::datapath::netlink::{Link, Rtnl};
use crate::datapath::system;
use crate::datapath::topology::{Role, Topology};
use natgw_proto::prefix::Ipv4Prefix;

/// One interface natgw runs on.
#[derive(Debug)]
pub struct Iface {
    /// The link as found at start.
    pub link: Link,
    /// LAN or WAN.
    pub role: Role,
    /// Frames redirected into it are delivered (`ndo_xdp_xmit`).
    pub redirect_ok: bool,
    /// False once it has disappeared.
    pub present: bool,
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

/// One change deploying made, with what undoing it needs.
#[derive(Debug)]
enum Change {
    /// The maps were created and pinned by this natgw (not adopted).
    Pinned,
    /// Forwarding was turned on for the LAN interfaces.
    Forwarding(Vec<String>),
    Xdp(XdpAttachment),
    /// natgw added this clsact qdisc (or a crashed natgw did).
    Clsact {
        name: String,
        ifindex: u32,
    },
    Tc(TcAttachment),
    /// A sysctl was changed; its old value is recorded in the runtime directory.
    Sysctl,
    /// `CONFIG` is written with `CONFIG_F_READY`: the programs translate.
    Enabled,
}

/// A change the interface watch noticed.
#[derive(Debug, PartialEq, Eq)]
pub enum IfaceEvent {
    /// `redirect_ok` of interface `name` changed.
    Redirect {
        /// Its name.
        name: String,
        /// The new value.
        ok: bool,
    },
    /// Interface `name` disappeared (its attachments went with it).
    Vanished {
        /// Its name.
        name: String,
        /// Its role.
        role: Role,
    },
}

/// What [`DataPath::teardown`] did, for the last log line.
#[derive(Debug, Default)]
pub struct Undone {
    /// `program@iface` of each detached program.
    pub detached: Vec<String>,
    /// Whether the pins were removed.
    pub unpinned: bool,
}

/// The deployed data path.
pub struct DataPath {
    ebpf: Ebpf,
    maps: GatewayMaps,
    ifaces: Vec<Iface>,
    netdev: Option<Netdev>,
    /// Sysctl values changed, with the values to restore (also recorded in the
    /// runtime directory, for after a crash).
    sysctls: BTreeMap<String, String>,
    /// The address plan in `ADDR_CLASS` and `LAN_SOURCES`.
    addresses: AddressPlan,
    /// What to undo, oldest first.
    changes: Vec<Change>,
    /// The maps (and the links) were a previous natgw's.
    adopted: bool,
    /// The attachments are pinned links that outlive natgw.
    pinned_links: bool,
}

impl DataPath {
    /// Takes the maps of the loaded object (pinned by the loader). `adopted`: they
    /// are a previous natgw's, and so is the data path on the hooks.
    ///
    /// # Errors
    /// When a map is missing (the caller removes the pins it created).
    pub fn new(mut ebpf: Ebpf, adopted: bool) -> Result<Self> {
        let mut changes = Vec::new();
        if !adopted {
            changes.push(Change::Pinned);
        }
        let maps = GatewayMaps::take(&mut ebpf)?;
        let dp = Self {
            ebpf,
            maps,
            ifaces: Vec::new(),
            netdev: None,
            sysctls: BTreeMap::new(),
            addresses: AddressPlan::default(),
            changes,
            adopted,
            pinned_links: loader::links_outlive_natgw(),
        };
        Ok(dp)
    }

    /// Whether the maps and the data path were a previous natgw's.
    pub const fn adopted(&self) -> bool {
        self.adopted
    }

    /// Whether the data path outlives this process.
    pub const fn outlives_natgw(&self) -> bool {
        self.pinned_links
    }

    /// The loaded object, for taking the maps the services own.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The maps.
    pub fn maps(&self) -> &GatewayMaps {
        &self.maps
    }

    /// The maps, to write.
    pub fn maps_mut(&mut self) -> &mut GatewayMaps {
        &mut self.maps
    }

    /// The interfaces, WAN first.
    pub fn ifaces(&self) -> &[Iface] {
        &self.ifaces
    }

    /// The address plan the source checks hold.
    pub const fn addresses(&self) -> &AddressPlan {
        &self.addresses
    }

    /// The XDP program on `ifindex`, if any.
    pub fn xdp_on(&self, ifindex: u32) -> Option<&XdpAttachment> {
        self.changes.iter().find_map(|c| match c {
            Change::Xdp(a) if a.ifindex == ifindex => Some(a),
            _ => None,
        })
    }

    /// The TC programs on `ifindex`.
    pub fn tc_on(&self, ifindex: u32) -> impl Iterator<Item = &TcAttachment> {
        self.changes.iter().filter_map(move |c| match c {
            Change::Tc(a) if a.ifindex == ifindex => Some(a),
            _ => None,
        })
    }

    /// Every TC program.
    pub fn tc(&self) -> impl Iterator<Item = &TcAttachment> {
        self.changes.iter().filter_map(|c| match c {
            Change::Tc(a) => Some(a),
            _ => None,
        })
    }

    /// Whether natgw owns the WAN's clsact qdisc (and removes it on teardown).
    pub fn owns_clsact(&self) -> bool {
        self.changes
            .iter()
            .any(|c| matches!(c, Change::Clsact { .. }))
    }

    /// Registers the interfaces in `IFACES`, fills the source checks, and attaches the
    /// programs: TC on the WAN (egress first: its leak guard; then ingress), on each
    /// LAN (ingress) and on `lo` (egress, for hairpinned replies of the gateway's own
    /// services), then XDP on every interface. Each replaces a previous natgw's
    /// program in place where that one's link is pinned; links of interfaces no
    /// longer in use go. `stale_clsact` is the WAN ifindex whose clsact a previous
    /// natgw added: it counts as this run's.
    ///
    /// # Errors
    /// When a map cannot be written or a program attached (what was done is in the
    /// undo log).
    pub fn attach(
        &mut self,
        topology: &Topology,
        mode: XdpModeChoice,
        stale_clsact: Option<u32>,
        dirs: &RuntimeDirs,
    ) -> Result<()> {
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
        let links = std::iter::once((topology.wan.clone(), Role::Wan))
            .chain(topology.lans.iter().cloned().map(|l| (l, Role::Lan)));
        for (link, role) in links {
            let redirect_ok = self.read_redirect_ok(link.ifindex).unwrap_or(false);
            // An adopted XDP link keeps the mode it was attached in.
            let xdp_generic = self.adopted && link.xdp_generic;
            self.ifaces.push(Iface {
                link,
                role,
                redirect_ok,
                present: true,
                xdp_generic,
            });
        }
        if self.adopted {
            let keep: Vec<u32> = self.ifaces.iter().map(|i| i.link.ifindex).collect();
            self.maps
                .retain_ifaces(&keep)
                .context("removing interfaces no longer in use from IFACES")?;
        }
        for iface in &self.ifaces {
            self.maps
                .set_iface(iface.link.ifindex, iface.config())
                .with_context(|| format!("registering {} in IFACES", iface.link.name))?;
        }
        self.apply_addresses(&topology.attached)
            .context("filling the source checks (ADDR_CLASS, LAN_SOURCES)")?;
        if self.adopted {
            self.maps
                .prune_address_plan(&self.addresses)
                .context("removing a previous natgw's source checks")?;
        }

        let mut plan: Vec<Attach> = vec![
            Attach::Tc(
                programs::TC_WAN_EGRESS,
                topology.wan.clone_name(),
                TcAttachType::Egress,
            ),
            Attach::Tc(
                programs::TC_WAN_INGRESS,
                topology.wan.clone_name(),
                TcAttachType::Ingress,
            ),
        ];
        plan.extend(topology.lans.iter().map(|l| {
            Attach::Tc(
                programs::TC_LAN_INGRESS,
                l.clone_name(),
                TcAttachType::Ingress,
            )
        }));
        plan.push(Attach::Tc(
            programs::TC_LO_EGRESS,
            ("lo".to_owned(), 1),
            TcAttachType::Egress,
        ));
        plan.extend(self.ifaces.iter().map(|i| {
            let prog = match i.role {
                Role::Lan => programs::XDP_LAN,
                Role::Wan => programs::XDP_WAN,
            };
            Attach::Xdp(prog, i.link.clone_name(), i.xdp_generic)
        }));
        if self.pinned_links {
            self.unpin_stale_links(dirs, &plan);
        }

        let wan = &topology.wan;
        if loader::add_clsact(&wan.name)? || stale_clsact == Some(wan.ifindex) {
            self.changes.push(Change::Clsact {
                name: wan.name.clone(),
                ifindex: wan.ifindex,
            });
        }
        // Internal hosts reach the gateway's own services on its external addresses
        // through the hairpin path, which delivers them through lo with a source that
        // is one of the gateway's addresses: accept_local on lo lets them in. Only on
        // lo: nothing but that path can inject packets there, while on a LAN
        // interface it would let LAN hosts speak as the gateway.
        if let Err(e) = self.set_sysctl(dirs, system::LO_ACCEPT_LOCAL, "1") {
            warn!(
                "lo.accept_local_failed error=\"{e:#}\": LAN hosts cannot reach the gateway's \
                 services on its external address through hairpinning"
            );
        }
        for step in plan {
            let pin = |prog: &str, ifindex: u32| {
                self.pinned_links
                    .then(|| loader::link_pin(&dirs.pin_dir, prog, ifindex))
            };
            match step {
                Attach::Tc(prog, (name, ifindex), hook) => {
                    let pin = pin(prog, ifindex);
                    let att = match loader::attach_tc(
                        &mut self.ebpf,
                        prog,
                        &name,
                        ifindex,
                        hook,
                        pin.as_deref(),
                    ) {
                        Ok(att) => att,
                        Err(first) if !self.pinned_links => {
                            // Kernels without tcx need a clsact qdisc; natgw leaves the
                            // one it adds on a LAN interface or lo in place when it exits.
                            if !loader::add_clsact(&name)? {
                                return Err(first.into());
                            }
                            loader::attach_tc(&mut self.ebpf, prog, &name, ifindex, hook, None)?
                        }
                        Err(e) => return Err(e.into()),
                    };
                    self.changes.push(Change::Tc(att));
                }
                Attach::Xdp(prog, (name, ifindex), generic) => {
                    let pin = pin(prog, ifindex);
                    let current = Some(if generic {
                        AttachedMode::Skb
                    } else {
                        AttachedMode::Driver
                    });
                    let att = loader::attach_xdp(
                        &mut self.ebpf,
                        prog,
                        &name,
                        ifindex,
                        mode,
                        pin.as_deref(),
                        current,
                    )?;
                    let now_generic = att.mode == AttachedMode::Skb;
                    self.changes.push(Change::Xdp(att));
                    if let Some(i) = self.ifaces.iter_mut().find(|i| i.link.ifindex == ifindex) {
                        if i.xdp_generic != now_generic {
                            i.xdp_generic = now_generic;
                            self.maps.set_iface(ifindex, i.config()).with_context(|| {
                                format!("registering {name}'s XDP mode in IFACES")
                            })?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes the pinned links of a previous natgw that this one does not attach
    /// (an interface no longer configured, or of another role): removing the pin
    /// detaches the program.
    fn unpin_stale_links(&self, dirs: &RuntimeDirs, plan: &[Attach]) {
        let wanted: Vec<String> = plan
            .iter()
            .map(|a| {
                let (prog, ifindex) = match a {
                    Attach::Tc(p, (_, i), _) | Attach::Xdp(p, (_, i), _) => (*p, *i),
                };
                loader::link_pin(&dirs.pin_dir, prog, ifindex)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        for name in dirs.existing_pins() {
            if name.starts_with(loader::LINK_PIN_PREFIX) && !wanted.contains(&name) {
                match std::fs::remove_file(dirs.pin_path(&name)) {
                    Ok(()) => info!("link.removed pin={name}: no longer in use"),
                    Err(e) => warn!("link.remove_failed pin={name} error=\"{e}\""),
                }
            }
        }
    }

    /// Turns on forwarding on every LAN interface (and the WAN, for inbound traffic):
    /// the last step of a start, once the leak guard is attached and the data path
    /// is ready. Before it, natgw turned it off on the LAN interfaces
    /// ([`lans_forwarding_off`]) so that nothing is forwarded untranslated while the
    /// programs load.
    ///
    /// # Errors
    /// When a sysctl cannot be written.
    pub fn forward_lans(&mut self) -> Result<()> {
        let mut names = Vec::new();
        for i in self.ifaces.iter().filter(|i| i.present) {
            let key = system::forwarding_key(&i.link.name);
            system::write_sysctl(&key, "1").with_context(|| format!("writing {key}"))?;
            names.push(i.link.name.clone());
        }
        self.changes.push(Change::Forwarding(names));
        Ok(())
    }

    /// Writes the external address pool (`EXT_ADDRS`, `EXT_SET`).
    ///
    /// # Errors
    /// When the maps cannot be written.
    pub fn write_pool(&mut self, pool: &[Ipv4Addr]) -> Result<(), MapsError> {
        maps::write_external_pool(&mut self.ebpf, pool)
    }

    /// Writes `config` into `CONFIG`; with `CONFIG_F_READY` the programs translate.
    ///
    /// # Errors
    /// When the map cannot be written.
    pub fn enable(&mut self, config: &Config) -> Result<(), MapsError> {
        self.maps.write_config(config)?;
        if !self.changes.iter().any(|c| matches!(c, Change::Enabled)) {
            self.changes.push(Change::Enabled);
        }
        Ok(())
    }

    /// Brings `ADDR_CLASS` and `LAN_SOURCES` up to date with the present interfaces
    /// and `attached`, every IPv4 address of the gateway ([`Self::addresses`] is the
    /// new plan).
    ///
    /// # Errors
    /// When the maps cannot be written (the plan counts as applied anyway, so the
    /// next change retries from it).
    pub fn apply_addresses(&mut self, attached: &[Ipv4Prefix]) -> Result<(), MapsError> {
        let lans = self
            .ifaces
            .iter()
            .filter(|i| i.role == Role::Lan && i.present)
            .map(|i| LanIface {
                ifindex: i.link.ifindex,
                prefixes: i.link.ipv4.clone(),
            })
            .collect();
        let plan = AddressPlan::new(lans, attached);
        if plan == self.addresses {
            return Ok(());
        }
        let old = std::mem::replace(&mut self.addresses, plan);
        self.maps.apply_address_plan(&old, &self.addresses)
    }

    /// Sets sysctl `key` to `value`, first recording its value to restore (in the
    /// runtime directory too, so the next start restores it after a crash).
    fn set_sysctl(&mut self, dirs: &RuntimeDirs, key: &str, value: &str) -> Result<()> {
        let previous = system::read_sysctl(key).with_context(|| format!("reading {key}"))?;
        if previous == value {
            return Ok(());
        }
        self.sysctls.entry(key.to_owned()).or_insert(previous);
        dirs.write_sysctl_restore(&self.sysctls)
            .context("recording the sysctl values to restore")?;
        if !self.changes.iter().any(|c| matches!(c, Change::Sysctl)) {
            self.changes.push(Change::Sysctl);
        }
        system::write_sysctl(key, value).with_context(|| format!("writing {key}"))
    }

    fn read_redirect_ok(&mut self, ifindex: u32) -> Result<bool, GenlError> {
        match &mut self.netdev {
            Some(n) => n.xdp_features(ifindex).map(netdev::redirect_ok),
            None => Ok(false),
        }
    }

    /// Looks at each present interface: gone (its attachments went with it, and a LAN
    /// is dropped from `IFACES`), or a new `redirect_ok` (written to `IFACES`).
    pub fn watch_interfaces(&mut self) -> Vec<IfaceEvent> {
        let mut events = Vec::new();
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
                self.read_redirect_ok(ifindex)
            } else {
                Err(GenlError::NoDevice(ifindex))
            };
            match features {
                Ok(ok) if ok != self.ifaces[i].redirect_ok => {
                    self.ifaces[i].redirect_ok = ok;
                    if let Err(e) = self.maps.set_iface(ifindex, self.ifaces[i].config()) {
                        warn!("iface.update_failed name={name} error=\"{e}\"");
                    }
                    events.push(IfaceEvent::Redirect { name, ok });
                }
                Ok(_) => {}
                Err(GenlError::NoDevice(_)) => {
                    let role = self.ifaces[i].role;
                    self.ifaces[i].present = false;
                    // The kernel dropped the attachments with the device, and a
                    // vanished WAN took its clsact along.
                    self.changes.retain(|c| match c {
                        Change::Xdp(a) => a.ifindex != ifindex,
                        Change::Tc(a) => a.ifindex != ifindex,
                        Change::Clsact { ifindex: q, .. } => *q != ifindex,
                        _ => true,
                    });
                    if role == Role::Lan {
                        let _ = self.maps.remove_iface(ifindex);
                    }
                    events.push(IfaceEvent::Vanished { name, role });
                }
                Err(e) => debug!("xdp_features.failed name={name} error=\"{e}\""),
            }
        }
        events
    }

    /// Undoes every change, newest first: forwarding off on the LAN interfaces,
    /// `CONFIG` cleared, programs detached, sysctls restored, natgw's clsact removed,
    /// pins removed. For a failed first start, and for a failed start that adopted
    /// nothing; a natgw that adopted a running data path leaves it running (see
    /// [`Self::release`]). Never fails: problems are logged and the rest is still
    /// undone.
    pub async fn teardown(&mut self, rtnl: &Rtnl, dirs: &RuntimeDirs) -> Undone {
        let mut undone = Undone::default();
        while let Some(change) = self.changes.pop() {
            match change {
                Change::Forwarding(names) => {
                    for name in names {
                        forwarding_off(&name, "teardown");
                    }
                }
                Change::Enabled => {
                    if let Err(e) = self.maps.write_config(&Config::default()) {
                        debug!("teardown.config error=\"{e}\"");
                    }
                }
                Change::Xdp(att) => {
                    let what = format!("{}@{}", att.program, att.iface);
                    match att.detach() {
                        Ok(()) => undone.detached.push(what),
                        Err(e) => warn!("teardown.detach_failed program={what} error=\"{e}\""),
                    }
                }
                Change::Tc(att) => {
                    let what = format!("{}@{}({})", att.program, att.iface, att.hook);
                    match att.detach() {
                        Ok(()) => undone.detached.push(what),
                        Err(e) => warn!("teardown.detach_failed program={what} error=\"{e}\""),
                    }
                }
                Change::Sysctl => {
                    self.sysctls.clear();
                    restore_sysctls(dirs, "teardown.sysctl_restored");
                }
                Change::Clsact { name, ifindex } => {
                    match rtnl.delete_clsact(ifindex, &name).await {
                        Ok(()) => debug!("teardown.clsact_removed iface={name}"),
                        Err(e) => warn!("teardown.clsact_failed error=\"{e}\""),
                    }
                }
                Change::Pinned => {
                    match dirs.remove_pins() {
                        Ok(()) => undone.unpinned = true,
                        Err(e) => warn!("teardown.unpin_failed error=\"{e}\""),
                    }
                    if let Err(e) = dirs.remove_layout() {
                        warn!("teardown.layout_failed error=\"{e}\"");
                    }
                }
            }
        }
        undone
    }

    /// Lets go of the data path without undoing anything: the pinned links keep the
    /// programs on their hooks and the maps alive, and the next natgw adopts them.
    /// What cannot outlive the process (attachments on kernels without tcx) is
    /// detached, and forwarding turned off first when that leaves a hook of the
    /// WAN empty. Returns `program@iface` of what was left attached.
    pub fn release(&mut self) -> Vec<String> {
        let mut kept = Vec::new();
        let mut owned = Vec::new();
        for change in self.changes.drain(..) {
            match change {
                Change::Xdp(att) if att.pinned() => {
                    kept.push(format!("{}@{}", att.program, att.iface));
                }
                Change::Tc(att) if att.pinned() => {
                    kept.push(format!("{}@{}({})", att.program, att.iface, att.hook));
                }
                Change::Xdp(att) => owned.push(att.detach()),
                Change::Tc(att) => owned.push(att.detach()),
                _ => {}
            }
        }
        if !owned.is_empty() {
            for i in self.ifaces.iter().filter(|i| i.role == Role::Lan) {
                forwarding_off(&i.link.name, "stop");
            }
        }
        kept
    }

    /// The number of mappings, or 0 when the map cannot be read.
    pub fn mapping_count(&self) -> usize {
        self.maps.mapping_count().unwrap_or(0)
    }
}

/// One step of [`DataPath::attach`]'s plan: program, (interface, ifindex), and the
/// TC hook or whether an adopted XDP link runs in generic mode.
enum Attach {
    Tc(&'static str, (String, u32), TcAttachType),
    Xdp(&'static str, (String, u32), bool),
}

/// Turns forwarding off on LAN interface `name` (logged as `event`): whatever it
/// receives is no longer routed, so nothing leaves the WAN untranslated.
fn forwarding_off(name: &str, event: &str) {
    let key = system::forwarding_key(name);
    match system::write_sysctl(&key, "0") {
        Ok(()) => info!("{event}.forwarding_off iface={name}"),
        // The interface went away with its settings.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!("{event}.forwarding_off_failed iface={name} error=\"{e}\""),
    }
}

/// The first step of a start that finds no data path to adopt: forwarding off on
/// the LAN interfaces `lans`, so that nothing they send is routed untranslated
/// while the programs load and attach ([`DataPath::forward_lans`] turns it on at
/// the end). Returns the interfaces where it was on.
///
/// # Errors
/// When a sysctl cannot be written: natgw does not start on a gateway it cannot
/// keep from leaking.
pub fn lans_forwarding_off(lans: &[crate::datapath::netlink::Link]) -> Result<Vec<String>> {
    let mut were_on = Vec::new();
    for l in lans {
        let key = system::forwarding_key(&l.name);
        let value = system::read_sysctl(&key).with_context(|| format!("reading {key}"))?;
        if value != "0" {
            system::write_sysctl(&key, "0").with_context(|| format!("writing {key}"))?;
            were_on.push(l.name.clone());
        }
    }
    Ok(were_on)
}

/// Puts back the sysctl values natgw changed (recorded in `dirs`, so also those of
/// a natgw that died), logging each as `event`, and forgets them.
pub fn restore_sysctls(dirs: &RuntimeDirs, event: &str) {
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
