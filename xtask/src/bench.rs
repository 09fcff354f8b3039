//! `cargo xtask bench`: packets per second through the gateway for natgw, the kernel's
//! nftables masquerade (with and without a flowtable), plain forwarding and a bare XDP
//! forwarder, side by side in both directions (LAN → WAN and WAN → LAN), with natgw's
//! ratios to them first; the connection establishment rate and table capacity in the
//! manner of RFC 9693; new mappings per second
//! under a SYN flood; the per-packet cost of the translation programs next to an
//! `XDP_PASS` floor; natgw at a million mappings (memory, cost, garbage
//! collection); its UPnP IGD control point latency and CPU (issue #13); and the
//! throughput of its TURN relay beside coturn's (issue #14). Prints a table (or JSON
//! with `--json`); `--write-docs` also writes it to docs/benchmarks.md.
//!
//! - [`net`]: the bench topology (generator — gateway — receiver namespaces).
//! - [`programs`]: the bench's copies of the eBPF object (generator, receiver, floor,
//!   the bare XDP forwarder).
//! - [`throughput`]: the interleaved packet-rate runs and the SYN bursts;
//!   [`flowtable`]: the `nft-flowtable` mode's ruleset, replies and offload check.
//! - [`inbound`]: the WAN → LAN runs' state (mappings, conntrack entries) and flows;
//!   [`setup`]: connection establishment rate and table capacity (RFC 9693).
//! - [`cost`]: `BPF_PROG_TEST_RUN` per-packet cost, the million-mapping table, GC.
//! - [`upnp`]: 1,000 AddPortMapping requests timed, the controller's CPU listing them.
//! - [`turn`]: packets and Mbit/s through one TURN allocation, natgw's and coturn's.
//! - [`cpu`]: where the CPU time went; [`report`]: the table, JSON and Markdown;
//!   [`charts`]: the SVG charts (`--charts`, `--write-docs`, `--from-json`).
//! - [`bpf`], [`frames`], [`daemon`]: syscalls, packets, natgw (Ctrl-C: [`crate::signals`]).

mod bpf;
mod charts;
mod cost;
mod cpu;
mod daemon;
mod flowtable;
mod frames;
mod gc_designs;
mod gc_kernel;
mod ha;
mod inbound;
mod memory;
mod net;
mod profile;
mod programs;
mod report;
mod setup;
mod throughput;
mod turn;
mod upnp;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use self::charts::{CostChart, PacketChart};
use self::report::{Machine, Report};
use self::throughput::{Plan, Results, Rig};
use crate::build;
use crate::provision::Purpose;
use crate::{exec, paths};

/// What the first runs showed (2026-11-24, this machine kind), for docs/benchmarks.md;
/// the numbers in the table above it are those of the latest run.
pub const NOTES: &str = "\
## Where the time goes (observations from the runs of 2026-11-24 and 2026-12-02)

- **The gateway is the limit.** Its NAPI thread is at 93–100% of its CPU in every UDP
  run, while the generator delivers several million frames per second into the same
  veth when the gateway only drops them (ceiling row). In the 100k-flow natgw runs the
  gateway thread is a little below that: natgw's controller, pinned to the other CPU,
  takes ~17% there, and the `other` column shows some kernel work landing on the
  gateway's CPU.
- **natgw is about 3× the kernel's NAT (2.4–3.4× over the runs so far), not
  \"several times\", and 1.3–2.4× plain forwarding.** One packet costs the gateway
  about 0.9 µs (1/pps). `xdp_lan` itself is 0.6–0.7 µs above the test harness for an
  existing mapping, ~30× the bare `xdp_pass` program (about 22 ns at a large repeat)
  or 7–8× the per-call floor. The profile splits the gateway thread roughly into:
  natgw's BPF code 20–25%; `xdp_do_redirect` and the veth receive path 15–30% (the
  veth pair's own cost; a NIC driver differs); the FIB lookup (`bpf_ipv4_fib_lookup`,
  `fib_table_lookup`) 10–14%; hash-map lookups (`lookup_nulls_elem_raw`,
  `htab_map_hash`, `__htab_map_lookup_elem`) 13–15% — `NAT_FWD` plus `IFACES` looked
  up for the ingress interface twice and for the egress once; `read_tsc` and
  `ktime_get_mono_fast_ns` for `bpf_ktime_get_ns` ~6%; `__napi_schedule` ~8% (waking
  the receiver's NAPI thread on the other CPU). Fewer `IFACES` lookups, one timestamp
  per packet and skipping the full L4 checksum for frames whose checksum is complete
  are the obvious places to look.
- **New mappings** cost 1.6–2.7 µs in `xdp_lan` (lookup miss, local-socket lookup,
  the `BPF_NOEXIST` port claim, two inserts); the SYN burst (0.39–0.45 M new
  mappings/s, one SYN each, with its TCP session) agrees. conntrack + masquerade
  manage ~0.12 M/s.
- **The controller is the weak spot at a million mappings.** Until 2026-12-02 its
  garbage collector walked both tables with one system call per key every
  `--gc-interval` (100% of a CPU at a million, 25–33 s to expire them). It now reads
  them with `BPF_MAP_LOOKUP_BATCH` (8192 entries per call; a 1M-entry snapshot 6–7×
  faster) and expires a million mappings in about half the time (15–17 s against
  32–33 s in alternating `--gc-only` runs of the old and new binary). It still uses
  ~100% of a CPU while a million mappings live: perf puts ~25% in the kernel's batch
  lookup and ~57% in building the plan (hash sets of the snapshot and the decision
  loop), and expiry in the per-key re-reads and deletes (about five `bpf()` calls per
  mapping) — the next places to work on. The per-packet cost of an existing mapping
  barely moves with the table size (×1.1–1.2 at 1M, spread over 10k different
  entries); a new mapping costs more in a full table (×1.0–1.6).
- **Runs differ between days and hosts more than between builds.** On 2026-12-02
  (another host of this kind) every per-packet case measured ~1.5× the 2026-11-24
  figures. Two alternating `--quick` runs of the build before that day's data-path
  changes (fragment budgets, IP identification rewriting, reset-session rule) and of
  the build after them put an existing mapping at 1181 / 1072 ns (before) and
  1132 / 821 ns (after), natgw/nft at 2.8–3.4× and 2.7–3.8×: no difference beyond the
  noise. Compare figures within one run.
- **Memory** (issue #18, 2026-12-05): the NAT tables are no longer preallocated
  (`BPF_F_NO_PREALLOC`). At `--max-mappings 1100000` natgw's maps took ~647 MiB
  empty or full before (NAT tables 581 MiB); now ~200 MiB empty (mostly the tables'
  bucket arrays, 16 B per slot) and ~497 MiB at the million with a session each. A
  live entry costs 104 B in the kernel's accounting (48 B element header, key,
  value, 8 B allocator header): 208 B per mapping without sessions, 104 B per
  session, 309 B per mapping with one (target 256 B: missed by 53 B; met by
  endpoint-independent UDP and ICMP mappings, which keep no sessions). See \"Memory
  per live mapping\" below.
- **Kernel modes.** nft's extra time over plain forwarding is conntrack and NAT
  (`nf_conntrack_in`, `nf_nat_ipv4_out`, `nf_hook_slow`); `__napi_schedule` is high in
  both kernel modes because `veth_xmit` schedules the receiver's NAPI for every socket
  buffer, where natgw's redirects do it once per bulk.
- **The strongest peers (issue #18, 2026-12-04).** Two runs of
  `cargo xtask bench --packets-only` (5 repetitions each, the machine 50% and 77% busy
  with other work before they started): the bare XDP forwarder (`xdp_fwd`) forwarded
  1.46 / 1.32 M pps at 1k flows (medians; 0.85–1.62 M over all its windows), natgw
  1.27 / 0.85 M; natgw/xdp-forward 0.87× / 0.65× at 1k flows (0.6–1.0× over the
  workloads), natgw/nft-masquerade 4.0× / 3.7× (3.3× / 2.9× at 100k flows). The runs
  differ more than the target's margin, so neither says whether natgw meets 0.8×.
  The forwarder's gateway thread was at 83–87% of its CPU, with `finish_task_switch`
  in its profile: it waited for frames. CPU 0, shared by the generator and the
  receiver's NAPI thread, was 100% busy in every mode, so for the forwarder the
  generator's side was the limit: its figure is a floor of what it can do on these
  veths and natgw/xdp-forward a ceiling of the ratio (the bench says so next to the
  ratio when the peer's gateway thread is below 90%). Measuring the real ceiling
  needs a generator that outruns it (a third CPU). In the forwarder's profile the
  veth receive path and the redirect take ~40%, the FIB lookup ~15%, the program
  itself ~15%; natgw pays the same FIB lookup and redirect, so what separates them is
  natgw's map lookups, timestamps and rewrite.
- **No flowtable on this machine.** The kernel (6.18.44-fc) is built without
  `CONFIG_NF_FLOW_TABLE` and cannot load modules, so `nft` refuses the flowtable
  (\"Could not process rule: No such file or directory\"). The bench probes for it
  once, reports the nft-flowtable mode as unavailable (`null` ratio, the reason in
  the text and under `unavailable` in `--json`) and runs the other modes. The mode's
  priming (a reply for every conntrack entry) and its offload check (`[OFFLOAD]`
  entries, the forward chain's counter) have not run on this machine yet.
";

/// How the bench measures, for docs/benchmarks.md.
pub const METHOD: &str = "\
## How it measures

- **Topology** (`xtask/src/bench/net.rs`): three network namespaces in a line,
  generator `bgen0` — `blan0` gateway `bwan0` — `brcv0` receiver, built over netlink
  for every mode run (nothing survives from one run to the next). The gateway has a
  permanent neighbour entry for the receiver, so the first packet already takes
  natgw's fast path.
- **Generator**: `xdp_gen` (natgw-ebpf/src/bench.rs) run by `BPF_PROG_TEST_RUN` in
  live-frame mode from one thread pinned to CPU 0. It writes each 64-byte frame
  (60 bytes without FCS) from a template with the flow's source address and ports and
  returns `XDP_TX`, which puts the frame straight into the gateway's LAN veth; one
  system call runs it for the whole window (a signal ends it), because every call
  sets up a page pool, which takes tens of milliseconds. The generator ceiling row
  shows what it delivers when the gateway only counts and drops (4–7 Mpps here). An
  AF_PACKET socket with `PACKET_QDISC_BYPASS` and `sendmmsg` of 64 frames reached
  about 0.3 Mpps on the same machine (a one-off test while writing the bench: a
  socket buffer per frame and the peer's receive path on the sending CPU); AF_XDP
  runs on a veth only in copy mode. For the SYN burst the generator paces itself:
  it sends only while fewer than 192 frames are between it and the receiver, whose
  count it reads from the map it shares with `xdp_count_drop`.
- **Gateway**: the `blan0` veth runs threaded NAPI, its thread pinned to CPU 1; that
  thread does all per-packet gateway work: natgw's `xdp_lan` (translate, redirect to
  `bwan0`), or `xdp_pass` (so the veth accepts the generator's frames) followed by the
  kernel's forwarding, with conntrack and `masquerade` in the nft mode (`nft`
  `type nat hook postrouting`, `oifname bwan0 masquerade`). natgw's controller runs
  pinned to CPU 0; its CPU is reported separately.
- **The strongest peers** (issue #18). *nft flowtable* (`nft-flowtable`): the nft
  mode's masquerade plus `flowtable ft { hook ingress priority 0; devices = { blan0,
  bwan0 } }` and `meta l4proto { tcp, udp } counter flow add @ft` in the forward
  chain, the kernel's software fast path. A flowtable only takes established
  connections, so before each window the generator runs one warm-up of the workload,
  and the receiver namespace answers every `[UNREPLIED]` conntrack entry from its
  reply tuple (`conntrack -L`); the window's warm-up then adds the flows. After every
  window the bench requires at least as many `[OFFLOAD]` entries as the workload has
  flows and at most 1% of the forwarded packets through the forward chain's counter,
  and fails otherwise. *XDP forwarder* (`xdp-forward`): `xdp_fwd`
  (natgw-ebpf/src/bench.rs) on `blan0`: `bpf_fib_lookup`, TTL − 1, MAC addresses
  from the FIB result, `bpf_redirect` to `bwan0`; no NAT, no state. It is what an
  XDP program can reach on these veths, the ceiling natgw is set against. Neither
  runs the SYN burst.
- **Ratios**: natgw's median over each peer's median in the UDP 1k-flow workload
  (64-byte frames, LAN → WAN), printed first and under `ratios` in `--json`
  (`natgw/nft-masquerade`, `natgw/nft-flowtable`, `natgw/xdp-forward`,
  `natgw/plain`), followed by issue #18's targets (≥ 0.8× the XDP forwarder, ≥ 2×
  the flowtable, ≥ 5× masquerade at 1k and 100k flows), measured against target.
- **Receiver**: `xdp_count_drop` on `brcv0` counts into a per-CPU array and drops; its
  NAPI thread is pinned to CPU 0. Packets per second are its count over the window.
- **Interleaving**: a repetition runs every mode once (natgw, nft, nft flowtable,
  plain, XDP forwarder, ceiling) in an order rotated per repetition; every mode run
  measures the three UDP workloads one window each, then (natgw, nft, plain) one SYN
  burst. Median and [min–max] over repetitions.
- **Flows**: 1, 1,000 and 100,000 distinct 5-tuples; at most 32,768 distinct internal
  endpoints (500 source ports per source address), beyond that the destination port
  varies. natgw keeps one endpoint-independent mapping per internal endpoint, and one
  external address has 64k ports per protocol; conntrack keeps one entry per 5-tuple.
- **SYN flood**: one burst per mode run of SYNs each from a new internal endpoint, paced
  to at most 192 frames in flight (below a veth ring) so none is lost to a full ring;
  new mappings per second = natgw's `mapping_created` (or the conntrack count) over the
  time from the first to the last SYN at the receiver.
- **CPU**: per thread from `/proc/<pid>/task/<tid>/schedstat`, natgw's process from
  `/proc/<pid>/stat`, per CPU from `/proc/stat` (busy = user + system + softirq; steal
  is time the hypervisor took). A gateway at ~100% means the gateway was the limit;
  a generator at ~100% with a gateway below it means the generator was.
- **Per-packet cost**: `BPF_PROG_TEST_RUN` on the `xdp_lan` a running natgw attached
  (found by the XDP program id of `blan0`), from the gateway namespace with `blan0` as
  ingress device, so the FIB and socket lookups are real. One call per packet
  (`repeat = 1`: with a larger repeat the kernel reruns the program on the buffer the
  first run already translated), 10,000 endpoints per case; the floor `xdp_pass` is
  measured the same way. Existing mapping: every endpoint sent once, then three timed
  passes. New mapping: every endpoint timed on its first packet. `tc_wan_egress`,
  existing mapping: the same packets through the kernel path's program on the WAN's
  egress (translation and the leak guard), on a socket buffer.
- **Program only** (issue #18): the existing-mapping cases again, timed the way the
  floor's program-only figure is, with `repeat = 1,000,000` per call. `xdp_replay`
  (natgw-ebpf/src/bench.rs) writes the next endpoint's frame into the test run's
  buffer exactly as the generator `xdp_gen` does (cycling over the case's 10,000
  endpoints), then tail-calls natgw's own `xdp_lan` through the program array
  `BENCH_REPLAY`; the floor is `xdp_replay` tail-calling `xdp_pass`. The difference is
  `xdp_lan`'s own cost per packet, warm, as the gateway's NAPI loop runs it; natgw's
  `xdp_out_redirected` must grow by the repeat count. Live-frame mode
  (`BPF_F_TEST_XDP_LIVE_FRAMES`) would not do: it recycles pages without restoring
  their content (the generator relies on rewriting every header byte) and carries the
  redirect out, so it would time the veth transmit as well. The issue #18 targets
  (≤ 300 ns above the floor; a full table within 10% of an empty one) are printed
  as `target:` lines on these figures. `cargo xtask bench --cost-only` runs just the
  per-packet part (about half a minute with `--quick`).
- **A million mappings**: natgw runs with `--max-mappings 1100000`; the bench inserts
  the mappings into its pinned `NAT_FWD`/`NAT_REV` with `BPF_MAP_UPDATE_BATCH` (external
  endpoints spread over 198.18.0.0/15, since one address has only 64k ports) and one
  session per mapping into `NAT_SESSIONS`, reads each pinned map's `memlock` from
  fdinfo, and repeats the cost cases (the existing mapping case over endpoints of the
  filler). Memory per live mapping: *allocated* is the three NAT tables' `memlock`;
  *used* is their live entries (counted by walking each table) times the bytes per
  entry, the growth of `memlock` per entry added where a table is not preallocated
  (the kernel's own accounting), else the kernel's element size (48 B + key + value,
  each rounded up to 8 B); both divided by the live mappings. Hairpin and ICMP-error packets take the
  kernel's path in this data path (`xdp_lan`/`xdp_wan` pass them to TC), so their
  rows time the TC program alone (`tc_lan_ingress`, `tc_wan_ingress`) on a socket
  buffer, verified by natgw's `hairpin_translated` and `icmp_error_in_translated`
  counters. Garbage collection: a natgw with
  `--udp-timeout 30 --gc-interval 1` gets the million stamped now; the bench records
  natgw's CPU while they live (long enough to show its steady state, not only its
  first survey of them) and the time from their expiry until `NAT_FWD` is empty,
  against issue #18's targets. `--gc-designs` adds prototypes of the other designs
  on maps of natgw's layout holding the same million (see \"Garbage collection
  designs\"): batched deletes alone (a full batched scan every tick); lazy expiry on
  lookup (`xdp_gc_lazy`, run by `xdp_replay`: the check's cost on a hit against the
  same program without it, the mappings left after 5 s idle past their timeout, the
  time one packet per endpoint takes to expire them); in-kernel expiry with
  `bpf_timer` (`xdp_gc_timer` on a BTF map whose values hold a `struct bpf_timer`:
  the million created with a timer each, the cost of re-arming on a hit, the time
  from the timeout to an empty table, the softirq time of `/proc/stat` and the
  `HRTIMER` count of `/proc/softirqs` while they live and when they fire). The
  measuring thread is pinned to one CPU, so the timers and their callbacks are too.
- **Charts** (`xtask/src/bench/charts.rs`, plotters' SVG backend, no font files):
  `--charts DIR` and `--write-docs` draw `bench-packets.svg` (the median packets per
  second of every mode per workload, whiskers from the slowest to the fastest
  repetition; a mode that could not run is named under the chart, not drawn) and
  `bench-cost.svg` (every per-packet cost case, its median and mean, the `xdp_pass`
  floor marked). `--from-json FILE` redraws them from a saved `--json` output;
  `--cost-only` runs the per-packet cost cases alone (empty table and a million
  mappings, without the garbage collection).

### WAN → LAN and connection setup (issue #18)

- **WAN → LAN** (`xtask/src/bench/inbound.rs`): every mode also runs the three UDP
  workloads the other way, each in a mode run of its own (`Direction::WanToLan` in
  `net.rs`: the generator sends from `brcv0` into `bwan0`, the receiver counts on
  `bgen0`, `bwan0`'s NAPI thread is the gateway's, the gateway has permanent neighbour
  entries for the internal addresses). Inbound packets need state, so before each
  window the generator sends the workload LAN → WAN (a warm-up, at least a second,
  up to five rounds) until every flow has its state, and the bench reads it back:
  natgw's mappings (`natgw mappings --json`) or conntrack's entries (`conntrack -L`),
  i.e. the external port the gateway chose for each flow. The WAN → LAN flows are the
  LAN → WAN flows reversed, from the remote endpoint each was made toward to its
  external endpoint, so natgw's filtering (endpoint-independent by default) and
  conntrack's 5-tuples both let them in; `xdp_gen` takes them from its flow table
  (`BENCH_GEN_FLOWS`). Plain forwarding and the XDP forwarder get the reversed flows
  straight to the internal addresses. A frame the gateway did not translate is
  addressed to the gateway itself and cannot reach `bgen0`, so the receiver's count is
  translated traffic; for natgw the bench also requires its inbound counters
  (`xdp_in_redirected` + `tc_in_translated`) to account for ≥ 95% of the frames
  counted, and fails the run otherwise. Rows and ratios: the `WAN→LAN` table of the
  output; in `--json` the `pps` entries `udp_*_wan_to_lan`, the `wan_to_lan` object
  (per workload: every mode, natgw's ratios in both directions) and `ratios` keys with
  the suffix `/wan-to-lan` (1k flows). nft flowtable has not run WAN → LAN on this
  machine (no `CONFIG_NF_FLOW_TABLE`); its priming and offload check are the
  LAN → WAN ones.
- **Connection setup, in the manner of RFC 9693** (`xtask/src/bench/setup.rs`,
  `--setup-only`, and in the full bench after the packet rates): natgw and nftables
  masquerade, UDP, every trial on a fresh topology and gateway (the state table starts
  empty). Preliminary phase: one datagram for each of 16,384 new connections (8,192
  with `--quick`), each from a new internal endpoint (500 per address, so natgw's
  per-host burst of 1,000 new mappings is never the limit), at the offered rate
  (`xdp_gen`'s `GEN_RATE`), to the receiver. Validation: the bench reads the state the
  gateway made and sends one datagram back on every connection from the WAN side (the
  RFC's real test phase, reduced to its check). A trial passes when every datagram
  reached the receiver at ≥ 95% of the offered rate, every connection has state and
  every validation datagram reached the internal host. The maximum connection
  establishment rate is a binary search over 0–2 M/s, 9 trials (7 with `--quick`).
  Table capacity: one trial at 50,000/s offering 40,960 connections with natgw at
  `--max-mappings 32768`; the capacity is the number of connections validated.
  Deviations from the RFC, for these machines: the generator never runs more than 192
  frames ahead of the receiver (the generator and the receiver share one CPU; without
  this a receiver ring overflowing while the generator spins would count as the
  gateway's loss), so a gateway that cannot keep up shows as a rate below the offered
  one rather than as loss — hence the 95% criterion; the kernel's `nf_conntrack_max`
  is one value for the whole host (read-only inside a network namespace), so nft runs
  at the host's limit instead of a size equal to natgw's, and its capacity row says
  what it held of what was offered; the RFC's connection tear-down rate is not
  measured (natgw has no tear-down for UDP: mappings expire, which the GC
  measurement covers). One search of both modes takes about a minute and a half.
";

/// Arguments of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    build: build::Args,

    /// About a minute: 3 repetitions of 1 s windows, half a million mappings.
    #[arg(long)]
    quick: bool,

    /// Print the results as JSON (progress still goes to standard error).
    #[arg(long)]
    json: bool,

    /// Also write the run into docs/benchmarks.md: the table, the machine and the
    /// command at the top, the charts, "How it measures" and the sections of the parts
    /// that ran; the page's other sections (observations, A/B records) are kept.
    #[arg(long)]
    write_docs: bool,

    /// Use this natgw binary instead of building one (with --ebpf-object).
    #[arg(
        long,
        value_name = "PATH",
        requires = "ebpf_object",
        conflicts_with = "ebpf_toolchain"
    )]
    natgw: Option<PathBuf>,

    /// Use this eBPF object for the bench's own programs (with --natgw).
    #[arg(long, value_name = "PATH", requires = "natgw")]
    ebpf_object: Option<PathBuf>,

    /// Only the garbage-collection measurement: natgw's CPU over a million live
    /// mappings and the time it takes to expire them (about a minute; half a million
    /// with --quick). Prints one line per repetition (--reps, default 1).
    #[arg(long, conflicts_with = "write_docs")]
    gc_only: bool,

    /// Only the garbage-collection designs (issue #18): natgw's collector (a timing
    /// wheel between surveys, batched deletes) as --gc-only measures it, then
    /// prototypes on BPF maps of natgw's layout holding the same million: a full
    /// batched scan every tick, lazy expiry on lookup (xdp_gc_lazy) and in-kernel
    /// expiry with bpf_timer (xdp_gc_timer); a table of the time to expire them, the
    /// CPU while they live and the per-packet cost each adds (about three minutes).
    /// --json prints it as JSON.
    #[arg(long, conflicts_with_all = ["write_docs", "gc_only"])]
    gc_designs: bool,

    /// Only the UPnP IGD measurement (issue #13): 1,000 AddPortMapping requests
    /// timed, then the controller's CPU while they are listed (about half a minute).
    /// Prints one block per repetition (--reps, default 1); with --write-docs it
    /// replaces only the UPnP section of docs/benchmarks.md.
    #[arg(long, conflicts_with = "gc_only")]
    upnp_only: bool,

    /// Only the TURN relay throughput (issue #14): one allocation of natgw's relay
    /// and of coturn's turnserver, 100- and 1200-byte payloads, --reps repetitions
    /// (default 5, --quick 3) alternating the two (about a minute). With --write-docs
    /// it replaces only the TURN section of docs/benchmarks.md.
    #[arg(long, conflicts_with_all = ["gc_only", "upnp_only"])]
    turn_only: bool,

    /// Only the packet rates (issue #18): natgw, nftables masquerade, nftables with a
    /// flowtable, plain forwarding, the bare XDP forwarder and the generator ceiling,
    /// interleaved, with natgw's ratios to them first (about three minutes with
    /// --quick). With --write-docs it replaces only its section of docs/benchmarks.md.
    #[arg(long, conflicts_with_all = ["gc_only", "upnp_only", "turn_only"])]
    packets_only: bool,

    /// Only the per-packet cost (issue #18): BPF_PROG_TEST_RUN on the programs natgw
    /// attached, one call per packet and program-only (`xdp_replay`, repeat
    /// 1,000,000), empty and at a million mappings (half a million with --quick), with
    /// the maps' memory; no packet rates and no garbage collection (about a minute).
    /// With --write-docs it writes only the cost chart. For A/B runs of two builds:
    /// pass each build's natgw and its eBPF object (--natgw, --ebpf-object).
    #[arg(long, conflicts_with_all = ["gc_only", "upnp_only", "turn_only", "packets_only"])]
    cost_only: bool,

    /// Also draw the charts as SVG into DIR: DIR/bench-packets.svg (packets per
    /// second per mode and workload) and DIR/bench-cost.svg (per-packet cost per
    /// case), those the run measured. --write-docs draws them into docs/ and embeds
    /// them near the top of docs/benchmarks.md.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["gc_only", "upnp_only", "turn_only"])]
    charts: Option<PathBuf>,

    /// Draw the charts from a saved `--json` output instead of running the bench
    /// (repeatable: e.g. a --packets-only and a --cost-only run); needs --charts DIR
    /// or --write-docs, which then writes only the charts and their block in
    /// docs/benchmarks.md. Needs neither root nor a build.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["gc_only", "upnp_only", "turn_only", "packets_only", "cost_only"]
    )]
    from_json: Vec<PathBuf>,

    /// Only the connection setup in the manner of RFC 9693 (issue #18): natgw's and
    /// nftables masquerade's maximum connection establishment rate (a binary search,
    /// a fresh gateway per trial) and their table capacity, every connection validated
    /// by a datagram back from the WAN side (about two minutes, one with --quick). With
    /// --write-docs it replaces only its section of docs/benchmarks.md.
    #[arg(long, conflicts_with_all = ["gc_only", "upnp_only", "turn_only", "packets_only", "cost_only", "from_json"])]
    setup_only: bool,

    /// Only state replication to a standby (issue #16): two natgw in a
    /// `testbed::Pair`, the replication lag (20 single mappings) and rate (a burst of
    /// 20,000 mappings), as the standby's pinned NAT_FWD shows them (about 30 s).
    /// With --write-docs it replaces only its section of docs/benchmarks.md.
    #[arg(long, conflicts_with_all = ["gc_only", "upnp_only", "turn_only", "packets_only", "cost_only", "from_json", "setup_only"])]
    ha_only: bool,

    /// Repetitions of every mode [default: 5, --quick 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    reps: Option<u32>,
}

/// `cargo xtask bench`.
pub fn run(args: &Args) -> Result<()> {
    if !args.from_json.is_empty() {
        return charts_from_json(args);
    }
    if !exec::is_root() {
        bail!(
            "the bench needs root: it creates network namespaces and veth pairs, loads BPF \
             programs and runs natgw; rerun `cargo xtask bench` as root"
        );
    }
    if cpu::online_cpus() < 2 {
        bail!("the bench needs 2 CPUs: one for the generator, one for the gateway");
    }
    let artifacts = match (&args.natgw, &args.ebpf_object) {
        (Some(natgw_bin), Some(ebpf_object)) => build::Artifacts {
            ebpf_object: ebpf_object.clone(),
            natgw_bin: natgw_bin.clone(),
        },
        _ => build::build_all(&args.build, Purpose::Bench)?,
    };
    if args.natgw.is_some() {
        // No build, so no provisioning above: the bench's tools still need to be there.
        crate::provision::ensure_bench_tools()?;
    }
    // The bench's policy: the first signal stops after the current step, a second
    // removes everything now.
    crate::signals::install_wake()?;
    crate::signals::install(&crate::signals::BENCH)?;
    if args.gc_only {
        return gc_only(args, &artifacts);
    }
    if args.gc_designs {
        return gc_designs(args, &artifacts);
    }
    match testbed::cleanup_stale() {
        Ok(0) => {}
        Ok(n) => eprintln!("xtask bench: removed {n} namespaces left by killed runs"),
        Err(e) => eprintln!("xtask bench: removing stale namespaces: {}", e.chain()),
    }
    if args.upnp_only {
        return upnp_only(args, &artifacts);
    }
    if args.ha_only {
        return ha_only(args, &artifacts);
    }
    if args.turn_only {
        return turn_only(args, &artifacts);
    }
    if args.cost_only {
        return cost_only(args, &artifacts);
    }

    let plan = Plan {
        reps: args
            .reps
            .map_or(if args.quick { 3 } else { 5 }, |n| n as usize),
        warmup: Duration::from_millis(if args.quick { 500 } else { 1000 }),
        window: Duration::from_millis(if args.quick { 1000 } else { 2000 }),
        syn_burst: 16_384,
    };
    let busy = cpu::machine_busy(Duration::from_secs(1))?;
    if busy > 20.0 {
        eprintln!(
            "xtask bench: warning: {busy:.0}% of the CPUs were busy before the bench started; \
             other load takes CPU from the generator and the gateway (the bench's threads run \
             at nice -20 and the `other` CPU column shows what the rest took)"
        );
    }
    let mut machine = machine(args);
    machine.busy_before_pct = busy;
    let log_dir = throughput::log_dir();
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;

    let _boost = cpu::AutogroupBoost::raise();
    let mut results = Results::default();
    let mut rig = Rig {
        natgw_bin: &artifacts.natgw_bin,
        log_dir: &log_dir,
        tools: programs::Tools::load(&artifacts.ebpf_object)?,
    };
    let setup_plan = setup::SetupPlan::new(args.quick);
    if args.setup_only {
        let unavailable: Vec<_> = flowtable::unsupported()?
            .map(|why| (throughput::Mode::NftFlowtable, why))
            .into_iter()
            .collect();
        eprintln!("xtask bench: connection setup (RFC 9693)");
        let s = setup::run(&mut rig, &setup_plan, &unavailable)?;
        return setup_only(args, &machine, &s);
    }
    throughput::run(&mut rig, &plan, &mut results)?;
    if args.packets_only {
        return packets_only(args, &machine, &plan, &results);
    }
    eprintln!("xtask bench: connection setup (RFC 9693)");
    let setup = setup::run(&mut rig, &setup_plan, &results.unavailable)?;
    let mut costs = cost::CostResults::default();
    eprintln!("xtask bench: per-packet cost and a million mappings");
    cost::run(
        &mut rig.tools,
        &artifacts.natgw_bin,
        &log_dir,
        args.quick,
        &mut costs,
    )?;
    eprintln!("xtask bench: UPnP IGD control");
    let upnp = upnp::run(&artifacts.natgw_bin, &log_dir)?;
    eprintln!("xtask bench: TURN relay throughput, natgw and coturn");
    let turn = turn::run(&artifacts.natgw_bin, &log_dir, &turn_plan(args))?;

    let report = Report {
        machine: &machine,
        plan: &plan,
        throughput: &results,
        cost: &costs,
        upnp: Some(&upnp),
        turn: Some(&turn),
        setup: Some(&setup),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.text());
    }
    if args.write_docs {
        let path = paths::workspace_root().join("docs/benchmarks.md");
        // A missing page is written whole.
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, report.update_docs(&doc))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask bench: wrote {}", path.display());
    }
    write_charts(
        args,
        Some(&PacketChart::from_results(&machine, plan.reps, &results)),
        CostChart::from_results(&machine, &costs).as_ref(),
    )
}

/// Draws the charts into `--charts DIR` and, with `--write-docs`, into docs/ with
/// their block in docs/benchmarks.md (the chart not drawn keeps its old paragraph).
fn write_charts(
    args: &Args,
    packets: Option<&PacketChart>,
    cost: Option<&CostChart>,
) -> Result<()> {
    let mut dirs: Vec<PathBuf> = args.charts.iter().cloned().collect();
    if args.write_docs {
        dirs.push(paths::workspace_root().join("docs"));
    }
    for dir in &dirs {
        for path in charts::write(dir, packets, cost)? {
            eprintln!("xtask bench: drew {}", path.display());
        }
    }
    if args.write_docs && (packets.is_some() || cost.is_some()) {
        let path = paths::workspace_root().join("docs/benchmarks.md");
        let doc = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let doc = charts::update_docs(&doc, packets.map(|c| &c.run), cost.map(|c| &c.run));
        std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask bench: wrote the charts block of {}", path.display());
    }
    Ok(())
}

/// `cargo xtask bench --from-json FILE...`: the charts of saved runs.
fn charts_from_json(args: &Args) -> Result<()> {
    if args.charts.is_none() && !args.write_docs {
        bail!("--from-json draws charts: give --charts DIR or --write-docs");
    }
    let (mut packets, mut cost) = (None, None);
    for file in &args.from_json {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not JSON (the output of `cargo xtask bench --json`)",
                file.display()
            )
        })?;
        let (p, c) = (PacketChart::from_json(&v), CostChart::from_json(&v));
        if p.is_none() && c.is_none() {
            bail!(
                "{} holds neither packet rates (`pps`) nor per-packet costs (`cost.rows`): \
                 save the output of `cargo xtask bench --json` (or --packets-only / \
                 --cost-only with --json)",
                file.display()
            );
        }
        packets = p.or(packets);
        cost = c.or(cost);
    }
    write_charts(args, packets.as_ref(), cost.as_ref())
}

/// `cargo xtask bench --cost-only`: the per-packet cost alone.
fn cost_only(args: &Args, artifacts: &build::Artifacts) -> Result<()> {
    let log_dir = throughput::log_dir();
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let busy = cpu::machine_busy(Duration::from_secs(1))?;
    let mut machine = machine(args);
    machine.busy_before_pct = busy;
    let _boost = cpu::AutogroupBoost::raise();
    let mut tools = programs::Tools::load(&artifacts.ebpf_object)?;
    let mut costs = cost::CostResults::default();
    eprintln!("xtask bench: per-packet cost, empty and at a million mappings");
    cost::per_packet(
        &mut tools,
        &artifacts.natgw_bin,
        &log_dir,
        args.quick,
        &mut costs,
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "machine": machine,
                "cost": costs,
                "cost_targets": costs.targets(),
            }))?
        );
    } else {
        print!("{}", report::cost_only_text(&machine, &costs));
    }
    write_charts(
        args,
        None,
        CostChart::from_results(&machine, &costs).as_ref(),
    )
}

/// `cargo xtask bench --gc-only`: the garbage-collection test alone, `--reps` times.
fn gc_only(args: &Args, artifacts: &build::Artifacts) -> Result<()> {
    let log_dir = throughput::log_dir();
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let _boost = cpu::AutogroupBoost::raise();
    let mut tools = programs::Tools::load(&artifacts.ebpf_object)?;
    let mappings = if args.quick {
        cost::SCALE_MAPPINGS / 2
    } else {
        cost::SCALE_MAPPINGS
    };
    let mut runs = Vec::new();
    for _ in 0..args.reps.unwrap_or(1) {
        let g = cost::gc(&mut tools, &artifacts.natgw_bin, &log_dir, mappings)?;
        if !args.json {
            println!("{}", report::gc_line(&g));
        }
        runs.push(g);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    }
    Ok(())
}

/// `cargo xtask bench --gc-designs`: the garbage-collection designs, `--reps` times.
fn gc_designs(args: &Args, artifacts: &build::Artifacts) -> Result<()> {
    let log_dir = throughput::log_dir();
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let _boost = cpu::AutogroupBoost::raise();
    let mut tools = programs::Tools::load(&artifacts.ebpf_object)?;
    let mappings = if args.quick {
        cost::SCALE_MAPPINGS / 2
    } else {
        cost::SCALE_MAPPINGS
    };
    let mut runs = Vec::new();
    for _ in 0..args.reps.unwrap_or(1) {
        let (g, rows) = gc_designs::run(&mut tools, &artifacts.natgw_bin, &log_dir, mappings)?;
        if !args.json {
            println!("{}", report::gc_line(&g));
            print!("{}", gc_designs::table(&rows, mappings));
        }
        runs.push(serde_json::json!({ "gc": g, "gc_designs": rows }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    }
    Ok(())
}

/// `cargo xtask bench --ha-only`: the replication measurement alone, `--reps` times.
fn ha_only(args: &Args, artifacts: &build::Artifacts) -> Result<()> {
    let log_dir = throughput::log_dir();
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let machine = machine(args);
    let mut runs = Vec::new();
    for _ in 0..args.reps.unwrap_or(1) {
        let r = ha::run(&artifacts.natgw_bin, &log_dir)?;
        if !args.json {
            print!("{}", ha::text(&r));
        }
        runs.push(r);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "machine": machine,
                "ha": runs,
            }))?
        );
    }
    if args.write_docs {
        let section = ha::markdown(&runs, &machine.date, &machine.command);
        write_doc_section(ha::HEADING, &section, "replication")?;
    }
    Ok(())
}

/// `cargo xtask bench --upnp-only`: the UPnP measurement alone, `--reps` times.
fn upnp_only(args: &Args, artifacts: &build::Artifacts) -> Result<()> {
    let log_dir = throughput::log_dir();
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let machine = machine(args);
    let _boost = cpu::AutogroupBoost::raise();
    let mut runs = Vec::new();
    for _ in 0..args.reps.unwrap_or(1) {
        let r = upnp::run(&artifacts.natgw_bin, &log_dir)?;
        if !args.json {
            print!("{}", upnp::text(&r));
        }
        runs.push(r);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "machine": machine,
                "upnp": runs,
            }))?
        );
    }
    if args.write_docs {
        let section = upnp::markdown(&runs, &machine.date, &machine.command);
        write_doc_section(upnp::HEADING, &section, "UPnP")?;
    }
    Ok(())
}

/// The end of `cargo xtask bench --packets-only`: prints (or writes) the packet-rate
/// part alone.
fn packets_only(args: &Args, machine: &Machine, plan: &Plan, results: &Results) -> Result<()> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::packets_json(machine, plan, results))?
        );
    } else {
        print!("{}", report::packets_text(machine, plan, results));
    }
    if args.write_docs {
        let section = report::packets_markdown(machine, plan, results);
        write_doc_section(report::PACKETS_HEADING, &section, "packet-rate")?;
    }
    write_charts(
        args,
        Some(&PacketChart::from_results(machine, plan.reps, results)),
        None,
    )
}

/// The end of `cargo xtask bench --setup-only`: prints (or writes) the setup part.
fn setup_only(args: &Args, machine: &Machine, s: &setup::SetupResults) -> Result<()> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "machine": machine,
                "connection_setup": setup::json(s),
            }))?
        );
    } else {
        print!("{}", setup::text(s));
    }
    if args.write_docs {
        let section = setup::markdown(s, &machine.date, &machine.command);
        write_doc_section(setup::HEADING, &section, "setup")?;
    }
    Ok(())
}

/// The TURN part's repetitions and times.
fn turn_plan(args: &Args) -> turn::TurnPlan {
    turn::TurnPlan {
        reps: args
            .reps
            .map_or(if args.quick { 3 } else { 5 }, |n| n as usize),
        warmup: Duration::from_millis(if args.quick { 300 } else { 500 }),
        window: Duration::from_millis(if args.quick { 1000 } else { 2000 }),
    }
}

/// `cargo xtask bench --turn-only`: the TURN relay throughput alone.
fn turn_only(args: &Args, artifacts: &build::Artifacts) -> Result<()> {
    let log_dir = throughput::log_dir();
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let machine = machine(args);
    let _boost = cpu::AutogroupBoost::raise();
    let r = turn::run(&artifacts.natgw_bin, &log_dir, &turn_plan(args))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "machine": machine,
                "turn": r,
            }))?
        );
    } else {
        print!("{}", turn::text(&r));
    }
    if args.write_docs {
        let section = turn::markdown(&r, &machine);
        write_doc_section(turn::HEADING, &section, "TURN")?;
    }
    Ok(())
}

/// Replaces the section under `heading` of docs/benchmarks.md with `section` (the
/// `--write-docs` of one part; `what` names it in the message).
fn write_doc_section(heading: &str, section: &str, what: &str) -> Result<()> {
    let path = paths::workspace_root().join("docs/benchmarks.md");
    let doc =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    std::fs::write(&path, report::replace_section(&doc, heading, section))
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "xtask bench: wrote the {what} section of {}",
        path.display()
    );
    Ok(())
}

/// The machine, the date and the command line.
fn machine(args: &Args) -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".to_owned(), |(_, v)| v.trim().to_owned());
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or_else(|| "Linux".to_owned(), |v| v.trim_matches('"').to_owned());
    let mut command = "cargo xtask bench".to_owned();
    if args.quick {
        command.push_str(" --quick");
    }
    if args.upnp_only {
        command.push_str(" --upnp-only");
    }
    if args.turn_only {
        command.push_str(" --turn-only");
    }
    if args.packets_only {
        command.push_str(" --packets-only");
    }
    if args.cost_only {
        command.push_str(" --cost-only");
    }
    if args.setup_only {
        command.push_str(" --setup-only");
    }
    if args.ha_only {
        command.push_str(" --ha-only");
    }
    if let Some(n) = args.reps {
        command.push_str(&format!(" --reps {n}"));
    }
    if let (Some(natgw), Some(object)) = (&args.natgw, &args.ebpf_object) {
        command.push_str(&format!(
            " --natgw {} --ebpf-object {}",
            natgw.display(),
            object.display()
        ));
    }
    Machine {
        cpu,
        cpus: cpu::online_cpus(),
        memory_gib,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        os,
        date: utc_now(),
        command,
        busy_before_pct: 0.0,
    }
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}
