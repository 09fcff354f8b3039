//! Fragment bookkeeping shared by both directions (RFC 4787 REQ-14/14a, RFC 7857's
//! IP ID rule): each source's budget of incomplete fragmented datagrams, the
//! gateway's own IP identification sequence for outbound non-atomic datagrams
//! (fragments, and packets without DF), and for datagrams to an external address
//! (from the WAN, or from an internal host) the record of what their first
//! fragment decided, which their later fragments follow, or the stash that holds a
//! later fragment until its first fragment has decided.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, generated::bpf_skb_load_bytes},
    programs::TcContext,
};
use natgw_common::{
    maps::{frag_budget_bucket, FragKey, FragValue, StashKey, MAX_STASHED_FRAGMENT_LEN},
    packet::Ipv4Packet,
    Config, Counter,
};

use crate::maps::{FRAGS_IN, FRAG_BUDGET, FRAG_SCRATCH, FRAG_STASH, IP_ID_NEXT};

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

/// A fresh identification from [`next_ip_id`] that is not 0: a fragment held and
/// sent on by the controller through a raw socket would get a zero one replaced.
#[inline(always)]
pub fn next_nonzero_ip_id(cfg: &Config) -> Result<u16, Counter> {
    let id = next_ip_id(cfg)?;
    if id != 0 {
        return Ok(id);
    }
    // The next one differs by the stride, never a multiple of 65536.
    next_ip_id(cfg)
}

/// What the first fragment of `datagram` decided, if it has been seen.
#[inline(always)]
pub fn first_of(datagram: &FragKey) -> Option<FragValue> {
    // SAFETY: the value is copied out at once.
    unsafe { FRAGS_IN.get(datagram) }.copied()
}

/// Records what the first fragment of `datagram`, from `src` (internal when
/// `outbound`), decided (`first`), so its later fragments follow: one unit of `src`'s
/// budget until the datagram's last fragment passes.
#[inline(always)]
pub fn record_first(
    src: [u8; 4],
    outbound: bool,
    datagram: &FragKey,
    first: &FragValue,
) -> Result<(), Counter> {
    take(src, outbound, first.seen_ns)?;
    // An LRU map makes room; a failure leaves the later fragments to the stash.
    let _ = FRAGS_IN.insert(datagram, first, 0);
    Ok(())
}

/// [`record_first`] for a datagram whose first fragment goes to the gateway's
/// kernel untouched (a local socket, or the kernel's own answer): its later
/// fragments go there untouched too, and the kernel reassembles them.
#[inline(always)]
pub fn record_local(pkt: &Ipv4Packet, outbound: bool, datagram: &FragKey) -> Result<(), Counter> {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    record_first(pkt.src, outbound, datagram, &FragValue::local(now))
}

/// Holds the later fragment `pkt` of `datagram`, which came before its first
/// fragment: copied into `FRAG_STASH`, to be dropped by the caller; the controller
/// sends it on as the first fragment decides (RFC 4787 REQ-14). Returns the counter
/// of the drop: `DropFragmentHeld`, or why it could not be held. `outbound`: `pkt`'s
/// source is internal (whose budget it spends).
#[inline(always)]
pub fn stash(ctx: &TcContext, pkt: &Ipv4Packet, datagram: FragKey, outbound: bool) -> Counter {
    match try_stash(ctx, pkt, datagram, outbound) {
        Ok(()) => Counter::DropFragmentHeld,
        Err(c) => c,
    }
}

#[inline(always)]
fn try_stash(
    ctx: &TcContext,
    pkt: &Ipv4Packet,
    datagram: FragKey,
    outbound: bool,
) -> Result<(), Counter> {
    let tot_len = usize::from(pkt.tot_len);
    let scratch = FRAG_SCRATCH.get_ptr_mut(0).ok_or(Counter::DropInternal)?;
    if tot_len >= MAX_STASHED_FRAGMENT_LEN {
        return Err(Counter::DropFragmentUnknown);
    }
    // A held fragment costs its source budget until the refill: nobody gives it
    // back, as its datagram may never come.
    // SAFETY: no preconditions.
    take(pkt.src, outbound, unsafe { bpf_ktime_get_ns() })?;
    // The compiler would fold the checks below into the one above; the verifier
    // needs them on the value it tracks, so hide the bound from the compiler.
    // SAFETY: reading a local.
    let len = unsafe { core::ptr::read_volatile(&tot_len) } & (MAX_STASHED_FRAGMENT_LEN - 1);
    if len == 0 {
        // Cannot be (a fragment has a header); the helper needs a length above 0.
        return Err(Counter::DropFragmentUnknown);
    }
    // SAFETY: `scratch` points at this CPU's slot, used by nothing else while this
    // program runs.
    let slot = unsafe { &mut *scratch };
    // One copy of a bounded length straight into the slot: no loop for the verifier
    // to walk, and nothing on the stack.
    // SAFETY: `len` < MAX_STASHED_FRAGMENT_LEN bytes fit the slot's packet buffer.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            pkt.l3 as u32,
            slot.packet.as_mut_ptr().cast(),
            len as u32,
        )
    };
    if ret != 0 {
        return Err(Counter::DropFragmentUnknown);
    }
    slot.len = tot_len as u16;
    // SAFETY: no preconditions.
    slot.seen_ns = unsafe { bpf_ktime_get_ns() };
    let key = StashKey::new(datagram, pkt.frag_offset);
    FRAG_STASH
        .insert(&key, &*slot, 0)
        .map_err(|_| Counter::DropFragmentUnknown)
}
