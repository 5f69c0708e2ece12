//! Push to and pull from a real OCI Distribution registry (Debian's docker-registry on
//! 127.0.0.1, started here).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{stderr, temp_dir, Daemon};

struct Registry {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Registry {
    fn start() -> Registry {
        let dir = temp_dir("bt-registry");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (installed by scripts/install-deps.sh)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, port, dir }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn push_then_pull_round_trips_through_a_registry() {
    let registry = Registry::start();
    let reference = format!("127.0.0.1:{}/berth/busybox:test", registry.port);
    let d = Daemon::with_busybox();
    d.ok(&["image", "tag", "busybox", &reference]);
    let pushed = d.run(&["image", "push", "--insecure", &reference]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));

    // A second daemon (another host, in effect) pulls and runs it.
    let other = Daemon::start();
    let pulled = other.run(&["image", "pull", "--insecure", &reference]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let original: serde_json::Value = serde_json::from_str(&d.ok(&["image", "inspect", "busybox"])).unwrap();
    let copy: serde_json::Value = serde_json::from_str(&other.ok(&["image", "inspect", &reference])).unwrap();
    assert_eq!(
        original["id"], copy["id"],
        "the pulled image has the same config digest"
    );
    assert_eq!(other.ok(&["run", "--rm", &reference, "echo", "pulled"]), "pulled\n");

    // Pulling again finds every blob present.
    let again = other.run(&["image", "pull", "--insecure", &reference]);
    assert!(again.status.success());
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));

    // Errors name the problem: unknown repository, unreachable registry.
    let missing = other.run(&[
        "image",
        "pull",
        "--insecure",
        &format!("127.0.0.1:{}/nope/none:1", registry.port),
    ]);
    assert!(!missing.status.success());
    let unreachable = other.run(&["image", "pull", "--insecure", "127.0.0.1:1/x/y:1"]);
    assert!(!unreachable.status.success());
    assert!(stderr(&unreachable).contains("127.0.0.1:1"), "{}", stderr(&unreachable));
}
