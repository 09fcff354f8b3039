//! Builds real testbeds (needs root) and checks what the rest of natgw relies on:
//! reachability inside the testbed, forwarding without translation, the inet router's
//! missing route to internal addresses, unique names, and complete cleanup.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use testbed::{
    Netns, Testbed, GW_LAN_A_ADDR, GW_LAN_B_ADDR, GW_LAN_IFS, GW_WAN_ADDR, GW_WAN_IF, HOST_IF,
    INET_GW_IF, INET_WAN_A_IF, INET_WAN_B_IF, LAN_A_ADDR, LAN_B_ADDR, WAN_A_ADDR, WAN_B_ADDR,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long to wait for a datagram that must arrive.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait before concluding that a datagram will not arrive.
const SILENCE_TIMEOUT: Duration = Duration::from_millis(300);

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create network namespaces and need root: run `sudo -E cargo test -p testbed`"
    );
}

/// A namespace name that no testbed of this process uses (testbed counters start at 1)
/// and that `cleanup_stale` recognises once this process is gone.
fn scratch_name(role: &str) -> String {
    format!("ngw{}x0-{role}", std::process::id())
}

/// A UDP socket in `ns` bound to `addr` on an ephemeral port, with both timeouts set.
fn udp_socket(ns: &Netns, addr: Ipv4Addr, timeout: Duration) -> io::Result<UdpSocket> {
    let socket = ns.bind_udp((addr, 0)).map_err(io::Error::other)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    Ok(socket)
}

/// Sends a datagram from `client` to `server` and back, checking both source addresses.
fn assert_udp_echo(
    client: &Netns,
    client_addr: Ipv4Addr,
    server: &Netns,
    server_addr: Ipv4Addr,
) -> TestResult {
    let server_socket = udp_socket(server, server_addr, ARRIVAL_TIMEOUT)?;
    let client_socket = udp_socket(client, client_addr, ARRIVAL_TIMEOUT)?;
    let server_at = server_socket.local_addr()?;
    let client_at = client_socket.local_addr()?;

    client_socket.send_to(b"ping", server_at)?;
    let mut buf = [0u8; 64];
    let (len, from) = server_socket.recv_from(&mut buf)?;
    assert_eq!(
        (&buf[..len], from),
        (&b"ping"[..], client_at),
        "{} -> {}",
        client.name(),
        server.name()
    );

    server_socket.send_to(b"pong", from)?;
    let (len, from) = client_socket.recv_from(&mut buf)?;
    assert_eq!(
        (&buf[..len], from),
        (&b"pong"[..], server_at),
        "{} -> {}",
        server.name(),
        client.name()
    );
    Ok(())
}

fn assert_interfaces_exist(ns: &Netns, ifnames: &[&str]) {
    for &ifname in ifnames {
        let index = ns.run(|| nix::net::if_::if_nametoindex(ifname));
        assert!(index.is_ok(), "{ifname} missing in {}", ns.name());
    }
}

#[test]
fn testbed_comes_up_with_the_documented_interfaces_and_forwarding() -> TestResult {
    require_root();
    let tb = Testbed::new()?;

    assert_interfaces_exist(
        &tb.gateway.ns,
        &["lo", GW_LAN_IFS[0], GW_LAN_IFS[1], GW_WAN_IF],
    );
    assert_interfaces_exist(&tb.inet, &["lo", INET_GW_IF, INET_WAN_A_IF, INET_WAN_B_IF]);
    for host in tb.lan.iter().chain(&tb.wan) {
        assert_interfaces_exist(&host.ns, &["lo", HOST_IF]);
    }

    assert_eq!(tb.gateway.ns.sysctl("net/ipv4/ip_forward")?, "1");
    assert_eq!(tb.inet.sysctl("net.ipv4.ip_forward")?, "1");
    assert_eq!(tb.lan[0].ns.sysctl("net/ipv4/ip_forward")?, "0");
    Ok(())
}

#[test]
fn hosts_reach_their_gateway_addresses() -> TestResult {
    require_root();
    let tb = Testbed::new()?;
    let gw = &tb.gateway.ns;

    assert_udp_echo(&tb.lan[0].ns, LAN_A_ADDR, gw, GW_LAN_A_ADDR)?;
    assert_udp_echo(&tb.lan[1].ns, LAN_B_ADDR, gw, GW_LAN_B_ADDR)?;
    // Across the inet router to the gateway's external address.
    assert_udp_echo(&tb.wan[0].ns, WAN_A_ADDR, gw, GW_WAN_ADDR)?;
    assert_udp_echo(&tb.wan[1].ns, WAN_B_ADDR, gw, GW_WAN_ADDR)?;
    Ok(())
}

#[test]
fn without_nat_internal_sources_are_forwarded_but_never_answered() -> TestResult {
    require_root();
    let tb = Testbed::new()?;

    let wan_a = udp_socket(&tb.wan[0].ns, WAN_A_ADDR, ARRIVAL_TIMEOUT)?;
    let lan_a = udp_socket(&tb.lan[0].ns, LAN_A_ADDR, SILENCE_TIMEOUT)?;
    lan_a.send_to(b"hello", wan_a.local_addr()?)?;

    // The gateway forwards it untranslated: wan-a sees the internal source.
    let mut buf = [0u8; 64];
    let (len, from) = wan_a.recv_from(&mut buf)?;
    assert_eq!(&buf[..len], b"hello");
    assert_eq!(from, lan_a.local_addr()?);

    // The reply dies at the inet router, which has no route to 10.0.0.0/8 ...
    wan_a.send_to(b"reply", from)?;
    let silence = lan_a.recv_from(&mut buf);
    assert!(
        matches!(&silence, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)),
        "a reply to an untranslated source came back: {silence:?}"
    );

    // ... as its routing table says.
    let route_lookup = tb.inet.run(|| {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.connect(SocketAddr::from((LAN_A_ADDR, 9)))
    });
    assert_eq!(
        route_lookup.map_err(|e| e.raw_os_error()),
        Err(Some(libc::ENETUNREACH)),
        "inet must not have a route to {LAN_A_ADDR}"
    );
    Ok(())
}

#[test]
fn two_testbeds_coexist_with_distinct_names() -> TestResult {
    require_root();
    let first = Testbed::new()?;
    let second = Testbed::new()?;
    assert_ne!(first.id(), second.id());

    let names = |tb: &Testbed| -> Vec<String> {
        tb.namespaces()
            .iter()
            .map(|ns| ns.name().to_owned())
            .collect()
    };
    let (first_names, second_names) = (names(&first), names(&second));
    assert_eq!(first_names.len(), 6);
    assert!(first_names.iter().all(|name| !second_names.contains(name)));

    // Same addresses, separate networks: both work at once.
    for tb in [&first, &second] {
        assert_udp_echo(&tb.lan[0].ns, LAN_A_ADDR, &tb.gateway.ns, GW_LAN_A_ADDR)?;
    }
    Ok(())
}

#[test]
fn dropping_a_testbed_removes_every_namespace() -> TestResult {
    require_root();
    let tb = Testbed::new()?;
    let paths: Vec<_> = tb
        .namespaces()
        .iter()
        .map(|ns| ns.path().to_owned())
        .collect();
    let names: Vec<_> = tb
        .namespaces()
        .iter()
        .map(|ns| ns.name().to_owned())
        .collect();
    assert!(paths.iter().all(|path| path.exists()));
    assert!(names
        .iter()
        .all(|name| testbed::registered_namespaces().contains(name)));

    drop(tb);

    for path in &paths {
        assert!(!path.exists(), "{} survived the drop", path.display());
    }
    let registered = testbed::registered_namespaces();
    assert!(names.iter().all(|name| !registered.contains(name)));
    Ok(())
}

#[test]
fn a_panicking_test_still_removes_its_namespaces() {
    require_root();
    let mut paths = Vec::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let tb = Testbed::new().map_err(|e| e.chain());
        if let Ok(tb) = &tb {
            paths.extend(tb.namespaces().iter().map(|ns| ns.path().to_owned()));
        }
        panic!(
            "simulated test failure ({:?})",
            tb.map(|tb| tb.id().to_owned())
        );
    }));
    assert!(outcome.is_err());
    assert_eq!(paths.len(), 6, "testbed was not built");
    assert!(paths.iter().all(|path| !path.exists()));
}

#[test]
fn cleanup_stale_removes_only_namespaces_of_dead_creators() -> TestResult {
    require_root();
    let mut child = std::process::Command::new("true").spawn()?;
    let dead_pid = child.id();
    child.wait()?;

    let own_pid = std::process::id();
    let stale = Netns::create(&format!("ngw{dead_pid}x{own_pid}-stale"))?.disown();
    // pid 1 never exits.
    let alive = Netns::create(&format!("ngw1x{own_pid}-alive"))?;
    let own = Netns::create(&scratch_name("own"))?;

    // A concurrent run's cleanup may remove the stale one first, so neither its
    // existence here nor the count returned is asserted.
    Testbed::cleanup_stale()?;

    assert!(!stale.path().exists(), "stale namespace survived");
    assert!(
        alive.path().exists(),
        "namespace of a live creator was removed"
    );
    assert!(own.path().exists(), "this process's namespace was removed");
    Ok(())
}

#[test]
fn run_resumes_a_panic_of_the_closure_on_the_caller() -> TestResult {
    require_root();
    let ns = Netns::create(&scratch_name("panic"))?;
    let outcome = catch_unwind(AssertUnwindSafe(|| ns.run(|| panic!("boom in namespace"))));
    let payload = outcome.err().ok_or("run swallowed the panic")?;
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in namespace"));
    Ok(())
}

#[test]
fn sysctls_round_trip_and_bad_keys_are_rejected() -> TestResult {
    require_root();
    let ns = Netns::create(&scratch_name("sysctl"))?;
    assert_eq!(ns.sysctl("net/ipv4/ip_forward")?, "0");
    ns.set_sysctl("net.ipv4.ip_forward", "1")?;
    assert_eq!(ns.sysctl("net/ipv4/ip_forward")?, "1");
    assert!(matches!(
        ns.set_sysctl("../../etc/passwd", "x"),
        Err(testbed::Error::InvalidSysctlKey { .. })
    ));
    Ok(())
}

#[test]
fn command_runs_the_program_inside_the_namespace() -> TestResult {
    require_root();
    let ns = Netns::create(&scratch_name("cmd"))?;
    let output = ns.command("readlink").arg("/proc/self/ns/net").output()?;
    assert!(output.status.success());
    let ino = std::fs::metadata(ns.path())?.ino();
    assert_eq!(
        String::from_utf8(output.stdout)?.trim(),
        format!("net:[{ino}]")
    );
    Ok(())
}

#[test]
fn command_for_a_removed_namespace_fails_to_spawn() -> TestResult {
    require_root();
    let ns = Netns::create(&scratch_name("gone"))?;
    let open = Netns::open(ns.name())?;
    ns.delete()?;
    assert!(open.command("true").status().is_err());
    assert!(open.try_run(|| ()).is_err());
    Ok(())
}

#[tokio::test]
async fn testbed_builds_inside_a_tokio_runtime() -> TestResult {
    require_root();
    let tb = Testbed::new()?;
    let output = tb
        .gateway
        .ns
        .tokio_command("cat")
        .arg("/proc/sys/net/ipv4/ip_forward")
        .output()
        .await?;
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout)?.trim(), "1");
    Ok(())
}
