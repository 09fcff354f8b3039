//! NAT behaviour discovery (RFC 5780 §4) against any STUN server: mapping behaviour,
//! filtering behaviour, hairpinning, and the public address, each with the tests that
//! support the conclusion.
//!
//! The split follows the responder's: what the tests saw is an [`Observations`]
//! value, and [`classify`] — a pure function — turns it into a [`Report`]; which test
//! runs next is decided by pure functions of the observations too
//! ([`mapping_test2_target`], ...). The socket part ([`run`]) only sends requests,
//! retransmits, and records what came back.
//!
//! Sockets: A runs test I and the mapping tests II/III; B (fresh, so no earlier packet
//! to the alternate address has opened the NAT's filter) runs the filtering tests; H
//! sends to A's public address for the hairpinning test (RFC 5780 §4.5 on ordering).
//!
//! Retransmission (RFC 8489 §6.2.1, shortened for a command line): RTO 500 ms,
//! doubling, at most 3 transmissions — at 0, 0.5 s and 1.5 s — and the test gives up
//! when `--timeout` (default 3 s) has passed since the first one.

use std::fmt::{self, Write as _};
use std::io::{self, Read as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::responder::DEFAULT_PORT;
use super::wire::{Attribute, ChangeRequest, Class, Packet, Repr, MAGIC_COOKIE, METHOD_BINDING};
use crate::cli::StunProbeArgs;

/// RFC 8489 §6.2.1 initial retransmission timeout.
pub const INITIAL_RTO: Duration = Duration::from_millis(500);
/// Transmissions per test (RFC 8489's Rc is 7; a command line should not wait 39.5 s).
pub const MAX_TRANSMISSIONS: u32 = 3;

/// When to (re)transmit a request, counted from the first transmission: 0, RTO, 3·RTO,
/// ... (the RTO doubles), at most [`MAX_TRANSMISSIONS`], all before `timeout`.
#[must_use]
pub fn transmit_offsets(timeout: Duration) -> Vec<Duration> {
    let mut offsets = vec![Duration::ZERO];
    let (mut at, mut rto) = (Duration::ZERO, INITIAL_RTO);
    while offsets.len() < MAX_TRANSMISSIONS as usize {
        at += rto;
        rto *= 2;
        if at >= timeout {
            break;
        }
        offsets.push(at);
    }
    offsets
}

/// What a Binding transaction got back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Seen {
    /// A success response.
    Response {
        /// Where it came from (as the socket saw it).
        from: SocketAddrV4,
        /// XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an older server.
        mapped: SocketAddrV4,
        /// RESPONSE-ORIGIN, if the server sent it.
        response_origin: Option<SocketAddrV4>,
        /// OTHER-ADDRESS (or RFC 3489 CHANGED-ADDRESS), if the server sent it.
        other_address: Option<SocketAddrV4>,
        /// SOFTWARE, if the server sent it.
        software: Option<String>,
    },
    /// An error response.
    Error {
        /// Where it came from.
        from: SocketAddrV4,
        /// ERROR-CODE.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// A success response without a usable (IPv4) mapped address.
    Unusable {
        /// Where it came from.
        from: SocketAddrV4,
    },
    /// No answer.
    Timeout {
        /// Requests sent.
        transmissions: u32,
        /// How long the test waited.
        waited_ms: u64,
    },
}

impl Seen {
    fn mapped(&self) -> Option<SocketAddrV4> {
        match self {
            Self::Response { mapped, .. } => Some(*mapped),
            _ => None,
        }
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Response { from, mapped, .. } => {
                write!(f, "mapped {mapped} (answer from {from})")
            }
            Self::Error { from, code, reason } => {
                write!(f, "error {code} \"{}\" from {from}", reason.trim_end())
            }
            Self::Unusable { from } => {
                write!(f, "answer from {from} without an IPv4 mapped address")
            }
            Self::Timeout {
                transmissions,
                waited_ms,
            } => write!(
                f,
                "no answer ({transmissions} transmissions, {:.1} s)",
                Duration::from_millis(*waited_ms).as_secs_f64()
            ),
        }
    }
}

/// One Binding transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// The local socket it was sent from.
    pub local: SocketAddrV4,
    /// Where it was sent.
    pub to: SocketAddrV4,
    /// CHANGE-REQUEST "change IP".
    pub change_ip: bool,
    /// CHANGE-REQUEST "change port".
    pub change_port: bool,
    /// The outcome.
    pub seen: Seen,
}

impl Exchange {
    fn describe(&self, label: &str) -> String {
        let change = match (self.change_ip, self.change_port) {
            (false, false) => "",
            (true, false) => " with CHANGE-REQUEST change-IP",
            (false, true) => " with CHANGE-REQUEST change-port",
            (true, true) => " with CHANGE-REQUEST change-IP+port",
        };
        format!(
            "{label}: {} → {}{change}: {}",
            self.local, self.to, self.seen
        )
    }
}

/// The hairpinning test (RFC 5780 §4.7): H sends to A's public address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HairpinExchange {
    /// H's local address.
    pub sender: SocketAddrV4,
    /// H's own public address, if its test I succeeded.
    pub sender_mapped: Option<SocketAddrV4>,
    /// A's public address, where H sent.
    pub target: SocketAddrV4,
    /// The source address A saw, if the request arrived.
    pub arrived_from: Option<SocketAddrV4>,
    /// Requests sent.
    pub transmissions: u32,
}

/// Everything the tests saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Observations {
    /// The STUN server's primary address.
    pub server: SocketAddrV4,
    /// Test I on socket A.
    pub test1: Exchange,
    /// Mapping test II: A → OTHER-ADDRESS's IP, primary port.
    pub mapping2: Option<Exchange>,
    /// Mapping test III: A → OTHER-ADDRESS.
    pub mapping3: Option<Exchange>,
    /// Test I on socket B.
    pub filtering1: Option<Exchange>,
    /// Filtering test II: B → primary, change IP and port.
    pub filtering2: Option<Exchange>,
    /// Filtering test III: B → primary, change port.
    pub filtering3: Option<Exchange>,
    /// Hairpinning: H → A's public address.
    pub hairpin: Option<HairpinExchange>,
}

/// RFC 4787 mapping / filtering behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Depends on nothing about the remote endpoint.
    EndpointIndependent,
    /// Depends on the remote IP.
    AddressDependent,
    /// Depends on the remote IP and port.
    AddressAndPortDependent,
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EndpointIndependent => "endpoint-independent",
            Self::AddressDependent => "address-dependent",
            Self::AddressAndPortDependent => "address-and-port-dependent",
        })
    }
}

/// Whether there is a NAT between the client and the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nat {
    /// The mapped address is the local address.
    None,
    /// The mapped address differs from the local address.
    Present,
}

/// Whether the NAT hairpins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hairpinning {
    /// A packet to the own public address came back in.
    Supported,
    /// It did not.
    NotSupported,
}

/// A conclusion (`None`: undetermined) and what it rests on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding<T> {
    /// The conclusion, if one could be reached.
    pub result: Option<T>,
    /// The tests and what they showed, or why no conclusion was possible.
    pub evidence: Vec<String>,
}

impl<T> Finding<T> {
    fn new(result: Option<T>, evidence: Vec<String>) -> Self {
        Self { result, evidence }
    }
}

/// What `natgw stun probe` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The STUN server.
    pub server: SocketAddrV4,
    /// Its SOFTWARE.
    pub server_software: Option<String>,
    /// The local address of socket A.
    pub local: SocketAddrV4,
    /// Socket A's public (mapped) address.
    pub public_address: Option<SocketAddrV4>,
    /// NAT presence.
    pub nat: Finding<Nat>,
    /// Mapping behaviour.
    pub mapping: Finding<Behaviour>,
    /// Filtering behaviour.
    pub filtering: Finding<Behaviour>,
    /// Hairpinning.
    pub hairpinning: Finding<Hairpinning>,
    /// The raw observations.
    pub observations: Observations,
}

/// OTHER-ADDRESS from test I if RFC 5780 tests can use it, or why not.
fn usable_other(obs: &Observations) -> Result<SocketAddrV4, String> {
    match &obs.test1.seen {
        Seen::Response {
            other_address: Some(other),
            ..
        } => {
            if other.ip() == obs.server.ip() || other.port() == obs.server.port() {
                Err(format!(
                    "the server's OTHER-ADDRESS {other} shares its IP or port with {}, so it \
                     cannot show whether behaviour depends on the remote address and port",
                    obs.server
                ))
            } else {
                Ok(*other)
            }
        }
        Seen::Response { .. } => Err(
            "the server sent no OTHER-ADDRESS: it has no second address to answer from \
             (CHANGE-REQUEST) or to be contacted on, so RFC 5780 tests II and III cannot run"
                .to_owned(),
        ),
        _ => Err("test I got no usable answer".to_owned()),
    }
}

fn nat_present(obs: &Observations) -> Option<bool> {
    obs.test1.seen.mapped().map(|m| m != obs.test1.local)
}

/// Mapping test II's destination: OTHER-ADDRESS's IP with the primary port; only when
/// test I showed a NAT (without one, mapping is endpoint-independent already).
#[must_use]
pub fn mapping_test2_target(obs: &Observations) -> Option<SocketAddrV4> {
    if nat_present(obs) != Some(true) {
        return None;
    }
    let other = usable_other(obs).ok()?;
    Some(SocketAddrV4::new(*other.ip(), obs.server.port()))
}

/// Mapping test III's destination (OTHER-ADDRESS), when test II's mapping differed
/// from test I's.
#[must_use]
pub fn mapping_test3_target(obs: &Observations) -> Option<SocketAddrV4> {
    let mapped1 = obs.test1.seen.mapped()?;
    let mapped2 = obs.mapping2.as_ref()?.seen.mapped()?;
    (mapped2 != mapped1)
        .then(|| usable_other(obs).ok())
        .flatten()
}

/// Whether the filtering tests can run (the server can answer from elsewhere).
#[must_use]
pub fn filtering_tests_possible(obs: &Observations) -> bool {
    usable_other(obs).is_ok()
}

/// Whether filtering test III is needed: test II (change IP and port) got no answer.
#[must_use]
pub fn needs_filtering_test3(obs: &Observations) -> bool {
    matches!(
        obs.filtering2.as_ref().map(|e| &e.seen),
        Some(Seen::Timeout { .. })
    )
}

/// Where the hairpinning test sends: A's public address.
#[must_use]
pub fn hairpin_target(obs: &Observations) -> Option<SocketAddrV4> {
    obs.test1.seen.mapped()
}

/// Turns observations into conclusions (RFC 5780 §4.3, §4.4, §4.7).
#[must_use]
pub fn classify(obs: &Observations) -> Report {
    let test1 = obs.test1.describe("test I");
    let (server_software, public_address) = match &obs.test1.seen {
        Seen::Response {
            software, mapped, ..
        } => (software.clone(), Some(*mapped)),
        _ => (None, None),
    };
    let nat = match nat_present(obs) {
        Some(false) => Finding::new(
            Some(Nat::None),
            vec![format!("{test1}, the local address itself")],
        ),
        Some(true) => Finding::new(
            Some(Nat::Present),
            vec![format!(
                "{test1}, not the local address {}",
                obs.test1.local
            )],
        ),
        None => Finding::new(None, vec![test1.clone()]),
    };
    Report {
        server: obs.server,
        server_software,
        local: obs.test1.local,
        public_address,
        nat,
        mapping: classify_mapping(obs, &test1),
        filtering: classify_filtering(obs),
        hairpinning: classify_hairpinning(obs),
        observations: obs.clone(),
    }
}

fn classify_mapping(obs: &Observations, test1: &str) -> Finding<Behaviour> {
    use Behaviour::{AddressAndPortDependent, AddressDependent, EndpointIndependent};
    let Some(mapped1) = obs.test1.seen.mapped() else {
        return Finding::new(None, vec![test1.to_owned()]);
    };
    let mut evidence = vec![test1.to_owned()];
    if mapped1 == obs.test1.local {
        evidence.push(
            "the mapped address is the local address: no NAT, so the mapping is \
             endpoint-independent (RFC 5780 §4.3)"
                .to_owned(),
        );
        return Finding::new(Some(EndpointIndependent), evidence);
    }
    if let Err(why) = usable_other(obs) {
        evidence.push(format!("{why}; only a NAT's presence is known"));
        return Finding::new(None, evidence);
    }
    let Some(test2) = &obs.mapping2 else {
        evidence.push("test II did not run".to_owned());
        return Finding::new(None, evidence);
    };
    evidence.push(test2.describe("test II (alternate IP, primary port)"));
    let Some(mapped2) = test2.seen.mapped() else {
        evidence.push("no mapping from test II, so no comparison".to_owned());
        return Finding::new(None, evidence);
    };
    if mapped2 == mapped1 {
        evidence.push(format!(
            "test II mapped to {mapped2}, the same as test I although the destination IP \
             differs → endpoint-independent"
        ));
        return Finding::new(Some(EndpointIndependent), evidence);
    }
    let Some(test3) = &obs.mapping3 else {
        evidence
            .push("test II's mapping differs from test I's but test III did not run".to_owned());
        return Finding::new(None, evidence);
    };
    evidence.push(test3.describe("test III (alternate IP, alternate port)"));
    let Some(mapped3) = test3.seen.mapped() else {
        evidence.push("no mapping from test III, so no comparison".to_owned());
        return Finding::new(None, evidence);
    };
    if mapped3 == mapped2 {
        evidence.push(format!(
            "a new destination IP got a new mapping ({mapped1} → {mapped2}), a new port on \
             the same IP kept it ({mapped3}) → address-dependent"
        ));
        Finding::new(Some(AddressDependent), evidence)
    } else {
        evidence.push(format!(
            "a new destination port on the same IP got a new mapping ({mapped2} → \
             {mapped3}) → address-and-port-dependent"
        ));
        Finding::new(Some(AddressAndPortDependent), evidence)
    }
}

fn classify_filtering(obs: &Observations) -> Finding<Behaviour> {
    use Behaviour::{AddressAndPortDependent, AddressDependent, EndpointIndependent};
    let other = match usable_other(obs) {
        Ok(other) => other,
        Err(why) => return Finding::new(None, vec![why]),
    };
    let mut evidence = Vec::new();
    if nat_present(obs) == Some(false) {
        evidence
            .push("no NAT: this is the filtering of whatever firewall is on the path".to_owned());
    }
    let Some(test1) = &obs.filtering1 else {
        evidence.push("filtering test I did not run".to_owned());
        return Finding::new(None, evidence);
    };
    evidence.push(test1.describe("test I (fresh socket)"));
    if test1.seen.mapped().is_none() {
        evidence.push("the fresh socket got no answer, so silence later proves nothing".to_owned());
        return Finding::new(None, evidence);
    }
    let Some(test2) = &obs.filtering2 else {
        evidence.push("filtering test II did not run".to_owned());
        return Finding::new(None, evidence);
    };
    evidence.push(test2.describe("test II"));
    match &test2.seen {
        Seen::Response { from, .. } if *from == other => {
            evidence.push(format!(
                "an answer from {from}, an IP and port this socket never sent to, got in → \
                 endpoint-independent"
            ));
            return Finding::new(Some(EndpointIndependent), evidence);
        }
        Seen::Response { from, .. } => {
            evidence.push(format!(
                "the server answered from {from}, not from its OTHER-ADDRESS {other}: it does \
                 not honour CHANGE-REQUEST"
            ));
            return Finding::new(None, evidence);
        }
        Seen::Timeout { .. } => {}
        Seen::Error { .. } | Seen::Unusable { .. } => {
            evidence.push("the server refused CHANGE-REQUEST".to_owned());
            return Finding::new(None, evidence);
        }
    }
    let Some(test3) = &obs.filtering3 else {
        evidence.push("filtering test III did not run".to_owned());
        return Finding::new(None, evidence);
    };
    evidence.push(test3.describe("test III"));
    let expected = SocketAddrV4::new(*obs.server.ip(), other.port());
    match &test3.seen {
        Seen::Response { from, .. } if *from == expected => {
            evidence.push(format!(
                "nothing came in from another IP, but an answer from {from} (an IP sent to, \
                 a port not) did → address-dependent"
            ));
            Finding::new(Some(AddressDependent), evidence)
        }
        Seen::Response { from, .. } => {
            evidence.push(format!(
                "the server answered from {from}, not {expected}: it does not honour \
                 CHANGE-REQUEST"
            ));
            Finding::new(None, evidence)
        }
        Seen::Timeout { .. } => {
            evidence.push(
                "nothing came in from another IP or another port of the same IP → \
                 address-and-port-dependent"
                    .to_owned(),
            );
            Finding::new(Some(AddressAndPortDependent), evidence)
        }
        Seen::Error { .. } | Seen::Unusable { .. } => {
            evidence.push("the server refused CHANGE-REQUEST".to_owned());
            Finding::new(None, evidence)
        }
    }
}

fn classify_hairpinning(obs: &Observations) -> Finding<Hairpinning> {
    let Some(h) = &obs.hairpin else {
        let why = if obs.test1.seen.mapped().is_none() {
            "no public address from test I to send to"
        } else {
            "the hairpinning test did not run"
        };
        return Finding::new(None, vec![why.to_owned()]);
    };
    let mut evidence = vec![format!(
        "second socket {} sent {} request(s) to the first socket's public address {}",
        h.sender, h.transmissions, h.target
    )];
    if nat_present(obs) == Some(false) {
        evidence.push("no NAT: the public address is the local one, so this is trivial".to_owned());
    }
    match h.arrived_from {
        Some(from) => {
            let nat = nat_present(obs) == Some(true);
            let source = match h.sender_mapped {
                Some(m) if m == from && nat => {
                    format!("from {from}, the sender's public address (as RFC 4787 REQ-9 asks)")
                }
                _ if from == h.sender && nat => format!(
                    "from {from}, the sender's local address (RFC 4787 REQ-9 asks for its \
                     public one)"
                ),
                _ => format!("from {from}"),
            };
            evidence.push(format!("it arrived {source} → supported"));
            Finding::new(Some(Hairpinning::Supported), evidence)
        }
        None => {
            evidence.push("it never arrived → not supported".to_owned());
            Finding::new(Some(Hairpinning::NotSupported), evidence)
        }
    }
}

/// The report as text.
#[must_use]
pub fn render(report: &Report) -> String {
    fn section<T: fmt::Display>(out: &mut String, name: &str, f: &Finding<T>) {
        let result = f
            .result
            .as_ref()
            .map_or_else(|| "undetermined".to_owned(), ToString::to_string);
        let _ = writeln!(out, "{name:<15} {result}");
        for e in &f.evidence {
            let _ = writeln!(out, "  - {e}");
        }
    }
    let mut out = String::new();
    let software = report
        .server_software
        .as_deref()
        .map_or_else(String::new, |s| format!(" ({s})"));
    let _ = writeln!(out, "{:<15} {}{software}", "server", report.server);
    let _ = writeln!(out, "{:<15} {}", "local address", report.local);
    let public = report
        .public_address
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let _ = writeln!(out, "{:<15} {public}", "public address");
    section(&mut out, "NAT", &report.nat);
    section(&mut out, "mapping", &report.mapping);
    section(&mut out, "filtering", &report.filtering);
    section(&mut out, "hairpinning", &report.hairpinning);
    out
}

impl fmt::Display for Nat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Present => "present",
        })
    }
}

impl fmt::Display for Hairpinning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Supported => "supported",
            Self::NotSupported => "not supported",
        })
    }
}

/// Reads a Binding response to `transaction_id`; `None` for anything else (other
/// transactions, requests, garbage).
#[must_use]
pub fn interpret(datagram: &[u8], from: SocketAddrV4, transaction_id: &[u8; 12]) -> Option<Seen> {
    let packet = Packet::new_checked(datagram).ok()?;
    let reply = Repr::parse(&packet).ok()?;
    if reply.cookie != MAGIC_COOKIE
        || reply.transaction_id != *transaction_id
        || reply.method != METHOD_BINDING
    {
        return None;
    }
    let v4 = |a: &SocketAddr| match a {
        SocketAddr::V4(a) => Some(*a),
        SocketAddr::V6(_) => None,
    };
    match reply.class {
        Class::Success => {
            let xor = reply.find(|a| match a {
                Attribute::XorMappedAddress(a) => v4(a),
                _ => None,
            });
            let plain = reply.find(|a| match a {
                Attribute::MappedAddress(a) => v4(a),
                _ => None,
            });
            let Some(mapped) = xor.or(plain) else {
                return Some(Seen::Unusable { from });
            };
            Some(Seen::Response {
                from,
                mapped,
                response_origin: reply.find(|a| match a {
                    Attribute::ResponseOrigin(a) => v4(a),
                    _ => None,
                }),
                other_address: reply.find(|a| match a {
                    Attribute::OtherAddress(a) | Attribute::ChangedAddress(a) => v4(a),
                    _ => None,
                }),
                software: reply.find(|a| match a {
                    Attribute::Software(s) => Some((*s).to_owned()),
                    _ => None,
                }),
            })
        }
        Class::Error => {
            let (code, reason) = reply
                .find(|a| match a {
                    Attribute::ErrorCode(e) => Some((e.code, e.reason.to_owned())),
                    _ => None,
                })
                .unwrap_or((0, "no ERROR-CODE".to_owned()));
            Some(Seen::Error { from, code, reason })
        }
        Class::Request | Class::Indication => None,
    }
}

/// A Binding request with FINGERPRINT and, if any flag is set, CHANGE-REQUEST.
#[must_use]
pub fn binding_request(transaction_id: [u8; 12], change: ChangeRequest) -> Vec<u8> {
    let mut attributes = Vec::new();
    if change.any() {
        attributes.push(Attribute::ChangeRequest(change));
    }
    attributes.push(Attribute::Fingerprint);
    Repr {
        class: Class::Request,
        method: METHOD_BINDING,
        cookie: MAGIC_COOKIE,
        transaction_id,
        attributes,
    }
    .to_bytes()
}

/// Probe settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The STUN server.
    pub server: SocketAddrV4,
    /// Local address of socket A (port 0: any); unspecified IP: the route's source.
    pub local: Option<SocketAddrV4>,
    /// How long each test waits.
    pub timeout: Duration,
}

/// Runs the tests and classifies what they saw.
///
/// # Errors
/// Socket errors (binding, sending); a silent server is a finding, not an error.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let server = options.server;
    let timeout = options.timeout;
    let local_ip = match options.local {
        Some(l) if !l.ip().is_unspecified() => *l.ip(),
        _ => route_source(server).await?,
    };
    let a = bind(SocketAddrV4::new(
        local_ip,
        options.local.map_or(0, |l| l.port()),
    ))
    .await?;
    let none = ChangeRequest::default();
    let test1 = transact(&a, server, none, timeout).await?;
    let mut obs = Observations {
        server,
        test1,
        mapping2: None,
        mapping3: None,
        filtering1: None,
        filtering2: None,
        filtering3: None,
        hairpin: None,
    };
    if let Some(to) = mapping_test2_target(&obs) {
        obs.mapping2 = Some(transact(&a, to, none, timeout).await?);
    }
    if let Some(to) = mapping_test3_target(&obs) {
        obs.mapping3 = Some(transact(&a, to, none, timeout).await?);
    }
    if filtering_tests_possible(&obs) {
        let b = bind(SocketAddrV4::new(local_ip, 0)).await?;
        let test1 = transact(&b, server, none, timeout).await?;
        let answered = test1.seen.mapped().is_some();
        obs.filtering1 = Some(test1);
        if answered {
            let both = ChangeRequest {
                change_ip: true,
                change_port: true,
            };
            obs.filtering2 = Some(transact(&b, server, both, timeout).await?);
            if needs_filtering_test3(&obs) {
                let port = ChangeRequest {
                    change_ip: false,
                    change_port: true,
                };
                obs.filtering3 = Some(transact(&b, server, port, timeout).await?);
            }
        }
    }
    if let Some(target) = hairpin_target(&obs) {
        let h = bind(SocketAddrV4::new(local_ip, 0)).await?;
        let sender_mapped = transact(&h, server, none, timeout).await?.seen.mapped();
        obs.hairpin = Some(hairpin(&a, &h, target, sender_mapped, timeout).await?);
    }
    Ok(classify(&obs))
}

async fn bind(addr: SocketAddrV4) -> anyhow::Result<UdpSocket> {
    UdpSocket::bind(addr)
        .await
        .with_context(|| format!("binding a probe socket on UDP {addr}"))
}

/// The source address the kernel picks for the server (no packet is sent).
async fn route_source(server: SocketAddrV4) -> anyhow::Result<Ipv4Addr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .context("binding a socket to find the local address")?;
    s.connect(server)
        .await
        .with_context(|| format!("finding a route to {server}"))?;
    match s.local_addr().context("reading the local address")? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(a) => bail!("route to {server} has the IPv6 source {a}"),
    }
}

/// A random 96-bit transaction ID (RFC 8489 §6: uniformly random).
///
/// # Errors
/// When /dev/urandom cannot be read.
pub fn random_transaction_id() -> io::Result<[u8; 12]> {
    let mut id = [0; 12];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut id)?;
    Ok(id)
}

fn local_v4(socket: &UdpSocket) -> io::Result<SocketAddrV4> {
    match socket.local_addr()? {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(io::Error::other("probe socket is not IPv4")),
    }
}

/// One Binding transaction with retransmissions ([`transmit_offsets`]) from `socket`
/// to `to`; other datagrams that arrive meanwhile are ignored. Also how `natgw punch`
/// learns its public endpoint from the socket it punches from.
///
/// # Errors
/// Socket errors; a silent server is a [`Seen::Timeout`], not an error.
pub async fn transact(
    socket: &UdpSocket,
    to: SocketAddrV4,
    change: ChangeRequest,
    timeout: Duration,
) -> anyhow::Result<Exchange> {
    let local = local_v4(socket).context("reading a probe socket's address")?;
    let transaction_id = random_transaction_id().context("reading /dev/urandom")?;
    let request = binding_request(transaction_id, change);
    let offsets = transmit_offsets(timeout);
    let start = Instant::now();
    let mut buf = vec![0u8; 65_536];
    let mut transmissions = 0;
    let exchange = |seen| Exchange {
        local,
        to,
        change_ip: change.change_ip,
        change_port: change.change_port,
        seen,
    };
    for (i, _) in offsets.iter().enumerate() {
        socket
            .send_to(&request, to)
            .await
            .with_context(|| format!("sending a STUN request from {local} to {to}"))?;
        transmissions += 1;
        let deadline = start + offsets.get(i + 1).copied().unwrap_or(timeout);
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            let (len, from) = match received {
                Ok(r) => r,
                // ICMP errors from earlier sends; keep waiting.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e).with_context(|| format!("receiving on {local}")),
            };
            let SocketAddr::V4(from) = from else { continue };
            if let Some(seen) = interpret(&buf[..len], from, &transaction_id) {
                return Ok(exchange(seen));
            }
        }
    }
    Ok(exchange(Seen::Timeout {
        transmissions,
        waited_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

/// H sends a Binding request to `target` (A's public address) until A receives it.
async fn hairpin(
    a: &UdpSocket,
    h: &UdpSocket,
    target: SocketAddrV4,
    sender_mapped: Option<SocketAddrV4>,
    timeout: Duration,
) -> anyhow::Result<HairpinExchange> {
    let sender = local_v4(h).context("reading a probe socket's address")?;
    let transaction_id = random_transaction_id().context("reading /dev/urandom")?;
    let request = binding_request(transaction_id, ChangeRequest::default());
    let offsets = transmit_offsets(timeout);
    let start = Instant::now();
    let mut buf = vec![0u8; 65_536];
    let mut transmissions = 0;
    for (i, _) in offsets.iter().enumerate() {
        h.send_to(&request, target)
            .await
            .with_context(|| format!("sending the hairpin request from {sender} to {target}"))?;
        transmissions += 1;
        let deadline = start + offsets.get(i + 1).copied().unwrap_or(timeout);
        while let Ok(received) = tokio::time::timeout_at(deadline, a.recv_from(&mut buf)).await {
            let Ok((len, SocketAddr::V4(from))) = received else {
                continue;
            };
            let is_ours = Packet::new_checked(&buf[..len])
                .ok()
                .and_then(|p| Repr::parse(&p).ok())
                .is_some_and(|r| r.class == Class::Request && r.transaction_id == transaction_id);
            if is_ours {
                return Ok(HairpinExchange {
                    sender,
                    sender_mapped,
                    target,
                    arrived_from: Some(from),
                    transmissions,
                });
            }
        }
    }
    Ok(HairpinExchange {
        sender,
        sender_mapped,
        target,
        arrived_from: None,
        transmissions,
    })
}

/// Parses `HOST`, `HOST:PORT`, `IP` or `IP:PORT` into a host and a port (default
/// 3478).
///
/// # Errors
/// A port that is not a number.
pub fn split_server(s: &str) -> anyhow::Result<(String, u16)> {
    if let Ok(a) = s.parse::<SocketAddrV4>() {
        return Ok((a.ip().to_string(), a.port()));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port
                .parse()
                .map_err(|_| anyhow!("the port in --server {s} is not a number from 0 to 65535"))?;
            Ok((host.to_owned(), port))
        }
        Some(_) => {
            bail!("--server {s}: IPv6 is not supported; give an IPv4 address or a host name")
        }
        None => Ok((s.to_owned(), DEFAULT_PORT)),
    }
}

/// Resolves `--server` to its first IPv4 address.
async fn resolve(server: &str) -> anyhow::Result<SocketAddrV4> {
    let (host, port) = split_server(server)?;
    let addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolving the STUN server {host}"))?;
    let first = addrs
        .filter_map(|a| match a {
            SocketAddr::V4(a) => Some(a),
            SocketAddr::V6(_) => None,
        })
        .next();
    first.ok_or_else(|| anyhow!("the STUN server {host} has no IPv4 address"))
}

/// `natgw stun probe`.
///
/// # Errors
/// Bad flags, an unresolvable server, socket errors, or no answer to test I (after
/// printing the report).
pub async fn command(args: &StunProbeArgs) -> anyhow::Result<()> {
    let options = Options {
        server: resolve(&args.server).await?,
        local: args.local,
        timeout: args.timeout,
    };
    let report = run(&options).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("formatting the report as JSON")?
        );
    } else {
        print!("{}", render(&report));
    }
    if report.public_address.is_none() {
        bail!(
            "test I against the STUN server {} failed: {}",
            report.server,
            report.observations.test1.seen
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3478);
    const OTHER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 3479);
    const LOCAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5000);
    const LOCAL_B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5001);
    const PUBLIC: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 6000);
    const PUBLIC2: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 6001);
    const PUBLIC3: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 6002);

    fn response(from: SocketAddrV4, mapped: SocketAddrV4, other: Option<SocketAddrV4>) -> Seen {
        Seen::Response {
            from,
            mapped,
            response_origin: Some(from),
            other_address: other,
            software: None,
        }
    }

    fn timeout() -> Seen {
        Seen::Timeout {
            transmissions: 3,
            waited_ms: 3000,
        }
    }

    fn exchange(
        local: SocketAddrV4,
        to: SocketAddrV4,
        change: (bool, bool),
        seen: Seen,
    ) -> Exchange {
        Exchange {
            local,
            to,
            change_ip: change.0,
            change_port: change.1,
            seen,
        }
    }

    /// Test I through a NAT (mapped PUBLIC) against an RFC 5780 server.
    fn behind_nat() -> Observations {
        Observations {
            server: SERVER,
            test1: exchange(
                LOCAL,
                SERVER,
                (false, false),
                response(SERVER, PUBLIC, Some(OTHER)),
            ),
            mapping2: None,
            mapping3: None,
            filtering1: None,
            filtering2: None,
            filtering3: None,
            hairpin: None,
        }
    }

    fn alt_ip_primary_port() -> SocketAddrV4 {
        SocketAddrV4::new(*OTHER.ip(), SERVER.port())
    }

    fn with_mapping(
        mut obs: Observations,
        m2: SocketAddrV4,
        m3: Option<SocketAddrV4>,
    ) -> Observations {
        let to2 = mapping_test2_target(&obs).unwrap();
        assert_eq!(to2, alt_ip_primary_port());
        obs.mapping2 = Some(exchange(
            LOCAL,
            to2,
            (false, false),
            response(to2, m2, Some(OTHER)),
        ));
        match (mapping_test3_target(&obs), m3) {
            (Some(to3), Some(m3)) => {
                assert_eq!(to3, OTHER);
                obs.mapping3 = Some(exchange(
                    LOCAL,
                    to3,
                    (false, false),
                    response(to3, m3, Some(SERVER)),
                ));
            }
            (None, None) => {}
            (t, m) => panic!("test III target {t:?} for mapping {m:?}"),
        }
        obs
    }

    fn with_filtering(
        mut obs: Observations,
        test2: Option<Seen>,
        test3: Option<Seen>,
    ) -> Observations {
        assert!(filtering_tests_possible(&obs));
        obs.filtering1 = Some(exchange(
            LOCAL_B,
            SERVER,
            (false, false),
            response(SERVER, PUBLIC2, Some(OTHER)),
        ));
        let test2 = test2.unwrap_or_else(timeout);
        obs.filtering2 = Some(exchange(LOCAL_B, SERVER, (true, true), test2));
        assert_eq!(needs_filtering_test3(&obs), test3.is_some());
        if let Some(test3) = test3 {
            obs.filtering3 = Some(exchange(LOCAL_B, SERVER, (false, true), test3));
        }
        obs
    }

    #[test]
    fn transmissions_follow_rfc8489_rto_doubling() {
        // rfc8489 §6.2.1: RTO 500 ms, doubled each time; here at most 3 transmissions.
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            transmit_offsets(Duration::from_secs(3)),
            ms(&[0, 500, 1500])
        );
        assert_eq!(transmit_offsets(Duration::from_secs(1)), ms(&[0, 500]));
        assert_eq!(transmit_offsets(Duration::from_millis(200)), ms(&[0]));
        assert_eq!(
            transmit_offsets(Duration::from_secs(60)),
            ms(&[0, 500, 1500])
        );
    }

    #[test]
    fn rfc5780_no_nat_means_endpoint_independent_mapping() {
        // rfc5780 §4.3: mapped address = local address → not NATed, mapping EIM.
        let obs = Observations {
            server: SERVER,
            test1: exchange(LOCAL, SERVER, (false, false), response(SERVER, LOCAL, None)),
            ..behind_nat()
        };
        assert_eq!(mapping_test2_target(&obs), None);
        let report = classify(&obs);
        assert_eq!(report.nat.result, Some(Nat::None));
        assert_eq!(report.mapping.result, Some(Behaviour::EndpointIndependent));
        assert_eq!(report.public_address, Some(LOCAL));
        // Without OTHER-ADDRESS filtering cannot be tested, and the report says why.
        assert_eq!(report.filtering.result, None);
        assert!(
            report.filtering.evidence[0].contains("no OTHER-ADDRESS"),
            "{:?}",
            report.filtering
        );
    }

    #[test]
    fn rfc5780_same_mapping_to_other_ip_is_endpoint_independent() {
        // rfc5780 §4.3 test II: same mapping as test I → EIM; test III not needed.
        let obs = with_mapping(behind_nat(), PUBLIC, None);
        let report = classify(&obs);
        assert_eq!(report.nat.result, Some(Nat::Present));
        assert_eq!(report.mapping.result, Some(Behaviour::EndpointIndependent));
        assert_eq!(report.mapping.evidence.len(), 3);
    }

    #[test]
    fn rfc5780_new_mapping_per_ip_is_address_dependent() {
        // rfc5780 §4.3 test III: same as test II → ADM.
        let obs = with_mapping(behind_nat(), PUBLIC2, Some(PUBLIC2));
        assert_eq!(
            classify(&obs).mapping.result,
            Some(Behaviour::AddressDependent)
        );
    }

    #[test]
    fn rfc5780_new_mapping_per_port_is_address_and_port_dependent() {
        // rfc5780 §4.3 test III: differs from test II → APDM.
        let obs = with_mapping(behind_nat(), PUBLIC2, Some(PUBLIC3));
        assert_eq!(
            classify(&obs).mapping.result,
            Some(Behaviour::AddressAndPortDependent)
        );
    }

    #[test]
    fn rfc5780_answer_from_other_ip_and_port_is_endpoint_independent_filtering() {
        // rfc5780 §4.4 test II answered → EIF.
        let obs = with_filtering(
            behind_nat(),
            Some(response(OTHER, PUBLIC2, Some(SERVER))),
            None,
        );
        assert_eq!(
            classify(&obs).filtering.result,
            Some(Behaviour::EndpointIndependent)
        );
    }

    #[test]
    fn rfc5780_answer_only_from_other_port_is_address_dependent_filtering() {
        // rfc5780 §4.4 test II silent, test III answered → ADF.
        let from = SocketAddrV4::new(*SERVER.ip(), OTHER.port());
        let obs = with_filtering(
            behind_nat(),
            None,
            Some(response(from, PUBLIC2, Some(OTHER))),
        );
        assert_eq!(
            classify(&obs).filtering.result,
            Some(Behaviour::AddressDependent)
        );
    }

    #[test]
    fn rfc5780_no_answer_from_elsewhere_is_address_and_port_dependent_filtering() {
        // rfc5780 §4.4 tests II and III silent → APDF.
        let obs = with_filtering(behind_nat(), None, Some(timeout()));
        let report = classify(&obs);
        assert_eq!(
            report.filtering.result,
            Some(Behaviour::AddressAndPortDependent)
        );
        assert_eq!(report.filtering.evidence.len(), 4);
    }

    #[test]
    fn server_that_refuses_change_request_leaves_filtering_undetermined() {
        let refused = Seen::Error {
            from: SERVER,
            code: 420,
            reason: "Unknown Attribute".to_owned(),
        };
        let obs = with_filtering(behind_nat(), Some(refused), None);
        assert_eq!(classify(&obs).filtering.result, None);
        // Answering from the wrong place is not evidence either.
        let obs = with_filtering(
            behind_nat(),
            Some(response(SERVER, PUBLIC2, Some(OTHER))),
            None,
        );
        let report = classify(&obs);
        assert_eq!(report.filtering.result, None);
        assert!(report
            .filtering
            .evidence
            .last()
            .unwrap()
            .contains("does not honour"));
    }

    #[test]
    fn without_other_address_only_nat_presence_is_known() {
        let mut obs = behind_nat();
        obs.test1.seen = response(SERVER, PUBLIC, None);
        assert_eq!(mapping_test2_target(&obs), None);
        assert!(!filtering_tests_possible(&obs));
        let report = classify(&obs);
        assert_eq!(report.nat.result, Some(Nat::Present));
        assert_eq!(report.mapping.result, None);
        assert!(report.mapping.evidence[1].contains("no OTHER-ADDRESS"));
        assert_eq!(report.filtering.result, None);
    }

    #[test]
    fn other_address_on_the_same_ip_is_not_usable() {
        let mut obs = behind_nat();
        let same_ip = SocketAddrV4::new(*SERVER.ip(), 3479);
        obs.test1.seen = response(SERVER, PUBLIC, Some(same_ip));
        assert_eq!(mapping_test2_target(&obs), None);
        assert_eq!(classify(&obs).mapping.result, None);
    }

    #[test]
    fn silent_server_leaves_everything_undetermined() {
        let mut obs = behind_nat();
        obs.test1.seen = timeout();
        assert_eq!(hairpin_target(&obs), None);
        let report = classify(&obs);
        assert_eq!(report.public_address, None);
        assert_eq!(report.nat.result, None);
        assert_eq!(report.mapping.result, None);
        assert_eq!(report.filtering.result, None);
        assert_eq!(report.hairpinning.result, None);
        assert!(render(&report).contains("no answer (3 transmissions, 3.0 s)"));
    }

    #[test]
    fn rfc5780_hairpinning_seen_or_not() {
        // rfc5780 §4.7; rfc4787 REQ-9: the hairpinned packet should carry the sender's
        // public address.
        let sender = SocketAddrV4::new(*LOCAL.ip(), 5002);
        let mut obs = behind_nat();
        obs.hairpin = Some(HairpinExchange {
            sender,
            sender_mapped: Some(PUBLIC3),
            target: PUBLIC,
            arrived_from: Some(PUBLIC3),
            transmissions: 1,
        });
        let report = classify(&obs);
        assert_eq!(report.hairpinning.result, Some(Hairpinning::Supported));
        assert!(
            report.hairpinning.evidence[1].contains("the sender's public address"),
            "{:?}",
            report.hairpinning
        );
        obs.hairpin = Some(HairpinExchange {
            arrived_from: None,
            transmissions: 3,
            ..obs.hairpin.clone().unwrap()
        });
        assert_eq!(
            classify(&obs).hairpinning.result,
            Some(Hairpinning::NotSupported)
        );
    }

    #[test]
    fn interpret_accepts_only_our_transaction() {
        let tid = [9; 12];
        let reply = Repr {
            class: Class::Success,
            method: METHOD_BINDING,
            cookie: MAGIC_COOKIE,
            transaction_id: tid,
            attributes: vec![
                Attribute::XorMappedAddress(SocketAddr::V4(PUBLIC)),
                Attribute::MappedAddress(SocketAddr::V4(PUBLIC2)),
                Attribute::OtherAddress(SocketAddr::V4(OTHER)),
                Attribute::Software("srv"),
                Attribute::Fingerprint,
            ],
        }
        .to_bytes();
        assert_eq!(
            interpret(&reply, SERVER, &tid),
            Some(Seen::Response {
                from: SERVER,
                mapped: PUBLIC,
                response_origin: None,
                other_address: Some(OTHER),
                software: Some("srv".to_owned()),
            })
        );
        assert_eq!(interpret(&reply, SERVER, &[8; 12]), None);
        assert_eq!(
            interpret(
                &binding_request(tid, ChangeRequest::default()),
                SERVER,
                &tid
            ),
            None
        );
        assert_eq!(interpret(b"junk", SERVER, &tid), None);
    }

    #[test]
    fn probe_requests_carry_change_request_only_when_asked() {
        let plain = binding_request([1; 12], ChangeRequest::default());
        assert_eq!(plain.len(), 28); // header + FINGERPRINT
        let both = ChangeRequest {
            change_ip: true,
            change_port: true,
        };
        let changed = binding_request([1; 12], both);
        let repr = Repr::parse(&Packet::new_checked(&changed[..]).unwrap()).unwrap();
        assert_eq!(repr.attributes[0], Attribute::ChangeRequest(both));
    }

    #[test]
    fn server_argument_forms() {
        assert_eq!(
            split_server("192.0.2.1").unwrap(),
            ("192.0.2.1".to_owned(), 3478)
        );
        assert_eq!(
            split_server("192.0.2.1:19302").unwrap(),
            ("192.0.2.1".to_owned(), 19302)
        );
        assert_eq!(
            split_server("stun.example:3479").unwrap(),
            ("stun.example".to_owned(), 3479)
        );
        assert_eq!(
            split_server("stun.example").unwrap(),
            ("stun.example".to_owned(), 3478)
        );
        assert!(split_server("stun.example:x").is_err());
        assert!(split_server("[::1]:3478").is_err());
    }

    #[tokio::test]
    async fn probe_against_a_loopback_responder() {
        // The whole path on loopback: an RFC 5780 responder on 127.0.0.1 and 127.0.0.2.
        use crate::stun::responder::{Config, Counters};
        use crate::stun::server;
        use std::sync::Arc;
        // Two free ports (the alternate one must be free on 127.0.0.2 too; loopback
        // ports are per address, so one free on 127.0.0.1 almost always is).
        let free = || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let (port, alt_port) = (free(), free());
        let mut config = Config::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        config.alternate = Some(Ipv4Addr::new(127, 0, 0, 2));
        config.alternate_port = alt_port;
        let sockets = server::bind(&config).await.unwrap();
        let task = tokio::spawn(server::run(config, sockets, Arc::<Counters>::default()));
        let report = run(&Options {
            server: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            local: None,
            timeout: Duration::from_secs(2),
        })
        .await
        .unwrap();
        task.abort();
        assert_eq!(report.nat.result, Some(Nat::None), "{}", render(&report));
        assert_eq!(report.mapping.result, Some(Behaviour::EndpointIndependent));
        assert_eq!(
            report.filtering.result,
            Some(Behaviour::EndpointIndependent)
        );
        assert_eq!(report.hairpinning.result, Some(Hairpinning::Supported));
    }
}
