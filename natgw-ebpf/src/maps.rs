//! The BPF maps. Layouts come from `natgw_common::maps`; the controller sizes the NAT
//! tables at load time and pins everything for `natgw mappings` and `natgw status`.
//! The NAT tables are plain hash maps, never LRU: an LRU map would silently evict
//! live mappings under pressure. They are not preallocated (`BPF_F_NO_PREALLOC`):
//! their memory follows the live entries (about 104 B each in the kernel's
//! accounting) instead of the capacity, which then costs only the kernel's bucket
//! array (16 B per slot, the capacity rounded up to a power of two).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use natgw_common::{
    config::MAX_EXTERNAL_ADDRS,
    counters::COUNTER_SLOTS,
    limits::{HostReleased, HostState},
    maps::{
        FragBudget, FragKey, FragOutKey, FragOutValue, FragValue, HeldSyn, LanSourceKey,
        PcpFilterKey, Session, SessionKey, StashKey, StashedFragment, DEFAULT_MAX_MAPPINGS,
        EVENTS_RING_BYTES, FRAG_BUDGET_BUCKETS, MAPPING_EVENTS_RING_BYTES, MAX_ADDR_CLASS,
        MAX_FRAGS_IN, MAX_FRAGS_OUT, MAX_HELD_SYNS, MAX_LAN_SOURCES, MAX_PCP_FILTERS,
        MAX_STASHED_FRAGMENTS,
    },
    Config, FwdKey, IfaceConfig, Mapping, RevKey, RevValue,
};

/// Interfaces natgw may see (LAN interfaces plus the WAN).
const MAX_IFACES: u32 = 64;

/// (protocol, internal endpoint) -> external endpoint.
#[map]
pub static NAT_FWD: HashMap<FwdKey, Mapping> =
    HashMap::with_max_entries(DEFAULT_MAX_MAPPINGS, BPF_F_NO_PREALLOC);

/// (protocol, external endpoint) -> internal endpoint; the port claim. Also holds
/// the ports of ended mappings for the hold-down (`RevValue::held`, RFC 6888 REQ-8):
/// the controller sizes it for both.
#[map]
pub static NAT_REV: HashMap<RevKey, RevValue> =
    HashMap::with_max_entries(DEFAULT_MAX_MAPPINGS, BPF_F_NO_PREALLOC);

/// Global configuration, entry 0.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Per-interface configuration by ifindex.
#[map]
pub static IFACES: HashMap<u32, IfaceConfig> = HashMap::with_max_entries(MAX_IFACES, 0);

/// What each address is to the gateway (`natgw_common::maps::addr_class` bits):
/// internal prefixes, whose sources are translated, and what never comes from the
/// WAN.
#[map]
pub static ADDR_CLASS: LpmTrie<u32, u32> = LpmTrie::with_max_entries(MAX_ADDR_CLASS, 1);

/// Which sources each LAN interface may carry (`natgw_common::maps::lan_source`).
#[map]
pub static LAN_SOURCES: LpmTrie<LanSourceKey, u32> = LpmTrie::with_max_entries(MAX_LAN_SOURCES, 1);

/// Verdict counters, indexed by `Counter` (`COUNTER_SLOTS` of them, more than there
/// are counters, so the map outlives additions).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Sessions (mapping x remote endpoint): filtering state and TCP state. The
/// controller sizes it to twice the mapping capacity.
#[map]
pub static NAT_SESSIONS: HashMap<SessionKey, Session> =
    HashMap::with_max_entries(2 * DEFAULT_MAX_MAPPINGS, BPF_F_NO_PREALLOC);

/// Unsolicited inbound SYNs dropped silently (RFC 5382 REQ-4).
#[map]
pub static HELD_SYNS: HashMap<SessionKey, HeldSyn> = HashMap::with_max_entries(MAX_HELD_SYNS, 0);

/// Requests to the controller to send ICMP errors the data path cannot build.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Mappings the data path created, for `natgw monitor`
/// (`natgw_common::maps::MappingEvent`). Written without waking the reader; the
/// controller drains it every 100 ms.
#[map]
pub static MAPPING_EVENTS: RingBuf = RingBuf::with_byte_size(MAPPING_EVENTS_RING_BYTES, 0);

/// Inbound fragmented datagrams whose first fragment was translated, so their later
/// fragments can follow (RFC 4787 REQ-14). LRU on purpose, unlike the NAT tables: a
/// fragment flood may only push out other fragment records, never mappings
/// (REQ-14a), and a record is worth little after the reassembly timeout anyway.
#[map]
pub static FRAGS_IN: LruHashMap<FragKey, FragValue> = LruHashMap::with_max_entries(MAX_FRAGS_IN, 0);

/// Outbound fragmented datagrams and the IP identification they leave with (RFC 6864,
/// as RFC 7857 asks of NAT44). LRU like `FRAGS_IN`.
#[map]
pub static FRAGS_OUT: LruHashMap<FragOutKey, FragOutValue> =
    LruHashMap::with_max_entries(MAX_FRAGS_OUT, 0);

/// Each source's budget of incomplete fragmented datagrams, by hash bucket: inbound
/// buckets, then outbound ones (RFC 4787 REQ-14a).
#[map]
pub static FRAG_BUDGET: Array<FragBudget> = Array::with_max_entries(2 * FRAG_BUDGET_BUCKETS, 0);

/// This CPU's next IP identification for outbound non-atomic datagrams; CPUs step by
/// `Config::cpus` from their own index, so their sequences never meet.
#[map]
pub static IP_ID_NEXT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The external address pool by index (paired pooling, RFC 4787 REQ-2).
#[map]
pub static EXT_ADDRS: Array<u32> = Array::with_max_entries(MAX_EXTERNAL_ADDRS, 0);

/// Membership of the external address pool: address -> index.
#[map]
pub static EXT_SET: HashMap<u32, u32> = HashMap::with_max_entries(MAX_EXTERNAL_ADDRS, 0);

/// Later fragments that arrived before their first fragment (RFC 4787 REQ-14). LRU:
/// under a fragment flood the oldest held fragments give way, nothing else (REQ-14a).
#[map]
pub static FRAG_STASH: LruHashMap<StashKey, StashedFragment> =
    LruHashMap::with_max_entries(MAX_STASHED_FRAGMENTS, 0);

/// Per-CPU scratch space to build a stashed fragment in (too large for the stack).
#[map]
pub static FRAG_SCRATCH: PerCpuArray<StashedFragment> = PerCpuArray::with_max_entries(1, 0);

/// Remote peers allowed by PCP FILTER options, for mappings whose filter is
/// `FilterMode::PcpFilter` (RFC 6887 §13.3).
#[map]
pub static PCP_FILTERS: LpmTrie<PcpFilterKey, u32> = LpmTrie::with_max_entries(MAX_PCP_FILTERS, 1);

/// Per internal host: the mappings the data path created per protocol and its bucket
/// of new mappings (RFC 6888 REQ-4). Only the programs write it; the controller
/// sizes it like the NAT tables and deletes the entries of idle hosts. Not
/// preallocated: a gateway has far fewer hosts than mappings, and a host's first
/// mapping can afford the allocation.
#[map]
pub static HOST_STATE: HashMap<u32, HostState> =
    HashMap::with_max_entries(DEFAULT_MAX_MAPPINGS, BPF_F_NO_PREALLOC);

/// Per internal host: the mappings the controller deleted minus those it created,
/// per protocol. Only the controller writes it.
#[map]
pub static HOST_RELEASED: HashMap<u32, HostReleased> =
    HashMap::with_max_entries(DEFAULT_MAX_MAPPINGS, BPF_F_NO_PREALLOC);

/// One zeroed `HostState`, never written: the value a host's first `HOST_STATE`
/// entry is inserted from (the stack of the function that inserts it must stay
/// small).
#[map]
pub static HOST_ZERO: Array<HostState> = Array::with_max_entries(1, 0);
