//! Volume commands: create, ls, inspect, rm, snapshot, restore.

use anyhow::Result;
use berth_client::Client;
use berth_model::api::{CreateVolumeRequest, SnapshotRequest};
use berth_model::volume::Volume;

use crate::cli::{ImageLsArgs, VolumeCreateArgs, VolumeNamesArgs, VolumeRmArgs, VolumeSnapshotArgs};
use crate::output::{ago, print_table, size};
use crate::{encode, Outcome};

pub async fn create(client: &Client, args: VolumeCreateArgs) -> Result<Outcome> {
    let volume: Volume = client
        .post(
            "/v1/volumes",
            &CreateVolumeRequest {
                name: args.name,
                size_bytes: args.size.map(|s| s.bytes()),
                driver: Some(args.driver),
                options: args.options.into_iter().collect(),
            },
        )
        .await?;
    println!("{}", volume.name);
    Ok(Outcome::Success)
}

pub async fn list(client: &Client, args: ImageLsArgs) -> Result<Outcome> {
    let volumes: Vec<Volume> = client.get("/v1/volumes").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&volumes)?);
    } else if args.quiet {
        for volume in &volumes {
            println!("{}", volume.name);
        }
    } else {
        let rows: Vec<Vec<String>> = volumes
            .iter()
            .map(|v| {
                vec![
                    v.name.clone(),
                    v.driver.clone(),
                    size(v.size_bytes),
                    v.snapshots.len().to_string(),
                    ago(v.created_at),
                ]
            })
            .collect();
        print_table(&["VOLUME", "DRIVER", "SIZE", "SNAPSHOTS", "CREATED"], &rows);
    }
    Ok(Outcome::Success)
}

pub async fn inspect(client: &Client, args: VolumeNamesArgs) -> Result<Outcome> {
    let mut found = Vec::new();
    for name in &args.names {
        found.push(client.get::<Volume>(&format!("/v1/volumes/{}", encode(name))).await?);
    }
    println!("{}", serde_json::to_string_pretty(&found)?);
    Ok(Outcome::Success)
}

pub async fn remove(client: &Client, args: VolumeRmArgs) -> Result<Outcome> {
    let mut failed = false;
    let force = if args.force { "?force=true" } else { "" };
    for name in &args.names {
        match client.delete(&format!("/v1/volumes/{}{force}", encode(name))).await {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { Outcome::Failure } else { Outcome::Success })
}

pub async fn snapshot(client: &Client, args: VolumeSnapshotArgs) -> Result<Outcome> {
    if args.rm {
        client
            .delete(&format!(
                "/v1/volumes/{}/snapshots/{}",
                encode(&args.volume),
                encode(&args.snapshot)
            ))
            .await?;
    } else {
        let _: Volume = client
            .post(
                &format!("/v1/volumes/{}/snapshots", encode(&args.volume)),
                &SnapshotRequest {
                    name: args.snapshot.clone(),
                },
            )
            .await?;
    }
    println!("{}", args.snapshot);
    Ok(Outcome::Success)
}

pub async fn restore(client: &Client, args: VolumeSnapshotArgs) -> Result<Outcome> {
    let _: Volume = client
        .post(
            &format!("/v1/volumes/{}/restore", encode(&args.volume)),
            &SnapshotRequest {
                name: args.snapshot.clone(),
            },
        )
        .await?;
    println!("{}", args.volume);
    Ok(Outcome::Success)
}
