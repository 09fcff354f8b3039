//! The PCP and NAT-PMP server on sockets — the thin loop around the sans-IO
//! [`Server`], as quinn is around quinn-proto: datagrams in, answers out, the
//! engine's announcements sent when due and its events logged.
//!
//! One UDP socket per LAN address, bound to that address and port 5351 and to its
//! interface (`SO_BINDTODEVICE`). A request that comes in through the WAN — whatever
//! address it is sent to — is therefore never delivered to the server and gets no
//! answer (RFC 6887 §8.3, RFC 6886 §3), and every answer leaves from the address the
//! request was sent to. NAT-PMP clients use the same sockets (same port).
//!
//! Announcements (ANNOUNCE and the NAT-PMP address notice, RFC 6887 §14.1.3 and
//! RFC 6886 §3.2.1) go to 224.0.0.1:5350 out of every LAN interface, from its first
//! address (`IP_MULTICAST_IF`); unsolicited MAP responses (§14.2) go to the client
//! from the socket of the LAN it is on.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Instant;

use anyhow::{Context as _, Result};
use log::{debug, info, warn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::policy::PcpConfig;
use super::server::{DropReason, Event, Server, Transmit, ANNOUNCE_GROUP};
use super::table::MappingTable;
use super::wire::{self, MAX_LEN};
use crate::prefix::Ipv4Prefix;

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
    server: Server,
    sockets: Vec<LanSocket>,
}

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
        let server = Server::new(config, now).context("the [pcp] configuration")?;
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
        Ok(Self { server, sockets })
    }

    /// The addresses served on.
    pub fn locals(&self) -> impl Iterator<Item = SocketAddrV4> + '_ {
        self.sockets.iter().map(|s| s.local)
    }

    /// Waits until a socket has datagrams; returns its index. Cancel-safe (it only
    /// waits for readiness). Never returns without sockets.
    pub async fn readable(&self) -> usize {
        if self.sockets.is_empty() {
            return std::future::pending().await;
        }
        let ready = self.sockets.iter().map(|s| Box::pin(s.socket.readable()));
        let (result, index, _) = futures::future::select_all(ready).await;
        if let Err(e) = result {
            debug!(
                "pcp.socket_error local={} error=\"{e}\"",
                self.sockets[index].local
            );
        }
        index
    }

    /// Answers the datagrams waiting on socket `index`.
    pub fn receive(&mut self, index: usize, now: Instant, table: &mut impl MappingTable) {
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
            let answer = self.server.handle(now, src, &buf[..len], table);
            if let Some(answer) = answer {
                let s = &self.sockets[index];
                if let Err(e) = s.socket.try_send_to(&answer, src.into()) {
                    debug!("pcp.send_failed local={} to={src} error=\"{e}\"", s.local);
                }
            }
        }
        self.log_events();
    }

    /// When announcements are next due.
    #[must_use]
    pub fn next_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    /// Sends the announcements due at `now`.
    pub fn on_timeout(&mut self, now: Instant, table: &impl MappingTable) {
        for t in self.server.unsolicited(now, table) {
            self.send_unsolicited(&t);
        }
        self.log_events();
    }

    /// The external address changed: announce it, with unsolicited MAP responses to
    /// every PCP client (RFC 6887 §14.2).
    pub fn external_address_changed(&mut self, now: Instant) {
        self.server.external_address_changed(now);
    }

    /// The policy in force.
    #[must_use]
    pub const fn config(&self) -> &PcpConfig {
        self.server.config()
    }

    fn send_unsolicited(&self, t: &Transmit) {
        let targets: Vec<&LanSocket> = if t.destination == ANNOUNCE_GROUP {
            self.sockets.iter().filter(|s| s.announces).collect()
        } else {
            let on_its_lan = self
                .sockets
                .iter()
                .find(|s| s.prefix.contains(*t.destination.ip()));
            on_its_lan.or(self.sockets.first()).into_iter().collect()
        };
        for s in targets {
            if let Err(e) = s.socket.try_send_to(&t.payload, t.destination.into()) {
                debug!(
                    "pcp.unsolicited_failed local={} iface={} to={} error=\"{e}\"",
                    s.local, s.iface, t.destination
                );
            }
        }
    }

    /// Logs what the engine reports: refusals at `info`, rate limiting and lost
    /// events at `warn`, mappings made and deleted at `info`, the rest at `debug`.
    fn log_events(&mut self) {
        while let Some(event) = self.server.poll_event() {
            match &event {
                _ if event.is_refusal() => info!("{event}"),
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
