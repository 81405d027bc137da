//! `.apk` packages (apk-tools 3, ADB format) for OpenWrt 25.x.
//!
//! apk-tools 3 writes the package: `apk mkpkg` takes a staged file tree,
//! the metadata as `--info key:value` and the scripts. Debian 12 packages no
//! apk-tools 3, so the tool is looked up on PATH or given with `--apk-tool`.
//! Without it the `.apk` is skipped with a message naming what is missing. Like OpenWrt's build, the staged tree also holds
//! `/lib/apk/packages/dnsgate.{list,conffiles,conffiles_static}`, which
//! OpenWrt's `default_postinst`, `default_prerm` and sysupgrade read.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use sha2::{Digest as _, Sha256};

use super::metadata::{self, DESCRIPTION, KERNEL_DEPENDENCY, LICENSE, NAME, SUMMARY};
use super::payload::{CONFFILES, Payload};
use crate::prereq::{on_path, output};

/// Scripts, from `openwrt/control/apk`, by the name `apk mkpkg --script`
/// gives them.
const SCRIPTS: [&str; 4] = ["post-install", "post-upgrade", "pre-deinstall", "post-deinstall"];

/// Finds an apk-tools 3 binary: `explicit`, or `apk` on PATH. Returns why
/// none can be used when it fails.
pub fn find_tool(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let tool = match explicit {
        Some(path) => path.to_path_buf(),
        None if on_path("apk") => PathBuf::from("apk"),
        None => {
            return Err("no `apk` on PATH: the .apk needs apk-tools 3 (`apk mkpkg`), which Debian 12 does not \
                        package; build apk-tools 3.0 from its source and pass --apk-tool PATH"
                .to_owned());
        }
    };
    let version = output(Command::new(&tool).arg("--version")).unwrap_or_default();
    if !version.starts_with("apk-tools 3.") {
        return Err(format!(
            "{} is not apk-tools 3 (it printed {:?}); `apk mkpkg` and the ADB package format came with 3.0",
            tool.display(),
            version.trim()
        ));
    }
    Ok(tool)
}

/// Stages the payload under `work_dir` and runs `apk mkpkg`; returns the
/// path of `dnsgate-<version>.<arch>.apk` in `out_dir`.
pub fn write(
    tool: &Path,
    root: &Path,
    payload: &Payload,
    arch: &str,
    mtime: u64,
    work_dir: &Path,
    out_dir: &Path,
) -> Result<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("apk mkpkg records the owner of each staged file, so it must run as root to record root");
    }
    let tree = work_dir.join(format!("apk-{arch}"));
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("failed to clear {}", tree.display()))?;
    }
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
    for (path, file) in &payload.files {
        stage(&tree.join(path), file.mode, &file.data, mtime)?;
    }
    let info_dir = format!("lib/apk/packages/{NAME}");
    let mut listed: Vec<String> = payload.files.keys().map(|path| format!("/{path}")).collect();
    for suffix in ["list", "conffiles", "conffiles_static"] {
        listed.push(format!("/{info_dir}.{suffix}"));
    }
    listed.sort();
    stage(&tree.join(format!("{info_dir}.list")), 0o644, format!("{}\n", listed.join("\n")).as_bytes(), mtime)?;
    stage(&tree.join(format!("{info_dir}.conffiles")), 0o644, format!("{}\n", CONFFILES.join("\n")).as_bytes(), mtime)?;
    let mut sums = String::new();
    for conffile in CONFFILES {
        let file = &payload.files[conffile.trim_start_matches('/')];
        sums.push_str(&format!("{conffile} {}\n", hex(&Sha256::digest(&file.data))));
    }
    stage(&tree.join(format!("{info_dir}.conffiles_static")), 0o644, sums.as_bytes(), mtime)?;

    let (kernel, minimum) = KERNEL_DEPENDENCY;
    let description = format!("{SUMMARY}. {}", DESCRIPTION.join(" "));
    let path = out_dir.join(format!("{NAME}-{}.{arch}.apk", metadata::version()));
    let mut command = Command::new(tool);
    command
        .arg("mkpkg")
        .args(["--info", &format!("name:{NAME}")])
        .args(["--info", &format!("version:{}", metadata::version())])
        .args(["--info", &format!("description:{description}")])
        .args(["--info", &format!("arch:{arch}")])
        .args(["--info", &format!("license:{LICENSE}")])
        .args(["--info", &format!("origin:{NAME}")])
        .args(["--info", &format!("depends:{kernel}>={minimum}")]);
    for script in SCRIPTS {
        let script_path = root.join("openwrt/control/apk").join(script);
        command.args(["--script", &format!("{script}:{}", script_path.display())]);
    }
    command.arg("--files").arg(&tree).arg("--output").arg(&path);
    let result = command.output().with_context(|| format!("failed to start {}", tool.display()))?;
    if !result.status.success() {
        bail!("apk mkpkg failed with {}: {}", result.status, String::from_utf8_lossy(&result.stderr).trim());
    }
    Ok(path)
}

/// Writes one staged file. `apk mkpkg` records the file's mode, owner and
/// modification time, so those are set here.
fn stage(path: &Path, mode: u32, data: &[u8], mtime: std::time::SystemTime) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("failed to create {}", parent.display()))?;
    }
    std::fs::write(path, data).with_context(|| format!("failed to write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    std::fs::File::options().write(true).open(path)?.set_modified(mtime)?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
