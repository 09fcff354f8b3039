//! `natgw status` and `natgw mappings`: find the gateway running in this network
//! namespace through its state file, open its maps (pins, else kernel ids) and print
//! what they hold. `natgw monitor` and `natgw flush`: the same gateway through its
//! control socket.

use anyhow::{bail, Context as _, Result};

use crate::cli::output::{self, MappingsReport, StatusReport};
use crate::daemon::control::{self, Reply, Request};
use crate::daemon::state::StateFile;
use crate::datapath::dirs::RuntimeDirs;
use crate::datapath::maps::{GatewayMaps, MapSource, NatTables as _};
use crate::datapath::system;
use crate::nat_table::events::MappingFilter;
use crate::nat_table::explicit::ExplicitEntry;
use crate::nat_table::gc::Policy;

/// The running gateway's state file and maps.
pub(crate) fn open() -> Result<(RuntimeDirs, StateFile, GatewayMaps)> {
    let dirs = RuntimeDirs::for_current_netns()?;
    let state: StateFile = dirs.read_state()?;
    if !system::process_alive_in_netns(state.pid, dirs.netns_inode) {
        bail!(
            "natgw's controller (pid {}) is not running in this network namespace; the data \
             path it left keeps translating (the next `natgw run` adopts it, `natgw stop \
             --flush` removes it)",
            state.pid
        );
    }
    let maps = GatewayMaps::open(MapSource {
        dirs: &dirs,
        ids: &state.map_ids,
    })
    .with_context(|| format!("reading the maps of natgw pid {}", state.pid))?;
    Ok((dirs, state, maps))
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `natgw status`.
pub fn status(json: bool) -> Result<()> {
    let (dirs, state, maps) = open()?;
    let mut interfaces = state.interfaces.clone();
    for i in interfaces.iter_mut().filter(|i| i.present) {
        // Live value: the daemon updates IFACES when a veth peer attaches XDP.
        if let Ok(Some(cfg)) = maps.iface(i.ifindex) {
            i.redirect_ok = cfg.redirect_ok != 0;
        }
    }
    let report = StatusReport {
        natgw_version: state.natgw_version.clone(),
        pid: state.pid,
        netns_inode: dirs.netns_inode,
        uptime_s: system::unix_time().saturating_sub(state.started_unix),
        pin_dir: dirs.pin_dir.display().to_string(),
        external_address: state.external_address,
        external_addresses: if state.external_addresses.is_empty() {
            vec![state.external_address]
        } else {
            state.external_addresses.clone()
        },
        interfaces,
        config: state.settings.clone(),
        counters: maps
            .counters()?
            .into_iter()
            .map(|(c, v)| (c.name().to_owned(), v))
            .collect(),
        controller_counters: state.controller_counters.clone(),
        stun: state.stun.clone(),
        ha: state.ha.clone(),
        mappings: maps.mapping_count()?,
        max_mappings: maps.max_mappings()?,
        held_ports: maps.held_ports(
            system::monotonic_ns(),
            state
                .settings
                .limits
                .port_hold_down
                .saturating_mul(natgw_common::NS_PER_SEC),
        )?,
    };
    if json {
        print_json(&report)
    } else {
        print!("{}", output::status_text(&report));
        Ok(())
    }
}

/// `natgw mappings`; `sessions` lists each mapping's sessions in the table too;
/// only the mappings `filter` selects.
pub fn mappings(json: bool, sessions: bool, filter: &MappingFilter) -> Result<()> {
    let (dirs, state, maps) = open()?;
    let now = system::monotonic_ns();
    // The order the garbage collector reads them in (see `gc::Sweeper::tick`).
    let session_entries = maps.nat.session_entries()?;
    let mut fwd = maps.nat.fwd_entries()?;
    fwd.retain(|(k, m)| filter.matches(k, m));
    let rev = maps.nat.rev_entries()?;
    let policy = Policy::new(&state.settings.timeouts, state.settings.inbound_refresh);
    let mut rows = output::mapping_rows(&fwd, &rev, &session_entries, &policy, now);
    output::apply_explicit(&mut rows, &dirs.read_explicit::<ExplicitEntry>()?, now);
    let report = MappingsReport {
        count: rows.len(),
        max_mappings: maps.max_mappings()?,
        mappings: rows,
    };
    if json {
        print_json(&report)
    } else {
        print!("{}", output::mappings_text(&report, sessions));
        Ok(())
    }
}

/// The runtime directory of the natgw running in this network namespace.
fn running_dirs() -> Result<RuntimeDirs> {
    let dirs = RuntimeDirs::for_current_netns()?;
    let state: StateFile = dirs.read_state()?;
    if !system::process_alive_in_netns(state.pid, dirs.netns_inode) {
        bail!(
            "natgw's controller (pid {}) is not running in this network namespace",
            state.pid
        );
    }
    Ok(dirs)
}

/// `natgw monitor`: prints each event the daemon streams until it stops (or this
/// process is interrupted).
pub async fn monitor(json: bool) -> Result<()> {
    let dirs = running_dirs()?;
    let mut conn = control::connect(&dirs.state_dir, &Request::Monitor).await?;
    while let Some(line) = conn.lines.next_line().await? {
        let reply: Reply = serde_json::from_str(&line)
            .with_context(|| format!("natgw sent something unexpected: {line}"))?;
        match reply {
            Reply::Event(e) if json => println!("{}", serde_json::to_string(&e)?),
            Reply::Event(e) => println!("{}", output::event_text(&e)),
            Reply::Subscribed => eprintln!("natgw monitor: subscribed"),
            Reply::Lost { count } if json => println!("{{\"lost\":{count}}}"),
            Reply::Lost { count } => {
                println!("[LOST] {count} events: this monitor fell behind");
            }
            Reply::Error { message } => bail!("natgw refused: {message}"),
            Reply::Flushed { .. } | Reply::RoleSet | Reply::Role { .. } => {
                bail!("natgw sent something unexpected: {line}")
            }
        }
        // Every line reaches a pipe as soon as it is printed.
        std::io::Write::flush(&mut std::io::stdout())?;
    }
    bail!("natgw closed the connection (it stopped)")
}

/// `natgw ha-role ROLE`: asks the running natgw to take `role`.
///
/// # Errors
/// No natgw running, replication not configured, or the control socket fails.
pub async fn set_role(role: crate::config::ha::HaRoleChoice) -> Result<()> {
    let dirs = running_dirs()?;
    match control::ask(&dirs.state_dir, &Request::Role { role }).await? {
        Reply::RoleSet => {
            println!("natgw is now {role}");
            Ok(())
        }
        Reply::Error { message } => bail!("natgw refused: {message}"),
        other => bail!("natgw sent something unexpected: {other:?}"),
    }
}

/// `natgw flush`: asks the daemon to delete the mappings `filter` selects.
pub async fn flush(filter: &MappingFilter, include_static: bool, json: bool) -> Result<()> {
    let dirs = running_dirs()?;
    let request = Request::Flush {
        filter: *filter,
        include_static,
    };
    match control::ask(&dirs.state_dir, &request).await? {
        Reply::Flushed { deleted } if json => println!("{{\"deleted\":{deleted}}}"),
        Reply::Flushed { deleted } => println!(
            "{deleted} mapping{} deleted{}",
            if deleted == 1 { "" } else { "s" },
            if include_static {
                ""
            } else {
                " (static forwards kept; --include-static deletes them too)"
            }
        ),
        Reply::Error { message } => bail!("natgw refused: {message}"),
        other => bail!("natgw sent something unexpected: {other:?}"),
    }
    Ok(())
}
