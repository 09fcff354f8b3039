//! Builds natgw's test network — network namespaces joined by veth pairs — over
//! netlink, for `cargo xtask run` and the integration tests.
//!
//! ```text
//!  lan-a  eth0 10.0.1.2/24   ──veth──  lan0 10.0.1.1/24 ┐
//!         (default via 10.0.1.1)                        ├ GATEWAY (ip_forward=1)
//!  lan-b  eth0 10.0.2.2/24   ──veth──  lan1 10.0.2.1/24 ┘   wan0 192.0.2.1/24
//!         (default via 10.0.2.1)                             (default via 192.0.2.254)
//!                                                              │ veth
//!                                                            gw0 192.0.2.254/24
//!                                                              INET (router, ip_forward=1,
//!                                                              connected routes only)
//!  wan-a  eth0 198.51.100.2/24 ──veth── wana0 198.51.100.1/24 ┤
//!  wan-b  eth0 203.0.113.2/24  ──veth── wanb0 203.0.113.1/24  ┘
//! ```
//!
//! natgw itself runs in a testbed as a [`Natgw`] (module [`natgw`]): started in a
//! namespace, asked through its CLI, stopped with SIGTERM before the namespace goes.
//!
//! A second topology, for hole punching between sites, is [`Sites`] (module [`sites`]):
//! two LANs behind their own gateways, a third behind the kernel's NAT, and a
//! rendezvous host, joined by an internet router. A third, for failover, is
//! [`HaTestbed`] (module [`ha`]): two gateways on one LAN and one WAN segment with
//! keepalived moving the virtual addresses between them.
//!
//! Interfaces keep their default settings (checksum offloads stay on, GRO off) and
//! nothing is attached to them, so the gateway's veths accept no XDP redirects and natgw
//! translates on the kernel's path (TC); [`Testbed::accept_redirects`] (module
//! [`offload`]) turns GRO on at their peers' ends so natgw's XDP fast path can work.
//! The inet router only knows its connected subnets, so a packet that leaves the
//! gateway with an internal (10/8) source is delivered but can never be answered: that
//! is what proves the NAT translated it.
//!
//! Namespaces are named `ngw<pid>x<n>-<role>` (roles `gw`, `inet`, `lana`, `lanb`,
//! `wana`, `wanb`) and mounted under `/run/netns`, so testbeds can coexist (tests run in
//! parallel) and `ip netns exec ngw123x1-gw ...` works while debugging. Dropping the
//! [`Testbed`] removes them; [`remove_all_registered`] does it from a Ctrl-C handler and
//! [`cleanup_stale`] removes what killed runs left behind. Everything needs root.
//!
//! ```no_run
//! let testbed = testbed::Testbed::new()?;
//! let server = testbed.wan[0].ns.bind_udp((testbed::WAN_A_ADDR, 7))?;
//! let client = testbed.lan[0].ns.bind_udp((testbed::LAN_A_ADDR, 0))?;
//! # Ok::<(), testbed::Error>(())
//! ```

pub mod chain;
mod error;
pub mod ha;
mod lifecycle;
pub mod natgw;
mod netns;
pub mod offload;
pub mod pair;
mod registry;
pub mod rtnl;
pub mod scale_out;
pub mod sites;
mod topology;

pub use chain::Chain;
pub use error::{Error, Result};
pub use ha::{HaTestbed, Side};
pub use lifecycle::NETNS_DIR;
pub use natgw::{
    natgw_bin, require_root, Natgw, NatgwBuilder, NatgwError, NATGW_BIN_ENV, NATGW_DEB_ENV,
};
pub use netns::Netns;
pub use offload::RedirectPeer;
pub use pair::{Pair, Side as PairSide};
pub use registry::{cleanup_stale, registered_namespaces, remove_all_registered, NAME_PREFIX};
pub use rtnl::Rtnl;
pub use sites::{KernelNat, Site, Sites, SitesOptions};
pub use topology::{
    Gateway, Host, Testbed, GW_LAN_A_ADDR, GW_LAN_B_ADDR, GW_LAN_IFS, GW_WAN_ADDR, GW_WAN_IF,
    HOST_IF, INET_GW_IF, INET_GW_SIDE_ADDR, INET_WAN_A_IF, INET_WAN_A_SIDE_ADDR, INET_WAN_B_IF,
    INET_WAN_B_SIDE_ADDR, INTERNAL_NET, LAN_A_ADDR, LAN_B_ADDR, SUBNET_PREFIX_LEN, WAN_A_ADDR,
    WAN_B_ADDR,
};
