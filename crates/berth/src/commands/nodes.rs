//! Node commands: ls, inspect, cordon, uncordon, drain.

use anyhow::Result;
use berth_client::Client;
use berth_model::node::{Node, NodeState};
use berth_model::Instance;

use crate::cli::{DrainArgs, JsonArgs, NodeNamesArgs, RebalanceArgs};
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

/// `berth node drain NAME`: starts the drain, then follows it until the node is empty
/// (cordoned) or only instances that cannot move are left.
pub async fn drain(client: &Client, args: DrainArgs) -> Result<Outcome> {
    let path = format!("/v1/nodes/{}", encode(&args.name));
    let body = client
        .post_empty(&format!("{path}/drain?parallel={}", args.parallel))
        .await?;
    let node: Node = serde_json::from_slice(&body)?;
    println!("{} {}", node.name, node.state.as_str());
    if args.detach {
        return Ok(Outcome::Success);
    }
    let began = std::time::Instant::now();
    let mut last_left = usize::MAX;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let node: Node = client.get(&path).await?;
        match node.state {
            NodeState::Cordoned => {
                println!(
                    "{} drained in {:.1} s: nothing runs on it; it stays cordoned (`berth node uncordon {}` takes it back)",
                    node.name,
                    began.elapsed().as_secs_f64(),
                    node.name
                );
                return Ok(Outcome::Success);
            }
            NodeState::Draining => {}
            other => anyhow::bail!(
                "node {} is {} now: the drain ended before the node was empty",
                node.name,
                other.as_str()
            ),
        }
        let instances: Vec<Instance> = client.get("/v1/instances").await?;
        let left: Vec<&Instance> = instances.iter().filter(|i| i.node == node.name).collect();
        if left.len() != last_left {
            eprintln!("{}: {} running instance(s) left", node.name, left.len());
            last_left = left.len();
        }
        let blocked = node.drain.map(|d| d.blocked).unwrap_or_default();
        if !left.is_empty() && left.iter().all(|i| blocked.contains_key(&i.name)) {
            for (name, why) in &blocked {
                eprintln!("  {name} stays: {why}");
            }
            eprintln!(
                "node {} stays draining until these are stopped or removed (`berth node uncordon {}` ends the drain)",
                node.name, node.name
            );
            return Ok(Outcome::Failure);
        }
    }
}

/// `berth cluster rebalance`: the plan (and, unless a dry run, each move's result).
pub async fn rebalance(client: &Client, args: RebalanceArgs) -> Result<Outcome> {
    let mut path = format!("/v1/cluster/rebalance?dry_run={}", args.dry_run);
    if let Some(threshold) = args.threshold {
        path.push_str(&format!("&threshold_percent={threshold}"));
    }
    let body = client.post_empty(&path).await?;
    let report: berth_model::api::RebalanceReport = serde_json::from_slice(&body)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let rows: Vec<Vec<String>> = report
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    format!("{:.1}%", n.load_percent),
                    format!("{:.2}", n.cpus),
                    size(n.memory_bytes),
                ]
            })
            .collect();
        print_table(&["NODE", "LOAD", "CPUS USED", "MEMORY USED"], &rows);
        println!(
            "mean load {:.1}%; nodes above {:.1}% are relieved",
            report.mean_load_percent,
            report.mean_load_percent + report.threshold_percent
        );
        if report.moves.is_empty() {
            println!("nothing to move");
        }
        for planned in &report.moves {
            let outcome = match (planned.moved, &planned.error) {
                (None, _) => "would move".to_string(),
                (Some(true), _) => format!("moved (down {} ms)", planned.downtime_ms.unwrap_or(0)),
                (Some(false), Some(error)) => format!("NOT moved: {error}"),
                (Some(false), None) => "NOT moved".to_string(),
            };
            println!(
                "{} {} -> {}: {outcome} ({})",
                planned.instance, planned.from, planned.to, planned.why
            );
        }
    }
    Ok(if report.moves.iter().any(|m| m.moved == Some(false)) {
        Outcome::Failure
    } else {
        Outcome::Success
    })
}
