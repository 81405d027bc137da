//! Loading the program and its maps into the kernel.

use std::path::{Path, PathBuf};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::Xdp,
};
use dnsgate_common::maps::{
    DataplaneConfig, IpKey, LAYOUT_VERSION, MAP_ACTIVE_SET, MAP_CLIENTS, MAP_CONFIG, MAP_COUNTERS, MAP_EVENTS,
    MAP_INTERCEPT_CLIENTS, MAP_INTERCEPT_CONFIG, MAP_INTERCEPT_EXEMPT, MAP_INTERCEPT_FLOWS, MAP_OVERLAY,
    MAP_FALLBACK, MAP_RATE_LIMIT, MAP_RATE_LIMIT_CONFIG, MAP_ROUTER_ADDRS, MAP_RULES, PROGRAM_NAME, RateLimitConfig,
    FallbackConfig,
};
use tracing::{debug, info, warn};

/// The program that passes every frame, attached to the client end of a
/// veth pair in tests (a native-mode `XDP_TX` frame reaches only a peer that
/// runs XDP itself).
pub const PASS_PROGRAM_NAME: &str = "xdp_pass";

use super::{DataplaneError, object_bytes};

/// Every map of the object. With a pin directory all of them are pinned,
/// so a program left attached by a controller that died keeps reading the
/// same maps the next controller writes. `LABELS` is the per-CPU scratch
/// space of the parser.
const PINNED_MAPS: [&str; 17] = [
    MAP_CONFIG,
    MAP_ACTIVE_SET,
    MAP_RULES,
    MAP_OVERLAY,
    MAP_ROUTER_ADDRS,
    MAP_CLIENTS,
    MAP_COUNTERS,
    MAP_INTERCEPT_CONFIG,
    MAP_INTERCEPT_EXEMPT,
    MAP_INTERCEPT_FLOWS,
    MAP_INTERCEPT_CLIENTS,
    MAP_EVENTS,
    MAP_RATE_LIMIT_CONFIG,
    MAP_RATE_LIMIT,
    MAP_FALLBACK,
    "EVENT_BUDGET",
    "LABELS",
];

/// The directory under `pin_dir` that holds the objects of this map layout:
/// `v<LAYOUT_VERSION>`. A controller with another layout finds its own
/// directory empty and replaces what the other directories hold instead of
/// reading maps it does not understand.
pub fn layout_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(format!("v{LAYOUT_VERSION}"))
}

/// How to load the program.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Buckets in each of the two rule sets (eight rules per bucket).
    pub rule_buckets: u32,
    /// Load without the kernel's BTF, as on kernels built without it
    /// (OpenWrt ships none).
    pub ignore_kernel_btf: bool,
    /// Directory in bpffs where the maps and attachments are pinned (in its
    /// [`layout_dir`]), so they outlive the controller; maps already pinned
    /// there are adopted. `None` pins nothing.
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
    /// The layout directory the maps and links are pinned in.
    pub(super) pin: Option<PathBuf>,
    /// The maps were adopted from an earlier controller instead of created.
    adopted: bool,
    /// The id of the program an adopted link kept running, when it is not
    /// the one loaded here.
    pub(super) running: Option<u32>,
    /// The fallback settings last written, shared with the [`Heartbeat`].
    fallback: std::sync::Arc<std::sync::Mutex<FallbackConfig>>,
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
        let mut buckets = options.rule_buckets.max(1);
        let pin = match &options.pin_dir {
            Some(pin_dir) => Some(prepare_layout_dir(pin_dir)?),
            None => None,
        };
        let adopted = match &pin {
            Some(dir) => match adoptable_buckets(dir, buckets) {
                Ok(Some(pinned)) => {
                    buckets = pinned;
                    true
                }
                Ok(None) => false,
                Err(reason) => {
                    warn!(dir = %dir.display(), reason, "the pinned maps cannot be adopted; replacing them");
                    unpin_maps(dir);
                    false
                }
            },
            None => false,
        };
        let mut loader = EbpfLoader::new();
        loader
            .btf(kernel_btf.as_ref())
            .map_max_entries(MAP_RULES, 2 * buckets);
        let map_paths: Vec<(&str, PathBuf)> = match &pin {
            Some(dir) => PINNED_MAPS.iter().map(|name| (*name, dir.join(name))).collect(),
            None => Vec::new(),
        };
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
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
            pin,
            adopted,
            running: None,
            fallback: Default::default(),
        };
        if adopted {
            // A program attached by the previous controller reads these maps
            // right now: take over what it sees instead of resetting it.
            dataplane.read_state()?;
            info!(
                buckets,
                active_set = dataplane.active_set,
                "adopted the maps pinned by a previous controller"
            );
        } else {
            dataplane.write_config(DataplaneConfig { set_buckets: buckets, ..DataplaneConfig::DEFAULT })?;
            dataplane.write_active_set(0)?;
        }
        Ok(dataplane)
    }

    /// The maps were adopted from a previous controller.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The id of the filter program the interfaces run: the adopted one
    /// when a link kept the previous controller's program, otherwise the
    /// one loaded here.
    pub fn program_id(&self) -> Option<u32> {
        self.running.or_else(|| self.program(PROGRAM_NAME).ok()?.info().ok().map(|info| info.id()))
    }

    /// The layout directory the objects are pinned in, if any.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin.as_deref()
    }

    fn read_state(&mut self) -> Result<(), DataplaneError> {
        let config: Array<_, DataplaneConfig> = self.map(MAP_CONFIG)?;
        let config = config.get(&0, 0).map_err(|source| map_error(MAP_CONFIG, "reading the configuration", source))?;
        let active: Array<_, u32> = self.map(MAP_ACTIVE_SET)?;
        let active = active.get(&0, 0).map_err(|source| map_error(MAP_ACTIVE_SET, "reading the active set", source))?;
        self.config = DataplaneConfig { set_buckets: self.rule_buckets, ..config };
        self.active_set = active & 1;
        Ok(())
    }

    /// Removes the pinned maps and the layout directory, after the
    /// attachments are gone: used by `dnsgate stop --detach`.
    pub fn unpin(&mut self) {
        if let Some(dir) = self.pin.take() {
            unpin_maps(&dir);
            match std::fs::remove_dir(&dir) {
                Ok(()) => info!(dir = %dir.display(), "pinned maps removed"),
                Err(error) => warn!(dir = %dir.display(), %error, "removing the pin directory failed; remove it by hand"),
            }
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
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

    /// Writes the per-client rate limit of plain DNS queries: `rate`
    /// queries per second with bursts of `burst`; a `rate` of 0 turns it
    /// off. The buckets already filled are kept.
    pub fn set_rate_limit(&mut self, rate: u32, burst: u32) -> Result<(), DataplaneError> {
        let mut map: Array<_, RateLimitConfig> = self.map_mut(MAP_RATE_LIMIT_CONFIG)?;
        map.set(0, RateLimitConfig::new(rate, burst), 0)
            .map_err(|source| map_error(MAP_RATE_LIMIT_CONFIG, "writing the rate limit", source))?;
        debug!(rate, burst, "rate limit updated");
        Ok(())
    }

    /// Sets the fallback for allowed plain queries (see [`FallbackConfig`]):
    /// while no heartbeat came for `stale_after`, the kernel sends them to
    /// UDP `port` on the router. `port` 0 turns it off. Counts as a
    /// heartbeat.
    pub fn set_fallback(&mut self, port: u16, stale_after: std::time::Duration) -> Result<(), DataplaneError> {
        let settings = FallbackConfig {
            heartbeat_ns: 0,
            stale_after_ns: u64::try_from(stale_after.as_nanos()).unwrap_or(u64::MAX),
            port,
            padding: [0; 6],
        };
        let shared = self.fallback.clone();
        let mut current = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut map: Array<_, FallbackConfig> = self.map_mut(MAP_FALLBACK)?;
        write_heartbeat(&mut map, settings)?;
        *current = settings;
        debug!(port, ?stale_after, "fallback updated");
        Ok(())
    }

    /// Returns the fallback settings last written.
    pub fn fallback(&self) -> FallbackConfig {
        *self.fallback.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A handle that writes the controller's heartbeat through a map
    /// descriptor of its own, so that it never waits for the holder of the
    /// [`Dataplane`] (a large rule set takes seconds to publish).
    pub fn heartbeat(&self) -> Result<Heartbeat, DataplaneError> {
        use aya::maps::IterableMap as _;
        let array: Array<&MapData, FallbackConfig> = self.map(MAP_FALLBACK)?;
        let id = array.map().info().map_err(|source| map_error(MAP_FALLBACK, "reading the id", source))?.id();
        let own = MapData::from_id(id).map_err(|source| map_error(MAP_FALLBACK, "opening", source))?;
        let map = Array::try_from(aya::maps::Map::Array(own))
            .map_err(|source| map_error(MAP_FALLBACK, "opening", source))?;
        Ok(Heartbeat { map, settings: self.fallback.clone() })
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

/// Creates the pin directory and its layout directory, mounting bpffs
/// first when needed, and returns the layout directory.
pub fn prepare_layout_dir(pin_dir: &Path) -> Result<PathBuf, DataplaneError> {
    mount_bpffs_if_missing(pin_dir);
    let dir = layout_dir(pin_dir);
    std::fs::create_dir_all(&dir).map_err(|source| DataplaneError::System {
        action: "creating the pin directory (is bpffs mounted on /sys/fs/bpf?)",
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Checks the maps pinned in `dir` by an earlier controller. `Ok(None)`:
/// nothing is pinned. `Ok(Some(buckets))`: every map is there, the
/// configuration carries this build's layout version and the rule maps
/// hold at least `wanted` buckets per set (they may hold more). `Err`: the
/// pins cannot be used, for the reason given.
fn adoptable_buckets(dir: &Path, wanted: u32) -> Result<Option<u32>, String> {
    let present: Vec<&str> = PINNED_MAPS.iter().copied().filter(|name| dir.join(name).exists()).collect();
    if present.is_empty() {
        return Ok(None);
    }
    if present.len() != PINNED_MAPS.len() {
        return Err(format!("only {} of {} maps are pinned", present.len(), PINNED_MAPS.len()));
    }
    let config = MapData::from_pin(dir.join(MAP_CONFIG)).map_err(|error| format!("opening CONFIG: {error}"))?;
    let config: Array<_, DataplaneConfig> =
        Array::try_from(aya::maps::Map::Array(config)).map_err(|error| format!("CONFIG has another layout: {error}"))?;
    let config = config.get(&0, 0).map_err(|error| format!("reading CONFIG: {error}"))?;
    if config.layout_version != LAYOUT_VERSION {
        return Err(format!("layout version {} instead of {LAYOUT_VERSION}", config.layout_version));
    }
    let rules = MapData::from_pin(dir.join(MAP_RULES)).map_err(|error| format!("opening RULES: {error}"))?;
    let entries = rules.info().map_err(|error| format!("reading RULES: {error}"))?.max_entries();
    let pinned = entries / 2;
    if pinned < wanted {
        return Err(format!("the rule maps hold {pinned} buckets per set but {wanted} are needed"));
    }
    Ok(Some(pinned))
}

/// Removes every object pinned under `pin_dir` by any map layout, which
/// detaches the programs the pinned links hold. Returns whether anything
/// was there.
pub fn remove_pins(pin_dir: &Path) -> bool {
    let mut found = false;
    let Ok(entries) = std::fs::read_dir(pin_dir) else { return false };
    for entry in entries.filter_map(Result::ok) {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        if let Ok(files) = std::fs::read_dir(&dir) {
            for file in files.filter_map(Result::ok) {
                found = true;
                let _ = std::fs::remove_file(file.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
    found
}

/// Removes the map pins in `dir`. A program still attached keeps its maps
/// alive until it is replaced.
fn unpin_maps(dir: &Path) {
    for name in PINNED_MAPS {
        let _ = std::fs::remove_file(dir.join(name));
    }
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

/// Writes the controller's heartbeat into the fallback settings (see
/// [`Dataplane::heartbeat`]).
pub struct Heartbeat {
    map: Array<MapData, FallbackConfig>,
    settings: std::sync::Arc<std::sync::Mutex<FallbackConfig>>,
}

impl Heartbeat {
    /// Tells the kernel that the controller is alive, which keeps the
    /// fallback off for its delay from now. Does nothing while the
    /// fallback is off.
    pub fn beat(&mut self) -> Result<(), DataplaneError> {
        let settings = self.settings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if settings.port == 0 {
            return Ok(());
        }
        write_heartbeat(&mut self.map, *settings)
    }
}

/// Writes `settings` with the current time as their heartbeat.
fn write_heartbeat<T: std::borrow::BorrowMut<MapData>>(
    map: &mut Array<T, FallbackConfig>,
    settings: FallbackConfig,
) -> Result<(), DataplaneError> {
    // `bpf_ktime_get_ns` reads CLOCK_MONOTONIC too.
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|time| time.tv_sec() as u64 * 1_000_000_000 + time.tv_nsec() as u64)
        .unwrap_or(0);
    let value = FallbackConfig { heartbeat_ns: now, ..settings };
    map.set(0, value, 0).map_err(|source| map_error(MAP_FALLBACK, "writing the heartbeat", source))
}
