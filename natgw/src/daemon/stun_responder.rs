//! The daemon's STUN responder (RFC 8489 Binding, RFC 5780 behaviour discovery) on the
//! gateway's external addresses, so hosts on the WAN side — and `natgw stun probe`
//! anywhere — can ask natgw what address and port they come from.
//!
//! The engine and its tokio loop are [`natgw_proto::stun::responder`] and
//! [`crate::services::stun`]; this binds their sockets, runs the loop as a task, follows
//! changes of the external address pool and reports its counters. The sockets are
//! bound before the data path is marked ready: no mapping can claim their ports first
//! (the data path never hands out a port a local socket holds), and inbound packets to
//! them reach the gateway because the data path passes packets for local sockets to
//! the kernel. With a second external address the responder is an RFC 5780 server: it
//! listens on both addresses × the STUN port and the alternate port, and
//! OTHER-ADDRESS names the second address with the alternate port.
//!
//! # Following the pool
//! When the WAN's address changes, [`StunResponder::follow`] moves the responder: it
//! binds the new addresses, then replaces the task (the counters go on, the same
//! [`Counters`] are shared). Why the order is safe: the data path only asks whether a
//! local socket holds a port when it *creates* a mapping
//! (`natgw-ebpf/src/nat/mapping.rs`, `local_socket_owns`); a mapping that exists
//! already keeps the port, and a socket bound later on the same address and port gets
//! nothing, because inbound packets that match a mapping are translated before the
//! data path looks for a local socket. So binding late is only safe while the data
//! path cannot hand out ports on the new address yet, which is why the daemon calls
//! `follow` *before* it moves explicit mappings and points the data path at the new
//! address (`port_mapping::wan_addresses_changed`). The remaining windows are
//! harmless: the old address's sockets close just before the data path leaves that
//! address, so a mapping created in between may take an old STUN port, and it is
//! flushed with the other mappings on the old address a moment later.
//!
//! The responder holds its sockets itself ([`StunResponder::held`]) and gives the task
//! duplicates. An address that stays across a change keeps its socket: it is never
//! free in between (no mapping can take it), and the new responder does not fail with
//! `EADDRINUSE` against the old one. While the WAN has no address at all the data path
//! keeps the old one, so the responder stops answering but keeps those sockets — their
//! ports stay reserved, and when the same address comes back it answers again at once.
//! When binding a new address fails (another program holds the port), the daemon
//! keeps running: the responder shows as not listening with the reason, and the next
//! address change tries again.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use log::{error, info, warn};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::config::StunSettings;
use crate::daemon::state::StunState;
use crate::services::stun;
use natgw_proto::stun::responder::{Config, Counters, CountersSnapshot};

/// Why the responder does not listen while the WAN has no address.
const NO_ADDRESS: &str = "the WAN has no IPv4 address";

/// The responder: its sockets, its task while it answers, and its counters, which
/// outlive both.
pub(super) struct StunResponder {
    settings: StunSettings,
    counters: Arc<Counters>,
    /// What it answers as, while it answers.
    serving: Option<Serving>,
    /// Every socket natgw holds on a STUN port, by local address: the running task's
    /// (it reads duplicates) or, while not listening, the last ones, still reserving
    /// their ports.
    held: BTreeMap<SocketAddrV4, std::net::UdpSocket>,
    /// Why it does not listen, while it does not.
    not_listening: Option<String>,
    /// The counters the state file holds.
    reported: BTreeMap<String, u64>,
}

/// A running responder task.
struct Serving {
    config: Config,
    task: JoinHandle<()>,
}

/// What a new external address pool asks of the responder.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// It answers as this pool asks already (or has nothing to answer on and does not).
    Keep,
    /// The pool is empty: stop answering.
    Stop,
    /// Answer as this: bind (or keep) its addresses and restart the task.
    Serve(Config),
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

/// What to do when the pool becomes `pool` while the responder answers as `serving`
/// (`None`: it does not answer, because the pool was empty or binding failed — then
/// a non-empty pool is tried again).
fn next_step(settings: &StunSettings, serving: Option<&Config>, pool: &[Ipv4Addr]) -> Step {
    match (responder_config(settings, pool), serving) {
        (None, None) => Step::Keep,
        (None, Some(_)) => Step::Stop,
        (Some(new), Some(old)) if new == *old => Step::Keep,
        (Some(new), _) => Step::Serve(new),
    }
}

/// Binds `addr` now (the daemon is set up synchronously). With IP_FREEBIND: with
/// `--ha` the external addresses are keepalived's and absent on the standby; the
/// socket holds its port there now and answers once keepalived adds the address.
/// (Without `--ha` every pool address is on the WAN, checked at start.)
fn bind_one(addr: SocketAddrV4) -> Result<std::net::UdpSocket> {
    let bind = || -> std::io::Result<std::net::UdpSocket> {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        socket.set_freebind(true)?;
        socket.bind(&addr.into())?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    bind().with_context(|| {
        format!(
            "binding the STUN responder on UDP {addr} (another STUN server on the \
                 gateway? pass --stun-port PORT, or --no-stun)"
        )
    })
}

/// The sockets for `config`: the ones in `held` for addresses it keeps, new ones for
/// the rest. Returns them by address, in `config`'s order.
fn sockets_for(
    config: &Config,
    held: &BTreeMap<SocketAddrV4, std::net::UdpSocket>,
) -> Result<Vec<(SocketAddrV4, std::net::UdpSocket)>> {
    config
        .local_addresses()
        .into_iter()
        .map(|addr| {
            let socket = match held.get(&addr) {
                Some(s) => s
                    .try_clone()
                    .with_context(|| format!("keeping the STUN socket on UDP {addr}"))?,
                None => bind_one(addr)?,
            };
            Ok((addr, socket))
        })
        .collect()
}

/// Starts the responder task on duplicates of `sockets`.
fn spawn(
    config: &Config,
    sockets: &[(SocketAddrV4, std::net::UdpSocket)],
    counters: &Arc<Counters>,
) -> Result<JoinHandle<()>> {
    let task_sockets = sockets
        .iter()
        .map(|(addr, s)| {
            s.try_clone()
                .and_then(UdpSocket::from_std)
                .with_context(|| format!("handing the STUN socket on UDP {addr} to its task"))
        })
        .collect::<Result<Vec<_>>>()?;
    let config = config.clone();
    let counters = Arc::clone(counters);
    Ok(tokio::spawn(async move {
        if let Err(e) = stun::run(config, task_sockets, counters).await {
            error!("stun.failed error=\"{e:#}\": the STUN responder stopped");
        }
    }))
}

/// `a,b,c`, or `-` for none.
fn list(addresses: &[SocketAddrV4]) -> String {
    if addresses.is_empty() {
        return "-".to_owned();
    }
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The RFC 5780 OTHER-ADDRESS of `config`.
fn other_address(config: &Config) -> Option<SocketAddrV4> {
    config
        .alternate
        .map(|ip| SocketAddrV4::new(ip, config.alternate_port))
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
        ("send_failed".to_owned(), c.send_failed),
    ]);
    for (reason, n) in &c.dropped {
        out.insert(format!("dropped_{reason}"), *n);
    }
    out
}

impl StunResponder {
    fn new(settings: StunSettings) -> Self {
        let counters = Arc::<Counters>::default();
        Self {
            settings,
            reported: by_name(&counters.snapshot()),
            counters,
            serving: None,
            held: BTreeMap::new(),
            not_listening: None,
        }
    }

    /// Where it answers now (none while it does not).
    fn addresses(&self) -> Vec<SocketAddrV4> {
        self.serving
            .as_ref()
            .map(|s| s.config.local_addresses())
            .unwrap_or_default()
    }

    /// What `natgw status` shows of it.
    pub(super) fn state(&self) -> StunState {
        StunState {
            addresses: self.addresses(),
            other_address: self.serving.as_ref().and_then(|s| other_address(&s.config)),
            listening: self.serving.is_some(),
            not_listening: self.not_listening.clone(),
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

    /// Answers as `config` from now on: its sockets (kept or newly bound), then a new
    /// task in place of the old one. On an error nothing changed.
    fn serve(&mut self, config: Config) -> Result<()> {
        config
            .validate()
            .context("checking the STUN responder's settings")?;
        let sockets = sockets_for(&config, &self.held)?;
        let task = spawn(&config, &sockets, &self.counters)?;
        self.halt();
        // Sockets of addresses the new configuration does not use close here.
        self.held = sockets.into_iter().collect();
        self.serving = Some(Serving { config, task });
        self.not_listening = None;
        Ok(())
    }

    /// Stops the task; the sockets stay held.
    fn halt(&mut self) {
        if let Some(old) = self.serving.take() {
            old.task.abort();
        }
    }

    /// Follows the external address pool becoming `pool` (see the module
    /// documentation). Returns whether what `natgw status` shows of it changed.
    pub(super) fn follow(&mut self, pool: &[Ipv4Addr]) -> bool {
        // Where it answered last: while it does not, the addresses it still holds.
        let from = match &self.serving {
            Some(_) => self.addresses(),
            None => self.held.keys().copied().collect(),
        };
        let serving = self.serving.as_ref().map(|s| &s.config);
        match next_step(&self.settings, serving, pool) {
            Step::Keep => false,
            Step::Stop => {
                self.halt();
                self.not_listening = Some(NO_ADDRESS.to_owned());
                warn!(
                    "stun.not_listening from={} reason=\"{NO_ADDRESS}\": its ports stay \
                     reserved; it answers again when the WAN has an address",
                    list(&from)
                );
                true
            }
            Step::Serve(config) => {
                let to = config.local_addresses();
                match self.serve(config) {
                    Ok(()) => info!(
                        "stun.moved from={} to={} rfc5780={}",
                        list(&from),
                        list(&to),
                        self.serving
                            .as_ref()
                            .and_then(|s| other_address(&s.config))
                            .map_or_else(|| "no".to_owned(), |o| format!("other={o}"))
                    ),
                    Err(e) => {
                        // The old addresses are leaving the pool: stop answering there
                        // and let their ports go.
                        self.halt();
                        self.held.retain(|addr, _| to.contains(addr));
                        error!(
                            "stun.bind_failed from={} to={} error=\"{e:#}\": the STUN \
                             responder is not listening; natgw tries again on the next \
                             change of the WAN's address",
                            list(&from),
                            list(&to)
                        );
                        self.not_listening = Some(format!("{e:#}"));
                    }
                }
                true
            }
        }
    }

    /// Stops answering and lets its ports go.
    pub(super) fn stop(mut self) {
        self.halt();
        self.held.clear();
        info!("stun.stopped {}", stun::summary(&self.counters.snapshot()));
    }
}

impl StunResponder {
    /// Starts the responder on the external addresses `pool`, unless disabled (or
    /// there is no address yet).
    ///
    /// # Errors
    /// When its sockets cannot be bound.
    pub(super) fn start(settings: StunSettings, pool: &[Ipv4Addr]) -> Result<Option<Self>> {
        if !settings.enabled {
            info!("stun.disabled: no STUN responder (--no-stun or stun.enabled = false)");
            return Ok(None);
        }
        let Some(config) = responder_config(&settings, pool) else {
            return Ok(None);
        };
        let mut stun = Self::new(settings);
        stun.serve(config)?;
        let state = stun.state();
        info!(
            "stun.listening on={} rfc5780={}",
            list(&state.addresses),
            state
                .other_address
                .map_or_else(|| "no".to_owned(), |o| format!("other={o}"))
        );
        Ok(Some(stun))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

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
    fn a_new_main_address_moves_the_responder() {
        let s = StunSettings::default();
        let old = responder_config(&s, &[a("192.0.2.1")]).unwrap();
        let Step::Serve(new) = next_step(&s, Some(&old), &[a("192.0.2.7")]) else {
            panic!("a new address is served");
        };
        assert_eq!(new.local_addresses(), ["192.0.2.7:3478".parse().unwrap()]);
        assert_eq!(new.alternate, None);
    }

    #[test]
    fn an_unchanged_pool_keeps_the_responder() {
        let s = StunSettings::default();
        let pool = [a("192.0.2.1"), a("192.0.2.2")];
        let old = responder_config(&s, &pool).unwrap();
        assert_eq!(next_step(&s, Some(&old), &pool), Step::Keep);
        // Only the first two addresses matter to the responder.
        let longer = [a("192.0.2.1"), a("192.0.2.2"), a("192.0.2.3")];
        assert_eq!(next_step(&s, Some(&old), &longer), Step::Keep);
    }

    #[test]
    fn a_second_address_coming_or_going_changes_rfc5780_mode() {
        // rfc5780 §6: OTHER-ADDRESS needs a second address
        let s = StunSettings::default();
        let one = responder_config(&s, &[a("192.0.2.1")]).unwrap();
        let two = [a("192.0.2.1"), a("192.0.2.2")];
        let Step::Serve(new) = next_step(&s, Some(&one), &two) else {
            panic!("a second address makes it an RFC 5780 server");
        };
        assert_eq!(other_address(&new), Some("192.0.2.2:3479".parse().unwrap()));
        let both = responder_config(&s, &two).unwrap();
        assert_eq!(
            next_step(&s, Some(&both), &[a("192.0.2.1")]),
            Step::Serve(one)
        );
    }

    #[test]
    fn an_empty_pool_stops_it_and_an_address_coming_back_restarts_it() {
        let s = StunSettings::default();
        let pool = [a("192.0.2.1")];
        let old = responder_config(&s, &pool).unwrap();
        assert_eq!(next_step(&s, Some(&old), &[]), Step::Stop);
        assert_eq!(next_step(&s, None, &[]), Step::Keep, "stopped already");
        assert_eq!(next_step(&s, None, &pool), Step::Serve(old));
    }

    #[test]
    fn a_failed_bind_is_retried_on_the_next_change() {
        // After a failure nothing is served, so the same pool is tried again.
        let s = StunSettings::default();
        let pool = [a("192.0.2.7")];
        assert!(matches!(next_step(&s, None, &pool), Step::Serve(_)));
    }

    /// A free UDP port on 127.0.0.1 (bound and let go).
    fn free_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn following_keeps_counters_and_survives_a_port_taken_elsewhere() {
        let settings = StunSettings {
            enabled: true,
            port: free_port(),
            alternate_port: 3479,
        };
        let (one, two) = (a("127.0.0.1"), a("127.0.0.2"));
        let mut stun = StunResponder::new(settings);
        stun.serve(responder_config(&settings, &[one]).unwrap())
            .unwrap();
        let counters = Arc::clone(&stun.counters);
        let at = |ip| SocketAddrV4::new(ip, settings.port);

        // Another program holds the port on the new address: not listening, with why.
        let squatter = std::net::UdpSocket::bind(at(two)).unwrap();
        assert!(stun.follow(&[two]));
        let state = stun.state();
        assert!(!state.listening);
        assert!(state.addresses.is_empty());
        let reason = state.not_listening.unwrap();
        assert!(reason.contains(&format!("UDP {}", at(two))), "{reason}");
        assert!(stun.held.is_empty(), "the old address's port is let go");

        // The next change tries again.
        drop(squatter);
        assert!(stun.follow(&[two]));
        let state = stun.state();
        assert!(state.listening);
        assert_eq!(state.addresses, [at(two)]);
        assert_eq!(state.not_listening, None);
        assert!(Arc::ptr_eq(&counters, &stun.counters), "counters go on");

        // The WAN losing its address: not answering, the port still held.
        assert!(stun.follow(&[]));
        assert!(!stun.state().listening);
        assert!(
            std::net::UdpSocket::bind(at(two)).is_err(),
            "still reserved"
        );
        // The same address back: the held socket is served again.
        assert!(stun.follow(&[two]));
        assert!(stun.state().listening);
        assert!(!stun.follow(&[two]), "nothing changed");
        stun.stop();
        // The aborted task lets its duplicates go when the runtime drops it.
        let mut freed = false;
        for _ in 0..100 {
            freed = std::net::UdpSocket::bind(at(two)).is_ok();
            if freed {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(freed, "let go at stop");
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
            "dropped_unresolved",
            "send_failed",
        ] {
            assert!(names.contains_key(name), "{name}: {names:?}");
        }
    }
}
