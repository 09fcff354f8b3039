//! UDP and TCP through natgw on the veth testbed, asserted on what arrives: source
//! addresses and ports seen by the WAN hosts, replies reaching the LAN hosts (their
//! sockets verify checksums, with veth offloads left on), and the mapping table.

use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    time::Duration,
};

use natgw_integration_tests::{
    accept_redirects, enable_gro, read_all, recv, recv_nothing, udp, wait_for, Setup, WAIT,
};
use testbed::{GW_WAN_ADDR, LAN_A_ADDR, LAN_B_ADDR, WAN_A_ADDR, WAN_B_ADDR};

/// Sends `payload` from `lan` to `wan_sock` and echoes it back; returns the source the
/// WAN host saw.
fn udp_round_trip(
    lan: &std::net::UdpSocket,
    wan: &std::net::UdpSocket,
    to: SocketAddrV4,
    payload: &[u8],
) -> SocketAddrV4 {
    lan.send_to(payload, to).expect("send from LAN host");
    let (data, seen) = recv(wan).expect("WAN host received the datagram");
    assert_eq!(data, payload);
    wan.send_to(b"echo", seen).expect("reply from WAN host");
    let (reply, from) = recv(lan).expect("LAN host received the reply through the NAT");
    assert_eq!(reply, b"echo");
    assert_eq!(from, to, "reply comes from the WAN host's address");
    seen
}

#[test]
fn udp_round_trip_is_translated_and_port_preserved() {
    // rfc4787 REQ-1, port preservation
    let s = Setup::new(&[]);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 40000);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let seen = udp_round_trip(&lan, &wan, SocketAddrV4::new(WAN_A_ADDR, 7000), b"hello");
    assert_eq!(
        seen,
        SocketAddrV4::new(GW_WAN_ADDR, 40000),
        "translated to the external address, port preserved"
    );
    let m = s
        .natgw
        .mapping_of("udp", SocketAddrV4::new(LAN_A_ADDR, 40000))
        .expect("natgw mappings lists the mapping");
    assert_eq!(m["external"], "192.0.2.1:40000");
    assert!(m["packets_out"].as_u64().unwrap_or(0) >= 1, "{m}");
    assert!(m["packets_in"].as_u64().unwrap_or(0) >= 1, "{m}");
}

#[test]
fn udp_mapping_is_endpoint_independent() {
    // rfc4787 REQ-1: one internal endpoint, two destinations on different networks,
    // one external endpoint.
    let s = Setup::new(&[]);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 41000);
    let wan_a = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let wan_b = udp(&s.tb.wan[1].ns, WAN_B_ADDR, 7001);
    let seen_a = udp_round_trip(&lan, &wan_a, SocketAddrV4::new(WAN_A_ADDR, 7000), b"to a");
    let seen_b = udp_round_trip(&lan, &wan_b, SocketAddrV4::new(WAN_B_ADDR, 7001), b"to b");
    assert_eq!(seen_a, seen_b);
    assert_eq!(*seen_a.ip(), GW_WAN_ADDR);
}

#[test]
fn colliding_internal_ports_get_distinct_external_ports() {
    // rfc4787 REQ-3 (no port overloading), REQ-4 (parity kept when the port moves)
    let s = Setup::new(&[]);
    let lan_a = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 42000);
    let lan_b = udp(&s.tb.lan[1].ns, LAN_B_ADDR, 42000);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let to = SocketAddrV4::new(WAN_A_ADDR, 7000);
    let seen_a = udp_round_trip(&lan_a, &wan, to, b"a");
    let seen_b = udp_round_trip(&lan_b, &wan, to, b"b");
    assert_eq!(seen_a.port(), 42000, "first host keeps its port");
    assert_ne!(
        seen_b.port(),
        42000,
        "second host cannot have the same external port"
    );
    assert_eq!(seen_b.port() % 2, 0, "parity preserved");
    assert!(seen_b.port() >= 1024);
    // Both mappings keep working side by side.
    let again_a = udp_round_trip(&lan_a, &wan, to, b"a2");
    let again_b = udp_round_trip(&lan_b, &wan, to, b"b2");
    assert_eq!((again_a, again_b), (seen_a, seen_b));
}

fn tcp_echo_once(listener: TcpListener) -> std::thread::JoinHandle<SocketAddrV4> {
    std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut buf = [0u8; 5];
        std::io::Read::read_exact(&mut conn, &mut buf).expect("read request");
        conn.write_all(&buf).expect("echo");
        let std::net::SocketAddr::V4(peer) = peer else {
            panic!("IPv4 peer expected")
        };
        peer
    })
}

/// Connects from `ns` to a one-shot echo server at `to` and checks the echo;
/// returns (the client's local port, the peer address the server saw).
fn tcp_hello(
    client: &testbed::Netns,
    server: &testbed::Netns,
    to: SocketAddrV4,
) -> (u16, SocketAddrV4) {
    let listener = server.run(|| TcpListener::bind(to)).expect("listen");
    let server = tcp_echo_once(listener);
    let mut conn = client
        .run(|| TcpStream::connect_timeout(&to.into(), WAIT))
        .expect("connect through the NAT");
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    let local = conn.local_addr().expect("local addr");
    conn.write_all(b"hello").expect("send");
    conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_eq!(read_all(&mut conn), b"hello");
    (local.port(), server.join().expect("server thread"))
}

#[test]
fn tcp_round_trip_is_translated() {
    // rfc5382 REQ-1, REQ-2 (three-way handshake, data, FIN in both directions)
    let s = Setup::new(&[]);
    let (local_port, peer) = tcp_hello(
        &s.tb.lan[0].ns,
        &s.tb.wan[0].ns,
        SocketAddrV4::new(WAN_A_ADDR, 8080),
    );
    assert_eq!(*peer.ip(), GW_WAN_ADDR, "server sees the external address");
    assert_eq!(peer.port(), local_port, "port preserved");
    let m = s
        .natgw
        .mapping_of("tcp", SocketAddrV4::new(LAN_A_ADDR, local_port))
        .expect("TCP mapping listed");
    assert_eq!(m["external"], format!("{GW_WAN_ADDR}:{}", local_port));
}

#[test]
fn tcp_mapping_is_endpoint_independent() {
    // rfc5382 REQ-1: two connections from one internal port to two servers share
    // one external endpoint.
    let s = Setup::new(&[]);
    let la = s.tb.wan[0]
        .ns
        .run(|| TcpListener::bind((WAN_A_ADDR, 8080)))
        .expect("listen a");
    let lb = s.tb.wan[1]
        .ns
        .run(|| TcpListener::bind((WAN_B_ADDR, 8080)))
        .expect("listen b");
    let (sa, sb) = (tcp_echo_once(la), tcp_echo_once(lb));
    let connect = |to: Ipv4Addr| {
        s.tb.lan[0].ns.run(|| {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            sock.set_reuse_address(true).expect("SO_REUSEADDR");
            sock.set_reuse_port(true).expect("SO_REUSEPORT");
            sock.bind(&SocketAddrV4::new(LAN_A_ADDR, 43000).into())
                .expect("bind");
            sock.connect_timeout(&SocketAddrV4::new(to, 8080).into(), WAIT)
                .expect("connect");
            let mut s: TcpStream = sock.into();
            s.set_read_timeout(Some(WAIT)).expect("timeout");
            s.write_all(b"hello").expect("send");
            s
        })
    };
    let _ca = connect(WAN_A_ADDR);
    let _cb = connect(WAN_B_ADDR);
    let (pa, pb) = (sa.join().expect("server a"), sb.join().expect("server b"));
    assert_eq!(pa, pb, "same external endpoint towards both servers");
    assert_eq!(pa, SocketAddrV4::new(GW_WAN_ADDR, 43000));
}

#[test]
fn unsolicited_inbound_is_dropped_and_counted() {
    let s = Setup::new(&[]);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 44000);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let before = s.natgw.counter("drop_no_mapping");
    wan.send_to(b"knock", SocketAddrV4::new(GW_WAN_ADDR, 44000))
        .expect("send");
    assert!(recv_nothing(&lan, Duration::from_millis(500)).is_none());
    assert!(
        wait_for(WAIT, || (s.natgw.counter("drop_no_mapping") > before)
            .then_some(()))
        .is_some()
    );
}

#[test]
fn fast_path_redirects_with_complete_checksums() {
    // With GRO on the far ends of the veths, the WAN and LAN devices accept XDP
    // redirects: packets cross in XDP, and the receiving sockets (which verify
    // checksums of redirected frames) still get them.
    let s = Setup::new(&[]);
    accept_redirects(&s, &["wan0", "lan0"]);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 45001);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let to = SocketAddrV4::new(WAN_A_ADDR, 7000);
    // The first packets may find neighbours unresolved and take the kernel's path.
    udp_round_trip(&lan, &wan, to, b"warm-up");
    let (out0, in0) = (
        s.natgw.counter("xdp_out_redirected"),
        s.natgw.counter("xdp_in_redirected"),
    );
    // Odd and even lengths: the checksum is recomputed over every byte.
    for len in [33, 134, 1001] {
        let seen = udp_round_trip(&lan, &wan, to, &vec![b'x'; len]);
        assert_eq!(seen, SocketAddrV4::new(GW_WAN_ADDR, 45001));
    }
    // The fast path does the router's TTL duty: gateway and inet router each take one.
    enable_recv_ttl(&wan);
    lan.set_ttl(10).expect("ttl");
    lan.send_to(b"ttl", to).expect("send");
    assert_eq!(recv_ttl(&wan), 8);
    let status = s.natgw.status();
    assert!(
        s.natgw.counter("xdp_out_redirected") >= out0 + 4,
        "{status}"
    );
    assert!(s.natgw.counter("xdp_in_redirected") >= in0 + 3, "{status}");
    // TCP through the fast path too.
    let (_, peer) = tcp_hello(
        &s.tb.lan[0].ns,
        &s.tb.wan[0].ns,
        SocketAddrV4::new(WAN_A_ADDR, 8080),
    );
    assert_eq!(*peer.ip(), GW_WAN_ADDR);
}

#[test]
fn ttl_is_decremented_and_expiry_answered_with_time_exceeded() {
    let s = Setup::new(&[]);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 46000);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    enable_recv_ttl(&wan);
    lan.set_ttl(10).expect("ttl");
    lan.send_to(b"ttl", SocketAddrV4::new(WAN_A_ADDR, 7000))
        .expect("send");
    let ttl = recv_ttl(&wan);
    assert_eq!(ttl, 8, "gateway and inet router each decrement the TTL");
    // TTL 1: the gateway answers with ICMP time exceeded, visible to the sender
    // through IP_RECVERR.
    lan.set_ttl(1).expect("ttl");
    nix::sys::socket::setsockopt(&lan, nix::sys::socket::sockopt::Ipv4RecvErr, &true)
        .expect("IP_RECVERR");
    lan.send_to(b"ttl", SocketAddrV4::new(WAN_A_ADDR, 7000))
        .expect("send");
    let (icmp_type, offender) = recv_icmp_error(&lan);
    assert_eq!(icmp_type, 11, "ICMP time exceeded");
    assert_eq!(offender, Ipv4Addr::new(10, 0, 1, 1), "sent by the gateway");
    assert!(
        recv_nothing(&wan, Duration::from_millis(300)).is_none(),
        "expired packet not forwarded"
    );
}

fn enable_recv_ttl(sock: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: valid socket and option buffer of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVTTL,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IP_RECVTTL");
}

/// Receives one datagram and returns the TTL it arrived with (IP_RECVTTL).
fn recv_ttl(sock: &std::net::UdpSocket) -> u8 {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 64];
    let mut cbuf = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr points at live buffers of the sizes given; CMSG_* walk the
    // control buffer the kernel filled.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let n = libc::recvmsg(sock.as_raw_fd(), &raw mut msg, 0);
        assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_TTL {
                let ttl = libc::CMSG_DATA(c).cast::<libc::c_int>().read_unaligned();
                return u8::try_from(ttl).expect("ttl fits u8");
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    panic!("no IP_TTL control message");
}

fn recv_icmp_error(sock: &std::net::UdpSocket) -> (u8, Ipv4Addr) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrIn};
    use std::os::fd::AsRawFd;
    let got = wait_for(WAIT, || {
        let mut buf = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in);
        let msg = recvmsg::<SockaddrIn>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        )
        .ok()?;
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::Ipv4RecvErr(err, Some(addr)) = c {
                return Some((
                    err.ee_type,
                    Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
                ));
            }
        }
        None
    });
    got.expect("an ICMP error reached the sender")
}

#[test]
fn generic_xdp_mode_translates_through_the_kernel_path() {
    // In SKB mode a redirected veth frame would keep its partial-checksum state, so
    // natgw leaves such frames to the kernel's path; traffic must still flow.
    let s = Setup::new(&["--xdp-mode", "skb"]);
    enable_gro(&s.tb.inet, "gw0");
    enable_gro(&s.tb.lan[0].ns, "eth0");
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 45003);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let to = SocketAddrV4::new(WAN_A_ADDR, 7000);
    for len in [33, 1001] {
        let seen = udp_round_trip(&lan, &wan, to, &vec![b'y'; len]);
        assert_eq!(seen, SocketAddrV4::new(GW_WAN_ADDR, 45003));
    }
    let status = s.natgw.status();
    assert!(
        status["interfaces"]
            .as_array()
            .is_some_and(|i| i.iter().all(|i| i["xdp_mode"] == "skb")),
        "{status}"
    );
    assert_eq!(s.natgw.counter("xdp_out_redirected"), 0, "{status}");
    assert!(s.natgw.counter("tc_out_translated") >= 2, "{status}");
}

#[test]
fn udp_and_tcp_hairpin_with_external_source() {
    // rfc4787 REQ-9, REQ-9a; rfc5382 REQ-8: an internal host reaches another one
    // through its external endpoint and sees the sender's external endpoint.
    let s = Setup::new(&[]);
    let b = udp(&s.tb.lan[1].ns, LAN_B_ADDR, 50000);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let b_ext = udp_round_trip(&b, &wan, SocketAddrV4::new(WAN_A_ADDR, 7000), b"open");
    let a = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 51000);
    a.send_to(b"hairpin", b_ext)
        .expect("send to b's external endpoint");
    let (data, seen) = recv(&b).expect("lan-b got the hairpinned datagram");
    assert_eq!(data, b"hairpin");
    assert_eq!(
        seen,
        SocketAddrV4::new(GW_WAN_ADDR, 51000),
        "source is lan-a's external endpoint"
    );
    b.send_to(b"back", seen).expect("reply");
    let (data, from) = recv(&a).expect("lan-a got the reply");
    assert_eq!(data, b"back");
    assert_eq!(
        from, b_ext,
        "the reply comes from lan-b's external endpoint"
    );

    // TCP: lan-b's endpoint 10.0.2.2:52000 gets a mapping by connecting out, and a
    // listener on the same port accepts lan-a's connection to its external endpoint.
    let reuse = |sock: &socket2::Socket| {
        sock.set_reuse_address(true).expect("SO_REUSEADDR");
        sock.set_reuse_port(true).expect("SO_REUSEPORT");
    };
    let (_out, listener) = s.tb.lan[1].ns.run(|| {
        let wan_listener = s.tb.wan[0]
            .ns
            .run(|| TcpListener::bind((WAN_A_ADDR, 8081)))
            .expect("listen on wan-a");
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        reuse(&l);
        l.bind(&SocketAddrV4::new(LAN_B_ADDR, 52000).into())
            .expect("bind listener");
        l.listen(4).expect("listen");
        let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        reuse(&c);
        c.bind(&SocketAddrV4::new(LAN_B_ADDR, 52000).into())
            .expect("bind client");
        c.connect_timeout(&SocketAddrV4::new(WAN_A_ADDR, 8081).into(), WAIT)
            .expect("connect out");
        drop(wan_listener);
        (c, TcpListener::from(l))
    });
    let server = tcp_echo_once(listener);
    let mut conn = s.tb.lan[0]
        .ns
        .run(|| TcpStream::connect_timeout(&SocketAddrV4::new(GW_WAN_ADDR, 52000).into(), WAIT))
        .expect("connect to lan-b's external endpoint");
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    let a_port = conn.local_addr().expect("local").port();
    conn.write_all(b"hello").expect("send");
    conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_eq!(read_all(&mut conn), b"hello");
    assert_eq!(
        server.join().expect("server"),
        SocketAddrV4::new(GW_WAN_ADDR, a_port)
    );
    assert!(s.natgw.counter("hairpin_translated") >= 4);
}

#[test]
fn tcp_from_a_local_service_to_a_lan_host_arrives_in_segments_larger_than_the_lan_mtu() {
    // rfc5382 REQ-8, rfc4787 REQ-9a: a LAN host downloads from
    // a TCP service of the gateway on its external address. The service's socket
    // sends over `lo` (64 KiB MTU) in segment trains larger than the LAN's MTU, which
    // natgw hands to the kernel's forwarding to be segmented instead of losing them.
    let s = Setup::new(&[]);
    let service = SocketAddrV4::new(GW_WAN_ADDR, 9100);
    // Kept open for the whole test: natgw recognises the hairpinned host's segments
    // for the service by its listening socket.
    let listener =
        s.tb.gateway
            .ns
            .run(|| TcpListener::bind(service))
            .expect("listen on the external address");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let server = {
        let listener = listener.try_clone().expect("listener");
        let data = data.clone();
        std::thread::spawn(move || {
            let (mut conn, from) = listener.accept().expect("accept");
            conn.write_all(&data).expect("send");
            from
        })
    };
    let mut conn = s.tb.lan[0]
        .ns
        .run(|| TcpStream::connect_timeout(&service.into(), WAIT))
        .expect("connect to the gateway's service");
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    let port = conn.local_addr().expect("local").port();
    let got = read_all(&mut conn);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "stream intact");
    assert_eq!(
        server.join().expect("server"),
        std::net::SocketAddr::from(SocketAddrV4::new(GW_WAN_ADDR, port)),
        "the service saw lan-a's external endpoint"
    );
    assert!(s.natgw.counter("hairpin_local_reply_routed") >= 1);
    drop(listener);
}
