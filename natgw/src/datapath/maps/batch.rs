//! Whole-table reads with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6), which aya 0.14 does not
//! offer: thousands of entries per bpf(2) call instead of two calls
//! (`BPF_MAP_GET_NEXT_KEY`, `BPF_MAP_LOOKUP_ELEM`) per entry, which made each of the
//! garbage collector's snapshots of a million mappings take seconds (about 7 times
//! what a batched read takes here).
//!
//! For hash maps the kernel walks the table bucket by bucket, copying each bucket whole
//! under its lock, and its resume token (`out_batch` → next `in_batch`) is the index of
//! the next bucket. Entries the data path adds or deletes meanwhile may be missed, but
//! a key always lives in the same bucket (BPF hash tables never rehash) and the walk
//! never goes back, so none is seen twice. The key-by-key walk has no such guarantee
//! (the kernel restarts it from the first key when the current one was deleted), so
//! its results go through [`dedup_entries`]; batches do not pay for that.

use std::collections::HashSet;
use std::hash::Hash;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::{MapData, MapError, MapType};
use aya::sys::SyscallError;

/// `BPF_MAP_LOOKUP_BATCH` (linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `ENOTSUPP` (include/linux/errno.h, kernel-internal but returned by bpf(2)).
const ENOTSUPP: i32 = 524;

/// Entries asked for per call: large enough that the system call overhead vanishes,
/// small enough that the kernel's bounce buffers stay modest (the kernel grows its own
/// buffer to the largest bucket, not to this).
pub const BATCH_CHUNK: usize = 8192;

/// A single bucket larger than this is not worth chasing (a hash table's buckets
/// hold a handful of entries): the walk fails instead of growing without bound.
const MAX_CHUNK: usize = 1 << 20;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Debug, Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// What one `BPF_MAP_LOOKUP_BATCH` answer means for the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// `n` entries were written; continue from the returned token.
    More(usize),
    /// `n` entries were written and the table is done (`ENOENT`).
    Done(usize),
    /// The next bucket does not fit in the buffer (`ENOSPC` before any entry):
    /// ask again from the same token with a larger buffer.
    Grow,
}

/// Reads one answer: the call's result (`Err(errno)`), the `count` the kernel wrote
/// back, and how many entries were asked for. A count larger than asked is never
/// trusted.
fn step(result: Result<(), i32>, count: u32, asked: usize) -> Result<Step, i32> {
    let n = usize::try_from(count).unwrap_or(usize::MAX).min(asked);
    match result {
        Ok(()) => Ok(Step::More(n)),
        Err(libc::ENOENT) => Ok(Step::Done(n)),
        Err(libc::ENOSPC) if n == 0 => Ok(Step::Grow),
        Err(errno) => Err(errno),
    }
}

/// Whether a failed batch lookup means the kernel (or the map type) has no batch
/// operations, so the caller should walk key by key instead.
pub fn is_unsupported(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(s)
        if matches!(s.io_error.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)))
}

/// `Err(error(size, expected))` unless the map's `size` is `expected`.
fn check_size(
    size: u32,
    expected: usize,
    error: impl FnOnce(usize, usize) -> MapError,
) -> Result<(), MapError> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size == expected {
        Ok(())
    } else {
        Err(error(size, expected))
    }
}

fn syscall_error(io_error: io::Error) -> MapError {
    MapError::SyscallError(SyscallError {
        call: "bpf_map_lookup_batch",
        io_error,
    })
}

/// Every entry of hash map `map`, `chunk` entries per system call.
///
/// Fails with `InvalidMapType`, `InvalidKeySize` or `InvalidValueSize` unless the
/// map is a (non-per-CPU) hash map whose key and value sizes are those of `K` and
/// `V` — what makes the kernel's writes fit the buffers.
pub fn lookup_batch<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    chunk: usize,
) -> Result<Vec<(K, V)>, MapError> {
    let info = map.info()?;
    let map_type = info.map_type()?;
    if !matches!(map_type, MapType::Hash | MapType::LruHash) {
        return Err(MapError::InvalidMapType {
            map_type: map_type as u32,
        });
    }
    check_size(info.key_size(), size_of::<K>(), |size, expected| {
        MapError::InvalidKeySize { size, expected }
    })?;
    check_size(info.value_size(), size_of::<V>(), |size, expected| {
        MapError::InvalidValueSize { size, expected }
    })?;
    let map_fd = u32::try_from(map.fd().as_fd().as_raw_fd())
        .map_err(|_| syscall_error(io::Error::from_raw_os_error(libc::EBADF)))?;
    let mut chunk = chunk.clamp(1, MAX_CHUNK);
    let mut keys: Vec<K> = Vec::new();
    let mut values: Vec<V> = Vec::new();
    // The resume token: a u32 bucket index for hash maps, a key for other map types
    // (the kernel reads and writes one or the other); u64 words keep it aligned.
    let token_words = size_of::<K>()
        .max(size_of::<u32>())
        .div_ceil(size_of::<u64>());
    let mut token_in = vec![0u64; token_words];
    let mut token_out = vec![0u64; token_words];
    let mut started = false;
    loop {
        keys.reserve(chunk);
        values.reserve(chunk);
        let asked = chunk
            .min(keys.capacity() - keys.len())
            .min(values.capacity() - values.len());
        let mut attr = BatchAttr {
            // NULL on the first call: from the start of the table.
            in_batch: if started { token_in.as_ptr() as u64 } else { 0 },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.spare_capacity_mut().as_mut_ptr() as u64,
            values: values.spare_capacity_mut().as_mut_ptr() as u64,
            count: u32::try_from(asked).unwrap_or(u32::MAX),
            map_fd,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` is a properly laid out `batch` member of `union bpf_attr`,
        // and the size passed is its own. Every pointer in it refers to memory that
        // lives until after the call and that nothing else touches meanwhile:
        // `token_in` (read) and `token_out` (written) are at least 4 bytes, the
        // kernel's bucket cursor for hash maps (and at least a key, what other map
        // types would use); `keys` and `values` have room for `asked` (= `count`)
        // elements of `K` and `V` after their current length, and the kernel writes
        // at most `count` keys and values of the map's sizes, checked above to be
        // those of `K` and `V` (a non-per-CPU hash map: one value per entry).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::from_mut(&mut attr).cast::<libc::c_void>(),
                size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        let result = if ret < 0 {
            let e = io::Error::last_os_error();
            Err(e.raw_os_error().unwrap_or(libc::EIO))
        } else {
            Ok(())
        };
        let (n, done) = match step(result, attr.count, asked) {
            Ok(Step::More(n)) => (n, false),
            Ok(Step::Done(n)) => (n, true),
            Ok(Step::Grow) => {
                chunk = chunk.saturating_mul(2);
                if chunk > MAX_CHUNK {
                    return Err(syscall_error(io::Error::from_raw_os_error(libc::ENOSPC)));
                }
                continue;
            }
            Err(errno) => return Err(syscall_error(io::Error::from_raw_os_error(errno))),
        };
        // SAFETY: the kernel wrote `n` <= `asked` whole entries into the spare
        // capacity of both vectors (`step` never trusts a larger count), and `K`
        // and `V` are `Pod`: any bytes are valid values.
        unsafe {
            keys.set_len(keys.len() + n);
            values.set_len(values.len() + n);
        }
        if done {
            break;
        }
        token_in.copy_from_slice(&token_out);
        started = true;
    }
    Ok(keys.into_iter().zip(values).collect())
}

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
    fn a_full_answer_continues_and_enoent_ends() {
        assert_eq!(step(Ok(()), 8192, 8192), Ok(Step::More(8192)));
        // A bucket that would not fit whole is left for the next call.
        assert_eq!(step(Ok(()), 8190, 8192), Ok(Step::More(8190)));
        assert_eq!(step(Err(libc::ENOENT), 17, 8192), Ok(Step::Done(17)));
        assert_eq!(step(Err(libc::ENOENT), 0, 8192), Ok(Step::Done(0)));
    }

    #[test]
    fn a_bucket_larger_than_the_buffer_asks_for_more_room() {
        assert_eq!(step(Err(libc::ENOSPC), 0, 4), Ok(Step::Grow));
    }

    #[test]
    fn other_errors_fail_and_counts_beyond_the_buffer_are_ignored() {
        assert_eq!(step(Err(libc::EINVAL), 0, 4), Err(libc::EINVAL));
        assert_eq!(step(Err(libc::EFAULT), 3, 4), Err(libc::EFAULT));
        assert_eq!(step(Ok(()), 9000, 4), Ok(Step::More(4)));
    }

    #[test]
    fn no_batch_support_is_recognised() {
        for errno in [libc::EINVAL, libc::EOPNOTSUPP, ENOTSUPP] {
            assert!(is_unsupported(&syscall_error(
                io::Error::from_raw_os_error(errno)
            )));
        }
        assert!(!is_unsupported(&syscall_error(
            io::Error::from_raw_os_error(libc::EPERM)
        )));
    }

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
        // zero-fills the rest) and lives across the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_CREATE,
                std::ptr::from_mut(&mut attr).cast::<libc::c_void>(),
                size_of::<CreateAttr>() as libc::c_uint,
            )
        };
        assert!(fd >= 0, "BPF_MAP_CREATE: {}", io::Error::last_os_error());
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
}
