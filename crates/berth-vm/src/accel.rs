//! Which accelerator VMs use: KVM where the host has hardware virtualization usable by KVM,
//! otherwise QEMU's TCG. Decided once at start-up.

use std::path::Path;

#[derive(Debug, Clone)]
pub struct Accelerator {
    /// Usable accelerators, best first ("kvm", "tcg").
    pub usable: Vec<String>,
    /// Why, in one line.
    pub note: String,
}

impl Accelerator {
    /// The one VMs get.
    pub fn choice(&self) -> &str {
        self.usable.first().map(String::as_str).unwrap_or("tcg")
    }
}

/// KVM is usable when /dev/kvm exists and a hardware KVM module (kvm_intel, kvm_amd) backs
/// it. A paravirtual nested KVM (kvm_pvm) accepts VMs but stock guest kernels hang after the
/// real-mode stage on it, so it counts as unusable.
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
        "tcg: /dev/kvm is a paravirtual nested KVM (kvm_pvm) on which stock guest kernels hang; VMs use software emulation"
    } else if has_dev {
        "tcg: /dev/kvm exists but no hardware KVM module (kvm_intel, kvm_amd) is loaded"
    } else {
        "tcg: no /dev/kvm; VMs use software emulation"
    };
    Accelerator {
        usable: vec!["tcg".into()],
        note: note.to_string(),
    }
}

/// The host's TSC rate in kHz, measured once against the monotonic clock (the median of three
/// 10 ms windows); None where the TSC is not invariant (its rate then tells a guest nothing)
/// or not x86. Blocks for the measurement the first time.
pub fn host_tsc_khz() -> Option<u64> {
    *TSC_KHZ.get_or_init(measure_tsc_khz)
}

/// The rate if it has been measured already (the driver starts that at its creation): a VM
/// start never waits for it, and boots without the hint if it is not ready.
pub fn host_tsc_khz_if_measured() -> Option<u64> {
    TSC_KHZ.get().copied().flatten()
}

static TSC_KHZ: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    let invariant = ["constant_tsc", "nonstop_tsc"]
        .iter()
        .all(|flag| flags.split_whitespace().any(|f| f == *flag));
    if !invariant {
        return None;
    }
    // SAFETY: RDTSC has no memory effects; every x86_64 CPU has it.
    let read = || unsafe { core::arch::x86_64::_rdtsc() };
    let mut rates: Vec<u128> = (0..3)
        .map(|_| {
            let (start, start_tsc) = (std::time::Instant::now(), read());
            std::thread::sleep(std::time::Duration::from_millis(10));
            let (elapsed, ticks) = (start.elapsed(), read().wrapping_sub(start_tsc));
            u128::from(ticks) * 1_000_000 / elapsed.as_nanos().max(1)
        })
        .collect();
    rates.sort_unstable();
    let khz = rates[1];
    // A rate no CPU has means the measurement went wrong (a migration between sockets).
    (100_000..=10_000_000).contains(&khz).then_some(khz as u64)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> Option<u64> {
    None
}
