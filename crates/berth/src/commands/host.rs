//! Host-level commands: info and events.

use anyhow::Result;
use berth_client::Client;
use berth_model::api::{Event, HostInfo};
use berth_model::quantity::LimitSetting;
use berth_model::ByteSize;

use crate::cli::JsonArgs;
use crate::Outcome;

fn setting<T: std::fmt::Display>(value: Option<LimitSetting<T>>) -> String {
    match value {
        None | Some(LimitSetting::Unlimited) => "unlimited".into(),
        Some(LimitSetting::Value(v)) => v.to_string(),
    }
}

pub async fn info(client: &Client, args: JsonArgs) -> Result<Outcome> {
    let info: HostInfo = client.get("/v1/info").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(Outcome::Success);
    }
    let defaults = &info.default_limits;
    let memory_default = match defaults.memory_bytes {
        Some(LimitSetting::Value(b)) => ByteSize(b).to_string(),
        _ => "unlimited".into(),
    };
    println!("Node:            {}", info.node);
    println!("Version:         {}", info.version);
    println!("OS:              {}", info.os);
    println!("Kernel:          {}", info.kernel);
    println!("Cgroups:         {}", info.cgroup_version);
    println!("OCI runtime:     {}", info.oci_runtime);
    println!(
        "Accelerators:    {} ({})",
        info.accelerators.join(", "),
        info.accelerator_note
    );
    println!("Guest kernel:    {}", info.guest_kernel);
    let allocation = &info.allocated;
    println!(
        "CPUs:            {} (capacity {:.2} at overcommit {}, reserved {:.2}, free {:.2}; limits of running instances {:.2})",
        info.cpus,
        allocation.capacity_cpus,
        allocation.cpu_overcommit,
        allocation.cpus,
        allocation.free_cpus,
        allocation.limit_cpus
    );
    println!(
        "Memory:          {} (capacity {} at overcommit {}, reserved {}, free {}; limits of running instances {})",
        ByteSize(info.memory_bytes),
        ByteSize(allocation.capacity_memory_bytes),
        allocation.memory_overcommit,
        ByteSize(allocation.memory_bytes),
        ByteSize(allocation.free_memory_bytes),
        ByteSize(allocation.limit_memory_bytes)
    );
    if info.allocated.unlimited_instances > 0 {
        println!(
            "Unlimited:       {} running instance(s) without a CPU or memory limit",
            info.allocated.unlimited_instances
        );
    }
    println!(
        "Default limits:  cpus {}, memory {}, pids {}",
        setting(defaults.cpus),
        memory_default,
        setting(defaults.pids)
    );
    println!(
        "Default request: cpus {}, memory {}",
        defaults.reserve_cpus.map_or("0".into(), |c| c.to_string()),
        ByteSize(defaults.reserve_memory_bytes.unwrap_or(0))
    );
    println!(
        "Instances:       {} ({} running, {} paused, {} stopped)",
        info.instances.total, info.instances.running, info.instances.paused, info.instances.stopped
    );
    println!("Images:          {}", info.images);
    println!("State:           {} ({})", info.state_dir, info.store);
    if let Some(cluster) = &info.cluster {
        println!(
            "Cluster:         node {}; {} of {} nodes ready (berth node ls)",
            cluster.node, cluster.ready_nodes, cluster.nodes
        );
        println!("etcd members:    {}", cluster.etcd_members.join("; "));
        println!(
            "Scheduler:       led by {}",
            cluster
                .leader
                .as_deref()
                .unwrap_or("nobody yet (a node takes the lead within a second)")
        );
    }
    Ok(Outcome::Success)
}

pub async fn events(client: &Client, args: JsonArgs) -> Result<Outcome> {
    let mut lines = client.stream(hyper::Method::GET, "/v1/events", None).await?.lines();
    while let Some(line) = lines.next_line().await? {
        if args.json {
            println!("{}", String::from_utf8_lossy(&line));
            continue;
        }
        if let Ok(event) = serde_json::from_slice::<Event>(&line) {
            let exit = event.exit.map(|e| format!(" (exit {})", e.code)).unwrap_or_default();
            println!(
                "{} {} {} {} {}{exit}",
                event.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                event.subject,
                event.action,
                berth_model::instance::short_id(&event.id),
                event.name
            );
        }
    }
    Ok(Outcome::Success)
}

pub async fn types(client: &Client, args: JsonArgs) -> Result<Outcome> {
    let types: Vec<berth_model::types::InstanceType> = client.get("/v1/types").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&types)?);
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = types
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.vcpus.to_string(),
                format!("{}", t.memory_gib),
                t.instance_storage.clone(),
                t.network.clone(),
                t.source.clone(),
            ]
        })
        .collect();
    crate::output::print_table(
        &[
            "TYPE",
            "VCPU",
            "MEMORY (GIB)",
            "INSTANCE STORAGE (GB)",
            "NETWORK",
            "SOURCE",
        ],
        &rows,
    );
    Ok(Outcome::Success)
}
