//! Attaches dnsgate's pass-through XDP program to an interface until
//! SIGTERM or SIGINT.
//!
//! A native-mode `XDP_TX` frame sent out of one end of a veth pair is only
//! delivered if the other end runs an XDP program, so the namespace tests
//! attach this one to each client's end. A real NIC needs no such thing.

use std::process::ExitCode;

use dnsgate::dataplane::{Dataplane, LoadOptions, PASS_PROGRAM_NAME};

fn main() -> ExitCode {
    let Some(interface) = std::env::args().nth(1) else {
        eprintln!("usage: xdp-pass INTERFACE");
        return ExitCode::FAILURE;
    };
    let options = LoadOptions { rule_buckets: 1, ..LoadOptions::default() };
    let mut dataplane = match Dataplane::load(&options) {
        Ok(dataplane) => dataplane,
        Err(error) => {
            eprintln!("xdp-pass: {error}");
            return ExitCode::FAILURE;
        }
    };
    let attachment = match dataplane.attach_program(PASS_PROGRAM_NAME, &interface) {
        Ok(attachment) => attachment,
        Err(error) => {
            eprintln!("xdp-pass: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("attached to {interface} in {:?} mode", attachment.mode);
    let mut signals = [0i32; 2];
    // SAFETY: sigset operations on a local, initialised sigset_t; sigwait
    // blocks this thread only, and the signals are blocked first so they
    // are queued for sigwait instead of killing the process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::sigwait(&set, &mut signals[0]);
    }
    drop(attachment);
    ExitCode::SUCCESS
}
