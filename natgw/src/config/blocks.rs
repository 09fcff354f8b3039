//! Deterministic port blocks (RFC 7422, issue #16 item 2): the `[blocks]` table and
//! `--block-*` flags, their checks, the data path's [`BlockPlan`] and the shares an
//! upstream router needs routes for (docs/operations.md#port-blocks).

use std::fmt;
use std::net::Ipv4Addr;

use natgw_common::blocks::{Block, BlockPlan, MAX_SHARES};
use natgw_proto::prefix::Ipv4Prefix;
use serde::{Deserialize, Serialize};

use super::PortRange;

/// Port-block settings; absent: dynamic allocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSettings {
    /// The internal address space: host `i` of it gets the `i`-th block.
    pub space: Ipv4Prefix,
    /// Ports per block.
    pub size: u16,
    /// How many shares the pool is cut into (a divisor of the pool's length).
    #[serde(default = "one")]
    pub shares: u8,
    /// The shares this gateway translates (0-based); default: all.
    #[serde(default)]
    pub owned: Vec<u8>,
}

const fn one() -> u8 {
    1
}

/// Why the block settings cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Block size 0 or larger than the port range.
    #[error(
        "block size {size} does not fit the port range {range} ({len} ports): give 1 to {len} \
         ports per block"
    )]
    Size {
        /// The size.
        size: u16,
        /// The range.
        range: PortRange,
        /// Its length.
        len: u32,
    },
    /// No explicit pool.
    #[error(
        "port blocks need the external pool listed (`external = [...]` or --external, \
         repeated), in the same order on every gateway: host i's block lies on the \
         pool's (i / blocks per address)-th address"
    )]
    NoPool,
    /// The shares do not divide the pool.
    #[error(
        "{shares} shares do not divide the pool of {pool} addresses: each share must hold \
         the same whole number of external addresses (1 to {max} shares)",
        max = MAX_SHARES
    )]
    Shares {
        /// Shares asked for.
        shares: u8,
        /// Pool length.
        pool: usize,
    },
    /// The space needs more blocks than the pool has.
    #[error(
        "the internal space {space} ({hosts} addresses) needs {needed} external addresses \
         with {per_addr} blocks of {size} ports per address, the pool has {pool}: add \
         addresses, make the blocks smaller or the space narrower"
    )]
    DoesNotFit {
        /// The space.
        space: Ipv4Prefix,
        /// Its addresses.
        hosts: u64,
        /// Blocks per address.
        per_addr: u32,
        /// Block size.
        size: u16,
        /// Addresses needed.
        needed: u64,
        /// Pool length.
        pool: usize,
    },
    /// An owned share that does not exist.
    #[error("owned share {share} does not exist: the shares are 0 to {last}")]
    NoSuchShare {
        /// The share.
        share: u8,
        /// The last share.
        last: u8,
    },
    /// An owned share listed twice.
    #[error("owned share {0} is listed twice")]
    OwnedTwice(u8),
}

/// One share: the internal hosts whose blocks lie on its external addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Share {
    /// 0-based index.
    pub index: u8,
    /// Its internal hosts, as prefixes (a source route each on the LAN side).
    pub internal: Vec<Ipv4Prefix>,
    /// Its external addresses (a route each on the WAN side).
    pub external: Vec<Ipv4Addr>,
    /// Whether this gateway owns it.
    pub owned: bool,
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |v: Vec<String>| v.join(",");
        write!(
            f,
            "share {}{}: internal {} external {}",
            self.index,
            if self.owned { " (owned)" } else { "" },
            join(self.internal.iter().map(ToString::to_string).collect()),
            join(self.external.iter().map(ToString::to_string).collect()),
        )
    }
}

impl BlockSettings {
    /// The first address and the length of the internal space.
    fn space(&self) -> (u32, u64) {
        let first = u32::from(self.space.network());
        (first, 1u64 << (32 - u32::from(self.space.len())))
    }

    fn per_addr(&self, range: PortRange) -> u32 {
        range.len() / u32::from(self.size.max(1))
    }

    /// Every problem with these settings for pool `pool` and port range `range`.
    pub fn check(&self, pool: &[Ipv4Addr], range: PortRange) -> Vec<BlockError> {
        let mut errors = Vec::new();
        if self.size == 0 || u32::from(self.size) > range.len() {
            errors.push(BlockError::Size {
                size: self.size,
                range,
                len: range.len(),
            });
        }
        if pool.is_empty() {
            errors.push(BlockError::NoPool);
        }
        let shares = usize::from(self.shares);
        if shares == 0
            || shares > MAX_SHARES as usize
            || (!pool.is_empty() && pool.len() % shares != 0)
        {
            errors.push(BlockError::Shares {
                shares: self.shares,
                pool: pool.len(),
            });
        }
        let per_addr = self.per_addr(range);
        if per_addr > 0 && !pool.is_empty() {
            let (_, hosts) = self.space();
            let needed = hosts.div_ceil(u64::from(per_addr));
            if needed > pool.len() as u64 {
                errors.push(BlockError::DoesNotFit {
                    space: self.space.network_prefix(),
                    hosts,
                    per_addr,
                    size: self.size,
                    needed,
                    pool: pool.len(),
                });
            }
        }
        for (i, s) in self.owned.iter().enumerate() {
            if *s >= self.shares {
                errors.push(BlockError::NoSuchShare {
                    share: *s,
                    last: self.shares.saturating_sub(1),
                });
            }
            if self.owned[..i].contains(s) {
                errors.push(BlockError::OwnedTwice(*s));
            }
        }
        errors
    }

    /// The data path's plan; meaningful once [`Self::check`] found nothing.
    #[must_use]
    pub fn plan(&self, pool_len: usize, range: PortRange) -> BlockPlan {
        let (first, len) = self.space();
        let shares = self.shares.max(1);
        let owned = if self.owned.is_empty() {
            (0..shares).fold(0u16, |m, s| m | 1u16.checked_shl(u32::from(s)).unwrap_or(0))
        } else {
            self.owned.iter().fold(0u16, |m, s| {
                m | 1u16.checked_shl(u32::from(*s)).unwrap_or(0)
            })
        };
        BlockPlan {
            space_first: first,
            space_len: u32::try_from(len).unwrap_or(u32::MAX),
            block_size: self.size,
            blocks_per_addr: u16::try_from(self.per_addr(range)).unwrap_or(u16::MAX),
            owned,
            addrs_per_share: u8::try_from(pool_len / usize::from(shares)).unwrap_or(u8::MAX),
            _pad: 0,
        }
    }

    /// The block of internal host `host`, whether owned here or not.
    #[must_use]
    pub fn block_of(
        &self,
        pool: &[Ipv4Addr],
        range: PortRange,
        host: Ipv4Addr,
    ) -> Option<(Ipv4Addr, Block)> {
        let b = self
            .plan(pool.len(), range)
            .block_of(u32::from(host), range.min)?;
        Some((*pool.get(b.addr_index as usize)?, b))
    }

    /// The internal host whose block holds `external`'s port, if any.
    #[must_use]
    pub fn host_of(
        &self,
        pool: &[Ipv4Addr],
        range: PortRange,
        external: std::net::SocketAddrV4,
    ) -> Option<Ipv4Addr> {
        let index = pool.iter().position(|a| a == external.ip())?;
        self.plan(pool.len(), range)
            .host_of(u32::try_from(index).ok()?, external.port(), range.min)
            .map(Ipv4Addr::from)
    }

    /// Every block of the shares this gateway owns: (internal host, external address,
    /// first port, last port), in the order of the hosts.
    #[must_use]
    pub fn owned_blocks(
        &self,
        pool: &[Ipv4Addr],
        range: PortRange,
    ) -> Vec<(Ipv4Addr, Ipv4Addr, u16, u16)> {
        let plan = self.plan(pool.len(), range);
        let (first, len) = self.space();
        (0..len)
            .filter_map(|i| {
                let host = u32::try_from(u64::from(first) + i).ok()?;
                let b = plan.owned_block_of(host, range.min).ok()?;
                let ext = *pool.get(usize::try_from(b.addr_index).ok()?)?;
                Some((Ipv4Addr::from(host), ext, b.first, b.last))
            })
            .collect()
    }

    /// The shares, for the routes of the upstream routers.
    #[must_use]
    pub fn shares(&self, pool: &[Ipv4Addr], range: PortRange) -> Vec<Share> {
        let plan = self.plan(pool.len(), range);
        let (first, len) = self.space();
        let hosts_per_share = u64::from(plan.addrs_per_share) * u64::from(plan.blocks_per_addr);
        (0..self.shares)
            .map(|s| {
                let lo = u64::from(s) * hosts_per_share;
                let hi = (lo + hosts_per_share).min(len);
                let aps = usize::from(plan.addrs_per_share);
                Share {
                    index: s,
                    internal: if lo < hi {
                        cover(u64::from(first) + lo, u64::from(first) + hi)
                    } else {
                        Vec::new()
                    },
                    external: pool
                        .iter()
                        .skip(usize::from(s) * aps)
                        .take(aps)
                        .copied()
                        .collect(),
                    owned: plan.owned & 1u16.checked_shl(u32::from(s)).unwrap_or(0) != 0,
                }
            })
            .collect()
    }
}

/// The fewest prefixes covering addresses `[lo, hi)`.
fn cover(mut lo: u64, hi: u64) -> Vec<Ipv4Prefix> {
    let mut out = Vec::new();
    while lo < hi {
        let mut size = if lo == 0 {
            1u64 << 32
        } else {
            1u64 << lo.trailing_zeros().min(32)
        };
        while size > hi - lo {
            size >>= 1;
        }
        let len = 32 - size.trailing_zeros();
        if let (Ok(a), Ok(l)) = (u32::try_from(lo), u8::try_from(len)) {
            if let Some(p) = Ipv4Prefix::new(Ipv4Addr::from(a), l) {
                out.push(p);
            }
        }
        lo += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BlockSettings {
        BlockSettings {
            space: "10.0.0.0/24".parse().unwrap(),
            size: 1008,
            shares: 3,
            owned: vec![1],
        }
    }

    fn pool() -> Vec<Ipv4Addr> {
        (1..=6).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect()
    }

    fn range() -> PortRange {
        PortRange::new(1024, 65535).unwrap()
    }

    #[test]
    fn a_fitting_plan_passes_and_is_what_the_data_path_gets() {
        let s = settings();
        assert_eq!(s.check(&pool(), range()), []);
        let p = s.plan(6, range());
        assert_eq!(p.blocks_per_addr, 64);
        assert_eq!(p.addrs_per_share, 2);
        assert_eq!(p.owned, 0b010);
        assert_eq!(p.space_len, 256);
        let (addr, b) = s
            .block_of(&pool(), range(), Ipv4Addr::new(10, 0, 0, 200))
            .unwrap();
        assert_eq!(addr, Ipv4Addr::new(192, 0, 2, 4));
        assert_eq!(
            (b.first, b.last, b.share),
            (1024 + 8 * 1008, 1024 + 9 * 1008 - 1, 1)
        );
        assert_eq!(
            s.host_of(&pool(), range(), "192.0.2.4:9100".parse().unwrap()),
            Some(Ipv4Addr::new(10, 0, 0, 200))
        );
    }

    #[test]
    fn shares_are_prefixes_and_their_addresses() {
        let shares = settings().shares(&pool(), range());
        let text: Vec<String> = shares.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "share 0: internal 10.0.0.0/25 external 192.0.2.1,192.0.2.2",
                "share 1 (owned): internal 10.0.0.128/25 external 192.0.2.3,192.0.2.4",
                "share 2: internal  external 192.0.2.5,192.0.2.6",
            ]
        );
        assert_eq!(
            cover(0x0a00_0001, 0x0a00_0008)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/30"]
        );
    }

    #[test]
    fn bad_plans_are_refused_with_the_reason() {
        let s = BlockSettings {
            size: 20000,
            ..settings()
        };
        let e = s.check(&pool()[..2], range());
        assert!(
            e.contains(&BlockError::Shares { shares: 3, pool: 2 }),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| matches!(e, BlockError::DoesNotFit { needed: 86, .. })),
            "{e:?}"
        );
        let s = BlockSettings {
            size: 0,
            owned: vec![3, 1, 1],
            ..settings()
        };
        let e = s.check(&[], range());
        assert!(e.contains(&BlockError::NoPool));
        assert!(e.contains(&BlockError::NoSuchShare { share: 3, last: 2 }));
        assert!(e.contains(&BlockError::OwnedTwice(1)));
        assert!(e
            .iter()
            .any(|e| matches!(e, BlockError::Size { size: 0, .. })));
        assert!(
            e[0].to_string().contains("block size 0 does not fit"),
            "{}",
            e[0]
        );
    }
}
