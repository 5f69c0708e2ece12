//! berth's default seccomp filter for containers. Like Docker's default profile it returns
//! EPERM for system calls a container has no business making — kernel modules, kexec, keyrings,
//! mounting, namespace creation and entry, BPF, perf, clock and swap changes, reboot — but as
//! a short deny list on an allow-by-default filter rather than Docker's 300-line allow list:
//! what a program needs keeps working, and the list names exactly what is taken away.
//! `--security-opt seccomp=unconfined` leaves it off.

use serde_json::{json, Value};

/// System calls refused with EPERM (x86-64 names; ones the kernel lacks are skipped).
pub const DENIED_SYSCALLS: &[&str] = &[
    // Kernel code and the running kernel.
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "bpf",
    "perf_event_open",
    "lookup_dcookie",
    "_sysctl",
    "sysfs",
    "uselib",
    "ustat",
    "nfsservctl",
    // Keyrings are not namespaced.
    "add_key",
    "request_key",
    "keyctl",
    // Mounts and namespaces: the container's own stay as berth made them.
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "unshare",
    "setns",
    // Host-wide state.
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "iopl",
    "ioperm",
    // Other processes' memory, NUMA placement and file handles (Docker: CAP_SYS_PTRACE /
    // CAP_SYS_NICE / CAP_DAC_READ_SEARCH only).
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "mbind",
    "set_mempolicy",
    "move_pages",
    "name_to_handle_at",
    "open_by_handle_at",
    "userfaultfd",
];

/// The `linux.seccomp` section of the runtime spec.
pub fn default_filter() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{
            "names": DENIED_SYSCALLS,
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::EPERM,
        }],
    })
}
