//! What a UDP or TCP packet must be before it may create or refresh NAT state: the
//! checks Linux conntrack makes before it tracks a packet, whose failures it marks
//! invalid (`udp_error` in `nf_conntrack_proto_udp.c`, `tcp_error` and its
//! `tcp_valid_flags` table in `nf_conntrack_proto_tcp.c`).
//!
//! - [`check_header`], for every UDP/TCP packet the programs translate: a UDP length
//!   that covers the header and fits the IP payload; a TCP flag combination a TCP
//!   stack sends. A field already parsed and one 2-byte read.
//! - [`l4_checksum_ok`], for a packet that would create a mapping: the full UDP/TCP
//!   checksum. Too costly for every packet, so packets of existing mappings are not
//!   verified: their checksum is updated incrementally and stays as wrong as it
//!   came, for the receiver to drop.
//! - [`has_ip_options`]: IP options are not validated here; the fast path leaves
//!   packets with options to the kernel, whose `ip_options_compile` drops malformed
//!   ones before `tc_wan_egress` sees them.

use crate::{
    csum,
    packet::{l4, sum_range, Fragment, Ipv4Packet, L4Kind, PacketBuf, IPV4_MIN_HLEN, NO_CSUM},
    Counter, IPPROTO_TCP, IPPROTO_UDP,
};

/// TCP flag bits of the flags byte (RFC 9293, RFC 3168).
pub mod tcp_flag {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// The flag combinations conntrack's `tcp_valid_flags` accepts, once PSH, ECE and
/// CWR (valid with anything) are masked off: bit `n` set when combination `n` is
/// valid. Everything else — no flags at all, SYN with FIN or RST, FIN without ACK,
/// FIN with RST, URG alone — no TCP stack sends; scanners and attacks do.
const VALID_TCP_FLAGS: u64 = {
    use tcp_flag::{ACK, FIN, RST, SYN, URG};
    let valid = [
        SYN,
        SYN | URG,
        SYN | ACK,
        RST,
        RST | ACK,
        FIN | ACK,
        FIN | ACK | URG,
        ACK,
        ACK | URG,
    ];
    let mut bits = 0u64;
    let mut i = 0;
    while i < valid.len() {
        bits |= 1 << valid[i];
        i += 1;
    }
    bits
};

/// Whether a TCP flags byte is a combination a TCP stack sends (conntrack's
/// `tcp_valid_flags`). A shift and a mask, no table for the verifier to bound.
#[inline(always)]
#[must_use]
pub const fn tcp_flags_valid(flags: u8) -> bool {
    use tcp_flag::{CWR, ECE, PSH};
    let index = flags & !(PSH | ECE | CWR);
    (VALID_TCP_FLAGS >> index) & 1 != 0
}

/// The header checks of a UDP/TCP packet (`pkt.kind` is [`L4Kind::Ports`]; others
/// pass): `Err(DropUdpLength)` for a UDP length below 8 or beyond the IP payload
/// (of an unfragmented datagram: a first fragment's covers the later fragments
/// too), `Err(DropTcpFlags)` for an invalid flag combination. A packet that fails
/// them must not create, refresh or advance any state.
#[inline(always)]
pub fn check_header<B: PacketBuf + ?Sized>(buf: &B, pkt: &Ipv4Packet) -> Result<(), Counter> {
    if pkt.kind != L4Kind::Ports {
        return Ok(());
    }
    if pkt.proto == IPPROTO_UDP {
        let len = udp_length(buf, pkt).ok_or(Counter::DropUdpLength)?;
        if len < l4::UDP_HLEN || (pkt.frag == Fragment::None && len > pkt.l4_len()) {
            return Err(Counter::DropUdpLength);
        }
    } else if pkt.proto == IPPROTO_TCP && !tcp_flags_valid(pkt.tcp_flags) {
        return Err(Counter::DropTcpFlags);
    }
    Ok(())
}

/// The UDP length field of `pkt`.
#[inline(always)]
fn udp_length<B: PacketBuf + ?Sized>(buf: &B, pkt: &Ipv4Packet) -> Option<usize> {
    buf.load::<2>(pkt.l4 + l4::UDP_LEN)
        .map(|b| usize::from(u16::from_be_bytes(b)))
}

/// Whether the UDP/TCP checksum of `pkt` is right, checked as the receiving host
/// checks it: with the pseudo-header, over the UDP length (RFC 768; trailing bytes
/// after it are not covered) or over the whole TCP segment. Call it after
/// [`check_header`], and not on a partial (offloaded) checksum, which holds only the
/// pseudo-header sum (`packet::l4_checksum_is_partial`).
///
/// `true` when there is nothing this can verify: other packets, UDP sent without a
/// checksum (RFC 768 allows it), fragments (the checksum covers the whole
/// datagram), and segments longer than [`MAX_FULL_CSUM_LEN`](crate::packet::MAX_FULL_CSUM_LEN),
/// beyond the bounded loop (jumbo frames only).
#[inline(always)]
pub fn l4_checksum_ok<B: PacketBuf + ?Sized>(buf: &B, pkt: &Ipv4Packet) -> bool {
    use crate::packet::MAX_FULL_CSUM_LEN;
    if pkt.kind != L4Kind::Ports || pkt.frag != Fragment::None || pkt.l4_csum_off == NO_CSUM {
        return true;
    }
    let len = if pkt.proto == IPPROTO_UDP {
        match udp_length(buf, pkt) {
            Some(len) => len,
            None => return false,
        }
    } else {
        pkt.l4_len()
    };
    if len > MAX_FULL_CSUM_LEN {
        return true;
    }
    let Some(sum) = sum_range::<B, MAX_FULL_CSUM_LEN>(buf, pkt.l4, len) else {
        return false;
    };
    // The sum over the pseudo-header and the segment, its checksum field included,
    // is all ones (negative zero) when the checksum is right.
    csum::fold(csum::pseudo_header_sum(pkt.src, pkt.dst, pkt.proto, len as u16) + sum) == 0xffff
}

/// [`l4_checksum_ok`] as a verdict for a packet about to create a mapping:
/// `Err(DropBadChecksum)` when its checksum is wrong. A `partial` checksum (see
/// `packet::l4_checksum_is_partial`; the caller knows whether the interface's frames
/// may carry one) has nothing to verify yet and passes.
#[inline(always)]
pub fn check_checksum<B: PacketBuf + ?Sized>(
    buf: &B,
    pkt: &Ipv4Packet,
    partial: bool,
) -> Result<(), Counter> {
    if partial || l4_checksum_ok(buf, pkt) {
        Ok(())
    } else {
        Err(Counter::DropBadChecksum)
    }
}

/// Whether `pkt`'s IP header carries options (IHL above 5).
#[inline(always)]
#[must_use]
pub const fn has_ip_options(pkt: &Ipv4Packet) -> bool {
    pkt.l4 - pkt.l3 > IPV4_MIN_HLEN
}

#[cfg(test)]
mod tests {
    use super::{tcp_flag::*, *};
    use crate::{
        csum::{checksum, pseudo_header_sum, udp_nonzero},
        packet::{parse_ipv4, ETH_P_IP},
    };

    #[test]
    fn tcp_flag_combinations_are_those_conntrack_accepts() {
        for ok in [
            SYN,
            SYN | ACK,
            SYN | ECE | CWR,
            SYN | ACK | ECE,
            ACK,
            ACK | PSH,
            FIN | ACK,
            FIN | ACK | PSH,
            RST,
            RST | ACK,
            ACK | URG,
            SYN | URG,
            FIN | ACK | URG,
        ] {
            assert!(tcp_flags_valid(ok), "{ok:#04x} is valid");
        }
        for bad in [
            0,
            PSH,
            FIN,
            URG,
            FIN | PSH | URG, // Christmas tree
            SYN | FIN,
            SYN | FIN | ACK,
            SYN | RST,
            SYN | RST | ACK,
            FIN | RST,
            FIN | RST | ACK,
            SYN | FIN | RST | PSH | ACK | URG,
            ECE | CWR,
        ] {
            assert!(!tcp_flags_valid(bad), "{bad:#04x} is invalid");
        }
        // Exactly nine of the 64 combinations of FIN, SYN, RST, ACK, URG (plus PSH
        // either way) pass, as in conntrack's table.
        let valid = (0..=0x3fu8)
            .filter(|f| f & PSH == 0 && tcp_flags_valid(*f))
            .count();
        assert_eq!(valid, 9);
    }

    /// Ethernet/IPv4 with `l4` as the payload of protocol `proto`, from 10.0.1.2 to
    /// 198.51.100.2.
    fn frame(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        f[14 + 6] = 0x40; // DF
        f[14 + 8] = 64;
        f[14 + 9] = proto;
        f[14 + 12..14 + 16].copy_from_slice(&SRC);
        f[14 + 16..14 + 20].copy_from_slice(&DST);
        let c = checksum(&f[14..34], 0);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(l4);
        f
    }

    const SRC: [u8; 4] = [10, 0, 1, 2];
    const DST: [u8; 4] = [198, 51, 100, 2];

    /// A UDP datagram with a right checksum over `udp_len` bytes (the field says
    /// `udp_len`), and `extra` trailing bytes after it.
    fn udp(payload: &[u8], extra: usize) -> Vec<u8> {
        let len = 8 + payload.len();
        let mut d = vec![0u8; len];
        d[0..2].copy_from_slice(&40000u16.to_be_bytes());
        d[2..4].copy_from_slice(&7u16.to_be_bytes());
        d[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        d[8..].copy_from_slice(payload);
        let c = checksum(&d, pseudo_header_sum(SRC, DST, IPPROTO_UDP, len as u16));
        d[6..8].copy_from_slice(&udp_nonzero(c).to_be_bytes());
        d.extend(std::iter::repeat_n(0xaa, extra));
        d
    }

    /// A TCP segment with `flags` and a right checksum.
    fn tcp(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0u8; 20];
        s[0..2].copy_from_slice(&40000u16.to_be_bytes());
        s[2..4].copy_from_slice(&80u16.to_be_bytes());
        s[12] = 5 << 4;
        s[13] = flags;
        s.extend_from_slice(payload);
        let c = checksum(&s, pseudo_header_sum(SRC, DST, IPPROTO_TCP, s.len() as u16));
        s[16..18].copy_from_slice(&c.to_be_bytes());
        s
    }

    fn verdicts(f: &[u8]) -> (Result<(), Counter>, bool) {
        let pkt = parse_ipv4(f, 14).expect("parses");
        (check_header(f, &pkt), l4_checksum_ok(f, &pkt))
    }

    fn set_udp_len(f: &mut [u8], len: u16) {
        f[34 + 4..34 + 6].copy_from_slice(&len.to_be_bytes());
    }

    #[test]
    fn udp_length_must_cover_the_header_and_fit_the_payload() {
        let good = frame(IPPROTO_UDP, &udp(b"hello", 0));
        assert_eq!(verdicts(&good), (Ok(()), true));
        for bad_len in [0u16, 1, 7, 14, 200] {
            let mut f = good.clone();
            set_udp_len(&mut f, bad_len);
            assert_eq!(
                verdicts(&f).0,
                Err(Counter::DropUdpLength),
                "length {bad_len}"
            );
        }
        // Shorter than the payload is allowed (the rest is not UDP's), and the
        // checksum covers the UDP length only.
        let padded = frame(IPPROTO_UDP, &udp(b"hello", 6));
        assert_eq!(verdicts(&padded), (Ok(()), true));
    }

    #[test]
    fn a_first_fragment_may_announce_a_longer_datagram() {
        let mut f = frame(IPPROTO_UDP, &udp(b"first part", 0));
        f[14 + 6] = 0x20; // MF
        set_udp_len(&mut f, 3000);
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        assert_eq!(pkt.frag, Fragment::First);
        assert_eq!(check_header(&f[..], &pkt), Ok(()));
        assert!(
            l4_checksum_ok(&f[..], &pkt),
            "not verifiable, so not refused"
        );
        set_udp_len(&mut f, 0);
        assert_eq!(check_header(&f[..], &pkt), Err(Counter::DropUdpLength));
    }

    #[test]
    fn wrong_checksums_are_found() {
        for good in [
            frame(IPPROTO_UDP, &udp(b"odd-length", 0)),
            frame(IPPROTO_UDP, &udp(&[0x5a; 1400], 0)),
            frame(IPPROTO_TCP, &tcp(SYN, b"")),
            frame(IPPROTO_TCP, &tcp(ACK | PSH, b"data, odd")),
        ] {
            assert_eq!(verdicts(&good), (Ok(()), true));
            for at in [34 + 1, good.len() - 1] {
                let mut bad = good.clone();
                bad[at] ^= 0x10;
                assert!(!verdicts(&bad).1, "flipped byte {at} of {}", good.len());
            }
        }
    }

    #[test]
    fn udp_without_checksum_is_not_refused() {
        let mut f = frame(IPPROTO_UDP, &udp(b"no checksum", 0));
        f[34 + 6] = 0;
        f[34 + 7] = 0;
        assert_eq!(verdicts(&f), (Ok(()), true));
    }

    #[test]
    fn invalid_tcp_flags_are_refused_whatever_the_checksum() {
        for flags in [0, SYN | FIN, SYN | RST] {
            let f = frame(IPPROTO_TCP, &tcp(flags, b""));
            assert_eq!(verdicts(&f), (Err(Counter::DropTcpFlags), true));
        }
    }

    #[test]
    fn ip_options_are_seen() {
        let f = frame(IPPROTO_UDP, &udp(b"x", 0));
        assert!(!has_ip_options(&parse_ipv4(&f[..], 14).unwrap()));
        let mut with = f[..34].to_vec();
        with[14] = 0x46;
        with[16..18].copy_from_slice(&((24 + 9) as u16).to_be_bytes());
        with.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        with.extend_from_slice(&f[34..]);
        assert!(has_ip_options(&parse_ipv4(&with[..], 14).unwrap()));
    }
}
