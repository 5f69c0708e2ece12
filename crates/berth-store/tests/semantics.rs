//! The store's promises, one test body each, run against both backends: the embedded
//! SQLite store and a real 3-member etcd cluster started for the test (Debian's etcd 3.4).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_model::network::Network;
use berth_model::volume::Volume;
use berth_model::Instance;
use berth_store::{
    EtcdConfig, EtcdStore, Expect, InstanceEvent, RecordEvent, RecordTxn, SqliteStore, Store, StoreError, Txn,
    WatchEventKind, MAX_TXN_OPS,
};
use berth_test_etcd::EtcdCluster;

/// A store to test, and what keeps its backend alive.
struct Fixture {
    store: Store,
    cluster: Option<EtcdCluster>,
    _dir: Option<tempfile::TempDir>,
}

fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let backend = SqliteStore::open(&dir.path().join("berth.db")).unwrap();
    Fixture {
        store: Store::new(Arc::new(backend)),
        cluster: None,
        _dir: Some(dir),
    }
}

async fn etcd() -> Fixture {
    assert!(
        berth_test_etcd::available(),
        "etcd is not installed: apt-get install etcd-server (scripts/install-deps.sh)"
    );
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
        .unwrap();
    let backend = EtcdStore::connect(&EtcdConfig::new(cluster.endpoints())).await.unwrap();
    Fixture {
        store: Store::new(Arc::new(backend)),
        cluster: Some(cluster),
        _dir: None,
    }
}

/// Runs one test body against each backend.
macro_rules! on_both_backends {
    ($($body:ident),* $(,)?) => {
        $(mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$body(super::sqlite()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn etcd() {
                super::$body(super::etcd().await).await;
            }
        })*
    };
}

on_both_backends!(
    create_update_delete_are_compare_and_swap,
    instance_spec_and_status_are_written_apart,
    names_stay_unique_under_concurrent_creates,
    concurrent_updates_lose_nothing,
    watch_resumes_from_a_revision,
    compaction_makes_a_watcher_relist,
    lease_expiry_removes_its_keys,
    transactions_are_all_or_nothing,
    values_over_the_limit_are_refused,
    lists_are_paged_at_one_revision,
    a_late_watcher_catches_up_past_the_message_limit,
    footprints_read_what_the_full_records_say,
);

fn volume(name: &str, size_bytes: u64) -> Volume {
    Volume {
        name: name.to_string(),
        driver: "local".into(),
        size_bytes,
        path: format!("/var/lib/berth/volumes/{name}.img"),
        nfs: None,
        created_at: chrono::Utc::now(),
        snapshots: Vec::new(),
    }
}

fn instance(id: &str, name: &str) -> Instance {
    serde_json::from_value(serde_json::json!({
        "id": id, "name": name, "kind": "container", "image": "busybox",
        "state": "created", "exit_code": null, "oom_killed": false, "pid": null,
        "supervisor_pid": null, "limits": {"cpus": null, "memory_bytes": 67108864, "pids": null},
        "default_limits": [], "node": "node-a", "created_at": chrono::Utc::now(),
        "started_at": null, "finished_at": null, "restart_count": 0, "error": null,
        "spec": {"kind": "container", "image": "busybox", "image_id": "sha256:00",
                 "process": {"args": ["sh"], "env": [], "working_dir": "/", "user": "", "tty": false, "open_stdin": false},
                 "hostname": name, "auto_remove": false},
    }))
    .unwrap()
}

fn id(n: usize) -> String {
    format!("{n:064x}")
}

async fn create_update_delete_are_compare_and_swap(f: Fixture) {
    let store = &f.store;
    let created = store.create(&volume("data", 1)).await.unwrap();
    assert!(matches!(
        store.create(&volume("data", 2)).await,
        Err(StoreError::AlreadyExists { kind: "volume", .. })
    ));

    let read = store.get::<Volume>("data").await.unwrap();
    assert_eq!((read.value.size_bytes, read.revision), (1, created));

    let updated = store.update(&volume("data", 2), read.revision).await.unwrap();
    assert!(updated > created);
    // A second writer that read the first revision loses, and is told what it lost to.
    match store.update(&volume("data", 3), read.revision).await {
        Err(StoreError::Conflict { expected, actual, .. }) => {
            assert_eq!((expected, actual), (Expect::Revision(created), Some(updated)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.get::<Volume>("data").await.unwrap().value.size_bytes, 2);

    assert!(matches!(
        store.delete::<Volume>("data", created).await,
        Err(StoreError::Conflict { .. })
    ));
    store.delete::<Volume>("data", updated).await.unwrap();
    assert!(matches!(
        store.get::<Volume>("data").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.update(&volume("data", 4), updated).await,
        Err(StoreError::NotFound { kind: "volume", .. })
    ));
    // Ids cannot reach into other keys: a lookup finds nothing, a write is refused.
    assert!(matches!(
        store.get::<Volume>("../instances").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.create(&volume("../instances", 1)).await,
        Err(StoreError::InvalidKey(_))
    ));
}

async fn instance_spec_and_status_are_written_apart(f: Fixture) {
    let store = &f.store;
    let original = instance(&id(1), "web");
    let created = store.create_instance(&original).await.unwrap();
    assert_eq!(store.get_instance(&id(1)).await.unwrap(), original);

    // The node reports the instance running while the API changes its limits, each with the
    // revision it read: both land, and neither undoes the other.
    let mut status = berth_store::instance::split(&original).1;
    status.state = berth_model::instance::InstanceState::Running;
    status.pid = Some(4242);
    let mut desired = berth_store::instance::split(&original).0;
    desired.limits.memory_bytes = Some(128 << 20);
    store
        .update_instance_status(&status, created.status_revision)
        .await
        .unwrap();
    store
        .update_instance_spec(&desired, created.spec_revision)
        .await
        .unwrap();

    let now = store.instance(&id(1)).await.unwrap();
    assert_eq!(now.instance.pid, Some(4242));
    assert_eq!(now.instance.limits.memory_bytes, Some(128 << 20));
    assert!(now.spec_revision > created.spec_revision);
    assert!(now.status_revision > created.status_revision);
    // The composed record is the API's JSON: the same fields as before the split.
    let json = serde_json::to_value(&now.instance).unwrap();
    let fields: BTreeSet<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    let before = serde_json::to_value(&original).unwrap();
    let fields_before: BTreeSet<&str> = before.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, fields_before);

    // A stale status write loses; a status for a removed instance never brings it back.
    assert!(matches!(
        store.update_instance_status(&status, created.status_revision).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.create_instance(&instance(&id(2), "web")).await,
        Err(StoreError::NameTaken(name)) if name == "web"
    ));
    assert_eq!(store.find_instance("web").await.unwrap().id, id(1));
    assert_eq!(store.find_instance(&id(1)[..6]).await.unwrap().id, id(1));

    store.remove_instance(&id(1), now.spec_revision).await.unwrap();
    assert!(matches!(
        store.update_instance_status(&status, now.status_revision).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.find_instance("web").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.list_instances().await.unwrap().is_empty());
    // The name is free again.
    store.create_instance(&instance(&id(2), "web")).await.unwrap();
}

async fn names_stay_unique_under_concurrent_creates(f: Fixture) {
    const RACERS: usize = 32;
    let tasks: Vec<_> = (0..RACERS)
        .map(|n| {
            let store = f.store.clone();
            tokio::spawn(async move { store.create_instance(&instance(&id(n + 1), "db")).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::NameTaken(name)) => assert_eq!(name, "db"),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(won, 1, "exactly one create of the name wins");
    assert_eq!(f.store.list_instances().await.unwrap().len(), 1);
}

async fn concurrent_updates_lose_nothing(f: Fixture) {
    const WRITERS: u64 = 8;
    const EACH: u64 = 10;
    f.store.create(&volume("counter", 0)).await.unwrap();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = f.store.clone();
            tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..EACH {
                    loop {
                        let read = store.get::<Volume>("counter").await.unwrap();
                        let next = volume("counter", read.value.size_bytes + 1);
                        match store.update(&next, read.revision).await {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let counter = f.store.get::<Volume>("counter").await.unwrap();
    assert_eq!(counter.value.size_bytes, WRITERS * EACH, "no increment was lost");
}

async fn watch_resumes_from_a_revision(f: Fixture) {
    let store = &f.store;
    for name in ["a", "b", "c"] {
        store.create(&volume(name, 1)).await.unwrap();
    }
    let listing = store.list::<Volume>().await.unwrap();
    assert_eq!(listing.items.len(), 3);

    // Changes after the listing, made before anyone watches.
    let b = store.get::<Volume>("b").await.unwrap();
    let updated = store.update(&volume("b", 2), b.revision).await.unwrap();
    let a = store.get::<Volume>("a").await.unwrap();
    let deleted = store.delete::<Volume>("a", a.revision).await.unwrap();
    // Not a volume: the watch of volumes does not see it.
    store.create(&network("n1")).await.unwrap();

    let mut watch = store.watch::<Volume>(listing.revision + 1).await.unwrap();
    let first = next(&mut watch).await;
    assert!(matches!(&first, RecordEvent::Put(v) if v.value.name == "b" && v.revision == updated));
    let second = next(&mut watch).await;
    assert_eq!(
        second,
        RecordEvent::Deleted {
            id: "a".into(),
            revision: deleted
        }
    );
    // And then live changes, in order.
    let created = store.create(&volume("d", 1)).await.unwrap();
    let third = next(&mut watch).await;
    assert!(matches!(&third, RecordEvent::Put(v) if v.value.name == "d" && v.revision == created));

    // A watch from the middle starts exactly there.
    let mut from_delete = store.watch::<Volume>(deleted).await.unwrap();
    assert!(matches!(next(&mut from_delete).await, RecordEvent::Deleted { id, .. } if id == "a"));

    // Instances: spec and status events apart.
    let mut instances = store.watch_instances(0).await.unwrap();
    let created = store.create_instance(&instance(&id(7), "w")).await.unwrap();
    let mut status = berth_store::instance::split(&created.instance).1;
    status.pid = Some(7);
    store
        .update_instance_status(&status, created.status_revision)
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(10), instances.next())
            .await
            .unwrap();
        seen.push(event.unwrap().unwrap());
    }
    assert!(matches!(&seen[0], InstanceEvent::Desired(d) if d.value.name == "w"));
    assert!(matches!(&seen[1], InstanceEvent::Status(s) if s.value.pid.is_none()));
    assert!(matches!(&seen[2], InstanceEvent::Status(s) if s.value.pid == Some(7)));
}

fn network(name: &str) -> Network {
    Network {
        name: name.into(),
        bridge: format!("bb-{name}"),
        subnet: "10.99.0.0/24".into(),
        gateway: "10.99.0.1".into(),
        internal: false,
        created_at: chrono::Utc::now(),
        pool: None,
        overlay: None,
    }
}

async fn next<R: berth_store::Record>(watch: &mut berth_store::RecordWatch<R>) -> RecordEvent<R> {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a watch event within 10 s")
        .expect("the watch goes on")
        .expect("a watch event, not an error")
}

async fn compaction_makes_a_watcher_relist(f: Fixture) {
    let store = &f.store;
    let first = store.create(&volume("v", 0)).await.unwrap();
    let mut revision = first;
    for size in 1..=5 {
        revision = store.update(&volume("v", size), revision).await.unwrap();
    }
    store.kv().compact(revision).await.unwrap();

    // A watcher that was behind learns it must list again.
    let mut stale = store.watch::<Volume>(first + 1).await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(10), stale.next())
        .await
        .unwrap();
    assert!(
        matches!(item, Some(Err(StoreError::Compacted { .. }))),
        "expected Compacted, got {item:?}"
    );
    // It relists and follows from the listing on.
    let listing = store.list::<Volume>().await.unwrap();
    assert_eq!(listing.items[0].value.size_bytes, 5);
    let mut watch = store.watch::<Volume>(listing.revision + 1).await.unwrap();
    let updated = store.update(&volume("v", 6), listing.items[0].revision).await.unwrap();
    assert!(matches!(next(&mut watch).await, RecordEvent::Put(v) if v.revision == updated));
}

async fn lease_expiry_removes_its_keys(f: Fixture) {
    let store = &f.store;
    let lease = store.kv().grant_lease(Duration::from_secs(2)).await.unwrap();
    assert!(lease.ttl >= Duration::from_secs(2));
    store
        .commit(RecordTxn::new().put_with_lease(&network("alive"), lease.id).unwrap())
        .await
        .unwrap();
    let mut watch = store.watch::<Network>(0).await.unwrap();

    // Kept alive past its TTL, the key stays.
    let kept_until = Instant::now() + lease.ttl + Duration::from_secs(1);
    while Instant::now() < kept_until {
        store.kv().keep_alive(lease.id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(store.try_get::<Network>("alive").await.unwrap().is_some());

    // Left alone, it expires and takes the key with it; watchers see the delete.
    let event = tokio::time::timeout(lease.ttl + Duration::from_secs(10), watch.next())
        .await
        .expect("the leased key is deleted after its lease expires")
        .unwrap()
        .unwrap();
    assert!(matches!(event, RecordEvent::Deleted { id, .. } if id == "alive"));
    assert!(store.try_get::<Network>("alive").await.unwrap().is_none());
    let renewed = store.kv().keep_alive(lease.id).await;
    assert!(matches!(renewed, Err(StoreError::LeaseNotFound(_))), "{renewed:?}");
    let late = store
        .commit(RecordTxn::new().put_with_lease(&network("late"), lease.id).unwrap())
        .await;
    assert!(matches!(late, Err(StoreError::LeaseNotFound(_))), "{late:?}");

    // Revoking ends a lease at once.
    let lease = store.kv().grant_lease(Duration::from_secs(60)).await.unwrap();
    store
        .commit(RecordTxn::new().put_with_lease(&network("revoked"), lease.id).unwrap())
        .await
        .unwrap();
    store.kv().revoke(lease.id).await.unwrap();
    assert!(store.try_get::<Network>("revoked").await.unwrap().is_none());
}

async fn transactions_are_all_or_nothing(f: Fixture) {
    let store = &f.store;
    let kv = store.kv();
    store.create(&volume("held", 1)).await.unwrap();
    // One failing check: none of the writes happen.
    let failed = kv
        .txn(
            Txn::new()
                .check("/berth/v1/claims/ip/10.0.0.2", Expect::Absent)
                .check("/berth/v1/volumes/held", Expect::Absent)
                .put("/berth/v1/claims/ip/10.0.0.2", b"i1".to_vec())
                .put("/berth/v1/claims/port/8080", b"i1".to_vec()),
        )
        .await;
    assert!(matches!(failed, Err(StoreError::Conflict { key, .. }) if key == "/berth/v1/volumes/held"));
    let claims = kv
        .get(&[
            "/berth/v1/claims/ip/10.0.0.2".into(),
            "/berth/v1/claims/port/8080".into(),
        ])
        .await
        .unwrap();
    assert_eq!(claims.kvs, vec![None, None]);

    // All checks hold: every write lands at one revision.
    let revision = kv
        .txn(
            Txn::new()
                .check("/berth/v1/claims/ip/10.0.0.2", Expect::Absent)
                .put("/berth/v1/claims/ip/10.0.0.2", b"i1".to_vec())
                .put("/berth/v1/claims/port/8080", b"i1".to_vec())
                .delete("/berth/v1/volumes/held"),
        )
        .await
        .unwrap();
    let after = kv
        .get(&[
            "/berth/v1/claims/ip/10.0.0.2".into(),
            "/berth/v1/claims/port/8080".into(),
            "/berth/v1/volumes/held".into(),
        ])
        .await
        .unwrap();
    let revisions: Vec<Option<u64>> = after
        .kvs
        .iter()
        .map(|kv| kv.as_ref().map(|kv| kv.mod_revision))
        .collect();
    assert_eq!(revisions, vec![Some(revision), Some(revision), None]);
    // Compare on a value (a claim held by whom).
    assert!(kv
        .txn(
            Txn::new()
                .check("/berth/v1/claims/port/8080", Expect::Value(b"i2".to_vec()))
                .delete("/berth/v1/claims/port/8080")
        )
        .await
        .is_err());

    // etcd's 128-operation limit holds on both backends, checked before anything is sent.
    let full = (0..MAX_TXN_OPS).fold(Txn::new(), |txn, n| txn.put(format!("/berth/v1/bulk/{n}"), vec![1]));
    kv.txn(full).await.unwrap();
    let over = (0..=MAX_TXN_OPS).fold(Txn::new(), |txn, n| txn.put(format!("/berth/v1/over/{n}"), vec![1]));
    assert!(matches!(
        kv.txn(over).await,
        Err(StoreError::TooManyOps { ops: 129, limit: 128 })
    ));
    assert!(kv
        .range(berth_store::RangeRequest {
            prefix: "/berth/v1/over/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .kvs
        .is_empty());
}

async fn values_over_the_limit_are_refused(f: Fixture) {
    let store = &f.store;
    let mut big = instance(&id(3), "big");
    big.spec.labels.insert("blob".into(), "x".repeat(600 * 1024));
    let err = store.create_instance(&big).await.unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("/berth/v1/instances/") && message.contains("labels"),
        "{message}"
    );
    assert!(store.list_instances().await.unwrap().is_empty(), "nothing was written");

    // Large but under the limit is stored whole (and etcd takes it).
    let mut large = instance(&id(4), "large");
    large.spec.labels.insert("blob".into(), "y".repeat(400 * 1024));
    store.create_instance(&large).await.unwrap();
    assert_eq!(store.get_instance(&id(4)).await.unwrap(), large);
}

/// A watcher from an old revision (an agent that fell behind, or resumed) is sent every
/// event since: more than the 4 MiB a gRPC message may hold, so etcd must split it.
async fn a_late_watcher_catches_up_past_the_message_limit(f: Fixture) {
    let store = &f.store;
    let (_, before) = store.instances().await.unwrap();
    const INSTANCES: usize = 16;
    for n in 0..INSTANCES {
        let mut large = instance(&id(100 + n), &format!("large{n}"));
        large.spec.labels.insert("blob".into(), "z".repeat(400 * 1024));
        store.create_instance(&large).await.unwrap();
    }
    let mut watch = store.watch_instances(before + 1).await.unwrap();
    let mut desired = BTreeSet::new();
    for _ in 0..INSTANCES * 2 {
        let event = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("the late watcher is caught up")
            .unwrap()
            .unwrap();
        if let InstanceEvent::Desired(d) = event {
            desired.insert(d.value.name.clone());
        }
    }
    assert_eq!(desired.len(), INSTANCES, "{desired:?}");
}

async fn lists_are_paged_at_one_revision(f: Fixture) {
    const VOLUMES: usize = 450;
    // Four transactions of at most 128 creates each.
    let names: Vec<String> = (0..VOLUMES).map(|n| format!("v{n:04}")).collect();
    for chunk in names.chunks(MAX_TXN_OPS) {
        let txn = chunk
            .iter()
            .try_fold(RecordTxn::new(), |txn, name| txn.create(&volume(name, 1)))
            .unwrap();
        f.store.commit(txn).await.unwrap();
    }
    let listing = f.store.list::<Volume>().await.unwrap();
    let listed: Vec<&str> = listing.items.iter().map(|v| v.value.name.as_str()).collect();
    assert_eq!(listed, names.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(listing.items.iter().all(|v| v.revision <= listing.revision));

    // Page by page at the listing's revision, as `Store::list` does on etcd.
    let mut request = berth_store::RangeRequest {
        prefix: "/berth/v1/volumes/".into(),
        limit: 100,
        revision: Some(listing.revision),
        ..Default::default()
    };
    let mut paged = Vec::new();
    loop {
        let page = f.store.kv().range(request.clone()).await.unwrap();
        assert!(page.kvs.len() <= 100);
        paged.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        request.start_after = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    let expected: Vec<String> = names.iter().map(|n| format!("/berth/v1/volumes/{n}")).collect();
    assert_eq!(paged, expected);
}

/// One member of three is killed: reads, writes and watches go on through the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_losing_one_member_of_three_changes_nothing() {
    let mut f = etcd().await;
    let store = f.store.clone();
    store.create(&volume("before", 1)).await.unwrap();
    let mut watch = store.watch::<Volume>(0).await.unwrap();

    for victim in 0..3 {
        let cluster = f.cluster.as_mut().unwrap();
        cluster.kill(victim);
        let name = format!("after-{victim}");
        let started = Instant::now();
        store.create(&volume(&name, 1)).await.unwrap();
        let read = store.get::<Volume>(&name).await.unwrap();
        store.update(&volume(&name, 2), read.revision).await.unwrap();
        assert_eq!(store.list::<Volume>().await.unwrap().items.len(), victim + 2);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "writes took {:?} with member {victim} down",
            started.elapsed()
        );
        // The watch follows, whichever member served it.
        let mut names = Vec::new();
        while names.len() < 2 {
            if let RecordEvent::Put(v) = next(&mut watch).await {
                names.push((v.value.name, v.value.size_bytes));
            }
        }
        assert_eq!(names, vec![(name.clone(), 1), (name, 2)]);
        cluster.restart(victim).unwrap();
    }
}

/// The state of a berth before revisions (one table per kind) is carried over at open.
#[tokio::test]
async fn sqlite_old_schema_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    let old = instance(&id(9), "legacy");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE instances (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
             CREATE TABLE images (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE networks (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE volumes (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO instances VALUES (?1, ?2, ?3)",
            rusqlite::params![old.id, old.name, serde_json::to_string(&old).unwrap()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO volumes VALUES ('data', ?1)",
            [serde_json::to_string(&volume("data", 7)).unwrap()],
        )
        .unwrap();
        conn.execute("INSERT INTO meta VALUES ('node_id', 'n-1')", []).unwrap();
    }
    let store = Store::new(Arc::new(SqliteStore::open(&path).unwrap()));
    assert_eq!(store.get_instance(&old.id).await.unwrap(), old);
    assert_eq!(store.find_instance("legacy").await.unwrap().id, old.id);
    assert_eq!(store.get_volume("data").await.unwrap().size_bytes, 7);
    assert_eq!(store.get_meta("node_id").await.unwrap().as_deref(), Some("n-1"));
    assert!(matches!(
        store.create_instance(&instance(&id(10), "legacy")).await,
        Err(StoreError::NameTaken(_))
    ));
    drop(store);

    // Reopened: the revision goes on from where it was, and leases of the process that
    // held them are gone with their keys.
    let backend = SqliteStore::open(&path).unwrap();
    let store = Store::new(Arc::new(backend));
    let before = store.list::<Volume>().await.unwrap().revision;
    let lease = store.kv().grant_lease(Duration::from_secs(60)).await.unwrap();
    store
        .commit(RecordTxn::new().put_with_lease(&network("leased"), lease.id).unwrap())
        .await
        .unwrap();
    drop(store);
    let store = Store::new(Arc::new(SqliteStore::open(&path).unwrap()));
    assert!(store.try_get::<Network>("leased").await.unwrap().is_none());
    let after = store.list::<Volume>().await.unwrap().revision;
    assert!(after > before, "revisions only grow ({before} then {after})");
    let events = store.kv().watch("/berth/v1/networks/", before + 1).await;
    let mut events = events.unwrap();
    let put = events.next().await.unwrap().unwrap();
    let deleted = events.next().await.unwrap().unwrap();
    assert_eq!((put.kind, deleted.kind), (WatchEventKind::Put, WatchEventKind::Delete));
}

/// Not a promise, a measurement (`cargo test -p berth-store --test semantics -- --ignored
/// --nocapture write_rates`): compare-and-swap writes per second, one writer and 16.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn write_rates() {
    for (name, f) in [("sqlite", sqlite()), ("etcd (3 members)", etcd().await)] {
        const WRITES: usize = 500;
        f.store.create(&volume("rate", 0)).await.unwrap();
        let started = Instant::now();
        let mut revision = f.store.get::<Volume>("rate").await.unwrap().revision;
        for size in 1..=WRITES as u64 {
            revision = f.store.update(&volume("rate", size), revision).await.unwrap();
        }
        let one = WRITES as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let store = f.store.clone();
                tokio::spawn(async move {
                    for n in 0..WRITES / 16 {
                        store.create(&volume(&format!("c{t}-{n}"), 1)).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let many = (WRITES / 16 * 16) as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        let listed = f.store.list::<Volume>().await.unwrap().items.len();
        println!(
            "{name}: {one:.0} CAS updates/s (one writer), {many:.0} creates/s (16 writers), list of {listed} in {:?}",
            started.elapsed()
        );
    }
}

/// etcd that requires TLS and client certificates: berth connects with `EtcdTls` (the
/// daemon's `--etcd-cacert/--etcd-cert/--etcd-key`), and is refused without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_over_tls_with_a_client_certificate() {
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start_tls(3))
        .await
        .unwrap()
        .unwrap();
    let files = cluster.tls().unwrap().clone();
    let mut config = EtcdConfig::new(cluster.endpoints());
    config.tls = Some(berth_store::EtcdTls {
        ca_cert: files.ca_cert.clone(),
        cert: Some(files.client_cert.clone()),
        key: Some(files.client_key.clone()),
    });
    let store = Store::new(Arc::new(EtcdStore::connect(&config).await.unwrap()));
    store.create(&volume("secure", 1)).await.unwrap();
    assert_eq!(store.get::<Volume>("secure").await.unwrap().value.size_bytes, 1);

    // Without a client certificate, or without TLS, the members refuse; the error says
    // etcd does not answer rather than hanging.
    let mut config = config.clone();
    config.connect_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(2);
    for tls in [
        Some(berth_store::EtcdTls {
            ca_cert: files.ca_cert.clone(),
            cert: None,
            key: None,
        }),
        None,
    ] {
        config.tls = tls;
        let started = Instant::now();
        let refused = EtcdStore::connect(&config).await.err().expect("refused");
        assert!(matches!(refused, StoreError::Unavailable(_)), "{refused}");
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    }
}

/// What admission reads without decoding whole records is what the whole records say.
async fn footprints_read_what_the_full_records_say(f: Fixture) {
    let store = &f.store;
    let mut running = instance(&id(1), "running");
    running.state = berth_model::InstanceState::Running;
    running.requests.cpus = Some(berth_model::quantity::MilliCpus(250));
    running.spec.instance_storage_bytes = vec![1 << 30, 2 << 30];
    running.node = "node-b".into();
    store.insert_instance(&running).await.unwrap();
    store.insert_instance(&instance(&id(2), "created")).await.unwrap();
    let footprints = assert_same_footprints(store).await;
    assert_eq!(footprints[0].state, berth_model::InstanceState::Running);
    assert_eq!(footprints[0].instance_storage_bytes, vec![1 << 30, 2 << 30]);

    // Later reads decode only what changed since (the rest comes from the store's cache):
    // a status written, a spec written, an instance removed and one created under a removed
    // one's id, then a change larger than a fetch by key.
    running.state = berth_model::InstanceState::Exited;
    store.update_instance(&running).await.unwrap();
    let mut created = instance(&id(2), "created");
    created.limits.memory_bytes = Some(64 << 20);
    store.update_instance(&created).await.unwrap();
    assert_same_footprints(store).await;
    store.delete_instance(&id(1)).await.unwrap();
    store.insert_instance(&instance(&id(3), "third")).await.unwrap();
    assert_same_footprints(store).await;
    store.insert_instance(&instance(&id(1), "again")).await.unwrap();
    for n in 10..90 {
        store
            .insert_instance(&instance(&id(n), &format!("many-{n}")))
            .await
            .unwrap();
    }
    assert_same_footprints(store).await;
    for n in 10..90 {
        store.delete_instance(&id(n)).await.unwrap();
    }
    assert_same_footprints(store).await;
    assert_eq!(store.instance_footprints().await.unwrap().len(), 3);
}

/// The footprints admission reads equal those of the whole records; returned by id.
async fn assert_same_footprints(store: &Store) -> Vec<berth_store::InstanceFootprint> {
    let mut footprints = store.instance_footprints().await.unwrap();
    footprints.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected: Vec<berth_store::InstanceFootprint> =
        store.list_instances().await.unwrap().iter().map(Into::into).collect();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(footprints, expected);
    footprints
}
