//! Kernels of the test matrix: found through the `linux-image-<arch>`
//! metapackage of every configured apt suite, fetched with `apt-get
//! download`, unpacked with `dpkg-deb -x`, and the modules the guest needs
//! taken from them in load order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};

use super::{Arch, output_checked, run_checked};

/// Modules the guest loads, by module name. Debian builds veth as a module;
/// the namespace tests need it.
pub const GUEST_MODULES: &[&str] = &["veth"];

/// One Debian kernel image package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPackage {
    pub arch: Arch,
    /// Suite the metapackage came from, such as `bookworm-backports`.
    pub suite: String,
    /// Image package, such as `linux-image-6.1.0-57-amd64`.
    pub package: String,
    /// Debian version of the image package.
    pub version: String,
    /// Kernel release as `uname -r` prints it, such as `6.1.0-57-amd64`.
    pub release: String,
    /// Major and minor version, such as (6, 1).
    pub series: (u32, u32),
}

impl KernelPackage {
    pub fn series_string(&self) -> String {
        format!("{}.{}", self.series.0, self.series.1)
    }
}

/// Every kernel series the configured suites offer for one architecture.
pub struct Matrix {
    pub arch: Arch,
    /// The newest package of each series, oldest series first.
    pub kernels: Vec<KernelPackage>,
    /// Packages left out because a newer one of the same series exists.
    pub superseded: Vec<KernelPackage>,
}

impl Matrix {
    pub fn print(&self) {
        println!(
            "vm-test: {} kernels offered by the configured apt suites:",
            self.arch.name()
        );
        for kernel in &self.kernels {
            println!(
                "  {:<6} {:<24} {} {} (suite {})",
                kernel.series_string(),
                kernel.release,
                kernel.package,
                kernel.version,
                kernel.suite
            );
        }
        for kernel in &self.superseded {
            println!(
                "  skipped {} {} (suite {}): a newer {} package is in the matrix",
                kernel.package,
                kernel.version,
                kernel.suite,
                kernel.series_string()
            );
        }
    }
}

/// A kernel unpacked in the cache and ready to boot.
pub struct PreparedKernel {
    pub vmlinuz: PathBuf,
    /// Uncompressed module files for the guest, in load order.
    pub modules: Vec<PathBuf>,
}

/// Lists the kernels the configured suites offer for `arch`, one per series.
pub fn discover(arch: Arch) -> Result<Matrix> {
    let meta = format!("linux-image-{0}:{0}", arch.debian());
    let madison = output_checked(Command::new("apt-cache").args(["madison", &meta]))?;

    // (suite, metapackage version) from lines such as
    // `linux-image-amd64 | 6.1.192-3 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages`
    let mut offers = Vec::new();
    for line in madison.lines() {
        let columns: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, meta_version, source] = columns[..] else {
            continue;
        };
        if !source.ends_with("Packages") {
            continue;
        }
        let suite = source
            .split_whitespace()
            .nth(1)
            .and_then(|component| component.split('/').next())
            .ok_or_else(|| anyhow!("unexpected apt-cache madison line for {meta}: {line:?}"))?;
        offers.push((suite.to_owned(), meta_version.to_owned()));
    }

    // One `apt-cache show` for every version: each call reads the whole
    // package index, which takes seconds with three suites and two
    // architectures.
    let mut found = Vec::new();
    if !offers.is_empty() {
        let mut show = Command::new("apt-cache");
        show.arg("show").args(
            offers
                .iter()
                .map(|(_, version)| format!("{meta}={version}")),
        );
        let stanzas = output_checked(&mut show)?;
        for (suite, meta_version) in offers {
            let stanza = stanzas
                .split("\n\n")
                .find(|stanza| {
                    stanza
                        .lines()
                        .any(|line| line == format!("Version: {meta_version}"))
                })
                .ok_or_else(|| {
                    anyhow!("apt-cache show printed no stanza for {meta} {meta_version}")
                })?;
            let (package, version) = image_dependency(stanza).ok_or_else(|| {
                anyhow!("{meta} {meta_version} depends on no linux-image package")
            })?;
            let release = package
                .trim_start_matches("linux-image-")
                .trim_end_matches("-unsigned")
                .to_owned();
            let series = parse_series(&release).ok_or_else(|| {
                anyhow!("cannot read a kernel series from release {release:?} of {package}")
            })?;
            found.push(KernelPackage {
                arch,
                suite,
                package,
                version,
                release,
                series,
            });
        }
    }
    if found.is_empty() {
        bail!(
            "apt-cache finds no {meta}: check that `apt-get update` ran after the sources for bullseye, \
             bookworm and bookworm-backports were added"
        );
    }

    let mut newest: BTreeMap<(u32, u32), KernelPackage> = BTreeMap::new();
    let mut superseded = Vec::new();
    for kernel in found {
        match newest.remove(&kernel.series) {
            None => {
                newest.insert(kernel.series, kernel);
            }
            Some(current) => {
                let (keep, drop) = if version_newer(&kernel.version, &current.version)? {
                    (kernel, current)
                } else {
                    (current, kernel)
                };
                superseded.push(drop);
                newest.insert(keep.series, keep);
            }
        }
    }
    Ok(Matrix {
        arch,
        kernels: newest.into_values().collect(),
        superseded,
    })
}

/// Reads the first `linux-image-*` dependency of the first stanza of
/// `apt-cache show` output, with its pinned version.
fn image_dependency(show: &str) -> Option<(String, String)> {
    let depends = show
        .lines()
        .find_map(|line| line.strip_prefix("Depends:"))?;
    depends.split(',').map(str::trim).find_map(|dependency| {
        // `linux-image-6.1.0-57-amd64 (= 6.1.192-3)`
        let (name, constraint) = dependency.split_once(' ')?;
        let version = constraint
            .trim()
            .strip_prefix("(=")?
            .strip_suffix(')')?
            .trim();
        name.starts_with("linux-image-")
            .then(|| (name.to_owned(), version.to_owned()))
    })
}

fn parse_series(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Compares two Debian versions with dpkg's own rules.
fn version_newer(candidate: &str, current: &str) -> Result<bool> {
    let status = Command::new("dpkg")
        .args(["--compare-versions", candidate, "gt", current])
        .status()
        .context("failed to start dpkg --compare-versions")?;
    Ok(status.success())
}

/// Downloads and unpacks `kernel` and prepares the guest modules, unless the
/// cache has them. Only the image and the guest modules are kept: the rest
/// of an unpacked kernel is some 250 MB.
pub fn prepare(cache: &Path, kernel: &KernelPackage) -> Result<PreparedKernel> {
    let dir = cache
        .join("kernels")
        .join(kernel.arch.name())
        .join(&kernel.release);
    let vmlinuz = dir.join("vmlinuz");
    let modules_dir = dir.join("guest-modules");
    let load_order = dir.join("load-order");
    let marker = dir.join("prepared-version");

    if fs::read_to_string(&marker).ok().as_deref() != Some(kernel.version.as_str()) {
        let deb = download(cache, kernel.arch, &kernel.package, &kernel.version)?;
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("failed to clear {}", dir.display()))?;
        }
        let tree = dir.join("root");
        fs::create_dir_all(&tree)?;
        fs::create_dir_all(&modules_dir)?;
        println!("vm-test: unpacking {}", deb.display());
        run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;

        let image = tree
            .join("boot")
            .join(format!("vmlinuz-{}", kernel.release));
        fs::copy(&image, &vmlinuz)
            .with_context(|| format!("{} has no {}", kernel.package, image.display()))?;
        let tree_modules = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|base| tree.join(base).join(&kernel.release))
            .find(|path| path.join("modules.builtin").is_file())
            .ok_or_else(|| {
                anyhow!(
                    "{} has no modules.builtin under lib/modules or usr/lib/modules",
                    kernel.package
                )
            })?;
        let modules = module_load_order(&tree_modules, GUEST_MODULES, &modules_dir)?;
        let names: Vec<String> = modules
            .iter()
            .filter_map(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .map(str::to_owned)
            })
            .collect();
        fs::write(&load_order, names.join("\n"))?;
        fs::remove_dir_all(&tree)
            .with_context(|| format!("failed to remove {}", tree.display()))?;
        fs::write(&marker, &kernel.version)?;
    }

    let names = fs::read_to_string(&load_order)?;
    let modules = names
        .lines()
        .filter(|name| !name.is_empty())
        .map(|name| modules_dir.join(name))
        .collect();
    Ok(PreparedKernel { vmlinuz, modules })
}

/// Runs `apt-get download` for one package version unless the cache has the
/// file, and returns its path.
pub fn download(cache: &Path, arch: Arch, package: &str, version: &str) -> Result<PathBuf> {
    let debs = cache.join("debs").join(arch.name());
    fs::create_dir_all(&debs)?;
    // apt-get writes an epoch's colon as `%3a` in file names.
    let file = debs.join(format!(
        "{package}_{}_{}.deb",
        version.replace(':', "%3a"),
        arch.debian()
    ));
    if !file.is_file() {
        println!("vm-test: downloading {package}:{} {version}", arch.debian());
        run_checked(
            // The cache belongs to root, so apt's unprivileged `_apt` user
            // could not write it; download as root without the warning.
            Command::new("apt-get")
                .args(["-o", "APT::Sandbox::User=root", "download"])
                .arg(format!("{package}:{}={version}", arch.debian()))
                .current_dir(&debs),
        )?;
    }
    if !file.is_file() {
        bail!(
            "apt-get download of {package} {version} left no {}",
            file.display()
        );
    }
    Ok(file)
}

/// Returns uncompressed copies (in `out_dir`) of the module files to load so
/// that every module in `names` is present, dependencies first. Modules built
/// into the kernel need no file and are left out.
///
/// Debian's image packages ship no modules.dep (depmod writes it when the
/// package is installed), so the dependencies come from each module's own
/// `depends=` entry, the list modpost records and depmod reads.
fn module_load_order(modules_dir: &Path, names: &[&str], out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = BTreeMap::new();
    collect_module_files(&modules_dir.join("kernel"), &mut files)?;
    let builtin = fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();

    let modules = Modules {
        files,
        builtin,
        out_dir,
    };
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in names {
        modules.visit(name, &mut seen, &mut order)?;
    }
    Ok(order)
}

/// Maps module names to their files under `dir`, recursively.
fn collect_module_files(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("failed to list {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect_module_files(&path, files)?;
        } else if let Some(file) = path.file_name().and_then(|name| name.to_str())
            && file.contains(".ko")
        {
            files.insert(module_name(file), path);
        }
    }
    Ok(())
}

struct Modules<'a> {
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
    out_dir: &'a Path,
}

impl Modules<'_> {
    /// Appends `name`'s dependencies, then `name`, to `order`.
    fn visit(
        &self,
        name: &str,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<()> {
        if !seen.insert(name.to_owned()) {
            return Ok(());
        }
        let Some(source) = self.files.get(name) else {
            if self.builtin.contains(name) {
                return Ok(());
            }
            bail!("module {name} is neither a file under the kernel's module tree nor built in");
        };
        let module = uncompressed_module(source, self.out_dir)?;
        let bytes =
            fs::read(&module).with_context(|| format!("failed to read {}", module.display()))?;
        for dependency in modinfo_depends(&bytes) {
            self.visit(&dependency, seen, order)?;
        }
        order.push(module);
        Ok(())
    }
}

/// Reads the comma-separated `depends=` entry of a module's `.modinfo`
/// section, whose entries are NUL-terminated `key=value` strings.
fn modinfo_depends(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"depends=";
    let Some(start) = module
        .windows(KEY.len())
        .enumerate()
        .find(|(at, window)| *window == KEY && (*at == 0 || module[at - 1] == 0))
        .map(|(at, _)| at + KEY.len())
    else {
        return Vec::new();
    };
    let end = module[start..]
        .iter()
        .position(|&byte| byte == 0)
        .map_or(module.len(), |len| start + len);
    String::from_utf8_lossy(&module[start..end])
        .split(',')
        .filter(|name| !name.is_empty())
        .map(module_name)
        .collect()
}

/// `kernel/drivers/net/veth.ko.xz` -> `veth`; dashes become underscores as
/// the kernel spells module names.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Copies a module into `out_dir` as a plain `.ko`, decompressing `.ko.xz`,
/// `.ko.zst` and `.ko.gz` on the host: busybox's `insmod` loads only plain
/// files, and not every kernel can decompress modules itself.
fn uncompressed_module(source: &Path, out_dir: &Path) -> Result<PathBuf> {
    let file_name = source
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    let (stem, decompressor) = match file_name.rsplit_once(".ko") {
        Some((stem, "")) => (stem, None),
        Some((stem, ".xz")) => (stem, Some("xz")),
        Some((stem, ".zst")) => (stem, Some("zstd")),
        Some((stem, ".gz")) => (stem, Some("gzip")),
        _ => bail!("unexpected module file name {}", source.display()),
    };
    let target = out_dir.join(format!("{stem}.ko"));
    match decompressor {
        None => {
            fs::copy(source, &target).with_context(|| {
                format!(
                    "failed to copy {} to {}",
                    source.display(),
                    target.display()
                )
            })?;
        }
        Some(tool) => {
            let output = fs::File::create(&target)?;
            let status = Command::new(tool)
                .args(["-d", "-c"])
                .arg(source)
                .stdout(Stdio::from(output))
                .status()
                .with_context(|| {
                    format!("failed to start {tool} to decompress {}", source.display())
                })?;
            if !status.success() {
                bail!(
                    "{tool} failed to decompress {} ({status})",
                    source.display()
                );
            }
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_dependency_reads_pinned_package() {
        let show = "Package: linux-image-amd64\nVersion: 6.1.192-3\n\
                    Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)\nDescription: x\n";
        assert_eq!(
            image_dependency(show),
            Some((
                "linux-image-6.1.0-57-amd64".to_owned(),
                "6.1.192-3".to_owned()
            ))
        );
    }

    #[test]
    fn image_dependency_skips_other_packages() {
        let show = "Depends: initramfs-tools (= 1), linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)\n";
        assert_eq!(
            image_dependency(show),
            Some((
                "linux-image-6.12.95+deb12-amd64".to_owned(),
                "6.12.95-1~bpo12+1".to_owned()
            ))
        );
    }

    #[test]
    fn series_from_release() {
        assert_eq!(parse_series("5.10.0-32-amd64"), Some((5, 10)));
        assert_eq!(parse_series("6.12.95+deb12-arm64"), Some((6, 12)));
        assert_eq!(parse_series("amd64"), None);
    }

    #[test]
    fn module_name_strips_path_and_compression() {
        assert_eq!(module_name("kernel/drivers/net/veth.ko.xz"), "veth");
        assert_eq!(
            module_name("kernel/net/ipv6/ip6_udp-tunnel.ko"),
            "ip6_udp_tunnel"
        );
    }

    #[test]
    fn modinfo_depends_reads_entry() {
        let module = b"\x7fELF..\0license=GPL\0depends=udp_tunnel,ip6-udp-tunnel\0name=vxlan\0";
        assert_eq!(modinfo_depends(module), ["udp_tunnel", "ip6_udp_tunnel"]);
        assert!(modinfo_depends(b"\0depends=\0name=veth\0").is_empty());
        assert!(modinfo_depends(b"\0name=veth\0").is_empty());
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        let dir = std::env::temp_dir().join(format!("dnsgate-vm-modules-{}", std::process::id()));
        let kernel = dir.join("kernel/net");
        let out = dir.join("out");
        fs::create_dir_all(&kernel).unwrap();
        fs::create_dir_all(&out).unwrap();
        fs::write(kernel.join("a.ko"), b"\0depends=b,c\0").unwrap();
        fs::write(kernel.join("b.ko"), b"\0depends=c\0").unwrap();
        fs::write(kernel.join("c.ko"), b"\0depends=\0").unwrap();
        fs::write(kernel.join("d.ko"), b"\0depends=\0").unwrap();
        fs::write(dir.join("modules.builtin"), "kernel/e.ko\n").unwrap();

        let order = module_load_order(&dir, &["a", "e"], &out).unwrap();
        let missing = module_load_order(&dir, &["f"], &out);
        fs::remove_dir_all(&dir).unwrap();

        let names: Vec<String> = order
            .iter()
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["c.ko", "b.ko", "a.ko"]);
        assert!(
            missing.is_err(),
            "a module that is neither a file nor built in must be an error"
        );
    }
}
