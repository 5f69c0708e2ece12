//! Whole operating systems in and out, on a real Debian system built by
//! tests/fixtures/debian-disk.sh (debootstrap, Debian's cloud kernel, extlinux; cached between
//! runs): a "physical disk" on a loop device imported with --allow-device (P2V) boots as a VM;
//! the VM's disk written back to a second loop device (V2P) boots under plain QEMU without
//! berth; the same system with cloud-init takes berth's NoCloud seed (hostname, a file
//! from user-data, the SSH key); and on a GPT disk with systemd-boot on its EFI System
//! Partition it boots through OVMF, chosen by berth from the partition table. Every boot is
//! watched on the serial console.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{temp_dir, Daemon, LoopDevice};

/// The cached Debian disk image of `variant` (built on first use, about 2 minutes).
fn debian_disk(variant: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/debian-disk.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(variant)
        .stderr(Stdio::piped())
        .output()
        .expect("bash");
    assert!(
        output.status.success(),
        "building the Debian test disk failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    PathBuf::from(path)
}

/// Waits until the instance's console log holds every one of `lines`; the log on failure.
fn wait_for_console(d: &Daemon, name: &str, lines: &[&str], limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let output = d.run(&["logs", name]);
        let log = String::from_utf8_lossy(&output.stdout).into_owned();
        if lines.iter().all(|l| log.contains(l)) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not print {lines:?} in {limit:?} (TCG); console:\n{}",
            log.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Boots a raw disk with plain QEMU (no berth) until the marker: the serial console, which
/// QEMU writes to a file.
fn boot_with_plain_qemu(disk: &str, console: &Path) -> String {
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-display",
            "none",
            "-nodefaults",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-drive")
        .arg(format!("file={disk},format=raw,if=virtio,snapshot=on"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    let deadline = Instant::now() + Duration::from_secs(300);
    let text = loop {
        let text = String::from_utf8_lossy(&std::fs::read(console).unwrap_or_default()).into_owned();
        let exited = qemu.try_wait().ok().flatten().is_some();
        if text.contains("BERTH-MARKER hostname=") || exited || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = qemu.kill();
    let _ = qemu.wait();
    text
}

#[test]
fn a_physical_disk_boots_as_a_vm_and_its_disk_boots_a_machine_again() {
    let image = debian_disk("bios");
    let d = Daemon::start();
    // P2V: the "physical disk" as a block device, imported only with --allow-device.
    let physical = LoopDevice::over(&image, true);
    let refused = d.run(&["image", "import", "--vm", "--tag", "debian", &physical.0]);
    assert!(!refused.status.success(), "a device without --allow-device");
    d.ok(&[
        "image",
        "import",
        "--vm",
        "--allow-device",
        "--tag",
        "debian",
        &physical.0,
    ]);
    drop(physical);
    d.ok(&["run", "--vm", "-d", "--name", "p2v", "--memory", "1g", "debian"]);
    let started = Instant::now();
    wait_for_console(&d, "p2v", &["BERTH-MARKER hostname="], Duration::from_secs(300));
    eprintln!(
        "P2V: the imported Debian system printed its marker {:.1} s after start (TCG)",
        started.elapsed().as_secs_f64()
    );
    d.ok(&["stop", "-t", "60", "p2v"]);

    // V2P: the VM's disk onto a second "physical disk", which QEMU boots without berth.
    let dir = temp_dir("bt-v2p");
    let target_file = dir.join("second-disk.img");
    std::fs::File::create(&target_file).unwrap().set_len(3 << 30).unwrap();
    let target = LoopDevice::over(&target_file, false);
    d.ok(&["vm", "export", "--format", "raw", "--to", &target.0, "p2v"]);
    let console = boot_with_plain_qemu(&target.0, &dir.join("console.log"));
    assert!(
        console.contains("BERTH-MARKER hostname="),
        "the written disk did not boot:\n{console}"
    );
    drop(target);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cloud_init_sets_the_hostname_and_runs_the_user_data() {
    let image = debian_disk("cloudinit");
    let d = Daemon::start();
    let dir = temp_dir("bt-cloudinit");
    d.ok(&["image", "import", "--vm", "--tag", "debian-ci", image.to_str().unwrap()]);
    // Not YAML: refused in one line, nothing made.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "#cloud-config\nhostname: [unclosed\n").unwrap();
    let refused = d.run(&["create", "--vm", "--cloud-init", bad.to_str().unwrap(), "debian-ci"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not YAML"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");

    let user_data = dir.join("user-data.yaml");
    std::fs::write(
        &user_data,
        "#cloud-config\nhostname: seeded\nwrite_files:\n  - path: /var/lib/berth-seed\n    content: hello-from-seed\n",
    )
    .unwrap();
    let key = dir.join("id_ed25519.pub");
    std::fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJlcnRoLXRlc3Qta2V5LW5vdC1zZWNyZXQ test@berth\n",
    )
    .unwrap();
    d.ok(&[
        "run",
        "--vm",
        "-d",
        "--name",
        "ci",
        "--memory",
        "1g",
        "--cloud-init",
        user_data.to_str().unwrap(),
        "--ssh-key",
        key.to_str().unwrap(),
        "debian-ci",
    ]);
    let started = Instant::now();
    wait_for_console(
        &d,
        "ci",
        &["BERTH-SEED hello-from-seed", "BERTH-MARKER hostname=seeded"],
        Duration::from_secs(420),
    );
    eprintln!(
        "cloud-init: configured and marked {:.1} s after start (TCG)",
        started.elapsed().as_secs_f64()
    );
    assert!(d.inspect("ci")["address"]["address"].is_string());
    d.ok(&["rm", "-f", "ci"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_uefi_operating_system_boots_end_to_end() {
    // Debian on a GPT disk whose EFI System Partition holds systemd-boot, the kernel and the
    // initramfs, with no BIOS boot code: only OVMF boots it, and berth has to choose OVMF
    // from the partition table by itself.
    let image = debian_disk("uefi");
    let d = Daemon::start();
    let imported = d.run(&[
        "image",
        "import",
        "--vm",
        "--tag",
        "debian-efi",
        image.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&imported.stderr).into_owned();
    assert!(imported.status.success(), "{said}");
    assert!(said.contains("boots with UEFI (OVMF)"), "{said}");
    d.ok(&["run", "--vm", "-d", "--name", "efi-os", "--memory", "1g", "debian-efi"]);
    let started = Instant::now();
    let console = wait_for_console(&d, "efi-os", &["BERTH-MARKER hostname="], Duration::from_secs(420));
    eprintln!(
        "UEFI: OVMF, systemd-boot and Debian reached the marker {:.1} s after start (TCG)",
        started.elapsed().as_secs_f64()
    );
    // The kernel saw EFI firmware (a BIOS boot never prints this).
    assert!(
        console.contains("efi: EFI v"),
        "no EFI firmware in the kernel's log:\n{console}"
    );
    d.ok(&["rm", "-f", "efi-os"]);
}
