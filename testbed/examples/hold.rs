//! Builds one testbed and keeps it until Ctrl-C, for poking at it by hand
//! (`ip netns exec <name> ip addr`, `tcpdump`, ...):
//!
//! ```text
//! sudo -E cargo run -p testbed --example hold
//! ```
//!
//! Also shows the Ctrl-C pattern for binaries: the handler removes every registered
//! namespace, so nothing is left behind even though the process exits without
//! dropping the `Testbed`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let ctrl_c = std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => runtime.block_on(tokio::signal::ctrl_c()).is_ok(),
            Err(e) => {
                eprintln!("cannot wait for Ctrl-C: {e}");
                false
            }
        }
    });

    let testbed = match testbed::Testbed::new() {
        Ok(testbed) => testbed,
        Err(e) => {
            eprintln!("building the testbed: {}", e.chain());
            return ExitCode::FAILURE;
        }
    };
    for ns in testbed.namespaces() {
        println!("{}", ns.name());
    }
    println!("press Ctrl-C to remove the testbed");

    if !matches!(ctrl_c.join(), Ok(true)) {
        return ExitCode::FAILURE;
    }
    // What a signal handler in a binary would do; the Testbed's own Drop then finds
    // nothing left to remove.
    match testbed::remove_all_registered() {
        Ok(removed) => {
            println!("removed {removed} namespaces");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("removing the testbed: {}", e.chain());
            ExitCode::FAILURE
        }
    }
}
