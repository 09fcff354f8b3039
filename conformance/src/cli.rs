//! The suite's command line, defined once: the `natgw-conformance` binary parses it, and
//! `cargo xtask conformance` takes the same arguments (flattened into its own, next to
//! its build options) and passes them on to the binary with [`SuiteArgs::to_args`].

use clap::ValueEnum as _;

/// Which NATs to run the suite against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Nat {
    /// natgw only.
    Natgw,
    /// The kernel's NAT only: an nftables masquerade rule on the gateway's wan0.
    Nft,
    /// Both, side by side.
    Both,
}

/// What to check, against which NATs, and how to print it.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SuiteArgs {
    /// NAT(s) under test.
    #[arg(long, value_enum, default_value_t = Nat::Both)]
    pub nat: Nat,

    /// Run only these checks: requirement ids (`4787-REQ-8`, `"RFC 5382 REQ-4"`,
    /// `7857`) or test names.
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub only: Vec<String>,

    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,

    /// Print a Markdown table (for the README).
    #[arg(long)]
    pub markdown: bool,

    /// Extra arguments for every `natgw run`, after `--` (e.g. `-- --xdp-mode skb`).
    #[arg(last = true, value_name = "NATGW_RUN_ARGS")]
    pub natgw_args: Vec<String>,
}

impl SuiteArgs {
    /// The command line that parses back into `self`.
    #[must_use]
    pub fn to_args(&self) -> Vec<String> {
        let nat = self
            .nat
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned());
        let mut args = vec!["--nat".to_owned(), nat];
        if !self.only.is_empty() {
            args.push("--only".to_owned());
            args.extend(self.only.iter().cloned());
        }
        if self.json {
            args.push("--json".to_owned());
        }
        if self.markdown {
            args.push("--markdown".to_owned());
        }
        if !self.natgw_args.is_empty() {
            args.push("--".to_owned());
            args.extend(self.natgw_args.iter().cloned());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        suite: SuiteArgs,
    }

    fn round_trip(line: &[&str]) {
        let parsed = Cli::try_parse_from(std::iter::once("x").chain(line.iter().copied()))
            .expect("parses")
            .suite;
        let again = Cli::try_parse_from(std::iter::once("x".to_owned()).chain(parsed.to_args()))
            .expect("parses again")
            .suite;
        assert_eq!(parsed, again, "{line:?} -> {:?}", parsed.to_args());
    }

    #[test]
    fn arguments_pass_through_unchanged() {
        round_trip(&[]);
        round_trip(&["--nat", "natgw", "--only", "4787-REQ-8", "RFC 5382 REQ-4"]);
        round_trip(&["--nat", "nft", "--json"]);
        round_trip(&["--markdown", "--", "--xdp-mode", "skb"]);
    }
}
