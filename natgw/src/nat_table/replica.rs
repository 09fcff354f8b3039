//! What replication reads from the active's NAT table and writes into the standby's:
//! the records of [`natgw_proto::ha::wire`] made from and applied to the maps.
//!
//! - [`Source`] (active): the table as last sent, and the difference to the table
//!   now — new and changed mappings, sessions and explicit mappings, and those that
//!   are gone. Refreshes are batched: a mapping or session whose only change is a
//!   newer last packet is sent again once that moved by [`REFRESH_STEP_NS`]. A full
//!   pass over the tables ([`Source::changes`]) every second is also what heals a
//!   lost mapping event (a full ring, a subscriber that fell behind): nothing
//!   depends on every event arriving.
//! - [`Installer`] (standby): validates every record before it touches a map —
//!   protocol, origin and filter known, the internal address inside a LAN prefix,
//!   the external address in the pool, a traffic mapping's port in the port range,
//!   no clash with a different mapping the standby did not get from the active —
//!   and installs it as the data path and the explicit table would have. A full
//!   resync ends with everything it did not name removed.
//!
//! Ages, not timestamps, cross the wire: each side converts with its own
//! `CLOCK_MONOTONIC`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use natgw_common::maps::{FilterMode, MappingEvent, MappingEventKind, Session, SessionKey};
use natgw_common::tcp::TcpState;
use natgw_common::{
    addr_be, FwdKey, Mapping, Origin, RevKey, RevValue, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};
use natgw_proto::ha::wire::{ExplicitRecord, MappingRecord, Record, SessionRecord, NEVER};

use crate::config::PortRange;
use crate::datapath::addresses::AddressPlan;
use crate::datapath::maps::{
    fwd_key_of, ipv4, port, rev_key_of, MapsError, NatTables, NatWrites, PcpFilterTable,
};
use crate::nat_table::explicit::{protocol_named, ExplicitEntry, ExplicitMappings};

/// How far a mapping's or session's last packet must move before it is sent again.
pub const REFRESH_STEP_NS: u64 = 2_000_000_000;

const NS_PER_MS: u64 = 1_000_000;

/// `now_ns - then_ns` in ms for the wire ([`NEVER`] for a time of 0: never).
fn age_ms(now_ns: u64, then_ns: u64) -> u32 {
    if then_ns == 0 {
        return NEVER;
    }
    u32::try_from(now_ns.saturating_sub(then_ns) / NS_PER_MS).unwrap_or(NEVER - 1)
}

/// The local time an age from the wire stands for (0 for [`NEVER`]).
fn time_of(now_ns: u64, age: u32) -> u64 {
    if age == NEVER {
        return 0;
    }
    now_ns.saturating_sub(u64::from(age) * NS_PER_MS).max(1)
}

fn endpoint(addr_be: u32, port_be: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ipv4(addr_be), port(port_be))
}

/// A mapping as last sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sent {
    m: Mapping,
    filter: u8,
    flags_in: u8,
    last_in_ns: u64,
}

impl Sent {
    /// Whether `now` must be sent again: anything but the last packets changed, or
    /// one of them moved by a [`REFRESH_STEP_NS`].
    fn stale(&self, now: &Self) -> bool {
        let strip = |s: &Self| Mapping {
            last_out_ns: 0,
            packets_out: 0,
            bytes_out: 0,
            ..s.m
        };
        strip(self) != strip(now)
            || self.filter != now.filter
            || self.flags_in != now.flags_in
            || now.m.last_out_ns.saturating_sub(self.m.last_out_ns) >= REFRESH_STEP_NS
            || now.last_in_ns.saturating_sub(self.last_in_ns) >= REFRESH_STEP_NS
    }
}

fn session_stale(old: &Session, now: &Session) -> bool {
    old.tcp_state != now.tcp_state
        || old.created_ns != now.created_ns
        || now.last_out_ns.saturating_sub(old.last_out_ns) >= REFRESH_STEP_NS
        || now.last_in_ns.saturating_sub(old.last_in_ns) >= REFRESH_STEP_NS
}

fn mapping_record(fk: &FwdKey, s: &Sent, now_ns: u64) -> Record {
    Record::Mapping(MappingRecord {
        proto: fk.proto,
        origin: s.m.origin,
        filter: s.filter,
        tcp_flags_out: s.m.tcp_flags_out,
        tcp_flags_in: s.flags_in,
        internal: endpoint(fk.addr_be, fk.port_be),
        external: endpoint(s.m.ext_addr_be, s.m.ext_port_be),
        age_ms: age_ms(now_ns, s.m.created_ns).min(NEVER - 1),
        idle_out_ms: age_ms(now_ns, s.m.last_out_ns),
        idle_in_ms: age_ms(now_ns, s.last_in_ns),
    })
}

fn session_record(k: &SessionKey, s: &Session, now_ns: u64) -> Record {
    Record::Session(SessionRecord {
        proto: k.proto,
        tcp_state: s.tcp_state,
        external: endpoint(k.ext_addr_be, k.ext_port_be),
        remote: endpoint(k.remote_addr_be, k.remote_port_be),
        age_ms: age_ms(now_ns, s.created_ns).min(NEVER - 1),
        idle_out_ms: age_ms(now_ns, s.last_out_ns),
        idle_in_ms: age_ms(now_ns, s.last_in_ns),
    })
}

/// The record of an explicit entry (`None`: something unreadable). A static
/// forward's lifetime is [`NEVER`].
fn explicit_record(e: &ExplicitEntry, now_ns: u64) -> Option<Record> {
    let proto = match protocol_named(&e.protocol)? {
        natgw_proto::pcp::table::Protocol::Udp => IPPROTO_UDP,
        natgw_proto::pcp::table::Protocol::Tcp => IPPROTO_TCP,
        _ => return None,
    };
    let origin = match e.origin.as_str() {
        "pcp" => Origin::Pcp,
        "nat-pmp" => Origin::NatPmp,
        "upnp" => Origin::Upnp,
        "static" | "peer-static" => Origin::Static,
        _ => return None,
    };
    let filters = e
        .filters
        .iter()
        .filter_map(|f| {
            let (prefix, port) = f.rsplit_once(':')?;
            let (addr, len) = prefix.split_once('/').unwrap_or((prefix, "32"));
            Some((addr.parse().ok()?, len.parse().ok()?, port.parse().ok()?))
        })
        .collect();
    Some(Record::Explicit(ExplicitRecord {
        proto,
        origin: origin as u8,
        internal: e.internal,
        external: e.external,
        lifetime_s: e.expires_ns.map_or(NEVER, |t| {
            u32::try_from(t.saturating_sub(now_ns) / 1_000_000_000).unwrap_or(NEVER - 1)
        }),
        nonce: e.nonce.unwrap_or_default(),
        client: e.client,
        ports: e.ports.iter().map(|[a, b]| (*a, *b)).collect(),
        filters,
        description: e.description.clone(),
    }))
}

/// The mappings and sessions as one pass read them.
type Tables = (Vec<(FwdKey, Sent)>, Vec<(SessionKey, Session)>);

/// The active's view of what the standby has.
#[derive(Debug, Default)]
pub struct Source {
    mappings: HashMap<FwdKey, Sent>,
    sessions: HashMap<SessionKey, Session>,
    explicit: HashMap<(String, SocketAddrV4), ExplicitEntry>,
}

impl Source {
    /// Forgets what was sent (a new peer, or no longer active).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    fn read<N: NatTables>(nat: &N) -> Result<Tables, MapsError> {
        let rev: HashMap<RevKey, RevValue> = nat.rev_entries()?.into_iter().collect();
        let mappings = nat
            .fwd_entries()?
            .into_iter()
            .map(|(fk, m)| {
                let r = rev
                    .get(&rev_key_of(&fk, &m))
                    .filter(|r| !r.is_held() && r.created_ns == m.created_ns);
                let sent = Sent {
                    m,
                    filter: r.map_or(0, |r| r.filter),
                    flags_in: r.map_or(0, |r| r.tcp_flags_in),
                    last_in_ns: r.map_or(0, |r| r.last_in_ns),
                };
                (fk, sent)
            })
            .collect();
        Ok((mappings, nat.session_entries()?))
    }

    /// The whole table as a full resync's records; remembered as sent.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn full<N: NatTables>(
        &mut self,
        nat: &N,
        explicit: &[ExplicitEntry],
        now_ns: u64,
    ) -> Result<Vec<Record>, MapsError> {
        self.clear();
        self.changes(nat, explicit, now_ns)
    }

    /// What changed since the last call (or event), in the order the standby can
    /// install it: mappings, sessions, explicit records, then what is gone.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn changes<N: NatTables>(
        &mut self,
        nat: &N,
        explicit: &[ExplicitEntry],
        now_ns: u64,
    ) -> Result<Vec<Record>, MapsError> {
        let (mappings, sessions) = Self::read(nat)?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        let live: HashSet<FwdKey> = mappings.iter().map(|(k, _)| *k).collect();
        for (fk, now) in mappings {
            if self.mappings.get(&fk).is_none_or(|old| old.stale(&now)) {
                out.push(mapping_record(&fk, &now, now_ns));
                self.mappings.insert(fk, now);
            }
        }
        let live_sessions: HashSet<SessionKey> = sessions.iter().map(|(k, _)| *k).collect();
        for (k, s) in sessions {
            if self
                .sessions
                .get(&k)
                .is_none_or(|old| session_stale(old, &s))
            {
                out.push(session_record(&k, &s, now_ns));
                self.sessions.insert(k, s);
            }
        }
        let mut live_explicit = HashSet::new();
        for e in explicit {
            let key = (e.protocol.clone(), e.internal);
            live_explicit.insert(key.clone());
            if self.explicit.get(&key) == Some(e) {
                continue;
            }
            if let Some(r) = explicit_record(e, now_ns) {
                out.push(r);
                self.explicit.insert(key, e.clone());
            }
        }
        self.explicit.retain(|(protocol, internal), _| {
            let keep = live_explicit.contains(&(protocol.clone(), *internal));
            if !keep {
                let proto = if protocol == "tcp" {
                    IPPROTO_TCP
                } else {
                    IPPROTO_UDP
                };
                gone.push(Record::ExplicitGone {
                    proto,
                    internal: *internal,
                });
            }
            keep
        });
        self.sessions.retain(|k, _| {
            let keep = live_sessions.contains(k);
            if !keep {
                gone.push(Record::SessionGone {
                    proto: k.proto,
                    external: endpoint(k.ext_addr_be, k.ext_port_be),
                    remote: endpoint(k.remote_addr_be, k.remote_port_be),
                });
            }
            keep
        });
        self.mappings.retain(|fk, s| {
            let keep = live.contains(fk);
            if !keep {
                gone.push(Record::MappingGone {
                    proto: fk.proto,
                    internal: endpoint(fk.addr_be, fk.port_be),
                    external: endpoint(s.m.ext_addr_be, s.m.ext_port_be),
                });
            }
            keep
        });
        out.extend(gone);
        Ok(out)
    }

    /// The record to send at once for a mapping event of the data path or the
    /// controller (`None`: nothing new, or the mapping vanished again meanwhile —
    /// the next [`Self::changes`] sorts it out).
    pub fn event<N: NatTables>(
        &mut self,
        nat: &N,
        e: &MappingEvent,
        now_ns: u64,
    ) -> Option<Record> {
        let fk = FwdKey::new(e.int_addr_be, e.int_port_be, e.proto);
        match MappingEventKind::from_u8(e.kind)? {
            MappingEventKind::Create => {
                let m = nat.fwd(&fk).ok().flatten()?;
                let r = nat
                    .rev(&rev_key_of(&fk, &m))
                    .ok()
                    .flatten()
                    .filter(|r| !r.is_held() && r.created_ns == m.created_ns);
                let now = Sent {
                    m,
                    filter: r.map_or(0, |r| r.filter),
                    flags_in: r.map_or(0, |r| r.tcp_flags_in),
                    last_in_ns: r.map_or(0, |r| r.last_in_ns),
                };
                if self.mappings.get(&fk).is_some_and(|old| !old.stale(&now)) {
                    return None;
                }
                self.mappings.insert(fk, now);
                Some(mapping_record(&fk, &now, now_ns))
            }
            MappingEventKind::Delete | MappingEventKind::Expire => {
                let old = self.mappings.get(&fk)?;
                if old.m.ext_addr_be != e.ext_addr_be || old.m.ext_port_be != e.ext_port_be {
                    return None;
                }
                // Still there (an explicit mapping that ended stays as a traffic
                // one): the next pass sends what it is now.
                if nat.fwd(&fk).ok().flatten().is_some() {
                    return None;
                }
                self.mappings.remove(&fk);
                Some(Record::MappingGone {
                    proto: fk.proto,
                    internal: endpoint(fk.addr_be, fk.port_be),
                    external: endpoint(e.ext_addr_be, e.ext_port_be),
                })
            }
        }
    }
}

/// What a standby's records must lie within.
#[derive(Clone, Copy, Debug)]
pub struct Bounds<'a> {
    /// The LAN prefixes (and the gateway's own addresses, which may hold none).
    pub plan: &'a AddressPlan,
    /// The external addresses.
    pub pool: &'a [Ipv4Addr],
    /// The traffic mappings' port range.
    pub ports: PortRange,
}

/// Why a record was not installed (a label of the `rejected` counters).
pub type Reason = &'static str;

#[derive(Debug, Default)]
struct ResyncSeen {
    mappings: HashSet<FwdKey>,
    sessions: HashSet<SessionKey>,
    explicit: HashSet<(String, SocketAddrV4)>,
}

/// The standby's installer.
#[derive(Debug, Default)]
pub struct Installer {
    /// Mappings installed from the active (they may be replaced by the active's
    /// later view; the standby's own are not).
    ours: HashSet<FwdKey>,
    resync: Option<ResyncSeen>,
    /// Records installed (or applied).
    pub installed: u64,
    /// Records refused, by reason.
    pub rejected: BTreeMap<Reason, u64>,
}

impl Installer {
    /// Records refused, all reasons.
    #[must_use]
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Forgets which mappings came from the active (this natgw became active).
    pub fn clear(&mut self) {
        self.ours.clear();
        self.resync = None;
    }

    /// A full resync starts.
    pub fn begin_resync(&mut self) {
        self.resync = Some(ResyncSeen::default());
    }

    /// A full resync ended: removes the mappings (but this gateway's own static
    /// forwards), sessions and explicit records it did not name; how many mappings
    /// went.
    ///
    /// # Errors
    /// When a map cannot be read or written.
    pub fn end_resync<N: NatTables + NatWrites, F: PcpFilterTable>(
        &mut self,
        nat: &mut N,
        explicit: Option<&mut ExplicitMappings<F>>,
        now_ns: u64,
    ) -> Result<usize, MapsError> {
        let Some(seen) = self.resync.take() else {
            return Ok(0);
        };
        // Static entries stay when a static forward holds them: this gateway's own,
        // or the peer's named by this resync. Without the explicit table (no port
        // mapping service) every static entry stays.
        let mut statics: Option<HashSet<FwdKey>> = None;
        if let Some(explicit) = explicit {
            for e in explicit.entries() {
                if !seen.explicit.contains(&(e.protocol.clone(), e.internal)) {
                    if let Some(p) = protocol_named(&e.protocol) {
                        explicit.forget_peer(nat, p, e.internal, now_ns);
                    }
                }
            }
            statics = Some(
                explicit
                    .entries()
                    .iter()
                    .filter(|e| e.origin == "static" || e.origin == "peer-static")
                    .filter_map(|e| {
                        let p = match protocol_named(&e.protocol)? {
                            natgw_proto::pcp::table::Protocol::Tcp => IPPROTO_TCP,
                            _ => IPPROTO_UDP,
                        };
                        Some(fwd_key(p, e.internal))
                    })
                    .collect(),
            );
        }
        let mut removed = 0;
        for (fk, m) in nat.fwd_entries()? {
            let held_static = m.origin == Origin::Static as u8
                && statics.as_ref().is_none_or(|s| s.contains(&fk));
            if seen.mappings.contains(&fk) || held_static {
                continue;
            }
            if crate::nat_table::explicit::delete_entries(nat, &fk, Some(m.created_ns), now_ns)? {
                removed += 1;
            }
            self.ours.remove(&fk);
        }
        for (k, _) in nat.session_entries()? {
            if !seen.sessions.contains(&k) {
                nat.remove_session(&k)?;
            }
        }
        Ok(removed)
    }

    fn reject(&mut self, reason: Reason) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    /// Validates and installs one record.
    ///
    /// # Errors
    /// When a map cannot be read or written (a refused record is counted, not an
    /// error).
    pub fn apply<N: NatTables + NatWrites, F: PcpFilterTable>(
        &mut self,
        nat: &mut N,
        explicit: Option<&mut ExplicitMappings<F>>,
        bounds: &Bounds<'_>,
        record: &Record,
        now: Instant,
        now_ns: u64,
    ) -> Result<(), MapsError> {
        let outcome = match record {
            Record::Mapping(m) => self.mapping(nat, bounds, m, now_ns),
            Record::Session(s) => Self::session(nat, bounds, s, now_ns).inspect(|r| {
                if r.is_ok() {
                    if let Some(seen) = self.resync.as_mut() {
                        seen.sessions
                            .insert(session_key(s.proto, s.external, s.remote));
                    }
                }
            }),
            Record::MappingGone {
                proto,
                internal,
                external,
            } => {
                let fk = fwd_key(*proto, *internal);
                if let Some(m) = nat.fwd(&fk)? {
                    if endpoint(m.ext_addr_be, m.ext_port_be) == *external {
                        crate::nat_table::explicit::delete_entries(nat, &fk, None, now_ns)?;
                    }
                }
                self.ours.remove(&fk);
                Ok(Ok(()))
            }
            Record::SessionGone {
                proto,
                external,
                remote,
            } => {
                nat.remove_session(&session_key(*proto, *external, *remote))?;
                Ok(Ok(()))
            }
            Record::Explicit(e) => Ok(self.explicit(nat, explicit, bounds, e, now, now_ns)),
            Record::ExplicitGone { proto, internal } => {
                if let Some(explicit) = explicit {
                    let p = if *proto == IPPROTO_TCP {
                        natgw_proto::pcp::table::Protocol::Tcp
                    } else {
                        natgw_proto::pcp::table::Protocol::Udp
                    };
                    explicit.forget_peer(nat, p, *internal, now_ns);
                }
                Ok(Ok(()))
            }
        }?;
        match outcome {
            Ok(()) => self.installed += 1,
            Err(reason) => self.reject(reason),
        }
        Ok(())
    }

    fn check_mapping(bounds: &Bounds<'_>, m: &MappingRecord) -> Result<(), Reason> {
        if ![IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP].contains(&m.proto) {
            return Err("protocol");
        }
        let origin = Origin::from_u8(m.origin).ok_or("origin")?;
        FilterMode::from_u8(m.filter).ok_or("filter")?;
        if bounds.plan.refusal(*m.internal.ip()).is_some() {
            return Err("internal_address");
        }
        if !bounds.pool.contains(m.external.ip()) {
            return Err("external_address");
        }
        let p = m.external.port();
        let in_range = p >= bounds.ports.min && p <= bounds.ports.max;
        if p == 0 || (origin == Origin::Traffic && !in_range) {
            return Err("external_port");
        }
        Ok(())
    }

    fn mapping<N: NatTables + NatWrites>(
        &mut self,
        nat: &mut N,
        bounds: &Bounds<'_>,
        r: &MappingRecord,
        now_ns: u64,
    ) -> Result<Result<(), Reason>, MapsError> {
        if let Err(reason) = Self::check_mapping(bounds, r) {
            return Ok(Err(reason));
        }
        if r.origin == Origin::Static as u8 {
            // A static forward's entries come with its explicit record, which
            // installs them here as the peer's forward (or finds this gateway's own).
            return Ok(Ok(()));
        }
        let fk = fwd_key(r.proto, r.internal);
        let ext_be = addr_be(r.external.ip().octets());
        let ext_port_be = r.external.port().to_be();
        let rk = RevKey::new(ext_be, ext_port_be, r.proto);
        let last_out = time_of(now_ns, r.idle_out_ms);
        let last_in = time_of(now_ns, r.idle_in_ms);
        if let Some(mut m) = nat.fwd(&fk)? {
            if m.ext_addr_be == ext_be && m.ext_port_be == ext_port_be {
                // The same mapping: a refresh.
                m.last_out_ns = m.last_out_ns.max(last_out);
                m.origin = r.origin;
                m.tcp_flags_out |= r.tcp_flags_out;
                nat.replace_fwd(&fk, &m)?;
                if let Some(mut rev) = nat.rev(&rk)?.filter(|v| v.created_ns == m.created_ns) {
                    rev.last_in_ns = rev.last_in_ns.max(last_in);
                    rev.filter = r.filter;
                    rev.tcp_flags_in |= r.tcp_flags_in;
                    nat.replace_rev(&rk, &rev)?;
                }
                self.seen(fk);
                return Ok(Ok(()));
            }
            if !self.ours.contains(&fk) {
                return Ok(Err("clash"));
            }
            crate::nat_table::explicit::delete_entries(nat, &fk, Some(m.created_ns), now_ns)?;
            self.ours.remove(&fk);
        }
        if let Some(rev) = nat.rev(&rk)? {
            if rev.is_held() {
                // The active reused the port after its hold-down; so may we.
                nat.remove_rev(&rk)?;
            } else {
                let other = fwd_key_of(&rk, &rev);
                if !self.ours.contains(&other) {
                    return Ok(Err("clash"));
                }
                crate::nat_table::explicit::delete_entries(nat, &other, None, now_ns)?;
                nat.remove_rev(&rk)?;
                self.ours.remove(&other);
            }
        }
        let created_ns = now_ns
            .saturating_sub(u64::from(r.age_ms) * NS_PER_MS)
            .max(1);
        let rev = RevValue {
            int_addr_be: fk.addr_be,
            int_port_be: fk.port_be,
            tcp_flags_in: r.tcp_flags_in,
            filter: r.filter,
            created_ns,
            last_in_ns: last_in,
            ..RevValue::default()
        };
        if !nat.claim_rev(&rk, &rev)? {
            return Ok(Err("race"));
        }
        let m = Mapping {
            ext_addr_be: ext_be,
            ext_port_be,
            origin: r.origin,
            tcp_flags_out: r.tcp_flags_out,
            created_ns,
            last_out_ns: last_out,
            ..Mapping::default()
        };
        if !nat.insert_fwd(&fk, &m)? {
            nat.remove_rev(&rk)?;
            return Ok(Err("race"));
        }
        self.ours.insert(fk);
        self.seen(fk);
        Ok(Ok(()))
    }

    fn seen(&mut self, fk: FwdKey) {
        if let Some(seen) = self.resync.as_mut() {
            seen.mappings.insert(fk);
        }
    }

    fn session<N: NatTables + NatWrites>(
        nat: &mut N,
        bounds: &Bounds<'_>,
        s: &SessionRecord,
        now_ns: u64,
    ) -> Result<Result<(), Reason>, MapsError> {
        if ![IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP].contains(&s.proto) {
            return Ok(Err("protocol"));
        }
        if !bounds.pool.contains(s.external.ip()) {
            return Ok(Err("external_address"));
        }
        let rk = RevKey::new(
            addr_be(s.external.ip().octets()),
            s.external.port().to_be(),
            s.proto,
        );
        let Some(rev) = nat.rev(&rk)?.filter(|r| !r.is_held()) else {
            return Ok(Err("session_without_mapping"));
        };
        let state = if s.proto == IPPROTO_TCP {
            TcpState::from_u8(s.tcp_state) as u8
        } else {
            0
        };
        let key = session_key(s.proto, s.external, s.remote);
        // Ages are read at different moments on the active and travel with different
        // delays: a session is never taken for older than its mapping here (which
        // would make it look like a previous mapping's, see `belongs_to`).
        let created = now_ns
            .saturating_sub(u64::from(s.age_ms) * NS_PER_MS)
            .max(rev.created_ns)
            .max(1);
        let mut value = Session::new(
            created,
            time_of(now_ns, s.idle_out_ms),
            time_of(now_ns, s.idle_in_ms),
            state,
        );
        if let Some(old) = nat.session(&key)? {
            value.last_out_ns = value.last_out_ns.max(old.last_out_ns);
            value.last_in_ns = value.last_in_ns.max(old.last_in_ns);
        }
        nat.put_session(&key, &value)?;
        Ok(Ok(()))
    }

    fn explicit<N: NatTables + NatWrites, F: PcpFilterTable>(
        &mut self,
        nat: &mut N,
        explicit: Option<&mut ExplicitMappings<F>>,
        bounds: &Bounds<'_>,
        e: &ExplicitRecord,
        now: Instant,
        now_ns: u64,
    ) -> Result<(), Reason> {
        let protocol = match e.proto {
            IPPROTO_UDP => "udp",
            IPPROTO_TCP => "tcp",
            _ => return Err("protocol"),
        };
        let origin = match Origin::from_u8(e.origin) {
            Some(o @ (Origin::Pcp | Origin::NatPmp | Origin::Upnp | Origin::Static)) => o,
            _ => return Err("origin"),
        };
        if bounds.plan.refusal(*e.internal.ip()).is_some() {
            return Err("internal_address");
        }
        if !bounds.pool.contains(e.external.ip()) {
            return Err("external_address");
        }
        if (e.lifetime_s == NEVER) != (origin == Origin::Static) {
            // Only a static forward lives for ever, and it always does.
            return Err("lifetime");
        }
        let Some(explicit) = explicit else {
            return Err("no_port_mapping");
        };
        if origin == Origin::Static {
            if e.external.port() == 0 || !e.filters.is_empty() {
                return Err("external_port");
            }
            let p = if e.proto == IPPROTO_TCP {
                natgw_proto::pcp::table::Protocol::Tcp
            } else {
                natgw_proto::pcp::table::Protocol::Udp
            };
            explicit.replicated_static(nat, p, e.internal, e.external, now_ns)?;
            if let Some(seen) = self.resync.as_mut() {
                seen.explicit.insert((protocol.to_owned(), e.internal));
            }
            return Ok(());
        }
        let entry = ExplicitEntry {
            protocol: protocol.to_owned(),
            internal: e.internal,
            external: e.external,
            origin: origin.name().to_owned(),
            client: e.client,
            expires_ns: Some(now_ns.saturating_add(u64::from(e.lifetime_s) * 1_000_000_000)),
            filters: e
                .filters
                .iter()
                .map(|(a, len, p)| format!("{a}/{len}:{p}"))
                .collect(),
            nonce: Some(e.nonce),
            created_ns: 0,
            ports: e.ports.iter().map(|(a, b)| [*a, *b]).collect(),
            description: e.description.clone(),
        };
        if !explicit.replicated(nat, &entry, now, now_ns) {
            return Err("explicit_without_mapping");
        }
        if let Some(seen) = self.resync.as_mut() {
            seen.explicit.insert((entry.protocol, entry.internal));
        }
        Ok(())
    }
}

fn fwd_key(proto: u8, internal: SocketAddrV4) -> FwdKey {
    FwdKey::new(
        addr_be(internal.ip().octets()),
        internal.port().to_be(),
        proto,
    )
}

fn session_key(proto: u8, external: SocketAddrV4, remote: SocketAddrV4) -> SessionKey {
    SessionKey::new(
        addr_be(external.ip().octets()),
        addr_be(remote.ip().octets()),
        external.port().to_be(),
        remote.port().to_be(),
        proto,
    )
}

#[cfg(test)]
mod tests;
