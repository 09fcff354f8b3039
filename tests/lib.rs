//! Shared helpers for natgw's integration tests: natgw in a testbed's gateway
//! namespace as the tests use it ([`Natgw`], over [`testbed::Natgw`]), and small socket
//! utilities. Every test builds its own [`testbed::Testbed`] (unique namespace
//! names, removed on drop, also on failure) and talks only to addresses inside it.

use std::{
    io::Read,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::{Netns, Testbed};

/// PCP (RFC 6887) and NAT-PMP (RFC 6886) messages as bytes, for requests sent from
/// raw sockets with forged sources, or whose answers are looked at byte by byte. Built
/// and read with natgw-proto's codecs.
pub mod pcp_bytes {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use natgw_proto::pcp::natpmp::{self, MapProtocol};
    use natgw_proto::pcp::wire::{self, MapRepr, OpRepr, Opcode};

    /// PCP's server port (RFC 6887 §19.1).
    pub const PCP_PORT: u16 = wire::SERVER_PORT;
    /// PCP version 2 (RFC 6887 §9).
    pub const PCP_VERSION: u8 = wire::VERSION;
    /// ANNOUNCE (RFC 6887 §19.2).
    pub const OP_ANNOUNCE: u8 = Opcode::Announce.to_wire();
    /// MAP (RFC 6887 §19.2).
    pub const OP_MAP: u8 = Opcode::Map.to_wire();
    /// The response bit of the opcode byte.
    pub const RESPONSE: u8 = wire::RESPONSE_BIT;
    /// IP protocol number of UDP.
    pub const IPPROTO_UDP: u8 = wire::PROTOCOL_UDP;
    /// IP protocol number of TCP.
    pub const IPPROTO_TCP: u8 = wire::PROTOCOL_TCP;

    /// A PCP ANNOUNCE request (RFC 6887 §14.1) with `client` in the client address
    /// field.
    #[must_use]
    pub fn pcp_announce(client: Ipv4Addr) -> Vec<u8> {
        wire::Request {
            lifetime: 0,
            client_address: client.to_ipv6_mapped(),
            op: OpRepr::Announce,
            options: Vec::new(),
        }
        .to_bytes()
    }

    /// A MAP request (RFC 6887 §11.1) without a suggested external endpoint.
    #[must_use]
    pub fn pcp_map_request(
        client: Ipv4Addr,
        protocol: u8,
        internal_port: u16,
        lifetime: u32,
    ) -> Vec<u8> {
        wire::Request {
            lifetime,
            client_address: client.to_ipv6_mapped(),
            op: OpRepr::Map(MapRepr {
                nonce: [0x5a; 12],
                protocol,
                internal_port,
                external_port: 0,
                external_address: Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
            }),
            options: Vec::new(),
        }
        .to_bytes()
    }

    /// A NAT-PMP mapping request (RFC 6886 §3.3) for `protocol` (UDP or TCP), asking
    /// for the internal port as the external one.
    #[must_use]
    pub fn natpmp_map_request(protocol: u8, internal_port: u16, lifetime: u32) -> Vec<u8> {
        natpmp::Request::Map {
            protocol: if protocol == IPPROTO_TCP {
                MapProtocol::Tcp
            } else {
                MapProtocol::Udp
            },
            internal_port,
            suggested_external_port: internal_port,
            lifetime,
        }
        .to_bytes()
    }

    /// The epoch time of a PCP response (RFC 6887 §8.5).
    #[must_use]
    pub fn response_epoch(bytes: &[u8]) -> Option<u32> {
        Some(
            wire::Response::parse(&wire::Packet::new_checked(bytes).ok()?)
                .ok()?
                .epoch,
        )
    }

    /// The assigned external endpoint of a PCP MAP response; `None` for anything
    /// else.
    #[must_use]
    pub fn map_response_external(bytes: &[u8]) -> Option<SocketAddrV4> {
        let response = wire::Response::parse(&wire::Packet::new_checked(bytes).ok()?).ok()?;
        match response.op? {
            OpRepr::Map(m) => Some(SocketAddrV4::new(
                m.external_address.to_ipv4_mapped()?,
                m.external_port,
            )),
            _ => None,
        }
    }
}

/// How long a test waits for a datagram or a state change.
pub const WAIT: Duration = Duration::from_secs(5);

pub use testbed::{natgw_bin, require_root};

/// The environment variable naming the Python interpreter whose environment has the
/// tests' PyPI packages (aioice, for tests/aioice_agent.py); set by `cargo xtask
/// test`.
pub const TEST_PYTHON_ENV: &str = "NATGW_TEST_PYTHON";

/// The Python of the tests' PyPI packages: `$NATGW_TEST_PYTHON`, or else the virtual
/// environment `cargo xtask provision` makes in `target/test-python`.
///
/// # Panics
/// When there is no interpreter there.
#[must_use]
pub fn test_python() -> std::path::PathBuf {
    let path = std::env::var_os(TEST_PYTHON_ENV).map_or_else(
        || {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/test-python/bin/python3")
        },
        std::path::PathBuf::from,
    );
    assert!(
        path.exists(),
        "no Python with the tests' PyPI packages at {}: run `cargo xtask provision` (or \
         set {TEST_PYTHON_ENV})",
        path.display()
    );
    path
}

/// A testbed with natgw running on its gateway.
pub struct Setup {
    /// The running daemon (declared first: dropped, and so stopped cleanly, before
    /// the testbed kills whatever still runs in its namespaces).
    pub natgw: Natgw,
    /// The topology.
    pub tb: Testbed,
}

impl Setup {
    /// Builds a testbed and starts `natgw run --wan wan0 --lan lan0 --lan lan1 EXTRA...`.
    ///
    /// # Panics
    /// When the testbed cannot be built or natgw does not come up.
    #[must_use]
    pub fn new(extra: &[&str]) -> Self {
        require_root();
        let tb = Testbed::new().expect("building the testbed");
        let natgw = Natgw::start(&tb.gateway.ns, extra);
        Self { natgw, tb }
    }
}

/// `natgw run` in a gateway namespace, as the tests use it: [`testbed::Natgw`] with
/// its defaults (`RUST_LOG=debug`, a temporary log quoted whole in errors), failing the
/// test with a panic instead of returning errors. Stopped with SIGTERM when dropped.
pub struct Natgw(testbed::Natgw);

impl Natgw {
    /// The arguments naming the testbed's interfaces.
    pub const IFACE_ARGS: [&'static str; 6] = ["--wan", "wan0", "--lan", "lan0", "--lan", "lan1"];

    /// Starts natgw in `ns` and waits until `natgw status` answers.
    ///
    /// # Panics
    /// When it exits or does not answer in time (the panic shows its log).
    #[must_use]
    pub fn start(ns: &Netns, extra: &[&str]) -> Self {
        Self::try_start(ns, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Natgw::start`], but a natgw that exits during start-up or does not come
    /// up is an error (a sentence followed by its log) instead of a panic.
    ///
    /// # Errors
    /// When natgw cannot be spawned, exits during start-up or does not answer
    /// `natgw status` within [`testbed::natgw::READY_WAIT`].
    pub fn try_start(ns: &Netns, extra: &[&str]) -> Result<Self, String> {
        Self::try_start_on(ns, &Self::IFACE_ARGS, extra)
    }

    /// Like [`Natgw::try_start`], naming the interfaces with `ifaces` (e.g. `["--wan",
    /// "wan0", "--lan", "lan0"]`) instead of [`Natgw::IFACE_ARGS`]: for other
    /// topologies such as [`testbed::Sites`].
    ///
    /// # Errors
    /// As [`Natgw::try_start`].
    pub fn try_start_on(ns: &Netns, ifaces: &[&str], extra: &[&str]) -> Result<Self, String> {
        testbed::Natgw::builder(natgw_bin())
            .ifaces(ifaces)
            .args(extra)
            .start(ns)
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// Like [`Natgw::start`], with the binary `bin` instead of the one under test
    /// (an upgrade: a rebuilt copy).
    ///
    /// # Panics
    /// As [`Natgw::start`].
    #[must_use]
    pub fn start_bin(ns: &Netns, bin: &std::path::Path, extra: &[&str]) -> Self {
        testbed::Natgw::builder(bin)
            .ifaces(Self::IFACE_ARGS)
            .args(extra)
            .start(ns)
            .map(Self)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The wrapped [`testbed::Natgw`], for what this adapter does not repeat.
    #[must_use]
    pub fn inner(&self) -> &testbed::Natgw {
        &self.0
    }

    /// natgw's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.0.log()
    }

    /// Runs `natgw ARGS` in the gateway namespace; (status, stdout, stderr).
    ///
    /// # Panics
    /// When the binary cannot be started.
    #[must_use]
    pub fn cli(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let out = self.0.cli(args).unwrap_or_else(|e| panic!("{e}"));
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `natgw mappings --json`.
    ///
    /// # Panics
    /// When the command fails or prints something that is not a list of mappings.
    #[must_use]
    pub fn mappings(&self) -> Vec<Value> {
        self.0.mappings().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The mapping whose internal endpoint is `internal`, if listed.
    ///
    /// # Panics
    /// As [`Natgw::mappings`].
    #[must_use]
    pub fn mapping_of(&self, proto: &str, internal: SocketAddrV4) -> Option<Value> {
        self.0
            .mapping_of(proto, internal)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `natgw status --json`.
    ///
    /// # Panics
    /// When the command fails or does not print JSON.
    #[must_use]
    pub fn status(&self) -> Value {
        self.0.status().unwrap_or_else(|e| panic!("{e}"))
    }

    /// A data-path counter, summed over CPUs.
    ///
    /// # Panics
    /// When `natgw status` does not list it.
    #[must_use]
    pub fn counter(&self, name: &str) -> u64 {
        self.0.counter(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Kills natgw with SIGKILL (a crash: nothing is cleaned up) and waits for it.
    ///
    /// # Panics
    /// When it is not running.
    pub fn kill(&mut self) {
        self.0.kill().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Sends SIGTERM and waits for natgw to exit.
    ///
    /// # Panics
    /// When it is not running, or does not exit within
    /// [`testbed::natgw::STOP_WAIT`] (it is killed then; the panic shows its log).
    pub fn stop(&mut self) -> ExitStatus {
        self.0.stop().unwrap_or_else(|e| panic!("{e}")).status()
    }
}

impl Drop for Natgw {
    fn drop(&mut self) {
        // Through `stop`, so that a natgw that does not stop fails the test.
        if self.0.is_running() {
            let _ = self.stop();
        }
    }
}

/// Runs `natgw ARGS` inside `ns`; (status, stdout, stderr).
///
/// # Panics
/// When the binary cannot be started.
#[must_use]
pub fn run_natgw(ns: &Netns, args: &[&str]) -> (ExitStatus, String, String) {
    let out = ns
        .command(natgw_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running natgw");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Puts the testbed gateway's default route (via the inet router on `wan0`) back
/// after a test renumbered `wan0`: deleting the address the route went through
/// removes it.
///
/// # Panics
/// When `ip` fails.
pub fn restore_gateway_default_route(gw: &Netns) {
    let via = testbed::INET_GW_SIDE_ADDR.to_string();
    let _ = command_output(
        gw,
        "ip",
        &["route", "replace", "default", "via", &via, "dev", "wan0"],
    );
}

/// Runs a shell-free command in `ns` and returns stdout (for assertions with `ip`/`tc`).
///
/// # Panics
/// When it cannot be run or fails.
#[must_use]
pub fn command_output(ns: &Netns, program: &str, args: &[&str]) -> String {
    let out: std::process::Output = ns
        .command(program)
        .args(args)
        .output()
        .expect("running command");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A UDP socket bound in `ns` to `addr:port` with a receive timeout of [`WAIT`].
///
/// # Panics
/// When binding fails.
#[must_use]
pub fn udp(ns: &Netns, addr: Ipv4Addr, port: u16) -> UdpSocket {
    let sock = ns
        .bind_udp(SocketAddr::from((addr, port)))
        .expect("binding UDP socket");
    sock.set_read_timeout(Some(WAIT)).expect("setting timeout");
    sock
}

/// Receives one datagram; `None` on timeout.
#[must_use]
pub fn recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddrV4)> {
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, SocketAddr::V4(from))) => Some((buf[..n].to_vec(), from)),
        Ok((_, SocketAddr::V6(_))) => None,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv_from failed: {e}"),
    }
}

/// Receives with a short timeout, to prove that nothing arrives.
#[must_use]
pub fn recv_nothing(sock: &UdpSocket, within: Duration) -> Option<(Vec<u8>, SocketAddrV4)> {
    sock.set_read_timeout(Some(within))
        .expect("setting timeout");
    let got = recv(sock);
    sock.set_read_timeout(Some(WAIT)).expect("setting timeout");
    got
}

/// Reads everything from a TCP stream until EOF.
///
/// # Panics
/// On a read error.
#[must_use]
pub fn read_all(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).expect("reading TCP stream");
    out
}

/// Polls `f` until it returns `Some` or `within` passes.
pub fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Turns GRO on for `ifname` in `ns` ([`testbed::offload::set_gro`]). A veth whose
/// peer has GRO accepts XDP redirects, so this is how a test puts natgw's XDP fast
/// path to work without attaching programs to the hosts.
///
/// # Panics
/// When the kernel refuses.
pub fn enable_gro(ns: &Netns, ifname: &str) {
    testbed::offload::set_gro(ns, ifname, true).unwrap_or_else(|e| panic!("{}", e.chain()));
}

/// Makes the gateway's interfaces `ifaces` (`wan0`, `lan0`, `lan1`) accept XDP
/// redirects — GRO on their peers' ends of the veths — and waits until natgw has
/// noticed, so traffic through them can take the fast path.
///
/// # Panics
/// When an interface is unknown or natgw does not notice within [`WAIT`].
pub fn accept_redirects(s: &Setup, ifaces: &[&str]) {
    for iface in ifaces {
        match *iface {
            "wan0" => enable_gro(&s.tb.inet, "gw0"),
            "lan0" => enable_gro(&s.tb.lan[0].ns, "eth0"),
            "lan1" => enable_gro(&s.tb.lan[1].ns, "eth0"),
            other => panic!("no gateway interface {other}"),
        }
    }
    wait_for(WAIT, || {
        let st = s.natgw.status();
        let listed = st["interfaces"].as_array()?.clone();
        ifaces
            .iter()
            .all(|name| {
                listed
                    .iter()
                    .any(|i| i["name"] == *name && i["redirect_ok"] == true)
            })
            .then_some(())
    })
    .unwrap_or_else(|| panic!("natgw does not notice that {ifaces:?} accept redirects"));
}

/// `Command` for `program` in no namespace in particular (host tools).
#[must_use]
pub fn host_command(program: &str) -> Command {
    Command::new(program)
}

/// A raw capture (`AF_PACKET`) of every frame arriving on any interface of a
/// namespace, each kept as what `parse` makes of it, until finished: what crossed
/// the wire, seen by nothing natgw wrote.
pub struct Capture<T> {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<T>>,
}

impl<T: Send + 'static> Capture<T> {
    /// Starts capturing in `ns`.
    ///
    /// # Panics
    /// When the socket cannot be opened.
    pub fn start(ns: &Netns, parse: fn(&[u8]) -> Option<T>) -> Self {
        // ETH_P_ALL, in network byte order as packet(7) wants it.
        let protocol = i32::from(u16::try_from(libc::ETH_P_ALL).expect("fits").to_be());
        let fd = ns.run(move || {
            // SAFETY: plain socket(2); the result is checked before use.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol) };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: fd is a fresh, owned descriptor.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: a valid timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                u32::try_from(std::mem::size_of::<libc::timeval>()).expect("fits"),
            )
        };
        assert_eq!(rc, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 2048];
            while !stop_thread.load(Ordering::Relaxed) {
                // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut from_len =
                    u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).expect("fits");
                // SAFETY: buf and from are valid for the lengths passed.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&raw mut from).cast(),
                        &raw mut from_len,
                    )
                };
                let Ok(n) = usize::try_from(n) else {
                    continue; // timeout
                };
                // Each forwarded packet is seen arriving and leaving: keep arrivals.
                if from.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                if let Some(s) = parse(&buf[..n]) {
                    seen.push(s);
                }
            }
            seen
        });
        Self { stop, thread }
    }

    /// Stops and returns what was seen.
    ///
    /// # Panics
    /// When the capture thread panicked.
    pub fn finish(self) -> Vec<T> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("capture thread")
    }
}

/// An IPv4 packet with an internal (10/8) source, or an ICMP error whose embedded
/// packet has an internal source or destination: what must never leave the
/// gateway's WAN.
#[derive(Clone, Debug)]
pub struct Leak {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP protocol.
    pub proto: u8,
    /// The internal address is in the packet an ICMP error embeds.
    pub embedded: bool,
}

/// [`Leak`] of an Ethernet frame, if it is one.
#[must_use]
pub fn internal_source(f: &[u8]) -> Option<Leak> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &f[14..];
    let addr = |h: &[u8], o: usize| Ipv4Addr::new(h[o], h[o + 1], h[o + 2], h[o + 3]);
    let leak = |embedded| Leak {
        src: addr(ip, 12),
        dst: addr(ip, 16),
        proto: ip[9],
        embedded,
    };
    if ip[12] == 10 {
        return Some(leak(false));
    }
    // ICMP destination unreachable, time exceeded, parameter problem: the header of
    // the packet it is about follows the 8-byte ICMP header.
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let icmp = ip.get(ihl..)?;
    if ip[9] != 1 || !matches!(icmp.first(), Some(3 | 11 | 12)) {
        return None;
    }
    let inner = icmp.get(8..28)?;
    (inner[12] == 10 || inner[16] == 10).then(|| leak(true))
}

/// Watches the internet side of a testbed (the inet router, which everything the
/// gateway sends out of its WAN reaches) for packets with internal sources.
pub struct LeakWatch(Capture<Leak>);

impl LeakWatch {
    /// Starts watching in `inet`.
    #[must_use]
    pub fn start(inet: &Netns) -> Self {
        Self(Capture::start(inet, internal_source))
    }

    /// Stops, asserting that nothing leaked.
    ///
    /// # Panics
    /// When a packet with an internal source was seen.
    pub fn assert_none(self, what: &str) {
        let leaks = self.0.finish();
        assert!(
            leaks.is_empty(),
            "{what}: {} packets left the WAN with an internal source, e.g. {:?}",
            leaks.len(),
            &leaks[..leaks.len().min(5)]
        );
    }
}

/// Stops a child the test started (a rendezvous, a punch peer): SIGTERM, then
/// SIGKILL if it does not exit within 5 s; reaps it.
pub fn terminate(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `natgw rendezvous --json` started in a namespace, as the punch, relay and TURN tests
/// run it; stopped with SIGTERM ([`terminate`]), also on drop.
pub struct Rendezvous {
    child: Option<Child>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
    /// Its first line: the `listening` event (with `turn`, `auth`).
    pub first: Value,
}

impl Rendezvous {
    /// Starts it on `listen` with more flags; stderr is kept for
    /// [`Self::stop_with_stderr`] when `keep_stderr` (leave it off for long runs: an
    /// unread pipe would fill).
    ///
    /// # Panics
    /// If it does not start and print its `listening` line.
    #[must_use]
    pub fn start(ns: &Netns, listen: SocketAddrV4, extra: &[&str], keep_stderr: bool) -> Self {
        use std::io::BufRead as _;
        let mut child = ns
            .command(natgw_bin())
            .args(["rendezvous", "--json", "--listen"])
            .arg(listen.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if keep_stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("starting natgw rendezvous");
        let stderr = child.stderr.take();
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("reading the rendezvous's first line");
        let first: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("rendezvous did not start ({e}): {line:?}"));
        assert_eq!(first["event"], "listening", "{first}");
        Self {
            child: Some(child),
            stdout,
            stderr,
            first,
        }
    }

    /// Stops it and returns its last line, the `stopped` summary (`counters`, `stun`,
    /// `turn`).
    ///
    /// # Panics
    /// If the last line is not the summary.
    #[must_use]
    pub fn stop(mut self) -> Value {
        use std::io::BufRead as _;
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
        let mut rest = String::new();
        let mut last = Value::Null;
        while self.stdout.read_line(&mut rest).unwrap_or(0) > 0 {
            if let Ok(v) = serde_json::from_str::<Value>(&rest) {
                last = v;
            }
            rest.clear();
        }
        assert_eq!(last["event"], "stopped", "rendezvous summary: {last}");
        last
    }

    /// Stops it and returns its summary and everything it wrote to stderr (started
    /// with `keep_stderr`).
    #[must_use]
    pub fn stop_with_stderr(mut self) -> (Value, String) {
        let mut stderr = self.stderr.take();
        let last = self.stop();
        let mut text = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut text);
        }
        (last, text)
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}
