//! Host process trees for `berth top` and `berth ps --tree`: what `ps auxf` shows for an
//! instance — its supervisor, the processes under it and, for a VM, qemu's threads.
//!
//! A snapshot reads one file per host process (`/proc/PID/stat`: parent, state, times, RSS
//! and name), which is all it takes to find the trees; the owner and the command line are
//! read only for the processes a tree shows. With 200 containers running, reading every
//! process's status, owner and command line through the `procfs` crate made 17 system calls
//! a process and most of `ps --tree`'s time.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use berth_model::api::ProcessNode;
use procfs::process::Process;

/// What a process's `stat` line says, as far as a tree needs it.
#[derive(Debug, PartialEq)]
struct ProcInfo {
    ppid: u32,
    cpu_ticks: u64,
    start_ticks: u64,
    rss_pages: u64,
    state: char,
    comm: String,
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid ... utime stime ... starttime vsize rss`.
/// The name is whatever the process set (spaces and parentheses included), so the fields
/// are counted from the last `)`.
fn parse_stat(line: &str) -> Option<ProcInfo> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_string();
    let mut fields = line.get(close + 1..)?.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields after the state, counted from 0: ppid 0, utime 10, stime 11, starttime 18,
    // rss 20 (proc(5) numbers them 4, 14, 15, 22 and 24).
    let rest: Vec<&str> = fields.take(21).collect();
    let number = |index: usize| rest.get(index).and_then(|v| v.parse::<u64>().ok());
    Some(ProcInfo {
        ppid: rest.first()?.parse().ok()?,
        cpu_ticks: number(10)? + number(11)?,
        start_ticks: number(18)?,
        // Signed in the kernel's format; never negative in practice.
        rss_pages: rest.get(20).and_then(|v| v.parse::<i64>().ok())?.max(0) as u64,
        state,
        comm,
    })
}

/// How a procfs file ends, so that reading it takes no extra read to meet its end.
#[derive(Clone, Copy)]
enum ProcFile {
    /// One line (`stat`): procfs answers each read with whole lines, so a read that ends in
    /// a newline has the whole file.
    Line,
    /// `cmdline`: the kernel copies the argument pages until the buffer is full or the
    /// arguments end, so a short read is the end.
    Arguments,
}

/// Reads a procfs file of a process into `buffer` (cleared first).
fn read_proc_file(path: &str, buffer: &mut Vec<u8>, kind: ProcFile) -> Option<()> {
    buffer.clear();
    let mut file = File::open(path).ok()?;
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read(&mut chunk).ok()?;
        buffer.extend_from_slice(&chunk[..n]);
        let complete = match kind {
            ProcFile::Line => buffer.ends_with(b"\n"),
            ProcFile::Arguments => n < chunk.len(),
        };
        // A command line is at most what the process's argument pages hold; stop at 1 MiB.
        if n == 0 || complete || buffer.len() > 1 << 20 {
            return Some(());
        }
    }
}

/// The command line as `ps` shows it: arguments joined by spaces; a kernel thread (or a
/// process that has just exited) has none and shows as `[comm]`.
fn command_of(pid: u32, comm: &str) -> String {
    let mut buffer = Vec::new();
    if read_proc_file(&format!("/proc/{pid}/cmdline"), &mut buffer, ProcFile::Arguments).is_some() {
        let args: Vec<String> = buffer
            .split(|b| *b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        if !args.is_empty() {
            return args.join(" ");
        }
    }
    format!("[{comm}]")
}

/// The process's owner: the owner of its `/proc` directory, its effective user.
fn uid_of(pid: u32) -> u32 {
    std::fs::metadata(format!("/proc/{pid}")).map(|m| m.uid()).unwrap_or(0)
}

fn user_names() -> HashMap<u32, String> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// Context for turning tick counts into percentages.
struct Clock {
    ticks_per_second: f64,
    uptime_seconds: f64,
}

impl Clock {
    fn now() -> Self {
        let ticks_per_second = procfs::ticks_per_second() as f64;
        let uptime_seconds = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        Clock {
            ticks_per_second,
            uptime_seconds,
        }
    }

    /// Lifetime CPU use in percent of one CPU, as `ps` computes %CPU.
    fn cpu_percent(&self, cpu_ticks: u64, start_ticks: u64) -> f64 {
        let elapsed = self.uptime_seconds - start_ticks as f64 / self.ticks_per_second;
        if elapsed <= 0.0 {
            return 0.0;
        }
        let percent = cpu_ticks as f64 / self.ticks_per_second / elapsed * 100.0;
        (percent * 10.0).round() / 10.0
    }
}

/// A snapshot of the host's processes, read once per request. Blocking: build it and its
/// trees off the async runtime.
pub struct ProcessTable {
    processes: HashMap<u32, ProcInfo>,
    children: HashMap<u32, Vec<u32>>,
    users: HashMap<u32, String>,
    clock: Clock,
    page_size: u64,
}

impl ProcessTable {
    pub fn snapshot() -> Self {
        let page_size = procfs::page_size();
        let mut processes = HashMap::new();
        let mut buffer = Vec::with_capacity(1024);
        let mut path = String::with_capacity(32);
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
                    continue;
                };
                path.clear();
                path.push_str("/proc/");
                path.push_str(&pid.to_string());
                path.push_str("/stat");
                // A process that exited since the listing is simply not in the snapshot.
                if read_proc_file(&path, &mut buffer, ProcFile::Line).is_none() {
                    continue;
                }
                if let Some(info) = std::str::from_utf8(&buffer).ok().and_then(parse_stat) {
                    processes.insert(pid, info);
                }
            }
        }
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, info) in &processes {
            children.entry(info.ppid).or_default().push(*pid);
        }
        for list in children.values_mut() {
            list.sort_unstable();
        }
        ProcessTable {
            processes,
            children,
            users: user_names(),
            clock: Clock::now(),
            page_size,
        }
    }

    fn user_name(&self, uid: u32) -> String {
        self.users.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
    }

    fn node(&self, pid: u32, info: &ProcInfo) -> ProcessNode {
        ProcessNode {
            pid,
            ppid: info.ppid,
            user: self.user_name(uid_of(pid)),
            cpu_percent: self.clock.cpu_percent(info.cpu_ticks, info.start_ticks),
            rss_bytes: info.rss_pages * self.page_size,
            state: info.state.to_string(),
            command: command_of(pid, &info.comm),
            is_thread: false,
            children: Vec::new(),
        }
    }

    /// The tree under (and including) `pid`. With `threads`, each process also lists its
    /// threads other than the main one (qemu's vCPU threads), before its child processes.
    pub fn tree(&self, pid: u32, threads: bool) -> Option<ProcessNode> {
        self.tree_at_depth(pid, threads, 0)
    }

    fn tree_at_depth(&self, pid: u32, threads: bool, depth: usize) -> Option<ProcessNode> {
        let info = self.processes.get(&pid)?;
        let mut node = self.node(pid, info);
        if depth > 64 {
            return Some(node);
        }
        if threads {
            let threads = self.threads_of(pid, &node.user);
            node.children.extend(threads);
        }
        for child in self.children.get(&pid).into_iter().flatten() {
            if let Some(child_node) = self.tree_at_depth(*child, threads, depth + 1) {
                node.children.push(child_node);
            }
        }
        Some(node)
    }

    fn threads_of(&self, pid: u32, user: &str) -> Vec<ProcessNode> {
        let Ok(process) = Process::new(pid as i32) else {
            return Vec::new();
        };
        let Ok(tasks) = process.tasks() else {
            return Vec::new();
        };
        let mut nodes = Vec::new();
        for task in tasks.flatten() {
            if task.tid == pid as i32 {
                continue;
            }
            let Ok(stat) = task.stat() else { continue };
            nodes.push(ProcessNode {
                pid: task.tid as u32,
                ppid: pid,
                user: user.to_string(),
                cpu_percent: self.clock.cpu_percent(stat.utime + stat.stime, stat.starttime),
                rss_bytes: stat.rss * self.page_size,
                state: stat.state.to_string(),
                command: format!("{{{}}}", stat.comm),
                is_thread: true,
                children: Vec::new(),
            });
        }
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A name with a space and a parenthesis, as a process may set with prctl.
        let line = "4242 (we(ird) name) S 17 4242 4242 0 -1 4194560 120 0 0 0 7 5 0 0 20 0 1 0 \
                    987654 2314240 305 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let info = parse_stat(line).expect("parsed");
        assert_eq!(
            info,
            ProcInfo {
                ppid: 17,
                cpu_ticks: 12,
                start_ticks: 987_654,
                rss_pages: 305,
                state: 'S',
                comm: "we(ird) name".into(),
            }
        );
    }

    #[test]
    fn a_truncated_stat_line_is_no_process() {
        assert_eq!(parse_stat("4242 (sh) S 1 4242"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_command_line_longer_than_one_read_is_read_whole() {
        // `sh -c SCRIPT NAME ARG`: the argument outgrows the 4 KiB read buffer. Polled: right
        // after the fork the child still shows this test's command line.
        let long = "x".repeat(10_000);
        let expected = format!("sh -c sleep 30; true berth-test {long}");
        let mut child = berth_process::command("sh")
            .args(["-c", "sleep 30; true", "berth-test", &long])
            .spawn()
            .expect("sh runs");
        let mut command = String::new();
        for _ in 0..200 {
            command = ProcessTable::snapshot()
                .tree(child.id(), false)
                .map(|node| node.command)
                .unwrap_or_default();
            if command.starts_with("sh ") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(command.len(), expected.len(), "{}", &command[..command.len().min(80)]);
        assert!(command == expected);
    }

    #[test]
    fn this_process_is_in_the_snapshot_with_its_command_line() {
        let table = ProcessTable::snapshot();
        let pid = std::process::id();
        let node = table.tree(pid, false).expect("this process is listed");
        assert_eq!(node.pid, pid);
        assert_eq!(node.ppid, std::os::unix::process::parent_id());
        let arg0 = std::env::args().next().unwrap_or_default();
        assert!(
            node.command.starts_with(&arg0),
            "{} does not start with {arg0}",
            node.command
        );
        assert!(node.rss_bytes > 0);
    }
}
