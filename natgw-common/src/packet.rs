//! Parsing and rewriting of Ethernet/IPv4/UDP/TCP frames, written once over the
//! [`PacketBuf`] trait so the XDP program, the TC programs and plain unit tests share
//! it. Every read is bounds-checked by the buffer at the point it is made; the parse
//! result is a small struct of offsets and fields that everything after works on.

use crate::{csum, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// Length of an Ethernet header without VLAN tags.
pub const ETH_HLEN: usize = 14;
/// Offset of the EtherType in an Ethernet header without VLAN tags.
pub const ETH_TYPE: usize = 12;
/// Ethertype of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// Minimum IPv4 header length (IHL 5).
pub const IPV4_MIN_HLEN: usize = 20;

/// Byte offsets inside an IPv4 header.
pub mod ipv4 {
    /// Version and IHL.
    pub const VER_IHL: usize = 0;
    /// Total length.
    pub const TOT_LEN: usize = 2;
    /// Identification.
    pub const ID: usize = 4;
    /// Flags and fragment offset.
    pub const FRAG: usize = 6;
    /// Time to live (the word at this offset is TTL << 8 | protocol).
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTO: usize = 9;
    /// Header checksum.
    pub const CSUM: usize = 10;
    /// Source address.
    pub const SRC: usize = 12;
    /// Destination address.
    pub const DST: usize = 16;
    /// More-fragments flag in the FRAG word.
    pub const MF: u16 = 0x2000;
    /// Don't-fragment flag in the FRAG word.
    pub const DF: u16 = 0x4000;
    /// Fragment offset mask in the FRAG word.
    pub const OFFSET_MASK: u16 = 0x1fff;
}

/// Byte offsets shared by the UDP and TCP headers, and their checksum offsets.
pub mod l4 {
    /// Source port.
    pub const SPORT: usize = 0;
    /// Destination port.
    pub const DPORT: usize = 2;
    /// UDP length (header and data).
    pub const UDP_LEN: usize = 4;
    /// UDP checksum.
    pub const UDP_CSUM: usize = 6;
    /// UDP header length.
    pub const UDP_HLEN: usize = 8;
    /// TCP flags byte.
    pub const TCP_FLAGS: usize = 13;
    /// TCP checksum.
    pub const TCP_CSUM: usize = 16;
    /// TCP header length without options.
    pub const TCP_MIN_HLEN: usize = 20;
    /// ICMP checksum.
    pub const ICMP_CSUM: usize = 2;
    /// ICMP query identifier.
    pub const ICMP_ID: usize = 4;
    /// ICMP header length (type, code, checksum, rest of header).
    pub const ICMP_HLEN: usize = 8;
}

/// ICMP message types natgw distinguishes (RFC 792, RFC 5508 REQ-10).
pub mod icmp {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACH: u8 = 3;
    /// Source quench (deprecated, still an error message).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Timestamp request.
    pub const TIMESTAMP_REQUEST: u8 = 13;
    /// Timestamp reply.
    pub const TIMESTAMP_REPLY: u8 = 14;
    /// Information request (obsolete query, still mapped by identifier).
    pub const INFO_REQUEST: u8 = 15;
    /// Information reply.
    pub const INFO_REPLY: u8 = 16;
    /// Address mask request.
    pub const ADDRESS_MASK_REQUEST: u8 = 17;
    /// Address mask reply.
    pub const ADDRESS_MASK_REPLY: u8 = 18;
    /// Destination unreachable code: communication administratively prohibited
    /// (RFC 1812), sent when no mapping can be made (RFC 5508 REQ-8).
    pub const CODE_ADMIN_PROHIBITED: u8 = 13;
    /// Destination unreachable code: port unreachable.
    pub const CODE_PORT_UNREACHABLE: u8 = 3;
    /// Destination unreachable code: host unreachable, what RFC 6888 REQ-11 asks a
    /// carrier-grade NAT to send when no mapping can be made.
    pub const CODE_HOST_UNREACHABLE: u8 = 1;
}

/// Largest L4 segment whose checksum the programs recompute in full (a bounded loop
/// for the verifier); larger segments are left to the kernel's path.
pub const MAX_FULL_CSUM_LEN: usize = 4096;

/// Bounds-checked byte access to a frame.
pub trait PacketBuf {
    /// Length of the frame in bytes.
    fn len(&self) -> usize;
    /// Whether the frame is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `N` bytes at `off`, or `None` when they are not all inside the frame.
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
}

/// A frame that can be written in place.
pub trait PacketBufMut: PacketBuf {
    /// Writes `bytes` at `off`; `None` when they do not fit inside the frame.
    fn store<const N: usize>(&mut self, off: usize, bytes: [u8; N]) -> Option<()>;
}

impl PacketBuf for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.get(off..off.checked_add(N)?)?.try_into().ok()
    }
}

impl PacketBufMut for [u8] {
    fn store<const N: usize>(&mut self, off: usize, bytes: [u8; N]) -> Option<()> {
        self.get_mut(off..off.checked_add(N)?)?
            .copy_from_slice(&bytes);
        Some(())
    }
}

/// Why a frame could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A header runs past the end of the frame.
    Truncated,
    /// A header field is inconsistent (version, IHL, total length, TCP data offset),
    /// or the L4 header natgw reads does not fit in the datagram.
    Invalid,
}

/// Where an IPv4 datagram sits in its fragment series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    None,
    /// First fragment: carries the L4 header, more follow.
    First,
    /// A later fragment: no L4 header.
    Later,
}

/// The `l4_csum_off` of a packet without an L4 checksum to maintain (a real
/// checksum can never sit at offset 0, where the Ethernet header is).
pub const NO_CSUM: usize = 0;

#[inline(always)]
const fn csum_off(off: usize) -> Option<usize> {
    if off == NO_CSUM {
        None
    } else {
        Some(off)
    }
}

/// What the L4 part of a packet is, as far as translation is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Kind {
    /// UDP or TCP with its ports present.
    Ports,
    /// An ICMP query request (echo, timestamp, information, address mask), mapped
    /// by its identifier like a port (RFC 5508 REQ-1a). (Fieldless variants only:
    /// a variant with data leaves bytes undefined in the others, which the
    /// verifier rejects when they are copied.)
    IcmpRequest,
    /// An ICMP query reply.
    IcmpReply,
    /// An ICMP error message, which embeds (part of) the packet it is about.
    IcmpError,
    /// Anything else: other protocols, unknown ICMP types, later fragments.
    Other,
}

/// The fields and offsets of an IPv4 packet that translation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Packet {
    /// Offset of the IPv4 header in the frame.
    pub l3: usize,
    /// Offset of the L4 header (after IP options).
    pub l4: usize,
    /// IPv4 total length.
    pub tot_len: u16,
    /// IP protocol.
    pub proto: u8,
    /// Time to live.
    pub ttl: u8,
    /// Source address (wire octets).
    pub src: [u8; 4],
    /// Destination address (wire octets).
    pub dst: [u8; 4],
    /// Fragment position.
    pub frag: Fragment,
    /// Fragment offset field (8-byte units, host order).
    pub frag_offset: u16,
    /// The MF (more fragments) flag: false on a datagram's last fragment.
    pub more_fragments: bool,
    /// The DF (don't fragment) flag. A datagram without it is "non-atomic" (RFC
    /// 6864): a router on the way may fragment it, so its identification matters.
    pub dont_fragment: bool,
    /// What the L4 part is.
    pub kind: L4Kind,
    /// ICMP type and code, 0 for other protocols.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// UDP/TCP source port or ICMP query identifier (wire order), 0 otherwise.
    pub sport_be: u16,
    /// UDP/TCP destination port or ICMP query identifier (wire order), 0 otherwise.
    pub dport_be: u16,
    /// TCP flags byte, 0 otherwise.
    pub tcp_flags: u8,
    /// TCP sequence number (wire order), 0 otherwise.
    pub tcp_seq_be: u32,
    /// IP identification (wire order).
    pub ip_id_be: u16,
    /// Offset of the L4 checksum when it must be maintained, [`NO_CSUM`] for UDP
    /// sent without a checksum, other protocols and later fragments. (A plain
    /// offset, not an `Option`: the payload of a `None` is undefined bytes, which the
    /// verifier rejects when the struct is copied.)
    pub l4_csum_off: usize,
}

impl Ipv4Packet {
    /// Whether the packet carries transport identifiers natgw maps: UDP/TCP ports
    /// (not in a later fragment), or an ICMP query identifier.
    #[must_use]
    pub const fn has_ports(&self) -> bool {
        matches!(
            self.kind,
            L4Kind::Ports | L4Kind::IcmpRequest | L4Kind::IcmpReply
        )
    }

    /// Whether an outbound packet of this kind creates or uses a mapping: UDP/TCP,
    /// and ICMP query requests (replies to outside queries never leave).
    #[must_use]
    pub const fn maps_outbound(&self) -> bool {
        matches!(self.kind, L4Kind::Ports | L4Kind::IcmpRequest)
    }

    /// Whether an inbound packet of this kind is looked up in the mappings: UDP/TCP
    /// and ICMP query replies (inbound requests are for the gateway itself).
    #[must_use]
    pub const fn maps_inbound(&self) -> bool {
        matches!(self.kind, L4Kind::Ports | L4Kind::IcmpReply)
    }

    /// Whether the L4 checksum covers the IP pseudo-header (UDP, TCP; not ICMP).
    #[must_use]
    pub const fn pseudo_header(&self) -> bool {
        matches!(self.proto, IPPROTO_UDP | IPPROTO_TCP)
    }

    /// Offset of the L4 checksum to maintain, if any.
    #[must_use]
    pub const fn l4_csum(&self) -> Option<usize> {
        csum_off(self.l4_csum_off)
    }

    /// Length of the L4 segment in this packet.
    #[must_use]
    pub const fn l4_len(&self) -> usize {
        self.l3 + self.tot_len as usize - self.l4
    }
}

/// Offset of the IPv4 header when the frame is an untagged Ethernet IPv4 frame.
#[inline(always)]
pub fn ipv4_offset<B: PacketBuf + ?Sized>(buf: &B) -> Result<Option<usize>, ParseError> {
    let ethertype = buf.load::<2>(ETH_TYPE).ok_or(ParseError::Truncated)?;
    Ok((u16::from_be_bytes(ethertype) == ETH_P_IP).then_some(ETH_HLEN))
}

/// Parses the IPv4 header at `l3` and, for UDP/TCP, the ports.
///
/// Nothing after the datagram's total length is read: the L4 header of an
/// unfragmented datagram or a first fragment (8 bytes of ICMP or UDP, 20 of TCP)
/// must fit in it, else the packet is `Invalid` — bytes past the total length are
/// link-layer padding, which neither the sender's checksum nor a fragment's
/// reassembly covers (RFC 1858's tiny first fragments included).
#[inline(always)]
pub fn parse_ipv4<B: PacketBuf + ?Sized>(buf: &B, l3: usize) -> Result<Ipv4Packet, ParseError> {
    let fixed = buf.load::<IPV4_MIN_HLEN>(l3).ok_or(ParseError::Truncated)?;
    let ver_ihl = fixed[ipv4::VER_IHL];
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    if ver_ihl >> 4 != 4 || ihl < IPV4_MIN_HLEN {
        return Err(ParseError::Invalid);
    }
    let tot_len = u16::from_be_bytes([fixed[ipv4::TOT_LEN], fixed[ipv4::TOT_LEN + 1]]);
    if usize::from(tot_len) < ihl {
        return Err(ParseError::Invalid);
    }
    if l3 + usize::from(tot_len) > buf.len() {
        return Err(ParseError::Truncated);
    }
    let frag_word = u16::from_be_bytes([fixed[ipv4::FRAG], fixed[ipv4::FRAG + 1]]);
    let frag = if frag_word & ipv4::OFFSET_MASK != 0 {
        Fragment::Later
    } else if frag_word & ipv4::MF != 0 {
        Fragment::First
    } else {
        Fragment::None
    };
    let mut pkt = Ipv4Packet {
        l3,
        l4: l3 + ihl,
        tot_len,
        proto: fixed[ipv4::PROTO],
        ttl: fixed[ipv4::TTL],
        src: [fixed[12], fixed[13], fixed[14], fixed[15]],
        dst: [fixed[16], fixed[17], fixed[18], fixed[19]],
        frag,
        frag_offset: frag_word & ipv4::OFFSET_MASK,
        more_fragments: frag_word & ipv4::MF != 0,
        dont_fragment: frag_word & ipv4::DF != 0,
        kind: L4Kind::Other,
        icmp_type: 0,
        icmp_code: 0,
        sport_be: 0,
        dport_be: 0,
        tcp_flags: 0,
        tcp_seq_be: 0,
        ip_id_be: u16::from_ne_bytes([fixed[ipv4::ID], fixed[ipv4::ID + 1]]),
        l4_csum_off: NO_CSUM,
    };
    if frag == Fragment::Later {
        return Ok(pkt);
    }
    let l4 = pkt.l4;
    let l4_len = pkt.l4_len();
    match pkt.proto {
        IPPROTO_ICMP => {
            if l4_len < l4::ICMP_HLEN {
                return Err(ParseError::Invalid);
            }
            let hdr = buf
                .load::<{ l4::ICMP_HLEN }>(l4)
                .ok_or(ParseError::Truncated)?;
            pkt.icmp_type = hdr[0];
            pkt.icmp_code = hdr[1];
            pkt.kind = icmp_kind(hdr[0]);
            if let L4Kind::IcmpRequest | L4Kind::IcmpReply = pkt.kind {
                pkt.sport_be = u16::from_ne_bytes([hdr[l4::ICMP_ID], hdr[l4::ICMP_ID + 1]]);
                pkt.dport_be = pkt.sport_be;
            }
            if pkt.kind != L4Kind::Other {
                pkt.l4_csum_off = l4 + l4::ICMP_CSUM;
            }
        }
        IPPROTO_UDP => {
            if l4_len < l4::UDP_HLEN {
                return Err(ParseError::Invalid);
            }
            let hdr = buf
                .load::<{ l4::UDP_HLEN }>(l4)
                .ok_or(ParseError::Truncated)?;
            pkt.kind = L4Kind::Ports;
            pkt.sport_be = u16::from_ne_bytes([hdr[0], hdr[1]]);
            pkt.dport_be = u16::from_ne_bytes([hdr[2], hdr[3]]);
            if hdr[l4::UDP_CSUM] != 0 || hdr[l4::UDP_CSUM + 1] != 0 {
                pkt.l4_csum_off = l4 + l4::UDP_CSUM;
            }
        }
        IPPROTO_TCP => {
            if l4_len < l4::TCP_MIN_HLEN {
                return Err(ParseError::Invalid);
            }
            let hdr = buf
                .load::<{ l4::TCP_MIN_HLEN }>(l4)
                .ok_or(ParseError::Truncated)?;
            let doff = usize::from(hdr[12] >> 4) * 4;
            if doff < l4::TCP_MIN_HLEN || (pkt.frag == Fragment::None && l4_len < doff) {
                return Err(ParseError::Invalid);
            }
            pkt.kind = L4Kind::Ports;
            pkt.sport_be = u16::from_ne_bytes([hdr[0], hdr[1]]);
            pkt.dport_be = u16::from_ne_bytes([hdr[2], hdr[3]]);
            pkt.tcp_flags = hdr[l4::TCP_FLAGS];
            pkt.tcp_seq_be = u32::from_ne_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
            pkt.l4_csum_off = l4 + l4::TCP_CSUM;
        }
        _ => {}
    }
    Ok(pkt)
}

/// Classifies an ICMP type (RFC 5508 REQ-10).
#[inline(always)]
#[must_use]
pub const fn icmp_kind(icmp_type: u8) -> L4Kind {
    match icmp_type {
        icmp::ECHO_REQUEST
        | icmp::TIMESTAMP_REQUEST
        | icmp::INFO_REQUEST
        | icmp::ADDRESS_MASK_REQUEST => L4Kind::IcmpRequest,
        icmp::ECHO_REPLY | icmp::TIMESTAMP_REPLY | icmp::INFO_REPLY | icmp::ADDRESS_MASK_REPLY => {
            L4Kind::IcmpReply
        }
        icmp::DEST_UNREACH
        | icmp::SOURCE_QUENCH
        | icmp::REDIRECT
        | icmp::TIME_EXCEEDED
        | icmp::PARAMETER_PROBLEM => L4Kind::IcmpError,
        _ => L4Kind::Other,
    }
}

/// Which side of the packet a translation rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Source address and port (outbound: internal -> external).
    Source,
    /// Destination address and port (inbound: external -> internal).
    Destination,
}

/// One address+port rewrite, with everything needed to fix the checksums: the
/// single description both the XDP (in-place) and TC (skb helper) appliers execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// Offset of the address field.
    pub addr_off: usize,
    /// Address before.
    pub old_addr: [u8; 4],
    /// Address after.
    pub new_addr: [u8; 4],
    /// Offset of the port field.
    pub port_off: usize,
    /// Port before (wire order).
    pub old_port_be: u16,
    /// Port after (wire order).
    pub new_port_be: u16,
    /// Offset of the IPv4 header checksum.
    pub ip_csum_off: usize,
    /// Offset of the L4 checksum, [`NO_CSUM`] if it is not maintained.
    pub l4_csum_off: usize,
    /// The packet is UDP (a computed zero checksum must become 0xffff).
    pub udp: bool,
    /// The L4 checksum covers the pseudo-header, so the address change enters it
    /// too (UDP, TCP; not ICMP).
    pub pseudo: bool,
}

impl Rewrite {
    /// The rewrite of `side` of `pkt` to `addr`:`port_be`.
    #[inline(always)]
    #[must_use]
    pub const fn new(pkt: &Ipv4Packet, side: Side, addr: [u8; 4], port_be: u16) -> Self {
        let (addr_off, old_addr, mut port_off, old_port_be) = match side {
            Side::Source => (
                pkt.l3 + ipv4::SRC,
                pkt.src,
                pkt.l4 + l4::SPORT,
                pkt.sport_be,
            ),
            Side::Destination => (
                pkt.l3 + ipv4::DST,
                pkt.dst,
                pkt.l4 + l4::DPORT,
                pkt.dport_be,
            ),
        };
        if pkt.proto == IPPROTO_ICMP {
            // A query's identifier plays the part of both ports.
            port_off = pkt.l4 + l4::ICMP_ID;
        }
        Self {
            addr_off,
            old_addr,
            new_addr: addr,
            port_off,
            old_port_be,
            new_port_be: port_be,
            ip_csum_off: pkt.l3 + ipv4::CSUM,
            l4_csum_off: pkt.l4_csum_off,
            udp: pkt.proto == IPPROTO_UDP,
            pseudo: pkt.pseudo_header(),
        }
    }
}

#[inline(always)]
fn load_u16<B: PacketBuf + ?Sized>(buf: &B, off: usize) -> Option<u16> {
    buf.load::<2>(off).map(u16::from_be_bytes)
}

#[inline(always)]
fn store_u16<B: PacketBufMut + ?Sized>(buf: &mut B, off: usize, v: u16) -> Option<()> {
    buf.store::<2>(off, v.to_be_bytes())
}

/// Applies `rw` in place, updating the IP and L4 checksums incrementally
/// (RFC 1624). Correct for frames whose L4 checksum is complete.
#[inline(always)]
pub fn apply_incremental<B: PacketBufMut + ?Sized>(buf: &mut B, rw: &Rewrite) -> Option<()> {
    let ip_check = load_u16(buf, rw.ip_csum_off)?;
    store_u16(
        buf,
        rw.ip_csum_off,
        csum::replace32(ip_check, rw.old_addr, rw.new_addr),
    )?;
    if let Some(off) = csum_off(rw.l4_csum_off) {
        let check = load_u16(buf, off)?;
        let check = if rw.pseudo {
            csum::replace32(check, rw.old_addr, rw.new_addr)
        } else {
            check
        };
        let check = csum::replace16(
            check,
            u16::from_be(rw.old_port_be),
            u16::from_be(rw.new_port_be),
        );
        let check = if rw.udp {
            csum::udp_nonzero(check)
        } else if !rw.pseudo {
            csum::icmp_nonzero(check)
        } else {
            check
        };
        store_u16(buf, off, check)?;
    }
    buf.store::<4>(rw.addr_off, rw.new_addr)?;
    buf.store::<2>(rw.port_off, rw.new_port_be.to_ne_bytes())
}

/// Whether the L4 checksum field of unfragmented UDP/TCP `pkt` holds a partial
/// checksum: the folded pseudo-header sum alone, uncomplemented, which is what Linux
/// leaves there for a `CHECKSUM_PARTIAL` socket buffer (`~csum_tcpudp_magic()`) and
/// what a veth frame from a local socket carries. Only such a field may be completed
/// by [`recompute_l4_checksum`]; any other is updated incrementally, so a corrupt
/// checksum stays corrupt and the receiver still drops the packet (a router never
/// vouches for data it did not check).
///
/// A complete checksum that happens to equal the pseudo-header sum (one in 65536)
/// is recomputed too: harmless when it was right, and no weaker than the checksum
/// itself when it was wrong.
#[inline(always)]
pub fn l4_checksum_is_partial<B: PacketBuf + ?Sized>(buf: &B, pkt: &Ipv4Packet) -> bool {
    let Some(off) = pkt.l4_csum() else {
        return false;
    };
    if !pkt.pseudo_header() || pkt.frag != Fragment::None {
        return false;
    }
    let Some(field) = load_u16(buf, off) else {
        return false;
    };
    let pseudo = csum::pseudo_header_sum(pkt.src, pkt.dst, pkt.proto, pkt.l4_len() as u16);
    field == csum::fold(pseudo)
}

/// Recomputes the L4 checksum of an unfragmented UDP/TCP packet from scratch. Used
/// where the received checksum may be partial (veth frames from local sockets carry
/// only the pseudo-header sum), so the forwarded frame carries a complete one.
/// `None`, the frame untouched, for anything else (ICMP, whose checksum covers no
/// pseudo-header; fragments; UDP without a checksum) and when the segment is longer
/// than [`MAX_FULL_CSUM_LEN`].
#[inline(always)]
pub fn recompute_l4_checksum<B: PacketBufMut + ?Sized>(
    buf: &mut B,
    pkt: &Ipv4Packet,
) -> Option<()> {
    let off = pkt.l4_csum()?;
    let len = pkt.l4_len();
    if !pkt.pseudo_header() || len > MAX_FULL_CSUM_LEN || pkt.frag != Fragment::None {
        return None;
    }
    // The addresses and ports may have been rewritten since parsing: read them back.
    let src = buf.load::<4>(pkt.l3 + ipv4::SRC)?;
    let dst = buf.load::<4>(pkt.l3 + ipv4::DST)?;
    store_u16(buf, off, 0)?;
    let sum = csum::pseudo_header_sum(src, dst, pkt.proto, len as u16)
        + sum_range::<B, MAX_FULL_CSUM_LEN>(buf, pkt.l4, len)?;
    let check = !csum::fold(sum);
    let check = if pkt.proto == IPPROTO_UDP {
        csum::udp_nonzero(check)
    } else {
        check
    };
    store_u16(buf, off, check)
}

/// The packet embedded in an ICMP error: the header of the packet the error is
/// about, and the first bytes of its L4 header (RFC 792: at least 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Embedded {
    /// Offset of the embedded IPv4 header.
    pub l3: usize,
    /// Offset of the embedded L4 header (after its IP options, RFC 5508 REQ-3).
    pub l4: usize,
    /// Embedded protocol.
    pub proto: u8,
    /// Embedded source address.
    pub src: [u8; 4],
    /// Embedded destination address.
    pub dst: [u8; 4],
    /// Embedded source port or ICMP query identifier (wire order).
    pub sport_be: u16,
    /// Embedded destination port or ICMP query identifier (wire order).
    pub dport_be: u16,
    /// Offset of the embedded L4 checksum when it lies inside the error and must be
    /// kept consistent (UDP with a checksum, TCP when its header is all there, ICMP),
    /// else [`NO_CSUM`].
    pub l4_csum_off: usize,
}

impl Embedded {
    /// Whether the embedded L4 checksum covers the pseudo-header.
    #[must_use]
    pub const fn pseudo_header(&self) -> bool {
        matches!(self.proto, IPPROTO_UDP | IPPROTO_TCP)
    }
}

/// Largest embedded IPv4 header (IHL 15).
const MAX_IHL: usize = 60;

/// One's-complement sum of `len` bytes at `off` (at most `MAX` bytes; `None` past
/// it or past the frame). A bounded loop the verifier accepts, reading 8 bytes a
/// step: a quarter of the bounds checks (XDP) or `bpf_skb_load_bytes` calls (TC) and
/// of the iterations the verifier walks, against 2-byte reads.
#[inline(always)]
pub(crate) fn sum_range<B: PacketBuf + ?Sized, const MAX: usize>(
    buf: &B,
    off: usize,
    len: usize,
) -> Option<u32> {
    if len > MAX {
        return None;
    }
    let quads = len / 8;
    let mut sum = 0u32;
    let mut i = 0;
    while i < MAX / 8 {
        if i >= quads {
            break;
        }
        let q = buf.load::<8>(off + 8 * i)?;
        sum += u32::from(u16::from_be_bytes([q[0], q[1]]))
            + u32::from(u16::from_be_bytes([q[2], q[3]]))
            + u32::from(u16::from_be_bytes([q[4], q[5]]))
            + u32::from(u16::from_be_bytes([q[6], q[7]]));
        i += 1;
    }
    // The last 0-7 bytes: up to three words, then an odd byte (padded with zero).
    let tail = off + 8 * quads;
    let words = (len % 8) / 2;
    let mut j = 0;
    while j < 3 {
        if j >= words {
            break;
        }
        sum += u32::from(load_u16(buf, tail + 2 * j)?);
        j += 1;
    }
    if len % 2 == 1 {
        sum += u32::from(buf.load::<1>(tail + 2 * j)?[0]) << 8;
    }
    Some(sum)
}

/// Parses and validates the packet embedded in the ICMP error `pkt`
/// (RFC 5508 REQ-3): the ICMP checksum and the embedded IP header checksum must be
/// right (`Invalid` otherwise); embedded IP options are walked past; the embedded
/// transport checksum is not validated, and RFC 4884 extensions play no part.
/// Everything read lies inside the ICMP message: an embedded header or first 8 bytes
/// of L4 header (RFC 792) that do not fit in it are `Truncated`, whatever the frame
/// holds after the datagram (link-layer padding, which no checksum covers).
#[inline(always)]
pub fn parse_icmp_error<B: PacketBuf + ?Sized>(
    buf: &B,
    pkt: &Ipv4Packet,
) -> Result<Embedded, ParseError> {
    let len = pkt.l4_len();
    let sum = sum_range::<B, MAX_FULL_CSUM_LEN>(buf, pkt.l4, len).ok_or(ParseError::Invalid)?;
    if csum::fold(sum) != 0xffff {
        return Err(ParseError::Invalid);
    }
    let end = pkt.l3 + usize::from(pkt.tot_len);
    let l3 = pkt.l4 + l4::ICMP_HLEN;
    if l3 + IPV4_MIN_HLEN > end {
        return Err(ParseError::Truncated);
    }
    let fixed = buf.load::<IPV4_MIN_HLEN>(l3).ok_or(ParseError::Truncated)?;
    let ihl = usize::from(fixed[ipv4::VER_IHL] & 0x0f) * 4;
    if fixed[ipv4::VER_IHL] >> 4 != 4 || ihl < IPV4_MIN_HLEN {
        return Err(ParseError::Invalid);
    }
    if l3 + ihl > end {
        return Err(ParseError::Truncated);
    }
    let hsum = sum_range::<B, MAX_IHL>(buf, l3, ihl).ok_or(ParseError::Truncated)?;
    if csum::fold(hsum) != 0xffff {
        return Err(ParseError::Invalid);
    }
    let frag_word = u16::from_be_bytes([fixed[ipv4::FRAG], fixed[ipv4::FRAG + 1]]);
    if frag_word & ipv4::OFFSET_MASK != 0 {
        // About a later fragment: no ports to map it by.
        return Err(ParseError::Invalid);
    }
    let el4 = l3 + ihl;
    if el4 + 8 > end {
        return Err(ParseError::Truncated);
    }
    let hdr = buf.load::<8>(el4).ok_or(ParseError::Truncated)?;
    let proto = fixed[ipv4::PROTO];
    let mut emb = Embedded {
        l3,
        l4: el4,
        proto,
        src: [fixed[12], fixed[13], fixed[14], fixed[15]],
        dst: [fixed[16], fixed[17], fixed[18], fixed[19]],
        sport_be: u16::from_ne_bytes([hdr[0], hdr[1]]),
        dport_be: u16::from_ne_bytes([hdr[2], hdr[3]]),
        l4_csum_off: NO_CSUM,
    };
    match proto {
        IPPROTO_UDP => {
            if hdr[6] != 0 || hdr[7] != 0 {
                emb.l4_csum_off = el4 + l4::UDP_CSUM;
            }
        }
        IPPROTO_TCP => {
            if el4 + l4::TCP_CSUM + 2 <= end {
                emb.l4_csum_off = el4 + l4::TCP_CSUM;
            }
        }
        IPPROTO_ICMP => {
            if !matches!(icmp_kind(hdr[0]), L4Kind::IcmpRequest | L4Kind::IcmpReply) {
                // An error about an error is never sent (RFC 1122).
                return Err(ParseError::Invalid);
            }
            emb.sport_be = u16::from_ne_bytes([hdr[4], hdr[5]]);
            emb.dport_be = emb.sport_be;
            emb.l4_csum_off = el4 + l4::ICMP_CSUM;
        }
        _ => return Err(ParseError::Invalid),
    }
    Ok(emb)
}

/// Rewrites one endpoint of the packet embedded in an ICMP error to
/// `addr`:`port_be`, keeping the embedded IP and L4 checksums and the ICMP checksum
/// consistent, and optionally one outer address (`outer`). The sum over the whole
/// ICMP message is unchanged, so socket-buffer checksum state stays valid too.
#[inline(always)]
pub fn rewrite_icmp_error<B: PacketBufMut + ?Sized>(
    buf: &mut B,
    pkt: &Ipv4Packet,
    emb: &Embedded,
    side: Side,
    addr: [u8; 4],
    port_be: u16,
    outer: Option<(Side, [u8; 4])>,
) -> Option<()> {
    let icmp_off = pkt.l4 + l4::ICMP_CSUM;
    let mut icmp_check = load_u16(buf, icmp_off)?;
    let (addr_off, old_addr, port_off, old_port_be) = match side {
        Side::Source => (
            emb.l3 + ipv4::SRC,
            emb.src,
            emb.l4 + l4::SPORT,
            emb.sport_be,
        ),
        Side::Destination => (
            emb.l3 + ipv4::DST,
            emb.dst,
            emb.l4 + l4::DPORT,
            emb.dport_be,
        ),
    };
    let port_off = if emb.proto == IPPROTO_ICMP {
        emb.l4 + l4::ICMP_ID
    } else {
        port_off
    };
    // Embedded IP header checksum.
    let old_ipc = load_u16(buf, emb.l3 + ipv4::CSUM)?;
    let new_ipc = csum::replace32(old_ipc, old_addr, addr);
    store_u16(buf, emb.l3 + ipv4::CSUM, new_ipc)?;
    icmp_check = csum::replace16(icmp_check, old_ipc, new_ipc);
    // Embedded address and port.
    buf.store::<4>(addr_off, addr)?;
    icmp_check = csum::replace32(icmp_check, old_addr, addr);
    buf.store::<2>(port_off, port_be.to_ne_bytes())?;
    icmp_check = csum::replace16(icmp_check, u16::from_be(old_port_be), u16::from_be(port_be));
    // Embedded L4 checksum, when present.
    if let Some(off) = csum_off(emb.l4_csum_off) {
        let old_c = load_u16(buf, off)?;
        let mut new_c = csum::replace16(old_c, u16::from_be(old_port_be), u16::from_be(port_be));
        if emb.pseudo_header() {
            new_c = csum::replace32(new_c, old_addr, addr);
        }
        if emb.proto == IPPROTO_UDP {
            new_c = csum::udp_nonzero(new_c);
        } else if emb.proto == IPPROTO_ICMP {
            new_c = csum::icmp_nonzero(new_c);
        }
        store_u16(buf, off, new_c)?;
        icmp_check = csum::replace16(icmp_check, old_c, new_c);
    }
    store_u16(buf, icmp_off, csum::icmp_nonzero(icmp_check))?;
    if let Some((outer_side, outer_addr)) = outer {
        let (off, old) = match outer_side {
            Side::Source => (pkt.l3 + ipv4::SRC, pkt.src),
            Side::Destination => (pkt.l3 + ipv4::DST, pkt.dst),
        };
        let check = load_u16(buf, pkt.l3 + ipv4::CSUM)?;
        store_u16(
            buf,
            pkt.l3 + ipv4::CSUM,
            csum::replace32(check, old, outer_addr),
        )?;
        buf.store::<4>(off, outer_addr)?;
    }
    Some(())
}

/// Rewrites one address of the IP header only (later fragments carry no L4 header,
/// so nothing else covers the address), keeping the header checksum right.
#[inline(always)]
pub fn rewrite_address<B: PacketBufMut + ?Sized>(
    buf: &mut B,
    pkt: &Ipv4Packet,
    side: Side,
    addr: [u8; 4],
) -> Option<()> {
    let (off, old) = match side {
        Side::Source => (pkt.l3 + ipv4::SRC, pkt.src),
        Side::Destination => (pkt.l3 + ipv4::DST, pkt.dst),
    };
    let check = load_u16(buf, pkt.l3 + ipv4::CSUM)?;
    store_u16(buf, pkt.l3 + ipv4::CSUM, csum::replace32(check, old, addr))?;
    buf.store::<4>(off, addr)
}

/// Decrements the TTL and updates the IP checksum (routers' duty, RFC 1812); the
/// caller has checked that the TTL is above 1 (a packet that would leave with TTL 0
/// is the kernel's to answer). `None`, the frame untouched, for a TTL of 0, which
/// would otherwise wrap to 255.
#[inline(always)]
pub fn decrement_ttl<B: PacketBufMut + ?Sized>(buf: &mut B, pkt: &Ipv4Packet) -> Option<()> {
    let ttl = pkt.ttl.checked_sub(1)?;
    let old = u16::from_be_bytes([pkt.ttl, pkt.proto]);
    let new = u16::from_be_bytes([ttl, pkt.proto]);
    let check = load_u16(buf, pkt.l3 + ipv4::CSUM)?;
    store_u16(buf, pkt.l3 + ipv4::CSUM, csum::replace16(check, old, new))?;
    buf.store::<1>(pkt.l3 + ipv4::TTL, [ttl])
}

/// Replaces the IP identification (`new_id_be`, network order) and updates the IP
/// checksum.
#[inline(always)]
pub fn rewrite_ip_id<B: PacketBufMut + ?Sized>(
    buf: &mut B,
    pkt: &Ipv4Packet,
    new_id_be: u16,
) -> Option<()> {
    let check = load_u16(buf, pkt.l3 + ipv4::CSUM)?;
    let (old, new) = (u16::from_be(pkt.ip_id_be), u16::from_be(new_id_be));
    store_u16(buf, pkt.l3 + ipv4::CSUM, csum::replace16(check, old, new))?;
    store_u16(buf, pkt.l3 + ipv4::ID, new)
}

/// Clears the DF flag (so a router on the way may fragment the packet) and updates
/// the IP checksum; a packet without DF is left as it is.
#[inline(always)]
pub fn clear_dont_fragment<B: PacketBufMut + ?Sized>(buf: &mut B, pkt: &Ipv4Packet) -> Option<()> {
    if !pkt.dont_fragment {
        return Some(());
    }
    let old = load_u16(buf, pkt.l3 + ipv4::FRAG)?;
    let new = old & !ipv4::DF;
    let check = load_u16(buf, pkt.l3 + ipv4::CSUM)?;
    store_u16(buf, pkt.l3 + ipv4::CSUM, csum::replace16(check, old, new))?;
    store_u16(buf, pkt.l3 + ipv4::FRAG, new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csum::{checksum, pseudo_header_sum};

    /// Builds an Ethernet/IPv4/UDP frame with valid checksums and `opts` IP option bytes.
    fn udp_frame(
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        payload: &[u8],
        opts: usize,
    ) -> [u8; 128] {
        let mut f = [0u8; 128];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        let ihl = 20 + opts;
        let l4_len = 8 + payload.len();
        let tot = ihl + l4_len;
        let ip = &mut f[14..14 + ihl];
        ip[0] = 0x40 | (ihl / 4) as u8;
        ip[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = IPPROTO_UDP;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        for b in &mut ip[20..] {
            *b = 1; // NOP options
        }
        let c = checksum(ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let l4 = 14 + ihl;
        f[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
        f[l4 + 2..l4 + 4].copy_from_slice(&dport.to_be_bytes());
        f[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        f[l4 + 8..l4 + 8 + payload.len()].copy_from_slice(payload);
        let c = checksum(
            &f[l4..l4 + l4_len],
            pseudo_header_sum(src, dst, IPPROTO_UDP, l4_len as u16),
        );
        f[l4 + 6..l4 + 8].copy_from_slice(&csum::udp_nonzero(c).to_be_bytes());
        f
    }

    fn assert_checksums_valid(f: &[u8], pkt: &Ipv4Packet) {
        let ip = &f[pkt.l3..pkt.l4];
        assert_eq!(checksum(ip, 0), 0, "IP header checksum");
        let src = f[pkt.l3 + 12..pkt.l3 + 16].try_into().unwrap();
        let dst = f[pkt.l3 + 16..pkt.l3 + 20].try_into().unwrap();
        let len = pkt.l4_len();
        let sum = pseudo_header_sum(src, dst, pkt.proto, len as u16);
        assert_eq!(checksum(&f[pkt.l4..pkt.l4 + len], sum), 0, "L4 checksum");
    }

    #[test]
    fn parses_udp_behind_ip_options() {
        let f = udp_frame([10, 0, 1, 2], [198, 51, 100, 2], 40000, 7, b"hello", 8);
        let l3 = ipv4_offset(&f[..]).unwrap().unwrap();
        let pkt = parse_ipv4(&f[..], l3).unwrap();
        assert_eq!(pkt.l4, 14 + 28);
        assert_eq!(u16::from_be(pkt.sport_be), 40000);
        assert_eq!(u16::from_be(pkt.dport_be), 7);
        assert_eq!(pkt.frag, Fragment::None);
        assert!(pkt.l4_csum().is_some());
    }

    #[test]
    fn rejects_truncated_and_inconsistent_headers() {
        let f = udp_frame([10, 0, 1, 2], [198, 51, 100, 2], 1, 2, b"x", 0);
        assert_eq!(parse_ipv4(&f[..30], 14), Err(ParseError::Truncated));
        let mut bad = f;
        bad[14] = 0x44; // IHL 4
        assert_eq!(parse_ipv4(&bad[..], 14), Err(ParseError::Invalid));
        let mut bad = f;
        bad[14] = 0x65; // version 6
        assert_eq!(parse_ipv4(&bad[..], 14), Err(ParseError::Invalid));
        let mut bad = f;
        bad[16..18].copy_from_slice(&500u16.to_be_bytes()); // longer than the frame
        assert_eq!(parse_ipv4(&bad[..], 14), Err(ParseError::Truncated));
        let mut bad = f;
        bad[16..18].copy_from_slice(&24u16.to_be_bytes()); // UDP header cut short
        assert_eq!(parse_ipv4(&bad[..], 14), Err(ParseError::Invalid));
    }

    #[test]
    fn source_rewrite_keeps_checksums_valid() {
        for opts in [0, 4, 40] {
            let mut f = udp_frame(
                [10, 0, 1, 2],
                [198, 51, 100, 2],
                40000,
                7,
                b"payload!",
                opts,
            );
            let pkt = parse_ipv4(&f[..], 14).unwrap();
            let rw = Rewrite::new(&pkt, Side::Source, [192, 0, 2, 1], 40002u16.to_be());
            apply_incremental(&mut f[..], &rw).unwrap();
            let after = parse_ipv4(&f[..], 14).unwrap();
            assert_eq!(after.src, [192, 0, 2, 1]);
            assert_eq!(u16::from_be(after.sport_be), 40002);
            assert_checksums_valid(&f, &after);
        }
    }

    #[test]
    fn destination_rewrite_keeps_checksums_valid() {
        let mut f = udp_frame([198, 51, 100, 2], [192, 0, 2, 1], 7, 40002, b"reply", 0);
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        let rw = Rewrite::new(&pkt, Side::Destination, [10, 0, 1, 2], 40000u16.to_be());
        apply_incremental(&mut f[..], &rw).unwrap();
        let after = parse_ipv4(&f[..], 14).unwrap();
        assert_eq!(after.dst, [10, 0, 1, 2]);
        assert_checksums_valid(&f, &after);
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let mut f = udp_frame([10, 0, 1, 2], [198, 51, 100, 2], 5, 6, b"abc", 0);
        f[14 + 20 + 6] = 0;
        f[14 + 20 + 7] = 0;
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        assert_eq!(pkt.l4_csum(), None);
        let rw = Rewrite::new(&pkt, Side::Source, [192, 0, 2, 1], 9u16.to_be());
        apply_incremental(&mut f[..], &rw).unwrap();
        assert_eq!(&f[14 + 26..14 + 28], &[0, 0]);
        assert_eq!(checksum(&f[14..34], 0), 0);
    }

    #[test]
    fn full_recompute_repairs_a_partial_checksum() {
        // A veth frame from a local socket: the checksum field holds only the folded
        // pseudo-header sum.
        let payload = b"odd-length-payload";
        let mut f = udp_frame([10, 0, 1, 2], [198, 51, 100, 2], 40000, 7, payload, 0);
        let l4_len = 8 + payload.len();
        let partial = csum::fold(pseudo_header_sum(
            [10, 0, 1, 2],
            [198, 51, 100, 2],
            IPPROTO_UDP,
            l4_len as u16,
        ));
        f[40..42].copy_from_slice(&partial.to_be_bytes());
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        let rw = Rewrite::new(&pkt, Side::Source, [192, 0, 2, 1], 1234u16.to_be());
        apply_incremental(&mut f[..], &rw).unwrap();
        recompute_l4_checksum(&mut f[..], &pkt).unwrap();
        assert_checksums_valid(&f, &parse_ipv4(&f[..], 14).unwrap());
    }

    #[test]
    fn only_a_pseudo_header_sum_counts_as_partial() {
        let payload = b"odd-length-payload";
        let (src, dst) = ([10, 0, 1, 2], [198, 51, 100, 2]);
        let complete = udp_frame(src, dst, 40000, 7, payload, 0);
        let pkt = parse_ipv4(&complete[..], 14).unwrap();
        assert!(!l4_checksum_is_partial(&complete[..], &pkt));
        let mut partial = complete;
        let l4_len = (8 + payload.len()) as u16;
        let sum = csum::fold(pseudo_header_sum(src, dst, IPPROTO_UDP, l4_len));
        partial[40..42].copy_from_slice(&sum.to_be_bytes());
        assert!(l4_checksum_is_partial(&partial[..], &pkt));
        // A corrupt checksum is neither complete nor partial: it is left corrupt.
        let mut corrupt = complete;
        corrupt[40] ^= 0x5a;
        assert!(!l4_checksum_is_partial(&corrupt[..], &pkt));
    }

    #[test]
    fn corrupt_checksum_stays_corrupt_after_a_rewrite() {
        let mut f = udp_frame([10, 0, 1, 2], [198, 51, 100, 2], 40000, 7, b"data", 0);
        f[14 + 20 + 8] ^= 0x01; // payload bit flip: the checksum no longer matches
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        let rw = Rewrite::new(&pkt, Side::Source, [192, 0, 2, 1], 1234u16.to_be());
        apply_incremental(&mut f[..], &rw).unwrap();
        let after = parse_ipv4(&f[..], 14).unwrap();
        let len = after.l4_len();
        let sum = pseudo_header_sum([192, 0, 2, 1], [198, 51, 100, 2], IPPROTO_UDP, len as u16);
        assert_ne!(
            checksum(&f[after.l4..after.l4 + len], sum),
            0,
            "still corrupt"
        );
    }

    #[test]
    fn range_sum_matches_the_slice_checksum() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
        for off in [0, 1, 3, 8] {
            for len in 0..150 {
                let sum = sum_range::<[u8], 160>(&data[..], off, len).unwrap();
                assert_eq!(
                    !csum::fold(sum),
                    checksum(&data[off..off + len], 0),
                    "off {off} len {len}"
                );
            }
        }
        assert_eq!(sum_range::<[u8], 160>(&data[..], 0, 161), None, "past MAX");
        assert_eq!(
            sum_range::<[u8], 400>(&data[..], 100, 101),
            None,
            "past the end"
        );
    }

    #[test]
    fn ttl_decrement_keeps_ip_checksum_valid() {
        let mut f = udp_frame([10, 0, 1, 2], [198, 51, 100, 2], 1, 2, b"", 0);
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        decrement_ttl(&mut f[..], &pkt).unwrap();
        assert_eq!(f[14 + 8], 63);
        assert_eq!(checksum(&f[14..34], 0), 0);
    }

    #[test]
    fn ip_id_rewrite_keeps_ip_checksum_valid() {
        let mut f = udp_frame([10, 0, 1, 2], [198, 51, 100, 2], 1, 2, b"", 0);
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        rewrite_ip_id(&mut f[..], &pkt, 0xbeefu16.to_be()).unwrap();
        assert_eq!(f[14 + 4..14 + 6], [0xbe, 0xef]);
        assert_eq!(parse_ipv4(&f[..], 14).unwrap().ip_id_be, 0xbeefu16.to_be());
        assert_eq!(checksum(&f[14..34], 0), 0);
    }

    #[test]
    fn clearing_df_keeps_the_ip_checksum_valid_and_the_rest_of_the_word() {
        let mut f = udp_frame([10, 0, 1, 2], [198, 51, 100, 2], 1, 2, b"", 0);
        f[14 + 6..14 + 8].copy_from_slice(&ipv4::DF.to_be_bytes());
        f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
        let c = checksum(&f[14..34], 0);
        f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        assert!(pkt.dont_fragment);
        clear_dont_fragment(&mut f[..], &pkt).unwrap();
        let after = parse_ipv4(&f[..], 14).unwrap();
        assert!(!after.dont_fragment);
        assert_eq!(after.frag, Fragment::None);
        assert_eq!(checksum(&f[14..34], 0), 0);
        let before = f;
        clear_dont_fragment(&mut f[..], &after).unwrap();
        assert_eq!(f, before, "nothing to clear");
    }

    #[test]
    fn later_fragments_have_no_ports() {
        let mut f = udp_frame([10, 0, 1, 2], [198, 51, 100, 2], 1, 2, b"abcdefgh", 0);
        f[14 + 6..14 + 8].copy_from_slice(&3u16.to_be_bytes());
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        assert_eq!(pkt.frag, Fragment::Later);
        assert!(!pkt.has_ports());
        assert_eq!(pkt.l4_csum(), None);
    }

    /// Ethernet/IPv4/ICMP frame: `icmp_type`, identifier, then `body`.
    fn icmp_frame(
        src: [u8; 4],
        dst: [u8; 4],
        icmp_type: u8,
        rest: [u8; 4],
        body: &[u8],
    ) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + body.len()];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        let tot = 20 + 8 + body.len();
        f[14] = 0x45;
        f[16..18].copy_from_slice(&(tot as u16).to_be_bytes());
        f[22] = 64;
        f[23] = IPPROTO_ICMP;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        let c = checksum(&f[14..34], 0);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34] = icmp_type;
        f[38..42].copy_from_slice(&rest);
        f[42..].copy_from_slice(body);
        let c = checksum(&f[34..], 0);
        f[36..38].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn assert_icmp_valid(f: &[u8]) {
        assert_eq!(checksum(&f[14..34], 0), 0, "outer IP checksum");
        assert_eq!(checksum(&f[34..], 0), 0, "ICMP checksum");
    }

    #[test]
    fn echo_request_is_a_query_mapped_by_identifier() {
        // rfc5508 REQ-1a
        let mut f = icmp_frame(
            [10, 0, 1, 2],
            [198, 51, 100, 2],
            icmp::ECHO_REQUEST,
            [0x12, 0x34, 0, 1],
            b"ping",
        );
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        assert_eq!(pkt.kind, L4Kind::IcmpRequest);
        assert!(pkt.has_ports());
        assert_eq!(u16::from_be(pkt.sport_be), 0x1234);
        let rw = Rewrite::new(&pkt, Side::Source, [192, 0, 2, 1], 0x4321u16.to_be());
        apply_incremental(&mut f[..], &rw).unwrap();
        assert_eq!(&f[38..40], &[0x43, 0x21]);
        assert_eq!(&f[26..30], &[192, 0, 2, 1]);
        assert_icmp_valid(&f);
    }

    /// An ICMP port unreachable from `router` about the UDP datagram `inner`.
    fn unreachable_about(router: [u8; 4], to: [u8; 4], inner: &[u8]) -> Vec<u8> {
        icmp_frame(router, to, icmp::DEST_UNREACH, [0; 4], inner)
    }

    #[test]
    fn inbound_error_is_rewritten_to_the_internal_endpoint() {
        // rfc5508 REQ-3, REQ-4; rfc4787 REQ-12b: the datagram 192.0.2.1:40002 ->
        // 198.51.100.2:7 (as it left the NAT, with IP options) comes back inside an
        // error; it is rewritten to 10.0.1.2:40000 with every checksum kept right.
        let inner = udp_frame([192, 0, 2, 1], [198, 51, 100, 2], 40002, 7, b"payload!", 4);
        let inner = &inner[14..14 + 24 + 16];
        let mut f = unreachable_about([203, 0, 113, 1], [192, 0, 2, 1], inner);
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        assert_eq!(pkt.kind, L4Kind::IcmpError);
        let emb = parse_icmp_error(&f[..], &pkt).unwrap();
        assert_eq!(emb.l4, emb.l3 + 24, "embedded options walked past");
        assert_eq!(
            (emb.src, u16::from_be(emb.sport_be)),
            ([192, 0, 2, 1], 40002)
        );
        rewrite_icmp_error(
            &mut f[..],
            &pkt,
            &emb,
            Side::Source,
            [10, 0, 1, 2],
            40000u16.to_be(),
            Some((Side::Destination, [10, 0, 1, 2])),
        )
        .unwrap();
        assert_icmp_valid(&f);
        let emb_ip = &f[emb.l3..emb.l4];
        assert_eq!(checksum(emb_ip, 0), 0, "embedded IP checksum");
        assert_eq!(&emb_ip[12..16], &[10, 0, 1, 2]);
        assert_eq!(&f[emb.l4..emb.l4 + 2], &40000u16.to_be_bytes());
        assert_eq!(&f[30..34], &[10, 0, 1, 2]);
        // The embedded UDP checksum is complete again for the rewritten datagram.
        let udp = &f[emb.l4..];
        let sum = pseudo_header_sum(
            [10, 0, 1, 2],
            [198, 51, 100, 2],
            IPPROTO_UDP,
            udp.len() as u16,
        );
        assert_eq!(checksum(udp, sum), 0);
    }

    #[test]
    fn errors_with_bad_checksums_are_invalid() {
        // rfc5508 REQ-3
        let inner = udp_frame([192, 0, 2, 1], [198, 51, 100, 2], 1, 2, b"x", 0);
        let good = unreachable_about([203, 0, 113, 1], [192, 0, 2, 1], &inner[14..14 + 29]);
        let mut bad_icmp = good.clone();
        bad_icmp[36] ^= 0xff;
        let pkt = parse_ipv4(&bad_icmp[..], 14).unwrap();
        assert_eq!(
            parse_icmp_error(&bad_icmp[..], &pkt),
            Err(ParseError::Invalid)
        );
        // A corrupted embedded IP header, with the ICMP checksum made right again.
        let mut bad_inner = good.clone();
        bad_inner[42 + 8] ^= 0x01; // embedded TTL
        bad_inner[36] = 0;
        bad_inner[37] = 0;
        let c = checksum(&bad_inner[34..], 0);
        bad_inner[36..38].copy_from_slice(&c.to_be_bytes());
        let pkt = parse_ipv4(&bad_inner[..], 14).unwrap();
        assert_eq!(
            parse_icmp_error(&bad_inner[..], &pkt),
            Err(ParseError::Invalid)
        );
        let pkt = parse_ipv4(&good[..], 14).unwrap();
        assert!(parse_icmp_error(&good[..], &pkt).is_ok());
    }

    #[test]
    fn error_about_an_echo_request_maps_by_identifier() {
        let inner = icmp_frame(
            [192, 0, 2, 1],
            [198, 51, 100, 2],
            icmp::ECHO_REQUEST,
            [0xab, 0xcd, 0, 7],
            b"x",
        );
        let mut f = icmp_frame(
            [203, 0, 113, 1],
            [192, 0, 2, 1],
            icmp::TIME_EXCEEDED,
            [0; 4],
            &inner[14..],
        );
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        let emb = parse_icmp_error(&f[..], &pkt).unwrap();
        assert_eq!(u16::from_be(emb.sport_be), 0xabcd);
        rewrite_icmp_error(
            &mut f[..],
            &pkt,
            &emb,
            Side::Source,
            [10, 0, 1, 2],
            0x1111u16.to_be(),
            None,
        )
        .unwrap();
        assert_icmp_valid(&f);
        assert_eq!(checksum(&f[emb.l4..], 0), 0, "embedded ICMP checksum");
        assert_eq!(&f[emb.l4 + 4..emb.l4 + 6], &[0x11, 0x11]);
    }

    /// Sets the IPv4 total length of the frame's datagram and makes its IP header
    /// checksum right again, leaving the bytes after it as the frame's padding.
    fn set_tot_len(f: &mut [u8], tot: usize) {
        f[16..18].copy_from_slice(&(tot as u16).to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&f[14..34], 0);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn l4_headers_past_the_datagram_are_invalid() {
        // Found by fuzz/packet_parse. A frame may hold more than its datagram
        // (Ethernet pads to 60 bytes); an L4 header that runs past the total length
        // is malformed, never read from the padding.
        let mut echo = icmp_frame(
            [10, 0, 1, 2],
            [198, 51, 100, 2],
            icmp::ECHO_REQUEST,
            [0x12, 0x34, 0, 1],
            b"ping",
        );
        set_tot_len(&mut echo, 20 + 4);
        assert_eq!(parse_ipv4(&echo[..], 14), Err(ParseError::Invalid));
        // First fragments too: ports are never taken from past the fragment.
        let mut udp = udp_frame([10, 0, 1, 2], [198, 51, 100, 2], 1, 2, b"abcdefgh", 0);
        udp[20..22].copy_from_slice(&ipv4::MF.to_be_bytes());
        set_tot_len(&mut udp, 20 + 4);
        assert_eq!(parse_ipv4(&udp[..], 14), Err(ParseError::Invalid));
        let mut tcp = udp;
        tcp[23] = IPPROTO_TCP;
        set_tot_len(&mut tcp, 20 + 16);
        assert_eq!(parse_ipv4(&tcp[..], 14), Err(ParseError::Invalid));
        set_tot_len(&mut udp, 20 + 8);
        assert_eq!(parse_ipv4(&udp[..], 14).unwrap().frag, Fragment::First);
    }

    #[test]
    fn an_embedded_packet_past_the_icmp_message_is_truncated() {
        // Found by fuzz/icmp_error: the error's datagram ended one byte into the
        // embedded L4 header, the ports lay in the frame's padding, and the rewrite
        // wrote them there and broke the ICMP checksum.
        let inner = udp_frame([192, 0, 2, 1], [198, 51, 100, 2], 40002, 7, b"payload!", 0);
        let whole = unreachable_about([203, 0, 113, 1], [192, 0, 2, 1], &inner[14..14 + 36]);
        for embedded in [20 + 1, 12] {
            let mut f = whole.clone();
            let tot = 20 + 8 + embedded;
            set_tot_len(&mut f, tot);
            // The ICMP checksum right for the shortened message.
            f[36..38].copy_from_slice(&[0, 0]);
            let c = checksum(&f[34..14 + tot], 0);
            f[36..38].copy_from_slice(&c.to_be_bytes());
            let pkt = parse_ipv4(&f[..], 14).unwrap();
            assert_eq!(pkt.kind, L4Kind::IcmpError);
            assert_eq!(
                parse_icmp_error(&f[..], &pkt),
                Err(ParseError::Truncated),
                "{embedded} bytes embedded"
            );
        }
    }

    #[test]
    fn only_udp_and_tcp_checksums_are_recomputed() {
        // Found by fuzz/packet_rewrite: an ICMP checksum was "recomputed" with a
        // pseudo-header it does not cover.
        let f = icmp_frame(
            [10, 0, 1, 2],
            [198, 51, 100, 2],
            icmp::ECHO_REQUEST,
            [0x12, 0x34, 0, 1],
            b"ping",
        );
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        let mut g = f.clone();
        assert_eq!(recompute_l4_checksum(&mut g[..], &pkt), None);
        assert_eq!(g, f);
    }

    #[test]
    fn a_ttl_of_zero_is_not_decremented() {
        // Found by fuzz/packet_rewrite: TTL 0 overflowed (and would wrap to 255 in
        // the kernel, where overflow is not checked).
        let mut f = udp_frame([10, 0, 1, 2], [198, 51, 100, 2], 1, 2, b"", 0);
        f[14 + 8] = 0;
        set_tot_len(&mut f, 20 + 8);
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        let before = f;
        assert_eq!(decrement_ttl(&mut f[..], &pkt), None);
        assert_eq!(f, before);
    }

    #[test]
    fn an_all_zero_echo_reply_keeps_a_valid_checksum() {
        // Found by fuzz/packet_rewrite: an echo reply whose identifier, sequence
        // number and payload are zero sums to zero, so only a checksum of 0xffff
        // verifies; RFC 1624 eqn. 3 alone turned it into 0x0000 (even when the
        // identifier stayed the same).
        let mut f = icmp_frame(
            [198, 51, 100, 2],
            [192, 0, 2, 1],
            icmp::ECHO_REPLY,
            [0; 4],
            b"",
        );
        assert_eq!(&f[36..38], &[0xff, 0xff]);
        let pkt = parse_ipv4(&f[..], 14).unwrap();
        let rw = Rewrite::new(&pkt, Side::Destination, [10, 0, 1, 2], 0);
        apply_incremental(&mut f[..], &rw).unwrap();
        assert_eq!(&f[36..38], &[0xff, 0xff]);
        assert_icmp_valid(&f);
    }
}
