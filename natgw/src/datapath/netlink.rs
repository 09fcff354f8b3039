//! Interfaces as the kernel reports them over rtnetlink — index, MTU, link kind and
//! IPv4 prefixes —, notifications of IPv4 address changes ([`AddressWatch`]), and
//! removal of the `clsact` qdisc natgw added. XDP features come from the
//! generic-netlink `netdev` family in [`netdev`].

pub mod netdev;

use std::io;
use std::net::IpAddr;

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt as _, TryStreamExt as _};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkInfo, LinkXdp, XdpAttached};
use netlink_packet_route::tc::{TcAttribute, TcHandle};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, MulticastGroup};

use natgw_proto::prefix::Ipv4Prefix;

/// An interface as natgw needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// MTU.
    pub mtu: u32,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, ...); `None` for plain hardware devices.
    pub kind: Option<String>,
    /// IPv4 addresses with prefix lengths, in the kernel's order (primary first).
    pub ipv4: Vec<Ipv4Prefix>,
    /// An XDP program is attached in generic (SKB) mode (a previous natgw's).
    pub xdp_generic: bool,
}

impl Link {
    /// Its name and index.
    #[must_use]
    pub fn clone_name(&self) -> (String, u32) {
        (self.name.clone(), self.ifindex)
    }

    /// Whether this is one end of a veth pair.
    #[must_use]
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
}

/// A failed rtnetlink operation.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// No socket.
    #[error("opening a route netlink socket: {0}")]
    Connect(io::Error),
    /// The named interface does not exist in this network namespace.
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    /// The kernel refused or the answer was unexpected.
    #[error("{what}: {source}")]
    Request {
        /// What was asked.
        what: String,
        /// Cause.
        source: rtnetlink::Error,
    },
}

/// An rtnetlink connection driven by a background task.
#[derive(Debug)]
pub struct Rtnl {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Rtnl {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

impl Rtnl {
    /// Opens the connection (inside a tokio runtime).
    pub fn connect() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        let task = tokio::spawn(conn);
        Ok(Self { handle, task })
    }

    /// Looks up interface `name` with its IPv4 addresses.
    pub async fn link(&self, name: &str) -> Result<Link, NetlinkError> {
        let msg = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await
            .map_err(|source| {
                if errno(&source) == Some(libc::ENODEV) {
                    NetlinkError::NoSuchInterface(name.to_owned())
                } else {
                    NetlinkError::Request {
                        what: format!("looking up interface {name}"),
                        source,
                    }
                }
            })?
            .ok_or_else(|| NetlinkError::NoSuchInterface(name.to_owned()))?;
        let mut link = Link {
            name: name.to_owned(),
            ifindex: msg.header.index,
            mtu: 0,
            kind: None,
            ipv4: Vec::new(),
            xdp_generic: false,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::Mtu(mtu) => link.mtu = mtu,
                LinkAttribute::Xdp(xdp) => {
                    link.xdp_generic = xdp
                        .iter()
                        .any(|x| matches!(x, LinkXdp::Attached(XdpAttached::SocketBuffer)));
                }
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.into_iter().find_map(|i| match i {
                        LinkInfo::Kind(kind) => Some(kind.to_string()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        link.ipv4 = self.ipv4_prefixes(link.ifindex, name).await?;
        Ok(link)
    }

    /// IPv4 addresses of interface `ifindex`.
    async fn ipv4_prefixes(
        &self,
        ifindex: u32,
        name: &str,
    ) -> Result<Vec<Ipv4Prefix>, NetlinkError> {
        let all = self
            .addresses(Some(ifindex), &format!("listing the addresses of {name}"))
            .await?;
        Ok(all.into_iter().map(|(_, p)| p).collect())
    }

    /// Every IPv4 address of every interface, with its interface index.
    pub async fn all_ipv4(&self) -> Result<Vec<(u32, Ipv4Prefix)>, NetlinkError> {
        self.addresses(None, "listing the gateway's IPv4 addresses")
            .await
    }

    async fn addresses(
        &self,
        ifindex: Option<u32>,
        what: &str,
    ) -> Result<Vec<(u32, Ipv4Prefix)>, NetlinkError> {
        let mut request = self.handle.address().get();
        if let Some(i) = ifindex {
            request = request.set_link_index_filter(i);
        }
        let mut stream = request.execute();
        let mut out = Vec::new();
        let err = |source| NetlinkError::Request {
            what: what.to_owned(),
            source,
        };
        while let Some(msg) = stream.try_next().await.map_err(err)? {
            if msg.header.family != AddressFamily::Inet
                || ifindex.is_some_and(|i| i != msg.header.index)
            {
                continue;
            }
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on
            // point-to-point links).
            let mut local = None;
            let mut address = None;
            for attr in msg.attributes {
                match attr {
                    AddressAttribute::Local(IpAddr::V4(a)) => local = Some(a),
                    AddressAttribute::Address(IpAddr::V4(a)) => address = Some(a),
                    _ => {}
                }
            }
            if let Some(p) = local
                .or(address)
                .and_then(|a| Ipv4Prefix::new(a, msg.header.prefix_len))
            {
                out.push((msg.header.index, p));
            }
        }
        Ok(out)
    }

    /// Deletes the `clsact` qdisc of `ifindex` (and every filter on it).
    pub async fn delete_clsact(&self, ifindex: u32, name: &str) -> Result<(), NetlinkError> {
        let mut req = self
            .handle
            .clone()
            .qdisc()
            .del(i32::try_from(ifindex).unwrap_or(i32::MAX));
        let msg = req.message_mut();
        msg.header.parent = TcHandle::CLSACT;
        msg.header.handle = TcHandle::from(0xffff_0000);
        msg.attributes.push(TcAttribute::Kind("clsact".to_owned()));
        req.execute().await.map_err(|source| NetlinkError::Request {
            what: format!("removing the clsact qdisc from {name}"),
            source,
        })
    }
}

/// IPv4 address changes (`RTM_NEWADDR` and `RTM_DELADDR` of the
/// `RTNLGRP_IPV4_IFADDR` group), as `ip monitor address` sees them.
#[derive(Debug)]
pub struct AddressWatch {
    messages: UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AddressWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AddressWatch {
    /// Subscribes (inside a tokio runtime).
    pub fn open() -> Result<Self, NetlinkError> {
        let (conn, _, messages) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv4Ifaddr])
                .map_err(NetlinkError::Connect)?;
        let task = tokio::spawn(conn);
        Ok(Self { messages, task })
    }

    /// Waits for the next IPv4 address added or removed; returns the index of its
    /// interface, or `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<u32> {
        loop {
            let (message, _) = self.messages.next().await?;
            if let NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a),
            ) = message.payload
            {
                if a.header.family == AddressFamily::Inet {
                    return Some(a.header.index);
                }
            }
        }
    }
}
