//! The guest's userland, taken from Debian packages of the guest
//! architecture: busybox-static for the shell and core tools, and
//! iproute2's `ip` with the shared libraries it needs, because busybox's
//! `ip` has no `netns`, cannot name a veth peer and cannot attach XDP.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};

use super::{Arch, output_checked, run_checked};

/// At most this many symlinks are followed when resolving a path inside an
/// unpacked package, which stops a symlink loop.
const MAX_SYMLINK_HOPS: usize = 16;

/// Guest path of busybox; the init script's `#!` line names it.
const BUSYBOX_GUEST_PATH: &str = "/bin/busybox";

/// Files of the guest userland, each with its guest path and host file.
pub struct Userland {
    pub files: Vec<(String, PathBuf)>,
}

impl Userland {
    /// Downloads and unpacks the packages for `arch`, unless an earlier run
    /// left them in the cache. Remove `.vm/userland` to pick up newer
    /// package versions.
    pub fn prepare(cache: &Path, arch: Arch) -> Result<Self> {
        let dir = cache.join("userland").join(arch.name());
        let manifest = dir.join("files");
        if let Some(userland) = Self::load(&manifest) {
            return Ok(userland);
        }
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("failed to clear {}", dir.display()))?;
        }
        fs::create_dir_all(&dir)?;

        let busybox_tree = unpack_package(cache, &dir, arch, "busybox-static")?;
        let busybox = busybox_tree.join("bin/busybox");
        if !busybox.is_file() {
            bail!("busybox-static for {} has no bin/busybox", arch.debian());
        }
        let mut files = vec![(BUSYBOX_GUEST_PATH.to_owned(), busybox)];

        let iproute2 = unpack_package(cache, &dir, arch, "iproute2")?;
        let ip = ["bin/ip", "sbin/ip", "usr/bin/ip", "usr/sbin/ip"]
            .iter()
            .map(|path| iproute2.join(path))
            .find(|path| path.is_file())
            .ok_or_else(|| anyhow!("iproute2 for {} has no ip binary", arch.debian()))?;
        files.push(("/usr/sbin/ip".to_owned(), resolve_in_tree(&iproute2, &ip)?));
        files.extend(shared_library_closure(cache, &dir, arch, &ip)?);

        let listing: String = files
            .iter()
            .map(|(guest, host)| format!("{guest}\t{}\n", host.display()))
            .collect();
        fs::write(&manifest, listing)?;
        Ok(Self { files })
    }

    /// Reads the file list an earlier run wrote, if every file is still there.
    fn load(manifest: &Path) -> Option<Self> {
        let listing = fs::read_to_string(manifest).ok()?;
        let files: Vec<(String, PathBuf)> = listing
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(guest, host)| (guest.to_owned(), PathBuf::from(host)))
            .collect();
        let complete = files.iter().any(|(guest, _)| guest == BUSYBOX_GUEST_PATH)
            && files.iter().all(|(_, host)| host.is_file());
        complete.then_some(Self { files })
    }
}

/// Returns the guest path and host file of the dynamic loader and of every
/// shared library `binary` needs, directly or through another library.
fn shared_library_closure(
    cache: &Path,
    dir: &Path,
    arch: Arch,
    binary: &Path,
) -> Result<Vec<(String, PathBuf)>> {
    let interpreter = elf_interpreter(binary)?;
    let mut trees: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut files = Vec::new();
    // libc.so.6 names the loader as a dependency too. The loader is placed
    // below, at the interpreter path the binary requests.
    let loader_soname = interpreter
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut seen = BTreeSet::from([loader_soname]);
    let mut pending = elf_needed(binary)?;

    // The loader comes from libc6; unpacking it first also serves libc.so.6.
    trees.insert(
        "libc6".to_owned(),
        unpack_package(cache, dir, arch, "libc6")?,
    );
    let loader = resolve_in_tree(
        &trees["libc6"],
        &trees["libc6"].join(interpreter.trim_start_matches('/')),
    )?;
    files.push((interpreter, loader));

    while let Some(soname) = pending.pop() {
        if !seen.insert(soname.clone()) {
            continue;
        }
        let package = package_of_soname(&soname)?;
        if !trees.contains_key(&package) {
            trees.insert(package.clone(), unpack_package(cache, dir, arch, &package)?);
        }
        let tree = &trees[&package];
        let (guest_path, host_file) = find_library(tree, arch, &soname)
            .with_context(|| format!("{package} for {} has no {soname}", arch.debian()))?;
        pending.extend(elf_needed(&host_file)?);
        files.push((guest_path, host_file));
    }
    Ok(files)
}

/// Downloads the candidate version of `package` for `arch` and unpacks it
/// under `dir`.
fn unpack_package(cache: &Path, dir: &Path, arch: Arch, package: &str) -> Result<PathBuf> {
    let debs = cache.join("debs").join(arch.name());
    fs::create_dir_all(&debs)?;
    // `<package>_<version>_<arch>.deb`; neither part may contain `_`.
    let prefix = format!("{package}_");
    let suffix = format!("_{}.deb", arch.debian());
    let matching = |debs: &Path| -> Result<Vec<PathBuf>> {
        Ok(fs::read_dir(debs)?
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.path())
            .filter(|path| {
                let name = path
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                name.starts_with(&prefix)
                    && name.ends_with(&suffix)
                    && name.matches('_').count() == 2
            })
            .collect())
    };
    // Older downloads go first, so the one file left is the candidate.
    for old in matching(&debs)? {
        fs::remove_file(&old)?;
    }

    let qualified = format!("{package}:{}", arch.debian());
    println!("vm-test: downloading {qualified} for the guest");
    run_checked(
        Command::new("apt-get")
            .args(["-o", "APT::Sandbox::User=root", "download", &qualified])
            .current_dir(&debs),
    )?;
    let [deb] = &matching(&debs)?[..] else {
        bail!(
            "apt-get download {qualified} did not leave exactly one {prefix}*{suffix} in {}",
            debs.display()
        );
    };

    let tree = dir.join(package);
    fs::create_dir_all(&tree)?;
    run_checked(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree))?;
    Ok(tree)
}

/// Maps a library soname to the Debian package that ships it, through the
/// host's dpkg database. Library packages are multiarch, so the host's
/// package name is the guest's too.
fn package_of_soname(soname: &str) -> Result<String> {
    let output = Command::new("dpkg")
        .args(["-S", soname])
        .output()
        .context("failed to start dpkg -S")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let suffix = format!("/{soname}");
    listing
        .lines()
        .filter_map(|line| line.split_once(": "))
        .filter(|(_, path)| path.ends_with(&suffix) && path.contains("lib/"))
        .map(|(package, _)| package.split(':').next().unwrap_or(package).to_owned())
        .next()
        .ok_or_else(|| {
            anyhow!("no installed package ships {soname}; install the package of iproute2's libraries on the host")
        })
}

/// Finds `soname` in the library directories of an unpacked package.
fn find_library(tree: &Path, arch: Arch, soname: &str) -> Option<(String, PathBuf)> {
    let triplet = arch.gnu_triplet();
    [
        format!("lib/{triplet}"),
        format!("usr/lib/{triplet}"),
        "lib".to_owned(),
        "usr/lib".to_owned(),
    ]
    .into_iter()
    .map(|directory| format!("{directory}/{soname}"))
    .find_map(|relative| {
        let host = resolve_in_tree(tree, &tree.join(&relative)).ok()?;
        Some((format!("/{relative}"), host))
    })
}

/// Follows symlinks inside an unpacked package, treating absolute targets as
/// relative to the package root rather than to the host's root.
fn resolve_in_tree(tree: &Path, path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINK_HOPS {
        let metadata = fs::symlink_metadata(&current)
            .with_context(|| format!("{} does not exist", current.display()))?;
        if !metadata.file_type().is_symlink() {
            return Ok(current);
        }
        let target = fs::read_link(&current)?;
        current = if target.is_absolute() {
            tree.join(target.strip_prefix("/").expect("absolute path"))
        } else {
            current
                .parent()
                .expect("a symlink has a parent directory")
                .join(target)
        };
    }
    bail!("too many symlinks resolving {}", path.display())
}

fn elf_needed(binary: &Path) -> Result<Vec<String>> {
    let dynamic = output_checked(Command::new("readelf").arg("-d").arg(binary))?;
    // ` 0x0000000000000001 (NEEDED)  Shared library: [libc.so.6]`
    Ok(dynamic
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| {
            line.split_once('[')
                .and_then(|(_, rest)| rest.split_once(']'))
        })
        .map(|(soname, _)| soname.to_owned())
        .collect())
}

fn elf_interpreter(binary: &Path) -> Result<String> {
    let headers = output_checked(Command::new("readelf").arg("-l").arg(binary))?;
    // `      [Requesting program interpreter: /lib64/ld-linux-x86-64.so.2]`
    headers
        .lines()
        .find_map(|line| line.split_once("program interpreter: "))
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(path, _)| path.to_owned())
        .ok_or_else(|| anyhow!("{} names no program interpreter", binary.display()))
}
