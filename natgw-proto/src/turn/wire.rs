//! TURN framing (RFC 8656): the methods and error codes TURN adds to STUN, ChannelData
//! messages, and the framer that cuts a TCP byte stream into STUN messages and
//! ChannelData frames.
//!
//! TURN messages are STUN messages: [`crate::stun::wire`] parses and emits them,
//! TURN attributes included (`Attribute::XorPeerAddress`, `Attribute::Lifetime`, ...).
//! What is TURN's own is here:
//!
//! ```text
//!  ChannelData (RFC 8656 §12.4)
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Channel Number        |            Length             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |              Application Data (Length bytes)                  |
//! |                       +-------------------------------+       |
//! |                       | padding to 4 bytes over TCP    |       |
//! ```
//!
//! The first two bits tell the two apart on a shared port: `00` STUN, `01` ChannelData
//! (channels 0x4000..=0x7FFF, see [`CHANNEL_MAX`]).

use std::fmt;

use crate::stun::wire::{padded, HEADER_LEN};

/// Allocate (RFC 8656 §7.2): request and responses.
pub const METHOD_ALLOCATE: u16 = 0x003;
/// Refresh (RFC 8656 §7.4).
pub const METHOD_REFRESH: u16 = 0x004;
/// Send (RFC 8656 §11.2): an indication from the client.
pub const METHOD_SEND: u16 = 0x006;
/// Data (RFC 8656 §11.4): an indication to the client.
pub const METHOD_DATA: u16 = 0x007;
/// CreatePermission (RFC 8656 §9.2).
pub const METHOD_CREATE_PERMISSION: u16 = 0x008;
/// ChannelBind (RFC 8656 §12.2).
pub const METHOD_CHANNEL_BIND: u16 = 0x009;

/// REQUESTED-TRANSPORT's value for UDP, the only relay transport RFC 8656 defines.
pub const PROTOCOL_UDP: u8 = 17;
/// REQUESTED-ADDRESS-FAMILY's value for IPv4 (RFC 8656 §18.6).
pub const FAMILY_IPV4: u8 = 0x01;
/// REQUESTED-ADDRESS-FAMILY's value for IPv6.
pub const FAMILY_IPV6: u8 = 0x02;

/// The lowest channel number a client may bind (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = 0x4000;
/// The highest channel number a client may bind: 0x7FFF, RFC 5766's range. RFC 8656
/// §12 narrowed it to 0x4FFF and reserved the rest, but coturn's clients
/// (`turnutils_uclient`) still bind channels above 0x4FFF, and coturn's server takes
/// them; a server that refuses them relays nothing for those clients. Any number with
/// the first bits `01` is unambiguous on a shared port, so accepting them costs
/// nothing.
pub const CHANNEL_MAX: u16 = 0x7FFF;
/// Channel number and length.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// Whether `number` is a channel a client may bind.
#[must_use]
pub const fn is_channel(number: u16) -> bool {
    number >= CHANNEL_MIN && number <= CHANNEL_MAX
}

/// TURN's error codes (RFC 8656 §19) and the STUN ones a TURN server sends.
pub mod error_code {
    /// Malformed or contradictory request.
    pub const BAD_REQUEST: u16 = 400;
    /// No or wrong credentials (RFC 8489 §9.2.4).
    pub const UNAUTHORIZED: u16 = 401;
    /// The request is refused (here: a peer address in a denied range).
    pub const FORBIDDEN: u16 = 403;
    /// Unknown comprehension-required attributes.
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
    /// A requested address family the server does not relay.
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
    /// Allocate on a 5-tuple that has an allocation, or a request on one that has not.
    pub const ALLOCATION_MISMATCH: u16 = 437;
    /// The NONCE is no longer valid (RFC 8489 §9.2.4).
    pub const STALE_NONCE: u16 = 438;
    /// Credentials other than those that created the allocation.
    pub const WRONG_CREDENTIALS: u16 = 441;
    /// REQUESTED-TRANSPORT is not UDP.
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: u16 = 442;
    /// A peer address of a family the allocation does not relay.
    pub const PEER_ADDRESS_FAMILY_MISMATCH: u16 = 443;
    /// The user has as many allocations as allowed.
    pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
    /// No relay address (or no room for another allocation, permission or channel).
    pub const INSUFFICIENT_CAPACITY: u16 = 508;

    /// The reason phrase sent with `code`.
    #[must_use]
    pub const fn reason(code: u16) -> &'static str {
        match code {
            BAD_REQUEST => "Bad Request",
            UNAUTHORIZED => "Unauthorized",
            FORBIDDEN => "Forbidden",
            UNKNOWN_ATTRIBUTE => "Unknown Attribute",
            ADDRESS_FAMILY_NOT_SUPPORTED => "Address Family not Supported",
            ALLOCATION_MISMATCH => "Allocation Mismatch",
            STALE_NONCE => "Stale Nonce",
            WRONG_CREDENTIALS => "Wrong Credentials",
            UNSUPPORTED_TRANSPORT_PROTOCOL => "Unsupported Transport Protocol",
            PEER_ADDRESS_FAMILY_MISMATCH => "Peer Address Family Mismatch",
            ALLOCATION_QUOTA_REACHED => "Allocation Quota Reached",
            INSUFFICIENT_CAPACITY => "Insufficient Capacity",
            _ => "Error",
        }
    }
}

/// Why bytes are not a ChannelData message, or a stream cannot be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the header, or than the length field says.
    Truncated,
    /// The channel number is outside 0x4000..=0x7FFF.
    BadChannel(u16),
    /// More bytes follow the data than padding can explain.
    TrailingBytes,
    /// The first two bits are `10` or `11`: neither STUN nor ChannelData. A stream
    /// that carries this cannot be re-synchronised and is to be closed.
    NotTurn,
    /// A STUN length field that is not a multiple of 4.
    BadLength,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated ChannelData message"),
            Self::BadChannel(n) => write!(f, "channel number 0x{n:04x} outside 0x4000..=0x7fff"),
            Self::TrailingBytes => f.write_str("bytes after the ChannelData payload"),
            Self::NotTurn => f.write_str("neither a STUN message nor ChannelData"),
            Self::BadLength => f.write_str("STUN length not a multiple of 4"),
        }
    }
}

impl std::error::Error for Error {}

/// A ChannelData message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel (0x4000..=0x7FFF).
    pub channel: u16,
    /// The application data.
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses one message: a UDP datagram or a frame from [`Framer`]. Up to three
    /// padding bytes after the data are accepted (RFC 8656 §12.5: over UDP the
    /// padding is optional, over TCP it is there).
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::BadChannel`] or [`Error::TrailingBytes`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let header = bytes
            .get(..CHANNEL_DATA_HEADER_LEN)
            .ok_or(Error::Truncated)?;
        let channel = u16::from_be_bytes([header[0], header[1]]);
        if !is_channel(channel) {
            return Err(Error::BadChannel(channel));
        }
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let end = CHANNEL_DATA_HEADER_LEN + len;
        let data = bytes
            .get(CHANNEL_DATA_HEADER_LEN..end)
            .ok_or(Error::Truncated)?;
        if bytes.len() > padded(end) {
            return Err(Error::TrailingBytes);
        }
        Ok(Self { channel, data })
    }

    /// The message, padded to a multiple of 4 bytes when `pad` (over TCP, RFC 8656
    /// §12.5).
    ///
    /// # Panics
    /// When the data is longer than 65535 bytes (a UDP payload never is).
    #[must_use]
    pub fn to_bytes(&self, pad: bool) -> Vec<u8> {
        let len = u16::try_from(self.data.len()).expect("ChannelData longer than 65535 bytes");
        let total = CHANNEL_DATA_HEADER_LEN + self.data.len();
        let mut bytes = Vec::with_capacity(padded(total));
        bytes.extend_from_slice(&self.channel.to_be_bytes());
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(self.data);
        if pad {
            bytes.resize(padded(total), 0);
        }
        bytes
    }
}

/// What the first byte of a message says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A STUN message (first two bits `00`).
    Stun,
    /// ChannelData (first two bits `01`).
    ChannelData,
    /// Neither.
    Other,
}

/// Classifies a message by its first byte (RFC 8656 §12: `00` STUN, `01` ChannelData).
#[must_use]
pub fn kind(bytes: &[u8]) -> Kind {
    match bytes.first().map(|b| b >> 6) {
        Some(0) => Kind::Stun,
        Some(1) => Kind::ChannelData,
        _ => Kind::Other,
    }
}

/// One message cut from a TCP stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole STUN message (header and attributes), to parse with
    /// [`crate::stun::wire::Packet`].
    Stun(Vec<u8>),
    /// A ChannelData message without its padding, to parse with [`ChannelData::parse`].
    ChannelData(Vec<u8>),
}

/// The longest frame the framer accepts: a STUN header and a 16-bit length (the
/// largest anything can announce), so the buffer stays bounded.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + 0xffff;

/// Cuts a TCP byte stream into STUN messages and ChannelData frames (RFC 8656 §12.5:
/// over TCP, ChannelData is padded to 4 bytes and the padding is skipped). Bytes go
/// in with [`Self::push`] as they arrive; [`Self::next_frame`] returns whole frames.
#[derive(Clone, Debug, Default)]
pub struct Framer {
    buffer: Vec<u8>,
    /// Set once the stream carried something that is not TURN; it stays broken.
    broken: bool,
}

impl Framer {
    /// An empty framer.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.broken {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// Bytes buffered and not yet returned as a frame.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole frame, `Ok(None)` until one has arrived.
    ///
    /// # Errors
    /// [`Error::NotTurn`] (first bits `1x`), [`Error::BadChannel`] (cannot
    /// happen for first bits `01`; kept for the parser's other callers) or [`Error::BadLength`] (a STUN length not a multiple of
    /// 4): the stream has lost its framing and is to be closed; every later call
    /// returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        if self.broken {
            return Err(Error::NotTurn);
        }
        let Some(header) = self.buffer.get(..CHANNEL_DATA_HEADER_LEN) else {
            return Ok(None);
        };
        let first = u16::from_be_bytes([header[0], header[1]]);
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let (frame_len, keep, channel) = match kind(header) {
            Kind::Stun => {
                if length % 4 != 0 {
                    return Err(self.break_stream(Error::BadLength));
                }
                (HEADER_LEN + length, HEADER_LEN + length, false)
            }
            Kind::ChannelData => {
                if !is_channel(first) {
                    return Err(self.break_stream(Error::BadChannel(first)));
                }
                let len = CHANNEL_DATA_HEADER_LEN + length;
                (padded(len), len, true)
            }
            Kind::Other => return Err(self.break_stream(Error::NotTurn)),
        };
        if self.buffer.len() < frame_len {
            return Ok(None);
        }
        let frame: Vec<u8> = self.buffer[..keep].to_vec();
        self.buffer.drain(..frame_len);
        Ok(Some(if channel {
            Frame::ChannelData(frame)
        } else {
            Frame::Stun(frame)
        }))
    }

    fn break_stream(&mut self, error: Error) -> Error {
        self.broken = true;
        self.buffer = Vec::new();
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::wire::{message_type, Attribute, Class, Packet, Repr, MAGIC_COOKIE};
    use std::net::SocketAddr;

    fn send_indication(peer: &str, data: &[u8]) -> Vec<u8> {
        Repr {
            class: Class::Indication,
            method: METHOD_SEND,
            cookie: MAGIC_COOKIE,
            transaction_id: [3; 12],
            attributes: vec![
                Attribute::XorPeerAddress(peer.parse().unwrap()),
                Attribute::Data(data),
            ],
        }
        .to_bytes()
    }

    #[test]
    fn turn_message_types() {
        // rfc8656 §17: Allocate request 0x0003, success 0x0103, error 0x0113; Send
        // indication 0x0016, Data indication 0x0017; ChannelBind request 0x0009.
        assert_eq!(message_type(Class::Request, METHOD_ALLOCATE), 0x0003);
        assert_eq!(message_type(Class::Success, METHOD_ALLOCATE), 0x0103);
        assert_eq!(message_type(Class::Error, METHOD_ALLOCATE), 0x0113);
        assert_eq!(message_type(Class::Indication, METHOD_SEND), 0x0016);
        assert_eq!(message_type(Class::Indication, METHOD_DATA), 0x0017);
        assert_eq!(message_type(Class::Request, METHOD_CHANNEL_BIND), 0x0009);
        assert_eq!(
            message_type(Class::Request, METHOD_CREATE_PERMISSION),
            0x0008
        );
        assert_eq!(message_type(Class::Request, METHOD_REFRESH), 0x0004);
    }

    #[test]
    fn turn_attributes_have_their_wire_layout() {
        // XOR-PEER-ADDRESS 192.0.2.1:32853 XORs like XOR-MAPPED-ADDRESS (rfc8656
        // §18.3); LIFETIME is 32 bits; REQUESTED-TRANSPORT protocol + 3 RFFU bytes;
        // EVEN-PORT one byte with R on top, padded; DONT-FRAGMENT empty;
        // CHANNEL-NUMBER channel + 2 RFFU bytes.
        let repr = Repr {
            class: Class::Request,
            method: METHOD_ALLOCATE,
            cookie: MAGIC_COOKIE,
            transaction_id: [0; 12],
            attributes: vec![
                Attribute::XorPeerAddress("192.0.2.1:32853".parse().unwrap()),
                Attribute::Lifetime(0x0102_0304),
                Attribute::RequestedTransport(PROTOCOL_UDP),
                Attribute::EvenPort(true),
                Attribute::DontFragment,
                Attribute::ChannelNumber(0x4001),
            ],
        };
        let bytes = repr.to_bytes();
        assert_eq!(
            bytes[20..],
            [
                0x00, 0x12, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43, //
                0x00, 0x0d, 0x00, 0x04, 1, 2, 3, 4, //
                0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0, //
                0x00, 0x18, 0x00, 0x01, 0x80, 0, 0, 0, //
                0x00, 0x1a, 0x00, 0x00, //
                0x00, 0x0c, 0x00, 0x04, 0x40, 0x01, 0, 0,
            ]
        );
        let parsed = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(parsed, repr);
    }

    #[test]
    fn malformed_turn_attributes_are_rejected() {
        // LIFETIME of 2 bytes, EVEN-PORT of 4, DONT-FRAGMENT with a value.
        for (kind, value) in [
            (0x000d_u16, &[0u8, 1][..]),
            (0x0018, &[0x80, 0, 0, 0][..]),
            (0x001a, &[1, 0, 0, 0][..]),
            (0x0022, &[1, 2, 3, 4][..]),
        ] {
            let mut bytes = vec![0x00, 0x03, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
            bytes.extend_from_slice(&[9; 12]);
            bytes.extend_from_slice(&kind.to_be_bytes());
            bytes.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
            bytes.extend_from_slice(value);
            bytes.resize(padded(bytes.len()), 0);
            let len = u16::try_from(bytes.len() - 20).unwrap();
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(
                Repr::parse(&packet),
                Err(crate::stun::wire::Error::BadAttribute(kind))
            );
        }
    }

    #[test]
    fn channel_data_round_trips_with_and_without_padding() {
        let message = ChannelData {
            channel: 0x4001,
            data: b"hello",
        };
        let udp = message.to_bytes(false);
        assert_eq!(udp, [0x40, 0x01, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o']);
        let tcp = message.to_bytes(true);
        // rfc8656 §12.5: over TCP, padded to a multiple of 4; the length excludes it.
        assert_eq!(
            tcp,
            [0x40, 0x01, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o', 0, 0, 0]
        );
        assert_eq!(ChannelData::parse(&udp), Ok(message));
        assert_eq!(ChannelData::parse(&tcp), Ok(message));
        let mut long = tcp.clone();
        long.push(0);
        assert_eq!(ChannelData::parse(&long), Err(Error::TrailingBytes));
        assert_eq!(ChannelData::parse(&udp[..8]), Err(Error::Truncated));
        assert_eq!(ChannelData::parse(&udp[..3]), Err(Error::Truncated));
        // RFC 5766's upper channels, which coturn's clients use, are accepted.
        assert_eq!(
            ChannelData::parse(&[0x5e, 0x0c, 0, 0]),
            Ok(ChannelData {
                channel: 0x5e0c,
                data: &[]
            })
        );
        assert_eq!(
            ChannelData::parse(&[0x80, 0, 0, 0]),
            Err(Error::BadChannel(0x8000))
        );
        // Empty data is allowed.
        assert_eq!(
            ChannelData::parse(&[0x4f, 0xff, 0, 0]),
            Ok(ChannelData {
                channel: 0x4fff,
                data: &[]
            })
        );
    }

    #[test]
    fn framer_splits_a_stream_of_stun_and_padded_channel_data() {
        let stun = send_indication("192.0.2.1:9", b"abc");
        let one = ChannelData {
            channel: 0x4000,
            data: b"x",
        }
        .to_bytes(true);
        let two = ChannelData {
            channel: 0x4fff,
            data: b"wxyz",
        }
        .to_bytes(true);
        let mut stream = Vec::new();
        stream.extend_from_slice(&one);
        stream.extend_from_slice(&stun);
        stream.extend_from_slice(&two);
        // Byte by byte: nothing before a frame is whole, then exactly it.
        let mut framer = Framer::new();
        let mut frames = Vec::new();
        for b in &stream {
            framer.push(std::slice::from_ref(b));
            while let Some(frame) = framer.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(
            frames,
            [
                Frame::ChannelData(one[..5].to_vec()),
                Frame::Stun(stun.clone()),
                Frame::ChannelData(two.clone()),
            ]
        );
        assert_eq!(framer.buffered(), 0);
        // All at once: the same.
        let mut framer = Framer::new();
        framer.push(&stream);
        let mut again = Vec::new();
        while let Some(frame) = framer.next_frame().unwrap() {
            again.push(frame);
        }
        assert_eq!(again, frames);
        let Frame::Stun(bytes) = &frames[1] else {
            unreachable!()
        };
        let repr = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        let peer: SocketAddr = "192.0.2.1:9".parse().unwrap();
        assert!(repr.attributes.contains(&Attribute::XorPeerAddress(peer)));
    }

    #[test]
    fn framer_refuses_what_is_not_turn_and_stays_broken() {
        for bad in [
            &[0x80u8, 0, 0, 0][..],
            &[0xc0, 0x00, 0, 4],
            &[0x00, 0x01, 0, 3],
        ] {
            let mut framer = Framer::new();
            framer.push(bad);
            assert!(framer.next_frame().is_err());
            framer.push(&send_indication("192.0.2.1:9", b"a"));
            assert_eq!(framer.next_frame(), Err(Error::NotTurn));
            assert_eq!(framer.buffered(), 0);
        }
    }

    #[test]
    fn kind_reads_the_first_two_bits() {
        assert_eq!(kind(&[0x00]), Kind::Stun);
        assert_eq!(kind(&[0x40]), Kind::ChannelData);
        assert_eq!(kind(&[0x7f]), Kind::ChannelData);
        assert_eq!(kind(&[0x80]), Kind::Other);
        assert_eq!(kind(&[]), Kind::Other);
    }
}
