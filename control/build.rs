//! Builds the XDP program with nightly and `-Z build-std=core` and leaves
//! the object in `OUT_DIR`, where `dataplane::object` embeds it.
//! `cargo xtask build` installs what this needs (rust-src, bpf-linker).

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let features: &[&str] = if std::env::var_os("CARGO_FEATURE_BROKEN_VERIFIER_TEST").is_some() {
        &["broken-verifier-test"]
    } else {
        &[]
    };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "dnsgate-ebpf",
            root_dir: "../dataplane-ebpf",
            no_default_features: false,
            features,
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the XDP program failed; run `cargo xtask build` to install nightly rust-src and bpf-linker")
}
