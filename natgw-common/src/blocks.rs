//! Deterministic port blocks in the manner of RFC 7422: the external address and the
//! port block of an internal host are a function of its address and of the
//! configuration alone, so no per-host state is kept, logged or synchronised.
//!
//! The internal space is one prefix; host `i` of it (its offset from the prefix's
//! first address, network and broadcast addresses counted) gets block `i % B` of
//! external address `i / B`, where `B` (`blocks_per_addr`) blocks of `block_size`
//! ports fit the configured port range. The pool's addresses are cut into `shares`
//! equal runs; a share is a run of external addresses and exactly the internal
//! hosts whose blocks lie on them, so that routing a share (its internal hosts out,
//! its external addresses in) to one gateway is plain per-prefix routing. A gateway
//! translates the hosts of the shares it owns (`owned`, a bit per share) and drops
//! the others, counted, as it drops hosts outside the space: never translated to
//! some other block.

/// The block plan, part of [`crate::Config`] (`blocks`). `space_len == 0`: block mode
/// is off (dynamic allocation over the whole range).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockPlan {
    /// First address of the internal space, host order.
    pub space_first: u32,
    /// Addresses in the internal space; 0: block mode off.
    pub space_len: u32,
    /// Ports per block.
    pub block_size: u16,
    /// Blocks per external address: `(port_max - port_min + 1) / block_size`.
    pub blocks_per_addr: u16,
    /// Shares this gateway owns, bit `s` for share `s`.
    pub owned: u16,
    /// External addresses per share (the pool's length / the number of shares).
    pub addrs_per_share: u8,
    /// Explicit padding.
    pub _pad: u8,
}

/// Most shares: one bit each in [`BlockPlan::owned`].
pub const MAX_SHARES: u32 = 16;

/// An internal host's block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Index of its external address in the pool.
    pub addr_index: u32,
    /// First port of the block.
    pub first: u16,
    /// Last port of the block.
    pub last: u16,
    /// The share the host belongs to.
    pub share: u32,
}

/// Why a host has no block here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoBlock {
    /// Its address is outside the internal space.
    Outside,
    /// It belongs to a share this gateway does not own.
    NotOwned,
}

impl BlockPlan {
    /// Whether block mode is on.
    #[inline(always)]
    #[must_use]
    pub const fn is_on(&self) -> bool {
        self.space_len != 0
    }

    /// Index of internal host `int_addr` (host order) in the space.
    #[inline(always)]
    #[must_use]
    pub const fn host_index(&self, int_addr: u32) -> Option<u32> {
        let i = int_addr.wrapping_sub(self.space_first);
        if i < self.space_len {
            Some(i)
        } else {
            None
        }
    }

    /// The block of internal host `int_addr` (host order), ports counted from
    /// `port_min`, whether or not this gateway owns its share.
    #[inline(always)]
    #[must_use]
    pub const fn block_of(&self, int_addr: u32, port_min: u16) -> Option<Block> {
        let Some(i) = self.host_index(int_addr) else {
            return None;
        };
        // Both are nonzero in a valid plan; the checks keep a broken one harmless.
        let per_addr = self.blocks_per_addr as u32;
        let per_share = self.addrs_per_share as u32;
        if per_addr == 0 || per_share == 0 || self.block_size == 0 {
            return None;
        }
        let addr_index = i / per_addr;
        let first = port_min as u32 + (i % per_addr) * self.block_size as u32;
        let last = first + self.block_size as u32 - 1;
        if last > u16::MAX as u32 {
            return None;
        }
        Some(Block {
            addr_index,
            first: first as u16,
            last: last as u16,
            share: addr_index / per_share,
        })
    }

    /// The block of `int_addr` if this gateway translates it.
    ///
    /// # Errors
    /// [`NoBlock`]: the host is outside the space or in a share not owned here.
    #[inline(always)]
    pub const fn owned_block_of(&self, int_addr: u32, port_min: u16) -> Result<Block, NoBlock> {
        match self.block_of(int_addr, port_min) {
            None => Err(NoBlock::Outside),
            Some(b) if b.share < MAX_SHARES && self.owned & (1 << b.share) != 0 => Ok(b),
            Some(_) => Err(NoBlock::NotOwned),
        }
    }

    /// The internal host (host order) whose block holds `port` of the pool's
    /// `addr_index`-th address: the reverse of [`Self::block_of`], for `natgw who`.
    #[must_use]
    pub const fn host_of(&self, addr_index: u32, port: u16, port_min: u16) -> Option<u32> {
        if self.block_size == 0 || port < port_min {
            return None;
        }
        let b = (port - port_min) as u32 / self.block_size as u32;
        if b >= self.blocks_per_addr as u32 {
            return None;
        }
        let i = addr_index as u64 * self.blocks_per_addr as u64 + b as u64;
        if i >= self.space_len as u64 {
            return None;
        }
        Some(self.space_first.wrapping_add(i as u32))
    }
}

/// Set in a [`port_space`] result when the host gets no ports here; the low bits then
/// hold the [`crate::Counter`] to count the drop under.
pub const SPACE_REFUSED: u64 = 1 << 63;

/// Where internal host `int_addr_be` (wire order) may be given ports under `cfg`,
/// packed into one scalar for the data path (the verifier then carries one value,
/// not the ranges of each step): bits 0-15 the first port, 16-31 the last, 32-39
/// the pool index of the external address; or [`SPACE_REFUSED`] with the drop's
/// counter. Dynamic mode: the paired pool address (RFC 4787 REQ-2) and the whole
/// configured range. Block mode: the host's block, refused for a host outside the
/// space, of a share not owned here, or whose block lies beyond the pool.
/// Plain arithmetic, no structs: the data path calls it as a function of its own,
/// and a frame on the stack would push the callers over the 512-byte limit.
#[inline(always)]
#[must_use]
pub const fn port_space(cfg: &crate::Config, int_addr_be: u32) -> u64 {
    let p = &cfg.blocks;
    if p.space_len == 0 {
        let index = crate::config::pool_index(int_addr_be, cfg.ext_count);
        return (index as u64) << 32 | (cfg.port_max as u64) << 16 | cfg.port_min as u64;
    }
    let outside = SPACE_REFUSED | crate::Counter::DropOutsideBlocks as u64;
    let i = u32::from_be(int_addr_be).wrapping_sub(p.space_first);
    let per_addr = p.blocks_per_addr as u32;
    let per_share = p.addrs_per_share as u32;
    let size = p.block_size as u32;
    if i >= p.space_len || per_addr == 0 || per_share == 0 || size == 0 {
        return outside;
    }
    let index = i / per_addr;
    let share = index / per_share;
    if share >= MAX_SHARES || (p.owned as u32 >> share) & 1 == 0 {
        return SPACE_REFUSED | crate::Counter::DropShareNotOwned as u64;
    }
    if index >= cfg.ext_count as u32 && index != 0 {
        return outside;
    }
    let first = cfg.port_min as u32 + (i % per_addr) * size;
    let last = first + size - 1;
    if last > u16::MAX as u32 {
        return outside;
    }
    (index as u64) << 32 | (last as u64) << 16 | first as u64
}

/// A [`port_space`] result taken apart: `Ok((pool index, first port, last port))`
/// or `Err(counter index)`.
///
/// # Errors
/// The drop's counter index when the result is refused.
#[inline(always)]
pub const fn unpack_space(space: u64) -> Result<(u32, u16, u16), u32> {
    if space & SPACE_REFUSED != 0 {
        Err(space as u32)
    } else {
        Ok(((space >> 32) as u32, space as u16, (space >> 16) as u16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.0.0/24, blocks of 1000 ports over 1024-65535 (64 per address), 4
    /// addresses in 2 shares, share 1 owned.
    fn plan() -> BlockPlan {
        BlockPlan {
            space_first: 0x0a00_0000,
            space_len: 256,
            block_size: 1000,
            blocks_per_addr: 64,
            owned: 0b10,
            addrs_per_share: 2,
            _pad: 0,
        }
    }

    #[test]
    fn blocks_are_a_function_of_the_address() {
        let p = plan();
        let b = p.block_of(0x0a00_0000, 1024).unwrap();
        assert_eq!((b.addr_index, b.first, b.last, b.share), (0, 1024, 2023, 0));
        let b = p.block_of(0x0a00_0041, 1024).unwrap();
        assert_eq!((b.addr_index, b.first, b.last, b.share), (1, 2024, 3023, 0));
        let b = p.block_of(0x0a00_00ff, 1024).unwrap();
        assert_eq!(
            (b.addr_index, b.first, b.last, b.share),
            (3, 64024, 65023, 1)
        );
        assert_eq!(p.block_of(0x0a00_0100, 1024), None);
        assert_eq!(p.block_of(0x09ff_ffff, 1024), None);
    }

    #[test]
    fn no_two_hosts_share_a_port_and_who_finds_each() {
        let p = plan();
        let mut seen = std::collections::HashSet::new();
        for i in 0..256u32 {
            let host = 0x0a00_0000 + i;
            let b = p.block_of(host, 1024).unwrap();
            for port in [b.first, b.last, b.first + 499] {
                assert!(seen.insert((b.addr_index, port)), "host {i} port {port}");
                assert_eq!(p.host_of(b.addr_index, port, 1024), Some(host));
            }
        }
        // Ports beyond the last whole block and below the range belong to nobody.
        assert_eq!(p.host_of(0, 65100, 1024), None);
        assert_eq!(p.host_of(0, 1000, 1024), None);
        assert_eq!(p.host_of(4, 1024, 1024), None);
    }

    #[test]
    fn only_owned_shares_are_translated() {
        let p = plan();
        assert_eq!(p.owned_block_of(0x0a00_0001, 1024), Err(NoBlock::NotOwned));
        assert!(p.owned_block_of(0x0a00_0081, 1024).is_ok());
        assert_eq!(p.owned_block_of(0x0b00_0001, 1024), Err(NoBlock::Outside));
        let broken = BlockPlan {
            blocks_per_addr: 0,
            ..plan()
        };
        assert_eq!(broken.block_of(0x0a00_0001, 1024), None);
        assert!(!BlockPlan::default().is_on());
    }

    fn cfg(plan: BlockPlan) -> crate::Config {
        crate::Config {
            port_min: 1024,
            port_max: 65535,
            ext_count: 4,
            blocks: plan,
            ..crate::Config::default()
        }
    }

    #[test]
    fn the_data_paths_port_space_agrees_with_the_plan() {
        let c = cfg(plan());
        for i in 0..300u32 {
            let host = 0x0a00_0000 + i;
            let got = unpack_space(port_space(&c, host.to_be()));
            let want = match plan().owned_block_of(host, 1024) {
                Ok(b) => Ok((b.addr_index, b.first, b.last)),
                Err(NoBlock::Outside) => Err(crate::Counter::DropOutsideBlocks as u32),
                Err(NoBlock::NotOwned) => Err(crate::Counter::DropShareNotOwned as u32),
            };
            assert_eq!(got, want, "host {i}");
        }
        // A pool shorter than the plan: no block on a missing address.
        let short = crate::Config {
            ext_count: 3,
            ..cfg(plan())
        };
        assert_eq!(
            unpack_space(port_space(&short, 0x0a00_00ffu32.to_be())),
            Err(crate::Counter::DropOutsideBlocks as u32)
        );
        // Dynamic mode: the paired address and the whole range.
        let dynamic = cfg(BlockPlan::default());
        let host = 0x0a00_0005u32.to_be();
        assert_eq!(
            unpack_space(port_space(&dynamic, host)),
            Ok((crate::config::pool_index(host, 4), 1024, 65535))
        );
    }
}
