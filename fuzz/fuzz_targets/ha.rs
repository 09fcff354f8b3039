//! The replication channel (natgw_proto::ha) on arbitrary bytes: no panics; records
//! that parse emit back to bytes that parse to the same records; a receiver fed
//! anything either refuses it or delivers what a sender could have sent. The
//! harness knows the key, so bodies also reach the record decoder inside valid,
//! authenticated frames.

#![no_main]

use libfuzzer_sys::fuzz_target;
use natgw_proto::ha::engine::{session_key, Receiver, Sender};
use natgw_proto::ha::wire::{self, Header, Kind};

const PSK: &[u8] = b"fuzz key";

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = wire::parse_records(data) {
        let bytes = wire::emit_records(&records);
        assert_eq!(wire::parse_records(&bytes).as_ref(), Ok(&records));
    }
    let _ = Header::parse(data);
    let _ = wire::parse_ack(data);

    // Raw bytes at both ends of a fresh connection: refused or kept, never a panic.
    let mut r = Receiver::new(PSK, [2; 16]);
    let _ = r.receive(data);
    let mut s = Sender::new(PSK, [1; 16]);
    let _ = s.receive(data, std::time::Instant::now());

    // The body inside a valid frame after a real handshake.
    let mut r = Receiver::new(PSK, [2; 16]);
    let hello = wire::frame(PSK, b'I', Kind::Hello, 0, &[1; 16]);
    assert_eq!(r.receive(&hello), Ok(Vec::new()));
    let key = session_key(PSK, &[1; 16], &[2; 16]);
    let body = &data[..data.len().min(wire::MAX_BODY)];
    let frame = wire::frame(&key, b'I', Kind::Records, 1, body);
    match r.receive(&frame) {
        Ok(deliveries) => {
            assert_eq!(deliveries.len(), 1);
            assert!(wire::parse_records(body).is_ok());
        }
        Err(_) => assert!(wire::parse_records(body).is_err()),
    }
});
