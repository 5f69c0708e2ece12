//! Host process trees for `berth top` and `berth ps --tree`: what `ps auxf` shows for an
//! instance — its supervisor, the processes under it and, for a VM, qemu's threads.

use std::collections::HashMap;

use berth_model::api::ProcessNode;
use procfs::process::{all_processes, Process};

struct ProcInfo {
    ppid: u32,
    uid: u32,
    cpu_ticks: u64,
    start_ticks: u64,
    rss_bytes: u64,
    state: char,
    command: String,
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

fn command_of(process: &Process, comm: &str) -> String {
    match process.cmdline() {
        Ok(args) if !args.is_empty() => args.join(" "),
        _ => format!("[{comm}]"),
    }
}

fn read_info(process: &Process, page_size: u64) -> Option<ProcInfo> {
    let stat = process.stat().ok()?;
    let uid = process.uid().unwrap_or(0);
    Some(ProcInfo {
        ppid: stat.ppid as u32,
        uid,
        cpu_ticks: stat.utime + stat.stime,
        start_ticks: stat.starttime,
        rss_bytes: stat.rss * page_size,
        state: stat.state,
        command: command_of(process, &stat.comm),
    })
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

/// A snapshot of the host's processes, read once per request.
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
        if let Ok(all) = all_processes() {
            for process in all.flatten() {
                if let Some(info) = read_info(&process, page_size) {
                    processes.insert(process.pid as u32, info);
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

    fn node(&self, pid: u32, info: &ProcInfo) -> ProcessNode {
        ProcessNode {
            pid,
            ppid: info.ppid,
            user: self
                .users
                .get(&info.uid)
                .cloned()
                .unwrap_or_else(|| info.uid.to_string()),
            cpu_percent: self.clock.cpu_percent(info.cpu_ticks, info.start_ticks),
            rss_bytes: info.rss_bytes,
            state: info.state.to_string(),
            command: info.command.clone(),
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
            node.children.extend(self.threads_of(pid));
        }
        for child in self.children.get(&pid).into_iter().flatten() {
            if let Some(child_node) = self.tree_at_depth(*child, threads, depth + 1) {
                node.children.push(child_node);
            }
        }
        Some(node)
    }

    fn threads_of(&self, pid: u32) -> Vec<ProcessNode> {
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
                user: self
                    .processes
                    .get(&pid)
                    .and_then(|p| self.users.get(&p.uid).cloned())
                    .unwrap_or_default(),
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
