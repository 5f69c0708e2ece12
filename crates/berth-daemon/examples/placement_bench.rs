//! Placements per second through berth's scheduler (`scheduler::BatchPlacer`) and a real etcd
//! against simulated nodes: agents that register (member record, presence on a lease of
//! their own), heartbeat (renew that lease every 3 s) and acknowledge (write a `running`
//! status for each instance placed on them, seen through a watch), running nothing. The
//! leader's way of placing: read the nodes once, place a batch in memory, write the
//! instance records (spec, status, name: the daemon's own record layout) in transactions
//! within etcd's 128-operation limit, several in flight.
//!
//! Run by `bench/placement.sh`, which starts the etcd cluster:
//! `placement_bench --etcd 127.0.0.1:2379,... --nodes 5000 --placements 100000`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_daemon::cluster::node_view;
use berth_daemon::scheduler::{BatchPlacer, Needs};
use berth_model::api::AllocationSummary;
use berth_model::instance::{InstanceSpec, Limits, ProcessSpec, Requests};
use berth_model::node::{NodeFingerprint, Schedulability};
use berth_model::quantity::MilliCpus;
use berth_model::{Instance, InstanceKind, InstanceState};
use berth_store::instance::split;
use berth_store::{
    EtcdConfig, EtcdStore, InstanceEvent, LeaseId, NodeFacts, NodeMember, NodePresence, RecordTxn, Store,
};
use chrono::Utc;

/// Instances per transaction: each is three records (spec, status, name), a compare and a
/// put each, so 42 stay within etcd's default of 128 operations a side.
const PER_TXN: usize = 42;
/// Acknowledgements per transaction (a compare and a put each).
const ACKS_PER_TXN: usize = 120;

struct Args {
    etcd: Vec<String>,
    nodes: usize,
    placements: usize,
    writers: usize,
}

fn args() -> Result<Args> {
    let mut parsed = Args {
        etcd: Vec::new(),
        nodes: 5000,
        placements: 100_000,
        writers: 8,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--etcd" => parsed.etcd = value.split(',').map(str::to_string).collect(),
            "--nodes" => parsed.nodes = value.parse().context("--nodes")?,
            "--placements" => parsed.placements = value.parse().context("--placements")?,
            "--writers" => parsed.writers = value.parse().context("--writers")?,
            other => bail!("unknown flag {other}; use --etcd HOST:PORT,... --nodes N --placements N --writers N"),
        }
    }
    if parsed.etcd.is_empty() {
        bail!("--etcd HOST:PORT[,HOST:PORT...] is required");
    }
    Ok(parsed)
}

fn facts() -> NodeFacts {
    NodeFacts {
        address: Some("192.0.2.1:7380".into()),
        labels: Default::default(),
        fingerprint: NodeFingerprint {
            kinds: vec![InstanceKind::Container],
            ..Default::default()
        },
        allocated: AllocationSummary {
            capacity_cpus: 64.0,
            capacity_memory_bytes: 256 << 30,
            ..Default::default()
        },
        instances: 0,
        images: vec!["docker.io/library/busybox:latest".into()],
        volumes: Vec::new(),
        networks: Vec::new(),
        drain_blocked: Default::default(),
        usage: None,
        published_at: Utc::now(),
    }
}

/// The record of instance `i` placed on `node`, as the daemon writes one.
fn instance(i: usize, node: &str) -> Instance {
    Instance {
        id: format!("{:064x}", (i as u128) << 64 | rand::random::<u64>() as u128),
        name: format!("bench-{i}"),
        kind: InstanceKind::Container,
        image: "busybox".into(),
        state: InstanceState::Created,
        exit_code: None,
        oom_killed: false,
        pid: None,
        supervisor_pid: None,
        limits: Limits {
            cpus: Some(MilliCpus(100)),
            memory_bytes: Some(64 << 20),
            pids: Some(512),
            network_bits_per_second: None,
        },
        requests: Requests {
            cpus: Some(MilliCpus(10)),
            memory_bytes: Some(16 << 20),
        },
        instance_type: None,
        default_limits: Vec::new(),
        spec: InstanceSpec {
            kind: InstanceKind::Container,
            image: "busybox".into(),
            // A real id is 71 characters; the records are as large as the daemon's.
            image_id: format!("sha256:{}", "0".repeat(64)),
            process: ProcessSpec {
                args: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            },
            hostname: "bench".into(),
            auto_remove: false,
            labels: Default::default(),
            instance_storage_bytes: Vec::new(),
            disk_bytes: None,
            volumes: Vec::new(),
            mounts: Vec::new(),
            network: "none".into(),
            ports: Vec::new(),
            seccomp_unconfined: false,
            log: Default::default(),
            placement: None,
            restart: Default::default(),
            constraints: Vec::new(),
            spread_by: None,
            healthcheck: None,
        },
        node: node.to_string(),
        created_at: Utc::now(),
        started_at: None,
        finished_at: None,
        restart_count: 0,
        error: None,
        vm: None,
        address: None,
        rescheduled: None,
        health: None,
    }
}

/// Runs `jobs` with at most `limit` in flight.
async fn bounded<F>(jobs: Vec<F>, limit: usize) -> Result<()>
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    use futures_util::StreamExt;
    let mut stream = futures_util::stream::iter(jobs).buffer_unordered(limit);
    while let Some(done) = stream.next().await {
        done?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = args()?;
    let mut config = EtcdConfig::new(args.etcd.clone());
    config.request_timeout = Duration::from_secs(30);
    let store = Store::new(Arc::new(
        EtcdStore::connect(&config).await.context("connecting to etcd")?,
    ));
    // The simulated nodes are other machines: their clients talk to the other members, as
    // nodes spread over a cluster's members would (each node lists the endpoints in its own
    // order; the first is the one it uses while it answers). With one endpoint, all share it.
    let mut agent_stores = Vec::new();
    for rotation in 1..args.etcd.len().max(2) {
        let mut endpoints = args.etcd.clone();
        endpoints.rotate_left(rotation % args.etcd.len().max(1));
        let mut config = EtcdConfig::new(endpoints);
        config.request_timeout = Duration::from_secs(30);
        agent_stores.push(Store::new(Arc::new(
            EtcdStore::connect(&config).await.context("connecting to etcd")?,
        )));
    }
    let names: Vec<String> = (0..args.nodes).map(|i| format!("sim{i:05}")).collect();

    // Agents register: a member record each (64 to a transaction), a lease each, and a
    // presence on it.
    let began = Instant::now();
    let mut jobs = Vec::new();
    for chunk in names.chunks(64) {
        let store = store.clone();
        let chunk = chunk.to_vec();
        jobs.push(async move {
            let mut txn = RecordTxn::new();
            for name in &chunk {
                txn = txn.create(&NodeMember {
                    name: name.clone(),
                    node_id: name.clone(),
                    schedulability: Schedulability::Schedulable,
                    drain_parallel: None,
                    joined_at: Utc::now(),
                    facts: facts(),
                })?;
            }
            store.commit(txn).await?;
            Ok(())
        });
    }
    bounded(jobs, 16).await?;
    let leases: Arc<tokio::sync::Mutex<Vec<LeaseId>>> = Arc::default();
    let mut jobs = Vec::new();
    for chunk in names.chunks(64) {
        let (store, chunk, leases) = (store.clone(), chunk.to_vec(), leases.clone());
        jobs.push(async move {
            let mut txn = RecordTxn::new();
            for name in &chunk {
                let lease = store.kv().grant_lease(Duration::from_secs(10)).await?;
                leases.lock().await.push(lease.id);
                let presence = NodePresence {
                    name: name.clone(),
                    node_id: name.clone(),
                    since: Utc::now(),
                };
                txn = txn.put_with_lease(&presence, lease.id)?;
            }
            store.commit(txn).await?;
            Ok(())
        });
    }
    bounded(jobs, 16).await?;
    let leases = Arc::new(leases.lock().await.clone());
    println!(
        "{} simulated nodes registered in {:.1} s",
        args.nodes,
        began.elapsed().as_secs_f64()
    );

    // Heartbeats: every lease renewed every 3 s, for as long as the run lasts.
    let renewals = Arc::new(AtomicU64::new(0));
    let missed = Arc::new(AtomicU64::new(0));
    let heartbeat = {
        let (stores, leases, renewals, missed) =
            (agent_stores.clone(), leases.clone(), renewals.clone(), missed.clone());
        tokio::spawn(async move {
            loop {
                let round = Instant::now();
                let jobs: Vec<_> = leases
                    .iter()
                    .enumerate()
                    .map(|(i, &lease)| {
                        let store = stores[i % stores.len()].clone();
                        let (renewals, missed) = (renewals.clone(), missed.clone());
                        async move {
                            // A renewal that fails is counted out; the round goes on.
                            if store.kv().keep_alive(lease).await.is_ok() {
                                renewals.fetch_add(1, Ordering::Relaxed);
                            } else {
                                missed.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(())
                        }
                    })
                    .collect();
                let _ = bounded(jobs, 64).await;
                tokio::time::sleep(Duration::from_secs(3).saturating_sub(round.elapsed())).await;
            }
        })
    };

    // Agents acknowledge what is placed on them: a watch, statuses written in batches.
    let (_, start_revision) = store.instances().await?;
    let acked = Arc::new(AtomicU64::new(0));
    let ack_writes = Arc::new(AtomicU64::new(0));
    let rewatches = Arc::new(AtomicU64::new(0));
    let acks = {
        let (store, acked, ack_writes, rewatches) = (
            agent_stores[agent_stores.len() - 1].clone(),
            acked.clone(),
            ack_writes.clone(),
            rewatches.clone(),
        );
        let total = args.placements as u64;
        let mut watch = store.watch_instances(start_revision + 1).await?;
        tokio::spawn(async move {
            let mut pending = Vec::new();
            let mut last_flush = Instant::now();
            let mut last_event = Instant::now();
            let mut seen = start_revision;
            let mut taken = std::collections::HashSet::new();
            while acked.load(Ordering::Relaxed) < total {
                if last_event.elapsed() > Duration::from_secs(30) {
                    anyhow::bail!(
                        "no placement seen for 30 s; {} of {total} acknowledged",
                        acked.load(Ordering::Relaxed)
                    );
                }
                let event = tokio::time::timeout(Duration::from_millis(20), watch.next()).await;
                match event {
                    Ok(Some(Ok(InstanceEvent::Status(status)))) => {
                        last_event = Instant::now();
                        seen = seen.max(status.revision);
                        if status.value.state == InstanceState::Created && taken.insert(status.value.id.clone()) {
                            pending.push(*status);
                        }
                    }
                    Ok(Some(Ok(_))) | Err(_) => {}
                    // A watch etcd or the connection ended: an agent watches again from
                    // the last revision it saw (whose other keys may not have come yet).
                    broken => {
                        eprintln!("the agents' watch ended ({broken:?}); watching again from revision {seen}");
                        rewatches.fetch_add(1, Ordering::Relaxed);
                        watch = store.watch_instances(seen).await?;
                    }
                }
                if pending.len() >= ACKS_PER_TXN
                    || (!pending.is_empty() && last_flush.elapsed() > Duration::from_millis(20))
                {
                    let mut txn = RecordTxn::new();
                    let batch: Vec<_> = pending.drain(..pending.len().min(ACKS_PER_TXN)).collect();
                    for status in &batch {
                        let mut running = status.value.clone();
                        running.state = InstanceState::Running;
                        running.started_at = Some(Utc::now());
                        txn = txn.update(&running, status.revision)?;
                    }
                    store.commit(txn).await?;
                    ack_writes.fetch_add(1, Ordering::Relaxed);
                    acked.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    last_flush = Instant::now();
                }
            }
            Ok::<_, anyhow::Error>(())
        })
    };

    // The scheduler: the nodes as the cluster's records show them, then placements in
    // batches written by several writers.
    let began = Instant::now();
    // As `Membership::nodes` reads them: both ranges at once.
    let (members, presences) = tokio::join!(store.list::<NodeMember>(), store.list::<NodePresence>());
    let (members, presences) = (members?, presences?);
    let alive: std::collections::HashSet<String> = presences.items.iter().map(|p| p.value.name.clone()).collect();
    let nodes: Vec<_> = members
        .items
        .into_iter()
        .filter(|m| names.binary_search(&m.value.name).is_ok())
        .map(|m| {
            let up = alive.contains(&m.value.name);
            node_view(m.value, up, "")
        })
        .collect();
    let read_nodes = began.elapsed();
    let mut placer = BatchPlacer::new(&nodes, &[]);
    let needs = Needs {
        kind: InstanceKind::Container,
        image: "busybox",
        reservation: berth_daemon::admission::Reservation {
            millicpus: 10,
            memory_bytes: 16 << 20,
            instance_storage_bytes: 0,
        },
        node: None,
        constraints: Vec::new(),
        strategy: Default::default(),
        volumes: Vec::new(),
        network: None,
        spread_by: None,
        ports: Vec::new(),
    };
    let has_image = |node: &berth_model::node::Node| node.images.iter().any(|i| i.ends_with("busybox:latest"));
    let (sender, receiver) = tokio::sync::mpsc::channel::<RecordTxn>(args.writers * 4);
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let txns = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..args.writers {
        let (store, receiver, txns) = (store.clone(), receiver.clone(), txns.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let Some(txn) = receiver.lock().await.recv().await else {
                    return Ok::<_, anyhow::Error>(());
                };
                store.commit(txn).await?;
                txns.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut per_node: HashMap<String, usize> = HashMap::new();
    let mut placing = Duration::ZERO;
    let mut batch = RecordTxn::new();
    let mut in_batch = 0;
    for i in 0..args.placements {
        let one = Instant::now();
        let (node, _why) = placer
            .place(&needs, has_image)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        placing += one.elapsed();
        let record = instance(i, &node);
        *per_node.entry(node).or_default() += 1;
        let (desired, status) = split(&record);
        batch = batch.create(&desired)?.create(&status)?;
        in_batch += 1;
        if in_batch == PER_TXN {
            sender.send(std::mem::take(&mut batch)).await.context("writer ended")?;
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        sender.send(batch).await.context("writer ended")?;
    }
    drop(sender);
    for writer in writers {
        writer.await??;
    }
    let placed = began.elapsed();
    let rate = args.placements as f64 / placed.as_secs_f64();
    let steady = args.placements as f64 / placed.saturating_sub(read_nodes).as_secs_f64();
    tokio::time::timeout(Duration::from_secs(600), acks)
        .await
        .context("acknowledgements")???;
    let acked_at = began.elapsed();
    heartbeat.abort();
    let renewed = renewals.load(Ordering::Relaxed) as f64 / acked_at.as_secs_f64().max(1.0);
    let txn_count = txns.load(Ordering::Relaxed);
    // What one placement writes: the two records (JSON, as the store encodes them).
    let (desired, status) = split(&instance(0, "n00000"));
    let record_bytes = serde_json::to_vec(&desired)?.len() + serde_json::to_vec(&status)?.len();
    let (fewest, most) = (
        per_node.values().min().copied().unwrap_or(0),
        per_node.values().max().copied().unwrap_or(0),
    );
    println!(
        "{} placements on {} nodes: {:.2} s, {:.0} placements/s ({:.0}/s after reading the nodes in {:.2} s; scheduler alone {:.3} s, {:.2} µs a placement, {} nodes looked at)",
        args.placements,
        nodes.len(),
        placed.as_secs_f64(),
        rate,
        steady,
        read_nodes.as_secs_f64(),
        placing.as_secs_f64(),
        placing.as_secs_f64() * 1e6 / args.placements as f64,
        placer.evaluated,
    );
    println!(
        "etcd writes: {txn_count} placement transactions ({:.3} per placement, 3 keys and {record_bytes} bytes of records each), {} acknowledgement transactions; all acknowledged {:.2} s after the first placement",
        txn_count as f64 / args.placements as f64,
        ack_writes.load(Ordering::Relaxed),
        acked_at.as_secs_f64()
    );
    println!(
        "heartbeats: {renewed:.0} lease renewals/s meanwhile ({} missed); spread: {fewest} to {most} instances a node; the agents' watch resumed {} times",
        missed.load(Ordering::Relaxed),
        rewatches.load(Ordering::Relaxed)
    );
    println!(
        "berth / Nomad C1M (3,750/s): {:.2}; berth / Nomad C2M (~1,500/s): {:.2}; berth / Kubernetes (~100 pods/s): {:.0}",
        rate / 3750.0,
        rate / 1500.0,
        rate / 100.0
    );
    Ok(())
}
