//! Limits that hold: CPU quota, memory with OOM reporting, pids, defaults, live update.

use std::time::Duration;

use crate::common::{cgroup_file, stderr, stdout, Daemon};

#[test]
fn memory_limit_kills_and_reports_oom() {
    let d = Daemon::with_busybox();
    // A shell variable of 64 MiB in a 32 MiB container.
    let output = d.run(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "32m",
        "busybox",
        "sh",
        "-c",
        "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}",
    ]);
    assert_eq!(
        output.status.code(),
        Some(137),
        "stdout: {} stderr: {}",
        stdout(&output),
        stderr(&output)
    );
    let record = d.inspect("hog");
    assert_eq!(record["state"], "exited");
    assert_eq!(record["exit_code"], 137);
    assert_eq!(record["oom_killed"], true);
    assert_eq!(record["limits"]["memory_bytes"], 32 << 20);
    assert!(d.ok(&["ps", "-a"]).contains("OOMKilled"));
}

#[test]
fn pids_limit_stops_fork_bombs() {
    let d = Daemon::with_busybox();
    let id = d.ok(&["run", "-d", "--pids-limit", "8", "busybox", "sleep", "300"]);
    let id = id.trim();
    let bomb = d.run(&["exec", id, "sh", "-c", "for i in $(seq 1 20); do sleep 30 & done"]);
    assert!(stderr(&bomb).contains("can't fork"), "{}", stderr(&bomb));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cgroup_file(id, "pids", "pids.max").unwrap(), "8");
    let current: u64 = cgroup_file(id, "pids", "pids.current").unwrap().parse().unwrap();
    assert!(current <= 8, "{current} processes under a pids limit of 8");
    let stats: serde_json::Value = serde_json::from_str(&d.ok(&["stats", "--json", id])).unwrap();
    assert_eq!(stats[0]["pids_limit"], 8);
    assert!(stats[0]["pids_current"].as_u64().unwrap() <= 8);
    d.ok(&["rm", "-f", id]);
}

#[test]
fn cpu_quota_is_written_and_holds() {
    let d = Daemon::with_busybox();
    let id = d.ok(&[
        "run",
        "-d",
        "--cpus",
        "0.5",
        "busybox",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    let id = id.trim();
    assert_eq!(
        cgroup_file(id, "cpu", "cpu.cfs_quota_us")
            .or_else(|| cgroup_file(id, "", "cpu.max"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap(),
        "50000"
    );
    // Over two seconds a busy loop gets about half a CPU, not a whole one.
    let sample = |d: &Daemon| -> (f64, f64) {
        let stats: serde_json::Value = serde_json::from_str(&d.ok(&["stats", "--json", id])).unwrap();
        (
            stats[0]["cpu_usage_ns"].as_f64().unwrap(),
            stats[0]["sampled_at_ms"].as_f64().unwrap(),
        )
    };
    std::thread::sleep(Duration::from_millis(500));
    let (cpu0, t0) = sample(&d);
    std::thread::sleep(Duration::from_secs(2));
    let (cpu1, t1) = sample(&d);
    let cores = (cpu1 - cpu0) / ((t1 - t0) * 1e6);
    assert!(
        cores > 0.3 && cores < 0.65,
        "busy loop used {cores:.2} CPUs under a 0.5 quota"
    );
    d.ok(&["rm", "-f", id]);
}

#[test]
fn defaults_apply_where_no_limit_is_given_and_unlimited_lifts_them() {
    let d = Daemon::with_busybox();
    d.ok(&["create", "--name", "dflt", "busybox", "true"]);
    let record = d.inspect("dflt");
    // The test daemon's config.toml: cpus 1, memory 256m, pids 512.
    assert_eq!(record["limits"]["cpus"], 1.0);
    assert_eq!(record["limits"]["memory_bytes"], 256 << 20);
    assert_eq!(record["limits"]["pids"], 512);
    assert_eq!(record["default_limits"], serde_json::json!(["cpus", "memory", "pids"]));

    d.ok(&[
        "create",
        "--name",
        "free",
        "--memory",
        "unlimited",
        "--cpus",
        "0.25",
        "busybox",
        "true",
    ]);
    let record = d.inspect("free");
    assert!(record["limits"]["memory_bytes"].is_null());
    assert_eq!(record["limits"]["cpus"], 0.25);
    assert_eq!(record["default_limits"], serde_json::json!(["pids"]));
    let info = d.ok(&["info"]);
    assert!(
        info.contains("Default limits:  cpus 1, memory 256MiB, pids 512"),
        "{info}"
    );
}

#[test]
fn update_changes_limits_live() {
    let d = Daemon::with_busybox();
    let id = d.ok(&[
        "run",
        "-d",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        "busybox",
        "sleep",
        "100",
    ]);
    let id = id.trim();
    assert_eq!(
        cgroup_file(id, "memory", "memory.limit_in_bytes")
            .or_else(|| cgroup_file(id, "", "memory.max"))
            .unwrap(),
        (64u64 << 20).to_string()
    );
    d.ok(&["update", "--memory", "128m", "--pids-limit", "99", "--cpus", "1.5", id]);
    assert_eq!(
        cgroup_file(id, "memory", "memory.limit_in_bytes")
            .or_else(|| cgroup_file(id, "", "memory.max"))
            .unwrap(),
        (128u64 << 20).to_string()
    );
    assert_eq!(cgroup_file(id, "pids", "pids.max").unwrap(), "99");
    let record = d.inspect(id);
    assert_eq!(record["limits"]["memory_bytes"], 128 << 20);
    assert_eq!(record["limits"]["cpus"], 1.5);
    let refused = d.run(&["update", "--cpus", "512", id]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("cpus"), "{}", stderr(&refused));
    assert_eq!(
        d.inspect(id)["limits"]["cpus"],
        1.5,
        "a refused update must change nothing"
    );
}
