//! Batched map reads, writes and deletes, `BPF_MAP_LOOKUP_BATCH`,
//! `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH` (Linux 5.6), which aya 0.14 does
//! not offer: thousands of entries per bpf(2) call instead of one or two calls per
//! entry. The controller reads whole tables and deletes expired mappings with them,
//! the bench fills natgw's tables with a million mappings.
//!
//! Both check the map before the kernel gets a buffer: a (non-per-CPU) hash map
//! whose key and value sizes are those of `K` and `V`, so the kernel's reads and
//! writes of `count` keys and values stay inside the slices and vectors given.
//!
//! For hash maps the kernel walks the table bucket by bucket, copying each bucket whole
//! under its lock, and its resume token (`out_batch` → next `in_batch`) is the index of
//! the next bucket. Entries the data path adds or deletes meanwhile may be missed, but
//! a key always lives in the same bucket (BPF hash tables never rehash) and the walk
//! never goes back, so none is seen twice.

use std::fmt;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::{MapData, MapError, MapType};
use aya::sys::SyscallError;
use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` (linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `BPF_MAP_UPDATE_BATCH` (linux/bpf.h).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// `BPF_MAP_DELETE_BATCH` (linux/bpf.h).
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `ENOTSUPP` (include/linux/errno.h, kernel-internal but returned by bpf(2)).
const ENOTSUPP: i32 = 524;

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

/// bpf(2): command `cmd` with the attribute struct `attr`; the call's return value or
/// the OS error.
///
/// # Safety
/// `attr` must be laid out as the member of `union bpf_attr` that `cmd` reads (its
/// own size is passed as the attribute size), and every buffer it points to must
/// live across the call, untouched by anything else, with room for everything the
/// kernel writes there for `cmd`.
pub unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller vouches for `attr` and the buffers it points to; the kernel
    // reads and writes nothing else.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
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

/// Whether a failed batch call means the kernel (or the map type) has no batch
/// operations, so the caller should go key by key instead.
#[must_use]
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

/// `map`'s descriptor for `union bpf_attr`, once it is known to be a (non-per-CPU)
/// hash map whose key and value sizes are those of `K` and `V` — what makes the
/// kernel's reads and writes of keys and values fit the buffers.
fn checked_fd<K: Pod, V: Pod>(map: &MapData, call: &'static str) -> Result<u32, MapError> {
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
    u32::try_from(map.fd().as_fd().as_raw_fd())
        .map_err(|_| syscall_error(call, io::Error::from_raw_os_error(libc::EBADF)))
}

fn syscall_error(call: &'static str, io_error: io::Error) -> MapError {
    MapError::SyscallError(SyscallError { call, io_error })
}

/// Every entry of hash map `map`, `chunk` entries per system call.
///
/// # Errors
/// `InvalidMapType`, `InvalidKeySize` or `InvalidValueSize` unless the map is a
/// (non-per-CPU) hash map whose key and value sizes are those of `K` and `V`; a
/// `SyscallError` when a call fails ([`is_unsupported`] tells a kernel without batch
/// operations).
pub fn lookup_batch<K: Pod, V: Pod>(map: &MapData, chunk: usize) -> Result<Vec<(K, V)>, MapError> {
    const CALL: &str = "bpf_map_lookup_batch";
    let map_fd = checked_fd::<K, V>(map, CALL)?;
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
        // SAFETY: `attr` is the `batch` member of `union bpf_attr`. Every pointer in
        // it refers to memory that lives until after the call and that nothing else
        // touches meanwhile: `token_in` (read) and `token_out` (written) are at least
        // 4 bytes, the kernel's bucket cursor for hash maps (and at least a key, what
        // other map types would use); `keys` and `values` have room for `asked`
        // (= `count`) elements of `K` and `V` after their current length, and the
        // kernel writes at most `count` keys and values of the map's sizes, checked
        // by `checked_fd` to be those of `K` and `V` (a non-per-CPU hash map: one
        // value per entry).
        let result = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) }
            .map(|_| ())
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
        let (n, done) = match step(result, attr.count, asked) {
            Ok(Step::More(n)) => (n, false),
            Ok(Step::Done(n)) => (n, true),
            Ok(Step::Grow) => {
                chunk = chunk.saturating_mul(2);
                if chunk > MAX_CHUNK {
                    return Err(syscall_error(
                        CALL,
                        io::Error::from_raw_os_error(libc::ENOSPC),
                    ));
                }
                continue;
            }
            Err(errno) => return Err(syscall_error(CALL, io::Error::from_raw_os_error(errno))),
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

/// A `BPF_MAP_UPDATE_BATCH` that did not insert every entry.
#[derive(Debug)]
pub struct UpdateBatchError {
    /// Entries inserted before it stopped.
    pub inserted: usize,
    /// Entries asked for.
    pub requested: usize,
    /// Why it stopped.
    pub error: MapError,
}

impl fmt::Display for UpdateBatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BPF_MAP_UPDATE_BATCH stopped after {} of {} entries",
            self.inserted, self.requested
        )
    }
}

impl std::error::Error for UpdateBatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Inserts `keys[i] -> values[i]` into hash map `map` (any flags `0`: insert or
/// replace) in one call. Returns how many were inserted: all of them.
///
/// # Errors
/// [`UpdateBatchError`] with how many were inserted before the kernel stopped, and
/// why: `keys` and `values` differ in length (`InvalidInput`), the map is not a
/// (non-per-CPU) hash map whose key and value sizes are those of `K` and `V`, or the
/// call failed.
pub fn update_batch<K: Pod, V: Pod>(
    map: &MapData,
    keys: &[K],
    values: &[V],
) -> Result<usize, UpdateBatchError> {
    const CALL: &str = "bpf_map_update_batch";
    let stopped = |inserted, error| UpdateBatchError {
        inserted,
        requested: keys.len(),
        error,
    };
    if keys.len() != values.len() {
        let e = io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} keys but {} values", keys.len(), values.len()),
        );
        return Err(stopped(0, syscall_error(CALL, e)));
    }
    let map_fd = checked_fd::<K, V>(map, CALL).map_err(|e| stopped(0, e))?;
    let count = u32::try_from(keys.len()).map_err(|_| {
        stopped(
            0,
            syscall_error(CALL, io::Error::from_raw_os_error(libc::E2BIG)),
        )
    })?;
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is the `batch` member of `union bpf_attr`. The kernel reads
    // `count` keys and values of the map's sizes, checked by `checked_fd` to be those
    // of `K` and `V`, from `keys` and `values`, which hold `count` of them each and
    // live across the call; it writes nothing but `attr.count`.
    let result = unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) };
    let inserted = usize::try_from(attr.count)
        .unwrap_or(usize::MAX)
        .min(keys.len());
    match result {
        Ok(_) => Ok(inserted),
        Err(e) => Err(stopped(inserted, syscall_error(CALL, e))),
    }
}

/// Deletes `keys` from hash map `map`, as many per call as the kernel takes.
/// Returns, for each key, whether this call deleted it (`false`: it was not there,
/// e.g. the data path or another deleter removed it first).
///
/// The kernel deletes the keys in order and stops at the first it cannot delete,
/// reporting how many it did; a missing key (`ENOENT`) is marked and skipped, so one
/// key that vanished costs one more call, not the batch.
///
/// # Errors
/// `InvalidMapType` or `InvalidKeySize` unless the map is a (non-per-CPU) hash map
/// whose key size is that of `K` (`V` names its value type), or a `SyscallError` when
/// a call fails for another reason than a missing key ([`is_unsupported`] tells a
/// kernel without batch operations). Keys before the failure are deleted.
pub fn delete_batch<K: Pod, V: Pod>(map: &MapData, keys: &[K]) -> Result<Vec<bool>, MapError> {
    const CALL: &str = "bpf_map_delete_batch";
    let map_fd = checked_fd::<K, V>(map, CALL)?;
    let mut deleted = vec![false; keys.len()];
    let mut start = 0;
    while start < keys.len() {
        let rest = &keys[start..];
        let asked = rest.len().min(u32::MAX as usize);
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: u32::try_from(asked).unwrap_or(u32::MAX),
            map_fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is the `batch` member of `union bpf_attr`. The kernel reads
        // `count` keys of the map's key size, checked by `checked_fd` to be that of
        // `K`, from `rest`, which holds at least `count` of them and lives across the
        // call; it writes nothing but `attr.count`.
        let result = unsafe { bpf(BPF_MAP_DELETE_BATCH, &mut attr) };
        let done = usize::try_from(attr.count).unwrap_or(usize::MAX).min(asked);
        deleted[start..start + done].fill(true);
        match result {
            Ok(_) if done == asked => start += asked,
            // The kernel stopped early without an error: go on from where it did.
            Ok(_) => start += done.max(1),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => start += done + 1,
            Err(e) => return Err(syscall_error(CALL, e)),
        }
    }
    Ok(deleted)
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
        let error =
            |errno| syscall_error("bpf_map_lookup_batch", io::Error::from_raw_os_error(errno));
        for errno in [libc::EINVAL, libc::EOPNOTSUPP, ENOTSUPP] {
            assert!(is_unsupported(&error(errno)));
        }
        assert!(!is_unsupported(&error(libc::EPERM)));
    }
}
