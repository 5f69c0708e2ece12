//! Facts about this host that decide what berth can run: kernel, CPU and memory capacity,
//! and which VM accelerator works. Read once at start-up.

use std::path::Path;

/// Which accelerator VMs would use, and why.
#[derive(Debug, Clone)]
pub struct Accelerator {
    pub usable: Vec<String>,
    pub note: String,
}

#[derive(Debug, Clone)]
pub struct HostFacts {
    pub kernel: String,
    pub os: String,
    pub cpus: u64,
    pub memory_bytes: u64,
    pub accelerator: Accelerator,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// KVM is usable when /dev/kvm exists and a hardware KVM module (kvm_intel, kvm_amd) backs
/// it. A paravirtual nested KVM (kvm_pvm) accepts VMs but stock guest kernels hang after
/// real mode on it, so it counts as unusable.
pub fn detect_accelerator() -> Accelerator {
    let has_dev = Path::new("/dev/kvm").exists();
    let module = |name: &str| Path::new("/sys/module").join(name).exists();
    if has_dev && (module("kvm_intel") || module("kvm_amd")) {
        return Accelerator {
            usable: vec!["kvm".into(), "tcg".into()],
            note: "kvm (hardware virtualization)".into(),
        };
    }
    let note = if has_dev && module("kvm_pvm") {
        "tcg: /dev/kvm is a paravirtual nested KVM (kvm_pvm) on which stock guest kernels hang; VMs use software emulation".to_string()
    } else if has_dev {
        "tcg: /dev/kvm exists but no hardware KVM module (kvm_intel, kvm_amd) is loaded".to_string()
    } else {
        "tcg: no /dev/kvm; VMs use software emulation".to_string()
    };
    Accelerator {
        usable: vec!["tcg".into()],
        note,
    }
}

impl HostFacts {
    pub fn detect() -> Self {
        let kernel = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into());
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_string())
                })
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
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
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
