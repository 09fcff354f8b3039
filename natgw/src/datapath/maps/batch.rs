//! Whole-table reads for the garbage collector's snapshots, through
//! [`natgw_common::batch::lookup_batch`] (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6): thousands
//! of entries per bpf(2) call instead of two calls (`BPF_MAP_GET_NEXT_KEY`,
//! `BPF_MAP_LOOKUP_ELEM`) per entry, which made each snapshot of a million mappings
//! take seconds (about 7 times what a batched read takes here).
//!
//! A batched walk never returns a key twice (see [`natgw_common::batch`]). The
//! key-by-key walk has no such guarantee (the kernel restarts it from the first key
//! when the current one was deleted), so its results go through [`dedup_entries`];
//! batches do not pay for that.

use std::collections::HashSet;
use std::hash::Hash;

pub use natgw_common::batch::{is_unsupported, lookup_batch};

/// Entries asked for per call: large enough that the system call overhead vanishes,
/// small enough that the kernel's bounce buffers stay modest (the kernel grows its own
/// buffer to the largest bucket, not to this).
pub const BATCH_CHUNK: usize = 8192;

/// The entries with one occurrence of every key, the last one read (the newest): a
/// walk the kernel may restart (key by key, after a concurrent delete) can return a
/// key twice.
pub fn dedup_entries<K: Copy + Eq + Hash, V>(entries: Vec<(K, V)>) -> Vec<(K, V)> {
    let mut seen = HashSet::with_capacity(entries.len());
    let mut out: Vec<(K, V)> = entries
        .into_iter()
        .rev()
        .filter(|(k, _)| seen.insert(*k))
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_collapse_to_their_last_occurrence() {
        let entries = vec![(1u32, 'a'), (2, 'b'), (1, 'c'), (3, 'd'), (2, 'e')];
        assert_eq!(dedup_entries(entries), vec![(1, 'c'), (3, 'd'), (2, 'e')]);
        assert_eq!(dedup_entries(Vec::<(u32, char)>::new()), vec![]);
    }

    /// A real hash map of `entries` u32 -> u64 entries (`value = key * 3`).
    fn hash_map(entries: u32) -> aya::maps::HashMap<aya::maps::MapData, u32, u64> {
        use std::os::fd::{FromRawFd as _, OwnedFd};

        /// The map-creation members of `union bpf_attr`.
        #[repr(C)]
        #[derive(Default)]
        struct CreateAttr {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
        }
        const BPF_MAP_CREATE: libc::c_long = 0;
        const BPF_MAP_TYPE_HASH: u32 = 1;

        assert!(
            nix::unistd::geteuid().is_root(),
            "this test creates a BPF map: run it as root"
        );
        let mut attr = CreateAttr {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: 4,
            value_size: 8,
            max_entries: entries.max(1) * 2,
            map_flags: 0,
        };
        // SAFETY: `attr` is a properly laid out prefix of `union bpf_attr` (the kernel
        // zero-fills the rest) and points to nothing.
        let fd = unsafe { natgw_common::batch::bpf(BPF_MAP_CREATE, &mut attr) }
            .unwrap_or_else(|e| panic!("BPF_MAP_CREATE: {e}"));
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap()) };
        let data = aya::maps::MapData::from_fd(fd).unwrap();
        let mut map = aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).unwrap();
        for k in 0..entries {
            map.insert(k, u64::from(k) * 3, 0).unwrap();
        }
        map
    }

    #[test]
    fn batches_read_every_entry_once_whatever_the_chunk() {
        use aya::maps::IterableMap as _;

        for (entries, chunk) in [(0, 64), (1, 64), (10_000, 1), (10_000, 64), (10_000, 8192)] {
            let map = hash_map(entries);
            let mut got: Vec<(u32, u64)> = lookup_batch(map.map(), chunk).unwrap();
            assert_eq!(
                got.len(),
                entries as usize,
                "{entries} entries, chunk {chunk}"
            );
            got.sort_unstable();
            for (i, (k, v)) in got.iter().enumerate() {
                assert_eq!((*k, *v), (i as u32, u64::from(*k) * 3));
            }
        }
    }

    #[test]
    fn a_batch_update_is_read_back_whole() {
        use aya::maps::IterableMap as _;
        use natgw_common::batch::update_batch;

        // Room for 5000 entries, the first 2500 inserted one by one.
        let map = hash_map(2500);
        let keys: Vec<u32> = (2500..5000).collect();
        let values: Vec<u64> = keys.iter().map(|&k| u64::from(k) * 3).collect();
        assert_eq!(update_batch(map.map(), &keys, &values).unwrap(), 2500);
        let mut got: Vec<(u32, u64)> = lookup_batch(map.map(), BATCH_CHUNK).unwrap();
        got.sort_unstable();
        let all: Vec<(u32, u64)> = (0..5000).map(|k| (k, u64::from(k) * 3)).collect();
        assert_eq!(got, all);
    }

    #[test]
    fn a_batch_delete_removes_what_is_there_and_reports_what_was_not() {
        use aya::maps::IterableMap as _;
        use natgw_common::batch::delete_batch;

        let map = hash_map(10_000);
        // Keys 0, 2, 4, ... up to 19,998: half of them were never there, and one
        // missing key sits at the start, the middle and the end of a call.
        let keys: Vec<u32> = (0..10_000).map(|k| k * 2).collect();
        let deleted = delete_batch::<u32, u64>(map.map(), &keys).unwrap();
        assert_eq!(deleted.len(), keys.len());
        for (k, d) in keys.iter().zip(&deleted) {
            assert_eq!(*d, *k < 10_000, "key {k}");
        }
        let mut left: Vec<u32> = lookup_batch::<u32, u64>(map.map(), BATCH_CHUNK)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        left.sort_unstable();
        assert_eq!(left, (0..5000).map(|k| k * 2 + 1).collect::<Vec<_>>());
        // Deleting them again deletes nothing.
        assert!(delete_batch::<u32, u64>(map.map(), &keys[..10])
            .unwrap()
            .iter()
            .all(|d| !d));
        assert!(delete_batch::<u32, u64>(map.map(), &[]).unwrap().is_empty());
    }

    #[test]
    fn a_map_of_other_sizes_is_refused_before_the_kernel_writes() {
        use aya::maps::{IterableMap as _, MapError};
        use natgw_common::batch::update_batch;

        let map = hash_map(3);
        assert!(matches!(
            lookup_batch::<u64, u64>(map.map(), 64),
            Err(MapError::InvalidKeySize {
                size: 4,
                expected: 8
            })
        ));
        assert!(matches!(
            lookup_batch::<u32, u32>(map.map(), 64),
            Err(MapError::InvalidValueSize {
                size: 8,
                expected: 4
            })
        ));
        let e = update_batch(map.map(), &[1u32, 2], &[7u32, 8]).unwrap_err();
        assert_eq!(e.inserted, 0);
        assert!(matches!(e.error, MapError::InvalidValueSize { .. }));
        let e = update_batch(map.map(), &[1u32, 2], &[7u64]).unwrap_err();
        assert_eq!((e.inserted, e.requested), (0, 2));
    }
}
