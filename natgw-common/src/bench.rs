//! What `cargo xtask bench` and the bench-only programs of natgw's eBPF object
//! (`natgw-ebpf/src/bench.rs`: `xdp_pass`, `xdp_count_drop`, `xdp_gen`, `xdp_replay`) must agree
//! on: the names of their maps, the slots of `BENCH_RX` and `BENCH_GEN_CFG`, and the
//! length of the generated frames. natgw itself never attaches these programs.

/// Map names (the symbol names in the eBPF object).
pub mod names {
    /// `PerCpuArray<u64>`: what the receiver saw, per CPU, by the
    /// [`RX_*`](super::RX_PACKETS) slots.
    pub const BENCH_RX: &str = "BENCH_RX";
    /// `Array<u64>` with one entry: frames the receiver counted, on all CPUs, for the
    /// generator's pacing.
    pub const BENCH_RX_TOTAL: &str = "BENCH_RX_TOTAL";
    /// `PerCpuArray<u64>` with one entry: the generator's sequence number (frames sent).
    pub const BENCH_GEN_SEQ: &str = "BENCH_GEN_SEQ";
    /// `Array<[u8; GEN_FRAME_LEN]>` with one entry: the frame of flow 0.
    pub const BENCH_GEN_TPL: &str = "BENCH_GEN_TPL";
    /// `Array<u32>`: the generator's configuration, by the [`GEN_*`](super::GEN_FLOWS)
    /// slots.
    pub const BENCH_GEN_CFG: &str = "BENCH_GEN_CFG";
    /// `ProgramArray` with one entry: the program `xdp_replay` tail-calls.
    pub const BENCH_REPLAY: &str = "BENCH_REPLAY";
    /// `Array<[u8; GEN_FLOW_LEN]>` with [`GEN_TABLE_MAX`](super::GEN_TABLE_MAX)
    /// entries: explicit flows, read when [`GEN_TABLE`](super::GEN_TABLE) is set.
    pub const BENCH_GEN_FLOWS: &str = "BENCH_GEN_FLOWS";
    /// `HashMap<FwdKey, Mapping>` of the GC prototypes (one entry in the object; the
    /// bench loads it with room for the million): the table `xdp_gc_lazy` expires
    /// from.
    pub const GC_FWD: &str = "GC_FWD";
    /// `HashMap<RevKey, RevValue>`: the reverse entries of `GC_FWD`'s and
    /// `GC_TIMED`'s mappings, deleted with them.
    pub const GC_REV: &str = "GC_REV";
    /// BTF hash map `FwdKey -> {Mapping, bpf_timer}`: the table of `xdp_gc_timer`,
    /// each entry with its own timer.
    pub const GC_TIMED: &str = "GC_TIMED";
    /// `Array<u64>`: the GC prototypes' configuration, by the
    /// [`GC_CFG_*`](super::GC_CFG_TIMEOUT_NS) slots.
    pub const GC_CFG: &str = "GC_CFG";
    /// `PerCpuArray<u64>`: what the GC prototypes did, by the
    /// [`GC_STAT_*`](super::GC_STAT_HIT) slots.
    pub const GC_STATS: &str = "GC_STATS";
    /// `PerCpuArray<u64>` (only in the `gc-timer` object): the error codes of
    /// `xdp_gc_timer`'s timer helpers, by [`gc_timer_err_slot`](super::gc_timer_err_slot).
    pub const GC_TIMER_ERR: &str = "GC_TIMER_ERR";
}

/// The timer helpers whose error codes `GC_TIMER_ERR` counts.
pub const GC_TIMER_HELPERS: [&str; 3] = [
    "bpf_timer_init",
    "bpf_timer_set_callback",
    "bpf_timer_start",
];
/// Error codes per helper in `GC_TIMER_ERR` (larger ones count in the last).
pub const GC_TIMER_ERRNOS: u32 = 128;
/// Number of `GC_TIMER_ERR` slots.
pub const GC_TIMER_ERR_SLOTS: u32 = GC_TIMER_HELPERS.len() as u32 * GC_TIMER_ERRNOS;

/// The `GC_TIMER_ERR` slot of helper `helper` (an index of [`GC_TIMER_HELPERS`])
/// returning `ret` (a negative error code).
#[must_use]
pub const fn gc_timer_err_slot(helper: u32, ret: i64) -> u32 {
    let errno = if ret >= 0 {
        0
    } else if ret <= -(GC_TIMER_ERRNOS as i64) {
        GC_TIMER_ERRNOS - 1
    } else {
        (-ret) as u32
    };
    helper * GC_TIMER_ERRNOS + errno
}

/// `GC_CFG` slot: the mapping timeout (ns).
pub const GC_CFG_TIMEOUT_NS: u32 = 0;
/// `GC_CFG` slot: non-zero makes `xdp_gc_lazy` compare a hit's stamp with the timeout
/// (and delete it when expired), and `xdp_gc_timer` re-arm a hit's timer; zero leaves
/// both with the lookup and the stamp refresh alone (the baseline of the per-packet
/// cost).
pub const GC_CFG_EXPIRE: u32 = 1;
/// Number of `GC_CFG` slots.
pub const GC_CFG_SLOTS: u32 = 2;

/// `GC_STATS` slot: lookups that found a live mapping.
pub const GC_STAT_HIT: u32 = 0;
/// `GC_STATS` slot: lookups that found no mapping.
pub const GC_STAT_MISS: u32 = 1;
/// `GC_STATS` slot: mappings `xdp_gc_lazy` found expired and deleted.
pub const GC_STAT_LAZY_EXPIRED: u32 = 2;
/// `GC_STATS` slot: mappings `xdp_gc_timer` created with an armed timer.
pub const GC_STAT_ARMED: u32 = 3;
/// `GC_STATS` slot: timers that fired and deleted their mapping.
pub const GC_STAT_FIRED: u32 = 4;
/// `GC_STATS` slot: helper failures (insert, timer init/start, delete).
pub const GC_STAT_ERROR: u32 = 5;
/// `GC_STATS` slot: `bpf_timer_init` failures of `xdp_gc_timer` (the new mapping and
/// its port claim undone, so a later packet retries).
pub const GC_STAT_TIMER_INIT_FAILED: u32 = 6;
/// Number of `GC_STATS` slots.
pub const GC_STAT_SLOTS: u32 = 7;

/// `BENCH_RX` slot: frames received.
pub const RX_PACKETS: u32 = 0;
/// `BENCH_RX` slot: bytes received (frame length).
pub const RX_BYTES: u32 = 1;
/// `BENCH_RX` slot: `CLOCK_MONOTONIC` ns of the first frame since the slots were zeroed.
pub const RX_FIRST_NS: u32 = 2;
/// `BENCH_RX` slot: `CLOCK_MONOTONIC` ns of the latest frame.
pub const RX_LAST_NS: u32 = 3;
/// Number of `BENCH_RX` slots.
pub const RX_SLOTS: u32 = 4;
/// Every `BENCH_RX` slot.
pub const RX_ALL: [u32; RX_SLOTS as usize] = [RX_PACKETS, RX_BYTES, RX_FIRST_NS, RX_LAST_NS];

/// Length of the generated frames: a 64-byte Ethernet frame without its FCS, which a
/// veth never carries.
pub const GEN_FRAME_LEN: usize = 60;

/// `BENCH_GEN_CFG` slot: flows the sequence cycles through (0 counts as 1).
pub const GEN_FLOWS: u32 = 0;
/// `BENCH_GEN_CFG` slot: distinct internal endpoints (source address and port) among
/// the flows; flow `f` uses endpoint `f % endpoints` and destination port
/// `template + f / endpoints`.
pub const GEN_ENDPOINTS: u32 = 1;
/// `BENCH_GEN_CFG` slot: source ports per source address: endpoint `e` is
/// `(template address + e / ports, template port + e % ports)`.
pub const GEN_PORTS_PER_ADDR: u32 = 2;
/// `BENCH_GEN_CFG` slot: frames to send in all, per CPU (0: no limit); the rest drop.
pub const GEN_LIMIT: u32 = 3;
/// `BENCH_GEN_CFG` slot: frames allowed between generator and receiver (0: no pacing).
pub const GEN_IN_FLIGHT: u32 = 4;
/// `BENCH_GEN_CFG` slot: 1 when flow `f` takes its source and destination address and
/// port from entry `f` of `BENCH_GEN_FLOWS` instead of the arithmetic above (the
/// bench's WAN→LAN flows, whose external ports are whatever the gateway chose).
pub const GEN_TABLE: u32 = 5;
/// `BENCH_GEN_CFG` slot: frames per second at most, per CPU, counted from the first
/// frame (0: as fast as the CPU goes). The offered rate of a connection-setup trial.
pub const GEN_RATE: u32 = 6;
/// Number of `BENCH_GEN_CFG` slots.
pub const GEN_CFG_SLOTS: u32 = 7;

/// `BENCH_GEN_SEQ` slot: frames sent, per CPU.
pub const SEQ_SENT: u32 = 0;
/// `BENCH_GEN_SEQ` slot: `CLOCK_MONOTONIC` ns of the first frame, for [`GEN_RATE`].
pub const SEQ_START_NS: u32 = 1;
/// Number of `BENCH_GEN_SEQ` slots.
pub const SEQ_SLOTS: u32 = 2;

/// Entries of `BENCH_GEN_FLOWS`.
pub const GEN_TABLE_MAX: u32 = 1 << 17;
/// One `BENCH_GEN_FLOWS` entry: source address, destination address, source port,
/// destination port, each in network byte order.
pub const GEN_FLOW_LEN: usize = 12;
