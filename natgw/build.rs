//! Embeds natgw's eBPF object: `NATGW_EBPF_OBJ` if set (what `cargo xtask build`
//! passes), else the object a previous eBPF build left in the workspace's target
//! directory, else an empty placeholder so the workspace still builds and lints
//! without the eBPF toolchain (`natgw run` then refuses to start).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// Environment variable naming the eBPF object to embed.
const OBJ_ENV: &str = "NATGW_EBPF_OBJ";
/// Where the eBPF build puts the object, relative to the workspace root.
const DEFAULT_OBJ: &str = "target/ebpf/bpfel-unknown-none/release/natgw-ebpf";

fn main() {
    if let Err(e) = run() {
        println!("cargo:warning=natgw build script: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let dest = out_dir.join("natgw-ebpf.o");
    println!("cargo:rerun-if-env-changed={OBJ_ENV}");

    if let Some(obj) = env::var_os(OBJ_ENV).filter(|v| !v.is_empty()) {
        let obj = PathBuf::from(obj);
        println!("cargo:rerun-if-changed={}", obj.display());
        return copy(&obj, &dest).map_err(|e| format!("{OBJ_ENV}={}: {e}", obj.display()));
    }

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let workspace = manifest_dir.parent().unwrap_or(&manifest_dir);
    let default_obj = workspace.join(DEFAULT_OBJ);
    // Watched even while missing, so the object is picked up once it is built.
    println!("cargo:rerun-if-changed={}", default_obj.display());
    if default_obj.is_file() {
        return copy(&default_obj, &dest).map_err(|e| format!("{}: {e}", default_obj.display()));
    }

    println!(
        "cargo:warning=natgw is built without its eBPF programs ({} not found and \
         {OBJ_ENV} not set); `natgw run` will refuse to start. Build with `cargo xtask build`.",
        default_obj.display()
    );
    write_if_changed(&dest, &[]).map_err(|e| format!("{}: {e}", dest.display()))
}

fn copy(src: &Path, dest: &Path) -> std::io::Result<()> {
    let bytes = fs::read(src)?;
    write_if_changed(dest, &bytes)
}

/// Leaves the file (and its mtime) alone when the content is unchanged.
fn write_if_changed(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if fs::read(dest).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fs::write(dest, bytes)
}
