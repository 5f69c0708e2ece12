//! Shared volumes on a real NFS server (Debian's nfs-ganesha serving NFSv3 on 127.0.0.1, with
//! rpcbind): the volume is a qcow2 image on the share, used by containers through a
//! qemu-storage-daemon FUSE export and by VMs through QEMU's own NFS client; qcow2 snapshots;
//! clear errors; nothing left behind after `volume rm`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{loop_devices_under, mounts_under, stderr, temp_dir, Daemon};

struct NfsServer {
    child: Child,
    dir: PathBuf,
    export: PathBuf,
}

impl NfsServer {
    /// Starts ganesha on the NFS port (2049 is fixed, so only this one test uses it).
    fn start() -> NfsServer {
        let rpcbind_running = Command::new("pgrep")
            .args(["-x", "rpcbind"])
            .output()
            .unwrap()
            .status
            .success();
        if !rpcbind_running {
            let status = Command::new("rpcbind")
                .arg("-w")
                .status()
                .expect("rpcbind (installed by scripts/install-deps.sh)");
            assert!(status.success());
        }
        let dir = temp_dir("bt-nfs");
        let export = dir.join("export");
        std::fs::create_dir_all(&export).unwrap();
        let config = dir.join("ganesha.conf");
        std::fs::write(
            &config,
            format!(
                "NFS_CORE_PARAM {{ Protocols = 3; Bind_addr = 127.0.0.1; Enable_NLM = false; Enable_RQUOTA = false; }}\n\
                 EXPORT {{ Export_Id = 77; Path = {0}; Pseudo = {0}; Access_Type = RW; Squash = No_Root_Squash;\n\
                   Protocols = 3; Transports = TCP; SecType = sys; FSAL {{ Name = VFS; }} }}\n\
                 LOG {{ Default_Log_Level = WARN; }}\n",
                export.display()
            ),
        )
        .unwrap();
        let child = Command::new("ganesha.nfsd")
            .arg("-F")
            .arg("-f")
            .arg(&config)
            .arg("-L")
            .arg(dir.join("ganesha.log"))
            .arg("-p")
            .arg(dir.join("ganesha.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ganesha.nfsd (installed by scripts/install-deps.sh)");
        let server = NfsServer { child, dir, export };
        // Ready when QEMU's NFS client can look into the export.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let probe = Command::new("qemu-img")
                .arg("info")
                .arg(format!("nfs://127.0.0.1{}/probe", server.export.display()))
                .output()
                .unwrap();
            if String::from_utf8_lossy(&probe.stderr).contains("NOENT") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nfs-ganesha did not come up: {}",
                std::fs::read_to_string(server.dir.join("ganesha.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        server
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
    let nfs = NfsServer::start();
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
