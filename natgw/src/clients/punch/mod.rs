//! `natgw punch`: reaching a peer behind another NAT directly, introduced by a
//! rendezvous server (`natgw rendezvous`, [`crate::services::rendezvous`]).
//!
//! The protocol and the decisions are in `natgw_proto::punch` (the messages, the
//! rendezvous and the path prober as state machines); here they meet sockets:
//! - [`client`]: a peer's conversation with the rendezvous (register, find the peer).
//! - [`learn`]: how a peer learns its own endpoints: STUN, PCP MAP, PCP PEER.
//! - `udp` / `tcp`: the prober on a UDP socket or on TCP streams opened by
//!   simultaneous open.
//! - [`relay`]: the TURN fallback — one allocation, driven by
//!   `natgw_proto::turn::client`, whose relayed address is announced to the peer and
//!   probed through after `--timeout` (docs/hole-punching.md, "Relay fallback").
//! - [`report`]: what happened, as `natgw punch` prints it.
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
pub mod relay;
pub mod report;
mod tcp;
mod udp;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use self::report::Report;
use natgw_proto::punch::prober::{PathKind, Policy};
use natgw_proto::punch::rendezvous as rendezvous_auth;
use natgw_proto::punch::wire::{MappedBy, PeerId, PeerInfo};

/// Longest wait for the rendezvous to answer a REGISTER.
const REGISTER_WAIT: Duration = Duration::from_secs(5);

/// What `natgw punch` is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The rendezvous (`natgw rendezvous`), spoken to over UDP, or TCP with `tcp`.
    pub rendezvous: SocketAddrV4,
    /// Our name at the rendezvous.
    pub id: PeerId,
    /// The peer to reach.
    pub peer: PeerId,
    /// Punch TCP by simultaneous open instead of UDP.
    pub tcp: bool,
    /// Local address and port everything leaves from; any address and a port the
    /// kernel picks when `None`.
    pub local: Option<SocketAddrV4>,
    /// How long to wait for the peer at the rendezvous, and then again at most for a
    /// direct path to it.
    pub timeout: Duration,
    /// The STUN server to learn our public endpoint from; the rendezvous when `None`.
    pub stun: Option<SocketAddrV4>,
    /// The PCP server (our gateway) to ask for MAP and PEER.
    pub pcp: Option<SocketAddrV4>,
    /// With `pcp`: PEER only, no MAP.
    pub pcp_peer_only: bool,
    /// The kinds of path allowed; all when empty.
    pub only: Vec<PathKind>,
    /// Send nothing to the peer before it reached us (TCP: only accept).
    pub passive: bool,
    /// The TURN server to fall back to (with `turn_credential`); the rendezvous when
    /// `None`.
    pub turn: Option<SocketAddrV4>,
    /// The TURN credential: with it, `natgw punch` allocates a relay and falls back
    /// to it.
    pub turn_credential: Option<relay::Credential>,
    /// Reach the TURN server over TCP.
    pub turn_tcp: bool,
    /// Use the relay at once, probe no direct path.
    pub relay_only: bool,
    /// How long to go on probing direct paths once the relay works.
    pub upgrade_wait: Duration,
    /// Our credential at the rendezvous, when it requires one.
    pub credential: Option<Credential>,
    /// Punching UDP: talk to the rendezvous over TCP instead (for a network that
    /// drops UDP to it); the registration is for UDP punching all the same.
    pub rendezvous_tcp: bool,
}

/// A credential for an authenticating rendezvous (`natgw rendezvous --auth-secret`):
/// username `<unix-expiry>:<id>` and the password derived from it with the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// `<unix-expiry>:<id>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Credential")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// How long a credential computed from a secret is valid.
    pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);

    /// The credential for `id` from a shared `secret`, valid for [`Self::LIFETIME`]
    /// from `unix_now`.
    #[must_use]
    pub fn from_secret(secret: &str, id: &PeerId, unix_now: u64) -> Self {
        let username = rendezvous_auth::username(unix_now + Self::LIFETIME.as_secs(), id);
        let password = rendezvous_auth::password(secret, &username);
        Self { username, password }
    }

    /// A precomputed `USERNAME:PASSWORD` (username `<unix-expiry>:<id>`) for `id`.
    ///
    /// # Errors
    /// Not of that form, or made for another id.
    pub fn from_user(user: &str, id: &PeerId) -> anyhow::Result<Self> {
        let form = "expected <unix-expiry>:<id>:<password>";
        let mut parts = user.splitn(3, ':');
        let (Some(expiry), Some(named), Some(password)) =
            (parts.next(), parts.next(), parts.next())
        else {
            bail!("--auth-user: {form}");
        };
        let username = format!("{expiry}:{named}");
        let Ok((_, named)) = rendezvous_auth::parse_username(&username) else {
            bail!("--auth-user: the username `{username}` is not <unix-expiry>:<id> ({form})");
        };
        if named != *id {
            bail!(
                "--auth-user: the credential is for id `{named}`, but --id is `{id}` (the \
                 rendezvous only accepts a credential made for the id it is used with)"
            );
        }
        if password.is_empty() {
            bail!("--auth-user: the password is empty ({form})");
        }
        if !natgw_proto::punch::wire::Credential::valid_username(&username) {
            bail!("--auth-user: the username `{username}` is too long");
        }
        Ok(Self {
            username,
            password: password.to_owned(),
        })
    }
}

impl Options {
    /// `id` reaching `peer` through `rendezvous` over UDP, with the defaults of
    /// `natgw punch`.
    #[must_use]
    pub const fn new(rendezvous: SocketAddrV4, id: PeerId, peer: PeerId) -> Self {
        Self {
            rendezvous,
            id,
            peer,
            tcp: false,
            local: None,
            timeout: DEFAULT_TIMEOUT,
            stun: None,
            pcp: None,
            pcp_peer_only: false,
            only: Vec::new(),
            passive: false,
            turn: None,
            turn_credential: None,
            turn_tcp: false,
            relay_only: false,
            upgrade_wait: DEFAULT_UPGRADE_WAIT,
            credential: None,
            rendezvous_tcp: false,
        }
    }
}

/// How long `natgw punch` goes on probing direct paths once the relay works.
pub const DEFAULT_UPGRADE_WAIT: Duration = Duration::from_secs(5);

/// How long `natgw punch` waits for the peer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Punches, and returns the report with the outcome: `Ok` once data went both ways on
/// a direct path, or through the TURN relay.
///
/// # Errors
/// Why no direct path was found, or what went wrong on the way (also in the report).
pub async fn punch(options: &Options) -> (Report, anyhow::Result<()>) {
    let mut report = Report::new(options);
    if options.id == options.peer {
        let e = anyhow::anyhow!(
            "--id and --peer are both {}: name the other peer",
            options.id
        );
        report.finish(Instant::now(), Some(&e));
        return (report, Err(e));
    }
    let started = Instant::now();
    let result = if options.tcp {
        tcp::run(options, &mut report).await
    } else {
        udp::run(options, &mut report).await
    };
    report.finish(started, result.as_ref().err());
    (report, result)
}

/// The kinds of path `--only` allows.
fn policy(options: &Options, passive: bool) -> Policy {
    let allowed = if options.only.is_empty() {
        vec![
            PathKind::Mapped,
            PathKind::Public,
            PathKind::Private,
            PathKind::Reflexive,
        ]
    } else {
        options.only.clone()
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

/// The peer's relayed address (a TURN allocation it announced), if any.
fn peer_relayed(peer: &PeerInfo) -> Option<SocketAddrV4> {
    peer.mapped
        .iter()
        .find(|m| m.by == MappedBy::Relay)
        .map(|m| m.endpoint)
}

/// The STUN server to ask: `--stun`, or the rendezvous.
fn stun_server(options: &Options) -> SocketAddrV4 {
    options.stun.unwrap_or(options.rendezvous)
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
    use super::*;
    use natgw_proto::punch::wire::Mapped;

    #[test]
    fn credentials_come_from_a_secret_or_a_checked_user() {
        let a = PeerId::new("alice").unwrap();
        let c = Credential::from_secret("s3cret", &a, 1_000);
        assert_eq!(c.username, "87400:alice");
        assert_eq!(
            c.password,
            rendezvous_auth::password("s3cret", "87400:alice")
        );
        assert!(!format!("{c:?}").contains(&c.password));
        let user = Credential::from_user("87400:alice:pw:with:colons", &a).unwrap();
        assert_eq!(
            (user.username.as_str(), user.password.as_str()),
            ("87400:alice", "pw:with:colons")
        );
        let err = |s: &str| format!("{}", Credential::from_user(s, &a).unwrap_err());
        assert!(
            err("87400:bob:pw").contains("for id `bob`, but --id is `alice`"),
            "{}",
            err("87400:bob:pw")
        );
        assert!(err("87400:alice").contains("expected"));
        assert!(err("87400:alice:").contains("password is empty"));
        assert!(err("soon:alice:pw").contains("not <unix-expiry>:<id>"));
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
