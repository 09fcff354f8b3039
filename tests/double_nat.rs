//! PCP upstream (double NAT, RFC 7648): two natgw in series ([`testbed::Chain`]).
//! The inner natgw's WAN is the outer natgw's LAN; the inner finds the outer's PCP
//! server as its WAN default gateway and proxies every LAN mapping to it, so a LAN
//! host's MAP answer carries the outer's external address and port, and a host on
//! the outer's WAN reaches the LAN host through both NATs.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use natgw_integration_tests::pcp_bytes::{
    map_response_external, natpmp_map_request, pcp_map_request, IPPROTO_UDP, PCP_PORT,
};
use natgw_integration_tests::{recv, require_root, udp, wait_for, Natgw, WAIT};
use testbed::chain::{
    CHAIN_FAR_ADDR, CHAIN_HOST_ADDR, CHAIN_INNER_LAN_ADDR, CHAIN_INNER_WAN_ADDR,
    CHAIN_OUTER_WAN_ADDR,
};
use testbed::Chain;
use testbed::Netns;

const IFACES: [&str; 4] = ["--wan", "wan0", "--lan", "lan0"];

/// The inner natgw's UPnP description (no SSDP discovery needed).
fn description_url() -> String {
    format!("http://{CHAIN_INNER_LAN_ADDR}:5000/rootDesc.xml")
}

/// Runs a client nobody here wrote in the LAN host's namespace; stdout and stderr.
fn client(ns: &Netns, program: &str, args: &[&str]) -> String {
    let out =
        ns.command(program).args(args).output().unwrap_or_else(|e| {
            panic!("{program} not found ({e}): `cargo xtask test` installs it")
        });
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until the inner natgw has found the outer's PCP server.
fn wait_present(inner: &Natgw) {
    wait_for(WAIT, || {
        inner.log().contains("pcp.upstream.present").then_some(())
    })
    .unwrap_or_else(|| panic!("no upstream found:\n{}", inner.log()));
}

/// A datagram from the far host to `external` arrives at `app`.
fn far_reaches(chain: &Chain, app: &std::net::UdpSocket, external: SocketAddrV4) {
    let far = udp(&chain.far, CHAIN_FAR_ADDR, 0);
    far.send_to(b"hello through two NATs", external)
        .expect("send");
    let (got, from) =
        recv(app).unwrap_or_else(|| panic!("nothing arrived through both NATs at {external}"));
    assert_eq!(got, b"hello through two NATs");
    assert_eq!(*from.ip(), CHAIN_FAR_ADDR);
}

fn start(chain: &Chain, outer_extra: &[&str]) -> (Natgw, Natgw) {
    let outer =
        Natgw::try_start_on(&chain.outer, &IFACES, outer_extra).unwrap_or_else(|e| panic!("{e}"));
    let inner = Natgw::try_start_on(&chain.inner, &IFACES, &[]).unwrap_or_else(|e| panic!("{e}"));
    (outer, inner)
}

/// Sends a PCP MAP for UDP `port` from the LAN host; the response's external
/// endpoint and how long it took.
fn map(chain: &Chain, port: u16, lifetime: u32) -> (SocketAddrV4, Duration) {
    let client = udp(&chain.host, CHAIN_HOST_ADDR, 0);
    let request = pcp_map_request(CHAIN_HOST_ADDR, IPPROTO_UDP, port, lifetime);
    let began = Instant::now();
    client
        .send_to(&request, (CHAIN_INNER_LAN_ADDR, PCP_PORT))
        .expect("send");
    let (answer, _) = recv(&client).expect("a MAP answer");
    let took = began.elapsed();
    (
        map_response_external(&answer).expect("a MAP response"),
        took,
    )
}

#[test]
fn map_through_two_natgw_gets_the_outer_endpoint_and_is_reachable_from_outside() {
    require_root();
    let chain = Chain::new().expect("building the chain");
    let (outer, inner) = start(&chain, &[]);
    // The inner natgw finds the outer's PCP server.
    wait_present(&inner);

    let app = udp(&chain.host, CHAIN_HOST_ADDR, 5000);
    let (external, took) = map(&chain, 5000, 600);
    assert_eq!(
        *external.ip(),
        CHAIN_OUTER_WAN_ADDR,
        "the host learns the outer external address ({took:?}):\n{}\nouter:\n{}",
        inner.log(),
        outer.log()
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    let local = inner
        .mapping_of("udp", SocketAddrV4::new(CHAIN_HOST_ADDR, 5000))
        .expect("the inner mapping");
    let inner_ext: SocketAddrV4 = local["external"].as_str().unwrap().parse().unwrap();
    assert_eq!(*inner_ext.ip(), CHAIN_INNER_WAN_ADDR);
    let upstream = outer
        .mapping_of("udp", inner_ext)
        .expect("the outer has a mapping for the inner's external endpoint");
    assert_eq!(upstream["origin"], "pcp");
    assert_eq!(upstream["external"], external.to_string());

    // The far host reaches the LAN host through both NATs.
    far_reaches(&chain, &app, external);

    // A NAT-PMP mapping is proxied too: the answer carries the outer port.
    let natpmp = udp(&chain.host, CHAIN_HOST_ADDR, 0);
    natpmp
        .send_to(
            &natpmp_map_request(IPPROTO_UDP, 5001, 600),
            (CHAIN_INNER_LAN_ADDR, PCP_PORT),
        )
        .expect("send");
    let (answer, _) = recv(&natpmp).expect("a NAT-PMP answer");
    let natpmp_port = u16::from_be_bytes([answer[10], answer[11]]);
    let inner_natpmp: SocketAddrV4 = inner
        .mapping_of("udp", SocketAddrV4::new(CHAIN_HOST_ADDR, 5001))
        .expect("the inner NAT-PMP mapping")["external"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let outer_natpmp = outer
        .mapping_of("udp", inner_natpmp)
        .expect("proxied upstream");
    assert_eq!(
        outer_natpmp["external"],
        SocketAddrV4::new(CHAIN_OUTER_WAN_ADDR, natpmp_port).to_string()
    );

    // Deleting it removes both.
    let (_, _) = {
        let client = udp(&chain.host, CHAIN_HOST_ADDR, 0);
        client
            .send_to(
                &pcp_map_request(CHAIN_HOST_ADDR, IPPROTO_UDP, 5000, 0),
                (CHAIN_INNER_LAN_ADDR, PCP_PORT),
            )
            .expect("send");
        recv(&client).expect("the deletion's answer")
    };
    assert!(inner
        .mapping_of("udp", SocketAddrV4::new(CHAIN_HOST_ADDR, 5000))
        .is_none());
    wait_for(WAIT, || {
        outer.mapping_of("udp", inner_ext).is_none().then_some(())
    })
    .unwrap_or_else(|| panic!("the upstream mapping stayed:\n{}", inner.log()));
}

#[test]
fn without_pcp_on_the_outer_mappings_stay_local_without_delay() {
    require_root();
    let chain = Chain::new().expect("building the chain");
    let (_outer, inner) = start(&chain, &["--no-pcp"]);
    // While the upstream is being discovered, and once it is known absent (ICMP
    // port unreachable, or two unanswered ANNOUNCEs: at most ~9 s), a MAP gets the
    // local answer at once.
    for (port, phase) in [(5000, "discovering"), (5001, "absent")] {
        if phase == "absent" {
            wait_for(Duration::from_secs(15), || {
                inner.log().contains("pcp.upstream.absent").then_some(())
            })
            .unwrap_or_else(|| panic!("the upstream was not found absent:\n{}", inner.log()));
        }
        let (external, took) = map(&chain, port, 600);
        assert_eq!(
            *external.ip(),
            CHAIN_INNER_WAN_ADDR,
            "{phase}: the local answer, as today"
        );
        assert!(
            took < Duration::from_millis(500),
            "{phase}: no waiting for an absent upstream: {took:?}"
        );
    }
}

#[test]
fn a_restarted_inner_natgw_renews_its_upstream_mappings() {
    require_root();
    let chain = Chain::new().expect("building the chain");
    let (outer, mut inner) = start(&chain, &[]);
    wait_present(&inner);
    let (external, _) = map(&chain, 5000, 3600);
    assert_eq!(*external.ip(), CHAIN_OUTER_WAN_ADDR, "{}", inner.log());

    // The restarted natgw adopts the mapping and asks upstream with the same nonce
    // (its seed was kept): the outer renews the same mapping instead of refusing.
    inner.stop();
    let inner = Natgw::try_start_on(&chain.inner, &IFACES, &[]).unwrap_or_else(|e| panic!("{e}"));
    let expected = format!("external={external}");
    wait_for(Duration::from_secs(10), || {
        inner
            .log()
            .lines()
            .any(|l| l.contains("pcp.upstream.mapped") && l.contains(&expected))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the upstream mapping was not renewed:\n{}\nouter:\n{}",
            inner.log(),
            outer.log()
        )
    });
    assert!(
        !inner.log().contains("pcp.upstream.refused"),
        "{}",
        inner.log()
    );
    // A renewal by the host gets the outer endpoint again at once.
    let (again, took) = map(&chain, 5000, 3600);
    assert_eq!(again, external);
    assert!(took < Duration::from_millis(500), "{took:?}");
}

#[test]
fn upnpc_and_natpmpc_behind_two_natgw_get_the_outer_endpoint() {
    require_root();
    let chain = Chain::new().expect("building the chain");
    // The outer's port 6001 is taken by a static forward to another port of the
    // inner's WAN address, so the upstream cannot grant 6001 for a UPnP mapping.
    let dir = std::env::temp_dir().join(format!("natgw-double-nat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("outer.toml");
    std::fs::write(
        &config,
        format!(
            "[[forward]]\nprotocol = \"udp\"\nexternal_port = 6001\n\
             internal = \"{CHAIN_INNER_WAN_ADDR}:7777\"\n"
        ),
    )
    .expect("write config");
    let (outer, inner) = start(&chain, &["--config", config.to_str().expect("UTF-8")]);
    let _ = std::fs::remove_dir_all(&dir);
    wait_present(&inner);
    let url = description_url();
    let host = CHAIN_HOST_ADDR.to_string();

    // upnpc -a: the answer waits for the upstream's, and what upnpc then reads back
    // (GetExternalIPAddress) is the outer address.
    let app = udp(&chain.host, CHAIN_HOST_ADDR, 6000);
    let out = client(
        &chain.host,
        "upnpc",
        &[
            "-u", &url, "-e", "game", "-a", &host, "6000", "6000", "UDP", "600",
        ],
    );
    let expected =
        format!("external {CHAIN_OUTER_WAN_ADDR}:6000 UDP is redirected to internal {host}:6000");
    assert!(
        out.contains(&expected),
        "upnpc -a: {out}\ninner:\n{}\nouter:\n{}",
        inner.log(),
        outer.log()
    );
    let inner_ext = SocketAddrV4::new(CHAIN_INNER_WAN_ADDR, 6000);
    let upstream = outer
        .mapping_of("udp", inner_ext)
        .expect("proxied upstream");
    assert_eq!(upstream["external"], format!("{CHAIN_OUTER_WAN_ADDR}:6000"));
    far_reaches(&chain, &app, SocketAddrV4::new(CHAIN_OUTER_WAN_ADDR, 6000));
    let status = client(&chain.host, "upnpc", &["-u", &url, "-s"]);
    assert!(
        status.contains(&format!("ExternalIPAddress = {CHAIN_OUTER_WAN_ADDR}")),
        "upnpc -s: {status}"
    );

    // A port the outer cannot grant: the client is refused, not told of a port
    // nobody outside can reach, and nothing stays behind on either gateway.
    let out = client(
        &chain.host,
        "upnpc",
        &["-u", &url, "-a", &host, "6001", "6001", "UDP", "600"],
    );
    assert!(
        out.contains("failed with code 718"),
        "upnpc -a for a port taken upstream: {out}\ninner:\n{}",
        inner.log()
    );
    assert!(inner
        .mapping_of("udp", SocketAddrV4::new(CHAIN_HOST_ADDR, 6001))
        .is_none());
    wait_for(WAIT, || {
        outer
            .mapping_of("udp", SocketAddrV4::new(CHAIN_INNER_WAN_ADDR, 6001))
            .is_none()
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the upstream mapping stayed:\n{}", inner.log()));

    // natpmpc: the external address and the mapped port are the outer's.
    let gw = CHAIN_INNER_LAN_ADDR.to_string();
    let app = udp(&chain.host, CHAIN_HOST_ADDR, 6002);
    let out = client(
        &chain.host,
        "natpmpc",
        &["-g", &gw, "-a", "6002", "6002", "udp", "600"],
    );
    assert!(
        out.contains(&format!("Public IP address : {CHAIN_OUTER_WAN_ADDR}")),
        "natpmpc: {out}\ninner:\n{}",
        inner.log()
    );
    assert!(
        out.contains("Mapped public port 6002 protocol UDP to local port 6002"),
        "natpmpc: {out}"
    );
    far_reaches(&chain, &app, SocketAddrV4::new(CHAIN_OUTER_WAN_ADDR, 6002));
}

#[test]
fn a_new_inner_wan_address_moves_the_upstream_mappings() {
    require_root();
    let chain = Chain::new().expect("building the chain");
    let (outer, inner) = start(&chain, &[]);
    wait_present(&inner);
    let app = udp(&chain.host, CHAIN_HOST_ADDR, 5000);
    let (external, _) = map(&chain, 5000, 600);
    assert_eq!(*external.ip(), CHAIN_OUTER_WAN_ADDR, "{}", inner.log());

    // The inner's WAN address changes (a new DHCP lease from the outer, say).
    let moved = std::net::Ipv4Addr::new(100, 64, 0, 5);
    let ip = |args: &[&str]| {
        let out = chain.inner.command("ip").args(args).output().expect("ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&[
        "addr",
        "del",
        &format!("{CHAIN_INNER_WAN_ADDR}/24"),
        "dev",
        "wan0",
    ]);
    ip(&["addr", "add", &format!("{moved}/24"), "dev", "wan0"]);
    ip(&[
        "route",
        "replace",
        "default",
        "via",
        "100.64.0.1",
        "dev",
        "wan0",
    ]);

    // The local mapping moves to the new address, and its upstream mapping is asked
    // for again from it.
    let local = SocketAddrV4::new(CHAIN_HOST_ADDR, 5000);
    let inner_ext: SocketAddrV4 = wait_for(Duration::from_secs(10), || {
        let m = inner.mapping_of("udp", local)?;
        let e: SocketAddrV4 = m["external"].as_str()?.parse().ok()?;
        (*e.ip() == moved).then_some(e)
    })
    .unwrap_or_else(|| panic!("the mapping did not move:\n{}", inner.log()));
    let upstream = wait_for(Duration::from_secs(10), || {
        outer.mapping_of("udp", inner_ext)
    })
    .unwrap_or_else(|| {
        panic!(
            "no upstream mapping from the new address:\n{}\nouter:\n{}",
            inner.log(),
            outer.log()
        )
    });
    assert!(
        inner.log().contains("pcp.upstream.moved"),
        "{}",
        inner.log()
    );
    let outer_ext: SocketAddrV4 = upstream["external"].as_str().unwrap().parse().unwrap();
    far_reaches(&chain, &app, outer_ext);
    // The host's renewal is answered with that outer endpoint.
    let (again, _) = map(&chain, 5000, 600);
    assert_eq!(again, outer_ext);
}
