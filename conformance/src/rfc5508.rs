//! RFC 5508 (BCP 148): ICMP behaviour — query mapping, query timeouts, error
//! validation and translation in both directions and through hairpinning, and
//! "destination unreachable, communication administratively prohibited" when no
//! mapping can be made.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::flows::{
    self, ep, show, udp, udp_through, Timeline, EXT, LAN_A, LAN_B, TTL_FROM_INSIDE, WAN_A, WAN_B,
};
use super::nat::{NatConfig, NatUnderTest};
use super::packet::{self, icmp_type, unreachable, Ipv4Header, PROTO_ICMP};
use super::sock::{self, Ping, Raw, Received};
use super::{Check, Env, Record, Step as _, Stop};

/// The RFC 5508 checks.
#[must_use]
pub fn checks() -> Vec<Check> {
    vec![
        Check {
            id: "RFC 5508 REQ-1",
            test: "rfc5508_req_1_echo_through_nat",
            title: "echo request and reply pass",
            run: req_1,
        },
        Check {
            id: "RFC 5508 REQ-1a",
            test: "rfc5508_req_1a_query_id_mapping_endpoint_independent",
            title: "query identifier mapping is endpoint-independent",
            run: req_1a,
        },
        Check {
            id: "RFC 5508 REQ-2",
            test: "rfc5508_req_2_query_session_timeout",
            title: "query session >= 60 s, configurable",
            run: req_2,
        },
        Check {
            id: "RFC 5508 REQ-3",
            test: "rfc5508_req_3_icmp_error_validation",
            title:
                "errors with bad checksums dropped; options, transport checksum, RFC 4884 handled",
            run: req_3,
        },
        Check {
            id: "RFC 5508 REQ-4",
            test: "rfc5508_req_4_inbound_error_translated",
            title: "inbound error rewritten to internal form; no mapping, dropped",
            run: req_4,
        },
        Check {
            id: "RFC 5508 REQ-5",
            test: "rfc5508_req_5_outbound_error_translated",
            title: "outbound error rewritten to external form",
            run: req_5,
        },
        Check {
            id: "RFC 5508 REQ-6",
            test: "rfc5508_req_6_error_does_not_refresh_query",
            title: "an error about a query session neither refreshes nor deletes it",
            run: req_6,
        },
        Check {
            id: "RFC 5508 REQ-7",
            test: "rfc5508_req_7_hairpinned_icmp_error",
            title: "hairpinned ICMP errors traverse",
            run: req_7,
        },
        Check {
            id: "RFC 5508 REQ-7a",
            test: "rfc5508_req_7a_hairpinned_error_outer_destination",
            title: "a hairpinned error's outer addresses are fixed up",
            run: req_7a,
        },
        Check {
            id: "RFC 5508 REQ-8",
            test: "rfc5508_req_8_unreachable_code_13_when_no_mapping",
            title: "no mapping possible: ICMP destination unreachable code 13",
            run: req_8,
        },
        Check {
            id: "RFC 5508 REQ-10",
            test: "rfc5508_req_10_icmp_types",
            title: "unreachable, time exceeded, parameter problem, echo, timestamp",
            run: req_10,
        },
    ]
}

/// Echo requests seen by `raw` with sequence number `seq`: their source and identifier.
fn echo_request_seen(raw: &Raw, seq: u16) -> Option<(Ipv4Addr, u16)> {
    raw.recv_matching(sock::ARRIVE, |g| {
        g.icmp()
            .is_some_and(|m| m.kind() == icmp_type::ECHO_REQUEST && m.seq() == seq)
    })
    .and_then(|g| Some((g.ip().src(), g.icmp()?.ident())))
}

fn show_id(v: Option<(Ipv4Addr, u16)>) -> String {
    v.map_or_else(
        || "nothing".to_owned(),
        |(a, id)| format!("{a} id {id:#06x}"),
    )
}

fn req_1(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5508 REQ-1
    let env = Env::start(nat, &NatConfig::default())?;
    let at_wan = Raw::icmp(env.wan_a()).step("raw ICMP socket on wan-a")?;
    let ping = Ping::open(env.lan_a(), LAN_A, 0x1234).step("ping socket on lan-a")?;
    r.sent("echo request lan-a (id 0x1234) -> wan-a; wan-a's kernel answers");
    ping.echo(WAN_A, 1, b"natgw conformance")
        .step("sending the echo request")?;
    let seen = echo_request_seen(&at_wan, 1);
    let reply = ping.reply(1, sock::ARRIVE);
    r.saw(format!(
        "wan-a got the request from {}; lan-a {}",
        show_id(seen),
        reply.as_ref().map_or_else(
            || "got no reply".to_owned(),
            |rep| format!("got the reply from {}", rep.from)
        )
    ));
    r.expect(
        seen.is_some_and(|(a, _)| a == EXT),
        "the request leaves from the external address",
    );
    r.expect(
        reply.is_some_and(|rep| rep.from == WAN_A && rep.data == b"natgw conformance"),
        "the reply reaches lan-a",
    );
    Ok(())
}

fn req_1a(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5508 REQ-1a
    let env = Env::start(nat, &NatConfig::default())?;
    let at_a = Raw::icmp(env.wan_a()).step("raw ICMP socket on wan-a")?;
    let at_b = Raw::icmp(env.wan_b()).step("raw ICMP socket on wan-b")?;
    let ping_b = Ping::open(env.lan_b(), LAN_B, 0x2222).step("ping socket on lan-b")?;
    let ping_a = Ping::open(env.lan_a(), LAN_A, 0x2222).step("ping socket on lan-a")?;
    r.sent(
        "echo lan-b (id 0x2222) -> wan-b first (id contested), then lan-a (id 0x2222) -> wan-a \
            and -> wan-b",
    );
    ping_b.echo(WAN_B, 1, b"b").step("echo")?;
    let idb = echo_request_seen(&at_b, 1);
    let _ = ping_b.reply(1, sock::ARRIVE);
    ping_a.echo(WAN_A, 2, b"a to a").step("echo")?;
    let id1 = echo_request_seen(&at_a, 2);
    let rep1 = ping_a.reply(2, sock::ARRIVE);
    ping_a.echo(WAN_B, 3, b"a to b").step("echo")?;
    let id2 = echo_request_seen(&at_b, 3);
    let rep2 = ping_a.reply(3, sock::ARRIVE);
    r.saw(format!(
        "lan-b as {}; lan-a as {} at wan-a, {} at wan-b; replies to lan-a: {}, {}",
        show_id(idb),
        show_id(id1),
        show_id(id2),
        if rep1.is_some() { "yes" } else { "no" },
        if rep2.is_some() { "yes" } else { "no" }
    ));
    r.expect(
        id1.is_some() && id2.is_some(),
        "both of lan-a's requests arrive",
    );
    r.expect(
        id1 == id2,
        "one external identifier for lan-a's id towards both hosts",
    );
    r.expect(
        idb != id2,
        "lan-b and lan-a do not share an identifier towards wan-b",
    );
    r.expect(rep1.is_some() && rep2.is_some(), "both replies reach lan-a");
    Ok(())
}

/// An echo reply from wan-a to the external query identifier `id`.
fn crafted_echo_reply(id: u16, seq: u16) -> Vec<u8> {
    let msg = packet::icmp_echo(icmp_type::ECHO_REPLY, id, seq, b"crafted reply");
    Ipv4Header::new(WAN_A, EXT, PROTO_ICMP).packet(&msg)
}

fn req_2(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5508 REQ-2
    {
        let env = Env::start(nat, &NatConfig::default())?;
        let (t, what) = if env.natgw().is_some() {
            match env
                .natgw_config(&["timeouts", "icmp"])
                .and_then(|v| v.as_u64())
            {
                Some(t) => (Some(t), "natgw status config.timeouts.icmp"),
                None => (
                    env.natgw_config(&["timeouts", "udp"])
                        .and_then(|v| v.as_u64()),
                    "natgw status config.timeouts.udp (covers ICMP: no ICMP timeout listed)",
                ),
            }
        } else {
            (
                env.gateway_sysctl("net/netfilter/nf_conntrack_icmp_timeout")
                    .and_then(|v| v.parse().ok()),
                "nf_conntrack_icmp_timeout",
            )
        };
        r.sent(format!("default configuration: {what}"));
        r.saw(format!(
            "default query timeout {} s",
            t.map_or("?".to_owned(), |t| t.to_string())
        ));
        r.expect(t.is_some_and(|t| t >= 60), "default >= 60 s");
    }
    let cfg = NatConfig {
        icmp_timeout: Some(3),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let at_wan = Raw::icmp(env.wan_a()).step("raw ICMP socket on wan-a")?;
    let sender = Raw::sender(env.wan_a()).step("raw socket on wan-a")?;
    let ping = Ping::open(env.lan_a(), LAN_A, 0x3333).step("ping socket on lan-a")?;
    r.sent(
        "query timeout 3 s: echo lan-a -> wan-a at 0 s; wan-a sends echo replies to the \
            external id at 1 s and 7 s",
    );
    let t = Timeline::start();
    ping.echo(WAN_A, 1, b"open").step("echo")?;
    let (_, id) = echo_request_seen(&at_wan, 1)
        .ok_or_else(|| Stop::Error("the echo request did not reach wan-a".to_owned()))?;
    let first = ping.reply(1, sock::ARRIVE).is_some();
    t.at(1.0);
    sender.send(&crafted_echo_reply(id, 100)).step("sending")?;
    let early = ping.reply(100, sock::ARRIVE).is_some();
    t.at(7.0);
    sender.send(&crafted_echo_reply(id, 101)).step("sending")?;
    let late = ping.reply(101, sock::SILENCE).is_some();
    let word = |b: bool| if b { "delivered" } else { "dropped" };
    r.saw(format!(
        "configured 3 s: real reply {}, crafted reply at 1 s {}, at 7 s {}",
        word(first),
        word(early),
        word(late)
    ));
    r.expect(first && early, "the session works within its timeout");
    r.expect(!late, "the session has expired after the configured 3 s");
    Ok(())
}

/// One variant of REQ-3: an error from wan-a about `e -> wan-a:7000`, altered by
/// `alter`, and whether it should reach lan-a.
struct Variant {
    name: &'static str,
    packet: Vec<u8>,
    should_arrive: bool,
}

/// The variants of an error about the UDP flow `e -> wan-a:7000`.
fn variants(e: SocketAddrV4) -> Vec<Variant> {
    let dst = ep(WAN_A, 7000);
    let outer = |msg: &[u8]| Ipv4Header::new(WAN_A, EXT, PROTO_ICMP).packet(msg);
    let udp = packet::udp(*e.ip(), WAN_A, e.port(), 7000, b"quoted payload");
    let quoted = |h: Ipv4Header| h.packet(&udp);
    let plain = Ipv4Header::new(*e.ip(), WAN_A, packet::PROTO_UDP);
    let error =
        |q: &[u8]| packet::icmp_error(icmp_type::DEST_UNREACHABLE, unreachable::PORT, [0; 4], q);

    let valid = outer(&error(&flows::quoted_udp(e, dst, 0x3001)));
    let mut bad_icmp = error(&flows::quoted_udp(e, dst, 0x3002));
    bad_icmp[2] ^= 0x12;
    let mut bad_ip = plain.clone();
    bad_ip.bad_checksum = true;
    bad_ip.id = 0x3003;
    let mut with_options = plain.clone();
    with_options.options = vec![1, 1, 1, 0];
    with_options.id = 0x3004;
    let mut bad_udp = quoted(Ipv4Header {
        id: 0x3005,
        ..plain.clone()
    });
    bad_udp[20 + 6] ^= 0x55;
    // RFC 4884: the quoted datagram padded to 128 bytes, its length in 32-bit words in
    // the second byte of the rest-of-header, then an extension structure.
    let long_udp = packet::udp(*e.ip(), WAN_A, e.port(), 7000, &[0x44; 100]);
    let mut original = Ipv4Header {
        id: 0x3006,
        ..plain
    }
    .packet(&long_udp);
    original.truncate(128);
    let mut ext = vec![0x20, 0, 0, 0, 0, 8, 1, 1, 0xde, 0xad, 0xbe, 0xef];
    let c = packet::checksum(&ext);
    ext[2..4].copy_from_slice(&c.to_be_bytes());
    let mut body = original;
    body.extend_from_slice(&ext);
    let rfc4884 = packet::icmp(
        icmp_type::DEST_UNREACHABLE,
        unreachable::PORT,
        [0, 32, 0, 0],
        &body,
    );
    vec![
        Variant {
            name: "valid",
            packet: valid,
            should_arrive: true,
        },
        Variant {
            name: "bad ICMP checksum",
            packet: outer(&bad_icmp),
            should_arrive: false,
        },
        Variant {
            name: "bad quoted IP checksum",
            packet: outer(&error(&quoted(bad_ip))),
            should_arrive: false,
        },
        Variant {
            name: "quoted IP options",
            packet: outer(&error(&quoted(with_options))),
            should_arrive: true,
        },
        Variant {
            name: "bad quoted UDP checksum",
            packet: outer(&error(&bad_udp)),
            should_arrive: true,
        },
        Variant {
            name: "RFC 4884 extension",
            packet: outer(&rfc4884),
            should_arrive: true,
        },
    ]
}

fn req_3(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5508 REQ-3
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let lan = udp(env.lan_a(), LAN_A, 51000)?;
    let at_lan = Raw::icmp(env.lan_a()).step("raw ICMP socket on lan-a")?;
    let sender = Raw::sender(env.wan_a()).step("raw socket on wan-a")?;
    let e = udp_through(&lan, ep(WAN_A, 7000), &wan, b"open")?
        .ok_or_else(|| Stop::Error("the mapping was not made".to_owned()))?;
    r.sent(
        "mapping lan-a :51000 -> wan-a:7000; wan-a sends port unreachable about it: valid, with a \
         bad ICMP checksum, a bad quoted IP checksum, quoted IP options, a bad quoted UDP \
         checksum, an RFC 4884 extension",
    );
    let mut results = Vec::new();
    for v in variants(e) {
        at_lan.drain();
        sender.send(&v.packet).step("sending an error")?;
        let within = if v.should_arrive {
            sock::ARRIVE
        } else {
            sock::SILENCE
        };
        let got = flows::error_about(&at_lan, ep(LAN_A, 51000), ep(WAN_A, 7000), within);
        let intact = got.as_ref().is_some_and(|g| {
            g.icmp()
                .is_some_and(|m| m.checksum_ok() && m.quoted().is_some_and(|q| q.checksum_ok()))
        });
        results.push(format!(
            "{}: {}",
            v.name,
            match (&got, intact) {
                (None, _) => "dropped",
                (Some(_), true) => "delivered",
                (Some(_), false) => "delivered with a bad checksum",
            }
        ));
        r.expect(
            got.is_some() == v.should_arrive && (got.is_none() || intact),
            format!(
                "{} {}",
                v.name,
                if v.should_arrive {
                    "delivered with valid checksums"
                } else {
                    "dropped"
                }
            ),
        );
    }
    r.saw(results.join(", "));
    Ok(())
}

fn req_4(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5508 REQ-4
    let env = Env::start(nat, &NatConfig::default())?;
    let lan = udp(env.lan_a(), LAN_A, 51100)?;
    let at_a = Raw::icmp(env.lan_a()).step("raw ICMP socket on lan-a")?;
    let at_b = Raw::icmp(env.lan_b()).step("raw ICMP socket on lan-b")?;
    let sender = Raw::sender(env.wan_a()).step("raw socket on wan-a")?;
    r.sent(
        "lan-a :51100 -> wan-a:7999 (closed: wan-a's kernel answers port unreachable); then wan-a \
         sends port unreachable about 192.0.2.1:51999 -> wan-a:7000, which has no mapping",
    );
    sock::send(&lan, b"anyone?", ep(WAN_A, 7999)).step("sending")?;
    let got = flows::error_about(&at_a, ep(LAN_A, 51100), ep(WAN_A, 7999), sock::ARRIVE);
    r.saw(format!(
        "lan-a got {}",
        got.as_ref()
            .map_or_else(|| "nothing".to_owned(), flows::describe_icmp)
    ));
    r.expect(
        got.as_ref().is_some_and(|g| {
            let ip = g.ip();
            ip.src() == WAN_A
                && ip.dst() == LAN_A
                && g.icmp().is_some_and(|m| {
                    m.kind() == icmp_type::DEST_UNREACHABLE
                        && m.code() == unreachable::PORT
                        && m.checksum_ok()
                        && m.quoted().is_some_and(|q| q.checksum_ok())
                })
        }),
        "lan-a gets 3/3 from wan-a quoting its own datagram, checksums valid",
    );
    at_a.drain();
    at_b.drain();
    sender
        .send(&flows::udp_error_about(
            WAN_A,
            ep(EXT, 51999),
            ep(WAN_A, 7000),
            icmp_type::DEST_UNREACHABLE,
            unreachable::PORT,
        ))
        .step("sending")?;
    let stray = |g: &Received| {
        g.icmp().is_some_and(|m| {
            m.is_error()
                && m.quoted()
                    .is_some_and(|q| q.dst() == WAN_A && q.ports().is_some_and(|p| p.1 == 7000))
        })
    };
    let leaked = at_a
        .recv_matching(sock::SILENCE, stray)
        .or_else(|| at_b.recv_matching(Duration::from_millis(100), stray));
    r.saw(format!(
        "error without a mapping: {}",
        leaked.as_ref().map_or_else(
            || "reached no LAN host".to_owned(),
            |g| format!("LEAKED {}", flows::describe_icmp(g))
        )
    ));
    r.expect(leaked.is_none(), "an error without a mapping is dropped");
    Ok(())
}

fn req_5(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5508 REQ-5
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let at_wan = Raw::icmp(env.wan_a()).step("raw ICMP socket on wan-a")?;
    let at_lan = Raw::udp(env.lan_a()).step("raw UDP socket on lan-a")?;
    r.sent(
        "lan-a :51200 -> wan-a:7000, then lan-a closes the socket; wan-a sends to the \
         mapping; lan-a's kernel answers port unreachable",
    );
    let e = {
        let lan = udp(env.lan_a(), LAN_A, 51200)?;
        udp_through(&lan, ep(WAN_A, 7000), &wan, b"open")?
            .ok_or_else(|| Stop::Error("the mapping was not made".to_owned()))?
    };
    at_lan.drain();
    sock::send(&wan, b"probe", e).step("sending")?;
    let reached = at_lan
        .recv_matching(sock::ARRIVE, |g| {
            g.ip().dst() == LAN_A && g.ip().ports() == Some((7000, 51200))
        })
        .is_some();
    let got = at_wan.recv_matching(sock::ARRIVE, |g| {
        g.icmp().is_some_and(|m| {
            m.is_error()
                && m.quoted()
                    .is_some_and(|q| q.src() == WAN_A && q.ports().is_some_and(|p| p.0 == 7000))
        })
    });
    r.saw(format!(
        "the probe {} lan-a; wan-a got {}",
        if reached { "reached" } else { "did not reach" },
        got.as_ref()
            .map_or_else(|| "nothing".to_owned(), flows::describe_icmp)
    ));
    r.expect(
        reached,
        "wan-a's datagram reaches lan-a through the mapping",
    );
    r.expect(
        got.as_ref()
            .is_some_and(|g| g.ip().ttl() == TTL_FROM_INSIDE),
        "the error comes from lan-a through the gateway (TTL 62), not from the gateway itself",
    );
    r.expect(
        got.as_ref().is_some_and(|g| {
            g.ip().src() == EXT
                && flows::is_error_about(g, ep(WAN_A, 7000), e)
                && g.icmp().is_some_and(|m| {
                    m.kind() == icmp_type::DEST_UNREACHABLE
                        && m.code() == unreachable::PORT
                        && m.checksum_ok()
                        && m.quoted().is_some_and(|q| q.checksum_ok())
                })
        }),
        "wan-a gets 3/3 from 192.0.2.1 quoting wan-a:7000 -> the external endpoint, checksums \
         valid",
    );
    Ok(())
}

fn req_6(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5508 REQ-6
    let cfg = NatConfig {
        icmp_timeout: Some(3),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let at_wan = Raw::icmp(env.wan_a()).step("raw ICMP socket on wan-a")?;
    let at_lan = Raw::icmp(env.lan_a()).step("raw ICMP socket on lan-a")?;
    let sender = Raw::sender(env.wan_a()).step("raw socket on wan-a")?;
    let ping = Ping::open(env.lan_a(), LAN_A, 0x4444).step("ping socket on lan-a")?;
    r.sent(
        "query timeout 3 s: echo lan-a -> wan-a at 0 s; wan-a sends host unreachable about the \
         session at 0.5 s and every second from 1.5 s to 5.5 s, echo replies to it at 1 s and 7 s",
    );
    let t = Timeline::start();
    ping.echo(WAN_A, 1, b"open").step("echo")?;
    let (_, id) = echo_request_seen(&at_wan, 1)
        .ok_or_else(|| Stop::Error("the echo request did not reach wan-a".to_owned()))?;
    let _ = ping.reply(1, sock::ARRIVE);
    let quoted_echo = Ipv4Header::new(EXT, WAN_A, PROTO_ICMP).packet(&packet::icmp_echo(
        icmp_type::ECHO_REQUEST,
        id,
        1,
        b"open",
    ));
    let error = Ipv4Header::new(WAN_A, EXT, PROTO_ICMP).packet(&packet::icmp_error(
        icmp_type::DEST_UNREACHABLE,
        unreachable::HOST,
        [0; 4],
        &quoted_echo,
    ));
    t.at(0.5);
    sender.send(&error).step("sending an error")?;
    t.at(1.0);
    sender.send(&crafted_echo_reply(id, 200)).step("sending")?;
    let kept = ping.reply(200, sock::ARRIVE).is_some();
    for i in 0..5u8 {
        t.at(1.5 + f64::from(i));
        sender.send(&error).step("sending an error")?;
    }
    t.at(7.0);
    sender.send(&crafted_echo_reply(id, 201)).step("sending")?;
    let late = ping.reply(201, sock::SILENCE).is_some();
    let errors_in = at_lan
        .collect(Duration::from_millis(100), |g| {
            g.icmp().is_some_and(|m| {
                m.is_error()
                    && m.quoted()
                        .is_some_and(|q| q.src() == LAN_A && q.proto() == PROTO_ICMP)
            })
        })
        .len();
    r.saw(format!(
        "{errors_in} of 6 errors reached lan-a; reply at 1 s {}, at 7 s {}",
        if kept { "delivered" } else { "dropped" },
        if late { "delivered" } else { "dropped" }
    ));
    r.expect(
        errors_in > 0,
        "the errors are translated to lan-a (so the NAT handled them)",
    );
    r.expect(kept, "an error does not delete the session");
    r.expect(
        !late,
        "errors do not refresh the session: it expired after 3 s",
    );
    Ok(())
}

/// lan-a and lan-b map from :52000 and :52100; lan-a opens its filter to lan-b's
/// external endpoint, closes its socket; lan-b sends to lan-a's external endpoint and
/// lan-a's kernel answers port unreachable. What lan-b's raw socket saw.
fn hairpin_error(
    nat: &NatUnderTest,
    r: &mut Record,
) -> Result<(Option<Received>, SocketAddrV4, SocketAddrV4), Stop> {
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let lan_b = udp(env.lan_b(), LAN_B, 52100)?;
    let at_b = Raw::icmp(env.lan_b()).step("raw ICMP socket on lan-b")?;
    r.sent(
        "lan-a :52000 and lan-b :52100 -> wan-a:7000 (Ea, Eb); lan-a -> Eb, then lan-a closes \
         its socket; lan-b -> Ea, which hairpins to lan-a; lan-a's kernel answers port unreachable",
    );
    let eb = udp_through(&lan_b, ep(WAN_A, 7000), &wan, b"open b")?
        .ok_or_else(|| Stop::Error("lan-b's mapping was not made".to_owned()))?;
    let ea = {
        let lan_a = udp(env.lan_a(), LAN_A, 52000)?;
        let ea = udp_through(&lan_a, ep(WAN_A, 7000), &wan, b"open a")?
            .ok_or_else(|| Stop::Error("lan-a's mapping was not made".to_owned()))?;
        let _ = flows::udp_blocked(&lan_a, eb, &lan_b, b"punch")?;
        ea
    };
    let at_a = Raw::udp(env.lan_a()).step("raw UDP socket on lan-a")?;
    at_b.drain();
    sock::send(&lan_b, b"to a closed port", ea).step("sending")?;
    let reached = at_a
        .recv_matching(sock::ARRIVE, |g| {
            g.ip().dst() == LAN_A && g.ip().ports() == Some((eb.port(), 52000))
        })
        .is_some();
    let got = at_b.recv_matching(sock::ARRIVE, |g| {
        g.icmp().is_some_and(|m| {
            m.is_error()
                && m.quoted().is_some_and(|q| {
                    q.ports()
                        .is_some_and(|p| p.0 == 52100 || p.1 == 52100 || p.1 == ea.port())
                })
        })
    });
    r.saw(format!(
        "Ea {ea}, Eb {eb}; lan-b's datagram {} lan-a; lan-b got {}",
        if reached { "reached" } else { "did not reach" },
        got.as_ref()
            .map_or_else(|| "nothing".to_owned(), flows::describe_icmp)
    ));
    // Without the hairpin the gateway's own stack answers lan-b with an error that
    // looks the same except for its TTL: only lan-a's, forwarded once, has 63.
    r.expect(reached, "lan-b's datagram to Ea is hairpinned to lan-a");
    r.expect(
        got.as_ref().is_some_and(|g| g.ip().ttl() < 64),
        "the error comes from lan-a through the gateway, not from the gateway itself",
    );
    Ok((got, ea, eb))
}

fn req_7(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5508 REQ-7
    let (got, ea, _) = hairpin_error(nat, r)?;
    r.expect(
        got.as_ref().is_some_and(|g| {
            flows::is_error_about(g, ep(LAN_B, 52100), ea)
                && g.icmp().is_some_and(|m| {
                    m.kind() == icmp_type::DEST_UNREACHABLE && m.code() == unreachable::PORT
                })
        }),
        "lan-b gets the port unreachable, quoting its own datagram to Ea",
    );
    Ok(())
}

fn req_7a(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5508 REQ-7a
    let (got, ea, _) = hairpin_error(nat, r)?;
    r.expect(
        got.as_ref().is_some_and(|g| {
            let ip = g.ip();
            ip.dst() == LAN_B
                && ip.src() == *ea.ip()
                && g.icmp()
                    .is_some_and(|m| m.checksum_ok() && m.quoted().is_some_and(|q| q.checksum_ok()))
        }),
        "outer destination lan-b, outer source Ea's address, checksums valid",
    );
    Ok(())
}

fn req_8(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5508 REQ-8
    let cfg = NatConfig {
        port_range: Some((20000, 20001)),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let a0 = udp(env.lan_a(), LAN_A, 20000)?;
    let a1 = udp(env.lan_a(), LAN_A, 20001)?;
    let b = udp(env.lan_b(), LAN_B, 20000)?;
    let at_b = Raw::icmp(env.lan_b()).step("raw ICMP socket on lan-b")?;
    r.sent(
        "port range 20000-20001: lan-a :20000 and :20001 -> wan-a:7000 take both ports; lan-b \
            :20000 -> wan-a:7000",
    );
    let ea0 = udp_through(&a0, ep(WAN_A, 7000), &wan, b"a0")?;
    let ea1 = udp_through(&a1, ep(WAN_A, 7000), &wan, b"a1")?;
    if ea0.is_none() || ea1.is_none() {
        return Err(Stop::Error("lan-a's mappings were not made".to_owned()));
    }
    let leaked = flows::udp_blocked(&b, ep(WAN_A, 7000), &wan, b"no port left")?;
    let got = flows::error_about(&at_b, ep(LAN_B, 20000), ep(WAN_A, 7000), sock::ARRIVE);
    let queued = sock::recv_error(&b, Duration::from_millis(200));
    r.saw(format!(
        "wan-a got lan-b's datagram from {}; lan-b got {}{}",
        show(leaked),
        got.as_ref()
            .map_or_else(|| "no ICMP".to_owned(), flows::describe_icmp),
        queued.map_or_else(String::new, |q| format!(
            " (socket error {}/{})",
            q.kind, q.code
        ))
    ));
    r.expect(leaked.is_none(), "lan-b's datagram is dropped");
    r.expect(
        got.as_ref().is_some_and(|g| {
            g.icmp().is_some_and(|m| {
                m.kind() == icmp_type::DEST_UNREACHABLE
                    && m.code() == unreachable::ADMIN_PROHIBITED
                    && m.checksum_ok()
            })
        }),
        "lan-b gets ICMP destination unreachable code 13 quoting its datagram",
    );
    Ok(())
}

fn req_10(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5508 REQ-10
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let lan = udp(env.lan_a(), LAN_A, 53000)?;
    let at_lan = Raw::icmp(env.lan_a()).step("raw ICMP socket on lan-a")?;
    let sender = Raw::sender(env.wan_a()).step("raw socket on wan-a")?;
    let e = udp_through(&lan, ep(WAN_A, 7000), &wan, b"open")?
        .ok_or_else(|| Stop::Error("the mapping was not made".to_owned()))?;
    r.sent(
        "mapping lan-a :53000 -> wan-a:7000: a datagram with TTL 2 (the inet router answers time \
         exceeded); wan-a sends parameter problem and host unreachable about the mapping; lan-a \
         sends an echo and a timestamp request to wan-a",
    );
    let flow = (ep(LAN_A, 53000), ep(WAN_A, 7000));
    let mut results = Vec::new();
    let mut check = |name: &str, got: Option<Received>, kind: u8, r: &mut Record| {
        results.push(format!(
            "{name}: {}",
            got.as_ref()
                .map_or_else(|| "nothing".to_owned(), flows::describe_icmp)
        ));
        r.expect(
            got.as_ref().is_some_and(|g| {
                g.icmp()
                    .is_some_and(|m| m.kind() == kind && m.checksum_ok())
            }),
            format!("{name} reaches lan-a"),
        );
    };
    at_lan.drain();
    lan.set_ttl(2).step("IP_TTL")?;
    sock::send(&lan, b"ttl 2", ep(WAN_A, 7000)).step("sending")?;
    lan.set_ttl(64).step("IP_TTL")?;
    check(
        "time exceeded",
        flows::error_about(&at_lan, flow.0, flow.1, sock::ARRIVE),
        icmp_type::TIME_EXCEEDED,
        r,
    );
    for (name, kind, code) in [
        ("parameter problem", icmp_type::PARAMETER_PROBLEM, 0),
        (
            "destination unreachable",
            icmp_type::DEST_UNREACHABLE,
            unreachable::HOST,
        ),
    ] {
        at_lan.drain();
        sender
            .send(&flows::udp_error_about(
                WAN_A,
                e,
                ep(WAN_A, 7000),
                kind,
                code,
            ))
            .step("sending")?;
        check(
            name,
            flows::error_about(&at_lan, flow.0, flow.1, sock::ARRIVE),
            kind,
            r,
        );
    }
    let ping = Ping::open(env.lan_a(), LAN_A, 0x5555).step("ping socket on lan-a")?;
    at_lan.drain();
    ping.echo(WAN_A, 7, b"echo").step("echo")?;
    let echo = at_lan.recv_matching(sock::ARRIVE, |g| {
        g.ip().src() == WAN_A
            && g.icmp()
                .is_some_and(|m| m.kind() == icmp_type::ECHO_REPLY && m.seq() == 7)
    });
    check("echo reply", echo, icmp_type::ECHO_REPLY, r);
    let mut ts = vec![0u8; 12];
    ts[..4].copy_from_slice(&1000u32.to_be_bytes());
    let request = packet::icmp(icmp_type::TIMESTAMP, 0, [0x66, 0x66, 0, 1], &ts);
    at_lan
        .send_icmp(&request, WAN_A)
        .step("sending a timestamp request")?;
    let reply = at_lan.recv_matching(sock::ARRIVE, |g| {
        g.ip().src() == WAN_A
            && g.icmp()
                .is_some_and(|m| m.kind() == icmp_type::TIMESTAMP_REPLY && m.ident() == 0x6666)
    });
    check("timestamp reply", reply, icmp_type::TIMESTAMP_REPLY, r);
    r.saw(results.join("; "));
    Ok(())
}
