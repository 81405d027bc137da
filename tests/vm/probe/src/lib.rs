//! A stand-in payload for the VM harness (`cargo xtask vm-test`): the same
//! kind of checks the real dataplane tests make, with no dependency on the
//! eBPF toolchain, so the harness can be proved on every kernel on its own.
//!
//! The tests in `tests/guest.rs` load a small XDP program through bpf(2),
//! run it with `BPF_PROG_TEST_RUN`, attach it natively to a veth pair (the
//! veth module is loaded by the guest's init), and check that kernel BTF is
//! hidden in the pass where the init hides it.

pub mod bpf;
pub mod netlink;
pub mod program;
