//! Where things are: the workspace root, the target directories and the artifacts
//! that `build` produces and `test` hands to the tests.

use std::path::{Path, PathBuf};

/// Directory of the eBPF crate, which is its own workspace (see the root Cargo.toml).
pub const EBPF_CRATE_DIR: &str = "natgw-ebpf";

/// Directory of the cargo-fuzz crate, which is its own workspace (nightly, sanitizers).
pub const FUZZ_CRATE_DIR: &str = "fuzz";

/// Target triple of the kernel programs.
pub const EBPF_TARGET: &str = "bpfel-unknown-none";

/// Name of the object the eBPF crate's binary target produces.
pub const EBPF_OBJECT_NAME: &str = "natgw-ebpf";

/// Name of the daemon/CLI binary.
const NATGW_BIN_NAME: &str = "natgw";

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// The host workspace's target directory, honouring `CARGO_TARGET_DIR` the way cargo
/// does when it runs in the workspace root.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Target directory of the eBPF build, kept apart from the host builds because it uses
/// a different compiler.
pub fn ebpf_target_dir() -> PathBuf {
    target_dir().join("ebpf")
}

/// The eBPF object (an ELF file) that `natgw`'s build script embeds.
pub fn ebpf_object() -> PathBuf {
    ebpf_target_dir()
        .join(EBPF_TARGET)
        .join("release")
        .join(EBPF_OBJECT_NAME)
}

/// The release `natgw` binary, the one copied to a gateway and used by the tests.
pub fn natgw_bin() -> PathBuf {
    target_dir().join("release").join(NATGW_BIN_NAME)
}

/// The virtual environment of the integration tests' PyPI packages (aioice), made by
/// `cargo xtask provision`; tests/lib.rs looks for `bin/python3` there.
pub fn test_python_dir() -> PathBuf {
    target_dir().join("test-python")
}

/// `CARGO_HOME`, where `cargo install` puts binaries such as bpf-linker.
pub fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
}

/// Looks `program` up in `PATH`, like a shell would.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
