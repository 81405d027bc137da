//! The files a package installs: everything under `openwrt/files/`, plus
//! the binary at `/usr/sbin/dnsgate`, with the modes and the conffiles list
//! both package formats record.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// Install path of the binary, relative to `/`.
pub const BINARY_PATH: &str = "usr/sbin/dnsgate";

/// Files the user edits: package managers keep changed copies on upgrade
/// and removal, and sysupgrade keeps them.
pub const CONFFILES: &[&str] = &["/etc/config/dnsgate", "/etc/dnsgate/custom.txt"];

/// One regular file of the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Permission bits (`0o755` or `0o644`).
    pub mode: u32,
    pub data: Vec<u8>,
}

/// The installed files, keyed by path relative to `/`, sorted.
#[derive(Debug, Default)]
pub struct Payload {
    pub files: BTreeMap<String, File>,
}

impl Payload {
    /// Reads `openwrt/files` under `root` and adds `binary`.
    pub fn collect(root: &Path, binary: &Path) -> Result<Self> {
        let mut payload = Self::default();
        let files_dir = root.join("openwrt/files");
        payload.add_tree(&files_dir, &files_dir)?;
        let data = std::fs::read(binary).with_context(|| format!("failed to read {}", binary.display()))?;
        payload.files.insert(BINARY_PATH.to_owned(), File { mode: 0o755, data });
        for conffile in CONFFILES {
            if !payload.files.contains_key(conffile.trim_start_matches('/')) {
                bail!("conffile {conffile} is missing from openwrt/files");
            }
        }
        Ok(payload)
    }

    fn add_tree(&mut self, base: &Path, dir: &Path) -> Result<()> {
        let entries = std::fs::read_dir(dir).with_context(|| format!("failed to list {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                self.add_tree(base, &path)?;
            } else if kind.is_file() {
                let relative = path.strip_prefix(base)?.to_str().context("non-UTF-8 path under openwrt/files")?;
                let executable = entry.metadata()?.permissions().mode() & 0o111 != 0;
                let data = std::fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
                let mode = if executable { 0o755 } else { 0o644 };
                self.files.insert(relative.to_owned(), File { mode, data });
            } else {
                bail!("{} is neither a file nor a directory; packages hold only those", path.display());
            }
        }
        Ok(())
    }

    /// Every directory that contains a file, parents first, without the root.
    pub fn directories(&self) -> Vec<String> {
        let mut directories = std::collections::BTreeSet::new();
        for path in self.files.keys() {
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|dir| !dir.as_os_str().is_empty()) {
                directories.insert(dir.to_string_lossy().into_owned());
                parent = dir.parent();
            }
        }
        directories.into_iter().collect()
    }
}
