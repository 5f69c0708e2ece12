//! Stop always ends: after the grace period the instance is killed, whatever holds it — an
//! open exec session on a VM's agent, a guest that ignores the power button or SIGTERM —
//! and `rm -f` leaves no exec session's supervisor behind.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{stderr, temp_dir, Daemon};

/// Supervisor processes (the instance's and its exec sessions') of instance `id`.
fn supervisors_of(id: &str) -> Vec<String> {
    let marker = format!("/instances/{}/", &id[..12]);
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(" supervise ") && cmdline.contains(&marker) {
            found.push(cmdline);
        }
    }
    found
}

/// Exec sessions of instance `id` that have a supervisor running.
fn exec_sessions_of(id: &str) -> usize {
    supervisors_of(id).iter().filter(|c| c.contains("/execs/")).count()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `berth exec NAME ARGS...` attached, in the background.
fn background_exec(d: &Daemon, args: &[&str]) -> Child {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    d.command(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn reap_within(mut child: Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the background exec did not end once its instance was gone");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `stop -t 2` must return within the grace period plus this (SIGKILL, exit recorded; TCG
/// on a busy host).
const MARGIN: Duration = Duration::from_secs(8);

fn stop_within_grace(d: &Daemon, name: &str) {
    let began = Instant::now();
    let stopped = d.run(&["stop", "-t", "2", name]);
    let took = began.elapsed();
    eprintln!("stop -t 2 of {name} took {took:?}");
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    assert!(
        took < Duration::from_secs(2) + MARGIN,
        "stop -t 2 of {name} took {took:?}"
    );
    assert_eq!(d.inspect(name)["state"], "exited");
}

/// A 1 MiB raw disk whose boot sector halts with interrupts off: a guest that never
/// answers the ACPI power button.
fn deaf_boot_disk(dir: &Path) -> std::path::PathBuf {
    let mut code = vec![0xFA, 0xF4, 0xEB, 0xFD]; // cli; hlt; jmp to hlt
    code.resize(510, 0);
    code.extend([0x55, 0xAA]);
    code.resize(1 << 20, 0);
    let path = dir.join("deaf.raw");
    std::fs::write(&path, code).unwrap();
    path
}

#[test]
fn stop_of_a_vm_kills_after_the_grace_period_whatever_holds_it() {
    let d = Daemon::with_busybox();

    // An exec session holds the agent's exec port, through which a graceful stop would go.
    let id = d.ok(&[
        "run",
        "--vm",
        "-d",
        "--name",
        "v",
        "--network",
        "none",
        "busybox",
        "sleep",
        "1000",
    ]);
    let id = id.trim().to_string();
    let exec = background_exec(&d, &["v", "sleep", "1000"]);
    wait_until("the exec session", Duration::from_secs(30), || {
        exec_sessions_of(&id) == 1
    });
    stop_within_grace(&d, "v");
    assert_eq!(supervisors_of(&id), Vec::<String>::new());
    reap_within(exec, Duration::from_secs(10));

    // A command that ignores SIGTERM (what the agent passes on for a stop).
    d.ok(&[
        "run",
        "--vm",
        "-d",
        "--name",
        "stubborn",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; echo up; while :; do sleep 1; done",
    ]);
    // Only once the trap is set does the command ignore SIGTERM.
    wait_until("the trap", Duration::from_secs(30), || {
        d.ok(&["logs", "stubborn"]).contains("up")
    });
    stop_within_grace(&d, "stubborn");
    assert_eq!(
        d.inspect("stubborn")["exit_code"],
        137,
        "killed, not stopped gracefully"
    );

    // A firmware guest that ignores the power button.
    let dir = temp_dir("bt-deaf");
    d.ok(&[
        "image",
        "import",
        "--vm",
        "--tag",
        "deaf",
        deaf_boot_disk(&dir).to_str().unwrap(),
    ]);
    let deaf = d.ok(&["run", "--vm", "-d", "--name", "deaf", "--network", "none", "deaf"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.inspect("deaf")["state"], "running");
    stop_within_grace(&d, "deaf");
    assert_eq!(supervisors_of(deaf.trim()), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rm_force_ends_exec_sessions_of_containers_and_vms() {
    let d = Daemon::with_busybox();
    for (name, vm) in [("c", false), ("v", true)] {
        let mut run = vec!["run", "-d", "--name", name, "--network", "none"];
        if vm {
            run.push("--vm");
        }
        run.extend(["busybox", "sleep", "1000"]);
        let id = d.ok(&run).trim().to_string();
        let attached = background_exec(&d, &[name, "sleep", "1001"]);
        let mut expected = 1;
        if !vm {
            // A VM's agent serves one session at a time; a container takes several.
            d.ok(&["exec", "-d", name, "sleep", "1002"]);
            expected = 2;
        }
        wait_until("the exec sessions", Duration::from_secs(30), || {
            exec_sessions_of(&id) == expected
        });
        d.ok(&["rm", "-f", name]);
        assert_eq!(
            supervisors_of(&id),
            Vec::<String>::new(),
            "{name}: supervisors left after rm -f"
        );
        reap_within(attached, Duration::from_secs(10));
        assert!(!d.state.join("instances").join(&id[..12]).exists());
    }
}
