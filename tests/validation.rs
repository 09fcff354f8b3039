//! Hostile traffic through the gateway must not make a mapping (issue #17, item 6):
//! what Linux conntrack marks invalid — UDP with a bad checksum or UDP length, TCP
//! with a bad checksum or a flag combination no stack sends —, sources that are a
//! broadcast address, and packets with malformed IP options. Each test sends its
//! hostile packets from a LAN host, crafted with scapy straight onto the link, on
//! the XDP fast path (DF set, every redirect possible) and on the kernel's path (no
//! DF: a non-atomic datagram is `tc_wan_egress`'s), and asserts from natgw's
//! counters and mapping table that each was counted under its reason and that none
//! created a mapping; a valid packet sent right after them in the same burst does
//! create one, so every test can fail.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use natgw_integration_tests::{
    accept_redirects, command_output, recv, recv_nothing, require_root, udp, wait_for, Natgw,
    Setup, WAIT,
};
use serde_json::Value;
use testbed::{Netns, Rtnl, Testbed, GW_WAN_ADDR, LAN_A_ADDR, LAN_B_ADDR, WAN_A_ADDR};

/// Hostile packets per class and path.
const N: u16 = 20;
/// The WAN host's port the UDP tests send to.
const WAN_PORT: u16 = 7000;
/// A WAN address nobody holds: TCP segments sent there get no answer that could move
/// a session's state (the inet router drops them after failing to resolve it).
const SILENT_PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
/// How long to wait before concluding that nothing more arrives.
const QUIET: Duration = Duration::from_millis(800);

/// Which of natgw's two paths a crafted packet takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// `xdp_lan` translates and redirects it: DF set, redirects accepted.
    Fast,
    /// `xdp_lan` hands it to the kernel (`pass_non_atomic`: no DF), and
    /// `tc_wan_egress` translates it.
    Kernel,
}

impl Path {
    const BOTH: [Self; 2] = [Self::Fast, Self::Kernel];

    /// scapy's `IP(flags=...)`.
    const fn ip_flags(self) -> &'static str {
        match self {
            Self::Fast => "DF",
            Self::Kernel => "",
        }
    }

    /// First source port of this path's packets in round `round` of a test (200
    /// ports each), so that neither paths nor rounds share an internal endpoint.
    const fn ports(self, round: u16) -> u16 {
        let base = match self {
            Self::Fast => 20000,
            Self::Kernel => 30000,
        };
        base + 200 * round
    }
}

/// Debian's Python, for which `python3-scapy` installs scapy (a `python3` earlier
/// in `PATH`, pyenv's say, would not see it).
const PYTHON: &str = "/usr/bin/python3";

/// The Python that every scapy run starts with: imports (exit status 3 when scapy
/// is missing) and the helpers the test bodies use. `out` collects the frames,
/// `sendp(out)` sends them in order at the end.
const PRELUDE: &str = r#"
import sys
try:
    from scapy.all import (Ether, IP, UDP, TCP, Raw, IPOption_NOP, IPOption_EOL,
                           raw, sendp, send, conf)
    from scapy.utils import checksum
except ImportError as e:
    sys.stderr.write("cannot import scapy: %s\n" % e)
    sys.exit(3)
conf.verb = 0
out = []

def l2(p):
    return Ether(dst=GW_MAC) / p

def corrupt(p):
    # The last byte flipped after the checksums were computed.
    b = bytearray(raw(l2(p)))
    b[-1] ^= 0x01
    return Raw(bytes(b))

def bad_options(p):
    # p carries 4 option bytes (NOP NOP NOP EOL); they become a record-route option
    # whose length (39) runs past the header, which ip_options_compile rejects.
    b = bytearray(raw(l2(p)))
    b[34:38] = bytes([0x07, 0x27, 0x04, 0x00])
    b[24:26] = bytes(2)
    b[24:26] = checksum(bytes(b[14:38])).to_bytes(2, "big")
    return Raw(bytes(b))
"#;

/// Runs scapy in `ns`: [`PRELUDE`], `GW_MAC = gw_mac`, then `body`, then one
/// `sendp(out, iface="eth0")` when `body` filled `out`.
///
/// # Panics
/// When scapy is missing (naming the Debian package) or the script fails.
fn scapy(ns: &Netns, gw_mac: [u8; 6], body: &str) {
    let mac = gw_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let script =
        format!("GW_MAC = \"{mac}\"\n{PRELUDE}\n{body}\nif out:\n    sendp(out, iface=\"eth0\")\n");
    let output = ns
        .command(PYTHON)
        .arg("-c")
        .arg(&script)
        .output()
        .expect("running /usr/bin/python3 (Debian's python3-scapy brings it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code() != Some(3),
        "scapy is missing, and these tests craft their packets with it: install Debian's \
         python3-scapy (`cargo xtask provision` installs it with the other test packages). \
         {stderr}"
    );
    assert!(
        output.status.success(),
        "the scapy script failed ({}): {stderr}\n{script}",
        output.status
    );
}

/// The MAC address of `ifname` in `ns`.
fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let (name, ifname) = (ns.name().to_owned(), ifname.to_owned());
    ns.run(move || Rtnl::connect(&name).and_then(|r| r.mac(&ifname)))
        .unwrap_or_else(|e| panic!("a MAC address in {}: {e}", ns.name()))
}

/// The testbed with natgw, every gateway interface accepting redirects, and a
/// datagram from lan-a to wan-a translated on the fast path, so that the next hop's
/// neighbour is known and DF packets take `xdp_lan`'s redirect.
struct Bed {
    s: Setup,
    /// wan-a's socket on [`WAN_PORT`].
    wan: UdpSocket,
    /// The MAC address of the gateway's `lan0`.
    lan0_mac: [u8; 6],
}

impl Bed {
    fn new() -> Self {
        let s = Setup::new(&[]);
        accept_redirects(&s, &["wan0", "lan0"]);
        let wan = udp(&s.tb.wan[0].ns, WAN_A_ADDR, WAN_PORT);
        let lan = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 41000);
        let to = SocketAddrV4::new(WAN_A_ADDR, WAN_PORT);
        let redirected = wait_for(WAIT, || {
            let before = s.natgw.counter("xdp_out_redirected");
            lan.send_to(b"warm-up", to).expect("send");
            recv(&wan).expect("the warm-up datagram arrives");
            (s.natgw.counter("xdp_out_redirected") > before).then_some(())
        });
        assert!(
            redirected.is_some(),
            "the fast path never took lan-a's datagrams"
        );
        let lan0_mac = mac_of(&s.tb.gateway.ns, "lan0");
        Self { s, wan, lan0_mac }
    }

    fn natgw(&self) -> &Natgw {
        &self.s.natgw
    }

    /// Runs a scapy `body` on lan-a.
    fn send_from_lan_a(&self, body: &str) {
        scapy(&self.s.tb.lan[0].ns, self.lan0_mac, body);
    }

    /// A data-path counter, 0 when not listed (a natgw without it fails on what it
    /// counts, not on its absence).
    fn counter(&self, name: &str) -> u64 {
        self.natgw().status()["counters"][name]
            .as_u64()
            .unwrap_or(0)
    }

    /// Every datagram wan-a receives until it has been quiet for [`QUIET`].
    fn wan_received(&self) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while got.len() < 1000 {
            match recv_nothing(&self.wan, QUIET) {
                Some((data, _)) => got.push(data),
                None => break,
            }
        }
        got
    }
}

/// The internal ports of lan-a's `proto` mappings.
fn mapped_ports(natgw: &Natgw, proto: &str) -> BTreeSet<u16> {
    natgw
        .mappings()
        .iter()
        .filter(|m| m["protocol"] == proto)
        .filter_map(|m| m["internal"].as_str()?.parse::<SocketAddrV4>().ok())
        .filter(|e| *e.ip() == LAN_A_ADDR)
        .map(|e| e.port())
        .collect()
}

/// Waits until `counter` has grown by at least `by` from `before`, then (after
/// [`QUIET`], for stragglers) checks that it grew by exactly `by`.
fn assert_counted(bed: &Bed, counter: &str, before: u64, by: u64, what: &str) {
    let reached = wait_for(WAIT, || (bed.counter(counter) >= before + by).then_some(()));
    std::thread::sleep(QUIET);
    let now = bed.counter(counter);
    assert!(
        reached.is_some() && now == before + by,
        "{what}: {counter} went from {before} to {now}, expected +{by}\n{}",
        bed.natgw().log()
    );
}

/// One burst of round `round` on `path`: `hostile` (a Python expression of one
/// frame from source port `p`) for [`N`] ports from `path.ports(round)`, then the
/// valid `control` frame (from port `path.ports(round) + 100`). Asserts that
/// `counter` counted exactly the hostile frames, that none of them made a mapping,
/// that the control did (and on `path`), and that `mapping_created` grew by one.
fn burst(
    bed: &Bed,
    (path, round): (Path, u16),
    proto: &str,
    counter: &str,
    hostile: &str,
    control: &str,
) {
    let first = path.ports(round);
    let control_port = first + 100;
    let counted_before = bed.counter(counter);
    let created_before = bed.counter("mapping_created");
    let fast_before = bed.counter("xdp_out_redirected");
    let kernel_before = bed.counter("tc_out_translated");
    bed.send_from_lan_a(&format!(
        "for p in range({first}, {end}):\n    out.append({hostile})\np = {control_port}\n\
         out.append({control})\n",
        end = first + N,
    ));
    let what = format!("{hostile} on the {path:?} path");
    let mapped = wait_for(WAIT, || {
        let ports = mapped_ports(bed.natgw(), proto);
        ports.contains(&control_port).then_some(ports)
    })
    .unwrap_or_else(|| panic!("{what}: the valid packet after them made no mapping"));
    let hostile_mapped: Vec<_> = mapped.range(first..first + N).collect();
    assert!(
        hostile_mapped.is_empty(),
        "{what}: mappings for {hostile_mapped:?}"
    );
    assert_eq!(
        bed.counter("mapping_created"),
        created_before + 1,
        "{what}: only the valid packet creates a mapping"
    );
    assert_counted(bed, counter, counted_before, u64::from(N), &what);
    let (fast, kernel) = match path {
        Path::Fast => (1, 0),
        Path::Kernel => (0, 1),
    };
    assert_eq!(
        (
            bed.counter("xdp_out_redirected") - fast_before,
            bed.counter("tc_out_translated") - kernel_before
        ),
        (fast, kernel),
        "{what}: the valid packet took the {path:?} path, alone"
    );
}

/// A scapy IPv4 header from lan-a to `dst` for `path`.
fn ip_from_lan_a(dst: Ipv4Addr, path: Path) -> String {
    format!(
        "IP(src=\"{LAN_A_ADDR}\", dst=\"{dst}\", flags=\"{}\")",
        path.ip_flags()
    )
}

/// A valid UDP datagram from lan-a's port `p` to wan-a.
fn udp_to_wan_a(path: Path, payload: &str) -> String {
    format!(
        "{}/UDP(sport=p, dport={WAN_PORT})/Raw(b\"{payload}\")",
        ip_from_lan_a(WAN_A_ADDR, path)
    )
}

/// A valid TCP segment with `flags` from lan-a's port `p` to [`SILENT_PEER`].
fn tcp_to_silent_peer(path: Path, flags: &str) -> String {
    format!(
        "{}/TCP(sport=p, dport=80, flags=\"{flags}\", seq=1000)",
        ip_from_lan_a(SILENT_PEER, path)
    )
}

#[test]
fn udp_with_a_bad_checksum_makes_no_mapping() {
    // issue #17 item 6: one mapping per corrupt datagram, on both paths.
    let bed = Bed::new();
    for path in Path::BOTH {
        let valid = udp_to_wan_a(path, "valid");
        burst(
            &bed,
            (path, 0),
            "udp",
            "drop_bad_checksum",
            &format!("corrupt({})", udp_to_wan_a(path, "corrupt payload")),
            &format!("l2({valid})"),
        );
    }
    let got = bed.wan_received();
    assert_eq!(
        got,
        vec![b"valid".to_vec(); 2],
        "only the valid datagrams left"
    );
}

#[test]
fn udp_with_a_bad_length_makes_no_mapping() {
    // issue #17 item 6: UDP length 0, below 8, beyond the IP payload (conntrack's
    // "truncated/malformed packet").
    let bed = Bed::new();
    for (round, len) in [0, 7, 200].into_iter().enumerate() {
        for path in Path::BOTH {
            let hostile = format!(
                "l2({}/UDP(sport=p, dport={WAN_PORT}, len={len})/Raw(b\"x\" * 16))",
                ip_from_lan_a(WAN_A_ADDR, path)
            );
            burst(
                &bed,
                (path, round as u16),
                "udp",
                "drop_udp_length",
                &hostile,
                &format!("l2({})", udp_to_wan_a(path, "valid")),
            );
        }
        let got = bed.wan_received();
        assert_eq!(got, vec![b"valid".to_vec(); 2], "length {len}");
    }
}

#[test]
fn tcp_with_a_bad_checksum_makes_no_mapping() {
    // issue #17 item 6: one mapping per corrupt SYN, on both paths.
    let bed = Bed::new();
    for path in Path::BOTH {
        burst(
            &bed,
            (path, 0),
            "tcp",
            "drop_bad_checksum",
            &format!("corrupt({})", tcp_to_silent_peer(path, "S")),
            &format!("l2({})", tcp_to_silent_peer(path, "S")),
        );
    }
}

#[test]
fn tcp_with_invalid_flags_makes_no_mapping() {
    // issue #17 item 6: no flags, SYN+FIN, and the other combinations conntrack's
    // tcp_valid_flags refuses (SYN+RST, FIN alone, FIN+RST, URG+PSH+FIN).
    let bed = Bed::new();
    for (round, flags) in ["", "SF", "SR", "F", "FR", "FPU", "SFA"]
        .into_iter()
        .enumerate()
    {
        for path in Path::BOTH {
            burst(
                &bed,
                (path, round as u16),
                "tcp",
                "drop_tcp_flags",
                &format!("l2({})", tcp_to_silent_peer(path, flags)),
                &format!("l2({})", tcp_to_silent_peer(path, "S")),
            );
        }
    }
}

#[test]
fn tcp_answers_and_endings_make_no_mapping() {
    // issue #17 item 6: a SYN-ACK or a FIN (valid flags, but no connection natgw
    // saw) made a mapping each; conntrack starts nothing from them, and neither does
    // natgw now (drop_no_mapping, as for an outbound RST).
    let bed = Bed::new();
    for (round, flags) in ["SA", "FA", "FPA", "R", "RA"].into_iter().enumerate() {
        for path in Path::BOTH {
            burst(
                &bed,
                (path, round as u16),
                "tcp",
                "drop_no_mapping",
                &format!("l2({})", tcp_to_silent_peer(path, flags)),
                &format!("l2({})", tcp_to_silent_peer(path, "S")),
            );
        }
    }
}

#[test]
fn packets_with_malformed_ip_options_make_no_mapping() {
    // issue #17 item 6: on the fast path, 100 packets with malformed IP options
    // made 100 mappings, where the kernel's path drops them (ip_options_compile).
    // Every packet with options now goes to the kernel (pass_ip_options), which
    // drops the malformed ones before tc_wan_egress could map them, and translates
    // the valid ones on its path.
    let bed = Bed::new();
    for path in Path::BOTH {
        let with_options = |payload: &str| {
            format!(
                "IP(src=\"{LAN_A_ADDR}\", dst=\"{WAN_A_ADDR}\", flags=\"{}\", \
                 options=[IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_EOL()])\
                 /UDP(sport=p, dport={WAN_PORT})/Raw(b\"{payload}\")",
                path.ip_flags()
            )
        };
        let first = path.ports(0);
        let control_port = first + 100;
        let passed_before = bed.counter("pass_ip_options");
        let created_before = bed.counter("mapping_created");
        let kernel_before = bed.counter("tc_out_translated");
        bed.send_from_lan_a(&format!(
            "for p in range({first}, {end}):\n    out.append(bad_options({bad}))\n\
             p = {control_port}\nout.append(l2({good}))\n",
            end = first + N,
            bad = with_options("bad options"),
            good = with_options("valid"),
        ));
        let mapped = wait_for(WAIT, || {
            let ports = mapped_ports(bed.natgw(), "udp");
            ports.contains(&control_port).then_some(ports)
        })
        .expect("the datagram with valid options was mapped on the kernel's path");
        assert!(
            mapped.range(first..first + N).next().is_none(),
            "{path:?}: mappings for malformed options: {mapped:?}"
        );
        assert_eq!(bed.counter("mapping_created"), created_before + 1);
        assert_counted(
            &bed,
            "pass_ip_options",
            passed_before,
            u64::from(N) + 1,
            &format!("IP options on the {path:?} path"),
        );
        assert_eq!(bed.counter("tc_out_translated"), kernel_before + 1);
        assert_eq!(bed.wan_received(), vec![b"valid".to_vec()], "{path:?}");
    }
}

#[test]
fn broadcast_sources_make_no_mapping() {
    // issue #17 item 6: the LAN's directed broadcast address and the limited
    // broadcast address as sources (inbound traffic to such a mapping would go to
    // every host). nat::check_lan_source drops them first, on either path.
    let bed = Bed::new();
    for path in Path::BOTH {
        let first = path.ports(0);
        let before = bed.counter("drop_spoofed");
        let created_before = bed.counter("mapping_created");
        let from = |src: &str| {
            format!(
                "l2(IP(src=\"{src}\", dst=\"{WAN_A_ADDR}\", flags=\"{}\")\
                 /UDP(sport=p, dport={WAN_PORT})/Raw(b\"from {src}\"))",
                path.ip_flags()
            )
        };
        bed.send_from_lan_a(&format!(
            "for p in range({first}, {end}):\n    out.append({directed})\n    \
             out.append({limited})\np = {control}\nout.append(l2({valid}))\n",
            end = first + N,
            directed = from("10.0.1.255"),
            limited = from("255.255.255.255"),
            control = first + 100,
            valid = udp_to_wan_a(path, "valid"),
        ));
        assert_counted(
            &bed,
            "drop_spoofed",
            before,
            2 * u64::from(N),
            &format!("broadcast sources on the {path:?} path"),
        );
        wait_for(WAIT, || {
            mapped_ports(bed.natgw(), "udp")
                .contains(&(first + 100))
                .then_some(())
        })
        .expect("the valid datagram was mapped");
        assert_eq!(bed.counter("mapping_created"), created_before + 1);
        let internals: BTreeSet<Ipv4Addr> = bed
            .natgw()
            .mappings()
            .iter()
            .filter_map(|m| m["internal"].as_str()?.parse::<SocketAddrV4>().ok())
            .map(|e| *e.ip())
            .collect();
        assert_eq!(internals, BTreeSet::from([LAN_A_ADDR]));
        assert_eq!(bed.wan_received(), vec![b"valid".to_vec()], "{path:?}");
    }
}

#[test]
fn broadcast_sources_on_point_to_point_lans_make_no_mapping() {
    // issue #17 item 6, with lan1 on a /31 (RFC 3021: no broadcast address of its
    // own, both addresses hosts) and on a /32 (the gateway's address alone: no host
    // of lan1 is served at all). The limited broadcast address is never a host.
    require_root();
    for (gw_addr, prefix_len) in [
        (Ipv4Addr::new(10, 0, 2, 3), 31),
        (Ipv4Addr::new(10, 0, 2, 1), 32),
    ] {
        let tb = Testbed::new().expect("building the testbed");
        let gw = &tb.gateway.ns;
        let lan_b = &tb.lan[1].ns;
        let _ = command_output(gw, "ip", &["addr", "flush", "dev", "lan1"]);
        let cidr = format!("{gw_addr}/{prefix_len}");
        let _ = command_output(gw, "ip", &["addr", "add", &cidr, "dev", "lan1"]);
        let host = format!("{LAN_B_ADDR}/32");
        let _ = command_output(gw, "ip", &["route", "replace", &host, "dev", "lan1"]);
        let via = gw_addr.to_string();
        let _ = command_output(lan_b, "ip", &["route", "replace", "default", "via", &via]);
        let natgw = Natgw::start(gw, &[]);
        let lan1_mac = mac_of(gw, "lan1");
        let spoofed_before = natgw.counter("drop_spoofed");
        let ip = |src: Ipv4Addr| {
            format!(
                "l2(IP(src=\"{src}\", dst=\"{WAN_A_ADDR}\", flags=\"DF\")\
                 /UDP(sport=p, dport={WAN_PORT})/Raw(b\"x\"))"
            )
        };
        scapy(
            lan_b,
            lan1_mac,
            &format!(
                "for p in range(42000, {end}):\n    out.append({limited})\n    \
                 out.append({old_directed})\np = 42100\nout.append({genuine})\n",
                end = 42000 + N,
                limited = ip(Ipv4Addr::BROADCAST),
                old_directed = ip(Ipv4Addr::new(10, 0, 2, 255)),
                genuine = ip(LAN_B_ADDR),
            ),
        );
        // On a /31 the genuine host is served; on a /32 it is outside every LAN
        // prefix and spoofed too.
        let served = prefix_len == 31;
        let spoofed = 2 * u64::from(N) + u64::from(!served);
        let reached = wait_for(WAIT, || {
            (natgw.counter("drop_spoofed") >= spoofed_before + spoofed).then_some(())
        });
        std::thread::sleep(QUIET);
        assert!(
            reached.is_some() && natgw.counter("drop_spoofed") == spoofed_before + spoofed,
            "/{prefix_len}: drop_spoofed went from {spoofed_before} to {}, expected +{spoofed}",
            natgw.counter("drop_spoofed")
        );
        let internals: Vec<SocketAddrV4> = natgw
            .mappings()
            .iter()
            .filter_map(|m: &Value| m["internal"].as_str()?.parse().ok())
            .collect();
        let expected = if served {
            vec![SocketAddrV4::new(LAN_B_ADDR, 42100)]
        } else {
            Vec::new()
        };
        assert_eq!(internals, expected, "/{prefix_len}");
        drop(natgw);
    }
}

#[test]
fn invalid_packets_of_an_existing_flow_change_nothing() {
    // issue #17 item 6: invalid packets never refresh or advance state. A TCP
    // mapping opened by a valid SYN keeps its packet counts and session state while
    // segments with invalid flags arrive from either side; a UDP mapping ignores
    // datagrams with a bad length. Bad checksums are verified only where a mapping
    // would be created: on an existing mapping they are translated (incrementally,
    // so they stay corrupt) and counted like any packet, as documented.
    let bed = Bed::new();
    for path in Path::BOTH {
        let p = path.ports(0);
        let internal = SocketAddrV4::new(LAN_A_ADDR, p);
        bed.send_from_lan_a(&format!(
            "p = {p}\nout.append(l2({}))\n",
            tcp_to_silent_peer(path, "S")
        ));
        let mapping = wait_for(WAIT, || bed.natgw().mapping_of("tcp", internal))
            .expect("the SYN made a mapping");
        let ext: SocketAddrV4 = mapping["external"]
            .as_str()
            .and_then(|e| e.parse().ok())
            .expect("an external endpoint");
        let state = |m: &Value| {
            (
                m["packets_out"].as_u64(),
                m["packets_in"].as_u64(),
                m["sessions"][0]["state"].as_str().map(str::to_owned),
            )
        };
        let opened = state(&mapping);
        assert_eq!(opened, (Some(1), Some(0), Some("syn-out".to_owned())));

        let before = bed.counter("drop_tcp_flags");
        let flags = ["", "SF", "SR", "F", "FPU"];
        let outbound: String = flags
            .iter()
            .map(|f| format!("out.append(l2({}))\n", tcp_to_silent_peer(path, f)))
            .collect();
        bed.send_from_lan_a(&format!("p = {p}\n{outbound}"));
        // From the peer: a SYN+FIN would otherwise establish the session.
        scapy(
            &bed.s.tb.wan[0].ns,
            [0; 6],
            &format!(
                "from scapy.supersocket import L3RawSocket\nconf.L3socket = L3RawSocket\n\
                 for f in [\"SF\", \"\", \"SR\"]:\n    send(IP(src=\"{SILENT_PEER}\", \
                 dst=\"{}\")/TCP(sport=80, dport={}, flags=f, seq=5000, ack=1001))\n",
                ext.ip(),
                ext.port()
            ),
        );
        std::thread::sleep(QUIET);
        let after = bed
            .natgw()
            .mapping_of("tcp", internal)
            .expect("still mapped");
        assert_eq!(
            state(&after),
            opened,
            "{path:?}: nothing refreshed or advanced"
        );
        assert_counted(
            &bed,
            "drop_tcp_flags",
            before,
            flags.len() as u64 + 3,
            &format!("invalid flags on an existing flow, {path:?} path"),
        );
        assert_eq!(*ext.ip(), GW_WAN_ADDR);

        // UDP: a mapping, then datagrams with bad lengths, then corrupt ones.
        let internal = SocketAddrV4::new(LAN_A_ADDR, p);
        bed.send_from_lan_a(&format!(
            "p = {p}\nout.append(l2({}))\n",
            udp_to_wan_a(path, "valid")
        ));
        let packets_out = |bed: &Bed| {
            bed.natgw()
                .mapping_of("udp", internal)
                .and_then(|m| m["packets_out"].as_u64())
        };
        wait_for(WAIT, || packets_out(&bed).filter(|n| *n == 1)).expect("a UDP mapping");
        let bad_len_before = bed.counter("drop_udp_length");
        let bad_sum_before = bed.counter("drop_bad_checksum");
        bed.send_from_lan_a(&format!(
            "p = {p}\nfor n in [0, 7, 200]:\n    out.append(l2({}/UDP(sport=p, \
             dport={WAN_PORT}, len=n)/Raw(b\"x\" * 16)))\nfor i in range(4):\n    \
             out.append(corrupt({}))\n",
            ip_from_lan_a(WAN_A_ADDR, path),
            udp_to_wan_a(path, "corrupt")
        ));
        std::thread::sleep(QUIET);
        assert_eq!(
            wait_for(WAIT, || packets_out(&bed).filter(|n| *n >= 5)),
            Some(5),
            "{path:?}: the corrupt datagrams were translated, the bad lengths not"
        );
        assert_counted(
            &bed,
            "drop_udp_length",
            bad_len_before,
            3,
            "bad UDP lengths",
        );
        assert_eq!(bed.counter("drop_bad_checksum"), bad_sum_before);
        // wan-a got the valid datagram; its kernel dropped the corrupt ones.
        assert_eq!(bed.wan_received(), vec![b"valid".to_vec()], "{path:?}");
    }
}
