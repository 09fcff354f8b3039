//! The replication engines, without sockets or clocks: bytes and the time go in,
//! bytes to send and what happened come out.
//!
//! - [`Channel`]: one direction pair of one TCP connection. Each side opens with a
//!   [`Kind::Hello`] carrying a fresh random nonce, tagged with the pre-shared key.
//!   Everything after is tagged with the session key derived from the key and both
//!   nonces ([`session_key`]), so a frame recorded from another connection fails its
//!   tag, and carries a sequence number one above the previous one in its
//!   direction, so a frame replayed, dropped or reordered within the connection is
//!   refused. Any error ends the connection; the caller connects again and the
//!   active resyncs.
//! - [`Sender`] (the active): batches records into frames of at most
//!   [`wire::MAX_BODY`] bytes, brackets a full resync, matches acknowledgements to
//!   the frames in flight and reports the lag (age of the oldest unacknowledged
//!   frame). A peer that does not keep up is dropped ([`ChannelError::Backlog`])
//!   rather than buffered without bound.
//! - [`Receiver`] (the standby): hands over the records of each frame and
//!   acknowledges what the caller says it installed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hmac::Mac as _;

use super::wire::{self, Header, Kind, Record, WireError, HEADER, MAX_BODY, NONCE, TAG};

/// Label mixed into the session key.
const SESSION_LABEL: &[u8] = b"natgw-ha-v1 session";

/// Most bytes a [`Sender`] keeps queued for a peer that does not read them.
pub const MAX_BACKLOG: usize = 64 * 1024 * 1024;

/// Which end of the connection a side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The side that connected (the active).
    Initiator,
    /// The side that accepted (the standby).
    Responder,
}

impl Side {
    const fn direction(self) -> u8 {
        match self {
            Self::Initiator => b'I',
            Self::Responder => b'R',
        }
    }
    const fn other(self) -> Self {
        match self {
            Self::Initiator => Self::Responder,
            Self::Responder => Self::Initiator,
        }
    }
}

/// Why a connection must end.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// A frame that is not one, or fails its tag.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// A sequence number that is not the next one: a replay, a loss or a reordering.
    #[error("sequence number {got} where {expected} was due (replayed or reordered frame)")]
    Sequence {
        /// The one due.
        expected: u64,
        /// The one received.
        got: u64,
    },
    /// A frame the handshake does not allow here.
    #[error("handshake: {0}")]
    Handshake(&'static str),
    /// A frame this side never receives.
    #[error("unexpected {0:?} frame from the peer")]
    Unexpected(Kind),
    /// More than [`MAX_BACKLOG`] bytes wait for a peer that does not read them.
    #[error("the peer does not keep up: more than {MAX_BACKLOG} bytes queued")]
    Backlog,
}

/// The session key of a connection: HMAC-SHA256 under the pre-shared key over a
/// label and both sides' nonces.
#[must_use]
pub fn session_key(psk: &[u8], initiator: &[u8; NONCE], responder: &[u8; NONCE]) -> [u8; 32] {
    let mut mac = wire::hmac(psk);
    mac.update(SESSION_LABEL);
    mac.update(initiator);
    mac.update(responder);
    mac.finalize().into_bytes().into()
}

/// A frame the channel delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A batch of records, with its sequence number.
    Records(u64, Vec<Record>),
    /// Everything up to this sequence number is installed.
    Ack(u64),
    /// A full resync starts (its sequence number).
    ResyncBegin(u64),
    /// The full resync ended (its sequence number).
    ResyncEnd(u64),
    /// Keepalive.
    Ping,
}

/// One connection's framing, authentication and sequence numbers.
#[derive(Debug)]
pub struct Channel {
    psk: Vec<u8>,
    side: Side,
    nonce: [u8; NONCE],
    key: Option<[u8; 32]>,
    send_seq: u64,
    recv_seq: u64,
    inbuf: Vec<u8>,
    out: VecDeque<Vec<u8>>,
    out_bytes: usize,
}

impl Channel {
    /// A channel for `side` with pre-shared key `psk` and a fresh random `nonce`; its
    /// hello is queued at once.
    #[must_use]
    pub fn new(psk: &[u8], side: Side, nonce: [u8; NONCE]) -> Self {
        let mut ch = Self {
            psk: psk.to_vec(),
            side,
            nonce,
            key: None,
            send_seq: 0,
            recv_seq: 0,
            inbuf: Vec::new(),
            out: VecDeque::new(),
            out_bytes: 0,
        };
        let hello = wire::frame(psk, side.direction(), Kind::Hello, 0, &nonce);
        ch.queue(hello);
        ch
    }

    /// Whether the handshake is done (frames other than the hello may flow).
    #[must_use]
    pub const fn is_open(&self) -> bool {
        self.key.is_some()
    }

    fn queue(&mut self, frame: Vec<u8>) {
        self.out_bytes += frame.len();
        self.out.push_back(frame);
    }

    /// Bytes queued and not yet taken by [`Self::poll_transmit`].
    #[must_use]
    pub const fn backlog(&self) -> usize {
        self.out_bytes
    }

    /// The next bytes to write to the connection.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let f = self.out.pop_front()?;
        self.out_bytes -= f.len();
        Some(f)
    }

    /// Sends a frame of `kind` with `body` (at most [`MAX_BODY`] bytes); its
    /// sequence number.
    ///
    /// # Errors
    /// Before the handshake is done, or with [`MAX_BACKLOG`] bytes already queued.
    pub fn send(&mut self, kind: Kind, body: &[u8]) -> Result<u64, ChannelError> {
        let key = self.key.ok_or(ChannelError::Handshake("not open yet"))?;
        if self.out_bytes > MAX_BACKLOG {
            return Err(ChannelError::Backlog);
        }
        self.send_seq += 1;
        let f = wire::frame(&key, self.side.direction(), kind, self.send_seq, body);
        self.queue(f);
        Ok(self.send_seq)
    }

    /// Takes bytes read from the connection; returns the frames they completed.
    ///
    /// # Errors
    /// Anything wrong with a frame: the connection must end.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<Message>, ChannelError> {
        self.inbuf.extend_from_slice(bytes);
        let mut messages = Vec::new();
        let mut at = 0;
        let result = loop {
            let buf = &self.inbuf[at..];
            let header = match Header::parse(buf) {
                Ok(Some(h)) => h,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.into()),
            };
            if buf.len() < header.frame_len() {
                break Ok(());
            }
            let frame = buf[..header.frame_len()].to_vec();
            at += header.frame_len();
            match self.frame(&header, &frame) {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        };
        self.inbuf.drain(..at);
        result.map(|()| messages)
    }

    fn frame(&mut self, header: &Header, frame: &[u8]) -> Result<Option<Message>, ChannelError> {
        let peer = self.side.other().direction();
        let Some(key) = self.key else {
            if header.kind != Kind::Hello {
                return Err(ChannelError::Handshake("the first frame must be a hello"));
            }
            let body = wire::open(&self.psk, peer, header, frame)?;
            if header.seq != 0 || body.len() != NONCE {
                return Err(ChannelError::Handshake("malformed hello"));
            }
            let mut theirs = [0; NONCE];
            theirs.copy_from_slice(body);
            if theirs == self.nonce {
                // Our own hello reflected back.
                return Err(ChannelError::Handshake("the peer's nonce is ours"));
            }
            self.key = Some(match self.side {
                Side::Initiator => session_key(&self.psk, &self.nonce, &theirs),
                Side::Responder => session_key(&self.psk, &theirs, &self.nonce),
            });
            return Ok(None);
        };
        if header.kind == Kind::Hello {
            return Err(ChannelError::Handshake("a second hello"));
        }
        let body = wire::open(&key, peer, header, frame)?;
        let expected = self.recv_seq + 1;
        if header.seq != expected {
            return Err(ChannelError::Sequence {
                expected,
                got: header.seq,
            });
        }
        self.recv_seq = expected;
        Ok(Some(match header.kind {
            Kind::Records => Message::Records(header.seq, wire::parse_records(body)?),
            Kind::Ack => Message::Ack(wire::parse_ack(body)?),
            Kind::ResyncBegin => Message::ResyncBegin(header.seq),
            Kind::ResyncEnd => Message::ResyncEnd(header.seq),
            Kind::Ping => Message::Ping,
            Kind::Hello => unreachable!("handled above"),
        }))
    }
}

/// What a [`Sender`] has done, for `natgw status` and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Records sent.
    pub records_sent: u64,
    /// Records the peer acknowledged.
    pub records_acked: u64,
    /// Frames of records sent.
    pub frames_sent: u64,
    /// Full resyncs started.
    pub resyncs: u64,
    /// The last acknowledgement's round trip (sent to acknowledged).
    pub last_ack_rtt: Duration,
}

/// The active's end: records in, frames out, acknowledgements matched.
#[derive(Debug)]
pub struct Sender {
    ch: Channel,
    batch: Vec<Record>,
    batch_bytes: usize,
    /// Frames sent and not acknowledged: sequence number, records, when sent.
    inflight: VecDeque<(u64, u32, Instant)>,
    stats: SenderStats,
}

impl Sender {
    /// The active's end of a new connection.
    #[must_use]
    pub fn new(psk: &[u8], nonce: [u8; NONCE]) -> Self {
        Self {
            ch: Channel::new(psk, Side::Initiator, nonce),
            batch: Vec::new(),
            batch_bytes: 2,
            inflight: VecDeque::new(),
            stats: SenderStats::default(),
        }
    }

    /// Whether the handshake is done: records may be pushed.
    #[must_use]
    pub const fn is_open(&self) -> bool {
        self.ch.is_open()
    }

    /// What it has done.
    #[must_use]
    pub const fn stats(&self) -> SenderStats {
        self.stats
    }

    /// Records sent and not yet acknowledged.
    #[must_use]
    pub fn unacked(&self) -> u64 {
        self.inflight.iter().map(|f| u64::from(f.1)).sum::<u64>() + self.batch.len() as u64
    }

    /// How long the oldest unacknowledged frame has waited at `now`.
    #[must_use]
    pub fn lag(&self, now: Instant) -> Duration {
        self.inflight
            .front()
            .map_or(Duration::ZERO, |f| now.saturating_duration_since(f.2))
    }

    /// Takes bytes from the standby.
    ///
    /// # Errors
    /// A bad frame, or one the standby never sends: the connection must end.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) -> Result<(), ChannelError> {
        for m in self.ch.receive(bytes)? {
            match m {
                Message::Ack(seq) => {
                    while let Some(&(s, n, sent)) = self.inflight.front() {
                        if s > seq {
                            break;
                        }
                        self.inflight.pop_front();
                        self.stats.records_acked += u64::from(n);
                        self.stats.last_ack_rtt = now.saturating_duration_since(sent);
                    }
                }
                Message::Ping => {}
                Message::Records(..) => return Err(ChannelError::Unexpected(Kind::Records)),
                Message::ResyncBegin(_) => return Err(ChannelError::Unexpected(Kind::ResyncBegin)),
                Message::ResyncEnd(_) => return Err(ChannelError::Unexpected(Kind::ResyncEnd)),
            }
        }
        Ok(())
    }

    /// Adds a record to the current batch (sent when full or at [`Self::flush`]).
    ///
    /// # Errors
    /// Not open, or the peer does not keep up.
    pub fn push(&mut self, record: Record, now: Instant) -> Result<(), ChannelError> {
        let mut bytes = Vec::new();
        record.emit(&mut bytes);
        if self.batch_bytes + bytes.len() > MAX_BODY || self.batch.len() == usize::from(u16::MAX) {
            self.flush(now)?;
        }
        self.batch_bytes += bytes.len();
        self.batch.push(record);
        Ok(())
    }

    /// Sends the current batch, if any.
    ///
    /// # Errors
    /// Not open, or the peer does not keep up.
    pub fn flush(&mut self, now: Instant) -> Result<(), ChannelError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let body = wire::emit_records(&self.batch);
        let seq = self.ch.send(Kind::Records, &body)?;
        let n = u32::try_from(self.batch.len()).unwrap_or(u32::MAX);
        self.inflight.push_back((seq, n, now));
        self.stats.records_sent += u64::from(n);
        self.stats.frames_sent += 1;
        self.batch.clear();
        self.batch_bytes = 2;
        Ok(())
    }

    /// Starts a full resync: what follows up to [`Self::end_resync`] is the whole
    /// table.
    ///
    /// # Errors
    /// Not open, or the peer does not keep up.
    pub fn begin_resync(&mut self, now: Instant) -> Result<(), ChannelError> {
        self.flush(now)?;
        self.ch.send(Kind::ResyncBegin, &[])?;
        self.stats.resyncs += 1;
        Ok(())
    }

    /// Ends a full resync.
    ///
    /// # Errors
    /// Not open, or the peer does not keep up.
    pub fn end_resync(&mut self, now: Instant) -> Result<(), ChannelError> {
        self.flush(now)?;
        self.ch.send(Kind::ResyncEnd, &[])?;
        Ok(())
    }

    /// A keepalive.
    ///
    /// # Errors
    /// Not open, or the peer does not keep up.
    pub fn ping(&mut self) -> Result<(), ChannelError> {
        self.ch.send(Kind::Ping, &[]).map(|_| ())
    }

    /// The next bytes to write.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.ch.poll_transmit()
    }
}

/// What a [`Receiver`] hands over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Records to install; acknowledge `seq` once they are.
    Records {
        /// The frame's sequence number.
        seq: u64,
        /// Its records.
        records: Vec<Record>,
    },
    /// A full resync starts.
    ResyncBegin {
        /// Its sequence number.
        seq: u64,
    },
    /// The full resync ended: what it did not name is gone.
    ResyncEnd {
        /// Its sequence number.
        seq: u64,
    },
}

/// The standby's end: frames in, records out, acknowledgements back.
#[derive(Debug)]
pub struct Receiver {
    ch: Channel,
    acked: u64,
    /// Records received.
    pub records_received: u64,
}

impl Receiver {
    /// The standby's end of a new connection.
    #[must_use]
    pub fn new(psk: &[u8], nonce: [u8; NONCE]) -> Self {
        Self {
            ch: Channel::new(psk, Side::Responder, nonce),
            acked: 0,
            records_received: 0,
        }
    }

    /// Whether the handshake is done.
    #[must_use]
    pub const fn is_open(&self) -> bool {
        self.ch.is_open()
    }

    /// Takes bytes from the active; what to install.
    ///
    /// # Errors
    /// A bad frame, or one the active never sends: the connection must end.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<Delivery>, ChannelError> {
        let mut out = Vec::new();
        for m in self.ch.receive(bytes)? {
            match m {
                Message::Records(seq, records) => {
                    self.records_received += records.len() as u64;
                    out.push(Delivery::Records { seq, records });
                }
                Message::ResyncBegin(seq) => out.push(Delivery::ResyncBegin { seq }),
                Message::ResyncEnd(seq) => out.push(Delivery::ResyncEnd { seq }),
                Message::Ping => {}
                Message::Ack(_) => return Err(ChannelError::Unexpected(Kind::Ack)),
            }
        }
        Ok(out)
    }

    /// Acknowledges everything up to `seq` (once installed).
    ///
    /// # Errors
    /// Not open.
    pub fn ack(&mut self, seq: u64) -> Result<(), ChannelError> {
        if seq <= self.acked {
            return Ok(());
        }
        self.acked = seq;
        self.ch.send(Kind::Ack, &seq.to_be_bytes()).map(|_| ())
    }

    /// A keepalive.
    ///
    /// # Errors
    /// Not open.
    pub fn ping(&mut self) -> Result<(), ChannelError> {
        self.ch.send(Kind::Ping, &[]).map(|_| ())
    }

    /// The next bytes to write.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.ch.poll_transmit()
    }
}

/// How many bytes a frame header plus tag adds (for sizing).
pub const FRAME_OVERHEAD: usize = HEADER + TAG;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::wire::{MappingRecord, NEVER};

    const PSK: &[u8] = b"a pre-shared key of some length";

    fn record(port: u16) -> Record {
        Record::Mapping(MappingRecord {
            proto: 17,
            origin: 0,
            filter: 0,
            tcp_flags_out: 0,
            tcp_flags_in: 0,
            internal: std::net::SocketAddrV4::new([10, 0, 1, 2].into(), port),
            external: std::net::SocketAddrV4::new([192, 0, 2, 1].into(), port),
            age_ms: 5,
            idle_out_ms: 1,
            idle_in_ms: NEVER,
        })
    }

    fn drain(from: &mut impl FnMut() -> Option<Vec<u8>>) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(f) = from() {
            all.extend(f);
        }
        all
    }

    fn pair() -> (Sender, Receiver) {
        let mut s = Sender::new(PSK, [1; NONCE]);
        let mut r = Receiver::new(PSK, [2; NONCE]);
        let to_r = drain(&mut || s.poll_transmit());
        let to_s = drain(&mut || r.poll_transmit());
        assert!(r.receive(&to_r).unwrap().is_empty());
        s.receive(&to_s, Instant::now()).unwrap();
        assert!(s.is_open() && r.is_open());
        (s, r)
    }

    #[test]
    fn records_flow_and_acknowledgements_clear_them() {
        let (mut s, mut r) = pair();
        let t0 = Instant::now();
        s.begin_resync(t0).unwrap();
        for p in 0..3000 {
            s.push(record(p), t0).unwrap();
        }
        s.end_resync(t0).unwrap();
        assert_eq!(s.unacked(), 3000);
        let bytes = drain(&mut || s.poll_transmit());
        // Delivered in pieces of any size.
        let mut got = Vec::new();
        for chunk in bytes.chunks(777) {
            got.extend(r.receive(chunk).unwrap());
        }
        assert!(matches!(got.first(), Some(Delivery::ResyncBegin { .. })));
        assert!(matches!(got.last(), Some(Delivery::ResyncEnd { .. })));
        let records: Vec<Record> = got
            .iter()
            .filter_map(|d| match d {
                Delivery::Records { records, .. } => Some(records.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(records.len(), 3000);
        assert_eq!(records[2999], record(2999));
        assert!(
            got.len() > 3,
            "batched into more than one frame of at most 64 KiB"
        );
        let Some(Delivery::ResyncEnd { seq }) = got.last() else {
            unreachable!()
        };
        r.ack(*seq).unwrap();
        let acks = drain(&mut || r.poll_transmit());
        s.receive(&acks, t0 + Duration::from_millis(3)).unwrap();
        assert_eq!(s.unacked(), 0);
        assert_eq!(s.stats().records_acked, 3000);
        assert_eq!(s.stats().last_ack_rtt, Duration::from_millis(3));
        assert_eq!(s.lag(t0 + Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn a_wrong_key_fails_the_handshake() {
        let mut s = Sender::new(PSK, [1; NONCE]);
        let mut r = Receiver::new(b"another key", [2; NONCE]);
        let hello = drain(&mut || s.poll_transmit());
        assert_eq!(r.receive(&hello), Err(ChannelError::Wire(WireError::Tag)));
    }

    #[test]
    fn replayed_and_altered_frames_are_refused() {
        let (mut s, mut r) = pair();
        let now = Instant::now();
        s.push(record(1), now).unwrap();
        s.flush(now).unwrap();
        let first = drain(&mut || s.poll_transmit());
        assert_eq!(r.receive(&first).unwrap().len(), 1);
        // The same frame again: its sequence number is not the next one.
        assert_eq!(
            r.receive(&first),
            Err(ChannelError::Sequence {
                expected: 2,
                got: 1
            })
        );
        let (mut s, mut r) = pair();
        s.push(record(1), now).unwrap();
        s.flush(now).unwrap();
        let mut f = drain(&mut || s.poll_transmit());
        let n = f.len();
        f[n - TAG - 1] ^= 1;
        assert_eq!(r.receive(&f), Err(ChannelError::Wire(WireError::Tag)));
    }

    #[test]
    fn frames_of_another_connection_fail_their_tag() {
        let (mut s1, _) = pair();
        let now = Instant::now();
        s1.push(record(1), now).unwrap();
        s1.flush(now).unwrap();
        let old = drain(&mut || s1.poll_transmit());
        // A new connection with new nonces: the recorded frame, though next in
        // sequence, is under the old session key.
        let mut s2 = Sender::new(PSK, [3; NONCE]);
        let mut r2 = Receiver::new(PSK, [4; NONCE]);
        r2.receive(&drain(&mut || s2.poll_transmit())).unwrap();
        assert_eq!(r2.receive(&old), Err(ChannelError::Wire(WireError::Tag)));
    }

    #[test]
    fn hostile_handshakes_are_refused() {
        // A reflected hello (our own nonce and direction).
        let mut r = Receiver::new(PSK, [2; NONCE]);
        let own = drain(&mut || r.poll_transmit());
        assert!(r.receive(&own).is_err());
        // Records before the hello.
        let mut r = Receiver::new(PSK, [2; NONCE]);
        let f = wire::frame(PSK, b'I', Kind::Records, 1, &wire::emit_records(&[]));
        assert_eq!(
            r.receive(&f),
            Err(ChannelError::Handshake("the first frame must be a hello"))
        );
        // A hello with a short nonce.
        let mut r = Receiver::new(PSK, [2; NONCE]);
        let f = wire::frame(PSK, b'I', Kind::Hello, 0, &[1; 4]);
        assert_eq!(
            r.receive(&f),
            Err(ChannelError::Handshake("malformed hello"))
        );
        // An oversized length is refused from the header alone.
        let (_, mut r) = pair();
        let mut f = wire::frame(PSK, b'I', Kind::Ping, 1, &[]);
        f[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            r.receive(&f[..HEADER]),
            Err(ChannelError::Wire(WireError::TooLong(u32::MAX as usize)))
        );
    }

    #[test]
    fn each_side_refuses_what_only_it_sends() {
        let (mut s, mut r) = pair();
        r.ack(5).unwrap();
        // An ack towards the standby (a reflected one) is refused.
        let ack = drain(&mut || r.poll_transmit());
        let mut r2 = Receiver::new(PSK, [9; NONCE]);
        assert!(r2.receive(&ack).is_err());
        // Records towards the active are refused.
        let now = Instant::now();
        s.push(record(1), now).unwrap();
        s.flush(now).unwrap();
        let records = drain(&mut || s.poll_transmit());
        let mut s2 = Sender::new(PSK, [8; NONCE]);
        assert!(s2.receive(&records, now).is_err());
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_unacknowledged_frame() {
        let (mut s, _) = pair();
        let t0 = Instant::now();
        s.push(record(1), t0).unwrap();
        s.flush(t0).unwrap();
        s.push(record(2), t0 + Duration::from_millis(5)).unwrap();
        s.flush(t0 + Duration::from_millis(5)).unwrap();
        assert_eq!(
            s.lag(t0 + Duration::from_millis(20)),
            Duration::from_millis(20)
        );
        assert_eq!(s.unacked(), 2);
    }
}
