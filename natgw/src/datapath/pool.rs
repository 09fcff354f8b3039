//! The external address pool (RFC 4787 REQ-2, "paired" pooling): which addresses of
//! the WAN interface internal hosts are translated to. The data path picks one per
//! internal host with `natgw_common::config::pool_index`, a fixed hash of the host's
//! address, so a host keeps its external address for as long as the pool is
//! unchanged; this module checks the pool asked for against the interfaces.
//!
//! With `--ha` the pool's addresses are virtual: keepalived moves them to the active
//! gateway, so on the standby they are absent from the WAN. They are accepted then,
//! and the data path translates to them whether they are present or not.

use std::net::Ipv4Addr;

use natgw_proto::prefix::{IfacePrefix, Ipv4Prefix};

/// A pool that cannot be used with these interfaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The WAN has no IPv4 address at all.
    #[error(
        "WAN interface {0} has no IPv4 address; natgw translates to the WAN's first IPv4 \
         address, add one with `ip addr add ADDRESS/LEN dev {0}`"
    )]
    WanHasNoAddress(String),
    /// An address asked for is not on the WAN.
    #[error(
        "external address {addr} is not configured on {wan}: add it with \
         `ip addr add {addr}/LEN dev {wan}` (natgw only translates to addresses the WAN \
         answers ARP for)"
    )]
    NotOnWan {
        /// The address.
        addr: Ipv4Addr,
        /// The WAN interface.
        wan: String,
    },
    /// An address asked for lies inside an internal network.
    #[error(
        "external address {addr} lies inside LAN prefix {lan} on {lan_iface}; RFC 4787 \
         REQ-7 requires the internal and external address spaces to be distinct"
    )]
    InsideLan {
        /// The address.
        addr: Ipv4Addr,
        /// The LAN network.
        lan: Ipv4Prefix,
        /// Its interface.
        lan_iface: String,
    },
}

/// The pool to use: `requested` (the settings' `external`) checked against the WAN's
/// addresses `wan_addrs` and the internal prefixes `lan`, or the WAN's first IPv4
/// address alone when nothing was requested. Returns each address with the WAN
/// prefix it belongs to; the first is the main external address. With `virtual_ok`
/// (`--ha`) an address absent from the WAN is accepted, with the prefix of the WAN
/// network it falls in (or as a /32): keepalived adds it when this gateway is the
/// active one.
///
/// # Errors
/// When the WAN has no IPv4 address, or an address is not configured on the WAN or
/// lies inside a LAN prefix. Count and duplicates are checked with the settings
/// (`config::validate`).
pub fn resolve(
    requested: &[Ipv4Addr],
    wan: &str,
    wan_addrs: &[Ipv4Prefix],
    lan: &[IfacePrefix],
    virtual_ok: bool,
) -> Result<Vec<Ipv4Prefix>, PoolError> {
    if requested.is_empty() {
        return wan_addrs
            .first()
            .map(|p| vec![*p])
            .ok_or_else(|| PoolError::WanHasNoAddress(wan.to_owned()));
    }
    requested
        .iter()
        .map(|addr| {
            let host = Ipv4Prefix::host(*addr);
            let on_wan = match wan_addrs.iter().find(|p| p.addr() == *addr) {
                Some(p) => *p,
                None if virtual_ok => wan_addrs
                    .iter()
                    .find(|p| p.contains(*addr))
                    .and_then(|p| Ipv4Prefix::new(*addr, p.len()))
                    .unwrap_or(host),
                None => {
                    return Err(PoolError::NotOnWan {
                        addr: *addr,
                        wan: wan.to_owned(),
                    })
                }
            };
            if let Some(l) = lan.iter().find(|l| l.prefix.overlaps(&host)) {
                return Err(PoolError::InsideLan {
                    addr: *addr,
                    lan: l.prefix.network_prefix(),
                    lan_iface: l.iface.clone(),
                });
            }
            Ok(on_wan)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Ipv4Prefix {
        s.parse().unwrap()
    }

    fn wan() -> Vec<Ipv4Prefix> {
        vec![p("192.0.2.1/24"), p("192.0.2.2/24"), p("198.18.0.7/32")]
    }

    fn lan() -> Vec<IfacePrefix> {
        vec![IfacePrefix {
            iface: "lan0".into(),
            prefix: p("10.0.1.1/24"),
        }]
    }

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn default_pool_is_the_wans_first_address() {
        assert_eq!(
            resolve(&[], "wan0", &wan(), &lan(), false).unwrap(),
            [p("192.0.2.1/24")]
        );
        let err = resolve(&[], "wan0", &[], &lan(), false).unwrap_err();
        assert!(
            err.to_string().contains("ip addr add ADDRESS/LEN dev wan0"),
            "{err}"
        );
    }

    #[test]
    fn requested_addresses_keep_their_order_and_prefix() {
        // rfc4787 REQ-2: the pool in the order given; the first is the main address.
        let pool = resolve(
            &[a("198.18.0.7"), a("192.0.2.2")],
            "wan0",
            &wan(),
            &lan(),
            false,
        )
        .unwrap();
        assert_eq!(pool, [p("198.18.0.7/32"), p("192.0.2.2/24")]);
    }

    #[test]
    fn an_address_not_on_the_wan_is_refused_with_the_fix() {
        let err = resolve(
            &[a("192.0.2.1"), a("192.0.2.9")],
            "wan0",
            &wan(),
            &lan(),
            false,
        )
        .unwrap_err();
        assert_eq!(
            err,
            PoolError::NotOnWan {
                addr: a("192.0.2.9"),
                wan: "wan0".into()
            }
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("external address 192.0.2.9 is not configured on wan0: add it with `ip addr add 192.0.2.9/LEN dev wan0`"),
            "{msg}"
        );
    }

    #[test]
    fn an_address_inside_a_lan_prefix_is_refused() {
        // rfc4787 REQ-7
        let wan = vec![p("192.0.2.1/24"), p("10.0.1.200/32")];
        let err = resolve(&[a("10.0.1.200")], "wan0", &wan, &lan(), false).unwrap_err();
        assert!(matches!(err, PoolError::InsideLan { ref lan_iface, .. } if lan_iface == "lan0"));
        assert!(err.to_string().contains("10.0.1.0/24 on lan0"), "{err}");
    }

    #[test]
    fn with_ha_a_virtual_address_may_be_absent_but_never_inside_a_lan() {
        // The standby starts before keepalived gives it the VIP.
        let pool = resolve(
            &[a("192.0.2.10"), a("198.51.100.9")],
            "wan0",
            &wan(),
            &lan(),
            true,
        )
        .unwrap();
        assert_eq!(pool, [p("192.0.2.10/24"), p("198.51.100.9/32")]);
        let wan = vec![p("192.0.2.1/24")];
        let err = resolve(&[a("10.0.1.200")], "wan0", &wan, &lan(), true).unwrap_err();
        assert!(matches!(err, PoolError::InsideLan { .. }), "{err}");
    }
}
