//! Shared helpers for natgw's integration tests: starting the `natgw` binary inside a
//! testbed's gateway namespace, reading its mappings and counters, and small socket
//! utilities. Every test builds its own [`testbed::Testbed`] (unique namespace
//! names, removed on drop, also on failure) and talks only to addresses inside it.

use std::{
    io::Read,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::{Netns, Testbed};

/// PCP (RFC 6887) and NAT-PMP (RFC 6886) requests as bytes, built by hand: for
/// requests that must be wrong on purpose or sent from raw sockets with forged
/// sources, which no client would send.
pub mod pcp_bytes {
    use std::net::Ipv4Addr;

    /// PCP's server port (RFC 6887 §19.1).
    pub const PCP_PORT: u16 = 5351;
    /// PCP version 2 (RFC 6887 §9).
    pub const PCP_VERSION: u8 = 2;
    /// ANNOUNCE (RFC 6887 §19.2).
    pub const OP_ANNOUNCE: u8 = 0;
    /// MAP (RFC 6887 §19.2).
    pub const OP_MAP: u8 = 1;
    /// The response bit of the opcode byte.
    pub const RESPONSE: u8 = 0x80;
    /// IP protocol number of UDP.
    pub const IPPROTO_UDP: u8 = 17;
    /// IP protocol number of TCP.
    pub const IPPROTO_TCP: u8 = 6;

    /// A PCP request header (RFC 6887 §7.1) with `client` in the client address
    /// field.
    #[must_use]
    pub fn pcp_header(opcode: u8, lifetime: u32, client: Ipv4Addr) -> Vec<u8> {
        let mut b = vec![PCP_VERSION, opcode, 0, 0];
        b.extend(lifetime.to_be_bytes());
        b.extend(client.to_ipv6_mapped().octets());
        b
    }

    /// A MAP request (RFC 6887 §11.1) without a suggested external endpoint.
    #[must_use]
    pub fn pcp_map_request(
        client: Ipv4Addr,
        protocol: u8,
        internal_port: u16,
        lifetime: u32,
    ) -> Vec<u8> {
        let mut b = pcp_header(OP_MAP, lifetime, client);
        b.extend([0x5a; 12]); // nonce
        b.extend([protocol, 0, 0, 0]);
        b.extend(internal_port.to_be_bytes());
        b.extend([0, 0]); // suggested external port: any
        b.extend([0; 16]); // suggested external address: any
        b
    }

    /// A NAT-PMP mapping request (RFC 6886 §3.3) for `protocol` (UDP or TCP).
    #[must_use]
    pub fn natpmp_map_request(protocol: u8, internal_port: u16, lifetime: u32) -> Vec<u8> {
        let opcode = if protocol == IPPROTO_TCP { 2 } else { 1 };
        let mut b = vec![0, opcode, 0, 0];
        b.extend(internal_port.to_be_bytes());
        b.extend(internal_port.to_be_bytes()); // suggested external port
        b.extend(lifetime.to_be_bytes());
        b
    }
}

// `tests/conformance.rs` is the integration test of the same name, hence the path.
#[path = "conformance/mod.rs"]
pub mod conformance;

/// How long a test waits for a datagram or a state change.
pub const WAIT: Duration = Duration::from_secs(5);

/// Fails the test with a clear message unless it runs as root.
///
/// # Panics
/// When not root: the tests create network namespaces and load BPF programs.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "natgw's integration tests need root (network namespaces, BPF): run them with `cargo xtask test` as root"
    );
}

/// Path of the `natgw` binary under test: `NATGW_BIN`, set by `cargo xtask test`.
///
/// # Panics
/// When the variable is unset or the file is missing.
#[must_use]
pub fn natgw_bin() -> PathBuf {
    let path = std::env::var_os("NATGW_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/natgw"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "natgw binary not found at {}: build it with `cargo xtask build` (or run `cargo xtask test`)",
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

/// `natgw run` in a gateway namespace; stopped with SIGTERM when dropped.
pub struct Natgw {
    child: Option<Child>,
    ns: Netns,
    log: PathBuf,
}

impl Natgw {
    /// The arguments naming the testbed's interfaces.
    pub const IFACE_ARGS: [&'static str; 6] = ["--wan", "wan0", "--lan", "lan0", "--lan", "lan1"];

    /// Starts natgw in `ns` and waits until `natgw status` answers.
    ///
    /// # Panics
    /// When it exits or does not answer within [`WAIT`] (the panic shows its log).
    #[must_use]
    pub fn start(ns: &Netns, extra: &[&str]) -> Self {
        Self::try_start(ns, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Natgw::start`], but a natgw that exits during start-up or does not come
    /// up is an error (a sentence followed by its log) instead of a panic.
    ///
    /// # Errors
    /// When natgw cannot be spawned, exits during start-up or does not answer
    /// `natgw status` within four times [`WAIT`].
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
        let log = std::env::temp_dir().join(format!("natgw-test-{}.log", ns.name()));
        let log_file = std::fs::File::create(&log)
            .map_err(|e| format!("creating natgw log file {}: {e}", log.display()))?;
        let stdout = log_file
            .try_clone()
            .map_err(|e| format!("duplicating the log file descriptor: {e}"))?;
        let child = ns
            .command(natgw_bin())
            .arg("run")
            .args(ifaces)
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdout(stdout)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("spawning natgw: {e}"))?;
        let ns = Netns::open(ns.name()).map_err(|e| format!("opening gateway namespace: {e}"))?;
        let mut natgw = Self {
            child: Some(child),
            ns,
            log,
        };
        // Loading the programs means running the verifier over them: seconds on a
        // loaded 2-core machine.
        let deadline = Instant::now() + WAIT * 4;
        loop {
            match natgw.child_mut().try_wait() {
                Ok(Some(status)) => {
                    // Nothing left to stop: keep Drop from signalling a reaped pid.
                    natgw.child = None;
                    return Err(format!(
                        "natgw exited during start-up ({status}):\n{}",
                        natgw.log()
                    ));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("polling natgw: {e}")),
            }
            if natgw.cli(&["status", "--json"]).0.success() {
                return Ok(natgw);
            }
            if Instant::now() > deadline {
                // Killed rather than stopped: one that never came up may not stop either.
                if let Some(mut child) = natgw.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(format!("natgw did not come up:\n{}", natgw.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("natgw is running")
    }

    /// natgw's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `natgw ARGS` in the gateway namespace; (status, stdout, stderr).
    #[must_use]
    pub fn cli(&self, args: &[&str]) -> (ExitStatus, String, String) {
        run_natgw(&self.ns, args)
    }

    /// `natgw mappings --json`.
    ///
    /// # Panics
    /// When the command fails or prints something that is not a JSON array.
    #[must_use]
    pub fn mappings(&self) -> Vec<Value> {
        let (status, out, err) = self.cli(&["mappings", "--json"]);
        assert!(status.success(), "natgw mappings failed: {err}");
        let v: Value = serde_json::from_str(&out).expect("natgw mappings --json is JSON");
        v.as_array().cloned().unwrap_or_else(|| {
            v.get("mappings")
                .and_then(Value::as_array)
                .cloned()
                .expect("a list of mappings")
        })
    }

    /// The mapping whose internal endpoint is `internal`, if listed.
    #[must_use]
    pub fn mapping_of(&self, proto: &str, internal: SocketAddrV4) -> Option<Value> {
        let internal = internal.to_string();
        self.mappings().into_iter().find(|m| {
            m["protocol"].as_str() == Some(proto)
                && m["internal"].as_str() == Some(internal.as_str())
        })
    }

    /// `natgw status --json`.
    ///
    /// # Panics
    /// When the command fails or does not print JSON.
    #[must_use]
    pub fn status(&self) -> Value {
        let (status, out, err) = self.cli(&["status", "--json"]);
        assert!(status.success(), "natgw status failed: {err}");
        serde_json::from_str(&out).expect("natgw status --json is JSON")
    }

    /// A data-path counter, summed over CPUs.
    ///
    /// # Panics
    /// When `natgw status` does not list it.
    #[must_use]
    pub fn counter(&self, name: &str) -> u64 {
        let status = self.status();
        let counters = &status["counters"];
        counters[name]
            .as_u64()
            .or_else(|| counters.as_array()?.iter().find(|c| c["name"] == name)?["value"].as_u64())
            .unwrap_or_else(|| panic!("counter {name} not in natgw status: {status}"))
    }

    /// Kills natgw with SIGKILL (a crash: nothing is cleaned up) and waits for it.
    ///
    /// # Panics
    /// When it is not running.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("natgw is running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGTERM and waits for natgw to exit.
    ///
    /// # Panics
    /// When it does not exit within [`WAIT`].
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("natgw is running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        // Generous: a loaded 2-core machine can take seconds to schedule the
        // shutdown; a natgw that ignores SIGTERM still fails the test.
        let deadline = Instant::now() + 3 * WAIT;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for natgw") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "natgw did not exit within {:?} of SIGTERM:\n{}",
                    3 * WAIT,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Natgw {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        let _ = std::fs::remove_file(&self.log);
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

/// Turns GRO on for `ifname` in `ns` (legacy `ETHTOOL_SGRO` ioctl). A veth whose
/// peer has GRO accepts XDP redirects, so this is how a test puts natgw's XDP fast
/// path to work without attaching programs to the hosts.
///
/// # Panics
/// When the ioctl fails.
pub fn enable_gro(ns: &Netns, ifname: &str) {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_SGRO: u32 = 0x0000_002c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let name = ifname.to_owned();
    let rc = ns.run(move || {
        let mut value = EthtoolValue {
            cmd: ETHTOOL_SGRO,
            data: 1,
        };
        // SAFETY: zeroed ifreq is valid; the name fits (checked below) and the data
        // pointer outlives the ioctl.
        unsafe {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            assert!(name.len() < ifr.ifr_name.len(), "interface name too long");
            for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
                *dst = src as libc::c_char;
            }
            ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            assert!(fd >= 0, "socket() failed");
            let rc = libc::ioctl(fd, SIOCETHTOOL, &raw mut ifr);
            libc::close(fd);
            rc
        }
    });
    assert_eq!(
        rc,
        0,
        "enabling GRO on {ifname}: {}",
        std::io::Error::last_os_error()
    );
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
