//! cgroup v2, exercised rather than assumed. This host runs cgroup v1, so the v2 host is a
//! berth VM: its guest kernel has the unified hierarchy (mounted by berth's guest agent) and
//! the berth binary under test runs in it as a daemon. The suite
//! (`fixtures/cgroup-v2-suite.sh`) drives that daemon through the CLI and prints what it
//! observes; this side judges it. TCG is slow, so the suite is one VM boot with small checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{busybox_tar, temp_dir, Daemon, BERTH};
use crate::devices::{assert_devices_denied, DEVICE_PROBE};

const SUITE: &str = include_str!("fixtures/cgroup-v2-suite.sh");

/// Kernel modules the daemon in the guest needs (overlayfs for container roots; a bridge and
/// iptables for its default network); their dependencies are added.
const GUEST_MODULES: &[&str] = &[
    "overlay",
    "bridge",
    "iptable_filter",
    "iptable_nat",
    "xt_addrtype",
    "xt_conntrack",
    "xt_MASQUERADE",
];

/// iptables as the daemon runs it, from Debian's iptables package (the legacy backend: its
/// kernel side is a handful of modules).
const IPTABLES: &str = "/usr/sbin/xtables-legacy-multi";
const XTABLES_EXTENSIONS: &str = "/usr/lib/x86_64-linux-gnu/xtables";

/// The whole suite, boot to power-off, may take this long before the VM is killed.
const SUITE_TIMEOUT: Duration = Duration::from_secs(420);

/// A rootfs tarball written entry by entry, parents first.
struct ImageTar {
    builder: tar::Builder<File>,
    directories: BTreeSet<String>,
}

impl ImageTar {
    fn create(path: &Path) -> ImageTar {
        ImageTar {
            builder: tar::Builder::new(File::create(path).expect("create the image tar")),
            directories: BTreeSet::new(),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header
    }

    fn directory(&mut self, path: &str, mode: u32) {
        let path = path.trim_matches('/').to_string();
        if path.is_empty() || self.directories.contains(&path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.directory(parent, 0o755);
        }
        let mut header = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut header, &path, std::io::empty())
            .expect("directory entry");
        self.directories.insert(path);
    }

    fn parent_of(&mut self, path: &str) {
        if let Some((parent, _)) = path.trim_matches('/').rsplit_once('/') {
            self.directory(parent, 0o755);
        }
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.parent_of(path);
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut header, path.trim_start_matches('/'), data)
            .expect("file entry");
    }

    /// A file of this host (symlinks followed) at `path` in the image.
    fn host_file(&mut self, host: &Path, path: &str) {
        let data = std::fs::read(host).unwrap_or_else(|e| panic!("reading {}: {e}", host.display()));
        self.file(path, 0o755, &data);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parent_of(path);
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut header, path.trim_start_matches('/'), target)
            .expect("symlink entry");
    }

    /// `program` and the shared libraries it loads, each at its own path.
    fn program_with_libraries(&mut self, program: &Path, path: &str, added: &mut BTreeSet<PathBuf>) {
        self.host_file(program, path);
        let ldd = Command::new("ldd").arg(program).output().expect("ldd");
        for library in String::from_utf8_lossy(&ldd.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().find(|word| word.starts_with('/')))
            .map(PathBuf::from)
        {
            if added.insert(library.clone()) {
                self.host_file(&library, &library.to_string_lossy());
            }
        }
    }

    fn finish(mut self) {
        self.builder.finish().expect("finish the image tar");
    }
}

/// The `depends=` of a kernel module, read from its `.modinfo` strings.
fn module_dependencies(module: &Path) -> Vec<String> {
    let data = std::fs::read(module).unwrap_or_else(|e| panic!("reading {}: {e}", module.display()));
    data.split(|byte| *byte == 0)
        .find_map(|field| field.strip_prefix(b"depends="))
        .map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .filter(|name| !name.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `wanted` and everything they depend on, dependencies first: (name, file).
fn modules_in_load_order(tree: &Path, wanted: &[&str]) -> Vec<(String, PathBuf)> {
    fn index(dir: &Path, found: &mut BTreeMap<String, PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                index(&path, found);
            } else if let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                found.insert(name.replace('-', "_"), path.clone());
            }
        }
    }
    fn visit(name: &str, files: &BTreeMap<String, PathBuf>, order: &mut Vec<(String, PathBuf)>) {
        let name = name.replace('-', "_");
        if order.iter().any(|(loaded, _)| *loaded == name) {
            return;
        }
        let file = files
            .get(&name)
            .unwrap_or_else(|| panic!("the guest kernel has no module {name}"));
        for dependency in module_dependencies(file) {
            visit(&dependency, files, order);
        }
        order.push((name, file.clone()));
    }
    let mut files = BTreeMap::new();
    index(tree, &mut files);
    let mut order = Vec::new();
    for name in wanted {
        visit(name, &files, &mut order);
    }
    order
}

/// The v2 host's image: busybox, the berth binary under test, iptables, the guest kernel's
/// modules the daemon needs, and the busybox rootfs the suite imports inside.
fn v2_host_image(dir: &Path) -> PathBuf {
    let path = dir.join("v2-host.tar");
    let mut image = ImageTar::create(&path);
    for (directory, mode) in [
        ("bin", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("run", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("var/lib", 0o755),
    ] {
        image.directory(directory, mode);
    }
    image.host_file(Path::new("/bin/busybox"), "/bin/busybox");
    let applets = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if !applet.is_empty() && applet != "busybox" {
            image.symlink(&format!("/bin/{applet}"), "busybox");
        }
    }
    image.file("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    image.file("/etc/group", 0o644, b"root:x:0:\n");

    let mut libraries = BTreeSet::new();
    image.program_with_libraries(Path::new(BERTH), "/usr/local/bin/berth", &mut libraries);
    assert!(
        Path::new(IPTABLES).exists(),
        "{IPTABLES} is missing: install Debian's iptables package (scripts/install-deps.sh)"
    );
    image.program_with_libraries(Path::new(IPTABLES), IPTABLES, &mut libraries);
    image.symlink("/usr/sbin/iptables", "xtables-legacy-multi");
    for extension in std::fs::read_dir(XTABLES_EXTENSIONS)
        .expect("iptables extensions")
        .flatten()
    {
        let name = extension.file_name().to_string_lossy().into_owned();
        image.host_file(&extension.path(), &format!("{XTABLES_EXTENSIONS}/{name}"));
    }

    let kernel = berth_vm::assets::find_guest_kernel(
        Path::new(berth_vm::assets::DEFAULT_GUEST_DIR),
        berth_vm::assets::KernelChoice::Debian,
    )
    .expect("the guest kernel (scripts/install-deps.sh)");
    let modules = modules_in_load_order(&kernel.modules, GUEST_MODULES);
    let mut order = String::new();
    for (name, file) in &modules {
        image.host_file(file, &format!("/lib/berth-v2/modules/{name}.ko"));
        order.push_str(name);
        order.push('\n');
    }
    image.file("/lib/berth-v2/modules.order", 0o644, order.as_bytes());

    image.host_file(busybox_tar(), "/images/busybox.tar");
    image.file("/images/device-probe.sh", 0o644, DEVICE_PROBE.as_bytes());
    image.finish();
    path
}

/// The suite's `V2 <check> <key> <value>` lines; a key may repeat.
struct Observations {
    values: BTreeMap<(String, String), Vec<String>>,
    output: String,
}

impl Observations {
    fn parse(output: String) -> Observations {
        let mut values: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for line in output.lines() {
            let Some(rest) = line.strip_prefix("V2 ") else { continue };
            let mut parts = rest.splitn(3, ' ');
            let (Some(check), Some(key)) = (parts.next(), parts.next()) else {
                continue;
            };
            let value = parts.next().unwrap_or("").trim().to_string();
            values.entry((check.into(), key.into())).or_default().push(value);
        }
        Observations { values, output }
    }

    fn get(&self, check: &str, key: &str) -> &str {
        match self.values.get(&(check.to_string(), key.to_string())) {
            Some(values) => &values[0],
            None => panic!("the v2 suite reported no '{check} {key}'; its output:\n{}", self.output),
        }
    }

    fn number(&self, check: &str, key: &str) -> f64 {
        let value = self.get(check, key);
        value
            .parse()
            .unwrap_or_else(|_| panic!("'{check} {key}' is not a number: {value}\n{}", self.output))
    }

    fn json(&self, check: &str, key: &str) -> serde_json::Value {
        let value = self.get(check, key);
        serde_json::from_str(value).unwrap_or_else(|e| panic!("'{check} {key}' is not JSON ({e}): {value}"))
    }

    /// `check`'s keys and values, first value of each.
    fn of(&self, check: &str) -> BTreeMap<String, String> {
        self.values
            .iter()
            .filter(|((c, _), _)| c == check)
            .map(|((_, key), values)| (key.clone(), values[0].clone()))
            .collect()
    }
}

/// Runs the suite in a berth VM and returns its observations and how long it took.
fn run_suite() -> (Observations, Duration) {
    // Debian's kernel: the suite loads its modules (overlayfs, bridge, iptables) in the guest,
    // which the kernel built for berth's own VMs has neither built in nor can load.
    let d = Daemon::start_with_config("guest_kernel = \"debian\"\n");
    let dir = temp_dir("bt-v2");
    let image = v2_host_image(&dir);
    d.ok(&["image", "import", "--tag", "v2-host", image.to_str().unwrap()]);
    let started = Instant::now();
    let (stdout_path, stderr_path) = (dir.join("suite.out"), dir.join("suite.err"));
    let mut cli = d
        .command(&[
            "run",
            "--vm",
            "--rm",
            "--name",
            "v2-host",
            "--cpus",
            "2",
            "--memory",
            "1g",
            "--network",
            "none",
            "v2-host",
            "sh",
            "-c",
            SUITE,
        ])
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("suite output"))
        .stderr(File::create(&stderr_path).expect("suite errors"))
        .spawn()
        .expect("run the v2 suite");
    let status = loop {
        if let Some(status) = cli.try_wait().expect("wait for the suite") {
            break Some(status);
        }
        if started.elapsed() > SUITE_TIMEOUT {
            let _ = cli.kill();
            let _ = cli.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = started.elapsed();
    let output = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let errors = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    match status {
        None => panic!("the v2 suite did not finish within {SUITE_TIMEOUT:?}; so far:\n{output}\n{errors}"),
        Some(status) => assert!(
            status.success(),
            "the v2 suite's VM failed ({status}):\n{output}\n{errors}"
        ),
    }
    (Observations::parse(output), elapsed)
}

#[test]
fn cgroup_v2_host_enforces_limits_devices_and_freezer() {
    let (seen, elapsed) = run_suite();
    println!("cgroup v2 suite: {:.1} s in the VM", elapsed.as_secs_f64());

    // The host: the agent mounted cgroup2; the daemon runs on it and enabled its controllers.
    assert_eq!(seen.get("setup", "cgroup2_mounted_by"), "agent");
    assert!(
        seen.get("setup", "info").ends_with("v2"),
        "{}",
        seen.get("setup", "info")
    );
    let enabled: BTreeSet<&str> = seen.get("setup", "subtree_control").split_whitespace().collect();
    for controller in ["cpu", "memory", "pids"] {
        assert!(enabled.contains(controller), "{controller} not enabled: {enabled:?}");
    }

    // CPU quota: cpu.max written, and a busy loop gets about half a CPU, not more.
    assert_eq!(seen.get("cpu_quota", "cpu.max"), "50000 100000");
    let cores = seen.number("cpu_quota", "usage_usec") / seen.number("cpu_quota", "wall_usec");
    assert!(
        cores > 0.15 && cores < 0.65,
        "a busy loop used {cores:.2} CPUs under --cpus 0.5"
    );
    assert!(
        seen.number("cpu_quota", "nr_throttled") > 0.0,
        "the quota never throttled"
    );

    // Stats: nonzero usage of the running container, CPU in nanoseconds (cpu.stat counts
    // microseconds: the loop's busy seconds above must not show as milliseconds).
    let stats = &seen.json("stats", "json")[0];
    let cpu_ns = stats["cpu_usage_ns"].as_f64().unwrap_or(0.0);
    assert!(
        cpu_ns >= seen.number("cpu_quota", "usage_usec") * 1000.0,
        "cpu_usage_ns {cpu_ns} is less than the cgroup's usage in the measured seconds alone: {stats}"
    );
    assert!(stats["memory_usage_bytes"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert_eq!(stats["memory_limit_bytes"], 64 << 20, "{stats}");

    // top lists the container's processes, found through its cgroup.
    assert!(
        seen.get("top", "output").contains("while :; do :; done"),
        "{}",
        seen.get("top", "output")
    );

    // Update: the live cgroup takes the new limits.
    assert_eq!(seen.get("update", "result"), "spin");
    assert_eq!(seen.get("update", "cpu.max"), "25000 100000");
    assert_eq!(seen.get("update", "memory.max"), (96u64 << 20).to_string());
    assert_eq!(seen.get("update", "pids.max"), "99");

    // Pause and unpause: cgroup.freeze; a frozen loop gets no CPU, a thawed one does.
    assert_eq!(seen.get("pause", "state"), "paused");
    assert_eq!(seen.get("pause", "frozen"), "1");
    assert!(
        seen.number("pause", "usage_usec_while_frozen") < 1000.0,
        "a frozen container ran: {}",
        seen.get("pause", "usage_usec_while_frozen")
    );
    assert_eq!(seen.get("unpause", "state"), "running");
    assert_eq!(seen.get("unpause", "frozen"), "0");
    assert!(seen.number("unpause", "usage_usec_after_thaw") > 0.0);

    // Memory: the OOM killer ends the hog, and berth says so (memory.events oom_kill).
    assert_eq!(seen.get("memory_oom", "exit_status"), "137");
    let record = seen.json("memory_oom", "inspect");
    assert_eq!(record["state"], "exited", "{record}");
    assert_eq!(record["exit_code"], 137, "{record}");
    assert_eq!(record["oom_killed"], true, "{record}");

    // Pids: the fork bomb hits pids.max.
    assert!(
        seen.get("pids", "bomb").contains("can't fork"),
        "{}",
        seen.get("pids", "bomb")
    );
    assert_eq!(seen.get("pids", "pids.max"), "8");
    assert!(seen.number("pids", "pids.current") <= 8.0);
    let stats = &seen.json("pids", "stats")[0];
    assert_eq!(stats["pids_limit"], 8, "{stats}");

    // Devices: the eBPF device program gives the same answers as v1's devices controller.
    assert!(
        seen.get("devices", "disk").starts_with("/dev/vd"),
        "{}",
        seen.get("devices", "disk")
    );
    let mut probe = seen.of("devices");
    probe.remove("disk");
    assert_devices_denied(&probe, "the cgroup v2 host");

    assert!(
        seen.values.contains_key(&("done".into(), "daemon_log_lines".into())),
        "{}",
        seen.output
    );
}
