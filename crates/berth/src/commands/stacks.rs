//! `berth apply`, `berth diff` and `berth stack ls|ps|rm`: a Compose file's services as
//! instances labelled with their stack, service and definition hash (`berth_compose`).
//! `apply` compares the file with the stack's instances and changes only what differs:
//! missing replicas are created, replicas of a changed service replaced replica by replica
//! (`deploy.update_config`: `parallelism`, `order`, `failure_action: rollback`), each gated
//! on its health check (or, without one, on running and still running after a short watch),
//! replicas and services no longer in the file removed. Run twice, the second run changes
//! nothing. The stack's record in the store says what the last apply asked for.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_client::Client;
use berth_compose::{Condition, Service, Stack, HASH_LABEL, SERVICE_LABEL, STACK_LABEL};
use berth_model::api::CreateInstanceRequest;
use berth_model::health::{HealthCheck, HealthStatus};
use berth_model::stack::{StackRecord, StackService, REQUEST_LABEL};
use berth_model::{Instance, InstanceState};

use crate::cli::*;
use crate::output::print_table;
use crate::{encode, Outcome};

/// How long a new replica must keep running before the next one is replaced.
const MONITOR: Duration = Duration::from_secs(2);
/// Replicas of a service created at once.
const STARTS_AT_ONCE: usize = 8;
/// How long a replica may take to run (a VM boots under TCG in seconds).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// One change `apply` makes.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    Create {
        service: usize,
        replica: usize,
    },
    Replace {
        service: usize,
        replica: usize,
        old: String,
    },
    Start {
        name: String,
    },
    Remove {
        name: String,
        why: String,
    },
    Unchanged {
        name: String,
    },
}

fn read_stack(file: &Path, name: Option<&str>) -> Result<Stack> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let env_files = |path: &str| std::fs::read_to_string(dir.join(path));
    let stack = berth_compose::parse(&text, name, &env_files).with_context(|| format!("{}", file.display()))?;
    if !stack.unsupported.is_empty() {
        eprintln!(
            "berth: {} keys of {} are not used: {}",
            stack.unsupported.len(),
            file.display(),
            stack.unsupported.join(", ")
        );
    }
    Ok(stack)
}

async fn stack_instances(client: &Client, stack: &str) -> Result<Vec<Instance>> {
    let all: Vec<Instance> = client.get("/v1/instances?all=true").await?;
    Ok(all
        .into_iter()
        .filter(|i| i.spec.labels.get(STACK_LABEL).map(String::as_str) == Some(stack))
        .collect())
}

/// The replica index in `STACK-SERVICE-N` or `STACK-SERVICE-N-gG`.
fn replica_of(name: &str, stack: &str, service: &str) -> Option<(usize, usize)> {
    let rest = name.strip_prefix(&format!("{stack}-{service}-"))?;
    let (index, generation) = match rest.split_once("-g") {
        Some((index, generation)) => (index, generation.parse().ok()?),
        None => (rest, 1),
    };
    Some((index.parse().ok()?, generation))
}

fn plan(stack: &Stack, current: &[Instance]) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut kept: Vec<&str> = Vec::new();
    for (s, service) in stack.services.iter().enumerate() {
        let mine: Vec<&Instance> = current
            .iter()
            .filter(|i| i.spec.labels.get(SERVICE_LABEL) == Some(&service.name))
            .collect();
        for (r, _) in service.replicas.iter().enumerate() {
            let found = mine
                .iter()
                .find(|i| replica_of(&i.name, &stack.name, &service.name).map(|(index, _)| index) == Some(r + 1));
            match found {
                None => changes.push(Change::Create { service: s, replica: r }),
                Some(instance) => {
                    kept.push(&instance.name);
                    if instance.spec.labels.get(HASH_LABEL) != Some(&service.hash) {
                        changes.push(Change::Replace {
                            service: s,
                            replica: r,
                            old: instance.name.clone(),
                        });
                    } else if instance.state.is_active() {
                        changes.push(Change::Unchanged {
                            name: instance.name.clone(),
                        });
                    } else {
                        changes.push(Change::Start {
                            name: instance.name.clone(),
                        });
                    }
                }
            }
        }
    }
    for instance in current {
        if !kept.contains(&instance.name.as_str()) {
            let service = instance.spec.labels.get(SERVICE_LABEL).cloned().unwrap_or_default();
            let why = if stack.services.iter().any(|s| s.name == service) {
                "fewer replicas".to_string()
            } else {
                format!("service {service} is not in the file")
            };
            changes.push(Change::Remove {
                name: instance.name.clone(),
                why,
            });
        }
    }
    changes
}

fn describe(stack: &Stack, change: &Change) -> Option<String> {
    let name = |s: usize, r: usize| stack.services[s].replicas[r].name.clone().unwrap_or_default();
    Some(match change {
        Change::Create { service, replica } => format!("+ create {}", name(*service, *replica)),
        Change::Replace { old, .. } => format!("~ replace {old} (its service's definition changed)"),
        Change::Start { name } => format!("> start {name} (stopped)"),
        Change::Remove { name, why } => format!("- remove {name} ({why})"),
        Change::Unchanged { .. } => return None,
    })
}

pub async fn diff(client: &Client, args: DiffArgs) -> Result<Outcome> {
    let stack = read_stack(&args.file, args.name.as_deref())?;
    let current = stack_instances(client, &stack.name).await?;
    let changes = plan(&stack, &current);
    let lines: Vec<String> = changes.iter().filter_map(|c| describe(&stack, c)).collect();
    if lines.is_empty() {
        println!("stack {}: up to date", stack.name);
    }
    for line in &lines {
        println!("{line}");
    }
    Ok(Outcome::Success)
}

pub async fn apply(client: &Client, args: ApplyArgs) -> Result<Outcome> {
    let stack = read_stack(&args.file, args.name.as_deref())?;
    let current = stack_instances(client, &stack.name).await?;
    let changes = plan(&stack, &current);
    if args.dry_run {
        for line in changes.iter().filter_map(|c| describe(&stack, c)) {
            println!("{line}");
        }
        return Ok(Outcome::Success);
    }
    // The desired state first, as `kubectl apply` writes it before the roll-out.
    let record = stack_record(&stack);
    let _: StackRecord = client
        .put(&format!("/v1/stacks/{}", encode(&stack.name)), &record)
        .await
        .with_context(|| format!("keeping stack {}", stack.name))?;
    // Networks first (named volumes are made where their first user goes).
    let networks: Vec<berth_model::network::Network> = client.get("/v1/networks").await?;
    for network in &stack.networks {
        if !networks.iter().any(|n| &n.name == network) {
            let _: berth_model::network::Network = client
                .post("/v1/networks", &serde_json::json!({ "name": network }))
                .await
                .with_context(|| format!("creating network {network}"))?;
            println!("+ network {network}");
        }
    }
    let mut changed = 0;
    let mut created: Vec<String> = Vec::new();
    for (s, service) in stack.services.iter().enumerate() {
        wait_for_dependencies(client, &stack, service).await?;
        let creates: Vec<usize> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Create { service, replica } if *service == s => Some(*replica),
                _ => None,
            })
            .collect();
        // A service's missing replicas start together, `STARTS_AT_ONCE` at a time; their
        // health is waited for once everything runs (`docker compose up --wait`), or by a
        // dependent service's `service_healthy`.
        let requests: Vec<CreateInstanceRequest> = creates
            .iter()
            .map(|replica| with_request_label(&service.replicas[*replica]))
            .collect();
        for batch in requests.chunks(STARTS_AT_ONCE) {
            let mut starting = tokio::task::JoinSet::new();
            for request in batch {
                let (client, request) = (client.clone(), request.clone());
                starting.spawn(async move { start_replica(&client, &request).await });
            }
            while let Some(started) = starting.join_next().await {
                let name = started.context("starting a replica")??;
                println!("+ {name}");
                changed += 1;
                created.push(name);
            }
        }
        for change in &changes {
            if let Change::Start { name } = change {
                if current
                    .iter()
                    .any(|i| &i.name == name && i.spec.labels.get(SERVICE_LABEL) == Some(&service.name))
                {
                    client
                        .post_empty(&format!("/v1/instances/{}/start", encode(name)))
                        .await?;
                    wait_running(client, name).await?;
                    println!("> {name}");
                    changed += 1;
                }
            }
        }
        let replaces: Vec<(usize, String)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Replace { service, replica, old } if *service == s => Some((*replica, old.clone())),
                _ => None,
            })
            .collect();
        for batch in replaces.chunks(service.update.parallelism.max(1)) {
            for (replica, old) in batch {
                replace(client, &stack, service, *replica, old, &current).await?;
                changed += 1;
            }
        }
    }
    for change in &changes {
        if let Change::Remove { name, why } = change {
            client
                .delete(&format!("/v1/instances/{}?force=true", encode(name)))
                .await?;
            println!("- {name} ({why})");
            changed += 1;
        }
    }
    // What was created passes its gate before apply returns.
    let mut gates = tokio::task::JoinSet::new();
    for name in created {
        let client = client.clone();
        gates.spawn(async move { wait_running(&client, &name).await });
    }
    while let Some(gate) = gates.join_next().await {
        gate.context("waiting for a replica")??;
    }
    if changed == 0 {
        println!("stack {}: up to date", stack.name);
    }
    Ok(Outcome::Success)
}

/// What the store keeps of `stack`.
fn stack_record(stack: &Stack) -> StackRecord {
    StackRecord {
        name: stack.name.clone(),
        services: stack
            .services
            .iter()
            .map(|service| {
                let first = service.replicas.first();
                StackService {
                    name: service.name.clone(),
                    kind: first.map_or(berth_model::InstanceKind::Container, |r| r.kind),
                    image: first.map(|r| r.image.clone()).unwrap_or_default(),
                    replicas: service.replicas.len() as u32,
                    hash: service.hash.clone(),
                    depends_on: service.depends_on.clone(),
                    healthcheck: service.healthcheck,
                }
            })
            .collect(),
        unsupported: stack.unsupported.clone(),
        applied_at: chrono::Utc::now(),
    }
}

/// The request with itself as a label, so a later rollback can make it again.
fn with_request_label(request: &CreateInstanceRequest) -> CreateInstanceRequest {
    let mut labelled = request.clone();
    if let Ok(text) = serde_json::to_string(request) {
        if text.len() <= berth_model::api::MAX_LABEL_VALUE {
            labelled.labels.insert(REQUEST_LABEL.into(), text);
        }
    }
    labelled
}

/// Creates and starts a replica and waits for its gate (`wait_running`).
async fn run_replica(client: &Client, request: &CreateInstanceRequest) -> Result<()> {
    let name = start_replica(client, request).await?;
    wait_running(client, &name).await
}

/// Creates and starts a replica, until it runs; its name.
async fn start_replica(client: &Client, request: &CreateInstanceRequest) -> Result<String> {
    let name = request.name.clone().unwrap_or_default();
    let created: berth_model::api::CreatedResponse = client
        .post("/v1/instances", request)
        .await
        .with_context(|| format!("creating {name}"))?;
    for warning in &created.warnings {
        eprintln!("warning: {name}: {warning}");
    }
    client
        .post_empty(&format!("/v1/instances/{}/start", encode(&created.id)))
        .await
        .with_context(|| format!("starting {name}"))?;
    wait_started(client, &name).await?;
    Ok(name)
}

/// Until `name` runs (an error if it ends or cannot start).
async fn wait_started(client: &Client, name: &str) -> Result<Instance> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let instance: Instance = client.get(&format!("/v1/instances/{}", encode(name))).await?;
        match instance.state {
            InstanceState::Running => return Ok(instance),
            InstanceState::Created if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            state => bail!(
                "{name} is {state}{}",
                instance.error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
        }
    }
}

/// The gate a rollout waits on: with a health check, healthy; without, running and still
/// running after `MONITOR`.
async fn wait_running(client: &Client, name: &str) -> Result<()> {
    let instance = wait_started(client, name).await?;
    if let Some(check) = &instance.spec.healthcheck {
        return wait_healthy(client, name, check).await;
    }
    tokio::time::sleep(MONITOR).await;
    let instance: Instance = client.get(&format!("/v1/instances/{}", encode(name))).await?;
    if instance.state != InstanceState::Running {
        bail!(
            "{name} ended within {} s of starting (exit code {})",
            MONITOR.as_secs(),
            instance
                .exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into())
        );
    }
    Ok(())
}

/// Until `name` passes its health check: an error when it is unhealthy (with its last
/// check's output), stops, or is not healthy within its start period and `retries` checks.
async fn wait_healthy(client: &Client, name: &str, check: &HealthCheck) -> Result<()> {
    let allowed = Duration::from_millis(
        check
            .start_period_ms
            .saturating_add((check.interval_ms + check.timeout_ms).saturating_mul(u64::from(check.retries) + 1)),
    );
    let deadline = Instant::now() + allowed.max(START_TIMEOUT);
    loop {
        let instance: Instance = client.get(&format!("/v1/instances/{}", encode(name))).await?;
        let last = || {
            instance
                .health
                .as_ref()
                .and_then(|h| h.log.last())
                .map(|p| format!(" (last check: exit code {}, {})", p.exit_code, p.output.trim()))
                .unwrap_or_default()
        };
        if !instance.state.is_active() {
            bail!("{name} stopped before it was healthy: {}", instance.state);
        }
        match instance.health.as_ref().map(|h| h.status) {
            Some(HealthStatus::Healthy) => return Ok(()),
            Some(HealthStatus::Unhealthy) => bail!("{name} is unhealthy{}", last()),
            _ if Instant::now() >= deadline => {
                bail!(
                    "{name} was not healthy within {} s{}",
                    allowed.max(START_TIMEOUT).as_secs(),
                    last()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits for what `service` asks of its dependencies beyond running (`service_healthy`,
/// `service_completed_successfully`), whether their replicas changed in this apply or not.
async fn wait_for_dependencies(client: &Client, stack: &Stack, service: &Service) -> Result<()> {
    for (dependency, condition) in &service.conditions {
        let replicas: Vec<Instance> = stack_instances(client, &stack.name)
            .await?
            .into_iter()
            .filter(|i| i.spec.labels.get(SERVICE_LABEL) == Some(dependency))
            .collect();
        for replica in replicas {
            match condition {
                Condition::Started => {}
                Condition::Healthy => {
                    let check = replica.spec.healthcheck.clone().ok_or_else(|| {
                        anyhow::anyhow!(
                            "{} has no health check for {}'s service_healthy",
                            replica.name,
                            service.name
                        )
                    })?;
                    wait_healthy(client, &replica.name, &check)
                        .await
                        .with_context(|| format!("{} waits for {dependency} to be healthy", service.name))?;
                }
                Condition::CompletedSuccessfully => {
                    let reply = client
                        .post_empty(&format!("/v1/instances/{}/wait", encode(&replica.name)))
                        .await?;
                    let done: berth_model::api::WaitResponse =
                        serde_json::from_slice(&reply).with_context(|| format!("waiting for {}", replica.name))?;
                    if done.exit_code != 0 {
                        bail!(
                            "{} waits for {dependency} to complete successfully; {} exited with {}",
                            service.name,
                            replica.name,
                            done.exit_code
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// Replaces one replica: stop-first (the old goes, the new comes under the same name) or
/// start-first (the new runs under the next generation's name before the old goes). On
/// failure with `failure_action: rollback`, the old definition runs again.
async fn replace(
    client: &Client,
    stack: &Stack,
    service: &Service,
    replica: usize,
    old: &str,
    current: &[Instance],
) -> Result<()> {
    let previous = current
        .iter()
        .find(|i| i.name == old)
        .and_then(|i| i.spec.labels.get(REQUEST_LABEL))
        .and_then(|text| serde_json::from_str::<CreateInstanceRequest>(text).ok());
    let mut request = with_request_label(&service.replicas[replica]);
    let outcome = if service.update.start_first {
        let generation = replica_of(old, &stack.name, &service.name).map_or(1, |(_, g)| g) + 1;
        let name = format!("{}-{}-{}-g{generation}", stack.name, service.name, replica + 1);
        request.name = Some(name.clone());
        let started = run_replica(client, &request).await;
        if started.is_ok() {
            client
                .delete(&format!("/v1/instances/{}?force=true", encode(old)))
                .await?;
            println!("~ {old} -> {name}");
        } else {
            let _ = client
                .delete(&format!("/v1/instances/{}?force=true", encode(&name)))
                .await;
        }
        started
    } else {
        client
            .delete(&format!("/v1/instances/{}?force=true", encode(old)))
            .await?;
        request.name = Some(old.to_string());
        let started = run_replica(client, &request).await;
        if started.is_ok() {
            println!("~ {old}");
        } else {
            let _ = client
                .delete(&format!("/v1/instances/{}?force=true", encode(old)))
                .await;
        }
        started
    };
    let Err(failure) = outcome else { return Ok(()) };
    if service.update.rollback {
        if let Some(mut previous) = previous {
            if !service.update.start_first {
                previous.name = Some(old.to_string());
                run_replica(client, &with_request_label(&previous))
                    .await
                    .with_context(|| format!("rolling {old} back"))?;
            }
            bail!("{failure:#}; rolled back: {old} runs its previous definition; the update stopped");
        }
        bail!("{failure:#}; {old}'s previous definition is unknown (too large to keep), so it was not rolled back");
    }
    Err(failure)
}

pub async fn list(client: &Client, args: StackLsArgs) -> Result<Outcome> {
    let records: Vec<StackRecord> = client.get("/v1/stacks").await?;
    let all: Vec<Instance> = client.get("/v1/instances?all=true").await?;
    // Desired replicas from the records; instances of stacks without one (an apply that
    // never finished writing it) are listed too.
    let mut stacks: BTreeMap<String, (usize, u32, usize, usize)> = records
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                (r.services.len(), r.services.iter().map(|s| s.replicas).sum(), 0, 0),
            )
        })
        .collect();
    for instance in &all {
        let Some(stack) = instance.spec.labels.get(STACK_LABEL) else {
            continue;
        };
        let entry = stacks.entry(stack.clone()).or_default();
        entry.2 += 1;
        if instance.state == InstanceState::Running {
            entry.3 += 1;
        }
    }
    if args.json {
        let rows: Vec<_> = stacks
            .iter()
            .map(|(name, (services, desired, total, running))| {
                serde_json::json!({ "name": name, "services": services, "replicas": desired, "instances": total, "running": running })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(Outcome::Success);
    }
    let rows: Vec<Vec<String>> = stacks
        .iter()
        .map(|(name, (services, desired, _, running))| {
            vec![name.clone(), services.to_string(), format!("{running}/{desired}")]
        })
        .collect();
    print_table(&["NAME", "SERVICES", "RUNNING"], &rows);
    Ok(Outcome::Success)
}

pub async fn inspect(client: &Client, args: StackNameArgs) -> Result<Outcome> {
    let record: StackRecord = client.get(&format!("/v1/stacks/{}", encode(&args.name))).await?;
    println!("{}", serde_json::to_string_pretty(&record)?);
    Ok(Outcome::Success)
}

pub async fn ps(client: &Client, args: StackNameArgs) -> Result<Outcome> {
    let instances = stack_instances(client, &args.name).await?;
    if instances.is_empty() {
        bail!("no stack {}: `berth stack ls` lists them", args.name);
    }
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.spec.labels.get(SERVICE_LABEL).cloned().unwrap_or_default(),
                i.kind.to_string(),
                i.node.clone(),
                i.state.to_string(),
                i.spec.image.clone(),
            ]
        })
        .collect();
    print_table(&["NAME", "SERVICE", "KIND", "NODE", "STATE", "IMAGE"], &rows);
    Ok(Outcome::Success)
}

pub async fn remove(client: &Client, args: StackNameArgs) -> Result<Outcome> {
    let instances = stack_instances(client, &args.name).await?;
    let path = format!("/v1/stacks/{}", encode(&args.name));
    let recorded = client.get::<StackRecord>(&path).await.is_ok();
    if instances.is_empty() && !recorded {
        bail!("no stack {}: `berth stack ls` lists them", args.name);
    }
    for instance in &instances {
        client
            .delete(&format!("/v1/instances/{}?force=true", encode(&instance.id)))
            .await?;
        println!("- {}", instance.name);
    }
    if recorded {
        client.delete(&path).await?;
    }
    eprintln!("its volumes and networks stay (`berth volume rm`, `berth network rm`)");
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_names_carry_index_and_generation() {
        assert_eq!(replica_of("shop-web-3", "shop", "web"), Some((3, 1)));
        assert_eq!(replica_of("shop-web-3-g4", "shop", "web"), Some((3, 4)));
        assert_eq!(replica_of("shop-webby-3", "shop", "web"), None);
    }
}
