//! The per-host rules of RFC 6888 where the data path creates a mapping: the limit
//! on a host's external ports per protocol (REQ-4), its bucket of new mappings
//! (REQ-4c), and the hold-down that keeps a freed port from other hosts (REQ-8).
//! Layouts and arithmetic are `natgw_common::limits`'; this is the map access.
//!
//! The programs that create mappings are close to the verifier's limit of a million
//! instructions, and it explores the port search (32 attempts) once for every way of
//! reaching it, so nothing is added in front of or inside it:
//! - the host's limits are weighed once the mapping exists ([`admit_created`]), in a
//!   function of its own, and the mapping is undone if they refuse it;
//! - a held port needs no look in the search: its reverse entry is still there (a
//!   hold, `RevValue::held`), so the `BPF_NOEXIST` claim fails on it as on a port in
//!   use. Only the host's own port, tried first, is checked for a hold of the host's
//!   own, which is given back ([`reclaim_own_hold`]).
//!
//! Cost on a new mapping while the rules are on: one `NAT_REV` look at the host's
//! own port (for a hold of its own), one `HOST_STATE` lookup (an insert and a
//! second lookup for a host's first mapping), one `HOST_RELEASED` lookup while the
//! port limit is on, and an atomic add; nothing per port tried.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::bindings::BPF_NOEXIST;
use natgw_common::{
    limits::{admit, in_use, proto_slot, HostState},
    Config, Counter, FwdKey, RevKey,
};

use crate::maps::{HOST_RELEASED, HOST_STATE, HOST_ZERO, NAT_FWD, NAT_REV};

/// Weighs the mapping `key` just created against its host's limits at `now`:
/// counts it if they admit it, deletes both its entries if not (`Err` is the drop
/// reason). A host with no room left in `HOST_STATE` is not limited: the rules
/// cannot be kept for it, and refusing it service would be worse.
///
/// A refused packet pays for a claim and its undoing, and the mapping is visible to
/// other CPUs for that moment, which at worst translates one packet of the same
/// internal endpoint.
#[inline(always)]
pub fn admit_created(cfg: &Config, key: &FwdKey, now: u64) -> Result<(), Counter> {
    if !cfg.limits_hosts() {
        return Ok(());
    }
    match weigh(cfg, key, now) {
        ADMITTED => Ok(()),
        OVER_PORT_LIMIT => Err(Counter::DropHostPortLimit),
        _ => Err(Counter::DropHostRateLimited),
    }
}

/// [`weigh`]: the host may have the mapping.
const ADMITTED: u32 = 0;
/// [`weigh`]: the host held as many ports as it may before this one.
const OVER_PORT_LIMIT: u32 = 1;
/// [`weigh`]: the host's bucket is empty.
const OVER_RATE: u32 = 2;

/// [`admit_created`]'s work, as a function of its own (a BPF-to-BPF call): the
/// verifier sees the caller's registers come back from it unchanged whichever way
/// it went, and `tc_lan_ingress`'s two copies of the mapping path share it. Its
/// stack stays small (the caller's and its own together must fit 512 bytes).
#[inline(never)]
fn weigh(cfg: &Config, key: &FwdKey, now: u64) -> u32 {
    let Some(st) = host_state(&key.addr_be) else {
        return ADMITTED;
    };
    let verdict = judge(cfg, st, key, now);
    if verdict == ADMITTED {
        count_created(st, key);
    } else if let Some(m) = NAT_FWD.get_ptr(key) {
        // SAFETY: `m` points at a live NAT_FWD value.
        let rk = unsafe { RevKey::new((*m).ext_addr_be, (*m).ext_port_be, key.proto) };
        let _ = NAT_FWD.remove(key);
        let _ = NAT_REV.remove(&rk);
    }
    verdict
}

/// Whether the host of `key`, whose state is `st`, may have one more mapping of
/// its protocol.
#[inline(always)]
fn judge(cfg: &Config, st: *mut HostState, key: &FwdKey, now: u64) -> u32 {
    let slot = proto_slot(key.proto);
    if cfg.host_ports_max != 0 {
        // SAFETY: `st` points at a live HOST_STATE value, `slot` < PROTO_SLOTS; a
        // racing add on another CPU only makes this read stale.
        let created = unsafe {
            (&raw const (*st).created)
                .cast::<u64>()
                .add(slot)
                .read_volatile()
        };
        // SAFETY: read-only use of a live map value.
        let released = unsafe { HOST_RELEASED.get(&key.addr_be) }
            .map_or(0, |r| r.released.get(slot).copied().unwrap_or(0));
        // The new mapping is not counted yet: `created` is the ones before it.
        if in_use(created, released) >= u64::from(cfg.host_ports_max) {
            return OVER_PORT_LIMIT;
        }
    }
    if cfg.host_rate_interval_ns != 0 {
        // Not atomic: CPUs racing on one host's bucket may each take the same token,
        // which lets a host exceed its rate by a few mappings at most.
        // SAFETY: `st` points at a live HOST_STATE value.
        let bucket = unsafe { (*st).bucket_ns };
        match admit(bucket, now, cfg.host_rate_interval_ns, cfg.host_rate_burst) {
            // SAFETY: as above.
            Some(next) => unsafe { (*st).bucket_ns = next },
            None => return OVER_RATE,
        }
    } else {
        // No bucket: the field says when the host last created a mapping, which is
        // what the controller's pruning of idle hosts looks at.
        // SAFETY: as above.
        unsafe { (*st).bucket_ns = now };
    }
    ADMITTED
}

/// Counts a mapping the data path created for the host of `key`, whose state is
/// `st` (the entry [`judge`] weighed it on: no second lookup).
#[inline(always)]
fn count_created(st: *mut HostState, key: &FwdKey) {
    // SAFETY: `st` points at a live HOST_STATE value, `proto_slot` < PROTO_SLOTS,
    // 8-byte aligned; an atomic add because every CPU may create mappings for one
    // host.
    unsafe {
        let counter = (&raw mut (*st).created)
            .cast::<u64>()
            .add(proto_slot(key.proto));
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1);
    }
}

/// The `HOST_STATE` entry of `addr_be`, created on first use (from `HOST_ZERO`, a
/// zeroed value outside the stack).
#[inline(always)]
fn host_state(addr_be: &u32) -> Option<*mut HostState> {
    if let Some(st) = HOST_STATE.get_ptr_mut(addr_be) {
        return Some(st);
    }
    let zero = HOST_ZERO.get(0)?;
    // Another CPU may insert it first: either way the entry exists afterwards.
    let _ = HOST_STATE.insert(addr_be, zero, u64::from(BPF_NOEXIST));
    HOST_STATE.get_ptr_mut(addr_be)
}

/// Gives internal host `addr_be` back its own port `rk` if a hold of its own keeps
/// it (RFC 6888 REQ-8 bars other hosts only): deletes the hold, so that the claim
/// that follows can take the port. Called for the host's first candidate only.
#[inline(always)]
pub fn reclaim_own_hold(cfg: &Config, rk: &RevKey, addr_be: u32) {
    if cfg.port_hold_ns != 0 {
        release_own(rk, addr_be);
    }
}

/// [`reclaim_own_hold`]'s lookup and delete, not inlined (see [`weigh`]).
#[inline(never)]
fn release_own(rk: &RevKey, addr_be: u32) -> u32 {
    // SAFETY: read-only use of a live map value.
    let own = unsafe { NAT_REV.get(rk) }.is_some_and(|r| r.is_held() && r.int_addr_be == addr_be);
    if own {
        let _ = NAT_REV.remove(rk);
    }
    u32::from(own)
}

/// Whether external endpoint `rk` is held from internal host `addr_be` at `now`:
/// after a failed search, whether the hold-down, not the range, left the host
/// without its own port.
#[inline(always)]
pub fn held(cfg: &Config, rk: &RevKey, addr_be: u32, now: u64) -> bool {
    cfg.port_hold_ns != 0 && hold_bars(cfg, rk, addr_be, now) != 0
}

/// [`held`]'s lookup, not inlined (see [`weigh`]); 1 when the port is barred.
#[inline(never)]
fn hold_bars(cfg: &Config, rk: &RevKey, addr_be: u32, now: u64) -> u32 {
    // SAFETY: read-only use of a live map value.
    let rev = unsafe { NAT_REV.get(rk) };
    u32::from(rev.is_some_and(|r| r.bars(addr_be, now, cfg.port_hold_ns)))
}
