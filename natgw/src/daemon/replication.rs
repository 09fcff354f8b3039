//! State replication to a standby, wired into the daemon: the replication service
//! (`services::replication`), the active's [`Source`] and the standby's
//! [`Installer`] (`nat_table::replica`), and the role (`role`), which may change at
//! run time.
//!
//! While **active**: mapping events (the data path's `MAPPING_EVENTS` ring and the
//! controller's own, through the event hub) are sent within [`EVENT_BATCH`]; every
//! second a pass over the tables sends what changed since (new sessions, refreshes,
//! deletions, explicit mappings) and heals what a lost event left out (the data
//! path's `event_lost` counter, a subscriber that fell behind). Every new
//! connection starts with a full resync. While **standby**: what arrives is
//! validated and installed, then acknowledged; the garbage collector and the end of
//! explicit mappings' lifetimes are left to the active (see `Daemon::serve`).
//!
//! Standby → active: installing stops, the collector runs again (the mappings'
//! ages came with them), the service connects to the peer and resyncs it.
//! Active → standby: sending stops, the service waits for the peer.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use log::{debug, info, warn};
use natgw_common::maps::MappingEvent;
use natgw_proto::ha::engine::Delivery;
use natgw_proto::ha::wire::Record;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use super::role::Role;
use super::Daemon;
use crate::config::ha::{read_key, HaRoleChoice, HaSettings};
use crate::datapath::system;
use crate::nat_table::replica::{Bounds, Installer, Source};
use crate::services::replication::{self as service, FromService, Handles, ToService};

/// How long mapping events wait to be sent together.
pub const EVENT_BATCH: Duration = Duration::from_millis(20);
/// Most records held for one batch.
const MAX_PENDING: usize = 1024;

/// The role a configuration starts with.
#[must_use]
pub const fn initial_role(ha: &HaSettings) -> Role {
    match ha.role {
        HaRoleChoice::Active => Role::Active,
        HaRoleChoice::Standby => Role::Standby,
    }
}

/// What woke the daemon for replication.
pub(super) enum Wake {
    Service(FromService),
    Event(Result<MappingEvent, broadcast::error::RecvError>),
    Flush,
}

/// The daemon's replication state.
pub(super) struct Replication {
    role: watch::Receiver<Role>,
    /// The role the tables were last handled in.
    handled: Role,
    handles: Handles,
    _forward: JoinHandle<()>,
    source: Source,
    installer: Installer,
    events: Option<broadcast::Receiver<MappingEvent>>,
    pending: Vec<Record>,
    flush_at: Option<tokio::time::Instant>,
    /// A peer asked for a full resync (or records were lost on the way to the
    /// service): the next tick sends one.
    resync_due: bool,
    event_lost_seen: Option<u64>,
    reconciliations: u64,
    resyncs_sent: u64,
}

impl Replication {
    /// Reads the key, binds the listen address and starts the service, in `role`.
    pub(super) fn start(ha: &HaSettings, role: watch::Receiver<Role>) -> Result<Self> {
        let (Some(listen), Some(peer), Some(key_file)) = (ha.listen, ha.peer, &ha.key_file) else {
            anyhow::bail!("replication needs --ha-listen, --ha-peer and --ha-key-file");
        };
        let key = read_key(key_file).map_err(anyhow::Error::msg)?;
        let initial = *role.borrow();
        let (active_tx, active_rx) = watch::channel(initial == Role::Active);
        let mut watched = role.clone();
        let forward = tokio::spawn(async move {
            while watched.changed().await.is_ok() {
                let active = *watched.borrow_and_update() == Role::Active;
                if active_tx.send(active).is_err() {
                    return;
                }
            }
        });
        let handles = service::spawn(listen, peer, key, active_rx)
            .with_context(|| format!("binding the replication address {listen}"))?;
        info!(
            "replication.started role={} listen={listen} peer={peer}",
            role_name(initial)
        );
        Ok(Self {
            role,
            handled: initial,
            handles,
            _forward: forward,
            source: Source::default(),
            installer: Installer::default(),
            events: crate::nat_table::events::subscribe_internal(),
            pending: Vec::new(),
            flush_at: None,
            resync_due: false,
            event_lost_seen: None,
            reconciliations: 0,
            resyncs_sent: 0,
        })
    }

    /// The role now.
    pub(super) fn role(&self) -> Role {
        *self.role.borrow()
    }

    fn connected(&self) -> bool {
        self.handles.stats.connected.load(Ordering::Relaxed)
    }

    /// The next thing to do. Cancel-safe: it only waits.
    pub(super) async fn next(&mut self) -> Wake {
        let flush_at = self.flush_at;
        let events = self.events.as_mut();
        tokio::select! {
            Some(m) = self.handles.from.recv() => Wake::Service(m),
            e = async {
                match events {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => Wake::Event(e),
            () = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => Wake::Flush,
        }
    }

    /// Hands records to the service; when it cannot take them, a full resync
    /// follows at the next tick (nothing is lost silently).
    fn send(&mut self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        match self.handles.to.try_send(ToService::Records(records)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!("replication.backlog: the channel is full; a full resync follows");
                self.resync_due = true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn flush(&mut self) {
        self.flush_at = None;
        let records = std::mem::take(&mut self.pending);
        self.send(records);
    }

    /// The counters of `natgw status` and the metrics (`ha_*`).
    pub(super) fn counters(&self, out: &mut BTreeMap<String, u64>) {
        let s = &self.handles.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        out.extend([
            (
                "ha_active".to_owned(),
                u64::from(self.role() == Role::Active),
            ),
            ("ha_connected".to_owned(), u64::from(self.connected())),
            ("ha_connects".to_owned(), load(&s.connects)),
            ("ha_connection_errors".to_owned(), load(&s.errors)),
            ("ha_peers_refused".to_owned(), load(&s.refused)),
            ("ha_records_sent".to_owned(), load(&s.sent)),
            ("ha_records_acked".to_owned(), load(&s.acked)),
            ("ha_records_received".to_owned(), load(&s.received)),
            ("ha_records_installed".to_owned(), self.installer.installed),
            (
                "ha_records_rejected".to_owned(),
                self.installer.rejected_total(),
            ),
            ("ha_resyncs".to_owned(), load(&s.resyncs)),
            ("ha_reconciliations".to_owned(), self.reconciliations),
            ("ha_lag_ms".to_owned(), load(&s.lag_ms)),
            ("ha_ack_rtt_us".to_owned(), load(&s.ack_rtt_us)),
        ]);
        for (reason, n) in &self.installer.rejected {
            out.insert(format!("ha_rejected_{reason}"), *n);
        }
    }

    /// Stops the service.
    pub(super) fn stop(&mut self) {
        self.handles.task.abort();
        self._forward.abort();
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Active => "active",
        Role::Standby => "standby",
    }
}

impl Daemon {
    /// Handles what [`Replication::next`] returned.
    pub(super) fn on_replication(&mut self, wake: Wake) {
        self.follow_role();
        let Some(ha) = self.ha.as_mut() else { return };
        let role = ha.role();
        match wake {
            Wake::Flush => ha.flush(),
            Wake::Event(Ok(e)) => {
                if role != Role::Active || !ha.connected() {
                    return;
                }
                let nat = &self.datapath.maps().nat;
                if let Some(r) = ha.source.event(nat, &e, system::monotonic_ns()) {
                    ha.pending.push(r);
                    if ha.pending.len() >= MAX_PENDING {
                        ha.flush();
                    } else if ha.flush_at.is_none() {
                        ha.flush_at = Some(tokio::time::Instant::now() + EVENT_BATCH);
                    }
                }
            }
            Wake::Event(Err(broadcast::error::RecvError::Lagged(n))) => {
                // Events were lost on the way here: the tables say what they were.
                debug!("replication.events_lagged count={n}");
                ha.reconciliations += 1;
                self.replicate_changes();
            }
            Wake::Event(Err(broadcast::error::RecvError::Closed)) => ha.events = None,
            Wake::Service(FromService::WantResync) => {
                ha.resync_due = true;
                self.replicate_changes();
            }
            Wake::Service(FromService::Deliver(connection, delivery)) => {
                if role == Role::Standby {
                    self.install(connection, delivery);
                }
            }
        }
    }

    /// Installs what the active sent, then acknowledges it.
    fn install(&mut self, connection: u64, delivery: Delivery) {
        let (now, now_ns) = (Instant::now(), system::monotonic_ns());
        let plan = self.datapath.addresses().clone();
        let pool = self.topology.pool.clone();
        let ports = self.settings.port_range;
        let Some(ha) = self.ha.as_mut() else { return };
        let nat = &mut self.datapath.maps_mut().nat;
        let mut explicit = self.services.port_mapping.explicit_mut();
        let bounds = Bounds {
            plan: &plan,
            pool: &pool,
            ports,
        };
        let seq = match delivery {
            Delivery::ResyncBegin { seq } => {
                ha.installer.begin_resync();
                seq
            }
            Delivery::ResyncEnd { seq } => {
                match ha.installer.end_resync(nat, explicit, now_ns) {
                    Ok(removed) => info!(
                        "replication.resynced removed={removed} installed={} rejected={}",
                        ha.installer.installed,
                        ha.installer.rejected_total()
                    ),
                    Err(e) => warn!("replication.resync_failed error=\"{e}\""),
                }
                seq
            }
            Delivery::Records { seq, records } => {
                for r in &records {
                    if let Err(e) =
                        ha.installer
                            .apply(nat, explicit.as_deref_mut(), &bounds, r, now, now_ns)
                    {
                        warn!("replication.install_failed record={r:?} error=\"{e}\"");
                    }
                }
                seq
            }
        };
        let _ = ha.handles.installed.send((connection, seq));
        self.services.port_mapping.write_file(&self.dirs);
    }

    /// Notices a change of role since the last look and adjusts what is kept.
    fn follow_role(&mut self) {
        let Some(ha) = self.ha.as_mut() else { return };
        let role = ha.role();
        if role == ha.handled {
            return;
        }
        info!(
            "replication.role_changed from={} to={}",
            role_name(ha.handled),
            role_name(role)
        );
        ha.handled = role;
        ha.source.clear();
        ha.pending.clear();
        ha.flush_at = None;
        ha.installer.clear();
    }

    /// Every second: the active sends what changed since the last pass (and a full
    /// resync when one is due).
    pub(super) fn replication_tick(&mut self) {
        self.follow_role();
        let lost = self.datapath.maps().counters().ok().and_then(|c| {
            c.iter()
                .find(|(c, _)| *c == natgw_common::Counter::EventLost)
                .map(|(_, v)| *v)
        });
        let Some(ha) = self.ha.as_mut() else { return };
        if let (Some(now), Some(seen)) = (lost, ha.event_lost_seen) {
            if now > seen && ha.role() == Role::Active {
                warn!(
                    "replication.events_lost count={}: the data path's ring was full; the \
                     pass over the tables sends what they said",
                    now - seen
                );
                ha.reconciliations += 1;
            }
        }
        ha.event_lost_seen = lost;
        self.replicate_changes();
    }

    /// Sends what changed (or everything, when a resync is due) while active and
    /// connected.
    fn replicate_changes(&mut self) {
        let Some(ha) = self.ha.as_mut() else { return };
        if ha.role() != Role::Active || !ha.connected() {
            return;
        }
        let now_ns = system::monotonic_ns();
        let explicit = self.services.port_mapping.explicit_entries();
        let nat = &self.datapath.maps().nat;
        ha.flush();
        if ha.resync_due {
            match ha.source.full(nat, &explicit, now_ns) {
                Ok(records) => {
                    let n = records.len();
                    match ha.handles.to.try_send(ToService::Resync(records)) {
                        Ok(()) => {
                            ha.resync_due = false;
                            ha.resyncs_sent += 1;
                            info!("replication.resync records={n}");
                        }
                        Err(_) => ha.source.clear(),
                    }
                }
                Err(e) => warn!("replication.read_failed error=\"{e}\""),
            }
            return;
        }
        match ha.source.changes(nat, &explicit, now_ns) {
            Ok(records) => ha.send(records),
            Err(e) => warn!("replication.read_failed error=\"{e}\""),
        }
    }
}
