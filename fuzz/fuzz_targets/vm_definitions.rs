//! VM definition files (libvirt domain XML, VMware .vmx, OVF descriptors) are hostile: they parse or fail with
//! an error, never a panic or a wrapped number; and whatever they carry, the libvirt XML berth
//! exports from them is well-formed and holds exactly the disks and interfaces imported (no
//! markup injected through a value), or it is refused because a value holds a character
//! XML cannot carry.
#![no_main]

use std::path::Path;

use berth_model::instance::{VcpuCount, VmBoot, VmDetails, VmDisk, VmInterface, VmMemory};
use berth_vm::import::{parse_libvirt, parse_vmx, ImportedVm};
use libfuzzer_sys::fuzz_target;

fn exported(vm: &ImportedVm) -> Result<String, berth_vm::VmError> {
    let details = VmDetails {
        boot: VmBoot::Firmware,
        accel: "tcg".into(),
        machine: vm.machine.clone(),
        minimal_chipset: false,
        qboot: false,
        agent_acknowledges_sessions: false,
        vcpus: VcpuCount {
            current: vm.vcpus,
            max: vm.max_vcpus,
        },
        cores_per_socket: vm.cores_per_socket,
        memory: VmMemory {
            current_bytes: vm.memory_bytes,
            max_bytes: vm.max_memory_bytes,
        },
        disks: vm
            .disks
            .iter()
            .map(|disk| VmDisk {
                path: disk.source.display().to_string(),
                format: "qcow2".into(),
                size_bytes: 1 << 30,
                backing: None,
                bus: disk.bus.clone(),
                ephemeral: false,
            })
            .collect(),
        qmp_socket: "/run/berth/fuzz/qmp.sock".into(),
        interfaces: vm
            .interfaces
            .iter()
            .map(|nic| VmInterface {
                model: nic.model.clone(),
                mac: nic.mac.clone(),
            })
            .collect(),
        imported_from: None,
        uuid: vm.uuid.clone(),
        snapshots: Vec::new(),
        cloud_init: None,
        firmware: None,
    };
    berth_vm::export::libvirt_xml(&vm.name, &details, None, "/usr/bin/qemu-system-x86_64", "default")
}

fn check(vm: &ImportedVm) {
    assert!(vm.vcpus >= 1 && vm.vcpus <= vm.max_vcpus.max(vm.vcpus));
    assert!(vm.memory_bytes <= vm.max_memory_bytes.max(vm.memory_bytes));
    let xml = match exported(vm) {
        Ok(xml) => xml,
        // Refused only for a value XML cannot carry at all (the daemon's names never do).
        Err(_) => {
            assert!(vm.name.chars().any(|c| !berth_vm::export::is_xml_char(c)));
            return;
        }
    };
    let document = roxmltree::Document::parse(&xml).expect("the exported XML is well-formed");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "domain");
    let count = |tag: &str| document.descendants().filter(|n| n.has_tag_name(tag)).count();
    assert_eq!(count("disk"), vm.disks.len(), "disks in the export: {xml}");
    assert_eq!(
        count("interface"),
        vm.interfaces.len(),
        "interfaces in the export: {xml}"
    );
    assert_eq!(count("domain"), 1);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let dir = Path::new("/nonexistent-berth-fuzz");
    if let Ok(vm) = parse_libvirt(text, dir) {
        check(&vm);
    }
    if let Ok(vm) = parse_vmx(text, dir) {
        check(&vm);
    }
    if let Ok(vms) = berth_vm::ovf::parse_ovf(text, dir, &berth_vm::ovf::OvfChoice::default()) {
        for vm in &vms {
            check(vm);
        }
    }
});
