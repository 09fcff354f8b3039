//! [`PacketBuf`] for the two kinds of context, so the shared parser and rewriter in
//! `natgw_common::packet` run on XDP frames and socket buffers alike.
//!
//! XDP reads and writes the frame directly; every access checks the pointer against
//! `data_end` where it is made, which is what the verifier needs. TC reads and writes
//! through `bpf_skb_load_bytes`/`bpf_skb_store_bytes` (non-linear skbs work). TC
//! writes through this trait only where the shared code keeps every checksum it
//! touches consistent itself (ICMP, whose checksums are never offloaded);
//! UDP/TCP rewrites use the checksum-aware skb helpers in `tcpath`.

use aya_ebpf::programs::{TcContext, XdpContext};
use natgw_common::packet::{PacketBuf, PacketBufMut};

/// An XDP frame.
pub struct XdpBuf {
    start: usize,
    end: usize,
}

impl XdpBuf {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// Pointer to `n` bytes at `off`, checked against the end of the frame.
    ///
    /// The end is read afresh (volatile) for every access. Otherwise LLVM may prove
    /// an access in bounds from the parser's earlier checks (`l3 + tot_len <= len`
    /// and an L4 header that fits in the datagram) and drop this comparison, which
    /// the verifier, tracking only comparisons of a packet pointer with `data_end`,
    /// must see.
    #[inline(always)]
    fn ptr(&self, off: usize, n: usize) -> Option<*mut u8> {
        // SAFETY: a plain read of a field of `self`.
        let end = unsafe { core::ptr::read_volatile(&self.end) };
        let p = self.start + off;
        if p + n > end {
            return None;
        }
        Some(p as *mut u8)
    }
}

impl PacketBuf for XdpBuf {
    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let p = self.ptr(off, N)?;
        // SAFETY: `ptr` checked that the N bytes lie inside the frame.
        Some(unsafe { (p as *const [u8; N]).read_unaligned() })
    }
}

impl PacketBufMut for XdpBuf {
    #[inline(always)]
    fn store<const N: usize>(&mut self, off: usize, bytes: [u8; N]) -> Option<()> {
        let p = self.ptr(off, N)?;
        // SAFETY: as in `load`; the frame is writable in XDP.
        unsafe { (p as *mut [u8; N]).write_unaligned(bytes) };
        Some(())
    }
}

/// A socket buffer seen by TC.
pub struct TcBuf<'a> {
    ctx: &'a TcContext,
}

impl<'a> TcBuf<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a TcContext) -> Self {
        Self { ctx }
    }
}

impl PacketBufMut for TcBuf<'_> {
    #[inline(always)]
    fn store<const N: usize>(&mut self, off: usize, bytes: [u8; N]) -> Option<()> {
        self.ctx.store(off, &bytes, 0).ok()
    }
}

impl PacketBuf for TcBuf<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.ctx.len() as usize
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.ctx.load::<[u8; N]>(off).ok()
    }
}
