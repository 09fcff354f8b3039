//! NAT behaviour discovery (RFC 5780 §4), sans IO: what the tests saw is an
//! [`Observations`] value, and [`classify`] — a pure function — turns it into a
//! [`Report`] of mapping behaviour, filtering behaviour, hairpinning and the public
//! address, each with the tests that support the conclusion. Which test runs next is
//! decided by pure functions of the observations too ([`mapping_test2_target`], ...).
//!
//! Sockets (the client that runs it, `natgw stun probe`): A runs test I and the
//! mapping tests II/III; B (fresh, so no earlier packet to the alternate address has
//! opened the NAT's filter) runs the filtering tests; H sends to A's public address for
//! the hairpinning test (RFC 5780 §4.5 on ordering).

use std::fmt;
use std::net::SocketAddrV4;

use serde::Serialize;

pub use super::client::Seen;

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

impl Observations {
    /// Test I against `server`, before any other test has run.
    #[must_use]
    pub const fn new(server: SocketAddrV4, test1: Exchange) -> Self {
        Self {
            server,
            test1,
            mapping2: None,
            mapping3: None,
            filtering1: None,
            filtering2: None,
            filtering3: None,
            hairpin: None,
        }
    }
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

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
        Observations::new(
            SERVER,
            exchange(
                LOCAL,
                SERVER,
                (false, false),
                response(SERVER, PUBLIC, Some(OTHER)),
            ),
        )
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
        // What `natgw stun probe` prints for it is checked beside the rendering.
        assert!(report
            .nat
            .evidence
            .iter()
            .any(|e| e.contains("no answer (3 transmissions, 3.0 s)")));
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
}
