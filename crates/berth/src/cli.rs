//! The command line: every command, flag and help text. Values are parsed into typed
//! quantities here, so a bad `--memory 12q` is refused before anything is sent.

use std::path::PathBuf;

use berth_model::log::LogOption;
use berth_model::quantity::{parse_count, ByteSize, LimitSetting, MilliCpus};
use clap::{Args, Parser, Subcommand};

const ABOUT: &str = "berth runs containers and virtual machines through one interface.";

const LONG_ABOUT: &str = "berth runs containers and virtual machines through one interface: the same \
run, logs, exec, inspect and limits for both. `berth daemon` serves the API on a unix socket; every \
other command is a client of it (BERTH_HOST selects the socket).";

const AFTER_HELP: &str = "Examples:
  berth daemon &                                 start the daemon (as root)
  berth image import busybox.tar --tag busybox   import a rootfs tarball
  berth run --rm busybox echo hello              run a command, print its output
  berth run -d --name web --memory 64m busybox httpd -f
  berth ps --tree                                instances with their host processes
  berth exec -it web sh                          a shell inside
  berth update --cpus 0.5 web                    change limits live

Exit status: that of the instance for run, start --attach and exec; 125 when berth itself \
fails; 0 for other commands that succeed, 1 when they fail.";

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// Talk to this remote (`berth remote add`) over HTTPS instead of the local socket
    #[arg(long, global = true, value_name = "NAME", env = "BERTH_REMOTE")]
    pub remote: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon (serves the API; needs root)
    Daemon(DaemonArgs),
    /// Create and start an instance from an image
    Run(RunArgs),
    /// Create an instance without starting it
    Create(CreateArgs),
    /// Start stopped instances
    Start(StartArgs),
    /// Stop running instances (SIGTERM, then SIGKILL after a grace period)
    Stop(StopArgs),
    /// Stop and start instances again
    Restart(StopArgs),
    /// Move a running instance to another node of the cluster (a VM live, without stopping)
    ///
    /// A VM moves live (QEMU's migration between the two nodes' qemu
    /// processes): disks on a share (`--disk-on nfs://...`, NFS volumes) stay there, local
    /// disks are mirrored to the new node while the guest runs; its MAC and address stay. The
    /// guest pauses once, for about the downtime limit, at the switch-over; the record moves to
    /// the new node before the guest resumes there, so it never runs on two nodes. Ctrl-C
    /// cancels: the VM keeps running where it was. A container is stopped, its writable layer
    /// and local volumes sent, and started on the new node under the same name (a new address
    /// there). Exit status 0 when it runs on the new node, 1 otherwise.
    Migrate(MigrateArgs),
    /// Send a signal to running instances
    Kill(KillArgs),
    /// Freeze all processes of instances
    Pause(NamesArgs),
    /// Thaw paused instances
    Unpause(NamesArgs),
    /// Remove instances
    Rm(RmArgs),
    /// Block until instances stop, then print their exit codes
    Wait(NamesArgs),
    /// Print an instance's output
    Logs(LogsArgs),
    /// Run a command in a running instance
    Exec(ExecArgs),
    /// List instances
    Ps(PsArgs),
    /// Show instances' full records as JSON
    Inspect(NamesArgs),
    /// Attach to a running instance's output (and input, with --stdin)
    Attach(AttachArgs),
    /// Interactive console of a running VM (its serial console, or its command's stdio);
    /// Ctrl-] detaches
    Console(ConsoleArgs),
    /// Virtual machines: import existing ones, export them
    #[command(subcommand)]
    Vm(VmCommand),
    /// Change limits of instances, live if they run
    Update(UpdateArgs),
    /// Show live resource usage
    Stats(StatsArgs),
    /// Show an instance's host processes as a tree (like `ps auxf`)
    Top(TopArgs),
    /// Show the host facts berth decided from
    Info(JsonArgs),
    /// Instance types: named sizes for containers and VMs
    #[command(subcommand)]
    Types(TypesCommand),
    /// Volumes: storage that outlives instances
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Networks: bridges with addresses, NAT and names for instances
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Nodes of the cluster (with `berth daemon --cluster`; one host is a node of its own)
    #[command(subcommand)]
    Node(NodeCommand),
    /// The cluster as a whole: rebalance
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Run a Compose file's services as a stack; run again, it changes only what differs
    ///
    /// Each service's replicas are instances named STACK-SERVICE-N, labelled with the stack,
    /// the service and a hash of its definition. Missing replicas are created, those of a
    /// changed service replaced one batch at a time (deploy.update_config: parallelism,
    /// order start-first|stop-first, failure_action rollback), each gated on its health check
    /// (or, without one, on running for 2 s);
    /// replicas and services no longer in the file are removed. Keys berth does not use are
    /// listed. berth's own keys go under x-berth in a service: kind (vm), type, node, disk,
    /// max_cpus, max_memory. Works on one host and in a cluster (replicas are placed like any
    /// instance).
    Apply(ApplyArgs),
    /// Print what `berth apply` would change
    Diff(DiffArgs),
    /// Stacks made by `berth apply`
    #[command(subcommand)]
    Stack(StackCommand),
    /// VM disk snapshots: take (live or stopped), list, restore (stopped), delete
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Stream the daemon's events
    Events(JsonArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Client certificates the daemon trusts over HTTPS (--listen), and join tokens
    ///
    /// `trust add NAME --token` prints a one-time token (valid 24 hours) that a client
    /// redeems with `berth remote add`; `trust add NAME CERT.crt` trusts a certificate
    /// directly. A trusted client acts as root does on the socket, and is named in the audit
    /// log.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Daemons this client reaches over HTTPS (`--remote NAME` or BERTH_REMOTE selects one)
    ///
    /// The client's certificate (made on first use) and remotes live in BERTH_CONFIG_DIR,
    /// else ~/.config/berth.
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Show the audit log: this node's mutating requests, who made them and how they ended
    Audit(AuditArgs),
    /// Projects: groups of instances with quotas, for clients trusted with --project
    ///
    /// An instance is in a project by its `berth.project` label (`berth run -l
    /// berth.project=NAME`; a client trusted for a project gets it on every create). The
    /// project's quotas hold at create: instances, the sum of CPU and memory limits, disk.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion(CompletionArgs),
    /// Write man pages for every command into a directory
    #[command(hide = true)]
    Man(ManArgs),
    /// Print the API's OpenAPI description (what the daemon serves at /v1/openapi.json)
    #[command(hide = true)]
    Openapi,
    /// Supervise one instance (started by the daemon; not for direct use)
    #[command(hide = true)]
    Supervise(SuperviseArgs),
    /// Run one exec session in a VM through its guest agent (started by a supervisor)
    #[command(hide = true, name = "vm-exec")]
    VmExec(VmExecArgs),
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Where state (database, images, instances, the node's identity in node.json) lives.
    /// Each state directory is a node of its own: a daemon on another directory gets its own
    /// default bridge, subnet, iptables chains and cgroup parent
    #[arg(long, value_name = "DIR", default_value = berth_daemon::config::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The API socket to listen on
    #[arg(long, value_name = "PATH", default_value = berth_daemon::config::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Also serve Prometheus metrics (OpenMetrics text, GET /metrics) over plain HTTP on this
    /// address, for example 127.0.0.1:9323 (the API socket serves /metrics too). Keep it on
    /// a private address: it names every instance
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Also serve the API over HTTPS on this address (for example 0.0.0.0:8443) to clients
    /// whose certificate is trusted (`berth trust add`); the server certificate is made on
    /// first start in STATE_DIR/tls. The unix socket stays root's
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Also serve the Docker Engine API (1.41) on this socket, for docker, docker-compose
    /// and docker-py (for example /run/berth/docker.sock)
    #[arg(long, value_name = "PATH")]
    pub docker_socket: Option<PathBuf>,
    /// Where the web dashboard (served at https://ADDR/ui/ with --listen) finds xterm.js
    /// (xterm.js and xterm.css), which scripts/install-deps.sh installs from the npm registry
    #[arg(long, value_name = "DIR", default_value = berth_daemon::dashboard::DEFAULT_ASSETS_DIR)]
    pub dashboard_assets: PathBuf,
    /// TOML settings (default limits, stop timeout, default_bridge, default_subnet, [dns]
    /// upstreams); default /etc/berth/config.toml if present
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter (error, warn, info, debug, trace; or a tracing filter)
    #[arg(
        long,
        value_name = "FILTER",
        default_value = "info,libcgroups=error,libcontainer=error",
        env = "BERTH_LOG"
    )]
    pub log_level: String,
    /// Join the cluster whose state is in this etcd: etcd://HOST:PORT[,HOST:PORT...] (every
    /// member's client address). Instances and the cluster's members live there; images,
    /// volumes and networks stay in this node's state directory. Without it the node keeps
    /// everything in its embedded SQLite database
    #[arg(long, value_name = "URL", conflicts_with = "store")]
    pub cluster: Option<String>,
    /// With --cluster: this node's name, unique in the cluster (default: the host name)
    #[arg(long, value_name = "NAME", requires = "cluster")]
    pub node_name: Option<String>,
    /// With --cluster: the address other nodes and users reach this node at
    #[arg(long, value_name = "IP", requires = "cluster")]
    pub advertise: Option<std::net::IpAddr>,
    /// With --cluster and --advertise: the TCP port other nodes reach this node's API at
    /// (requests carry the cluster's token from etcd; keep the network private)
    #[arg(long, value_name = "PORT", default_value_t = berth_daemon::peers::DEFAULT_PEER_PORT, requires = "advertise")]
    pub peer_port: u16,
    /// With --cluster: labels for placement, k=v[,k=v...] (for example zone=a,disk=ssd)
    #[arg(long, value_name = "K=V,...", requires = "cluster")]
    pub labels: Option<String>,
    /// Experimental: keep all the state in etcd (one daemon per etcd) instead of the embedded
    /// SQLite database: etcd://HOST:PORT[,HOST:PORT...]
    #[arg(long, value_name = "URL", hide = true)]
    pub store: Option<String>,
    /// With --cluster: the PEM file of the CA that signed the etcd members' certificates (TLS)
    #[arg(long, value_name = "FILE")]
    pub etcd_cacert: Option<PathBuf>,
    /// With --cluster: a client certificate (PEM) for etcd members that require one
    #[arg(long, value_name = "FILE", requires = "etcd_cacert")]
    pub etcd_cert: Option<PathBuf>,
    /// With --cluster: the key of --etcd-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
}

fn parse_cpus(text: &str) -> Result<LimitSetting<MilliCpus>, String> {
    LimitSetting::<MilliCpus>::parse(text).map_err(|e| e.to_string())
}

fn parse_memory(text: &str) -> Result<LimitSetting<ByteSize>, String> {
    LimitSetting::<ByteSize>::parse(text).map_err(|e| e.to_string())
}

fn parse_size(text: &str) -> Result<ByteSize, String> {
    text.parse::<ByteSize>().map_err(|e| e.to_string())
}

fn parse_rate(text: &str) -> Result<u64, String> {
    berth_model::quantity::parse_bandwidth(text).map_err(|e| e.to_string())
}

fn parse_pids(text: &str) -> Result<LimitSetting<u64>, String> {
    if text.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(LimitSetting::Unlimited);
    }
    parse_count(text).map(LimitSetting::Value).map_err(|e| e.to_string())
}

fn parse_env(text: &str) -> Result<String, String> {
    if text.is_empty() || text.starts_with('=') {
        return Err(format!(
            "'{text}' is not KEY=VALUE (or KEY to pass the variable from this shell)"
        ));
    }
    Ok(text.to_string())
}

fn parse_log_opt(text: &str) -> Result<LogOption, String> {
    text.parse::<LogOption>().map_err(|e| e.to_string())
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("'{text}' is not KEY=VALUE")),
    }
}

fn parse_duration_ms(text: &str) -> Result<u64, String> {
    berth_model::health::parse_duration_ms(text)
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "give KEY=VALUE".to_string())
}

fn parse_reserve_cpus(text: &str) -> Result<MilliCpus, String> {
    text.parse::<MilliCpus>().map_err(|e| e.to_string())
}

/// Resource limits and requests, shared by run, create and update. A limit caps what the
/// instance may use; a request (`--reserve-*`) is what it holds against the host's capacity,
/// which admission counts.
#[derive(Debug, Args, Clone, Default)]
pub struct LimitArgs {
    /// CPU quota in CPUs (0.5 = half a CPU), or "unlimited". Given alone, it is also what
    /// the instance reserves
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub cpus: Option<LimitSetting<MilliCpus>>,
    /// Memory limit (64m, 1g), or "unlimited"; the OOM killer acts beyond it. Given alone,
    /// it is also what the instance reserves
    #[arg(short = 'm', long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<LimitSetting<ByteSize>>,
    /// Maximum number of processes, or "unlimited"
    #[arg(long = "pids-limit", value_name = "N", value_parser = parse_pids)]
    pub pids_limit: Option<LimitSetting<u64>>,
    /// CPUs to reserve on the host (0.25, 250m): admission starts the instance only where
    /// that much is free, and counts it as taken while it runs. At most --cpus. Default:
    /// --cpus if given, an instance type's vCPUs, else the daemon's [defaults] reserve_cpus
    /// (0.1)
    #[arg(long = "reserve-cpus", value_name = "CPUS", value_parser = parse_reserve_cpus)]
    pub reserve_cpus: Option<MilliCpus>,
    /// Memory to reserve on the host (128m, 1g), as --reserve-cpus. At most --memory.
    /// Default: --memory if given, an instance type's memory, a VM's memory, else the
    /// daemon's [defaults] reserve_memory (64m)
    #[arg(long = "reserve-memory", value_name = "SIZE", value_parser = parse_size)]
    pub reserve_memory: Option<ByteSize>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name for the instance (default: a generated one)
    #[arg(long)]
    pub name: Option<String>,
    /// Run as a virtual machine instead of a container
    #[arg(long)]
    pub vm: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from this shell); repeatable
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<String>,
    /// Working directory inside the instance
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: name, uid, name:group or uid:gid
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
    /// Override the image's entrypoint
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// The instance's hostname (default: its short id)
    #[arg(long)]
    pub hostname: Option<String>,
    /// Keep stdin open and forward it
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the process a terminal
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Remove the instance when it exits
    #[arg(long)]
    pub rm: bool,
    /// Network to join: default, another network's name, none (loopback only) or host
    #[arg(long, value_name = "NETWORK")]
    pub network: Option<String>,
    /// Publish a port: [IP:]HOSTPORT:PORT[/tcp|udp]; repeatable
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOSTPORT:PORT")]
    pub publish: Vec<String>,
    /// Network bandwidth limit each way (100mbit, 1gbit)
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub bandwidth: Option<u64>,
    /// Security option; seccomp=unconfined runs a container without berth's seccomp filter
    #[arg(long = "security-opt", value_name = "OPTION")]
    pub security_opts: Vec<String>,
    /// Cap the instance's log, as Docker's local log driver: max-size=SIZE rotates
    /// container.log (and a VM's console.log) when it reaches SIZE (at least 128k);
    /// max-file=COUNT keeps COUNT files, the current one included (1 to 100). Repeatable.
    /// Unset values take the daemon's [logs] settings (default max-size=20m, max-file=5)
    #[arg(long = "log-opt", value_name = "KEY=VALUE", value_parser = parse_log_opt)]
    pub log_opts: Vec<LogOption>,
    /// In a cluster: run on this node (`berth node ls`) instead of where the scheduler would
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// In a cluster: only on nodes whose labels meet LABEL==VALUE or LABEL!=VALUE; repeatable
    #[arg(long = "constraint", value_name = "LABEL==VALUE")]
    pub constraints: Vec<String>,
    /// In a cluster: spread (the emptiest node that fits; default) or binpack (the fullest)
    #[arg(long, value_name = "STRATEGY", value_parser = ["spread", "binpack"])]
    pub placement: Option<String>,
    /// In a cluster: spread over the values of node label LABEL first (for example zone):
    /// the value whose nodes run the fewest instances, then --placement among its nodes.
    /// Nodes without the label are passed over
    #[arg(long = "spread-by", value_name = "LABEL")]
    pub spread_by: Option<String>,
    /// Start the instance again when it ends: no (default), on-failure[:MAX_RETRIES] (a
    /// non-zero exit), always. A `berth stop` or `berth kill` is never undone. In a cluster,
    /// an instance with a policy and no local state (no local volume, no host path; not a VM
    /// with its own disks) moves to another node when its node goes down
    #[arg(long, value_name = "POLICY", value_parser = |s: &str| s.parse::<berth_model::instance::RestartPolicy>())]
    pub restart: Option<berth_model::instance::RestartPolicy>,
    /// Health check: a command line run inside the running instance through /bin/sh -c
    /// (as Docker's --health-cmd); exit 0 is healthy. `ps` shows (healthy), (unhealthy)
    /// or (health: starting); `inspect` shows the last checks
    #[arg(long = "health-cmd", value_name = "COMMAND")]
    pub health_cmd: Option<String>,
    /// Time between health checks (30s, 1m30s, 500ms; default 30s)
    #[arg(long = "health-interval", value_name = "DURATION", value_parser = parse_duration_ms, requires = "health_cmd")]
    pub health_interval: Option<u64>,
    /// A health check running longer fails and is killed (default 30s)
    #[arg(long = "health-timeout", value_name = "DURATION", value_parser = parse_duration_ms, requires = "health_cmd")]
    pub health_timeout: Option<u64>,
    /// Failed health checks in a row that make the instance unhealthy (default 3)
    #[arg(long = "health-retries", value_name = "N", requires = "health_cmd")]
    pub health_retries: Option<u32>,
    /// Failures do not count for this long after a start (a pass still does; default 0s)
    #[arg(long = "health-start-period", value_name = "DURATION", value_parser = parse_duration_ms, requires = "health_cmd")]
    pub health_start_period: Option<u64>,
    /// No health check (overrides one a Compose file or the image would give)
    #[arg(long = "no-healthcheck", conflicts_with = "health_cmd")]
    pub no_healthcheck: bool,
    /// A label kept with the instance, KEY=VALUE; repeatable (shown by inspect, filtered by
    /// `berth stack`)
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Mount a volume or a host path: NAME:PATH[:OPTIONS] attaches the volume NAME (created
    /// if missing); /HOST/PATH:PATH[:OPTIONS] binds a host path, creating a missing host
    /// directory (relative host paths are refused: give $PWD/dir). OPTIONS: ro or rw; z, Z
    /// (accepted, no SELinux here); rprivate (binds are always private); nocopy (volumes).
    /// A VM gets a volume as a disk and a host directory through virtiofs. Repeatable
    #[arg(short = 'v', long = "volume", value_name = "SOURCE:PATH[:ro]")]
    pub volumes: Vec<String>,
    /// Mount as Docker's --mount does, comma-separated key=value pairs:
    /// type=bind|volume|tmpfs (default volume), source|src, target|dst|destination,
    /// readonly|ro[=true|false], bind-propagation=rprivate, volume-nocopy, tmpfs-size=SIZE,
    /// tmpfs-mode=OCTAL. Unlike -v, type=bind refuses a host path that does not exist.
    /// Example: --mount type=bind,src=/srv/www,dst=/var/www,readonly. Repeatable
    #[arg(long = "mount", value_name = "type=...,source=...,target=...")]
    pub mounts: Vec<String>,
    /// Mount an empty tmpfs at PATH, gone at every stop: PATH[:OPTIONS], OPTIONS as mount(8)
    /// takes them: size=SIZE (writes beyond get ENOSPC; counted against --memory), mode=OCTAL
    /// (default 1777), ro, exec, suid, dev (the defaults are noexec, nosuid, nodev).
    /// Example: --tmpfs /run/cache:size=64m. Repeatable
    #[arg(long = "tmpfs", value_name = "PATH[:OPTIONS]")]
    pub tmpfs: Vec<String>,
    /// Size the instance from an instance type (`berth types ls`); --cpus and --memory
    /// override single values of it
    #[arg(long = "type", value_name = "TYPE")]
    pub instance_type: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// VM: the most vCPUs `update --cpus` may hot-add up to
    #[arg(long, value_name = "N", requires = "vm")]
    pub max_cpus: Option<u32>,
    /// VM: the most memory `update --memory` may hot-add up to
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "vm")]
    pub max_memory: Option<ByteSize>,
    /// VM: keep the root disk on an NFS share, nfs://SERVER/EXPORT (NFSv3, through QEMU's
    /// own client), instead of the instance's directory. Every node reaching the share can
    /// then run the VM: with a --restart policy (and NFS volumes only) it restarts on
    /// another node when its node goes down
    #[arg(long = "disk-on", value_name = "nfs://SERVER/EXPORT", requires = "vm")]
    pub disk_on: Option<String>,
    /// VM booting its own disk (a distribution cloud image): cloud-init user-data for its
    /// NoCloud seed (`#cloud-config` YAML or a `#!` script). berth adds meta-data (instance id,
    /// hostname) and network-config (the instance's address, gateway and DNS)
    #[arg(long = "cloud-init", value_name = "USER-DATA", requires = "vm")]
    pub cloud_init: Option<PathBuf>,
    /// VM booting its own disk: an OpenSSH public key (KEY.pub) cloud-init installs for the
    /// default user; repeatable
    #[arg(long = "ssh-key", value_name = "KEY.pub", requires = "vm")]
    pub ssh_keys: Vec<PathBuf>,
    /// Size of the writable layer (containers, enforced by a filesystem of that size) or of
    /// the root disk (VMs, default 4g); thin-provisioned
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub disk: Option<ByteSize>,
    /// The image (tag, id or name@digest)
    pub image: String,
    /// Command and arguments (default: the image's Entrypoint and Cmd)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the instance id
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach to output and exit with the instance's exit code
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach stdin too (with --attach)
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[arg(required = true, value_name = "INSTANCE")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM (a VM: its power button) before SIGKILL, at most 86400
    /// (default: the daemon's stop_timeout_secs, 10). SIGKILL follows in every case, also when
    /// a guest does not answer or an exec session is open; exec sessions end with the instance
    #[arg(short = 't', long = "time", value_name = "SECS")]
    pub timeout: Option<u64>,
    #[arg(required = true, value_name = "INSTANCE")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The node to move to (default: the scheduler chooses among the others)
    #[arg(long, value_name = "NODE")]
    pub to: Option<String>,
    /// Longest pause allowed at the switch-over, in milliseconds (QEMU's default: 300);
    /// a migration whose expected pause stays above it for 60 s is given up
    #[arg(long = "max-downtime", value_name = "MS")]
    pub max_downtime_ms: Option<u64>,
    /// Send at most this many MiB/s (default: as fast as the link goes)
    #[arg(long = "bandwidth", value_name = "MIB")]
    pub bandwidth_mib: Option<u64>,
    /// Throttle the guest's vCPUs while it dirties memory faster than it is sent
    #[arg(long = "auto-converge")]
    pub auto_converge: bool,
    /// After one pass over memory, run the guest on the target and send the rest on demand
    /// (a failure after the switch loses the guest: QEMU's own caveat)
    #[arg(long)]
    pub postcopy: bool,
    /// A container: move it live with CRIU checkpoint/restore (refused where `criu check`
    /// fails, as on this kernel); `--live=auto` falls back to stop, move and start. Without
    /// it a container is stopped, its writable layer sent, and started on the target
    #[arg(long, value_name = "auto", num_args = 0..=1, default_missing_value = "yes", value_parser = ["yes", "auto"])]
    pub live: Option<String>,
    /// Print the result as JSON (progress lines are not printed)
    #[arg(long)]
    pub json: bool,
    #[arg(value_name = "INSTANCE")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal name or number
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true, value_name = "INSTANCE")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true, value_name = "INSTANCE")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running instances first
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true, value_name = "INSTANCE")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the instance stops
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Prefix each line with its time
    #[arg(short = 't', long)]
    pub timestamps: bool,
    #[arg(value_name = "INSTANCE")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open and forward it
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the process a terminal
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Run in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Set an environment variable; repeatable
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<String>,
    /// Working directory inside the instance
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    #[arg(value_name = "INSTANCE")]
    pub name: String,
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all instances (default: running and paused)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only print ids
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Show each running instance's host processes as a tree
    #[arg(long)]
    pub tree: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub limits: LimitArgs,
    #[arg(required = true, value_name = "INSTANCE")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one sample and exit
    #[arg(long)]
    pub no_stream: bool,
    /// Print JSON (implies --no-stream)
    #[arg(long)]
    pub json: bool,
    /// Instances (default: all running)
    #[arg(value_name = "INSTANCE")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    #[arg(value_name = "INSTANCE")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import a rootfs tarball (tar, tar.gz, tar.zst), an OCI layout (dir or tar) or a `docker save` archive
    Import(ImportArgs),
    /// Pull an image from an OCI registry
    Pull(RegistryArgs),
    /// Push an image to an OCI registry
    Push(RegistryArgs),
    /// List images
    #[command(alias = "list")]
    Ls(ImageLsArgs),
    /// Show an image's record as JSON
    Inspect(ImageRefsArgs),
    /// Remove images (or tags)
    Rm(ImageRmArgs),
    /// Give an image another name
    Tag(TagArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Name the imported image NAME[:TAG]
    #[arg(long)]
    pub tag: Option<String>,
    /// Import a bootable VM disk (qcow2, raw, vmdk) instead of a container image
    #[arg(long)]
    pub vm: bool,
    /// With --vm: the disk's format (qcow2, raw or vmdk). By default berth reads it from the
    /// file's header; qemu-img is always told the format and never guesses it, so a raw disk
    /// whose first bytes look like a qcow2 header needs --format raw
    #[arg(long, value_name = "FORMAT", requires = "vm", value_parser = ["qcow2", "raw", "vmdk"])]
    pub format: Option<String>,
    /// With --vm: import a block device (a physical disk, /dev/sdb) instead of a file.
    /// Without it, anything but a regular file (a device, a FIFO, a symlink to either) is
    /// refused. Backing files, qcow2 data files and VMDK extents must always be regular
    /// files in the disk's own directory
    #[arg(long, requires = "vm")]
    pub allow_device: bool,
    /// With --vm: store compressed qcow2 clusters (smaller base, slower import); zero areas
    /// are left out either way
    #[arg(long, requires = "vm")]
    pub compress: bool,
    /// With --vm: the firmware that boots it, uefi (OVMF) or bios (SeaBIOS). By default
    /// berth reads the partition table: a GPT with an EFI System Partition and no BIOS boot
    /// partition boots with UEFI, anything else with BIOS
    #[arg(long, requires = "vm", value_parser = ["uefi", "bios"])]
    pub firmware: Option<String>,
    /// Path of the archive or layout directory (with --vm: of the disk)
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Use plain HTTP (a local or test registry)
    #[arg(long)]
    pub insecure: bool,
    /// Registry user name
    #[arg(long)]
    pub username: Option<String>,
    /// Read the registry password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// REGISTRY/NAME[:TAG]
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct ImageLsArgs {
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImageRefsArgs {
    #[arg(required = true, value_name = "IMAGE")]
    pub references: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImageRmArgs {
    /// Remove even if instances use the image
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true, value_name = "IMAGE")]
    pub references: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write berth.1 and berth-*.1 into
    pub out_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Forward stdin too
    #[arg(short = 'i', long = "stdin")]
    pub stdin: bool,
    #[arg(value_name = "INSTANCE")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    #[arg(value_name = "VM")]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Define stopped VMs from a libvirt domain XML (virsh dumpxml), a VMware .vmx, or a DMTF
    /// OVF package (.ovf with its manifest and disks, or one .ova) as VMware and VirtualBox
    /// export them: disks are checked and converted to qcow2 (an OVF disk without a file is
    /// created empty at its capacity), the network interface joins the berth network of the
    /// same name (else the default one), an OVF manifest (.mf, SHA-1/SHA-256) is verified, and
    /// every setting not carried over is listed. Like `virsh define`, it does not ask whether
    /// this host is big enough; `berth start` does and says what is short
    Import(VmImportArgs),
    /// Write a VM out for another tool: its libvirt domain XML (stdout or -o), or, for a
    /// stopped VM that boots its own disk, an OVA/OVF package or a VMware .vmx directory
    /// (streamOptimized or sparse VMDKs, a SHA-256 manifest or --manifest-digest's), or its
    /// boot disk as raw bytes to a file or a physical disk (V2P: refused while the device or a
    /// partition of it is mounted, used as swap or held, when it is smaller than the disk, and,
    /// without --force, when it holds a partition table)
    Export(VmExportArgs),
}

#[derive(Debug, Args)]
pub struct VmImportArgs {
    /// Name of the new VM (default: the name in the file)
    #[arg(long)]
    pub name: Option<String>,
    /// Let a libvirt <disk type='block'> copy the host block device it names (a physical
    /// disk). Without it such a disk is refused. File disks must be in the definition's
    /// directory, and their backing files, data files and VMDK extents in theirs
    #[arg(long)]
    pub allow_device: bool,
    /// OVF/OVA with several machines: import only this VirtualSystem (its id or name)
    #[arg(long, value_name = "NAME")]
    pub vm: Option<String>,
    /// OVF/OVA: the DeploymentOptionSection configuration to use (default: the package's)
    #[arg(long, value_name = "ID")]
    pub deployment: Option<String>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// The .xml, .vmx, .ovf or .ova file
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct VmExportArgs {
    /// Output format: libvirt (domain XML), ova (one file), ovf or vmx (a directory), raw
    /// (the boot disk, to a file or a block device)
    #[arg(long, default_value = "libvirt", value_parser = ["libvirt", "ova", "ovf", "vmx", "raw"])]
    pub format: String,
    /// libvirt: write to this file instead of stdout
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// ova: the file to write; ovf, vmx: a new or empty directory; raw: a file or a block
    /// device such as /dev/sdb
    #[arg(long, value_name = "PATH")]
    pub to: Option<PathBuf>,
    /// raw: overwrite a device that holds a partition table, or an existing file
    #[arg(long)]
    pub force: bool,
    /// ova, ovf: the manifest's digest. sha256 (the default) is what ovftool 4.2 and later
    /// write, and vSphere 6.5+ and VirtualBox read; sha1 is the one OVF 1.x names, for
    /// readers that hold to it (vSphere before 6.5, the Common OVF Tool)
    #[arg(long, value_name = "ALGORITHM", value_parser = ["sha1", "sha256", "sha512"])]
    pub manifest_digest: Option<String>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    #[arg(value_name = "VM")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct VmExecArgs {
    pub socket: PathBuf,
    pub request: String,
}

#[derive(Debug, Subcommand)]
pub enum TypesCommand {
    /// List instance types: built-in ones (AWS's i3, t3, m5, c5) and the daemon config's
    #[command(alias = "list")]
    Ls(JsonArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The Compose file (compose.yaml, docker-compose.yml)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// The stack's name (default: the file's `name:`)
    #[arg(long, value_name = "STACK")]
    pub name: Option<String>,
    /// Print the changes without making them
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The Compose file
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// The stack's name (default: the file's `name:`)
    #[arg(long, value_name = "STACK")]
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust a client certificate (PEM file), or print a join token with --token
    Add(TrustAddArgs),
    /// List trusted clients: name, fingerprint, how added
    #[command(alias = "list")]
    Ls(JsonArgs),
    /// Stop trusting a client (by name or fingerprint)
    Rm(TrustRmArgs),
}

#[derive(Debug, Args)]
pub struct TrustAddArgs {
    /// What the client is called (in `trust ls` and the audit log)
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The client's certificate, PEM
    #[arg(value_name = "CERT", required_unless_present = "token", conflicts_with = "token")]
    pub certificate: Option<PathBuf>,
    /// Print a one-time join token for the client instead
    #[arg(long)]
    pub token: bool,
    /// Confine the client to this project: its instances only, nothing that reaches the host
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TrustRmArgs {
    #[arg(value_name = "NAME|FINGERPRINT")]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project with quotas (none given: unbounded)
    Create(ProjectCreateArgs),
    /// List projects with their quotas and use
    #[command(alias = "list")]
    Ls(JsonArgs),
    /// Remove an empty project
    Rm(ProjectRmArgs),
}

#[derive(Debug, Args)]
pub struct ProjectCreateArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
    /// At most this many instances
    #[arg(long, value_name = "N")]
    pub max_instances: Option<u32>,
    /// The instances' CPU limits may add up to this
    #[arg(long, value_name = "CPUS")]
    pub max_cpus: Option<f64>,
    /// The instances' memory limits may add up to this (for example 4g)
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
    /// The instances' disks (--disk, instance store) may add up to this
    #[arg(long, value_name = "SIZE")]
    pub max_disk: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProjectRmArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Add a remote: redeem a join token over HTTPS (the token pins the server's certificate)
    Add(RemoteAddArgs),
    /// List remotes: name, URL, pinned fingerprint
    #[command(alias = "list")]
    Ls(JsonArgs),
    /// Forget a remote (the server still trusts this client until `trust rm` there)
    Rm(RemoteRmArgs),
}

#[derive(Debug, Args)]
pub struct RemoteAddArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
    /// https://HOST[:PORT] (default port 8443); default: the address in the token
    #[arg(value_name = "URL")]
    pub url: Option<String>,
    /// The token `berth trust add NAME --token` printed on the server
    #[arg(long, value_name = "TOKEN")]
    pub token: String,
}

#[derive(Debug, Args)]
pub struct RemoteRmArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many of the latest entries
    #[arg(short = 'n', long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// List stacks: name, services, running instances of all
    #[command(alias = "list")]
    Ls(StackLsArgs),
    /// List a stack's instances
    Ps(StackNameArgs),
    /// Show what the stack's last apply asked for (services, replicas, definitions' hashes)
    Inspect(StackNameArgs),
    /// Remove a stack: its instances and its record (its volumes and networks stay)
    Rm(StackNameArgs),
}

#[derive(Debug, Args)]
pub struct StackLsArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StackNameArgs {
    #[arg(value_name = "STACK")]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes: name, state (ready, down, cordoned, draining), address, labels,
    /// capacity and what their instances reserve
    #[command(alias = "list")]
    Ls(JsonArgs),
    /// Show nodes as JSON (fingerprint, capacity, allocation, lease)
    Inspect(NodeNamesArgs),
    /// Take new instances elsewhere; what runs on the node keeps running
    Cordon(NodeNamesArgs),
    /// Let the node take new instances again
    Uncordon(NodeNamesArgs),
    /// Empty the node: cordon it, move what runs on it elsewhere (VMs live, a stack's
    /// stateless replicas start-first, other containers by stop, transfer and start), and
    /// wait until nothing runs there; it ends cordoned. What cannot move is listed with why,
    /// and the node stays draining until it is stopped or removed
    Drain(DrainArgs),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Move instances off nodes whose measured use (CPU or memory of their instances against
    /// their capacity) is far above the cluster's mean, to the coolest nodes that take them:
    /// VMs live, containers by stop, transfer and start. An instance a rebalance moved stays
    /// put for 10 minutes. Exit status 1 when a planned move failed
    Rebalance(RebalanceArgs),
}

#[derive(Debug, Args)]
pub struct RebalanceArgs {
    /// Print the plan without moving anything
    #[arg(long)]
    pub dry_run: bool,
    /// Percentage points above the mean load that make a node hot (default 20)
    #[arg(long, value_name = "POINTS")]
    pub threshold: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    #[arg(value_name = "NODE")]
    pub name: String,
    /// Instances moved at once (1 to 32)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub parallel: u32,
    /// Return once the drain has begun instead of waiting for it to end
    #[arg(short = 'd', long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct NodeNamesArgs {
    #[arg(required = true, value_name = "NODE")]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a thin ext4 filesystem image)
    Create(VolumeCreateArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(ImageLsArgs),
    /// Show volumes as JSON
    Inspect(VolumeNamesArgs),
    /// Remove volumes no instance uses
    Rm(VolumeRmArgs),
    /// Take a snapshot of a volume (or delete one with --rm)
    Snapshot(VolumeSnapshotArgs),
    /// Put a volume back to a snapshot
    Restore(VolumeSnapshotArgs),
}

#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    /// Size (default 10g; thin-provisioned)
    #[arg(long, value_parser = parse_size)]
    pub size: Option<ByteSize>,
    /// Volume driver: local (an ext4 image on this host) or nfs (on an NFS share)
    #[arg(long, default_value = "local", value_parser = ["local", "nfs"])]
    pub driver: String,
    /// Driver option KEY=VALUE, repeatable. nfs: server=HOST, share=/EXPORT, mode=image
    /// (default: a qcow2 image on the share, for containers and VMs) or mode=mount (the
    /// share's directory through the kernel's NFS client, containers only)
    #[arg(long = "opt", short = 'o', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub options: Vec<(String, String)>,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct VolumeRmArgs {
    /// nfs: forget the volume even when the share cannot delete its image (the file stays)
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true, value_name = "VOLUME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VolumeNamesArgs {
    #[arg(required = true, value_name = "VOLUME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VolumeSnapshotArgs {
    /// Delete the snapshot instead of taking it
    #[arg(long)]
    pub rm: bool,
    #[arg(value_name = "VOLUME")]
    pub volume: String,
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot every persistent disk of a VM (qcow2 internal snapshots; live while it runs)
    Create(InstanceSnapshotArgs),
    /// List a VM's snapshots
    #[command(alias = "list")]
    Ls(SnapshotLsArgs),
    /// Put a stopped VM's disks back to a snapshot
    #[command(alias = "revert")]
    Restore(InstanceSnapshotArgs),
    /// Delete a snapshot
    Rm(InstanceSnapshotArgs),
}

#[derive(Debug, Args)]
pub struct InstanceSnapshotArgs {
    #[arg(value_name = "VM")]
    pub instance: String,
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
}

#[derive(Debug, Args)]
pub struct SnapshotLsArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    #[arg(value_name = "VM")]
    pub instance: String,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network (a bridge, its subnet, NAT to the outside unless --internal)
    Create(NetworkCreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(JsonArgs),
    /// Remove networks no instance is on
    Rm(VolumeNamesArgs),
}

#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    /// Subnet such as 10.90.0.0/24 (default: the next free /24)
    #[arg(long)]
    pub subnet: Option<String>,
    /// No route to the outside
    #[arg(long)]
    pub internal: bool,
    pub name: String,
}
