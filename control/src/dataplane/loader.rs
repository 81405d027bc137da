//! Loading the program and its maps into the kernel.

use std::path::{Path, PathBuf};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::Xdp,
};
use dnsgate_common::maps::{
    DataplaneConfig, IpKey, MAP_ACTIVE_SET, MAP_CONFIG, MAP_COUNTERS, MAP_INTERCEPT_CLIENTS, MAP_ROUTER_ADDRS,
    MAP_RULES, PROGRAM_NAME,
};
use tracing::{debug, info, warn};

/// The program that passes every frame, attached to the client end of a
/// veth pair in tests (a native-mode `XDP_TX` frame reaches only a peer that
/// runs XDP itself).
pub const PASS_PROGRAM_NAME: &str = "xdp_pass";

use super::{DataplaneError, object_bytes};

/// How to load the program.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Buckets in each of the two rule sets (eight rules per bucket).
    pub rule_buckets: u32,
    /// Load without the kernel's BTF, as on kernels built without it
    /// (OpenWrt ships none).
    pub ignore_kernel_btf: bool,
    /// Directory in bpffs where the counters are pinned for `dnsgate stats`;
    /// `None` pins nothing.
    pub pin_dir: Option<PathBuf>,
    /// An object to load instead of the embedded one (tests only).
    pub object: Option<&'static [u8]>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            rule_buckets: dnsgate_common::maps::DEFAULT_RULE_BUCKETS,
            ignore_kernel_btf: false,
            pin_dir: None,
            object: None,
        }
    }
}

/// The loaded program and its maps.
pub struct Dataplane {
    pub(super) ebpf: Ebpf,
    pub(super) rule_buckets: u32,
    pub(super) config: DataplaneConfig,
    pub(super) active_set: u32,
    pinned: Vec<PathBuf>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("rule_buckets", &self.rule_buckets)
            .field("active_set", &self.active_set)
            .finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Loads the object, sizes the rule sets, verifies the program and
    /// writes the default configuration.
    pub fn load(options: &LoadOptions) -> Result<Self, DataplaneError> {
        raise_memlock_limit();
        let kernel_btf = if options.ignore_kernel_btf { None } else { Btf::from_sys_fs().ok() };
        let buckets = options.rule_buckets.max(1);
        let mut loader = EbpfLoader::new();
        loader
            .btf(kernel_btf.as_ref())
            .map_max_entries(MAP_RULES, 2 * buckets);
        let object = options.object.unwrap_or_else(object_bytes);
        let mut ebpf = loader.load(object).map_err(|source| DataplaneError::Load { source })?;

        for name in [PROGRAM_NAME, PASS_PROGRAM_NAME] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::MissingProgram { name })?
                .try_into()
                .map_err(|source| DataplaneError::Verify { program: name, source })?;
            program.load().map_err(|source| DataplaneError::Verify { program: name, source })?;
        }
        let name = super::RESTORE_PROGRAM_NAME;
        let restore: &mut aya::programs::SchedClassifier = ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram { name })?
            .try_into()
            .map_err(|source| DataplaneError::Verify { program: name, source })?;
        restore.load().map_err(|source| DataplaneError::Verify { program: name, source })?;
        info!(buckets, btf = kernel_btf.is_some(), "XDP program loaded");

        let mut dataplane = Self {
            ebpf,
            rule_buckets: buckets,
            config: DataplaneConfig::DEFAULT,
            active_set: 0,
            pinned: Vec::new(),
        };
        dataplane.write_config(DataplaneConfig { set_buckets: buckets, ..DataplaneConfig::DEFAULT })?;
        dataplane.write_active_set(0)?;
        if let Some(dir) = &options.pin_dir {
            dataplane.pin_counters(dir)?;
        }
        Ok(dataplane)
    }

    /// A loaded program ([`PROGRAM_NAME`] or [`PASS_PROGRAM_NAME`]), for
    /// test runs.
    pub fn program(&self, name: &'static str) -> Result<&Xdp, DataplaneError> {
        self.ebpf
            .program(name)
            .ok_or(DataplaneError::MissingProgram { name })?
            .try_into()
            .map_err(|source| DataplaneError::Verify { program: name, source })
    }

    /// A loaded program, mutable, for attaching.
    pub fn program_mut(&mut self, name: &'static str) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram { name })?
            .try_into()
            .map_err(|source| DataplaneError::Verify { program: name, source })
    }

    /// The configuration last written.
    pub fn config(&self) -> DataplaneConfig {
        self.config
    }

    /// Replaces the configuration the program reads on every query. The
    /// bucket counts are managed by [`Dataplane::publish`] and kept.
    pub fn set_config(&mut self, mut config: DataplaneConfig) -> Result<(), DataplaneError> {
        config.buckets = self.config.buckets;
        config.set_buckets = self.config.set_buckets;
        config.layout_version = dnsgate_common::maps::LAYOUT_VERSION;
        self.write_config(config)
    }

    pub(super) fn write_config(&mut self, config: DataplaneConfig) -> Result<(), DataplaneError> {
        let mut map: Array<_, DataplaneConfig> = self.map_mut(MAP_CONFIG)?;
        map.set(0, config, 0).map_err(|source| map_error(MAP_CONFIG, "writing the configuration", source))?;
        self.config = config;
        Ok(())
    }

    pub(super) fn write_active_set(&mut self, set: u32) -> Result<(), DataplaneError> {
        let mut map: Array<_, u32> = self.map_mut(MAP_ACTIVE_SET)?;
        map.set(0, set, 0).map_err(|source| map_error(MAP_ACTIVE_SET, "flipping the active set", source))?;
        self.active_set = set;
        Ok(())
    }

    /// Replaces the router's own addresses: only queries to these are judged.
    pub fn set_router_addresses(&mut self, addresses: &[std::net::IpAddr]) -> Result<(), DataplaneError> {
        let mut map: aya::maps::HashMap<_, IpKey, u32> = self.map_mut(MAP_ROUTER_ADDRS)?;
        let wanted: Vec<IpKey> = addresses.iter().map(|address| ip_key(*address)).collect();
        let present: Vec<IpKey> = map.keys().filter_map(Result::ok).collect();
        for key in present.iter().filter(|key| !wanted.contains(key)) {
            map.remove(key).map_err(|source| map_error(MAP_ROUTER_ADDRS, "removing an address", source))?;
        }
        for key in &wanted {
            map.insert(key, 0, 0).map_err(|source| map_error(MAP_ROUTER_ADDRS, "adding an address", source))?;
        }
        debug!(?addresses, "router addresses updated");
        Ok(())
    }

    pub(super) fn map_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T, DataplaneError>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self.ebpf.map_mut(name).ok_or(DataplaneError::MissingMap { name })?;
        T::try_from(map).map_err(|source| map_error(name, "opening", source))
    }

    pub(super) fn map<'a, T>(&'a self, name: &'static str) -> Result<T, DataplaneError>
    where
        T: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self.ebpf.map(name).ok_or(DataplaneError::MissingMap { name })?;
        T::try_from(map).map_err(|source| map_error(name, "opening", source))
    }

    fn pin_counters(&mut self, dir: &Path) -> Result<(), DataplaneError> {
        mount_bpffs_if_missing(dir);
        std::fs::create_dir_all(dir).map_err(|source| DataplaneError::System { action: "creating the pin directory (is bpffs mounted on /sys/fs/bpf?)", path: dir.to_owned(), source })?;
        for name in [MAP_COUNTERS, MAP_INTERCEPT_CLIENTS] {
            let path = dir.join(name);
            // A stale pin from a run that did not exit cleanly would make pinning fail.
            let _ = std::fs::remove_file(&path);
            let map = self.ebpf.map_mut(name).ok_or(DataplaneError::MissingMap { name })?;
            map.pin(&path).map_err(|source| DataplaneError::Map {
                name,
                operation: "pinning",
                source: aya::maps::MapError::PinError { name: Some(name.into()), error: source },
            })?;
            self.pinned.push(path);
        }
        Ok(())
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        for path in &self.pinned {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The map key of an address.
pub fn ip_key(address: std::net::IpAddr) -> IpKey {
    match address {
        std::net::IpAddr::V4(v4) => IpKey::from_v4(v4.octets()),
        std::net::IpAddr::V6(v6) => IpKey(v6.octets()),
    }
}

pub(super) fn map_error(name: &'static str, operation: &'static str, source: aya::maps::MapError) -> DataplaneError {
    DataplaneError::Map { name, operation, source }
}

/// Opens a pinned map.
pub(super) fn open_pinned(path: &Path) -> Result<MapData, DataplaneError> {
    MapData::from_pin(path).map_err(|_| DataplaneError::NotPinned {
        path: path.parent().unwrap_or(path).to_owned(),
    })
}

/// Mounts bpffs on /sys/fs/bpf when `dir` lies under it and nothing is
/// mounted there yet, as a system without systemd or procd may leave it.
/// Failure is left for the pinning that follows to report.
fn mount_bpffs_if_missing(dir: &Path) {
    let root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(root) {
        return;
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.lines().any(|line| line.split_whitespace().nth(1) == Some("/sys/fs/bpf")) {
        return;
    }
    match nix::mount::mount(Some("bpf"), root, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>) {
        Ok(()) => info!("mounted bpffs on /sys/fs/bpf"),
        Err(error) => warn!(%error, "mounting bpffs on /sys/fs/bpf failed"),
    }
}

/// Lifts the locked-memory limit for kernels that still charge BPF maps to
/// it (before 5.11). Newer kernels charge the memory cgroup instead, and a
/// container may forbid raising the limit, so failure is only logged.
#[expect(unsafe_code, reason = "setrlimit has no safe wrapper in std")]
fn raise_memlock_limit() {
    let limit = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: `limit` is a valid rlimit that outlives the call.
    let result = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if result != 0 {
        debug!(error = %std::io::Error::last_os_error(), "could not raise RLIMIT_MEMLOCK; fine on kernels from 5.11");
    }
}
