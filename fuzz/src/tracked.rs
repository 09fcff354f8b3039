//! A frame that remembers where the code under test read and wrote. It is not a
//! second `PacketBuf` for byte slices: every access goes through natgw-common's own
//! implementation for `[u8]` (the one the unit tests use) and is only recorded here,
//! so the targets can assert that parsing stayed inside the datagram and a rewrite
//! touched only the fields it owns.

use std::cell::Cell;
use std::ops::Range;

use natgw_common::packet::{PacketBuf, PacketBufMut};

/// A frame (owned bytes) with the extent of every successful access recorded.
#[derive(Debug, Clone)]
pub struct Tracked {
    bytes: Vec<u8>,
    reads: Cell<Option<(usize, usize)>>,
    writes: Vec<Range<usize>>,
}

impl Tracked {
    /// `bytes`, nothing read or written yet.
    #[must_use]
    pub fn new(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.to_vec(),
            reads: Cell::new(None),
            writes: Vec::new(),
        }
    }

    /// The frame as it is now.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The smallest range holding every byte read since the last [`Self::forget`].
    #[must_use]
    pub fn read_hull(&self) -> Option<Range<usize>> {
        self.reads.get().map(|(start, end)| start..end)
    }

    /// Every write since the last [`Self::forget`], in order.
    #[must_use]
    pub fn writes(&self) -> &[Range<usize>] {
        &self.writes
    }

    /// Forgets the accesses recorded so far (the bytes stay as they are).
    pub fn forget(&mut self) {
        self.reads.set(None);
        self.writes.clear();
    }

    /// Panics unless every read since the last [`Self::forget`] lies inside `bounds`.
    pub fn assert_reads_within(&self, bounds: &Range<usize>, what: &str) {
        if let Some(hull) = self.read_hull() {
            assert!(
                bounds.start <= hull.start && hull.end <= bounds.end,
                "{what} read bytes {hull:?}, outside {bounds:?}"
            );
        }
    }

    /// Panics unless every write since the last [`Self::forget`] lies inside one of
    /// `allowed`.
    pub fn assert_writes_within(&self, allowed: &[Range<usize>], what: &str) {
        for w in &self.writes {
            assert!(
                allowed.iter().any(|a| a.start <= w.start && w.end <= a.end),
                "{what} wrote bytes {w:?}, outside {allowed:?}"
            );
        }
    }
}

impl PacketBuf for Tracked {
    fn len(&self) -> usize {
        PacketBuf::len(&self.bytes[..])
    }

    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let got = self.bytes[..].load::<N>(off)?;
        let end = off + N;
        self.reads.set(Some(match self.reads.get() {
            None => (off, end),
            Some((start, hi)) => (start.min(off), hi.max(end)),
        }));
        Some(got)
    }
}

impl PacketBufMut for Tracked {
    fn store<const N: usize>(&mut self, off: usize, bytes: [u8; N]) -> Option<()> {
        self.bytes[..].store::<N>(off, bytes)?;
        self.writes.push(off..off + N);
        Some(())
    }
}
