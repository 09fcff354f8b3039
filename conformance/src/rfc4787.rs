//! RFC 4787 (BCP 127): UDP behaviour — mapping, pooling, port choice, timeouts,
//! filtering, hairpinning, ALGs, determinism, ICMP and fragments.

use std::net::{SocketAddrV4, UdpSocket};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::flows::{
    self, ep, show, udp, udp_blocked, udp_error_about, udp_through, Timeline, EXT, LAN_A, LAN_B,
    WAN_A, WAN_B,
};
use super::nat::{Filtering, NatConfig, NatUnderTest, SECOND_EXTERNAL};
use super::packet::{self, icmp_type, unreachable, Ipv4Header, PROTO_UDP};
use super::sock::{self, Raw, TcpServer};
use super::{Check, Env, Record, Step as _, Stop};

/// The RFC 4787 checks, port preservation included.
#[must_use]
pub fn checks() -> Vec<Check> {
    vec![
        Check {
            id: "RFC 4787 REQ-1",
            test: "rfc4787_req_1_endpoint_independent_mapping",
            title: "endpoint-independent mapping",
            run: req_1,
        },
        Check {
            id: "port preservation",
            test: "port_preservation",
            title: "the internal port is kept when it is free",
            run: port_preservation,
        },
        Check {
            id: "RFC 4787 REQ-2",
            test: "rfc4787_req_2_paired_address_pooling",
            title: "paired address pooling",
            run: req_2,
        },
        Check {
            id: "RFC 4787 REQ-3",
            test: "rfc4787_req_3_no_port_overloading",
            title: "no port overloading; drop when no port is free",
            run: req_3,
        },
        Check {
            id: "RFC 4787 REQ-3a",
            test: "rfc4787_req_3a_port_range_class",
            title: "system ports map to system ports, others to others",
            run: req_3a,
        },
        Check {
            id: "RFC 4787 REQ-4",
            test: "rfc4787_req_4_port_parity",
            title: "port parity preserved",
            run: req_4,
        },
        Check {
            id: "RFC 4787 REQ-5",
            test: "rfc4787_req_5_udp_mapping_timeout",
            title: "mapping timeout >= 2 min, configurable, default >= 5 min",
            run: req_5,
        },
        Check {
            id: "RFC 4787 REQ-6",
            test: "rfc4787_req_6_outbound_refresh",
            title: "outbound packets refresh the mapping",
            run: req_6,
        },
        Check {
            id: "RFC 4787 REQ-6a",
            test: "rfc4787_req_6a_inbound_refresh_configurable",
            title: "inbound refresh is configurable",
            run: req_6a,
        },
        Check {
            id: "RFC 4787 REQ-7",
            test: "rfc4787_req_7_overlapping_prefixes_refused",
            title: "overlapping internal and external prefixes are refused",
            run: req_7,
        },
        Check {
            id: "RFC 4787 REQ-8 EIF",
            test: "rfc4787_req_8_endpoint_independent_filtering",
            title: "endpoint-independent filtering",
            run: req_8_eif,
        },
        Check {
            id: "RFC 4787 REQ-8 ADF",
            test: "rfc4787_req_8_address_dependent_filtering",
            title: "address-dependent filtering",
            run: req_8_adf,
        },
        Check {
            id: "RFC 4787 REQ-8 APDF",
            test: "rfc4787_req_8_address_and_port_dependent_filtering",
            title: "address-and-port-dependent filtering",
            run: req_8_apdf,
        },
        Check {
            id: "RFC 4787 REQ-9",
            test: "rfc4787_req_9_udp_hairpinning",
            title: "hairpinning",
            run: req_9,
        },
        Check {
            id: "RFC 4787 REQ-9a",
            test: "rfc4787_req_9a_hairpin_source_is_external",
            title: "a hairpinned packet's source is the sender's external endpoint",
            run: req_9a,
        },
        Check {
            id: "RFC 4787 REQ-10",
            test: "rfc4787_req_10_no_alg",
            title: "no ALG rewrites payloads",
            run: req_10,
        },
        Check {
            id: "RFC 4787 REQ-11",
            test: "rfc4787_req_11_deterministic",
            title: "behaviour does not change with load or time",
            run: req_11,
        },
        Check {
            id: "RFC 4787 REQ-12",
            test: "rfc4787_req_12_icmp_does_not_kill_mapping",
            title: "no ICMP message kills a mapping",
            run: req_12,
        },
        Check {
            id: "RFC 4787 REQ-12a",
            test: "rfc4787_req_12a_icmp_from_any_source",
            title: "ICMP errors are not filtered by source",
            run: req_12a,
        },
        Check {
            id: "RFC 4787 REQ-12b",
            test: "rfc4787_req_12b_destination_unreachable_translated",
            title: "destination unreachable reaches the internal host",
            run: req_12b,
        },
        Check {
            id: "RFC 4787 REQ-13",
            test: "rfc4787_req_13_fragmentation_needed_and_fragmenting",
            title: "DF and too big: fragmentation needed; no DF: fragmented",
            run: req_13,
        },
        Check {
            id: "RFC 4787 REQ-14",
            test: "rfc4787_req_14_fragments_in_and_out_of_order",
            title: "fragments in and out of order are translated",
            run: req_14,
        },
        Check {
            id: "RFC 4787 REQ-14a",
            test: "rfc4787_req_14a_fragment_flood_does_not_starve",
            title: "a fragment flood does not starve normal traffic",
            run: req_14a,
        },
    ]
}

/// Sends from `lan` to `to` and expects it at `wan`; the external endpoint seen, or a
/// [`Stop::Error`] saying the datagram did not cross (a precondition of most checks).
fn open_mapping(
    lan: &UdpSocket,
    to: SocketAddrV4,
    wan: &UdpSocket,
    what: &str,
) -> Result<SocketAddrV4, Stop> {
    udp_through(lan, to, wan, format!("open {what}").as_bytes())?.ok_or_else(|| {
        Stop::Error(format!(
            "{what}: the first datagram to {to} did not arrive, so there is no mapping to test"
        ))
    })
}

fn req_1(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-1
    let env = Env::start(nat, &NatConfig::default())?;
    let wan_a = udp(env.wan_a(), WAN_A, 7000)?;
    let wan_b = udp(env.wan_b(), WAN_B, 7001)?;
    let lan_a = udp(env.lan_a(), LAN_A, 41000)?;
    let lan_b = udp(env.lan_b(), LAN_B, 41000)?;
    r.sent(
        "UDP lan-b :41000 -> wan-b:7001 first (so port 41000 is contested), then lan-a :41000 \
         -> wan-a:7000 and -> wan-b:7001; replies back",
    );
    let eb = udp_through(&lan_b, ep(WAN_B, 7001), &wan_b, b"from lan-b")?;
    let e1 = udp_through(&lan_a, ep(WAN_A, 7000), &wan_a, b"lan-a to wan-a")?;
    let e2 = udp_through(&lan_a, ep(WAN_B, 7001), &wan_b, b"lan-a to wan-b")?;
    r.saw(format!(
        "lan-b -> {}; lan-a -> {} towards wan-a, {} towards wan-b",
        show(eb),
        show(e1),
        show(e2)
    ));
    let (Some(e1), Some(e2)) = (e1, e2) else {
        r.expect(false, "lan-a's datagrams arrive at both WAN hosts");
        return Ok(());
    };
    r.expect(
        e1 == e2,
        "one external endpoint for lan-a :41000 towards both destinations",
    );
    r.expect(
        *e1.ip() == EXT || *e1.ip() == SECOND_EXTERNAL,
        "an external address as source",
    );
    let back_a = udp_through(&wan_a, e1, &lan_a, b"reply a")?;
    let back_b = udp_through(&wan_b, e2, &lan_a, b"reply b")?;
    r.saw(format!(
        "replies reached lan-a from {} and {}",
        show(back_a),
        show(back_b)
    ));
    r.expect(
        back_a == Some(ep(WAN_A, 7000)) && back_b == Some(ep(WAN_B, 7001)),
        "replies from both destinations reach lan-a",
    );
    Ok(())
}

fn port_preservation(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 port preservation
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let lan = udp(env.lan_a(), LAN_A, 40000)?;
    let server = TcpServer::start(env.wan_a(), ep(WAN_A, 8080)).step("TCP server on wan-a")?;
    r.sent("UDP lan-a :40000 -> wan-a:7000; TCP lan-a :40002 -> wan-a:8080");
    let seen = udp_through(&lan, ep(WAN_A, 7000), &wan, b"hello")?;
    let tcp = sock::tcp_connect(env.lan_a(), ep(LAN_A, 40002), ep(WAN_A, 8080), sock::ARRIVE)
        .and_then(|mut s| sock::hello(&mut s, "lan-a").map(|()| s));
    let tcp_seen = server.peer_of("lan-a", sock::ARRIVE);
    r.saw(format!(
        "wan-a saw UDP from {}, TCP from {}",
        show(seen),
        show(tcp_seen)
    ));
    if let Err(e) = &tcp {
        r.saw(format!("TCP: {e}"));
    }
    r.expect(seen == Some(ep(EXT, 40000)), "UDP from 192.0.2.1:40000");
    r.expect(tcp_seen == Some(ep(EXT, 40002)), "TCP from 192.0.2.1:40002");
    Ok(())
}

/// Internal addresses of REQ-2: each LAN host's own and four more on its `eth0`, so
/// that a pool has enough internal hosts to spread over both external addresses.
fn pooled_hosts(env: &Env) -> Result<Vec<(&testbed::Netns, std::net::Ipv4Addr)>, Stop> {
    let mut hosts = Vec::new();
    for (ns, base) in [(env.lan_a(), LAN_A), (env.lan_b(), LAN_B)] {
        for i in 0..5u8 {
            let [a, b, c, d] = base.octets();
            let addr = std::net::Ipv4Addr::new(a, b, c, d + i);
            if i > 0 {
                let out = ns
                    .command("ip")
                    .args(["addr", "add", &format!("{addr}/24"), "dev", "eth0"])
                    .output()
                    .step("adding a LAN address")?;
                if !out.status.success() {
                    return Err(Stop::Error(format!(
                        "ip addr add {addr}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
            }
            hosts.push((ns, addr));
        }
    }
    Ok(hosts)
}

fn req_2(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-2
    paired_pooling(nat, r)
}

/// Paired pooling with two external addresses and the NAT's default pooling
/// behaviour (RFC 4787 REQ-2, and RFC 6888 REQ-2: by default).
///
/// # Errors
/// When the testbed or the NAT does not come up, or a socket call fails.
pub(crate) fn paired_pooling(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    let cfg = NatConfig {
        second_external: true,
        ..NatConfig::default()
    };
    r.sent("external addresses 192.0.2.1 and 192.0.2.2 (both on wan0)");
    let env = Env::start(nat, &cfg)?;
    let wan_a = udp(env.wan_a(), WAN_A, 7000)?;
    let wan_b = udp(env.wan_b(), WAN_B, 7001)?;
    let server = TcpServer::start(env.wan_a(), ep(WAN_A, 8080)).step("TCP server on wan-a")?;
    r.sent(
        "10 internal addresses (10.0.1.2-6, 10.0.2.2-6): from each, UDP from 4 ports \
         alternately to wan-a and wan-b and one TCP connection to wan-a",
    );
    let mut lines = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (ns, addr) in pooled_hosts(&env)? {
        let mut addrs = Vec::new();
        for (i, port) in (40000u16..40008).step_by(2).enumerate() {
            let s = udp(ns, addr, port)?;
            let (to, at) = if i % 2 == 0 {
                (ep(WAN_A, 7000), &wan_a)
            } else {
                (ep(WAN_B, 7001), &wan_b)
            };
            let seen = udp_through(&s, to, at, format!("{addr} {port}").as_bytes())?;
            addrs.push(seen.map(|e| *e.ip()));
        }
        let line = addr.to_string();
        let tcp = sock::tcp_connect(ns, ep(addr, 40100), ep(WAN_A, 8080), sock::ARRIVE)
            .and_then(|mut s| sock::hello(&mut s, &line).map(|()| s));
        addrs.push(server.peer_of(&line, sock::ARRIVE).map(|e| *e.ip()));
        drop(tcp);
        let first = addrs[0];
        let consistent = addrs.iter().all(|a| *a == first);
        lines.push(match first {
            Some(ext) if consistent => format!("{addr} -> {ext}"),
            _ => format!(
                "{addr} -> {}",
                addrs
                    .iter()
                    .map(|a| a.map_or_else(|| "lost".to_owned(), |a| a.to_string()))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        });
        used.extend(addrs.iter().flatten().copied());
        r.expect(
            addrs.iter().all(Option::is_some),
            format!("every datagram and connection of {addr} arrives"),
        );
        r.expect(
            consistent,
            format!("all of {addr}'s mappings use one external address"),
        );
        r.expect(
            first.is_some_and(|a| a == EXT || a == SECOND_EXTERNAL),
            format!("{addr}'s address is one of the two external ones"),
        );
    }
    r.saw(format!(
        "{} (4 UDP + 1 TCP mappings each); external addresses in use: {}",
        lines.join(", "),
        used.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    Ok(())
}

fn req_3(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-3
    {
        let env = Env::start(nat, &NatConfig::default())?;
        let wan_a = udp(env.wan_a(), WAN_A, 7000)?;
        let wan_b = udp(env.wan_b(), WAN_B, 7000)?;
        let a1 = udp(env.lan_a(), LAN_A, 42000)?;
        let b1 = udp(env.lan_b(), LAN_B, 42000)?;
        let a2 = udp(env.lan_a(), LAN_A, 42002)?;
        let b2 = udp(env.lan_b(), LAN_B, 42002)?;
        r.sent(
            "lan-a and lan-b from the same port: :42000 to different destinations (wan-a, \
             wan-b), :42002 to the same one (wan-a:7000)",
        );
        let ea1 = udp_through(&a1, ep(WAN_A, 7000), &wan_a, b"a1")?;
        let eb1 = udp_through(&b1, ep(WAN_B, 7000), &wan_b, b"b1")?;
        let ea2 = udp_through(&a2, ep(WAN_A, 7000), &wan_a, b"a2")?;
        let eb2 = udp_through(&b2, ep(WAN_A, 7000), &wan_a, b"b2")?;
        r.saw(format!(
            ":42000 lan-a -> {}, lan-b -> {}; :42002 lan-a -> {}, lan-b -> {}",
            show(ea1),
            show(eb1),
            show(ea2),
            show(eb2)
        ));
        r.expect(
            [ea1, eb1, ea2, eb2].iter().all(Option::is_some),
            "all four datagrams arrive",
        );
        r.expect(
            ea1 != eb1,
            "distinct external endpoints when the destinations differ",
        );
        r.expect(
            ea2 != eb2,
            "distinct external endpoints towards one destination",
        );
        if let (Some(ea1), Some(eb1)) = (ea1, eb1) {
            let back_a = udp_through(&wan_a, ea1, &a1, b"back a1")?;
            let back_b = udp_through(&wan_b, eb1, &b1, b"back b1")?;
            r.expect(
                back_a.is_some() && back_b.is_some(),
                "replies reach each host through its own mapping",
            );
        }
    }
    let cfg = NatConfig {
        port_range: Some((20000, 20001)),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let wan_a = udp(env.wan_a(), WAN_A, 7000)?;
    let wan_b = udp(env.wan_b(), WAN_B, 7000)?;
    let a0 = udp(env.lan_a(), LAN_A, 20000)?;
    let a1 = udp(env.lan_a(), LAN_A, 20001)?;
    let b0 = udp(env.lan_b(), LAN_B, 20000)?;
    let b1 = udp(env.lan_b(), LAN_B, 20001)?;
    r.sent(
        "port range 20000-20001: lan-a :20000 and :20001 -> wan-a:7000 take both ports; then \
         lan-b :20000 -> wan-b:7000 and :20001 -> wan-a:7000",
    );
    let ea0 = udp_through(&a0, ep(WAN_A, 7000), &wan_a, b"a0")?;
    let ea1 = udp_through(&a1, ep(WAN_A, 7000), &wan_a, b"a1")?;
    let eb0 = udp_blocked(&b0, ep(WAN_B, 7000), &wan_b, b"b0")?;
    let eb1 = udp_blocked(&b1, ep(WAN_A, 7000), &wan_a, b"b1")?;
    r.saw(format!(
        "exhausted: lan-a -> {} and {}; lan-b's datagrams arrived from {} and {}",
        show(ea0),
        show(ea1),
        show(eb0),
        show(eb1)
    ));
    r.expect(
        ea0.is_some() && ea1.is_some(),
        "lan-a's two mappings are made",
    );
    r.expect(
        eb0.is_none() && eb1.is_none(),
        "lan-b's datagrams are dropped when no port is free, not sent from a port in use",
    );
    if let Some(ea0) = ea0 {
        r.expect(
            udp_through(&wan_a, ea0, &a0, b"still a0")?.is_some(),
            "lan-a's mapping keeps working",
        );
    }
    Ok(())
}

fn req_3a(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-3a
    let cfg = NatConfig {
        port_range: Some((1, 65535)),
        ..NatConfig::default()
    };
    r.sent("port range 1-65535 (so system ports can be allocated at all)");
    let env = Env::start(nat, &cfg)?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    r.sent("lan-a and lan-b both from :1000, then both from :5000, to wan-a:7000");
    let mut seen = Vec::new();
    for port in [1000u16, 5000] {
        for (ns, addr) in [(env.lan_a(), LAN_A), (env.lan_b(), LAN_B)] {
            let s = udp(ns, addr, port)?;
            seen.push((
                port,
                udp_through(
                    &s,
                    ep(WAN_A, 7000),
                    &wan,
                    format!("{addr} {port}").as_bytes(),
                )?,
            ));
        }
    }
    r.saw(
        seen.iter()
            .map(|(p, e)| format!(":{p} -> {}", show(*e)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for (port, e) in &seen {
        let Some(e) = e else {
            r.expect(false, format!("the datagram from :{port} arrives"));
            continue;
        };
        if *port < 1024 {
            r.expect(e.port() < 1024, format!(":{port} maps into 1-1023"));
        } else {
            r.expect(e.port() >= 1024, format!(":{port} maps into 1024-65535"));
        }
    }
    r.expect(
        seen[0].1 != seen[1].1 && seen[2].1 != seen[3].1,
        "no two hosts share an external port",
    );
    Ok(())
}

fn req_4(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-4
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    r.sent(
        "lan-a from :42000..=42005, then lan-b from the same six ports, all to wan-a:7000 \
            (lan-b's ports are taken)",
    );
    let mut socks = Vec::new();
    for (ns, addr) in [(env.lan_a(), LAN_A), (env.lan_b(), LAN_B)] {
        for port in 42000u16..42006 {
            let s = udp(ns, addr, port)?;
            let e = udp_through(
                &s,
                ep(WAN_A, 7000),
                &wan,
                format!("{addr}:{port}").as_bytes(),
            )?;
            socks.push((addr, port, e));
        }
    }
    let moved: Vec<String> = socks
        .iter()
        .filter(|(a, _, _)| *a == LAN_B)
        .map(|(_, p, e)| {
            format!(
                "{p}->{}",
                e.map_or_else(|| "lost".to_owned(), |e| e.port().to_string())
            )
        })
        .collect();
    r.saw(format!("lan-b's ports: {}", moved.join(" ")));
    for (addr, port, e) in &socks {
        let Some(e) = e else {
            r.expect(false, format!("{addr}:{port}'s datagram arrives"));
            continue;
        };
        r.expect(
            e.port() % 2 == port % 2,
            format!("{addr}:{port} keeps its parity"),
        );
        if *addr == LAN_B {
            r.expect(
                e.port() != *port,
                format!("lan-b :{port} gets another port than lan-a's"),
            );
        }
    }
    Ok(())
}

fn req_5(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-5, REQ-5b, REQ-5c
    {
        let env = Env::start(nat, &NatConfig::default())?;
        if env.natgw().is_some() {
            let udp_default = env
                .natgw_config(&["timeouts", "udp"])
                .and_then(|v| v.as_u64());
            r.sent("default configuration: `natgw status --json` config.timeouts.udp");
            r.saw(format!(
                "default UDP timeout {} s",
                udp_default.map_or("?".to_owned(), |t| t.to_string())
            ));
            r.expect(
                udp_default.is_some_and(|t| t >= 120),
                "default >= 120 s (REQ-5)",
            );
            r.expect(
                udp_default.is_some_and(|t| t >= 300),
                "default >= 300 s (REQ-5c)",
            );
        } else {
            let unreplied = env.gateway_sysctl("net/netfilter/nf_conntrack_udp_timeout");
            let stream = env.gateway_sysctl("net/netfilter/nf_conntrack_udp_timeout_stream");
            r.sent("default configuration: nf_conntrack_udp_timeout{,_stream}");
            r.saw(format!(
                "default UDP timeout {} s one-way, {} s once answered",
                unreplied.as_deref().unwrap_or("?"),
                stream.as_deref().unwrap_or("?")
            ));
            let min = [unreplied, stream]
                .iter()
                .filter_map(|v| v.as_deref()?.parse::<u64>().ok())
                .min();
            r.expect(min.is_some_and(|t| t >= 120), "default >= 120 s (REQ-5)");
            r.expect(min.is_some_and(|t| t >= 300), "default >= 300 s (REQ-5c)");
        }
    }
    let cfg = NatConfig {
        udp_timeout: Some(3),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let lan = udp(env.lan_a(), LAN_A, 47000)?;
    r.sent("UDP timeout 3 s: lan-a :47000 -> wan-a:7000 at 0 s; wan-a -> mapping at 1 s and 7 s");
    let t = Timeline::start();
    let e = open_mapping(&lan, ep(WAN_A, 7000), &wan, "lan-a :47000")?;
    t.at(1.0);
    let early = udp_through(&wan, e, &lan, b"at 1 s")?;
    t.at(7.0);
    let late = udp_blocked(&wan, e, &lan, b"at 7 s")?;
    r.saw(format!(
        "configured 3 s: inbound at 1 s {}, at 7 s {}",
        if early.is_some() {
            "delivered"
        } else {
            "dropped"
        },
        if late.is_some() {
            "delivered"
        } else {
            "dropped"
        }
    ));
    r.expect(
        early.is_some(),
        "the mapping works before its timeout (REQ-5b)",
    );
    r.expect(
        late.is_none(),
        "the mapping has expired after the configured 3 s (REQ-5b)",
    );
    Ok(())
}

fn req_6(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-6
    let cfg = NatConfig {
        udp_timeout: Some(3),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let kept = udp(env.lan_a(), LAN_A, 47000)?;
    let idle = udp(env.lan_a(), LAN_A, 47002)?;
    r.sent(
        "UDP timeout 3 s: lan-a :47000 and :47002 -> wan-a:7000 at 0 s; :47000 sends again \
         every second until 6 s; wan-a -> both mappings at 7 s",
    );
    let t = Timeline::start();
    let e_kept = open_mapping(&kept, ep(WAN_A, 7000), &wan, "lan-a :47000")?;
    let e_idle = open_mapping(&idle, ep(WAN_A, 7000), &wan, "lan-a :47002")?;
    let mut sources = Vec::new();
    for i in 1..=6u8 {
        t.at(f64::from(i));
        sources.push(udp_through(
            &kept,
            ep(WAN_A, 7000),
            &wan,
            format!("keepalive {i}").as_bytes(),
        )?);
    }
    t.at(7.0);
    let kept_in = udp_through(&wan, e_kept, &kept, b"to the refreshed mapping")?;
    let idle_in = udp_blocked(&wan, e_idle, &idle, b"to the idle mapping")?;
    r.saw(format!(
        "keepalives from {}; at 7 s the refreshed mapping {}, the idle one {}",
        sources
            .iter()
            .map(|s| show(*s))
            .collect::<Vec<_>>()
            .join(" "),
        if kept_in.is_some() {
            "delivered"
        } else {
            "dropped"
        },
        if idle_in.is_some() {
            "delivered"
        } else {
            "dropped"
        },
    ));
    r.expect(
        sources.iter().all(|s| *s == Some(e_kept)),
        "every keepalive leaves from the same external endpoint",
    );
    r.expect(
        kept_in.is_some(),
        "the refreshed mapping still works after twice its timeout",
    );
    r.expect(
        idle_in.is_none(),
        "the idle mapping expired meanwhile (the timeout is real)",
    );
    Ok(())
}

/// Opens a mapping, then sends inbound every second for 6 s and once more at 7 s;
/// which of those arrived.
fn inbound_only(env: &Env) -> Result<Vec<bool>, Stop> {
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let lan = udp(env.lan_a(), LAN_A, 47000)?;
    let t = Timeline::start();
    let e = open_mapping(&lan, ep(WAN_A, 7000), &wan, "lan-a :47000")?;
    let mut arrived = Vec::new();
    for i in 1..=7u8 {
        t.at(f64::from(i));
        arrived.push(udp_through(&wan, e, &lan, format!("inbound {i}").as_bytes())?.is_some());
    }
    Ok(arrived)
}

fn arrivals(v: &[bool]) -> String {
    v.iter()
        .enumerate()
        .map(|(i, a)| format!("{}s:{}", i + 1, if *a { "in" } else { "lost" }))
        .collect::<Vec<_>>()
        .join(" ")
}

fn req_6a(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-6a
    r.sent(
        "UDP timeout 3 s; lan-a :47000 -> wan-a:7000 once, then only inbound from wan-a \
         every second for 7 s: with inbound refresh on, then off",
    );
    let on = NatConfig {
        udp_timeout: Some(3),
        inbound_refresh: Some(true),
        ..NatConfig::default()
    };
    let arrived = inbound_only(&Env::start(nat, &on)?)?;
    r.saw(format!("refresh on: {}", arrivals(&arrived)));
    r.expect(
        arrived.iter().all(|a| *a),
        "with inbound refresh every inbound datagram arrives",
    );
    let off = NatConfig {
        inbound_refresh: Some(false),
        ..on
    };
    let arrived = inbound_only(&Env::start(nat, &off)?)?;
    r.saw(format!("refresh off: {}", arrivals(&arrived)));
    r.expect(
        arrived[0],
        "without inbound refresh the mapping works at first",
    );
    r.expect(
        !arrived[6],
        "without inbound refresh the mapping expires although inbound traffic continues",
    );
    Ok(())
}

fn req_7(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-7
    if *nat == NatUnderTest::NftMasquerade {
        return Err(Stop::NotApplicable(
            "nftables has no notion of internal and external prefixes: masquerade rewrites \
             whatever leaves wan0, so there is nothing to refuse"
                .to_owned(),
        ));
    }
    let tb = Env::testbed(&NatConfig::default())?;
    let out = tb
        .gateway
        .ns
        .command("ip")
        .args(["addr", "add", "192.0.2.129/25", "dev", "lan1"])
        .output()
        .step("adding 192.0.2.129/25 to lan1")?;
    if !out.status.success() {
        return Err(Stop::Error(format!(
            "ip addr add: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    r.sent(
        "192.0.2.129/25 on lan1 (inside wan0's 192.0.2.0/24); natgw run --wan wan0 --lan lan0 \
            --lan lan1",
    );
    let mut child = tb
        .gateway
        .ns
        .command(testbed::natgw_bin())
        .args(["run", "--wan", "wan0", "--lan", "lan0", "--lan", "lan1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .step("starting natgw")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().step("waiting for natgw")? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let first = err.lines().last().unwrap_or("").trim().to_owned();
    match status {
        Some(s) => r.saw(format!("natgw exited ({s}): {first}")),
        None => r.saw("natgw started and ran for 10 s"),
    }
    r.expect(
        status.is_some_and(|s| !s.success()),
        "natgw refuses to start",
    );
    r.expect(
        err.contains("192.0.2"),
        "the error names the overlapping prefixes",
    );
    Ok(())
}

fn filtering_udp(nat: &NatUnderTest, r: &mut Record, mode: Filtering) -> Result<(), Stop> {
    let cfg = NatConfig {
        udp_filtering: Some(mode),
        ..NatConfig::default()
    };
    r.sent(format!(
        "UDP filtering {mode}: lan-a :43000 -> wan-a:7000, then to the mapping from wan-a:7000, \
         wan-a:7001 and wan-b:7000"
    ));
    let env = Env::start(nat, &cfg)?;
    let lan = udp(env.lan_a(), LAN_A, 43000)?;
    let wan_a = udp(env.wan_a(), WAN_A, 7000)?;
    let wan_a2 = udp(env.wan_a(), WAN_A, 7001)?;
    let wan_b = udp(env.wan_b(), WAN_B, 7000)?;
    let e = open_mapping(&lan, ep(WAN_A, 7000), &wan_a, "lan-a :43000")?;
    let probe = |from: &UdpSocket, allowed: bool, payload: &[u8]| {
        if allowed {
            udp_through(from, e, &lan, payload)
        } else {
            udp_blocked(from, e, &lan, payload)
        }
    };
    let same = probe(&wan_a, true, b"from wan-a:7000")?.is_some();
    let port_ok = mode != Filtering::AddressAndPortDependent;
    let other_port = probe(&wan_a2, port_ok, b"from wan-a:7001")?.is_some();
    let host_ok = mode == Filtering::EndpointIndependent;
    let other_host = probe(&wan_b, host_ok, b"from wan-b:7000")?.is_some();
    let word = |b: bool| if b { "in" } else { "dropped" };
    r.saw(format!(
        "wan-a:7000 {}, wan-a:7001 {}, wan-b:7000 {}",
        word(same),
        word(other_port),
        word(other_host)
    ));
    r.expect(same, "the endpoint lan-a sent to gets through");
    r.expect(
        other_port == port_ok,
        format!(
            "wan-a from another port {}",
            if port_ok {
                "gets through"
            } else {
                "is dropped"
            }
        ),
    );
    r.expect(
        other_host == host_ok,
        format!(
            "wan-b {}",
            if host_ok {
                "gets through"
            } else {
                "is dropped"
            }
        ),
    );
    Ok(())
}

fn req_8_eif(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-8
    filtering_udp(nat, r, Filtering::EndpointIndependent)
}

fn req_8_adf(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-8
    filtering_udp(nat, r, Filtering::AddressDependent)
}

fn req_8_apdf(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-8
    filtering_udp(nat, r, Filtering::AddressAndPortDependent)
}

/// What a hairpin exchange showed: each host's external endpoint and the source each
/// saw the other's datagram come from.
struct Hairpin {
    ea: SocketAddrV4,
    eb: SocketAddrV4,
    at_a: Option<SocketAddrV4>,
    at_b: Option<SocketAddrV4>,
}

/// lan-a and lan-b learn their external endpoints from wan-a, then send to each
/// other's — the first datagram opens lan-a's filter the way hole punching does.
fn hairpin_udp(nat: &NatUnderTest, r: &mut Record) -> Result<Hairpin, Stop> {
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let lan_a = udp(env.lan_a(), LAN_A, 44000)?;
    let lan_b = udp(env.lan_b(), LAN_B, 45000)?;
    r.sent(
        "lan-a :44000 and lan-b :45000 -> wan-a:7000 (learn Ea, Eb); lan-a -> Eb (punch); \
         lan-b -> Ea; lan-a -> Eb",
    );
    let ea = open_mapping(&lan_a, ep(WAN_A, 7000), &wan, "lan-a :44000")?;
    let eb = open_mapping(&lan_b, ep(WAN_A, 7000), &wan, "lan-b :45000")?;
    let _ = udp_blocked(&lan_a, eb, &lan_b, b"punch")?;
    let at_a = udp_through(&lan_b, ea, &lan_a, b"lan-b to Ea")?;
    let at_b = udp_through(&lan_a, eb, &lan_b, b"lan-a to Eb")?;
    r.saw(format!(
        "Ea {ea}, Eb {eb}; lan-a got lan-b's datagram from {}, lan-b got lan-a's from {}",
        show(at_a),
        show(at_b)
    ));
    Ok(Hairpin { ea, eb, at_a, at_b })
}

fn req_9(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-9
    let h = hairpin_udp(nat, r)?;
    r.expect(h.at_a.is_some(), "lan-b's datagram to Ea reaches lan-a");
    r.expect(h.at_b.is_some(), "lan-a's datagram to Eb reaches lan-b");
    Ok(())
}

fn req_9a(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-9a
    let h = hairpin_udp(nat, r)?;
    r.expect(
        h.at_a == Some(h.eb),
        "lan-a sees lan-b's external endpoint Eb as source",
    );
    r.expect(
        h.at_b == Some(h.ea),
        "lan-b sees lan-a's external endpoint Ea as source",
    );
    Ok(())
}

fn req_10(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-10
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 5060)?;
    let lan = udp(env.lan_a(), LAN_A, 5060)?;
    let sip = "INVITE sip:bob@198.51.100.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.1.2:5060\r\n\
               Contact: <sip:alice@10.0.1.2:5060>\r\nContent-Type: application/sdp\r\n\r\n\
               c=IN IP4 10.0.1.2\r\nm=audio 49170 RTP/AVP 0\r\n";
    r.sent(
        "UDP lan-a :5060 -> wan-a:5060, a SIP INVITE naming 10.0.1.2:5060; TCP lan-a -> \
            wan-a:21 `PORT 10,0,1,2,195,80`",
    );
    lan.send_to(sip.as_bytes(), ep(WAN_A, 5060))
        .step("sending the SIP request")?;
    let got = sock::recv_within(&wan, sock::ARRIVE);
    let server =
        TcpServer::start(env.wan_a(), ep(WAN_A, 21)).step("FTP-like server on wan-a:21")?;
    let ftp = "PORT 10,0,1,2,195,80";
    let tcp = sock::tcp_connect(env.lan_a(), ep(LAN_A, 40021), ep(WAN_A, 21), sock::ARRIVE)
        .and_then(|mut s| sock::write_line(&mut s, ftp).map(|()| s));
    let ftp_seen = server.peer_of(ftp, sock::ARRIVE).is_some();
    match &got {
        Some((data, from)) => r.saw(format!(
            "SIP from {from}: {} ({} bytes)",
            if data == sip.as_bytes() {
                "byte for byte unchanged"
            } else {
                "CHANGED"
            },
            data.len()
        )),
        None => r.saw("SIP request lost"),
    }
    r.saw(format!(
        "FTP PORT line {}",
        if ftp_seen {
            "unchanged"
        } else {
            "changed or lost"
        }
    ));
    if let Err(e) = tcp {
        r.saw(format!("TCP: {e}"));
    }
    r.expect(
        got.as_ref().is_some_and(|(d, _)| d == sip.as_bytes()),
        "the SIP payload arrives unchanged",
    );
    r.expect(ftp_seen, "the FTP PORT command arrives unchanged");
    Ok(())
}

/// One round of REQ-11: contested-port mapping from `base`; the behaviour as words.
fn mapping_round(
    env: &Env,
    base: u16,
    wan_a: &UdpSocket,
    wan_b: &UdpSocket,
) -> Result<String, Stop> {
    let lan_b = udp(env.lan_b(), LAN_B, base)?;
    let lan_a = udp(env.lan_a(), LAN_A, base)?;
    let eb = udp_through(
        &lan_b,
        ep(WAN_B, 7001),
        wan_b,
        format!("b {base}").as_bytes(),
    )?;
    let e1 = udp_through(
        &lan_a,
        ep(WAN_A, 7000),
        wan_a,
        format!("a1 {base}").as_bytes(),
    )?;
    let e2 = udp_through(
        &lan_a,
        ep(WAN_B, 7001),
        wan_b,
        format!("a2 {base}").as_bytes(),
    )?;
    let (Some(eb), Some(e1), Some(e2)) = (eb, e1, e2) else {
        return Ok("datagrams lost".to_owned());
    };
    let yes = |b: bool| if b { "yes" } else { "no" };
    Ok(format!(
        "EIM {}, first keeps port {}, second moved {}, parity {}",
        yes(e1 == e2),
        yes(eb.port() == base),
        yes(e1.port() != base),
        yes(e1.port() % 2 == base % 2)
    ))
}

fn req_11(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-11
    let env = Env::start(nat, &NatConfig::default())?;
    let wan_a = udp(env.wan_a(), WAN_A, 7000)?;
    let wan_b = udp(env.wan_b(), WAN_B, 7001)?;
    let sink = udp(env.wan_b(), WAN_B, 7002)?;
    sock::set_big_rcvbuf(&sink, 16 << 20).step("SO_RCVBUFFORCE")?;
    let raw = Raw::sender(env.lan_b()).step("raw socket on lan-b")?;
    r.sent(
        "3 rounds of the REQ-1 contested-port test (ports 46000, 46100, 46200), each followed \
         by 2000 new flows from lan-b (crafted, ports 30000+) to wan-b:7002",
    );
    let mut rounds = Vec::new();
    let mut loads = Vec::new();
    for (i, base) in [46000u16, 46100, 46200].into_iter().enumerate() {
        rounds.push(mapping_round(&env, base, &wan_a, &wan_b)?);
        let offset = u16::try_from(i).unwrap_or(0) * 2000;
        for port in (30000 + offset)..(32000 + offset) {
            let d = packet::udp(LAN_B, WAN_B, port, 7002, b"load");
            raw.send(&Ipv4Header::new(LAN_B, WAN_B, PROTO_UDP).packet(&d))
                .step("sending load")?;
            if port % 200 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut got = 0;
        while sock::recv_within(&sink, Duration::from_millis(300)).is_some() {
            got += 1;
        }
        loads.push(got);
    }
    r.saw(format!(
        "rounds: [{}]; load delivered {}",
        rounds.join("] ["),
        loads
            .iter()
            .map(|n| format!("{n}/2000"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    r.expect(
        !rounds[0].contains("lost"),
        "the first round's datagrams arrive",
    );
    r.expect(
        rounds.iter().all(|x| *x == rounds[0]),
        "the same behaviour in every round",
    );
    Ok(())
}

fn req_12(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-12
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let lan = udp(env.lan_a(), LAN_A, 47000)?;
    let seen_at_lan = Raw::icmp(env.lan_a()).step("raw ICMP socket on lan-a")?;
    let raw = Raw::sender(env.wan_a()).step("raw socket on wan-a")?;
    let e = open_mapping(&lan, ep(WAN_A, 7000), &wan, "lan-a :47000")?;
    let kinds = [
        (icmp_type::DEST_UNREACHABLE, unreachable::PORT),
        (icmp_type::DEST_UNREACHABLE, unreachable::HOST),
        (icmp_type::DEST_UNREACHABLE, unreachable::ADMIN_PROHIBITED),
        (icmp_type::TIME_EXCEEDED, 0),
        (icmp_type::PARAMETER_PROBLEM, 0),
    ];
    r.sent(
        "mapping lan-a :47000 -> wan-a:7000; wan-a sends ICMP 3/3, 3/1, 3/13, 11/0, 12/0 about \
            it; then traffic both ways",
    );
    for (kind, code) in kinds {
        raw.send(&udp_error_about(WAN_A, e, ep(WAN_A, 7000), kind, code))
            .step("sending an ICMP error")?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let translated = seen_at_lan
        .collect(Duration::from_millis(500), |g| {
            flows::is_error_about(g, ep(LAN_A, 47000), ep(WAN_A, 7000))
        })
        .len();
    let inbound = udp_through(&wan, e, &lan, b"after the errors")?;
    let outbound = udp_through(&lan, ep(WAN_A, 7000), &wan, b"still mapped")?;
    r.saw(format!(
        "{translated} of 5 errors reached lan-a; afterwards inbound {}, outbound from {}",
        if inbound.is_some() {
            "delivered"
        } else {
            "dropped"
        },
        show(outbound)
    ));
    r.expect(inbound.is_some(), "the mapping still lets wan-a in");
    r.expect(
        outbound == Some(e),
        "lan-a's traffic keeps its external endpoint",
    );
    Ok(())
}

fn req_12a(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-12a
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let lan = udp(env.lan_a(), LAN_A, 47100)?;
    let seen_at_lan = Raw::icmp(env.lan_a()).step("raw ICMP socket on lan-a")?;
    let raw = Raw::sender(env.wan_b()).step("raw socket on wan-b")?;
    let e = open_mapping(&lan, ep(WAN_A, 7000), &wan, "lan-a :47100")?;
    r.sent(
        "mapping lan-a :47100 -> wan-a:7000; wan-b (not the peer) sends ICMP 3/1 and 11/0 about it",
    );
    let mut got = Vec::new();
    for (kind, code) in [
        (icmp_type::DEST_UNREACHABLE, unreachable::HOST),
        (icmp_type::TIME_EXCEEDED, 0),
    ] {
        raw.send(&udp_error_about(WAN_B, e, ep(WAN_A, 7000), kind, code))
            .step("sending an ICMP error")?;
        let seen = flows::error_about(
            &seen_at_lan,
            ep(LAN_A, 47100),
            ep(WAN_A, 7000),
            sock::ARRIVE,
        );
        r.saw(format!(
            "{kind}/{code}: {}",
            seen.as_ref()
                .map_or_else(|| "not at lan-a".to_owned(), flows::describe_icmp)
        ));
        got.push(seen.is_some_and(|s| {
            s.icmp()
                .is_some_and(|m| m.kind() == kind && m.code() == code)
        }));
    }
    r.expect(
        got.iter().all(|g| *g),
        "both errors from a third party reach lan-a",
    );
    Ok(())
}

fn req_12b(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-12b
    let env = Env::start(nat, &NatConfig::default())?;
    let lan = udp(env.lan_a(), LAN_A, 47200)?;
    r.sent(
        "lan-a :47200 -> wan-a:7999 (closed: wan-a's kernel answers port unreachable); lan-a's \
            socket has IP_RECVERR",
    );
    sock::send(&lan, b"anyone?", ep(WAN_A, 7999)).step("sending")?;
    let err = sock::recv_error(&lan, sock::ARRIVE);
    r.saw(err.map_or_else(
        || "no error on lan-a's socket".to_owned(),
        |e| {
            format!(
                "lan-a's socket got ICMP {}/{} from {}",
                e.kind,
                e.code,
                e.offender.map_or("?".to_owned(), |a| a.to_string())
            )
        },
    ));
    r.expect(
        err.is_some_and(|e| {
            e.origin == sock::EE_ORIGIN_ICMP
                && e.kind == icmp_type::DEST_UNREACHABLE
                && e.code == unreachable::PORT
                && e.offender == Some(WAN_A)
        }),
        "port unreachable from wan-a reaches lan-a's socket",
    );
    Ok(())
}

fn req_13(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-13
    let cfg = NatConfig {
        wan_mtu: Some(1280),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let df = udp(env.lan_a(), LAN_A, 48000)?;
    let nodf = udp(env.lan_a(), LAN_A, 48002)?;
    sock::set_pmtu_discover(&df, libc::IP_PMTUDISC_DO).step("IP_PMTUDISC_DO")?;
    sock::set_pmtu_discover(&nodf, libc::IP_PMTUDISC_DONT).step("IP_PMTUDISC_DONT")?;
    r.sent(
        "wan0 MTU 1280; 1400-byte UDP payload from lan-a :48000 with DF, and from :48002 \
            without DF, to wan-a:7000",
    );
    let big = vec![0x5a; 1400];
    sock::send(&df, &big, ep(WAN_A, 7000)).step("sending with DF")?;
    let err = sock::recv_error(&df, sock::ARRIVE);
    let leaked = sock::recv_within(&wan, sock::SILENCE).is_some();
    let again = sock::send(&df, &big, ep(WAN_A, 7000));
    r.saw(err.map_or_else(
        || "DF: no error on lan-a's socket".to_owned(),
        |e| {
            format!(
                "DF: ICMP {}/{} next-hop MTU {} from {}",
                e.kind,
                e.code,
                e.info,
                e.offender.map_or("?".to_owned(), |a| a.to_string())
            )
        },
    ));
    r.saw(format!(
        "next DF send: {}",
        match &again {
            Ok(()) => "accepted".to_owned(),
            Err(e) => e.to_string(),
        }
    ));
    r.expect(
        err.is_some_and(|e| {
            e.kind == icmp_type::DEST_UNREACHABLE
                && e.code == unreachable::FRAG_NEEDED
                && e.info == 1280
        }),
        "ICMP fragmentation needed (MTU 1280) to the sender",
    );
    r.expect(!leaked, "the DF packet is not delivered");
    let payload: Vec<u8> = (0..1400u32).map(|i| (i % 251) as u8).collect();
    let seen = udp_through(&nodf, ep(WAN_A, 7000), &wan, &payload)?;
    r.saw(format!(
        "no DF: wan-a got the 1400 bytes from {}",
        show(seen)
    ));
    r.expect(
        seen.is_some_and(|s| *s.ip() == EXT),
        "without DF the datagram is fragmented and delivered, translated",
    );
    Ok(())
}

/// A datagram of `len` bytes whose content names `tag`.
fn pattern(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add((i % 97) as u8)).collect()
}

/// The fragments of UDP `src -> dst` carrying `payload`, `chunk` bytes each.
fn udp_fragments(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
    id: u16,
    chunk: usize,
) -> Vec<Vec<u8>> {
    let d = packet::udp(*src.ip(), *dst.ip(), src.port(), dst.port(), payload);
    let mut h = Ipv4Header::new(*src.ip(), *dst.ip(), PROTO_UDP);
    h.id = id;
    packet::fragments(&h, &d, chunk)
}

fn req_14(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-14
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let lan = udp(env.lan_a(), LAN_A, 49000)?;
    let lan_raw = Raw::sender(env.lan_a()).step("raw socket on lan-a")?;
    let wan_raw = Raw::sender(env.wan_a()).step("raw socket on wan-a")?;
    let e = open_mapping(&lan, ep(WAN_A, 7000), &wan, "lan-a :49000")?;
    r.sent(
        "mapping lan-a :49000 <-> wan-a:7000; out: 3000 bytes fragmented by lan-a's kernel, \
         2400 bytes in 3 crafted fragments sent last-first; in: 2400 bytes in 3 fragments in \
         order, and last-first",
    );
    let a = pattern(1, 3000);
    let out_in_order = udp_through(&lan, ep(WAN_A, 7000), &wan, &a)?;
    let b = pattern(2, 2400);
    for f in udp_fragments(ep(LAN_A, 49000), ep(WAN_A, 7000), &b, 0x1402, 1000)
        .iter()
        .rev()
    {
        lan_raw.send(f).step("sending a fragment")?;
    }
    let out_reversed = sock::recv_payload(&wan, &b, sock::ARRIVE);
    let c = pattern(3, 2400);
    for f in &udp_fragments(ep(WAN_A, 7000), e, &c, 0x1403, 1000) {
        wan_raw.send(f).step("sending a fragment")?;
    }
    let in_in_order = sock::recv_payload(&lan, &c, sock::ARRIVE);
    let d = pattern(4, 2400);
    for f in udp_fragments(ep(WAN_A, 7000), e, &d, 0x1404, 1000)
        .iter()
        .rev()
    {
        wan_raw.send(f).step("sending a fragment")?;
    }
    let in_reversed = sock::recv_payload(&lan, &d, sock::ARRIVE);
    r.saw(format!(
        "wan-a got: in order from {}, reversed from {}; lan-a got: in order from {}, reversed from \
         {}",
        show(out_in_order),
        show(out_reversed),
        show(in_in_order),
        show(in_reversed)
    ));
    r.expect(
        out_in_order == Some(e),
        "outbound in-order fragments arrive whole from the external endpoint",
    );
    r.expect(
        out_reversed == Some(e),
        "outbound out-of-order fragments arrive whole from the external endpoint",
    );
    r.expect(
        in_in_order == Some(ep(WAN_A, 7000)),
        "inbound in-order fragments reach lan-a whole",
    );
    r.expect(
        in_reversed == Some(ep(WAN_A, 7000)),
        "inbound out-of-order fragments reach lan-a whole",
    );
    Ok(())
}

/// Counts datagrams on `sock` until `stop`, by content class: (small, big).
fn count_until(sock: UdpSocket, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, usize)> {
    std::thread::spawn(move || {
        let (mut small, mut big) = (0, 0);
        loop {
            match sock::recv_within(&sock, Duration::from_millis(200)) {
                Some((d, _)) if d.len() > 1500 => big += 1,
                Some(_) => small += 1,
                None if stop.load(Ordering::Relaxed) => return (small, big),
                None => {}
            }
        }
    })
}

fn req_14a(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc4787 REQ-14a
    const FLOOD: u16 = 20_000;
    const FLOW: usize = 200;
    const BIG_EVERY: usize = 10;
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let lan = udp(env.lan_a(), LAN_A, 49100)?;
    let flood_raw = Raw::sender(env.wan_b()).step("raw socket on wan-b")?;
    let e = open_mapping(&lan, ep(WAN_A, 7000), &wan, "lan-a :49100")?;
    r.sent(format!(
        "wan-b floods the mapping with {FLOOD} first fragments that never complete (~2 s) while \
         wan-a and lan-a exchange {FLOW} small datagrams each way and wan-a sends {} 2000-byte \
         (fragmented, in order) ones",
        FLOW / BIG_EVERY
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let at_lan = count_until(lan.try_clone().step("cloning")?, stop.clone());
    let at_wan = count_until(wan.try_clone().step("cloning")?, stop.clone());
    let flood = std::thread::spawn(move || {
        let mut h = Ipv4Header::new(WAN_B, *e.ip(), PROTO_UDP);
        h.mf = true;
        let d = packet::udp(WAN_B, *e.ip(), 7000, e.port(), &[0xee; 1200]);
        let mut sent = 0u32;
        for id in 0..FLOOD {
            h.id = id;
            if flood_raw.send(&h.packet(&d[..64])).is_ok() {
                sent += 1;
            }
            if id % 200 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        sent
    });
    let big = vec![0xb1; 2000];
    for i in 0..FLOW {
        let _ = wan.send_to(format!("in {i}").as_bytes(), e);
        let _ = lan.send_to(format!("out {i}").as_bytes(), ep(WAN_A, 7000));
        if i % BIG_EVERY == 0 {
            let _ = wan.send_to(&big, e);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let flooded = flood.join().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (small_in, big_in) = at_lan.join().unwrap_or((0, 0));
    let (small_out, _) = at_wan.join().unwrap_or((0, 0));
    let big_sent = FLOW / BIG_EVERY;
    let budget = env.natgw().map_or_else(String::new, |n| {
        format!(
            "; natgw dropped {} flood fragments over their source's budget",
            n.counter("drop_fragment_budget")
                .unwrap_or_else(|e| panic!("{e}"))
        )
    });
    r.saw(format!(
        "{flooded} flood fragments sent; delivered: inbound {small_in}/{FLOW}, outbound \
         {small_out}/{FLOW}, fragmented inbound {big_in}/{big_sent}{budget}"
    ));
    let enough = |got: usize, of: usize| got * 100 >= of * 95;
    r.expect(
        enough(small_in, FLOW),
        "inbound unfragmented traffic >= 95% delivered",
    );
    r.expect(
        enough(small_out, FLOW),
        "outbound unfragmented traffic >= 95% delivered",
    );
    r.expect(
        enough(big_in, big_sent),
        "in-order fragmented traffic >= 95% delivered (RFC 4787 REQ-14a names in-order and \
         unfragmented packets)",
    );
    Ok(())
}
