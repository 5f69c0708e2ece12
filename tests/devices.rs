//! Device access from a container: the allow-list (Docker's) holds, so a node a container
//! makes for the host's disk is unusable while the standard character devices work. Here on
//! this host's cgroup version (v1: the devices controller); `cgroup_v2` runs the same probe
//! on a cgroup v2 host (the eBPF device program).

use std::collections::BTreeMap;

use crate::common::{stderr, stdout, Daemon};

/// The probe run inside the container; prints `what=outcome` lines.
pub const DEVICE_PROBE: &str = include_str!("fixtures/device-probe.sh");

/// `major:minor` of the block device under `/` on this host (its disk), else of any block
/// device the host has.
fn host_disk_device() -> String {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = mountinfo
        .lines()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .find(|fields| fields.get(4) == Some(&"/"))
        .and_then(|fields| fields.get(2).map(|s| s.to_string()))
        .filter(|dev| !dev.starts_with("0:"));
    root.unwrap_or_else(|| {
        let entry = std::fs::read_dir("/sys/class/block")
            .expect("/sys/class/block")
            .flatten()
            .next()
            .expect("a block device on this host");
        std::fs::read_to_string(entry.path().join("dev"))
            .expect("dev of a block device")
            .trim()
            .to_string()
    })
}

/// The probe's `what=outcome` lines.
pub fn parse_probe(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(what, outcome)| (what.trim().to_string(), outcome.trim().to_string()))
        .collect()
}

/// What every host must show: a block device node can be made (CAP_MKNOD and "m" are
/// Docker's defaults) but neither read nor opened for writing, /dev/mem is refused, and
/// null, zero, urandom and full behave as themselves.
pub fn assert_devices_denied(outcomes: &BTreeMap<String, String>, host: &str) {
    let get = |what: &str| {
        outcomes
            .get(what)
            .unwrap_or_else(|| panic!("{host}: the device probe printed no '{what}': {outcomes:?}"))
            .as_str()
    };
    assert_eq!(get("mknod"), "ok", "{host}: {outcomes:?}");
    for denied in ["read", "open_rw", "mem"] {
        assert!(
            get(denied).contains("Operation not permitted"),
            "{host}: {denied} of a device outside the allow-list must be refused: {outcomes:?}"
        );
    }
    assert_eq!(get("null"), "ok", "{host}: {outcomes:?}");
    assert_eq!(get("zero"), "4", "{host}: {outcomes:?}");
    assert_eq!(get("urandom"), "4", "{host}: {outcomes:?}");
    assert!(
        get("full").contains("No space left on device"),
        "{host}: /dev/full is allowed and full: {outcomes:?}"
    );
}

#[test]
fn a_node_for_the_host_disk_is_unusable_in_a_container() {
    let d = Daemon::with_busybox();
    let device = host_disk_device();
    let (major, minor) = device.split_once(':').expect("major:minor");
    let output = d.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        DEVICE_PROBE,
        "probe",
        major,
        minor,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_devices_denied(&parse_probe(&stdout(&output)), "this host");
}
