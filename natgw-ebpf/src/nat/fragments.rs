//! Fragment bookkeeping shared by both directions (RFC 4787 REQ-14/14a, RFC 7857's
//! IP ID rule): each source's budget of incomplete fragmented datagrams, and the
//! gateway's own IP identification sequence for outbound non-atomic datagrams
//! (fragments, and packets without DF).

use aya_ebpf::helpers::bpf_get_smp_processor_id;
use natgw_common::{maps::frag_budget_bucket, Config, Counter};

use crate::maps::{FRAG_BUDGET, IP_ID_NEXT};

/// Takes one incomplete datagram from the budget of source `addr` (remote sources
/// inbound, internal ones outbound) at `now`. `Err` when the source already has
/// [`natgw_common::maps::FRAG_BUDGET_BURST`] of them in flight.
///
/// Two CPUs updating one bucket at once may lose one update (there is no atomic
/// read-modify-write here): the budget is a bound on a flood, not an exact count.
#[inline(always)]
pub fn take(addr: [u8; 4], outbound: bool, now: u64) -> Result<(), Counter> {
    let index = frag_budget_bucket(u32::from_ne_bytes(addr), outbound);
    let bucket = FRAG_BUDGET
        .get_ptr_mut(index)
        .ok_or(Counter::DropInternal)?;
    // SAFETY: `bucket` points at a live array value.
    unsafe {
        let taken = (*bucket).take(now).ok_or(Counter::DropFragmentBudget)?;
        *bucket = taken;
    }
    Ok(())
}

/// Gives source `addr`'s token back: a datagram's last fragment passed.
#[inline(always)]
pub fn give_back(addr: [u8; 4], outbound: bool) {
    let index = frag_budget_bucket(u32::from_ne_bytes(addr), outbound);
    if let Some(bucket) = FRAG_BUDGET.get_ptr_mut(index) {
        // SAFETY: `bucket` points at a live array value.
        unsafe { *bucket = (*bucket).give_back() };
    }
}

/// The next IP identification (network order) from this CPU's sequence: CPU `c`
/// hands out `c`, `c + n`, `c + 2n`, ... for `n` = `cfg.cpus`, so two CPUs never
/// hand out the same one within 65536 / n datagrams.
#[inline(always)]
pub fn next_ip_id(cfg: &Config) -> Result<u16, Counter> {
    let slot = IP_ID_NEXT.get_ptr_mut(0).ok_or(Counter::DropInternal)?;
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let stride = if cfg.cpus == 0 { 1 } else { cfg.cpus };
    // SAFETY: `slot` points at this CPU's value, used by nothing else meanwhile.
    let n = unsafe {
        let n = *slot;
        *slot = n.wrapping_add(1);
        n
    };
    Ok((n.wrapping_mul(stride).wrapping_add(cpu) as u16).to_be())
}
