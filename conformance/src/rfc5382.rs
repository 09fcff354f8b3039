//! RFC 5382 (BCP 142) and the RFC 7857 updates: TCP behaviour — mapping, every valid
//! sequence including simultaneous open, filtering, unsolicited SYNs, timeouts,
//! hairpinning, ICMP, state tracking, RSTs and IP IDs.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

use testbed::Netns;

use super::flows::{
    self, ep, show, udp, udp_through, Timeline, EXT, LAN_A, LAN_B, TTL_FROM_INSIDE, WAN_A, WAN_B,
};
use super::nat::{Filtering, NatConfig, NatUnderTest, Session, TRANSITORY_STATES};
use super::packet::{self, icmp_type, tcp_flags, unreachable, Ipv4Header, PROTO_ICMP, PROTO_TCP};
use super::sock::{self, Raw, Received, TcpServer};
use super::{Check, Env, Record, Step as _, Stop};

/// The RFC 5382 and RFC 7857 checks.
#[must_use]
pub fn checks() -> Vec<Check> {
    vec![
        Check {
            id: "RFC 5382 REQ-1",
            test: "rfc5382_req_1_tcp_endpoint_independent_mapping",
            title: "endpoint-independent mapping for TCP",
            run: req_1,
        },
        Check {
            id: "RFC 5382 REQ-2",
            test: "rfc5382_req_2_simultaneous_open",
            title: "every valid TCP sequence, simultaneous open included",
            run: req_2,
        },
        Check {
            id: "RFC 5382 REQ-3 EIF",
            test: "rfc5382_req_3_tcp_endpoint_independent_filtering",
            title: "TCP endpoint-independent filtering",
            run: req_3_eif,
        },
        Check {
            id: "RFC 5382 REQ-3a ADF",
            test: "rfc5382_req_3a_tcp_address_dependent_filtering",
            title: "TCP filtering configurable: address-dependent",
            run: req_3a_adf,
        },
        Check {
            id: "RFC 5382 REQ-3b",
            test: "rfc5382_req_3b_tcp_filtering_independent_of_udp",
            title: "TCP filtering independent of UDP's",
            run: req_3b,
        },
        Check {
            id: "RFC 5382 REQ-4",
            test: "rfc5382_req_4_unsolicited_syn_silent_for_6_s",
            title: "no answer to an unsolicited SYN for 6 s, then port unreachable",
            run: req_4_silence,
        },
        Check {
            id: "RFC 5382 REQ-4 punch",
            test: "rfc5382_req_4_held_syn_allows_hole_punching",
            title: "an inbound SYN followed by an outbound one connects",
            run: req_4_punch,
        },
        Check {
            id: "RFC 5382 REQ-5",
            test: "rfc5382_req_5_tcp_timeouts",
            title: "established >= 2 h 4 min, transitory >= 4 min, configurable",
            run: req_5,
        },
        Check {
            id: "RFC 5382 REQ-7",
            test: "rfc5382_req_7_tcp_no_port_overloading",
            title: "no port overloading for TCP",
            run: req_7,
        },
        Check {
            id: "RFC 5382 REQ-8",
            test: "rfc5382_req_8_tcp_hairpinning",
            title: "hairpinning for TCP",
            run: req_8,
        },
        Check {
            id: "RFC 5382 REQ-9",
            test: "rfc5382_req_9_icmp_unreachable_for_tcp_translated",
            title: "destination unreachable about TCP is translated",
            run: req_9,
        },
        Check {
            id: "RFC 5382 REQ-10",
            test: "rfc5382_req_10_icmp_does_not_end_tcp",
            title: "no ICMP message ends a connection",
            run: req_10,
        },
        Check {
            id: "RFC 7857 TCP state",
            test: "rfc7857_tcp_state_tracked",
            title: "TCP state tracked, separate open and closing timeouts",
            run: state,
        },
        Check {
            id: "RFC 7857 RST",
            test: "rfc7857_rst_translated_and_session_kept",
            title: "RST translated, session kept 4 min",
            run: rst_kept,
        },
        Check {
            id: "RFC 7857 RST refresh",
            test: "rfc7857_outbound_rst_does_not_refresh",
            title: "an outbound RST in reply to inbound does not refresh",
            run: rst_no_refresh,
        },
        Check {
            id: "RFC 7857 ICMP refresh",
            test: "rfc7857_outbound_icmp_error_does_not_refresh",
            title: "an outbound ICMP error in reply to inbound does not refresh",
            run: icmp_no_refresh,
        },
        Check {
            id: "RFC 7857 IP ID",
            test: "rfc7857_ip_id_of_fragments_unique",
            title: "IP IDs of fragmented datagrams stay unique (RFC 6864)",
            run: ip_id,
        },
    ]
}

/// Connects from `local` to `to` and exchanges `line` with a [`TcpServer`].
fn connect_hello(
    ns: &Netns,
    local: SocketAddrV4,
    to: SocketAddrV4,
    line: &str,
) -> io::Result<TcpStream> {
    let mut s = sock::tcp_connect(ns, local, to, sock::ARRIVE)?;
    sock::hello(&mut s, line)?;
    Ok(s)
}

/// "ok" or the error.
fn outcome<T>(r: &io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.to_string(),
    }
}

fn req_1(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5382 REQ-1
    let env = Env::start(nat, &NatConfig::default())?;
    let sa = TcpServer::start(env.wan_a(), ep(WAN_A, 8080)).step("server on wan-a")?;
    let sb = TcpServer::start(env.wan_b(), ep(WAN_B, 8080)).step("server on wan-b")?;
    r.sent(
        "TCP lan-b :43000 -> wan-b:8080 first (port contested), then lan-a :43000 -> wan-a:8080 \
         and -> wan-b:8080 (SO_REUSEPORT)",
    );
    let cb = connect_hello(env.lan_b(), ep(LAN_B, 43000), ep(WAN_B, 8080), "lan-b");
    let c1 = connect_hello(env.lan_a(), ep(LAN_A, 43000), ep(WAN_A, 8080), "lan-a to a");
    let c2 = connect_hello(env.lan_a(), ep(LAN_A, 43000), ep(WAN_B, 8080), "lan-a to b");
    let (eb, e1, e2) = (
        sb.peer_of("lan-b", sock::ARRIVE),
        sa.peer_of("lan-a to a", sock::ARRIVE),
        sb.peer_of("lan-a to b", sock::ARRIVE),
    );
    r.saw(format!(
        "lan-b -> {}; lan-a -> {} at wan-a, {} at wan-b (connections: {}, {}, {})",
        show(eb),
        show(e1),
        show(e2),
        outcome(&cb),
        outcome(&c1),
        outcome(&c2)
    ));
    r.expect(
        e1.is_some() && e2.is_some(),
        "both of lan-a's connections work",
    );
    r.expect(
        e1 == e2,
        "one external endpoint for lan-a :43000 towards both servers",
    );
    Ok(())
}

/// Sends a line each way over a connected pair.
fn exchange(a: &mut TcpStream, b: &mut TcpStream) -> io::Result<()> {
    for s in [&*a, &*b] {
        s.set_read_timeout(Some(sock::ARRIVE))?;
    }
    sock::write_line(a, "from a")?;
    if sock::read_line(b)? != "from a" {
        return Err(io::Error::other("garbled"));
    }
    sock::write_line(b, "from b")?;
    if sock::read_line(a)? != "from b" {
        return Err(io::Error::other("garbled"));
    }
    Ok(())
}

/// `ip route ARGS` in `ns`.
fn route(ns: &Netns, args: &[&str]) -> Result<(), Stop> {
    let out = ns
        .command("ip")
        .arg("route")
        .args(args)
        .output()
        .step("running ip route")?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Stop::Error(format!(
            "ip route {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// One simultaneous open as the NAT sees it — outbound SYN, inbound SYN, outbound
/// SYN-ACK, inbound ACK — made deterministic: while the inet router blackholes wan-a,
/// lan-a starts connecting from `p` to wan-a:`q` (its SYN crosses the NAT and is
/// lost); then wan-a connects from `q` to 192.0.2.1:`p`, and its SYN meets lan-a in
/// SYN-SENT.
fn simultaneous_open(env: &Env, p: u16, q: u16) -> Result<Result<(), String>, Stop> {
    let wan_a = format!("{WAN_A}/32");
    route(&env.tb.inet, &["add", "blackhole", &wan_a])?;
    let lan = sock::tcp_bound(env.lan_a(), ep(LAN_A, p)).step("lan-a socket")?;
    lan.set_nonblocking(true).step("non-blocking")?;
    let started = lan.connect(&ep(WAN_A, q).into());
    std::thread::sleep(Duration::from_millis(200));
    route(&env.tb.inet, &["del", "blackhole", &wan_a])?;
    if let Err(e) = started {
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Ok(Err(format!("lan-a's connect: {e}")));
        }
    }
    let wan = sock::tcp_connect(env.wan_a(), ep(WAN_A, q), ep(EXT, p), sock::ARRIVE);
    let lan = wait_connected(lan, sock::ARRIVE);
    Ok(match (lan, wan) {
        (Ok(mut a), Ok(mut b)) => {
            let peers = (sock::peer(&a).ok(), sock::peer(&b).ok());
            match exchange(&mut a, &mut b) {
                Ok(()) if peers == (Some(ep(WAN_A, q)), Some(ep(EXT, p))) => Ok(()),
                Ok(()) => Err(format!("connected, peers {peers:?}")),
                Err(e) => Err(format!("connected, exchange failed: {e}")),
            }
        }
        (a, b) => Err(format!("lan-a: {}, wan-a: {}", outcome(&a), outcome(&b))),
    })
}

/// Waits for a non-blocking connect to finish; the connected stream (blocking again).
fn wait_connected(sock: socket2::Socket, within: Duration) -> io::Result<TcpStream> {
    use std::os::fd::AsRawFd as _;
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = libc::c_int::try_from(within.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, count 1.
    let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
    if n == 0 {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    if let Some(e) = sock.take_error()? {
        return Err(e);
    }
    sock.set_nonblocking(false)?;
    let stream: TcpStream = sock.into();
    stream.peer_addr()?;
    stream.set_read_timeout(Some(sock::ARRIVE))?;
    Ok(stream)
}

fn req_2(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5382 REQ-2
    let env = Env::start(nat, &NatConfig::default())?;
    r.sent(
        "3 simultaneous opens: lan-a :4400x connects to wan-a:900x while the inet router \
         drops its SYN, then wan-a :900x connects to 192.0.2.1:4400x (the preserved port); \
         the NAT sees SYN out, SYN in, SYN-ACK out, ACK in; then a line each way",
    );
    let mut rounds = Vec::new();
    for i in 0..3u16 {
        rounds.push(simultaneous_open(&env, 44000 + 2 * i, 9000 + i)?);
    }
    let ok = rounds.iter().filter(|x| x.is_ok()).count();
    let failures: Vec<String> = rounds.iter().filter_map(|x| x.clone().err()).collect();
    r.saw(format!(
        "{ok} of 3 simultaneous opens connected{}",
        if failures.is_empty() {
            String::new()
        } else {
            format!(" ({})", failures.join("; "))
        }
    ));
    r.expect(ok == 3, "every simultaneous open connects and carries data");
    Ok(())
}

fn filtering_tcp(
    nat: &NatUnderTest,
    r: &mut Record,
    tcp: Filtering,
    udp_mode: Option<Filtering>,
) -> Result<(), Stop> {
    let cfg = NatConfig {
        tcp_filtering: Some(tcp),
        udp_filtering: udp_mode,
        ..NatConfig::default()
    };
    r.sent(format!(
        "TCP filtering {tcp}{}: lan-a listens on :45000 and connects from it to wan-a:8080; \
         then wan-a :8081 and wan-b :8080 connect to the mapping",
        udp_mode.map_or_else(String::new, |u| format!(", UDP filtering {u}"))
    ));
    let env = Env::start(nat, &cfg)?;
    let server = TcpServer::start(env.wan_a(), ep(WAN_A, 8080)).step("server on wan-a")?;
    let inside = TcpServer::start(env.lan_a(), ep(LAN_A, 45000)).step("listener on lan-a")?;
    let out = connect_hello(env.lan_a(), ep(LAN_A, 45000), ep(WAN_A, 8080), "out");
    let e = server.peer_of("out", sock::ARRIVE).ok_or_else(|| {
        Stop::Error(format!(
            "lan-a's outbound connection failed: {}",
            outcome(&out)
        ))
    })?;
    let probe = |ns: &Netns, from: SocketAddrV4, allowed: bool, line: &str| {
        let within = if allowed {
            sock::ARRIVE
        } else {
            Duration::from_secs(2)
        };
        sock::tcp_connect(ns, from, e, within)
            .and_then(|mut s| sock::hello(&mut s, line).map(|()| s))
    };
    let port_ok = tcp != Filtering::AddressAndPortDependent;
    let host_ok = tcp == Filtering::EndpointIndependent;
    let other_port = probe(env.wan_a(), ep(WAN_A, 8081), port_ok, "wan-a 8081");
    let other_host = probe(env.wan_b(), ep(WAN_B, 8080), host_ok, "wan-b 8080");
    r.saw(format!(
        "wan-a :8081 -> mapping: {}; wan-b :8080 -> mapping: {}",
        outcome(&other_port),
        outcome(&other_host)
    ));
    if port_ok {
        r.expect(
            inside.peer_of("wan-a 8081", sock::ARRIVE) == Some(ep(WAN_A, 8081)),
            "lan-a's listener sees wan-a:8081 as the peer",
        );
    }
    if host_ok {
        r.expect(
            inside.peer_of("wan-b 8080", sock::ARRIVE) == Some(ep(WAN_B, 8080)),
            "lan-a's listener sees wan-b:8080 as the peer",
        );
    }
    r.expect(
        other_port.is_ok() == port_ok,
        format!(
            "wan-a from another port {}",
            if port_ok { "connects" } else { "is filtered" }
        ),
    );
    r.expect(
        other_host.is_ok() == host_ok,
        format!("wan-b {}", if host_ok { "connects" } else { "is filtered" }),
    );
    if let Some(u) = udp_mode {
        let lan = udp(env.lan_a(), LAN_A, 45000)?;
        let wan_a = udp(env.wan_a(), WAN_A, 7000)?;
        let wan_b = udp(env.wan_b(), WAN_B, 7000)?;
        let eu = udp_through(&lan, ep(WAN_A, 7000), &wan_a, b"udp out")?
            .ok_or_else(|| Stop::Error("UDP mapping not made".to_owned()))?;
        let udp_ok = u == Filtering::EndpointIndependent;
        let got = if udp_ok {
            udp_through(&wan_b, eu, &lan, b"udp from wan-b")?
        } else {
            flows::udp_blocked(&wan_b, eu, &lan, b"udp from wan-b")?
        };
        r.saw(format!(
            "UDP from wan-b to lan-a's UDP mapping: {}",
            if got.is_some() { "in" } else { "dropped" }
        ));
        r.expect(
            got.is_some() == udp_ok,
            format!("UDP follows its own mode ({u})"),
        );
    }
    Ok(())
}

fn req_3_eif(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5382 REQ-3
    filtering_tcp(nat, r, Filtering::EndpointIndependent, None)
}

fn req_3a_adf(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5382 REQ-3a
    filtering_tcp(nat, r, Filtering::AddressDependent, None)
}

fn req_3b(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5382 REQ-3b
    filtering_tcp(
        nat,
        r,
        Filtering::AddressDependent,
        Some(Filtering::EndpointIndependent),
    )
}

/// Whether `got` is about TCP between `ext` (the NAT side) and `peer`: a segment from
/// `ext` to `peer`, or an ICMP error quoting `peer -> ext`.
fn about_tcp(got: &Received, ext: SocketAddrV4, peer: SocketAddrV4) -> bool {
    let ip = got.ip();
    if ip.proto() == PROTO_TCP {
        return ip.src() == *ext.ip() && ip.ports() == Some((ext.port(), peer.port()));
    }
    got.icmp().is_some_and(|m| {
        m.is_error()
            && m.quoted().is_some_and(|q| {
                q.proto() == PROTO_TCP
                    && q.dst() == *ext.ip()
                    && q.ports() == Some((peer.port(), ext.port()))
            })
    })
}

fn describe(got: &Received) -> String {
    let ip = got.ip();
    match ip.tcp_flags() {
        Some(f) => format!(
            "TCP{}{}{} from {}",
            if f & tcp_flags::SYN != 0 { " SYN" } else { "" },
            if f & tcp_flags::ACK != 0 { " ACK" } else { "" },
            if f & tcp_flags::RST != 0 { " RST" } else { "" },
            ip.src()
        ),
        None => flows::describe_icmp(got),
    }
}

fn req_4_silence(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5382 REQ-4
    let env = Env::start(nat, &NatConfig::default())?;
    let tcp_raw = Raw::tcp(env.wan_a()).step("raw TCP socket on wan-a")?;
    let icmp_raw = Raw::icmp(env.wan_a()).step("raw ICMP socket on wan-a")?;
    let sender = Raw::sender(env.wan_a()).step("raw socket on wan-a")?;
    let (peer, target) = (ep(WAN_A, 9100), ep(EXT, 46000));
    r.sent("one crafted SYN wan-a :9100 -> 192.0.2.1:46000 (no mapping); watch wan-a for 8.5 s");
    let syn = packet::tcp(
        WAN_A,
        EXT,
        peer.port(),
        target.port(),
        1000,
        0,
        tcp_flags::SYN,
        b"",
    );
    let t = Timeline::start();
    sender
        .send(&Ipv4Header::new(WAN_A, EXT, PROTO_TCP).packet(&syn))
        .step("sending the SYN")?;
    let mut answers = Vec::new();
    while t.now() < 8.5 {
        for raw in [&tcp_raw, &icmp_raw] {
            if let Some(got) = raw.recv(Duration::from_millis(50)) {
                if about_tcp(&got, target, peer) {
                    answers.push((t.since_start(got.at), got));
                }
            }
        }
    }
    r.saw(if answers.is_empty() {
        "no answer within 8.5 s".to_owned()
    } else {
        answers
            .iter()
            .map(|(at, g)| format!("{} at {at:.1} s", describe(g)))
            .collect::<Vec<_>>()
            .join(", ")
    });
    r.expect(
        answers.iter().all(|(at, _)| *at >= 5.9),
        "no answer (no SYN-ACK, RST or ICMP) for at least 6 s",
    );
    r.expect(
        answers.iter().any(|(at, g)| {
            *at >= 5.9
                && g.icmp().is_some_and(|m| {
                    m.kind() == icmp_type::DEST_UNREACHABLE && m.code() == unreachable::PORT
                })
        }),
        "ICMP port unreachable once the 6 s have passed",
    );
    Ok(())
}

fn req_4_punch(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5382 REQ-4
    let env = Env::start(nat, &NatConfig::default())?;
    let tcp_raw = Raw::tcp(env.wan_a()).step("raw TCP socket on wan-a")?;
    let icmp_raw = Raw::icmp(env.wan_a()).step("raw ICMP socket on wan-a")?;
    let (peer, target) = (ep(WAN_A, 9200), ep(EXT, 46100));
    r.sent(
        "wan-a :9200 connects to 192.0.2.1:46100 (unsolicited SYN); 1 s later lan-a :46100 \
            connects to wan-a:9200",
    );
    let (inbound, outbound) = std::thread::scope(|s| {
        let w = s.spawn(|| sock::tcp_connect(env.wan_a(), peer, target, Duration::from_secs(8)));
        std::thread::sleep(Duration::from_secs(1));
        let l = sock::tcp_connect(
            env.lan_a(),
            ep(LAN_A, target.port()),
            peer,
            Duration::from_secs(6),
        );
        (
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("panicked"))),
            l,
        )
    });
    let connected = match (inbound, outbound) {
        (Ok(mut w), Ok(mut l)) => exchange(&mut w, &mut l).map_err(|e| e.to_string()),
        (w, l) => Err(format!("wan-a: {}, lan-a: {}", outcome(&w), outcome(&l))),
    };
    let mut answers = Vec::new();
    for raw in [&tcp_raw, &icmp_raw] {
        answers.extend(raw.collect(Duration::from_millis(100), |g| {
            about_tcp(g, target, peer)
                && (g.icmp().is_some()
                    || g.ip().tcp_flags().is_some_and(|f| f & tcp_flags::RST != 0))
        }));
    }
    r.saw(format!(
        "connection: {}; RST/ICMP seen by wan-a: {}",
        connected
            .as_ref()
            .map_or_else(Clone::clone, |()| "established, data both ways".to_owned()),
        if answers.is_empty() {
            "none".to_owned()
        } else {
            answers.iter().map(describe).collect::<Vec<_>>().join(", ")
        }
    ));
    r.expect(connected.is_ok(), "the connection is made");
    r.expect(
        answers.is_empty(),
        "the early inbound SYN is dropped silently (no RST, no ICMP)",
    );
    Ok(())
}

/// The longest time an entry may still live: natgw's timeout, conntrack's time left.
fn horizon(s: &Session) -> Option<u64> {
    s.timeout_s.or(s.remaining_s)
}

fn req_5(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5382 REQ-5
    {
        let env = Env::start(nat, &NatConfig::default())?;
        let (est, trans, what) = if env.natgw().is_some() {
            let get = |k: &str| env.natgw_config(&["timeouts", k]).and_then(|v| v.as_u64());
            (
                get("tcp_established"),
                get("tcp_transitory"),
                "natgw status config".to_owned(),
            )
        } else {
            let get = |k: &str| {
                env.gateway_sysctl(&format!("net/netfilter/nf_conntrack_tcp_timeout_{k}"))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let min = TRANSITORY_STATES
                .iter()
                .filter_map(|s| get(s).map(|v| (v, *s)))
                .min();
            (
                get("established"),
                min.map(|(v, _)| v),
                format!(
                    "nf_conntrack_tcp_timeout_* (shortest transitory: {})",
                    min.map_or("?", |(_, s)| s)
                ),
            )
        };
        r.sent(format!("default configuration: {what}"));
        let show_s = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
        r.saw(format!(
            "default established {} s, transitory {} s",
            show_s(est),
            show_s(trans)
        ));
        r.expect(est.is_some_and(|t| t >= 7440), "established >= 7440 s");
        r.expect(trans.is_some_and(|t| t >= 240), "transitory >= 240 s");
    }
    let cfg = NatConfig {
        tcp_established_timeout: Some(3),
        tcp_transitory_timeout: Some(3),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let server = TcpServer::start(env.wan_a(), ep(WAN_A, 8080)).step("server on wan-a")?;
    r.sent(
        "timeouts 3 s: connections lan-a :46200 (established, idle) and :46202 (lan-a sent FIN: \
         closing) to wan-a:8080; the server writes on both at 1 s and 8 s",
    );
    let t = Timeline::start();
    let mut idle = connect_hello(env.lan_a(), ep(LAN_A, 46200), ep(WAN_A, 8080), "idle")
        .step("connecting from lan-a")?;
    let mut closing = connect_hello(env.lan_a(), ep(LAN_A, 46202), ep(WAN_A, 8080), "closing")
        .step("connecting from lan-a")?;
    let (Some(e1), Some(e2)) = (
        server.peer_of("idle", sock::ARRIVE),
        server.peer_of("closing", sock::ARRIVE),
    ) else {
        return Err(Stop::Error("the server did not see lan-a".to_owned()));
    };
    // Half-closed: lan-a's FIN makes the session transitory, and lan-a still reads.
    closing
        .shutdown(std::net::Shutdown::Write)
        .step("half-closing")?;
    let write_then_read = |peer, stream: &mut TcpStream, line: &str| {
        server
            .send_to_peer(peer, line)
            .and_then(|()| sock::read_line(stream))
    };
    t.at(1.0);
    let early = write_then_read(e1, &mut idle, "early");
    let early_closing = write_then_read(e2, &mut closing, "early");
    t.at(8.0);
    for s in [&idle, &closing] {
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .step("timeout")?;
    }
    let late = write_then_read(e1, &mut idle, "late");
    let late_closing = write_then_read(e2, &mut closing, "late");
    let word = |r: &io::Result<String>| {
        if r.is_ok() {
            "delivered".to_owned()
        } else {
            format!("not delivered ({})", outcome(r))
        }
    };
    r.saw(format!(
        "established: 1 s {}, 8 s {}; closing: 1 s {}, 8 s {}",
        word(&early),
        word(&late),
        word(&early_closing),
        word(&late_closing)
    ));
    r.expect(
        early.is_ok_and(|l| l == "early"),
        "the established connection works within its timeout",
    );
    r.expect(
        late.is_err(),
        "the idle established mapping has expired after the configured 3 s",
    );
    r.expect(
        early_closing.is_ok_and(|l| l == "early"),
        "the closing connection works within its timeout",
    );
    r.expect(
        late_closing.is_err(),
        "the idle closing mapping has expired after the configured 3 s",
    );
    Ok(())
}

fn req_7(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5382 REQ-7
    let env = Env::start(nat, &NatConfig::default())?;
    let sa = TcpServer::start(env.wan_a(), ep(WAN_A, 8080)).step("server on wan-a")?;
    let sb = TcpServer::start(env.wan_b(), ep(WAN_B, 8080)).step("server on wan-b")?;
    r.sent(
        "lan-a and lan-b connect from the same port: :47000 to different servers (wan-a, wan-b), \
         :47002 to the same one (wan-a:8080)",
    );
    let _c = [
        connect_hello(env.lan_a(), ep(LAN_A, 47000), ep(WAN_A, 8080), "a1"),
        connect_hello(env.lan_b(), ep(LAN_B, 47000), ep(WAN_B, 8080), "b1"),
        connect_hello(env.lan_a(), ep(LAN_A, 47002), ep(WAN_A, 8080), "a2"),
        connect_hello(env.lan_b(), ep(LAN_B, 47002), ep(WAN_A, 8080), "b2"),
    ];
    let (a1, b1, a2, b2) = (
        sa.peer_of("a1", sock::ARRIVE),
        sb.peer_of("b1", sock::ARRIVE),
        sa.peer_of("a2", sock::ARRIVE),
        sa.peer_of("b2", sock::ARRIVE),
    );
    r.saw(format!(
        ":47000 lan-a -> {}, lan-b -> {}; :47002 lan-a -> {}, lan-b -> {}",
        show(a1),
        show(b1),
        show(a2),
        show(b2)
    ));
    r.expect(
        [a1, b1, a2, b2].iter().all(Option::is_some),
        "all four connections work",
    );
    r.expect(
        a1 != b1,
        "distinct external endpoints when the servers differ",
    );
    r.expect(a2 != b2, "distinct external endpoints towards one server");
    Ok(())
}

fn req_8(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5382 REQ-8
    let env = Env::start(nat, &NatConfig::default())?;
    let server = TcpServer::start(env.wan_a(), ep(WAN_A, 8080)).step("server on wan-a")?;
    let inside = TcpServer::start(env.lan_a(), ep(LAN_A, 48000)).step("listener on lan-a")?;
    r.sent(
        "lan-a (listening on :48000) and lan-b :48100 connect to wan-a:8080 (learn Ea, Eb, \
         kept open); then lan-b connects from :48100 to Ea and exchanges a line",
    );
    let _ca = connect_hello(env.lan_a(), ep(LAN_A, 48000), ep(WAN_A, 8080), "lan-a");
    let _cb = connect_hello(env.lan_b(), ep(LAN_B, 48100), ep(WAN_A, 8080), "lan-b");
    let (Some(ea), Some(eb)) = (
        server.peer_of("lan-a", sock::ARRIVE),
        server.peer_of("lan-b", sock::ARRIVE),
    ) else {
        return Err(Stop::Error(
            "the LAN hosts' connections to wan-a failed".to_owned(),
        ));
    };
    let hairpin = connect_hello(env.lan_b(), ep(LAN_B, 48100), ea, "hairpin");
    let seen = inside.peer_of("hairpin", sock::ARRIVE);
    r.saw(format!(
        "Ea {ea}, Eb {eb}; lan-b -> Ea: {}; lan-a accepted it from {}",
        outcome(&hairpin),
        show(seen)
    ));
    r.expect(
        hairpin.is_ok(),
        "lan-b's connection to Ea reaches lan-a and carries data",
    );
    r.expect(
        seen == Some(eb),
        "lan-a sees lan-b's external endpoint Eb as the peer",
    );
    Ok(())
}

/// The IPv4 + TCP header `src -> dst` as an ICMP error quotes it.
fn quoted_tcp(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let seg = packet::tcp(
        *src.ip(),
        *dst.ip(),
        src.port(),
        dst.port(),
        0x0102_0304,
        0,
        tcp_flags::ACK,
        b"",
    );
    Ipv4Header::new(*src.ip(), *dst.ip(), PROTO_TCP).packet(&seg)
}

/// An ICMP error from wan-a about the connection `ext <-> wan-a:8080`.
fn tcp_error(ext: SocketAddrV4, kind: u8, code: u8) -> Vec<u8> {
    let msg = packet::icmp_error(kind, code, [0; 4], &quoted_tcp(ext, ep(WAN_A, 8080)));
    Ipv4Header::new(WAN_A, *ext.ip(), PROTO_ICMP).packet(&msg)
}

/// Whether `got` is an ICMP error quoting TCP `src -> dst`.
fn tcp_error_about(got: &Received, src: SocketAddrV4, dst: SocketAddrV4) -> bool {
    got.icmp().is_some_and(|m| {
        m.is_error()
            && m.quoted().is_some_and(|q| {
                q.proto() == PROTO_TCP
                    && q.src() == *src.ip()
                    && q.dst() == *dst.ip()
                    && q.ports() == Some((src.port(), dst.port()))
            })
    })
}

fn req_9(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5382 REQ-9
    let env = Env::start(nat, &NatConfig::default())?;
    let server = TcpServer::start(env.wan_a(), ep(WAN_A, 8080)).step("server on wan-a")?;
    let seen_at_lan = Raw::icmp(env.lan_a()).step("raw ICMP socket on lan-a")?;
    let sender = Raw::sender(env.wan_a()).step("raw socket on wan-a")?;
    let _c = connect_hello(env.lan_a(), ep(LAN_A, 48200), ep(WAN_A, 8080), "lan-a")
        .step("connecting")?;
    let e = server
        .peer_of("lan-a", sock::ARRIVE)
        .ok_or_else(|| Stop::Error("the server did not see lan-a".to_owned()))?;
    r.sent(
        "connection lan-a :48200 <-> wan-a:8080; wan-a sends ICMP 3/1 (host unreachable) \
            quoting it",
    );
    sender
        .send(&tcp_error(
            e,
            icmp_type::DEST_UNREACHABLE,
            unreachable::HOST,
        ))
        .step("sending the error")?;
    let got = seen_at_lan.recv_matching(sock::ARRIVE, |g| {
        tcp_error_about(g, ep(LAN_A, 48200), ep(WAN_A, 8080))
    });
    r.saw(
        got.as_ref()
            .map_or_else(|| "nothing reached lan-a".to_owned(), flows::describe_icmp),
    );
    r.expect(
        got.as_ref().is_some_and(|g| {
            let (ip, m) = (g.ip(), g.icmp());
            ip.dst() == LAN_A
                && m.is_some_and(|m| {
                    m.kind() == icmp_type::DEST_UNREACHABLE
                        && m.code() == unreachable::HOST
                        && m.checksum_ok()
                        && m.quoted().is_some_and(|q| q.checksum_ok())
                })
        }),
        "lan-a gets 3/1 quoting its own connection, checksums valid",
    );
    Ok(())
}

fn req_10(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc5382 REQ-10
    let env = Env::start(nat, &NatConfig::default())?;
    let server = TcpServer::start(env.wan_a(), ep(WAN_A, 8080)).step("server on wan-a")?;
    let sender = Raw::sender(env.wan_a()).step("raw socket on wan-a")?;
    let mut conn = connect_hello(env.lan_a(), ep(LAN_A, 48300), ep(WAN_A, 8080), "lan-a")
        .step("connecting")?;
    let e = server
        .peer_of("lan-a", sock::ARRIVE)
        .ok_or_else(|| Stop::Error("the server did not see lan-a".to_owned()))?;
    r.sent(
        "connection lan-a :48300 <-> wan-a:8080; wan-a sends ICMP 3/3, 3/1, 3/13, 11/0, 12/0 \
            quoting it; then a line each way",
    );
    for (kind, code) in [
        (icmp_type::DEST_UNREACHABLE, unreachable::PORT),
        (icmp_type::DEST_UNREACHABLE, unreachable::HOST),
        (icmp_type::DEST_UNREACHABLE, unreachable::ADMIN_PROHIBITED),
        (icmp_type::TIME_EXCEEDED, 0),
        (icmp_type::PARAMETER_PROBLEM, 0),
    ] {
        sender
            .send(&tcp_error(e, kind, code))
            .step("sending an error")?;
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let inbound = server
        .send_to_peer(e, "after errors")
        .and_then(|()| sock::read_line(&mut conn));
    let outbound =
        sock::write_line(&mut conn, "still here").and_then(|()| server.read_from_peer(e));
    let session = env.tcp_session(ep(LAN_A, 48300));
    r.saw(format!(
        "afterwards: server -> lan-a {}, lan-a -> server {}; session {}",
        outcome(&inbound),
        outcome(&outbound),
        session.map_or_else(|| "not listed".to_owned(), |s| s.to_string())
    ));
    r.expect(
        inbound.is_ok_and(|l| l == "after errors"),
        "the connection still carries data inbound",
    );
    r.expect(
        outbound.is_ok_and(|l| l == "still here"),
        "the connection still carries data outbound",
    );
    Ok(())
}

fn state(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc7857 TCP state
    let env = Env::start(nat, &NatConfig::default())?;
    let server = TcpServer::start(env.wan_a(), ep(WAN_A, 8080)).step("server on wan-a")?;
    let internal = ep(LAN_A, 49000);
    r.sent(
        "connection lan-a :49000 <-> wan-a:8080: handshake and data, then FIN both ways; the \
            NAT's session listing after each",
    );
    let conn = connect_hello(env.lan_a(), internal, ep(WAN_A, 8080), "lan-a").step("connecting")?;
    let e = server
        .peer_of("lan-a", sock::ARRIVE)
        .ok_or_else(|| Stop::Error("the server did not see lan-a".to_owned()))?;
    let open = env.tcp_session(internal);
    conn.shutdown(std::net::Shutdown::Both).step("closing")?;
    std::thread::sleep(Duration::from_millis(200));
    server.close(e).step("closing the server side")?;
    std::thread::sleep(Duration::from_millis(500));
    let closed = env.tcp_session(internal);
    let shown = |s: &Option<Session>| {
        s.as_ref()
            .map_or_else(|| "not listed".to_owned(), ToString::to_string)
    };
    r.saw(format!(
        "open: {}; after FINs: {}",
        shown(&open),
        shown(&closed)
    ));
    let is_est = |s: &Session| s.state.eq_ignore_ascii_case("established");
    r.expect(
        open.as_ref().is_some_and(is_est),
        "an established connection is tracked as established",
    );
    r.expect(
        closed.as_ref().is_some_and(|s| !is_est(s)),
        "a closed connection is tracked as closing",
    );
    r.expect(
        matches!(
            (open.as_ref().and_then(horizon), closed.as_ref().and_then(horizon)),
            (Some(o), Some(c)) if o > c
        ),
        "closing uses a shorter timeout than established",
    );
    Ok(())
}

fn rst_kept(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc7857 RST
    let env = Env::start(nat, &NatConfig::default())?;
    let server = TcpServer::start(env.wan_a(), ep(WAN_A, 8080)).step("server on wan-a")?;
    let internal = ep(LAN_A, 49100);
    r.sent(
        "connection lan-a :49100 <-> wan-a:8080; wan-a resets it (SO_LINGER 0); the NAT's \
            session listing 2 s later",
    );
    let mut conn =
        connect_hello(env.lan_a(), internal, ep(WAN_A, 8080), "lan-a").step("connecting")?;
    let e = server
        .peer_of("lan-a", sock::ARRIVE)
        .ok_or_else(|| Stop::Error("the server did not see lan-a".to_owned()))?;
    server.reset(e).step("resetting")?;
    let at_lan = sock::read_line(&mut conn);
    let reset = matches!(&at_lan, Err(e) if e.kind() == io::ErrorKind::ConnectionReset);
    std::thread::sleep(Duration::from_secs(2));
    let session = env.tcp_session(internal);
    r.saw(format!(
        "lan-a: {}; session 2 s later: {}",
        if reset {
            "connection reset".to_owned()
        } else {
            outcome(&at_lan)
        },
        session
            .as_ref()
            .map_or_else(|| "not listed".to_owned(), ToString::to_string)
    ));
    r.expect(reset, "the RST reaches lan-a");
    r.expect(
        session
            .as_ref()
            .and_then(|s| s.remaining_s.or(s.timeout_s))
            .is_some_and(|left| left >= 230),
        "the session is kept about 4 min after the RST",
    );
    Ok(())
}

fn rst_no_refresh(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc7857 RST refresh
    let cfg = NatConfig {
        tcp_transitory_timeout: Some(3),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let server = TcpServer::start(env.wan_a(), ep(WAN_A, 8080)).step("server on wan-a")?;
    let tcp_raw = Raw::tcp(env.wan_a()).step("raw TCP socket on wan-a")?;
    let sender = Raw::sender(env.wan_a()).step("raw socket on wan-a")?;
    let internal = ep(LAN_A, 49200);
    r.sent(
        "transitory timeout 3 s: connection lan-a :49200 <-> wan-a:8080, lan-a resets it; then \
         wan-a sends a SYN to the mapping every second for 9 s, lan-a's kernel answers each \
         with RST",
    );
    let conn = connect_hello(env.lan_a(), internal, ep(WAN_A, 8080), "lan-a").step("connecting")?;
    let e = server
        .peer_of("lan-a", sock::ARRIVE)
        .ok_or_else(|| Stop::Error("the server did not see lan-a".to_owned()))?;
    socket2::SockRef::from(&conn)
        .set_linger(Some(Duration::ZERO))
        .step("SO_LINGER")?;
    drop(conn);
    let t = Timeline::start();
    let mut answered = Vec::new();
    for i in 0..9u32 {
        t.at(f64::from(i) + 0.5);
        let syn = packet::tcp(
            WAN_A,
            EXT,
            8080,
            e.port(),
            0x3000_0000 + i * 1000,
            0,
            tcp_flags::SYN,
            b"",
        );
        tcp_raw.drain();
        sender
            .send(&Ipv4Header::new(WAN_A, EXT, PROTO_TCP).packet(&syn))
            .step("sending a SYN")?;
        let got = tcp_raw.recv_matching(Duration::from_millis(400), |g| {
            about_tcp(g, e, ep(WAN_A, 8080)) && g.ip().ttl() == TTL_FROM_INSIDE
        });
        answered
            .push(got.is_some_and(|g| g.ip().tcp_flags().is_some_and(|f| f & tcp_flags::RST != 0)));
    }
    r.saw(format!(
        "RST from lan-a to the SYN at: {}",
        answered
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}.5s:{}", i, if *a { "RST" } else { "-" }))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    r.expect(
        answered[0],
        "the first SYN reaches lan-a and its RST gets out (the mapping exists)",
    );
    r.expect(
        !answered[6..].iter().any(|a| *a),
        "lan-a's RSTs do not keep the mapping: it expires ~3 s after the connection ended",
    );
    Ok(())
}

fn icmp_no_refresh(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc7857 ICMP refresh
    let cfg = NatConfig {
        udp_timeout: Some(3),
        ..NatConfig::default()
    };
    let env = Env::start(nat, &cfg)?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let icmp_raw = Raw::icmp(env.wan_a()).step("raw ICMP socket on wan-a")?;
    r.sent(
        "UDP timeout 3 s: lan-a :49300 -> wan-a:7000, then lan-a closes the socket; wan-a sends \
         to the mapping every second for 9 s, lan-a's kernel answers each with port unreachable",
    );
    let e = {
        let lan = udp(env.lan_a(), LAN_A, 49300)?;
        udp_through(&lan, ep(WAN_A, 7000), &wan, b"open")?
            .ok_or_else(|| Stop::Error("the mapping was not made".to_owned()))?
    };
    let t = Timeline::start();
    let mut answered = Vec::new();
    let mut untranslated = 0;
    for i in 0..9u8 {
        t.at(f64::from(i) + 0.5);
        icmp_raw.drain();
        sock::send(&wan, format!("probe {i}").as_bytes(), e).step("sending")?;
        let got = icmp_raw.recv_matching(Duration::from_millis(400), |g| {
            g.icmp().is_some_and(|m| {
                m.is_error()
                    && m.quoted()
                        .is_some_and(|q| q.src() == WAN_A && q.ports().is_some_and(|p| p.0 == 7000))
            })
        });
        // From lan-a through the NAT, not made by the gateway's own stack.
        let translated = got.as_ref().is_some_and(|g| {
            flows::is_error_about(g, ep(WAN_A, 7000), e)
                && g.ip().src() == EXT
                && g.ip().ttl() == TTL_FROM_INSIDE
        });
        if got.is_some() && !translated {
            untranslated += 1;
        }
        answered.push(translated);
    }
    r.saw(format!(
        "translated port unreachable at: {}{}",
        answered
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i}.5s:{}", if *a { "ICMP" } else { "-" }))
            .collect::<Vec<_>>()
            .join(" "),
        if untranslated > 0 {
            format!(" ({untranslated} more arrived untranslated)")
        } else {
            String::new()
        }
    ));
    r.expect(
        answered[0],
        "the first probe's ICMP error gets out translated (the mapping exists)",
    );
    r.expect(
        !answered[6..].iter().any(|a| *a),
        "lan-a's ICMP errors do not keep the mapping: it expires ~3 s after lan-a last sent",
    );
    Ok(())
}

fn ip_id(nat: &NatUnderTest, r: &mut Record) -> Result<(), Stop> {
    // rfc7857 IP ID
    let env = Env::start(nat, &NatConfig::default())?;
    let wan = udp(env.wan_a(), WAN_A, 7000)?;
    let mut ext = Vec::new();
    for (ns, addr) in [(env.lan_a(), LAN_A), (env.lan_b(), LAN_B)] {
        let s = udp(ns, addr, 50000)?;
        ext.push(
            udp_through(&s, ep(WAN_A, 7000), &wan, format!("open {addr}").as_bytes())?
                .ok_or_else(|| Stop::Error("a mapping was not made".to_owned()))?,
        );
    }
    r.sent(
        "lan-a and lan-b (mapped from :50000) each send 2400-byte UDP datagrams to wan-a:7000 \
         in 3 crafted fragments: first alone (IDs 0x1111, 0x2222), then both with IP ID \
         0x4242, interleaved a1 b1 a2 b2 a3 b3; then each one small datagram without DF \
         (non-atomic: a router may still fragment it), both with IP ID 0x5151",
    );
    let (ra, rb) = (
        Raw::sender(env.lan_a()).step("raw socket on lan-a")?,
        Raw::sender(env.lan_b()).step("raw socket on lan-b")?,
    );
    let udp_raw = Raw::udp(env.wan_a()).step("raw UDP socket on wan-a")?;
    let frag = |src: Ipv4Addr, tag: u8, id: u16| {
        let payload: Vec<u8> = (0..2400usize).map(|i| tag ^ (i % 251) as u8).collect();
        let d = packet::udp(src, WAN_A, 50000, 7000, &payload);
        let mut h = Ipv4Header::new(src, WAN_A, packet::PROTO_UDP);
        h.id = id;
        (payload, packet::fragments(&h, &d, 1000))
    };
    // Alone first: fragments from each host cross the NAT at all.
    let mut alone = Vec::new();
    for (raw, src, tag, id) in [(&ra, LAN_A, 0x1a, 0x1111), (&rb, LAN_B, 0x1b, 0x2222)] {
        let (payload, frags) = frag(src, tag, id);
        for f in &frags {
            raw.send(f).step("sending a fragment")?;
        }
        alone.push(sock::recv_payload(&wan, &payload, sock::ARRIVE));
    }
    let (pa, fa) = frag(LAN_A, 0xa0, 0x4242);
    let (pb, fb) = frag(LAN_B, 0xb0, 0x4242);
    for (a, b) in fa.iter().zip(&fb) {
        ra.send(a).step("sending a fragment")?;
        rb.send(b).step("sending a fragment")?;
    }
    let mut got_a = None;
    let mut got_b = None;
    while let Some((d, from)) = sock::recv_within(&wan, sock::ARRIVE) {
        if d == pa {
            got_a = Some(from);
        } else if d == pb {
            got_b = Some(from);
        }
        if got_a.is_some() && got_b.is_some() {
            break;
        }
    }
    udp_raw.drain();
    for (raw, src) in [(&ra, LAN_A), (&rb, LAN_B)] {
        let d = packet::udp(src, WAN_A, 50000, 7000, b"non-atomic");
        let mut h = Ipv4Header::new(src, WAN_A, packet::PROTO_UDP);
        h.id = 0x5151;
        raw.send(&h.packet(&d))
            .step("sending a datagram without DF")?;
    }
    let non_atomic: Vec<(Ipv4Addr, u16, u16)> = udp_raw
        .collect(sock::ARRIVE, |g| g.ip().payload().ends_with(b"non-atomic"))
        .iter()
        .map(|g| {
            let ip = g.ip();
            let sport = ip
                .payload()
                .get(..2)
                .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
            (ip.src(), sport, ip.id())
        })
        .collect();
    r.saw(format!(
        "mappings {} and {}; alone, wan-a got them from {} and {}; with one ID, lan-a's from \
         {}, lan-b's from {}; without DF, wan-a saw IDs {}",
        ext[0],
        ext[1],
        show(alone[0]),
        show(alone[1]),
        show(got_a),
        show(got_b),
        non_atomic
            .iter()
            .map(|(a, p, id)| format!("{a}:{p} 0x{id:04x}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    r.expect(
        alone == [Some(ext[0]), Some(ext[1])],
        "each host's fragmented datagram arrives whole when sent alone",
    );
    r.expect(got_a == Some(ext[0]), "lan-a's datagram arrives whole");
    r.expect(got_b == Some(ext[1]), "lan-b's datagram arrives whole");
    r.expect(
        non_atomic.len() == 2 && non_atomic[0].2 != non_atomic[1].2,
        "the two non-atomic datagrams leave the same external address with different IDs",
    );
    Ok(())
}
