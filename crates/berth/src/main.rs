//! The `berth` binary: the CLI (a client of the daemon's API), the daemon itself
//! (`berth daemon`) and, hidden, the per-instance supervisor (`berth supervise`).

mod attach;
mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use anyhow::{Context, Result};
use berth_client::Client;
use clap::{CommandFactory, Parser};

use crate::cli::{
    Cli, ClusterCommand, Command, ImageCommand, NetworkCommand, NodeCommand, ProjectCommand, RemoteCommand,
    SnapshotCommand, StackCommand, TrustCommand, TypesCommand, VmCommand, VolumeCommand,
};

/// How a command ended, as an exit status.
pub enum Outcome {
    Success,
    Failure,
    /// The exit code of an instance's process.
    Exit(i32),
}

/// Exit status when berth itself fails in commands that otherwise pass on an instance's
/// exit code (Docker's convention).
const BERTH_FAILED: u8 = 125;

/// Percent-encodes a path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn main() -> ExitCode {
    // Inside a VM, berth is /init of its initramfs: the guest agent.
    if std::process::id() == 1 && std::env::args().next().is_some_and(|a| a.ends_with("init")) {
        berth_vm::agent::guest_init();
    }
    // The daemon starts each instance's supervisor as exactly `berth supervise CONFIG`. It
    // skips the CLI parser: building clap's command tree (every flag with its help) took the
    // supervisor's heap to 560 KiB, and what stayed live after it was freed sat scattered
    // over those pages for the supervisor's whole life.
    let mut args = std::env::args_os().skip(1);
    if let (Some(command), Some(config), None) = (args.next(), args.next(), args.next()) {
        if command == "supervise" && berth_shim::standby::is_standby_argument(&config) {
            return ExitCode::from(supervise_on_standby() as u8);
        }
        if command == "supervise" && !config.to_string_lossy().starts_with('-') {
            return ExitCode::from(supervise(std::path::Path::new(&config)) as u8);
        }
    }
    let cli = Cli::parse();
    let remote = cli.remote.clone();
    match cli.command {
        Command::Supervise(args) => ExitCode::from(supervise(&args.config) as u8),
        Command::VmExec(args) => {
            ExitCode::from(berth_vm::exec_client::run(&args.socket, &args.request).clamp(0, 255) as u8)
        }
        Command::Daemon(args) => match run_daemon(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth daemon: error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Completion(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "berth", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Openapi => match berth_daemon::api::description().to_pretty_json() {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("berth: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Man(args) => match write_man_pages(&args.out_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth: error: {e:#}");
                ExitCode::FAILURE
            }
        },
        command => {
            // A client whose output is cut short (`berth ps | head`) ends quietly, as
            // Unix tools do; the daemon and supervisors keep ignoring SIGPIPE.
            // SAFETY: restoring a default signal disposition.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            let passes_exit_code = matches!(
                command,
                Command::Run(_) | Command::Start(_) | Command::Exec(_) | Command::Wait(_) | Command::Create(_)
            );
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("berth: error: starting the async runtime: {e}");
                    return ExitCode::from(BERTH_FAILED);
                }
            };
            let result = runtime.block_on(dispatch(command, remote.as_deref()));
            // Stdin readers may still block on a terminal; do not wait for them.
            let code = match result {
                Ok(Outcome::Success) => 0,
                Ok(Outcome::Failure) => 1,
                Ok(Outcome::Exit(code)) => code.clamp(0, 255) as u8,
                Err(e) => {
                    eprintln!("berth: error: {e:#}");
                    if passes_exit_code {
                        BERTH_FAILED
                    } else {
                        1
                    }
                }
            };
            std::process::exit(code as i32);
        }
    }
}

async fn dispatch(command: Command, remote: Option<&str>) -> Result<Outcome> {
    use commands::{access, host, images, instances, networks, nodes, snapshots, stacks, vms, volumes};
    // Remotes are managed here, not through a daemon.
    match command {
        Command::Remote(RemoteCommand::Add(args)) => return access::remote_add(args).await,
        Command::Remote(RemoteCommand::Ls(args)) => return access::remote_list(args),
        Command::Remote(RemoteCommand::Rm(args)) => return access::remote_remove(args),
        _ => {}
    }
    let client = Client::from_env_or_remote(remote)?;
    match command {
        Command::Trust(TrustCommand::Add(args)) => access::trust_add(&client, args).await,
        Command::Trust(TrustCommand::Ls(args)) => access::trust_list(&client, args).await,
        Command::Trust(TrustCommand::Rm(args)) => access::trust_remove(&client, args).await,
        Command::Audit(args) => access::audit(&client, args).await,
        Command::Project(ProjectCommand::Create(args)) => access::project_create(&client, args).await,
        Command::Project(ProjectCommand::Ls(args)) => access::project_list(&client, args).await,
        Command::Project(ProjectCommand::Rm(args)) => access::project_remove(&client, args).await,
        Command::Remote(_) => unreachable!("handled above"),
        Command::Run(args) => instances::run(&client, args).await,
        Command::Create(args) => instances::create(&client, args).await,
        Command::Start(args) => instances::start(&client, args).await,
        Command::Stop(args) => instances::stop(&client, args, false).await,
        Command::Restart(args) => instances::stop(&client, args, true).await,
        Command::Kill(args) => instances::kill(&client, args).await,
        Command::Migrate(args) => instances::migrate(&client, args).await,
        Command::Apply(args) => stacks::apply(&client, args).await,
        Command::Diff(args) => stacks::diff(&client, args).await,
        Command::Stack(StackCommand::Ls(args)) => stacks::list(&client, args).await,
        Command::Stack(StackCommand::Ps(args)) => stacks::ps(&client, args).await,
        Command::Stack(StackCommand::Inspect(args)) => stacks::inspect(&client, args).await,
        Command::Stack(StackCommand::Rm(args)) => stacks::remove(&client, args).await,
        Command::Pause(args) => instances::simple(&client, &args.names, "pause").await,
        Command::Unpause(args) => instances::simple(&client, &args.names, "unpause").await,
        Command::Rm(args) => instances::remove(&client, args).await,
        Command::Wait(args) => instances::wait(&client, args).await,
        Command::Logs(args) => instances::logs(&client, args).await,
        Command::Exec(args) => instances::exec(&client, args).await,
        Command::Ps(args) => instances::ps(&client, args).await,
        Command::Inspect(args) => instances::inspect(&client, args).await,
        Command::Attach(args) => instances::attach(&client, &args.name, args.stdin, false).await,
        Command::Console(args) => instances::attach(&client, &args.name, true, true).await,
        Command::Vm(VmCommand::Import(args)) => vms::import(&client, args).await,
        Command::Vm(VmCommand::Export(args)) => vms::export(&client, args).await,
        Command::Update(args) => instances::update(&client, args).await,
        Command::Stats(args) => instances::stats(&client, args).await,
        Command::Top(args) => instances::top(&client, args).await,
        Command::Info(args) => host::info(&client, args).await,
        Command::Types(TypesCommand::Ls(args)) => host::types(&client, args).await,
        Command::Volume(VolumeCommand::Create(args)) => volumes::create(&client, args).await,
        Command::Network(NetworkCommand::Create(args)) => networks::create(&client, args).await,
        Command::Network(NetworkCommand::Ls(args)) => networks::list(&client, args).await,
        Command::Network(NetworkCommand::Rm(args)) => networks::remove(&client, args).await,
        Command::Node(NodeCommand::Ls(args)) => nodes::list(&client, args).await,
        Command::Node(NodeCommand::Inspect(args)) => nodes::inspect(&client, args).await,
        Command::Node(NodeCommand::Cordon(args)) => nodes::act(&client, args, "cordon").await,
        Command::Node(NodeCommand::Uncordon(args)) => nodes::act(&client, args, "uncordon").await,
        Command::Node(NodeCommand::Drain(args)) => nodes::drain(&client, args).await,
        Command::Cluster(ClusterCommand::Rebalance(args)) => nodes::rebalance(&client, args).await,
        Command::Snapshot(SnapshotCommand::Create(args)) => snapshots::create(&client, args).await,
        Command::Snapshot(SnapshotCommand::Ls(args)) => snapshots::list(&client, args).await,
        Command::Snapshot(SnapshotCommand::Restore(args)) => snapshots::restore(&client, args).await,
        Command::Snapshot(SnapshotCommand::Rm(args)) => snapshots::remove(&client, args).await,
        Command::Volume(VolumeCommand::Ls(args)) => volumes::list(&client, args).await,
        Command::Volume(VolumeCommand::Inspect(args)) => volumes::inspect(&client, args).await,
        Command::Volume(VolumeCommand::Rm(args)) => volumes::remove(&client, args).await,
        Command::Volume(VolumeCommand::Snapshot(args)) => volumes::snapshot(&client, args).await,
        Command::Volume(VolumeCommand::Restore(args)) => volumes::restore(&client, args).await,
        Command::Events(args) => host::events(&client, args).await,
        Command::Image(image) => match image {
            ImageCommand::Import(args) => images::import(&client, args).await,
            ImageCommand::Pull(args) => images::pull(&client, args).await,
            ImageCommand::Push(args) => images::push(&client, args).await,
            ImageCommand::Ls(args) => images::list(&client, args).await,
            ImageCommand::Inspect(args) => images::inspect(&client, args).await,
            ImageCommand::Rm(args) => images::remove(&client, args).await,
            ImageCommand::Tag(args) => images::tag(&client, args).await,
        },
        Command::Daemon(_)
        | Command::Supervise(_)
        | Command::VmExec(_)
        | Command::Completion(_)
        | Command::Man(_)
        | Command::Openapi => {
            unreachable!("handled before the runtime starts")
        }
    }
}

fn run_daemon(args: cli::DaemonArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level).context("--log-level")?)
        .with_writer(std::io::stderr)
        .init();
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("the daemon needs root (namespaces, cgroups, mounts); run it with sudo");
    }
    // Everything the daemon and its supervisors create is private: state files hold `-e`
    // secrets and image layers hold setuid binaries. What must be reachable by others (the
    // API socket, what containers see as their own files) gets its mode explicitly.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut config = berth_daemon::DaemonConfig::load(&args.state_dir, &args.socket, args.config.as_deref())?;
    config.metrics_listen = args.metrics_listen;
    config.listen = args.listen;
    config.docker_socket = args.docker_socket.clone();
    config.dashboard_assets = args.dashboard_assets.clone();
    if args.etcd_cacert.is_some() && args.cluster.is_none() && args.store.is_none() {
        anyhow::bail!("--etcd-cacert/--etcd-cert/--etcd-key are for etcd: give --cluster etcd://HOST:PORT too");
    }
    if let Some(url) = &args.store {
        config.etcd = Some(
            berth_daemon::config::etcd_store("--store", url, args.etcd_cacert, args.etcd_cert, args.etcd_key)
                .map_err(anyhow::Error::msg)?,
        );
    } else if let Some(url) = &args.cluster {
        let etcd = berth_daemon::config::etcd_store("--cluster", url, args.etcd_cacert, args.etcd_cert, args.etcd_key)
            .map_err(anyhow::Error::msg)?;
        let node_name = match args.node_name {
            Some(name) => name,
            None => nix::unistd::gethostname()
                .context("reading the host name (pass --node-name)")?
                .to_string_lossy()
                .into_owned(),
        };
        config.cluster = Some(berth_daemon::cluster::ClusterConfig {
            etcd,
            node_name: berth_daemon::cluster::parse_node_name(&node_name)
                .map_err(|e| anyhow::anyhow!("--node-name: {e}"))?,
            advertise: args.advertise,
            peer_port: args.peer_port,
            labels: berth_daemon::cluster::parse_labels(args.labels.as_deref().unwrap_or(""))
                .map_err(|e| anyhow::anyhow!("--labels: {e}"))?,
        });
    }
    berth_daemon::heap::use_one_arena();
    // Two workers: the API is I/O-bound and the heavy work (unpacking) runs on blocking threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(berth_daemon::run(config))
}

/// A supervisor the daemon started ahead of need (`berth_shim::standby`): waits for the
/// config of the next instance, then supervises it. Ends quietly when the daemon goes away.
fn supervise_on_standby() -> i32 {
    match berth_shim::standby::wait_for_config() {
        Ok(Some(config)) => supervise(&config),
        Ok(None) => 0,
        Err(e) => not_ready(&format!("a standby supervisor taking its config: {e}")),
    }
}

/// The ready line of a supervisor that failed before it had a workload; its exit status.
fn not_ready(error: &str) -> i32 {
    let line = berth_shim::protocol::ReadyLine {
        ok: false,
        error: Some(error.to_string()),
        supervisor_pid: std::process::id(),
        entered_ns: None,
        created_ns: None,
    };
    match serde_json::to_string(&line) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("berth supervisor: {error} ({e})"),
    }
    1
}

/// The supervisor: no async runtime, one thread, as small as it can be.
fn supervise(config_path: &std::path::Path) -> i32 {
    berth_shim::supervisor::mark_entered();
    // The daemon starts supervisors without its own pre-exec reset (posix_spawn, cheaper than
    // fork): start from clean signal state here, then ignore SIGPIPE again as the Rust
    // runtime does — a client that goes away must not end the supervisor.
    if let Err(e) = berth_process::reset_signal_state() {
        eprintln!("berth supervisor: resetting signal state: {e}");
        return 1;
    }
    // SAFETY: setting SIGPIPE's disposition to ignore, single-threaded at this point.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let config: berth_model::driver::SupervisorConfig = match std::fs::read(config_path)
        .map_err(|e| e.to_string())
        .and_then(|data| serde_json::from_slice(&data).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(e) => return not_ready(&format!("reading the supervisor config: {e}")),
    };
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let workload = berth_container::workload_for(&config.workload)
        .or_else(|| berth_vm::workload_for(&config))
        .unwrap_or_else(|| match &config.workload {
            berth_model::driver::Workload::Process { args, env } => {
                Box::new(berth_shim::process::ProcessWorkload::new(args.clone(), env.clone()))
            }
            _ => unreachable!("every workload kind has a supervisor workload"),
        });
    berth_shim::run(config, workload)
}

fn write_man_pages(out_dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let command = Cli::command();
    fn render(command: &clap::Command, name: &str, out_dir: &std::path::Path) -> Result<()> {
        let mut buffer = Vec::new();
        clap_mangen::Man::new(command.clone().name(name.to_string()))
            .render(&mut buffer)
            .context("rendering a man page")?;
        std::fs::write(out_dir.join(format!("{name}.1")), buffer)?;
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            render(sub, &format!("{name}-{}", sub.get_name()), out_dir)?;
        }
        Ok(())
    }
    render(&command, "berth", out_dir)
}
