//! Files are hostile or private: account files inside a rootfs cannot stall the daemon or
//! make it read the host's files; logs (a container's, a VM's console and status port) stay
//! within their caps and `--tail` reads from the end; the state directory is private, so a
//! local user reads no secret and runs no setuid binary of an imported image; volumes a VM
//! wrote are mounted nosuid,nodev on the host.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{busybox_tar, error_line, rand_u32, stderr, stdout, temp_dir, Daemon, BERTH};

/// Waits for `child` up to `timeout`, reading its output meanwhile; kills it and panics if
/// it takes longer.
fn wait_within(mut child: Child, timeout: Duration, what: &str) -> Output {
    let reader = |stream: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut data = Vec::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_end(&mut data);
            }
            data
        })
    };
    let stdout = reader(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let stderr = reader(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

fn spawn(d: &Daemon, args: &[&str]) -> Child {
    d.command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth")
}

/// Exactly one non-empty line on stderr.
fn assert_one_line(output: &Output, expected: &str) {
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!output.status.success(), "should fail: {}", stdout(output));
    assert_eq!(lines.len(), 1, "one line expected:\n{text}");
    assert!(lines[0].contains(expected), "expected '{expected}' in: {}", lines[0]);
}

/// Runs `args` in a container until `ready` exists in it.
fn container_ready(d: &Daemon, name: &str, script: &str) {
    d.ok(&["run", "-d", "--name", name, "busybox", "sh", "-c", script]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.run(&["exec", name, "test", "-e", "/ready"]).status.success() {
        assert!(Instant::now() < deadline, "{name} did not get ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An entry added to (or replacing one of) busybox's rootfs.
enum Extra<'a> {
    File(&'a str, u32, &'a [u8]),
    Link(&'a str, &'a str),
}

impl Extra<'_> {
    fn name(&self) -> &str {
        match self {
            Extra::File(name, _, _) | Extra::Link(name, _) => name,
        }
    }
}

/// A rootfs archive: busybox's, with `extra` entries.
fn busybox_variant(dir: &Path, extra: &[Extra<'_>]) -> PathBuf {
    let path = dir.join(format!("variant-{:08x}.tar", rand_u32()));
    let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut archive = tar::Archive::new(std::fs::File::open(busybox_tar()).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let name = entry.path().unwrap().into_owned();
        if extra.iter().any(|e| Path::new(e.name()) == name) {
            continue;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        builder.append(&header, data.as_slice()).unwrap();
    }
    for entry in extra {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match entry {
            Extra::File(name, mode, data) => {
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, name, *data).unwrap();
            }
            Extra::Link(name, target) => {
                header.set_mode(0o777);
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, name, target).unwrap();
            }
        }
    }
    builder.finish().unwrap();
    path
}

#[test]
fn account_files_in_a_rootfs_never_stall_the_daemon_nor_reach_the_host() {
    let d = Daemon::with_busybox();

    // /etc/passwd as a FIFO: each lookup used to block a runtime worker for good; the
    // daemon has two, so two execs stalled every client.
    container_ready(
        &d,
        "fifo",
        "rm /etc/passwd && mkfifo /etc/passwd && touch /ready && sleep 600",
    );
    let began = Instant::now();
    let execs: Vec<Child> = (0..2)
        .map(|_| spawn(&d, &["exec", "-u", "someuser", "fifo", "true"]))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let ps_began = Instant::now();
    let ps = wait_within(spawn(&d, &["ps"]), Duration::from_secs(10), "ps during the lookups");
    assert!(ps.status.success(), "{}", stderr(&ps));
    assert!(stdout(&ps).contains("fifo"));
    assert!(
        ps_began.elapsed() < Duration::from_secs(2),
        "ps took {:?}",
        ps_began.elapsed()
    );
    for exec in execs {
        let output = wait_within(exec, Duration::from_secs(10), "exec -u with a FIFO /etc/passwd");
        assert_one_line(&output, "/etc/passwd of the instance is a FIFO");
    }
    assert!(began.elapsed() < Duration::from_secs(10));
    // Numeric ids and root do not need the file (`id` would read it, and wait on the FIFO
    // in the container: the workload's own business).
    let uid = "grep ^Uid: /proc/self/status | cut -f2";
    assert_eq!(d.ok(&["exec", "-u", "1000:1000", "fifo", "sh", "-c", uid]), "1000\n");
    assert_eq!(d.ok(&["exec", "fifo", "sh", "-c", uid]), "0\n");

    // Links to the host's files resolve inside the rootfs, as in the container: a user
    // only the host's file names is never found.
    let host = temp_dir("bt-marker");
    let marker = format!("berthmarker{:08x}", rand_u32());
    let host_passwd = host.join("passwd");
    let host_group = host.join("group");
    std::fs::write(&host_passwd, format!("{marker}:x:4242:4242::/:/bin/sh\n")).unwrap();
    std::fs::write(&host_group, format!("{marker}:x:4243:\n")).unwrap();
    let climbing = format!("../../../../../../../..{}", host_group.display());
    container_ready(
        &d,
        "links",
        &format!(
            "ln -sf {} /etc/passwd && ln -sf {climbing} /etc/group && touch /ready && sleep 600",
            host_passwd.display()
        ),
    );
    let output = d.run(&["exec", "-u", &marker, "links", "true"]);
    assert_one_line(&output, &format!("no user '{marker}'"));
    let output = d.run(&["exec", "-u", &format!("0:{marker}"), "links", "true"]);
    assert_one_line(&output, &format!("no group '{marker}'"));

    // The start path reads the image's files the same way.
    let archive = busybox_variant(&host, &[Extra::Link("etc/passwd", host_passwd.to_str().unwrap())]);
    d.ok(&["image", "import", "--tag", "linked", archive.to_str().unwrap()]);
    let output = d.run(&["run", "--rm", "-u", &marker, "linked", "true"]);
    assert_one_line(&output, &format!("no user '{marker}'"));
    // A link inside the rootfs is followed there.
    let archive = busybox_variant(
        &host,
        &[
            Extra::File("etc/passwd.real", 0o644, b"app:x:77:77::/:/bin/sh\n"),
            Extra::Link("etc/passwd", "/etc/passwd.real"),
        ],
    );
    d.ok(&["image", "import", "--tag", "inside", archive.to_str().unwrap()]);
    assert_eq!(d.ok(&["run", "--rm", "-u", "app", "inside", "id", "-u"]), "77\n");

    // A huge (sparse) /etc/passwd is refused by its size, not read.
    container_ready(&d, "huge", "truncate -s 8G /etc/passwd && touch /ready && sleep 600");
    let began = Instant::now();
    let output = d.run(&["exec", "-u", "someuser", "huge", "true"]);
    assert_one_line(&output, "/etc/passwd of the instance is larger than 4 MiB");
    assert!(began.elapsed() < Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&host);
}

fn log_files(dir: &Path, name: &str) -> Vec<(PathBuf, u64)> {
    let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(name))
        .map(|e| (e.path(), e.metadata().unwrap().len()))
        .collect();
    files.sort();
    files
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn log_options_cap_container_logs_and_follow_survives_rotation() {
    let d = Daemon::with_busybox();
    // 100000 numbered lines in 50 bursts: about 7 MB of records through 128 KiB files.
    let script =
        "sleep 1; i=0; while [ $i -lt 50 ]; do seq $((i*2000+1)) $((i*2000+2000)); i=$((i+1)); sleep 0.2; done";
    d.ok(&[
        "run",
        "-d",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=128k",
        "--log-opt",
        "max-file=5",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    // Following from before the first line (the script waits a second).
    let follower = spawn(&d, &["logs", "-f", "chatty"]);
    let followed = wait_within(follower, Duration::from_secs(120), "logs -f");
    let expected: String = (1..=100_000).map(|n| format!("{n}\n")).collect();
    let gaps: Vec<String> = stdout(&followed)
        .lines()
        .map(|l| l.parse::<u64>().unwrap_or(0))
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| format!("{}..{}", w[0], w[1]))
        .collect();
    assert!(
        stdout(&followed) == expected,
        "logs -f lost or repeated lines across rotations: {} bytes instead of {}; gaps {gaps:?}",
        followed.stdout.len(),
        expected.len()
    );
    assert_eq!(d.inspect("chatty")["exit_code"], 0);

    let id = d.inspect("chatty")["id"].as_str().unwrap().to_string();
    let files = log_files(&d.instance_dir(&id), "container.log");
    assert_eq!(files.len(), 5, "{files:?}");
    for (path, size) in &files {
        assert!(*size <= 128 << 10, "{} has {size} bytes", path.display());
        assert_eq!(std::fs::metadata(path).unwrap().mode() & 0o777, 0o600);
    }
    // `logs` shows what is kept, oldest first, up to the newest line.
    let all = d.ok(&["logs", "chatty"]);
    let numbers: Vec<u64> = all.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(numbers.last(), Some(&100_000));
    assert!(numbers.len() > 5_000, "only {} lines kept", numbers.len());
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "lines out of order");
    assert_eq!(d.ok(&["logs", "--tail", "1", "chatty"]), "100000\n");
    assert_eq!(d.ok(&["logs", "--tail", "3", "chatty"]), "99998\n99999\n100000\n");
    // A tail longer than the current file starts in a rotated one.
    let expected: String = (95_001..=100_000).map(|n| format!("{n}\n")).collect();
    assert!(d.ok(&["logs", "--tail", "5000", "chatty"]) == expected, "--tail 5000");

    // A big log: --tail reads from the end, so the daemon's peak memory hardly moves.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "big",
        "--log-opt",
        "max-size=1g",
        "--log-opt",
        "max-file=1",
        "busybox",
        "sh",
        "-c",
        "head -c 200000000 /dev/zero | tr '\\0' x; echo; echo last-line",
    ]);
    assert_eq!(d.ok(&["wait", "big"]).trim(), "0");
    let id = d.inspect("big")["id"].as_str().unwrap().to_string();
    let size = std::fs::metadata(d.instance_dir(&id).join("container.log"))
        .unwrap()
        .len();
    assert!(size > 200_000_000, "the log has {size} bytes");
    let before = vm_hwm_kib(d.pid());
    assert_eq!(d.ok(&["logs", "--tail", "1", "big"]), "last-line\n");
    let after = vm_hwm_kib(d.pid());
    assert!(
        after.saturating_sub(before) < 32 << 10,
        "logs --tail 1 on a {size}-byte log raised the daemon's peak memory from {before} to {after} KiB"
    );
}

#[test]
fn bad_log_options_are_refused_in_one_line() {
    let d = Daemon::with_busybox();
    for (option, named) in [
        ("max-size=12q", "max-size=12q"),
        ("max-size=1k", "max-size=1k"),
        ("max-file=0", "max-file=0"),
        ("max-file=1000", "max-file=1000"),
        ("compress=true", "'compress'"),
        ("max-size", "'max-size'"),
    ] {
        let output = d.run(&["run", "--rm", "--log-opt", option, "busybox", "true"]);
        assert!(!output.status.success());
        let line = error_line(&output);
        assert!(line.contains("--log-opt") && line.contains(named), "{option}: {line}");
    }
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    // The API checks what the CLI would have.
    let body = r#"{"image":"busybox","command":["true"],"log":{"max_files":0}}"#;
    let reply = d.raw_request(
        format!(
            "POST /v1/instances HTTP/1.1\r\nHost: berth\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("max-file=0"), "{reply}");
    assert_eq!(d.ok(&["ps", "-aq"]), "");

    // A daemon whose [logs] defaults are wrong does not start, and says which.
    let dir = temp_dir("bt-badlogs");
    std::fs::write(dir.join("config.toml"), "[logs]\nmax_size = \"tiny\"\n").unwrap();
    let output = Command::new(BERTH)
        .args(["daemon", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(error_line(&output).contains("logs.max_size"), "{}", stderr(&output));
    let _ = std::fs::remove_dir_all(&dir);
}

fn mount_options(mountpoint: &Path) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(4) == Some(&mountpoint.to_str().unwrap())).then(|| fields[5].to_string())
    })
}

#[test]
fn a_vm_console_and_status_are_capped_and_its_volume_is_mounted_nosuid_nodev() {
    let d = Daemon::with_busybox();
    d.ok(&["volume", "create", "--size", "64m", "vmdata"]);
    // The guest floods its serial console, leaves a setuid binary and a device node on its
    // volume, and exits 3 (reported through the capped status port).
    let script = "head -c 1500000 /dev/zero | tr '\\0' x > /dev/ttyS0; \
                  cp /bin/busybox /data/suid && chmod 4755 /data/suid; mknod /data/null c 1 3; exit 3";
    let output = d.run(&[
        "run",
        "--vm",
        "--name",
        "noisy",
        "--log-opt",
        "max-size=128k",
        "--log-opt",
        "max-file=2",
        "-v",
        "vmdata:/data",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let id = d.inspect("noisy")["id"].as_str().unwrap().to_string();
    let dir = d.instance_dir(&id);
    let console = log_files(&dir, "console.log");
    assert_eq!(console.len(), 2, "{console:?}");
    for (path, size) in &console {
        assert!(*size <= 128 << 10, "{} has {size} bytes", path.display());
    }
    let status: u64 = log_files(&dir, "guest-status").iter().map(|(_, size)| size).sum();
    assert!(status < 64 << 10, "guest-status has {status} bytes");

    // The host mounts the volume for a container: nosuid,nodev, so what the guest wrote
    // is data on the host.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "reader",
        "-v",
        "vmdata:/data",
        "busybox",
        "sleep",
        "600",
    ]);
    let mountpoint = d.state.join("volumes/vmdata/mnt");
    let options = mount_options(&mountpoint).expect("the volume is mounted on the host");
    assert!(
        options.split(',').any(|o| o == "nosuid") && options.split(',').any(|o| o == "nodev"),
        "{options}"
    );
    let mode = std::fs::metadata(mountpoint.join("suid")).unwrap().mode();
    assert_eq!(mode & 0o4000, 0o4000, "the guest's setuid file is there");
    let output = d.run(&["exec", "reader", "cat", "/data/null"]);
    assert!(!output.status.success(), "the guest's device node opened");
    d.ok(&["rm", "-f", "reader", "noisy"]);
}

/// Runs `args` as the unprivileged `nobody`, as any local user could: through a shell, as
/// setpriv itself still holds root's capabilities when it looks the program up.
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$@\"", "sh"])
        .args(args)
        .output()
        .expect("setpriv")
}

/// Files under `root` that hold `needle`, not descending into mounts or image layers.
fn files_holding(root: &Path, needle: &[u8], found: &mut Vec<PathBuf>) {
    let device = std::fs::symlink_metadata(root).unwrap().dev();
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() && meta.dev() == device && !path.ends_with("layers") {
            files_holding(&path, needle, found);
        } else if meta.is_file() && meta.len() < 64 << 20 {
            let data = std::fs::read(&path).unwrap_or_default();
            if data.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
}

/// Directories whose contents belong to an instance or an image (its own modes, as the
/// image or the workload set them), reached only through private berth directories.
fn is_instance_or_image_content(path: &Path) -> bool {
    let parent = path.parent().and_then(Path::file_name).and_then(|n| n.to_str());
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    parent == Some("layers") || matches!(name, "upper" | "work" | "rootfs" | "layer" | "mnt" | "instance-store")
}

/// Entries under `root` that group or others may use, with their modes. Mount points
/// (volumes, rootfs, namespace pins) and instance or image content carry the modes of what
/// they hold; they count as private when the directory around them is.
fn exposed_entries(root: &Path, exposed: &mut Vec<String>) {
    let device = std::fs::symlink_metadata(root).unwrap().dev();
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() || meta.dev() != device || is_instance_or_image_content(&path) {
            continue;
        }
        // Bound into the container, where its users read them; private around them.
        let for_the_container = path.parent().is_some_and(|p| p.ends_with("etc"))
            && matches!(
                path.file_name().and_then(|n| n.to_str()),
                Some("hosts" | "hostname" | "resolv.conf")
            );
        // Directories may be traversable (0711/0710), never listable or writable.
        let allowed = if meta.is_dir() {
            0o011
        } else if for_the_container {
            0o044
        } else {
            0
        };
        if mode & 0o077 & !allowed != 0 {
            exposed.push(format!("{:o} {}", mode, path.display()));
        }
        if meta.is_dir() {
            exposed_entries(&path, exposed);
        }
    }
}

#[test]
fn the_state_directory_is_private_and_non_root_containers_still_run() {
    let d = Daemon::with_busybox();
    let dir = temp_dir("bt-suid");
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let archive = busybox_variant(&dir, &[Extra::File("bin/busybox-suid", 0o4755, &busybox)]);
    d.ok(&["image", "import", "--tag", "suid", archive.to_str().unwrap()]);
    let secret = format!("berth-secret-{:08x}", rand_u32());
    d.ok(&[
        "run",
        "-d",
        "--name",
        "holder",
        "-e",
        &format!("SECRET={secret}"),
        "-v",
        "private:/data",
        "busybox",
        "sleep",
        "600",
    ]);

    // Non-root users in containers still reach what they need.
    let script = "id -u; cat /etc/hosts > /dev/null && echo hosts; ls / > /dev/null && echo root; \
                  echo x > /tmp/x && echo tmp; cd /home && echo workdir";
    assert_eq!(
        d.ok(&["run", "--rm", "-u", "nobody", "busybox", "sh", "-c", script]),
        "65534\nhosts\nroot\ntmp\nworkdir\n"
    );
    assert_eq!(
        d.ok(&["run", "--rm", "-u", "nobody", "-w", "/new/dir", "busybox", "pwd"]),
        "/new/dir\n"
    );
    assert_eq!(d.ok(&["exec", "-u", "nobody", "holder", "id", "-u"]), "65534\n");
    assert!(!d
        .ok(&["exec", "-u", "nobody", "holder", "cat", "/etc/resolv.conf"])
        .is_empty());
    // Files the container's processes create get Docker's umask, not the daemon's.
    assert_eq!(
        d.ok(&["exec", "holder", "sh", "-c", "touch /tmp/made && stat -c %a /tmp/made"]),
        "644\n"
    );

    // Nothing in the state directory is open to group or others.
    let mode = std::fs::metadata(&d.state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let mut exposed = Vec::new();
    exposed_entries(&d.state, &mut exposed);
    assert!(exposed.is_empty(), "open to other users:\n{}", exposed.join("\n"));

    // The secret is in the state, and no local user reads it there.
    let mut holding = Vec::new();
    files_holding(&d.state, secret.as_bytes(), &mut holding);
    let names: Vec<String> = holding
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(names.iter().any(|n| n == "config.json"), "{holding:?}");
    let id = d.inspect("holder")["id"].as_str().unwrap().to_string();
    let supervisor = d.instance_dir(&id).join("supervisor.json");
    let database = d.state.join("berth.db");
    for path in holding.iter().chain([&supervisor, &database]) {
        let output = as_nobody(&["cat", path.to_str().unwrap()]);
        assert!(!output.status.success(), "nobody read {}", path.display());
        assert!(stderr(&output).contains("Permission denied"), "{}", stderr(&output));
    }

    // The imported image's setuid binary is in the layer store, out of a local user's reach.
    let layers = d.state.join("images/layers");
    let suid = std::fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("bin/busybox-suid"))
        .find(|p| p.exists())
        .expect("the setuid file is in a layer");
    assert_eq!(std::fs::metadata(&suid).unwrap().mode() & 0o4000, 0o4000);
    let output = as_nobody(&[suid.to_str().unwrap(), "id", "-u"]);
    assert!(
        !output.status.success(),
        "nobody ran the layer's setuid binary: {}",
        stdout(&output)
    );
    assert!(stderr(&output).contains("Permission denied"), "{}", stderr(&output));
    // Inside a container the image works as it should.
    assert_eq!(d.ok(&["run", "--rm", "suid", "/bin/busybox-suid", "id", "-u"]), "0\n");
    let _ = std::fs::remove_dir_all(&dir);
}
