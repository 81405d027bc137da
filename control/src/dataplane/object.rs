//! The XDP object, built by `build.rs` and embedded so that one binary is
//! all a router needs.

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dnsgate"));

/// The embedded eBPF object file (ELF), aligned for parsing.
pub fn object_bytes() -> &'static [u8] {
    OBJECT
}
