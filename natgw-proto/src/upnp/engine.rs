//! The IGD engine, sans IO in the manner of the PCP engine: the service hands it a
//! connection's bytes (or a parsed [`Request`]), where they came from, the LAN
//! address they arrived on and the time, and writes back the response it returns;
//! [`Engine::poll_notify`] hands out GENA event messages to deliver (after the
//! response to the request that caused them has been written: a subscriber must
//! learn its SID before its first event, UDA 1.1 §4.2.1),
//! [`Engine::poll_event`] what happened (for the log), and [`Engine::refresh`] is
//! called when the table may have changed behind the engine's back (expiry, a new
//! external address) so subscribers hear of it.
//!
//! Mappings go through the same [`MappingTable`] as PCP and NAT-PMP, held to the
//! same port rules and quotas (the `[pcp]` policy, [`crate::pcp::engine::admit`]):
//! a UPnP mapping is an explicit mapping of origin [`Origin::Upnp`] with the control
//! point's description. The table keys mappings by internal endpoint and maps each
//! to one external port (endpoint-independent mapping), so UPnP's view — mappings
//! named by external port — is a search over it, and two external ports for one
//! internal endpoint are refused (718).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::description::{cif_scpd, device_description, scpd, MAX_LEASE};
use super::gena::{self, GenaError, Subscriptions};
use super::http::{self, HttpError, Request, Response, Status};
use super::soap::{self, Action, ActionKind, AddArgs, EntryId, Fault, RangeArgs, UpnpError};
use super::{
    Device, Version, CIF_CONTROL_PATH, CIF_SCPD_PATH, CONTROL_PATH, DESCRIPTION_PATH,
    DESCRIPTION_V1_PATH, EVENT_PATH, SCPD_PATH, SCPD_V1_PATH,
};
use crate::pcp::engine::admit;
use crate::pcp::policy::{client_limiter, PcpConfig};
use crate::pcp::table::{
    ExplicitMapping, Filter, Install, MappingKey, MappingTable, Origin, Protocol, TableError,
};
use crate::pcp::wire::Nonce;
use crate::prefix::Ipv4Prefix;
use crate::util::bucket::{RateLimiter, Verdict};

/// The nonce UPnP mappings are stored with (UPnP has none; a PCP client of the same
/// host would have to guess it to take the mapping over).
pub const UPNP_NONCE: Nonce = *b"upnp-igd\0\0\0\0";
/// Characters of a description kept; the rest is cut.
pub const MAX_DESCRIPTION: usize = 128;
/// Entries GetListOfPortMappings returns at most (NewNumberOfPorts 0 means all).
pub const MAX_LISTED: usize = 1000;
/// Events kept for [`Engine::poll_event`]; later ones are counted, not queued.
pub const MAX_QUEUED_EVENTS: usize = 1024;
/// Event notifications waiting for the service, at most.
pub const MAX_QUEUED_NOTIFY: usize = 1024;

/// The UPnP server's own settings (the port rules and quotas are the `[pcp]`
/// policy's, shared with PCP and NAT-PMP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpnpConfig {
    /// Let a control point map ports for other hosts (InternalClient ≠ its own
    /// address) and manage their mappings; off: 606 Action not authorized.
    pub allow_other_hosts: bool,
    /// Longest lease granted, seconds; a lease of 0 ("permanent", IGD:1) or longer
    /// gets this, and Get*Entry report the lease as it is [default: 604800].
    pub max_lease: u32,
    /// Requests per second one host may make (0: no limit) [default: 10].
    pub requests_per_second: u32,
    /// Requests a host may make at once [default: 1100]: enough for a control point
    /// to walk 1,000 mappings with GetGenericPortMappingEntry (one request each) and
    /// act on them; the rate holds a host that keeps on.
    pub burst: u32,
    /// HTTP request limits.
    pub http: http::Limits,
    /// SOAP request limits.
    pub soap: soap::Limits,
    /// GENA table bounds.
    pub gena: gena::Config,
}

impl Default for UpnpConfig {
    fn default() -> Self {
        Self {
            allow_other_hosts: false,
            max_lease: MAX_LEASE,
            requests_per_second: 10,
            burst: 1100,
            http: http::Limits::default(),
            soap: soap::Limits::default(),
            gena: gena::Config::default(),
        }
    }
}

/// A mapping created, renewed or deleted through UPnP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingEvent {
    /// The control point.
    pub client: Ipv4Addr,
    /// Protocol.
    pub protocol: Protocol,
    /// Internal endpoint.
    pub internal: SocketAddrV4,
    /// External endpoint.
    pub external: SocketAddrV4,
    /// Granted lease, seconds (0 for deletions).
    pub lease: u32,
    /// The lease asked for, when it was 0 or more than the maximum (capped).
    pub capped_from: Option<u32>,
    /// The description.
    pub description: String,
    /// Made by AddAnyPortMapping, whose answer names the external port (AddPortMapping
    /// answers nothing but success: the port asked for).
    pub any: bool,
}

/// What happened, for the service to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new mapping.
    Created(MappingEvent),
    /// A mapping renewed or updated.
    Renewed(MappingEvent),
    /// A mapping deleted by its control point.
    Deleted(MappingEvent),
    /// An action refused.
    Refused {
        /// The control point.
        client: Ipv4Addr,
        /// The action.
        action: String,
        /// The error answered.
        error: UpnpError,
        /// Why.
        reason: String,
    },
    /// A request not served: malformed, rate limited, not from a LAN host.
    Rejected {
        /// Who sent it.
        client: SocketAddrV4,
        /// The status answered.
        status: u16,
        /// Why.
        reason: String,
    },
    /// Events that did not fit the queue.
    Lost {
        /// How many.
        count: u64,
    },
}

/// The IGD engine.
#[derive(Debug)]
pub struct Engine {
    config: UpnpConfig,
    policy: PcpConfig,
    device: Device,
    started: Instant,
    limiter: RateLimiter<Ipv4Addr>,
    subscriptions: Subscriptions,
    events: VecDeque<Event>,
    events_lost: u64,
    notifications: VecDeque<gena::Notify>,
    evented: Option<Vec<(&'static str, String)>>,
    listing: Option<Listing>,
}

/// UPnP's port mapping array as last built (see `Engine::entries`).
#[derive(Debug)]
struct Listing {
    /// The table's generation it was built at.
    generation: u64,
    /// When the first lease in it ends.
    valid_until: Option<Instant>,
    /// The live UPnP mappings by protocol and external port.
    entries: Vec<ExplicitMapping>,
}

/// An action's output arguments, in order.
type Outputs = Vec<(&'static str, String)>;

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// Text safe to keep and show: control characters become spaces, at most
/// [`MAX_DESCRIPTION`] characters.
fn clean_description(text: &str) -> String {
    text.chars()
        .take(MAX_DESCRIPTION)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn remote_filter(remote: Option<Ipv4Addr>) -> Vec<Filter> {
    remote
        .and_then(|a| Ipv4Prefix::new(a, 32))
        .map(|p| Filter { remote: p, port: 0 })
        .into_iter()
        .collect()
}

/// The RemoteHost of a mapping: its one host filter, or the wildcard.
fn remote_of(m: &ExplicitMapping) -> Option<Ipv4Addr> {
    match m.filters.as_slice() {
        [f] if f.remote.len() == 32 => Some(f.remote.network()),
        _ => None,
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::All => "ALL",
    }
}

impl Engine {
    /// An engine for `device` whose uptime counts from `now`, with `policy` (the
    /// `[pcp]` port rules and quotas) and `secret` for GENA SIDs (random bytes).
    #[must_use]
    pub fn new(
        config: UpnpConfig,
        policy: PcpConfig,
        device: Device,
        now: Instant,
        secret: [u8; 16],
    ) -> Self {
        Self {
            limiter: client_limiter(config.requests_per_second, config.burst),
            subscriptions: Subscriptions::new(config.gena, secret),
            config,
            policy,
            device,
            started: now,
            events: VecDeque::new(),
            events_lost: 0,
            notifications: VecDeque::new(),
            evented: None,
            listing: None,
        }
    }

    /// New settings (a reloaded configuration); mappings and subscriptions stay.
    pub fn set_config(&mut self, config: UpnpConfig, policy: PcpConfig) {
        self.limiter = client_limiter(config.requests_per_second, config.burst);
        self.config = config;
        self.policy = policy;
    }

    /// The device served.
    #[must_use]
    pub const fn device(&self) -> &Device {
        &self.device
    }

    /// The next event to log.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        (self.events_lost > 0).then(|| Event::Lost {
            count: std::mem::take(&mut self.events_lost),
        })
    }

    /// The next GENA message to deliver.
    pub fn poll_notify(&mut self) -> Option<gena::Notify> {
        self.notifications.pop_front()
    }

    /// When [`Engine::refresh`] should run next at the latest (a subscription ends).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.subscriptions.next_expiry()
    }

    fn push(&mut self, event: Event) {
        if self.events.len() < MAX_QUEUED_EVENTS {
            self.events.push_back(event);
        } else {
            self.events_lost += 1;
        }
    }

    fn queue_notify(&mut self, notify: gena::Notify) {
        if self.notifications.len() < MAX_QUEUED_NOTIFY {
            self.notifications.push_back(notify);
        }
    }

    /// The evented variables now.
    fn state(&mut self, table: &impl MappingTable, now: Instant) -> Vec<(&'static str, String)> {
        vec![
            (
                "ExternalIPAddress",
                table
                    .external_address()
                    .map_or_else(String::new, |a| a.to_string()),
            ),
            (
                "PortMappingNumberOfEntries",
                self.entries(table, now).len().to_string(),
            ),
        ]
    }

    /// Compares the evented variables with what subscribers last heard and queues an
    /// event for each subscriber when they changed; forgets ended subscriptions. Call
    /// after the table changed without the engine (expiry, a new external address).
    pub fn refresh(&mut self, now: Instant, table: &impl MappingTable) {
        self.subscriptions.expire(now);
        let state = self.state(table, now);
        if self.evented.as_ref() == Some(&state) {
            return;
        }
        for n in self.subscriptions.notify_all(now, &state) {
            self.queue_notify(n);
        }
        self.evented = Some(state);
    }

    /// UPnP's port mapping array at `now`: the one built last while the table's
    /// [`MappingTable::generation`] is unchanged and no lease in it has ended, else
    /// built afresh. A control point walks the array with one
    /// GetGenericPortMappingEntry per entry; without this each would copy and sort
    /// every mapping of the table.
    fn entries(&mut self, table: &impl MappingTable, now: Instant) -> &[ExplicitMapping] {
        let generation = table.generation();
        let fresh = match (&self.listing, generation) {
            (Some(l), Some(g)) => l.generation == g && l.valid_until.is_none_or(|t| now < t),
            _ => false,
        };
        if !fresh {
            let entries = upnp_entries(table, now);
            self.listing = Some(Listing {
                generation: generation.unwrap_or(0),
                valid_until: entries.iter().map(|m| m.expires).min(),
                entries,
            });
        }
        self.listing.as_ref().map_or(&[], |l| l.entries.as_slice())
    }

    /// The UPnP mapping a control point names; a RemoteHost must match its filter.
    fn find(
        &mut self,
        table: &impl MappingTable,
        now: Instant,
        id: &EntryId,
    ) -> Option<ExplicitMapping> {
        find_in(self.entries(table, now), id)
    }

    /// Handles the bytes a connection from `src` to LAN address `local` has sent so
    /// far; `closed`: the peer has finished sending. Returns the response to write
    /// (then close the connection), or `None` while the request is incomplete.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        local: Ipv4Addr,
        input: &[u8],
        closed: bool,
        table: &mut impl MappingTable,
    ) -> Option<Vec<u8>> {
        let response = match Request::parse(input, &self.config.http) {
            Ok(Some(request)) => self.handle(now, src, local, &request, table),
            Ok(None) if !closed => return None,
            Ok(None) => self.reject(src, &HttpError::Truncated),
            Err(e) => self.reject(src, &e),
        };
        Some(response.to_bytes(&self.device.server))
    }

    /// The whole HTTP answer of a SOAP fault carrying `error`: for a service that
    /// withdraws an answer the engine made (a PCP proxy whose upstream refused).
    #[must_use]
    pub fn fault_bytes(&self, error: UpnpError) -> Vec<u8> {
        Response::xml(Status::INTERNAL_SERVER_ERROR, soap::fault(error))
            .to_bytes(&self.device.server)
    }

    fn reject(&mut self, src: SocketAddrV4, e: &HttpError) -> Response {
        self.push(Event::Rejected {
            client: src,
            status: e.status().code,
            reason: e.to_string(),
        });
        Response::error(e)
    }

    fn refuse_request(&mut self, src: SocketAddrV4, status: Status, reason: String) -> Response {
        let r = Response::plain(status, &reason);
        self.push(Event::Rejected {
            client: src,
            status: status.code,
            reason,
        });
        r
    }

    /// Handles one complete request from `src` that arrived on LAN address `local`.
    /// Only hosts the NAT serves ([`MappingTable::lan_of`]) are answered (403
    /// otherwise), each within its request rate (429).
    pub fn handle(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        local: Ipv4Addr,
        request: &Request,
        table: &mut impl MappingTable,
    ) -> Response {
        // Every URL served is relative, so the address the request came in on does
        // not show in any document; it stays in the signature for the service's logs
        // and for documents that may need absolute URLs.
        let _ = local;
        let host = *src.ip();
        if table.lan_of(host).is_none() {
            return self.refuse_request(src, Status::FORBIDDEN, "not a LAN host".into());
        }
        if let Verdict::Drop { .. } = self.limiter.check(host, now) {
            return self.refuse_request(
                src,
                Status::TOO_MANY_REQUESTS,
                "over its request rate".into(),
            );
        }
        let path = request.path.split('?').next().unwrap_or_default();
        match (request.method.as_str(), path) {
            ("GET", DESCRIPTION_PATH) => {
                Self::document(device_description(&self.device, Version::V2))
            }
            ("GET", DESCRIPTION_V1_PATH) => {
                Self::document(device_description(&self.device, Version::V1))
            }
            ("GET", SCPD_PATH) => Self::document(scpd(Version::V2)),
            ("GET", SCPD_V1_PATH) => Self::document(scpd(Version::V1)),
            ("GET", CIF_SCPD_PATH) => Self::document(cif_scpd()),
            ("POST", CONTROL_PATH) => self.control(now, src, request, table),
            ("POST", CIF_CONTROL_PATH) => self.cif_control(src, request, table),
            ("SUBSCRIBE", EVENT_PATH) => self.subscribe(now, src, request, table),
            ("UNSUBSCRIBE", EVENT_PATH) => self.unsubscribe(src, request),
            (
                _,
                DESCRIPTION_PATH | DESCRIPTION_V1_PATH | SCPD_PATH | SCPD_V1_PATH | CONTROL_PATH
                | EVENT_PATH | CIF_SCPD_PATH | CIF_CONTROL_PATH,
            ) => self.refuse_request(
                src,
                Status::METHOD_NOT_ALLOWED,
                format!("{} is not allowed here", request.method),
            ),
            ("GET" | "POST" | "SUBSCRIBE" | "UNSUBSCRIBE", _) => {
                self.refuse_request(src, Status::NOT_FOUND, "no such document".into())
            }
            _ => self.refuse_request(
                src,
                Status::NOT_IMPLEMENTED,
                "method not implemented".into(),
            ),
        }
    }

    /// A description or SCPD: XML, without the `EXT` header control responses carry.
    fn document(body: Vec<u8>) -> Response {
        let mut r = Response::xml(Status::OK, body);
        r.headers.retain(|(n, _)| *n != "EXT");
        r
    }

    fn subscribe(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        request: &Request,
        table: &impl MappingTable,
    ) -> Response {
        let host = *src.ip();
        let result = match request.header("sid") {
            Some(sid) => {
                if request.header("callback").is_some() || request.header("nt").is_some() {
                    Err(GenaError::Incompatible)
                } else {
                    self.subscriptions
                        .renew(now, host, sid, request.header("timeout"))
                        .map(|secs| (sid.to_owned(), secs))
                }
            }
            None => {
                let state = self.state(table, now);
                self.subscriptions
                    .subscribe(
                        now,
                        host,
                        request.header("callback"),
                        request.header("nt"),
                        request.header("timeout"),
                        &state,
                    )
                    .map(|(sid, secs, initial)| {
                        self.queue_notify(initial);
                        (sid, secs)
                    })
            }
        };
        match result {
            Ok((sid, secs)) => Response::empty(Status::OK)
                .with_header("SID", sid)
                .with_header("TIMEOUT", format!("Second-{secs}")),
            Err(e) => self.refuse_request(src, e.status(), e.to_string()),
        }
    }

    fn unsubscribe(&mut self, src: SocketAddrV4, request: &Request) -> Response {
        let result = match request.header("sid") {
            Some(_) if request.header("callback").is_some() || request.header("nt").is_some() => {
                Err(GenaError::Incompatible)
            }
            Some(sid) => self.subscriptions.unsubscribe(*src.ip(), sid),
            None => Err(GenaError::Precondition),
        };
        match result {
            Ok(()) => Response::empty(Status::OK),
            Err(e) => self.refuse_request(src, e.status(), e.to_string()),
        }
    }

    fn control(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        request: &Request,
        table: &mut impl MappingTable,
    ) -> Response {
        let call = match soap::parse_call(
            request.header("soapaction"),
            &request.body,
            &self.config.soap,
        ) {
            Ok(call) => call,
            Err(e) => return self.unreadable_call(src, request, &e),
        };
        let result = Action::from_call(&call)
            .and_then(|action| self.act(now, *src.ip(), call.version, &action, table));
        match result {
            Ok((kind, outputs)) => {
                self.refresh(now, table);
                Response::xml(Status::OK, soap::response(call.version, kind, &outputs))
            }
            Err(fault) => self.fault(*src.ip(), call.action, fault),
        }
    }

    /// The answer to a control request whose SOAP call cannot be read: a UPnP fault
    /// naming the SOAPACTION (its first 80 characters) when the error has a UPnP
    /// code, 400 otherwise.
    fn unreadable_call(
        &mut self,
        src: SocketAddrV4,
        request: &Request,
        e: &soap::SoapError,
    ) -> Response {
        let action = request
            .header("soapaction")
            .unwrap_or_default()
            .chars()
            .take(80)
            .collect();
        match e.fault() {
            Some(error) => self.fault(*src.ip(), action, Fault::new(error, e.to_string())),
            None => self.refuse_request(src, Status::BAD_REQUEST, e.to_string()),
        }
    }

    /// WANCommonInterfaceConfig:1 control: GetCommonLinkProperties, the action the
    /// service requires (the byte and packet counters are optional and not served).
    fn cif_control(
        &mut self,
        src: SocketAddrV4,
        request: &Request,
        table: &impl MappingTable,
    ) -> Response {
        let (action, args) = match soap::parse_cif_call(
            request.header("soapaction"),
            &request.body,
            &self.config.soap,
        ) {
            Ok(call) => call,
            Err(e) => return self.unreadable_call(src, request, &e),
        };
        if action != "GetCommonLinkProperties" {
            let reason = format!("WANCommonInterfaceConfig:1 serves no {action}");
            return self.fault(
                *src.ip(),
                action,
                Fault::new(UpnpError::InvalidAction, reason),
            );
        }
        if let Some((arg, _)) = args.first() {
            let reason = format!("unexpected argument {arg}");
            return self.fault(
                *src.ip(),
                action,
                Fault::new(UpnpError::InvalidArgs, reason),
            );
        }
        let rate = self.device.wan_bitrate.to_string();
        let up = if table.external_address().is_some() {
            "Up"
        } else {
            "Down"
        };
        let outputs = [
            ("NewWANAccessType", "Ethernet".to_owned()),
            ("NewLayer1UpstreamMaxBitRate", rate.clone()),
            ("NewLayer1DownstreamMaxBitRate", rate),
            ("NewPhysicalLinkStatus", up.to_owned()),
        ];
        Response::xml(Status::OK, soap::cif_response(&action, &outputs))
    }

    fn fault(&mut self, client: Ipv4Addr, action: String, fault: Fault) -> Response {
        let body = soap::fault(fault.error);
        self.push(Event::Refused {
            client,
            action,
            error: fault.error,
            reason: fault.reason,
        });
        Response::xml(Status::INTERNAL_SERVER_ERROR, body)
    }

    /// Carries out one action for `client`.
    fn act(
        &mut self,
        now: Instant,
        client: Ipv4Addr,
        version: Version,
        action: &Action,
        table: &mut impl MappingTable,
    ) -> Result<(ActionKind, Outputs), Fault> {
        Ok(match action {
            Action::GetConnectionTypeInfo => (
                ActionKind::GetConnectionTypeInfo,
                vec![
                    ("NewConnectionType", "IP_Routed".to_owned()),
                    ("NewPossibleConnectionTypes", "IP_Routed".to_owned()),
                ],
            ),
            Action::GetStatusInfo => (
                ActionKind::GetStatusInfo,
                vec![
                    (
                        "NewConnectionStatus",
                        if table.external_address().is_some() {
                            "Connected"
                        } else {
                            "Disconnected"
                        }
                        .to_owned(),
                    ),
                    ("NewLastConnectionError", "ERROR_NONE".to_owned()),
                    (
                        "NewUptime",
                        now.saturating_duration_since(self.started)
                            .as_secs()
                            .to_string(),
                    ),
                ],
            ),
            Action::GetExternalIpAddress => (
                ActionKind::GetExternalIpAddress,
                vec![(
                    "NewExternalIPAddress",
                    table
                        .external_address()
                        .map_or_else(String::new, |a| a.to_string()),
                )],
            ),
            Action::AddPortMapping(add) => {
                self.add(now, client, version, add, false, table)?;
                (ActionKind::AddPortMapping, Vec::new())
            }
            Action::AddAnyPortMapping(add) => {
                let port = self.add(now, client, version, add, true, table)?;
                (
                    ActionKind::AddAnyPortMapping,
                    vec![("NewReservedPort", port.to_string())],
                )
            }
            Action::DeletePortMapping(id) => {
                let m = self.find(table, now, id).ok_or_else(|| no_entry(id))?;
                self.check_owner(client, &m)?;
                self.remove(client, &m, table);
                (ActionKind::DeletePortMapping, Vec::new())
            }
            Action::DeletePortMappingRange(range) => {
                let victims = self.select(client, range, table, now, true)?;
                for m in &victims {
                    self.remove(client, m, table);
                }
                (ActionKind::DeletePortMappingRange, Vec::new())
            }
            Action::GetGenericPortMappingEntry { index } => {
                let entries = self.entries(table, now);
                let count = entries.len();
                let m = entries.get(usize::from(*index)).cloned().ok_or_else(|| {
                    Fault::new(
                        UpnpError::SpecifiedArrayIndexInvalid,
                        format!("index {index} of {count} entries"),
                    )
                })?;
                let m = &m;
                let mut out = vec![
                    (
                        "NewRemoteHost",
                        remote_of(m).map_or_else(String::new, |a| a.to_string()),
                    ),
                    ("NewExternalPort", m.external.port().to_string()),
                    ("NewProtocol", protocol_name(m.key.protocol).to_owned()),
                ];
                out.extend(entry_outputs(m, now));
                (ActionKind::GetGenericPortMappingEntry, out)
            }
            Action::GetSpecificPortMappingEntry(id) => {
                let m = self.find(table, now, id).ok_or_else(|| no_entry(id))?;
                (
                    ActionKind::GetSpecificPortMappingEntry,
                    entry_outputs(&m, now),
                )
            }
            Action::GetListOfPortMappings { range, number } => {
                let limit = if *number == 0 {
                    MAX_LISTED
                } else {
                    usize::from(*number).min(MAX_LISTED)
                };
                let listed = self.select(client, range, table, now, false)?;
                let listing = port_listing(&listed[..listed.len().min(limit)], now);
                (
                    ActionKind::GetListOfPortMappings,
                    vec![("NewPortListing", listing)],
                )
            }
        })
    }

    fn check_owner(&self, client: Ipv4Addr, m: &ExplicitMapping) -> Result<(), Fault> {
        if m.key.internal != client && !self.config.allow_other_hosts {
            return Err(Fault::new(
                UpnpError::NotAuthorized,
                format!(
                    "the mapping is {}'s (upnp.allow_other_hosts is off)",
                    m.key.internal
                ),
            ));
        }
        Ok(())
    }

    fn remove(&mut self, client: Ipv4Addr, m: &ExplicitMapping, table: &mut impl MappingTable) {
        table.remove(&m.key);
        self.push(Event::Deleted(MappingEvent {
            client,
            protocol: m.key.protocol,
            internal: m.key.internal_endpoint(),
            external: m.external,
            lease: 0,
            capped_from: None,
            description: m.description.clone(),
            any: false,
        }));
    }

    /// The UPnP mappings in `range`: the client's own, or with Manage everyone's —
    /// to delete them only when other hosts may be managed (606 otherwise); listing
    /// them is harmless.
    fn select(
        &mut self,
        client: Ipv4Addr,
        range: &RangeArgs,
        table: &impl MappingTable,
        now: Instant,
        deleting: bool,
    ) -> Result<Vec<ExplicitMapping>, Fault> {
        if range.start > range.end {
            return Err(Fault::new(
                UpnpError::InconsistentParameter,
                format!(
                    "NewStartPort {} is above NewEndPort {}",
                    range.start, range.end
                ),
            ));
        }
        if deleting && range.manage && !self.config.allow_other_hosts {
            return Err(Fault::new(
                UpnpError::NotAuthorized,
                "NewManage needs upnp.allow_other_hosts",
            ));
        }
        let found: Vec<ExplicitMapping> = self
            .entries(table, now)
            .iter()
            .filter(|m| m.key.protocol == range.protocol)
            .filter(|m| (range.start..=range.end).contains(&m.external.port()))
            .filter(|m| range.manage || m.key.internal == client)
            .cloned()
            .collect();
        if found.is_empty() {
            return Err(Fault::new(
                UpnpError::PortMappingNotFound,
                "no mapping in the range",
            ));
        }
        Ok(found)
    }

    /// AddPortMapping (`any` false: that external port or a fault) and
    /// AddAnyPortMapping (`any`: the port asked for when free, else another).
    /// Returns the external port.
    fn add(
        &mut self,
        now: Instant,
        client: Ipv4Addr,
        version: Version,
        add: &AddArgs,
        any: bool,
        table: &mut impl MappingTable,
    ) -> Result<u16, Fault> {
        // IGD:1 had no 606; miniupnpd answers what IGD:2 calls 606 with 718 there.
        let not_authorized = match version {
            Version::V1 => UpnpError::ConflictInMappingEntry,
            Version::V2 => UpnpError::NotAuthorized,
        };
        let id = add.id;
        if add.internal_port == 0 {
            return Err(Fault::new(
                if version == Version::V2 {
                    UpnpError::WildCardNotPermittedInIntPort
                } else {
                    UpnpError::InvalidArgs
                },
                "NewInternalPort 0",
            ));
        }
        if id.external_port == 0 && !any {
            return Err(Fault::new(
                UpnpError::WildCardNotPermittedInExtPort,
                "NewExternalPort 0 (wildcard)",
            ));
        }
        if !add.enabled {
            return Err(Fault::new(
                UpnpError::InvalidArgs,
                "disabled mappings (NewEnabled 0) are not kept",
            ));
        }
        let internal = add.internal_client.unwrap_or(client);
        if internal != client && !self.config.allow_other_hosts {
            return Err(Fault::new(
                not_authorized,
                format!("InternalClient {internal} is not the requester {client} (upnp.allow_other_hosts is off)"),
            ));
        }
        if table.lan_of(internal).is_none() {
            return Err(Fault::new(
                not_authorized,
                format!("InternalClient {internal} is no LAN host"),
            ));
        }
        if table.external_address().is_none() {
            return Err(Fault::new(
                UpnpError::ActionFailed,
                "the gateway has no external address",
            ));
        }
        let (lease, capped_from) = match add.lease {
            0 => (self.config.max_lease, Some(0)),
            l if l > self.config.max_lease => (self.config.max_lease, Some(l)),
            l => (l, None),
        };
        let key = MappingKey {
            internal,
            protocol: id.protocol,
            internal_port: add.internal_port,
        };
        let existing = table.explicit(&key).filter(|m| m.expires > now);
        if let Some(m) = &existing {
            if m.origin != Origin::Upnp {
                return Err(Fault::new(
                    UpnpError::ConflictWithOtherMechanisms,
                    format!(
                        "{} {} is mapped by {}",
                        id.protocol,
                        key.internal_endpoint(),
                        m.origin.name()
                    ),
                ));
            }
            if !any && m.external.port() != id.external_port {
                return Err(Fault::new(
                    UpnpError::ConflictInMappingEntry,
                    format!(
                        "{} {} is mapped on external port {} already (one external port per internal endpoint)",
                        id.protocol,
                        key.internal_endpoint(),
                        m.external.port()
                    ),
                ));
            }
        }
        if !any {
            let holder = live_explicit(table, now).into_iter().find(|m| {
                m.key.protocol == id.protocol
                    && m.external.port() == id.external_port
                    && m.key != key
            });
            if let Some(other) = holder {
                let error = if other.origin == Origin::Upnp {
                    UpnpError::ConflictInMappingEntry
                } else {
                    UpnpError::ConflictWithOtherMechanisms
                };
                return Err(Fault::new(
                    error,
                    format!(
                        "external port {} is {}'s ({})",
                        id.external_port,
                        other.key.internal,
                        other.origin.name()
                    ),
                ));
            }
        }
        let ports = self
            .policy
            .permitted_external_ports(internal, add.internal_port);
        let permitted = |p: u16| ports.iter().any(|s| s.contains(p));
        let denied = if any {
            ports.is_empty()
                || existing
                    .as_ref()
                    .is_some_and(|m| !permitted(m.external.port()))
        } else {
            !permitted(id.external_port)
        };
        if denied {
            return Err(Fault::new(
                not_authorized,
                format!(
                    "the port rules (pcp.rules) deny {} {} on that external port",
                    id.protocol,
                    key.internal_endpoint()
                ),
            ));
        }
        if existing.is_none() {
            admit(&self.policy, &key, now, table)
                .map_err(|q| Fault::new(UpnpError::NoPortMapsAvailable, q.reason))?;
        }
        let description = clean_description(&add.description);
        let install = Install {
            key,
            origin: Origin::Upnp,
            nonce: UPNP_NONCE,
            lifetime: lease,
            expires: now + secs(lease),
            suggested_address: None,
            suggested_port: (id.external_port != 0 && permitted(id.external_port))
                .then_some(id.external_port),
            prefer_failure: !any,
            external_ports: ports,
            filters: remote_filter(id.remote_host),
            reply_to: SocketAddrV4::new(client, 0),
            description: description.clone(),
        };
        let external = table.install(&install).map_err(|e| {
            let error = match e {
                TableError::CannotProvideExternal => UpnpError::ConflictInMappingEntry,
                TableError::NoResources | TableError::QuotaExceeded => {
                    UpnpError::NoPortMapsAvailable
                }
                TableError::NotAuthorized | TableError::NonceMismatch => not_authorized,
                TableError::ExcessiveRemotePeers => UpnpError::InvalidArgs,
                TableError::NetworkFailure => UpnpError::ActionFailed,
            };
            Fault::new(error, e.to_string())
        })?;
        let event = MappingEvent {
            client,
            protocol: id.protocol,
            internal: key.internal_endpoint(),
            external,
            lease,
            capped_from,
            description,
            any,
        };
        self.push(if existing.is_some() {
            Event::Renewed(event)
        } else {
            Event::Created(event)
        });
        Ok(external.port())
    }
}

fn no_entry(id: &EntryId) -> Fault {
    Fault::new(
        UpnpError::NoSuchEntryInArray,
        format!(
            "no UPnP mapping of {} external port {}",
            id.protocol, id.external_port
        ),
    )
}

/// Explicit mappings whose lifetime has not ended.
fn live_explicit(table: &impl MappingTable, now: Instant) -> Vec<ExplicitMapping> {
    table
        .explicit_all()
        .into_iter()
        .filter(|m| m.expires > now)
        .collect()
}

/// UPnP's port mapping array: the live UPnP mappings by protocol and external port.
fn upnp_entries(table: &impl MappingTable, now: Instant) -> Vec<ExplicitMapping> {
    let mut out: Vec<ExplicitMapping> = live_explicit(table, now)
        .into_iter()
        .filter(|m| m.origin == Origin::Upnp)
        .collect();
    out.sort_by_key(|m| (m.key.protocol, m.external.port()));
    out
}

/// The mapping of `entries` a control point names; a RemoteHost must match its
/// filter.
fn find_in(entries: &[ExplicitMapping], id: &EntryId) -> Option<ExplicitMapping> {
    entries
        .iter()
        .find(|m| {
            m.key.protocol == id.protocol
                && m.external.port() == id.external_port
                && (id.remote_host.is_none() || remote_of(m) == id.remote_host)
        })
        .cloned()
}

/// Seconds left of a mapping's lease (at least 1 while it lives).
fn lease_left(m: &ExplicitMapping, now: Instant) -> u32 {
    let left = m.expires.saturating_duration_since(now);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX).max(1)
}

fn entry_outputs(m: &ExplicitMapping, now: Instant) -> Vec<(&'static str, String)> {
    vec![
        ("NewInternalPort", m.key.internal_port.to_string()),
        ("NewInternalClient", m.key.internal.to_string()),
        ("NewEnabled", "1".to_owned()),
        ("NewPortMappingDescription", m.description.clone()),
        ("NewLeaseDuration", lease_left(m, now).to_string()),
    ]
}

/// GetListOfPortMappings' `NewPortListing`: a `p:PortMappingList` document
/// (WANIPConnection:2 §2.6), sent in a CDATA section of the response.
fn port_listing(entries: &[ExplicitMapping], now: Instant) -> String {
    let doc = soap::xml_document(|w| {
        w.create_element("p:PortMappingList")
            .with_attribute(("xmlns:p", "urn:schemas-upnp-org:gw:WANIPConnection"))
            .with_attribute(("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"))
            .with_attribute((
                "xsi:schemaLocation",
                "urn:schemas-upnp-org:gw:WANIPConnection http://www.upnp.org/schemas/gw/WANIPConnection-v2.xsd",
            ))
            .write_inner_content(|w| {
                for m in entries {
                    w.create_element("p:PortMappingEntry")
                        .write_inner_content(|w| {
                            let remote = remote_of(m).map_or_else(String::new, |a| a.to_string());
                            soap::text_element(w, "p:NewRemoteHost", &remote)?;
                            soap::text_element(w, "p:NewExternalPort", &m.external.port().to_string())?;
                            soap::text_element(w, "p:NewProtocol", protocol_name(m.key.protocol))?;
                            soap::text_element(w, "p:NewInternalPort", &m.key.internal_port.to_string())?;
                            soap::text_element(w, "p:NewInternalClient", &m.key.internal.to_string())?;
                            soap::text_element(w, "p:NewEnabled", "1")?;
                            soap::text_element(w, "p:NewDescription", &m.description)?;
                            soap::text_element(w, "p:NewLeaseTime", &lease_left(m, now).to_string())
                        })
                        .map(|_| ())?;
                }
                Ok(())
            })
            .map(|_| ())
    });
    String::from_utf8_lossy(&doc).into_owned()
}

#[cfg(test)]
mod tests;
