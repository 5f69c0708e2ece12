//! What a VM started from a container image boots: the guest kernel (the one
//! `scripts/build-guest-kernel.sh` builds for berth's VMs, or Debian's, both installed by
//! `scripts/install-deps.sh`) and berth's initramfs, built here from the guest agent
//! (`berth-guest`, installed beside `berth`), the shared libraries it needs (none: it is
//! static) and, for Debian's kernel, the virtio kernel modules. The initramfs is built once
//! per agent binary and kernel and cached.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::agent::{MODULES, MODULE_DIR, VIRTIOFS_MODULES};
use crate::cpio::CpioWriter;
use crate::guest_module;
use crate::VmError;

/// Where `scripts/install-deps.sh` puts the guest kernels: Debian's (`boot/vmlinuz-*`,
/// `lib/modules/*`) and the one `scripts/build-guest-kernel.sh` builds for berth's VMs
/// (`boot/vmlinux-*-berth`).
pub const DEFAULT_GUEST_DIR: &str = "/usr/local/lib/berth/guest";

/// Which kernel VMs made from container images boot (the daemon's `guest_kernel`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelChoice {
    /// The kernel built for berth's VMs when there is one (everything they use built in:
    /// no modules to load, no BTF, no tracing; half the boot under TCG), else Debian's.
    #[default]
    Auto,
    /// Debian's cloud kernel with its modules: for workloads that need more of a kernel
    /// than berth's agent does (a container engine with bridges and iptables in the VM).
    Debian,
}

#[derive(Debug, Clone)]
pub struct GuestKernel {
    /// The kernel file: an ELF `vmlinux` or a bzImage `vmlinuz`.
    pub vmlinuz: PathBuf,
    /// Its modules (a kernel with everything built in has none: the directory is absent).
    pub modules: PathBuf,
    pub version: String,
}

/// The kernel under `dir` that `choice` picks: berth's own build (`vmlinux-*-berth`) unless
/// Debian's is asked for or there is none, then the newest `vmlinuz-*`.
pub fn find_guest_kernel(dir: &Path, choice: KernelChoice) -> Result<GuestKernel, VmError> {
    let missing = || {
        VmError::Setup(format!(
            "no guest kernel in {}; run scripts/install-deps.sh (it builds berth's guest kernel there from Debian's linux-source-6.1 and extracts Debian's linux-image-cloud-amd64 beside it)",
            dir.display()
        ))
    };
    let names: Vec<String> = fs::read_dir(dir.join("boot"))
        .map_err(|_| missing())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let newest = |prefix: &str, built_for_berth: bool| {
        let mut versions: Vec<&str> = names
            .iter()
            .filter_map(|name| name.strip_prefix(prefix))
            .filter(|version| version.ends_with("-berth") == built_for_berth)
            .collect();
        versions.sort();
        versions
            .pop()
            .map(|version| (format!("{prefix}{version}"), version.to_string()))
    };
    let built = match choice {
        KernelChoice::Auto => newest("vmlinux-", true),
        KernelChoice::Debian => None,
    };
    let (file, version) = built.or_else(|| newest("vmlinuz-", false)).ok_or_else(missing)?;
    Ok(GuestKernel {
        vmlinuz: dir.join("boot").join(file),
        modules: dir.join("lib/modules").join(&version).join("kernel"),
        version,
    })
}

/// Shared libraries a dynamically linked program loads, as `ldd` reports them.
fn shared_libraries(program: &Path) -> Vec<PathBuf> {
    let Ok(output) = berth_process::command("ldd").arg(program).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn find_module(modules: &Path, name: &str) -> Option<PathBuf> {
    for subdir in [
        "drivers/virtio",
        "drivers/block",
        "drivers/char",
        "drivers/net",
        "net/core",
        "fs/fuse",
    ] {
        let path = modules.join(subdir).join(format!("{name}.ko"));
        if path.exists() {
            return Some(path);
        }
    }
    None
}

/// Adds `path` (a file of the host) to the archive at the same place, parents first.
fn add_host_file(
    archive: &mut CpioWriter<impl Write>,
    directories: &mut BTreeSet<String>,
    path: &Path,
    at: &str,
) -> Result<(), VmError> {
    add_file(archive, directories, &read_host_file(path)?, at)
}

fn read_host_file(path: &Path) -> Result<Vec<u8>, VmError> {
    fs::read(path).map_err(|e| VmError::Setup(format!("reading {}: {e}", path.display())))
}

/// Adds `data` to the archive at `at`, parents first.
fn add_file(
    archive: &mut CpioWriter<impl Write>,
    directories: &mut BTreeSet<String>,
    data: &[u8],
    at: &str,
) -> Result<(), VmError> {
    let relative = at.trim_start_matches('/');
    let parts: Vec<&str> = relative.split('/').collect();
    for depth in 1..parts.len() {
        let parent = parts[..depth].join("/");
        if directories.insert(parent.clone()) {
            archive.directory(&parent).map_err(io_error)?;
        }
    }
    archive.file(relative, 0o755, data).map_err(io_error)
}

fn io_error(e: std::io::Error) -> VmError {
    VmError::Setup(format!("writing the initramfs: {e}"))
}

/// Writes a file of the cache whole or not at all: into a temporary name beside it, flushed to
/// disk, then renamed (a crash or a full disk never leaves a short file under the final name,
/// which the next start would take as built); the temporary file is removed on failure.
pub(crate) fn store_cache_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{nanos}", std::process::id()));
    let temp = path.with_file_name(name);
    let written = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// What the initramfs holds and how, beyond the agent and the kernel (part of the cache
/// key): 2 since its modules are slimmed (`guest_module`), 3 since the agent grows the root
/// filesystem itself (no resize2fs and C library).
const INITRAMFS_LAYOUT: u32 = 3;

/// An agent binary above this size (berth's own, 50 MB) makes a zstd-compressed initramfs.
const COMPRESS_AGENT_ABOVE: u64 = 16 << 20;

/// The path of the running berth binary, as the kernel names it (without the " (deleted)" it
/// adds once the file was replaced, by an upgrade, since the process started).
pub fn running_binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)")))
}

/// A cache file's key: `label` and the identity of `file` (its path, size and modification
/// time), 16 hex digits. A rebuilt or replaced file gets a new key, so the cache never serves
/// what was made from an older one.
pub(crate) fn cache_key(label: &str, file: &Path, meta: &fs::Metadata) -> String {
    let mut hasher = Sha256::new();
    hasher.update(label.as_bytes());
    hasher.update(file.to_string_lossy().as_bytes());
    hasher.update(meta.len().to_le_bytes());
    hasher.update(format!("{:?}", meta.modified().ok()).as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

/// The file name of the guest agent's binary, looked for beside the running `berth`.
pub const GUEST_AGENT: &str = "berth-guest";

/// The program the initramfs runs as `/init`: `berth-guest` beside the running binary (about
/// 1 MB, where berth's own binary is 50), else this running binary itself, which is the same
/// agent when it finds itself PID 1 (an installation that copied `berth` alone still boots VMs,
/// only slower: the kernel unpacks every byte of the initramfs under TCG).
pub fn guest_agent() -> PathBuf {
    let beside = running_binary()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(GUEST_AGENT)));
    match beside {
        Some(agent) if agent.is_file() => agent,
        // This running binary, also when its file was replaced since it started.
        _ => PathBuf::from(format!("/proc/{}/exe", std::process::id())),
    }
}

/// The initramfs for `kernel`, built into `cache_dir` unless it is there already.
pub fn initramfs(kernel: &GuestKernel, cache_dir: &Path) -> Result<PathBuf, VmError> {
    let exe = guest_agent();
    let meta = fs::metadata(&exe).map_err(|e| VmError::Setup(format!("reading {}: {e}", exe.display())))?;
    // The fallback's /proc/<pid>/exe names a new file at every daemon start: its target is
    // what stays the same.
    let key = cache_key(
        &format!("{}-{INITRAMFS_LAYOUT}", kernel.version),
        &fs::read_link(&exe).unwrap_or_else(|_| exe.clone()),
        &meta,
    );
    let path = cache_dir.join(format!("initramfs-{key}.img"));
    if path.exists() {
        return Ok(path);
    }
    // One build at a time; whoever waited finds it built.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if path.exists() {
        return Ok(path);
    }
    fs::create_dir_all(cache_dir).map_err(|e| VmError::Setup(format!("creating {}: {e}", cache_dir.display())))?;
    let mut archive = CpioWriter::new(Vec::new());
    let mut directories = BTreeSet::new();
    for dir in ["dev", "proc", "sys", "newroot", "lib", "lib/berth", "lib/berth/modules"] {
        archive.directory(dir).map_err(io_error)?;
        directories.insert(dir.to_string());
    }
    add_host_file(&mut archive, &mut directories, &exe, "/init")?;
    // berth-guest is static: the libraries are those of berth's own binary as the agent.
    let libraries: BTreeSet<PathBuf> = shared_libraries(&exe).into_iter().collect();
    for library in &libraries {
        // Keep the loader's own path (/lib64/ld-linux-x86-64.so.2) and resolve symlinks.
        let real = fs::canonicalize(library).unwrap_or_else(|_| library.clone());
        add_host_file(&mut archive, &mut directories, &real, &library.to_string_lossy())?;
    }
    for module in MODULES.iter().chain(VIRTIOFS_MODULES) {
        if let Some(source) = find_module(&kernel.modules, module) {
            let at = format!("{MODULE_DIR}/{module}.ko");
            let data = read_host_file(&source)?;
            add_file(&mut archive, &mut directories, &guest_module::slim(&data), &at)?;
        }
    }
    let archive = archive.finish().map_err(io_error)?;
    // The small agent's archive (2 MB) stays uncompressed: unpacking zstd took the guest
    // 90 ms under TCG, a plain copy 40. berth's own binary as the agent is compressed, since
    // the guest holds the archive and its unpacked files in memory at once while it boots.
    let bytes = if meta.len() > COMPRESS_AGENT_ABOVE {
        zstd::encode_all(archive.as_slice(), 3).map_err(io_error)?
    } else {
        archive
    };
    store_cache_file(&path, &bytes).map_err(|e| VmError::Setup(format!("storing the initramfs: {e}")))?;
    if let Ok(agent_modified) = meta.modified() {
        prune_initramfs_before(cache_dir, &path, agent_modified);
    }
    Ok(path)
}

/// Deletes the cached initramfs files built before the agent now in use was installed: they
/// hold an older agent and no start asks for them again (a running VM's qemu read its
/// initramfs at start). Those built since, for another guest kernel, stay.
fn prune_initramfs_before(cache_dir: &Path, keep: &Path, agent_modified: std::time::SystemTime) {
    let Ok(entries) = fs::read_dir(cache_dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path == keep || !(name.starts_with("initramfs-") && name.ends_with(".img")) {
            continue;
        }
        let built = entry.metadata().and_then(|meta| meta.modified());
        if built.is_ok_and(|built| built < agent_modified) {
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(file = %path.display(), "removed an initramfs built for an older agent"),
                Err(e) => tracing::warn!(file = %path.display(), "removing an outdated initramfs: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_dir(label: &str, files: &[&str]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-guest-kernels-{}-{label}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("boot")).unwrap();
        for file in files {
            fs::write(dir.join("boot").join(file), b"").unwrap();
        }
        dir
    }

    #[test]
    fn initramfs_files_older_than_the_agent_are_pruned() {
        let dir = guest_dir("prune", &[]);
        let old = dir.join("initramfs-0123456789abcdef.img");
        let other_kernel = dir.join("initramfs-fedcba9876543210.img");
        let current = dir.join("initramfs-00000000000000ff.img");
        let unrelated = dir.join("vmlinux-6.1.0-48-cloud-amd64-0123456789abcdef");
        for file in [&old, &unrelated] {
            fs::write(file, b"built before").unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let agent_installed = std::time::SystemTime::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        for file in [&other_kernel, &current] {
            fs::write(file, b"built since").unwrap();
        }
        prune_initramfs_before(&dir, &current, agent_installed);
        assert!(!old.exists(), "the initramfs of an older agent is deleted");
        assert!(other_kernel.exists() && current.exists() && unrelated.exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn the_kernel_built_for_berth_is_preferred_unless_debians_is_asked_for() {
        let both = guest_dir(
            "both",
            &[
                "vmlinuz-6.1.0-48-cloud-amd64",
                "config-6.1.0-48-cloud-amd64",
                "vmlinux-6.1.172-berth",
            ],
        );
        let auto = find_guest_kernel(&both, KernelChoice::Auto).unwrap();
        assert_eq!(auto.version, "6.1.172-berth");
        assert_eq!(auto.vmlinuz, both.join("boot/vmlinux-6.1.172-berth"));
        let debian = find_guest_kernel(&both, KernelChoice::Debian).unwrap();
        assert_eq!(debian.version, "6.1.0-48-cloud-amd64");
        assert_eq!(debian.modules, both.join("lib/modules/6.1.0-48-cloud-amd64/kernel"));

        let only_debian = guest_dir("debian", &["vmlinuz-6.1.0-48-cloud-amd64"]);
        assert_eq!(
            find_guest_kernel(&only_debian, KernelChoice::Auto).unwrap().version,
            "6.1.0-48-cloud-amd64"
        );
        let only_berth = guest_dir("berth", &["vmlinux-6.1.172-berth"]);
        let missing = find_guest_kernel(&only_berth, KernelChoice::Debian).unwrap_err();
        assert!(missing.to_string().contains("install-deps.sh"), "{missing}");
        for dir in [both, only_debian, only_berth] {
            let _ = fs::remove_dir_all(dir);
        }
    }
}
