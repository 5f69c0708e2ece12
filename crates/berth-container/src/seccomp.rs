//! berth's default seccomp filter for containers, with the semantics of Docker's default
//! profile: an allow list (any other system call fails with EPERM), groups that only a
//! container holding the matching capability may call, argument filters on `clone`,
//! `socket` and `personality`, and `clone3` answered with ENOSYS so that libc falls back to
//! `clone`, whose flags the filter can read. Where berth refuses more than Docker the
//! constants say why. `--security-opt seccomp=unconfined` leaves the filter off.

use std::collections::BTreeSet;

use serde_json::{json, Value};

/// Allowed to every container (Docker's unconditional list, less `modify_ldt`: see
/// `ALLOWED_X86`). Names a kernel or this libseccomp does not know are skipped when the
/// filter is loaded, so they stay refused.
pub const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    // Linux AIO (io_setup and friends) stays, as in Docker; io_uring (io_uring_setup,
    // io_uring_enter, io_uring_register) is absent, as in Docker since 2023: it bypasses
    // this filter for the operations it performs and has been a steady source of kernel
    // exploits.
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    // ptrace and reading or writing another process's memory: Docker allows them on
    // kernels from 4.8 on, where ptrace can no longer be used to get around seccomp.
    // berth needs 5.3 already (pidfd_open), so the condition always holds.
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// x86 only. Docker also allows `modify_ldt` here; berth refuses it: the LDT is a
/// historically exploit-prone kernel interface (CVE-2015-5157, CVE-2017-17053) that only
/// 16-bit code, Wine and long-gone threading libraries use.
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[&str] = &["arch_prctl"];
#[cfg(target_arch = "aarch64")]
const ALLOWED_ARCH: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ALLOWED_ARCH: &[&str] = &[];

/// The ABIs a process may use: the native one and the 32-bit ones it can run, as Docker
/// lists them. A call from any other ABI kills the process.
#[cfg(target_arch = "x86_64")]
const ARCHITECTURES: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];
#[cfg(target_arch = "aarch64")]
const ARCHITECTURES: &[&str] = &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHITECTURES: &[&str] = &["SCMP_ARCH_NATIVE"];

/// System calls allowed only to a container whose capability set holds the capability
/// (the kernel would check it too; the filter also keeps the code behind them out of
/// reach). Docker's groups.
pub const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `clone` flags that create namespaces. Without CAP_SYS_ADMIN a container may clone only
/// without them: a fresh user namespace would give the child CAP_NET_ADMIN and friends over
/// new namespaces, and with them the kernel code (nf_tables, ...) behind those capabilities.
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// `personality` values allowed: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and
/// 0xffffffff (query). Flags such as ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC are refused.
const SAFE_PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// Socket families refused: AF_ALG (38, the kernel's crypto API) and AF_VSOCK (40, the
/// host-guest channel), as Docker does. AF_NFC (39) between them stays.
const AF_ALG: u64 = libc::AF_ALG as u64;
const AF_VSOCK: u64 = libc::AF_VSOCK as u64;

fn allow(names: impl IntoIterator<Item = impl Into<String>>) -> Value {
    json!({ "names": names.into_iter().map(Into::into).collect::<Vec<String>>(), "action": "SCMP_ACT_ALLOW" })
}

fn allow_if_arg(name: &str, index: u32, op: &str, value: u64, value_two: Option<u64>) -> Value {
    let mut arg = json!({ "index": index, "value": value, "op": op });
    if let Some(value_two) = value_two {
        arg["valueTwo"] = json!(value_two);
    }
    json!({ "names": [name], "action": "SCMP_ACT_ALLOW", "args": [arg] })
}

/// The `linux.seccomp` section of the runtime spec for a container holding `capabilities`
/// (names as in the spec, `CAP_...`).
pub fn default_filter(capabilities: &[&str]) -> Value {
    let holds = |capability: &str| capabilities.contains(&capability);
    let mut allowed: BTreeSet<&str> = ALLOWED.iter().chain(ALLOWED_ARCH).copied().collect();
    for (capability, names) in BY_CAPABILITY {
        if holds(capability) {
            allowed.extend(names.iter().copied());
        }
    }
    let mut rules = vec![allow(allowed)];
    rules.push(allow_if_arg("socket", 0, "SCMP_CMP_LT", AF_ALG, None));
    rules.push(allow_if_arg("socket", 0, "SCMP_CMP_EQ", AF_ALG + 1, None));
    rules.push(allow_if_arg("socket", 0, "SCMP_CMP_GT", AF_VSOCK, None));
    for personality in SAFE_PERSONALITIES {
        rules.push(allow_if_arg("personality", 0, "SCMP_CMP_EQ", *personality, None));
    }
    if !holds("CAP_SYS_ADMIN") {
        // Allowed when (flags & NAMESPACE_FLAGS) == 0. libcontainer 0.7 reads a masked
        // comparison as (arg & valueTwo) == value, the other way round from runc and crun,
        // so Docker's rule as written (mask in `value`) would allow every clone there. The
        // mask goes in valueTwo; the unit test `clone_filter_refuses_namespace_flags` pins
        // that reading.
        rules.push(allow_if_arg("clone", 0, "SCMP_CMP_MASKED_EQ", 0, Some(NAMESPACE_FLAGS)));
        // clone3 passes its flags in memory, out of the filter's sight: ENOSYS makes glibc
        // (and Go, and libcontainer itself) fall back to clone.
        rules.push(json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": ARCHITECTURES,
        "syscalls": rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DEFAULT_CAPABILITIES;

    /// Names of the allow list that Debian 12's libseccomp (2.5.4) cannot resolve: system
    /// calls from kernels 6.8 on. They are skipped when the filter loads, so they fail with
    /// EPERM (Docker's runc answers ENOSYS for calls newer than its libseccomp knows; glibc
    /// falls back on ENOSYS only). Update this list when libseccomp is upgraded.
    const UNKNOWN_TO_LIBSECCOMP: &[&str] = &[
        "getxattrat",
        "listmount",
        "listxattrat",
        "lsm_get_self_attr",
        "lsm_list_modules",
        "lsm_set_self_attr",
        "mseal",
        "removexattrat",
        "setxattrat",
        "statmount",
        "uretprobe",
    ];

    #[test]
    fn every_name_is_a_system_call_libseccomp_knows_or_a_listed_newer_one() {
        let every_name = ALLOWED
            .iter()
            .chain(ALLOWED_ARCH)
            .chain(BY_CAPABILITY.iter().flat_map(|(_, names)| names.iter()));
        let mut unknown: Vec<&str> = every_name
            .filter(|name| libseccomp::ScmpSyscall::from_name(name).is_err())
            .copied()
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        assert_eq!(unknown, UNKNOWN_TO_LIBSECCOMP);
    }

    #[test]
    fn capability_groups_follow_the_capability_set() {
        let names = |filter: &Value| -> Vec<String> {
            filter["syscalls"][0]["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect()
        };
        let default = default_filter(DEFAULT_CAPABILITIES);
        let allowed = names(&default);
        // Docker's default capabilities include CAP_SYS_CHROOT, not CAP_SYS_ADMIN.
        assert!(allowed.iter().any(|n| n == "chroot"));
        for refused in [
            "mount",
            "unshare",
            "setns",
            "bpf",
            "io_uring_setup",
            "modify_ldt",
            "mount_setattr",
        ] {
            assert!(!allowed.iter().any(|n| n == refused), "{refused} is allowed");
        }
        let rules = default["syscalls"].as_array().unwrap();
        assert!(rules
            .iter()
            .any(|r| r["names"][0] == "clone3" && r["errnoRet"] == libc::ENOSYS));
        let admin = default_filter(&["CAP_SYS_ADMIN"]);
        assert!(names(&admin).iter().any(|n| n == "unshare"));
        assert!(!admin["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["names"][0] == "clone3"));
    }

    /// What a filtered process sees, checked in a forked child that loads the filter through
    /// libcontainer, as a container started by an earlier berth does.
    #[test]
    fn clone_filter_refuses_namespace_flags() {
        let filter: libcontainer::oci_spec::runtime::LinuxSeccomp =
            serde_json::from_value(default_filter(DEFAULT_CAPABILITIES)).unwrap();
        assert_eq!(
            probe_in_child(|| libcontainer::seccomp::initialize_seccomp(&filter)
                .map(|_| ())
                .map_err(|e| e.to_string())),
            "",
            "probes that did not get the expected answer"
        );
    }

    /// The same probes with the program berth compiles once and loads in one system call,
    /// as a container does now: the same answers as libcontainer's own compilation.
    #[test]
    fn compiled_program_answers_as_libcontainer_does() {
        let filter: libcontainer::oci_spec::runtime::LinuxSeccomp =
            serde_json::from_value(default_filter(DEFAULT_CAPABILITIES)).unwrap();
        let program = crate::seccomp_program::compile(&filter).unwrap();
        assert_eq!(
            probe_in_child(|| crate::seccomp_program::load(&program).map_err(|e| e.to_string())),
            "",
            "probes that did not get the expected answer"
        );
    }

    /// Runs `load` then the probes in a forked child; the report of what went wrong.
    fn probe_in_child(load: impl FnOnce() -> Result<(), String>) -> String {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only loads the filter, makes system calls and exits; glibc's
        // fork keeps malloc usable in it.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                drop(read_end);
                let report = match load() {
                    Ok(()) => probe_report(),
                    Err(e) => format!("loading: {e}"),
                };
                let _ = nix::unistd::write(&write_end, report.as_bytes());
                // SAFETY: leaving the forked child without running the test harness's code.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(write_end);
                let mut report = String::new();
                std::io::Read::read_to_string(&mut std::fs::File::from(read_end), &mut report).unwrap();
                let _ = nix::sys::wait::waitpid(child, None);
                report
            }
        }
    }

    /// Runs each probe; returns the ones that did not answer as expected.
    fn probe_report() -> String {
        let errno = |result: libc::c_long| if result < 0 { nix::errno::Errno::last_raw() } else { 0 };
        // A process made with raw clone flags; the child leaves at once.
        let clone_with = |flags: libc::c_long| {
            // SAFETY: a fork-like clone (no new stack: the child continues on a copy of ours).
            let pid = unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) };
            if pid == 0 {
                // SAFETY: the cloned child exits immediately.
                unsafe { libc::_exit(0) }
            }
            let result = errno(pid);
            if pid > 0 {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            }
            result
        };
        let mut clone3_args = [0u64; 11];
        clone3_args[4] = libc::SIGCHLD as u64;
        let mut io_uring_params = [0u8; 120];
        let mut ldt = [0u8; 16];
        // SAFETY (all of the below): system calls with valid buffers or none; any that is
        // unexpectedly allowed does no harm in this throwaway child.
        let probes: Vec<(&str, i32, i32)> = unsafe {
            vec![
                ("clone without namespace flags", clone_with(0), 0),
                (
                    "clone CLONE_NEWUSER",
                    clone_with(libc::CLONE_NEWUSER as libc::c_long),
                    libc::EPERM,
                ),
                (
                    "clone CLONE_NEWNET",
                    clone_with(libc::CLONE_NEWNET as libc::c_long),
                    libc::EPERM,
                ),
                (
                    "clone3",
                    errno(libc::syscall(libc::SYS_clone3, clone3_args.as_mut_ptr(), 88usize)),
                    libc::ENOSYS,
                ),
                (
                    "unshare",
                    errno(libc::unshare(libc::CLONE_NEWUSER) as libc::c_long),
                    libc::EPERM,
                ),
                (
                    "io_uring_setup",
                    errno(libc::syscall(libc::SYS_io_uring_setup, 1, io_uring_params.as_mut_ptr())),
                    libc::EPERM,
                ),
                (
                    "personality query",
                    errno(libc::personality(0xffff_ffff) as libc::c_long),
                    0,
                ),
                ("personality PER_LINUX", errno(libc::personality(0) as libc::c_long), 0),
                (
                    "personality ADDR_NO_RANDOMIZE",
                    errno(libc::personality(0x0040000) as libc::c_long),
                    libc::EPERM,
                ),
                (
                    "modify_ldt",
                    errno(libc::syscall(libc::SYS_modify_ldt, 0, ldt.as_mut_ptr(), ldt.len())),
                    libc::EPERM,
                ),
                (
                    "mount_setattr",
                    errno(libc::syscall(libc::SYS_mount_setattr, -1, c"".as_ptr(), 0, 0, 0)),
                    libc::EPERM,
                ),
                (
                    "socket AF_VSOCK",
                    errno(libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) as libc::c_long),
                    libc::EPERM,
                ),
                (
                    "socket AF_ALG",
                    errno(libc::socket(libc::AF_ALG, libc::SOCK_SEQPACKET, 0) as libc::c_long),
                    libc::EPERM,
                ),
                (
                    "socket AF_UNIX",
                    errno(libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) as libc::c_long),
                    0,
                ),
                ("getpid", errno(libc::getpid() as libc::c_long), 0),
            ]
        };
        probes
            .into_iter()
            .filter(|(_, got, expected)| got != expected)
            .map(|(name, got, expected)| format!("{name}: errno {got}, expected {expected}\n"))
            .collect()
    }
}
