//! Fuzzes natgw-common's translation of ICMP errors (`parse_icmp_error` +
//! `rewrite_icmp_error`, RFC 5508 REQ-3/4): one endpoint of the embedded packet
//! rewritten, and optionally one outer address, as `tc_wan` and `tc_lan` do. Before
//! parsing, the target makes the embedded IP header, outer IP header and ICMP
//! checksums right as the params ask (`natgw_fuzz::input`). For every error that
//! parses:
//!
//! - no panic, and the rewrite succeeds (`Some`);
//! - every write lies inside the datagram: the outer header and the ICMP message;
//! - the ICMP checksum and the embedded IP header checksum still verify (by this
//!   crate's oracle); the embedded L4 checksum (over the bytes the error holds, with
//!   its pseudo-header) and the outer header checksum keep their one's-complement
//!   sums; an embedded UDP checksum of zero stays zero;
//! - the error parses again, with the new endpoint and nothing else changed;
//! - the inverse rewrite restores the frame byte for byte, except that a checksum
//!   field may come back holding the other one's-complement zero (IP headers and
//!   TCP 0xffff as 0x0000, ICMP 0x0000 as 0xffff; UDP exactly:
//!   `natgw_fuzz::checks::Zero`).

#![no_main]

use std::slice;

use libfuzzer_sys::fuzz_target;
use natgw_common::packet::{
    ipv4_offset, parse_icmp_error, parse_ipv4, rewrite_icmp_error, Embedded, Ipv4Packet, L4Kind,
    Side, NO_CSUM,
};
use natgw_fuzz::checks::{assert_restored, Field, Kept, Zero};
use natgw_fuzz::input::{fix_checksums, Ipv4Header, Params, ICMP, UDP};
use natgw_fuzz::oracle::{verifies, word_sum};
use natgw_fuzz::tracked::Tracked;

fuzz_target!(|data: &[u8]| {
    let Some((p, frame)) = Params::split(data) else {
        return;
    };
    let mut frame = frame.to_vec();
    fix_checksums(&mut frame, &p);
    let Ok(Some(l3)) = ipv4_offset(&frame[..]) else {
        return;
    };
    let Ok(pkt) = parse_ipv4(&frame[..], l3) else {
        return;
    };
    if pkt.kind != L4Kind::IcmpError {
        return;
    }
    let Ok(emb) = parse_icmp_error(&frame[..], &pkt) else {
        return;
    };
    translate(&frame, &pkt, &emb, &p);
});

/// The sums of every checksum a translation of the error touches.
struct Sums {
    outer_ip: u64,
    icmp: u64,
    embedded_ip: u64,
    embedded_l4: Option<u64>,
}

fn sums(f: &[u8], pkt: &Ipv4Packet, emb: &Embedded) -> Sums {
    let end = pkt.l3 + usize::from(pkt.tot_len);
    let outer = Ipv4Header::datagram_at(f, pkt.l3).expect("a parsed datagram");
    let inner = Ipv4Header::at(f, emb.l3, end).expect("a parsed embedded header");
    Sums {
        outer_ip: word_sum(&f[outer.header()]),
        icmp: word_sum(&f[pkt.l4..end]),
        embedded_ip: word_sum(&f[inner.header()]),
        embedded_l4: (emb.l4_csum_off != NO_CSUM).then(|| inner.l4_sum(f, emb.l4, end)),
    }
}

fn endpoint(emb: &Embedded, side: Side) -> ([u8; 4], u16) {
    match side {
        Side::Source => (emb.src, emb.sport_be),
        Side::Destination => (emb.dst, emb.dport_be),
    }
}

fn outer_addr(pkt: &Ipv4Packet, side: Side) -> [u8; 4] {
    match side {
        Side::Source => pkt.src,
        Side::Destination => pkt.dst,
    }
}

fn translate(f: &[u8], pkt: &Ipv4Packet, emb: &Embedded, p: &Params) {
    let end = pkt.l3 + usize::from(pkt.tot_len);
    let outer = p.outer.map(|side| (side, p.outer_addr));
    let mut buf = Tracked::new(f);
    rewrite_icmp_error(&mut buf, pkt, emb, p.side, p.addr, p.port_be, outer)
        .expect("rewrite_icmp_error of a parsed error");
    let (datagram, message) = (pkt.l3..end, pkt.l4..end);
    buf.assert_writes_within(slice::from_ref(&datagram), "rewrite_icmp_error");
    if outer.is_none() {
        buf.assert_writes_within(
            slice::from_ref(&message),
            "rewrite_icmp_error without outer",
        );
    }

    let (b, a) = (sums(f, pkt, emb), sums(buf.bytes(), pkt, emb));
    let op = "rewrite_icmp_error";
    for (what, before, after) in [
        ("outer IP header", b.outer_ip, a.outer_ip),
        ("ICMP", b.icmp, a.icmp),
        ("embedded IP header", b.embedded_ip, a.embedded_ip),
    ] {
        Kept {
            what,
            before,
            after,
        }
        .assert(op);
    }
    // parse_icmp_error checked both; they must still verify.
    assert!(verifies(a.icmp) && verifies(a.embedded_ip));
    if let (Some(before), Some(after)) = (b.embedded_l4, a.embedded_l4) {
        Kept {
            what: "embedded L4",
            before,
            after,
        }
        .assert(op);
    }
    if emb.proto == UDP && emb.l4_csum_off == NO_CSUM {
        assert_eq!(
            buf.bytes()[emb.l4 + 6..emb.l4 + 8],
            [0, 0],
            "{op}: UDP zero"
        );
    }

    let mut expect_pkt = *pkt;
    if let Some((side, addr)) = outer {
        match side {
            Side::Source => expect_pkt.src = addr,
            Side::Destination => expect_pkt.dst = addr,
        }
    }
    let after_pkt = parse_ipv4(buf.bytes(), pkt.l3).expect("a translated error parses");
    assert_eq!(after_pkt, expect_pkt);
    let after_emb = parse_icmp_error(buf.bytes(), &after_pkt).expect("its embedded packet too");
    let mut expect_emb = *emb;
    match p.side {
        Side::Source => (expect_emb.src, expect_emb.sport_be) = (p.addr, p.port_be),
        Side::Destination => (expect_emb.dst, expect_emb.dport_be) = (p.addr, p.port_be),
    }
    if emb.proto == ICMP {
        (expect_emb.sport_be, expect_emb.dport_be) = (p.port_be, p.port_be);
    }
    assert_eq!(after_emb, expect_emb);

    let (old_addr, old_port) = endpoint(emb, p.side);
    let undo_outer = outer.map(|(side, _)| (side, outer_addr(pkt, side)));
    let mut back = Tracked::new(buf.bytes());
    rewrite_icmp_error(
        &mut back, &after_pkt, &after_emb, p.side, old_addr, old_port, undo_outer,
    )
    .expect("rewrite_icmp_error back");
    let may_lose = |off| Field {
        off,
        zero: Zero::MayLoseNegativeZero,
    };
    let mut fields = vec![
        may_lose(pkt.l3 + 10),
        may_lose(emb.l3 + 10),
        Field {
            off: pkt.l4 + 2,
            zero: Zero::of_l4(ICMP),
        },
    ];
    if emb.l4_csum_off != NO_CSUM {
        fields.push(Field {
            off: emb.l4_csum_off,
            zero: Zero::of_l4(emb.proto),
        });
    }
    assert_restored(f, back.bytes(), &fields, op);
}
