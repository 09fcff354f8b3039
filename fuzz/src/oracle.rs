//! The Internet checksum from its definition (RFC 1071), independent of
//! `natgw_common::csum`: the one's-complement sum of 16-bit words is the plain integer
//! sum of the words taken modulo 0xffff (2^16 ≡ 1), with 0x0000 and 0xffff the two
//! representations of zero. Nothing here folds carries the way the code under test
//! does, so a shared mistake is unlikely.

/// Plain integer sum of `data` as big-endian 16-bit words, an odd last byte padded
/// with a zero byte (RFC 1071 §4.1). No wrap-around: a `u64` holds it for any frame.
#[must_use]
pub fn word_sum(data: &[u8]) -> u64 {
    data.chunks(2)
        .map(|w| (u64::from(w[0]) << 8) | u64::from(w.get(1).copied().unwrap_or(0)))
        .sum()
}

/// [`word_sum`] of the IPv4 pseudo-header of a UDP/TCP segment of `l4_len` bytes
/// (RFC 768, RFC 793): source, destination, zero, protocol, length.
#[must_use]
pub fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: usize) -> u64 {
    let len = u16::try_from(l4_len).expect("an IPv4 segment is shorter than 64 KiB");
    let mut header = [0u8; 12];
    header[..4].copy_from_slice(&src);
    header[4..8].copy_from_slice(&dst);
    header[9] = proto;
    header[10..].copy_from_slice(&len.to_be_bytes());
    word_sum(&header)
}

/// The one's-complement value of a sum: its residue modulo 0xffff. Two sums with the
/// same residue are the same one's-complement number (0x0000 and 0xffff are both 0).
#[must_use]
pub fn residue(sum: u64) -> u64 {
    sum % 0xffff
}

/// Whether data whose words (checksum field included) sum to `sum` passes a
/// receiver's check: the one's-complement sum is "negative zero", 0xffff once folded.
/// A sum of exactly 0 (every word zero) folds to 0x0000 and fails.
#[must_use]
pub fn verifies(sum: u64) -> bool {
    sum != 0 && residue(sum) == 0
}

/// The checksum a sender stores for data (checksum field zero) summing to `sum`: the
/// complement of the folded sum. The folded sum is the value in 1..=0xffff with the
/// residue of `sum` (0 only for a sum of 0), so the checksum is 0xffff minus it.
#[must_use]
pub fn checksum_for(sum: u64) -> u16 {
    let folded = if sum == 0 { 0 } else { (sum - 1) % 0xffff + 1 };
    u16::try_from(0xffff - folded).expect("folded sum is at most 0xffff")
}

/// The folded (not complemented) sum: what Linux leaves in the checksum field of a
/// `CHECKSUM_PARTIAL` segment, the pseudo-header sum alone.
#[must_use]
pub fn folded(sum: u64) -> u16 {
    !checksum_for(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071 §3's example words: 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(folded(word_sum(&data)), 0xddf2);
        assert_eq!(checksum_for(word_sum(&data)), !0xddf2);
    }

    #[test]
    fn a_stored_checksum_verifies_and_all_zero_data_needs_all_ones() {
        let mut data = [0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0, 0, 0x40, 0x01, 0, 0];
        let c = checksum_for(word_sum(&data));
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(verifies(word_sum(&data)));
        data[10] ^= 1;
        assert!(!verifies(word_sum(&data)));
        // All-zero data: only 0xffff verifies, 0x0000 does not.
        assert_eq!(checksum_for(0), 0xffff);
        assert!(verifies(0xffff));
        assert!(!verifies(0));
        // Data summing to "negative zero": 0x0000 and 0xffff both verify.
        assert_eq!(checksum_for(0xffff), 0);
        assert!(verifies(0xffff) && verifies(0xffff + 0xffff));
    }

    #[test]
    fn pseudo_header_is_twelve_bytes_of_words() {
        let sum = pseudo_sum([10, 0, 1, 2], [198, 51, 100, 2], 17, 12);
        assert_eq!(sum, 0x0a00 + 0x0102 + 0xc633 + 0x6402 + 17 + 12);
    }
}
