//! berth's node daemon: the engine that drives instances through their drivers and the
//! REST API it serves on a unix socket. `berth daemon` calls `run`.

pub mod admission;
pub mod api;
pub mod api_doc;
pub mod audit;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod drain;
pub mod engine;
pub mod error;
pub mod exec_sessions;
pub mod extract;
pub mod failover;
pub mod health;
pub mod heap;
pub mod host;
pub mod https;
pub mod identity;
pub mod leader_placement;
pub mod logs;
pub mod metrics;
pub mod migration;
pub mod mounts;
pub mod networks;
pub mod nodes;
pub mod peer_registry;
pub mod peers;
pub mod port_holds;
pub mod procs;
pub mod project_scope;
pub mod projects;
pub mod rebalance;
pub mod restarts;
pub mod scheduler;
pub mod stacks;
mod supervisors;
pub mod trust;
pub mod usage;
pub mod vm_files;
pub mod vm_snapshots;
pub mod volumes;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use berth_container::ContainerDriver;
use berth_image::ImageStore;
use berth_store::{EtcdStore, SqliteStore, Store};
use berth_vm::VmDriver;

pub use config::DaemonConfig;
pub use engine::Engine;

/// Holds an exclusive lock on the state directory for the daemon's lifetime, so two
/// daemons never share one state.
fn lock_state_dir(state_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = state_dir.join(identity::LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another berth daemon uses {}; stop it or pass another --state-dir",
            state_dir.display()
        )
    })
}

/// The node's identity from its state directory (made on first start, keeping the id an
/// older store already had), mirrored into the store when the store is the node's own. A
/// shared store (etcd) holds no node's identity: every node keeps its own in node.json.
async fn node_identity(state_dir: &Path, store: &Store) -> Result<identity::NodeIdentity> {
    if store.is_shared() {
        return identity::NodeIdentity::load_or_create(state_dir, None);
    }
    let stored = store.get_meta("node_id").await?;
    let identity = identity::NodeIdentity::load_or_create(state_dir, stored.clone())?;
    if stored.as_deref() != Some(identity.id.as_str()) {
        store.set_meta("node_id", &identity.id).await?;
    }
    Ok(identity)
}

/// Creates `dir` (and missing parents) as 0755 — the daemon's umask would make them
/// private — for directories others must traverse: the socket's (`/run/berth`, also made
/// by the network lock). A directory that exists keeps its mode.
pub fn create_traversable_dir(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(path) = current.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path.to_path_buf());
        current = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    for path in missing {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// The embedded SQLite database in the state directory.
fn open_local_store(config: &DaemonConfig) -> Result<Store> {
    let path = config.state_dir.join("berth.db");
    let backend =
        SqliteStore::open(&path).with_context(|| format!("opening the state in {}", config.state_dir.display()))?;
    Ok(Store::new(metrics::TimedStore::wrap(Arc::new(backend))))
}

async fn open_etcd_store(etcd: &berth_store::EtcdConfig, flag: &str) -> Result<Store> {
    let backend = EtcdStore::connect(etcd)
        .await
        .map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    Ok(Store::new(metrics::TimedStore::wrap(Arc::new(backend))))
}

/// Where the state lives: (the instances' store, the node's own store). On one host both are
/// the embedded SQLite database; with `--cluster` instances and members are in etcd while
/// images, volumes and networks stay in the node's database (they are on its disk and
/// bridges); with the experimental `--store` everything is in etcd.
async fn open_stores(config: &DaemonConfig) -> Result<(Store, Store)> {
    if let Some(cluster) = &config.cluster {
        let shared = open_etcd_store(&cluster.etcd, "--cluster").await?;
        return Ok((shared, open_local_store(config)?));
    }
    match &config.etcd {
        None => {
            let store = open_local_store(config)?;
            Ok((store.clone(), store))
        }
        Some(etcd) => {
            let store = open_etcd_store(etcd, "--store").await?;
            tracing::warn!(
                store = %store.describe(),
                "the etcd store is experimental: one daemon per etcd (use --cluster for many)"
            );
            Ok((store.clone(), store))
        }
    }
}

fn bind_socket(socket: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(parent) = socket.parent() {
        // The socket's group must reach it.
        create_traversable_dir(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bail!(
                "a daemon already serves {}; stop it or pass another --socket",
                socket.display()
            );
        }
        std::fs::remove_file(socket).with_context(|| format!("removing stale {}", socket.display()))?;
    }
    let listener =
        tokio::net::UnixListener::bind(socket).with_context(|| format!("listening on {}", socket.display()))?;
    // Root-owned, group-accessible: membership of the socket's group is the permission to use berth.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting permissions of {}", socket.display()))?;
    Ok(listener)
}

/// Opens the state, recovers instances and serves the API until SIGTERM or SIGINT.
/// Instances keep running when the daemon stops.
pub async fn run(config: DaemonConfig) -> Result<()> {
    let state_dir = config.state_dir.clone();
    std::fs::create_dir_all(state_dir.join("instances"))
        .with_context(|| format!("creating {}", state_dir.display()))?;
    // Private, also when an older berth made it 0755: nothing below is for other users.
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", state_dir.display()))?;
    let _lock = lock_state_dir(&state_dir)?;
    heap::spawn_trimmer();
    let mut instances_mount = InstancesMount::new(state_dir.join("instances"));
    match berth_container::mount_view::prepare_instances_dir(&instances_mount.dir) {
        Ok(true) => {}
        Ok(false) => tracing::info!(
            "instances of an older berth are mounted: containers are created in the host's mount namespace until they stop and the daemon restarts"
        ),
        Err(e) => tracing::warn!(error = %e, "making the instances directory a mount of its own; containers are created in the host's mount namespace"),
    }
    // Instance directories a stopped daemon had moved aside but not yet deleted.
    let discarded_parent = instances_mount.dir.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = berth_storage::discard::sweep(&discarded_parent) {
            tracing::warn!(error = %e, "deleting removed instances' directories");
        }
    });
    let (store, local_store) = open_stores(&config).await?;
    if config.cluster.is_some() {
        // Instances of this host from before it joined would be invisible to the cluster
        // and swept as strays: refuse until they are gone (moving them is not built).
        let earlier = local_store.list_instances().await?;
        if !earlier.is_empty() {
            let names: Vec<&str> = earlier.iter().map(|i| i.name.as_str()).take(5).collect();
            bail!(
                "--cluster: {} holds {} instance(s) of this host from before it joined ({}); remove them with this daemon started without --cluster, or use another --state-dir",
                state_dir.display(),
                earlier.len(),
                names.join(", ")
            );
        }
    }
    let identity = node_identity(&state_dir, &local_store).await?;
    let membership = match &config.cluster {
        Some(cluster) => Some(
            cluster::Membership::join(
                store.clone(),
                cluster,
                &identity.id,
                config.state_dir.join("lease-renewed"),
            )
            .await?,
        ),
        None => None,
    };
    // In a cluster instances name their node by its cluster name; on one host by its id.
    let node = membership
        .as_ref()
        .map_or_else(|| identity.id.clone(), |m| m.name().to_string());
    let images = ImageStore::open(&state_dir.join("images"), local_store.clone())
        .context("opening the image store")?
        .with_limits(config.image_limits);
    if config.cgroup_favor_dynmods {
        berth_container::cgroups::favor_dynamic_modifications();
    }
    let containers = ContainerDriver::new(
        images.clone(),
        state_dir.join("rt"),
        state_dir.join("netns"),
        &identity.cgroup_parent(),
    )
    .context("setting up the container driver")?;
    let instance_source = networks::InstanceSource {
        store: store.clone(),
        node: membership.as_ref().map(|_| node.clone()),
    };
    let overlay = match &membership {
        Some(membership) => membership
            .overlay_plan()
            .await
            .context("joining the cluster's overlay")?,
        None => None,
    };
    let networks = networks::Networks::start(
        local_store.clone(),
        instance_source,
        &state_dir,
        &identity,
        &config,
        overlay,
    )
    .await
    .map_err(|e| anyhow::anyhow!("setting up networking: {e}"))?;
    let vms = VmDriver::new(
        images.clone(),
        state_dir.join("vm"),
        config.guest_dir.clone(),
        config.guest_kernel,
    );
    let exe = std::env::current_exe().context("locating the berth binary")?;
    let socket = config.socket.clone();
    let engine = Engine::new(engine::EngineParts {
        config,
        node: node.clone(),
        store,
        local_store,
        membership: membership.clone(),
        images: images.clone(),
        containers,
        vms,
        networks,
        exe,
    });
    engine
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!("recovering instances: {e}"))?;
    engine.keep_a_supervisor_waiting();
    if let Some(membership) = &membership {
        let facts = engine.node_facts().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        membership.publish(facts).await.context("publishing this node")?;
        membership.spawn_heartbeat(Arc::downgrade(&engine));
        engine.spawn_failover(membership.clone());
        engine.spawn_usage_sampling();
        tracing::info!(node = %membership.name(), "joined the cluster");
    }
    tokio::spawn(async move {
        match images.collect_garbage().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed unused image data"),
            Err(e) => tracing::warn!(error = %e, "image garbage collection"),
        }
    });
    let listener = bind_socket(&socket)?;
    let docker_socket = engine.config.docker_socket.clone();
    if let Some(docker_socket) = &docker_socket {
        // The gateway calls this daemon's own API, so it starts once that socket listens.
        let docker_listener = bind_socket(docker_socket)?;
        let gateway = berth_docker::GatewayConfig {
            berth_socket: socket.clone(),
            state_dir: state_dir.join("docker"),
        };
        tokio::spawn(async move {
            if let Err(e) = berth_docker::serve(docker_listener, gateway).await {
                tracing::error!(error = %e, "serving the Docker Engine API");
            }
        });
        tracing::info!(socket = %docker_socket.display(), "serving the Docker Engine API");
    }
    let peer_listener = match (
        &membership,
        engine
            .config
            .cluster
            .as_ref()
            .and_then(|c| c.advertise.map(|ip| (ip, c.peer_port))),
    ) {
        (Some(membership), Some((ip, port))) => {
            let address = std::net::SocketAddr::new(ip, port);
            let tcp = tokio::net::TcpListener::bind(address).await.with_context(|| {
                format!("--advertise {ip} --peer-port {port}: listening for other nodes on {address}")
            })?;
            let token = Arc::new(membership.token().to_string());
            let router = api::router(engine.clone())
                .merge(peer_registry::router(engine.clone()))
                .merge(leader_placement::router(engine.clone()))
                .merge(migration::router(engine.clone()))
                .layer(axum::middleware::from_fn_with_state(token, peers::require_token));
            tracing::info!(%address, "serving other nodes");
            Some((tcp, router))
        }
        _ => None,
    };
    if let Some(address) = engine.config.metrics_listen {
        let tcp = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("--metrics-listen {address}: listening"))?;
        let router = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics::serve))
            .with_state(engine.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(tcp, router).await {
                tracing::error!(error = %e, "serving metrics");
            }
        });
        tracing::info!(%address, "serving Prometheus metrics");
    }
    if let Some(address) = engine.config.listen {
        https::serve(engine.clone(), address).await?;
    }
    tracing::info!(socket = %socket.display(), node = %node, "berth daemon serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        tracing::info!("shutting down; instances keep running");
    };
    if let Some((tcp, router)) = peer_listener {
        tokio::spawn(async move {
            if let Err(e) = axum::serve(tcp, router).await {
                tracing::error!(error = %e, "serving other nodes");
            }
        });
    }
    let socket_router = api::router(engine.clone())
        .layer(axum::middleware::from_fn(peers::unmark_forwarded))
        .layer(axum::middleware::from_fn_with_state(engine, audit::record))
        .layer(axum::middleware::from_fn(audit::socket_caller));
    axum::serve(
        listener,
        socket_router.into_make_service_with_connect_info::<audit::SocketPeer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serving the API")?;
    instances_mount.keep();
    let _ = std::fs::remove_file(&socket);
    if let Some(docker_socket) = &docker_socket {
        let _ = std::fs::remove_file(docker_socket);
    }
    Ok(())
}

/// The `instances` directory as a mount of its own (see `mount_view`): released again when
/// `run` fails with nothing mounted below it, so a daemon that could not start (a bad
/// config, a bridge of another daemon) leaves no mount behind.
struct InstancesMount {
    dir: PathBuf,
    keep: bool,
}

impl InstancesMount {
    fn new(dir: PathBuf) -> Self {
        Self { dir, keep: false }
    }

    /// The daemon served: the mount stays for the next start.
    fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for InstancesMount {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(e) = berth_container::mount_view::release_instances_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "releasing the instances mount");
        }
    }
}
