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

/// A counter on the console every 100 ms or so, dirtying memory (not with zeros: QEMU sends
/// zero pages as a flag) and the disk between ticks.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo tick $i; echo $i > /count; yes | dd of=/dev/null bs=2M count=1 iflag=fullblock 2>/dev/null; sleep 0.1; done";

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

    // A guest that dirties memory: auto-converge throttles it if it must.
    let moved = daemons[0].ok(&["migrate", "localvm", "--to", "n2", "--auto-converge", "--json"]);
    eprintln!("live migration with a mirrored disk: {moved}");
    let result: serde_json::Value = serde_json::from_str(&moved).expect("migrate --json");
    assert_eq!(result["to"], "n2", "{result}");
    assert_eq!(result["result"]["live"], true, "{result}");
    assert_eq!(result["result"]["auto_converge"], true, "{result}");
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
    // (A guest under emulation on a loaded host can take seconds for a few ticks: wait for
    // them rather than for a fixed time.)
    let last = *before.last().unwrap_or(&0);
    daemons[1].wait_for("localvm", Duration::from_secs(30), |_| {
        ticks(&daemons[1], "localvm").iter().any(|t| *t > last + 5)
    });
    let later = ticks(&daemons[1], "localvm");
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

#[test]
fn a_container_moves_with_its_volume_and_a_clash_leaves_it_where_it_was() {
    let (_hosts, _cluster, daemons) = three_hosts();
    import_busybox_everywhere(&daemons);
    daemons[0].ok(&["volume", "create", "--size", "64m", "data"]);
    daemons[0].ok(&[
        "run",
        "-d",
        "--name",
        "keeper",
        "--node",
        "n1",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo started >> /data/starts; echo layer > /in-layer; exec sleep 600",
    ]);
    daemons[0].wait_for("keeper", Duration::from_secs(20), |i| i["state"] == "running");
    daemons[0].ok(&[
        "exec",
        "keeper",
        "sh",
        "-c",
        "head -c 3000000 /dev/urandom > /data/blob && md5sum /data/blob > /data/blob.md5",
    ]);

    // n3 has a volume of that name: the move is refused there and the container runs on n1.
    daemons[2].ok(&["volume", "create", "--size", "16m", "data"]);
    let refused = daemons[0].fails(&["migrate", "keeper", "--to", "n3"]);
    assert!(refused.contains("already has a volume data"), "{refused}");
    let here = daemons[0].wait_for("keeper", Duration::from_secs(20), |i| i["state"] == "running");
    assert_eq!(here["node"], "n1", "{here}");
    assert!(daemons[0]
        .ok(&["exec", "keeper", "md5sum", "-c", "/data/blob.md5"])
        .contains("OK"));
    assert!(
        daemons[2].ok(&["volume", "inspect", "data"]).contains("16777216"),
        "n3's own volume stays"
    );

    // To n2: the volume goes along (and is gone from n1), the data with it.
    let moved = daemons[0].ok(&["migrate", "keeper", "--to", "n2", "--json"]);
    let result: serde_json::Value = serde_json::from_str(&moved).expect("migrate --json");
    assert_eq!(result["to"], "n2", "{result}");
    let there = daemons[1].wait_for("keeper", Duration::from_secs(30), |i| i["state"] == "running");
    assert_eq!(there["node"], "n2", "{there}");
    assert!(daemons[1]
        .ok(&["exec", "keeper", "md5sum", "-c", "/data/blob.md5"])
        .contains("OK"));
    assert_eq!(daemons[1].ok(&["exec", "keeper", "cat", "/in-layer"]).trim(), "layer");
    assert_eq!(
        daemons[1]
            .ok(&["exec", "keeper", "cat", "/data/starts"])
            .lines()
            .count(),
        3,
        "started on n1, again on n1, on n2"
    );
    assert!(daemons[1].ok(&["volume", "inspect", "data"]).contains("67108864"));
    assert!(daemons[0]
        .fails(&["volume", "inspect", "data"])
        .contains("no such volume"));
    daemons[1].ok(&["rm", "-f", "keeper"]);
}

#[test]
fn a_drain_empties_a_node_of_two_vms_and_its_containers_new_copies_first() {
    let (_hosts, _cluster, daemons) = three_hosts();
    import_busybox_everywhere(&daemons);
    let n1 = &daemons[0];
    for vm in ["vm-a", "vm-b"] {
        n1.ok(&[
            "run", "-d", "--name", vm, "--vm", "--memory", "192m", "--node", "n1", "busybox", "sh", "-c", COUNTER,
        ]);
    }
    // A plain container with a file in its writable layer, one with a local volume, one
    // binding a host path (which cannot move), and a stack's single replica.
    n1.ok(&[
        "run",
        "-d",
        "--name",
        "plain",
        "--node",
        "n1",
        "busybox",
        "sh",
        "-c",
        "echo kept > /kept; exec sleep 600",
    ]);
    n1.ok(&["volume", "create", "--size", "32m", "state"]);
    n1.ok(&[
        "run",
        "-d",
        "--name",
        "stateful",
        "--node",
        "n1",
        "-v",
        "state:/state",
        "busybox",
        "sh",
        "-c",
        "echo data > /state/data; exec sleep 600",
    ]);
    let host_dir = crate::common::temp_dir("bt-drain-bind");
    let bind = format!("{}:/host", host_dir.display());
    n1.ok(&[
        "run", "-d", "--name", "pinned", "--node", "n1", "-v", &bind, "busybox", "sleep", "600",
    ]);
    let compose = host_dir.join("compose.yaml");
    std::fs::write(
        &compose,
        "name: solo\nservices:\n  api:\n    image: busybox\n    command: sleep 600\n    healthcheck: {test: \"true\", interval: 300ms}\n    x-berth: {node: n1}\n",
    )
    .unwrap();
    n1.ok(&["apply", "-f", compose.to_str().unwrap()]);
    for name in ["vm-a", "vm-b", "plain", "stateful", "pinned", "solo-api-1"] {
        let up = n1.wait_for(name, Duration::from_secs(90), |i| i["state"] == "running");
        assert_eq!(up["node"], "n1", "{up}");
    }
    n1.wait_for("vm-a", Duration::from_secs(60), |_| !ticks(n1, "vm-a").is_empty());
    n1.wait_for("vm-b", Duration::from_secs(60), |_| !ticks(n1, "vm-b").is_empty());
    let qemus: Vec<u64> = ["vm-a", "vm-b"]
        .map(|vm| n1.inspect(vm)["pid"].as_u64().expect("pid"))
        .to_vec();

    // Two at a time; the bound container stays, and the drain says so.
    let output = daemons[1].run(&["node", "drain", "--parallel", "2", "n1"]);
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "the drain ended with pinned on n1: {said}");
    assert!(
        said.contains("pinned stays") && said.contains("binds host path"),
        "{said}"
    );
    let node: serde_json::Value = serde_json::from_str(&n1.ok(&["node", "inspect", "n1"])).unwrap();
    assert_eq!(node[0]["state"], "draining", "{node}");
    assert!(node[0]["drain"]["blocked"]["pinned"].is_string(), "{node}");

    // Everything else moved: the VMs live (their qemus ended, their counters went on), the
    // containers with their layer and volume, the replica start-first under its next name.
    for (vm, qemu) in ["vm-a", "vm-b"].iter().zip(&qemus) {
        let moved = daemons[1].inspect(vm);
        assert_ne!(moved["node"], "n1", "{moved}");
        assert_eq!(moved["rescheduled"]["migration"]["live"], true, "{moved}");
        assert!(!pid_alive(*qemu), "{vm}'s old qemu still runs");
        let counted = ticks(&daemons[1], vm);
        assert!(
            counted.windows(2).all(|w| w[1] == w[0] + 1),
            "{vm} restarted: {counted:?}"
        );
    }
    assert_eq!(daemons[1].ok(&["exec", "plain", "cat", "/kept"]).trim(), "kept");
    assert_eq!(
        daemons[1].ok(&["exec", "stateful", "cat", "/state/data"]).trim(),
        "data"
    );
    assert!(daemons[1]
        .fails(&["inspect", "solo-api-1"])
        .contains("no such instance"));
    let replica = daemons[1].inspect("solo-api-1-g2");
    assert_ne!(replica["node"], "n1", "{replica}");
    assert_eq!(replica["health"]["status"], "healthy", "{replica}");
    assert!(daemons[1].ok(&["stack", "ps", "solo"]).contains("solo-api-1-g2"));

    // Once the one that could not move is gone, the drain ends: n1 is cordoned.
    n1.ok(&["rm", "-f", "pinned"]);
    let done = daemons[1].ok(&["node", "drain", "n1"]);
    assert!(done.contains("n1 drained"), "{done}");
    let running_here: Vec<serde_json::Value> =
        serde_json::from_str::<Vec<serde_json::Value>>(&n1.ok(&["ps", "--json"]))
            .unwrap()
            .into_iter()
            .filter(|i| i["node"] == "n1")
            .collect();
    assert!(running_here.is_empty(), "{running_here:?}");
    n1.ok(&["node", "uncordon", "n1"]);
    for name in ["vm-a", "vm-b", "plain", "stateful", "solo-api-1-g2"] {
        daemons[1].ok(&["rm", "-f", name]);
    }
    let _ = std::fs::remove_dir_all(&host_dir);
}

#[test]
fn a_rebalance_moves_load_off_a_busy_node_and_not_back() {
    let (_hosts, _cluster, daemons) = three_hosts();
    import_busybox_everywhere(&daemons);
    let n1 = &daemons[0];
    // Four containers each using a tenth of a CPU on n1; the others idle.
    for i in 1..=4 {
        let name = format!("busy{i}");
        n1.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--node",
            "n1",
            "--cpus",
            "0.1",
            "busybox",
            "sh",
            "-c",
            "while :; do :; done",
        ]);
    }
    let node_usage = |name: &str| -> serde_json::Value {
        let nodes: serde_json::Value = serde_json::from_str(&n1.ok(&["node", "inspect", name])).unwrap();
        nodes[0]["usage"].clone()
    };
    let start = std::time::Instant::now();
    // Up to 0.4 CPUs; less when the test shares a loaded host, but far above the idle nodes.
    while node_usage("n1")["cpus"].as_f64().unwrap_or(0.0) < 0.2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "n1's use is not measured: {}",
            node_usage("n1")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(node_usage("n1")["heaviest"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .starts_with("busy"));

    // The plan: one of them to another node; a dry run moves nothing.
    let planned: serde_json::Value =
        serde_json::from_str(&n1.ok(&["cluster", "rebalance", "--dry-run", "--threshold", "5", "--json"])).unwrap();
    let moves = planned["moves"].as_array().expect("moves").clone();
    assert!(!moves.is_empty(), "{planned}");
    assert!(
        moves.iter().all(|m| m["from"] == "n1" && m["moved"].is_null()),
        "{planned}"
    );
    assert!(planned["mean_load_percent"].as_f64().unwrap_or(0.0) > 0.0, "{planned}");
    let everything_on_n1 = (1..=4).all(|i| n1.inspect(&format!("busy{i}"))["node"] == "n1");
    assert!(everything_on_n1);

    // For real, asked on another node: the moves happen and are recorded as a rebalance.
    let done: serde_json::Value =
        serde_json::from_str(&daemons[2].ok(&["cluster", "rebalance", "--threshold", "5", "--json"])).unwrap();
    let moved: Vec<String> = done["moves"]
        .as_array()
        .expect("moves")
        .iter()
        .filter(|m| m["moved"] == true)
        .map(|m| m["instance"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!moved.is_empty(), "{done}");
    for name in &moved {
        let now = n1.inspect(name);
        assert_ne!(now["node"], "n1", "{now}");
        assert_eq!(now["state"], "running", "{now}");
        assert!(
            now["spec"]["placement"]
                .as_str()
                .unwrap_or_default()
                .contains("rebalanced: node n1"),
            "{now}"
        );
    }
    // A second rebalance leaves the moved ones where they went (cool-down).
    let again: serde_json::Value =
        serde_json::from_str(&n1.ok(&["cluster", "rebalance", "--dry-run", "--threshold", "0", "--json"])).unwrap();
    for planned in again["moves"].as_array().expect("moves") {
        assert!(!moved.iter().any(|m| planned["instance"] == m.as_str()), "{again}");
    }
    // One host has nothing to rebalance.
    for i in 1..=4 {
        n1.ok(&["rm", "-f", &format!("busy{i}")]);
    }
}

const SHOP: &str = r#"
name: shop
services:
  db:
    image: busybox
    command: sh -c "echo ready > /data/ready; exec sleep 600"
    volumes: ["data:/data"]
    healthcheck: {test: test -f /data/ready, interval: 300ms, retries: 50}
  web:
    image: busybox
    command: httpd -f -p 8080
    depends_on:
      db: {condition: service_healthy}
    deploy:
      replicas: 3
      update_config: {parallelism: 1, order: start-first}
    healthcheck: {test: pidof httpd, interval: 300ms}
  vm:
    image: busybox
    command: sleep 600
    x-berth: {kind: vm}
    deploy: {resources: {limits: {memory: 192M}}}
volumes:
  data: {}
"#;

#[test]
fn a_compose_stack_spreads_over_the_cluster_and_rolls_an_update() {
    let (_hosts, _cluster, daemons) = three_hosts();
    import_busybox_everywhere(&daemons);
    for daemon in &daemons {
        daemon.ok(&["image", "tag", "busybox", "busybox:v2"]);
    }
    let dir = crate::common::temp_dir("bt-shop");
    let file = dir.join("compose.yaml");
    let path = file.to_str().unwrap().to_string();
    std::fs::write(&file, SHOP).unwrap();
    let n1 = &daemons[0];

    let applied = n1.ok(&["apply", "-f", &path]);
    for name in ["shop-db-1", "shop-web-1", "shop-web-2", "shop-web-3", "shop-vm-1"] {
        assert!(applied.contains(name), "{applied}");
        assert_eq!(n1.inspect(name)["state"], "running", "{name}");
    }
    assert_eq!(n1.inspect("shop-db-1")["health"]["status"], "healthy");
    assert_eq!(n1.inspect("shop-vm-1")["kind"], "vm");
    let web_nodes: std::collections::BTreeSet<String> = (1..=3)
        .map(|i| {
            n1.inspect(&format!("shop-web-{i}"))["node"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        web_nodes.len() >= 2,
        "the replicas are spread over the nodes: {web_nodes:?}"
    );
    // Any node lists the stack.
    assert!(daemons[2].ok(&["stack", "ls"]).contains("shop"));
    assert!(daemons[1].ok(&["diff", "-f", &path]).contains("up to date"));

    // A new web image: diff says what, apply rolls it replica by replica (start-first),
    // each new one healthy before the old goes; db and the VM are untouched.
    let db = n1.inspect("shop-db-1")["id"].clone();
    let vm = n1.inspect("shop-vm-1")["id"].clone();
    std::fs::write(
        &file,
        SHOP.replace("    command: httpd", "    image: busybox:v2\n    command: httpd")
            .replacen("  web:\n    image: busybox\n", "  web:\n", 1),
    )
    .unwrap();
    let diff = n1.ok(&["diff", "-f", &path]);
    assert_eq!(diff.matches("~ replace shop-web-").count(), 3, "{diff}");
    let rolled = n1.ok(&["apply", "-f", &path]);
    for i in 1..=3 {
        assert!(
            rolled.contains(&format!("~ shop-web-{i} -> shop-web-{i}-g2")),
            "{rolled}"
        );
        let new = n1.inspect(&format!("shop-web-{i}-g2"));
        assert_eq!(new["image"], "busybox:v2", "{new}");
        assert_eq!(new["health"]["status"], "healthy", "{new}");
    }
    assert_eq!(n1.inspect("shop-db-1")["id"], db);
    assert_eq!(n1.inspect("shop-vm-1")["id"], vm);
    assert!(n1.ok(&["diff", "-f", &path]).contains("up to date"));

    n1.ok(&["stack", "rm", "shop"]);
    assert!(n1.fails(&["stack", "ps", "shop"]).contains("no stack shop"));
    let _ = std::fs::remove_dir_all(&dir);
}
