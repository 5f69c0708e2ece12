//! `/metrics`: OpenMetrics text on the API socket and on `--metrics-listen`, read by the
//! Prometheus client library's own strict OpenMetrics parser (Debian's
//! python3-prometheus-client), as a Prometheus server would read it.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Daemon;

/// Debian's Python, which has the parser (the machine may have another python3 first).
const PYTHON: &str = "/usr/bin/python3";

/// Parses `text` with prometheus_client's OpenMetrics parser; returns one line per sample:
/// `name{label="value",...} value`, labels sorted.
fn parse(text: &str) -> String {
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
        print(f"{sample.name}{{{labels}}} {sample.value}")
"#;
    let mut child = Command::new(PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/install-deps.sh installs python3-prometheus-client)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the OpenMetrics parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn http_get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to --metrics-listen");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

fn body(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// The value of the first sample whose line starts with `prefix` and contains `part`.
fn value(samples: &str, prefix: &str, part: &str) -> Option<f64> {
    samples
        .lines()
        .find(|line| line.starts_with(prefix) && line.contains(part))
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn metrics_are_openmetrics_with_instances_nodes_and_the_api() {
    let address = format!("127.0.0.1:{}", crate::common::free_port());
    let d = Daemon::start_with_args(&["--metrics-listen", &address], "");
    d.ok(&[
        "image",
        "import",
        "--tag",
        "busybox",
        crate::common::busybox_tar().to_str().unwrap(),
    ]);
    // A container that reads, writes and talks: every counter has something to count.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "--memory",
        "64m",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/tmp/f bs=1M count=8 conv=fsync 2>/dev/null; ping -c 3 -i 0.2 $(ip route | awk '/default/ {print $3}') >/dev/null 2>&1; while :; do sleep 1; done",
    ]);
    d.ok(&["run", "--name", "done", "busybox", "true"]);
    d.ok(&["ps", "-a"]);

    // Both places serve the same exposition.
    let reply = d.raw_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{reply}"
    );
    parse(body(&reply));

    // The ping's packets are counted once they went: poll the TCP listener until they show.
    let deadline = Instant::now() + Duration::from_secs(20);
    let samples = loop {
        let reply = http_get(&address, "/metrics");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        let samples = parse(body(&reply));
        let sent = value(
            &samples,
            "berth_instance_network_transmit_bytes_total{",
            "name=\"busy\"",
        );
        if sent.unwrap_or(0.0) > 0.0 || Instant::now() > deadline {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!("{samples}");

    // Instances: states of all, usage of the running one.
    assert_eq!(
        value(&samples, "berth_instance_state{", "name=\"busy\""),
        Some(1.0),
        "{samples}"
    );
    assert!(
        samples.contains("name=\"busy\",node=") && samples.contains("state=\"running\""),
        "{samples}"
    );
    assert!(
        samples.lines().any(|l| l.starts_with("berth_instance_state{")
            && l.contains("name=\"done\"")
            && l.contains("state=\"exited\"")),
        "{samples}"
    );
    assert!(value(&samples, "berth_instance_cpu_seconds_total{", "name=\"busy\"").unwrap_or(0.0) > 0.0);
    assert!(value(&samples, "berth_instance_memory_bytes{", "name=\"busy\"").unwrap_or(0.0) > 0.0);
    assert_eq!(
        value(&samples, "berth_instance_memory_limit_bytes{", "name=\"busy\""),
        Some(64.0 * 1024.0 * 1024.0)
    );
    assert!(value(&samples, "berth_instance_pids{", "name=\"busy\"").unwrap_or(0.0) >= 1.0);
    assert!(
        value(
            &samples,
            "berth_instance_network_transmit_bytes_total{",
            "name=\"busy\""
        )
        .unwrap_or(0.0)
            > 0.0,
        "{samples}"
    );
    assert!(value(&samples, "berth_instance_io_write_bytes_total{", "name=\"busy\"").is_some());

    // The node: capacity and what the container reserves.
    assert!(value(&samples, "berth_node_capacity_cpus{", "node=").unwrap_or(0.0) > 0.0);
    assert!(value(&samples, "berth_node_capacity_memory_bytes{", "node=").unwrap_or(0.0) > 0.0);
    assert!(
        value(&samples, "berth_node_state{", "state=\"ready\"") == Some(1.0),
        "{samples}"
    );
    assert!(
        value(&samples, "berth_node_instances{", "node=") == Some(2.0),
        "{samples}"
    );

    // The daemon: API latency by route template (never the raw path), store requests.
    assert!(
        value(
            &samples,
            "berth_api_request_duration_seconds_count{",
            "route=\"/v1/instances\""
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{samples}"
    );
    assert!(
        !samples.contains("route=\"/v1/instances/busy"),
        "raw paths would make a series per instance: {samples}"
    );
    assert!(
        value(
            &samples,
            "berth_store_request_duration_seconds_count{",
            "backend=\"sqlite\""
        )
        .unwrap_or(0.0)
            > 0.0,
        "{samples}"
    );
    assert!(samples.contains("berth_build_info{version="), "{samples}");

    // Nothing else is served on the metrics listener.
    assert!(http_get(&address, "/v1/instances").starts_with("HTTP/1.1 404"));
    d.ok(&["rm", "-f", "busy", "done"]);
}
