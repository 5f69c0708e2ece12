//! Whole machines in and out: OVF/OVA packages in VMware's and VirtualBox's styles imported,
//! berth's own OVA, OVF and .vmx exports imported back with the same hardware and booted, a
//! VM's disk written to a file and to a block device (V2P) that plain QEMU boots, and hostile
//! packages (a manifest that does not match, a disk outside the package, malformed XML, an
//! unknown deployment option) refused with nothing made. An independent OVF implementation,
//! the Common OVF Tool, is the second reader: of descriptors VMware and VirtualBox wrote, of
//! berth's exports, and as the writer of a package berth imports.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{stderr, stdout, temp_dir, Daemon, LoopDevice};
use crate::vms::boot_sector_disk;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/ovf")
        .join(name)
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn qemu_img(args: &[&str]) {
    let output = Command::new("qemu-img").args(args).output().expect("qemu-img");
    assert!(
        output.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn sha(algorithm: &str, path: &Path) -> String {
    let tool = if algorithm == "SHA1" { "sha1sum" } else { "sha256sum" };
    let output = Command::new(tool).arg(path).output().expect(tool);
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Writes the manifest of `files` (in `dir`) as `name.mf`, each line as the exporter writes it.
fn manifest(dir: &Path, name: &str, algorithm: &str, files: &[&str], virtualbox: bool) {
    let text: String = files
        .iter()
        .map(|file| {
            let digest = sha(algorithm, &dir.join(file));
            if virtualbox {
                format!("{algorithm} ({file}) = {digest}\n")
            } else {
                format!("{algorithm}({file})= {digest}\n")
            }
        })
        .collect();
    std::fs::write(dir.join(format!("{name}.mf")), text).unwrap();
}

fn stream_optimized(source: &Path, to: &Path) {
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        path_str(source),
        path_str(to),
    ]);
}

/// Boots `disk` (raw) with plain QEMU, no berth: what its serial console printed.
fn boot_with_plain_qemu(disk: &str) -> String {
    let output = Command::new("timeout")
        .args([
            "60",
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            "64",
            "-nographic",
            "-nodefaults",
        ])
        .args(["-serial", "stdio", "-no-reboot", "-drive"])
        .arg(format!("file={disk},format=raw,if=ide,snapshot=on"))
        .output()
        .expect("qemu-system-x86_64");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn ovf_packages_in_vmware_and_virtualbox_styles_import() {
    let d = Daemon::start();
    let dir = temp_dir("bt-ovf");
    let boot = boot_sector_disk(&dir);

    // VMware's style: streamOptimized VMDK, SHA256 manifest, deployment options, a disk with
    // no file, CoresPerSocket, a CD drive, a video card and a ProductSection.
    let vmware = dir.join("vmware");
    std::fs::create_dir_all(&vmware).unwrap();
    std::fs::copy(fixture("vmware-style.ovf"), vmware.join("web.ovf")).unwrap();
    stream_optimized(&boot, &vmware.join("web-disk1.vmdk"));
    manifest(&vmware, "web", "SHA256", &["web.ovf", "web-disk1.vmdk"], false);
    let output = d.run(&["vm", "import", path_str(&vmware.join("web.ovf"))]);
    assert!(output.status.success(), "{}", stderr(&output));
    let notes = stderr(&output);
    for expected in [
        "CD/DVD drive 1: CD/DVD drive",
        "Video card: video card",
        "<ProductSection> properties",
        "vmw:ExtraConfig settings",
        "network: Network adapter 1 (VmxNet3): attached to berth network 'default' (the default network: there is no berth network named 'VM Network')",
    ] {
        assert!(notes.contains(expected), "expected '{expected}' in:\n{notes}");
    }
    let web = d.inspect("web");
    assert_eq!(
        web["vm"]["vcpus"]["current"], 2,
        "the default deployment option (small)"
    );
    assert_eq!(web["vm"]["cores_per_socket"], 2);
    assert_eq!(web["vm"]["memory"]["current_bytes"], 2048u64 << 20);
    assert_eq!(web["vm"]["disks"][0]["bus"], "scsi");
    assert_eq!(
        web["vm"]["disks"][1]["size_bytes"],
        2u64 << 30,
        "the file-less disk, created empty"
    );
    assert_eq!(web["address"]["mac"], "00:50:56:8a:12:34");
    // The other deployment option, by name.
    let large = d.run(&[
        "vm",
        "import",
        "--deployment",
        "large",
        "--name",
        "web-large",
        path_str(&vmware.join("web.ovf")),
    ]);
    assert!(large.status.success(), "{}", stderr(&large));
    let record = d.inspect("web-large");
    assert_eq!(record["vm"]["vcpus"]["current"], 8);
    assert_eq!(record["vm"]["memory"]["current_bytes"], 8u64 << 30);
    // It boots (the disk came through the streamOptimized conversion).
    d.ok(&["rm", "web-large"]);
    let started = d.run(&["start", "-a", "web"]);
    assert!(
        stdout(&started).contains("berth firmware boot ok"),
        "{}{}",
        stdout(&started),
        stderr(&started)
    );

    // VirtualBox's style, as an OVA: MegaBytes, an AHCI controller, E1000 on "NAT", a sound
    // card, <vbox:Machine>, and a SHA1 manifest written as VirtualBox writes it.
    let vbox = dir.join("vbox");
    std::fs::create_dir_all(&vbox).unwrap();
    std::fs::copy(fixture("virtualbox-style.ovf"), vbox.join("db.ovf")).unwrap();
    stream_optimized(&boot, &vbox.join("db-disk001.vmdk"));
    manifest(&vbox, "db", "SHA1", &["db.ovf", "db-disk001.vmdk"], true);
    let ova = dir.join("db.ova");
    let tar = Command::new("tar")
        .args([
            "--format=ustar",
            "-cf",
            path_str(&ova),
            "-C",
            path_str(&vbox),
            "db.ovf",
            "db.mf",
            "db-disk001.vmdk",
        ])
        .status()
        .unwrap();
    assert!(tar.success());
    let output = d.run(&["vm", "import", path_str(&ova)]);
    assert!(output.status.success(), "{}", stderr(&output));
    let notes = stderr(&output);
    assert!(notes.contains("sound: sound card"), "{notes}");
    assert!(notes.contains("VirtualBox machine settings"), "{notes}");
    let db = d.inspect("db");
    assert_eq!(db["vm"]["vcpus"]["current"], 1);
    assert_eq!(db["vm"]["memory"]["current_bytes"], 512u64 << 20);
    assert_eq!(db["vm"]["disks"][0]["bus"], "sata");
    assert_eq!(db["vm"]["interfaces"][0]["model"], "e1000");
    // Nothing of the unpacked package stays behind.
    let imports = d.state.join("imports");
    assert!(!imports.exists() || std::fs::read_dir(&imports).unwrap().count() == 0);

    // Hostile packages: refused in one line, nothing made.
    let before = d.ok(&["ps", "-aq"]);
    let refuse = |args: &[&str], expected: &str| {
        let output = d.run(args);
        assert!(!output.status.success(), "{args:?} imported");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: expected '{expected}' in {}",
            stderr(&output)
        );
    };
    refuse(
        &[
            "vm",
            "import",
            "--deployment",
            "huge",
            path_str(&vmware.join("web.ovf")),
        ],
        "--deployment huge: unknown DeploymentOption; the package has small, large",
    );
    // A disk changed after the manifest was written.
    std::fs::write(vbox.join("db-disk001.vmdk"), b"not the disk").unwrap();
    refuse(
        &["vm", "import", path_str(&vbox.join("db.ovf"))],
        "the package is damaged or was altered",
    );
    // A reference outside the package.
    let escape = dir.join("escape");
    std::fs::create_dir_all(&escape).unwrap();
    let text = std::fs::read_to_string(fixture("virtualbox-style.ovf"))
        .unwrap()
        .replace("db-disk001.vmdk", "../vmware/web-disk1.vmdk");
    std::fs::write(escape.join("x.ovf"), text).unwrap();
    refuse(
        &["vm", "import", path_str(&escape.join("x.ovf"))],
        "points outside the package",
    );
    std::fs::write(escape.join("bad.ovf"), "<Envelope><VirtualSystem>").unwrap();
    refuse(&["vm", "import", path_str(&escape.join("bad.ovf"))], "OVF: descriptor:");
    // An OVA with a link in it.
    let linked = dir.join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", linked.join("db-disk001.vmdk")).unwrap();
    std::fs::copy(fixture("virtualbox-style.ovf"), linked.join("db.ovf")).unwrap();
    let bad_ova = dir.join("linked.ova");
    Command::new("tar")
        .args([
            "-cf",
            path_str(&bad_ova),
            "-C",
            path_str(&linked),
            "db.ovf",
            "db-disk001.vmdk",
        ])
        .status()
        .unwrap();
    refuse(&["vm", "import", path_str(&bad_ova)], "is not a regular file");
    assert_eq!(d.ok(&["ps", "-aq"]), before, "nothing made by a refused package");

    // A package of two machines: both, or the one named.
    let multi = dir.join("multi");
    std::fs::create_dir_all(&multi).unwrap();
    let text = std::fs::read_to_string(fixture("virtualbox-style.ovf")).unwrap();
    let system_start = text.find("<VirtualSystem ").unwrap();
    let system_end = text.find("</VirtualSystem>").unwrap() + "</VirtualSystem>".len();
    let system = &text[system_start..system_end];
    let second = system
        .replace("ovf:id=\"db\"", "ovf:id=\"cache\"")
        .replace("<rasd:VirtualQuantity>1<", "<rasd:VirtualQuantity>2<");
    let collection =
        format!("<VirtualSystemCollection ovf:id=\"stack\"><Info>two</Info>{system}{second}</VirtualSystemCollection>");
    std::fs::write(
        multi.join("stack.ovf"),
        format!("{}{}{}", &text[..system_start], collection, &text[system_end..]),
    )
    .unwrap();
    stream_optimized(&boot, &multi.join("db-disk001.vmdk"));
    d.ok(&["rm", "db"]);
    let output = d.run(&["vm", "import", "--vm", "cache", path_str(&multi.join("stack.ovf"))]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(d.inspect("cache")["vm"]["vcpus"]["current"], 2);
    d.ok(&["rm", "cache"]);
    let output = d.run(&["vm", "import", path_str(&multi.join("stack.ovf"))]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("imported VM db") && stderr(&output).contains("imported VM cache"));
    std::fs::remove_dir_all(&dir).ok();
}

/// A stopped VM `src` (2 vCPUs, 96 MiB, on the default network) that boots its own disk, a
/// boot sector printing "berth firmware boot ok": that disk, and the VM's record.
fn exportable_vm(d: &Daemon, dir: &Path) -> (PathBuf, serde_json::Value) {
    let boot = boot_sector_disk(dir);
    d.ok(&["image", "import", "--vm", "--tag", "bootdisk", path_str(&boot)]);
    d.ok(&[
        "create", "--vm", "--name", "src", "--cpus", "2", "--memory", "96m", "bootdisk",
    ]);
    (boot, d.inspect("src"))
}

#[test]
fn a_vm_goes_out_as_ova_ovf_vmx_and_raw_and_comes_back() {
    let d = Daemon::start();
    let dir = temp_dir("bt-export");
    let (boot, source) = exportable_vm(&d, &dir);

    // OVA out, and back in with the same hardware; it boots.
    let ova = dir.join("src.ova");
    let written = d.ok(&["vm", "export", "--format", "ova", "--to", path_str(&ova), "src"]);
    assert_eq!(written.trim(), path_str(&ova));
    let listing = Command::new("tar").args(["-tf", path_str(&ova)]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout),
        "src.ovf\nsrc.mf\nsrc-disk1.vmdk\n",
        "descriptor first, then the manifest and the disk"
    );
    d.ok(&["vm", "import", "--name", "back", path_str(&ova)]);
    let back = d.inspect("back");
    for field in ["vcpus", "memory"] {
        assert_eq!(back["vm"][field], source["vm"][field], "{field}");
    }
    let info = Command::new("qemu-img")
        .args([
            "info",
            "--output=json",
            back["vm"]["disks"][0]["path"].as_str().unwrap(),
        ])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 1 << 20);
    let started = d.run(&["start", "-a", "back"]);
    assert!(
        stdout(&started).contains("berth firmware boot ok"),
        "{}{}",
        stdout(&started),
        stderr(&started)
    );

    // OVF directory (with its manifest) and VMware .vmx: both import back.
    let ovf = dir.join("ovf");
    d.ok(&["vm", "export", "--format", "ovf", "--to", path_str(&ovf), "src"]);
    let mf = std::fs::read_to_string(ovf.join("src.mf")).unwrap();
    assert!(mf.starts_with("SHA256(src.ovf)= "), "{mf}");
    d.ok(&["vm", "import", "--name", "from-ovf", path_str(&ovf.join("src.ovf"))]);
    assert_eq!(d.inspect("from-ovf")["vm"]["vcpus"], source["vm"]["vcpus"]);
    let vmx = dir.join("vmx");
    d.ok(&["vm", "export", "--format", "vmx", "--to", path_str(&vmx), "src"]);
    let vmx_text = std::fs::read_to_string(vmx.join("src.vmx")).unwrap();
    let mac = source["address"]["mac"].as_str().unwrap();
    assert!(
        vmx_text.contains(&format!("ethernet0.generatedAddress = \"{mac}\"")),
        "the MAC is carried: {vmx_text}"
    );
    d.ok(&["vm", "import", "--name", "from-vmx", path_str(&vmx.join("src.vmx"))]);
    let from_vmx = d.inspect("from-vmx");
    assert_eq!(from_vmx["vm"]["vcpus"]["current"], 2);
    assert_eq!(from_vmx["vm"]["memory"]["current_bytes"], 96u64 << 20);
    // A directory that is not empty is not written into.
    let again = d.run(&["vm", "export", "--format", "ovf", "--to", path_str(&ovf), "src"]);
    assert!(
        stderr(&again).contains("is a directory with files in it"),
        "{}",
        stderr(&again)
    );

    // V2P: to a file, and to a block device that plain QEMU boots.
    let raw = dir.join("src.raw");
    d.ok(&["vm", "export", "--format", "raw", "--to", path_str(&raw), "src"]);
    assert_eq!(std::fs::read(&raw).unwrap(), std::fs::read(&boot).unwrap());
    let exists = d.run(&["vm", "export", "--format", "raw", "--to", path_str(&raw), "src"]);
    assert!(stderr(&exists).contains("add --force"), "{}", stderr(&exists));
    let small_file = dir.join("small.img");
    std::fs::File::create(&small_file).unwrap().set_len(512 << 10).unwrap();
    let small = LoopDevice::over(&small_file, false);
    let refused = d.run(&["vm", "export", "--format", "raw", "--to", &small.0, "src"]);
    assert!(
        stderr(&refused).contains("choose a device at least as large"),
        "{}",
        stderr(&refused)
    );
    let device_file = dir.join("physical.img");
    std::fs::File::create(&device_file).unwrap().set_len(2 << 20).unwrap();
    let device = LoopDevice::over(&device_file, false);
    // A device holding a partition table needs --force (here: the first export's MBR).
    d.ok(&["vm", "export", "--format", "raw", "--to", &device.0, "src"]);
    let held = d.run(&["vm", "export", "--format", "raw", "--to", &device.0, "src"]);
    assert!(
        stderr(&held).contains("holds a partition table; add --force"),
        "{}",
        stderr(&held)
    );
    d.ok(&["vm", "export", "--format", "raw", "--force", "--to", &device.0, "src"]);
    assert!(boot_with_plain_qemu(&device.0).contains("berth firmware boot ok"));
    // A mounted device is refused even with --force, and nothing is written to it.
    let mounted_file = dir.join("mounted.img");
    std::fs::File::create(&mounted_file).unwrap().set_len(4 << 20).unwrap();
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", path_str(&mounted_file)])
        .status()
        .unwrap();
    assert!(mkfs.success());
    let mounted = LoopDevice::over(&mounted_file, false);
    let mount_point = dir.join("mnt");
    std::fs::create_dir_all(&mount_point).unwrap();
    let mount = Command::new("mount")
        .args([&mounted.0, path_str(&mount_point)])
        .status()
        .unwrap();
    assert!(mount.success());
    std::fs::write(mount_point.join("keep"), "still here").unwrap();
    let busy = d.run(&["vm", "export", "--format", "raw", "--force", "--to", &mounted.0, "src"]);
    let _ = Command::new("umount").arg(&mount_point).status();
    assert!(!busy.status.success());
    assert!(stderr(&busy).contains("is mounted"), "{}", stderr(&busy));
    let check = Command::new("e2fsck").args(["-fn", &mounted.0]).output().unwrap();
    assert!(check.status.success(), "the mounted device was written to: {:?}", check);
    drop(mounted);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_uefi_disk_boots_with_ovmf_as_its_partition_table_asks() {
    let d = Daemon::start();
    let dir = temp_dir("bt-uefi");
    // A GPT disk with an EFI System Partition (and nothing to boot on it): OVMF's boot
    // manager finds no loader and starts its shell, on the serial console.
    let disk = dir.join("uefi.raw");
    std::fs::File::create(&disk).unwrap().set_len(64 << 20).unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", path_str(&disk)])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (scripts/install-deps.sh installs fdisk)");
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\nsize=32M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let imported = d.run(&["image", "import", "--vm", "--tag", "efi", path_str(&disk)]);
    assert!(
        stderr(&imported).contains("boots with UEFI (OVMF)"),
        "{}",
        stderr(&imported)
    );
    let image: serde_json::Value = serde_json::from_str(&d.ok(&["image", "inspect", "efi"])).unwrap();
    assert_eq!(image["disk"]["firmware"], "uefi", "{image}");
    d.ok(&["run", "--vm", "-d", "--name", "efi", "--memory", "256m", "efi"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let log = stdout(&d.run(&["logs", "efi"]));
        if log.contains("UEFI Interactive Shell") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "OVMF did not start:\n{log}");
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    d.ok(&["rm", "-f", "efi"]);
    // Told otherwise, it is a BIOS disk.
    let told = d.run(&[
        "image",
        "import",
        "--vm",
        "--firmware",
        "bios",
        "--tag",
        "efi-bios",
        path_str(&disk),
    ]);
    assert!(stderr(&told).contains("boots with BIOS (SeaBIOS)"), "{}", stderr(&told));
    std::fs::remove_dir_all(&dir).ok();
}

/// Where the Common OVF Tool (PyPI `cot`, scripts/install-deps.sh) keeps its test data:
/// descriptors written by other exporters — `vmware.ovf` by VMware (build 880146) with a
/// streamOptimized VMDK, `ubuntu.2.0.ovf` by VirtualBox (OVF 2.0, with its manifest and
/// VMDK), `csr1000v.ovf` by a vendor for a multi-profile appliance with an ISO.
fn cot_data() -> PathBuf {
    let output = Command::new("python3")
        .args(["-c", "import os, COT.tests; print(os.path.dirname(COT.tests.__file__))"])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "the Common OVF Tool is not installed (scripts/install-deps.sh): {}",
        stderr(&output)
    );
    PathBuf::from(stdout(&output).trim())
}

/// What COT, an OVF implementation berth shares no code with, reads in a package
/// (`tests/fixtures/cot-read.py`): each profile's CPUs, memory and NICs, the disks, and every
/// warning or error it logged.
fn cot_read(package: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cot-read.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(package)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "COT could not read {}: {}",
        package.display(),
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&output)))
}

/// Copies `files` from COT's test data into a directory of their own.
fn cot_package(dir: &Path, name: &str, files: &[&str]) -> PathBuf {
    let package = dir.join(name);
    std::fs::create_dir_all(&package).unwrap();
    for file in files {
        std::fs::copy(cot_data().join(file), package.join(file)).unwrap();
    }
    package.join(files[0])
}

/// berth's reading of an imported VM against COT's reading of the same profile.
fn assert_same_hardware(berth: &serde_json::Value, cot: &serde_json::Value, profile: &str) {
    let expected = &cot["profiles"][profile];
    assert_eq!(
        berth["vm"]["vcpus"]["current"], expected["cpus"],
        "CPUs, profile {profile}"
    );
    assert_eq!(
        berth["vm"]["memory"]["current_bytes"], expected["memory_bytes"],
        "memory, profile {profile}"
    );
    let disks = berth["vm"]["disks"].as_array().unwrap();
    let capacities: Vec<&serde_json::Value> = cot["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|disk| &disk["capacity_bytes"])
        .collect();
    assert_eq!(disks.len(), capacities.len(), "disks: {berth}\n{cot}");
    for (disk, capacity) in disks.iter().zip(capacities) {
        assert_eq!(&disk["size_bytes"], capacity, "disk capacity");
    }
}

#[test]
fn descriptors_vmware_and_virtualbox_wrote_import_as_an_independent_tool_reads_them() {
    let d = Daemon::start();
    let dir = temp_dir("bt-cot-in");

    // VMware's own export (4 E1000 NICs, a ProductSection property).
    let vmware = cot_package(&dir, "vmware", &["vmware.ovf", "input.vmdk"]);
    let cot = cot_read(&vmware);
    let imported = d.run(&["vm", "import", "--name", "from-vmware", path_str(&vmware)]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert_same_hardware(&d.inspect("from-vmware"), &cot, "None");

    // VirtualBox's OVF 2.0 export, its SHA-256 manifest verified by both.
    let virtualbox = cot_package(
        &dir,
        "virtualbox",
        &["ubuntu.2.0.ovf", "ubuntu.2.0-disk1.vmdk", "ubuntu.2.0.mf"],
    );
    let cot = cot_read(&virtualbox);
    assert_eq!(cot["version"], 2.0);
    let imported = d.run(&["vm", "import", "--name", "from-virtualbox", path_str(&virtualbox)]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert_same_hardware(&d.inspect("from-virtualbox"), &cot, "None");

    // A vendor's appliance with four configuration profiles: the default one, then another
    // by name; its CD-ROM is listed as not carried over.
    let appliance = cot_package(&dir, "appliance", &["csr1000v.ovf", "input.vmdk", "input.iso"]);
    let cot = cot_read(&appliance);
    let default = cot["default_profile"].as_str().unwrap().to_string();
    let imported = d.run(&["vm", "import", "--name", "csr-default", path_str(&appliance)]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(stderr(&imported).contains("CD"), "{}", stderr(&imported));
    assert!(
        !stderr(&imported).contains("adapter type"),
        "'VMXNET3 virtio' offers virtio: {}",
        stderr(&imported)
    );
    let csr = d.inspect("csr-default");
    assert_eq!(csr["vm"]["interfaces"][0]["model"], "virtio", "{csr}");
    assert_same_hardware(&csr, &cot, &default);
    let imported = d.run(&[
        "vm",
        "import",
        "--deployment",
        "4CPU-8GB",
        "--name",
        "csr-large",
        path_str(&appliance),
    ]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert_same_hardware(&d.inspect("csr-large"), &cot, "4CPU-8GB");

    // The VirtualBox package with its disk changed after the manifest: both refuse it.
    let disk = virtualbox.with_file_name("ubuntu.2.0-disk1.vmdk");
    let mut bytes = std::fs::read(&disk).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&disk, bytes).unwrap();
    let problems = cot_read(&virtualbox)["problems"].to_string();
    assert!(problems.contains("checksum"), "COT did not notice: {problems}");
    let refused = d.run(&["vm", "import", "--name", "tampered", path_str(&virtualbox)]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("manifest"), "{}", stderr(&refused));
    assert!(!stdout(&d.run(&["ps", "-a"])).contains("tampered"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_independent_ovf_tool_reads_berths_packages_and_berth_reads_its_rewrite() {
    let d = Daemon::start();
    let dir = temp_dir("bt-cot-out");
    let (_, source) = exportable_vm(&d, &dir);
    let mac = source["address"]["mac"].as_str().unwrap().to_string();

    // COT reads berth's OVA and OVF directory with no warning, and the same hardware. It holds
    // to OVF 1.x's SHA-1 manifests (berth writes SHA-256 unless asked, as ovftool 4.2+ does).
    let ova = dir.join("src.ova");
    let sha1 = ["--manifest-digest", "sha1"];
    d.ok(&[
        &["vm", "export", "--format", "ova", "--to", path_str(&ova)][..],
        &sha1,
        &["src"],
    ]
    .concat());
    let ovf_dir = dir.join("ovf");
    d.ok(&[
        &["vm", "export", "--format", "ovf", "--to", path_str(&ovf_dir)][..],
        &sha1,
        &["src"],
    ]
    .concat());
    let mf = std::fs::read_to_string(ovf_dir.join("src.mf")).unwrap();
    assert!(mf.starts_with("SHA1(src.ovf)= "), "{mf}");
    // libvirt's domain XML carries the MAC too.
    let domain = d.ok(&["vm", "export", "--format", "libvirt", "src"]);
    assert!(domain.contains(&format!("<mac address=\"{mac}\"/>")), "{domain}");
    let domain_file = dir.join("src.xml");
    std::fs::write(&domain_file, &domain).unwrap();
    let valid = Command::new("virt-xml-validate")
        .args([path_str(&domain_file), "domain"])
        .output()
        .expect("virt-xml-validate");
    assert!(valid.status.success(), "{}", stderr(&valid));
    let vmx = dir.join("vmx");
    let refused = d.run(
        &[
            &["vm", "export", "--format", "vmx", "--to", path_str(&vmx)][..],
            &sha1,
            &["src"],
        ]
        .concat(),
    );
    assert!(
        stderr(&refused).contains("only ova and ovf packages have a manifest"),
        "{}",
        stderr(&refused)
    );
    for package in [ova.clone(), ovf_dir.join("src.ovf")] {
        let cot = cot_read(&package);
        assert_eq!(cot["problems"], serde_json::json!([]), "{}", package.display());
        assert_same_hardware(&source, &cot, "None");
        assert_eq!(cot["profiles"]["None"]["nics"], 1);
        assert_eq!(cot["nics"][0]["mac"], mac);
        assert_eq!(cot["networks"], serde_json::json!(["default"]));
    }

    // COT rewrites the OVA (its own XML, SHA-1 manifest and tar): 3 CPUs, 192 MiB, another
    // MAC; berth imports that with the new hardware and it boots.
    let edited = dir.join("edited.ova");
    let output = Command::new("cot")
        .args([
            "--force",
            "edit-hardware",
            path_str(&ova),
            "--output",
            path_str(&edited),
        ])
        .args([
            "--cpus",
            "3",
            "--memory",
            "192M",
            "--mac-addresses-list",
            "52:54:00:12:34:56",
        ])
        .output()
        .expect("cot (scripts/install-deps.sh)");
    assert!(output.status.success(), "{}", stderr(&output));
    let cot = cot_read(&edited);
    assert_eq!(cot["problems"], serde_json::json!([]));
    d.ok(&["vm", "import", "--name", "edited", path_str(&edited)]);
    let back = d.inspect("edited");
    assert_same_hardware(&back, &cot, "None");
    assert_eq!(back["vm"]["vcpus"]["current"], 3);
    assert_eq!(back["address"]["mac"], "52:54:00:12:34:56");
    let started = d.run(&["start", "-a", "edited"]);
    assert!(
        stdout(&started).contains("berth firmware boot ok"),
        "{}{}",
        stdout(&started),
        stderr(&started)
    );
    std::fs::remove_dir_all(&dir).ok();
}
