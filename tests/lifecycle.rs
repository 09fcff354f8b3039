//! The daemon's life: mappings expire after their configured idle timeout, SIGTERM
//! stops the controller and leaves the data path translating, `natgw stop --flush`
//! removes it, and bad input is refused with a clear one-line error and a non-zero
//! exit, never a panic.

use std::{net::SocketAddrV4, time::Duration};

use natgw_integration_tests::{
    command_output, recv, recv_nothing, require_root, run_natgw, udp, wait_for, LeakWatch, Natgw,
    Setup,
};
use testbed::{Testbed, GW_WAN_ADDR, LAN_A_ADDR, WAN_A_ADDR};

#[test]
fn idle_udp_mapping_expires_after_configured_timeout() {
    // rfc4787 REQ-5b: the timeout is configurable (2 s here to keep the test short).
    let s = Setup::new(&["--udp-timeout", "2", "--gc-interval", "1"]);
    let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 47000);
    let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 7000);
    lan.send_to(b"open", SocketAddrV4::new(WAN_A_ADDR, 7000))
        .expect("send");
    let (_, seen) = recv(&wan).expect("WAN host got it");
    let internal = SocketAddrV4::new(LAN_A_ADDR, 47000);
    assert!(s.natgw.mapping_of("udp", internal).is_some());
    // While idle time stays below the timeout the mapping stays and works.
    wan.send_to(b"in", seen).expect("send inbound");
    assert!(recv(&lan).is_some(), "mapping open before the timeout");
    let gone = wait_for(Duration::from_secs(10), || {
        s.natgw.mapping_of("udp", internal).is_none().then_some(())
    });
    assert!(gone.is_some(), "mapping expired:\n{}", s.natgw.log());
    wan.send_to(b"late", seen).expect("send inbound");
    assert!(
        recv_nothing(&lan, Duration::from_millis(500)).is_none(),
        "expired mapping no longer lets traffic in"
    );
}

#[test]
fn sigterm_leaves_the_data_path_and_stop_flush_removes_it() {
    require_root();
    let tb = Testbed::new().expect("testbed");
    let mut natgw = Natgw::start(&tb.gateway.ns, &[]);
    let ns = &tb.gateway.ns;
    let watch = LeakWatch::start(&tb.inet);
    let links = command_output(ns, "ip", &["-d", "link", "show"]);
    assert_eq!(
        links.matches("prog/xdp").count(),
        3,
        "XDP on lan0, lan1, wan0 while running:\n{links}"
    );
    // The TC programs work while natgw runs: without GRO on the far ends, traffic
    // takes the kernel path and tc_wan_egress/tc_wan_ingress translate it.
    let lan = udp(&tb.lan[0].ns, LAN_A_ADDR, 48000);
    let wan = udp(&tb.wan[0].ns, WAN_A_ADDR, 7000);
    lan.send_to(b"nat", SocketAddrV4::new(WAN_A_ADDR, 7000))
        .expect("send");
    let (_, seen) = recv(&wan).expect("translated");
    assert_eq!(*seen.ip(), GW_WAN_ADDR);
    assert!(natgw.counter("tc_out_translated") >= 1);
    let qdiscs_running = command_output(ns, "tc", &["qdisc", "show", "dev", "wan0"]);
    let status = natgw.stop();
    assert!(
        status.success(),
        "natgw exits 0 on SIGTERM: {status}\n{}",
        natgw.log()
    );
    // The data path stays: programs attached, pins in place, still translating,
    // new flows included.
    let links = command_output(ns, "ip", &["-d", "link", "show"]);
    assert_eq!(
        links.matches("prog/xdp").count(),
        3,
        "still attached:\n{links}"
    );
    assert!(natgw.inner().pin_dir().join("NAT_FWD").exists());
    let (st, _, err) = run_natgw(ns, &["status"]);
    assert!(!st.success());
    assert!(err.contains("keeps translating"), "status says so: {err}");
    let other = udp(&tb.lan[0].ns, LAN_A_ADDR, 48001);
    other
        .send_to(b"new", SocketAddrV4::new(WAN_A_ADDR, 7000))
        .expect("send");
    let (_, seen) = recv(&wan).expect("a new flow is translated without the controller");
    assert_eq!(*seen.ip(), GW_WAN_ADDR);

    // `natgw stop --flush` removes it all, forwarding first.
    let (st, out, err) = run_natgw(ns, &["stop", "--flush"]);
    assert!(st.success(), "{out}{err}");
    let links = command_output(ns, "ip", &["-d", "link", "show"]);
    assert!(!links.contains("prog/xdp"), "XDP detached:\n{links}");
    if qdiscs_running.contains("clsact") {
        let qdiscs = command_output(ns, "tc", &["qdisc", "show", "dev", "wan0"]);
        assert!(
            !qdiscs.contains("clsact"),
            "the clsact qdisc natgw added is removed:\n{qdiscs}"
        );
    }
    assert!(!natgw.inner().pin_dir().exists(), "pins removed");
    assert!(
        !natgw.inner().state_dir().join("state.json").exists(),
        "state removed"
    );
    let (st, _, err) = run_natgw(ns, &["mappings"]);
    assert!(!st.success());
    assert!(err.to_lowercase().contains("not running"), "{err}");
    assert_eq!(
        ns.sysctl("net/ipv4/conf/lo/accept_local").expect("sysctl"),
        "0",
        "lo.accept_local restored"
    );
    // Without natgw the LAN's traffic is not forwarded at all: it does not leave
    // untranslated.
    lan.send_to(b"raw", SocketAddrV4::new(WAN_A_ADDR, 7000))
        .expect("send");
    assert!(
        recv_nothing(&wan, Duration::from_millis(500)).is_none(),
        "nothing forwarded after the flush"
    );
    watch.assert_none("stop and flush");
}

/// Runs `natgw ARGS` in a fresh testbed's gateway and returns (exit code, stderr).
fn refused(tb: &Testbed, args: &[&str]) -> (i32, String) {
    let (status, _, err) = run_natgw(&tb.gateway.ns, args);
    assert!(!status.success(), "natgw {args:?} must fail");
    assert!(!err.contains("panicked"), "no panic: {err}");
    (status.code().unwrap_or(-1), err)
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    require_root();
    let tb = Testbed::new().expect("testbed");
    let (_, err) = refused(&tb, &["run", "--wan", "nosuch0", "--lan", "lan0"]);
    assert!(
        err.contains("nosuch0"),
        "names the missing interface: {err}"
    );
    let (_, err) = refused(&tb, &["run", "--wan", "wan0", "--lan", "wan0"]);
    assert!(err.contains("wan0"), "{err}");
    let (_, err) = refused(
        &tb,
        &[
            "run",
            "--wan",
            "wan0",
            "--lan",
            "lan0",
            "--port-range",
            "5000-4000",
        ],
    );
    assert!(err.to_lowercase().contains("port"), "{err}");
    let (_, err) = refused(&tb, &["run", "--lan", "lan0"]);
    assert!(err.contains("--wan") || err.contains("wan"), "{err}");
    // Unknown key in the config file.
    let cfg = std::env::temp_dir().join(format!("natgw-bad-{}.toml", tb.gateway.ns.name()));
    std::fs::write(&cfg, "wan = \"wan0\"\nlan = [\"lan0\"]\nudp_timeuot = 5\n")
        .expect("write config");
    let (_, err) = refused(&tb, &["run", "--config", cfg.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_file(&cfg);
    assert!(err.contains("udp_timeuot"), "names the unknown key: {err}");
    // rfc4787 REQ-7: internal and external prefixes must not overlap.
    let _ = command_output(
        &tb.gateway.ns,
        "ip",
        &["addr", "add", "192.0.2.129/25", "dev", "lan1"],
    );
    let (_, err) = refused(
        &tb,
        &["run", "--wan", "wan0", "--lan", "lan0", "--lan", "lan1"],
    );
    assert!(
        err.contains("192.0.2"),
        "names the overlapping prefixes: {err}"
    );
    // Without privileges.
    let out = tb
        .gateway
        .ns
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(natgw_integration_tests::natgw_bin())
        .args(["run", "--wan", "wan0", "--lan", "lan0"])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("root") || err.contains("CAP_"),
        "says what privilege is missing: {err}"
    );
}

#[test]
fn a_second_instance_in_the_same_namespace_is_refused() {
    let s = Setup::new(&[]);
    let (_, err) = refused(&s.tb, &["run", "--wan", "wan0", "--lan", "lan0"]);
    assert!(err.contains("already running"), "{err}");
    // The first keeps working.
    assert!(s.natgw.status()["counters"].is_object() || s.natgw.status()["counters"].is_array());
}
