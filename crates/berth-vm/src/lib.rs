//! berth's VM driver: one qemu-system-x86_64 per VM under a berth supervisor (so logs,
//! attach, exit status and restart recovery are those of containers), KVM where usable and
//! TCG otherwise, qcow2 copy-on-write disks over shared read-only bases, QMP for pause,
//! power-down and CPU/memory hotplug, and a guest agent that runs a container image's
//! command in the VM. Also: importing libvirt domain XML and VMware .vmx, exporting XML.

pub mod accel;
/// The guest agent and its contract with the host, in a crate of its own (its binary is what
/// the initramfs carries).
pub use berth_guest as agent;
pub mod assets;
pub mod cloud_init;
pub mod cpio;
pub mod disk;
pub mod disk_digest;
pub mod disk_source;
pub mod exec_client;
pub mod export;
pub mod firmware;
pub mod guest_module;
pub mod import;
pub mod kernel_image;
mod le_bytes;
pub mod migrate;
pub mod ovf;
pub mod package;
pub mod physical;
pub mod qemu;
pub mod qmp;
pub mod shared_disk;
pub mod snapshot;
pub mod virtiofs;
pub mod workload;

use std::fs;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_image::ImageStore;
use berth_model::api::{ExecRequest, InstanceStats, VmRequest};
use berth_model::driver::{DriverError, DriverFingerprint, InstanceDriver, SupervisorConfig, VirtiofsShare, Workload};
use berth_model::image::ImageRecord;
use berth_model::instance::{VcpuCount, VmBoot, VmDetails, VmDisk, VmMemory};
use berth_model::mount::MountKind;
use berth_model::{ByteSize, Instance, InstanceKind, Limits};
use serde_json::json;
use thiserror::Error;

use crate::accel::Accelerator;
use crate::agent::{GuestExec, GuestSpec};
use crate::qemu::{DirectBoot, VmPaths};

#[derive(Debug, Error)]
pub enum VmError {
    #[error("{0}")]
    Setup(String),
    #[error("disk: {0}")]
    Disk(String),
    #[error("QMP: {0}")]
    Qmp(String),
    #[error("{0}")]
    Import(String),
}

impl From<VmError> for DriverError {
    fn from(err: VmError) -> Self {
        match err {
            VmError::Import(message) => DriverError::invalid("file", message),
            other => DriverError::Other(other.to_string()),
        }
    }
}

/// The most vCPUs a berth VM has (QEMU's `pc` machine's limit; q35 on QEMU 7.2 allows 288).
pub const MAX_VCPUS: u32 = 255;
/// Root disk of a VM made from a container image when `--disk` is not given.
pub const DEFAULT_DISK_BYTES: u64 = 4 << 30;
/// How long a guest may take to start its command (TCG boots in a few seconds).
pub const BOOT_TIMEOUT_SECS: u64 = 120;
/// Hot-added memory comes in DIMMs of a multiple of this.
const DIMM_ALIGN: u64 = 128 << 20;
/// How long asking the guest agent to signal its command may take before giving up.
const STOP_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct VmDriver {
    images: ImageStore,
    cache_dir: PathBuf,
    guest_dir: PathBuf,
    guest_kernel: assets::KernelChoice,
    accel: Accelerator,
    base_lock: tokio::sync::Mutex<()>,
}

fn host_error(context: &str) -> impl Fn(std::io::Error) -> DriverError + '_ {
    move |e| DriverError::host(context.to_string(), e)
}

/// The size of the guest agent's binary, which the initramfs carries.
fn agent_bytes() -> u64 {
    std::fs::metadata(assets::guest_agent())
        .map(|m| m.len())
        .unwrap_or(48 << 20)
}

/// The least memory an image-booted guest comes up in: the initramfs and its unpacked copy
/// (about the agent twice) and 64 MiB for the kernel, rounded up to 16 MiB. PVH loads the
/// kernel at 16-62 MiB and QEMU puts the initramfs at the top of RAM: with the 1.2 MB
/// berth-guest that is 80 MiB, where the guest reaches its agent with 30 MiB free; at 64 MiB it
/// runs out (measured under TCG). Below the floor the guest kernel panics before the agent runs.
fn agent_memory_floor() -> u64 {
    (2 * agent_bytes() + (64 << 20)).div_ceil(16 << 20) * (16 << 20)
}

impl VmDriver {
    pub fn new(
        images: ImageStore,
        cache_dir: PathBuf,
        guest_dir: PathBuf,
        guest_kernel: assets::KernelChoice,
    ) -> VmDriver {
        let accel = accel::detect_accelerator();
        if accel.choice() != "kvm" {
            // Measured once (20 ms) off the path of the first VM's start.
            std::thread::spawn(accel::host_tsc_khz);
        }
        VmDriver {
            images,
            cache_dir,
            guest_dir,
            guest_kernel,
            accel,
            base_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn accelerator(&self) -> &Accelerator {
        &self.accel
    }

    /// The VM details of a new instance: current and maximum vCPUs and memory (checked),
    /// machine type, and its disks.
    pub fn plan(
        &self,
        limits: &Limits,
        request: &VmRequest,
        disk_bytes: Option<u64>,
        instance_storage: &[u64],
        image: &ImageRecord,
        dir: &Path,
    ) -> Result<VmDetails, DriverError> {
        let vcpus = limits.cpus.map(|c| c.ceil_cpus() as u32).unwrap_or(1).max(1);
        let max_cpus = request.max_cpus.unwrap_or(vcpus);
        if max_cpus < vcpus {
            return Err(DriverError::invalid(
                "max_cpus",
                format!("--max-cpus {max_cpus} is below --cpus {vcpus}; raise --max-cpus"),
            ));
        }
        if max_cpus > MAX_VCPUS {
            return Err(DriverError::invalid(
                "max_cpus",
                format!("--max-cpus: a VM has at most {MAX_VCPUS} vCPUs"),
            ));
        }
        let memory = limits.memory_bytes.ok_or_else(|| {
            DriverError::invalid("memory", "a VM needs a memory size; give --memory (for example 512m)")
        })?;
        let memory = memory.div_ceil(1 << 20) << 20;
        let max_memory = request
            .max_memory_bytes
            .map(|m| m.div_ceil(1 << 20) << 20)
            .unwrap_or(memory);
        if max_memory < memory {
            return Err(DriverError::invalid(
                "max_memory",
                format!(
                    "--max-memory {} is below --memory {}; raise --max-memory",
                    ByteSize(max_memory),
                    ByteSize(memory)
                ),
            ));
        }
        // microvm boots fastest but has no hotplug, and without KVM's clock its kernel may
        // fail to calibrate the TSC against the PIT on a busy host and hang; q35 has HPET
        // and the ACPI PM timer to calibrate against.
        let hotplug = max_cpus > vcpus || max_memory > memory;
        let (boot, machine) = match &image.disk {
            Some(_) => (VmBoot::Firmware, "q35"),
            None if hotplug || self.accel.choice() != "kvm" => (VmBoot::Image, "q35"),
            None => (VmBoot::Image, "microvm"),
        };
        if boot == VmBoot::Image {
            let floor = agent_memory_floor();
            if memory < floor {
                return Err(DriverError::invalid(
                    "memory",
                    format!(
                        "a VM booted from a container image needs at least {} (its kernel unpacks berth's agent, {}, into memory); give --memory {}m or more",
                        ByteSize(floor),
                        ByteSize(agent_bytes()),
                        floor >> 20
                    ),
                ));
            }
        }
        let mut disk = match &image.disk {
            Some(disk_image) => VmDisk {
                path: dir.join("disk0.qcow2").display().to_string(),
                format: "qcow2".into(),
                size_bytes: disk_bytes.unwrap_or(0).max(disk_image.virtual_size_bytes),
                backing: Some(disk_image.path.clone()),
                bus: "virtio".into(),
                ephemeral: false,
            },
            None => VmDisk {
                path: dir.join("root.qcow2").display().to_string(),
                format: "qcow2".into(),
                size_bytes: disk_bytes.unwrap_or(DEFAULT_DISK_BYTES).max(DEFAULT_DISK_BYTES),
                backing: Some(self.base_path(image).display().to_string()),
                bus: "virtio".into(),
                ephemeral: false,
            },
        };
        if let Some(share) = request.disk_on.as_deref() {
            // The instance's directory is named by its id.
            let id = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            disk.path = shared_disk::root_disk_url(share, id).map_err(|e| DriverError::invalid("disk_on", e))?;
        }
        if let Some(cloud_init) = &request.cloud_init {
            if boot != VmBoot::Firmware {
                return Err(DriverError::invalid(
                    "cloud_init",
                    "--cloud-init and --ssh-key are for VMs that boot their own disk (a distribution cloud image, `image import --vm`); berth configures VMs made from container images itself",
                ));
            }
            cloud_init::validate(cloud_init).map_err(|(field, message)| DriverError::invalid(field, message))?;
        }
        Ok(VmDetails {
            boot,
            accel: self.accel.choice().to_string(),
            machine: machine.into(),
            minimal_chipset: boot == VmBoot::Image && machine == "q35",
            qboot: boot == VmBoot::Image && machine == "q35" && std::path::Path::new(qemu::QBOOT_ROM).is_file(),
            // The agent berth boots these with (firmware-booted VMs have none).
            agent_acknowledges_sessions: boot == VmBoot::Image,
            vcpus: VcpuCount {
                current: vcpus,
                max: max_cpus,
            },
            cores_per_socket: None,
            memory: VmMemory {
                current_bytes: memory,
                max_bytes: max_memory,
            },
            // Instance storage: blank thin disks on NVMe, wiped when the VM stops.
            disks: std::iter::once(disk)
                .chain(instance_storage.iter().enumerate().map(|(index, size)| VmDisk {
                    path: dir.join(format!("instance-store{index}.qcow2")).display().to_string(),
                    format: "qcow2".into(),
                    size_bytes: *size,
                    backing: None,
                    bus: if machine == "microvm" {
                        "virtio".into()
                    } else {
                        "nvme".into()
                    },
                    ephemeral: true,
                }))
                .collect(),
            qmp_socket: VmPaths::new(dir).qmp.display().to_string(),
            interfaces: Vec::new(),
            imported_from: None,
            uuid: None,
            snapshots: Vec::new(),
            cloud_init: request.cloud_init.clone(),
            firmware: image
                .disk
                .as_ref()
                .and_then(|d| d.firmware.clone())
                .filter(|f| f == "uefi"),
        })
    }

    fn base_path(&self, image: &ImageRecord) -> PathBuf {
        let hex = image.id.trim_start_matches("sha256:");
        self.cache_dir
            .join("bases")
            .join(format!("{}.qcow2", &hex[..hex.len().min(32)]))
    }

    /// The image's root filesystem as a read-only qcow2 base, built on first use.
    async fn ensure_base(&self, image: &ImageRecord) -> Result<PathBuf, DriverError> {
        let path = self.base_path(image);
        let _guard = self.base_lock.lock().await;
        if path.exists() {
            return Ok(path);
        }
        fs::create_dir_all(self.cache_dir.join("bases")).map_err(host_error("creating the VM base cache"))?;
        let lower = self
            .images
            .lower_dirs(image)
            .map_err(|e| DriverError::Other(e.to_string()))?;
        let temp = path.with_extension("building");
        let work = self.cache_dir.join(format!("work-{}", std::process::id()));
        let (lower_for_task, temp_for_task) = (lower.clone(), temp.clone());
        tokio::task::spawn_blocking(move || {
            disk::build_base_from_layers(&lower_for_task, &temp_for_task, DEFAULT_DISK_BYTES, &work)
        })
        .await
        .map_err(|e| DriverError::Other(e.to_string()))??;
        fs::rename(&temp, &path).map_err(host_error("storing the VM base disk"))?;
        Ok(path)
    }

    /// The image's user (`--user` or its config), resolved in its layers' /etc/passwd.
    async fn resolve_user(
        &self,
        image: &ImageRecord,
        user: &str,
    ) -> Result<berth_image::user::ResolvedUser, DriverError> {
        let layers = self
            .images
            .lower_dirs(image)
            .map_err(|e| DriverError::Other(e.to_string()))?;
        // The top layer that has the file; not followed if it is a link (that resolves inside
        // the layer when it is read).
        let root = layers
            .iter()
            .find(|l| fs::symlink_metadata(l.join("etc/passwd")).is_ok())
            .cloned()
            .unwrap_or_else(|| layers.first().cloned().unwrap_or_default());
        berth_image::user::resolve_user(&root, user)
            .await
            .map_err(|m| DriverError::invalid("user", m))
    }

    /// A VM's QMP socket, checked to be running.
    fn qmp_socket(instance: &Instance) -> Result<PathBuf, DriverError> {
        instance
            .vm
            .as_ref()
            .map(|vm| PathBuf::from(&vm.qmp_socket))
            .ok_or_else(|| DriverError::Other(format!("{} has no VM details", instance.name)))
    }

    async fn hotplug_cpus(&self, socket: &Path, vm: &VmDetails, target: u32) -> Result<(), DriverError> {
        if target > vm.vcpus.max {
            return Err(DriverError::invalid(
                "cpus",
                format!(
                    "cpus: {target} vCPUs exceed the maximum of {} set at creation; recreate with --max-cpus",
                    vm.vcpus.max
                ),
            ));
        }
        let slots = qmp::execute(socket, "query-hotpluggable-cpus", serde_json::Value::Null).await?;
        let slots = slots.as_array().cloned().unwrap_or_default();
        let present = slots.iter().filter(|s| s.get("qom-path").is_some()).count() as u32;
        if target > present {
            let mut free: Vec<&serde_json::Value> = slots.iter().filter(|s| s.get("qom-path").is_none()).collect();
            free.sort_by_key(|s| {
                s["props"]["socket-id"].as_u64().unwrap_or(0) * 1000 + s["props"]["core-id"].as_u64().unwrap_or(0)
            });
            for slot in free.into_iter().take((target - present) as usize) {
                let mut arguments = slot["props"].clone();
                let socket_id = arguments["socket-id"].as_u64().unwrap_or(0);
                let core_id = arguments["core-id"].as_u64().unwrap_or(0);
                arguments["driver"] = slot["type"].clone();
                arguments["id"] = json!(format!("cpu-s{socket_id}-c{core_id}"));
                qmp::execute(socket, "device_add", arguments).await?;
            }
        } else if target < present {
            // Only CPUs added by hotplug can go; they carry the ids given above.
            let mut removable: Vec<String> = slots
                .iter()
                .filter_map(|s| s.get("qom-path").and_then(|p| p.as_str()))
                .filter_map(|p| {
                    p.rsplit('/')
                        .next()
                        .filter(|id| id.starts_with("cpu-s"))
                        .map(str::to_string)
                })
                .collect();
            removable.sort();
            let needed = (present - target) as usize;
            if removable.len() < needed {
                return Err(DriverError::invalid(
                    "cpus",
                    format!(
                        "cpus: only hot-added vCPUs can be removed; the VM started with {}",
                        vm.vcpus.current
                    ),
                ));
            }
            for id in removable.into_iter().rev().take(needed) {
                qmp::execute(socket, "device_del", json!({ "id": id })).await?;
            }
        }
        Ok(())
    }

    /// Adds a DIMM of memory; on the shared memfd backend when `shared` (virtiofs needs to
    /// reach all of the guest's memory, hot-added memory too).
    async fn hotplug_memory(
        &self,
        socket: &Path,
        vm: &VmDetails,
        target: u64,
        current: u64,
        shared: bool,
    ) -> Result<(), DriverError> {
        if target > vm.memory.max_bytes {
            return Err(DriverError::invalid(
                "memory",
                format!(
                    "memory: {} exceeds the maximum of {} set at creation; recreate with --max-memory",
                    ByteSize(target),
                    ByteSize(vm.memory.max_bytes)
                ),
            ));
        }
        if target < current {
            return Err(DriverError::invalid(
                "memory",
                format!(
                    "memory: a running VM's memory can only grow (it has {})",
                    ByteSize(current)
                ),
            ));
        }
        let add = (target - current).div_ceil(DIMM_ALIGN) * DIMM_ALIGN;
        if add == 0 {
            return Ok(());
        }
        let id = format!("mem{}", current >> 20);
        let backend = if shared {
            json!({ "qom-type": "memory-backend-memfd", "id": id, "size": add, "share": true })
        } else {
            json!({ "qom-type": "memory-backend-ram", "id": id, "size": add })
        };
        qmp::execute(socket, "object-add", backend).await?;
        qmp::execute(
            socket,
            "device_add",
            json!({ "driver": "pc-dimm", "id": format!("dimm-{id}"), "memdev": id }),
        )
        .await?;
        Ok(())
    }
}

/// The host directories of a VM (its bind mounts), each served by a virtiofsd whose socket
/// and log are in the instance directory `dir`.
fn shares(instance: &Instance, dir: &Path) -> Vec<VirtiofsShare> {
    instance
        .spec
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Bind)
        .enumerate()
        .map(|(index, mount)| VirtiofsShare {
            source: PathBuf::from(&mount.source),
            socket: dir.join(format!("virtiofs{index}.sock")),
            log: dir.join(format!("virtiofs{index}.log")),
            read_only: mount.read_only,
        })
        .collect()
}

/// What the guest agent mounts besides volumes: the shares (by tag, in the order of
/// `shares`) and tmpfs.
fn guest_filesystems(instance: &Instance) -> Vec<agent::GuestFilesystem> {
    let mut share_index = 0;
    instance
        .spec
        .mounts
        .iter()
        .map(|mount| {
            let source = match mount.kind {
                MountKind::Bind => {
                    share_index += 1;
                    agent::GuestSource::Virtiofs {
                        tag: virtiofs::tag(share_index - 1),
                    }
                }
                MountKind::Tmpfs => agent::GuestSource::Tmpfs {
                    options: mount.tmpfs_mount_options(),
                },
            };
            agent::GuestFilesystem {
                source,
                path: mount.target.clone(),
                read_only: mount.read_only,
            }
        })
        .collect()
}

fn write_config_disk(path: &Path, spec: &GuestSpec) -> Result<(), DriverError> {
    let mut data = serde_json::to_vec(spec).map_err(|e| DriverError::Other(e.to_string()))?;
    if data.len() > 512 * 2048 - 1 {
        return Err(DriverError::invalid(
            "command",
            "the command and environment are too large for a VM (1 MiB)",
        ));
    }
    data.resize(data.len().div_ceil(4096).max(1) * 4096, 0);
    fs::write(path, data).map_err(host_error("writing the VM config disk"))
}

#[async_trait]
impl InstanceDriver for VmDriver {
    fn kind(&self) -> InstanceKind {
        InstanceKind::Vm
    }

    fn fingerprint(&self) -> DriverFingerprint {
        let kernel = assets::find_guest_kernel(&self.guest_dir, self.guest_kernel);
        DriverFingerprint {
            kind: Some(InstanceKind::Vm),
            available: kernel.is_ok(),
            details: vec![
                ("accel".into(), self.accel.note.clone()),
                (
                    "guest kernel".into(),
                    kernel.map(|k| k.version).unwrap_or_else(|e| e.to_string()),
                ),
            ],
        }
    }

    async fn prepare_start(
        &self,
        instance: &Instance,
        image: Option<&ImageRecord>,
        dir: &Path,
    ) -> Result<SupervisorConfig, DriverError> {
        let mut details = instance
            .vm
            .clone()
            .ok_or_else(|| DriverError::Other(format!("{} has no VM details", instance.name)))?;
        details.accel = self.accel.choice().to_string();
        let paths = VmPaths::new(dir);
        for stale in [&paths.qmp, &paths.exec] {
            let _ = fs::remove_file(stale);
        }
        let _ = fs::write(&paths.console, b"");
        if details.firmware.as_deref() == Some("uefi") {
            firmware::ensure_vars(dir).map_err(|e| DriverError::Other(e.to_string()))?;
        }
        // cloud-init's seed, made from the record at each start (the address may have changed).
        if let (Some(cloud_init), VmBoot::Firmware) = (&details.cloud_init, details.boot) {
            cloud_init::write_seed(
                &paths.cidata,
                cloud_init,
                &instance.id,
                &instance.spec.hostname,
                instance.address.as_ref(),
            )
            .map_err(|e| DriverError::Other(e.to_string()))?;
        }
        // Disks: copy-on-write overlays, created on first start and kept across restarts.
        for disk in &details.disks {
            if shared_disk::on_share(&disk.path).is_some() {
                if !shared_disk::exists(&disk.path).await? {
                    let image = image.ok_or_else(|| DriverError::Other("the VM's image is gone".into()))?;
                    let base = match (&disk.backing, details.boot) {
                        (Some(backing), VmBoot::Firmware) => PathBuf::from(backing),
                        _ => self.ensure_base(image).await?,
                    };
                    shared_disk::create_root(&disk.path, &image.id, &base, disk.size_bytes).await?;
                }
                continue;
            }
            let path = Path::new(&disk.path);
            if path.exists() {
                continue;
            }
            match (&disk.backing, details.boot) {
                (Some(_), VmBoot::Image) => {
                    let image = image.ok_or_else(|| DriverError::Other("the VM's image is gone".into()))?;
                    let base = self.ensure_base(image).await?;
                    disk::create_overlay(&base, path, Some(disk.size_bytes))?;
                }
                (Some(backing), VmBoot::Firmware) => {
                    disk::create_overlay(Path::new(backing), path, Some(disk.size_bytes))?
                }
                (None, _) => disk::create_blank(path, disk.size_bytes)?,
            }
        }
        let direct = if details.boot == VmBoot::Image {
            let image = image.ok_or_else(|| DriverError::Other("the VM's image is gone".into()))?;
            let process = &instance.spec.process;
            let user = self.resolve_user(image, &process.user).await?;
            let mut env = process.env.clone();
            if !env.iter().any(|e| e.starts_with("PATH=")) {
                env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
            }
            if !env.iter().any(|e| e.starts_with("HOME=")) {
                env.push(format!("HOME={}", user.home));
            }
            write_config_disk(
                &paths.config_disk,
                &GuestSpec {
                    args: process.args.clone(),
                    env,
                    working_dir: process.working_dir.clone(),
                    uid: user.uid,
                    gid: user.gid,
                    hostname: instance.spec.hostname.clone(),
                    resize_root: details.disks.first().is_some_and(|d| d.size_bytes > DEFAULT_DISK_BYTES),
                    mounts: instance
                        .spec
                        .volumes
                        .iter()
                        .enumerate()
                        .map(|(index, volume)| agent::GuestMount {
                            serial: format!("vol{index}"),
                            path: volume.path.clone(),
                            read_only: volume.read_only,
                        })
                        .collect(),
                    filesystems: guest_filesystems(instance),
                    discard_root: instance.spec.auto_remove,
                    network: instance.address.as_ref().and_then(|a| {
                        let gateway = a.gateway.parse().ok()?;
                        Some(agent::GuestNetwork {
                            address: a.address.parse().ok()?,
                            prefix: a.prefix,
                            gateway,
                            nameserver: gateway,
                        })
                    }),
                },
            )?;
            let kernel = assets::find_guest_kernel(&self.guest_dir, self.guest_kernel)?;
            let cache = self.cache_dir.clone();
            let boot = tokio::task::spawn_blocking(move || {
                let initramfs = assets::initramfs(&kernel, &cache)?;
                let kernel = kernel_image::pvh_kernel(&kernel, &cache).unwrap_or(kernel.vmlinuz);
                Ok::<_, VmError>(DirectBoot { kernel, initramfs })
            })
            .await
            .map_err(|e| DriverError::Other(e.to_string()))??;
            Some(boot)
        } else {
            None
        };
        let shares = shares(instance, dir);
        let mut args = qemu::command_line(&instance.name, &details, &paths, direct.as_ref(), !shares.is_empty());
        // Its network: the tap the daemon put on the network's bridge.
        if let Some(address) = &instance.address {
            let tap = format!("bt{}", berth_model::instance::short_id(&instance.id));
            args.push("-netdev".into());
            args.push(format!("tap,id=net0,ifname={tap},script=no,downscript=no"));
            // An imported machine keeps its NIC model: its OS has the driver for it.
            let device = match (details.machine.as_str(), details.boot) {
                ("microvm", _) => "virtio-net-device",
                (_, VmBoot::Firmware) => details
                    .interfaces
                    .first()
                    .and_then(|nic| qemu::nic_device(&nic.model))
                    .unwrap_or("virtio-net-pci"),
                _ => "virtio-net-pci",
            };
            args.push("-device".into());
            args.push(format!("{device},netdev=net0,mac={}", address.mac));
        }
        // Volumes: their images as disks (raw files, or qcow2 on an NFS share opened by QEMU's
        // own NFS client), found in the guest by serial.
        let pci = details.machine != "microvm";
        for (index, volume) in instance.spec.volumes.iter().enumerate() {
            let readonly = if volume.read_only { ",readonly=on" } else { "" };
            args.push("-drive".into());
            args.push(format!(
                "id=vol{index},file={},format={},if=none{readonly}",
                volume.source,
                if volume.format.is_empty() {
                    "raw"
                } else {
                    &volume.format
                }
            ));
            args.push("-device".into());
            args.push(format!(
                "{},drive=vol{index},serial=vol{index}",
                if pci { "virtio-blk-pci" } else { "virtio-blk-device" }
            ));
        }
        // Host directories: a vhost-user-fs device per share, its virtiofsd started by the
        // supervisor; the guest agent mounts it by tag.
        for (index, share) in shares.iter().enumerate() {
            args.push("-chardev".into());
            args.push(format!("socket,id=fs{index},path={}", share.socket.display()));
            args.push("-device".into());
            args.push(format!(
                "{},chardev=fs{index},tag={},queue-size=1024",
                if pci {
                    "vhost-user-fs-pci"
                } else {
                    "vhost-user-fs-device"
                },
                virtiofs::tag(index)
            ));
        }
        Ok(SupervisorConfig {
            workload: Workload::Vm {
                args,
                status_path: direct.as_ref().map(|_| paths.status.clone()),
                // qemu writes the console to the supervisor only when the agent boots (firmware
                // boots have it on stdio, in the instance's log).
                console_path: direct.as_ref().map(|_| paths.console.clone()),
                boot_timeout_secs: BOOT_TIMEOUT_SECS,
                virtiofs: shares,
                incoming: false,
            },
            tty: false,
            open_stdin: true,
            log_path: Some(dir.join("container.log")),
            log_limits: Default::default(),
            exit_path: dir.join("exit.json"),
            socket_path: dir.join("supervisor.sock"),
            fence: None,
        })
    }

    async fn release(&self, instance: &Instance, dir: &Path, keep_instance_storage: bool) -> Result<(), DriverError> {
        let paths = VmPaths::new(dir);
        for socket in [&paths.qmp, &paths.exec] {
            let _ = fs::remove_file(socket);
        }
        if !keep_instance_storage {
            for disk in instance
                .vm
                .iter()
                .flat_map(|vm| vm.disks.iter())
                .filter(|d| d.ephemeral)
            {
                let _ = fs::remove_file(&disk.path);
            }
        }
        Ok(())
    }

    async fn reclaim(&self, instance: &Instance) -> Result<(), DriverError> {
        // A qemu whose supervisor died would run on unsupervised: end it.
        if let Ok(socket) = Self::qmp_socket(instance) {
            let _ = qmp::execute(&socket, "quit", serde_json::Value::Null).await;
        }
        Ok(())
    }

    async fn remove(&self, instance: &Instance, dir: &Path) -> Result<(), DriverError> {
        self.release(instance, dir, false).await?;
        for disk in instance.vm.iter().flat_map(|vm| vm.disks.iter()) {
            // A share that cannot be reached keeps the file; the VM goes all the same.
            if let Err(e) = shared_disk::remove(&disk.path).await {
                tracing::warn!(vm = %instance.name, disk = %disk.path, error = %e, "the disk stays on its share");
            }
        }
        // Moved aside and deleted in the background: a disk the guest filled takes ext4 a
        // while to free, and `rm` (or `--rm`'s exit code) need not wait for it.
        berth_storage::discard::remove_dir_soon(dir).map_err(host_error("removing the VM's directory"))?;
        Ok(())
    }

    async fn update_limits(&self, instance: &Instance, limits: &Limits) -> Result<(), DriverError> {
        let vm = instance
            .vm
            .as_ref()
            .ok_or_else(|| DriverError::Other(format!("{} has no VM details", instance.name)))?;
        let socket = Self::qmp_socket(instance)?;
        let target_cpus = limits
            .cpus
            .map(|c| c.ceil_cpus() as u32)
            .unwrap_or(vm.vcpus.current)
            .max(1);
        let current_cpus = instance
            .limits
            .cpus
            .map(|c| c.ceil_cpus() as u32)
            .unwrap_or(vm.vcpus.current);
        if target_cpus != current_cpus {
            self.hotplug_cpus(&socket, vm, target_cpus).await?;
        }
        let target_memory = limits
            .memory_bytes
            .ok_or_else(|| DriverError::invalid("memory", "a VM needs a memory size; give --memory"))?;
        let current_memory = instance.limits.memory_bytes.unwrap_or(vm.memory.current_bytes);
        if target_memory != current_memory {
            let shared = instance.spec.mounts.iter().any(|m| m.kind == MountKind::Bind);
            self.hotplug_memory(&socket, vm, target_memory, current_memory, shared)
                .await?;
        }
        Ok(())
    }

    async fn request_stop(&self, instance: &Instance) -> Result<bool, DriverError> {
        let vm = instance
            .vm
            .as_ref()
            .ok_or_else(|| DriverError::Other(format!("{} has no VM details", instance.name)))?;
        match vm.boot {
            VmBoot::Firmware => {
                qmp::execute(
                    &Self::qmp_socket(instance)?,
                    "system_powerdown",
                    serde_json::Value::Null,
                )
                .await?;
            }
            VmBoot::Image => {
                // The agent passes SIGTERM to the command; the VM powers off when it ends.
                let exec_socket = Path::new(&vm.qmp_socket).with_file_name("exec.sock");
                let request = GuestExec {
                    signal: Some(libc::SIGTERM),
                    session: session_token(vm),
                    ..Default::default()
                };
                // The engine bounds the stop by its grace period; this bound makes sure the
                // thread ends too when the port is busy with an exec session.
                tokio::task::spawn_blocking(move || {
                    exec_client::request_within(&exec_socket, &request, STOP_REQUEST_TIMEOUT)
                })
                .await
                .map_err(|e| DriverError::Other(e.to_string()))?
                .map_err(|e| DriverError::Other(format!("asking the guest to stop: {e}")))?;
            }
        }
        Ok(true)
    }

    async fn pause(&self, instance: &Instance) -> Result<(), DriverError> {
        qmp::execute(&Self::qmp_socket(instance)?, "stop", serde_json::Value::Null).await?;
        Ok(())
    }

    async fn resume(&self, instance: &Instance) -> Result<(), DriverError> {
        qmp::execute(&Self::qmp_socket(instance)?, "cont", serde_json::Value::Null).await?;
        Ok(())
    }

    async fn stats(&self, instance: &Instance) -> Result<InstanceStats, DriverError> {
        let pid = instance
            .pid
            .ok_or_else(|| DriverError::Other(format!("{} is not running", instance.name)))?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(host_error("reading qemu's usage"))?;
        // Fields after the command name (which may contain spaces) start at state.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let ticks_per_second = 100u64;
        let page = 4096u64;
        let threads = ticks(17);
        let vm = instance.vm.as_ref();
        // qemu's own block I/O (its disks are files it reads and writes).
        let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        let io_field = |name: &str| -> u64 {
            io.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
                .unwrap_or(0)
        };
        Ok(InstanceStats {
            id: instance.id.clone(),
            name: instance.name.clone(),
            cpu_usage_ns: (ticks(11) + ticks(12)) * (1_000_000_000 / ticks_per_second),
            memory_usage_bytes: ticks(21) * page,
            memory_limit_bytes: instance.limits.memory_bytes.or(vm.map(|v| v.memory.current_bytes)),
            pids_current: threads,
            pids_limit: None,
            sampled_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            io_read_bytes: io_field("read_bytes"),
            io_write_bytes: io_field("write_bytes"),
            ..Default::default()
        })
    }

    async fn prepare_exec(
        &self,
        instance: &Instance,
        request: &ExecRequest,
        dir: &Path,
    ) -> Result<SupervisorConfig, DriverError> {
        let vm = instance
            .vm
            .as_ref()
            .ok_or_else(|| DriverError::Other(format!("{} has no VM details", instance.name)))?;
        if vm.boot != VmBoot::Image {
            return Err(DriverError::invalid(
                "command",
                "exec needs berth's guest agent, which runs only in VMs made from container images; use `berth console`",
            ));
        }
        if request.tty {
            return Err(DriverError::invalid(
                "tty",
                "exec into a VM takes no terminal (-t); drop -t",
            ));
        }
        fs::create_dir_all(dir).map_err(host_error("creating the exec directory"))?;
        let image = self
            .images
            .resolve(&instance.spec.image_id)
            .await
            .map_err(|e| DriverError::Other(e.to_string()))?;
        let user = self
            .resolve_user(&image, request.user.as_deref().unwrap_or(&instance.spec.process.user))
            .await?;
        let mut env = instance.spec.process.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        env.extend(request.env.iter().cloned());
        let guest_request = GuestExec {
            signal: None,
            args: request.command.clone(),
            env,
            working_dir: request.working_dir.clone(),
            uid: user.uid,
            gid: user.gid,
            session: session_token(vm),
        };
        let exe = assets::running_binary().map_err(host_error("locating berth"))?;
        let exec_socket = Path::new(&vm.qmp_socket).with_file_name("exec.sock");
        Ok(SupervisorConfig {
            workload: Workload::Process {
                args: vec![
                    exe.display().to_string(),
                    "vm-exec".into(),
                    exec_socket.display().to_string(),
                    serde_json::to_string(&guest_request).map_err(|e| DriverError::Other(e.to_string()))?,
                ],
                env: Vec::new(),
            },
            tty: false,
            open_stdin: request.open_stdin,
            log_path: None,
            log_limits: Default::default(),
            exit_path: dir.join("exit.json"),
            socket_path: dir.join("supervisor.sock"),
            fence: None,
        })
    }
}

/// A fresh token for one exec session, when the VM's agent acknowledges them.
fn session_token(vm: &VmDetails) -> Option<String> {
    vm.agent_acknowledges_sessions
        .then(|| hex::encode(rand::random::<[u8; 16]>()))
}

/// The supervisor-side workload for a VM `SupervisorConfig`.
pub fn workload_for(config: &SupervisorConfig) -> Option<Box<dyn berth_shim::Workload>> {
    match &config.workload {
        Workload::Vm {
            args,
            status_path,
            console_path,
            boot_timeout_secs,
            virtiofs,
            incoming,
        } => Some(Box::new(workload::VmWorkload::new(
            args.clone(),
            status_path.clone(),
            console_path.clone(),
            // The guest came up on the source node: nothing to wait for.
            if *incoming { 0 } else { *boot_timeout_secs },
            virtiofs.clone(),
            config.log_limits,
        ))),
        _ => None,
    }
}
