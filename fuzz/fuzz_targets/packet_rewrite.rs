//! Fuzzes natgw-common's in-place rewrites of a parsed frame, each as the data path
//! uses it: `Rewrite::new` + `apply_incremental` (UDP/TCP ports, ICMP query
//! identifiers), the XDP fast path's sequence (rewrite, complete a partial checksum
//! with `recompute_l4_checksum`, `decrement_ttl`), `recompute_l4_checksum` alone,
//! `rewrite_address` (later fragments), `rewrite_ip_id` and `decrement_ttl`. Before
//! rewriting, the target makes the frame's checksums right, partial or absent as the
//! params ask (`natgw_fuzz::input`), so valid frames are the common case. For each:
//!
//! - no panic, and a packet the parser accepted is always rewritable (`Some`);
//! - every write lies inside the datagram, in the fields the operation owns;
//! - the IP header and L4 checksums are kept: their one's-complement sums are the
//!   same after as before (by this crate's oracle), so a checksum that verified
//!   still verifies and a corrupt one stays corrupt; UDP sent without a checksum
//!   stays without; a completed partial checksum verifies;
//! - the packet parses again to the same packet with the new address/port/ID/TTL;
//! - the inverse rewrite restores the frame byte for byte, except that a checksum
//!   field may come back holding the other one's-complement zero: an IP header or
//!   TCP checksum 0xffff as 0x0000 (RFC 1624 eqn. 3), an ICMP checksum 0x0000 as
//!   0xffff (natgw never stores an updated ICMP checksum as 0x0000, see
//!   `natgw_common::csum::icmp_nonzero`); a UDP checksum always comes back exactly
//!   (`natgw_fuzz::checks::Zero`).

#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use natgw_common::packet::{
    apply_incremental, decrement_ttl, ipv4_offset, l4_checksum_is_partial, parse_ipv4,
    recompute_l4_checksum, rewrite_address, rewrite_ip_id, Fragment, Ipv4Packet, Rewrite, Side,
    MAX_FULL_CSUM_LEN,
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
    translate(&frame, &pkt, &p);
    fast_path(&frame, &pkt, &p);
    recompute(&frame, &pkt);
    address(&frame, &pkt, &p);
    ip_id(&frame, &pkt, &p);
    ttl(&frame, &pkt);
});

/// The IP header's and the L4 checksum's sums in `f`, read afresh (the addresses in
/// the pseudo-header included).
struct Sums {
    ip: u64,
    l4: Option<u64>,
}

fn sums(f: &[u8], pkt: &Ipv4Packet) -> Sums {
    let h = Ipv4Header::datagram_at(f, pkt.l3).expect("a parsed datagram");
    Sums {
        ip: word_sum(&f[h.header()]),
        l4: pkt.l4_csum().map(|_| h.l4_sum(f, h.l4(), h.end())),
    }
}

fn assert_kept(before: &[u8], after: &[u8], pkt: &Ipv4Packet, op: &str) {
    let (b, a) = (sums(before, pkt), sums(after, pkt));
    Kept {
        what: "IP header",
        before: b.ip,
        after: a.ip,
    }
    .assert(op);
    if let (Some(before), Some(after)) = (b.l4, a.l4) {
        Kept {
            what: "L4",
            before,
            after,
        }
        .assert(op);
    }
}

fn datagram(pkt: &Ipv4Packet) -> Range<usize> {
    pkt.l3..pkt.l3 + usize::from(pkt.tot_len)
}

fn field(off: usize, n: usize) -> Range<usize> {
    off..off + n
}

/// The checksum fields a rewrite of `pkt` updates, and how they come back.
fn checksum_fields(pkt: &Ipv4Packet) -> Vec<Field> {
    let mut fields = vec![Field {
        off: pkt.l3 + 10,
        zero: Zero::MayLoseNegativeZero,
    }];
    if let Some(off) = pkt.l4_csum() {
        fields.push(Field {
            off,
            zero: Zero::of_l4(pkt.proto),
        });
    }
    fields
}

fn endpoint(pkt: &Ipv4Packet, side: Side) -> ([u8; 4], u16) {
    match side {
        Side::Source => (pkt.src, pkt.sport_be),
        Side::Destination => (pkt.dst, pkt.dport_be),
    }
}

/// `pkt` with `side`'s address and port (both "ports" for an ICMP identifier) set.
fn with_endpoint(pkt: &Ipv4Packet, side: Side, addr: [u8; 4], port_be: u16) -> Ipv4Packet {
    let mut expect = *pkt;
    match side {
        Side::Source => (expect.src, expect.sport_be) = (addr, port_be),
        Side::Destination => (expect.dst, expect.dport_be) = (addr, port_be),
    }
    if pkt.proto == ICMP {
        (expect.sport_be, expect.dport_be) = (port_be, port_be);
    }
    expect
}

/// `Rewrite::new` + `apply_incremental`, then the inverse.
fn translate(f: &[u8], pkt: &Ipv4Packet, p: &Params) {
    if !pkt.has_ports() {
        return; // the data path translates only what has ports or an identifier
    }
    let mut buf = Tracked::new(f);
    let rw = Rewrite::new(pkt, p.side, p.addr, p.port_be);
    apply_incremental(&mut buf, &rw).expect("apply_incremental on a parsed packet");
    buf.assert_writes_within(&[datagram(pkt)], "apply_incremental");
    assert_kept(f, buf.bytes(), pkt, "apply_incremental");
    if pkt.proto == UDP {
        let off = pkt.l4 + 6;
        assert_eq!(
            f[off..off + 2] == [0, 0],
            buf.bytes()[off..off + 2] == [0, 0],
            "UDP's no-checksum zero gained or lost"
        );
    }
    let after = parse_ipv4(buf.bytes(), pkt.l3).expect("a rewritten packet parses");
    assert_eq!(after, with_endpoint(pkt, p.side, p.addr, p.port_be));

    let (old_addr, old_port) = endpoint(pkt, p.side);
    let mut back = Tracked::new(buf.bytes());
    apply_incremental(&mut back, &Rewrite::new(&after, p.side, old_addr, old_port))
        .expect("apply_incremental back");
    assert_restored(f, back.bytes(), &checksum_fields(pkt), "apply_incremental");
}

/// The XDP fast path's last step (`natgw-ebpf/src/fastpath.rs`, `forward`), on what
/// `next_hop` lets through: unfragmented, TTL above 1.
fn fast_path(f: &[u8], pkt: &Ipv4Packet, p: &Params) {
    if !pkt.has_ports() || pkt.frag != Fragment::None || pkt.ttl <= 1 {
        return;
    }
    let partial = l4_checksum_is_partial(f, pkt);
    if partial && pkt.l4_len() > MAX_FULL_CSUM_LEN {
        return; // next_hop leaves it to the kernel's path
    }
    let mut buf = Tracked::new(f);
    let rw = Rewrite::new(pkt, p.side, p.addr, p.port_be);
    apply_incremental(&mut buf, &rw).expect("apply_incremental");
    if partial {
        recompute_l4_checksum(&mut buf, pkt).expect("completing a partial checksum");
    }
    decrement_ttl(&mut buf, pkt).expect("decrement_ttl");
    buf.assert_writes_within(&[datagram(pkt)], "fast path");
    let (b, a) = (sums(f, pkt), sums(buf.bytes(), pkt));
    Kept {
        what: "IP header",
        before: b.ip,
        after: a.ip,
    }
    .assert("fast path");
    if let (Some(before), Some(after)) = (b.l4, a.l4) {
        if partial {
            assert!(verifies(after), "fast path: a completed checksum fails");
        } else {
            Kept {
                what: "L4",
                before,
                after,
            }
            .assert("fast path");
        }
    }
    let mut expect = with_endpoint(pkt, p.side, p.addr, p.port_be);
    expect.ttl -= 1;
    assert_eq!(parse_ipv4(buf.bytes(), pkt.l3), Ok(expect));
}

/// `recompute_l4_checksum` alone: only for what it is for, and then right.
fn recompute(f: &[u8], pkt: &Ipv4Packet) {
    let mut buf = Tracked::new(f);
    let got = recompute_l4_checksum(&mut buf, pkt);
    let applies = pkt.l4_csum().is_some()
        && pkt.pseudo_header()
        && pkt.frag == Fragment::None
        && pkt.l4_len() <= MAX_FULL_CSUM_LEN;
    assert_eq!(got.is_some(), applies, "recompute_l4_checksum of {pkt:?}");
    let Some(off) = pkt.l4_csum().filter(|_| applies) else {
        assert_eq!(buf.bytes(), f, "a refused recompute wrote");
        return;
    };
    buf.assert_writes_within(&[field(off, 2)], "recompute_l4_checksum");
    let after = sums(buf.bytes(), pkt).l4.expect("a checksum");
    assert!(verifies(after), "recompute_l4_checksum: the result fails");
    if sums(f, pkt).l4.is_some_and(verifies) {
        // A right checksum is recomputed to itself (but for negative zero).
        assert_restored(
            f,
            buf.bytes(),
            &checksum_fields(pkt),
            "recompute_l4_checksum",
        );
    }
}

/// `rewrite_address` (the IP header alone), then the inverse.
fn address(f: &[u8], pkt: &Ipv4Packet, p: &Params) {
    let mut buf = Tracked::new(f);
    rewrite_address(&mut buf, pkt, p.side, p.addr).expect("rewrite_address");
    let addr_off = match p.side {
        Side::Source => pkt.l3 + 12,
        Side::Destination => pkt.l3 + 16,
    };
    buf.assert_writes_within(
        &[field(pkt.l3 + 10, 2), field(addr_off, 4)],
        "rewrite_address",
    );
    let (b, a) = (sums(f, pkt), sums(buf.bytes(), pkt));
    Kept {
        what: "IP header",
        before: b.ip,
        after: a.ip,
    }
    .assert("rewrite_address");
    let after = Ipv4Header::datagram_at(buf.bytes(), pkt.l3).expect("still a datagram");
    let old = match p.side {
        Side::Source => {
            assert_eq!(after.src, p.addr);
            pkt.src
        }
        Side::Destination => {
            assert_eq!(after.dst, p.addr);
            pkt.dst
        }
    };
    let reparsed = parse_ipv4(buf.bytes(), pkt.l3).expect("a rewritten packet parses");
    let mut back = Tracked::new(buf.bytes());
    rewrite_address(&mut back, &reparsed, p.side, old).expect("rewrite_address back");
    let ip_only = [Field {
        off: pkt.l3 + 10,
        zero: Zero::MayLoseNegativeZero,
    }];
    assert_restored(f, back.bytes(), &ip_only, "rewrite_address");
}

/// `rewrite_ip_id`, then the inverse.
fn ip_id(f: &[u8], pkt: &Ipv4Packet, p: &Params) {
    let mut buf = Tracked::new(f);
    rewrite_ip_id(&mut buf, pkt, p.id_be).expect("rewrite_ip_id");
    buf.assert_writes_within(
        &[field(pkt.l3 + 4, 2), field(pkt.l3 + 10, 2)],
        "rewrite_ip_id",
    );
    let (b, a) = (sums(f, pkt), sums(buf.bytes(), pkt));
    Kept {
        what: "IP header",
        before: b.ip,
        after: a.ip,
    }
    .assert("rewrite_ip_id");
    let mut expect = *pkt;
    expect.ip_id_be = p.id_be;
    let after = parse_ipv4(buf.bytes(), pkt.l3);
    assert_eq!(after, Ok(expect));
    let mut back = Tracked::new(buf.bytes());
    rewrite_ip_id(&mut back, &expect, pkt.ip_id_be).expect("rewrite_ip_id back");
    let ip_only = [Field {
        off: pkt.l3 + 10,
        zero: Zero::MayLoseNegativeZero,
    }];
    assert_restored(f, back.bytes(), &ip_only, "rewrite_ip_id");
}

/// `decrement_ttl`: the TTL one less and the header checksum kept; a TTL of 0 has
/// nothing to decrement and is refused, untouched.
fn ttl(f: &[u8], pkt: &Ipv4Packet) {
    let mut buf = Tracked::new(f);
    let got = decrement_ttl(&mut buf, pkt);
    if pkt.ttl == 0 {
        assert_eq!(got, None, "decrement_ttl of TTL 0");
        assert_eq!(buf.bytes(), f, "a refused decrement wrote");
        return;
    }
    got.expect("decrement_ttl");
    buf.assert_writes_within(
        &[field(pkt.l3 + 8, 1), field(pkt.l3 + 10, 2)],
        "decrement_ttl",
    );
    assert_eq!(buf.bytes()[pkt.l3 + 8], pkt.ttl - 1);
    let (b, a) = (sums(f, pkt), sums(buf.bytes(), pkt));
    Kept {
        what: "IP header",
        before: b.ip,
        after: a.ip,
    }
    .assert("decrement_ttl");
}
