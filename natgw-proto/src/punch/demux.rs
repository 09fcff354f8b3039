//! One port, two protocols: the rendezvous answers STUN Binding requests (RFC 8489) on
//! the port it speaks the punch protocol on, so a peer learns its public endpoint from
//! the very server it registers with. This module tells the two apart, on a datagram
//! or on a TCP stream.
//!
//! The first byte decides, as RFC 7983 §7 does for STUN among other protocols on one
//! port: a STUN message starts with two zero bits (RFC 8489 §5, first byte 0..=63);
//! every punch message starts with 'N' (0x4E, top bits 01, [`wire::MAGIC`]). Nothing
//! can be both. Bytes that are neither go to the punch engine, which counts them as
//! malformed.
//!
//! Over TCP, STUN messages are framed by their own length field (RFC 8489 §6.2.2: no
//! extra framing) and punch messages by theirs ([`wire::frame_len`]); natgw's stream
//! reader reads whichever comes next.

use std::fmt;

use super::wire;
use crate::stun::wire as stun;

/// Longest STUN message accepted on a TCP stream. A Binding request or response is
/// well under 200 bytes; the bound keeps a stranger from making us buffer 64 KiB.
pub const MAX_STUN_FRAME: usize = 1024;

/// What a message (its first byte) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// STUN: the first two bits are zero.
    Stun,
    /// The punch protocol: starts with 'N'.
    Punch,
    /// Neither (or empty): left to the punch engine, which counts it as malformed.
    Other,
}

/// Which protocol `bytes` (a datagram, or the start of a frame) belongs to.
#[must_use]
pub fn classify(bytes: &[u8]) -> Protocol {
    match bytes.first() {
        Some(b) if b & 0xc0 == 0 => Protocol::Stun,
        Some(&b) if b == wire::MAGIC[0] => Protocol::Punch,
        _ => Protocol::Other,
    }
}

/// One message read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A punch-protocol message (header and body).
    Punch(Vec<u8>),
    /// A STUN message (header and attributes).
    Stun(Vec<u8>),
}

/// Why a STUN header cannot frame a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StunFrameError {
    /// Fewer than 20 bytes.
    Truncated,
    /// The length field is not a multiple of 4 (RFC 8489 §5).
    BadLength,
    /// Longer than [`MAX_STUN_FRAME`].
    TooLong,
}

impl fmt::Display for StunFrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("STUN header truncated"),
            Self::BadLength => f.write_str("STUN length not a multiple of 4"),
            Self::TooLong => write!(f, "STUN message longer than {MAX_STUN_FRAME} bytes"),
        }
    }
}

impl std::error::Error for StunFrameError {}

/// The total length of the STUN message whose 20-byte header starts `header`.
///
/// # Errors
/// A short header, a length that is not a multiple of 4, or a message longer than
/// [`MAX_STUN_FRAME`].
pub fn stun_frame_len(header: &[u8]) -> Result<usize, StunFrameError> {
    if header.len() < stun::HEADER_LEN {
        return Err(StunFrameError::Truncated);
    }
    let length = usize::from(stun::Packet::new_unchecked(header).message_length());
    if length % 4 != 0 {
        return Err(StunFrameError::BadLength);
    }
    let total = stun::HEADER_LEN + length;
    if total > MAX_STUN_FRAME {
        return Err(StunFrameError::TooLong);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::super::wire::{Message, PeerId, Repr};
    use super::*;
    use crate::stun::client::binding_request;
    use crate::stun::wire::ChangeRequest;

    fn unknown_peer() -> Vec<u8> {
        Repr {
            transaction: 9,
            message: Message::UnknownPeer(PeerId::new("b").unwrap()),
        }
        .to_bytes()
    }

    #[test]
    fn the_first_byte_tells_stun_from_punch_messages() {
        // A Binding request (type 0x0001) and a success response (0x0101).
        let request = binding_request([7; 12], ChangeRequest::default());
        assert_eq!(request[0], 0x00);
        assert_eq!(classify(&request), Protocol::Stun);
        assert_eq!(classify(&[0x01, 0x01]), Protocol::Stun);
        // Every punch message starts with 'N' = 0b0100_1110: never STUN's 0b00.
        assert_eq!(wire::MAGIC[0] & 0xc0, 0x40);
        assert_eq!(classify(&unknown_peer()), Protocol::Punch);
        // Everything with a first byte from 64 up that is not 'N' is neither.
        for b in 0x40..=0xff_u8 {
            let want = if b == b'N' {
                Protocol::Punch
            } else {
                Protocol::Other
            };
            assert_eq!(classify(&[b]), want, "{b:#04x}");
        }
        for b in 0..0x40_u8 {
            assert_eq!(classify(&[b]), Protocol::Stun, "{b:#04x}");
        }
        assert_eq!(classify(&[]), Protocol::Other);
    }

    #[test]
    fn stun_headers_frame_a_stream_within_bounds() {
        let request = binding_request([7; 12], ChangeRequest::default());
        assert_eq!(stun_frame_len(&request), Ok(request.len()));
        assert_eq!(
            stun_frame_len(&request[..19]),
            Err(StunFrameError::Truncated)
        );
        let mut odd = request.clone();
        odd[3] = 6;
        assert_eq!(stun_frame_len(&odd), Err(StunFrameError::BadLength));
        let mut long = request;
        long[2] = 0x04; // 1024 bytes of attributes
        long[3] = 0;
        assert_eq!(stun_frame_len(&long), Err(StunFrameError::TooLong));
    }
}
