//! NFS shares for volumes. The way Cinder's NFS driver does it, each volume is a qcow2 image
//! file on the share: VMs open it through QEMU's own NFS client (libnfs, `nfs://` URLs, NFSv3),
//! and containers reach it through `qemu-storage-daemon`, which exports the image as a FUSE file
//! that the host mounts on a loop device. Neither path needs the kernel's NFS client; the
//! kernel path (a plain directory on the share, mounted with `mount -t nfs`) is offered where
//! the host has one.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nfs3_client::nfs3_types::nfs3::{diropargs3, filename3, nfsstat3, LINK3args, LOOKUP3args, Nfs3Result, REMOVE3args};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::TokioConnector;
use nfs3_client::Nfs3ConnectionBuilder;

use crate::{failed, run, StorageError};

/// A directory exported by an NFS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsShare {
    pub server: String,
    pub export: String,
}

impl NfsShare {
    /// Checks the server name and export path. Only plain characters are allowed: both end up
    /// in QEMU option strings and URLs, where commas and spaces would change their meaning.
    pub fn new(server: &str, export: &str) -> Result<NfsShare, String> {
        // No leading '-': `mount` would read the name as an option.
        let plain_server = server
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        if server.is_empty() || server.starts_with('-') || !plain_server {
            return Err(format!(
                "server '{server}' is not a host name or IPv4 address; pass --opt server=HOST"
            ));
        }
        let plain = export
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
        if !export.starts_with('/') || !plain || export.split('/').any(|c| c == "..") {
            return Err(format!(
                "share '{export}' is not an absolute export path of letters, digits, '/', '.', '_' and '-'; pass --opt share=/EXPORT"
            ));
        }
        Ok(NfsShare {
            server: server.to_string(),
            export: export.trim_end_matches('/').to_string(),
        })
    }

    /// Path of `file` on the server, as QEMU's NFS driver wants it.
    pub fn path_of(&self, file: &str) -> String {
        format!("{}/{file}", self.export)
    }

    /// `nfs://server/export/file`, QEMU's URL for an image on the share.
    pub fn url(&self, file: &str) -> String {
        format!("nfs://{}{}", self.server, self.path_of(file))
    }

    /// `nfs://SERVER/EXPORT` (what `--disk-on` takes), checked as `new` checks.
    pub fn from_url(url: &str) -> Result<NfsShare, String> {
        let rest = url
            .strip_prefix("nfs://")
            .ok_or_else(|| format!("'{}' is not nfs://SERVER/EXPORT", url.escape_default()))?;
        let (server, export) = rest
            .split_once('/')
            .ok_or_else(|| format!("'{}' names no export: give nfs://SERVER/EXPORT", url.escape_default()))?;
        // `new`'s hints name the volume options; here the fix is in the URL.
        NfsShare::new(server, &format!("/{export}")).map_err(|e| {
            let problem = e.split("; pass").next().unwrap_or(&e);
            format!("{problem}; give nfs://SERVER/EXPORT")
        })
    }

    /// An NFSv3 connection to the share, mounted as root (auth_unix uid 0, as QEMU's
    /// client connects).
    async fn connect(
        &self,
        context: &str,
    ) -> Result<nfs3_client::Nfs3Connection<nfs3_client::tokio::TokioIo<tokio::net::TcpStream>>, StorageError> {
        let root = auth_unix {
            stamp: 0,
            machinename: Opaque::borrowed(b"berth"),
            uid: 0,
            gid: 0,
            gids: vec![],
        };
        let connect = Nfs3ConnectionBuilder::new(TokioConnector, self.server.clone(), self.export.clone())
            .credential(opaque_auth::auth_unix(&root))
            .mount();
        tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| failed(context, "the server did not answer within 10s"))?
            .map_err(|e| failed(context, e))
    }

    /// Deletes `file` in the share's top directory; a file already gone is fine.
    pub async fn remove(&self, file: &str) -> Result<(), StorageError> {
        let context = format!("removing {} from {}:{}", file, self.server, self.export);
        let mut connection = self.connect(&context).await?;
        let args = REMOVE3args {
            object: diropargs3 {
                dir: connection.root_nfs_fh3(),
                name: filename3::from(file.as_bytes()),
            },
        };
        let result = connection.remove(&args).await.map_err(|e| failed(&context, e));
        let _ = connection.unmount().await;
        match result? {
            Nfs3Result::Ok(_) | Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _)) => Ok(()),
            Nfs3Result::Err((status, _)) => Err(failed(&context, format!("{status:?}"))),
        }
    }

    /// Whether `file` is in the share's top directory.
    pub async fn exists(&self, file: &str) -> Result<bool, StorageError> {
        let context = format!("looking for {} on {}:{}", file, self.server, self.export);
        let mut connection = self.connect(&context).await?;
        let args = LOOKUP3args {
            what: diropargs3 {
                dir: connection.root_nfs_fh3(),
                name: filename3::from(file.as_bytes()),
            },
        };
        let result = connection.lookup(&args).await.map_err(|e| failed(&context, e));
        let _ = connection.unmount().await;
        match result? {
            Nfs3Result::Ok(_) => Ok(true),
            Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _)) => Ok(false),
            Nfs3Result::Err((status, _)) => Err(failed(&context, format!("{status:?}"))),
        }
    }

    /// Gives `from` the second name `to`, unless `to` exists (then false): a file written
    /// under a temporary name appears whole, once, however many hosts race to publish it
    /// (RENAME would replace a file someone already uses).
    pub async fn link_new(&self, from: &str, to: &str) -> Result<bool, StorageError> {
        let context = format!("linking {from} as {to} on {}:{}", self.server, self.export);
        let mut connection = self.connect(&context).await?;
        let root = connection.root_nfs_fh3();
        let lookup = LOOKUP3args {
            what: diropargs3 {
                dir: root.clone(),
                name: filename3::from(from.as_bytes()),
            },
        };
        let file = match connection.lookup(&lookup).await.map_err(|e| failed(&context, e))? {
            Nfs3Result::Ok(found) => found.object,
            Nfs3Result::Err((status, _)) => {
                let _ = connection.unmount().await;
                return Err(failed(&context, format!("{status:?}")));
            }
        };
        let args = LINK3args {
            file,
            link: diropargs3 {
                dir: root,
                name: filename3::from(to.as_bytes()),
            },
        };
        let result = connection.link(&args).await.map_err(|e| failed(&context, e));
        let _ = connection.unmount().await;
        match result? {
            Nfs3Result::Ok(_) => Ok(true),
            Nfs3Result::Err((nfsstat3::NFS3ERR_EXIST, _)) => Ok(false),
            Nfs3Result::Err((status, _)) => Err(failed(&context, format!("{status:?}"))),
        }
    }
}

/// Whether this host's kernel can mount NFS (the `mode=mount` path).
pub fn kernel_client_available() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|list| list.lines().any(|l| l.split_whitespace().last() == Some("nfs")))
        .unwrap_or(false)
}

/// Mounts a directory of the share with the kernel's NFS client (NFSv3, no locking daemon).
pub fn kernel_mount(share: &NfsShare, mountpoint: &Path) -> Result<(), StorageError> {
    let context = format!("mounting {}:{} at {}", share.server, share.export, mountpoint.display());
    if !kernel_client_available() {
        return Err(failed(
            context,
            "this host's kernel has no NFS client (no 'nfs' in /proc/filesystems); load the nfs module or use --opt mode=image",
        ));
    }
    fs::create_dir_all(mountpoint).map_err(|e| failed(&context, e))?;
    if crate::is_mounted(mountpoint) {
        return Ok(());
    }
    run(
        berth_process::command("mount")
            .args([
                "-t",
                "nfs",
                "-o",
                &format!("vers=3,nolock,{}", crate::DATA_MOUNT_OPTIONS),
            ])
            .arg(format!("{}:{}", share.server, share.export))
            .arg(mountpoint),
        &context,
    )
}

/// Creates a qcow2 image on the share holding an empty ext4 filesystem of `size` bytes: a
/// sparse ext4 image made locally (in `scratch`) and converted onto the share, so only the
/// few megabytes mkfs wrote cross the network.
pub fn create_ext4_qcow2(share: &NfsShare, file: &str, size: u64, scratch: &Path) -> Result<(), StorageError> {
    let context = format!("creating {}", share.url(file));
    crate::create_ext4_image(scratch, size)?;
    let converted = run(
        berth_process::command("qemu-img")
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(scratch)
            .arg(share.url(file)),
        &context,
    );
    let _ = fs::remove_file(scratch);
    converted
}

/// A qcow2 image on a share exported to this host as a raw FUSE file by a daemonized
/// `qemu-storage-daemon` (which outlives berth's daemon, so containers keep their data path
/// across a daemon restart).
pub struct FuseExport {
    /// The regular file the export is mounted over.
    pub file: PathBuf,
    pub pidfile: PathBuf,
}

impl FuseExport {
    pub fn in_dir(dir: &Path) -> FuseExport {
        FuseExport {
            file: dir.join("export.img"),
            pidfile: dir.join("qsd.pid"),
        }
    }

    /// The storage daemon's pid, if the pidfile names a live qemu-storage-daemon serving this
    /// export (after a reboot the pid may belong to anything else).
    fn pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(&self.pidfile).ok()?.trim().parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        let ours = cmdline.starts_with("qemu-storage-daemon") && cmdline.contains(&*self.file.to_string_lossy());
        ours.then_some(pid)
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some() && crate::is_mounted(&self.file)
    }

    pub fn start(&self, share: &NfsShare, file: &str) -> Result<(), StorageError> {
        let context = format!("exporting {} through qemu-storage-daemon", share.url(file));
        if self.is_running() {
            return Ok(());
        }
        self.stop()?;
        fs::write(&self.file, b"").map_err(|e| failed(&context, e))?;
        run(
            berth_process::command("qemu-storage-daemon")
                .arg("--blockdev")
                .arg(format!(
                    "driver=nfs,node-name=share,server.type=inet,server.host={},path={}",
                    share.server,
                    share.path_of(file)
                ))
                .args(["--blockdev", "driver=qcow2,node-name=volume,file=share"])
                .arg("--export")
                .arg(format!(
                    "type=fuse,id=volume,node-name=volume,mountpoint={},writable=on",
                    self.file.display()
                ))
                .arg("--pidfile")
                .arg(&self.pidfile)
                .arg("--daemonize"),
            &context,
        )?;
        if !crate::is_mounted(&self.file) {
            let _ = self.stop();
            return Err(failed(context, "the FUSE export did not appear"));
        }
        Ok(())
    }

    /// Stops the storage daemon (which flushes the image and removes the FUSE mount). One
    /// that does not end on SIGTERM within 30 s (a flush hanging on a lost server) is killed;
    /// the pidfile goes only once the process is gone, so no second daemon ever opens the
    /// image beside it.
    pub fn stop(&self) -> Result<(), StorageError> {
        use nix::sys::signal::{kill, Signal};
        if let Some(raw) = self.pid() {
            let pid = nix::unistd::Pid::from_raw(raw);
            let alive = || Path::new(&format!("/proc/{raw}")).exists();
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive() {
                let _ = kill(pid, Signal::SIGKILL);
                std::thread::sleep(Duration::from_millis(200));
            }
            if alive() {
                return Err(failed(
                    format!("stopping qemu-storage-daemon {raw}"),
                    "it does not end even on SIGKILL",
                ));
            }
        }
        if crate::is_mounted(&self.file) {
            let _ = crate::unmount(&self.file);
        }
        let _ = fs::remove_file(&self.pidfile);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_checked() {
        let share = NfsShare::new("127.0.0.1", "/srv/nfs/").unwrap();
        assert_eq!(share.url("v.qcow2"), "nfs://127.0.0.1/srv/nfs/v.qcow2");
        assert!(NfsShare::new("a,b", "/x").is_err());
        assert!(NfsShare::new("-o", "/x").is_err());
        assert!(NfsShare::new("host", "relative").is_err());
        assert!(NfsShare::new("host", "/x,driver=file").is_err());
        assert!(NfsShare::new("host", "/x/../etc").is_err());
    }
}
