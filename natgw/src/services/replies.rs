//! How natgw's UDP services (STUN, PCP/NAT-PMP, the rendezvous) send replies: never
//! waiting, and never letting replies to spoofed sources crowd out real ones.
//!
//! - [`Replies::admit`] holds back a reply whose destination's link-layer address is
//!   not known beyond a small budget (see [`crate::services::neighbours`]); services that create
//!   state use [`Replies::verified`] instead, which processes nothing from such a
//!   source and only starts its resolution.
//! - [`Replies::send`] hands the reply to the socket without waiting: one the socket
//!   cannot take at once is dropped and counted, and logged within a budget.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use log::warn;
use tokio::net::UdpSocket;

use crate::services::neighbours::{Neighbours, Reach};
use natgw_proto::util::log_budget::{suppressed_note, LogBudget};

/// Send failures logged per [`LOG_WINDOW`].
const LOG_LINES: u32 = 10;
/// See [`LOG_LINES`].
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// What was held back or lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyStats {
    /// Requests or replies held back because the source's link-layer address is not
    /// known (spoofed, or resolved for its retransmission).
    pub unresolved: u64,
    /// Replies the socket would not take at once.
    pub send_failed: u64,
}

/// The reply path of one service.
pub struct Replies {
    service: &'static str,
    neighbours: Neighbours,
    log: LogBudget,
    stats: ReplyStats,
}

impl Replies {
    /// The reply path of `service` (the prefix of its log lines).
    #[must_use]
    pub fn new(service: &'static str, now: Instant) -> Self {
        Self {
            service,
            neighbours: Neighbours::open(now),
            log: LogBudget::new(LOG_LINES, LOG_WINDOW),
            stats: ReplyStats::default(),
        }
    }

    /// What was held back or lost so far.
    #[must_use]
    pub const fn stats(&self) -> ReplyStats {
        self.stats
    }

    /// Whether a reply to `to` may be sent: at once when its link-layer address is
    /// known, otherwise only within the unresolved budget (the reply itself then
    /// starts the resolution). For services that keep no state per request.
    pub fn admit(&mut self, now: Instant, to: Ipv4Addr) -> bool {
        if self.neighbours.check(now, to) == Reach::Ready
            || self.neighbours.allow_unresolved(now, to)
        {
            return true;
        }
        self.stats.unresolved += 1;
        false
    }

    /// Whether a request from `from` may be processed: only when its link-layer
    /// address is known. Otherwise its resolution is started (within the budget) so a
    /// real client's retransmission is served. For services that create state.
    pub fn verified(&mut self, now: Instant, from: Ipv4Addr) -> bool {
        if self.neighbours.check(now, from) == Reach::Ready {
            return true;
        }
        self.stats.unresolved += 1;
        self.neighbours.kick(now, from);
        false
    }

    /// Sends `bytes` to `to` from `socket` without waiting. Returns whether the
    /// socket took it.
    pub fn send(
        &mut self,
        now: Instant,
        socket: &UdpSocket,
        bytes: &[u8],
        to: SocketAddrV4,
    ) -> bool {
        let result = socket.try_send_to(bytes, to.into());
        self.sent(now, result, to)
    }

    /// Counts and (within the budget) logs the outcome of a send made elsewhere.
    pub fn sent(&mut self, now: Instant, result: io::Result<usize>, to: SocketAddrV4) -> bool {
        match result {
            Ok(_) => true,
            Err(e) => {
                self.stats.send_failed += 1;
                if let Some(suppressed) = self.log.admit(now) {
                    warn!(
                        "{}.send_failed to={to} error=\"{e}\": dropped, not waited for{}",
                        self.service,
                        suppressed_note(suppressed)
                    );
                }
                false
            }
        }
    }
}
