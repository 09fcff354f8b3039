//! natgw: the controller of an eBPF NAT gateway. `natgw run` loads and attaches the
//! data path and expires idle mappings; `natgw status` and `natgw mappings` show the
//! gateway running in the current network namespace.

mod addresses;
mod cli;
mod config;
mod daemon;
mod episodes;
mod explicit;
mod fragments;
mod gc;
mod icmp;
mod loader;
mod log_budget;
mod logging;
mod maps;
mod neighbours;
mod netlink;
mod output;
mod pcp;
mod pool;
mod punch;
mod replies;
mod state;
mod status;
mod stun;
mod system;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("natgw: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Run(args) => daemon::run(args).await,
            Command::Status(args) => status::status(args.json),
            Command::Mappings(args) => status::mappings(args.json, args.sessions),
            Command::Stun(args) => stun::command(args).await,
            Command::Pcp(args) => pcp::client::run(args),
            Command::Punch(args) => punch::punch(args).await,
            Command::Rendezvous(args) => punch::rendezvous(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natgw: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
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
