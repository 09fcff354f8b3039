//! The `nft-flowtable` mode: nftables masquerade plus a flowtable, the kernel's
//! software fast path (`flow add @ft`, what OpenWrt ships).
//!
//! A flowtable only takes a connection once conntrack has seen it in both directions
//! (`IP_CT_ESTABLISHED`): the first packet after a reply passes the forward chain's
//! `flow add @ft`, and every later packet of the flow is forwarded from the ingress
//! hook, before routing and the forward chain. The bench's generator only sends
//! LAN → WAN, so before each measured window [`prime`] makes every flow established:
//! the generator runs one warm-up with the workload (conntrack gets an entry per
//! flow), then the receiver namespace answers every unreplied entry from the reply
//! tuple conntrack lists (`conntrack -L`), from the receiver's address to the
//! masqueraded address and port. The window's own warm-up then adds the flows to the
//! flowtable.
//!
//! [`Check`] verifies that offload engaged: after the window at least as many
//! conntrack entries carry `[OFFLOAD]` as the workload has flows, and at most
//! [`MAX_SLOW_SHARE`] of the forwarded packets went through the forward chain (its
//! rule counter; an offloaded packet never reaches it). A mode run that fails either
//! test fails the bench.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use anyhow::{bail, Context as _, Result};
use testbed::{Netns, Rtnl};

use super::net::{self, Bench};

/// The nftables table the mode installs.
pub const TABLE: &str = "natgw_bench";

/// The largest share of forwarded packets allowed through the forward chain (the
/// slow path) during a window before the mode counts as not offloaded.
pub const MAX_SLOW_SHARE: f64 = 0.01;

/// Rounds of replies at most: a reply lost on the way (a full backlog) is sent again.
const REPLY_ROUNDS: usize = 3;

/// UDP payload of a reply: a 64-byte frame like the generator's.
const REPLY_PAYLOAD: [u8; 18] = [0; 18];

/// The ruleset: masquerade to the WAN, a flowtable on both gateway veths, and every
/// TCP and UDP connection offered to it from the forward chain, with a counter of the
/// packets that still take the forward chain.
#[must_use]
pub fn ruleset() -> String {
    format!(
        "table ip {TABLE} {{\n\
         \x20 flowtable ft {{\n\
         \x20   hook ingress priority 0; devices = {{ {lan}, {wan} }};\n\
         \x20 }}\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority filter; policy accept;\n\
         \x20   meta l4proto {{ tcp, udp }} counter flow add @ft\n\
         \x20 }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   oifname \"{wan}\" masquerade\n\
         \x20 }}\n\
         }}\n",
        lan = net::GW_LAN_IF,
        wan = net::GW_WAN_IF,
    )
}

/// Installs [`ruleset`] in the gateway and a permanent neighbour entry for the
/// gateway's WAN address in the receiver (its replies must not wait for ARP).
pub fn install(bench: &Bench) -> Result<()> {
    super::throughput::nft_apply(&bench.gw, &ruleset())?;
    let rcv_if = bench.rcv_if.ifindex;
    bench
        .rcv
        .try_run(|| -> Result<()> {
            Rtnl::connect(bench.rcv.name())?.add_neighbour(
                rcv_if,
                net::GW_WAN_ADDR,
                net::GW_WAN_MAC,
            )?;
            Ok(())
        })?
        .context("adding the receiver's neighbour entry for the gateway")
}

/// `Some(why)` when this kernel cannot run the mode: the bench's topology is built
/// once and the ruleset loaded; a kernel without flowtables (`CONFIG_NF_FLOW_TABLE`
/// unset, and no module to load) refuses it.
pub fn unsupported() -> Result<Option<String>> {
    let bench = Bench::create()?;
    let Err(e) = super::throughput::nft_apply(&bench.gw, &ruleset()) else {
        return Ok(None);
    };
    let text = format!("{e:#}");
    let first = text
        .lines()
        .find(|l| l.contains("Error:"))
        .map_or(text.as_str(), |l| {
            l.split_once("Error:").map_or(l, |(_, m)| m)
        })
        .trim()
        .to_owned();
    let config =
        kernel_config_says().map_or_else(String::new, |c| format!("; /proc/config.gz: {c}"));
    Ok(Some(format!(
        "the kernel refuses a flowtable (nft -f: {first}){config}"
    )))
}

/// What the running kernel's configuration says about flowtables, if it is readable.
fn kernel_config_says() -> Option<String> {
    use std::io::Read as _;
    let file = std::fs::File::open("/proc/config.gz").ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .ok()?;
    text.lines()
        .find(|l| l.contains("CONFIG_NF_FLOW_TABLE") && !l.contains("_INET") && !l.contains("_IPV"))
        .map(|l| l.trim_start_matches("# ").to_owned())
}

/// A conntrack entry's two tuples (UDP or TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The original direction's source.
    pub orig_src: SocketAddrV4,
    /// The original direction's destination.
    pub orig_dst: SocketAddrV4,
    /// The reply direction's source (the receiver).
    pub reply_src: SocketAddrV4,
    /// The reply direction's destination (the masqueraded address and port).
    pub reply_dst: SocketAddrV4,
    /// conntrack has seen no reply yet.
    pub unreplied: bool,
    /// The flowtable holds it.
    pub offloaded: bool,
}

/// The UDP and TCP entries of `conntrack -L` output; other lines are skipped.
#[must_use]
pub fn parse_conntrack(text: &str) -> Vec<Entry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Entry> {
    let mut words = line.split_whitespace();
    if !matches!(words.next()?, "udp" | "tcp") {
        return None;
    }
    let (mut src, mut dst, mut sport, mut dport) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut unreplied, mut offloaded) = (false, false);
    for w in words {
        if let Some((k, v)) = w.split_once('=') {
            match k {
                "src" => src.push(v.parse::<Ipv4Addr>().ok()?),
                "dst" => dst.push(v.parse::<Ipv4Addr>().ok()?),
                "sport" => sport.push(v.parse::<u16>().ok()?),
                "dport" => dport.push(v.parse::<u16>().ok()?),
                _ => {}
            }
        } else {
            match w {
                "[UNREPLIED]" => unreplied = true,
                "[OFFLOAD]" | "[HW_OFFLOAD]" => offloaded = true,
                _ => {}
            }
        }
    }
    if src.len() != 2 || dst.len() != 2 || sport.len() != 2 || dport.len() != 2 {
        return None;
    }
    Some(Entry {
        orig_src: SocketAddrV4::new(src[0], sport[0]),
        orig_dst: SocketAddrV4::new(dst[0], dport[0]),
        reply_src: SocketAddrV4::new(src[1], sport[1]),
        reply_dst: SocketAddrV4::new(dst[1], dport[1]),
        unreplied,
        offloaded,
    })
}

/// The packets counted by the first `counter` of `nft list chain` output.
#[must_use]
pub fn parse_counter(text: &str) -> Option<u64> {
    let rest = &text[text.find("counter packets ")? + "counter packets ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The gateway's UDP conntrack entries now.
pub fn entries(gw: &Netns) -> Result<Vec<Entry>> {
    let out = gw
        .command("conntrack")
        .args(["-L", "-p", "udp"])
        .output()
        .context("running conntrack -L (install the conntrack package)")?;
    if !out.status.success() {
        bail!(
            "conntrack -L failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_conntrack(&String::from_utf8_lossy(&out.stdout)))
}

/// Packets the forward chain's rule counted so far (the slow path).
pub fn slow_path_packets(gw: &Netns) -> Result<u64> {
    let out = gw
        .command("nft")
        .args(["list", "chain", "ip", TABLE, "forward"])
        .output()
        .context("running nft list chain")?;
    if !out.status.success() {
        bail!(
            "nft list chain ip {TABLE} forward failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_counter(&text).with_context(|| format!("no counter in:\n{text}"))
}

/// Answers every unreplied entry from the receiver namespace, in up to
/// [`REPLY_ROUNDS`] rounds; returns how many entries stayed unreplied (0 when all
/// flows are established).
pub fn prime(bench: &Bench) -> Result<usize> {
    let mut left = 0;
    for _ in 0..REPLY_ROUNDS {
        let pending: Vec<Entry> = entries(&bench.gw)?
            .into_iter()
            .filter(|e| e.unreplied && *e.reply_src.ip() == net::RCV_ADDR)
            .collect();
        left = pending.len();
        if pending.is_empty() {
            break;
        }
        bench
            .rcv
            .try_run(|| send_replies(&pending))?
            .context("sending the replies")?;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(left)
}

/// One datagram per entry, from its reply source to its reply destination (in the
/// calling thread's namespace, the receiver's).
fn send_replies(pending: &[Entry]) -> Result<()> {
    let mut sockets: HashMap<SocketAddrV4, UdpSocket> = HashMap::new();
    for e in pending {
        let socket = match sockets.entry(e.reply_src) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(
                UdpSocket::bind(e.reply_src)
                    .with_context(|| format!("binding {} in the receiver", e.reply_src))?,
            ),
        };
        // A full queue loses a reply; the next round sends it again.
        let _ = socket.send_to(&REPLY_PAYLOAD, e.reply_dst);
    }
    Ok(())
}

/// Did offload engage in a window?
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Check {
    /// Flows of the workload.
    pub flows: u32,
    /// Entries conntrack still listed as unreplied after the replies.
    pub unreplied_after_priming: usize,
    /// conntrack entries marked `[OFFLOAD]` after the window.
    pub offloaded: u64,
    /// Packets through the forward chain during the window (not offloaded).
    pub slow_path_packets: u64,
    /// Packets the receiver counted in the window.
    pub forwarded: u64,
}

impl Check {
    /// Share of the forwarded packets that took the forward chain.
    #[must_use]
    pub fn slow_share(&self) -> f64 {
        if self.forwarded == 0 {
            1.0
        } else {
            self.slow_path_packets as f64 / self.forwarded as f64
        }
    }

    /// `Err` with the figures when offload did not engage for every flow.
    pub fn verdict(&self) -> Result<()> {
        if self.offloaded < u64::from(self.flows) || self.slow_share() > MAX_SLOW_SHARE {
            bail!(
                "the flowtable did not take the flows: {} of {} flows offloaded ([OFFLOAD] in \
                 conntrack -L; {} left unreplied after the replies), {} of {} forwarded packets \
                 ({:.1}%, at most {:.0}% allowed) went through the forward chain",
                self.offloaded,
                self.flows,
                self.unreplied_after_priming,
                self.slow_path_packets,
                self.forwarded,
                self.slow_share() * 100.0,
                MAX_SLOW_SHARE * 100.0
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_lines_give_both_tuples_and_flags() {
        let text = "\
udp      17 29 src=10.0.1.2 dst=192.0.2.2 sport=1024 dport=9 [UNREPLIED] src=192.0.2.2 dst=192.0.2.1 sport=9 dport=1024 mark=0 use=1
udp      17 src=10.0.1.3 dst=192.0.2.2 sport=1024 dport=9 src=192.0.2.2 dst=192.0.2.1 sport=9 dport=35000 [OFFLOAD] mark=0 use=2
icmp     1 29 src=10.0.0.2 dst=10.0.0.1 type=8 code=0 id=1 src=10.0.0.1 dst=10.0.0.2 type=0 code=0 id=1 mark=0 use=1
udp      17 29 src=10.0.1.2 dst=192.0.2.2 sport=x dport=9 src=192.0.2.2 dst=192.0.2.1 sport=9 dport=1024
conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.
";
        let e = parse_conntrack(text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].orig_src, "10.0.1.2:1024".parse().unwrap());
        assert_eq!(e[0].orig_dst, "192.0.2.2:9".parse().unwrap());
        assert_eq!(e[0].reply_src, "192.0.2.2:9".parse().unwrap());
        assert_eq!(e[0].reply_dst, "192.0.2.1:1024".parse().unwrap());
        assert!(e[0].unreplied && !e[0].offloaded);
        assert_eq!(e[1].reply_dst, "192.0.2.1:35000".parse().unwrap());
        assert!(!e[1].unreplied && e[1].offloaded);
    }

    #[test]
    fn the_forward_chains_counter_is_read() {
        let text = "table ip natgw_bench {\n\tchain forward {\n\t\ttype filter hook forward \
                    priority filter; policy accept;\n\t\tmeta l4proto { tcp, udp } counter \
                    packets 1234 bytes 56789 flow add @ft\n\t}\n}\n";
        assert_eq!(parse_counter(text), Some(1234));
        assert_eq!(parse_counter("chain forward { }"), None);
    }

    #[test]
    fn the_ruleset_offers_tcp_and_udp_to_a_flowtable_on_both_veths() {
        let r = ruleset();
        assert!(r.contains("flowtable ft {"), "{r}");
        assert!(
            r.contains("hook ingress priority 0; devices = { blan0, bwan0 };"),
            "{r}"
        );
        assert!(
            r.contains("meta l4proto { tcp, udp } counter flow add @ft"),
            "{r}"
        );
        assert!(r.contains("oifname \"bwan0\" masquerade"), "{r}");
    }

    #[test]
    fn the_check_fails_without_offload() {
        let ok = Check {
            flows: 1000,
            unreplied_after_priming: 0,
            offloaded: 1000,
            slow_path_packets: 10,
            forwarded: 1_000_000,
        };
        ok.verdict().unwrap();
        let few = Check {
            offloaded: 999,
            ..ok
        };
        let e = few.verdict().unwrap_err().to_string();
        assert!(e.contains("999 of 1000 flows offloaded"), "{e}");
        let slow = Check {
            slow_path_packets: 20_000,
            ..ok
        };
        let e = slow.verdict().unwrap_err().to_string();
        assert!(e.contains("(2.0%, at most 1% allowed)"), "{e}");
        let none = Check { forwarded: 0, ..ok };
        assert!(none.verdict().is_err());
    }
}
