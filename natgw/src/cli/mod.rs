//! The command line: `natgw run` starts the gateway in the current network namespace;
//! `natgw status`, `natgw mappings` and `natgw monitor` inspect the one running
//! there, `natgw flush` deletes mappings through it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    Filtering, NoMappingIcmp, Overrides, PortRange, UnsolicitedSyn, XdpModeChoice,
};

pub mod check_config;
pub mod ha;
pub mod output;
pub mod pcp;
pub mod punch;
pub mod status;
pub mod stun;
pub mod who;

use std::process::ExitCode;

/// natgw: an IPv4 NAT gateway (NAPT) whose data path runs in eBPF (XDP and TC).
///
/// Run `natgw run` as root in the gateway's network namespace; while it runs, use
/// `natgw status` and `natgw mappings` in the same namespace to see what it does.
/// Log verbosity follows RUST_LOG (default `info`; `RUST_LOG=natgw=debug` also logs
/// every expired mapping).
#[derive(Debug, Parser)]
#[command(name = "natgw", version, propagate_version = true)]
pub struct Cli {
    /// How log lines are written to standard error: `human` (timestamp, level,
    /// module), `journald` (a `<N>` priority prefix per line and no timestamp, for
    /// systemd's journal), `json` (one object per line), or `auto`: journald when
    /// standard error is the journal (systemd sets JOURNAL_STREAM), human otherwise.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "NATGW_LOG_FORMAT",
        default_value_t = crate::datapath::logging::LogFormat::Auto
    )]
    pub log_format: crate::datapath::logging::LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// natgw's whole command line as clap describes it: what `cargo xtask package`
/// renders into the man pages and the shell completions, so they never drift from
/// the flags natgw parses.
#[must_use]
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// natgw's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the gateway: load the eBPF programs, attach them to the interfaces (or
    /// adopt the data path a previous natgw left running, replacing its programs in
    /// place) and expire idle mappings until SIGINT or SIGTERM. The data path stays
    /// when natgw stops; `natgw stop --flush` removes it.
    ///
    /// Needs root, a WAN interface with an IPv4 address and at least one LAN
    /// interface, given as flags or in the --config file.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Show the running gateway: interfaces, attach modes, configuration, counters.
    Status(OutputArgs),
    /// Stop the natgw running in this network namespace. The data path keeps
    /// translating existing and new flows until the next `natgw run` adopts it;
    /// with --flush it is removed instead (every mapping is lost).
    Stop(StopArgs),
    /// List every live mapping with its filtering, statistics and remaining lifetime
    /// (the filters select which, like `conntrack -L`'s).
    Mappings(MappingsArgs),
    /// Show mapping events live, like `conntrack -E`: every mapping created (by
    /// traffic in the data path, or by PCP, NAT-PMP, UPnP and static forwards),
    /// deleted (on request, `natgw flush`) or expired, one line each, until
    /// interrupted.
    #[command(after_help = MONITOR_AFTER_HELP)]
    Monitor(OutputArgs),
    /// Delete the mappings the filters select, like `conntrack -D`, through the
    /// running natgw (so PCP, NAT-PMP and UPnP clients' records and the explicit
    /// mappings file stay consistent); prints how many. Without filters every
    /// mapping but the static forwards goes; --include-static takes those too (a
    /// reload or restart installs them again).
    Flush(FlushArgs),
    /// STUN: discover the NAT in front of this host (`probe`), or run a standalone
    /// STUN server (`serve`).
    Stun(StunArgs),
    /// PCP and NAT-PMP client: map, peer, delete and announce against a PCP server
    /// (natgw's or another), or ask a NAT-PMP server for its external address.
    Pcp(pcp::PcpArgs),
    /// Reach a peer behind another NAT directly (UDP or TCP hole punching), introduced
    /// by a `natgw rendezvous`; reports how (public, private or PCP-mapped path), the
    /// round trip and the time it took.
    Punch(punch::PunchArgs),
    /// Run a rendezvous server that introduces `natgw punch` peers to each other
    /// (UDP and TCP on one port) until SIGINT or SIGTERM.
    Rendezvous(punch::RendezvousArgs),
    /// Check a configuration file as `natgw run --config FILE` would read it, without
    /// root: every problem is printed as FILE:LINE: KEY: message; exit status 1 if
    /// `natgw run` would refuse the file. Interfaces missing here are warnings.
    CheckConfig(check_config::CheckConfigArgs),
    /// Which internal host held an external address and port at a time (default:
    /// now), from the allocation log of `natgw run --log-allocations` (a file or
    /// JSON-lines target) and, for now, the running natgw's table: for abuse
    /// reports (RFC 6888 REQ-12). A syslog target must be searched with the syslog
    /// tools.
    #[command(after_help = WHO_AFTER_HELP)]
    Who(who::WhoArgs),
    /// Report keepalived's VRRP state to the natgw running in this network
    /// namespace (`natgw run --ha`): MASTER makes it the active side, BACKUP, FAULT
    /// and STOP the standby. Meant for keepalived's notify scripts; the state is also
    /// recorded for a natgw that starts later. Needs root.
    #[command(after_help = ha::AFTER_HELP)]
    HaState(ha::HaStateArgs),
    /// Change the role of the running natgw in an active/standby pair (state
    /// replication, `--ha-peer`): `active` translates and sends its NAT state to the
    /// peer, `standby` installs the peer's. For keepalived's notify scripts and for
    /// a manual switch-over.
    HaRole(HaRoleArgs),
}

/// Arguments of `natgw ha-role`.
#[derive(Debug, Args)]
pub struct HaRoleArgs {
    /// `active` or `standby`.
    #[arg(value_name = "ROLE")]
    pub role: crate::config::ha::HaRoleChoice,
}

const WHO_AFTER_HELP: &str = "\
A hold counts from its start record to its end record, both included; a start without
an end holds until the next holder's start, or is open-ended. Answers flagged
\"records were lost\" span a `lost` record: the log has a gap there.
Examples:
    natgw who 192.0.2.1:40000 --at 2026-12-04T18:20:01Z
    natgw who 192.0.2.1:40000 --proto tcp --at 1796408401 --log /var/log/natgw/allocations.log.1 \\
        --log /var/log/natgw/allocations.log
Exit status 0 whether or not somebody held it; 1 on an error (bad input, no log).";

const MONITOR_AFTER_HELP: &str = "\
Lines:
    [NEW] udp 10.0.1.2:5000 -> 192.0.2.1:5000 origin=traffic
    [DESTROY] tcp 10.0.1.2:80 -> 192.0.2.1:8080 origin=pcp
    [EXPIRE] udp 10.0.1.2:5000 -> 192.0.2.1:5000 origin=traffic
With --json, one object per line: {\"event\":\"create\",\"protocol\":\"udp\",
\"internal\":\"10.0.1.2:5000\",\"external\":\"192.0.2.1:5000\",\"origin\":\"traffic\",
\"time_ns\":...} (time_ns: CLOCK_MONOTONIC); {\"lost\":N} when this client fell more
than 1024 events behind and N were dropped for it.";

const RUN_AFTER_HELP: &str = "\
Flags override the configuration file, which overrides the defaults. Example file:

    wan = \"eth0\"
    lan = [\"eth1\", \"eth2\"]
    external = [\"192.0.2.1\", \"192.0.2.2\"]  # default: the WAN's first address
    port_range = \"1024-65535\"      # or port_min = 1024 + port_max = 65535
    inbound_refresh = false
    max_mappings = 65536
    xdp_mode = \"auto\"              # auto | native | skb
    gc_interval = 1
    unsolicited_syn = \"icmp\"       # icmp | drop
    no_mapping_icmp = \"admin-prohibited\"  # admin-prohibited | host-unreachable
    log_allocations = \"file:/var/log/natgw/allocations.log\"  # or json:/PATH, syslog;
                                    # off by default; restart-only

    [timeouts]
    udp = 300
    tcp_established = 7440
    tcp_transitory = 240
    icmp = 60

    [limits]                        # per internal host (RFC 6888); 0 turns one off
    ports_per_host = 16384          # per protocol
    new_mappings_per_sec = 1000
    new_mappings_burst = 1000
    port_hold_down = 120            # seconds a freed port is kept from other hosts
    max_held_ports = 0              # 0: half of max_mappings

    [filtering]                     # endpoint-independent | address-dependent |
    udp = \"endpoint-independent\"  # address-and-port-dependent (eif | adf | apdf)
    tcp = \"endpoint-independent\"
    icmp = \"endpoint-independent\"

    [pcp]                           # PCP and NAT-PMP server on UDP 5351 of the LAN addresses
    enabled = true
    min_lifetime = 120
    max_lifetime = 86400
    max_mappings_per_host = 128
    rules = [\"allow 1024-65535 0.0.0.0/0 1-65535\"]

    [stun]                          # STUN responder on the external address (RFC 8489;
    enabled = true                  # RFC 5780 with a second external address)
    port = 3478
    alternate_port = 3479

    [upnp]                          # UPnP IGD on the LAN (SSDP UDP 1900, HTTP TCP 5000);
    enabled = true                  # port rules and quotas are [pcp]'s
    allow_other_hosts = false       # true: InternalClient may be another host
    max_lease = 604800              # seconds; a lease of 0 (\"permanent\") gets this
    requests_per_second = 10        # per host; 0: no limit
    http_port = 5000                # restart-only, as enabled

    [metrics]                       # Prometheus GET /metrics; off without listen
    listen = \"10.0.1.1:9100\"      # a LAN address or loopback (restart-only)
    allow_wan = false               # true: any address, the WAN's or 0.0.0.0 too

    [ha]                            # state replication to a standby; off without peer
    listen = \"10.255.0.1:7780\"      # both sides: the same file but for role
    peer = \"10.255.0.2:7780\"
    key_file = \"/etc/natgw/ha.key\"  # >= 16 bytes, mode 600
    role = \"active\"                 # active | standby (restart-only; `natgw ha-role`)
    # [blocks]                      # deterministic port blocks (RFC 7422), off by
    # space = \"10.0.0.0/22\"       # default; the pool must be listed, the same on
    # size = 126                    # every gateway; restart-only; see
    # shares = 2                    # docs/configuration.md
    # owned = [0]

    [[forward]]                     # a static port forward (repeatable)
    protocol = \"tcp\"
    external_port = 8080
    internal = \"10.0.1.2:80\"

SIGHUP reads the file again and applies timeouts, filtering, the port range (not with
port blocks), the PCP
policy, the [upnp] settings but `enabled`, and the forwards without dropping a mapping
(flags still override the file).
SIGINT/SIGTERM stop natgw and leave its data path translating; the next `natgw run`
adopts it. `natgw stop --flush` removes it.

Example:
    natgw run --wan eth0 --lan eth1 --lan eth2 --udp-timeout 600";

/// Arguments of `natgw run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// External interface; its first IPv4 address becomes the external address
    /// unless --external says otherwise.
    #[arg(long, value_name = "IFACE")]
    pub wan: Option<String>,

    /// External address to translate to (repeat for a pool of up to 16). Each must
    /// be an IPv4 address configured on the WAN interface; one internal host always
    /// gets the same one (paired pooling, RFC 4787 REQ-2), and the first is the
    /// main one (the STUN responder answers on it) [default: the WAN's first IPv4
    /// address].
    #[arg(long, value_name = "ADDR")]
    pub external: Vec<std::net::Ipv4Addr>,

    /// Internal interface (repeat for several); traffic from its IPv4 prefixes is
    /// translated.
    #[arg(long, value_name = "IFACE")]
    pub lan: Vec<String>,

    /// TOML configuration file with the same settings as the flags.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// External ports the NAT may allocate [default: 1024-65535].
    #[arg(long, value_name = "MIN-MAX")]
    pub port_range: Option<PortRange>,

    /// Idle timeout of UDP (and non-TCP) mappings in seconds [default: 300, RFC 4787
    /// REQ-5; below 120 is allowed with a warning].
    #[arg(long, value_name = "SECS")]
    pub udp_timeout: Option<u64>,

    /// Idle timeout of established TCP mappings in seconds [default: 7440, RFC 5382
    /// REQ-5].
    #[arg(long, value_name = "SECS")]
    pub tcp_established_timeout: Option<u64>,

    /// Idle timeout of opening or closing TCP mappings in seconds [default: 240, RFC
    /// 5382 REQ-5].
    #[arg(long, value_name = "SECS")]
    pub tcp_transitory_timeout: Option<u64>,

    /// Let inbound packets refresh a mapping's idle timer too (RFC 4787 REQ-6);
    /// by default only outbound packets do.
    #[arg(long)]
    pub inbound_refresh: bool,

    /// Capacity of the NAT tables in mappings [default: 65536]; new flows are
    /// dropped (and counted) when full.
    #[arg(long, value_name = "N")]
    pub max_mappings: Option<u32>,

    /// How to attach XDP: `native` (driver) mode, `skb` (generic) mode, or `auto`:
    /// native, falling back to skb with a warning [default: auto].
    #[arg(long, value_name = "MODE")]
    pub xdp_mode: Option<XdpModeChoice>,

    /// Seconds between garbage-collection ticks [default: 1]. A tick surveys the
    /// whole NAT tables while that is cheap; on large tables surveys come less often
    /// (when needed, at most 60 s apart), the ticks between look only at the mappings
    /// due to expire, and every half shortest timeout a cheaper probe looks for new
    /// entries. Held SYNs are checked every second whatever this says.
    #[arg(long, value_name = "SECS")]
    pub gc_interval: Option<u64>,

    /// Idle timeout of ICMP query mappings (echo, ...) in seconds [default: 60, RFC
    /// 5508 REQ-2; below 60 is allowed with a warning].
    #[arg(long, value_name = "SECS")]
    pub icmp_timeout: Option<u64>,

    /// Which remote endpoints may send to a new UDP mapping (RFC 4787 REQ-8):
    /// `endpoint-independent` (any, once the mapping exists: the most transparent for
    /// peer-to-peer applications and hole punching), `address-dependent` (only
    /// addresses the internal endpoint has sent to) or `address-and-port-dependent`
    /// (only those address and port pairs: the strictest, and the one that breaks
    /// the most peer-to-peer software). Aliases: eif, adf, apdf [default:
    /// endpoint-independent].
    #[arg(long, value_name = "MODE")]
    pub udp_filtering: Option<Filtering>,

    /// The same for new TCP mappings (RFC 5382 REQ-3) [default: endpoint-independent].
    #[arg(long, value_name = "MODE")]
    pub tcp_filtering: Option<Filtering>,

    /// The same for new ICMP query mappings [default: endpoint-independent].
    #[arg(long, value_name = "MODE")]
    pub icmp_filtering: Option<Filtering>,

    /// What to do with an unsolicited inbound TCP SYN once it has been held 6 s
    /// without an outbound SYN to its sender (RFC 5382 REQ-4): `icmp` answers it
    /// with ICMP port unreachable from the external address, `drop` discards it
    /// silently [default: icmp].
    #[arg(long, value_name = "POLICY")]
    pub unsolicited_syn: Option<UnsolicitedSyn>,

    /// The ICMP error sent to an internal host whose packet gets no mapping (ports or
    /// table exhausted, or one of its limits reached): `admin-prohibited`
    /// (destination unreachable code 13, RFC 5508 REQ-8) or `host-unreachable` (code
    /// 1, RFC 6888 REQ-11) [default: admin-prohibited].
    #[arg(long, value_name = "CODE")]
    pub no_mapping_icmp: Option<NoMappingIcmp>,

    /// Most external ports one internal host may hold per protocol (UDP, TCP, ICMP
    /// query identifiers each), explicit mappings included; beyond it its new flows
    /// are dropped and counted (RFC 6888 REQ-4); 0: no limit [default: 16384].
    #[arg(long, value_name = "N")]
    pub max_ports_per_host: Option<u32>,

    /// New mappings per second one internal host may create once its burst is spent
    /// (RFC 6888 REQ-4c); 0: no limit [default: 1000].
    #[arg(long, value_name = "N")]
    pub host_mapping_rate: Option<u32>,

    /// New mappings one internal host may create at once [default: 1000].
    #[arg(long, value_name = "N")]
    pub host_mapping_burst: Option<u32>,

    /// Seconds a freed external port is kept from other internal hosts (its own
    /// host may have it back at once; RFC 6888 REQ-8); 0: none [default: 120].
    #[arg(long, value_name = "SECS")]
    pub port_hold_down: Option<u64>,

    /// Most freed ports held at once; beyond it ports are freed without a hold
    /// (counted) [default: half of --max-mappings].
    #[arg(long, value_name = "N")]
    pub max_held_ports: Option<u32>,

    /// Do not run the PCP (RFC 6887) and NAT-PMP (RFC 6886) server on the LAN
    /// addresses' UDP port 5351; static `[[forward]]`s still apply.
    #[arg(long)]
    pub no_pcp: bool,

    /// The PCP server of the NAT natgw itself sits behind (double NAT): `auto` (the
    /// WAN's default gateway; off when it does not answer), `off`, or ADDRESS or ADDRESS:PORT.
    /// Every LAN mapping then also gets an upstream mapping, and the host is told the
    /// upstream's external address and port [default: `[pcp] upstream`, or auto].
    #[arg(long, value_name = "auto|off|ADDR")]
    pub pcp_upstream: Option<crate::config::PcpUpstream>,

    /// UDP port of the STUN responder (RFC 8489) on the external address; with a
    /// second external address it is an RFC 5780 server whose other address is that
    /// one with the alternate port (`[stun] alternate_port`, default 3479) [default:
    /// 3478].
    #[arg(long, value_name = "PORT")]
    pub stun_port: Option<u16>,

    /// Do not answer STUN on the external address.
    #[arg(long, conflicts_with = "stun_port")]
    pub no_stun: bool,

    /// Do not run the UPnP IGD server (SSDP on UDP 1900, HTTP on TCP 5000 or `[upnp]
    /// http_port` of the LAN interfaces); PCP and NAT-PMP are not affected.
    #[arg(long)]
    pub no_upnp: bool,

    /// Serve Prometheus metrics (`GET /metrics`, text format) on ADDR:PORT: an
    /// address of a LAN interface or loopback (e.g. 10.0.1.1:9100, 127.0.0.1:9100)
    /// [default: `[metrics] listen`, or no endpoint].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddrV4>,

    /// Let --metrics listen on an address that is not a LAN interface's or
    /// loopback (the WAN's, 0.0.0.0): the counters become readable from outside.
    #[arg(long)]
    pub metrics_allow_wan: bool,

    /// One of an active/standby pair managed by keepalived: the --external
    /// addresses are its virtual addresses, which may be absent from the WAN (on the
    /// standby); natgw starts as the standby and takes its role from keepalived's
    /// notify script (`natgw ha-state`). See docs/operations.md#failover.
    #[arg(long)]
    pub ha: bool,

    /// Log every mapping's start and end for abuse handling (RFC 6888 REQ-12): time,
    /// protocol, internal endpoint, external address and port range, never a
    /// destination. TARGET is `file:/PATH` (text lines), `json:/PATH` (JSON lines),
    /// `syslog` (/dev/log) or `syslog:/SOCKET`; files are appended to and reopened
    /// on SIGHUP (for logrotate). `natgw who` reads the files [default:
    /// `log_allocations` in the file, or no log].
    #[arg(long, value_name = "TARGET")]
    pub log_allocations: Option<crate::config::AllocLogTarget>,

    /// Replication: where this natgw accepts its peer's connection while standby
    /// (an address of the link between the pair) [default: `[ha] listen`].
    #[arg(long, value_name = "ADDR:PORT")]
    pub ha_listen: Option<std::net::SocketAddrV4>,

    /// Replication: the peer's --ha-listen address, where this natgw sends its NAT
    /// state while active; connections from any other address are refused. Turns
    /// replication on [default: `[ha] peer`, or none].
    #[arg(long, value_name = "ADDR:PORT")]
    pub ha_peer: Option<std::net::SocketAddrV4>,

    /// Replication: the pre-shared key authenticating the channel (at least 16
    /// bytes, mode 600; the same file on both gateways) [default: `[ha] key_file`].
    #[arg(long, value_name = "FILE")]
    pub ha_key_file: Option<std::path::PathBuf>,

    /// Replication: the role at start, `active` (translates and replicates) or
    /// `standby` (installs the peer's state); `natgw ha-role` changes it at run
    /// time [default: `[ha] role`, or active].
    #[arg(long, value_name = "ROLE")]
    pub ha_role: Option<crate::config::ha::HaRoleChoice>,
    /// Deterministic port blocks (RFC 7422): host i of this internal prefix gets
    /// block i % B of pool address i / B, B blocks of --block-size ports fitting the
    /// port range; hosts outside it are dropped and counted. Needs --external listed
    /// in the same order on every gateway and --block-size [default: `[blocks]
    /// space`, or dynamic allocation].
    #[arg(long, value_name = "PREFIX", help_heading = "Port blocks")]
    pub block_space: Option<natgw_proto::prefix::Ipv4Prefix>,

    /// Ports per block [default: `[blocks] size`].
    #[arg(long, value_name = "PORTS", help_heading = "Port blocks")]
    pub block_size: Option<u16>,

    /// Shares the pool is cut into, each a run of external addresses and the hosts
    /// whose blocks lie on them; must divide the pool [default: `[blocks] shares`,
    /// or 1].
    #[arg(long, value_name = "N", help_heading = "Port blocks")]
    pub block_shares: Option<u8>,

    /// Shares this gateway translates, 0-based (comma-separated or repeated); hosts
    /// of other shares are dropped and counted [default: `[blocks] owned`, or all].
    #[arg(
        long,
        value_name = "SHARE",
        value_delimiter = ',',
        help_heading = "Port blocks"
    )]
    pub block_owned: Vec<u8>,
}

impl RunArgs {
    /// The settings given as flags.
    #[must_use]
    pub fn overrides(&self) -> Overrides {
        Overrides {
            wan: self.wan.clone(),
            lan: self.lan.clone(),
            external: self.external.clone(),
            port_range: self.port_range,
            udp_timeout: self.udp_timeout,
            tcp_established_timeout: self.tcp_established_timeout,
            tcp_transitory_timeout: self.tcp_transitory_timeout,
            inbound_refresh: self.inbound_refresh,
            max_mappings: self.max_mappings,
            xdp_mode: self.xdp_mode,
            gc_interval: self.gc_interval,
            icmp_timeout: self.icmp_timeout,
            udp_filtering: self.udp_filtering,
            tcp_filtering: self.tcp_filtering,
            icmp_filtering: self.icmp_filtering,
            unsolicited_syn: self.unsolicited_syn,
            no_mapping_icmp: self.no_mapping_icmp,
            ports_per_host: self.max_ports_per_host,
            new_mappings_per_sec: self.host_mapping_rate,
            new_mappings_burst: self.host_mapping_burst,
            port_hold_down: self.port_hold_down,
            max_held_ports: self.max_held_ports,
            no_pcp: self.no_pcp,
            pcp_upstream: self.pcp_upstream,
            stun_port: self.stun_port,
            no_stun: self.no_stun,
            no_upnp: self.no_upnp,
            metrics: self.metrics,
            metrics_allow_wan: self.metrics_allow_wan,
            log_allocations: self.log_allocations.clone(),
            ha: self.ha,
            ha_listen: self.ha_listen,
            ha_peer: self.ha_peer,
            ha_key_file: self.ha_key_file.clone(),
            ha_role: self.ha_role,
            blocks: crate::config::BlockOverrides {
                space: self.block_space,
                size: self.block_size,
                shares: self.block_shares,
                owned: self.block_owned.clone(),
            },
        }
    }
}

/// Arguments of `natgw status`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print JSON (one object) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `natgw stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Also remove the data path: forwarding off on the LAN interfaces, programs
    /// detached, maps and state removed, sysctls restored. Every mapping is lost, and
    /// the gateway no longer forwards LAN traffic until natgw starts again.
    #[arg(long)]
    pub flush: bool,
    /// Seconds to wait for the running natgw to exit after SIGTERM.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// Arguments of `natgw mappings`.
#[derive(Debug, Args)]
pub struct MappingsArgs {
    /// Print JSON (one object, sessions included) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// List each mapping's sessions (remote endpoint, TCP state, idle, expiry) on
    /// indented lines under it; the table alone shows only how many it has.
    #[arg(long)]
    pub sessions: bool,

    /// Which mappings.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Which mappings `natgw mappings` lists and `natgw flush` deletes; every filter
/// given must match.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Only this protocol: udp, tcp or icmp.
    #[arg(long, value_name = "PROTO", value_parser = crate::nat_table::events::parse_proto)]
    pub proto: Option<u8>,

    /// Only this internal endpoint: ADDR or ADDR:PORT.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = internal_filter)]
    pub internal: Option<(std::net::Ipv4Addr, Option<u16>)>,

    /// Only this external endpoint: PORT, ADDR or ADDR:PORT.
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = crate::nat_table::events::parse_endpoint)]
    pub external: Option<(Option<std::net::Ipv4Addr>, Option<u16>)>,

    /// Only mappings made by: traffic (alias dynamic), pcp, nat-pmp (alias natpmp),
    /// upnp or static.
    #[arg(long, value_name = "ORIGIN", value_parser = crate::nat_table::events::parse_origin)]
    pub origin: Option<u8>,
}

impl FilterArgs {
    /// The filter these arguments describe.
    #[must_use]
    pub fn filter(&self) -> crate::nat_table::events::MappingFilter {
        crate::nat_table::events::MappingFilter {
            proto: self.proto,
            internal_addr: self.internal.map(|(a, _)| a),
            internal_port: self.internal.and_then(|(_, p)| p),
            external_addr: self.external.and_then(|(a, _)| a),
            external_port: self.external.and_then(|(_, p)| p),
            origin: self.origin,
        }
    }
}

/// ADDR or ADDR:PORT.
fn internal_filter(s: &str) -> Result<(std::net::Ipv4Addr, Option<u16>), String> {
    match crate::nat_table::events::parse_endpoint(s)? {
        (Some(a), p) => Ok((a, p)),
        (None, _) => Err(format!("`{s}` is not ADDR or ADDR:PORT")),
    }
}

/// Arguments of `natgw flush`.
#[derive(Debug, Args)]
pub struct FlushArgs {
    /// Which mappings.
    #[command(flatten)]
    pub filter: FilterArgs,

    /// Delete static forwards too (they come back with the next reload or restart).
    #[arg(long)]
    pub include_static: bool,

    /// Print JSON (`{"deleted": N}`).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `natgw stun`.
#[derive(Debug, Args)]
pub struct StunArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: StunCommand,
}

/// `natgw stun` subcommands.
#[derive(Debug, Subcommand)]
pub enum StunCommand {
    /// Find out what NAT sits between this host and a STUN server (RFC 5780): public
    /// address, mapping and filtering behaviour, hairpinning, each with the tests
    /// that show it.
    ///
    /// Mapping and filtering need a server with a second address (one that sends
    /// OTHER-ADDRESS, such as `natgw stun serve --alternate`); against others the
    /// report says which conclusions could not be reached and why.
    #[command(after_help = STUN_PROBE_AFTER_HELP)]
    Probe(StunProbeArgs),
    /// Run a STUN server (RFC 8489 Binding; RFC 5780 with --alternate) until SIGINT
    /// or SIGTERM. It answers RFC 3489 clients too.
    ///
    /// With --alternate it listens on both IPs × both ports (four sockets), answers
    /// CHANGE-REQUEST from the address asked for, and reports OTHER-ADDRESS; without
    /// it, only on --listen, and CHANGE-REQUEST gets 420.
    Serve(StunServeArgs),
}

const STUN_PROBE_AFTER_HELP: &str = "\
Examples:
    natgw stun probe --server stun.example.net
    natgw stun probe --server 192.0.2.1:3478 --local 10.0.0.2:40000 --json";

/// Arguments of `natgw stun probe`.
#[derive(Debug, Args)]
pub struct StunProbeArgs {
    /// The STUN server: HOST or HOST:PORT (IPv4; port 3478 unless given).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub server: String,

    /// Local address of the main test socket [default: the source address of the
    /// route to the server, any port]. The other test sockets use the same IP.
    #[arg(long, value_name = "ADDR:PORT")]
    pub local: Option<std::net::SocketAddrV4>,

    /// Seconds each test waits for its answer. The request is sent again after 0.5 s
    /// and 1.5 s (RFC 8489 RTO of 500 ms, doubling; at most 3 sends).
    #[arg(long, value_name = "S", default_value = "3", value_parser = parse_seconds)]
    pub timeout: std::time::Duration,

    /// Print JSON (the conclusions, their evidence and every test's raw outcome).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `natgw stun serve`.
#[derive(Debug, Args)]
pub struct StunServeArgs {
    /// Primary address and port (0.0.0.0 is allowed without --alternate).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddrV4,

    /// Second IP of this host for RFC 5780 behaviour discovery.
    #[arg(long, value_name = "ADDR")]
    pub alternate: Option<std::net::Ipv4Addr>,

    /// Second port, used on both IPs with --alternate.
    #[arg(long, value_name = "P", default_value_t = 3479, requires = "alternate")]
    pub alternate_port: u16,
}

/// Seconds as a decimal number, above 0 and at most 60.
fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    seconds_up_to(s, 60)
}

/// Seconds as a decimal number, above 0 and at most `max`.
fn seconds_up_to(s: &str, max: u32) -> Result<std::time::Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= f64::from(max)) {
        return Err(format!("{s} s is outside 0 (exclusive) to {max} seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// ADDR or ADDR:PORT, `default_port` when no port is given.
fn endpoint(s: &str, default_port: u16) -> Result<std::net::SocketAddrV4, String> {
    s.parse::<std::net::SocketAddrV4>()
        .or_else(|_| {
            s.parse::<std::net::Ipv4Addr>()
                .map(|ip| std::net::SocketAddrV4::new(ip, default_port))
        })
        .map_err(|_| format!("`{s}` is not an IPv4 address or ADDRESS:PORT"))
}

/// `natgw ARGS`: parses the command line, runs the command, and turns an error into
/// one line on standard error and exit status 1.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::datapath::logging::init(cli.log_format);
    // The rendezvous is one loop over its sockets. On a multi-thread runtime every
    // datagram woke a worker thread that then preempted the loop, which halved the
    // TURN relay's rate (`cargo xtask bench --turn-only`); on the current thread the
    // loop itself waits in epoll.
    let mut builder = if matches!(cli.command, Command::Rendezvous(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("natgw: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Run(args) => run(args).await,
            Command::Status(args) => status::status(args.json),
            Command::Stop(args) => stop(args).await,
            Command::Mappings(args) => {
                status::mappings(args.json, args.sessions, &args.filter.filter())
            }
            Command::Monitor(args) => status::monitor(args.json).await,
            Command::Flush(args) => {
                status::flush(&args.filter.filter(), args.include_static, args.json).await
            }
            Command::Stun(args) => stun::command(args).await,
            Command::Pcp(args) => pcp::run(args),
            Command::Punch(args) => punch::punch(args).await,
            Command::Rendezvous(args) => punch::rendezvous(args).await,
            Command::CheckConfig(args) => check_config::run(args),
            Command::Who(args) => who::run(args),
            Command::HaState(args) => ha::ha_state(args).await,
            Command::HaRole(args) => status::set_role(args.role).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", crate::datapath::logging::fatal_line(&one_line(&e)));
            ExitCode::FAILURE
        }
    }
}

/// `natgw stop`: prints what was stopped and removed.
async fn stop(args: &StopArgs) -> anyhow::Result<()> {
    let report =
        crate::daemon::stop(args.flush, std::time::Duration::from_secs(args.timeout)).await?;
    match report.stopped_pid {
        Some(pid) => println!("stopped natgw (pid {pid})"),
        None => println!("no natgw controller was running"),
    }
    if let Some(flushed) = report.flushed {
        println!(
            "removed the data path: {} links detached, {} maps removed, forwarding off on {}",
            flushed.links,
            flushed.maps,
            if flushed.forwarding_off.is_empty() {
                "-".to_owned()
            } else {
                flushed.forwarding_off.join(",")
            }
        );
    } else if report.data_path_left {
        println!("the data path keeps translating; `natgw stop --flush` removes it");
    }
    Ok(())
}

/// `natgw run`: the configuration file and the flags resolved into settings (the
/// flags win), its warnings logged, then the daemon.
async fn run(args: &RunArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => crate::config::load_file(path)?,
        None => crate::config::FileConfig::default(),
    };
    let (settings, warnings) = crate::config::resolve(&file, &args.overrides())?;
    for w in warnings {
        log::warn!("config.warning {w}");
    }
    // SIGHUP: the file read again, the same flags over it.
    let (path, overrides) = (args.config.clone(), args.overrides());
    let reloader = Box::new(move || {
        let file = match &path {
            Some(path) => crate::config::load_file(path)?,
            None => crate::config::FileConfig::default(),
        };
        let (settings, warnings) = crate::config::resolve(&file, &overrides)?;
        for w in warnings {
            log::warn!("config.warning {w}");
        }
        Ok(settings)
    });
    crate::daemon::run(settings, reloader).await
}

/// The error and its causes on one line, without repeating a cause the message
/// already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "natgw",
            "run",
            "--wan",
            "eth0",
            "--lan",
            "eth1",
            "--lan",
            "eth2",
            "--port-range",
            "2000-3000",
            "--udp-timeout",
            "5",
            "--inbound-refresh",
            "--xdp-mode",
            "skb",
            "--external",
            "192.0.2.1",
            "--external",
            "192.0.2.2",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        let o = args.overrides();
        assert_eq!(o.wan.as_deref(), Some("eth0"));
        assert_eq!(o.lan, ["eth1", "eth2"]);
        assert_eq!(o.port_range, Some(PortRange::new(2000, 3000).unwrap()));
        assert_eq!(o.udp_timeout, Some(5));
        assert!(o.inbound_refresh);
        assert_eq!(o.xdp_mode, Some(XdpModeChoice::Skb));
        assert_eq!(
            o.external,
            [
                std::net::Ipv4Addr::new(192, 0, 2, 1),
                std::net::Ipv4Addr::new(192, 0, 2, 2)
            ]
        );
        let err = Cli::try_parse_from(["natgw", "run", "--external", "wan0"]).unwrap_err();
        assert!(err.to_string().contains("wan0"), "{err}");
    }

    #[test]
    fn filtering_and_icmp_flags_parse_with_aliases() {
        let cli = Cli::try_parse_from([
            "natgw",
            "run",
            "--udp-filtering",
            "address-and-port-dependent",
            "--tcp-filtering",
            "adf",
            "--icmp-filtering",
            "eif",
            "--icmp-timeout",
            "90",
            "--unsolicited-syn",
            "drop",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        let o = args.overrides();
        assert_eq!(o.udp_filtering, Some(Filtering::AddressAndPortDependent));
        assert_eq!(o.tcp_filtering, Some(Filtering::AddressDependent));
        assert_eq!(o.icmp_filtering, Some(Filtering::EndpointIndependent));
        assert_eq!(o.icmp_timeout, Some(90));
        assert_eq!(o.unsolicited_syn, Some(UnsolicitedSyn::Drop));
        let err = Cli::try_parse_from(["natgw", "run", "--udp-filtering", "strict"]).unwrap_err();
        assert!(err.to_string().contains("endpoint-independent"), "{err}");
    }

    #[test]
    fn host_limit_flags_parse() {
        // rfc6888 REQ-4a, REQ-4c, REQ-8, REQ-11b
        let cli = Cli::try_parse_from([
            "natgw",
            "run",
            "--max-ports-per-host",
            "64",
            "--host-mapping-rate",
            "0",
            "--host-mapping-burst",
            "5",
            "--port-hold-down",
            "300",
            "--max-held-ports",
            "1000",
            "--no-mapping-icmp",
            "host-unreachable",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        let o = args.overrides();
        assert_eq!(o.ports_per_host, Some(64));
        assert_eq!(o.new_mappings_per_sec, Some(0));
        assert_eq!(o.new_mappings_burst, Some(5));
        assert_eq!(o.port_hold_down, Some(300));
        assert_eq!(o.max_held_ports, Some(1000));
        assert_eq!(o.no_mapping_icmp, Some(NoMappingIcmp::HostUnreachable));
        let err = Cli::try_parse_from(["natgw", "run", "--no-mapping-icmp", "13"]).unwrap_err();
        assert!(err.to_string().contains("admin-prohibited"), "{err}");
    }

    #[test]
    fn metrics_flags_parse() {
        let cli = Cli::try_parse_from([
            "natgw",
            "run",
            "--metrics",
            "10.0.1.1:9100",
            "--metrics-allow-wan",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        let o = args.overrides();
        assert_eq!(o.metrics, Some("10.0.1.1:9100".parse().unwrap()));
        assert!(o.metrics_allow_wan);
        let err = Cli::try_parse_from(["natgw", "run", "--metrics", "lan0"]).unwrap_err();
        assert!(err.to_string().contains("lan0"), "{err}");
    }

    #[test]
    fn bad_port_range_is_a_usage_error_naming_the_problem() {
        let err = Cli::try_parse_from(["natgw", "run", "--port-range", "9-3"]).unwrap_err();
        assert!(err.to_string().contains("MIN is above MAX"), "{err}");
    }

    #[test]
    fn mappings_and_flush_take_filters() {
        let cli = Cli::try_parse_from([
            "natgw",
            "mappings",
            "--proto",
            "udp",
            "--internal",
            "10.0.1.2:5000",
            "--external",
            "6000",
            "--origin",
            "dynamic",
        ])
        .unwrap();
        let Command::Mappings(args) = cli.command else {
            panic!("not mappings");
        };
        let f = args.filter.filter();
        assert_eq!(f.proto, Some(17));
        assert_eq!(f.internal_addr, Some(std::net::Ipv4Addr::new(10, 0, 1, 2)));
        assert_eq!(f.internal_port, Some(5000));
        assert_eq!((f.external_addr, f.external_port), (None, Some(6000)));
        assert_eq!(f.origin, Some(natgw_common::Origin::Traffic as u8));
        let cli = Cli::try_parse_from(["natgw", "flush", "--include-static"]).unwrap();
        let Command::Flush(args) = cli.command else {
            panic!("not flush");
        };
        assert!(args.include_static);
        assert_eq!(
            args.filter.filter(),
            crate::nat_table::events::MappingFilter::default()
        );
        assert!(Cli::try_parse_from(["natgw", "flush", "--internal", "6000"]).is_err());
        assert!(Cli::try_parse_from(["natgw", "mappings", "--proto", "sctp"]).is_err());
    }

    #[test]
    fn status_and_mappings_take_json() {
        let cli = Cli::try_parse_from(["natgw", "mappings", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Mappings(MappingsArgs {
                json: true,
                sessions: false,
                ..
            })
        ));
        let cli = Cli::try_parse_from(["natgw", "mappings", "--sessions"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Mappings(MappingsArgs { sessions: true, .. })
        ));
        let cli = Cli::try_parse_from(["natgw", "status"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status(OutputArgs { json: false })
        ));
    }
}
