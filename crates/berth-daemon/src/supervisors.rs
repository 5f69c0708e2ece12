//! Starting instances' supervisors. One supervisor is kept waiting (`berth_shim::standby`):
//! a start hands it the instance's config through its stdin, which skips the spawn and exec
//! of the berth binary (about 1 ms of each start), and the next one is started in the
//! background. Without a waiting one (the first start, two at once, or it ended), a
//! supervisor is started for the config as `berth supervise CONFIG`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout};

/// Starts supervisors of this daemon's binary.
pub(crate) struct Launcher {
    /// This binary, run in supervisor mode.
    exe: PathBuf,
    waiting: Mutex<Option<Waiting>>,
    /// A waiting supervisor is being started (concurrent starts ask for one each).
    starting: AtomicBool,
}

/// A supervisor waiting for its config.
struct Waiting {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

/// A started supervisor: the process, and its stdout, which carries its ready line.
pub(crate) struct Launched {
    pub child: Child,
    pub stdout: ChildStdout,
}

impl Launcher {
    pub(crate) fn new(exe: PathBuf) -> Arc<Self> {
        Arc::new(Launcher {
            exe,
            waiting: Mutex::new(None),
            starting: AtomicBool::new(false),
        })
    }

    /// A supervisor for the config at `config_path`, whose directory gets its
    /// `supervisor.log`: the waiting one when there is one, else a new one.
    pub(crate) async fn launch(self: &Arc<Self>, config_path: &Path) -> io::Result<Launched> {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).take();
        let launched = match waiting {
            Some(waiting) => match hand_over(waiting, config_path).await {
                Ok(launched) => Ok(launched),
                Err(e) => {
                    tracing::debug!(error = %e, "the standby supervisor could not take the config; starting one");
                    self.start_for(config_path)
                }
            },
            None => self.start_for(config_path),
        };
        self.keep_one_waiting();
        launched
    }

    /// Starts a waiting supervisor in the background unless one is waiting already.
    pub(crate) fn keep_one_waiting(self: &Arc<Self>) {
        if self.starting.swap(true, Ordering::AcqRel) {
            return;
        }
        let launcher = Arc::clone(self);
        tokio::spawn(async move {
            if launcher.waiting.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
                match launcher.start_waiting() {
                    Ok(started) => *launcher.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(started),
                    Err(e) => tracing::warn!(error = %e, "starting a standby supervisor"),
                }
            }
            launcher.starting.store(false, Ordering::Release);
        });
    }

    /// `berth supervise CONFIG`, its stderr into `supervisor.log` beside the config.
    fn start_for(&self, config_path: &Path) -> io::Result<Launched> {
        let dir = config_path.parent().unwrap_or(Path::new("."));
        let stderr = std::fs::File::create(dir.join("supervisor.log"))
            .map_err(|e| io::Error::new(e.kind(), format!("creating the supervisor log: {e}")))?;
        let mut child = self
            .command()
            .arg(config_path)
            .stdin(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| self.start_error(e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("supervisor stdout missing"))?;
        Ok(Launched { child, stdout })
    }

    fn start_waiting(&self) -> io::Result<Waiting> {
        let mut child = self
            .command()
            .arg(berth_shim::standby::standby_argument())
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| self.start_error(e))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("supervisor stdin missing"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("supervisor stdout missing"))?;
        Ok(Waiting { child, stdin, stdout })
    }

    fn command(&self) -> tokio::process::Command {
        // /proc/self/exe is this very binary even after a package upgrade replaced the file,
        // so supervisors always speak the daemon's protocol; argv[0] keeps the real name.
        let mut command = berth_process::async_command_resetting_itself("/proc/self/exe");
        command
            .arg0(&self.exe)
            .arg("supervise")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(false);
        command
    }

    fn start_error(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("starting the supervisor {}: {e}", self.exe.display()))
    }
}

/// Gives the waiting supervisor its config: one line, then end of file.
async fn hand_over(mut waiting: Waiting, config_path: &Path) -> io::Result<Launched> {
    if waiting.child.try_wait()?.is_some() {
        return Err(io::Error::other("it had ended"));
    }
    let mut line = config_path.as_os_str().as_encoded_bytes().to_vec();
    if line.contains(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the config path holds a line break",
        ));
    }
    line.push(b'\n');
    waiting.stdin.write_all(&line).await?;
    drop(waiting.stdin);
    Ok(Launched {
        child: waiting.child,
        stdout: waiting.stdout,
    })
}
