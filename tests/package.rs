//! natgw's Debian package (`cargo xtask package`): what it holds and what dpkg is told
//! about it, that its systemd unit passes `systemd-analyze verify`, and that the
//! unit's own `ExecStart=` line, run in a testbed gateway with `$NOTIFY_SOCKET`
//! pointing at a socket of the test, sends `READY=1` only once the data path is
//! attached, `RELOADING=1` then `READY=1` around SIGHUP and `STOPPING=1` on SIGTERM.
//!
//! PID 1 here is not systemd, so the unit itself cannot be started: the test plays
//! the service manager's part (the command line, its `Environment=`, the
//! notification socket, the signals `ExecReload=` and `systemctl stop` send).
//!
//! The package is `$NATGW_DEB` (`cargo xtask test` builds it), else the newest
//! `target/debian/natgw_*.deb` that `cargo xtask package` left.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use natgw_integration_tests::{command_output, require_root};
use testbed::{Natgw, Testbed, GW_LAN_IFS, GW_WAN_IF, NATGW_DEB_ENV};

/// Where the unit is installed.
const UNIT: &str = "usr/lib/systemd/system/natgw.service";
/// The configuration file, a conffile.
const CONFFILE: &str = "/etc/natgw/natgw.toml";
/// How long natgw may take to send READY=1 (the verifier on a loaded machine).
const READY_WAIT: Duration = Duration::from_secs(90);
/// How long a reload or a stop may take to be notified.
const NOTIFY_WAIT: Duration = Duration::from_secs(20);

/// The package under test.
fn deb() -> PathBuf {
    if let Some(path) = std::env::var_os(NATGW_DEB_ENV) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "${NATGW_DEB_ENV}={} is not a file",
            path.display()
        );
        return path;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    let newest = fs::read_dir(&dir).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("natgw_") && n.ends_with(".deb"))
            })
            .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
    });
    newest.unwrap_or_else(|| {
        panic!(
            "no natgw package: set ${NATGW_DEB_ENV} or run `cargo xtask package` (nothing in {})",
            dir.display()
        )
    })
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("natgw-package-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating a scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package's files unpacked with `dpkg-deb -x` into a scratch directory.
fn unpack(deb: &Path, what: &str) -> Scratch {
    let scratch = Scratch::new(what);
    let dir = scratch.0.join("root");
    run_ok(
        "dpkg-deb",
        &["-x", &deb.to_string_lossy(), &dir.to_string_lossy()],
    );
    scratch
}

fn root(scratch: &Scratch) -> PathBuf {
    scratch.0.join("root")
}

/// The values of `key=` in a unit file, in order, whatever the section.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#') && !line.starts_with(';'))
        .filter_map(|line| line.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

fn unit_value(unit: &str, key: &str) -> String {
    let values = unit_values(unit, key);
    assert_eq!(values.len(), 1, "one {key}= in the unit: {values:?}");
    values[0].clone()
}

#[test]
fn package_holds_binary_unit_conffile_man_pages_and_completions() {
    let deb = deb();
    let deb_s = deb.to_string_lossy().into_owned();
    let listing = run_ok("dpkg-deb", &["--contents", &deb_s]);
    let entry = |path: &str| {
        listing
            .lines()
            .find(|line| line.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"))
            .to_owned()
    };
    // Mode and owner (root, by name or number).
    let is = |path: &str, mode: &str| {
        let line = entry(path);
        let mut fields = line.split_whitespace();
        assert_eq!(fields.next(), Some(mode), "{line}");
        assert!(
            matches!(fields.next(), Some("root/root" | "0/0")),
            "{path} owned by root: {line}"
        );
    };
    is("usr/sbin/natgw", "-rwxr-xr-x");
    for path in [
        UNIT,
        "etc/natgw/natgw.toml",
        "usr/share/man/man8/natgw.8.gz",
        "usr/share/man/man8/natgw-run.8.gz",
        "usr/share/man/man8/natgw-status.8.gz",
        "usr/share/man/man8/natgw-stun-probe.8.gz",
        "usr/share/bash-completion/completions/natgw",
        "usr/share/zsh/vendor-completions/_natgw",
        "usr/share/fish/vendor_completions.d/natgw.fish",
        "usr/share/doc/natgw/copyright",
    ] {
        is(path, "-rw-r--r--");
    }

    // The control file.
    let field = |name: &str| run_ok("dpkg-deb", &["-f", &deb_s, name]).trim().to_owned();
    assert_eq!(field("Package"), "natgw");
    assert_eq!(field("Section"), "net");
    let arch = run_ok("dpkg", &["--print-architecture"]);
    assert_eq!(field("Architecture"), arch.trim());
    let depends = field("Depends");
    // dpkg-shlibdeps' answer for the dynamic binary: the C library, nothing made up.
    assert!(depends.contains("libc6 (>="), "Depends: {depends}");
    assert!(
        !depends.contains('$'),
        "an unresolved variable in Depends: {depends}"
    );
    let version = field("Version");

    // The configuration is a conffile: dpkg keeps the operator's edits on upgrade.
    let scratch = Scratch::new("control");
    let control = scratch.0.join("DEBIAN");
    run_ok("dpkg-deb", &["-e", &deb_s, &control.to_string_lossy()]);
    let conffiles = fs::read_to_string(control.join("conffiles")).expect("a conffiles file");
    assert!(
        conffiles.lines().any(|l| l.trim() == CONFFILE),
        "conffiles: {conffiles}"
    );
    // The unit is neither enabled nor started on install (interfaces come first),
    // but systemd learns about it and an upgrade restarts a running natgw.
    let postinst = fs::read_to_string(control.join("postinst")).expect("a postinst");
    assert!(postinst.contains("natgw.service"), "{postinst}");
    assert!(postinst.contains("try-restart"), "{postinst}");
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");

    // The files themselves.
    let unpacked = unpack(&deb, "files");
    let root = root(&unpacked);
    let shipped = fs::read_to_string(root.join("etc/natgw/natgw.toml")).unwrap();
    let source =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/natgw.toml"))
            .unwrap();
    // natgw's unit tests parse packaging/natgw.toml and check its commented values.
    assert_eq!(shipped, source, "the conffile is packaging/natgw.toml");
    let bin = root.join("usr/sbin/natgw");
    let version_out = run_ok(&bin.to_string_lossy(), &["--version"]);
    let upstream = version.split('-').next().unwrap_or_default();
    assert_eq!(version_out.trim(), format!("natgw {upstream}"));

    let page = run_ok(
        "gzip",
        &[
            "-dc",
            &root
                .join("usr/share/man/man8/natgw-run.8.gz")
                .to_string_lossy(),
        ],
    );
    assert!(
        page.contains(".TH natgw-run 8"),
        "{}",
        &page[..page.len().min(300)]
    );
    assert!(
        page.contains("udp\\-timeout"),
        "natgw-run(8) documents --udp-timeout"
    );
    let fish =
        fs::read_to_string(root.join("usr/share/fish/vendor_completions.d/natgw.fish")).unwrap();
    assert!(
        fish.contains("complete -c natgw") && fish.contains("mappings"),
        "{fish}"
    );
    let bash =
        fs::read_to_string(root.join("usr/share/bash-completion/completions/natgw")).unwrap();
    assert!(
        bash.contains("complete -F") && bash.contains("natgw"),
        "{bash}"
    );
    let zsh = fs::read_to_string(root.join("usr/share/zsh/vendor-completions/_natgw")).unwrap();
    assert!(zsh.starts_with("#compdef natgw"), "{zsh}");
}

#[test]
fn unit_passes_systemd_analyze_verify_and_keeps_bpf_possible() {
    let deb = deb();
    let unpacked = unpack(&deb, "verify");
    let root = root(&unpacked);
    let unit = fs::read_to_string(root.join(UNIT)).expect("the unit in the package");

    assert_eq!(unit_value(&unit, "Type"), "notify");
    assert_eq!(unit_value(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(unit_value(&unit, "Restart"), "on-failure");
    assert_eq!(unit_value(&unit, "LimitMEMLOCK"), "infinity");
    assert_eq!(unit_value(&unit, "ProtectSystem"), "strict");
    let caps = unit_value(&unit, "CapabilityBoundingSet");
    for cap in ["CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_NET_RAW"] {
        assert!(caps.split_whitespace().any(|c| c == cap), "{cap} in {caps}");
    }
    let families = unit_value(&unit, "RestrictAddressFamilies");
    for family in ["AF_UNIX", "AF_INET", "AF_NETLINK"] {
        assert!(families.contains(family), "{family} in {families}");
    }
    assert!(
        unit_values(&unit, "ReadWritePaths")
            .iter()
            .any(|p| p.contains("/sys/fs/bpf")),
        "the pins' bpffs is writable"
    );
    assert_eq!(unit_value(&unit, "RuntimeDirectory"), "natgw");

    // ExecStart names files the package installs.
    let exec_start = unit_value(&unit, "ExecStart");
    for path in exec_start.split_whitespace().filter(|w| w.starts_with('/')) {
        assert!(
            root.join(&path[1..]).is_file(),
            "ExecStart names {path}, which the package does not install"
        );
    }

    // `systemd-analyze verify` needs ExecStart's program to exist: a copy of the
    // unit runs the unpacked binary instead of /usr/sbin/natgw (nothing is installed
    // on this machine).
    let program = exec_start.split_whitespace().next().unwrap_or_default();
    let unpacked_bin = root.join(&program[1..]);
    let copy = unpacked.0.join("natgw.service");
    fs::write(
        &copy,
        unit.replace(
            &format!("ExecStart={program}"),
            &format!("ExecStart={}", unpacked_bin.display()),
        ),
    )
    .unwrap();
    // --man=no: verify would run `man` for Documentation=, and the pages are in the
    // package, not installed here; they are checked in the package instead.
    for doc in unit_value(&unit, "Documentation").split_whitespace() {
        let page = doc
            .strip_prefix("man:")
            .and_then(|p| p.strip_suffix(")"))
            .and_then(|p| p.split_once('('))
            .map(|(name, section)| format!("usr/share/man/man{section}/{name}.{section}.gz"));
        let page = page.unwrap_or_else(|| panic!("Documentation={doc} is not a man page"));
        assert!(
            root.join(&page).is_file(),
            "{doc}: no {page} in the package"
        );
    }
    let out = run(
        "systemd-analyze",
        &["verify", "--man=no", &copy.to_string_lossy()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed ({}): {stderr}",
        out.status
    );
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("natgw.service"))
        .collect();
    assert!(
        about_ours.is_empty(),
        "systemd-analyze warns: {about_ours:#?}"
    );
}

/// The notifications sent to the test's socket, in order.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    fn bind(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).expect("binding the notification socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("a read timeout on the notification socket");
        Self {
            socket,
            seen: Vec::new(),
        }
    }

    /// The next datagram within `within`, or `None`; fails the test early when natgw
    /// exited.
    fn next(&mut self, natgw: &mut Natgw, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(message.clone());
                return Some(message);
            }
            if natgw.is_running() {
                if let Ok(Some(status)) = natgw.exited() {
                    panic!(
                        "natgw exited ({status}) after {:?}:\n{}",
                        self.seen,
                        natgw.log()
                    );
                }
            }
        }
        None
    }
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

#[test]
fn exec_start_notifies_ready_after_attach_reloading_on_sighup_and_stopping() {
    require_root();
    let deb = deb();
    let unpacked = unpack(&deb, "notify");
    let root = root(&unpacked);
    let unit = fs::read_to_string(root.join(UNIT)).expect("the unit in the package");

    // The packaged configuration with this testbed's interfaces on top.
    let config = unpacked.0.join("natgw.toml");
    let packaged = fs::read_to_string(root.join(&CONFFILE[1..])).unwrap();
    fs::write(
        &config,
        format!(
            "wan = \"{GW_WAN_IF}\"\nlan = [\"{}\", \"{}\"]\n{packaged}",
            GW_LAN_IFS[0], GW_LAN_IFS[1]
        ),
    )
    .unwrap();

    // ExecStart as written, its files taken from the package (the conffile: the copy
    // above).
    let exec_start = unit_value(&unit, "ExecStart");
    let mut words = exec_start.split_whitespace().map(|word| match word {
        CONFFILE => config.to_string_lossy().into_owned(),
        path if path.starts_with('/') => root.join(&path[1..]).to_string_lossy().into_owned(),
        other => other.to_owned(),
    });
    let program = words.next().expect("ExecStart has a program");
    let args: Vec<String> = words.collect();
    assert_eq!(
        args.first().map(String::as_str),
        Some("run"),
        "ExecStart runs the daemon: {exec_start}"
    );

    let socket_path = unpacked.0.join("notify.sock");
    let mut notifications = Notifications::bind(&socket_path);
    let mut builder = Natgw::builder(&program)
        .ifaces(Vec::<String>::new())
        .args(&args[1..])
        .rust_log(None)
        .env("NOTIFY_SOCKET", socket_path.to_string_lossy());
    for assignment in unit_values(&unit, "Environment") {
        let (key, value) = assignment.split_once('=').expect("Environment=KEY=VALUE");
        builder = builder.env(key, value);
    }
    let tb = Testbed::new().expect("testbed");
    let ns = &tb.gateway.ns;
    let mut natgw = builder.spawn(ns).expect("starting natgw as the unit does");

    // READY=1, and at that moment the data path is attached and natgw answers.
    let ready = notifications
        .next(&mut natgw, READY_WAIT)
        .unwrap_or_else(|| panic!("no notification within {READY_WAIT:?}:\n{}", natgw.log()));
    let links = command_output(ns, "ip", &["-d", "link", "show"]);
    assert!(
        has_line(&ready, "READY=1"),
        "the first notification is READY=1: {ready:?}"
    );
    assert_eq!(
        links.matches("prog/xdp").count(),
        3,
        "XDP on lan0, lan1 and wan0 when READY=1 came:\n{links}"
    );
    let status = natgw
        .status()
        .unwrap_or_else(|e| panic!("natgw status when READY=1 came: {e}"));
    assert!(status.is_object(), "{status}");
    assert!(
        ready.contains(&format!(
            "STATUS=translating lan0,lan1 to 192.0.2.1 on {GW_WAN_IF}"
        )),
        "{ready:?}"
    );
    let log = natgw.log();
    assert!(
        log.contains("tc.attached") && log.contains("natgw.ready"),
        "{log}"
    );

    // systemctl reload: ExecReload's SIGHUP.
    let pid = natgw.pid().expect("natgw runs");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let reloading = notifications
        .next(&mut natgw, NOTIFY_WAIT)
        .unwrap_or_else(|| panic!("no RELOADING=1 after SIGHUP:\n{}", natgw.log()));
    assert!(has_line(&reloading, "RELOADING=1"), "{reloading:?}");
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")
            && l["MONOTONIC_USEC=".len()..]
                .parse::<u64>()
                .is_ok_and(|us| us > 0)),
        "systemd 253+ wants MONOTONIC_USEC with RELOADING: {reloading:?}"
    );
    let ready_again = notifications
        .next(&mut natgw, NOTIFY_WAIT)
        .unwrap_or_else(|| panic!("no READY=1 after the reload:\n{}", natgw.log()));
    assert!(has_line(&ready_again, "READY=1"), "{ready_again:?}");
    assert!(natgw.log().contains("reload.applied"), "{}", natgw.log());

    // systemctl stop: SIGTERM.
    let exit = natgw
        .stop_cleanly()
        .expect("natgw stops cleanly on SIGTERM");
    assert!(exit.is_some_and(|s| s.success()));
    let stopping = notifications
        .next(&mut natgw, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no STOPPING=1 after SIGTERM:\n{}", natgw.log()));
    assert!(has_line(&stopping, "STOPPING=1"), "{stopping:?}");
    assert!(
        notifications
            .next(&mut natgw, Duration::from_millis(300))
            .is_none(),
        "nothing after STOPPING=1: {:?}",
        notifications.seen
    );
}
