//! A real etcd cluster for the tests (started by `berth-test-etcd`: Debian's etcd 3.4, one
//! process per member on 127.0.0.1), and `etcdctl` to look at what berth wrote, as an
//! operator would.

use std::process::Command;

pub use berth_test_etcd::EtcdCluster;

/// Starts a cluster of `size` members; they are killed when the value is dropped.
pub fn start(size: usize) -> EtcdCluster {
    assert!(
        berth_test_etcd::available(),
        "etcd is not installed: apt-get install etcd-server etcd-client (scripts/install-deps.sh)"
    );
    EtcdCluster::start(size).expect("starting etcd")
}

/// etcdctl against the members that run now.
pub fn etcdctl(cluster: &EtcdCluster, args: &[&str]) -> String {
    let endpoints: Vec<String> = cluster
        .members()
        .iter()
        .filter(|m| m.is_running())
        .map(|m| m.client_endpoint())
        .collect();
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(
        output.status.success(),
        "etcdctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The keys under `prefix`, in key order.
pub fn keys(cluster: &EtcdCluster, prefix: &str) -> Vec<String> {
    etcdctl(cluster, &["get", "--prefix", "--keys-only", prefix])
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// The value of `key`, if it exists.
pub fn value(cluster: &EtcdCluster, key: &str) -> Option<String> {
    etcdctl(cluster, &["get", "--print-value-only", key])
        .strip_suffix('\n')
        .map(str::to_string)
        .filter(|v| !v.is_empty())
}
