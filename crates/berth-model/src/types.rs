//! Instance types: named sizes (vCPUs, memory, instance storage, network bandwidth) usable
//! for containers and VMs alike. The built-in catalog follows AWS's published figures; an
//! operator adds types in the daemon's config file.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Decimal gigabyte, as AWS states instance storage.
const GB: u64 = 1_000_000_000;
const GIB: f64 = (1u64 << 30) as f64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceType {
    pub name: String,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// Memory as the catalog states it (GiB), for display.
    pub memory_gib: f64,
    /// Sizes of the instance-store disks, bytes each.
    pub instance_storage_bytes: Vec<u64>,
    /// The catalog's wording, e.g. "1 x 475 NVMe SSD" or "EBS only".
    pub instance_storage: String,
    /// Bandwidth the instance may reach, bits per second.
    pub network_bits_per_second: u64,
    /// The catalog's wording, e.g. "Up to 10 Gigabit".
    pub network: String,
    /// "builtin" or "config".
    pub source: String,
}

struct Entry {
    name: &'static str,
    vcpus: u32,
    memory_gib: f64,
    disks: u32,
    disk_gb: u64,
    gbps: u64,
    up_to: bool,
}

const fn entry(
    name: &'static str,
    vcpus: u32,
    memory_gib: f64,
    disks: u32,
    disk_gb: u64,
    gbps: u64,
    up_to: bool,
) -> Entry {
    Entry {
        name,
        vcpus,
        memory_gib,
        disks,
        disk_gb,
        gbps,
        up_to,
    }
}

/// AWS's figures: i3 (storage optimized, NVMe instance store), t3 (burstable), m5 (general
/// purpose), c5 (compute optimized).
const CATALOG: &[Entry] = &[
    entry("i3.large", 2, 15.25, 1, 475, 10, true),
    entry("i3.xlarge", 4, 30.5, 1, 950, 10, true),
    entry("i3.2xlarge", 8, 61.0, 1, 1900, 10, true),
    entry("i3.4xlarge", 16, 122.0, 2, 1900, 10, true),
    entry("i3.8xlarge", 32, 244.0, 4, 1900, 10, false),
    entry("i3.16xlarge", 64, 488.0, 8, 1900, 25, false),
    entry("i3.metal", 72, 512.0, 8, 1900, 25, false),
    entry("t3.nano", 2, 0.5, 0, 0, 5, true),
    entry("t3.micro", 2, 1.0, 0, 0, 5, true),
    entry("t3.small", 2, 2.0, 0, 0, 5, true),
    entry("t3.medium", 2, 4.0, 0, 0, 5, true),
    entry("t3.large", 2, 8.0, 0, 0, 5, true),
    entry("t3.xlarge", 4, 16.0, 0, 0, 5, true),
    entry("t3.2xlarge", 8, 32.0, 0, 0, 5, true),
    entry("m5.large", 2, 8.0, 0, 0, 10, true),
    entry("m5.xlarge", 4, 16.0, 0, 0, 10, true),
    entry("m5.2xlarge", 8, 32.0, 0, 0, 10, true),
    entry("m5.4xlarge", 16, 64.0, 0, 0, 10, true),
    entry("m5.8xlarge", 32, 128.0, 0, 0, 10, false),
    entry("m5.12xlarge", 48, 192.0, 0, 0, 12, false),
    entry("m5.16xlarge", 64, 256.0, 0, 0, 20, false),
    entry("m5.24xlarge", 96, 384.0, 0, 0, 25, false),
    entry("c5.large", 2, 4.0, 0, 0, 10, true),
    entry("c5.xlarge", 4, 8.0, 0, 0, 10, true),
    entry("c5.2xlarge", 8, 16.0, 0, 0, 10, true),
    entry("c5.4xlarge", 16, 32.0, 0, 0, 10, true),
    entry("c5.9xlarge", 36, 72.0, 0, 0, 12, false),
    entry("c5.12xlarge", 48, 96.0, 0, 0, 12, false),
    entry("c5.18xlarge", 72, 144.0, 0, 0, 25, false),
    entry("c5.24xlarge", 96, 192.0, 0, 0, 25, false),
];

/// "1 x 475 NVMe SSD", "8 x 1,900 NVMe SSD", "EBS only".
fn storage_wording(disks: u32, disk_gb: u64) -> String {
    if disks == 0 {
        return "EBS only".into();
    }
    let size = if disk_gb >= 1000 {
        format!("{},{:03}", disk_gb / 1000, disk_gb % 1000)
    } else {
        disk_gb.to_string()
    };
    format!("{disks} x {size} NVMe SSD")
}

fn network_wording(gbps: u64, up_to: bool) -> String {
    if up_to {
        format!("Up to {gbps} Gigabit")
    } else {
        format!("{gbps} Gigabit")
    }
}

/// The built-in catalog.
pub fn builtin_types() -> Vec<InstanceType> {
    CATALOG
        .iter()
        .map(|e| InstanceType {
            name: e.name.into(),
            vcpus: e.vcpus,
            memory_bytes: (e.memory_gib * GIB) as u64,
            memory_gib: e.memory_gib,
            instance_storage_bytes: vec![e.disk_gb * GB; e.disks as usize],
            instance_storage: storage_wording(e.disks, e.disk_gb),
            network_bits_per_second: e.gbps * 1_000_000_000,
            network: network_wording(e.gbps, e.up_to),
            source: "builtin".into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i3_family_as_aws_lists_it() {
        let types = builtin_types();
        let find = |n: &str| types.iter().find(|t| t.name == n).unwrap();
        let large = find("i3.large");
        assert_eq!((large.vcpus, large.memory_gib), (2, 15.25));
        assert_eq!(large.instance_storage, "1 x 475 NVMe SSD");
        assert_eq!(large.network, "Up to 10 Gigabit");
        assert_eq!(large.memory_bytes, 16_374_562_816);
        let metal = find("i3.metal");
        assert_eq!((metal.vcpus, metal.memory_gib), (72, 512.0));
        assert_eq!(metal.instance_storage, "8 x 1,900 NVMe SSD");
        assert_eq!(metal.instance_storage_bytes.len(), 8);
        assert_eq!(metal.network, "25 Gigabit");
        assert_eq!(find("i3.8xlarge").network, "10 Gigabit");
        assert_eq!(find("i3.4xlarge").instance_storage, "2 x 1,900 NVMe SSD");
        assert_eq!(find("t3.micro").instance_storage, "EBS only");
    }
}
