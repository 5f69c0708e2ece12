//! A real NFS server for the tests: Debian's nfs-ganesha serving NFSv3 (with rpcbind) from
//! a temporary directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::temp_dir;

pub struct NfsServer {
    child: Child,
    dir: PathBuf,
    pub export: PathBuf,
    /// Held while the server runs: the NFS port is fixed, so one test at a time has one.
    _port: MutexGuard<'static, ()>,
}

static NFS_PORT: Mutex<()> = Mutex::new(());

impl NfsServer {
    /// Starts ganesha on the NFS port of `address` (2049 is fixed: tests that need a server
    /// take turns).
    pub fn start(address: &str) -> NfsServer {
        let port = NFS_PORT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
                "NFS_CORE_PARAM {{ Protocols = 3; Bind_addr = {1}; Enable_NLM = false; Enable_RQUOTA = false; }}\n\
                 EXPORT {{ Export_Id = 77; Path = {0}; Pseudo = {0}; Access_Type = RW; Squash = No_Root_Squash;\n\
                   Protocols = 3; Transports = TCP; SecType = sys; FSAL {{ Name = VFS; }} }}\n\
                 LOG {{ Default_Log_Level = WARN; }}\n",
                export.display(),
                address
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
        let server = NfsServer {
            child,
            dir,
            export,
            _port: port,
        };
        // Ready when QEMU's NFS client can look into the export.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let probe = Command::new("qemu-img")
                .arg("info")
                .arg(format!("nfs://{address}{}/probe", server.export.display()))
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
