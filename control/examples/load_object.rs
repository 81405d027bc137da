//! Loads an XDP object file through the same path as `dnsgate run` and
//! reports whether the kernel's verifier accepts it, with the verifier log
//! when it does not. Used to iterate on the eBPF program and by the VM
//! tests to load objects built with test-only features.
//!
//! Usage: `load_object PATH [--ignore-kernel-btf]`

use std::process::ExitCode;

use dnsgate::dataplane::{Dataplane, LoadOptions};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: load_object PATH [--ignore-kernel-btf]");
        return ExitCode::FAILURE;
    };
    let ignore_kernel_btf = args.any(|arg| arg == "--ignore-kernel-btf");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("reading {path}: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The ELF parser wants the object 8-byte aligned, as
    // `include_bytes_aligned!` would give it.
    let words: &'static mut [u64] = Box::leak(vec![0u64; bytes.len().div_ceil(8)].into_boxed_slice());
    // SAFETY: the leaked `words` live for the rest of the program and hold
    // at least `bytes.len()` bytes; u8 has no alignment requirement.
    let object: &'static mut [u8] = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), bytes.len()) };
    object.copy_from_slice(&bytes);
    let object: &'static [u8] = object;
    let started = std::time::Instant::now();
    let options = LoadOptions { rule_buckets: 64, ignore_kernel_btf, object: Some(object), ..LoadOptions::default() };
    match Dataplane::load(&options) {
        Ok(_) => {
            println!("verifier accepted {path} in {:.2?}", started.elapsed());
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("verifier rejected {path}: {error:?}");
            ExitCode::FAILURE
        }
    }
}
