//! Deterministic port blocks (RFC 7422, issue #16 item 2), asserted on the wire: the
//! external address and port a WAN server sees for each internal host are the ones
//! the configuration's function gives, stay the same for new flows (EIM), lead back
//! inside, and hosts without a block here are dropped and counted, never leaked.
//!
//! The single-gateway tests use the standard testbed (LAN A 10.0.1.2, LAN B
//! 10.0.2.2) with the pool 192.0.2.1, 192.0.2.2 and the internal space 10.0.0.0/22:
//! with blocks of 126 ports over 1024-65535, 512 blocks fit one address, so host i
//! of the space has block i % 512 of address i / 512. LAN A is host 258 (address
//! 192.0.2.1, ports 33532-33657), LAN B host 514 (192.0.2.2, ports 1276-1401).
//! The three-gateway tests are in `scale_out` below.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use natgw_integration_tests::{command_output, recv, recv_nothing, udp, LeakWatch, Natgw};
use testbed::{Testbed, GW_WAN_ADDR, LAN_A_ADDR, LAN_B_ADDR, WAN_A_ADDR, WAN_B_ADDR};

/// The pool's second address.
const GW_WAN_2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// LAN A's block: host 258 of 10.0.0.0/22, on 192.0.2.1.
const A_BLOCK: (u16, u16) = (1024 + 258 * 126, 1024 + 259 * 126 - 1);
/// LAN B's block: host 514, on 192.0.2.2.
const B_BLOCK: (u16, u16) = (1024 + 2 * 126, 1024 + 3 * 126 - 1);

/// The testbed with both pool addresses on the WAN and natgw in block mode with
/// `extra` block flags.
fn setup(extra: &[&str]) -> (Natgw, Testbed) {
    natgw_integration_tests::require_root();
    let tb = Testbed::new().expect("building the testbed");
    let _ = command_output(
        &tb.gateway.ns,
        "ip",
        &["addr", "add", &format!("{GW_WAN_2}/24"), "dev", "wan0"],
    );
    let (a, b) = (GW_WAN_ADDR.to_string(), GW_WAN_2.to_string());
    let mut args = vec![
        "--external",
        &a,
        "--external",
        &b,
        "--block-size",
        "126",
        "--no-upnp",
    ];
    args.extend_from_slice(extra);
    let natgw = Natgw::start(&tb.gateway.ns, &args);
    (natgw, tb)
}

/// Sends from `lan` to `wan`'s address `to` and returns the source the WAN host saw.
fn seen_at(lan: &std::net::UdpSocket, wan: &std::net::UdpSocket, to: SocketAddrV4) -> SocketAddrV4 {
    lan.send_to(b"out", to).expect("send from the LAN host");
    let (data, seen) = recv(wan).expect("the WAN host received the datagram");
    assert_eq!(data, b"out");
    seen
}

fn in_block(seen: SocketAddrV4, addr: Ipv4Addr, block: (u16, u16)) -> bool {
    *seen.ip() == addr && (block.0..=block.1).contains(&seen.port())
}

#[test]
fn each_host_gets_its_block_keeps_it_for_new_flows_and_is_reachable_through_it() {
    // rfc7422 §2: address and ports a function of the internal address;
    // rfc4787 REQ-1 (EIM) and REQ-4 (parity) inside the block.
    let log = std::env::temp_dir().join(format!("natgw-blocks-{}.log", std::process::id()));
    let target = format!("file:{}", log.display());
    let (natgw, tb) = setup(&[
        "--block-space",
        "10.0.0.0/22",
        "--block-shares",
        "2",
        "--log-allocations",
        &target,
    ]);
    let wan_a = udp(&tb.wan[0].ns, WAN_A_ADDR, 7000);
    let wan_b = udp(&tb.wan[1].ns, WAN_B_ADDR, 7001);
    let to_a = SocketAddrV4::new(WAN_A_ADDR, 7000);
    let to_b = SocketAddrV4::new(WAN_B_ADDR, 7001);

    // An internal port outside the block: a port of the block, same parity.
    let a = udp(&tb.lan[0].ns, LAN_A_ADDR, 40000);
    let first = seen_at(&a, &wan_a, to_a);
    assert!(
        in_block(first, GW_WAN_ADDR, A_BLOCK),
        "LAN A seen as {first}, block {A_BLOCK:?}"
    );
    assert_eq!(first.port() % 2, 0, "parity kept (REQ-4)");
    // A new flow from the same endpoint to another server: the same endpoint.
    assert_eq!(seen_at(&a, &wan_b, to_b), first, "EIM across destinations");
    // An internal port inside the block is preserved.
    let a2 = udp(&tb.lan[0].ns, LAN_A_ADDR, A_BLOCK.0 + 60);
    assert_eq!(
        seen_at(&a2, &wan_a, to_a),
        SocketAddrV4::new(GW_WAN_ADDR, A_BLOCK.0 + 60),
        "port preserved inside the block"
    );
    // Inbound to the mapping reaches the host.
    wan_a
        .send_to(b"in", first)
        .expect("send to LAN A's external endpoint");
    let (data, from) = recv(&a).expect("LAN A got the inbound datagram");
    assert_eq!((data.as_slice(), from), (&b"in"[..], to_a));

    // LAN B is on the pool's second address, in its own block.
    let b = udp(&tb.lan[1].ns, LAN_B_ADDR, 40000);
    let seen_b = seen_at(&b, &wan_a, to_a);
    assert!(
        in_block(seen_b, GW_WAN_2, B_BLOCK),
        "LAN B seen as {seen_b}, block {B_BLOCK:?}"
    );
    wan_a
        .send_to(b"in-b", seen_b)
        .expect("send to LAN B's external endpoint");
    let (data, _) = recv(&b).expect("LAN B got the inbound datagram");
    assert_eq!(data, b"in-b");

    // PCP MAP from LAN A, suggesting a port outside its block: granted inside it, on
    // its address, and open from the WAN.
    let pcp = udp(&tb.lan[0].ns, LAN_A_ADDR, 45000);
    let out = tb.lan[0]
        .ns
        .command(natgw_integration_tests::natgw_bin())
        .args([
            "pcp",
            "map",
            "--server",
            "10.0.1.1",
            "--json",
            "--internal-port",
            "45000",
            "--suggest",
            "192.0.2.1:20000",
            "--lifetime",
            "600",
        ])
        .output()
        .expect("running natgw pcp map");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "natgw pcp map printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["result"], "SUCCESS", "{report}");
    let mapped: SocketAddrV4 = report["external"]
        .as_str()
        .and_then(|e| e.parse().ok())
        .expect("external");
    assert!(
        in_block(mapped, GW_WAN_ADDR, A_BLOCK),
        "PCP gave {mapped}, block {A_BLOCK:?}"
    );
    wan_b
        .send_to(b"to-pcp", mapped)
        .expect("send to the PCP mapping");
    let (data, _) = recv(&pcp).expect("the PCP mapping is open from the WAN");
    assert_eq!(data, b"to-pcp");

    // The table holds what the wire showed; `natgw who` answers from the function.
    let m = natgw
        .mapping_of("udp", SocketAddrV4::new(LAN_A_ADDR, 40000))
        .expect("natgw mappings lists LAN A's mapping");
    assert_eq!(m["external"], first.to_string());
    let (status, out, err) = natgw.cli(&["who", &format!("{GW_WAN_2}:{}", B_BLOCK.1), "--json"]);
    assert!(status.success(), "natgw who failed: {err}");
    let who: serde_json::Value = serde_json::from_str(&out).expect("who --json");
    assert_eq!(who["block"]["internal"], LAN_B_ADDR.to_string(), "{who}");
    assert_eq!(who["block"]["port_first"], B_BLOCK.0, "{who}");

    // The allocation log: one record per block (all 1,024 hosts of the space, both
    // shares being owned), none per mapping.
    let text = std::fs::read_to_string(&log).expect("reading the allocation log");
    let _ = std::fs::remove_file(&log);
    let line = format!(
        " start proto=all int={LAN_A_ADDR}:0 ext={GW_WAN_ADDR} ports={}-{} origin=block",
        A_BLOCK.0, A_BLOCK.1
    );
    assert!(
        text.lines().any(|l| l.ends_with(&line)),
        "no `{line}` in the log"
    );
    assert_eq!(text.lines().count(), 1024, "one record per block");
    assert!(
        !text.contains("origin=traffic"),
        "no per-mapping records in block mode"
    );
}

#[test]
fn hosts_without_a_block_here_are_dropped_counted_and_never_leaked() {
    // rfc7422: no translation outside the configured space, none for another
    // gateway's share; rfc6888 REQ-3 (no address leaks).
    let (mut natgw, tb) = setup(&["--block-space", "10.0.1.0/24"]);
    let watch = LeakWatch::start(&tb.inet);
    let wan = udp(&tb.wan[0].ns, WAN_A_ADDR, 7000);
    let to = SocketAddrV4::new(WAN_A_ADDR, 7000);
    let a = udp(&tb.lan[0].ns, LAN_A_ADDR, 40000);
    let b = udp(&tb.lan[1].ns, LAN_B_ADDR, 40000);
    // LAN A is host 2 of 10.0.1.0/24: block 2 of 192.0.2.1.
    let seen = seen_at(&a, &wan, to);
    assert!(
        in_block(seen, GW_WAN_ADDR, (1276, 1401)),
        "LAN A seen as {seen}"
    );
    // LAN B (10.0.2.2) is outside the space.
    for _ in 0..3 {
        b.send_to(b"outside", to).expect("send from LAN B");
    }
    assert_eq!(
        recv_nothing(&wan, Duration::from_secs(1)),
        None,
        "LAN B's datagrams must not leave"
    );
    assert!(
        natgw.counter("drop_outside_blocks") >= 3,
        "{}",
        natgw.status()
    );
    assert!(natgw
        .mapping_of("udp", SocketAddrV4::new(LAN_B_ADDR, 40000))
        .is_none());
    natgw.stop();
    drop(natgw);

    // Two shares, only share 1 (192.0.2.2: LAN B's) owned: LAN A is another
    // gateway's.
    let natgw = Natgw::start(
        &tb.gateway.ns,
        &[
            "--external",
            &GW_WAN_ADDR.to_string(),
            "--external",
            &GW_WAN_2.to_string(),
            "--block-size",
            "126",
            "--no-upnp",
            "--block-space",
            "10.0.0.0/22",
            "--block-shares",
            "2",
            "--block-owned",
            "1",
        ],
    );
    let a = udp(&tb.lan[0].ns, LAN_A_ADDR, 40100);
    for _ in 0..3 {
        a.send_to(b"not ours", to).expect("send from LAN A");
    }
    assert_eq!(
        recv_nothing(&wan, Duration::from_secs(1)),
        None,
        "LAN A's datagrams must not leave"
    );
    assert!(
        natgw.counter("drop_share_not_owned") >= 3,
        "{}",
        natgw.status()
    );
    let seen = seen_at(&b, &wan, to);
    assert!(in_block(seen, GW_WAN_2, B_BLOCK), "LAN B seen as {seen}");
    drop(natgw);
    watch.assert_none("hosts without a block");
}

/// Three gateways behind a LAN router that routes each share of internal hosts to
/// its gateway by source address, and a WAN router routing each share's external
/// address to the same gateway, both following the gateways' BGP announcements
/// (BIRD, with BFD) ([`testbed::scale_out`]).
mod scale_out {
    use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
    use std::time::{Duration, Instant};

    use natgw_integration_tests::{recv, udp, Natgw};
    use testbed::scale_out::{ScaleOut, ShareRoutes, GATEWAYS, SERVER_ADDR};

    /// Blocks of 750 ports over 1024-65535: 86 per address.
    const BLOCK: u16 = 750;
    const PER_ADDR: u32 = 86;
    /// Three hosts in each share of 10.0.0.0/24 (hosts 0-85, 86-171, 172-255).
    const HOSTS: [u8; 9] = [20, 21, 22, 100, 101, 102, 200, 201, 202];

    fn pool() -> [Ipv4Addr; GATEWAYS] {
        [1, 2, 3].map(|i| Ipv4Addr::new(192, 0, 2, i))
    }

    /// RFC 7422's function, written out again here rather than taken from natgw:
    /// host i's share (= pool index: one address per share) and its port block.
    fn expected(host: Ipv4Addr) -> (usize, Ipv4Addr, u16, u16) {
        let i = u32::from(host.octets()[3]);
        let share = (i / PER_ADDR) as usize;
        let first = 1024 + (i % PER_ADDR) as u16 * BLOCK;
        (share, pool()[share], first, first + BLOCK - 1)
    }

    /// The fewest prefixes covering hosts `lo..hi` of 10.0.0.0/24.
    fn prefixes(mut lo: u32, hi: u32) -> Vec<(Ipv4Addr, u8)> {
        let mut out = Vec::new();
        while lo < hi {
            let mut size = if lo == 0 {
                256
            } else {
                1 << lo.trailing_zeros()
            };
            while lo + size > hi {
                size >>= 1;
            }
            out.push((
                Ipv4Addr::new(10, 0, 0, lo as u8),
                32 - size.trailing_zeros() as u8,
            ));
            lo += size;
        }
        out
    }

    fn shares() -> Vec<ShareRoutes> {
        (0..GATEWAYS as u32)
            .map(|s| ShareRoutes {
                internal: prefixes(s * PER_ADDR, ((s + 1) * PER_ADDR).min(256)),
                external: vec![pool()[s as usize]],
            })
            .collect()
    }

    /// natgw on gateway `k`: primary for share k, backup for share k-1.
    fn start(tb: &ScaleOut, k: usize) -> Natgw {
        let pool = pool().map(|a| a.to_string());
        let owned = format!("{k},{}", (k + GATEWAYS - 1) % GATEWAYS);
        let block = BLOCK.to_string();
        let mut args = vec!["--no-upnp", "--no-stun"];
        for a in &pool {
            args.extend(["--external", a.as_str()]);
        }
        args.extend([
            "--block-space",
            "10.0.0.0/24",
            "--block-size",
            &block,
            "--block-shares",
            "3",
            "--block-owned",
            &owned,
        ]);
        Natgw::try_start_on(&tb.gateways[k], &["--wan", "wan0", "--lan", "lan0"], &args)
            .unwrap_or_else(|e| panic!("natgw on gateway {k}: {e}"))
    }

    /// Sends `tag` from `from` to the server socket `server` (at `to`) and returns the
    /// source the server saw it with, skipping other hosts' datagrams; `None` when it
    /// does not arrive within `within`.
    fn probe(
        from: &UdpSocket,
        server: &UdpSocket,
        to: SocketAddrV4,
        tag: &str,
        within: Duration,
    ) -> Option<SocketAddrV4> {
        from.send_to(tag.as_bytes(), to).expect("send from a host");
        let deadline = Instant::now() + within;
        server
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        while Instant::now() < deadline {
            if let Some((data, seen)) = recv(server) {
                if data == tag.as_bytes() {
                    return Some(seen);
                }
            }
        }
        None
    }

    /// Whether the server's reply to `ext` reaches `host_sock`.
    fn reply_arrives(
        server: &UdpSocket,
        ext: SocketAddrV4,
        host_sock: &UdpSocket,
        tag: &str,
    ) -> bool {
        server
            .send_to(tag.as_bytes(), ext)
            .expect("reply from the server");
        for _ in 0..10 {
            match recv(host_sock) {
                Some((data, _)) if data == tag.as_bytes() => return true,
                Some(_) => {}
                None => return false,
            }
        }
        false
    }

    /// How gateway 1 fails.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Failure {
        /// The box dies with its cables plugged in: the routers' ports keep their
        /// carrier, only BFD notices.
        BoxDies,
        /// Both its cables are pulled: the routers' ports to it go down and its own
        /// links lose carrier, keeping their configuration.
        LinksDown,
    }

    #[test]
    fn shares_move_whole_when_a_gateway_dies_with_its_links_up() {
        // rfc7422 with issue #16 item 2, failure seen by BFD only.
        shares_spread_over_three_gateways_and_move_whole_when_one_fails(Failure::BoxDies);
    }

    #[test]
    fn shares_move_whole_when_a_gateway_loses_its_links() {
        // rfc7422 with issue #16 item 2, failure seen as lost carrier.
        shares_spread_over_three_gateways_and_move_whole_when_one_fails(Failure::LinksDown);
    }

    /// EIM across gateways, inbound through the block, and a failed gateway's hosts
    /// moved to its backup with the same external address and block, the others
    /// untouched.
    fn shares_spread_over_three_gateways_and_move_whole_when_one_fails(how: Failure) {
        natgw_integration_tests::require_root();
        let hosts: Vec<Ipv4Addr> = HOSTS.iter().map(|i| Ipv4Addr::new(10, 0, 0, *i)).collect();
        let mut tb = ScaleOut::new(&hosts, &shares()).expect("building the scale-out testbed");
        let mut natgws: Vec<Natgw> = (0..GATEWAYS).map(|k| start(&tb, k)).collect();
        let server = udp(&tb.server, SERVER_ADDR, 7000);
        let server2 = udp(&tb.server, SERVER_ADDR, 7001);
        let (to, to2) = (
            SocketAddrV4::new(SERVER_ADDR, 7000),
            SocketAddrV4::new(SERVER_ADDR, 7001),
        );
        let wait = Duration::from_secs(5);

        // Every host: the function's address and block, the same endpoint towards a
        // second server port (EIM), the reply back in, and the mapping on its share's
        // gateway only.
        let mut socks = Vec::new();
        let mut before = Vec::new();
        for h in &hosts {
            let (share, addr, first, last) = expected(*h);
            let s = udp(&tb.hosts, *h, 40000);
            let seen = probe(&s, &server, to, &format!("{h} 1"), wait)
                .unwrap_or_else(|| panic!("{h}'s datagram did not reach the server"));
            assert_eq!(*seen.ip(), addr, "{h}: external address");
            assert!(
                (first..=last).contains(&seen.port()),
                "{h}: port {} not in {first}-{last}",
                seen.port()
            );
            let again = probe(&s, &server2, to2, &format!("{h} 2"), wait).expect("second flow");
            assert_eq!(again, seen, "{h}: EIM");
            assert!(
                reply_arrives(&server, seen, &s, &format!("{h} back")),
                "{h}: inbound"
            );
            let internal = SocketAddrV4::new(*h, 40000);
            for (k, n) in natgws.iter().enumerate() {
                assert_eq!(
                    n.mapping_of("udp", internal).is_some(),
                    k == share,
                    "{h}'s mapping on gateway {k} (its share is {share})"
                );
            }
            socks.push(s);
            before.push(seen);
        }

        // Gateway 1 fails: natgw dies and the box (or its links) with it. Its share
        // (hosts 100-102) goes to gateway 2.
        let failed = 1;
        let moved_flows = natgws[failed].mappings().len();
        let age_elsewhere: Vec<Option<u64>> = hosts
            .iter()
            .map(|h| {
                let (share, ..) = expected(*h);
                (share != failed)
                    .then(|| natgws[share].mapping_of("udp", SocketAddrV4::new(*h, 40000)))
                    .flatten()
                    .and_then(|m| m["age_ms"].as_u64())
            })
            .collect();
        let moved: Vec<usize> = (0..hosts.len())
            .filter(|i| expected(hosts[*i]).0 == failed)
            .collect();
        // natgw dying alone fails nothing: its pinned data path keeps translating.
        natgws[failed].kill();
        let i = moved[0];
        let seen = probe(&socks[i], &server, to, "natgw killed", wait)
            .expect("the data path of a killed natgw still translates");
        assert_eq!(
            seen, before[i],
            "the same mapping, still on gateway {failed}"
        );
        let t0 = Instant::now();
        match how {
            Failure::BoxDies => tb.kill_box(failed).expect("killing gateway 1's box"),
            Failure::LinksDown => tb
                .fail_links(failed)
                .expect("taking gateway 1's links down"),
        }
        // Both routers send share 1 to its backup, and nothing else moves.
        let rerouted = t0.elapsed()
            + tb.wait_routes(&[failed], Duration::from_secs(10))
                .expect("share 1's routes on its backup, the others' unchanged");

        // The first moved host's new flow, tried every 100 ms: how long until it works.
        let first = hosts[moved[0]];
        let fresh = udp(&tb.hosts, first, 41000);
        let mut recovered = None;
        for attempt in 0..100 {
            if let Some(seen) = probe(
                &fresh,
                &server,
                to,
                &format!("{first} fresh {attempt}"),
                Duration::from_millis(100),
            ) {
                recovered = Some((t0.elapsed(), seen));
                break;
            }
        }
        let (took, seen) = recovered.expect("the moved host's new flow never got through (10 s)");
        let (_, addr, lo, hi) = expected(first);
        assert_eq!(*seen.ip(), addr, "same external address after the move");
        assert!(
            (lo..=hi).contains(&seen.port()),
            "same block after the move: {seen}"
        );

        // Every moved host: new flows (also from the old socket) get the same address
        // and block, from the backup, and replies come back in.
        for &i in &moved {
            let h = hosts[i];
            let (_, addr, lo, hi) = expected(h);
            let seen = probe(&socks[i], &server, to, &format!("{h} after"), wait)
                .unwrap_or_else(|| panic!("{h} does not get through after the move"));
            assert_eq!(
                *seen.ip(),
                addr,
                "{h}: same external address after the move"
            );
            assert!(
                (lo..=hi).contains(&seen.port()),
                "{h}: same block after the move: {seen}"
            );
            assert_eq!(*before[i].ip(), *seen.ip());
            assert!(
                reply_arrives(&server, seen, &socks[i], &format!("{h} back after")),
                "{h}: inbound after the move"
            );
            assert!(
                natgws[(failed + 1) % GATEWAYS]
                    .mapping_of("udp", SocketAddrV4::new(h, 40000))
                    .is_some(),
                "{h}'s new mapping is on the backup"
            );
        }
        // The other hosts' flows are untouched: same endpoint, same mapping.
        for (i, h) in hosts.iter().enumerate() {
            let (share, ..) = expected(*h);
            if share == failed {
                continue;
            }
            let seen =
                probe(&socks[i], &server, to, &format!("{h} still"), wait).expect("unmoved host");
            assert_eq!(seen, before[i], "{h}: its flow keeps its external endpoint");
            let m = natgws[share]
                .mapping_of("udp", SocketAddrV4::new(*h, 40000))
                .expect("still mapped");
            let (age, age_before) = (m["age_ms"].as_u64(), age_elsewhere[i]);
            assert!(
                age.is_some() && age_before.is_some() && age >= age_before,
                "{h}: the same mapping, not a new one (age {age:?} ms, before {age_before:?} ms)"
            );
        }

        // Failback: gateway 1 comes back (natgw first, then its announcements) and
        // takes its share back; the moved hosts' next flows go through it, in the
        // same address and block, and the other hosts are still untouched.
        natgws[failed] = start(&tb, failed);
        let t1 = Instant::now();
        tb.revive_box(failed).expect("reviving gateway 1");
        tb.wait_routes(&[], Duration::from_secs(15))
            .expect("share 1's routes back on gateway 1");
        let back = t1.elapsed();
        for &i in &moved {
            let h = hosts[i];
            let (_, addr, lo, hi) = expected(h);
            let s = udp(&tb.hosts, h, 42000);
            let seen = probe(&s, &server, to, &format!("{h} failback"), wait)
                .unwrap_or_else(|| panic!("{h} does not get through after the failback"));
            assert_eq!(
                *seen.ip(),
                addr,
                "{h}: same external address after failback"
            );
            assert!(
                (lo..=hi).contains(&seen.port()),
                "{h}: same block after failback: {seen}"
            );
            assert!(
                reply_arrives(&server, seen, &s, &format!("{h} back after failback")),
                "{h}: inbound after failback"
            );
            assert!(
                natgws[failed]
                    .mapping_of("udp", SocketAddrV4::new(h, 42000))
                    .is_some(),
                "{h}'s new flow is on gateway {failed} again"
            );
        }
        for (i, h) in hosts.iter().enumerate() {
            if expected(*h).0 != failed {
                let seen = probe(&socks[i], &server, to, &format!("{h} still after"), wait)
                    .expect("unmoved host after failback");
                assert_eq!(seen, before[i], "{h}: untouched by the failback too");
            }
        }
        println!(
            "scale-out failover ({how:?}): {} of {} hosts moved ({} mappings on the failed \
             gateway); both routers sent its share to the backup {:.0} ms after the \
             failure, and the first moved host's new flow worked after {:.0} ms; \
             failback: the share's routes were back {:.0} ms after gateway {failed} \
             announced again",
            moved.len(),
            hosts.len(),
            moved_flows,
            rerouted.as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1000.0,
            back.as_secs_f64() * 1000.0
        );
    }
}
