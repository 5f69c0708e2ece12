//! What an API client sends: every request body the daemon accepts deserialises or fails
//! with an error, and the typed values parsed at the edge (sizes, CPUs, counts, ports,
//! mounts, log options, signals) parse or fail without a panic or an overflow.
#![no_main]

use berth_model::api;
use berth_model::quantity::{parse_bandwidth, parse_count, ByteSize, LimitSetting, MilliCpus};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<api::CreateInstanceRequest>(data);
    let _ = serde_json::from_slice::<api::ExecRequest>(data);
    let _ = serde_json::from_slice::<api::LimitsRequest>(data);
    let _ = serde_json::from_slice::<api::UpdateInstanceRequest>(data);
    let _ = serde_json::from_slice::<api::CreateNetworkRequest>(data);
    let _ = serde_json::from_slice::<api::CreateVolumeRequest>(data);
    let _ = serde_json::from_slice::<api::VmImportRequest>(data);
    let _ = serde_json::from_slice::<api::ImportImageRequest>(data);
    let _ = serde_json::from_slice::<api::RegistryRequest>(data);
    let _ = serde_json::from_slice::<api::TagImageRequest>(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(size) = text.parse::<ByteSize>() {
        let _ = size.bytes();
    }
    if let Ok(cpus) = text.parse::<MilliCpus>() {
        let _ = cpus.ceil_cpus();
        let _ = cpus.as_cpus();
    }
    let _ = LimitSetting::<ByteSize>::parse(text);
    let _ = LimitSetting::<MilliCpus>::parse(text);
    let _ = parse_bandwidth(text);
    let _ = parse_count(text);
    let _ = berth_model::network::PortMapping::parse(text);
    let _ = berth_model::mount::parse_volume_flag(text);
    let _ = berth_model::mount::parse_mount_flag(text);
    let _ = berth_model::mount::parse_tmpfs_flag(text);
    let _ = berth_model::mount::clean_target(text);
    let _ = text.parse::<berth_model::log::LogOption>();
    let _ = berth_model::signal::parse_signal(text);
    let _ = berth_model::instance::validate_name(text);
});
