//! The command line: `natgw run` starts the gateway in the current network namespace;
//! `natgw status` and `natgw mappings` inspect the one running there.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Overrides, PortRange, XdpModeChoice};

/// natgw: an IPv4 NAT gateway (NAPT) whose data path runs in eBPF (XDP and TC).
///
/// Run `natgw run` as root in the gateway's network namespace; while it runs, use
/// `natgw status` and `natgw mappings` in the same namespace to see what it does.
/// Log verbosity follows RUST_LOG (default `info`; `RUST_LOG=natgw=debug` also logs
/// every expired mapping).
#[derive(Debug, Parser)]
#[command(name = "natgw", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// natgw's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the gateway: load the eBPF programs, attach them to the interfaces and
    /// expire idle mappings until SIGINT or SIGTERM, which detach everything again.
    ///
    /// Needs root, a WAN interface with an IPv4 address and at least one LAN
    /// interface, given as flags or in the --config file.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Show the running gateway: interfaces, attach modes, configuration, counters.
    Status(OutputArgs),
    /// List every live mapping with its statistics and remaining lifetime.
    Mappings(OutputArgs),
}

const RUN_AFTER_HELP: &str = "\
Flags override the configuration file, which overrides the defaults. Example file:

    wan = \"eth0\"
    lan = [\"eth1\", \"eth2\"]
    port_range = \"1024-65535\"      # or port_min = 1024 + port_max = 65535
    inbound_refresh = false
    max_mappings = 65536
    xdp_mode = \"auto\"              # auto | native | skb
    gc_interval = 1

    [timeouts]
    udp = 300
    tcp_established = 7440
    tcp_transitory = 240

Example:
    natgw run --wan eth0 --lan eth1 --lan eth2 --udp-timeout 600";

/// Arguments of `natgw run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// External interface; its first IPv4 address becomes the external address.
    #[arg(long, value_name = "IFACE")]
    pub wan: Option<String>,

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

    /// Seconds between garbage-collection passes over the NAT tables [default: 1].
    #[arg(long, value_name = "SECS")]
    pub gc_interval: Option<u64>,
}

impl RunArgs {
    /// The settings given as flags.
    #[must_use]
    pub fn overrides(&self) -> Overrides {
        Overrides {
            wan: self.wan.clone(),
            lan: self.lan.clone(),
            port_range: self.port_range,
            udp_timeout: self.udp_timeout,
            tcp_established_timeout: self.tcp_established_timeout,
            tcp_transitory_timeout: self.tcp_transitory_timeout,
            inbound_refresh: self.inbound_refresh,
            max_mappings: self.max_mappings,
            xdp_mode: self.xdp_mode,
            gc_interval: self.gc_interval,
        }
    }
}

/// Arguments of `natgw status` and `natgw mappings`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print JSON (one object) instead of a table.
    #[arg(long)]
    pub json: bool,
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
    }

    #[test]
    fn bad_port_range_is_a_usage_error_naming_the_problem() {
        let err = Cli::try_parse_from(["natgw", "run", "--port-range", "9-3"]).unwrap_err();
        assert!(err.to_string().contains("MIN is above MAX"), "{err}");
    }

    #[test]
    fn status_and_mappings_take_json() {
        let cli = Cli::try_parse_from(["natgw", "mappings", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Mappings(OutputArgs { json: true })
        ));
        let cli = Cli::try_parse_from(["natgw", "status"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status(OutputArgs { json: false })
        ));
    }
}
