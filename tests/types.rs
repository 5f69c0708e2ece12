//! Instance types: the catalog, sizing containers and VMs from it, custom types from the
//! daemon's config, and admission against the host's capacity.

use crate::common::{cgroup_file, stderr, Daemon};

#[test]
fn the_catalog_lists_i3_as_aws_does_and_custom_types() {
    let d = Daemon::start_with_config(
        "[[types]]\nname = \"lab.tiny\"\nvcpus = 1\nmemory = \"96m\"\ninstance_storage = [\"1g\"]\nnetwork = \"100mbit\"\n\n",
    );
    let types: serde_json::Value = serde_json::from_str(&d.ok(&["types", "ls", "--json"])).unwrap();
    let find = |name: &str| {
        types
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap()
    };
    let expected = [
        ("i3.large", 2, 15.25, "1 x 475 NVMe SSD", "Up to 10 Gigabit"),
        ("i3.xlarge", 4, 30.5, "1 x 950 NVMe SSD", "Up to 10 Gigabit"),
        ("i3.2xlarge", 8, 61.0, "1 x 1,900 NVMe SSD", "Up to 10 Gigabit"),
        ("i3.4xlarge", 16, 122.0, "2 x 1,900 NVMe SSD", "Up to 10 Gigabit"),
        ("i3.8xlarge", 32, 244.0, "4 x 1,900 NVMe SSD", "10 Gigabit"),
        ("i3.16xlarge", 64, 488.0, "8 x 1,900 NVMe SSD", "25 Gigabit"),
        ("i3.metal", 72, 512.0, "8 x 1,900 NVMe SSD", "25 Gigabit"),
    ];
    for (name, vcpus, memory, storage, network) in expected {
        let t = find(name);
        assert_eq!(t["vcpus"], vcpus, "{name}");
        assert_eq!(t["memory_gib"], memory, "{name}");
        assert_eq!(t["instance_storage"], storage, "{name}");
        assert_eq!(t["network"], network, "{name}");
    }
    for family in ["t3.micro", "m5.large", "c5.xlarge"] {
        find(family);
    }
    let custom = find("lab.tiny");
    assert_eq!(custom["source"], "config");
    assert_eq!(custom["network_bits_per_second"], 100_000_000u64);
    let table = d.ok(&["types", "ls"]);
    assert!(
        table.contains("i3.metal") && table.contains("8 x 1,900 NVMe SSD"),
        "{table}"
    );
}

#[test]
fn a_type_sizes_containers_and_vms_and_flags_override_it() {
    let d = Daemon::with_busybox();
    let id = d.ok(&["run", "-d", "--type", "i3.large", "busybox", "sleep", "100"]);
    let id = id.trim();
    let record = d.inspect(id);
    assert_eq!(record["instance_type"], "i3.large");
    assert_eq!(record["limits"]["cpus"], 2.0);
    assert_eq!(record["limits"]["memory_bytes"], 16_374_562_816u64);
    assert_eq!(record["limits"]["network_bits_per_second"], 10_000_000_000u64);
    assert_eq!(
        record["spec"]["instance_storage_bytes"],
        serde_json::json!([475_000_000_000u64])
    );
    let limit = cgroup_file(id, "memory", "memory.limit_in_bytes")
        .or_else(|| cgroup_file(id, "", "memory.max"))
        .unwrap();
    assert_eq!(limit, "16374562816");
    d.ok(&["rm", "-f", id]);

    d.ok(&[
        "create", "--name", "small", "--type", "i3.large", "--memory", "1g", "busybox", "true",
    ]);
    let record = d.inspect("small");
    assert_eq!(record["limits"]["memory_bytes"], 1u64 << 30);
    assert_eq!(record["limits"]["cpus"], 2.0);

    let vm = d.ok(&[
        "run",
        "--vm",
        "--rm",
        "--type",
        "t3.nano",
        "busybox",
        "sh",
        "-c",
        "nproc; grep MemTotal /proc/meminfo",
    ]);
    let mut lines = vm.lines();
    assert_eq!(lines.next(), Some("2"), "{vm}");
    let kib: u64 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(kib > 300 * 1024 && kib <= 512 * 1024, "{vm}");

    let unknown = d.run(&["run", "--rm", "--type", "x9.huge", "busybox", "true"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("unknown instance type 'x9.huge'"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn admission_refuses_what_the_host_cannot_hold() {
    let d = Daemon::with_busybox();
    let info: serde_json::Value = serde_json::from_str(&d.ok(&["info", "--json"])).unwrap();
    let capacity = info["allocated"]["capacity_memory_bytes"].as_u64().unwrap();
    // Two instances of more than half the memory: the second does not fit.
    let half = format!("{}", capacity / 2 + (64 << 20));
    d.ok(&[
        "run", "-d", "--name", "first", "--memory", &half, "busybox", "sleep", "100",
    ]);
    let refused = d.run(&[
        "run", "-d", "--name", "second", "--memory", &half, "busybox", "sleep", "100",
    ]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    // A limit given alone is also what the instance reserves (Kubernetes' rule).
    assert!(
        message.contains("not enough room to start second") && message.contains("memory: it reserves"),
        "{message}"
    );
    // The refused run leaves no instance holding the name.
    assert_eq!(d.ok(&["ps", "-aq"]).lines().count(), 1);
    let info: serde_json::Value = serde_json::from_str(&d.ok(&["info", "--json"])).unwrap();
    assert!(info["allocated"]["free_memory_bytes"].as_u64().unwrap() < capacity / 2);
    // `create` defines without admitting; `start` is refused the same way and keeps it.
    d.ok(&[
        "create", "--name", "second", "--memory", &half, "busybox", "sleep", "100",
    ]);
    let refused = d.run(&["start", "second"]);
    assert!(
        stderr(&refused).contains("not enough room to start second"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(d.inspect("second")["state"], "created");
    // Room again once the first stops.
    d.ok(&["rm", "-f", "first"]);
    d.ok(&["start", "second"]);
    assert_eq!(d.inspect("second")["state"], "running");
}
