//! Keys and values of the NAT tables and the names the maps are pinned under.
//!
//! A mapping is two entries: `NAT_FWD` (protocol, internal endpoint) -> external
//! endpoint, used by outbound packets, and `NAT_REV` (protocol, external endpoint) ->
//! internal endpoint, used by inbound packets. The reverse entry is the port claim:
//! it is inserted first with `BPF_NOEXIST`, so two CPUs can never hand out the same
//! external port. Each direction keeps its own statistics in its own entry so a
//! packet touches exactly one entry.

/// Directory under bpffs where the controller pins the maps.
pub const PIN_DIR: &str = "/sys/fs/bpf/natgw";

/// Map names (the symbol names in the eBPF object, and the pinned file names).
pub mod names {
    /// Forward table: [`super::FwdKey`] -> [`super::Mapping`].
    pub const NAT_FWD: &str = "NAT_FWD";
    /// Reverse table: [`super::RevKey`] -> [`super::RevValue`].
    pub const NAT_REV: &str = "NAT_REV";
    /// `Array<Config>` with one entry.
    pub const CONFIG: &str = "CONFIG";
    /// `HashMap<u32 ifindex, IfaceConfig>`.
    pub const IFACES: &str = "IFACES";
    /// `LpmTrie<u32, u32>`: internal prefixes whose sources are translated.
    pub const LAN_NETS: &str = "LAN_NETS";
    /// `PerCpuArray<u64>` indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
}

/// Default capacity of each NAT table (entries); the controller may change it.
pub const DEFAULT_MAX_MAPPINGS: u32 = 65_536;

/// Who created a mapping.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An outbound packet.
    Traffic = 0,
    /// A PCP MAP or PEER request.
    Pcp = 1,
    /// A NAT-PMP request.
    NatPmp = 2,
    /// A static forward from the configuration.
    Static = 3,
}

impl Origin {
    /// Decodes the `origin` byte of a [`Mapping`].
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Traffic),
            1 => Some(Self::Pcp),
            2 => Some(Self::NatPmp),
            3 => Some(Self::Static),
            _ => None,
        }
    }

    /// Lower-case name for listings.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Traffic => "traffic",
            Self::Pcp => "pcp",
            Self::NatPmp => "nat-pmp",
            Self::Static => "static",
        }
    }
}

/// TCP flag bits remembered per direction (`Mapping::tcp_flags_out`,
/// `RevValue::tcp_flags_in`); the controller derives the idle timeout from them.
pub mod tcp_seen {
    /// A FIN was seen.
    pub const FIN: u8 = 0x01;
    /// A SYN was seen.
    pub const SYN: u8 = 0x02;
    /// A RST was seen.
    pub const RST: u8 = 0x04;
    /// An ACK was seen.
    pub const ACK: u8 = 0x10;
}

/// Key of `NAT_FWD`: the internal endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FwdKey {
    /// Internal address.
    pub addr_be: u32,
    /// Internal port.
    pub port_be: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
}

/// Key of `NAT_REV`: the external endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RevKey {
    /// External address.
    pub addr_be: u32,
    /// External port.
    pub port_be: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
}

/// Value of `NAT_FWD`: where an internal endpoint is translated to, plus outbound
/// statistics. Written by the data path; the controller only reads and deletes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// External address.
    pub ext_addr_be: u32,
    /// External port.
    pub ext_port_be: u16,
    /// [`Origin`] as its `u8` value.
    pub origin: u8,
    /// [`tcp_seen`] bits of outbound segments.
    pub tcp_flags_out: u8,
    /// `CLOCK_MONOTONIC` time of creation (ns); also the mapping's identity, copied
    /// into the reverse entry so a stale reverse entry is never mistaken for a live one.
    pub created_ns: u64,
    /// `CLOCK_MONOTONIC` time of the last outbound packet (ns).
    pub last_out_ns: u64,
    /// Outbound packets translated.
    pub packets_out: u64,
    /// Outbound bytes translated (IP length).
    pub bytes_out: u64,
}

/// Value of `NAT_REV`: the internal endpoint an external one belongs to, plus inbound
/// statistics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevValue {
    /// Internal address.
    pub int_addr_be: u32,
    /// Internal port.
    pub int_port_be: u16,
    /// [`tcp_seen`] bits of inbound segments.
    pub tcp_flags_in: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// `created_ns` of the forward entry this claim belongs to.
    pub created_ns: u64,
    /// `CLOCK_MONOTONIC` time of the last inbound packet (ns), 0 if none yet.
    pub last_in_ns: u64,
    /// Inbound packets translated.
    pub packets_in: u64,
    /// Inbound bytes translated (IP length).
    pub bytes_in: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` structs of integers with explicit padding.
    unsafe impl aya::Pod for super::FwdKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RevKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Mapping {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RevValue {}
}

#[cfg(test)]
mod tests {
    use super::{FwdKey, Mapping, RevKey, RevValue};
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<FwdKey>(), 8);
        assert_eq!(size_of::<RevKey>(), 8);
        assert_eq!(size_of::<Mapping>(), 40);
        assert_eq!(size_of::<RevValue>(), 40);
    }
}
