//! PCP version 2 messages (RFC 6887 §7 and §11–§14): the common request and response
//! headers, the ANNOUNCE, MAP and PEER opcodes and the THIRD_PARTY, PREFER_FAILURE and
//! FILTER options.
//!
//! Shaped like smoltcp's `wire` module: [`Packet`] is a typed view over a whole
//! message, [`MappingData`] over the MAP/PEER opcode data and [`OptionView`] over one
//! option, each with `new_checked`, getters and setters over the byte ranges in
//! `field`; [`Request`] and [`Response`] are the plain representations with `parse`
//! and `emit`. IPv4 addresses travel as IPv4-mapped IPv6 addresses (§5).
//!
//! The codec checks the wire format only (lengths, option framing, the fixed lengths
//! of the options it knows). What a request may do — nonces, policy, which options an
//! opcode accepts, unknown mandatory options — is decided by the server, so unknown
//! options are kept as raw bytes in [`OptionRepr::Unknown`].

use crate::wire::{get_ipv6, get_u16, get_u32, padded};
use std::fmt;
use std::net::Ipv6Addr;

/// The PCP version this codec speaks (RFC 6887 §7.1).
pub const VERSION: u8 = 2;
/// UDP port PCP (and NAT-PMP) servers listen on (RFC 6887 §19.1).
pub const SERVER_PORT: u16 = 5351;
/// UDP port clients listen on for multicast and unsolicited responses (§19.1).
pub const CLIENT_PORT: u16 = 5350;
/// Largest PCP message, request or response (§7).
pub const MAX_LEN: usize = 1100;
/// Length of the common request and response header (§7.1, §7.2).
pub const HEADER_LEN: usize = 24;
/// Length of the MAP opcode data (§11.1).
pub const MAP_LEN: usize = 36;
/// Length of the PEER opcode data (§12.1).
pub const PEER_LEN: usize = 56;
/// Length of an option header (§7.3).
pub const OPTION_HEADER_LEN: usize = 4;
/// MAP protocol number meaning "all protocols" (§11.1).
pub const PROTOCOL_ALL: u8 = 0;
/// IANA protocol number of TCP.
pub const PROTOCOL_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const PROTOCOL_UDP: u8 = 17;
/// THIRD_PARTY option code (§13.1).
pub const OPTION_THIRD_PARTY: u8 = 1;
/// PREFER_FAILURE option code (§13.2).
pub const OPTION_PREFER_FAILURE: u8 = 2;
/// FILTER option code (§13.3).
pub const OPTION_FILTER: u8 = 3;
/// Option codes from here up are optional to process; below, mandatory (§7.3).
pub const OPTIONAL_OPTION_MIN: u8 = 128;
/// Data length of THIRD_PARTY: one IPv6 (or IPv4-mapped) address.
pub const THIRD_PARTY_LEN: u16 = 16;
/// Data length of PREFER_FAILURE: none.
pub const PREFER_FAILURE_LEN: u16 = 0;
/// Data length of FILTER: reserved, prefix length, port, address.
pub const FILTER_LEN: u16 = 20;
/// Largest FILTER prefix length (an IPv6 address has 128 bits).
pub const FILTER_PREFIX_MAX: u8 = 128;

/// The R bit of the second header byte: set in responses (§7.1).
pub const RESPONSE_BIT: u8 = 0x80;

/// A mapping nonce: 96 random bits chosen by the client and required again on every
/// renewal and deletion (§11.1, §11.2).
pub type Nonce = [u8; 12];

/// Byte ranges of the PCP formats.
mod field {
    pub use crate::wire::Field;

    // Common header (§7.1 request, §7.2 response).
    pub const VERSION: usize = 0;
    pub const R_OPCODE: usize = 1;
    pub const REQUEST_RESERVED: Field = 2..4;
    pub const RESPONSE_RESERVED8: usize = 2;
    pub const RESULT_CODE: usize = 3;
    pub const LIFETIME: Field = 4..8;
    pub const CLIENT_ADDRESS: Field = 8..24;
    pub const EPOCH: Field = 8..12;
    pub const RESPONSE_RESERVED: Field = 12..24;
    pub const PAYLOAD: usize = 24;

    // MAP opcode data (§11.1); PEER (§12.1) starts the same way.
    pub const NONCE: Field = 0..12;
    pub const PROTOCOL: usize = 12;
    pub const OPCODE_RESERVED: Field = 13..16;
    pub const INTERNAL_PORT: Field = 16..18;
    pub const EXTERNAL_PORT: Field = 18..20;
    pub const EXTERNAL_ADDRESS: Field = 20..36;
    pub const REMOTE_PORT: Field = 36..38;
    pub const PEER_RESERVED: Field = 38..40;
    pub const REMOTE_ADDRESS: Field = 40..56;

    // Option header (§7.3).
    pub const OPTION_CODE: usize = 0;
    pub const OPTION_RESERVED: usize = 1;
    pub const OPTION_LENGTH: Field = 2..4;
    pub const OPTION_DATA: usize = 4;

    // FILTER option data (§13.3).
    pub const FILTER_RESERVED: usize = 0;
    pub const FILTER_PREFIX_LEN: usize = 1;
    pub const FILTER_PORT: Field = 2..4;
    pub const FILTER_ADDRESS: Field = 4..20;
}

/// Opcodes this codec knows (RFC 6887 §14.1, §11, §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// Server discovery and restart announcement (§14.1).
    Announce,
    /// Create, renew or delete an explicit inbound mapping (§11).
    Map,
    /// Create or refresh the outbound (implicit) mapping towards one peer (§12).
    Peer,
}

impl Opcode {
    /// The opcode with this wire value, if known.
    #[must_use]
    pub const fn from_wire(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Announce),
            1 => Some(Self::Map),
            2 => Some(Self::Peer),
            _ => None,
        }
    }

    /// Wire value.
    #[must_use]
    pub const fn to_wire(self) -> u8 {
        match self {
            Self::Announce => 0,
            Self::Map => 1,
            Self::Peer => 2,
        }
    }

    /// Length of the opcode-specific data.
    #[must_use]
    pub const fn data_len(self) -> usize {
        match self {
            Self::Announce => 0,
            Self::Map => MAP_LEN,
            Self::Peer => PEER_LEN,
        }
    }

    /// Name as the RFC spells it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Announce => "ANNOUNCE",
            Self::Map => "MAP",
            Self::Peer => "PEER",
        }
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Response result codes (RFC 6887 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// 0: success.
    Success,
    /// 1: the request's version is not supported; long-lived.
    UnsuppVersion,
    /// 2: refused by policy (or nonce mismatch); long-lived.
    NotAuthorized,
    /// 3: the request could not be parsed; long-lived.
    MalformedRequest,
    /// 4: unknown opcode; long-lived.
    UnsuppOpcode,
    /// 5: unknown mandatory-to-process option; long-lived.
    UnsuppOption,
    /// 6: option of bad length, repeated or not valid here; long-lived.
    MalformedOption,
    /// 7: the gateway has no working external side; short-lived.
    NetworkFailure,
    /// 8: out of ports, memory or request budget; short-lived.
    NoResources,
    /// 9: the protocol cannot be mapped; long-lived.
    UnsuppProtocol,
    /// 10: the client's mapping quota is used up; short-lived.
    UserExQuota,
    /// 11: the suggested external endpoint was required (PREFER_FAILURE) but is not
    /// available; short-lived.
    CannotProvideExternal,
    /// 12: the client address field is not the packet's source address; long-lived.
    AddressMismatch,
    /// 13: too many FILTER options; long-lived.
    ExcessiveRemotePeers,
    /// Any other value (responses from newer servers).
    Unknown(u8),
}

impl ResultCode {
    /// Wire value.
    #[must_use]
    pub const fn to_wire(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::UnsuppVersion => 1,
            Self::NotAuthorized => 2,
            Self::MalformedRequest => 3,
            Self::UnsuppOpcode => 4,
            Self::UnsuppOption => 5,
            Self::MalformedOption => 6,
            Self::NetworkFailure => 7,
            Self::NoResources => 8,
            Self::UnsuppProtocol => 9,
            Self::UserExQuota => 10,
            Self::CannotProvideExternal => 11,
            Self::AddressMismatch => 12,
            Self::ExcessiveRemotePeers => 13,
            Self::Unknown(v) => v,
        }
    }

    /// The code with this wire value.
    #[must_use]
    pub const fn from_wire(value: u8) -> Self {
        match value {
            0 => Self::Success,
            1 => Self::UnsuppVersion,
            2 => Self::NotAuthorized,
            3 => Self::MalformedRequest,
            4 => Self::UnsuppOpcode,
            5 => Self::UnsuppOption,
            6 => Self::MalformedOption,
            7 => Self::NetworkFailure,
            8 => Self::NoResources,
            9 => Self::UnsuppProtocol,
            10 => Self::UserExQuota,
            11 => Self::CannotProvideExternal,
            12 => Self::AddressMismatch,
            13 => Self::ExcessiveRemotePeers,
            v => Self::Unknown(v),
        }
    }

    /// Whether the RFC classes this error as short-lived (§7.4: a retry may soon
    /// succeed) rather than long-lived (the same request will keep failing).
    #[must_use]
    pub const fn is_short_lived(self) -> bool {
        matches!(
            self,
            Self::NetworkFailure
                | Self::NoResources
                | Self::UserExQuota
                | Self::CannotProvideExternal
        )
    }

    /// Name as the RFC spells it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::UnsuppVersion => "UNSUPP_VERSION",
            Self::NotAuthorized => "NOT_AUTHORIZED",
            Self::MalformedRequest => "MALFORMED_REQUEST",
            Self::UnsuppOpcode => "UNSUPP_OPCODE",
            Self::UnsuppOption => "UNSUPP_OPTION",
            Self::MalformedOption => "MALFORMED_OPTION",
            Self::NetworkFailure => "NETWORK_FAILURE",
            Self::NoResources => "NO_RESOURCES",
            Self::UnsuppProtocol => "UNSUPP_PROTOCOL",
            Self::UserExQuota => "USER_EX_QUOTA",
            Self::CannotProvideExternal => "CANNOT_PROVIDE_EXTERNAL",
            Self::AddressMismatch => "ADDRESS_MISMATCH",
            Self::ExcessiveRemotePeers => "EXCESSIVE_REMOTE_PEERS",
            Self::Unknown(_) => "UNKNOWN",
        }
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(v) => write!(f, "UNKNOWN({v})"),
            known => f.write_str(known.name()),
        }
    }
}

/// What is wrong with one option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OptionProblem {
    /// Fewer than 4 bytes left for the option header.
    #[error("its header runs past the end of the message")]
    HeaderPastEnd,
    /// The option length points past the end of the message.
    #[error("its {0} data bytes run past the end of the message")]
    DataPastEnd(u16),
    /// The data fits but its padding to 4 bytes does not.
    #[error("its padding runs past the end of the message")]
    PaddingPastEnd,
    /// A known option with the wrong length.
    #[error("length {found} where {expected} is required")]
    Length {
        /// The option's defined data length.
        expected: u16,
        /// The length field received.
        found: u16,
    },
    /// FILTER prefix length above 128.
    #[error("prefix length {0} is above 128")]
    PrefixLength(u8),
}

/// Why bytes are not a valid PCP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the common header.
    #[error("{len} bytes is shorter than the 24-byte PCP header")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// Not version 2.
    #[error("version {0} is not PCP version 2")]
    Version(u8),
    /// A response where a request was expected, or the reverse.
    #[error("the R bit does not match the message direction")]
    Direction,
    /// Longer than 1100 bytes or not a multiple of 4 (§7).
    #[error("length {0} is above 1100 bytes or not a multiple of 4")]
    Length(usize),
    /// An opcode this codec does not know.
    #[error("opcode {0} is not ANNOUNCE, MAP or PEER")]
    Opcode(u8),
    /// Too short for the opcode's data.
    #[error("{len} bytes after the header are too few for the {opcode} data ({need} bytes)")]
    OpcodeData {
        /// The opcode.
        opcode: Opcode,
        /// Bytes after the header.
        len: usize,
        /// Bytes the opcode data needs.
        need: usize,
    },
    /// A malformed option.
    #[error("option {code}: {problem}")]
    Option {
        /// Its code (0 when not even the code byte is there).
        code: u8,
        /// What is wrong.
        problem: OptionProblem,
    },
}

/// Result of the codec.
pub type Result<T> = core::result::Result<T, Error>;

/// A typed view of a PCP message: the common header (request or response) and the
/// payload after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length; getters panic on a buffer shorter
    /// than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer that holds at least the common header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the common header is there.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            Err(Error::Truncated { len })
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Whole message length.
    pub fn len(&self) -> usize {
        self.buffer.as_ref().len()
    }

    /// Whether the message has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.buffer.as_ref().is_empty()
    }

    /// Version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// R bit: set in responses.
    pub fn is_response(&self) -> bool {
        self.buffer.as_ref()[field::R_OPCODE] & RESPONSE_BIT != 0
    }

    /// Opcode (7 bits, without the R bit).
    pub fn opcode(&self) -> u8 {
        self.buffer.as_ref()[field::R_OPCODE] & !RESPONSE_BIT
    }

    /// Requested lifetime (request) or granted lifetime (response), in seconds.
    pub fn lifetime(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::LIFETIME)
    }

    /// Request only: the client's own address as it believes it to be.
    pub fn client_address(&self) -> Ipv6Addr {
        get_ipv6(self.buffer.as_ref(), field::CLIENT_ADDRESS)
    }

    /// Response only: result code.
    pub fn result_code(&self) -> ResultCode {
        ResultCode::from_wire(self.buffer.as_ref()[field::RESULT_CODE])
    }

    /// Response only: the server's epoch time in seconds.
    pub fn epoch(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::EPOCH)
    }

    /// Opcode data and options.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version field.
    pub fn set_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::VERSION] = value;
    }

    /// Sets or clears the R bit, keeping the opcode.
    pub fn set_response(&mut self, value: bool) {
        let b = &mut self.buffer.as_mut()[field::R_OPCODE];
        *b = if value {
            *b | RESPONSE_BIT
        } else {
            *b & !RESPONSE_BIT
        };
    }

    /// Sets the opcode, keeping the R bit.
    pub fn set_opcode(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::R_OPCODE];
        *b = (*b & RESPONSE_BIT) | (value & !RESPONSE_BIT);
    }

    /// Zeroes the request's reserved bytes.
    pub fn clear_request_reserved(&mut self) {
        self.buffer.as_mut()[field::REQUEST_RESERVED].fill(0);
    }

    /// Sets the lifetime field.
    pub fn set_lifetime(&mut self, value: u32) {
        self.buffer.as_mut()[field::LIFETIME].copy_from_slice(&value.to_be_bytes());
    }

    /// Request only: sets the client address.
    pub fn set_client_address(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::CLIENT_ADDRESS].copy_from_slice(&value.octets());
    }

    /// Response only: sets the result code and zeroes the reserved byte before it.
    pub fn set_result_code(&mut self, value: ResultCode) {
        let buf = self.buffer.as_mut();
        buf[field::RESPONSE_RESERVED8] = 0;
        buf[field::RESULT_CODE] = value.to_wire();
    }

    /// Response only: sets the epoch time.
    pub fn set_epoch(&mut self, value: u32) {
        self.buffer.as_mut()[field::EPOCH].copy_from_slice(&value.to_be_bytes());
    }

    /// Response only: zeroes the 96 reserved bits.
    pub fn clear_response_reserved(&mut self) {
        self.buffer.as_mut()[field::RESPONSE_RESERVED].fill(0);
    }

    /// Opcode data and options, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// A typed view of MAP opcode data (§11.1) or PEER opcode data (§12.1), which begins
/// with the same fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingData<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MappingData<T> {
    /// Wraps a buffer without checking; getters panic when it is too short.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer holding at least the data of `opcode` (MAP or PEER).
    pub fn new_checked(buffer: T, opcode: Opcode) -> Result<Self> {
        let len = buffer.as_ref().len();
        let need = opcode.data_len();
        if len < need {
            return Err(Error::OpcodeData { opcode, len, need });
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// Mapping nonce.
    pub fn nonce(&self) -> Nonce {
        let mut n = [0; 12];
        n.copy_from_slice(&self.buffer.as_ref()[field::NONCE]);
        n
    }

    /// IANA protocol number; 0 means all protocols.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Internal port; 0 means all ports.
    pub fn internal_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::INTERNAL_PORT)
    }

    /// Suggested (request) or assigned (response) external port.
    pub fn external_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::EXTERNAL_PORT)
    }

    /// Suggested (request) or assigned (response) external address.
    pub fn external_address(&self) -> Ipv6Addr {
        get_ipv6(self.buffer.as_ref(), field::EXTERNAL_ADDRESS)
    }

    /// PEER only: remote peer port.
    pub fn remote_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::REMOTE_PORT)
    }

    /// PEER only: remote peer address.
    pub fn remote_address(&self) -> Ipv6Addr {
        get_ipv6(self.buffer.as_ref(), field::REMOTE_ADDRESS)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> MappingData<T> {
    /// Sets the nonce.
    pub fn set_nonce(&mut self, value: Nonce) {
        self.buffer.as_mut()[field::NONCE].copy_from_slice(&value);
    }

    /// Sets the protocol and zeroes the reserved bytes after it.
    pub fn set_protocol(&mut self, value: u8) {
        let buf = self.buffer.as_mut();
        buf[field::PROTOCOL] = value;
        buf[field::OPCODE_RESERVED].fill(0);
    }

    /// Sets the internal port.
    pub fn set_internal_port(&mut self, value: u16) {
        self.buffer.as_mut()[field::INTERNAL_PORT].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the external port.
    pub fn set_external_port(&mut self, value: u16) {
        self.buffer.as_mut()[field::EXTERNAL_PORT].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the external address.
    pub fn set_external_address(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::EXTERNAL_ADDRESS].copy_from_slice(&value.octets());
    }

    /// PEER only: sets the remote port and zeroes the reserved bytes after it.
    pub fn set_remote_port(&mut self, value: u16) {
        let buf = self.buffer.as_mut();
        buf[field::REMOTE_PORT].copy_from_slice(&value.to_be_bytes());
        buf[field::PEER_RESERVED].fill(0);
    }

    /// PEER only: sets the remote address.
    pub fn set_remote_address(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::REMOTE_ADDRESS].copy_from_slice(&value.octets());
    }
}

/// A typed view of one option (§7.3): code, reserved byte, length, data, padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> OptionView<T> {
    /// Wraps a buffer without checking; getters panic when it is too short.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer that starts with a complete option, padding included.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let view = Self::new_unchecked(buffer);
        view.check_len()?;
        Ok(view)
    }

    /// Checks that header, data and padding all fit.
    pub fn check_len(&self) -> Result<()> {
        let buf = self.buffer.as_ref();
        let code = buf.first().copied().unwrap_or(0);
        let fail = |problem| Err(Error::Option { code, problem });
        if buf.len() < OPTION_HEADER_LEN {
            return fail(OptionProblem::HeaderPastEnd);
        }
        let data_len = self.length();
        if buf.len() < OPTION_HEADER_LEN + usize::from(data_len) {
            return fail(OptionProblem::DataPastEnd(data_len));
        }
        if buf.len() < self.total_len() {
            return fail(OptionProblem::PaddingPastEnd);
        }
        Ok(())
    }

    /// Option code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::OPTION_CODE]
    }

    /// Length of the data, padding excluded.
    pub fn length(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPTION_LENGTH)
    }

    /// Header, data and padding: the bytes this option occupies.
    pub fn total_len(&self) -> usize {
        OPTION_HEADER_LEN + padded(usize::from(self.length()))
    }

    /// The option data, padding excluded.
    pub fn data(&self) -> &[u8] {
        let end = field::OPTION_DATA + usize::from(self.length());
        &self.buffer.as_ref()[field::OPTION_DATA..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> OptionView<T> {
    /// Sets the code and zeroes the reserved byte.
    pub fn set_code(&mut self, value: u8) {
        let buf = self.buffer.as_mut();
        buf[field::OPTION_CODE] = value;
        buf[field::OPTION_RESERVED] = 0;
    }

    /// Sets the data length and zeroes the padding after the data.
    pub fn set_length(&mut self, value: u16) {
        let buf = self.buffer.as_mut();
        buf[field::OPTION_LENGTH].copy_from_slice(&value.to_be_bytes());
        let start = field::OPTION_DATA + usize::from(value);
        let end = field::OPTION_DATA + padded(usize::from(value));
        buf[start..end].fill(0);
    }

    /// The option data, writable (set the length first).
    pub fn data_mut(&mut self) -> &mut [u8] {
        let end = field::OPTION_DATA + usize::from(self.length());
        &mut self.buffer.as_mut()[field::OPTION_DATA..end]
    }
}

/// Iterates over the options in a byte slice; stops after the first malformed one.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Options<'a> {
    /// Options in `buf` (what follows the opcode data).
    #[must_use]
    pub const fn new(buf: &'a [u8]) -> Self {
        Self {
            rest: buf,
            failed: false,
        }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<OptionView<&'a [u8]>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match OptionView::new_checked(self.rest) {
            Ok(view) => {
                let (this, rest) = self.rest.split_at(view.total_len());
                self.rest = rest;
                Some(Ok(OptionView::new_unchecked(this)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// MAP opcode data (§11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRepr {
    /// Mapping nonce.
    pub nonce: Nonce,
    /// IANA protocol number; 0 = all protocols.
    pub protocol: u8,
    /// Internal port; 0 = all ports.
    pub internal_port: u16,
    /// Suggested (request) or assigned (response) external port; 0 = no preference.
    pub external_port: u16,
    /// Suggested or assigned external address; `::ffff:0.0.0.0` or `::` = none.
    pub external_address: Ipv6Addr,
}

impl MapRepr {
    /// Reads MAP data.
    pub fn parse<T: AsRef<[u8]>>(data: &MappingData<T>) -> Self {
        Self {
            nonce: data.nonce(),
            protocol: data.protocol(),
            internal_port: data.internal_port(),
            external_port: data.external_port(),
            external_address: data.external_address(),
        }
    }

    /// Writes MAP data, reserved bytes zeroed.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, data: &mut MappingData<T>) {
        data.set_nonce(self.nonce);
        data.set_protocol(self.protocol);
        data.set_internal_port(self.internal_port);
        data.set_external_port(self.external_port);
        data.set_external_address(self.external_address);
    }
}

/// PEER opcode data (§12.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRepr {
    /// Mapping nonce.
    pub nonce: Nonce,
    /// IANA protocol number (never 0 in a valid request).
    pub protocol: u8,
    /// Internal port.
    pub internal_port: u16,
    /// Suggested (request) or assigned (response) external port.
    pub external_port: u16,
    /// Suggested or assigned external address.
    pub external_address: Ipv6Addr,
    /// Remote peer port.
    pub remote_port: u16,
    /// Remote peer address.
    pub remote_address: Ipv6Addr,
}

impl PeerRepr {
    /// Reads PEER data.
    pub fn parse<T: AsRef<[u8]>>(data: &MappingData<T>) -> Self {
        Self {
            nonce: data.nonce(),
            protocol: data.protocol(),
            internal_port: data.internal_port(),
            external_port: data.external_port(),
            external_address: data.external_address(),
            remote_port: data.remote_port(),
            remote_address: data.remote_address(),
        }
    }

    /// Writes PEER data, reserved bytes zeroed.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, data: &mut MappingData<T>) {
        data.set_nonce(self.nonce);
        data.set_protocol(self.protocol);
        data.set_internal_port(self.internal_port);
        data.set_external_port(self.external_port);
        data.set_external_address(self.external_address);
        data.set_remote_port(self.remote_port);
        data.set_remote_address(self.remote_address);
    }
}

/// Opcode-specific data of a known opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpRepr {
    /// ANNOUNCE has none.
    Announce,
    /// MAP data.
    Map(MapRepr),
    /// PEER data.
    Peer(PeerRepr),
}

impl OpRepr {
    /// The opcode this data belongs to.
    #[must_use]
    pub const fn opcode(&self) -> Opcode {
        match self {
            Self::Announce => Opcode::Announce,
            Self::Map(_) => Opcode::Map,
            Self::Peer(_) => Opcode::Peer,
        }
    }

    /// Reads the data of `opcode` from the start of `payload`.
    pub fn parse(opcode: Opcode, payload: &[u8]) -> Result<Self> {
        Ok(match opcode {
            Opcode::Announce => Self::Announce,
            Opcode::Map => Self::Map(MapRepr::parse(&MappingData::new_checked(payload, opcode)?)),
            Opcode::Peer => {
                Self::Peer(PeerRepr::parse(&MappingData::new_checked(payload, opcode)?))
            }
        })
    }

    /// Bytes the data occupies.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        self.opcode().data_len()
    }

    /// Writes the data at the start of `payload`, which must hold
    /// [`OpRepr::buffer_len`] bytes.
    pub fn emit(&self, payload: &mut [u8]) {
        match self {
            Self::Announce => {}
            Self::Map(m) => m.emit(&mut MappingData::new_unchecked(payload)),
            Self::Peer(p) => p.emit(&mut MappingData::new_unchecked(payload)),
        }
    }
}

/// FILTER option data (§13.3): which remote peers may use a MAP mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterRepr {
    /// Significant bits of `remote_address` (96 + n for IPv4-mapped); 0 = any peer.
    pub prefix_len: u8,
    /// Remote peer port; 0 = any port.
    pub remote_port: u16,
    /// Remote peer address (prefix).
    pub remote_address: Ipv6Addr,
}

/// One option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionRepr {
    /// THIRD_PARTY (§13.1): the mapping is for this internal address, not the sender's.
    ThirdParty(Ipv6Addr),
    /// PREFER_FAILURE (§13.2): fail rather than assign another external endpoint.
    PreferFailure,
    /// FILTER (§13.3).
    Filter(FilterRepr),
    /// Any other option, kept for the server to judge (mandatory when `code < 128`).
    Unknown {
        /// Option code.
        code: u8,
        /// Data, padding excluded.
        data: Vec<u8>,
    },
}

impl OptionRepr {
    /// Reads an option, checking the lengths of the options this codec knows.
    pub fn parse<T: AsRef<[u8]>>(view: &OptionView<T>) -> Result<Self> {
        let code = view.code();
        let exact = |expected: u16| {
            let found = view.length();
            if found == expected {
                Ok(())
            } else {
                Err(Error::Option {
                    code,
                    problem: OptionProblem::Length { expected, found },
                })
            }
        };
        let data = view.data();
        Ok(match code {
            OPTION_THIRD_PARTY => {
                exact(THIRD_PARTY_LEN)?;
                Self::ThirdParty(get_ipv6(data, 0..16))
            }
            OPTION_PREFER_FAILURE => {
                exact(PREFER_FAILURE_LEN)?;
                Self::PreferFailure
            }
            OPTION_FILTER => {
                exact(FILTER_LEN)?;
                let prefix_len = data[field::FILTER_PREFIX_LEN];
                if prefix_len > FILTER_PREFIX_MAX {
                    return Err(Error::Option {
                        code,
                        problem: OptionProblem::PrefixLength(prefix_len),
                    });
                }
                Self::Filter(FilterRepr {
                    prefix_len,
                    remote_port: get_u16(data, field::FILTER_PORT),
                    remote_address: get_ipv6(data, field::FILTER_ADDRESS),
                })
            }
            _ => Self::Unknown {
                code,
                data: data.to_vec(),
            },
        })
    }

    /// Option code.
    #[must_use]
    pub const fn code(&self) -> u8 {
        match self {
            Self::ThirdParty(_) => OPTION_THIRD_PARTY,
            Self::PreferFailure => OPTION_PREFER_FAILURE,
            Self::Filter(_) => OPTION_FILTER,
            Self::Unknown { code, .. } => *code,
        }
    }

    /// Data length, padding excluded. Unknown data longer than 65535 bytes cannot be
    /// sent and is cut there.
    #[must_use]
    pub fn data_len(&self) -> u16 {
        match self {
            Self::ThirdParty(_) => THIRD_PARTY_LEN,
            Self::PreferFailure => PREFER_FAILURE_LEN,
            Self::Filter(_) => FILTER_LEN,
            Self::Unknown { data, .. } => u16::try_from(data.len()).unwrap_or(u16::MAX),
        }
    }

    /// Bytes the option occupies: header, data, padding.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        OPTION_HEADER_LEN + padded(usize::from(self.data_len()))
    }

    /// Writes the option at the start of `buf`, which must hold
    /// [`OptionRepr::buffer_len`] bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let mut view = OptionView::new_unchecked(buf);
        view.set_code(self.code());
        view.set_length(self.data_len());
        let data = view.data_mut();
        match self {
            Self::ThirdParty(addr) => data.copy_from_slice(&addr.octets()),
            Self::PreferFailure => {}
            Self::Filter(f) => {
                data[field::FILTER_RESERVED] = 0;
                data[field::FILTER_PREFIX_LEN] = f.prefix_len;
                data[field::FILTER_PORT].copy_from_slice(&f.remote_port.to_be_bytes());
                data[field::FILTER_ADDRESS].copy_from_slice(&f.remote_address.octets());
            }
            Self::Unknown { data: bytes, .. } => {
                let n = data.len();
                data.copy_from_slice(&bytes[..n]);
            }
        }
    }
}

fn parse_options(buf: &[u8]) -> Result<Vec<OptionRepr>> {
    Options::new(buf)
        .map(|view| OptionRepr::parse(&view?))
        .collect()
}

fn options_len(options: &[OptionRepr]) -> usize {
    options.iter().map(OptionRepr::buffer_len).sum()
}

fn emit_options(options: &[OptionRepr], mut buf: &mut [u8]) {
    for option in options {
        let (this, rest) = buf.split_at_mut(option.buffer_len());
        option.emit(this);
        buf = rest;
    }
}

/// A PCP request (§7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Requested lifetime in seconds; 0 deletes (MAP).
    pub lifetime: u32,
    /// The client's own address (IPv4-mapped for IPv4).
    pub client_address: Ipv6Addr,
    /// Opcode and its data.
    pub op: OpRepr,
    /// Options in the order received.
    pub options: Vec<OptionRepr>,
}

impl Request {
    /// Parses a request: version 2, R bit clear, at most 1100 bytes and a multiple of 4
    /// (§7), a known opcode with all its data, and well-framed options.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(Error::Version(packet.version()));
        }
        if packet.is_response() {
            return Err(Error::Direction);
        }
        let len = packet.len();
        if len > MAX_LEN || len % 4 != 0 {
            return Err(Error::Length(len));
        }
        let opcode = Opcode::from_wire(packet.opcode()).ok_or(Error::Opcode(packet.opcode()))?;
        let payload = packet.payload();
        let op = OpRepr::parse(opcode, payload)?;
        let options = parse_options(&payload[opcode.data_len()..])?;
        Ok(Self {
            lifetime: packet.lifetime(),
            client_address: packet.client_address(),
            op,
            options,
        })
    }

    /// Bytes the request occupies.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.op.buffer_len() + options_len(&self.options)
    }

    /// Writes the request into a packet of [`Request::buffer_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version(VERSION);
        packet.set_opcode(self.op.opcode().to_wire());
        packet.set_response(false);
        packet.clear_request_reserved();
        packet.set_lifetime(self.lifetime);
        packet.set_client_address(self.client_address);
        let payload = packet.payload_mut();
        let (op, options) = payload.split_at_mut(self.op.buffer_len());
        self.op.emit(op);
        emit_options(&self.options, options);
    }

    /// The request as a new buffer.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }
}

/// A PCP response (§7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The opcode answered.
    pub opcode: Opcode,
    /// Result code.
    pub result: ResultCode,
    /// Granted lifetime (success) or how long the error will persist.
    pub lifetime: u32,
    /// Server epoch time in seconds.
    pub epoch: u32,
    /// Opcode data; `None` only in error responses too short to carry it (such as
    /// UNSUPP_VERSION). When present it must be of `opcode`.
    pub op: Option<OpRepr>,
    /// Options.
    pub options: Vec<OptionRepr>,
}

impl Response {
    /// Parses a response: version 2, R bit set, at most 1100 bytes, a known opcode, its
    /// data (which only error responses may lack) and well-framed options.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(Error::Version(packet.version()));
        }
        if !packet.is_response() {
            return Err(Error::Direction);
        }
        let len = packet.len();
        if len > MAX_LEN {
            return Err(Error::Length(len));
        }
        let opcode = Opcode::from_wire(packet.opcode()).ok_or(Error::Opcode(packet.opcode()))?;
        let result = packet.result_code();
        let payload = packet.payload();
        let (op, options) = if payload.len() >= opcode.data_len() {
            let op = OpRepr::parse(opcode, payload)?;
            (Some(op), parse_options(&payload[opcode.data_len()..])?)
        } else if result == ResultCode::Success {
            return Err(Error::OpcodeData {
                opcode,
                len: payload.len(),
                need: opcode.data_len(),
            });
        } else {
            (None, Vec::new())
        };
        Ok(Self {
            opcode,
            result,
            lifetime: packet.lifetime(),
            epoch: packet.epoch(),
            op,
            options,
        })
    }

    /// Bytes the response occupies.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.op.map_or(0, |op| op.buffer_len()) + options_len(&self.options)
    }

    /// Writes the response into a packet of [`Response::buffer_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version(VERSION);
        packet.set_opcode(self.opcode.to_wire());
        packet.set_response(true);
        packet.set_result_code(self.result);
        packet.set_lifetime(self.lifetime);
        packet.set_epoch(self.epoch);
        packet.clear_response_reserved();
        let op_len = self.op.map_or(0, |op| op.buffer_len());
        let (op, options) = packet.payload_mut().split_at_mut(op_len);
        if let Some(data) = &self.op {
            data.emit(op);
        }
        emit_options(&self.options, options);
    }

    /// The response as a new buffer.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }
}

/// An error response built from the request bytes, as RFC 6887 §8.3 asks: the
/// request (at most 1100 bytes, zero-padded to a multiple of 4 and to a whole
/// header) copied, with the R bit set and the result code, lifetime and epoch time
/// filled in. Opcode data and options thus come back as the client sent them.
#[must_use]
pub fn error_response(request: &[u8], result: ResultCode, lifetime: u32, epoch: u32) -> Vec<u8> {
    let mut out = request[..request.len().min(MAX_LEN)].to_vec();
    out.resize(padded(out.len()).max(HEADER_LEN), 0);
    let mut packet = Packet::new_unchecked(&mut out[..]);
    packet.set_version(VERSION);
    packet.set_response(true);
    packet.set_result_code(result);
    packet.set_lifetime(lifetime);
    packet.set_epoch(epoch);
    packet.clear_response_reserved();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const NONCE: Nonce = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    /// MAP request from 10.0.1.5 for UDP 8080, suggesting 203.0.113.1:8080, lifetime
    /// 7200, with PREFER_FAILURE and a FILTER for 198.51.100.0/24 port 443.
    #[rustfmt::skip]
    const MAP_REQUEST: [u8; 116] = [
        // header: version 2, R=0 opcode 1, reserved, lifetime 7200
        0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x1c, 0x20,
        // client address ::ffff:10.0.1.5
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 1, 5,
        // nonce
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        // protocol 17, reserved, internal port 8080, suggested port 8080
        17, 0, 0, 0, 0x1f, 0x90, 0x1f, 0x90,
        // suggested address ::ffff:203.0.113.1
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 1,
        // PREFER_FAILURE: code 2, reserved, length 0
        0x02, 0x00, 0x00, 0x00,
        // FILTER: code 3, reserved, length 20; reserved, prefix 120, port 443
        0x03, 0x00, 0x00, 0x14, 0x00, 120, 0x01, 0xbb,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 0,
        // unknown optional option 200 with 3 data bytes and one padding byte
        200, 0x00, 0x00, 0x03, 0xaa, 0xbb, 0xcc, 0x00,
        // THIRD_PARTY: code 1, reserved, length 16, ::ffff:10.0.1.9
        0x01, 0x00, 0x00, 0x10,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 1, 9,
    ];

    fn mapped(a: [u8; 4]) -> Ipv6Addr {
        Ipv4Addr::from(a).to_ipv6_mapped()
    }

    fn map_request_repr() -> Request {
        Request {
            lifetime: 7200,
            client_address: mapped([10, 0, 1, 5]),
            op: OpRepr::Map(MapRepr {
                nonce: NONCE,
                protocol: PROTOCOL_UDP,
                internal_port: 8080,
                external_port: 8080,
                external_address: mapped([203, 0, 113, 1]),
            }),
            options: vec![
                OptionRepr::PreferFailure,
                OptionRepr::Filter(FilterRepr {
                    prefix_len: 120,
                    remote_port: 443,
                    remote_address: mapped([198, 51, 100, 0]),
                }),
                OptionRepr::Unknown {
                    code: 200,
                    data: vec![0xaa, 0xbb, 0xcc],
                },
                OptionRepr::ThirdParty(mapped([10, 0, 1, 9])),
            ],
        }
    }

    #[test]
    fn map_request_with_every_option_parses() {
        // rfc6887 7.1, 11.1, 13.1, 13.2, 13.3
        let packet = Packet::new_checked(&MAP_REQUEST[..]).unwrap();
        assert_eq!(packet.version(), 2);
        assert!(!packet.is_response());
        assert_eq!(packet.opcode(), 1);
        assert_eq!(packet.lifetime(), 7200);
        assert_eq!(Request::parse(&packet).unwrap(), map_request_repr());
    }

    #[test]
    fn map_request_emits_the_same_bytes() {
        // rfc6887 7.3: padding is zero
        let repr = map_request_repr();
        assert_eq!(repr.buffer_len(), MAP_REQUEST.len());
        assert_eq!(repr.to_bytes(), MAP_REQUEST);
    }

    #[rustfmt::skip]
    const MAP_RESPONSE: [u8; 64] = [
        // version 2, R=1 opcode 1, reserved, result 0, lifetime 3600
        0x02, 0x81, 0x00, 0x00, 0x00, 0x00, 0x0e, 0x10,
        // epoch 1234, 96 reserved bits
        0x00, 0x00, 0x04, 0xd2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        // nonce
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        // protocol 6, reserved, internal port 22, assigned port 40022
        6, 0, 0, 0, 0x00, 0x16, 0x9c, 0x56,
        // assigned address ::ffff:203.0.113.1
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 1,
        // PREFER_FAILURE echoed
        0x02, 0x00, 0x00, 0x00,
    ];

    fn map_response_repr() -> Response {
        Response {
            opcode: Opcode::Map,
            result: ResultCode::Success,
            lifetime: 3600,
            epoch: 1234,
            op: Some(OpRepr::Map(MapRepr {
                nonce: NONCE,
                protocol: PROTOCOL_TCP,
                internal_port: 22,
                external_port: 40022,
                external_address: mapped([203, 0, 113, 1]),
            })),
            options: vec![OptionRepr::PreferFailure],
        }
    }

    #[test]
    fn map_response_parses_and_emits() {
        // rfc6887 7.2, 11.1
        let packet = Packet::new_checked(&MAP_RESPONSE[..]).unwrap();
        assert!(packet.is_response());
        assert_eq!(packet.result_code(), ResultCode::Success);
        assert_eq!(packet.epoch(), 1234);
        assert_eq!(Response::parse(&packet).unwrap(), map_response_repr());
        assert_eq!(map_response_repr().to_bytes(), MAP_RESPONSE);
    }

    #[rustfmt::skip]
    const PEER_REQUEST: [u8; 80] = [
        0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x78,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 1, 5,
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        17, 0, 0, 0, 0x13, 0x88, 0x00, 0x00,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0,
        // remote port 3478, reserved
        0x0d, 0x96, 0x00, 0x00,
        // remote address ::ffff:198.51.100.7
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 7,
    ];

    #[test]
    fn peer_request_round_trips() {
        // rfc6887 12.1
        let repr = Request {
            lifetime: 120,
            client_address: mapped([10, 0, 1, 5]),
            op: OpRepr::Peer(PeerRepr {
                nonce: NONCE,
                protocol: PROTOCOL_UDP,
                internal_port: 5000,
                external_port: 0,
                external_address: mapped([0, 0, 0, 0]),
                remote_port: 3478,
                remote_address: mapped([198, 51, 100, 7]),
            }),
            options: vec![],
        };
        let packet = Packet::new_checked(&PEER_REQUEST[..]).unwrap();
        assert_eq!(Request::parse(&packet).unwrap(), repr);
        assert_eq!(repr.to_bytes(), PEER_REQUEST);
    }

    #[test]
    fn peer_response_round_trips() {
        // rfc6887 12.1
        let repr = Response {
            opcode: Opcode::Peer,
            result: ResultCode::Success,
            lifetime: 120,
            epoch: 7,
            op: Some(OpRepr::Peer(PeerRepr {
                nonce: NONCE,
                protocol: PROTOCOL_UDP,
                internal_port: 5000,
                external_port: 61000,
                external_address: mapped([203, 0, 113, 1]),
                remote_port: 3478,
                remote_address: mapped([198, 51, 100, 7]),
            })),
            options: vec![],
        };
        let bytes = repr.to_bytes();
        assert_eq!(bytes.len(), 80);
        assert_eq!(&bytes[..4], &[0x02, 0x82, 0x00, 0x00]);
        assert_eq!(&bytes[42..44], &61000u16.to_be_bytes());
        assert_eq!(&bytes[60..64], &[0x0d, 0x96, 0x00, 0x00]);
        let back = Response::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(back, repr);
    }

    #[rustfmt::skip]
    const ANNOUNCE_REQUEST: [u8; 24] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 1, 5,
    ];

    #[rustfmt::skip]
    const ANNOUNCE_RESPONSE: [u8; 24] = [
        0x02, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x2a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn announce_request_and_response_round_trip() {
        // rfc6887 14.1
        let req = Request {
            lifetime: 0,
            client_address: mapped([10, 0, 1, 5]),
            op: OpRepr::Announce,
            options: vec![],
        };
        assert_eq!(
            Request::parse(&Packet::new_checked(&ANNOUNCE_REQUEST[..]).unwrap()).unwrap(),
            req
        );
        assert_eq!(req.to_bytes(), ANNOUNCE_REQUEST);
        let resp = Response {
            opcode: Opcode::Announce,
            result: ResultCode::Success,
            lifetime: 0,
            epoch: 42,
            op: Some(OpRepr::Announce),
            options: vec![],
        };
        assert_eq!(resp.to_bytes(), ANNOUNCE_RESPONSE);
        assert_eq!(
            Response::parse(&Packet::new_checked(&ANNOUNCE_RESPONSE[..]).unwrap()).unwrap(),
            resp
        );
    }

    #[test]
    fn shorter_than_header_is_truncated() {
        // rfc6887 8.3: shorter than 24 bytes is dropped
        assert_eq!(
            Packet::new_checked(&ANNOUNCE_REQUEST[..23]).unwrap_err(),
            Error::Truncated { len: 23 }
        );
    }

    #[test]
    fn length_not_a_multiple_of_four_is_rejected() {
        // rfc6887 7: requests are a multiple of 4 bytes
        let mut bytes = ANNOUNCE_REQUEST.to_vec();
        bytes.push(0);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Request::parse(&packet).unwrap_err(), Error::Length(25));
    }

    #[test]
    fn longer_than_1100_bytes_is_rejected() {
        // rfc6887 7: at most 1100 bytes
        let mut bytes = ANNOUNCE_REQUEST.to_vec();
        bytes.resize(1104, 0);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Request::parse(&packet).unwrap_err(), Error::Length(1104));
        bytes.truncate(1100);
        // 1076 zero bytes are 269 empty options of code 0: framing is fine.
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Request::parse(&packet).unwrap().options.len(), 269);
    }

    #[test]
    fn map_without_its_data_is_short_opcode_data() {
        // rfc6887 8.3: too short for the opcode data
        let packet = Packet::new_checked(&MAP_REQUEST[..56]).unwrap();
        assert_eq!(
            Request::parse(&packet).unwrap_err(),
            Error::OpcodeData {
                opcode: Opcode::Map,
                len: 32,
                need: 36
            }
        );
    }

    #[test]
    fn unknown_opcode_and_wrong_version_and_direction() {
        let mut bytes = ANNOUNCE_REQUEST;
        bytes[1] = 9;
        let err = Request::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap_err();
        assert_eq!(err, Error::Opcode(9));
        bytes[1] = 0x80;
        let err = Request::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap_err();
        assert_eq!(err, Error::Direction);
        bytes[0] = 1;
        let err = Request::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap_err();
        assert_eq!(err, Error::Version(1));
    }

    #[test]
    fn option_past_the_end_is_malformed() {
        // rfc6887 7.3: option length beyond the message
        let mut bytes = MAP_REQUEST[..64].to_vec();
        bytes.extend_from_slice(&[0x03, 0x00, 0x00, 0x14, 0, 96, 0, 0]);
        let err = Request::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap_err();
        assert_eq!(
            err,
            Error::Option {
                code: 3,
                problem: OptionProblem::DataPastEnd(20)
            }
        );
    }

    #[test]
    fn option_padding_past_the_end_is_malformed() {
        // rfc6887 7.3: data padded to 4 bytes; a 1-byte option needs 8 bytes
        let view = OptionView::new_checked(&[200u8, 0, 0, 1, 0xee][..]).unwrap_err();
        assert_eq!(
            view,
            Error::Option {
                code: 200,
                problem: OptionProblem::PaddingPastEnd
            }
        );
        let err = OptionView::new_checked(&[1u8, 0][..]).unwrap_err();
        assert_eq!(
            err,
            Error::Option {
                code: 1,
                problem: OptionProblem::HeaderPastEnd
            }
        );
    }

    #[test]
    fn known_options_with_bad_lengths_are_malformed() {
        // rfc6887 13.1-13.3: fixed option lengths
        let third_party = [1u8, 0, 0, 4, 10, 0, 1, 9];
        let err = OptionRepr::parse(&OptionView::new_checked(&third_party[..]).unwrap());
        assert_eq!(
            err.unwrap_err(),
            Error::Option {
                code: 1,
                problem: OptionProblem::Length {
                    expected: 16,
                    found: 4
                }
            }
        );
        let prefer_failure = [2u8, 0, 0, 4, 0, 0, 0, 0];
        let err = OptionRepr::parse(&OptionView::new_checked(&prefer_failure[..]).unwrap());
        assert!(matches!(
            err,
            Err(Error::Option {
                code: 2,
                problem: OptionProblem::Length { .. }
            })
        ));
        let mut filter = [0u8; 24];
        filter[..4].copy_from_slice(&[3, 0, 0, 20]);
        filter[5] = 129;
        let err = OptionRepr::parse(&OptionView::new_checked(&filter[..]).unwrap());
        assert_eq!(
            err.unwrap_err(),
            Error::Option {
                code: 3,
                problem: OptionProblem::PrefixLength(129)
            }
        );
    }

    #[test]
    fn unknown_mandatory_option_is_kept_raw_for_the_server() {
        // rfc6887 7.3: the server, not the codec, answers UNSUPP_OPTION
        let mut bytes = ANNOUNCE_REQUEST.to_vec();
        bytes.extend_from_slice(&[0x7f, 0x00, 0x00, 0x00]);
        let req = Request::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(
            req.options,
            [OptionRepr::Unknown {
                code: 127,
                data: vec![]
            }]
        );
    }

    #[test]
    fn error_response_copies_the_request() {
        // rfc6887 8.3: error responses copy the request's fields
        let resp = error_response(&MAP_REQUEST, ResultCode::NotAuthorized, 1800, 99);
        assert_eq!(resp.len(), MAP_REQUEST.len());
        assert_eq!(&resp[..4], &[0x02, 0x81, 0x00, 0x02]);
        assert_eq!(&resp[4..8], &1800u32.to_be_bytes());
        assert_eq!(&resp[8..12], &99u32.to_be_bytes());
        assert_eq!(&resp[12..24], &[0; 12]);
        assert_eq!(&resp[24..], &MAP_REQUEST[24..]);
        let parsed = Response::parse(&Packet::new_checked(&resp[..]).unwrap()).unwrap();
        assert_eq!(parsed.result, ResultCode::NotAuthorized);
        assert_eq!(parsed.options, map_request_repr().options);
    }

    #[test]
    fn error_response_of_an_odd_or_huge_request_is_padded_or_cut() {
        // rfc6887 7, 8.3: responses are at most 1100 bytes and a multiple of 4
        let resp = error_response(
            &[2, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            ResultCode::UnsuppVersion,
            5,
            6,
        );
        assert_eq!(resp.len(), 24);
        assert_eq!(resp[1], 0x81);
        let resp = error_response(&[0xee; 1501], ResultCode::MalformedRequest, 5, 6);
        assert_eq!(resp.len(), 1100);
        let resp = error_response(&[0xee; 27], ResultCode::MalformedRequest, 5, 6);
        assert_eq!(resp.len(), 28);
        assert_eq!(resp[27], 0);
    }

    #[test]
    fn error_response_without_opcode_data_parses() {
        // rfc6887 9: UNSUPP_VERSION carries only the header
        let resp = error_response(&ANNOUNCE_REQUEST[..8], ResultCode::UnsuppVersion, 1800, 3);
        let mut bytes = resp.clone();
        bytes[1] = 0x81;
        let parsed = Response::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(parsed.op, None);
        assert_eq!(parsed.result, ResultCode::UnsuppVersion);
        bytes[3] = 0;
        assert!(matches!(
            Response::parse(&Packet::new_checked(&bytes[..]).unwrap()),
            Err(Error::OpcodeData { .. })
        ));
    }

    #[test]
    fn result_codes_round_trip_and_are_classed() {
        // rfc6887 7.4
        for v in 0..=255u8 {
            assert_eq!(ResultCode::from_wire(v).to_wire(), v);
        }
        assert_eq!(ResultCode::from_wire(13), ResultCode::ExcessiveRemotePeers);
        assert_eq!(ResultCode::from_wire(14), ResultCode::Unknown(14));
        let short: Vec<u8> = (0..14)
            .filter(|&v| ResultCode::from_wire(v).is_short_lived())
            .collect();
        assert_eq!(short, [7, 8, 10, 11]);
        assert_eq!(
            ResultCode::CannotProvideExternal.to_string(),
            "CANNOT_PROVIDE_EXTERNAL"
        );
    }
}
