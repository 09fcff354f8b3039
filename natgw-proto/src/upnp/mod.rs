//! UPnP Internet Gateway Device (IGD:1 and IGD:2), without I/O: the protocol half of
//! natgw's UPnP server, which shares the explicit mapping table with PCP and NAT-PMP
//! ([`crate::pcp::table::MappingTable`]).
//!
//! - [`ssdp`]: SSDP discovery: the M-SEARCH codec, the search responses and NOTIFY
//!   advertisements, and the [`ssdp::Responder`] engine that decides what to send and
//!   when.
//! - [`http`]: HTTP request framing (`httparse` plus limits) and responses.
//! - [`description`]: the device descriptions (IGD:2, and IGD:1 for old control
//!   points) and the WANIPConnection SCPDs, written with `quick-xml`.
//! - [`soap`]: the SOAP control codec: envelopes read by `quick-xml` with no DTD or
//!   entity processing, the typed [`soap::Action`]s, responses and UPnP faults.
//! - [`gena`]: the GENA subscription table and event bodies.
//! - [`engine`]: the IGD engine: an HTTP request, its source and the time in, the
//!   response and event notifications out, mappings through the shared table.
//!
//! The device tree served is InternetGatewayDevice → WANDevice → WANConnectionDevice
//! → WANIPConnection, at version 2, and the same at version 1 under a second
//! description URL for control points that only know IGD:1 (a search for a version-1
//! type is answered with that type and that URL, as UDA 1.1 §1.3.2 asks).

pub mod description;
pub mod engine;
pub mod gena;
pub mod http;
pub mod soap;
pub mod ssdp;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The UPnP forum's namespace of standard device and service types.
pub const URN_PREFIX: &str = "urn:schemas-upnp-org:";

/// Where the IGD:2 device description is served.
pub const DESCRIPTION_PATH: &str = "/rootDesc.xml";
/// Where the IGD:1 device description is served.
pub const DESCRIPTION_V1_PATH: &str = "/rootDesc1.xml";
/// Where WANIPConnection:2's SCPD is served.
pub const SCPD_PATH: &str = "/WANIPCn.xml";
/// Where WANIPConnection:1's SCPD is served.
pub const SCPD_V1_PATH: &str = "/WANIPCn1.xml";
/// WANIPConnection's control URL (both versions).
pub const CONTROL_PATH: &str = "/ctl/IPConn";
/// WANIPConnection's event subscription URL (both versions).
pub const EVENT_PATH: &str = "/evt/IPConn";
/// WANIPConnection's service id.
pub const SERVICE_ID: &str = "urn:upnp-org:serviceId:WANIPConn1";
/// Where WANCommonInterfaceConfig:1's SCPD is served.
pub const CIF_SCPD_PATH: &str = "/WANCfg.xml";
/// WANCommonInterfaceConfig's control URL.
pub const CIF_CONTROL_PATH: &str = "/ctl/CmnIfCfg";
/// WANCommonInterfaceConfig's service id.
pub const CIF_SERVICE_ID: &str = "urn:upnp-org:serviceId:WANCommonIFC1";

/// The IGD versions served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// InternetGatewayDevice:1 / WANIPConnection:1.
    V1,
    /// InternetGatewayDevice:2 / WANIPConnection:2.
    V2,
}

impl Version {
    /// 1 or 2.
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// The version named `n`, if served.
    #[must_use]
    pub const fn from_number(n: u32) -> Option<Self> {
        match n {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }

    /// The description URL path of this version's device tree.
    #[must_use]
    pub const fn description_path(self) -> &'static str {
        match self {
            Self::V1 => DESCRIPTION_V1_PATH,
            Self::V2 => DESCRIPTION_PATH,
        }
    }
}

/// The devices of the tree, root first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// The root: InternetGatewayDevice.
    Gateway,
    /// WANDevice.
    Wan,
    /// WANConnectionDevice.
    WanConnection,
}

impl DeviceKind {
    /// Every device, root first.
    pub const ALL: [Self; 3] = [Self::Gateway, Self::Wan, Self::WanConnection];

    /// The type name, e.g. `InternetGatewayDevice`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Gateway => "InternetGatewayDevice",
            Self::Wan => "WANDevice",
            Self::WanConnection => "WANConnectionDevice",
        }
    }

    /// `urn:schemas-upnp-org:device:NAME:V`.
    #[must_use]
    pub fn urn(self, version: Version) -> String {
        format!("{URN_PREFIX}device:{}:{}", self.name(), version.number())
    }

    const fn index(self) -> u8 {
        match self {
            Self::Gateway => 0,
            Self::Wan => 1,
            Self::WanConnection => 2,
        }
    }
}

/// WANIPConnection's service type, `urn:schemas-upnp-org:service:WANIPConnection:V`.
#[must_use]
pub fn service_urn(version: Version) -> String {
    format!("{URN_PREFIX}service:WANIPConnection:{}", version.number())
}

/// The WANDevice's WANCommonInterfaceConfig service type (version 1 in both trees:
/// it is the WANDevice's link, and control points such as miniupnpc take a device
/// for an IGD only when it has one).
#[must_use]
pub fn cif_service_urn() -> String {
    format!("{URN_PREFIX}service:WANCommonInterfaceConfig:1")
}

/// A UUID (RFC 4122 text form), the device's identity in UDN and USN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// A version-4 (random) UUID from 16 random bytes.
    #[must_use]
    pub const fn from_random(mut bytes: [u8; 16]) -> Self {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Self(bytes)
    }

    /// The UUID of embedded device `kind`: the root's with its last byte changed,
    /// so all three stay stable as long as the root's does.
    #[must_use]
    pub const fn of(self, kind: DeviceKind) -> Self {
        let mut bytes = self.0;
        bytes[15] ^= kind.index();
        Self(bytes)
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Text that is not a UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a UUID (expected 8-4-4-4-12 hexadecimal digits)")]
pub struct UuidError;

impl FromStr for Uuid {
    type Err = UuidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let groups: Vec<&str> = s.split('-').collect();
        let lengths = groups.iter().map(|g| g.len()).collect::<Vec<_>>();
        if lengths != [8, 4, 4, 4, 12] {
            return Err(UuidError);
        }
        let hex: String = groups.concat();
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or(UuidError)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| UuidError)?;
        }
        Ok(Self(out))
    }
}

/// Who the device is: what descriptions, advertisements and responses say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The root device's UUID; keep it across restarts, control points remember it.
    pub uuid: Uuid,
    /// The friendly name shown to users.
    pub friendly_name: String,
    /// The TCP port of the HTTP server on every LAN address.
    pub http_port: u16,
    /// The `SERVER` header: `OS/version UPnP/2.0 product/version`.
    pub server: String,
    /// `BOOTID.UPNP.ORG`: grows with every start (UDA 1.1 §1.2.2).
    pub boot_id: u32,
    /// `CONFIGID.UPNP.ORG`: changes when the descriptions change.
    pub config_id: u32,
    /// The WAN link's speed, bits per second (WANCommonInterfaceConfig's
    /// Layer1Up/DownstreamMaxBitRate); 0 when the link does not say.
    pub wan_bitrate: u32,
}

impl Device {
    /// A device with natgw's names and the default port 5000.
    #[must_use]
    pub fn new(uuid: Uuid, boot_id: u32) -> Self {
        Self {
            uuid,
            friendly_name: "natgw".to_owned(),
            http_port: 5000,
            server: format!("Linux UPnP/2.0 natgw/{}", env!("CARGO_PKG_VERSION")),
            boot_id,
            config_id: 1,
            wan_bitrate: 0,
        }
    }

    /// `http://LOCAL:PORT` — the base of every URL served on LAN address `local`.
    #[must_use]
    pub fn base_url(&self, local: Ipv4Addr) -> String {
        format!("http://{local}:{}", self.http_port)
    }

    /// The description URL of `version` on LAN address `local`.
    #[must_use]
    pub fn location(&self, local: Ipv4Addr, version: Version) -> String {
        format!("{}{}", self.base_url(local), version.description_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_print_and_parse_and_embedded_ones_differ() {
        let u = Uuid::from_random([0xab; 16]);
        let text = u.to_string();
        assert_eq!(text, "abababab-abab-4bab-abab-abababababab");
        assert_eq!(text.parse::<Uuid>(), Ok(u));
        let all = DeviceKind::ALL.map(|k| u.of(k));
        assert_eq!(all[0], u);
        assert!(all[0] != all[1] && all[1] != all[2] && all[0] != all[2]);
        for bad in [
            "",
            "abababab-abab-4bab-abab-ababababab",
            "zzzzzzzz-abab-4bab-abab-abababababab",
        ] {
            assert_eq!(bad.parse::<Uuid>(), Err(UuidError), "{bad}");
        }
    }

    #[test]
    fn urns_and_locations() {
        assert_eq!(
            DeviceKind::Gateway.urn(Version::V2),
            "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
        );
        assert_eq!(
            service_urn(Version::V1),
            "urn:schemas-upnp-org:service:WANIPConnection:1"
        );
        let d = Device::new(Uuid([0; 16]), 1);
        assert_eq!(
            d.location(Ipv4Addr::new(10, 0, 1, 1), Version::V1),
            "http://10.0.1.1:5000/rootDesc1.xml"
        );
    }
}
