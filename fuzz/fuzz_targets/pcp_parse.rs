//! The PCP and NAT-PMP parsers on arbitrary bytes: no panics, and whatever parses
//! emits back to bytes that parse to the same representation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use natgw_proto::pcp::{natpmp, wire};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = wire::Packet::new_checked(data) {
        if let Ok(request) = wire::Request::parse(&packet) {
            let bytes = request.to_bytes();
            // A request is consumed whole: same length, only reserved bits and
            // padding normalised.
            assert_eq!(bytes.len(), data.len());
            let again = wire::Request::parse(&wire::Packet::new_unchecked(&bytes[..]));
            assert_eq!(again.as_ref(), Ok(&request));
        }
        if let Ok(response) = wire::Response::parse(&packet) {
            let bytes = response.to_bytes();
            assert!(bytes.len() <= data.len());
            let again = wire::Response::parse(&wire::Packet::new_unchecked(&bytes[..]));
            assert_eq!(again.as_ref(), Ok(&response));
        }
    }
    for result in [
        wire::ResultCode::MalformedRequest,
        wire::ResultCode::UnsuppVersion,
    ] {
        let error = wire::error_response(data, result, 1800, 7);
        assert!(error.len() <= wire::MAX_LEN && error.len().is_multiple_of(4));
        assert!(error.len() >= wire::HEADER_LEN);
    }
    for option in wire::Options::new(data) {
        let Ok(view) = option else { break };
        if let Ok(repr) = wire::OptionRepr::parse(&view) {
            let mut buf = vec![0; repr.buffer_len()];
            repr.emit(&mut buf);
            let back = wire::OptionView::new_checked(&buf[..]).unwrap();
            assert_eq!(wire::OptionRepr::parse(&back).unwrap(), repr);
        }
    }

    if let Ok(packet) = natpmp::Packet::new_checked(data) {
        if let Ok(request) = natpmp::Request::parse(&packet) {
            let bytes = request.to_bytes();
            let again = natpmp::Request::parse(&natpmp::Packet::new_unchecked(&bytes[..]));
            assert_eq!(again, Ok(request));
        }
        if let Ok(response) = natpmp::Response::parse(&packet) {
            let bytes = response.to_bytes();
            let again = natpmp::Response::parse(&natpmp::Packet::new_unchecked(&bytes[..]));
            assert_eq!(again, Ok(response));
        }
    }
    let unsupported = natpmp::unsupported_opcode_response(data, wire::MAX_LEN);
    assert!(unsupported.len() <= wire::MAX_LEN.max(4));
});
