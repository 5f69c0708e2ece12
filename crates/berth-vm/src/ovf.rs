//! DMTF OVF 1.x and 2.x descriptors as VMware (ovftool, vSphere) and VirtualBox export them,
//! their manifests, and OVA packages (a tar of the descriptor, its manifest and its disks).
//!
//! A package is untrusted: its descriptor may only name files inside the package, its manifest
//! must match what is there, its numbers must be ones a machine can have. Everything berth
//! cannot carry over (CD drives, USB, sound, product properties, vendor extensions) is listed.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use roxmltree::Node;
use sha2::Digest;

use crate::disk_source::DiskFormat;
use crate::import::{parse_mac, shown, ImportedDisk, ImportedInterface, ImportedVm, MAX_MEMORY_BYTES};
use crate::{VmError, MAX_VCPUS};

/// The largest disk a descriptor may declare (an empty disk is created at its capacity).
pub const MAX_DISK_CAPACITY_BYTES: u64 = 64 << 40;

/// At most this many files in an OVA (a descriptor, a manifest, a certificate and disks).
const MAX_OVA_ENTRIES: usize = 256;

/// CIM_ResourceAllocationSettingData.ResourceType values (DMTF DSP1041) berth reads.
mod resource {
    pub const PROCESSOR: u32 = 3;
    pub const MEMORY: u32 = 4;
    pub const IDE_CONTROLLER: u32 = 5;
    pub const SCSI_CONTROLLER: u32 = 6;
    pub const ETHERNET: u32 = 10;
    pub const FLOPPY: u32 = 14;
    pub const CD_DRIVE: u32 = 15;
    pub const DVD_DRIVE: u32 = 16;
    pub const DISK_DRIVE: u32 = 17;
    pub const OTHER_STORAGE_CONTROLLER: u32 = 20;
    pub const SERIAL_PORT: u32 = 21;
    pub const USB_CONTROLLER: u32 = 23;
    pub const GRAPHICS: u32 = 24;
    pub const SOUND: u32 = 35;
}

fn ovf_error(message: impl Into<String>) -> VmError {
    VmError::Import(format!("OVF: {}", message.into()))
}

/// What to take from a package: one of its machines, and which deployment option.
#[derive(Debug, Clone, Default)]
pub struct OvfChoice {
    /// A `VirtualSystem`'s id or name; every machine when None.
    pub vm: Option<String>,
    /// A `DeploymentOptionSection` configuration id; the package's default when None.
    pub deployment: Option<String>,
}

/// True when `text` is an OVF descriptor (its root element is `Envelope`).
pub fn looks_like_ovf(text: &str) -> bool {
    roxmltree::Document::parse(text)
        .map(|d| d.root_element().tag_name().name() == "Envelope")
        .unwrap_or(false)
}

/// An attribute by local name, whatever its namespace prefix (`ovf:id`, `vmw:key`).
fn attr<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.attributes().find(|a| a.name() == name).map(|a| a.value())
}

fn children<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |n| n.is_element() && n.tag_name().name() == name)
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> Option<Node<'a, 'i>> {
    children(node, name).next()
}

/// The trimmed text of a child element (`rasd:VirtualQuantity`), None when absent or empty.
fn child_text<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Bytes per unit of a DMTF programmatic unit ("byte * 2^20") or the words exporters write
/// ("MegaBytes", "MB").
pub fn allocation_unit_bytes(units: &str) -> Option<u64> {
    let compact: String = units
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let word = match compact.as_str() {
        "byte" | "bytes" | "b" => Some(1),
        "kilobyte" | "kilobytes" | "kb" | "kib" => Some(1 << 10),
        "megabyte" | "megabytes" | "mb" | "mib" => Some(1 << 20),
        "gigabyte" | "gigabytes" | "gb" | "gib" => Some(1 << 30),
        "terabyte" | "terabytes" | "tb" | "tib" => Some(1 << 40),
        _ => None,
    };
    if word.is_some() {
        return word;
    }
    let factor = compact
        .strip_prefix("byte*")
        .or_else(|| compact.strip_prefix("bytes*"))?;
    match factor.split_once('^') {
        Some((base, exponent)) => {
            let base: u64 = base.parse().ok()?;
            let exponent: u32 = exponent.parse().ok()?;
            base.checked_pow(exponent)
        }
        None => factor.parse().ok().filter(|f| *f > 0),
    }
}

/// `quantity` in `units` as bytes, for the element named in errors.
fn bytes(quantity: &str, units: Option<&str>, element: &str) -> Result<u64, VmError> {
    let units = units.unwrap_or("byte");
    let per = allocation_unit_bytes(units).ok_or_else(|| {
        ovf_error(format!(
            "{element}: allocation units '{}' are not a unit berth knows (use \"byte * 2^20\" or MegaBytes)",
            shown(units)
        ))
    })?;
    let count: u64 = quantity.trim().parse().map_err(|_| {
        ovf_error(format!(
            "{element}: '{}' is not a whole number{}",
            shown(quantity),
            if quantity.contains("${") {
                " (properties in sizes are not supported)"
            } else {
                ""
            }
        ))
    })?;
    count
        .checked_mul(per)
        .ok_or_else(|| ovf_error(format!("{element}: {count} x {units} is beyond any machine")))
}

/// A package file name as the descriptor or manifest gives it: a plain name in the package's
/// own directory, never a path, a URL or `..`.
fn package_file(dir: &Path, href: &str, element: &str) -> Result<PathBuf, VmError> {
    let plain = !href.is_empty()
        && href != "."
        && href != ".."
        && !href.contains('/')
        && !href.contains('\\')
        && !href.contains(':')
        && !href.chars().any(char::is_control);
    if !plain {
        return Err(ovf_error(format!(
            "{element} '{}' points outside the package: a package names its own files only (no paths, URLs or ..)",
            shown(href)
        )));
    }
    Ok(dir.join(href))
}

/// A disk of the `DiskSection`: its file (None: created empty) and capacity.
#[derive(Debug, Clone)]
struct OvfDisk {
    file: Option<PathBuf>,
    format: Option<DiskFormat>,
    capacity_bytes: u64,
}

fn disk_format(format: Option<&str>, disk_id: &str) -> Result<Option<DiskFormat>, VmError> {
    let Some(format) = format else {
        return Ok(None);
    };
    let lower = format.to_ascii_lowercase();
    if lower.contains("vmdk") {
        Ok(Some(DiskFormat::Vmdk))
    } else if lower.contains("qcow") {
        Ok(Some(DiskFormat::Qcow2))
    } else if lower.contains("raw") {
        Ok(Some(DiskFormat::Raw))
    } else {
        Err(ovf_error(format!(
            "<Disk ovf:diskId=\"{disk_id}\">: format '{}' is not VMDK, qcow2 or raw",
            shown(format)
        )))
    }
}

fn read_references(envelope: Node, dir: &Path) -> Result<HashMap<String, PathBuf>, VmError> {
    let mut files = HashMap::new();
    if let Some(references) = child(envelope, "References") {
        for file in children(references, "File") {
            let id = attr(file, "id").ok_or_else(|| ovf_error("<References><File> has no ovf:id"))?;
            let href = attr(file, "href")
                .ok_or_else(|| ovf_error(format!("<File ovf:id=\"{}\"> has no ovf:href", shown(id))))?;
            if attr(file, "chunkSize").is_some() {
                return Err(ovf_error(format!(
                    "<File ovf:id=\"{}\"> is split into chunks; join them (ovftool can) and import the whole file",
                    shown(id)
                )));
            }
            if attr(file, "compression").is_some_and(|c| c != "identity") {
                return Err(ovf_error(format!(
                    "<File ovf:id=\"{}\"> is compressed ({}); decompress it and drop ovf:compression",
                    shown(id),
                    shown(attr(file, "compression").unwrap_or_default())
                )));
            }
            let path = package_file(dir, href, &format!("<File ovf:id=\"{}\"> ovf:href", shown(id)))?;
            files.insert(id.to_string(), path);
        }
    }
    Ok(files)
}

fn read_disks(envelope: Node, files: &HashMap<String, PathBuf>) -> Result<HashMap<String, OvfDisk>, VmError> {
    let mut disks = HashMap::new();
    let Some(section) = child(envelope, "DiskSection") else {
        return Ok(disks);
    };
    for disk in children(section, "Disk") {
        let id = attr(disk, "diskId").ok_or_else(|| ovf_error("<DiskSection><Disk> has no ovf:diskId"))?;
        let element = format!("<Disk ovf:diskId=\"{}\">", shown(id));
        let file = match attr(disk, "fileRef") {
            Some(reference) => Some(files.get(reference).cloned().ok_or_else(|| {
                ovf_error(format!(
                    "{element}: ovf:fileRef '{}' is not in <References>",
                    shown(reference)
                ))
            })?),
            None => None,
        };
        let capacity = attr(disk, "capacity").ok_or_else(|| ovf_error(format!("{element} has no ovf:capacity")))?;
        let capacity_bytes = bytes(
            capacity,
            attr(disk, "capacityAllocationUnits"),
            &format!("{element} ovf:capacity"),
        )?;
        if capacity_bytes == 0 || capacity_bytes > MAX_DISK_CAPACITY_BYTES {
            return Err(ovf_error(format!(
                "{element}: capacity {} must be between 1 byte and {}",
                capacity_bytes,
                berth_model::ByteSize(MAX_DISK_CAPACITY_BYTES)
            )));
        }
        disks.insert(
            id.to_string(),
            OvfDisk {
                file,
                format: disk_format(attr(disk, "format"), id)?,
                capacity_bytes,
            },
        );
    }
    Ok(disks)
}

/// The deployment option in force: the asked one (which must exist), else the default.
fn deployment_option(envelope: Node, asked: Option<&str>) -> Result<Option<String>, VmError> {
    let options: Vec<(String, bool)> = child(envelope, "DeploymentOptionSection")
        .map(|section| {
            children(section, "Configuration")
                .filter_map(|c| Some((attr(c, "id")?.to_string(), attr(c, "default") == Some("true"))))
                .collect()
        })
        .unwrap_or_default();
    match asked {
        Some(asked) => {
            if options.iter().any(|(id, _)| id == asked) {
                Ok(Some(asked.to_string()))
            } else if options.is_empty() {
                Err(ovf_error(format!(
                    "--deployment {}: the package has no DeploymentOptionSection; leave it out",
                    shown(asked)
                )))
            } else {
                Err(ovf_error(format!(
                    "--deployment {}: unknown DeploymentOption; the package has {}",
                    shown(asked),
                    options.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", ")
                )))
            }
        }
        None => Ok(options
            .iter()
            .find(|(_, default)| *default)
            .or(options.first())
            .map(|(id, _)| id.clone())),
    }
}

/// Every `VirtualSystem`, also inside (nested) `VirtualSystemCollection`s.
fn virtual_systems<'a, 'i>(node: Node<'a, 'i>, found: &mut Vec<Node<'a, 'i>>) {
    for element in node.children().filter(Node::is_element) {
        match element.tag_name().name() {
            "VirtualSystem" => found.push(element),
            "VirtualSystemCollection" => virtual_systems(element, found),
            _ => {}
        }
    }
}

/// Reads a descriptor whose files are in `dir`: the machines chosen, with their disks
/// (paths in `dir`, not yet checked: `import::inspect_disks` does that) and what was left.
pub fn parse_ovf(text: &str, dir: &Path, choice: &OvfChoice) -> Result<Vec<ImportedVm>, VmError> {
    let document = roxmltree::Document::parse(text).map_err(|e| ovf_error(format!("descriptor: {e}")))?;
    let envelope = document.root_element();
    if envelope.tag_name().name() != "Envelope" {
        return Err(ovf_error(format!(
            "the root element is <{}>, not an OVF <Envelope>",
            shown(envelope.tag_name().name())
        )));
    }
    let files = read_references(envelope, dir)?;
    let disks = read_disks(envelope, &files)?;
    let deployment = deployment_option(envelope, choice.deployment.as_deref())?;
    let mut systems = Vec::new();
    virtual_systems(envelope, &mut systems);
    if systems.is_empty() {
        return Err(ovf_error("the package has no <VirtualSystem>"));
    }
    let name_of = |system: Node| -> String {
        child_text(system, "Name")
            .or(attr(system, "id"))
            .unwrap_or("vm")
            .to_string()
    };
    let chosen: Vec<Node> = match &choice.vm {
        Some(wanted) => {
            let found: Vec<Node> = systems
                .iter()
                .copied()
                .filter(|s| attr(*s, "id") == Some(wanted.as_str()) || name_of(*s) == *wanted)
                .collect();
            if found.is_empty() {
                return Err(ovf_error(format!(
                    "--vm {}: no such VirtualSystem; the package has {}",
                    shown(wanted),
                    systems
                        .iter()
                        .map(|s| shown(&name_of(*s)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            found
        }
        None => systems,
    };
    let mut package_notes = Vec::new();
    for section in envelope.children().filter(Node::is_element) {
        match section.tag_name().name() {
            "References"
            | "DiskSection"
            | "NetworkSection"
            | "DeploymentOptionSection"
            | "VirtualSystem"
            | "VirtualSystemCollection" => {}
            other => package_notes.push(format!("<{other}> of the package")),
        }
    }
    chosen
        .into_iter()
        .map(|system| {
            let mut vm = parse_system(system, &name_of(system), &disks, &files, deployment.as_deref())?;
            vm.not_carried_over.extend(package_notes.iter().cloned());
            Ok(vm)
        })
        .collect()
}

/// Whether an item applies under the deployment option in force (`ovf:configuration`).
fn applies(item: Node, deployment: Option<&str>) -> bool {
    match (attr(item, "configuration"), deployment) {
        (None, _) => true,
        (Some(list), Some(option)) => list.split_whitespace().any(|c| c == option),
        (Some(_), None) => false,
    }
}

fn parse_system(
    system: Node,
    name: &str,
    disks: &HashMap<String, OvfDisk>,
    files: &HashMap<String, PathBuf>,
    deployment: Option<&str>,
) -> Result<ImportedVm, VmError> {
    let mut not_carried = Vec::new();
    for section in system.children().filter(Node::is_element) {
        match section.tag_name().name() {
            "Name" | "Info" | "VirtualHardwareSection" | "OperatingSystemSection" | "AnnotationSection" => {}
            "ProductSection" => {
                not_carried.push("<ProductSection> properties (berth sets no OVF properties; use cloud-init)".into())
            }
            "Machine" => not_carried.push("VirtualBox machine settings (<vbox:Machine>)".into()),
            other => not_carried.push(format!("<{other}>")),
        }
    }
    let mut hardware = children(system, "VirtualHardwareSection");
    let section = hardware
        .next()
        .ok_or_else(|| ovf_error(format!("VirtualSystem {}: no <VirtualHardwareSection>", shown(name))))?;
    if hardware.next().is_some() {
        not_carried.push("further <VirtualHardwareSection>s (the first is used)".into());
    }
    let items: Vec<Node> = section
        .children()
        .filter(|n| n.is_element() && matches!(n.tag_name().name(), "Item" | "StorageItem" | "EthernetPortItem"))
        .filter(|n| applies(*n, deployment))
        .collect();
    let element_name = |item: Node| {
        child_text(item, "ElementName")
            .or(child_text(item, "Caption"))
            .or(child_text(item, "Description"))
            .unwrap_or("item")
            .to_string()
    };
    let resource_type = |item: Node| -> Result<u32, VmError> {
        let text = child_text(item, "ResourceType").ok_or_else(|| {
            ovf_error(format!(
                "{}: item '{}' has no ResourceType",
                shown(name),
                shown(&element_name(item))
            ))
        })?;
        text.parse().map_err(|_| {
            ovf_error(format!(
                "{}: item '{}' has ResourceType '{}', not a number",
                shown(name),
                shown(&element_name(item)),
                shown(text)
            ))
        })
    };
    // Controllers by InstanceID: the bus their disks are on.
    let mut buses: HashMap<String, String> = HashMap::new();
    let mut vcpus = None;
    let mut cores_per_socket = None;
    let mut memory_bytes = None;
    let mut imported_disks = Vec::new();
    let mut interfaces = Vec::new();
    for item in &items {
        let kind = resource_type(*item)?;
        let sub_type = child_text(*item, "ResourceSubType").unwrap_or("").to_ascii_lowercase();
        match kind {
            resource::IDE_CONTROLLER | resource::SCSI_CONTROLLER | resource::OTHER_STORAGE_CONTROLLER => {
                let bus = match kind {
                    resource::IDE_CONTROLLER => "ide",
                    resource::SCSI_CONTROLLER => "scsi",
                    _ if sub_type.contains("nvme") => "nvme",
                    _ => "sata",
                };
                if let Some(id) = child_text(*item, "InstanceID") {
                    buses.insert(id.to_string(), bus.to_string());
                }
            }
            _ => {}
        }
    }
    for item in items {
        let kind = resource_type(item)?;
        let label = element_name(item);
        let element = format!("{}: item '{}'", shown(name), shown(&label));
        match kind {
            resource::PROCESSOR => {
                let quantity = child_text(item, "VirtualQuantity")
                    .ok_or_else(|| ovf_error(format!("{element}: a processor item needs VirtualQuantity")))?;
                let count: u32 = quantity
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_VCPUS).contains(n))
                    .ok_or_else(|| {
                        ovf_error(format!(
                            "{element}: VirtualQuantity '{}' must be a vCPU count from 1 to {MAX_VCPUS}",
                            shown(quantity)
                        ))
                    })?;
                vcpus = Some(count);
                if let Some(cores) = child_text(item, "CoresPerSocket") {
                    let cores: u32 = cores
                        .parse()
                        .ok()
                        .filter(|c| *c >= 1 && count.is_multiple_of(*c))
                        .ok_or_else(|| {
                            ovf_error(format!(
                                "{element}: CoresPerSocket '{}' must divide the {count} vCPUs",
                                shown(cores)
                            ))
                        })?;
                    cores_per_socket = Some(cores);
                }
            }
            resource::MEMORY => {
                let quantity = child_text(item, "VirtualQuantity")
                    .ok_or_else(|| ovf_error(format!("{element}: a memory item needs VirtualQuantity")))?;
                let memory = bytes(quantity, child_text(item, "AllocationUnits"), &element)?;
                if !(1 << 20..=MAX_MEMORY_BYTES).contains(&memory) {
                    return Err(ovf_error(format!(
                        "{element}: memory {} must be between 1 MiB and {}",
                        berth_model::ByteSize(memory),
                        berth_model::ByteSize(MAX_MEMORY_BYTES)
                    )));
                }
                memory_bytes = Some(memory);
            }
            resource::IDE_CONTROLLER | resource::SCSI_CONTROLLER | resource::OTHER_STORAGE_CONTROLLER => {}
            resource::DISK_DRIVE => {
                let host = child_text(item, "HostResource")
                    .ok_or_else(|| ovf_error(format!("{element}: a disk item needs HostResource")))?;
                let bus = child_text(item, "Parent")
                    .and_then(|parent| buses.get(parent))
                    .cloned()
                    .unwrap_or_else(|| "sata".to_string());
                let reference = host.strip_prefix("ovf:").unwrap_or(host);
                let disk = if let Some(id) = reference.strip_prefix("/disk/") {
                    disks.get(id).cloned().ok_or_else(|| {
                        ovf_error(format!(
                            "{element}: HostResource '{}' names no <Disk> of the DiskSection",
                            shown(host)
                        ))
                    })?
                } else if let Some(id) = reference.strip_prefix("/file/") {
                    OvfDisk {
                        file: Some(files.get(id).cloned().ok_or_else(|| {
                            ovf_error(format!("{element}: HostResource '{}' names no <File>", shown(host)))
                        })?),
                        format: None,
                        capacity_bytes: 0,
                    }
                } else {
                    return Err(ovf_error(format!(
                        "{element}: HostResource '{}' is not ovf:/disk/ID or ovf:/file/ID",
                        shown(host)
                    )));
                };
                imported_disks.push(ImportedDisk {
                    label: label.clone(),
                    source: disk.file.clone().unwrap_or_default(),
                    format: disk.format,
                    bus,
                    host_device: false,
                    empty_bytes: match disk.file {
                        None => Some(disk.capacity_bytes),
                        Some(_) => None,
                    },
                });
            }
            resource::ETHERNET => {
                let sub_type = child_text(item, "ResourceSubType").unwrap_or("e1000");
                let model = match nic_model(sub_type) {
                    Some(model) => model,
                    None => {
                        not_carried.push(format!(
                            "{}: adapter type '{}' (attached as virtio)",
                            shown(&label),
                            shown(sub_type)
                        ));
                        "virtio"
                    }
                };
                let mac = match child_text(item, "Address") {
                    Some(text) => Some(parse_mac(text).ok_or_else(|| {
                        ovf_error(format!(
                            "{element}: Address '{}' is not a unicast MAC (six hex octets)",
                            shown(text)
                        ))
                    })?),
                    None => None,
                };
                interfaces.push(ImportedInterface {
                    label: format!("{} ({})", shown(&label), shown(sub_type)),
                    model: model.to_string(),
                    mac,
                    network: child_text(item, "Connection").map(str::to_string),
                });
            }
            resource::CD_DRIVE | resource::DVD_DRIVE => not_carried.push(format!(
                "{}: CD/DVD drive (berth VMs boot from their disks)",
                shown(&label)
            )),
            resource::FLOPPY => not_carried.push(format!("{}: floppy drive", shown(&label))),
            resource::USB_CONTROLLER => not_carried.push(format!("{}: USB controller", shown(&label))),
            resource::SOUND => not_carried.push(format!("{}: sound card", shown(&label))),
            resource::GRAPHICS => not_carried.push(format!(
                "{}: video card (berth VMs use a serial console)",
                shown(&label)
            )),
            resource::SERIAL_PORT => {
                not_carried.push(format!("{}: serial port (berth gives one, the console)", shown(&label)))
            }
            other => not_carried.push(format!("{}: resource type {other}", shown(&label))),
        }
    }
    if section
        .children()
        .any(|n| n.is_element() && n.tag_name().name() == "ExtraConfig")
    {
        not_carried.push("vmw:ExtraConfig settings".into());
    }
    let vcpus = vcpus.ok_or_else(|| ovf_error(format!("{}: no processor item (ResourceType 3)", shown(name))))?;
    let memory_bytes =
        memory_bytes.ok_or_else(|| ovf_error(format!("{}: no memory item (ResourceType 4)", shown(name))))?;
    Ok(ImportedVm {
        name: name.to_string(),
        uuid: None,
        vcpus,
        max_vcpus: vcpus,
        cores_per_socket,
        memory_bytes,
        max_memory_bytes: memory_bytes,
        machine: "q35".into(),
        disks: imported_disks,
        interfaces,
        not_carried_over: not_carried,
    })
}

/// berth's NIC model for an OVF adapter type (`ResourceSubType`), if it has one. Packages for
/// several hypervisors list alternatives ("VMXNET3 virtio"): QEMU's own virtio when offered,
/// else the first one berth has.
fn nic_model(sub_type: &str) -> Option<&'static str> {
    let offered: Vec<&'static str> = sub_type
        .split_whitespace()
        .filter_map(|one| {
            Some(match one.to_ascii_lowercase().as_str() {
                "e1000" | "e1000-82540em" => "e1000",
                "e1000e" => "e1000e",
                "vmxnet3" => "vmxnet3",
                "pcnet32" | "pcnet" | "am79c970a" | "am79c973" => "pcnet",
                "virtio" | "virtio-net" => "virtio",
                _ => return None,
            })
        })
        .collect();
    offered.iter().find(|m| **m == "virtio").or(offered.first()).copied()
}

/// One line of a manifest: `SHA256(disk.vmdk)= hex` (VMware) or `SHA1 (disk.vmdk) = hex`
/// (VirtualBox).
fn manifest_line(line: &str) -> Option<(&str, &str, &str)> {
    let (algorithm, rest) = line.split_once('(')?;
    let (file, rest) = rest.rsplit_once(')')?;
    let digest = rest.trim().strip_prefix('=')?.trim();
    Some((algorithm.trim(), file, digest))
}

/// The hex digest of a file with a manifest's algorithm (`SHA1`, `SHA256`, else SHA-512).
pub(crate) fn digest_of(path: &Path, algorithm: &str) -> Result<String, VmError> {
    let mut file =
        std::fs::File::open(path).map_err(|e| ovf_error(format!("manifest: reading {}: {e}", path.display())))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut sha1 = sha1::Sha1::new();
    let mut sha256 = sha2::Sha256::new();
    let mut sha512 = sha2::Sha512::new();
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| ovf_error(format!("manifest: reading {}: {e}", path.display())))?;
        if read == 0 {
            break;
        }
        match algorithm {
            "SHA1" => sha1.update(&buffer[..read]),
            "SHA256" => sha256.update(&buffer[..read]),
            _ => sha512.update(&buffer[..read]),
        }
    }
    Ok(match algorithm {
        "SHA1" => hex::encode(sha1.finalize()),
        "SHA256" => hex::encode(sha256.finalize()),
        _ => hex::encode(sha512.finalize()),
    })
}

/// Checks the descriptor's manifest (`NAME.mf` next to `NAME.ovf`) when there is one: every
/// file it lists matches, and it lists the descriptor and every file the descriptor names.
/// Returns whether there was a manifest.
pub fn verify_manifest(descriptor: &Path, text: &str) -> Result<bool, VmError> {
    let manifest = descriptor.with_extension("mf");
    let Ok(content) = std::fs::read_to_string(&manifest) else {
        return Ok(false);
    };
    let dir = descriptor.parent().unwrap_or(Path::new("."));
    let mut listed = Vec::new();
    for line in content.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (algorithm, file, expected) = manifest_line(line).ok_or_else(|| {
            ovf_error(format!(
                "manifest {}: '{}' is not ALGORITHM(FILE)= DIGEST",
                manifest.display(),
                shown(line)
            ))
        })?;
        let algorithm = algorithm.to_ascii_uppercase();
        if !matches!(algorithm.as_str(), "SHA1" | "SHA256" | "SHA512") {
            return Err(ovf_error(format!(
                "manifest: {} of {} is not SHA1, SHA256 or SHA512",
                shown(&algorithm),
                shown(file)
            )));
        }
        let path = package_file(dir, file, "manifest entry")?;
        let actual = digest_of(&path, &algorithm)?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(ovf_error(format!(
                "manifest: {algorithm} of {} is {actual}, the manifest says {}: the package is damaged or was altered",
                shown(file),
                shown(expected)
            )));
        }
        listed.push(file.to_string());
    }
    let descriptor_name = descriptor
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !listed.contains(&descriptor_name) {
        return Err(ovf_error(format!(
            "manifest {} does not list the descriptor {descriptor_name}: it cannot vouch for it",
            manifest.display()
        )));
    }
    if let Ok(document) = roxmltree::Document::parse(text) {
        if let Some(references) = child(document.root_element(), "References") {
            for file in children(references, "File") {
                if let Some(href) = attr(file, "href") {
                    if !listed.iter().any(|l| l == href) {
                        return Err(ovf_error(format!(
                            "manifest {} does not list {}, which the descriptor names",
                            manifest.display(),
                            shown(href)
                        )));
                    }
                }
            }
        }
    }
    Ok(true)
}

/// Unpacks an OVA into `into` (an empty directory): regular files with plain names only.
/// Returns the descriptor's path.
pub fn unpack_ova(ova: &Path, into: &Path) -> Result<PathBuf, VmError> {
    let reading = |e: std::io::Error| ovf_error(format!("reading {}: {e}", ova.display()));
    let file = std::fs::File::open(ova).map_err(reading)?;
    if !file.metadata().map_err(reading)?.is_file() {
        return Err(ovf_error(format!("{} is not a regular file", ova.display())));
    }
    let mut archive = tar::Archive::new(file);
    let mut descriptor = None;
    let mut count = 0;
    for entry in archive
        .entries()
        .map_err(|e| ovf_error(format!("{} is not an OVA (a tar archive): {e}", ova.display())))?
    {
        let mut entry = entry.map_err(|e| ovf_error(format!("{}: damaged tar archive: {e}", ova.display())))?;
        count += 1;
        if count > MAX_OVA_ENTRIES {
            return Err(ovf_error(format!(
                "{} has more than {MAX_OVA_ENTRIES} files: not an OVA",
                ova.display()
            )));
        }
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let name = name.strip_prefix("./").unwrap_or(&name).to_string();
        let kind = entry.header().entry_type();
        if kind.is_dir() && name.trim_end_matches('/').is_empty() {
            continue;
        }
        if !kind.is_file() {
            return Err(ovf_error(format!(
                "OVA entry '{}' is not a regular file (links and directories are not allowed in a package)",
                shown(&name)
            )));
        }
        let path = package_file(into, &name, "OVA entry")?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| ovf_error(format!("OVA entry '{}': {e} (listed twice?)", shown(&name))))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| ovf_error(format!("unpacking '{}': {e}", shown(&name))))?;
        if name.ends_with(".ovf") {
            if descriptor.is_some() {
                return Err(ovf_error("the OVA holds more than one .ovf descriptor"));
            }
            descriptor = Some(path);
        }
    }
    descriptor.ok_or_else(|| ovf_error(format!("{} holds no .ovf descriptor", ova.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_as_exporters_write_them() {
        assert_eq!(allocation_unit_bytes("byte * 2^20"), Some(1 << 20));
        assert_eq!(allocation_unit_bytes("byte*2^30"), Some(1 << 30));
        assert_eq!(allocation_unit_bytes("MegaBytes"), Some(1 << 20));
        assert_eq!(allocation_unit_bytes("byte"), Some(1));
        assert_eq!(allocation_unit_bytes("byte * 1024"), Some(1024));
        assert_eq!(allocation_unit_bytes("furlongs"), None);
        assert_eq!(allocation_unit_bytes("byte * 2^99"), None);
    }

    #[test]
    fn package_files_stay_in_the_package() {
        let dir = Path::new("/p");
        assert_eq!(package_file(dir, "a.vmdk", "x").unwrap(), Path::new("/p/a.vmdk"));
        for bad in ["../a.vmdk", "/etc/passwd", "sub/a.vmdk", "http://h/a.vmdk", "..", ""] {
            let error = package_file(dir, bad, "<File> ovf:href").unwrap_err().to_string();
            assert!(error.contains("outside the package"), "{bad}: {error}");
        }
    }

    #[test]
    fn adapter_alternatives_prefer_virtio() {
        assert_eq!(nic_model("VMXNET3 virtio"), Some("virtio"));
        assert_eq!(nic_model("E1000 VMXNET3"), Some("e1000"));
        assert_eq!(nic_model("PCNet32"), Some("pcnet"));
        assert_eq!(nic_model("ne2k  vmxnet3"), Some("vmxnet3"));
        assert_eq!(nic_model("ne2k"), None);
        assert_eq!(nic_model(""), None);
    }

    #[test]
    fn manifest_lines_of_both_exporters() {
        assert_eq!(manifest_line("SHA256(a.ovf)= ab12"), Some(("SHA256", "a.ovf", "ab12")));
        assert_eq!(
            manifest_line("SHA1 (disk 1.vmdk) = ab12"),
            Some(("SHA1", "disk 1.vmdk", "ab12"))
        );
        assert_eq!(manifest_line("garbage"), None);
    }
}
