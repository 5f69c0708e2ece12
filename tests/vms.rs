//! VMs through the same interface: real QEMU (KVM where usable, TCG here) booting Debian's
//! cloud kernel with berth's guest agent, firmware boots of imported disks, libvirt and
//! VMware imports, hotplug, graceful stop and restart safety.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{stderr, stdout, temp_dir, Daemon};

/// A 1 MiB raw disk whose boot sector prints a line on COM1 and powers the machine off.
pub(crate) fn boot_sector_disk(dir: &Path) -> PathBuf {
    let mut code: Vec<u8> = vec![0xFA, 0x31, 0xC0, 0x8E, 0xD8];
    let mov_si = code.len();
    code.extend([0xBE, 0, 0]);
    let next = code.len();
    code.extend([0x8A, 0x04, 0x84, 0xC0]);
    let jz_done = code.len();
    code.extend([0x74, 0, 0x88, 0xC3]);
    let wait = code.len();
    code.extend([0xBA, 0xFD, 0x03, 0xEC, 0xA8, 0x20]);
    code.extend([0x74, (wait as i32 - (code.len() as i32 + 2)) as u8]);
    code.extend([0xBA, 0xF8, 0x03, 0x88, 0xD8, 0xEE, 0x46]);
    code.extend([0xEB, (next as i32 - (code.len() as i32 + 2)) as u8]);
    let done = code.len();
    code[jz_done + 1] = (done - (jz_done + 2)) as u8;
    // ACPI power-off: PM1a_CNT of q35 (0x604) and of older piix layouts (0xb004).
    code.extend([0xBA, 0x04, 0x06, 0xB8, 0x00, 0x20, 0xEF, 0xBA, 0x04, 0xB0, 0xEF]);
    let halt = code.len();
    code.extend([0xF4, 0xEB, (halt as i32 - (code.len() as i32 + 2)) as u8]);
    let message = code.len();
    code.extend(b"berth firmware boot ok\r\n\0");
    let address = 0x7C00 + message as u16;
    code[mov_si + 1..mov_si + 3].copy_from_slice(&address.to_le_bytes());
    code.resize(510, 0);
    code.extend([0x55, 0xAA]);
    code.resize(1 << 20, 0);
    let path = dir.join("boot.raw");
    std::fs::write(&path, code).unwrap();
    path
}

fn qemu_img_convert(source: &Path, format: &str, destination: &Path) {
    let status = Command::new("qemu-img")
        .args(["convert", "-O", format])
        .arg(source)
        .arg(destination)
        .status()
        .expect("qemu-img");
    assert!(status.success());
}

fn qemu_processes() -> usize {
    let output = Command::new("pgrep")
        .args(["-c", "-f", "qemu-system-x86_64 -name guest="])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn a_root_disk_larger_than_the_image_is_grown_to_its_size() {
    let d = Daemon::with_busybox();
    // The image's filesystem is made at 4 GiB; the guest agent grows it to the disk online.
    let output = d.run(&[
        "run",
        "--vm",
        "--rm",
        "--disk",
        "6g",
        "busybox",
        "sh",
        "-c",
        "df -k / | tail -1 | awk '{print $2}'",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let kib: u64 = text.trim().parse().unwrap_or_else(|_| panic!("df's size: {text}"));
    assert!(
        kib > 5 * 1024 * 1024 + 512 * 1024,
        "the root filesystem has {kib} KiB: {text}"
    );
}

#[test]
fn a_command_runs_in_a_vm_like_in_a_container() {
    let d = Daemon::with_busybox();
    // Too little memory for the guest kernel and berth's agent: refused up front, not a
    // kernel panic at boot.
    let small = d.fails(&["run", "--vm", "--memory", "64m", "busybox", "true"]);
    assert!(
        small.contains("needs at least") && small.contains("--memory"),
        "{small}"
    );
    let output = d.run(&[
        "run",
        "--vm",
        "--name",
        "once",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; uname -r; exit 3",
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("out\n"), "{text}");
    assert!(
        text.contains("-berth\n") || text.contains("cloud-amd64"),
        "the guest runs the kernel built for berth's VMs, or Debian's cloud kernel: {text}"
    );
    let errors = stderr(&output);
    assert!(errors.ends_with("err\n"), "{errors}");
    let record = d.inspect("once");
    if record["vm"]["accel"] == "tcg" {
        assert!(
            errors.starts_with("warning: no usable KVM"),
            "TCG is announced: {errors}"
        );
    }
    assert_eq!(record["kind"], "vm");
    assert_eq!(record["state"], "exited");
    assert_eq!(record["exit_code"], 3);
    let vm = &record["vm"];
    assert!(vm["accel"] == "tcg" || vm["accel"] == "kvm");
    assert_eq!(vm["vcpus"]["current"], 1);
    assert_eq!(vm["memory"]["current_bytes"], 256 << 20);
    assert_eq!(vm["disks"][0]["format"], "qcow2");
    assert!(vm["disks"][0]["backing"].as_str().unwrap().contains("/vm/bases/"));
    assert!(vm["qmp_socket"].as_str().unwrap().ends_with("qmp.sock"));
    // The boot berth sets up: the initramfs carries the small guest agent (not berth's whole
    // binary), and the kernel boots by PVH as an ELF (berth's own build, or the one inside
    // Debian's bzImage).
    let cache = d.state.join("vm");
    let sizes: Vec<(String, u64)> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    assert!(
        sizes
            .iter()
            .any(|(name, size)| name.starts_with("initramfs-") && *size < 8 << 20),
        "{sizes:?}"
    );
    let supervisor = std::fs::read_dir(d.state.join("instances"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("supervisor.json"))
        .find(|path| path.exists())
        .expect("the VM's supervisor.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(supervisor).unwrap()).unwrap();
    let args: Vec<&str> = config["workload"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let kernel = args
        .iter()
        .position(|a| *a == "-kernel")
        .map(|i| args[i + 1])
        .expect("-kernel");
    let magic = std::fs::read(kernel).unwrap();
    assert!(magic.starts_with(b"\x7fELF"), "{kernel} is an ELF kernel");
    // Same image, two isolation levels: the container path gives the same output.
    let container = d.run(&["run", "--rm", "busybox", "sh", "-c", "echo out; exit 3"]);
    assert_eq!(
        (stdout(&container), container.status.code()),
        ("out\n".to_string(), Some(3))
    );
    d.ok(&["rm", "once"]);
    assert_eq!(qemu_processes_of(&d), 0);
}

/// qemu processes that belong to this test's daemon.
fn qemu_processes_of(d: &Daemon) -> usize {
    let output = Command::new("pgrep")
        .args(["-c", "-f", &format!("qemu-system-x86_64 .*{}", d.state.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0)
}

/// Kills the `berth vm-exec` whose request mentions `word` once it has run for `settle`, as a
/// health check's timeout does, and waits for the `berth exec` that started it.
fn kill_vm_exec(word: &str, settle: Duration, client: &mut std::process::Child) {
    let pattern = format!("vm-exec .*{word}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let host_side = loop {
        let found = Command::new("pgrep").args(["-f", &pattern]).output().unwrap();
        if let Ok(pid) = String::from_utf8_lossy(&found.stdout).trim().parse::<i32>() {
            break pid;
        }
        assert!(Instant::now() < deadline, "no process matches {pattern}");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(settle);
    // SAFETY: SIGKILL to the vm-exec process found above.
    unsafe {
        libc::kill(host_side, libc::SIGKILL);
    }
    let _ = client.wait();
}

/// Runs `script` in VM `v` and kills its `vm-exec` half a second later (`word` finds it).
fn abandon_exec(d: &Daemon, script: &str, word: &str) {
    let mut client = d
        .command(&["exec", "v", "sh", "-c", script])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("berth exec");
    kill_vm_exec(word, Duration::from_millis(500), &mut client);
}

#[test]
fn vm_lifecycle_exec_top_hotplug_pause_stop() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--vm",
        "--name",
        "v",
        "--cpus",
        "1",
        "--max-cpus",
        "2",
        "--memory",
        "256m",
        "--max-memory",
        "512m",
        "busybox",
        "sh",
        "-c",
        "trap 'echo stopping; exit 0' TERM; echo booted; while true; do sleep 0.2; done",
    ]);
    assert_eq!(d.inspect("v")["state"], "running");
    // exec through the guest agent, with its exit code and stdin
    let exec = d.run(&["exec", "v", "sh", "-c", "echo in-guest; exit 4"]);
    assert_eq!(
        (stdout(&exec), exec.status.code()),
        ("in-guest\n".to_string(), Some(4)),
        "{}",
        stderr(&exec)
    );
    let piped = d.run_with_stdin(
        &["exec", "-i", "v", "sh", "-c", "read line; echo got $line"],
        b"hello\n",
    );
    assert_eq!(
        stdout(&piped),
        "got hello\n",
        "exit {:?}, stderr: {}\ndaemon log:\n{}",
        piped.status.code(),
        stderr(&piped),
        d.log().lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(d.ok(&["exec", "v", "nproc"]).trim(), "1");
    // Sessions back to back: a request may reach the agent while it still reads the last
    // session's input, and must start the next session all the same.
    for round in 0..20 {
        assert_eq!(
            d.ok(&["exec", "v", "echo", &round.to_string()]).trim(),
            round.to_string()
        );
    }
    // A session whose host side is killed mid-way (as a health check's timeout does): the
    // next session gets only its own output and exit code, and the abandoned process ends.
    abandon_exec(&d, "while true; do echo abandoned; sleep 0.1; done", "abandoned");
    // The loop's next line is written to the port meanwhile: with no host connected the write
    // waits in the guest, and goes to whichever host connects next.
    std::thread::sleep(Duration::from_millis(300));
    let next = d.run(&["exec", "v", "sh", "-c", "echo next; exit 3"]);
    assert_eq!(
        (stdout(&next), next.status.code()),
        ("next\n".to_string(), Some(3)),
        "{}",
        stderr(&next)
    );
    let processes = d.ok(&["exec", "v", "ps"]);
    assert!(!processes.contains("echo abandoned"), "{processes}");
    // Nor does it wait for the next session: once its host has been gone for a second, the
    // agent ends it (here the loop's heartbeat file stops changing).
    abandon_exec(&d, "while true; do date +%s > /tmp/beat; sleep 0.1; done", "beat");
    std::thread::sleep(Duration::from_secs(4));
    let stale = d.ok(&["exec", "v", "sh", "-c", "echo $(( $(date +%s) - $(cat /tmp/beat) ))"]);
    assert!(
        stale.trim().parse::<i64>().unwrap_or(0) >= 1,
        "the heartbeat went on after its host left: {stale}"
    );
    // Stdin its process never reads, more than a pipe holds, then the host leaves: the agent
    // must still read the port (its next request), so the next session runs.
    let mut deaf = d
        .command(&["exec", "-i", "v", "sh", "-c", "echo deaf; exec sleep 600"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("berth exec");
    let mut deaf_input = deaf.stdin.take().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let _ = deaf_input.write_all(&vec![b'x'; 512 * 1024]);
    });
    let mut deaf_output = deaf.stdout.take().unwrap();
    let mut first_line = [0u8; 5];
    std::io::Read::read_exact(&mut deaf_output, &mut first_line).unwrap();
    assert_eq!(&first_line, b"deaf\n");
    kill_vm_exec("deaf", Duration::from_millis(500), &mut deaf);
    let mut after = d
        .command(&["exec", "v", "echo", "after"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("berth exec");
    let deadline = Instant::now() + Duration::from_secs(60);
    while after.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = after.kill();
            panic!("the exec after a deaf session's host left did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        String::from_utf8_lossy(&after.wait_with_output().unwrap().stdout),
        "after\n"
    );

    // QEMU runs in its own seccomp sandbox (-sandbox on), as under libvirt.
    let qemu_pid = d.inspect("v")["pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{qemu_pid}/status")).unwrap();
    assert!(status.contains("Seccomp:\t2"), "qemu is not sandboxed");
    // top: the supervisor, one qemu process, its vCPU thread
    let top = d.ok(&["top", "v"]);
    assert!(top.contains("\\_ qemu-system-x86_64 -name guest=v"), "{top}");
    assert!(top.contains("{CPU 0/TCG}") || top.contains("{CPU 0/KVM}"), "{top}");
    let tree = d.ok(&["ps", "--tree"]);
    assert!(tree.contains("vm v (") && tree.contains("qemu-system-x86_64"), "{tree}");

    // live resize up to the maximums, refused beyond
    d.ok(&["update", "--cpus", "2", "--memory", "512m", "v"]);
    let mut cpus = String::new();
    for _ in 0..50 {
        cpus = d.ok(&["exec", "v", "nproc"]);
        if cpus.trim() == "2" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(cpus.trim(), "2", "the hot-added vCPU is online in the guest");
    let memory = d.ok(&["exec", "v", "grep", "MemTotal", "/proc/meminfo"]);
    let kib: u64 = memory.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(kib > 300 * 1024, "hot-added memory is online: {memory}");
    let refused = d.run(&["update", "--memory", "1g", "v"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("maximum of 512MiB"), "{}", stderr(&refused));
    assert_eq!(d.inspect("v")["limits"]["memory_bytes"], 512 << 20);
    assert_eq!(d.inspect("v")["limits"]["cpus"], 2.0);

    d.ok(&["pause", "v"]);
    assert_eq!(d.inspect("v")["state"], "paused");
    d.ok(&["unpause", "v"]);

    // stop is graceful: the command sees SIGTERM
    d.ok(&["stop", "-t", "20", "v"]);
    let record = d.inspect("v");
    assert_eq!(record["state"], "exited");
    assert_eq!(record["exit_code"], 0);
    let logs = d.ok(&["logs", "v"]);
    assert!(logs.contains("booted") && logs.contains("stopping"), "{logs}");
    d.ok(&["rm", "v"]);
    assert_eq!(qemu_processes_of(&d), 0, "no orphan qemu after rm");
}

#[test]
fn disks_boot_with_firmware_and_machines_import_from_libvirt_and_vmware() {
    let d = Daemon::start();
    let dir = temp_dir("bt-fw");
    let raw = boot_sector_disk(&dir);
    let vmdk = dir.join("web.vmdk");
    qemu_img_convert(&raw, "vmdk", &vmdk);
    let qcow2 = dir.join("web.qcow2");
    qemu_img_convert(&raw, "qcow2", &qcow2);

    // A disk image, run like any image.
    d.ok(&["image", "import", "--vm", "--tag", "bootdisk", vmdk.to_str().unwrap()]);
    let output = d.run(&["run", "--vm", "--rm", "bootdisk"]);
    assert_eq!(stdout(&output), "berth firmware boot ok\r\n", "{}", stderr(&output));
    let refused = d.run(&["run", "--rm", "bootdisk"]);
    assert!(stderr(&refused).contains("--vm"), "{}", stderr(&refused));

    // libvirt domain XML
    let xml = dir.join("domain.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='kvm'><name>from-libvirt</name><uuid>825fcb99-5d1e-4c6e-9a0b-0a3f1c2d7e41</uuid>
  <maxMemory slots='16' unit='KiB'>1048576</maxMemory><memory unit='KiB'>131072</memory>
  <currentMemory unit='KiB'>131072</currentMemory><vcpu placement='static' current='1'>4</vcpu>
  <os><type arch='x86_64' machine='pc-q35-rhel9.0.0'>hvm</type><boot dev='hd'/></os>
  <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/>
  <target dev='sda' bus='scsi'/></disk><interface type='bridge'><mac address='52:54:00:6b:3c:58'/>
  <source bridge='br0'/><model type='virtio'/></interface><graphics type='vnc'/></devices></domain>",
            qcow2.display()
        ),
    )
    .unwrap();
    let imported = d.run(&["vm", "import", xml.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(
        stderr(&imported).contains("not carried over: <devices>/<graphics>"),
        "{}",
        stderr(&imported)
    );
    let record = d.inspect("from-libvirt");
    assert_eq!(record["vm"]["vcpus"], serde_json::json!({"current": 1, "max": 4}));
    assert_eq!(record["vm"]["memory"]["max_bytes"], 1u64 << 30);
    assert_eq!(record["vm"]["disks"][0]["bus"], "scsi");
    assert_eq!(record["vm"]["interfaces"][0]["mac"], "52:54:00:6b:3c:58");
    let booted = d.run(&["start", "-a", "from-libvirt"]);
    assert_eq!(stdout(&booted), "berth firmware boot ok\r\n", "{}", stderr(&booted));

    // VMware .vmx with a .vmdk next to it
    std::fs::write(
        dir.join("web.vmx"),
        ".encoding = \"UTF-8\"\ndisplayName = \"vmware web\"\nnumvcpus = \"2\"\ncpuid.coresPerSocket = \"2\"\nmemsize = \"128\"\nfirmware = \"efi\"\nscsi0.present = \"TRUE\"\nscsi0.virtualDev = \"pvscsi\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"web.vmdk\"\nsata0:0.present = \"TRUE\"\nsata0:0.deviceType = \"cdrom-image\"\nsata0:0.fileName = \"install.iso\"\nethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\nethernet0.generatedAddress = \"00:50:56:95:72:98\"\n",
    )
    .unwrap();
    let imported = d.run(&[
        "vm",
        "import",
        "--name",
        "from-vmware",
        dir.join("web.vmx").to_str().unwrap(),
    ]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let notes = stderr(&imported);
    assert!(
        notes.contains("efi") && notes.contains("cdrom") && notes.contains("vmxnet3"),
        "{notes}"
    );
    let record = d.inspect("from-vmware");
    assert_eq!(record["vm"]["vcpus"]["current"], 2);
    assert_eq!(record["vm"]["cores_per_socket"], 2);
    assert_eq!(record["vm"]["memory"]["current_bytes"], 128u64 << 20);
    let booted = d.run(&["start", "-a", "from-vmware"]);
    assert_eq!(stdout(&booted), "berth firmware boot ok\r\n", "{}", stderr(&booted));

    // Export: libvirt's own schema accepts it (what `virsh define` checks).
    let exported = dir.join("export.xml");
    d.ok(&[
        "vm",
        "export",
        "--format",
        "libvirt",
        "-o",
        exported.to_str().unwrap(),
        "from-vmware",
    ]);
    let valid = Command::new("virt-xml-validate")
        .arg(&exported)
        .arg("domain")
        .output()
        .expect("virt-xml-validate");
    assert!(valid.status.success(), "{}", String::from_utf8_lossy(&valid.stderr));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_machine_definitions_name_the_problem_and_create_nothing() {
    let d = Daemon::start();
    let dir = temp_dir("bt-badvm");
    let cases: Vec<(&str, String, &str)> = vec![
        ("broken.xml", "<domain><name>x</name".into(), "domain XML"),
        (
            "missing-disk.xml",
            "<domain><name>x</name><memory>131072</memory><vcpu>1</vcpu><devices><disk type='file' device='disk'><source file='/no/such/disk.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>".into(),
            "/no/such/disk.qcow2",
        ),
        (
            "more-than-qemu.xml",
            format!("<domain><name>x</name><memory>131072</memory><vcpu>512</vcpu><devices><disk type='file' device='disk'><source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>", boot_sector_disk(&dir).display()),
            "<vcpu>512</vcpu>: a VM has at most 255 vCPUs",
        ),
        ("unquoted.vmx", "numvcpus = 2\n".into(), "not quoted"),
        ("missing.vmx", "scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"gone.vmdk\"\n".into(), "scsi0:0.fileName"),
    ];
    for (file, content, expected) in cases {
        let path = dir.join(file);
        std::fs::write(&path, content).unwrap();
        let output = d.run(&["vm", "import", path.to_str().unwrap()]);
        assert!(!output.status.success(), "{file} imported");
        assert!(
            stderr(&output).contains(expected),
            "{file}: expected '{expected}' in {}",
            stderr(&output)
        );
    }
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    assert_eq!(d.instance_dirs(), 0);
    let unlimited = d.run(&["create", "--vm", "--memory", "unlimited", "busybox", "true"]);
    assert!(!unlimited.status.success());
    let no_vm = d.run(&["create", "--max-cpus", "4", "busybox", "true"]);
    assert!(stderr(&no_vm).contains("--vm"), "{}", stderr(&no_vm));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_running_vm_survives_a_daemon_crash() {
    let mut d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--vm",
        "--name",
        "keep",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do echo alive; sleep 0.3; done",
    ]);
    let pid = d.inspect("keep")["pid"].as_u64().unwrap();
    d.crash_and_restart();
    let record = d.inspect("keep");
    assert_eq!(record["state"], "running");
    assert_eq!(record["pid"].as_u64().unwrap(), pid);
    assert_eq!(d.ok(&["exec", "keep", "echo", "still here"]), "still here\n");
    d.ok(&["stop", "-t", "20", "keep"]);
    assert_eq!(d.inspect("keep")["state"], "exited");
    d.ok(&["rm", "keep"]);
    assert_eq!(qemu_processes_of(&d), 0);
    let _ = qemu_processes;
}

#[test]
fn a_guest_that_never_comes_up_fails_cleanly() {
    let d = Daemon::with_busybox();
    // A guest directory whose "kernel" is not one: qemu cannot boot it.
    let guest = d.dir.join("broken-guest");
    std::fs::create_dir_all(guest.join("boot")).unwrap();
    std::fs::write(guest.join("boot/vmlinuz-0.0-broken"), b"not a kernel").unwrap();
    std::fs::create_dir_all(guest.join("lib/modules/0.0-broken/kernel")).unwrap();
    let broken = Daemon::start_with_config(&format!("guest_dir = \"{}\"\n", guest.display()));
    broken.ok(&[
        "image",
        "import",
        "--tag",
        "busybox",
        crate::common::busybox_tar().to_str().unwrap(),
    ]);
    let output = broken.run(&["run", "--vm", "--name", "nope", "busybox", "true"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("before the guest came up"),
        "{}",
        stderr(&output)
    );
    assert_eq!(qemu_processes_of(&broken), 0, "qemu was cleaned up");
    assert_eq!(broken.inspect("nope")["state"], "created");
    drop(d);
}

#[test]
fn vm_disk_snapshots_live_and_stopped() {
    let d = Daemon::with_busybox();
    d.ok(&["run", "-d", "--vm", "--name", "v", "busybox", "sleep", "1000"]);
    d.ok(&["exec", "v", "sh", "-c", "echo one > /f; sync"]);
    // Live: one QMP transaction over the VM's persistent disks.
    d.ok(&["snapshot", "create", "v", "s1"]);
    let listed: serde_json::Value = serde_json::from_str(&d.ok(&["snapshot", "ls", "--json", "v"])).unwrap();
    assert_eq!(listed[0]["name"], "s1");
    assert_eq!(listed[0]["live"], true);
    let disk = d.inspect("v")["vm"]["disks"][0]["path"].as_str().unwrap().to_string();
    let on_disk = Command::new("qemu-img")
        .args(["snapshot", "-U", "-l"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&on_disk.stdout).contains("s1"),
        "a qcow2 internal snapshot"
    );
    d.ok(&["exec", "v", "sh", "-c", "echo two > /f; sync"]);

    let running = d.run(&["snapshot", "restore", "v", "s1"]);
    assert!(stderr(&running).contains("stop it first"), "{}", stderr(&running));
    let twice = d.run(&["snapshot", "create", "v", "s1"]);
    assert!(
        stderr(&twice).contains("already has a snapshot s1"),
        "{}",
        stderr(&twice)
    );
    let bad = d.run(&["snapshot", "create", "v", "../x"]);
    assert!(stderr(&bad).contains("invalid snapshot name"), "{}", stderr(&bad));

    d.ok(&["stop", "-t", "5", "v"]);
    d.ok(&["snapshot", "create", "v", "s2"]);
    d.ok(&["snapshot", "restore", "v", "s1"]);
    d.ok(&["start", "v"]);
    assert_eq!(d.ok(&["exec", "v", "cat", "/f"]), "one\n", "the disk is back at s1");

    d.ok(&["snapshot", "rm", "v", "s1"]);
    d.ok(&["snapshot", "rm", "v", "s2"]);
    let listed: serde_json::Value = serde_json::from_str(&d.ok(&["snapshot", "ls", "--json", "v"])).unwrap();
    assert_eq!(listed, serde_json::json!([]));
    let unknown = d.run(&["snapshot", "restore", "v", "s1"]);
    assert!(!unknown.status.success());
    d.ok(&["rm", "-f", "v"]);

    d.ok(&["run", "-d", "--name", "c", "busybox", "sleep", "100"]);
    let container = d.run(&["snapshot", "create", "c", "x"]);
    assert!(stderr(&container).contains("is a container"), "{}", stderr(&container));
}
