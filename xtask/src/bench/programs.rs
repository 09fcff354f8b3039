//! The bench's own copies of natgw's eBPF object (the file `cargo xtask build` wrote,
//! the same bytes natgw embeds), loaded with aya for the programs of
//! `natgw-ebpf/src/bench.rs`:
//!
//! [`Tools`] holds `xdp_pass`, `xdp_count_drop` (the receiver's counts in `BENCH_RX`),
//! `xdp_fwd` (the bare XDP forwarder of the `xdp-forward` mode), `xdp_gen` (configured
//! through `BENCH_GEN_CFG` and `BENCH_GEN_TPL`) and `xdp_replay` (the same frames, then a
//! tail call through `BENCH_REPLAY`) in one
//! instance, because the generator paces itself by the receiver's count. aya creates
//! every map of the object, natgw's NAT tables included; they stay empty.

use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::Path;

use anyhow::{Context as _, Result};
use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues};
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use natgw_common::bench::{
    names as map_names, GEN_ENDPOINTS, GEN_FLOWS, GEN_FLOW_LEN, GEN_IN_FLIGHT, GEN_LIMIT,
    GEN_PORTS_PER_ADDR, GEN_RATE, GEN_TABLE, GEN_TABLE_MAX, RX_ALL, RX_FIRST_NS, RX_LAST_NS,
    RX_PACKETS, SEQ_SENT, SEQ_START_NS,
};
use testbed::Netns;

use super::frames::FRAME_LEN;

/// Program names in the object (natgw-ebpf/src/main.rs).
pub mod names {
    /// `XDP_PASS` and nothing else.
    pub const XDP_PASS: &str = "xdp_pass";
    /// The receiver.
    pub const XDP_COUNT_DROP: &str = "xdp_count_drop";
    /// The generator.
    pub const XDP_GEN: &str = "xdp_gen";
    /// The bare XDP forwarder (the `xdp-forward` mode).
    pub const XDP_FWD: &str = "xdp_fwd";
    /// The generator's frames, handed to another program by a tail call.
    pub const XDP_REPLAY: &str = "xdp_replay";
}

/// What the receiver counted, summed over CPUs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rx {
    /// Frames.
    pub packets: u64,
    /// Earliest first arrival (`CLOCK_MONOTONIC` ns; 0: none).
    pub first_ns: u64,
    /// Latest arrival.
    pub last_ns: u64,
}

/// `xdp_pass`, `xdp_count_drop`, `xdp_fwd`, `xdp_gen` and `xdp_replay`.
pub struct Tools {
    ebpf: Ebpf,
    object: std::path::PathBuf,
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .with_context(|| format!("the eBPF object has no program {name}: rebuild it"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

fn fd<'a>(ebpf: &'a Ebpf, name: &str) -> Result<BorrowedFd<'a>> {
    let prog: &Xdp = ebpf
        .program(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))?;
    Ok(prog
        .fd()
        .with_context(|| format!("{name} is not loaded"))?
        .as_fd())
}

impl Tools {
    /// Loads `xdp_pass`, `xdp_count_drop`, `xdp_gen`, `xdp_fwd` and `xdp_replay` from
    /// `object`.
    pub fn load(object: &Path) -> Result<Tools> {
        Tools::load_with(object, &[], &[])
    }

    /// As [`Tools::load`], with the maps named in `max_entries` given that many
    /// entries and the `extra` XDP programs loaded too (the GC prototypes).
    pub fn load_with(object: &Path, max_entries: &[(&str, u32)], extra: &[&str]) -> Result<Tools> {
        let mut loader = aya::EbpfLoader::new();
        for (name, n) in max_entries {
            loader.map_max_entries(name, *n);
        }
        let mut ebpf = loader
            .load_file(object)
            .with_context(|| format!("loading {} with aya", object.display()))?;
        for name in [
            names::XDP_PASS,
            names::XDP_COUNT_DROP,
            names::XDP_GEN,
            names::XDP_FWD,
            names::XDP_REPLAY,
        ]
        .iter()
        .chain(extra)
        {
            xdp(&mut ebpf, name)?
                .load()
                .with_context(|| format!("loading {name}"))?;
        }
        Ok(Tools {
            ebpf,
            object: object.to_path_buf(),
        })
    }

    /// The object these programs came from.
    pub fn object(&self) -> &Path {
        &self.object
    }

    /// A loaded XDP program of the object, for `BPF_PROG_TEST_RUN` or a tail call.
    pub fn prog_fd(&self, name: &str) -> Result<BorrowedFd<'_>> {
        fd(&self.ebpf, name)
    }

    /// The map `name` of the object.
    pub fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("the eBPF object has no map {name}: rebuild it"))
    }

    /// The map `name` of the object, writable.
    pub fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("the eBPF object has no map {name}: rebuild it"))
    }

    /// Attaches program `name` to `ifindex` in `ns` (native mode); detached when the
    /// link is dropped or the interface disappears.
    pub fn attach(&mut self, name: &str, ns: &Netns, ifindex: u32) -> Result<XdpLink> {
        let prog = xdp(&mut self.ebpf, name)?;
        let id = ns
            .try_run(|| prog.attach_to_if_index(ifindex, XdpMode::Driver))?
            .with_context(|| format!("attaching {name} to ifindex {ifindex} in {}", ns.name()))?;
        prog.take_link(id).context("taking the XDP link")
    }

    /// `xdp_pass`, for `BPF_PROG_TEST_RUN`.
    pub fn pass_fd(&self) -> Result<BorrowedFd<'_>> {
        fd(&self.ebpf, names::XDP_PASS)
    }

    fn rx_map(&self) -> Result<PerCpuArray<&MapData, u64>> {
        let map = self
            .ebpf
            .map(map_names::BENCH_RX)
            .context("no map BENCH_RX")?;
        PerCpuArray::try_from(map).context("BENCH_RX")
    }

    /// What `xdp_count_drop` counted since [`Tools::reset_rx`].
    pub fn rx(&self) -> Result<Rx> {
        let map = self.rx_map()?;
        let slot = |i: u32| map.get(&i, 0).context("reading BENCH_RX");
        let sum = |v: &PerCpuValues<u64>| v.iter().copied().fold(0u64, u64::wrapping_add);
        let firsts = slot(RX_FIRST_NS)?;
        Ok(Rx {
            packets: sum(&slot(RX_PACKETS)?),
            first_ns: firsts
                .iter()
                .copied()
                .filter(|&t| t != 0)
                .min()
                .unwrap_or(0),
            last_ns: slot(RX_LAST_NS)?.iter().copied().max().unwrap_or(0),
        })
    }

    /// Zeroes the receiver's counts.
    pub fn reset_rx(&mut self) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(map_names::BENCH_RX)
            .context("no map BENCH_RX")?;
        let mut map: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(map).context("BENCH_RX")?;
        let cpus = nr_cpus()?;
        for i in RX_ALL {
            let zeros = PerCpuValues::try_from(vec![0u64; cpus]).context("zeros")?;
            map.set(i, zeros, 0).context("zeroing BENCH_RX")?;
        }
        let total = self
            .ebpf
            .map_mut(map_names::BENCH_RX_TOTAL)
            .context("no map BENCH_RX_TOTAL")?;
        let mut total: Array<&mut MapData, u64> =
            Array::try_from(total).context("BENCH_RX_TOTAL")?;
        total.set(0, 0, 0).context("zeroing BENCH_RX_TOTAL")
    }
}

/// One explicit flow of the generator's table: who sends to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    /// Source address and port.
    pub src: std::net::SocketAddrV4,
    /// Destination address and port.
    pub dst: std::net::SocketAddrV4,
}

impl Tuple {
    /// The same flow seen from the other end.
    #[must_use]
    pub fn reversed(self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
        }
    }

    /// The `BENCH_GEN_FLOWS` entry.
    fn entry(self) -> [u8; GEN_FLOW_LEN] {
        let mut e = [0u8; GEN_FLOW_LEN];
        e[0..4].copy_from_slice(&self.src.ip().octets());
        e[4..8].copy_from_slice(&self.dst.ip().octets());
        e[8..10].copy_from_slice(&self.src.port().to_be_bytes());
        e[10..12].copy_from_slice(&self.dst.port().to_be_bytes());
        e
    }
}

/// How the generator varies its frames.
#[derive(Debug, Clone, Copy)]
pub struct FlowSpec {
    /// Flows cycled through.
    pub flows: u32,
    /// Distinct internal endpoints among them.
    pub endpoints: u32,
    /// Source ports per source address.
    pub ports_per_addr: u32,
}

impl Tools {
    /// `xdp_gen`, for live-frame `BPF_PROG_TEST_RUN`.
    pub fn gen_fd(&self) -> Result<BorrowedFd<'_>> {
        fd(&self.ebpf, names::XDP_GEN)
    }

    /// `xdp_replay`, for `BPF_PROG_TEST_RUN` with a large repeat count.
    pub fn replay_fd(&self) -> Result<BorrowedFd<'_>> {
        fd(&self.ebpf, names::XDP_REPLAY)
    }

    /// Makes `xdp_replay` hand its frames to `prog` (any XDP program, natgw's too).
    pub fn set_replay_target(&self, prog: BorrowedFd<'_>) -> Result<()> {
        super::bpf::prog_array_set(self.replay_map()?, 0, prog)
            .context("setting xdp_replay's target in BENCH_REPLAY")
    }

    /// Empties `xdp_replay`'s slot, releasing the program in it.
    pub fn clear_replay_target(&self) -> Result<()> {
        super::bpf::prog_array_clear(self.replay_map()?, 0)
    }

    fn replay_map(&self) -> Result<BorrowedFd<'_>> {
        let map = self
            .ebpf
            .map(map_names::BENCH_REPLAY)
            .context("the eBPF object has no map BENCH_REPLAY: rebuild it")?;
        match map {
            aya::maps::Map::ProgramArray(data) => Ok(data.fd().as_fd()),
            _ => anyhow::bail!("BENCH_REPLAY is not a program array"),
        }
    }

    /// Sets the generator up: flow 0's frame, how flows vary, how many frames to send
    /// at most (0: no limit) and how many may be in flight (0: no pacing); restarts
    /// its sequence and the receiver's counts.
    pub fn configure_gen(
        &mut self,
        template: &[u8; FRAME_LEN],
        spec: FlowSpec,
        limit: u32,
        in_flight: u32,
    ) -> Result<()> {
        {
            let map = self
                .ebpf
                .map_mut(map_names::BENCH_GEN_TPL)
                .context("no map BENCH_GEN_TPL")?;
            let mut map: Array<&mut MapData, [u8; FRAME_LEN]> =
                Array::try_from(map).context("BENCH_GEN_TPL")?;
            map.set(0, template, 0).context("writing BENCH_GEN_TPL")?;
        }
        {
            let map = self
                .ebpf
                .map_mut(map_names::BENCH_GEN_CFG)
                .context("no map BENCH_GEN_CFG")?;
            let mut map: Array<&mut MapData, u32> =
                Array::try_from(map).context("BENCH_GEN_CFG")?;
            for (slot, value) in [
                (GEN_FLOWS, spec.flows),
                (GEN_ENDPOINTS, spec.endpoints),
                (GEN_PORTS_PER_ADDR, spec.ports_per_addr),
                (GEN_LIMIT, limit),
                (GEN_IN_FLIGHT, in_flight),
                (GEN_TABLE, 0),
                (GEN_RATE, 0),
            ] {
                map.set(slot, value, 0).context("writing BENCH_GEN_CFG")?;
            }
        }
        let cpus = nr_cpus()?;
        let map = self
            .ebpf
            .map_mut(map_names::BENCH_GEN_SEQ)
            .context("no map BENCH_GEN_SEQ")?;
        let mut map: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(map).context("BENCH_GEN_SEQ")?;
        for slot in [SEQ_SENT, SEQ_START_NS] {
            let zeros = PerCpuValues::try_from(vec![0u64; cpus]).context("zeros")?;
            map.set(slot, zeros, 0).context("zeroing BENCH_GEN_SEQ")?;
        }
        self.reset_rx()
    }

    /// After [`Tools::configure_gen`]: flow `f` is `flows[f]` (its addresses and ports
    /// replace the template's), for the `flows.len()` flows the spec must name.
    pub fn set_flow_table(&mut self, flows: &[Tuple]) -> Result<()> {
        if flows.len() > GEN_TABLE_MAX as usize {
            anyhow::bail!(
                "{} flows do not fit the generator's table of {GEN_TABLE_MAX}",
                flows.len()
            );
        }
        {
            let map = self
                .ebpf
                .map_mut(map_names::BENCH_GEN_FLOWS)
                .context("no map BENCH_GEN_FLOWS")?;
            let mut map: Array<&mut MapData, [u8; GEN_FLOW_LEN]> =
                Array::try_from(map).context("BENCH_GEN_FLOWS")?;
            for (i, t) in flows.iter().enumerate() {
                map.set(i as u32, t.entry(), 0)
                    .context("writing BENCH_GEN_FLOWS")?;
            }
        }
        self.set_cfg(GEN_TABLE, 1)
    }

    /// After [`Tools::configure_gen`]: at most `pps` frames per second (0: no limit).
    pub fn set_rate(&mut self, pps: u32) -> Result<()> {
        self.set_cfg(GEN_RATE, pps)
    }

    fn set_cfg(&mut self, slot: u32, value: u32) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(map_names::BENCH_GEN_CFG)
            .context("no map BENCH_GEN_CFG")?;
        let mut map: Array<&mut MapData, u32> = Array::try_from(map).context("BENCH_GEN_CFG")?;
        map.set(slot, value, 0).context("writing BENCH_GEN_CFG")
    }
}

fn nr_cpus() -> Result<usize> {
    aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))
}
