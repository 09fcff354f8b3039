//! The protocol engines of `natgw_proto` on sockets: thin tokio loops, as quinn is
//! around quinn-proto.
//!
//! - [`pcp`]: the PCP/NAT-PMP server on the LAN sockets.
//! - [`stun`]: the STUN responder.
//! - [`rendezvous`]: `natgw rendezvous` on UDP and TCP.
//! - [`upnp`]: the UPnP IGD server (SSDP, HTTP, GENA) on the LAN interfaces.
//! - [`replies`], [`neighbours`]: how their replies leave — never waiting, never
//!   queued behind the resolution of a spoofed source.
//! - [`replication`]: the HA state replication channel on TCP (active/standby).
//! - [`frames`]: reading STUN and punch messages from a TCP stream.
//! - [`http`]: what the HTTP servers share (limits, request reading); [`metrics`]:
//!   the Prometheus endpoint, and [`exposition`], the text format it serves.
//! - [`Shutdown`] and [`transient`]: what every socket loop here needs.

pub mod exposition;
pub mod frames;
pub mod http;
pub mod metrics;
pub mod neighbours;
pub mod pcp;
pub mod pcp_upstream;
pub mod rendezvous;
pub mod replication;
pub mod replies;
pub mod stun;
pub mod turn;
pub mod upnp;

use std::io;

use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGINT and SIGTERM, the two ways to ask a long-running natgw command to stop.
/// Installed before setup starts, so a signal that arrives during setup still leads to
/// a clean stop.
pub struct Shutdown {
    sigint: Signal,
    sigterm: Signal,
}

impl Shutdown {
    /// Catches SIGINT and SIGTERM from now on.
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            sigint: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            sigterm: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// Waits for either signal and names it (`SIGINT` or `SIGTERM`).
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.sigint.recv() => "SIGINT",
            _ = self.sigterm.recv() => "SIGTERM",
        }
    }
}

/// Receive errors on a UDP socket that only report an ICMP error about an earlier
/// datagram (Linux queues them on the socket): the socket itself is fine.
#[must_use]
pub fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}
