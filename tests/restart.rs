//! Restart safety: `kill -9` of the daemon leaves instances running; a new daemon finds
//! them, their logs continue, and exits that happened meanwhile are known.

use std::time::Duration;

use crate::common::Daemon;

#[test]
fn instances_survive_a_daemon_crash() {
    let mut d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "long",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.2; done",
    ]);
    d.ok(&["run", "-d", "--name", "short", "busybox", "sh", "-c", "sleep 1; exit 7"]);
    let pid_before = d.inspect("long")["pid"].as_u64().unwrap();

    d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    d.restart_only();

    let long = d.inspect("long");
    assert_eq!(long["state"], "running");
    assert_eq!(long["pid"].as_u64().unwrap(), pid_before);
    assert!(std::path::Path::new(&format!("/proc/{pid_before}")).exists());
    let short = d.inspect("short");
    assert_eq!(short["state"], "exited", "{short}");
    assert_eq!(short["exit_code"], 7);

    // Logs kept flowing while the daemon was away, and still do.
    let before = d.ok(&["logs", "long"]).lines().count();
    assert!(before >= 5, "only {before} lines logged");
    std::thread::sleep(Duration::from_millis(600));
    assert!(d.ok(&["logs", "long"]).lines().count() > before);

    // The re-attached instance still reports its exit to the new daemon.
    d.ok(&["stop", "-t", "1", "long"]);
    assert_eq!(d.inspect("long")["state"], "exited");

    // A running instance keeps running across a crash while another starts meanwhile.
    d.ok(&["start", "long"]);
    d.crash_and_restart();
    assert_eq!(d.inspect("long")["state"], "running");
    assert!(d.ok(&["ps", "--tree"]).contains("long"));
}

/// Processes whose parent is `parent`, with their command lines (NULs as spaces).
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(ppid) = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok())
        else {
            continue;
        };
        if ppid == parent {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    found
}

fn standbys_of(daemon: u32) -> Vec<u32> {
    children_of(daemon)
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains(" supervise --standby="))
        .map(|(pid, _)| pid)
        .collect()
}

/// The daemon keeps one supervisor waiting for the next start: a start takes it (it shows
/// in `ps` as a supervisor of that instance, with its log beside the config), another one
/// waits after, and a daemon that dies takes its waiting supervisor with it. The next daemon
/// deletes what the dead one had moved aside for deletion.
#[test]
fn a_waiting_supervisor_takes_the_next_start_and_ends_with_the_daemon() {
    let mut d = Daemon::with_busybox();
    let wait_for_one = |d: &Daemon| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let standbys = standbys_of(d.pid());
            if standbys.len() == 1 || std::time::Instant::now() > deadline {
                return standbys;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let waiting = wait_for_one(&d);
    assert_eq!(waiting.len(), 1, "one supervisor waits: {:?}", children_of(d.pid()));

    let id = d
        .ok(&["run", "-d", "--name", "s", "busybox", "sleep", "600"])
        .trim()
        .to_string();
    let config = d.instance_dir(&id).join("supervisor.json");
    let supervisor = children_of(d.pid())
        .into_iter()
        .find(|(pid, _)| *pid == waiting[0])
        .map(|(_, cmdline)| cmdline)
        .expect("the waiting supervisor supervises the instance");
    assert!(
        supervisor.contains(&format!(" supervise {} ", config.display())),
        "its command line names the config: {supervisor}"
    );
    assert!(d.instance_dir(&id).join("supervisor.log").exists());
    assert_eq!(d.ok(&["exec", "s", "echo", "in"]), "in\n");

    let next = wait_for_one(&d);
    assert_eq!(next.len(), 1, "another one waits: {:?}", children_of(d.pid()));
    assert_ne!(next, waiting);

    d.kill9();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{}", next[0])).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = std::fs::read(format!("/proc/{}/cmdline", next[0])).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&left).contains("--standby="),
        "the waiting supervisor outlived its daemon"
    );
    // What a stopped daemon had moved aside but not yet deleted goes at the next start.
    let discarded = d.state.join("instances/.discarded/0123456789ab.1.0/upper/etc");
    std::fs::create_dir_all(&discarded).unwrap();
    std::fs::write(discarded.join("hosts"), "left").unwrap();
    // The instance's supervisor did not end with it.
    d.restart_only();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.state.join("instances/.discarded").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!d.state.join("instances/.discarded").exists(), "left in .discarded");
    assert_eq!(d.inspect("s")["state"], "running");
    d.ok(&["rm", "-f", "s"]);
}
