//! `natgw punch` and `natgw rendezvous`: their arguments and what they print. The
//! work is done by [`crate::clients::punch`] and [`crate::services::rendezvous`].

use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::time::Duration;

use clap::{ArgGroup, Args};
use serde_json::json;

use crate::clients::punch::{self, relay, Credential, Options};
use crate::services::Shutdown;
use crate::services::{rendezvous, turn};
use natgw_proto::prefix::Ipv4Prefix;
use natgw_proto::punch::prober::PathKind;
use natgw_proto::punch::rendezvous::Counters;
use natgw_proto::punch::wire::PeerId;
use natgw_proto::stun::responder::CountersSnapshot;
use natgw_proto::turn::auth::Credentials;

/// The PCP server port (RFC 6887 §19.1).
const PCP_PORT: u16 = natgw_proto::pcp::wire::SERVER_PORT;
/// The STUN port (RFC 8489 §18.6), for `--stun ADDR`.
const STUN_PORT: u16 = natgw_proto::stun::responder::DEFAULT_PORT;

/// Arguments of `natgw punch`.
#[derive(Debug, Args)]
#[command(after_help = PUNCH_AFTER_HELP)]
#[command(group(ArgGroup::new("turn_auth").args(["turn_user", "turn_secret"]).multiple(false).conflicts_with("tcp")))]
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
    /// most for a direct path to it; with a TURN relay, then the relay path is
    /// probed too, for as long again.
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

    /// Speak to the rendezvous over TCP while punching UDP, for a network that drops
    /// UDP to the rendezvous; the registration is for UDP punching and meets UDP
    /// peers. Our public UDP endpoint still comes from STUN over UDP (--stun); without
    /// an answer the endpoint the rendezvous saw on the TCP connection is used.
    #[arg(long, conflicts_with = "tcp")]
    pub rendezvous_tcp: bool,

    /// Authenticate to the rendezvous with a credential computed from this shared
    /// secret (the rendezvous's --auth-secret): username `<unix-expiry>:<--id>`,
    /// valid 24 h, password base64(HMAC-SHA1(secret, username)).
    #[arg(long, value_name = "SECRET", conflicts_with = "auth_user")]
    pub auth_secret: Option<String>,

    /// Authenticate to the rendezvous with a credential computed by someone holding
    /// the secret: `<unix-expiry>:<id>:<password>`, whose id must be --id.
    #[arg(long, value_name = "USERNAME:PASSWORD")]
    pub auth_user: Option<String>,

    /// Print one JSON object — also on failure, with `ok: false` — instead of text.
    #[arg(long)]
    pub json: bool,

    /// TURN server to fall back to (ADDR or ADDR:PORT, port 3478 by default)
    /// [default: the rendezvous, which relays when started with --turn-user or
    /// --turn-secret]. Needs --turn-user or --turn-secret.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_stun_server, requires = "turn_auth")]
    pub turn: Option<SocketAddrV4>,

    /// TURN long-term credential USER:PASSWORD: allocate a relay before registering,
    /// announce its address to the peer, and fall back to it when no direct path
    /// works. The realm is learned from the server.
    #[arg(long, value_name = "USER:PASSWORD", value_parser = parse_turn_user)]
    pub turn_user: Option<(String, String)>,

    /// TURN shared secret (coturn's use-auth-secret): the username is
    /// `<expiry>:<--id>`, valid for an hour, the password
    /// base64(HMAC-SHA1(SECRET, username)). Otherwise as --turn-user.
    #[arg(long, value_name = "SECRET")]
    pub turn_secret: Option<String>,

    /// Reach the TURN server over TCP (the relay to the peer is UDP): for a host
    /// whose firewall drops UDP (with --rendezvous-tcp).
    #[arg(long, requires = "turn_auth")]
    pub turn_tcp: bool,

    /// Use the relay at once and probe no direct path (the peer needs a relay too).
    #[arg(long, requires = "turn_auth")]
    pub relay_only: bool,

    /// Seconds to go on probing direct paths once the relay works; a direct path
    /// verified in that time replaces the relay (`upgraded` in the report). 0: none.
    #[arg(long, value_name = "S", default_value = "5", value_parser = parse_upgrade_wait)]
    pub upgrade_wait: Duration,
}

const PUNCH_AFTER_HELP: &str = "\
Start it on both peers at about the same time (within --timeout); each names itself
and the other. It exits 0 once data went both ways on a direct path (or through the
TURN relay), 1 otherwise with the reason.

With --turn-user or --turn-secret (both peers should have one) it allocates a TURN
relay first and announces its relayed address. When no direct path is verified
within --timeout after the introduction, it also probes the peer's relayed address
through its own allocation; if that works it reports `relayed` (JSON: method
\"relayed\", relay {...}), then goes on probing direct paths for --upgrade-wait and
switches to one that is verified (`upgraded`). The allocation is deleted on exit.

Examples:
    natgw rendezvous --listen 198.18.0.1:7000                       # on a public host
    natgw punch --rendezvous 198.18.0.1:7000 --id alice --peer bob  # behind NAT A
    natgw punch --rendezvous 198.18.0.1:7000 --id bob --peer alice  # behind NAT B
    natgw punch ... --tcp                  # TCP simultaneous open
    natgw punch ... --stun 192.0.2.53      # learn our endpoint from another STUN server
    natgw punch ... --pcp 10.2.0.1 --passive   # open our port with PCP, let them in
    natgw punch ... --pcp 10.2.0.1 --pcp-peer-only --passive   # open it to the peer only
    natgw punch ... --turn-secret s3cr3t   # fall back to the rendezvous's TURN relay
    natgw punch ... --turn 192.0.2.7 --turn-user alice:pw --turn-tcp --relay-only
    natgw punch ... --auth-secret s3cret   # a rendezvous started with --auth-secret s3cret
    natgw punch ... --rendezvous-tcp       # UDP to the rendezvous is blocked";

/// Arguments of `natgw rendezvous`.
#[derive(Debug, Args)]
#[command(after_help = RENDEZVOUS_AFTER_HELP)]
#[command(group(ArgGroup::new("turn_auth").args(["turn_user", "turn_secret"]).multiple(false)))]
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

    /// Require peers to authenticate with a credential made with this shared secret
    /// (coturn's use-auth-secret scheme: username `<unix-expiry>:<peer id>`, password
    /// base64(HMAC-SHA1(secret, username))); repeatable, any of them accepted, for
    /// rotation. Without it anyone can register any id and look up any peer.
    #[arg(long, value_name = "SECRET")]
    pub auth_secret: Vec<String>,

    /// TURN relay: a static user, USER:PASSWORD (repeatable). Turns the relay on.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub turn_user: Vec<String>,

    /// TURN relay: a shared secret for time-limited credentials (coturn's
    /// use-auth-secret; repeatable, any of them accepted). Turns the relay on.
    #[arg(long, value_name = "SECRET")]
    pub turn_secret: Vec<String>,

    /// TURN realm.
    #[arg(
        long,
        value_name = "REALM",
        default_value = "natgw",
        requires = "turn_auth"
    )]
    pub realm: String,

    /// Address relay sockets bind to (default: the --listen address).
    #[arg(long, value_name = "ADDR", requires = "turn_auth")]
    pub relay_address: Option<Ipv4Addr>,

    /// Port range of relay sockets.
    #[arg(
        long,
        value_name = "MIN-MAX",
        default_value = "49152-65535",
        value_parser = parse_port_range,
        requires = "turn_auth"
    )]
    pub relay_ports: RangeInclusive<u16>,

    /// Allocations one TURN user may hold at once (486 beyond).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=100_000),
        requires = "turn_auth"
    )]
    pub turn_quota: u64,

    /// Bytes per second one allocation may relay, both ways together; 0 for no cap.
    #[arg(
        long,
        value_name = "BYTES_PER_SEC",
        default_value_t = 0,
        requires = "turn_auth"
    )]
    pub turn_bandwidth: u64,

    /// A peer prefix (ADDR/LEN or ADDR) allowed even inside the default denied
    /// ranges (private, loopback, link-local, ...) or this host's addresses;
    /// repeatable.
    #[arg(long, value_name = "PREFIX", value_parser = parse_prefix, requires = "turn_auth")]
    pub turn_allow_peer: Vec<Ipv4Prefix>,

    /// No TURN relay (the default when no credentials are given).
    #[arg(long, conflicts_with = "turn_auth")]
    pub no_turn: bool,
}

const RENDEZVOUS_AFTER_HELP: &str = "\
Runs until SIGINT or SIGTERM, then prints what it saw: registrations, lookups,
introductions, the malformed messages it ignored and the STUN Binding requests it
answered (on the same port, UDP and TCP, so peers learn their public endpoint from
it). Without TURN it only introduces peers; their traffic never passes through it, and
unless --auth-secret is given there is no authentication: anyone can register any id
and look up any peer (it says so when it starts). With --auth-secret every REGISTER
and CONNECT must carry a valid credential for its id (`natgw punch --auth-secret` or
--auth-user); the password never travels, requests are signed with it over a nonce
bound to the peer's address.

With --turn-user or --turn-secret it is also a TURN relay (RFC 8656) on the same
port, UDP and TCP: relay sockets on --relay-address in --relay-ports, long-term
credentials in --realm, peers in private, loopback, link-local, multicast ranges
and this host's own addresses refused (403) unless --turn-allow-peer allows them;
the relay address on a relay port is allowed (relay to relay: two clients of this
relay reaching each other, as `natgw punch` peers falling back to it do).

Examples:
    natgw rendezvous --listen 198.18.0.1:7000 --json
    natgw rendezvous --listen 198.18.0.1:7000 --auth-secret new --auth-secret old
    natgw rendezvous --listen 198.18.0.1:3478 --turn-user alice:secret
    natgw rendezvous --listen 198.18.0.1:3478 --turn-secret s3cr3t --relay-ports 50000-50999";

impl PunchArgs {
    fn options(&self) -> anyhow::Result<Options> {
        let credential = match (&self.auth_secret, &self.auth_user) {
            (Some(secret), _) => {
                if secret.is_empty() {
                    anyhow::bail!("--auth-secret: the secret cannot be empty");
                }
                Some(Credential::from_secret(secret, &self.id, unix_now()))
            }
            (None, Some(user)) => Some(Credential::from_user(user, &self.id)?),
            (None, None) => None,
        };
        Ok(Options {
            rendezvous: self.rendezvous,
            id: self.id.clone(),
            peer: self.peer.clone(),
            tcp: self.tcp,
            local: self.local,
            timeout: self.timeout,
            stun: self.stun,
            pcp: self.pcp,
            pcp_peer_only: self.pcp_peer_only,
            only: self.only.clone(),
            passive: self.passive,
            turn: self.turn,
            turn_credential: match (&self.turn_user, &self.turn_secret) {
                (Some((user, password)), _) => Some(relay::Credential::User {
                    user: user.clone(),
                    password: password.clone(),
                }),
                (None, Some(secret)) => Some(relay::Credential::Secret(secret.clone())),
                (None, None) => None,
            },
            turn_tcp: self.turn_tcp,
            relay_only: self.relay_only,
            upgrade_wait: self.upgrade_wait,
            credential,
            rendezvous_tcp: self.rendezvous_tcp,
        })
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `natgw punch`: prints the report, and fails (exit status 1) unless a direct path
/// was verified.
///
/// # Errors
/// Why no direct path was found, or what went wrong on the way.
pub async fn punch(args: &PunchArgs) -> anyhow::Result<()> {
    let (report, result) = punch::punch(&args.options()?).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    result
}

/// `natgw rendezvous`: serves until SIGINT or SIGTERM, then prints its counters.
///
/// # Errors
/// When the sockets cannot be bound or fail.
pub async fn rendezvous(args: &RendezvousArgs) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install()?;
    let turn = turn_options(args)?;
    let relaying = turn.is_some();
    if args.auth_secret.iter().any(String::is_empty) {
        anyhow::bail!("--auth-secret: a secret cannot be empty");
    }
    let authenticating = !args.auth_secret.is_empty();
    let server = rendezvous::Server::bind(rendezvous::Options {
        listen: args.listen,
        lifetime: Duration::from_secs(args.lifetime),
        turn,
        auth_secrets: args.auth_secret.clone(),
    })
    .await?;
    if !authenticating {
        eprintln!("{OPEN_WARNING}");
    }
    let listen = server.local_addr();
    if args.json {
        println!(
            "{}",
            json!({
                "event": "listening",
                "udp": listen.to_string(),
                "tcp": listen.to_string(),
                "stun": true,
                "turn": relaying,
                "auth": authenticating,
            })
        );
    } else {
        println!(
            "natgw rendezvous: listening on {listen} (UDP and TCP, STUN Binding too{}{})",
            if relaying { ", TURN relay" } else { "" },
            if authenticating {
                ", peers authenticated"
            } else {
                ""
            }
        );
    }
    let stopped = server
        .run(async move {
            shutdown.recv().await;
        })
        .await?;
    if args.json {
        println!(
            "{}",
            json!({
                "event": "stopped",
                "uptime_s": stopped.uptime.as_secs_f64(),
                "registrations": stopped.registrations,
                "counters": stopped.counters,
                "stun": stun_json(&stopped.stun),
                "replies_unresolved": stopped.replies.unresolved,
                "replies_send_failed": stopped.replies.send_failed,
                "turn": stopped.turn.as_ref().map(turn_json),
            })
        );
    } else {
        println!(
            "natgw rendezvous: stopped after {:.1} s: {}; STUN: {}; replies held back \
             (unresolved) {}, lost {}",
            stopped.uptime.as_secs_f64(),
            summary(&stopped.counters),
            crate::services::stun::summary(&stopped.stun),
            stopped.replies.unresolved,
            stopped.replies.send_failed
        );
        if let Some(t) = &stopped.turn {
            println!("natgw rendezvous: TURN: {}", turn_summary(t));
        }
    }
    Ok(())
}

/// What `natgw rendezvous` prints (stderr) when it runs without --auth-secret.
pub const OPEN_WARNING: &str = "natgw rendezvous: warning: no --auth-secret: anyone can \
register any id and look up any registered peer (and its addresses); use it only on a \
network you trust";

/// The relay's settings from the flags; `None` without credentials.
fn turn_options(args: &RendezvousArgs) -> anyhow::Result<Option<turn::Options>> {
    let credentials = if !args.turn_user.is_empty() {
        Credentials::from_users(args.turn_user.iter().map(String::as_str))
            .map_err(|e| anyhow::anyhow!("--turn-user: {e}"))?
    } else if !args.turn_secret.is_empty() {
        if args.turn_secret.iter().any(String::is_empty) {
            anyhow::bail!("--turn-secret: a secret cannot be empty");
        }
        Credentials::SharedSecret(args.turn_secret.clone())
    } else {
        return Ok(None);
    };
    let relay_ip = args.relay_address.unwrap_or(*args.listen.ip());
    if relay_ip.is_unspecified() {
        anyhow::bail!("--relay-address is needed when --listen is 0.0.0.0 (a relay address is given to clients)");
    }
    Ok(Some(turn::Options {
        realm: args.realm.clone(),
        credentials,
        relay_ip,
        relay_ports: args.relay_ports.clone(),
        user_quota: Some(usize::try_from(args.turn_quota).unwrap_or(usize::MAX)),
        bandwidth: (args.turn_bandwidth > 0).then_some(args.turn_bandwidth),
        allowed_peers: args.turn_allow_peer.clone(),
    }))
}

/// The relay's counters as JSON.
fn turn_json(t: &turn::Stopped) -> serde_json::Value {
    let dropped: serde_json::Map<String, serde_json::Value> =
        natgw_proto::turn::engine::DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), json!(t.engine.dropped(*r))))
            .collect();
    let mut engine = serde_json::to_value(&t.engine).unwrap_or_default();
    if let Some(o) = engine.as_object_mut() {
        o.insert("dropped".to_owned(), serde_json::Value::Object(dropped));
    }
    json!({ "engine": engine, "service": t.service })
}

/// The relay's counters on one line.
fn turn_summary(t: &turn::Stopped) -> String {
    let c = &t.engine;
    format!(
        "allocations {} active, {} created, {} expired, {} deleted; 401 challenges {}, \
         auth failures {}, stale nonces {}, quota {}, capacity {}, peers denied {}; \
         to peers {} packets {} bytes, to clients {} packets {} bytes; dropped {}; \
         peer send failed {}, client send failed {}",
        c.allocations_active,
        c.allocations_created,
        c.allocations_expired,
        c.allocations_deleted,
        c.auth_challenges,
        c.auth_failures,
        c.stale_nonces,
        c.quota_refusals,
        c.capacity_refusals,
        c.peer_denied,
        c.to_peer_packets,
        c.to_peer_bytes,
        c.to_client_packets,
        c.to_client_bytes,
        c.dropped.iter().sum::<u64>(),
        t.service.peer_send_failed,
        t.service.client_send_failed,
    )
}

/// `MIN-MAX`, 1 ≤ MIN ≤ MAX ≤ 65535.
fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let err = || format!("`{s}` is not a port range MIN-MAX (1 to 65535, MIN at most MAX)");
    let (min, max) = s.split_once('-').ok_or_else(err)?;
    let min: u16 = min.trim().parse().map_err(|_| err())?;
    let max: u16 = max.trim().parse().map_err(|_| err())?;
    if min == 0 || min > max {
        return Err(err());
    }
    Ok(min..=max)
}

/// `ADDR/LEN`, or `ADDR` for one address.
fn parse_prefix(s: &str) -> Result<Ipv4Prefix, String> {
    let text = if s.contains('/') {
        s.to_owned()
    } else {
        format!("{s}/32")
    };
    text.parse()
        .map_err(|_| format!("`{s}` is not an IPv4 prefix ADDR/LEN"))
}

/// The STUN responder's counters as JSON: what it answered, and why it dropped the
/// rest.
fn stun_json(c: &CountersSnapshot) -> serde_json::Value {
    let dropped: serde_json::Map<String, serde_json::Value> = c
        .dropped
        .iter()
        .map(|(reason, n)| (reason.as_str().to_owned(), json!(n)))
        .collect();
    json!({
        "received": c.received,
        "success": c.success,
        "bad_request": c.bad_request,
        "unknown_attribute": c.unknown_attribute,
        "dropped": dropped,
    })
}

/// The rendezvous counters on one line.
fn summary(c: &Counters) -> String {
    format!(
        "received {}, registered {}, refreshed {}, connects {}, peer answers {}, \
         introductions {}, unknown peer {}, not registered {}, expired {}, table full {}, \
         malformed {}, unsupported version {}, unexpected {}; authenticated {}, challenges \
         {}, refused: no credential {}, bad username {}, id mismatch {}, credential \
         expired {}, wrong credential {}; challenged: stale nonce {}, foreign nonce {}",
        c.received,
        c.registered,
        c.refreshed,
        c.connects,
        c.peer_answers,
        c.introductions,
        c.unknown_peer,
        c.not_registered,
        c.expired,
        c.table_full,
        c.malformed,
        c.unsupported_version,
        c.unexpected,
        c.authenticated,
        c.challenges,
        c.auth_missing,
        c.auth_bad_username,
        c.auth_id_mismatch,
        c.auth_expired,
        c.auth_bad_mac,
        c.auth_stale_nonce,
        c.auth_bad_nonce
    )
}

/// `--only KIND`: one of `mapped`, `public`, `private`, `reflexive` (the relay has
/// its own flags).
fn path_kind(s: &str) -> Result<PathKind, String> {
    PathKind::from_name(s)
        .filter(|k| *k != PathKind::Relay)
        .ok_or_else(|| {
            let names: Vec<&str> = PathKind::ALL
                .iter()
                .filter(|k| **k != PathKind::Relay)
                .map(|k| k.name())
                .collect();
            format!(
                "`{s}` is not a kind of path; use one of {}",
                names.join(", ")
            )
        })
}

/// `USER:PASSWORD` with a non-empty user (the password may contain `:`).
fn parse_turn_user(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok((user.to_owned(), password.to_owned())),
        _ => Err("expected USER:PASSWORD with a non-empty user".to_owned()),
    }
}

/// Seconds, 0 to 600.
fn parse_upgrade_wait(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    super::seconds_up_to(s, 600)
}

/// Seconds, above 0 and at most 600.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    super::seconds_up_to(s, 600)
}

/// ADDR or ADDR:PORT, port 5351 by default.
fn parse_pcp_server(s: &str) -> Result<SocketAddrV4, String> {
    super::endpoint(s, PCP_PORT)
}

/// ADDR or ADDR:PORT, port 3478 by default.
fn parse_stun_server(s: &str) -> Result<SocketAddrV4, String> {
    super::endpoint(s, STUN_PORT)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

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
        assert_eq!(p.options().unwrap(), {
            let mut o = Options::new(p.rendezvous, p.id.clone(), p.peer.clone());
            o.timeout = punch::DEFAULT_TIMEOUT;
            o
        });
        // PEER-only means nothing without a gateway to ask.
        let minimal = ["--rendezvous", "1.2.3.4:5", "--id", "a", "--peer", "b"];
        assert!(punch(&[&minimal[..], &["--pcp-peer-only"]].concat()).is_err());
        assert!(punch(&["--rendezvous", "1.2.3.4:5", "--id", "a b", "--peer", "b"]).is_err());
        assert!(punch(&["--rendezvous", "x", "--id", "a", "--peer", "b"]).is_err());
        assert!(punch(&[&minimal[..], &["--timeout", "0"]].concat()).is_err());
    }

    #[test]
    fn punch_turn_flags_parse() {
        let minimal = ["--rendezvous", "1.2.3.4:5", "--id", "alice", "--peer", "b"];
        let with = |extra: &[&str]| punch(&[&minimal[..], extra].concat());
        let o = with(&["--turn-user", "u:p:w"]).unwrap().options().unwrap();
        assert_eq!(o.turn, None, "the rendezvous is the TURN server");
        assert_eq!(
            o.turn_credential,
            Some(relay::Credential::User {
                user: "u".into(),
                password: "p:w".into()
            })
        );
        assert_eq!(o.upgrade_wait, Duration::from_secs(5));
        assert!(!o.turn_tcp && !o.relay_only);
        let o = with(&[
            "--turn",
            "192.0.2.7",
            "--turn-secret",
            "s",
            "--turn-tcp",
            "--relay-only",
            "--upgrade-wait",
            "0",
        ])
        .unwrap()
        .options()
        .unwrap();
        assert_eq!(o.turn, Some("192.0.2.7:3478".parse().unwrap()));
        assert_eq!(
            o.turn_credential,
            Some(relay::Credential::Secret("s".into()))
        );
        assert!(o.turn_tcp && o.relay_only && o.upgrade_wait.is_zero());
        // The relay flags need a credential; one kind of credential; not with --tcp;
        // `relay` is not an --only kind.
        for bad in [
            &["--turn", "192.0.2.7"][..],
            &["--turn-tcp"],
            &["--relay-only"],
            &["--turn-user", "u:p", "--turn-secret", "s"],
            &["--turn-user", "u:p", "--tcp"],
            &["--turn-user", ":p"],
            &["--turn-user", "u:p", "--upgrade-wait", "-1"],
            &["--only", "relay"],
        ] {
            assert!(with(bad).is_err(), "{bad:?}");
        }
        // The shared-secret username is "<expiry>:<id>".
        let (user, password) = relay::Credential::Secret("s".into())
            .username_password("alice", std::time::UNIX_EPOCH + Duration::from_secs(1000));
        assert_eq!(user, "4600:alice");
        assert_eq!(
            password,
            natgw_proto::turn::auth::rest_password("s", "4600:alice")
        );
    }

    #[test]
    fn auth_and_rendezvous_tcp_flags_parse() {
        let minimal = ["--rendezvous", "1.2.3.4:5", "--id", "alice", "--peer", "b"];
        let with = |extra: &[&str]| punch(&[&minimal[..], extra].concat());
        let o = with(&["--auth-secret", "s3cret", "--rendezvous-tcp"])
            .unwrap()
            .options()
            .unwrap();
        assert!(o.rendezvous_tcp && !o.tcp);
        let c = o.credential.unwrap();
        let (expiry, id) = c.username.split_once(':').unwrap();
        assert_eq!(id, "alice");
        let expiry: u64 = expiry.parse().unwrap();
        assert!(expiry > unix_now() + 23 * 3600 && expiry <= unix_now() + 24 * 3600);
        assert_eq!(
            c.password,
            natgw_proto::punch::rendezvous::password("s3cret", &c.username)
        );
        let o = with(&["--auth-user", "99:alice:pw"])
            .unwrap()
            .options()
            .unwrap();
        assert_eq!(o.credential.unwrap().username, "99:alice");
        // The id must be ours; the two are exclusive; --rendezvous-tcp is for UDP.
        let e = with(&["--auth-user", "99:bob:pw"])
            .unwrap()
            .options()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("the credential is for id `bob`, but --id is `alice`"),
            "{e}"
        );
        assert!(with(&["--auth-secret", ""]).unwrap().options().is_err());
        assert!(with(&["--auth-secret", "s", "--auth-user", "99:alice:pw"]).is_err());
        assert!(with(&["--rendezvous-tcp", "--tcp"]).is_err());
        // The rendezvous takes several secrets.
        let cli = Cli::try_parse_from([
            "natgw",
            "rendezvous",
            "--listen",
            "0.0.0.0:7000",
            "--auth-secret",
            "new",
            "--auth-secret",
            "old",
        ])
        .unwrap();
        let Command::Rendezvous(r) = cli.command else {
            panic!("not rendezvous");
        };
        assert_eq!(r.auth_secret, ["new", "old"]);
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
        assert!(r.turn_user.is_empty() && r.turn_secret.is_empty());
    }

    #[test]
    fn turn_flags_parse() {
        let base = ["natgw", "rendezvous", "--listen", "198.18.0.1:3478"];
        let parse = |extra: &[&str]| Cli::try_parse_from([&base[..], extra].concat());
        let cli = parse(&[
            "--turn-user",
            "alice:a:b",
            "--turn-user",
            "bob:pw",
            "--realm",
            "lab",
            "--relay-address",
            "198.18.0.2",
            "--relay-ports",
            "50000-50009",
            "--turn-quota",
            "2",
            "--turn-bandwidth",
            "1000",
            "--turn-allow-peer",
            "10.0.0.0/8",
            "--turn-allow-peer",
            "127.0.0.1",
        ])
        .unwrap();
        let Command::Rendezvous(r) = cli.command else {
            panic!("not rendezvous");
        };
        let o = turn_options(&r).unwrap().unwrap();
        assert_eq!(o.realm, "lab");
        assert_eq!(o.relay_ip, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(o.relay_ports, 50_000..=50_009);
        assert_eq!(o.user_quota, Some(2));
        assert_eq!(o.bandwidth, Some(1000));
        assert_eq!(o.allowed_peers.len(), 2);
        assert_eq!(format!("{:?}", o.credentials), "Static(2 users)");
        // Defaults: relay on the listen address, the whole dynamic range, no cap.
        let Command::Rendezvous(r) = parse(&["--turn-secret", "s"]).unwrap().command else {
            panic!("not rendezvous");
        };
        let o = turn_options(&r).unwrap().unwrap();
        assert_eq!(o.relay_ip, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(o.relay_ports, 49_152..=65_535);
        assert_eq!(o.bandwidth, None);
        assert_eq!(o.realm, "natgw");
        // No credentials: no relay.
        let Command::Rendezvous(r) = parse(&[]).unwrap().command else {
            panic!("not rendezvous");
        };
        assert!(turn_options(&r).unwrap().is_none());
        // Usage errors.
        for bad in [
            &["--turn-user", "a:b", "--turn-secret", "s"][..],
            &["--turn-user", "a:b", "--no-turn"],
            &["--realm", "x"],
            &["--turn-user", "a:b", "--relay-ports", "5-4"],
            &["--turn-user", "a:b", "--relay-ports", "0-4"],
            &["--turn-user", "a:b", "--relay-ports", "4"],
            &["--turn-user", "a:b", "--turn-quota", "0"],
            &["--turn-user", "a:b", "--turn-allow-peer", "10.0.0.0/33"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let Command::Rendezvous(r) = parse(&["--turn-user", "nocolon"]).unwrap().command else {
            panic!("not rendezvous");
        };
        assert!(turn_options(&r).is_err());
        let any = Cli::try_parse_from([
            "natgw",
            "rendezvous",
            "--listen",
            "0.0.0.0:1",
            "--turn-user",
            "a:b",
        ])
        .unwrap();
        let Command::Rendezvous(r) = any.command else {
            panic!("not rendezvous");
        };
        assert!(turn_options(&r).is_err());
    }
}
