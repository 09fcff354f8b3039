//! The demonstration `cargo xtask run` gives once natgw is up: LAN hosts exchange UDP
//! datagrams and TCP lines with WAN hosts through the gateway, each WAN host reports the
//! source address it saw, and the tables show the translation at work.
//!
//! Every socket wait is bounded by [`REPLY_WAIT`]; a step that fails prints a `FAIL`
//! line and is counted, and the demonstration goes on so one run shows every problem.

use std::fmt::Write as _;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, Socket, Type};
use testbed::{Netns, Testbed, GW_WAN_ADDR};

use crate::signals;

/// How long any one step waits for a datagram, a connection or a line.
pub const REPLY_WAIT: Duration = Duration::from_secs(3);

/// The port every LAN host sends from, so that lan-b collides with lan-a.
pub const CLIENT_PORT: u16 = 40_000;

/// The WAN hosts' UDP echo port.
const UDP_PORT: u16 = 7000;

/// The WAN hosts' TCP port.
const TCP_PORT: u16 = 8080;

/// How often a non-blocking accept is retried.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// One host of the testbed as the demonstration names it.
#[derive(Clone, Copy)]
struct Host<'a> {
    name: &'static str,
    ns: &'a Netns,
    addr: Ipv4Addr,
}

/// The testbed's four hosts.
struct Hosts<'a> {
    lan_a: Host<'a>,
    lan_b: Host<'a>,
    wan_a: Host<'a>,
    wan_b: Host<'a>,
}

impl<'a> Hosts<'a> {
    fn of(testbed: &'a Testbed) -> Result<Self> {
        let host = |hosts: &'a [testbed::Host], index: usize, name| {
            hosts
                .get(index)
                .map(|host| Host {
                    name,
                    ns: &host.ns,
                    addr: host.addr,
                })
                .with_context(|| format!("the testbed has no {name}"))
        };
        Ok(Hosts {
            lan_a: host(&testbed.lan, 0, "lan-a")?,
            lan_b: host(&testbed.lan, 1, "lan-b")?,
            wan_a: host(&testbed.wan, 0, "wan-a")?,
            wan_b: host(&testbed.wan, 1, "wan-b")?,
        })
    }
}

/// One exchange between a LAN host and a WAN host, as a table row.
struct Exchange {
    from: String,
    to: String,
    /// The source the WAN host saw: the external endpoint natgw chose.
    seen_as: Option<SocketAddr>,
    /// The answer the LAN host got back, if any.
    reply: Option<String>,
    problems: Vec<String>,
}

impl Exchange {
    fn new(from: Host<'_>, from_port: u16, to: Host<'_>, to_port: u16) -> Self {
        Exchange {
            from: format!("{} {}:{from_port}", from.name, from.addr),
            to: format!("{} {}:{to_port}", to.name, to.addr),
            seen_as: None,
            reply: None,
            problems: Vec::new(),
        }
    }

    /// The external endpoint natgw chose, if the WAN host saw a translated source.
    fn translated(&self) -> Option<SocketAddr> {
        self.seen_as
            .filter(|source| source.ip() == IpAddr::V4(GW_WAN_ADDR))
    }

    /// Records where the WAN host saw the packet come from, flagging an untranslated
    /// source.
    fn saw(&mut self, server: &str, source: SocketAddr) {
        self.seen_as = Some(source);
        if source.ip() != IpAddr::V4(GW_WAN_ADDR) {
            self.problems.push(format!(
                "not translated: {server} saw {source}, not the gateway's {GW_WAN_ADDR}"
            ));
        }
    }
}

/// UDP: lan-a to wan-a and wan-b, lan-b to wan-a, all from port `client_port`
/// ([`CLIENT_PORT`] in the first part); the WAN hosts echo. Returns how many checks
/// failed.
pub fn udp(testbed: &Testbed, client_port: u16) -> Result<usize> {
    let hosts = Hosts::of(testbed)?;
    println!(
        "\nUDP: the LAN hosts send a datagram from port {client_port} to port {UDP_PORT} of \
         the WAN hosts, which echo it back"
    );
    let bind = |host: Host<'_>, port| {
        let socket = host
            .ns
            .bind_udp((host.addr, port))
            .with_context(|| format!("binding UDP {}:{port} on {}", host.addr, host.name))?;
        socket
            .set_write_timeout(Some(REPLY_WAIT))
            .context("setting a UDP send timeout")?;
        anyhow::Ok(socket)
    };
    let lan_a = bind(hosts.lan_a, client_port)?;
    let lan_b = bind(hosts.lan_b, client_port)?;
    let wan_a = bind(hosts.wan_a, UDP_PORT)?;
    let wan_b = bind(hosts.wan_b, UDP_PORT)?;

    let mut rows = Vec::new();
    for (client, client_socket, server, server_socket) in [
        (hosts.lan_a, &lan_a, hosts.wan_a, &wan_a),
        (hosts.lan_a, &lan_a, hosts.wan_b, &wan_b),
        (hosts.lan_b, &lan_b, hosts.wan_a, &wan_a),
    ] {
        signals::check()?;
        rows.push(udp_exchange(
            client,
            client_socket,
            client_port,
            server,
            server_socket,
        ));
    }
    print_table(&rows, |row| {
        if row.reply.is_some() { "yes" } else { "no" }.to_owned()
    });

    let mut failures = count_problems(&rows);
    let [to_wan_a, to_wan_b, lan_b_row] = [&rows[0], &rows[1], &rows[2]];
    let (a, b) = (hosts.lan_a, hosts.lan_b);
    failures += check(match (to_wan_a.translated(), to_wan_b.translated()) {
        (Some(x), Some(y)) if x == y => Verdict::Pass(format!(
            "endpoint-independent mapping (RFC 4787 REQ-1): wan-a and wan-b both saw \
             {} {}:{client_port} as {x}",
            a.name, a.addr
        )),
        (Some(x), Some(y)) => Verdict::Fail(format!(
            "endpoint-independent mapping (RFC 4787 REQ-1): {} {}:{client_port} appeared \
             as {x} to wan-a but as {y} to wan-b",
            a.name, a.addr
        )),
        _ => Verdict::Skip("endpoint-independent mapping: an exchange above failed".to_owned()),
    });
    failures += check(match (to_wan_a.translated(), lan_b_row.translated()) {
        (Some(x), Some(y)) if x != y => Verdict::Pass(format!(
            "port collision: {} {}:{client_port} got {y}, distinct from {}'s {x}",
            b.name, b.addr, a.name
        )),
        (Some(x), Some(_)) => Verdict::Fail(format!(
            "port collision: {} and {} were both given {x}",
            a.name, b.name
        )),
        _ => Verdict::Skip("port collision: an exchange above failed".to_owned()),
    });
    Ok(failures)
}

/// Sends one datagram from `client` to `server`, which echoes it. Never fails: what went
/// wrong is recorded in the row.
fn udp_exchange(
    client: Host<'_>,
    client_socket: &UdpSocket,
    client_port: u16,
    server: Host<'_>,
    server_socket: &UdpSocket,
) -> Exchange {
    let mut row = Exchange::new(client, client_port, server, UDP_PORT);
    let server_addr = SocketAddr::from((server.addr, UDP_PORT));
    let request = format!("natgw demo: {} -> {}", client.name, server.name);
    if let Err(e) = client_socket.send_to(request.as_bytes(), server_addr) {
        row.problems.push(format!(
            "{} could not send to {server_addr}: {e}",
            client.name
        ));
        return row;
    }
    let source = match recv_matching(server_socket, |_, data| data == request.as_bytes()) {
        Ok(Some(source)) => source,
        Ok(None) => {
            row.problems.push(format!(
                "{} did not receive the datagram within {} s",
                server.name,
                REPLY_WAIT.as_secs()
            ));
            return row;
        }
        Err(e) => {
            row.problems.push(format!("{} receiving: {e}", server.name));
            return row;
        }
    };
    row.saw(server.name, source);

    let reply = format!("echo from {}: {request}", server.name);
    if let Err(e) = server_socket.send_to(reply.as_bytes(), source) {
        row.problems
            .push(format!("{} could not echo to {source}: {e}", server.name));
        return row;
    }
    match recv_matching(client_socket, |from, data| {
        from == server_addr && data == reply.as_bytes()
    }) {
        Ok(Some(_)) => row.reply = Some(reply),
        Ok(None) => row.problems.push(format!(
            "reply not received by {} within {} s",
            client.name,
            REPLY_WAIT.as_secs()
        )),
        Err(e) => row
            .problems
            .push(format!("{} receiving the reply: {e}", client.name)),
    }
    row
}

/// Receives until a datagram satisfies `wanted` (stale ones are skipped) or
/// [`REPLY_WAIT`] passes; `Ok(None)` on time-out.
fn recv_matching(
    socket: &UdpSocket,
    wanted: impl Fn(SocketAddr, &[u8]) -> bool,
) -> io::Result<Option<SocketAddr>> {
    let deadline = Instant::now() + REPLY_WAIT;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buf) {
            Ok((len, from)) if wanted(from, &buf[..len]) => return Ok(Some(from)),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// TCP: lan-a connects to wan-a and lan-b to wan-b, both from port `client_port`, and
/// each side sends one line. Returns how many checks failed.
pub fn tcp(testbed: &Testbed, client_port: u16) -> Result<usize> {
    let hosts = Hosts::of(testbed)?;
    println!(
        "\nTCP: the LAN hosts connect from port {client_port} to port {TCP_PORT} of the WAN \
         hosts and exchange a line"
    );
    let listen = |host: Host<'_>| {
        let addr = SocketAddr::from((host.addr, TCP_PORT));
        host.ns
            .try_run(|| TcpListener::bind(addr))?
            .with_context(|| format!("listening on TCP {addr} on {}", host.name))
    };
    let wan_a = listen(hosts.wan_a)?;
    let wan_b = listen(hosts.wan_b)?;

    let mut rows = Vec::new();
    for (client, server, listener) in [
        (hosts.lan_a, hosts.wan_a, &wan_a),
        (hosts.lan_b, hosts.wan_b, &wan_b),
    ] {
        signals::check()?;
        rows.push(tcp_exchange(client, client_port, server, listener)?);
    }
    print_table(&rows, |row| match &row.reply {
        Some(line) => format!("yes: {line:?}"),
        None => "no".to_owned(),
    });
    Ok(count_problems(&rows))
}

/// Connects `client` to `server`, sends a line, and reads the server's answer, which
/// names the source the server saw. Fails only if the testbed cannot be used.
fn tcp_exchange(
    client: Host<'_>,
    client_port: u16,
    server: Host<'_>,
    listener: &TcpListener,
) -> Result<Exchange> {
    let mut row = Exchange::new(client, client_port, server, TCP_PORT);
    let server_addr = SocketAddr::from((server.addr, TCP_PORT));
    let local = SocketAddr::from(SocketAddrV4::new(client.addr, client_port));
    let connected = client.ns.try_run(|| connect_from(local, server_addr))?;
    let stream = match connected {
        Ok(stream) => stream,
        Err(e) if is_timeout(&e) => {
            row.problems.push(format!(
                "{} could not connect to {server_addr} within {} s",
                client.name,
                REPLY_WAIT.as_secs()
            ));
            return Ok(row);
        }
        Err(e) => {
            row.problems
                .push(format!("{} connecting to {server_addr}: {e}", client.name));
            return Ok(row);
        }
    };
    let (accepted, source) = match accept_within(listener) {
        Ok(Some(accepted)) => accepted,
        Ok(None) => {
            row.problems.push(format!(
                "{} did not accept the connection within {} s",
                server.name,
                REPLY_WAIT.as_secs()
            ));
            return Ok(row);
        }
        Err(e) => {
            row.problems.push(format!("{} accepting: {e}", server.name));
            return Ok(row);
        }
    };
    row.saw(server.name, source);

    let hello = format!("hello from {}", client.name);
    let answer = format!("{} sees you as {source}", server.name);
    let exchange = || -> io::Result<Option<String>> {
        for socket in [&stream, &accepted] {
            socket.set_read_timeout(Some(REPLY_WAIT))?;
            socket.set_write_timeout(Some(REPLY_WAIT))?;
        }
        writeln!(&stream, "{hello}")?;
        if read_line(&accepted)? != hello {
            return Ok(None);
        }
        writeln!(&accepted, "{answer}")?;
        Ok(Some(read_line(&stream)?))
    };
    match exchange() {
        Ok(Some(line)) if line == answer => row.reply = Some(line),
        Ok(Some(line)) => row.problems.push(format!(
            "{} received {line:?}, expected {answer:?}",
            client.name
        )),
        Ok(None) => row.problems.push(format!(
            "{} received something other than {hello:?}",
            server.name
        )),
        Err(e) if is_timeout(&e) => row.problems.push(format!(
            "a line between {} and {} was not received within {} s",
            client.name,
            server.name,
            REPLY_WAIT.as_secs()
        )),
        Err(e) => row.problems.push(format!(
            "exchanging lines between {} and {}: {e}",
            client.name, server.name
        )),
    }
    Ok(row)
}

/// A TCP connection from `local` (a fixed port, unlike `TcpStream::connect`) to
/// `remote`, within [`REPLY_WAIT`]. Run it inside the client's namespace.
fn connect_from(local: SocketAddr, remote: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&local.into())?;
    socket.connect_timeout(&remote.into(), REPLY_WAIT)?;
    Ok(socket.into())
}

/// Accepts one connection within [`REPLY_WAIT`]; `Ok(None)` on time-out.
fn accept_within(listener: &TcpListener) -> io::Result<Option<(TcpStream, SocketAddr)>> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + REPLY_WAIT;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(false)?;
                return Ok(Some((stream, peer)));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Ok(None);
                }
                std::thread::sleep(ACCEPT_POLL);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads one line (without its newline); the stream's read timeout bounds the wait.
fn read_line(stream: &TcpStream) -> io::Result<String> {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

/// Whether `e` is a socket timeout (`EAGAIN` for `SO_RCVTIMEO`, `ETIMEDOUT` for a
/// connect time-out).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Prints the exchanges as a table, then a `FAIL` line per problem.
fn print_table(rows: &[Exchange], reply: impl Fn(&Exchange) -> String) {
    let header = [
        "from (internal)",
        "to",
        "seen by the WAN host as",
        "reply received",
    ];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|row| {
            [
                row.from.clone(),
                row.to.clone(),
                row.seen_as
                    .map_or_else(|| "(nothing arrived)".to_owned(), |addr| addr.to_string()),
                reply(row),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut text = String::from("  ");
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        text.trim_end().to_owned()
    };
    println!();
    println!("{}", line(header));
    for row in &cells {
        println!("{}", line([&row[0], &row[1], &row[2], &row[3]]));
    }
    for row in rows {
        for problem in &row.problems {
            println!("  FAIL  {} -> {}: {problem}", row.from, row.to);
        }
    }
}

fn count_problems(rows: &[Exchange]) -> usize {
    rows.iter().map(|row| row.problems.len()).sum()
}

/// The outcome of a check across several exchanges.
enum Verdict {
    Pass(String),
    Fail(String),
    /// Not checkable because an exchange it needs already failed (and was counted).
    Skip(String),
}

/// Prints a check's verdict; returns 1 if it failed.
fn check(verdict: Verdict) -> usize {
    match verdict {
        Verdict::Pass(text) => {
            println!("  ok    {text}");
            0
        }
        Verdict::Fail(text) => {
            println!("  FAIL  {text}");
            1
        }
        Verdict::Skip(text) => {
            println!("  skip  {text}, not checked");
            0
        }
    }
}

/// Port mapping: lan-a asks the gateway for a UDP port with natgw's own PCP client
/// and for a TCP port with miniupnpc's `upnpc` (UPnP IGD), so that the mapping table
/// shows both beside the traffic mappings. Returns how many steps failed.
pub fn port_mapping(testbed: &Testbed, natgw_bin: &std::path::Path) -> Result<usize> {
    let hosts = Hosts::of(testbed)?;
    let gateway = testbed::GW_LAN_A_ADDR;
    println!("\nPort mapping: lan-a maps a UDP port with PCP and a TCP port with UPnP IGD");
    let mut failures = 0;
    let pcp = hosts
        .lan_a
        .ns
        .command(natgw_bin)
        .args(["pcp", "map", "--server", &gateway.to_string()])
        .args([
            "--protocol",
            "udp",
            "--internal-port",
            "5000",
            "--lifetime",
            "600",
        ])
        .output()
        .context("running natgw pcp map")?;
    failures += check(if pcp.status.success() {
        Verdict::Pass("PCP MAP udp 10.0.1.2:5000 (natgw pcp map)".to_owned())
    } else {
        Verdict::Fail(format!(
            "natgw pcp map: {}",
            String::from_utf8_lossy(&pcp.stderr).trim()
        ))
    });
    let url = format!("http://{gateway}:5000/rootDesc.xml");
    let lan_a = hosts.lan_a.addr.to_string();
    let upnpc = hosts
        .lan_a
        .ns
        .command("upnpc")
        .args(["-u", &url, "-e", "xtask run"])
        .args(["-a", &lan_a, "8080", "18080", "TCP", "600"])
        .output();
    failures += check(match upnpc {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Verdict::Skip("UPnP: upnpc is not installed (apt-get install miniupnpc)".to_owned())
        }
        Err(e) => Verdict::Fail(format!("running upnpc: {e}")),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            match text
                .lines()
                .find(|l| l.contains("is redirected to internal"))
            {
                Some(line) => {
                    Verdict::Pass(format!("UPnP AddPortMapping (upnpc -a): {}", line.trim()))
                }
                None => Verdict::Fail(format!("upnpc -a: {}", text.trim())),
            }
        }
    });
    Ok(failures)
}
