//! Code shared by the XDP program and the controller.
//!
//! Everything here is `no_std` and allocation-free unless the `user` feature
//! is on, so the kernel program and user space compute the same map keys,
//! read the same rule values and build the same answers. The fast path can
//! then be unit-tested and fuzzed on the host.

#![cfg_attr(not(any(test, feature = "user")), no_std)]

#[cfg(feature = "user")]
extern crate std;

pub mod maps;
pub mod name;
pub mod response;
pub mod rules;
pub mod wire;

#[cfg(feature = "user")]
pub mod table;
