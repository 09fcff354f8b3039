//! Internet checksum arithmetic (RFC 1071) and incremental updates (RFC 1624).
//!
//! All values are 16-bit words as they read on the wire (`u16::from_be_bytes`).
//! Pure functions: the eBPF programs and the unit tests run the same code.

/// Folds a 32-bit one's-complement accumulator into 16 bits (not complemented).
#[inline(always)]
#[must_use]
pub const fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 equation 3: the checksum after one 16-bit word of the covered data
/// changed from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
#[inline(always)]
#[must_use]
pub const fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold(!check as u32 + !old as u32 + new as u32)
}

/// [`replace16`] for a 32-bit field (an IPv4 address), given as wire octets.
#[inline(always)]
#[must_use]
pub const fn replace32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let check = replace16(
        check,
        u16::from_be_bytes([old[0], old[1]]),
        u16::from_be_bytes([new[0], new[1]]),
    );
    replace16(
        check,
        u16::from_be_bytes([old[2], old[3]]),
        u16::from_be_bytes([new[2], new[3]]),
    )
}

/// A UDP checksum of zero means "no checksum" (RFC 768): a computed zero is sent as
/// all ones instead.
#[inline(always)]
#[must_use]
pub const fn udp_nonzero(check: u16) -> u16 {
    if check == 0 {
        0xffff
    } else {
        check
    }
}

/// An incrementally updated ICMP checksum, given as all ones when it came out as
/// zero. RFC 1624 eqn. 3 ([`replace16`]) never yields 0xffff from a real update, but
/// over data that is all zero — an ICMP echo reply whose identifier, sequence number
/// and payload are zero; ICMP has no pseudo-header to make it otherwise — 0xffff is
/// the only checksum that verifies, and wherever 0x0000 verifies 0xffff does too
/// (both are zero in one's complement). The same mapping as [`udp_nonzero`], for
/// another reason.
#[inline(always)]
#[must_use]
pub const fn icmp_nonzero(check: u16) -> u16 {
    udp_nonzero(check)
}

/// One's-complement sum (unfolded) of the IPv4 pseudo-header of a TCP/UDP segment.
#[inline(always)]
#[must_use]
pub const fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u32 {
    u16::from_be_bytes([src[0], src[1]]) as u32
        + u16::from_be_bytes([src[2], src[3]]) as u32
        + u16::from_be_bytes([dst[0], dst[1]]) as u32
        + u16::from_be_bytes([dst[2], dst[3]]) as u32
        + proto as u32
        + l4_len as u32
}

/// Checksum (complemented) of `data` with an initial unfolded sum, as a slice
/// computation for tests and user space.
#[must_use]
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = u64::from(initial);
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real IPv4 header (RFC 1071 style example), checksum field 0xb861.
    const IP_HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn full_checksum_of_valid_header_is_zero() {
        assert_eq!(checksum(&IP_HDR, 0), 0);
    }

    #[test]
    fn incremental_address_update_matches_recomputation() {
        let mut hdr = IP_HDR;
        let old = [hdr[12], hdr[13], hdr[14], hdr[15]];
        let new = [192, 0, 2, 1];
        let check = u16::from_be_bytes([hdr[10], hdr[11]]);
        let updated = replace32(check, old, new);
        hdr[12..16].copy_from_slice(&new);
        hdr[10..12].copy_from_slice(&updated.to_be_bytes());
        assert_eq!(checksum(&hdr, 0), 0);
        hdr[10] = 0;
        hdr[11] = 0;
        assert_eq!(checksum(&hdr, 0), updated);
    }

    #[test]
    fn incremental_update_of_every_word_value_stays_valid() {
        // Sweep a port-sized field through many values, including 0 and 0xffff,
        // checking RFC 1624's edge cases against full recomputation.
        let mut data = [0x12u8, 0x34, 0x00, 0x00, 0xab, 0xcd, 0xff, 0xff];
        let mut check = checksum(&data, 0);
        for v in (0..=0xffffu32).step_by(257).chain([0, 0xffff, 1, 0xfffe]) {
            let old = u16::from_be_bytes([data[2], data[3]]);
            let new = v as u16;
            check = replace16(check, old, new);
            data[2..4].copy_from_slice(&new.to_be_bytes());
            let expect = checksum(&data, 0);
            // 0x0000 and 0xffff are the same value in one's complement.
            assert!(
                check == expect
                    || (check == 0xffff && expect == 0)
                    || (check == 0 && expect == 0xffff),
                "v={v:#x}"
            );
        }
    }

    #[test]
    fn pseudo_header_matches_byte_sum() {
        let src = [10, 0, 1, 2];
        let dst = [198, 51, 100, 2];
        let bytes = [10, 0, 1, 2, 198, 51, 100, 2, 0, 17, 0, 12];
        assert_eq!(
            fold(pseudo_header_sum(src, dst, 17, 12)),
            !checksum(&bytes, 0)
        );
    }
}
