//! Host paths and tmpfs: `-v /host:/path[:ro]`, `--mount type=bind|volume|tmpfs` and `--tmpfs`
//! as Docker parses them, for containers (OCI binds and tmpfs) and VMs (virtiofs and a tmpfs
//! mounted by the guest agent); bad specs refused in one line; a hostile image cannot make a
//! mount land outside its root; nothing left behind.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{busybox_tar, error_line, stderr, stdout, temp_dir, Daemon};

#[test]
fn host_paths_are_shared_both_ways_and_read_only_when_asked() {
    let d = Daemon::with_busybox();
    let dir = temp_dir("bt-bind");
    std::fs::create_dir(dir.join("real")).unwrap();
    std::fs::write(dir.join("real/from-host"), "host\n").unwrap();
    // The daemon records the canonical path, not the symlink it was given.
    std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
    let shared = dir.join("link");
    let bind = format!("{}:/data", shared.display());
    d.ok(&[
        "run",
        "--name",
        "rw",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "cat /data/from-host && echo container > /data/from-container",
    ]);
    assert_eq!(
        std::fs::read_to_string(dir.join("real/from-container")).unwrap(),
        "container\n"
    );
    let mounts = d.inspect("rw")["spec"]["mounts"].clone();
    assert_eq!(mounts[0]["type"], "bind");
    assert_eq!(mounts[0]["source"], dir.join("real").display().to_string());
    assert_eq!(mounts[0]["target"], "/data");
    assert_eq!(mounts[0]["read_only"], false);
    assert_eq!(d.ok(&["logs", "rw"]), "host\n");

    // :ro and --mount ...,readonly refuse writes with EROFS, and reads still work.
    let read_only = format!("{}:/data:ro", shared.display());
    let mount = format!("type=bind,source={},target=/srv,readonly", dir.join("real").display());
    let refused = d.run(&[
        "run",
        "--rm",
        "-v",
        &read_only,
        "--mount",
        &mount,
        "busybox",
        "sh",
        "-c",
        "cat /srv/from-host; touch /data/x || touch /srv/y",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(stdout(&refused), "host\n");
    assert!(
        stderr(&refused).contains("Read-only file system"),
        "{}",
        stderr(&refused)
    );
    assert!(!dir.join("real/x").exists() && !dir.join("real/y").exists());

    // A single file can be bound too (containers only).
    let file = format!("{}:/etc/motd:ro", dir.join("real/from-host").display());
    assert_eq!(
        d.ok(&["run", "--rm", "-v", &file, "busybox", "cat", "/etc/motd"]),
        "host\n"
    );

    // Binds are private: nothing the container mounts below them reaches the host.
    let propagation = d.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/data:rprivate", shared.display()),
        "busybox",
        "grep",
        " /data ",
        "/proc/self/mountinfo",
    ]);
    assert!(!propagation.contains("shared:"), "{propagation}");
    d.ok(&["rm", "rw"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file system mounted on the host after the daemon started, or unmounted again, is what
/// the next container's bind shows, with containers running all along, on the default
/// network and without one. (A long-lived copy of the host's mount table to create
/// containers from, cheaper than a fresh copy per start, would break this, and hold the
/// host's unmounted file systems alive: see the README's notes on scale.)
#[test]
fn a_host_mount_made_or_removed_while_the_daemon_runs_is_what_the_next_bind_shows() {
    let d = Daemon::with_busybox();
    d.ok(&["run", "-d", "--name", "idle", "busybox", "sleep", "600"]);
    let dir = temp_dir("bt-later");
    std::fs::write(dir.join("marker"), "underneath\n").unwrap();
    let bind = format!("{}:/data:ro", dir.display());
    let read = |network: &str| {
        d.ok(&[
            "run",
            "--rm",
            "--network",
            network,
            "-v",
            &bind,
            "busybox",
            "cat",
            "/data/marker",
        ])
    };
    assert_eq!(read("none"), "underneath\n");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "later", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(mounted.success());
    std::fs::write(dir.join("marker"), "mounted later\n").unwrap();
    assert_eq!(read("none"), "mounted later\n");
    assert_eq!(read("default"), "mounted later\n");
    assert!(Command::new("umount").arg(&dir).status().unwrap().success());
    assert_eq!(read("default"), "underneath\n");
    assert_eq!(read("none"), "underneath\n");
    d.ok(&["rm", "-f", "idle"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bind_sources_and_targets_are_checked_as_docker_does() {
    let d = Daemon::with_busybox();
    let dir = temp_dir("bt-bindchk");
    let missing = dir.join("missing");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--mount".into(), format!("type=bind,src={},dst=/x", missing.display())],
            "bind source path does not exist",
        ),
        (vec!["-v".into(), "./data:/data".into()], "absolute"),
        (vec!["-v".into(), "data/sub:/data".into()], "absolute"),
        (vec!["--mount".into(), "type=bind,src=data,dst=/x".into()], "absolute"),
        (
            vec!["-v".into(), format!("{}:relative", dir.display())],
            "must be absolute",
        ),
        (vec!["-v".into(), format!("{}:/", dir.display())], "cannot be '/'"),
        (vec!["-v".into(), format!("{}:/a/../etc", dir.display())], "'..'"),
        (vec!["-v".into(), format!("{}:/x:rw,ro", dir.display())], "conflicts"),
        (vec!["-v".into(), format!("{}:/x:rshared", dir.display())], "rprivate"),
        (
            vec!["--mount".into(), "type=tmpfs,dst=/x,bind-propagation=rprivate".into()],
            "type=bind",
        ),
        (
            vec!["--mount".into(), "type=bind,src=/tmp,dst=/x,colour=blue".into()],
            "unknown key 'colour'",
        ),
        (vec!["--tmpfs".into(), "/x:size=lots".into()], "--tmpfs"),
        (vec!["--tmpfs".into(), "/x:uid=0".into()], "unknown option"),
        (
            vec![
                "-v".into(),
                format!("{}:/x", dir.display()),
                "--tmpfs".into(),
                "/x/".into(),
            ],
            "/x is already mounted by -v",
        ),
    ];
    for (flags, expected) in &cases {
        let mut args: Vec<&str> = vec!["run", "--rm"];
        args.extend(flags.iter().map(String::as_str));
        args.extend(["busybox", "true"]);
        let output = d.run(&args);
        assert!(!output.status.success(), "berth {} should fail", args.join(" "));
        let line = error_line(&output);
        assert!(
            line.contains(expected) && line.contains(flags[0].as_str()),
            "berth {}: expected '{expected}' and the flag in: {}",
            args.join(" "),
            stderr(&output)
        );
        assert_eq!(stderr(&output).trim().lines().count(), 1, "{}", stderr(&output));
    }
    assert!(!missing.exists(), "--mount type=bind created its source");
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "", "a refused run left an instance");

    // -v creates a missing host directory, as Docker does.
    let created = dir.join("made/by/v");
    let bind = format!("{}:/data", created.display());
    d.ok(&["run", "--rm", "-v", &bind, "busybox", "sh", "-c", "echo hi > /data/f"]);
    assert_eq!(std::fs::read_to_string(created.join("f")).unwrap(), "hi\n");

    // A host path removed after create is named at start.
    let gone = dir.join("gone");
    std::fs::create_dir(&gone).unwrap();
    d.ok(&[
        "create",
        "--name",
        "later",
        "-v",
        &format!("{}:/data", gone.display()),
        "busybox",
        "true",
    ]);
    std::fs::remove_dir(&gone).unwrap();
    let refused = d.run(&["start", "later"]);
    assert!(
        error_line(&refused).contains("no longer exists"),
        "{}",
        stderr(&refused)
    );
    d.ok(&["rm", "later"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tmpfs_is_bounded_empty_at_every_start_and_noexec() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "t",
        "--tmpfs",
        "/scratch:size=1m",
        "--mount",
        "type=tmpfs,dst=/run/fast,tmpfs-size=2m,tmpfs-mode=700",
        "busybox",
        "sleep",
        "1000",
    ]);
    let full = d.run(&[
        "exec",
        "t",
        "dd",
        "if=/dev/zero",
        "of=/scratch/fill",
        "bs=64k",
        "count=32",
    ]);
    assert!(!full.status.success());
    assert!(stderr(&full).contains("No space left on device"), "{}", stderr(&full));
    let used: u64 = d
        .ok(&["exec", "t", "stat", "-c", "%s", "/scratch/fill"])
        .trim()
        .parse()
        .unwrap();
    assert!(used <= 1 << 20, "wrote {used} bytes into a 1 MiB tmpfs");
    assert_eq!(d.ok(&["exec", "t", "stat", "-c", "%a", "/scratch"]).trim(), "1777");
    assert_eq!(d.ok(&["exec", "t", "stat", "-c", "%a", "/run/fast"]).trim(), "700");
    let options = d.ok(&["exec", "t", "grep", " /scratch ", "/proc/self/mounts"]);
    assert!(
        options.starts_with("tmpfs")
            && options.contains("nosuid")
            && options.contains("nodev")
            && options.contains("noexec"),
        "{options}"
    );
    d.ok(&[
        "exec",
        "t",
        "dd",
        "if=/dev/zero",
        "of=/run/fast/f",
        "bs=64k",
        "count=16",
    ]);
    let mounts = d.inspect("t")["spec"]["mounts"].clone();
    let scratch = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["target"] == "/scratch")
        .unwrap();
    assert_eq!(scratch["type"], "tmpfs");
    assert_eq!(scratch["tmpfs"]["size_bytes"], 1 << 20);
    // Gone after a restart: a fresh tmpfs each start.
    d.ok(&["restart", "t"]);
    assert_eq!(
        d.ok(&["exec", "t", "ls", "-A", "/scratch", "/run/fast"]),
        "/run/fast:\n\n/scratch:\n"
    );
    d.ok(&["rm", "-f", "t"]);
}

#[test]
fn mount_type_volume_is_the_same_as_v_with_a_name() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=v,dst=/x",
        "busybox",
        "sh",
        "-c",
        "echo kept > /x/f",
    ]);
    let volumes = d.ok(&["volume", "ls"]);
    assert!(
        volumes.lines().any(|l| l.split_whitespace().next() == Some("v")),
        "{volumes}"
    );
    assert_eq!(
        d.ok(&["run", "--rm", "-v", "v:/y:ro", "busybox", "cat", "/y/f"]),
        "kept\n"
    );
    // The default type of --mount is volume, as in Docker.
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--mount",
            "source=v,target=/z,readonly",
            "busybox",
            "cat",
            "/z/f"
        ]),
        "kept\n"
    );
    d.ok(&["volume", "rm", "v"]);
}

/// The busybox rootfs plus `extra` symlinks (name, target), as an image archive.
fn busybox_with_symlinks(dir: &Path, extra: &[(&str, &str)]) -> std::path::PathBuf {
    let path = dir.join("hostile.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut original = tar::Archive::new(std::fs::File::open(busybox_tar()).unwrap());
    for entry in original.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let path = entry.path().unwrap().into_owned();
        match header.entry_type() {
            tar::EntryType::Symlink => {
                let target = entry.link_name().unwrap().unwrap().into_owned();
                builder.append_link(&mut header, &path, &target).unwrap();
            }
            _ => builder.append_data(&mut header, &path, &mut entry).unwrap(),
        }
    }
    for (name, target) in extra {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        builder.append_link(&mut header, name, target).unwrap();
    }
    builder.finish().unwrap();
    path
}

/// Mount points on the host at exactly `path`.
fn host_mounts_at(path: &str) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == Some(path))
        .count()
}

#[test]
fn a_hostile_image_cannot_point_a_mount_outside_its_root() {
    let d = Daemon::start();
    let dir = temp_dir("bt-evilbind");
    // Targets that are symlinks to host paths (the importer refuses links that climb out
    // of the image, not absolute ones), a chain of them, and one on the way.
    let archive = busybox_with_symlinks(
        &dir,
        &[
            ("data", "/etc"),
            ("climb", "data"),
            ("via", "/home"),
            ("scratch", "/tmp"),
            ("dangling", "/var/lib"),
        ],
    );
    d.ok(&["image", "import", "--tag", "evil", archive.to_str().unwrap()]);
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    let before = (
        host_mounts_at("/etc"),
        host_mounts_at("/home/lib"),
        host_mounts_at("/tmp"),
    );
    let marker = format!("berth-escape-{}", std::process::id());
    let script = format!(
        "echo in > /data/{marker}; echo in > /climb/{marker}-2; echo in > /via/lib/{marker}-3; echo in > /scratch/{marker}-4; ls /etc/{marker}"
    );
    let output = d.run(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/data", shared.display()),
        "--mount",
        &format!("type=bind,src={},dst=/climb", shared.display()),
        "-v",
        &format!("{}:/via/lib", shared.display()),
        "--tmpfs",
        "/scratch",
        "evil",
        "sh",
        "-c",
        &script,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    // Each mount landed inside the container (its /etc, /home/lib and /tmp), not on the host.
    assert_eq!(stdout(&output).trim(), format!("/etc/{marker}"));
    for name in [marker.clone(), format!("{marker}-2"), format!("{marker}-3")] {
        assert!(shared.join(&name).exists(), "{name} did not reach the shared directory");
    }
    for host_path in [
        format!("/etc/{marker}"),
        format!("/etc/{marker}-2"),
        format!("/home/lib/{marker}-3"),
        format!("/tmp/{marker}-4"),
    ] {
        assert!(
            !Path::new(&host_path).exists(),
            "the container wrote the host's {host_path}"
        );
    }
    assert_eq!(
        (
            host_mounts_at("/etc"),
            host_mounts_at("/home/lib"),
            host_mounts_at("/tmp")
        ),
        before,
        "a mount landed on the host"
    );
    // A symlink to a path the image lacks (the host has /var/lib) is refused by name.
    let refused = d.run(&["run", "--rm", "--tmpfs", "/dangling/x", "evil", "true"]);
    assert!(
        error_line(&refused).contains("cannot mount at /dangling/x"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(host_mounts_at("/var/lib/x"), 0);
    assert!(!Path::new("/var/lib/x").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shares served by virtiofsd processes of this daemon's instances (each virtiofsd forks
/// once into its sandbox: two processes per share).
fn virtiofsd_shares_of(d: &Daemon) -> usize {
    let output = Command::new("pgrep")
        .args(["-a", "-f", &format!("virtiofsd --socket-path={}", d.state.display())])
        .output()
        .unwrap();
    let sockets: std::collections::BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|a| a.starts_with("--socket-path="))
                .map(str::to_string)
        })
        .collect();
    sockets.len()
}

#[test]
fn a_vm_shares_host_directories_through_virtiofs() {
    let mut d = Daemon::with_busybox();
    let dir = temp_dir("bt-vmbind");
    let (shared, read_only) = (dir.join("shared"), dir.join("ro"));
    std::fs::create_dir(&shared).unwrap();
    std::fs::create_dir(&read_only).unwrap();
    std::fs::write(shared.join("from-host"), "host\n").unwrap();
    std::fs::write(read_only.join("kept"), "kept\n").unwrap();
    // Writes to the read-only share fail also after the guest remounts it read-write:
    // virtiofsd serves a read-only view.
    let script = "cat /data/from-host; echo guest > /data/from-guest; cat /ro/kept; \
         { echo x > /ro/a || echo refused-ro; mount -o remount,rw /ro; echo x > /ro/b || echo refused-rw; } 2>/dev/null; \
         dd if=/dev/zero of=/scratch/f bs=64k count=32 2>&1 | grep -o 'No space left on device'; \
         echo ready; while true; do sleep 1; done";
    d.ok(&[
        "run",
        "-d",
        "--vm",
        "--name",
        "v",
        "--memory",
        "256m",
        "--max-memory",
        "512m",
        "-v",
        &format!("{}:/data", shared.display()),
        "-v",
        &format!("{}:/ro:ro", read_only.display()),
        "--tmpfs",
        "/scratch:size=1m",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    let mut logs = String::new();
    for _ in 0..300 {
        logs = d.ok(&["logs", "v"]);
        if logs.contains("ready") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        logs,
        "host\nkept\nrefused-ro\nrefused-rw\nNo space left on device\nready\n",
        "console: {}",
        d.ok(&["logs", "v"])
    );
    assert_eq!(std::fs::read_to_string(shared.join("from-guest")).unwrap(), "guest\n");
    assert!(!read_only.join("a").exists() && !read_only.join("b").exists());
    assert_eq!(virtiofsd_shares_of(&d), 2);

    // The host's later writes reach the guest; hot-added memory (shared, as virtiofs needs)
    // keeps the share working.
    std::fs::write(shared.join("later"), "later\n").unwrap();
    d.ok(&["update", "--memory", "512m", "v"]);
    assert_eq!(d.ok(&["exec", "v", "cat", "/data/later"]), "later\n");

    // The supervisor keeps serving the shares across a daemon crash; they end with the VM.
    d.crash_and_restart();
    assert_eq!(d.ok(&["exec", "v", "cat", "/data/from-host"]), "host\n");
    d.ok(&["stop", "-t", "10", "v"]);
    assert_eq!(virtiofsd_shares_of(&d), 0, "virtiofsd left after stop");
    d.ok(&["rm", "v"]);
    assert_eq!(d.instance_dirs(), 0, "rm left the VM's directory");

    // What a VM cannot take is refused before anything is made.
    let file = format!("{}:/f", shared.join("from-host").display());
    let refused = d.run(&["run", "--vm", "--rm", "-v", &file, "busybox", "true"]);
    assert!(error_line(&refused).contains("not a directory"), "{}", stderr(&refused));
    let _ = std::fs::remove_dir_all(&dir);
}
