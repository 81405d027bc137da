//! Copies answers sent from the kernel to user space for the query log.

use aya_ebpf::{
    bindings::BPF_F_CURRENT_CPU,
    helpers::{bpf_ktime_get_ns, bpf_perf_event_output},
    programs::XdpContext,
    EbpfContext as _,
};
use dnsgate_common::maps::{Counter, EventHeader, CONFIG_LOG_EVENTS, EVENT_ANSWER, EVENT_CAPTURE_LEN};

use crate::maps::{count, CONFIG, EVENTS, EVENT_BUDGET};

/// Largest event budget a CPU saves up: one second's worth of answers.
const BUDGET_CAP_NS: u64 = 1_000_000_000;

/// Hands the first bytes of the answer now in the frame to this CPU's ring
/// in [`EVENTS`], when the query log asked for them. A full ring loses the
/// record and counts [`Counter::EventsLost`]; the answer is sent anyway.
#[inline(always)]
pub fn report_answer(ctx: &XdpContext) {
    let Some(config) = CONFIG.get(0) else {
        return;
    };
    if config.flags & CONFIG_LOG_EVENTS == 0 {
        return;
    }
    if config.event_cost_ns != 0 && !take_budget(u64::from(config.event_cost_ns)) {
        count(Counter::EventsSkipped);
        return;
    }
    let frame_len = (ctx.data_end() - ctx.data()) as u32;
    let captured_len = if frame_len < EVENT_CAPTURE_LEN { frame_len } else { EVENT_CAPTURE_LEN };
    let header = EventHeader {
        kind: EVENT_ANSWER,
        frame_len,
        captured_len,
        ifindex: ctx.ingress_ifindex() as u32,
    };
    // The upper 32 bits of the flags ask the kernel to append that many
    // bytes of the frame itself (BPF_F_CTX_LEN_MASK), so the program copies
    // nothing; the verifier treats the flags as a plain number and the
    // kernel checks the length against the frame at run time.
    let flags = (u64::from(captured_len) << 32) | u64::from(BPF_F_CURRENT_CPU);
    // SAFETY: `ctx` is the program's context; `EVENTS` is a
    // `PerfEventArray`, `#[repr(transparent)]` over the map definition the
    // loader relocates, so its address is the map pointer the helper wants
    // (what aya-ebpf's own `output` passes, whose result it discards); the
    // header lives on the stack for the duration of the call and is fully
    // initialised.
    let result = unsafe {
        bpf_perf_event_output(
            ctx.as_ptr(),
            core::ptr::addr_of!(EVENTS).cast_mut().cast(),
            flags,
            core::ptr::addr_of!(header).cast_mut().cast(),
            core::mem::size_of::<EventHeader>() as u64,
        )
    };
    if result < 0 {
        count(Counter::EventsLost);
    }
}

/// Takes `cost` nanoseconds from this CPU's event budget. Returns false,
/// taking nothing, when the budget contains less. In the benchmark, a copy
/// and a reader wake-up per answer halved the blocked-name rate, and the
/// query log keeps only its last entries anyway.
#[inline(always)]
fn take_budget(cost: u64) -> bool {
    let Some(budget) = EVENT_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: the helper takes no argument and only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's value, which nothing else touches while the
    // program runs on this CPU.
    let budget = unsafe { &mut *budget };
    let refill = now.saturating_sub(budget.last_ns);
    let credit = budget.credit_ns.saturating_add(refill).min(BUDGET_CAP_NS);
    budget.last_ns = now;
    if credit < cost {
        budget.credit_ns = credit;
        return false;
    }
    budget.credit_ns = credit - cost;
    true
}
