//! The packet targets' input, `[params: PARAMS_LEN bytes][Ethernet frame]`, one
//! layout for all of them so their seeds are interchangeable; an IPv4 header reader
//! independent of `natgw_common::packet`; and the fix-ups that make a fuzzed frame's
//! checksums right (or deliberately partial, or absent) before it is rewritten, so
//! the "still verifies" invariants are exercised on more than the rare frame whose
//! checksums the fuzzer happened to get right.

use std::ops::Range;

use natgw_common::packet::Side;

use crate::oracle::{checksum_for, folded, pseudo_sum, word_sum};

/// Bytes of parameters before the frame.
pub const PARAMS_LEN: usize = 16;

/// Offset of the IPv4 header in the frames the seeds hold (untagged Ethernet).
pub const L3: usize = 14;

/// IP protocol numbers, spelled out here rather than imported from the code under test.
pub const ICMP: u8 = 1;
/// TCP.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;

/// What to do with the L4 checksum before the rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Fix {
    /// Leave it as the fuzzer wrote it.
    Keep,
    /// Make it complete and right.
    Complete,
    /// UDP: zero (sent without a checksum); otherwise as `Complete`.
    NoUdpChecksum,
    /// UDP/TCP: the folded pseudo-header sum alone, as a veth frame from a local
    /// socket carries it; otherwise as `Complete`.
    Partial,
}

/// The parameters: which side to rewrite and to what, and which fix-ups to make.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// The side rewritten.
    pub side: Side,
    /// Make the IP header checksums right: the outer one and, in an ICMP error, the
    /// embedded one.
    pub fix_ip: bool,
    /// What to do with the L4 checksum (for an ICMP error: the ICMP checksum).
    pub l4: L4Fix,
    /// ICMP errors: the outer address rewritten with the embedded one, and its side.
    pub outer: Option<Side>,
    /// The new address.
    pub addr: [u8; 4],
    /// The new port or ICMP identifier (wire order).
    pub port_be: u16,
    /// The new IP identification (wire order).
    pub id_be: u16,
    /// An offset for probing the buffer's bounds checks.
    pub probe: usize,
    /// The new outer address of an ICMP error.
    pub outer_addr: [u8; 4],
    /// Another offset at which to parse an IPv4 header.
    pub l3: usize,
}

impl Params {
    /// Splits `data` into parameters and frame; `None` when it is too short.
    #[must_use]
    pub fn split(data: &[u8]) -> Option<(Self, &[u8])> {
        if data.len() < PARAMS_LEN {
            return None;
        }
        let (p, frame) = data.split_at(PARAMS_LEN);
        let flags = p[0];
        let bit = |n: u8| flags & (1 << n) != 0;
        let side = |b: bool| if b { Side::Destination } else { Side::Source };
        let l4 = match (bit(2), bit(3), bit(4)) {
            (false, _, _) => L4Fix::Keep,
            (true, true, _) => L4Fix::NoUdpChecksum,
            (true, false, true) => L4Fix::Partial,
            (true, false, false) => L4Fix::Complete,
        };
        let params = Self {
            side: side(bit(0)),
            fix_ip: bit(1),
            l4,
            outer: bit(5).then(|| side(bit(6))),
            addr: [p[1], p[2], p[3], p[4]],
            port_be: u16::from_ne_bytes([p[5], p[6]]),
            id_be: u16::from_ne_bytes([p[7], p[8]]),
            probe: usize::from(u16::from_be_bytes([p[9], p[10]])),
            outer_addr: [p[11], p[12], p[13], p[14]],
            l3: usize::from(p[15]),
        };
        Some((params, frame))
    }

    /// The parameter bytes that select `side`, the given fix-ups and nothing else
    /// (addresses and ports zero): for building seeds.
    #[must_use]
    pub fn encode(side: Side, fix_ip: bool, l4: L4Fix, outer: Option<Side>) -> [u8; PARAMS_LEN] {
        let mut flags = u8::from(side == Side::Destination) | (u8::from(fix_ip) << 1);
        flags |= match l4 {
            L4Fix::Keep => 0,
            L4Fix::Complete => 1 << 2,
            L4Fix::NoUdpChecksum => (1 << 2) | (1 << 3),
            L4Fix::Partial => (1 << 2) | (1 << 4),
        };
        if let Some(o) = outer {
            flags |= (1 << 5) | (u8::from(o == Side::Destination) << 6);
        }
        let mut p = [0u8; PARAMS_LEN];
        p[0] = flags;
        p
    }
}

/// An IPv4 header as this crate reads it, independently of the code under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Offset of the header.
    pub l3: usize,
    /// Header length in bytes (IHL × 4).
    pub ihl: usize,
    /// Total length.
    pub tot_len: usize,
    /// Protocol.
    pub proto: u8,
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Flags and fragment offset.
    pub frag_word: u16,
}

impl Ipv4Header {
    /// The header at `l3` when it is version 4, its IHL at least 5 and it ends by
    /// `limit` (its total length is not checked: an embedded header's datagram is cut
    /// short by design).
    #[must_use]
    pub fn at(f: &[u8], l3: usize, limit: usize) -> Option<Self> {
        let fixed = f.get(l3..l3.checked_add(20)?)?;
        let ihl = usize::from(fixed[0] & 0x0f) * 4;
        if fixed[0] >> 4 != 4 || ihl < 20 || l3 + ihl > limit.min(f.len()) {
            return None;
        }
        Some(Self {
            l3,
            ihl,
            tot_len: usize::from(u16::from_be_bytes([fixed[2], fixed[3]])),
            proto: fixed[9],
            src: fixed[12..16].try_into().ok()?,
            dst: fixed[16..20].try_into().ok()?,
            frag_word: u16::from_be_bytes([fixed[6], fixed[7]]),
        })
    }

    /// [`Self::at`] for a datagram that lies entirely in the frame, header included
    /// in its total length.
    #[must_use]
    pub fn datagram_at(f: &[u8], l3: usize) -> Option<Self> {
        let h = Self::at(f, l3, f.len())?;
        (h.tot_len >= h.ihl && l3 + h.tot_len <= f.len()).then_some(h)
    }

    /// The header's bytes.
    #[must_use]
    pub fn header(&self) -> Range<usize> {
        self.l3..self.l4()
    }

    /// Offset of the L4 header.
    #[must_use]
    pub fn l4(&self) -> usize {
        self.l3 + self.ihl
    }

    /// End of the datagram.
    #[must_use]
    pub fn end(&self) -> usize {
        self.l3 + self.tot_len
    }

    /// Whether this is a whole datagram (neither MF nor a fragment offset).
    #[must_use]
    pub fn unfragmented(&self) -> bool {
        self.frag_word & 0x3fff == 0
    }

    /// Whether this is a fragment after the first (a non-zero offset).
    #[must_use]
    pub fn later_fragment(&self) -> bool {
        self.frag_word & 0x1fff != 0
    }

    /// Sum of the L4 bytes `l4..end` (to the datagram's end) plus, for UDP and TCP,
    /// the pseudo-header with this header's addresses and length `end - l4`.
    #[must_use]
    pub fn l4_sum(&self, f: &[u8], l4: usize, end: usize) -> u64 {
        let data = word_sum(&f[l4..end]);
        if matches!(self.proto, UDP | TCP) {
            data + pseudo_sum(self.src, self.dst, self.proto, end - l4)
        } else {
            data
        }
    }
}

/// Offset of the L4 checksum within a header of protocol `proto`.
#[must_use]
pub fn l4_checksum_offset(proto: u8) -> Option<usize> {
    match proto {
        UDP => Some(6),
        TCP => Some(16),
        ICMP => Some(2),
        _ => None,
    }
}

fn store16(f: &mut [u8], off: usize, v: u16) {
    f[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// Makes the IP header checksum at `l3` right, if there is a header there.
pub fn fix_ip_checksum(f: &mut [u8], l3: usize, limit: usize) {
    if let Some(h) = Ipv4Header::at(f, l3, limit) {
        store16(f, l3 + 10, 0);
        let c = checksum_for(word_sum(&f[h.header()]));
        store16(f, l3 + 10, c);
    }
}

/// Makes the L4 checksum of the unfragmented datagram at `l3` what `fix` asks.
pub fn fix_l4_checksum(f: &mut [u8], l3: usize, fix: L4Fix) {
    let Some(h) = Ipv4Header::datagram_at(f, l3) else {
        return;
    };
    let Some(off) = l4_checksum_offset(h.proto) else {
        return;
    };
    let field = h.l4() + off;
    if fix == L4Fix::Keep || !h.unfragmented() || field + 2 > h.end() {
        return;
    }
    let value = match fix {
        L4Fix::NoUdpChecksum if h.proto == UDP => 0,
        L4Fix::Partial if h.proto != ICMP => {
            folded(pseudo_sum(h.src, h.dst, h.proto, h.tot_len - h.ihl))
        }
        _ => {
            store16(f, field, 0);
            let c = checksum_for(h.l4_sum(f, h.l4(), h.end()));
            if h.proto == UDP && c == 0 {
                0xffff // RFC 768: a computed zero is sent as all ones
            } else {
                c
            }
        }
    };
    store16(f, field, value);
}

/// The fix-ups `p` asks for, on the frame's IPv4 datagram at [`L3`]: for an ICMP
/// error the embedded IP header first, then the outer IP header and the L4 (ICMP)
/// checksum, which covers the embedded header.
pub fn fix_checksums(f: &mut [u8], p: &Params) {
    if p.fix_ip {
        if let Some(h) = Ipv4Header::datagram_at(f, L3) {
            if h.proto == ICMP && h.unfragmented() {
                fix_ip_checksum(f, h.l4() + 8, h.end());
            }
        }
        fix_ip_checksum(f, L3, f.len());
    }
    fix_l4_checksum(f, L3, p.l4);
}
