//! The supervisor's event loop. One single-threaded process per started instance (and per
//! exec session): it owns the workload's stdio, writes the log, serves attach clients on
//! its control socket, reaps the main process and records how it ended. It is a session
//! leader of its own, so it keeps running when the daemon is killed or restarted.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_model::driver::SupervisorConfig;
use berth_model::log::LogLimits;
use berth_model::stream::{self, Frame, FrameKind};
use berth_model::ExitStatus;
use chrono::Utc;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::protocol::{ExitRecord, LogRecord, ReadyLine, Reply, Request};
use crate::rotating::RotatingFile;

/// Where the workload's standard streams go.
pub enum ChildStdio {
    /// Separate pipes; `stdin` is `/dev/null` unless stdin was asked for.
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A pseudo-terminal whose master the runtime sends to this unix socket.
    Terminal { console_socket: PathBuf },
}

/// Sends signal `number` to `pid`: any of 1-64, the real-time ones (SIGRTMIN+n) included,
/// which nix's `Signal` cannot name.
pub fn send_signal(pid: u32, number: i32) -> Result<(), String> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let result = unsafe { libc::kill(pid as libc::pid_t, number) };
    nix::errno::Errno::result(result)
        .map(drop)
        .map_err(|e| format!("kill: {e}"))
}

/// The thing a supervisor runs: an OCI container, an exec session, a qemu process.
pub trait Workload {
    /// Creates the workload, wired to `stdio`, without running the user's program yet.
    fn create(&mut self, stdio: ChildStdio) -> Result<(), String>;
    /// Runs it; returns the host PID of the main process.
    fn start(&mut self) -> Result<u32, String>;
    /// Signals the main process, or every process of the workload when `all`.
    fn signal(&mut self, pid: u32, signal: i32, all: bool) -> Result<(), String> {
        let _ = all;
        send_signal(pid, signal)
    }
    /// Called once the main process was reaped: completes the status (OOM kills).
    fn exit_status(&mut self, status: ExitStatus) -> ExitStatus {
        status
    }
    /// Removes runtime state after the exit was reported. Must not fail; problems are
    /// logged to the supervisor's stderr.
    fn clean_up(&mut self) {}
}

/// Output buffered for one client beyond this is a client that stopped reading: drop it.
const MAX_CLIENT_BACKLOG: usize = 8 << 20;
/// A partial output line longer than this is logged as is (Docker uses 16 KiB).
const MAX_LOG_LINE: usize = 16 << 10;
/// How long output may keep flowing after the main process ended (exec sessions can leave
/// background processes holding the pipes).
const DRAIN_LIMIT: Duration = Duration::from_millis(1000);

#[derive(PartialEq)]
enum ClientMode {
    AwaitingRequest,
    Attached {
        stdin: bool,
    },
    Waiting,
    /// Send what is buffered, then close.
    Closing,
}

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    mode: ClientMode,
    dead: bool,
}

impl Client {
    fn queue_reply(&mut self, reply: &Reply) {
        if let Ok(mut line) = serde_json::to_vec(reply) {
            line.push(b'\n');
            self.outbuf.extend_from_slice(&line);
        }
    }

    fn queue_frame(&mut self, kind: FrameKind, payload: &[u8]) {
        for chunk in payload
            .chunks(stream::MAX_PAYLOAD)
            .chain(payload.is_empty().then_some(&[][..]))
        {
            self.outbuf.extend_from_slice(&stream::encode_frame(kind, chunk));
        }
        if self.outbuf.len() > MAX_CLIENT_BACKLOG {
            self.dead = true;
        }
    }

    fn flush(&mut self) {
        while !self.outbuf.is_empty() {
            match self.stream.write(&self.outbuf) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        if self.mode == ClientMode::Closing {
            self.dead = true;
        }
    }
}

/// Splits output into log lines per stream, written as JSON records to a rotating file.
struct LogWriter {
    file: Option<RotatingFile>,
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    fn open(path: Option<&Path>, limits: LogLimits) -> io::Result<Self> {
        let file = match path {
            Some(path) => Some(RotatingFile::open(path, limits)?),
            None => None,
        };
        Ok(LogWriter {
            file,
            partial: [Vec::new(), Vec::new()],
        })
    }

    fn record(&mut self, stream_index: usize, data: &[u8]) {
        if self.file.is_none() {
            return;
        }
        self.partial[stream_index].extend_from_slice(data);
        while let Some(newline) = self.partial[stream_index].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial[stream_index].drain(..=newline).collect();
            self.write_record(stream_index, &line);
        }
        if self.partial[stream_index].len() > MAX_LOG_LINE {
            let line = std::mem::take(&mut self.partial[stream_index]);
            self.write_record(stream_index, &line);
        }
    }

    fn write_record(&mut self, stream_index: usize, data: &[u8]) {
        let record = LogRecord {
            t: Utc::now(),
            s: if stream_index == 0 { "stdout" } else { "stderr" }.into(),
            d: String::from_utf8_lossy(data).into_owned(),
        };
        if let (Some(file), Ok(mut line)) = (self.file.as_mut(), serde_json::to_vec(&record)) {
            line.push(b'\n');
            if file.write_record(&line).is_err() {
                eprintln!("berth supervisor: cannot write the log");
            }
        }
    }

    fn flush_file(&mut self) {
        if let Some(file) = self.file.as_mut() {
            let _ = file.flush();
        }
    }

    fn flush(&mut self) {
        for index in 0..2 {
            if !self.partial[index].is_empty() {
                let line = std::mem::take(&mut self.partial[index]);
                self.write_record(index, &line);
            }
        }
        if let Some(file) = self.file.as_mut() {
            let _ = file.flush();
        }
    }
}

/// An output source of the workload: index 0 is stdout (or the terminal), 1 is stderr.
struct Output {
    fd: OwnedFd,
    index: usize,
}

struct Supervisor {
    config: SupervisorConfig,
    workload: Box<dyn Workload>,
    listener: UnixListener,
    console_listener: Option<UnixListener>,
    terminal: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    stdin_pending: Vec<u8>,
    outputs: Vec<Output>,
    clients: Vec<Client>,
    log: LogWriter,
    main_pid: Option<u32>,
    pidfd: Option<OwnedFd>,
    exit: Option<ExitStatus>,
    /// Whether start-up memory was given back yet.
    trimmed: bool,
    /// The workload was killed because the daemon's lease heartbeat went stale.
    fenced: bool,
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own; failure leaves it blocking, which is only slower.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Receives the terminal master a runtime sends over the console socket.
fn receive_terminal(listener: &UnixListener) -> Option<OwnedFd> {
    let (stream, _) = listener.accept().ok()?;
    let mut buffer = [0u8; 64];
    let mut iov = [io::IoSliceMut::new(&mut buffer)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = nix::sys::socket::recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .ok()?;
    for cmsg in message.cmsgs().ok()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: SCM_RIGHTS handed us a fresh descriptor.
                return Some(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    None
}

/// When the supervisor's process began its own work (`mark_entered`), for the ready line.
static ENTERED_NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Notes that the supervisor's code has begun: call first thing in the process.
pub fn mark_entered() {
    let _ = ENTERED_NS.set(crate::protocol::monotonic_ns());
}

/// Runs a supervisor to completion. Prints the `ReadyLine` on stdout once the workload is
/// created; returns the process exit code for the supervisor itself.
pub fn run(config: SupervisorConfig, workload: Box<dyn Workload>) -> i32 {
    let _ = nix::unistd::setsid();
    // Orphans of the workload (exec'd daemons, runtime helpers) are reparented here and reaped.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let ready = |ok: bool, error: Option<String>| {
        let line = ReadyLine {
            ok,
            error,
            supervisor_pid: std::process::id(),
            entered_ns: ENTERED_NS.get().copied(),
            created_ns: Some(crate::protocol::monotonic_ns()),
        };
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{}", serde_json::to_string(&line).unwrap_or_default());
        let _ = out.flush();
    };
    match Supervisor::create(config, workload) {
        Ok(mut supervisor) => {
            ready(true, None);
            detach_stdout();
            supervisor.run_loop();
            0
        }
        Err(error) => {
            ready(false, Some(error));
            1
        }
    }
}

/// Gives back what setting up the workload needed and the event loop does not: freed heap
/// and the binary's code pages (one supervisor per instance, so every KiB counts). Done
/// once the supervisor first idles, off the start path.
fn trim_memory() {
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
    release_startup_code();
    release_unused_stack();
}

/// Gives back the main thread's stack pages below the current frame: setting up the workload
/// (libcontainer, serde) went some 100 KiB deep, the event loop needs a few KiB. Pages below
/// the stack pointer hold nothing live; they fault back in as zeroes if the stack grows again.
fn release_unused_stack() {
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Some(start) = maps.lines().find(|line| line.ends_with("[stack]")).and_then(|line| {
        let (range, _) = line.split_once(' ')?;
        let (start, _) = range.split_once('-')?;
        usize::from_str_radix(start, 16).ok()
    }) else {
        return;
    };
    // A margin under this frame for the calls still to come from here (and the red zone).
    let page = 4096;
    let end = (here.saturating_sub(8 * 1024)) & !(page - 1);
    if end > start {
        // SAFETY: [start, end) is the part of our own stack mapping below this frame and an
        // 8 KiB margin; nothing live is there. MADV_DONTNEED drops the pages, which read
        // back as zeroes.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// Drops this process's mappings of the binary's code pages. Setting up the workload touched
/// megabytes of them; the event loop needs a few dozen, which fault back in from the page
/// cache (shared with the daemon) as they are used. Nothing is lost: unmodified code pages
/// are always re-readable from the file.
fn release_startup_code() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let exe = exe.to_string_lossy();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Only code: read-only data mappings include the GOT that the dynamic linker wrote,
        // which must stay.
        if fields.len() < 6 || fields[5] != exe || fields[1] != "r-xp" {
            continue;
        }
        let Some((start, end)) = fields[0].split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        // SAFETY: the range is a whole read-only private file mapping of our own binary;
        // MADV_DONTNEED only drops its page-table entries.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

fn detach_stdout() {
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        // SAFETY: dup2 onto our own stdout.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

impl Supervisor {
    fn create(config: SupervisorConfig, mut workload: Box<dyn Workload>) -> Result<Self, String> {
        let socket_dir = config.socket_path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let _ = std::env::set_current_dir(&socket_dir);
        let _ = std::fs::remove_file(&config.socket_path);
        let _ = std::fs::remove_file(&config.exit_path);
        let listener = UnixListener::bind(&config.socket_path)
            .map_err(|e| format!("cannot listen on {}: {e}", config.socket_path.display()))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let log = LogWriter::open(config.log_path.as_deref(), config.log_limits)
            .map_err(|e| format!("cannot open the log: {e}"))?;

        let mut outputs = Vec::new();
        let mut stdin = None;
        let mut console_listener = None;
        if config.tty {
            let console_path = socket_dir.join("console.sock");
            let _ = std::fs::remove_file(&console_path);
            let listener =
                UnixListener::bind(&console_path).map_err(|e| format!("cannot create the console socket: {e}"))?;
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            workload.create(ChildStdio::Terminal {
                console_socket: console_path.clone(),
            })?;
            console_listener = Some(listener);
        } else {
            let (stdout_read, stdout_write) = pipe_pair().map_err(|e| format!("pipe: {e}"))?;
            let (stderr_read, stderr_write) = pipe_pair().map_err(|e| format!("pipe: {e}"))?;
            let child_stdin: OwnedFd = if config.open_stdin {
                let (read, write) = pipe_pair().map_err(|e| format!("pipe: {e}"))?;
                set_nonblocking(write.as_raw_fd());
                stdin = Some(write);
                read
            } else {
                File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?.into()
            };
            let created = workload.create(ChildStdio::Pipes {
                stdin: child_stdin,
                stdout: stdout_write,
                stderr: stderr_write,
            });
            if let Err(error) = created {
                // The runtime's own complaint, if any, went to the workload's stderr.
                set_nonblocking(stderr_read.as_raw_fd());
                let mut detail = vec![0u8; 4096];
                let n = nix::unistd::read(stderr_read.as_raw_fd(), &mut detail).unwrap_or(0);
                let detail = String::from_utf8_lossy(&detail[..n]);
                let last = detail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                return Err(if last.is_empty() {
                    error
                } else {
                    format!("{error} ({last})")
                });
            }
            for (fd, index) in [(stdout_read, 0), (stderr_read, 1)] {
                set_nonblocking(fd.as_raw_fd());
                outputs.push(Output { fd, index });
            }
        }
        let mut supervisor = Supervisor {
            config,
            workload,
            listener,
            console_listener,
            terminal: None,
            stdin,
            stdin_pending: Vec::new(),
            outputs,
            clients: Vec::new(),
            log,
            main_pid: None,
            pidfd: None,
            exit: None,
            trimmed: false,
            fenced: false,
        };
        supervisor.take_terminal();
        Ok(supervisor)
    }

    /// Picks up the terminal master once the runtime has sent it.
    fn take_terminal(&mut self) {
        if self.terminal.is_some() {
            return;
        }
        let Some(listener) = &self.console_listener else {
            return;
        };
        if let Some(master) = receive_terminal(listener) {
            set_nonblocking(master.as_raw_fd());
            if let Ok(copy) = master.try_clone() {
                self.outputs.push(Output { fd: copy, index: 0 });
            }
            self.terminal = Some(master);
            self.console_listener = None;
            let _ = std::fs::remove_file(self.config.socket_path.with_file_name("console.sock"));
        }
    }

    fn run_loop(&mut self) {
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if self.exit.is_some() {
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_LIMIT);
                if self.outputs.is_empty() || Instant::now() >= deadline {
                    self.finish();
                    return;
                }
            }
            self.fence_if_stale();
            let idle = self.poll_once(if self.exit.is_some() { 50 } else { 1000 });
            if idle && !self.trimmed && self.main_pid.is_some() {
                trim_memory();
                self.trimmed = true;
            }
            self.reap();
        }
    }

    /// In a cluster: kills the workload when the daemon has not renewed its node's lease for
    /// longer than the fencing deadline (see `fence`), before another node may start it.
    fn fence_if_stale(&mut self) {
        let (Some(fence), Some(pid)) = (&self.config.fence, self.main_pid) else {
            return;
        };
        if self.fenced || self.exit.is_some() {
            return;
        }
        if !crate::fence::is_stale(&fence.heartbeat_path, Duration::from_millis(fence.stale_after_ms)) {
            return;
        }
        eprintln!(
            "berth supervisor: the node's lease was not renewed for {} ms ({}): fencing the workload",
            fence.stale_after_ms,
            fence.heartbeat_path.display()
        );
        self.fenced = true;
        if let Err(e) = self.workload.signal(pid, libc::SIGKILL, true) {
            eprintln!("berth supervisor: fencing: {e}");
        }
    }

    /// One round of the event loop; true if nothing happened before the timeout.
    fn poll_once(&mut self, timeout_ms: u16) -> bool {
        // Index layout of the poll set, rebuilt each round: listener, console listener?,
        // pidfd?, stdin?, outputs..., clients...
        let mut fds: Vec<(BorrowedFd<'_>, PollFlags)> = Vec::new();
        fds.push((self.listener.as_fd(), PollFlags::POLLIN));
        let console_at = self.console_listener.as_ref().map(|l| {
            fds.push((l.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        if let Some(pidfd) = &self.pidfd {
            fds.push((pidfd.as_fd(), PollFlags::POLLIN));
        }
        let stdin_at = match (&self.stdin, self.stdin_pending.is_empty()) {
            (Some(fd), false) => {
                fds.push((fd.as_fd(), PollFlags::POLLOUT));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let outputs_at = fds.len();
        for output in &self.outputs {
            fds.push((output.fd.as_fd(), PollFlags::POLLIN));
        }
        let clients_at = fds.len();
        for client in &self.clients {
            let mut flags = PollFlags::POLLIN;
            if !client.outbuf.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push((client.stream.as_fd(), flags));
        }
        let mut poll_fds: Vec<PollFd<'_>> = fds.iter().map(|(fd, flags)| PollFd::new(*fd, *flags)).collect();
        if nix::poll::poll(&mut poll_fds, PollTimeout::from(timeout_ms)).unwrap_or(0) <= 0 {
            return true;
        }
        let ready: Vec<PollFlags> = poll_fds
            .iter()
            .map(|p| p.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(poll_fds);
        drop(fds);

        // Sources added while handling this round (accepted clients, the terminal) are
        // polled from the next round on.
        let output_count = self.outputs.len();
        let client_count = self.clients.len();
        let active = |flags: PollFlags| !flags.is_empty();
        if active(ready[0]) {
            self.accept_clients();
        }
        if console_at.is_some_and(|i| active(ready[i])) {
            self.take_terminal();
        }
        if stdin_at.is_some_and(|i| active(ready[i])) {
            self.write_stdin(&[]);
        }
        let mut closed_outputs = Vec::new();
        for offset in 0..output_count {
            if active(ready[outputs_at + offset]) && !self.read_output(offset) {
                closed_outputs.push(offset);
            }
        }
        for offset in closed_outputs.into_iter().rev() {
            self.outputs.remove(offset);
        }
        for offset in 0..client_count {
            let flags = ready[clients_at + offset];
            if flags.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                self.read_client(offset);
            }
            if !self.clients[offset].outbuf.is_empty() {
                self.clients[offset].flush();
            }
        }
        self.drop_dead_clients();
        false
    }

    fn accept_clients(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    stream,
                    inbuf: Vec::new(),
                    outbuf: Vec::new(),
                    mode: ClientMode::AwaitingRequest,
                    dead: false,
                });
            }
        }
    }

    /// Reads what output is available; false once the source is closed.
    fn read_output(&mut self, offset: usize) -> bool {
        let open = self.read_output_chunks(offset);
        // Readers of the log (`logs -f`) see each batch as soon as it was read.
        self.log.flush_file();
        open
    }

    // Not inlined: its 32 KiB buffer then lives below the event loop's frame, in stack pages
    // an idle supervisor gives back (`release_unused_stack`), not inside that frame.
    #[inline(never)]
    fn read_output_chunks(&mut self, offset: usize) -> bool {
        let mut buffer = [0u8; 32 * 1024];
        loop {
            let fd = self.outputs[offset].fd.as_raw_fd();
            let index = self.outputs[offset].index;
            match nix::unistd::read(fd, &mut buffer) {
                Ok(0) => return false,
                Ok(n) => self.broadcast(index, &buffer[..n]),
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(nix::errno::Errno::EINTR) => continue,
                // EIO: the terminal's other side is gone.
                Err(_) => return false,
            }
        }
    }

    fn broadcast(&mut self, stream_index: usize, data: &[u8]) {
        self.log.record(stream_index, data);
        let kind = if stream_index == 0 {
            FrameKind::Stdout
        } else {
            FrameKind::Stderr
        };
        for client in &mut self.clients {
            if matches!(client.mode, ClientMode::Attached { .. }) {
                client.queue_frame(kind, data);
            }
        }
    }

    // Not inlined, for its 16 KiB buffer (see `read_output_chunks`).
    #[inline(never)]
    fn read_client(&mut self, offset: usize) {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match self.clients[offset].stream.read(&mut buffer) {
                Ok(0) => {
                    self.client_gone(offset);
                    break;
                }
                Ok(n) => self.clients[offset].inbuf.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.client_gone(offset);
                    break;
                }
            }
        }
        self.process_client_input(offset);
    }

    fn client_gone(&mut self, offset: usize) {
        let client = &self.clients[offset];
        // A client that attached stdin and left has finished its input (Docker's StdinOnce).
        if client.mode == (ClientMode::Attached { stdin: true }) {
            self.stdin_pending.clear();
            if self.terminal.is_none() {
                self.stdin = None;
            }
        }
        self.clients[offset].dead = true;
    }

    fn process_client_input(&mut self, offset: usize) {
        loop {
            let client = &mut self.clients[offset];
            match client.mode {
                ClientMode::AwaitingRequest => {
                    let Some(newline) = client.inbuf.iter().position(|b| *b == b'\n') else {
                        if client.inbuf.len() > 64 * 1024 {
                            client.dead = true;
                        }
                        return;
                    };
                    let line: Vec<u8> = client.inbuf.drain(..=newline).collect();
                    match serde_json::from_slice::<Request>(&line) {
                        Ok(request) => self.handle_request(offset, request),
                        Err(e) => {
                            let client = &mut self.clients[offset];
                            client.queue_reply(&Reply::error(format!("bad request: {e}")));
                            client.mode = ClientMode::Closing;
                        }
                    }
                }
                ClientMode::Attached { stdin } => {
                    if client.inbuf.len() < stream::HEADER_LEN {
                        return;
                    }
                    let mut header = [0u8; stream::HEADER_LEN];
                    header.copy_from_slice(&client.inbuf[..stream::HEADER_LEN]);
                    let Ok((kind, len)) = stream::parse_header(&header) else {
                        client.dead = true;
                        return;
                    };
                    if client.inbuf.len() < stream::HEADER_LEN + len {
                        return;
                    }
                    let payload: Vec<u8> = client
                        .inbuf
                        .drain(..stream::HEADER_LEN + len)
                        .skip(stream::HEADER_LEN)
                        .collect();
                    let frame = Frame { kind, payload };
                    match frame.kind {
                        FrameKind::Stdin if stdin => self.write_stdin(&frame.payload),
                        // A terminal has no end of input; closing stdin is for pipes.
                        FrameKind::StdinClose if stdin && self.terminal.is_none() => {
                            self.stdin_pending.clear();
                            self.stdin = None;
                        }
                        FrameKind::Resize => {
                            if let Some((rows, cols)) = frame.as_resize() {
                                self.resize_terminal(rows, cols);
                            }
                        }
                        _ => {}
                    }
                }
                ClientMode::Waiting | ClientMode::Closing => {
                    client.inbuf.clear();
                    return;
                }
            }
        }
    }

    fn handle_request(&mut self, offset: usize, request: Request) {
        let reply = match request {
            Request::Start => {
                if self.main_pid.is_some() {
                    Reply::error("already started")
                } else {
                    match self.workload.start() {
                        Ok(pid) => {
                            self.main_pid = Some(pid);
                            self.pidfd = pidfd_open(pid);
                            self.take_terminal();
                            Reply::with_pid(pid)
                        }
                        Err(e) => {
                            // Nothing will run: end the session so clients and the daemon
                            // learn it, as a shell does for a command it cannot run.
                            self.exit = Some(ExitStatus::from_code(127));
                            Reply::error(e)
                        }
                    }
                }
            }
            Request::Attach { stdin } => {
                let client = &mut self.clients[offset];
                client.queue_reply(&Reply::ok());
                client.mode = ClientMode::Attached {
                    stdin: stdin && (self.stdin.is_some() || self.config.tty),
                };
                return;
            }
            Request::Wait => {
                self.clients[offset].mode = ClientMode::Waiting;
                return;
            }
            Request::Kill { signal, all } => match self.main_pid {
                Some(pid) if self.exit.is_none() => match self.workload.signal(pid, signal, all) {
                    Ok(()) => Reply::ok(),
                    Err(e) => Reply::error(e),
                },
                _ => Reply::error("not running"),
            },
            Request::Status => Reply {
                ok: true,
                pid: self.main_pid,
                ..Default::default()
            },
        };
        let client = &mut self.clients[offset];
        client.queue_reply(&reply);
        client.mode = ClientMode::Closing;
    }

    fn write_stdin(&mut self, data: &[u8]) {
        self.stdin_pending.extend_from_slice(data);
        let fd = match (&self.terminal, &self.stdin) {
            (Some(terminal), _) => terminal.as_raw_fd(),
            (None, Some(stdin)) => stdin.as_raw_fd(),
            (None, None) => {
                self.stdin_pending.clear();
                return;
            }
        };
        while !self.stdin_pending.is_empty() {
            // SAFETY: fd is a descriptor we own; buffer is valid for its length.
            let n = unsafe { libc::write(fd, self.stdin_pending.as_ptr().cast(), self.stdin_pending.len()) };
            if n > 0 {
                self.stdin_pending.drain(..n as usize);
            } else if io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                continue;
            } else if io::Error::last_os_error().kind() == ErrorKind::WouldBlock {
                return;
            } else {
                // The reader is gone; stdin is over.
                self.stdin_pending.clear();
                self.stdin = None;
                return;
            }
        }
    }

    fn resize_terminal(&mut self, rows: u16, cols: u16) {
        if let Some(terminal) = &self.terminal {
            let size = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
            unsafe {
                libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size);
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.reaped(pid, ExitStatus::from_code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => self.reaped(pid, ExitStatus::from_signal(signal as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn reaped(&mut self, pid: Pid, status: ExitStatus) {
        if self.main_pid == Some(pid.as_raw() as u32) && self.exit.is_none() {
            self.exit = Some(status);
            self.pidfd = None;
        }
    }

    fn drop_dead_clients(&mut self) {
        self.clients.retain(|c| !c.dead);
    }

    fn finish(&mut self) {
        // Drain what is still readable, then stop watching the outputs.
        for offset in 0..self.outputs.len() {
            self.read_output(offset);
        }
        self.outputs.clear();
        self.log.flush();
        let status = self.exit.unwrap_or(ExitStatus::from_code(255));
        let status = self.workload.exit_status(status);
        let record = ExitRecord {
            status,
            finished_at: Utc::now(),
        };
        if let Err(e) = record.write(&self.config.exit_path) {
            eprintln!(
                "berth supervisor: cannot write {}: {e}",
                self.config.exit_path.display()
            );
        }
        let _ = std::fs::remove_file(&self.config.socket_path);
        for client in &mut self.clients {
            match client.mode {
                ClientMode::Attached { .. } => {
                    client.outbuf.extend_from_slice(&Frame::exit(&status).encode());
                }
                ClientMode::Waiting => client.queue_reply(&Reply {
                    ok: true,
                    exit: Some(record),
                    ..Default::default()
                }),
                _ => {}
            }
            client.mode = ClientMode::Closing;
            let _ = client.stream.set_nonblocking(false);
            let _ = client.stream.set_write_timeout(Some(Duration::from_secs(2)));
            let _ = client.stream.write_all(&client.outbuf);
        }
        // Everyone waiting knows the outcome; the runtime's clean-up can take its time.
        self.clients.clear();
        self.workload.clean_up();
    }
}
