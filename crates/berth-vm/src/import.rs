//! Reading existing machines as libvirt reads them: libvirt domain XML (`virsh dumpxml`) and
//! VMware `.vmx`. Both become an `ImportedVm`; every setting berth cannot carry over is
//! listed, and bad input (malformed files, numbers no machine has, markup where a UUID or MAC
//! belongs) names the element or key. Importing is defining: whether this host is big enough
//! is for `start` to say, and the disks are checked by `disk_source` when they are copied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::disk_source::{self, DiskFormat, DiskSource};
use crate::{VmError, MAX_VCPUS};

/// The most memory a definition may give a VM: beyond any x86-64 machine QEMU emulates, and
/// far from where byte arithmetic could wrap.
pub const MAX_MEMORY_BYTES: u64 = 16 << 40;

#[derive(Debug, Clone, PartialEq)]
pub struct ImportedDisk {
    /// How the definition names it (`<disk> vda`, `scsi0:0`).
    pub label: String,
    pub source: PathBuf,
    /// Format as the source declares it, if it does.
    pub format: Option<DiskFormat>,
    /// virtio, scsi, sata, ide, nvme
    pub bus: String,
    /// A host block device (`<disk type='block'>`), imported only with `--allow-device`.
    pub host_device: bool,
    /// A disk with no file (an OVF `<Disk>` without `ovf:fileRef`): created empty at this
    /// size; `source` is empty.
    pub empty_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImportedInterface {
    /// How the definition names it (`<interface type='bridge'>`, `ethernet0`).
    pub label: String,
    pub model: String,
    /// Checked: six hex octets, unicast.
    pub mac: Option<String>,
    /// The network or bridge it was attached to (libvirt `<source network|bridge>`, VMware
    /// `networkName`): berth attaches it to its network of that name if there is one.
    pub network: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImportedVm {
    pub name: String,
    /// Checked and written as libvirt does (8-4-4-4-12 lower-case hex).
    pub uuid: Option<String>,
    pub vcpus: u32,
    pub max_vcpus: u32,
    pub cores_per_socket: Option<u32>,
    pub memory_bytes: u64,
    pub max_memory_bytes: u64,
    /// q35 or pc
    pub machine: String,
    pub disks: Vec<ImportedDisk>,
    pub interfaces: Vec<ImportedInterface>,
    pub not_carried_over: Vec<String>,
}

fn import_error(message: impl Into<String>) -> VmError {
    VmError::Import(message.into())
}

/// A value from the file as it may appear in a message: control characters (terminal escape
/// sequences) replaced, long values cut.
pub fn shown(value: &str) -> String {
    let mut text: String = value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(120)
        .collect();
    if value.chars().count() > 120 {
        text.push('…');
    }
    text
}

/// A UUID as libvirt accepts it (32 hex digits, dashes and spaces anywhere between them, as
/// VMware writes `uuid.bios`), in libvirt's canonical form; None if it is not one.
pub fn parse_uuid(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|c| !matches!(c, '-' | ' ')).collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// A unicast Ethernet address (`52:54:00:6b:3c:58`, either case or `-` separated); None if
/// it is not one.
pub fn parse_mac(text: &str) -> Option<String> {
    let octets = text
        .split([':', '-'])
        .map(|o| {
            if o.len() == 2 {
                u8::from_str_radix(o, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<Vec<u8>>>()?;
    if octets.len() != 6 || octets[0] & 1 == 1 || octets.iter().all(|o| *o == 0) {
        return None;
    }
    Some(octets.iter().map(|o| format!("{o:02x}")).collect::<Vec<_>>().join(":"))
}

/// Bytes for a libvirt `unit` attribute (KiB when absent).
fn libvirt_bytes(value: &str, unit: Option<&str>, element: &str) -> Result<u64, VmError> {
    let too_large = || {
        import_error(format!(
            "domain XML: <{element}> {} is more than a VM can have ({})",
            shown(value.trim()),
            berth_model::ByteSize(MAX_MEMORY_BYTES)
        ))
    };
    let number: u64 = value.trim().parse().map_err(|e: std::num::ParseIntError| {
        if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
            too_large()
        } else {
            import_error(format!("domain XML: <{element}>: '{}' is not a number", shown(value)))
        }
    })?;
    let multiplier: u64 = match unit.unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        other => {
            return Err(import_error(format!(
                "domain XML: <{element} unit='{}'>: unknown unit",
                shown(other)
            )))
        }
    };
    number
        .checked_mul(multiplier)
        .filter(|bytes| *bytes <= MAX_MEMORY_BYTES)
        .ok_or_else(too_large)
}

/// A vCPU count from the file, between 1 and `MAX_VCPUS`; `field` names it in errors as the
/// file writes it (`.vmx: numvcpus = "512"`, `domain XML: <vcpu>512</vcpu>`).
fn vcpu_count(value: &str, field: impl Fn(&str) -> String) -> Result<u32, VmError> {
    let at_most =
        |shown_value: &str| import_error(format!("{}: a VM has at most {MAX_VCPUS} vCPUs", field(shown_value)));
    let count: u64 = value
        .trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| match e.kind() {
            std::num::IntErrorKind::PosOverflow => at_most(&shown(value)),
            _ => import_error(format!("{} is not a number", field(&shown(value)))),
        })?;
    if count == 0 {
        return Err(import_error(format!("{}: a VM needs at least 1 vCPU", field("0"))));
    }
    u32::try_from(count)
        .ok()
        .filter(|c| *c <= MAX_VCPUS)
        .ok_or_else(|| at_most(&count.to_string()))
}

fn resolve(base: &Path, file: &str) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Parses a libvirt domain XML.
pub fn parse_libvirt(text: &str, base_dir: &Path) -> Result<ImportedVm, VmError> {
    let document = roxmltree::Document::parse(text).map_err(|e| import_error(format!("domain XML: {e}")))?;
    let domain = document.root_element();
    if domain.tag_name().name() != "domain" {
        return Err(import_error(format!(
            "domain XML: the root element is <{}>, not <domain>",
            domain.tag_name().name()
        )));
    }
    let child = |name: &str| domain.children().find(|n| n.has_tag_name(name));
    let text_of = |name: &str| {
        child(name)
            .and_then(|n| n.text())
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    let name = text_of("name")
        .ok_or_else(|| import_error("domain XML: <name> is missing"))?
        .to_string();
    let uuid = text_of("uuid")
        .map(|text| {
            parse_uuid(text).ok_or_else(|| {
                import_error(format!(
                    "domain XML: <uuid> '{}' is not a UUID (32 hex digits, as 825fcb99-5d1e-4c6e-9a0b-0a3f1c2d7e41)",
                    shown(text)
                ))
            })
        })
        .transpose()?;
    let mut not_carried = Vec::new();

    let memory_of = |name: &str| -> Result<Option<u64>, VmError> {
        match child(name) {
            Some(node) => Ok(Some(libvirt_bytes(
                node.text().unwrap_or(""),
                node.attribute("unit"),
                name,
            )?)),
            None => Ok(None),
        }
    };
    let memory = memory_of("memory")?;
    let current_memory = memory_of("currentMemory")?
        .or(memory)
        .ok_or_else(|| import_error("domain XML: <memory> is missing"))?;
    let max_memory = memory_of("maxMemory")?
        .unwrap_or(memory.unwrap_or(current_memory))
        .max(current_memory);

    // libvirt gives a domain without <vcpu> one vCPU.
    let (vcpus, max_vcpus) = match child("vcpu") {
        None => (1, 1),
        Some(vcpu) => {
            let max = vcpu_count(vcpu.text().unwrap_or(""), |v| format!("domain XML: <vcpu>{v}</vcpu>"))?;
            let current = match vcpu.attribute("current") {
                Some(current) => vcpu_count(current, |v| format!("domain XML: <vcpu current='{v}'>"))?,
                None => max,
            };
            if current > max {
                return Err(import_error(format!(
                    "domain XML: <vcpu current='{current}'> must be between 1 and the maximum {max}"
                )));
            }
            (current, max)
        }
    };

    let os = child("os");
    let machine_attr = os
        .and_then(|o| o.children().find(|n| n.has_tag_name("type")))
        .and_then(|t| t.attribute("machine"))
        .unwrap_or("q35");
    let machine = if machine_attr.contains("i440fx") || machine_attr == "pc" || machine_attr.starts_with("pc-i") {
        "pc"
    } else {
        "q35"
    };
    if let Some(os) = os {
        if os.attribute("firmware") == Some("efi") || os.children().any(|n| n.has_tag_name("loader")) {
            not_carried.push("<os> UEFI firmware (berth boots imported VMs with SeaBIOS)".to_string());
        }
    }

    let mut disks = Vec::new();
    let mut interfaces = Vec::new();
    if let Some(devices) = child("devices") {
        for device in devices.children().filter(|n| n.is_element()) {
            match device.tag_name().name() {
                "disk" => {
                    let kind = device.attribute("device").unwrap_or("disk");
                    let target = device.children().find(|n| n.has_tag_name("target"));
                    let dev = shown(target.and_then(|t| t.attribute("dev")).unwrap_or("?"));
                    let source_type = device.attribute("type").unwrap_or("file");
                    if kind != "disk" {
                        not_carried.push(format!("<disk device='{}'> {dev}", shown(kind)));
                        continue;
                    }
                    let source = device.children().find(|n| n.has_tag_name("source"));
                    let (path, host_device) = match (source_type, source) {
                        ("file", Some(source)) if source.attribute("file").is_some() => {
                            (source.attribute("file").unwrap_or_default(), false)
                        }
                        ("block", Some(source)) if source.attribute("dev").is_some() => {
                            (source.attribute("dev").unwrap_or_default(), true)
                        }
                        ("file" | "block", _) => {
                            // An empty drive: libvirt allows it for removable media only,
                            // but a source-less disk carries nothing either way.
                            not_carried.push(format!("<disk type='{source_type}'> {dev} without a source"));
                            continue;
                        }
                        (other, _) => {
                            not_carried.push(format!(
                                "<disk type='{}'> {dev}: only file and block disks are copied; copy it to a file and import that with `berth image import --vm`",
                                shown(other)
                            ));
                            continue;
                        }
                    };
                    let resolved = resolve(base_dir, path);
                    if !resolved.exists() {
                        return Err(import_error(format!(
                            "domain XML: <disk> {dev}: <source {}='{}'> does not exist; copy the disk next to the XML or fix the path",
                            if host_device { "dev" } else { "file" },
                            shown(path)
                        )));
                    }
                    let bus = target.and_then(|t| t.attribute("bus")).unwrap_or("virtio");
                    let bus = match bus {
                        "virtio" | "scsi" | "sata" | "ide" | "nvme" => bus.to_string(),
                        other => {
                            not_carried.push(format!("<disk> {dev} on bus '{}' (attached as virtio)", shown(other)));
                            "virtio".to_string()
                        }
                    };
                    let format = device
                        .children()
                        .find(|n| n.has_tag_name("driver"))
                        .and_then(|d| d.attribute("type"))
                        .map(|declared| {
                            declared.parse::<DiskFormat>().map_err(|e| {
                                import_error(format!("domain XML: <disk> {dev}: <driver type>: {}", shown(&e)))
                            })
                        })
                        .transpose()?;
                    disks.push(ImportedDisk {
                        label: format!("<disk> {dev}"),
                        source: resolved,
                        format,
                        bus,
                        host_device,
                        empty_bytes: None,
                    });
                }
                "interface" => {
                    let kind = device.attribute("type").unwrap_or("?");
                    if kind == "hostdev" || kind == "vdpa" {
                        not_carried.push(format!("<interface type='{kind}'>: passes a host device through"));
                        continue;
                    }
                    let label = format!("<interface type='{}'>", shown(kind));
                    let model = device
                        .children()
                        .find(|n| n.has_tag_name("model"))
                        .and_then(|m| m.attribute("type"))
                        .unwrap_or("virtio")
                        .to_string();
                    let mac = device
                        .children()
                        .find(|n| n.has_tag_name("mac"))
                        .and_then(|m| m.attribute("address"))
                        .map(|text| {
                            parse_mac(text).ok_or_else(|| {
                                import_error(format!(
                                    "domain XML: {label} <mac address='{}'> is not a unicast MAC address",
                                    shown(text)
                                ))
                            })
                        })
                        .transpose()?;
                    let network = device
                        .children()
                        .find(|n| n.has_tag_name("source"))
                        .and_then(|s| s.attribute("network").or(s.attribute("bridge")))
                        .map(str::to_string);
                    interfaces.push(ImportedInterface {
                        label,
                        model,
                        mac,
                        network,
                    });
                }
                "emulator" | "serial" | "console" | "controller" | "memballoon" | "rng" | "input" => {}
                other => not_carried.push(format!("<devices>/<{other}>")),
            }
        }
    }
    for element in [
        "cputune",
        "numatune",
        "memoryBacking",
        "cpu",
        "iothreads",
        "sysinfo",
        "seclabel",
    ] {
        if child(element).is_some() {
            not_carried.push(format!("<{element}>"));
        }
    }
    Ok(ImportedVm {
        name,
        uuid,
        vcpus,
        max_vcpus,
        cores_per_socket: None,
        memory_bytes: current_memory,
        max_memory_bytes: max_memory,
        machine: machine.to_string(),
        disks,
        interfaces,
        not_carried_over: not_carried,
    })
}

/// Parses the `key = "value"` lines of a .vmx (keys are case-insensitive).
fn vmx_entries(text: &str) -> Result<BTreeMap<String, String>, VmError> {
    let mut entries = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            import_error(format!(
                ".vmx line {}: '{}' is not key = \"value\"",
                number + 1,
                shown(line)
            ))
        })?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| {
                import_error(format!(
                    ".vmx line {}: the value of {} is not quoted",
                    number + 1,
                    shown(key.trim())
                ))
            })?;
        entries.insert(key.trim().to_ascii_lowercase(), value.to_string());
    }
    Ok(entries)
}

/// What a .vmx disk slot holds, told apart as libvirt's VMX driver does.
enum VmxDevice {
    HardDisk,
    /// A cdrom with an image file, an empty drive or the client's drive.
    Cdrom,
    /// The host's own device (`/vmfs/devices/cdrom/...`, `/dev/scd0`, raw device mappings).
    HostDevice,
}

fn classify_vmx_device(device_type: &str, file: &str) -> VmxDevice {
    let host_path = file.starts_with("/vmfs/devices/") || file.starts_with("/dev/");
    match device_type {
        "scsi-passthru" | "rawdisk" | "cdrom-raw" | "scsi-passthru-rdm" | "scsi-nonpassthru-rdm" => {
            VmxDevice::HostDevice
        }
        _ if host_path => VmxDevice::HostDevice,
        t if t.contains("cdrom") => VmxDevice::Cdrom,
        _ if file.to_ascii_lowercase().ends_with(".iso") => VmxDevice::Cdrom,
        _ => VmxDevice::HardDisk,
    }
}

/// Parses a VMware .vmx; disk paths are relative to the .vmx's folder.
pub fn parse_vmx(text: &str, base_dir: &Path) -> Result<ImportedVm, VmError> {
    let entries = vmx_entries(text)?;
    let get = |key: &str| entries.get(&key.to_ascii_lowercase()).map(String::as_str);
    let is_true = |key: &str| get(key).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut not_carried = Vec::new();
    let name = get("displayName")
        .filter(|n| !n.is_empty())
        .unwrap_or("imported-vm")
        .to_string();
    let vcpus = match get("numvcpus") {
        Some(value) => vcpu_count(value, |v| format!(".vmx: numvcpus = \"{v}\""))?,
        None => 1,
    };
    let cores = match get("cpuid.coresPerSocket") {
        Some(value) => vcpu_count(value, |v| format!(".vmx: cpuid.coresPerSocket = \"{v}\""))?,
        None => 1,
    };
    if !vcpus.is_multiple_of(cores) {
        return Err(import_error(format!(
            ".vmx: cpuid.coresPerSocket = \"{cores}\" does not divide numvcpus = \"{vcpus}\""
        )));
    }
    // memSize is in MiB; VMware's default is 32.
    let memory_bytes = match get("memSize") {
        None => 32 << 20,
        Some(value) => {
            let too_large = || {
                import_error(format!(
                    ".vmx: memSize = \"{}\" (MiB) is more than a VM can have ({})",
                    shown(value),
                    berth_model::ByteSize(MAX_MEMORY_BYTES)
                ))
            };
            let mib: u64 = value.trim().parse().map_err(|e: std::num::ParseIntError| {
                if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
                    too_large()
                } else {
                    import_error(format!(".vmx: memSize = \"{}\" is not a number of MiB", shown(value)))
                }
            })?;
            if mib == 0 {
                return Err(import_error(".vmx: memSize = \"0\": a VM needs memory"));
            }
            mib.checked_mul(1 << 20)
                .filter(|bytes| *bytes <= MAX_MEMORY_BYTES)
                .ok_or_else(too_large)?
        }
    };
    if get("firmware") == Some("efi") {
        not_carried.push("firmware = \"efi\" (berth boots imported VMs with SeaBIOS)".to_string());
    }
    let mut disks = Vec::new();
    let mut devices: Vec<(String, String)> = entries
        .keys()
        .filter_map(|k| k.strip_suffix(".present").map(str::to_string))
        .filter(|k| k.contains(':'))
        .map(|k| {
            let bus = k.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>();
            (bus, k)
        })
        .collect();
    devices.sort();
    for (bus, device) in devices {
        if !is_true(&format!("{device}.present")) {
            continue;
        }
        let device_type = get(&format!("{device}.deviceType"))
            .unwrap_or("disk")
            .to_ascii_lowercase();
        let file = get(&format!("{device}.fileName")).unwrap_or("");
        let label = shown(&device);
        match classify_vmx_device(&device_type, file) {
            VmxDevice::HostDevice => {
                not_carried.push(format!(
                    "{label} ({}) passes the host device '{}' through",
                    shown(&device_type),
                    shown(file)
                ));
                continue;
            }
            VmxDevice::Cdrom => {
                not_carried.push(format!("{label} ({}) cdrom", shown(&device_type)));
                continue;
            }
            VmxDevice::HardDisk => {}
        }
        if !matches!(bus.as_str(), "scsi" | "sata" | "ide" | "nvme") {
            not_carried.push(format!("{label} on bus {}", shown(&bus)));
            continue;
        }
        if file.is_empty() {
            return Err(import_error(format!(".vmx: {label}.fileName is missing")));
        }
        let path = resolve(base_dir, file);
        if !path.exists() {
            return Err(import_error(format!(
                ".vmx: {label}.fileName = \"{}\" does not exist next to the .vmx; copy the disk there",
                shown(file)
            )));
        }
        disks.push(ImportedDisk {
            label,
            source: path,
            format: Some(DiskFormat::Vmdk),
            bus,
            host_device: false,
            empty_bytes: None,
        });
    }
    let mut interfaces = Vec::new();
    for index in 0..10 {
        let prefix = format!("ethernet{index}");
        if !is_true(&format!("{prefix}.present")) {
            continue;
        }
        let model = get(&format!("{prefix}.virtualDev")).unwrap_or("e1000").to_string();
        let mac = [".generatedAddress", ".address"]
            .iter()
            .find_map(|suffix| get(&format!("{prefix}{suffix}")).map(|value| (suffix, value)))
            .map(|(suffix, value)| {
                parse_mac(value).ok_or_else(|| {
                    import_error(format!(
                        ".vmx: {prefix}{suffix} = \"{}\" is not a unicast MAC address",
                        shown(value)
                    ))
                })
            })
            .transpose()?;
        interfaces.push(ImportedInterface {
            label: format!("{prefix} ({})", shown(&model)),
            model,
            mac,
            network: get(&format!("{prefix}.networkName")).map(str::to_string),
        });
    }
    for (key, what) in [
        ("sound.present", "sound card"),
        ("usb.present", "USB controller"),
        ("floppy0.present", "floppy"),
        ("serial0.present", "serial port"),
        ("sharedFolder0.present", "shared folder"),
    ] {
        if is_true(key) {
            not_carried.push(format!("{key} ({what})"));
        }
    }
    // libvirt takes the domain's UUID from vc.uuid (vCenter's), else uuid.bios.
    let mut uuid = None;
    for key in ["uuid.bios", "vc.uuid"] {
        if let Some(value) = get(key) {
            let parsed = parse_uuid(value).ok_or_else(|| {
                import_error(format!(
                    ".vmx: {key} = \"{}\" is not a UUID (32 hex digits, as \"56 4d 70 88 01 a1 98 32-e7 2b 67 90 c7 3b 64 ea\")",
                    shown(value)
                ))
            })?;
            uuid = Some(parsed);
        }
    }
    Ok(ImportedVm {
        name,
        uuid,
        vcpus,
        max_vcpus: vcpus,
        cores_per_socket: (cores > 1).then_some(cores),
        memory_bytes,
        max_memory_bytes: memory_bytes,
        machine: "q35".into(),
        disks,
        interfaces,
        not_carried_over: not_carried,
    })
}

/// Reads either format, told apart by content. Disk paths are resolved against the file's
/// canonical directory.
pub fn parse_file(path: &Path) -> Result<ImportedVm, VmError> {
    let text = read_definition(path)?;
    let base = definition_dir(path)?;
    if text.trim_start().starts_with('<') {
        parse_libvirt(&text, &base)
    } else {
        parse_vmx(&text, &base)
    }
}

/// Reads a definition of any kind berth imports: a libvirt domain XML, a `.vmx`, or an OVF
/// descriptor (its manifest verified when there is one; an OVA is unpacked first with
/// `ovf::unpack_ova`). An OVF package may define several machines.
pub fn read_machines(path: &Path, choice: &crate::ovf::OvfChoice) -> Result<Vec<ImportedVm>, VmError> {
    let text = read_definition(path)?;
    let base = definition_dir(path)?;
    let ovf_named = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("ovf"));
    if ovf_named || crate::ovf::looks_like_ovf(&text) {
        crate::ovf::verify_manifest(path, &text)?;
        return crate::ovf::parse_ovf(&text, &base, choice);
    }
    if choice.vm.is_some() || choice.deployment.is_some() {
        return Err(import_error(
            "--vm and --deployment choose among an OVF package's machines and options; this is not an OVF descriptor",
        ));
    }
    if text.trim_start().starts_with('<') {
        Ok(vec![parse_libvirt(&text, &base)?])
    } else {
        Ok(vec![parse_vmx(&text, &base)?])
    }
}

/// A domain XML or .vmx is a few KiB: larger files are not definitions, and are never read
/// whole (a disk image or /dev/zero would fill the daemon's memory).
pub const MAX_DEFINITION_BYTES: u64 = 4 << 20;

fn read_definition(path: &Path) -> Result<String, VmError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let reading = |e: std::io::Error| import_error(format!("reading {}: {e}", path.display()));
    // Non-blocking, so that a FIFO does not hold the open until a writer comes.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(reading)?;
    if !file.metadata().map_err(reading)?.is_file() {
        return Err(import_error(format!(
            "{} is not a regular file; give a libvirt domain XML, a .vmx, an .ovf or an .ova",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_DEFINITION_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(reading)?;
    if bytes.len() as u64 > MAX_DEFINITION_BYTES {
        return Err(import_error(format!(
            "{} is larger than {}: not a libvirt domain XML, a .vmx or an OVF descriptor",
            path.display(),
            berth_model::ByteSize(MAX_DEFINITION_BYTES)
        )));
    }
    String::from_utf8(bytes).map_err(|_| {
        import_error(format!(
            "{} is not text (UTF-8): not a libvirt domain XML, a .vmx or an OVF descriptor",
            path.display()
        ))
    })
}

/// The canonical directory of a definition file: its disks must be in it (or below).
pub fn definition_dir(path: &Path) -> Result<PathBuf, VmError> {
    let canonical = std::fs::canonicalize(path).map_err(|e| import_error(format!("{}: {e}", path.display())))?;
    Ok(canonical.parent().unwrap_or(Path::new("/")).to_path_buf())
}

/// Checks every disk of an imported machine before anything copies it: a file disk must be
/// in the definition's directory (a definition names its own disks, not the host's files)
/// and pass `disk_source::inspect`; a block device needs `allow_device`.
/// A disk with no file (`empty_bytes`) is None: it is created empty.
pub fn inspect_disks(
    vm: &ImportedVm,
    definition_dir: &Path,
    allow_device: bool,
) -> Result<Vec<Option<DiskSource>>, VmError> {
    vm.disks
        .iter()
        .map(|disk| {
            if disk.empty_bytes.is_some() {
                return Ok(None);
            }
            if disk.host_device {
                if !allow_device {
                    return Err(import_error(format!(
                        "{} is the host block device {}; pass --allow-device to import a physical disk",
                        disk.label,
                        disk.source.display()
                    )));
                }
            } else {
                let canonical = std::fs::canonicalize(&disk.source)
                    .map_err(|e| import_error(format!("{} ({}): {e}", disk.label, disk.source.display())))?;
                if !canonical.starts_with(definition_dir) {
                    return Err(import_error(format!(
                        "{} ({}) is outside the definition's directory {}; put the definition next to its disks or copy the disks there",
                        disk.label,
                        canonical.display(),
                        definition_dir.display()
                    )));
                }
            }
            disk_source::inspect(&disk.source, disk.format, allow_device)
                .map(Some)
                .map_err(|e| import_error(format!("{}: {e}", disk.label)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn only_a_small_regular_file_is_read_as_a_definition() {
        let dir = with_disks(&[]);
        // A sparse disk-sized file: refused after reading a bounded prefix, not read whole.
        let big = dir.join("disk.img");
        std::fs::File::create(&big).unwrap().set_len(64 << 30).unwrap();
        let error = parse_file(&big).unwrap_err().to_string();
        assert!(error.contains("larger than"), "{error}");
        let error = parse_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A directory holding empty stand-ins for the disks a fixture names.
    fn with_disks(names: &[&str]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-import-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in names {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        dir
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn reads_the_libvirt_example() {
        let dir = with_disks(&["vol0"]);
        let text = fixture("libvirt/libvirt-domain.xml").replace(
            "/rhev/data-center/mnt/nfs-server:_export/9f6731d3/images/disk0/vol0",
            &dir.join("vol0").display().to_string(),
        );
        let vm = parse_libvirt(&text, &dir).unwrap();
        assert_eq!((vm.vcpus, vm.max_vcpus), (4, 16));
        assert_eq!(vm.memory_bytes, 8 << 30);
        assert_eq!(vm.max_memory_bytes, 32 << 30);
        assert_eq!(vm.disks[0].bus, "scsi");
        assert_eq!(vm.disks[0].format, Some(DiskFormat::Qcow2));
        assert_eq!(vm.interfaces[0].mac.as_deref(), Some("52:54:00:6b:3c:58"));
        assert_eq!(vm.interfaces[0].network.as_deref(), Some("br0"));
        assert_eq!(vm.uuid.as_deref(), Some("825fcb99-5d1e-4c6e-9a0b-0a3f1c2d7e41"));
        assert_eq!(vm.machine, "q35");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn reads_libvirt_test_domains_as_libvirt_does() {
        let dir = std::env::temp_dir();
        // No disk at all: valid (network boot, disks added later).
        let diskless = parse_libvirt(&fixture("libvirt/graphics-vnc-minimal.xml"), &dir).unwrap();
        assert!(diskless.disks.is_empty());
        assert_eq!((diskless.vcpus, diskless.memory_bytes), (1, 219100 << 10));
        assert_eq!(diskless.machine, "pc");
        // No <vcpu>: libvirt gives it one.
        let no_vcpu = parse_libvirt(&fixture("libvirt/no-vcpu.xml"), &dir).unwrap();
        assert_eq!((no_vcpu.vcpus, no_vcpu.max_vcpus), (1, 1));
        // Only <currentMemory>.
        let perf = parse_libvirt(&fixture("libvirt/domain-perf-simple.xml"), &dir).unwrap();
        assert_eq!(perf.memory_bytes, 219136 << 10);
    }

    #[test]
    fn refuses_bad_libvirt_xml() {
        let dir = std::env::temp_dir();
        let error = |xml: &str| parse_libvirt(xml, &dir).unwrap_err().to_string();
        assert!(error("<domain><name>x</name").contains("domain XML"));
        let missing = "<domain><name>x</name><memory>1024</memory><vcpu>1</vcpu><devices><disk type='file' device='disk'><source file='/nope.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>";
        assert!(error(missing).contains("/nope.qcow2"));
        let bad_vcpu = "<domain><name>x</name><memory>1024</memory><vcpu current='9'>2</vcpu></domain>";
        assert!(error(bad_vcpu).contains("vcpu current"));
        let huge_vcpu = "<domain><name>x</name><memory>1024</memory><vcpu>99999999999999999999999</vcpu></domain>";
        assert!(error(huge_vcpu).contains("at most 255 vCPUs"), "{}", error(huge_vcpu));
        let huge_memory = "<domain><name>x</name><memory unit='TiB'>18446744073709551615</memory></domain>";
        assert!(error(huge_memory).contains("<memory>"), "{}", error(huge_memory));
        let markup = "<domain><name>x</name><uuid>&lt;/uuid&gt;&lt;devices/&gt;</uuid><memory>1024</memory></domain>";
        assert!(error(markup).contains("<uuid>"), "{}", error(markup));
        let mac = "<domain><name>x</name><memory>1024</memory><devices><interface type='network'><mac address='01:00:5e:00:00:01'/></interface></devices></domain>";
        assert!(error(mac).contains("not a unicast MAC"), "{}", error(mac));
        let format = "<domain><name>x</name><memory>1024</memory><devices><disk type='file' device='disk'><driver type='vpc'/><source file='/proc/self/exe'/><target dev='vda'/></disk></devices></domain>";
        assert!(error(format).contains("<driver type>"), "{}", error(format));
    }

    #[test]
    fn reads_vmx_files_from_the_wild_as_libvirt_does() {
        // Each .vmx beside the domain XML libvirt's VMX driver derives from it, and the disk
        // it names (an empty stand-in here).
        for (name, disk) in [
            ("esx-in-the-wild-12", "Auto-esx8.0-rhell9.3-efi-with-empty-cdrom.vmdk"),
            ("esx-in-the-wild-16", "Auto-esx8.0-rhel9.4-efi-nvme-disk.vmdk"),
            ("fusion-in-the-wild-1", "ATTM_VM.vmdk"),
        ] {
            let dir = with_disks(&[disk]);
            let vm = parse_vmx(&fixture(&format!("vmx/{name}.vmx")), &dir).unwrap();
            let xml = fixture(&format!("vmx/{name}.xml"));
            let libvirt = roxmltree::Document::parse(&xml).unwrap();
            let text = |tag: &str| {
                libvirt
                    .descendants()
                    .find(|n| n.has_tag_name(tag))
                    .and_then(|n| n.text())
                    .unwrap_or_default()
                    .to_string()
            };
            assert_eq!(vm.vcpus.to_string(), text("vcpu"), "{name}");
            assert_eq!((vm.memory_bytes >> 10).to_string(), text("memory"), "{name}");
            assert_eq!(vm.uuid.clone().unwrap_or_default(), text("uuid"), "{name}");
            let disks = libvirt
                .descendants()
                .filter(|n| n.has_tag_name("disk") && n.attribute("device") == Some("disk"))
                .count();
            assert_eq!(vm.disks.len(), disks, "{name}");
            let macs: Vec<String> = libvirt
                .descendants()
                .filter(|n| n.has_tag_name("mac"))
                .filter_map(|n| n.attribute("address").map(str::to_string))
                .collect();
            let got: Vec<String> = vm.interfaces.iter().filter_map(|i| i.mac.clone()).collect();
            assert_eq!(got, macs, "{name}");
            std::fs::remove_dir_all(dir).ok();
        }
    }

    #[test]
    fn host_device_passthrough_is_not_carried_over() {
        let dir = std::env::temp_dir();
        for name in ["cdrom-scsi-passthru", "cdrom-ide-device"] {
            let vm = parse_vmx(&fixture(&format!("vmx/{name}.vmx")), &dir).unwrap();
            assert!(vm.disks.is_empty(), "{name}");
            assert!(
                vm.not_carried_over.iter().any(|n| n.contains("passes the host device")),
                "{name}: {:?}",
                vm.not_carried_over
            );
        }
    }

    #[test]
    fn reads_vmx_keys_case_insensitively() {
        let dir = with_disks(&["web.vmdk"]);
        let text = "displayName = \"web\"\nnumvcpus = \"4\"\ncpuid.coresPerSocket = \"2\"\nmemsize = \"1024\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"web.vmdk\"\nsata0:0.present = \"TRUE\"\nsata0:0.deviceType = \"cdrom-image\"\nethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\nethernet0.networkName = \"VM Network\"\nethernet0.generatedAddress = \"00:50:56:95:72:98\"\nfirmware = \"efi\"\n";
        let vm = parse_vmx(text, &dir).unwrap();
        assert_eq!(vm.name, "web");
        assert_eq!((vm.vcpus, vm.cores_per_socket), (4, Some(2)));
        assert_eq!(vm.memory_bytes, 1 << 30);
        assert_eq!(vm.disks.len(), 1);
        assert_eq!(vm.disks[0].bus, "scsi");
        assert_eq!(vm.interfaces[0].network.as_deref(), Some("VM Network"));
        assert!(vm.not_carried_over.iter().any(|n| n.contains("efi")));
        assert!(vm.not_carried_over.iter().any(|n| n.contains("cdrom")));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn refuses_bad_vmx_values_naming_the_key() {
        let dir = std::env::temp_dir();
        let error = |text: &str| parse_vmx(text, &dir).unwrap_err().to_string();
        assert!(error("numvcpus = 4\n").contains("not quoted"));
        assert!(error("scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"gone.vmdk\"\n").contains("scsi0:0.fileName"));
        for (text, expected) in [
            (
                "numvcpus = \"4294967297\"\n",
                ".vmx: numvcpus = \"4294967297\": a VM has at most 255 vCPUs",
            ),
            ("numvcpus = \"99999999999999999999999\"\n", "numvcpus"),
            ("numvcpus = \"0\"\n", "at least 1 vCPU"),
            ("memSize = \"18446744073709551615\"\n", ".vmx: memSize"),
            ("memSize = \"17592186044417\"\n", ".vmx: memSize"),
            ("memSize = \"99999999999999999999999\"\n", ".vmx: memSize"),
            (
                "uuid.bios = \"42 20'/><disk type='file'><source file='/etc/shadow'/></disk><x a='\"\n",
                "uuid.bios",
            ),
            (
                "ethernet0.present = \"TRUE\"\nethernet0.address = \"00:50:56:95:72:98,romfile=/etc/shadow\"\n",
                "ethernet0.address",
            ),
        ] {
            let message = error(text);
            assert!(message.contains(expected), "{text}: {message}");
            assert!(!message.contains('\n'), "one line: {message}");
        }
    }

    #[test]
    fn values_are_shown_without_control_characters() {
        assert_eq!(shown("a\x1b[2Jb"), "a?[2Jb");
        assert!(shown(&"x".repeat(500)).chars().count() <= 121);
        assert_eq!(
            parse_uuid("42 20 fc a7 11 dd d6 7e-19 cc fc ad 0a 37 c3 42").as_deref(),
            Some("4220fca7-11dd-d67e-19cc-fcad0a37c342")
        );
        assert_eq!(parse_mac("00-50-56-95-72-9A").as_deref(), Some("00:50:56:95:72:9a"));
    }
}
