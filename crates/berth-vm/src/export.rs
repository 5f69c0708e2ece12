//! Writing a VM back out as a libvirt domain XML that `virsh define` accepts. The document
//! is written with quick-xml, which escapes every text and attribute value: nothing stored in
//! a record (a name, a UUID or MAC from an imported file, a path) can add markup.

use std::io;

use berth_model::instance::{VmBoot, VmDetails};
use quick_xml::events::BytesText;
use quick_xml::Writer;

use crate::import::parse_uuid;
use crate::VmError;

/// libvirt's device name for the index-th disk on `bus`.
fn target_dev(bus: &str, index: usize) -> String {
    let prefix = match bus {
        "scsi" | "sata" => "sd",
        "ide" => "hd",
        "nvme" => "nvme",
        _ => "vd",
    };
    if prefix == "nvme" {
        return format!("nvme{index}n1");
    }
    // sda..sdz, then sdaa.. as libvirt counts.
    let mut name = String::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        name.insert(0, (b'a' + (n % 26) as u8) as char);
        n /= 26;
    }
    format!("{prefix}{name}")
}

/// A random (version 4) UUID, for VMs that have none yet.
fn random_uuid() -> String {
    let mut bytes: [u8; 16] = rand_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    parse_uuid(&hex).unwrap_or(hex)
}

/// The NIC models libvirt's schema and QEMU both know; others are written as virtio.
fn nic_model(model: &str) -> &str {
    match model {
        "e1000" | "e1000e" | "rtl8139" | "virtio" | "vmxnet3" | "pcnet" => model,
        _ => "virtio",
    }
}

/// The domain XML. `direct` (kernel, initrd, cmdline) is given for VMs that boot berth's
/// guest agent directly; `network` names the libvirt network its interfaces join.
pub fn libvirt_xml(
    name: &str,
    vm: &VmDetails,
    direct: Option<(&str, &str, &str)>,
    emulator: &str,
    network: &str,
) -> Result<String, VmError> {
    // Escaping cannot make these characters legal: XML 1.0 has no way to write them at all,
    // so a value holding one (a name or path from a hostile record) is refused, not mangled.
    xml_writable("name", name)?;
    xml_writable("emulator", emulator)?;
    xml_writable("network", network)?;
    for disk in &vm.disks {
        xml_writable("disk path", &disk.path)?;
    }
    if let Some((kernel, initrd, cmdline)) = direct {
        xml_writable("kernel", kernel)?;
        xml_writable("initrd", initrd)?;
        xml_writable("kernel command line", cmdline)?;
    }
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
    // Writing into a Vec cannot fail; the io::Result is the writer's interface.
    let _ = write_domain(&mut writer, name, vm, direct, emulator, network);
    let mut xml = String::from_utf8_lossy(&writer.into_inner()).into_owned();
    xml.push('\n');
    Ok(xml)
}

/// Whether XML 1.0 can carry `c` at all (its `Char` production).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn xml_writable(field: &str, value: &str) -> Result<(), VmError> {
    match value.chars().find(|c| !is_xml_char(*c)) {
        None => Ok(()),
        Some(c) => Err(VmError::Import(format!(
            "cannot export: the {field} holds the control character U+{:04X}, which XML cannot carry; rename it",
            c as u32
        ))),
    }
}

fn write_domain(
    w: &mut Writer<Vec<u8>>,
    name: &str,
    vm: &VmDetails,
    direct: Option<(&str, &str, &str)>,
    emulator: &str,
    network: &str,
) -> io::Result<()> {
    let kib = |bytes: u64| (bytes / 1024).to_string();
    // A stored UUID is written only in libvirt's form; anything else gets a fresh one.
    let uuid = vm.uuid.as_deref().and_then(parse_uuid).unwrap_or_else(random_uuid);
    let machine = match vm.machine.as_str() {
        "pc" => "pc",
        "microvm" => "microvm",
        _ => "q35",
    };
    let domain_type = if vm.accel == "kvm" { "kvm" } else { "qemu" };
    w.create_element("domain")
        .with_attribute(("type", domain_type))
        .write_inner_content(|w| {
            w.create_element("name").write_text_content(BytesText::new(name))?;
            w.create_element("uuid").write_text_content(BytesText::new(&uuid))?;
            if vm.memory.max_bytes > vm.memory.current_bytes {
                w.create_element("maxMemory")
                    .with_attributes([("slots", "8"), ("unit", "KiB")])
                    .write_text_content(BytesText::new(&kib(vm.memory.max_bytes)))?;
            }
            for element in ["memory", "currentMemory"] {
                w.create_element(element)
                    .with_attribute(("unit", "KiB"))
                    .write_text_content(BytesText::new(&kib(vm.memory.current_bytes)))?;
            }
            w.create_element("vcpu")
                .with_attributes([
                    ("placement", "static"),
                    ("current", vm.vcpus.current.to_string().as_str()),
                ])
                .write_text_content(BytesText::new(&vm.vcpus.max.to_string()))?;
            w.create_element("os").write_inner_content(|w| {
                w.create_element("type")
                    .with_attributes([("arch", "x86_64"), ("machine", machine)])
                    .write_text_content(BytesText::new("hvm"))?;
                match (vm.boot, direct) {
                    (VmBoot::Image, Some((kernel, initrd, cmdline))) => {
                        w.create_element("kernel").write_text_content(BytesText::new(kernel))?;
                        w.create_element("initrd").write_text_content(BytesText::new(initrd))?;
                        w.create_element("cmdline")
                            .write_text_content(BytesText::new(cmdline))?;
                    }
                    _ => {
                        w.create_element("boot").with_attribute(("dev", "hd")).write_empty()?;
                    }
                }
                Ok(())
            })?;
            if let Some(cores) = vm
                .cores_per_socket
                .filter(|c| *c > 1 && vm.vcpus.max.is_multiple_of(*c))
            {
                let sockets = (vm.vcpus.max / cores).to_string();
                let cores = cores.to_string();
                w.create_element("cpu").write_inner_content(|w| {
                    w.create_element("topology")
                        .with_attributes([
                            ("sockets", sockets.as_str()),
                            ("dies", "1"),
                            ("cores", cores.as_str()),
                            ("threads", "1"),
                        ])
                        .write_empty()?;
                    Ok(())
                })?;
            }
            w.create_element("features").write_inner_content(|w| {
                w.create_element("acpi").write_empty()?;
                Ok(())
            })?;
            for (element, action) in [
                ("on_poweroff", "destroy"),
                ("on_reboot", "restart"),
                ("on_crash", "destroy"),
            ] {
                w.create_element(element).write_text_content(BytesText::new(action))?;
            }
            w.create_element("devices")
                .write_inner_content(|w| write_devices(w, vm, emulator, network))?;
            Ok(())
        })?;
    Ok(())
}

fn write_devices(w: &mut Writer<Vec<u8>>, vm: &VmDetails, emulator: &str, network: &str) -> io::Result<()> {
    w.create_element("emulator")
        .write_text_content(BytesText::new(emulator))?;
    let mut per_bus: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for disk in &vm.disks {
        let bus = match disk.bus.as_str() {
            "virtio" | "scsi" | "sata" | "ide" => disk.bus.as_str(),
            _ => "virtio",
        };
        let format = match disk.format.as_str() {
            "raw" => "raw",
            _ => "qcow2",
        };
        let index = per_bus.entry(bus).or_default();
        let dev = target_dev(bus, *index);
        *index += 1;
        w.create_element("disk")
            .with_attributes([("type", "file"), ("device", "disk")])
            .write_inner_content(|w| {
                w.create_element("driver")
                    .with_attributes([("name", "qemu"), ("type", format)])
                    .write_empty()?;
                w.create_element("source")
                    .with_attribute(("file", disk.path.as_str()))
                    .write_empty()?;
                w.create_element("target")
                    .with_attributes([("dev", dev.as_str()), ("bus", bus)])
                    .write_empty()?;
                Ok(())
            })?;
    }
    for interface in &vm.interfaces {
        w.create_element("interface")
            .with_attribute(("type", "network"))
            .write_inner_content(|w| {
                if let Some(mac) = interface.mac.as_deref().and_then(crate::import::parse_mac) {
                    w.create_element("mac")
                        .with_attribute(("address", mac.as_str()))
                        .write_empty()?;
                }
                w.create_element("source")
                    .with_attribute(("network", network))
                    .write_empty()?;
                w.create_element("model")
                    .with_attribute(("type", nic_model(&interface.model)))
                    .write_empty()?;
                Ok(())
            })?;
    }
    w.create_element("serial")
        .with_attribute(("type", "pty"))
        .write_inner_content(|w| {
            w.create_element("target").with_attribute(("port", "0")).write_empty()?;
            Ok(())
        })?;
    w.create_element("console")
        .with_attribute(("type", "pty"))
        .write_inner_content(|w| {
            w.create_element("target")
                .with_attributes([("type", "serial"), ("port", "0")])
                .write_empty()?;
            Ok(())
        })?;
    Ok(())
}

fn rand_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if let Ok(mut file) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = file.read_exact(&mut bytes);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::instance::{VcpuCount, VmDisk, VmInterface, VmMemory};

    fn vm(uuid: &str) -> VmDetails {
        VmDetails {
            boot: VmBoot::Firmware,
            accel: "tcg".into(),
            machine: "q35".into(),
            minimal_chipset: false,
            qboot: false,
            agent_acknowledges_sessions: false,
            vcpus: VcpuCount { current: 1, max: 2 },
            cores_per_socket: None,
            memory: VmMemory {
                current_bytes: 128 << 20,
                max_bytes: 256 << 20,
            },
            disks: vec![VmDisk {
                path: "/var/lib/berth/a'b\"<c>&.qcow2".into(),
                format: "qcow2".into(),
                size_bytes: 1 << 20,
                backing: None,
                bus: "scsi".into(),
                ephemeral: false,
            }],
            qmp_socket: String::new(),
            interfaces: vec![VmInterface {
                model: "vmxnet3".into(),
                mac: Some("52:54:00:6b:3c:58'/><x y='".into()),
            }],
            imported_from: None,
            uuid: Some(uuid.into()),
            snapshots: Vec::new(),
            cloud_init: None,
            firmware: None,
        }
    }

    #[test]
    fn values_cannot_add_markup() {
        let hostile = "42 20</uuid><devices><disk type='file'><source file='/etc/shadow'/></disk></devices><uuid>";
        let xml = libvirt_xml("n<a>m&e", &vm(hostile), None, "/usr/bin/qemu-system-x86_64", "default").unwrap();
        let document = roxmltree::Document::parse(&xml).unwrap();
        let disks: Vec<_> = document.descendants().filter(|n| n.has_tag_name("disk")).collect();
        assert_eq!(disks.len(), 1, "{xml}");
        assert!(!xml.contains("/etc/shadow"), "{xml}");
        let source = document.descendants().find(|n| n.has_tag_name("source")).unwrap();
        assert_eq!(source.attribute("file"), Some("/var/lib/berth/a'b\"<c>&.qcow2"));
        let name = document.descendants().find(|n| n.has_tag_name("name")).unwrap();
        assert_eq!(name.text(), Some("n<a>m&e"));
        let uuid = document
            .descendants()
            .find(|n| n.has_tag_name("uuid"))
            .unwrap()
            .text()
            .unwrap();
        assert!(parse_uuid(uuid).as_deref() == Some(uuid), "a fresh UUID: {uuid}");
        assert!(
            !document.descendants().any(|n| n.has_tag_name("mac")),
            "a bad MAC is left out"
        );
    }

    #[test]
    fn target_names_count_as_libvirt_does() {
        assert_eq!(target_dev("scsi", 0), "sda");
        assert_eq!(target_dev("virtio", 25), "vdz");
        assert_eq!(target_dev("virtio", 26), "vdaa");
        assert_eq!(target_dev("nvme", 1), "nvme1n1");
    }

    #[test]
    fn values_xml_cannot_carry_are_refused_naming_the_field() {
        let error = libvirt_xml("tes\u{1}t", &vm("x"), None, "/usr/bin/qemu-system-x86_64", "default").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("the name holds the control character U+0001"),
            "{error}"
        );
        let mut hostile = vm("x");
        hostile.disks[0].path = "/var/lib/berth/d\u{0}isk".into();
        let error = libvirt_xml("ok", &hostile, None, "/usr/bin/qemu-system-x86_64", "default").unwrap_err();
        assert!(error.to_string().contains("disk path"), "{error}");
    }
}
