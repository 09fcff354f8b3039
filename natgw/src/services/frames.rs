//! Reading the next message from a TCP stream that carries both STUN and the punch
//! protocol (see `natgw_proto::punch::demux`).

use std::fmt;
use std::io;

use natgw_proto::punch::demux::{classify, stun_frame_len, Frame, Protocol};
use natgw_proto::punch::wire;
use natgw_proto::stun::wire as stun;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Reads the next message from a stream: a STUN message or a punch message.
///
/// # Errors
/// End of stream (`UnexpectedEof`), a read error, or a header that frames neither
/// (`InvalidData`: the stream cannot be resynchronised).
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Frame> {
    // The punch header is the shorter of the two: read it, then decide.
    let mut frame = vec![0; wire::HEADER_LEN];
    reader.read_exact(&mut frame).await?;
    let invalid = |e: &dyn fmt::Display| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    if classify(&frame) == Protocol::Stun {
        frame.resize(stun::HEADER_LEN, 0);
        reader.read_exact(&mut frame[wire::HEADER_LEN..]).await?;
        let len = stun_frame_len(&frame).map_err(|e| invalid(&e))?;
        frame.resize(len, 0);
        reader.read_exact(&mut frame[stun::HEADER_LEN..]).await?;
        return Ok(Frame::Stun(frame));
    }
    let len = wire::frame_len(&frame).map_err(|e| invalid(&e))?;
    frame.resize(len, 0);
    reader.read_exact(&mut frame[wire::HEADER_LEN..]).await?;
    Ok(Frame::Punch(frame))
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_proto::punch::wire::{Message, PeerId, Repr};
    use natgw_proto::stun::client::binding_request;
    use natgw_proto::stun::wire::ChangeRequest;

    fn unknown_peer() -> Vec<u8> {
        Repr {
            transaction: 9,
            message: Message::UnknownPeer(PeerId::new("b").unwrap()),
        }
        .to_bytes()
    }

    #[tokio::test]
    async fn a_stream_carries_both_protocols_in_turn() {
        let stun = binding_request([1; 12], ChangeRequest::default());
        let punch = unknown_peer();
        let mut bytes = stun.clone();
        bytes.extend(&punch);
        bytes.extend(&stun);
        let mut reader = &bytes[..];
        assert_eq!(
            read_frame(&mut reader).await.unwrap(),
            Frame::Stun(stun.clone())
        );
        assert_eq!(read_frame(&mut reader).await.unwrap(), Frame::Punch(punch));
        assert_eq!(read_frame(&mut reader).await.unwrap(), Frame::Stun(stun));
        let eof = read_frame(&mut reader).await.unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);

        let mut garbage = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        let e = read_frame(&mut garbage).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut huge = binding_request([1; 12], ChangeRequest::default());
        huge[2] = 0xff;
        let e = read_frame(&mut &huge[..]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
}
