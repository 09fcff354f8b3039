//! Configuration the controller writes into the `CONFIG` and `IFACES` maps before the
//! programs see traffic. Policy (timeouts, garbage collection) stays in user space;
//! only what the data path decides per packet lives here.

/// Global data-path configuration: entry 0 of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// External (WAN) address that internal endpoints are translated to.
    pub ext_addr_be: u32,
    /// Interface index of the WAN interface.
    pub wan_ifindex: u32,
    /// Lowest external port the NAT may allocate (host order, inclusive).
    pub port_min: u16,
    /// Highest external port the NAT may allocate (host order, inclusive).
    pub port_max: u16,
    /// `CONFIG_F_*` bits.
    pub flags: u32,
    /// [`crate::maps::FilterMode`] of new UDP mappings.
    pub filter_udp: u8,
    /// [`crate::maps::FilterMode`] of new TCP mappings.
    pub filter_tcp: u8,
    /// [`crate::maps::FilterMode`] of new ICMP query mappings.
    pub filter_icmp: u8,
    /// Number of external addresses in the `EXT_ADDRS` pool (0 or 1: just
    /// `ext_addr_be`).
    pub ext_count: u8,
    /// Possible CPUs: the stride of each CPU's IP identification sequence
    /// (`IP_ID_NEXT`), so no two CPUs hand out the same identification (0 acts as 1).
    pub cpus: u32,
    /// Most external ports one internal host may hold per protocol (RFC 6888 REQ-4);
    /// 0: no limit.
    pub host_ports_max: u32,
    /// The size of each internal host's bucket of new mappings (RFC 6888 REQ-4c).
    pub host_rate_burst: u32,
    /// Nanoseconds a host's bucket takes to regain one new mapping; 0: no rate limit.
    pub host_rate_interval_ns: u64,
    /// How long a freed external port is kept from other internal hosts (RFC 6888
    /// REQ-8), ns; 0: no hold-down.
    pub port_hold_ns: u64,
    /// Deterministic port blocks (RFC 7422); off unless `blocks.space_len` is set.
    pub blocks: crate::blocks::BlockPlan,
}

/// Most external addresses natgw pools.
pub const MAX_EXTERNAL_ADDRS: u32 = 16;

/// The pool index of internal address `int_addr_be` among `count` external
/// addresses: a fixed hash, so one internal host always gets the same external
/// address ("paired" pooling, RFC 4787 REQ-2) for as long as the pool is unchanged.
#[inline(always)]
#[must_use]
pub const fn pool_index(int_addr_be: u32, count: u8) -> u32 {
    if count <= 1 {
        return 0;
    }
    let h = u32::from_be(int_addr_be).wrapping_mul(0x9e37_79b1);
    (h >> 16) % count as u32
}

/// The controller has filled the configuration; until then every program passes all
/// traffic untouched.
pub const CONFIG_F_READY: u32 = 1 << 0;
/// Inbound packets refresh a mapping's idle timer (RFC 4787 REQ-6a, optional).
pub const CONFIG_F_INBOUND_REFRESH: u32 = 1 << 1;
/// Someone watches mapping events (`natgw monitor`, the allocation log): the data
/// path writes a record of each mapping it creates into `MAPPING_EVENTS`. Off,
/// creating a mapping costs nothing more than this test.
pub const CONFIG_F_MAPPING_EVENTS: u32 = 1 << 2;

impl Config {
    /// The filter mode of new mappings of `proto`.
    #[must_use]
    pub const fn filter_for(&self, proto: u8) -> u8 {
        match proto {
            crate::IPPROTO_TCP => self.filter_tcp,
            crate::IPPROTO_ICMP => self.filter_icmp,
            _ => self.filter_udp,
        }
    }

    /// Whether new mappings are to be reported in `MAPPING_EVENTS`.
    #[must_use]
    pub const fn mapping_events(&self) -> bool {
        self.flags & CONFIG_F_MAPPING_EVENTS != 0
    }

    /// Whether the controller has finished configuring the data path.
    #[must_use]
    pub const fn is_ready(&self) -> bool {
        self.flags & CONFIG_F_READY != 0
    }

    /// Whether any per-host rule (port limit, rate limit) is on.
    #[must_use]
    pub const fn limits_hosts(&self) -> bool {
        self.host_ports_max != 0 || self.host_rate_interval_ns != 0
    }
}

/// What an interface is to the NAT.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfaceRole {
    /// Faces the internal hosts.
    Lan = 1,
    /// Faces the outside; carries the external address.
    Wan = 2,
}

/// Per-interface facts, keyed by ifindex in the `IFACES` hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceConfig {
    /// [`IfaceRole`] as its `u8` value.
    pub role: u8,
    /// 1 when a frame redirected into this interface with `XDP_REDIRECT` is delivered
    /// (the driver implements `ndo_xdp_xmit`; for a veth, its peer runs XDP or GRO).
    /// The controller keeps this current from the kernel's `xdp-features`.
    pub redirect_ok: u8,
    /// 1 when frames received here may carry a partial (pseudo-header only) L4
    /// checksum, as veth frames from local sockets do. XDP then recomputes the L4
    /// checksum in full before redirecting instead of updating it incrementally.
    pub rx_csum_partial: u8,
    /// 1 when XDP runs on this interface in generic (SKB) mode. A frame redirected
    /// from there keeps its socket buffer, partial-checksum state included, so the
    /// fast path's full checksum would be wrong for it: such frames, when
    /// `rx_csum_partial` is set too, take the kernel's path instead.
    pub rx_xdp_generic: u8,
}

impl IfaceConfig {
    /// Whether the interface faces the internal network.
    #[must_use]
    pub const fn is_lan(&self) -> bool {
        self.role == IfaceRole::Lan as u8
    }

    /// Whether the interface faces the outside.
    #[must_use]
    pub const fn is_wan(&self) -> bool {
        self.role == IfaceRole::Wan as u8
    }
}

#[cfg(test)]
mod tests {
    use super::pool_index;

    #[test]
    fn pooling_is_paired_and_spread() {
        // rfc4787 REQ-2: the same internal host always maps to the same index.
        let hosts: [u32; 4] = [0x0a00_0102, 0x0a00_0202, 0x0a00_0103, 0x0a00_0104];
        for h in hosts {
            let h = h.to_be();
            assert_eq!(pool_index(h, 2), pool_index(h, 2));
            assert!(pool_index(h, 3) < 3);
            assert_eq!(pool_index(h, 1), 0);
        }
        let used: std::collections::BTreeSet<u32> = (1..=200u32)
            .map(|i| pool_index((0x0a00_0100 + i).to_be(), 2))
            .collect();
        assert_eq!(used.len(), 2, "both addresses used");
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` structs of integers with explicit padding.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IfaceConfig {}
}
