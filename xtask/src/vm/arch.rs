//! The guest architectures: their Debian, Rust and QEMU names and how a
//! guest of each is booted.

use std::fs::OpenOptions;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

impl Arch {
    /// Name as `uname -m` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        }
    }

    /// Debian architecture name.
    pub fn debian(self) -> &'static str {
        match self {
            Self::X86_64 => "amd64",
            Self::Aarch64 => "arm64",
        }
    }

    /// GNU multiarch triplet, the library directory name Debian uses.
    pub fn gnu_triplet(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-linux-gnu",
            Self::Aarch64 => "aarch64-linux-gnu",
        }
    }

    /// Rust target the guest binaries are built for: static musl, so the
    /// guest needs no C library.
    pub fn rust_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-linux-musl",
            Self::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// C compiler for C code in the guest binaries' dependencies (`ring`),
    /// as the Debian packages that provide it, the `CC` and the `AR` to use.
    /// musl-gcc compiles for x86_64 musl only; clang cross-compiles for any
    /// target cc-rs names in its `--target` flag.
    pub fn c_toolchain(self) -> (&'static [&'static str], &'static str, &'static str) {
        match self {
            Self::X86_64 => (&["musl-tools"], "musl-gcc", "ar"),
            Self::Aarch64 => (&["clang"], "clang", "llvm-ar"),
        }
    }

    /// Debian package that provides [`Arch::qemu_binary`].
    pub fn qemu_package(self) -> &'static str {
        match self {
            Self::X86_64 => "qemu-system-x86",
            Self::Aarch64 => "qemu-system-arm",
        }
    }

    pub fn qemu_binary(self) -> &'static str {
        match self {
            Self::X86_64 => "qemu-system-x86_64",
            Self::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// Machine and CPU options. `cortex-a57` rather than `max` for aarch64,
    /// because TCG emulates pointer authentication of `max` slowly.
    pub fn machine_args(self) -> &'static [&'static str] {
        match self {
            Self::X86_64 => &["-machine", "pc"],
            Self::Aarch64 => &["-machine", "virt", "-cpu", "cortex-a57"],
        }
    }

    /// Serial console device of the guest kernel.
    pub fn console(self) -> &'static str {
        match self {
            Self::X86_64 => "ttyS0",
            Self::Aarch64 => "ttyAMA0",
        }
    }

    /// Returns whether this is the architecture xtask itself runs on.
    pub fn is_host(self) -> bool {
        self.name() == std::env::consts::ARCH
    }

    /// Returns the `-accel` value: KVM when the guest matches the host and `/dev/kvm`
    /// can run guests, TCG (emulation) otherwise.
    pub fn accelerator(self) -> &'static str {
        if self.is_host() && kvm_usable() {
            "kvm"
        } else {
            "tcg"
        }
    }
}

/// `/dev/kvm` can exist while the CPU lacks virtualisation extensions, in
/// which case QEMU fails to create a KVM guest. Both must hold.
fn kvm_usable() -> bool {
    let device_opens = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let cpu_has_extensions = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|cpuinfo| {
        cpuinfo
            .lines()
            .filter(|line| line.starts_with("flags"))
            .any(|line| {
                line.split_whitespace()
                    .any(|flag| flag == "vmx" || flag == "svm")
            })
    });
    device_opens && cpu_has_extensions
}
