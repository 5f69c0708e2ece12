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
