//! The probe's XDP program, written as raw instructions so the probe needs no
//! eBPF toolchain. It returns `XDP_TX` for IPv4 frames and `XDP_PASS` for the
//! rest.
//!
//! It reads the EtherType only after checking the frame is at least an
//! Ethernet header long, the check every verifier since 4.x demands before a
//! packet read. With the `broken-verifier-test` feature that check is
//! replaced by a no-op jump, so the verifier must reject the program with
//! "invalid access to packet".

use crate::bpf::Insn;

pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

const ETH_HLEN: i32 = 14;
/// Offset of the EtherType in an Ethernet header.
const ETHERTYPE_OFFSET: i16 = 12;
/// EtherType 0x0800 (IPv4) as a little-endian 16-bit load reads it.
const ETHERTYPE_IPV4_LE: i32 = 0x0008;

// Opcodes from the kernel's uapi `linux/bpf.h` and `linux/bpf_common.h`.
const LDX_MEM_W: u8 = 0x61;
const LDX_MEM_H: u8 = 0x69;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_ADD_K: u8 = 0x07;
const JMP_JA: u8 = 0x05;
const JMP_JGT_X: u8 = 0x2d;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

/// Name the program is loaded under, as `bpftool prog` shows it.
pub const NAME: &str = "dnsgate_probe";

/// Returns the program's instructions.
pub fn instructions() -> Vec<Insn> {
    // r4 = data + ETH_HLEN; "if r4 > data_end goto exit" proves the read below
    // is inside the frame. The broken variant keeps the instruction count, so
    // the jump offsets stay the same.
    let bounds_check = if cfg!(feature = "broken-verifier-test") {
        Insn::new(JMP_JA, 0, 0, 0, 0)
    } else {
        Insn::new(JMP_JGT_X, 4, 3, 3, 0)
    };

    vec![
        // r2 = ctx->data, r3 = ctx->data_end (struct xdp_md, offsets 0 and 4).
        Insn::new(LDX_MEM_W, 2, 1, 0, 0),
        Insn::new(LDX_MEM_W, 3, 1, 4, 0),
        Insn::new(ALU64_MOV_K, 0, 0, 0, XDP_PASS as i32),
        Insn::new(ALU64_MOV_X, 4, 2, 0, 0),
        Insn::new(ALU64_ADD_K, 4, 0, 0, ETH_HLEN),
        bounds_check,
        Insn::new(LDX_MEM_H, 5, 2, ETHERTYPE_OFFSET, 0),
        Insn::new(JMP_JNE_K, 5, 0, 1, ETHERTYPE_IPV4_LE),
        Insn::new(ALU64_MOV_K, 0, 0, 0, XDP_TX as i32),
        Insn::new(JMP_EXIT, 0, 0, 0, 0),
    ]
}
