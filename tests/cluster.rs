//! Cluster membership as an operator meets it: three berth nodes (each its own state
//! directory, socket, bridge and chains) join a real 3-member etcd with `--cluster`; every
//! node's API lists every node and every instance; cordon, uncordon and drain hold across
//! nodes; a name is one node's; a node killed with -9 is `down` once its lease runs out and
//! `ready` again when it comes back. The scheduler places instances by spread, constraints,
//! `--node` and images; any node reaches any instance through its node (exec, logs, stop,
//! start, rm); refusals say what each node lacked.

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
    let mut cluster = etcd::start(3);
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
    // Another node passes requests about it to n2, which advertises no address here: the
    // refusal says how to fix that.
    let refused = n1.fails(&["stop", "web"]);
    assert!(
        refused.contains("node n2 advertises no address") && refused.contains("--advertise"),
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
    // A drain of a node that runs nothing ends at once: the node is cordoned.
    assert_eq!(n2.ok(&["node", "drain", "-d", "n3"]).trim(), "n3 draining");
    wait_for_state(&n1, "n3", "cordoned", Duration::from_secs(10));
    assert!(n2.ok(&["node", "drain", "n3"]).contains("n3 drained"));
    assert_eq!(state_of(&n3, "n3"), "cordoned");
    let refused = n1.fails(&["node", "drain", "--parallel", "0", "n3"]);
    assert!(refused.contains("--parallel: give 1 to 32"), "{refused}");
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

    // One etcd member of three dies: past a whole lease TTL later every node is still
    // ready (leases renewed through the others) and instances still start.
    cluster.kill(0);
    std::thread::sleep(Duration::from_secs(12));
    for daemon in [&n1, &n2, &n3] {
        let listed = nodes(daemon);
        assert!(listed.iter().all(|n| n["state"] == "ready"), "{listed:?}");
    }
    n2.ok(&["run", "-d", "--name", "after", "busybox", "sleep", "600"]);
    assert_eq!(n3.inspect("after")["node"], "n2");
    n2.ok(&["rm", "-f", "web", "after"]);

    // A project's quota holds across nodes: two creates at the same moment on two nodes,
    // with room for one, and exactly one is made (the project's lock in etcd).
    n1.ok(&["project", "create", "race", "--max-instances", "1"]);
    n3.ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);
    let attempt = |daemon: &Daemon, name: &str, node: &str| {
        daemon.run(&[
            "run",
            "-d",
            "--name",
            name,
            "--node",
            node,
            "--label",
            "berth.project=race",
            "busybox",
            "sleep",
            "600",
        ])
    };
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| attempt(&n2, "race1", "n2"));
        let second = s.spawn(|| attempt(&n3, "race2", "n3"));
        (first.join().unwrap(), second.join().unwrap())
    });
    let made = [&first, &second].iter().filter(|o| o.status.success()).count();
    let refusals: Vec<String> = [&first, &second]
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert_eq!(made, 1, "{refusals:?}");
    assert!(
        refusals.iter().any(|r| r.contains("instances quota is 1")),
        "{refusals:?}"
    );
    let (daemon, name) = if first.status.success() {
        (&n2, "race1")
    } else {
        (&n3, "race2")
    };
    daemon.ok(&["rm", "-f", name]);
}

#[test]
fn a_single_host_is_one_node_that_cannot_be_cordoned() {
    let mut daemon = Daemon::with_busybox();
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
    // A host with instances of its own cannot join a cluster with them (the cluster would
    // not know them and they would be swept as strays): it says what to do.
    daemon.ok(&["create", "--name", "mine", "busybox", "true"]);
    daemon.kill9();
    let cluster = etcd::start(1);
    let output = std::process::Command::new(BERTH)
        .args(["daemon", "--state-dir", daemon.state.to_str().unwrap()])
        .args(["--socket", daemon.socket.to_str().unwrap()])
        .args(["--cluster", &cluster.url(), "--node-name", "joiner"])
        .output()
        .expect("run berth daemon");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("mine") && stderr.contains("without --cluster"),
        "{stderr}"
    );
    daemon.restart_only();
    daemon.ok(&["rm", "mine"]);
}

fn reachable_node(cluster: &EtcdCluster, name: &str, labels: &str, port: u16) -> Daemon {
    Daemon::start_with_args(
        &[
            "--cluster",
            &cluster.url(),
            "--node-name",
            name,
            "--labels",
            labels,
            "--advertise",
            "127.0.0.1",
            "--peer-port",
            &port.to_string(),
        ],
        "",
    )
}

#[test]
fn the_scheduler_places_instances_and_any_node_reaches_them() {
    let cluster = etcd::start(3);
    let ports = [
        crate::common::free_port(),
        crate::common::free_port(),
        crate::common::free_port(),
    ];
    let n1 = reachable_node(&cluster, "n1", "zone=a", ports[0]);
    let n2 = reachable_node(&cluster, "n2", "zone=b", ports[1]);
    let n3 = reachable_node(&cluster, "n3", "zone=b", ports[2]);
    for daemon in [&n1, &n2, &n3] {
        daemon.ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);
    }
    n1.ok(&["image", "tag", "busybox", "only-on-n1"]);
    // Nodes publish their images within a few seconds.
    let start = Instant::now();
    while !nodes(&n2).iter().all(|n| {
        n["images"]
            .as_array()
            .is_some_and(|i| i.iter().any(|t| t.as_str().is_some_and(|t| t.contains("busybox"))))
    }) || !nodes(&n2)[0]["images"].to_string().contains("only-on-n1")
    {
        assert!(start.elapsed() < Duration::from_secs(15), "{:?}", nodes(&n2));
        std::thread::sleep(Duration::from_millis(250));
    }

    // Spread: three instances from one node go to three nodes.
    let mut placed = Vec::new();
    for name in ["s1", "s2", "s3"] {
        n1.ok(&["run", "-d", "--name", name, "busybox", "sleep", "600"]);
        placed.push(n1.inspect(name)["node"].as_str().unwrap_or("").to_string());
    }
    placed.sort();
    assert_eq!(placed, ["n1", "n2", "n3"]);
    // Constraints, a chosen node, an image only one node has.
    n2.ok(&[
        "run",
        "-d",
        "--name",
        "in-a",
        "--constraint",
        "zone==a",
        "busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(n2.inspect("in-a")["node"], "n1");
    // `inspect` says why an instance is where it is.
    assert_eq!(
        n3.inspect("in-a")["spec"]["placement"],
        "spread: the emptiest of 1 nodes that fit; passed over: 2 do not meet zone==a"
    );
    assert_eq!(
        n3.inspect("s1")["spec"]["placement"]
            .as_str()
            .map(|p| p.starts_with("spread: the emptiest of 3")),
        Some(true)
    );
    // --spread-by: zone a (n1: s?, in-a) and zone b (one each on n2, n3) run two each; the
    // tie goes to a, though plain spread would take the emptier n2 or n3; then b.
    for (name, node, why) in [
        (
            "by-zone-1",
            "n1",
            "spread by zone: zone=a runs the fewest instances (2); the emptiest of its 1 nodes that fit",
        ),
        (
            "by-zone-2",
            "",
            "spread by zone: zone=b runs the fewest instances (2); the emptiest of its 2 nodes that fit",
        ),
    ] {
        n2.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--spread-by",
            "zone",
            "busybox",
            "sleep",
            "600",
        ]);
        let placed = n1.inspect(name);
        if !node.is_empty() {
            assert_eq!(placed["node"], node, "{placed}");
        }
        assert_eq!(placed["spec"]["placement"], why, "{placed}");
    }
    n1.ok(&["rm", "-f", "by-zone-1", "by-zone-2"]);
    n1.ok(&[
        "run", "-d", "--name", "pinned", "--node", "n3", "busybox", "sleep", "600",
    ]);
    assert_eq!(n1.inspect("pinned")["node"], "n3");
    assert_eq!(n1.inspect("pinned")["spec"]["placement"], "--node n3");
    n3.ok(&["run", "-d", "--name", "tagged", "only-on-n1", "sleep", "600"]);
    assert_eq!(n3.inspect("tagged")["node"], "n1");
    // A node without the image fetches it from one that has it (a registry on the peer
    // port), verified by digest: the same id, the same tag.
    n3.ok(&[
        "run",
        "-d",
        "--name",
        "fetched",
        "--node",
        "n2",
        "only-on-n1",
        "sleep",
        "600",
    ]);
    let fetched = n1.inspect("fetched");
    assert_eq!(
        (fetched["node"].as_str(), fetched["state"].as_str()),
        (Some("n2"), Some("running")),
        "{fetched}"
    );
    assert!(
        fetched["spec"]["placement"]
            .as_str()
            .is_some_and(|p| p.ends_with("the image comes from node n1")),
        "{fetched}"
    );
    let image_id = |daemon: &Daemon| -> String {
        let listed: serde_json::Value = serde_json::from_str(&daemon.ok(&["image", "ls", "--json"])).unwrap();
        listed
            .as_array()
            .and_then(|images| {
                images
                    .iter()
                    .find(|i| i["tags"].to_string().contains("only-on-n1"))
                    .and_then(|i| i["id"].as_str().map(str::to_string))
            })
            .unwrap_or_default()
    };
    assert_eq!(image_id(&n2), image_id(&n1));
    assert!(!image_id(&n1).is_empty());
    n1.ok(&["rm", "-f", "fetched"]);
    // The scheduler runs on the leader: the other nodes asked it.
    let info: serde_json::Value = serde_json::from_str(&n1.ok(&["info", "--json"])).unwrap();
    let leader = info["cluster"]["leader"].as_str().unwrap_or("").to_string();
    let leader_log = [&n1, &n2, &n3][["n1", "n2", "n3"].iter().position(|n| *n == leader).expect("a leader")].log();
    assert!(leader_log.contains("placed for another node"), "{leader}: {leader_log}");

    // A volume stays on its node, and so does a network: instances using them go there.
    n3.ok(&["volume", "create", "--size", "64m", "data"]);
    n2.ok(&["network", "create", "back"]);
    let start = Instant::now();
    while !(nodes(&n1)[2]["volumes"].to_string().contains("data")
        && nodes(&n1)[1]["networks"].to_string().contains("back"))
    {
        assert!(start.elapsed() < Duration::from_secs(15), "{:?}", nodes(&n1));
        std::thread::sleep(Duration::from_millis(250));
    }
    n1.ok(&[
        "run",
        "-d",
        "--name",
        "with-data",
        "-v",
        "data:/data",
        "busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(n1.inspect("with-data")["node"], "n3");
    n1.ok(&[
        "run",
        "-d",
        "--name",
        "on-back",
        "--network",
        "back",
        "busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(n1.inspect("on-back")["node"], "n2");
    let refused = n1.fails(&["run", "-d", "-v", "data:/data", "--network", "back", "busybox", "true"]);
    assert!(
        refused.contains("do not hold volume data") && refused.contains("lack network back"),
        "{refused}"
    );
    n1.ok(&["rm", "-f", "with-data", "on-back"]);

    // Any node reaches any instance: exec (an upgraded stream), logs, stop, start, rm.
    let said = n1.ok(&["exec", "pinned", "echo", "hello from n3"]);
    assert_eq!(said.trim(), "hello from n3");
    n2.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "--node",
        "n3",
        "busybox",
        "echo",
        "logged on n3",
    ]);
    n1.ok(&["wait", "talker"]);
    assert!(n1.ok(&["logs", "talker"]).contains("logged on n3"));
    n1.ok(&["stop", "-t", "1", "pinned"]);
    assert_eq!(n3.inspect("pinned")["state"], "exited");
    n2.ok(&["start", "pinned"]);
    assert_eq!(n3.inspect("pinned")["state"], "running");
    n1.ok(&["rm", "-f", "pinned", "talker"]);
    assert!(n3.fails(&["inspect", "pinned"]).contains("no such instance"));

    // A container moves by stop, move and start: its writable layer (a new file, a deleted
    // one: an overlayfs whiteout) goes with it, under the same name. `--live` needs CRIU,
    // which fails `criu check` on this kernel; `--live=auto` falls back.
    n1.ok(&[
        "run",
        "-d",
        "--name",
        "mover",
        "--node",
        "n2",
        "busybox",
        "sh",
        "-c",
        "[ -f /moved ] || { echo layer > /moved; rm /etc/group; }; exec sleep 600",
    ]);
    n1.wait_for("mover", Duration::from_secs(20), |v| v["state"] == "running");
    let refused = n1.fails(&["migrate", "mover", "--live"]);
    assert!(
        refused.contains("criu check") && refused.contains("--live=auto"),
        "{refused}"
    );
    assert_eq!(refused.trim().lines().count(), 1, "{refused}");
    let moved = n1.ok(&["migrate", "mover", "--to", "n3", "--live=auto", "--json"]);
    let moved: serde_json::Value = serde_json::from_str(&moved).expect("migrate --json");
    assert_eq!(
        (moved["from"].as_str(), moved["to"].as_str()),
        (Some("n2"), Some("n3")),
        "{moved}"
    );
    assert_eq!(moved["result"]["live"], false, "{moved}");
    let mover = n1.inspect("mover");
    assert_eq!(
        (mover["node"].as_str(), mover["state"].as_str()),
        (Some("n3"), Some("running")),
        "{mover}"
    );
    assert!(
        mover["spec"]["placement"]
            .as_str()
            .unwrap_or_default()
            .contains("--live=auto"),
        "{mover}"
    );
    assert_eq!(n1.ok(&["exec", "mover", "cat", "/moved"]), "layer\n");
    assert!(n1
        .fails(&["exec", "mover", "cat", "/etc/group"])
        .contains("No such file"));
    n1.ok(&["rm", "-f", "mover"]);

    // Refusals name what each node lacked, in one line.
    for (args, expected) in [
        (vec!["--constraint", "zone==z"], "0/3 nodes fit: 3 do not meet zone==z"),
        (
            vec!["--reserve-memory", "100g", "--memory", "100g"],
            "0/3 nodes fit: 3 lack memory (needs 100GiB)",
        ),
        (vec!["--node", "n9"], "no such node: n9"),
        (
            vec!["--spread-by", "rack"],
            "0/3 nodes fit: 3 lack label rack (--spread-by)",
        ),
        // An instance store is reserved in full against the node's file system
        // (i3.metal: 8 x 1,900 GB, more than any test machine's disk).
        (
            vec!["--type", "i3.metal", "--reserve-cpus", "0.1", "--reserve-memory", "64m"],
            "0/3 nodes fit: 3 lack instance storage (needs 13.82TiB)",
        ),
    ] {
        let mut run = vec!["run", "-d"];
        run.extend(args.iter().copied());
        run.extend(["busybox", "true"]);
        let refused = n1.fails(&run);
        assert!(refused.contains(expected), "{run:?}: {refused}");
        assert_eq!(refused.trim().lines().count(), 1, "{refused}");
    }
    n1.ok(&["node", "cordon", "n2"]);
    n1.ok(&["node", "cordon", "n3"]);
    let refused = n1.fails(&["run", "-d", "--constraint", "zone==b", "busybox", "true"]);
    assert!(
        refused.contains("0/3 nodes fit: 2 cordoned, 1 do not meet zone==b"),
        "{refused}"
    );
    n1.ok(&["node", "uncordon", "n2", "n3"]);

    // A socket client cannot pass its request off as one another node forwarded (which
    // would skip placement): n1 is cordoned, so the instance goes elsewhere.
    n1.ok(&["node", "cordon", "n1"]);
    let body = r#"{"name":"spoof","image":"busybox","command":["true"]}"#;
    let request = format!(
        "POST /v1/instances HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nx-berth-forwarded-by: n2\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = n1.raw_request(request.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_ne!(n1.inspect("spoof")["node"], "n1");
    n1.ok(&["node", "uncordon", "n1"]);
    n1.ok(&["rm", "-f", "spoof"]);

    // The peer port serves members only: without the cluster's token, 401.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", ports[1])).expect("peer port");
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /v1/instances HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(!answer.contains("s1"), "{answer}");

    // One node removes them all, each through its own node.
    n2.ok(&["rm", "-f", "s1", "s2", "s3", "in-a", "tagged"]);
    assert!(n3.ok(&["ps", "-aq"]).trim().is_empty());
}

/// Imports busybox on every node and waits until each has published it.
pub(crate) fn import_busybox_everywhere(daemons: &[Daemon]) {
    for daemon in daemons {
        daemon.ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);
    }
    let start = Instant::now();
    while !nodes(&daemons[0])
        .iter()
        .all(|n| n["images"].to_string().contains("busybox"))
    {
        assert!(start.elapsed() < Duration::from_secs(15), "{:?}", nodes(&daemons[0]));
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Three `sleep` durations no other run on this machine uses (what `copies` counts by).
fn unique_sleeps() -> [String; 3] {
    let base = 100_000 + crate::common::rand_u32() % 800_000;
    [1, 2, 3].map(|n| (base * 10 + n).to_string())
}

/// How many processes run `sleep SECONDS` (the test's unique marker) on this machine.
fn copies(seconds: &str) -> usize {
    let output = std::process::Command::new("pgrep")
        .args(["-fx", &format!("sleep {seconds}")])
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&output.stdout).lines().count()
}

pub(crate) fn pid_alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid of a qemu started for a live migration (with `-incoming`) other than `except`
/// (a VM that arrived by migration keeps its command line).
pub(crate) fn incoming_qemu(except: u64) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        if u64::from(pid) == except {
            return None;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        (args.first()?.ends_with(b"qemu-system-x86_64") && args.contains(&b"-incoming".as_slice())).then_some(pid)
    })
}

/// Polls (through `daemon`) until `name` runs on a node other than `from`; returns the
/// node and how long it took.
pub(crate) fn wait_moved(daemon: &Daemon, name: &str, from: &str, timeout: Duration) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let record = daemon.inspect(name);
        if record["node"] != from && record["state"] == "running" {
            return (record["node"].as_str().unwrap_or("").to_string(), start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "{name} not moved off {from} after {timeout:?}: {record}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_dead_nodes_movable_instances_run_elsewhere_and_never_twice() {
    let cluster = etcd::start(3);
    let [s1, s2, s3] = unique_sleeps();
    let ports = [
        crate::common::free_port(),
        crate::common::free_port(),
        crate::common::free_port(),
    ];
    let mut daemons = vec![
        reachable_node(&cluster, "n1", "zone=a", ports[0]),
        reachable_node(&cluster, "n2", "zone=b", ports[1]),
        reachable_node(&cluster, "n3", "zone=b", ports[2]),
    ];
    import_busybox_everywhere(&daemons);
    let info = daemons[0].ok(&["info"]);
    assert!(info.contains("Scheduler:       led by n"), "{info}");

    // On n3: one that may move, one with a local volume, one without a policy.
    let n1 = &daemons[0];
    n1.ok(&[
        "run",
        "-d",
        "--name",
        "mover",
        "--node",
        "n3",
        "--restart",
        "always",
        "busybox",
        "sleep",
        &s1,
    ]);
    daemons[2].ok(&["volume", "create", "--size", "64m", "local"]);
    n1.ok(&[
        "run",
        "-d",
        "--name",
        "pinned",
        "--node",
        "n3",
        "--restart",
        "always",
        "-v",
        "local:/data",
        "busybox",
        "sleep",
        &s2,
    ]);
    n1.ok(&["run", "-d", "--name", "plain", "--node", "n3", "busybox", "sleep", &s3]);
    let old_pid = n1.inspect("mover")["pid"].as_u64().expect("pid");
    let pinned_pid = n1.inspect("pinned")["pid"].as_u64().expect("pid");
    assert_eq!(copies(&s1), 1);

    // kill -9 of n3's daemon: its supervisors fence `mover` before the lease ends, the
    // leader moves it once etcd expired the lease, and it runs on n1 or n2.
    daemons[2].kill9();
    let (to, took) = wait_moved(&daemons[0], "mover", "n3", Duration::from_secs(60));
    eprintln!("failover after kill -9 of a daemon: mover running on {to} {took:?} later");
    assert!(!pid_alive(old_pid), "the fenced copy still runs");
    assert_eq!(copies(&s1), 1, "exactly one copy");
    let moved = daemons[0].inspect("mover");
    assert_eq!(moved["rescheduled"]["from"], "n3", "{moved}");
    assert!(
        moved["spec"]["placement"]
            .as_str()
            .is_some_and(|p| p.starts_with("moved from node n3 (down)")),
        "{moved}"
    );
    // The others are lost, with why, and were not fenced: nobody else runs them.
    for (name, why) in [("pinned", "volume local is its node's"), ("plain", "no restart policy")] {
        let record = daemons[1].inspect(name);
        assert_eq!(record["state"], "lost", "{record}");
        assert!(record["error"].as_str().is_some_and(|e| e.contains(why)), "{record}");
    }
    let listed = daemons[1].ok(&["ps", "-a"]);
    assert!(listed.contains("Lost (node n3"), "{listed}");
    assert!(pid_alive(pinned_pid));
    // An instance on a down node: `rm` says how, `rm -f` removes its record now.
    let refused = daemons[1].fails(&["rm", "plain"]);
    assert!(
        refused.contains("node n3, which is down") && refused.contains("rm -f plain"),
        "{refused}"
    );
    daemons[1].ok(&["rm", "-f", "plain"]);
    assert!(daemons[0].fails(&["inspect", "plain"]).contains("no such instance"));

    // n3 comes back: its lost instances are running again, what it left of mover is gone,
    // and mover still runs once, where it was moved.
    daemons[2].restart_only();
    let back = daemons[0].wait_for("pinned", Duration::from_secs(10), |v| v["state"] == "running");
    assert_eq!(back["state"], "running", "{back}");
    assert_eq!(back["pid"].as_u64(), Some(pinned_pid));
    assert_eq!(daemons[0].inspect("mover")["node"], to.as_str());
    assert_eq!(copies(&s1), 1);
    let mover_id = daemons[0].inspect("mover")["id"].as_str().unwrap().to_string();
    assert!(
        !daemons[2].instance_dir(&mover_id).exists(),
        "n3 kept the moved instance's directory"
    );
    assert_eq!(copies(&s3), 0, "n3 still runs the instance removed while it was down");

    // kill -9 of the whole process tree of the node that runs mover now: daemon,
    // supervisor and workload. It moves again.
    let victim = if to == "n1" { 0 } else { 1 };
    let watcher = 1 - victim;
    let record = daemons[victim].inspect("mover");
    daemons[victim].kill9();
    for pid in [record["supervisor_pid"].as_u64(), record["pid"].as_u64()]
        .into_iter()
        .flatten()
    {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    let (again, took) = wait_moved(&daemons[watcher], "mover", &to, Duration::from_secs(60));
    eprintln!("failover after kill -9 of a node's process tree: mover running on {again} {took:?} later");
    assert_eq!(copies(&s1), 1);
    daemons[victim].restart_only();

    // Drain: the node stops mover, then hands it to another node, which starts it; the
    // drain returns once the node is empty.
    wait_for_state(&daemons[watcher], &to, "ready", Duration::from_secs(20));
    let drained = daemons[watcher].ok(&["node", "drain", &again]);
    assert!(drained.contains("drained"), "{drained}");
    assert_eq!(state_of(&daemons[watcher], &again), "cordoned");
    let (drained_to, took) = wait_moved(&daemons[watcher], "mover", &again, Duration::from_secs(60));
    eprintln!("drain: mover running on {drained_to} {took:?} later");
    assert_eq!(copies(&s1), 1);
    assert!(daemons[watcher].inspect("mover")["spec"]["placement"]
        .as_str()
        .is_some_and(|p| p.starts_with(&format!("moved from node {again}"))),);
    daemons[watcher].ok(&["node", "uncordon", &again]);
    daemons[watcher].ok(&["rm", "-f", "mover", "pinned"]);
}

/// Three test hosts (network namespaces on one bridge), each with an etcd member and a berth
/// node: the layout of three machines.
pub(crate) fn three_hosts() -> (crate::common::hosts::TestHosts, EtcdCluster, Vec<Daemon>) {
    let hosts = crate::common::hosts::TestHosts::new(3);
    let spots: Vec<(&str, &str)> = hosts
        .hosts
        .iter()
        .map(|h| (h.netns.as_str(), h.address.as_str()))
        .collect();
    let cluster = EtcdCluster::start_in_namespaces(&spots).expect("etcd in the test hosts");
    let daemons = hosts
        .hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = format!("n{}", i + 1);
            Daemon::start_in_netns(
                &host.netns,
                &[
                    "--cluster",
                    &cluster.url(),
                    "--node-name",
                    &name,
                    "--advertise",
                    &host.address,
                ],
            )
        })
        .collect();
    (hosts, cluster, daemons)
}

#[test]
fn a_partitioned_node_fences_and_after_healing_exactly_one_copy_runs() {
    let (hosts, _cluster, daemons) = three_hosts();
    let [s1, s2, _] = unique_sleeps();
    import_busybox_everywhere(&daemons);
    // Any node reaches the others through their advertised addresses on the bridge.
    daemons[0].ok(&[
        "run",
        "-d",
        "--name",
        "mover",
        "--node",
        "n3",
        "--restart",
        "always",
        "busybox",
        "sleep",
        &s1,
    ]);
    daemons[1].ok(&["run", "-d", "--name", "stays", "--node", "n3", "busybox", "sleep", &s2]);
    assert_eq!(daemons[0].ok(&["exec", "mover", "echo", "on n3"]).trim(), "on n3");
    let fenced_pid = daemons[0].inspect("mover")["pid"].as_u64().expect("pid");
    let stays_pid = daemons[0].inspect("stays")["pid"].as_u64().expect("pid");

    // n3's link goes down: n3 and its etcd member are cut off from the majority. n3 fences
    // mover before its lease ends; the others move it once etcd expired the lease.
    hosts.cut(2);
    let (to, took) = wait_moved(&daemons[0], "mover", "n3", Duration::from_secs(60));
    eprintln!("failover after a partition: mover running on {to} {took:?} later");
    assert!(!pid_alive(fenced_pid), "the cut-off node still runs its copy");
    assert_eq!(copies(&s1), 1, "exactly one copy during the partition");
    assert_eq!(daemons[1].inspect("stays")["state"], "lost");
    assert!(pid_alive(stays_pid), "an instance nobody else runs is not fenced");

    // Healed: n3 renews again, writes nothing over mover, clears what it left of it; its
    // lost instance is running again; one copy of each runs.
    hosts.heal(2);
    wait_for_state(&daemons[0], "n3", "ready", Duration::from_secs(20));
    let back = daemons[0].wait_for("stays", Duration::from_secs(15), |v| v["state"] == "running");
    assert_eq!(back["state"], "running", "{back}");
    let mover_id = daemons[0].inspect("mover")["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    while daemons[2].instance_dir(&mover_id).exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "n3 kept the moved instance");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let mover = daemons[2].inspect("mover");
    assert_eq!(
        (mover["node"].as_str(), mover["state"].as_str()),
        (Some(to.as_str()), Some("running")),
        "{mover}"
    );
    assert_eq!(copies(&s1), 1, "exactly one copy after healing");
    assert_eq!(copies(&s2), 1);
    daemons[2].ok(&["rm", "-f", "mover", "stays"]);
}

/// `wget -qO- URL` from `args` (a `run --rm ...` or an `exec ...`) until it says `expected`
/// or `timeout` passes (DNS names of other nodes' instances arrive within a few seconds).
fn fetch_until(daemon: &Daemon, args: &[&str], expected: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let output = daemon.run(args);
        let said = String::from_utf8_lossy(&output.stdout).into_owned();
        if said == expected || start.elapsed() > timeout {
            return said;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_default_network_spans_the_nodes_and_names_resolve_everywhere() {
    let (_hosts, _cluster, daemons) = three_hosts();
    // The image is on n1 only: the others fetch it from n1 when they run it.
    daemons[0].ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);
    let start = Instant::now();
    while !nodes(&daemons[1])[0]["images"].to_string().contains("busybox") {
        assert!(start.elapsed() < Duration::from_secs(15), "{:?}", nodes(&daemons[1]));
        std::thread::sleep(Duration::from_millis(250));
    }
    let serve = |text: &str| format!("mkdir -p /www && echo {text} > /www/index.html && httpd -f -p 80 -h /www");
    daemons[0].ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--node",
        "n1",
        "busybox",
        "sh",
        "-c",
        &serve("hello-container"),
    ]);
    daemons[0].ok(&[
        "run",
        "-d",
        "--vm",
        "--name",
        "vweb",
        "--node",
        "n2",
        "busybox",
        "sh",
        "-c",
        &serve("hello-vm"),
    ]);
    // One subnet across the cluster, a /24 of it per node: no address is given twice.
    let web = daemons[2].inspect("web");
    let vweb = daemons[2].inspect("vweb");
    let (a, b) = (
        web["address"]["address"].as_str().unwrap_or(""),
        vweb["address"]["address"].as_str().unwrap_or(""),
    );
    assert!(a.starts_with("10.240.") && b.starts_with("10.240."), "{a} {b}");
    assert_ne!(
        a.rsplit_once('.').map(|x| x.0),
        b.rsplit_once('.').map(|x| x.0),
        "{a} {b}"
    );
    assert_eq!(web["address"]["prefix"], 16);

    // A container on n3 reaches the VM on n2 by name, and the VM the container on n1, over
    // the VXLAN between the hosts' bridges.
    let run_on_n3 = ["run", "--rm", "--node", "n3", "busybox", "wget", "-qO-", "http://vweb/"];
    let said = fetch_until(&daemons[2], &run_on_n3, "hello-vm\n", Duration::from_secs(20));
    assert_eq!(said, "hello-vm\n");
    let from_vm = ["exec", "vweb", "wget", "-qO-", "http://web/"];
    let said = fetch_until(&daemons[0], &from_vm, "hello-container\n", Duration::from_secs(20));
    assert_eq!(said, "hello-container\n");
    daemons[0].ok(&["rm", "-f", "web", "vweb"]);
}

#[test]
fn a_vm_on_nfs_restarts_on_another_node_with_its_disks() {
    let (hosts, _cluster, mut daemons) = three_hosts();
    // The NFS server is on this machine's end of the bridge, which every test host reaches.
    let nfs = crate::common::nfs::NfsServer::start(&hosts.gateway);
    let share = format!("nfs://{}{}", hosts.gateway, nfs.export.display());
    import_busybox_everywhere(&daemons);

    // A published port is its node's: a second instance publishing it goes elsewhere, and
    // pinned to the same node it is refused.
    for name in ["web1", "web2"] {
        daemons[0].ok(&["run", "-d", "--name", name, "-p", "18080:80", "busybox", "sleep", "600"]);
    }
    assert_ne!(daemons[0].inspect("web1")["node"], daemons[0].inspect("web2")["node"]);
    let taken = daemons[0].inspect("web1")["node"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let refused = daemons[0].fails(&["run", "-d", "--node", &taken, "-p", "18080:80", "busybox", "true"]);
    assert!(refused.contains("1 have port 18080/tcp taken"), "{refused}");
    daemons[0].ok(&["rm", "-f", "web1", "web2"]);

    // An NFS volume is the cluster's: made on one node, listed on every node.
    daemons[0].ok(&[
        "volume",
        "create",
        "--driver",
        "nfs",
        "--opt",
        &format!("server={}", hosts.gateway),
        "--opt",
        &format!("share={}", nfs.export.display()),
        "--size",
        "64m",
        "shared",
    ]);
    assert!(daemons[2].ok(&["volume", "ls"]).contains("shared"));

    // A VM whose root disk and volume are on the share, with a restart policy, on n3.
    daemons[0].ok(&[
        "run",
        "-d",
        "--name",
        "nfsvm",
        "--vm",
        "--memory",
        "256m",
        "--node",
        "n3",
        "--restart",
        "always",
        "--disk-on",
        &share,
        "-v",
        "shared:/data",
        "busybox",
        "sh",
        "-c",
        // A counter on the console, dirtying 4 MiB of memory between ticks (not zeros: QEMU
        // sends zero pages as a flag): a restart would begin again at 1.
        "i=0; while true; do i=$((i+1)); echo tick $i; yes | dd of=/dev/null bs=4M count=1 iflag=fullblock 2>/dev/null; done",
    ]);
    let vm = daemons[0].wait_for("nfsvm", Duration::from_secs(60), |v| v["state"] == "running");
    assert_eq!(vm["state"], "running", "{vm}");
    let root = vm["vm"]["disks"][0]["path"].as_str().unwrap_or_default().to_string();
    assert!(root.starts_with(&share), "{vm}");
    let written = daemons[0].ok(&[
        "exec",
        "nfsvm",
        "sh",
        "-c",
        "echo on-root > /kept && echo on-volume > /data/kept && sync && cat /kept /data/kept",
    ]);
    assert_eq!(written.split_whitespace().collect::<Vec<_>>(), ["on-root", "on-volume"]);
    // One node at a time uses an NFS volume.
    let refused = daemons[0].fails(&["run", "-d", "--node", "n1", "-v", "shared:/data", "busybox", "true"]);
    assert!(refused.contains("one node at a time"), "{refused}");

    // Live migration: the guest keeps running (its counter goes on), its record and qemu
    // move, the source's qemu ends; refusals name what is wrong.
    let ticks = |daemon: &Daemon| -> Vec<u64> {
        daemon
            .ok(&["logs", "nfsvm"])
            .lines()
            .filter_map(|l| l.trim().strip_prefix("tick ")?.parse().ok())
            .collect()
    };
    let before = ticks(&daemons[0]);
    assert!(!before.is_empty(), "the counter runs");
    let source_qemu = vm["pid"].as_u64().expect("pid");
    let refused = daemons[0].fails(&["migrate", "nfsvm", "--to", "n3"]);
    assert!(refused.contains("already runs there"), "{refused}");
    let refused = daemons[0].fails(&["migrate", "nfsvm", "--to", "n9"]);
    assert!(refused.contains("no such node: n9"), "{refused}");
    let moved = daemons[0].ok(&["migrate", "nfsvm", "--to", "n2", "--json"]);
    eprintln!("live migration n3 -> n2: {moved}");
    let result: serde_json::Value = serde_json::from_str(&moved).expect("migrate --json");
    assert_eq!(result["to"], "n2", "{result}");
    let downtime = result["result"]["downtime_ms"].as_u64().expect("downtime");
    assert!(downtime < 5_000, "{result}");
    let after = daemons[0].inspect("nfsvm");
    assert_eq!(after["node"], "n2", "{after}");
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(after["rescheduled"]["migration"]["downtime_ms"], downtime, "{after}");
    assert_eq!(after["address"]["mac"], vm["address"]["mac"], "{after}");
    assert!(!pid_alive(source_qemu), "the source's qemu still runs");
    std::thread::sleep(Duration::from_secs(2));
    let later = ticks(&daemons[0]);
    assert!(
        !later.is_empty() && later[0] > *before.last().unwrap_or(&0) && later.windows(2).all(|w| w[1] == w[0] + 1),
        "the counter went on without restarting: before {:?}, after {:?}",
        &before[before.len().saturating_sub(3)..],
        &later[..later.len().min(5)]
    );
    let read = daemons[0].ok(&["exec", "nfsvm", "cat", "/kept", "/data/kept"]);
    assert_eq!(read.split_whitespace().collect::<Vec<_>>(), ["on-root", "on-volume"]);
    // Draining n2 migrates it live again, where the scheduler chooses: the counter goes on.
    let last = *later.last().unwrap_or(&0);
    daemons[0].ok(&["node", "drain", "n2"]);
    let vm = daemons[0].wait_for("nfsvm", Duration::from_secs(60), |v| {
        v["node"] != "n2" && v["state"] == "running"
    });
    assert_ne!(vm["node"], "n2", "{vm}");
    assert!(vm["rescheduled"]["migration"]["downtime_ms"].is_u64(), "{vm}");
    std::thread::sleep(Duration::from_secs(1));
    let drained = ticks(&daemons[0]);
    assert!(
        drained.first().is_some_and(|first| *first > last),
        "the counter restarted: {:?}",
        &drained[..drained.len().min(5)]
    );
    daemons[0].ok(&["node", "uncordon", "n2"]);

    // A migration held to 1 MiB/s (minutes for the guest's memory): Ctrl-C of the client
    // cancels it, a target whose qemu dies fails it, and the VM runs on where it was, once.
    let here = vm["node"].as_str().unwrap_or_default().to_string();
    let there = if here == "n1" { "n3" } else { "n1" };
    let qemu_here = vm["pid"].as_u64().expect("pid");
    let unfinished = |signal: &str| {
        let client = daemons[0]
            .command(&["migrate", "nfsvm", "--to", there, "--bandwidth", "1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("berth migrate");
        // Under way: a waiting qemu on the target.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let target_qemu = loop {
            if let Some(pid) = incoming_qemu(qemu_here) {
                break pid;
            }
            assert!(std::time::Instant::now() < deadline, "no waiting qemu on {there}");
            std::thread::sleep(Duration::from_millis(100));
        };
        std::thread::sleep(Duration::from_secs(2));
        match signal {
            "client" => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(client.id() as i32),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            _ => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(target_qemu as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let output = client.wait_with_output().expect("berth migrate ends");
        assert!(!output.status.success(), "{output:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while incoming_qemu(qemu_here).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "{signal}: the target's qemu stays; {}; logs: {}",
                String::from_utf8_lossy(&output.stderr),
                daemons.iter().map(|d| d.log()).collect::<Vec<_>>().join("\n----\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    for how in ["client", "target"] {
        let said = unfinished(how);
        let vm = daemons[0].inspect("nfsvm");
        assert_eq!(
            (vm["node"].as_str(), vm["state"].as_str()),
            (Some(here.as_str()), Some("running")),
            "{how}: {vm}"
        );
        assert!(pid_alive(qemu_here), "{how}: the source's qemu ended");
        // The guest keeps counting (given time: a loaded host runs a TCG guest slowly).
        let last = *ticks(&daemons[0]).last().unwrap_or(&0);
        let deadline = Instant::now() + Duration::from_secs(15);
        while *ticks(&daemons[0]).last().unwrap_or(&0) <= last {
            assert!(Instant::now() < deadline, "{how}: the counter stopped");
            std::thread::sleep(Duration::from_millis(250));
        }
        if how == "target" {
            assert!(said.contains("still runs on"), "{said}");
        }
    }
    let on = vm["node"].as_str().unwrap_or_default().to_string();
    let index = ["n1", "n2", "n3"].iter().position(|n| *n == on).expect("a node");
    let qemu_pid = vm["pid"].as_u64().expect("pid");

    // kill -9 of the VM's node's daemon: its supervisor fences the VM, the leader moves it,
    // another node starts it from the same disks.
    let ask = if index == 0 { 1 } else { 0 };
    daemons[index].kill9();
    let (to, took) = wait_moved(&daemons[ask], "nfsvm", &on, Duration::from_secs(60));
    eprintln!("failover of an NFS-backed VM: running on {to} {took:?} later");
    assert!(!pid_alive(qemu_pid), "the fenced qemu still runs");
    let moved = daemons[ask].inspect("nfsvm");
    assert_eq!(moved["rescheduled"]["from"], on.as_str(), "{moved}");
    assert_eq!(moved["vm"]["disks"][0]["path"], root.as_str(), "{moved}");
    let read = daemons[ask].ok(&["exec", "nfsvm", "cat", "/kept", "/data/kept"]);
    assert_eq!(read.split_whitespace().collect::<Vec<_>>(), ["on-root", "on-volume"]);

    // Removing it deletes its disk from the share; the image's base stays for other VMs.
    daemons[ask].ok(&["rm", "-f", "nfsvm"]);
    let files: Vec<String> = std::fs::read_dir(&nfs.export)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!files.iter().any(|f| f.starts_with("berth-vm-")), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("berth-base-")), "{files:?}");
    daemons[ask].ok(&["volume", "rm", "shared"]);
}
