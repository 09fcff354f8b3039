//! GENA eventing (UDA 1.1 §4): the subscription table of WANIPConnection and the
//! event messages, sans IO. The engine answers SUBSCRIBE and UNSUBSCRIBE through
//! [`Subscriptions`] and hands out [`Notify`] requests — complete HTTP requests
//! for the service to send over a new TCP connection to the subscriber.
//!
//! Security: a callback URL must be `http://` to the subscriber's own address (no
//! host names, no other hosts: the gateway is never made to connect elsewhere), the
//! table is bounded in all and per host, and a subscription is renewed or cancelled
//! only by the host that made it.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash as _, Hasher as _};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use quick_xml::events::BytesText;

use super::soap::xml_document;
use super::Uuid;
use crate::upnp::http::Status;

/// The event namespace of property sets.
pub const EVENT_NS: &str = "urn:schemas-upnp-org:event-1-0";
/// Callback URLs one subscription may give; the first is used.
pub const MAX_CALLBACKS: usize = 4;
/// Longest callback URL.
pub const MAX_CALLBACK_LEN: usize = 256;

/// The table's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Subscriptions in all.
    pub max_subscriptions: usize,
    /// Subscriptions of one host.
    pub max_per_host: usize,
    /// Longest subscription granted, seconds (asked-for longer or infinite: this).
    pub max_timeout: u32,
    /// Shortest, seconds.
    pub min_timeout: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_subscriptions: 128,
            max_per_host: 8,
            max_timeout: 1800,
            min_timeout: 60,
        }
    }
}

/// Why a SUBSCRIBE or UNSUBSCRIBE is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GenaError {
    /// SID together with CALLBACK or NT (400, UDA 1.1 §4.1.2).
    #[error("SID may not come with CALLBACK or NT")]
    Incompatible,
    /// NT is not `upnp:event`, or CALLBACK is missing (412).
    #[error("a new subscription needs NT: upnp:event and a CALLBACK")]
    Precondition,
    /// A callback URL that is not `http://SUBSCRIBER[:PORT]/PATH` (412).
    #[error("callback URLs must be http:// to the subscriber's own address: {0}")]
    Callback(String),
    /// No such subscription, or another host's (412).
    #[error("no subscription {0} of this host")]
    UnknownSid(String),
    /// The table or the host's share of it is full (503).
    #[error("too many subscriptions")]
    Full,
}

impl GenaError {
    /// The status answered.
    #[must_use]
    pub const fn status(&self) -> Status {
        match self {
            Self::Incompatible => Status::BAD_REQUEST,
            Self::Full => Status::SERVICE_UNAVAILABLE,
            _ => Status::PRECONDITION_FAILED,
        }
    }
}

/// Where events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callback {
    /// The subscriber's address and port.
    pub addr: SocketAddrV4,
    /// The path (and query) of the URL.
    pub path: String,
}

/// Reads a CALLBACK header: `<http://10.0.1.2:49152/event>` (one or more URLs in
/// angle brackets). Every URL must be `http://` to `subscriber`, by IPv4 address.
///
/// # Errors
/// When there is none or one breaks the rule.
pub fn parse_callback(value: &str, subscriber: Ipv4Addr) -> Result<Vec<Callback>, GenaError> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let inner = rest
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .ok_or_else(|| GenaError::Callback("not <URL>".into()))?;
        let (url, after) = inner;
        rest = after.trim_start();
        if out.len() == MAX_CALLBACKS || url.len() > MAX_CALLBACK_LEN {
            return Err(GenaError::Callback("too many or too long".into()));
        }
        out.push(parse_url(url, subscriber)?);
    }
    if out.is_empty() {
        return Err(GenaError::Precondition);
    }
    Ok(out)
}

fn parse_url(url: &str, subscriber: Ipv4Addr) -> Result<Callback, GenaError> {
    let bad = |why: &str| GenaError::Callback(why.to_owned());
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("not http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("the path has spaces or control characters"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
        None => (authority, 80),
    };
    let host: Ipv4Addr = host
        .parse()
        .map_err(|_| bad("the host is no IPv4 address"))?;
    if host != subscriber || port == 0 {
        return Err(bad("not the subscriber's own address"));
    }
    Ok(Callback {
        addr: SocketAddrV4::new(host, port),
        path: path.to_owned(),
    })
}

/// Reads a TIMEOUT header (`Second-N` or `Second-infinite`) and bounds it; absent or
/// unreadable: the longest.
#[must_use]
pub fn parse_timeout(value: Option<&str>, config: &Config) -> u32 {
    value
        .and_then(|v| v.trim().strip_prefix("Second-"))
        .and_then(|n| n.parse::<u32>().ok())
        .map_or(config.max_timeout, |n| {
            n.clamp(config.min_timeout, config.max_timeout)
        })
}

/// `<e:propertyset>` with one `<e:property>` per variable (UDA 1.1 §4.3.1).
#[must_use]
pub fn property_set(properties: &[(&str, String)]) -> Vec<u8> {
    xml_document(|w| {
        w.create_element("e:propertyset")
            .with_attribute(("xmlns:e", EVENT_NS))
            .write_inner_content(|w| {
                for (name, value) in properties {
                    w.create_element("e:property")
                        .write_inner_content(|w| {
                            w.create_element(*name)
                                .write_text_content(BytesText::new(value))
                                .map(|_| ())
                        })
                        .map(|_| ())?;
                }
                Ok(())
            })
            .map(|_| ())
    })
}

/// An event message to deliver: connect to `to`, write `request`, read the answer
/// (ignored), close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// The subscriber.
    pub to: SocketAddrV4,
    /// The whole `NOTIFY` request.
    pub request: Vec<u8>,
}

/// One subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// `uuid:...`.
    pub sid: String,
    /// Who subscribed.
    pub subscriber: Ipv4Addr,
    /// Where events go.
    pub callback: Callback,
    /// When it ends unless renewed.
    pub expires: Instant,
    /// The next event's SEQ.
    pub seq: u32,
}

impl Subscription {
    fn notify(&mut self, body: &[u8]) -> Notify {
        let mut head = String::with_capacity(256);
        let _ = write!(
            head,
            "NOTIFY {} HTTP/1.1\r\nHOST: {}\r\nCONTENT-TYPE: text/xml; charset=\"utf-8\"\r\n\
             NT: upnp:event\r\nNTS: upnp:propchange\r\nSID: {}\r\nSEQ: {}\r\n\
             CONTENT-LENGTH: {}\r\nCONNECTION: close\r\n\r\n",
            self.callback.path,
            self.callback.addr,
            self.sid,
            self.seq,
            body.len()
        );
        // UDA 1.1 §4.3.2: after 4294967295 comes 1; 0 is the initial event's alone.
        self.seq = self.seq.checked_add(1).unwrap_or(1);
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        Notify {
            to: self.callback.addr,
            request,
        }
    }
}

/// The subscriptions of the service.
#[derive(Debug)]
pub struct Subscriptions {
    config: Config,
    subs: Vec<Subscription>,
    secret: [u8; 16],
    counter: u64,
}

impl Subscriptions {
    /// An empty table; `secret` makes SIDs unguessable (random bytes from the
    /// service).
    #[must_use]
    pub const fn new(config: Config, secret: [u8; 16]) -> Self {
        Self {
            config,
            subs: Vec::new(),
            secret,
            counter: 0,
        }
    }

    /// The live subscriptions.
    #[must_use]
    pub fn all(&self) -> &[Subscription] {
        &self.subs
    }

    fn new_sid(&mut self) -> String {
        self.counter += 1;
        let mut bytes = [0u8; 16];
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = DefaultHasher::new();
            (self.secret, self.counter, i).hash(&mut h);
            chunk.copy_from_slice(&h.finish().to_be_bytes());
        }
        format!("uuid:{}", Uuid::from_random(bytes))
    }

    /// A new subscription of `subscriber` (headers CALLBACK, NT, TIMEOUT): its SID
    /// and granted seconds, and the initial event with SEQ 0 carrying `properties`.
    ///
    /// # Errors
    /// When the headers are wrong or the table is full.
    pub fn subscribe(
        &mut self,
        now: Instant,
        subscriber: Ipv4Addr,
        callback: Option<&str>,
        nt: Option<&str>,
        timeout: Option<&str>,
        properties: &[(&str, String)],
    ) -> Result<(String, u32, Notify), GenaError> {
        self.expire(now);
        if nt != Some("upnp:event") {
            return Err(GenaError::Precondition);
        }
        let callbacks = parse_callback(callback.ok_or(GenaError::Precondition)?, subscriber)?;
        let of_host = self
            .subs
            .iter()
            .filter(|s| s.subscriber == subscriber)
            .count();
        if self.subs.len() >= self.config.max_subscriptions || of_host >= self.config.max_per_host {
            return Err(GenaError::Full);
        }
        let seconds = parse_timeout(timeout, &self.config);
        let sid = self.new_sid();
        let mut sub = Subscription {
            sid: sid.clone(),
            subscriber,
            callback: callbacks
                .into_iter()
                .next()
                .ok_or(GenaError::Precondition)?,
            expires: now + Duration::from_secs(u64::from(seconds)),
            seq: 0,
        };
        let initial = sub.notify(&property_set(properties));
        self.subs.push(sub);
        Ok((sid, seconds, initial))
    }

    /// Renews `sid` (a SUBSCRIBE with SID): the granted seconds.
    ///
    /// # Errors
    /// When `sid` is no live subscription of `subscriber`.
    pub fn renew(
        &mut self,
        now: Instant,
        subscriber: Ipv4Addr,
        sid: &str,
        timeout: Option<&str>,
    ) -> Result<u32, GenaError> {
        self.expire(now);
        let seconds = parse_timeout(timeout, &self.config);
        let sub = self
            .subs
            .iter_mut()
            .find(|s| s.sid == sid && s.subscriber == subscriber)
            .ok_or_else(|| GenaError::UnknownSid(sid.chars().take(64).collect()))?;
        sub.expires = now + Duration::from_secs(u64::from(seconds));
        Ok(seconds)
    }

    /// Cancels `sid`.
    ///
    /// # Errors
    /// When `sid` is no subscription of `subscriber`.
    pub fn unsubscribe(&mut self, subscriber: Ipv4Addr, sid: &str) -> Result<(), GenaError> {
        let before = self.subs.len();
        self.subs
            .retain(|s| !(s.sid == sid && s.subscriber == subscriber));
        if self.subs.len() == before {
            return Err(GenaError::UnknownSid(sid.chars().take(64).collect()));
        }
        Ok(())
    }

    /// Forgets the subscriptions that ended by `now`.
    pub fn expire(&mut self, now: Instant) {
        self.subs.retain(|s| s.expires > now);
    }

    /// When the next subscription ends.
    #[must_use]
    pub fn next_expiry(&self) -> Option<Instant> {
        self.subs.iter().map(|s| s.expires).min()
    }

    /// An event with `properties` for every live subscription.
    pub fn notify_all(&mut self, now: Instant, properties: &[(&str, String)]) -> Vec<Notify> {
        self.expire(now);
        let body = property_set(properties);
        self.subs.iter_mut().map(|s| s.notify(&body)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);

    fn props() -> Vec<(&'static str, String)> {
        vec![
            ("ExternalIPAddress", "192.0.2.1".to_owned()),
            ("PortMappingNumberOfEntries", "0".to_owned()),
        ]
    }

    #[test]
    fn callbacks_must_point_at_the_subscriber() {
        let ok =
            parse_callback("<http://10.0.1.2:49152/evt?x=1> <http://10.0.1.2/b>", HOST).unwrap();
        assert_eq!(ok[0].addr, "10.0.1.2:49152".parse().unwrap());
        assert_eq!((ok[0].path.as_str(), ok[1].addr.port()), ("/evt?x=1", 80));
        for bad in [
            "<http://10.0.1.3:5000/>",
            "<http://192.0.2.7/>",
            "<https://10.0.1.2/>",
            "<http://router.lan/>",
            "http://10.0.1.2/",
            "<http://10.0.1.2:0/>",
            "<http://10.0.1.2:99999/>",
        ] {
            assert!(
                matches!(parse_callback(bad, HOST), Err(GenaError::Callback(_))),
                "{bad}"
            );
        }
        assert_eq!(parse_callback("", HOST), Err(GenaError::Precondition));
    }

    #[test]
    fn subscribe_renew_unsubscribe_and_seq() {
        let t0 = Instant::now();
        let mut s = Subscriptions::new(Config::default(), [1; 16]);
        let (sid, secs, initial) = s
            .subscribe(
                t0,
                HOST,
                Some("<http://10.0.1.2:5000/e>"),
                Some("upnp:event"),
                Some("Second-infinite"),
                &props(),
            )
            .unwrap();
        assert!(sid.starts_with("uuid:"));
        assert_eq!(secs, 1800);
        let text = String::from_utf8(initial.request).unwrap();
        assert!(text.starts_with("NOTIFY /e HTTP/1.1\r\nHOST: 10.0.1.2:5000\r\n"));
        assert!(text.contains(&format!("SID: {sid}\r\nSEQ: 0\r\n")));
        assert!(text
            .contains("<e:property><ExternalIPAddress>192.0.2.1</ExternalIPAddress></e:property>"));
        let next = s.notify_all(t0, &props());
        assert!(String::from_utf8_lossy(&next[0].request).contains("SEQ: 1\r\n"));
        // Another host cannot renew or cancel it.
        let other = Ipv4Addr::new(10, 0, 1, 9);
        assert!(matches!(
            s.renew(t0, other, &sid, None),
            Err(GenaError::UnknownSid(_))
        ));
        assert!(s.unsubscribe(other, &sid).is_err());
        assert_eq!(
            s.renew(t0, HOST, &sid, Some("Second-10")),
            Ok(60),
            "raised to the minimum"
        );
        assert!(
            s.notify_all(t0 + Duration::from_secs(61), &props())
                .is_empty(),
            "expired"
        );
        let (sid, _, _) = s
            .subscribe(
                t0,
                HOST,
                Some("<http://10.0.1.2:5000/e>"),
                Some("upnp:event"),
                None,
                &props(),
            )
            .unwrap();
        assert_eq!(s.unsubscribe(HOST, &sid), Ok(()));
        assert!(s.all().is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_sids_differ() {
        let t0 = Instant::now();
        let config = Config {
            max_subscriptions: 3,
            max_per_host: 2,
            ..Config::default()
        };
        let mut s = Subscriptions::new(config, [2; 16]);
        let cb = |h: Ipv4Addr| format!("<http://{h}:5000/>");
        let sub = |s: &mut Subscriptions, h| {
            s.subscribe(t0, h, Some(&cb(h)), Some("upnp:event"), None, &props())
                .map(|r| r.0)
        };
        let a = sub(&mut s, HOST).unwrap();
        let b = sub(&mut s, HOST).unwrap();
        assert_ne!(a, b);
        assert_eq!(sub(&mut s, HOST), Err(GenaError::Full), "per host");
        let other = Ipv4Addr::new(10, 0, 1, 3);
        sub(&mut s, other).unwrap();
        assert_eq!(
            sub(&mut s, Ipv4Addr::new(10, 0, 1, 4)),
            Err(GenaError::Full),
            "in all"
        );
        let wrong_nt = s.subscribe(
            t0,
            other,
            Some(&cb(other)),
            Some("upnp:propchange"),
            None,
            &props(),
        );
        assert_eq!(wrong_nt.map(|r| r.0), Err(GenaError::Precondition));
    }
}
