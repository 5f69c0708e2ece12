//! `berth snapshot`: disk snapshots of VMs.

use anyhow::Result;
use berth_client::Client;
use berth_model::api::SnapshotRequest;
use berth_model::Instance;

use crate::cli::{InstanceSnapshotArgs, SnapshotLsArgs};
use crate::output::{ago, print_table};
use crate::{encode, Outcome};

pub async fn create(client: &Client, args: InstanceSnapshotArgs) -> Result<Outcome> {
    let _: Instance = client
        .post(
            &format!("/v1/instances/{}/snapshots", encode(&args.instance)),
            &SnapshotRequest {
                name: args.snapshot.clone(),
            },
        )
        .await?;
    println!("{}", args.snapshot);
    Ok(Outcome::Success)
}

pub async fn list(client: &Client, args: SnapshotLsArgs) -> Result<Outcome> {
    let instance: Instance = client.get(&format!("/v1/instances/{}", encode(&args.instance))).await?;
    let snapshots = instance.vm.map(|vm| vm.snapshots).unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snapshots)?);
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = snapshots
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                if s.live { "running" } else { "stopped" }.to_string(),
                ago(s.created_at),
            ]
        })
        .collect();
    print_table(&["SNAPSHOT", "TAKEN WHILE", "CREATED"], &rows);
    Ok(Outcome::Success)
}

pub async fn restore(client: &Client, args: InstanceSnapshotArgs) -> Result<Outcome> {
    let _: Instance = client
        .post(
            &format!("/v1/instances/{}/restore", encode(&args.instance)),
            &SnapshotRequest {
                name: args.snapshot.clone(),
            },
        )
        .await?;
    println!("{}", args.snapshot);
    Ok(Outcome::Success)
}

pub async fn remove(client: &Client, args: InstanceSnapshotArgs) -> Result<Outcome> {
    client
        .delete(&format!(
            "/v1/instances/{}/snapshots/{}",
            encode(&args.instance),
            encode(&args.snapshot)
        ))
        .await?;
    println!("{}", args.snapshot);
    Ok(Outcome::Success)
}
