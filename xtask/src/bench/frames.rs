//! The frames the bench sends and test-runs: 64-byte Ethernet frames (60 bytes
//! without the FCS, which a veth never carries) holding IPv4 UDP datagrams or TCP
//! SYNs, with valid checksums.

use std::net::Ipv4Addr;

use natgw_common::csum::{checksum, pseudo_header_sum, udp_nonzero};
use natgw_common::packet::{icmp, ipv4, l4, ETH_HLEN, ETH_P_IP, ETH_TYPE, IPV4_MIN_HLEN};
use natgw_common::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// Length of every frame: a 64-byte Ethernet frame less its 4-byte FCS (the length
/// `xdp_gen` writes).
pub const FRAME_LEN: usize = natgw_common::bench::GEN_FRAME_LEN;
/// TTL of generated packets.
const TTL: u8 = 64;

/// Who sends a frame to whom.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// Destination MAC (the gateway's LAN interface).
    pub dst_mac: [u8; 6],
    /// Source MAC (the generator's interface).
    pub src_mac: [u8; 6],
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port.
    pub dport: u16,
}

/// What the frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// A UDP datagram (payload of zeros up to the frame length).
    Udp,
    /// A TCP SYN without options.
    TcpSyn,
}

/// Builds the frame.
#[must_use]
pub fn build(l4: L4, e: &Endpoints) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&e.dst_mac);
    f[6..12].copy_from_slice(&e.src_mac);
    f[ETH_TYPE..ETH_HLEN].copy_from_slice(&ETH_P_IP.to_be_bytes());

    let (proto, l4_len) = match l4 {
        L4::Udp => (IPPROTO_UDP, FRAME_LEN - ETH_HLEN - IPV4_MIN_HLEN),
        L4::TcpSyn => (IPPROTO_TCP, l4::TCP_MIN_HLEN),
    };
    let ip = ETH_HLEN;
    ipv4_header(&mut f[ip..ip + IPV4_MIN_HLEN], proto, l4_len, e.src, e.dst);
    f[ip + ipv4::FRAG..ip + ipv4::FRAG + 2].copy_from_slice(&ipv4::DF.to_be_bytes());
    let ip_csum = checksum(&f[ip..ip + IPV4_MIN_HLEN], 0);
    f[ip + ipv4::CSUM..ip + ipv4::CSUM + 2].copy_from_slice(&ip_csum.to_be_bytes());

    let l4_at = ip + IPV4_MIN_HLEN;
    f[l4_at + l4::SPORT..l4_at + l4::SPORT + 2].copy_from_slice(&e.sport.to_be_bytes());
    f[l4_at + l4::DPORT..l4_at + l4::DPORT + 2].copy_from_slice(&e.dport.to_be_bytes());
    let csum_at = match l4 {
        L4::Udp => {
            f[l4_at + 4..l4_at + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            l4_at + l4::UDP_CSUM
        }
        L4::TcpSyn => {
            f[l4_at + 4..l4_at + 8].copy_from_slice(&1u32.to_be_bytes()); // seq
            f[l4_at + 12] = 5 << 4; // data offset: 20 bytes
            f[l4_at + l4::TCP_FLAGS] = 0x02; // SYN
            f[l4_at + 14..l4_at + 16].copy_from_slice(&64_240u16.to_be_bytes()); // window
            l4_at + l4::TCP_CSUM
        }
    };
    let pseudo = pseudo_header_sum(e.src.octets(), e.dst.octets(), proto, l4_len as u16);
    let mut l4_csum = checksum(&f[l4_at..l4_at + l4_len], pseudo);
    if l4 == L4::Udp {
        l4_csum = udp_nonzero(l4_csum);
    }
    f[csum_at..csum_at + 2].copy_from_slice(&l4_csum.to_be_bytes());
    f
}

/// An ICMP port unreachable from `from` (MACs `e.src_mac` → `e.dst_mac`) to the
/// source of `quoted`, quoting that UDP datagram's IPv4 header and first 8 bytes as a
/// router or host would.
#[must_use]
pub fn icmp_port_unreachable(from: Ipv4Addr, quoted: &Endpoints) -> Vec<u8> {
    const QUOTE_LEN: usize = IPV4_MIN_HLEN + 8;
    let inner = build(L4::Udp, quoted);
    let mut f = vec![0u8; ETH_HLEN + IPV4_MIN_HLEN + l4::ICMP_HLEN + QUOTE_LEN];
    f[0..6].copy_from_slice(&quoted.src_mac);
    f[6..12].copy_from_slice(&quoted.dst_mac);
    f[ETH_TYPE..ETH_HLEN].copy_from_slice(&ETH_P_IP.to_be_bytes());
    let ip = ETH_HLEN;
    ipv4_header(
        &mut f[ip..ip + IPV4_MIN_HLEN],
        IPPROTO_ICMP,
        l4::ICMP_HLEN + QUOTE_LEN,
        from,
        quoted.src,
    );
    let ip_csum = checksum(&f[ip..ip + IPV4_MIN_HLEN], 0);
    f[ip + ipv4::CSUM..ip + ipv4::CSUM + 2].copy_from_slice(&ip_csum.to_be_bytes());
    let at = ip + IPV4_MIN_HLEN;
    f[at] = icmp::DEST_UNREACH;
    f[at + 1] = icmp::CODE_PORT_UNREACHABLE;
    f[at + l4::ICMP_HLEN..].copy_from_slice(&inner[ETH_HLEN..ETH_HLEN + QUOTE_LEN]);
    let icmp_csum = checksum(&f[at..], 0);
    f[at + l4::ICMP_CSUM..at + l4::ICMP_CSUM + 2].copy_from_slice(&icmp_csum.to_be_bytes());
    f
}

/// Writes an IPv4 header without options into `h` (zeroed): `proto` carrying
/// `payload_len` bytes from `src` to `dst`, TTL [`TTL`]; flags and checksum are left
/// to the caller.
fn ipv4_header(h: &mut [u8], proto: u8, payload_len: usize, src: Ipv4Addr, dst: Ipv4Addr) {
    let tot_len = (IPV4_MIN_HLEN + payload_len) as u16;
    h[ipv4::VER_IHL] = 0x45;
    h[ipv4::TOT_LEN..ipv4::TOT_LEN + 2].copy_from_slice(&tot_len.to_be_bytes());
    h[ipv4::TTL] = TTL;
    h[ipv4::PROTO] = proto;
    h[ipv4::SRC..ipv4::SRC + 4].copy_from_slice(&src.octets());
    h[ipv4::DST..ipv4::DST + 4].copy_from_slice(&dst.octets());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Endpoints {
        Endpoints {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(10, 0, 1, 2),
            sport: 1024,
            dst: Ipv4Addr::new(192, 0, 2, 2),
            dport: 9,
        }
    }

    #[test]
    fn checksums_verify() {
        for l4 in [L4::Udp, L4::TcpSyn] {
            let f = build(l4, &endpoints());
            assert_eq!(checksum(&f[14..34], 0), 0, "{l4:?} IPv4 header");
            let l4_len = usize::from(u16::from_be_bytes([f[16], f[17]])) - 20;
            let pseudo = pseudo_header_sum([10, 0, 1, 2], [192, 0, 2, 2], f[23], l4_len as u16);
            assert_eq!(checksum(&f[34..34 + l4_len], pseudo), 0, "{l4:?} L4");
        }
    }

    #[test]
    fn icmp_errors_quote_the_datagram_and_verify() {
        let quoted = endpoints();
        let f = icmp_port_unreachable(quoted.dst, &quoted);
        assert_eq!(checksum(&f[14..34], 0), 0, "outer IPv4 header");
        assert_eq!(checksum(&f[34..], 0), 0, "ICMP");
        assert_eq!(
            &f[26..30],
            &quoted.dst.octets(),
            "from the quoted destination"
        );
        assert_eq!(&f[42 + 12..42 + 16], &quoted.src.octets(), "quoted source");
        assert_eq!(checksum(&f[42..62], 0), 0, "quoted IPv4 header");
    }
}
