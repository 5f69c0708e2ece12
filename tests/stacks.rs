//! `berth apply` on one host (the embedded default): a Compose file's services run as a
//! stack, a second apply changes nothing, a changed service rolls out replica by replica,
//! a failing rollout rolls back, fewer replicas remove the extra, bad files are refused by
//! key, and `stack rm` removes it.

use crate::common::{temp_dir, Daemon};

const STACK: &str = r#"
name: demo
services:
  web:
    image: busybox
    command: ["sh", "-c", "echo web $$MODE; exec sleep 600"]
    environment:
      MODE: one
    depends_on:
      db: {condition: service_healthy}
    deploy:
      replicas: 2
      update_config: {order: start-first, failure_action: rollback}
    healthcheck:
      test: ["CMD", "true"]
      interval: 200ms
    cap_add: [NET_ADMIN]
  db:
    image: busybox
    command: sh -c "sleep 1; touch /data/ready; exec sleep 600"
    volumes: ["data:/data"]
    ports: ["18090:80"]
    healthcheck:
      test: test -f /data/ready
      interval: 300ms
      retries: 30
volumes:
  data: {}
"#;

#[test]
fn a_compose_file_runs_as_a_stack_and_apply_changes_only_what_differs() {
    let d = Daemon::with_busybox();
    let dir = temp_dir("bt-stack");
    let file = dir.join("compose.yaml");
    let path = file.to_str().unwrap().to_string();
    std::fs::write(&file, STACK).unwrap();

    let applied = d.run(&["apply", "-f", &path]);
    assert!(applied.status.success(), "{applied:?}");
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert!(
        stderr.contains("services.web.cap_add"),
        "unused keys are listed: {stderr}"
    );
    // web waited for db to be healthy, and its replicas were gated on their own checks.
    assert_eq!(d.inspect("demo-db-1")["health"]["status"], "healthy");
    for name in ["demo-web-1", "demo-web-2"] {
        assert_eq!(d.inspect(name)["health"]["status"], "healthy", "{name}");
    }
    assert!(d.ok(&["ps"]).contains("(healthy)"));
    // The stack is a record of its own: what the last apply asked for.
    let record: serde_json::Value = serde_json::from_str(&d.ok(&["stack", "inspect", "demo"])).unwrap();
    assert_eq!(record["services"][1]["name"], "web", "{record}");
    assert_eq!(record["services"][1]["replicas"], 2, "{record}");
    assert_eq!(record["services"][0]["healthcheck"], true, "{record}");
    let ps = d.ok(&["stack", "ps", "demo"]);
    for name in ["demo-db-1", "demo-web-1", "demo-web-2"] {
        assert!(ps.contains(name), "{ps}");
    }
    assert!(d.ok(&["stack", "ls"]).contains("3/3"));
    let db = d.inspect("demo-db-1");
    assert_eq!(db["spec"]["labels"]["berth.stack"], "demo");
    assert_eq!(db["spec"]["volumes"][0]["volume"], "demo-data", "{db}");
    assert!(d.ok(&["logs", "demo-web-1"]).contains("web one"));

    // Again: nothing to do.
    assert!(d.ok(&["apply", "-f", &path]).contains("up to date"));
    assert!(d.ok(&["diff", "-f", &path]).contains("up to date"));

    // A changed service: diff says what, apply replaces its replicas (start-first: the new
    // generation runs before the old goes); the other service is untouched.
    std::fs::write(&file, STACK.replace("MODE: one", "MODE: two")).unwrap();
    let diff = d.ok(&["diff", "-f", &path]);
    assert!(
        diff.contains("~ replace demo-web-1") && diff.contains("~ replace demo-web-2"),
        "{diff}"
    );
    assert!(!diff.contains("demo-db-1"), "{diff}");
    d.ok(&["apply", "-f", &path]);
    assert_eq!(d.inspect("demo-db-1")["id"], db["id"]);
    assert!(d.ok(&["logs", "demo-web-1-g2"]).contains("web two"));
    assert!(d.fails(&["inspect", "demo-web-1"]).contains("no such instance"));

    // A rollout whose new replica does not stay up rolls back: the old one keeps running.
    std::fs::write(
        &file,
        STACK
            .replace("MODE: one", "MODE: two")
            .replace("exec sleep 600", "exit 3"),
    )
    .unwrap();
    let failed = d.fails(&["apply", "-f", &path]);
    assert!(failed.contains("rolled back"), "{failed}");
    assert_eq!(d.inspect("demo-web-1-g2")["state"], "running");

    // Fewer replicas: the extra one goes.
    std::fs::write(
        &file,
        STACK
            .replace("MODE: one", "MODE: two")
            .replace("replicas: 2", "replicas: 1"),
    )
    .unwrap();
    let out = d.ok(&["apply", "-f", &path]);
    assert!(out.contains("- demo-web-2-g2 (fewer replicas)"), "{out}");

    // Bad files are refused by key, and nothing changes.
    for (text, expected) in [
        (
            STACK.replace(
                "db: {condition: service_healthy}",
                "cache: {condition: service_healthy}",
            ),
            "services.web.depends_on: no service cache",
        ),
        (
            STACK.replace("cap_add: [NET_ADMIN]", "ports: [\"18090:81\"]"),
            "host port 18090/tcp is also published by service",
        ),
        (
            STACK.replace("interval: 200ms", "interval: 5ms"),
            "services.web.healthcheck.interval: the health check's interval",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let refused = d.fails(&["apply", "-f", &path]);
        assert!(refused.contains(expected), "{refused}");
    }
    assert_eq!(d.inspect("demo-web-1-g2")["state"], "running");

    d.ok(&["stack", "rm", "demo"]);
    assert!(d.fails(&["stack", "ps", "demo"]).contains("no stack demo"));
    assert!(d.fails(&["stack", "inspect", "demo"]).contains("no stack demo"));
    assert!(!d.ok(&["stack", "ls"]).contains("demo"));
    let _ = std::fs::remove_dir_all(&dir);
}
