//! The daemon's STUN responder (RFC 8489 Binding, RFC 5780 behaviour discovery) on the
//! gateway's external addresses, so hosts on the WAN side — and `natgw stun probe`
//! anywhere — can ask natgw what address and port they come from.
//!
//! The engine and its tokio loop are [`crate::stun::responder`] and
//! [`crate::stun::server`]; this binds their sockets, runs the loop as a task and
//! reports its counters. The sockets are bound before the data path is marked ready:
//! no mapping can claim their ports first (the data path never hands out a port a
//! local socket holds), and inbound packets to them reach the gateway because the
//! data path passes packets for local sockets to the kernel. With a second external
//! address the responder is an RFC 5780 server: it listens on both addresses × the
//! STUN port and the alternate port, and OTHER-ADDRESS names the second address with
//! the alternate port.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use log::{error, info};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::Daemon;
use crate::config::StunSettings;
use crate::state::StunState;
use crate::stun::responder::{Config, Counters, CountersSnapshot};
use crate::stun::server;

/// The running responder.
pub(super) struct StunResponder {
    task: JoinHandle<()>,
    counters: Arc<Counters>,
    addresses: Vec<SocketAddrV4>,
    other_address: Option<SocketAddrV4>,
    /// The counters the state file holds.
    reported: BTreeMap<String, u64>,
}

/// The responder's configuration for this pool: the first address with the STUN
/// port, and the second (if any) as the RFC 5780 alternate.
fn responder_config(settings: &StunSettings, pool: &[Ipv4Addr]) -> Option<Config> {
    let primary = *pool.first()?;
    let mut config = Config::new(SocketAddrV4::new(primary, settings.port));
    config.alternate = pool.get(1).copied();
    config.alternate_port = settings.alternate_port;
    Some(config)
}

/// Binds every address of `config` now (the daemon is set up synchronously).
fn bind(config: &Config) -> Result<Vec<UdpSocket>> {
    config
        .local_addresses()
        .into_iter()
        .map(|addr| {
            let socket = std::net::UdpSocket::bind(addr)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .and_then(UdpSocket::from_std)
                .with_context(|| {
                    format!(
                        "binding the STUN responder on UDP {addr} (another STUN server on \
                         the gateway? pass --stun-port PORT, or --no-stun)"
                    )
                })?;
            Ok(socket)
        })
        .collect()
}

/// The counters by the names `natgw status` shows.
fn by_name(c: &CountersSnapshot) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::from([
        ("received".to_owned(), c.received),
        ("success".to_owned(), c.success),
        ("success_rfc3489".to_owned(), c.legacy),
        ("error_400_bad_request".to_owned(), c.bad_request),
        (
            "error_420_unknown_attribute".to_owned(),
            c.unknown_attribute,
        ),
    ]);
    for (reason, n) in &c.dropped {
        out.insert(format!("dropped_{reason}"), *n);
    }
    out
}

impl StunResponder {
    /// What `natgw status` shows of it.
    pub(super) fn state(&self) -> StunState {
        StunState {
            addresses: self.addresses.clone(),
            other_address: self.other_address,
            counters: by_name(&self.counters.snapshot()),
        }
    }

    /// Whether the counters moved since the last call.
    pub(super) fn counters_changed(&mut self) -> bool {
        let now = by_name(&self.counters.snapshot());
        let changed = now != self.reported;
        self.reported = now;
        changed
    }

    /// Stops answering.
    pub(super) fn stop(self) {
        self.task.abort();
        info!(
            "stun.stopped {}",
            server::summary(&self.counters.snapshot())
        );
    }
}

impl Daemon {
    /// Starts the STUN responder on the external addresses, unless disabled.
    pub(super) fn start_stun(&mut self) -> Result<()> {
        let settings = self.settings.stun;
        if !settings.enabled {
            info!("stun.disabled: no STUN responder (--no-stun or stun.enabled = false)");
            return Ok(());
        }
        let Some(config) = responder_config(&settings, &self.topology.pool) else {
            return Ok(());
        };
        config
            .validate()
            .context("checking the STUN responder's settings")?;
        let sockets = bind(&config)?;
        let addresses = config.local_addresses();
        let other_address = config
            .alternate
            .map(|ip| SocketAddrV4::new(ip, config.alternate_port));
        info!(
            "stun.listening on={} rfc5780={}",
            addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            other_address.map_or_else(|| "no".to_owned(), |o| format!("other={o}"))
        );
        let counters = Arc::<Counters>::default();
        let task_counters = Arc::clone(&counters);
        let task = tokio::spawn(async move {
            if let Err(e) = server::run(config, sockets, task_counters).await {
                error!("stun.failed error=\"{e:#}\": the STUN responder stopped");
            }
        });
        self.stun = Some(StunResponder {
            task,
            reported: by_name(&counters.snapshot()),
            counters,
            addresses,
            other_address,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_external_address_is_a_plain_rfc8489_responder() {
        // rfc8489: Binding on the STUN port of the external address
        let c = responder_config(&StunSettings::default(), &[Ipv4Addr::new(192, 0, 2, 1)]).unwrap();
        assert_eq!(c.primary, "192.0.2.1:3478".parse().unwrap());
        assert_eq!(c.alternate, None);
        assert_eq!(c.local_addresses().len(), 1);
        assert!(responder_config(&StunSettings::default(), &[]).is_none());
    }

    #[test]
    fn a_second_external_address_makes_it_an_rfc5780_server() {
        // rfc5780 §6: two addresses × two ports; OTHER-ADDRESS is the second address
        let settings = StunSettings {
            enabled: true,
            port: 4000,
            alternate_port: 4001,
        };
        let pool = [
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 2),
            Ipv4Addr::new(192, 0, 2, 3),
        ];
        let c = responder_config(&settings, &pool).unwrap();
        assert_eq!(c.primary, "192.0.2.1:4000".parse().unwrap());
        assert_eq!(c.alternate, Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(c.alternate_port, 4001);
        assert_eq!(c.local_addresses().len(), 4);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn counters_have_status_names() {
        let c = Counters::default();
        let names = by_name(&c.snapshot());
        for name in [
            "received",
            "success",
            "dropped_rate_limited",
            "dropped_not_stun",
        ] {
            assert!(names.contains_key(name), "{name}: {names:?}");
        }
    }
}
