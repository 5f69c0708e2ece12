//! A container's seccomp filter as a compiled BPF program, made once per distinct filter by
//! the daemon and loaded by the container's init (and each exec session) with one system
//! call.
//!
//! Why: libcontainer compiles the spec's `linux.seccomp` with libseccomp inside every
//! container's init, about 8 ms per start here for Docker's default profile (some 400 rules)
//! — a third of `berth run`'s whole latency. The filter depends only on the capability set, so
//! the daemon compiles each distinct one once, writes the program into the bundle
//! (`seccomp.bpf`) and leaves `linux.seccomp` out of the spec it hands to libcontainer.
//!
//! The program is loaded by berth's executor just before `execve`, after libcontainer has
//! set the process's user and capabilities. Without no_new_privs, installing a filter needs
//! CAP_SYS_ADMIN: a container that lacks it is lent it in the spec and drops it from every
//! set right after the filter is in (the annotation [`LENT_ANNOTATION`] says so), as exec
//! sessions into such containers always did. A failure to load or to drop fails the start.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;
use std::sync::{Arc, Mutex};

use libcontainer::oci_spec::runtime::{
    Arch, Capability as SpecCapability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, Process, Spec,
};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

/// The file in a bundle that holds the compiled program.
pub const PROGRAM_FILE: &str = "seccomp.bpf";
/// Set on a spec whose process was lent CAP_SYS_ADMIN only to install the filter.
pub const LENT_ANNOTATION: &str = "org.berth.seccomp.lent-cap-sys-admin";

/// Compiled programs by their filter's JSON, for the daemon's lifetime.
#[derive(Default)]
pub struct ProgramCache {
    programs: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl ProgramCache {
    /// The program for `filter`, compiled on first use.
    pub fn program(&self, filter: &LinuxSeccomp) -> Result<Arc<Vec<u8>>, String> {
        let key = serde_json::to_string(filter).map_err(|e| format!("encoding the seccomp filter: {e}"))?;
        if let Some(program) = self.programs.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(program.clone());
        }
        let began = std::time::Instant::now();
        let program = Arc::new(compile(filter)?);
        tracing::debug!(elapsed = ?began.elapsed(), bytes = program.len(), "seccomp filter compiled");
        self.programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, program.clone());
        Ok(program)
    }

    /// Moves `spec`'s filter into `bundle/seccomp.bpf` as a program and lends the process
    /// CAP_SYS_ADMIN to install it if it lacks it; removes a program of an earlier start when
    /// the spec has no filter.
    pub fn install(&self, spec: &mut Spec, bundle: &Path) -> Result<(), String> {
        let path = bundle.join(PROGRAM_FILE);
        let filter = spec.linux_mut().as_mut().and_then(|linux| {
            let filter = linux.seccomp().clone();
            linux.set_seccomp(None);
            filter
        });
        let Some(filter) = filter else {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("removing {}: {e}", path.display())),
                _ => Ok(()),
            };
        };
        let program = self.program(&filter)?;
        std::fs::write(&path, program.as_slice()).map_err(|e| format!("writing {}: {e}", path.display()))?;
        let Some(process) = spec.process_mut().as_mut() else {
            return Ok(());
        };
        let holds = process
            .capabilities()
            .as_ref()
            .and_then(|capabilities| capabilities.bounding().as_ref())
            .is_some_and(|set| set.contains(&SpecCapability::SysAdmin));
        if !holds {
            lend_sys_admin(process);
            let mut annotations = spec.annotations().clone().unwrap_or_default();
            annotations.insert(LENT_ANNOTATION.to_string(), "true".to_string());
            spec.set_annotations(Some(annotations));
        }
        Ok(())
    }
}

/// Adds CAP_SYS_ADMIN to `process`'s bounding, effective and permitted sets, for installing
/// the filter without no_new_privs; the executor drops it again before execve.
pub fn lend_sys_admin(process: &mut Process) {
    let mut capabilities = process.capabilities().clone().unwrap_or_default();
    let lend = |set: &Option<std::collections::HashSet<SpecCapability>>| {
        let mut set = set.clone().unwrap_or_default();
        set.insert(SpecCapability::SysAdmin);
        Some(set)
    };
    capabilities.set_bounding(lend(capabilities.bounding()));
    capabilities.set_effective(lend(capabilities.effective()));
    capabilities.set_permitted(lend(capabilities.permitted()));
    process.set_capabilities(Some(capabilities));
}

/// Whether `spec`'s process holds CAP_SYS_ADMIN only to install the filter.
pub fn lent_sys_admin(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|annotations| annotations.get(LENT_ANNOTATION))
        .is_some_and(|value| value == "true")
}

/// The BPF program libseccomp makes of `filter`, with libcontainer 0.7's reading of the OCI
/// fields (its `initialize_seccomp`, which loads instead of exporting): actions, masked
/// comparisons as (arg & valueTwo) == value, several comparisons of one argument as separate
/// rules, names this libseccomp does not know skipped, rules equal to the default dropped,
/// no_new_privs left alone.
pub fn compile(filter: &LinuxSeccomp) -> Result<Vec<u8>, String> {
    let failed = |what: &str, e: libseccomp::error::SeccompError| format!("seccomp filter: {what}: {e}");
    if filter.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err("seccomp filter: SCMP_ACT_NOTIFY cannot be the default action".into());
    }
    let default_action = action(filter.default_action(), filter.default_errno_ret())?;
    let mut context = ScmpFilterContext::new(default_action).map_err(|e| failed("creating", e))?;
    if filter.flags().as_ref().is_some_and(|flags| !flags.is_empty()) {
        return Err("seccomp filter: flags are not supported".into());
    }
    for arch in filter.architectures().iter().flatten() {
        context
            .add_arch(architecture(*arch)?)
            .map_err(|e| failed("adding an architecture", e))?;
    }
    context
        .set_ctl_nnp(false)
        .map_err(|e| failed("leaving no_new_privs", e))?;
    for rule in filter.syscalls().iter().flatten() {
        if rule.action() == LinuxSeccompAction::ScmpActNotify {
            return Err("seccomp filter: SCMP_ACT_NOTIFY is not supported".into());
        }
        let rule_action = action(rule.action(), rule.errno_ret())?;
        if rule_action == default_action {
            continue;
        }
        let comparisons: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|arg| ScmpArgCompare::new(arg.index() as u32, operator(arg.op(), arg.value_two()), arg.value()))
            .collect();
        let mut indexes: Vec<usize> = rule.args().iter().flatten().map(|arg| arg.index()).collect();
        indexes.sort_unstable();
        let repeated_index = indexes.windows(2).any(|pair| pair[0] == pair[1]);
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            if comparisons.is_empty() {
                context
                    .add_rule(rule_action, syscall)
                    .map_err(|e| failed(&format!("adding {name}"), e))?;
            } else if repeated_index {
                for comparison in &comparisons {
                    context
                        .add_rule_conditional(rule_action, syscall, std::slice::from_ref(comparison))
                        .map_err(|e| failed(&format!("adding {name}"), e))?;
                }
            } else {
                context
                    .add_rule_conditional(rule_action, syscall, &comparisons)
                    .map_err(|e| failed(&format!("adding {name}"), e))?;
            }
        }
    }
    // libseccomp 2.5 exports to a file descriptor only.
    let mut file = tempfile_in_memory()?;
    context.export_bpf(&file).map_err(|e| failed("exporting", e))?;
    file.rewind().map_err(|e| format!("seccomp filter: {e}"))?;
    let mut program = Vec::new();
    file.read_to_end(&mut program)
        .map_err(|e| format!("seccomp filter: reading the program: {e}"))?;
    if program.is_empty() || !program.len().is_multiple_of(8) {
        return Err(format!("seccomp filter: libseccomp exported {} bytes", program.len()));
    }
    Ok(program)
}

fn tempfile_in_memory() -> Result<std::fs::File, String> {
    let fd = nix::sys::memfd::memfd_create(c"berth-seccomp", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
        .map_err(|e| format!("seccomp filter: memfd: {e}"))?;
    Ok(std::fs::File::from(fd))
}

/// Installs `program` (from [`compile`]) on the calling thread, without no_new_privs: the
/// caller needs CAP_SYS_ADMIN. Async-signal-safe apart from the error's formatting, so it can
/// run in a freshly forked process.
pub fn load(program: &[u8]) -> std::io::Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const u8,
    }
    let instructions = program.len() / 8;
    if program.is_empty() || !program.len().is_multiple_of(8) || instructions > usize::from(u16::MAX) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a seccomp program of {} bytes", program.len()),
        ));
    }
    let fprog = SockFprog {
        len: instructions as libc::c_ushort,
        filter: program.as_ptr(),
    };
    // SAFETY: SECCOMP_SET_MODE_FILTER reads a sock_fprog we own, pointing at `program`, which
    // outlives the call; the kernel validates the instructions.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const SockFprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, String> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno).map_err(|_| format!("seccomp filter: trace value {errno} out of range"))?,
        ),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
    })
}

fn operator(op: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0)),
    }
}

fn architecture(arch: Arch) -> Result<ScmpArch, String> {
    Ok(match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        other => return Err(format!("seccomp filter: architecture {other:?} is not supported")),
    })
}
