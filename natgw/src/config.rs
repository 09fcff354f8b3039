//! natgw's settings: the TOML configuration file, the command-line overrides, the
//! defaults taken from the RFCs, and the validation that turns them into [`Settings`].
//!
//! Precedence: command-line flag, then configuration file, then default. Everything
//! checked here is checked before any interface or BPF object is touched, and every
//! failure is one line naming what is wrong.

use std::fmt;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

pub mod blocks;

use natgw_common::config::MAX_EXTERNAL_ADDRS;
use natgw_common::limits::{
    DEFAULT_MAPPINGS_PER_SEC, DEFAULT_MAPPING_BURST, DEFAULT_PORTS_PER_HOST,
    DEFAULT_PORT_HOLD_DOWN_SECS,
};
use natgw_common::maps::{FilterMode, DEFAULT_MAX_MAPPINGS};

use natgw_proto::pcp::policy::{PcpConfig, PolicyError};
use natgw_proto::prefix::Ipv4Prefix;

pub mod ha;

/// RFC 4787 REQ-5: a UDP mapping MUST NOT expire in less than 2 minutes…
pub const UDP_TIMEOUT_MIN: u64 = 120;
/// …and its idle timeout SHOULD be 5 minutes or more; natgw uses 5.
pub const UDP_TIMEOUT_DEFAULT: u64 = 300;
/// RFC 5382 REQ-5: an established TCP connection's idle timeout MUST NOT be less
/// than 2 hours 4 minutes.
pub const TCP_ESTABLISHED_TIMEOUT_MIN: u64 = 2 * 3600 + 4 * 60;
/// Default established TCP idle timeout (the RFC 5382 minimum).
pub const TCP_ESTABLISHED_TIMEOUT_DEFAULT: u64 = TCP_ESTABLISHED_TIMEOUT_MIN;
/// RFC 5382 REQ-5: partially open or closing connections: at least 4 minutes (2 MSL).
pub const TCP_TRANSITORY_TIMEOUT_MIN: u64 = 4 * 60;
/// Default transitory TCP idle timeout (the RFC 5382 minimum).
pub const TCP_TRANSITORY_TIMEOUT_DEFAULT: u64 = TCP_TRANSITORY_TIMEOUT_MIN;
/// RFC 5508 REQ-2: an ICMP query mapping MUST NOT expire in less than 60 seconds…
pub const ICMP_TIMEOUT_MIN: u64 = 60;
/// …and natgw uses exactly that by default.
pub const ICMP_TIMEOUT_DEFAULT: u64 = ICMP_TIMEOUT_MIN;
/// Default garbage-collection period in seconds.
pub const GC_INTERVAL_DEFAULT: u64 = 1;
/// Default external port range: every non-system port (RFC 4787 REQ-3a keeps system
/// ports for system ports).
pub const PORT_RANGE_DEFAULT: PortRange = PortRange {
    min: 1024,
    max: 65535,
};
/// `IFACES` holds 64 entries, one of which is the WAN.
pub const MAX_LAN_IFACES: usize = 63;

/// Inclusive range of external ports the NAT may allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortRange {
    /// Lowest port, at least 1.
    pub min: u16,
    /// Highest port, at least `min`.
    pub max: u16,
}

/// A port range that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// Nothing given.
    #[error("empty port range: expected MIN-MAX such as 1024-65535")]
    Empty,
    /// Not of the form `MIN-MAX`.
    #[error("invalid port range `{0}`: expected MIN-MAX such as 1024-65535")]
    Syntax(String),
    /// A bound is not a number from 0 to 65535.
    #[error("invalid port range: `{0}` is not a port number (1-65535)")]
    NotAPort(String),
    /// Port 0 is not a port a mapping can use.
    #[error("invalid port range {min}-{max}: port 0 cannot be allocated, start at 1 or above")]
    Zero {
        /// Lower bound given.
        min: u16,
        /// Upper bound given.
        max: u16,
    },
    /// MIN above MAX.
    #[error("invalid port range {min}-{max}: MIN is above MAX")]
    Inverted {
        /// Lower bound given.
        min: u16,
        /// Upper bound given.
        max: u16,
    },
}

impl PortRange {
    /// A checked range.
    pub const fn new(min: u16, max: u16) -> Result<Self, PortRangeError> {
        if min == 0 {
            Err(PortRangeError::Zero { min, max })
        } else if min > max {
            Err(PortRangeError::Inverted { min, max })
        } else {
            Ok(Self { min, max })
        }
    }

    /// Number of ports in the range.
    #[must_use]
    #[allow(clippy::len_without_is_empty)] // a range holds one port at least
    pub const fn len(&self) -> u32 {
        self.max as u32 - self.min as u32 + 1
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(PortRangeError::Empty);
        }
        let (min, max) = s
            .split_once('-')
            .ok_or_else(|| PortRangeError::Syntax(s.to_owned()))?;
        let port = |p: &str| {
            let p = p.trim();
            if p.is_empty() {
                return Err(PortRangeError::Syntax(s.to_owned()));
            }
            p.parse::<u16>()
                .map_err(|_| PortRangeError::NotAPort(p.to_owned()))
        };
        Self::new(port(min)?, port(max)?)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// Accepts `"1024-65535"` or `{ min = 1024, max = 65535 }`.
impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RangeVisitor;

        impl<'de> Visitor<'de> for RangeVisitor {
            type Value = PortRange;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port range: \"MIN-MAX\" or { min = MIN, max = MAX }")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PortRange, A::Error> {
                let (mut min, mut max) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "min" => min = Some(map.next_value::<u16>()?),
                        "max" => max = Some(map.next_value::<u16>()?),
                        other => return Err(de::Error::unknown_field(other, &["min", "max"])),
                    }
                }
                let min = min.ok_or_else(|| de::Error::missing_field("min"))?;
                let max = max.ok_or_else(|| de::Error::missing_field("max"))?;
                PortRange::new(min, max).map_err(de::Error::custom)
            }
        }

        d.deserialize_any(RangeVisitor)
    }
}

/// How XDP programs are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeChoice {
    /// Native (driver) mode, falling back to generic (SKB) mode with a warning.
    #[default]
    Auto,
    /// Native (driver) mode only; fail if the driver cannot run XDP.
    Native,
    /// Generic (SKB) mode: works everywhere, slower.
    Skb,
}

impl fmt::Display for XdpModeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Skb => "skb",
        })
    }
}

/// Inbound filtering of new mappings (RFC 4787 REQ-8, RFC 5382 REQ-3): which remote
/// endpoints may send to a mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    /// Anyone may send to a mapping once it exists: the most transparent for
    /// peer-to-peer applications (RFC 4787 REQ-8 recommends it when transparency
    /// matters most).
    #[default]
    #[value(alias = "eif")]
    #[serde(alias = "eif")]
    EndpointIndependent,
    /// Only addresses the internal endpoint has sent to.
    #[value(alias = "adf")]
    #[serde(alias = "adf")]
    AddressDependent,
    /// Only address-and-port pairs the internal endpoint has sent to: the strictest.
    #[value(alias = "apdf")]
    #[serde(alias = "apdf")]
    AddressAndPortDependent,
}

impl Filtering {
    /// The data path's encoding.
    #[must_use]
    pub const fn mode(self) -> FilterMode {
        match self {
            Self::EndpointIndependent => FilterMode::EndpointIndependent,
            Self::AddressDependent => FilterMode::AddressDependent,
            Self::AddressAndPortDependent => FilterMode::AddressAndPortDependent,
        }
    }
}

impl fmt::Display for Filtering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode().name())
    }
}

/// The filtering of new mappings, per protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilteringModes {
    /// UDP mappings.
    pub udp: Filtering,
    /// TCP mappings.
    pub tcp: Filtering,
    /// ICMP query mappings.
    pub icmp: Filtering,
}

/// What becomes of an unsolicited inbound SYN once it has been held for
/// [`crate::nat_table::gc::held_syns::HOLD_NS`] without an outbound SYN answering it (RFC 5382
/// REQ-4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UnsolicitedSyn {
    /// Answer it with ICMP port unreachable (what RFC 5382 REQ-4 asks by default).
    #[default]
    Icmp,
    /// Drop it silently (REQ-4 allows this as a policy; the sender times out).
    Drop,
}

impl fmt::Display for UnsolicitedSyn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Icmp => "icmp",
            Self::Drop => "drop",
        })
    }
}

/// The ICMP error natgw sends to an internal host whose packet could get no mapping
/// (ports or table exhausted, or one of the host's limits reached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NoMappingIcmp {
    /// Destination unreachable code 13, communication administratively prohibited:
    /// what RFC 5508 REQ-8 asks of every NAT.
    #[default]
    AdminProhibited,
    /// Destination unreachable code 1, host unreachable: what RFC 6888 REQ-11 asks
    /// of carrier-grade NATs.
    HostUnreachable,
}

impl fmt::Display for NoMappingIcmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AdminProhibited => "admin-prohibited",
            Self::HostUnreachable => "host-unreachable",
        })
    }
}

/// Per-internal-host resource rules (`[limits]`, RFC 6888).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most external ports one host may hold per protocol (UDP, TCP and ICMP query
    /// identifiers each), explicit mappings included; 0: no limit (REQ-4).
    pub ports_per_host: u32,
    /// New mappings per second one host may create after its burst; 0: no limit
    /// (REQ-4c).
    pub new_mappings_per_sec: u32,
    /// New mappings one host may create at once (its bucket's size).
    pub new_mappings_burst: u32,
    /// Seconds a freed external port is kept from other hosts; 0: none (REQ-8).
    pub port_hold_down: u64,
    /// Most freed ports held at once; 0: half as many as the NAT tables hold
    /// mappings.
    #[serde(default)]
    pub max_held_ports: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            ports_per_host: DEFAULT_PORTS_PER_HOST,
            new_mappings_per_sec: DEFAULT_MAPPINGS_PER_SEC,
            new_mappings_burst: DEFAULT_MAPPING_BURST,
            port_hold_down: DEFAULT_PORT_HOLD_DOWN_SECS,
            max_held_ports: 0,
        }
    }
}

impl Limits {
    /// Most holds of freed ports with NAT tables of `max_mappings`: as configured,
    /// or half as many as mappings (the reverse table gets that much room besides).
    #[must_use]
    pub const fn held_ports_capacity(&self, max_mappings: u32) -> u32 {
        if self.max_held_ports == 0 {
            if max_mappings < 2 {
                1
            } else {
                max_mappings / 2
            }
        } else {
            self.max_held_ports
        }
    }
}

/// The `[limits]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// `ports_per_host`.
    pub ports_per_host: Option<u32>,
    /// `new_mappings_per_sec`.
    pub new_mappings_per_sec: Option<u32>,
    /// `new_mappings_burst`.
    pub new_mappings_burst: Option<u32>,
    /// `port_hold_down`.
    pub port_hold_down: Option<u64>,
    /// `max_held_ports`.
    pub max_held_ports: Option<u32>,
}

/// The STUN responder's settings (`[stun]`): natgw answers STUN Binding requests
/// (RFC 8489) on its main external address, and with a second external address acts
/// as an RFC 5780 server (OTHER-ADDRESS: the second address and the alternate port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StunSettings {
    /// Answer STUN on the external address (default; `--no-stun` or `enabled = false`
    /// turns it off).
    pub enabled: bool,
    /// UDP port on the external addresses.
    pub port: u16,
    /// The RFC 5780 alternate port (used with a second external address).
    pub alternate_port: u16,
}

impl Default for StunSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            port: natgw_proto::stun::responder::DEFAULT_PORT,
            alternate_port: natgw_proto::stun::responder::DEFAULT_ALTERNATE_PORT,
        }
    }
}

/// The UPnP IGD server's settings (`[upnp]`). Its port rules and quotas are the
/// `[pcp]` policy's, shared with PCP and NAT-PMP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpnpSettings {
    /// Serve UPnP IGD (SSDP on UDP 1900, HTTP on TCP 5000) on the LAN interfaces
    /// (default; `--no-upnp` or `enabled = false` turns it off).
    pub enabled: bool,
    /// Let a control point map ports for other hosts and delete their mappings
    /// (off: 606 Action not authorized, as miniupnpd's secure mode).
    pub allow_other_hosts: bool,
    /// Longest lease granted, seconds; a lease of 0 ("permanent") gets this.
    pub max_lease: u32,
    /// Requests per second one host may make (0: no limit).
    pub requests_per_second: u32,
    /// The TCP port of the HTTP server on the LAN addresses.
    pub http_port: u16,
}

impl Default for UpnpSettings {
    fn default() -> Self {
        let d = natgw_proto::upnp::engine::UpnpConfig::default();
        Self {
            enabled: true,
            allow_other_hosts: d.allow_other_hosts,
            max_lease: d.max_lease,
            requests_per_second: d.requests_per_second,
            http_port: DEFAULT_UPNP_HTTP_PORT,
        }
    }
}

/// The UPnP HTTP server's port unless `[upnp] http_port` says otherwise.
pub const DEFAULT_UPNP_HTTP_PORT: u16 = 5000;

impl UpnpSettings {
    /// The engine's configuration (its limits at their defaults).
    #[must_use]
    pub fn engine(&self) -> natgw_proto::upnp::engine::UpnpConfig {
        natgw_proto::upnp::engine::UpnpConfig {
            allow_other_hosts: self.allow_other_hosts,
            max_lease: self.max_lease,
            requests_per_second: self.requests_per_second,
            ..natgw_proto::upnp::engine::UpnpConfig::default()
        }
    }
}

/// The `[upnp]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpnp {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `allow_other_hosts`.
    pub allow_other_hosts: Option<bool>,
    /// `max_lease`.
    pub max_lease: Option<u32>,
    /// `requests_per_second`.
    pub requests_per_second: Option<u32>,
    /// `http_port`.
    pub http_port: Option<u16>,
}

/// The `[stun]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStun {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `port`.
    pub port: Option<u16>,
    /// `alternate_port`.
    pub alternate_port: Option<u16>,
}

/// The Prometheus endpoint's settings (`[metrics]`, `--metrics`): off unless an
/// address is given. See docs/operations.md#metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Where `GET /metrics` is served; `None`: no endpoint (default).
    pub listen: Option<std::net::SocketAddrV4>,
    /// Allow an address that is not a LAN interface's or loopback (the WAN's,
    /// 0.0.0.0, any other): the counters would be readable from outside.
    pub allow_wan: bool,
}

/// Where `natgw run --log-allocations` (`log_allocations` in the file) writes the
/// allocation log for abuse handling; see docs/operations.md#abuse-handling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocLogTarget {
    /// `file:PATH`: text lines appended to PATH (reopened on SIGHUP).
    File(PathBuf),
    /// `json:PATH`: JSON lines appended to PATH (reopened on SIGHUP).
    Json(PathBuf),
    /// `syslog` (the local socket /dev/log) or `syslog:SOCKET` (another unix
    /// datagram socket): one RFC 3164 message per record, facility daemon.
    Syslog(PathBuf),
}

/// The local syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";

impl AllocLogTarget {
    /// The file `natgw who` can read: `file:` and `json:` targets.
    #[must_use]
    pub fn readable_file(&self) -> Option<&Path> {
        match self {
            Self::File(p) | Self::Json(p) => Some(p),
            Self::Syslog(_) => None,
        }
    }
}

impl FromStr for AllocLogTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let path = |p: &str| {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(format!(
                    "`{s}`: the path must be absolute (e.g. file:/var/log/natgw/allocations.log)"
                ))
            }
        };
        match s.split_once(':') {
            None if s == "syslog" => Ok(Self::Syslog(PathBuf::from(SYSLOG_SOCKET))),
            Some(("file", p)) => path(p).map(Self::File),
            Some(("json", p)) => path(p).map(Self::Json),
            Some(("syslog", p)) => path(p).map(Self::Syslog),
            _ => Err(format!(
                "`{s}` is not an allocation log target: file:/PATH, json:/PATH, syslog or \
                 syslog:/SOCKET"
            )),
        }
    }
}

impl fmt::Display for AllocLogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::Json(p) => write!(f, "json:{}", p.display()),
            Self::Syslog(p) if p == Path::new(SYSLOG_SOCKET) => f.write_str("syslog"),
            Self::Syslog(p) => write!(f, "syslog:{}", p.display()),
        }
    }
}

impl Serialize for AllocLogTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AllocLogTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// The `[metrics]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMetrics {
    /// `listen`.
    pub listen: Option<std::net::SocketAddrV4>,
    /// `allow_wan`.
    pub allow_wan: Option<bool>,
}

/// Where natgw asks for upstream mappings when it sits behind another NAT that
/// speaks PCP (double NAT; RFC 7648): `[pcp] upstream`, `--pcp-upstream`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PcpUpstream {
    /// The WAN's default gateway, port 5351; off when it does not answer (default).
    #[default]
    Auto,
    /// No upstream mappings.
    Off,
    /// This server (port 5351 unless given).
    Server(std::net::SocketAddrV4),
}

impl FromStr for PcpUpstream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            other => other
                .parse::<std::net::SocketAddrV4>()
                .or_else(|_| {
                    other
                        .parse::<Ipv4Addr>()
                        .map(|a| std::net::SocketAddrV4::new(a, 5351))
                })
                .map(Self::Server)
                .map_err(|_| {
                    format!(
                        "pcp upstream {other:?}: expected \"auto\", \"off\", an IPv4 address \
                         or ADDRESS:PORT"
                    )
                }),
        }
    }
}

impl fmt::Display for PcpUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Off => f.write_str("off"),
            Self::Server(a) => write!(f, "{a}"),
        }
    }
}

impl Serialize for PcpUpstream {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PcpUpstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// The PCP and NAT-PMP server's settings (`[pcp]`): on or off, and the server's own
/// configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcpSettings {
    /// Serve PCP and NAT-PMP on the LAN addresses, port 5351 (default; `--no-pcp` or
    /// `enabled = false` turns it off).
    pub enabled: bool,
    /// The server's policy: lifetimes, quotas, port rules, rate limit.
    pub server: PcpConfig,
    /// The upstream PCP server (double NAT).
    #[serde(default)]
    pub upstream: PcpUpstream,
}

impl Default for PcpSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            server: PcpConfig::default(),
            upstream: PcpUpstream::Auto,
        }
    }
}

/// The `[pcp]` table as written: `enabled` plus the keys of [`PcpConfig`] (every one
/// optional, unknown ones refused).
#[derive(Debug, Default)]
pub struct FilePcp {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `upstream`.
    pub upstream: Option<PcpUpstream>,
    /// Everything else.
    pub server: PcpConfig,
}

impl<'de> Deserialize<'de> for FilePcp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(d)?;
        let enabled = match table.remove("enabled") {
            None => None,
            Some(toml::Value::Boolean(b)) => Some(b),
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "invalid type: {} for `enabled`, expected true or false",
                    other.type_str()
                )))
            }
        };
        let upstream = match table.remove("upstream") {
            None => None,
            Some(toml::Value::String(v)) => Some(v.parse().map_err(de::Error::custom)?),
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "invalid type: {} for `upstream`, expected \"auto\", \"off\" or an address",
                    other.type_str()
                )))
            }
        };
        let server = PcpConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| de::Error::custom(e.message().trim().replace('\n', " ")))?;
        Ok(Self {
            enabled,
            upstream,
            server,
        })
    }
}

/// Protocol of a static forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardProtocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl fmt::Display for ForwardProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        })
    }
}

/// A static port forward (`[[forward]]`): the external port reaches the internal
/// endpoint from anywhere for as long as natgw runs — an explicit mapping like a
/// PCP one that never expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// `udp` or `tcp`.
    pub protocol: ForwardProtocol,
    /// Port on the external address (the internal host's, with a pool).
    pub external_port: u16,
    /// Internal host and port, inside a LAN prefix.
    pub internal: std::net::SocketAddrV4,
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} external port {} -> {}",
            self.protocol, self.external_port, self.internal
        )
    }
}

/// Mapping idle timeouts in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// UDP and every protocol other than TCP.
    pub udp: u64,
    /// TCP with a SYN seen both ways and no FIN or RST.
    pub tcp_established: u64,
    /// Any other TCP state (opening, closing, reset).
    pub tcp_transitory: u64,
    /// ICMP query mappings (echo, timestamp, ...).
    #[serde(default = "icmp_timeout_default")]
    pub icmp: u64,
}

const fn icmp_timeout_default() -> u64 {
    ICMP_TIMEOUT_DEFAULT
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            udp: UDP_TIMEOUT_DEFAULT,
            tcp_established: TCP_ESTABLISHED_TIMEOUT_DEFAULT,
            tcp_transitory: TCP_TRANSITORY_TIMEOUT_DEFAULT,
            icmp: ICMP_TIMEOUT_DEFAULT,
        }
    }
}

/// The configuration file as written (`natgw run --config FILE`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// WAN interface name.
    pub wan: Option<String>,
    /// LAN interface names.
    pub lan: Option<Vec<String>>,
    /// External address pool.
    pub external: Option<Vec<Ipv4Addr>>,
    /// External port range.
    pub port_range: Option<PortRange>,
    /// Lowest external port (alternative to `port_range`).
    pub port_min: Option<u16>,
    /// Highest external port (alternative to `port_range`).
    pub port_max: Option<u16>,
    /// `[timeouts]` table.
    pub timeouts: Option<FileTimeouts>,
    /// Inbound packets refresh mappings.
    pub inbound_refresh: Option<bool>,
    /// NAT table capacity.
    pub max_mappings: Option<u32>,
    /// XDP attach mode.
    pub xdp_mode: Option<XdpModeChoice>,
    /// Garbage-collection period in seconds.
    pub gc_interval: Option<u64>,
    /// `[filtering]` table.
    pub filtering: Option<FileFiltering>,
    /// Fate of held unsolicited SYNs.
    pub unsolicited_syn: Option<UnsolicitedSyn>,
    /// ICMP error for packets that get no mapping.
    pub no_mapping_icmp: Option<NoMappingIcmp>,
    /// `[limits]` table.
    pub limits: Option<FileLimits>,
    /// `[pcp]` table.
    pub pcp: Option<FilePcp>,
    /// `[stun]` table.
    pub stun: Option<FileStun>,
    /// `[upnp]` table.
    pub upnp: Option<FileUpnp>,
    /// `[metrics]` table.
    pub metrics: Option<FileMetrics>,
    /// `log_allocations`: the allocation log target.
    pub log_allocations: Option<AllocLogTarget>,
    /// `[ha]` table: state replication to a standby.
    pub ha: Option<ha::FileHa>,
    /// `[[forward]]` tables.
    pub forward: Option<Vec<Forward>>,
    /// `[blocks]`: deterministic port blocks.
    pub blocks: Option<blocks::BlockSettings>,
}

/// The `[filtering]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFiltering {
    /// UDP filtering.
    pub udp: Option<Filtering>,
    /// TCP filtering.
    pub tcp: Option<Filtering>,
    /// ICMP query filtering.
    pub icmp: Option<Filtering>,
}

/// The `[timeouts]` table, in seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    /// UDP (and non-TCP) idle timeout.
    pub udp: Option<u64>,
    /// Established TCP idle timeout.
    pub tcp_established: Option<u64>,
    /// Transitory TCP idle timeout.
    pub tcp_transitory: Option<u64>,
    /// ICMP query idle timeout.
    pub icmp: Option<u64>,
}

/// Settings given on the command line; each one set replaces the file's.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--wan`.
    pub wan: Option<String>,
    /// `--lan` (repeatable); when non-empty it replaces the file's list.
    pub lan: Vec<String>,
    /// `--external` (repeatable); when non-empty it replaces the file's list.
    pub external: Vec<Ipv4Addr>,
    /// `--port-range`.
    pub port_range: Option<PortRange>,
    /// `--udp-timeout`.
    pub udp_timeout: Option<u64>,
    /// `--tcp-established-timeout`.
    pub tcp_established_timeout: Option<u64>,
    /// `--tcp-transitory-timeout`.
    pub tcp_transitory_timeout: Option<u64>,
    /// `--inbound-refresh` (can only turn it on).
    pub inbound_refresh: bool,
    /// `--max-mappings`.
    pub max_mappings: Option<u32>,
    /// `--xdp-mode`.
    pub xdp_mode: Option<XdpModeChoice>,
    /// `--gc-interval`.
    pub gc_interval: Option<u64>,
    /// `--icmp-timeout`.
    pub icmp_timeout: Option<u64>,
    /// `--udp-filtering`.
    pub udp_filtering: Option<Filtering>,
    /// `--tcp-filtering`.
    pub tcp_filtering: Option<Filtering>,
    /// `--icmp-filtering`.
    pub icmp_filtering: Option<Filtering>,
    /// `--unsolicited-syn`.
    pub unsolicited_syn: Option<UnsolicitedSyn>,
    /// `--no-mapping-icmp`.
    pub no_mapping_icmp: Option<NoMappingIcmp>,
    /// `--max-ports-per-host`.
    pub ports_per_host: Option<u32>,
    /// `--host-mapping-rate`.
    pub new_mappings_per_sec: Option<u32>,
    /// `--host-mapping-burst`.
    pub new_mappings_burst: Option<u32>,
    /// `--port-hold-down`.
    pub port_hold_down: Option<u64>,
    /// `--max-held-ports`.
    pub max_held_ports: Option<u32>,
    /// `--no-pcp` (can only turn the server off).
    pub no_pcp: bool,
    /// `--pcp-upstream`.
    pub pcp_upstream: Option<PcpUpstream>,
    /// `--stun-port`.
    pub stun_port: Option<u16>,
    /// `--no-stun` (can only turn the responder off).
    pub no_stun: bool,
    /// `--no-upnp` (can only turn the UPnP server off).
    pub no_upnp: bool,
    /// `--metrics`.
    pub metrics: Option<std::net::SocketAddrV4>,
    /// `--metrics-allow-wan` (can only allow).
    pub metrics_allow_wan: bool,
    /// `--log-allocations`.
    pub log_allocations: Option<AllocLogTarget>,
    /// `--ha` (can only turn it on).
    pub ha: bool,
    /// `--ha-listen`, `--ha-peer`, `--ha-key-file`, `--ha-role`.
    pub ha_listen: Option<std::net::SocketAddrV4>,
    /// `--ha-peer`.
    pub ha_peer: Option<std::net::SocketAddrV4>,
    /// `--ha-key-file`.
    pub ha_key_file: Option<PathBuf>,
    /// `--ha-role`.
    pub ha_role: Option<ha::HaRoleChoice>,
    /// `--block-space`, `--block-size`, `--block-shares`, `--block-owned` (each
    /// replaces the file's `[blocks]` key).
    pub blocks: BlockOverrides,
}

/// The `--block-*` flags.
#[derive(Debug, Default, Clone)]
pub struct BlockOverrides {
    /// `--block-space`.
    pub space: Option<Ipv4Prefix>,
    /// `--block-size`.
    pub size: Option<u16>,
    /// `--block-shares`.
    pub shares: Option<u8>,
    /// `--block-owned` (comma-separated or repeated); non-empty replaces the file's.
    pub owned: Vec<u8>,
}

/// Validated settings of a running gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// WAN interface name.
    pub wan: String,
    /// LAN interface names, at least one, none equal to `wan`.
    pub lan: Vec<String>,
    /// The external address pool as asked for (at most [`MAX_EXTERNAL_ADDRS`], no
    /// duplicates); empty: the WAN's first IPv4 address alone. Each must be
    /// configured on the WAN, which `natgw run` checks against the interface.
    #[serde(default)]
    pub external: Vec<Ipv4Addr>,
    /// External port range.
    pub port_range: PortRange,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Inbound packets refresh mappings (RFC 4787 REQ-6, optional).
    pub inbound_refresh: bool,
    /// Capacity of each NAT table.
    pub max_mappings: u32,
    /// XDP attach mode.
    pub xdp_mode: XdpModeChoice,
    /// Garbage-collection period in seconds.
    pub gc_interval: u64,
    /// Filtering of new mappings per protocol.
    #[serde(default)]
    pub filtering: FilteringModes,
    /// Fate of held unsolicited SYNs.
    #[serde(default)]
    pub unsolicited_syn: UnsolicitedSyn,
    /// ICMP error for packets that get no mapping.
    #[serde(default)]
    pub no_mapping_icmp: NoMappingIcmp,
    /// Per-host resource rules (RFC 6888).
    #[serde(default)]
    pub limits: Limits,
    /// The PCP and NAT-PMP server.
    #[serde(default)]
    pub pcp: PcpSettings,
    /// The STUN responder.
    #[serde(default)]
    pub stun: StunSettings,
    /// The UPnP IGD server.
    #[serde(default)]
    pub upnp: UpnpSettings,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// Static port forwards.
    #[serde(default)]
    pub forwards: Vec<Forward>,
    /// The allocation log for abuse handling; `None`: none (default).
    #[serde(default)]
    pub log_allocations: Option<AllocLogTarget>,
    /// State replication to a standby (off by default).
    #[serde(default)]
    pub ha: ha::HaSettings,
    /// Deterministic port blocks (RFC 7422); `None`: dynamic allocation (default).
    #[serde(default)]
    pub blocks: Option<blocks::BlockSettings>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("config file {path}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Parse {
        /// File.
        path: PathBuf,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// What is wrong (names the offending key).
        message: String,
    },
    /// No WAN interface anywhere.
    #[error("no WAN interface: pass --wan IFACE or set `wan = \"IFACE\"` in the config file")]
    MissingWan,
    /// No LAN interface anywhere.
    #[error(
        "no LAN interface: pass --lan IFACE (repeatable) or set `lan = [\"IFACE\"]` in the \
         config file"
    )]
    MissingLan,
    /// An empty interface name (`wan` or `lan`).
    #[error("empty interface name in `{0}`")]
    EmptyName(&'static str),
    /// The same interface is both.
    #[error("interface {0} cannot be both the WAN and a LAN interface")]
    WanIsLan(String),
    /// A LAN interface given twice.
    #[error("LAN interface {0} is listed twice")]
    DuplicateLan(String),
    /// More LAN interfaces than the `IFACES` map holds.
    #[error("{0} LAN interfaces given; natgw supports at most {MAX_LAN_IFACES}")]
    TooManyLans(usize),
    /// More external addresses than the `EXT_ADDRS` pool holds.
    #[error("{0} external addresses given; natgw pools at most {MAX_EXTERNAL_ADDRS}")]
    TooManyExternal(usize),
    /// An external address given twice.
    #[error("external address {0} is listed twice")]
    DuplicateExternal(Ipv4Addr),
    /// `[ha]` without the virtual external addresses.
    #[error(
        "--ha needs the virtual external addresses keepalived moves: pass --external ADDR \
         (or set `external = [...]` in the config file)"
    )]
    HaWithoutExternal,
    /// A STUN port of 0.
    #[error("the STUN ports must be 1-65535 (`--stun-port`, `[stun] port`, `alternate_port`)")]
    StunPortZero,
    /// The STUN port equals the RFC 5780 alternate port.
    #[error(
        "the STUN port and the STUN alternate port are both {0}: RFC 5780 needs two \
         different ports"
    )]
    StunPortsEqual(u16),
    /// A UDP forward of a STUN port.
    #[error(
        "UDP port {port} is both forwarded ([[forward]]) and the STUN responder's: move the \
         responder with --stun-port (or `[stun] port` / `alternate_port`), or turn it off \
         with --no-stun"
    )]
    StunPortForwarded {
        /// The port.
        port: u16,
        /// Which `[[forward]]` (0-based).
        index: usize,
    },
    /// A timeout of zero.
    #[error("the {0} timeout must be at least 1 second")]
    ZeroTimeout(&'static str),
    /// `max_mappings = 0`.
    #[error("max mappings must be at least 1")]
    ZeroMaxMappings,
    /// `gc_interval = 0`.
    #[error("the GC interval must be at least 1 second")]
    ZeroGcInterval,
    /// A host's bucket of new mappings that holds none.
    #[error(
        "the burst of new mappings per host must be at least 1 while their rate is \
         limited (--host-mapping-burst, `[limits] new_mappings_burst`)"
    )]
    ZeroMappingBurst,
    /// Both forms of the port range in the file.
    #[error("set either `port_range` or `port_min`/`port_max` in the config file, not both")]
    PortRangeTwice,
    /// A bad port range.
    #[error(transparent)]
    PortRange(#[from] PortRangeError),
    /// `upnp.max_lease` out of range.
    #[error(
        "upnp.max_lease {0} is out of range: a lease of 1 to {max} seconds (IGD:2's longest)",
        max = natgw_proto::upnp::description::MAX_LEASE
    )]
    UpnpMaxLease(u32),
    /// `metrics.listen` on port 0.
    #[error("the metrics address {0} has port 0: give the port to serve /metrics on")]
    MetricsPortZero(std::net::SocketAddrV4),
    /// `metrics.listen` on 0.0.0.0 without `allow_wan`.
    #[error(
        "the metrics address {0} listens on every interface, the WAN's too: give a LAN \
         address or 127.0.0.1 (or pass --metrics-allow-wan / `[metrics] allow_wan = true` \
         to serve the counters to the WAN side)"
    )]
    MetricsUnspecified(std::net::SocketAddrV4),
    /// A `[ha]` setting replication cannot run with.
    #[error("{0}")]
    Ha(String),
    /// `upnp.http_port = 0`.
    #[error("upnp.http_port must be a port (1-65535)")]
    UpnpHttpPortZero,
    /// A `[pcp]` setting the server cannot run with.
    #[error(transparent)]
    Pcp(#[from] PolicyError),
    /// `pcp.allow_all_protocols = true`.
    #[error(
        "pcp.allow_all_protocols = true is not supported: natgw's data path maps single \
         ports, not every protocol and port of a host"
    )]
    AllProtocols,
    /// Port-block settings that cannot work.
    #[error("[blocks]: {0}")]
    Blocks(#[from] blocks::BlockError),
    /// Block flags without the rest of the block settings.
    #[error(
        "port blocks need both the internal space and the block size: --block-space PREFIX \
         and --block-size PORTS (or `space` and `size` in `[blocks]`)"
    )]
    BlocksIncomplete,
    /// A static forward that cannot work.
    #[error("[[forward]] {forward}: {problem}")]
    Forward {
        /// Which `[[forward]]` (0-based).
        index: usize,
        /// The forward.
        forward: Forward,
        /// What is wrong.
        problem: &'static str,
    },
}

impl ConfigError {
    /// The configuration file's key the problem is about, dotted (`timeouts.udp`,
    /// `forward[1]`), when it is about one; `natgw check-config` finds its line.
    #[must_use]
    pub fn key(&self) -> Option<String> {
        let key = match self {
            Self::Read { .. } | Self::Parse { .. } => return None,
            Self::MissingWan => "wan",
            Self::EmptyName(key) => key,
            Self::MissingLan | Self::WanIsLan(_) | Self::DuplicateLan(_) | Self::TooManyLans(_) => {
                "lan"
            }
            Self::TooManyExternal(_) | Self::DuplicateExternal(_) => "external",
            Self::HaWithoutExternal => "ha.keepalived",
            Self::StunPortZero => "stun.port",
            Self::StunPortsEqual(_) => "stun.alternate_port",
            Self::StunPortForwarded { index, .. } | Self::Forward { index, .. } => {
                return Some(format!("forward[{index}]"))
            }
            Self::ZeroTimeout(name) => match *name {
                "UDP" => "timeouts.udp",
                "TCP established" => "timeouts.tcp_established",
                "TCP transitory" => "timeouts.tcp_transitory",
                _ => "timeouts.icmp",
            },
            Self::ZeroMaxMappings => "max_mappings",
            Self::ZeroGcInterval => "gc_interval",
            Self::ZeroMappingBurst => "limits.new_mappings_burst",
            Self::PortRangeTwice | Self::PortRange(_) => "port_range",
            Self::UpnpMaxLease(_) => "upnp.max_lease",
            Self::UpnpHttpPortZero => "upnp.http_port",
            Self::Pcp(e) => match e {
                PolicyError::ZeroMinLifetime | PolicyError::Lifetimes { .. } => "pcp.min_lifetime",
                PolicyError::ZeroBurst => "pcp.burst",
                PolicyError::Rule(_) | PolicyError::Ports(_) => "pcp.rules",
            },
            Self::AllProtocols => "pcp.allow_all_protocols",
            Self::MetricsPortZero(_) | Self::MetricsUnspecified(_) => "metrics.listen",
            Self::Ha(_) => "ha",
            Self::Blocks(_) | Self::BlocksIncomplete => "blocks",
        };
        Some(key.to_owned())
    }
}

/// Reads and parses a configuration file (no validation yet).
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(path, &text)
}

/// Parses configuration text; `path` only names the file in errors.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        line: e.span().map(|span| line_of(text, span.start)),
        message: e.message().trim().replace('\n', " "),
    })
}

/// 1-based line number of byte offset `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|b| *b == b'\n').count() + 1
}

/// The file's port range: `port_range`, or `port_min`/`port_max` (each defaulting to
/// the default range's bound), not both.
fn file_port_range(file: &FileConfig) -> Result<Option<PortRange>, ConfigError> {
    match (file.port_range, file.port_min, file.port_max) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ConfigError::PortRangeTwice),
        (Some(r), None, None) => Ok(Some(r)),
        (None, None, None) => Ok(None),
        (None, min, max) => Ok(Some(PortRange::new(
            min.unwrap_or(PORT_RANGE_DEFAULT.min),
            max.unwrap_or(PORT_RANGE_DEFAULT.max),
        )?)),
    }
}

/// Merges flags over the file over the defaults and validates the result. Returns the
/// settings and warnings (timeouts below the RFC minimums) for the caller to log, or
/// the first problem found.
pub fn resolve(
    file: &FileConfig,
    flags: &Overrides,
) -> Result<(Settings, Vec<String>), ConfigError> {
    let checked = check(file, flags);
    match checked.errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok((
            checked.settings,
            checked.warnings.into_iter().map(|w| w.message).collect(),
        )),
    }
}

/// A value that works but is below what an RFC asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The configuration key, dotted (`timeouts.udp`).
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Everything [`check`] found.
#[derive(Debug)]
pub struct Checked {
    /// The settings, with defaults where a value was missing or wrong.
    pub settings: Settings,
    /// Every problem, in the order of the keys checked (empty: the settings work).
    pub errors: Vec<ConfigError>,
    /// Values legal but below an RFC minimum.
    pub warnings: Vec<Warning>,
}

/// Merges flags over the file over the defaults and checks the result, collecting
/// every problem rather than stopping at the first (`natgw check-config`).
#[must_use]
pub fn check(file: &FileConfig, flags: &Overrides) -> Checked {
    let mut errors = Vec::new();
    let wan = flags.wan.clone().or_else(|| file.wan.clone());
    let missing_wan = wan.is_none();
    if missing_wan {
        errors.push(ConfigError::MissingWan);
    }
    let wan = wan.unwrap_or_default();
    let lan = if flags.lan.is_empty() {
        file.lan.clone().unwrap_or_default()
    } else {
        flags.lan.clone()
    };
    let external = if flags.external.is_empty() {
        file.external.clone().unwrap_or_default()
    } else {
        flags.external.clone()
    };
    let file_timeouts = file.timeouts.as_ref();
    let defaults = Timeouts::default();
    let timeouts = Timeouts {
        udp: flags
            .udp_timeout
            .or_else(|| file_timeouts.and_then(|t| t.udp))
            .unwrap_or(defaults.udp),
        tcp_established: flags
            .tcp_established_timeout
            .or_else(|| file_timeouts.and_then(|t| t.tcp_established))
            .unwrap_or(defaults.tcp_established),
        tcp_transitory: flags
            .tcp_transitory_timeout
            .or_else(|| file_timeouts.and_then(|t| t.tcp_transitory))
            .unwrap_or(defaults.tcp_transitory),
        icmp: flags
            .icmp_timeout
            .or_else(|| file_timeouts.and_then(|t| t.icmp))
            .unwrap_or(defaults.icmp),
    };
    let file_filtering = file.filtering.as_ref();
    let filtering = FilteringModes {
        udp: flags
            .udp_filtering
            .or_else(|| file_filtering.and_then(|f| f.udp))
            .unwrap_or_default(),
        tcp: flags
            .tcp_filtering
            .or_else(|| file_filtering.and_then(|f| f.tcp))
            .unwrap_or_default(),
        icmp: flags
            .icmp_filtering
            .or_else(|| file_filtering.and_then(|f| f.icmp))
            .unwrap_or_default(),
    };
    let settings = Settings {
        wan,
        lan,
        external,
        port_range: match flags.port_range {
            Some(r) => r,
            None => file_port_range(file)
                .unwrap_or_else(|e| {
                    errors.push(e);
                    None
                })
                .unwrap_or(PORT_RANGE_DEFAULT),
        },
        timeouts,
        inbound_refresh: flags.inbound_refresh || file.inbound_refresh.unwrap_or(false),
        max_mappings: flags
            .max_mappings
            .or(file.max_mappings)
            .unwrap_or(DEFAULT_MAX_MAPPINGS),
        xdp_mode: flags.xdp_mode.or(file.xdp_mode).unwrap_or_default(),
        gc_interval: flags
            .gc_interval
            .or(file.gc_interval)
            .unwrap_or(GC_INTERVAL_DEFAULT),
        filtering,
        unsolicited_syn: flags
            .unsolicited_syn
            .or(file.unsolicited_syn)
            .unwrap_or_default(),
        no_mapping_icmp: flags
            .no_mapping_icmp
            .or(file.no_mapping_icmp)
            .unwrap_or_default(),
        limits: {
            let f = file.limits.as_ref();
            let d = Limits::default();
            Limits {
                ports_per_host: flags
                    .ports_per_host
                    .or_else(|| f.and_then(|f| f.ports_per_host))
                    .unwrap_or(d.ports_per_host),
                new_mappings_per_sec: flags
                    .new_mappings_per_sec
                    .or_else(|| f.and_then(|f| f.new_mappings_per_sec))
                    .unwrap_or(d.new_mappings_per_sec),
                new_mappings_burst: flags
                    .new_mappings_burst
                    .or_else(|| f.and_then(|f| f.new_mappings_burst))
                    .unwrap_or(d.new_mappings_burst),
                port_hold_down: flags
                    .port_hold_down
                    .or_else(|| f.and_then(|f| f.port_hold_down))
                    .unwrap_or(d.port_hold_down),
                max_held_ports: flags
                    .max_held_ports
                    .or_else(|| f.and_then(|f| f.max_held_ports))
                    .unwrap_or(d.max_held_ports),
            }
        },
        pcp: PcpSettings {
            enabled: !flags.no_pcp && file.pcp.as_ref().and_then(|p| p.enabled).unwrap_or(true),
            server: file
                .pcp
                .as_ref()
                .map(|p| p.server.clone())
                .unwrap_or_default(),
            upstream: flags
                .pcp_upstream
                .or_else(|| file.pcp.as_ref().and_then(|p| p.upstream))
                .unwrap_or_default(),
        },
        forwards: file.forward.clone().unwrap_or_default(),
        blocks: merge_blocks(&flags.blocks, file.blocks.as_ref()).unwrap_or_else(|e| {
            errors.push(e);
            None
        }),
        log_allocations: flags
            .log_allocations
            .clone()
            .or_else(|| file.log_allocations.clone()),
        stun: {
            let f = file.stun.as_ref();
            let defaults = StunSettings::default();
            StunSettings {
                enabled: !flags.no_stun && f.and_then(|f| f.enabled).unwrap_or(true),
                port: flags
                    .stun_port
                    .or_else(|| f.and_then(|f| f.port))
                    .unwrap_or(defaults.port),
                alternate_port: f
                    .and_then(|f| f.alternate_port)
                    .unwrap_or(defaults.alternate_port),
            }
        },
        ha: {
            let mut ha = ha::merge(
                file.ha.as_ref(),
                flags.ha_listen,
                flags.ha_peer,
                flags.ha_key_file.as_ref(),
                flags.ha_role,
            );
            ha.keepalived =
                flags.ha || file.ha.as_ref().and_then(|h| h.keepalived).unwrap_or(false);
            ha
        },
        metrics: {
            let f = file.metrics.as_ref();
            MetricsSettings {
                listen: flags.metrics.or_else(|| f.and_then(|f| f.listen)),
                allow_wan: flags.metrics_allow_wan || f.and_then(|f| f.allow_wan).unwrap_or(false),
            }
        },
        upnp: {
            let f = file.upnp.as_ref();
            let d = UpnpSettings::default();
            UpnpSettings {
                enabled: !flags.no_upnp && f.and_then(|f| f.enabled).unwrap_or(true),
                allow_other_hosts: f
                    .and_then(|f| f.allow_other_hosts)
                    .unwrap_or(d.allow_other_hosts),
                max_lease: f.and_then(|f| f.max_lease).unwrap_or(d.max_lease),
                requests_per_second: f
                    .and_then(|f| f.requests_per_second)
                    .unwrap_or(d.requests_per_second),
                http_port: f.and_then(|f| f.http_port).unwrap_or(d.http_port),
            }
        },
    };
    let mut warnings = Vec::new();
    check_settings(&settings, &mut errors, &mut warnings);
    if missing_wan {
        // The empty name stands in for the missing one, already reported.
        errors.retain(|e| !matches!(e, ConfigError::EmptyName("wan")));
    }
    Checked {
        settings,
        errors,
        warnings,
    }
}

/// Checks settings; returns warnings for values legal but below an RFC minimum, or the
/// first problem found.
pub fn validate(s: &Settings) -> Result<Vec<String>, ConfigError> {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    check_settings(s, &mut errors, &mut warnings);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(warnings.drain(..).map(|w| w.message).collect()),
    }
}

/// Every check of merged settings, each problem pushed to `errors`.
fn check_settings(s: &Settings, errors: &mut Vec<ConfigError>, warnings: &mut Vec<Warning>) {
    if s.wan.is_empty() {
        errors.push(ConfigError::EmptyName("wan"));
    }
    if s.lan.iter().any(String::is_empty) {
        errors.push(ConfigError::EmptyName("lan"));
    }
    if s.lan.is_empty() {
        errors.push(ConfigError::MissingLan);
    }
    if s.lan.len() > MAX_LAN_IFACES {
        errors.push(ConfigError::TooManyLans(s.lan.len()));
    }
    for (i, name) in s.lan.iter().enumerate() {
        if *name == s.wan {
            errors.push(ConfigError::WanIsLan(name.clone()));
        }
        if s.lan[..i].contains(name) {
            errors.push(ConfigError::DuplicateLan(name.clone()));
        }
    }
    if s.external.len() > MAX_EXTERNAL_ADDRS as usize {
        errors.push(ConfigError::TooManyExternal(s.external.len()));
    }
    for (i, addr) in s.external.iter().enumerate() {
        if s.external[..i].contains(addr) {
            errors.push(ConfigError::DuplicateExternal(*addr));
        }
    }
    if s.ha.keepalived && s.external.is_empty() {
        errors.push(ConfigError::HaWithoutExternal);
    }
    // Re-checked here because the range may come from code rather than parsing.
    if let Err(e) = PortRange::new(s.port_range.min, s.port_range.max) {
        errors.push(e.into());
    }
    let t = &s.timeouts;
    for (name, key, value, min, rfc) in [
        (
            "UDP",
            "timeouts.udp",
            t.udp,
            UDP_TIMEOUT_MIN,
            "RFC 4787 REQ-5",
        ),
        (
            "TCP established",
            "timeouts.tcp_established",
            t.tcp_established,
            TCP_ESTABLISHED_TIMEOUT_MIN,
            "RFC 5382 REQ-5",
        ),
        (
            "TCP transitory",
            "timeouts.tcp_transitory",
            t.tcp_transitory,
            TCP_TRANSITORY_TIMEOUT_MIN,
            "RFC 5382 REQ-5",
        ),
        (
            "ICMP",
            "timeouts.icmp",
            t.icmp,
            ICMP_TIMEOUT_MIN,
            "RFC 5508 REQ-2",
        ),
    ] {
        if value == 0 {
            errors.push(ConfigError::ZeroTimeout(name));
        } else if value < min {
            warnings.push(Warning {
                key,
                message: format!(
                    "the {name} timeout of {value} s is below the {min} s minimum of {rfc}; \
                     mappings will expire earlier than applications expect"
                ),
            });
        }
    }
    if s.max_mappings == 0 {
        errors.push(ConfigError::ZeroMaxMappings);
    }
    if s.gc_interval == 0 {
        errors.push(ConfigError::ZeroGcInterval);
    }
    if s.limits.new_mappings_per_sec != 0 && s.limits.new_mappings_burst == 0 {
        errors.push(ConfigError::ZeroMappingBurst);
    }
    if s.limits.port_hold_down != 0 && s.limits.port_hold_down < DEFAULT_PORT_HOLD_DOWN_SECS {
        warnings.push(Warning {
            key: "limits.port_hold_down",
            message: format!(
                "the port hold-down of {} s is below the {DEFAULT_PORT_HOLD_DOWN_SECS} s of \
                 RFC 6888 REQ-8; a port may reach another host while the old host's peers \
                 still send to it",
                s.limits.port_hold_down
            ),
        });
    }
    if let Err(e) = s.pcp.server.validate() {
        errors.push(e.into());
    }
    if s.pcp.server.allow_all_protocols {
        errors.push(ConfigError::AllProtocols);
    }
    validate_forwards(&s.forwards, errors);
    if let Some(b) = &s.blocks {
        let problems = b.check(&s.external, s.port_range);
        let fits = problems.is_empty();
        errors.extend(problems.into_iter().map(ConfigError::from));
        if fits {
            validate_block_forwards(s, b, errors);
        }
    }
    if let Err(e) = validate_stun(s) {
        errors.push(e);
    }
    if s.upnp.max_lease == 0 || s.upnp.max_lease > natgw_proto::upnp::description::MAX_LEASE {
        errors.push(ConfigError::UpnpMaxLease(s.upnp.max_lease));
    }
    if s.upnp.http_port == 0 {
        errors.push(ConfigError::UpnpHttpPortZero);
    }
    if let Some(problem) = ha::problem(&s.ha) {
        errors.push(ConfigError::Ha(problem));
    }
    if let Some(listen) = s.metrics.listen {
        if listen.port() == 0 {
            errors.push(ConfigError::MetricsPortZero(listen));
        }
        if listen.ip().is_unspecified() && !s.metrics.allow_wan {
            errors.push(ConfigError::MetricsUnspecified(listen));
        }
    }
}

/// The `[blocks]` table with the `--block-*` flags over it.
fn merge_blocks(
    flags: &BlockOverrides,
    file: Option<&blocks::BlockSettings>,
) -> Result<Option<blocks::BlockSettings>, ConfigError> {
    let any_flag = flags.space.is_some()
        || flags.size.is_some()
        || flags.shares.is_some()
        || !flags.owned.is_empty();
    if file.is_none() && !any_flag {
        return Ok(None);
    }
    let (Some(space), Some(size)) = (
        flags.space.or(file.map(|f| f.space)),
        flags.size.or(file.map(|f| f.size)),
    ) else {
        return Err(ConfigError::BlocksIncomplete);
    };
    Ok(Some(blocks::BlockSettings {
        space,
        size,
        shares: flags.shares.or(file.map(|f| f.shares)).unwrap_or(1),
        owned: if flags.owned.is_empty() {
            file.map(|f| f.owned.clone()).unwrap_or_default()
        } else {
            flags.owned.clone()
        },
    }))
}

/// In block mode a static forward's external port must lie in its host's block, and
/// the host in a share this gateway owns: the port is on that block's address.
fn validate_block_forwards(s: &Settings, b: &blocks::BlockSettings, errors: &mut Vec<ConfigError>) {
    let plan = b.plan(s.external.len(), s.port_range);
    for (index, f) in s.forwards.iter().enumerate() {
        let problem = match plan.owned_block_of(u32::from(*f.internal.ip()), s.port_range.min) {
            Err(natgw_common::blocks::NoBlock::Outside) => {
                "the internal host is outside the port blocks' internal space"
            }
            Err(natgw_common::blocks::NoBlock::NotOwned) => {
                "the internal host belongs to a share this gateway does not own"
            }
            Ok(block) if !(block.first..=block.last).contains(&f.external_port) => {
                "the external port is outside the internal host's port block (`natgw \
                 check-config` lists the blocks' shares; `natgw who` names a port's host)"
            }
            Ok(_) => continue,
        };
        errors.push(ConfigError::Forward {
            index,
            forward: *f,
            problem,
        });
    }
}

/// The STUN ports must be real, distinct, and not forwarded to an internal host.
fn validate_stun(s: &Settings) -> Result<(), ConfigError> {
    let stun = &s.stun;
    if !stun.enabled {
        return Ok(());
    }
    if stun.port == 0 || stun.alternate_port == 0 {
        return Err(ConfigError::StunPortZero);
    }
    if stun.port == stun.alternate_port {
        return Err(ConfigError::StunPortsEqual(stun.port));
    }
    // With one external address the alternate port is unused, but a forward of it
    // would break as soon as a second address is added.
    if let Some((index, f)) = s.forwards.iter().enumerate().find(|(_, f)| {
        f.protocol == ForwardProtocol::Udp
            && (f.external_port == stun.port || f.external_port == stun.alternate_port)
    }) {
        return Err(ConfigError::StunPortForwarded {
            port: f.external_port,
            index,
        });
    }
    Ok(())
}

/// Static forwards need real ports and must not collide with one another.
fn validate_forwards(forwards: &[Forward], errors: &mut Vec<ConfigError>) {
    for (i, f) in forwards.iter().enumerate() {
        let problem = if f.external_port == 0 {
            Some("external_port must be 1-65535")
        } else if f.internal.port() == 0 {
            Some("the internal port must be 1-65535")
        } else if f.internal.ip().is_unspecified() {
            Some("the internal address must be a host")
        } else if forwards[..i]
            .iter()
            .any(|g| g.protocol == f.protocol && g.external_port == f.external_port)
        {
            Some("another forward uses the same protocol and external port")
        } else if forwards[..i]
            .iter()
            .any(|g| g.protocol == f.protocol && g.internal == f.internal)
        {
            Some("another forward has the same protocol and internal endpoint")
        } else {
            None
        };
        if let Some(problem) = problem {
            errors.push(ConfigError::Forward {
                index: i,
                forward: *f,
                problem,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        parse_file(Path::new("/etc/natgw.toml"), text)
    }

    fn lan(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn port_range_parses_min_max() {
        assert_eq!(
            "1024-65535".parse::<PortRange>().unwrap(),
            PortRange::new(1024, 65535).unwrap()
        );
        assert_eq!(" 20000 - 20003 ".parse::<PortRange>().unwrap().len(), 4);
        assert_eq!("7-7".parse::<PortRange>().unwrap().len(), 1);
    }

    #[test]
    fn port_range_rejects_empty_inverted_zero_and_garbage() {
        assert_eq!("".parse::<PortRange>(), Err(PortRangeError::Empty));
        assert!(matches!(
            "2000-1000".parse::<PortRange>(),
            Err(PortRangeError::Inverted {
                min: 2000,
                max: 1000
            })
        ));
        assert!(matches!(
            "0-100".parse::<PortRange>(),
            Err(PortRangeError::Zero { .. })
        ));
        assert!(matches!(
            "1024".parse::<PortRange>(),
            Err(PortRangeError::Syntax(_))
        ));
        assert!(matches!(
            "1024-".parse::<PortRange>(),
            Err(PortRangeError::Syntax(_))
        ));
        assert!(matches!(
            "1024-70000".parse::<PortRange>(),
            Err(PortRangeError::NotAPort(p)) if p == "70000"
        ));
        assert!(matches!(
            "a-b".parse::<PortRange>(),
            Err(PortRangeError::NotAPort(_))
        ));
    }

    #[test]
    fn full_file_parses() {
        let f = parse(
            r#"
            wan = "eth0"
            lan = ["eth1", "eth2"]
            port_range = "20000-30000"
            inbound_refresh = true
            max_mappings = 1000
            xdp_mode = "skb"
            gc_interval = 2

            [timeouts]
            udp = 60
            tcp_established = 8000
            tcp_transitory = 300
            "#,
        )
        .unwrap();
        let (s, warnings) = resolve(&f, &Overrides::default()).unwrap();
        assert_eq!(s.wan, "eth0");
        assert_eq!(s.lan, lan(&["eth1", "eth2"]));
        assert_eq!(s.port_range, PortRange::new(20000, 30000).unwrap());
        assert_eq!(
            s.timeouts,
            Timeouts {
                udp: 60,
                tcp_established: 8000,
                tcp_transitory: 300,
                icmp: 60,
            }
        );
        assert!(s.inbound_refresh);
        assert_eq!(s.max_mappings, 1000);
        assert_eq!(s.xdp_mode, XdpModeChoice::Skb);
        assert_eq!(s.gc_interval, 2);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("UDP timeout of 60 s"));
        assert!(warnings[0].contains("RFC 4787 REQ-5"));
    }

    #[test]
    fn port_range_table_form_is_accepted() {
        let f = parse("port_range = { min = 4000, max = 4999 }").unwrap();
        assert_eq!(f.port_range, Some(PortRange::new(4000, 4999).unwrap()));
        let err = parse("port_range = { min = 5000, max = 4999 }").unwrap_err();
        assert!(err.to_string().contains("MIN is above MAX"), "{err}");
        let err = parse("port_range = { min = 5000, maxx = 4999 }").unwrap_err();
        assert!(err.to_string().contains("maxx"), "{err}");
    }

    #[test]
    fn port_min_and_max_keys_are_accepted() {
        let base = "wan = \"eth0\"\nlan = [\"eth1\"]\n";
        let f = parse(&format!("{base}port_min = 5000\nport_max = 6000\n")).unwrap();
        let (s, _) = resolve(&f, &Overrides::default()).unwrap();
        assert_eq!(s.port_range, PortRange::new(5000, 6000).unwrap());
        let f = parse(&format!("{base}port_min = 5000\n")).unwrap();
        let (s, _) = resolve(&f, &Overrides::default()).unwrap();
        assert_eq!(s.port_range, PortRange::new(5000, 65535).unwrap());
        let f = parse(&format!("{base}port_min = 7000\nport_max = 6000\n")).unwrap();
        assert!(matches!(
            resolve(&f, &Overrides::default()),
            Err(ConfigError::PortRange(PortRangeError::Inverted { .. }))
        ));
        let f = parse(&format!("{base}port_min = 0\n")).unwrap();
        assert!(matches!(
            resolve(&f, &Overrides::default()),
            Err(ConfigError::PortRange(PortRangeError::Zero { .. }))
        ));
        let f = parse(&format!("{base}port_range = \"1-2\"\nport_max = 6000\n")).unwrap();
        assert!(matches!(
            resolve(&f, &Overrides::default()),
            Err(ConfigError::PortRangeTwice)
        ));
    }

    #[test]
    fn line_numbers_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
        assert_eq!(line_of("é\nx", 3), 2);
    }

    #[test]
    fn defaults_come_from_the_rfcs() {
        let f = parse("wan = \"eth0\"\nlan = [\"eth1\"]").unwrap();
        let (s, warnings) = resolve(&f, &Overrides::default()).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(s.timeouts.udp, 300);
        assert_eq!(s.timeouts.tcp_established, 7440);
        assert_eq!(s.timeouts.tcp_transitory, 240);
        assert_eq!(s.port_range, PortRange::new(1024, 65535).unwrap());
        assert_eq!(s.max_mappings, DEFAULT_MAX_MAPPINGS);
        assert_eq!(s.gc_interval, 1);
        assert_eq!(s.xdp_mode, XdpModeChoice::Auto);
        assert!(!s.inbound_refresh);
        assert_eq!(s.timeouts.icmp, 60, "rfc5508 REQ-2");
        assert_eq!(s.filtering, FilteringModes::default());
        assert_eq!(s.filtering.udp, Filtering::EndpointIndependent);
        assert_eq!(s.unsolicited_syn, UnsolicitedSyn::Icmp, "rfc5382 REQ-4");
        assert_eq!(
            s.no_mapping_icmp,
            NoMappingIcmp::AdminProhibited,
            "rfc5508 REQ-8"
        );
        assert_eq!(s.limits.ports_per_host, 16_384, "rfc6888 REQ-4");
        assert_eq!(s.limits.new_mappings_per_sec, 1_000, "rfc6888 REQ-4c");
        assert_eq!(s.limits.new_mappings_burst, 1_000);
        assert_eq!(s.limits.port_hold_down, 120, "rfc6888 REQ-8");
        assert_eq!(
            s.limits.held_ports_capacity(s.max_mappings),
            s.max_mappings / 2
        );
    }

    #[test]
    fn filtering_table_takes_names_and_aliases() {
        let f = parse(
            "wan = \"eth0\"\nlan = [\"eth1\"]\nunsolicited_syn = \"drop\"\n\
             [filtering]\nudp = \"address-and-port-dependent\"\ntcp = \"adf\"\n\
             [timeouts]\nicmp = 90\n",
        )
        .unwrap();
        let (s, warnings) = resolve(&f, &Overrides::default()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            s.filtering,
            FilteringModes {
                udp: Filtering::AddressAndPortDependent,
                tcp: Filtering::AddressDependent,
                icmp: Filtering::EndpointIndependent,
            }
        );
        assert_eq!(s.timeouts.icmp, 90);
        assert_eq!(s.unsolicited_syn, UnsolicitedSyn::Drop);
        assert_eq!(s.filtering.udp.mode(), FilterMode::AddressAndPortDependent);
    }

    #[test]
    fn filtering_flags_override_the_file() {
        let f = parse("[filtering]\nudp = \"apdf\"\nicmp = \"adf\"\n").unwrap();
        let flags = Overrides {
            wan: Some("eth0".into()),
            lan: lan(&["eth1"]),
            udp_filtering: Some(Filtering::EndpointIndependent),
            tcp_filtering: Some(Filtering::AddressAndPortDependent),
            icmp_timeout: Some(120),
            unsolicited_syn: Some(UnsolicitedSyn::Drop),
            ..Overrides::default()
        };
        let (s, _) = resolve(&f, &flags).unwrap();
        assert_eq!(s.filtering.udp, Filtering::EndpointIndependent);
        assert_eq!(s.filtering.tcp, Filtering::AddressAndPortDependent);
        assert_eq!(s.filtering.icmp, Filtering::AddressDependent);
        assert_eq!(s.timeouts.icmp, 120);
        assert_eq!(s.unsolicited_syn, UnsolicitedSyn::Drop);
    }

    #[test]
    fn upnp_table_parses_and_is_on_by_default() {
        let base = "wan = \"eth0\"\nlan = [\"eth1\"]\n";
        let f = parse(base).unwrap();
        let (s, _) = resolve(&f, &Overrides::default()).unwrap();
        assert!(s.upnp.enabled, "on by default");
        assert!(!s.upnp.allow_other_hosts, "secure by default");
        assert_eq!(s.upnp.max_lease, 604_800);
        assert_eq!(s.upnp.requests_per_second, 10);
        let f = parse(&format!(
            "{base}[upnp]\nallow_other_hosts = true\nmax_lease = 3600\nrequests_per_second = 0\n"
        ))
        .unwrap();
        let (s, _) = resolve(&f, &Overrides::default()).unwrap();
        assert!(s.upnp.enabled && s.upnp.allow_other_hosts);
        let engine = s.upnp.engine();
        assert_eq!((engine.max_lease, engine.requests_per_second), (3600, 0));
        let f = parse(&format!("{base}[upnp]\nenabled = false\n")).unwrap();
        assert!(!resolve(&f, &Overrides::default()).unwrap().0.upnp.enabled);
        let flags = Overrides {
            no_upnp: true,
            ..Overrides::default()
        };
        assert!(
            !resolve(&parse(base).unwrap(), &flags)
                .unwrap()
                .0
                .upnp
                .enabled
        );
        for bad in ["max_lease = 0", "max_lease = 604801", "http_port = 0"] {
            let f = parse(&format!("{base}[upnp]\n{bad}\n")).unwrap();
            let err = resolve(&f, &Overrides::default()).unwrap_err().to_string();
            assert!(
                err.contains(&format!("upnp.{}", &bad[..bad.find(' ').unwrap()])),
                "{bad}: {err}"
            );
        }
        let f = parse(&format!("{base}[upnp]\nhttp_port = 5080\n")).unwrap();
        assert_eq!(
            resolve(&f, &Overrides::default()).unwrap().0.upnp.http_port,
            5080
        );
        let err = parse("[upnp]\nbogus = 1\n").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn allocation_log_targets_parse_and_the_flag_wins_over_the_file() {
        for (text, target) in [
            (
                "file:/var/log/natgw/a.log",
                AllocLogTarget::File("/var/log/natgw/a.log".into()),
            ),
            (
                "json:/tmp/a.jsonl",
                AllocLogTarget::Json("/tmp/a.jsonl".into()),
            ),
            ("syslog", AllocLogTarget::Syslog(SYSLOG_SOCKET.into())),
            (
                "syslog:/run/x.sock",
                AllocLogTarget::Syslog("/run/x.sock".into()),
            ),
        ] {
            assert_eq!(text.parse::<AllocLogTarget>(), Ok(target.clone()));
            assert_eq!(target.to_string(), text);
        }
        for bad in [
            "",
            "file:",
            "file:a.log",
            "/var/log/a.log",
            "syslog:",
            "udp:1.2.3.4",
        ] {
            assert!(bad.parse::<AllocLogTarget>().is_err(), "{bad}");
        }
        let base = "wan = \"eth0\"\nlan = [\"eth1\"]\n";
        let (s, _) = resolve(&parse(base).unwrap(), &Overrides::default()).unwrap();
        assert_eq!(s.log_allocations, None, "off by default");
        let f = parse(&format!("{base}log_allocations = \"json:/tmp/a.jsonl\"\n")).unwrap();
        let (s, _) = resolve(&f, &Overrides::default()).unwrap();
        assert_eq!(
            s.log_allocations,
            Some(AllocLogTarget::Json("/tmp/a.jsonl".into()))
        );
        let flags = Overrides {
            log_allocations: Some(AllocLogTarget::Syslog(SYSLOG_SOCKET.into())),
            ..Overrides::default()
        };
        let (s, _) = resolve(&f, &flags).unwrap();
        assert_eq!(s.log_allocations, flags.log_allocations);
        let err = parse(&format!("{base}log_allocations = \"a.log\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("file:/PATH"),
            "{err}"
        );
    }

    #[test]
    fn ha_needs_the_virtual_external_addresses() {
        let base = "wan = \"eth0\"\nlan = [\"eth1\"]\n";
        let (s, _) = resolve(&parse(base).unwrap(), &Overrides::default()).unwrap();
        assert!(!s.ha.keepalived, "off by default");
        let err = resolve(
            &parse(&format!("{base}[ha]\nkeepalived = true\n")).unwrap(),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::HaWithoutExternal), "{err}");
        assert_eq!(err.key().as_deref(), Some("ha.keepalived"));
        let flags = Overrides {
            ha: true,
            external: vec![Ipv4Addr::new(192, 0, 2, 10)],
            ..Overrides::default()
        };
        let (s, _) = resolve(&parse(base).unwrap(), &flags).unwrap();
        assert!(s.ha.keepalived);
    }

    #[test]
    fn metrics_are_off_by_default_and_come_from_flags_over_the_file() {
        let base = "wan = \"eth0\"\nlan = [\"eth1\"]\n";
        let (s, _) = resolve(&parse(base).unwrap(), &Overrides::default()).unwrap();
        assert_eq!(s.metrics, MetricsSettings::default());
        assert_eq!(s.metrics.listen, None, "off by default");
        let f = parse(&format!(
            "{base}[metrics]\nlisten = \"10.0.1.1:9100\"\nallow_wan = false\n"
        ))
        .unwrap();
        let (s, _) = resolve(&f, &Overrides::default()).unwrap();
        assert_eq!(s.metrics.listen, Some("10.0.1.1:9100".parse().unwrap()));
        assert!(!s.metrics.allow_wan);
        let flags = Overrides {
            metrics: Some("127.0.0.1:9200".parse().unwrap()),
            metrics_allow_wan: true,
            ..Overrides::default()
        };
        let (s, _) = resolve(&f, &flags).unwrap();
        assert_eq!(s.metrics.listen, Some("127.0.0.1:9200".parse().unwrap()));
        assert!(s.metrics.allow_wan, "the flag can only allow");
        let f = parse(&format!("{base}[metrics]\nallow_wan = true\n")).unwrap();
        let (s, _) = resolve(&f, &Overrides::default()).unwrap();
        assert!(s.metrics.allow_wan && s.metrics.listen.is_none());
    }

    #[test]
    fn bad_metrics_addresses_are_refused() {
        let base = "wan = \"eth0\"\nlan = [\"eth1\"]\n";
        let f = parse(&format!("{base}[metrics]\nlisten = \"0.0.0.0:9100\"\n")).unwrap();
        let err = resolve(&f, &Overrides::default()).unwrap_err().to_string();
        assert!(
            err.contains("0.0.0.0:9100") && err.contains("--metrics-allow-wan"),
            "{err}"
        );
        let f = parse(&format!(
            "{base}[metrics]\nlisten = \"0.0.0.0:9100\"\nallow_wan = true\n"
        ))
        .unwrap();
        assert!(resolve(&f, &Overrides::default()).is_ok(), "allowed");
        let f = parse(&format!("{base}[metrics]\nlisten = \"10.0.1.1:0\"\n")).unwrap();
        let err = resolve(&f, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("port 0"), "{err}");
        for bad in [
            "listen = \"10.0.1.1\"",
            "listen = \"[::1]:9100\"",
            "listen = 9100",
            "allow_wan = \"yes\"",
            "bogus = 1",
        ] {
            let err = parse(&format!("{base}[metrics]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("line 4"), "{bad}: {err}");
        }
    }

    #[test]
    fn pcp_table_and_forwards_parse_with_defaults() {
        let f = parse(
            "wan = \"eth0\"\nlan = [\"eth1\"]\n\
             [pcp]\nmax_mappings_per_host = 4\nrules = [\"allow 2000-3000 10.0.0.0/8 1-65535\"]\n\
             [[forward]]\nprotocol = \"tcp\"\nexternal_port = 8080\ninternal = \"10.0.1.2:80\"\n\
             [[forward]]\nprotocol = \"udp\"\nexternal_port = 9000\ninternal = \"10.0.1.3:9000\"\n",
        )
        .unwrap();
        let (s, _) = resolve(&f, &Overrides::default()).unwrap();
        assert!(s.pcp.enabled, "on by default");
        assert_eq!(s.pcp.server.max_mappings_per_host, 4);
        assert_eq!(
            s.pcp.server.max_lifetime, 86_400,
            "the rest keeps its default"
        );
        assert_eq!(
            s.pcp.server.rules[0].to_string(),
            "allow 2000-3000 10.0.0.0/8 1-65535"
        );
        assert_eq!(s.forwards.len(), 2);
        assert_eq!(s.forwards[0].protocol, ForwardProtocol::Tcp);
        assert_eq!(s.forwards[0].internal, "10.0.1.2:80".parse().unwrap());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Settings>(&json).unwrap(), s);
        // Off in the file, or with --no-pcp.
        let f = parse("wan = \"eth0\"\nlan = [\"eth1\"]\n[pcp]\nenabled = false\n").unwrap();
        assert!(!resolve(&f, &Overrides::default()).unwrap().0.pcp.enabled);
        let f = parse("wan = \"eth0\"\nlan = [\"eth1\"]\n").unwrap();
        let flags = Overrides {
            no_pcp: true,
            ..Overrides::default()
        };
        assert!(!resolve(&f, &flags).unwrap().0.pcp.enabled);
    }

    #[test]
    fn pcp_upstream_from_file_and_flag() {
        let base = "wan = \"eth0\"\nlan = [\"eth1\"]\n";
        let f = parse(base).unwrap();
        let s = resolve(&f, &Overrides::default()).unwrap().0;
        assert_eq!(s.pcp.upstream, PcpUpstream::Auto, "auto by default");
        let f = parse(&format!("{base}[pcp]\nupstream = \"off\"\n")).unwrap();
        assert_eq!(
            resolve(&f, &Overrides::default()).unwrap().0.pcp.upstream,
            PcpUpstream::Off
        );
        let f = parse(&format!("{base}[pcp]\nupstream = \"100.64.0.1\"\n")).unwrap();
        assert_eq!(
            resolve(&f, &Overrides::default()).unwrap().0.pcp.upstream,
            PcpUpstream::Server("100.64.0.1:5351".parse().unwrap())
        );
        let flags = Overrides {
            pcp_upstream: Some("10.0.0.1:5000".parse().unwrap()),
            ..Overrides::default()
        };
        assert_eq!(
            resolve(&f, &flags).unwrap().0.pcp.upstream,
            PcpUpstream::Server("10.0.0.1:5000".parse().unwrap()),
            "the flag wins"
        );
        let err = parse(&format!("{base}[pcp]\nupstream = \"maybe\"\n")).unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
    }

    #[test]
    fn bad_pcp_settings_and_forwards_are_refused_by_name() {
        let err = parse("[pcp]\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = parse("[pcp]\nenabled = \"yes\"\n").unwrap_err();
        assert!(err.to_string().contains("enabled"), "{err}");
        let err = parse(
            "[[forward]]\nprotocol = \"sctp\"\nexternal_port = 1\ninternal = \"10.0.0.1:1\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("sctp"), "{err}");
        let base = "wan = \"eth0\"\nlan = [\"eth1\"]\n";
        let refused = |extra: &str| {
            let f = parse(&format!("{base}{extra}")).unwrap();
            resolve(&f, &Overrides::default()).unwrap_err().to_string()
        };
        let err = refused("[pcp]\nmin_lifetime = 600\nmax_lifetime = 60\n");
        assert!(err.contains("pcp.min_lifetime 600"), "{err}");
        let err = refused("[pcp]\nallow_all_protocols = true\n");
        assert!(err.contains("allow_all_protocols"), "{err}");
        let fwd = |p: u16, int: &str| {
            format!("[[forward]]\nprotocol = \"udp\"\nexternal_port = {p}\ninternal = \"{int}\"\n")
        };
        let err = refused(&fwd(0, "10.0.1.2:5"));
        assert!(err.contains("external_port must be"), "{err}");
        let err = refused(&format!(
            "{}{}",
            fwd(9000, "10.0.1.2:5"),
            fwd(9000, "10.0.1.3:5")
        ));
        assert_eq!(
            err,
            "[[forward]] udp external port 9000 -> 10.0.1.3:5: another forward uses the \
             same protocol and external port"
        );
    }

    #[test]
    fn bad_filtering_values_and_keys_are_rejected() {
        let err = parse("[filtering]\nudp = \"strict\"\n").unwrap_err();
        assert!(err.to_string().contains("strict"), "{err}");
        let err = parse("[filtering]\nsctp = \"eif\"\n").unwrap_err();
        assert!(err.to_string().contains("sctp"), "{err}");
        let err = parse("unsolicited_syn = \"rst\"\n").unwrap_err();
        assert!(err.to_string().contains("rst"), "{err}");
    }

    #[test]
    fn short_icmp_timeout_warns_and_zero_is_refused() {
        let mut flags = Overrides {
            wan: Some("eth0".into()),
            lan: lan(&["eth1"]),
            icmp_timeout: Some(30),
            ..Overrides::default()
        };
        let (_, warnings) = resolve(&FileConfig::default(), &flags).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("ICMP timeout of 30 s"), "{warnings:?}");
        assert!(warnings[0].contains("RFC 5508 REQ-2"), "{warnings:?}");
        flags.icmp_timeout = Some(0);
        assert!(matches!(
            resolve(&FileConfig::default(), &flags),
            Err(ConfigError::ZeroTimeout("ICMP"))
        ));
    }

    #[test]
    fn settings_without_the_new_fields_still_read() {
        // A state file written before filtering existed.
        let flags = Overrides {
            wan: Some("eth0".into()),
            lan: lan(&["eth1"]),
            ..Overrides::default()
        };
        let (s, _) = resolve(&FileConfig::default(), &flags).unwrap();
        let mut v = serde_json::to_value(&s).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("filtering");
        obj.remove("unsolicited_syn");
        obj.remove("no_mapping_icmp");
        obj.remove("limits");
        obj["timeouts"].as_object_mut().unwrap().remove("icmp");
        assert_eq!(serde_json::from_value::<Settings>(v).unwrap(), s);
    }

    #[test]
    fn limits_come_from_flags_over_the_file() {
        // rfc6888 REQ-4a, REQ-4c, REQ-8: configurable; REQ-11b: the ICMP code
        let f = parse(
            "wan = \"eth0\"\nlan = [\"eth1\"]\nno_mapping_icmp = \"host-unreachable\"\n\
             [limits]\nports_per_host = 500\nnew_mappings_per_sec = 20\n\
             new_mappings_burst = 40\nport_hold_down = 300\nmax_held_ports = 9000\n",
        )
        .unwrap();
        let (s, warnings) = resolve(&f, &Overrides::default()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(s.no_mapping_icmp, NoMappingIcmp::HostUnreachable);
        assert_eq!(
            s.limits,
            Limits {
                ports_per_host: 500,
                new_mappings_per_sec: 20,
                new_mappings_burst: 40,
                port_hold_down: 300,
                max_held_ports: 9000,
            }
        );
        assert_eq!(s.limits.held_ports_capacity(65536), 9000);
        let flags = Overrides {
            ports_per_host: Some(0),
            new_mappings_per_sec: Some(0),
            port_hold_down: Some(30),
            no_mapping_icmp: Some(NoMappingIcmp::AdminProhibited),
            ..Overrides::default()
        };
        let (s, warnings) = resolve(&f, &flags).unwrap();
        assert_eq!(s.limits.ports_per_host, 0);
        assert_eq!(s.limits.new_mappings_per_sec, 0);
        assert_eq!(
            s.limits.new_mappings_burst, 40,
            "the file's, not overridden"
        );
        assert_eq!(s.no_mapping_icmp, NoMappingIcmp::AdminProhibited);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("RFC 6888 REQ-8"), "{warnings:?}");
        let flags = Overrides {
            new_mappings_burst: Some(0),
            ..Overrides::default()
        };
        assert!(matches!(
            resolve(&f, &flags),
            Err(ConfigError::ZeroMappingBurst)
        ));
        let err = parse("[limits]\nports = 5\n").unwrap_err();
        assert!(err.to_string().contains("`ports`"), "{err}");
        let err = parse("no_mapping_icmp = \"port-unreachable\"\n").unwrap_err();
        assert!(err.to_string().contains("port-unreachable"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name_file_and_line() {
        let err = parse("wan = \"eth0\"\nlan = [\"eth1\"]\nudp_timeout = 30\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("udp_timeout"), "{msg}");
        assert!(msg.contains("/etc/natgw.toml"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn unknown_key_in_timeouts_is_rejected() {
        let err = parse("[timeouts]\nudp = 30\ntcp = 5\n").unwrap_err();
        assert!(err.to_string().contains("`tcp`"), "{err}");
    }

    #[test]
    fn wrong_type_is_a_parse_error() {
        let err = parse("max_mappings = \"many\"").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let err = parse("xdp_mode = \"turbo\"").unwrap_err();
        assert!(err.to_string().contains("turbo"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let f = parse(
            "wan = \"eth0\"\nlan = [\"eth1\"]\nport_range = \"2000-3000\"\n\
             gc_interval = 5\n[timeouts]\nudp = 400\ntcp_transitory = 250\n",
        )
        .unwrap();
        let flags = Overrides {
            wan: Some("wan9".into()),
            lan: lan(&["lan8", "lan9"]),
            port_range: Some(PortRange::new(4000, 5000).unwrap()),
            udp_timeout: Some(500),
            inbound_refresh: true,
            max_mappings: Some(10),
            xdp_mode: Some(XdpModeChoice::Native),
            ..Overrides::default()
        };
        let (s, _) = resolve(&f, &flags).unwrap();
        assert_eq!(s.wan, "wan9");
        assert_eq!(s.lan, lan(&["lan8", "lan9"]));
        assert_eq!(s.port_range, PortRange::new(4000, 5000).unwrap());
        assert_eq!(s.timeouts.udp, 500);
        // Not overridden: the file's value, then the default.
        assert_eq!(s.timeouts.tcp_transitory, 250);
        assert_eq!(s.timeouts.tcp_established, 7440);
        assert_eq!(s.gc_interval, 5);
        assert!(s.inbound_refresh);
        assert_eq!(s.max_mappings, 10);
        assert_eq!(s.xdp_mode, XdpModeChoice::Native);
    }

    #[test]
    fn missing_interfaces_are_errors() {
        let none = FileConfig::default();
        assert!(matches!(
            resolve(&none, &Overrides::default()),
            Err(ConfigError::MissingWan)
        ));
        let flags = Overrides {
            wan: Some("eth0".into()),
            ..Overrides::default()
        };
        let err = resolve(&none, &flags).unwrap_err();
        assert!(matches!(err, ConfigError::MissingLan));
        assert!(err.to_string().contains("--lan"));
    }

    #[test]
    fn wan_equal_to_lan_and_duplicates_are_refused() {
        let flags = Overrides {
            wan: Some("eth0".into()),
            lan: lan(&["eth1", "eth0"]),
            ..Overrides::default()
        };
        let err = resolve(&FileConfig::default(), &flags).unwrap_err();
        assert_eq!(
            err.to_string(),
            "interface eth0 cannot be both the WAN and a LAN interface"
        );
        let flags = Overrides {
            wan: Some("eth0".into()),
            lan: lan(&["eth1", "eth1"]),
            ..Overrides::default()
        };
        assert!(matches!(
            resolve(&FileConfig::default(), &flags),
            Err(ConfigError::DuplicateLan(n)) if n == "eth1"
        ));
    }

    #[test]
    fn zero_values_are_refused() {
        let base = Overrides {
            wan: Some("eth0".into()),
            lan: lan(&["eth1"]),
            ..Overrides::default()
        };
        let with = |f: fn(&mut Overrides)| {
            let mut o = base.clone();
            f(&mut o);
            resolve(&FileConfig::default(), &o).unwrap_err()
        };
        assert!(matches!(
            with(|o| o.udp_timeout = Some(0)),
            ConfigError::ZeroTimeout("UDP")
        ));
        assert!(matches!(
            with(|o| o.tcp_established_timeout = Some(0)),
            ConfigError::ZeroTimeout("TCP established")
        ));
        assert!(matches!(
            with(|o| o.tcp_transitory_timeout = Some(0)),
            ConfigError::ZeroTimeout("TCP transitory")
        ));
        assert!(matches!(
            with(|o| o.max_mappings = Some(0)),
            ConfigError::ZeroMaxMappings
        ));
        assert!(matches!(
            with(|o| o.gc_interval = Some(0)),
            ConfigError::ZeroGcInterval
        ));
        let f = parse("port_range = \"0-10\"").unwrap_err();
        assert!(f.to_string().contains("port 0"), "{f}");
    }

    #[test]
    fn short_timeouts_warn_but_work() {
        let flags = Overrides {
            wan: Some("eth0".into()),
            lan: lan(&["eth1"]),
            udp_timeout: Some(2),
            tcp_established_timeout: Some(3),
            tcp_transitory_timeout: Some(1),
            ..Overrides::default()
        };
        let (s, warnings) = resolve(&FileConfig::default(), &flags).unwrap();
        assert_eq!(s.timeouts.udp, 2);
        assert_eq!(warnings.len(), 3);
        assert!(warnings[1].contains("RFC 5382 REQ-5"));
    }

    #[test]
    fn settings_round_trip_through_json() {
        let flags = Overrides {
            wan: Some("eth0".into()),
            lan: lan(&["eth1"]),
            ..Overrides::default()
        };
        let (s, _) = resolve(&FileConfig::default(), &flags).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"port_range\":{\"min\":1024,\"max\":65535}"));
        assert!(json.contains("\"xdp_mode\":\"auto\""));
        assert!(
            json.contains("\"filtering\":{\"udp\":\"endpoint-independent\""),
            "{json}"
        );
        assert!(json.contains("\"unsolicited_syn\":\"icmp\""), "{json}");
        assert_eq!(serde_json::from_str::<Settings>(&json).unwrap(), s);
    }

    #[test]
    fn stun_settings_default_to_3478_and_come_from_flags_over_the_file() {
        // rfc8489 §18.6: the STUN port; rfc5780: the alternate port
        let f = parse("wan = \"eth0\"\nlan = [\"eth1\"]\n").unwrap();
        let (s, _) = resolve(&f, &Overrides::default()).unwrap();
        assert_eq!(
            s.stun,
            StunSettings {
                enabled: true,
                port: 3478,
                alternate_port: 3479
            }
        );
        let f =
            parse("wan = \"eth0\"\nlan = [\"eth1\"]\n[stun]\nport = 4000\nalternate_port = 4001\n")
                .unwrap();
        let (s, _) = resolve(&f, &Overrides::default()).unwrap();
        assert_eq!((s.stun.port, s.stun.alternate_port), (4000, 4001));
        let flags = Overrides {
            stun_port: Some(5000),
            ..Overrides::default()
        };
        let (s, _) = resolve(&f, &flags).unwrap();
        assert_eq!((s.stun.port, s.stun.alternate_port), (5000, 4001));
        let off = Overrides {
            no_stun: true,
            ..Overrides::default()
        };
        assert!(!resolve(&f, &off).unwrap().0.stun.enabled);
        let f = parse("wan = \"eth0\"\nlan = [\"eth1\"]\n[stun]\nenabled = false\n").unwrap();
        assert!(!resolve(&f, &Overrides::default()).unwrap().0.stun.enabled);
    }

    #[test]
    fn bad_stun_settings_are_refused() {
        let base = "wan = \"eth0\"\nlan = [\"eth1\"]\n";
        let err = parse(&format!(
            "{base}[stun]\nport = 3478\nalternate_port = 3478\n"
        ))
        .and_then(|f| resolve(&f, &Overrides::default()).map(drop))
        .unwrap_err();
        assert!(matches!(err, ConfigError::StunPortsEqual(3478)), "{err}");
        let err = parse(&format!("{base}[stun]\nport = 0\n"))
            .and_then(|f| resolve(&f, &Overrides::default()).map(drop))
            .unwrap_err();
        assert!(matches!(err, ConfigError::StunPortZero), "{err}");
        let err = parse(&format!("{base}[stun]\nprot = 1\n")).unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
        let forward = format!(
            "{base}[[forward]]\nprotocol = \"udp\"\nexternal_port = 3478\n\
             internal = \"10.0.1.2:3478\"\n"
        );
        let err = parse(&forward)
            .and_then(|f| resolve(&f, &Overrides::default()).map(drop))
            .unwrap_err();
        assert!(err.to_string().contains("--stun-port"), "{err}");
        // Without the responder the forward is fine.
        let off = Overrides {
            no_stun: true,
            ..Overrides::default()
        };
        assert!(resolve(&parse(&forward).unwrap(), &off).is_ok());
    }

    #[test]
    fn external_pool_comes_from_flags_over_the_file() {
        // rfc4787 REQ-2: the pool natgw pairs internal hosts with.
        let f =
            parse("wan = \"eth0\"\nlan = [\"eth1\"]\nexternal = [\"192.0.2.1\", \"192.0.2.2\"]\n")
                .unwrap();
        let (s, _) = resolve(&f, &Overrides::default()).unwrap();
        assert_eq!(
            s.external,
            [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)]
        );
        let flags = Overrides {
            external: vec![Ipv4Addr::new(192, 0, 2, 9)],
            ..Overrides::default()
        };
        let (s, _) = resolve(&f, &flags).unwrap();
        assert_eq!(s.external, [Ipv4Addr::new(192, 0, 2, 9)]);
        // Not given: empty, meaning the WAN's first address.
        let f = parse("wan = \"eth0\"\nlan = [\"eth1\"]\n").unwrap();
        assert!(resolve(&f, &Overrides::default())
            .unwrap()
            .0
            .external
            .is_empty());
    }

    #[test]
    fn external_pool_refuses_duplicates_too_many_and_non_addresses() {
        let base = Overrides {
            wan: Some("eth0".into()),
            lan: lan(&["eth1"]),
            ..Overrides::default()
        };
        let dup = Overrides {
            external: vec![
                Ipv4Addr::new(192, 0, 2, 1),
                Ipv4Addr::new(192, 0, 2, 2),
                Ipv4Addr::new(192, 0, 2, 1),
            ],
            ..base.clone()
        };
        let err = resolve(&FileConfig::default(), &dup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "external address 192.0.2.1 is listed twice"
        );
        let many = Overrides {
            external: (1..=17).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect(),
            ..base.clone()
        };
        let err = resolve(&FileConfig::default(), &many).unwrap_err();
        assert!(matches!(err, ConfigError::TooManyExternal(17)), "{err}");
        assert!(err.to_string().contains("at most 16"), "{err}");
        let sixteen = Overrides {
            external: (1..=16).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect(),
            ..base
        };
        assert!(resolve(&FileConfig::default(), &sixteen).is_ok());
        let err = parse("external = [\"192.0.2.300\"]\n").unwrap_err();
        assert!(
            matches!(err, ConfigError::Parse { line: Some(1), .. }),
            "{err}"
        );
        let err = parse("external = \"192.0.2.1\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    /// The `/etc/natgw/natgw.toml` the .deb installs (`cargo xtask package`).
    const PACKAGED: &str = include_str!("../../packaging/natgw.toml");

    /// The packaged file with every `#key = value` and `#[table]` line uncommented.
    fn packaged_uncommented() -> String {
        PACKAGED
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn packaged_config_parses_and_its_commented_values_are_the_defaults() {
        let flags = Overrides {
            wan: Some("eth0".to_owned()),
            lan: lan(&["eth1"]),
            ..Overrides::default()
        };
        let defaults = resolve(&FileConfig::default(), &flags).unwrap().0;

        let shipped = parse(PACKAGED).unwrap();
        assert!(
            shipped.wan.is_none() && shipped.timeouts.is_none(),
            "all commented out"
        );
        assert_eq!(resolve(&shipped, &flags).unwrap().0, defaults);

        // Every commented value is natgw's default: uncommenting one changes nothing.
        let uncommented = parse(&packaged_uncommented()).unwrap();
        assert_eq!(uncommented.wan.as_deref(), Some("eth0"));
        for (table, present) in [
            ("timeouts", uncommented.timeouts.is_some()),
            ("limits", uncommented.limits.is_some()),
            ("filtering", uncommented.filtering.is_some()),
            ("stun", uncommented.stun.is_some()),
            ("pcp", uncommented.pcp.is_some()),
            ("upnp", uncommented.upnp.is_some()),
            ("metrics", uncommented.metrics.is_some()),
        ] {
            assert!(present, "[{table}] is not in the packaged file");
        }
        assert_eq!(
            uncommented.pcp.as_ref().map(|p| &p.server),
            Some(&PcpConfig::default())
        );
        assert_eq!(resolve(&uncommented, &flags).unwrap().0, defaults);
    }
}
