//! Offload settings of the testbed's interfaces, and what they decide for natgw: whether
//! the gateway's veths accept XDP redirects.
//!
//! A frame that XDP redirects into a veth is delivered only when the veth's *peer* has
//! an XDP program attached or GRO turned on (the kernel then advertises
//! `NETDEV_XDP_ACT_NDO_XMIT` on the veth, which natgw reads as its interface's
//! `redirect_ok`). The testbed starts with GRO off everywhere, as veths are created,
//! so every packet natgw translates takes the kernel's path (TC) and counts
//! `pass_no_redirect` first; [`Testbed::accept_redirects`] turns GRO on at the far ends
//! of the gateway's veths — lan-a's and lan-b's `eth0`, the inet router's `gw0` — so
//! the same traffic can take natgw's XDP fast path.
//!
//! GRO is switched with the `SIOCETHTOOL` ioctl's legacy `ETHTOOL_SGRO` / `ETHTOOL_GGRO`
//! commands (`linux/ethtool.h`), which every kernel since 2.6.30 still serves: a
//! 16-byte request, where the ETHTOOL netlink family would need a generic-netlink
//! client that no maintained crate offers for setting features (the `ethtool` crate
//! only reads them), and the `ethtool` binary would be one more package to install.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::topology::{Testbed, GW_LAN_IFS, GW_WAN_IF, HOST_IF, INET_GW_IF};

/// `SIOCETHTOOL` from `linux/sockios.h`: the ethtool ioctl.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// `ETHTOOL_GGRO` from `linux/ethtool.h`: read the GRO flag.
const ETHTOOL_GGRO: u32 = 0x0000_002b;
/// `ETHTOOL_SGRO` from `linux/ethtool.h`: set the GRO flag.
const ETHTOOL_SGRO: u32 = 0x0000_002c;

/// `struct ethtool_value` from `linux/ethtool.h`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// One veth of the gateway and its peer, the end whose GRO decides whether the
/// gateway's end accepts XDP redirects.
#[derive(Debug, Clone, Copy)]
pub struct RedirectPeer<'a> {
    /// The gateway's interface (`lan0`, `lan1`, `wan0`).
    pub gateway_if: &'static str,
    /// The namespace of its peer (lan-a, lan-b, inet).
    pub peer_ns: &'a Netns,
    /// The peer's interface (`eth0`, `gw0`).
    pub peer_if: &'static str,
}

impl Testbed {
    /// The gateway's veths with their peers: `lan0` ↔ lan-a `eth0`, `lan1` ↔ lan-b
    /// `eth0`, `wan0` ↔ inet `gw0`.
    #[must_use]
    pub fn redirect_peers(&self) -> Vec<RedirectPeer<'_>> {
        let lan = self
            .lan
            .iter()
            .zip(GW_LAN_IFS)
            .map(|(host, gateway_if)| RedirectPeer {
                gateway_if,
                peer_ns: &host.ns,
                peer_if: HOST_IF,
            });
        lan.chain(std::iter::once(RedirectPeer {
            gateway_if: GW_WAN_IF,
            peer_ns: &self.inet,
            peer_if: INET_GW_IF,
        }))
        .collect()
    }

    /// Makes every interface of the gateway accept XDP redirects: turns GRO on at the
    /// peer end of each of its veths ([`Testbed::redirect_peers`]). A natgw running on
    /// the gateway notices within its interface check (every `--gc-interval`) and from
    /// then on translates in XDP what its fast path can take.
    ///
    /// # Errors
    /// When a namespace cannot be entered or the kernel refuses the setting.
    pub fn accept_redirects(&self) -> Result<()> {
        for peer in self.redirect_peers() {
            set_gro(peer.peer_ns, peer.peer_if, true)?;
        }
        Ok(())
    }

    /// Undoes [`Testbed::accept_redirects`]: GRO off at every peer end, so redirects
    /// into the gateway's interfaces would be lost and natgw leaves its packets to the
    /// kernel's path again.
    ///
    /// # Errors
    /// As [`Testbed::accept_redirects`].
    pub fn refuse_redirects(&self) -> Result<()> {
        for peer in self.redirect_peers() {
            set_gro(peer.peer_ns, peer.peer_if, false)?;
        }
        Ok(())
    }
}

/// Turns GRO on or off for `ifname` in `ns`.
///
/// # Errors
/// When the namespace cannot be entered, there is no such interface, or the kernel
/// refuses (`EOPNOTSUPP`: the device cannot do GRO).
pub fn set_gro(ns: &Netns, ifname: &str, on: bool) -> Result<()> {
    let what = || {
        format!(
            "turning GRO {} for {ifname} in {}",
            if on { "on" } else { "off" },
            ns.name()
        )
    };
    ns.try_run(|| ethtool_value(ifname, ETHTOOL_SGRO, u32::from(on)))?
        .map(drop)
        .map_err(|e| Error::os(what(), e))
}

/// Whether GRO is on for `ifname` in `ns`.
///
/// # Errors
/// When the namespace cannot be entered or there is no such interface.
pub fn gro(ns: &Netns, ifname: &str) -> Result<bool> {
    ns.try_run(|| ethtool_value(ifname, ETHTOOL_GGRO, 0))?
        .map(|data| data != 0)
        .map_err(|e| Error::os(format!("reading GRO of {ifname} in {}", ns.name()), e))
}

/// Runs the ethtool command `cmd` with `data` on `ifname` in the calling thread's
/// namespace and returns the `data` the kernel left (the flag, for a get).
fn ethtool_value(ifname: &str, cmd: u32, data: u32) -> io::Result<u32> {
    // SAFETY: an all-zero `ifreq` is a valid value (a C struct of integers and a union).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name must leave room for its NUL terminator.
    if ifname.is_empty() || ifname.len() >= ifr.ifr_name.len() || ifname.contains('\0') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    let mut value = EthtoolValue { cmd, data };
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: socket(2) with constant arguments; the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifr` names the interface and points at `value`, both alive for the call;
    // SIOCETHTOOL reads and writes no more than `struct ethtool_value` for these commands.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &raw mut ifr) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_that_do_not_fit_an_ifreq_are_refused() {
        for bad in ["", "a-name-of-16-chr", "nul\0inside"] {
            let e = ethtool_value(bad, ETHTOOL_GGRO, 0).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        }
    }

    #[test]
    fn the_request_has_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<EthtoolValue>(), 8);
    }
}
