//! The state store as a user meets it: a daemon on a real 3-member etcd (`--store`,
//! experimental) keeps its records under /berth/v1/ — each instance as a spec and a status
//! key, names unique through an index, no node identity — survives a restart from etcd and
//! the loss of one etcd member; a daemon upgraded from the old SQLite schema keeps its
//! instances.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::etcd::{self, EtcdCluster};
use crate::common::{busybox_tar, temp_dir, Daemon, BERTH};

fn on_etcd(cluster: &EtcdCluster) -> Daemon {
    Daemon::start_with_args(&["--store", &cluster.url()], "")
}

#[test]
fn daemon_keeps_its_state_in_etcd_and_survives_losing_a_member() {
    let mut cluster = etcd::start(3);
    let mut daemon = on_etcd(&cluster);
    daemon.ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);
    daemon.ok(&["run", "-d", "--name", "web", "busybox", "sleep", "600"]);
    let web = daemon.inspect("web");
    let id = web["id"].as_str().unwrap().to_string();
    assert_eq!(web["state"], "running");

    // What etcd holds: the desired and the observed part apart, the name index, the image.
    let keys = etcd::keys(&cluster, "/berth/v1/");
    for expected in [
        format!("/berth/v1/instances/{id}/spec"),
        format!("/berth/v1/instances/{id}/status"),
        "/berth/v1/names/instances/web".to_string(),
    ] {
        assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
    }
    assert!(
        keys.iter().any(|k| k.starts_with("/berth/v1/images/sha256:")),
        "{keys:?}"
    );
    assert_eq!(etcd::value(&cluster, "/berth/v1/names/instances/web"), Some(id.clone()));
    let status: serde_json::Value =
        serde_json::from_str(&etcd::value(&cluster, &format!("/berth/v1/instances/{id}/status")).unwrap()).unwrap();
    assert_eq!(status["state"], "running");
    assert!(status["pid"].is_u64() && status.get("spec").is_none(), "{status}");
    // The node's identity stays in its state directory, never in the shared store.
    assert!(!keys.iter().any(|k| k.starts_with("/berth/v1/meta/")), "{keys:?}");

    // The name is unique through the store.
    let refused = daemon.fails(&["run", "-d", "--name", "web", "busybox", "true"]);
    assert!(refused.contains("'web' is already in use"), "{refused}");
    assert_eq!(refused.trim().lines().count(), 1, "{refused}");

    // One member of three dies: nothing changes for the user.
    cluster.kill(0);
    daemon.ok(&["run", "-d", "--name", "db", "busybox", "sleep", "600"]);
    daemon.ok(&["stop", "-t", "1", "db"]);
    let listed = daemon.ok(&["ps", "-a"]);
    assert!(listed.contains("web") && listed.contains("db"), "{listed}");

    // The daemon restarts and finds everything in etcd (the instance kept running).
    daemon.kill9();
    daemon.restart_only();
    let web = daemon.wait_for("web", Duration::from_secs(10), |v| v["state"] == "running");
    assert_eq!(
        (web["id"].as_str(), web["state"].as_str()),
        (Some(id.as_str()), Some("running"))
    );
    assert_eq!(daemon.inspect("db")["state"], "exited");
    daemon.ok(&["rm", "-f", "web", "db"]);
    assert!(etcd::keys(&cluster, "/berth/v1/instances/").is_empty());
    assert!(etcd::keys(&cluster, "/berth/v1/names/").is_empty());
}

/// `berth daemon --store` with something that is not etcd, or an etcd nobody runs, stops
/// at once with one line that says what to fix.
#[test]
fn daemon_refuses_a_store_it_cannot_use() {
    for (store, expected) in [
        ("http://127.0.0.1:2379", "etcd://HOST:PORT"),
        ("etcd://127.0.0.1:1", "does not answer"),
    ] {
        let dir = temp_dir("bs");
        let output = Command::new(BERTH)
            .args(["daemon", "--state-dir"])
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(dir.join("s.sock"))
            .args(["--store", store])
            .stdin(Stdio::null())
            .output()
            .expect("berth daemon");
        let _ = std::fs::remove_dir_all(&dir);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert!(!output.status.success(), "{stderr}");
        assert_eq!(errors.len(), 1, "one error line: {stderr}");
        assert!(
            errors[0].contains("--store") && errors[0].contains(expected),
            "{stderr}"
        );
    }
}

/// A state database of the schema before revisions (one table per kind) is carried over
/// when the daemon starts: its instances, images and networks are still there, names still
/// taken.
#[test]
fn daemon_upgraded_from_the_old_schema_keeps_its_instances() {
    let mut daemon = Daemon::with_busybox();
    daemon.ok(&["run", "--name", "old", "busybox", "true"]);
    let old = daemon.inspect("old");
    let images = daemon.ok(&["image", "ls"]);
    daemon.kill9();

    // The same state, rewritten as the old schema kept it: an instance is one document.
    let path = daemon.state.join("berth.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut records: Vec<(String, String)> = Vec::new();
        {
            let mut stmt = conn
                .prepare("SELECT key, CAST(value AS TEXT) FROM kv ORDER BY key")
                .unwrap();
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap();
            records.extend(rows.map(Result::unwrap));
        }
        conn.execute_batch(
            "DROP TABLE kv; DROP TABLE changes; DROP TABLE store_state;
             CREATE TABLE instances (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
             CREATE TABLE images (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE networks (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE volumes (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )
        .unwrap();
        let mut instances: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
            Default::default();
        for (key, value) in &records {
            let parts: Vec<&str> = key.trim_start_matches("/berth/v1/").split('/').collect();
            match parts.as_slice() {
                ["instances", id, _] => {
                    let part: serde_json::Value = serde_json::from_str(value).unwrap();
                    instances
                        .entry(id.to_string())
                        .or_default()
                        .extend(part.as_object().unwrap().clone());
                }
                ["images", id] => {
                    conn.execute("INSERT INTO images VALUES (?1, ?2)", [id, &value.as_str()])
                        .unwrap();
                }
                ["networks", name] | ["volumes", name] => {
                    let table = parts[0];
                    conn.execute(&format!("INSERT INTO {table} VALUES (?1, ?2)"), [name, &value.as_str()])
                        .unwrap();
                }
                ["meta", name] => {
                    conn.execute("INSERT INTO meta VALUES (?1, ?2)", [name, &value.as_str()])
                        .unwrap();
                }
                _ => {}
            }
        }
        for (id, doc) in instances {
            let name = doc["name"].as_str().unwrap().to_string();
            let doc = serde_json::Value::Object(doc).to_string();
            conn.execute("INSERT INTO instances VALUES (?1, ?2, ?3)", [&id, &name, &doc])
                .unwrap();
        }
    }
    daemon.restart_only();
    assert_eq!(daemon.inspect("old"), old);
    assert_eq!(daemon.ok(&["image", "ls"]), images);
    let refused = daemon.fails(&["run", "--name", "old", "busybox", "true"]);
    assert!(refused.contains("'old' is already in use"), "{refused}");
    daemon.ok(&["rm", "old"]);
    daemon.ok(&["run", "--rm", "--name", "old", "busybox", "true"]);
}
