//! RFC 6888 (BCP 127): what a carrier-grade NAT adds — paired pooling and
//! endpoint-independent filtering by default, per-host limits on external ports and
//! on the rate of new mappings, a hold-down before a freed port goes to another host,
//! an explicit-mapping protocol (PCP), and what happens when no mapping can be made
//! (drop, ICMP host unreachable, no eviction).
//!
//! The requirements that need no traffic to judge (REQ-1: the rest of this suite;
//! REQ-3, REQ-5, REQ-6, REQ-10, REQ-12 to REQ-15: configuration and logging) are
//! discussed in docs/conformance.md rather than checked here.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::flows::{
    self, ep, show, udp, udp_blocked, udp_through, EXT, LAN_A, LAN_B, WAN_A, WAN_B,
};
use super::nat::{pause, NatConfig, NatUnderTest};
use super::packet::{icmp_type, unreachable};
use super::sock::{self, Ping, Raw};
use super::{Check, Env, Record, Step as _, Stop};

/// The RFC 6888 checks.
#[must_use]
pub fn checks() -> Vec<Check> {
    vec![
        Check {
            id: "RFC 6888 REQ-2",
            test: "rfc6888_req_2_paired_pooling_by_default",
            title: "paired address pooling by default",
            run: req_2,
        },
        Check {
            id: "RFC 6888 REQ-4",
            test: "rfc6888_req_4_external_ports_limited_per_host",
            title: "external ports (and ICMP identifiers) limited per host, per protocol",
            run: req_4,
        },
        Check {
            id: "RFC 6888 REQ-4c",
            test: "rfc6888_req_4c_new_mappings_rate_limited_per_host",
            title: "the rate of new mappings limited per host",
            run: req_4c,
        },
        Check {
            id: "RFC 6888 REQ-7",
            test: "rfc6888_req_7_endpoint_independent_filtering_by_default",
            title: "endpoint-independent filtering by default",
            run: req_7,
        },
        Check {
            id: "RFC 6888 REQ-8",
            test: "rfc6888_req_8_freed_port_held_from_other_hosts",
            title:
                "a freed port goes to no other host for 120 s (configurable); its host may reuse it",
            run: req_8,
        },
        Check {
            id: "RFC 6888 REQ-9",
            test: "rfc6888_req_9_pcp_creates_explicit_mappings",
            title: "explicit mappings by PCP",
            run: req_9,
        },
        Check {
            id: "RFC 6888 REQ-11",
            test: "rfc6888_req_11_no_mapping_drop_host_unreachable_no_eviction",
            title: "no mapping possible: drop, ICMP host unreachable, no mapping evicted",
            run: req_11,
        },
    ]
}

fn req_2(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc6888 REQ-2: the RFC 4787 REQ-2 check runs with the NAT's default pooling.
    r.sent("default pooling behaviour (nothing configured but the two addresses)");
    super::rfc4787::paired_pooling(nat, r)
}

/// The most ports per protocol lan-a may hold in [`req_4`].
const PORT_LIMIT: u32 = 4;

fn req_4(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc6888 REQ-4, REQ-4a (configurable), REQ-4b (per protocol; ICMP identifiers too)
    let cfg = NatConfig {
        ports_per_host: Some(PORT_LIMIT),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    r.sent(format!(
        "at most {PORT_LIMIT} ports per host and protocol: lan-a sends UDP from 6 ports and \
         echo requests with 6 identifiers to wan-a, then lan-b sends UDP from one port"
    ));
    let mut udp_passed = 0;
    for port in (46000u16..46012).step_by(2) {
        let s = udp(env.lan_a(), LAN_A, port)?;
        let payload = format!("from {port}");
        let allowed = udp_passed < PORT_LIMIT;
        let seen = if allowed {
            udp_through(&s, ep(WAN_A, 7000), &wan, payload.as_bytes())?
        } else {
            udp_blocked(&s, ep(WAN_A, 7000), &wan, payload.as_bytes())?
        };
        if seen.is_some() {
            udp_passed += 1;
        }
    }
    let mut echo_answered = 0;
    for ident in 0x4100u16..0x4106 {
        let ping = Ping::open(env.lan_a(), LAN_A, ident).step("ping socket on lan-a")?;
        ping.echo(WAN_A, 1, b"limit").step("echo request")?;
        if ping.reply(1, sock::SILENCE).is_some() {
            echo_answered += 1;
        }
    }
    let b = udp(env.lan_b(), LAN_B, 46000)?;
    let other = udp_through(&b, ep(WAN_A, 7000), &wan, b"lan-b")?;
    r.saw(format!(
        "lan-a: {udp_passed} of 6 UDP datagrams arrived, {echo_answered} of 6 echo requests \
         answered; lan-b's datagram arrived from {}",
        show(other)
    ));
    r.expect(
        udp_passed == PORT_LIMIT,
        format!("exactly {PORT_LIMIT} of lan-a's UDP ports are mapped"),
    );
    r.expect(
        echo_answered == PORT_LIMIT,
        format!("exactly {PORT_LIMIT} of lan-a's echo identifiers are mapped"),
    );
    r.expect(
        other.is_some(),
        "lan-b still gets a mapping: the limit is lan-a's alone",
    );
    Ok(())
}

/// lan-a's bucket in [`req_4c`]: this many new mappings at once, then this many per
/// second.
const RATE: u32 = 5;

fn req_4c(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc6888 REQ-4c: per-subscriber thresholds on the creation of new mappings
    let cfg = NatConfig {
        mapping_rate: Some((RATE, RATE)),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    r.sent(format!(
        "{RATE} new mappings per second per host, burst {RATE}: lan-a sends from 15 new ports \
         at once, lan-b from one, then lan-a from 3 more ports 1.5 s later"
    ));
    let burst: Vec<_> = (47000u16..47030)
        .step_by(2)
        .map(|p| udp(env.lan_a(), LAN_A, p))
        .collect::<Result<_, _>>()?;
    for (i, s) in burst.iter().enumerate() {
        sock::send(s, format!("burst {i}").as_bytes(), ep(WAN_A, 7000)).step("sending")?;
    }
    let mut arrived = 0;
    while sock::recv_within(&wan, sock::SILENCE).is_some() {
        arrived += 1;
    }
    let b = udp(env.lan_b(), LAN_B, 47000)?;
    let other = udp_through(&b, ep(WAN_A, 7000), &wan, b"lan-b")?;
    pause(Duration::from_millis(1500));
    let mut later = 0;
    for p in (47100u16..47106).step_by(2) {
        let s = udp(env.lan_a(), LAN_A, p)?;
        if udp_through(&s, ep(WAN_A, 7000), &wan, format!("later {p}").as_bytes())?.is_some() {
            later += 1;
        }
    }
    r.saw(format!(
        "{arrived} of lan-a's 15 datagrams arrived; lan-b's arrived from {}; 1.5 s later {later} \
         of 3",
        show(other)
    ));
    // The bucket refills while the burst is sent: a token or two more than the burst.
    r.expect(
        (RATE as usize..=RATE as usize + 2).contains(&arrived),
        format!("about {RATE} of the 15 (the burst) get a mapping"),
    );
    r.expect(other.is_some(), "lan-b has a bucket of its own");
    r.expect(later == 3, "lan-a's bucket refills at the configured rate");
    Ok(())
}

fn req_7(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc6888 REQ-7: endpoint-independent filtering is RECOMMENDED (checked with the
    // NAT's default configuration)
    let env = Env::start(nat, &NatConfig::default())?;
    let lan = udp(env.lan_a(), LAN_A, 43000)?;
    let wan_a = udp(env.wan_a(), WAN_A, 7000)?;
    let wan_b = udp(env.wan_b(), WAN_B, 7000)?;
    r.sent(
        "default configuration: lan-a :43000 -> wan-a:7000, then wan-b (never sent to) sends to \
         the mapping",
    );
    let e = udp_through(&lan, ep(WAN_A, 7000), &wan_a, b"open")?
        .ok_or_else(|| Stop::Error("lan-a's datagram did not arrive".to_owned()))?;
    let other = udp_through(&wan_b, e, &lan, b"from wan-b")?;
    r.saw(format!(
        "mapping {e}; wan-b's datagram {}",
        if other.is_some() {
            "reached lan-a"
        } else {
            "was dropped"
        }
    ));
    r.expect(
        other.is_some(),
        "any remote endpoint reaches the mapping (EIF)",
    );
    Ok(())
}

/// The hold-down [`req_8`] configures, short enough to see it end.
const HOLD_S: u64 = 6;
/// The UDP timeout of [`req_8`].
const HOLD_UDP_TIMEOUT_S: u64 = 2;

fn req_8(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc6888 REQ-8
    let natgw = matches!(nat, NatUnderTest::Natgw { .. });
    if natgw {
        let env = Env::start(nat, &NatConfig::default())?;
        let hold = env
            .natgw_config(&["limits", "port_hold_down"])
            .and_then(|v| v.as_u64());
        r.sent("default configuration: `natgw status --json` config.limits.port_hold_down");
        r.saw(format!(
            "default hold-down {} s",
            hold.map_or("?".to_owned(), |t| t.to_string())
        ));
        r.expect(hold.is_some_and(|t| t >= 120), "default hold-down >= 120 s");
    }
    let cfg = NatConfig {
        port_range: Some((20000, 20000)),
        udp_timeout: Some(HOLD_UDP_TIMEOUT_S),
        port_hold_down: natgw.then_some(HOLD_S),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let a = udp(env.lan_a(), LAN_A, 20000)?;
    let b = udp(env.lan_b(), LAN_B, 20000)?;
    r.sent(format!(
        "one external port (20000), UDP timeout {HOLD_UDP_TIMEOUT_S} s{}: lan-a :20000 -> wan-a \
         until its mapping expires; then lan-b :20000, lan-a :20000 again; after that mapping \
         expired too and the hold-down passed, lan-b :20000",
        if natgw {
            format!(", hold-down {HOLD_S} s")
        } else {
            String::new()
        }
    ));
    let first = udp_through(&a, ep(WAN_A, 7000), &wan, b"a first")?;
    wait_expired(&env, LAN_A, 20000);
    let b_early = udp_blocked(&b, ep(WAN_A, 7000), &wan, b"b early")?;
    let a_again = udp_through(&a, ep(WAN_A, 7000), &wan, b"a again")?;
    wait_expired(&env, LAN_A, 20000);
    // The hold-down runs from the deletion, which the wait above saw happen.
    pause(Duration::from_secs(HOLD_S + 1));
    let b_late = udp_through(&b, ep(WAN_A, 7000), &wan, b"b late")?;
    r.saw(format!(
        "lan-a from {}; once freed: lan-b {}, lan-a again from {}; after the hold-down lan-b \
         from {}",
        show(first),
        b_early.map_or_else(|| "dropped".to_owned(), |e| format!("from {e}")),
        show(a_again),
        show(b_late)
    ));
    r.expect(first == Some(ep(EXT, 20000)), "lan-a gets port 20000");
    r.expect(
        b_early.is_none(),
        "lan-b does not get the freed port within the hold-down",
    );
    r.expect(
        a_again == Some(ep(EXT, 20000)),
        "lan-a, which held it, may have it again at once",
    );
    if natgw {
        r.expect(
            b_late == Some(ep(EXT, 20000)),
            "lan-b gets it once the configured hold-down has passed",
        );
    }
    Ok(())
}

/// Waits (at most the UDP timeout and 10 s) until the NAT has forgotten
/// `addr:port`'s UDP mapping: natgw's table, or the kernel's conntrack table, no
/// longer lists it.
fn wait_expired(env: &Env, addr: Ipv4Addr, port: u16) {
    let internal = ep(addr, port);
    let gone = || match env.natgw() {
        Some(natgw) => natgw.mapping_of("udp", internal).is_ok_and(|m| m.is_none()),
        None => !conntrack_lists_udp(env, internal),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(HOLD_UDP_TIMEOUT_S + 10);
    while std::time::Instant::now() < deadline && !gone() {
        pause(Duration::from_millis(200));
    }
}

/// Whether the gateway's conntrack table has a UDP entry from `internal`.
fn conntrack_lists_udp(env: &Env, internal: SocketAddrV4) -> bool {
    env.tb
        .gateway
        .ns
        .command("conntrack")
        .args(["-L", "-p", "udp", "--orig-src"])
        .arg(internal.ip().to_string())
        .args(["--sport", &internal.port().to_string()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("udp"))
        })
}

/// PCP's server port (RFC 6887 §19.1).
const PCP_PORT: u16 = 5351;

fn req_9(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc6888 REQ-9: a protocol for explicit mappings, PCP
    let env = Env::start(nat, &NatConfig::default())?;
    let client = udp(env.lan_a(), LAN_A, 5350)?;
    let service = udp(env.lan_a(), LAN_A, 48000)?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    r.sent(
        "lan-a sends a PCP MAP request (UDP, internal port 48000, lifetime 600 s) to its gateway \
         10.0.1.1:5351; wan-a sends to the external endpoint it returns",
    );
    sock::send(
        &client,
        &pcp_map_request(LAN_A, 48000),
        ep(testbed::GW_LAN_A_ADDR, PCP_PORT),
    )
    .step("sending the MAP request")?;
    let answer = sock::recv_within(&client, sock::ARRIVE);
    let granted = answer
        .as_ref()
        .and_then(|(bytes, _)| pcp_map_external(bytes));
    let reached = match granted {
        Some(e) => udp_through(&wan, e, &service, b"through the PCP mapping")?,
        None => None,
    };
    r.saw(match (&answer, granted) {
        (None, _) => "no answer".to_owned(),
        (Some((bytes, _)), None) => {
            format!("an answer that grants nothing ({} bytes)", bytes.len())
        }
        (Some(_), Some(e)) => format!(
            "MAP granted {e}; wan-a's datagram {}",
            if reached.is_some() {
                "reached lan-a :48000"
            } else {
                "did not reach lan-a"
            }
        ),
    });
    r.expect(granted.is_some(), "the MAP request is granted");
    r.expect(reached.is_some(), "the mapping admits traffic from outside");
    Ok(())
}

/// A PCP MAP request (RFC 6887 §11.1) for UDP `internal_port` of `client`, lifetime
/// 600 s, no suggestion.
fn pcp_map_request(client: Ipv4Addr, internal_port: u16) -> Vec<u8> {
    let mut m = vec![0u8; 60];
    m[0] = 2; // version
    m[1] = 1; // MAP
    m[4..8].copy_from_slice(&600u32.to_be_bytes());
    m[8..24].copy_from_slice(&client.to_ipv6_mapped().octets());
    m[24..36].copy_from_slice(&[0x6e; 12]); // nonce
    m[36] = 17; // UDP
    m[40..42].copy_from_slice(&internal_port.to_be_bytes());
    m[44..60].copy_from_slice(&Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets());
    m
}

/// The external endpoint a successful PCP MAP response assigns.
fn pcp_map_external(bytes: &[u8]) -> Option<SocketAddrV4> {
    let ok = bytes.len() >= 60 && bytes[0] == 2 && bytes[1] == 0x81 && bytes[3] == 0;
    if !ok {
        return None;
    }
    let port = u16::from_be_bytes([bytes[42], bytes[43]]);
    let addr: [u8; 16] = bytes[44..60].try_into().ok()?;
    Some(ep(std::net::Ipv6Addr::from(addr).to_ipv4_mapped()?, port))
}

fn req_11(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc6888 REQ-11a (drop), REQ-11b (ICMP host unreachable, code 1), REQ-11d (no
    // mapping deleted to make room)
    let natgw = matches!(nat, NatUnderTest::Natgw { .. });
    let cfg = NatConfig {
        port_range: Some((20000, 20001)),
        no_mapping_host_unreachable: natgw,
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let a0 = udp(env.lan_a(), LAN_A, 20000)?;
    let a1 = udp(env.lan_a(), LAN_A, 20001)?;
    let b = udp(env.lan_b(), LAN_B, 20000)?;
    let at_b = Raw::icmp(env.lan_b()).step("raw ICMP socket on lan-b")?;
    r.sent(format!(
        "port range 20000-20001{}: lan-a :20000 and :20001 -> wan-a:7000 take both ports; lan-b \
         :20000 -> wan-a:7000; then wan-a sends to both of lan-a's mappings",
        if natgw {
            ", --no-mapping-icmp host-unreachable"
        } else {
            ""
        }
    ));
    let ea0 = udp_through(&a0, ep(WAN_A, 7000), &wan, b"a0")?;
    let ea1 = udp_through(&a1, ep(WAN_A, 7000), &wan, b"a1")?;
    let (Some(ea0), Some(ea1)) = (ea0, ea1) else {
        return Err(Stop::Error("lan-a's mappings were not made".to_owned()));
    };
    let leaked = udp_blocked(&b, ep(WAN_A, 7000), &wan, b"no port left")?;
    let got = flows::error_about(&at_b, ep(LAN_B, 20000), ep(WAN_A, 7000), sock::ARRIVE);
    let back0 = udp_through(&wan, ea0, &a0, b"still a0")?;
    let back1 = udp_through(&wan, ea1, &a1, b"still a1")?;
    r.saw(format!(
        "wan-a got lan-b's datagram from {}; lan-b got {}; lan-a's mappings {ea0} and {ea1}: \
         {} and {}",
        show(leaked),
        got.as_ref()
            .map_or_else(|| "no ICMP".to_owned(), flows::describe_icmp),
        if back0.is_some() { "still in" } else { "gone" },
        if back1.is_some() { "still in" } else { "gone" },
    ));
    r.expect(leaked.is_none(), "lan-b's datagram is dropped (REQ-11a)");
    r.expect(
        got.as_ref().is_some_and(|g| {
            g.icmp().is_some_and(|m| {
                m.kind() == icmp_type::DEST_UNREACHABLE
                    && m.code() == unreachable::HOST
                    && m.checksum_ok()
            })
        }),
        "lan-b gets ICMP destination unreachable code 1 quoting its datagram (REQ-11b)",
    );
    r.expect(
        back0.is_some() && back1.is_some(),
        "both of lan-a's mappings still translate: none was evicted (REQ-11d)",
    );
    Ok(())
}
