//! The upstream side of a PCP proxy (RFC 7648), without I/O: natgw behind another
//! NAT that speaks PCP (a carrier NAT, a second router) asks it for a MAP mapping for
//! every explicit mapping it holds itself, so a LAN host's port is reachable from the
//! real outside.
//!
//! For a local mapping of protocol `p` whose external endpoint is natgw's
//! `wan:port`, the upstream mapping is MAP `p`, internal port `port` (internal
//! address: natgw's WAN address, the request's source), suggested external port
//! `port`. The [`Upstream`] keeps one [`Entry`] per such mapping, keyed by
//! ([`Protocol`], local external port):
//!
//! - **Retransmission** (RFC 6887 §8.1.1): IRT 3 s, doubling with ±10 % jitter, at most
//!   [`MAX_TRIES`] transmissions (the RFC allows unbounded; a proxy must not flood an
//!   upstream that went away). After the last one the entry waits [`RETRY_LATER`]
//!   and starts again.
//! - **Renewal** at half the granted lifetime (§11.2.1), with the same nonce and the
//!   external endpoint held as suggestion. A mapping whose upstream lifetime runs out
//!   unrenewed is forgotten and requested afresh.
//! - **Lifetime**: each request asks for at least the local mapping's remaining
//!   lifetime, so the upstream one never ends first (the upstream may grant less;
//!   renewal at half of what it grants keeps it up).
//! - **Epoch** (§8.5): the server's epoch time is checked on every response; when it
//!   shows the upstream lost its state, every mapping is requested again at once.
//! - **Deletion**: [`Upstream::release`] sends MAP with lifetime 0 (bounded retries)
//!   and forgets the entry.
//! - **Discovery and absence**: until the server has answered, it is *unknown*; an
//!   ANNOUNCE request (RFC 6887 §14.1) is sent at start, [`DISCOVERY_TRIES`] times.
//!   No answer (or an ICMP port unreachable, [`Upstream::unreachable`]) makes it
//!   *absent*: nothing else is sent, except for one probe every [`ABSENT_RECHECK`].
//!   [`Upstream::awaiting`] is false unless the server is present, so local answers
//!   are never held back for a server that may not be there. An
//!   answer makes it present and every mapping is requested. MAP requests wait for
//!   the server to be present.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::natpmp;
use super::table::Protocol;
use super::wire::{MapRepr, Nonce, OpRepr, Opcode, Packet, Request, Response, ResultCode};

/// Initial retransmission time (RFC 6887 §8.1.1 IRT).
pub const IRT: Duration = Duration::from_secs(3);
/// Maximum retransmission time (RFC 6887 §8.1.1 MRT).
pub const MRT: Duration = Duration::from_secs(1024);
/// Transmissions of one request before the entry gives up for [`RETRY_LATER`].
pub const MAX_TRIES: u32 = 5;
/// Transmissions of the first request before an unknown server is taken as absent.
pub const DISCOVERY_TRIES: u32 = 2;
/// Pause after [`MAX_TRIES`] unanswered transmissions.
pub const RETRY_LATER: Duration = Duration::from_secs(60);
/// How often an absent server is probed.
pub const ABSENT_RECHECK: Duration = Duration::from_secs(300);
/// Transmissions of a deletion.
pub const DELETE_TRIES: u32 = 3;
/// When a discovery whose datagram could not be sent is tried again.
pub const SEND_RETRY: Duration = Duration::from_millis(200);
/// Seconds asked for when the local mapping has less left (no point in asking for
/// seconds only).
pub const MIN_LIFETIME: u32 = 120;

/// What identifies an upstream mapping: the local mapping's protocol and external
/// port (the upstream mapping's internal port).
pub type Key = (Protocol, u16);

/// Whether the upstream server has answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Not yet asked, or asked without an answer so far.
    Unknown,
    /// It answered.
    Present,
    /// It never answered the discovery; probed every [`ABSENT_RECHECK`].
    Absent,
}

/// A datagram to send to the upstream server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddrV4,
    /// The PCP request.
    pub payload: Vec<u8>,
}

/// What happened, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The upstream server answered for the first time (or again after absence).
    Present(SocketAddrV4),
    /// The upstream server did not answer the discovery.
    Absent(SocketAddrV4),
    /// An upstream mapping was granted or its external endpoint changed.
    Mapped {
        /// Which.
        key: Key,
        /// Its upstream external endpoint.
        external: SocketAddrV4,
        /// Granted seconds.
        lifetime: u32,
    },
    /// An upstream request failed with this result code; retried later.
    Refused {
        /// Which.
        key: Key,
        /// Why.
        result: ResultCode,
    },
    /// [`MAX_TRIES`] transmissions went unanswered; retried after [`RETRY_LATER`].
    Unanswered(Key),
    /// The upstream mapping ran out before a renewal was answered.
    Expired(Key),
    /// The server's epoch shows it lost its state; every mapping is requested again.
    EpochLost {
        /// The epoch time it reported.
        epoch: u32,
    },
    /// The upstream mapping was deleted (or its deletion sent [`DELETE_TRIES`] times).
    Released(Key),
}

fn key_text(key: &Key) -> String {
    format!("{} {}", key.0, key.1)
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Present(s) => write!(f, "pcp.upstream.present server={s}"),
            Self::Absent(s) => write!(
                f,
                "pcp.upstream.absent server={s}: no PCP server answered; mappings stay local"
            ),
            Self::Mapped {
                key,
                external,
                lifetime,
            } => write!(
                f,
                "pcp.upstream.mapped local=\"{}\" external={external} lifetime={lifetime}",
                key_text(key)
            ),
            Self::Refused { key, result } => write!(
                f,
                "pcp.upstream.refused local=\"{}\" result={result}",
                key_text(key)
            ),
            Self::Unanswered(key) => write!(
                f,
                "pcp.upstream.unanswered local=\"{}\": retrying in {}s",
                key_text(key),
                RETRY_LATER.as_secs()
            ),
            Self::Expired(key) => write!(f, "pcp.upstream.expired local=\"{}\"", key_text(key)),
            Self::EpochLost { epoch } => write!(
                f,
                "pcp.upstream.epoch_lost epoch={epoch}: the upstream lost its mappings; \
                 requesting them again"
            ),
            Self::Released(key) => write!(f, "pcp.upstream.released local=\"{}\"", key_text(key)),
        }
    }
}

/// Where an entry stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A request is out (new, or renewing): `tries` sent, the next at `next`.
    Asking {
        tries: u32,
        next: Instant,
        rt: Duration,
    },
    /// Nothing out; ask again at `next` (after a failure, or absence).
    Waiting { next: Instant },
    /// Granted; renew at `renew`.
    Mapped { renew: Instant },
}

/// The upstream state of one local mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The nonce of every request for it.
    pub nonce: Nonce,
    /// When the local mapping ends (the upstream lifetime asked covers it).
    pub local_expires: Instant,
    /// The upstream external endpoint and when it ends, once granted.
    pub external: Option<(SocketAddrV4, Instant)>,
    phase: Phase,
}

/// A deletion being sent.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Deletion {
    nonce: Nonce,
    tries: u32,
    next: Instant,
}

/// The upstream PCP client of the proxy.
#[derive(Debug)]
pub struct Upstream {
    server: SocketAddrV4,
    /// natgw's WAN address: the PCP client address of every request.
    client: Ipv4Addr,
    availability: Availability,
    /// The discovery (ANNOUNCE) while the server is not present: transmissions so
    /// far and when the next is due.
    discovery: Option<(u32, Instant)>,
    entries: BTreeMap<Key, Entry>,
    deletions: BTreeMap<Key, Deletion>,
    /// The server's last epoch time and when it was received (§8.5).
    epoch: Option<(u32, Instant)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Nonces: `seed` mixed with the key ([`Upstream::nonce_for`]).
    seed: [u8; 12],
    /// The external address the server told in answer to a NAT-PMP external
    /// address request (RFC 6886 §3.2). PCP has no such request and shows the
    /// address only in a grant; the NAT-PMP one, asked when the server becomes
    /// present (most PCP servers answer NAT-PMP on the same port, RFC 6887 Appendix
    /// A), gives it before any mapping exists, for UPnP's GetExternalIPAddress.
    announced: Option<Ipv4Addr>,
}

/// `base` ± 10 %, the fraction taken from the nonce (a random value per mapping).
fn jitter(base: Duration, nonce: &Nonce, tries: u32) -> Duration {
    let byte = nonce[(tries as usize) % nonce.len()];
    // 0..=255 → -0.1..=+0.1
    let factor = 0.9 + 0.2 * f64::from(byte) / 255.0;
    base.mul_f64(factor)
}

impl Upstream {
    /// A client of the PCP server `server`, sending from natgw's WAN address
    /// `client`; its discovery starts `now`. `seed` should be random and kept across
    /// restarts that keep the mappings: nonces are derived from it.
    #[must_use]
    pub fn new(server: SocketAddrV4, client: Ipv4Addr, seed: [u8; 12], now: Instant) -> Self {
        Self {
            server,
            client,
            availability: Availability::Unknown,
            discovery: Some((0, now)),
            entries: BTreeMap::new(),
            deletions: BTreeMap::new(),
            epoch: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            seed,
            announced: None,
        }
    }

    /// An ICMP error (port or host unreachable) came back for a datagram sent to the
    /// server: a server not yet heard from is absent at once.
    pub fn unreachable(&mut self, now: Instant) {
        if self.availability != Availability::Present {
            self.become_absent(now);
        }
    }

    /// A datagram could not be sent (the socket's buffer was full, the neighbour
    /// not yet resolved): a discovery in progress tries again soon instead of after
    /// its full interval.
    pub fn send_failed(&mut self, now: Instant) {
        if let Some((tries, _)) = self.discovery {
            if self.availability != Availability::Present {
                self.discovery = Some((tries, now + SEND_RETRY));
            }
        }
    }

    fn become_absent(&mut self, now: Instant) {
        if self.availability == Availability::Unknown {
            self.events.push_back(Event::Absent(self.server));
        }
        self.availability = Availability::Absent;
        let probe = now + ABSENT_RECHECK;
        self.discovery = Some((0, probe));
        for e in self.entries.values_mut() {
            e.phase = Phase::Waiting { next: probe };
        }
    }

    /// The upstream server.
    #[must_use]
    pub const fn server(&self) -> SocketAddrV4 {
        self.server
    }

    /// Whether it answered.
    #[must_use]
    pub const fn availability(&self) -> Availability {
        self.availability
    }

    /// natgw's WAN address changed: requests carry the new one, and every mapping is
    /// requested again (the old ones pointed at the old address).
    pub fn set_client(&mut self, client: Ipv4Addr, now: Instant) {
        if client != self.client {
            self.client = client;
            self.restart_all(now);
        }
    }

    /// The upstream entry of a local mapping.
    #[must_use]
    pub fn entry(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The keys of every entry.
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.entries.keys().copied()
    }

    /// The upstream external endpoint of a local mapping, when granted and live.
    #[must_use]
    pub fn external(&self, key: &Key, now: Instant) -> Option<SocketAddrV4> {
        self.entries
            .get(key)?
            .external
            .filter(|(_, until)| *until > now)
            .map(|(e, _)| e)
    }

    /// The upstream's external address: as a live grant shows it, else as the
    /// server told it over NAT-PMP.
    #[must_use]
    pub fn external_address(&self, now: Instant) -> Option<Ipv4Addr> {
        self.entries
            .values()
            .filter_map(|e| e.external)
            .filter(|(_, until)| *until > now)
            .map(|(e, _)| *e.ip())
            .next()
            .or(self.announced)
    }

    /// Asks the server for its external address over NAT-PMP (once; a server that
    /// does not speak it ignores the request or answers UNSUPPORTED_VERSION).
    fn ask_address(&mut self) {
        self.announced = None;
        self.transmits.push_back(Transmit {
            destination: self.server,
            payload: natpmp::Request::ExternalAddress.to_bytes(),
        });
    }

    /// Whether an answer about `key` is worth waiting for: the server is present and
    /// the mapping's first request is out. Never while the server is unknown or
    /// absent, so an upstream that does not answer (or a chain of proxies still
    /// discovering theirs) never delays a local answer.
    #[must_use]
    pub fn awaiting(&self, key: &Key) -> bool {
        self.availability == Availability::Present
            && self
                .entries
                .get(key)
                .is_some_and(|e| e.external.is_none() && matches!(e.phase, Phase::Asking { .. }))
    }

    /// The nonce of the upstream mapping `key`: a function of the seed and the key
    /// alone, so a natgw restarted with the same seed (and the same mappings) renews
    /// its upstream mappings instead of being refused for a new nonce (RFC 6887
    /// §11.3). Stable across builds (splitmix64, not `std`'s hasher); secret as long
    /// as the seed is.
    #[must_use]
    pub fn nonce_for(&self, key: Key) -> Nonce {
        const fn mix(mut z: u64) -> u64 {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3] = self.seed;
        let s0 = u64::from_be_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
        let s1 = u64::from(u32::from_be_bytes([b0, b1, b2, b3]));
        let k = (u64::from(key.0.to_wire()) << 16) | u64::from(key.1);
        let first = mix(s0 ^ mix(k ^ s1));
        let second = mix(first ^ s1 ^ mix(k.rotate_left(32) ^ s0));
        let mut nonce = [0; 12];
        nonce[..8].copy_from_slice(&first.to_be_bytes());
        nonce[8..].copy_from_slice(&second.to_be_bytes()[..4]);
        nonce
    }

    /// The local mapping `key` exists until `local_expires` (created, or renewed):
    /// makes sure its upstream mapping is requested and will outlive it.
    pub fn want(&mut self, key: Key, local_expires: Instant, now: Instant) {
        if let Some(entry) = self.entries.get_mut(&key) {
            let longer = local_expires > entry.local_expires;
            entry.local_expires = local_expires;
            let short = entry
                .external
                .is_some_and(|(_, until)| until < local_expires);
            // The upstream mapping would end first: renew now.
            if longer && short && matches!(entry.phase, Phase::Mapped { .. }) {
                entry.phase = Phase::Mapped { renew: now };
            }
            return;
        }
        self.deletions.remove(&key);
        let nonce = self.nonce_for(key);
        let phase = if self.availability != Availability::Present {
            // Asked for once the server is present.
            Phase::Waiting {
                next: self.discovery.map_or(now, |(_, at)| at.max(now)) + ABSENT_RECHECK,
            }
        } else {
            Phase::Asking {
                tries: 0,
                next: now,
                rt: IRT,
            }
        };
        self.entries.insert(
            key,
            Entry {
                nonce,
                local_expires,
                external: None,
                phase,
            },
        );
    }

    /// The local mapping `key` ended: its upstream mapping is deleted.
    pub fn release(&mut self, key: Key, now: Instant) {
        let Some(entry) = self.entries.remove(&key) else {
            return;
        };
        // Nothing was ever sent, or the server is not there: nothing to delete.
        let sent = entry.external.is_some()
            || matches!(entry.phase, Phase::Asking { tries, .. } if tries > 0);
        if sent && self.availability != Availability::Absent {
            self.deletions.insert(
                key,
                Deletion {
                    nonce: entry.nonce,
                    tries: 0,
                    next: now,
                },
            );
        } else {
            self.events.push_back(Event::Released(key));
        }
    }

    fn lifetime_for(entry: &Entry, now: Instant) -> u32 {
        let left = entry.local_expires.saturating_duration_since(now).as_secs();
        // Round up: the upstream mapping must not end a second before the local one.
        u32::try_from(left + 1)
            .unwrap_or(u32::MAX)
            .max(MIN_LIFETIME)
    }

    fn request(
        &self,
        key: Key,
        nonce: Nonce,
        lifetime: u32,
        suggest: Option<SocketAddrV4>,
    ) -> Transmit {
        let (address, port) =
            suggest.map_or((Ipv4Addr::UNSPECIFIED, key.1), |s| (*s.ip(), s.port()));
        let request = Request {
            lifetime,
            client_address: self.client.to_ipv6_mapped(),
            op: OpRepr::Map(MapRepr {
                nonce,
                protocol: key.0.to_wire(),
                internal_port: key.1,
                external_port: port,
                external_address: address.to_ipv6_mapped(),
            }),
            options: Vec::new(),
        };
        Transmit {
            destination: self.server,
            payload: request.to_bytes(),
        }
    }

    fn announce(&self) -> Transmit {
        let request = Request {
            lifetime: 0,
            client_address: self.client.to_ipv6_mapped(),
            op: OpRepr::Announce,
            options: Vec::new(),
        };
        Transmit {
            destination: self.server,
            payload: request.to_bytes(),
        }
    }

    fn become_present(&mut self, now: Instant) {
        if self.availability == Availability::Present {
            return;
        }
        self.availability = Availability::Present;
        self.discovery = None;
        self.events.push_back(Event::Present(self.server));
        self.ask_address();
        for e in self.entries.values_mut() {
            if matches!(e.phase, Phase::Waiting { .. }) {
                e.phase = Phase::Asking {
                    tries: 0,
                    next: now,
                    rt: IRT,
                };
            }
        }
    }

    /// When [`Upstream::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let entries = self.entries.values().map(|e| {
            let phase = match e.phase {
                Phase::Asking { next, .. }
                | Phase::Waiting { next }
                | Phase::Mapped { renew: next } => next,
            };
            let expiry = e.external.map(|(_, until)| until);
            expiry.map_or(phase, |x| x.min(phase))
        });
        let deletions = self.deletions.values().map(|d| d.next);
        let discovery = self.discovery.map(|(_, at)| at);
        entries.chain(deletions).chain(discovery).min()
    }

    /// Sends what is due at `now`: the discovery, requests, retransmissions,
    /// renewals, deletions.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((tries, at)) = self.discovery {
            if at <= now {
                if tries >= DISCOVERY_TRIES {
                    self.become_absent(now);
                } else {
                    self.transmits.push_back(self.announce());
                    let wait = jitter(IRT * 2u32.pow(tries), &self.seed, tries);
                    self.discovery = Some((tries + 1, now + wait));
                }
            }
        }
        let keys: Vec<Key> = self.entries.keys().copied().collect();
        for key in keys {
            let Some(mut entry) = self.entries.get(&key).cloned() else {
                continue;
            };
            if let Some((_, until)) = entry.external {
                if until <= now {
                    entry.external = None;
                    self.events.push_back(Event::Expired(key));
                    if matches!(entry.phase, Phase::Mapped { .. }) {
                        entry.phase = Phase::Asking {
                            tries: 0,
                            next: now,
                            rt: IRT,
                        };
                    }
                }
            }
            let present = self.availability == Availability::Present;
            match entry.phase {
                Phase::Mapped { renew } if renew <= now => {
                    entry.phase = Phase::Asking {
                        tries: 0,
                        next: now,
                        rt: IRT,
                    };
                }
                Phase::Waiting { next } if next <= now && present => {
                    entry.phase = Phase::Asking {
                        tries: 0,
                        next: now,
                        rt: IRT,
                    };
                }
                Phase::Waiting { next } if next <= now => {
                    // The discovery's outcome decides.
                    entry.phase = Phase::Waiting {
                        next: now + ABSENT_RECHECK,
                    };
                }
                _ => {}
            }
            if let Phase::Asking { tries, next, rt } = entry.phase {
                if next <= now {
                    if tries >= MAX_TRIES {
                        self.events.push_back(Event::Unanswered(key));
                        entry.phase = Phase::Waiting {
                            next: now + RETRY_LATER,
                        };
                    } else {
                        let lifetime = Self::lifetime_for(&entry, now);
                        let suggest = entry.external.map(|(e, _)| e);
                        let t = self.request(key, entry.nonce, lifetime, suggest);
                        self.transmits.push_back(t);
                        let wait = jitter(rt, &entry.nonce, tries);
                        entry.phase = Phase::Asking {
                            tries: tries + 1,
                            next: now + wait,
                            rt: (rt * 2).min(MRT),
                        };
                    }
                }
            }
            self.entries.insert(key, entry);
        }
        let keys: Vec<Key> = self.deletions.keys().copied().collect();
        for key in keys {
            let Some(d) = self.deletions.get(&key).cloned() else {
                continue;
            };
            if d.next > now {
                continue;
            }
            if d.tries >= DELETE_TRIES {
                self.deletions.remove(&key);
                self.events.push_back(Event::Released(key));
                continue;
            }
            let t = self.request(key, d.nonce, 0, None);
            self.transmits.push_back(t);
            let wait = jitter(IRT * 2u32.pow(d.tries), &d.nonce, d.tries);
            self.deletions.insert(
                key,
                Deletion {
                    nonce: d.nonce,
                    tries: d.tries + 1,
                    next: now + wait,
                },
            );
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event to log.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Every mapping is requested again at once (epoch loss, new WAN address, the
    /// server back).
    fn restart_all(&mut self, now: Instant) {
        if self.availability == Availability::Present {
            self.ask_address();
        }
        for entry in self.entries.values_mut() {
            entry.external = None;
            entry.phase = Phase::Asking {
                tries: 0,
                next: now,
                rt: IRT,
            };
        }
    }

    /// Checks the epoch of a response (§8.5); true when the server lost its state.
    fn epoch_lost(&mut self, epoch: u32, now: Instant) -> bool {
        let lost = match self.epoch {
            None => false,
            Some((previous, at)) => {
                if epoch.wrapping_add(1) < previous {
                    true
                } else {
                    let client_delta = now.saturating_duration_since(at).as_secs();
                    let server_delta = u64::from(epoch.saturating_sub(previous));
                    client_delta + 2 < server_delta.saturating_sub(server_delta / 16)
                        || server_delta + 2 < client_delta.saturating_sub(client_delta / 16)
                }
            }
        };
        self.epoch = Some((epoch, now));
        lost
    }

    /// A datagram from `source`. Returns the key of the mapping it granted or
    /// changed, if any (a held-back local answer can go out now).
    pub fn handle_response(
        &mut self,
        now: Instant,
        source: SocketAddrV4,
        datagram: &[u8],
    ) -> Option<Key> {
        if source != self.server {
            return None;
        }
        if datagram.first() == Some(&natpmp::VERSION) {
            let packet = natpmp::Packet::new_checked(datagram).ok()?;
            if let Ok(natpmp::Response::ExternalAddress {
                result: natpmp::ResultCode::Success,
                address,
                ..
            }) = natpmp::Response::parse(&packet)
            {
                self.announced = (!address.is_unspecified()).then_some(address);
            }
            return None;
        }
        let packet = Packet::new_checked(datagram).ok()?;
        let response = Response::parse(&packet).ok()?;
        if response.opcode == Opcode::Announce {
            // The discovery's answer (or an unsolicited ANNOUNCE): the server is there.
            self.become_present(now);
            if self.epoch_lost(response.epoch, now) {
                self.events.push_back(Event::EpochLost {
                    epoch: response.epoch,
                });
                self.restart_all(now);
            }
            return None;
        }
        if response.opcode != Opcode::Map {
            return None;
        }
        let Some(OpRepr::Map(map)) = response.op else {
            return None;
        };
        let protocol = Protocol::from_wire(map.protocol)?;
        let key = (protocol, map.internal_port);
        // Only a response to something asked is believed (§11.4: the nonce).
        let asked = self.entries.get(&key).is_some_and(|e| e.nonce == map.nonce)
            || self
                .deletions
                .get(&key)
                .is_some_and(|d| d.nonce == map.nonce);
        if !asked {
            return None;
        }
        self.become_present(now);
        if self.epoch_lost(response.epoch, now) {
            self.events.push_back(Event::EpochLost {
                epoch: response.epoch,
            });
            self.restart_all(now);
            // This response is about a mapping the server made after its restart,
            // so it is still good — handled below.
        }
        if let Some(d) = self.deletions.get(&key) {
            if d.nonce == map.nonce && response.lifetime == 0 {
                self.deletions.remove(&key);
                self.events.push_back(Event::Released(key));
                return None;
            }
        }
        let entry = self.entries.get_mut(&key)?;
        if response.result != ResultCode::Success {
            // Short-lived errors are retried soon, long-lived ones after the lifetime
            // the server gave them (§7.4), at least RETRY_LATER.
            let wait = Duration::from_secs(u64::from(response.lifetime)).max(RETRY_LATER);
            entry.phase = Phase::Waiting { next: now + wait };
            self.events.push_back(Event::Refused {
                key,
                result: response.result,
            });
            return None;
        }
        let address = map.external_address.to_ipv4_mapped()?;
        if address.is_unspecified() {
            return None;
        }
        let external = SocketAddrV4::new(address, map.external_port);
        let lifetime = response.lifetime;
        let until = now + Duration::from_secs(u64::from(lifetime));
        let changed = entry.external.map(|(e, _)| e) != Some(external);
        entry.external = Some((external, until));
        entry.phase = Phase::Mapped {
            renew: now + Duration::from_secs(u64::from(lifetime / 2)),
        };
        if changed {
            self.events.push_back(Event::Mapped {
                key,
                external,
                lifetime,
            });
        }
        Some(key)
    }
}

#[cfg(test)]
mod tests;
