//! Operating natgw: `natgw check-config` validates a file without root, naming the line
//! and key of each problem; the log formats are what journald and log shippers read.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use natgw_integration_tests::{natgw_bin, require_root};
use testbed::Testbed;

/// The unprivileged user check-config runs as.
const NOBODY: u32 = 65534;

/// A directory every user can read, removed on drop, holding a copy of natgw (the
/// build directory may sit where an unprivileged user cannot reach it).
struct World {
    dir: PathBuf,
}

impl World {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("natgw-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::copy(natgw_bin(), dir.join("natgw")).expect("copying natgw");
        std::fs::set_permissions(dir.join("natgw"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod natgw");
        Self { dir }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("writing a config file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        path
    }

    /// `natgw check-config FILE` as user nobody: (exit code, stdout, stderr).
    fn check_as_nobody(&self, file: &Path) -> (Option<i32>, String, String) {
        let out = Command::new(self.dir.join("natgw"))
            .arg("check-config")
            .arg(file)
            .uid(NOBODY)
            .gid(NOBODY)
            .env_remove("NATGW_LOG_FORMAT")
            .stdin(Stdio::null())
            .output()
            .expect("running natgw check-config as nobody");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn check_config_runs_without_root_and_names_line_and_key() {
    require_root(); // to drop to nobody
    let world = World::new("check-config");
    let good = world.file(
        "good.toml",
        "wan = \"lo\"\nlan = [\"lo\"]\n", // refused: the WAN cannot be a LAN
    );
    let (code, out, err) = world.check_as_nobody(&good);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("good.toml:2: lan: interface lo cannot be both the WAN and a LAN"),
        "{out}"
    );

    let fine = world.file(
        "fine.toml",
        "wan = \"lo\"\nlan = [\"natgw-no-such0\"]\n[timeouts]\nudp = 300\n",
    );
    let (code, out, err) = world.check_as_nobody(&fine);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("fine.toml:2: lan: warning: interface natgw-no-such0 does not exist"),
        "{out}"
    );
    assert!(out.ends_with("fine.toml: 0 errors, 1 warning\n"), "{out}");

    let bad = world.file(
        "bad.toml",
        "\
wan = \"lo\"
lan = [\"natgw-no-such0\"]
max_mappings = 0

[timeouts]
udp = 0
icmp = 10

[pcp]
min_lifetime = 900
max_lifetime = 60

[[forward]]
protocol = \"tcp\"
external_port = 0
internal = \"10.0.0.2:80\"
",
    );
    let (code, out, err) = world.check_as_nobody(&bad);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    for expected in [
        "bad.toml:3: max_mappings: max mappings must be at least 1",
        "bad.toml:6: timeouts.udp: the UDP timeout must be at least 1 second",
        "bad.toml:10: pcp.min_lifetime: pcp.min_lifetime 900 is above pcp.max_lifetime 60",
        "bad.toml:13: forward[0]: [[forward]]",
        "bad.toml:7: timeouts.icmp: warning: the ICMP timeout of 10 s",
        "bad.toml: 4 errors, 2 warnings",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    assert!(
        err.contains("4 errors: `natgw run` would refuse this configuration"),
        "{err}"
    );

    let typo = world.file(
        "typo.toml",
        "wan = \"lo\"\nlan = [\"natgw-no-such0\"]\n\n[limits]\nports_per_host = \"lots\"\n",
    );
    let (code, out, _) = world.check_as_nobody(&typo);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with(&format!("{}:5: limits.ports_per_host: ", typo.display())),
        "{out}"
    );

    let (code, out, err) = world.check_as_nobody(&world.dir.join("absent.toml"));
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("cannot read config file"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Starts natgw in a testbed with `env`, logging to `log`, and stops it; returns the
/// log's lines.
fn log_lines_of_a_run(log: &Path, env: &[(&str, String)], args: &[&str]) -> Vec<String> {
    let tb = Testbed::new().expect("testbed");
    let mut builder = testbed::Natgw::builder(natgw_bin())
        .log(log)
        .rust_log(Some("info"))
        .args(args);
    for (k, v) in env {
        builder = builder.env(*k, v.clone());
    }
    let mut natgw = builder.start(&tb.gateway.ns).expect("natgw starts");
    natgw.stop().expect("natgw stops");
    drop(tb);
    std::fs::read_to_string(log)
        .expect("reading the log")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn json_log_lines_are_objects_with_event_and_fields() {
    require_root();
    let world = World::new("log-json");
    let log = world.dir.join("natgw.log");
    let lines = log_lines_of_a_run(&log, &[], &["--log-format", "json"]);
    assert!(!lines.is_empty());
    let mut started = None;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "not a JSON object ({e}): {line}\nlog:\n{}",
                lines.join("\n")
            )
        });
        for key in ["ts", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "no {key}: {line}");
        }
        if v["event"] == "natgw.start_time" {
            started = Some(v);
        }
    }
    let started = started.unwrap_or_else(|| panic!("no natgw.start_time:\n{}", lines.join("\n")));
    assert_eq!(started["level"], "info");
    assert_eq!(started["fields"]["adopted"], "false", "{started}");
    assert!(started["fields"]["seconds"].as_str().is_some(), "{started}");

    // A command's fatal error is a JSON object too, at error level.
    let out = Command::new(natgw_bin())
        .args(["--log-format", "json", "check-config"])
        .arg(world.dir.join("absent.toml"))
        .output()
        .expect("running natgw");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(err.trim())
        .unwrap_or_else(|e| panic!("fatal error not JSON ({e}): {err}"));
    assert_eq!(v["level"], "error", "{v}");
    assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("natgw: error: cannot read config file")),
        "{v}"
    );
}

#[test]
fn auto_log_format_is_journald_only_on_the_journal_stream() {
    require_root();
    let world = World::new("log-journal");
    // The log file stands in for the journal's stream: JOURNAL_STREAM names its
    // device and inode, as systemd does for the stream it connects to stderr.
    let log = world.file("natgw.log", "");
    let meta = std::fs::metadata(&log).expect("stat");
    let stream = {
        use std::os::unix::fs::MetadataExt as _;
        format!("{}:{}", meta.dev(), meta.ino())
    };
    let lines = log_lines_of_a_run(&log, &[("JOURNAL_STREAM", stream)], &[]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("natgw.start_time")),
        "{}",
        lines.join("\n")
    );
    for line in &lines {
        assert!(
            line.len() > 3 && line.starts_with('<') && line.as_bytes()[2] == b'>',
            "every line has a priority prefix: {line}"
        );
        assert!(!line.contains("Z "), "no timestamps: {line}");
    }

    // Inherited but not this stream (another inode): the human format.
    let other = world.file("natgw-other.log", "");
    let lines = log_lines_of_a_run(&other, &[("JOURNAL_STREAM", "1:1".to_owned())], &[]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('[') && l.contains("natgw.start_time")),
        "{}",
        lines.join("\n")
    );
    assert!(
        lines.iter().all(|l| !l.starts_with("<6>")),
        "{}",
        lines.join("\n")
    );
}
