//! Bad input gets one clear line, a non-zero status, and nothing half-created; the daemon
//! keeps serving whatever a client sends.

use crate::common::{error_line, stderr, Daemon};

#[test]
fn malformed_flags_name_the_field() {
    let d = Daemon::with_busybox();
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--memory", "12q", "busybox", "true"], "--memory"),
        (&["run", "--cpus", "abc", "busybox", "true"], "--cpus"),
        (&["run", "--pids-limit", "0", "busybox", "true"], "--pids-limit"),
        (&["run", "--name", "a", "--name", "b", "busybox", "true"], "--name"),
        (&["run", "--no-such-flag", "busybox", "true"], "--no-such-flag"),
        (&["run", "--cpus", "64", "busybox", "true"], "cpus"),
        (&["run", "--memory", "100t", "busybox", "true"], "memory"),
        (&["run", "--memory", "1m", "busybox", "true"], "memory"),
        (&["run", "--name", "bad/name", "busybox", "true"], "name"),
        (&["run", "nosuchimage", "true"], "image not found: nosuchimage"),
        (&["run", "Bad:Ref!", "true"], "invalid image reference"),
        (&["run", "-e", "=x", "busybox", "true"], "KEY=VALUE"),
        (&["run", "-w", "relative", "busybox", "true"], "absolute"),
        (&["kill", "-s", "NOPE", "x"], "signal"),
    ];
    for (args, expected) in cases {
        let output = d.run(args);
        assert!(!output.status.success(), "berth {} should fail", args.join(" "));
        let line = error_line(&output);
        assert!(
            line.contains(expected),
            "berth {}: expected '{expected}' in: {}",
            args.join(" "),
            stderr(&output)
        );
    }
    // Nothing was created by any of them.
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    assert_eq!(d.instance_dirs(), 0, "instance directories left behind");
}

#[test]
fn name_clash_is_refused() {
    let d = Daemon::with_busybox();
    d.ok(&["create", "--name", "dup", "busybox", "true"]);
    let output = d.run(&["create", "--name", "dup", "busybox", "true"]);
    assert!(!output.status.success());
    assert!(
        error_line(&output).contains("'dup' is already in use"),
        "{}",
        stderr(&output)
    );
    assert_eq!(d.ok(&["ps", "-aq"]).lines().count(), 1);
}

#[test]
fn a_command_that_does_not_exist_fails_cleanly() {
    let d = Daemon::with_busybox();
    let output = d.run(&["run", "--rm", "busybox", "/no/such/binary"]);
    assert!(!output.status.success());
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    // The daemon still works afterwards.
    assert_eq!(d.ok(&["run", "--rm", "busybox", "echo", "fine"]), "fine\n");
}

#[test]
fn garbage_on_the_socket_gets_4xx_and_the_daemon_keeps_serving() {
    let d = Daemon::with_busybox();
    let reply = d.raw_request(b"GARBAGE\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 4"), "{reply}");
    let reply = d.raw_request(b"\x00\x01\x02\x03 binary junk \xff\xfe\r\n\r\n");
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 4"), "{reply}");
    let body = b"{not json";
    let request = format!(
        "POST /v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let reply = d.raw_request(&bytes);
    assert!(reply.starts_with("HTTP/1.1 4"), "{reply}");
    let unknown_field = br#"{"image":"busybox","command":["true"],"bogus":1}"#;
    let request = format!(
        "POST /v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        unknown_field.len()
    );
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(unknown_field);
    let reply = d.raw_request(&bytes);
    assert!(reply.starts_with("HTTP/1.1 4") && reply.contains("bogus"), "{reply}");
    let reply = d.raw_request(b"GET /v1/nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert_eq!(
        d.ok(&["run", "--rm", "busybox", "echo", "still serving"]),
        "still serving\n"
    );
}

#[test]
fn openapi_description_is_published() {
    let d = Daemon::start();
    let reply = d.raw_request(b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let spec: serde_json::Value = serde_json::from_str(body).expect("OpenAPI JSON");
    assert!(spec["openapi"].as_str().unwrap().starts_with('3'));
    for path in [
        "/v1/instances",
        "/v1/instances/{id}/start",
        "/v1/images/pull",
        "/v1/info",
    ] {
        assert!(spec["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
}
