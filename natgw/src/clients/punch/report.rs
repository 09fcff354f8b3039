//! What `natgw punch` prints: one [`Report`] filled in as the punch goes, printed as
//! text or as one JSON object — on failure too, with the stage it failed in and why.
//!
//! It also decides which of what we learned about ourselves is our public endpoint:
//! STUN's answer, else our gateway's PCP PEER answer, else the rendezvous's
//! observation — and says so in `public_from`, with a note whenever a source failed or
//! two sources disagree (a NAT that maps each destination to its own port).

use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Options;
use natgw_proto::punch::prober::{Outcome, PathKind, PathReport, Prober};
use natgw_proto::punch::wire::{MappedBy, PeerInfo};

/// Where our public endpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublicFrom {
    /// A STUN Binding response (`stun` in the report).
    Stun,
    /// Our gateway's PCP PEER response (no STUN answer).
    Pcp,
    /// The source the rendezvous saw our REGISTER come from (no STUN answer, no PCP).
    Rendezvous,
}

/// The STUN Binding exchange from our punching port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StunReport {
    /// The server asked (the rendezvous unless `--stun`).
    pub server: SocketAddrV4,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// Where the server saw us come from (XOR-MAPPED-ADDRESS).
    pub mapped: Option<SocketAddrV4>,
    /// Why it taught us nothing.
    pub error: Option<String>,
    /// Whether the rendezvous saw us at the same endpoint.
    pub agrees_with_rendezvous: Option<bool>,
}

/// One PCP PEER exchange with our gateway (`--pcp`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PcpPeer {
    /// The PCP server.
    pub gateway: SocketAddrV4,
    /// The peer endpoint the mapping is towards.
    pub remote: SocketAddrV4,
    /// Our external endpoint towards it, as the gateway assigned it.
    pub external: Option<SocketAddrV4>,
    /// Seconds the gateway keeps it.
    pub lifetime: Option<u32>,
    /// Why there is no mapping: the refusal, or silence.
    pub error: Option<String>,
}

/// The TURN relay used (`relay` in the report).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RelayReport {
    /// The TURN server.
    pub server: SocketAddrV4,
    /// `udp` or `tcp`: how we reached the server (the relay itself is UDP).
    pub transport: &'static str,
    /// Our relayed address.
    pub relayed: Option<SocketAddrV4>,
    /// The peer's relayed address.
    pub peer_relayed: Option<SocketAddrV4>,
    /// The peer endpoint used on the relay path.
    pub remote: Option<SocketAddrV4>,
    /// Round trip through the relay, milliseconds (median).
    pub rtt_ms: Option<f64>,
    /// How long the allocation took, milliseconds.
    pub allocated_ms: f64,
}

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
    /// Our public endpoint: STUN's answer, else our gateway's PCP PEER answer, else
    /// what the rendezvous saw.
    pub public: Option<SocketAddrV4>,
    /// Where `public` came from: `stun`, `pcp` or `rendezvous`.
    pub public_from: Option<PublicFrom>,
    /// Where the rendezvous saw our REGISTER come from.
    pub observed: Option<SocketAddrV4>,
    /// The STUN exchange.
    pub stun: Option<StunReport>,
    /// Our PCP-mapped endpoint (PCP MAP), with `--pcp`.
    pub mapped: Option<SocketAddrV4>,
    /// The PCP PEER exchanges, with `--pcp`: one per endpoint of the peer's.
    pub pcp_peer: Vec<PcpPeer>,
    /// The peer's public endpoint, as the rendezvous saw it.
    pub peer_public: Option<SocketAddrV4>,
    /// The peer's public endpoint as its STUN server saw it.
    pub peer_stun: Option<SocketAddrV4>,
    /// The peer's private endpoints.
    pub peer_private: Vec<SocketAddrV4>,
    /// The peer's PCP-mapped endpoint.
    pub peer_mapped: Option<SocketAddrV4>,
    /// Whether the rendezvous introduced the peer to us (it asked first) rather than
    /// answering our lookup.
    pub introduced: Option<bool>,
    /// How we reached the peer: `direct-public`, `direct-private`, `pcp-mapped`,
    /// `peer-reflexive` or `relayed` (through a TURN relay).
    pub method: Option<&'static str>,
    /// The TURN relay, when it was used (also after an upgrade to a direct path).
    pub relay: Option<RelayReport>,
    /// Whether a relayed connection was upgraded to a direct path (`method` then
    /// names the direct one).
    pub upgraded: bool,
    /// Our allocation, whether used or not.
    #[serde(skip)]
    allocation: Option<super::relay::Allocation>,
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
    /// What did not stop the punch but is worth knowing: a source of our endpoint
    /// that failed, two that disagree.
    pub notes: Vec<String>,
    /// Where it failed: `setup`, `rendezvous`, `waiting-for-peer` or `punching`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<&'static str>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the rendezvous refused us, its reason (see
    /// [`super::client::Refused::reason`]: `expired`, `wrong-credential`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Whether we sent the rendezvous a credential.
    pub authenticated: bool,
    /// How we spoke to the rendezvous: `udp` or `tcp`.
    pub rendezvous_transport: &'static str,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Report {
    /// An empty report for a punch with these options.
    #[must_use]
    pub fn new(options: &Options) -> Self {
        Self {
            ok: false,
            transport: if options.tcp { "tcp" } else { "udp" },
            id: options.id.to_string(),
            peer: options.peer.to_string(),
            rendezvous: options.rendezvous,
            local: None,
            public: None,
            public_from: None,
            observed: None,
            stun: None,
            mapped: None,
            pcp_peer: Vec::new(),
            peer_public: None,
            peer_stun: None,
            peer_private: Vec::new(),
            peer_mapped: None,
            introduced: None,
            method: None,
            relay: None,
            upgraded: false,
            allocation: None,
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
            notes: Vec::new(),
            stage: Some(stage::SETUP),
            error: None,
            refused: None,
            authenticated: options.credential.is_some(),
            rendezvous_transport: if options.tcp || options.rendezvous_tcp {
                "tcp"
            } else {
                "udp"
            },
        }
    }

    /// Records what the STUN server at `server` said over `transport` (`udp` or
    /// `tcp`): our endpoint, or why there is none (a note: the rendezvous's
    /// observation will do).
    pub fn stun_answered(
        &mut self,
        server: SocketAddrV4,
        transport: &'static str,
        answer: Result<SocketAddrV4, String>,
    ) {
        let (mapped, error) = match answer {
            Ok(mapped) => (Some(mapped), None),
            Err(e) => {
                self.notes.push(format!(
                    "no public endpoint from the STUN server {server} over {}: {e}; using \
                     the endpoint the rendezvous saw instead",
                    transport.to_uppercase()
                ));
                (None, Some(e))
            }
        };
        self.stun = Some(StunReport {
            server,
            transport,
            mapped,
            error,
            agrees_with_rendezvous: None,
        });
    }

    /// Records where the rendezvous saw us, and settles our public endpoint: STUN's
    /// answer if there is one (with a note if the two differ), else this.
    pub fn registered(&mut self, observed: SocketAddrV4) {
        self.observed = Some(observed);
        // Punching UDP after talking TCP to the rendezvous (--rendezvous-tcp): what
        // it saw is our TCP connection's mapping, which says nothing about the UDP one.
        let other_transport = self.transport != self.rendezvous_transport;
        let learned = self.stun.as_mut().and_then(|s| Some((s.mapped?, s)));
        let Some((mapped, stun)) = learned else {
            self.public = Some(observed);
            self.public_from = Some(PublicFrom::Rendezvous);
            if other_transport {
                self.notes.push(format!(
                    "the rendezvous saw our {} connection from {observed}; our {} mapping \
                     may have another port (no STUN answer over {} to tell)",
                    self.rendezvous_transport.to_uppercase(),
                    self.transport.to_uppercase(),
                    self.transport.to_uppercase(),
                ));
            }
            return;
        };
        if other_transport {
            self.public = Some(mapped);
            self.public_from = Some(PublicFrom::Stun);
            return;
        }
        stun.agrees_with_rendezvous = Some(mapped == observed);
        let server = stun.server;
        self.public = Some(mapped);
        self.public_from = Some(PublicFrom::Stun);
        if mapped != observed {
            self.notes.push(format!(
                "the STUN server {server} saw us as {mapped} but the rendezvous {} saw \
                 {observed}: our NAT maps each destination to its own port \
                 (endpoint-dependent, \"symmetric\"), so the peer can only reach us on \
                 yet another port, learned from its probes (peer-reflexive), if at all",
                self.rendezvous
            ));
        }
    }

    /// Records our gateway's PCP PEER answers. The first external endpoint it
    /// assigned is our public endpoint if STUN gave none; refusals and silence are
    /// noted.
    pub fn pcp_peer_answered(&mut self, answers: Vec<PcpPeer>) {
        for answer in answers {
            match (answer.external, &answer.error) {
                (Some(external), _) => {
                    if self.public_from == Some(PublicFrom::Rendezvous) {
                        self.public = Some(external);
                        self.public_from = Some(PublicFrom::Pcp);
                    }
                    if let Some(observed) = self.observed.filter(|&o| o != external) {
                        self.notes.push(format!(
                            "our gateway {} maps us to {external} towards {} (PCP PEER) \
                             but the rendezvous saw {observed}: it maps each destination \
                             to its own port",
                            answer.gateway, answer.remote
                        ));
                    }
                }
                (None, error) => self.notes.push(format!(
                    "PCP PEER towards {} at our gateway {}: {}; the gateway may drop the \
                     peer's packets until ours go out",
                    answer.remote,
                    answer.gateway,
                    error.as_deref().unwrap_or("no mapping")
                )),
            }
            self.pcp_peer.push(answer);
        }
    }

    /// Records the peer's endpoints and how long we waited for them.
    pub fn peer_found(&mut self, peer: &PeerInfo, waited: Duration) {
        let learned = |by| peer.mapped.iter().find(|m| m.by == by).map(|m| m.endpoint);
        self.peer_public = Some(peer.public);
        self.peer_stun = learned(MappedBy::Stun);
        self.peer_private.clone_from(&peer.private);
        self.peer_mapped = learned(MappedBy::Pcp);
        self.introduced = Some(peer.introduction);
        self.wait_for_peer_ms = Some(ms(waited));
    }

    /// Records our TURN allocation.
    pub fn relay_allocated(&mut self, allocation: &super::relay::Allocation) {
        self.allocation = Some(*allocation);
    }

    /// Records that the relay path was selected (after [`Self::succeeded`]).
    pub fn relayed(&mut self, outcome: &Outcome, peer_relayed: Option<SocketAddrV4>) {
        let Some(a) = self.allocation else {
            return;
        };
        self.relay = Some(RelayReport {
            server: a.server,
            transport: a.transport,
            relayed: Some(a.relayed),
            peer_relayed,
            remote: Some(outcome.selected.remote),
            rtt_ms: Some(ms(outcome.rtt)),
            allocated_ms: ms(a.took),
        });
    }

    /// Records the direct path found after the relay worked: it becomes the selected
    /// one; the relay stays described in `relay`.
    pub fn upgraded(&mut self, direct: &Outcome) {
        let relay_paths: Vec<PathReport> = self
            .paths
            .iter()
            .filter(|p| p.kind == PathKind::Relay)
            .cloned()
            .collect();
        self.succeeded(direct);
        self.paths.extend(relay_paths);
        self.upgraded = true;
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
            self.refused = e
                .downcast_ref::<super::client::Refused>()
                .map(super::client::Refused::reason);
        }
    }

    /// The report as text.
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        let transport = self.transport.to_uppercase();
        if self.ok && self.method == Some(PathKind::Relay.method()) {
            let _ = writeln!(
                out,
                "{} → {} over {transport}: connected through a TURN relay (relayed)",
                self.id, self.peer,
            );
        } else if self.ok {
            let _ = writeln!(
                out,
                "{} → {} over {transport}: connected directly ({}){}",
                self.id,
                self.peer,
                self.method.unwrap_or("?"),
                if self.upgraded {
                    ", upgraded from the relay"
                } else {
                    ""
                }
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
        if let Some(relay) = &self.relay {
            let addr =
                |a: Option<SocketAddrV4>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
            let _ = writeln!(
                out,
                "  relayed via {} (relayed {}, peer's relayed {}), rtt {:.3} ms",
                relay.server,
                addr(relay.relayed),
                addr(relay.peer_relayed),
                relay.rtt_ms.unwrap_or(0.0)
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
                Some(PathKind::Relay) => "their relayed address, through our relay",
                _ => "an endpoint their probes came from",
            };
            row("peer endpoint", format!("{remote} ({what}, {method})"));
        }
        if let Some(local) = self.local {
            let mut us = local.to_string();
            if let Some(public) = self.public {
                let _ = write!(us, ", public {public} ({})", self.public_source());
            }
            if let Some(mapped) = self.mapped {
                let _ = write!(us, ", PCP mapping {mapped}");
            }
            row("our endpoint", us);
        }
        for (i, p) in self.pcp_peer.iter().enumerate() {
            let what = match (p.external, &p.error) {
                (Some(external), _) => format!(
                    "towards {}: our gateway maps us to {external} for {} s",
                    p.remote,
                    p.lifetime.unwrap_or(0)
                ),
                (None, error) => format!(
                    "towards {}: {}",
                    p.remote,
                    error.as_deref().unwrap_or("no mapping")
                ),
            };
            row(if i == 0 { "pcp peer" } else { "" }, what);
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
        for (i, note) in self.notes.iter().enumerate() {
            row(if i == 0 { "note" } else { "" }, note.clone());
        }
        row("total", format!("{:.1} ms", self.total_ms));
        out
    }

    /// Where our public endpoint came from, in words: "stun 198.18.0.1:7000; the
    /// rendezvous saw the same", "rendezvous observation", "pcp PEER at ...".
    fn public_source(&self) -> String {
        let agreement = |public: Option<SocketAddrV4>| match (public, self.observed) {
            (Some(p), Some(o)) if p == o => "; the rendezvous saw the same".to_owned(),
            (_, Some(o)) => format!("; the rendezvous saw {o}"),
            (_, None) => String::new(),
        };
        match self.public_from {
            Some(PublicFrom::Stun) => {
                let server = self.stun.as_ref().map(|s| s.server.to_string());
                format!(
                    "stun {}{}",
                    server.unwrap_or_default(),
                    agreement(self.public)
                )
            }
            Some(PublicFrom::Pcp) => {
                let gateway = self.pcp_peer.first().map(|p| p.gateway.to_string());
                format!(
                    "pcp PEER at {}{}",
                    gateway.unwrap_or_default(),
                    agreement(self.public)
                )
            }
            Some(PublicFrom::Rendezvous) | None => "rendezvous observation".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_proto::punch::wire::PeerId;

    fn ep(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn report() -> Report {
        let mut r = Report::new(&Options::new(
            ep("198.18.0.1:7000"),
            PeerId::new("a1").unwrap(),
            PeerId::new("b1").unwrap(),
        ));
        r.local = Some(ep("10.1.0.2:4000"));
        r
    }

    fn peer_answer(remote: &str, external: Option<&str>, error: Option<&str>) -> PcpPeer {
        PcpPeer {
            gateway: ep("10.1.0.1:5351"),
            remote: ep(remote),
            external: external.map(ep),
            lifetime: external.map(|_| 120),
            error: error.map(str::to_owned),
        }
    }

    fn path(kind: PathKind, remote: &str, rtt: f64) -> PathReport {
        PathReport {
            kind,
            remote: ep(remote),
            probes_sent: 5,
            acks: 4,
            probes_received: 5,
            verified: true,
            rtt_ms: Some(rtt),
            seen_as: None,
        }
    }

    fn outcome(selected: PathReport, rtt_ms: u64) -> Outcome {
        Outcome {
            selected: selected.clone(),
            rtt: Duration::from_millis(rtt_ms),
            connect_time: Duration::from_millis(2000),
            peer_confirmed: true,
            paths: vec![selected],
        }
    }

    #[test]
    fn a_relayed_connection_and_its_upgrade_are_reported() {
        let mut r = report();
        r.relay_allocated(&super::super::relay::Allocation {
            server: ep("198.18.0.1:7000"),
            transport: "udp",
            relayed: ep("198.18.0.1:50001"),
            took: Duration::from_millis(3),
        });
        // Allocated but not used: no `relay`.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["relay"], serde_json::Value::Null);
        assert_eq!(json["upgraded"], false);

        let relayed = outcome(path(PathKind::Relay, "198.18.0.1:50000", 4.0), 4);
        r.succeeded(&relayed);
        r.relayed(&relayed, Some(ep("198.18.0.1:50000")));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ok"], true);
        assert_eq!(json["method"], "relayed");
        assert_eq!(json["rtt_ms"], 4.0);
        assert_eq!(
            json["relay"],
            serde_json::json!({
                "server": "198.18.0.1:7000",
                "transport": "udp",
                "relayed": "198.18.0.1:50001",
                "peer_relayed": "198.18.0.1:50000",
                "remote": "198.18.0.1:50000",
                "rtt_ms": 4.0,
                "allocated_ms": 3.0,
            })
        );
        let text = r.text();
        assert!(
            text.starts_with("a1 → b1 over UDP: connected through a TURN relay (relayed)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "relayed via 198.18.0.1:7000 (relayed 198.18.0.1:50001, peer's relayed \
                 198.18.0.1:50000), rtt 4.000 ms"
            ),
            "{text}"
        );

        // The upgrade: the direct path is the result, the relay stays described.
        let direct = outcome(path(PathKind::Public, "198.51.100.1:4000", 1.0), 1);
        r.upgraded(&direct);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["method"], "direct-public");
        assert_eq!(json["upgraded"], true);
        assert_eq!(json["rtt_ms"], 1.0);
        assert_eq!(json["relay"]["rtt_ms"], 4.0);
        let kinds: Vec<&str> = json["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["public", "relay"]);
        assert!(r
            .text()
            .contains("connected directly (direct-public), upgraded from the relay"));
    }

    #[test]
    fn a_stun_answer_that_agrees_with_the_rendezvous_is_our_public_endpoint() {
        let mut r = report();
        r.stun_answered(ep("198.18.0.1:7000"), "udp", Ok(ep("192.0.2.1:4000")));
        r.registered(ep("192.0.2.1:4000"));
        assert_eq!(r.public, Some(ep("192.0.2.1:4000")));
        assert_eq!(r.public_from, Some(PublicFrom::Stun));
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["public_from"], "stun");
        assert_eq!(json["observed"], "192.0.2.1:4000");
        assert_eq!(json["stun"]["server"], "198.18.0.1:7000");
        assert_eq!(json["stun"]["transport"], "udp");
        assert_eq!(json["stun"]["mapped"], "192.0.2.1:4000");
        assert_eq!(json["stun"]["agrees_with_rendezvous"], true);
        assert!(r
            .text()
            .contains("public 192.0.2.1:4000 (stun 198.18.0.1:7000; the rendezvous saw the same)"));
    }

    #[test]
    fn stun_and_rendezvous_disagreeing_is_diagnosed_as_endpoint_dependent_mapping() {
        let mut r = report();
        r.stun_answered(ep("198.18.0.1:3478"), "udp", Ok(ep("203.0.113.1:61000")));
        r.registered(ep("203.0.113.1:4000"));
        assert_eq!(r.public, Some(ep("203.0.113.1:61000")));
        assert_eq!(r.public_from, Some(PublicFrom::Stun));
        assert_eq!(
            r.stun.as_ref().and_then(|s| s.agrees_with_rendezvous),
            Some(false)
        );
        assert_eq!(r.notes.len(), 1);
        assert!(r.notes[0].contains("endpoint-dependent"), "{}", r.notes[0]);
        assert!(r.notes[0].contains("203.0.113.1:4000"), "{}", r.notes[0]);
        let text = r.text();
        assert!(
            text.contains("(stun 198.18.0.1:3478; the rendezvous saw 203.0.113.1:4000)"),
            "{text}"
        );
        assert!(text.contains("  note            the STUN server"), "{text}");
    }

    #[test]
    fn without_a_stun_answer_the_rendezvous_observation_is_used_with_a_note() {
        let mut r = report();
        r.stun_answered(
            ep("198.18.0.1:9"),
            "udp",
            Err("no answer (3 transmissions, 2.0 s)".to_owned()),
        );
        r.registered(ep("192.0.2.1:4000"));
        assert_eq!(r.public, Some(ep("192.0.2.1:4000")));
        assert_eq!(r.public_from, Some(PublicFrom::Rendezvous));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["public_from"], "rendezvous");
        assert_eq!(json["stun"]["mapped"], serde_json::Value::Null);
        assert_eq!(json["stun"]["error"], "no answer (3 transmissions, 2.0 s)");
        assert_eq!(
            r.notes,
            [
                "no public endpoint from the STUN server 198.18.0.1:9 over UDP: no answer (3 \
              transmissions, 2.0 s); using the endpoint the rendezvous saw instead"
            ]
        );
        assert!(r
            .text()
            .contains("public 192.0.2.1:4000 (rendezvous observation)"));
    }

    #[test]
    fn pcp_peer_answers_are_shown_and_stand_in_for_a_missing_stun_answer() {
        // STUN answered: PEER is shown, the public endpoint stays STUN's.
        let mut r = report();
        r.stun_answered(ep("198.18.0.1:7000"), "udp", Ok(ep("192.0.2.1:4000")));
        r.registered(ep("192.0.2.1:4000"));
        r.pcp_peer_answered(vec![peer_answer(
            "198.51.100.1:5000",
            Some("192.0.2.1:4000"),
            None,
        )]);
        assert_eq!(r.public_from, Some(PublicFrom::Stun));
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["pcp_peer"][0]["remote"], "198.51.100.1:5000");
        assert_eq!(json["pcp_peer"][0]["external"], "192.0.2.1:4000");
        assert_eq!(json["pcp_peer"][0]["lifetime"], 120);
        assert!(r.text().contains(
            "  pcp peer        towards 198.51.100.1:5000: our gateway maps us to \
             192.0.2.1:4000 for 120 s"
        ));

        // No STUN answer: PEER's external endpoint is our public one.
        let mut r = report();
        r.stun_answered(ep("198.18.0.1:7000"), "udp", Err("no answer".to_owned()));
        r.registered(ep("192.0.2.1:4000"));
        r.pcp_peer_answered(vec![
            peer_answer("198.51.100.1:5000", Some("192.0.2.1:4000"), None),
            peer_answer("198.51.100.1:5001", None, Some("refused: NOT_AUTHORIZED")),
        ]);
        assert_eq!(r.public, Some(ep("192.0.2.1:4000")));
        assert_eq!(r.public_from, Some(PublicFrom::Pcp));
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
        assert!(r.notes[1].contains("PCP PEER towards 198.51.100.1:5001"));
        assert!(r.notes[1].contains("NOT_AUTHORIZED"));
        let text = r.text();
        assert!(
            text.contains("(pcp PEER at 10.1.0.1:5351; the rendezvous saw the same)"),
            "{text}"
        );

        // A gateway that maps the peer elsewhere than the rendezvous saw.
        let mut r = report();
        r.registered(ep("192.0.2.1:4000"));
        r.pcp_peer_answered(vec![peer_answer(
            "198.51.100.1:5000",
            Some("192.0.2.1:4999"),
            None,
        )]);
        assert_eq!(r.public, Some(ep("192.0.2.1:4999")));
        assert!(
            r.notes[0].contains("maps each destination"),
            "{:?}",
            r.notes
        );
    }
}
