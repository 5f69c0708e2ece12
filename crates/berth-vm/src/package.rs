//! Writing a stopped VM out for other hypervisors: an OVF package (descriptor, manifest and
//! streamOptimized VMDKs, as VMware's ovftool writes them and VirtualBox reads them), the same
//! as one OVA file, or a VMware `.vmx` with a monolithic sparse VMDK. The descriptor is written
//! with quick-xml (every value escaped); the disks by `qemu-img convert`.

use std::io::Write;
use std::path::{Path, PathBuf};

use berth_model::api::ManifestDigest;
use berth_model::instance::{VmDetails, VmDisk};
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use crate::ovf::digest_of;
use crate::VmError;

const STREAM_OPTIMIZED: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

fn package_error(message: impl Into<String>) -> VmError {
    VmError::Disk(message.into())
}

/// What goes into a package: the machine and where its network interface was.
pub struct PackageSource<'a> {
    pub name: &'a str,
    pub vm: &'a VmDetails,
    /// The berth network its interface is on (the package's network name).
    pub network: Option<&'a str>,
    /// Its interface's MAC address (the berth address's; the interface record holds one only
    /// when an import set it).
    pub mac: Option<&'a str>,
}

/// The persistent disks a package carries (instance-store disks are not: as on EC2, their
/// data does not outlive the instance).
fn carried_disks(vm: &VmDetails) -> Vec<&VmDisk> {
    vm.disks.iter().filter(|d| !d.ephemeral).collect()
}

/// Where a disk's content is read from, and its format: a VM never started has no overlay
/// yet, and its content is the image's base.
pub fn disk_content(disk: &VmDisk) -> (PathBuf, String) {
    match &disk.backing {
        Some(base) if !Path::new(&disk.path).exists() => (PathBuf::from(base), "qcow2".to_string()),
        _ => (PathBuf::from(&disk.path), disk.format.clone()),
    }
}

fn convert_disk(disk: &VmDisk, destination: &Path, subformat: &str) -> Result<(), VmError> {
    let (path, format) = disk_content(disk);
    let output = berth_process::command("qemu-img")
        .args(["convert", "-f", &format, "-O", "vmdk", "-o"])
        .arg(format!("subformat={subformat}"))
        .arg(&path)
        .arg(destination)
        .output()
        .map_err(|e| package_error(format!("running qemu-img: {e}")))?;
    if !output.status.success() {
        return Err(package_error(format!(
            "converting {} to VMDK: {}",
            disk.path,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// CIM controller for a berth disk bus: (ResourceType, ResourceSubType).
fn controller_of(bus: &str) -> (u32, &'static str) {
    match bus {
        "ide" => (5, "PIIX4"),
        "scsi" => (6, "lsilogic"),
        "nvme" => (20, "vmware.nvme.controller"),
        // virtio has no OVF controller: SATA is what both VMware and VirtualBox boot from.
        _ => (20, "vmware.sata.ahci"),
    }
}

/// The OVF adapter type for a berth NIC model.
fn adapter_of(model: &str) -> &'static str {
    match model {
        "e1000" => "E1000",
        "e1000e" => "E1000e",
        "pcnet" => "PCNet32",
        // VMware's paravirtual NIC; VirtualBox maps it to its virtio or Intel adapter.
        _ => "VmxNet3",
    }
}

struct Xml {
    writer: Writer<Vec<u8>>,
}

impl Xml {
    fn new() -> Xml {
        Xml {
            writer: Writer::new_with_indent(Vec::new(), b' ', 2),
        }
    }

    fn open(&mut self, name: &str, attributes: &[(&str, &str)]) -> std::io::Result<()> {
        let mut start = BytesStart::new(name);
        for (key, value) in attributes {
            start.push_attribute((*key, *value));
        }
        self.writer.write_event(Event::Start(start))
    }

    fn close(&mut self, name: &str) -> std::io::Result<()> {
        self.writer.write_event(Event::End(BytesEnd::new(name)))
    }

    fn empty(&mut self, name: &str, attributes: &[(&str, &str)]) -> std::io::Result<()> {
        let mut start = BytesStart::new(name);
        for (key, value) in attributes {
            start.push_attribute((*key, *value));
        }
        self.writer.write_event(Event::Empty(start))
    }

    fn text(&mut self, name: &str, value: &str) -> std::io::Result<()> {
        self.open(name, &[])?;
        self.writer.write_event(Event::Text(BytesText::new(value)))?;
        self.close(name)
    }

    /// A hardware item; `fields` are rasd elements (written in the schema's alphabetical order).
    fn item(&mut self, fields: &[(&str, String)], extra: &[(&str, String)]) -> std::io::Result<()> {
        self.open("Item", &[])?;
        let mut sorted: Vec<&(&str, String)> = fields.iter().collect();
        sorted.sort_by_key(|(name, _)| *name);
        for (name, value) in sorted {
            self.text(&format!("rasd:{name}"), value)?;
        }
        for (name, value) in extra {
            self.open(name, &[("ovf:required", "false")])?;
            self.writer.write_event(Event::Text(BytesText::new(value)))?;
            self.close(name)?;
        }
        self.close("Item")
    }
}

/// The OVF 1.0 descriptor for `source` whose disks are the files `disk_files` (name, size).
pub fn ovf_descriptor(source: &PackageSource, disk_files: &[(String, u64)]) -> Result<String, VmError> {
    let write = || -> std::io::Result<Vec<u8>> {
        let vm = source.vm;
        let disks = carried_disks(vm);
        let network = source.network.unwrap_or("default");
        let mut x = Xml::new();
        x.writer
            .write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        x.open(
            "Envelope",
            &[
                ("xmlns", "http://schemas.dmtf.org/ovf/envelope/1"),
                ("xmlns:cim", "http://schemas.dmtf.org/wbem/wscim/1/common"),
                ("xmlns:ovf", "http://schemas.dmtf.org/ovf/envelope/1"),
                (
                    "xmlns:rasd",
                    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
                ),
                ("xmlns:vmw", "http://www.vmware.com/schema/ovf"),
                (
                    "xmlns:vssd",
                    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
                ),
                ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"),
            ],
        )?;
        x.open("References", &[])?;
        for (index, (file, size)) in disk_files.iter().enumerate() {
            let id = format!("file{}", index + 1);
            x.empty(
                "File",
                &[("ovf:href", file), ("ovf:id", &id), ("ovf:size", &size.to_string())],
            )?;
        }
        x.close("References")?;
        x.open("DiskSection", &[])?;
        x.text("Info", "Virtual disk information")?;
        for (index, disk) in disks.iter().enumerate() {
            let disk_id = format!("vmdisk{}", index + 1);
            let file_id = format!("file{}", index + 1);
            x.empty(
                "Disk",
                &[
                    ("ovf:capacity", &disk.size_bytes.to_string()),
                    ("ovf:capacityAllocationUnits", "byte"),
                    ("ovf:diskId", &disk_id),
                    ("ovf:fileRef", &file_id),
                    ("ovf:format", STREAM_OPTIMIZED),
                ],
            )?;
        }
        x.close("DiskSection")?;
        x.open("NetworkSection", &[])?;
        x.text("Info", "The list of logical networks")?;
        x.open("Network", &[("ovf:name", network)])?;
        x.text("Description", &format!("The berth network {network}"))?;
        x.close("Network")?;
        x.close("NetworkSection")?;
        x.open("VirtualSystem", &[("ovf:id", source.name)])?;
        x.text("Info", "A virtual machine exported by berth")?;
        x.text("Name", source.name)?;
        x.open(
            "OperatingSystemSection",
            &[("ovf:id", "101"), ("vmw:osType", "otherLinux64Guest")],
        )?;
        x.text("Info", "The kind of installed guest operating system")?;
        x.close("OperatingSystemSection")?;
        x.open("VirtualHardwareSection", &[])?;
        x.text("Info", "Virtual hardware requirements")?;
        x.open("System", &[])?;
        x.text("vssd:ElementName", "Virtual Hardware Family")?;
        x.text("vssd:InstanceID", "0")?;
        x.text("vssd:VirtualSystemIdentifier", source.name)?;
        x.text("vssd:VirtualSystemType", "vmx-13")?;
        x.close("System")?;
        let vcpus = vm.vcpus.current.max(1);
        let cores = vm.cores_per_socket.unwrap_or(1).max(1);
        x.item(
            &[
                ("AllocationUnits", "hertz * 10^6".into()),
                ("Description", "Number of Virtual CPUs".into()),
                ("ElementName", format!("{vcpus} virtual CPU(s)")),
                ("InstanceID", "1".into()),
                ("ResourceType", "3".into()),
                ("VirtualQuantity", vcpus.to_string()),
            ],
            &[("vmw:CoresPerSocket", cores.to_string())],
        )?;
        let memory_mib = vm.memory.current_bytes.div_ceil(1 << 20);
        x.item(
            &[
                ("AllocationUnits", "byte * 2^20".into()),
                ("Description", "Memory Size".into()),
                ("ElementName", format!("{memory_mib}MB of memory")),
                ("InstanceID", "2".into()),
                ("ResourceType", "4".into()),
                ("VirtualQuantity", memory_mib.to_string()),
            ],
            &[],
        )?;
        // One controller per bus in use, then the disks on them.
        let mut next_id = 3u32;
        let mut controllers: Vec<(String, u32)> = Vec::new();
        for disk in &disks {
            let (kind, sub_type) = controller_of(&disk.bus);
            let key = format!("{kind}:{sub_type}");
            if controllers.iter().any(|(k, _)| *k == key) {
                continue;
            }
            x.item(
                &[
                    ("Address", "0".into()),
                    ("Description", format!("{} Controller", sub_type)),
                    ("ElementName", format!("{} controller 0", sub_type)),
                    ("InstanceID", next_id.to_string()),
                    ("ResourceSubType", sub_type.into()),
                    ("ResourceType", kind.to_string()),
                ],
                &[],
            )?;
            controllers.push((key, next_id));
            next_id += 1;
        }
        let mut on_controller: std::collections::HashMap<u32, u32> = Default::default();
        for (index, disk) in disks.iter().enumerate() {
            let (kind, sub_type) = controller_of(&disk.bus);
            let key = format!("{kind}:{sub_type}");
            let parent = controllers
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, id)| *id)
                .unwrap_or(3);
            let slot = on_controller.entry(parent).or_default();
            x.item(
                &[
                    ("AddressOnParent", slot.to_string()),
                    ("ElementName", format!("Hard disk {}", index + 1)),
                    ("HostResource", format!("ovf:/disk/vmdisk{}", index + 1)),
                    ("InstanceID", next_id.to_string()),
                    ("Parent", parent.to_string()),
                    ("ResourceType", "17".into()),
                ],
                &[],
            )?;
            *slot += 1;
            next_id += 1;
        }
        if source.network.is_some() {
            let interface = vm.interfaces.first();
            let model = interface.map(|i| i.model.as_str()).unwrap_or("virtio");
            let mut fields = vec![
                ("AutomaticAllocation", "true".to_string()),
                ("Connection", network.to_string()),
                ("ElementName", "Network adapter 1".into()),
                ("InstanceID", next_id.to_string()),
                ("ResourceSubType", adapter_of(model).into()),
                ("ResourceType", "10".into()),
            ];
            if let Some(mac) = source.mac {
                fields.push(("Address", mac.to_string()));
            }
            x.item(&fields, &[])?;
        }
        x.close("VirtualHardwareSection")?;
        x.close("VirtualSystem")?;
        x.close("Envelope")?;
        Ok(x.writer.into_inner())
    };
    let bytes = write().map_err(|e| package_error(format!("writing the OVF descriptor: {e}")))?;
    String::from_utf8(bytes).map_err(|e| package_error(e.to_string()))
}

/// A directory to write a package into: absent (created) or empty.
fn fresh_directory(dir: &Path) -> Result<(), VmError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(package_error(format!(
                    "--to {} is a directory with files in it; give a new or empty directory",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| package_error(format!("creating {}: {e}", dir.display())))
        }
        Err(e) => Err(package_error(format!("--to {}: {e}", dir.display()))),
    }
}

/// Writes `NAME.ovf`, `NAME.mf` (each file's `digest`) and `NAME-diskN.vmdk` into `dir`.
/// Returns the files in the order an OVA holds them (descriptor, manifest, disks).
pub fn write_ovf(source: &PackageSource, dir: &Path, digest: ManifestDigest) -> Result<Vec<PathBuf>, VmError> {
    fresh_directory(dir)?;
    let mut disk_files = Vec::new();
    let mut disk_paths = Vec::new();
    for (index, disk) in carried_disks(source.vm).into_iter().enumerate() {
        let file = format!("{}-disk{}.vmdk", source.name, index + 1);
        let path = dir.join(&file);
        convert_disk(disk, &path, "streamOptimized")?;
        let size = std::fs::metadata(&path)
            .map_err(|e| package_error(format!("{}: {e}", path.display())))?
            .len();
        disk_files.push((file, size));
        disk_paths.push(path);
    }
    let descriptor = dir.join(format!("{}.ovf", source.name));
    std::fs::write(&descriptor, ovf_descriptor(source, &disk_files)?)
        .map_err(|e| package_error(format!("writing {}: {e}", descriptor.display())))?;
    let mut manifest = String::new();
    for path in std::iter::once(&descriptor).chain(disk_paths.iter()) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let algorithm = digest.manifest_name();
        manifest.push_str(&format!("{algorithm}({name})= {}\n", digest_of(path, algorithm)?));
    }
    let manifest_path = dir.join(format!("{}.mf", source.name));
    std::fs::write(&manifest_path, manifest)
        .map_err(|e| package_error(format!("writing {}: {e}", manifest_path.display())))?;
    let mut files = vec![descriptor, manifest_path];
    files.extend(disk_paths);
    Ok(files)
}

/// Writes the package as one OVA (a ustar archive: descriptor first, then manifest and disks),
/// using `work` (an empty or absent directory, removed after) for its parts.
pub fn write_ova(source: &PackageSource, to: &Path, work: &Path, digest: ManifestDigest) -> Result<(), VmError> {
    if to.exists() {
        return Err(package_error(format!(
            "--to {} exists; give a new file name",
            to.display()
        )));
    }
    let result = (|| {
        let files = write_ovf(source, work, digest)?;
        let temp = to.with_extension("ova.partial");
        let out =
            std::fs::File::create(&temp).map_err(|e| package_error(format!("creating {}: {e}", temp.display())))?;
        let mut archive = tar::Builder::new(std::io::BufWriter::new(out));
        for path in &files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut file =
                std::fs::File::open(path).map_err(|e| package_error(format!("reading {}: {e}", path.display())))?;
            let size = file.metadata().map_err(|e| package_error(e.to_string()))?.len();
            let mut header = tar::Header::new_ustar();
            header.set_size(size);
            header.set_mode(0o644);
            header.set_mtime(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
            header.set_entry_type(tar::EntryType::Regular);
            archive
                .append_data(&mut header, &name, &mut file)
                .map_err(|e| package_error(format!("writing {}: {e}", temp.display())))?;
        }
        let mut writer = archive
            .into_inner()
            .map_err(|e| package_error(format!("writing {}: {e}", temp.display())))?;
        writer
            .flush()
            .map_err(|e| package_error(format!("writing {}: {e}", temp.display())))?;
        drop(writer);
        std::fs::rename(&temp, to).map_err(|e| package_error(format!("writing {}: {e}", to.display())))
    })();
    let _ = std::fs::remove_dir_all(work);
    result
}

/// The `.vmx` VMware Workstation/ESXi reads for `source` with disks `disk_files`.
pub fn vmx_text(source: &PackageSource, disk_files: &[String], firmware_efi: bool) -> String {
    let vm = source.vm;
    let mut lines = vec![
        (".encoding", "UTF-8".to_string()),
        ("config.version", "8".into()),
        ("virtualHW.version", "13".into()),
        ("displayName", source.name.to_string()),
        ("guestOS", "other-64".into()),
        ("numvcpus", vm.vcpus.current.max(1).to_string()),
        (
            "cpuid.coresPerSocket",
            vm.cores_per_socket.unwrap_or(1).max(1).to_string(),
        ),
        ("memsize", vm.memory.current_bytes.div_ceil(1 << 20).to_string()),
        ("firmware", if firmware_efi { "efi" } else { "bios" }.into()),
    ];
    let mut owned: Vec<(String, String)> = lines.drain(..).map(|(k, v)| (k.to_string(), v)).collect();
    if let Some(uuid) = &vm.uuid {
        owned.push(("uuid.bios".into(), uuid.clone()));
    }
    let mut used: std::collections::HashMap<String, u32> = Default::default();
    for (disk, file) in carried_disks(vm).iter().zip(disk_files) {
        let (adapter, virtual_dev) = match disk.bus.as_str() {
            "ide" => ("ide0", None),
            "scsi" => ("scsi0", Some("lsilogic")),
            "nvme" => ("nvme0", None),
            _ => ("sata0", None),
        };
        let slot = used.entry(adapter.to_string()).or_default();
        if *slot == 0 {
            owned.push((format!("{adapter}.present"), "TRUE".into()));
            if let Some(dev) = virtual_dev {
                owned.push((format!("{adapter}.virtualDev"), dev.into()));
            }
        }
        owned.push((format!("{adapter}:{slot}.present"), "TRUE".into()));
        owned.push((format!("{adapter}:{slot}.fileName"), file.clone()));
        *slot += 1;
    }
    if let Some(network) = source.network {
        let interface = vm.interfaces.first();
        let model = match interface.map(|i| i.model.as_str()).unwrap_or("virtio") {
            "e1000" => "e1000",
            "e1000e" => "e1000e",
            "pcnet" => "vlance",
            _ => "vmxnet3",
        };
        owned.push(("ethernet0.present".into(), "TRUE".into()));
        owned.push(("ethernet0.virtualDev".into(), model.into()));
        owned.push(("ethernet0.networkName".into(), network.into()));
        match source.mac {
            Some(mac) => {
                owned.push(("ethernet0.addressType".into(), "generated".into()));
                owned.push(("ethernet0.generatedAddress".into(), mac.into()));
            }
            None => owned.push(("ethernet0.addressType".into(), "generated".into())),
        }
    }
    owned
        .into_iter()
        .map(|(key, value)| format!("{key} = \"{}\"\n", value.replace(['"', '\n', '\r'], "")))
        .collect()
}

/// Writes `NAME.vmx` and `NAME-diskN.vmdk` (monolithic sparse) into `dir`.
pub fn write_vmx(source: &PackageSource, dir: &Path, firmware_efi: bool) -> Result<Vec<PathBuf>, VmError> {
    fresh_directory(dir)?;
    let mut files = Vec::new();
    let mut names = Vec::new();
    for (index, disk) in carried_disks(source.vm).into_iter().enumerate() {
        let name = format!("{}-disk{}.vmdk", source.name, index + 1);
        let path = dir.join(&name);
        convert_disk(disk, &path, "monolithicSparse")?;
        names.push(name);
        files.push(path);
    }
    let vmx = dir.join(format!("{}.vmx", source.name));
    std::fs::write(&vmx, vmx_text(source, &names, firmware_efi))
        .map_err(|e| package_error(format!("writing {}: {e}", vmx.display())))?;
    files.insert(0, vmx);
    Ok(files)
}
