//! NAT-PMP messages (RFC 6886, version 0): the external address request and the UDP
//! and TCP mapping requests, and their responses.
//!
//! Same shape as [`super::wire`]: [`Packet`] is a typed view over the bytes, and
//! [`Request`] / [`Response`] are the plain representations with `parse` and `emit`.
//! NAT-PMP shares UDP port 5351 with PCP; the first byte (version 0 here, 2 for PCP)
//! tells them apart.

use crate::wire::{get_u16, get_u32};
use std::fmt;
use std::net::Ipv4Addr;

/// NAT-PMP version (RFC 6886 §3).
pub const VERSION: u8 = 0;
/// Opcode: what is the external address (§3.2).
pub const OP_EXTERNAL_ADDRESS: u8 = 0;
/// Opcode: map a UDP port (§3.3).
pub const OP_MAP_UDP: u8 = 1;
/// Opcode: map a TCP port (§3.3).
pub const OP_MAP_TCP: u8 = 2;
/// Added to the request opcode in responses (§3).
pub const RESPONSE_BIT: u8 = 0x80;
/// External address request length.
pub const EXTERNAL_ADDRESS_REQUEST_LEN: usize = 2;
/// Mapping request length.
pub const MAP_REQUEST_LEN: usize = 12;
/// Version, opcode, result code and epoch: all an "unsupported version" response holds
/// (§3.5, erratum 3618).
pub const BARE_RESPONSE_LEN: usize = 8;
/// External address response length.
pub const EXTERNAL_ADDRESS_RESPONSE_LEN: usize = 12;
/// Mapping response length.
pub const MAP_RESPONSE_LEN: usize = 16;

/// Byte ranges of the NAT-PMP formats.
mod field {
    pub use crate::wire::Field;

    pub const VERSION: usize = 0;
    pub const OPCODE: usize = 1;

    // Mapping request (§3.3).
    pub const REQUEST_RESERVED: Field = 2..4;
    pub const INTERNAL_PORT: Field = 4..6;
    pub const SUGGESTED_PORT: Field = 6..8;
    pub const REQUESTED_LIFETIME: Field = 8..12;

    // Responses (§3.2, §3.3).
    pub const RESULT_CODE: Field = 2..4;
    pub const EPOCH: Field = 4..8;
    pub const EXTERNAL_ADDRESS: Field = 8..12;
    pub const RESPONSE_INTERNAL_PORT: Field = 8..10;
    pub const MAPPED_PORT: Field = 10..12;
    pub const LIFETIME: Field = 12..16;
}

/// NAT-PMP result codes (§3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// 0.
    Success,
    /// 1.
    UnsupportedVersion,
    /// 2: not authorized or refused (mapping disabled, policy).
    NotAuthorized,
    /// 3: e.g. no external address yet.
    NetworkFailure,
    /// 4: cannot create more mappings now.
    OutOfResources,
    /// 5.
    UnsupportedOpcode,
    /// Any other value.
    Unknown(u16),
}

impl ResultCode {
    /// Wire value.
    #[must_use]
    pub const fn to_wire(self) -> u16 {
        match self {
            Self::Success => 0,
            Self::UnsupportedVersion => 1,
            Self::NotAuthorized => 2,
            Self::NetworkFailure => 3,
            Self::OutOfResources => 4,
            Self::UnsupportedOpcode => 5,
            Self::Unknown(v) => v,
        }
    }

    /// The code with this wire value.
    #[must_use]
    pub const fn from_wire(value: u16) -> Self {
        match value {
            0 => Self::Success,
            1 => Self::UnsupportedVersion,
            2 => Self::NotAuthorized,
            3 => Self::NetworkFailure,
            4 => Self::OutOfResources,
            5 => Self::UnsupportedOpcode,
            v => Self::Unknown(v),
        }
    }

    /// Short name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::UnsupportedVersion => "UNSUPPORTED_VERSION",
            Self::NotAuthorized => "NOT_AUTHORIZED",
            Self::NetworkFailure => "NETWORK_FAILURE",
            Self::OutOfResources => "OUT_OF_RESOURCES",
            Self::UnsupportedOpcode => "UNSUPPORTED_OPCODE",
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

/// The protocol a mapping request names through its opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapProtocol {
    /// Opcode 1.
    Udp,
    /// Opcode 2.
    Tcp,
}

impl MapProtocol {
    /// Request opcode.
    #[must_use]
    pub const fn opcode(self) -> u8 {
        match self {
            Self::Udp => OP_MAP_UDP,
            Self::Tcp => OP_MAP_TCP,
        }
    }

    /// The protocol of a request opcode.
    #[must_use]
    pub const fn from_opcode(op: u8) -> Option<Self> {
        match op {
            OP_MAP_UDP => Some(Self::Udp),
            OP_MAP_TCP => Some(Self::Tcp),
            _ => None,
        }
    }
}

/// Why bytes are not a valid NAT-PMP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Too short for its opcode (or for version and opcode).
    #[error("{len} bytes is too short for this NAT-PMP message ({need} needed)")]
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Not version 0.
    #[error("version {0} is not NAT-PMP version 0")]
    Version(u8),
    /// A response where a request was expected, or the reverse.
    #[error("opcode bit 7 does not match the message direction")]
    Direction,
    /// A request opcode other than 0, 1, 2 (the server answers UNSUPPORTED_OPCODE).
    #[error("opcode {0} is not a NAT-PMP request opcode")]
    Opcode(u8),
}

/// Result of the codec.
pub type Result<T> = core::result::Result<T, Error>;

/// A typed view of a NAT-PMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking; getters panic when it is too short for them.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer holding at least version and opcode.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that version and opcode are there; the rest depends on the opcode and
    /// is checked by [`Request::parse`] and [`Response::parse`].
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < 2 {
            Err(Error::Truncated { len, need: 2 })
        } else {
            Ok(())
        }
    }

    /// Message length.
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

    /// Opcode byte, response bit included.
    pub fn opcode(&self) -> u8 {
        self.buffer.as_ref()[field::OPCODE]
    }

    /// Whether the response bit is set.
    pub fn is_response(&self) -> bool {
        self.opcode() & RESPONSE_BIT != 0
    }

    /// Mapping request: internal port.
    pub fn internal_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::INTERNAL_PORT)
    }

    /// Mapping request: suggested external port (0 = no preference).
    pub fn suggested_external_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SUGGESTED_PORT)
    }

    /// Mapping request: requested lifetime in seconds (0 = delete).
    pub fn requested_lifetime(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::REQUESTED_LIFETIME)
    }

    /// Response: result code.
    pub fn result_code(&self) -> ResultCode {
        ResultCode::from_wire(get_u16(self.buffer.as_ref(), field::RESULT_CODE))
    }

    /// Response: seconds since the start of the server's epoch.
    pub fn epoch(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::EPOCH)
    }

    /// External address response: the address.
    pub fn external_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_u32(self.buffer.as_ref(), field::EXTERNAL_ADDRESS))
    }

    /// Mapping response: internal port.
    pub fn response_internal_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::RESPONSE_INTERNAL_PORT)
    }

    /// Mapping response: mapped external port.
    pub fn mapped_external_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::MAPPED_PORT)
    }

    /// Mapping response: granted lifetime.
    pub fn lifetime(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::LIFETIME)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version and opcode byte.
    pub fn set_header(&mut self, version: u8, opcode: u8) {
        let buf = self.buffer.as_mut();
        buf[field::VERSION] = version;
        buf[field::OPCODE] = opcode;
    }

    /// Mapping request: zeroes the reserved bytes.
    pub fn clear_request_reserved(&mut self) {
        self.buffer.as_mut()[field::REQUEST_RESERVED].fill(0);
    }

    /// Mapping request: sets the internal port.
    pub fn set_internal_port(&mut self, value: u16) {
        self.buffer.as_mut()[field::INTERNAL_PORT].copy_from_slice(&value.to_be_bytes());
    }

    /// Mapping request: sets the suggested external port.
    pub fn set_suggested_external_port(&mut self, value: u16) {
        self.buffer.as_mut()[field::SUGGESTED_PORT].copy_from_slice(&value.to_be_bytes());
    }

    /// Mapping request: sets the requested lifetime.
    pub fn set_requested_lifetime(&mut self, value: u32) {
        self.buffer.as_mut()[field::REQUESTED_LIFETIME].copy_from_slice(&value.to_be_bytes());
    }

    /// Response: sets the result code.
    pub fn set_result_code(&mut self, value: ResultCode) {
        self.buffer.as_mut()[field::RESULT_CODE].copy_from_slice(&value.to_wire().to_be_bytes());
    }

    /// Response: sets the epoch.
    pub fn set_epoch(&mut self, value: u32) {
        self.buffer.as_mut()[field::EPOCH].copy_from_slice(&value.to_be_bytes());
    }

    /// External address response: sets the address.
    pub fn set_external_address(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::EXTERNAL_ADDRESS].copy_from_slice(&value.octets());
    }

    /// Mapping response: sets the internal port.
    pub fn set_response_internal_port(&mut self, value: u16) {
        self.buffer.as_mut()[field::RESPONSE_INTERNAL_PORT].copy_from_slice(&value.to_be_bytes());
    }

    /// Mapping response: sets the mapped external port.
    pub fn set_mapped_external_port(&mut self, value: u16) {
        self.buffer.as_mut()[field::MAPPED_PORT].copy_from_slice(&value.to_be_bytes());
    }

    /// Mapping response: sets the granted lifetime.
    pub fn set_lifetime(&mut self, value: u32) {
        self.buffer.as_mut()[field::LIFETIME].copy_from_slice(&value.to_be_bytes());
    }
}

/// A NAT-PMP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Opcode 0: what is the external address (§3.2).
    ExternalAddress,
    /// Opcodes 1 and 2: create, renew or delete a mapping (§3.3, §3.4).
    Map {
        /// UDP or TCP.
        protocol: MapProtocol,
        /// Internal port; 0 with lifetime 0 deletes all of the client's mappings of
        /// this protocol.
        internal_port: u16,
        /// Suggested external port; 0 = no preference.
        suggested_external_port: u16,
        /// Requested lifetime in seconds; 0 deletes.
        lifetime: u32,
    },
}

impl Request {
    /// Parses a request. Bytes beyond the request's length are ignored.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(Error::Version(packet.version()));
        }
        if packet.is_response() {
            return Err(Error::Direction);
        }
        let op = packet.opcode();
        if op == OP_EXTERNAL_ADDRESS {
            return Ok(Self::ExternalAddress);
        }
        let protocol = MapProtocol::from_opcode(op).ok_or(Error::Opcode(op))?;
        if packet.len() < MAP_REQUEST_LEN {
            return Err(Error::Truncated {
                len: packet.len(),
                need: MAP_REQUEST_LEN,
            });
        }
        Ok(Self::Map {
            protocol,
            internal_port: packet.internal_port(),
            suggested_external_port: packet.suggested_external_port(),
            lifetime: packet.requested_lifetime(),
        })
    }

    /// Bytes the request occupies.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::ExternalAddress => EXTERNAL_ADDRESS_REQUEST_LEN,
            Self::Map { .. } => MAP_REQUEST_LEN,
        }
    }

    /// Writes the request into a packet of [`Request::buffer_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        match *self {
            Self::ExternalAddress => packet.set_header(VERSION, OP_EXTERNAL_ADDRESS),
            Self::Map {
                protocol,
                internal_port,
                suggested_external_port,
                lifetime,
            } => {
                packet.set_header(VERSION, protocol.opcode());
                packet.clear_request_reserved();
                packet.set_internal_port(internal_port);
                packet.set_suggested_external_port(suggested_external_port);
                packet.set_requested_lifetime(lifetime);
            }
        }
    }

    /// The request as a new buffer.
    #[must_use]
    pub fn to_bytes(self) -> Vec<u8> {
        let mut buf = vec![0; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }
}

/// A NAT-PMP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Opcode 128 (§3.2).
    ExternalAddress {
        /// Result.
        result: ResultCode,
        /// Seconds since start of epoch.
        epoch: u32,
        /// External address (0.0.0.0 when unknown).
        address: Ipv4Addr,
    },
    /// Opcodes 129 and 130 (§3.3).
    Map {
        /// UDP or TCP.
        protocol: MapProtocol,
        /// Result.
        result: ResultCode,
        /// Seconds since start of epoch.
        epoch: u32,
        /// Internal port, as requested.
        internal_port: u16,
        /// Mapped external port (0 when none).
        external_port: u16,
        /// Granted lifetime (0 when none).
        lifetime: u32,
    },
    /// Version, opcode, result and epoch only: what an "unsupported version" response
    /// holds (§3.5), and what a truncated answer to another opcode is read as.
    Bare {
        /// The request opcode answered (response bit cleared).
        opcode: u8,
        /// Result.
        result: ResultCode,
        /// Seconds since start of epoch.
        epoch: u32,
    },
}

impl Response {
    /// Parses a response.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(Error::Version(packet.version()));
        }
        if !packet.is_response() {
            return Err(Error::Direction);
        }
        let len = packet.len();
        if len < BARE_RESPONSE_LEN {
            return Err(Error::Truncated {
                len,
                need: BARE_RESPONSE_LEN,
            });
        }
        let op = packet.opcode();
        let (result, epoch) = (packet.result_code(), packet.epoch());
        let base = op & !RESPONSE_BIT;
        let protocol = MapProtocol::from_opcode(base).filter(|_| len >= MAP_RESPONSE_LEN);
        Ok(
            if base == OP_EXTERNAL_ADDRESS && len >= EXTERNAL_ADDRESS_RESPONSE_LEN {
                Self::ExternalAddress {
                    result,
                    epoch,
                    address: packet.external_address(),
                }
            } else if let Some(protocol) = protocol {
                Self::Map {
                    protocol,
                    result,
                    epoch,
                    internal_port: packet.response_internal_port(),
                    external_port: packet.mapped_external_port(),
                    lifetime: packet.lifetime(),
                }
            } else {
                Self::Bare {
                    opcode: base,
                    result,
                    epoch,
                }
            },
        )
    }

    /// Result code.
    #[must_use]
    pub const fn result(&self) -> ResultCode {
        match self {
            Self::ExternalAddress { result, .. }
            | Self::Map { result, .. }
            | Self::Bare { result, .. } => *result,
        }
    }

    /// Epoch.
    #[must_use]
    pub const fn epoch(&self) -> u32 {
        match self {
            Self::ExternalAddress { epoch, .. }
            | Self::Map { epoch, .. }
            | Self::Bare { epoch, .. } => *epoch,
        }
    }

    /// Bytes the response occupies.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::ExternalAddress { .. } => EXTERNAL_ADDRESS_RESPONSE_LEN,
            Self::Map { .. } => MAP_RESPONSE_LEN,
            Self::Bare { .. } => BARE_RESPONSE_LEN,
        }
    }

    /// Writes the response into a packet of [`Response::buffer_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        match *self {
            Self::ExternalAddress {
                result,
                epoch,
                address,
            } => {
                packet.set_header(VERSION, RESPONSE_BIT | OP_EXTERNAL_ADDRESS);
                packet.set_result_code(result);
                packet.set_epoch(epoch);
                packet.set_external_address(address);
            }
            Self::Map {
                protocol,
                result,
                epoch,
                internal_port,
                external_port,
                lifetime,
            } => {
                packet.set_header(VERSION, RESPONSE_BIT | protocol.opcode());
                packet.set_result_code(result);
                packet.set_epoch(epoch);
                packet.set_response_internal_port(internal_port);
                packet.set_mapped_external_port(external_port);
                packet.set_lifetime(lifetime);
            }
            Self::Bare {
                opcode,
                result,
                epoch,
            } => {
                packet.set_header(VERSION, opcode | RESPONSE_BIT);
                packet.set_result_code(result);
                packet.set_epoch(epoch);
            }
        }
    }

    /// The response as a new buffer.
    #[must_use]
    pub fn to_bytes(self) -> Vec<u8> {
        let mut buf = vec![0; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }
}

/// The answer to a request with an opcode the server does not support (§3.5): the
/// entire request (at most `max_len` bytes, padded to at least 4) returned with the
/// response bit set and result code 5.
#[must_use]
pub fn unsupported_opcode_response(request: &[u8], max_len: usize) -> Vec<u8> {
    let mut out = request[..request.len().min(max_len)].to_vec();
    if out.len() < 4 {
        out.resize(4, 0);
    }
    let mut packet = Packet::new_unchecked(&mut out[..]);
    let op = packet.opcode();
    packet.set_header(VERSION, op | RESPONSE_BIT);
    packet.set_result_code(ResultCode::UnsupportedOpcode);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_address_request_and_response() {
        // rfc6886 3.2
        let req = [0u8, 0];
        assert_eq!(
            Request::parse(&Packet::new_checked(&req[..]).unwrap()).unwrap(),
            Request::ExternalAddress
        );
        assert_eq!(Request::ExternalAddress.to_bytes(), req);
        #[rustfmt::skip]
        let resp = [
            0u8, 128, 0, 0,
            0, 0, 0x01, 0x00, // epoch 256
            203, 0, 113, 1,
        ];
        let repr = Response::ExternalAddress {
            result: ResultCode::Success,
            epoch: 256,
            address: Ipv4Addr::new(203, 0, 113, 1),
        };
        assert_eq!(
            Response::parse(&Packet::new_checked(&resp[..]).unwrap()).unwrap(),
            repr
        );
        assert_eq!(repr.to_bytes(), resp);
    }

    #[rustfmt::skip]
    const MAP_TCP_REQUEST: [u8; 12] = [
        0, 2, 0, 0,
        0x1f, 0x90, // internal 8080
        0x1f, 0x91, // suggested 8081
        0, 0, 0x1c, 0x20, // 7200 s
    ];

    #[test]
    fn map_requests_for_udp_and_tcp() {
        // rfc6886 3.3
        let repr = Request::Map {
            protocol: MapProtocol::Tcp,
            internal_port: 8080,
            suggested_external_port: 8081,
            lifetime: 7200,
        };
        assert_eq!(
            Request::parse(&Packet::new_checked(&MAP_TCP_REQUEST[..]).unwrap()).unwrap(),
            repr
        );
        assert_eq!(repr.to_bytes(), MAP_TCP_REQUEST);
        let mut udp = MAP_TCP_REQUEST;
        udp[1] = 1;
        let parsed = Request::parse(&Packet::new_checked(&udp[..]).unwrap()).unwrap();
        assert!(matches!(
            parsed,
            Request::Map {
                protocol: MapProtocol::Udp,
                ..
            }
        ));
    }

    #[test]
    fn map_response_round_trips() {
        // rfc6886 3.3
        #[rustfmt::skip]
        let resp = [
            0u8, 129, 0, 0,
            0, 0, 0, 10,
            0x1f, 0x90, 0x9c, 0x40, // internal 8080, mapped 40000
            0, 0, 0x0e, 0x10, // 3600 s
        ];
        let repr = Response::Map {
            protocol: MapProtocol::Udp,
            result: ResultCode::Success,
            epoch: 10,
            internal_port: 8080,
            external_port: 40000,
            lifetime: 3600,
        };
        assert_eq!(
            Response::parse(&Packet::new_checked(&resp[..]).unwrap()).unwrap(),
            repr
        );
        assert_eq!(repr.to_bytes(), resp);
    }

    #[test]
    fn unsupported_version_response_is_eight_bytes() {
        // rfc6886 3.5 (erratum 3618: opcode 128)
        let repr = Response::Bare {
            opcode: 0,
            result: ResultCode::UnsupportedVersion,
            epoch: 77,
        };
        let bytes = repr.to_bytes();
        assert_eq!(bytes, [0, 128, 0, 1, 0, 0, 0, 77]);
        assert_eq!(
            Response::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap(),
            repr
        );
    }

    #[test]
    fn truncated_map_request_and_bad_headers_are_errors() {
        // rfc6886 3.3: a mapping request is 12 bytes
        let err = Request::parse(&Packet::new_checked(&MAP_TCP_REQUEST[..11]).unwrap());
        assert_eq!(err.unwrap_err(), Error::Truncated { len: 11, need: 12 });
        assert_eq!(
            Packet::new_checked(&[0u8][..]).unwrap_err(),
            Error::Truncated { len: 1, need: 2 }
        );
        let err = Request::parse(&Packet::new_checked(&[1u8, 0][..]).unwrap());
        assert_eq!(err.unwrap_err(), Error::Version(1));
        let err = Request::parse(&Packet::new_checked(&[0u8, 129][..]).unwrap());
        assert_eq!(err.unwrap_err(), Error::Direction);
        let err = Request::parse(&Packet::new_checked(&[0u8, 3][..]).unwrap());
        assert_eq!(err.unwrap_err(), Error::Opcode(3));
    }

    #[test]
    fn unsupported_opcode_returns_the_request() {
        // rfc6886 3.5: the entire request with the top bit and result 5
        let resp = unsupported_opcode_response(&[0, 9, 0, 0, 0xaa, 0xbb], 1100);
        assert_eq!(resp, [0, 0x89, 0, 5, 0xaa, 0xbb]);
        let resp = unsupported_opcode_response(&[0, 9], 1100);
        assert_eq!(resp, [0, 0x89, 0, 5]);
        assert_eq!(unsupported_opcode_response(&[0; 2000], 1100).len(), 1100);
    }

    #[test]
    fn result_codes_round_trip() {
        // rfc6886 3.5
        for v in 0..10u16 {
            assert_eq!(ResultCode::from_wire(v).to_wire(), v);
        }
        assert_eq!(ResultCode::from_wire(4), ResultCode::OutOfResources);
        assert_eq!(ResultCode::from_wire(6).to_string(), "UNKNOWN(6)");
    }
}
