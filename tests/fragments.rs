//! Fragmented UDP datagrams through natgw (RFC 4787 REQ-14): inbound fragments in
//! order and in reverse order (the later fragments are held by the data path and sent
//! on by the controller once the first fragment has been translated), and an outbound
//! datagram the LAN host's kernel fragments because it exceeds the MTU. The WAN host
//! writes the inbound fragments itself through a raw socket, so their order, sizes
//! and identification are exactly what the test says.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    time::Duration,
};

use natgw_common::csum;
use natgw_integration_tests::{recv, udp, wait_for, Setup, WAIT};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use testbed::{Netns, GW_WAN_ADDR, LAN_A_ADDR, WAN_A_ADDR};

/// UDP payload of the test datagrams: larger than two 1500-byte fragments.
const DATAGRAM_LEN: usize = 3000;
/// Payload bytes per fragment (a multiple of 8 that fills a 1500-byte packet).
const FRAGMENT_DATA: usize = 1480;

fn payload(seed: u8) -> Vec<u8> {
    (0..DATAGRAM_LEN)
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
/// header is ours: the kernel keeps identification, offset and MF as given).
fn send_raw(ns: &Netns, packets: &[Vec<u8>]) {
    let socket = ns
        .run(|| {
            Socket::new(
                Domain::IPV4,
                Type::RAW,
                Some(Protocol::from(libc::IPPROTO_RAW)),
            )
        })
        .expect("raw socket in the WAN host's namespace");
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
