//! Seeing inside: isolation as the process sees it, `top`, `ps --tree`, `info`, `stats`.

use crate::common::Daemon;

#[test]
fn namespaces_isolate_the_process() {
    let d = Daemon::with_busybox();
    let output = d.ok(&[
        "run",
        "--rm",
        "--hostname",
        "boxy",
        "busybox",
        "sh",
        "-c",
        "echo pid=$$; hostname; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; ls /dev | tr '\\n' ' '",
    ]);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(lines[1], "boxy");
    // Its own network namespace: loopback and the veth end berth gave it, nothing of the host's.
    assert_eq!(&lines[2..4], ["lo", "eth0"], "{output}");
    for device in ["null", "zero", "urandom", "pts", "shm"] {
        assert!(lines[4].contains(device), "/dev lacks {device}: {}", lines[4]);
    }
    // Docker's default capabilities: no CAP_SYS_ADMIN, so mounting fails.
    let mount = d.run(&["run", "--rm", "busybox", "mount", "-t", "tmpfs", "tmpfs", "/mnt"]);
    assert!(!mount.status.success());
}

#[test]
fn top_and_ps_tree_show_host_processes() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "tree",
        "busybox",
        "sh",
        "-c",
        "sleep 300 & sleep 301; true",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let top = d.ok(&["top", "tree"]);
    assert!(top.starts_with("USER"), "{top}");
    assert!(top.contains("berth supervise"), "{top}");
    assert!(top.contains("\\_ sh -c sleep 300 & sleep 301; true"), "{top}");
    assert!(top.contains("\\_ sleep 300") && top.contains("\\_ sleep 301"), "{top}");
    let tree = d.ok(&["ps", "--tree"]);
    assert!(tree.contains("container tree"), "{tree}");
    assert!(tree.contains("\\_ sleep 301"), "{tree}");
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["top", "--json", "tree"])).unwrap();
    let pid = d.inspect("tree")["pid"].as_u64().unwrap();
    assert_eq!(json["processes"][0]["children"][0]["pid"].as_u64().unwrap(), pid);
}

#[test]
fn info_and_stats_report_the_host_and_usage() {
    let d = Daemon::with_busybox();
    let info: serde_json::Value = serde_json::from_str(&d.ok(&["info", "--json"])).unwrap();
    assert!(info["cgroup_version"].as_str().unwrap().starts_with('v'));
    assert!(info["cpus"].as_u64().unwrap() >= 1);
    assert!(info["memory_bytes"].as_u64().unwrap() > 0);
    assert!(!info["accelerators"].as_array().unwrap().is_empty());
    d.ok(&["run", "-d", "--name", "s", "--memory", "64m", "busybox", "sleep", "100"]);
    let table = d.ok(&["stats", "--no-stream", "s"]);
    assert!(table.contains("64MiB") && table.contains("s"), "{table}");
    let info: serde_json::Value = serde_json::from_str(&d.ok(&["info", "--json"])).unwrap();
    assert_eq!(info["instances"]["running"], 1);
    assert_eq!(info["allocated"]["memory_bytes"], 64 << 20);
}

#[test]
fn seccomp_filters_containers_unless_unconfined() {
    let d = Daemon::with_busybox();
    let script = "grep Seccomp: /proc/self/status | tr -d '\\t'; unshare -U true 2>/dev/null; echo unshare=$?";
    let filtered = d.ok(&["run", "--rm", "busybox", "sh", "-c", script]);
    assert_eq!(
        filtered, "Seccomp:2\nunshare=1\n",
        "berth's default filter refuses unshare"
    );
    let unconfined = d.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(unconfined.starts_with("Seccomp:0\n"), "{unconfined}");
    let bad = d.run(&["run", "--rm", "--security-opt", "apparmor=x", "busybox", "true"]);
    assert!(
        crate::common::stderr(&bad).contains("--security-opt apparmor=x"),
        "{}",
        crate::common::stderr(&bad)
    );
}
