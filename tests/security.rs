//! Hostile traffic against natgw, sent the way an attacker on the LAN or on the WAN's
//! link would: frames with forged sources straight onto the wire (`AF_PACKET`), floods
//! from unused addresses, corrupt checksums, tiny requests that ask for large answers.
//! Each test asserts what arrives where and what the counters say (issue #11, one test
//! per finding; each failed against the natgw before the fixes).

use natgw_proto::punch::wire as punch;
use natgw_proto::stun::wire as stun;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use natgw_conformance::packet::{udp as udp_segment, Ipv4Header};
use natgw_conformance::sock::Raw;
use natgw_integration_tests::pcp_bytes::{
    natpmp_map_request, pcp_announce, pcp_map_request, IPPROTO_TCP, IPPROTO_UDP, OP_ANNOUNCE,
    PCP_PORT, RESPONSE,
};
use natgw_integration_tests::{
    accept_redirects, command_output, recv, recv_nothing, udp, wait_for, Natgw, Setup, WAIT,
};
use testbed::{Netns, GW_LAN_A_ADDR, GW_WAN_ADDR, LAN_A_ADDR, LAN_B_ADDR, WAN_A_ADDR, WAN_B_ADDR};

/// The STUN port of natgw's responder.
const STUN_PORT: u16 = 3478;
/// How long to wait before concluding that nothing more arrives.
const QUIET: Duration = Duration::from_millis(800);

/// Frames sent straight onto a link from a namespace (`AF_PACKET`, the kernel adds
/// only the Ethernet header): whatever the IP header says, nothing rewrites or routes
/// it, as from an attacker's own machine on that link.
struct Link {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
    dst_mac: [u8; 6],
}

impl Link {
    /// Frames out of `ifname` in `ns`, to `dst_mac`.
    fn open(ns: &Netns, ifname: &str, dst_mac: [u8; 6]) -> Self {
        let name = ifname.to_owned();
        let (fd, ifindex) = ns.run(move || {
            use std::os::fd::FromRawFd as _;
            let proto = i32::from(
                u16::try_from(libc::ETH_P_IP)
                    .expect("ETH_P_IP fits u16")
                    .to_be(),
            );
            // SAFETY: plain socket(2); the descriptor is owned right away.
            let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, proto) };
            assert!(
                raw >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: `raw` is a fresh descriptor nobody else owns.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
            let cname = std::ffi::CString::new(name).expect("an interface name");
            // SAFETY: a valid C string.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            assert!(ifindex > 0, "no such interface");
            (fd, i32::try_from(ifindex).expect("ifindex fits i32"))
        });
        Self {
            fd,
            ifindex,
            dst_mac,
        }
    }

    /// Sends one IPv4 packet.
    fn send(&self, packet: &[u8]) {
        use std::os::fd::AsRawFd as _;
        // SAFETY: an all-zero sockaddr_ll is valid; the fields are filled below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = u16::try_from(libc::AF_PACKET).expect("AF_PACKET fits u16");
        addr.sll_protocol = u16::try_from(libc::ETH_P_IP)
            .expect("ETH_P_IP fits u16")
            .to_be();
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&self.dst_mac);
        // SAFETY: buffer and address are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const addr).cast(),
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).expect("small"),
            )
        };
        assert!(
            usize::try_from(n).ok() == Some(packet.len()),
            "sending a frame: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Sends a UDP datagram with any source.
    fn udp(&self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
        self.send(&udp_packet(src, dst, payload));
    }
}

/// An IPv4/UDP packet with correct checksums (DF set, as Linux sends UDP).
fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut header = Ipv4Header::new(*src.ip(), *dst.ip(), IPPROTO_UDP);
    header.df = true;
    header.packet(&udp_segment(
        *src.ip(),
        *dst.ip(),
        src.port(),
        dst.port(),
        payload,
    ))
}

/// The MAC address of `ifname` in `ns`.
fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let out = command_output(ns, "ip", &["-o", "link", "show", "dev", ifname]);
    let text = out
        .split("link/ether ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC address in {out}"));
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    mac
}

/// lan-a's link to the gateway's `lan0`.
fn lan_a_link(s: &Setup) -> Link {
    Link::open(&s.tb.lan[0].ns, "eth0", mac_of(&s.tb.gateway.ns, "lan0"))
}

/// The inet router's link to the gateway's `wan0`: an attacker on the WAN's link.
fn wan_link(s: &Setup) -> Link {
    Link::open(&s.tb.inet, "gw0", mac_of(&s.tb.gateway.ns, "wan0"))
}

/// Every datagram `sock` receives until it has been quiet for [`QUIET`] (at most
/// 1000).
fn drain(sock: &UdpSocket) -> Vec<(Vec<u8>, SocketAddrV4)> {
    let mut got = Vec::new();
    while got.len() < 1000 {
        match recv_nothing(sock, QUIET) {
            Some(d) => got.push(d),
            None => break,
        }
    }
    got
}

/// The internal endpoints of every mapping natgw lists.
fn internal_endpoints(natgw: &Natgw) -> Vec<SocketAddrV4> {
    natgw
        .mappings()
        .iter()
        .filter_map(|m| m["internal"].as_str()?.parse().ok())
        .collect()
}

/// Waits until data-path counter `name` reaches `at_least`; its value.
fn counter_reaches(natgw: &Natgw, name: &str, at_least: u64) -> u64 {
    wait_for(WAIT, || {
        let v = natgw.counter(name);
        (v >= at_least).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "{name} stayed at {} (expected {at_least}):\n{}",
            natgw.counter(name),
            natgw.log()
        )
    })
}

/// A data-path counter, 0 when `natgw status` does not list it (so that a natgw
/// without the counter fails on behaviour, not on its absence).
fn counter_or_zero(natgw: &Natgw, name: &str) -> u64 {
    natgw.status()["counters"][name].as_u64().unwrap_or(0)
}

/// A controller counter from `natgw status --json` (0 when not listed yet).
fn controller_counter(natgw: &Natgw, name: &str) -> u64 {
    natgw.status()["controller_counters"][name]
        .as_u64()
        .unwrap_or(0)
}

/// A STUN responder counter from `natgw status --json`.
fn stun_counter(natgw: &Natgw, name: &str) -> u64 {
    natgw.status()["stun"]["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

/// A STUN Binding request (RFC 8489) with transaction id `id`, and a PADDING
/// attribute (RFC 5780 §7.6) of `padding` bytes when given.
fn stun_request(id: u8, padding: Option<u16>) -> Vec<u8> {
    stun::Repr {
        class: stun::Class::Request,
        method: stun::METHOD_BINDING,
        cookie: stun::MAGIC_COOKIE,
        transaction_id: [id; 12],
        attributes: padding.map(stun::Attribute::Padding).into_iter().collect(),
    }
    .to_bytes()
}

/// Whether `reply` is a Binding success for transaction `id`.
fn is_stun_success(reply: &[u8], id: u8) -> bool {
    reply.len() >= 20 && reply[..2] == [0x01, 0x01] && reply[8..20] == [id; 12]
}

#[test]
fn spoofed_gateway_address_on_the_lan_is_dropped_and_maps_nothing() {
    // issue #11 finding 1; rfc6887 §8.3: a LAN host speaking as the gateway's own
    // LAN address must not publish the gateway's LAN-only services.
    let s = Setup::new(&[]);
    let lan_only = udp(&s.tb.gateway.ns, GW_LAN_A_ADDR, 8023);
    let before = counter_or_zero(&s.natgw, "drop_spoofed");
    let link = lan_a_link(&s);
    let from = SocketAddrV4::new(GW_LAN_A_ADDR, 5350);
    let server = SocketAddrV4::new(GW_LAN_A_ADDR, PCP_PORT);
    link.udp(
        from,
        server,
        &pcp_map_request(GW_LAN_A_ADDR, IPPROTO_UDP, 8023, 3600),
    );
    link.udp(
        from,
        server,
        &pcp_map_request(GW_LAN_A_ADDR, IPPROTO_TCP, 8022, 3600),
    );
    link.udp(from, server, &natpmp_map_request(IPPROTO_UDP, 8023, 3600));
    std::thread::sleep(QUIET);
    let mapped: Vec<_> = internal_endpoints(&s.natgw)
        .into_iter()
        .filter(|e| *e.ip() == GW_LAN_A_ADDR)
        .collect();
    assert!(mapped.is_empty(), "mappings to the gateway: {mapped:?}");
    // From the WAN, the port the attack asked for leads nowhere.
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 0);
    wan.send_to(b"probe", SocketAddrV4::new(GW_WAN_ADDR, 8023))
        .expect("send");
    assert!(recv_nothing(&lan_only, QUIET).is_none());
    counter_reaches(&s.natgw, "drop_spoofed", before + 3);
    // lan0 does not accept the gateway's own addresses as sources any more.
    assert_eq!(
        s.tb.gateway
            .ns
            .sysctl("net/ipv4/conf/lan0/accept_local")
            .expect("sysctl"),
        "0"
    );
}

#[test]
fn pcp_and_natpmp_cannot_map_hosts_outside_the_lan() {
    // issue #11 finding 2: a spoofed MAP from the LAN for an internet host would
    // make the gateway an open relay to it.
    let s = Setup::new(&[]);
    let victim = Ipv4Addr::new(198, 51, 100, 10);
    let _ = command_output(
        &s.tb.wan[0].ns,
        "ip",
        &["addr", "add", "198.51.100.10/24", "dev", "eth0"],
    );
    let relayed_to = udp(&s.tb.wan[0].ns, victim, 7000);
    let before = counter_or_zero(&s.natgw, "drop_spoofed");
    let link = lan_a_link(&s);
    let from = SocketAddrV4::new(victim, 5350);
    let server = SocketAddrV4::new(GW_LAN_A_ADDR, PCP_PORT);
    link.udp(
        from,
        server,
        &pcp_map_request(victim, IPPROTO_UDP, 7000, 3600),
    );
    link.udp(from, server, &natpmp_map_request(IPPROTO_UDP, 7000, 3600));
    std::thread::sleep(QUIET);
    let other = udp(&s.tb.wan[1].ns, WAN_B_ADDR, 0);
    for port in [7000, 47000] {
        other
            .send_to(b"relay me", SocketAddrV4::new(GW_WAN_ADDR, port))
            .expect("send");
    }
    assert!(recv_nothing(&relayed_to, QUIET).is_none(), "relayed");
    assert!(
        !internal_endpoints(&s.natgw)
            .iter()
            .any(|e| *e.ip() == victim),
        "a mapping for an outside host"
    );
    counter_reaches(&s.natgw, "drop_spoofed", before + 2);
}

#[test]
fn static_forwards_lead_only_to_internal_hosts() {
    // The configuration is held to the same rule as PCP: no forward to the gateway
    // itself, to a network or broadcast address, or outside the LAN prefixes.
    let tb = testbed::Testbed::new().expect("testbed");
    let dir = std::env::temp_dir().join(format!("natgw-security-fwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (internal, why) in [
        ("10.0.1.1:22", "gateway itself"),
        ("10.0.1.255:22", "network or broadcast"),
        ("198.51.100.10:22", "not inside a LAN prefix"),
    ] {
        let config = dir.join("natgw.toml");
        std::fs::write(
            &config,
            format!(
                "[[forward]]\nprotocol = \"tcp\"\nexternal_port = 2222\ninternal = \"{internal}\"\n"
            ),
        )
        .expect("write config");
        let err = Natgw::try_start(
            &tb.gateway.ns,
            &["--config", config.to_str().expect("UTF-8 path")],
        )
        .err()
        .unwrap_or_else(|| panic!("a forward to {internal} was accepted"));
        assert!(err.contains(why), "{internal}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stun_replies_never_amplify() {
    // issue #11 finding 3: a 24-byte request with an empty PADDING got 1564 bytes.
    // No reply is larger than three times its request; PADDING pads a reply only up
    // to the request's own length (rfc5780 §7.6).
    let s = Setup::new(&[]);
    let client = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 0);
    let server = SocketAddrV4::new(GW_WAN_ADDR, STUN_PORT);
    let mut seen = Vec::new();
    for (id, padding) in [(1, None), (2, Some(0)), (3, Some(4)), (4, Some(64))] {
        let request = stun_request(id, padding);
        client.send_to(&request, server).expect("send");
        let (reply, _) = recv(&client).expect("answered");
        assert!(is_stun_success(&reply, id), "{reply:?}");
        assert!(
            reply.len() <= 3 * request.len(),
            "{} byte request, {} byte reply",
            request.len(),
            reply.len()
        );
        seen.push((request.len(), reply.len()));
    }
    // A client that pads its request gets a padded reply, no longer than it (1400
    // bytes: one unfragmented datagram on this link).
    let request = stun_request(5, Some(1376));
    assert_eq!(request.len(), 1400);
    client.send_to(&request, server).expect("send");
    let (reply, _) = recv(&client).expect("answered");
    assert!(is_stun_success(&reply, 5));
    assert!(
        reply.len() <= request.len() && reply.len() > 1300,
        "{} byte reply to a 1400 byte request",
        reply.len()
    );
    seen.push((request.len(), reply.len()));
    println!("stun request -> reply bytes: {seen:?}");
}

/// issue #11 finding 4: forged sources from the WAN's link never reach the LAN,
/// through the XDP fast path (`fast`) or the kernel's path.
fn spoofed_wan_sources_never_reach_the_lan(fast: bool) {
    let s = Setup::new(&[]);
    if fast {
        accept_redirects(&s, &["lan0"]);
    }
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 40000);
    lan.send_to(b"open", SocketAddrV4::new(WAN_A_ADDR, 7000))
        .expect("send");
    let ext = wait_for(WAIT, || {
        s.natgw
            .mapping_of("udp", SocketAddrV4::new(LAN_A_ADDR, 40000))
    })
    .expect("mapped");
    let ext: SocketAddrV4 = ext["external"]
        .as_str()
        .and_then(|e| e.parse().ok())
        .expect("an external endpoint");
    let spoofed = [
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(224, 0, 0, 5),
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(240, 0, 0, 1),
        GW_WAN_ADDR,
        GW_LAN_A_ADDR,
        Ipv4Addr::new(10, 0, 1, 11),
        LAN_B_ADDR,
        Ipv4Addr::new(10, 0, 1, 255),
        Ipv4Addr::new(10, 0, 1, 0),
        Ipv4Addr::new(192, 0, 2, 255),
    ];
    let before = counter_or_zero(&s.natgw, "drop_spoofed");
    let link = wan_link(&s);
    for src in spoofed {
        for _ in 0..5 {
            link.udp(SocketAddrV4::new(src, 5555), ext, b"spoofed");
        }
    }
    // An ordinary outside source, endpoint-independent filtering lets it in.
    let genuine = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 77), 5555);
    link.udp(genuine, ext, b"genuine");
    let got = drain(&lan);
    assert_eq!(
        got,
        vec![(b"genuine".to_vec(), genuine)],
        "what reached lan-a"
    );
    let dropped = counter_reaches(&s.natgw, "drop_spoofed", before + 5 * 12) - before;
    assert_eq!(dropped, 5 * 12);

    // Straight to the internal address, past the NAT: dropped too.
    let before = counter_or_zero(&s.natgw, "drop_to_internal");
    link.udp(genuine, SocketAddrV4::new(LAN_A_ADDR, 40000), b"direct");
    assert!(recv_nothing(&lan, QUIET).is_none());
    counter_reaches(&s.natgw, "drop_to_internal", before + 1);
}

#[test]
fn spoofed_wan_sources_never_reach_the_lan_on_the_kernel_path() {
    spoofed_wan_sources_never_reach_the_lan(false);
}

#[test]
fn spoofed_wan_sources_never_reach_the_lan_on_the_fast_path() {
    spoofed_wan_sources_never_reach_the_lan(true);
}

#[test]
fn lan_hosts_cannot_speak_as_anyone_else() {
    // issue #11 finding 4, LAN side: only host addresses of lan0's own prefix leave
    // lan0 — not the gateway's, not another LAN's, not the outside's, not the
    // prefix's network or broadcast address.
    let s = Setup::new(&[]);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let to = SocketAddrV4::new(WAN_A_ADDR, 7000);
    let link = lan_a_link(&s);
    let before = counter_or_zero(&s.natgw, "drop_spoofed");
    let forged = [
        GW_LAN_A_ADDR,
        Ipv4Addr::new(10, 0, 2, 1),
        LAN_B_ADDR,
        Ipv4Addr::new(198, 51, 100, 99),
        GW_WAN_ADDR,
        Ipv4Addr::new(10, 0, 1, 0),
        Ipv4Addr::new(10, 0, 1, 255),
        Ipv4Addr::new(127, 0, 0, 1),
    ];
    for src in forged {
        link.udp(SocketAddrV4::new(src, 41000), to, b"forged");
    }
    link.udp(SocketAddrV4::new(LAN_A_ADDR, 41000), to, b"genuine");
    let got = drain(&wan);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, b"genuine");
    assert_eq!(*got[0].1.ip(), GW_WAN_ADDR, "translated");
    let dropped = counter_reaches(&s.natgw, "drop_spoofed", before + 8) - before;
    assert_eq!(dropped, 8);
    // No mapping was made for any forged source.
    let internals: BTreeSet<Ipv4Addr> = internal_endpoints(&s.natgw)
        .iter()
        .map(|e| *e.ip())
        .collect();
    assert_eq!(internals, BTreeSet::from([LAN_A_ADDR]));
}

#[test]
fn corrupt_checksums_stay_corrupt_on_the_fast_path() {
    // issue #11 finding 5: the fast path recomputed L4 checksums from scratch and so
    // made corrupt datagrams valid. A router passes them as they are, for the
    // receiver to drop; only a partial (offloaded) checksum is completed.
    let s = Setup::new(&[]);
    accept_redirects(&s, &["wan0", "lan0"]);
    // A genuine socket opens the mapping and warms the neighbours up.
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 41000);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    lan.send_to(b"warm-up", SocketAddrV4::new(WAN_A_ADDR, 7000))
        .expect("send");
    let (_, ext) = recv(&wan).expect("through");
    wan.send_to(b"warm-up", ext).expect("send");
    recv(&lan).expect("back");

    let corrupt = |src: SocketAddrV4, dst: SocketAddrV4| {
        let mut p = udp_packet(src, dst, b"payload that gets a bit flipped");
        let last = p.len() - 1;
        p[last] ^= 0x01;
        p
    };
    // Outbound.
    let seen_wan = Raw::udp(&s.tb.wan[0].ns).expect("raw socket");
    let out_before = s.natgw.counter("xdp_out_redirected");
    let link = lan_a_link(&s);
    let src = SocketAddrV4::new(LAN_A_ADDR, 41000);
    for _ in 0..50 {
        link.send(&corrupt(src, SocketAddrV4::new(WAN_A_ADDR, 7000)));
    }
    let mut outbound = Vec::new();
    while let Some(r) = seen_wan.recv(QUIET) {
        let ip = r.ip();
        if ip.ports() == Some((ext.port(), 7000)) {
            outbound.push(ip.l4_checksum_ok());
        }
    }
    assert_eq!(outbound.len(), 50, "every corrupt datagram was forwarded");
    assert!(outbound.iter().all(|ok| *ok == Some(false)), "{outbound:?}");
    assert!(
        s.natgw.counter("xdp_out_redirected") >= out_before + 50,
        "on the fast path"
    );

    // Inbound.
    let seen_lan = Raw::udp(&s.tb.lan[0].ns).expect("raw socket");
    let in_before = s.natgw.counter("xdp_in_redirected");
    let wan_raw = Raw::sender(&s.tb.wan[0].ns).expect("raw socket");
    for _ in 0..50 {
        wan_raw
            .send(&corrupt(SocketAddrV4::new(WAN_A_ADDR, 7000), ext))
            .expect("send");
    }
    let mut inbound = Vec::new();
    while let Some(r) = seen_lan.recv(QUIET) {
        let ip = r.ip();
        if ip.ports() == Some((7000, 41000)) {
            inbound.push(ip.l4_checksum_ok());
        }
    }
    assert_eq!(inbound.len(), 50);
    assert!(inbound.iter().all(|ok| *ok == Some(false)), "{inbound:?}");
    assert!(s.natgw.counter("xdp_in_redirected") >= in_before + 50);
    // What lan-a's socket received: nothing of it (its kernel verified).
    assert!(recv_nothing(&lan, QUIET).is_none());
    // Partial checksums from local sockets are still completed on the fast path.
    lan.send_to(b"partial", SocketAddrV4::new(WAN_A_ADDR, 7000))
        .expect("send");
    assert_eq!(recv(&wan).expect("arrives valid").0, b"partial");
}

/// Floods with `send(host, round)` for 40 forged hosts (100..140 of a /24) in 100
/// rounds 20 ms apart (4000 datagrams), while a real client makes `requests`
/// attempts 150 ms apart; how many `attempt(i)` reported answered.
fn answered_during_flood(
    send: impl Fn(u8, u16) + Sync,
    requests: u8,
    mut attempt: impl FnMut(u8) -> bool,
) -> usize {
    std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            for round in 0..100u16 {
                for host in 100..140u8 {
                    send(host, round);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let answered = (0..requests)
            .filter(|i| {
                std::thread::sleep(Duration::from_millis(150));
                attempt(*i)
            })
            .count();
        flood.join().expect("flood thread");
        answered
    })
}

#[test]
fn stun_serves_real_clients_during_a_spoofed_flood() {
    // issue #11 finding 6: 4000 requests from 40 unused addresses of the WAN's
    // subnet made the responder wait on ARP and lose real clients' requests.
    let s = Setup::new(&[]);
    let link = wan_link(&s);
    let server = SocketAddrV4::new(GW_WAN_ADDR, STUN_PORT);
    let client = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 0);
    let flood = |host, round| {
        let from = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, host), 40000 + round);
        link.udp(from, server, &stun_request(host, None));
    };
    let answered = answered_during_flood(flood, 10, |id| {
        client
            .send_to(&stun_request(id, None), server)
            .expect("send");
        let deadline = Instant::now() + Duration::from_secs(1);
        while let Some((reply, _)) = recv_nothing(&client, Duration::from_millis(200)) {
            if is_stun_success(&reply, id) {
                return true;
            }
            if Instant::now() > deadline {
                break;
            }
        }
        false
    });
    let unresolved = stun_counter(&s.natgw, "dropped_unresolved");
    let send_failed = stun_counter(&s.natgw, "send_failed");
    println!("stun flood: real client answered {answered}/10, dropped_unresolved={unresolved}, send_failed={send_failed}");
    assert_eq!(answered, 10, "the real client is served\n{}", s.natgw.log());
    assert!(unresolved > 3000, "the flood was held back: {unresolved}");
    assert_eq!(send_failed, 0);
}

#[test]
fn pcp_serves_real_clients_during_a_spoofed_flood() {
    // issue #11 findings 6 and 7: PCP requests from 40 unused addresses of the LAN's
    // prefix got mappings and made the server lose a real client's requests.
    let s = Setup::new(&[]);
    let link = lan_a_link(&s);
    let server = SocketAddrV4::new(GW_LAN_A_ADDR, PCP_PORT);
    let client = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 0);
    let flood = |host, round| {
        let forged = Ipv4Addr::new(10, 0, 1, host);
        let map = pcp_map_request(forged, IPPROTO_UDP, 20000 + round, 3600);
        link.udp(SocketAddrV4::new(forged, 5350), server, &map);
    };
    let answered = answered_during_flood(flood, 14, |_| {
        client
            .send_to(&pcp_announce(LAN_A_ADDR), server)
            .expect("send");
        recv_nothing(&client, Duration::from_secs(1))
            .is_some_and(|(reply, _)| reply.get(1) == Some(&(RESPONSE | OP_ANNOUNCE)))
    });
    let unresolved = controller_counter(&s.natgw, "pcp_unresolved");
    let send_failed = controller_counter(&s.natgw, "pcp_send_failed");
    println!("pcp flood: real client answered {answered}/14, pcp_unresolved={unresolved}, pcp_send_failed={send_failed}");
    assert_eq!(answered, 14, "the real client is served\n{}", s.natgw.log());
    assert!(unresolved > 3000, "the flood was held back: {unresolved}");
    assert_eq!(send_failed, 0);
    let forged: Vec<_> = internal_endpoints(&s.natgw)
        .into_iter()
        .filter(|e| e.ip().octets()[3] >= 100)
        .collect();
    assert!(forged.is_empty(), "mappings for forged sources: {forged:?}");
}

/// Sends a MAP from every socket in `from` for `ports` and retransmits to those not
/// yet answered (real clients retransmit: the first request from an address the
/// gateway has not resolved yet starts the resolution). Returns each address's
/// result codes.
fn map_from_all(
    from: &[(Ipv4Addr, UdpSocket)],
    server: SocketAddrV4,
    ports: std::ops::Range<u16>,
) -> Vec<(Ipv4Addr, Vec<u8>)> {
    let mut results: Vec<(Ipv4Addr, Vec<u8>)> = Vec::new();
    for (addr, sock) in from {
        let mut codes = Vec::new();
        for port in ports.clone() {
            let request = pcp_map_request(*addr, IPPROTO_UDP, port, 3600);
            let mut code = None;
            for _ in 0..8 {
                sock.send_to(&request, server).expect("send");
                if let Some((reply, _)) = recv_nothing(sock, Duration::from_millis(300)) {
                    code = reply.get(3).copied();
                    break;
                }
            }
            codes.push(code.unwrap_or_else(|| panic!("{addr} got no answer")));
        }
        results.push((*addr, codes));
    }
    results
}

#[test]
fn explicit_mappings_are_capped_per_interface_and_in_all() {
    // issue #11 finding 7: one LAN host speaking from 40 addresses got 40 times the
    // per-host quota. The interface's and the server's caps hold whatever addresses a
    // host uses (ARP is not authenticated: a host can take any free address of its
    // prefix and answer ARP for it, as this one does with ten).
    let dir = std::env::temp_dir().join(format!("natgw-security-caps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("natgw.toml");
    std::fs::write(
        &config,
        "[pcp]\nmax_mappings_per_host = 4\nmax_mappings_per_interface = 20\nmax_mappings = 22\n",
    )
    .expect("write config");
    let s = Setup::new(&["--config", config.to_str().expect("UTF-8 path")]);
    let lan_a = &s.tb.lan[0].ns;
    let mut sockets = Vec::new();
    for host in 100..110u8 {
        let addr = Ipv4Addr::new(10, 0, 1, host);
        let _ = command_output(
            lan_a,
            "ip",
            &["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
        );
        let sock = udp(lan_a, addr, 0);
        sockets.push((addr, sock));
    }
    let server = SocketAddrV4::new(GW_LAN_A_ADDR, PCP_PORT);
    let results = map_from_all(&sockets, server, 6000..6004);
    let granted: usize = results
        .iter()
        .map(|(_, codes)| codes.iter().filter(|c| **c == 0).count())
        .sum();
    // SUCCESS 0, NO_RESOURCES 8 (RFC 6887 §7.4).
    assert!(
        results
            .iter()
            .all(|(_, codes)| codes.iter().all(|c| *c == 0 || *c == 8)),
        "{results:?}"
    );
    assert_eq!(granted, 20, "lan0's cap: {results:?}");
    // lan1 has room of its own, up to the server's cap of 22.
    let lan_b = udp(&s.tb.lan[1].ns, LAN_B_ADDR, 0);
    let codes = map_from_all(
        &[(LAN_B_ADDR, lan_b)],
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 1), PCP_PORT),
        7000..7004,
    );
    assert_eq!(codes[0].1, vec![0, 0, 8, 8], "the server's cap");
    let pcp_mappings = s
        .natgw
        .mappings()
        .iter()
        .filter(|m| m["origin"] == "pcp")
        .count();
    assert_eq!(pcp_mappings, 22);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_table_logs_one_line_per_episode() {
    // issue #11 finding 8: with the table full, the data path logged a line per
    // dropped packet; now the controller logs the episode, the counter keeps count.
    let s = Setup::new(&["--max-mappings", "64"]);
    let link = lan_a_link(&s);
    let to = SocketAddrV4::new(WAN_A_ADDR, 7000);
    for port in 20000..21000u16 {
        link.udp(SocketAddrV4::new(LAN_A_ADDR, port), to, b"x");
    }
    let dropped = counter_reaches(&s.natgw, "drop_table_full", 900);
    // Let the controller notice (it reads the counters every second).
    std::thread::sleep(Duration::from_secs(2));
    let log = s.natgw.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("table full") || l.contains("drop_table_full"))
        .collect();
    println!(
        "{dropped} drops, {} log lines: {:?}",
        lines.len(),
        lines.first()
    );
    assert_eq!(lines.len(), 1, "one line for the episode: {lines:?}");
    assert!(lines[0].contains("counter=drop_table_full"), "{lines:?}");
}

#[test]
fn accept_local_is_restored_even_after_a_crash() {
    // issue #11 finding 9: after kill -9, accept_local stayed on and the next natgw
    // took it for the original value. natgw now sets it only on lo and records the
    // original in its runtime directory first. Since issue #17 the data path (which
    // needs it) outlives the controller, so the original comes back when the data
    // path goes: `natgw stop --flush`.
    let tb = testbed::Testbed::new().expect("testbed");
    let gw = &tb.gateway.ns;
    let lo = "net/ipv4/conf/lo/accept_local";
    assert_eq!(gw.sysctl(lo).expect("sysctl"), "0");
    let mut natgw = Natgw::start(gw, &[]);
    assert_eq!(gw.sysctl(lo).expect("sysctl"), "1");
    for lan in ["lan0", "lan1"] {
        assert_eq!(
            gw.sysctl(&format!("net/ipv4/conf/{lan}/accept_local"))
                .expect("sysctl"),
            "0"
        );
    }
    natgw.kill();
    drop(natgw);
    assert_eq!(
        gw.sysctl(lo).expect("sysctl"),
        "1",
        "a crash cleans nothing up"
    );
    let mut natgw = Natgw::start(gw, &[]);
    assert!(natgw.log().contains("datapath.adopted"), "{}", natgw.log());
    assert_eq!(gw.sysctl(lo).expect("sysctl"), "1");
    assert!(natgw.stop().success());
    assert_eq!(
        gw.sysctl(lo).expect("sysctl"),
        "1",
        "the data path left running still needs it"
    );
    let (st, out, err) = natgw_integration_tests::run_natgw(gw, &["stop", "--flush"]);
    assert!(st.success(), "{out}{err}");
    assert_eq!(
        gw.sysctl(lo).expect("sysctl"),
        "0",
        "the original value is back, not the one the crashed natgw left"
    );
}

/// A punch-protocol message (`natgw_proto::punch::wire`).
fn punch_message(message: punch::Message) -> Vec<u8> {
    punch::Repr {
        transaction: 7,
        message,
    }
    .to_bytes()
}

fn peer_id(id: &str) -> punch::PeerId {
    punch::PeerId::new(id).expect("a valid id")
}

#[test]
fn every_udp_service_answers_within_three_times_its_request() {
    // issue #11: the amplification bound of every UDP service, measured on the wire
    // with the smallest requests that get the largest answers. UDP payload bytes; the
    // IP packet adds 28 to both. Services the WAN can reach answer at most three
    // times the request's payload. PCP and NAT-PMP answer internal hosts only, with
    // answers whose minimum size the RFCs fix (RFC 6887 §9: a 24-byte header even
    // for UNSUPP_VERSION to a 2-byte request; RFC 6886 §3.2: 12 bytes for a 2-byte
    // request): bounded at twice the request as IP packets.
    let s = Setup::new(&[]);
    let mut table: Vec<(&str, usize, usize)> = Vec::new();
    let lan_only = ["pcp", "nat-pmp"];
    let ask = |sock: &UdpSocket, to: SocketAddrV4, request: &[u8]| -> usize {
        sock.send_to(request, to).expect("send");
        recv(sock).expect("answered").0.len()
    };

    // STUN on the external address, from the WAN.
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 0);
    let stun = SocketAddrV4::new(GW_WAN_ADDR, STUN_PORT);
    for (what, request) in [
        ("stun binding", stun_request(1, None)),
        ("stun binding + empty PADDING", stun_request(2, Some(0))),
    ] {
        table.push((what, request.len(), ask(&wan, stun, &request)));
    }

    // PCP and NAT-PMP on the LAN (only internal hosts are answered at all).
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 0);
    let pcp = SocketAddrV4::new(GW_LAN_A_ADDR, PCP_PORT);
    table.push((
        "pcp announce",
        24,
        ask(&lan, pcp, &pcp_announce(LAN_A_ADDR)),
    ));
    let map = pcp_map_request(LAN_A_ADDR, IPPROTO_UDP, 5000, 600);
    table.push(("pcp map", map.len(), ask(&lan, pcp, &map)));
    table.push(("pcp unknown version", 4, ask(&lan, pcp, &[9, 0, 0, 0])));
    let natpmp_map = natpmp_map_request(IPPROTO_UDP, 5001, 600);
    table.push(("nat-pmp map", natpmp_map.len(), ask(&lan, pcp, &natpmp_map)));
    table.push(("nat-pmp external address", 2, ask(&lan, pcp, &[0, 0])));

    // The rendezvous (and its STUN responder), as a public server would run it.
    let listen = SocketAddrV4::new(WAN_B_ADDR, 7000);
    let mut rendezvous = s.tb.wan[1]
        .ns
        .command(natgw_integration_tests::natgw_bin())
        .args(["rendezvous", "--listen", &listen.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("natgw rendezvous");
    let peer = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 0);
    let register_b = punch_message(punch::Message::Register(punch::Register {
        id: peer_id("b"),
        punch: None,
        credential: None,
        private: (1..=4u8)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 5000))
            .collect(),
        mapped: vec![
            punch::Mapped {
                by: punch::MappedBy::Stun,
                endpoint: "198.51.100.1:4000".parse().expect("endpoint"),
            },
            punch::Mapped {
                by: punch::MappedBy::Pcp,
                endpoint: "198.51.100.1:5000".parse().expect("endpoint"),
            },
        ],
    }));
    let answered = wait_for(WAIT, || {
        peer.send_to(&register_b, listen).ok()?;
        recv_nothing(&peer, Duration::from_millis(300))
    })
    .expect("the rendezvous answers");
    table.push(("rendezvous register", register_b.len(), answered.0.len()));
    let asker = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 0);
    let register_a = punch_message(punch::Message::Register(punch::Register {
        id: peer_id("a"),
        punch: None,
        private: Vec::new(),
        mapped: Vec::new(),
        credential: None,
    }));
    table.push((
        "rendezvous register (small)",
        register_a.len(),
        ask(&asker, listen, &register_a),
    ));
    let connect = punch_message(punch::Message::Connect(punch::Connect {
        id: peer_id("a"),
        peer: peer_id("b"),
        punch: None,
        credential: None,
    }));
    table.push((
        "rendezvous connect",
        connect.len(),
        ask(&asker, listen, &connect),
    ));
    let introduction = recv(&peer).expect("b is introduced").0.len();
    table.push((
        "rendezvous introduction (to b)",
        connect.len(),
        introduction,
    ));
    table.push((
        "rendezvous stun binding",
        20,
        ask(&asker, listen, &stun_request(3, None)),
    ));
    let _ = rendezvous.kill();
    let _ = rendezvous.wait();

    println!("| service | request | answer | ratio | on the wire |");
    println!("| --- | --- | --- | --- | --- |");
    for (what, request, answer) in &table {
        #[allow(clippy::cast_precision_loss)]
        let (ratio, wire) = (
            *answer as f64 / *request as f64,
            (*answer + 28) as f64 / (*request + 28) as f64,
        );
        println!("| {what} | {request} | {answer} | {ratio:.2} | {wire:.2} |");
        if lan_only.iter().any(|p| what.starts_with(p)) {
            assert!(wire <= 2.0, "{what}: {request} -> {answer}");
        } else {
            assert!(*answer <= 3 * *request, "{what}: {request} -> {answer}");
        }
    }
}
