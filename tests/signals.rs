//! Programs berth starts begin as a shell would start them: no signal ignored, none blocked
//! — containers, exec sessions, a VM's qemu on the host and the commands in its guest. With
//! SIGPIPE ignored (the Rust runtime's default, inherited before), `yes | head` never ends.

use std::time::Duration;

use crate::common::Daemon;

/// SigIgn and SigBlk of the process that runs `grep`.
const SIGNAL_STATE: &str = "grep -E '^Sig(Ign|Blk):' /proc/self/status | tr -d '\\t'";
const CLEAN: &str = "SigBlk:0000000000000000\nSigIgn:0000000000000000\n";

/// `yes` must die of SIGPIPE once `head` has its 1000 bytes; KILL after 20 s says it did not.
const PIPELINE: &str = "timeout -s KILL 20 sh -c 'yes | head -c 1000 | wc -c'; echo status=$?";

fn signal_mask_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .map(|value| value.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn container_and_exec_processes_start_with_default_signal_state() {
    let d = Daemon::with_busybox();
    assert_eq!(
        d.ok(&["run", "--rm", "busybox", "sh", "-c", SIGNAL_STATE]),
        CLEAN,
        "berth run"
    );
    assert_eq!(
        d.ok(&["run", "--rm", "-t", "busybox", "sh", "-c", SIGNAL_STATE])
            .replace('\r', ""),
        CLEAN,
        "berth run -t"
    );
    assert_eq!(
        d.ok(&["run", "--rm", "busybox", "sh", "-c", PIPELINE]),
        "1000\nstatus=0\n"
    );

    d.ok(&["run", "-d", "--name", "sig", "busybox", "sleep", "600"]);
    assert_eq!(d.ok(&["exec", "sig", "sh", "-c", SIGNAL_STATE]), CLEAN, "berth exec");
    assert_eq!(
        d.ok(&["exec", "-u", "nobody", "sig", "sh", "-c", SIGNAL_STATE]),
        CLEAN,
        "berth exec -u"
    );
    assert_eq!(d.ok(&["exec", "sig", "sh", "-c", PIPELINE]), "1000\nstatus=0\n");
    // The container's init too, as seen from the host.
    let pid = d.inspect("sig")["pid"].as_u64().expect("pid") as u32;
    assert_eq!(signal_mask_field(pid, "SigIgn:"), "0000000000000000");
    assert_eq!(signal_mask_field(pid, "SigBlk:"), "0000000000000000");
    d.ok(&["rm", "-f", "sig"]);
}

#[test]
fn a_vms_qemu_and_its_guest_commands_start_with_default_signal_state() {
    let d = Daemon::with_busybox();
    d.ok(&["run", "--vm", "-d", "--name", "vsig", "busybox", "sleep", "600"]);
    let record = d.wait_for("vsig", Duration::from_secs(120), |r| r["state"] == "running");
    let qemu = record["pid"].as_u64().expect("qemu pid") as u32;
    // qemu ignores SIGPIPE itself (and blocks a few signals for its own threads); nothing
    // else may come from berth — before, glibc's posix_spawn left signals 32 and 33 ignored.
    assert_eq!(
        signal_mask_field(qemu, "SigIgn:"),
        "0000000000001000",
        "qemu (pid {qemu})"
    );
    // In the guest, through berth's agent: the main command and an exec'd one.
    assert_eq!(
        d.ok(&["exec", "vsig", "sh", "-c", SIGNAL_STATE]),
        CLEAN,
        "berth exec in a VM"
    );
    assert_eq!(d.ok(&["exec", "vsig", "sh", "-c", PIPELINE]), "1000\nstatus=0\n");
    assert_eq!(
        d.ok(&[
            "exec",
            "vsig",
            "sh",
            "-c",
            "grep -E '^Sig(Ign|Blk):' /proc/$(pidof sleep)/status | tr -d '\\t'"
        ]),
        CLEAN,
        "the VM's main command"
    );
    d.ok(&["rm", "-f", "vsig"]);
}
