//! `cargo xtask run`: build natgw and start it inside a testbed of network namespaces
//! (LAN clients, the gateway, a WAN side) so it can be tried by hand.
//!
//! TODO: not written yet; it will build with [`crate::build`] and set up the topology
//! with the `testbed` crate.

use anyhow::{bail, Result};

/// Arguments of `cargo xtask run` (none yet).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// `cargo xtask run`: not yet wired.
pub fn run(_args: &Args) -> Result<()> {
    bail!("cargo xtask run: not yet wired (TODO: start natgw in a `testbed` topology)")
}
