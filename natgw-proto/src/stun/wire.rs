//! STUN message codec (RFC 8489, RFC 5780 attributes, RFC 3489 legacy form): a typed
//! view over a datagram ([`Packet`]) and a plain representation ([`Repr`]) with `parse`
//! and `emit`, in the manner of smoltcp's `wire` module.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0 0|     STUN Message Type     |         Message Length        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Magic Cookie                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Transaction ID (96 bits)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Attributes: Type (16) | Length (16) | Value, padded to 32 bits |
//! ```
//!
//! An RFC 3489 message has the same layout but a 128-bit transaction ID where the
//! cookie is. Such a message (no cookie, method Binding, not an indication) parses as
//! *legacy*: [`Repr::cookie`] then holds the first 32 bits of the old transaction ID,
//! so a response built from the request echoes all 128 bits (RFC 5389 §12.2).
//! Anything else without the cookie is rejected as [`Error::BadMagic`].
//!
//! FINGERPRINT is checked on parse and computed on emit; MESSAGE-INTEGRITY is carried
//! as bytes and not verified here: the usage that has credentials (TURN,
//! `crate::turn::auth`) checks and signs it over the raw message. Attributes
//! after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are
//! checked for structure but left out of the [`Repr`] (RFC 8489 §14.5).
//!
//! The TURN attributes (RFC 8656 §18) are decoded here too, so the TURN codec
//! (`crate::turn::wire`) is this one with more methods: one TLV walk, one FINGERPRINT,
//! one XOR address encoding. A Binding responder treats them as unknown.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The fixed value in bytes 4..8 of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// XORed into the CRC-32 of a FINGERPRINT attribute (RFC 8489 §14.7: "STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// Length of the message header.
pub const HEADER_LEN: usize = 20;
/// Length of an attribute's type and length fields.
pub const ATTR_HEADER_LEN: usize = 4;
/// RFC 8489 §14.14: SOFTWARE holds fewer than 128 characters (at most 763 bytes).
pub const MAX_SOFTWARE_LEN: usize = 763;
/// RFC 8489 §14.3: USERNAME is at most 513 bytes.
pub const MAX_USERNAME_LEN: usize = 513;
/// RFC 8489 §14.9, §14.10: REALM and NONCE are at most 763 bytes.
pub const MAX_REALM_LEN: usize = 763;

/// The Binding method (RFC 8489 §18.2); TURN's methods are in `crate::turn::wire`.
pub const METHOD_BINDING: u16 = 0x001;

/// Attribute types (IANA "STUN Attributes"). Below 0x8000 a receiver must understand
/// the attribute to process the message ("comprehension-required").
pub mod attr {
    /// RFC 8489 §14.1.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// RFC 3489 §11.2.2; reserved since RFC 5389 (a reflection vector).
    pub const RESPONSE_ADDRESS: u16 = 0x0002;
    /// RFC 5780 §7.2 (first RFC 3489 §11.2.4).
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// RFC 3489 §11.2.5: where the response was sent from (now RESPONSE-ORIGIN).
    pub const SOURCE_ADDRESS: u16 = 0x0004;
    /// RFC 3489 §11.2.3: the address a change-IP-and-port response would come from
    /// (now OTHER-ADDRESS).
    pub const CHANGED_ADDRESS: u16 = 0x0005;
    /// RFC 8489 §14.3.
    pub const USERNAME: u16 = 0x0006;
    /// RFC 8489 §14.5.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// RFC 8656 §18.1.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// RFC 8656 §18.2.
    pub const LIFETIME: u16 = 0x000D;
    /// RFC 8656 §18.3.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// RFC 8656 §18.4.
    pub const DATA: u16 = 0x0013;
    /// RFC 8656 §18.5.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// RFC 8656 §18.6.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// RFC 8656 §18.7.
    pub const EVEN_PORT: u16 = 0x0018;
    /// RFC 8656 §18.8.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// RFC 8656 §18.9.
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// RFC 8656 §18.10.
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// RFC 8489 §14.8.
    pub const ERROR_CODE: u16 = 0x0009;
    /// RFC 8489 §14.13.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// RFC 8489 §14.9.
    pub const REALM: u16 = 0x0014;
    /// RFC 8489 §14.10.
    pub const NONCE: u16 = 0x0015;
    /// RFC 8489 §14.6.
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// RFC 8489 §14.12.
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    /// RFC 8489 §14.4.
    pub const USERHASH: u16 = 0x001E;
    /// RFC 8489 §14.2.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RFC 5780 §7.6.
    pub const PADDING: u16 = 0x0026;
    /// RFC 5780 §7.5.
    pub const RESPONSE_PORT: u16 = 0x0027;
    /// RFC 8489 §14.11.
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    /// RFC 8489 §14.14.
    pub const SOFTWARE: u16 = 0x8022;
    /// RFC 8489 §14.15.
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    /// RFC 8489 §14.7.
    pub const FINGERPRINT: u16 = 0x8028;
    /// RFC 5780 §7.3.
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    /// RFC 5780 §7.4 (the IANA number; the RFC's prose about reusing 0x0005 is wrong).
    pub const OTHER_ADDRESS: u16 = 0x802C;

    /// Whether a receiver must understand this type to process the message.
    #[must_use]
    pub const fn is_comprehension_required(kind: u16) -> bool {
        kind < 0x8000
    }
}

/// RFC 8489 §14.8 error codes natgw sends or recognises.
pub mod error_code {
    /// The request was malformed or asked for something contradictory.
    pub const BAD_REQUEST: u16 = 400;
    /// The request had comprehension-required attributes the server does not know.
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
}

/// Why bytes are not a STUN message natgw accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Shorter than a header, or an attribute runs past the end of the message.
    Truncated,
    /// The first two bits are not zero: not STUN (RFC 8489 §5).
    NotStun,
    /// The length field is not a multiple of 4 or does not match the datagram.
    BadLength,
    /// No magic cookie and not an RFC 3489 Binding message either.
    BadMagic,
    /// A known attribute whose value has the wrong size or contents.
    BadAttribute(u16),
    /// FINGERPRINT does not match the CRC-32 of the message.
    BadFingerprint,
    /// An attribute follows FINGERPRINT, which must be last (RFC 8489 §14.7).
    FingerprintNotLast,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated message or attribute"),
            Self::NotStun => f.write_str("first two bits are not zero"),
            Self::BadLength => f.write_str("message length field does not match the datagram"),
            Self::BadMagic => f.write_str("no magic cookie and not an RFC 3489 Binding message"),
            Self::BadAttribute(kind) => write!(f, "malformed attribute 0x{kind:04x}"),
            Self::BadFingerprint => f.write_str("FINGERPRINT does not match the message"),
            Self::FingerprintNotLast => f.write_str("attribute after FINGERPRINT"),
        }
    }
}

impl std::error::Error for Error {}

/// Result of parsing.
pub type Result<T> = core::result::Result<T, Error>;

/// Byte ranges of the header fields.
mod field {
    pub type Field = core::ops::Range<usize>;
    pub type Rest = core::ops::RangeFrom<usize>;

    pub const MESSAGE_TYPE: Field = 0..2;
    pub const LENGTH: Field = 2..4;
    pub const MAGIC_COOKIE: Field = 4..8;
    pub const TRANSACTION_ID: Field = 8..20;
    pub const ATTRIBUTES: Rest = 20..;

    // Within an attribute.
    pub const ATTR_TYPE: Field = 0..2;
    pub const ATTR_LENGTH: Field = 2..4;
}

/// The class of a message (RFC 8489 §5): the C1 and C0 bits of the message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Asks for a response.
    Request,
    /// Expects no response.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    const fn bits(self) -> u16 {
        match self {
            Self::Request => 0x0000,
            Self::Indication => 0x0010,
            Self::Success => 0x0100,
            Self::Error => 0x0110,
        }
    }

    const fn from_type(message_type: u16) -> Self {
        match message_type & 0x0110 {
            0x0000 => Self::Request,
            0x0010 => Self::Indication,
            0x0100 => Self::Success,
            _ => Self::Error,
        }
    }
}

/// The 14-bit message type from a class and a 12-bit method (RFC 8489 §5, Figure 3:
/// the class bits C0 and C1 sit between method bits M3/M4 and M6/M7).
#[must_use]
pub const fn message_type(class: Class, method: u16) -> u16 {
    let m = method & 0x0fff;
    (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | class.bits()
}

/// The method encoded in a message type.
#[must_use]
pub const fn method_of(message_type: u16) -> u16 {
    (message_type & 0x000f) | ((message_type & 0x00e0) >> 1) | ((message_type & 0x3e00) >> 2)
}

/// A read/write view of a STUN message in a buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on short buffers.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`].
    ///
    /// # Errors
    /// As [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds exactly one message: a full header whose first two
    /// bits are zero and whose length field is a multiple of 4 and covers the rest of
    /// the buffer (over UDP one datagram carries one message, RFC 8489 §6.3).
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::NotStun`] or [`Error::BadLength`].
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if data[0] & 0xc0 != 0 {
            return Err(Error::NotStun);
        }
        let length = usize::from(self.message_length());
        if length % 4 != 0 || HEADER_LEN + length != data.len() {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The 14-bit message type.
    #[must_use]
    pub fn message_type(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::MESSAGE_TYPE])
    }

    /// The class encoded in the message type.
    #[must_use]
    pub fn class(&self) -> Class {
        Class::from_type(self.message_type())
    }

    /// The method encoded in the message type.
    #[must_use]
    pub fn method(&self) -> u16 {
        method_of(self.message_type())
    }

    /// The length field: bytes of attributes after the header.
    #[must_use]
    pub fn message_length(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Bytes 4..8: [`MAGIC_COOKIE`], or part of an RFC 3489 transaction ID.
    #[must_use]
    pub fn magic_cookie(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::MAGIC_COOKIE])
    }

    /// The 96-bit transaction ID (the last 96 bits of an RFC 3489 one).
    #[must_use]
    pub fn transaction_id(&self) -> [u8; 12] {
        let mut id = [0; 12];
        id.copy_from_slice(&self.buffer.as_ref()[field::TRANSACTION_ID]);
        id
    }

    /// The attributes, each checked to fit in the message.
    #[must_use]
    pub fn attributes(&self) -> Attributes<'_> {
        Attributes {
            data: self.buffer.as_ref(),
            offset: HEADER_LEN,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    pub fn set_message_type(&mut self, value: u16) {
        self.buffer.as_mut()[field::MESSAGE_TYPE].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the length field.
    pub fn set_message_length(&mut self, value: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets bytes 4..8.
    pub fn set_magic_cookie(&mut self, value: u32) {
        self.buffer.as_mut()[field::MAGIC_COOKIE].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the 96-bit transaction ID.
    pub fn set_transaction_id(&mut self, id: &[u8; 12]) {
        self.buffer.as_mut()[field::TRANSACTION_ID].copy_from_slice(id);
    }

    /// The attribute area, for writing.
    pub fn attributes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::ATTRIBUTES]
    }
}

/// One attribute as it sits in the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// Attribute type.
    pub kind: u16,
    /// Value without padding.
    pub value: &'a [u8],
    /// Offset of the attribute header from the start of the message.
    pub offset: usize,
}

/// Iterator over a message's attributes; yields [`Error::Truncated`] once and stops
/// when an attribute does not fit.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    data: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<RawAttribute<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.offset >= self.data.len() {
            return None;
        }
        let offset = self.offset;
        let Some(header) = self.data.get(offset..offset + ATTR_HEADER_LEN) else {
            self.offset = self.data.len();
            return Some(Err(Error::Truncated));
        };
        let kind = read_u16(&header[field::ATTR_TYPE]);
        let len = usize::from(read_u16(&header[field::ATTR_LENGTH]));
        let start = offset + ATTR_HEADER_LEN;
        // The padding must fit too: the message length is a multiple of 4.
        let Some(value) = self.data.get(start..start + len) else {
            self.offset = self.data.len();
            return Some(Err(Error::Truncated));
        };
        if start + padded(len) > self.data.len() {
            self.offset = self.data.len();
            return Some(Err(Error::Truncated));
        }
        self.offset = start + padded(len);
        Some(Ok(RawAttribute {
            kind,
            value,
            offset,
        }))
    }
}

/// CHANGE-REQUEST flags (RFC 5780 §7.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChangeRequest {
    /// "A": answer from the other IP address.
    pub change_ip: bool,
    /// "B": answer from the other port.
    pub change_port: bool,
}

impl ChangeRequest {
    const CHANGE_IP: u32 = 0x04;
    const CHANGE_PORT: u32 = 0x02;

    /// Whether either flag is set.
    #[must_use]
    pub const fn any(self) -> bool {
        self.change_ip || self.change_port
    }
}

/// ERROR-CODE contents (RFC 8489 §14.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// 300..=699.
    pub code: u16,
    /// UTF-8 reason phrase.
    pub reason: &'a str,
}

/// One attribute, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribute<'a> {
    /// MAPPED-ADDRESS.
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS (stored un-XORed).
    XorMappedAddress(SocketAddr),
    /// CHANGE-REQUEST.
    ChangeRequest(ChangeRequest),
    /// RFC 3489 SOURCE-ADDRESS.
    SourceAddress(SocketAddr),
    /// RFC 3489 CHANGED-ADDRESS.
    ChangedAddress(SocketAddr),
    /// MESSAGE-INTEGRITY: the 20-byte HMAC-SHA1, carried but not verified.
    MessageIntegrity(&'a [u8]),
    /// USERNAME (UTF-8, at most [`MAX_USERNAME_LEN`] bytes).
    Username(&'a str),
    /// REALM (UTF-8, at most [`MAX_REALM_LEN`] bytes).
    Realm(&'a str),
    /// NONCE (at most [`MAX_REALM_LEN`] bytes; natgw's nonces are ASCII).
    Nonce(&'a str),
    /// TURN CHANNEL-NUMBER: the channel, then two reserved bytes.
    ChannelNumber(u16),
    /// TURN LIFETIME in seconds.
    Lifetime(u32),
    /// TURN XOR-PEER-ADDRESS (stored un-XORed).
    XorPeerAddress(SocketAddr),
    /// TURN DATA: the application payload.
    Data(&'a [u8]),
    /// TURN XOR-RELAYED-ADDRESS (stored un-XORed).
    XorRelayedAddress(SocketAddr),
    /// TURN REQUESTED-ADDRESS-FAMILY: 0x01 IPv4, 0x02 IPv6 (other values kept, for
    /// the server to refuse with 440).
    RequestedAddressFamily(u8),
    /// TURN EVEN-PORT; `true` when the R bit asks to reserve the next port too.
    EvenPort(bool),
    /// TURN REQUESTED-TRANSPORT: an IP protocol number (17 for UDP).
    RequestedTransport(u8),
    /// TURN DONT-FRAGMENT (no value).
    DontFragment,
    /// TURN RESERVATION-TOKEN: 8 opaque bytes.
    ReservationToken([u8; 8]),
    /// ERROR-CODE.
    ErrorCode(ErrorCode<'a>),
    /// UNKNOWN-ATTRIBUTES: the types the other side did not understand.
    UnknownAttributes(Vec<u16>),
    /// PADDING of this many bytes (written as zeros).
    Padding(u16),
    /// RESPONSE-PORT. Parsed from a value of 4 bytes (port, 2 bytes padding, RFC 5780
    /// §7.5) or of 2 (what some clients send); emitted with 4.
    ResponsePort(u16),
    /// SOFTWARE.
    Software(&'a str),
    /// RESPONSE-ORIGIN.
    ResponseOrigin(SocketAddr),
    /// OTHER-ADDRESS.
    OtherAddress(SocketAddr),
    /// FINGERPRINT: verified when parsed, computed when emitted; must be last.
    Fingerprint,
    /// Any other attribute, kept as bytes.
    Other {
        /// Attribute type.
        kind: u16,
        /// Value without padding.
        value: &'a [u8],
    },
}

impl<'a> Attribute<'a> {
    /// The attribute type.
    #[must_use]
    pub fn kind(&self) -> u16 {
        match self {
            Self::MappedAddress(_) => attr::MAPPED_ADDRESS,
            Self::XorMappedAddress(_) => attr::XOR_MAPPED_ADDRESS,
            Self::ChangeRequest(_) => attr::CHANGE_REQUEST,
            Self::SourceAddress(_) => attr::SOURCE_ADDRESS,
            Self::ChangedAddress(_) => attr::CHANGED_ADDRESS,
            Self::MessageIntegrity(_) => attr::MESSAGE_INTEGRITY,
            Self::Username(_) => attr::USERNAME,
            Self::Realm(_) => attr::REALM,
            Self::Nonce(_) => attr::NONCE,
            Self::ChannelNumber(_) => attr::CHANNEL_NUMBER,
            Self::Lifetime(_) => attr::LIFETIME,
            Self::XorPeerAddress(_) => attr::XOR_PEER_ADDRESS,
            Self::Data(_) => attr::DATA,
            Self::XorRelayedAddress(_) => attr::XOR_RELAYED_ADDRESS,
            Self::RequestedAddressFamily(_) => attr::REQUESTED_ADDRESS_FAMILY,
            Self::EvenPort(_) => attr::EVEN_PORT,
            Self::RequestedTransport(_) => attr::REQUESTED_TRANSPORT,
            Self::DontFragment => attr::DONT_FRAGMENT,
            Self::ReservationToken(_) => attr::RESERVATION_TOKEN,
            Self::ErrorCode(_) => attr::ERROR_CODE,
            Self::UnknownAttributes(_) => attr::UNKNOWN_ATTRIBUTES,
            Self::Padding(_) => attr::PADDING,
            Self::ResponsePort(_) => attr::RESPONSE_PORT,
            Self::Software(_) => attr::SOFTWARE,
            Self::ResponseOrigin(_) => attr::RESPONSE_ORIGIN,
            Self::OtherAddress(_) => attr::OTHER_ADDRESS,
            Self::Fingerprint => attr::FINGERPRINT,
            Self::Other { kind, .. } => *kind,
        }
    }

    /// Length of the value, without padding.
    #[must_use]
    pub fn value_len(&self) -> usize {
        match self {
            Self::MappedAddress(a)
            | Self::XorMappedAddress(a)
            | Self::SourceAddress(a)
            | Self::ChangedAddress(a)
            | Self::ResponseOrigin(a)
            | Self::OtherAddress(a)
            | Self::XorPeerAddress(a)
            | Self::XorRelayedAddress(a) => address_len(a),
            Self::ChangeRequest(_)
            | Self::ResponsePort(_)
            | Self::Fingerprint
            | Self::ChannelNumber(_)
            | Self::Lifetime(_)
            | Self::RequestedAddressFamily(_)
            | Self::RequestedTransport(_) => 4,
            Self::EvenPort(_) => 1,
            Self::DontFragment => 0,
            Self::ReservationToken(_) => 8,
            Self::MessageIntegrity(v) | Self::Data(v) | Self::Other { value: v, .. } => v.len(),
            Self::Username(s) | Self::Realm(s) | Self::Nonce(s) => s.len(),
            Self::ErrorCode(e) => 4 + e.reason.len(),
            Self::UnknownAttributes(list) => 2 * list.len(),
            Self::Padding(n) => usize::from(*n),
            Self::Software(s) => s.len(),
        }
    }

    /// Length on the wire: header, value and padding.
    #[must_use]
    pub fn wire_len(&self) -> usize {
        ATTR_HEADER_LEN + padded(self.value_len())
    }

    /// Decodes a raw attribute of a message with this transaction ID.
    fn parse(raw: RawAttribute<'a>, transaction_id: &[u8; 12]) -> Result<Self> {
        let bad = Error::BadAttribute(raw.kind);
        let v = raw.value;
        Ok(match raw.kind {
            attr::MAPPED_ADDRESS => Self::MappedAddress(parse_address(v).ok_or(bad)?),
            attr::XOR_MAPPED_ADDRESS => {
                let xored = parse_address(v).ok_or(bad)?;
                Self::XorMappedAddress(xor_address(xored, transaction_id))
            }
            attr::SOURCE_ADDRESS => Self::SourceAddress(parse_address(v).ok_or(bad)?),
            attr::CHANGED_ADDRESS => Self::ChangedAddress(parse_address(v).ok_or(bad)?),
            attr::RESPONSE_ORIGIN => Self::ResponseOrigin(parse_address(v).ok_or(bad)?),
            attr::OTHER_ADDRESS => Self::OtherAddress(parse_address(v).ok_or(bad)?),
            attr::CHANGE_REQUEST => {
                if v.len() != 4 {
                    return Err(bad);
                }
                let flags = read_u32(v);
                Self::ChangeRequest(ChangeRequest {
                    change_ip: flags & ChangeRequest::CHANGE_IP != 0,
                    change_port: flags & ChangeRequest::CHANGE_PORT != 0,
                })
            }
            attr::RESPONSE_PORT => match v.len() {
                2 | 4 => Self::ResponsePort(read_u16(v)),
                _ => return Err(bad),
            },
            attr::PADDING => Self::Padding(u16::try_from(v.len()).map_err(|_| bad)?),
            attr::MESSAGE_INTEGRITY => {
                if v.len() != 20 {
                    return Err(bad);
                }
                Self::MessageIntegrity(v)
            }
            attr::ERROR_CODE => {
                if v.len() < 4 {
                    return Err(bad);
                }
                let class = u16::from(v[2] & 0x07);
                let number = u16::from(v[3]);
                if !(3..=6).contains(&class) || number > 99 {
                    return Err(bad);
                }
                let reason = core::str::from_utf8(&v[4..]).map_err(|_| bad)?;
                Self::ErrorCode(ErrorCode {
                    code: class * 100 + number,
                    reason,
                })
            }
            attr::UNKNOWN_ATTRIBUTES => {
                if v.len() % 2 != 0 {
                    return Err(bad);
                }
                Self::UnknownAttributes(v.chunks_exact(2).map(read_u16).collect())
            }
            attr::SOFTWARE => {
                if v.len() > MAX_SOFTWARE_LEN {
                    return Err(bad);
                }
                Self::Software(core::str::from_utf8(v).map_err(|_| bad)?)
            }
            attr::USERNAME => Self::Username(text(v, MAX_USERNAME_LEN).ok_or(bad)?),
            attr::REALM => Self::Realm(text(v, MAX_REALM_LEN).ok_or(bad)?),
            attr::NONCE => Self::Nonce(text(v, MAX_REALM_LEN).ok_or(bad)?),
            attr::CHANNEL_NUMBER => match v {
                [a, b, _, _] => Self::ChannelNumber(u16::from_be_bytes([*a, *b])),
                _ => return Err(bad),
            },
            attr::LIFETIME => match v {
                [_, _, _, _] => Self::Lifetime(read_u32(v)),
                _ => return Err(bad),
            },
            attr::XOR_PEER_ADDRESS => {
                let xored = parse_address(v).ok_or(bad)?;
                Self::XorPeerAddress(xor_address(xored, transaction_id))
            }
            attr::XOR_RELAYED_ADDRESS => {
                let xored = parse_address(v).ok_or(bad)?;
                Self::XorRelayedAddress(xor_address(xored, transaction_id))
            }
            attr::DATA => Self::Data(v),
            attr::REQUESTED_ADDRESS_FAMILY => match v {
                [family, _, _, _] => Self::RequestedAddressFamily(*family),
                _ => return Err(bad),
            },
            attr::EVEN_PORT => match v {
                // RFC 8656 §18.7: one byte, R in its top bit; the rest reserved.
                [flags] => Self::EvenPort(flags & 0x80 != 0),
                _ => return Err(bad),
            },
            attr::REQUESTED_TRANSPORT => match v {
                [protocol, _, _, _] => Self::RequestedTransport(*protocol),
                _ => return Err(bad),
            },
            attr::DONT_FRAGMENT => {
                if !v.is_empty() {
                    return Err(bad);
                }
                Self::DontFragment
            }
            attr::RESERVATION_TOKEN => Self::ReservationToken(v.try_into().map_err(|_| bad)?),
            kind => Self::Other { kind, value: v },
        })
    }

    /// Writes the value (not the header) into `buf`, which is `value_len` long.
    fn emit_value(&self, buf: &mut [u8], transaction_id: &[u8; 12]) {
        match self {
            Self::MappedAddress(a)
            | Self::SourceAddress(a)
            | Self::ChangedAddress(a)
            | Self::ResponseOrigin(a)
            | Self::OtherAddress(a) => emit_address(buf, *a),
            Self::XorMappedAddress(a) | Self::XorPeerAddress(a) | Self::XorRelayedAddress(a) => {
                emit_address(buf, xor_address(*a, transaction_id));
            }
            Self::Username(s) | Self::Realm(s) | Self::Nonce(s) => {
                buf.copy_from_slice(s.as_bytes());
            }
            Self::ChannelNumber(n) => {
                buf[0..2].copy_from_slice(&n.to_be_bytes());
                buf[2..4].fill(0);
            }
            Self::Lifetime(seconds) => buf.copy_from_slice(&seconds.to_be_bytes()),
            Self::Data(v) => buf.copy_from_slice(v),
            Self::RequestedAddressFamily(byte) | Self::RequestedTransport(byte) => {
                buf[0] = *byte;
                buf[1..4].fill(0);
            }
            Self::EvenPort(reserve) => buf[0] = if *reserve { 0x80 } else { 0 },
            Self::DontFragment => {}
            Self::ReservationToken(token) => buf.copy_from_slice(token),
            Self::ChangeRequest(c) => {
                let mut flags = 0;
                if c.change_ip {
                    flags |= ChangeRequest::CHANGE_IP;
                }
                if c.change_port {
                    flags |= ChangeRequest::CHANGE_PORT;
                }
                buf.copy_from_slice(&flags.to_be_bytes());
            }
            Self::ResponsePort(port) => {
                buf[0..2].copy_from_slice(&port.to_be_bytes());
                buf[2..4].fill(0);
            }
            Self::MessageIntegrity(v) | Self::Other { value: v, .. } => buf.copy_from_slice(v),
            Self::ErrorCode(e) => {
                buf[0..2].fill(0);
                // Class in the low 3 bits of byte 2 (code / 100), number in byte 3.
                buf[2] = u8::try_from(e.code / 100).unwrap_or(0) & 0x07;
                buf[3] = u8::try_from(e.code % 100).unwrap_or(0);
                buf[4..].copy_from_slice(e.reason.as_bytes());
            }
            Self::UnknownAttributes(list) => {
                for (chunk, kind) in buf.chunks_exact_mut(2).zip(list) {
                    chunk.copy_from_slice(&kind.to_be_bytes());
                }
            }
            Self::Padding(_) => buf.fill(0),
            Self::Software(s) => buf.copy_from_slice(s.as_bytes()),
            // Computed by `Repr::emit` once everything before it is written.
            Self::Fingerprint => {}
        }
    }
}

/// A STUN message, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repr<'a> {
    /// Request, indication, success or error.
    pub class: Class,
    /// The method ([`METHOD_BINDING`]).
    pub method: u16,
    /// Bytes 4..8: [`MAGIC_COOKIE`], or the first 32 bits of an RFC 3489 transaction ID.
    pub cookie: u32,
    /// The 96-bit transaction ID.
    pub transaction_id: [u8; 12],
    /// Attributes in message order.
    pub attributes: Vec<Attribute<'a>>,
}

impl<'a> Repr<'a> {
    /// Decodes a checked packet.
    ///
    /// # Errors
    /// [`Error::BadMagic`] for a message without cookie that is not an RFC 3489 Binding
    /// request or response; [`Error::Truncated`] for an attribute that does not fit;
    /// [`Error::BadAttribute`] for a known attribute with a bad value;
    /// [`Error::BadFingerprint`] / [`Error::FingerprintNotLast`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Repr<'a>> {
        packet.check_len()?;
        let buffer: &'a T = packet.buffer;
        let data: &'a [u8] = buffer.as_ref();
        let class = packet.class();
        let method = packet.method();
        let cookie = packet.magic_cookie();
        // RFC 3489 knew Binding requests and responses only.
        if cookie != MAGIC_COOKIE && (method != METHOD_BINDING || class == Class::Indication) {
            return Err(Error::BadMagic);
        }
        let transaction_id = packet.transaction_id();
        let mut attributes = Vec::new();
        let mut after_integrity = false;
        let attrs = Attributes {
            data,
            offset: HEADER_LEN,
        };
        for raw in attrs {
            let raw = raw?;
            if raw.kind == attr::FINGERPRINT {
                if raw.offset + ATTR_HEADER_LEN + padded(raw.value.len()) != data.len() {
                    return Err(Error::FingerprintNotLast);
                }
                if raw.value.len() != 4 {
                    return Err(Error::BadAttribute(attr::FINGERPRINT));
                }
                // The length field already counts FINGERPRINT, since it is last.
                if crc32(&data[..raw.offset]) ^ FINGERPRINT_XOR != read_u32(raw.value) {
                    return Err(Error::BadFingerprint);
                }
                attributes.push(Attribute::Fingerprint);
                continue;
            }
            if after_integrity && raw.kind != attr::MESSAGE_INTEGRITY_SHA256 {
                continue;
            }
            if raw.kind == attr::MESSAGE_INTEGRITY {
                after_integrity = true;
            }
            attributes.push(Attribute::parse(raw, &transaction_id)?);
        }
        Ok(Repr {
            class,
            method,
            cookie,
            transaction_id,
            attributes,
        })
    }

    /// Whether this is an RFC 3489 message (no magic cookie).
    #[must_use]
    pub fn is_legacy(&self) -> bool {
        self.cookie != MAGIC_COOKIE
    }

    /// The first attribute matching `pick`.
    pub fn find<U>(&self, pick: impl FnMut(&Attribute<'a>) -> Option<U>) -> Option<U> {
        self.attributes.iter().find_map(pick)
    }

    /// Bytes needed by [`Self::emit`].
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + self
                .attributes
                .iter()
                .map(Attribute::wire_len)
                .sum::<usize>()
    }

    /// Writes the message into a buffer of [`Self::buffer_len`] bytes. A
    /// [`Attribute::Fingerprint`] gets the CRC of everything before it; put it last.
    ///
    /// # Panics
    /// If the buffer has the wrong length or the message is longer than 65 555 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let total = self.buffer_len();
        assert_eq!(packet.buffer.as_ref().len(), total, "STUN buffer length");
        let length = u16::try_from(total - HEADER_LEN).expect("STUN message too long");
        packet.set_message_type(message_type(self.class, self.method));
        packet.set_message_length(length);
        packet.set_magic_cookie(self.cookie);
        packet.set_transaction_id(&self.transaction_id);
        let data = packet.buffer.as_mut();
        let mut offset = HEADER_LEN;
        for attribute in &self.attributes {
            let len = attribute.value_len();
            let wire = attribute.wire_len();
            let kind = attribute.kind();
            let value_len = u16::try_from(len).expect("STUN attribute too long");
            data[offset..offset + 2].copy_from_slice(&kind.to_be_bytes());
            data[offset + 2..offset + 4].copy_from_slice(&value_len.to_be_bytes());
            let value = offset + ATTR_HEADER_LEN;
            if let Attribute::Fingerprint = attribute {
                let crc = crc32(&data[..offset]) ^ FINGERPRINT_XOR;
                data[value..value + 4].copy_from_slice(&crc.to_be_bytes());
            } else {
                attribute.emit_value(&mut data[value..value + len], &self.transaction_id);
            }
            data[value + len..offset + wire].fill(0);
            offset += wire;
        }
    }

    /// The message as a new byte vector.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        bytes
    }
}

pub use crate::wire::padded;

/// A UTF-8 value of at most `max` bytes.
fn text(v: &[u8], max: usize) -> Option<&str> {
    if v.len() > max {
        return None;
    }
    core::str::from_utf8(v).ok()
}

fn read_u16(b: &[u8]) -> u16 {
    crate::wire::get_u16(b, 0..2)
}

fn read_u32(b: &[u8]) -> u32 {
    crate::wire::get_u32(b, 0..4)
}

const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

const fn address_len(a: &SocketAddr) -> usize {
    match a {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// RFC 8489 §14.1: reserved byte, family, port, address.
fn parse_address(v: &[u8]) -> Option<SocketAddr> {
    let port = read_u16(v.get(2..4)?);
    match (v[1], v.len()) {
        (FAMILY_IPV4, 8) => {
            let ip = Ipv4Addr::new(v[4], v[5], v[6], v[7]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        (FAMILY_IPV6, 20) => {
            let mut octets = [0; 16];
            octets.copy_from_slice(&v[4..20]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => None,
    }
}

fn emit_address(buf: &mut [u8], a: SocketAddr) {
    buf[0] = 0;
    buf[2..4].copy_from_slice(&a.port().to_be_bytes());
    match a.ip() {
        IpAddr::V4(ip) => {
            buf[1] = FAMILY_IPV4;
            buf[4..8].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            buf[1] = FAMILY_IPV6;
            buf[4..20].copy_from_slice(&ip.octets());
        }
    }
}

/// XOR-MAPPED-ADDRESS obfuscation (RFC 8489 §14.2): the port with the cookie's top 16
/// bits, IPv4 with the cookie, IPv6 with the cookie and the transaction ID. Its own
/// inverse.
fn xor_address(a: SocketAddr, transaction_id: &[u8; 12]) -> SocketAddr {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = a.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match a.ip() {
        IpAddr::V4(ip) => {
            let x = u32::from(ip) ^ MAGIC_COOKIE;
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(x)), port)
        }
        IpAddr::V6(ip) => {
            let mut octets = ip.octets();
            let key = cookie.iter().chain(transaction_id.iter());
            for (o, k) in octets.iter_mut().zip(key) {
                *o ^= k;
            }
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port)
        }
    }
}

/// CRC-32 as in ISO/IEC 13239 / ITU-T V.42 / Ethernet (reflected polynomial
/// 0xEDB88320), which FINGERPRINT uses (RFC 8489 §14.7).
#[must_use]
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32_TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
    }
    !crc
}

const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;

    // RFC 5769 §2.1: Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
    // MESSAGE-INTEGRITY and FINGERPRINT. USERNAME "evtj:h6vY" is padded with spaces.
    static SAMPLE_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];

    // RFC 5769 §2.2: success response, XOR-MAPPED-ADDRESS 192.0.2.1:32853, SOFTWARE
    // "test vector" padded with a space.
    static SAMPLE_IPV4_RESPONSE: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    // RFC 5769 §2.3: success response, XOR-MAPPED-ADDRESS
    // [2001:db8:1234:5678:11:2233:4455:6677]:32853.
    static SAMPLE_IPV6_RESPONSE: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01,
        0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9,
        0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb,
        0x0b, 0x4c,
    ];

    const SAMPLE_TID: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    // RFC 3489 Binding request as Debian's `stun` client sends it: 128-bit transaction
    // ID, CHANGE-REQUEST with no flag.
    static LEGACY_REQUEST: [u8; 28] = [
        0x00, 0x01, 0x00, 0x08, 0x01, 0x6b, 0x8b, 0x45, 0x67, 0x45, 0x8b, 0x6b, 0x32, 0x54, 0x4f,
        0x7c, 0x2a, 0x0d, 0x4e, 0x33, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,
    ];

    fn parse(bytes: &[u8]) -> Result<Repr<'_>> {
        Repr::parse(&Packet::new_checked(bytes)?)
    }

    #[test]
    fn crc32_matches_the_check_value() {
        // The standard CRC-32 check value of "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn message_type_interleaves_class_bits() {
        // rfc8489 §5: Binding request 0x0001, success 0x0101, error 0x0111.
        assert_eq!(message_type(Class::Request, METHOD_BINDING), 0x0001);
        assert_eq!(message_type(Class::Indication, METHOD_BINDING), 0x0011);
        assert_eq!(message_type(Class::Success, METHOD_BINDING), 0x0101);
        assert_eq!(message_type(Class::Error, METHOD_BINDING), 0x0111);
        for method in [0x001, 0x003, 0x00a, 0x07f, 0xfff] {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let t = message_type(class, method);
                assert_eq!(method_of(t), method);
                assert_eq!(Class::from_type(t), class);
            }
        }
    }

    #[test]
    fn rfc5769_sample_request_parses_with_fingerprint() {
        // rfc5769 §2.1
        let repr = parse(&SAMPLE_REQUEST).unwrap();
        assert_eq!(repr.class, Class::Request);
        assert_eq!(repr.method, METHOD_BINDING);
        assert!(!repr.is_legacy());
        assert_eq!(repr.transaction_id, SAMPLE_TID);
        assert_eq!(
            repr.attributes,
            [
                Attribute::Software("STUN test client"),
                Attribute::Other {
                    kind: 0x0024,
                    value: &[0x6e, 0x00, 0x01, 0xff]
                },
                Attribute::Other {
                    kind: 0x8029,
                    value: &[0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36]
                },
                Attribute::Username("evtj:h6vY"),
                Attribute::MessageIntegrity(&SAMPLE_REQUEST[80..100]),
                Attribute::Fingerprint,
            ]
        );
    }

    #[test]
    fn rfc5769_sample_ipv4_response_has_xor_mapped_address() {
        // rfc5769 §2.2
        let repr = parse(&SAMPLE_IPV4_RESPONSE).unwrap();
        assert_eq!(repr.class, Class::Success);
        assert_eq!(repr.transaction_id, SAMPLE_TID);
        let mapped = repr.find(|a| match a {
            Attribute::XorMappedAddress(a) => Some(*a),
            _ => None,
        });
        assert_eq!(mapped, Some("192.0.2.1:32853".parse().unwrap()));
        assert_eq!(repr.attributes[0], Attribute::Software("test vector"));
        assert_eq!(repr.attributes.last(), Some(&Attribute::Fingerprint));
    }

    #[test]
    fn rfc5769_sample_ipv6_response_has_xor_mapped_address() {
        // rfc5769 §2.3
        let repr = parse(&SAMPLE_IPV6_RESPONSE).unwrap();
        let mapped = repr.find(|a| match a {
            Attribute::XorMappedAddress(a) => Some(*a),
            _ => None,
        });
        assert_eq!(
            mapped,
            Some(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            )
        );
        assert_eq!(repr.attributes.last(), Some(&Attribute::Fingerprint));
    }

    #[test]
    fn rfc5769_samples_re_emit_byte_for_byte() {
        // Emitting the parsed samples recomputes FINGERPRINT over the same bytes; the
        // only difference is SOFTWARE/USERNAME padding, which the samples fill with
        // spaces and natgw with zeros.
        for sample in [
            &SAMPLE_REQUEST[..],
            &SAMPLE_IPV4_RESPONSE[..],
            &SAMPLE_IPV6_RESPONSE[..],
        ] {
            let repr = parse(sample).unwrap();
            let bytes = repr.to_bytes();
            assert_eq!(bytes.len(), sample.len());
            assert_eq!(parse(&bytes).unwrap(), repr);
        }
        // The IPv4 response's only padding is SOFTWARE's; patch it to compare exactly.
        let mut bytes = parse(&SAMPLE_IPV4_RESPONSE).unwrap().to_bytes();
        assert_eq!(bytes[35], 0);
        bytes[35] = 0x20;
        // FINGERPRINT covers the padding too, so fix it up as the sample has it.
        bytes[76..80].copy_from_slice(&SAMPLE_IPV4_RESPONSE[76..80]);
        assert_eq!(bytes, SAMPLE_IPV4_RESPONSE);
    }

    #[test]
    fn rfc8489_bad_fingerprint_is_rejected() {
        let mut bytes = SAMPLE_REQUEST;
        bytes[107] ^= 1;
        assert_eq!(parse(&bytes), Err(Error::BadFingerprint));
        // A flipped bit anywhere before it is caught too (here in SOFTWARE).
        let mut bytes = SAMPLE_REQUEST;
        bytes[30] ^= 0x20;
        assert_eq!(parse(&bytes), Err(Error::BadFingerprint));
    }

    #[test]
    fn rfc8489_fingerprint_must_be_last() {
        // Binding request: FINGERPRINT, then SOFTWARE "x".
        let bytes = [
            0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            0x80, 0x28, 0x00, 0x04, 0, 0, 0, 0, 0x80, 0x22, 0x00, 0x01, b'x', 0, 0, 0,
        ];
        assert_eq!(parse(&bytes), Err(Error::FingerprintNotLast));
    }

    #[test]
    fn rfc8489_bad_magic_is_rejected_unless_rfc3489_binding() {
        // A Binding indication without cookie did not exist in RFC 3489.
        let mut bytes = [0u8; 20];
        bytes[1] = 0x11;
        bytes[4..8].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(parse(&bytes), Err(Error::BadMagic));
        // Nor did method 0x003 (TURN Allocate) without cookie.
        bytes[1] = 0x03;
        assert_eq!(parse(&bytes), Err(Error::BadMagic));
        // A Binding request without cookie is RFC 3489.
        bytes[1] = 0x01;
        assert!(parse(&bytes).unwrap().is_legacy());
    }

    #[test]
    fn rfc8489_first_two_bits_must_be_zero() {
        let mut bytes = [0u8; 20];
        bytes[0] = 0x40;
        bytes[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert_eq!(parse(&bytes), Err(Error::NotStun));
    }

    #[test]
    fn rfc8489_length_must_match_datagram_and_be_a_multiple_of_4() {
        let mut bytes = SAMPLE_REQUEST.to_vec();
        bytes.push(0);
        assert_eq!(parse(&bytes), Err(Error::BadLength));
        let mut bytes = SAMPLE_REQUEST.to_vec();
        bytes.truncate(104);
        assert_eq!(parse(&bytes), Err(Error::BadLength));
        // Length 2 (not a multiple of 4), datagram 22 bytes.
        let mut bytes = vec![0, 1, 0, 2, 0x21, 0x12, 0xa4, 0x42];
        bytes.extend_from_slice(&[0; 14]);
        assert_eq!(parse(&bytes), Err(Error::BadLength));
        assert_eq!(parse(&bytes[..19]), Err(Error::Truncated));
    }

    #[test]
    fn rfc8489_truncated_attribute_is_rejected() {
        // Header length 8, attribute claims 8 bytes of value but only 4 follow.
        let bytes = [
            0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            0x80, 0x22, 0x00, 0x08, b'a', b'b', b'c', b'd',
        ];
        assert_eq!(parse(&bytes), Err(Error::Truncated));
        // Value fits, padding does not: length 5 needs 8 bytes.
        let bytes = [
            0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            0x80, 0x22, 0x00, 0x05, b'a', b'b', b'c', b'd', b'e', 0, 0, 0,
        ];
        assert_eq!(
            parse(&bytes).unwrap().attributes[0],
            Attribute::Software("abcde")
        );
        let bytes = [
            0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            0x80, 0x22, 0x00, 0x05, b'a', b'b', b'c', b'd',
        ];
        assert_eq!(parse(&bytes), Err(Error::Truncated));
    }

    #[test]
    fn known_attribute_with_bad_value_is_rejected() {
        // XOR-MAPPED-ADDRESS with family 3.
        let bytes = [
            0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            0x00, 0x20, 0x00, 0x08, 0x00, 0x03, 0x12, 0x34, 1, 2, 3, 4,
        ];
        assert_eq!(
            parse(&bytes),
            Err(Error::BadAttribute(attr::XOR_MAPPED_ADDRESS))
        );
        // CHANGE-REQUEST of 2 bytes.
        let bytes = [
            0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            0x00, 0x03, 0x00, 0x02, 0, 6, 0, 0,
        ];
        assert_eq!(
            parse(&bytes),
            Err(Error::BadAttribute(attr::CHANGE_REQUEST))
        );
    }

    #[test]
    fn rfc5780_response_port_value_of_2_or_4_bytes() {
        // rfc5780 §7.5: port + 2 bytes padding; some clients send only the port.
        for (len, padding) in [(4u8, [0xff, 0xff]), (2, [0, 0])] {
            let bytes = [
                0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                12, 0x00, 0x27, 0x00, len, 0x1f, 0x90, padding[0], padding[1],
            ];
            assert_eq!(
                parse(&bytes).unwrap().attributes,
                [Attribute::ResponsePort(8080)]
            );
        }
        let bytes = [
            0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            0x00, 0x27, 0x00, 0x03, 0x1f, 0x90, 0, 0,
        ];
        assert_eq!(parse(&bytes), Err(Error::BadAttribute(attr::RESPONSE_PORT)));
    }

    #[test]
    fn rfc3489_request_parses_as_legacy_and_keeps_its_128_bit_id() {
        // rfc3489 §11.1 / rfc5389 §12.2
        let repr = parse(&LEGACY_REQUEST).unwrap();
        assert!(repr.is_legacy());
        assert_eq!(repr.cookie, 0x016b_8b45);
        assert_eq!(repr.transaction_id[..], LEGACY_REQUEST[8..20]);
        assert_eq!(
            repr.attributes,
            [Attribute::ChangeRequest(ChangeRequest::default())]
        );
        assert_eq!(repr.to_bytes(), LEGACY_REQUEST);
    }

    #[test]
    fn attributes_after_message_integrity_are_ignored() {
        // rfc8489 §14.5: MESSAGE-INTEGRITY, then an unknown attribute 0x7777 (ignored),
        // then FINGERPRINT (kept).
        let mut repr = Repr {
            class: Class::Request,
            method: METHOD_BINDING,
            cookie: MAGIC_COOKIE,
            transaction_id: [7; 12],
            attributes: vec![
                Attribute::MessageIntegrity(&[0xaa; 20]),
                Attribute::Other {
                    kind: 0x7777,
                    value: &[1, 2, 3],
                },
                Attribute::Fingerprint,
            ],
        };
        let bytes = repr.to_bytes();
        repr.attributes.remove(1);
        assert_eq!(parse(&bytes).unwrap(), repr);
    }

    #[test]
    fn emitted_response_has_expected_bytes() {
        // XOR-MAPPED-ADDRESS 192.0.2.1:32853 and MAPPED-ADDRESS, ERROR-CODE 420 with
        // UNKNOWN-ATTRIBUTES, FINGERPRINT: exact layout.
        let repr = Repr {
            class: Class::Error,
            method: METHOD_BINDING,
            cookie: MAGIC_COOKIE,
            transaction_id: SAMPLE_TID,
            attributes: vec![
                Attribute::ErrorCode(ErrorCode {
                    code: 420,
                    reason: "Unknown",
                }),
                Attribute::UnknownAttributes(vec![0x0024]),
                Attribute::XorMappedAddress("192.0.2.1:32853".parse().unwrap()),
                Attribute::Fingerprint,
            ],
        };
        let bytes = repr.to_bytes();
        let mut expected = vec![
            0x01, 0x11, 0x00, 0x2c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
            0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, // header
            0x00, 0x09, 0x00, 0x0b, 0x00, 0x00, 0x04, 0x14, b'U', b'n', b'k', b'n', b'o', b'w',
            b'n', 0x00, // ERROR-CODE 420 "Unknown" + 1 byte padding
            0x00, 0x0a, 0x00, 0x02, 0x00, 0x24, 0x00, 0x00, // UNKNOWN-ATTRIBUTES
            0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43, // XMA
        ];
        // rfc8489 §14.7: CRC-32 of everything before the FINGERPRINT attribute.
        let crc = crc32(&expected) ^ FINGERPRINT_XOR;
        expected.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
        expected.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(bytes, expected);
        assert_eq!(parse(&bytes).unwrap(), repr);
    }

    #[test]
    fn every_attribute_round_trips() {
        let v4: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 3478));
        let v6: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        let repr = Repr {
            class: Class::Success,
            method: METHOD_BINDING,
            cookie: MAGIC_COOKIE,
            transaction_id: [0x5a; 12],
            attributes: vec![
                Attribute::MappedAddress(v4),
                Attribute::XorMappedAddress(v4),
                Attribute::XorMappedAddress(v6),
                Attribute::ChangeRequest(ChangeRequest {
                    change_ip: true,
                    change_port: false,
                }),
                Attribute::SourceAddress(v4),
                Attribute::ChangedAddress(v6),
                Attribute::ErrorCode(ErrorCode {
                    code: 699,
                    reason: "x",
                }),
                Attribute::UnknownAttributes(vec![1, 2, 3]),
                Attribute::Padding(5),
                Attribute::ResponsePort(65535),
                Attribute::Software("natgw"),
                Attribute::ResponseOrigin(v4),
                Attribute::OtherAddress(v4),
                Attribute::Other {
                    kind: 0xc001,
                    value: &[9; 7],
                },
                Attribute::Username("user"),
                Attribute::Realm("example.org"),
                Attribute::Nonce("n0nce"),
                Attribute::ChannelNumber(0x4001),
                Attribute::Lifetime(600),
                Attribute::XorPeerAddress(v4),
                Attribute::XorPeerAddress(v6),
                Attribute::Data(&[1, 2, 3, 4, 5]),
                Attribute::XorRelayedAddress(v4),
                Attribute::RequestedAddressFamily(1),
                Attribute::EvenPort(true),
                Attribute::EvenPort(false),
                Attribute::RequestedTransport(17),
                Attribute::DontFragment,
                Attribute::ReservationToken([1, 2, 3, 4, 5, 6, 7, 8]),
                Attribute::MessageIntegrity(&[1; 20]),
                Attribute::Fingerprint,
            ],
        };
        let bytes = repr.to_bytes();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(parse(&bytes).unwrap(), repr);
    }
}
