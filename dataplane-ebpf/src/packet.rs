//! Bounds-checked access to packet memory. Every read and write of the
//! frame goes through these helpers, which compare against `data_end`
//! first, as the verifier requires.

use aya_ebpf::programs::XdpContext;

/// Largest offset into a frame this program ever reads: Ethernet, one VLAN
/// tag, an IPv6 header, UDP and a DNS message of the largest answer size.
pub const MAX_FRAME_OFFSET: usize = 14 + 4 + 40 + 8 + 512 + 64;

/// Pointer to a `T` at `offset`, if the frame is long enough.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    // Clamping the offset gives the verifier a bounded range to check.
    if offset > MAX_FRAME_OFFSET {
        return None;
    }
    // Both the pointer and the end of the access are hidden from the
    // optimiser. Otherwise LLVM computes `start + (offset + size)` apart
    // from `start + offset`, or turns `ptr + 1 > end` into `ptr >= end`, and
    // from either form the verifier (6.18 included) learns no readable range
    // for a pointer with a variable offset.
    let ptr = opaque(start + offset);
    let limit = opaque(ptr + core::mem::size_of::<T>());
    if limit > end {
        return None;
    }
    Some(ptr as *mut T)
}

/// Returns `value` unchanged through a register move in assembly, which the
/// optimiser cannot see through. A volatile stack round trip would do the
/// same for LLVM, but the stale pointers it leaves in stack slots keep the
/// verifier from pruning states and the program exceeds 1M instructions.
#[inline(always)]
fn opaque(mut value: usize) -> usize {
    // SAFETY: the block moves a register to itself: it reads and writes only `value`'s
    // register and touches no memory.
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) value, options(pure, nomem, nostack)) };
    value
}

/// Reads a byte.
#[inline(always)]
pub fn load_u8(ctx: &XdpContext, offset: usize) -> Option<u8> {
    let ptr = ptr_at::<u8>(ctx, offset)?;
    // SAFETY: `ptr_at` checked that the byte lies inside the frame.
    Some(unsafe { *ptr })
}

/// Reads a big-endian `u16`.
#[inline(always)]
pub fn load_u16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let ptr = ptr_at::<[u8; 2]>(ctx, offset)?;
    // SAFETY: `ptr_at` checked that both bytes lie inside the frame.
    let value = u16::from_be_bytes(unsafe { *ptr });
    // Verifiers before 6.18 treat the result of a byte swap as unbounded
    // and then reject pointer arithmetic with it (seen on 5.10 and 6.12).
    // The mask restores the bound; `opaque` keeps LLVM from dropping it.
    Some((opaque(value as usize) & 0xffff) as u16)
}

/// Reads `N` bytes.
#[inline(always)]
pub fn load_bytes<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let ptr = ptr_at::<[u8; N]>(ctx, offset)?;
    // SAFETY: `ptr_at` checked that all `N` bytes lie inside the frame.
    Some(unsafe { core::ptr::read_unaligned(ptr) })
}

/// Writes `N` bytes.
#[inline(always)]
pub fn store_bytes<const N: usize>(ctx: &XdpContext, offset: usize, bytes: [u8; N]) -> Option<()> {
    let ptr = ptr_at::<[u8; N]>(ctx, offset)?;
    // SAFETY: `ptr_at` checked that all `N` bytes lie inside the frame, and
    // XDP frames are writable.
    unsafe { core::ptr::write_unaligned(ptr, bytes) };
    Some(())
}

/// Writes a big-endian `u16`.
#[inline(always)]
pub fn store_u16(ctx: &XdpContext, offset: usize, value: u16) -> Option<()> {
    store_bytes(ctx, offset, value.to_be_bytes())
}

