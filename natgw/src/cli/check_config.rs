//! `natgw check-config FILE`: validates a configuration file the way `natgw run` would
//! read it, without root and without touching the network, and reports every problem
//! as `FILE:LINE: KEY: message`, the form editors and CI logs link to a line.
//!
//! Parsing stops at the first syntax or type error (the TOML parser's limit); once the
//! file parses, every semantic problem is reported, not only the first. Interfaces that
//! do not exist in this network namespace are warnings: the file may be checked on
//! another machine than the gateway.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use toml_edit::{ImDocument, Item, Table};

use crate::config::{self, ConfigError, Overrides};

/// Arguments of `natgw check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The configuration file to check (as given to `natgw run --config`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// With port blocks: the configuration of another gateway of the same cluster
    /// (repeat for each). Their block plans must agree with FILE's (the same internal
    /// space, block size, shares, pool in the same order and port range: else two
    /// gateways would give one external port to two hosts), and every share must be
    /// owned by one of them.
    #[arg(long = "peer", value_name = "FILE")]
    pub peers: Vec<PathBuf>,
}

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `natgw run` refuses the file.
    Error,
    /// `natgw run` accepts it but logs a warning.
    Warning,
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// 1-based line, when the key is in the file.
    pub line: Option<usize>,
    /// The key, dotted (`timeouts.udp`, `forward[1].external_port`), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Everything found in one file.
#[derive(Debug, Default)]
pub struct Report {
    /// In the order found: parse errors, then semantic errors, then warnings.
    pub findings: Vec<Finding>,
    /// With port blocks and no errors: the shares, for the upstream routers' routes.
    pub shares: Vec<config::blocks::Share>,
}

impl Report {
    /// Number of errors.
    #[must_use]
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    /// The report as printed: one line per finding, then a summary line.
    #[must_use]
    pub fn render(&self, path: &Path) -> String {
        let mut out = String::new();
        let name = path.display();
        for f in &self.findings {
            let _ = write!(out, "{name}");
            if let Some(line) = f.line {
                let _ = write!(out, ":{line}");
            }
            let _ = write!(out, ":");
            if let Some(key) = &f.key {
                let _ = write!(out, " {key}:");
            }
            if f.severity == Severity::Warning {
                let _ = write!(out, " warning:");
            }
            let _ = writeln!(out, " {}", f.message);
        }
        for share in &self.shares {
            let _ = writeln!(out, "{name}: blocks: {share}");
        }
        let errors = self.errors();
        let warnings = self.findings.len() - errors;
        if errors == 0 && warnings == 0 {
            let _ = writeln!(out, "{name}: OK");
        } else {
            let _ = writeln!(
                out,
                "{name}: {errors} error{}, {warnings} warning{}",
                plural(errors),
                plural(warnings)
            );
        }
        out
    }
}

const fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `natgw check-config FILE`: prints the report; an error (exit status 1) when the file
/// cannot be read or has errors.
pub fn run(args: &CheckConfigArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read config file {}", args.file.display()))?;
    let mut report = check_text(&args.file, &text, interface_exists);
    if !args.peers.is_empty() {
        check_peers(&args.file, &text, &args.peers, &mut report)?;
    }
    print!("{}", report.render(&args.file));
    let errors = report.errors();
    if errors > 0 {
        anyhow::bail!(
            "{}: {errors} error{}: `natgw run` would refuse this configuration",
            args.file.display(),
            plural(errors)
        );
    }
    Ok(())
}

/// The block settings of a configuration, as `natgw run` would merge them.
fn block_plan(path: &Path, text: &str) -> anyhow::Result<Option<config::Settings>> {
    let file = config::parse_file(path, text)?;
    let checked = config::check(&file, &Overrides::default());
    Ok(checked
        .settings
        .blocks
        .is_some()
        .then_some(checked.settings))
}

/// Compares FILE's block plan with each peer's and checks that every share has an
/// owner among them (see [`CheckConfigArgs::peers`]).
fn check_peers(
    path: &Path,
    text: &str,
    peers: &[PathBuf],
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut error = |message: String| {
        report.findings.push(Finding {
            severity: Severity::Error,
            line: None,
            key: Some("blocks".to_owned()),
            message,
        });
    };
    let Some(own) = block_plan(path, text)? else {
        error("--peer compares port-block plans, and this file has no [blocks]".to_owned());
        return Ok(());
    };
    let Some(b) = own.blocks.as_ref() else {
        return Ok(());
    };
    let mut owners = vec![Vec::new(); usize::from(b.shares)];
    let mut note_owner = |who: &Path, s: &config::Settings| {
        if let Some(sb) = &s.blocks {
            for share in sb.shares(&s.external, s.port_range) {
                if share.owned {
                    if let Some(o) = owners.get_mut(usize::from(share.index)) {
                        o.push(who.display().to_string());
                    }
                }
            }
        }
    };
    note_owner(path, &own);
    for peer in peers {
        let peer_text = std::fs::read_to_string(peer)
            .with_context(|| format!("cannot read peer config file {}", peer.display()))?;
        let Some(theirs) = block_plan(peer, &peer_text)? else {
            error(format!(
                "peer {} has no [blocks]: it would translate dynamically",
                peer.display()
            ));
            continue;
        };
        let tb = theirs.blocks.as_ref();
        let differs = [
            (
                "internal space",
                tb.map(|t| t.space.network_prefix()) != Some(b.space.network_prefix()),
            ),
            ("block size", tb.map(|t| t.size) != Some(b.size)),
            ("number of shares", tb.map(|t| t.shares) != Some(b.shares)),
            (
                "external pool (addresses and order)",
                theirs.external != own.external,
            ),
            ("port range", theirs.port_range != own.port_range),
        ];
        for (what, _) in differs.iter().filter(|(_, d)| *d) {
            error(format!(
                "peer {} has another {what}: the gateways would compute different blocks \
                 and could give one external port to two hosts",
                peer.display()
            ));
        }
        note_owner(peer, &theirs);
    }
    for (share, who) in owners.iter().enumerate() {
        if who.is_empty() {
            error(format!(
                "share {share} is owned by no gateway: its hosts would be dropped everywhere"
            ));
        }
    }
    Ok(())
}

/// Whether a network interface of that name exists in this namespace (no privileges
/// needed).
fn interface_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// Checks configuration text; `path` only names the file in messages, and `exists`
/// says whether an interface is present here.
pub fn check_text(path: &Path, text: &str, exists: impl Fn(&str) -> bool) -> Report {
    let mut report = Report::default();
    // A syntax error leaves no document to find keys in; toml's own error then still
    // gives the line.
    let doc = ImDocument::parse(text).ok();
    let file = match config::parse_file(path, text) {
        Ok(file) => file,
        Err(ConfigError::Parse { line, message, .. }) => {
            let offset = toml::from_str::<config::FileConfig>(text)
                .err()
                .and_then(|e| e.span())
                .map(|span| span.start);
            let key = doc
                .as_ref()
                .zip(offset)
                .and_then(|(doc, offset)| key_at(doc.as_table(), offset));
            report.findings.push(Finding {
                severity: Severity::Error,
                line,
                key,
                message,
            });
            return report;
        }
        Err(other) => {
            report.findings.push(Finding {
                severity: Severity::Error,
                line: None,
                key: None,
                message: other.to_string(),
            });
            return report;
        }
    };
    let checked = config::check(&file, &Overrides::default());
    let locate = |key: &str| doc.as_ref().and_then(|d| line_of_key(d, text, key));
    for e in &checked.errors {
        let key = e.key();
        let line = key.as_deref().and_then(locate);
        report.findings.push(Finding {
            severity: Severity::Error,
            line,
            key,
            message: e.to_string(),
        });
    }
    for w in &checked.warnings {
        report.findings.push(Finding {
            severity: Severity::Warning,
            line: locate(w.key),
            key: Some(w.key.to_owned()),
            message: w.message.clone(),
        });
    }
    let s = &checked.settings;
    if let (Some(b), true) = (&s.blocks, checked.errors.is_empty()) {
        report.shares = b.shares(&s.external, s.port_range);
    }
    let interfaces = std::iter::once(("wan", &s.wan)).chain(s.lan.iter().map(|l| ("lan", l)));
    for (key, name) in interfaces {
        if !name.is_empty() && !exists(name) {
            report.findings.push(Finding {
                severity: Severity::Warning,
                line: locate(key),
                key: Some(key.to_owned()),
                message: format!(
                    "interface {name} does not exist in this network namespace; `natgw run` \
                     needs it where it runs"
                ),
            });
        }
    }
    report
}

/// 1-based line of byte offset `offset`.
fn line_at(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|b| *b == b'\n').count() + 1
}

/// The line where a dotted key (`timeouts.udp`, `forward[1]`) is written: the key
/// itself, else the header of its table, else the nearest enclosing table's header.
/// `port_range` also finds `port_min`/`port_max`, its other spelling.
fn line_of_key<S>(doc: &ImDocument<S>, text: &str, key: &str) -> Option<usize> {
    let span = span_of_key(doc.as_table(), key).or_else(|| match key {
        "port_range" => span_of_key(doc.as_table(), "port_min")
            .or_else(|| span_of_key(doc.as_table(), "port_max")),
        _ => None,
    })?;
    Some(line_at(text, span.start))
}

fn span_of_key(root: &Table, key: &str) -> Option<Range<usize>> {
    let mut table = root;
    let mut best = None;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((k, item)) = table.get_key_value(name) else {
            return best;
        };
        best = k.span().or_else(|| item.span()).or(best);
        let next = match (item, index) {
            (Item::Table(t), None) => t,
            (Item::ArrayOfTables(a), Some(i)) => match a.get(i) {
                Some(t) => t,
                None => return best,
            },
            _ => return best,
        };
        // A table's header is where it is written; dotted keys have no header.
        best = next.span().or(best);
        if parts.peek().is_none() {
            return best;
        }
        table = next;
    }
    best
}

/// The dotted key written last before byte `offset`: the key whose value toml could
/// not read (a wrong type does not name its key), or the table it is in.
fn key_at(root: &Table, offset: usize) -> Option<String> {
    let mut entries = Vec::new();
    collect_entries(root, "", &mut entries);
    entries
        .into_iter()
        .filter(|(start, _)| *start <= offset)
        .max_by_key(|(start, _)| *start)
        .map(|(_, path)| path)
}

/// Every key and table header with where it starts.
fn collect_entries(table: &Table, prefix: &str, out: &mut Vec<(usize, String)>) {
    for (name, item) in table {
        let path = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        };
        match item {
            Item::Table(t) => {
                if let Some(span) = t.span() {
                    out.push((span.start, path.clone()));
                }
                collect_entries(t, &path, out);
            }
            Item::ArrayOfTables(array) => {
                for (i, t) in array.iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    if let Some(span) = t.span() {
                        out.push((span.start, path.clone()));
                    }
                    collect_entries(t, &path, out);
                }
            }
            Item::Value(_) | Item::None => {
                let start = table
                    .key(name)
                    .and_then(toml_edit::Key::span)
                    .or_else(|| item.span());
                if let Some(span) = start {
                    out.push((span.start, path));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Report {
        check_text(Path::new("natgw.toml"), text, |name| {
            name.starts_with("eth")
        })
    }

    const GOOD: &str = "wan = \"eth0\"\nlan = [\"eth1\"]\n";

    #[test]
    fn a_good_file_is_ok() {
        let report = check(GOOD);
        assert!(report.findings.is_empty(), "{report:?}");
        assert_eq!(report.render(Path::new("natgw.toml")), "natgw.toml: OK\n");
    }

    #[test]
    fn every_semantic_error_is_reported_with_its_line_and_key() {
        let text = "\
wan = \"eth0\"
lan = [\"eth1\", \"eth1\"]
max_mappings = 0

[timeouts]
udp = 0
icmp = 30

[upnp]
http_port = 0

[[forward]]
protocol = \"udp\"
external_port = 3478
internal = \"10.0.0.2:3478\"
";
        let report = check(text);
        let got: Vec<_> = report
            .findings
            .iter()
            .map(|f| (f.severity, f.line, f.key.clone().unwrap_or_default()))
            .collect();
        let e = Severity::Error;
        assert_eq!(
            got,
            vec![
                (e, Some(2), "lan".to_owned()),
                (e, Some(6), "timeouts.udp".to_owned()),
                (e, Some(3), "max_mappings".to_owned()),
                (e, Some(12), "forward[0]".to_owned()),
                (e, Some(10), "upnp.http_port".to_owned()),
                (Severity::Warning, Some(7), "timeouts.icmp".to_owned()),
            ],
            "{report:#?}"
        );
        let text = report.render(Path::new("natgw.toml"));
        assert!(
            text.contains("natgw.toml:6: timeouts.udp: the UDP timeout must be at least 1 second"),
            "{text}"
        );
        assert!(
            text.ends_with("natgw.toml: 5 errors, 1 warning\n"),
            "{text}"
        );
    }

    #[test]
    fn a_wrong_type_names_its_key_and_line() {
        let report =
            check("wan = \"eth0\"\nlan = [\"eth1\"]\n\n[limits]\nports_per_host = \"many\"\n");
        assert_eq!(report.findings.len(), 1, "{report:?}");
        let f = &report.findings[0];
        assert_eq!(f.line, Some(5), "{f:?}");
        assert_eq!(f.key.as_deref(), Some("limits.ports_per_host"), "{f:?}");
    }

    #[test]
    fn an_unknown_key_names_itself_and_its_line() {
        let report = check("wan = \"eth0\"\nlan = [\"eth1\"]\n[stun]\nprot = 3478\n");
        let f = &report.findings[0];
        assert_eq!(f.line, Some(4), "{f:?}");
        assert!(f.message.contains("prot"), "{f:?}");
    }

    #[test]
    fn a_syntax_error_gives_its_line() {
        let report = check("wan = \"eth0\"\nlan = [\"eth1\"\n");
        assert_eq!(report.errors(), 1, "{report:?}");
        assert!(report.findings[0].line.is_some(), "{report:?}");
    }

    #[test]
    fn missing_interfaces_are_errors_and_absent_ones_warnings() {
        let report = check("lan = [\"wlan0\"]\n");
        let got: Vec<_> = report
            .findings
            .iter()
            .map(|f| (f.severity, f.line, f.key.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Severity::Error, None, "wan".to_owned()),
                (Severity::Warning, Some(1), "lan".to_owned()),
            ],
            "{report:#?}"
        );
    }

    #[test]
    fn port_min_and_max_are_found_for_a_bad_range() {
        let report = check("wan = \"eth0\"\nlan = [\"eth1\"]\nport_min = 2000\nport_max = 1000\n");
        let f = &report.findings[0];
        assert_eq!(f.key.as_deref(), Some("port_range"), "{f:?}");
        assert_eq!(f.line, Some(3), "{f:?}");
    }

    #[test]
    fn pcp_policy_errors_point_into_the_pcp_table() {
        let report = check(
            "wan = \"eth0\"\nlan = [\"eth1\"]\n[pcp]\nmin_lifetime = 900\nmax_lifetime = 100\n",
        );
        let f = &report.findings[0];
        assert_eq!(f.key.as_deref(), Some("pcp.min_lifetime"), "{f:?}");
        assert_eq!(f.line, Some(4), "{f:?}");
    }

    /// A cluster member: pool of three, three shares, `owned` its shares.
    fn member(owned: &str, size: u16) -> String {
        format!(
            "{GOOD}external = [\"192.0.2.1\", \"192.0.2.2\", \"192.0.2.3\"]\n\
             [blocks]\nspace = \"10.0.0.0/24\"\nsize = {size}\nshares = 3\nowned = [{owned}]\n"
        )
    }

    #[test]
    fn block_plans_are_checked_and_their_shares_listed() {
        // rfc7422: the shares an operator routes, from the file itself.
        let report = check(&member("0", 750));
        assert!(report.findings.is_empty(), "{report:?}");
        let out = report.render(Path::new("g0.toml"));
        assert!(
            out.contains("g0.toml: blocks: share 0 (owned): internal 10.0.0.0/26,10.0.0.64/28,10.0.0.80/30,10.0.0.84/31 external 192.0.2.1\n"),
            "{out}"
        );
        // Blocks of 2000 ports: 32 per address, 96 hosts in a pool of 3, not 256.
        let report = check(&member("0, 3", 2000));
        let messages: Vec<&str> = report.findings.iter().map(|f| f.message.as_str()).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("needs 8 external addresses")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("owned share 3 does not exist")),
            "{messages:?}"
        );
        assert!(report
            .findings
            .iter()
            .all(|f| f.key.as_deref() == Some("blocks")));
        assert_eq!(report.findings[0].line, Some(4), "the [blocks] header");
        // A forward outside its host's block.
        let report = check(&format!(
            "{}[[forward]]\nprotocol = \"udp\"\nexternal_port = 5000\ninternal = \"10.0.0.20:5000\"\n",
            member("0", 750)
        ));
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.message.contains("outside the internal host's port block")),
            "{report:?}"
        );
    }

    #[test]
    fn peers_must_agree_and_own_every_share() {
        let dir = std::env::temp_dir().join(format!("natgw-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let g0 = member("0, 2", 750);
        let g1 = write("g1.toml", member("1, 0", 750));
        let bad = write("bad.toml", member("1", 1000));
        let mut report = check(&g0);
        check_peers(
            Path::new("g0.toml"),
            &g0,
            std::slice::from_ref(&g1),
            &mut report,
        )
        .unwrap();
        assert!(report.findings.is_empty(), "{report:?}");
        let mut report = check(&g0);
        check_peers(Path::new("g0.toml"), &g0, &[bad], &mut report).unwrap();
        let messages: Vec<&str> = report.findings.iter().map(|f| f.message.as_str()).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("has another block size")),
            "{messages:?}"
        );
        let g0_alone = member("0", 750);
        let mut report = check(&g0_alone);
        check_peers(Path::new("g0.toml"), &g0_alone, &[], &mut report).unwrap();
        let messages: Vec<&str> = report.findings.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "share 1 is owned by no gateway: its hosts would be dropped everywhere",
                "share 2 is owned by no gateway: its hosts would be dropped everywhere"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
