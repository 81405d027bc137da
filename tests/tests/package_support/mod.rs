//! Helpers of the OpenWrt package tests: a fake router root for `chroot`
//! with busybox and the recording stand-ins under `openwrt/tests/stubs`,
//! readers for what those stand-ins record, an `.ipk` reader and ELF
//! checks. Each test file uses part of them.

#![allow(dead_code, reason = "each package test file uses a different part of these helpers")]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dnsgate_tests::netns::unique_name;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace root").to_path_buf()
}

/// Returns the path of Debian's static busybox, or explains what is
/// missing: the fake root's shell is busybox ash, the shell OpenWrt runs.
pub fn debian_busybox() -> Result<PathBuf, String> {
    let path = PathBuf::from("/bin/busybox");
    let owner = Command::new("dpkg-query").args(["-S", "/bin/busybox"]).output();
    let from_static_package = owner.is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("busybox-static"));
    if !path.is_file() || !from_static_package {
        return Err("/bin/busybox from the Debian package busybox-static is missing: apt-get install busybox-static".into());
    }
    Ok(path)
}

/// Skips the test (or fails it with CI=true) with `reason`.
pub fn skip(test: &str, reason: &str) -> bool {
    let message = format!("{test}: skipped because {reason}");
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{message}, and CI=true forbids skipping");
    }
    eprintln!("{message}");
    false
}

/// A directory laid out like an OpenWrt root: busybox and its applets, the
/// stand-ins for uci, procd, rc.common, network.sh and logger, and
/// `/dev/null`. Removed on drop.
pub struct FakeRoot {
    pub path: PathBuf,
}

impl FakeRoot {
    pub fn new(busybox: &Path) -> Self {
        let path = std::env::temp_dir().join(unique_name("dgroot"));
        let root = Self { path };
        for dir in ["bin", "sbin", "usr/bin", "usr/sbin", "tmp", "var/run", "var/etc", "etc/config", "dev", "proc/sys/net/ipv6", "sys", "run"] {
            std::fs::create_dir_all(root.path.join(dir)).unwrap();
        }
        std::fs::copy(busybox, root.path.join("bin/busybox")).unwrap();
        // The stand-ins go in first: `busybox --install` leaves existing
        // files alone, and nothing is ever written through its symlinks,
        // which point at the host's /bin/busybox when seen from outside.
        root.copy_tree(&workspace_root().join("openwrt/tests/stubs"));
        let install = Command::new("chroot").arg(&root.path).args(["/bin/busybox", "--install", "-s"]).status().unwrap();
        assert!(install.success(), "busybox --install failed in {}", root.path.display());
        let null = std::ffi::CString::new(root.path.join("dev/null").to_str().unwrap()).unwrap();
        // SAFETY: mknod reads the NUL-terminated path and returns a status.
        let status = unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(status, 0, "mknod /dev/null failed: {}", std::io::Error::last_os_error());
        std::fs::set_permissions(root.path.join("dev/null"), std::fs::Permissions::from_mode(0o666)).unwrap();
        root
    }

    /// Copies the files under `source` into the root, replacing what is
    /// there (a symlink is removed, never written through).
    pub fn copy_tree(&self, source: &Path) {
        for entry in walk(source) {
            let relative = entry.strip_prefix(source).unwrap();
            self.write(relative, &std::fs::read(&entry).unwrap(), std::fs::metadata(&entry).unwrap().permissions().mode());
        }
    }

    /// Writes one file at `relative` (to the root) with `mode`.
    pub fn write(&self, relative: impl AsRef<Path>, data: &[u8], mode: u32) {
        let target = self.path.join(relative);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        if std::fs::symlink_metadata(&target).is_ok() {
            std::fs::remove_file(&target).unwrap();
        }
        std::fs::write(&target, data).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode & 0o7777)).unwrap();
    }

    pub fn read(&self, relative: impl AsRef<Path>) -> String {
        std::fs::read_to_string(self.path.join(relative)).unwrap_or_default()
    }

    pub fn exists(&self, relative: impl AsRef<Path>) -> bool {
        self.path.join(relative).exists()
    }

    /// Runs `script` with busybox sh inside the root, in a mount namespace
    /// of its own, so what the scripts mount (bpffs) goes away with them.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "chroot"])
            .arg(&self.path)
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .expect("chroot runs")
    }

    /// Runs `/etc/init.d/dnsgate ACTION` and returns its output.
    pub fn init(&self, action: &str) -> Output {
        self.sh(&format!("/etc/init.d/dnsgate {action}"))
    }

    /// Forgets the calls recorded so far.
    pub fn clear_calls(&self) {
        let _ = std::fs::remove_dir_all(self.path.join("tmp/calls"));
    }

    /// The calls recorded in `/tmp/calls/NAME.log`, one vector of words
    /// each.
    pub fn calls(&self, name: &str) -> Vec<Vec<String>> {
        self.read(format!("tmp/calls/{name}.log"))
            .lines()
            .map(|line| line.split('\t').map(str::to_owned).collect())
            .collect()
    }

    /// uci calls that change a configuration.
    pub fn uci_writes(&self) -> Vec<Vec<String>> {
        self.calls("uci")
            .into_iter()
            .filter(|call| {
                let command = call.iter().skip(1).find(|word| !word.starts_with('-'));
                matches!(command.map(String::as_str), Some("set" | "add_list" | "del_list" | "delete" | "commit"))
            })
            .collect()
    }

    pub fn procd(&self) -> ProcdLog {
        ProcdLog::parse(&self.calls("procd"))
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Regular files under `dir`, sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// What the procd stand-in recorded for one service registration.
#[derive(Debug, Default)]
pub struct ProcdLog {
    /// `procd_set_param` calls per instance, in order: (type, values).
    pub instances: Vec<Vec<(String, Vec<String>)>>,
    pub reload_triggers: Vec<String>,
    pub interface_triggers: Vec<String>,
    pub signals: Vec<Vec<String>>,
    pub kills: usize,
    /// Firewall rules from the service data: option name to values.
    pub firewall: Vec<BTreeMap<String, Vec<String>>>,
}

impl ProcdLog {
    fn parse(calls: &[Vec<String>]) -> Self {
        let mut log = Self::default();
        let mut rule: Option<BTreeMap<String, Vec<String>>> = None;
        let mut array: Option<String> = None;
        for call in calls {
            let words: Vec<&str> = call.iter().map(String::as_str).collect();
            match words.as_slice() {
                ["open_instance", ..] => log.instances.push(Vec::new()),
                ["param", kind, values @ ..] => log
                    .instances
                    .last_mut()
                    .expect("procd_set_param outside an instance")
                    .push((kind.to_string(), values.iter().map(|value| value.to_string()).collect())),
                ["reload_trigger", config] => log.reload_triggers.push(config.to_string()),
                ["interface_trigger", network] => log.interface_triggers.push(network.to_string()),
                ["signal", rest @ ..] => log.signals.push(rest.iter().map(|word| word.to_string()).collect()),
                ["kill", ..] => log.kills += 1,
                ["json", "add_object", ""] => rule = Some(BTreeMap::new()),
                ["json", "add_array", name] if *name != "firewall" => array = Some(name.to_string()),
                ["json", "close_array"] => array = None,
                ["json", "close_object"] => log.firewall.extend(rule.take()),
                ["json", "add_string", key, value] => {
                    if let Some(rule) = rule.as_mut() {
                        let key = array.clone().unwrap_or_else(|| key.to_string());
                        rule.entry(key).or_default().push(value.to_string());
                    }
                }
                _ => {}
            }
        }
        log
    }

    /// The values of the last `procd_set_param KIND` of instance `index`.
    pub fn param(&self, index: usize, kind: &str) -> Option<Vec<String>> {
        self.instances[index].iter().rev().find(|(name, _)| name == kind).map(|(_, values)| values.clone())
    }
}

/// An `.ipk` read into memory.
pub struct Ipk {
    /// Members of the outer archive, by name.
    pub members: BTreeMap<String, Vec<u8>>,
    /// Order of the outer members.
    pub member_order: Vec<String>,
    /// Entries of `control.tar.gz`.
    pub control: BTreeMap<String, TarEntry>,
    /// Entries of `data.tar.gz`.
    pub data: BTreeMap<String, TarEntry>,
    /// Size of the uncompressed data archive.
    pub data_tar_len: usize,
}

/// One tar entry.
#[derive(Debug, Clone)]
pub struct TarEntry {
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub data: Vec<u8>,
}

impl Ipk {
    pub fn open(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        let outer = gunzip(&bytes);
        let outer_entries = read_tar(&outer);
        let member_order = outer_entries.iter().map(|(name, _)| name.clone()).collect();
        let members: BTreeMap<String, Vec<u8>> =
            outer_entries.into_iter().map(|(name, entry)| (name, entry.data)).collect();
        let control = read_tar(&gunzip(&members["./control.tar.gz"])).into_iter().collect();
        let data_tar = gunzip(&members["./data.tar.gz"]);
        let data = read_tar(&data_tar).into_iter().collect();
        Self { members, member_order, control, data, data_tar_len: data_tar.len() }
    }

    /// The `control` file's fields (continuation lines folded into the
    /// field they continue).
    pub fn fields(&self) -> BTreeMap<String, String> {
        let text = String::from_utf8(self.control["./control"].data.clone()).expect("control is UTF-8");
        let mut fields = BTreeMap::new();
        let mut last: Option<String> = None;
        for line in text.lines() {
            if let Some(continuation) = line.strip_prefix(' ') {
                let key = last.clone().expect("continuation line after a field");
                let value: &mut String = fields.get_mut(&key).unwrap();
                value.push('\n');
                value.push_str(continuation);
            } else {
                let (key, value) = line.split_once(": ").unwrap_or_else(|| panic!("invalid control line {line:?}"));
                assert!(fields.insert(key.to_owned(), value.to_owned()).is_none(), "field {key} given twice");
                last = Some(key.to_owned());
            }
        }
        fields
    }
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).expect("valid gzip");
    out
}

fn read_tar(bytes: &[u8]) -> Vec<(String, TarEntry)> {
    let mut archive = tar::Archive::new(bytes);
    let mut entries = Vec::new();
    for entry in archive.entries().expect("valid tar") {
        let mut entry = entry.expect("valid tar entry");
        let header = entry.header().clone();
        let name = String::from_utf8(entry.path_bytes().into_owned()).expect("UTF-8 name");
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        entries.push((
            name,
            TarEntry {
                kind: header.entry_type(),
                mode: header.mode().unwrap(),
                uid: header.uid().unwrap(),
                gid: header.gid().unwrap(),
                data,
            },
        ));
    }
    entries
}

/// What the ELF headers of a binary say (System V ABI, "ELF Header",
/// "Program Header", "Sections"), read independently of the packager's
/// own check.
#[derive(Debug)]
pub struct ElfFacts {
    pub machine: u16,
    pub is_64: bool,
    pub executable_type: u16,
    pub has_interpreter: bool,
    /// `DT_NEEDED` entries: shared libraries the binary needs. A static PIE
    /// binary has a dynamic section (for its own relocations) but none.
    pub needed_libraries: usize,
    pub has_symbol_table: bool,
}

pub fn elf_facts(bytes: &[u8]) -> ElfFacts {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[5], 1, "not little endian");
    let is_64 = bytes[4] == 2;
    let u16_at = |offset: usize| u16::from_le_bytes([bytes[offset], bytes[offset + 1]]);
    let u32_at = |offset: usize| u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap());
    let u64_at = |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap());
    let (phoff, shoff, phentsize, phnum, shentsize, shnum) = if is_64 {
        (u64_at(32) as usize, u64_at(40) as usize, u16_at(54) as usize, u16_at(56) as usize, u16_at(58) as usize, u16_at(60) as usize)
    } else {
        (u32_at(28) as usize, u32_at(32) as usize, u16_at(42) as usize, u16_at(44) as usize, u16_at(46) as usize, u16_at(48) as usize)
    };
    let program_types: Vec<u32> = (0..phnum).map(|index| u32_at(phoff + index * phentsize)).collect();
    let section_types: Vec<u32> = (0..shnum).map(|index| u32_at(shoff + index * shentsize + 4)).collect();
    let mut needed_libraries = 0;
    for index in (0..phnum).filter(|&index| program_types[index] == 2) {
        let header = phoff + index * phentsize;
        let (offset, size, entry_size) = if is_64 {
            (u64_at(header + 8) as usize, u64_at(header + 32) as usize, 16)
        } else {
            (u32_at(header + 4) as usize, u32_at(header + 16) as usize, 8)
        };
        for entry in (offset..offset + size).step_by(entry_size) {
            let tag = if is_64 { u64_at(entry) } else { u64::from(u32_at(entry)) };
            if tag == 0 {
                break;
            }
            needed_libraries += usize::from(tag == 1);
        }
    }
    ElfFacts {
        machine: u16_at(18),
        is_64,
        executable_type: u16_at(16),
        has_interpreter: program_types.contains(&3),
        needed_libraries,
        has_symbol_table: section_types.contains(&2),
    }
}
