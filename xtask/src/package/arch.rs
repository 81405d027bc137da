//! OpenWrt package architectures and the Rust targets that build for them.
//!
//! opkg and apk install a package only when its architecture is one the
//! device lists (`/etc/opkg/arch.conf`, `/etc/apk/arch`), so a package is
//! built for a named OpenWrt architecture such as `aarch64_cortex-a53`, even
//! though the static binary inside runs on every CPU of that family.

use anyhow::{Result, bail};

/// `e_machine` values of the ELF header (System V ABI, "ELF Header").
pub const EM_ARM: u16 = 40;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// One architecture to package for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The OpenWrt package architecture, as in the `Architecture` field.
    pub package_arch: String,
    /// The Rust target triple of the static musl build.
    pub rust_target: &'static str,
    /// `e_machine` the binary must carry.
    pub elf_machine: u16,
    /// C compiler and archiver for the C code in the dependencies (ring),
    /// passed to cc-rs as `CC_<target>` and `AR_<target>`.
    pub c_compiler: &'static str,
    pub archiver: &'static str,
    /// Linker, when the Rust target has no usable default on this host.
    pub linker: Option<&'static str>,
}

impl Target {
    /// Resolves an OpenWrt package architecture. `aarch64` is short for
    /// `aarch64_generic`.
    pub fn from_package_arch(name: &str) -> Result<Self> {
        let package_arch = match name {
            "aarch64" => "aarch64_generic",
            other => other,
        };
        let (rust_target, elf_machine) = if package_arch == "x86_64" {
            ("x86_64-unknown-linux-musl", EM_X86_64)
        } else if package_arch.starts_with("aarch64_") {
            ("aarch64-unknown-linux-musl", EM_AARCH64)
        } else if package_arch.starts_with("arm_cortex-a") {
            // OpenWrt's Cortex-A targets use the hard-float ABI; the static
            // binary needs nothing from the device's C library.
            ("armv7-unknown-linux-musleabihf", EM_ARM)
        } else if package_arch.starts_with("arm_arm1176") {
            ("arm-unknown-linux-musleabihf", EM_ARM)
        } else if package_arch.starts_with("mips") {
            bail!(
                "{package_arch}: MIPS targets are tier 3 in Rust, without a prebuilt standard library; \
                 they need nightly with -Z build-std, a musl sysroot for the CPU and a check that \
                 ring builds for it, none of which this command sets up"
            );
        } else {
            bail!(
                "unsupported OpenWrt architecture {name:?}: use x86_64, aarch64 (aarch64_generic), \
                 aarch64_<cpu> such as aarch64_cortex-a53, or arm_cortex-a<n>_<fpu> such as \
                 arm_cortex-a7_neon-vfpv4"
            );
        };
        let x86 = elf_machine == EM_X86_64;
        Ok(Self {
            package_arch: package_arch.to_owned(),
            rust_target,
            elf_machine,
            // musl-gcc compiles for the host's x86_64 only; clang takes the
            // target from cc-rs's --target flag.
            c_compiler: if x86 { "musl-gcc" } else { "clang" },
            archiver: if x86 { "ar" } else { "llvm-ar" },
            // Rust ships no cross linker for these targets; rust-lld links
            // musl binaries without one.
            linker: if x86 { None } else { Some("rust-lld") },
        })
    }

    /// Debian packages that provide [`Target::c_compiler`] and
    /// [`Target::archiver`].
    pub fn c_toolchain_packages(&self) -> &'static [&'static str] {
        if self.elf_machine == EM_X86_64 { &["musl-tools"] } else { &["clang", "llvm"] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aarch64_alias_is_generic() {
        let target = Target::from_package_arch("aarch64").unwrap();
        assert_eq!(target.package_arch, "aarch64_generic");
        assert_eq!(target.rust_target, "aarch64-unknown-linux-musl");
        assert_eq!(target.linker, Some("rust-lld"));
    }

    #[test]
    fn cpu_specific_arches_keep_their_name() {
        let target = Target::from_package_arch("aarch64_cortex-a53").unwrap();
        assert_eq!(target.package_arch, "aarch64_cortex-a53");
        let arm = Target::from_package_arch("arm_cortex-a7_neon-vfpv4").unwrap();
        assert_eq!(arm.rust_target, "armv7-unknown-linux-musleabihf");
        assert_eq!(arm.elf_machine, EM_ARM);
    }

    #[test]
    fn mips_and_unknown_arches_are_rejected() {
        let error = Target::from_package_arch("mipsel_24kc").unwrap_err().to_string();
        assert!(error.contains("tier 3"), "{error}");
        let error = Target::from_package_arch("riscv64").unwrap_err().to_string();
        assert!(error.contains("unsupported"), "{error}");
    }
}
