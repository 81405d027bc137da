//! Checks run inside the VM guest. They need root, bpf(2) and the veth
//! module, which the harness's guest always has, so they fail rather than
//! skip when any of those is missing.

use std::os::fd::AsRawFd;
use std::path::Path;

use dnsgate_vm_probe::bpf;
use dnsgate_vm_probe::netlink::{self, Route, XdpAttachMode};
use dnsgate_vm_probe::program::{self, XDP_PASS, XDP_TX};

/// Environment variable the guest's init sets: `present` (kernel BTF is
/// there), `hidden` (the init mounted an empty tmpfs over it) or `absent`
/// (the kernel has none).
const KERNEL_BTF_VAR: &str = "DNSGATE_VM_KERNEL_BTF";
const KERNEL_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Builds a 60-byte Ethernet frame with the given EtherType and a zero
/// payload.
fn frame(ethertype: u16) -> Vec<u8> {
    let mut frame = vec![0u8; 60];
    frame[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
    frame
}

fn load_probe() -> std::os::fd::OwnedFd {
    match bpf::load_xdp(program::NAME, &program::instructions()) {
        Ok(fd) => fd,
        // Print the whole error, verifier log included, so the harness can
        // show it in its report.
        Err(error) => panic!("{error}"),
    }
}

#[test]
fn probe_program_loads() {
    let _prog = load_probe();
}

#[test]
fn test_run_ipv4_frame_is_transmitted() {
    let prog = load_probe();
    let action = bpf::test_run(&prog, &frame(0x0800)).expect("test run on an IPv4 frame");
    assert_eq!(action, XDP_TX, "an IPv4 frame must get XDP_TX");
}

#[test]
fn test_run_ipv6_frame_is_passed() {
    let prog = load_probe();
    let action = bpf::test_run(&prog, &frame(0x86dd)).expect("test run on an IPv6 frame");
    assert_eq!(action, XDP_PASS, "an IPv6 frame must get XDP_PASS");
}

#[test]
fn veth_native_attach_and_detach() {
    let prog = load_probe();
    // A namespace of its own, entered from a fresh thread, so the veth pair
    // disappears with the thread and never touches the init namespace.
    let result = std::thread::spawn(move || {
        netlink::unshare_netns().expect("unshare(CLONE_NEWNET)");
        let route = Route::open().expect("netlink socket");
        route
            .create_veth("probe0", "probe1")
            .expect("create veth pair (is the veth module loaded?)");
        let index = netlink::ifindex("probe0").expect("index of probe0");
        let peer = netlink::ifindex("probe1").expect("index of probe1");
        route.set_up(index).expect("set probe0 up");
        route.set_up(peer).expect("set probe1 up");

        route
            .set_xdp_native(index, prog.as_raw_fd())
            .expect("native XDP attach on veth");
        let (mode, prog_id) = route.xdp_state(index).expect("query XDP state");
        assert_eq!(
            mode,
            XdpAttachMode::Driver,
            "program must be attached in driver mode"
        );
        assert!(
            prog_id.is_some_and(|id| id > 0),
            "attached program must report its id"
        );

        route.set_xdp_native(index, -1).expect("native XDP detach");
        let (mode, _) = route
            .xdp_state(index)
            .expect("query XDP state after detach");
        assert_eq!(
            mode,
            XdpAttachMode::None,
            "program must be gone after detach"
        );
    })
    .join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn kernel_btf_matches_guest_pass() {
    let exists = Path::new(KERNEL_BTF_PATH).exists();
    match std::env::var(KERNEL_BTF_VAR).as_deref() {
        Ok("hidden") => assert!(!exists, "{KERNEL_BTF_PATH} must be hidden in this pass"),
        Ok("absent") => assert!(
            !exists,
            "the init found no {KERNEL_BTF_PATH}, yet it exists"
        ),
        Ok("present") => assert!(exists, "{KERNEL_BTF_PATH} must exist: the kernel has BTF"),
        other => panic!(
            "{KERNEL_BTF_VAR} must be `present`, `hidden` or `absent`, found {other:?}; run this binary through `cargo xtask vm-test`"
        ),
    }
}
