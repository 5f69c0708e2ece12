//! Volumes: created, shared by containers, read-only mounts, attached to a VM as a disk,
//! snapshots and restores, refused removal while in use, nothing left mounted after.

use crate::common::{loop_devices_under, mounts_under, stderr, Daemon};

/// With snapshot `s1` taken while the volume's file held "two": overwrite it, restore `s1`, read
/// "two" again.
pub fn restore_brings_back(d: &Daemon, volume: &str) {
    let mount = format!("{volume}:/data");
    d.ok(&[
        "run",
        "--rm",
        "-v",
        &mount,
        "busybox",
        "sh",
        "-c",
        "echo three > /data/file",
    ]);
    d.ok(&["volume", "restore", volume, "s1"]);
    assert_eq!(
        d.ok(&["run", "--rm", "-v", &mount, "busybox", "cat", "/data/file"]),
        "two\n"
    );
}

/// Two running containers, `a` (read-write at /data) and `b` (read-only at /srv), share
/// `volume` through one host mount.
pub fn shared_by_two_containers(d: &Daemon, volume: &str) {
    let rw = format!("{volume}:/data");
    let ro = format!("{volume}:/srv:ro");
    d.ok(&["run", "-d", "--name", "a", "-v", &rw, "busybox", "sleep", "100"]);
    d.ok(&["run", "-d", "--name", "b", "-v", &ro, "busybox", "sleep", "100"]);
    d.ok(&["exec", "a", "sh", "-c", "echo two > /data/file"]);
    assert_eq!(d.ok(&["exec", "b", "cat", "/srv/file"]), "two\n");
    let readonly = d.run(&["exec", "b", "sh", "-c", "echo x > /srv/other"]);
    assert!(!readonly.status.success());
}

#[test]
fn volumes_outlive_instances_and_snapshot() {
    let d = Daemon::with_busybox();
    d.ok(&["volume", "create", "--size", "256m", "data"]);
    let created: serde_json::Value = serde_json::from_str(&d.ok(&["volume", "inspect", "data"])).unwrap();
    assert_eq!(created[0]["size_bytes"], 256u64 << 20);
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "-v",
            "data:/data",
            "busybox",
            "sh",
            "-c",
            "echo one > /data/file; cat /data/file"
        ]),
        "one\n"
    );
    shared_by_two_containers(&d, "data");
    // In use: no removal, no snapshot of a moving target.
    let refused = d.run(&["volume", "rm", "data"]);
    assert!(stderr(&refused).contains("used by instance"), "{}", stderr(&refused));
    let refused = d.run(&["volume", "snapshot", "data", "s1"]);
    assert!(
        stderr(&refused).contains("in use by running instance"),
        "{}",
        stderr(&refused)
    );
    d.ok(&["rm", "-f", "a", "b"]);

    d.ok(&["volume", "snapshot", "data", "s1"]);
    restore_brings_back(&d, "data");
    d.ok(&["volume", "snapshot", "--rm", "data", "s1"]);

    // The same volume as a VM's disk, mounted by the guest agent.
    let vm = d.run(&[
        "run",
        "--vm",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "cat /data/file; echo from-vm > /data/vm",
    ]);
    assert_eq!(String::from_utf8_lossy(&vm.stdout), "two\n", "{}", stderr(&vm));
    assert_eq!(
        d.ok(&["run", "--rm", "-v", "data:/data", "busybox", "cat", "/data/vm"]),
        "from-vm\n"
    );

    // -v with a new name creates the volume; bad specs name the problem.
    d.ok(&["run", "--rm", "-v", "fresh:/f", "busybox", "true"]);
    assert!(d.ok(&["volume", "ls", "-q"]).contains("fresh"));
    let refused = d.run(&[
        "run",
        "--rm",
        "-v",
        "ghost:/g",
        "--network",
        "nowhere",
        "busybox",
        "true",
    ]);
    assert!(!refused.status.success());
    assert!(
        !d.ok(&["volume", "ls", "-q"]).contains("ghost"),
        "a refused run creates no volume"
    );
    let bad = d.run(&["run", "--rm", "-v", "data:relative", "busybox", "true"]);
    assert!(stderr(&bad).contains("must be absolute"), "{}", stderr(&bad));
    d.ok(&["volume", "rm", "data", "fresh"]);
    assert_eq!(mounts_under(&d.dir), 0, "nothing stays mounted");
    assert_eq!(loop_devices_under(&d.dir), 0);
}
