//! The Docker Engine API gateway (`berth daemon --docker-socket`) driven by unmodified
//! clients: Debian's docker CLI (20.10), docker-compose 1.29 and docker-py, as a user
//! would run them against a Docker daemon.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::published::{self, NatView};
use crate::common::{busybox_tar, temp_dir, Daemon};

/// Debian's clients (the machine may have other `docker` binaries earlier on the PATH).
const DOCKER: &str = "/usr/bin/docker";
const COMPOSE: &str = "/usr/bin/docker-compose";
const PYTHON: &str = "/usr/bin/python3";

/// A berth daemon serving the Docker API, with the busybox image imported as `busybox`.
struct DockerDaemon {
    daemon: Daemon,
    socket: PathBuf,
    /// DOCKER_CONFIG for the clients: nothing of the machine's own configuration.
    config: PathBuf,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl DockerDaemon {
    fn start() -> DockerDaemon {
        let turn = crate::common::one_at_a_time();
        let dir = temp_dir("bd");
        let socket = dir.join("docker.sock");
        let daemon = Daemon::start_with_args(&["--docker-socket", socket.to_str().unwrap()], "");
        daemon.ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "no Docker API socket; log:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let config = dir.join("client-config");
        std::fs::create_dir_all(&config).unwrap();
        DockerDaemon {
            daemon,
            socket,
            config,
            _turn: turn,
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", &self.config)
            .env_remove("DOCKER_API_VERSION")
            .stdin(Stdio::null());
        command
    }

    fn docker(&self, args: &[&str]) -> Output {
        let mut command = self.command(DOCKER);
        command.args(args);
        run(command, &format!("docker {}", args.join(" ")))
    }

    /// Runs docker expecting success; its stdout.
    fn docker_ok(&self, args: &[&str]) -> String {
        let output = self.docker(args);
        assert!(
            output.status.success(),
            "docker {} failed ({:?}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            args.join(" "),
            output.status.code(),
            text(&output.stdout),
            text(&output.stderr),
            tail(&self.daemon.log())
        );
        text(&output.stdout)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Runs a client with a deadline: a hang is a failure with what it printed, not a stuck test.
fn run(mut command: Command, what: &str) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e} (scripts/install-deps.sh installs the Docker clients)"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut data = Vec::new();
        let _ = stdout.read_to_end(&mut data);
        data
    });
    let err = std::thread::spawn(move || {
        let mut data = Vec::new();
        let _ = stderr.read_to_end(&mut data);
        data
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish in 120 s:\nstdout: {}\nstderr: {}",
                text(&out.join().unwrap()),
                text(&err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Whether busybox httpd serving /etc answers /passwd on the published `port` (its first
/// answer waited for while the server starts).
fn serves_passwd(d: &DockerDaemon, port: u16) -> bool {
    let nat = NatView::of(&d.daemon);
    published::first_answer("127.0.0.1", port, "/passwd", Duration::from_secs(60), &nat).contains("root:")
}

#[test]
fn docker_cli_runs_execs_logs_and_removes_containers() {
    let d = DockerDaemon::start();
    let version = d.docker_ok(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(version.trim(), "1.41");
    assert!(d.docker_ok(&["info"]).contains("Swarm: inactive"));

    // run --rm: create, attach (hijacked), wait, start; output, exit code, nothing left.
    assert_eq!(d.docker_ok(&["run", "--rm", "busybox", "echo", "hi"]), "hi\n");
    let failed = d.docker(&["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed.stderr));
    assert_eq!(text(&failed.stdout), "out\n");
    assert_eq!(text(&failed.stderr), "err\n");
    // Stdin reaches the container with -i.
    let mut command = d.command(DOCKER);
    command.args(["run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z"]);
    command.stdin(Stdio::piped());
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let upper = child.wait_with_output().unwrap();
    assert_eq!(text(&upper.stdout), "SHOUT\n");

    // run -d with a published port, reached from here.
    let port = published::free_port();
    let mapping = format!("{port}:80");
    d.docker_ok(&[
        "run", "-d", "--name", "web", "-p", &mapping, "busybox", "httpd", "-f", "-p", "80", "-h", "/etc",
    ]);
    assert!(serves_passwd(&d, port), "httpd answers through the published port");
    let ps = d.docker_ok(&["ps"]);
    assert!(ps.contains("web") && ps.contains("Up"), "{ps}");
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    assert_eq!(
        d.docker_ok(&["inspect", "-f", "{{.State.Status}} {{.Name}} {{.State.Running}}", "web"])
            .trim(),
        "running /web true"
    );

    // exec: output and exit code.
    assert_eq!(d.docker_ok(&["exec", "web", "echo", "inside"]), "inside\n");
    let exec = d.docker(&["exec", "web", "sh", "-c", "exit 5"]);
    assert_eq!(exec.status.code(), Some(5));

    // logs: stdout and stderr apart.
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "echo one; echo two >&2; sleep 1000",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs = d.docker(&["logs", "talker"]);
        if text(&logs.stdout).contains("one") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(text(&logs.stdout), "one\n");
    assert_eq!(text(&logs.stderr), "two\n");

    // Images, volumes, networks.
    assert!(d.docker_ok(&["images"]).contains("busybox"));
    d.docker_ok(&["volume", "create", "data"]);
    assert!(d.docker_ok(&["volume", "ls"]).contains("data"));
    let networks = d.docker_ok(&["network", "ls"]);
    assert!(networks.contains("bridge") && networks.contains("host"), "{networks}");

    // An option berth cannot honour is refused, naming it.
    let refused = d.docker(&["run", "--rm", "--privileged", "busybox", "true"]);
    assert!(!refused.status.success());
    let message = text(&refused.stderr);
    assert!(
        message.contains("Error response from daemon") && message.contains("HostConfig.Privileged"),
        "{message}"
    );

    // stop, then remove everything.
    d.docker_ok(&["stop", "-t", "1", "web"]);
    assert_eq!(
        d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "web"]).trim(),
        "exited"
    );
    d.docker_ok(&["rm", "-f", "web", "talker"]);
    assert!(!d.docker_ok(&["ps", "-a"]).contains("web"));
    let missing = d.docker(&["inspect", "web"]);
    assert!(!missing.status.success());
    d.docker_ok(&["volume", "rm", "data"]);

    // A VM, as Docker clients see one: a container labelled berth.kind=vm.
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "dvm",
        "--label",
        "berth.kind=vm",
        "-m",
        "256m",
        "busybox",
        "sleep",
        "1000",
    ]);
    let vms = d.docker_ok(&[
        "ps",
        "--filter",
        "label=berth.kind=vm",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(vms.starts_with("dvm Up"), "{vms}");
    assert_eq!(d.daemon.inspect("dvm")["kind"], "vm");
    assert_eq!(d.docker_ok(&["exec", "dvm", "echo", "in a vm"]), "in a vm\n");
    d.docker_ok(&["rm", "-f", "dvm"]);
}

fn write_compose_file(dir: &Path, port: u16) -> PathBuf {
    let file = dir.join("docker-compose.yml");
    std::fs::write(
        &file,
        format!(
            r#"version: "3.7"
services:
  web:
    image: busybox
    command: httpd -f -p 80 -h /etc
    ports:
      - "{port}:80"
  db:
    image: busybox
    command: sh -c 'echo db ready; date > /data/started; sleep 100000'
    volumes:
      - dbdata:/data
volumes:
  dbdata: {{}}
"#
        ),
    )
    .unwrap();
    file
}

#[test]
fn docker_compose_brings_a_stack_up_and_down() {
    let d = DockerDaemon::start();
    let dir = temp_dir("bd-compose");
    let port = published::free_port();
    let file = write_compose_file(&dir, port);
    let compose = |args: &[&str]| {
        let mut command = d.command(COMPOSE);
        command
            .current_dir(&dir)
            .args(["-f", file.to_str().unwrap(), "-p", "stack", "--no-ansi"])
            .args(args);
        let output = run(command, &format!("docker-compose {}", args.join(" ")));
        assert!(
            output.status.success(),
            "docker-compose {} failed:\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            args.join(" "),
            text(&output.stdout),
            text(&output.stderr),
            tail(&d.daemon.log())
        );
        text(&output.stdout) + &text(&output.stderr)
    };

    compose(&["up", "-d"]);
    let ps = compose(&["ps"]);
    assert!(ps.contains("stack_web_1") && ps.contains("stack_db_1"), "{ps}");
    assert!(ps.matches("Up").count() >= 2, "{ps}");
    assert!(serves_passwd(&d, port), "the web service answers on its port");
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs = compose(&["logs", "db"]);
        if logs.contains("db ready") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(logs.contains("db ready"), "{logs}");
    // The volume is Compose's, labelled as it labels it; the services share a network.
    let volume = d.docker_ok(&[
        "volume",
        "inspect",
        "-f",
        "{{index .Labels \"com.docker.compose.project\"}}",
        "stack_dbdata",
    ]);
    assert_eq!(volume.trim(), "stack");
    assert!(d.docker_ok(&["network", "ls"]).contains("stack_default"));
    // Service names resolve on the network (Compose's aliases).
    let ping = d.docker_ok(&["exec", "stack_web_1", "nslookup", "db"]);
    assert!(ping.contains("Address"), "{ping}");
    // A second `up` finds everything as it should be.
    let again = compose(&["up", "-d"]);
    assert!(again.contains("is up-to-date"), "{again}");

    compose(&["down"]);
    let left = d.docker_ok(&["ps", "-a", "--filter", "label=com.docker.compose.project=stack", "-q"]);
    assert!(left.trim().is_empty(), "containers left: {left}");
    assert!(!d.docker_ok(&["network", "ls"]).contains("stack_default"));
    // `down` keeps named volumes, as Compose's does.
    assert!(d.docker_ok(&["volume", "ls", "-q"]).contains("stack_dbdata"));
    d.docker_ok(&["volume", "rm", "stack_dbdata"]);
}

#[test]
fn docker_py_runs_lists_and_execs() {
    let d = DockerDaemon::start();
    let script = r#"
import sys, time, docker
client = docker.DockerClient(base_url=sys.argv[1])
assert client.ping()
# Not detached: create, start, wait, logs.
assert client.containers.run("busybox", ["echo", "direct"], remove=True) == b"direct\n"
container = client.containers.run("busybox", ["sh", "-c", "echo py-hello; sleep 1000"], detach=True, name="pyc")
for _ in range(100):
    if b"py-hello" in container.logs():
        break
    time.sleep(0.1)
assert container.logs() == b"py-hello\n", container.logs()
assert "pyc" in [c.name for c in client.containers.list()]
container.reload()
assert container.status == "running", container.status
code, output = container.exec_run(["sh", "-c", "echo exec-out; exit 4"])
assert (code, output) == (4, b"exec-out\n"), (code, output)
tags = [tag for image in client.images.list() for tag in image.tags]
assert "busybox:latest" in tags, tags
container.remove(force=True)
assert "pyc" not in [c.name for c in client.containers.list(all=True)]
print("docker-py ok")
"#;
    let mut command = d.command(PYTHON);
    command.args(["-c", script, &d.host()]);
    let output = run(command, "docker-py");
    assert!(
        output.status.success() && text(&output.stdout).contains("docker-py ok"),
        "stdout: {}\nstderr: {}\ndaemon log:\n{}",
        text(&output.stdout),
        text(&output.stderr),
        tail(&d.daemon.log())
    );
}
