//! Fuzzes natgw-common's checksum arithmetic (`natgw_common::csum`) against this
//! crate's RFC 1071 oracle:
//!
//! - `checksum(data, initial)` is the complement of the folded sum, exactly;
//! - `fold` keeps the one's-complement value, fits 16 bits, and is 0 only for 0;
//! - `pseudo_header_sum` is the sum of the 12-byte pseudo-header, exactly;
//! - `replace16`/`replace32` (RFC 1624 eqn. 3) give a checksum with the same
//!   one's-complement value as recomputing from scratch, which verifies — but for
//!   data that became all zero, where eqn. 3 gives 0x0000 and only 0xffff verifies
//!   (no IPv4 header, UDP or TCP segment is all zero, their pseudo-header included;
//!   an ICMP echo reply can be) — and return 0xffff only when given 0xffff;
//! - `udp_nonzero` and `icmp_nonzero` map 0x0000 to 0xffff and nothing else.
//!
//! Input: `[initial: 4][field offset: 2][new value: 4][data]`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use natgw_common::csum::{
    checksum, fold, icmp_nonzero, pseudo_header_sum, replace16, replace32, udp_nonzero,
};
use natgw_fuzz::oracle::{checksum_for, pseudo_sum, residue, verifies, word_sum};

fuzz_target!(|input: &[u8]| {
    let Some((head, data)) = input.split_first_chunk::<10>() else {
        return;
    };
    let initial = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let at = usize::from(u16::from_be_bytes([head[4], head[5]]));
    let new = [head[6], head[7], head[8], head[9]];

    assert_eq!(
        checksum(data, initial),
        checksum_for(u64::from(initial) + word_sum(data)),
        "checksum"
    );

    for x in [initial, u32::from_be_bytes(new), u32::MAX, 0xffff, 0x1_0000] {
        let f = fold(x);
        assert_eq!(residue(u64::from(f)), residue(u64::from(x)), "fold({x:#x})");
        assert_eq!(f == 0, x == 0, "fold({x:#x}) = {f:#x}");
    }

    let (src, dst) = ([head[0], head[1], head[2], head[3]], new);
    let proto = head[4];
    let len = u16::from_be_bytes([head[5], head[6]]);
    assert_eq!(
        u64::from(pseudo_header_sum(src, dst, proto, len)),
        pseudo_sum(src, dst, proto, usize::from(len))
    );

    let c = u16::from_be_bytes([head[0], head[1]]);
    for nonzero in [udp_nonzero, icmp_nonzero] {
        assert_eq!(nonzero(c), if c == 0 { 0xffff } else { c });
    }

    // Incremental updates of a 16-bit and a 32-bit field of `data` (padded to even
    // length), its checksum stored at the front.
    let mut region = data.to_vec();
    region.resize(data.len().max(8).next_multiple_of(2), 0);
    region[0] = 0;
    region[1] = 0;
    let c0 = checksum(&region, 0);
    region[..2].copy_from_slice(&c0.to_be_bytes());
    let words = region.len() / 2;
    let w = 1 + at % (words - 1);
    let old16 = u16::from_be_bytes([region[2 * w], region[2 * w + 1]]);
    let new16 = u16::from_be_bytes([new[0], new[1]]);
    let c1 = replace16(c0, old16, new16);
    let mut after = region.clone();
    after[2 * w..2 * w + 2].copy_from_slice(&new16.to_be_bytes());
    assert_updated(&mut after, c0, c1, "replace16");

    if words >= 3 {
        let w = 1 + at % (words - 2);
        let old32: [u8; 4] = region[2 * w..2 * w + 4].try_into().expect("4 bytes");
        let c2 = replace32(c0, old32, new);
        let mut after = region.clone();
        after[2 * w..2 * w + 4].copy_from_slice(&new);
        assert_updated(&mut after, c0, c2, "replace32");
    }
});

/// `data` (checksum at the front, still `c0`) after a field changed, and `c1` the
/// incrementally updated checksum.
fn assert_updated(data: &mut [u8], c0: u16, c1: u16, op: &str) {
    data[..2].copy_from_slice(&[0, 0]);
    let sum = word_sum(data);
    let fresh = checksum_for(sum);
    assert_eq!(
        residue(u64::from(c1)),
        residue(u64::from(fresh)),
        "{op}: {c1:#x}, recomputed {fresh:#x}"
    );
    if c1 == 0xffff {
        assert_eq!(c0, 0xffff, "{op}: 0xffff from {c0:#x}");
    }
    let all_zero = sum == 0;
    assert_eq!(
        verifies(sum + u64::from(c1)),
        !(all_zero && c1 == 0),
        "{op}: {c1:#x} over data summing to {sum:#x}"
    );
}
