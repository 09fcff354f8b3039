//! The seeds of the packet targets, built here so a reader sees what each one is:
//! UDP (with and without a checksum, behind IP options, with a partial checksum,
//! padded to Ethernet's minimum), TCP (SYN with options, data), ICMP echo request
//! and reply, ICMP errors embedding UDP, TCP (whole header, and only the 8 bytes RFC
//! 792 promises), an echo request and a datagram with IP options, and the first and
//! a later fragment of a UDP datagram. `fuzz/seeds/<target>/` holds them as files;
//! the test below checks they are current (`NATGW_FUZZ_WRITE_SEEDS=1` rewrites them).

use natgw_common::packet::Side;

use crate::input::{fix_ip_checksum, fix_l4_checksum, L4Fix, Params, ICMP, L3, TCP, UDP};

const LAN_HOST: [u8; 4] = [10, 0, 1, 2];
const EXTERNAL: [u8; 4] = [192, 0, 2, 1];
const WAN_HOST: [u8; 4] = [198, 51, 100, 2];
const ROUTER: [u8; 4] = [203, 0, 113, 1];

/// An IPv4 datagram: header (with `options`, NOP-padded to a multiple of 4) and
/// `payload`, header checksum right, L4 checksum as `l4`.
fn datagram(
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    options: &[u8],
    frag_word: u16,
    payload: &[u8],
    l4: L4Fix,
) -> Vec<u8> {
    let ihl = 20 + options.len().next_multiple_of(4);
    let tot = ihl + payload.len();
    let mut d = vec![0u8; 20];
    d[0] = 0x40 | u8::try_from(ihl / 4).expect("IHL fits");
    d[2..4].copy_from_slice(&u16::try_from(tot).expect("fits").to_be_bytes());
    d[4..6].copy_from_slice(&0x1c46u16.to_be_bytes());
    d[6..8].copy_from_slice(&frag_word.to_be_bytes());
    d[8] = 64;
    d[9] = proto;
    d[12..16].copy_from_slice(&src);
    d[16..20].copy_from_slice(&dst);
    d.extend_from_slice(options);
    d.resize(ihl, 1); // NOP
    d.extend_from_slice(payload);
    fix_l4_checksum(&mut d, 0, l4);
    fix_ip_checksum(&mut d, 0, ihl);
    d
}

/// The datagram in an untagged Ethernet frame, padded to `min_len` bytes.
fn frame(datagram: &[u8], min_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; L3];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(datagram);
    if f.len() < min_len {
        f.resize(min_len, 0);
    }
    f
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    let len = u16::try_from(8 + payload.len()).expect("fits");
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn tcp(sport: u16, dport: u16, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let doff = 20 + options.len();
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.push(u8::try_from(doff / 4).expect("fits") << 4);
    t.push(flags);
    t.extend_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(options);
    t.extend_from_slice(payload);
    t
}

fn icmp(icmp_type: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![icmp_type, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    m
}

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
const DEST_UNREACH: u8 = 3;
const TIME_EXCEEDED: u8 = 11;
const SYN: u8 = 0x02;
const ACK_PSH: u8 = 0x18;
const MF: u16 = 0x2000;
const DF: u16 = 0x4000;
/// An IP option (Record Route, room for one address).
const RECORD_ROUTE: [u8; 7] = [7, 7, 4, 0, 0, 0, 0];

/// The packet seeds: name and frame.
#[must_use]
pub fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let complete = L4Fix::Complete;
    let outbound_udp = udp(40000, 7, b"hello, natgw");
    let sent_udp = datagram(
        UDP,
        EXTERNAL,
        WAN_HOST,
        &[],
        DF,
        &udp(40002, 7, b"payload!"),
        complete,
    );
    let sent_tcp = datagram(
        TCP,
        EXTERNAL,
        WAN_HOST,
        &[],
        DF,
        &tcp(40002, 80, SYN, &[], &[]),
        complete,
    );
    let sent_echo = datagram(
        ICMP,
        EXTERNAL,
        WAN_HOST,
        &[],
        0,
        &icmp(ECHO_REQUEST, 0, [0xab, 0xcd, 0, 7], b"ping"),
        complete,
    );
    let sent_with_options = datagram(
        UDP,
        EXTERNAL,
        WAN_HOST,
        &RECORD_ROUTE,
        0,
        &udp(40002, 53, b"q"),
        complete,
    );
    // One UDP datagram, checksum over all of it, cut into two fragments.
    let whole = datagram(
        UDP,
        LAN_HOST,
        WAN_HOST,
        &[],
        0,
        &udp(40000, 9999, &[0x5a; 24]),
        complete,
    );
    let whole_udp = &whole[20..];
    let error = |icmp_type, code, about: &[u8]| {
        datagram(
            ICMP,
            ROUTER,
            EXTERNAL,
            &[],
            0,
            &icmp(icmp_type, code, [0; 4], about),
            complete,
        )
    };
    vec![
        (
            "udp",
            frame(
                &datagram(UDP, LAN_HOST, WAN_HOST, &[], DF, &outbound_udp, complete),
                0,
            ),
        ),
        (
            "udp_no_checksum",
            frame(
                &datagram(
                    UDP,
                    LAN_HOST,
                    WAN_HOST,
                    &[],
                    DF,
                    &outbound_udp,
                    L4Fix::NoUdpChecksum,
                ),
                0,
            ),
        ),
        (
            "udp_partial_checksum",
            frame(
                &datagram(
                    UDP,
                    LAN_HOST,
                    WAN_HOST,
                    &[],
                    DF,
                    &outbound_udp,
                    L4Fix::Partial,
                ),
                0,
            ),
        ),
        (
            "udp_ip_options",
            frame(
                &datagram(
                    UDP,
                    LAN_HOST,
                    WAN_HOST,
                    &RECORD_ROUTE,
                    DF,
                    &outbound_udp,
                    complete,
                ),
                0,
            ),
        ),
        (
            "udp_padded",
            frame(
                &datagram(
                    UDP,
                    WAN_HOST,
                    EXTERNAL,
                    &[],
                    0,
                    &udp(7, 40002, b"x"),
                    complete,
                ),
                60,
            ),
        ),
        (
            "tcp_syn",
            frame(
                &datagram(
                    TCP,
                    LAN_HOST,
                    WAN_HOST,
                    &[],
                    DF,
                    &tcp(40000, 80, SYN, &[2, 4, 5, 0xb4], &[]),
                    complete,
                ),
                0,
            ),
        ),
        (
            "tcp_data",
            frame(
                &datagram(
                    TCP,
                    WAN_HOST,
                    EXTERNAL,
                    &[],
                    DF,
                    &tcp(80, 40002, ACK_PSH, &[], b"HTTP/1.1 200 OK\r\n"),
                    complete,
                ),
                0,
            ),
        ),
        (
            "icmp_echo_request",
            frame(
                &datagram(
                    ICMP,
                    LAN_HOST,
                    WAN_HOST,
                    &[],
                    0,
                    &icmp(ECHO_REQUEST, 0, [0x12, 0x34, 0, 1], b"ping"),
                    complete,
                ),
                0,
            ),
        ),
        (
            "icmp_echo_reply",
            frame(
                &datagram(
                    ICMP,
                    WAN_HOST,
                    EXTERNAL,
                    &[],
                    0,
                    &icmp(ECHO_REPLY, 0, [0xab, 0xcd, 0, 1], b"ping"),
                    complete,
                ),
                60,
            ),
        ),
        (
            "icmp_error_udp",
            frame(&error(DEST_UNREACH, 3, &sent_udp), 0),
        ),
        (
            "icmp_error_tcp",
            frame(&error(TIME_EXCEEDED, 0, &sent_tcp), 0),
        ),
        (
            "icmp_error_tcp_8_bytes",
            frame(&error(DEST_UNREACH, 13, &sent_tcp[..28]), 0),
        ),
        (
            "icmp_error_echo",
            frame(&error(TIME_EXCEEDED, 0, &sent_echo), 0),
        ),
        (
            "icmp_error_ip_options",
            frame(&error(DEST_UNREACH, 3, &sent_with_options), 0),
        ),
        (
            "fragment_first",
            frame(
                &datagram(
                    UDP,
                    LAN_HOST,
                    WAN_HOST,
                    &[],
                    MF,
                    &whole_udp[..16],
                    L4Fix::Keep,
                ),
                0,
            ),
        ),
        (
            "fragment_later",
            frame(
                &datagram(
                    UDP,
                    LAN_HOST,
                    WAN_HOST,
                    &[],
                    2,
                    &whole_udp[16..],
                    L4Fix::Keep,
                ),
                0,
            ),
        ),
    ]
}

/// The parameters every packet seed starts with: rewrite the source to the external
/// endpoint (and the outer destination of an error), fix-ups on.
#[must_use]
pub fn packet_params() -> Vec<u8> {
    let mut p = Params::encode(Side::Source, true, L4Fix::Complete, Some(Side::Destination));
    p[1..5].copy_from_slice(&EXTERNAL);
    p[5..7].copy_from_slice(&40002u16.to_be_bytes());
    p[7..9].copy_from_slice(&0xbeefu16.to_be_bytes());
    p[11..15].copy_from_slice(&LAN_HOST);
    p[15] = u8::try_from(L3).expect("fits");
    p.to_vec()
}

/// The targets the packet seeds serve.
pub const PACKET_TARGETS: [&str; 3] = ["packet_parse", "packet_rewrite", "icmp_error"];

/// Every seed: target, name, bytes.
#[must_use]
pub fn all() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    for target in PACKET_TARGETS {
        for (name, f) in frames() {
            let mut input = packet_params();
            input.extend_from_slice(&f);
            seeds.push((target, name, input));
        }
    }
    // csum: [initial: 4][field offset: 2][new value: 4][data].
    for (name, f) in frames()
        .into_iter()
        .filter(|(n, _)| n.starts_with("udp") || *n == "tcp_syn")
    {
        let mut input = vec![0, 0, 0, 0, 0, 6];
        input.extend_from_slice(&EXTERNAL);
        input.extend_from_slice(&f[L3..]);
        seeds.push(("csum", name, input));
    }
    seeds
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use natgw_common::packet::{parse_icmp_error, parse_ipv4, Fragment, L4Kind};

    use super::*;
    use crate::input::Ipv4Header;
    use crate::oracle::{verifies, word_sum};

    #[test]
    fn seeds_are_what_they_say() {
        for (name, f) in frames() {
            let pkt = parse_ipv4(&f[..], L3).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let h = Ipv4Header::datagram_at(&f, L3).expect("a datagram");
            assert!(verifies(word_sum(&f[h.header()])), "{name}: IP checksum");
            let l4_verifies = verifies(h.l4_sum(&f, h.l4(), h.end()));
            match name {
                "udp_no_checksum" => assert_eq!(pkt.l4_csum(), None),
                "udp_partial_checksum" => assert!(!l4_verifies),
                "fragment_first" => assert_eq!(pkt.frag, Fragment::First),
                "fragment_later" => assert_eq!(pkt.frag, Fragment::Later),
                _ => assert!(l4_verifies, "{name}: L4 checksum"),
            }
            if name.starts_with("icmp_error") {
                assert_eq!(pkt.kind, L4Kind::IcmpError, "{name}");
                parse_icmp_error(&f[..], &pkt).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            }
        }
    }

    #[test]
    fn committed_seeds_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        let write = std::env::var_os("NATGW_FUZZ_WRITE_SEEDS").is_some();
        for (target, name, bytes) in all() {
            let path = dir.join(target).join(name);
            if write {
                std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
                std::fs::write(&path, &bytes).expect("writing a seed");
            }
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (NATGW_FUZZ_WRITE_SEEDS=1 writes it)",
                    path.display()
                )
            });
            assert_eq!(committed, bytes, "{} is stale", path.display());
        }
    }
}
