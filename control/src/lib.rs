//! The dnsgate controller: loads the XDP program, compiles block lists into
//! its maps, and serves DNS to the LAN over UDP, TCP, TLS, QUIC and HTTPS.
//!
//! The binary in `main.rs` is a thin command-line front end over this
//! library, so the integration tests can drive the same code.

#![deny(unsafe_code)]

pub mod admin;
pub mod certs;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod ddr;
pub mod dnr;
pub mod dataplane;
pub mod lists;
pub mod metrics;
pub mod policy;
pub mod redirect;
pub mod querylog;
pub mod resolver;
pub mod shared_policy;
