//! IPv4 prefixes as interfaces carry them (`10.0.1.1/24`), and the check that the
//! internal and external address spaces do not overlap (RFC 4787 REQ-7).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An interface address with its prefix length: `addr` is the host address as
/// configured, [`Ipv4Prefix::network`] the network it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

/// A prefix that does not parse or has a length above 32.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 prefix `{0}`: expected ADDRESS/LENGTH such as 10.0.1.1/24")]
pub struct PrefixError(String);

impl Ipv4Prefix {
    /// `addr/len`; `None` when `len` exceeds 32.
    #[must_use]
    pub const fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 32 {
            None
        } else {
            Some(Self { addr, len })
        }
    }

    /// The address as configured on the interface.
    #[must_use]
    pub const fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Prefix length in bits.
    #[must_use]
    #[allow(clippy::len_without_is_empty)] // a length in bits; no prefix is "empty"
    pub const fn len(&self) -> u8 {
        self.len
    }

    /// The network address (host bits cleared).
    #[must_use]
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & mask(self.len))
    }

    /// The network as a prefix (`10.0.1.0/24`).
    #[must_use]
    pub fn network_prefix(&self) -> Self {
        Self {
            addr: self.network(),
            len: self.len,
        }
    }

    /// The last address of the network (all host bits set).
    #[must_use]
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.len))
    }

    /// Whether `addr` lies inside the network.
    #[must_use]
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let m = mask(self.len);
        u32::from(addr) & m == u32::from(self.addr) & m
    }

    /// Whether the network has a network and a broadcast address that no host may
    /// use: every prefix up to /30 (RFC 3021 gives both addresses of a /31 to hosts).
    #[must_use]
    pub const fn has_network_and_broadcast(&self) -> bool {
        self.len <= 30
    }

    /// The prefix of the single address `addr` (`/32`).
    #[must_use]
    pub const fn host(addr: Ipv4Addr) -> Self {
        Self { addr, len: 32 }
    }

    /// Whether the two prefixes share at least one address.
    #[must_use]
    pub fn overlaps(&self, other: &Self) -> bool {
        let m = mask(self.len.min(other.len));
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }
}

/// Netmask of a prefix length (0..=32).
const fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PrefixError(s.to_owned());
        let (addr, len) = s.split_once('/').ok_or_else(err)?;
        let addr = addr.parse().map_err(|_| err())?;
        let len = len.parse().map_err(|_| err())?;
        Self::new(addr, len).ok_or_else(err)
    }
}

impl Serialize for Ipv4Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A prefix and the interface it was found on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfacePrefix {
    /// Interface name.
    pub iface: String,
    /// Prefix configured on it.
    pub prefix: Ipv4Prefix,
}

/// Internal and external address spaces overlap: an inbound packet could not be told
/// apart from an internal one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "LAN prefix {lan} on {lan_iface} overlaps WAN prefix {wan} on {wan_iface}; \
     RFC 4787 REQ-7 requires the internal and external address spaces to be distinct, \
     so renumber one of them"
)]
pub struct OverlapError {
    /// The LAN network.
    pub lan: Ipv4Prefix,
    /// Its interface.
    pub lan_iface: String,
    /// The WAN network.
    pub wan: Ipv4Prefix,
    /// Its interface.
    pub wan_iface: String,
}

/// Refuses LAN prefixes that overlap any WAN prefix (RFC 4787 REQ-7).
pub fn check_no_overlap(lan: &[IfacePrefix], wan: &[IfacePrefix]) -> Result<(), OverlapError> {
    for l in lan {
        for w in wan {
            if l.prefix.overlaps(&w.prefix) {
                return Err(OverlapError {
                    lan: l.prefix.network_prefix(),
                    lan_iface: l.iface.clone(),
                    wan: w.prefix.network_prefix(),
                    wan_iface: w.iface.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Ipv4Prefix {
        s.parse().unwrap()
    }

    fn on(iface: &str, s: &str) -> IfacePrefix {
        IfacePrefix {
            iface: iface.into(),
            prefix: p(s),
        }
    }

    #[test]
    fn network_clears_host_bits() {
        assert_eq!(p("10.0.1.77/24").network(), Ipv4Addr::new(10, 0, 1, 0));
        assert_eq!(p("10.0.1.77/32").network(), Ipv4Addr::new(10, 0, 1, 77));
        assert_eq!(p("10.0.1.77/0").network(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            p("192.0.2.1/24").network_prefix().to_string(),
            "192.0.2.0/24"
        );
    }

    #[test]
    fn overlaps_is_symmetric_and_exact() {
        assert!(p("10.0.0.1/16").overlaps(&p("10.0.5.1/24")));
        assert!(p("10.0.5.1/24").overlaps(&p("10.0.0.1/16")));
        assert!(!p("10.0.1.1/24").overlaps(&p("10.0.2.1/24")));
        assert!(p("0.0.0.0/0").overlaps(&p("192.0.2.1/32")));
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!("10.0.0.1".parse::<Ipv4Prefix>().is_err());
        assert!("10.0.0.1/33".parse::<Ipv4Prefix>().is_err());
        assert!("10.0.0/8".parse::<Ipv4Prefix>().is_err());
        assert_eq!(p("10.0.0.1/8").len(), 8);
    }

    #[test]
    fn lan_overlapping_wan_is_refused_naming_both() {
        // rfc4787 REQ-7
        let err = check_no_overlap(
            &[on("lan0", "10.0.1.1/24"), on("lan1", "192.0.2.129/25")],
            &[on("wan0", "192.0.2.1/24")],
        )
        .unwrap_err();
        assert_eq!(err.lan, p("192.0.2.128/25"));
        assert_eq!(err.wan, p("192.0.2.0/24"));
        let msg = err.to_string();
        assert!(msg.contains("192.0.2.128/25 on lan1"), "{msg}");
        assert!(msg.contains("192.0.2.0/24 on wan0"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn distinct_spaces_pass() {
        check_no_overlap(
            &[on("lan0", "10.0.1.1/24"), on("lan1", "10.0.2.1/24")],
            &[on("wan0", "192.0.2.1/24"), on("wan0", "198.51.100.1/24")],
        )
        .unwrap();
    }

    #[test]
    fn serde_uses_the_text_form() {
        let json = serde_json::to_string(&p("10.0.1.1/24")).unwrap();
        assert_eq!(json, "\"10.0.1.1/24\"");
        assert_eq!(
            serde_json::from_str::<Ipv4Prefix>(&json).unwrap(),
            p("10.0.1.1/24")
        );
    }
}
