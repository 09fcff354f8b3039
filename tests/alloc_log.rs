//! The allocation log for abuse handling (`log_allocations`, RFC 6888 REQ-12) end to
//! end: UDP and TCP flows from two LAN hosts leave `start` records naming their
//! internal and external endpoints and never a destination; when the mappings expire
//! `end` records follow; `natgw who` names the right host for a time inside each
//! mapping and nobody outside; SIGHUP reopens the file after logrotate renamed it;
//! a `syslog:SOCKET` target gets one RFC 3164 datagram per record.

use std::io::Write as _;
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use natgw_integration_tests::{read_all, udp, wait_for, Setup};
use serde_json::Value;
use testbed::{GW_WAN_ADDR, LAN_A_ADDR, LAN_B_ADDR, WAN_A_ADDR, WAN_B_ADDR};

/// How long a record may take to show (ring buffer drained every 100 ms).
const RECORD_WAIT: Duration = Duration::from_secs(5);
/// How long expiry may take: a 2-3 s timeout, then two garbage-collection ticks.
const END_WAIT: Duration = Duration::from_secs(15);

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("natgw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One parsed text record: time, event, and its KEY=VALUE fields.
#[derive(Debug, Clone)]
struct Line {
    time: Timestamp,
    event: String,
    text: String,
}

impl Line {
    fn field(&self, key: &str) -> Option<&str> {
        self.text
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }
}

fn lines(path: &Path) -> Vec<Line> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut w = l.split_ascii_whitespace();
            Line {
                time: w
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("no time in `{l}`")),
                event: w.next().unwrap_or_default().to_owned(),
                text: l.to_owned(),
            }
        })
        .collect()
}

/// The first `event` record of `proto` mapping `internal`, waiting up to `within`.
fn record(
    s: &Setup,
    path: &Path,
    event: &str,
    proto: &str,
    internal: SocketAddrV4,
    within: Duration,
) -> Line {
    let int = internal.to_string();
    wait_for(within, || {
        lines(path).into_iter().find(|l| {
            l.event == event && l.field("proto") == Some(proto) && l.field("int") == Some(&int)
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no {event} record for {proto} {internal} in {}:\n{}\nnatgw log:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default(),
            s.natgw.log()
        )
    })
}

/// The external endpoint of a record.
fn external(l: &Line) -> SocketAddrV4 {
    let (first, last) = l
        .field("ports")
        .and_then(|p| p.split_once('-'))
        .unwrap_or_else(|| panic!("no ports in {}", l.text));
    assert_eq!(first, last, "dynamic mode: one port ({})", l.text);
    SocketAddrV4::new(
        l.field("ext").expect("ext").parse().expect("address"),
        first.parse().expect("port"),
    )
}

/// `natgw who --json EXTERNAL ARGS`: the internal endpoints the log names.
fn who(s: &Setup, ext: SocketAddrV4, args: &[&str]) -> Vec<String> {
    let ext = ext.to_string();
    let mut all = vec!["who", "--json", ext.as_str()];
    all.extend_from_slice(args);
    let (status, out, err) = s.natgw.cli(&all);
    assert!(status.success(), "natgw {all:?}: {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["from_log"]
        .as_array()
        .expect("from_log")
        .iter()
        .map(|h| {
            format!(
                "{} {}",
                h["protocol"].as_str().unwrap_or("?"),
                h["internal"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn midpoint(a: Timestamp, b: Timestamp) -> Timestamp {
    a + b.duration_since(a) / 2
}

#[test]
fn mappings_are_logged_from_start_to_end_and_who_finds_their_hosts() {
    let dir = TempDir::new("alloc-log");
    let log = dir.0.join("allocations.log");
    let config = dir.0.join("natgw.toml");
    std::fs::write(
        &config,
        format!(
            "log_allocations = \"file:{}\"\n[timeouts]\nudp = 2\ntcp_established = 3\n\
             tcp_transitory = 2\n[[forward]]\nprotocol = \"udp\"\nexternal_port = 9000\n\
             internal = \"10.0.1.2:9000\"\n",
            log.display()
        ),
    )
    .expect("write config");
    let run_args = ["--config", config.to_str().expect("UTF-8 path")];
    let mut s = Setup::new(&run_args);

    // A static forward is logged when natgw installs it, and held now.
    let fwd = SocketAddrV4::new(LAN_A_ADDR, 9000);
    let l = record(&s, &log, "start", "udp", fwd, RECORD_WAIT);
    assert_eq!(l.field("origin"), Some("static"), "{}", l.text);
    assert_eq!(external(&l), SocketAddrV4::new(GW_WAN_ADDR, 9000));
    assert_eq!(
        who(&s, external(&l), &[]),
        vec![format!("udp {fwd}")],
        "open-ended, now"
    );

    // UDP from both LAN hosts, TCP from the first.
    let a = SocketAddrV4::new(LAN_A_ADDR, 5000);
    let b = SocketAddrV4::new(LAN_B_ADDR, 5001);
    let sock_a = udp(&s.tb.lan[0].ns, *a.ip(), a.port());
    let sock_b = udp(&s.tb.lan[1].ns, *b.ip(), b.port());
    sock_a
        .send_to(b"a", SocketAddrV4::new(WAN_A_ADDR, 7))
        .expect("send");
    sock_b
        .send_to(b"b", SocketAddrV4::new(WAN_B_ADDR, 7))
        .expect("send");
    let server = SocketAddrV4::new(WAN_A_ADDR, 8080);
    let listener = s.tb.wan[0]
        .ns
        .run(|| TcpListener::bind(server))
        .expect("listen");
    let echo = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let got = read_all(&mut conn);
        conn.write_all(&got).expect("echo");
    });
    let mut conn = s.tb.lan[0]
        .ns
        .run(|| TcpStream::connect_timeout(&server.into(), Duration::from_secs(5)))
        .expect("connect through the NAT");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let t_addr = conn.local_addr().expect("local");
    let std::net::SocketAddr::V4(t) = t_addr else {
        panic!("IPv4")
    };
    conn.write_all(b"hello").expect("send");
    conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_eq!(read_all(&mut conn), b"hello");
    echo.join().expect("echo thread");
    drop(conn);

    // Start records with the endpoints `natgw mappings` shows.
    let mut starts = Vec::new();
    for (proto, internal) in [("udp", a), ("udp", b), ("tcp", t)] {
        let l = record(&s, &log, "start", proto, internal, RECORD_WAIT);
        let m = s
            .natgw
            .mapping_of(proto, internal)
            .unwrap_or_else(|| panic!("no {proto} mapping for {internal}"));
        assert_eq!(
            external(&l).to_string(),
            m["external"].as_str().expect("external"),
            "{}",
            l.text
        );
        assert_eq!(external(&l).ip(), &GW_WAN_ADDR);
        assert_eq!(l.field("origin"), Some("traffic"), "{}", l.text);
        starts.push(l);
    }

    // Mappings expire: end records with a duration.
    let mut ends = Vec::new();
    for (proto, internal) in [("udp", a), ("udp", b), ("tcp", t)] {
        let l = record(&s, &log, "end", proto, internal, END_WAIT);
        assert_eq!(l.field("reason"), Some("expire"), "{}", l.text);
        let d: f64 = l
            .field("duration")
            .and_then(|d| d.strip_suffix('s'))
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("no duration in {}", l.text));
        assert!((1.5..15.0).contains(&d), "{}", l.text);
        ends.push(l);
    }

    // Never a destination: no record names the servers' addresses or ports.
    let text = std::fs::read_to_string(&log).expect("log");
    for dest in [WAN_A_ADDR.to_string(), WAN_B_ADDR.to_string()] {
        assert!(
            !text.contains(&dest),
            "a destination {dest} in the log:\n{text}"
        );
    }
    for l in lines(&log) {
        for w in l.text.split_ascii_whitespace().skip(2) {
            let key = w.split_once('=').map_or(w, |(k, _)| k);
            assert!(
                ["proto", "int", "ext", "ports", "origin", "reason", "duration", "count"]
                    .contains(&key),
                "unexpected field {w} in {}",
                l.text
            );
        }
    }

    // `natgw who`: the right host inside each mapping (RFC 3339 and Unix seconds),
    // nobody before or after.
    for ((start, end), (proto, internal)) in
        starts
            .iter()
            .zip(&ends)
            .zip([("udp", a), ("udp", b), ("tcp", t)])
    {
        let ext = external(start);
        let mid = midpoint(start.time, end.time);
        let expect = vec![format!("{proto} {internal}")];
        assert_eq!(
            who(&s, ext, &["--proto", proto, "--at", &mid.to_string()]),
            expect
        );
        let unix = format!("{:.3}", mid.as_millisecond() as f64 / 1000.0);
        assert_eq!(who(&s, ext, &["--proto", proto, "--at", &unix]), expect);
        let before = start.time - jiff::SignedDuration::from_secs(1);
        assert!(who(&s, ext, &["--proto", proto, "--at", &before.to_string()]).is_empty());
        let after = end.time + jiff::SignedDuration::from_secs(1);
        assert!(who(&s, ext, &["--proto", proto, "--at", &after.to_string()]).is_empty());
        let (status, out, err) = s.natgw.cli(&[
            "who",
            &ext.to_string(),
            "--proto",
            proto,
            "--at",
            &after.to_string(),
        ]);
        assert!(status.success(), "{err}");
        assert!(out.starts_with("nobody held"), "{out}");
    }

    // Bad input is a clear error.
    for args in [
        vec!["who", "192.0.2.1"],
        vec!["who", "192.0.2.1:5000", "--at", "yesterday"],
        vec!["who", "192.0.2.1:5000", "--proto", "sctp"],
    ] {
        let (status, _, err) = s.natgw.cli(&args);
        assert!(!status.success() && !err.is_empty(), "{args:?}");
    }

    // logrotate: rename, SIGHUP, new records go to a new file.
    let rotated = dir.0.join("allocations.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    let pid = s.natgw.inner().pid().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    wait_for(RECORD_WAIT, || {
        s.natgw.log().contains("alloc_log.reopened").then_some(())
    })
    .unwrap_or_else(|| panic!("no reopen after SIGHUP:\n{}", s.natgw.log()));
    let c = SocketAddrV4::new(LAN_A_ADDR, 5003);
    udp(&s.tb.lan[0].ns, *c.ip(), c.port())
        .send_to(b"c", SocketAddrV4::new(WAN_A_ADDR, 7))
        .expect("send");
    let l = record(&s, &log, "start", "udp", c, RECORD_WAIT);
    assert!(
        !std::fs::read_to_string(&rotated)
            .expect("rotated")
            .contains(&format!("int={c} ")),
        "the new record went to the rotated file"
    );
    // Both files together; now (no --at): the log and the live table agree.
    let args = [
        "--log",
        rotated.to_str().expect("UTF-8"),
        "--log",
        log.to_str().expect("UTF-8"),
    ];
    assert_eq!(who(&s, external(&l), &args), vec![format!("udp {c}")]);
    let first = &starts[0];
    let mid = midpoint(first.time, ends[0].time).to_string();
    let mut with_at = args.to_vec();
    with_at.extend(["--at", &mid, "--proto", "udp"]);
    assert_eq!(who(&s, external(first), &with_at), vec![format!("udp {a}")]);

    // A restart: the adopted table's mappings are logged again with their creation
    // time (one made while no natgw ran would have no record otherwise), and
    // `natgw who` counts the two starts as one hold.
    s.natgw.stop();
    let before = lines(&log).len();
    s.natgw = natgw_integration_tests::Natgw::start(&s.tb.gateway.ns, &run_args);
    let again = wait_for(RECORD_WAIT, || {
        lines(&log)
            .into_iter()
            .skip(before)
            .find(|r| r.event == "start" && r.field("int") == Some(&c.to_string()))
    })
    .unwrap_or_else(|| panic!("no start record after the restart:\n{}", s.natgw.log()));
    assert!(
        (again.time.duration_since(l.time).as_secs_f64()).abs() < 0.01,
        "{} vs {}",
        again.text,
        l.text
    );
    assert_eq!(who(&s, external(&l), &[]), vec![format!("udp {c}")]);
    drop(sock_a);
    drop(sock_b);
}

#[test]
fn a_syslog_target_gets_one_datagram_per_record() {
    let dir = TempDir::new("alloc-syslog");
    let path = dir.0.join("log.sock");
    let server = UnixDatagram::bind(&path).expect("bind the test's syslog socket");
    server
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let target = format!("syslog:{}", path.display());
    let s = Setup::new(&["--log-allocations", &target, "--udp-timeout", "2"]);
    let a = SocketAddrV4::new(LAN_A_ADDR, 5010);
    let sock = udp(&s.tb.lan[0].ns, *a.ip(), a.port());
    sock.send_to(b"a", SocketAddrV4::new(WAN_A_ADDR, 7))
        .expect("send");
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + END_WAIT;
    let mut buf = [0u8; 1024];
    while std::time::Instant::now() < deadline
        && !got.iter().any(|m: &String| m.contains(" end proto=udp"))
    {
        if let Ok(n) = server.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let start = got
        .iter()
        .find(|m| m.contains(&format!(" start proto=udp int={a} ")))
        .unwrap_or_else(|| panic!("no start datagram: {got:?}\n{}", s.natgw.log()));
    assert!(start.starts_with("<30>"), "{start}");
    assert!(start.contains(" natgw["), "{start}");
    assert!(!start.contains(&WAN_A_ADDR.to_string()), "{start}");
    assert!(
        got.iter()
            .any(|m| m.contains(&format!(" end proto=udp int={a} "))),
        "no end datagram: {got:?}"
    );
    // `natgw who` cannot read syslog, and says where to look.
    let (status, _, err) = s.natgw.cli(&["who", "192.0.2.1:5010", "--at", "0"]);
    assert!(!status.success() && err.contains("syslog"), "{err}");
}
