//! Internet checksums (RFC 1071) of the rewritten headers.

use aya_ebpf::programs::XdpContext;

use crate::packet::{load_u16, load_u8, store_u16};

/// Largest UDP datagram whose checksum is computed: the header plus the
/// largest blocked answer.
pub const MAX_UDP_LEN: usize = 8 + dnsgate_common::wire::HEADER_LEN
    + dnsgate_common::name::MAX_NAME_WIRE_LEN
    + 4
    + dnsgate_common::response::MAX_TAIL_LEN;

/// Folds a 32-bit sum into the 16-bit ones' complement checksum.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Sums the 16-bit words of `len` bytes of the frame from `offset`; an odd
/// last byte is padded with zero. Returns `None` if the bytes are not all
/// in the frame or `len` exceeds [`MAX_UDP_LEN`].
#[inline(always)]
pub fn sum_words(ctx: &XdpContext, offset: usize, len: usize) -> Option<u32> {
    if len > MAX_UDP_LEN {
        return None;
    }
    let mut sum = 0u32;
    let mut done = 0usize;
    for _ in 0..MAX_UDP_LEN / 2 {
        if done + 2 > len {
            break;
        }
        sum += load_u16(ctx, offset + done)? as u32;
        done += 2;
    }
    if len & 1 == 1 {
        // The last byte, padded with a zero byte on its right.
        sum += (load_u8(ctx, offset + len - 1)? as u32) << 8;
    }
    Some(sum)
}

/// Computes the UDP checksum of the IPv6 datagram at `l4` (network header
/// at `l3`, `udp_len` bytes) again from its bytes and writes it. UDP over
/// IPv6 must carry a checksum (RFC 8200 §8.1), and one computed from the
/// bytes is right whatever state the old one was in, including a partial
/// checksum left for offload.
#[inline(always)]
pub fn rewrite_udp6_checksum(ctx: &XdpContext, l3: usize, l4: usize, udp_len: usize) -> Option<()> {
    store_u16(ctx, l4 + 6, 0)?;
    let pseudo_header = sum_words(ctx, l3 + 8, 32)? + crate::query::IPPROTO_UDP as u32 + udp_len as u32;
    let mut checksum = fold(pseudo_header + sum_words(ctx, l4, udp_len)?);
    // Zero means "no checksum", which IPv6 does not allow.
    if checksum == 0 {
        checksum = 0xffff;
    }
    store_u16(ctx, l4 + 6, checksum)
}
