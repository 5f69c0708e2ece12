//! Node commands: ls, inspect, cordon, uncordon, drain.

use anyhow::Result;
use berth_client::Client;
use berth_model::node::Node;

use crate::cli::{JsonArgs, NodeNamesArgs};
use crate::output::{ago, print_table, size};
use crate::{encode, Outcome};

pub async fn list(client: &Client, args: JsonArgs) -> Result<Outcome> {
    let nodes: Vec<Node> = client.get("/v1/nodes").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let a = &n.allocated;
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                if n.this_node {
                    format!("{} *", n.name)
                } else {
                    n.name.clone()
                },
                n.state.as_str().to_string(),
                n.address.clone().unwrap_or_else(|| "-".into()),
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                },
                format!("{:.1}/{:.1}", a.cpus, a.capacity_cpus),
                format!("{}/{}", size(a.memory_bytes), size(a.capacity_memory_bytes)),
                n.instances.to_string(),
                ago(n.heartbeat_at),
            ]
        })
        .collect();
    print_table(
        &[
            "NODE",
            "STATE",
            "ADDRESS",
            "LABELS",
            "CPUS",
            "MEMORY",
            "INSTANCES",
            "PUBLISHED",
        ],
        &rows,
    );
    Ok(Outcome::Success)
}

pub async fn inspect(client: &Client, args: NodeNamesArgs) -> Result<Outcome> {
    let mut nodes = Vec::new();
    let mut failed = false;
    for name in &args.names {
        match client.get::<Node>(&format!("/v1/nodes/{}", encode(name))).await {
            Ok(node) => nodes.push(node),
            Err(e) => {
                eprintln!("berth: error: {e}");
                failed = true;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&nodes)?);
    Ok(if failed { Outcome::Failure } else { Outcome::Success })
}

/// `cordon`, `uncordon` or `drain` each named node; prints each name and its new state.
pub async fn act(client: &Client, args: NodeNamesArgs, action: &str) -> Result<Outcome> {
    let mut failed = false;
    for name in &args.names {
        let answer = client.post_empty(&format!("/v1/nodes/{}/{action}", encode(name))).await;
        match answer
            .map_err(anyhow::Error::from)
            .and_then(|body| Ok(serde_json::from_slice::<Node>(&body)?))
        {
            Ok(node) => println!("{} {}", node.name, node.state.as_str()),
            Err(e) => {
                eprintln!("berth: error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { Outcome::Failure } else { Outcome::Success })
}
