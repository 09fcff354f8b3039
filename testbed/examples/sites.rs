//! Builds the hole-punching topology ([`testbed::Sites`]) and keeps it until Ctrl-C,
//! for poking at it by hand (`ip netns exec <name> ...`):
//!
//! ```text
//! sudo -E cargo run -p testbed --example sites
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let ctrl_c = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .is_ok_and(|runtime| runtime.block_on(tokio::signal::ctrl_c()).is_ok())
    });
    let sites = match testbed::Sites::new(testbed::SitesOptions::default()) {
        Ok(sites) => sites,
        Err(e) => {
            eprintln!("building the sites: {}", e.chain());
            return ExitCode::FAILURE;
        }
    };
    for ns in sites.namespaces() {
        println!("{}", ns.name());
    }
    println!("press Ctrl-C to remove them");
    let interrupted = matches!(ctrl_c.join(), Ok(true));
    if let Err(e) = testbed::remove_all_registered() {
        eprintln!("removing the namespaces: {}", e.chain());
        return ExitCode::FAILURE;
    }
    if interrupted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
