//! Health checks (`--health-cmd`, as Docker's): the node runs the check in the instance
//! every interval, `ps` and `inspect` show the result, a check that runs too long is killed
//! and fails, restarts start the checks over, VMs are checked through their agent, and bad
//! settings are refused naming the flag.

use std::time::Duration;

use crate::common::Daemon;

#[test]
fn health_checks_follow_the_instance_and_kill_checks_that_hang() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "checked",
        "--health-cmd",
        "cat /tmp/ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "600",
    ]);
    let health = |name: &str| d.inspect(name)["health"].clone();
    let seen = d.wait_for("checked", Duration::from_secs(20), |i| {
        i["health"]["status"] == "unhealthy"
    });
    assert_eq!(seen["health"]["status"], "unhealthy", "{seen}");
    assert!(d.ok(&["ps"]).contains("(unhealthy)"));
    let last = &seen["health"]["log"].as_array().expect("log")[0];
    assert_ne!(last["exit_code"], 0, "{seen}");
    assert!(
        last["output"].as_str().unwrap_or_default().contains("No such file"),
        "{seen}"
    );

    d.ok(&["exec", "checked", "sh", "-c", "echo fine > /tmp/ok"]);
    let seen = d.wait_for("checked", Duration::from_secs(20), |i| {
        i["health"]["status"] == "healthy"
    });
    assert_eq!(seen["health"]["failing_streak"], 0, "{seen}");
    let log = seen["health"]["log"].as_array().expect("log").clone();
    assert!(log.len() <= 5, "{seen}");
    assert_eq!(log.last().map(|p| p["output"].clone()), Some("fine\n".into()), "{seen}");
    assert!(d.ok(&["ps"]).contains("(healthy)"));

    // A restart is a new run: its checks start over.
    d.ok(&["restart", "-t", "0", "checked"]);
    let after = health("checked");
    assert!(
        after.is_null() || after["status"] == "starting" || after["status"] == "unhealthy",
        "{after}"
    );

    // A check that runs past its timeout fails and its process is killed.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "hangs",
        "--health-cmd",
        "sleep 31337",
        "--health-timeout",
        "300ms",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "600",
    ]);
    let seen = d.wait_for("hangs", Duration::from_secs(20), |i| {
        i["health"]["status"] == "unhealthy"
    });
    let output = seen["health"]["log"][0]["output"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(output.contains("longer than its timeout"), "{seen}");
    std::thread::sleep(Duration::from_millis(500));
    let top = d.ok(&["top", "hangs"]);
    let hung = top.lines().filter(|l| l.contains("sleep 31337")).count();
    assert!(hung <= 1, "timed-out checks were not killed:\n{top}");

    // Bad settings name the flag and create nothing.
    let refused = d.fails(&[
        "run",
        "-d",
        "--name",
        "bad",
        "--health-cmd",
        "true",
        "--health-interval",
        "5ms",
        "busybox",
        "true",
    ]);
    assert!(refused.contains("--health-interval"), "{refused}");
    let refused = d.fails(&["run", "-d", "--health-interval", "1s", "busybox", "true"]);
    assert!(refused.contains("--health-cmd"), "{refused}");
    assert!(d.fails(&["inspect", "bad"]).contains("no such instance"));
    d.ok(&["rm", "-f", "checked", "hangs"]);
}

#[test]
fn a_vm_is_checked_through_its_agent() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--vm",
        "--name",
        "vmcheck",
        "--memory",
        "256m",
        "--health-cmd",
        "test -f /etc/passwd",
        "--health-interval",
        "300ms",
        "busybox",
        "sleep",
        "600",
    ]);
    let seen = d.wait_for("vmcheck", Duration::from_secs(120), |i| {
        i["health"]["status"] == "healthy"
    });
    assert_eq!(seen["health"]["status"], "healthy", "{seen}");
    d.ok(&["rm", "-f", "vmcheck"]);
}
