//! SOAP control of WANIPConnection (UDA 1.1 §3.2, IGD WANIPConnection:1 and :2): the
//! request codec, the typed [`Action`]s, responses and UPnP faults.
//!
//! Requests are read with `quick-xml`'s pull reader, which resolves nothing but the
//! five predefined entities and character references: a `<!DOCTYPE` (and with it any
//! `<!ENTITY` declaration) is refused outright, as are processing instructions, so
//! no entity expansion or external entity can happen. Depth, argument count and
//! argument length are bounded. Responses are written with `quick-xml`'s writer, so
//! every value is escaped.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;

use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::{Reader, Writer};

use super::{cif_service_urn, service_urn, Version, URN_PREFIX};
use crate::pcp::table::Protocol;

/// The SOAP 1.1 envelope namespace.
pub const ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The SOAP 1.1 encoding style UPnP requires.
pub const ENCODING_STYLE: &str = "http://schemas.xmlsoap.org/soap/encoding/";
/// The namespace of a fault's `UPnPError` detail.
pub const CONTROL_NS: &str = "urn:schemas-upnp-org:control-1-0";

/// Bounds on what a request may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Element nesting (Envelope, Body, action, argument: 4 needed).
    pub max_depth: usize,
    /// Arguments of the action.
    pub max_args: usize,
    /// Characters of one argument's value.
    pub max_value: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 8,
            max_args: 16,
            max_value: 1024,
        }
    }
}

/// Why a control request is not a SOAP call of ours. [`SoapError::fault`] says which
/// get a UPnP fault; the others are answered 400 Bad Request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SoapError {
    /// The body is not UTF-8.
    #[error("the body is not UTF-8")]
    NotUtf8,
    /// Not well-formed XML, or an entity other than the predefined ones.
    #[error("malformed XML: {0}")]
    Xml(String),
    /// A document type declaration (and so possibly entity declarations).
    #[error("DOCTYPE and ENTITY declarations are not accepted")]
    Dtd,
    /// A processing instruction other than the XML declaration.
    #[error("processing instructions are not accepted")]
    ProcessingInstruction,
    /// Nested deeper than [`Limits::max_depth`].
    #[error("elements nested deeper than {0}")]
    TooDeep(usize),
    /// More arguments than [`Limits::max_args`].
    #[error("more than {0} arguments")]
    TooManyArgs(usize),
    /// An argument longer than [`Limits::max_value`].
    #[error("argument {0} longer than the limit")]
    ValueTooLong(String),
    /// An argument with elements inside.
    #[error("argument {0} holds elements, not text")]
    NestedArg(String),
    /// No `Envelope` root, no `Body`, or no action element in it.
    #[error("not a SOAP envelope with a Body holding one action: {0}")]
    Structure(&'static str),
    /// No `SOAPACTION` header, or not `"SERVICE-TYPE#ACTION"`.
    #[error("missing or malformed SOAPACTION header")]
    SoapActionHeader,
    /// A service other than WANIPConnection:1 or :2.
    #[error("service {0} is not served here")]
    Service(String),
    /// The header and the body name different actions.
    #[error("SOAPACTION names {header}, the body {body}")]
    ActionMismatch {
        /// Named by the header.
        header: String,
        /// Named by the body.
        body: String,
    },
}

impl SoapError {
    /// The UPnP error a fault carries for this, or `None` for a request that is not
    /// SOAP at all (400 Bad Request).
    #[must_use]
    pub const fn fault(&self) -> Option<UpnpError> {
        match self {
            Self::Service(_) | Self::ActionMismatch { .. } => Some(UpnpError::InvalidAction),
            Self::TooManyArgs(_) | Self::ValueTooLong(_) | Self::NestedArg(_) => {
                Some(UpnpError::InvalidArgs)
            }
            _ => None,
        }
    }
}

/// A parsed control request: which service version, which action, its arguments as
/// text, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// WANIPConnection's version named by `SOAPACTION`.
    pub version: Version,
    /// The action's name.
    pub action: String,
    /// Arguments, name and unescaped value.
    pub args: Vec<(String, String)>,
}

impl Call {
    /// The value of argument `name`.
    #[must_use]
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `SOAPACTION: "urn:schemas-upnp-org:service:WANIPConnection:2#AddPortMapping"`
/// (quotes optional): the service version and the action.
///
/// # Errors
/// When the header is malformed or names another service.
pub fn parse_soap_action(header: &str) -> Result<(Version, String), SoapError> {
    let (service, action) = split_soap_action(header)?;
    let version = service
        .strip_prefix(URN_PREFIX)
        .and_then(|s| s.strip_prefix("service:WANIPConnection:"))
        .and_then(|v| v.parse::<u32>().ok())
        .and_then(Version::from_number)
        .ok_or_else(|| SoapError::Service(service.chars().take(80).collect()))?;
    Ok((version, action.to_owned()))
}

/// `SOAPACTION`'s service type and action name.
fn split_soap_action(header: &str) -> Result<(&str, &str), SoapError> {
    let value = header.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let (service, action) = value.split_once('#').ok_or(SoapError::SoapActionHeader)?;
    if action.is_empty()
        || !action
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(SoapError::SoapActionHeader);
    }
    Ok((service, action))
}

/// Parses a control request to WANCommonInterfaceConfig:1: the `SOAPACTION`
/// header's value and the body; returns the action and its arguments.
///
/// # Errors
/// When either is malformed, breaks `limits`, or names another service.
pub fn parse_cif_call(
    soap_action: Option<&str>,
    body: &[u8],
    limits: &Limits,
) -> Result<(String, Vec<(String, String)>), SoapError> {
    let (service, action) = split_soap_action(soap_action.ok_or(SoapError::SoapActionHeader)?)?;
    if service != cif_service_urn() {
        return Err(SoapError::Service(service.chars().take(80).collect()));
    }
    let args = parse_envelope(action, body, limits)?;
    Ok((action.to_owned(), args))
}

/// Where the reader is in the envelope.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Outside,
    Envelope,
    Header,
    Body,
    Action,
    Arg,
    AfterAction,
}

fn local_name(name: &[u8]) -> Cow<'_, str> {
    let local = name.rsplit(|b| *b == b':').next().unwrap_or(name);
    String::from_utf8_lossy(local)
}

/// Parses a control request: the `SOAPACTION` header's value and the body.
///
/// # Errors
/// When either is malformed, breaks `limits`, or names a service not served here.
pub fn parse_call(
    soap_action: Option<&str>,
    body: &[u8],
    limits: &Limits,
) -> Result<Call, SoapError> {
    let (version, action) = parse_soap_action(soap_action.ok_or(SoapError::SoapActionHeader)?)?;
    let args = parse_envelope(&action, body, limits)?;
    Ok(Call {
        version,
        action,
        args,
    })
}

/// Reads the envelope of a call to `action`: its arguments.
fn parse_envelope(
    action: &str,
    body: &[u8],
    limits: &Limits,
) -> Result<Vec<(String, String)>, SoapError> {
    let text = std::str::from_utf8(body).map_err(|_| SoapError::NotUtf8)?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut place = Place::Outside;
    let mut depth = 0usize;
    let mut header_depth = 0usize;
    let mut body_action: Option<String> = None;
    let mut args: Vec<(String, String)> = Vec::new();
    let xml = |e: quick_xml::Error| SoapError::Xml(e.to_string());
    loop {
        let event = reader.read_event().map_err(xml)?;
        match event {
            Event::DocType(_) => return Err(SoapError::Dtd),
            Event::PI(_) => return Err(SoapError::ProcessingInstruction),
            Event::Decl(_) | Event::Comment(_) => {}
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let name = local_name(e.name().as_ref()).into_owned();
                if !empty {
                    depth += 1;
                    if depth > limits.max_depth {
                        return Err(SoapError::TooDeep(limits.max_depth));
                    }
                }
                place = match place {
                    Place::Outside if name == "Envelope" => {
                        if empty {
                            return Err(SoapError::Structure("empty Envelope"));
                        }
                        Place::Envelope
                    }
                    Place::Outside => return Err(SoapError::Structure("the root is no Envelope")),
                    Place::Envelope if name == "Header" && body_action.is_none() => {
                        if empty {
                            Place::Envelope
                        } else {
                            header_depth = depth;
                            Place::Header
                        }
                    }
                    Place::Envelope if name == "Body" => {
                        if body_action.is_some() || empty {
                            return Err(SoapError::Structure("a Body without one action"));
                        }
                        Place::Body
                    }
                    Place::Envelope => {
                        return Err(SoapError::Structure(
                            "an Envelope holds a Header and a Body",
                        ))
                    }
                    Place::Header => Place::Header,
                    Place::Body => {
                        body_action = Some(name);
                        if empty {
                            Place::AfterAction
                        } else {
                            Place::Action
                        }
                    }
                    Place::Action => {
                        if args.len() >= limits.max_args {
                            return Err(SoapError::TooManyArgs(limits.max_args));
                        }
                        args.push((name, String::new()));
                        if empty {
                            Place::Action
                        } else {
                            Place::Arg
                        }
                    }
                    Place::Arg => {
                        let arg = args.last().map(|a| a.0.clone()).unwrap_or_default();
                        return Err(SoapError::NestedArg(arg));
                    }
                    Place::AfterAction => {
                        return Err(SoapError::Structure("more than one action in the Body"))
                    }
                };
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                place = match place {
                    Place::Header if depth < header_depth => Place::Envelope,
                    Place::Header => Place::Header,
                    Place::Arg => Place::Action,
                    Place::Action => Place::AfterAction,
                    Place::AfterAction | Place::Body => Place::Envelope,
                    Place::Envelope => Place::Outside,
                    Place::Outside => Place::Outside,
                };
            }
            Event::Text(t) => {
                let value = t.unescape().map_err(xml)?;
                if place == Place::Arg {
                    push_value(&mut args, &value, limits)?;
                }
            }
            Event::CData(c) => {
                if place == Place::Arg {
                    let raw = c.into_inner();
                    let value = std::str::from_utf8(&raw).map_err(|_| SoapError::NotUtf8)?;
                    push_value(&mut args, value, limits)?;
                }
            }
            Event::Eof => break,
        }
    }
    if depth != 0 || place != Place::Outside {
        return Err(SoapError::Structure("the document ends inside an element"));
    }
    let body_action = body_action.ok_or(SoapError::Structure("no action in the Body"))?;
    if body_action != action {
        return Err(SoapError::ActionMismatch {
            header: action.to_owned(),
            body: body_action,
        });
    }
    Ok(args)
}

fn push_value(
    args: &mut [(String, String)],
    value: &str,
    limits: &Limits,
) -> Result<(), SoapError> {
    if let Some((name, v)) = args.last_mut() {
        if v.chars().count() + value.chars().count() > limits.max_value {
            return Err(SoapError::ValueTooLong(name.clone()));
        }
        v.push_str(value);
    }
    Ok(())
}

/// UPnP error codes of WANIPConnection (UDA 1.1 §3.2.2 and the IGD:2 WANIPConnection
/// service, §2.5). natgw returns the ones its behaviour can cause; see
/// docs/port-mapping.md for which and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpnpError {
    /// 401: no such action (or not in the version asked for).
    InvalidAction,
    /// 402: missing, extra or ill-typed arguments.
    InvalidArgs,
    /// 501: the gateway could not do it (no external address, maps failing).
    ActionFailed,
    /// 606: the control point may not do this (InternalClient ≠ requester, or the
    /// port rules deny it).
    NotAuthorized,
    /// 713: GetGenericPortMappingEntry past the last entry.
    SpecifiedArrayIndexInvalid,
    /// 714: no mapping with that RemoteHost, ExternalPort and Protocol.
    NoSuchEntryInArray,
    /// 716: AddPortMapping with ExternalPort 0 (wildcard).
    WildCardNotPermittedInExtPort,
    /// 718: the external port is another client's, or the internal endpoint is
    /// mapped on another external port.
    ConflictInMappingEntry,
    /// 724: a device that needs InternalPort = ExternalPort (natgw does not).
    SamePortValuesRequired,
    /// 725: a device that only supports lease 0 (natgw does not).
    OnlyPermanentLeasesSupported,
    /// 726: a device that supports only a wildcard RemoteHost.
    RemoteHostOnlySupportsWildcard,
    /// 727: a device that supports only a wildcard ExternalPort (natgw does not).
    ExternalPortOnlySupportsWildcard,
    /// 728: no port free, or a quota reached.
    NoPortMapsAvailable,
    /// 729: the port or internal endpoint is held by PCP, NAT-PMP or a static forward.
    ConflictWithOtherMechanisms,
    /// 730: DeletePortMappingRange or GetListOfPortMappings found nothing.
    PortMappingNotFound,
    /// 732: InternalPort 0 (wildcard).
    WildCardNotPermittedInIntPort,
    /// 733: StartPort above EndPort.
    InconsistentParameter,
}

impl UpnpError {
    /// The numeric code.
    #[must_use]
    pub const fn code(self) -> u16 {
        match self {
            Self::InvalidAction => 401,
            Self::InvalidArgs => 402,
            Self::ActionFailed => 501,
            Self::NotAuthorized => 606,
            Self::SpecifiedArrayIndexInvalid => 713,
            Self::NoSuchEntryInArray => 714,
            Self::WildCardNotPermittedInExtPort => 716,
            Self::ConflictInMappingEntry => 718,
            Self::SamePortValuesRequired => 724,
            Self::OnlyPermanentLeasesSupported => 725,
            Self::RemoteHostOnlySupportsWildcard => 726,
            Self::ExternalPortOnlySupportsWildcard => 727,
            Self::NoPortMapsAvailable => 728,
            Self::ConflictWithOtherMechanisms => 729,
            Self::PortMappingNotFound => 730,
            Self::WildCardNotPermittedInIntPort => 732,
            Self::InconsistentParameter => 733,
        }
    }

    /// The errorDescription the specifications give.
    #[must_use]
    pub const fn description(self) -> &'static str {
        match self {
            Self::InvalidAction => "Invalid Action",
            Self::InvalidArgs => "Invalid Args",
            Self::ActionFailed => "Action Failed",
            Self::NotAuthorized => "Action not authorized",
            Self::SpecifiedArrayIndexInvalid => "SpecifiedArrayIndexInvalid",
            Self::NoSuchEntryInArray => "NoSuchEntryInArray",
            Self::WildCardNotPermittedInExtPort => "WildCardNotPermittedInExtPort",
            Self::ConflictInMappingEntry => "ConflictInMappingEntry",
            Self::SamePortValuesRequired => "SamePortValuesRequired",
            Self::OnlyPermanentLeasesSupported => "OnlyPermanentLeasesSupported",
            Self::RemoteHostOnlySupportsWildcard => "RemoteHostOnlySupportsWildcard",
            Self::ExternalPortOnlySupportsWildcard => "ExternalPortOnlySupportsWildcard",
            Self::NoPortMapsAvailable => "NoPortMapsAvailable",
            Self::ConflictWithOtherMechanisms => "ConflictWithOtherMechanisms",
            Self::PortMappingNotFound => "PortMappingNotFound",
            Self::WildCardNotPermittedInIntPort => "WildCardNotPermittedInIntPort",
            Self::InconsistentParameter => "InconsistentParameter",
        }
    }
}

impl fmt::Display for UpnpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.description())
    }
}

/// A refused action: the UPnP error, and why (for the log; the control point gets
/// only the code and the standard description).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The error.
    pub error: UpnpError,
    /// Why, in words.
    pub reason: String,
}

impl Fault {
    /// A fault with a reason.
    pub fn new(error: UpnpError, reason: impl Into<String>) -> Self {
        Self {
            error,
            reason: reason.into(),
        }
    }
}

/// The actions of WANIPConnection natgw serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    /// GetConnectionTypeInfo.
    GetConnectionTypeInfo,
    /// GetStatusInfo.
    GetStatusInfo,
    /// GetExternalIPAddress.
    GetExternalIpAddress,
    /// GetGenericPortMappingEntry.
    GetGenericPortMappingEntry,
    /// GetSpecificPortMappingEntry.
    GetSpecificPortMappingEntry,
    /// AddPortMapping.
    AddPortMapping,
    /// AddAnyPortMapping (version 2).
    AddAnyPortMapping,
    /// DeletePortMapping.
    DeletePortMapping,
    /// DeletePortMappingRange (version 2).
    DeletePortMappingRange,
    /// GetListOfPortMappings (version 2).
    GetListOfPortMappings,
}

/// An argument of an action: its name and the state variable it relates to.
pub type ArgSpec = (&'static str, &'static str);

const ENTRY_ID: &[ArgSpec] = &[
    ("NewRemoteHost", "RemoteHost"),
    ("NewExternalPort", "ExternalPort"),
    ("NewProtocol", "PortMappingProtocol"),
];
const ADD: &[ArgSpec] = &[
    ("NewRemoteHost", "RemoteHost"),
    ("NewExternalPort", "ExternalPort"),
    ("NewProtocol", "PortMappingProtocol"),
    ("NewInternalPort", "InternalPort"),
    ("NewInternalClient", "InternalClient"),
    ("NewEnabled", "PortMappingEnabled"),
    ("NewPortMappingDescription", "PortMappingDescription"),
    ("NewLeaseDuration", "PortMappingLeaseDuration"),
];
const ENTRY: &[ArgSpec] = &[
    ("NewInternalPort", "InternalPort"),
    ("NewInternalClient", "InternalClient"),
    ("NewEnabled", "PortMappingEnabled"),
    ("NewPortMappingDescription", "PortMappingDescription"),
    ("NewLeaseDuration", "PortMappingLeaseDuration"),
];
const GENERIC_ENTRY: &[ArgSpec] = &[
    ("NewRemoteHost", "RemoteHost"),
    ("NewExternalPort", "ExternalPort"),
    ("NewProtocol", "PortMappingProtocol"),
    ("NewInternalPort", "InternalPort"),
    ("NewInternalClient", "InternalClient"),
    ("NewEnabled", "PortMappingEnabled"),
    ("NewPortMappingDescription", "PortMappingDescription"),
    ("NewLeaseDuration", "PortMappingLeaseDuration"),
];
const RANGE: &[ArgSpec] = &[
    ("NewStartPort", "ExternalPort"),
    ("NewEndPort", "ExternalPort"),
    ("NewProtocol", "PortMappingProtocol"),
    ("NewManage", "A_ARG_TYPE_Manage"),
];
const LIST: &[ArgSpec] = &[
    ("NewStartPort", "ExternalPort"),
    ("NewEndPort", "ExternalPort"),
    ("NewProtocol", "PortMappingProtocol"),
    ("NewManage", "A_ARG_TYPE_Manage"),
    ("NewNumberOfPorts", "PortMappingNumberOfEntries"),
];

impl ActionKind {
    /// Every action, in the order the SCPD lists them.
    pub const ALL: [Self; 10] = [
        Self::GetConnectionTypeInfo,
        Self::GetStatusInfo,
        Self::GetExternalIpAddress,
        Self::GetGenericPortMappingEntry,
        Self::GetSpecificPortMappingEntry,
        Self::AddPortMapping,
        Self::AddAnyPortMapping,
        Self::DeletePortMapping,
        Self::DeletePortMappingRange,
        Self::GetListOfPortMappings,
    ];

    /// The action's name on the wire.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::GetConnectionTypeInfo => "GetConnectionTypeInfo",
            Self::GetStatusInfo => "GetStatusInfo",
            Self::GetExternalIpAddress => "GetExternalIPAddress",
            Self::GetGenericPortMappingEntry => "GetGenericPortMappingEntry",
            Self::GetSpecificPortMappingEntry => "GetSpecificPortMappingEntry",
            Self::AddPortMapping => "AddPortMapping",
            Self::AddAnyPortMapping => "AddAnyPortMapping",
            Self::DeletePortMapping => "DeletePortMapping",
            Self::DeletePortMappingRange => "DeletePortMappingRange",
            Self::GetListOfPortMappings => "GetListOfPortMappings",
        }
    }

    /// The first WANIPConnection version with this action.
    #[must_use]
    pub const fn since(self) -> Version {
        match self {
            Self::AddAnyPortMapping
            | Self::DeletePortMappingRange
            | Self::GetListOfPortMappings => Version::V2,
            _ => Version::V1,
        }
    }

    /// Input arguments.
    #[must_use]
    pub const fn inputs(self) -> &'static [ArgSpec] {
        match self {
            Self::GetConnectionTypeInfo | Self::GetStatusInfo | Self::GetExternalIpAddress => &[],
            Self::GetGenericPortMappingEntry => {
                &[("NewPortMappingIndex", "PortMappingNumberOfEntries")]
            }
            Self::GetSpecificPortMappingEntry | Self::DeletePortMapping => ENTRY_ID,
            Self::AddPortMapping | Self::AddAnyPortMapping => ADD,
            Self::DeletePortMappingRange => RANGE,
            Self::GetListOfPortMappings => LIST,
        }
    }

    /// Output arguments.
    #[must_use]
    pub const fn outputs(self) -> &'static [ArgSpec] {
        match self {
            Self::GetConnectionTypeInfo => &[
                ("NewConnectionType", "ConnectionType"),
                ("NewPossibleConnectionTypes", "PossibleConnectionTypes"),
            ],
            Self::GetStatusInfo => &[
                ("NewConnectionStatus", "ConnectionStatus"),
                ("NewLastConnectionError", "LastConnectionError"),
                ("NewUptime", "Uptime"),
            ],
            Self::GetExternalIpAddress => &[("NewExternalIPAddress", "ExternalIPAddress")],
            Self::GetGenericPortMappingEntry => GENERIC_ENTRY,
            Self::GetSpecificPortMappingEntry => ENTRY,
            Self::AddAnyPortMapping => &[("NewReservedPort", "ExternalPort")],
            Self::AddPortMapping | Self::DeletePortMapping | Self::DeletePortMappingRange => &[],
            Self::GetListOfPortMappings => &[("NewPortListing", "A_ARG_TYPE_PortListing")],
        }
    }

    /// The action named `name` in `version`, if served.
    #[must_use]
    pub fn find(name: &str, version: Version) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name && a.since() <= version)
    }
}

/// What identifies a port mapping to a control point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryId {
    /// Remote host; `None` = wildcard (empty).
    pub remote_host: Option<Ipv4Addr>,
    /// External port.
    pub external_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// The arguments of AddPortMapping and AddAnyPortMapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddArgs {
    /// RemoteHost, ExternalPort (0 = wildcard), Protocol.
    pub id: EntryId,
    /// Internal port (0 = wildcard, refused).
    pub internal_port: u16,
    /// Internal client; `None` when empty (taken as the requester).
    pub internal_client: Option<Ipv4Addr>,
    /// NewEnabled.
    pub enabled: bool,
    /// NewPortMappingDescription.
    pub description: String,
    /// NewLeaseDuration, seconds (0 = "permanent").
    pub lease: u32,
}

/// The arguments of DeletePortMappingRange and GetListOfPortMappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeArgs {
    /// First external port.
    pub start: u16,
    /// Last external port.
    pub end: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// NewManage: act on every host's mappings (if allowed), not only the requester's.
    pub manage: bool,
}

/// An action with its arguments checked and typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// GetConnectionTypeInfo.
    GetConnectionTypeInfo,
    /// GetStatusInfo.
    GetStatusInfo,
    /// GetExternalIPAddress.
    GetExternalIpAddress,
    /// GetGenericPortMappingEntry.
    GetGenericPortMappingEntry {
        /// NewPortMappingIndex.
        index: u16,
    },
    /// GetSpecificPortMappingEntry.
    GetSpecificPortMappingEntry(EntryId),
    /// AddPortMapping.
    AddPortMapping(AddArgs),
    /// AddAnyPortMapping.
    AddAnyPortMapping(AddArgs),
    /// DeletePortMapping.
    DeletePortMapping(EntryId),
    /// DeletePortMappingRange.
    DeletePortMappingRange(RangeArgs),
    /// GetListOfPortMappings.
    GetListOfPortMappings {
        /// Ports, protocol, manage.
        range: RangeArgs,
        /// NewNumberOfPorts: most entries to list (0 = all).
        number: u16,
    },
}

fn invalid(reason: impl Into<String>) -> Fault {
    Fault::new(UpnpError::InvalidArgs, reason)
}

impl Action {
    /// Types the arguments of `call` (UDA 1.1 §3.2.2: a missing argument or a value
    /// that is not of its type is 402 Invalid Args; an unknown action 401).
    ///
    /// # Errors
    /// The fault to answer with.
    pub fn from_call(call: &Call) -> Result<Self, Fault> {
        let kind = ActionKind::find(&call.action, call.version).ok_or_else(|| {
            Fault::new(
                UpnpError::InvalidAction,
                format!(
                    "WANIPConnection:{} has no action {}",
                    call.version.number(),
                    call.action
                ),
            )
        })?;
        for (name, _) in &call.args {
            if !kind.inputs().iter().any(|(n, _)| n == name) {
                return Err(invalid(format!("{} takes no argument {name}", kind.name())));
            }
        }
        let arg = |name: &str| {
            call.arg(name)
                .map(str::trim)
                .ok_or_else(|| invalid(format!("{} needs {name}", kind.name())))
        };
        Ok(match kind {
            ActionKind::GetConnectionTypeInfo => Self::GetConnectionTypeInfo,
            ActionKind::GetStatusInfo => Self::GetStatusInfo,
            ActionKind::GetExternalIpAddress => Self::GetExternalIpAddress,
            ActionKind::GetGenericPortMappingEntry => Self::GetGenericPortMappingEntry {
                index: number(arg("NewPortMappingIndex")?, "NewPortMappingIndex")?,
            },
            ActionKind::GetSpecificPortMappingEntry => {
                Self::GetSpecificPortMappingEntry(entry_id(&arg)?)
            }
            ActionKind::DeletePortMapping => Self::DeletePortMapping(entry_id(&arg)?),
            ActionKind::AddPortMapping | ActionKind::AddAnyPortMapping => {
                let add =
                    AddArgs {
                        id: entry_id(&arg)?,
                        internal_port: number(arg("NewInternalPort")?, "NewInternalPort")?,
                        internal_client: {
                            let v = arg("NewInternalClient")?;
                            if v.is_empty() {
                                None
                            } else {
                                Some(v.parse().map_err(|_| {
                                    invalid("NewInternalClient is not an IPv4 address")
                                })?)
                            }
                        },
                        enabled: boolean(arg("NewEnabled")?, "NewEnabled")?,
                        description: arg("NewPortMappingDescription")?.to_owned(),
                        lease: number(arg("NewLeaseDuration")?, "NewLeaseDuration")?,
                    };
                if kind == ActionKind::AddPortMapping {
                    Self::AddPortMapping(add)
                } else {
                    Self::AddAnyPortMapping(add)
                }
            }
            ActionKind::DeletePortMappingRange => Self::DeletePortMappingRange(range(&arg)?),
            ActionKind::GetListOfPortMappings => Self::GetListOfPortMappings {
                range: range(&arg)?,
                number: number(arg("NewNumberOfPorts")?, "NewNumberOfPorts")?,
            },
        })
    }
}

fn number<T: std::str::FromStr>(value: &str, name: &str) -> Result<T, Fault> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("{name} is not a number in range")));
    }
    value
        .parse()
        .map_err(|_| invalid(format!("{name} is not a number in range")))
}

fn boolean(value: &str, name: &str) -> Result<bool, Fault> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(invalid(format!("{name} is not a boolean"))),
    }
}

fn protocol(value: &str) -> Result<Protocol, Fault> {
    match value.to_ascii_uppercase().as_str() {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        _ => Err(invalid("NewProtocol is neither TCP nor UDP")),
    }
}

fn entry_id<'a>(arg: &impl Fn(&str) -> Result<&'a str, Fault>) -> Result<EntryId, Fault> {
    let remote = arg("NewRemoteHost")?;
    let remote_host = match remote {
        "" | "*" => None,
        text => Some(
            text.parse::<Ipv4Addr>()
                .map_err(|_| invalid("NewRemoteHost is neither empty nor an IPv4 address"))?,
        ),
    };
    let external = arg("NewExternalPort")?;
    Ok(EntryId {
        remote_host,
        external_port: if external == "*" {
            0
        } else {
            number(external, "NewExternalPort")?
        },
        protocol: protocol(arg("NewProtocol")?)?,
    })
}

fn range<'a>(arg: &impl Fn(&str) -> Result<&'a str, Fault>) -> Result<RangeArgs, Fault> {
    Ok(RangeArgs {
        start: number(arg("NewStartPort")?, "NewStartPort")?,
        end: number(arg("NewEndPort")?, "NewEndPort")?,
        protocol: protocol(arg("NewProtocol")?)?,
        manage: boolean(arg("NewManage")?, "NewManage")?,
    })
}

/// Runs `f` on an XML writer over a buffer and returns the bytes. Writing to a
/// `Vec` cannot fail; were it to, the document would be cut short, which the reader
/// on the other side reports.
pub(crate) fn xml_document(f: impl FnOnce(&mut Writer<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
    let mut w = Writer::new(Vec::with_capacity(1024));
    let _ = w
        .write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)))
        .and_then(|()| f(&mut w));
    w.into_inner()
}

/// `<name>text</name>`, the text escaped.
pub(crate) fn text_element(w: &mut Writer<Vec<u8>>, name: &str, text: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(text))
        .map(|_| ())
}

fn envelope(f: impl FnOnce(&mut Writer<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
    xml_document(|w| {
        w.create_element("s:Envelope")
            .with_attribute(("xmlns:s", ENVELOPE_NS))
            .with_attribute(("s:encodingStyle", ENCODING_STYLE))
            .write_inner_content(|w| {
                w.create_element("s:Body")
                    .write_inner_content(f)
                    .map(|_| ())
            })
            .map(|_| ())
    })
}

/// A successful action's response: `<u:ACTIONResponse>` with the output arguments
/// in order.
#[must_use]
///
/// `NewPortListing`, an XML document itself, goes in a CDATA section, as miniupnpd
/// sends it: miniupnpc reads the element's raw content as the document (escaped
/// text would show it no entries). The document escapes `>` in its text, so it never
/// holds the `]]>` that would end the section.
pub fn response(version: Version, action: ActionKind, outputs: &[(&str, String)]) -> Vec<u8> {
    let name = format!("u:{}Response", action.name());
    let service = service_urn(version);
    envelope(|w| {
        w.create_element(name.as_str())
            .with_attribute(("xmlns:u", service.as_str()))
            .write_inner_content(|w| {
                for (arg, value) in outputs {
                    if *arg == "NewPortListing" && !value.contains("]]>") {
                        w.create_element(*arg)
                            .write_cdata_content(quick_xml::events::BytesCData::new(value))?;
                    } else {
                        text_element(w, arg, value)?;
                    }
                }
                Ok(())
            })
            .map(|_| ())
    })
}

/// A successful WANCommonInterfaceConfig:1 action's response.
#[must_use]
pub fn cif_response(action: &str, outputs: &[(&str, String)]) -> Vec<u8> {
    let name = format!("u:{action}Response");
    let service = cif_service_urn();
    envelope(|w| {
        w.create_element(name.as_str())
            .with_attribute(("xmlns:u", service.as_str()))
            .write_inner_content(|w| {
                for (arg, value) in outputs {
                    text_element(w, arg, value)?;
                }
                Ok(())
            })
            .map(|_| ())
    })
}

/// A SOAP fault carrying a UPnP error (UDA 1.1 §3.2.2), answered with status 500.
#[must_use]
pub fn fault(error: UpnpError) -> Vec<u8> {
    envelope(|w| {
        w.create_element("s:Fault")
            .write_inner_content(|w| {
                text_element(w, "faultcode", "s:Client")?;
                text_element(w, "faultstring", "UPnPError")?;
                w.create_element("detail")
                    .write_inner_content(|w| {
                        w.create_element("UPnPError")
                            .with_attribute(("xmlns", CONTROL_NS))
                            .write_inner_content(|w| {
                                text_element(w, "errorCode", &error.code().to_string())?;
                                text_element(w, "errorDescription", error.description())
                            })
                            .map(|_| ())
                    })
                    .map(|_| ())
            })
            .map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = "\"urn:schemas-upnp-org:service:WANIPConnection:2#AddPortMapping\"";

    fn add_body(extra: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"{ENVELOPE_NS}\" \
             s:encodingStyle=\"{ENCODING_STYLE}\"><s:Body>\
             <u:AddPortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\">\
             <NewRemoteHost></NewRemoteHost><NewExternalPort>8080</NewExternalPort>\
             <NewProtocol>TCP</NewProtocol><NewInternalPort>80</NewInternalPort>\
             <NewInternalClient>10.0.1.2</NewInternalClient><NewEnabled>1</NewEnabled>\
             <NewPortMappingDescription>web &amp; &#x263A;{extra}</NewPortMappingDescription>\
             <NewLeaseDuration>3600</NewLeaseDuration></u:AddPortMapping></s:Body></s:Envelope>"
        )
    }

    fn parse(header: &str, body: &str) -> Result<Call, SoapError> {
        parse_call(Some(header), body.as_bytes(), &Limits::default())
    }

    #[test]
    fn an_add_port_mapping_parses_into_typed_arguments() {
        let call = parse(V2, &add_body("")).unwrap();
        assert_eq!(
            (call.version, call.action.as_str()),
            (Version::V2, "AddPortMapping")
        );
        assert_eq!(call.args.len(), 8);
        let Action::AddPortMapping(add) = Action::from_call(&call).unwrap() else {
            panic!("not AddPortMapping")
        };
        assert_eq!(
            add.id,
            EntryId {
                remote_host: None,
                external_port: 8080,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            (add.internal_port, add.internal_client),
            (80, Some(Ipv4Addr::new(10, 0, 1, 2)))
        );
        assert_eq!((add.enabled, add.lease), (true, 3600));
        assert_eq!(
            add.description, "web & \u{263a}",
            "predefined entities and character references"
        );
    }

    #[test]
    fn doctype_entities_and_processing_instructions_are_refused() {
        let xxe = "<?xml version=\"1.0\"?><!DOCTYPE s [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\
                   <s:Envelope xmlns:s=\"a\"><s:Body><u:AddPortMapping>&x;</u:AddPortMapping></s:Body></s:Envelope>";
        assert_eq!(parse(V2, xxe), Err(SoapError::Dtd));
        let bomb = "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><lolz>&lol2;</lolz>";
        assert_eq!(parse(V2, bomb), Err(SoapError::Dtd));
        // An undeclared entity is an error, not an expansion.
        let entity = add_body("&x;");
        assert!(matches!(parse(V2, &entity), Err(SoapError::Xml(_))));
        let pi = "<?xml-stylesheet href=\"x\"?><s:Envelope/>";
        assert_eq!(parse(V2, pi), Err(SoapError::ProcessingInstruction));
    }

    #[test]
    fn structure_and_limits_are_enforced() {
        let deep = format!(
            "<s:Envelope><s:Body><u:AddPortMapping>{}</u:AddPortMapping></s:Body></s:Envelope>",
            "<a>".repeat(20)
        );
        assert!(matches!(
            parse(V2, &deep),
            Err(SoapError::TooDeep(8)) | Err(SoapError::NestedArg(_))
        ));
        let nested = "<s:Envelope><s:Body><u:AddPortMapping><NewRemoteHost><x/></NewRemoteHost>\
                      </u:AddPortMapping></s:Body></s:Envelope>";
        assert_eq!(
            parse(V2, nested),
            Err(SoapError::NestedArg("NewRemoteHost".into()))
        );
        let long = add_body(&"a".repeat(2000));
        assert_eq!(
            parse(V2, &long),
            Err(SoapError::ValueTooLong("NewPortMappingDescription".into()))
        );
        let many = format!(
            "<s:Envelope><s:Body><u:AddPortMapping>{}</u:AddPortMapping></s:Body></s:Envelope>",
            "<a>1</a>".repeat(17)
        );
        assert_eq!(parse(V2, &many), Err(SoapError::TooManyArgs(16)));
        assert!(matches!(parse(V2, "<x/>"), Err(SoapError::Structure(_))));
        assert!(matches!(
            parse(V2, "<s:Envelope><s:Body/></s:Envelope>"),
            Err(SoapError::Structure(_))
        ));
        assert!(matches!(
            parse(V2, "<s:Envelope><s:Body><a/><b/></s:Body></s:Envelope>"),
            Err(SoapError::Structure(_))
        ));
        assert!(matches!(
            parse(V2, "<s:Envelope><s:Body><a>"),
            Err(SoapError::Xml(_)) | Err(SoapError::Structure(_))
        ));
        assert!(matches!(
            parse(V2, "<s:Envelope><s:Body></x></s:Body></s:Envelope>"),
            Err(SoapError::Xml(_))
        ));
        assert_eq!(
            parse_call(Some(V2), b"\xff", &Limits::default()),
            Err(SoapError::NotUtf8)
        );
        // A Header is skipped whatever it holds.
        let header =
            add_body("").replace("<s:Body>", "<s:Header><x><y>1</y></x></s:Header><s:Body>");
        assert_eq!(parse(V2, &header).unwrap().args.len(), 8);
    }

    #[test]
    fn soapaction_names_the_service_and_must_match_the_body() {
        assert_eq!(
            parse_soap_action("urn:schemas-upnp-org:service:WANIPConnection:1#GetStatusInfo"),
            Ok((Version::V1, "GetStatusInfo".to_owned()))
        );
        let e =
            parse_soap_action("\"urn:schemas-upnp-org:service:WANPPPConnection:1#X\"").unwrap_err();
        assert_eq!(e.fault(), Some(UpnpError::InvalidAction));
        assert_eq!(
            parse_soap_action("nohash"),
            Err(SoapError::SoapActionHeader)
        );
        assert_eq!(
            parse_call(None, b"", &Limits::default()),
            Err(SoapError::SoapActionHeader)
        );
        let other = "\"urn:schemas-upnp-org:service:WANIPConnection:2#DeletePortMapping\"";
        assert!(matches!(
            parse(other, &add_body("")),
            Err(SoapError::ActionMismatch { .. })
        ));
    }

    #[test]
    fn arguments_are_checked_and_version_2_actions_need_version_2() {
        let call = |version, action: &str, args: &[(&str, &str)]| Call {
            version,
            action: action.to_owned(),
            args: args
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let err = |c: &Call| Action::from_call(c).unwrap_err().error;
        assert_eq!(
            err(&call(Version::V1, "AddAnyPortMapping", &[])),
            UpnpError::InvalidAction
        );
        assert_eq!(
            err(&call(Version::V2, "Frobnicate", &[])),
            UpnpError::InvalidAction
        );
        assert_eq!(
            err(&call(Version::V2, "DeletePortMapping", &[])),
            UpnpError::InvalidArgs
        );
        let id = [
            ("NewRemoteHost", ""),
            ("NewExternalPort", "70000"),
            ("NewProtocol", "TCP"),
        ];
        assert_eq!(
            err(&call(Version::V2, "DeletePortMapping", &id)),
            UpnpError::InvalidArgs
        );
        let id = [
            ("NewRemoteHost", ""),
            ("NewExternalPort", "7000"),
            ("NewProtocol", "SCTP"),
        ];
        assert_eq!(
            err(&call(Version::V2, "DeletePortMapping", &id)),
            UpnpError::InvalidArgs
        );
        let id = [
            ("NewRemoteHost", "host.example"),
            ("NewExternalPort", "7000"),
            ("NewProtocol", "udp"),
        ];
        assert_eq!(
            err(&call(Version::V2, "DeletePortMapping", &id)),
            UpnpError::InvalidArgs
        );
        let extra = [("NewPortMappingIndex", "1"), ("Evil", "1")];
        assert_eq!(
            err(&call(Version::V1, "GetGenericPortMappingEntry", &extra)),
            UpnpError::InvalidArgs
        );
        let ok = [
            ("NewRemoteHost", "*"),
            ("NewExternalPort", " 7000 "),
            ("NewProtocol", "udp"),
        ];
        assert_eq!(
            Action::from_call(&call(Version::V1, "GetSpecificPortMappingEntry", &ok)),
            Ok(Action::GetSpecificPortMappingEntry(EntryId {
                remote_host: None,
                external_port: 7000,
                protocol: Protocol::Udp
            }))
        );
    }

    #[test]
    fn responses_and_faults_escape_and_reparse() {
        let body = response(
            Version::V2,
            ActionKind::GetSpecificPortMappingEntry,
            &[("NewPortMappingDescription", "<b>&\"x\"".to_owned())],
        );
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.contains("<u:GetSpecificPortMappingEntryResponse xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\">"));
        assert!(text.contains("&lt;b&gt;&amp;"), "{text}");
        // Our own reader reads it back (as a control point's would).
        let again = parse_call(
            Some("urn:schemas-upnp-org:service:WANIPConnection:2#GetSpecificPortMappingEntryResponse"),
            &body,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(again.arg("NewPortMappingDescription"), Some("<b>&\"x\""));
        let f = String::from_utf8(fault(UpnpError::ConflictInMappingEntry)).unwrap();
        assert!(f.contains(
            "<errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription>"
        ));
        assert!(f.contains("<faultstring>UPnPError</faultstring>"));
    }
}
