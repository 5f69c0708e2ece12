//! Facts about this host that decide what berth can run: kernel, CPU and memory capacity,
//! and which VM accelerator works. Read once at start-up.

use berth_vm::accel::{detect_accelerator, Accelerator};

#[derive(Debug, Clone)]
pub struct HostFacts {
    pub kernel: String,
    pub os: String,
    pub cpus: u64,
    pub memory_bytes: u64,
    pub accelerator: Accelerator,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

impl HostFacts {
    pub fn detect() -> Self {
        let kernel = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into());
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
            })
            .unwrap_or_else(|| "Linux".into());
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    let rest = l.strip_prefix("MemTotal:")?;
                    rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
                })
            })
            .map(|kib| kib * 1024)
            .unwrap_or(0);
        HostFacts {
            kernel,
            os,
            cpus,
            memory_bytes,
            accelerator: detect_accelerator(),
        }
    }
}
