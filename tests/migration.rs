//! Moving instances between the nodes of a three-node test cluster (network namespaces, a
//! real 3-member etcd): a VM whose disk is its node's own migrates live by mirroring it
//! (NBD, blockdev-mirror) while the guest runs on.

use std::time::Duration;

use crate::cluster::{import_busybox_everywhere, pid_alive, three_hosts};
use crate::common::Daemon;

/// The console counter of `name`: `tick N` lines, as numbers.
fn ticks(daemon: &Daemon, name: &str) -> Vec<u64> {
    daemon
        .ok(&["logs", name])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tick ")?.parse().ok())
        .collect()
}

/// A counter on the console every 100 ms, dirtying memory and the disk between ticks.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo tick $i; echo $i > /count; sleep 0.1; done";

#[test]
fn a_vm_with_a_local_disk_migrates_live_with_its_disk_mirrored() {
    let (_hosts, _cluster, daemons) = three_hosts();
    import_busybox_everywhere(&daemons);
    daemons[0].ok(&[
        "run", "-d", "--name", "localvm", "--vm", "--memory", "256m", "--node", "n1", "busybox", "sh", "-c", COUNTER,
    ]);
    let vm = daemons[0].wait_for("localvm", Duration::from_secs(60), |v| {
        v["state"] == "running" && !ticks(&daemons[0], "localvm").is_empty()
    });
    let source_disk = vm["vm"]["disks"][0]["path"].as_str().unwrap_or_default().to_string();
    assert!(source_disk.starts_with('/'), "a local disk: {vm}");
    // Data on the local disk, written before the move.
    daemons[0].ok(&[
        "exec",
        "localvm",
        "sh",
        "-c",
        "head -c 8000000 /dev/urandom > /blob && md5sum /blob > /blob.md5 && sync",
    ]);
    let before = ticks(&daemons[0], "localvm");

    let moved = daemons[0].ok(&["migrate", "localvm", "--to", "n2", "--json"]);
    eprintln!("live migration with a mirrored disk: {moved}");
    let result: serde_json::Value = serde_json::from_str(&moved).expect("migrate --json");
    assert_eq!(result["to"], "n2", "{result}");
    assert_eq!(result["result"]["live"], true, "{result}");
    assert!(
        result["result"]["disk_bytes"].as_u64().unwrap_or(0) > 8_000_000,
        "{result}"
    );
    let after = daemons[1].inspect("localvm");
    assert_eq!(
        (after["node"].as_str(), after["state"].as_str()),
        (Some("n2"), Some("running")),
        "{after}"
    );
    let disk = &after["vm"]["disks"][0];
    assert_ne!(disk["path"], source_disk.as_str(), "{after}");
    assert!(disk["backing"].is_null(), "the copy stands alone: {after}");
    assert!(
        !pid_alive(vm["pid"].as_u64().expect("pid")),
        "the source's qemu still runs"
    );
    assert!(!std::path::Path::new(&source_disk).exists(), "the source's disk stays");

    // The guest went on: the counter did not restart, and what was on the disk is there.
    std::thread::sleep(Duration::from_secs(2));
    let later = ticks(&daemons[1], "localvm");
    let last = *before.last().unwrap_or(&0);
    assert!(
        later.iter().any(|t| *t > last + 5) && later.windows(2).all(|w| w[1] == w[0] + 1),
        "the counter restarted: before ..{last}, after {:?}",
        &later[later.len().saturating_sub(5)..]
    );
    let check = daemons[1].ok(&["exec", "localvm", "md5sum", "-c", "/blob.md5"]);
    assert!(check.contains("OK"), "{check}");
    let count: u64 = daemons[1]
        .ok(&["exec", "localvm", "cat", "/count"])
        .trim()
        .parse()
        .expect("count");
    assert!(
        count > last,
        "the disk's last writes before the move are lost: {count} <= {last}"
    );

    // And it moves on again, back to n1.
    daemons[1].ok(&["migrate", "localvm", "--to", "n1"]);
    let back = daemons[0].inspect("localvm");
    assert_eq!(back["node"], "n1", "{back}");
    let check = daemons[0].ok(&["exec", "localvm", "md5sum", "-c", "/blob.md5"]);
    assert!(check.contains("OK"), "{check}");
    daemons[0].ok(&["rm", "-f", "localvm"]);
}
