//! Path checking between two introduced peers, as a pure state machine (no sockets,
//! no timers: time is an argument), shared by UDP and TCP punching.
//!
//! A *path* is a remote endpoint of the peer we can send to: its public endpoint (what
//! the rendezvous or the peer's STUN server saw), a private one (its LAN address), a PCP-mapped one, or a *peer
//! reflexive* one — an endpoint its probes arrived from that we were not told about
//! (a NAT that gave the peer another port towards us than towards the rendezvous).
//!
//! Both peers send PROBEs on every active path every [`Settings::probe_interval`] and
//! answer every PROBE with an ACK to its source. An ACK verifies the path it answers
//! (matched by sequence number): our packets reach the peer there and its answers reach
//! us, so the NATs on the way let the flow through in both directions. Then:
//!
//! - the *controlling* peer (the one whose id sorts first) selects the first path it
//!   verified and marks its probes on it `nominate`;
//! - the other peer selects the path a nomination arrives on, or its own first
//!   verified path if none arrives within [`Settings::nomination_wait`];
//! - each side sends [`Settings::rtt_samples`] probes on the selected path to measure
//!   the round trip, then marks its messages `done`, and finishes when the peer's
//!   `done` arrives or [`Settings::linger`] has passed (so a peer that finishes first
//!   keeps answering for a while).
//!
//! Probes and acks carry the session token and both ids: anything else is counted as
//! foreign and ignored.

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::wire::{Ack, Flags, Message, PeerId, Probe, Repr, Session};

/// Where a path's remote endpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// A PCP-mapped endpoint the peer announced.
    Mapped,
    /// The peer's public endpoint, as the rendezvous saw it or as its STUN server did.
    Public,
    /// One of the peer's private (LAN) endpoints.
    Private,
    /// An endpoint the peer's probes came from that nobody announced.
    Reflexive,
    /// The peer's TURN relayed address: reached through our own allocation, or from
    /// our socket when we have none. Not direct: the fallback when nothing else
    /// works.
    Relay,
}

impl PathKind {
    /// Every kind, in the order paths are tried.
    pub const ALL: [Self; 5] = [
        Self::Mapped,
        Self::Public,
        Self::Private,
        Self::Reflexive,
        Self::Relay,
    ];

    /// The kind named `name` ([`PathKind::name`]).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// How a connection over this kind of path is described: `direct-public`,
    /// `direct-private`, `pcp-mapped`, `peer-reflexive` or `relayed`.
    #[must_use]
    pub const fn method(self) -> &'static str {
        match self {
            Self::Mapped => "pcp-mapped",
            Self::Public => "direct-public",
            Self::Private => "direct-private",
            Self::Reflexive => "peer-reflexive",
            Self::Relay => "relayed",
        }
    }

    /// The short name (`public`, ...).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Mapped => "mapped",
            Self::Public => "public",
            Self::Private => "private",
            Self::Reflexive => "reflexive",
            Self::Relay => "relay",
        }
    }
}

/// Timing of the path checks.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Gap between probes on one path until a path is selected.
    pub probe_interval: Duration,
    /// Gap between the round-trip probes on the selected path.
    pub rtt_interval: Duration,
    /// Round trips measured on the selected path.
    pub rtt_samples: usize,
    /// How long the controlled peer waits for a nomination after verifying a path.
    pub nomination_wait: Duration,
    /// How long a peer that is ready waits for the other's `done` (and keeps answering).
    pub linger: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(100),
            rtt_interval: Duration::from_millis(20),
            rtt_samples: 3,
            nomination_wait: Duration::from_millis(300),
            linger: Duration::from_millis(1500),
        }
    }
}

/// How paths may be used.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Kinds of path to use; the others are neither probed nor selected (their probes
    /// are still answered, which costs nothing and lets the peer decide for itself).
    pub allowed: Vec<PathKind>,
    /// Send nothing on a path before a probe has arrived on it.
    pub passive: bool,
}

impl Policy {
    fn allows(&self, kind: PathKind) -> bool {
        self.allowed.contains(&kind)
    }
}

/// One path as reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PathReport {
    /// Where the endpoint came from.
    pub kind: PathKind,
    /// The peer's endpoint.
    pub remote: SocketAddrV4,
    /// Probes we sent on it.
    pub probes_sent: u32,
    /// Our probes it acknowledged.
    pub acks: u32,
    /// Probes of the peer's that arrived from it.
    pub probes_received: u32,
    /// Whether an ACK came back.
    pub verified: bool,
    /// Median round trip of the acknowledged probes, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Where the peer saw our probes come from (our endpoint on this path).
    pub seen_as: Option<SocketAddrV4>,
}

/// A successful check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// The selected path.
    pub selected: PathReport,
    /// Round trip on the selected path (median of its samples).
    pub rtt: Duration,
    /// From the start (the introduction) until the selected path was verified.
    pub connect_time: Duration,
    /// Whether the peer said it finished too.
    pub peer_confirmed: bool,
    /// Every path.
    pub paths: Vec<PathReport>,
}

/// Why no path was found.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// Nothing from the peer and no ack: packets were filtered both ways (or the peer
    /// is gone).
    NeverHeard {
        /// Probes we sent.
        probes_sent: u32,
        /// Where.
        paths: Vec<(PathKind, SocketAddrV4)>,
        /// We were passive (sent nothing first).
        passive: bool,
    },
    /// The peer's probes arrived, ours were never acknowledged.
    OneWay {
        /// Where the peer's probes came from.
        heard_from: Vec<SocketAddrV4>,
        /// Probes we sent.
        probes_sent: u32,
    },
    /// A path was verified, but not selected in time (cannot normally happen).
    NotSelected,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NeverHeard { passive: true, .. } => f.write_str(
                "peer never reached us: no probe arrived, and in passive mode we send \
                 nothing first (is the port they were given open — a PCP mapping or a \
                 port forward?)",
            ),
            Self::NeverHeard {
                probes_sent, paths, ..
            } => {
                let to = paths
                    .iter()
                    .map(|(kind, addr)| format!("{addr} ({})", kind.name()))
                    .collect::<Vec<_>>()
                    .join(", ");
                write!(
                    f,
                    "peer never answered: none of our {probes_sent} probes to {} was \
                     acknowledged and none of theirs reached us — their NAT filtered our \
                     packets and ours filtered theirs (or the peer stopped)",
                    if to.is_empty() { "no path" } else { &to }
                )
            }
            Self::OneWay {
                heard_from,
                probes_sent,
            } => {
                let from = heard_from
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                write!(
                    f,
                    "one-way only: the peer's probes reached us from {from}, but none of \
                     our {probes_sent} probes was acknowledged — their NAT filtered our \
                     packets (it may filter by address and port, and map us to a port it \
                     did not announce)"
                )
            }
            Self::NotSelected => {
                f.write_str("a path was verified but the peers did not agree on one in time")
            }
        }
    }
}

/// What the checker's state is after some input.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// Still working.
    Working,
    /// Finished with a selected path.
    Done(Box<Outcome>),
}

#[derive(Clone, Debug)]
struct Path {
    kind: PathKind,
    remote: SocketAddrV4,
    active: bool,
    last_probe: Option<Instant>,
    probes_sent: u32,
    acks: u32,
    probes_received: u32,
    verified_at: Option<Instant>,
    rtts: Vec<Duration>,
    seen_as: Option<SocketAddrV4>,
}

impl Path {
    fn new(kind: PathKind, remote: SocketAddrV4, active: bool) -> Self {
        Self {
            kind,
            remote,
            active,
            last_probe: None,
            probes_sent: 0,
            acks: 0,
            probes_received: 0,
            verified_at: None,
            rtts: Vec::new(),
            seen_as: None,
        }
    }

    fn report(&self) -> PathReport {
        PathReport {
            kind: self.kind,
            remote: self.remote,
            probes_sent: self.probes_sent,
            acks: self.acks,
            probes_received: self.probes_received,
            verified: self.verified_at.is_some(),
            rtt_ms: median(&self.rtts).map(|d| d.as_secs_f64() * 1e3),
            seen_as: self.seen_as,
        }
    }
}

fn median(samples: &[Duration]) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

/// Probes in flight remembered for matching acks.
const IN_FLIGHT: usize = 256;

/// The path checker for one pair of peers.
#[derive(Debug)]
pub struct Prober {
    me: PeerId,
    peer: PeerId,
    session: Session,
    controlling: bool,
    policy: Policy,
    settings: Settings,
    paths: Vec<Path>,
    in_flight: VecDeque<(u32, usize, Instant)>,
    next_seq: u32,
    started: Instant,
    first_verified: Option<(usize, Instant)>,
    nominated: Option<usize>,
    selected: Option<(usize, Instant)>,
    ready_at: Option<Instant>,
    peer_done: bool,
    foreign: u64,
}

impl Prober {
    /// A checker that starts now with the peer's announced endpoints. The
    /// controlling side is the one whose id sorts first.
    #[must_use]
    pub fn new(
        me: PeerId,
        peer: PeerId,
        session: Session,
        candidates: &[(PathKind, SocketAddrV4)],
        policy: Policy,
        settings: Settings,
        now: Instant,
    ) -> Self {
        let controlling = me < peer;
        let mut prober = Self {
            me,
            peer,
            session,
            controlling,
            policy,
            settings,
            paths: Vec::new(),
            in_flight: VecDeque::new(),
            next_seq: 1,
            started: now,
            first_verified: None,
            nominated: None,
            selected: None,
            ready_at: None,
            peer_done: false,
            foreign: 0,
        };
        for &(kind, remote) in candidates {
            let active = !prober.policy.passive;
            prober.add_path(kind, remote, active);
        }
        prober
    }

    /// Adds a path (or activates a known one), unless its kind is not allowed; the
    /// same endpoint announced twice keeps its first kind. Returns its index.
    pub fn add_path(
        &mut self,
        kind: PathKind,
        remote: SocketAddrV4,
        active: bool,
    ) -> Option<usize> {
        if let Some(i) = self.path_index(remote) {
            self.paths[i].active |= active;
            return Some(i);
        }
        if !self.policy.allows(kind) {
            return None;
        }
        self.paths.push(Path::new(kind, remote, active));
        Some(self.paths.len() - 1)
    }

    /// The kind of path a remote endpoint is, if known.
    #[must_use]
    pub fn kind_of(&self, remote: SocketAddrV4) -> Option<PathKind> {
        self.path_index(remote).map(|i| self.paths[i].kind)
    }

    fn path_index(&self, remote: SocketAddrV4) -> Option<usize> {
        self.paths.iter().position(|p| p.remote == remote)
    }

    /// Whether we are the controlling side.
    #[must_use]
    pub fn is_controlling(&self) -> bool {
        self.controlling
    }

    /// Messages from others (wrong session or ids) ignored so far.
    #[must_use]
    pub fn foreign(&self) -> u64 {
        self.foreign
    }

    fn flags(&self, path: usize) -> Flags {
        Flags {
            verified: self.first_verified.is_some(),
            nominate: self.controlling && self.selected.is_some_and(|(s, _)| s == path),
            done: self.ready_at.is_some(),
        }
    }

    /// Probes due at `now`: `(remote, bytes)` to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Vec<(SocketAddrV4, Vec<u8>)> {
        self.update(now);
        let mut out = Vec::new();
        let selected = self.selected.map(|(s, _)| s);
        for i in 0..self.paths.len() {
            let path = &self.paths[i];
            if !path.active {
                continue;
            }
            let interval = match selected {
                Some(s) if s != i => continue,
                Some(_) if path.rtts.len() < self.settings.rtt_samples + 1 => {
                    self.settings.rtt_interval
                }
                _ => self.settings.probe_interval,
            };
            if path
                .last_probe
                .is_some_and(|last| now.saturating_duration_since(last) < interval)
            {
                continue;
            }
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
            let bytes = Repr {
                transaction: seq,
                message: Message::Probe(Probe {
                    session: self.session,
                    from: self.me.clone(),
                    to: self.peer.clone(),
                    flags: self.flags(i),
                }),
            }
            .to_bytes();
            let path = &mut self.paths[i];
            path.last_probe = Some(now);
            path.probes_sent += 1;
            if self.in_flight.len() == IN_FLIGHT {
                self.in_flight.pop_front();
            }
            self.in_flight.push_back((seq, i, now));
            out.push((path.remote, bytes));
        }
        out
    }

    /// Handles a message that arrived from `from` (over UDP, or on the TCP stream to
    /// `from`); returns the answer to send back to `from`, if any.
    pub fn handle(&mut self, now: Instant, from: SocketAddrV4, bytes: &[u8]) -> Option<Vec<u8>> {
        let Ok(repr) = Repr::decode(bytes) else {
            self.foreign += 1;
            return None;
        };
        let answer = match repr.message {
            Message::Probe(probe) => {
                if !self.is_ours(probe.session, &probe.from, &probe.to) {
                    self.foreign += 1;
                    return None;
                }
                self.on_probe(from, probe.flags);
                Some(
                    Repr {
                        transaction: repr.transaction,
                        message: Message::Ack(Ack {
                            session: self.session,
                            from: self.me.clone(),
                            to: self.peer.clone(),
                            flags: self.path_index(from).map_or(
                                Flags {
                                    verified: self.first_verified.is_some(),
                                    nominate: false,
                                    done: self.ready_at.is_some(),
                                },
                                |i| self.flags(i),
                            ),
                            observed: from,
                        }),
                    }
                    .to_bytes(),
                )
            }
            Message::Ack(ack) => {
                if !self.is_ours(ack.session, &ack.from, &ack.to) {
                    self.foreign += 1;
                    return None;
                }
                self.on_ack(now, repr.transaction, &ack);
                None
            }
            // Late answers from the rendezvous and the like: not for the checker.
            _ => None,
        };
        self.update(now);
        answer
    }

    fn is_ours(&self, session: Session, from: &PeerId, to: &PeerId) -> bool {
        session == self.session && *from == self.peer && *to == self.me
    }

    fn on_probe(&mut self, from: SocketAddrV4, flags: Flags) {
        self.peer_done |= flags.done;
        // A probe from an endpoint nobody announced: the peer's NAT mapped it to
        // another port towards us (peer reflexive). It is a path like any other.
        let Some(i) = self.add_path(PathKind::Reflexive, from, true) else {
            return;
        };
        let path = &mut self.paths[i];
        path.probes_received += 1;
        // Passive: now that the peer reached us here, answering on it is safe.
        path.active = true;
        if flags.nominate && !self.controlling {
            self.nominated = Some(i);
        }
    }

    fn on_ack(&mut self, now: Instant, seq: u32, ack: &Ack) {
        self.peer_done |= ack.flags.done;
        let Some(pos) = self.in_flight.iter().position(|&(s, _, _)| s == seq) else {
            return;
        };
        let Some((_, i, sent)) = self.in_flight.remove(pos) else {
            return;
        };
        let path = &mut self.paths[i];
        path.acks += 1;
        path.rtts.push(now.saturating_duration_since(sent));
        path.seen_as = Some(ack.observed);
        path.verified_at.get_or_insert(now);
        if self.first_verified.is_none() {
            self.first_verified = Some((i, now));
        }
        if ack.flags.nominate && !self.controlling {
            self.nominated = Some(i);
        }
    }

    /// Selection and readiness, from the state and the time.
    fn update(&mut self, now: Instant) {
        if self.selected.is_none() {
            let choice = if self.controlling {
                self.first_verified.map(|(i, _)| i)
            } else if let Some(i) = self.nominated {
                Some(i)
            } else {
                self.first_verified
                    .filter(|&(_, at)| {
                        now.saturating_duration_since(at) >= self.settings.nomination_wait
                    })
                    .map(|(i, _)| i)
            };
            if let Some(i) = choice {
                self.selected = Some((i, now));
                self.paths[i].active = true;
            }
        }
        if let (Some((i, since)), None) = (self.selected, self.ready_at) {
            let measured = self.paths[i].rtts.len() > self.settings.rtt_samples;
            if measured || now.saturating_duration_since(since) >= self.settings.linger {
                self.ready_at = Some(now);
            }
        }
    }

    /// Tells the checker the peer went away on the selected path (a TCP stream closed
    /// after the peer finished).
    pub fn peer_closed(&mut self, remote: SocketAddrV4) {
        if self
            .selected
            .is_some_and(|(i, _)| self.paths[i].remote == remote)
        {
            self.peer_done = true;
        }
    }

    /// Where the checker stands at `now`.
    pub fn status(&mut self, now: Instant) -> Status {
        self.update(now);
        let (Some((i, _)), Some(ready)) = (self.selected, self.ready_at) else {
            return Status::Working;
        };
        if !self.peer_done && now.saturating_duration_since(ready) < self.settings.linger {
            return Status::Working;
        }
        let path = &self.paths[i];
        Status::Done(Box::new(Outcome {
            selected: path.report(),
            rtt: median(&path.rtts).unwrap_or_default(),
            connect_time: path
                .verified_at
                .unwrap_or(now)
                .saturating_duration_since(self.started),
            peer_confirmed: self.peer_done,
            paths: self.paths.iter().map(Path::report).collect(),
        }))
    }

    /// A last probe on the selected path, flagged `done`, for the driver to send when
    /// it finishes: a peer that became done only because we did would otherwise leave
    /// us waiting for its `done` until the linger time runs out.
    pub fn farewell(&mut self) -> Option<(SocketAddrV4, Vec<u8>)> {
        let (i, _) = self.selected?;
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let bytes = Repr {
            transaction: seq,
            message: Message::Probe(Probe {
                session: self.session,
                from: self.me.clone(),
                to: self.peer.clone(),
                flags: Flags {
                    done: true,
                    ..self.flags(i)
                },
            }),
        }
        .to_bytes();
        Some((self.paths[i].remote, bytes))
    }

    /// Why the checker has not succeeded (for when time runs out).
    #[must_use]
    pub fn failure(&self) -> Failure {
        let probes_sent = self.paths.iter().map(|p| p.probes_sent).sum();
        let heard_from: Vec<SocketAddrV4> = self
            .paths
            .iter()
            .filter(|p| p.probes_received > 0)
            .map(|p| p.remote)
            .collect();
        if self.first_verified.is_some() {
            Failure::NotSelected
        } else if heard_from.is_empty() {
            Failure::NeverHeard {
                probes_sent,
                paths: self.paths.iter().map(|p| (p.kind, p.remote)).collect(),
                passive: self.policy.passive,
            }
        } else {
            Failure::OneWay {
                heard_from,
                probes_sent,
            }
        }
    }

    /// Every path so far.
    #[must_use]
    pub fn paths(&self) -> Vec<PathReport> {
        self.paths.iter().map(Path::report).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const SESSION: Session = *b"0123abcd";

    fn id(s: &str) -> PeerId {
        PeerId::new(s).unwrap()
    }

    fn ep(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    fn all() -> Policy {
        Policy {
            allowed: vec![
                PathKind::Mapped,
                PathKind::Public,
                PathKind::Private,
                PathKind::Reflexive,
            ],
            passive: false,
        }
    }

    /// Two checkers wired through a function that says what arrives where: `net(to)`
    /// returns the source the receiver sees, or `None` when the packet is dropped.
    struct Pair {
        a: Prober,
        b: Prober,
    }

    impl Pair {
        fn new(
            a_candidates: &[(PathKind, SocketAddrV4)],
            b_candidates: &[(PathKind, SocketAddrV4)],
            policy_b: Policy,
            now: Instant,
        ) -> Self {
            Self {
                a: Prober::new(
                    id("a"),
                    id("b"),
                    SESSION,
                    b_candidates,
                    all(),
                    Settings::default(),
                    now,
                ),
                b: Prober::new(
                    id("b"),
                    id("a"),
                    SESSION,
                    a_candidates,
                    policy_b,
                    Settings::default(),
                    now,
                ),
            }
        }

        /// Runs both for `steps` of 10 ms; `a_to_b(dst)` / `b_to_a(dst)` decide delivery.
        fn run(
            &mut self,
            start: Instant,
            steps: u32,
            a_to_b: impl Fn(SocketAddrV4) -> Option<SocketAddrV4>,
            b_to_a: impl Fn(SocketAddrV4) -> Option<SocketAddrV4>,
        ) -> (Status, Status) {
            let mut status = (Status::Working, Status::Working);
            for step in 0..steps {
                let now = start + Duration::from_millis(10 * u64::from(step));
                for (dst, bytes) in self.a.poll_transmit(now) {
                    if let Some(src) = a_to_b(dst) {
                        if let Some(reply) = self.b.handle(now, src, &bytes) {
                            if let Some(reply_src) = b_to_a(src) {
                                self.a.handle(now, reply_src, &reply);
                            }
                        }
                    }
                }
                for (dst, bytes) in self.b.poll_transmit(now) {
                    if let Some(src) = b_to_a(dst) {
                        if let Some(reply) = self.a.handle(now, src, &bytes) {
                            if let Some(reply_src) = a_to_b(src) {
                                self.b.handle(now, reply_src, &reply);
                            }
                        }
                    }
                }
                status = (self.a.status(now), self.b.status(now));
                if matches!(status, (Status::Done(_), Status::Done(_))) {
                    break;
                }
            }
            status
        }
    }

    fn done(status: &Status) -> &Outcome {
        match status {
            Status::Done(outcome) => outcome,
            Status::Working => panic!("not done"),
        }
    }

    #[test]
    fn an_inactive_relay_path_is_answered_and_taken_up_when_the_peer_uses_it() {
        let now = Instant::now();
        let (a_pub, b_pub) = (ep([192, 0, 2, 1], 4000), ep([198, 51, 100, 1], 5000));
        // The peers' relayed addresses (one relay, two allocations).
        let (ra, rb) = (ep([198, 18, 0, 1], 50_000), ep([198, 18, 0, 1], 50_001));
        let mut relay = all();
        relay.allowed.push(PathKind::Relay);
        let mut pair = Pair::new(
            &[(PathKind::Public, a_pub)],
            &[(PathKind::Public, b_pub)],
            relay.clone(),
            now,
        );
        pair.a.policy = relay;
        // Known but not probed (before the fallback time).
        assert_eq!(pair.a.add_path(PathKind::Relay, rb, false), Some(1));
        assert_eq!(pair.b.add_path(PathKind::Relay, ra, false), Some(1));
        // Only the relay carries anything; the public paths are blocked.
        let a_to_b = |dst| (dst == rb).then_some(ra);
        let b_to_a = |dst| (dst == ra).then_some(rb);
        let status = pair.run(now, 50, a_to_b, b_to_a);
        assert!(matches!(status, (Status::Working, Status::Working)));
        assert!(pair
            .a
            .paths()
            .iter()
            .all(|p| p.kind != PathKind::Relay || p.probes_sent == 0));
        // b falls back first: its probes on the relay are answered by a, which then
        // probes the relay too; the relay path is selected on both sides.
        pair.b.add_path(PathKind::Relay, ra, true);
        let later = now + Duration::from_secs(1);
        let status = pair.run(later, 300, a_to_b, b_to_a);
        let (a, b) = (done(&status.0), done(&status.1));
        assert_eq!(a.selected.kind, PathKind::Relay);
        assert_eq!(a.selected.remote, rb);
        assert_eq!(b.selected.remote, ra);
        assert_eq!(PathKind::Relay.method(), "relayed");
        assert!(a.selected.probes_sent > 0 && a.selected.probes_received > 0);
    }

    #[test]
    fn open_paths_are_verified_selected_and_agreed_on() {
        let now = Instant::now();
        let a_pub = ep([192, 0, 2, 1], 4000);
        let b_pub = ep([198, 51, 100, 1], 5000);
        let a_priv = ep([10, 1, 0, 2], 4000);
        let b_priv = ep([10, 2, 0, 2], 5000);
        let mut pair = Pair::new(
            &[(PathKind::Public, a_pub), (PathKind::Private, a_priv)],
            &[(PathKind::Public, b_pub), (PathKind::Private, b_priv)],
            all(),
            now,
        );
        // Only the public endpoints route; sources are the public endpoints.
        let status = pair.run(
            now,
            300,
            |dst| (dst == b_pub).then_some(a_pub),
            |dst| (dst == a_pub).then_some(b_pub),
        );
        let (a, b) = (done(&status.0), done(&status.1));
        assert_eq!(a.selected.kind, PathKind::Public);
        assert_eq!(a.selected.remote, b_pub);
        assert_eq!(b.selected.remote, a_pub);
        assert_eq!(a.selected.seen_as, Some(a_pub));
        assert!(a.peer_confirmed && b.peer_confirmed);
        assert!(a.selected.acks as usize > Settings::default().rtt_samples);
        let private = a
            .paths
            .iter()
            .find(|p| p.kind == PathKind::Private)
            .unwrap();
        assert!(!private.verified && private.probes_sent > 0);
    }

    #[test]
    fn the_controlled_side_follows_the_nomination() {
        let now = Instant::now();
        let a_pub = ep([192, 0, 2, 1], 4000);
        let a_priv = ep([10, 1, 0, 2], 4000);
        let b_pub = ep([192, 0, 2, 1], 5000);
        let b_priv = ep([10, 1, 0, 3], 5000);
        let mut pair = Pair::new(
            &[(PathKind::Public, a_pub), (PathKind::Private, a_priv)],
            &[(PathKind::Public, b_pub), (PathKind::Private, b_priv)],
            all(),
            now,
        );
        // Same LAN: both paths work (the public one by hairpinning).
        let status = pair.run(
            now,
            300,
            |dst| Some(if dst == b_pub { a_pub } else { a_priv }),
            |dst| Some(if dst == a_pub { b_pub } else { b_priv }),
        );
        let (a, b) = (done(&status.0), done(&status.1));
        assert!(pair.a.is_controlling());
        let kind = a.selected.kind;
        assert_eq!(b.selected.kind, kind, "b selected what a nominated");
    }

    #[test]
    fn a_port_the_peer_did_not_announce_becomes_a_reflexive_path() {
        let now = Instant::now();
        let a_pub = ep([192, 0, 2, 1], 4000);
        let b_announced = ep([203, 0, 113, 1], 5000);
        let b_real = ep([203, 0, 113, 1], 61234);
        let mut pair = Pair::new(
            &[(PathKind::Public, a_pub)],
            &[(PathKind::Public, b_announced)],
            all(),
            now,
        );
        // b's NAT gave b another port towards a and only lets a in there.
        let status = pair.run(
            now,
            300,
            |dst| (dst == b_real).then_some(a_pub),
            |dst| (dst == a_pub).then_some(b_real),
        );
        let a = done(&status.0);
        assert_eq!(a.selected.kind, PathKind::Reflexive);
        assert_eq!(a.selected.remote, b_real);
        assert_eq!(done(&status.1).selected.remote, a_pub);
    }

    #[test]
    fn filtered_both_ways_fails_with_never_heard() {
        let now = Instant::now();
        let a_pub = ep([192, 0, 2, 1], 4000);
        let b_pub = ep([198, 51, 100, 1], 5000);
        let mut pair = Pair::new(
            &[(PathKind::Public, a_pub)],
            &[(PathKind::Public, b_pub)],
            all(),
            now,
        );
        let status = pair.run(now, 100, |_| None, |_| None);
        assert_eq!(status, (Status::Working, Status::Working));
        let failure = pair.a.failure();
        assert!(matches!(failure, Failure::NeverHeard { probes_sent, .. } if probes_sent >= 9));
        assert!(
            failure.to_string().starts_with("peer never answered"),
            "{failure}"
        );
    }

    #[test]
    fn filtered_one_way_is_reported_as_such() {
        let now = Instant::now();
        let a_pub = ep([192, 0, 2, 1], 4000);
        let b_pub = ep([198, 51, 100, 1], 5000);
        let mut pair = Pair::new(
            &[(PathKind::Public, a_pub)],
            &[(PathKind::Public, b_pub)],
            all(),
            now,
        );
        // a's packets never reach b; b's reach a (but a's acks do not get back).
        let status = pair.run(now, 100, |_| None, |dst| (dst == a_pub).then_some(b_pub));
        assert_eq!(status, (Status::Working, Status::Working));
        assert!(matches!(pair.a.failure(), Failure::OneWay { .. }));
    }

    #[test]
    fn a_passive_peer_sends_nothing_until_reached() {
        let now = Instant::now();
        let a_pub = ep([192, 0, 2, 1], 4000);
        let b_mapped = ep([198, 51, 100, 1], 6000);
        let passive = Policy {
            passive: true,
            ..all()
        };
        let mut b = Prober::new(
            id("b"),
            id("a"),
            SESSION,
            &[(PathKind::Public, a_pub)],
            passive,
            Settings::default(),
            now,
        );
        assert!(b.poll_transmit(now).is_empty());
        let mut pair = Pair::new(
            &[(PathKind::Public, a_pub)],
            &[(PathKind::Mapped, b_mapped)],
            Policy {
                passive: true,
                ..all()
            },
            now,
        );
        let status = pair.run(
            now,
            300,
            |dst| (dst == b_mapped).then_some(a_pub),
            |dst| (dst == a_pub).then_some(b_mapped),
        );
        assert_eq!(done(&status.0).selected.kind, PathKind::Mapped);
        assert_eq!(done(&status.1).selected.remote, a_pub);
        assert!(matches!(
            b.failure(),
            Failure::NeverHeard { passive: true, .. }
        ));
    }

    #[test]
    fn disallowed_kinds_are_not_probed_and_strangers_are_ignored() {
        let now = Instant::now();
        let b_pub = ep([198, 51, 100, 1], 5000);
        let b_priv = ep([10, 2, 0, 2], 5000);
        let only_private = Policy {
            allowed: vec![PathKind::Private],
            passive: false,
        };
        let mut a = Prober::new(
            id("a"),
            id("b"),
            SESSION,
            &[(PathKind::Public, b_pub), (PathKind::Private, b_priv)],
            only_private,
            Settings::default(),
            now,
        );
        let sent = a.poll_transmit(now);
        assert_eq!(sent.iter().map(|(to, _)| *to).collect::<Vec<_>>(), [b_priv]);
        // A probe with another session, or from someone else, is not answered.
        let stranger = Repr {
            transaction: 1,
            message: Message::Probe(Probe {
                session: *b"otherses",
                from: id("b"),
                to: id("a"),
                flags: Flags::default(),
            }),
        }
        .to_bytes();
        assert_eq!(a.handle(now, b_pub, &stranger), None);
        assert_eq!(a.handle(now, b_pub, b"junk"), None);
        assert_eq!(a.foreign(), 2);
    }
}
