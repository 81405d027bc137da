//! The OpenWrt packages `cargo xtask package openwrt` writes. The tests
//! check the archive layout and control fields of the `.ipk` files and the
//! architecture and static linking of the binaries inside. The x86_64
//! package is installed into a busybox root, where the command line the
//! installed init script registers starts `dnsgate run`, which must serve
//! DNS, DoT and DoH.
//!
//! The packages come from `DNSGATE_PACKAGE_DIR` when it is set; otherwise
//! the test runs the packager once, which reuses `target/` (a clean build
//! of both architectures takes long; see docs/openwrt.md).

mod package_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use dnsgate_tests::netns::{Namespace, Process, TempDir, start_xdp_pass, veth_pair, wait_for_daemon};
use dnsgate_tests::{require_root, require_tool};
use package_support::{ElfFacts, FakeRoot, Ipk, debian_busybox, elf_facts, skip, workspace_root};

/// Architectures packaged, with the ELF machine of their binaries.
const ARCHES: [(&str, u16); 2] = [("x86_64", 62), ("aarch64_generic", 183)];

/// The directory holding the packages, built on first use.
fn package_dir() -> Result<&'static Path, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("DNSGATE_PACKAGE_DIR") {
            return Ok(PathBuf::from(dir));
        }
        let dir = workspace_root().join("target/openwrt-test");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            .args(["run", "--quiet", "--package", "xtask", "--", "package", "openwrt", "--no-apk"])
            .args(["--arch", "x86_64", "--arch", "aarch64", "--out-dir"])
            .arg(&dir)
            .status()
            .map_err(|error| format!("cargo could not start: {error}"))?;
        if !status.success() {
            return Err(format!("`cargo xtask package openwrt` failed with {status}; its output is above"));
        }
        Ok(dir)
    })
    .as_deref()
    .map_err(Clone::clone)
}

fn ipk_path(dir: &Path, arch: &str) -> PathBuf {
    dir.join(format!("dnsgate_{}-r1_{arch}.ipk", env!("CARGO_PKG_VERSION")))
}

fn packages(test: &str) -> Option<&'static Path> {
    match package_dir() {
        Ok(dir) => Some(dir),
        Err(reason) => {
            skip(test, &format!("the packages could not be built: {reason}"));
            None
        }
    }
}

#[test]
fn ipk_layout_and_control_fields() {
    let Some(dir) = packages("ipk_layout_and_control_fields") else { return };
    let repository_files = workspace_root().join("openwrt/files");
    for (arch, _) in ARCHES {
        let ipk = Ipk::open(&ipk_path(dir, arch));

        // The outer archive as ipkg-build writes it and opkg reads it.
        assert_eq!(ipk.member_order, ["./debian-binary", "./data.tar.gz", "./control.tar.gz"], "{arch}");
        assert_eq!(ipk.members["./debian-binary"], b"2.0\n", "{arch}");

        let fields = ipk.fields();
        assert_eq!(fields["Package"], "dnsgate");
        assert_eq!(fields["Version"], format!("{}-r1", env!("CARGO_PKG_VERSION")));
        assert_eq!(fields["Architecture"], arch);
        assert_eq!(fields["Depends"], "kernel (>= 5.15)", "the package needs OpenWrt 23.05's kernel or newer");
        assert_eq!(fields["License"], env!("CARGO_PKG_LICENSE"));
        assert_eq!(fields["Section"], "net");
        assert_eq!(fields["Installed-Size"], ipk.data_tar_len.to_string(), "{arch}: ipkg-build's definition");
        assert!(fields["Description"].lines().count() > 1, "summary and body: {:?}", fields["Description"]);
        assert!(fields["SourceDateEpoch"].parse::<u64>().is_ok());

        let conffiles = String::from_utf8(ipk.control["./conffiles"].data.clone()).unwrap();
        assert_eq!(conffiles.lines().collect::<Vec<_>>(), ["/etc/config/dnsgate", "/etc/dnsgate/custom.txt"]);
        for conffile in conffiles.lines() {
            assert!(ipk.data.contains_key(&format!(".{conffile}")), "conffile {conffile} is not in the data");
        }
        for script in ["./postinst", "./prerm", "./postrm"] {
            let entry = &ipk.control[script];
            assert_eq!(entry.mode, 0o755, "{arch} {script}");
            assert!(entry.data.starts_with(b"#!/bin/sh\n"), "{arch} {script}");
        }

        for (name, entry) in &ipk.data {
            assert!(name.starts_with("./"), "{arch}: entry {name} is not relative to ./");
            assert_eq!((entry.uid, entry.gid), (0, 0), "{arch}: {name} must belong to root");
        }
        // Every file under openwrt/files is in the package, unchanged.
        for file in package_support::walk(&repository_files) {
            let relative = file.strip_prefix(&repository_files).unwrap().to_str().unwrap();
            let entry = ipk.data.get(&format!("./{relative}")).unwrap_or_else(|| panic!("{arch}: {relative} missing"));
            assert_eq!(entry.data, std::fs::read(&file).unwrap(), "{arch}: {relative} differs from the repository");
        }
        for (path, mode) in [
            ("./usr/sbin/dnsgate", 0o755),
            ("./etc/init.d/dnsgate", 0o755),
            ("./usr/share/dnsgate/uci-to-toml.sh", 0o755),
            ("./etc/uci-defaults/90-dnsgate", 0o755),
            ("./etc/config/dnsgate", 0o644),
            ("./usr/share/dnsgate/lib.sh", 0o644),
        ] {
            assert_eq!(ipk.data[path].mode, mode, "{arch}: mode of {path}");
        }
        let keep = String::from_utf8(ipk.data["./lib/upgrade/keep.d/dnsgate"].data.clone()).unwrap();
        assert!(keep.lines().any(|line| line == "/etc/dnsgate/"), "sysupgrade keeps the state: {keep}");
    }
}

#[test]
fn binaries_are_static_for_their_arch() {
    let Some(dir) = packages("binaries_are_static_for_their_arch") else { return };
    for (arch, machine) in ARCHES {
        let ipk = Ipk::open(&ipk_path(dir, arch));
        let binary = &ipk.data["./usr/sbin/dnsgate"].data;
        let facts: ElfFacts = elf_facts(binary);
        assert_eq!(facts.machine, machine, "{arch}: ELF machine");
        assert!(facts.is_64, "{arch}: 64-bit");
        assert!(!facts.has_interpreter, "{arch}: a static binary names no ELF interpreter");
        assert_eq!(facts.needed_libraries, 0, "{arch}: a static binary needs no shared library");
        assert!(!facts.has_symbol_table, "{arch}: the binary is stripped");
        println!("{arch}: stripped dnsgate is {} bytes ({:.2} MiB)", binary.len(), binary.len() as f64 / 1048576.0);
    }

    // The x86_64 binary runs here without any library.
    let ipk = Ipk::open(&ipk_path(dir, "x86_64"));
    let temp = TempDir::new("dgbin");
    let path = temp.0.join("dnsgate");
    std::fs::write(&path, &ipk.data["./usr/sbin/dnsgate"].data).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let output = Command::new(&path).arg("--version").env_clear().output().unwrap();
    assert!(output.status.success(), "dnsgate --version failed: {output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// Installs the x86_64 package as opkg would (data into the root, control
/// files into /usr/lib/opkg/info, postinst), runs the command line the
/// init script registered with procd inside the root and a network
/// namespace, queries it, then removes the package.
#[test]
fn x86_64_package_installs_and_serves() {
    const TEST: &str = "x86_64_package_installs_and_serves";
    if !require_root(TEST) || !require_tool("kdig", "knot-dnsutils") {
        return;
    }
    let busybox = match debian_busybox() {
        Ok(path) => path,
        Err(reason) => {
            skip(TEST, &reason);
            return;
        }
    };
    let Some(dir) = packages(TEST) else { return };
    let ipk = Ipk::open(&ipk_path(dir, "x86_64"));

    let router = Namespace::new("dgpr");
    let client = Namespace::new("dgpc");
    let (lan, client_end) = veth_pair(&router, Some("198.18.7.1/24"), &client, Some("198.18.7.2/24"));
    let root = FakeRoot::new(&busybox);
    root.write("etc/config/dhcp", b"config dnsmasq\n\toption domain 'lan'\n\nconfig dhcp 'lan'\n\toption interface 'lan'\n", 0o644);
    root.write("etc/config/system", b"config system\n\toption hostname 'OpenWrt'\n", 0o644);
    root.write("tmp/network.state", format!("lan device {lan}\nlan ipaddrs 198.18.7.1\n").as_bytes(), 0o644);

    install(&root, &ipk);
    let output = root.sh("/usr/lib/opkg/info/dnsgate.postinst");
    assert!(output.status.success(), "postinst failed: {output:?}");
    assert!(!root.exists("etc/uci-defaults/90-dnsgate"), "default_postinst runs and removes uci-defaults");
    assert!(root.read("etc/crontabs/root").contains("/etc/init.d/dnsgate reload"), "daily list refresh");
    assert!(root.read("tmp/calls/rc.log").contains("enable"), "postinst enables the service");
    assert!(root.read("etc/config/dhcp").contains("option port '54'"), "dnsmasq moved off port 53");

    let procd = root.procd();
    assert_eq!(procd.instances.len(), 1, "postinst started the service");
    let command = procd.param(0, "command").unwrap();
    let env = procd.param(0, "env").unwrap();
    root.write("etc/dnsgate/custom.txt", b"blocked.example\n", 0o644);

    // The daemon runs from the installed files, inside the root, with
    // /proc, /sys and a bpffs of its own in the namespace's mount table.
    let logs = TempDir::new("dgpl");
    let mut daemon_command = router.command("chroot");
    daemon_command
        .arg(&root.path)
        .args(["/bin/sh", "-c", "mount -t proc proc /proc && mount -t sysfs sysfs /sys && mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf && exec env \"$@\"", "sh"])
        .args(&env)
        .args(&command)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let mut daemon = Process::spawn("dnsgate", &mut daemon_command, &logs.0);
    // Native XDP_TX on a veth reaches the peer only when the peer runs an
    // XDP program too; a real NIC needs no such thing.
    let _pass = start_xdp_pass(&client, &client_end, &logs.0, "xdp-pass");
    wait_for_daemon(&mut daemon, &logs.0.join("dnsgate.err"), Duration::from_secs(30));
    let log = || std::fs::read_to_string(logs.0.join("dnsgate.err")).unwrap_or_default();

    for (label, namespace, args) in [
        ("UDP from the LAN", &client, vec!["@198.18.7.1"]),
        ("TCP from the LAN", &client, vec!["@198.18.7.1", "+tcp"]),
        ("DoT from the LAN", &client, vec!["@198.18.7.1", "+tls"]),
        ("DoH on port 8443", &client, vec!["@198.18.7.1", "-p", "8443", "+https"]),
        ("the router's own resolver", &router, vec!["@127.0.0.1"]),
    ] {
        let output = namespace
            .command("kdig")
            .args(&args)
            .args(["blocked.example", "A", "+short", "+timeout=3", "+retry=1"])
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&output.stdout);
        assert_eq!(answer.trim(), "0.0.0.0", "{label}: {output:?}\n{}", log());
    }
    let state = root.path.join("etc/dnsgate/state");
    let pem_files = package_support::walk(&state).into_iter().filter(|path| path.extension().is_some_and(|ext| ext == "pem")).count();
    assert!(pem_files >= 2, "the generated certificate and key live on flash under /etc/dnsgate/state");

    let status = daemon.stop(Duration::from_secs(15));
    assert!(status.is_some_and(|status| status.success()), "dnsgate did not exit cleanly: {status:?}\n{}", log());

    // Removal gives port 53 back and takes the cron entry away.
    let output = root.sh("/usr/lib/opkg/info/dnsgate.prerm && /usr/lib/opkg/info/dnsgate.postrm");
    assert!(output.status.success(), "prerm/postrm failed: {output:?}");
    assert!(!root.read("etc/config/dhcp").contains("port"), "{}", root.read("etc/config/dhcp"));
    assert!(!root.read("etc/config/dhcp").contains("6,0.0.0.0"));
    assert!(!root.read("etc/crontabs/root").contains("dnsgate"));
    assert!(root.read("tmp/calls/rc.log").contains("disable"));
}

/// Unpacks the data archive into the root and writes opkg's view of the
/// package into /usr/lib/opkg/info.
fn install(root: &FakeRoot, ipk: &Ipk) {
    let mut list = String::new();
    for (name, entry) in &ipk.data {
        let relative = name.trim_start_matches("./").trim_end_matches('/');
        if relative.is_empty() {
            continue;
        }
        match entry.kind {
            tar::EntryType::Directory => std::fs::create_dir_all(root.path.join(relative)).unwrap(),
            tar::EntryType::Regular => {
                root.write(relative, &entry.data, entry.mode);
                list.push_str(&format!("/{relative}\n"));
            }
            other => panic!("unexpected entry type {other:?} for {name}"),
        }
    }
    root.write("usr/lib/opkg/info/dnsgate.list", list.as_bytes(), 0o644);
    for (name, entry) in &ipk.control {
        let file = name.trim_start_matches("./");
        if !file.is_empty() {
            root.write(format!("usr/lib/opkg/info/dnsgate.{file}"), &entry.data, entry.mode);
        }
    }
}
