//! SSDP (UDA 1.1 §1): the M-SEARCH codec, the messages a device sends (search
//! responses, NOTIFY `ssdp:alive` and `ssdp:byebye`), and the [`Responder`] engine.
//!
//! The responder is sans IO: [`Responder::handle`] takes a datagram that arrived on a
//! LAN interface, where it came from, the LAN address it arrived on and whether it
//! was sent to the multicast group, and schedules the answers — each at a random
//! moment within the search's MX, as UDA 1.1 §1.3.3 asks, so a LAN full of devices
//! does not answer at once; [`Responder::poll_transmit`] hands out what is due and
//! [`Responder::poll_timeout`] says when the next is. It also schedules the periodic
//! `ssdp:alive` advertisements (three at start, then every third of `max-age`, well
//! within the half UDA asks for), and [`Responder::byebye`] gives the farewell.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::{service_urn, Device, DeviceKind, Uuid, Version, URN_PREFIX};
use crate::util::bucket::{RateLimiter, Verdict, WhenFull};

/// The SSDP multicast group and port.
pub const MULTICAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
/// The longest M-SEARCH read; longer datagrams are refused unparsed.
pub const MAX_SEARCH_LEN: usize = 2048;
/// Header fields an M-SEARCH may carry.
pub const MAX_SEARCH_HEADERS: usize = 24;
/// The largest MX honoured; UDA 1.1 §1.3.2 says larger values count as 5.
pub const MX_MAX: u32 = 5;
/// Advertisement rounds at start (UDP is unreliable; UDA 1.1 §1.2.2 suggests a few).
pub const STARTUP_ROUNDS: u32 = 3;
/// Time between the start's rounds.
pub const STARTUP_INTERVAL: Duration = Duration::from_secs(2);

/// Why an SSDP datagram gets no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SsdpError {
    /// Longer than [`MAX_SEARCH_LEN`].
    #[error("datagram of {0} bytes, longer than an M-SEARCH may be")]
    TooLong(usize),
    /// Not an HTTPU request head.
    #[error("malformed SSDP message: {0}")]
    Malformed(&'static str),
    /// A valid message that is no search (a NOTIFY, a response): not for a device.
    #[error("not an M-SEARCH ({0})")]
    NotSearch(String),
    /// `M-SEARCH` whose target is not `*` or version not HTTP/1.1.
    #[error("M-SEARCH request line must be `M-SEARCH * HTTP/1.1`")]
    RequestLine,
    /// No `MAN: "ssdp:discover"`.
    #[error("M-SEARCH without MAN: \"ssdp:discover\"")]
    Man,
    /// No `ST`.
    #[error("M-SEARCH without ST")]
    St,
    /// A multicast search without a valid `MX` (an integer of at least 1).
    #[error("multicast M-SEARCH without a valid MX")]
    Mx,
    /// Over the source's rate, or too many answers already waiting.
    #[error("rate limited")]
    RateLimited,
}

/// What a search asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `ssdp:all`.
    All,
    /// `upnp:rootdevice`.
    RootDevice,
    /// `uuid:...`.
    Uuid(Uuid),
    /// `urn:schemas-upnp-org:device:NAME:V` for a device of the tree.
    Device(DeviceKind, u32),
    /// `urn:schemas-upnp-org:service:WANIPConnection:V`.
    WanIpConnection(u32),
    /// Anything else (nothing of ours).
    Other(String),
}

impl Target {
    /// Reads an `ST` value.
    #[must_use]
    pub fn parse(st: &str) -> Self {
        let other = || Self::Other(st.to_owned());
        if st == "ssdp:all" {
            return Self::All;
        }
        if st == "upnp:rootdevice" {
            return Self::RootDevice;
        }
        if let Some(u) = st.strip_prefix("uuid:") {
            return u.parse().map_or_else(|_| other(), Self::Uuid);
        }
        let Some(rest) = st.strip_prefix(URN_PREFIX) else {
            return other();
        };
        let Some((kind, name_version)) = rest.split_once(':') else {
            return other();
        };
        let Some((name, version)) = name_version.rsplit_once(':') else {
            return other();
        };
        let Ok(version) = version.parse::<u32>() else {
            return other();
        };
        match (kind, name) {
            ("service", "WANIPConnection") => Self::WanIpConnection(version),
            ("device", n) => DeviceKind::ALL
                .into_iter()
                .find(|k| k.name() == n)
                .map_or_else(other, |k| Self::Device(k, version)),
            _ => other(),
        }
    }
}

/// An M-SEARCH, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Search {
    /// The search target.
    pub target: Target,
    /// Seconds the answer may be delayed (capped at [`MX_MAX`]); `None` when absent.
    pub mx: Option<u32>,
}

impl Search {
    /// Parses an M-SEARCH datagram (UDA 1.1 §1.3.2). `multicast`: whether it was sent
    /// to the group — then MX is required.
    ///
    /// # Errors
    /// When the datagram is no valid M-SEARCH.
    pub fn parse(datagram: &[u8], multicast: bool) -> Result<Self, SsdpError> {
        if datagram.len() > MAX_SEARCH_LEN {
            return Err(SsdpError::TooLong(datagram.len()));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_SEARCH_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(datagram) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(SsdpError::Malformed("no blank line after the headers"))
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(SsdpError::Malformed("too many headers"))
            }
            Err(_) => {
                // Responses to our own searches and other devices' NOTIFYs are common
                // on the group; they are not malformed.
                return Err(if datagram.starts_with(b"HTTP/") {
                    SsdpError::NotSearch("a response".to_owned())
                } else {
                    SsdpError::Malformed("not an HTTPU request")
                });
            }
        }
        let method = req.method.unwrap_or_default();
        if method != "M-SEARCH" {
            return Err(SsdpError::NotSearch(method.chars().take(16).collect()));
        }
        if req.path != Some("*") || req.version != Some(1) {
            return Err(SsdpError::RequestLine);
        }
        let value = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::trim)
        };
        if value("MAN") != Some("\"ssdp:discover\"") {
            return Err(SsdpError::Man);
        }
        let st = value("ST").filter(|s| !s.is_empty()).ok_or(SsdpError::St)?;
        let mx = match value("MX") {
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => Some(n.min(MX_MAX)),
                _ if multicast => return Err(SsdpError::Mx),
                _ => None,
            },
            None if multicast => return Err(SsdpError::Mx),
            None => None,
        };
        Ok(Self {
            target: Target::parse(st),
            mx,
        })
    }
}

/// One notification type of the tree: NT (or ST) and USN, and the version whose
/// description it points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// `NT` / `ST`.
    pub nt: String,
    /// `USN`.
    pub usn: String,
    /// Which description `LOCATION` names.
    pub version: Version,
}

impl Advert {
    fn new(uuid: Uuid, nt: String, version: Version) -> Self {
        let usn = if nt.starts_with("uuid:") {
            nt.clone()
        } else {
            format!("uuid:{uuid}::{nt}")
        };
        Self { nt, usn, version }
    }
}

/// Every advertisement of the version-2 tree (UDA 1.1 §1.2.2: three for the root,
/// two for each embedded device, one per service type): the set a NOTIFY round sends.
#[must_use]
pub fn adverts(device: &Device) -> Vec<Advert> {
    let root = device.uuid;
    let v = Version::V2;
    let mut out = vec![Advert::new(root, "upnp:rootdevice".to_owned(), v)];
    for kind in DeviceKind::ALL {
        let uuid = root.of(kind);
        out.push(Advert::new(uuid, format!("uuid:{uuid}"), v));
        out.push(Advert::new(uuid, kind.urn(v), v));
    }
    out.push(Advert::new(
        root.of(DeviceKind::WanConnection),
        service_urn(v),
        v,
    ));
    out
}

/// The answers a search gets: one per matching advertisement, at the version asked
/// for (UDA 1.1 §1.3.2: a device of version 2 answers a search for version 1 with
/// version 1 in ST). Empty when nothing matches.
#[must_use]
pub fn answers(device: &Device, target: &Target) -> Vec<Advert> {
    let root = device.uuid;
    let versioned = |n: u32| Version::from_number(n);
    match target {
        Target::All => adverts(device),
        Target::RootDevice => adverts(device).into_iter().take(1).collect(),
        Target::Uuid(u) => DeviceKind::ALL
            .into_iter()
            .filter(|k| root.of(*k) == *u)
            .map(|_| Advert::new(*u, format!("uuid:{u}"), Version::V2))
            .collect(),
        Target::Device(kind, n) => versioned(*n)
            .map(|v| Advert::new(root.of(*kind), kind.urn(v), v))
            .into_iter()
            .collect(),
        Target::WanIpConnection(n) => versioned(*n)
            .map(|v| Advert::new(root.of(DeviceKind::WanConnection), service_urn(v), v))
            .into_iter()
            .collect(),
        Target::Other(_) => Vec::new(),
    }
}

/// `BOOTID.UPNP.ORG` and `CONFIGID.UPNP.ORG` lines.
fn ids(out: &mut String, device: &Device) {
    let _ = write!(
        out,
        "BOOTID.UPNP.ORG: {}\r\nCONFIGID.UPNP.ORG: {}\r\n",
        device.boot_id, device.config_id
    );
}

/// The answer to a search (UDA 1.1 §1.3.3).
#[must_use]
pub fn search_response(device: &Device, advert: &Advert, local: Ipv4Addr, max_age: u32) -> Vec<u8> {
    let mut out = String::with_capacity(400);
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age={max_age}\r\nEXT:\r\nLOCATION: {}\r\n\
         SERVER: {}\r\nST: {}\r\nUSN: {}\r\n",
        device.location(local, advert.version),
        device.server,
        advert.nt,
        advert.usn
    );
    ids(&mut out, device);
    out.push_str("\r\n");
    out.into_bytes()
}

/// A `NOTIFY ssdp:alive` (UDA 1.1 §1.2.2).
#[must_use]
pub fn alive(device: &Device, advert: &Advert, local: Ipv4Addr, max_age: u32) -> Vec<u8> {
    let mut out = String::with_capacity(400);
    let _ = write!(
        out,
        "NOTIFY * HTTP/1.1\r\nHOST: {MULTICAST}\r\nCACHE-CONTROL: max-age={max_age}\r\n\
         LOCATION: {}\r\nNT: {}\r\nNTS: ssdp:alive\r\nSERVER: {}\r\nUSN: {}\r\n",
        device.location(local, advert.version),
        advert.nt,
        device.server,
        advert.usn
    );
    ids(&mut out, device);
    out.push_str("\r\n");
    out.into_bytes()
}

/// A `NOTIFY ssdp:byebye` (UDA 1.1 §1.2.3).
#[must_use]
pub fn byebye(device: &Device, advert: &Advert) -> Vec<u8> {
    let mut out = String::with_capacity(300);
    let _ = write!(
        out,
        "NOTIFY * HTTP/1.1\r\nHOST: {MULTICAST}\r\nNT: {}\r\nNTS: ssdp:byebye\r\nUSN: {}\r\n",
        advert.nt, advert.usn
    );
    ids(&mut out, device);
    out.push_str("\r\n");
    out.into_bytes()
}

/// The responder's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `CACHE-CONTROL: max-age`, seconds (UDA: at least 1800).
    pub max_age: u32,
    /// Searches per second one source may make (0: no limit).
    pub searches_per_second: u32,
    /// Searches a source may make at once.
    pub burst: u32,
    /// Answers waiting for their moment at most; searches beyond are refused.
    pub max_pending: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_age: 1800,
            searches_per_second: 2,
            burst: 10,
            max_pending: 512,
        }
    }
}

/// A datagram to send: from LAN address `from` (port 1900 for NOTIFY; any port of
/// the device for answers) to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The LAN address to send from (and whose interface to send out of).
    pub from: Ipv4Addr,
    /// Destination: the searcher, or [`MULTICAST`].
    pub to: SocketAddrV4,
    /// The datagram.
    pub payload: Vec<u8>,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Searches answered (at least one answer scheduled).
    pub searches: u64,
    /// Searches for nothing of ours.
    pub unmatched: u64,
    /// Datagrams refused: malformed, rate limited.
    pub refused: u64,
    /// Datagrams sent.
    pub sent: u64,
}

/// The SSDP engine of one device on a set of LAN addresses.
#[derive(Debug)]
pub struct Responder {
    device: Device,
    config: Config,
    addresses: Vec<Ipv4Addr>,
    limiter: RateLimiter<Ipv4Addr>,
    /// Answers waiting for their moment, in no order.
    pending: Vec<(Instant, Transmit)>,
    ready: VecDeque<Transmit>,
    next_round: Option<Instant>,
    startup_rounds_left: u32,
    rng: u64,
    stats: Stats,
}

impl Responder {
    /// A responder advertising `device` on `addresses`, with the first advertisement
    /// round due at `now`. `seed` drives the random answer delays (from the service's
    /// random source; tests pass a constant).
    #[must_use]
    pub fn new(
        device: Device,
        config: Config,
        addresses: Vec<Ipv4Addr>,
        now: Instant,
        seed: u64,
    ) -> Self {
        Self {
            limiter: RateLimiter::new(
                u64::from(config.searches_per_second),
                u64::from(config.burst),
                4096,
                WhenFull::RefuseNew,
            ),
            device,
            config,
            addresses,
            pending: Vec::new(),
            ready: VecDeque::new(),
            next_round: Some(now),
            startup_rounds_left: STARTUP_ROUNDS,
            rng: seed | 1,
            stats: Stats::default(),
        }
    }

    /// The device advertised.
    #[must_use]
    pub const fn device(&self) -> &Device {
        &self.device
    }

    /// Counters so far.
    #[must_use]
    pub const fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The LAN addresses changed: advertise on the new set from now on (a new start
    /// round for every address, so new interfaces hear of the device at once).
    pub fn set_addresses(&mut self, addresses: Vec<Ipv4Addr>, now: Instant) {
        self.addresses = addresses;
        self.startup_rounds_left = STARTUP_ROUNDS;
        self.next_round = Some(now);
    }

    fn random_below(&mut self, bound: u64) -> u64 {
        // xorshift64: only spreads answers in time; nothing depends on its quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if bound == 0 {
            0
        } else {
            self.rng % bound
        }
    }

    /// Handles a datagram from `src` that arrived on LAN address `local`, sent to the
    /// multicast group or not (`multicast`): schedules the answers and returns how
    /// many. The caller must feed only datagrams that came in on LAN interfaces.
    ///
    /// # Errors
    /// When it is not a valid M-SEARCH or the source is over its rate; nothing is
    /// sent then. [`SsdpError::NotSearch`] is the ordinary traffic of the group.
    pub fn handle(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        local: Ipv4Addr,
        multicast: bool,
        datagram: &[u8],
    ) -> Result<usize, SsdpError> {
        let search = match Search::parse(datagram, multicast) {
            Ok(s) => s,
            Err(e) => {
                if !matches!(e, SsdpError::NotSearch(_)) {
                    self.stats.refused += 1;
                }
                return Err(e);
            }
        };
        let answers = answers(&self.device, &search.target);
        if answers.is_empty() {
            self.stats.unmatched += 1;
            return Ok(0);
        }
        if self.pending.len() + answers.len() > self.config.max_pending
            || matches!(self.limiter.check(*src.ip(), now), Verdict::Drop { .. })
        {
            self.stats.refused += 1;
            return Err(SsdpError::RateLimited);
        }
        self.stats.searches += 1;
        // UDA 1.1 §1.3.3: a unicast search is answered at once; a multicast one at a
        // random moment within MX.
        let window_ms = if multicast {
            u64::from(search.mx.unwrap_or(0)) * 1000
        } else {
            0
        };
        let count = answers.len();
        for advert in answers {
            let delay = Duration::from_millis(self.random_below(window_ms));
            let payload = search_response(&self.device, &advert, local, self.config.max_age);
            self.pending.push((
                now + delay,
                Transmit {
                    from: local,
                    to: src,
                    payload,
                },
            ));
        }
        Ok(count)
    }

    /// The next datagram due at `now`, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.next_round.is_some_and(|t| t <= now) {
            self.advertise(now);
        }
        if self.ready.is_empty() {
            let mut i = 0;
            while i < self.pending.len() {
                if self.pending[i].0 <= now {
                    let (_, t) = self.pending.swap_remove(i);
                    self.ready.push_back(t);
                } else {
                    i += 1;
                }
            }
        }
        let t = self.ready.pop_front()?;
        self.stats.sent += 1;
        Some(t)
    }

    /// One round of `ssdp:alive` on every address, and when the next is due.
    fn advertise(&mut self, now: Instant) {
        for &local in &self.addresses {
            for advert in adverts(&self.device) {
                self.ready.push_back(Transmit {
                    from: local,
                    to: MULTICAST,
                    payload: alive(&self.device, &advert, local, self.config.max_age),
                });
            }
        }
        let interval = if self.startup_rounds_left > 1 {
            self.startup_rounds_left -= 1;
            STARTUP_INTERVAL
        } else {
            self.startup_rounds_left = 0;
            Duration::from_secs(u64::from(self.config.max_age / 3).max(1))
        };
        self.next_round = Some(now + interval);
    }

    /// When [`Responder::poll_transmit`] next has something to send (call it until
    /// it returns `None`, then wait until this).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending
            .iter()
            .map(|p| p.0)
            .chain(self.next_round)
            .min()
    }

    /// The `ssdp:byebye` of every advertisement on every address, to send when the
    /// server stops; pending answers are dropped and no more rounds are scheduled.
    pub fn byebye(&mut self) -> Vec<Transmit> {
        self.pending.clear();
        self.ready.clear();
        self.next_round = None;
        let adverts = adverts(&self.device);
        self.addresses
            .iter()
            .flat_map(|&local| adverts.iter().map(move |a| (local, a)))
            .map(|(local, a)| Transmit {
                from: local,
                to: MULTICAST,
                payload: byebye(&self.device, a),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAN: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

    fn device() -> Device {
        Device::new(Uuid::from_random([0x11; 16]), 7)
    }

    fn search(st: &str, mx: &str) -> Vec<u8> {
        format!(
            "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n\
             MX: {mx}\r\nST: {st}\r\n\r\n"
        )
        .into_bytes()
    }

    fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
        msg.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v.trim())
    }

    fn drain(r: &mut Responder, now: Instant) -> Vec<Transmit> {
        std::iter::from_fn(|| r.poll_transmit(now)).collect()
    }

    #[test]
    fn search_parses_its_fields() {
        let s = Search::parse(&search("upnp:rootdevice", "3"), true).unwrap();
        assert_eq!(
            s,
            Search {
                target: Target::RootDevice,
                mx: Some(3)
            }
        );
        let s = Search::parse(&search("ssdp:all", "120"), true).unwrap();
        assert_eq!(s.mx, Some(MX_MAX), "capped at 5");
        assert_eq!(
            Target::parse("urn:schemas-upnp-org:service:WANIPConnection:1"),
            Target::WanIpConnection(1)
        );
        assert_eq!(
            Target::parse("urn:schemas-upnp-org:device:WANDevice:2"),
            Target::Device(DeviceKind::Wan, 2)
        );
        assert!(matches!(
            Target::parse("urn:schemas-upnp-org:device:Printer:1"),
            Target::Other(_)
        ));
        assert!(matches!(
            Target::parse("urn:schemas-upnp-org:device:WANDevice:x"),
            Target::Other(_)
        ));
    }

    #[test]
    fn bad_searches_are_typed_errors() {
        let no_man = b"M-SEARCH * HTTP/1.1\r\nMX: 1\r\nST: ssdp:all\r\n\r\n";
        assert_eq!(Search::parse(no_man, true), Err(SsdpError::Man));
        let no_st = b"M-SEARCH * HTTP/1.1\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n\r\n";
        assert_eq!(Search::parse(no_st, true), Err(SsdpError::St));
        assert_eq!(
            Search::parse(&search("ssdp:all", "0"), true),
            Err(SsdpError::Mx)
        );
        assert_eq!(
            Search::parse(&search("ssdp:all", "x"), true),
            Err(SsdpError::Mx)
        );
        assert_eq!(
            Search::parse(&search("ssdp:all", "x"), false).unwrap().mx,
            None,
            "unicast"
        );
        let path = b"M-SEARCH / HTTP/1.1\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: a\r\n\r\n";
        assert_eq!(Search::parse(path, true), Err(SsdpError::RequestLine));
        let notify = b"NOTIFY * HTTP/1.1\r\nNTS: ssdp:alive\r\n\r\n";
        assert!(matches!(
            Search::parse(notify, true),
            Err(SsdpError::NotSearch(_))
        ));
        let response = b"HTTP/1.1 200 OK\r\nST: x\r\n\r\n";
        assert!(matches!(
            Search::parse(response, true),
            Err(SsdpError::NotSearch(_))
        ));
        assert_eq!(
            Search::parse(&[b'a'; 3000], true),
            Err(SsdpError::TooLong(3000))
        );
        assert!(matches!(
            Search::parse(b"M-SEARCH * HTTP/1.1\r\n", true),
            Err(SsdpError::Malformed(_))
        ));
        assert!(matches!(
            Search::parse(b"\xff\xfe", true),
            Err(SsdpError::Malformed(_))
        ));
    }

    #[test]
    fn every_type_of_the_tree_is_answered_at_the_version_asked() {
        // UDA 1.1 §1.3.2: the version searched for, not the device's own
        let d = device();
        let root = d.uuid;
        let a = answers(
            &d,
            &Target::parse("urn:schemas-upnp-org:device:InternetGatewayDevice:1"),
        );
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0].nt,
            "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
        );
        assert_eq!(
            a[0].usn,
            format!("uuid:{root}::urn:schemas-upnp-org:device:InternetGatewayDevice:1")
        );
        assert_eq!(a[0].version, Version::V1);
        let a = answers(&d, &Target::WanIpConnection(2));
        assert_eq!(a[0].nt, "urn:schemas-upnp-org:service:WANIPConnection:2");
        assert_eq!(a[0].version, Version::V2);
        assert!(
            answers(&d, &Target::WanIpConnection(3)).is_empty(),
            "no version 3"
        );
        for kind in DeviceKind::ALL {
            for v in [1, 2] {
                assert_eq!(answers(&d, &Target::Device(kind, v)).len(), 1);
            }
            let u = root.of(kind);
            let a = answers(&d, &Target::Uuid(u));
            assert_eq!(
                (a[0].nt.clone(), a[0].usn.clone()),
                (format!("uuid:{u}"), format!("uuid:{u}"))
            );
        }
        assert!(answers(&d, &Target::Uuid(Uuid([9; 16]))).is_empty());
        assert_eq!(answers(&d, &Target::All).len(), 8, "1 + 3×2 + 1 service");
        assert_eq!(answers(&d, &Target::RootDevice)[0].nt, "upnp:rootdevice");
    }

    #[test]
    fn answers_come_within_mx_from_the_lan_address_to_the_searcher() {
        let t0 = Instant::now();
        let mut r = Responder::new(device(), Config::default(), vec![LAN], t0, 42);
        drain(&mut r, t0); // the first advertisement round
        let src: SocketAddrV4 = "10.0.1.2:50000".parse().unwrap();
        assert_eq!(
            r.handle(t0, src, LAN, true, &search("ssdp:all", "2")),
            Ok(8)
        );
        let mut got = Vec::new();
        let mut now = t0;
        while got.len() < 8 {
            let next = r.poll_timeout().expect("answers pending");
            assert!(next <= t0 + Duration::from_secs(2), "within MX");
            now = now.max(next);
            got.extend(drain(&mut r, now));
        }
        for t in &got {
            assert_eq!((t.from, t.to), (LAN, src));
            let text = std::str::from_utf8(&t.payload).unwrap();
            assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
            assert_eq!(header(text, "CACHE-CONTROL"), Some("max-age=1800"));
            assert_eq!(
                header(text, "LOCATION"),
                Some("http://10.0.1.1:5000/rootDesc.xml")
            );
            assert_eq!(header(text, "BOOTID.UPNP.ORG"), Some("7"));
            assert!(header(text, "EXT").is_some());
        }
        let v1 = search("urn:schemas-upnp-org:service:WANIPConnection:1", "1");
        assert_eq!(r.handle(now, src, LAN, false, &v1), Ok(1));
        let t = drain(&mut r, now).pop().expect("unicast search: at once");
        let text = String::from_utf8(t.payload).unwrap();
        assert_eq!(
            header(&text, "ST"),
            Some("urn:schemas-upnp-org:service:WANIPConnection:1")
        );
        assert_eq!(
            header(&text, "LOCATION"),
            Some("http://10.0.1.1:5000/rootDesc1.xml")
        );
    }

    #[test]
    fn a_source_over_its_rate_gets_nothing_and_the_queue_is_bounded() {
        let t0 = Instant::now();
        let config = Config {
            searches_per_second: 1,
            burst: 2,
            max_pending: 20,
            ..Config::default()
        };
        let mut r = Responder::new(device(), config, vec![LAN], t0, 1);
        let a: SocketAddrV4 = "10.0.1.2:1900".parse().unwrap();
        let b: SocketAddrV4 = "10.0.1.3:1900".parse().unwrap();
        let root = search("upnp:rootdevice", "1");
        assert_eq!(r.handle(t0, a, LAN, true, &root), Ok(1));
        assert_eq!(r.handle(t0, a, LAN, true, &root), Ok(1));
        assert_eq!(
            r.handle(t0, a, LAN, true, &root),
            Err(SsdpError::RateLimited)
        );
        assert_eq!(
            r.handle(t0, b, LAN, true, &root),
            Ok(1),
            "another source has its own"
        );
        let all = search("ssdp:all", "1");
        assert_eq!(r.handle(t0, b, LAN, true, &all), Ok(8));
        assert_eq!(
            r.handle(t0, b, LAN, true, &all),
            Err(SsdpError::RateLimited),
            "queue full"
        );
        assert_eq!(r.stats().refused, 2);
    }

    #[test]
    fn alive_rounds_repeat_well_within_max_age_and_byebye_ends_them() {
        let t0 = Instant::now();
        let lan2 = Ipv4Addr::new(10, 0, 2, 1);
        let mut r = Responder::new(device(), Config::default(), vec![LAN, lan2], t0, 1);
        let round = drain(&mut r, t0);
        assert_eq!(round.len(), 16, "8 adverts on 2 addresses");
        for t in &round {
            let text = std::str::from_utf8(&t.payload).unwrap();
            assert_eq!(t.to, MULTICAST);
            assert!(text.starts_with("NOTIFY * HTTP/1.1\r\n"));
            assert_eq!(header(text, "NTS"), Some("ssdp:alive"));
            assert_eq!(
                header(text, "LOCATION"),
                Some(format!("http://{}:5000/rootDesc.xml", t.from).as_str())
            );
            assert!(header(text, "USN").is_some() && header(text, "NT").is_some());
            assert!(header(text, "CONFIGID.UPNP.ORG").is_some());
        }
        let mut now = t0;
        for _ in 1..STARTUP_ROUNDS {
            now = r.poll_timeout().unwrap();
            assert_eq!(drain(&mut r, now).len(), 16);
        }
        let next = r.poll_timeout().unwrap();
        let gap = next - now;
        assert!(
            gap < Duration::from_secs(900) && gap >= Duration::from_secs(60),
            "{gap:?}"
        );
        let bye = r.byebye();
        assert_eq!(bye.len(), 16);
        assert!(std::str::from_utf8(&bye[0].payload)
            .unwrap()
            .contains("NTS: ssdp:byebye\r\n"));
        assert_eq!(r.poll_timeout(), None);
    }
}
