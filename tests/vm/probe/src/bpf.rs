//! Thin wrappers over the two bpf(2) commands the probe needs: loading an XDP
//! program (with the verifier log on failure) and `BPF_PROG_TEST_RUN`.
//!
//! The attribute structs are prefixes of the kernel's `union bpf_attr`. The
//! kernel zero-fills the rest of an attribute shorter than its own union, so
//! a prefix with the fields the probe sets is enough.

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use thiserror::Error;

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// Size of the buffer that receives the verifier log on a failed load. Large
/// enough for the probe program's log at level 1 on every tested kernel.
const VERIFIER_LOG_SIZE: usize = 64 * 1024;

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Insn {
    pub code: u8,
    /// Destination register in the low nibble, source register in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

/// Errors from the bpf(2) wrappers.
#[derive(Debug, Error)]
pub enum BpfError {
    /// The kernel rejected the program; `verifier_log` is the log of a second
    /// load attempt at log level 1.
    #[error("BPF_PROG_LOAD of {name} failed: {source}\nverifier log:\n{verifier_log}")]
    Load {
        name: String,
        #[source]
        source: io::Error,
        verifier_log: String,
    },
    /// `BPF_PROG_TEST_RUN` failed, for example on a frame shorter than an
    /// Ethernet header.
    #[error("BPF_PROG_TEST_RUN on a {len}-byte frame failed: {source}")]
    TestRun {
        len: usize,
        #[source]
        source: io::Error,
    },
}

fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable `#[repr(C)]` prefix of `union bpf_attr`
    // and the size passed is exactly its size, so the kernel reads and writes
    // only inside it. Any pointers inside `attr` are checked by the callers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Loads `insns` as an XDP program named `name` (at most 15 bytes are kept).
///
/// The first attempt runs without a log, as aya does. When it fails, the load
/// is repeated at log level 1, so the error carries the verifier's reasons.
pub fn load_xdp(name: &str, insns: &[Insn]) -> Result<OwnedFd, BpfError> {
    let license: &CStr = c"GPL";
    let mut prog_name = [0u8; 16];
    for (slot, byte) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte;
    }

    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        ..Default::default()
    };
    let first_error = match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor that
        // nothing else owns.
        Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(error) => error,
    };

    let mut log = vec![0u8; VERIFIER_LOG_SIZE];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    let source = match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        // The program was accepted on the second attempt. A failed first load
        // (for example a transient ENOMEM) is not a verifier rejection.
        // SAFETY: as above, the descriptor is new and has no other owner.
        Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(_) => first_error,
    };
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    Err(BpfError::Load {
        name: name.to_owned(),
        source,
        verifier_log: String::from_utf8_lossy(&log[..end]).into_owned(),
    })
}

/// Runs the program once on `frame` through `BPF_PROG_TEST_RUN` and returns
/// the XDP action it chose.
pub fn test_run(prog: &OwnedFd, frame: &[u8]) -> Result<u32, BpfError> {
    use std::os::fd::AsRawFd;

    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr).map_err(|source| BpfError::TestRun {
        len: frame.len(),
        source,
    })?;
    Ok(attr.retval)
}
