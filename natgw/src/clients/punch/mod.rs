//! Hole punching: two peers behind NATs reach each other directly, introduced by a
//! rendezvous server.
//!
//! - [`wire`]: the protocol's messages (peer ↔ rendezvous, peer ↔ peer).
//! - [`rendezvous`]: the rendezvous engine, a pure state machine.
//! - [`server`]: `natgw rendezvous`, the engine on a UDP socket and a TCP listener,
//!   which also answer STUN Binding requests.
//! - [`demux`]: telling STUN from punch messages on one port.
//! - [`client`]: a peer's conversation with the rendezvous (register, find the peer).
//! - [`learn`]: how a peer learns its own endpoints: STUN, PCP MAP, PCP PEER.
//! - [`prober`]: path checks between the peers, a pure state machine.
//! - `udp` / `tcp`: `natgw punch`, the prober on a UDP socket or on TCP streams opened
//!   by simultaneous open.
//! - [`report`]: what `natgw punch` prints.
//!
//! How a punch goes: the peer binds one local port and learns its public endpoint with
//! a STUN Binding request from that port (to the rendezvous itself unless `--stun`
//! names another server; over TCP on the connection to the rendezvous); with `--pcp`
//! it also asks its gateway for a PCP MAP. It registers that endpoint, and the
//! rendezvous answers with what it saw — the source of the REGISTER, the NAT's mapping
//! again, the fallback when STUN did not answer. Then it asks the rendezvous for the
//! other peer until it is there. The rendezvous answers with the peer's public,
//! private and learned endpoints and at the same moment introduces us to the peer.
//! With `--pcp` the peer now sends PCP PEER for each of the other's public endpoints,
//! so its gateway holds the mapping and the filter entry towards them before the
//! first probe. Both send at once: each peer's first packet to the other creates the
//! state in its own NAT that lets the other's in — the hole. Everything leaves from
//! the port used for the registration, because that is the mapping the rendezvous and
//! the STUN server saw.

pub mod client;
pub mod learn;
pub mod report;
mod tcp;
mod udp;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;

use self::report::Report;
use natgw_proto::punch::prober::{PathKind, Policy};
use natgw_proto::punch::wire::{MappedBy, PeerId, PeerInfo};

/// The PCP server port (RFC 6887 §19.1).
const PCP_PORT: u16 = 5351;
/// The STUN port (RFC 8489 §18.6), for `--stun ADDR`.
const STUN_PORT: u16 = natgw_proto::stun::responder::DEFAULT_PORT;
/// Longest wait for the rendezvous to answer a REGISTER.
const REGISTER_WAIT: Duration = Duration::from_secs(5);

/// Arguments of `natgw punch`.
#[derive(Debug, Args)]
#[command(after_help = PUNCH_AFTER_HELP)]
pub struct PunchArgs {
    /// The rendezvous (`natgw rendezvous`), ADDR:PORT, spoken to over UDP (or TCP with
    /// --tcp).
    #[arg(long, value_name = "ADDR:PORT")]
    pub rendezvous: SocketAddrV4,

    /// Our name at the rendezvous: 1 to 32 characters of A-Z a-z 0-9 . _ -
    #[arg(long, value_name = "NAME")]
    pub id: PeerId,

    /// The peer to reach (its --id).
    #[arg(long, value_name = "NAME")]
    pub peer: PeerId,

    /// Punch TCP by simultaneous open instead of UDP.
    #[arg(long)]
    pub tcp: bool,

    /// Local address and port everything leaves from [default: any address, a port the
    /// kernel picks].
    #[arg(long, value_name = "ADDR:PORT")]
    pub local: Option<SocketAddrV4>,

    /// Seconds to wait for the peer to show up at the rendezvous, and then again at
    /// most for a direct path to it.
    #[arg(long, value_name = "S", default_value = "10", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Learn our public endpoint from this STUN server (ADDR or ADDR:PORT, port 3478
    /// by default), asked from the port we punch from (TCP: over a connection from
    /// it) [default: the rendezvous, which answers STUN on its port]. Without an
    /// answer within 2 s the endpoint the rendezvous saw is used, with a note.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_stun_server)]
    pub stun: Option<SocketAddrV4>,

    /// Use PCP with this gateway (ADDR or ADDR:PORT, port 5351 by default, normally
    /// the gateway's LAN address): a PCP MAP of our port, offered to the peer so it
    /// can come in without punching, and once the peer's endpoints are known a PCP
    /// PEER towards each, so the gateway lets the peer in before our first probe.
    /// Both live 120 s.
    #[arg(long, value_name = "GATEWAY", value_parser = parse_pcp_server)]
    pub pcp: Option<SocketAddrV4>,

    /// With --pcp: no MAP, only PEER — open our NAT to the peer alone instead of
    /// opening our port to everyone.
    #[arg(long, requires = "pcp")]
    pub pcp_peer_only: bool,

    /// Only use these kinds of path (repeat, or separate with commas): `public` (the
    /// peer's public endpoint), `private` (its LAN endpoints), `mapped` (its PCP
    /// mapping), `reflexive` (an endpoint its probes came from that nobody announced)
    /// [default: all].
    #[arg(long, value_delimiter = ',', value_name = "KIND", value_parser = path_kind)]
    pub only: Vec<PathKind>,

    /// Send nothing to the peer before it has reached us (TCP: only accept), for a
    /// peer whose port is open anyway (PCP mapping, port forward).
    #[arg(long)]
    pub passive: bool,

    /// Print one JSON object — also on failure, with `ok: false` — instead of text.
    #[arg(long)]
    pub json: bool,
}

const PUNCH_AFTER_HELP: &str = "\
Start it on both peers at about the same time (within --timeout); each names itself
and the other. It exits 0 once data went both ways on a direct path, 1 otherwise
with the reason.

Examples:
    natgw rendezvous --listen 198.18.0.1:7000                       # on a public host
    natgw punch --rendezvous 198.18.0.1:7000 --id alice --peer bob  # behind NAT A
    natgw punch --rendezvous 198.18.0.1:7000 --id bob --peer alice  # behind NAT B
    natgw punch ... --tcp                  # TCP simultaneous open
    natgw punch ... --stun 192.0.2.53      # learn our endpoint from another STUN server
    natgw punch ... --pcp 10.2.0.1 --passive   # open our port with PCP, let them in
    natgw punch ... --pcp 10.2.0.1 --pcp-peer-only --passive   # open it to the peer only";

/// Arguments of `natgw rendezvous`.
#[derive(Debug, Args)]
#[command(after_help = RENDEZVOUS_AFTER_HELP)]
pub struct RendezvousArgs {
    /// Address and port to listen on, for UDP and TCP alike.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddrV4,

    /// Seconds a registration lives after its peer's last message.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub lifetime: u64,

    /// Print JSON lines (`listening`, then `stopped` with the counters) instead of
    /// text.
    #[arg(long)]
    pub json: bool,
}

const RENDEZVOUS_AFTER_HELP: &str = "\
Runs until SIGINT or SIGTERM, then prints what it saw: registrations, lookups,
introductions, the malformed messages it ignored and the STUN Binding requests it
answered (on the same port, UDP and TCP, so peers learn their public endpoint from
it). It only introduces peers; their traffic never passes through it. There is no
authentication: use it in a lab or on a network you trust.

Example:
    natgw rendezvous --listen 198.18.0.1:7000 --json";

/// `natgw punch`: prints the report, and fails (exit status 1) unless a direct path
/// was verified.
///
/// # Errors
/// Why no direct path was found, or what went wrong on the way.
pub async fn punch(args: &PunchArgs) -> anyhow::Result<()> {
    if args.id == args.peer {
        bail!("--id and --peer are both {}: name the other peer", args.id);
    }
    let mut report = Report::new(args);
    let started = Instant::now();
    let result = if args.tcp {
        tcp::run(args, &mut report).await
    } else {
        udp::run(args, &mut report).await
    };
    report.finish(started, result.as_ref().err());
    report.print(args.json)?;
    result
}

/// `natgw rendezvous`.
///
/// # Errors
/// When the sockets cannot be bound or fail.
pub async fn rendezvous(args: &RendezvousArgs) -> anyhow::Result<()> {
    crate::services::rendezvous::serve(args).await
}

/// Seconds, above 0 and at most 600.
/// `--only KIND`: one of `mapped`, `public`, `private`, `reflexive`.
fn path_kind(s: &str) -> Result<PathKind, String> {
    PathKind::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = PathKind::ALL.iter().map(|k| k.name()).collect();
        format!(
            "`{s}` is not a kind of path; use one of {}",
            names.join(", ")
        )
    })
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 600.0) {
        return Err(format!("{s} s is outside 0 (exclusive) to 600 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// ADDR or ADDR:PORT, port 5351 by default.
fn parse_pcp_server(s: &str) -> Result<SocketAddrV4, String> {
    parse_server(s, PCP_PORT)
}

/// ADDR or ADDR:PORT, port 3478 by default.
fn parse_stun_server(s: &str) -> Result<SocketAddrV4, String> {
    parse_server(s, STUN_PORT)
}

fn parse_server(s: &str, default_port: u16) -> Result<SocketAddrV4, String> {
    s.parse::<SocketAddrV4>()
        .or_else(|_| {
            s.parse::<Ipv4Addr>()
                .map(|ip| SocketAddrV4::new(ip, default_port))
        })
        .map_err(|_| format!("`{s}` is not an IPv4 address or ADDRESS:PORT"))
}

/// The kinds of path `--only` allows.
fn policy(args: &PunchArgs, passive: bool) -> Policy {
    let allowed = if args.only.is_empty() {
        vec![
            PathKind::Mapped,
            PathKind::Public,
            PathKind::Private,
            PathKind::Reflexive,
        ]
    } else {
        args.only.clone()
    };
    Policy { allowed, passive }
}

/// The peer's announced endpoints as paths, most specific first, each endpoint once:
/// a PCP mapping, the public endpoint (as the rendezvous saw it, then as the peer's
/// STUN server saw it), the private ones.
fn candidates(peer: &PeerInfo) -> Vec<(PathKind, SocketAddrV4)> {
    let learned = |by| {
        peer.mapped
            .iter()
            .filter(move |m| m.by == by)
            .map(|m| m.endpoint)
    };
    let all = learned(MappedBy::Pcp)
        .map(|e| (PathKind::Mapped, e))
        .chain(std::iter::once((PathKind::Public, peer.public)))
        .chain(learned(MappedBy::Stun).map(|e| (PathKind::Public, e)))
        .chain(peer.private.iter().map(|&e| (PathKind::Private, e)));
    let mut paths: Vec<(PathKind, SocketAddrV4)> = Vec::new();
    for (kind, endpoint) in all {
        if !paths.iter().any(|&(_, e)| e == endpoint) {
            paths.push((kind, endpoint));
        }
    }
    paths
}

/// The STUN server to ask: `--stun`, or the rendezvous.
fn stun_server(args: &PunchArgs) -> SocketAddrV4 {
    args.stun.unwrap_or(args.rendezvous)
}

/// One random PCP nonce for every PEER of a run (natgw ties the nonce to the internal
/// endpoint's mapping); from the kernel, or std's random keys if that fails.
fn pcp_nonce() -> natgw_proto::pcp::wire::Nonce {
    natgw_proto::util::rng::random_array()
}

/// Our private endpoint: the bound address, or the source address of the route to
/// the rendezvous when bound to any address.
fn private_endpoint(bound: SocketAddr, rendezvous: SocketAddrV4) -> anyhow::Result<SocketAddrV4> {
    let SocketAddr::V4(bound) = bound else {
        bail!("the socket has IPv6 address {bound}");
    };
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .context("opening a socket to find our address")?;
    probe
        .connect(rendezvous)
        .with_context(|| format!("finding a route to the rendezvous {rendezvous}"))?;
    match probe.local_addr()? {
        SocketAddr::V4(a) => Ok(SocketAddrV4::new(*a.ip(), bound.port())),
        SocketAddr::V6(a) => bail!("the route to {rendezvous} has IPv6 source {a}"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};
    use natgw_proto::punch::wire::Mapped;

    fn punch(args: &[&str]) -> Result<PunchArgs, clap::Error> {
        let cli = Cli::try_parse_from(["natgw", "punch"].iter().chain(args))?;
        match cli.command {
            Command::Punch(p) => Ok(p),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn punch_flags_parse() {
        let p = punch(&[
            "--rendezvous",
            "198.18.0.1:7000",
            "--id",
            "a1",
            "--peer",
            "b1",
            "--tcp",
            "--local",
            "10.1.0.2:4000",
            "--timeout",
            "2.5",
            "--pcp",
            "10.1.0.1",
            "--pcp-peer-only",
            "--stun",
            "192.0.2.53",
            "--only",
            "public,private",
            "--only",
            "mapped",
            "--passive",
            "--json",
        ])
        .unwrap();
        assert_eq!(p.rendezvous, "198.18.0.1:7000".parse().unwrap());
        assert_eq!(p.id.to_string(), "a1");
        assert!(p.tcp && p.passive && p.json);
        assert_eq!(p.timeout, Duration::from_millis(2500));
        assert_eq!(p.pcp, Some("10.1.0.1:5351".parse().unwrap()));
        assert!(p.pcp_peer_only);
        assert_eq!(p.stun, Some("192.0.2.53:3478".parse().unwrap()));
        assert_eq!(
            p.only,
            [PathKind::Public, PathKind::Private, PathKind::Mapped]
        );
        let p = punch(&["--rendezvous", "1.2.3.4:5", "--id", "a", "--peer", "b"]).unwrap();
        assert_eq!(p.timeout, Duration::from_secs(10));
        assert!(p.only.is_empty() && !p.tcp && p.stun.is_none() && p.pcp.is_none());
        assert_eq!(stun_server(&p), p.rendezvous, "the rendezvous answers STUN");
        // PEER-only means nothing without a gateway to ask.
        let minimal = ["--rendezvous", "1.2.3.4:5", "--id", "a", "--peer", "b"];
        assert!(punch(&[&minimal[..], &["--pcp-peer-only"]].concat()).is_err());
        assert!(punch(&["--rendezvous", "1.2.3.4:5", "--id", "a b", "--peer", "b"]).is_err());
        assert!(punch(&["--rendezvous", "x", "--id", "a", "--peer", "b"]).is_err());
        assert!(punch(&[&minimal[..], &["--timeout", "0"]].concat()).is_err());
    }

    #[test]
    fn rendezvous_flags_parse() {
        let cli = Cli::try_parse_from([
            "natgw",
            "rendezvous",
            "--listen",
            "0.0.0.0:7000",
            "--lifetime",
            "60",
            "--json",
        ])
        .unwrap();
        let Command::Rendezvous(r) = cli.command else {
            panic!("not rendezvous");
        };
        assert_eq!(r.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(r.lifetime, 60);
        assert!(r.json);
        assert!(Cli::try_parse_from(["natgw", "rendezvous", "--listen", "x:1"]).is_err());
    }

    #[test]
    fn candidates_put_the_pcp_mapping_first_and_list_each_endpoint_once() {
        let stun = |port| Mapped {
            by: MappedBy::Stun,
            endpoint: SocketAddrV4::new([198, 51, 100, 1].into(), port),
        };
        let mut peer = PeerInfo {
            introduction: false,
            session: [0; 8],
            id: PeerId::new("b").unwrap(),
            public: "198.51.100.1:4000".parse().unwrap(),
            private: vec!["10.2.0.2:4000".parse().unwrap()],
            mapped: vec![
                stun(4000),
                Mapped {
                    by: MappedBy::Pcp,
                    endpoint: "198.51.100.1:4001".parse().unwrap(),
                },
            ],
        };
        let kinds: Vec<PathKind> = candidates(&peer).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds,
            [PathKind::Mapped, PathKind::Public, PathKind::Private]
        );
        // A STUN answer that differs from the rendezvous's observation is another
        // public endpoint to try.
        peer.mapped = vec![stun(5555)];
        let paths = candidates(&peer);
        assert_eq!(
            paths[..2],
            [
                (PathKind::Public, peer.public),
                (PathKind::Public, stun(5555).endpoint)
            ]
        );
    }
}
