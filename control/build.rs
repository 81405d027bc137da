//! Builds the XDP program with nightly and `-Z build-std=core` and leaves
//! the object in `OUT_DIR`, where `dataplane::object` embeds it. The DWARF
//! sections are removed first: bpf-linker has already turned them into the
//! BTF that aya and the verifier read, and they would make up three
//! quarters of the object.
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
    // The nested cargo's progress lines ("Compiling aya-ebpf …") reach the
    // user as about forty `warning:` lines; quiet keeps its errors and
    // warnings only.
    // SAFETY: the build script has started no thread yet, so nothing reads
    // the environment while it changes.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "dnsgate-ebpf",
            root_dir: "../dataplane-ebpf",
            no_default_features: false,
            features,
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the XDP program failed; run `cargo xtask build` to install nightly rust-src and bpf-linker")?;
    let out_dir = std::env::var_os("OUT_DIR").context("cargo did not set OUT_DIR")?;
    strip_dwarf(&std::path::Path::new(&out_dir).join("dnsgate"))
}

/// Rewrites the ELF object at `path` without its `.debug_*` sections and
/// their relocations, keeping `.BTF` and `.BTF.ext`.
fn strip_dwarf(path: &std::path::Path) -> anyhow::Result<()> {
    use object::build::elf::{Builder, SectionData};

    let data = std::fs::read(path).with_context(|| format!("reading {} failed", path.display()))?;
    let mut builder =
        Builder::read(&*data).with_context(|| format!("{} is not an ELF object that can be rewritten", path.display()))?;
    for section in builder.sections.iter_mut() {
        let name = section.name.as_slice();
        if name.starts_with(b".debug") || name.starts_with(b".rel.debug") {
            section.delete = true;
        }
    }
    builder.delete_orphans();
    // bpf-linker names sections from `.strtab`; the writer wants a section
    // name table of its own.
    if !builder.sections.iter().any(|section| matches!(section.data, SectionData::SectionString)) {
        let names = builder.sections.add();
        names.name = b".shstrtab"[..].into();
        names.sh_type = object::elf::SHT_STRTAB;
        names.data = SectionData::SectionString;
    }
    let mut stripped = Vec::with_capacity(data.len());
    builder.write(&mut stripped).with_context(|| format!("writing {} without DWARF failed", path.display()))?;
    std::fs::write(path, stripped).with_context(|| format!("writing {} failed", path.display()))
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
