//! Shared volumes on a real NFS server (Debian's nfs-ganesha serving NFSv3 on 127.0.0.1, with
//! rpcbind): the volume is a qcow2 image on the share, used by containers through a
//! qemu-storage-daemon FUSE export and by VMs through QEMU's own NFS client; qcow2 snapshots;
//! clear errors; nothing left behind after `volume rm`.

use std::path::Path;
use std::process::Command;

use crate::common::nfs::NfsServer;
use crate::common::{loop_devices_under, mounts_under, stderr, Daemon};

fn storage_daemons_under(dir: &Path) -> usize {
    let output = Command::new("pgrep")
        .args(["-af", "qemu-storage-daemon"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .count()
}

/// `volume create --driver nfs` of 256 MiB on the test server's share.
fn create(d: &Daemon, share_opt: &str, name: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "volume",
        "create",
        "--driver",
        "nfs",
        "--opt",
        "server=127.0.0.1",
        "--opt",
        share_opt,
        "--size",
        "256m",
    ];
    args.extend_from_slice(extra);
    args.push(name);
    d.run(&args)
}

#[test]
fn nfs_volumes_serve_containers_and_vms() {
    let nfs = NfsServer::start("127.0.0.1");
    let share = nfs.export.display().to_string();
    let share_opt = format!("share={share}");
    let mut d = Daemon::with_busybox();
    let made = create(&d, &share_opt, "shared", &[]);
    assert!(made.status.success(), "{}", stderr(&made));
    let image = nfs.export.join("berth-volume-shared.qcow2");
    assert!(image.exists(), "the volume is a file on the share");
    let inspected: serde_json::Value = serde_json::from_str(&d.ok(&["volume", "inspect", "shared"])).unwrap();
    assert_eq!(inspected[0]["driver"], "nfs");
    assert_eq!(inspected[0]["nfs"]["mode"], "image");

    // Containers: through a qemu-storage-daemon FUSE export, shared by running containers.
    crate::volumes::shared_by_two_containers(&d, "shared");
    assert_eq!(storage_daemons_under(&d.dir), 1, "one export serves both containers");
    d.ok(&["rm", "-f", "a", "b"]);
    assert_eq!(
        storage_daemons_under(&d.dir),
        0,
        "the export ends with its last container"
    );

    // A VM opens the same image with QEMU's NFS client.
    let vm = d.run(&[
        "run",
        "--vm",
        "--rm",
        "-v",
        "shared:/data",
        "busybox",
        "sh",
        "-c",
        "cat /data/file; echo from-vm > /data/vm",
    ]);
    assert_eq!(String::from_utf8_lossy(&vm.stdout), "two\n", "{}", stderr(&vm));
    assert_eq!(
        d.ok(&["run", "--rm", "-v", "shared:/data", "busybox", "cat", "/data/vm"]),
        "from-vm\n"
    );

    // qcow2 internal snapshots: take, change, restore, delete.
    d.ok(&["volume", "snapshot", "shared", "s1"]);
    // Deleting a qcow2 snapshot rewrites the image: refused while an instance writes it.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "-v",
        "shared:/data",
        "busybox",
        "sleep",
        "100",
    ]);
    let busy = d.run(&["volume", "snapshot", "--rm", "shared", "s1"]);
    assert!(
        stderr(&busy).contains("in use by running instance c"),
        "{}",
        stderr(&busy)
    );
    d.ok(&["rm", "-f", "c"]);
    let listed = Command::new("qemu-img")
        .args(["snapshot", "-l"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("s1"));
    crate::volumes::restore_brings_back(&d, "shared");
    d.ok(&["volume", "snapshot", "--rm", "shared", "s1"]);
    let listed = Command::new("qemu-img")
        .args(["snapshot", "-l"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("s1"));

    // A daemon crash leaves the container's data path alone; the export ends with it after.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "keep",
        "-v",
        "shared:/data",
        "busybox",
        "sleep",
        "100",
    ]);
    d.crash_and_restart();
    assert_eq!(
        d.ok(&["exec", "keep", "sh", "-c", "echo after > /data/crash; cat /data/crash"]),
        "after\n"
    );
    d.ok(&["rm", "-f", "keep"]);
    assert_eq!(
        storage_daemons_under(&d.dir),
        0,
        "no storage daemon after the restart either"
    );

    // Errors name the problem and make nothing.
    let kernel = create(&d, &share_opt, "kern", &["--opt", "mode=mount"]);
    if !std::fs::read_to_string("/proc/filesystems")
        .unwrap()
        .contains("\tnfs\n")
    {
        assert!(stderr(&kernel).contains("kernel's NFS client"), "{}", stderr(&kernel));
    }
    let missing = d.run(&["volume", "create", "--driver", "nfs", "--opt", "server=127.0.0.1", "x"]);
    assert!(stderr(&missing).contains("--opt share="), "{}", stderr(&missing));
    let unexported = d.run(&[
        "volume",
        "create",
        "--driver",
        "nfs",
        "--opt",
        "server=127.0.0.1",
        "--opt",
        "share=/not/exported",
        "y",
    ]);
    assert!(stderr(&unexported).contains("cannot reach"), "{}", stderr(&unexported));
    std::fs::write(nfs.export.join("berth-volume-twin.qcow2"), b"someone else's").unwrap();
    let twin = create(&d, &share_opt, "twin", &[]);
    assert!(stderr(&twin).contains("already holds"), "{}", stderr(&twin));
    assert_eq!(
        std::fs::read(nfs.export.join("berth-volume-twin.qcow2")).unwrap(),
        b"someone else's",
        "an existing file on the share is never overwritten"
    );
    assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "shared");

    // Removal deletes the image from the share and leaves nothing on the host.
    d.ok(&["volume", "rm", "shared"]);
    assert!(!image.exists());
    assert_eq!(storage_daemons_under(&d.dir), 0);
    assert_eq!(
        mounts_under(&d.dir),
        0,
        "{}",
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(d.dir.to_str().unwrap()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(loop_devices_under(&d.dir), 0);

    // A server gone for good: removal says how to forget the volume, and --force does.
    assert!(create(&d, &share_opt, "orphan", &[]).status.success());
    drop(nfs);
    let stuck = d.run(&["volume", "rm", "orphan"]);
    assert!(
        stderr(&stuck).contains("volume rm --force orphan"),
        "{}",
        stderr(&stuck)
    );
    assert!(d.ok(&["volume", "ls", "-q"]).contains("orphan"), "kept until forced");
    d.ok(&["volume", "rm", "--force", "orphan"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]), "");
}
