//! Files that bring VMs in and out: `vm import` (libvirt XML, .vmx) defines a stopped VM with
//! its disks copied to qcow2 and its NIC on a berth network, `vm export` writes libvirt XML,
//! `image import --vm` stores a bootable disk. Every disk from outside is inspected by
//! `berth_vm::disk_source` before qemu-img reads it; nothing is recorded for a refused one.

use std::path::{Path, PathBuf};

use berth_model::api::{
    ImportedMachine, VmExportRequest, VmExportResponse, VmImportRequest, VmImportResponse, VmPackageFormat,
};
use berth_model::image::{DiskImage, ImageRecord};
use berth_model::instance::Requests;
use berth_model::instance::{
    new_instance_id, validate_name, ProcessSpec, VcpuCount, VmBoot, VmDetails, VmDisk, VmInterface, VmMemory,
};
use berth_model::log::LogOptions;
use berth_model::network::DEFAULT_NETWORK;
use berth_model::quantity::MilliCpus;
use berth_model::{Instance, InstanceKind, InstanceSpec, InstanceState, Limits};
use berth_vm::disk_source::{self, DiskFormat, DiskSource};
use berth_vm::import::{shown, ImportedInterface, ImportedVm};
use chrono::Utc;

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};
use crate::networks::AddressClaim;

/// Threads that digest an imported disk (beside qemu-img converting it).
const DIGEST_THREADS: usize = 2;

/// Runs blocking disk work (qemu-img, reading headers) off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, berth_vm::VmError> + Send + 'static,
    field: &'static str,
) -> EngineResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EngineError::internal(e.to_string()))?
        .map_err(|e| match e {
            // The file's fault: refused (hostile, unsupported) or unreadable as a disk.
            berth_vm::VmError::Import(_) | berth_vm::VmError::Disk(_) => EngineError::invalid(field, e.to_string()),
            // The host's: qemu-img missing, a directory that cannot be made, a full disk.
            berth_vm::VmError::Setup(_) | berth_vm::VmError::Qmp(_) => EngineError::internal(e.to_string()),
        })
}

/// Makes a VM's first interface the one it has on its berth network, with that address's MAC,
/// for an export: the interface record exists only when an import made one (a VM run or
/// created here gets virtio-net), and the address's MAC is the one the guest has seen.
fn carry_the_address_nic(instance: &Instance, vm: &mut VmDetails) {
    let Some(address) = instance.address.as_ref() else {
        return;
    };
    match vm.interfaces.first_mut() {
        Some(interface) => interface.mac = Some(address.mac.clone()),
        None => vm.interfaces.push(VmInterface {
            model: "virtio".into(),
            mac: Some(address.mac.clone()),
        }),
    }
}

/// The name an imported VM gets: the file's, with characters berth does not allow in names
/// replaced.
fn sanitized_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl Engine {
    /// Defines a stopped VM from a libvirt domain XML or a VMware .vmx, converting its disks
    /// to qcow2 in the instance's directory. As `virsh define` does, it does not ask whether
    /// this host could run it: `start` says what is short.
    pub async fn import_vm(&self, request: &VmImportRequest) -> EngineResult<VmImportResponse> {
        let path = PathBuf::from(&request.path);
        if !path.is_absolute() {
            return Err(EngineError::invalid(
                "path",
                "the file path must be absolute (the daemon resolves it)",
            ));
        }
        if !path.exists() {
            return Err(EngineError::no_such_path("path", &request.path));
        }
        // An OVA is unpacked into a directory of its own, removed once its disks are copied.
        let is_ova = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("ova"));
        let staging = is_ova.then(|| {
            self.config
                .state_dir
                .join("imports")
                .join(format!("ova-{:016x}", rand::random::<u64>()))
        });
        let result = self.import_machines(request, &path, staging.as_deref()).await;
        if let Some(staging) = &staging {
            let _ = std::fs::remove_dir_all(staging);
        }
        result
    }

    async fn import_machines(
        &self,
        request: &VmImportRequest,
        path: &Path,
        staging: Option<&Path>,
    ) -> EngineResult<VmImportResponse> {
        let allow_device = request.allow_device;
        let choice = berth_vm::ovf::OvfChoice {
            vm: request.vm.clone(),
            deployment: request.deployment.clone(),
        };
        let parse_path = path.to_path_buf();
        let staging_dir = staging.map(Path::to_path_buf);
        let machines = blocking(
            move || {
                let descriptor = match &staging_dir {
                    Some(staging) => {
                        std::fs::create_dir_all(staging)
                            .map_err(|e| berth_vm::VmError::Import(format!("creating {}: {e}", staging.display())))?;
                        berth_vm::ovf::unpack_ova(&parse_path, staging)?
                    }
                    None => parse_path.clone(),
                };
                let machines = berth_vm::import::read_machines(&descriptor, &choice)?;
                let dir = berth_vm::import::definition_dir(&descriptor)?;
                machines
                    .into_iter()
                    .map(|machine| {
                        let sources = berth_vm::import::inspect_disks(&machine, &dir, allow_device)?;
                        Ok((machine, sources))
                    })
                    .collect::<Result<Vec<_>, berth_vm::VmError>>()
            },
            "file",
        )
        .await?;
        if machines.len() > 1 && request.name.is_some() {
            return Err(EngineError::invalid(
                "name",
                format!(
                    "--name names one VM, and this package defines {}: choose one with --vm ({})",
                    machines.len(),
                    machines
                        .iter()
                        .map(|(m, _)| shown(&m.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        // Every name is checked before anything is made: a package imports whole or not at all.
        let mut names = Vec::new();
        for (machine, _) in &machines {
            let name = request.name.clone().unwrap_or_else(|| sanitized_name(&machine.name));
            validate_name(&name).map_err(|m| EngineError::invalid("name", m))?;
            if self.find(&name).await.is_ok() || names.contains(&name) {
                return Err(EngineError::conflict_in(
                    "name",
                    format!("an instance named {name} exists; import with --name (one VM) or rename it"),
                ));
            }
            names.push(name);
        }
        let mut done: Vec<VmImportResponse> = Vec::new();
        for ((machine, sources), name) in machines.into_iter().zip(names) {
            match self.import_machine(machine, sources, name, path).await {
                Ok(imported) => done.push(imported),
                Err(e) => {
                    // Whole or not at all: the machines made before go again (stopped, never run).
                    for made in &done {
                        let _ = self.store.delete_instance(&made.id).await;
                        let _ = std::fs::remove_dir_all(self.instance_dir(&made.id));
                    }
                    return Err(e);
                }
            }
        }
        let mut first = done.remove(0);
        first.others = done
            .into_iter()
            .map(|d| ImportedMachine {
                id: d.id,
                name: d.name,
                not_carried_over: d.not_carried_over,
                network: d.network,
            })
            .collect();
        Ok(first)
    }

    async fn import_machine(
        &self,
        imported: ImportedVm,
        sources: Vec<Option<DiskSource>>,
        name: String,
        path: &Path,
    ) -> EngineResult<VmImportResponse> {
        let id = loop {
            let id = new_instance_id();
            if !self.instance_dir(&id).exists() {
                break id;
            }
        };
        let dir = self.instance_dir(&id);
        let mut not_carried_over = imported.not_carried_over.clone();
        let attachment = self.attach_imported_nics(&imported, &id, &mut not_carried_over).await?;
        let network_notes = attachment.notes.clone();
        let instance = self.imported_instance(&imported, &id, &name, path, &attachment);
        self.store.insert_instance(&instance).await?;
        // The record holds the address now.
        drop(attachment);
        let converted = async {
            std::fs::create_dir_all(&dir)
                .map_err(|e| EngineError::internal(format!("creating {}: {e}", dir.display())))?;
            let mut disks = Vec::new();
            for (index, (disk, source)) in imported.disks.iter().zip(sources).enumerate() {
                let destination = dir.join(format!("disk{index}.qcow2"));
                let target = destination.clone();
                let empty_bytes = disk.empty_bytes;
                let size_bytes = blocking(
                    move || {
                        match (source, empty_bytes) {
                            (Some(source), _) => disk_source::convert_to_qcow2(&source, &target)?,
                            (None, size) => berth_vm::disk::create_blank(&target, size.unwrap_or(0))?,
                        }
                        Ok(berth_vm::disk::info(&target, "qcow2")?.virtual_size)
                    },
                    "file",
                )
                .await?;
                disks.push(VmDisk {
                    path: destination.display().to_string(),
                    format: "qcow2".into(),
                    size_bytes,
                    backing: None,
                    bus: disk.bus.clone(),
                    ephemeral: false,
                });
            }
            Ok::<_, EngineError>(disks)
        }
        .await;
        let mut instance = instance;
        match converted {
            Ok(disks) => {
                if let Some(vm) = instance.vm.as_mut() {
                    vm.disks = disks;
                }
                self.save(&instance).await?;
            }
            Err(e) => {
                let _ = self.store.delete_instance(&id).await;
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
        self.emit(&instance, "import", None);
        Ok(VmImportResponse {
            id,
            name,
            not_carried_over,
            network: network_notes,
            others: Vec::new(),
        })
    }

    /// Attaches an imported VM's first NIC to the berth network named as its source was (a
    /// libvirt network or bridge, a VMware port group), else to the default network, keeping
    /// its MAC. berth gives a VM one interface: further NICs are listed as not carried over.
    async fn attach_imported_nics(
        &self,
        imported: &ImportedVm,
        id: &str,
        not_carried_over: &mut Vec<String>,
    ) -> EngineResult<NicAttachment> {
        let Some((first, others)) = imported.interfaces.split_first() else {
            return Ok(NicAttachment {
                network: "none".into(),
                address: None,
                notes: Vec::new(),
            });
        };
        for other in others {
            not_carried_over.push(format!(
                "{}: berth gives a VM one network interface; not attached",
                other.label
            ));
        }
        let wanted = first.network.as_deref().filter(|n| !n.is_empty());
        let same_named = match wanted {
            Some(name) if !matches!(name, "none" | "host") => self.networks.get(name).await.ok(),
            _ => None,
        };
        let (network, why) = match (&same_named, wanted) {
            (Some(network), _) => (network.name.clone(), "the berth network of the same name".to_string()),
            (None, Some(wanted)) => (
                DEFAULT_NETWORK.to_string(),
                format!(
                    "the default network: there is no berth network named '{}'",
                    shown(wanted)
                ),
            ),
            (None, None) => (
                DEFAULT_NETWORK.to_string(),
                "the default network: the file names no network".to_string(),
            ),
        };
        let instances = self.local_instances().await?;
        let mut claim = self.networks.allocate(&network, id).await?;
        let address = &mut claim.address;
        let mut note = format!("{}: attached to berth network '{network}' ({why})", first.label);
        match &first.mac {
            Some(mac)
                if instances
                    .iter()
                    .filter_map(|i| i.address.as_ref())
                    .any(|a| a.network == network && &a.mac == mac) =>
            {
                note.push_str(&format!(
                    "; its MAC {mac} is taken on that network, so it gets {}",
                    address.mac
                ));
            }
            Some(mac) => address.mac = mac.clone(),
            None => {}
        }
        if berth_vm::qemu::nic_device(&first.model).is_none() {
            note.push_str(&format!(
                "; model '{}' has no QEMU device, attached as virtio",
                shown(&first.model)
            ));
        }
        Ok(NicAttachment {
            network,
            address: Some(claim),
            notes: vec![note],
        })
    }

    /// Writes a stopped VM out: an OVA, an OVF directory, a VMware .vmx directory, or its
    /// boot disk as raw bytes to a file or a physical disk (V2P).
    pub async fn export_vm_package(&self, key: &str, request: &VmExportRequest) -> EngineResult<VmExportResponse> {
        let instance = self.find(key).await?;
        // Not started while its disks are read.
        let _guard = self.lock(&instance.id).await;
        let instance = self.find(&instance.id).await?;
        let vm = instance.vm.clone().ok_or_else(|| {
            EngineError::conflict_in("instance", format!("{} is a container; only VMs export", instance.name))
        })?;
        if vm.boot != VmBoot::Firmware {
            return Err(EngineError::conflict_in(
                "instance",
                format!(
                    "{} boots berth's kernel and agent to run a container image, which no package carries; export VMs that boot their own disk (imported, or run from `image import --vm`)",
                    instance.name
                ),
            ));
        }
        if matches!(instance.state, InstanceState::Running | InstanceState::Paused) {
            return Err(EngineError::conflict_in(
                "instance",
                format!(
                    "{} is {}: its disks change while it runs; stop it first (berth stop {})",
                    instance.name, instance.state, instance.name
                ),
            ));
        }
        let to = PathBuf::from(&request.to);
        if !to.is_absolute() {
            return Err(EngineError::invalid(
                "to",
                "--to: give an absolute path (the daemon resolves it)",
            ));
        }
        let mut not_carried_over: Vec<String> = vm
            .disks
            .iter()
            .filter(|d| d.ephemeral)
            .map(|d| {
                format!(
                    "instance-store disk {} (its data ends with the instance, as on EC2)",
                    d.path
                )
            })
            .collect();
        let mut vm = vm;
        carry_the_address_nic(&instance, &mut vm);
        let network = instance.address.as_ref().map(|a| a.network.clone());
        let mac = vm.interfaces.first().and_then(|i| i.mac.clone());
        let name = instance.name.clone();
        let format = request.format;
        let force = request.force;
        let digest = match (format, request.manifest_digest) {
            (VmPackageFormat::Ova | VmPackageFormat::Ovf, digest) => digest.unwrap_or_default(),
            (_, None) => Default::default(),
            (_, Some(_)) => {
                return Err(EngineError::invalid(
                    "manifest_digest",
                    "--manifest-digest: only ova and ovf packages have a manifest; drop it for vmx and raw",
                ))
            }
        };
        let work = self
            .config
            .state_dir
            .join("exports")
            .join(format!("ova-{:016x}", rand::random::<u64>()));
        if format == VmPackageFormat::Raw {
            let persistent = vm.disks.iter().filter(|d| !d.ephemeral).count();
            if persistent > 1 {
                not_carried_over.push(format!(
                    "{} further disk(s): raw writes the boot disk only; export as ova, ovf or vmx for all",
                    persistent - 1
                ));
            }
        }
        let files = blocking(
            move || {
                let source = berth_vm::package::PackageSource {
                    name: &name,
                    vm: &vm,
                    network: network.as_deref(),
                    mac: mac.as_deref(),
                };
                match format {
                    VmPackageFormat::Ova => {
                        berth_vm::package::write_ova(&source, &to, &work, digest)?;
                        Ok(vec![to.clone()])
                    }
                    VmPackageFormat::Ovf => berth_vm::package::write_ovf(&source, &to, digest),
                    VmPackageFormat::Vmx => berth_vm::package::write_vmx(&source, &to, false),
                    VmPackageFormat::Raw => {
                        let disk = vm
                            .disks
                            .iter()
                            .find(|d| !d.ephemeral)
                            .ok_or_else(|| berth_vm::VmError::Disk(format!("{name} has no disk to write")))?;
                        let (path, format) = berth_vm::package::disk_content(disk);
                        let size = berth_vm::disk::info(&path, &format)?.virtual_size;
                        let target = berth_vm::physical::check_target(&to, size, force)?;
                        berth_vm::physical::write_raw(&path, &format, &to, &target)?;
                        Ok(vec![to.clone()])
                    }
                }
            },
            "to",
        )
        .await?;
        tracing::info!(instance = %instance.name, format = ?request.format, to = %request.to, "VM exported");
        Ok(VmExportResponse {
            files: files.iter().map(|f| f.display().to_string()).collect(),
            not_carried_over,
        })
    }

    /// A libvirt domain XML for a VM.
    pub async fn export_vm(&self, key: &str, format: &str) -> EngineResult<String> {
        if format != "libvirt" {
            return Err(EngineError::invalid(
                "format",
                format!("unknown export format '{format}'; use libvirt"),
            ));
        }
        let instance = self.find(key).await?;
        let mut vm = instance.vm.clone().ok_or_else(|| {
            EngineError::conflict_in("instance", format!("{} is a container; only VMs export", instance.name))
        })?;
        carry_the_address_nic(&instance, &mut vm);
        let emulator = "/usr/bin/qemu-system-x86_64";
        // libvirt's own NAT network is "default", as berth's is.
        let network = instance
            .address
            .as_ref()
            .map(|a| a.network.clone())
            .unwrap_or_else(|| DEFAULT_NETWORK.to_string());
        if vm.boot != VmBoot::Image {
            return berth_vm::export::libvirt_xml(&instance.name, &vm, None, emulator, &network)
                .map_err(|e| EngineError::invalid("instance", e.to_string()));
        }
        // A VM made from a container image boots berth's kernel, initramfs and config disk.
        let kernel = berth_vm::assets::find_guest_kernel(&self.config.guest_dir, self.config.guest_kernel)
            .map_err(|e| EngineError::internal(e.to_string()))?;
        let cache = self.config.state_dir.join("vm");
        let kernel_for_task = kernel.clone();
        let initramfs = tokio::task::spawn_blocking(move || berth_vm::assets::initramfs(&kernel_for_task, &cache))
            .await
            .map_err(|e| EngineError::internal(e.to_string()))?
            .map_err(|e| EngineError::internal(e.to_string()))?;
        let config_disk = self.instance_dir(&instance.id).join("config.raw");
        vm.disks.push(VmDisk {
            path: config_disk.display().to_string(),
            format: "raw".into(),
            size_bytes: 4096,
            backing: None,
            bus: "virtio".into(),
            ephemeral: false,
        });
        berth_vm::export::libvirt_xml(
            &instance.name,
            &vm,
            Some((
                &kernel.vmlinuz.display().to_string(),
                &initramfs.display().to_string(),
                "console=ttyS0 quiet loglevel=3 panic=-1 reboot=t rdinit=/init",
            )),
            emulator,
            &network,
        )
        .map_err(|e| EngineError::invalid("instance", e.to_string()))
    }

    /// `berth image import --vm DISK`, first step: checks the disk (format, backing files,
    /// data files, extents, file type) before anything copies it, so a refusal is a plain
    /// error and leaves nothing in the image store.
    pub async fn inspect_disk_image(
        &self,
        path: &Path,
        format: Option<&str>,
        allow_device: bool,
    ) -> EngineResult<DiskSource> {
        let declared = format
            .map(|f| {
                f.parse::<DiskFormat>()
                    .map_err(|m| EngineError::invalid("format", format!("--format: {m}")))
            })
            .transpose()?;
        let source_path = path.to_path_buf();
        blocking(
            move || disk_source::inspect(&source_path, declared, allow_device),
            "path",
        )
        .await
    }

    /// `berth image import --vm DISK`, second step: the inspected disk as a read-only qcow2
    /// base in the image store.
    pub async fn store_disk_image(
        &self,
        source: DiskSource,
        tag: Option<&str>,
        compress: bool,
        firmware: Option<&str>,
        progress: Box<dyn FnMut(u64) + Send>,
    ) -> EngineResult<ImageRecord> {
        let firmware = match firmware {
            None => None,
            Some(f @ ("uefi" | "bios")) => Some(f.to_string()),
            Some(other) => {
                return Err(EngineError::invalid(
                    "firmware",
                    format!("--firmware {}: use uefi or bios", shown(other)),
                ))
            }
        };
        let path = source.path.clone();
        let disks = self.images.root().join("disks");
        std::fs::create_dir_all(&disks)
            .map_err(|e| EngineError::internal(format!("creating {}: {e}", disks.display())))?;
        let temp = disks.join(format!("import-{:016x}.qcow2", rand::random::<u64>()));
        let temp_for_task = temp.clone();
        let source_format = source.format;
        let result = blocking(
            move || {
                let mut progress = progress;
                let started = std::time::Instant::now();
                // A raw source (a device, a whole-disk image) is digested while qemu-img
                // converts it: both read it once side by side through the page cache. Other
                // formats are digested as stored, after the conversion.
                let raw_source = source_format == DiskFormat::Raw;
                let timed = |started: std::time::Instant| started.elapsed().as_millis() as u64;
                let ((converted, convert_ms), source_digest) = std::thread::scope(|scope| {
                    let digest = raw_source.then(|| {
                        scope.spawn(|| {
                            let started = std::time::Instant::now();
                            let digest = berth_vm::disk_digest::chunked_sha256(&source.path, DIGEST_THREADS);
                            (digest, timed(started))
                        })
                    });
                    let converted =
                        disk_source::convert_with_progress(&source, &temp_for_task, compress, &mut *progress);
                    let convert_ms = timed(started);
                    let digest = digest.map(|worker| {
                        worker
                            .join()
                            .unwrap_or_else(|_| (Err(berth_vm::VmError::Disk("the digest thread panicked".into())), 0))
                    });
                    ((converted, convert_ms), digest)
                });
                converted?;
                let (digest, digest_ms) = match source_digest {
                    Some((digest, digest_ms)) => (digest?, digest_ms),
                    None => {
                        let after = std::time::Instant::now();
                        (
                            berth_vm::disk_digest::chunked_sha256(&temp_for_task, DIGEST_THREADS)?,
                            timed(after),
                        )
                    }
                };
                let converted = berth_vm::disk::info(&temp_for_task, "qcow2")?;
                // The firmware a physical machine would use for it, unless told.
                let firmware = match firmware {
                    Some(chosen) => chosen,
                    None if raw_source => {
                        berth_vm::firmware::detect(&berth_vm::firmware::read_head(&source.path, "raw", &temp_for_task)?)
                            .to_string()
                    }
                    None => {
                        let head = berth_vm::firmware::read_head(
                            &temp_for_task,
                            "qcow2",
                            &temp_for_task.with_extension("head"),
                        )?;
                        berth_vm::firmware::detect(&head).to_string()
                    }
                };
                tracing::debug!(
                    convert_ms,
                    digest_ms,
                    total_ms = timed(started),
                    "disk import phases (a raw source is digested while it converts)"
                );
                Ok((digest, converted.virtual_size, firmware))
            },
            "path",
        )
        .await;
        let (digest, virtual_size, firmware) = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        let stored = disks.join(format!("{digest}.qcow2"));
        if stored.exists() {
            // The same content is stored already (its digest names it): keep that file. A
            // rename over it would also make ext4 write the new copy out first (its
            // replace-via-rename safeguard), 0.4 s for 600 MB here.
            let _ = std::fs::remove_file(&temp);
        } else {
            std::fs::rename(&temp, &stored).map_err(|e| EngineError::internal(format!("storing the disk: {e}")))?;
        }
        let size = std::fs::metadata(&stored).map(|m| m.len()).unwrap_or(0);
        let record = ImageRecord {
            id: format!("sha256:{digest}"),
            manifest_digest: format!("sha256:{digest}"),
            tags: Vec::new(),
            layers: Vec::new(),
            config: Default::default(),
            architecture: "amd64".into(),
            os: "linux".into(),
            size_bytes: size,
            created_at: Utc::now(),
            source: format!("import:{}", path.display()),
            disk: Some(DiskImage {
                path: stored.display().to_string(),
                source_format: source_format.to_string(),
                virtual_size_bytes: virtual_size,
                firmware: Some(firmware),
            }),
        };
        Ok(self.images.add_record(record, tag).await?)
    }
}

/// Where an imported VM's network interface goes.
struct NicAttachment {
    /// A berth network, or "none" for a VM without NICs.
    network: String,
    /// Claimed until the instance is recorded.
    address: Option<AddressClaim>,
    /// What the user is told (which network, and why that one).
    notes: Vec<String>,
}

impl Engine {
    /// The stopped instance an import defines; its disks are filled in once copied.
    fn imported_instance(
        &self,
        imported: &ImportedVm,
        id: &str,
        name: &str,
        path: &Path,
        attachment: &NicAttachment,
    ) -> Instance {
        let network = attachment.network.clone();
        let address = attachment.address.as_ref().map(|claim| claim.address.clone());
        let dir = self.instance_dir(id);
        let interfaces = imported
            .interfaces
            .iter()
            .take(1)
            .map(|nic: &ImportedInterface| VmInterface {
                model: nic.model.clone(),
                mac: address.as_ref().map(|a| a.mac.clone()).or(nic.mac.clone()),
            })
            .collect();
        Instance {
            id: id.to_string(),
            name: name.to_string(),
            kind: InstanceKind::Vm,
            image: format!("import:{}", path.display()),
            state: InstanceState::Created,
            exit_code: None,
            oom_killed: false,
            pid: None,
            supervisor_pid: None,
            limits: Limits {
                cpus: Some(MilliCpus::from_cpus(imported.vcpus as u64)),
                memory_bytes: Some(imported.memory_bytes),
                pids: None,
                network_bits_per_second: None,
            },
            // A definition reserves its full size, as an instance type does.
            requests: Requests {
                cpus: Some(MilliCpus::from_cpus(imported.vcpus as u64)),
                memory_bytes: Some(imported.memory_bytes),
            },
            instance_type: None,
            default_limits: Vec::new(),
            spec: InstanceSpec {
                placement: None,
                kind: InstanceKind::Vm,
                image: format!("import:{}", path.display()),
                image_id: String::new(),
                process: ProcessSpec {
                    open_stdin: true,
                    ..Default::default()
                },
                hostname: name.to_string(),
                auto_remove: false,
                labels: Default::default(),
                instance_storage_bytes: Vec::new(),
                disk_bytes: None,
                volumes: Vec::new(),
                mounts: Vec::new(),
                network,
                ports: Vec::new(),
                seccomp_unconfined: false,
                log: LogOptions {
                    max_size_bytes: Some(self.config.log_defaults.max_size_bytes),
                    max_files: Some(self.config.log_defaults.max_files),
                },
                restart: Default::default(),
                constraints: Vec::new(),
                spread_by: None,
                healthcheck: None,
            },
            node: self.node.clone(),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            restart_count: 0,
            error: None,
            vm: Some(VmDetails {
                boot: VmBoot::Firmware,
                accel: self.host.accelerator.choice().to_string(),
                machine: imported.machine.clone(),
                minimal_chipset: false,
                qboot: false,
                agent_acknowledges_sessions: false,
                vcpus: VcpuCount {
                    current: imported.vcpus,
                    max: imported.max_vcpus,
                },
                cores_per_socket: imported.cores_per_socket,
                memory: VmMemory {
                    current_bytes: imported.memory_bytes,
                    max_bytes: imported.max_memory_bytes,
                },
                disks: Vec::new(),
                qmp_socket: dir.join("qmp.sock").display().to_string(),
                interfaces,
                imported_from: Some(path.display().to_string()),
                uuid: imported.uuid.clone(),
                snapshots: Vec::new(),
                cloud_init: None,
                firmware: None,
            }),
            address,
            rescheduled: None,
            health: None,
        }
    }
}
