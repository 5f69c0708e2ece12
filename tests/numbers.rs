//! Numbers from users are checked where they enter: raw API requests with huge or negative
//! values get a 4xx JSON body naming the field, the daemon keeps serving, and the instance
//! they were aimed at is as it was.

use crate::common::Daemon;

/// Sends one HTTP request to the daemon; returns the status and the decoded JSON body.
fn api(d: &Daemon, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let reply = d.raw_request(request.as_bytes());
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP reply to {method} {path}: {reply:?}"));
    let json = reply
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn assert_refused(d: &Daemon, method: &str, path: &str, body: Option<&str>, field: &str) {
    let (status, json) = api(d, method, path, body);
    assert!(
        (400..500).contains(&status),
        "{method} {path} {body:?}: status {status}, {json}"
    );
    assert_eq!(json["field"], field, "{method} {path} {body:?}: {json}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "{method} {path}: one line, got {message:?}"
    );
}

#[test]
fn huge_numbers_in_requests_get_a_4xx_naming_the_field() {
    let d = Daemon::with_busybox();
    let id = d.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "n",
        "busybox",
        "sleep",
        "1000",
    ]);
    let id = id.trim();
    let max = u64::MAX.to_string();
    let cases: Vec<(&str, String, Option<String>, &str)> = vec![
        (
            "POST",
            format!("/v1/instances/{id}/stop?timeout={max}"),
            None,
            "timeout",
        ),
        (
            "POST",
            format!("/v1/instances/{id}/restart?timeout={max}"),
            None,
            "timeout",
        ),
        ("POST", "/v1/instances/n/stop?timeout=-1".into(), None, "timeout"),
        (
            "POST",
            "/v1/instances/n/stop?timeout=99999999999999999999999".into(),
            None,
            "timeout",
        ),
        (
            "GET",
            "/v1/instances/n/logs?tail=99999999999999999999999".into(),
            None,
            "tail",
        ),
        ("GET", "/v1/instances/n/logs?tail=-5".into(), None, "tail"),
        ("POST", format!("/v1/instances/n/kill?signal={max}"), None, "signal"),
        ("POST", "/v1/instances/n/kill?signal=-9".into(), None, "signal"),
        ("POST", "/v1/instances/n/kill?signal=65".into(), None, "signal"),
        (
            "POST",
            "/v1/instances/n/wait?condition=forever".into(),
            None,
            "condition",
        ),
        ("GET", "/v1/instances?all=maybe".into(), None, "all"),
        (
            "POST",
            "/v1/instances/n/update".into(),
            Some(format!(r#"{{"limits":{{"memory_bytes":{max}}}}}"#)),
            "memory",
        ),
        (
            "POST",
            "/v1/instances/n/update".into(),
            Some(r#"{"limits":{"memory_bytes":1e30}}"#.into()),
            "limits.memory_bytes",
        ),
        (
            "POST",
            "/v1/instances/n/update".into(),
            Some(format!(r#"{{"limits":{{"pids":{max}}}}}"#)),
            "pids",
        ),
        (
            "POST",
            "/v1/instances/n/update".into(),
            Some(r#"{"limits":{"cpus":1e300}}"#.into()),
            "limits.cpus",
        ),
        (
            "POST",
            "/v1/instances/n/update".into(),
            Some(format!(r#"{{"limits":{{"reserve_memory_bytes":{max}}}}}"#)),
            "reserve_memory",
        ),
        (
            "POST",
            "/v1/instances".into(),
            Some(format!(
                r#"{{"image":"busybox","command":["true"],"disk_bytes":{max}}}"#
            )),
            "disk",
        ),
        (
            "POST",
            "/v1/instances".into(),
            Some(format!(
                r#"{{"image":"busybox","command":["true"],"bandwidth_bits_per_second":{max}}}"#
            )),
            "bandwidth",
        ),
        (
            "POST",
            "/v1/instances".into(),
            Some(format!(
                r#"{{"image":"busybox","kind":"vm","command":["true"],"vm":{{"max_memory_bytes":{max}}}}}"#
            )),
            "max_memory",
        ),
        (
            "POST",
            "/v1/instances".into(),
            Some(r#"{"image":"busybox","vm":{"max_cpus":4294967296}}"#.into()),
            "vm.max_cpus",
        ),
        (
            "POST",
            "/v1/volumes".into(),
            Some(format!(r#"{{"name":"huge","size_bytes":{max}}}"#)),
            "size",
        ),
    ];
    for (method, path, body, field) in &cases {
        assert_refused(&d, method, path, body.as_deref(), field);
    }
    // The instance they aimed at runs on unchanged; nothing else was created.
    let record = d.inspect("n");
    assert_eq!(record["state"], "running");
    assert_eq!(record["limits"]["memory_bytes"], 256u64 << 20);
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), &id[..12]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "");
    // The daemon keeps serving, and a sane stop still works.
    assert_eq!(
        d.ok(&["run", "--rm", "--network", "none", "busybox", "echo", "still serving"]),
        "still serving\n"
    );
    d.ok(&["stop", "-t", "1", "n"]);
    assert_eq!(d.inspect("n")["state"], "exited");
}
