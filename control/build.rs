//! Builds the XDP program with nightly and `-Z build-std=core` and leaves
//! the object in `OUT_DIR`, where `dataplane::object` embeds it.
//! `cargo xtask build` installs what this needs (rust-src, bpf-linker).
//! It also records the build time, which the upstream certificate checks
//! take as the earliest plausible time of the system clock.

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    embed_build_time()?;
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

/// Sets `DNSGATE_BUILD_UNIX` to `SOURCE_DATE_EPOCH` when given (for
/// reproducible builds), or else to the current time, in seconds since 1970.
fn embed_build_time() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .trim()
            .parse::<u64>()
            .context("SOURCE_DATE_EPOCH must be a whole number of seconds since 1970")?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the build machine's clock reads earlier than 1970; set it or set SOURCE_DATE_EPOCH")?
            .as_secs(),
    };
    println!("cargo:rustc-env=DNSGATE_BUILD_UNIX={secs}");
    Ok(())
}
