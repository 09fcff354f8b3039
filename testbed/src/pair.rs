//! A topology for an active/standby pair: two gateways side by side, each with its
//! own link to one LAN host and to one far host, and a link between them for state
//! replication. Both gateways have the same addresses (what keepalived would move
//! between them); which one the traffic takes is chosen by routes on the client and
//! on the far host ([`Pair::route_via`]), so a test moves traffic from one gateway
//! to the other without moving an address.
//!
//! ```text
//!              ┌ c0 ── lan0 10.8.0.1  A  wan0 192.0.2.1 ── f0 ┐
//!  client 10.8.0.2                   ha0 10.255.0.1            far 192.0.2.254
//!  (on c0 and c1) │                     │                        (on f0 and f1)
//!              └ c1 ── lan0 10.8.0.1  B  wan0 192.0.2.1 ── f1 ┘
//!                                    ha0 10.255.0.2
//! ```
//!
//! GRO is on at the client's and the far host's ends, so XDP redirects into the
//! gateways' veths are delivered. Namespaces are named `ngw<pid>x<n>-<role>` (roles
//! `client`, `gw-a`, `gw-b`, `far`) and removed when the [`Pair`] is dropped.

use std::net::Ipv4Addr;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::offload::set_gro;
use crate::registry::with_fresh_id;
use crate::topology::{configure, create_veths};

/// The client's address.
pub const PAIR_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
/// Both gateways' LAN address.
pub const PAIR_GW_LAN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);
/// Both gateways' WAN (external) address.
pub const PAIR_GW_WAN_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The far host: the gateways' default route.
pub const PAIR_FAR_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
/// Gateway A's address on the replication link.
pub const PAIR_HA_A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
/// Gateway B's address on the replication link.
pub const PAIR_HA_B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 2);
/// The gateways' interface names.
pub const PAIR_LAN_IF: &str = "lan0";
/// The gateways' WAN interface.
pub const PAIR_WAN_IF: &str = "wan0";
/// The gateways' replication link.
pub const PAIR_HA_IF: &str = "ha0";

/// Which gateway of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Gateway A (`c0`, `f0`).
    A,
    /// Gateway B (`c1`, `f1`).
    B,
}

impl Side {
    const fn client_if(self) -> &'static str {
        match self {
            Self::A => "c0",
            Self::B => "c1",
        }
    }
    const fn far_if(self) -> &'static str {
        match self {
            Self::A => "f0",
            Self::B => "f1",
        }
    }
}

/// Two gateways side by side (see the module docs).
#[derive(Debug)]
pub struct Pair {
    /// The LAN host.
    pub client: Netns,
    /// Gateway A.
    pub a: Netns,
    /// Gateway B.
    pub b: Netns,
    /// The far host.
    pub far: Netns,
    id: String,
}

impl Pair {
    /// Builds the topology, traffic routed through gateway A; on error everything
    /// created so far is removed.
    ///
    /// # Errors
    /// When not root, or a namespace, link, address or route cannot be created.
    pub fn new() -> Result<Pair> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        let pair = with_fresh_id(|id| {
            let create = |role: &str| Netns::create(&format!("{id}-{role}"));
            Ok(Pair {
                client: create("client")?,
                a: create("gw-a")?,
                b: create("gw-b")?,
                far: create("far")?,
                id: id.to_owned(),
            })
        })?;
        create_veths(&pair.a, &[(PAIR_LAN_IF, "c0", &pair.client)])?;
        create_veths(&pair.b, &[(PAIR_LAN_IF, "c1", &pair.client)])?;
        create_veths(&pair.a, &[(PAIR_WAN_IF, "f0", &pair.far)])?;
        create_veths(&pair.b, &[(PAIR_WAN_IF, "f1", &pair.far)])?;
        create_veths(&pair.a, &[(PAIR_HA_IF, PAIR_HA_IF, &pair.b)])?;
        for (gw, ha) in [(&pair.a, PAIR_HA_A_ADDR), (&pair.b, PAIR_HA_B_ADDR)] {
            configure(
                gw,
                &[
                    (PAIR_LAN_IF, PAIR_GW_LAN_ADDR),
                    (PAIR_WAN_IF, PAIR_GW_WAN_ADDR),
                    (PAIR_HA_IF, ha),
                ],
                Some(PAIR_FAR_ADDR),
                true,
            )?;
        }
        configure(
            &pair.client,
            &[("c0", PAIR_CLIENT_ADDR), ("c1", PAIR_CLIENT_ADDR)],
            None,
            false,
        )?;
        configure(
            &pair.far,
            &[("f0", PAIR_FAR_ADDR), ("f1", PAIR_FAR_ADDR)],
            None,
            false,
        )?;
        for (ns, ifs) in [(&pair.client, ["c0", "c1"]), (&pair.far, ["f0", "f1"])] {
            for key in ["all", "default", ifs[0], ifs[1]] {
                ns.set_sysctl(&format!("net/ipv4/conf/{key}/rp_filter"), "0")?;
            }
            for i in ifs {
                set_gro(ns, i, true)?;
            }
        }
        pair.route_via(Side::A)?;
        Ok(pair)
    }

    /// Routes the client's traffic (default route) and the far host's answers (to
    /// the external address) through gateway `side`.
    ///
    /// # Errors
    /// When `ip route` fails.
    pub fn route_via(&self, side: Side) -> Result<()> {
        let gw = PAIR_GW_LAN_ADDR.to_string();
        let ext = format!("{PAIR_GW_WAN_ADDR}/32");
        ip(
            &self.client,
            &[
                "route",
                "replace",
                "default",
                "via",
                &gw,
                "dev",
                side.client_if(),
            ],
        )?;
        ip(&self.far, &["route", "replace", &ext, "dev", side.far_if()])?;
        // Forget the other gateway's link-layer address.
        ip(&self.client, &["neigh", "flush", "all"])?;
        ip(&self.far, &["neigh", "flush", "all"])
    }

    /// The gateway of `side`.
    #[must_use]
    pub const fn gateway(&self, side: Side) -> &Netns {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// The common prefix of the namespace names.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }
}

fn ip(ns: &Netns, args: &[&str]) -> Result<()> {
    let out = ns
        .command("ip")
        .args(args)
        .output()
        .map_err(|e| Error::os(format!("running ip {} in {}", args.join(" "), ns.name()), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::os(
        format!(
            "ip {} in {}: {}",
            args.join(" "),
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        std::io::Error::other("ip failed"),
    ))
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&mut self.client, &mut self.a, &mut self.b, &mut self.far] {
            if let Err(e) = ns.remove_if_owned() {
                eprintln!("pair {}: {}", self.id, e.chain());
            }
        }
    }
}
