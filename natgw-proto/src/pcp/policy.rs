//! The PCP server's policy: its configuration (the `[pcp]` table of the
//! configuration file), the allow/deny port rules in the style of miniupnpd, and the
//! per-client request rate limiter.
//!
//! Everything here is a pure function of the configuration and its inputs, so the
//! server engine stays deterministic and testable.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::prefix::Ipv4Prefix;
use crate::util::bucket::{RateLimiter, WhenFull};

/// Default shortest lifetime granted to a mapping, in seconds: RFC 6887 §15 lets the
/// server raise short requests; two minutes keeps refresh traffic low.
pub const MIN_LIFETIME_DEFAULT: u32 = 120;
/// Default longest lifetime, in seconds: one day (RFC 6887 §15 lets the server cut
/// long requests; clients renew at half the lifetime).
pub const MAX_LIFETIME_DEFAULT: u32 = 86_400;
/// Default explicit mappings per internal host before USER_EX_QUOTA.
pub const MAX_MAPPINGS_PER_HOST_DEFAULT: u32 = 128;
/// Default explicit mappings on one LAN interface before NO_RESOURCES: a bound a
/// host cannot escape by speaking from many addresses (ARP is not authenticated, so
/// a LAN host can use any free address of its prefix).
pub const MAX_MAPPINGS_PER_INTERFACE_DEFAULT: u32 = 2048;
/// Default explicit mappings in all before NO_RESOURCES.
pub const MAX_MAPPINGS_DEFAULT: u32 = 4096;
/// Default sustained requests per second from all clients together.
pub const REQUESTS_PER_SECOND_TOTAL_DEFAULT: u32 = 200;
/// Default burst of requests from all clients together.
pub const BURST_TOTAL_DEFAULT: u32 = 400;
/// Default FILTER options per MAP before EXCESSIVE_REMOTE_PEERS.
pub const MAX_FILTERS_DEFAULT: u32 = 8;
/// Default sustained requests per second per client.
pub const REQUESTS_PER_SECOND_DEFAULT: u32 = 10;
/// Default burst of requests per client above the sustained rate.
pub const BURST_DEFAULT: u32 = 30;
/// Default lifetime of short-lived errors (RFC 6887 §7.4: NETWORK_FAILURE,
/// NO_RESOURCES, USER_EX_QUOTA, CANNOT_PROVIDE_EXTERNAL), in seconds.
pub const SHORT_ERROR_LIFETIME_DEFAULT: u32 = 30;
/// Default lifetime of long-lived errors (every other error), in seconds.
pub const LONG_ERROR_LIFETIME_DEFAULT: u32 = 1800;
/// The rule used when none is configured: any internal host may map any of its ports
/// to a non-system external port (system ports stay with the gateway, as miniupnpd's
/// sample configuration does).
pub const DEFAULT_RULE: &str = "allow 1024-65535 0.0.0.0/0 1-65535";
/// Clients whose request rate is tracked at once; beyond, new clients are refused
/// until idle ones age out (see [`client_limiter`]).
pub const MAX_TRACKED_CLIENTS: usize = 4096;

/// The PCP and NAT-PMP server's settings. Every field has a default, so `[pcp]` may
/// be empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PcpConfig {
    /// Answer NAT-PMP (version 0) requests too [default: true].
    pub natpmp: bool,
    /// Shortest lifetime granted, in seconds; shorter requests are raised to it
    /// [default: 120].
    pub min_lifetime: u32,
    /// Longest lifetime granted, in seconds; longer requests are cut to it
    /// [default: 86400].
    pub max_lifetime: u32,
    /// Explicit (PCP MAP and NAT-PMP) mappings one internal host may hold; the next
    /// gets USER_EX_QUOTA (NAT-PMP: OUT_OF_RESOURCES) [default: 128].
    pub max_mappings_per_host: u32,
    /// Explicit mappings the hosts of one LAN interface may hold together; the next
    /// gets NO_RESOURCES (NAT-PMP: OUT_OF_RESOURCES) [default: 2048].
    pub max_mappings_per_interface: u32,
    /// Explicit mappings all hosts may hold together; the next gets NO_RESOURCES
    /// (NAT-PMP: OUT_OF_RESOURCES) [default: 4096].
    pub max_mappings: u32,
    /// FILTER options one mapping may carry; more get EXCESSIVE_REMOTE_PEERS
    /// [default: 8].
    pub max_filters: u32,
    /// Port rules, `allow|deny EXT_PORTS PREFIX INT_PORTS`, first match wins for each
    /// (external port, internal address, internal port); no match denies
    /// (NOT_AUTHORIZED) [default: `["allow 1024-65535 0.0.0.0/0 1-65535"]`].
    pub rules: Vec<PortRule>,
    /// Allow MAP with protocol 0 (every protocol and port of a host, like a DMZ
    /// host); otherwise NOT_AUTHORIZED [default: false].
    pub allow_all_protocols: bool,
    /// Hosts allowed to use THIRD_PARTY (RFC 6887 §13.1). Empty turns the option off:
    /// requests carrying it get UNSUPP_OPTION; senders outside these prefixes get
    /// NOT_AUTHORIZED [default: empty].
    pub third_party_from: Vec<Ipv4Prefix>,
    /// Sustained requests per second per client; beyond it requests are dropped
    /// without an answer. 0 disables the limit [default: 10].
    pub requests_per_second: u32,
    /// Requests a client may send in a burst above the sustained rate [default: 30].
    pub burst: u32,
    /// Sustained requests per second from all clients together; beyond it requests
    /// are dropped without an answer. 0 disables the limit [default: 200].
    pub requests_per_second_total: u32,
    /// Requests all clients together may send in a burst [default: 400].
    pub burst_total: u32,
    /// Lifetime of short-lived error responses, in seconds [default: 30].
    pub short_error_lifetime: u32,
    /// Lifetime of long-lived error responses, in seconds [default: 1800].
    pub long_error_lifetime: u32,
}

impl Default for PcpConfig {
    fn default() -> Self {
        Self {
            natpmp: true,
            min_lifetime: MIN_LIFETIME_DEFAULT,
            max_lifetime: MAX_LIFETIME_DEFAULT,
            max_mappings_per_host: MAX_MAPPINGS_PER_HOST_DEFAULT,
            max_mappings_per_interface: MAX_MAPPINGS_PER_INTERFACE_DEFAULT,
            max_mappings: MAX_MAPPINGS_DEFAULT,
            max_filters: MAX_FILTERS_DEFAULT,
            rules: vec![default_rule()],
            allow_all_protocols: false,
            third_party_from: Vec::new(),
            requests_per_second: REQUESTS_PER_SECOND_DEFAULT,
            burst: BURST_DEFAULT,
            requests_per_second_total: REQUESTS_PER_SECOND_TOTAL_DEFAULT,
            burst_total: BURST_TOTAL_DEFAULT,
            short_error_lifetime: SHORT_ERROR_LIFETIME_DEFAULT,
            long_error_lifetime: LONG_ERROR_LIFETIME_DEFAULT,
        }
    }
}

/// 0.0.0.0/0.
const ANY_HOST: Ipv4Prefix = match Ipv4Prefix::new(Ipv4Addr::UNSPECIFIED, 0) {
    Some(p) => p,
    None => panic!("0 is a valid prefix length"),
};

fn default_rule() -> PortRule {
    PortRule {
        action: RuleAction::Allow,
        external_ports: PortSpan {
            first: 1024,
            last: 65535,
        },
        internal: ANY_HOST,
        internal_ports: PortSpan::ALL,
    }
}

/// A configuration the server cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `min_lifetime` is 0.
    #[error("pcp.min_lifetime must be at least 1 second (0 would turn renewals into deletions)")]
    ZeroMinLifetime,
    /// `min_lifetime` above `max_lifetime`.
    #[error("pcp.min_lifetime {min} is above pcp.max_lifetime {max}")]
    Lifetimes {
        /// Configured minimum.
        min: u32,
        /// Configured maximum.
        max: u32,
    },
    /// A rate without a burst would refuse everything.
    #[error(
        "pcp.burst (pcp.burst_total) must be at least 1 when pcp.requests_per_second \
         (pcp.requests_per_second_total) is set"
    )]
    ZeroBurst,
    /// A rule that does not parse.
    #[error(
        "invalid PCP port rule `{0}`: expected `allow|deny EXT_PORTS PREFIX INT_PORTS` \
         such as `allow 1024-65535 10.0.0.0/8 1024-65535`"
    )]
    Rule(String),
    /// A port range that does not parse.
    #[error("invalid port range `{0}`: expected PORT or MIN-MAX within 0-65535")]
    Ports(String),
}

impl PcpConfig {
    /// Checks the settings that cannot work.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.min_lifetime == 0 {
            return Err(PolicyError::ZeroMinLifetime);
        }
        if self.min_lifetime > self.max_lifetime {
            return Err(PolicyError::Lifetimes {
                min: self.min_lifetime,
                max: self.max_lifetime,
            });
        }
        if (self.requests_per_second > 0 && self.burst == 0)
            || (self.requests_per_second_total > 0 && self.burst_total == 0)
        {
            return Err(PolicyError::ZeroBurst);
        }
        Ok(())
    }

    /// A requested lifetime clamped to `[min_lifetime, max_lifetime]`.
    #[must_use]
    pub fn clamp_lifetime(&self, requested: u32) -> u32 {
        requested.clamp(self.min_lifetime, self.max_lifetime.max(self.min_lifetime))
    }

    /// Whether `sender` may use THIRD_PARTY; `None` when the option is off.
    #[must_use]
    pub fn third_party_allowed(&self, sender: Ipv4Addr) -> Option<bool> {
        if self.third_party_from.is_empty() {
            None
        } else {
            Some(self.third_party_from.iter().any(|p| contains(p, sender)))
        }
    }

    /// External ports the rules permit for this internal endpoint, as sorted disjoint
    /// spans; empty when every port is denied. Evaluates the rules as miniupnpd does
    /// (first rule matching the whole (external port, internal address, internal
    /// port) tuple wins, no match denies), for every external port at once.
    #[must_use]
    pub fn permitted_external_ports(
        &self,
        internal: Ipv4Addr,
        internal_port: u16,
    ) -> Vec<PortSpan> {
        let mut undecided = vec![PortSpan::ALL];
        let mut allowed = Vec::new();
        for rule in &self.rules {
            if undecided.is_empty() {
                break;
            }
            if !contains(&rule.internal, internal) || !rule.internal_ports.contains(internal_port) {
                continue;
            }
            let (hit, rest) = split(&undecided, rule.external_ports);
            if rule.action == RuleAction::Allow {
                allowed.extend(hit);
            }
            undecided = rest;
        }
        allowed.sort_unstable();
        allowed
    }
}

fn contains(prefix: &Ipv4Prefix, addr: Ipv4Addr) -> bool {
    Ipv4Prefix::new(addr, 32).is_some_and(|host| prefix.overlaps(&host))
}

/// Splits disjoint spans into the parts inside and outside `by`.
fn split(spans: &[PortSpan], by: PortSpan) -> (Vec<PortSpan>, Vec<PortSpan>) {
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for s in spans {
        let (lo, hi) = (s.first.max(by.first), s.last.min(by.last));
        if lo > hi {
            outside.push(*s);
            continue;
        }
        inside.push(PortSpan {
            first: lo,
            last: hi,
        });
        if s.first < lo {
            outside.push(PortSpan {
                first: s.first,
                last: lo - 1,
            });
        }
        if hi < s.last {
            outside.push(PortSpan {
                first: hi + 1,
                last: s.last,
            });
        }
    }
    (inside, outside)
}

/// An inclusive range of ports, `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpan {
    first: u16,
    last: u16,
}

impl PortSpan {
    /// Every usable port, 1-65535.
    pub const ALL: Self = Self {
        first: 1,
        last: 65535,
    };

    /// `first..=last`; `None` when `first > last`.
    #[must_use]
    pub const fn new(first: u16, last: u16) -> Option<Self> {
        if first > last {
            None
        } else {
            Some(Self { first, last })
        }
    }

    /// Lowest port.
    #[must_use]
    pub const fn first(&self) -> u16 {
        self.first
    }

    /// Highest port.
    #[must_use]
    pub const fn last(&self) -> u16 {
        self.last
    }

    /// Whether `port` is in the span.
    #[must_use]
    pub const fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl fmt::Display for PortSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortSpan {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PolicyError::Ports(s.to_owned());
        let port = |p: &str| p.trim().parse::<u16>().map_err(|_| err());
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        Self::new(first, last).ok_or_else(err)
    }
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleAction {
    /// Permit the mapping.
    Allow,
    /// Refuse it with NOT_AUTHORIZED.
    Deny,
}

/// One port rule, written `allow|deny EXT_PORTS PREFIX INT_PORTS` as in miniupnpd's
/// configuration, e.g. `allow 1024-65535 192.168.1.0/24 1024-65535`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortRule {
    /// Allow or deny.
    pub action: RuleAction,
    /// External ports the rule covers.
    pub external_ports: PortSpan,
    /// Internal hosts it covers.
    pub internal: Ipv4Prefix,
    /// Internal ports it covers.
    pub internal_ports: PortSpan,
}

impl fmt::Display for PortRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            RuleAction::Allow => "allow",
            RuleAction::Deny => "deny",
        };
        write!(
            f,
            "{action} {} {} {}",
            self.external_ports, self.internal, self.internal_ports
        )
    }
}

impl FromStr for PortRule {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PolicyError::Rule(s.to_owned());
        let words: Vec<&str> = s.split_whitespace().collect();
        let [action, ext, prefix, int] = words[..] else {
            return Err(err());
        };
        let action = match action {
            "allow" => RuleAction::Allow,
            "deny" => RuleAction::Deny,
            _ => return Err(err()),
        };
        Ok(Self {
            action,
            external_ports: ext.parse()?,
            internal: prefix.parse().map_err(|_| err())?,
            internal_ports: int.parse()?,
        })
    }
}

impl Serialize for PortRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The per-client limiter of `per_second` requests a second with bursts of `burst`:
/// at most [`MAX_TRACKED_CLIENTS`] clients at once; beyond, new clients are refused
/// until idle ones age out — during a flood from that many sources, serving the
/// clients already known beats serving none.
///
/// Over-limit requests are dropped silently (RFC 6887 §8.3 allows either that or
/// NO_RESOURCES): clients retransmit anyway, and answering a flood — possibly with
/// spoofed sources — would only multiply it.
#[must_use]
pub fn client_limiter(per_second: u32, burst: u32) -> RateLimiter<Ipv4Addr> {
    RateLimiter::new(
        u64::from(per_second),
        u64::from(burst),
        MAX_TRACKED_CLIENTS,
        WhenFull::RefuseNew,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::bucket::Verdict;
    use std::time::Duration;
    use std::time::Instant;

    fn span(a: u16, b: u16) -> PortSpan {
        PortSpan::new(a, b).unwrap()
    }

    fn config(rules: &[&str]) -> PcpConfig {
        PcpConfig {
            rules: rules.iter().map(|r| r.parse().unwrap()).collect(),
            ..PcpConfig::default()
        }
    }

    #[test]
    fn default_rule_keeps_system_ports_for_the_gateway() {
        let c = PcpConfig::default();
        assert_eq!(c.rules[0].to_string(), DEFAULT_RULE);
        assert_eq!(
            c.permitted_external_ports(Ipv4Addr::new(10, 0, 1, 5), 22),
            [span(1024, 65535)]
        );
    }

    #[test]
    fn rules_are_first_match_per_external_port() {
        // miniupnpd semantics: an earlier deny carves ports out of a later allow
        let c = config(&[
            "deny 5000-5999 10.0.1.0/24 1-65535",
            "allow 1024-65535 10.0.1.0/24 1024-65535",
            "allow 80 10.0.1.7/32 80",
        ]);
        let host = Ipv4Addr::new(10, 0, 1, 5);
        assert_eq!(
            c.permitted_external_ports(host, 8080),
            [span(1024, 4999), span(6000, 65535)]
        );
        assert!(c.permitted_external_ports(host, 80).is_empty());
        assert_eq!(
            c.permitted_external_ports(Ipv4Addr::new(10, 0, 1, 7), 80),
            [span(80, 80)]
        );
        assert!(c
            .permitted_external_ports(Ipv4Addr::new(10, 0, 2, 5), 8080)
            .is_empty());
    }

    #[test]
    fn rules_parse_and_print() {
        let r: PortRule = "deny  0-1023 192.168.0.0/16   22".parse().unwrap();
        assert_eq!(r.action, RuleAction::Deny);
        assert_eq!(r.to_string(), "deny 0-1023 192.168.0.0/16 22");
        assert!("permit 1-2 10.0.0.0/8 1-2".parse::<PortRule>().is_err());
        assert!("allow 2-1 10.0.0.0/8 1-2".parse::<PortRule>().is_err());
        assert!("allow 1-2 10.0.0.0 1-2".parse::<PortRule>().is_err());
        assert!("allow 1-2 10.0.0.0/8".parse::<PortRule>().is_err());
    }

    #[test]
    fn config_reads_from_toml_with_defaults() {
        let c: PcpConfig = toml::from_str(
            "max_lifetime = 3600\nrules = [\"allow 2000-3000 10.0.0.0/8 1-65535\"]\n\
             third_party_from = [\"10.0.0.1/32\"]",
        )
        .unwrap();
        assert_eq!(c.max_lifetime, 3600);
        assert_eq!(c.min_lifetime, MIN_LIFETIME_DEFAULT);
        assert_eq!(c.rules.len(), 1);
        assert_eq!(
            c.third_party_allowed(Ipv4Addr::new(10, 0, 0, 1)),
            Some(true)
        );
        assert_eq!(
            c.third_party_allowed(Ipv4Addr::new(10, 0, 0, 2)),
            Some(false)
        );
        assert_eq!(
            PcpConfig::default().third_party_allowed(Ipv4Addr::LOCALHOST),
            None
        );
        assert!(toml::from_str::<PcpConfig>("bogus = 1").is_err());
        assert!(toml::from_str::<PcpConfig>("rules = [\"allow\"]").is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = PcpConfig {
            min_lifetime: 600,
            max_lifetime: 60,
            ..PcpConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("600 is above"));
        c.min_lifetime = 0;
        assert_eq!(c.validate(), Err(PolicyError::ZeroMinLifetime));
        c.min_lifetime = 30;
        c.burst = 0;
        assert_eq!(c.validate(), Err(PolicyError::ZeroBurst));
        assert_eq!(PcpConfig::default().validate(), Ok(()));
    }

    #[test]
    fn lifetimes_are_clamped() {
        // rfc6887 15
        let c = PcpConfig::default();
        assert_eq!(c.clamp_lifetime(1), MIN_LIFETIME_DEFAULT);
        assert_eq!(c.clamp_lifetime(7200), 7200);
        assert_eq!(c.clamp_lifetime(u32::MAX), MAX_LIFETIME_DEFAULT);
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        // rfc6887 8.3: an overloaded server may silently discard requests
        let t0 = Instant::now();
        let mut l = client_limiter(2, 3);
        let c = Ipv4Addr::new(10, 0, 1, 5);
        for _ in 0..3 {
            assert_eq!(l.check(c, t0), Verdict::Allow);
        }
        assert_eq!(l.check(c, t0), Verdict::Drop { first: true });
        assert_eq!(l.check(c, t0), Verdict::Drop { first: false });
        // Another client has its own bucket.
        assert_eq!(l.check(Ipv4Addr::new(10, 0, 1, 6), t0), Verdict::Allow);
        // 2 per second: one token after 500 ms.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.check(c, t1), Verdict::Allow);
        assert_eq!(l.check(c, t1), Verdict::Drop { first: true });
        assert_eq!(client_limiter(0, 0).check(c, t0), Verdict::Allow);
    }

    #[test]
    fn tracked_clients_are_bounded() {
        let t0 = Instant::now();
        let mut l = client_limiter(1, 1);
        for i in 0..MAX_TRACKED_CLIENTS as u32 {
            assert_eq!(l.check(Ipv4Addr::from(0x0a00_0000 + i), t0), Verdict::Allow);
        }
        let newcomer = Ipv4Addr::new(192, 168, 0, 1);
        assert_eq!(l.check(newcomer, t0), Verdict::Drop { first: true });
        // Once the others' buckets are full again they are forgotten.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(l.check(newcomer, later), Verdict::Allow);
        assert_eq!(l.len(), 1);
    }
}
