//! `cargo xtask package`: natgw's Debian package. Builds natgw as `cargo xtask build`
//! does (the eBPF object embedded), renders its man pages and shell completions from
//! the command line natgw itself parses (`natgw::cli::command()`, so they are never
//! written by hand), then has cargo-deb assemble the .deb that
//! `[package.metadata.deb]` in natgw/Cargo.toml describes:
//!
//! - `/usr/sbin/natgw`;
//! - `/usr/lib/systemd/system/natgw.service` (packaging/natgw.service), neither
//!   enabled nor started on install, restarted after an upgrade when it runs;
//! - `/etc/natgw/natgw.toml` (packaging/natgw.toml), a conffile of commented defaults;
//! - `/usr/share/man/man8/natgw.8.gz` and one page per subcommand (`natgw-run.8.gz`,
//!   `natgw-stun-probe.8.gz`, ...);
//! - bash, zsh and fish completions where Debian's shells look for them.
//!
//! cargo-deb is installed with `cargo install` when missing (see
//! [`provision::ensure_package_tools`]).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use clap_complete::Shell;

use crate::build;
use crate::provision::{self, Purpose};
use crate::{exec, paths};

/// The man pages' section: natgw is a system administration command and daemon.
const MAN_SECTION: &str = "8";

/// Arguments of `cargo xtask package`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    build: build::Args,
}

/// `cargo xtask package`.
pub fn run(args: &Args) -> Result<()> {
    build::build_all(&args.build, Purpose::Build)?;
    let deb = build_deb()?;
    println!("natgw package: {}", deb.display());
    Ok(())
}

/// Where the generated man pages and completions go: under `target/release/`, the
/// prefix cargo-deb resolves to the workspace's target directory wherever it is
/// (see the assets in natgw/Cargo.toml).
fn generated_dir() -> PathBuf {
    paths::target_dir().join("release").join("package")
}

/// Generates the man pages and completions, then builds the .deb around
/// `target/release/natgw` (which [`build::build_all`] must have built) with
/// cargo-deb; returns the .deb's path.
///
/// # Errors
/// When the binary is missing, cargo-deb cannot be installed or fails, or a file
/// cannot be written.
pub fn build_deb() -> Result<PathBuf> {
    let natgw_bin = paths::natgw_bin();
    if !natgw_bin.is_file() {
        bail!(
            "{} is missing: `cargo xtask build` first",
            natgw_bin.display()
        );
    }
    let cargo_deb = provision::ensure_package_tools()?;
    let generated = generated_dir();
    let pages = write_man_pages(&generated.join("man8")).context("writing the man pages")?;
    write_completions(&generated.join("completions")).context("writing the completions")?;
    eprintln!(
        "xtask: {} man pages and 3 completions in {}",
        pages.len(),
        generated.display()
    );

    let out_dir = paths::target_dir().join("debian");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut cmd = Command::new(&cargo_deb);
    // --no-build: the binary is the one just built with the eBPF object embedded; a
    // build by cargo-deb would not pass NATGW_EBPF_OBJ.
    cmd.current_dir(paths::workspace_root())
        .args(["deb", "--no-build", "--package", "natgw", "--output"])
        .arg(&out_dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    eprintln!("xtask: {}", exec::display(&cmd));
    let output = cmd
        .output()
        .with_context(|| format!("running {}", cargo_deb.display()))?;
    if !output.status.success() {
        bail!(
            "cargo-deb failed ({}) building the natgw package",
            output.status
        );
    }
    // cargo-deb prints the path of the package it wrote.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let deb = stdout
        .lines()
        .map(str::trim)
        .rfind(|line| line.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo-deb did not say where the package is: {stdout}"))?;
    if !deb.is_file() {
        bail!(
            "cargo-deb reported {} but there is no such file",
            deb.display()
        );
    }
    Ok(deb)
}

/// Renders `natgw.8` and one page per subcommand (`natgw-run.8`, `natgw-stun-probe.8`,
/// ...), gzipped, into `dir` (emptied first); returns their paths.
fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    recreate(dir)?;
    let mut cmd = natgw::cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_man_page(&cmd, dir, &mut written)?;
    Ok(written)
}

fn write_man_page(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_man_page(sub, dir, written)?;
    }
    let page = clap_mangen::Man::new(cmd.clone()).section(MAN_SECTION);
    let mut roff = Vec::new();
    page.render(&mut roff)?;
    let path = dir.join(format!("{}.gz", page.get_filename()));
    write_gzipped(&path, &roff)?;
    written.push(path);
    Ok(())
}

/// The completion scripts, named as Debian's bash-completion, zsh and fish expect
/// (see the assets in natgw/Cargo.toml).
fn write_completions(dir: &Path) -> Result<()> {
    recreate(dir)?;
    for (shell, file) in [
        (Shell::Bash, "natgw"),
        (Shell::Zsh, "_natgw"),
        (Shell::Fish, "natgw.fish"),
    ] {
        let mut cmd = natgw::cli::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, "natgw", &mut script);
        let path = dir.join(file);
        fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// gzip at the best compression with no name or time in the header, so the same page
/// gives the same bytes (reproducible packages, as Debian's `gzip -9n`).
fn write_gzipped(path: &Path, bytes: &[u8]) -> Result<()> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::best());
    gz.write_all(bytes)
        .and_then(|()| gz.finish().map(drop))
        .with_context(|| format!("writing {}", path.display()))
}

/// An empty directory at `dir`: stale pages of a removed subcommand must not ship.
fn recreate(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn gunzip(path: &Path) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(fs::File::open(path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    #[test]
    fn man_pages_cover_every_subcommand_in_section_8() {
        let dir = std::env::temp_dir().join(format!("xtask-man-{}", std::process::id()));
        let pages = write_man_pages(&dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in ["natgw.8.gz", "natgw-run.8.gz", "natgw-stun-probe.8.gz"] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} not in {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let run = gunzip(&dir.join("natgw-run.8.gz"));
        assert!(
            run.contains(".TH natgw-run 8"),
            "{}",
            &run[..200.min(run.len())]
        );
        // The flags come from natgw's own parser.
        assert!(
            run.contains("udp\\-timeout"),
            "no --udp-timeout in natgw-run.8"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_know_the_subcommands() {
        let dir = std::env::temp_dir().join(format!("xtask-compl-{}", std::process::id()));
        write_completions(&dir).unwrap();
        for file in ["natgw", "_natgw", "natgw.fish"] {
            let script = fs::read_to_string(dir.join(file)).unwrap();
            assert!(
                script.contains("mappings") && script.contains("rendezvous"),
                "{file} lacks subcommands"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
