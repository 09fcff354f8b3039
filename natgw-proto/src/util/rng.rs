//! Random bytes from the kernel (`/dev/urandom`): nonces, transaction ids, secrets.

use std::fs::File;
use std::io::{self, Read as _};

/// `N` random bytes.
///
/// # Errors
/// When `/dev/urandom` cannot be read.
pub fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0; N];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// `N` random bytes for uses that must go on without the kernel's random source
/// (session secrets, punch nonces): std's per-process random hash keys, mixed with the
/// time, stand in then.
#[must_use]
pub fn random_array<const N: usize>() -> [u8; N] {
    if let Ok(bytes) = random_bytes::<N>() {
        return bytes;
    }
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut out = [0; N];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(i);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        chunk.copy_from_slice(&hasher.finish().to_ne_bytes()[..chunk.len()]);
    }
    out
}

/// A random number, as [`random_array`] makes it.
#[must_use]
pub fn random_u64() -> u64 {
    u64::from_ne_bytes(random_array())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_differ_between_calls() {
        let a = random_bytes::<16>().unwrap();
        let b = random_bytes::<16>().unwrap();
        assert_ne!(a, b);
        assert_ne!(random_u64(), random_u64());
        assert_ne!(random_array::<12>(), random_array::<12>());
    }
}
