//! A third topology for double NAT: two gateways in series, the inner one's WAN on
//! the outer one's LAN, as behind a carrier NAT or a second router.
//!
//! ```text
//!  host 10.9.0.2 ── lan0 10.9.0.1  INNER  wan0 100.64.0.2 ── lan0 100.64.0.1  OUTER  wan0 192.0.2.1 ── far 192.0.2.254
//! ```
//!
//! The host's default route is the inner gateway, the inner's is the outer's LAN
//! address (where a PCP server answers: natgw's upstream), the outer's is the far
//! host. The far host knows only its connected subnet, so it reaches the LAN host
//! only through both NATs. Nothing is started on the gateways.
//!
//! Namespaces are named `ngw<pid>x<n>-<role>` (roles `host`, `inner`, `outer`,
//! `far`) and removed when the [`Chain`] value is dropped.

use std::net::Ipv4Addr;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::registry::with_fresh_id;
use crate::topology::{configure, create_veths};

/// The LAN host's address.
pub const CHAIN_HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
/// The inner gateway's LAN address.
pub const CHAIN_INNER_LAN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// The inner gateway's WAN address (on the outer's LAN).
pub const CHAIN_INNER_WAN_ADDR: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
/// The outer gateway's LAN address: the inner's default route and upstream PCP
/// server.
pub const CHAIN_OUTER_LAN_ADDR: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// The outer gateway's WAN address: the real outside sees only this.
pub const CHAIN_OUTER_WAN_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The far host beyond the outer gateway (the outer's default route).
pub const CHAIN_FAR_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
/// Both gateways' LAN interface.
pub const CHAIN_LAN_IF: &str = "lan0";
/// Both gateways' WAN interface.
pub const CHAIN_WAN_IF: &str = "wan0";
/// The hosts' interface.
pub const CHAIN_HOST_IF: &str = "eth0";

/// Two gateways in series (see the module docs).
#[derive(Debug)]
pub struct Chain {
    /// The LAN host behind the inner gateway.
    pub host: Netns,
    /// The inner gateway (`lan0`, `wan0`).
    pub inner: Netns,
    /// The outer gateway (`lan0`, `wan0`).
    pub outer: Netns,
    /// The far host on the outer's WAN.
    pub far: Netns,
    id: String,
}

impl Chain {
    /// Builds the topology; on error everything created so far is removed.
    ///
    /// # Errors
    /// When not root, or a namespace, link, address or route cannot be created.
    pub fn new() -> Result<Chain> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        let chain = with_fresh_id(|id| {
            let create = |role: &str| Netns::create(&format!("{id}-{role}"));
            Ok(Chain {
                host: create("host")?,
                inner: create("inner")?,
                outer: create("outer")?,
                far: create("far")?,
                id: id.to_owned(),
            })
        })?;
        create_veths(&chain.inner, &[(CHAIN_LAN_IF, CHAIN_HOST_IF, &chain.host)])?;
        create_veths(&chain.outer, &[(CHAIN_LAN_IF, CHAIN_WAN_IF, &chain.inner)])?;
        create_veths(&chain.outer, &[(CHAIN_WAN_IF, CHAIN_HOST_IF, &chain.far)])?;
        configure(
            &chain.host,
            &[(CHAIN_HOST_IF, CHAIN_HOST_ADDR)],
            Some(CHAIN_INNER_LAN_ADDR),
            false,
        )?;
        configure(
            &chain.inner,
            &[
                (CHAIN_LAN_IF, CHAIN_INNER_LAN_ADDR),
                (CHAIN_WAN_IF, CHAIN_INNER_WAN_ADDR),
            ],
            Some(CHAIN_OUTER_LAN_ADDR),
            true,
        )?;
        configure(
            &chain.outer,
            &[
                (CHAIN_LAN_IF, CHAIN_OUTER_LAN_ADDR),
                (CHAIN_WAN_IF, CHAIN_OUTER_WAN_ADDR),
            ],
            Some(CHAIN_FAR_ADDR),
            true,
        )?;
        configure(&chain.far, &[(CHAIN_HOST_IF, CHAIN_FAR_ADDR)], None, false)?;
        Ok(chain)
    }

    /// The common prefix of the namespace names.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for ns in [
            &mut self.host,
            &mut self.inner,
            &mut self.outer,
            &mut self.far,
        ] {
            if let Err(e) = ns.remove_if_owned() {
                eprintln!("chain {}: {}", self.id, e.chain());
            }
        }
    }
}
