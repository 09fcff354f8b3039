//! What `natgw punch` prints: one [`Report`] filled in as the punch goes, printed as
//! text or as one JSON object — on failure too, with the stage it failed in and why.

use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::prober::{Outcome, PathKind, PathReport, Prober};
use super::wire::PeerInfo;
use super::PunchArgs;

/// How a TCP connection came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpOpen {
    /// Our connect() succeeded: a simultaneous open (both SYNs crossed) or the peer's
    /// listener answered.
    Connect,
    /// Our listener accepted the peer's connect().
    Accept,
}

/// What TCP connection attempts ran into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TcpAttempts {
    /// connect() calls.
    pub connects: u32,
    /// Refused: a RST came back (nothing listening, or a NAT that answers with RST).
    pub refused: u32,
    /// Timed out: the SYN (or the answer) was dropped on the way.
    pub timed_out: u32,
    /// ICMP unreachable, or no route.
    pub unreachable: u32,
    /// Connections our listener accepted.
    pub accepted: u32,
}

/// Stage names used in the report.
pub mod stage {
    /// Binding sockets, PCP.
    pub const SETUP: &str = "setup";
    /// Registering with the rendezvous.
    pub const RENDEZVOUS: &str = "rendezvous";
    /// Waiting for the peer to register.
    pub const WAITING_FOR_PEER: &str = "waiting-for-peer";
    /// Sending probes / connecting.
    pub const PUNCHING: &str = "punching";
}

/// The result of one `natgw punch`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Whether a direct path was verified.
    pub ok: bool,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// Our id.
    pub id: String,
    /// The peer's id.
    pub peer: String,
    /// The rendezvous.
    pub rendezvous: SocketAddrV4,
    /// Our private endpoint (where everything leaves from).
    pub local: Option<SocketAddrV4>,
    /// Our public endpoint, as the rendezvous saw it.
    pub public: Option<SocketAddrV4>,
    /// Our PCP-mapped endpoint, with `--pcp`.
    pub mapped: Option<SocketAddrV4>,
    /// The peer's public endpoint.
    pub peer_public: Option<SocketAddrV4>,
    /// The peer's private endpoints.
    pub peer_private: Vec<SocketAddrV4>,
    /// The peer's PCP-mapped endpoint.
    pub peer_mapped: Option<SocketAddrV4>,
    /// Whether the rendezvous introduced the peer to us (it asked first) rather than
    /// answering our lookup.
    pub introduced: Option<bool>,
    /// How we reached the peer: `direct-public`, `direct-private`, `pcp-mapped` or
    /// `peer-reflexive`.
    pub method: Option<&'static str>,
    /// The peer endpoint of the selected path.
    pub remote: Option<SocketAddrV4>,
    /// Where the peer saw us come from on that path.
    pub seen_as: Option<SocketAddrV4>,
    /// TCP: how the connection opened.
    pub tcp_open: Option<TcpOpen>,
    /// TCP: what the connection attempts ran into.
    pub tcp_attempts: Option<TcpAttempts>,
    /// Round trip on the selected path, milliseconds (median).
    pub rtt_ms: Option<f64>,
    /// From learning the peer's endpoints to a verified direct path, milliseconds.
    pub connect_ms: Option<f64>,
    /// From our registration to learning the peer's endpoints, milliseconds.
    pub wait_for_peer_ms: Option<f64>,
    /// The whole run, milliseconds.
    pub total_ms: f64,
    /// Whether the peer confirmed it finished too.
    pub peer_confirmed: Option<bool>,
    /// Whether we were the controlling peer (our id sorts first: we chose the path).
    pub controlling: Option<bool>,
    /// Messages on our port from others (wrong session or ids), ignored.
    pub foreign: u64,
    /// Every path tried.
    pub paths: Vec<PathReport>,
    /// Where it failed: `setup`, `rendezvous`, `waiting-for-peer` or `punching`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<&'static str>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Report {
    /// An empty report for these arguments.
    #[must_use]
    pub fn new(args: &PunchArgs) -> Self {
        Self {
            ok: false,
            transport: if args.tcp { "tcp" } else { "udp" },
            id: args.id.to_string(),
            peer: args.peer.to_string(),
            rendezvous: args.rendezvous,
            local: None,
            public: None,
            mapped: None,
            peer_public: None,
            peer_private: Vec::new(),
            peer_mapped: None,
            introduced: None,
            method: None,
            remote: None,
            seen_as: None,
            tcp_open: None,
            tcp_attempts: None,
            rtt_ms: None,
            connect_ms: None,
            wait_for_peer_ms: None,
            total_ms: 0.0,
            peer_confirmed: None,
            controlling: None,
            foreign: 0,
            paths: Vec::new(),
            stage: Some(stage::SETUP),
            error: None,
        }
    }

    /// Records the peer's endpoints and how long we waited for them.
    pub fn peer_found(&mut self, peer: &PeerInfo, waited: Duration) {
        self.peer_public = Some(peer.public);
        self.peer_private.clone_from(&peer.private);
        self.peer_mapped = peer.mapped.map(|m| m.endpoint);
        self.introduced = Some(peer.introduction);
        self.wait_for_peer_ms = Some(ms(waited));
    }

    /// Records what the prober knows whatever the outcome: its role, the paths, the
    /// foreign messages it ignored.
    pub fn prober_state(&mut self, prober: &Prober) {
        self.controlling = Some(prober.is_controlling());
        self.foreign = prober.foreign();
        self.paths = prober.paths();
    }

    /// Records a successful check.
    pub fn succeeded(&mut self, outcome: &Outcome) {
        self.ok = true;
        self.stage = None;
        self.method = Some(outcome.selected.kind.method());
        self.remote = Some(outcome.selected.remote);
        self.seen_as = outcome.selected.seen_as;
        self.rtt_ms = Some(ms(outcome.rtt));
        self.connect_ms = Some(ms(outcome.connect_time));
        self.peer_confirmed = Some(outcome.peer_confirmed);
        self.paths.clone_from(&outcome.paths);
    }

    /// Stamps the total time and, on failure, the error.
    pub fn finish(&mut self, started: Instant, error: Option<&anyhow::Error>) {
        self.total_ms = ms(started.elapsed());
        if let Some(e) = error {
            self.ok = false;
            let mut text = String::new();
            for cause in e.chain() {
                let cause = cause.to_string();
                if !text.contains(&cause) {
                    if !text.is_empty() {
                        text.push_str(": ");
                    }
                    text.push_str(&cause);
                }
            }
            self.error = Some(text);
        }
    }

    /// Prints the report on standard output (the error itself goes to standard error
    /// from `main` in text mode).
    ///
    /// # Errors
    /// When it cannot be serialised.
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
        } else {
            print!("{}", self.text());
        }
        Ok(())
    }

    /// The report as text.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        let transport = self.transport.to_uppercase();
        if self.ok {
            let _ = writeln!(
                out,
                "{} → {} over {transport}: connected directly ({})",
                self.id,
                self.peer,
                self.method.unwrap_or("?")
            );
        } else {
            let _ = writeln!(
                out,
                "{} → {} over {transport}: FAILED while {}",
                self.id,
                self.peer,
                self.stage.unwrap_or("?").replace('-', " ")
            );
        }
        let mut row = |k: &str, v: String| {
            let _ = writeln!(out, "  {k:<16}{v}");
        };
        if let (Some(remote), Some(method)) = (self.remote, self.method) {
            let what = match self
                .paths
                .iter()
                .find(|p| p.remote == remote)
                .map(|p| p.kind)
            {
                Some(PathKind::Public) => "their public endpoint",
                Some(PathKind::Private) => "their private endpoint, on our LAN",
                Some(PathKind::Mapped) => "their PCP mapping",
                _ => "an endpoint their probes came from",
            };
            row("peer endpoint", format!("{remote} ({what}, {method})"));
        }
        if let Some(local) = self.local {
            let mut us = local.to_string();
            if let Some(public) = self.public {
                let _ = write!(us, ", public {public} as the rendezvous saw it");
            }
            if let Some(mapped) = self.mapped {
                let _ = write!(us, ", PCP mapping {mapped}");
            }
            row("our endpoint", us);
        }
        if let Some(seen) = self.seen_as {
            row("peer sees us as", seen.to_string());
        }
        if let Some(open) = self.tcp_open {
            row(
                "tcp open",
                match open {
                    TcpOpen::Connect => {
                        "our connect() (simultaneous open, or their listener answered)".to_owned()
                    }
                    TcpOpen::Accept => "accepted (the peer connected in)".to_owned(),
                },
            );
        }
        if let Some(connect) = self.connect_ms {
            let waited = self.wait_for_peer_ms.map_or(String::new(), |w| {
                format!(" (waited {w:.1} ms for the peer)")
            });
            row(
                "time to connect",
                format!("{connect:.1} ms after learning the peer's endpoints{waited}"),
            );
        } else if let Some(waited) = self.wait_for_peer_ms {
            row("peer found", format!("after {waited:.1} ms"));
        }
        if let Some(rtt) = self.rtt_ms {
            row("round trip", format!("{rtt:.3} ms (median)"));
        }
        for (i, p) in self.paths.iter().enumerate() {
            let state = if p.verified {
                format!("verified, {:.3} ms", p.rtt_ms.unwrap_or(0.0))
            } else if p.probes_received > 0 {
                format!(
                    "their probes arrived, ours got no answer ({} sent)",
                    p.probes_sent
                )
            } else {
                format!(
                    "no answer ({} probe{})",
                    p.probes_sent,
                    if p.probes_sent == 1 { "" } else { "s" }
                )
            };
            row(
                if i == 0 { "paths" } else { "" },
                format!("{} {}: {state}", p.kind.name(), p.remote),
            );
        }
        if let Some(a) = self.tcp_attempts {
            row(
                "tcp attempts",
                format!(
                    "{} connects: {} refused, {} timed out, {} unreachable; {} accepted",
                    a.connects, a.refused, a.timed_out, a.unreachable, a.accepted
                ),
            );
        }
        row("total", format!("{:.1} ms", self.total_ms));
        out
    }
}
