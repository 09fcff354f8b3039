//! The data path deployed on the host, as one handle: the loaded eBPF object, its
//! maps, the interfaces it runs on, and an undo log of every change deploying made
//! to the host (pins, attachments, the clsact qdisc, sysctls, `CONFIG`), so that a
//! failed start or a stop undoes exactly what was done, newest first.
//!
//! Deploying goes in the order that keeps the programs harmless until the end:
//! `IFACES` and the source checks are filled before any program is attached, and
//! `CONFIG` (with `CONFIG_F_READY`) is written last ([`DataPath::enable`]); until then
//! the programs pass all traffic untouched. Undoing clears `CONFIG` first for the
//! same reason.

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
    /// The maps are pinned under the pin directory.
    Pinned,
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
}

impl DataPath {
    /// Takes the maps of the loaded object and pins them.
    ///
    /// # Errors
    /// When a map is missing or cannot be pinned (what was pinned is in the undo log;
    /// call [`Self::teardown`]).
    pub fn new(mut ebpf: Ebpf, dirs: &RuntimeDirs) -> Result<Self> {
        let maps = GatewayMaps::take(&mut ebpf)?;
        let mut dp = Self {
            ebpf,
            maps,
            ifaces: Vec::new(),
            netdev: None,
            sysctls: BTreeMap::new(),
            addresses: AddressPlan::default(),
            changes: Vec::new(),
        };
        dirs.create_pin_dir()?;
        dp.changes.push(Change::Pinned);
        dp.maps.pin(dirs)?;
        Ok(dp)
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
    /// programs: XDP on every interface, TC on the WAN (ingress and egress), on each
    /// LAN (ingress) and on `lo` (egress, for hairpinned replies of the gateway's own
    /// services). `stale_clsact` is the WAN ifindex whose clsact a crashed natgw
    /// added: it counts as this run's.
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
            self.ifaces.push(Iface {
                link,
                role,
                redirect_ok,
                present: true,
                xdp_generic: false,
            });
        }
        for iface in &self.ifaces {
            self.maps
                .set_iface(iface.link.ifindex, iface.config())
                .with_context(|| format!("registering {} in IFACES", iface.link.name))?;
        }
        self.apply_addresses(&topology.attached)
            .context("filling the source checks (ADDR_CLASS, LAN_SOURCES)")?;

        for i in 0..self.ifaces.len() {
            let (name, ifindex) = (
                self.ifaces[i].link.name.clone(),
                self.ifaces[i].link.ifindex,
            );
            let prog = match self.ifaces[i].role {
                Role::Lan => programs::XDP_LAN,
                Role::Wan => programs::XDP_WAN,
            };
            let att = loader::attach_xdp(&mut self.ebpf, prog, &name, ifindex, mode)?;
            let generic = att.mode == AttachedMode::Skb;
            self.changes.push(Change::Xdp(att));
            if generic {
                self.ifaces[i].xdp_generic = true;
                self.maps
                    .set_iface(ifindex, self.ifaces[i].config())
                    .with_context(|| format!("registering {name}'s XDP mode in IFACES"))?;
            }
        }

        let wan = &topology.wan;
        if loader::add_clsact(&wan.name)? || stale_clsact == Some(wan.ifindex) {
            self.changes.push(Change::Clsact {
                name: wan.name.clone(),
                ifindex: wan.ifindex,
            });
        }
        for (prog, hook) in [
            (programs::TC_WAN_INGRESS, TcAttachType::Ingress),
            (programs::TC_WAN_EGRESS, TcAttachType::Egress),
        ] {
            let att = loader::attach_tc(&mut self.ebpf, prog, &wan.name, wan.ifindex, hook)?;
            self.changes.push(Change::Tc(att));
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
        let lan_hooks: Vec<(String, u32, &'static str, TcAttachType)> = topology
            .lans
            .iter()
            .map(|l| {
                let hook = TcAttachType::Ingress;
                (l.name.clone(), l.ifindex, programs::TC_LAN_INGRESS, hook)
            })
            .chain([(
                "lo".to_owned(),
                1,
                programs::TC_LO_EGRESS,
                TcAttachType::Egress,
            )])
            .collect();
        for (name, ifindex, prog, hook) in lan_hooks {
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
            self.changes.push(Change::Tc(att));
        }
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

    /// Undoes every change, newest first: `CONFIG` cleared, programs detached, sysctls
    /// restored, natgw's clsact removed, pins removed. Never fails: problems are
    /// logged and the rest is still undone.
    pub async fn teardown(&mut self, rtnl: &Rtnl, dirs: &RuntimeDirs) -> Undone {
        let mut undone = Undone::default();
        while let Some(change) = self.changes.pop() {
            match change {
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
                Change::Pinned => match dirs.remove_pins() {
                    Ok(()) => undone.unpinned = true,
                    Err(e) => warn!("teardown.unpin_failed error=\"{e}\""),
                },
            }
        }
        undone
    }

    /// The number of mappings, or 0 when the map cannot be read.
    pub fn mapping_count(&self) -> usize {
        self.maps.mapping_count().unwrap_or(0)
    }
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
