//! Provisioning: makes sure this machine can build the eBPF programs and run the tests,
//! installing what is missing and saying why, and costing only a few file checks and one
//! `dpkg-query` when everything is already there.
//!
//! The kernel programs need `-Z build-std=core` for `bpfel-unknown-none`, hence a
//! compiler whose standard library sources match it exactly, plus bpf-linker. Two routes:
//!
//! - **nightly**: rustup's nightly with its `rust-src` component — the usual aya route,
//!   taken whenever it is available.
//! - **debian**: Debian's `rustc-web` with the matching `rust-web-src`, unlocked with
//!   `RUSTC_BOOTSTRAP=1`, and bpf-linker built against Debian's LLVM 22. Used where
//!   rustup cannot fetch `rust-src`. (Debian's sources do not fit rustup's nightly, so
//!   the two routes are never mixed.)

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::{exec, paths};

/// A Debian package and the reason natgw needs it, printed when it gets installed.
pub struct Package {
    name: &'static str,
    why: &'static str,
}

/// Debian's Rust, whose `core` sources match the compiler (the debian route).
const DEBIAN_RUST_PACKAGES: &[Package] = &[
    Package {
        name: "rustc-web",
        why: "Rust compiler for the eBPF programs (its core sources ship in rust-web-src)",
    },
    Package {
        name: "cargo-web",
        why: "the cargo matching rustc-web, to build the eBPF crate",
    },
    Package {
        name: "rust-web-src",
        why: "core library sources for `-Z build-std=core` on bpfel-unknown-none",
    },
];

/// The LLVM that bpf-linker is built against.
const LLVM_PACKAGE: Package = Package {
    name: "llvm-22-dev",
    why: "LLVM 22 libraries that bpf-linker links against",
};

/// Debian packages the integration tests use. Add to this list as tests grow.
const TEST_PACKAGES: &[Package] = &[
    Package {
        name: "iproute2",
        why: "`ip netns` / `ip link` to inspect a testbed by hand",
    },
    Package {
        name: "natpmpc",
        why: "a NAT-PMP client independent of natgw, for the PCP/NAT-PMP server tests",
    },
    Package {
        name: "stun-client",
        why: "Debian's `stun`, a STUN client independent of natgw, for the STUN responder tests",
    },
    Package {
        name: "nftables",
        why: "`nft`, for the kernel's masquerade NAT that the punch tests, the conformance \
              suite and `cargo xtask run` compare natgw with",
    },
    Package {
        name: "conntrack",
        why: "`conntrack`, to read the kernel NAT's TCP state in the conformance suite",
    },
    Package {
        name: "python3-scapy",
        why: "scapy, to craft the hostile packets (bad checksums, lengths, TCP flags, IP \
              options) of the validation tests",
    },
    Package {
        name: "systemd",
        why: "`systemd-analyze verify`, for the package tests' check of natgw.service",
    },
    Package {
        name: "miniupnpc",
        why: "`upnpc`, miniupnp's UPnP IGD client, independent of natgw, for the UPnP tests",
    },
    Package {
        name: "gir1.2-gupnpigd-1.0",
        why: "GNOME's GUPnP-IGD, a second UPnP IGD client for the UPnP tests \
              (tests/gupnp_igd.py)",
    },
    Package {
        name: "prometheus",
        why: "`promtool check metrics`, Prometheus's own check of the /metrics document \
              natgw serves (tests/metrics.rs)",
    },
    Package {
        name: "python3-gi",
        why: "GObject introspection for Python, through which tests/gupnp_igd.py uses \
              GUPnP-IGD",
    },
    Package {
        name: "python3-venv",
        why: "`python3 -m venv`, for the virtual environment in target/test-python that \
              holds the tests' PyPI packages (aioice, see TEST_PYPI_PACKAGES)",
    },
    Package {
        name: "coturn",
        why: "`turnutils_uclient`, coturn's TURN client, independent of natgw, for the TURN \
              relay tests (tests/turn.rs); its turnserver daemon stays off (Debian ships \
              /etc/default/coturn with TURNSERVER_ENABLED commented out)",
    },
    Package {
        name: "keepalived",
        why: "VRRP, which moves the virtual addresses between the two gateways of the \
              failover tests (tests/failover.rs) and `cargo xtask run --ha`; its service \
              stays off (it starts only with an /etc/keepalived/keepalived.conf)",
    },
    Package {
        name: "bird2",
        why: "BIRD, the routing daemon of the scale-out testbed (tests/port_blocks.rs): the \
              gateways announce their port-block shares to the routers by BGP, with BFD; \
              where systemd starts its service, Debian's default /etc/bird/bird.conf has \
              no neighbours and installs no routes",
    },
];

/// A PyPI package the integration tests use, pinned, installed with pip into the
/// virtual environment [`paths::test_python_dir`].
pub struct PyPackage {
    name: &'static str,
    version: &'static str,
    why: &'static str,
}

/// PyPI packages the integration tests use (Debian's own copies are older or absent).
/// aioice's own dependencies are pinned too, at the versions pip chose for 0.13.0,
/// so that every machine runs the same agent.
const TEST_PYPI_PACKAGES: &[PyPackage] = &[
    PyPackage {
        name: "aioice",
        version: "0.13.0",
        why: "an ICE agent (RFC 8445) independent of natgw, run behind two natgw sites \
              against natgw's STUN responder and TURN relay (tests/aioice_agent.py, \
              tests/no_direct_path.rs)",
    },
    PyPackage {
        name: "dnspython",
        version: "2.9.2",
        why: "aioice's dependency",
    },
    PyPackage {
        name: "ifaddr",
        version: "0.2.0",
        why: "aioice's dependency (lists the host's addresses for host candidates)",
    },
];

/// Debian packages `cargo xtask package` uses.
const PACKAGE_PACKAGES: &[Package] = &[Package {
    name: "dpkg-dev",
    why: "`dpkg-shlibdeps`, through which cargo-deb computes the package's Depends",
}];

/// The cargo-deb release `cargo xtask package` installs when there is none.
const CARGO_DEB: &str = "cargo-deb@3.8.0";

/// Debian packages `cargo xtask bench` uses.
const BENCH_PACKAGES: &[Package] = &[
    Package {
        name: "nftables",
        why: "`nft`, to set up the kernel's masquerade NAT that the bench compares natgw with",
    },
    Package {
        name: "linux-perf",
        why: "`perf`, to show where the gateway's CPU time goes",
    },
    Package {
        name: "coturn",
        why: "coturn's `turnserver`, the TURN relay natgw's relay throughput is compared \
              with (run by the bench with a config of its own in a namespace; the Debian \
              service stays off)",
    },
];

/// Where Debian's LLVM 22 lives; passed to bpf-linker's build.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// The bpf-linker release known to work with Rust 1.95–1.97 and LLVM 22.
const BPF_LINKER: &str = "bpf-linker@0.13.0";

/// The cargo-fuzz release `cargo xtask fuzz` installs when there is none.
const CARGO_FUZZ: &str = "cargo-fuzz@0.13.2";

/// rustup's name for the nightly toolchain of the nightly route.
pub const NIGHTLY: &str = "nightly";

/// Debian's compiler (the debian route).
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Debian's cargo, matching [`DEBIAN_RUSTC`].
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// Debian's `core` sources, which `-Z build-std=core` compiles.
const DEBIAN_CORE_SRC: &str = "/usr/lib/rustlib/src/rust/library/core/Cargo.toml";

/// Which compiler builds the eBPF programs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ToolchainChoice {
    /// nightly when rustup's nightly has rust-src, else Debian's rustc-web.
    #[default]
    Auto,
    /// rustup's nightly with its rust-src component.
    Nightly,
    /// Debian's rustc-web + rust-web-src with RUSTC_BOOTSTRAP=1.
    Debian,
}

/// Arguments of `cargo xtask provision`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which compiler builds the eBPF programs.
    #[arg(long, value_enum, default_value_t)]
    pub ebpf_toolchain: ToolchainChoice,
}

/// What the caller is about to do, which decides what gets provisioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Build the eBPF object and natgw.
    Build,
    /// Build, then run the tests, the testbed demo or the conformance suite (also
    /// needs [`TEST_PACKAGES`]).
    Test,
    /// Build, then benchmark (also needs [`BENCH_PACKAGES`]).
    Bench,
}

/// A route that was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// rustup's nightly with rust-src.
    Nightly,
    /// Debian's rustc-web with `RUSTC_BOOTSTRAP=1`.
    Debian,
}

/// A ready eBPF toolchain.
#[derive(Debug)]
pub struct EbpfToolchain {
    /// Which compiler to use.
    pub route: Route,
    /// The bpf-linker binary rustc must find on `PATH`.
    pub bpf_linker: PathBuf,
}

/// `cargo xtask provision`: everything for building and testing.
pub fn run(args: &Args) -> Result<EbpfToolchain> {
    ensure(args.ebpf_toolchain, Purpose::Test)
}

/// Makes sure an eBPF toolchain (and, for tests, the test packages) is installed, and
/// says which route will be used.
pub fn ensure(choice: ToolchainChoice, purpose: Purpose) -> Result<EbpfToolchain> {
    let apt = has_apt();
    let route = choose_route(choice, apt)?;
    let mut bpf_linker = find_bpf_linker();

    let mut wanted: Vec<&Package> = Vec::new();
    if route == Route::Debian {
        wanted.extend(DEBIAN_RUST_PACKAGES);
    }
    if bpf_linker.is_none() {
        if !apt {
            bail!(
                "bpf-linker is not installed and this is not a Debian system with apt-get, \
                 so xtask cannot install it; {}",
                INSTALL_HELP
            );
        }
        wanted.push(&LLVM_PACKAGE);
    }
    if purpose == Purpose::Test {
        if apt {
            wanted.extend(TEST_PACKAGES);
        } else {
            let names: Vec<_> = TEST_PACKAGES.iter().map(|p| p.name).collect();
            eprintln!(
                "xtask: not a Debian system; make sure the tests' tools are installed \
                 (Debian names: {})",
                names.join(", ")
            );
        }
    }

    if purpose == Purpose::Bench {
        if apt {
            wanted.extend(BENCH_PACKAGES);
        } else {
            let names: Vec<_> = BENCH_PACKAGES.iter().map(|p| p.name).collect();
            eprintln!(
                "xtask: not a Debian system; make sure the bench's tools are installed \
                 (Debian names: {})",
                names.join(", ")
            );
        }
    }

    let missing = missing_packages(&wanted)?;
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    if purpose == Purpose::Test {
        ensure_test_python()?;
    }
    if bpf_linker.is_none() {
        install_bpf_linker()?;
        bpf_linker = find_bpf_linker();
    }
    let bpf_linker = bpf_linker.context(
        "bpf-linker: `cargo install` succeeded but bpf-linker is neither on PATH nor in \
         $CARGO_HOME/bin",
    )?;
    if route == Route::Debian {
        for file in [DEBIAN_RUSTC, DEBIAN_CARGO, DEBIAN_CORE_SRC] {
            if !Path::new(file).is_file() {
                bail!(
                    "Debian's Rust is installed according to dpkg, but {file} is missing; \
                     reinstall with `apt-get install --reinstall rustc-web cargo-web rust-web-src`"
                );
            }
        }
    }

    let compiler = match route {
        Route::Nightly => "rustup's nightly with rust-src",
        Route::Debian => "Debian's rustc-web (RUSTC_BOOTSTRAP=1)",
    };
    eprintln!(
        "xtask: eBPF toolchain: {compiler}, linker {}",
        bpf_linker.display()
    );
    Ok(EbpfToolchain { route, bpf_linker })
}

/// Installs the tools the bench drives (nft, perf, coturn's turnserver) when missing,
/// without the eBPF toolchain: for bench runs given a prebuilt natgw.
///
/// # Errors
/// When apt-get fails.
pub fn ensure_bench_tools() -> Result<()> {
    if !has_apt() {
        return Ok(());
    }
    let wanted: Vec<&Package> = BENCH_PACKAGES.iter().collect();
    let missing = missing_packages(&wanted)?;
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    Ok(())
}

/// Installs the tools the tests, `cargo xtask run` and the conformance suite drive
/// (kernel NAT, STUN and NAT-PMP clients) when missing, without the eBPF toolchain:
/// for runs given a prebuilt natgw.
///
/// # Errors
/// When apt-get fails.
pub fn ensure_test_tools() -> Result<()> {
    if has_apt() {
        let wanted: Vec<&Package> = TEST_PACKAGES.iter().collect();
        let missing = missing_packages(&wanted)?;
        if !missing.is_empty() {
            apt_install(&missing)?;
        }
    }
    ensure_test_python()?;
    Ok(())
}

/// Makes sure the virtual environment of the tests' PyPI packages exists and holds
/// [`TEST_PYPI_PACKAGES`] at their pinned versions: creates it with the system's
/// `python3 -m venv` and installs with its pip when something is missing or at
/// another version; otherwise costs one interpreter start. Returns its interpreter,
/// which the tests find there (or through `NATGW_TEST_PYTHON`, which `cargo xtask
/// test` sets).
///
/// # Errors
/// When the environment cannot be created or pip fails.
pub fn ensure_test_python() -> Result<PathBuf> {
    let dir = paths::test_python_dir();
    let python = dir.join("bin").join("python3");
    if !python.is_file() {
        // Debian's interpreter (python3-venv gives it ensurepip), not whatever
        // `python3` a version manager puts first on PATH.
        let system = ["/usr/bin/python3"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| paths::find_in_path("python3"))
            .context("no python3 to create the tests' virtual environment with")?;
        exec::run(
            Command::new(&system).args(["-m", "venv"]).arg(&dir),
            "creating the virtual environment of the tests' PyPI packages",
        )?;
    }
    // One interpreter start: the installed version of each package, or "-".
    let names: Vec<&str> = TEST_PYPI_PACKAGES.iter().map(|p| p.name).collect();
    let script = "import sys, importlib.metadata as m\n\
                  for name in sys.argv[1:]:\n\
                  \ttry: print(name, m.version(name))\n\
                  \texcept m.PackageNotFoundError: print(name, '-')\n";
    let listing =
        exec::probe(Command::new(&python).args(["-c", script]).args(&names)).unwrap_or_default();
    let missing: Vec<&PyPackage> = TEST_PYPI_PACKAGES
        .iter()
        .filter(|p| {
            !listing
                .lines()
                .any(|l| l == format!("{} {}", p.name, p.version))
        })
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing PyPI packages into {}:", dir.display());
        for p in &missing {
            eprintln!("  {:<14} {}", format!("{}=={}", p.name, p.version), p.why);
        }
        exec::run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                ])
                .args(missing.iter().map(|p| format!("{}=={}", p.name, p.version))),
            "pip install: the tests' PyPI packages",
        )?;
    }
    Ok(python)
}

/// Makes sure `cargo xtask fuzz` can run: rustup's nightly (libFuzzer's sanitizer
/// and coverage flags are nightly-only; `rust-src` is not needed) and cargo-fuzz,
/// installed with `cargo install` when missing. Returns the cargo-fuzz binary.
///
/// # Errors
/// When there is no nightly (rustup is never asked to download one), or the install
/// fails.
pub fn ensure_fuzz_tools() -> Result<PathBuf> {
    let nightly = exec::probe(
        Command::new("rustup")
            .args(["run", NIGHTLY, "rustc", "--version"])
            .env("RUSTUP_AUTO_INSTALL", "0")
            .env_remove("RUSTUP_TOOLCHAIN"),
    );
    if nightly.is_none() {
        bail!(
            "cargo-fuzz needs rustup's `{NIGHTLY}` toolchain (sanitizers and -Z flags), \
             and there is none; run `rustup toolchain install {NIGHTLY}`"
        );
    }
    if let Some(found) = find_cargo_tool("cargo-fuzz") {
        return Ok(found);
    }
    eprintln!(
        "xtask: installing {CARGO_FUZZ} (runs the libFuzzer targets in fuzz/; about a minute)"
    );
    exec::run(
        exec::host_cargo().args(["install", "--locked", CARGO_FUZZ]),
        &format!("cargo install: building {CARGO_FUZZ}"),
    )?;
    find_cargo_tool("cargo-fuzz").context(
        "cargo-fuzz: `cargo install` succeeded but cargo-fuzz is neither on PATH nor in \
         $CARGO_HOME/bin",
    )
}

/// Makes sure `cargo xtask package` can run: dpkg-dev (on Debian) and cargo-deb,
/// installed with `cargo install` when missing (a minute or two, once). Returns the
/// cargo-deb binary.
///
/// # Errors
/// When apt-get or the install fails.
pub fn ensure_package_tools() -> Result<PathBuf> {
    if has_apt() {
        let wanted: Vec<&Package> = PACKAGE_PACKAGES.iter().collect();
        let missing = missing_packages(&wanted)?;
        if !missing.is_empty() {
            apt_install(&missing)?;
        }
    }
    if let Some(found) = find_cargo_tool("cargo-deb") {
        return Ok(found);
    }
    eprintln!("xtask: installing {CARGO_DEB} (assembles natgw's .deb; once, a minute or two)");
    exec::run(
        exec::host_cargo().args(["install", "--locked", CARGO_DEB]),
        &format!("cargo install: building {CARGO_DEB}"),
    )?;
    find_cargo_tool("cargo-deb").context(
        "cargo-deb: `cargo install` succeeded but cargo-deb is neither on PATH nor in \
         $CARGO_HOME/bin",
    )
}

/// Cargo subcommand `name` (cargo-fuzz, cargo-deb) on `PATH`, or where `cargo
/// install` puts it.
fn find_cargo_tool(name: &str) -> Option<PathBuf> {
    paths::find_in_path(name).or_else(|| {
        paths::cargo_home()
            .map(|home| home.join("bin").join(name))
            .filter(|path| path.is_file())
    })
}

/// How to get a toolchain by hand, for machines where xtask cannot install one.
const INSTALL_HELP: &str = "install one of:
  - rustup's nightly with its standard library sources, and bpf-linker:
        rustup toolchain install nightly --component rust-src
        cargo install bpf-linker --no-default-features --features llvm-<N>
    (with LLVM <N> development files, N = the LLVM major of `rustc +nightly -vV`;
     see https://github.com/aya-rs/bpf-linker)
  - or, on Debian 12 as root (what `cargo xtask provision` does):
        apt-get update
        apt-get install -y rustc-web cargo-web rust-web-src llvm-22-dev
        LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker@0.13.0 \\
            --no-default-features --features llvm-22";

fn choose_route(choice: ToolchainChoice, apt: bool) -> Result<Route> {
    Ok(match choice {
        ToolchainChoice::Auto if nightly_has_rust_src() => Route::Nightly,
        ToolchainChoice::Auto if apt => Route::Debian,
        ToolchainChoice::Auto => bail!(
            "no toolchain can build the eBPF programs: rustup's nightly has no rust-src \
             and this is not a Debian system with apt-get; {INSTALL_HELP}"
        ),
        ToolchainChoice::Nightly if nightly_has_rust_src() => Route::Nightly,
        ToolchainChoice::Nightly => bail!(
            "--ebpf-toolchain nightly: rustup's `{NIGHTLY}` toolchain is missing or has no \
             rust-src; run `rustup toolchain install {NIGHTLY} --component rust-src`"
        ),
        ToolchainChoice::Debian if apt => Route::Debian,
        ToolchainChoice::Debian => bail!(
            "--ebpf-toolchain debian: this is not a Debian system with apt-get; {INSTALL_HELP}"
        ),
    })
}

/// Whether this is a Debian (or derived) system xtask can install packages on.
fn has_apt() -> bool {
    Path::new("/etc/debian_version").is_file()
        && paths::find_in_path("apt-get").is_some()
        && paths::find_in_path("dpkg-query").is_some()
}

/// Whether rustup's nightly exists and has its `core` sources. Never installs anything:
/// `RUSTUP_AUTO_INSTALL=0` keeps rustup from downloading a missing toolchain.
fn nightly_has_rust_src() -> bool {
    let sysroot = exec::probe(
        Command::new("rustup")
            .args(["run", NIGHTLY, "rustc", "--print", "sysroot"])
            .env("RUSTUP_AUTO_INSTALL", "0")
            .env_remove("RUSTUP_TOOLCHAIN"),
    );
    sysroot.is_some_and(|sysroot| {
        Path::new(sysroot.trim())
            .join("lib/rustlib/src/rust/library/core/Cargo.toml")
            .is_file()
    })
}

/// bpf-linker on `PATH`, or where `cargo install` puts it.
fn find_bpf_linker() -> Option<PathBuf> {
    paths::find_in_path("bpf-linker").or_else(|| {
        paths::cargo_home()
            .map(|home| home.join("bin").join("bpf-linker"))
            .filter(|path| path.is_file())
    })
}

/// The packages of `wanted` that dpkg does not report as installed, in one query.
fn missing_packages<'a>(wanted: &[&'a Package]) -> Result<Vec<&'a Package>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    // dpkg-query exits 1 when some package is unknown but still lists the others.
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\\n"])
        .args(wanted.iter().map(|p| p.name))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .context("dpkg-query: asking which packages are installed")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            // ${Status} is "want flag status", e.g. "install ok installed".
            (words.nth(2) == Some("installed")).then_some(name)
        })
        .collect();
    Ok(wanted
        .iter()
        .copied()
        .filter(|p| !installed.contains(&p.name))
        .collect())
}

fn apt_install(packages: &[&Package]) -> Result<()> {
    let names: Vec<&str> = packages.iter().map(|p| p.name).collect();
    eprintln!("xtask: installing Debian packages:");
    for package in packages {
        eprintln!("  {:<14} {}", package.name, package.why);
    }
    if !exec::is_root() {
        bail!(
            "installing {} needs root: rerun as root, or install them yourself with \
             `apt-get update && apt-get install -y {}`",
            names.join(", "),
            names.join(" ")
        );
    }
    exec::run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get update: refreshing the package lists",
    )?;
    let (plain, with_recommends): (Vec<&str>, Vec<&str>) = names
        .iter()
        .partition(|name| WITHOUT_RECOMMENDS.contains(name));
    for (list, extra) in [
        (with_recommends, None),
        (plain, Some("--no-install-recommends")),
    ] {
        if list.is_empty() {
            continue;
        }
        exec::run(
            Command::new("apt-get")
                .args(["install", "-y"])
                .args(extra)
                .args(&list)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &format!("apt-get install: installing {}", list.join(", ")),
        )?;
    }
    Ok(())
}

/// Packages installed without their recommendations: `prometheus` recommends
/// `prometheus-node-exporter`, a daemon the tests do not want started; only
/// `promtool` is used. `coturn`: the tests use its client tools and the bench runs
/// `turnserver` itself, so nothing it might recommend is wanted. `keepalived`: the
/// tests run it in their namespaces; its recommended ipvsadm is not used.
const WITHOUT_RECOMMENDS: &[&str] = &["prometheus", "coturn", "keepalived"];

fn install_bpf_linker() -> Result<()> {
    eprintln!(
        "xtask: installing {BPF_LINKER} (links the eBPF programs; built against LLVM 22, \
         about a minute)"
    );
    exec::run(
        exec::host_cargo()
            .args(["install", BPF_LINKER])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX),
        &format!("cargo install: building {BPF_LINKER}"),
    )
}
