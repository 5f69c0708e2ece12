//! Network commands: create, ls, rm.

use anyhow::Result;
use berth_client::Client;
use berth_model::api::CreateNetworkRequest;
use berth_model::network::Network;

use crate::cli::{JsonArgs, NetworkCreateArgs, VolumeNamesArgs};
use crate::output::{ago, print_table};
use crate::{encode, Outcome};

pub async fn create(client: &Client, args: NetworkCreateArgs) -> Result<Outcome> {
    let network: Network = client
        .post(
            "/v1/networks",
            &CreateNetworkRequest {
                name: args.name,
                subnet: args.subnet,
                internal: args.internal,
            },
        )
        .await?;
    println!("{} {}", network.name, network.subnet);
    Ok(Outcome::Success)
}

pub async fn list(client: &Client, args: JsonArgs) -> Result<Outcome> {
    let networks: Vec<Network> = client.get("/v1/networks").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&networks)?);
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = networks
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.subnet.clone(),
                n.gateway.clone(),
                n.bridge.clone(),
                if n.internal { "internal" } else { "nat" }.to_string(),
                ago(n.created_at),
            ]
        })
        .collect();
    print_table(&["NETWORK", "SUBNET", "GATEWAY", "BRIDGE", "OUTSIDE", "CREATED"], &rows);
    Ok(Outcome::Success)
}

pub async fn remove(client: &Client, args: VolumeNamesArgs) -> Result<Outcome> {
    let mut failed = false;
    for name in &args.names {
        match client.delete(&format!("/v1/networks/{}", encode(name))).await {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { Outcome::Failure } else { Outcome::Success })
}
