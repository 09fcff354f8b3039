//! The ICMP errors natgw sends itself, built as complete IPv4 packets for a raw
//! socket: destination unreachable (RFC 792) with the original datagram's IPv4
//! header and first 8 payload bytes embedded — code 3, port unreachable, for an
//! unsolicited SYN held too long (RFC 5382 REQ-4), and for a packet no mapping could
//! be created for code 13, communication administratively prohibited (RFC 1812
//! §5.2.7.1, RFC 5508 REQ-8), or code 1, host unreachable (RFC 6888 REQ-11), as
//! configured. Pure functions over bytes.

use std::net::Ipv4Addr;

use natgw_common::csum::checksum;
use natgw_common::maps::{HeldSyn, SessionKey, EVENT_SNIPPET};
use natgw_common::packet::{icmp, ipv4, l4, IPV4_MIN_HLEN};
use natgw_common::{addr_octets, IPPROTO_ICMP, IPPROTO_TCP};

/// TTL of the errors natgw sends (Linux's default).
const TTL: u8 = 64;
/// Precedence 6, "internetwork control": RFC 1812 §4.3.2.5 for ICMP errors.
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;
/// Bytes of the original datagram embedded: its header without options and the
/// first 8 bytes of its payload (RFC 792).
pub const ORIGINAL_LEN: usize = EVENT_SNIPPET;
/// The whole packet natgw sends.
pub const PACKET_LEN: usize = IPV4_MIN_HLEN + l4::ICMP_HLEN + ORIGINAL_LEN;

/// An IPv4 header without options, checksum included.
#[allow(clippy::too_many_arguments)]
fn ipv4_header(
    tos: u8,
    total_len: u16,
    id: [u8; 2],
    ttl: u8,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
) -> [u8; IPV4_MIN_HLEN] {
    let mut h = [0u8; IPV4_MIN_HLEN];
    h[ipv4::VER_IHL] = 0x45;
    h[1] = tos;
    h[ipv4::TOT_LEN..ipv4::TOT_LEN + 2].copy_from_slice(&total_len.to_be_bytes());
    h[ipv4::ID..ipv4::ID + 2].copy_from_slice(&id);
    h[ipv4::TTL] = ttl;
    h[ipv4::PROTO] = proto;
    h[ipv4::SRC..ipv4::SRC + 4].copy_from_slice(&src);
    h[ipv4::DST..ipv4::DST + 4].copy_from_slice(&dst);
    let c = checksum(&h, 0);
    h[ipv4::CSUM..ipv4::CSUM + 2].copy_from_slice(&c.to_be_bytes());
    h
}

/// An ICMP destination unreachable with `code` from `src` to `dst` about
/// `original` (header and first payload bytes of the offending datagram).
#[must_use]
pub fn dest_unreachable(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    code: u8,
    original: &[u8; ORIGINAL_LEN],
) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    // The ID is left 0: the kernel fills it in for raw sockets (raw(7)).
    let ip = ipv4_header(
        TOS_INTERNETWORK_CONTROL,
        PACKET_LEN as u16,
        [0, 0],
        TTL,
        IPPROTO_ICMP,
        src.octets(),
        dst.octets(),
    );
    p[..IPV4_MIN_HLEN].copy_from_slice(&ip);
    let msg = &mut p[IPV4_MIN_HLEN..];
    msg[0] = icmp::DEST_UNREACH;
    msg[1] = code;
    // Bytes 4..8 stay zero (unused; the next-hop MTU only for code 4).
    msg[l4::ICMP_HLEN..].copy_from_slice(original);
    let c = checksum(msg, 0);
    msg[l4::ICMP_CSUM..l4::ICMP_CSUM + 2].copy_from_slice(&c.to_be_bytes());
    p
}

/// The held SYN `held` from the remote endpoint of `key` to its external endpoint,
/// reconstructed as an ICMP error embeds it: an IPv4 header (IHL 5, the SYN's TTL
/// and ID, total length 40 — the data path does not keep the real one, and no
/// receiver matches on it) and the first 8 bytes of its TCP header (ports and
/// sequence number, which the sender matches the error to its connection with).
#[must_use]
pub fn held_syn_original(key: &SessionKey, held: &HeldSyn) -> [u8; ORIGINAL_LEN] {
    let mut o = [0u8; ORIGINAL_LEN];
    let ip = ipv4_header(
        0,
        (IPV4_MIN_HLEN + l4::TCP_MIN_HLEN) as u16,
        held.ip_id_be.to_ne_bytes(),
        held.ttl,
        IPPROTO_TCP,
        addr_octets(key.remote_addr_be),
        addr_octets(key.ext_addr_be),
    );
    o[..IPV4_MIN_HLEN].copy_from_slice(&ip);
    let tcp = &mut o[IPV4_MIN_HLEN..];
    tcp[l4::SPORT..l4::SPORT + 2].copy_from_slice(&key.remote_port_be.to_ne_bytes());
    tcp[l4::DPORT..l4::DPORT + 2].copy_from_slice(&key.ext_port_be.to_ne_bytes());
    tcp[4..8].copy_from_slice(&held.seq_be.to_ne_bytes());
    o
}

/// The port unreachable that ends a held SYN: from the external address to the
/// SYN's sender. Returns the destination and the packet.
#[must_use]
pub fn port_unreachable_for(key: &SessionKey, held: &HeldSyn) -> (Ipv4Addr, [u8; PACKET_LEN]) {
    let ext = Ipv4Addr::from(addr_octets(key.ext_addr_be));
    let remote = Ipv4Addr::from(addr_octets(key.remote_addr_be));
    let original = held_syn_original(key, held);
    (
        remote,
        dest_unreachable(ext, remote, icmp::CODE_PORT_UNREACHABLE, &original),
    )
}

/// An event's snippet made embeddable: the data path copies the first 20 bytes of
/// the header, whose IHL may announce options it did not copy, so the IHL becomes 5
/// and the header checksum is recomputed. The total length stays: it describes the
/// original datagram.
#[must_use]
pub fn fixed_snippet(snippet: &[u8; ORIGINAL_LEN]) -> [u8; ORIGINAL_LEN] {
    let mut s = *snippet;
    s[ipv4::VER_IHL] = (s[ipv4::VER_IHL] & 0xf0) | 5;
    s[ipv4::CSUM] = 0;
    s[ipv4::CSUM + 1] = 0;
    let c = checksum(&s[..IPV4_MIN_HLEN], 0);
    s[ipv4::CSUM..ipv4::CSUM + 2].copy_from_slice(&c.to_be_bytes());
    s
}

/// The source address of the datagram in a snippet.
#[must_use]
pub fn snippet_source(snippet: &[u8; ORIGINAL_LEN]) -> Ipv4Addr {
    Ipv4Addr::new(
        snippet[ipv4::SRC],
        snippet[ipv4::SRC + 1],
        snippet[ipv4::SRC + 2],
        snippet[ipv4::SRC + 3],
    )
}

/// Whether an ICMP error may be sent about the datagram in `snippet` (RFC 1812
/// §4.3.2.7): not about an ICMP error, a later fragment, or a datagram from an
/// address that names no single host.
#[must_use]
pub fn may_answer(snippet: &[u8; ORIGINAL_LEN]) -> bool {
    let src = snippet_source(snippet);
    if snippet[ipv4::VER_IHL] >> 4 != 4
        || src.is_unspecified()
        || src.is_broadcast()
        || src.is_multicast()
        || src.is_loopback()
    {
        return false;
    }
    let frag = u16::from_be_bytes([snippet[ipv4::FRAG], snippet[ipv4::FRAG + 1]]);
    if frag & ipv4::OFFSET_MASK != 0 {
        return false;
    }
    let icmp_error = snippet[ipv4::PROTO] == IPPROTO_ICMP
        && matches!(
            snippet[IPV4_MIN_HLEN],
            icmp::DEST_UNREACH
                | icmp::SOURCE_QUENCH
                | icmp::REDIRECT
                | icmp::TIME_EXCEEDED
                | icmp::PARAMETER_PROBLEM
        );
    !icmp_error
}

/// The destination unreachable error with `code` for a datagram no mapping could be
/// created for, from the address of the LAN interface it arrived on to its sender.
/// `None` when no error may be sent about it.
#[must_use]
pub fn no_mapping_error_for(
    snippet: &[u8; ORIGINAL_LEN],
    lan_addr: Ipv4Addr,
    code: u8,
) -> Option<(Ipv4Addr, [u8; PACKET_LEN])> {
    if !may_answer(snippet) {
        return None;
    }
    let to = snippet_source(snippet);
    Some((
        to,
        dest_unreachable(lan_addr, to, code, &fixed_snippet(snippet)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_common::addr_be;

    fn assert_valid(p: &[u8]) {
        assert_eq!(checksum(&p[..20], 0), 0, "outer IP checksum");
        assert_eq!(checksum(&p[20..], 0), 0, "ICMP checksum");
        assert_eq!(checksum(&p[28..48], 0), 0, "embedded IP checksum");
        assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
    }

    fn key() -> SessionKey {
        SessionKey::new(
            addr_be([192, 0, 2, 1]),
            addr_be([198, 51, 100, 2]),
            40000u16.to_be(),
            55555u16.to_be(),
            IPPROTO_TCP,
        )
    }

    #[test]
    fn port_unreachable_for_a_held_syn_embeds_the_reconstructed_syn() {
        // rfc5382 REQ-4
        let held = HeldSyn::new(1, 0x0102_0304u32.to_be(), 0xabcdu16.to_be(), 61);
        let (to, p) = port_unreachable_for(&key(), &held);
        assert_eq!(to, Ipv4Addr::new(198, 51, 100, 2));
        assert_valid(&p);
        assert_eq!(p.len(), 56);
        // Outer: IPv4, IHL 5, ICMP, from the external address to the SYN's sender.
        assert_eq!(p[0], 0x45);
        assert_eq!(p[9], IPPROTO_ICMP);
        assert_eq!(&p[12..16], &[192, 0, 2, 1]);
        assert_eq!(&p[16..20], &[198, 51, 100, 2]);
        // ICMP type 3 code 3, unused word zero.
        assert_eq!((p[20], p[21]), (3, 3));
        assert_eq!(&p[24..28], &[0; 4]);
        // Embedded: the SYN as it arrived.
        let e = &p[28..];
        assert_eq!(e[0], 0x45);
        assert_eq!(u16::from_be_bytes([e[2], e[3]]), 40);
        assert_eq!(&e[4..6], &[0xab, 0xcd]);
        assert_eq!((e[8], e[9]), (61, IPPROTO_TCP));
        assert_eq!(&e[12..16], &[198, 51, 100, 2]);
        assert_eq!(&e[16..20], &[192, 0, 2, 1]);
        assert_eq!(u16::from_be_bytes([e[20], e[21]]), 55555);
        assert_eq!(u16::from_be_bytes([e[22], e[23]]), 40000);
        assert_eq!(&e[24..28], &[1, 2, 3, 4]);
    }

    /// A UDP datagram's first 28 bytes as the data path copies them, from a header
    /// with 8 bytes of options: IHL 7 and the checksum of the full 28-byte header.
    fn snippet_with_options() -> [u8; ORIGINAL_LEN] {
        let mut full = [0u8; 28];
        full[0] = 0x47;
        full[2..4].copy_from_slice(&(28u16 + 8 + 4).to_be_bytes());
        full[8] = 63;
        full[9] = natgw_common::IPPROTO_UDP;
        full[12..16].copy_from_slice(&[10, 0, 2, 2]);
        full[16..20].copy_from_slice(&[198, 51, 100, 2]);
        full[20..28].copy_from_slice(&[1, 1, 1, 1, 1, 1, 1, 0]); // NOPs, EOL
        let c = checksum(&full, 0);
        full[10..12].copy_from_slice(&c.to_be_bytes());
        let mut s = [0u8; ORIGINAL_LEN];
        s[..20].copy_from_slice(&full[..20]);
        // UDP header: 40000 -> 7000, length 12.
        s[20..28].copy_from_slice(&[0x9c, 0x40, 0x1b, 0x58, 0, 12, 0x12, 0x34]);
        s
    }

    #[test]
    fn snippet_gets_ihl_5_and_a_valid_checksum() {
        let s = snippet_with_options();
        assert_ne!(checksum(&s[..20], 0), 0, "the copied header does not check");
        let f = fixed_snippet(&s);
        assert_eq!(f[0], 0x45);
        assert_eq!(checksum(&f[..20], 0), 0);
        assert_eq!(&f[2..4], &s[2..4], "total length kept");
        assert_eq!(&f[20..], &s[20..], "payload bytes kept");
    }

    #[test]
    fn admin_prohibited_goes_from_the_lan_address_to_the_sender() {
        // rfc5508 REQ-8
        let s = snippet_with_options();
        let (to, p) =
            no_mapping_error_for(&s, Ipv4Addr::new(10, 0, 2, 1), icmp::CODE_ADMIN_PROHIBITED)
                .unwrap();
        assert_eq!(to, Ipv4Addr::new(10, 0, 2, 2));
        assert_valid(&p);
        assert_eq!((p[20], p[21]), (3, 13));
        // rfc6888 REQ-11b: the same error with code 1.
        let (_, h) =
            no_mapping_error_for(&s, Ipv4Addr::new(10, 0, 2, 1), icmp::CODE_HOST_UNREACHABLE)
                .unwrap();
        assert_valid(&h);
        assert_eq!((h[20], h[21]), (3, 1));
        assert_eq!(&h[28..], &p[28..]);
        assert_eq!(&p[12..16], &[10, 0, 2, 1]);
        assert_eq!(&p[16..20], &[10, 0, 2, 2]);
        assert_eq!(&p[28..], &fixed_snippet(&s)[..]);
        assert_eq!(p[1], 0xc0, "internetwork control precedence");
    }

    #[test]
    fn no_error_about_errors_fragments_or_non_unicast_sources() {
        // rfc1812 4.3.2.7
        let good = snippet_with_options();
        assert!(may_answer(&good));
        let mut later_fragment = good;
        later_fragment[7] = 1;
        assert!(!may_answer(&later_fragment));
        let mut broadcast = good;
        broadcast[12..16].copy_from_slice(&[255; 4]);
        assert!(!may_answer(&broadcast));
        let mut error = good;
        error[9] = IPPROTO_ICMP;
        error[20] = icmp::DEST_UNREACH;
        assert!(!may_answer(&error));
        let mut echo = error;
        echo[20] = icmp::ECHO_REQUEST;
        assert!(may_answer(&echo));
        assert!(no_mapping_error_for(&error, Ipv4Addr::new(10, 0, 2, 1), 13).is_none());
    }
}
