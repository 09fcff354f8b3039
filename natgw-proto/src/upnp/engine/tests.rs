//! The IGD engine against the in-memory table PCP's engine is tested with: whole
//! HTTP requests in, whole responses out.

use super::*;
use crate::pcp::policy::PortRule;
use crate::pcp::testing::MemoryTable;
use crate::upnp::{service_urn, Uuid};

const EXT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const LAN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);

struct Bed {
    engine: Engine,
    table: MemoryTable,
    now: Instant,
}

fn bed_with(config: UpnpConfig, policy: PcpConfig) -> Bed {
    let now = Instant::now();
    let device = Device::new(Uuid::from_random([5; 16]), 1);
    Bed {
        engine: Engine::new(config, policy, device, now, [9; 16]),
        table: MemoryTable::new(EXT),
        now,
    }
}

fn bed() -> Bed {
    bed_with(UpnpConfig::default(), PcpConfig::default())
}

fn soap_request(version: u8, action: &str, args: &[(&str, &str)]) -> Vec<u8> {
    let mut inner = String::new();
    for (n, v) in args {
        inner.push_str(&format!("<{n}>{v}</{n}>"));
    }
    let body = format!(
        "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
         <u:{action} xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:{version}\">{inner}\
         </u:{action}></s:Body></s:Envelope>"
    );
    format!(
        "POST /ctl/IPConn HTTP/1.1\r\nHOST: 10.0.0.1:5000\r\nCONTENT-TYPE: text/xml; charset=\"utf-8\"\r\n\
         SOAPACTION: \"urn:schemas-upnp-org:service:WANIPConnection:{version}#{action}\"\r\n\
         CONTENT-LENGTH: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn add_args<'a>(
    ext: &'a str,
    int: &'a str,
    client: &'a str,
    desc: &'a str,
    lease: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("NewRemoteHost", ""),
        ("NewExternalPort", ext),
        ("NewProtocol", "TCP"),
        ("NewInternalPort", int),
        ("NewInternalClient", client),
        ("NewEnabled", "1"),
        ("NewPortMappingDescription", desc),
        ("NewLeaseDuration", lease),
    ]
}

/// What came back: status code, and either the output arguments or the UPnP error.
#[derive(Debug)]
struct Reply {
    status: u16,
    text: String,
    outputs: Vec<(String, String)>,
    error: Option<u16>,
}

impl Reply {
    fn out(&self, name: &str) -> &str {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| panic!("no {name} in {self:?}"), |(_, v)| v.as_str())
    }
}

impl Bed {
    fn raw(&mut self, src: Ipv4Addr, bytes: &[u8]) -> Reply {
        let out = self
            .engine
            .handle_bytes(
                self.now,
                SocketAddrV4::new(src, 40000),
                LAN,
                bytes,
                true,
                &mut self.table,
            )
            .expect("a response once the peer closed");
        let text = String::from_utf8(out).expect("UTF-8 response");
        let status = text[9..12].parse().expect("status code");
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let error = body
            .split_once("<errorCode>")
            .and_then(|(_, r)| r.split_once('<'))
            .and_then(|(code, _)| code.parse().ok());
        Reply {
            status,
            text: text.clone(),
            outputs: Vec::new(),
            error,
        }
    }

    fn call(&mut self, src: Ipv4Addr, version: u8, action: &str, args: &[(&str, &str)]) -> Reply {
        let mut reply = self.raw(src, &soap_request(version, action, args));
        if reply.status == 200 {
            let body = reply
                .text
                .split_once("\r\n\r\n")
                .map_or("", |(_, b)| b)
                .to_owned();
            let header =
                format!("urn:schemas-upnp-org:service:WANIPConnection:{version}#{action}Response");
            let parsed = soap::parse_call(
                Some(&header),
                body.as_bytes(),
                &soap::Limits {
                    max_value: 100_000,
                    ..soap::Limits::default()
                },
            )
            .expect("a well-formed response");
            reply.outputs = parsed.args;
        }
        reply
    }

    fn add(&mut self, src: Ipv4Addr, ext: &str, int: &str, client: &str) -> Reply {
        self.call(
            src,
            2,
            "AddPortMapping",
            &add_args(ext, int, client, "test", "3600"),
        )
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.engine.poll_event()).collect()
    }
}

fn key(host: Ipv4Addr, port: u16) -> MappingKey {
    MappingKey {
        internal: host,
        protocol: Protocol::Tcp,
        internal_port: port,
    }
}

#[test]
fn add_port_mapping_makes_a_upnp_mapping_in_the_shared_table() {
    // issue #13: origin upnp, its description, the requested external port
    let mut b = bed();
    let r = b.call(
        HOST,
        2,
        "AddPortMapping",
        &add_args("8080", "80", "10.0.1.2", "web &amp; more", "3600"),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let m = b.table.explicit.get(&key(HOST, 80)).expect("in the table");
    assert_eq!(
        (m.origin, m.external),
        (Origin::Upnp, SocketAddrV4::new(EXT, 8080))
    );
    assert_eq!(m.description, "web & more");
    assert_eq!(m.nonce, UPNP_NONCE);
    assert!(m.filters.is_empty(), "wildcard RemoteHost: open to all");
    assert!(matches!(b.events().as_slice(), [Event::Created(e)] if e.lease == 3600));

    let r = b.call(
        HOST,
        2,
        "GetSpecificPortMappingEntry",
        &[
            ("NewRemoteHost", ""),
            ("NewExternalPort", "8080"),
            ("NewProtocol", "TCP"),
        ],
    );
    assert_eq!(
        (r.out("NewInternalPort"), r.out("NewInternalClient")),
        ("80", "10.0.1.2")
    );
    assert_eq!(
        (
            r.out("NewPortMappingDescription"),
            r.out("NewLeaseDuration")
        ),
        ("web & more", "3600")
    );
    let r = b.call(
        HOST,
        1,
        "GetGenericPortMappingEntry",
        &[("NewPortMappingIndex", "0")],
    );
    assert_eq!(
        (
            r.out("NewExternalPort"),
            r.out("NewProtocol"),
            r.out("NewEnabled")
        ),
        ("8080", "TCP", "1")
    );
    let r = b.call(
        HOST,
        1,
        "GetGenericPortMappingEntry",
        &[("NewPortMappingIndex", "1")],
    );
    assert_eq!((r.status, r.error), (500, Some(713)));
    let r = b.call(
        HOST,
        2,
        "GetSpecificPortMappingEntry",
        &[
            ("NewRemoteHost", ""),
            ("NewExternalPort", "8081"),
            ("NewProtocol", "TCP"),
        ],
    );
    assert_eq!(r.error, Some(714));

    // The same request again renews it.
    let r = b.call(
        HOST,
        2,
        "AddPortMapping",
        &add_args("8080", "80", "10.0.1.2", "renamed", "7200"),
    );
    assert_eq!(r.status, 200);
    assert!(matches!(b.events().last(), Some(Event::Renewed(e)) if e.description == "renamed"));
    assert_eq!(b.table.explicit.len(), 1);
}

#[test]
fn internal_client_must_be_the_requester_unless_allowed() {
    // secure by default, as miniupnpd's secure_mode
    let mut b = bed();
    assert_eq!(b.add(HOST, "8080", "80", "10.0.1.3").error, Some(606));
    let r = b.call(
        HOST,
        1,
        "AddPortMapping",
        &add_args("8080", "80", "10.0.1.3", "x", "0"),
    );
    assert_eq!(r.error, Some(718), "IGD:1 has no 606");
    assert!(b.table.explicit.is_empty());
    assert_eq!(
        b.add(HOST, "8080", "80", "").status,
        200,
        "empty InternalClient: the requester"
    );
    assert!(b.table.explicit.contains_key(&key(HOST, 80)));

    let mut b = bed_with(
        UpnpConfig {
            allow_other_hosts: true,
            ..UpnpConfig::default()
        },
        PcpConfig::default(),
    );
    assert_eq!(b.add(HOST, "8080", "80", "10.0.1.3").status, 200);
    assert!(b.table.explicit.contains_key(&key(OTHER, 80)));
    assert_eq!(
        b.add(HOST, "8081", "80", "192.0.2.9").error,
        Some(606),
        "never outside the LAN"
    );
    assert_eq!(
        b.add(HOST, "8082", "81", "10.0.0.1").error,
        Some(606),
        "nor the gateway itself"
    );
}

#[test]
fn conflicts_say_whose_port_it_is() {
    let mut b = bed();
    assert_eq!(b.add(HOST, "8080", "80", "").status, 200);
    // Another host's UPnP mapping on the port: 718.
    assert_eq!(b.add(OTHER, "8080", "80", "").error, Some(718));
    // The same internal endpoint on another external port: 718 (one per endpoint).
    assert_eq!(b.add(HOST, "9090", "80", "").error, Some(718));
    // A PCP mapping holds port 7000 for OTHER:70, and HOST:71.
    for (host, port, ext) in [(OTHER, 70, 7000), (HOST, 71, 7001)] {
        b.table
            .install(&Install {
                key: key(host, port),
                origin: Origin::Pcp,
                nonce: [1; 12],
                lifetime: 600,
                expires: b.now + Duration::from_secs(600),
                suggested_address: None,
                suggested_port: Some(ext),
                prefer_failure: true,
                external_ports: vec![crate::pcp::policy::PortSpan::new(1024, 65535).unwrap()],
                filters: Vec::new(),
                reply_to: SocketAddrV4::new(host, 5351),
                description: String::new(),
            })
            .unwrap();
    }
    assert_eq!(
        b.add(HOST, "7000", "72", "").error,
        Some(729),
        "PCP's external port"
    );
    assert_eq!(
        b.add(HOST, "7500", "71", "").error,
        Some(729),
        "PCP's internal endpoint"
    );
    // AddAnyPortMapping moves on to a free port.
    let r = b.call(
        HOST,
        2,
        "AddAnyPortMapping",
        &add_args("7000", "73", "", "any", "600"),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let port: u16 = r.out("NewReservedPort").parse().unwrap();
    assert!(port != 7000 && port != 8080 && port >= 1024);
    assert_eq!(b.table.explicit[&key(HOST, 73)].external.port(), port);
    // PCP sees UPnP's ports as taken.
    let mut pcp = b.table.installs[0].clone();
    pcp.key = key(OTHER, 90);
    pcp.origin = Origin::Pcp;
    pcp.suggested_port = Some(8080);
    pcp.prefer_failure = true;
    assert_eq!(
        b.table.install(&pcp),
        Err(TableError::CannotProvideExternal)
    );
}

#[test]
fn a_traffic_mapping_of_the_endpoint_keeps_its_port() {
    // endpoint-independent mapping: the data path has one external port per endpoint
    let mut b = bed();
    b.table
        .peer(&crate::pcp::table::PeerRequest {
            internal: SocketAddrV4::new(HOST, 80),
            protocol: Protocol::Tcp,
            remote: "198.51.100.1:443".parse().unwrap(),
            nonce: [0; 12],
            lifetime: 60,
            suggested_address: None,
            suggested_port: Some(40000),
            reply_to: SocketAddrV4::new(HOST, 1),
        })
        .unwrap();
    assert_eq!(b.add(HOST, "8080", "80", "").error, Some(718));
    let r = b.call(
        HOST,
        2,
        "AddAnyPortMapping",
        &add_args("8080", "80", "", "x", "60"),
    );
    assert_eq!(r.out("NewReservedPort"), "40000");
}

#[test]
fn permanent_and_long_leases_are_capped_and_reported_as_granted() {
    // issue #13: IGD:1 lease 0 capped at a configurable maximum
    let mut b = bed_with(
        UpnpConfig {
            max_lease: 86_400,
            ..UpnpConfig::default()
        },
        PcpConfig::default(),
    );
    let r = b.call(
        HOST,
        1,
        "AddPortMapping",
        &add_args("8080", "80", "10.0.1.2", "perm", "0"),
    );
    assert_eq!(r.status, 200);
    assert!(
        matches!(b.events().as_slice(), [Event::Created(e)] if e.lease == 86_400 && e.capped_from == Some(0))
    );
    let r = b.call(
        HOST,
        1,
        "GetSpecificPortMappingEntry",
        &[
            ("NewRemoteHost", ""),
            ("NewExternalPort", "8080"),
            ("NewProtocol", "TCP"),
        ],
    );
    assert_eq!(r.out("NewLeaseDuration"), "86400");
    b.now += Duration::from_secs(100);
    let r = b.call(
        HOST,
        1,
        "GetSpecificPortMappingEntry",
        &[
            ("NewRemoteHost", ""),
            ("NewExternalPort", "8080"),
            ("NewProtocol", "TCP"),
        ],
    );
    assert_eq!(r.out("NewLeaseDuration"), "86300", "what is left");
    let r = b.call(
        HOST,
        2,
        "AddPortMapping",
        &add_args("8081", "81", "", "long", "999999"),
    );
    assert_eq!(r.status, 200);
    assert!(
        matches!(b.events().last(), Some(Event::Created(e)) if e.lease == 86_400 && e.capped_from == Some(999_999))
    );
    // An expired mapping is gone from UPnP's array.
    b.now += Duration::from_secs(90_000);
    let r = b.call(
        HOST,
        2,
        "GetGenericPortMappingEntry",
        &[("NewPortMappingIndex", "0")],
    );
    assert_eq!(r.error, Some(713));
}

#[test]
fn port_rules_and_quotas_are_pcps() {
    let policy = PcpConfig {
        rules: vec![
            "deny 1024-65535 10.0.1.3/32 1-65535"
                .parse::<PortRule>()
                .unwrap(),
            "allow 1024-65535 0.0.0.0/0 1-65535".parse().unwrap(),
        ],
        max_mappings_per_host: 1,
        ..PcpConfig::default()
    };
    let mut b = bed_with(UpnpConfig::default(), policy);
    assert_eq!(
        b.add(HOST, "80", "80", "").error,
        Some(606),
        "system ports stay with the gateway"
    );
    assert_eq!(
        b.add(OTHER, "8080", "80", "").error,
        Some(606),
        "denied host"
    );
    assert_eq!(b.add(HOST, "8080", "80", "").status, 200);
    assert_eq!(
        b.add(HOST, "8081", "81", "").error,
        Some(728),
        "max_mappings_per_host"
    );
    assert_eq!(
        b.add(HOST, "8080", "80", "").status,
        200,
        "renewing is not a new mapping"
    );
}

#[test]
fn wildcards_and_bad_arguments() {
    let mut b = bed();
    assert_eq!(b.add(HOST, "0", "80", "").error, Some(716));
    assert_eq!(b.add(HOST, "8080", "0", "").error, Some(732));
    let r = b.call(
        HOST,
        1,
        "AddPortMapping",
        &add_args("8080", "0", "", "x", "0"),
    );
    assert_eq!(r.error, Some(402));
    assert_eq!(b.add(HOST, "8080", "80", "not-an-ip").error, Some(402));
    let mut disabled = add_args("8080", "80", "", "x", "60");
    disabled[5].1 = "0";
    assert_eq!(
        b.call(HOST, 2, "AddPortMapping", &disabled).error,
        Some(402)
    );
    assert_eq!(
        b.call(
            HOST,
            1,
            "AddAnyPortMapping",
            &add_args("0", "80", "", "x", "60")
        )
        .error,
        Some(401)
    );
    assert_eq!(b.call(HOST, 2, "ForceTermination", &[]).error, Some(401));
    assert!(b.table.explicit.is_empty());
    // A specific RemoteHost becomes a filter and names the entry.
    let mut remote = add_args("8080", "80", "", "x", "60");
    remote[0].1 = "198.51.100.7";
    assert_eq!(b.call(HOST, 2, "AddPortMapping", &remote).status, 200);
    let f = &b.table.explicit[&key(HOST, 80)].filters;
    assert_eq!(f.len(), 1);
    assert!(
        f[0].permits("198.51.100.7:1".parse().unwrap())
            && !f[0].permits("198.51.100.8:1".parse().unwrap())
    );
    let r = b.call(
        HOST,
        2,
        "GetGenericPortMappingEntry",
        &[("NewPortMappingIndex", "0")],
    );
    assert_eq!(r.out("NewRemoteHost"), "198.51.100.7");
}

#[test]
fn deleting_is_for_the_owner() {
    let mut b = bed();
    assert_eq!(b.add(HOST, "8080", "80", "").status, 200);
    assert_eq!(b.add(HOST, "8081", "81", "").status, 200);
    assert_eq!(b.add(OTHER, "9090", "90", "").status, 200);
    let id = |port: &'static str| {
        vec![
            ("NewRemoteHost", ""),
            ("NewExternalPort", port),
            ("NewProtocol", "TCP"),
        ]
    };
    assert_eq!(
        b.call(OTHER, 2, "DeletePortMapping", &id("8080")).error,
        Some(606)
    );
    assert_eq!(
        b.call(HOST, 2, "DeletePortMapping", &id("1234")).error,
        Some(714)
    );
    assert_eq!(
        b.call(HOST, 1, "DeletePortMapping", &id("8080")).status,
        200
    );
    assert!(!b.table.explicit.contains_key(&key(HOST, 80)));
    assert!(matches!(b.events().last(), Some(Event::Deleted(e)) if e.external.port() == 8080));
    let range = |s: &'static str, e: &'static str, manage: &'static str| {
        vec![
            ("NewStartPort", s),
            ("NewEndPort", e),
            ("NewProtocol", "TCP"),
            ("NewManage", manage),
        ]
    };
    assert_eq!(
        b.call(
            HOST,
            2,
            "DeletePortMappingRange",
            &range("9000", "8000", "0")
        )
        .error,
        Some(733)
    );
    assert_eq!(
        b.call(HOST, 2, "DeletePortMappingRange", &range("1", "65535", "1"))
            .error,
        Some(606)
    );
    assert_eq!(
        b.call(
            HOST,
            2,
            "DeletePortMappingRange",
            &range("9000", "9999", "0")
        )
        .error,
        Some(730),
        "only OTHER's there"
    );
    assert_eq!(
        b.call(HOST, 2, "DeletePortMappingRange", &range("1", "65535", "0"))
            .status,
        200
    );
    assert_eq!(b.table.explicit.len(), 1, "OTHER's stays");
    // A PCP mapping is not UPnP's to delete.
    let mut pcp = b.table.installs[0].clone();
    pcp.key = key(HOST, 70);
    pcp.origin = Origin::Pcp;
    pcp.suggested_port = Some(7000);
    b.table.install(&pcp).unwrap();
    assert_eq!(
        b.call(HOST, 2, "DeletePortMapping", &id("7000")).error,
        Some(714)
    );
}

#[test]
fn the_port_listing_is_a_document_in_cdata() {
    let mut b = bed();
    let r = b.call(
        HOST,
        2,
        "AddPortMapping",
        &add_args("8080", "80", "", "a &lt;b&gt; &amp; c", "600"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(b.add(OTHER, "8090", "80", "").status, 200);
    let list = |b: &mut Bed, manage| {
        b.call(
            HOST,
            2,
            "GetListOfPortMappings",
            &[
                ("NewStartPort", "1"),
                ("NewEndPort", "65535"),
                ("NewProtocol", "TCP"),
                ("NewManage", manage),
                ("NewNumberOfPorts", "0"),
            ],
        )
    };
    let r = list(&mut b, "0");
    assert!(
        r.text.contains("<NewPortListing><![CDATA[<?xml"),
        "a CDATA section inside the response, as miniupnpd sends it: {}",
        r.text
    );
    let listing = r.out("NewPortListing");
    assert!(
        listing.contains("<p:NewExternalPort>8080</p:NewExternalPort>"),
        "{listing}"
    );
    assert!(
        listing.contains("<p:NewDescription>a &lt;b&gt; &amp; c</p:NewDescription>"),
        "{listing}"
    );
    assert!(
        !listing.contains("8090"),
        "only the requester's without Manage"
    );
    assert!(list(&mut b, "1").out("NewPortListing").contains("8090"));
    let r = b.call(
        HOST,
        2,
        "GetListOfPortMappings",
        &[
            ("NewStartPort", "1"),
            ("NewEndPort", "100"),
            ("NewProtocol", "UDP"),
            ("NewManage", "0"),
            ("NewNumberOfPorts", "5"),
        ],
    );
    assert_eq!(r.error, Some(730));
}

#[test]
fn connection_information() {
    let mut b = bed();
    b.now += Duration::from_secs(42);
    assert_eq!(
        b.call(HOST, 1, "GetExternalIPAddress", &[])
            .out("NewExternalIPAddress"),
        "192.0.2.1"
    );
    let r = b.call(HOST, 2, "GetStatusInfo", &[]);
    assert_eq!(
        (r.out("NewConnectionStatus"), r.out("NewUptime")),
        ("Connected", "42")
    );
    assert_eq!(
        b.call(HOST, 1, "GetConnectionTypeInfo", &[])
            .out("NewConnectionType"),
        "IP_Routed"
    );
    b.table.external = None;
    assert_eq!(
        b.call(HOST, 2, "GetExternalIPAddress", &[])
            .out("NewExternalIPAddress"),
        ""
    );
    assert_eq!(
        b.call(HOST, 2, "GetStatusInfo", &[])
            .out("NewConnectionStatus"),
        "Disconnected"
    );
    assert_eq!(b.add(HOST, "8080", "80", "").error, Some(501));
}

#[test]
fn documents_methods_and_malformed_requests() {
    let mut b = bed();
    let r = b.raw(
        HOST,
        b"GET /rootDesc.xml HTTP/1.1\r\nHOST: 10.0.0.1:5000\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(r.text.contains("CONTENT-TYPE: text/xml; charset=\"utf-8\""));
    assert!(r.text.contains("InternetGatewayDevice:2"));
    assert!(b
        .raw(HOST, b"GET /rootDesc1.xml HTTP/1.1\r\n\r\n")
        .text
        .contains("InternetGatewayDevice:1"));
    assert!(b
        .raw(HOST, b"GET /WANIPCn.xml HTTP/1.1\r\n\r\n")
        .text
        .contains("AddAnyPortMapping"));
    assert!(!b
        .raw(HOST, b"GET /WANIPCn1.xml HTTP/1.1\r\n\r\n")
        .text
        .contains("AddAnyPortMapping"));
    assert_eq!(b.raw(HOST, b"GET /etc/passwd HTTP/1.1\r\n\r\n").status, 404);
    assert_eq!(
        b.raw(HOST, b"DELETE /ctl/IPConn HTTP/1.1\r\n\r\n").status,
        405
    );
    assert_eq!(b.raw(HOST, b"BREW /pot HTTP/1.1\r\n\r\n").status, 501);
    assert_eq!(
        b.raw(
            HOST,
            b"POST /ctl/IPConn HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .status,
        411
    );
    assert_eq!(
        b.raw(
            HOST,
            b"POST /ctl/IPConn HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"
        )
        .status,
        400,
        "cut short"
    );
    assert_eq!(b.raw(HOST, b"\x16\x03\x01\x02\x00").status, 400);
    let body = "<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>";
    let dtd = format!(
        "POST /ctl/IPConn HTTP/1.1\r\nSOAPACTION: \"{}#GetStatusInfo\"\r\nContent-Length: {}\r\n\r\n{body}",
        service_urn(Version::V2),
        body.len()
    );
    assert_eq!(b.raw(HOST, dtd.as_bytes()).status, 400);
    assert_eq!(
        b.raw(
            Ipv4Addr::new(192, 0, 2, 99),
            b"GET /rootDesc.xml HTTP/1.1\r\n\r\n"
        )
        .status,
        403,
        "not a LAN host"
    );
    assert_eq!(
        b.raw(LAN, b"GET /rootDesc.xml HTTP/1.1\r\n\r\n").status,
        403,
        "the gateway itself"
    );
    // Incomplete while the connection is open: wait for more.
    assert_eq!(
        b.engine.handle_bytes(
            b.now,
            SocketAddrV4::new(HOST, 1),
            LAN,
            b"GET / HT",
            false,
            &mut b.table
        ),
        None
    );
}

#[test]
fn a_host_over_its_rate_gets_429() {
    let mut b = bed_with(
        UpnpConfig {
            requests_per_second: 1,
            burst: 3,
            ..UpnpConfig::default()
        },
        PcpConfig::default(),
    );
    for _ in 0..3 {
        assert_eq!(
            b.raw(HOST, b"GET /rootDesc.xml HTTP/1.1\r\n\r\n").status,
            200
        );
    }
    assert_eq!(
        b.raw(HOST, b"GET /rootDesc.xml HTTP/1.1\r\n\r\n").status,
        429
    );
    assert_eq!(
        b.raw(OTHER, b"GET /rootDesc.xml HTTP/1.1\r\n\r\n").status,
        200
    );
}

#[test]
fn subscribers_hear_of_new_mappings_and_a_new_address() {
    let mut b = bed();
    let sub = b"SUBSCRIBE /evt/IPConn HTTP/1.1\r\nHOST: 10.0.0.1:5000\r\nCALLBACK: <http://10.0.1.2:49000/ev>\r\nNT: upnp:event\r\nTIMEOUT: Second-300\r\n\r\n";
    let r = b.raw(HOST, sub);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("TIMEOUT: Second-300\r\n"));
    let sid = r
        .text
        .lines()
        .find_map(|l| l.strip_prefix("SID: "))
        .expect("a SID")
        .to_owned();
    let initial = b.engine.poll_notify().expect("the initial event");
    assert_eq!(initial.to, "10.0.1.2:49000".parse().unwrap());
    let text = String::from_utf8(initial.request).unwrap();
    assert!(
        text.contains("SEQ: 0\r\n")
            && text.contains("<ExternalIPAddress>192.0.2.1</ExternalIPAddress>")
    );

    assert_eq!(b.add(HOST, "8080", "80", "").status, 200);
    let n = String::from_utf8(b.engine.poll_notify().expect("an event").request).unwrap();
    assert!(
        n.contains("SEQ: 1\r\n")
            && n.contains("<PortMappingNumberOfEntries>1</PortMappingNumberOfEntries>"),
        "{n}"
    );
    b.engine.refresh(b.now, &b.table);
    assert_eq!(b.engine.poll_notify(), None, "nothing changed");
    b.table.external = Some(Ipv4Addr::new(203, 0, 113, 5));
    b.engine.refresh(b.now, &b.table);
    let n = String::from_utf8(b.engine.poll_notify().expect("an event").request).unwrap();
    assert!(n.contains("<ExternalIPAddress>203.0.113.5</ExternalIPAddress>"));

    let other_cb = b"SUBSCRIBE /evt/IPConn HTTP/1.1\r\nCALLBACK: <http://10.0.1.3:49000/ev>\r\nNT: upnp:event\r\n\r\n";
    assert_eq!(b.raw(HOST, other_cb).status, 412, "another host's callback");
    let renew =
        format!("SUBSCRIBE /evt/IPConn HTTP/1.1\r\nSID: {sid}\r\nTIMEOUT: Second-600\r\n\r\n");
    assert!(b
        .raw(HOST, renew.as_bytes())
        .text
        .contains("TIMEOUT: Second-600"));
    let both = format!("SUBSCRIBE /evt/IPConn HTTP/1.1\r\nSID: {sid}\r\nNT: upnp:event\r\n\r\n");
    assert_eq!(b.raw(HOST, both.as_bytes()).status, 400);
    let unsub = format!("UNSUBSCRIBE /evt/IPConn HTTP/1.1\r\nSID: {sid}\r\n\r\n");
    assert_eq!(b.raw(OTHER, unsub.as_bytes()).status, 412, "not OTHER's");
    assert_eq!(b.raw(HOST, unsub.as_bytes()).status, 200);
    assert_eq!(b.raw(HOST, unsub.as_bytes()).status, 412, "gone");
}

#[test]
fn nat_pmp_cannot_take_or_delete_a_upnp_mapping() {
    // issue #13: one table; NAT-PMP has no nonce, so it may not touch UPnP's mappings
    let mut b = bed();
    assert_eq!(b.add(HOST, "8080", "80", "").status, 200);
    let mut pcp = crate::pcp::engine::Engine::new(PcpConfig::default(), b.now).unwrap();
    let src = SocketAddrV4::new(HOST, 5350);
    // NAT-PMP: version 0, opcode 2 (TCP), internal port 80, suggested 9000.
    let map = [0, 2, 0, 0, 0, 80, 0x23, 0x28, 0, 0, 0x0e, 0x10];
    let delete = [0, 2, 0, 0, 0, 80, 0, 0, 0, 0, 0, 0];
    for request in [map, delete] {
        let answer = pcp
            .handle(b.now, src, &request, &mut b.table)
            .expect("an answer");
        assert_eq!(
            u16::from_be_bytes([answer[2], answer[3]]),
            2,
            "NOT_AUTHORIZED"
        );
    }
    let m = &b.table.explicit[&key(HOST, 80)];
    assert_eq!(
        (m.origin, m.external.port()),
        (Origin::Upnp, 8080),
        "untouched"
    );
    // And UPnP cannot take NAT-PMP's.
    let other = [0, 2, 0, 0, 0, 81, 0x23, 0x29, 0, 0, 0x0e, 0x10];
    let answer = pcp
        .handle(b.now, src, &other, &mut b.table)
        .expect("an answer");
    assert_eq!(u16::from_be_bytes([answer[2], answer[3]]), 0, "SUCCESS");
    assert_eq!(b.add(HOST, "9001", "81", "").error, Some(729));
}

#[test]
fn documents_are_get_only() {
    let mut b = bed();
    assert_eq!(
        b.raw(HOST, b"HEAD /rootDesc.xml HTTP/1.1\r\n\r\n").status,
        405
    );
    assert_eq!(
        b.raw(HOST, b"POST /rootDesc.xml HTTP/1.1\r\n\r\n").status,
        405
    );
    let r = b.raw(HOST, b"GET /rootDesc.xml?x=1 HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(!r.text.contains("\r\nEXT:"), "EXT is for control responses");
}

#[test]
fn pcp_cannot_renew_or_delete_a_upnp_mapping_with_its_known_nonce() {
    // UPNP_NONCE is public: a PCP client must not use it to take UPnP's mapping
    use crate::pcp::wire::{MapRepr, OpRepr, Request as PcpRequest};
    let mut b = bed();
    assert_eq!(b.add(HOST, "8080", "80", "").status, 200);
    let mut pcp = crate::pcp::engine::Engine::new(PcpConfig::default(), b.now).unwrap();
    let src = SocketAddrV4::new(HOST, 5350);
    for (lifetime, port) in [(3600, 80), (0, 80), (0, 0)] {
        let request = PcpRequest {
            lifetime,
            client_address: HOST.to_ipv6_mapped(),
            op: OpRepr::Map(MapRepr {
                nonce: UPNP_NONCE,
                protocol: 6,
                internal_port: port,
                external_port: 0,
                external_address: Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
            }),
            options: Vec::new(),
        };
        let answer = pcp
            .handle(b.now, src, &request.to_bytes(), &mut b.table)
            .expect("an answer");
        let result = answer[3];
        if port == 0 {
            assert_eq!(
                result, 0,
                "deleting the set of PCP mappings with that nonce: none"
            );
        } else {
            assert_eq!(result, 2, "NOT_AUTHORIZED (lifetime {lifetime})");
        }
        let m = &b.table.explicit[&key(HOST, 80)];
        assert_eq!(
            (m.origin, m.external.port()),
            (Origin::Upnp, 8080),
            "untouched"
        );
    }
}

#[test]
fn the_port_mapping_array_is_kept_until_the_table_changes_or_a_lease_ends() {
    let mut b = bed_with(
        UpnpConfig {
            requests_per_second: 0,
            ..UpnpConfig::default()
        },
        PcpConfig::default(),
    );
    b.table.generation = Some(0);
    for (ext, int) in [("8080", "80"), ("8081", "81"), ("8082", "82")] {
        assert_eq!(b.add(HOST, ext, int, "10.0.1.2").status, 200);
    }
    let count = |b: &mut Bed| {
        (0..10u16)
            .take_while(|i| {
                b.call(
                    HOST,
                    2,
                    "GetGenericPortMappingEntry",
                    &[("NewPortMappingIndex", &i.to_string())],
                )
                .status
                    == 200
            })
            .count()
    };
    assert_eq!(count(&mut b), 3);
    // A change the table does not count (made to its fields directly) is not seen:
    // the array is the one kept.
    let hidden = b.table.explicit.pop_first().expect("a mapping");
    assert_eq!(count(&mut b), 3, "kept while the generation stays");
    b.table.explicit.insert(hidden.0, hidden.1);
    // A change through the table is seen at once.
    b.table.remove(&key(HOST, 81));
    assert_eq!(count(&mut b), 2);
    let r = b.call(
        HOST,
        2,
        "GetGenericPortMappingEntry",
        &[("NewPortMappingIndex", "1")],
    );
    assert_eq!(
        r.out("NewExternalPort"),
        "8082",
        "in order, without the deleted one"
    );
    assert_eq!(b.add(HOST, "8079", "79", "10.0.1.2").status, 200);
    let r = b.call(
        HOST,
        2,
        "GetGenericPortMappingEntry",
        &[("NewPortMappingIndex", "0")],
    );
    assert_eq!(r.out("NewExternalPort"), "8079");
    // A lease that ends drops out without any change of the table.
    let m = b.table.explicit.get_mut(&key(HOST, 80)).expect("mapped");
    m.expires = b.now + Duration::from_secs(10);
    b.table.generation = b.table.generation.map(|g| g + 1);
    assert_eq!(count(&mut b), 3);
    b.now += Duration::from_secs(11);
    assert_eq!(count(&mut b), 2, "the ended lease is gone");
}

fn cif_request(action: &str, inner: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
         <u:{action} xmlns:u=\"urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1\">{inner}\
         </u:{action}></s:Body></s:Envelope>"
    );
    format!(
        "POST /ctl/CmnIfCfg HTTP/1.1\r\nHOST: 10.0.0.1:5000\r\nCONTENT-TYPE: text/xml\r\n\
         SOAPACTION: \"urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1#{action}\"\r\n\
         CONTENT-LENGTH: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn wan_common_interface_config_answers_get_common_link_properties() {
    // miniupnpc takes a device for an IGD only when its WANDevice has this service.
    let mut b = bed();
    let r = b.raw(HOST, b"GET /WANCfg.xml HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(
        r.text.contains("<name>GetCommonLinkProperties</name>"),
        "{}",
        r.text
    );
    let r = b.raw(HOST, &cif_request("GetCommonLinkProperties", ""));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r
        .text
        .contains("<NewPhysicalLinkStatus>Up</NewPhysicalLinkStatus>"));
    assert!(r
        .text
        .contains("<NewWANAccessType>Ethernet</NewWANAccessType>"));
    assert!(r
        .text
        .contains("<NewLayer1UpstreamMaxBitRate>0</NewLayer1UpstreamMaxBitRate>"));
    b.table.external = None;
    let r = b.raw(HOST, &cif_request("GetCommonLinkProperties", ""));
    assert!(r
        .text
        .contains("<NewPhysicalLinkStatus>Down</NewPhysicalLinkStatus>"));
    let r = b.raw(HOST, &cif_request("GetTotalBytesSent", ""));
    assert_eq!(
        (r.status, r.error),
        (500, Some(401)),
        "optional, not served"
    );
    let r = b.raw(
        HOST,
        &cif_request("GetCommonLinkProperties", "<NewX>1</NewX>"),
    );
    assert_eq!((r.status, r.error), (500, Some(402)));
    let r = b.raw(HOST, b"GET /ctl/CmnIfCfg HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 405);
}
