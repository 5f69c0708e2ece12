//! Writing a VM back out as a libvirt domain XML that `virsh define` accepts.

use berth_model::instance::{VmBoot, VmDetails};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

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
    format!("{prefix}{}", (b'a' + index as u8) as char)
}

/// The domain XML. `kernel`, `initrd` and `cmdline` are given for VMs that boot berth's
/// guest agent directly.
pub fn libvirt_xml(name: &str, vm: &VmDetails, direct: Option<(&str, &str, &str)>, emulator: &str) -> String {
    let kib = |bytes: u64| bytes / 1024;
    let uuid = vm.uuid.clone().unwrap_or_else(|| {
        let bytes: [u8; 16] = rand_bytes();
        let hex = bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        format!(
            "{}-{}-4{}-a{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        )
    });
    let machine = match vm.machine.as_str() {
        "pc" => "pc",
        "microvm" => "microvm",
        _ => "q35",
    };
    let mut xml = String::new();
    xml.push_str(&format!(
        "<domain type='{}'>\n",
        if vm.accel == "kvm" { "kvm" } else { "qemu" }
    ));
    xml.push_str(&format!("  <name>{}</name>\n  <uuid>{uuid}</uuid>\n", escape(name)));
    if vm.memory.max_bytes > vm.memory.current_bytes {
        xml.push_str(&format!(
            "  <maxMemory slots='8' unit='KiB'>{}</maxMemory>\n",
            kib(vm.memory.max_bytes)
        ));
    }
    xml.push_str(&format!(
        "  <memory unit='KiB'>{}</memory>\n",
        kib(vm.memory.current_bytes)
    ));
    xml.push_str(&format!(
        "  <currentMemory unit='KiB'>{}</currentMemory>\n",
        kib(vm.memory.current_bytes)
    ));
    xml.push_str(&format!(
        "  <vcpu placement='static' current='{}'>{}</vcpu>\n",
        vm.vcpus.current, vm.vcpus.max
    ));
    xml.push_str(&format!(
        "  <os>\n    <type arch='x86_64' machine='{machine}'>hvm</type>\n"
    ));
    match (vm.boot, direct) {
        (VmBoot::Image, Some((kernel, initrd, cmdline))) => {
            xml.push_str(&format!("    <kernel>{}</kernel>\n", escape(kernel)));
            xml.push_str(&format!("    <initrd>{}</initrd>\n", escape(initrd)));
            xml.push_str(&format!("    <cmdline>{}</cmdline>\n", escape(cmdline)));
        }
        _ => xml.push_str("    <boot dev='hd'/>\n"),
    }
    xml.push_str("  </os>\n");
    if let Some(cores) = vm
        .cores_per_socket
        .filter(|c| *c > 1 && vm.vcpus.max.is_multiple_of(*c))
    {
        xml.push_str(&format!(
            "  <cpu>\n    <topology sockets='{}' dies='1' cores='{cores}' threads='1'/>\n  </cpu>\n",
            vm.vcpus.max / cores
        ));
    }
    xml.push_str("  <features>\n    <acpi/>\n  </features>\n");
    xml.push_str(
        "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n",
    );
    xml.push_str(&format!("  <devices>\n    <emulator>{}</emulator>\n", escape(emulator)));
    let mut per_bus: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for disk in &vm.disks {
        let bus = match disk.bus.as_str() {
            "virtio" | "scsi" | "sata" | "ide" => disk.bus.as_str(),
            _ => "virtio",
        };
        let index = per_bus.entry(bus).or_default();
        xml.push_str("    <disk type='file' device='disk'>\n");
        xml.push_str(&format!(
            "      <driver name='qemu' type='{}'/>\n",
            escape(&disk.format)
        ));
        xml.push_str(&format!("      <source file='{}'/>\n", escape(&disk.path)));
        xml.push_str(&format!(
            "      <target dev='{}' bus='{bus}'/>\n",
            target_dev(bus, *index)
        ));
        xml.push_str("    </disk>\n");
        *index += 1;
    }
    for interface in &vm.interfaces {
        xml.push_str("    <interface type='network'>\n");
        if let Some(mac) = &interface.mac {
            xml.push_str(&format!("      <mac address='{}'/>\n", escape(mac)));
        }
        xml.push_str("      <source network='default'/>\n");
        let model = match interface.model.as_str() {
            "e1000" | "e1000e" | "rtl8139" | "virtio" => interface.model.as_str(),
            _ => "virtio",
        };
        xml.push_str(&format!("      <model type='{model}'/>\n    </interface>\n"));
    }
    xml.push_str("    <serial type='pty'>\n      <target port='0'/>\n    </serial>\n");
    xml.push_str("    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n");
    xml.push_str("  </devices>\n</domain>\n");
    xml
}

fn rand_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if let Ok(mut file) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = file.read_exact(&mut bytes);
    }
    bytes
}
