//! A small synchronous rtnetlink client for the namespace the calling thread is in.
//!
//! A netlink socket talks to the namespace it was created in, so [`Rtnl::connect`] is
//! called from inside [`crate::Netns::try_run`]. Each client owns a current-thread tokio
//! runtime on that thread; nothing here touches the caller's runtime, which is what
//! makes [`crate::Testbed::new`] safe to call from async code.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage, LinkXdp};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::runtime::Runtime;

use crate::error::{Error, Result};

/// rtnetlink handle bound to the calling thread's network namespace.
pub struct Rtnl {
    runtime: Runtime,
    handle: Handle,
    ns_name: String,
}

impl Rtnl {
    /// Opens a netlink socket in the calling thread's namespace, called `ns_name` in errors.
    pub fn connect(ns_name: &str) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| Error::os(format!("starting a netlink runtime for {ns_name}"), e))?;
        let (connection, handle, _) = {
            let _context = runtime.enter();
            rtnetlink::new_connection()
                .map_err(|e| Error::os(format!("opening a netlink socket in {ns_name}"), e))?
        };
        // Driven whenever a request below is awaited with block_on.
        runtime.spawn(connection);
        Ok(Self {
            runtime,
            handle,
            ns_name: ns_name.to_owned(),
        })
    }

    /// The interface index of `ifname`.
    ///
    /// # Errors
    /// No such interface, or netlink failed.
    pub fn link_index(&self, ifname: &str) -> Result<u32> {
        Ok(self.link(ifname)?.header.index)
    }

    /// The MAC address of `ifname`.
    ///
    /// # Errors
    /// No such interface, none set, or netlink failed.
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6]> {
        self.link(ifname)?
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| {
                Error::os(
                    format!("reading the MAC address of {ifname} in {}", self.ns_name),
                    io::Error::from_raw_os_error(libc::EADDRNOTAVAIL),
                )
            })
    }

    /// The id of the XDP program attached to `ifname`, if any.
    ///
    /// # Errors
    /// No such interface, or netlink failed.
    pub fn xdp_prog_id(&self, ifname: &str) -> Result<Option<u32>> {
        Ok(self.link(ifname)?.attributes.iter().find_map(|a| match a {
            LinkAttribute::Xdp(xdp) => xdp.iter().find_map(|x| match x {
                LinkXdp::ProgId(id) if *id != 0 => Some(*id),
                _ => None,
            }),
            _ => None,
        }))
    }

    fn link(&self, ifname: &str) -> Result<LinkMessage> {
        let what = || format!("looking up interface {ifname} in {}", self.ns_name);
        let found = self.runtime.block_on(async {
            self.handle
                .link()
                .get()
                .match_name(ifname.to_owned())
                .execute()
                .try_next()
                .await
        });
        match found {
            Ok(Some(link)) => Ok(link),
            Ok(None) => Err(Error::os(
                what(),
                io::Error::from_raw_os_error(libc::ENODEV),
            )),
            Err(e) => Err(Error::netlink(what(), e)),
        }
    }

    /// Creates veth `ifname` here with its peer `peer_name` directly inside the namespace
    /// `peer_ns` (named `peer_ns_name`), so neither name ever exists in a shared namespace.
    pub fn add_veth(
        &self,
        ifname: &str,
        peer_name: &str,
        peer_ns: BorrowedFd<'_>,
        peer_ns_name: &str,
    ) -> Result<()> {
        let peer = LinkUnspec::new_with_name(peer_name)
            .setns_by_fd(peer_ns.as_raw_fd())
            .build();
        let message = LinkVeth::new(ifname, peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.runtime
            .block_on(self.handle.link().add(message).execute())
            .map_err(|e| {
                Error::netlink(
                    format!(
                        "creating veth {ifname} in {} with peer {peer_name} in {peer_ns_name}",
                        self.ns_name
                    ),
                    e,
                )
            })
    }

    /// Creates bridge `ifname` (up, no STP, so ports forward at once).
    pub fn add_bridge(&self, ifname: &str) -> Result<()> {
        self.runtime
            .block_on(
                self.handle
                    .link()
                    .add(LinkBridge::new(ifname).build())
                    .execute(),
            )
            .map_err(|e| Error::netlink(format!("creating bridge {ifname} in {}", self.ns_name), e))
    }

    /// Makes interface `ifname` a port of bridge `bridge`.
    pub fn set_bridge_port(&self, ifname: &str, bridge: &str) -> Result<()> {
        let index = self.link_index(ifname)?;
        let bridge_index = self.link_index(bridge)?;
        let message = LinkUnspec::new_with_index(index)
            .controller(bridge_index)
            .build();
        self.runtime
            .block_on(self.handle.link().set(message).execute())
            .map_err(|e| {
                Error::netlink(
                    format!("adding {ifname} to bridge {bridge} in {}", self.ns_name),
                    e,
                )
            })
    }

    /// Sets interface `ifname` administratively up.
    pub fn set_up(&self, ifname: &str) -> Result<()> {
        let index = self.link_index(ifname)?;
        let message = LinkUnspec::new_with_index(index).up().build();
        self.runtime
            .block_on(self.handle.link().set(message).execute())
            .map_err(|e| Error::netlink(format!("setting {ifname} up in {}", self.ns_name), e))
    }

    /// Sets interface `ifname` administratively down (its veth peer loses carrier).
    pub fn set_down(&self, ifname: &str) -> Result<()> {
        let index = self.link_index(ifname)?;
        let message = LinkUnspec::new_with_index(index).down().build();
        self.runtime
            .block_on(self.handle.link().set(message).execute())
            .map_err(|e| Error::netlink(format!("setting {ifname} down in {}", self.ns_name), e))
    }

    /// Adds `addr/prefix_len` to interface `ifname`.
    pub fn add_ipv4(&self, ifname: &str, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let index = self.link_index(ifname)?;
        self.runtime
            .block_on(
                self.handle
                    .address()
                    .add(index, IpAddr::V4(addr), prefix_len)
                    .execute(),
            )
            .map_err(|e| {
                Error::netlink(
                    format!("adding {addr}/{prefix_len} to {ifname} in {}", self.ns_name),
                    e,
                )
            })
    }

    /// Sets the MAC address of `ifname`.
    ///
    /// # Errors
    /// No such interface, or netlink failed.
    pub fn set_mac(&self, ifname: &str, mac: [u8; 6]) -> Result<()> {
        let index = self.link_index(ifname)?;
        let message = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.runtime
            .block_on(self.handle.link().set(message).execute())
            .map_err(|e| {
                Error::netlink(
                    format!("setting {ifname}'s MAC address in {}", self.ns_name),
                    e,
                )
            })
    }

    /// Adds a permanent neighbour entry `addr` → `mac` on interface `ifindex`.
    ///
    /// # Errors
    /// Netlink failed.
    pub fn add_neighbour(&self, ifindex: u32, addr: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        self.runtime
            .block_on(
                self.handle
                    .neighbours()
                    .add(ifindex, IpAddr::V4(addr))
                    .link_layer_address(&mac)
                    .execute(),
            )
            .map_err(|e| {
                Error::netlink(
                    format!(
                        "adding a permanent neighbour entry for {addr} in {}",
                        self.ns_name
                    ),
                    e,
                )
            })
    }

    /// Adds the IPv4 default route via `next_hop` (which must be on a connected subnet).
    pub fn add_default_route(&self, next_hop: Ipv4Addr) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(next_hop)
            .build();
        self.runtime
            .block_on(self.handle.route().add(route).execute())
            .map_err(|e| {
                Error::netlink(
                    format!("adding default route via {next_hop} in {}", self.ns_name),
                    e,
                )
            })
    }
}
