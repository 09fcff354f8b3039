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

/// One message of a stream that may also carry TURN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A punch-protocol message.
    Punch(Vec<u8>),
    /// A STUN message: Binding, or a TURN request or indication.
    Stun(Vec<u8>),
    /// TURN ChannelData, without its padding.
    ChannelData(Vec<u8>),
}

/// Reads the next message from a stream that carries STUN, the punch protocol and,
/// when `turn`, TURN (RFC 8656 §12.5: STUN messages up to 64 KiB, ChannelData padded
/// to 4 bytes). A message with top bits 01 is ChannelData, except that one starting
/// with "NP" is a punch message until the stream has carried a TURN request
/// (`spoke_turn`, set here).
///
/// # Errors
/// As [`read_frame`].
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
    turn: bool,
    spoke_turn: &mut bool,
) -> io::Result<Incoming> {
    if !turn {
        return Ok(match read_frame(reader).await? {
            Frame::Punch(b) => Incoming::Punch(b),
            Frame::Stun(b) => Incoming::Stun(b),
        });
    }
    let invalid = |e: &dyn fmt::Display| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut frame = vec![0; 4];
    reader.read_exact(&mut frame).await?;
    let length = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
    if classify(&frame) == Protocol::Stun {
        if length % 4 != 0 {
            return Err(invalid(&"STUN length not a multiple of 4"));
        }
        frame.resize(stun::HEADER_LEN + length, 0);
        reader.read_exact(&mut frame[4..]).await?;
        if crate::services::turn::is_turn_stun(&frame) {
            *spoke_turn = true;
        }
        return Ok(Incoming::Stun(frame));
    }
    // Every number with top bits 01 is a channel natgw accepts (0x4000..=0x7FFF, see
    // `natgw_proto::turn::wire::CHANNEL_MAX`).
    if frame[0] >> 6 == 1 && (*spoke_turn || !frame.starts_with(&wire::MAGIC)) {
        let len = 4 + length;
        frame.resize(stun::padded(len), 0);
        reader.read_exact(&mut frame[4..]).await?;
        frame.truncate(len);
        return Ok(Incoming::ChannelData(frame));
    }
    frame.resize(wire::HEADER_LEN, 0);
    reader.read_exact(&mut frame[4..]).await?;
    let len = wire::frame_len(&frame).map_err(|e| invalid(&e))?;
    frame.resize(len, 0);
    reader.read_exact(&mut frame[wire::HEADER_LEN..]).await?;
    Ok(Incoming::Punch(frame))
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

    #[tokio::test]
    async fn a_turn_stream_carries_channel_data_and_punch_messages() {
        let punch = unknown_peer();
        let stun = binding_request([1; 12], ChangeRequest::default());
        let mut allocate = stun.clone();
        allocate[1] = 0x03;
        // ChannelData on 0x4001 with 3 bytes, padded to 8; then on 0x4E50 ("NP").
        let mut bytes = punch.clone();
        bytes.extend(&allocate);
        bytes.extend([0x40, 0x01, 0, 3, 7, 8, 9, 0]);
        bytes.extend([b'N', b'P', 0, 1, 5, 0, 0, 0]);
        let mut reader = &bytes[..];
        let mut spoke = false;
        assert_eq!(
            read_message(&mut reader, true, &mut spoke).await.unwrap(),
            Incoming::Punch(punch)
        );
        assert!(!spoke);
        assert_eq!(
            read_message(&mut reader, true, &mut spoke).await.unwrap(),
            Incoming::Stun(allocate)
        );
        assert!(spoke);
        assert_eq!(
            read_message(&mut reader, true, &mut spoke).await.unwrap(),
            Incoming::ChannelData(vec![0x40, 0x01, 0, 3, 7, 8, 9])
        );
        assert_eq!(
            read_message(&mut reader, true, &mut spoke).await.unwrap(),
            Incoming::ChannelData(vec![b'N', b'P', 0, 1, 5])
        );
        // RFC 5766's upper channels, which coturn's clients bind, are ChannelData too.
        assert_eq!(
            read_message(&mut &[0x5e, 0x0c, 0, 1, 9, 0, 0, 0][..], true, &mut spoke)
                .await
                .unwrap(),
            Incoming::ChannelData(vec![0x5e, 0x0c, 0, 1, 9])
        );
        // A STUN length that is not a multiple of 4 breaks the stream.
        let e = read_message(&mut &[0x00, 0x03, 0, 3, 0, 0, 0, 0][..], true, &mut spoke)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
