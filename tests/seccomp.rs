//! The seccomp filter as a hostile workload meets it, in `run` and in `exec`: namespace
//! creation through clone/unshare, io_uring, unsafe personalities, modify_ldt and
//! mount_setattr are refused; clone3 answers ENOSYS; ordinary programs (pipelines, threads,
//! fork, linux32) keep working; `--security-opt seccomp=unconfined` lifts the filter.
//! The system calls are made by a small static C program built on the host
//! (tests/fixtures/syscall_probe.c) and copied into a busybox image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::{busybox_tar, temp_dir, Daemon};

/// Every probe of syscall-probe, in the order it runs them.
const PROBES: &[&str] = &[
    "clone",
    "clone-newuser",
    "clone-newnet",
    "clone3",
    "unshare-user",
    "fork",
    "thread",
    "io_uring_setup",
    "personality-query",
    "personality-linux32",
    "personality-addr-no-randomize",
    "personality-read-implies-exec",
    "modify_ldt",
    "mount_setattr",
    "socket-vsock",
    "socket-alg",
    "socket-inet",
];

/// What a container under berth's default filter gets from each probe.
const FILTERED: &[(&str, &str)] = &[
    ("clone", "ok"),
    ("clone-newuser", "EPERM"),
    ("clone-newnet", "EPERM"),
    ("clone3", "ENOSYS"),
    ("unshare-user", "EPERM"),
    ("fork", "ok"),
    ("thread", "ok"),
    ("io_uring_setup", "EPERM"),
    ("personality-query", "ok"),
    ("personality-linux32", "ok"),
    ("personality-addr-no-randomize", "EPERM"),
    ("personality-read-implies-exec", "EPERM"),
    ("modify_ldt", "EPERM"),
    ("mount_setattr", "EPERM"),
    ("socket-vsock", "EPERM"),
    ("socket-alg", "EPERM"),
    ("socket-inet", "ok"),
];

/// busybox plus /bin/syscall-probe, built once per test run.
fn probe_image_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = temp_dir("bt-probe");
        let source = dir.join("syscall_probe.c");
        std::fs::write(&source, include_str!("fixtures/syscall_probe.c")).unwrap();
        let binary = dir.join("syscall-probe");
        let built = Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&binary)
            .arg(&source)
            .arg("-lpthread")
            .status()
            .expect("gcc (build-essential) must be installed");
        assert!(built.success(), "building tests/fixtures/syscall_probe.c");
        let path = dir.join("probe.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let mut busybox = tar::Archive::new(std::fs::File::open(busybox_tar()).unwrap());
        for entry in busybox.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            builder.append(&header, &mut entry).unwrap();
        }
        builder.append_path_with_name(&binary, "bin/syscall-probe").unwrap();
        builder.finish().unwrap();
        path
    })
}

fn daemon_with_probe_image() -> Daemon {
    let d = Daemon::start();
    d.ok(&["image", "import", "--tag", "probe", probe_image_tar().to_str().unwrap()]);
    d
}

/// Runs every probe through `berth <verb...> syscall-probe ...`; returns probe → answer.
fn probe(d: &Daemon, verb: &[&str]) -> BTreeMap<String, String> {
    let mut args = verb.to_vec();
    args.push("syscall-probe");
    args.extend_from_slice(PROBES);
    d.ok(&args)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, answer)| (name.to_string(), answer.to_string()))
        .collect()
}

fn expected(table: &[(&str, &str)]) -> BTreeMap<String, String> {
    table.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The lines of /proc/self/status that say what confines a process.
fn confinement(d: &Daemon, verb: &[&str]) -> String {
    let mut args = verb.to_vec();
    args.extend_from_slice(&[
        "grep",
        "-E",
        "^(Seccomp|Seccomp_filters|NoNewPrivs|Cap(Prm|Eff|Bnd|Amb)):",
        "/proc/self/status",
    ]);
    d.ok(&args).replace('\t', "")
}

#[test]
fn the_default_filter_refuses_namespace_and_kernel_attack_surface_in_run_and_exec() {
    let d = daemon_with_probe_image();
    let run = ["run", "--rm", "probe"];
    assert_eq!(probe(&d, &run), expected(FILTERED), "berth run");
    d.ok(&["run", "-d", "--name", "box", "-w", "/tmp", "probe", "sleep", "600"]);
    let exec = ["exec", "box"];
    assert_eq!(probe(&d, &exec), expected(FILTERED), "berth exec");
    assert_eq!(
        probe(&d, &["exec", "-u", "nobody", "box"]),
        expected(FILTERED),
        "berth exec -u nobody"
    );

    // The same filter and the same capabilities in both: the capability an exec session
    // borrows to load the filter is gone before the user's program runs.
    let in_run = confinement(&d, &run);
    assert!(in_run.contains("Seccomp:2\nSeccomp_filters:1\n"), "{in_run}");
    assert!(in_run.contains("NoNewPrivs:0\n"), "{in_run}");
    assert_eq!(
        confinement(&d, &exec),
        in_run,
        "exec is confined exactly like the container"
    );
    // ... and otherwise runs as the container's processes do (Docker's exec): its working
    // directory and limits, a terminal with -t.
    let limits = "pwd; ulimit -n";
    let container_side = d.ok(&["run", "--rm", "-w", "/tmp", "probe", "sh", "-c", limits]);
    assert_eq!(d.ok(&["exec", "box", "sh", "-c", limits]), container_side);
    let terminal = d.ok(&[
        "exec",
        "-t",
        "box",
        "sh",
        "-c",
        "tty; echo TERM=$TERM; grep ^Seccomp: /proc/self/status",
    ]);
    assert_eq!(
        terminal.replace(['\r', '\t'], ""),
        "/dev/pts/0\nTERM=xterm\nSeccomp:2\n"
    );

    // Unshare through busybox, as an attacker would type it.
    let unshare = d.run(&["exec", "box", "unshare", "-U", "-r", "true"]);
    assert!(!unshare.status.success(), "unshare -U succeeded in exec");

    // Ordinary programs: pipelines, job control, threads (glibc falls back from clone3 to
    // clone), a 32-bit personality.
    let ordinary = "echo a b c | tr ' ' '\\n' | sort -r | head -n 1; (sleep 0.1 &) ; wait; linux32 uname -m; syscall-probe thread fork";
    for verb in [&run[..], &exec[..]] {
        let mut args = verb.to_vec();
        args.extend_from_slice(&["sh", "-c", ordinary]);
        assert_eq!(d.ok(&args), "c\ni686\nthread=ok\nfork=ok\n", "{}", verb[0]);
    }
    d.ok(&["rm", "-f", "box"]);
}

#[test]
fn seccomp_unconfined_lifts_the_filter_in_run_and_exec() {
    let d = daemon_with_probe_image();
    let run = ["run", "--rm", "--security-opt", "seccomp=unconfined", "probe"];
    d.ok(&[
        "run",
        "-d",
        "--name",
        "loose",
        "--security-opt",
        "seccomp=unconfined",
        "probe",
        "sleep",
        "600",
    ]);
    for verb in [&run[..], &["exec", "loose"][..]] {
        let status = confinement(&d, verb);
        assert!(status.contains("Seccomp:0\n"), "{}: {status}", verb[0]);
        let answers = probe(&d, verb);
        // What only the filter refused; the kernel itself allows these without privileges.
        for name in [
            "clone-newuser",
            "clone3",
            "unshare-user",
            "personality-addr-no-randomize",
            "modify_ldt",
        ] {
            assert_eq!(
                answers[name], "ok",
                "{}: {name} without the filter: {answers:?}",
                verb[0]
            );
        }
        // Still no CAP_SYS_ADMIN: the kernel refuses a new network namespace by itself.
        assert_eq!(answers["clone-newnet"], "EPERM", "{answers:?}");
        assert_eq!(answers["mount_setattr"], "EINVAL", "{answers:?}");
    }
    d.ok(&["rm", "-f", "loose"]);
}
