//! The OCI runtime spec (`config.json`) of a container: Docker's defaults for mounts,
//! namespaces, capabilities and masked paths, plus the instance's process and limits.

use std::path::{Path, PathBuf};

use berth_model::driver::DriverError;
use berth_model::Instance;
use oci_spec::runtime::{LinuxResources, Spec};
use serde_json::json;

use berth_image::user::ResolvedUser;

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// What the spec is made from.
pub struct SpecInputs<'a> {
    pub instance: &'a Instance,
    pub user: &'a ResolvedUser,
    pub resources: LinuxResources,
    pub cgroups_path: &'a Path,
    /// Files bind-mounted over the image's /etc/hostname, /etc/hosts, /etc/resolv.conf.
    pub etc_dir: &'a Path,
    /// Volumes, host paths, instance storage and tmpfs the instance asked for.
    pub mounts: Vec<ExtraMount>,
    /// The network namespace: `Some(path)` to join one berth set up, `None` for the host's;
    /// a fresh one (loopback only) when `new_network_namespace`.
    pub network_namespace: Option<PathBuf>,
    pub new_network_namespace: bool,
}

/// A mount beyond the defaults every container gets.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtraMount {
    /// A host path (volumes and instance storage are host directories too).
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
    },
    /// `options` as mount(8) takes them (flags, `size=`, `mode=`).
    Tmpfs { target: String, options: Vec<String> },
}

impl ExtraMount {
    pub fn target(&self) -> &str {
        match self {
            ExtraMount::Bind { target, .. } | ExtraMount::Tmpfs { target, .. } => target,
        }
    }

    /// The OCI form. The runtime resolves `destination` inside the rootfs (a symlink in the
    /// image cannot point it at the host), binds are recursive and private (Docker's
    /// `rprivate`), and read-only binds are read-only all the way down (`rro`).
    fn to_oci(&self) -> serde_json::Value {
        match self {
            ExtraMount::Bind {
                source,
                target,
                read_only,
            } => {
                let mut options = vec!["rbind", "rprivate"];
                if *read_only {
                    options.extend(["ro", "rro"]);
                }
                json!({ "destination": target, "type": "bind", "source": source, "options": options })
            }
            ExtraMount::Tmpfs { target, options } => {
                json!({ "destination": target, "type": "tmpfs", "source": "tmpfs", "options": options })
            }
        }
    }
}

/// Mounts in the order they must be made: parents before what is mounted inside them
/// (`/data` before `/data/cache`), as Docker sorts them; otherwise as given.
pub fn mount_order(mounts: &mut [ExtraMount]) {
    mounts.sort_by_key(|m| m.target().split('/').filter(|p| !p.is_empty()).count());
}

/// Env of the main process: image and user env merged by `berth-daemon`, plus HOME and
/// TERM where missing (as Docker adds them).
pub fn process_env(instance: &Instance, home: &str) -> Vec<String> {
    let mut env = instance.spec.process.env.clone();
    let has = |env: &[String], key: &str| env.iter().any(|e| e.split_once('=').is_some_and(|(k, _)| k == key));
    if !has(&env, "PATH") {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={}", instance.spec.hostname));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={home}"));
    }
    if instance.spec.process.tty && !has(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    env
}

pub fn build_spec(inputs: &SpecInputs<'_>) -> Result<Spec, DriverError> {
    let instance = inputs.instance;
    let process = &instance.spec.process;
    let caps = DEFAULT_CAPABILITIES;
    let bind = |file: &str, destination: &str| {
        json!({
            "destination": destination,
            "type": "bind",
            "source": inputs.etc_dir.join(file),
            "options": ["rbind", "rprivate"]
        })
    };
    let mut extra = inputs.mounts.clone();
    mount_order(&mut extra);
    let mut extra: Vec<serde_json::Value> = extra.iter().map(ExtraMount::to_oci).collect();
    let resources =
        serde_json::to_value(&inputs.resources).map_err(|e| DriverError::Other(format!("encoding resources: {e}")))?;
    let mut document = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": process.tty,
            "user": {
                "uid": inputs.user.uid,
                "gid": inputs.user.gid,
                "additionalGids": inputs.user.additional_gids,
            },
            "args": process.args,
            "env": process_env(instance, &inputs.user.home),
            "cwd": if process.working_dir.is_empty() { "/" } else { process.working_dir.as_str() },
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            // No "noNewPrivileges" (unset means off, as Docker's default): libcontainer 0.7
            // loads the seccomp filter after dropping capabilities whenever the field is
            // present, even as false, and the kernel then refuses the filter.
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": instance.spec.hostname,
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] },
            bind("hostname", "/etc/hostname"),
            bind("hosts", "/etc/hosts"),
            bind("resolv.conf", "/etc/resolv.conf"),
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" },
            ],
            "cgroupsPath": inputs.cgroups_path,
            "resources": resources,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    });
    if let Some(mounts) = document["mounts"].as_array_mut() {
        mounts.append(&mut extra);
    }
    if !instance.spec.seccomp_unconfined {
        document["linux"]["seccomp"] = crate::seccomp::default_filter(caps);
    }
    if let Some(namespaces) = document["linux"]["namespaces"].as_array_mut() {
        match (&inputs.network_namespace, inputs.new_network_namespace) {
            (Some(path), _) => namespaces.push(json!({ "type": "network", "path": path })),
            (None, true) => namespaces.push(json!({ "type": "network" })),
            (None, false) => {}
        }
    }
    serde_json::from_value(document).map_err(|e| DriverError::Other(format!("building the runtime spec: {e}")))
}

/// The files behind /etc/hostname, /etc/hosts and /etc/resolv.conf.
/// `address` is the container's own (name resolution through its network's gateway);
/// without one the host's resolvers are used, minus loopback ones.
pub fn write_etc_files(
    etc_dir: &Path,
    hostname: &str,
    address: Option<&berth_model::network::InstanceAddress>,
) -> Result<(), DriverError> {
    std::fs::create_dir_all(etc_dir).map_err(|e| DriverError::host(format!("creating {}", etc_dir.display()), e))?;
    let write = |name: &str, content: String| {
        let path = etc_dir.join(name);
        std::fs::write(&path, content).map_err(|e| DriverError::host(format!("writing {}", path.display()), e))?;
        // Bound into the container, where every user reads them; on the host the private
        // instance directory around them keeps them to root.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(|e| DriverError::host(format!("setting the mode of {}", path.display()), e))
    };
    write("hostname", format!("{hostname}\n"))?;
    let own = address.map(|a| a.address.as_str()).unwrap_or("127.0.1.1");
    write(
        "hosts",
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{hostname}\n"),
    )?;
    if let Some(address) = address {
        return write("resolv.conf", format!("nameserver {}\nsearch berth\n", address.gateway));
    }
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    // A resolver on the host's loopback is unreachable from the container's namespace.
    let usable: String = resolv
        .lines()
        .filter(|line| !(line.starts_with("nameserver") && (line.contains("127.") || line.contains("::1"))))
        .map(|line| format!("{line}\n"))
        .collect();
    write("resolv.conf", usable)
}
