//! The few bpf(2) commands aya 0.14 does not offer, called directly through
//! [`natgw_common::batch::bpf`]: running a program with `BPF_PROG_TEST_RUN` (measured
//! and live-frame modes), "is this map empty" and "how many entries", opening a
//! program by id, and a map's memory from fdinfo. Batch updates of hash maps are
//! [`natgw_common::batch::update_batch`].

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd};

use anyhow::{Context as _, Result};
use natgw_common::batch::bpf;

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: run in live-frame mode (the frames really go out).
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// `struct xdp_md` as `BPF_PROG_TEST_RUN` takes it in `ctx_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Debug, Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The start of `struct __sk_buff` up to `ifindex`, as `BPF_PROG_TEST_RUN` takes it
/// for a TC program (the kernel zero-fills the rest).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SkBuffHead {
    len: u32,
    pkt_type: u32,
    mark: u32,
    queue_mapping: u32,
    protocol: u32,
    vlan_present: u32,
    vlan_tci: u32,
    vlan_proto: u32,
    priority: u32,
    ingress_ifindex: u32,
    ifindex: u32,
}

/// The `query` member of `union bpf_attr`.
#[repr(C)]
#[derive(Debug, Default)]
struct QueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// `BPF_TCX_INGRESS`.
pub const TCX_INGRESS: u32 = 46;
/// `BPF_TCX_EGRESS`.
pub const TCX_EGRESS: u32 = 47;

/// The map element members of `union bpf_attr`.
#[repr(C)]
#[derive(Debug, Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
    flags: u64,
}

/// `prog_id` etc. of `union bpf_attr` (`BPF_*_GET_FD_BY_ID`).
#[repr(C)]
#[derive(Debug, Default)]
struct GetIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Result of one measured run.
#[derive(Debug, Clone, Copy)]
pub struct TestRun {
    /// The program's return value (its XDP action).
    pub retval: u32,
    /// Mean duration of one repetition in ns, as the kernel measured it.
    pub duration_ns: u32,
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

/// Runs the XDP program `prog` `repeat` times on `frame`, as if received on
/// `ingress_ifindex` of the calling thread's namespace (0: none). Nothing is sent.
pub fn test_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
) -> Result<TestRun> {
    let ctx = XdpMd {
        data_end: u32::try_from(frame.len()).context("frame length")?,
        ingress_ifindex,
        ..XdpMd::default()
    };
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: fd_u32(prog),
        data_size_in: ctx.data_end,
        data_size_out: u32::try_from(out.len()).context("buffer length")?,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: std::ptr::from_ref(&ctx) as u64,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is the `test` member of `union bpf_attr`; `frame`, `out` and
    // `ctx` outlive the call, and the kernel writes at most `data_size_out` bytes
    // into `out`.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }.context("BPF_PROG_TEST_RUN")?;
    Ok(TestRun {
        retval: attr.retval,
        duration_ns: attr.duration,
    })
}

/// Runs the TC program `prog` once on `frame` as a socket buffer received on
/// `ifindex` of the calling thread's namespace. Nothing is sent.
pub fn test_run_skb(prog: BorrowedFd<'_>, frame: &[u8], ifindex: u32) -> Result<TestRun> {
    let ctx = SkBuffHead {
        ingress_ifindex: ifindex,
        ifindex,
        ..SkBuffHead::default()
    };
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: fd_u32(prog),
        data_size_in: u32::try_from(frame.len()).context("frame length")?,
        data_size_out: u32::try_from(out.len()).context("buffer length")?,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ctx_size_in: std::mem::size_of::<SkBuffHead>() as u32,
        ctx_in: std::ptr::from_ref(&ctx) as u64,
        ..TestRunAttr::default()
    };
    // SAFETY: as in `test_run`, with an `__sk_buff` head as the context.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }.context("BPF_PROG_TEST_RUN (TC)")?;
    Ok(TestRun {
        retval: attr.retval,
        duration_ns: attr.duration,
    })
}

/// The ids of the programs attached to `ifindex` (in the calling thread's namespace)
/// at `attach_type` through tcx.
pub fn tcx_prog_ids(ifindex: u32, attach_type: u32) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 16];
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: u32::try_from(ids.len()).unwrap_or(0),
        ..QueryAttr::default()
    };
    // SAFETY: `attr` is the `query` member of `union bpf_attr`; the kernel writes at
    // most `prog_cnt` ids into `ids`, which outlives the call.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }.context("BPF_PROG_QUERY")?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// How a live-frame run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveRun {
    /// All repetitions ran.
    Done,
    /// A signal cut it short (`EINTR`).
    Interrupted,
}

/// Runs the XDP program `prog` `repeat` times in live-frame mode: every run gets a
/// copy of `frame` (or a recycled page holding what the last user left in it) as if
/// received on `ingress_ifindex`, and its verdict is carried out — `XDP_TX` sends the
/// frame out of that interface. Batches of `batch` frames (at most 256). A signal to
/// the calling thread ends it early. Each call sets up and tears down a page pool,
/// which takes tens of milliseconds (RCU grace periods), so call it with a large
/// `repeat`.
pub fn live_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
    batch: u32,
) -> Result<LiveRun> {
    let ctx = XdpMd {
        data_end: u32::try_from(frame.len()).context("frame length")?,
        ingress_ifindex,
        ..XdpMd::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: fd_u32(prog),
        data_size_in: ctx.data_end,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: std::ptr::from_ref(&ctx) as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: batch,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is the `test` member of `union bpf_attr`; `frame` and `ctx`
    // outlive the call, and live-frame mode writes no output.
    match unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) } {
        Ok(_) => Ok(LiveRun::Done),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(LiveRun::Interrupted),
        Err(e) => Err(e).context("BPF_PROG_TEST_RUN in live-frame mode"),
    }
}

/// Whether hash map `map` (keys of `key_size` bytes) holds no entry: one
/// `BPF_MAP_GET_NEXT_KEY` from no key, however large the map.
pub fn is_empty(map: BorrowedFd<'_>, key_size: usize) -> Result<bool> {
    let mut next = vec![0u8; key_size];
    let mut attr = ElemAttr {
        map_fd: fd_u32(map),
        next_key: next.as_mut_ptr() as u64,
        ..ElemAttr::default()
    };
    // SAFETY: the map element members of `union bpf_attr`; the kernel writes one
    // key of the map's size, `key_size`, into `next`, which outlives the call.
    match unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(true),
        Err(e) => Err(e).context("BPF_MAP_GET_NEXT_KEY"),
    }
}

/// Puts program `prog` into slot `index` of program array `map` (any loaded program
/// of the owner's type, natgw's own included: aya's `ProgramArray` takes only
/// programs of its own object).
pub fn prog_array_set(map: BorrowedFd<'_>, index: u32, prog: BorrowedFd<'_>) -> Result<()> {
    let value = fd_u32(prog);
    let mut attr = ElemAttr {
        map_fd: fd_u32(map),
        key: std::ptr::from_ref(&index) as u64,
        next_key: std::ptr::from_ref(&value) as u64,
        ..ElemAttr::default()
    };
    // SAFETY: the map element members of `union bpf_attr` (`next_key` is `value`);
    // key and value are 4-byte integers that outlive the call.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }
        .context("BPF_MAP_UPDATE_ELEM (program array)")?;
    Ok(())
}

/// Empties slot `index` of program array `map` (an empty slot is fine).
pub fn prog_array_clear(map: BorrowedFd<'_>, index: u32) -> Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd_u32(map),
        key: std::ptr::from_ref(&index) as u64,
        ..ElemAttr::default()
    };
    // SAFETY: as in `prog_array_set`, without a value.
    match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e).context("BPF_MAP_DELETE_ELEM (program array)"),
    }
}

/// How many entries hash map `map` (keys of `key_size` bytes, at most `max_entries`
/// of them) holds: a walk with `BPF_MAP_GET_NEXT_KEY`, bounded by `max_entries`
/// steps. The walk is exact while nothing deletes entries meanwhile (a deletion can
/// make the kernel restart it from the first bucket).
pub fn count_entries(map: BorrowedFd<'_>, key_size: usize, max_entries: u32) -> Result<u64> {
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut count = 0u64;
    while count <= u64::from(max_entries) {
        let mut attr = ElemAttr {
            map_fd: fd_u32(map),
            key: if count == 0 { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
            ..ElemAttr::default()
        };
        // SAFETY: the map element members of `union bpf_attr`; the kernel reads one
        // key of `key_size` bytes from `key` (none on the first call) and writes one
        // into `next`; both outlive the call.
        match unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            Ok(_) => count += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(count),
            Err(e) => return Err(e).context("BPF_MAP_GET_NEXT_KEY"),
        }
        std::mem::swap(&mut key, &mut next);
    }
    anyhow::bail!("walking a map of {max_entries} entries did not end")
}

/// A file descriptor for the loaded program with id `id`.
pub fn prog_fd_by_id(id: u32) -> Result<OwnedFd> {
    let mut attr = GetIdAttr {
        id,
        ..GetIdAttr::default()
    };
    // SAFETY: `prog_id` etc. of `union bpf_attr`, pointing to nothing.
    let fd = unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }
        .with_context(|| format!("BPF_PROG_GET_FD_BY_ID {id}"))?;
    let fd = i32::try_from(fd).context("program fd")?;
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The memory the kernel charges to the BPF object behind `fd` (`memlock` in its
/// fdinfo), in bytes.
pub fn memlock(fd: BorrowedFd<'_>) -> Result<u64> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let info = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{path} has no memlock line"))
}
