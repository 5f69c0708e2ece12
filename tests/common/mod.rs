//! The harness: a real berth daemon per test, with its own state directory and socket,
//! driven through the real CLI as a user would. Needs root (namespaces, cgroups, mounts).

#![allow(dead_code)]

pub mod etcd;
pub mod hosts;
pub mod nfs;
pub mod published;
pub mod registry;

/// The Docker-API and dashboard tests take turns: Compose's published port on 127.0.0.1 was
/// seen answering nothing while another of them started a VM on its own daemon. The likely
/// cause was two daemons publishing the same fixed host port (the first daemon's rule wins);
/// tests now take free ports (`published::free_port`) and daemons refuse a port another holds,
/// and a failed check prints the daemon's DNAT chain and nat OUTPUT (`published::NatView`).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed while holding the lock poisons it; the next still runs.
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A directory under /tmp with a short name (socket paths are limited to 108 bytes).
pub fn temp_dir(prefix: &str) -> PathBuf {
    let suffix: u32 = std::process::id() ^ (Instant::now().elapsed().subsec_nanos()) ^ rand_u32();
    let dir = PathBuf::from(format!("/tmp/{prefix}-{suffix:08x}"));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A TCP port on 127.0.0.1 free at the time of asking (for a listener a daemon opens).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    u32::from_ne_bytes(bytes)
}

/// A rootfs tarball made from Debian's busybox-static: /bin/busybox with its applets as
/// symlinks, /etc/passwd and /etc/group. Built once per test run.
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = temp_dir("bt-fixture");
        let path = dir.join("busybox.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("create tar"));
        let add_dir = |builder: &mut tar::Builder<std::fs::File>, name: &str, mode: u32| {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(mode);
            header.set_size(0);
            header.set_mtime(0);
            builder.append_data(&mut header, name, std::io::empty()).expect("dir");
        };
        for (name, mode) in [
            ("bin", 0o755),
            ("etc", 0o755),
            ("tmp", 0o1777),
            ("root", 0o700),
            ("home", 0o755),
        ] {
            add_dir(&mut builder, name, mode);
        }
        builder
            .append_path_with_name("/bin/busybox", "bin/busybox")
            .expect("busybox-static must be installed (/bin/busybox)");
        let applets = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&applets.stdout).lines() {
            if applet == "busybox" || applet.is_empty() {
                continue;
            }
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder
                .append_link(&mut header, format!("bin/{applet}"), "busybox")
                .expect("applet link");
        }
        let mut add_file = |name: &str, content: &str| {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_mode(0o644);
            header.set_size(content.len() as u64);
            builder
                .append_data(&mut header, name, content.as_bytes())
                .expect("file");
        };
        add_file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        );
        add_file("etc/group", "root:x:0:\nnogroup:x:65534:\n");
        builder.finish().expect("finish tar");
        path
    })
}

pub struct Daemon {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    /// The first two octets of this daemon's default subnet, e.g. "10.103".
    pub subnet_prefix: String,
    /// The bridge of this daemon's default network, removed when the test ends (asked of the
    /// daemon when the config names none).
    pub bridge: Option<String>,
    /// More `berth daemon` arguments (`--store ...`).
    extra_args: Vec<String>,
    /// The network namespace (a test host) the daemon runs in, if not this one.
    netns: Option<String>,
    child: Option<Child>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with_config("")
    }

    /// A daemon whose config file also holds `extra` (top-level TOML keys, then sections).
    /// Each test daemon gets a default network of its own (subnet and bridge), as separate
    /// hosts would, and forwards no DNS query off this machine unless `extra` has a `[dns]`.
    pub fn start_with_config(extra: &str) -> Daemon {
        Daemon::start_with_args(&[], extra)
    }

    /// As `start_with_config`, with more `berth daemon` arguments.
    pub fn start_with_args(args: &[&str], extra: &str) -> Daemon {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // BERTH_TEST_SUBNET_BASE/SPAN let two test runs on one machine use disjoint subnets.
        let env_number = |name: &str, default: u32| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(default)
        };
        let base = env_number("BERTH_TEST_SUBNET_BASE", 100);
        let span = env_number("BERTH_TEST_SUBNET_SPAN", 150).max(1);
        // The next subnet of the range no interface has yet: a long test may still hold the
        // one this counter gave out a round before.
        let in_use = Command::new("ip")
            .args(["-o", "-4", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let subnet_prefix = (0..span)
            .map(|k| format!("10.{}", base + ((n + k) % span)))
            .find(|prefix| !in_use.contains(&format!(" {prefix}.0.")))
            .unwrap_or_else(|| format!("10.{}", base + (n % span)));
        let bridge = format!("bb-t{:x}-{n}", std::process::id() % 0xfff);
        let mut daemon = Daemon::launch(
            &format!(
                "default_subnet = \"{subnet_prefix}.0.0/24\"\ndefault_bridge = \"{bridge}\"\n{}",
                test_config(extra)
            ),
            args,
        );
        daemon.subnet_prefix = subnet_prefix;
        daemon.bridge = Some(bridge);
        daemon
    }

    /// A daemon with exactly this config file (its default network is what the daemon
    /// derives unless the config names one).
    pub fn start_with_exact_config(config: &str) -> Daemon {
        Daemon::launch(config, &[])
    }

    fn launch(config: &str, args: &[&str]) -> Daemon {
        Daemon::launch_in(config, args, None)
    }

    fn launch_in(config: &str, args: &[&str], netns: Option<&str>) -> Daemon {
        let dir = temp_dir("bt");
        std::fs::write(dir.join("config.toml"), config).expect("config");
        let mut daemon = Daemon {
            state: dir.join("state"),
            socket: dir.join("berth.sock"),
            subnet_prefix: String::new(),
            bridge: None,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            netns: netns.map(str::to_string),
            dir,
            child: None,
        };
        daemon.spawn();
        daemon
    }

    /// A daemon run inside test host `netns` (`hosts::TestHosts`): its bridges, chains and
    /// instances are that host's; its socket is a file here as any other's.
    pub fn start_in_netns(netns: &str, args: &[&str]) -> Daemon {
        Daemon::launch_in(&test_config(""), args, Some(netns))
    }

    /// Starts a daemon expecting it to refuse to start; returns its error, which must be one
    /// line. Checks that it left no iptables chain behind.
    pub fn refused_with_exact_config(config: &str) -> String {
        let dir = temp_dir("bt");
        std::fs::write(dir.join("config.toml"), config).expect("config");
        let state = dir.join("state");
        let line = refused_start(
            &state,
            &dir.join("berth.sock"),
            &dir.join("config.toml"),
            &dir.join("daemon.log"),
        );
        let identity = berth_daemon::identity::NodeIdentity::read(&state).ok().flatten();
        let left = identity
            .as_ref()
            .and_then(|i| i.tag.clone())
            .map(|tag| berth_net::firewall::rules_mentioning(&tag))
            .unwrap_or_default();
        if let Some(firewall) = identity.filter(|i| i.tag.is_some()).and_then(|i| i.firewall().ok()) {
            firewall.remove_all();
        }
        // Not even the bind of its own `instances` directory.
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(dir.to_str().unwrap()))
            .count();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(left.is_empty(), "a refused daemon left rules behind: {left:?}");
        assert_eq!(mounted, 0, "a refused daemon left mounts under {}", dir.display());
        line
    }

    /// Writes a new config file (`extra`, then the test defaults, as `start_with_config`).
    pub fn rewrite_config(&self, extra: &str) {
        std::fs::write(self.config_file(), test_config(extra)).expect("config");
    }

    /// Starts the (stopped) daemon again on its state, expecting it to refuse; its one
    /// error line.
    pub fn restart_refused(&self) -> String {
        assert!(self.child.is_none(), "the daemon still runs");
        refused_start(
            &self.state,
            &self.socket,
            &self.config_file(),
            &self.dir.join("refused.log"),
        )
    }

    /// This daemon's node identity (kept in its state directory).
    pub fn identity(&self) -> berth_daemon::identity::NodeIdentity {
        berth_daemon::identity::NodeIdentity::read(&self.state)
            .expect("node identity")
            .expect("the daemon made its node identity")
    }

    /// The iptables chain of this daemon's published ports.
    pub fn dnat_chain(&self) -> String {
        self.identity().firewall().expect("chains").dnat_chain().to_string()
    }

    /// A daemon with the busybox image imported as `busybox`.
    pub fn with_busybox() -> Daemon {
        let daemon = Daemon::start();
        daemon.ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);
        daemon
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("daemon log");
        let mut command = match &self.netns {
            None => Command::new(BERTH),
            Some(netns) => {
                // nsenter joins only the network namespace (`ip netns exec` would also mount
                // a fresh /sys, hiding the cgroup hierarchies) and execs berth: the child is
                // the daemon.
                let mut command = Command::new("nsenter");
                command.arg(format!("--net=/run/netns/{netns}")).arg(BERTH);
                command
            }
        };
        let child = command
            .args(["daemon", "--state-dir"])
            .arg(&self.state)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--config")
            .arg(self.config_file())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start berth daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the daemon did not come up; log:\n{}", self.log());
    }

    fn config_file(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// `kill -9` the daemon, then start it again on the same state.
    pub fn crash_and_restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart_only(&mut self) {
        self.spawn();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BERTH);
        command.args(args).env("BERTH_HOST", &self.socket);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().expect("run berth")
    }

    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run berth");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
        drop(stdin);
        child.wait_with_output().expect("wait berth")
    }

    /// Runs berth and returns stdout; panics with the output if it failed.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "berth {} failed ({:?}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs berth expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "berth {} should have failed but printed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    pub fn inspect(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect JSON")
    }

    /// How many instance directories the state directory holds. `.discarded` is not one: it
    /// holds directories being deleted after a removal (berth_storage::discard).
    pub fn instance_dirs(&self) -> usize {
        std::fs::read_dir(self.state.join("instances"))
            .expect("the instances directory")
            .flatten()
            .filter(|entry| entry.file_name() != ".discarded")
            .count()
    }

    /// Polls `inspect` until `check` holds or the timeout passes.
    pub fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.inspect(name);
            if check(&value) || Instant::now() > deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends raw bytes to the API socket and returns the raw reply.
    pub fn raw_request(&self, request: &[u8]) -> String {
        use std::io::Read;
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
        stream.write_all(request).expect("write");
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("the daemon runs")
    }

    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.state.join("instances").join(&id[..12])
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.run(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).lines() {
                let _ = self.run(&["rm", "-f", id]);
            }
            // Networks a failed test left: their bridges and rules would shadow the next
            // test's subnets.
            let listed = self.run(&["network", "ls", "--json"]);
            let networks: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap_or_default();
            for network in &networks {
                if network["name"] == "default" {
                    if let Some(bridge) = network["bridge"].as_str() {
                        self.bridge = Some(bridge.to_string());
                    }
                } else {
                    let _ = self.run(&["network", "rm", network["name"].as_str().unwrap_or("")]);
                }
            }
            // Volumes a test left: their host mounts (and loop devices) go with them.
            let listed = self.run(&["volume", "ls", "--json"]);
            let volumes: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap_or_default();
            for volume in &volumes {
                let _ = self.run(&["volume", "rm", "--force", volume["name"].as_str().unwrap_or("")]);
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A host keeps its default network and chains across daemon restarts; a test host
        // does not. (Test daemons never use the default state dir's shared names.)
        if let Ok(Some(identity)) = berth_daemon::identity::NodeIdentity::read(&self.state) {
            if identity.tag.is_some() {
                if let Ok(firewall) = identity.firewall() {
                    firewall.remove_all();
                }
                // Nor its cgroup parents (empty now): left, they pile up by the thousand
                // over runs and slow every cgroup operation on the machine.
                remove_cgroup_parent(&identity.cgroup_parent());
            }
        }
        // A test host's bridges go with its namespace.
        if let (Some(bridge), None) = (&self.bridge, &self.netns) {
            let _ = Command::new("ip").args(["link", "del", bridge]).status();
        }
        // Whatever a failed test left mounted under our directory.
        if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") {
            let prefix = self.dir.to_string_lossy().into_owned();
            let mut points: Vec<&str> = mountinfo
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&prefix))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for point in points {
                let _ = Command::new("umount").arg("-l").arg(point).status();
            }
        }
        if std::env::var_os("BERTH_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `extra` (top-level keys, then sections), no DNS forwarding off this machine unless it has
/// a `[dns]`, and the tests' default limits.
fn test_config(extra: &str) -> String {
    let dns = if extra.contains("[dns]") {
        ""
    } else {
        "[dns]\nupstreams = []\n"
    };
    format!("{extra}{dns}[defaults]\ncpus = \"1\"\nmemory = \"256m\"\npids = \"512\"\n")
}

/// Runs `berth daemon` expecting it to exit with an error within 20 s; its one error line.
fn refused_start(state: &Path, socket: &Path, config: &Path, log: &Path) -> String {
    let mut child = Command::new(BERTH)
        .args(["daemon", "--state-dir"])
        .arg(state)
        .arg("--socket")
        .arg(socket)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("start berth daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the daemon should have refused to start:\n{output}"
    );
    let errors: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("berth daemon: error"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{output}");
    errors[0].to_string()
}

/// How many mounts lie under `dir` (what a test's daemon left mounted). The daemon's own
/// bind of its `instances` directory (berth_container::mount_view) is not one.
pub fn mounts_under(dir: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .filter(|l| {
            !l.split(' ')
                .nth(4)
                .is_some_and(|point| point.ends_with("/state/instances"))
        })
        .count()
}

/// How many loop devices are backed by files under `dir`.
pub fn loop_devices_under(dir: &Path) -> usize {
    let output = Command::new("losetup").arg("-a").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .count()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The first line of stderr that is not empty (an error should be one line).
pub fn error_line(output: &Output) -> String {
    stderr(output)
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_string()
}

/// The cgroup directory of an instance in one hierarchy (`controller` "" for v2): under its
/// node's parent, `berth` or `berth-<tag>`.
pub fn cgroup_dir(id: &str, controller: &str) -> Option<PathBuf> {
    let short = &id[..12];
    let root = Path::new("/sys/fs/cgroup").join(controller);
    std::fs::read_dir(&root)
        .ok()?
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name == "berth" || name.starts_with("berth-")
        })
        .map(|entry| entry.path().join(short))
        .find(|dir| dir.is_dir())
}

/// Reads a cgroup v1 or v2 file of an instance.
pub fn cgroup_file(id: &str, controller: &str, file: &str) -> Option<String> {
    cgroup_dir(id, controller)
        .or_else(|| cgroup_dir(id, ""))
        .and_then(|dir| std::fs::read_to_string(dir.join(file)).ok())
        .map(|s| s.trim().to_string())
}

/// Removes a test node's (empty) cgroup parent from every hierarchy, children first.
fn remove_cgroup_parent(parent: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for hierarchy in hierarchies.flatten() {
        let dir = hierarchy.path().join(parent);
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// A loop device over a file (read-only if asked), detached when dropped.
pub struct LoopDevice(pub String);

impl LoopDevice {
    pub fn over(file: &Path, read_only: bool) -> LoopDevice {
        let mut command = Command::new("losetup");
        command.args(["--find", "--show"]);
        if read_only {
            command.arg("--read-only");
        }
        let output = command.arg(file).output().expect("losetup");
        assert!(
            output.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        LoopDevice(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}
