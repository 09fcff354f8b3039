//! `natgw who EXTERNAL_ADDR:PORT`: which internal host held an external port at a
//! time, from the allocation log (`--log-allocations file:` or `json:`) and, for
//! the present, from the running gateway's table.

use std::net::SocketAddrV4;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use jiff::Timestamp;
use serde::Serialize;

use crate::config::AllocLogTarget;
use crate::datapath::maps::{ipv4, port, NatTables as _};
use crate::nat_table::alloc_log::{self, Holding, Record};

/// Arguments of `natgw who`.
#[derive(Debug, Args)]
pub struct WhoArgs {
    /// The external endpoint asked about, e.g. 192.0.2.1:40000 (for ICMP the port is
    /// the query identifier).
    #[arg(value_name = "EXTERNAL_ADDR:PORT")]
    pub external: SocketAddrV4,

    /// Only this protocol: udp, tcp or icmp [default: all].
    #[arg(long, value_name = "PROTO", value_parser = parse_proto)]
    pub proto: Option<String>,

    /// The time asked about: RFC 3339 (2026-12-04T18:20:01Z, or with an offset) or
    /// Unix seconds [default: now].
    #[arg(long, value_name = "TIME", value_parser = alloc_log::parse_at)]
    pub at: Option<Timestamp>,

    /// Allocation log file to read, text or JSON lines (repeat for rotated files,
    /// oldest first) [default: the running natgw's `--log-allocations` file, else
    /// `log_allocations` in --config].
    #[arg(long = "log", value_name = "PATH")]
    pub logs: Vec<PathBuf>,

    /// Configuration file whose `log_allocations` names the log.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print JSON (one object) instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_proto(s: &str) -> Result<String, String> {
    crate::nat_table::events::parse_proto(s).map(crate::nat_table::gc::proto_name)
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct WhoReport {
    /// The external endpoint asked about.
    pub external: SocketAddrV4,
    /// The protocol asked about; `None`: all.
    pub protocol: Option<String>,
    /// The time asked about (RFC 3339).
    pub at: String,
    /// The log files read.
    pub logs: Vec<PathBuf>,
    /// Records read from them.
    pub records: usize,
    /// Lines that were not records.
    pub bad_lines: usize,
    /// Holders according to the log.
    pub from_log: Vec<Holding>,
    /// Holders in the running gateway's table (only when asked about now and a
    /// natgw runs in this network namespace); `None`: not looked at.
    pub live: Option<Vec<Holding>>,
    /// In port-block mode (RFC 7422), the host whose block holds the port, from the
    /// configuration alone (the running natgw's, else --config): it held the port
    /// for as long as that configuration was in force, at any time.
    pub block: Option<BlockHolder>,
}

/// The owner of a port block.
#[derive(Debug, Serialize)]
pub struct BlockHolder {
    /// The internal host.
    pub internal: std::net::Ipv4Addr,
    /// The block's first port.
    pub port_first: u16,
    /// The block's last port.
    pub port_last: u16,
}

/// The block holder of `external` under the running natgw's settings, else those
/// of `--config`; `None` outside block mode or when no host's block holds it.
fn block_holder(
    running: Option<&crate::config::Settings>,
    config: Option<&std::path::Path>,
    external: SocketAddrV4,
) -> Result<Option<BlockHolder>> {
    let (blocks, pool, range) = match (running, config) {
        (Some(s), _) => (s.blocks.clone(), s.external.clone(), s.port_range),
        (None, Some(path)) => {
            let f = crate::config::load_file(path)?;
            let range = match (f.port_range, f.port_min, f.port_max) {
                (Some(r), _, _) => r,
                (None, min, max) => crate::config::PortRange::new(
                    min.unwrap_or(crate::config::PORT_RANGE_DEFAULT.min),
                    max.unwrap_or(crate::config::PORT_RANGE_DEFAULT.max),
                )?,
            };
            (f.blocks, f.external.unwrap_or_default(), range)
        }
        (None, None) => return Ok(None),
    };
    let Some(blocks) = blocks else {
        return Ok(None);
    };
    let Some(host) = blocks.host_of(&pool, range, external) else {
        return Ok(None);
    };
    Ok(blocks
        .block_of(&pool, range, host)
        .map(|(_, b)| BlockHolder {
            internal: host,
            port_first: b.first,
            port_last: b.last,
        }))
}

/// `natgw who`.
///
/// # Errors
/// When no log can be found or read and there is nothing live to look at.
pub fn run(args: &WhoArgs) -> Result<()> {
    let running = crate::cli::status::open().ok();
    let logs = if args.logs.is_empty() {
        let target = match &running {
            Some((_, state, _)) => state.settings.log_allocations.clone(),
            None => None,
        }
        .or(match &args.config {
            Some(path) => crate::config::load_file(path)?.log_allocations,
            None => None,
        });
        match target {
            Some(AllocLogTarget::Syslog(socket)) => bail!(
                "the allocation log goes to syslog ({}): natgw cannot read it back; search \
                 it with the syslog tools, e.g. `journalctl -t natgw --grep 'ext={} \
                 ports={}-{}'` or grep in /var/log/syslog, or pass --log FILE",
                socket.display(),
                args.external.ip(),
                args.external.port(),
                args.external.port()
            ),
            Some(t) => t
                .readable_file()
                .map(|p| vec![p.to_owned()])
                .unwrap_or_default(),
            None => Vec::new(),
        }
    } else {
        args.logs.clone()
    };
    let live_wanted = args.at.is_none();
    let block = block_holder(
        running.as_ref().map(|(_, state, _)| &state.settings),
        args.config.as_deref(),
        args.external,
    )?;
    if logs.is_empty() && !(live_wanted && running.is_some()) && block.is_none() {
        bail!(
            "no allocation log to read: pass --log PATH (or --config FILE with \
             `log_allocations`); without one only `natgw who` of now, with natgw running, \
             can answer from the live table"
        );
    }
    let at = args.at.unwrap_or_else(Timestamp::now);

    let mut records = Vec::new();
    let mut bad_lines = 0;
    for path in &logs {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the allocation log {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match Record::parse_line(line) {
                Ok(r) => records.push(r),
                Err(e) => {
                    if bad_lines == 0 {
                        eprintln!("natgw: warning: {}:{}: {e}", path.display(), n + 1);
                    }
                    bad_lines += 1;
                }
            }
        }
    }
    let count = records.len();
    let from_log = alloc_log::who(records, args.external, args.proto.as_deref(), at);
    let live = match (&running, live_wanted) {
        (Some((_, _, maps)), true) => Some(live_holders(maps, args)?),
        _ => None,
    };
    let report = WhoReport {
        external: args.external,
        protocol: args.proto.clone(),
        at: format!("{at:.3}"),
        logs,
        records: count,
        bad_lines,
        from_log,
        live,
        block,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

/// The running gateway's mappings of the external endpoint.
fn live_holders(maps: &crate::datapath::maps::GatewayMaps, args: &WhoArgs) -> Result<Vec<Holding>> {
    let (wall, mono) = (Timestamp::now(), crate::datapath::system::monotonic_ns());
    let mut out = Vec::new();
    for (k, m) in maps.nat.fwd_entries()? {
        let protocol = crate::nat_table::gc::proto_name(k.proto);
        if ipv4(m.ext_addr_be) != *args.external.ip()
            || port(m.ext_port_be) != args.external.port()
            || args.proto.as_ref().is_some_and(|p| *p != protocol)
        {
            continue;
        }
        let age = jiff::SignedDuration::from_nanos(
            i64::try_from(mono.saturating_sub(m.created_ns)).unwrap_or(i64::MAX),
        );
        out.push(Holding {
            protocol,
            internal: SocketAddrV4::new(ipv4(k.addr_be), port(k.port_be)),
            external: args.external,
            origin: natgw_common::Origin::from_u8(m.origin)
                .map_or_else(|| format!("unknown-{}", m.origin), |o| o.name().to_owned()),
            from: wall.checked_sub(age).ok().map(|t| format!("{t:.3}")),
            until: None,
            records_lost: false,
        });
    }
    Ok(out)
}

fn holding_line(h: &Holding, source: &str) -> String {
    let mut s = format!("  {} {} {}", h.protocol, h.internal, h.origin);
    s.push_str(&format!(
        " from {}",
        h.from.as_deref().unwrap_or("(before the log)")
    ));
    match &h.until {
        Some(u) => s.push_str(&format!(" until {u}")),
        None => s.push_str(" (no end recorded)"),
    }
    s.push_str(&format!(" [{source}]"));
    if h.records_lost {
        s.push_str(" (records were lost in this span: the answer may be incomplete)");
    }
    s.push('\n');
    s
}

/// The text answer.
#[must_use]
pub fn text(r: &WhoReport) -> String {
    let what = format!(
        "{}{}",
        r.external,
        r.protocol
            .as_ref()
            .map(|p| format!("/{p}"))
            .unwrap_or_default()
    );
    let live = r.live.as_deref().unwrap_or_default();
    let mut s = String::new();
    if let Some(b) = &r.block {
        s.push_str(&format!(
            "{} lies in the port block {}-{} of {}: internal host {} holds it for as long as \
             the port-block configuration is in force\n",
            r.external,
            b.port_first,
            b.port_last,
            r.external.ip(),
            b.internal
        ));
    }
    if r.from_log.is_empty() && live.is_empty() {
        if r.block.is_none() {
            s.push_str(&format!("nobody held {what} at {}\n", r.at));
        }
    } else {
        s.push_str(&format!("{what} at {} was held by:\n", r.at));
        for h in &r.from_log {
            s.push_str(&holding_line(h, "log"));
        }
        for h in live {
            s.push_str(&holding_line(h, "live table"));
        }
    }
    let logs: Vec<String> = r.logs.iter().map(|p| p.display().to_string()).collect();
    s.push_str(&format!(
        "(read {} records from {}{}{})\n",
        r.records,
        if logs.is_empty() {
            "no log".to_owned()
        } else {
            logs.join(", ")
        },
        if r.bad_lines > 0 {
            format!(", {} lines were not records", r.bad_lines)
        } else {
            String::new()
        },
        if r.live.is_some() {
            ", and the running natgw's table"
        } else {
            ""
        }
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_answer_names_the_host_without_a_log() {
        // rfc7422 §2: the holder of a port follows from the configuration.
        let report = WhoReport {
            external: "192.0.2.3:22100".parse().unwrap(),
            protocol: None,
            at: "2026-12-05T12:00:00.000Z".to_owned(),
            logs: Vec::new(),
            records: 0,
            bad_lines: 0,
            from_log: Vec::new(),
            live: None,
            block: Some(BlockHolder {
                internal: std::net::Ipv4Addr::new(10, 0, 0, 200),
                port_first: 22024,
                port_last: 22773,
            }),
        };
        let out = text(&report);
        assert!(
            out.starts_with(
                "192.0.2.3:22100 lies in the port block 22024-22773 of 192.0.2.3: internal \
                 host 10.0.0.200 holds it"
            ),
            "{out}"
        );
        assert!(!out.contains("nobody"), "{out}");
    }
}
