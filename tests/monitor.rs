//! `natgw monitor`, the filters of `natgw mappings` and `natgw flush`, end to end:
//! a `natgw monitor --json` child prints the mappings traffic creates (from the data
//! path's ring buffer), the ones a UPnP control point (`upnpc`) creates and deletes,
//! those `natgw flush` deletes and those that expire; the filters select by protocol
//! and internal endpoint; a flush empties the maps of what it selects and keeps the
//! static forwards.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddrV4;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natgw_integration_tests::{natgw_bin, udp, wait_for, Setup};
use serde_json::Value;
use testbed::{GW_WAN_ADDR, LAN_A_ADDR, LAN_B_ADDR, WAN_A_ADDR};

/// How long an event may take to show (the ring buffer is drained every 100 ms).
const EVENT_WAIT: Duration = Duration::from_secs(5);

/// A `natgw monitor --json` child in the gateway namespace and the events it
/// printed so far.
struct Monitor {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Monitor {
    /// Starts it and waits until it says it is subscribed.
    fn start(s: &Setup) -> Self {
        let mut child =
            s.tb.gateway
                .ns
                .command(natgw_bin())
                .args(["monitor", "--json"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning natgw monitor");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let mut first = String::new();
        BufReader::new(stderr)
            .read_line(&mut first)
            .expect("reading natgw monitor's stderr");
        assert!(
            first.contains("subscribed"),
            "natgw monitor did not subscribe: {first}\nnatgw log:\n{}",
            s.natgw.log()
        );
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("natgw monitor printed `{line}`: {e}"));
                sink.lock().expect("events").push(v);
            }
        });
        Self { child, events }
    }

    /// The first event that `matches`, waiting up to [`EVENT_WAIT`].
    fn wait(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        wait_for(EVENT_WAIT, || {
            self.events
                .lock()
                .expect("events")
                .iter()
                .find(|e| matches(e))
                .cloned()
        })
        .unwrap_or_else(|| {
            panic!(
                "natgw monitor printed no {what}; it printed: {:?}",
                self.events.lock().expect("events")
            )
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(e: &Value, event: &str, protocol: &str, internal: SocketAddrV4) -> bool {
    e["event"] == event && e["protocol"] == protocol && e["internal"] == internal.to_string()
}

/// Sends one datagram from `from` on `host` to wan-a; returns the mapping natgw
/// lists for it.
fn udp_mapping(s: &Setup, host: usize, from: SocketAddrV4) -> Value {
    let sock = udp(&s.tb.lan[host].ns, *from.ip(), from.port());
    sock.send_to(b"hello", SocketAddrV4::new(WAN_A_ADDR, 7))
        .expect("send");
    wait_for(EVENT_WAIT, || s.natgw.mapping_of("udp", from))
        .unwrap_or_else(|| panic!("no mapping for {from}:\n{}", s.natgw.log()))
}

/// `natgw mappings --json ARGS`: the internal endpoints listed, as `proto internal`.
fn listed(s: &Setup, args: &[&str]) -> Vec<String> {
    let mut all = vec!["mappings", "--json"];
    all.extend_from_slice(args);
    let (status, out, err) = s.natgw.cli(&all);
    assert!(status.success(), "natgw {all:?}: {err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    v["mappings"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m["protocol"].as_str().unwrap_or("?"),
                m["internal"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Runs `upnpc -u DESCRIPTION ARGS` on lan-a.
fn upnpc(s: &Setup, args: &[&str]) -> String {
    let url = format!("http://{}:5000/rootDesc.xml", testbed::GW_LAN_A_ADDR);
    let out = s.tb.lan[0]
        .ns
        .command("upnpc")
        .arg("-u")
        .arg(&url)
        .args(args)
        .output()
        .expect("upnpc not found: `apt-get install miniupnpc` (`cargo xtask test` does)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn monitor_shows_creations_and_deletions_and_flush_keeps_static_forwards() {
    let dir = std::env::temp_dir().join(format!("natgw-monitor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("natgw.toml");
    std::fs::write(
        &config,
        "[[forward]]\nprotocol = \"udp\"\nexternal_port = 9000\ninternal = \"10.0.1.2:9000\"\n",
    )
    .expect("write config");
    let s = Setup::new(&["--config", config.to_str().expect("UTF-8 path")]);
    let _ = std::fs::remove_dir_all(&dir);
    let monitor = Monitor::start(&s);

    // Traffic mappings: their creation comes from the data path's ring buffer.
    let a = SocketAddrV4::new(LAN_A_ADDR, 5000);
    let b = SocketAddrV4::new(LAN_B_ADDR, 5001);
    let ma = udp_mapping(&s, 0, a);
    let mb = udp_mapping(&s, 1, b);
    for (internal, m) in [(a, &ma), (b, &mb)] {
        let e = monitor.wait("create event of the UDP mapping", |e| {
            is(e, "create", "udp", internal)
        });
        assert_eq!(e["external"], m["external"], "{e} vs {m}");
        assert_eq!(e["origin"], "traffic", "{e}");
    }
    let ext = ma["external"].as_str().expect("external");
    assert!(ext.starts_with(&format!("{GW_WAN_ADDR}:")), "{ma}");

    // A UPnP mapping: created and deleted by the controller.
    let tcp = SocketAddrV4::new(LAN_A_ADDR, 8080);
    let out = upnpc(
        &s,
        &["-a", &LAN_A_ADDR.to_string(), "8080", "18080", "TCP", "600"],
    );
    let e = monitor.wait("create event of the UPnP mapping", |e| {
        is(e, "create", "tcp", tcp)
    });
    assert_eq!(e["origin"], "upnp", "{e}\nupnpc: {out}");
    assert_eq!(e["external"], format!("{GW_WAN_ADDR}:18080"), "{e}");

    // Filters: by protocol, by internal endpoint (address, address and port).
    let udp_a = format!("udp {a}");
    let udp_b = format!("udp {b}");
    let tcp_a = format!("tcp {tcp}");
    let static_fwd = format!("udp {LAN_A_ADDR}:9000");
    assert_eq!(listed(&s, &["--proto", "tcp"]), vec![tcp_a.clone()]);
    let by_host = listed(&s, &["--internal", &LAN_A_ADDR.to_string()]);
    assert!(
        by_host.contains(&udp_a) && by_host.contains(&tcp_a) && !by_host.contains(&udp_b),
        "{by_host:?}"
    );
    assert_eq!(
        listed(&s, &["--internal", &b.to_string()]),
        vec![udp_b.clone()]
    );
    assert_eq!(
        listed(&s, &["--origin", "static"]),
        vec![static_fwd.clone()]
    );
    assert_eq!(
        listed(&s, &["--proto", "udp", "--external", "9000"]),
        vec![static_fwd.clone()]
    );

    let out = upnpc(&s, &["-d", "18080", "TCP"]);
    let e = monitor.wait("delete event of the UPnP mapping", |e| {
        is(e, "delete", "tcp", tcp)
    });
    assert_eq!(e["origin"], "upnp", "{e}\nupnpc: {out}");

    // Flush the UDP mappings: both traffic ones go, the static forward stays.
    let (status, out, err) = s.natgw.cli(&["flush", "--proto", "udp"]);
    assert!(status.success(), "natgw flush: {err}\n{}", s.natgw.log());
    assert!(out.starts_with("2 mappings deleted"), "natgw flush: {out}");
    for (internal, m) in [(a, &ma), (b, &mb)] {
        let e = monitor.wait("delete event of a flushed mapping", |e| {
            is(e, "delete", "udp", internal)
        });
        assert_eq!(e["external"], m["external"], "{e}");
        assert_eq!(e["origin"], "traffic", "{e}");
    }
    assert_eq!(listed(&s, &[]), vec![static_fwd.clone()]);

    // With --include-static, the forward goes too.
    let (status, out, err) = s.natgw.cli(&["flush", "--include-static", "--json"]);
    assert!(status.success(), "natgw flush: {err}");
    assert_eq!(out.trim(), r#"{"deleted":1}"#);
    monitor.wait("delete event of the static forward", |e| {
        is(e, "delete", "udp", SocketAddrV4::new(LAN_A_ADDR, 9000)) && e["origin"] == "static"
    });
    assert!(listed(&s, &[]).is_empty());
}

#[test]
fn monitor_shows_idle_mappings_expire() {
    // RFC 4787 REQ-5 asks for 2 minutes at least; natgw allows less with a warning.
    let s = Setup::new(&["--udp-timeout", "2"]);
    let monitor = Monitor::start(&s);
    let a = SocketAddrV4::new(LAN_A_ADDR, 5002);
    let m = udp_mapping(&s, 0, a);
    monitor.wait("create event", |e| is(e, "create", "udp", a));
    // Idle 2 s, then judged expired on two garbage-collection ticks.
    let e = wait_for(Duration::from_secs(10), || {
        monitor
            .events
            .lock()
            .expect("events")
            .iter()
            .find(|e| is(e, "expire", "udp", a))
            .cloned()
    })
    .unwrap_or_else(|| panic!("no expire event:\n{}", s.natgw.log()));
    assert_eq!(e["external"], m["external"], "{e}");
    assert!(
        s.natgw.mapping_of("udp", a).is_none(),
        "the mapping is gone"
    );
}
