//! Storage: a container's writable layer of `--disk` size, and instance storage with EC2
//! instance-store semantics (kept across restart, wiped on stop and rm) for both kinds.

use std::process::Command;

use crate::common::{loop_devices_under, stderr, Daemon};

const STORE_TYPE: &str =
    "[[types]]\nname = \"lab.store\"\nvcpus = 1\nmemory = \"256m\"\ninstance_storage = [\"10g\", \"5g\"]\n\n";

#[test]
fn the_writable_layer_has_the_size_asked_for() {
    let d = Daemon::with_busybox();
    let output = d.run(&[
        "run",
        "--rm",
        "--disk",
        "64m",
        "busybox",
        "sh",
        "-c",
        "df -k / | tail -1 | awk '{print $2}'; dd if=/dev/zero of=/fill bs=1M count=200 2>/dev/null; echo dd=$?",
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let size_kib: u64 = lines.next().unwrap().trim().parse().unwrap();
    assert!(size_kib < 64 * 1024 && size_kib > 40 * 1024, "{text}");
    assert_eq!(lines.next(), Some("dd=1"), "writing past the limit fails: {text}");
    assert_eq!(loop_devices_under(&d.dir), 0, "the layer's loop device is released");
    let too_small = d.run(&["create", "--disk", "1m", "busybox", "true"]);
    assert!(stderr(&too_small).contains("--disk"), "{}", stderr(&too_small));
    // Larger than the host file system can hold in one file: refused before anything exists.
    let too_large = d.run(&["run", "--rm", "--disk", "50t", "busybox", "true"]);
    assert!(stderr(&too_large).contains("cannot hold"), "{}", stderr(&too_large));
    assert_eq!(d.ok(&["ps", "-aq"]), "", "nothing was created");
}

#[test]
fn instance_storage_survives_restart_and_is_wiped_on_stop() {
    let d = Daemon::start_with_config(STORE_TYPE);
    d.ok(&[
        "image",
        "import",
        "--tag",
        "busybox",
        crate::common::busybox_tar().to_str().unwrap(),
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "s",
        "--type",
        "lab.store",
        "busybox",
        "sleep",
        "600",
    ]);
    let sizes = d.ok(&[
        "exec",
        "s",
        "sh",
        "-c",
        "df -k /mnt/instance-store0 /mnt/instance-store1 | tail -2 | awk '{print $2}'",
    ]);
    let sizes: Vec<u64> = sizes.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(sizes[0] > 9 * 1024 * 1024 && sizes[1] > 4 * 1024 * 1024, "{sizes:?}");
    // Thin: 15 GB of instance storage costs megabytes on the host.
    let used = Command::new("du")
        .arg("-sk")
        .arg(d.state.join("instances"))
        .output()
        .unwrap();
    let used_kib: u64 = String::from_utf8_lossy(&used.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(used_kib < 200 * 1024, "{used_kib} KiB used");

    d.ok(&["exec", "s", "sh", "-c", "echo kept > /mnt/instance-store0/file"]);
    d.ok(&["restart", "-t", "1", "s"]);
    assert_eq!(d.ok(&["exec", "s", "cat", "/mnt/instance-store0/file"]), "kept\n");
    d.ok(&["stop", "-t", "1", "s"]);
    d.ok(&["start", "s"]);
    let after = d.run(&["exec", "s", "cat", "/mnt/instance-store0/file"]);
    assert!(!after.status.success(), "instance storage is wiped on stop");
    d.ok(&["rm", "-f", "s"]);
    assert_eq!(loop_devices_under(&d.dir), 0, "no loop device left after rm");

    // A VM sees the same storage as NVMe block devices.
    let vm = d.ok(&[
        "run",
        "--vm",
        "--rm",
        "--type",
        "lab.store",
        "busybox",
        "sh",
        "-c",
        "cat /sys/block/nvme0n1/size /sys/block/nvme1n1/size",
    ]);
    assert_eq!(vm, format!("{}\n{}\n", 10u64 << 21, 5u64 << 21));
}
