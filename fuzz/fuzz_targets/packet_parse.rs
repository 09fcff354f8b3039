//! Fuzzes natgw-common's frame parsing (`natgw_common::packet::{ipv4_offset,
//! parse_ipv4, parse_icmp_error, l4_checksum_is_partial}`) and the byte-slice
//! `PacketBuf` it runs on in the unit tests:
//!
//! - no input panics;
//! - the slice buffer's `load`/`store` succeed exactly when every byte is inside the
//!   frame, and move exactly those bytes;
//! - `parse_ipv4` gives exactly what an independent reading of RFC 791/768/793/792
//!   gives (the reference below): the same error, or the same packet, field for
//!   field; every offset it returns lies inside the datagram (`l3..l3 + tot_len`),
//!   and it reads nothing outside the datagram — bytes after the total length are
//!   link-layer padding no checksum covers;
//! - `parse_icmp_error` likewise, against the reference: the ICMP and embedded IP
//!   checksums verify (by this crate's oracle), the embedded header and the first 8
//!   bytes after it lie inside the ICMP message, and nothing outside it is read;
//! - `l4_checksum_is_partial` holds exactly for an unfragmented UDP/TCP packet whose
//!   checksum field is the folded pseudo-header sum.
//!
//! Input: `[params][frame]` (`natgw_fuzz::input`); the frame is parsed at offset 14
//! when its EtherType says IPv4, and at the offset the params name.

#![no_main]

use libfuzzer_sys::fuzz_target;
use natgw_common::packet::{
    ipv4_offset, l4_checksum_is_partial, parse_icmp_error, parse_ipv4, Embedded, Fragment,
    Ipv4Packet, L4Kind, PacketBuf, PacketBufMut, ParseError, NO_CSUM,
};
use natgw_fuzz::input::{Ipv4Header, Params, ICMP, L3, TCP, UDP};
use natgw_fuzz::oracle::{folded, pseudo_sum, verifies, word_sum};
use natgw_fuzz::tracked::Tracked;

fuzz_target!(|data: &[u8]| {
    let Some((p, frame)) = Params::split(data) else {
        return;
    };
    slice_buffer_bounds(frame, p.probe);
    let offset = ipv4_offset(frame);
    if frame.len() < 14 {
        assert_eq!(offset, Err(ParseError::Truncated));
    } else {
        let ipv4 = frame[12..14] == [0x08, 0x00];
        assert_eq!(offset, Ok(ipv4.then_some(L3)));
    }
    if let Ok(Some(l3)) = offset {
        parse(frame, l3);
    }
    parse(frame, p.l3);
});

/// The slice `PacketBuf`: all or nothing, and exactly the bytes asked for.
fn slice_buffer_bounds(frame: &[u8], probe: usize) {
    let len = frame.len();
    for off in [probe, len.saturating_sub(probe % 64), len, usize::MAX - 1] {
        probe_at::<1>(frame, off);
        probe_at::<2>(frame, off);
        probe_at::<4>(frame, off);
        probe_at::<20>(frame, off);
    }
}

fn probe_at<const N: usize>(frame: &[u8], off: usize) {
    let inside = off.checked_add(N).filter(|end| *end <= frame.len());
    let got = frame.load::<N>(off);
    let mut copy = frame.to_vec();
    let stored = copy[..].store::<N>(off, [0xa5; N]);
    match inside {
        Some(end) => {
            assert_eq!(got.as_ref().map(|b| &b[..]), Some(&frame[off..end]));
            assert_eq!(stored, Some(()));
            assert!(copy[off..end].iter().all(|b| *b == 0xa5));
            assert_eq!(copy[..off], frame[..off]);
            assert_eq!(copy[end..], frame[end..]);
        }
        None => {
            assert_eq!(
                got,
                None,
                "load::<{N}>({off}) of a {}-byte frame",
                frame.len()
            );
            assert_eq!(stored, None, "store::<{N}>({off})");
            assert_eq!(copy, frame, "a failed store wrote");
        }
    }
}

fn parse(frame: &[u8], l3: usize) {
    let buf = Tracked::new(frame);
    let got = parse_ipv4(&buf, l3);
    assert_eq!(got, reference_ipv4(frame, l3), "parse_ipv4 at {l3}");
    let Ok(pkt) = got else {
        return;
    };
    let end = pkt.l3 + usize::from(pkt.tot_len);
    assert!(end <= frame.len(), "datagram {l3}..{end} past the frame");
    assert!(
        pkt.l3 + 20 <= pkt.l4 && pkt.l4 <= end,
        "l4 {} outside",
        pkt.l4
    );
    assert_eq!(pkt.l4_len(), end - pkt.l4);
    if let Some(off) = pkt.l4_csum() {
        assert!(
            pkt.l4 < off && off + 2 <= end,
            "L4 checksum at {off} outside"
        );
    }
    buf.assert_reads_within(&(l3..end), "parse_ipv4");

    let partial = l4_checksum_is_partial(frame, &pkt);
    let expect_partial = pkt.l4_csum().is_some_and(|off| {
        matches!(pkt.proto, UDP | TCP)
            && pkt.frag == Fragment::None
            && frame[off..off + 2]
                == folded(pseudo_sum(pkt.src, pkt.dst, pkt.proto, pkt.l4_len())).to_be_bytes()
    });
    assert_eq!(partial, expect_partial, "l4_checksum_is_partial");

    let buf = Tracked::new(frame);
    let got = parse_icmp_error(&buf, &pkt);
    buf.assert_reads_within(&(pkt.l4..end), "parse_icmp_error");
    if pkt.kind != L4Kind::IcmpError {
        return;
    }
    assert_eq!(got, reference_icmp_error(frame, &pkt), "parse_icmp_error");
    if let Ok(emb) = got {
        assert!(emb.l4 + 8 <= end, "embedded L4 header past the message");
        if emb.l4_csum_off != NO_CSUM {
            assert!(
                emb.l4_csum_off + 2 <= end,
                "embedded checksum past the message"
            );
        }
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// RFC 5508 REQ-10's classification of ICMP types.
fn icmp_class(icmp_type: u8) -> L4Kind {
    match icmp_type {
        8 | 13 | 15 | 17 => L4Kind::IcmpRequest,
        0 | 14 | 16 | 18 => L4Kind::IcmpReply,
        3 | 4 | 5 | 11 | 12 => L4Kind::IcmpError,
        _ => L4Kind::Other,
    }
}

/// What parsing the IPv4 datagram at `l3` must give. `Truncated`: the frame ends
/// before the datagram does. `Invalid`: the datagram is there but inconsistent —
/// including an L4 header (8 bytes of UDP or ICMP, 20 of TCP, or its data offset)
/// that does not fit in an unfragmented datagram or a first fragment.
fn reference_ipv4(f: &[u8], l3: usize) -> Result<Ipv4Packet, ParseError> {
    let Some(h) = l3.checked_add(20).and_then(|end| f.get(l3..end)) else {
        return Err(ParseError::Truncated);
    };
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return Err(ParseError::Invalid);
    }
    let tot_len = be16(&h[2..4]);
    if usize::from(tot_len) < ihl {
        return Err(ParseError::Invalid);
    }
    if l3 + usize::from(tot_len) > f.len() {
        return Err(ParseError::Truncated);
    }
    let frag_word = be16(&h[6..8]);
    let frag_offset = frag_word & 0x1fff;
    let more_fragments = frag_word & 0x2000 != 0;
    let frag = match (frag_offset, more_fragments) {
        (0, false) => Fragment::None,
        (0, true) => Fragment::First,
        _ => Fragment::Later,
    };
    let mut pkt = Ipv4Packet {
        l3,
        l4: l3 + ihl,
        tot_len,
        proto: h[9],
        ttl: h[8],
        src: [h[12], h[13], h[14], h[15]],
        dst: [h[16], h[17], h[18], h[19]],
        frag,
        frag_offset,
        more_fragments,
        dont_fragment: frag_word & 0x4000 != 0,
        kind: L4Kind::Other,
        icmp_type: 0,
        icmp_code: 0,
        sport_be: 0,
        dport_be: 0,
        tcp_flags: 0,
        tcp_seq_be: 0,
        ip_id_be: u16::from_ne_bytes([h[4], h[5]]),
        l4_csum_off: NO_CSUM,
    };
    if frag == Fragment::Later {
        return Ok(pkt);
    }
    let seg = &f[pkt.l4..l3 + usize::from(tot_len)];
    let ports = |pkt: &mut Ipv4Packet| {
        pkt.kind = L4Kind::Ports;
        pkt.sport_be = u16::from_ne_bytes([seg[0], seg[1]]);
        pkt.dport_be = u16::from_ne_bytes([seg[2], seg[3]]);
    };
    match pkt.proto {
        ICMP => {
            if seg.len() < 8 {
                return Err(ParseError::Invalid);
            }
            pkt.icmp_type = seg[0];
            pkt.icmp_code = seg[1];
            pkt.kind = icmp_class(seg[0]);
            if matches!(pkt.kind, L4Kind::IcmpRequest | L4Kind::IcmpReply) {
                pkt.sport_be = u16::from_ne_bytes([seg[4], seg[5]]);
                pkt.dport_be = pkt.sport_be;
            }
            if pkt.kind != L4Kind::Other {
                pkt.l4_csum_off = pkt.l4 + 2;
            }
        }
        UDP => {
            if seg.len() < 8 {
                return Err(ParseError::Invalid);
            }
            ports(&mut pkt);
            if seg[6..8] != [0, 0] {
                pkt.l4_csum_off = pkt.l4 + 6;
            }
        }
        TCP => {
            if seg.len() < 20 {
                return Err(ParseError::Invalid);
            }
            let doff = usize::from(seg[12] >> 4) * 4;
            if doff < 20 || (frag == Fragment::None && seg.len() < doff) {
                return Err(ParseError::Invalid);
            }
            ports(&mut pkt);
            pkt.tcp_flags = seg[13];
            pkt.tcp_seq_be = u32::from_ne_bytes([seg[4], seg[5], seg[6], seg[7]]);
            pkt.l4_csum_off = pkt.l4 + 16;
        }
        _ => {}
    }
    Ok(pkt)
}

/// What parsing the ICMP error `pkt` must give (RFC 5508 REQ-3, RFC 792, RFC 1122):
/// `Invalid` for a wrong ICMP or embedded IP checksum, an embedded later fragment, an
/// error about an ICMP error or about a protocol natgw does not map; `Truncated` when
/// the embedded IP header or the 8 bytes after it do not fit in the message.
fn reference_icmp_error(f: &[u8], pkt: &Ipv4Packet) -> Result<Embedded, ParseError> {
    let end = pkt.l3 + usize::from(pkt.tot_len);
    let msg = &f[pkt.l4..end];
    // natgw sums at most 4096 bytes in a bounded loop (MAX_FULL_CSUM_LEN).
    if msg.len() > 4096 || !verifies(word_sum(msg)) {
        return Err(ParseError::Invalid);
    }
    let l3 = pkt.l4 + 8;
    if l3 + 20 > end {
        return Err(ParseError::Truncated);
    }
    let h = &f[l3..l3 + 20];
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return Err(ParseError::Invalid);
    }
    if l3 + ihl > end {
        return Err(ParseError::Truncated);
    }
    if !verifies(word_sum(&f[l3..l3 + ihl])) || be16(&h[6..8]) & 0x1fff != 0 {
        return Err(ParseError::Invalid);
    }
    let hdr = Ipv4Header::at(f, l3, end).expect("checked above");
    let el4 = hdr.l4();
    if el4 + 8 > end {
        return Err(ParseError::Truncated);
    }
    let l4 = &f[el4..el4 + 8];
    let mut emb = Embedded {
        l3,
        l4: el4,
        proto: hdr.proto,
        src: hdr.src,
        dst: hdr.dst,
        sport_be: u16::from_ne_bytes([l4[0], l4[1]]),
        dport_be: u16::from_ne_bytes([l4[2], l4[3]]),
        l4_csum_off: NO_CSUM,
    };
    match hdr.proto {
        UDP if l4[6..8] != [0, 0] => emb.l4_csum_off = el4 + 6,
        UDP => {}
        TCP if el4 + 18 <= end => emb.l4_csum_off = el4 + 16,
        TCP => {}
        ICMP if matches!(icmp_class(l4[0]), L4Kind::IcmpRequest | L4Kind::IcmpReply) => {
            emb.sport_be = u16::from_ne_bytes([l4[4], l4[5]]);
            emb.dport_be = emb.sport_be;
            emb.l4_csum_off = el4 + 2;
        }
        _ => return Err(ParseError::Invalid),
    }
    Ok(emb)
}
