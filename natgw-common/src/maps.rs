//! Keys and values of the NAT tables and the names the maps are pinned under.
//!
//! A mapping is two entries: `NAT_FWD` (protocol, internal endpoint) -> external
//! endpoint, used by outbound packets, and `NAT_REV` (protocol, external endpoint) ->
//! internal endpoint, used by inbound packets. The reverse entry is the port claim:
//! it is inserted first with `BPF_NOEXIST`, so two CPUs can never hand out the same
//! external port. Each direction keeps its own statistics in its own entry so a
//! packet touches exactly one entry.

use crate::time::NS_PER_SEC;

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
    /// `LpmTrie<u32, u32>`: what each address is to the gateway, as
    /// [`super::addr_class`] bits (internal, the gateway's own, martian, ...).
    pub const ADDR_CLASS: &str = "ADDR_CLASS";
    /// `LpmTrie<LanSourceKey, u32>`: which sources each LAN interface may carry, as
    /// [`super::lan_source`] verdicts.
    pub const LAN_SOURCES: &str = "LAN_SOURCES";
    /// `PerCpuArray<u64>` indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Sessions: [`super::SessionKey`] -> [`super::Session`].
    pub const NAT_SESSIONS: &str = "NAT_SESSIONS";
    /// Held unsolicited SYNs: [`super::SessionKey`] -> [`super::HeldSyn`].
    pub const HELD_SYNS: &str = "HELD_SYNS";
    /// Ring buffer of [`super::Event`]s for the controller.
    pub const EVENTS: &str = "EVENTS";
    /// Ring buffer of [`super::MappingEvent`]s (mappings the data path created) for
    /// `natgw monitor`. Not pinned: each controller reads the one its programs write.
    pub const MAPPING_EVENTS: &str = "MAPPING_EVENTS";
    /// Fragmented datagrams to an external address: [`super::FragKey`] ->
    /// [`super::FragValue`].
    pub const FRAGS_IN: &str = "FRAGS_IN";
    /// Outbound fragmented datagrams: [`super::FragOutKey`] -> [`super::FragOutValue`].
    pub const FRAGS_OUT: &str = "FRAGS_OUT";
    /// `Array<FragBudget>`: each source's budget of incomplete fragmented datagrams.
    pub const FRAG_BUDGET: &str = "FRAG_BUDGET";
    /// Early later-fragments waiting for their first fragment:
    /// [`super::StashKey`] -> [`super::StashedFragment`].
    pub const FRAG_STASH: &str = "FRAG_STASH";
    /// PCP FILTER entries: `LpmTrie<PcpFilterKey, u32 remote port (0: any)>`.
    pub const PCP_FILTERS: &str = "PCP_FILTERS";
    /// `Array<u32>`: the external address pool, by index.
    pub const EXT_ADDRS: &str = "EXT_ADDRS";
    /// `HashMap<u32 address, u32 index>`: membership of the external address pool.
    pub const EXT_SET: &str = "EXT_SET";
    /// Internal host (address) -> [`crate::limits::HostState`], written by the data
    /// path.
    pub const HOST_STATE: &str = "HOST_STATE";
    /// Internal host (address) -> [`crate::limits::HostReleased`], written by the
    /// controller.
    pub const HOST_RELEASED: &str = "HOST_RELEASED";
    /// `PerCpuArray<u32>`: each CPU's next IP identification.
    pub const IP_ID_NEXT: &str = "IP_ID_NEXT";

    /// Every map that is pinned and that a restarted (or upgraded) natgw adopts:
    /// all the state the programs share, so that old and new programs work on the
    /// same tables while one replaces the other. Only per-CPU scratch space is not.
    pub const PINNED: [&str; 20] = [
        NAT_FWD,
        NAT_REV,
        NAT_SESSIONS,
        HELD_SYNS,
        CONFIG,
        IFACES,
        ADDR_CLASS,
        LAN_SOURCES,
        COUNTERS,
        EVENTS,
        FRAGS_IN,
        FRAGS_OUT,
        FRAG_BUDGET,
        FRAG_STASH,
        PCP_FILTERS,
        EXT_ADDRS,
        EXT_SET,
        IP_ID_NEXT,
        HOST_STATE,
        HOST_RELEASED,
    ];
}

/// Version of what the pinned maps mean. The map definitions (type, key and value
/// sizes, capacity) are compared one by one when a natgw adopts the maps of the one
/// before it; this number covers what sizes cannot show, such as fields that moved
/// or changed meaning. Raise it with any such change: natgw then refuses to adopt
/// maps of the old meaning instead of misreading them.
pub const LAYOUT_VERSION: u32 = 1;

/// Inbound fragmented datagrams remembered at once (RFC 4787 REQ-14a: bounded, so a
/// fragment flood cannot take memory from anything else; the oldest are replaced).
pub const MAX_FRAGS_IN: u32 = 4096;

/// Outbound fragmented datagrams remembered at once (their new IP identification).
pub const MAX_FRAGS_OUT: u32 = 4096;

/// Buckets of [`FragBudget`] per direction: sources are hashed into them, so a flood
/// from one source (or a few) only spends its own bucket (RFC 4787 REQ-14a).
pub const FRAG_BUDGET_BUCKETS: u32 = 1024;
/// Incomplete fragmented datagrams one bucket may have in flight at once.
pub const FRAG_BUDGET_BURST: u32 = 128;
/// Datagrams per second a bucket regains, for datagrams whose last fragment never
/// passed (lost, or out of order through the stash).
pub const FRAG_BUDGET_REFILL_PER_SEC: u64 = 128;

/// Index of `addr_be`'s bucket in `FRAG_BUDGET`: inbound datagrams by remote source
/// in the first [`FRAG_BUDGET_BUCKETS`], outbound ones by internal source in the
/// second.
#[inline(always)]
#[must_use]
pub const fn frag_budget_bucket(addr_be: u32, outbound: bool) -> u32 {
    let h = u32::from_be(addr_be).wrapping_mul(0x9e37_79b1) >> 22;
    if outbound {
        h + FRAG_BUDGET_BUCKETS
    } else {
        h
    }
}

/// Value of `FRAG_BUDGET`: a token bucket of fragmented datagrams. A datagram's
/// first fragment (inbound), or its first fragment seen (outbound), takes a token;
/// its last fragment gives it back, so complete datagrams cost nothing and only
/// incomplete ones (a flood) drain the bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragBudget {
    /// Tokens spent and not yet regained.
    pub spent: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// When `spent` last shrank by the refill (ns).
    pub refilled_ns: u64,
}

impl FragBudget {
    /// A budget with `spent` tokens spent, last refilled at `refilled_ns`.
    #[inline(always)]
    #[must_use]
    pub const fn new(spent: u32, refilled_ns: u64) -> Self {
        Self {
            spent,
            _pad: 0,
            refilled_ns,
        }
    }

    /// The budget at `now_ns` after the time-based refill.
    #[inline(always)]
    #[must_use]
    pub const fn refilled(self, now_ns: u64) -> Self {
        let elapsed = now_ns.saturating_sub(self.refilled_ns);
        let regained = elapsed / (NS_PER_SEC / FRAG_BUDGET_REFILL_PER_SEC);
        if regained == 0 {
            return self;
        }
        let spent = if regained >= self.spent as u64 {
            0
        } else {
            self.spent - regained as u32
        };
        Self::new(spent, now_ns)
    }

    /// Takes a token at `now_ns`; `None` when the bucket is empty.
    #[inline(always)]
    #[must_use]
    pub const fn take(self, now_ns: u64) -> Option<Self> {
        let b = self.refilled(now_ns);
        if b.spent >= FRAG_BUDGET_BURST {
            return None;
        }
        Some(Self {
            spent: b.spent + 1,
            ..b
        })
    }

    /// Gives a token back (a datagram's last fragment passed).
    #[inline(always)]
    #[must_use]
    pub const fn give_back(self) -> Self {
        Self {
            spent: self.spent.saturating_sub(1),
            ..self
        }
    }
}

/// Key of `FRAGS_OUT`: one outbound datagram as the internal host sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragOutKey {
    /// Internal (source) address.
    pub int_addr_be: u32,
    /// Remote (destination) address.
    pub remote_addr_be: u32,
    /// IP identification the internal host chose.
    pub ip_id_be: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Explicit padding.
    pub _pad: u8,
}

impl FragOutKey {
    /// The key of the datagram `ip_id_be` of `proto` from `int_addr_be` to
    /// `remote_addr_be`.
    #[inline(always)]
    #[must_use]
    pub const fn new(int_addr_be: u32, remote_addr_be: u32, ip_id_be: u16, proto: u8) -> Self {
        Self {
            int_addr_be,
            remote_addr_be,
            ip_id_be,
            proto,
            _pad: 0,
        }
    }
}

/// Value of `FRAGS_OUT`: the identification the datagram leaves with. Hosts choose
/// identifications independently, so two of them may send fragments with the same
/// one to the same destination; after translation they would share the external
/// address too and be reassembled together. Every fragment of a datagram gets the
/// same new identification, from a sequence unique to the gateway (RFC 6864 §5.3.1,
/// as RFC 7857 §2.3 asks of NAT44).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragOutValue {
    /// Identification on the wire (network order).
    pub new_id_be: u16,
    /// Explicit padding.
    pub _pad: [u8; 6],
    /// When the first fragment seen was translated (ns).
    pub seen_ns: u64,
}

impl FragOutValue {
    /// The identification `new_id_be`, chosen at `seen_ns`.
    #[inline(always)]
    #[must_use]
    pub const fn new(new_id_be: u16, seen_ns: u64) -> Self {
        Self {
            new_id_be,
            _pad: [0; 6],
            seen_ns,
        }
    }
}

/// PCP FILTER entries natgw keeps (RFC 6887 lets a server limit them).
pub const MAX_PCP_FILTERS: u32 = 4096;

/// Bits of a [`PcpFilterKey`] before the remote address: the mapping part always
/// matches exactly, the remote address by the filter's prefix length.
pub const PCP_FILTER_FIXED_BITS: u32 = 64;

/// Key data of `PCP_FILTERS` (an LPM trie: the prefix length is
/// [`PCP_FILTER_FIXED_BITS`] plus the filter's remote prefix length).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PcpFilterKey {
    /// External address of the mapping.
    pub ext_addr_be: u32,
    /// External port of the mapping.
    pub ext_port_be: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
    /// Remote address (prefix).
    pub remote_addr_be: u32,
}

impl PcpFilterKey {
    /// The key of a filter of mapping `ext_addr_be`:`ext_port_be` (`proto`) admitting
    /// `remote_addr_be` (the prefix length goes beside it, in the LPM key).
    #[inline(always)]
    #[must_use]
    pub const fn new(ext_addr_be: u32, ext_port_be: u16, proto: u8, remote_addr_be: u32) -> Self {
        Self {
            ext_addr_be,
            ext_port_be,
            proto,
            _pad: 0,
            remote_addr_be,
        }
    }
}

/// What an address is to the gateway: bits of the `ADDR_CLASS` value (longest
/// prefix match, so a `/32` entry inside an internal prefix carries both bits).
///
/// The data path translates sources with [`INTERNAL`](addr_class::INTERNAL) and
/// drops WAN packets whose source has any bit of
/// [`NEVER_FROM_WAN`](addr_class::NEVER_FROM_WAN): an internal host, the gateway
/// itself, a martian or a network/broadcast address can only be spoofed there.
pub mod addr_class {
    /// Inside an internal (LAN) prefix: sources are translated.
    pub const INTERNAL: u32 = 1;
    /// An address of the gateway itself (any interface).
    pub const OWN: u32 = 2;
    /// Never a valid source on any network (RFC 1122 §3.2.1.3, RFC 5735): this
    /// network 0/8, loopback 127/8, multicast 224/4 and reserved 240/4, which holds
    /// the limited broadcast address.
    pub const MARTIAN: u32 = 4;
    /// The network or broadcast address of a prefix the gateway is attached to.
    pub const NOT_HOST: u32 = 8;
    /// Sources a packet arriving on the WAN can only have if it was spoofed.
    pub const NEVER_FROM_WAN: u32 = INTERNAL | OWN | MARTIAN | NOT_HOST;
}

/// Entries of `ADDR_CLASS`: the LAN prefixes, their network, broadcast and own
/// addresses, the gateway's other addresses and the martian ranges.
pub const MAX_ADDR_CLASS: u32 = 1024;

/// Verdicts of `LAN_SOURCES` (longest prefix match on [`LanSourceKey`]): only
/// [`HOST`](lan_source::HOST) is a source a LAN interface may carry; a miss (an
/// address outside the interface's prefixes) is spoofed too.
pub mod lan_source {
    /// A host address of one of the interface's prefixes.
    pub const HOST: u32 = 1;
    /// An address of the gateway itself inside the prefix.
    pub const OWN: u32 = 2;
    /// The prefix's network or broadcast address.
    pub const NOT_HOST: u32 = 3;
}

/// Entries of `LAN_SOURCES`: per LAN interface its prefixes and the `/32`
/// exceptions inside them.
pub const MAX_LAN_SOURCES: u32 = 1024;

/// Bits of a [`LanSourceKey`] before the address: the interface always matches
/// exactly, the address by prefix length.
pub const LAN_SOURCE_FIXED_BITS: u32 = 32;

/// Key data of `LAN_SOURCES` (an LPM trie: the prefix length is
/// [`LAN_SOURCE_FIXED_BITS`] plus the address prefix length).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LanSourceKey {
    /// Interface index the packet arrived on (host order; only ever matched whole).
    pub ifindex: u32,
    /// Source address (prefix), wire octets.
    pub addr_be: u32,
}

impl LanSourceKey {
    /// The key of `addr_be` on `ifindex`.
    #[must_use]
    pub const fn new(ifindex: u32, addr_be: u32) -> Self {
        Self { ifindex, addr_be }
    }
}

/// Whether a packet from `src` to `dst` is one of the few a host may send before it
/// has an address (RFC 2131 DHCP from 0.0.0.0, RFC 3376 §4.2.13 IGMP reports): from
/// 0.0.0.0 to the limited broadcast address or to link-local multicast (224.0.0.0/24).
/// Such packets are the gateway's own business, never translated nor forwarded.
#[must_use]
pub const fn unaddressed_local(src: [u8; 4], dst: [u8; 4]) -> bool {
    let src_zero = src[0] == 0 && src[1] == 0 && src[2] == 0 && src[3] == 0;
    let limited_broadcast = dst[0] == 255 && dst[1] == 255 && dst[2] == 255 && dst[3] == 255;
    let link_local_multicast = dst[0] == 224 && dst[1] == 0 && dst[2] == 0;
    src_zero && (limited_broadcast || link_local_multicast)
}

/// Out-of-order later fragments held at once until their first fragment arrives.
pub const MAX_STASHED_FRAGMENTS: u32 = 256;
/// Largest fragment (whole IPv4 packet) that can be stashed: a power of two, so
/// the data path can bound the copy length with a mask the verifier understands.
pub const MAX_STASHED_FRAGMENT_LEN: usize = 2048;

/// Key of `FRAG_STASH`: one fragment of one datagram to an external address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StashKey {
    /// The datagram.
    pub datagram: FragKey,
    /// Fragment offset field (host order, in 8-byte units).
    pub offset: u16,
    /// Explicit padding.
    pub _pad: u16,
}

impl StashKey {
    /// The key of the fragment at `offset` (8-byte units) of `datagram`.
    #[inline(always)]
    #[must_use]
    pub const fn new(datagram: FragKey, offset: u16) -> Self {
        Self {
            datagram,
            offset,
            _pad: 0,
        }
    }
}

/// Value of `FRAG_STASH`: a later fragment that arrived before its datagram's first
/// fragment (RFC 4787 REQ-14). The controller sends it on as its [`FragFate`] says
/// once the first fragment has been seen (`FRAGS_IN` has the datagram), or drops it
/// after the reassembly timeout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StashedFragment {
    /// When it arrived (ns).
    pub seen_ns: u64,
    /// Bytes used in `packet`.
    pub len: u16,
    /// Explicit padding.
    pub _pad: [u8; 6],
    /// The IPv4 packet, as received.
    pub packet: [u8; MAX_STASHED_FRAGMENT_LEN],
}

impl StashedFragment {
    /// A fragment that arrived at `seen_ns`, its `len` bytes first in `packet`.
    #[must_use]
    pub const fn new(seen_ns: u64, len: u16, packet: [u8; MAX_STASHED_FRAGMENT_LEN]) -> Self {
        Self {
            seen_ns,
            len,
            _pad: [0; 6],
            packet,
        }
    }
}

/// Key of `FRAGS_IN`: one datagram addressed to an external address, from the WAN
/// or from an internal host (hairpinned, or for the gateway itself). RFC 791
/// identifies it by source, destination, protocol and identification; the two kinds
/// never share a key, as no source from the WAN is internal.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address: a remote host, or an internal one.
    pub remote_addr_be: u32,
    /// External (destination) address.
    pub ext_addr_be: u32,
    /// IP identification.
    pub ip_id_be: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Explicit padding.
    pub _pad: u8,
}

impl FragKey {
    /// The key of the datagram `ip_id_be` of `proto` from `remote_addr_be` to
    /// `ext_addr_be`.
    #[inline(always)]
    #[must_use]
    pub const fn new(remote_addr_be: u32, ext_addr_be: u32, ip_id_be: u16, proto: u8) -> Self {
        Self {
            remote_addr_be,
            ext_addr_be,
            ip_id_be,
            proto,
            _pad: 0,
        }
    }
}

/// What becomes of a datagram's later fragments, as its first fragment decided
/// (`FragValue::fate`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragFate {
    /// Inbound through a mapping: the destination becomes the internal host
    /// `FragValue::addr_be`.
    ToInternal = 0,
    /// For the gateway itself (one of its services, or its own traffic): the later
    /// fragments reach its kernel untouched, which reassembles the datagram.
    Local = 1,
    /// From an internal host to a service of the gateway on an external address
    /// (hairpinned through `lo`): the source becomes the host's external address
    /// `FragValue::addr_be` and the identification `FragValue::new_id_be`, as the
    /// first fragment's did.
    HairpinLocal = 2,
}

impl FragFate {
    /// Decodes the `fate` byte of a [`FragValue`].
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::ToInternal),
            1 => Some(Self::Local),
            2 => Some(Self::HairpinLocal),
            _ => None,
        }
    }
}

/// Value of `FRAGS_IN`: where the datagram's first fragment went, so its later
/// fragments (and held ones, which the controller sends on) follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    /// The address the later fragments get ([`FragFate`] says which side): the
    /// internal host, or the sender's external address; 0 for `Local`.
    pub addr_be: u32,
    /// A [`FragFate`].
    pub fate: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// `HairpinLocal`: the identification the datagram's fragments get (wire
    /// order); 0 otherwise.
    pub new_id_be: u16,
    /// When the first fragment was seen (ns).
    pub seen_ns: u64,
}

impl FragValue {
    /// A datagram translated to `int_addr_be`, its first fragment at `seen_ns`.
    #[inline(always)]
    #[must_use]
    pub const fn new(int_addr_be: u32, seen_ns: u64) -> Self {
        Self {
            addr_be: int_addr_be,
            fate: FragFate::ToInternal as u8,
            _pad: 0,
            new_id_be: 0,
            seen_ns,
        }
    }

    /// A datagram for the gateway itself, its first fragment at `seen_ns`.
    #[inline(always)]
    #[must_use]
    pub const fn local(seen_ns: u64) -> Self {
        Self {
            addr_be: 0,
            fate: FragFate::Local as u8,
            _pad: 0,
            new_id_be: 0,
            seen_ns,
        }
    }

    /// A datagram from an internal host to a service of the gateway, its source
    /// now `ext_addr_be` and its identification `new_id_be`, its first fragment at
    /// `seen_ns`.
    #[inline(always)]
    #[must_use]
    pub const fn hairpin_local(ext_addr_be: u32, new_id_be: u16, seen_ns: u64) -> Self {
        Self {
            addr_be: ext_addr_be,
            fate: FragFate::HairpinLocal as u8,
            _pad: 0,
            new_id_be,
            seen_ns,
        }
    }
}

/// Entries in `HELD_SYNS`: a flood of unsolicited SYNs beyond this is dropped
/// without being remembered (so without the later ICMP), never at the cost of state.
pub const MAX_HELD_SYNS: u32 = 4096;
/// Size of the `EVENTS` ring buffer in bytes (a power of two, page multiple).
pub const EVENTS_RING_BYTES: u32 = 64 * 1024;

/// Inbound filtering of a mapping (RFC 4787 REQ-8, RFC 5382 REQ-3).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterMode {
    /// Any remote endpoint may send to the mapping.
    EndpointIndependent = 0,
    /// Only remote addresses the internal endpoint has sent to.
    AddressDependent = 1,
    /// Only remote address-and-port pairs the internal endpoint has sent to.
    AddressAndPortDependent = 2,
    /// Only the remote peers a PCP FILTER option named (RFC 6887 §13.3), kept in
    /// `PCP_FILTERS`.
    PcpFilter = 3,
}

impl FilterMode {
    /// Decodes the `filter` byte of a [`RevValue`].
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::EndpointIndependent),
            1 => Some(Self::AddressDependent),
            2 => Some(Self::AddressAndPortDependent),
            3 => Some(Self::PcpFilter),
            _ => None,
        }
    }

    /// Name used in the configuration and listings.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::EndpointIndependent => "endpoint-independent",
            Self::AddressDependent => "address-dependent",
            Self::AddressAndPortDependent => "address-and-port-dependent",
            Self::PcpFilter => "pcp-filter",
        }
    }
}

/// Key of `NAT_SESSIONS` and `HELD_SYNS`: one external endpoint and one remote
/// endpoint. With `remote_port_be` 0 it is the address-only record used by
/// address-dependent filtering.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// External address of the mapping.
    pub ext_addr_be: u32,
    /// Remote address.
    pub remote_addr_be: u32,
    /// External port of the mapping.
    pub ext_port_be: u16,
    /// Remote port (0: any port of `remote_addr_be`).
    pub remote_port_be: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 3],
}

impl SessionKey {
    /// The key of the traffic between mapping `ext_addr_be`:`ext_port_be` and remote
    /// endpoint `remote_addr_be`:`remote_port_be` (0: the address-only record).
    #[inline(always)]
    #[must_use]
    pub const fn new(
        ext_addr_be: u32,
        remote_addr_be: u32,
        ext_port_be: u16,
        remote_port_be: u16,
        proto: u8,
    ) -> Self {
        Self {
            ext_addr_be,
            remote_addr_be,
            ext_port_be,
            remote_port_be,
            proto,
            _pad: [0; 3],
        }
    }
}

/// Value of `NAT_SESSIONS`: the traffic between one mapping and one remote endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// `CLOCK_MONOTONIC` time of creation (ns).
    pub created_ns: u64,
    /// Last outbound packet (ns), 0 if none.
    pub last_out_ns: u64,
    /// Last inbound packet (ns), 0 if none.
    pub last_in_ns: u64,
    /// [`crate::tcp::TcpState`] as its `u8` value (TCP sessions).
    pub tcp_state: u8,
    /// Explicit padding.
    pub _pad: [u8; 7],
}

impl Session {
    /// A session created at `created_ns`, last used outbound at `last_out_ns` and
    /// inbound at `last_in_ns` (0: never), TCP state `tcp_state`.
    #[inline(always)]
    #[must_use]
    pub const fn new(created_ns: u64, last_out_ns: u64, last_in_ns: u64, tcp_state: u8) -> Self {
        Self {
            created_ns,
            last_out_ns,
            last_in_ns,
            tcp_state,
            _pad: [0; 7],
        }
    }
}

/// Value of `HELD_SYNS`: an unsolicited inbound SYN that was dropped silently
/// (RFC 5382 REQ-4). If no outbound SYN for it is translated within 6 s, the
/// controller answers it with ICMP port unreachable (when so configured), built from
/// these fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldSyn {
    /// When it arrived (ns).
    pub seen_ns: u64,
    /// Its TCP sequence number (wire order).
    pub seq_be: u32,
    /// Its IP identification (wire order).
    pub ip_id_be: u16,
    /// Its TTL.
    pub ttl: u8,
    /// Explicit padding.
    pub _pad: u8,
}

impl HeldSyn {
    /// A SYN that arrived at `seen_ns` with sequence number `seq_be`, identification
    /// `ip_id_be` and TTL `ttl`.
    #[inline(always)]
    #[must_use]
    pub const fn new(seen_ns: u64, seq_be: u32, ip_id_be: u16, ttl: u8) -> Self {
        Self {
            seen_ns,
            seq_be,
            ip_id_be,
            ttl,
            _pad: 0,
        }
    }
}

/// Why the data path asks the controller to send an ICMP error.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// No mapping could be created: answer with destination unreachable code 13
    /// (RFC 5508 REQ-8).
    NoMapping = 1,
}

/// Bytes of the offending packet carried by an [`Event`]: its IPv4 header without
/// options plus the first 8 bytes of its payload, as an ICMP error embeds them.
pub const EVENT_SNIPPET: usize = 28;

/// A record in the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// [`EventKind`] as its `u8` value.
    pub kind: u8,
    /// Explicit padding.
    pub _pad: [u8; 3],
    /// Interface the offending packet arrived on.
    pub ifindex: u32,
    /// The packet's IPv4 header (IHL forced to 5) and first 8 payload bytes.
    pub snippet: [u8; EVENT_SNIPPET],
}

impl Event {
    /// An event of kind `kind` ([`EventKind`] as its `u8` value) about the packet
    /// `snippet` that arrived on `ifindex`.
    #[inline(always)]
    #[must_use]
    pub const fn new(kind: u8, ifindex: u32, snippet: [u8; EVENT_SNIPPET]) -> Self {
        Self {
            kind,
            _pad: [0; 3],
            ifindex,
            snippet,
        }
    }
}

/// Size of the `MAPPING_EVENTS` ring buffer in bytes (a power of two, page
/// multiple): 256 KiB, 8192 records of 32 bytes with their headers, what new
/// mappings at 80 000/s fill between two of the controller's 100 ms drains.
pub const MAPPING_EVENTS_RING_BYTES: u32 = 256 * 1024;

/// What happened to a mapping, in a [`MappingEvent`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingEventKind {
    /// Created (by traffic in the data path, or by the controller for PCP,
    /// NAT-PMP, UPnP and static forwards).
    Create = 1,
    /// Deleted on request (a PCP/NAT-PMP/UPnP delete, `natgw flush`, a static
    /// forward removed from the configuration).
    Delete = 2,
    /// Ended by time: idle timeout (garbage collector) or lifetime (explicit).
    Expire = 3,
}

impl MappingEventKind {
    /// Decodes the `kind` byte of a [`MappingEvent`].
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Create),
            2 => Some(Self::Delete),
            3 => Some(Self::Expire),
            _ => None,
        }
    }

    /// `create`, `delete` or `expire`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Delete => "delete",
            Self::Expire => "expire",
        }
    }
}

/// A record in the `MAPPING_EVENTS` ring buffer: one mapping the data path created.
/// The controller builds the same record for what it does itself (deletions,
/// expiries, explicit mappings), so `natgw monitor` sees one kind of event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingEvent {
    /// `CLOCK_MONOTONIC` time of the event (ns), as `bpf_ktime_get_ns` reads it.
    pub time_ns: u64,
    /// Internal address, network order.
    pub int_addr_be: u32,
    /// External address, network order.
    pub ext_addr_be: u32,
    /// Internal port (ICMP: query identifier), network order.
    pub int_port_be: u16,
    /// External port (ICMP: identifier), network order.
    pub ext_port_be: u16,
    /// [`MappingEventKind`] as its `u8` value.
    pub kind: u8,
    /// IP protocol.
    pub proto: u8,
    /// [`Origin`] as its `u8` value.
    pub origin: u8,
    /// Explicit padding.
    pub _pad: u8,
}

impl MappingEvent {
    /// An event of `kind` about the mapping `key` -> `m`, at `time_ns`.
    #[inline(always)]
    #[must_use]
    pub const fn new(kind: u8, key: &crate::FwdKey, m: &crate::Mapping, time_ns: u64) -> Self {
        Self {
            time_ns,
            int_addr_be: key.addr_be,
            ext_addr_be: m.ext_addr_be,
            int_port_be: key.port_be,
            ext_port_be: m.ext_port_be,
            kind,
            proto: key.proto,
            origin: m.origin,
            _pad: 0,
        }
    }
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
    /// A UPnP IGD AddPortMapping or AddAnyPortMapping request.
    Upnp = 4,
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
            4 => Some(Self::Upnp),
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
            Self::Upnp => "upnp",
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

impl FwdKey {
    /// The key of internal endpoint `addr_be`:`port_be` of protocol `proto`.
    #[inline(always)]
    #[must_use]
    pub const fn new(addr_be: u32, port_be: u16, proto: u8) -> Self {
        Self {
            addr_be,
            port_be,
            proto,
            _pad: 0,
        }
    }
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

impl RevKey {
    /// The key of external endpoint `addr_be`:`port_be` of protocol `proto`.
    #[inline(always)]
    #[must_use]
    pub const fn new(addr_be: u32, port_be: u16, proto: u8) -> Self {
        Self {
            addr_be,
            port_be,
            proto,
            _pad: 0,
        }
    }
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
    /// [`FilterMode`] of the mapping as its `u8` value.
    pub filter: u8,
    /// `created_ns` of the forward entry this claim belongs to.
    pub created_ns: u64,
    /// `CLOCK_MONOTONIC` time of the last inbound packet (ns), 0 if none yet.
    pub last_in_ns: u64,
    /// Inbound packets translated.
    pub packets_in: u64,
    /// Inbound bytes translated (IP length).
    pub bytes_in: u64,
}

/// [`RevValue::filter`] of a hold: the external port of a mapping that ended, kept
/// from other internal hosts for the hold-down (RFC 6888 REQ-8). A hold is a reverse
/// entry without a forward one, so no one claims the port meanwhile (the
/// `BPF_NOEXIST` insert fails) and nothing inbound is translated to it.
pub const REV_HELD: u8 = 0xff;

impl RevValue {
    /// A hold of a port that served internal host `int_addr_be` until `freed_ns`
    /// (kept in `created_ns`).
    #[inline(always)]
    #[must_use]
    pub const fn held(int_addr_be: u32, freed_ns: u64) -> Self {
        Self {
            int_addr_be,
            int_port_be: 0,
            tcp_flags_in: 0,
            filter: REV_HELD,
            created_ns: freed_ns,
            last_in_ns: 0,
            packets_in: 0,
            bytes_in: 0,
        }
    }

    /// Whether this entry is a hold, not a mapping's.
    #[inline(always)]
    #[must_use]
    pub const fn is_held(&self) -> bool {
        self.filter == REV_HELD
    }

    /// Whether this hold keeps the port from internal host `int_addr_be` at `now_ns`
    /// with a hold-down of `hold_ns`: only other hosts are kept away, and only until
    /// the hold-down has passed.
    #[inline(always)]
    #[must_use]
    pub const fn bars(&self, int_addr_be: u32, now_ns: u64, hold_ns: u64) -> bool {
        self.is_held()
            && self.int_addr_be != int_addr_be
            && now_ns.saturating_sub(self.created_ns) < hold_ns
    }

    /// Whether this hold has run out at `now_ns`.
    #[must_use]
    pub const fn hold_expired(&self, now_ns: u64, hold_ns: u64) -> bool {
        self.is_held() && now_ns.saturating_sub(self.created_ns) >= hold_ns
    }
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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SessionKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Session {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HeldSyn {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MappingEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StashKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PcpFilterKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LanSourceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StashedFragment {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragOutKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragOutValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragBudget {}
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
        assert_eq!(size_of::<super::SessionKey>(), 16);
        assert_eq!(size_of::<super::Session>(), 32);
        assert_eq!(size_of::<super::HeldSyn>(), 16);
        assert_eq!(size_of::<super::Event>(), 36);
        assert_eq!(size_of::<super::MappingEvent>(), 24);
        assert_eq!(size_of::<super::FragOutKey>(), 12);
        assert_eq!(size_of::<super::FragOutValue>(), 16);
        assert_eq!(size_of::<super::FragValue>(), 16);
        assert_eq!(size_of::<super::FragBudget>(), 16);
    }

    /// The bytes of a `repr(C)` value, padding included.
    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: reading `size_of::<T>()` bytes of a live value; the constructors
        // under test write every byte, padding included (no implicit padding, see
        // `layouts_have_no_implicit_padding`).
        unsafe { core::slice::from_raw_parts(core::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn endpoint_keys_put_each_argument_in_its_field_and_zero_the_padding() {
        let f = FwdKey::new(0x0a00_0102, 0x9c40, 17);
        assert_eq!(
            (f.addr_be, f.port_be, f.proto, f._pad),
            (0x0a00_0102, 0x9c40, 17, 0)
        );
        let r = RevKey::new(0xc000_0201, 0x1f90, 6);
        assert_eq!(
            (r.addr_be, r.port_be, r.proto, r._pad),
            (0xc000_0201, 0x1f90, 6, 0)
        );
        // Equal to a key built field by field, so map lookups find the same entry.
        let by_hand = FwdKey {
            addr_be: 0x0a00_0102,
            port_be: 0x9c40,
            proto: 17,
            ..FwdKey::default()
        };
        assert_eq!(bytes_of(&f), bytes_of(&by_hand));
    }

    #[test]
    fn session_and_filter_keys_keep_the_field_order() {
        use super::{PcpFilterKey, SessionKey};
        let k = SessionKey::new(1, 2, 3, 4, 5);
        assert_eq!(
            (
                k.ext_addr_be,
                k.remote_addr_be,
                k.ext_port_be,
                k.remote_port_be,
                k.proto
            ),
            (1, 2, 3, 4, 5)
        );
        assert_eq!(k._pad, [0; 3]);
        assert_eq!(bytes_of(&k)[13..], [0; 3]);
        let p = PcpFilterKey::new(1, 2, 3, 4);
        assert_eq!(
            (p.ext_addr_be, p.ext_port_be, p.proto, p.remote_addr_be),
            (1, 2, 3, 4)
        );
        assert_eq!(bytes_of(&p)[7], 0);
    }

    #[test]
    fn fragment_keys_and_values_keep_the_field_order() {
        use super::{FragFate, FragKey, FragOutKey, FragOutValue, FragValue, StashKey};
        let d = FragKey::new(1, 2, 3, 4);
        assert_eq!(
            (d.remote_addr_be, d.ext_addr_be, d.ip_id_be, d.proto, d._pad),
            (1, 2, 3, 4, 0)
        );
        let o = FragOutKey::new(5, 6, 7, 8);
        assert_eq!(
            (o.int_addr_be, o.remote_addr_be, o.ip_id_be, o.proto, o._pad),
            (5, 6, 7, 8, 0)
        );
        let s = StashKey::new(d, 185);
        assert_eq!((s.datagram, s.offset, s._pad), (d, 185, 0));
        let v = FragValue::new(9, 10);
        assert_eq!(
            (v.addr_be, v.fate, v._pad, v.new_id_be, v.seen_ns),
            (9, FragFate::ToInternal as u8, 0, 0, 10)
        );
        let l = FragValue::local(11);
        assert_eq!(
            (l.addr_be, l.fate, l.seen_ns),
            (0, FragFate::Local as u8, 11)
        );
        let h = FragValue::hairpin_local(12, 13, 14);
        assert_eq!(
            (h.addr_be, h.fate, h.new_id_be, h.seen_ns),
            (12, FragFate::HairpinLocal as u8, 13, 14)
        );
        assert_eq!(bytes_of(&h)[5], 0);
        for fate in [
            FragFate::ToInternal,
            FragFate::Local,
            FragFate::HairpinLocal,
        ] {
            assert_eq!(FragFate::from_u8(fate as u8), Some(fate));
        }
        assert_eq!(FragFate::from_u8(3), None);
        let w = FragOutValue::new(11, 12);
        assert_eq!((w.new_id_be, w._pad, w.seen_ns), (11, [0; 6], 12));
        assert_eq!(bytes_of(&w)[2..8], [0; 6]);
    }

    #[test]
    fn values_with_padding_keep_the_field_order() {
        use super::{
            Event, FragBudget, HeldSyn, Session, StashedFragment, EVENT_SNIPPET,
            MAX_STASHED_FRAGMENT_LEN,
        };
        let s = Session::new(1, 2, 3, 4);
        assert_eq!(
            (s.created_ns, s.last_out_ns, s.last_in_ns, s.tcp_state),
            (1, 2, 3, 4)
        );
        assert_eq!(bytes_of(&s)[25..], [0; 7]);
        let h = HeldSyn::new(1, 2, 3, 4);
        assert_eq!(
            (h.seen_ns, h.seq_be, h.ip_id_be, h.ttl, h._pad),
            (1, 2, 3, 4, 0)
        );
        let snippet = [7u8; EVENT_SNIPPET];
        let e = Event::new(1, 2, snippet);
        assert_eq!(
            (e.kind, e._pad, e.ifindex, e.snippet),
            (1, [0; 3], 2, snippet)
        );
        assert_eq!(bytes_of(&e)[1..4], [0; 3]);
        let b = FragBudget::new(3, 4);
        assert_eq!((b.spent, b._pad, b.refilled_ns), (3, 0, 4));
        let f = StashedFragment::new(5, 6, [1; MAX_STASHED_FRAGMENT_LEN]);
        assert_eq!((f.seen_ns, f.len, f._pad), (5, 6, [0; 6]));
        assert_eq!(f.packet, [1; MAX_STASHED_FRAGMENT_LEN]);
    }

    #[test]
    fn holds_bar_other_hosts_until_they_run_out() {
        // rfc6888 REQ-8
        use super::RevValue;
        const S: u64 = 1_000_000_000;
        let (a, b) = (0x0a00_0102, 0x0a00_0202);
        let hold = RevValue::held(a, 10 * S);
        assert!(hold.is_held());
        assert!(
            !RevValue::default().is_held(),
            "a mapping's entry is no hold"
        );
        assert!(!RevValue::default().bars(b, 10 * S, 120 * S));
        assert!(hold.bars(b, 10 * S, 120 * S));
        assert!(hold.bars(b, 129 * S, 120 * S));
        assert!(!hold.bars(b, 130 * S, 120 * S));
        assert!(!hold.bars(a, 11 * S, 120 * S), "the same host may reuse it");
        assert!(!hold.bars(b, 11 * S, 0), "no hold-down configured");
        assert!(!hold.hold_expired(129 * S, 120 * S));
        assert!(hold.hold_expired(130 * S, 120 * S));
    }

    #[test]
    fn fragment_budget_is_spent_by_incomplete_datagrams_only() {
        // rfc4787 REQ-14a
        use super::{FragBudget, FRAG_BUDGET_BURST, FRAG_BUDGET_REFILL_PER_SEC};
        let t = 5_000_000_000;
        // Complete datagrams: taken and given back, forever.
        let mut b = FragBudget::default();
        for i in 0..10_000 {
            b = b
                .take(t + i)
                .expect("complete datagrams never run out")
                .give_back();
        }
        assert_eq!(b.spent, 0);
        // Incomplete ones: the burst, then nothing until the refill.
        let mut b = FragBudget::default();
        for _ in 0..FRAG_BUDGET_BURST {
            b = b.take(t).expect("within the burst");
        }
        assert_eq!(b.take(t), None);
        let tick = 1_000_000_000 / FRAG_BUDGET_REFILL_PER_SEC;
        assert_eq!(b.take(t + tick / 2), None);
        let b = b.take(t + tick).expect("one token regained");
        assert_eq!(b.take(t + tick), None);
        // A quiet second regains the refill rate's worth.
        assert_eq!(
            b.refilled(t + tick + 1_000_000_000).spent,
            FRAG_BUDGET_BURST.saturating_sub(FRAG_BUDGET_REFILL_PER_SEC as u32)
        );
    }

    #[test]
    fn fragment_budget_buckets_split_directions() {
        use super::{frag_budget_bucket, FRAG_BUDGET_BUCKETS};
        for a in [0u32, 1, 0x0a00_0001, u32::MAX] {
            assert!(frag_budget_bucket(a, false) < FRAG_BUDGET_BUCKETS);
            assert_eq!(
                frag_budget_bucket(a, true),
                frag_budget_bucket(a, false) + FRAG_BUDGET_BUCKETS
            );
        }
    }
}
