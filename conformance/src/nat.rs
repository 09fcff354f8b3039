//! The NAT under test and the testbed a check runs in: [`NatUnderTest`] names the
//! implementation (natgw, or the Linux kernel's own NAT configured with nftables
//! `masquerade`), [`NatConfig`] states what a check needs from it (a filtering mode,
//! a port range, a second external address, short timeouts), and [`Env::start`]
//! builds a fresh testbed with that NAT in the gateway namespace — or says why the
//! implementation cannot be configured that way.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use testbed::{natgw_bin, Natgw, Netns, Testbed, GW_WAN_ADDR};

use super::Stop;

/// The second external address of checks that need two (RFC 4787 REQ-2), added to
/// `wan0` by the check.
pub const SECOND_EXTERNAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// Which NAT a check runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatUnderTest {
    /// `natgw run --wan wan0 --lan lan0 --lan lan1 EXTRA... CHECK-SPECIFIC...`.
    Natgw {
        /// Arguments added to every `natgw run` (e.g. `--xdp-mode skb`).
        extra_args: Vec<String>,
    },
    /// The kernel's NAT: an nftables `masquerade` rule on `wan0` (conntrack does the
    /// rest), configured through nft and the `nf_conntrack_*` sysctls of the gateway
    /// namespace.
    NftMasquerade,
}

impl NatUnderTest {
    /// natgw with no extra arguments.
    #[must_use]
    pub fn natgw() -> Self {
        Self::Natgw {
            extra_args: Vec::new(),
        }
    }

    /// Short name for tables: `natgw` or `nftables`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Natgw { .. } => "natgw",
            Self::NftMasquerade => "nftables",
        }
    }
}

/// Inbound filtering behaviour (RFC 4787 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtering {
    /// Anyone may send to a mapping (EIF).
    EndpointIndependent,
    /// Only addresses the internal endpoint has sent to (ADF).
    AddressDependent,
    /// Only address-and-port pairs the internal endpoint has sent to (APDF).
    AddressAndPortDependent,
}

impl Filtering {
    /// The value natgw's `--udp-filtering` / `--tcp-filtering` take.
    #[must_use]
    pub fn flag_value(self) -> &'static str {
        match self {
            Self::EndpointIndependent => "endpoint-independent",
            Self::AddressDependent => "address-dependent",
            Self::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

impl fmt::Display for Filtering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EndpointIndependent => "EIF",
            Self::AddressDependent => "ADF",
            Self::AddressAndPortDependent => "APDF",
        })
    }
}

/// What a check needs from the NAT; everything left at its default is the NAT's
/// default.
#[derive(Debug, Clone, Default)]
pub struct NatConfig {
    /// UDP filtering mode.
    pub udp_filtering: Option<Filtering>,
    /// TCP filtering mode.
    pub tcp_filtering: Option<Filtering>,
    /// External port range.
    pub port_range: Option<(u16, u16)>,
    /// Also use [`SECOND_EXTERNAL`] (paired pooling).
    pub second_external: bool,
    /// UDP idle timeout in seconds.
    pub udp_timeout: Option<u64>,
    /// Established TCP idle timeout in seconds.
    pub tcp_established_timeout: Option<u64>,
    /// Transitory TCP idle timeout in seconds.
    pub tcp_transitory_timeout: Option<u64>,
    /// ICMP query session timeout in seconds.
    pub icmp_timeout: Option<u64>,
    /// Whether inbound packets refresh mappings.
    pub inbound_refresh: Option<bool>,
    /// MTU of the gateway's `wan0`, set before the NAT starts.
    pub wan_mtu: Option<u32>,
    /// Most external ports per internal host and protocol (RFC 6888 REQ-4).
    pub ports_per_host: Option<u32>,
    /// New mappings per second and burst per internal host (RFC 6888 REQ-4c).
    pub mapping_rate: Option<(u32, u32)>,
    /// Seconds a freed port is held from other hosts (RFC 6888 REQ-8).
    pub port_hold_down: Option<u64>,
    /// Answer packets that get no mapping with ICMP host unreachable (RFC 6888
    /// REQ-11) instead of the NAT's default.
    pub no_mapping_host_unreachable: bool,
}

/// A testbed with the NAT under test running on its gateway. Dropping it stops the
/// NAT, then removes every namespace.
pub struct Env {
    /// natgw, when it is the NAT under test (declared first: stopped before the
    /// testbed's namespaces go).
    natgw: Option<Natgw>,
    /// The topology.
    pub tb: Testbed,
    /// The NAT's (first) external address.
    pub external: Ipv4Addr,
}

impl Env {
    /// Builds a testbed and starts `nat` configured as `cfg` asks.
    ///
    /// # Errors
    /// [`Stop::NotApplicable`] when `nat` cannot be configured that way,
    /// [`Stop::Error`] when the testbed or the NAT does not come up.
    pub fn start(nat: &NatUnderTest, cfg: &NatConfig) -> Result<Self, Stop> {
        if let NatUnderTest::NftMasquerade = nat {
            nft_supports(cfg)?;
        }
        let tb = Self::testbed(cfg)?;
        let natgw = match nat {
            NatUnderTest::Natgw { extra_args } => {
                let natgw = Natgw::builder(natgw_bin())
                    .args(extra_args)
                    .args(natgw_args(cfg))
                    .start(&tb.gateway.ns)
                    .map_err(|e| Stop::Error(brief(&e.to_string())))?;
                Some(natgw)
            }
            NatUnderTest::NftMasquerade => {
                nft_start(&tb.gateway.ns, cfg)?;
                None
            }
        };
        Ok(Self {
            natgw,
            tb,
            external: GW_WAN_ADDR,
        })
    }

    /// A testbed prepared for the checks, with no NAT started: hosts answer every
    /// probe (no ICMP rate limit), may open ping sockets, and the gateway has the
    /// extra address and MTU `cfg` asks for.
    ///
    /// # Errors
    /// When the testbed cannot be built or configured.
    pub fn testbed(cfg: &NatConfig) -> Result<Testbed, Stop> {
        let tb = Testbed::new()
            .map_err(|e| Stop::Error(format!("building the testbed: {}", e.chain())))?;
        let hosts = tb.lan.iter().chain(&tb.wan).map(|h| &h.ns);
        for ns in hosts.chain(std::iter::once(&tb.inet)) {
            // Replies to probes are what the checks observe: a rate limit would make
            // them depend on timing.
            set_sysctl(ns, "net/ipv4/icmp_ratelimit", "0")?;
            set_sysctl(ns, "net/ipv4/icmp_msgs_per_sec", "100000")?;
            set_sysctl(ns, "net/ipv4/ping_group_range", "0 2147483647")?;
        }
        if cfg.second_external {
            ip(
                &tb.gateway.ns,
                &[
                    "addr",
                    "add",
                    &format!("{SECOND_EXTERNAL}/24"),
                    "dev",
                    "wan0",
                ],
            )?;
        }
        if let Some(mtu) = cfg.wan_mtu {
            ip(
                &tb.gateway.ns,
                &["link", "set", "dev", "wan0", "mtu", &mtu.to_string()],
            )?;
        }
        Ok(tb)
    }

    /// natgw, when it is the NAT under test.
    #[must_use]
    pub fn natgw(&self) -> Option<&Natgw> {
        self.natgw.as_ref()
    }

    /// lan-a's namespace.
    #[must_use]
    pub fn lan_a(&self) -> &Netns {
        &self.tb.lan[0].ns
    }

    /// lan-b's namespace.
    #[must_use]
    pub fn lan_b(&self) -> &Netns {
        &self.tb.lan[1].ns
    }

    /// wan-a's namespace.
    #[must_use]
    pub fn wan_a(&self) -> &Netns {
        &self.tb.wan[0].ns
    }

    /// wan-b's namespace.
    #[must_use]
    pub fn wan_b(&self) -> &Netns {
        &self.tb.wan[1].ns
    }

    /// The NAT's record of the TCP session of `internal`: natgw's mapping table or
    /// the kernel's conntrack table.
    ///
    /// # Panics
    /// When natgw's mapping table cannot be read (the check then fails with the
    /// reason).
    #[must_use]
    pub fn tcp_session(&self, internal: SocketAddrV4) -> Option<Session> {
        match &self.natgw {
            Some(natgw) => {
                let m = natgw
                    .mapping_of("tcp", internal)
                    .unwrap_or_else(|e| panic!("{e}"))?;
                Some(Session {
                    state: m["tcp_state"].as_str().unwrap_or("?").to_owned(),
                    timeout_s: m["timeout_s"].as_u64(),
                    remaining_s: m["remaining_ms"].as_u64().map(|ms| ms / 1000),
                })
            }
            None => conntrack_tcp(&self.tb.gateway.ns, internal),
        }
    }

    /// A setting of the NAT's default configuration: natgw's `status --json` config
    /// at `path` (e.g. `["timeouts", "udp"]`).
    ///
    /// # Panics
    /// When `natgw status` fails (the check then fails with the reason).
    #[must_use]
    pub fn natgw_config(&self, path: &[&str]) -> Option<Value> {
        let status = self
            .natgw
            .as_ref()?
            .status()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut v = &status["config"];
        for key in path {
            v = v.get(key)?;
        }
        Some(v.clone())
    }

    /// A sysctl of the gateway namespace (the kernel NAT's settings).
    #[must_use]
    pub fn gateway_sysctl(&self, key: &str) -> Option<String> {
        self.tb.gateway.ns.sysctl(key).ok()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A natgw slow to stop (a loaded machine) is killed by `Natgw::stop`: that says
        // nothing about the requirement a check looked at, so the error is dropped.
        if let Some(mut natgw) = self.natgw.take() {
            let _ = natgw.stop();
        }
    }
}

/// A TCP session as the NAT lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// natgw's `tcp_state` or conntrack's state name.
    pub state: String,
    /// Idle timeout that applies now.
    pub timeout_s: Option<u64>,
    /// Time left before it may be removed.
    pub remaining_s: Option<u64>,
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state {}", self.state)?;
        if let Some(t) = self.timeout_s {
            write!(f, ", timeout {t} s")?;
        }
        if let Some(r) = self.remaining_s {
            write!(f, ", {r} s left")?;
        }
        Ok(())
    }
}

/// The first line of a start-up failure and the last lines of natgw's log: enough to
/// say why, short enough for a table cell.
fn brief(error: &str) -> String {
    let mut lines = error.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or_default();
    let rest: Vec<&str> = lines.collect();
    let tail = &rest[rest.len().saturating_sub(2)..];
    let mut s = first.to_owned();
    for l in tail {
        s.push_str(" / ");
        s.push_str(l.chars().take(300).collect::<String>().as_str());
    }
    s
}

fn set_sysctl(ns: &Netns, key: &str, value: &str) -> Result<(), Stop> {
    ns.set_sysctl(key, value)
        .map_err(|e| Stop::Error(format!("sysctl {key}={value}: {}", e.chain())))
}

fn ip(ns: &Netns, args: &[&str]) -> Result<(), Stop> {
    let out = ns
        .command("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Stop::Error(format!("running ip {}: {e}", args.join(" "))))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Stop::Error(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether `natgw run --help` lists `flag` (flags the data-path work adds).
fn natgw_has_flag(flag: &str) -> bool {
    std::process::Command::new(natgw_bin())
        .args(["run", "--help"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
}

/// The `natgw run` arguments for `cfg`.
fn natgw_args(cfg: &NatConfig) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |flag: &str, value: String| {
        a.push(flag.to_owned());
        a.push(value);
    };
    if let Some(f) = cfg.udp_filtering {
        push("--udp-filtering", f.flag_value().to_owned());
    }
    if let Some(f) = cfg.tcp_filtering {
        push("--tcp-filtering", f.flag_value().to_owned());
    }
    if let Some((min, max)) = cfg.port_range {
        push("--port-range", format!("{min}-{max}"));
    }
    if cfg.second_external {
        push("--external", GW_WAN_ADDR.to_string());
        push("--external", SECOND_EXTERNAL.to_string());
    }
    if let Some(t) = cfg.udp_timeout {
        push("--udp-timeout", t.to_string());
    }
    if let Some(t) = cfg.tcp_established_timeout {
        push("--tcp-established-timeout", t.to_string());
    }
    if let Some(t) = cfg.tcp_transitory_timeout {
        push("--tcp-transitory-timeout", t.to_string());
    }
    if let Some(t) = cfg.icmp_timeout {
        // The README's configuration reference: the UDP timeout governs "UDP and
        // other protocols" until natgw grows an ICMP-specific one.
        let flag = if natgw_has_flag("--icmp-timeout") {
            "--icmp-timeout"
        } else {
            "--udp-timeout"
        };
        push(flag, t.to_string());
    }
    if let Some(n) = cfg.ports_per_host {
        push("--max-ports-per-host", n.to_string());
    }
    if let Some((rate, burst)) = cfg.mapping_rate {
        push("--host-mapping-rate", rate.to_string());
        push("--host-mapping-burst", burst.to_string());
    }
    if let Some(t) = cfg.port_hold_down {
        push("--port-hold-down", t.to_string());
    }
    if cfg.no_mapping_host_unreachable {
        push("--no-mapping-icmp", "host-unreachable".to_owned());
    }
    if cfg.inbound_refresh == Some(true) {
        a.push("--inbound-refresh".to_owned());
    }
    a
}

/// Refuses what nftables masquerade cannot express, with the reason.
fn nft_supports(cfg: &NatConfig) -> Result<(), Stop> {
    for (proto, f) in [("UDP", cfg.udp_filtering), ("TCP", cfg.tcp_filtering)] {
        if let Some(f) = f.filter(|f| *f != Filtering::AddressAndPortDependent) {
            return Err(Stop::NotApplicable(format!(
                "masquerade has no {f} mode for {proto}: conntrack admits only replies from the \
                 exact remote endpoint (APDF)"
            )));
        }
    }
    if cfg.inbound_refresh == Some(false) {
        return Err(Stop::NotApplicable(
            "conntrack refreshes an entry on every packet, inbound too; not configurable"
                .to_owned(),
        ));
    }
    if cfg.ports_per_host.is_some() || cfg.mapping_rate.is_some() {
        return Err(Stop::NotApplicable(
            "masquerade has no per-host limit of ports or of new mappings (an nft meter with \
             `ct count` or `limit rate` per source could approximate one; that is a firewall \
             rule, not the NAT's setting)"
                .to_owned(),
        ));
    }
    if cfg.port_hold_down.is_some() || cfg.no_mapping_host_unreachable {
        return Err(Stop::NotApplicable(
            "masquerade has no port hold-down and no ICMP error to choose".to_owned(),
        ));
    }
    Ok(())
}

/// The nftables rule set for `cfg`.
fn nft_ruleset(cfg: &NatConfig) -> String {
    let target = if cfg.second_external {
        // The closest to paired pooling: `persistent` picks the address from the
        // source address alone.
        format!("snat ip to {GW_WAN_ADDR}-{SECOND_EXTERNAL}")
    } else {
        "masquerade".to_owned()
    };
    let persistent = if cfg.second_external {
        " persistent"
    } else {
        ""
    };
    let rules = match cfg.port_range {
        // Linux's default is the whole range, with its own range classes.
        Some((min, max)) if (min, max) != (1, 65535) => {
            let ports_to = if cfg.second_external { ":" } else { " to :" };
            format!(
                "oifname \"wan0\" meta l4proto {{ tcp, udp }} \
                 {target}{ports_to}{min}-{max}{persistent}\n    \
                 oifname \"wan0\" {target}{persistent}"
            )
        }
        _ => format!("oifname \"wan0\" {target}{persistent}"),
    };
    format!(
        "table ip natgw_conformance {{\n  chain postrouting {{\n    type nat hook postrouting \
         priority srcnat; policy accept;\n    {rules}\n  }}\n}}\n"
    )
}

/// Loads the rule set into the gateway namespace and sets conntrack's timeouts.
fn nft_start(ns: &Netns, cfg: &NatConfig) -> Result<(), Stop> {
    use std::io::Write as _;
    let ruleset = nft_ruleset(cfg);
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Stop::Error(format!("running nft (package nftables): {e}")))?;
    child
        .stdin
        .take()
        .ok_or_else(|| Stop::Error("nft stdin".to_owned()))?
        .write_all(ruleset.as_bytes())
        .map_err(|e| Stop::Error(format!("writing to nft: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| Stop::Error(format!("waiting for nft: {e}")))?;
    if !out.status.success() {
        return Err(Stop::Error(format!(
            "nft -f - refused\n{ruleset}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let ct = |name: &str, secs: u64| {
        set_sysctl(
            ns,
            &format!("net/netfilter/nf_conntrack_{name}"),
            &secs.to_string(),
        )
    };
    if let Some(t) = cfg.udp_timeout {
        ct("udp_timeout", t)?;
        ct("udp_timeout_stream", t)?;
    }
    if let Some(t) = cfg.tcp_established_timeout {
        ct("tcp_timeout_established", t)?;
    }
    if let Some(t) = cfg.tcp_transitory_timeout {
        for state in TRANSITORY_STATES {
            ct(&format!("tcp_timeout_{state}"), t)?;
        }
    }
    if let Some(t) = cfg.icmp_timeout {
        ct("icmp_timeout", t)?;
    }
    Ok(())
}

/// conntrack's TCP states other than ESTABLISHED: the "transitory" ones of RFC 5382.
pub const TRANSITORY_STATES: [&str; 7] = [
    "syn_sent",
    "syn_recv",
    "fin_wait",
    "close_wait",
    "last_ack",
    "time_wait",
    "close",
];

/// The conntrack entry whose original source is `internal`, from `conntrack -L`.
fn conntrack_tcp(ns: &Netns, internal: SocketAddrV4) -> Option<Session> {
    let out = ns
        .command("conntrack")
        .args(["-L", "-p", "tcp", "--orig-src"])
        .arg(internal.ip().to_string())
        .args(["--sport", &internal.port().to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    // tcp      6 431999 ESTABLISHED src=10.0.1.2 dst=... sport=... dport=... ...
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("tcp"))?;
    let mut fields = line.split_whitespace().skip(2);
    let remaining = fields.next()?.parse().ok();
    let state = fields.next()?.to_owned();
    Some(Session {
        state,
        timeout_s: None,
        remaining_s: remaining,
    })
}

/// Waits `d` (named so the checks read as timelines).
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_ruleset_expresses_port_range_and_pooling() {
        let plain = nft_ruleset(&NatConfig::default());
        assert!(plain.contains("oifname \"wan0\" masquerade\n"), "{plain}");
        let ranged = nft_ruleset(&NatConfig {
            port_range: Some((20000, 20001)),
            ..NatConfig::default()
        });
        assert!(ranged.contains("masquerade to :20000-20001"), "{ranged}");
        let pooled = nft_ruleset(&NatConfig {
            second_external: true,
            ..NatConfig::default()
        });
        assert!(
            pooled.contains("snat ip to 192.0.2.1-192.0.2.2 persistent"),
            "{pooled}"
        );
    }

    #[test]
    fn nft_refuses_filtering_modes_it_lacks() {
        let cfg = NatConfig {
            udp_filtering: Some(Filtering::AddressDependent),
            ..NatConfig::default()
        };
        assert!(matches!(nft_supports(&cfg), Err(Stop::NotApplicable(_))));
        let cfg = NatConfig {
            tcp_filtering: Some(Filtering::AddressAndPortDependent),
            ..NatConfig::default()
        };
        assert!(nft_supports(&cfg).is_ok());
    }
}
