//! Fragmented UDP datagrams through natgw (RFC 4787 REQ-14): inbound fragments in
//! order and in reverse order (the later fragments are held by the data path and sent
//! on by the controller once the first fragment has been translated), an outbound
//! datagram the LAN host's kernel fragments because it exceeds the MTU, and
//! datagrams to a socket of the gateway itself on its external address, from the
//! WAN and (hairpinned) from a LAN host, in both orders. The hosts write the
//! out-of-order fragments themselves through a raw socket, so their order, sizes and
//! identification are exactly what the test says; in-order datagrams are fragmented
//! by the sending host's kernel.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    time::Duration,
};

use natgw_common::csum;
use natgw_integration_tests::{recv, udp, wait_for, Setup, WAIT};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use testbed::{Netns, GW_WAN_ADDR, LAN_A_ADDR, WAN_A_ADDR};

/// UDP payload of the datagrams to the gateway's own socket: two fragments.
const LOCAL_DATAGRAM_LEN: usize = 2000;
/// The port of the gateway's UDP echo socket on its external address.
const ECHO_PORT: u16 = 9000;

/// UDP payload of the test datagrams: larger than two 1500-byte fragments.
const DATAGRAM_LEN: usize = 3000;
/// Payload bytes per fragment (a multiple of 8 that fills a 1500-byte packet).
const FRAGMENT_DATA: usize = 1480;

fn payload(seed: u8) -> Vec<u8> {
    payload_of(DATAGRAM_LEN, seed)
}

fn payload_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// The IPv4 fragments of the UDP datagram `src` → `dst` carrying `data`, with
/// identification `id`, in offset order.
fn udp_fragments(src: SocketAddrV4, dst: SocketAddrV4, data: &[u8], id: u16) -> Vec<Vec<u8>> {
    let udp_len = u16::try_from(8 + data.len()).expect("datagram fits");
    let mut segment = Vec::with_capacity(usize::from(udp_len));
    segment.extend_from_slice(&src.port().to_be_bytes());
    segment.extend_from_slice(&dst.port().to_be_bytes());
    segment.extend_from_slice(&udp_len.to_be_bytes());
    segment.extend_from_slice(&[0, 0]);
    segment.extend_from_slice(data);
    let pseudo = csum::pseudo_header_sum(
        src.ip().octets(),
        dst.ip().octets(),
        natgw_common::IPPROTO_UDP,
        udp_len,
    );
    let check = csum::udp_nonzero(csum::checksum(&segment, pseudo));
    segment[6..8].copy_from_slice(&check.to_be_bytes());

    let chunks: Vec<&[u8]> = segment.chunks(FRAGMENT_DATA).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let more = i + 1 < chunks.len();
            let offset_units = u16::try_from(i * FRAGMENT_DATA / 8).expect("offset fits");
            let flags_offset = offset_units | if more { 0x2000 } else { 0 };
            let total = u16::try_from(20 + chunk.len()).expect("fragment fits");
            let mut p = Vec::with_capacity(usize::from(total));
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&flags_offset.to_be_bytes());
            p.extend_from_slice(&[64, natgw_common::IPPROTO_UDP, 0, 0]);
            p.extend_from_slice(&src.ip().octets());
            p.extend_from_slice(&dst.ip().octets());
            let check = csum::checksum(&p, 0);
            p[10..12].copy_from_slice(&check.to_be_bytes());
            p.extend_from_slice(chunk);
            p
        })
        .collect()
}

/// Sends complete IPv4 packets from `ns` through a raw socket (`IPPROTO_RAW`, so the
/// header is ours: the kernel keeps identification, offset and MF as given). Works
/// from any host of the testbed.
fn send_raw(ns: &Netns, packets: &[Vec<u8>]) {
    let socket = ns
        .run(|| {
            Socket::new(
                Domain::IPV4,
                Type::RAW,
                Some(Protocol::from(libc::IPPROTO_RAW)),
            )
        })
        .expect("raw socket in the host's namespace");
    for p in packets {
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        socket
            .send_to(p, &SockAddr::from(SocketAddrV4::new(dst, 0)))
            .expect("sending a fragment");
        // Apart, so the order on the wire is the order given.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Receives one datagram of up to 64 KiB; `None` on timeout.
fn recv_large(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddrV4)> {
    let mut buf = vec![0u8; 65_536];
    match sock.recv_from(&mut buf) {
        Ok((n, SocketAddr::V4(from))) => Some((buf[..n].to_vec(), from)),
        Ok(_) => None,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv_from failed: {e}"),
    }
}

/// Opens a mapping for lan-a's `port` by sending to wan-a; returns lan-a's socket and
/// the external endpoint wan-a saw.
fn open_mapping(s: &Setup, port: u16, wan: &UdpSocket) -> (UdpSocket, SocketAddrV4) {
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, port);
    let to = wan.local_addr().expect("wan socket address");
    lan.send_to(b"open", to).expect("send from LAN host");
    let (data, seen) = recv(wan).expect("WAN host received the opening datagram");
    assert_eq!(data, b"open");
    assert_eq!(*seen.ip(), GW_WAN_ADDR);
    (lan, seen)
}

/// The controller counter `name` from `natgw status` (rewritten at most once a
/// second, hence the wait).
fn controller_counter_reaches(s: &Setup, name: &str, at_least: u64) -> bool {
    wait_for(WAIT, || {
        let status = s.natgw.status();
        let v = status["controller_counters"][name].as_u64().unwrap_or(0);
        (v >= at_least).then_some(())
    })
    .is_some()
}

#[test]
fn inbound_fragments_in_reverse_order_are_delivered() {
    // rfc4787 REQ-14: fragments arriving out of order, the first fragment last.
    let s = Setup::new(&[]);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let (lan, external) = open_mapping(&s, 40000, &wan);
    let data = payload(1);
    let mut fragments = udp_fragments(SocketAddrV4::new(WAN_A_ADDR, 7000), external, &data, 0x4242);
    assert_eq!(fragments.len(), 3);
    fragments.reverse();
    send_raw(&s.tb.wan[0].ns, &fragments);
    let (got, from) = recv_large(&lan).expect("lan-a received the reassembled datagram");
    assert_eq!(from, SocketAddrV4::new(WAN_A_ADDR, 7000));
    assert_eq!(got.len(), DATAGRAM_LEN);
    assert!(
        got == data,
        "payload intact (the UDP checksum was verified too)"
    );
    assert!(
        s.natgw.counter("drop_fragment_held") >= 2,
        "later fragments were held"
    );
    assert!(
        controller_counter_reaches(&s, "fragments_resent", 2),
        "the controller sent the held fragments on: {}",
        s.natgw.status()["controller_counters"]
    );
}

#[test]
fn inbound_fragments_in_order_are_delivered() {
    // rfc4787 REQ-14
    let s = Setup::new(&[]);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let (lan, external) = open_mapping(&s, 40002, &wan);
    let data = payload(2);
    let fragments = udp_fragments(SocketAddrV4::new(WAN_A_ADDR, 7000), external, &data, 0x1717);
    send_raw(&s.tb.wan[0].ns, &fragments);
    let (got, from) = recv_large(&lan).expect("lan-a received the reassembled datagram");
    assert_eq!(from, SocketAddrV4::new(WAN_A_ADDR, 7000));
    assert!(got == data, "payload intact");
    assert!(s.natgw.counter("fragment_translated") >= 2);
}

#[test]
fn outbound_datagram_larger_than_the_mtu_is_fragmented_and_translated() {
    // rfc4787 REQ-14: lan-a's kernel fragments the datagram (veth MTU 1500, DF off);
    // every fragment leaves with the external address.
    let s = Setup::new(&[]);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 40004);
    let dont: libc::c_int = libc::IP_PMTUDISC_DONT;
    // SAFETY: a valid socket and an int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            lan.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&raw const dont).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "IP_MTU_DISCOVER: {}",
        std::io::Error::last_os_error()
    );
    let data = payload(3);
    lan.send_to(&data, SocketAddrV4::new(WAN_A_ADDR, 7000))
        .expect("send from LAN host");
    let (got, from) = recv_large(&wan).expect("wan-a received the reassembled datagram");
    assert_eq!(
        from,
        SocketAddrV4::new(GW_WAN_ADDR, 40004),
        "translated, port kept"
    );
    assert!(got == data, "payload intact");
    // And the reply, small, comes back through the mapping.
    wan.send_to(b"ok", from).expect("reply");
    let (reply, _) = recv(&lan).expect("reply reached lan-a");
    assert_eq!(reply, b"ok");
}

/// Where a datagram for the gateway's echo socket comes from.
#[derive(Clone, Copy, Debug)]
enum Sender {
    Wan,
    Lan,
}

/// Fragment order of a datagram for the gateway's echo socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// Fragmented by the sender's kernel (veth MTU 1500), in order.
    Kernel,
    /// Written through a raw socket, the last fragment first.
    Reversed,
}

/// Sends a `LOCAL_DATAGRAM_LEN`-byte datagram from `sender`'s host (port `port`) to a
/// UDP socket of the gateway on its external address, fragmented in `order`; the
/// socket must receive it whole, from the endpoint natgw shows the outside (the host
/// itself from the WAN, its external endpoint from the LAN: RFC 4787 REQ-9a), and its
/// echo must reach the sender whole.
fn datagram_to_a_local_socket(sender: Sender, order: Order, port: u16) -> Setup {
    let s = Setup::new(&[]);
    let echo = udp(&s.tb.gateway.ns, GW_WAN_ADDR, ECHO_PORT);
    let (host, addr) = match sender {
        Sender::Wan => (&s.tb.wan[0].ns, WAN_A_ADDR),
        Sender::Lan => (&s.tb.lan[0].ns, LAN_A_ADDR),
    };
    let sock = udp(host, addr, port);
    let data = payload_of(LOCAL_DATAGRAM_LEN, port as u8);
    let to = SocketAddrV4::new(GW_WAN_ADDR, ECHO_PORT);
    match order {
        Order::Kernel => {
            sock.send_to(&data, to).expect("sending the datagram");
        }
        Order::Reversed => {
            let mut fragments = udp_fragments(SocketAddrV4::new(addr, port), to, &data, 0x5151);
            assert_eq!(fragments.len(), 2);
            fragments.reverse();
            send_raw(host, &fragments);
        }
    }
    let (got, from) = recv_large(&echo).unwrap_or_else(|| {
        panic!(
            "the gateway's socket received nothing ({sender:?}, {order:?}); \
             drop_fragment_held {}, {}",
            s.natgw.counter("drop_fragment_held"),
            s.natgw.status()["controller_counters"]
        )
    });
    let expected_from = match sender {
        Sender::Wan => SocketAddrV4::new(WAN_A_ADDR, port),
        // Hairpinned: the host's external endpoint (the port is free, so kept).
        Sender::Lan => SocketAddrV4::new(GW_WAN_ADDR, port),
    };
    assert_eq!(from, expected_from);
    assert_eq!(got.len(), LOCAL_DATAGRAM_LEN);
    assert!(
        got == data,
        "payload intact (the UDP checksum was verified too)"
    );
    echo.send_to(&got, from).expect("echo");
    let (back, back_from) = recv_large(&sock).expect("the echo reached the sender");
    assert_eq!(back_from, to);
    assert!(back == data, "echo intact");
    s
}

#[test]
fn datagram_from_the_wan_to_a_local_socket_arrives_whole() {
    // rfc4787 REQ-14: a datagram for the gateway itself; its later fragment goes to
    // the kernel untouched, as its first fragment did.
    let s = datagram_to_a_local_socket(Sender::Wan, Order::Kernel, 7100);
    assert!(s.natgw.counter("fragment_local") >= 1);
}

#[test]
fn datagram_from_the_wan_to_a_local_socket_in_reverse_order_arrives_whole() {
    // rfc4787 REQ-14: the later fragment, held before its first fragment went to a
    // local socket, is delivered to the kernel untouched by the controller.
    let s = datagram_to_a_local_socket(Sender::Wan, Order::Reversed, 7102);
    assert!(s.natgw.counter("drop_fragment_held") >= 1);
    assert!(
        controller_counter_reaches(&s, "fragments_resent", 1),
        "{}",
        s.natgw.status()["controller_counters"]
    );
}

#[test]
fn datagram_from_a_lan_host_to_a_local_socket_arrives_whole() {
    // rfc4787 REQ-9a, REQ-14: hairpinned to the gateway's socket, every fragment
    // with the host's external address; the echo, larger than the LAN's MTU, is
    // fragmented on its way back.
    let s = datagram_to_a_local_socket(Sender::Lan, Order::Kernel, 40100);
    assert!(s.natgw.counter("hairpin_local") >= 1);
    assert!(s.natgw.counter("fragment_translated") >= 1);
    assert!(s.natgw.counter("hairpin_local_reply_routed") >= 1);
}

#[test]
fn datagram_from_a_lan_host_to_a_local_socket_in_reverse_order_arrives_whole() {
    // rfc4787 REQ-9a, REQ-14: the later fragment is held until the first fragment
    // has been hairpinned, then sent on with the same source and identification.
    let s = datagram_to_a_local_socket(Sender::Lan, Order::Reversed, 40102);
    assert!(s.natgw.counter("drop_fragment_held") >= 1);
    assert!(
        controller_counter_reaches(&s, "fragments_resent", 1),
        "{}",
        s.natgw.status()["controller_counters"]
    );
}
