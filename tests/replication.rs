//! State replication to a standby (issue 16, item 1): two natgw gateways in a
//! [`testbed::Pair`], A active and B standby. Traffic through A creates UDP, TCP
//! and ICMP mappings and a PCP mapping; B's maps hold the same external endpoints
//! within a bounded time; deletions and refreshes follow; a standby that was down
//! is resynced when it comes back (including a deletion it missed); and after the
//! roles are switched at run time (`natgw ha-role`) and the routes moved to B, B
//! translates the existing UDP flow with the same external port and carries the
//! existing TCP connection on. Static forwards: the active's reach the standby
//! (its own configuration winning where the two disagree), go when the active's
//! configuration drops them, and carry inbound traffic through the standby once it
//! has taken over.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use natgw_integration_tests::{pcp_bytes, recv, require_root, udp, wait_for, Natgw};
use serde_json::Value;
use testbed::pair::{
    PAIR_CLIENT_ADDR, PAIR_FAR_ADDR, PAIR_GW_LAN_ADDR, PAIR_GW_WAN_ADDR, PAIR_HA_A_ADDR,
    PAIR_HA_B_ADDR,
};
use testbed::{Pair, PairSide};

const HA_PORT: u16 = 7780;
/// How long replication may take to show on the standby.
const REPLICATED: Duration = Duration::from_secs(5);

/// A file only root may read (the pre-shared key, a configuration); removed on
/// drop.
struct PrivateFile(PathBuf);

impl PrivateFile {
    fn new(tag: &str) -> Self {
        Self::with(
            &format!("{tag}.key"),
            "an example key of more than 16 bytes\n",
        )
    }

    fn with(name: &str, contents: &str) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!("natgw-ha-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Self(path)
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn start(pair: &Pair, side: PairSide, role: &str, key: &PrivateFile) -> Natgw {
    start_with(pair, side, role, key, None)
}

fn start_with(
    pair: &Pair,
    side: PairSide,
    role: &str,
    key: &PrivateFile,
    config: Option<&PrivateFile>,
) -> Natgw {
    let (own, peer) = match side {
        PairSide::A => (PAIR_HA_A_ADDR, PAIR_HA_B_ADDR),
        PairSide::B => (PAIR_HA_B_ADDR, PAIR_HA_A_ADDR),
    };
    let listen = SocketAddrV4::new(own, HA_PORT).to_string();
    let peer = SocketAddrV4::new(peer, HA_PORT).to_string();
    let key = key.0.to_string_lossy().into_owned();
    let config = config.map(|c| c.0.to_string_lossy().into_owned());
    let config: Vec<&str> = config
        .iter()
        .flat_map(|c| ["--config", c.as_str()])
        .collect();
    Natgw::try_start_on(
        pair.gateway(side),
        &["--wan", "wan0", "--lan", "lan0"],
        &[
            config.as_slice(),
            &[
                "--ha-listen",
                &listen,
                "--ha-peer",
                &peer,
                "--ha-key-file",
                &key,
                "--ha-role",
                role,
                "--gc-interval",
                "1",
                "--no-upnp",
                "--no-stun",
            ],
        ]
        .concat(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn controller(natgw: &Natgw, name: &str) -> u64 {
    natgw.status()["controller_counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no controller counter {name}: {}", natgw.status()))
}

/// (protocol, internal, external, origin) of every mapping.
fn table(natgw: &Natgw) -> BTreeSet<(String, String, String, String)> {
    natgw
        .mappings()
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (s("protocol"), s("internal"), s("external"), s("origin"))
        })
        .collect()
}

fn mapping(natgw: &Natgw, proto: &str, internal: SocketAddrV4) -> Option<Value> {
    natgw.mapping_of(proto, internal)
}

fn wait_same_table(active: &Natgw, standby: &Natgw) -> BTreeSet<(String, String, String, String)> {
    let mut last = (BTreeSet::new(), BTreeSet::new());
    wait_for(REPLICATED, || {
        last = (table(active), table(standby));
        (last.0 == last.1).then(|| last.0.clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "the standby's table did not follow:\nactive  {:?}\nstandby {:?}\nactive log:\n{}\nstandby log:\n{}",
            last.0,
            last.1,
            active.log(),
            standby.log()
        )
    })
}

/// One ICMP echo from the client to the far host, through a ping socket (the
/// kernel sets the identifier and the checksum).
fn ping(pair: &Pair) {
    use socket2::{Domain, Protocol, Socket, Type};
    pair.client
        .set_sysctl("net/ipv4/ping_group_range", "0 0")
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    let sock = pair
        .client
        .run(|| Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)))
        .expect("ping socket");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let echo = [8u8, 0, 0, 0, 0, 0, 0, 1, b'h', b'a'];
    sock.send_to(&echo, &SocketAddrV4::new(PAIR_FAR_ADDR, 0).into())
        .expect("send echo");
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
    let n = sock.recv(&mut buf).expect("echo reply through the gateway");
    assert!(n >= 8);
    // SAFETY: `recv` initialised the first `n` bytes.
    let first = unsafe { buf[0].assume_init() };
    assert_eq!(first, 0, "an echo reply");
}

#[test]
fn the_standby_holds_the_actives_state_and_takes_over_its_flows() {
    require_root();
    let pair = Pair::new().unwrap_or_else(|e| panic!("{}", e.chain()));
    let key = PrivateFile::new(pair.id());
    let a = start(&pair, PairSide::A, "active", &key);
    let mut b = start(&pair, PairSide::B, "standby", &key);
    assert!(
        wait_for(REPLICATED, || (controller(&a, "ha_connected") == 1)
            .then_some(()))
        .is_some(),
        "A connects to B:\n{}\n{}",
        a.log(),
        b.log()
    );

    // Traffic through A: a UDP flow, a TCP connection, an ICMP echo, a PCP mapping.
    let far_udp = udp(&pair.far, PAIR_FAR_ADDR, 7000);
    let client_udp = udp(&pair.client, PAIR_CLIENT_ADDR, 5000);
    let far_at = SocketAddrV4::new(PAIR_FAR_ADDR, 7000);
    client_udp.send_to(b"one", far_at).expect("send");
    let (_, udp_ext) = recv(&far_udp).expect("UDP through A");
    assert_eq!(*udp_ext.ip(), PAIR_GW_WAN_ADDR);

    let listener = pair
        .far
        .run(|| TcpListener::bind((PAIR_FAR_ADDR, 8080)))
        .expect("listen");
    let mut client_tcp = pair
        .client
        .run(|| {
            TcpStream::connect_timeout(
                &SocketAddrV4::new(PAIR_FAR_ADDR, 8080).into(),
                Duration::from_secs(3),
            )
        })
        .expect("TCP through A");
    let (mut far_tcp, tcp_ext) = listener.accept().expect("accept");
    far_tcp
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    client_tcp
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");

    ping(&pair);

    let pcp = udp(&pair.client, PAIR_CLIENT_ADDR, 5351);
    pcp.send_to(
        &pcp_bytes::pcp_map_request(PAIR_CLIENT_ADDR, 17, 6000, 600),
        SocketAddrV4::new(PAIR_GW_LAN_ADDR, 5351),
    )
    .expect("PCP request");
    let (answer, _) = recv(&pcp).expect("PCP answer");
    let pcp_ext = pcp_bytes::map_response_external(&answer).expect("PCP MAP granted");

    let replicated = wait_same_table(&a, &b);
    let protocols: BTreeSet<&str> = replicated.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(
        protocols,
        BTreeSet::from(["icmp", "tcp", "udp"]),
        "{replicated:?}"
    );
    assert!(
        replicated
            .iter()
            .any(|m| m.2 == pcp_ext.to_string() && m.3 == "pcp"),
        "the PCP mapping with its origin: {replicated:?}"
    );
    assert!(replicated.iter().any(|m| m.2 == tcp_ext.to_string()));
    // The standby's explicit table has the PCP mapping too (natgw mappings shows
    // its lifetime from there).
    let on_b = mapping(&b, "udp", SocketAddrV4::new(PAIR_CLIENT_ADDR, 6000)).expect("PCP on B");
    assert_eq!(on_b["origin"], "pcp");
    assert!(
        wait_for(REPLICATED, || {
            let m = mapping(&b, "udp", SocketAddrV4::new(PAIR_CLIENT_ADDR, 6000))?;
            (m["client"] == "10.8.0.2:5351").then_some(m)
        })
        .is_some(),
        "B's explicit table holds the PCP client: {:?}",
        mapping(&b, "udp", SocketAddrV4::new(PAIR_CLIENT_ADDR, 6000))
    );
    // The counters reach `natgw status` within a second.
    assert!(
        wait_for(REPLICATED, || (controller(&b, "ha_records_installed") >= 4)
            .then_some(()))
        .is_some(),
        "{}",
        b.status()
    );
    assert_eq!(controller(&b, "ha_records_rejected"), 0, "{}", b.log());
    // The TCP session and its state reached B.
    let sessions = |n: &Natgw| -> Vec<Value> {
        let (st, out, err) = n.cli(&["mappings", "--json", "--sessions"]);
        assert!(st.success(), "{err}");
        let v: Value = serde_json::from_str(&out).expect("JSON");
        v["mappings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["protocol"] == "tcp")
            .flat_map(|m| m["sessions"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    assert!(
        wait_for(REPLICATED, || (!sessions(&b).is_empty()
            && sessions(&b).len() == sessions(&a).len())
        .then_some(()))
        .is_some(),
        "TCP sessions on B {:?}, on A {:?}\nB: {}\nA: {}",
        sessions(&b),
        sessions(&a),
        b.status()["controller_counters"],
        a.status()["controller_counters"]
    );

    // Refreshes follow: traffic on the UDP flow after the refresh step keeps B's
    // idle time low while the age grows.
    std::thread::sleep(Duration::from_millis(2500));
    client_udp.send_to(b"two", far_at).expect("send");
    recv(&far_udp).expect("UDP again");
    let udp_internal = SocketAddrV4::new(PAIR_CLIENT_ADDR, 5000);
    assert!(
        wait_for(REPLICATED, || {
            let m = mapping(&b, "udp", udp_internal)?;
            (m["idle_ms"].as_u64()? < 1500 && m["age_ms"].as_u64()? > 2500).then_some(())
        })
        .is_some(),
        "B's mapping was refreshed: {:?}",
        mapping(&b, "udp", udp_internal)
    );

    // A deletion follows: flushing the ICMP mapping on A removes it from B.
    let (st, _, err) = a.cli(&["flush", "--proto", "icmp"]);
    assert!(st.success(), "{err}");
    wait_same_table(&a, &b);
    assert!(!table(&b).iter().any(|m| m.0 == "icmp"));

    // The standby goes away; meanwhile a new mapping is made and one is deleted on
    // A. When B comes back (adopting its pinned maps, which still hold the old
    // state), the resync brings both.
    b.kill();
    let client_udp2 = udp(&pair.client, PAIR_CLIENT_ADDR, 5001);
    client_udp2.send_to(b"new", far_at).expect("send");
    recv(&far_udp).expect("UDP through A while B is down");
    let (st, _, err) = a.cli(&["flush", "--proto", "udp", "--internal", "10.8.0.2:6000"]);
    assert!(st.success(), "{err}");
    assert!(
        wait_for(REPLICATED, || (controller(&a, "ha_connected") == 0)
            .then_some(()))
        .is_some(),
        "A notices B is gone"
    );
    let resyncs = controller(&a, "ha_resyncs");
    let b = start(&pair, PairSide::B, "standby", &key);
    let after = wait_same_table(&a, &b);
    assert!(
        wait_for(REPLICATED, || (controller(&a, "ha_resyncs") > resyncs)
            .then_some(()))
        .is_some(),
        "a resync on reconnection"
    );
    assert!(after.iter().any(|m| m.1 == "10.8.0.2:5001"), "{after:?}");
    assert!(!after.iter().any(|m| m.1 == "10.8.0.2:6000"), "{after:?}");

    // Switch over at run time: A becomes standby, B active, and the routes move to
    // B. The existing UDP flow keeps its external port and its answers come back.
    let (st, out, err) = a.cli(&["ha-role", "standby"]);
    assert!(st.success(), "{out}{err}");
    let (st, out, err) = b.cli(&["ha-role", "active"]);
    assert!(st.success(), "{out}{err}");
    pair.route_via(PairSide::B)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    client_udp.send_to(b"after", far_at).expect("send");
    let (got, from) = recv(&far_udp).expect("UDP through B");
    assert_eq!(got, b"after");
    assert_eq!(from, udp_ext, "the same external endpoint after the switch");
    far_udp.send_to(b"back", from).expect("answer");
    let (got, _) = recv(&client_udp).expect("the answer through B");
    assert_eq!(got, b"back");
    assert!(
        b.counter("xdp_in_redirected") + b.counter("tc_in_translated") >= 1,
        "B translated it"
    );
    // The TCP connection goes on through B.
    client_tcp.write_all(b"still here").expect("TCP send via B");
    let mut buf = [0u8; 10];
    far_tcp.read_exact(&mut buf).expect("TCP data via B");
    assert_eq!(&buf, b"still here");
    far_tcp.write_all(b"ok").expect("TCP answer");
    let mut buf = [0u8; 2];
    client_tcp.read_exact(&mut buf).expect("TCP answer via B");
    // B now replicates to A: the roles' directions swapped.
    assert!(
        wait_for(REPLICATED, || (controller(&b, "ha_connected") == 1
            && controller(&a, "ha_active") == 0)
            .then_some(()))
        .is_some(),
        "B connects to A:\n{}",
        b.log()
    );
    wait_same_table(&b, &a);
}

/// `[[forward]]` of UDP `external_port` to the client's `internal_port`.
fn forward(external_port: u16, internal_port: u16) -> String {
    format!(
        "[[forward]]\nprotocol = \"udp\"\nexternal_port = {external_port}\n\
         internal = \"{PAIR_CLIENT_ADDR}:{internal_port}\"\n"
    )
}

#[test]
fn the_actives_static_forwards_reach_the_standby_and_its_own_configuration_wins() {
    require_root();
    let pair = Pair::new().unwrap_or_else(|e| panic!("{}", e.chain()));
    let key = PrivateFile::new(pair.id());
    // A forwards 9000, 9001 and 9003 to the client's same ports; B's configuration
    // forwards only the client's 9001, from port 9002: the two disagree there.
    let a_conf = PrivateFile::with(
        &format!("{}-a.toml", pair.id()),
        &[
            forward(9000, 9000),
            forward(9001, 9001),
            forward(9003, 9003),
        ]
        .concat(),
    );
    let b_conf = PrivateFile::with(&format!("{}-b.toml", pair.id()), &forward(9002, 9001));
    let a = start_with(&pair, PairSide::A, "active", &key, Some(&a_conf));
    let b = start_with(&pair, PairSide::B, "standby", &key, Some(&b_conf));
    let client = |port| SocketAddrV4::new(PAIR_CLIENT_ADDR, port);
    let forwarded = |natgw: &Natgw, internal: u16, external: u16| {
        natgw.mapping_of("udp", client(internal)).is_some_and(|m| {
            m["origin"] == "static"
                && m["external"] == SocketAddrV4::new(PAIR_GW_WAN_ADDR, external).to_string()
        })
    };

    // B holds A's forwards of 9000 and 9003, keeps its own of 9001 and counts the
    // disagreement.
    wait_for(REPLICATED, || {
        (forwarded(&b, 9000, 9000)
            && forwarded(&b, 9003, 9003)
            && forwarded(&b, 9001, 9002)
            && b.status()["controller_counters"]["ha_rejected_static_conflict"] == 1)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "B does not hold A's forwards:\n{:?}\n{}\nB's log:\n{}",
            b.mappings(),
            b.status(),
            b.log()
        )
    });
    assert!(forwarded(&a, 9001, 9001), "A keeps its own");

    // A's configuration drops the forward of 9003 (a reload): B's goes too.
    std::fs::write(
        &a_conf.0,
        [forward(9000, 9000), forward(9001, 9001)].concat(),
    )
    .expect("rewrite A's configuration");
    let pid = a.inner().pid().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    wait_for(REPLICATED, || {
        (a.mapping_of("udp", client(9003)).is_none() && b.mapping_of("udp", client(9003)).is_none())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("B still forwards 9003:\n{:?}\n{}", b.mappings(), b.log()));
    assert!(forwarded(&b, 9000, 9000), "the other forward stays");

    // B takes over: A's forward of 9000 carries inbound traffic to the client
    // through B.
    let (st, out, err) = a.cli(&["ha-role", "standby"]);
    assert!(st.success(), "{out}{err}");
    let (st, out, err) = b.cli(&["ha-role", "active"]);
    assert!(st.success(), "{out}{err}");
    pair.route_via(PairSide::B)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    let host = udp(&pair.client, PAIR_CLIENT_ADDR, 9000);
    let far = udp(&pair.far, PAIR_FAR_ADDR, 7100);
    far.send_to(b"in", SocketAddrV4::new(PAIR_GW_WAN_ADDR, 9000))
        .expect("send");
    let (got, from) = recv(&host).expect("inbound through B's copy of A's forward");
    assert_eq!(got, b"in");
    assert_eq!(from, SocketAddrV4::new(PAIR_FAR_ADDR, 7100));
    assert!(
        b.counter("xdp_in_redirected") + b.counter("tc_in_translated") >= 1,
        "B translated it"
    );
}
