//! IPv4, UDP, TCP and ICMP as bytes: builders for the packets the checks craft (ICMP
//! errors, fragments, bare SYNs, deliberately broken checksums) and read-only views
//! over the packets raw sockets receive. Independent of natgw's own packet code, so a
//! bug there cannot hide behind the same bug here.

use std::net::Ipv4Addr;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// ICMP types the checks send or expect (RFC 792).
pub mod icmp_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Timestamp request.
    pub const TIMESTAMP: u8 = 13;
    /// Timestamp reply.
    pub const TIMESTAMP_REPLY: u8 = 14;
}

/// Destination-unreachable codes (RFC 792, RFC 1812).
pub mod unreachable {
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Port unreachable.
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set.
    pub const FRAG_NEEDED: u8 = 4;
    /// Communication administratively prohibited (RFC 1812), what RFC 5508 REQ-8 asks
    /// for when no mapping can be made.
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// The Internet checksum (RFC 1071) of `data`, folded and complemented.
#[must_use]
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum(0, data))
}

fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Checksum of a UDP or TCP segment with its pseudo-header.
fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut acc = sum(0, &src.octets());
    acc = sum(acc, &dst.octets());
    acc += u32::from(proto);
    acc += u32::try_from(segment.len()).expect("segment fits u32");
    fold(sum(acc, segment))
}

/// An IPv4 header to put in front of a payload.
#[derive(Debug, Clone)]
pub struct Ipv4Header {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload.
    pub proto: u8,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub id: u16,
    /// Don't fragment.
    pub df: bool,
    /// More fragments.
    pub mf: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
    /// Options, padded by the caller to a multiple of 4 bytes.
    pub options: Vec<u8>,
    /// Total length to write instead of the real one (an embedded header describes
    /// the whole original datagram, of which only the start is quoted).
    pub total_len: Option<u16>,
    /// Write a wrong header checksum.
    pub bad_checksum: bool,
}

impl Ipv4Header {
    /// A plain header: TTL 64, ID 0x4e47, no flags, no options.
    #[must_use]
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            ttl: 64,
            id: 0x4e47,
            df: false,
            mf: false,
            frag_offset: 0,
            options: Vec::new(),
            total_len: None,
            bad_checksum: false,
        }
    }

    /// The header followed by `payload`.
    ///
    /// # Panics
    /// When the options are not a multiple of 4 bytes or longer than 40, or the
    /// packet is longer than 65535 bytes.
    #[must_use]
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        assert!(self.options.len() % 4 == 0 && self.options.len() <= 40);
        assert_eq!(
            self.frag_offset % 8,
            0,
            "fragment offsets are multiples of 8"
        );
        let hlen = 20 + self.options.len();
        let total = self.total_len.unwrap_or_else(|| {
            u16::try_from(hlen + payload.len()).expect("IPv4 packet fits 65535 bytes")
        });
        let mut p = Vec::with_capacity(hlen + payload.len());
        p.push(0x40 | u8::try_from(hlen / 4).expect("IHL fits"));
        p.push(0);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        let flags = (u16::from(self.df) << 14) | (u16::from(self.mf) << 13);
        p.extend_from_slice(&(flags | (self.frag_offset / 8)).to_be_bytes());
        p.push(self.ttl);
        p.push(self.proto);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        p.extend_from_slice(&self.options);
        let mut c = checksum(&p);
        if self.bad_checksum {
            c ^= 0x5a5a;
        }
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }
}

/// A UDP datagram (header and payload) with a correct checksum.
///
/// # Panics
/// When the datagram is longer than 65535 bytes.
#[must_use]
pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("UDP datagram fits 65535 bytes");
    let mut d = Vec::with_capacity(usize::from(len));
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let mut c = l4_checksum(src, dst, PROTO_UDP, &d);
    if c == 0 {
        c = 0xffff;
    }
    d[6..8].copy_from_slice(&c.to_be_bytes());
    d
}

/// A TCP segment (20-byte header, no options) with a correct checksum.
#[must_use]
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.push(5 << 4);
    s.push(flags);
    s.extend_from_slice(&64240u16.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]);
    s.extend_from_slice(payload);
    let c = l4_checksum(src, dst, PROTO_TCP, &s);
    s[16..18].copy_from_slice(&c.to_be_bytes());
    s
}

/// An ICMP message: type, code, the four "rest of header" bytes and a body, with a
/// correct checksum.
#[must_use]
pub fn icmp(kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + body.len());
    m.extend_from_slice(&[kind, code, 0, 0]);
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An ICMP echo request or reply (`kind`) with identifier `id`.
#[must_use]
pub fn icmp_echo(kind: u8, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    icmp(kind, 0, [a, b, c, d], payload)
}

/// An ICMP error of `kind`/`code` quoting `original` (an IPv4 packet): its header and
/// the first 8 bytes after it, as RFC 792 asks.
#[must_use]
pub fn icmp_error(kind: u8, code: u8, rest: [u8; 4], original: &[u8]) -> Vec<u8> {
    let hlen = usize::from(original.first().map_or(5, |b| b & 0x0f)) * 4;
    let quoted = &original[..original.len().min(hlen + 8)];
    icmp(kind, code, rest, quoted)
}

/// Splits an IP payload into fragments of at most `chunk` bytes (a multiple of 8)
/// under copies of `header`; returns whole IPv4 packets in offset order.
///
/// # Panics
/// When `chunk` is not a positive multiple of 8.
#[must_use]
pub fn fragments(header: &Ipv4Header, payload: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    assert!(chunk > 0 && chunk % 8 == 0);
    let pieces: Vec<&[u8]> = payload.chunks(chunk).collect();
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut h = header.clone();
            h.frag_offset = u16::try_from(i * chunk).expect("offset fits");
            h.mf = i != last;
            h.packet(piece)
        })
        .collect()
}

/// A read-only view of an IPv4 packet (possibly truncated, as quoted in an ICMP error).
#[derive(Debug, Clone, Copy)]
pub struct Ipv4<'a> {
    bytes: &'a [u8],
}

impl<'a> Ipv4<'a> {
    /// The view, if `bytes` hold at least a whole IPv4 header.
    #[must_use]
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let first = *bytes.first()?;
        let hlen = usize::from(first & 0x0f) * 4;
        (first >> 4 == 4 && hlen >= 20 && bytes.len() >= hlen).then_some(Self { bytes })
    }

    /// Header length in bytes.
    #[must_use]
    pub fn header_len(&self) -> usize {
        usize::from(self.bytes[0] & 0x0f) * 4
    }

    /// Total length field.
    #[must_use]
    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes([self.bytes[2], self.bytes[3]])
    }

    /// Identification.
    #[must_use]
    pub fn id(&self) -> u16 {
        u16::from_be_bytes([self.bytes[4], self.bytes[5]])
    }

    /// Don't-fragment flag.
    #[must_use]
    pub fn df(&self) -> bool {
        self.bytes[6] & 0x40 != 0
    }

    /// More-fragments flag.
    #[must_use]
    pub fn mf(&self) -> bool {
        self.bytes[6] & 0x20 != 0
    }

    /// Fragment offset in bytes.
    #[must_use]
    pub fn frag_offset(&self) -> u16 {
        (u16::from_be_bytes([self.bytes[6], self.bytes[7]]) & 0x1fff) * 8
    }

    /// Time to live.
    #[must_use]
    pub fn ttl(&self) -> u8 {
        self.bytes[8]
    }

    /// Protocol.
    #[must_use]
    pub fn proto(&self) -> u8 {
        self.bytes[9]
    }

    /// Source address.
    #[must_use]
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(
            self.bytes[12],
            self.bytes[13],
            self.bytes[14],
            self.bytes[15],
        )
    }

    /// Destination address.
    #[must_use]
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(
            self.bytes[16],
            self.bytes[17],
            self.bytes[18],
            self.bytes[19],
        )
    }

    /// Whether the header checksum is right.
    #[must_use]
    pub fn checksum_ok(&self) -> bool {
        checksum(&self.bytes[..self.header_len()]) == 0
    }

    /// Whether the UDP or TCP checksum is right (a UDP datagram sent without one,
    /// checksum 0, counts as right); `None` for other protocols and fragments.
    #[must_use]
    pub fn l4_checksum_ok(&self) -> Option<bool> {
        if self.frag_offset() != 0 || self.mf() {
            return None;
        }
        let segment = self.payload();
        match self.proto() {
            PROTO_UDP if segment.get(6..8) == Some(&[0, 0]) => Some(true),
            PROTO_UDP | PROTO_TCP => {
                Some(l4_checksum(self.src(), self.dst(), self.proto(), segment) == 0)
            }
            _ => None,
        }
    }

    /// What follows the header, up to the total length or the end of the bytes.
    #[must_use]
    pub fn payload(&self) -> &'a [u8] {
        let end = usize::from(self.total_len()).clamp(self.header_len(), self.bytes.len());
        &self.bytes[self.header_len()..end]
    }

    /// Source and destination ports of a UDP or TCP payload (first fragment only).
    #[must_use]
    pub fn ports(&self) -> Option<(u16, u16)> {
        let p = self.payload();
        (p.len() >= 4 && self.frag_offset() == 0 && matches!(self.proto(), PROTO_UDP | PROTO_TCP))
            .then(|| {
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                )
            })
    }

    /// Flags of a TCP payload.
    #[must_use]
    pub fn tcp_flags(&self) -> Option<u8> {
        let p = self.payload();
        (self.proto() == PROTO_TCP && p.len() >= 14).then(|| p[13])
    }

    /// The ICMP message this packet carries.
    #[must_use]
    pub fn icmp(&self) -> Option<Icmp<'a>> {
        let p = self.payload();
        (self.proto() == PROTO_ICMP && p.len() >= 8).then_some(Icmp { bytes: p })
    }
}

/// A read-only view of an ICMP message.
#[derive(Debug, Clone, Copy)]
pub struct Icmp<'a> {
    bytes: &'a [u8],
}

impl<'a> Icmp<'a> {
    /// The view, if `bytes` hold at least the 8-byte header.
    #[must_use]
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() >= 8).then_some(Self { bytes })
    }

    /// Type.
    #[must_use]
    pub fn kind(&self) -> u8 {
        self.bytes[0]
    }

    /// Code.
    #[must_use]
    pub fn code(&self) -> u8 {
        self.bytes[1]
    }

    /// Whether the checksum over the whole message is right.
    #[must_use]
    pub fn checksum_ok(&self) -> bool {
        checksum(self.bytes) == 0
    }

    /// Identifier of a query (bytes 4-5).
    #[must_use]
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.bytes[4], self.bytes[5]])
    }

    /// Sequence number of a query (bytes 6-7).
    #[must_use]
    pub fn seq(&self) -> u16 {
        u16::from_be_bytes([self.bytes[6], self.bytes[7]])
    }

    /// What follows the 8-byte header: a query's data or an error's quoted packet.
    #[must_use]
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[8..]
    }

    /// The packet an error quotes.
    #[must_use]
    pub fn quoted(&self) -> Option<Ipv4<'a>> {
        Ipv4::parse(self.body())
    }

    /// Whether this is an error message (as opposed to a query).
    #[must_use]
    pub fn is_error(&self) -> bool {
        matches!(
            self.kind(),
            icmp_type::DEST_UNREACHABLE
                | 4
                | 5
                | icmp_type::TIME_EXCEEDED
                | icmp_type::PARAMETER_PROBLEM
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
    const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    #[test]
    fn header_checksum_verifies() {
        let p = Ipv4Header::new(A, B, PROTO_UDP).packet(&udp(A, B, 1, 2, b"x"));
        let ip = Ipv4::parse(&p).expect("parses");
        assert!(ip.checksum_ok());
        assert_eq!((ip.src(), ip.dst(), ip.ports()), (A, B, Some((1, 2))));
        let mut h = Ipv4Header::new(A, B, PROTO_UDP);
        h.bad_checksum = true;
        let bad = h.packet(b"");
        assert!(!Ipv4::parse(&bad).expect("parses").checksum_ok());
    }

    #[test]
    fn udp_checksum_covers_pseudo_header() {
        let d = udp(A, B, 40000, 7000, b"hello");
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&A.octets());
        pseudo.extend_from_slice(&B.octets());
        pseudo.extend_from_slice(&[0, PROTO_UDP, 0, 13]);
        pseudo.extend_from_slice(&d);
        assert_eq!(checksum(&pseudo), 0);
    }

    #[test]
    fn icmp_error_quotes_header_and_eight_bytes() {
        let orig = Ipv4Header::new(A, B, PROTO_UDP).packet(&udp(A, B, 1, 2, &[7; 100]));
        let e = icmp_error(3, 3, [0; 4], &orig);
        let m = Icmp::parse(&e).expect("parses");
        assert!(m.checksum_ok() && m.is_error());
        assert_eq!(m.body().len(), 28);
        assert_eq!(m.quoted().expect("quoted").ports(), Some((1, 2)));
    }

    #[test]
    fn fragments_cover_the_payload_in_order() {
        let h = Ipv4Header::new(A, B, PROTO_UDP);
        let f = fragments(&h, &[1; 20], 8);
        assert_eq!(f.len(), 3);
        let v: Vec<_> = f.iter().map(|p| Ipv4::parse(p).expect("parses")).collect();
        assert_eq!(
            v.iter()
                .map(|p| (p.frag_offset(), p.mf()))
                .collect::<Vec<_>>(),
            [(0, true), (8, true), (16, false)]
        );
    }
}
