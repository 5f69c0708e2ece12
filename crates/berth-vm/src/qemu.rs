//! The qemu-system-x86_64 command line for a VM: machine, accelerator, CPUs and memory with
//! their hotplug maximums, disks, the consoles and the control sockets.

use std::path::{Path, PathBuf};

use berth_model::instance::{VmBoot, VmDetails};

pub const QEMU: &str = "qemu-system-x86_64";

/// Descriptors qemu writes the guest's serial console and status port to: pipes the
/// supervisor drains into capped files (`VmWorkload`), never files qemu grows itself.
pub const CONSOLE_FD: i32 = 3;
pub const STATUS_FD: i32 = 4;

/// Files of a VM's instance directory that qemu uses.
pub struct VmPaths {
    pub qmp: PathBuf,
    pub exec: PathBuf,
    pub status: PathBuf,
    pub console: PathBuf,
    pub config_disk: PathBuf,
    /// cloud-init's NoCloud seed (`cidata`), for firmware-booted VMs that have one.
    pub cidata: PathBuf,
    /// OVMF's variable store of a UEFI VM (`firmware::ensure_vars`).
    pub uefi_vars: PathBuf,
}

impl VmPaths {
    pub fn new(dir: &Path) -> VmPaths {
        VmPaths {
            qmp: dir.join("qmp.sock"),
            exec: dir.join("exec.sock"),
            status: dir.join("guest-status"),
            console: dir.join("console.log"),
            config_disk: dir.join("config.raw"),
            cidata: dir.join("cidata.img"),
            uefi_vars: dir.join("OVMF_VARS.fd"),
        }
    }
}

/// Kernel and initramfs for VMs that boot berth's guest agent.
pub struct DirectBoot {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// The guest kernel's command line for a VM booting berth's agent. Beyond the console and
/// the agent as init, it skips boot work that buys nothing in a VM that runs one workload,
/// measured under TCG where every instruction is emulated (bench/vm-boot.sh):
/// - `cryptomgr.notests`: Debian's kernel self-tests its crypto algorithms at every boot
///   (0.3 s under TCG); the host's kernel has tested the same code.
/// - Under TCG only (KVM guests get these from the hypervisor in microseconds):
///   `tsc_early_khz` with the host's TSC rate, which TCG guests read unscaled (calibrating
///   against the emulated PIT/HPET took 75 ms); `no_timer_check` (the IO-APIC timer probe,
///   20 ms); `init_on_alloc=0` (zeroing every page the booting kernel allocates, 0.1 s: the
///   guest holds one workload, with nobody else's data to leak); and for a VM that can never
///   have a second vCPU, `nolapic_timer`, which keeps time with the HPET rather than
///   calibrating the local APIC timer against it (0.1 s).
pub fn kernel_command_line(details: &VmDetails) -> String {
    let mut line = String::from("console=ttyS0 quiet loglevel=3 panic=-1 reboot=t rdinit=/init cryptomgr.notests");
    if details.accel != "kvm" {
        if let Some(khz) = crate::accel::host_tsc_khz_if_measured() {
            line.push_str(&format!(" tsc_early_khz={khz}"));
        }
        line.push_str(" no_timer_check init_on_alloc=0");
        if details.vcpus.max <= 1 {
            line.push_str(" nolapic_timer");
        }
    }
    line
}

/// QEMU's device for a NIC model as libvirt and VMware name them; None for models QEMU has
/// no device for (such a NIC is attached as virtio).
pub fn nic_device(model: &str) -> Option<&'static str> {
    Some(match model.to_ascii_lowercase().as_str() {
        "virtio" | "virtio-net" => "virtio-net-pci",
        "e1000" | "e1000-82540em" => "e1000",
        "e1000e" => "e1000e",
        "rtl8139" => "rtl8139",
        "vmxnet3" => "vmxnet3",
        "pcnet" | "vlance" => "pcnet",
        _ => return None,
    })
}

/// `-device` for a disk; the first disk of a firmware-booted VM is the boot disk.
fn bus_device(machine: &str, bus: &str, drive: &str, index: usize, firmware: bool) -> Vec<String> {
    let boot = if index == 0 && firmware { ",bootindex=0" } else { "" };
    match (machine, bus) {
        ("microvm", _) => vec!["-device".into(), format!("virtio-blk-device,drive={drive}")],
        (_, "ide") | (_, "sata") => vec!["-device".into(), format!("ide-hd,drive={drive},bus=ide.{index}{boot}")],
        (_, "scsi") => vec!["-device".into(), format!("scsi-hd,drive={drive},bus=scsi0.0{boot}")],
        (_, "nvme") => vec![
            "-device".into(),
            format!("nvme,drive={drive},serial=berth{index}{boot}"),
        ],
        _ => vec!["-device".into(), format!("virtio-blk-pci,drive={drive}{boot}")],
    }
}

/// qboot, from Debian's qemu-system-data: firmware that only loads the kernel QEMU hands it
/// (and QEMU's ACPI tables), for VMs booted from container images.
pub const QBOOT_ROM: &str = "/usr/share/qemu/qboot.rom";

/// The id of the memory backend of a VM whose memory is shared (see `command_line`).
pub const SHARED_MEMORY_ID: &str = "ram0";

/// The full command line. `shared_memory` puts the guest's RAM on a shared memfd, which
/// vhost-user devices (virtiofs) need to reach it.
pub fn command_line(
    name: &str,
    details: &VmDetails,
    paths: &VmPaths,
    direct: Option<&DirectBoot>,
    shared_memory: bool,
) -> Vec<String> {
    let machine = details.machine.as_str();
    let mib = |bytes: u64| bytes / (1 << 20);
    let mut args: Vec<String> = vec![QEMU.into(), "-name".into(), format!("guest={name},debug-threads=on")];
    let mut machine_arg = if machine == "microvm" {
        "microvm,acpi=on".to_string()
    } else if details.minimal_chipset {
        format!("{machine},sata=off,smbus=off,i8042=off,vmport=off")
    } else {
        machine.to_string()
    };
    if shared_memory {
        args.extend([
            "-object".into(),
            format!(
                "memory-backend-memfd,id={SHARED_MEMORY_ID},size={}M,share=on",
                mib(details.memory.current_bytes)
            ),
        ]);
        machine_arg.push_str(&format!(",memory-backend={SHARED_MEMORY_ID}"));
    }
    args.extend(["-machine".into(), machine_arg]);
    if details.qboot {
        args.extend(["-bios".into(), QBOOT_ROM.into()]);
    }
    if details.accel == "kvm" {
        args.extend(["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]);
    } else {
        // A small translation cache keeps qemu's memory down: 32 MiB per vCPU (at most 256),
        // as much as a booting guest kernel fills (16 made the boot 15% slower by flushing it;
        // bench/vm-boot.sh). QEMU 7.2 splits it into regions (8 per possible vCPU) and aborts a vCPU
        // hot-add when the running vCPUs hold every region (tcg_region_initial_alloc__locked),
        // which a busy guest reaches with 64 MiB: VMs that may hot-add vCPUs get regions big
        // enough not to run out.
        let tb_mib = if details.vcpus.max > details.vcpus.current {
            512
        } else {
            (32 * details.vcpus.max.max(1)).min(256)
        };
        args.extend([
            "-accel".into(),
            format!("tcg,thread=multi,tb-size={tb_mib}"),
            "-cpu".into(),
            "max".into(),
        ]);
    }
    let memory = if details.memory.max_bytes > details.memory.current_bytes {
        format!(
            "{}M,slots=8,maxmem={}M",
            mib(details.memory.current_bytes),
            mib(details.memory.max_bytes)
        )
    } else {
        format!("{}M", mib(details.memory.current_bytes))
    };
    args.extend(["-m".into(), memory]);
    let topology = match details.cores_per_socket {
        Some(cores) if cores > 1 && details.vcpus.max.is_multiple_of(cores) => {
            format!(",sockets={},cores={cores},threads=1", details.vcpus.max / cores)
        }
        _ => String::new(),
    };
    args.extend([
        "-smp".into(),
        format!("{},maxcpus={}{topology}", details.vcpus.current, details.vcpus.max),
    ]);
    // QEMU's own seccomp sandbox, as libvirt turns it on: a compromised device model cannot
    // gain privileges, spawn programs or change scheduling.
    args.extend(
        [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args.extend([
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", paths.qmp.display()),
    ]);
    let serial_bus = if machine == "microvm" {
        "virtio-serial-device"
    } else {
        "virtio-serial-pci"
    };
    match (details.boot, direct) {
        (VmBoot::Image, Some(direct)) => {
            args.extend([
                "-no-reboot".into(),
                "-kernel".into(),
                direct.kernel.display().to_string(),
            ]);
            args.extend(["-initrd".into(), direct.initramfs.display().to_string()]);
            args.extend(["-append".into(), kernel_command_line(details)]);
            // The kernel's console goes to the supervisor, which caps it in console.log; the
            // program's stdio to hvc0/hvc1.
            args.extend(["-serial".into(), format!("file:/dev/fd/{CONSOLE_FD}")]);
            args.extend(["-device".into(), serial_bus.into()]);
            args.extend(["-chardev".into(), "stdio,id=out,signal=off".into()]);
            args.extend(["-device".into(), "virtconsole,chardev=out".into()]);
            args.extend(["-chardev".into(), "file,id=err,path=/dev/stderr".into()]);
            args.extend(["-device".into(), "virtconsole,chardev=err".into()]);
            args.extend(["-chardev".into(), format!("file,id=status,path=/dev/fd/{STATUS_FD}")]);
            args.extend([
                "-device".into(),
                format!("virtserialport,chardev=status,name={}", crate::agent::STATUS_PORT),
            ]);
            args.extend([
                "-chardev".into(),
                format!("socket,id=exec,path={},server=on,wait=off", paths.exec.display()),
            ]);
            args.extend([
                "-device".into(),
                format!("virtserialport,chardev=exec,name={}", crate::agent::EXEC_PORT),
            ]);
        }
        _ => {
            // Firmware boot: the serial port is the console, on the supervisor's stdio.
            args.extend(["-chardev".into(), "stdio,id=con,signal=off".into()]);
            args.extend(["-serial".into(), "chardev:con".into()]);
        }
    }
    if details.disks.iter().any(|d| d.bus == "scsi") && machine != "microvm" {
        args.extend(["-device".into(), "virtio-scsi-pci,id=scsi0".into()]);
    }
    for (index, disk) in details.disks.iter().enumerate() {
        let drive = format!("disk{index}");
        args.extend([
            "-drive".into(),
            format!(
                "id={drive},file={},format={},if=none,discard=unmap",
                disk.path, disk.format
            ),
        ]);
        args.extend(bus_device(
            machine,
            &disk.bus,
            &drive,
            index,
            details.boot == VmBoot::Firmware,
        ));
    }
    if details.boot == VmBoot::Image {
        args.extend([
            "-drive".into(),
            format!(
                "id=config,file={},format=raw,if=none,readonly=on",
                paths.config_disk.display()
            ),
        ]);
        args.extend(bus_device(machine, "virtio", "config", 99, false));
    }
    if details.boot == VmBoot::Firmware && details.firmware.as_deref() == Some("uefi") {
        args.extend([
            "-drive".into(),
            format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                crate::firmware::OVMF_CODE
            ),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", paths.uefi_vars.display()),
        ]);
    }
    if details.boot == VmBoot::Firmware && details.cloud_init.is_some() {
        args.extend([
            "-drive".into(),
            format!(
                "id=cidata,file={},format=raw,if=none,readonly=on",
                paths.cidata.display()
            ),
        ]);
        args.extend(bus_device(machine, "virtio", "cidata", 98, false));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image-booted VM's record as berth wrote it before `minimal_chipset` existed.
    const OLD_RECORD: &str = r#"{"boot":"image","accel":"tcg","machine":"q35","vcpus":{"current":1,"max":1},
        "memory":{"current_bytes":268435456,"max_bytes":268435456},"disks":[],"qmp_socket":"/x/qmp.sock"}"#;

    fn machine_of(details: &VmDetails) -> String {
        let direct = DirectBoot {
            kernel: "/k".into(),
            initramfs: "/i".into(),
        };
        let args = command_line("v", details, &VmPaths::new(Path::new("/x")), Some(&direct), false);
        let at = args.iter().position(|a| a == "-machine").expect("-machine");
        args[at + 1].clone()
    }

    #[test]
    fn the_recorded_chipset_decides_the_machine_so_migrations_match() {
        let mut details: VmDetails = serde_json::from_str(OLD_RECORD).unwrap();
        // Recorded before: the full q35, as its running qemu has it.
        assert!(!details.minimal_chipset);
        assert_eq!(machine_of(&details), "q35");
        details.minimal_chipset = true;
        assert_eq!(machine_of(&details), "q35,sata=off,smbus=off,i8042=off,vmport=off");
        // And the field round-trips (absent when false, so older readers see what they knew).
        let written = serde_json::to_string(&details).unwrap();
        assert!(written.contains("\"minimal_chipset\":true"), "{written}");
        details.minimal_chipset = false;
        assert!(!serde_json::to_string(&details).unwrap().contains("minimal_chipset"));
    }

    #[test]
    fn the_recorded_firmware_decides_qboot_so_migrations_match() {
        let direct = DirectBoot {
            kernel: "/k".into(),
            initramfs: "/i".into(),
        };
        let bios = |details: &VmDetails| {
            let args = command_line("v", details, &VmPaths::new(Path::new("/x")), Some(&direct), false);
            let at = args.iter().position(|a| a == "-bios")?;
            Some(args[at + 1].clone())
        };
        // Recorded before qboot: SeaBIOS, QEMU's default, as its running qemu has it.
        let mut details: VmDetails = serde_json::from_str(OLD_RECORD).unwrap();
        assert_eq!(bios(&details), None);
        details.qboot = true;
        assert_eq!(bios(&details).as_deref(), Some(QBOOT_ROM));
        assert!(serde_json::to_string(&details).unwrap().contains("\"qboot\":true"));
    }

    #[test]
    fn tcg_guests_skip_calibrations_kvm_guests_only_the_self_tests() {
        let mut details: VmDetails = serde_json::from_str(OLD_RECORD).unwrap();
        let tcg = kernel_command_line(&details);
        assert!(
            tcg.contains("cryptomgr.notests") && tcg.contains("nolapic_timer"),
            "{tcg}"
        );
        details.vcpus.max = 4;
        assert!(!kernel_command_line(&details).contains("nolapic_timer"));
        details.accel = "kvm".into();
        let kvm = kernel_command_line(&details);
        assert!(
            kvm.contains("cryptomgr.notests") && !kvm.contains("init_on_alloc"),
            "{kvm}"
        );
    }
}
