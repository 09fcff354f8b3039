//! The UPnP IGD server end to end: miniupnpc's `upnpc` (Debian's `miniupnpc`, a
//! client nobody here wrote) discovers the gateway over SSDP, maps, lists and deletes
//! ports over SOAP, and WAN hosts' traffic shows the mappings work; UPnP shares the
//! mapping table with PCP; nothing of UPnP answers on the WAN; the HTTP server's
//! limits hold against slow and malformed requests.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use natgw_integration_tests::{command_output, recv_nothing, udp, Natgw, Setup, WAIT};
use serde_json::Value;
use testbed::{Netns, GW_LAN_A_ADDR, GW_WAN_ADDR, LAN_A_ADDR, LAN_B_ADDR, WAN_A_ADDR};

/// The HTTP port of the UPnP server.
const HTTP_PORT: u16 = 5000;
/// The SSDP port.
const SSDP_PORT: u16 = 1900;

fn description_url() -> String {
    format!("http://{GW_LAN_A_ADDR}:{HTTP_PORT}/rootDesc.xml")
}

/// Runs `upnpc ARGS` on lan-a; (success, stdout and stderr together).
fn upnpc(ns: &Netns, args: &[&str]) -> (bool, String) {
    let out = ns.command("upnpc").args(args).output().expect(
        "upnpc not found: install it with `apt-get install miniupnpc` (`cargo xtask test` does)",
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `upnpc -u DESCRIPTION ARGS` (no discovery) on lan-a.
fn upnpc_direct(s: &Setup, args: &[&str]) -> String {
    let url = description_url();
    let mut all = vec!["-u", url.as_str()];
    all.extend_from_slice(args);
    upnpc(&s.tb.lan[0].ns, &all).1
}

/// A TCP connection from `client` to `to` that `listener` (in another namespace)
/// accepts; the bytes go through both ways. Returns the peer address the listener saw.
fn tcp_through(client: &Netns, listener: TcpListener, to: SocketAddrV4) -> SocketAddrV4 {
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("echo");
        peer
    });
    let mut conn = client
        .run(|| TcpStream::connect_timeout(&to.into(), WAIT))
        .unwrap_or_else(|e| panic!("connecting to {to} through the mapping: {e}"));
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    conn.write_all(b"ping").expect("send");
    let mut echo = [0u8; 4];
    conn.read_exact(&mut echo).expect("echo back");
    assert_eq!(&echo, b"ping");
    match server.join().expect("server thread") {
        std::net::SocketAddr::V4(peer) => peer,
        other => panic!("IPv6 peer {other}"),
    }
}

/// A TCP connection to `to` from `client` that must not get through.
fn tcp_refused(client: &Netns, to: SocketAddrV4) -> bool {
    client
        .run(|| TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)))
        .is_err()
}

/// One HTTP exchange from `ns` with the UPnP server on lan-a's gateway address:
/// sends `request`, returns everything answered (empty if the connection was closed
/// without an answer).
fn http(ns: &Netns, request: &[u8]) -> String {
    http_to(ns, SocketAddrV4::new(GW_LAN_A_ADDR, HTTP_PORT), request)
}

/// [`http`] with the server at `to`.
fn http_to(ns: &Netns, to: SocketAddrV4, request: &[u8]) -> String {
    let mut conn = ns
        .run(|| TcpStream::connect_timeout(&to.into(), WAIT))
        .unwrap_or_else(|e| panic!("connecting to the UPnP HTTP server {to}: {e}"));
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    conn.write_all(request).expect("send the request");
    // The request ends here: what is missing never comes.
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// A SOAP request for WANIPConnection:2 action `action` with `args` (already XML).
fn soap_request(action: &str, args: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
         <u:{action} xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\">{args}</u:{action}>\
         </s:Body></s:Envelope>\r\n"
    );
    format!(
        "POST /ctl/IPConn HTTP/1.1\r\nHost: {GW_LAN_A_ADDR}:{HTTP_PORT}\r\n\
         Content-Type: text/xml; charset=\"utf-8\"\r\n\
         SOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:2#{action}\"\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The status code of an HTTP answer.
fn status_of(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// The external port `upnpc -a/-n` reports: "external 192.0.2.1:PORT TCP is
/// redirected to internal ...".
fn redirected_port(text: &str) -> Option<u16> {
    let line = text
        .lines()
        .find(|l| l.contains("is redirected to internal"))?;
    let endpoint = line.split_whitespace().nth(1)?;
    endpoint.parse::<SocketAddrV4>().ok().map(|e| e.port())
}

fn mapping(s: &Setup, proto: &str, internal: SocketAddrV4) -> Option<Value> {
    s.natgw.mapping_of(proto, internal)
}

/// The UPnP mapping of `internal`, if any. A deleted mapping that carried a
/// connection goes on as a traffic mapping for it (RFC 6887 §15), so "deleted" means
/// "no longer UPnP's".
fn upnp_mapping(s: &Setup, proto: &str, internal: SocketAddrV4) -> Option<Value> {
    mapping(s, proto, internal).filter(|m| m["origin"] == "upnp")
}

#[test]
fn upnpc_discovers_maps_lists_and_deletes() {
    let s = Setup::new(&[]);
    let lan = &s.tb.lan[0].ns;
    let lan_ip = LAN_A_ADDR.to_string();

    // -s with SSDP discovery from the LAN host (multicast M-SEARCH on its interface).
    // miniupnpc calls an IGD whose external address is reserved — the testbed's
    // 192.0.2.1 is TEST-NET-1 — "not connected?" and goes on only with -i.
    let (ok, status) = upnpc(lan, &["-m", &lan_ip, "-i", "-s"]);
    assert!(
        ok && status.contains("Found a (not connected?) IGD : http://10.0.1.1:5000/ctl/IPConn"),
        "upnpc -s: {status}\nnatgw log:\n{}",
        s.natgw.log()
    );
    assert!(
        status.contains(" desc: http://10.0.1.1:5000/rootDesc"),
        "discovered over SSDP: {status}"
    );
    assert!(
        status.contains(&format!("ExternalIPAddress = {GW_WAN_ADDR}")),
        "{status}"
    );
    assert!(status.contains("Status : Connected"), "{status}");

    // -a with a description: a WAN host reaches the mapped port.
    let out = upnpc_direct(
        &s,
        &[
            "-e",
            "web server",
            "-a",
            &lan_ip,
            "8080",
            "18080",
            "TCP",
            "3600",
        ],
    );
    assert_eq!(
        redirected_port(&out),
        Some(18080),
        "upnpc -a: {out}\n{}",
        s.natgw.log()
    );
    let internal = SocketAddrV4::new(LAN_A_ADDR, 8080);
    let listener = lan
        .run(|| TcpListener::bind(internal))
        .expect("listen on lan-a");
    let peer = tcp_through(
        &s.tb.wan[0].ns,
        listener,
        SocketAddrV4::new(GW_WAN_ADDR, 18080),
    );
    assert_eq!(*peer.ip(), WAN_A_ADDR, "inbound, not source-translated");
    let m = mapping(&s, "tcp", internal).expect("natgw mappings lists the UPnP mapping");
    assert_eq!(m["origin"], "upnp", "{m}");
    assert_eq!(m["description"], "web server", "{m}");
    assert_eq!(m["external"], format!("{GW_WAN_ADDR}:18080"));
    let (_, text, _) = s.natgw.cli(&["mappings"]);
    let row = text
        .lines()
        .find(|l| l.contains("10.0.1.2:8080"))
        .unwrap_or_else(|| panic!("no row for the mapping:\n{text}"));
    assert!(row.contains("upnp") && row.ends_with("web server"), "{row}");

    // -l (GetGenericPortMappingEntry) and -L (GetListOfPortMappings).
    let listed = upnpc_direct(&s, &["-l"]);
    assert!(
        listed.contains("18080->10.0.1.2:8080") && listed.contains("'web server'"),
        "upnpc -l: {listed}"
    );
    let listed2 = upnpc_direct(&s, &["-L"]);
    assert!(
        listed2.contains("18080") && listed2.contains("web server"),
        "upnpc -L: {listed2}"
    );

    // -n (AddAnyPortMapping) for a port this host already maps elsewhere: another port.
    let out = upnpc_direct(
        &s,
        &["-e", "any", "-n", &lan_ip, "9090", "18080", "TCP", "600"],
    );
    let any = redirected_port(&out).unwrap_or_else(|| panic!("upnpc -n: {out}"));
    assert_ne!(any, 18080, "the taken port is not granted twice");
    let m = mapping(&s, "tcp", SocketAddrV4::new(LAN_A_ADDR, 9090)).expect("the -n mapping");
    assert_eq!(m["origin"], "upnp");
    assert_eq!(m["external"], format!("{GW_WAN_ADDR}:{any}"));

    // -d deletes one (the connection made through it keeps a traffic mapping).
    let out = upnpc_direct(&s, &["-d", "18080", "TCP"]);
    assert!(!out.contains("failed"), "upnpc -d: {out}");
    assert!(
        upnp_mapping(&s, "tcp", internal).is_none(),
        "deleted from the table"
    );

    // -N deletes a range; the WAN host no longer gets through to what it held.
    let out = upnpc_direct(&s, &["-N", "1024", "65535", "TCP"]);
    assert!(!out.contains("failed"), "upnpc -N: {out}");
    assert!(mapping(&s, "tcp", SocketAddrV4::new(LAN_A_ADDR, 9090)).is_none());
    let _listener = lan
        .run(|| TcpListener::bind(SocketAddrV4::new(LAN_A_ADDR, 9090)))
        .expect("listen on lan-a");
    assert!(tcp_refused(
        &s.tb.wan[0].ns,
        SocketAddrV4::new(GW_WAN_ADDR, any)
    ));
    let listed = upnpc_direct(&s, &["-l"]);
    assert!(!listed.contains("->10.0.1.2"), "nothing left: {listed}");
    assert!(s.natgw.log().contains("upnp.mapped"), "mappings are logged");
}

#[test]
fn upnp_and_pcp_share_the_table() {
    let s = Setup::new(&[]);
    let lan_ip = LAN_A_ADDR.to_string();
    // PCP takes a port; UPnP may not have it.
    let server = GW_LAN_A_ADDR.to_string();
    let out = s.tb.lan[0]
        .ns
        .command(natgw_integration_tests::natgw_bin())
        .args([
            "pcp",
            "map",
            "--server",
            &server,
            "--json",
            "--protocol",
            "tcp",
            "--internal-port",
            "7000",
            "--suggest",
            "0.0.0.0:17000",
        ])
        .output()
        .expect("natgw pcp map");
    let report: Value = serde_json::from_slice(&out.stdout).expect("natgw pcp JSON");
    let pcp_ext: SocketAddrV4 = report["external"]
        .as_str()
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("PCP mapping: {report}"));
    let port = pcp_ext.port().to_string();
    let refused = upnpc_direct(&s, &["-a", &lan_ip, "7001", &port, "TCP", "600"]);
    assert!(
        refused.contains("718") || refused.contains("729"),
        "UPnP is refused PCP's port {port}: {refused}"
    );
    assert_eq!(redirected_port(&refused), None);
    // And the PCP mapping is not UPnP's to delete.
    let out = upnpc_direct(&s, &["-d", &port, "TCP"]);
    assert!(out.contains("714") || out.contains("failed"), "{out}");
    assert!(mapping(&s, "tcp", SocketAddrV4::new(LAN_A_ADDR, 7000)).is_some());

    // UPnP takes a port; PCP does not get it.
    let out = upnpc_direct(
        &s,
        &["-e", "game", "-a", &lan_ip, "7002", "17002", "TCP", "600"],
    );
    assert_eq!(redirected_port(&out), Some(17002), "{out}");
    let out = s.tb.lan[0]
        .ns
        .command(natgw_integration_tests::natgw_bin())
        .args([
            "pcp",
            "map",
            "--server",
            &server,
            "--json",
            "--protocol",
            "tcp",
            "--internal-port",
            "7003",
            "--suggest",
            "0.0.0.0:17002",
        ])
        .output()
        .expect("natgw pcp map");
    let report: Value = serde_json::from_slice(&out.stdout).expect("natgw pcp JSON");
    assert_ne!(
        report["external"].as_str(),
        Some(format!("{GW_WAN_ADDR}:17002").as_str()),
        "PCP is not given UPnP's port: {report}"
    );
    // Nor can PCP take over the UPnP mapping of the same internal endpoint.
    let out = s.tb.lan[0]
        .ns
        .command(natgw_integration_tests::natgw_bin())
        .args([
            "pcp",
            "map",
            "--server",
            &server,
            "--json",
            "--protocol",
            "tcp",
            "--internal-port",
            "7002",
            "--lifetime",
            "0",
        ])
        .output()
        .expect("natgw pcp map");
    let report: Value = serde_json::from_slice(&out.stdout).expect("natgw pcp JSON");
    assert_ne!(report["result"], "SUCCESS", "{report}");
    let m = mapping(&s, "tcp", SocketAddrV4::new(LAN_A_ADDR, 7002)).expect("still there");
    assert_eq!(m["origin"], "upnp");
    assert_eq!(m["description"], "game");
}

#[test]
fn another_hosts_internal_client_is_refused_by_default() {
    let s = Setup::new(&[]);
    let other = LAN_B_ADDR.to_string();
    let out = upnpc_direct(&s, &["-a", &other, "80", "18081", "TCP", "600"]);
    assert!(out.contains("606"), "606 Action not authorized: {out}");
    assert!(mapping(&s, "tcp", SocketAddrV4::new(LAN_B_ADDR, 80)).is_none());
}

#[test]
fn allow_other_hosts_lets_a_control_point_map_for_another_host() {
    let dir = std::env::temp_dir().join(format!("natgw-upnp-other-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("natgw.toml");
    std::fs::write(
        &config,
        "[upnp]\nallow_other_hosts = true\nhttp_port = 5080\n",
    )
    .expect("write config");
    let s = Setup::new(&["--config", config.to_str().expect("UTF-8 path")]);
    let _ = std::fs::remove_dir_all(&dir);
    let other = LAN_B_ADDR.to_string();
    // The HTTP server moved to http_port, and SSDP says so.
    let lan_sock = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 0);
    lan_sock
        .send_to(m_search(), SocketAddrV4::new(GW_LAN_A_ADDR, SSDP_PORT))
        .expect("send");
    let (answer, _) = recv_nothing(&lan_sock, WAIT).expect("an SSDP answer");
    assert!(
        String::from_utf8_lossy(&answer).contains("LOCATION: http://10.0.1.1:5080/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(tcp_refused(
        &s.tb.lan[0].ns,
        SocketAddrV4::new(GW_LAN_A_ADDR, HTTP_PORT)
    ));
    let (_, out) = upnpc(
        &s.tb.lan[0].ns,
        &[
            "-u",
            "http://10.0.1.1:5080/rootDesc.xml",
            "-a",
            &other,
            "80",
            "18082",
            "TCP",
            "600",
        ],
    );
    assert_eq!(redirected_port(&out), Some(18082), "{out}");
    let m = mapping(&s, "tcp", SocketAddrV4::new(LAN_B_ADDR, 80)).expect("mapped");
    assert_eq!(m["origin"], "upnp");
}

/// GNOME's GUPnP-IGD (tests/gupnp_igd.py) maps a port through its own SSDP
/// discovery and IGD:1 control, and removes it.
#[test]
fn gupnp_igd_maps_and_removes_a_port() {
    use std::io::BufRead as _;
    use std::process::Stdio;
    let s = Setup::new(&[]);
    let lan = &s.tb.lan[0].ns;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/gupnp_igd.py");
    let mut child = lan
        .command("/usr/bin/python3")
        .args([
            script,
            "TCP",
            "18090",
            &LAN_A_ADDR.to_string(),
            "8090",
            "600",
            "gupnp test",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // GLib's warnings when the helper is killed at the end; what matters it prints
        // on stdout.
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "python3 with gir1.2-gupnpigd-1.0 and python3-gi (`cargo xtask test` installs them)",
        );
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(40));
    let Ok(first) = first else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("GUPnP-IGD said nothing\nnatgw log:\n{}", s.natgw.log());
    };
    if !first.starts_with("mapped") {
        let _ = child.kill();
        let _ = child.wait();
        panic!("GUPnP-IGD: {first}\nnatgw log:\n{}", s.natgw.log());
    }
    assert!(
        first.contains(&format!("{GW_WAN_ADDR}:18090 -> {LAN_A_ADDR}:8090")),
        "{first}"
    );
    let internal = SocketAddrV4::new(LAN_A_ADDR, 8090);
    let m = mapping(&s, "tcp", internal).expect("the GUPnP mapping");
    assert_eq!(m["origin"], "upnp");
    assert_eq!(m["description"], "gupnp test");
    let listener = lan.run(|| TcpListener::bind(internal)).expect("listen");
    tcp_through(
        &s.tb.wan[0].ns,
        listener,
        SocketAddrV4::new(GW_WAN_ADDR, 18090),
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"remove\n")
        .expect("tell it to remove");
    let removed = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(removed.as_deref(), Ok("removed"));
    assert!(
        upnp_mapping(&s, "tcp", internal).is_none(),
        "removed from the table\nnatgw log:\n{}",
        s.natgw.log()
    );
}

/// Waits (at most [`WAIT`]) for one GENA NOTIFY on `listener`, answers it 200 and
/// returns it.
fn next_notify(listener: &TcpListener) -> Option<String> {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + WAIT;
    let mut conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => return None,
        }
    };
    conn.set_nonblocking(false).expect("blocking");
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut text = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && !String::from_utf8_lossy(&text).contains("</e:propertyset>")
    {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    Some(String::from_utf8_lossy(&text).into_owned())
}

#[test]
fn gena_subscribers_hear_of_new_mappings_and_a_new_external_address() {
    let s = Setup::new(&[]);
    let lan = &s.tb.lan[0].ns;
    let listener = lan
        .run(|| TcpListener::bind(SocketAddrV4::new(LAN_A_ADDR, 0)))
        .expect("listen on lan-a");
    let port = listener.local_addr().expect("address").port();
    let subscribe = format!(
        "SUBSCRIBE /evt/IPConn HTTP/1.1\r\nHost: {GW_LAN_A_ADDR}:{HTTP_PORT}\r\n\
         CALLBACK: <http://{LAN_A_ADDR}:{port}/events>\r\nNT: upnp:event\r\n\
         TIMEOUT: Second-300\r\n\r\n"
    );
    let answer = http(lan, subscribe.as_bytes());
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    assert!(
        answer.to_ascii_uppercase().contains("SID: UUID:"),
        "{answer}"
    );
    let initial = next_notify(&listener)
        .unwrap_or_else(|| panic!("no initial event\nnatgw log:\n{}", s.natgw.log()));
    assert!(initial.contains("SEQ: 0"), "{initial}");
    assert!(
        initial.contains("<PortMappingNumberOfEntries>0</PortMappingNumberOfEntries>"),
        "{initial}"
    );
    assert!(
        initial.contains(&format!(
            "<ExternalIPAddress>{GW_WAN_ADDR}</ExternalIPAddress>"
        )),
        "{initial}"
    );
    let args = format!(
        "<NewRemoteHost></NewRemoteHost><NewExternalPort>18100</NewExternalPort>\
         <NewProtocol>UDP</NewProtocol><NewInternalPort>8100</NewInternalPort>\
         <NewInternalClient>{LAN_A_ADDR}</NewInternalClient><NewEnabled>1</NewEnabled>\
         <NewPortMappingDescription>evented</NewPortMappingDescription>\
         <NewLeaseDuration>600</NewLeaseDuration>"
    );
    let answer = http(lan, &soap_request("AddPortMapping", &args));
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    let event = next_notify(&listener).expect("an event for the new mapping");
    assert!(event.contains("SEQ: 1"), "{event}");
    assert!(
        event.contains("<PortMappingNumberOfEntries>1</PortMappingNumberOfEntries>"),
        "{event}"
    );
    // A new external address: subscribers hear of it, and the mapping moved with it.
    let gw = &s.tb.gateway.ns;
    let _ = command_output(gw, "ip", &["addr", "del", "192.0.2.1/24", "dev", "wan0"]);
    let _ = command_output(gw, "ip", &["addr", "add", "192.0.2.7/24", "dev", "wan0"]);
    natgw_integration_tests::restore_gateway_default_route(gw);
    // Deleting the old address first may be heard as an event of its own (no address).
    let events: Vec<String> = (0..3).map_while(|_| next_notify(&listener)).collect();
    assert!(
        events
            .iter()
            .any(|e| e.contains("<ExternalIPAddress>192.0.2.7</ExternalIPAddress>")),
        "{events:?}"
    );
    let answer = http(lan, &soap_request("GetExternalIPAddress", ""));
    assert!(
        answer.contains("<NewExternalIPAddress>192.0.2.7</NewExternalIPAddress>"),
        "{answer}"
    );
    let m = upnp_mapping(&s, "udp", SocketAddrV4::new(LAN_A_ADDR, 8100)).expect("kept");
    assert_eq!(m["external"], "192.0.2.7:18100");
    // A callback on another host is refused: events go to the subscriber only.
    let other = format!(
        "SUBSCRIBE /evt/IPConn HTTP/1.1\r\nHost: {GW_LAN_A_ADDR}:{HTTP_PORT}\r\n\
         CALLBACK: <http://{LAN_B_ADDR}:{port}/events>\r\nNT: upnp:event\r\n\r\n"
    );
    let answer = http(lan, other.as_bytes());
    let code = status_of(&answer).unwrap_or(0);
    assert!((400..500).contains(&code), "{answer}");
}

/// The NOTIFYs heard on lan-a's SSDP group membership within `within`.
fn notifies(sock: &UdpSocket, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

#[test]
fn alive_at_start_and_byebye_on_stop() {
    let mut s = Setup::new(&[]);
    let group = Ipv4Addr::new(239, 255, 255, 250);
    let sock: UdpSocket = s.tb.lan[0].ns.run(|| {
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .expect("socket");
        sock.set_reuse_address(true).expect("reuse");
        sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SSDP_PORT).into())
            .expect("bind 1900");
        sock.join_multicast_v4(&group, &LAN_A_ADDR).expect("join");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        sock.into()
    });
    // The start's rounds come 2 s apart; at least one is still to come.
    let heard = notifies(&sock, Duration::from_secs(5));
    let alive: Vec<&String> = heard
        .iter()
        .filter(|m| m.contains("NTS: ssdp:alive"))
        .collect();
    assert!(
        alive.iter().any(
            |m| m.contains("NT: urn:schemas-upnp-org:device:InternetGatewayDevice:2")
                && m.contains("LOCATION: http://10.0.1.1:5000/rootDesc.xml")
                && m.to_ascii_uppercase()
                    .contains("CACHE-CONTROL: MAX-AGE=1800")
        ),
        "ssdp:alive on lan-a: {heard:?}"
    );
    assert!(
        !heard.iter().any(|m| m.contains("10.0.2.1")),
        "lan1's advertisements stay on lan1: {heard:?}"
    );
    s.natgw.stop();
    let heard = notifies(&sock, Duration::from_secs(1));
    assert!(
        heard
            .iter()
            .any(|m| m.contains("NTS: ssdp:byebye") && m.contains("upnp:rootdevice")),
        "ssdp:byebye when natgw stops: {heard:?}"
    );
}

#[test]
fn an_ended_lease_ends_the_mapping_and_subscribers_hear_of_it() {
    let s = Setup::new(&[]);
    let lan = &s.tb.lan[0].ns;
    let listener = lan
        .run(|| TcpListener::bind(SocketAddrV4::new(LAN_A_ADDR, 0)))
        .expect("listen on lan-a");
    let port = listener.local_addr().expect("address").port();
    let subscribe = format!(
        "SUBSCRIBE /evt/IPConn HTTP/1.1\r\nHost: {GW_LAN_A_ADDR}:{HTTP_PORT}\r\n\
         CALLBACK: <http://{LAN_A_ADDR}:{port}/events>\r\nNT: upnp:event\r\n\r\n"
    );
    assert_eq!(status_of(&http(lan, subscribe.as_bytes())), Some(200));
    next_notify(&listener).expect("the initial event");
    let args = format!(
        "<NewRemoteHost></NewRemoteHost><NewExternalPort>18300</NewExternalPort>\
         <NewProtocol>UDP</NewProtocol><NewInternalPort>8300</NewInternalPort>\
         <NewInternalClient>{LAN_A_ADDR}</NewInternalClient><NewEnabled>1</NewEnabled>\
         <NewPortMappingDescription>short</NewPortMappingDescription>\
         <NewLeaseDuration>2</NewLeaseDuration>"
    );
    assert_eq!(
        status_of(&http(lan, &soap_request("AddPortMapping", &args))),
        Some(200)
    );
    let added = next_notify(&listener).expect("an event for the mapping");
    assert!(added.contains("<PortMappingNumberOfEntries>1<"), "{added}");
    let ended = next_notify(&listener).expect("an event when the lease ends");
    assert!(ended.contains("<PortMappingNumberOfEntries>0<"), "{ended}");
    assert!(upnp_mapping(&s, "udp", SocketAddrV4::new(LAN_A_ADDR, 8300)).is_none());
    let answer = http(
        lan,
        &soap_request(
            "GetGenericPortMappingEntry",
            "<NewPortMappingIndex>0</NewPortMappingIndex>",
        ),
    );
    assert!(answer.contains("<errorCode>713</errorCode>"), "{answer}");
}

/// An M-SEARCH for every device.
fn m_search() -> &'static [u8] {
    b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n"
}

#[test]
fn nothing_of_upnp_answers_on_the_wan() {
    let s = Setup::new(&[]);
    // The LAN gets SSDP answers (the check can fail: it sees the server at all).
    let lan_sock = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 0);
    lan_sock
        .send_to(m_search(), SocketAddrV4::new(GW_LAN_A_ADDR, SSDP_PORT))
        .expect("send");
    let (answer, _) =
        recv_nothing(&lan_sock, WAIT).expect("a unicast M-SEARCH from the LAN is answered");
    assert!(String::from_utf8_lossy(&answer).contains("LOCATION: http://10.0.1.1:5000/"));

    // A WAN host's unicast M-SEARCH to the external address: nothing.
    let wan_sock = udp(&s.tb.wan[0].ns, WAN_A_ADDR, 0);
    wan_sock
        .send_to(m_search(), SocketAddrV4::new(GW_WAN_ADDR, SSDP_PORT))
        .expect("send");
    assert!(recv_nothing(&wan_sock, Duration::from_secs(3)).is_none());

    // The router on the WAN link: multicast out of that link, and unicast to the
    // gateway's LAN address routed in through the WAN: nothing.
    let inet = &s.tb.inet;
    let _ = command_output(
        inet,
        "ip",
        &[
            "route",
            "replace",
            "10.0.1.0/24",
            "via",
            &GW_WAN_ADDR.to_string(),
        ],
    );
    let inet_addr = testbed::INET_GW_SIDE_ADDR;
    let sock: UdpSocket = inet.run(|| {
        let sock = UdpSocket::bind(SocketAddrV4::new(inet_addr, 0)).expect("bind");
        socket2::SockRef::from(&sock)
            .set_multicast_if_v4(&inet_addr)
            .expect("multicast if");
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        sock
    });
    sock.send_to(
        m_search(),
        SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), SSDP_PORT),
    )
    .expect("send multicast");
    sock.send_to(m_search(), SocketAddrV4::new(GW_LAN_A_ADDR, SSDP_PORT))
        .expect("send unicast");
    assert!(
        recv_nothing(&sock, Duration::from_secs(3)).is_none(),
        "SSDP answered the WAN"
    );

    // HTTP on the external address, and on the LAN address through the WAN: no answer.
    for to in [
        SocketAddrV4::new(GW_WAN_ADDR, HTTP_PORT),
        SocketAddrV4::new(GW_LAN_A_ADDR, HTTP_PORT),
    ] {
        let answered = inet.run(|| {
            let Ok(mut conn) = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2))
            else {
                return String::new();
            };
            conn.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let _ = conn.write_all(b"GET /rootDesc.xml HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut answer = Vec::new();
            let _ = conn.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).into_owned()
        });
        assert!(
            answered.is_empty(),
            "HTTP {to} answered the WAN: {answered}"
        );
    }
}

#[test]
fn slow_and_malformed_requests_are_cut_off_or_refused() {
    let s = Setup::new(&[]);
    let lan = &s.tb.lan[0].ns;
    // Slowloris: a header line a second, never the end of the head.
    let to = SocketAddrV4::new(GW_LAN_A_ADDR, HTTP_PORT);
    let mut conn = lan
        .run(|| TcpStream::connect_timeout(&to.into(), WAIT))
        .expect("connect");
    conn.set_read_timeout(Some(Duration::from_millis(900)))
        .expect("timeout");
    let started = Instant::now();
    conn.write_all(b"POST /ctl/IPConn HTTP/1.1\r\n")
        .expect("send");
    let mut closed_after = None;
    for i in 0..15 {
        let _ = conn.write_all(format!("X-Slow-{i}: a\r\n").as_bytes());
        let mut buf = [0u8; 256];
        match conn.read(&mut buf) {
            Ok(0) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
    }
    let closed_after = closed_after.expect("the slow connection is closed");
    assert!(
        closed_after >= Duration::from_secs(4) && closed_after < Duration::from_secs(10),
        "closed after {closed_after:?}, the read timeout is 5 s"
    );

    // Malformed requests get an error status, and the server goes on.
    let garbage = http(lan, b"\x01\x02 not http\r\n\r\n");
    assert_eq!(status_of(&garbage), Some(400), "{garbage}");
    let mut broken = soap_request("AddPortMapping", "<NewExternalPort>1</Oops>");
    broken.truncate(broken.len() - 10);
    let answer = http(lan, &broken);
    let code = status_of(&answer).unwrap_or(0);
    assert!((400..600).contains(&code), "truncated SOAP: {answer}");
    let answer = http(
        lan,
        &soap_request(
            "AddPortMapping",
            "<NewExternalPort>x</NewExternalPort></u:AddPortMapping><bad",
        ),
    );
    let code = status_of(&answer).unwrap_or(0);
    assert!((400..600).contains(&code), "malformed SOAP: {answer}");
    let entity = b"POST /ctl/IPConn HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n\
        SOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:2#GetExternalIPAddress\"\r\n\
        Content-Length: 120\r\n\r\n<?xml version=\"1.0\"?><!DOCTYPE s [<!ENTITY a \"aaaaaaaaaa\">]><s:Envelope>&a;</s:Envelope>                     ";
    let answer = http(lan, entity);
    let code = status_of(&answer).unwrap_or(0);
    assert!((400..600).contains(&code), "DOCTYPE: {answer}");
    let huge = b"POST /ctl/IPConn HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n";
    let answer = http(lan, huge);
    assert_eq!(status_of(&answer), Some(413), "{answer}");
    // A well-formed request still works.
    let answer = http(lan, &soap_request("GetExternalIPAddress", ""));
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    assert!(answer.contains(&format!(
        "<NewExternalIPAddress>{GW_WAN_ADDR}</NewExternalIPAddress>"
    )));
}

#[test]
fn a_host_holds_at_most_eight_connections() {
    let s = Setup::new(&[]);
    let lan = &s.tb.lan[0].ns;
    let to = SocketAddrV4::new(GW_LAN_A_ADDR, HTTP_PORT);
    let connect = || {
        lan.run(|| TcpStream::connect_timeout(&to.into(), WAIT))
            .expect("connect")
    };
    // Eight idle connections are held (until the read timeout)...
    let held: Vec<TcpStream> = (0..8).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // ...a ninth is closed at once, long before the 5 s read timeout.
    let mut ninth = connect();
    ninth
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let closed = matches!(ninth.read(&mut buf), Ok(0))
        || ninth
            .read(&mut buf)
            .is_err_and(|e| !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
    assert!(
        closed && started.elapsed() < Duration::from_secs(2),
        "the ninth is closed at once"
    );
    // Another host is not affected.
    let answer = http_to(
        &s.tb.lan[1].ns,
        SocketAddrV4::new(testbed::GW_LAN_B_ADDR, HTTP_PORT),
        b"GET /rootDesc.xml HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status_of(&answer), Some(200), "lan-b: {answer}");
    let refused = natgw_integration_tests::wait_for(WAIT, || {
        let n = s.natgw.status()["controller_counters"]["upnp_connections_refused"]
            .as_u64()
            .unwrap_or(0);
        (n >= 1).then_some(n)
    });
    assert!(refused.is_some(), "counted");
    drop(held);
}

#[test]
fn no_upnp_turns_it_off() {
    let s = Setup::new(&["--no-upnp"]);
    assert!(tcp_refused(
        &s.tb.lan[0].ns,
        SocketAddrV4::new(GW_LAN_A_ADDR, HTTP_PORT)
    ));
    let lan_sock = udp(&s.tb.lan[0].ns, LAN_A_ADDR, 0);
    lan_sock
        .send_to(m_search(), SocketAddrV4::new(GW_LAN_A_ADDR, SSDP_PORT))
        .expect("send");
    assert!(recv_nothing(&lan_sock, Duration::from_secs(2)).is_none());
    assert!(s.natgw.log().contains("upnp.disabled"));
}

/// SIGHUP applies `[upnp]` settings. A restart adopts the data path and the
/// explicit mappings file: a UPnP mapping keeps its port, origin and description,
/// the device keeps its UUID, and the control point can still list and delete it.
/// (The log is read before the restart: the old process's wrapper removes the file.)
#[test]
fn upnp_mappings_and_the_device_survive_a_restart_and_settings_reload() {
    let dir = std::env::temp_dir().join(format!("natgw-upnp-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("natgw.toml");
    std::fs::write(&config, "[upnp]\nallow_other_hosts = false\n").expect("write config");
    let config_arg = config.to_str().expect("UTF-8 path").to_owned();
    let mut s = Setup::new(&["--config", &config_arg]);
    let lan_ip = LAN_A_ADDR.to_string();
    let out = upnpc_direct(
        &s,
        &["-e", "kept", "-a", &lan_ip, "8200", "18200", "TCP", "3600"],
    );
    assert_eq!(redirected_port(&out), Some(18200), "{out}");
    let uuid = |s: &Setup| {
        let doc = http(
            &s.tb.lan[0].ns,
            b"GET /rootDesc.xml HTTP/1.1\r\nHost: 10.0.1.1:5000\r\n\r\n",
        );
        doc.split("<UDN>")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .map(str::to_owned)
    };
    // SIGHUP: another host may now be mapped for.
    let other = LAN_B_ADDR.to_string();
    let out = upnpc_direct(&s, &["-a", &other, "80", "18201", "TCP", "600"]);
    assert!(out.contains("606"), "{out}");
    std::fs::write(&config, "[upnp]\nallow_other_hosts = true\n").expect("write config");
    let pid = s.natgw.inner().pid().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let applied = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        s.natgw
            .log()
            .contains("reload.upnp applied allow_other_hosts=true")
    });
    assert!(applied, "{}", s.natgw.log());
    let out = upnpc_direct(&s, &["-a", &other, "80", "18201", "TCP", "600"]);
    assert_eq!(redirected_port(&out), Some(18201), "{out}");
    let before = uuid(&s).expect("a UDN");
    s.natgw.stop();
    s.natgw = Natgw::start(&s.tb.gateway.ns, &["--config", &config_arg]);
    let m = upnp_mapping(&s, "tcp", SocketAddrV4::new(LAN_A_ADDR, 8200)).expect("adopted");
    assert_eq!(m["description"], "kept");
    assert_eq!(m["external"], format!("{GW_WAN_ADDR}:18200"));
    assert_eq!(
        uuid(&s).as_deref(),
        Some(before.as_str()),
        "the same device"
    );
    let listed = upnpc_direct(&s, &["-l"]);
    assert!(
        listed.contains("18200->10.0.1.2:8200") && listed.contains("'kept'"),
        "{listed}"
    );

    let out = upnpc_direct(&s, &["-d", "18200", "TCP"]);
    assert!(!out.contains("failed"), "{out}");
    assert!(upnp_mapping(&s, "tcp", SocketAddrV4::new(LAN_A_ADDR, 8200)).is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `upnpc -l` walks a longer list than a handful (one GetGenericPortMappingEntry per
/// mapping) within the default rate limit.
#[test]
fn upnpc_lists_a_hundred_mappings() {
    let s = Setup::new(&[]);
    let lan = &s.tb.lan[0].ns;
    for i in 0..100u16 {
        let args = format!(
            "<NewRemoteHost></NewRemoteHost><NewExternalPort>{}</NewExternalPort>\
             <NewProtocol>UDP</NewProtocol><NewInternalPort>{}</NewInternalPort>\
             <NewInternalClient>{LAN_A_ADDR}</NewInternalClient><NewEnabled>1</NewEnabled>\
             <NewPortMappingDescription>many {i}</NewPortMappingDescription>\
             <NewLeaseDuration>600</NewLeaseDuration>",
            21000 + i,
            21000 + i
        );
        let answer = http(lan, &soap_request("AddPortMapping", &args));
        assert_eq!(status_of(&answer), Some(200), "mapping {i}: {answer}");
    }
    let listed = upnpc_direct(&s, &["-l"]);
    let rows = listed.lines().filter(|l| l.contains("->10.0.1.2:")).count();
    assert_eq!(rows, 100, "upnpc -l: {listed}");
    assert!(listed.contains("'many 99'"), "{listed}");
}
