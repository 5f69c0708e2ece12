//! Instance commands: run, create, start, stop, logs, exec, ps, inspect, update, stats, top.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_client::Client;
use berth_model::api::VmRequest;
use berth_model::api::{
    CreateInstanceRequest, CreatedResponse, ExecRequest, InstanceStats, LimitsRequest, TopResponse, TreeEntry,
    UpdateInstanceRequest, WaitResponse,
};
use berth_model::health::{HealthCheckRequest, HealthStatus};
use berth_model::instance::short_id;
use berth_model::log::LogOptions;
use berth_model::quantity::LimitSetting;
use berth_model::{ExitStatus, Instance, InstanceKind, InstanceState};
use chrono::{DateTime, Utc};

use crate::attach;
use crate::cli::*;
use crate::output::{ago, human_duration, print_process_tree, print_table, size, truncate, write_process_tree};
use crate::{encode, Outcome};

fn limits_request(args: &LimitArgs) -> LimitsRequest {
    LimitsRequest {
        cpus: args.cpus,
        memory_bytes: args.memory.map(|m| match m {
            LimitSetting::Unlimited => LimitSetting::Unlimited,
            LimitSetting::Value(size) => LimitSetting::Value(size.bytes()),
        }),
        pids: args.pids_limit,
        reserve_cpus: args.reserve_cpus,
        reserve_memory_bytes: args.reserve_memory.map(|m| m.bytes()),
    }
}

/// `-e KEY` takes the value from this shell, as Docker does; unset variables are skipped.
fn resolve_env(env: &[String]) -> Vec<String> {
    env.iter()
        .filter_map(|pair| {
            if pair.contains('=') {
                Some(pair.clone())
            } else {
                std::env::var(pair).ok().map(|value| format!("{pair}={value}"))
            }
        })
        .collect()
}

fn create_request(args: &CreateArgs) -> Result<CreateInstanceRequest> {
    Ok(CreateInstanceRequest {
        name: args.name.clone(),
        kind: if args.vm {
            InstanceKind::Vm
        } else {
            InstanceKind::Container
        },
        image: args.image.clone(),
        command: args.command.clone(),
        entrypoint: args
            .entrypoint
            .as_ref()
            .map(|e| if e.is_empty() { Vec::new() } else { vec![e.clone()] }),
        env: resolve_env(&args.env),
        working_dir: args.workdir.clone(),
        user: args.user.clone(),
        tty: args.tty,
        open_stdin: args.interactive,
        auto_remove: args.rm,
        hostname: args.hostname.clone(),
        limits: limits_request(&args.limits),
        instance_type: args.instance_type.clone(),
        vm: match args.vm {
            true => Some(VmRequest {
                max_cpus: args.max_cpus,
                max_memory_bytes: args.max_memory.map(|m| m.bytes()),
                disk_on: args.disk_on.clone(),
                cloud_init: cloud_init_request(args)?,
            }),
            false => None,
        },
        disk_bytes: args.disk.map(|d| d.bytes()),
        volumes: args.volumes.clone(),
        mounts: args.mounts.clone(),
        tmpfs: args.tmpfs.clone(),
        network: args.network.clone(),
        ports: args.publish.clone(),
        bandwidth_bits_per_second: args.bandwidth,
        security_opts: args.security_opts.clone(),
        log: LogOptions::from_options(&args.log_opts),
        node: args.node.clone(),
        constraints: args.constraints.clone(),
        spread_by: args.spread_by.clone(),
        placement: args.placement.as_deref().map(|p| match p {
            "binpack" => berth_model::api::PlacementStrategy::Binpack,
            _ => berth_model::api::PlacementStrategy::Spread,
        }),
        restart: args.restart,
        labels: args.labels.iter().cloned().collect(),
        healthcheck: healthcheck_request(args),
    })
}

/// `--cloud-init` and `--ssh-key`: the files' contents (read here, on the client's machine).
fn cloud_init_request(args: &CreateArgs) -> Result<Option<berth_model::instance::CloudInit>> {
    if args.cloud_init.is_none() && args.ssh_keys.is_empty() {
        return Ok(None);
    }
    let read = |path: &std::path::PathBuf, flag: &str| -> Result<String> {
        let metadata = std::fs::metadata(path).with_context(|| format!("{flag} {}", path.display()))?;
        if !metadata.is_file() || metadata.len() > 256 << 10 {
            bail!("{flag} {}: give a regular file of at most 256 KiB", path.display());
        }
        std::fs::read_to_string(path).with_context(|| format!("{flag} {}: not readable as UTF-8 text", path.display()))
    };
    let user_data = args.cloud_init.as_ref().map(|p| read(p, "--cloud-init")).transpose()?;
    let mut ssh_keys = Vec::new();
    for path in &args.ssh_keys {
        ssh_keys.extend(
            read(path, "--ssh-key")?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    Ok(Some(berth_model::instance::CloudInit { user_data, ssh_keys }))
}

fn healthcheck_request(args: &CreateArgs) -> Option<HealthCheckRequest> {
    if args.no_healthcheck {
        return Some(HealthCheckRequest {
            test: vec!["NONE".into()],
            ..Default::default()
        });
    }
    let command = args.health_cmd.as_ref()?;
    Some(HealthCheckRequest {
        test: vec!["CMD-SHELL".into(), command.clone()],
        interval_ms: args.health_interval,
        timeout_ms: args.health_timeout,
        retries: args.health_retries,
        start_period_ms: args.health_start_period,
    })
}

async fn create_instance(client: &Client, args: &CreateArgs) -> Result<CreatedResponse> {
    let created: CreatedResponse = client.post("/v1/instances", &create_request(args)?).await?;
    for warning in &created.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(created)
}

pub async fn create(client: &Client, args: CreateArgs) -> Result<Outcome> {
    let created = create_instance(client, &args).await?;
    println!("{}", created.id);
    Ok(Outcome::Success)
}

/// Starts with attach and returns the instance's exit status.
async fn start_attached(client: &Client, id: &str, stdin: bool, tty: bool) -> Result<ExitStatus> {
    let path = format!("/v1/instances/{}/start?attach=true", encode(id));
    let stream = client
        .upgrade(&path, None)
        .await?
        .context("the daemon did not open an attach stream")?;
    match attach::run_session(stream, stdin, tty, None).await {
        Ok(Some(status)) => Ok(status),
        Ok(None) | Err(_) => {
            // The stream broke (daemon restart?): ask for the outcome instead.
            let reply: WaitResponse = client.post(&format!("/v1/instances/{}/wait", encode(id)), &()).await?;
            Ok(ExitStatus {
                code: reply.exit_code,
                signal: None,
                oom_killed: reply.oom_killed,
            })
        }
    }
}

pub async fn run(client: &Client, args: RunArgs) -> Result<Outcome> {
    let created = create_instance(client, &args.create).await?;
    let started = if args.detach {
        client
            .post_empty(&format!("/v1/instances/{}/start", encode(&created.id)))
            .await
            .map(|_| None)
            .map_err(anyhow::Error::from)
    } else {
        start_attached(client, &created.id, args.create.interactive, args.create.tty)
            .await
            .map(Some)
    };
    let status = match started {
        Ok(Some(status)) => status,
        Ok(None) => {
            println!("{}", created.id);
            return Ok(Outcome::Success);
        }
        Err(e) => {
            // --rm asked for no leftovers, also when the start fails; a start refused before
            // anything ran (no room on the host, a port or volume taken) leaves no instance
            // holding the name either.
            let refused = e
                .downcast_ref::<berth_client::ClientError>()
                .and_then(|e| e.status())
                .is_some_and(|status| status == hyper::StatusCode::CONFLICT);
            if args.create.rm || refused {
                let _ = client
                    .delete(&format!("/v1/instances/{}?force=true", encode(&created.id)))
                    .await;
            }
            return Err(e);
        }
    };
    // Return only once the daemon has recorded the exit (or removed the instance), so the
    // next command sees the instance as it is now.
    let condition = if args.create.rm { "removed" } else { "not-running" };
    let _ = client
        .post_empty(&format!(
            "/v1/instances/{}/wait?condition={condition}",
            encode(&created.id)
        ))
        .await;
    Ok(Outcome::Exit(status.code))
}

pub async fn start(client: &Client, args: StartArgs) -> Result<Outcome> {
    if args.attach {
        if args.names.len() != 1 {
            bail!("--attach works with one instance at a time");
        }
        let instance: Instance = client.get(&format!("/v1/instances/{}", encode(&args.names[0]))).await?;
        let stdin = args.interactive && instance.spec.process.open_stdin;
        let status = start_attached(client, &instance.id, stdin, instance.spec.process.tty).await?;
        let _ = client
            .post_empty(&format!("/v1/instances/{}/wait", encode(&instance.id)))
            .await;
        return Ok(Outcome::Exit(status.code));
    }
    each(&args.names, |name| async move {
        client
            .post_empty(&format!("/v1/instances/{}/start", encode(&name)))
            .await?;
        println!("{name}");
        Ok(())
    })
    .await
}

/// Runs `action` for each name, reporting failures and carrying on (as Docker does).
async fn each<F, Fut>(names: &[String], action: F) -> Result<Outcome>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut failed = false;
    for name in names {
        if let Err(e) = action(name.clone()).await {
            eprintln!("berth: error: {name}: {e:#}");
            failed = true;
        }
    }
    Ok(if failed { Outcome::Failure } else { Outcome::Success })
}

pub async fn stop(client: &Client, args: StopArgs, restart: bool) -> Result<Outcome> {
    let verb = if restart { "restart" } else { "stop" };
    let timeout = args.timeout.map(|t| format!("?timeout={t}")).unwrap_or_default();
    each(&args.names, |name| {
        let timeout = timeout.clone();
        async move {
            client
                .post_empty(&format!("/v1/instances/{}/{verb}{timeout}", encode(&name)))
                .await?;
            println!("{name}");
            Ok(())
        }
    })
    .await
}

/// `berth migrate`: follows the daemon's JSON lines with a progress bar (memory sent, dirty
/// rate, expected downtime) on a terminal, plain lines otherwise.
pub async fn migrate(client: &Client, args: MigrateArgs) -> Result<Outcome> {
    use berth_model::api::{MigrateRequest, MigrationEvent};
    use std::io::IsTerminal;
    let request = MigrateRequest {
        to: args.to.clone(),
        max_downtime_ms: args.max_downtime_ms,
        bandwidth_mib: args.bandwidth_mib,
        auto_converge: args.auto_converge,
        postcopy: args.postcopy,
        live: match args.live.as_deref() {
            Some("auto") => Some(berth_model::api::LiveChoice::Auto),
            Some(_) => Some(berth_model::api::LiveChoice::Yes),
            None => None,
        },
        reason: None,
    };
    let body = serde_json::to_vec(&request)?;
    let path = format!("/v1/instances/{}/migrate", encode(&args.name));
    let mut lines = client.stream(hyper::Method::POST, &path, Some(body)).await?.lines();
    let fancy = !args.json && std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    if fancy {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(args.name.clone());
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    while let Some(line) = lines.next_line().await? {
        let Ok(event) = serde_json::from_slice::<MigrationEvent>(&line) else {
            continue;
        };
        match event {
            MigrationEvent::Target { node, reason } => {
                if !args.json {
                    eprintln!("migrating {} to node {node} ({reason})", args.name);
                }
            }
            MigrationEvent::Progress {
                status,
                transferred_bytes,
                remaining_bytes,
                total_bytes,
                dirty_pages_rate,
                expected_downtime_ms,
                cpu_throttle_percent,
            } => {
                let message = if status == "copying disks" {
                    // The guest's local disks go first, while it runs.
                    status.clone()
                } else {
                    format!(
                        "{status}, {dirty_pages_rate} dirty pages/s, expected downtime {expected_downtime_ms} ms{}",
                        if cpu_throttle_percent > 0 {
                            format!(", vCPUs throttled {cpu_throttle_percent}%")
                        } else {
                            String::new()
                        }
                    )
                };
                if fancy {
                    bar.set_length(total_bytes);
                    bar.set_position(total_bytes.saturating_sub(remaining_bytes));
                    bar.set_message(message);
                } else if !args.json {
                    eprintln!(
                        "{} sent, {} left: {message}",
                        size(transferred_bytes),
                        size(remaining_bytes)
                    );
                }
            }
            MigrationEvent::Finished { from, to, result } => {
                bar.finish_and_clear();
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({ "from": from, "to": to, "result": result }))?
                    );
                } else {
                    if !result.live {
                        println!(
                            "{} moved from {from} to {to} by stop and start: down {:.1} s, {:.1} s in all, {} of writable layer sent",
                            args.name,
                            result.downtime_ms as f64 / 1000.0,
                            result.total_ms as f64 / 1000.0,
                            size(result.transferred_bytes)
                        );
                        return Ok(Outcome::Success);
                    }
                    let disks = if result.disk_bytes > 0 {
                        format!(" and {} of local disks", size(result.disk_bytes))
                    } else {
                        String::new()
                    };
                    println!(
                        "{} moved from {from} to {to} live: downtime {} ms (QEMU {} ms, limit {} ms), {:.1} s in all, {} of memory{disks} sent ({})",
                        args.name,
                        result.downtime_ms,
                        result.qemu_downtime_ms,
                        result.max_downtime_ms,
                        result.total_ms as f64 / 1000.0,
                        size(result.transferred_bytes),
                        result.accelerator
                    );
                }
                return Ok(Outcome::Success);
            }
            MigrationEvent::Failed { message } => {
                bar.finish_and_clear();
                bail!("{message}");
            }
        }
    }
    bar.finish_and_clear();
    bail!(
        "the daemon ended the migration's stream without a result; `berth inspect {}` shows where it runs",
        args.name
    )
}

pub async fn kill(client: &Client, args: KillArgs) -> Result<Outcome> {
    // The API takes one spelling; send the number of what the user typed.
    let signal = berth_model::signal::parse_signal(&args.signal)
        .map_err(|e| anyhow::anyhow!("--signal: {e}"))?
        .to_string();
    each(&args.names, |name| {
        let signal = signal.clone();
        async move {
            client
                .post_empty(&format!("/v1/instances/{}/kill?signal={signal}", encode(&name)))
                .await?;
            println!("{name}");
            Ok(())
        }
    })
    .await
}

pub async fn simple(client: &Client, names: &[String], verb: &str) -> Result<Outcome> {
    each(names, |name| async move {
        client
            .post_empty(&format!("/v1/instances/{}/{verb}", encode(&name)))
            .await?;
        println!("{name}");
        Ok(())
    })
    .await
}

pub async fn remove(client: &Client, args: RmArgs) -> Result<Outcome> {
    let force = if args.force { "?force=true" } else { "" };
    each(&args.names, |name| async move {
        client
            .delete(&format!("/v1/instances/{}{force}", encode(&name)))
            .await?;
        println!("{name}");
        Ok(())
    })
    .await
}

pub async fn wait(client: &Client, args: NamesArgs) -> Result<Outcome> {
    for name in &args.names {
        let reply: WaitResponse = client
            .post(&format!("/v1/instances/{}/wait", encode(name)), &())
            .await?;
        println!("{}", reply.exit_code);
    }
    Ok(Outcome::Success)
}

pub async fn logs(client: &Client, args: LogsArgs) -> Result<Outcome> {
    let mut query = vec![];
    if args.follow {
        query.push("follow=true".to_string());
    }
    if let Some(tail) = args.tail {
        query.push(format!("tail={tail}"));
    }
    if args.timestamps {
        query.push("timestamps=true".to_string());
    }
    let path = format!("/v1/instances/{}/logs?{}", encode(&args.name), query.join("&"));
    let body = client.stream(hyper::Method::GET, &path, None).await?;
    attach::print_frames(body).await?;
    Ok(Outcome::Success)
}

pub async fn exec(client: &Client, args: ExecArgs) -> Result<Outcome> {
    let request = ExecRequest {
        command: args.command.clone(),
        env: resolve_env(&args.env),
        working_dir: args.workdir.clone(),
        user: args.user.clone(),
        tty: args.tty,
        open_stdin: args.interactive,
        detach: args.detach,
    };
    let body = serde_json::to_vec(&request)?;
    let path = format!("/v1/instances/{}/exec", encode(&args.name));
    match client.upgrade(&path, Some(body)).await? {
        None => Ok(Outcome::Success),
        Some(stream) => match attach::run_session(stream, args.interactive, args.tty, None).await? {
            Some(status) => Ok(Outcome::Exit(status.code)),
            None => Ok(Outcome::Success),
        },
    }
}

/// What `ps` shows of an instance, decoded from the daemon's full record with the rest
/// skipped: decoding whole records (specs, limits, VM details) into `Instance` was most of
/// the CLI's part of `ps` with many instances. `--json` still prints whole records.
#[derive(serde::Deserialize)]
struct ListedInstance {
    id: String,
    name: String,
    kind: InstanceKind,
    image: String,
    state: InstanceState,
    exit_code: Option<i32>,
    #[serde(default)]
    oom_killed: bool,
    node: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    health: Option<ListedHealth>,
    spec: ListedSpec,
}

#[derive(serde::Deserialize)]
struct ListedHealth {
    status: HealthStatus,
}

#[derive(serde::Deserialize)]
struct ListedSpec {
    process: ListedProcess,
}

#[derive(serde::Deserialize)]
struct ListedProcess {
    #[serde(default)]
    args: Vec<String>,
}

/// An entry of `GET /v1/tree` as `ps --tree` shows it.
#[derive(serde::Deserialize)]
struct ListedTree {
    instance: ListedInstance,
    processes: Vec<berth_model::api::ProcessNode>,
}

fn status_text(instance: &ListedInstance) -> String {
    let now = Utc::now();
    match instance.state {
        InstanceState::Created => "Created".into(),
        InstanceState::Running | InstanceState::Paused => {
            let up = instance
                .started_at
                .map(|t| human_duration((now - t).num_seconds()))
                .unwrap_or_default();
            let health = match instance.health.as_ref().map(|h| h.status) {
                Some(HealthStatus::Starting) => " (health: starting)",
                Some(HealthStatus::Healthy) => " (healthy)",
                Some(HealthStatus::Unhealthy) => " (unhealthy)",
                None => "",
            };
            if instance.state == InstanceState::Paused {
                format!("Up {up} (Paused)")
            } else {
                format!("Up {up}{health}")
            }
        }
        InstanceState::Exited => {
            let oom = if instance.oom_killed { " OOMKilled" } else { "" };
            format!(
                "Exited ({}){oom} {}",
                instance.exit_code.unwrap_or(0),
                instance.finished_at.map(ago).unwrap_or_default()
            )
        }
        InstanceState::Dead => "Dead".into(),
        InstanceState::Lost => format!("Lost (node {} is down)", instance.node),
    }
}

fn command_text(instance: &ListedInstance) -> String {
    format!("\"{}\"", truncate(&instance.spec.process.args.join(" "), 24))
}

pub async fn ps(client: &Client, args: PsArgs) -> Result<Outcome> {
    if args.tree {
        if args.json {
            let tree: Vec<TreeEntry> = client.get("/v1/tree").await?;
            println!("{}", serde_json::to_string_pretty(&tree)?);
            return Ok(Outcome::Success);
        }
        let tree: Vec<ListedTree> = client.get("/v1/tree").await?;
        if tree.is_empty() {
            println!("no running instances");
        }
        // One write for the whole listing (stdout is line-buffered).
        let mut out = String::new();
        for entry in &tree {
            let instance = &entry.instance;
            let _ = writeln!(
                out,
                "{} {} ({}, {}, image {})",
                instance.kind,
                instance.name,
                short_id(&instance.id),
                status_text(instance),
                instance.image
            );
            write_process_tree(&mut out, &entry.processes, "  ");
            out.push('\n');
        }
        print!("{out}");
        return Ok(Outcome::Success);
    }
    let path = if args.all {
        "/v1/instances?all=true"
    } else {
        "/v1/instances"
    };
    if args.json {
        let instances: Vec<Instance> = client.get(path).await?;
        println!("{}", serde_json::to_string_pretty(&instances)?);
        return Ok(Outcome::Success);
    }
    let instances: Vec<ListedInstance> = client.get(path).await?;
    if args.quiet {
        let ids: String = instances.iter().map(|i| format!("{}\n", short_id(&i.id))).collect();
        print!("{ids}");
    } else {
        let rows: Vec<Vec<String>> = instances
            .iter()
            .map(|i| {
                vec![
                    short_id(&i.id).to_string(),
                    i.name.clone(),
                    i.kind.to_string(),
                    truncate(&i.image, 28),
                    command_text(i),
                    ago(i.created_at),
                    status_text(i),
                    // A cluster names nodes; one host's node is its id (short, like ids).
                    truncate(&i.node, 16),
                ]
            })
            .collect();
        print_table(
            &[
                "INSTANCE ID",
                "NAME",
                "KIND",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "NODE",
            ],
            &rows,
        );
    }
    Ok(Outcome::Success)
}

pub async fn inspect(client: &Client, args: NamesArgs) -> Result<Outcome> {
    let mut found = Vec::new();
    let mut failed = false;
    for name in &args.names {
        match client.get::<Instance>(&format!("/v1/instances/{}", encode(name))).await {
            Ok(instance) => found.push(instance),
            Err(e) => {
                eprintln!("berth: error: {e}");
                failed = true;
            }
        }
    }
    if found.len() == 1 && args.names.len() == 1 {
        println!("{}", serde_json::to_string_pretty(&found[0])?);
    } else {
        println!("{}", serde_json::to_string_pretty(&found)?);
    }
    Ok(if failed { Outcome::Failure } else { Outcome::Success })
}

pub async fn update(client: &Client, args: UpdateArgs) -> Result<Outcome> {
    let request = UpdateInstanceRequest {
        limits: limits_request(&args.limits),
    };
    if request.limits.is_empty() {
        bail!("nothing to update; give --cpus, --memory, --pids-limit, --reserve-cpus or --reserve-memory");
    }
    each(&args.names, |name| {
        let request = request.clone();
        async move {
            let _: Instance = client
                .post(&format!("/v1/instances/{}/update", encode(&name)), &request)
                .await?;
            println!("{name}");
            Ok(())
        }
    })
    .await
}

/// The stats of `names`, in that order: this node's instances in one request (all of them
/// read at once by the daemon), the others (on other nodes) one request each.
async fn sample(client: &Client, names: &[String]) -> Result<Vec<InstanceStats>> {
    let mut local: Vec<InstanceStats> = client.get("/v1/stats").await?;
    let mut stats = Vec::with_capacity(names.len());
    for name in names {
        match local.iter().position(|s| &s.name == name || s.id == *name) {
            Some(at) => stats.push(local.swap_remove(at)),
            None => stats.push(client.get(&format!("/v1/instances/{}/stats", encode(name))).await?),
        }
    }
    Ok(stats)
}

/// Interval between the two samples `stats --no-stream` compares: enough for a CPU figure
/// that means something, short enough for a command.
const NO_STREAM_WINDOW: Duration = Duration::from_millis(100);

fn cpu_percent(before: &InstanceStats, after: &InstanceStats) -> f64 {
    let elapsed_ns = ((after.sampled_at_ms - before.sampled_at_ms).max(1) as f64) * 1e6;
    (after.cpu_usage_ns.saturating_sub(before.cpu_usage_ns)) as f64 / elapsed_ns * 100.0
}

pub async fn stats(client: &Client, args: StatsArgs) -> Result<Outcome> {
    let names: Vec<String> = if args.names.is_empty() {
        // Only the names: the rest of each record is skipped, not decoded.
        #[derive(serde::Deserialize)]
        struct Named {
            name: String,
        }
        let running: Vec<Named> = client.get("/v1/instances").await?;
        running.into_iter().map(|i| i.name).collect()
    } else {
        args.names.clone()
    };
    let mut before = sample(client, &names).await?;
    loop {
        tokio::time::sleep(if args.no_stream || args.json {
            NO_STREAM_WINDOW
        } else {
            Duration::from_secs(1)
        })
        .await;
        let after = sample(client, &names).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&after)?);
            return Ok(Outcome::Success);
        }
        let rows: Vec<Vec<String>> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| {
                let (memory, memory_percent) = match a.memory_limit_bytes {
                    Some(limit) => (
                        format!("{} / {}", size(a.memory_usage_bytes), size(limit)),
                        format!("{:.1}%", a.memory_usage_bytes as f64 / limit as f64 * 100.0),
                    ),
                    None => (format!("{} / unlimited", size(a.memory_usage_bytes)), "-".into()),
                };
                vec![
                    short_id(&a.id).to_string(),
                    a.name.clone(),
                    format!("{:.2}%", cpu_percent(b, a)),
                    memory,
                    memory_percent,
                    match a.pids_limit {
                        Some(limit) => format!("{} / {limit}", a.pids_current),
                        None => a.pids_current.to_string(),
                    },
                ]
            })
            .collect();
        if !args.no_stream {
            print!("\x1b[2J\x1b[H");
        }
        print_table(
            &["INSTANCE ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"],
            &rows,
        );
        if args.no_stream {
            return Ok(Outcome::Success);
        }
        before = after;
    }
}

pub async fn top(client: &Client, args: TopArgs) -> Result<Outcome> {
    let top: TopResponse = client.get(&format!("/v1/instances/{}/top", encode(&args.name))).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&top)?);
    } else {
        print_process_tree(&top.processes, "");
    }
    Ok(Outcome::Success)
}

/// `berth attach` and `berth console`: joins a running instance's stdio. `console` puts the
/// terminal in raw mode and detaches on Ctrl-].
pub async fn attach(client: &Client, name: &str, stdin: bool, console: bool) -> Result<Outcome> {
    let instance: Instance = client.get(&format!("/v1/instances/{}", encode(name))).await?;
    if console && instance.kind != berth_model::InstanceKind::Vm {
        bail!("{name} is a container; use `berth exec -it {name} sh` or `berth attach`");
    }
    let path = format!("/v1/instances/{}/attach?stdin={stdin}", encode(&instance.id));
    let stream = client
        .upgrade(&path, None)
        .await?
        .context("the daemon did not open an attach stream")?;
    if console {
        eprintln!("attached to {name}; Ctrl-] detaches");
    }
    let detach_key = console.then_some(0x1d);
    match attach::run_session(stream, stdin, console || instance.spec.process.tty, detach_key).await? {
        Some(status) => Ok(Outcome::Exit(status.code)),
        None => {
            eprintln!("\r\ndetached from {name}");
            Ok(Outcome::Success)
        }
    }
}
