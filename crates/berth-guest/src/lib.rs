//! The guest agent: `/init` of berth's initramfs, PID 1 inside a VM started from a container
//! image. It mounts the image's disk as the root, runs the command with the VM's console as
//! its stdio, reports the exit status on a virtio-serial port, serves `exec` sessions on
//! another, brings hot-added CPUs and memory online, and powers the VM off at the end.
//!
//! Host side of the same contract: `GuestSpec` (on the config disk), the port names, and
//! `ExecSession` frames (`berth_model::stream`).

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_model::stream::{encode_frame, Frame, FrameKind};
use berth_model::ExitStatus;
use serde::{Deserialize, Serialize};

/// virtio-serial port on which the agent reports the main command's exit status.
pub const STATUS_PORT: &str = "org.berth.status";
/// virtio-serial port on which the agent serves exec sessions.
pub const EXEC_PORT: &str = "org.berth.exec";
/// Where the initramfs keeps kernel modules, loaded in this order.
pub const MODULE_DIR: &str = "/lib/berth/modules";
pub const MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_mmio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "failover",
    "net_failover",
    "virtio_net",
];
/// Modules for host directories (virtiofs is a FUSE transport), loaded only when the VM has
/// some: under TCG every module loaded is code translated, and QEMU 7.2 aborts a vCPU
/// hot-add once the first vCPU has used all translation regions.
pub const VIRTIOFS_MODULES: &[&str] = &["fuse", "virtiofs"];

/// What the agent runs; written by the host to the config disk (`/dev/vdb`) as JSON,
/// padded with NUL bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    /// Grow the root filesystem to the disk's size before mounting it.
    pub resize_root: bool,
    /// Volumes: disks (found by serial) to mount at paths.
    #[serde(default)]
    pub mounts: Vec<GuestMount>,
    /// Host directories (virtiofs) and tmpfs to mount at paths.
    #[serde(default)]
    pub filesystems: Vec<GuestFilesystem>,
    /// The VM's address on its network (eth0), if it has one.
    #[serde(default)]
    pub network: Option<GuestNetwork>,
    /// The root disk is deleted when the VM stops (`--rm`): powering off need not leave its
    /// filesystem clean.
    #[serde(default)]
    pub discard_root: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestNetwork {
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
    pub nameserver: std::net::Ipv4Addr,
}

fn interface_request(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request
}

fn socket_address(address: std::net::Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(address.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

fn interface_up(socket: i32, name: &str) -> io::Result<()> {
    let mut request = interface_request(name);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS on an ifreq we own.
    unsafe {
        if libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(socket, libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// eth0 (the first non-loopback interface) gets the address, the default route goes
/// through the gateway, and the image's /etc/resolv.conf names the network's resolver.
fn configure_network(network: &GuestNetwork) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let interface = loop {
        let found = fs::read_dir("/sys/class/net")?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n != "lo");
        match found {
            Some(name) => break name,
            None if Instant::now() > deadline => return Err(io::Error::other("the VM has no network interface")),
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    // SAFETY: a plain datagram socket used for interface ioctls, closed below.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if socket < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        let _ = interface_up(socket, "lo");
        let mut request = interface_request(&interface);
        request.ifr_ifru.ifru_addr = socket_address(network.address);
        let mask = std::net::Ipv4Addr::from(u32::MAX << (32 - network.prefix));
        // SAFETY: SIOCSIFADDR/SIOCSIFNETMASK/SIOCADDRT read structures we own.
        unsafe {
            if libc::ioctl(socket, libc::SIOCSIFADDR, &request) < 0 {
                return Err(io::Error::last_os_error());
            }
            request.ifr_ifru.ifru_netmask = socket_address(mask);
            if libc::ioctl(socket, libc::SIOCSIFNETMASK, &request) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        interface_up(socket, &interface)?;
        // SAFETY: an rtentry we own, zeroed then filled.
        unsafe {
            let mut route: libc::rtentry = std::mem::zeroed();
            route.rt_dst = socket_address(std::net::Ipv4Addr::UNSPECIFIED);
            route.rt_genmask = socket_address(std::net::Ipv4Addr::UNSPECIFIED);
            route.rt_gateway = socket_address(network.gateway);
            route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
            if libc::ioctl(socket, libc::SIOCADDRT, &route) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })();
    // SAFETY: closing the socket opened above.
    unsafe {
        libc::close(socket);
    }
    result?;
    let _ = fs::write(
        format!("{ROOT}/etc/resolv.conf"),
        format!("nameserver {}\nsearch berth\n", network.nameserver),
    );
    Ok(())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestMount {
    /// The virtio disk's serial, as the host set it.
    pub serial: String,
    pub path: String,
    pub read_only: bool,
}

/// A filesystem the agent mounts in the image's root besides volumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestFilesystem {
    pub source: GuestSource,
    pub path: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum GuestSource {
    /// A host directory behind a vhost-user-fs device with this tag.
    Virtiofs { tag: String },
    /// A tmpfs with mount(8) options (flags, `size=`, `mode=`).
    Tmpfs { options: Vec<String> },
}

/// Flags and data of mount(8)-style options, as mount(2) takes them.
fn mount_flags_and_data(options: &[String]) -> (libc::c_ulong, String) {
    let mut flags: libc::c_ulong = 0;
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "noexec" => flags |= libc::MS_NOEXEC,
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noatime" => flags |= libc::MS_NOATIME,
            "nodiratime" => flags |= libc::MS_NODIRATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "rw" | "exec" | "suid" | "dev" | "atime" | "diratime" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, data.join(","))
}

/// Mounts at `path` of the image's root, resolved inside it (an image's symlink cannot
/// send the mount into the initramfs); missing directories are made.
fn mount_in_root(source: &str, path: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let failed = |e: pathrs::error::Error| io::Error::other(format!("{path}: {e}"));
    let root = pathrs::Root::open(ROOT).map_err(failed)?;
    let target: std::os::fd::OwnedFd = root
        .mkdir_all(path, &fs::Permissions::from_mode(0o755))
        .map_err(failed)?
        .into();
    // The kernel follows the descriptor's magic link to the very directory resolved above.
    mount(
        source,
        &format!("/proc/self/fd/{}", target.as_raw_fd()),
        fstype,
        flags,
        data,
    )
}

/// The /dev node of the virtio disk with `serial`.
fn disk_by_serial(serial: &str) -> Option<String> {
    let entries = fs::read_dir("/sys/block").ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if fs::read_to_string(entry.path().join("serial")).is_ok_and(|s| s.trim() == serial) {
            return Some(format!("/dev/{name}"));
        }
    }
    None
}

/// One exec request, a JSON line on the exec port; frames follow both ways.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestExec {
    /// Instead of running a command, send this signal to the main process (graceful stop).
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub uid: u32,
    pub gid: u32,
    /// A token the host chose for this session. When there is one, the agent's first frame
    /// of the session is a `Session` frame carrying it, and the host drops every frame before
    /// it: those belong to a session whose host left (a write to the port while no host is
    /// connected waits, then reaches the next host to connect). Hosts leave it out for VMs
    /// whose agent predates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

const ROOT: &str = "/newroot";

/// PID of the main command, for signals from the host.
static MAIN_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

fn log(message: &str) {
    // The kernel console (ttyS0) is the VM's diagnostic log.
    if let Ok(mut console) = OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(console, "berth-agent: {message}");
    }
}

/// A mark in the kernel's log at debug level, with the kernel's timestamp: the agent's
/// phases read beside the kernel's own (`loglevel=8` or `ignore_loglevel` on the command line
/// shows them on the serial console) when a boot is slow.
fn boot_phase(phase: &str) {
    if let Ok(mut kmsg) = OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = kmsg.write_all(format!("<7>berth-agent: {phase}\n").as_bytes());
    }
}

fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> io::Result<()> {
    let _ = fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let (source, target, fstype, data) = (c(source), c(target), c(fstype), c(data));
    // SAFETY: valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn load_module(name: &str) {
    let path = format!("{MODULE_DIR}/{name}.ko");
    let Ok(file) = File::open(&path) else { return };
    let params = CString::default();
    // SAFETY: finit_module with a valid fd and an empty parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EEXIST) {
            log(&format!("loading {name}: {error}"));
        }
    }
}

fn wait_for(path: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if Path::new(path).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// The /dev node of the virtio-serial port named `name`.
fn port_device(name: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for entry in entries.flatten() {
                let port_name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if port_name.trim() == name {
                    return Some(format!("/dev/{}", entry.file_name().to_string_lossy()));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// The virtio disks: (root, config). The config disk is the tiny one (probe order of
/// virtio devices is not the command-line order).
fn find_disks() -> Option<(String, String)> {
    let mut root = None;
    let mut config = None;
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vd"))
        .collect();
    names.sort();
    for name in names {
        let sectors: u64 = fs::read_to_string(format!("/sys/block/{name}/size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if sectors <= 2048 && config.is_none() {
            config = Some(format!("/dev/{name}"));
        } else if root.is_none() {
            root = Some(format!("/dev/{name}"));
        }
    }
    Some((root?, config?))
}

fn read_spec(config_disk: &str) -> io::Result<GuestSpec> {
    let mut data = Vec::new();
    File::open(config_disk)?.take(1 << 20).read_to_end(&mut data)?;
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    serde_json::from_slice(&data[..end]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Hot-added CPUs and memory arrive offline; bring them online as they appear.
fn online_hotplugged_resources() {
    std::thread::spawn(|| loop {
        for (dir, file, value) in [
            ("/sys/devices/system/cpu", "online", "1"),
            ("/sys/devices/system/memory", "state", "online"),
        ] {
            if let Ok(entries) = fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let path = entry.path().join(file);
                    if let Ok(state) = fs::read_to_string(&path) {
                        if state.trim() == "0" || state.trim() == "offline" {
                            let _ = fs::write(&path, value);
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    });
}

/// `BLKGETSIZE64` (linux/fs.h): a block device's size in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `EXT4_IOC_RESIZE_FS` (fs/ext4/ext4.h): grow a mounted ext4 to this many blocks.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;

/// Grows the mounted root filesystem to the whole of its disk, online, by the kernel's own
/// ext4 resizer: no resize2fs (and the C library it needs) in the initramfs, which the
/// kernel would unpack at every boot.
fn grow_root(root_disk: &str) -> io::Result<()> {
    let disk = File::open(root_disk)?;
    let mut disk_bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 into the variable we pass.
    if unsafe { libc::ioctl(disk.as_raw_fd(), BLKGETSIZE64, &mut disk_bytes) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let root = File::open(ROOT)?;
    // SAFETY: an all-zero statfs is a valid value for the kernel to fill in.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs on a descriptor we own into a buffer of the right type.
    if unsafe { libc::fstatfs(root.as_raw_fd(), &mut stat) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let block_bytes = u64::try_from(stat.f_bsize).unwrap_or(0).max(1024);
    let blocks = disk_bytes / block_bytes;
    if blocks <= stat.f_blocks as u64 {
        return Ok(());
    }
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64, the new block count, from the pointer.
    if unsafe { libc::ioctl(root.as_raw_fd(), EXT4_IOC_RESIZE_FS, &blocks) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn prepare_root(spec: &GuestSpec, root_disk: &str) -> io::Result<()> {
    mount(root_disk, ROOT, "ext4", 0, "")?;
    if spec.resize_root {
        if let Err(e) = grow_root(root_disk) {
            log(&format!("growing the root filesystem to its disk: {e}"));
        }
    }
    mount("proc", &format!("{ROOT}/proc"), "proc", 0, "")?;
    mount("sysfs", &format!("{ROOT}/sys"), "sysfs", 0, "")?;
    // The unified hierarchy, where systemd mounts it, for workloads that manage cgroups
    // (a container engine in the VM); its controllers are theirs to enable.
    let cgroup_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if let Err(e) = mount("cgroup2", &format!("{ROOT}/sys/fs/cgroup"), "cgroup2", cgroup_flags, "") {
        log(&format!("mounting cgroup2: {e}"));
    }
    mount("devtmpfs", &format!("{ROOT}/dev"), "devtmpfs", 0, "")?;
    mount(
        "devpts",
        &format!("{ROOT}/dev/pts"),
        "devpts",
        0,
        "newinstance,ptmxmode=0666",
    )?;
    mount("tmpfs", &format!("{ROOT}/dev/shm"), "tmpfs", 0, "mode=1777")?;
    mount("tmpfs", &format!("{ROOT}/run"), "tmpfs", 0, "mode=755")?;
    if spec
        .filesystems
        .iter()
        .any(|f| matches!(f.source, GuestSource::Virtiofs { .. }))
    {
        for module in VIRTIOFS_MODULES {
            load_module(module);
        }
    }
    // Parents before what is mounted inside them (`/data` before `/data/cache`).
    let depth = |path: &str| path.split('/').filter(|p| !p.is_empty()).count();
    let mut pending: Vec<(&str, Result<&GuestMount, &GuestFilesystem>)> = spec
        .mounts
        .iter()
        .map(|v| (v.path.as_str(), Ok(v)))
        .chain(spec.filesystems.iter().map(|f| (f.path.as_str(), Err(f))))
        .collect();
    pending.sort_by_key(|(path, _)| depth(path));
    for (path, what) in pending {
        let read_only = if what.map_or_else(|f| f.read_only, |v| v.read_only) {
            libc::MS_RDONLY
        } else {
            0
        };
        let mounted = match what {
            Ok(volume) => {
                let device = disk_by_serial(&volume.serial)
                    .ok_or_else(|| io::Error::other(format!("the disk of volume {path} is missing")))?;
                mount_in_root(&device, path, "ext4", read_only, "")
            }
            Err(GuestFilesystem {
                source: GuestSource::Virtiofs { tag },
                ..
            }) => mount_in_root(tag, path, "virtiofs", read_only, ""),
            Err(GuestFilesystem {
                source: GuestSource::Tmpfs { options },
                ..
            }) => {
                let (flags, data) = mount_flags_and_data(options);
                mount_in_root("tmpfs", path, "tmpfs", flags | read_only, &data)
            }
        };
        mounted.map_err(|e| io::Error::new(e.kind(), format!("mounting {path}: {e}")))?;
    }
    if !spec.hostname.is_empty() {
        let _ = nix::unistd::sethostname(&spec.hostname);
        let _ = fs::write(format!("{ROOT}/etc/hostname"), format!("{}\n", spec.hostname));
    }
    Ok(())
}

/// Makes the image's root the VM's root, as `switch_root` does: its mount (with everything
/// under it) moves onto `/` and the agent enters it. A chroot would not do: a process that
/// joins a mount namespace lands on the namespace's top-most root mount, which under a
/// chroot is the initramfs, so `exec` into a container of a runtime in the guest found
/// nothing there.
fn switch_root() -> io::Result<()> {
    use nix::mount::MsFlags;
    nix::unistd::chdir(ROOT)?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
    nix::unistd::chroot(".")?;
    nix::unistd::chdir("/")?;
    Ok(())
}

/// A command in the image's root (the agent's own, after `switch_root`), as a container
/// would run it.
fn command_in_root(args: &[String], env: &[String], working_dir: &str, uid: u32, gid: u32) -> Command {
    let mut command = berth_process::command(&args[0]);
    command.args(&args[1..]).env_clear();
    for pair in env {
        if let Some((key, value)) = pair.split_once('=') {
            command.env(key, value);
        }
    }
    let working_dir = if working_dir.is_empty() {
        "/".to_string()
    } else {
        working_dir.to_string()
    };
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let cwd = CString::new(working_dir.as_str()).unwrap_or_default();
            if libc::chdir(cwd.as_ptr()) != 0 {
                let slash = CString::new("/").unwrap_or_default();
                libc::chdir(slash.as_ptr());
            }
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

fn exit_status_of(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::from_code(code),
        (None, Some(signal)) => ExitStatus::from_signal(signal),
        _ => ExitStatus::from_code(255),
    }
}

/// Serves exec sessions, one at a time, until the VM powers off. The port stays open the
/// whole time: while no host side is connected reads return at once with nothing, and data
/// the host sends reaches an open port only.
fn serve_exec(device: String) {
    std::thread::spawn(move || {
        let port = loop {
            match OpenOptions::new().read(true).write(true).open(&device) {
                Ok(port) => break port,
                Err(e) => {
                    log(&format!("opening {device}: {e}"));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        let (Ok(read_half), writer) = (port.try_clone(), std::sync::Arc::new(std::sync::Mutex::new(port))) else {
            return;
        };
        let mut reader = BufReader::new(read_half);
        // The first bytes of the next request, when the last session's input loop read them.
        let mut carried = Vec::new();
        loop {
            // A read of the port returns what has arrived, and nothing at all between host
            // writes, which `read_until` takes for the end of input: a request that arrives in
            // two pieces comes back as two partial lines. Keep reading until its newline.
            let mut line = std::mem::take(&mut carried);
            loop {
                match reader.read_until(b'\n', &mut line) {
                    Ok(_) if line.ends_with(b"\n") => break,
                    Ok(0) | Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    Ok(_) => {}
                }
            }
            // Set once the session's last frame (its exit status or error) is written, so that
            // a finished session never writes after the next one's first frame.
            let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let session = SessionPort::new(&writer);
            let Started { mut stdin, process } = match parse_request(&line) {
                // Only the tail of a session already over (input that came after its end).
                None => continue,
                Some(Ok(request)) => {
                    if let Some(token) = &request.session {
                        session.send(FrameKind::Session, token.as_bytes());
                    }
                    start_exec(request, session.clone(), finished.clone())
                }
                Some(Err(e)) => {
                    session.send(FrameKind::Error, format!("bad exec request: {e}").as_bytes());
                    finished.store(true, std::sync::atomic::Ordering::SeqCst);
                    Started::default()
                }
            };
            // Input for the session, until its process ended and the host side went quiet,
            // or the next request began.
            loop {
                match read_session_input(&mut reader, &finished, HOST_GONE_AFTER) {
                    SessionInput::Frame(frame) if frame.kind == FrameKind::Stdin => {
                        if let Some(feeder) = stdin.as_ref() {
                            feeder.feed(frame.payload);
                        }
                    }
                    SessionInput::Frame(frame) if frame.kind == FrameKind::StdinClose => stdin = None,
                    SessionInput::Frame(_) => {}
                    SessionInput::Ended => break,
                    SessionInput::NextRequest(start) => {
                        if !finished.load(std::sync::atomic::Ordering::SeqCst) {
                            // Closed first, waiting for a frame being written (the new host
                            // is there to take it): the kill's exit status is not sent.
                            session.close();
                            kill_abandoned_process(process.as_ref());
                        }
                        carried = start;
                        break;
                    }
                    SessionInput::HostLeft => {
                        // No host to take a frame being written: that write waits for the
                        // next host, so do not wait for it (the next host drops it, as it
                        // comes before its session's token).
                        session.stop_sending();
                        kill_abandoned_process(process.as_ref());
                        break;
                    }
                }
            }
        }
    });
}

/// The byte every request line starts with (a JSON object); no frame kind has it.
const REQUEST_START: u8 = b'{';

/// The request in one line from the exec port; `None` when the line holds no request at all.
/// Bytes before the request are the late input of a session that is over (a stdin frame or
/// end of stdin that arrived after its process ended and the port went quiet): skipped. A
/// stdin payload may hold a `{` too, so each `{` is tried in turn; the request runs to the
/// end of the line.
fn parse_request(line: &[u8]) -> Option<Result<GuestExec, serde_json::Error>> {
    let line = line.trim_ascii_end();
    let mut first_error = None;
    for (at, _) in line.iter().enumerate().filter(|(_, byte)| **byte == REQUEST_START) {
        match serde_json::from_slice::<GuestExec>(&line[at..]) {
            Ok(request) => return Some(Ok(request)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map(Err)
}

/// What the exec port brought while a session was open.
#[derive(Debug)]
enum SessionInput {
    Frame(Frame),
    /// The process ended and nothing more came: the host side is done.
    Ended,
    /// A request line began where a frame was expected: the host that ran the session left
    /// and the next one connected before the port went quiet. The bytes read of it so far.
    NextRequest(Vec<u8>),
    /// The host left while the process ran, and no other came.
    HostLeft,
}

/// How long the exec port may be without a host while a session's process runs before the
/// session counts as abandoned (its `vm-exec` killed, as a health check's timeout does). A
/// read of the port returns nothing only while no host is connected, but the port's open
/// event can reach the guest a moment after the request's bytes: a moment is not enough.
const HOST_GONE_AFTER: Duration = Duration::from_secs(1);

/// How a read of part of a frame ended.
enum Fill {
    Done,
    /// The session's process has ended and no host is there (or nothing more came).
    Ended,
    /// No host for `HOST_GONE_AFTER` while the process runs.
    HostLeft,
}

/// Reads one frame from the exec port. A read of nothing means no host is connected: the
/// session is over once its process has ended, or abandoned once its host stayed away for
/// `host_gone_after`.
fn read_session_input(
    reader: &mut impl Read,
    finished: &std::sync::atomic::AtomicBool,
    host_gone_after: Duration,
) -> SessionInput {
    let mut header = [0u8; berth_model::stream::HEADER_LEN];
    let mut filled = 0;
    let mut read_exact = |buffer: &mut [u8], filled: &mut usize| -> Fill {
        let mut quiet_since: Option<std::time::Instant> = None;
        while *filled < buffer.len() {
            match reader.read(&mut buffer[*filled..]) {
                Ok(0) | Err(_) => {
                    if finished.load(std::sync::atomic::Ordering::SeqCst) {
                        return Fill::Ended;
                    }
                    if quiet_since.get_or_insert_with(std::time::Instant::now).elapsed() >= host_gone_after {
                        return Fill::HostLeft;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(n) => {
                    *filled += n;
                    quiet_since = None;
                }
            }
        }
        Fill::Done
    };
    let header_read = read_exact(&mut header, &mut filled);
    if filled > 0 && header[0] == REQUEST_START {
        return SessionInput::NextRequest(header[..filled].to_vec());
    }
    match header_read {
        Fill::Done => {}
        Fill::Ended => return SessionInput::Ended,
        Fill::HostLeft => return SessionInput::HostLeft,
    }
    let Ok((kind, len)) = berth_model::stream::parse_header(&header) else {
        return SessionInput::Ended;
    };
    let mut payload = vec![0u8; len];
    let mut got = 0;
    match read_exact(&mut payload, &mut got) {
        Fill::Done => SessionInput::Frame(Frame { kind, payload }),
        Fill::Ended => SessionInput::Ended,
        Fill::HostLeft => SessionInput::HostLeft,
    }
}

/// The exec port as one session writes to it: its frames reach the host only while the
/// session is open, so the output of a session whose host left never reaches the next one's.
#[derive(Clone)]
struct SessionPort {
    port: std::sync::Arc<std::sync::Mutex<File>>,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SessionPort {
    fn new(port: &std::sync::Arc<std::sync::Mutex<File>>) -> Self {
        SessionPort {
            port: port.clone(),
            open: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    fn send(&self, kind: FrameKind, data: &[u8]) {
        if let Ok(mut out) = self.port.lock() {
            if self.open.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = out.write_all(&encode_frame(kind, data));
            }
        }
    }

    /// No frame of this session is written from now on (one being written finishes first:
    /// closing takes the port's lock).
    fn close(&self) {
        let _writing = self.port.lock();
        self.stop_sending();
    }

    /// No frame of this session is started from now on; one being written is not waited for.
    fn stop_sending(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A session's host left while its process ran (killed, or its connection cut): the process
/// is killed, as a login session's are when the connection drops (its session port is
/// closed first, so nothing more of it reaches the port).
fn kill_abandoned_process(process: Option<&OwnedFd>) {
    if let Some(process) = process {
        log("exec: the host left while the session's process ran; ending it");
        // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo; a process already
        // reaped is not signalled (ESRCH), whatever now has its pid.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                process.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

/// A started exec session: the process's stdin and a pidfd of it (none when nothing was
/// started).
#[derive(Default)]
struct Started {
    stdin: Option<StdinFeeder>,
    process: Option<OwnedFd>,
}

/// How many stdin chunks (frames of at most 64 KiB; the host sends 16 KiB) wait for a
/// session's process before the port waits too.
const STDIN_QUEUE: usize = 64;

/// A session's stdin, written to its process by a thread of its own: a process that does not
/// read its stdin holds up that thread, not the port thread, which must go on to read the
/// session's end and the next request. Dropping it closes the process's stdin once what is
/// queued is written.
struct StdinFeeder(std::sync::mpsc::SyncSender<Vec<u8>>);

impl StdinFeeder {
    fn start(mut pipe: impl Write + Send + 'static) -> StdinFeeder {
        let (sender, chunks) = std::sync::mpsc::sync_channel::<Vec<u8>>(STDIN_QUEUE);
        std::thread::spawn(move || {
            for chunk in chunks {
                // The process closed its stdin or ended: the rest has no reader.
                if pipe.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        StdinFeeder(sender)
    }

    /// Queues `chunk`; waits while the queue is full (the process reads slower than the host
    /// sends, as a pipe would make the host wait). A process that no longer reads drops it.
    fn feed(&self, chunk: Vec<u8>) {
        let _ = self.0.send(chunk);
    }
}

/// A pidfd of the child `pid`, which is not waited for yet.
fn pidfd_of(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open with no flags; a descriptor it returns is ours to own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: a fresh descriptor nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Starts one exec session; output and the exit status go to `port` from threads of their
/// own.
fn start_exec(
    request: GuestExec,
    port: SessionPort,
    finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Started {
    if let Some(signal) = request.signal {
        let pid = MAIN_PID.load(std::sync::atomic::Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill with the pid of the command we started.
            unsafe {
                libc::kill(pid, signal);
            }
        }
        port.send(
            FrameKind::Exit,
            &serde_json::to_vec(&ExitStatus::from_code(0)).unwrap_or_default(),
        );
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        return Started::default();
    }
    if request.args.is_empty() {
        port.send(FrameKind::Error, b"exec needs a command");
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        return Started::default();
    }
    let spawned = command_in_root(
        &request.args,
        &request.env,
        request.working_dir.as_deref().unwrap_or("/"),
        request.uid,
        request.gid,
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            port.send(FrameKind::Error, format!("exec {}: {e}", request.args[0]).as_bytes());
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
            return Started::default();
        }
    };
    let mut pumps = Vec::new();
    for (stream, kind) in [
        (
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            FrameKind::Stdout,
        ),
        (
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            FrameKind::Stderr,
        ),
    ] {
        let Some(mut stream) = stream else { continue };
        let port = port.clone();
        pumps.push(std::thread::spawn(move || {
            let mut buffer = [0u8; 16 * 1024];
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                port.send(kind, &buffer[..n]);
            }
        }));
    }
    let started = Started {
        stdin: child.stdin.take().map(StdinFeeder::start),
        process: pidfd_of(child.id()),
    };
    std::thread::spawn(move || {
        let status = child.wait().map(exit_status_of).unwrap_or(ExitStatus::from_code(255));
        for pump in pumps {
            let _ = pump.join();
        }
        port.send(FrameKind::Exit, &serde_json::to_vec(&status).unwrap_or_default());
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    started
}

/// The status port: one JSON line when the command started, one with its exit status.
struct StatusPort(Option<File>);

impl StatusPort {
    fn open() -> StatusPort {
        StatusPort(port_device(STATUS_PORT).and_then(|device| OpenOptions::new().write(true).open(device).ok()))
    }

    fn send(&mut self, line: &str) {
        if let Some(port) = self.0.as_mut() {
            let _ = writeln!(port, "{line}");
            let _ = port.flush();
        }
    }
}

fn power_off(root: RootAtExit) -> ! {
    // SAFETY: ending every other process, flushing filesystems and powering off is what PID 1
    // does at the end.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
        libc::sync();
    }
    if root == RootAtExit::Kept {
        leave_root_clean();
    }
    // SAFETY: as above.
    unsafe {
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn run_main(spec: &GuestSpec, status_port: &mut StatusPort) -> io::Result<ExitStatus> {
    if spec.args.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command"));
    }
    // Program stdio: hvc0 for stdin/stdout, hvc1 for stderr (the host keeps them apart).
    let console = OpenOptions::new().read(true).write(true).open("/dev/hvc0")?;
    let errors = OpenOptions::new()
        .write(true)
        .open("/dev/hvc1")
        .or_else(|_| console.try_clone())?;
    // Raw mode, so bytes pass as through a container's pipes (no \r added, no echo).
    for terminal in [&console, &errors] {
        use std::os::fd::AsFd;
        if let Ok(mut mode) = nix::sys::termios::tcgetattr(terminal.as_fd()) {
            nix::sys::termios::cfmakeraw(&mut mode);
            let _ = nix::sys::termios::tcsetattr(terminal.as_fd(), nix::sys::termios::SetArg::TCSANOW, &mode);
        }
    }
    let mut command = command_in_root(&spec.args, &spec.env, &spec.working_dir, spec.uid, spec.gid);
    command
        .stdin(Stdio::from(console.try_clone()?))
        .stdout(Stdio::from(console))
        .stderr(Stdio::from(errors));
    let mut child = command
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", spec.args[0])))?;
    // Wait for this child only: exec sessions wait for theirs in their own threads.
    let pid = child.id() as i32;
    MAIN_PID.store(pid, std::sync::atomic::Ordering::SeqCst);
    status_port.send(r#"{"event":"started"}"#);
    child.wait().map(exit_status_of)
}

/// What becomes of the root disk once the VM is off.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RootAtExit {
    Kept,
    /// Deleted with the VM (`--rm`); also an agent that never read its spec, whose root was
    /// never mounted.
    Discarded,
}

/// Remounts the root filesystem read-only, which checkpoints its journal and marks it clean:
/// a kept disk's next boot replays nothing (40 ms of ext4 recovery under TCG) and an exported
/// disk is consistent. Processes killed a moment ago may still hold files open for writing
/// (EBUSY) for a few milliseconds; after 100 ms the sync before is what the disk has.
fn leave_root_clean() {
    let deadline = Instant::now() + Duration::from_millis(100);
    loop {
        // SAFETY: a remount of "/" with no source, type or data.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        let busy = rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY);
        if !busy || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Entry point when `berth-guest` (or berth's own binary, where it is missing) runs as `/init`
/// in a VM.
pub fn guest_init() -> ! {
    let _ = mount("proc", "/proc", "proc", 0, "");
    let _ = mount("sysfs", "/sys", "sysfs", 0, "");
    let _ = mount("devtmpfs", "/dev", "devtmpfs", 0, "");
    // virtio-mmio is microvm's transport; a PCI machine has its devices enumerated by now, and
    // every module loaded is a signature checked and code translated under TCG.
    let pci = fs::read_dir("/sys/bus/pci/devices").is_ok_and(|mut d| d.next().is_some());
    for module in MODULES.iter().filter(|m| !(pci && **m == "virtio_mmio")) {
        load_module(module);
    }
    boot_phase("modules loaded");
    wait_for("/dev/hvc0", Duration::from_secs(10));
    let mut status_port = StatusPort::open();
    let mut root_at_exit = RootAtExit::Discarded;
    let status = (|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (root_disk, config_disk) = loop {
            if let Some(disks) = find_disks() {
                break disks;
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("the root and config disks did not appear"));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let spec = read_spec(&config_disk)?;
        if !spec.discard_root {
            root_at_exit = RootAtExit::Kept;
        }
        prepare_root(&spec, &root_disk)?;
        boot_phase("root mounted");
        if let Some(network) = &spec.network {
            configure_network(network)?;
        }
        switch_root().map_err(|e| io::Error::other(format!("entering the root filesystem: {e}")))?;
        online_hotplugged_resources();
        if let Some(device) = port_device(EXEC_PORT) {
            serve_exec(device);
        }
        boot_phase("starting the command");
        run_main(&spec, &mut status_port)
    })();
    let status = status.unwrap_or_else(|e| {
        log(&format!("error: {e}"));
        if let Ok(mut errors) = OpenOptions::new().write(true).open("/dev/hvc1") {
            let _ = writeln!(errors, "berth: {e}");
        }
        ExitStatus::from_code(if e.kind() == io::ErrorKind::NotFound { 127 } else { 125 })
    });
    status_port.send(&serde_json::to_string(&status).unwrap_or_default());
    boot_phase("status sent, powering off");
    power_off(root_at_exit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn request_line(args: &[&str]) -> Vec<u8> {
        let request = GuestExec {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..GuestExec::default()
        };
        let mut line = serde_json::to_vec(&request).unwrap();
        line.push(b'\n');
        line
    }

    #[test]
    fn a_request_after_late_input_of_an_ended_session_is_read() {
        // End of stdin, and stdin holding a brace, that came after their session ended.
        let mut line = encode_frame(FrameKind::StdinClose, &[]);
        line.extend(encode_frame(FrameKind::Stdin, b"{not json"));
        line.extend(request_line(&["grep", "MemTotal", "/proc/meminfo"]));
        let request = parse_request(&line).expect("a request").expect("it parses");
        assert_eq!(request.args, ["grep", "MemTotal", "/proc/meminfo"]);
    }

    #[test]
    fn a_line_without_a_request_is_skipped_and_a_bad_one_is_an_error() {
        assert!(parse_request(&encode_frame(FrameKind::Stdin, b"x\n")).is_none());
        assert!(parse_request(b"{\"args\": 5}\n").expect("a request").is_err());
    }

    #[test]
    fn the_next_request_ends_the_session_and_keeps_its_first_bytes() {
        let finished = AtomicBool::new(false);
        let mut port = encode_frame(FrameKind::Stdin, b"input");
        port.extend(request_line(&["nproc"]));
        let mut reader = std::io::Cursor::new(port);
        match read_session_input(&mut reader, &finished, HOST_GONE_AFTER) {
            SessionInput::Frame(frame) => assert_eq!(
                (frame.kind, frame.payload.as_slice()),
                (FrameKind::Stdin, &b"input"[..])
            ),
            other => panic!("expected the stdin frame, got {other:?}"),
        }
        let SessionInput::NextRequest(mut start) = read_session_input(&mut reader, &finished, HOST_GONE_AFTER) else {
            panic!("expected the next request");
        };
        reader.read_until(b'\n', &mut start).unwrap();
        let request = parse_request(&start).expect("a request").expect("it parses");
        assert_eq!(request.args, ["nproc"]);
    }

    #[test]
    fn a_closed_session_writes_nothing_more_to_the_port() {
        let path = std::env::temp_dir().join(format!("berth-guest-port-{}", std::process::id()));
        let port = std::sync::Arc::new(std::sync::Mutex::new(File::create(&path).unwrap()));
        let abandoned = SessionPort::new(&port);
        let next = SessionPort::new(&port);
        abandoned.send(FrameKind::Stdout, b"before");
        abandoned.close();
        abandoned.send(FrameKind::Stdout, b"after");
        next.send(FrameKind::Stdout, b"next");
        let mut written = encode_frame(FrameKind::Stdout, b"before");
        written.extend(encode_frame(FrameKind::Stdout, b"next"));
        assert_eq!(fs::read(&path).unwrap(), written);
        let _ = fs::remove_file(path);
    }

    #[test]
    fn stdin_a_process_does_not_read_yet_does_not_hold_up_the_port() {
        let mut child = berth_process::command("sh")
            .args(["-c", "sleep 1; wc -c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let feeder = StdinFeeder::start(child.stdin.take().unwrap());
        let began = std::time::Instant::now();
        // 320 KiB: five times what the pipe holds.
        for _ in 0..20 {
            feeder.feed(vec![b'x'; 16 * 1024]);
        }
        assert!(began.elapsed() < Duration::from_millis(500), "{:?}", began.elapsed());
        drop(feeder);
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            (20 * 16 * 1024).to_string()
        );
    }

    #[test]
    fn a_port_without_a_host_while_the_process_runs_abandons_the_session() {
        let finished = AtomicBool::new(false);
        let mut reader = std::io::Cursor::new(Vec::new());
        let began = std::time::Instant::now();
        assert!(matches!(
            read_session_input(&mut reader, &finished, Duration::from_millis(100)),
            SessionInput::HostLeft
        ));
        assert!(began.elapsed() >= Duration::from_millis(100));
        // Half a frame, then the host goes.
        let mut reader = std::io::Cursor::new(encode_frame(FrameKind::Stdin, b"input")[..7].to_vec());
        assert!(matches!(
            read_session_input(&mut reader, &finished, Duration::from_millis(100)),
            SessionInput::HostLeft
        ));
    }

    #[test]
    fn a_quiet_port_ends_a_finished_session() {
        let finished = AtomicBool::new(true);
        let mut reader = std::io::Cursor::new(Vec::new());
        assert!(matches!(
            read_session_input(&mut reader, &finished, HOST_GONE_AFTER),
            SessionInput::Ended
        ));
    }
}
