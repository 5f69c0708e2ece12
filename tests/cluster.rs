//! Cluster membership as an operator meets it: three berth nodes (each its own state
//! directory, socket, bridge and chains) join a real 3-member etcd with `--cluster`; every
//! node's API lists every node and every instance; cordon, uncordon and drain hold across
//! nodes; a name is one node's; a node killed with -9 is `down` once its lease runs out and
//! `ready` again when it comes back; an instance is acted on only by its own node.

use std::time::{Duration, Instant};

use crate::common::etcd::{self, EtcdCluster};
use crate::common::{busybox_tar, temp_dir, Daemon, BERTH};

fn node(cluster: &EtcdCluster, name: &str, labels: &str) -> Daemon {
    Daemon::start_with_args(
        &["--cluster", &cluster.url(), "--node-name", name, "--labels", labels],
        "",
    )
}

fn nodes(daemon: &Daemon) -> Vec<serde_json::Value> {
    serde_json::from_str(&daemon.ok(&["node", "ls", "--json"])).expect("node ls JSON")
}

fn state_of(daemon: &Daemon, name: &str) -> String {
    nodes(daemon)
        .iter()
        .find(|n| n["name"] == name)
        .and_then(|n| n["state"].as_str())
        .unwrap_or("absent")
        .to_string()
}

/// Polls until node `name` is in `state` as `daemon` sees it; returns how long it took.
fn wait_for_state(daemon: &Daemon, name: &str, state: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = state_of(daemon, name);
        if now == state {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "node {name} is {now}, not {state}, after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn nodes_join_see_each_other_and_a_dead_node_goes_down() {
    let cluster = etcd::start(3);
    let n1 = node(&cluster, "n1", "zone=a");
    let n2 = node(&cluster, "n2", "zone=b,disk=ssd");
    let mut n3 = node(&cluster, "n3", "zone=b");

    // Every node sees all three, ready, with what they published.
    for daemon in [&n1, &n2, &n3] {
        let listed = nodes(daemon);
        let names: Vec<&str> = listed.iter().filter_map(|n| n["name"].as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3"], "{listed:?}");
        assert!(listed.iter().all(|n| n["state"] == "ready"), "{listed:?}");
        assert_eq!(listed.iter().filter(|n| n["this_node"] == true).count(), 1);
    }
    let n2_seen = &nodes(&n1)[1];
    assert_eq!(n2_seen["labels"]["disk"], "ssd");
    assert!(
        n2_seen["fingerprint"]["kinds"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "container")),
        "{n2_seen}"
    );
    assert!(n2_seen["allocated"]["capacity_cpus"].as_f64().unwrap_or(0.0) > 0.0);
    let table = n1.ok(&["node", "ls"]);
    assert!(
        table.contains("NODE") && table.contains("n1 *") && table.contains("disk=ssd,zone=b"),
        "{table}"
    );
    let info = n1.ok(&["info"]);
    assert!(info.contains("3 of 3 nodes ready"), "{info}");
    let info: serde_json::Value = serde_json::from_str(&n1.ok(&["info", "--json"])).unwrap();
    assert_eq!(
        info["cluster"]["etcd_members"].as_array().map(Vec::len),
        Some(3),
        "{info}"
    );

    // Membership lives in etcd: a member record per node, a presence held by its lease.
    let keys = etcd::keys(&cluster, "/berth/v1/nodes/");
    for name in ["n1", "n2", "n3"] {
        assert!(keys.contains(&format!("/berth/v1/nodes/{name}/member")), "{keys:?}");
        assert!(keys.contains(&format!("/berth/v1/nodes/{name}/presence")), "{keys:?}");
    }
    // Images stay on the node that has them (in its own state directory).
    n2.ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);
    assert!(etcd::keys(&cluster, "/berth/v1/images/").is_empty());

    // An instance runs on the node that created it; every node lists it with its node.
    n2.ok(&["run", "-d", "--name", "web", "busybox", "sleep", "600"]);
    let web = n1.inspect("web");
    assert_eq!(
        (web["node"].as_str(), web["state"].as_str()),
        (Some("n2"), Some("running"))
    );
    let listed = n3.ok(&["ps"]);
    assert!(
        listed.contains("NODE") && listed.lines().any(|l| l.contains("web") && l.ends_with("n2")),
        "{listed}"
    );
    // Another node does not act on it: it says where it is.
    let refused = n1.fails(&["stop", "web"]);
    assert!(
        refused.contains("runs on node n2") && refused.contains("BERTH_HOST"),
        "{refused}"
    );
    assert_eq!(refused.trim().lines().count(), 1, "{refused}");
    assert_eq!(n2.inspect("web")["state"], "running");
    // Names are the cluster's.
    let refused = n2.fails(&["run", "-d", "--name", "web", "busybox", "true"]);
    assert!(refused.contains("'web' is already in use"), "{refused}");
    // n2 publishes what it now runs.
    let start = Instant::now();
    while nodes(&n1)[1]["instances"] != 1 {
        assert!(start.elapsed() < Duration::from_secs(15), "{:?}", nodes(&n1)[1]);
        std::thread::sleep(Duration::from_millis(250));
    }

    // Cordon, drain and uncordon, from any node, seen by every node.
    assert_eq!(n1.ok(&["node", "cordon", "n3"]).trim(), "n3 cordoned");
    assert_eq!(state_of(&n2, "n3"), "cordoned");
    assert_eq!(n2.ok(&["node", "drain", "n3"]).trim(), "n3 draining");
    assert_eq!(state_of(&n3, "n3"), "draining");
    assert_eq!(n3.ok(&["node", "uncordon", "n3"]).trim(), "n3 ready");
    let refused = n1.fails(&["node", "cordon", "n9"]);
    assert!(refused.contains("no such node: n9"), "{refused}");
    let inspected: serde_json::Value = serde_json::from_str(&n1.ok(&["node", "inspect", "n2"])).unwrap();
    assert_eq!(inspected[0]["labels"]["zone"], "b");

    // A second state directory cannot take a name the cluster has.
    let state = temp_dir("cluster-dup");
    let output = std::process::Command::new(BERTH)
        .args(["daemon", "--state-dir", state.to_str().unwrap()])
        .args(["--socket", state.join("berth.sock").to_str().unwrap()])
        .args(["--cluster", &cluster.url(), "--node-name", "n1"])
        .output()
        .expect("run berth daemon");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--node-name n1") && stderr.contains("alive"),
        "{stderr}"
    );

    // kill -9 of n3's daemon: n3 is down once its lease runs out (TTL 10 s), and its
    // presence is gone from etcd; its member record and cordon state stay.
    n3.ok(&["node", "cordon", "n3"]);
    n3.kill9();
    let took = wait_for_state(&n1, "n3", "down", Duration::from_secs(20));
    eprintln!("n3 seen down {took:?} after kill -9");
    assert!(
        took >= Duration::from_secs(5),
        "down after {took:?}: before the lease could expire"
    );
    assert!(!etcd::keys(&cluster, "/berth/v1/nodes/").contains(&"/berth/v1/nodes/n3/presence".to_string()));
    assert_eq!(state_of(&n2, "n1"), "ready");
    // It comes back, cordoned as it was left.
    n3.restart_only();
    wait_for_state(&n1, "n3", "cordoned", Duration::from_secs(10));
    n1.ok(&["node", "uncordon", "n3"]);
    assert_eq!(state_of(&n2, "n3"), "ready");
    n2.ok(&["rm", "-f", "web"]);
}

#[test]
fn a_single_host_is_one_node_that_cannot_be_cordoned() {
    let daemon = Daemon::start();
    let listed = nodes(&daemon);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0]["state"].as_str(), listed[0]["this_node"].as_bool()),
        (Some("ready"), Some(true))
    );
    let name = listed[0]["name"].as_str().unwrap().to_string();
    let refused = daemon.fails(&["node", "cordon", &name]);
    assert!(
        refused.contains("single host") && refused.contains("--cluster"),
        "{refused}"
    );
    let refused = daemon.fails(&["node", "inspect", "elsewhere"]);
    assert!(refused.contains("no such node"), "{refused}");
    // Cluster options need --cluster; a bad name or label says what to write.
    for (args, expected) in [
        (vec!["--node-name", "a"], "--cluster"),
        (
            vec!["--cluster", "etcd://127.0.0.1:1", "--node-name", "a/b"],
            "--node-name",
        ),
        (vec!["--cluster", "etcd://127.0.0.1:1", "--labels", "zone"], "key=value"),
    ] {
        let state = temp_dir("cluster-args");
        let output = std::process::Command::new(BERTH)
            .args(["daemon", "--state-dir", state.to_str().unwrap()])
            .args(["--socket", state.join("berth.sock").to_str().unwrap()])
            .args(&args)
            .output()
            .expect("run berth daemon");
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
