//! What both package formats say about dnsgate: name, version, license,
//! dependencies and description.

/// Package name on the device.
pub const NAME: &str = "dnsgate";

/// Release number appended to the crate version, as OpenWrt's `-rN`.
const RELEASE: u32 = 1;

/// Kernel the package needs. OpenWrt ships its kernel as a package named
/// `kernel`, versioned with the kernel release, so this stops an install on
/// a kernel older than 5.15 (OpenWrt 23.05). The kernel features themselves
/// (the BPF syscall, XDP) have no package; docs/openwrt.md lists them.
pub const KERNEL_DEPENDENCY: (&str, &str) = ("kernel", "5.15");

pub const LICENSE: &str = env!("CARGO_PKG_LICENSE");

pub const SUMMARY: &str = "DNS filter and encrypted-DNS gateway for home routers";

/// Description lines after the summary.
pub const DESCRIPTION: &[&str] = &[
    "An XDP program answers queries for blocked names in the kernel; the",
    "daemon serves DNS, DNS over TLS, QUIC and HTTPS to the LAN, announces",
    "them through DDR and DNR, and forwards allowed names upstream.",
    "Needs a kernel with the BPF syscall and XDP; runs as a procd service",
    "configured in /etc/config/dnsgate.",
];

/// The package version: the workspace version with OpenWrt's release
/// suffix, which apk requires in this form.
pub fn version() -> String {
    format!("{}-r{RELEASE}", env!("CARGO_PKG_VERSION"))
}
