//! The daemon's explicit port mappings: the configuration's static forwards
//! (installed before the data path is marked ready), the PCP/NAT-PMP server on the
//! LAN sockets, the end of explicit mappings' lifetimes, and what follows a change
//! of the WAN's address.
//!
//! Address changes are watched over rtnetlink (`RTM_NEWADDR`/`RTM_DELADDR`). When
//! the external address comes from the WAN (no `--external` pool) and the WAN's
//! first IPv4 address changes:
//! 1. the STUN responder binds the new address and stops answering on the old one
//!    (first, so its ports are held before anything can be mapped there);
//! 2. explicit mappings move to the new address, keeping their ports where free;
//! 3. the data path is pointed at it (`EXT_ADDRS`, `CONFIG.ext_addr_be`), so new
//!    traffic mappings use it;
//! 4. traffic mappings on the old address are deleted: their connections cannot
//!    survive the change, and while they exist their internal endpoints' packets
//!    would keep leaving from an address the gateway no longer has;
//! 5. the PCP server announces the new address and sends every PCP client an
//!    unsolicited MAP response with its mapping's new external endpoint (RFC 6887
//!    §14.2; NAT-PMP clients get the address announcement, RFC 6886 §3.2.1).
//!
//! While the WAN has no IPv4 address at all, PCP and NAT-PMP requests fail with
//! NETWORK_FAILURE, the data path keeps the old address, and the STUN responder does
//! not answer (keeping its ports reserved).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use log::{info, warn};
use natgw_common::addr_be;

use super::Daemon;
use crate::config::ForwardProtocol;
use crate::datapath::addresses::AddressPlan;
use crate::datapath::maps::PcpFilters;
use crate::datapath::netlink::AddressWatch;
use crate::datapath::system;
use crate::nat_table::explicit::ExplicitEntry;
use crate::nat_table::explicit::{Defaults, ExplicitMappings};
use crate::nat_table::gc::{self, Policy};
use crate::services::pcp::{LanAddress, PcpService};
use natgw_proto::pcp::engine::DropReason;
use natgw_proto::pcp::table::{Protocol, TableError};

/// What the daemon keeps for explicit mappings.
#[derive(Default)]
pub(super) struct PortMapping {
    explicit: Option<ExplicitMappings<PcpFilters>>,
    server: Option<PcpService>,
    watch: Option<AddressWatch>,
    /// What the explicit mappings file holds.
    written: Option<Vec<ExplicitEntry>>,
}

/// Why the main loop woke up for port mapping.
pub(super) enum Wake {
    /// A datagram waits on PCP socket N.
    Request(usize),
    /// Announcements are due.
    Announce,
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
        let Some(server) = self.server.as_ref() else {
            return BTreeMap::new();
        };
        let (engine, replies) = server.stats();
        let mut out = BTreeMap::from([
            ("pcp_requests".to_owned(), engine.requests),
            ("pcp_succeeded".to_owned(), engine.succeeded),
            ("pcp_refused".to_owned(), engine.refused),
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
        let deadline = server.and_then(PcpService::next_timeout);
        let watch = self.watch.as_mut();
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
        }
    }
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

impl Daemon {
    /// Installs the static forwards and starts the PCP server (unless disabled).
    /// Runs before `CONFIG` is marked ready, so forwards exist before any traffic.
    pub(super) fn start_port_mapping(&mut self) -> Result<()> {
        let filters = PcpFilters::take(&mut self.ebpf)?;
        let s = &self.settings;
        let defaults = Defaults {
            port_range: s.port_range,
            filter_udp: s.filtering.udp.mode(),
            filter_tcp: s.filtering.tcp.mode(),
            policy: Policy::new(&s.timeouts, s.inbound_refresh),
        };
        let mut explicit = ExplicitMappings::new(
            self.topology.pool.clone(),
            self.addresses.clone(),
            defaults,
            filters,
        );
        let now_ns = system::monotonic_ns();
        let forwards = self.settings.forwards.clone();
        let maps = self
            .maps
            .as_mut()
            .ok_or_else(|| anyhow!("internal error: maps not taken"))?;
        for f in &forwards {
            if let Some(why) = self.addresses.refusal(*f.internal.ip()) {
                bail!("[[forward]] {f}: {why}; a forward leads to an internal host");
            }
            let protocol = match f.protocol {
                ForwardProtocol::Udp => Protocol::Udp,
                ForwardProtocol::Tcp => Protocol::Tcp,
            };
            let external = explicit
                .add_static(&mut maps.nat, protocol, f.external_port, f.internal, now_ns)
                .map_err(|e| anyhow!("[[forward]] {f}: {}", static_refusal(e)))?;
            info!(
                "forward.installed proto={} ext={external} int={}",
                f.protocol, f.internal
            );
        }
        self.port_mapping.explicit = Some(explicit);

        if self.settings.pcp.enabled {
            let lans: Vec<LanAddress> = self
                .topology
                .lans
                .iter()
                .flat_map(|l| {
                    l.ipv4.iter().map(|p| LanAddress {
                        iface: l.name.clone(),
                        prefix: *p,
                    })
                })
                .collect();
            let server = PcpService::bind(self.settings.pcp.server.clone(), &lans, Instant::now())?;
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
            self.port_mapping.server = Some(server);
        } else {
            info!("pcp.disabled: no PCP or NAT-PMP server (--no-pcp or pcp.enabled = false)");
        }
        self.port_mapping.watch = match AddressWatch::open() {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(
                    "wan.watch_failed error=\"{e}\": a change of the WAN's address will not be \
                     noticed; restart natgw after one"
                );
                None
            }
        };
        self.write_explicit_file();
        Ok(())
    }

    /// Handles what [`PortMapping::wake`] returned.
    pub(super) async fn on_port_mapping(&mut self, wake: Wake) {
        let now = Instant::now();
        let now_ns = system::monotonic_ns();
        match wake {
            Wake::Request(index) => {
                let pm = &mut self.port_mapping;
                let (Some(server), Some(explicit), Some(maps)) =
                    (pm.server.as_mut(), pm.explicit.as_mut(), self.maps.as_mut())
                else {
                    return;
                };
                let mut table = explicit.table(&mut maps.nat, now, now_ns);
                server.receive(index, now, &mut table);
                self.write_explicit_file();
            }
            Wake::Announce => {
                let pm = &mut self.port_mapping;
                let (Some(server), Some(explicit), Some(maps)) =
                    (pm.server.as_mut(), pm.explicit.as_mut(), self.maps.as_mut())
                else {
                    return;
                };
                server.on_timeout(now, &explicit.table(&mut maps.nat, now, now_ns));
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
                self.port_mapping.watch = None;
            }
        }
    }

    /// Ends the explicit mappings whose lifetime is over.
    pub(super) fn expire_explicit(&mut self) {
        let (Some(explicit), Some(maps)) =
            (self.port_mapping.explicit.as_mut(), self.maps.as_mut())
        else {
            return;
        };
        for e in explicit.expire(&mut maps.nat, Instant::now(), system::monotonic_ns()) {
            info!(
                "explicit.expired proto={} int={} ext={} holder={} outcome={}",
                e.key.protocol,
                e.key.internal_endpoint(),
                e.external,
                e.holder.name(),
                e.outcome.name()
            );
        }
        self.write_explicit_file();
    }

    /// Rewrites the explicit mappings file for `natgw mappings` when it changed.
    fn write_explicit_file(&mut self) {
        let Some(explicit) = self.port_mapping.explicit.as_ref() else {
            return;
        };
        let entries = explicit.entries();
        if self.port_mapping.written.as_ref() == Some(&entries) {
            return;
        }
        match self.dirs.write_explicit(&entries) {
            Ok(()) => self.port_mapping.written = Some(entries),
            Err(e) => warn!("explicit.write_failed error=\"{e}\""),
        }
    }

    /// The WAN's IPv4 addresses changed: follow its first one (see the module
    /// documentation).
    async fn wan_addresses_changed(&mut self) {
        let wan = self.topology.wan.name.clone();
        let link = match self.rtnl.link(&wan).await {
            Ok(l) => l,
            Err(e) => {
                warn!("wan.addresses_unreadable iface={wan} error=\"{e}\"");
                return;
            }
        };
        self.topology.wan.ipv4.clone_from(&link.ipv4);
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
        let now_ns = system::monotonic_ns();
        let old_pool = self.topology.pool.clone();
        let pool: Vec<Ipv4Addr> = link
            .ipv4
            .first()
            .map(|p| vec![p.addr()])
            .unwrap_or_default();
        // First: the responder's sockets must hold the STUN ports of a new address
        // before mappings can take ports there (see `stun_responder`).
        self.follow_stun(&pool);
        let (Some(explicit), Some(maps)) =
            (self.port_mapping.explicit.as_mut(), self.maps.as_mut())
        else {
            return;
        };
        let Some(main) = link.ipv4.first().copied() else {
            if !explicit.pool().is_empty() {
                warn!(
                    "wan.address_lost iface={wan}: no IPv4 address left; PCP and NAT-PMP \
                     requests fail with NETWORK_FAILURE until one is added"
                );
                explicit.set_pool(&mut maps.nat, Vec::new(), now_ns);
            }
            return;
        };
        let changed = pool != old_pool;
        if changed {
            info!(
                "wan.address_changed iface={wan} old={} new={}",
                old_pool
                    .first()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
                main.addr()
            );
        }
        for m in explicit.set_pool(&mut maps.nat, pool.clone(), now_ns) {
            info!(
                "explicit.moved proto={} int={} from={} to={}",
                m.key.protocol,
                m.key.internal_endpoint(),
                m.from,
                m.to.map_or_else(|| "removed".to_owned(), |t| t.to_string())
            );
        }
        if !changed {
            return;
        }
        self.topology.external = main;
        self.topology.pool.clone_from(&pool);
        if let Err(e) = self.point_data_path_at(&pool) {
            warn!("wan.readdress_failed error=\"{e:#}\"");
        }
        if let Some(maps) = self.maps.as_mut() {
            for old in old_pool.iter().filter(|a| !pool.contains(a)) {
                match gc::remove_traffic_on(&mut maps.nat, addr_be(old.octets())) {
                    Ok(n) => info!("wan.old_address_flushed address={old} mappings={n}"),
                    Err(e) => warn!("wan.flush_failed address={old} error=\"{e}\""),
                }
            }
        }
        self.refresh_state_file();
        self.write_explicit_file();
        if let Some(server) = self.port_mapping.server.as_mut() {
            server.external_address_changed(Instant::now());
        }
    }

    /// Writes the new pool and `CONFIG`: new traffic mappings use the new address.
    fn point_data_path_at(&mut self, pool: &[Ipv4Addr]) -> Result<()> {
        crate::datapath::maps::write_external_pool(&mut self.ebpf, pool)
            .context("writing the external address pool")?;
        let config = self.data_path_config();
        self.maps()?
            .write_config(&config)
            .context("writing CONFIG")?;
        Ok(())
    }
}
