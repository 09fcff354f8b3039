//! The replication channel's frames and records.
//!
//! A frame (all numbers big-endian):
//!
//! ```text
//!  0       4    5      6      8         12        20          20+len     +32
//!  | "NGHA" | v1 | kind | zero | body len | seq (u64) | body ...  | HMAC-SHA256 |
//! ```
//!
//! The tag is HMAC-SHA256 over the direction byte (`I` from the side that connected,
//! `R` from the side that accepted) followed by header and body: under the pre-shared
//! key for a [`Kind::Hello`], under the session key (see
//! [`crate::ha::engine::session_key`]) for everything after it. A body is at most
//! [`MAX_BODY`] bytes; a longer length is refused before anything is read.
//!
//! A [`Kind::Records`] body is a count (u16) and that many [`Record`]s, each a type
//! byte and fixed fields (an explicit mapping has a few bounded lists at its end).

use std::net::{Ipv4Addr, SocketAddrV4};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The first bytes of every frame.
pub const MAGIC: [u8; 4] = *b"NGHA";
/// The protocol version this code speaks.
pub const VERSION: u8 = 1;
/// Header length.
pub const HEADER: usize = 20;
/// Tag length (HMAC-SHA256).
pub const TAG: usize = 32;
/// Longest body accepted or sent.
pub const MAX_BODY: usize = 64 * 1024;
/// Length of a handshake nonce.
pub const NONCE: usize = 16;
/// An age or idle time that does not apply ("never sent anything").
pub const NEVER: u32 = u32::MAX;
/// Most port spans and filters an explicit mapping carries.
pub const MAX_LIST: usize = 16;

mod field {
    use crate::wire::Field;
    pub const MAGIC: Field = 0..4;
    pub const VERSION: usize = 4;
    pub const KIND: usize = 5;
    pub const ZERO: Field = 6..8;
    pub const LEN: Field = 8..12;
    pub const SEQ: Field = 12..20;
}

/// HMAC-SHA256.
pub type HmacSha256 = Hmac<Sha256>;

/// An HMAC-SHA256 keyed with `key`.
#[must_use]
pub fn hmac(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The handshake: the sender's nonce, authenticated with the pre-shared key.
    Hello = 1,
    /// A batch of records.
    Records = 2,
    /// Everything up to a sequence number is installed.
    Ack = 3,
    /// A full resync starts: the records up to [`Kind::ResyncEnd`] are the whole table.
    ResyncBegin = 4,
    /// The full resync is complete: what it did not name is gone.
    ResyncEnd = 5,
    /// Keepalive.
    Ping = 6,
}

impl Kind {
    /// The kind of byte `v`.
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Hello,
            2 => Self::Records,
            3 => Self::Ack,
            4 => Self::ResyncBegin,
            5 => Self::ResyncEnd,
            6 => Self::Ping,
            _ => return None,
        })
    }
}

/// Why bytes are not a frame (or not a valid body).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not this protocol.
    #[error("not a replication frame (bad magic)")]
    Magic,
    /// Another version.
    #[error("unsupported replication protocol version {0}")]
    Version(u8),
    /// Unknown frame kind.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// Reserved bits set.
    #[error("reserved header bits set")]
    Reserved,
    /// Body longer than [`MAX_BODY`].
    #[error("frame body of {0} bytes (at most {MAX_BODY})")]
    TooLong(usize),
    /// The tag does not match.
    #[error("bad HMAC: wrong key, or the frame was altered")]
    Tag,
    /// A body shorter than its content says.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A record type or field value that is not allowed.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Bytes left over after the content.
    #[error("{0} bytes after the last record")]
    Trailing(usize),
}

/// A frame's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What it is.
    pub kind: Kind,
    /// Body length.
    pub len: usize,
    /// Sequence number in its direction (0 for the hello).
    pub seq: u64,
}

impl Header {
    /// Parses the first [`HEADER`] bytes of `buf` (`None`: fewer are there yet).
    ///
    /// # Errors
    /// Not a frame of this version, or a body longer than [`MAX_BODY`].
    pub fn parse(buf: &[u8]) -> Result<Option<Self>, WireError> {
        if buf.len() < HEADER {
            return Ok(None);
        }
        if buf[field::MAGIC] != MAGIC {
            return Err(WireError::Magic);
        }
        if buf[field::VERSION] != VERSION {
            return Err(WireError::Version(buf[field::VERSION]));
        }
        let kind = Kind::from_u8(buf[field::KIND]).ok_or(WireError::Kind(buf[field::KIND]))?;
        if buf[field::ZERO] != [0, 0] {
            return Err(WireError::Reserved);
        }
        let len = crate::wire::get_u32(buf, field::LEN) as usize;
        if len > MAX_BODY {
            return Err(WireError::TooLong(len));
        }
        let mut seq = [0; 8];
        seq.copy_from_slice(&buf[field::SEQ]);
        Ok(Some(Self {
            kind,
            len,
            seq: u64::from_be_bytes(seq),
        }))
    }

    /// The header's bytes.
    #[must_use]
    pub fn emit(&self) -> [u8; HEADER] {
        let mut b = [0; HEADER];
        b[field::MAGIC].copy_from_slice(&MAGIC);
        b[field::VERSION] = VERSION;
        b[field::KIND] = self.kind as u8;
        crate::wire::set_u32(
            &mut b,
            field::LEN,
            u32::try_from(self.len).unwrap_or(u32::MAX),
        );
        b[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    /// Length of the whole frame, tag included.
    #[must_use]
    pub const fn frame_len(&self) -> usize {
        HEADER + self.len + TAG
    }
}

/// The tag of a frame of `direction` with `header` and `body` under `key`.
#[must_use]
pub fn tag(key: &[u8], direction: u8, header: &[u8], body: &[u8]) -> [u8; TAG] {
    let mut mac = hmac(key);
    mac.update(&[direction]);
    mac.update(header);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Builds a whole frame.
///
/// # Panics
/// Never for a body of at most [`MAX_BODY`] bytes (the callers' bound).
#[must_use]
pub fn frame(key: &[u8], direction: u8, kind: Kind, seq: u64, body: &[u8]) -> Vec<u8> {
    debug_assert!(body.len() <= MAX_BODY);
    let header = Header {
        kind,
        len: body.len(),
        seq,
    }
    .emit();
    let mut out = Vec::with_capacity(HEADER + body.len() + TAG);
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    out.extend_from_slice(&tag(key, direction, &header, body));
    out
}

/// Checks the tag of the whole frame `buf` (of `header`) under `key`, in constant
/// time; returns its body.
///
/// # Errors
/// [`WireError::Tag`] when it does not match.
pub fn open<'a>(
    key: &[u8],
    direction: u8,
    header: &Header,
    buf: &'a [u8],
) -> Result<&'a [u8], WireError> {
    let end = HEADER + header.len;
    if buf.len() < end + TAG {
        return Err(WireError::Truncated("frame"));
    }
    let mut mac = hmac(key);
    mac.update(&[direction]);
    mac.update(&buf[..end]);
    mac.verify_slice(&buf[end..end + TAG])
        .map_err(|_| WireError::Tag)?;
    Ok(&buf[HEADER..end])
}

/// A mapping as the active holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MappingRecord {
    /// IP protocol (UDP, TCP, ICMP).
    pub proto: u8,
    /// Who made it (natgw's `Origin` as its byte).
    pub origin: u8,
    /// Its inbound filter (natgw's `FilterMode` as its byte).
    pub filter: u8,
    /// TCP flags seen outbound.
    pub tcp_flags_out: u8,
    /// TCP flags seen inbound.
    pub tcp_flags_in: u8,
    /// Internal endpoint (ICMP: the query identifier as the port).
    pub internal: SocketAddrV4,
    /// External endpoint.
    pub external: SocketAddrV4,
    /// Milliseconds since it was created.
    pub age_ms: u32,
    /// Milliseconds since its last outbound packet ([`NEVER`]: none).
    pub idle_out_ms: u32,
    /// Milliseconds since its last inbound packet ([`NEVER`]: none).
    pub idle_in_ms: u32,
}

/// A session (one remote endpoint of a mapping) as the active holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionRecord {
    /// IP protocol.
    pub proto: u8,
    /// TCP state (natgw's `TcpState` as its byte).
    pub tcp_state: u8,
    /// External endpoint of the mapping.
    pub external: SocketAddrV4,
    /// Remote endpoint (port 0: the address-only record).
    pub remote: SocketAddrV4,
    /// Milliseconds since it was created.
    pub age_ms: u32,
    /// Milliseconds since its last outbound packet ([`NEVER`]: none).
    pub idle_out_ms: u32,
    /// Milliseconds since its last inbound packet ([`NEVER`]: none).
    pub idle_in_ms: u32,
}

/// An explicit mapping's record (PCP, NAT-PMP, UPnP): what the standby's explicit
/// mapping table needs beyond the maps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExplicitRecord {
    /// IP protocol (UDP or TCP).
    pub proto: u8,
    /// Who holds it (natgw's `Origin` as its byte).
    pub origin: u8,
    /// Internal endpoint.
    pub internal: SocketAddrV4,
    /// External endpoint.
    pub external: SocketAddrV4,
    /// Seconds of lifetime left ([`NEVER`]: none ends it).
    pub lifetime_s: u32,
    /// The holder's nonce.
    pub nonce: [u8; 12],
    /// Where the holder's requests came from (`None`: unknown).
    pub client: Option<SocketAddrV4>,
    /// External port spans policy allowed, `(first, last)`; at most [`MAX_LIST`].
    pub ports: Vec<(u16, u16)>,
    /// PCP filters: remote prefix, its length, remote port; at most [`MAX_LIST`].
    pub filters: Vec<(Ipv4Addr, u8, u16)>,
    /// The holder's description (UPnP), at most 255 bytes of UTF-8.
    pub description: String,
}

/// One change of the active's table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Record {
    /// A mapping was created or refreshed (the whole of it).
    Mapping(MappingRecord),
    /// A session was created or refreshed.
    Session(SessionRecord),
    /// The mapping of `internal` (of protocol `proto`) on `external` is gone.
    MappingGone {
        /// IP protocol.
        proto: u8,
        /// Internal endpoint.
        internal: SocketAddrV4,
        /// External endpoint it had.
        external: SocketAddrV4,
    },
    /// A session is gone.
    SessionGone {
        /// IP protocol.
        proto: u8,
        /// External endpoint.
        external: SocketAddrV4,
        /// Remote endpoint.
        remote: SocketAddrV4,
    },
    /// An explicit mapping was created or renewed.
    Explicit(ExplicitRecord),
    /// An explicit mapping ended (its maps' entries follow as a [`Record::MappingGone`]
    /// or stay as a traffic mapping).
    ExplicitGone {
        /// IP protocol.
        proto: u8,
        /// Internal endpoint.
        internal: SocketAddrV4,
    },
}

mod record_type {
    pub const MAPPING: u8 = 1;
    pub const SESSION: u8 = 2;
    pub const MAPPING_GONE: u8 = 3;
    pub const SESSION_GONE: u8 = 4;
    pub const EXPLICIT: u8 = 5;
    pub const EXPLICIT_GONE: u8 = 6;
}

/// Reads fields off the front of a body.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn addr(&mut self) -> Result<Ipv4Addr, WireError> {
        Ok(Ipv4Addr::from(self.u32()?))
    }
    fn endpoint(&mut self) -> Result<SocketAddrV4, WireError> {
        let a = self.addr()?;
        Ok(SocketAddrV4::new(a, self.u16()?))
    }
}

fn put_endpoint(out: &mut Vec<u8>, e: SocketAddrV4) {
    out.extend_from_slice(&e.ip().octets());
    out.extend_from_slice(&e.port().to_be_bytes());
}

impl Record {
    /// Appends the record's bytes to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Self::Mapping(m) => {
                out.extend_from_slice(&[
                    record_type::MAPPING,
                    m.proto,
                    m.origin,
                    m.filter,
                    m.tcp_flags_out,
                    m.tcp_flags_in,
                ]);
                put_endpoint(out, m.internal);
                put_endpoint(out, m.external);
                for v in [m.age_ms, m.idle_out_ms, m.idle_in_ms] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Self::Session(s) => {
                out.extend_from_slice(&[record_type::SESSION, s.proto, s.tcp_state]);
                put_endpoint(out, s.external);
                put_endpoint(out, s.remote);
                for v in [s.age_ms, s.idle_out_ms, s.idle_in_ms] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Self::MappingGone {
                proto,
                internal,
                external,
            } => {
                out.extend_from_slice(&[record_type::MAPPING_GONE, *proto]);
                put_endpoint(out, *internal);
                put_endpoint(out, *external);
            }
            Self::SessionGone {
                proto,
                external,
                remote,
            } => {
                out.extend_from_slice(&[record_type::SESSION_GONE, *proto]);
                put_endpoint(out, *external);
                put_endpoint(out, *remote);
            }
            Self::Explicit(e) => {
                out.extend_from_slice(&[record_type::EXPLICIT, e.proto, e.origin]);
                put_endpoint(out, e.internal);
                put_endpoint(out, e.external);
                out.extend_from_slice(&e.lifetime_s.to_be_bytes());
                out.extend_from_slice(&e.nonce);
                put_endpoint(
                    out,
                    e.client
                        .unwrap_or_else(|| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
                );
                let ports = &e.ports[..e.ports.len().min(MAX_LIST)];
                out.push(u8::try_from(ports.len()).unwrap_or(0));
                for (first, last) in ports {
                    out.extend_from_slice(&first.to_be_bytes());
                    out.extend_from_slice(&last.to_be_bytes());
                }
                let filters = &e.filters[..e.filters.len().min(MAX_LIST)];
                out.push(u8::try_from(filters.len()).unwrap_or(0));
                for (addr, len, port) in filters {
                    out.extend_from_slice(&addr.octets());
                    out.push(*len);
                    out.extend_from_slice(&port.to_be_bytes());
                }
                let mut d = e.description.len().min(255);
                while !e.description.is_char_boundary(d) {
                    d -= 1;
                }
                out.push(u8::try_from(d).unwrap_or(0));
                out.extend_from_slice(&e.description.as_bytes()[..d]);
            }
            Self::ExplicitGone { proto, internal } => {
                out.extend_from_slice(&[record_type::EXPLICIT_GONE, *proto]);
                put_endpoint(out, *internal);
            }
        }
    }

    /// The most bytes one record takes.
    pub const MAX_LEN: usize = 3 + 12 + 4 + 12 + 6 + 1 + MAX_LIST * 4 + 1 + MAX_LIST * 7 + 1 + 255;

    fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let t = r.u8()?;
        Ok(match t {
            record_type::MAPPING => {
                r.what = "mapping record";
                let (proto, origin, filter, tcp_flags_out, tcp_flags_in) =
                    (r.u8()?, r.u8()?, r.u8()?, r.u8()?, r.u8()?);
                Self::Mapping(MappingRecord {
                    proto,
                    origin,
                    filter,
                    tcp_flags_out,
                    tcp_flags_in,
                    internal: r.endpoint()?,
                    external: r.endpoint()?,
                    age_ms: r.u32()?,
                    idle_out_ms: r.u32()?,
                    idle_in_ms: r.u32()?,
                })
            }
            record_type::SESSION => {
                r.what = "session record";
                let (proto, tcp_state) = (r.u8()?, r.u8()?);
                Self::Session(SessionRecord {
                    proto,
                    tcp_state,
                    external: r.endpoint()?,
                    remote: r.endpoint()?,
                    age_ms: r.u32()?,
                    idle_out_ms: r.u32()?,
                    idle_in_ms: r.u32()?,
                })
            }
            record_type::MAPPING_GONE => {
                r.what = "mapping deletion";
                Self::MappingGone {
                    proto: r.u8()?,
                    internal: r.endpoint()?,
                    external: r.endpoint()?,
                }
            }
            record_type::SESSION_GONE => {
                r.what = "session deletion";
                Self::SessionGone {
                    proto: r.u8()?,
                    external: r.endpoint()?,
                    remote: r.endpoint()?,
                }
            }
            record_type::EXPLICIT => {
                r.what = "explicit mapping record";
                let (proto, origin) = (r.u8()?, r.u8()?);
                let internal = r.endpoint()?;
                let external = r.endpoint()?;
                let lifetime_s = r.u32()?;
                let mut nonce = [0; 12];
                nonce.copy_from_slice(r.take(12)?);
                let client = Some(r.endpoint()?).filter(|c| !c.ip().is_unspecified());
                let n = usize::from(r.u8()?);
                if n > MAX_LIST {
                    return Err(WireError::Invalid("number of port spans"));
                }
                let mut ports = Vec::with_capacity(n);
                for _ in 0..n {
                    ports.push((r.u16()?, r.u16()?));
                }
                let n = usize::from(r.u8()?);
                if n > MAX_LIST {
                    return Err(WireError::Invalid("number of filters"));
                }
                let mut filters = Vec::with_capacity(n);
                for _ in 0..n {
                    let addr = r.addr()?;
                    let len = r.u8()?;
                    if len > 32 {
                        return Err(WireError::Invalid("filter prefix length"));
                    }
                    filters.push((addr, len, r.u16()?));
                }
                let d = usize::from(r.u8()?);
                let description = std::str::from_utf8(r.take(d)?)
                    .map_err(|_| WireError::Invalid("description (not UTF-8)"))?
                    .to_owned();
                Self::Explicit(ExplicitRecord {
                    proto,
                    origin,
                    internal,
                    external,
                    lifetime_s,
                    nonce,
                    client,
                    ports,
                    filters,
                    description,
                })
            }
            record_type::EXPLICIT_GONE => {
                r.what = "explicit mapping deletion";
                Self::ExplicitGone {
                    proto: r.u8()?,
                    internal: r.endpoint()?,
                }
            }
            _ => return Err(WireError::Invalid("record type")),
        })
    }
}

/// A [`Kind::Records`] body: the count, then the records.
#[must_use]
pub fn emit_records(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + records.len() * 32);
    out.extend_from_slice(&u16::try_from(records.len()).unwrap_or(0).to_be_bytes());
    for r in records {
        r.emit(&mut out);
    }
    out
}

/// Parses a [`Kind::Records`] body.
///
/// # Errors
/// Truncated, an unknown record type, a list over its bound, or bytes left over.
pub fn parse_records(body: &[u8]) -> Result<Vec<Record>, WireError> {
    let mut r = Reader {
        buf: body,
        what: "record count",
    };
    let n = usize::from(r.u16()?);
    // Every record takes at least 8 bytes: a count the body cannot hold is refused
    // before anything is allocated for it.
    if n > body.len() / 8 {
        return Err(WireError::Truncated("records"));
    }
    let mut records = Vec::with_capacity(n);
    for _ in 0..n {
        records.push(Record::parse(&mut r)?);
    }
    if !r.buf.is_empty() {
        return Err(WireError::Trailing(r.buf.len()));
    }
    Ok(records)
}

/// Parses an [`Kind::Ack`] body: the sequence number acknowledged.
///
/// # Errors
/// Not 8 bytes.
pub fn parse_ack(body: &[u8]) -> Result<u64, WireError> {
    let b: [u8; 8] = body.try_into().map_err(|_| WireError::Truncated("ack"))?;
    Ok(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn mapping() -> Record {
        Record::Mapping(MappingRecord {
            proto: 17,
            origin: 0,
            filter: 0,
            tcp_flags_out: 0,
            tcp_flags_in: 0,
            internal: "10.0.1.2:5000".parse().unwrap(),
            external: "192.0.2.1:40000".parse().unwrap(),
            age_ms: 1500,
            idle_out_ms: 20,
            idle_in_ms: NEVER,
        })
    }

    fn explicit() -> Record {
        Record::Explicit(ExplicitRecord {
            proto: 6,
            origin: 1,
            internal: "10.0.1.2:22".parse().unwrap(),
            external: "192.0.2.1:2222".parse().unwrap(),
            lifetime_s: 3600,
            nonce: [7; 12],
            client: Some("10.0.1.2:5351".parse().unwrap()),
            ports: vec![(1024, 65535)],
            filters: vec![(Ipv4Addr::new(198, 51, 100, 0), 24, 0)],
            description: "ssh é".to_owned(),
        })
    }

    #[test]
    fn every_record_survives_a_round_trip() {
        let records = vec![
            mapping(),
            Record::Session(SessionRecord {
                proto: 6,
                tcp_state: 3,
                external: "192.0.2.1:40000".parse().unwrap(),
                remote: "198.51.100.2:80".parse().unwrap(),
                age_ms: 1,
                idle_out_ms: 2,
                idle_in_ms: 3,
            }),
            Record::MappingGone {
                proto: 1,
                internal: "10.0.1.2:7".parse().unwrap(),
                external: "192.0.2.1:1030".parse().unwrap(),
            },
            Record::SessionGone {
                proto: 17,
                external: "192.0.2.1:40000".parse().unwrap(),
                remote: "198.51.100.2:0".parse().unwrap(),
            },
            explicit(),
            Record::ExplicitGone {
                proto: 6,
                internal: "10.0.1.2:22".parse().unwrap(),
            },
        ];
        let body = emit_records(&records);
        assert_eq!(parse_records(&body).unwrap(), records);
        let mut one = Vec::new();
        explicit().emit(&mut one);
        assert!(one.len() <= Record::MAX_LEN);
    }

    #[test]
    fn truncated_and_trailing_bodies_are_refused() {
        let body = emit_records(&[mapping(), explicit()]);
        for cut in 0..body.len() {
            assert!(parse_records(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = body.clone();
        long.push(0);
        assert_eq!(parse_records(&long), Err(WireError::Trailing(1)));
        // A count far beyond what the body holds is refused without allocating.
        assert!(parse_records(&[0xff, 0xff, 1, 2, 3]).is_err());
    }

    #[test]
    fn unknown_types_and_oversized_lists_are_refused() {
        assert_eq!(
            parse_records(&[0, 1, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(WireError::Invalid("record type"))
        );
        let mut body = emit_records(&[explicit()]);
        // The port span count sits after type, proto, origin, two endpoints, the
        // lifetime, the nonce and the client.
        let at = 2 + 3 + 6 + 6 + 4 + 12 + 6;
        body[at] = u8::try_from(MAX_LIST + 1).unwrap();
        assert_eq!(
            parse_records(&body),
            Err(WireError::Invalid("number of port spans"))
        );
    }

    #[test]
    fn headers_are_checked_before_the_body_is_read() {
        let f = frame(b"k", b'I', Kind::Ping, 9, &[]);
        let h = Header::parse(&f).unwrap().unwrap();
        assert_eq!((h.kind, h.len, h.seq), (Kind::Ping, 0, 9));
        assert_eq!(open(b"k", b'I', &h, &f), Ok(&[][..]));
        assert_eq!(open(b"x", b'I', &h, &f), Err(WireError::Tag));
        assert_eq!(open(b"k", b'R', &h, &f), Err(WireError::Tag), "reflected");
        assert_eq!(Header::parse(&f[..HEADER - 1]), Ok(None));
        let mut bad = f.clone();
        bad[0] = b'X';
        assert_eq!(Header::parse(&bad), Err(WireError::Magic));
        let mut bad = f.clone();
        bad[4] = 2;
        assert_eq!(Header::parse(&bad), Err(WireError::Version(2)));
        let mut bad = f.clone();
        bad[5] = 77;
        assert_eq!(Header::parse(&bad), Err(WireError::Kind(77)));
        let mut bad = f.clone();
        bad[8..12].copy_from_slice(&(u32::try_from(MAX_BODY).unwrap() + 1).to_be_bytes());
        assert_eq!(Header::parse(&bad), Err(WireError::TooLong(MAX_BODY + 1)));
        let mut bad = f;
        bad[7] = 1;
        assert_eq!(Header::parse(&bad), Err(WireError::Reserved));
    }
}
