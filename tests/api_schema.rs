//! The API description matches the server: schemathesis generates requests from the
//! description a real daemon serves (GET /v1/openapi.json, which must equal
//! docs/openapi.json) and checks every answer against it — statuses, content types, bodies,
//! invalid input refused, valid input accepted, no 5xx — including a stateful phase that
//! creates, starts, snapshots and removes what it made. tests/schemathesis.toml lists the
//! exceptions and why.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{loop_devices_under, mounts_under, Daemon};

const SCHEMATHESIS_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/schemathesis.toml");
const COMMITTED_DESCRIPTION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

/// socat relaying a TCP port on 127.0.0.1 to the daemon's unix socket (schemathesis speaks
/// TCP only); ended when dropped.
struct TcpBridge {
    port: u16,
    child: Child,
}

impl TcpBridge {
    fn start(socket: &Path, log: &Path) -> TcpBridge {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
            .arg(format!("UNIX-CONNECT:{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // A client that hangs up early makes socat log a broken pipe: not the test's news.
            .stderr(std::fs::File::create(log).expect("socat log"))
            .spawn()
            .expect("socat must be installed (scripts/install-deps.sh)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        TcpBridge { port, child }
    }
}

impl Drop for TcpBridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn served_description(d: &Daemon) -> serde_json::Value {
    let reply = d.raw_request(b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let body = reply.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET /v1/openapi.json is not JSON ({e}):\n{reply}"))
}

#[test]
fn schemathesis_finds_no_difference_between_the_description_and_the_daemon() {
    let d = Daemon::with_busybox();
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(COMMITTED_DESCRIPTION).expect("docs/openapi.json"))
            .expect("docs/openapi.json is JSON");
    assert!(
        served_description(&d) == committed,
        "the daemon serves another description than docs/openapi.json: run `berth openapi > docs/openapi.json`"
    );

    let bridge = TcpBridge::start(&d.socket, &d.dir.join("socat.log"));
    let url = format!("http://127.0.0.1:{}", bridge.port);
    let started = Instant::now();
    let output = Command::new("st")
        .args(["--config-file", SCHEMATHESIS_CONFIG, "run"])
        .arg(format!("{url}/v1/openapi.json"))
        .args(["--url", &url])
        // Reproducible and bounded: a fixed seed, 20 cases an operation, one worker (two
        // cores), no example database, and a timeout above the 5 s its instances run.
        .args(["--seed", "1", "--max-examples", "20", "--workers", "1"])
        .args(["--request-timeout", "20", "--generation-database", "none"])
        // A connection the relay drops under load is retried; a handler's bug is not a
        // network failure (the daemon answers it with a 500, which fails the run).
        .args(["--request-retries", "2"])
        // Pull and push contact registries on other hosts (tests/registry.rs runs one).
        .args(["--exclude-path-regex", "^/v1/images/(pull|push)$"])
        .args(["--no-color"])
        .env("BERTH_SCHEMATHESIS_SUBNET", format!("{}.200.0/24", d.subnet_prefix))
        // Anything schemathesis writes (reports, caches) stays in the test's directory.
        .current_dir(&d.dir)
        .stdin(Stdio::null())
        .output()
        .expect("schemathesis must be installed (`st`, scripts/install-deps.sh)");
    let elapsed = started.elapsed();
    drop(bridge);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // "N generated, ..." and "=== 3 failures, 1 error, 2 warnings in 95.1s ===".
    let generated = report
        .lines()
        .find(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains(" generated"))
        .unwrap_or_default();
    let verdict = report.lines().rfind(|l| l.starts_with("==")).unwrap_or_default();
    eprintln!(
        "schemathesis ({:.0} s): {}\n{verdict}",
        elapsed.as_secs_f64(),
        generated.trim()
    );
    assert!(
        output.status.success() && !verdict.contains("failure") && !verdict.contains("error"),
        "schemathesis found differences (exit {:?}):\n{report}\ndaemon log (errors):\n{}",
        output.status.code(),
        d.log()
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The daemon survived it, and what the generated requests made goes away with it.
    assert_eq!(
        d.ok(&["run", "--rm", "busybox", "echo", "still serving"]),
        "still serving\n"
    );
    assert!(!d.log().contains("panicked"), "the daemon panicked:\n{}", d.log());
    let networks: Vec<serde_json::Value> =
        serde_json::from_str(&d.ok(&["network", "ls", "--json"])).expect("network ls JSON");
    for network in &networks {
        let subnet = network["subnet"].as_str().unwrap_or_default();
        assert!(
            subnet.starts_with(&format!("{}.", d.subnet_prefix)),
            "a network outside the test's range: {network}"
        );
    }
    for id in d.ok(&["ps", "-aq"]).lines() {
        d.ok(&["rm", "-f", id]);
    }
    let volumes: Vec<serde_json::Value> =
        serde_json::from_str(&d.ok(&["volume", "ls", "--json"])).expect("volume ls JSON");
    for volume in &volumes {
        d.ok(&["volume", "rm", volume["name"].as_str().unwrap_or_default()]);
    }
    assert_eq!(mounts_under(&d.dir), 0, "mounts left under {}", d.dir.display());
    assert_eq!(
        loop_devices_under(&d.dir),
        0,
        "loop devices left under {}",
        d.dir.display()
    );
}

/// What schemathesis found: an import path that names a device or a big sparse file (a
/// volume's image, say) was read whole — /dev/zero until the disk was full. Such paths are
/// refused before anything is read or copied, and the daemon keeps serving.
#[test]
fn imports_of_devices_and_sparse_files_are_refused_before_reading() {
    let d = Daemon::start();
    let sparse = d.dir.join("sparse.img");
    std::fs::File::create(&sparse)
        .and_then(|f| f.set_len(64 << 30))
        .expect("sparse file");
    let sparse = sparse.to_str().unwrap();
    let started = Instant::now();
    for (args, expected) in [
        (vec!["image", "import", "/dev/zero"], "not a regular file"),
        (vec!["image", "import", sparse], "holds no files"),
        (vec!["vm", "import", "/dev/zero"], "not a regular file"),
        (vec!["vm", "import", sparse], "larger than 4MiB"),
    ] {
        let refused = d.fails(&args);
        assert!(refused.contains(expected), "berth {}: {refused}", args.join(" "));
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the refusals read the files"
    );
    let temp = d.state.join("images/tmp");
    let left: Vec<_> = std::fs::read_dir(&temp)
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "copies left in {}: {left:?}", temp.display());
    assert_eq!(d.ok(&["image", "ls", "-q"]), "");
}

/// The event feed is endless unless the client asks for `timeout`: then the response ends,
/// holding what happened meanwhile.
#[test]
fn events_with_a_timeout_end_with_what_happened() {
    use std::io::{Read, Write};
    let d = Daemon::with_busybox();
    let mut stream = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    stream
        .write_all(b"GET /v1/events?timeout=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let started = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply
    });
    std::thread::sleep(Duration::from_millis(300));
    d.ok(&["run", "--rm", "--name", "eventful", "busybox", "true"]);
    let reply = reader.join().expect("reader");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(8), "the stream lasted {elapsed:?}");
    assert!(reply.contains("application/x-ndjson"), "{reply}");
    for action in ["\"create\"", "\"start\"", "\"die\"", "\"destroy\""] {
        assert!(reply.contains(action), "no {action} event in:\n{reply}");
    }
    let refused = d.raw_request(b"GET /v1/events?timeout=86401 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(
        refused.starts_with("HTTP/1.1 400") && refused.contains("timeout"),
        "{refused}"
    );
}

/// What schemathesis found: `kill?signal=37` (a real-time signal, which the API accepts)
/// was a 500. It is delivered like any other.
#[test]
fn real_time_signals_are_delivered() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "rt",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 37' 37; while true; do sleep 0.1; done",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    d.ok(&["kill", "-s", "37", "rt"]);
    let stopped = d.wait_for("rt", Duration::from_secs(10), |v| v["state"] == "exited");
    assert_eq!(stopped["exit_code"], 37, "{stopped}");
}
