//! Prometheus metrics (`GET /metrics`, OpenMetrics text): the daemon's own counters and
//! histograms (API latency by route, placements, store requests, migrations), kept for the
//! process's life, and at each scrape this node's instances (state, CPU, memory, I/O,
//! network) and every node's capacity and allocation, read fresh.
//!
//! The counters are one process-wide set (as the `metrics` facade crates do it): the store
//! wrapper, the scheduler and the API layer record into it without a handle threaded
//! through every constructor, and a daemon is one process.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_model::node::Node;
use berth_model::Instance;
use berth_store::{
    Lease, LeaseId, RangePage, RangeRequest, Revision, Snapshot, StateStore, StoreResult, Txn, WatchEvent, WatchStream,
};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::Engine;

/// What OpenMetrics text is served as (Prometheus asks for it and parses it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    /// The route's template (`/v1/instances/{id}`), never the raw path: one series a route.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    backend: &'static str,
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MigrationLabels {
    kind: &'static str,
    result: &'static str,
}

type Seconds = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The process's long-lived metrics.
struct DaemonMetrics {
    api_seconds: Seconds,
    placements: Family<ResultLabels, Counter>,
    store_seconds: Family<StoreLabels, Histogram, fn() -> Histogram>,
    migrations: Family<MigrationLabels, Counter>,
    migration_downtime_seconds: Family<MigrationLabels, Histogram, fn() -> Histogram>,
    started: Instant,
}

/// 0.25 ms to about 16 s, doubling: API calls range from a cached read to an image pull.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

static METRICS: LazyLock<DaemonMetrics> = LazyLock::new(|| DaemonMetrics {
    api_seconds: Family::new_with_constructor(latency_histogram),
    placements: Family::default(),
    store_seconds: Family::new_with_constructor(latency_histogram),
    migrations: Family::default(),
    migration_downtime_seconds: Family::new_with_constructor(latency_histogram),
    started: Instant::now(),
});

/// A scheduler's decision: placed, or refused (no node fits).
pub fn record_placement(placed: bool) {
    let result = if placed { "placed" } else { "refused" };
    METRICS.placements.get_or_create(&ResultLabels { result }).inc();
}

/// A finished migration: a live VM or a moved container, its outcome and downtime.
pub fn record_migration(live: bool, outcome: Result<Duration, ()>) {
    let kind = if live { "vm" } else { "container" };
    let labels = MigrationLabels {
        kind,
        result: if outcome.is_ok() { "done" } else { "failed" },
    };
    METRICS.migrations.get_or_create(&labels).inc();
    if let Ok(downtime) = outcome {
        METRICS
            .migration_downtime_seconds
            .get_or_create(&labels)
            .observe(downtime.as_secs_f64());
    }
}

/// Axum middleware: every API request's latency by method, route template and status.
pub async fn time_requests(request: Request, next: Next) -> Response {
    let began = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let response = next.run(request).await;
    let labels = RouteLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    METRICS
        .api_seconds
        .get_or_create(&labels)
        .observe(began.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn serve(State(engine): State<Arc<Engine>>) -> Response {
    match render(&engine).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(message) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, message).into_response(),
    }
}

/// The whole exposition: the process's metrics, then this node's instances and the nodes.
pub async fn render(engine: &Arc<Engine>) -> Result<String, String> {
    let instances = engine.local_instances().await.map_err(|e| e.to_string())?;
    // Read all at once; an instance that stopped between the listing and the read has
    // nothing to report.
    let mut all = engine
        .stats_all(std::time::Duration::ZERO)
        .await
        .map_err(|e| e.to_string())?;
    let usage: Vec<_> = instances
        .iter()
        .filter_map(|instance| {
            let at = all.iter().position(|s| s.id == instance.id)?;
            Some((instance, all.swap_remove(at)))
        })
        .collect();
    // A node that lost etcd still reports its own instances.
    let nodes = engine.nodes().await.unwrap_or_default();

    let mut text = String::new();
    let process = process_registry();
    encode_registry(&mut text, &process).map_err(|e| e.to_string())?;
    let scrape = scrape_registry(&engine.node, &instances, &usage, &nodes);
    encode_registry(&mut text, &scrape).map_err(|e| e.to_string())?;
    encode_eof(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

fn process_registry() -> Registry {
    let mut registry = Registry::default();
    let metrics = &*METRICS;
    registry.register(
        "berth_api_request_duration_seconds",
        "API requests served by this daemon, by method, route and status",
        metrics.api_seconds.clone(),
    );
    registry.register(
        "berth_scheduler_placements",
        "Placement decisions made on this node, placed or refused (no node fits)",
        metrics.placements.clone(),
    );
    registry.register(
        "berth_store_request_duration_seconds",
        "Requests to the state store (etcd or the embedded SQLite), by operation",
        metrics.store_seconds.clone(),
    );
    registry.register(
        "berth_migrations",
        "Migrations this node ran as their source, by kind and result",
        metrics.migrations.clone(),
    );
    registry.register(
        "berth_migration_downtime_seconds",
        "How long a migrated instance did not run",
        metrics.migration_downtime_seconds.clone(),
    );
    let uptime = Gauge::<f64, AtomicU64>::default();
    uptime.set(metrics.started.elapsed().as_secs_f64());
    registry.register("berth_daemon_uptime_seconds", "Time since this daemon started", uptime);
    let build = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
    build
        .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
        .set(1);
    registry.register("berth_build_info", "berth's version (always 1)", build);
    registry
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    id: String,
    name: String,
    kind: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    id: String,
    name: String,
    kind: String,
    node: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeStateLabels {
    node: String,
    state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

fn scrape_registry(
    node: &str,
    instances: &[Instance],
    usage: &[(&Instance, berth_model::api::InstanceStats)],
    nodes: &[Node],
) -> Registry {
    let mut registry = Registry::default();
    let labels = |instance: &Instance| InstanceLabels {
        id: instance.id.clone(),
        name: instance.name.clone(),
        kind: instance.kind.to_string(),
        node: node.to_string(),
    };

    let state = Family::<StateLabels, Gauge>::default();
    for instance in instances {
        let InstanceLabels { id, name, kind, node } = labels(instance);
        state
            .get_or_create(&StateLabels {
                id,
                name,
                kind,
                node,
                state: instance.state.to_string(),
            })
            .set(1);
    }
    registry.register(
        "berth_instance_state",
        "This node's instances, one series each with its state (always 1)",
        state,
    );

    let cpu = Family::<InstanceLabels, FloatCounter>::default();
    let memory = Family::<InstanceLabels, Gauge>::default();
    let memory_limit = Family::<InstanceLabels, Gauge>::default();
    let pids = Family::<InstanceLabels, Gauge>::default();
    let io_read = Family::<InstanceLabels, Counter>::default();
    let io_write = Family::<InstanceLabels, Counter>::default();
    let net_rx = Family::<InstanceLabels, Counter>::default();
    let net_tx = Family::<InstanceLabels, Counter>::default();
    for (instance, stats) in usage {
        let labels = labels(instance);
        cpu.get_or_create(&labels).inc_by(stats.cpu_usage_ns as f64 / 1e9);
        memory.get_or_create(&labels).set(gauge_value(stats.memory_usage_bytes));
        if let Some(limit) = stats.memory_limit_bytes {
            memory_limit.get_or_create(&labels).set(gauge_value(limit));
        }
        pids.get_or_create(&labels).set(gauge_value(stats.pids_current));
        io_read.get_or_create(&labels).inc_by(stats.io_read_bytes);
        io_write.get_or_create(&labels).inc_by(stats.io_write_bytes);
        net_rx.get_or_create(&labels).inc_by(stats.net_rx_bytes);
        net_tx.get_or_create(&labels).inc_by(stats.net_tx_bytes);
    }
    registry.register(
        "berth_instance_cpu_seconds",
        "CPU time a running instance used (its cgroup; a VM's qemu process)",
        cpu,
    );
    registry.register("berth_instance_memory_bytes", "Memory a running instance uses", memory);
    registry.register(
        "berth_instance_memory_limit_bytes",
        "A running instance's memory limit",
        memory_limit,
    );
    registry.register(
        "berth_instance_pids",
        "Processes (a container) or threads (a VM's qemu) of a running instance",
        pids,
    );
    registry.register(
        "berth_instance_io_read_bytes",
        "Bytes a running instance read from block devices",
        io_read,
    );
    registry.register(
        "berth_instance_io_write_bytes",
        "Bytes a running instance wrote to block devices",
        io_write,
    );
    registry.register(
        "berth_instance_network_receive_bytes",
        "Bytes a running instance received on its network",
        net_rx,
    );
    registry.register(
        "berth_instance_network_transmit_bytes",
        "Bytes a running instance sent on its network",
        net_tx,
    );

    let node_state = Family::<NodeStateLabels, Gauge>::default();
    let capacity_cpus = Family::<NodeLabels, FloatGauge>::default();
    let capacity_memory = Family::<NodeLabels, Gauge>::default();
    let allocated_cpus = Family::<NodeLabels, FloatGauge>::default();
    let allocated_memory = Family::<NodeLabels, Gauge>::default();
    let node_instances = Family::<NodeLabels, Gauge>::default();
    for member in nodes {
        let labels = NodeLabels {
            node: member.name.clone(),
        };
        node_state
            .get_or_create(&NodeStateLabels {
                node: member.name.clone(),
                state: member.state.as_str().to_string(),
            })
            .set(1);
        let allocated = &member.allocated;
        capacity_cpus.get_or_create(&labels).set(allocated.capacity_cpus);
        capacity_memory
            .get_or_create(&labels)
            .set(gauge_value(allocated.capacity_memory_bytes));
        allocated_cpus.get_or_create(&labels).set(allocated.cpus);
        allocated_memory
            .get_or_create(&labels)
            .set(gauge_value(allocated.memory_bytes));
        node_instances
            .get_or_create(&labels)
            .set(gauge_value(member.instances as u64));
    }
    registry.register(
        "berth_node_state",
        "The cluster's nodes (one on a single host) with their state (always 1)",
        node_state,
    );
    registry.register(
        "berth_node_capacity_cpus",
        "CPUs a node may reserve (its CPUs times the overcommit ratio)",
        capacity_cpus,
    );
    registry.register(
        "berth_node_capacity_memory_bytes",
        "Memory a node may reserve (its memory times the overcommit ratio)",
        capacity_memory,
    );
    registry.register(
        "berth_node_allocated_cpus",
        "CPUs the active instances of a node reserve (their requests)",
        allocated_cpus,
    );
    registry.register(
        "berth_node_allocated_memory_bytes",
        "Memory the active instances of a node reserve (their requests)",
        allocated_memory,
    );
    registry.register("berth_node_instances", "Instances assigned to a node", node_instances);
    registry
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A state store that times every request into `berth_store_request_duration_seconds`.
pub struct TimedStore {
    inner: Arc<dyn StateStore>,
    backend: &'static str,
}

impl TimedStore {
    pub fn wrap(inner: Arc<dyn StateStore>) -> Arc<dyn StateStore> {
        let backend = if inner.is_shared() { "etcd" } else { "sqlite" };
        Arc::new(TimedStore { inner, backend })
    }

    fn record<T>(&self, operation: &'static str, began: Instant, result: &StoreResult<T>) {
        let labels = StoreLabels {
            backend: self.backend,
            operation,
            result: match result {
                Ok(_) => "ok",
                Err(berth_store::StoreError::Conflict { .. }) => "conflict",
                Err(_) => "error",
            },
        };
        METRICS
            .store_seconds
            .get_or_create(&labels)
            .observe(began.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl StateStore for TimedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    fn page_keys(&self) -> usize {
        self.inner.page_keys()
    }

    async fn get(&self, keys: &[String]) -> StoreResult<Snapshot> {
        let began = Instant::now();
        let result = self.inner.get(keys).await;
        self.record("get", began, &result);
        result
    }

    async fn range(&self, request: RangeRequest) -> StoreResult<RangePage> {
        let began = Instant::now();
        let result = self.inner.range(request).await;
        self.record("range", began, &result);
        result
    }

    async fn txn(&self, txn: Txn) -> StoreResult<Revision> {
        let began = Instant::now();
        let result = self.inner.txn(txn).await;
        self.record("txn", began, &result);
        result
    }

    async fn changes_since(&self, prefix: &str, after: Revision) -> StoreResult<Option<(Vec<WatchEvent>, Revision)>> {
        let began = Instant::now();
        let result = self.inner.changes_since(prefix, after).await;
        self.record("changes", began, &result);
        result
    }

    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<WatchStream> {
        let began = Instant::now();
        let result = self.inner.watch(prefix, from).await;
        self.record("watch", began, &result);
        result
    }

    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        let began = Instant::now();
        let result = self.inner.compact(revision).await;
        self.record("compact", began, &result);
        result
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<Lease> {
        let began = Instant::now();
        let result = self.inner.grant_lease(ttl).await;
        self.record("grant_lease", began, &result);
        result
    }

    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        let began = Instant::now();
        let result = self.inner.keep_alive(lease).await;
        self.record("keep_alive", began, &result);
        result
    }

    async fn revoke(&self, lease: LeaseId) -> StoreResult<()> {
        let began = Instant::now();
        let result = self.inner.revoke(lease).await;
        self.record("revoke", began, &result);
        result
    }

    async fn members(&self) -> StoreResult<Vec<String>> {
        self.inner.members().await
    }
}
