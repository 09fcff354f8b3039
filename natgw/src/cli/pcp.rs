//! `natgw pcp ...`: the command line of the PCP and NAT-PMP client
//! ([`crate::clients::pcp`]): the arguments, and the answer printed as text or JSON.
//! A refusal is printed and then fails the command.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::clients::pcp::{
    self, DeleteRequest, MapRequest, NatPmpReport, PcpReport, PeerRequest, Protocol,
    LIFETIME_DEFAULT,
};
use natgw_proto::pcp::natpmp::{self, MapProtocol};
use natgw_proto::pcp::wire::{self, FilterRepr, Nonce, ResultCode};
use natgw_proto::prefix::Ipv4Prefix;

/// Arguments of `natgw pcp`.
#[derive(Debug, Args)]
pub struct PcpArgs {
    /// What to ask the server.
    #[command(subcommand)]
    pub action: PcpAction,
}

/// `natgw pcp` subcommands.
#[derive(Debug, Subcommand)]
pub enum PcpAction {
    /// Create or renew an inbound mapping (PCP MAP); prints the nonce that renews
    /// (`map --nonce`) or deletes (`delete --nonce`) it.
    Map(MapArgs),
    /// Create or refresh the outbound mapping towards one peer and learn its
    /// external endpoint (PCP PEER), e.g. before UDP hole punching.
    Peer(PeerArgs),
    /// Delete a mapping (PCP MAP with lifetime 0), given the nonce it was made with.
    Delete(DeleteArgs),
    /// Check that a PCP server answers and show its epoch (PCP ANNOUNCE).
    Announce(ServerArgs),
    /// Ask for the external address over NAT-PMP.
    NatpmpAddress(ServerArgs),
    /// Create, renew or (--lifetime 0) delete a mapping over NAT-PMP.
    NatpmpMap(NatpmpMapArgs),
}

/// Where the server is and how to print.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server: ADDR or ADDR:PORT (port 5351 by default), normally the gateway's
    /// LAN address.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_server)]
    pub server: SocketAddrV4,

    /// Print JSON (one object) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Protocol of a PCP mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// Every protocol and port (MAP only, internal port 0).
    All,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::Udp => Self::Udp,
            ProtocolArg::Tcp => Self::Tcp,
            ProtocolArg::All => Self::All,
        }
    }
}

/// A nonce given as 24 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HexNonce(pub Nonce);

/// Arguments of `natgw pcp map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// Server and output format.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Protocol to map; `all` maps every protocol and port (use --internal-port 0).
    #[arg(long, value_enum, default_value_t = ProtocolArg::Udp)]
    pub protocol: ProtocolArg,

    /// Internal port to map.
    #[arg(long, value_name = "PORT")]
    pub internal_port: u16,

    /// External endpoint to ask for; 0.0.0.0:8080 asks for port 8080 only.
    #[arg(long, value_name = "IP:PORT")]
    pub suggest: Option<SocketAddrV4>,

    /// Requested lifetime in seconds; the server may grant less or more.
    #[arg(long, value_name = "SECS", default_value_t = LIFETIME_DEFAULT)]
    pub lifetime: u32,

    /// Nonce of the mapping to renew (24 hex digits); a new random one by default.
    #[arg(long, value_name = "HEX", value_parser = parse_nonce)]
    pub nonce: Option<HexNonce>,

    /// Fail with CANNOT_PROVIDE_EXTERNAL rather than accept an external endpoint other
    /// than --suggest.
    #[arg(long)]
    pub prefer_failure: bool,

    /// Only let this remote prefix and port reach the mapping, e.g.
    /// 198.51.100.0/24:443 (port 0 = any); repeat for several.
    #[arg(long, value_name = "PREFIX:PORT", value_parser = parse_filter)]
    pub filter: Vec<FilterRepr>,

    /// Remove the mapping's filters (a FILTER with prefix length 0).
    #[arg(long, conflicts_with = "filter")]
    pub clear_filters: bool,

    /// Map for another internal host (THIRD_PARTY; the server must allow this one).
    #[arg(long, value_name = "IP")]
    pub third_party: Option<Ipv4Addr>,
}

/// Arguments of `natgw pcp peer`.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Server and output format.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Protocol (udp or tcp).
    #[arg(long, value_enum, default_value_t = ProtocolArg::Udp)]
    pub protocol: ProtocolArg,

    /// Internal port the traffic comes from.
    #[arg(long, value_name = "PORT")]
    pub internal_port: u16,

    /// The remote peer.
    #[arg(long, value_name = "IP:PORT")]
    pub peer: SocketAddrV4,

    /// External endpoint to ask for, honoured only if no mapping exists yet.
    #[arg(long, value_name = "IP:PORT")]
    pub suggest: Option<SocketAddrV4>,

    /// Seconds the mapping should live without traffic.
    #[arg(long, value_name = "SECS", default_value_t = LIFETIME_DEFAULT)]
    pub lifetime: u32,

    /// Nonce (24 hex digits) of an earlier PEER for the same mapping; random by
    /// default.
    #[arg(long, value_name = "HEX", value_parser = parse_nonce)]
    pub nonce: Option<HexNonce>,

    /// For another internal host (THIRD_PARTY).
    #[arg(long, value_name = "IP")]
    pub third_party: Option<Ipv4Addr>,
}

/// Arguments of `natgw pcp delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Server and output format.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Protocol of the mapping.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Udp)]
    pub protocol: ProtocolArg,

    /// Internal port of the mapping; 0 deletes all of this host's mappings of the
    /// protocol made with this nonce.
    #[arg(long, value_name = "PORT")]
    pub internal_port: u16,

    /// The nonce `natgw pcp map` printed.
    #[arg(long, value_name = "HEX", value_parser = parse_nonce)]
    pub nonce: HexNonce,

    /// For another internal host (THIRD_PARTY).
    #[arg(long, value_name = "IP")]
    pub third_party: Option<Ipv4Addr>,
}

/// Protocol of a NAT-PMP mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NatPmpProtocolArg {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// Arguments of `natgw pcp natpmp-map`.
#[derive(Debug, Args)]
pub struct NatpmpMapArgs {
    /// Server and output format.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Protocol to map.
    #[arg(long, value_enum, default_value_t = NatPmpProtocolArg::Udp)]
    pub protocol: NatPmpProtocolArg,

    /// Internal port; 0 with --lifetime 0 deletes all this host's NAT-PMP mappings of
    /// the protocol.
    #[arg(long, value_name = "PORT")]
    pub internal_port: u16,

    /// External port to ask for (0 = any).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub external_port: u16,

    /// Requested lifetime in seconds; 0 deletes.
    #[arg(long, value_name = "SECS", default_value_t = LIFETIME_DEFAULT)]
    pub lifetime: u32,
}

impl MapArgs {
    fn request(&self) -> MapRequest {
        MapRequest {
            protocol: self.protocol.into(),
            internal_port: self.internal_port,
            suggest: self.suggest,
            lifetime: self.lifetime,
            nonce: self.nonce.map(|n| n.0),
            prefer_failure: self.prefer_failure,
            filters: self.filter.clone(),
            clear_filters: self.clear_filters,
            third_party: self.third_party,
        }
    }
}

impl PeerArgs {
    fn request(&self) -> PeerRequest {
        PeerRequest {
            protocol: self.protocol.into(),
            internal_port: self.internal_port,
            peer: self.peer,
            suggest: self.suggest,
            lifetime: self.lifetime,
            nonce: self.nonce.map(|n| n.0),
            third_party: self.third_party,
        }
    }
}

impl DeleteArgs {
    fn request(&self) -> DeleteRequest {
        DeleteRequest {
            protocol: self.protocol.into(),
            internal_port: self.internal_port,
            nonce: self.nonce.0,
            third_party: self.third_party,
        }
    }
}

fn parse_server(s: &str) -> Result<SocketAddrV4, String> {
    super::endpoint(s, wire::SERVER_PORT)
}

fn parse_nonce(s: &str) -> Result<HexNonce, String> {
    pcp::nonce_from_hex(s)
        .map(HexNonce)
        .ok_or_else(|| format!("`{s}` is not a nonce: expected 24 hex digits"))
}

fn parse_filter(s: &str) -> Result<FilterRepr, String> {
    let err = || format!("`{s}` is not a filter: expected PREFIX:PORT such as 198.51.100.0/24:443");
    let (prefix, port) = s.rsplit_once(':').ok_or_else(err)?;
    let prefix: Ipv4Prefix = prefix.parse().map_err(|_| err())?;
    let port: u16 = port.parse().map_err(|_| err())?;
    Ok(FilterRepr {
        prefix_len: 96 + prefix.len(),
        remote_port: port,
        remote_address: prefix.network().to_ipv6_mapped(),
    })
}

fn print<T: Serialize>(json: bool, report: &T, text: impl FnOnce(&T) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", text(report));
    }
    Ok(())
}

/// Runs `natgw pcp ...`: prints the answer, and fails when it is an error.
///
/// # Errors
/// No answer, a socket error, or a refusal (after printing it).
pub fn run(args: &PcpArgs) -> Result<()> {
    match &args.action {
        PcpAction::Map(a) => finish_pcp(a.server.json, &pcp::map(a.server.server, &a.request())?),
        PcpAction::Peer(a) => finish_pcp(a.server.json, &pcp::peer(a.server.server, &a.request())?),
        PcpAction::Delete(a) => {
            finish_pcp(a.server.json, &pcp::delete(a.server.server, &a.request())?)
        }
        PcpAction::Announce(a) => finish_pcp(a.json, &pcp::announce(a.server)?),
        PcpAction::NatpmpAddress(a) => {
            let report = pcp::natpmp(a.server, natpmp::Request::ExternalAddress)?;
            finish_natpmp(a.json, &report)
        }
        PcpAction::NatpmpMap(a) => {
            let request = natpmp::Request::Map {
                protocol: match a.protocol {
                    NatPmpProtocolArg::Udp => MapProtocol::Udp,
                    NatPmpProtocolArg::Tcp => MapProtocol::Tcp,
                },
                internal_port: a.internal_port,
                suggested_external_port: a.external_port,
                lifetime: a.lifetime,
            };
            finish_natpmp(a.server.json, &pcp::natpmp(a.server.server, request)?)
        }
    }
}

fn finish_pcp(json: bool, report: &PcpReport) -> Result<()> {
    print(json, report, PcpReport::text)?;
    if report.result_code != ResultCode::Success.to_wire() {
        let class = if ResultCode::from_wire(report.result_code).is_short_lived() {
            "short-lived"
        } else {
            "long-lived"
        };
        bail!(
            "{} refused the request: {} ({class} error, expected to last {} s)",
            report.server,
            report.result,
            report.lifetime
        );
    }
    Ok(())
}

fn finish_natpmp(json: bool, report: &NatPmpReport) -> Result<()> {
    print(json, report, NatPmpReport::text)?;
    if report.result_code != natpmp::ResultCode::Success.to_wire() {
        bail!("{} refused the request: {}", report.server, report.result);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_an_error_after_printing() {
        let report = PcpReport {
            server: "10.0.1.1:5351".parse().unwrap(),
            client: "10.0.1.5:40000".parse().unwrap(),
            opcode: "MAP",
            result: "NOT_AUTHORIZED".into(),
            result_code: 2,
            lifetime: 1800,
            epoch: 1,
            protocol: None,
            internal: None,
            external: None,
            peer: None,
            nonce: None,
        };
        let err = finish_pcp(true, &report).unwrap_err().to_string();
        assert!(err.contains("NOT_AUTHORIZED (long-lived error"), "{err}");
    }

    #[test]
    fn arguments_parse() {
        assert_eq!(
            parse_server("10.0.1.1").unwrap(),
            "10.0.1.1:5351".parse().unwrap()
        );
        assert_eq!(
            parse_server("10.0.1.1:9999").unwrap(),
            "10.0.1.1:9999".parse().unwrap()
        );
        assert!(parse_server("gateway").is_err());
        let n = parse_nonce("0102030405060708090a0b0c").unwrap();
        assert_eq!(n.0, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(pcp::hex(&n.0), "0102030405060708090a0b0c");
        assert!(parse_nonce("0102").is_err());
        assert!(parse_nonce("zz02030405060708090a0b0c").is_err());
        let f = parse_filter("198.51.100.7/24:443").unwrap();
        assert_eq!(f.prefix_len, 120);
        assert_eq!(f.remote_port, 443);
        assert_eq!(
            f.remote_address,
            Ipv4Addr::new(198, 51, 100, 0).to_ipv6_mapped()
        );
        assert!(parse_filter("198.51.100.0/24").is_err());
    }
}
