//! What every codec here shares, as smoltcp's `wire` module shares it: fields are byte
//! ranges of a message ([`Field`]), multi-byte numbers are big-endian, and some
//! formats pad to 32-bit words.
//!
//! Each format keeps its own error type: its errors map to its own result codes
//! (PCP's MALFORMED_REQUEST vs UNSUPP_OPCODE, STUN's 400 vs a silent drop), which one
//! shared error could not say.

use std::net::Ipv6Addr;

/// A field: a byte range of a message.
pub type Field = core::ops::Range<usize>;

/// The 16-bit big-endian number at `f` of `buf` (`f` must be 2 bytes inside it).
#[must_use]
pub fn get_u16(buf: &[u8], f: Field) -> u16 {
    let mut b = [0; 2];
    b.copy_from_slice(&buf[f]);
    u16::from_be_bytes(b)
}

/// The 32-bit big-endian number at `f` of `buf` (`f` must be 4 bytes inside it).
#[must_use]
pub fn get_u32(buf: &[u8], f: Field) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[f]);
    u32::from_be_bytes(b)
}

/// The IPv6 address (or IPv4-mapped one) at `f` of `buf` (16 bytes).
#[must_use]
pub fn get_ipv6(buf: &[u8], f: Field) -> Ipv6Addr {
    let mut b = [0; 16];
    b.copy_from_slice(&buf[f]);
    Ipv6Addr::from(b)
}

/// Writes `v` big-endian at `f` of `buf` (2 bytes).
pub fn set_u16(buf: &mut [u8], f: Field, v: u16) {
    buf[f].copy_from_slice(&v.to_be_bytes());
}

/// Writes `v` big-endian at `f` of `buf` (4 bytes).
pub fn set_u32(buf: &mut [u8], f: Field, v: u32) {
    buf[f].copy_from_slice(&v.to_be_bytes());
}

/// `len` rounded up to a multiple of 4 (32-bit word padding).
#[must_use]
pub const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_big_endian() {
        let mut buf = [0u8; 8];
        set_u16(&mut buf, 0..2, 0x1234);
        set_u32(&mut buf, 2..6, 0xdead_beef);
        assert_eq!(buf[..6], [0x12, 0x34, 0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(get_u16(&buf, 0..2), 0x1234);
        assert_eq!(get_u32(&buf, 2..6), 0xdead_beef);
        assert_eq!([padded(0), padded(1), padded(4), padded(5)], [0, 4, 4, 8]);
    }
}
