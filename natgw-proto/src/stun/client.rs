//! The STUN client side, sans IO: Binding requests (with CHANGE-REQUEST for RFC
//! 5780 tests), reading a response to one transaction, and the retransmission
//! schedule (RFC 8489 §6.2.1, shortened for a command line: RTO 500 ms, doubling, at
//! most 3 transmissions). `natgw stun probe` and `natgw punch` drive it on sockets.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use serde::Serialize;

use super::wire::{Attribute, ChangeRequest, Class, Packet, Repr, MAGIC_COOKIE, METHOD_BINDING};

/// RFC 8489 §6.2.1 initial retransmission timeout.
pub const INITIAL_RTO: Duration = Duration::from_millis(500);
/// Transmissions per test (RFC 8489's Rc is 7; a command line should not wait 39.5 s).
pub const MAX_TRANSMISSIONS: u32 = 3;

/// When to (re)transmit a request, counted from the first transmission: 0, RTO, 3·RTO,
/// ... (the RTO doubles), at most [`MAX_TRANSMISSIONS`], all before `timeout`.
#[must_use]
pub fn transmit_offsets(timeout: Duration) -> Vec<Duration> {
    let mut offsets = vec![Duration::ZERO];
    let (mut at, mut rto) = (Duration::ZERO, INITIAL_RTO);
    while offsets.len() < MAX_TRANSMISSIONS as usize {
        at += rto;
        rto *= 2;
        if at >= timeout {
            break;
        }
        offsets.push(at);
    }
    offsets
}

/// What a Binding transaction got back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Seen {
    /// A success response.
    Response {
        /// Where it came from (as the socket saw it).
        from: SocketAddrV4,
        /// XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an older server.
        mapped: SocketAddrV4,
        /// RESPONSE-ORIGIN, if the server sent it.
        response_origin: Option<SocketAddrV4>,
        /// OTHER-ADDRESS (or RFC 3489 CHANGED-ADDRESS), if the server sent it.
        other_address: Option<SocketAddrV4>,
        /// SOFTWARE, if the server sent it.
        software: Option<String>,
    },
    /// An error response.
    Error {
        /// Where it came from.
        from: SocketAddrV4,
        /// ERROR-CODE.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// A success response without a usable (IPv4) mapped address.
    Unusable {
        /// Where it came from.
        from: SocketAddrV4,
    },
    /// No answer.
    Timeout {
        /// Requests sent.
        transmissions: u32,
        /// How long the test waited.
        waited_ms: u64,
    },
}

impl Seen {
    /// The mapped address of a success response.
    #[must_use]
    pub fn mapped(&self) -> Option<SocketAddrV4> {
        match self {
            Self::Response { mapped, .. } => Some(*mapped),
            _ => None,
        }
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Response { from, mapped, .. } => {
                write!(f, "mapped {mapped} (answer from {from})")
            }
            Self::Error { from, code, reason } => {
                write!(f, "error {code} \"{}\" from {from}", reason.trim_end())
            }
            Self::Unusable { from } => {
                write!(f, "answer from {from} without an IPv4 mapped address")
            }
            Self::Timeout {
                transmissions,
                waited_ms,
            } => write!(
                f,
                "no answer ({transmissions} transmissions, {:.1} s)",
                Duration::from_millis(*waited_ms).as_secs_f64()
            ),
        }
    }
}

/// Reads a Binding response to `transaction_id`; `None` for anything else (other
/// transactions, requests, garbage).
#[must_use]
pub fn interpret(datagram: &[u8], from: SocketAddrV4, transaction_id: &[u8; 12]) -> Option<Seen> {
    let packet = Packet::new_checked(datagram).ok()?;
    let reply = Repr::parse(&packet).ok()?;
    if reply.cookie != MAGIC_COOKIE
        || reply.transaction_id != *transaction_id
        || reply.method != METHOD_BINDING
    {
        return None;
    }
    let v4 = |a: &SocketAddr| match a {
        SocketAddr::V4(a) => Some(*a),
        SocketAddr::V6(_) => None,
    };
    match reply.class {
        Class::Success => {
            let xor = reply.find(|a| match a {
                Attribute::XorMappedAddress(a) => v4(a),
                _ => None,
            });
            let plain = reply.find(|a| match a {
                Attribute::MappedAddress(a) => v4(a),
                _ => None,
            });
            let Some(mapped) = xor.or(plain) else {
                return Some(Seen::Unusable { from });
            };
            Some(Seen::Response {
                from,
                mapped,
                response_origin: reply.find(|a| match a {
                    Attribute::ResponseOrigin(a) => v4(a),
                    _ => None,
                }),
                other_address: reply.find(|a| match a {
                    Attribute::OtherAddress(a) | Attribute::ChangedAddress(a) => v4(a),
                    _ => None,
                }),
                software: reply.find(|a| match a {
                    Attribute::Software(s) => Some((*s).to_owned()),
                    _ => None,
                }),
            })
        }
        Class::Error => {
            let (code, reason) = reply
                .find(|a| match a {
                    Attribute::ErrorCode(e) => Some((e.code, e.reason.to_owned())),
                    _ => None,
                })
                .unwrap_or((0, "no ERROR-CODE".to_owned()));
            Some(Seen::Error { from, code, reason })
        }
        Class::Request | Class::Indication => None,
    }
}

/// A Binding request with FINGERPRINT and, if any flag is set, CHANGE-REQUEST.
#[must_use]
pub fn binding_request(transaction_id: [u8; 12], change: ChangeRequest) -> Vec<u8> {
    let mut attributes = Vec::new();
    if change.any() {
        attributes.push(Attribute::ChangeRequest(change));
    }
    attributes.push(Attribute::Fingerprint);
    Repr {
        class: Class::Request,
        method: METHOD_BINDING,
        cookie: MAGIC_COOKIE,
        transaction_id,
        attributes,
    }
    .to_bytes()
}

/// A fresh random transaction id.
///
/// # Errors
/// When the system's random source cannot be read.
pub fn random_transaction_id() -> std::io::Result<[u8; 12]> {
    crate::util::rng::random_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3478);
    const OTHER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 3479);
    const PUBLIC: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 6000);
    const PUBLIC2: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 5), 6001);

    #[test]
    fn transmissions_follow_rfc8489_rto_doubling() {
        // rfc8489 §6.2.1: RTO 500 ms, doubled each time; here at most 3 transmissions.
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            transmit_offsets(Duration::from_secs(3)),
            ms(&[0, 500, 1500])
        );
        assert_eq!(transmit_offsets(Duration::from_secs(1)), ms(&[0, 500]));
        assert_eq!(transmit_offsets(Duration::from_millis(200)), ms(&[0]));
        assert_eq!(
            transmit_offsets(Duration::from_secs(60)),
            ms(&[0, 500, 1500])
        );
    }

    #[test]
    fn interpret_accepts_only_our_transaction() {
        let tid = [9; 12];
        let reply = Repr {
            class: Class::Success,
            method: METHOD_BINDING,
            cookie: MAGIC_COOKIE,
            transaction_id: tid,
            attributes: vec![
                Attribute::XorMappedAddress(SocketAddr::V4(PUBLIC)),
                Attribute::MappedAddress(SocketAddr::V4(PUBLIC2)),
                Attribute::OtherAddress(SocketAddr::V4(OTHER)),
                Attribute::Software("srv"),
                Attribute::Fingerprint,
            ],
        }
        .to_bytes();
        assert_eq!(
            interpret(&reply, SERVER, &tid),
            Some(Seen::Response {
                from: SERVER,
                mapped: PUBLIC,
                response_origin: None,
                other_address: Some(OTHER),
                software: Some("srv".to_owned()),
            })
        );
        assert_eq!(interpret(&reply, SERVER, &[8; 12]), None);
        assert_eq!(
            interpret(
                &binding_request(tid, ChangeRequest::default()),
                SERVER,
                &tid
            ),
            None
        );
        assert_eq!(interpret(b"junk", SERVER, &tid), None);
    }

    #[test]
    fn probe_requests_carry_change_request_only_when_asked() {
        let plain = binding_request([1; 12], ChangeRequest::default());
        assert_eq!(plain.len(), 28); // header + FINGERPRINT
        let both = ChangeRequest {
            change_ip: true,
            change_port: true,
        };
        let changed = binding_request([1; 12], both);
        let repr = Repr::parse(&Packet::new_checked(&changed[..]).unwrap()).unwrap();
        assert_eq!(repr.attributes[0], Attribute::ChangeRequest(both));
    }
}
