//! The documents a control point reads before it acts: the device description
//! (UDA 1.1 §2.3) of the IGD tree and the SCPD (§2.5) of WANIPConnection, each at
//! version 2 and at version 1, written with `quick-xml` (every value escaped).
//!
//! Version 1 exists for control points that only accept `InternetGatewayDevice:1`:
//! its SCPD lists only the version-1 actions and state variables, and the control
//! URL is shared, the `SOAPACTION` header telling the versions apart.

use std::io;

use quick_xml::Writer;

use super::soap::{text_element, xml_document, ActionKind};
use super::{
    cif_service_urn, service_urn, Device, DeviceKind, Version, CIF_CONTROL_PATH, CIF_SCPD_PATH,
    CIF_SERVICE_ID, CONTROL_PATH, EVENT_PATH, SCPD_PATH, SCPD_V1_PATH, SERVICE_ID,
};

/// The device namespace of descriptions.
pub const DEVICE_NS: &str = "urn:schemas-upnp-org:device-1-0";
/// The service namespace of SCPDs.
pub const SERVICE_NS: &str = "urn:schemas-upnp-org:service-1-0";

/// The longest lease IGD:2 allows, seconds (WANIPConnection:2,
/// PortMappingLeaseDuration's allowed range).
pub const MAX_LEASE: u32 = 604_800;

type W = Writer<Vec<u8>>;

fn spec_version(w: &mut W, version: Version) -> io::Result<()> {
    w.create_element("specVersion")
        .write_inner_content(|w| {
            text_element(w, "major", "1")?;
            text_element(w, "minor", if version == Version::V2 { "1" } else { "0" })
        })
        .map(|_| ())
}

fn device_element(
    w: &mut W,
    device: &Device,
    kind: DeviceKind,
    version: Version,
) -> io::Result<()> {
    w.create_element("device")
        .write_inner_content(|w| {
            text_element(w, "deviceType", &kind.urn(version))?;
            let name = match kind {
                DeviceKind::Gateway => device.friendly_name.clone(),
                other => format!("{} {}", device.friendly_name, other.name()),
            };
            text_element(w, "friendlyName", &name)?;
            text_element(w, "manufacturer", "natgw")?;
            text_element(w, "modelDescription", "natgw NAT gateway")?;
            text_element(w, "modelName", "natgw")?;
            text_element(w, "modelNumber", env!("CARGO_PKG_VERSION"))?;
            text_element(w, "UDN", &format!("uuid:{}", device.uuid.of(kind)))?;
            match kind {
                DeviceKind::Gateway => child(w, device, DeviceKind::Wan, version),
                DeviceKind::Wan => {
                    w.create_element("serviceList")
                        .write_inner_content(|w| {
                            w.create_element("service")
                                .write_inner_content(|w| {
                                    text_element(w, "serviceType", &cif_service_urn())?;
                                    text_element(w, "serviceId", CIF_SERVICE_ID)?;
                                    text_element(w, "SCPDURL", CIF_SCPD_PATH)?;
                                    text_element(w, "controlURL", CIF_CONTROL_PATH)?;
                                    // Nothing of it is evented.
                                    text_element(w, "eventSubURL", "")
                                })
                                .map(|_| ())
                        })
                        .map(|_| ())?;
                    child(w, device, DeviceKind::WanConnection, version)
                }
                DeviceKind::WanConnection => w
                    .create_element("serviceList")
                    .write_inner_content(|w| {
                        w.create_element("service")
                            .write_inner_content(|w| {
                                text_element(w, "serviceType", &service_urn(version))?;
                                text_element(w, "serviceId", SERVICE_ID)?;
                                let scpd = match version {
                                    Version::V1 => SCPD_V1_PATH,
                                    Version::V2 => SCPD_PATH,
                                };
                                text_element(w, "SCPDURL", scpd)?;
                                text_element(w, "controlURL", CONTROL_PATH)?;
                                text_element(w, "eventSubURL", EVENT_PATH)
                            })
                            .map(|_| ())
                    })
                    .map(|_| ()),
            }
        })
        .map(|_| ())
}

fn child(w: &mut W, device: &Device, kind: DeviceKind, version: Version) -> io::Result<()> {
    w.create_element("deviceList")
        .write_inner_content(|w| device_element(w, device, kind, version))
        .map(|_| ())
}

/// The device description of `version`'s tree. URLs are relative to the
/// description's own URL, which is on the LAN address the control point used.
#[must_use]
pub fn device_description(device: &Device, version: Version) -> Vec<u8> {
    xml_document(|w| {
        let config_id = device.config_id.to_string();
        let mut root = w
            .create_element("root")
            .with_attribute(("xmlns", DEVICE_NS));
        if version == Version::V2 {
            root = root.with_attribute(("configId", config_id.as_str()));
        }
        root.write_inner_content(|w| {
            spec_version(w, version)?;
            device_element(w, device, DeviceKind::Gateway, version)
        })
        .map(|_| ())
    })
}

/// A state variable of WANIPConnection: name, type, whether evented, allowed values
/// and the version that added it.
struct Variable {
    name: &'static str,
    data_type: &'static str,
    events: bool,
    allowed: &'static [&'static str],
    range: Option<(u32, u32)>,
    since: Version,
}

const fn var(name: &'static str, data_type: &'static str) -> Variable {
    Variable {
        name,
        data_type,
        events: false,
        allowed: &[],
        range: None,
        since: Version::V1,
    }
}

const VARIABLES: &[Variable] = &[
    Variable {
        allowed: &["Unconfigured", "IP_Routed", "IP_Bridged"],
        ..var("ConnectionType", "string")
    },
    Variable {
        events: true,
        allowed: &["Unconfigured", "IP_Routed", "IP_Bridged"],
        ..var("PossibleConnectionTypes", "string")
    },
    Variable {
        events: true,
        allowed: &[
            "Unconfigured",
            "Connecting",
            "Connected",
            "PendingDisconnect",
            "Disconnecting",
            "Disconnected",
        ],
        ..var("ConnectionStatus", "string")
    },
    var("Uptime", "ui4"),
    Variable {
        allowed: &["ERROR_NONE"],
        ..var("LastConnectionError", "string")
    },
    Variable {
        events: true,
        ..var("ExternalIPAddress", "string")
    },
    Variable {
        events: true,
        ..var("PortMappingNumberOfEntries", "ui2")
    },
    var("PortMappingEnabled", "boolean"),
    Variable {
        range: Some((0, MAX_LEASE)),
        ..var("PortMappingLeaseDuration", "ui4")
    },
    var("RemoteHost", "string"),
    var("ExternalPort", "ui2"),
    var("InternalPort", "ui2"),
    Variable {
        allowed: &["TCP", "UDP"],
        ..var("PortMappingProtocol", "string")
    },
    var("InternalClient", "string"),
    var("PortMappingDescription", "string"),
    Variable {
        events: true,
        since: Version::V2,
        ..var("SystemUpdateID", "ui4")
    },
    Variable {
        since: Version::V2,
        ..var("A_ARG_TYPE_Manage", "boolean")
    },
    Variable {
        since: Version::V2,
        ..var("A_ARG_TYPE_PortListing", "string")
    },
];

fn arguments(w: &mut W, args: &[(&str, &str)], direction: &str) -> io::Result<()> {
    for (name, related) in args {
        w.create_element("argument")
            .write_inner_content(|w| {
                text_element(w, "name", name)?;
                text_element(w, "direction", direction)?;
                text_element(w, "relatedStateVariable", related)
            })
            .map(|_| ())?;
    }
    Ok(())
}

/// The SCPD of WANIPConnection at `version`: its actions and state variables.
#[must_use]
pub fn scpd(version: Version) -> Vec<u8> {
    xml_document(|w| {
        w.create_element("scpd")
            .with_attribute(("xmlns", SERVICE_NS))
            .write_inner_content(|w| {
                spec_version(w, version)?;
                w.create_element("actionList")
                    .write_inner_content(|w| {
                        for action in ActionKind::ALL.into_iter().filter(|a| a.since() <= version) {
                            w.create_element("action")
                                .write_inner_content(|w| {
                                    text_element(w, "name", action.name())?;
                                    w.create_element("argumentList")
                                        .write_inner_content(|w| {
                                            arguments(w, action.inputs(), "in")?;
                                            arguments(w, action.outputs(), "out")
                                        })
                                        .map(|_| ())
                                })
                                .map(|_| ())?;
                        }
                        Ok(())
                    })
                    .map(|_| ())?;
                w.create_element("serviceStateTable")
                    .write_inner_content(|w| {
                        for v in VARIABLES.iter().filter(|v| v.since <= version) {
                            variable(w, v)?;
                        }
                        Ok(())
                    })
                    .map(|_| ())
            })
            .map(|_| ())
    })
}

/// The state variables of WANCommonInterfaceConfig:1 that GetCommonLinkProperties
/// returns (the only action served: the one the service requires).
const CIF_VARIABLES: &[Variable] = &[
    Variable {
        allowed: &["DSL", "POTS", "Cable", "Ethernet"],
        ..var("WANAccessType", "string")
    },
    var("Layer1UpstreamMaxBitRate", "ui4"),
    var("Layer1DownstreamMaxBitRate", "ui4"),
    Variable {
        allowed: &["Up", "Down"],
        ..var("PhysicalLinkStatus", "string")
    },
];

/// GetCommonLinkProperties' output arguments and their state variables.
pub const CIF_LINK_OUTPUTS: [(&str, &str); 4] = [
    ("NewWANAccessType", "WANAccessType"),
    ("NewLayer1UpstreamMaxBitRate", "Layer1UpstreamMaxBitRate"),
    (
        "NewLayer1DownstreamMaxBitRate",
        "Layer1DownstreamMaxBitRate",
    ),
    ("NewPhysicalLinkStatus", "PhysicalLinkStatus"),
];

/// The SCPD of WANCommonInterfaceConfig:1: GetCommonLinkProperties.
#[must_use]
pub fn cif_scpd() -> Vec<u8> {
    xml_document(|w| {
        w.create_element("scpd")
            .with_attribute(("xmlns", SERVICE_NS))
            .write_inner_content(|w| {
                spec_version(w, Version::V1)?;
                w.create_element("actionList")
                    .write_inner_content(|w| {
                        w.create_element("action")
                            .write_inner_content(|w| {
                                text_element(w, "name", "GetCommonLinkProperties")?;
                                w.create_element("argumentList")
                                    .write_inner_content(|w| arguments(w, &CIF_LINK_OUTPUTS, "out"))
                                    .map(|_| ())
                            })
                            .map(|_| ())
                    })
                    .map(|_| ())?;
                w.create_element("serviceStateTable")
                    .write_inner_content(|w| {
                        for v in CIF_VARIABLES {
                            variable(w, v)?;
                        }
                        Ok(())
                    })
                    .map(|_| ())
            })
            .map(|_| ())
    })
}

fn variable(w: &mut W, v: &Variable) -> io::Result<()> {
    w.create_element("stateVariable")
        .with_attribute(("sendEvents", if v.events { "yes" } else { "no" }))
        .write_inner_content(|w| {
            text_element(w, "name", v.name)?;
            text_element(w, "dataType", v.data_type)?;
            if !v.allowed.is_empty() {
                w.create_element("allowedValueList")
                    .write_inner_content(|w| {
                        for a in v.allowed {
                            text_element(w, "allowedValue", a)?;
                        }
                        Ok(())
                    })
                    .map(|_| ())?;
            }
            if let Some((min, max)) = v.range {
                w.create_element("allowedValueRange")
                    .write_inner_content(|w| {
                        text_element(w, "minimum", &min.to_string())?;
                        text_element(w, "maximum", &max.to_string())
                    })
                    .map(|_| ())?;
            }
            Ok(())
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upnp::Uuid;
    use quick_xml::events::Event;
    use quick_xml::Reader;

    /// Every text of elements named `name`, in document order.
    fn texts(doc: &[u8], name: &str) -> Vec<String> {
        let mut r = Reader::from_reader(doc);
        let (mut out, mut inside, mut buf) = (Vec::new(), false, Vec::new());
        loop {
            match r.read_event_into(&mut buf).expect("well-formed") {
                Event::Start(e) => inside = e.name().as_ref() == name.as_bytes(),
                Event::Text(t) if inside => out.push(t.unescape().expect("text").into_owned()),
                Event::End(_) => inside = false,
                Event::Eof => return out,
                _ => {}
            }
            buf.clear();
        }
    }

    fn device() -> Device {
        let mut d = Device::new(Uuid::from_random([3; 16]), 1);
        d.friendly_name = "gw <&> \"home\"".to_owned();
        d
    }

    #[test]
    fn the_v2_tree_nests_igd_wan_connection_and_wanipconnection() {
        let d = device();
        let doc = device_description(&d, Version::V2);
        assert_eq!(
            texts(&doc, "deviceType"),
            [
                "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
                "urn:schemas-upnp-org:device:WANDevice:2",
                "urn:schemas-upnp-org:device:WANConnectionDevice:2"
            ]
        );
        assert_eq!(
            texts(&doc, "UDN"),
            DeviceKind::ALL.map(|k| format!("uuid:{}", d.uuid.of(k)))
        );
        assert_eq!(
            texts(&doc, "serviceType"),
            [
                "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1",
                "urn:schemas-upnp-org:service:WANIPConnection:2"
            ]
        );
        assert_eq!(texts(&doc, "controlURL"), [CIF_CONTROL_PATH, CONTROL_PATH]);
        assert_eq!(
            texts(&doc, "eventSubURL"),
            [EVENT_PATH],
            "the CIF's is empty"
        );
        assert_eq!(texts(&doc, "SCPDURL"), [CIF_SCPD_PATH, SCPD_PATH]);
        assert_eq!(
            texts(&doc, "friendlyName")[0],
            "gw <&> \"home\"",
            "escaped and read back"
        );
        let v1 = device_description(&d, Version::V1);
        assert_eq!(
            texts(&v1, "serviceType"),
            [
                "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1",
                "urn:schemas-upnp-org:service:WANIPConnection:1"
            ]
        );
        assert_eq!(texts(&v1, "SCPDURL"), [CIF_SCPD_PATH, SCPD_V1_PATH]);
        assert_eq!(texts(&v1, "minor"), ["0"]);
    }

    #[test]
    fn scpds_list_each_versions_actions_with_their_variables() {
        let v2 = scpd(Version::V2);
        let names = texts(&v2, "name");
        for a in ActionKind::ALL {
            assert!(names.iter().any(|n| n == a.name()), "{}", a.name());
        }
        // Every relatedStateVariable is declared.
        for related in texts(&v2, "relatedStateVariable") {
            assert!(VARIABLES.iter().any(|v| v.name == related), "{related}");
        }
        let v1 = texts(&scpd(Version::V1), "name");
        assert!(v1.iter().any(|n| n == "AddPortMapping"));
        assert!(!v1
            .iter()
            .any(|n| n == "AddAnyPortMapping" || n == "SystemUpdateID"));
        assert_eq!(texts(&v2, "maximum"), ["604800"]);
        let cif = cif_scpd();
        assert_eq!(
            texts(&cif, "relatedStateVariable"),
            CIF_LINK_OUTPUTS.map(|(_, v)| v)
        );
        for related in texts(&cif, "relatedStateVariable") {
            assert!(CIF_VARIABLES.iter().any(|v| v.name == related), "{related}");
        }
    }
}
