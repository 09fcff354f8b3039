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
}

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
/// Number of `BENCH_GEN_CFG` slots.
pub const GEN_CFG_SLOTS: u32 = 5;
