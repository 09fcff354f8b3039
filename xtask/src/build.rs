//! `cargo xtask build`: provision, build the eBPF object, then build the release `natgw`
//! binary with the object embedded (its build script reads `NATGW_EBPF_OBJ`).
//!
//! The eBPF crate is its own workspace built by its own compiler (see
//! [`crate::provision`]), so its build runs with an environment cleaned of everything
//! the outer rustup/cargo set to steer builds toward the host toolchain.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::paths::{EBPF_CRATE_DIR, EBPF_TARGET};
use crate::provision::{self, EbpfToolchain, Purpose, Route, ToolchainChoice};
use crate::{exec, paths};

/// Environment variable through which `natgw`'s build script receives the eBPF object.
pub const NATGW_EBPF_OBJ: &str = "NATGW_EBPF_OBJ";

/// Variables that the cargo running xtask (or the user) may have set for host builds and
/// that would make the eBPF build (or the fuzz targets' nightly build) use the wrong
/// compiler, wrapper or flags.
pub const HOST_BUILD_ENV: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTDOC",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "RUSTC_BOOTSTRAP",
];

/// Arguments of `cargo xtask build` (also taken by `test`).
#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct Args {
    /// Which compiler builds the eBPF programs.
    #[arg(long, value_enum, default_value_t)]
    pub ebpf_toolchain: ToolchainChoice,
}

/// What a build produced.
#[derive(Debug)]
pub struct Artifacts {
    /// The eBPF object embedded in natgw.
    pub ebpf_object: PathBuf,
    /// The release `natgw` binary.
    pub natgw_bin: PathBuf,
}

/// `cargo xtask build`.
pub fn run(args: &Args) -> Result<()> {
    let artifacts = build_all(args, Purpose::Build)?;
    println!("eBPF object: {}", artifacts.ebpf_object.display());
    println!("natgw:       {}", artifacts.natgw_bin.display());
    Ok(())
}

/// The natgw binary a testbed command runs: `given` (`--natgw PATH`, with the tests'
/// tools installed), or a fresh build provisioned for the tests.
///
/// # Errors
/// When `given` is not a file, or provisioning or the build fails.
pub fn natgw_for_testbed(given: Option<&Path>, args: &Args) -> Result<PathBuf> {
    match given {
        Some(path) if path.is_file() => {
            provision::ensure_test_tools()?;
            path.canonicalize()
                .with_context(|| format!("--natgw {}", path.display()))
        }
        Some(path) => bail!("--natgw {}: no such file", path.display()),
        None => Ok(build_all(args, Purpose::Test)?.natgw_bin),
    }
}

/// Provisions for `purpose`, then builds the eBPF object and natgw.
pub fn build_all(args: &Args, purpose: Purpose) -> Result<Artifacts> {
    let toolchain =
        provision::ensure(args.ebpf_toolchain, purpose).context("provisioning the toolchain")?;
    let ebpf_object = build_ebpf(&toolchain).context("building the eBPF programs")?;
    let natgw_bin = build_natgw(&ebpf_object).context("building natgw")?;
    Ok(Artifacts {
        ebpf_object,
        natgw_bin,
    })
}

/// Builds `natgw-ebpf` for `bpfel-unknown-none` and returns the object's path.
fn build_ebpf(toolchain: &EbpfToolchain) -> Result<PathBuf> {
    build_ebpf_variant(toolchain, &paths::ebpf_target_dir(), &[], None)
}

/// The bench's object for its `bpf_timer` GC prototype (issue #18): natgw-ebpf with
/// the `gc-timer` feature and BTF (`bpf-linker --btf`), in a target directory of its
/// own. The timer's map and callback need BTF, which natgw's own object cannot carry
/// (the verifier's count for `xdp_lan` then exceeds its limit); the bench loads only
/// its own programs from this one.
pub fn gc_timer_object() -> Result<PathBuf> {
    let toolchain = provision::ensure(ToolchainChoice::default(), Purpose::Build)
        .context("provisioning the toolchain")?;
    let dir = paths::target_dir().join("ebpf-btf");
    build_ebpf_variant(
        &toolchain,
        &dir,
        &["--features", "gc-timer"],
        Some("-Clink-arg=--btf"),
    )
    .context("building the eBPF object of the bpf_timer GC prototype")
}

/// Builds natgw-ebpf into `target_dir` with `extra` cargo arguments and, if given,
/// `rustflags`; returns the object.
fn build_ebpf_variant(
    toolchain: &EbpfToolchain,
    target_dir: &Path,
    extra: &[&str],
    rustflags: Option<&str>,
) -> Result<PathBuf> {
    let crate_dir = paths::workspace_root().join(EBPF_CRATE_DIR);
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!("{} not found", manifest.display());
    }

    let mut cmd = match toolchain.route {
        Route::Nightly => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", provision::NIGHTLY, "cargo"]);
            cmd
        }
        Route::Debian => Command::new(provision::DEBIAN_CARGO),
    };
    for var in HOST_BUILD_ENV {
        cmd.env_remove(var);
    }
    if toolchain.route == Route::Debian {
        // Debian's compiler, allowed to use `-Z build-std` although it is a release.
        cmd.env("RUSTC", provision::DEBIAN_RUSTC)
            .env("RUSTC_BOOTSTRAP", "1");
    }
    cmd.current_dir(&crate_dir)
        .args(["build", "--release", "--target", EBPF_TARGET])
        .args(["-Z", "build-std=core"])
        .args(extra)
        .env("CARGO_TARGET_DIR", target_dir)
        // When the lock file is (re)generated, pick dependency versions this compiler can
        // build: aya-ebpf 0.2.1 would otherwise pull aya-build 0.2.1, which needs 1.98.
        .env("CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS", "fallback")
        .env("PATH", ebpf_path(toolchain)?);
    if let Some(flags) = rustflags {
        cmd.env("CARGO_ENCODED_RUSTFLAGS", flags);
    }
    exec::run(
        &mut cmd,
        &format!("building {EBPF_CRATE_DIR} for {EBPF_TARGET}"),
    )?;

    let object = target_dir
        .join(EBPF_TARGET)
        .join("release")
        .join(paths::EBPF_OBJECT_NAME);
    if !object.is_file() {
        bail!(
            "the build succeeded but {} is missing (the eBPF crate's binary must be named \
             natgw-ebpf); the release directory holds: {}",
            object.display(),
            list_dir(object.parent().unwrap_or(&object))
        );
    }
    Ok(object)
}

/// `PATH` for the eBPF build: rustc finds bpf-linker through it. On the debian route
/// `/usr/bin` comes first so nothing in the build can reach rustup's proxies by name.
fn ebpf_path(toolchain: &EbpfToolchain) -> Result<OsString> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if toolchain.route == Route::Debian {
        dirs.push(PathBuf::from("/usr/bin"));
    }
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    dirs.extend(std::env::split_paths(&inherited));
    if let Some(linker_dir) = toolchain.bpf_linker.parent() {
        dirs.push(linker_dir.to_path_buf());
    }
    let mut unique: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    std::env::join_paths(unique).context("PATH for the eBPF build")
}

/// Builds the release `natgw` with `host cargo` and the object embedded.
fn build_natgw(ebpf_object: &Path) -> Result<PathBuf> {
    exec::run(
        exec::host_cargo()
            .current_dir(paths::workspace_root())
            .args(["build", "--release", "--package", "natgw"])
            .env(NATGW_EBPF_OBJ, ebpf_object),
        "building the release natgw binary",
    )?;
    let bin = paths::natgw_bin();
    if !bin.is_file() {
        bail!("the build succeeded but {} is missing", bin.display());
    }
    Ok(bin)
}

fn list_dir(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return format!("nothing ({} does not exist)", dir.display());
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.join(", ")
}
