//! The guest's initramfs: an uncompressed cpio archive in the kernel's
//! `newc` format (Documentation/driver-api/early-userspace/buffer-format.rst)
//! with the init script, busybox, iproute2, the modules to load, the
//! payloads and the manifest of what the init runs.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

use super::payload::{Helper, Payload, VERIFIER_SUMMARY_ERE};
pub use super::userland::Userland;

/// Guest directory of the payload binaries and the eBPF object.
const PAYLOAD_DIR: &str = "/payload";
/// Guest directory of the manifest files the init reads.
const CONFIG_DIR: &str = "/etc/dnsgate-vm";
const MODULE_DIR: &str = "/lib/dnsgate-vm/modules";
/// Guest path of the eBPF object given with `--ebpf-object`.
pub const EBPF_OBJECT_GUEST_PATH: &str = "/payload/dnsgate-ebpf.o";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Everything one guest image contains.
pub struct Image<'a> {
    pub userland: &'a Userland,
    pub init_script: &'a Path,
    /// Module files in load order.
    pub modules: &'a [std::path::PathBuf],
    pub payloads: &'a [Payload],
    pub helpers: &'a [Helper],
    pub ebpf_object: Option<&'a Path>,
    /// Whether the payloads run with `CI=true`, so a test that would skip
    /// fails instead.
    pub ci: bool,
}

impl Image<'_> {
    /// Writes the image to `path`, replacing any previous one.
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file =
            File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
        let mut archive = Cpio::new(BufWriter::new(file));

        archive.char_device("/dev/console", 5, 1)?;
        archive.char_device("/dev/null", 1, 3)?;
        for dir in ["/proc", "/sys", "/tmp", "/run", "/root", "/mnt"] {
            archive.dir(dir)?;
        }
        archive.symlink("/var/run", "../run")?;
        archive.file_from("/init", 0o755, self.init_script)?;
        for (guest_path, host_file) in &self.userland.files {
            archive.file_from(guest_path, 0o755, host_file)?;
        }

        let mut module_list = String::new();
        for module in self.modules {
            let name = module
                .file_name()
                .and_then(|name| name.to_str())
                .context("module path has no file name")?;
            archive.file_from(&format!("{MODULE_DIR}/{name}"), 0o644, module)?;
            module_list.push_str(&format!("{MODULE_DIR}/{name}\n"));
        }
        archive.file(
            &format!("{CONFIG_DIR}/modules"),
            0o644,
            module_list.as_bytes(),
        )?;

        // One payload per line: name, expectation, then libtest arguments.
        let mut manifest = String::new();
        for payload in self.payloads {
            archive.file_from(
                &format!("{PAYLOAD_DIR}/{}", payload.name),
                0o755,
                &payload.binary,
            )?;
            let line = [payload.name.as_str(), payload.expect.keyword()]
                .into_iter()
                .chain(payload.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            manifest.push_str(&line);
            manifest.push('\n');
        }
        archive.file(
            &format!("{CONFIG_DIR}/payloads"),
            0o644,
            manifest.as_bytes(),
        )?;
        archive.file(
            &format!("{CONFIG_DIR}/verifier-summary"),
            0o644,
            VERIFIER_SUMMARY_ERE.as_bytes(),
        )?;

        let mut env = String::new();
        if self.ci {
            env.push_str("export CI=true\n");
        }
        for helper in self.helpers {
            let guest_path = format!("{PAYLOAD_DIR}/bin/{}", helper.name);
            archive.file_from(&guest_path, 0o755, &helper.binary)?;
            env.push_str(&format!("export {}={guest_path}\n", helper.env_var()));
        }
        if let Some(object) = self.ebpf_object {
            archive.file_from(EBPF_OBJECT_GUEST_PATH, 0o644, object)?;
            env.push_str(&format!(
                "export DNSGATE_EBPF_OBJECT={EBPF_OBJECT_GUEST_PATH}\n"
            ));
        }
        archive.file(&format!("{CONFIG_DIR}/env"), 0o644, env.as_bytes())?;

        archive.finish()?.flush()?;
        Ok(())
    }
}

/// A `newc` cpio writer that creates parent directories on demand.
struct Cpio<W: Write> {
    out: W,
    next_inode: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Cpio<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            next_inode: 1,
            dirs: BTreeSet::new(),
        }
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        self.parents(path)?;
        if self.dirs.insert(path.to_owned()) {
            self.entry(path, S_IFDIR | 0o755, 0, &[])?;
        }
        Ok(())
    }

    fn file(&mut self, path: &str, permissions: u32, data: &[u8]) -> Result<()> {
        self.parents(path)?;
        self.entry(path, S_IFREG | permissions, 0, data)
    }

    fn file_from(&mut self, path: &str, permissions: u32, source: &Path) -> Result<()> {
        let data = fs::read(source)
            .with_context(|| format!("failed to read {} for the guest", source.display()))?;
        self.file(path, permissions, &data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.parents(path)?;
        self.entry(path, S_IFLNK | 0o777, 0, target.as_bytes())
    }

    fn char_device(&mut self, path: &str, major: u32, minor: u32) -> Result<()> {
        self.parents(path)?;
        self.entry(path, S_IFCHR | 0o600, (major << 8) | minor, &[])
    }

    fn parents(&mut self, path: &str) -> Result<()> {
        let mut prefix = String::new();
        let components: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for component in &components[..components.len().saturating_sub(1)] {
            prefix.push('/');
            prefix.push_str(component);
            if self.dirs.insert(prefix.clone()) {
                self.entry(&prefix, S_IFDIR | 0o755, 0, &[])?;
            }
        }
        Ok(())
    }

    /// Writes one header, name and body. `rdev` packs a device's major number
    /// above its 8-bit minor.
    fn entry(&mut self, path: &str, mode: u32, rdev: u32, data: &[u8]) -> Result<()> {
        // Names are stored without the leading slash, as `cpio -H newc` does.
        let name = path.trim_start_matches('/');
        let inode = self.next_inode;
        self.next_inode += 1;

        let fields = [
            inode,
            mode,
            0, // uid
            0, // gid
            if mode & S_IFDIR == S_IFDIR { 2 } else { 1 },
            0, // mtime: fixed, so identical inputs give identical images
            u32::try_from(data.len()).context("a guest file must be smaller than 4 GiB")?,
            0, // devmajor
            0, // devminor
            rdev >> 8,
            rdev & 0xff,
            name.len() as u32 + 1,
            0, // check, unused by newc
        ];
        let mut header = String::from("070701");
        for field in fields {
            header.push_str(&format!("{field:08X}"));
        }

        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(header.len() + name.len() + 1)?;

        self.out.write_all(data)?;
        self.pad(data.len())?;
        Ok(())
    }

    /// Pads to the 4-byte boundary newc requires after names and bodies.
    fn pad(&mut self, written: usize) -> Result<()> {
        let padding = (4 - written % 4) % 4;
        self.out.write_all(&[0u8; 3][..padding])?;
        Ok(())
    }

    fn finish(mut self) -> Result<W> {
        self.entry("TRAILER!!!", 0, 0, &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_parents_created() {
        let mut archive = Cpio::new(Vec::new());
        archive.file("/a/b/c", 0o644, b"hello").unwrap();
        let bytes = archive.finish().unwrap();

        let text = String::from_utf8_lossy(&bytes);
        let names: Vec<&str> = ["a\0", "a/b\0", "a/b/c\0", "TRAILER!!!\0"]
            .into_iter()
            .filter(|name| text.contains(name))
            .collect();
        assert_eq!(
            names.len(),
            4,
            "every parent, the file and the trailer must be present"
        );
        assert_eq!(
            bytes.len() % 4,
            0,
            "the archive must end on a 4-byte boundary"
        );
        assert!(
            text.starts_with("070701"),
            "newc magic must open the archive"
        );
    }
}
