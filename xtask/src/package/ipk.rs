//! `.ipk` packages for opkg (OpenWrt up to 24.10).
//!
//! The layout is what OpenWrt's `ipkg-build` writes and opkg reads: a gzip
//! compressed tar holding `./debian-binary` ("2.0"), `./data.tar.gz` with
//! the installed files, and `./control.tar.gz` with `control`,
//! `conffiles` and the maintainer scripts. Entries belong to uid and gid 0
//! and carry one fixed time, so the same inputs give the same bytes.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use flate2::{Compression, GzBuilder};

use super::metadata::{self, DESCRIPTION, KERNEL_DEPENDENCY, LICENSE, NAME, SUMMARY};
use super::payload::{CONFFILES, Payload};

/// Maintainer scripts, from `openwrt/control/ipk`.
const SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];

/// Writes `dnsgate_<version>_<arch>.ipk` into `out_dir` and returns its path.
pub fn write(root: &Path, payload: &Payload, arch: &str, mtime: u64, out_dir: &Path) -> Result<std::path::PathBuf> {
    let data_tar = data_archive(payload, mtime)?;
    let control_text = control(arch, data_tar.len() as u64, mtime);

    let mut control_tar = TarWriter::new(mtime);
    control_tar.file("control", 0o644, control_text.as_bytes())?;
    control_tar.file("conffiles", 0o644, format!("{}\n", CONFFILES.join("\n")).as_bytes())?;
    for script in SCRIPTS {
        let path = root.join("openwrt/control/ipk").join(script);
        let data = std::fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
        control_tar.file(script, 0o755, &data)?;
    }

    let mut outer = TarWriter::new(mtime);
    outer.file("debian-binary", 0o644, b"2.0\n")?;
    outer.file("data.tar.gz", 0o644, &gzip(&data_tar)?)?;
    outer.file("control.tar.gz", 0o644, &gzip(&control_tar.finish()?)?)?;

    let path = out_dir.join(format!("{NAME}_{}_{arch}.ipk", metadata::version()));
    std::fs::write(&path, gzip(&outer.finish()?)?).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path)
}

/// The uncompressed data archive: directories, then files, by path.
fn data_archive(payload: &Payload, mtime: u64) -> Result<Vec<u8>> {
    let mut tar = TarWriter::new(mtime);
    for directory in payload.directories() {
        tar.directory(&directory)?;
    }
    for (path, file) in &payload.files {
        tar.file(path, file.mode, &file.data)?;
    }
    tar.finish()
}

/// The `control` file. `Installed-Size` is the size of the uncompressed data
/// archive, as `ipkg-build` computes it.
fn control(arch: &str, installed_size: u64, mtime: u64) -> String {
    let (kernel, minimum) = KERNEL_DEPENDENCY;
    let mut text = format!(
        "Package: {NAME}\n\
         Version: {}\n\
         Depends: {kernel} (>= {minimum})\n\
         SourceName: {NAME}\n\
         License: {LICENSE}\n\
         Section: net\n\
         SourceDateEpoch: {mtime}\n\
         Architecture: {arch}\n\
         Installed-Size: {installed_size}\n\
         Description: {SUMMARY}\n",
        metadata::version()
    );
    for line in DESCRIPTION {
        text.push(' ');
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// gzip without a file name or time in the header, as `gzip -n` writes.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = GzBuilder::new().mtime(0).write(Vec::new(), Compression::best());
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

/// A GNU tar archive with `./`-prefixed names owned by root.
struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl TarWriter {
    fn new(mtime: u64) -> Self {
        Self { builder: tar::Builder::new(Vec::new()), mtime }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(self.mtime);
        header.set_size(size);
        header
    }

    fn directory(&mut self, path: &str) -> Result<()> {
        let header = self.header(tar::EntryType::Directory, 0o755, 0);
        self.append(header, &format!("./{path}/"), &[])
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let header = self.header(tar::EntryType::Regular, mode, data.len() as u64);
        self.append(header, &format!("./{path}"), data)
    }

    /// Appends one entry under `name` exactly as given. The tar crate's
    /// path setters drop the leading `./`, which `ipkg-build` keeps.
    fn append(&mut self, mut header: tar::Header, name: &str, data: &[u8]) -> Result<()> {
        let field = &mut header.as_old_mut().name;
        anyhow::ensure!(name.len() < field.len(), "package path {name} is longer than a tar header holds");
        field[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        self.builder.append(&header, data)?;
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>> {
        Ok(self.builder.into_inner()?)
    }
}
