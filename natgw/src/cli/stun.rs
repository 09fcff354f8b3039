//! `natgw stun probe` (RFC 5780 NAT behaviour discovery against any STUN server, and
//! how its report is printed) and `natgw stun serve` (a standalone responder).

use std::fmt::{self, Write as _};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use log::info;
use natgw_proto::stun::discovery::{Finding, Report};
use natgw_proto::stun::responder::{Config, Counters, DEFAULT_PORT};

use crate::cli::{StunArgs, StunCommand, StunProbeArgs, StunServeArgs};
use crate::clients::stun_probe::{self, Options};
use crate::services::stun::{bind, run, summary};
use crate::services::Shutdown;

/// `natgw stun ...`.
///
/// # Errors
/// Whatever the subcommand reports.
pub async fn command(args: &StunArgs) -> anyhow::Result<()> {
    match &args.command {
        StunCommand::Probe(probe) => probe_command(probe).await,
        StunCommand::Serve(args) => serve(args).await,
    }
}

/// `natgw stun serve`: a standalone responder until SIGINT or SIGTERM.
///
/// # Errors
/// Invalid flags or sockets that cannot be bound.
async fn serve(args: &StunServeArgs) -> anyhow::Result<()> {
    let mut config = Config::new(args.listen);
    config.alternate = args.alternate;
    config.alternate_port = args.alternate_port;
    config
        .validate()
        .context("checking the STUN server settings")?;
    let mut shutdown = Shutdown::install()?;
    let sockets = bind(&config).await?;
    let counters = Arc::<Counters>::default();
    let addresses: Vec<String> = config
        .local_addresses()
        .iter()
        .map(ToString::to_string)
        .collect();
    info!(
        "stun.serving addresses={} rfc5780={}",
        addresses.join(","),
        config.alternate.is_some()
    );
    let result = tokio::select! {
        r = run(config, sockets, Arc::clone(&counters)) => r,
        _ = shutdown.recv() => Ok(()),
    };
    info!("stun.stopped {}", summary(&counters.snapshot()));
    result
}

/// The report as text.
#[must_use]
pub fn render(report: &Report) -> String {
    fn section<T: fmt::Display>(out: &mut String, name: &str, f: &Finding<T>) {
        let result = f
            .result
            .as_ref()
            .map_or_else(|| "undetermined".to_owned(), ToString::to_string);
        let _ = writeln!(out, "{name:<15} {result}");
        for e in &f.evidence {
            let _ = writeln!(out, "  - {e}");
        }
    }
    let mut out = String::new();
    let software = report
        .server_software
        .as_deref()
        .map_or_else(String::new, |s| format!(" ({s})"));
    let _ = writeln!(out, "{:<15} {}{software}", "server", report.server);
    let _ = writeln!(out, "{:<15} {}", "local address", report.local);
    let public = report
        .public_address
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let _ = writeln!(out, "{:<15} {public}", "public address");
    section(&mut out, "NAT", &report.nat);
    section(&mut out, "mapping", &report.mapping);
    section(&mut out, "filtering", &report.filtering);
    section(&mut out, "hairpinning", &report.hairpinning);
    out
}

/// Parses `HOST`, `HOST:PORT`, `IP` or `IP:PORT` into a host and a port (default
/// 3478).
///
/// # Errors
/// A port that is not a number.
pub fn split_server(s: &str) -> anyhow::Result<(String, u16)> {
    if let Ok(a) = s.parse::<SocketAddrV4>() {
        return Ok((a.ip().to_string(), a.port()));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port
                .parse()
                .map_err(|_| anyhow!("the port in --server {s} is not a number from 0 to 65535"))?;
            Ok((host.to_owned(), port))
        }
        Some(_) => {
            bail!("--server {s}: IPv6 is not supported; give an IPv4 address or a host name")
        }
        None => Ok((s.to_owned(), DEFAULT_PORT)),
    }
}

/// Resolves `--server` to its first IPv4 address.
async fn resolve(server: &str) -> anyhow::Result<SocketAddrV4> {
    let (host, port) = split_server(server)?;
    let addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolving the STUN server {host}"))?;
    let first = addrs
        .filter_map(|a| match a {
            SocketAddr::V4(a) => Some(a),
            SocketAddr::V6(_) => None,
        })
        .next();
    first.ok_or_else(|| anyhow!("the STUN server {host} has no IPv4 address"))
}

/// `natgw stun probe`.
///
/// # Errors
/// Bad flags, an unresolvable server, socket errors, or no answer to test I (after
/// printing the report).
async fn probe_command(args: &StunProbeArgs) -> anyhow::Result<()> {
    let options = Options {
        server: resolve(&args.server).await?,
        local: args.local,
        timeout: args.timeout,
    };
    let report = stun_probe::run(&options).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("formatting the report as JSON")?
        );
    } else {
        print!("{}", render(&report));
    }
    if report.public_address.is_none() {
        bail!(
            "test I against the STUN server {} failed: {}",
            report.server,
            report.observations.test1.seen
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_proto::stun::client::Seen;
    use natgw_proto::stun::discovery::{classify, Exchange, Observations};

    #[test]
    fn a_silent_server_is_reported_as_such() {
        let server = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3478);
        let local = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5000);
        let obs = Observations::new(
            server,
            Exchange {
                local,
                to: server,
                change_ip: false,
                change_port: false,
                seen: Seen::Timeout {
                    transmissions: 3,
                    waited_ms: 3000,
                },
            },
        );
        assert!(render(&classify(&obs)).contains("no answer (3 transmissions, 3.0 s)"));
    }

    #[test]
    fn server_argument_forms() {
        assert_eq!(
            split_server("192.0.2.1").unwrap(),
            ("192.0.2.1".to_owned(), 3478)
        );
        assert_eq!(
            split_server("192.0.2.1:19302").unwrap(),
            ("192.0.2.1".to_owned(), 19302)
        );
        assert_eq!(
            split_server("stun.example:3479").unwrap(),
            ("stun.example".to_owned(), 3479)
        );
        assert_eq!(
            split_server("stun.example").unwrap(),
            ("stun.example".to_owned(), 3478)
        );
        assert!(split_server("stun.example:x").is_err());
        assert!(split_server("[::1]:3478").is_err());
    }
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Duration;

    use clap::Parser as _;

    use crate::cli::{Cli, Command, StunCommand};

    fn stun(args: &[&str]) -> Result<StunCommand, clap::Error> {
        let cli = Cli::try_parse_from(["natgw", "stun"].iter().chain(args))?;
        match cli.command {
            Command::Stun(s) => Ok(s.command),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn probe_flags_parse() {
        let StunCommand::Probe(p) = stun(&[
            "probe",
            "--server",
            "stun.example:3479",
            "--local",
            "10.0.0.2:4000",
            "--timeout",
            "1.5",
            "--json",
        ])
        .unwrap() else {
            panic!("not probe");
        };
        assert_eq!(p.server, "stun.example:3479");
        assert_eq!(
            p.local,
            Some(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 4000))
        );
        assert_eq!(p.timeout, Duration::from_millis(1500));
        assert!(p.json);
        let StunCommand::Probe(p) = stun(&["probe", "--server", "x"]).unwrap() else {
            panic!("not probe");
        };
        assert_eq!(p.timeout, Duration::from_secs(3));
        assert!(stun(&["probe", "--server", "x", "--timeout", "0"]).is_err());
        assert!(stun(&["probe", "--server", "x", "--timeout", "soon"]).is_err());
    }

    #[test]
    fn serve_flags_parse() {
        let StunCommand::Serve(s) = stun(&[
            "serve",
            "--listen",
            "192.0.2.1:3478",
            "--alternate",
            "192.0.2.2",
            "--alternate-port",
            "4000",
        ])
        .unwrap() else {
            panic!("not serve");
        };
        assert_eq!(
            s.listen,
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3478)
        );
        assert_eq!(s.alternate, Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(s.alternate_port, 4000);
        // An alternate port means nothing without an alternate address.
        assert!(stun(&[
            "serve",
            "--listen",
            "192.0.2.1:3478",
            "--alternate-port",
            "9"
        ])
        .is_err());
        assert!(stun(&["serve"]).is_err());
    }
}
