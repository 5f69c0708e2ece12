//! Limits through the kernel's cgroups, v1 (legacy or hybrid) and v2 alike. The host's
//! layout is detected once; `libcgroups` (youki) hides the per-version controllers behind
//! one manager, and this module maps berth's `Limits` onto it.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_model::api::InstanceStats;
use berth_model::driver::DriverError;
use berth_model::Limits;
use libcgroups::common::{
    create_cgroup_manager, get_cgroup_setup, AnyCgroupManager, CgroupConfig, CgroupManager, CgroupSetup, ControllerOpt,
    FreezerState,
};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

/// How `Cgroups::limit_resources` writes a limit that is not set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteUnset {
    /// As "no limit" (an update lifting a limit).
    AsNoLimit,
    /// Not at all (a new cgroup has no limits).
    Skip,
}

/// CFS period; quota is `cpus * period`. The kernel's default for a new cgroup, so a new
/// container's spec leaves it out (see `resources_at_creation`).
const CPU_PERIOD_US: u64 = 100_000;
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1 { hybrid: bool },
    V2,
}

/// The host's cgroup layout, decided at start-up.
#[derive(Debug, Clone)]
pub struct Cgroups {
    pub version: CgroupVersion,
    /// Parent of every instance's cgroup, relative to each hierarchy's root.
    parent: String,
    /// The parent's directory in each hierarchy `stats` reads (keyed by controller; "" on
    /// v2), opened on first use: a stats read opens `ID/FILE` beneath it instead of walking
    /// the whole path down from `/sys/fs/cgroup` through kernfs, which was most of the time
    /// `stats` of 200 instances took (six such walks an instance).
    parent_dirs: Arc<Mutex<HashMap<&'static str, Arc<OwnedFd>>>>,
}

/// Reads a small cgroup file whole: open, one read, close. kernfs fills a read's buffer with
/// as many of the file's lines as fit, so a short read is the end (no `fstat` for a size
/// hint, no second read to meet the end, as `read_to_string` makes).
fn read_kernfs_file(file: &mut fs::File) -> std::io::Result<String> {
    let mut text = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read(&mut chunk)?;
        text.extend_from_slice(&chunk[..n]);
        if n < chunk.len() {
            return String::from_utf8(text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        }
    }
}

fn cgroup_error(context: impl Into<String>, err: impl std::fmt::Display) -> DriverError {
    DriverError::Other(format!("{}: {err}", context.into()))
}

/// Turns on the kernel's `favordynmods` on the cgroup2 mount (Linux 6.0 on), unless on.
///
/// Why: moving a process into a cgroup takes the kernel's global threadgroup lock for
/// writing, which by default waits for an RCU grace period — 5 to 16 ms measured here on
/// every `cgroup.procs` write that is not right after another, the largest single cost of a
/// container start. With the option the lock's readers (fork, exit) take a slightly slower
/// path and writers no longer wait; the kernel documents it for hosts that move tasks between
/// cgroups often, which is what a container host does. The lock is global, so the option on
/// any cgroup2 mount (on a hybrid host, the otherwise unused one) serves the v1 hierarchies
/// too. Off with `cgroup_favor_dynmods = false` in the daemon's config file.
pub fn favor_dynamic_modifications() {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER_OPTIONS
    let Some((mount_point, mount_options, super_options)) = mounts.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut fields = after.split(' ');
        (fields.next()? == "cgroup2").then_some(())?;
        let _source = fields.next()?;
        let super_options = fields.next()?.to_string();
        let mut before = before.split(' ').skip(4);
        let mount_point = before.next()?.to_string();
        let mount_options = before.next()?.to_string();
        Some((mount_point, mount_options, super_options))
    }) else {
        return;
    };
    let options: Vec<&str> = super_options
        .split(',')
        .filter(|option| !matches!(*option, "rw" | "ro" | ""))
        .collect();
    if options.contains(&"favordynmods") {
        return;
    }
    let mut wanted = options;
    wanted.push("favordynmods");
    let data = wanted.join(",");
    // A remount sets the mount's own flags too: keep the ones it has.
    use nix::mount::MsFlags;
    let mut flags = MsFlags::MS_REMOUNT;
    for option in mount_options.split(',') {
        flags |= match option {
            "ro" => MsFlags::MS_RDONLY,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            _ => MsFlags::empty(),
        };
    }
    match nix::mount::mount(
        None::<&str>,
        mount_point.as_str(),
        Some("cgroup2"),
        flags,
        Some(data.as_str()),
    ) {
        Ok(()) => {
            tracing::info!(mount = %mount_point, "cgroup2 remounted with favordynmods: cgroup moves no longer wait for RCU")
        }
        // Kernels before 6.0, or a mount this daemon may not change (a container's).
        Err(e) => tracing::debug!(mount = %mount_point, error = %e, "favordynmods not turned on"),
    }
}

impl Cgroups {
    pub fn detect(parent: &str) -> Result<Self, DriverError> {
        let version = match get_cgroup_setup().map_err(|e| cgroup_error("detecting the cgroup layout", e))? {
            CgroupSetup::Legacy => CgroupVersion::V1 { hybrid: false },
            CgroupSetup::Hybrid => CgroupVersion::V1 { hybrid: true },
            CgroupSetup::Unified => CgroupVersion::V2,
        };
        Ok(Cgroups {
            version,
            parent: parent.trim_matches('/').to_string(),
            parent_dirs: Arc::default(),
        })
    }

    /// On cgroup v1, gives the parent's cpuset hierarchy CPUs and memory nodes (its
    /// parent's) and `cgroup.clone_children`, so each instance's cpuset cgroup starts with
    /// them. Why: a v1 cpuset cgroup with no CPUs cannot take a process, and libcgroups
    /// otherwise writes them into every new one, which the kernel checks against every
    /// sibling (0.6 ms a start with 1,000 running, growing with the count). Best effort: a
    /// failure leaves libcgroups to do it as before.
    pub fn prepare_cpuset_parent(&self) {
        if self.version == CgroupVersion::V2 || self.parent.is_empty() {
            return;
        }
        let Ok(root) = libcgroups::v1::util::get_subsystem_mount_point(&libcgroups::v1::ControllerType::CpuSet) else {
            return;
        };
        let mut current = root;
        let prepared = self.parent.split('/').try_for_each(|component| -> std::io::Result<()> {
            let above = current.clone();
            current.push(component);
            match fs::create_dir(&current) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if fs::read_to_string(current.join(file))?.trim().is_empty() {
                    fs::write(current.join(file), fs::read_to_string(above.join(file))?.trim())?;
                }
            }
            Ok(())
        });
        let prepared = prepared.and_then(|()| fs::write(current.join("cgroup.clone_children"), "1"));
        if let Err(e) = prepared {
            tracing::debug!(cgroup = %current.display(), error = %e, "cpuset parent not prepared; libcgroups fills each cgroup");
        }
    }

    /// The parent of every instance's cgroup, relative to each hierarchy's root.
    pub fn parent(&self) -> &str {
        &self.parent
    }

    pub fn describe(&self) -> String {
        match self.version {
            CgroupVersion::V1 { hybrid: false } => "v1".into(),
            CgroupVersion::V1 { hybrid: true } => "v1 (hybrid)".into(),
            CgroupVersion::V2 => "v2".into(),
        }
    }

    /// The cgroup of an instance, as the OCI spec's `cgroupsPath` names it.
    pub fn path_for(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/{}/{}", self.parent, name))
    }

    fn manager(&self, name: &str) -> Result<AnyCgroupManager, DriverError> {
        create_cgroup_manager(CgroupConfig {
            cgroup_path: self.path_for(name),
            systemd_cgroup: false,
            container_name: name.to_string(),
        })
        .map_err(|e| cgroup_error("opening the cgroup", e))
    }

    /// Resources for live updates. `None` limits are written as "no limit" so that an
    /// update can lift a limit.
    pub fn resources(&self, limits: &Limits) -> Result<LinuxResources, DriverError> {
        self.limit_resources(limits, WriteUnset::AsNoLimit)
    }

    /// Resources for the OCI spec of a new container: only the limits that are set. A new
    /// cgroup starts without limits, and writing "no limit" to it is not free: each CPU
    /// bandwidth write (`cfs_period_us`, `cfs_quota_us`) makes the kernel walk every CPU
    /// cgroup on the host (`tg_set_cfs_bandwidth`), 0.45 ms with 1,000 containers running;
    /// so a CPU limit is written as its quota alone, over the period a new cgroup has.
    pub fn resources_at_creation(&self, limits: &Limits) -> Result<LinuxResources, DriverError> {
        self.limit_resources(limits, WriteUnset::Skip)
    }

    fn limit_resources(&self, limits: &Limits, unset: WriteUnset) -> Result<LinuxResources, DriverError> {
        let write_unset = unset == WriteUnset::AsNoLimit;
        let mut resources = LinuxResourcesBuilder::default();
        if limits.cpus.is_some() || write_unset {
            let quota: i64 = limits
                .cpus
                .map(|cpus| (cpus.0 * CPU_PERIOD_US / 1000) as i64)
                .unwrap_or(-1);
            let mut cpu = LinuxCpuBuilder::default().quota(quota);
            if write_unset {
                cpu = cpu.period(CPU_PERIOD_US);
            }
            let cpu = cpu.build().map_err(|e| cgroup_error("cpu limit", e))?;
            resources = resources.cpu(cpu);
        }
        if limits.memory_bytes.is_some() || write_unset {
            let memory = LinuxMemoryBuilder::default()
                .limit(limits.memory_bytes.map(|b| b as i64).unwrap_or(-1))
                .build()
                .map_err(|e| cgroup_error("memory limit", e))?;
            resources = resources.memory(memory);
        }
        if limits.pids.is_some() || write_unset {
            let pids = LinuxPidsBuilder::default()
                .limit(limits.pids.map(|p| p as i64).unwrap_or(-1))
                .build()
                .map_err(|e| cgroup_error("pids limit", e))?;
            resources = resources.pids(pids);
        }
        // The same allow-list on both versions: the devices controller's files on v1, an
        // eBPF device program attached to the cgroup on v2 (libcgroups' `cgroupsv2_devices`).
        resources
            .devices(default_device_rules()?)
            .build()
            .map_err(|e| cgroup_error("resources", e))
    }

    pub fn apply_limits(&self, name: &str, limits: &Limits) -> Result<(), DriverError> {
        if self.version == CgroupVersion::V2 {
            return self.apply_limits_v2(name, limits);
        }
        let resources = self.resources(limits)?;
        let manager = self.manager(name)?;
        manager
            .apply(&ControllerOpt {
                resources: &resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| cgroup_error("applying limits", e))
    }

    /// A live update on v2 writes the three limit files itself: libcgroups' v2 manager would
    /// also load a fresh eBPF device program on every apply, leaking the daemon's program
    /// descriptors and the old programs (the device list never changes after start).
    fn apply_limits_v2(&self, name: &str, limits: &Limits) -> Result<(), DriverError> {
        let dir = Path::new(CGROUP_ROOT).join(&self.parent).join(name);
        let cpu = match limits.cpus {
            Some(cpus) => format!("{} {CPU_PERIOD_US}", cpus.0 * CPU_PERIOD_US / 1000),
            None => format!("max {CPU_PERIOD_US}"),
        };
        let memory = limits.memory_bytes.map_or("max".to_string(), |b| b.to_string());
        let pids = limits.pids.map_or("max".to_string(), |p| p.to_string());
        for (file, value) in [("cpu.max", cpu), ("memory.max", memory), ("pids.max", pids)] {
            let path = dir.join(file);
            fs::write(&path, &value).map_err(|e| cgroup_error(format!("writing {value} to {}", path.display()), e))?;
        }
        Ok(())
    }

    pub fn set_frozen(&self, name: &str, frozen: bool) -> Result<(), DriverError> {
        let state = if frozen {
            FreezerState::Frozen
        } else {
            FreezerState::Thawed
        };
        self.manager(name)?
            .freeze(state)
            .map_err(|e| cgroup_error(if frozen { "freezing" } else { "thawing" }, e))
    }

    /// The parent's directory in `controller`'s hierarchy ("" on v2), opened once. Shared,
    /// so that a reader keeps it open even if it is dropped from the map meanwhile.
    fn parent_dir(&self, controller: &'static str) -> Option<Arc<OwnedFd>> {
        let mut dirs = self.parent_dirs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(dir) = dirs.get(controller) {
            return Some(dir.clone());
        }
        let path = Path::new(CGROUP_ROOT).join(controller).join(&self.parent);
        let dir = Arc::new(OwnedFd::from(fs::File::open(&path).ok()?));
        dirs.insert(controller, dir.clone());
        Some(dir)
    }

    /// One of an instance's cgroup files (`ID/FILE` under the parent in `controller`'s
    /// hierarchy), read through the parent's open directory; by its whole path if that
    /// directory cannot be opened.
    fn read_stats_file(&self, controller: &'static str, name: &str, leaf: &str) -> Result<String, DriverError> {
        let relative = format!("{name}/{leaf}");
        let opened = self.parent_dir(controller).and_then(|dir| {
            nix::fcntl::openat(
                Some(dir.as_raw_fd()),
                relative.as_str(),
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()
        });
        let path = || {
            Path::new(CGROUP_ROOT)
                .join(controller)
                .join(&self.parent)
                .join(&relative)
        };
        let mut file = match opened {
            // SAFETY: `openat` just returned this descriptor and nothing else owns it.
            Some(fd) => fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }),
            None => {
                let path = path();
                let file = fs::File::open(&path).map_err(|e| cgroup_error(format!("reading {}", path.display()), e))?;
                // Found by its path but not beneath the open directory: the parent cgroup
                // was made again since (the old directory is gone); open it again next time.
                self.parent_dirs
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(controller);
                file
            }
        };
        read_kernfs_file(&mut file).map_err(|e| cgroup_error(format!("reading {}", path().display()), e))
    }

    /// What `stats` shows, read straight from a handful of the cgroup's files: libcgroups'
    /// `stats()` reads every file of every controller (hugetlb and cpuset included), which
    /// made `berth stats` over 200 instances take seconds.
    pub fn stats(&self, name: &str) -> Result<InstanceStats, DriverError> {
        // "max" (no limit) and anything unparsable read as none.
        let number = |text: &str| text.trim().parse::<u64>().ok();
        let mut stats = InstanceStats {
            sampled_at_ms: chrono::Utc::now().timestamp_millis(),
            ..Default::default()
        };
        match self.version {
            CgroupVersion::V1 { .. } => {
                let read = |controller: &'static str, leaf: &str| self.read_stats_file(controller, name, leaf);
                stats.cpu_usage_ns = number(&read("cpuacct", "cpuacct.usage")?).unwrap_or(0);
                stats.memory_usage_bytes = number(&read("memory", "memory.usage_in_bytes")?).unwrap_or(0);
                // The kernel reports "no limit" as a huge number.
                stats.memory_limit_bytes = number(&read("memory", "memory.limit_in_bytes")?)
                    .filter(|limit| *limit > 0 && *limit < i64::MAX as u64 / 2);
                stats.pids_current = read("pids", "pids.current").ok().and_then(|t| number(&t)).unwrap_or(0);
                stats.pids_limit = read("pids", "pids.max").ok().and_then(|t| number(&t));
                // "MAJ:MIN Read N" per device, and a "Total" row left out.
                let io = read("blkio", "blkio.throttle.io_service_bytes").unwrap_or_default();
                let bytes = |op: &str| -> u64 {
                    io.lines()
                        .filter_map(|line| {
                            let mut fields = line.split_whitespace();
                            let (_, kind, value) = (fields.next()?, fields.next()?, fields.next()?);
                            kind.eq_ignore_ascii_case(op)
                                .then(|| value.parse::<u64>().ok())
                                .flatten()
                        })
                        .sum()
                };
                stats.io_read_bytes = bytes("read");
                stats.io_write_bytes = bytes("write");
            }
            CgroupVersion::V2 => {
                let read = |leaf: &str| self.read_stats_file("", name, leaf);
                let keyed = |text: &str, key: &str| -> Option<u64> {
                    text.lines().find_map(|line| {
                        let (k, v) = line.split_once(' ')?;
                        (k == key).then(|| v.trim().parse().ok()).flatten()
                    })
                };
                // usage_usec: microseconds.
                stats.cpu_usage_ns = keyed(&read("cpu.stat")?, "usage_usec")
                    .unwrap_or(0)
                    .saturating_mul(1000);
                stats.memory_usage_bytes = number(&read("memory.current")?).unwrap_or(0);
                stats.memory_limit_bytes = number(&read("memory.max")?).filter(|limit| *limit > 0);
                stats.pids_current = read("pids.current").ok().and_then(|t| number(&t)).unwrap_or(0);
                stats.pids_limit = read("pids.max").ok().and_then(|t| number(&t));
                // "MAJ:MIN rbytes=N wbytes=N rios=N ..." per device.
                let io = read("io.stat").unwrap_or_default();
                let bytes = |key: &str| -> u64 {
                    io.split_whitespace()
                        .filter_map(|field| field.strip_prefix(key)?.parse::<u64>().ok())
                        .sum()
                };
                stats.io_read_bytes = bytes("rbytes=");
                stats.io_write_bytes = bytes("wbytes=");
            }
        }
        Ok(stats)
    }

    /// Processes in the instance's cgroup (all of its processes, however they were forked).
    pub fn pids(&self, name: &str) -> Vec<u32> {
        self.manager(name)
            .and_then(|m| m.get_all_pids().map_err(|e| cgroup_error("listing pids", e)))
            .map(|pids| pids.into_iter().map(|p| p.as_raw() as u32).collect())
            .unwrap_or_default()
    }

    /// How many times the kernel's OOM killer struck in the instance's cgroup.
    pub fn oom_kills(&self, name: &str) -> u64 {
        let relative = format!("{}/{}", self.parent, name);
        let (file, key) = match self.version {
            CgroupVersion::V1 { .. } => (
                Path::new(CGROUP_ROOT)
                    .join("memory")
                    .join(&relative)
                    .join("memory.oom_control"),
                "oom_kill",
            ),
            CgroupVersion::V2 => (Path::new(CGROUP_ROOT).join(&relative).join("memory.events"), "oom_kill"),
        };
        fs::read_to_string(file)
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    let (k, v) = line.split_once(' ')?;
                    (k == key).then(|| v.trim().parse().ok()).flatten()
                })
            })
            .unwrap_or(0)
    }

    /// Whether the instance's cgroup exists (probed in one hierarchy; cheap).
    pub fn exists(&self, name: &str) -> bool {
        let relative = format!("{}/{}", self.parent, name);
        match self.version {
            CgroupVersion::V1 { .. } => {
                Path::new(CGROUP_ROOT).join("pids").join(&relative).exists()
                    || Path::new(CGROUP_ROOT).join("memory").join(&relative).exists()
            }
            CgroupVersion::V2 => Path::new(CGROUP_ROOT).join(&relative).exists(),
        }
    }

    /// Removes an instance's cgroup if it is left over (the runtime normally does this).
    pub fn remove(&self, name: &str) {
        if !self.exists(name) {
            return;
        }
        if let Ok(manager) = self.manager(name) {
            let _ = manager.remove();
        }
    }
}

/// Docker's default device access: nothing, then the standard character devices.
fn default_device_rules() -> Result<Vec<LinuxDeviceCgroup>, DriverError> {
    let rule = |allow: bool, typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut builder = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access(access);
        if let Some(major) = major {
            builder = builder.major(major);
        }
        if let Some(minor) = minor {
            builder = builder.minor(minor);
        }
        builder.build().map_err(|e| cgroup_error("device rule", e))
    };
    use LinuxDeviceType::{A, B, C};
    Ok(vec![
        rule(false, A, None, None, "rwm")?,
        rule(true, C, None, None, "m")?,
        rule(true, B, None, None, "m")?,
        rule(true, C, Some(1), Some(3), "rwm")?,    // null
        rule(true, C, Some(1), Some(5), "rwm")?,    // zero
        rule(true, C, Some(1), Some(7), "rwm")?,    // full
        rule(true, C, Some(1), Some(8), "rwm")?,    // random
        rule(true, C, Some(1), Some(9), "rwm")?,    // urandom
        rule(true, C, Some(5), Some(0), "rwm")?,    // tty
        rule(true, C, Some(5), Some(1), "rwm")?,    // console
        rule(true, C, Some(5), Some(2), "rwm")?,    // ptmx
        rule(true, C, Some(136), None, "rwm")?,     // pts
        rule(true, C, Some(10), Some(200), "rwm")?, // tun
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cgroups(version: CgroupVersion) -> Cgroups {
        Cgroups {
            version,
            parent: "berth".into(),
            parent_dirs: Arc::default(),
        }
    }

    /// A file longer than one read (as a cgroup's `blkio` listing can be) is read whole;
    /// the short read at its end ends it.
    #[test]
    fn a_file_longer_than_one_read_is_read_whole() {
        let path = std::env::temp_dir().join(format!("berth-kernfs-read-{}", std::process::id()));
        let text: String = (0..1000).map(|i| format!("8:{i} Read {}\n", i * 4096)).collect();
        fs::write(&path, &text).expect("written");
        let read = read_kernfs_file(&mut fs::File::open(&path).expect("opened"));
        let _ = fs::remove_file(&path);
        assert_eq!(read.expect("read"), text);
    }

    /// A new container's spec carries only the limits that are set (its cgroup starts
    /// without any); an update writes every limit, unset ones as "no limit".
    #[test]
    fn creation_writes_only_set_limits_and_updates_write_all() {
        let cgroups = cgroups(CgroupVersion::V1 { hybrid: true });
        let none = cgroups.resources_at_creation(&Limits::default()).expect("resources");
        assert!(none.cpu().is_none() && none.memory().is_none() && none.pids().is_none());
        assert!(none.devices().is_some(), "the device allow-list is always there");
        let memory_only = Limits {
            memory_bytes: Some(64 << 20),
            ..Limits::default()
        };
        let some = cgroups.resources_at_creation(&memory_only).expect("resources");
        assert_eq!(some.memory().as_ref().and_then(|m| m.limit()), Some(64 << 20));
        assert!(some.cpu().is_none() && some.pids().is_none());
        // A CPU limit at creation is its quota alone: the period is the new cgroup's default,
        // and each bandwidth write walks every CPU cgroup on the host.
        let one_cpu = Limits {
            cpus: Some(berth_model::MilliCpus::from_cpus(1)),
            ..Limits::default()
        };
        let cpu = cgroups.resources_at_creation(&one_cpu).expect("resources");
        let cpu = cpu.cpu().as_ref().expect("a CPU limit");
        assert_eq!((cpu.quota(), cpu.period()), (Some(CPU_PERIOD_US as i64), None));
        let update = cgroups.resources(&memory_only).expect("resources");
        assert_eq!(
            update.cpu().as_ref().and_then(|c| c.quota()),
            Some(-1),
            "lifts a CPU limit"
        );
        assert_eq!(
            update.pids().as_ref().map(|p| p.limit()),
            Some(-1),
            "lifts a pids limit"
        );
    }

    /// Both versions get the allow-list: on v2 libcgroups turns it into the eBPF device
    /// program, so leaving it out there would leave a container without a device filter.
    #[test]
    fn every_cgroup_version_gets_the_device_allow_list() {
        for version in [CgroupVersion::V1 { hybrid: true }, CgroupVersion::V2] {
            let resources = cgroups(version).resources(&Limits::default()).expect("resources");
            let devices = resources.devices().as_ref().expect("device rules");
            let first = &devices[0];
            assert!(
                !first.allow() && first.typ() == Some(LinuxDeviceType::A),
                "{version:?}: deny all first"
            );
            let allows = |major: i64, minor: i64| {
                devices.iter().any(|rule| {
                    rule.allow()
                        && rule.typ() == Some(LinuxDeviceType::C)
                        && rule.major() == Some(major)
                        && rule.minor() == Some(minor)
                        && rule.access().as_deref() == Some("rwm")
                })
            };
            assert!(allows(1, 3) && allows(1, 9), "{version:?}: null and urandom allowed");
            let block_access = devices
                .iter()
                .filter(|rule| rule.allow() && rule.typ() == Some(LinuxDeviceType::B))
                .filter_map(|rule| rule.access().clone())
                .collect::<Vec<_>>();
            assert_eq!(
                block_access,
                vec!["m".to_string()],
                "{version:?}: block devices: mknod only"
            );
        }
    }
}
