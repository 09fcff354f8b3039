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

const IFACES: [&str; 4] = ["--wan", "wan0", "--lan", "lan0"];

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
    wait_for(WAIT, || {
        inner.log().contains("pcp.upstream.present").then_some(())
    })
    .unwrap_or_else(|| panic!("no upstream found:\n{}", inner.log()));

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
    let far = udp(&chain.far, CHAIN_FAR_ADDR, 7000);
    far.send_to(b"hello through two NATs", external)
        .expect("send");
    let (got, from) = recv(&app).expect("the datagram through both NATs");
    assert_eq!(got, b"hello through two NATs");
    assert_eq!(*from.ip(), CHAIN_FAR_ADDR);

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
    wait_for(WAIT, || {
        inner.log().contains("pcp.upstream.present").then_some(())
    })
    .unwrap_or_else(|| panic!("no upstream found:\n{}", inner.log()));
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
