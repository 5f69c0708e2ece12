//! Restart safety: `kill -9` of the daemon leaves instances running; a new daemon finds
//! them, their logs continue, and exits that happened meanwhile are known.

use std::time::Duration;

use crate::common::Daemon;

#[test]
fn instances_survive_a_daemon_crash() {
    let mut d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "long",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.2; done",
    ]);
    d.ok(&["run", "-d", "--name", "short", "busybox", "sh", "-c", "sleep 1; exit 7"]);
    let pid_before = d.inspect("long")["pid"].as_u64().unwrap();

    d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    d.restart_only();

    let long = d.inspect("long");
    assert_eq!(long["state"], "running");
    assert_eq!(long["pid"].as_u64().unwrap(), pid_before);
    assert!(std::path::Path::new(&format!("/proc/{pid_before}")).exists());
    let short = d.inspect("short");
    assert_eq!(short["state"], "exited", "{short}");
    assert_eq!(short["exit_code"], 7);

    // Logs kept flowing while the daemon was away, and still do.
    let before = d.ok(&["logs", "long"]).lines().count();
    assert!(before >= 5, "only {before} lines logged");
    std::thread::sleep(Duration::from_millis(600));
    assert!(d.ok(&["logs", "long"]).lines().count() > before);

    // The re-attached instance still reports its exit to the new daemon.
    d.ok(&["stop", "-t", "1", "long"]);
    assert_eq!(d.inspect("long")["state"], "exited");

    // A running instance keeps running across a crash while another starts meanwhile.
    d.ok(&["start", "long"]);
    d.crash_and_restart();
    assert_eq!(d.inspect("long")["state"], "running");
    assert!(d.ok(&["ps", "--tree"]).contains("long"));
}
