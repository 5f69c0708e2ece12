//! Reading existing machines: libvirt domain XML (`virsh dumpxml`) and VMware `.vmx`. Both
//! become an `ImportedVm`; every setting that berth cannot carry over is listed, and bad
//! input (malformed files, missing disks, more than the host has) names the element or key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_model::instance::VmInterface;

use crate::VmError;

#[derive(Debug, Clone, PartialEq)]
pub struct ImportedDisk {
    pub source: PathBuf,
    /// Format as the source declares it, if it does.
    pub format: Option<String>,
    /// virtio, scsi, sata, ide, nvme
    pub bus: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImportedVm {
    pub name: String,
    pub uuid: Option<String>,
    pub vcpus: u32,
    pub max_vcpus: u32,
    pub cores_per_socket: Option<u32>,
    pub memory_bytes: u64,
    pub max_memory_bytes: u64,
    /// q35 or pc
    pub machine: String,
    pub disks: Vec<ImportedDisk>,
    pub interfaces: Vec<VmInterface>,
    pub not_carried_over: Vec<String>,
}

fn import_error(message: impl Into<String>) -> VmError {
    VmError::Import(message.into())
}

/// Bytes for a libvirt `unit` attribute (KiB when absent).
fn libvirt_bytes(value: &str, unit: Option<&str>, element: &str) -> Result<u64, VmError> {
    let number: u64 = value
        .trim()
        .parse()
        .map_err(|_| import_error(format!("<{element}>: '{value}' is not a number")))?;
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
        other => return Err(import_error(format!("<{element} unit='{other}'>: unknown unit"))),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| import_error(format!("<{element}>: {value} is too large")))
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

    let vcpu = child("vcpu").ok_or_else(|| import_error("domain XML: <vcpu> is missing"))?;
    let max_vcpus: u32 = vcpu
        .text()
        .unwrap_or("")
        .trim()
        .parse()
        .map_err(|_| import_error("domain XML: <vcpu> is not a number"))?;
    let vcpus: u32 = match vcpu.attribute("current") {
        Some(current) => current
            .parse()
            .map_err(|_| import_error(format!("domain XML: <vcpu current='{current}'> is not a number")))?,
        None => max_vcpus,
    };
    if vcpus == 0 || vcpus > max_vcpus {
        return Err(import_error(format!(
            "domain XML: <vcpu current='{vcpus}'> must be between 1 and the maximum {max_vcpus}"
        )));
    }

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
        let mut disk_index = 0;
        for device in devices.children().filter(|n| n.is_element()) {
            match device.tag_name().name() {
                "disk" => {
                    disk_index += 1;
                    let kind = device.attribute("device").unwrap_or("disk");
                    let target = device.children().find(|n| n.has_tag_name("target"));
                    let dev = target.and_then(|t| t.attribute("dev")).unwrap_or("?");
                    if kind != "disk" {
                        not_carried.push(format!("<disk device='{kind}'> {dev}"));
                        continue;
                    }
                    let source = device.children().find(|n| n.has_tag_name("source"));
                    let file = match (device.attribute("type"), source.and_then(|s| s.attribute("file"))) {
                        (Some("file") | None, Some(file)) => file,
                        (kind, _) => {
                            return Err(import_error(format!(
                                "domain XML: <disk type='{}'> {dev} has no <source file=...>; only file-backed disks can be imported",
                                kind.unwrap_or("?")
                            )))
                        }
                    };
                    let path = resolve(base_dir, file);
                    if !path.exists() {
                        return Err(import_error(format!(
                            "domain XML: <disk> {dev}: <source file='{file}'> does not exist; copy the disk next to the XML or fix the path"
                        )));
                    }
                    let bus = target.and_then(|t| t.attribute("bus")).unwrap_or("virtio");
                    let bus = match bus {
                        "virtio" | "scsi" | "sata" | "ide" | "nvme" => bus.to_string(),
                        other => {
                            not_carried.push(format!("<disk> {dev} on bus '{other}' (attached as virtio)"));
                            "virtio".to_string()
                        }
                    };
                    let format = device
                        .children()
                        .find(|n| n.has_tag_name("driver"))
                        .and_then(|d| d.attribute("type"))
                        .map(str::to_string);
                    disks.push(ImportedDisk {
                        source: path,
                        format,
                        bus,
                    });
                }
                "interface" => {
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
                        .map(str::to_string);
                    not_carried.push(format!(
                        "<interface type='{}'> {}: recorded, attached to no network (berth networking is not there yet)",
                        device.attribute("type").unwrap_or("?"),
                        mac.clone().unwrap_or_default()
                    ));
                    interfaces.push(VmInterface { model, mac });
                }
                "emulator" | "serial" | "console" | "controller" | "memballoon" | "rng" | "input" => {}
                other => not_carried.push(format!("<devices>/<{other}>")),
            }
        }
        let _ = disk_index;
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
    if disks.is_empty() {
        return Err(import_error("domain XML: no <disk device='disk'> to boot from"));
    }
    Ok(ImportedVm {
        name,
        uuid: text_of("uuid").map(str::to_string),
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
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| import_error(format!(".vmx line {}: '{line}' is not key = \"value\"", number + 1)))?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| {
                import_error(format!(
                    ".vmx line {}: the value of {} is not quoted",
                    number + 1,
                    key.trim()
                ))
            })?;
        entries.insert(key.trim().to_ascii_lowercase(), value.to_string());
    }
    Ok(entries)
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
    let number = |key: &str, default: u64| -> Result<u64, VmError> {
        match get(key) {
            Some(value) => value
                .parse()
                .map_err(|_| import_error(format!(".vmx: {key} = \"{value}\" is not a number"))),
            None => Ok(default),
        }
    };
    let vcpus = number("numvcpus", 1)? as u32;
    if vcpus == 0 {
        return Err(import_error(".vmx: numvcpus must be at least 1"));
    }
    let cores = number("cpuid.coresPerSocket", 1)? as u32;
    if cores == 0 || !vcpus.is_multiple_of(cores) {
        return Err(import_error(format!(
            ".vmx: cpuid.coresPerSocket = \"{cores}\" does not divide numvcpus = \"{vcpus}\""
        )));
    }
    let memory_mib = number("memSize", 32)?;
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
        if device_type.contains("cdrom") || file.to_ascii_lowercase().ends_with(".iso") {
            not_carried.push(format!("{device} ({device_type}) cdrom"));
            continue;
        }
        if !matches!(bus.as_str(), "scsi" | "sata" | "ide" | "nvme") {
            not_carried.push(format!("{device} on bus {bus}"));
            continue;
        }
        if file.is_empty() {
            return Err(import_error(format!(".vmx: {device}.fileName is missing")));
        }
        let path = resolve(base_dir, file);
        if !path.exists() {
            return Err(import_error(format!(
                ".vmx: {device}.fileName = \"{file}\" does not exist next to the .vmx; copy the disk there"
            )));
        }
        disks.push(ImportedDisk {
            source: path,
            format: Some("vmdk".into()),
            bus,
        });
    }
    let mut interfaces = Vec::new();
    for index in 0..10 {
        let prefix = format!("ethernet{index}");
        if !is_true(&format!("{prefix}.present")) {
            continue;
        }
        let model = get(&format!("{prefix}.virtualDev")).unwrap_or("e1000").to_string();
        let mac = get(&format!("{prefix}.generatedAddress"))
            .or_else(|| get(&format!("{prefix}.address")))
            .map(str::to_string);
        not_carried.push(format!(
            "{prefix} ({model}, network \"{}\"): recorded, attached to no network (berth networking is not there yet)",
            get(&format!("{prefix}.networkName")).unwrap_or("")
        ));
        interfaces.push(VmInterface { model, mac });
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
    if disks.is_empty() {
        return Err(import_error(
            ".vmx: no hard disk (scsiX:Y, sataX:Y, ideX:Y, nvmeX:Y with a .vmdk) to boot from",
        ));
    }
    let uuid = get("uuid.bios").map(|u| {
        let hex: String = u.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        if hex.len() == 32 {
            format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            )
        } else {
            u.to_string()
        }
    });
    Ok(ImportedVm {
        name,
        uuid,
        vcpus,
        max_vcpus: vcpus,
        cores_per_socket: (cores > 1).then_some(cores),
        memory_bytes: memory_mib << 20,
        max_memory_bytes: memory_mib << 20,
        machine: "q35".into(),
        disks,
        interfaces,
        not_carried_over: not_carried,
    })
}

/// Reads either format, told apart by content.
pub fn parse_file(path: &Path) -> Result<ImportedVm, VmError> {
    let text = std::fs::read_to_string(path).map_err(|e| import_error(format!("reading {}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    if text.trim_start().starts_with('<') {
        parse_libvirt(&text, base)
    } else {
        parse_vmx(&text, base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../../../shared/reference/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap_or_default()
    }

    #[test]
    fn reads_the_libvirt_example() {
        let dir = std::env::temp_dir();
        let text = corpus("examples/libvirt-domain.xml").replace(
            "/rhev/data-center/mnt/nfs-server:_export/9f6731d3/images/disk0/vol0",
            "/proc/self/exe",
        );
        if text.is_empty() {
            return;
        }
        let vm = parse_libvirt(&text, &dir).unwrap();
        assert_eq!((vm.vcpus, vm.max_vcpus), (4, 16));
        assert_eq!(vm.memory_bytes, 8 << 30);
        assert_eq!(vm.max_memory_bytes, 32 << 30);
        assert_eq!(vm.disks[0].bus, "scsi");
        assert_eq!(vm.disks[0].format.as_deref(), Some("qcow2"));
        assert_eq!(vm.interfaces[0].mac.as_deref(), Some("52:54:00:6b:3c:58"));
        assert_eq!(vm.machine, "q35");
    }

    #[test]
    fn refuses_bad_libvirt_xml() {
        let dir = std::env::temp_dir();
        assert!(parse_libvirt("<domain><name>x</name", &dir)
            .unwrap_err()
            .to_string()
            .contains("domain XML"));
        let missing = "<domain><name>x</name><memory>1024</memory><vcpu>1</vcpu><devices><disk type='file' device='disk'><source file='/nope.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>";
        assert!(parse_libvirt(missing, &dir)
            .unwrap_err()
            .to_string()
            .contains("/nope.qcow2"));
        let bad_vcpu = "<domain><name>x</name><memory>1024</memory><vcpu current='9'>2</vcpu></domain>";
        assert!(parse_libvirt(bad_vcpu, &dir)
            .unwrap_err()
            .to_string()
            .contains("vcpu current"));
    }

    #[test]
    fn reads_vmx_keys_case_insensitively() {
        let dir = std::env::temp_dir();
        let exe = std::env::current_exe().unwrap();
        let text = format!(
            "displayName = \"web\"\nnumvcpus = \"4\"\ncpuid.coresPerSocket = \"2\"\nmemsize = \"1024\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"{}\"\nsata0:0.present = \"TRUE\"\nsata0:0.deviceType = \"cdrom-image\"\nethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\nethernet0.generatedAddress = \"00:50:56:95:72:98\"\nfirmware = \"efi\"\n",
            exe.display()
        );
        let vm = parse_vmx(&text, &dir).unwrap();
        assert_eq!(vm.name, "web");
        assert_eq!((vm.vcpus, vm.cores_per_socket), (4, Some(2)));
        assert_eq!(vm.memory_bytes, 1 << 30);
        assert_eq!(vm.disks.len(), 1);
        assert_eq!(vm.disks[0].bus, "scsi");
        assert!(vm.not_carried_over.iter().any(|n| n.contains("efi")));
        assert!(vm.not_carried_over.iter().any(|n| n.contains("cdrom")));
        assert!(parse_vmx("numvcpus = 4\n", &dir)
            .unwrap_err()
            .to_string()
            .contains("not quoted"));
        assert!(
            parse_vmx("scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"gone.vmdk\"\n", &dir)
                .unwrap_err()
                .to_string()
                .contains("scsi0:0.fileName")
        );
    }
}
