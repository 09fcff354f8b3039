//! natgw fails closed and keeps its state: the internet side is watched for the whole
//! of each test, and no packet with an internal source may ever leave the gateway —
//! not before natgw has started, not while it starts, stops, is killed or upgraded,
//! not after its data path is removed. Flows and PCP mappings live through restarts;
//! a forward removed while natgw was down does not.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData};
use natgw_common::Config;
use natgw_integration_tests::pcp_bytes::{
    map_response_external, pcp_map_request, response_epoch, IPPROTO_UDP,
};
use natgw_integration_tests::{
    recv, recv_nothing, require_root, run_natgw, udp, LeakWatch, Natgw, WAIT,
};
use testbed::{Netns, Testbed, GW_LAN_B_ADDR, GW_WAN_ADDR, LAN_A_ADDR, LAN_B_ADDR, WAN_A_ADDR};

/// A LAN host sending a numbered UDP datagram every `every` until stopped (at most
/// ten minutes' worth).
struct Sender {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Sender {
    fn start(ns: &Netns, from: SocketAddrV4, to: SocketAddrV4, every: Duration) -> Self {
        let socket = udp(ns, *from.ip(), from.port());
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop_t, sent_t) = (Arc::clone(&stop), Arc::clone(&sent));
        let limit = 600_000 / every.as_millis().max(1);
        let thread = std::thread::spawn(move || {
            for n in 0..limit {
                if stop_t.load(Ordering::Relaxed) {
                    break;
                }
                // Errors (no route while forwarding is off) are part of the test.
                let _ = socket.send_to(&n.to_be_bytes(), to);
                sent_t.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(every);
            }
        });
        Self { stop, sent, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sender thread");
        self.sent.load(Ordering::Relaxed)
    }
}

/// The sources of what `socket` receives within `window`.
fn arrivals(socket: &UdpSocket, window: Duration) -> Vec<SocketAddrV4> {
    let deadline = Instant::now() + window;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some((_, from)) = recv_nothing(socket, Duration::from_millis(100)) {
            seen.push(from);
        }
    }
    seen
}

/// Asserts that the flow reaches `wan` translated, from one external endpoint, and
/// returns it.
fn translated(wan: &UdpSocket, what: &str) -> SocketAddrV4 {
    let seen = arrivals(wan, Duration::from_millis(800));
    assert!(
        seen.len() >= 5,
        "{what}: the flow keeps arriving ({seen:?})"
    );
    assert!(
        seen.iter().all(|s| *s == seen[0] && *s.ip() == GW_WAN_ADDR),
        "{what}: every datagram from one external endpoint: {seen:?}"
    );
    seen[0]
}

fn forwarding(ns: &Netns, iface: &str) -> String {
    ns.sysctl(&format!("net/ipv4/conf/{iface}/forwarding"))
        .expect("reading forwarding")
}

#[test]
fn nothing_leaks_while_natgw_starts_stops_crashes_and_is_flushed() {
    require_root();
    let tb = Testbed::new().expect("testbed");
    let gw = &tb.gateway.ns;
    // The documented deployment: the gateway boots with forwarding off, and natgw
    // turns it on once its data path is in place.
    gw.set_sysctl("net/ipv4/ip_forward", "0").expect("sysctl");
    let watch = LeakWatch::start(&tb.inet);
    let wan = udp(&tb.wan[0].ns, WAN_A_ADDR, 7000);
    let sender = Sender::start(
        &tb.lan[0].ns,
        SocketAddrV4::new(LAN_A_ADDR, 41000),
        SocketAddrV4::new(WAN_A_ADDR, 7000),
        Duration::from_millis(20),
    );
    assert!(
        arrivals(&wan, Duration::from_millis(300)).is_empty(),
        "nothing is forwarded before natgw"
    );

    let mut first = Natgw::start(gw, &[]);
    let ext = translated(&wan, "after the first start");
    assert_eq!(forwarding(gw, "lan0"), "1", "natgw turned forwarding on");
    assert!(first.log().contains("start.forwarding_off") || forwarding(gw, "lan1") == "1");

    // SIGTERM: the controller goes, the data path stays and keeps translating.
    assert!(first.stop().success(), "{}", first.log());
    assert!(first.log().contains("data_path=running"), "{}", first.log());
    assert_eq!(translated(&wan, "controller stopped"), ext);

    // A new natgw adopts it: same mapping, no gap.
    let mut second = Natgw::start(gw, &[]);
    assert!(
        second.log().contains("datapath.adopted"),
        "{}",
        second.log()
    );
    assert_eq!(translated(&wan, "after adoption"), ext);

    // kill -9: nothing is cleaned up, and nothing needs to be.
    second.kill();
    assert_eq!(translated(&wan, "controller killed"), ext);
    let third = Natgw::start(gw, &[]);
    assert_eq!(translated(&wan, "after the restart"), ext);
    assert_eq!(
        third.counter("drop_leak_guard"),
        0,
        "nothing needed the guard"
    );
    drop(third);

    // The operator removes the data path: forwarding goes off first, so the LAN's
    // traffic stops instead of leaving untranslated.
    let (st, out, err) = run_natgw(gw, &["stop", "--flush"]);
    assert!(st.success(), "stop --flush: {out}{err}");
    assert!(out.contains("removed the data path"), "{out}");
    assert_eq!(forwarding(gw, "lan0"), "0");
    let links = natgw_integration_tests::command_output(gw, "ip", &["-d", "link", "show"]);
    assert!(!links.contains("prog/xdp"), "XDP detached:\n{links}");
    let _ = arrivals(&wan, Duration::from_millis(200));
    assert!(
        arrivals(&wan, Duration::from_millis(500)).is_empty(),
        "nothing is forwarded after the flush"
    );
    let sent = sender.finish();
    assert!(sent > 100, "the LAN host kept sending ({sent})");
    watch.assert_none("start, stop, kill -9, restart and flush under traffic");
}

#[test]
fn the_leak_guard_drops_internal_sources_while_natgw_is_not_ready() {
    require_root();
    let tb = Testbed::new().expect("testbed");
    let natgw = Natgw::start(&tb.gateway.ns, &[]);
    let watch = LeakWatch::start(&tb.inet);
    let lan = udp(&tb.lan[0].ns, LAN_A_ADDR, 42000);
    let wan = udp(&tb.wan[0].ns, WAN_A_ADDR, 7000);
    let to = SocketAddrV4::new(WAN_A_ADDR, 7000);
    lan.send_to(b"before", to).expect("send");
    assert!(recv(&wan).is_some(), "translated while ready");

    // The state between attaching and marking the data path ready, or of a data path
    // whose configuration is lost: CONFIG without CONFIG_F_READY. The programs then
    // translate nothing, the kernel forwards what XDP passes, and only the guard on
    // WAN egress stands between the LAN's addresses and the internet.
    let pin = natgw.inner().pin_dir().join("CONFIG");
    let mut config: Array<MapData, Config> =
        Array::try_from(Map::Array(MapData::from_pin(&pin).expect("CONFIG pin")))
            .expect("CONFIG map");
    let ready = config.get(&0, 0).expect("CONFIG entry");
    config
        .set(0, Config::default(), 0)
        .expect("clearing CONFIG");
    let guarded_before = natgw.counter("drop_leak_guard");
    let other = udp(&tb.lan[0].ns, LAN_A_ADDR, 42001);
    for _ in 0..20 {
        other.send_to(b"not ready", to).expect("send");
        lan.send_to(b"not ready", to).expect("send");
    }
    assert!(
        recv_nothing(&wan, Duration::from_millis(500)).is_none(),
        "nothing reaches the WAN host untranslated"
    );
    let guarded = natgw.counter("drop_leak_guard") - guarded_before;
    assert!(
        guarded >= 40,
        "the guard dropped and counted them: {guarded}"
    );

    config.set(0, ready, 0).expect("restoring CONFIG");
    lan.send_to(b"after", to).expect("send");
    let (_, from) = recv(&wan).expect("translated again");
    assert_eq!(*from.ip(), GW_WAN_ADDR);
    watch.assert_none("data path not ready");
}

/// A TCP connection through the gateway: the LAN end and the server's end.
fn tcp_pair(tb: &Testbed, port: u16) -> (TcpStream, TcpStream, SocketAddrV4) {
    let listener = tb.wan[0]
        .ns
        .run(move || TcpListener::bind((WAN_A_ADDR, port)))
        .expect("listen");
    let client = tb.lan[0]
        .ns
        .run(move || {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            s.bind(&SocketAddrV4::new(LAN_A_ADDR, 44000).into())?;
            s.connect_timeout(&SocketAddrV4::new(WAN_A_ADDR, port).into(), WAIT)?;
            Ok::<TcpStream, std::io::Error>(s.into())
        })
        .expect("connect");
    let (server, peer) = listener.accept().expect("accept");
    let std::net::SocketAddr::V4(peer) = peer else {
        panic!("IPv4 peer")
    };
    for s in [&client, &server] {
        s.set_read_timeout(Some(WAIT)).expect("timeout");
    }
    (client, server, peer)
}

/// One exchange each way on the connection.
fn tcp_works(client: &mut TcpStream, server: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 4];
    client.write_all(b"ping").expect("client writes");
    server
        .read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("{what}: the server reads: {e}"));
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").expect("server writes");
    client
        .read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("{what}: the client reads: {e}"));
    assert_eq!(&buf, b"pong");
}

/// A PCP MAP request from lan-b for UDP 5000; the external endpoint and epoch.
fn pcp_map(tb: &Testbed, client: &UdpSocket) -> (SocketAddrV4, u32) {
    client
        .send_to(
            &pcp_map_request(LAN_B_ADDR, IPPROTO_UDP, 5000, 3600),
            SocketAddrV4::new(GW_LAN_B_ADDR, 5351),
        )
        .expect("send MAP");
    let _ = tb;
    let (answer, _) = recv(client).expect("MAP answered");
    (
        map_response_external(&answer).expect("MAP success"),
        response_epoch(&answer).expect("epoch"),
    )
}

#[test]
fn flows_and_pcp_mappings_survive_kill_stop_and_upgrade() {
    require_root();
    let tb = Testbed::new().expect("testbed");
    let gw = &tb.gateway.ns;
    let watch = LeakWatch::start(&tb.inet);
    let mut natgw = Natgw::start(gw, &[]);
    let (mut client, mut server, tcp_ext) = tcp_pair(&tb, 8000);
    assert_eq!(*tcp_ext.ip(), GW_WAN_ADDR);
    tcp_works(&mut client, &mut server, "before");
    let lan = udp(&tb.lan[0].ns, LAN_A_ADDR, 43000);
    let wan = udp(&tb.wan[0].ns, WAN_A_ADDR, 7001);
    lan.send_to(b"udp", SocketAddrV4::new(WAN_A_ADDR, 7001))
        .expect("send");
    let (_, udp_ext) = recv(&wan).expect("UDP translated");
    let pcp_client = udp(&tb.lan[1].ns, LAN_B_ADDR, 5000);
    let (pcp_ext, epoch) = pcp_map(&tb, &pcp_client);
    let probe = udp(&tb.wan[1].ns, testbed::WAN_B_ADDR, 9000);

    // An upgrade: a rebuilt binary is a different file; its programs replace the
    // running ones in place.
    let upgrade = std::env::temp_dir().join(format!("natgw-upgrade-{}", std::process::id()));
    std::fs::copy(testbed::natgw_bin(), &upgrade).expect("copying natgw");
    let started = Instant::now();
    for step in ["kill -9", "SIGTERM", "upgrade"] {
        let xdp_before = prog_ids(gw);
        match step {
            "kill -9" => natgw.kill(),
            _ => assert!(natgw.stop().success(), "{}", natgw.log()),
        }
        // Its log file is the next one's: gone with it.
        drop(natgw);
        // While no controller runs, the flows go on.
        tcp_works(
            &mut client,
            &mut server,
            &format!("{step}: controller down"),
        );
        natgw = if step == "upgrade" {
            Natgw::start_bin(gw, &upgrade, &[])
        } else {
            Natgw::start(gw, &[])
        };
        assert!(natgw.log().contains("datapath.adopted"), "{}", natgw.log());
        let xdp_after = prog_ids(gw);
        assert_eq!(
            xdp_before.len(),
            3,
            "XDP on wan0, lan0, lan1: {xdp_before:?}"
        );
        assert_ne!(xdp_before, xdp_after, "{step}: the programs were replaced");
        tcp_works(&mut client, &mut server, step);
        lan.send_to(b"udp", SocketAddrV4::new(WAN_A_ADDR, 7001))
            .expect("send");
        let (_, again) = recv(&wan).expect("UDP still translated");
        assert_eq!(again, udp_ext, "{step}: same UDP external endpoint");
        wan.send_to(b"back", again).expect("reply");
        assert!(recv(&lan).is_some(), "{step}: replies still come in");
        // The PCP mapping: still there, still reachable, still its holder's.
        probe.send_to(b"in", pcp_ext).expect("send");
        assert!(recv(&pcp_client).is_some(), "{step}: PCP mapping reachable");
        let (ext, now) = pcp_map(&tb, &pcp_client);
        assert_eq!(ext, pcp_ext, "{step}: the refresh keeps the port");
        let elapsed = u32::try_from(started.elapsed().as_secs()).unwrap_or(u32::MAX);
        assert!(
            now >= epoch && now <= epoch + elapsed + 2,
            "{step}: the epoch goes on ({epoch} then {now})"
        );
        let listed = natgw
            .mappings()
            .into_iter()
            .any(|m| m["origin"] == "pcp" && m["external"] == pcp_ext.to_string());
        assert!(listed, "{step}: listed as a PCP mapping");
    }
    let _ = std::fs::remove_file(&upgrade);
    drop(natgw);
    watch.assert_none("restarts under traffic");
}

/// The ids of the XDP programs attached in `ns`.
fn prog_ids(ns: &Netns) -> Vec<String> {
    let links = natgw_integration_tests::command_output(ns, "ip", &["-d", "link", "show"]);
    links
        .split_whitespace()
        .skip_while(|w| *w != "prog/xdp")
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "id")
        .map(|w| w[1].to_owned())
        .collect()
}

#[test]
fn a_changed_map_layout_is_refused_naming_both_and_the_data_path_runs_on() {
    require_root();
    let tb = Testbed::new().expect("testbed");
    let gw = &tb.gateway.ns;
    let mut natgw = Natgw::start(gw, &[]);
    assert!(natgw.stop().success());
    // What a natgw with another layout would have recorded.
    let record = natgw.inner().state_dir().join("layout.json");
    let text = std::fs::read_to_string(&record).expect("layout record");
    let mut value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    value["layout"]["version"] = 999.into();
    value["natgw_version"] = "9.9.9".into();
    std::fs::write(&record, value.to_string()).expect("rewriting");
    let (st, _, err) = run_natgw(
        gw,
        &["run", "--wan", "wan0", "--lan", "lan0", "--lan", "lan1"],
    );
    assert!(!st.success());
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("natgw 9.9.9 with layout 999") && err.contains("uses layout 1"),
        "names both layouts: {err}"
    );
    assert!(err.contains("natgw stop --flush"), "says what to do: {err}");
    // The refused start left the running data path alone.
    let lan = udp(&tb.lan[0].ns, LAN_A_ADDR, 45000);
    let wan = udp(&tb.wan[0].ns, WAN_A_ADDR, 7002);
    lan.send_to(b"x", SocketAddrV4::new(WAN_A_ADDR, 7002))
        .expect("send");
    let (_, from) = recv(&wan).expect("still translated");
    assert_eq!(*from.ip(), GW_WAN_ADDR);
    let _ = Ipv4Addr::UNSPECIFIED;
}

#[test]
fn sighup_applies_new_timeouts_and_forwards_and_keeps_every_mapping() {
    require_root();
    let tb = Testbed::new().expect("testbed");
    let gw = &tb.gateway.ns;
    let watch = LeakWatch::start(&tb.inet);
    let config = std::env::temp_dir().join(format!("natgw-reload-{}.toml", tb.gateway.ns.name()));
    let write = |udp_timeout: u32, forward: bool| {
        let mut text = format!("[timeouts]\nudp = {udp_timeout}\n");
        if forward {
            text.push_str(
                "[[forward]]\nprotocol = \"udp\"\nexternal_port = 6000\ninternal = \"10.0.2.2:6000\"\n",
            );
        }
        std::fs::write(&config, text).expect("writing the configuration");
    };
    write(300, false);
    let natgw = Natgw::start(
        gw,
        &[
            "--config",
            config.to_str().expect("path"),
            "--gc-interval",
            "1",
        ],
    );
    let (mut client, mut server, _) = tcp_pair(&tb, 8001);
    let lan = udp(&tb.lan[0].ns, LAN_A_ADDR, 46000);
    let wan = udp(&tb.wan[0].ns, WAN_A_ADDR, 7003);
    lan.send_to(b"udp", SocketAddrV4::new(WAN_A_ADDR, 7003))
        .expect("send");
    let (_, udp_ext) = recv(&wan).expect("UDP translated");
    let pcp_client = udp(&tb.lan[1].ns, LAN_B_ADDR, 5000);
    let (pcp_ext, _) = pcp_map(&tb, &pcp_client);
    let forwarded = udp(&tb.lan[1].ns, LAN_B_ADDR, 6000);
    let probe = udp(&tb.wan[1].ns, testbed::WAN_B_ADDR, 9001);
    probe
        .send_to(b"fwd", SocketAddrV4::new(GW_WAN_ADDR, 6000))
        .expect("send");
    assert!(
        recv_nothing(&forwarded, Duration::from_millis(500)).is_none(),
        "no forward yet"
    );

    write(2, true);
    let pid = natgw.inner().pid().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let applied = natgw_integration_tests::wait_for(WAIT, || {
        natgw.log().contains("reload.applied").then_some(())
    });
    assert!(applied.is_some(), "{}", natgw.log());
    assert!(natgw.log().contains("udp_timeout=2s"), "{}", natgw.log());
    // Nothing was dropped: the connection, the UDP flow and the PCP mapping.
    tcp_works(&mut client, &mut server, "after SIGHUP");
    wan.send_to(b"in", udp_ext).expect("send");
    assert!(recv(&lan).is_some(), "UDP mapping kept");
    probe.send_to(b"pcp", pcp_ext).expect("send");
    assert!(recv(&pcp_client).is_some(), "PCP mapping kept");
    // The new forward works.
    probe
        .send_to(b"fwd", SocketAddrV4::new(GW_WAN_ADDR, 6000))
        .expect("send");
    assert!(recv(&forwarded).is_some(), "the new forward is installed");
    // The new UDP timeout applies to the idle flow.
    let internal = SocketAddrV4::new(LAN_A_ADDR, 46000);
    let gone = natgw_integration_tests::wait_for(Duration::from_secs(15), || {
        natgw.mapping_of("udp", internal).is_none().then_some(())
    });
    assert!(
        gone.is_some(),
        "the idle UDP mapping expired after 2 s:\n{}",
        natgw.log()
    );
    tcp_works(
        &mut client,
        &mut server,
        "TCP unaffected by the UDP timeout",
    );
    drop(natgw);
    let _ = std::fs::remove_file(&config);
    watch.assert_none("reload");
}

/// Turns IP_MTU_DISCOVER off on `socket`: its datagrams leave without DF, so routers
/// (the gateway) may fragment them.
fn allow_fragmentation(socket: &UdpSocket) {
    use std::os::fd::AsRawFd as _;
    let off = libc::IP_PMTUDISC_DONT;
    // SAFETY: a valid int option of the size passed, on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            std::ptr::addr_of!(off).cast(),
            u32::try_from(std::mem::size_of::<libc::c_int>()).expect("fits"),
        )
    };
    assert_eq!(
        rc,
        0,
        "IP_MTU_DISCOVER: {}",
        std::io::Error::last_os_error()
    );
}

fn flush_neighbours(ns: &Netns) {
    let _ = natgw_integration_tests::command_output(ns, "ip", &["neigh", "flush", "all"]);
}

#[test]
fn nothing_leaks_from_cold_neighbours_ttl_fragments_and_icmp_errors() {
    require_root();
    let tb = Testbed::new().expect("testbed");
    let gw = &tb.gateway.ns;
    let natgw = Natgw::start(gw, &[]);
    let watch = LeakWatch::start(&tb.inet);
    let lan_ns = &tb.lan[0].ns;
    // Unprivileged ICMP echo sockets for everyone in the LAN host.
    lan_ns
        .set_sysctl("net/ipv4/ping_group_range", "0 2147483647")
        .expect("sysctl");

    // Cold neighbours, a routed WAN host and a directly connected one (the inet
    // router's side of the WAN link): the first UDP datagram, TCP SYN and ICMP echo.
    for (i, (ns, addr)) in [
        (&tb.wan[0].ns, WAN_A_ADDR),
        (&tb.inet, testbed::INET_GW_SIDE_ADDR),
    ]
    .into_iter()
    .enumerate()
    {
        let port = 7100 + u16::try_from(i).expect("small");
        let what = format!("first packets to {addr}");
        flush_neighbours(gw);
        let rx = udp(ns, addr, port);
        let tx = udp(lan_ns, LAN_A_ADDR, 47100 + port);
        tx.send_to(b"first", SocketAddrV4::new(addr, port))
            .expect("send");
        let (_, from) = recv(&rx).unwrap_or_else(|| panic!("{what}: UDP arrives"));
        assert_eq!(*from.ip(), GW_WAN_ADDR, "{what}: UDP translated");

        flush_neighbours(gw);
        let listener = ns
            .run(move || TcpListener::bind((addr, port)))
            .expect("listen");
        let conn = lan_ns
            .run(move || TcpStream::connect_timeout(&SocketAddrV4::new(addr, port).into(), WAIT));
        assert!(conn.is_ok(), "{what}: TCP connects: {conn:?}");
        let (_, peer) = listener.accept().expect("accept");
        assert_eq!(
            peer.ip(),
            std::net::IpAddr::V4(GW_WAN_ADDR),
            "{what}: SYN translated"
        );

        flush_neighbours(gw);
        let ping = natgw_conformance::sock::Ping::open(lan_ns, LAN_A_ADDR, 0x4200 + port)
            .expect("ping socket");
        ping.echo(addr, 1, b"cold").expect("echo");
        let reply = ping.reply(1, WAIT);
        assert!(
            reply.is_some_and(|r| r.from == addr),
            "{what}: echo answered"
        );
    }

    // `ip neigh flush` in the middle of a flow.
    let wan = udp(&tb.wan[0].ns, WAN_A_ADDR, 7110);
    let sender = Sender::start(
        lan_ns,
        SocketAddrV4::new(LAN_A_ADDR, 47110),
        SocketAddrV4::new(WAN_A_ADDR, 7110),
        Duration::from_millis(10),
    );
    let mut seen = Vec::new();
    for _ in 0..6 {
        flush_neighbours(gw);
        flush_neighbours(&tb.inet);
        seen.extend(arrivals(&wan, Duration::from_millis(150)));
    }
    sender.finish();
    assert!(
        seen.len() > 20,
        "the flow went on through the flushes ({})",
        seen.len()
    );
    assert!(seen.iter().all(|s| *s.ip() == GW_WAN_ADDR), "{seen:?}");

    // TTL 1 (the gateway answers time exceeded to the LAN host) and TTL 2 (the inet
    // router answers, through the mapping).
    let rx = udp(&tb.wan[0].ns, WAN_A_ADDR, 7111);
    let tx = udp(lan_ns, LAN_A_ADDR, 47111);
    for ttl in [1, 2] {
        tx.set_ttl(ttl).expect("ttl");
        tx.send_to(b"ttl", SocketAddrV4::new(WAN_A_ADDR, 7111))
            .expect("send");
    }
    assert!(
        recv_nothing(&rx, Duration::from_millis(300)).is_none(),
        "both expire on the way"
    );

    // Fragments: made by the LAN host (a 2000-byte datagram), and by the gateway (a
    // 1400-byte datagram without DF over a WAN link of MTU 1280).
    let rx = udp(&tb.wan[0].ns, WAN_A_ADDR, 7112);
    let tx = udp(lan_ns, LAN_A_ADDR, 47112);
    allow_fragmentation(&tx);
    tx.send_to(&[7u8; 2000], SocketAddrV4::new(WAN_A_ADDR, 7112))
        .expect("send");
    let (data, from) = recv(&rx).expect("the host-fragmented datagram arrives");
    assert_eq!((data.len(), *from.ip()), (2000, GW_WAN_ADDR));
    let _ =
        natgw_integration_tests::command_output(gw, "ip", &["link", "set", "wan0", "mtu", "1280"]);
    tx.send_to(&[8u8; 1400], SocketAddrV4::new(WAN_A_ADDR, 7112))
        .expect("send");
    let (data, from) = recv(&rx).expect("the gateway-fragmented datagram arrives");
    assert_eq!((data.len(), *from.ip()), (1400, GW_WAN_ADDR));
    let _ =
        natgw_integration_tests::command_output(gw, "ip", &["link", "set", "wan0", "mtu", "1500"]);

    // ICMP errors the gateway sends to the WAN: an inbound datagram whose TTL runs out
    // at the gateway, after its destination became the internal host. Its time
    // exceeded message embeds the translated packet: natgw translates it back.
    let inside = udp(lan_ns, LAN_A_ADDR, 47113);
    let outside = udp(&tb.wan[0].ns, WAN_A_ADDR, 7113);
    inside
        .send_to(b"open", SocketAddrV4::new(WAN_A_ADDR, 7113))
        .expect("send");
    let (_, ext) = recv(&outside).expect("mapping made");
    let errors_before = natgw.counter("icmp_error_out_translated");
    for use_inbound in ["0", "1"] {
        gw.set_sysctl("net/ipv4/icmp_errors_use_inbound_ifaddr", use_inbound)
            .expect("sysctl");
        outside.set_ttl(2).expect("ttl");
        outside
            .send_to(b"expires at the gateway", ext)
            .expect("send");
        outside.set_ttl(64).expect("ttl");
        outside.send_to(b"arrives", ext).expect("send");
        let (data, _) = recv(&inside).expect("the next one arrives");
        assert_eq!(data, b"arrives");
    }
    assert_eq!(
        natgw.counter("icmp_error_out_translated") - errors_before,
        2,
        "both time exceeded messages left with their embedded packet translated"
    );

    // The gateway's own traffic from its LAN address.
    let own = udp(gw, testbed::GW_LAN_A_ADDR, 47114);
    let rx = udp(&tb.wan[0].ns, WAN_A_ADDR, 7114);
    own.send_to(b"own", SocketAddrV4::new(WAN_A_ADDR, 7114))
        .expect("send");
    let (_, from) = recv(&rx).expect("the gateway's own datagram arrives");
    assert_eq!(*from.ip(), GW_WAN_ADDR);

    assert_eq!(natgw.counter("drop_leak_guard"), 0, "every path translated");
    watch.assert_none("cold neighbours, flushes, TTL, fragments, ICMP errors");
}

#[test]
fn nothing_leaks_when_ports_run_out_or_the_table_is_full() {
    require_root();
    for (args, counter) in [
        (["--port-range", "3000-3003"], "drop_ports_exhausted"),
        (["--max-mappings", "8"], "drop_table_full"),
    ] {
        let tb = Testbed::new().expect("testbed");
        let natgw = Natgw::start(&tb.gateway.ns, &args);
        let watch = LeakWatch::start(&tb.inet);
        let rx = udp(&tb.wan[0].ns, WAN_A_ADDR, 7200);
        for port in 0..40 {
            let tx = udp(&tb.lan[0].ns, LAN_A_ADDR, 48000 + port);
            tx.send_to(b"one more", SocketAddrV4::new(WAN_A_ADDR, 7200))
                .expect("send");
        }
        let got = arrivals(&rx, Duration::from_millis(800));
        assert!(
            !got.is_empty() && got.len() < 40,
            "{args:?}: some got through: {}",
            got.len()
        );
        assert!(got.iter().all(|s| *s.ip() == GW_WAN_ADDR));
        assert!(natgw.counter(counter) > 0, "{args:?}: counted as {counter}");
        drop(natgw);
        watch.assert_none(counter);
    }
}

#[test]
fn a_forward_removed_while_natgw_was_down_is_gone_after_the_restart() {
    // A `[[forward]]` taken out of the configuration while natgw was stopped: the
    // maps the next natgw adopts still hold it, but no configuration does, so it
    // must end there (an open port the operator closed must not stay open).
    require_root();
    let tb = Testbed::new().expect("testbed");
    let gw = &tb.gateway.ns;
    let config = std::env::temp_dir().join(format!("natgw-forward-{}.toml", tb.gateway.ns.name()));
    let write = |forward: bool| {
        let text = if forward {
            "[[forward]]\nprotocol = \"udp\"\nexternal_port = 6000\ninternal = \"10.0.2.2:6000\"\n"
        } else {
            ""
        };
        std::fs::write(&config, text).expect("writing the configuration");
    };
    let args = ["--config", config.to_str().expect("path")];
    write(true);
    let mut natgw = Natgw::start(gw, &args);
    let forwarded = udp(&tb.lan[1].ns, LAN_B_ADDR, 6000);
    let probe = udp(&tb.wan[1].ns, testbed::WAN_B_ADDR, 9002);
    let port_6000 = SocketAddrV4::new(GW_WAN_ADDR, 6000);
    probe.send_to(b"fwd", port_6000).expect("send");
    assert!(recv(&forwarded).is_some(), "the forward works");

    assert!(natgw.stop().success(), "{}", natgw.log());
    drop(natgw);
    write(false);
    let natgw = Natgw::start(gw, &args);
    assert!(natgw.log().contains("datapath.adopted"), "{}", natgw.log());
    let internal = SocketAddrV4::new(LAN_B_ADDR, 6000);
    assert!(
        natgw.mapping_of("udp", internal).is_none(),
        "the removed forward's mapping is gone: {:?}\n{}",
        natgw.mapping_of("udp", internal),
        natgw.log()
    );
    probe.send_to(b"fwd", port_6000).expect("send");
    assert!(
        recv_nothing(&forwarded, Duration::from_millis(500)).is_none(),
        "nothing reaches the host through the removed forward"
    );
    drop(natgw);
    let _ = std::fs::remove_file(&config);
}
