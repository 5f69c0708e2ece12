//! Disks and machine definitions from outside are untrusted: crafted qcow2 and VMDK headers
//! cannot pull host files into an imported disk, devices and FIFOs need --allow-device (or
//! are refused), definition values cannot inject markup or wrap; and real definitions
//! (libvirt's own test domains, .vmx files from the wild) import as libvirt reads them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{error_line, stderr, temp_dir, Daemon, LoopDevice};
use crate::vms::boot_sector_disk;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn qemu_img(args: &[&str]) {
    let output = Command::new("qemu-img").args(args).output().expect("qemu-img");
    assert!(
        output.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().expect("mkfifo").success());
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The refusal is one line naming what is wrong, and nothing reached the image store.
fn assert_refused(d: &Daemon, output: &Output, expected: &[&str]) {
    assert!(!output.status.success(), "imported: {}", stderr(output));
    let errors = stderr(output);
    assert_eq!(errors.trim().lines().count(), 1, "one line: {errors}");
    for part in expected {
        assert!(errors.contains(part), "expected '{part}' in: {errors}");
    }
    assert_eq!(d.ok(&["image", "ls", "-q"]).trim(), "", "a refused disk left an image");
    let disks = d.state.join("images/disks");
    let left = std::fs::read_dir(&disks).map(|e| e.count()).unwrap_or(0);
    assert_eq!(left, 0, "a refused disk left files in {}", disks.display());
}

fn import_disk(d: &Daemon, args: &[&str]) -> Output {
    let mut all = vec!["image", "import", "--vm"];
    all.extend_from_slice(args);
    d.run(&all)
}

const FLAT_DESCRIPTOR: &str = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 2048 FLAT \"EXTENT\" 0\n\n# The Disk Data Base\n#DDB\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n";

#[test]
fn crafted_disks_cannot_read_host_files() {
    let d = Daemon::start();
    let dir = temp_dir("bt-evildisk");
    let elsewhere = temp_dir("bt-elsewhere");

    // A qcow2 whose backing file is /etc/shadow (the CVE-2024-32498 class).
    let backed = dir.join("backed.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "/etc/shadow",
        "-F",
        "raw",
        path_str(&backed),
    ]);
    let output = import_disk(&d, &[path_str(&backed)]);
    assert_refused(&d, &output, &["backing file '/etc/shadow'", "outside"]);
    // Told it is raw, the same file is only bytes: nothing follows its header.
    let raw = import_disk(&d, &["--format", "raw", "--tag", "rawbytes", path_str(&backed)]);
    assert!(raw.status.success(), "{}", stderr(&raw));
    let record: serde_json::Value = serde_json::from_str(&d.ok(&["image", "inspect", "rawbytes"])).unwrap();
    let image = if record.is_array() { &record[0] } else { &record };
    assert_eq!(image["disk"]["source_format"], "raw");
    assert_eq!(
        image["disk"]["virtual_size_bytes"].as_u64().unwrap(),
        std::fs::metadata(&backed).unwrap().len().div_ceil(512) * 512,
        "the guest sees the file's own bytes (in whole sectors), not its backing file's"
    );
    d.ok(&["image", "rm", "rawbytes"]);

    // A backing file given as a qemu protocol specification instead of a file name.
    let json = dir.join("json.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"/etc/shadow\"}}",
        "-F",
        "raw",
        path_str(&json),
        "1M",
    ]);
    assert_refused(
        &d,
        &import_disk(&d, &[path_str(&json)]),
        &["backing file", "not a file name"],
    );

    // A qcow2 with an external data file in another directory (our own decoy: creating a
    // qcow2 with a data file writes that file).
    let with_data = dir.join("data.qcow2");
    let decoy = elsewhere.join("decoy.raw");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={},data_file_raw=on", decoy.display()),
        path_str(&with_data),
        "1M",
    ]);
    assert_refused(
        &d,
        &import_disk(&d, &[path_str(&with_data)]),
        &["external data file", "outside"],
    );

    // A VMDK descriptor whose FLAT extent is /etc/shadow, or climbs out of its directory.
    for (file, extent) in [("shadow.vmdk", "/etc/shadow"), ("climb.vmdk", "../../../../etc/shadow")] {
        let descriptor = dir.join(file);
        std::fs::write(&descriptor, FLAT_DESCRIPTOR.replace("EXTENT", extent)).unwrap();
        let output = import_disk(&d, &[path_str(&descriptor)]);
        assert_refused(&d, &output, &["VMDK extent", "outside"]);
    }
    // An extent that is a FIFO: refused before qemu-img could block on opening it.
    let fifo_extent = dir.join("extent.fifo");
    mkfifo(&fifo_extent);
    let descriptor = dir.join("fifo-extent.vmdk");
    std::fs::write(&descriptor, FLAT_DESCRIPTOR.replace("EXTENT", "extent.fifo")).unwrap();
    assert_refused(
        &d,
        &import_disk(&d, &[path_str(&descriptor)]),
        &["VMDK extent", "a FIFO"],
    );

    // The disk itself a FIFO: refused at once, and the daemon still answers.
    let fifo = dir.join("disk.fifo");
    mkfifo(&fifo);
    let started = std::time::Instant::now();
    assert_refused(&d, &import_disk(&d, &[path_str(&fifo)]), &["is a FIFO", "regular file"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let fifo_allowed = import_disk(&d, &["--allow-device", path_str(&fifo)]);
    assert_refused(&d, &fifo_allowed, &["is a FIFO"]);

    // A block device: refused without --allow-device, also through a symlink; imported with it.
    let backing_file = elsewhere.join("physical.raw");
    std::fs::write(&backing_file, vec![0u8; 1 << 20]).unwrap();
    let device = LoopDevice::over(&backing_file, true);
    assert_refused(
        &d,
        &import_disk(&d, &[&device.0]),
        &["is a block device", "--allow-device"],
    );
    let link = dir.join("disk-link.raw");
    std::os::unix::fs::symlink(&device.0, &link).unwrap();
    assert_refused(
        &d,
        &import_disk(&d, &[path_str(&link)]),
        &["is a block device", "--allow-device"],
    );
    let allowed = import_disk(&d, &["--allow-device", "--tag", "physical", &device.0]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    drop(device);
    d.ok(&["image", "rm", "physical"]);
    let flag_without_vm = d.run(&["image", "import", "--allow-device", path_str(&backed)]);
    assert!(!flag_without_vm.status.success());

    // Chains inside the disk's own directory are real disks and import.
    let base = dir.join("base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let overlay = dir.join("overlay.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        path_str(&overlay),
    ]);
    d.ok(&["image", "import", "--vm", "--tag", "chain", path_str(&overlay)]);
    let multi = dir.join("multi.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        path_str(&multi),
        "1M",
    ]);
    d.ok(&["image", "import", "--vm", "--tag", "multi", path_str(&multi)]);
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(elsewhere).ok();
}

#[test]
fn definitions_cannot_inject_markup_wrap_numbers_or_name_host_files() {
    let d = Daemon::start();
    let dir = temp_dir("bt-evilvm");
    let disk = dir.join("disk.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", path_str(&disk), "1M"]);
    let vmx = |extra: &str| {
        format!("displayName = \"evil\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"disk.vmdk\"\n{extra}")
    };
    let backed = dir.join("backed.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "/etc/shadow",
        "-F",
        "raw",
        path_str(&backed),
    ]);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "uuid.vmx",
            vmx("uuid.bios = \"42 20'/><disk type='file' device='disk'><source file='/etc/shadow'/><target dev='vdz'/></disk><x a='\"\n"),
            vec!["uuid.bios", "is not a UUID"],
        ),
        ("memsize.vmx", vmx("memSize = \"18446744073709551615\"\n"), vec![".vmx: memSize", "more than a VM can have"]),
        ("memwrap.vmx", vmx("memSize = \"17592186044417\"\n"), vec![".vmx: memSize"]),
        ("vcpus.vmx", vmx("numvcpus = \"4294967297\"\n"), vec![".vmx: numvcpus", "at most 255 vCPUs"]),
        ("mac.vmx", vmx("ethernet0.present = \"TRUE\"\nethernet0.address = \"00:50:56:01:02:03,romfile=/etc/shadow\"\n"), vec!["ethernet0.address"]),
        (
            "shadow.xml",
            "<domain><name>x</name><memory>131072</memory><devices><disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/etc/shadow'/><target dev='vda'/></disk></devices></domain>".into(),
            vec!["<disk> vda", "outside the definition's directory"],
        ),
        (
            "backed.xml",
            format!("<domain><name>x</name><memory>131072</memory><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda'/></disk></devices></domain>", backed.display()),
            vec!["<disk> vda", "backing file '/etc/shadow'"],
        ),
        (
            "block.xml",
            "<domain><name>x</name><memory>131072</memory><devices><disk type='block' device='disk'><source dev='/dev/null'/><target dev='vda'/></disk></devices></domain>".into(),
            vec!["host block device", "--allow-device"],
        ),
    ];
    for (file, content, expected) in cases {
        let path = dir.join(file);
        std::fs::write(&path, content).unwrap();
        let output = d.run(&["vm", "import", path_str(&path)]);
        assert!(!output.status.success(), "{file} imported");
        let line = error_line(&output);
        assert_eq!(stderr(&output).trim().lines().count(), 1, "{file}: {}", stderr(&output));
        for part in expected {
            assert!(line.contains(part), "{file}: expected '{part}' in {line}");
        }
    }
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "", "a refused definition left an instance");
    assert_eq!(d.instance_dirs(), 0);

    // A UUID in VMware's spacing is accepted, and the export is what libvirt's schema
    // accepts with exactly the disks the VM has.
    let good = dir.join("good.vmx");
    std::fs::write(
        &good,
        vmx("uuid.bios = \"56 4d 70 88 01 a1 98 32-e7 2b 67 90 c7 3b 64 ea\"\nethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"e1000\"\n"),
    )
    .unwrap();
    d.ok(&["vm", "import", path_str(&good)]);
    let exported = dir.join("export.xml");
    d.ok(&["vm", "export", "-o", path_str(&exported), "evil"]);
    let xml = std::fs::read_to_string(&exported).unwrap();
    assert!(
        xml.contains("<uuid>564d7088-01a1-9832-e72b-6790c73b64ea</uuid>"),
        "{xml}"
    );
    assert_eq!(xml.matches("<disk ").count(), 1, "{xml}");
    assert!(!xml.contains("/etc/shadow"));
    let valid = Command::new("virt-xml-validate")
        .arg(&exported)
        .arg("domain")
        .output()
        .expect("virt-xml-validate");
    assert!(valid.status.success(), "{}", String::from_utf8_lossy(&valid.stderr));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn real_definitions_import_as_libvirt_reads_them() {
    let d = Daemon::start();
    let dir = temp_dir("bt-realvm");
    let import = |file: &Path, name: &str| -> String {
        let output = d.run(&["vm", "import", "--name", name, path_str(file)]);
        assert!(output.status.success(), "{}: {}", file.display(), stderr(&output));
        stderr(&output)
    };

    // libvirt's own test domain without disks (network boot, disks added later).
    import(&fixture("libvirt/graphics-vnc-minimal.xml"), "diskless");
    let record = d.inspect("diskless");
    assert_eq!(record["vm"]["disks"], serde_json::json!([]));
    assert_eq!(record["vm"]["uuid"], "c7a5fdbd-edaf-9455-926a-d65c16db1809");
    // ... and the same without <vcpu>: libvirt gives it one.
    import(&fixture("libvirt/no-vcpu.xml"), "no-vcpu");
    assert_eq!(
        d.inspect("no-vcpu")["vm"]["vcpus"],
        serde_json::json!({"current": 1, "max": 1})
    );

    // A .vmx passing the host's cdrom through (libvirt's cdrom-scsi-passthru.vmx).
    let notes = import(&fixture("vmx/cdrom-scsi-passthru.vmx"), "passthru");
    assert!(
        notes.contains("not carried over: scsi0:0 (scsi-passthru) passes the host device '/vmfs/devices/cdrom/mpx.vmhba32:C0:T0:L0' through"),
        "{notes}"
    );

    // An ESX 8 .vmx (NVMe disk, vmxnet3 on "VM Network"), beside a stand-in disk: vCPUs,
    // memory and UUID as libvirt derives them; the NIC goes to the default network, said so.
    let esx = dir.join("esx.vmx");
    std::fs::copy(fixture("vmx/esx-in-the-wild-16.vmx"), &esx).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        path_str(&dir.join("Auto-esx8.0-rhel9.4-efi-nvme-disk.vmdk")),
        "1M",
    ]);
    let notes = import(&esx, "esx");
    assert!(
        notes.contains("network: ethernet0 (vmxnet3): attached to berth network 'default' (the default network: there is no berth network named 'VM Network')"),
        "{notes}"
    );
    let record = d.inspect("esx");
    assert_eq!(record["vm"]["vcpus"]["current"], 1);
    assert_eq!(record["vm"]["memory"]["current_bytes"], 2048u64 << 20);
    assert_eq!(record["vm"]["uuid"], "5020196e-c5c8-7310-fcdb-d2933d0c4b2f");
    assert_eq!(record["vm"]["disks"][0]["bus"], "nvme");
    assert_eq!(record["spec"]["network"], "default");
    assert_eq!(record["address"]["mac"], "00:50:56:a0:a6:7e");

    // Fusion's two NICs on "VMnet0": with a berth network of that name, the first joins it.
    let subnet = format!("{}.1.0/24", d.subnet_prefix);
    d.ok(&["network", "create", "--subnet", &subnet, "VMnet0"]);
    let fusion = dir.join("fusion.vmx");
    std::fs::copy(fixture("vmx/fusion-in-the-wild-1.vmx"), &fusion).unwrap();
    qemu_img(&["create", "-q", "-f", "vmdk", path_str(&dir.join("ATTM_VM.vmdk")), "1M"]);
    let notes = import(&fusion, "fusion");
    assert!(
        notes.contains(
            "network: ethernet0 (e1000): attached to berth network 'VMnet0' (the berth network of the same name)"
        ),
        "{notes}"
    );
    assert!(
        notes.contains("not carried over: ethernet1 (e1000): berth gives a VM one network interface"),
        "{notes}"
    );
    let record = d.inspect("fusion");
    assert_eq!(record["vm"]["vcpus"]["current"], 2);
    assert_eq!(record["vm"]["memory"]["current_bytes"], 3572u64 << 20);
    assert_eq!(record["address"]["network"], "VMnet0");
    assert_eq!(record["address"]["mac"], "00:0c:29:3b:64:ea");
    assert!(record["address"]["address"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}.1.", d.subnet_prefix)));

    // Importing is defining: a machine bigger than this host imports, and start says what
    // is short (as `virsh define` then `virsh start`).
    let boot = boot_sector_disk(&dir);
    let huge = dir.join("huge.xml");
    std::fs::write(
        &huge,
        format!(
            "<domain type='kvm'><name>huge</name><memory unit='TiB'>4</memory><vcpu>200</vcpu><devices><disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
            boot.display()
        ),
    )
    .unwrap();
    import(&huge, "huge");
    let refused = d.run(&["start", "huge"]);
    assert!(!refused.status.success());
    let line = error_line(&refused);
    assert!(
        line.contains("huge") && line.contains("CPUs") && line.contains("200"),
        "{line}"
    );
    assert!(line.contains("memory") && line.contains("4TiB"), "{line}");
    assert_eq!(d.inspect("huge")["state"], "created");

    // A domain without <vcpu> boots with one (a boot sector that prints a line).
    let small = dir.join("small.xml");
    std::fs::write(
        &small,
        format!(
            "<domain type='kvm'><name>small</name><memory unit='MiB'>64</memory><devices><disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='vda' bus='virtio'/></disk><interface type='network'><source network='default'/><model type='e1000'/></interface></devices></domain>",
            boot.display()
        ),
    )
    .unwrap();
    import(&small, "small");
    let booted = d.run(&["start", "-a", "small"]);
    assert_eq!(
        crate::common::stdout(&booted),
        "berth firmware boot ok\r\n",
        "{}",
        stderr(&booted)
    );
    // The NIC keeps its model (the guest's OS has a driver for it) on the default network.
    let small = d.inspect("small");
    let config =
        std::fs::read_to_string(d.instance_dir(small["id"].as_str().unwrap()).join("supervisor.json")).unwrap();
    assert!(config.contains("e1000,netdev=net0,mac="), "{config}");
    assert_eq!(small["address"]["network"], "default");
    std::fs::remove_dir_all(dir).ok();
}
