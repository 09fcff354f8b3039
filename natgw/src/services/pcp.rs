//! The PCP and NAT-PMP server on sockets — the thin loop around the sans-IO
//! [`Engine`], as quinn is around quinn-proto: datagrams in, answers out, the
//! engine's announcements sent when due and its events logged.
//!
//! One UDP socket per LAN address, bound to that address and port 5351 and to its
//! interface (`SO_BINDTODEVICE`). A request that comes in through the WAN — whatever
//! address it is sent to — is therefore never delivered to the server and gets no
//! answer (RFC 6887 §8.3, RFC 6886 §3), and every answer leaves from the address the
//! request was sent to. NAT-PMP clients use the same sockets (same port).
//!
//! A request is processed only when its source's link-layer address is known (see
//! [`crate::services::neighbours`]): a spoofed source never gets a mapping, and no answer
//! waits for address resolution in the socket's send buffer. Sends never wait: one
//! the socket cannot take at once is dropped and counted.
//!
//! Announcements (ANNOUNCE and the NAT-PMP address notice, RFC 6887 §14.1.3 and
//! RFC 6886 §3.2.1) go to 224.0.0.1:5350 out of every LAN interface, from its first
//! address (`IP_MULTICAST_IF`); unsolicited MAP responses (§14.2) go to the client
//! from the socket of the LAN it is on.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use log::{debug, info, warn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::services::pcp_upstream::{Held, UpstreamLink};
use crate::services::replies::{Replies, ReplyStats};
use natgw_proto::pcp::engine::{DropReason, Engine, Event, Stats, Transmit, ANNOUNCE_GROUP};
use natgw_proto::pcp::policy::PcpConfig;
use natgw_proto::pcp::table::MappingTable;
use natgw_proto::pcp::wire::{self, MAX_LEN};
use natgw_proto::prefix::Ipv4Prefix;
use natgw_proto::util::log_budget::{suppressed_note, LogBudget};

/// Datagrams handled per wake-up of one socket before the loop looks at its other
/// work again.
const BATCH: usize = 64;

/// A LAN address to serve on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LanAddress {
    /// The LAN interface.
    pub iface: String,
    /// Its address and prefix.
    pub prefix: Ipv4Prefix,
}

struct LanSocket {
    socket: UdpSocket,
    local: SocketAddrV4,
    iface: String,
    prefix: Ipv4Prefix,
    /// Sends the multicast announcements of its interface (its first address).
    announces: bool,
}

/// The server and its sockets.
pub struct PcpService {
    server: Engine,
    sockets: Vec<LanSocket>,
    replies: Replies,
    /// Refusals are logged within this budget.
    refusal_log: LogBudget,
    /// The upstream PCP server's client when natgw is behind another NAT (RFC 7648).
    upstream: Option<UpstreamLink>,
}

/// Refusals the service logs per [`LOG_WINDOW`].
const LOG_LINES: u32 = 20;
/// See [`LOG_LINES`].
const LOG_WINDOW: Duration = Duration::from_secs(60);

fn bind(lan: &LanAddress) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.bind_device(Some(lan.iface.as_bytes()))?;
    socket.set_multicast_if_v4(&lan.prefix.addr())?;
    socket.set_multicast_loop_v4(false)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddrV4::new(lan.prefix.addr(), wire::SERVER_PORT).into())?;
    UdpSocket::from_std(socket.into())
}

impl PcpService {
    /// The server (its epoch begins `now`) with a socket on every LAN address. The
    /// first announcements are due at once.
    ///
    /// # Errors
    /// An invalid configuration, or a socket that cannot be bound (another PCP or
    /// NAT-PMP server on the gateway holds the port).
    pub fn bind(config: PcpConfig, lans: &[LanAddress], now: Instant) -> Result<Self> {
        let server = Engine::new(config, now).context("the [pcp] configuration")?;
        let mut sockets: Vec<LanSocket> = Vec::new();
        for lan in lans {
            let local = SocketAddrV4::new(lan.prefix.addr(), wire::SERVER_PORT);
            let socket = bind(lan).with_context(|| {
                format!(
                    "binding the PCP/NAT-PMP server to UDP {local} on {} (another PCP or \
                     NAT-PMP server running on the gateway? stop it, or run natgw with --no-pcp)",
                    lan.iface
                )
            })?;
            let announces = !sockets.iter().any(|s| s.iface == lan.iface);
            sockets.push(LanSocket {
                socket,
                local,
                iface: lan.iface.clone(),
                prefix: lan.prefix,
                announces,
            });
        }
        Ok(Self {
            server,
            sockets,
            replies: Replies::new("pcp", now),
            refusal_log: LogBudget::new(LOG_LINES, LOG_WINDOW),
            upstream: None,
        })
    }

    /// Proxies every mapping to this upstream PCP server from now on.
    pub fn set_upstream(&mut self, link: UpstreamLink) {
        self.upstream = Some(link);
    }

    /// The upstream link, when mappings are proxied.
    #[must_use]
    pub const fn upstream(&self) -> Option<&UpstreamLink> {
        self.upstream.as_ref()
    }

    /// The upstream link, when mappings are proxied.
    pub fn upstream_mut(&mut self) -> Option<&mut UpstreamLink> {
        self.upstream.as_mut()
    }

    /// Brings the upstream mappings in line with the table (after a change made
    /// elsewhere: UPnP, expiry).
    pub fn sync_upstream(&mut self, now: Instant, table: &impl MappingTable) {
        if let Some(up) = self.upstream.as_mut() {
            up.sync(now, table);
        }
    }

    /// The engine's counters and what the reply path held back or lost.
    #[must_use]
    pub fn stats(&self) -> (Stats, ReplyStats) {
        (*self.server.stats(), self.replies.stats())
    }

    /// The addresses served on.
    pub fn locals(&self) -> impl Iterator<Item = SocketAddrV4> + '_ {
        self.sockets.iter().map(|s| s.local)
    }

    /// Waits until a socket has datagrams; returns its index (the number of LAN
    /// sockets for the upstream's). Cancel-safe (it only waits for readiness). Never
    /// returns without sockets.
    pub async fn readable(&self) -> usize {
        let upstream = async {
            match self.upstream.as_ref() {
                Some(up) => up.readable().await,
                None => std::future::pending().await,
            }
        };
        if self.sockets.is_empty() {
            upstream.await;
            return 0;
        }
        let ready = self.sockets.iter().map(|s| Box::pin(s.socket.readable()));
        tokio::select! {
            (result, index, _) = futures::future::select_all(ready) => {
                if let Err(e) = result {
                    debug!(
                        "pcp.socket_error local={} error=\"{e}\"",
                        self.sockets[index].local
                    );
                }
                index
            }
            () = upstream => self.sockets.len(),
        }
    }

    /// Answers the datagrams waiting on socket `index`.
    pub fn receive(&mut self, index: usize, now: Instant, table: &mut impl MappingTable) {
        if index == self.sockets.len() {
            if let Some(up) = self.upstream.as_mut() {
                let ready = up.receive(now);
                self.send_held(now, ready);
            }
            return;
        }
        let mut buf = [0u8; MAX_LEN + 1];
        for _ in 0..BATCH {
            let Some(s) = self.sockets.get(index) else {
                return;
            };
            let (len, src) = match s.socket.try_recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // An ICMP error about an earlier answer: nothing to do with this one.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    warn!("pcp.receive_failed local={} error=\"{e}\"", s.local);
                    break;
                }
            };
            let SocketAddr::V4(src) = src else { continue };
            // A request whose answer could not leave at once creates no state: its
            // source is spoofed, or its retransmission finds the entry resolved.
            if !self.replies.verified(now, *src.ip()) {
                continue;
            }
            let mut answer = self.server.handle(now, src, &buf[..len], table);
            if let (Some(up), Some(a)) = (self.upstream.as_mut(), answer.take()) {
                up.sync(now, &*table);
                answer = up.outgoing(now, index, src, a);
            }
            if let Some(answer) = answer {
                self.replies
                    .send(now, &self.sockets[index].socket, &answer, src);
            }
        }
        self.log_events(now);
    }

    /// When announcements are next due.
    #[must_use]
    pub fn next_timeout(&self) -> Option<Instant> {
        let server = self.server.poll_timeout();
        match (
            server,
            self.upstream.as_ref().and_then(UpstreamLink::next_timeout),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends the announcements due at `now`, and does the upstream's due work.
    pub fn on_timeout(&mut self, now: Instant, table: &impl MappingTable) {
        for t in self.server.unsolicited(now, table) {
            self.send_unsolicited(now, &t);
        }
        if let Some(up) = self.upstream.as_mut() {
            up.sync(now, table);
            let ready = up.on_timeout(now);
            self.send_held(now, ready);
        }
        self.log_events(now);
    }

    /// Sends answers the upstream held back.
    fn send_held(&mut self, now: Instant, ready: Vec<Held>) {
        for h in ready {
            if let Some(s) = self.sockets.get(h.socket) {
                self.replies.send(now, &s.socket, &h.payload, h.destination);
            }
        }
    }

    /// The external address changed: announce it, with unsolicited MAP responses to
    /// every PCP client (RFC 6887 §14.2).
    pub fn external_address_changed(&mut self, now: Instant) {
        self.server.external_address_changed(now);
    }

    /// The mapping state outlived a restart: the epoch goes on from `elapsed`, with
    /// no restart to announce (RFC 6887 §8.5).
    pub fn continue_epoch(&mut self, elapsed: std::time::Duration, now: Instant) {
        self.server.continue_epoch(elapsed, now);
    }

    /// A new policy (a reloaded configuration).
    ///
    /// # Errors
    /// When it is invalid (the old one stays).
    pub fn set_config(&mut self, config: PcpConfig, now: Instant) -> Result<()> {
        self.server
            .set_config(config, now)
            .context("the reloaded [pcp] configuration")
    }

    /// The policy in force.
    #[must_use]
    pub const fn config(&self) -> &PcpConfig {
        self.server.config()
    }

    fn send_unsolicited(&mut self, now: Instant, t: &Transmit) {
        let targets: Vec<usize> = if t.destination == ANNOUNCE_GROUP {
            (0..self.sockets.len())
                .filter(|i| self.sockets[*i].announces)
                .collect()
        } else {
            let on_its_lan = self
                .sockets
                .iter()
                .position(|s| s.prefix.contains(*t.destination.ip()));
            on_its_lan
                .or((!self.sockets.is_empty()).then_some(0))
                .into_iter()
                .collect()
        };
        let payload = match self.upstream.as_ref() {
            Some(up) => up.rewrite(now, t.payload.clone()),
            None => t.payload.clone(),
        };
        for i in targets {
            self.replies
                .send(now, &self.sockets[i].socket, &payload, t.destination);
        }
    }

    /// Logs what the engine reports: refusals at `info`, rate limiting and lost
    /// events at `warn`, mappings made and deleted at `info`, the rest at `debug`.
    fn log_events(&mut self, now: Instant) {
        while let Some(event) = self.server.poll_event() {
            match &event {
                _ if event.is_refusal() => {
                    if let Some(suppressed) = self.refusal_log.admit(now) {
                        info!("{event}{}", suppressed_note(suppressed));
                    }
                }
                Event::Created(_) | Event::Deleted(_) => info!("{event}"),
                Event::Dropped {
                    reason: DropReason::RateLimited,
                    ..
                } => warn!(
                    "{event}: the client is over pcp.requests_per_second; its requests are dropped"
                ),
                Event::Lost { .. } => warn!("{event}"),
                Event::Renewed(_)
                | Event::Peer { .. }
                | Event::Dropped { .. }
                | Event::Refused { .. } => debug!("{event}"),
            }
        }
    }
}
