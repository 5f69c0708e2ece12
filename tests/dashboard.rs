//! The web dashboard end to end in a real browser: Debian's chromium driven by playwright-core
//! (dashboard/test/dashboard.mjs) against a daemon serving HTTPS. The browser logs in with a
//! join token, creates a container and a VM from the form, sees their process trees, graphs
//! and logs, types into a shell and into the VM's console, stops both and logs out. The
//! screenshots are kept in target/tmp/dashboard-screenshots.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{busybox_tar, free_port, Daemon};

const CHROMIUM: &str = "/usr/bin/chromium";

/// The browser runs in a network namespace of its own, reaching the daemon's HTTPS port on
/// its own 127.0.0.1 through socat relays (TCP there, a unix socket across, TCP here):
/// Chromium aborts page loads and requests with ERR_NETWORK_CHANGED whenever an address
/// appears or goes on the host, which the other tests' bridges and veths do all the time.
fn browser_command(port: u16, relay: &Path) -> Command {
    let script = format!(
        "ip link set lo up && \
         socat TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:{relay} & relay=$!; \
         for _ in $(seq 50); do socat -u OPEN:/dev/null TCP:127.0.0.1:{port} 2>/dev/null && break; sleep 0.1; done; \
         node test/dashboard.mjs; status=$?; kill $relay; exit $status",
        relay = relay.display()
    );
    let mut command = Command::new("unshare");
    command.args(["--net", "sh", "-c", &script]);
    command
}

/// Kills the host side of the relay when the test ends, however it ends.
struct Relay(std::process::Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_browser_logs_in_creates_a_container_and_a_vm_uses_their_consoles_and_stops_them() {
    let _turn = crate::common::one_at_a_time();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let d = Daemon::start_with_args(&["--listen", &address], "");
    let relay_socket = crate::common::temp_dir("dashboard-relay").join("relay.sock");
    let _relay = Relay(
        Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", relay_socket.display()))
            .arg(format!("TCP:{address}"))
            .stdin(Stdio::null())
            .spawn()
            .expect("socat (installed by scripts/install-deps.sh)"),
    );
    d.ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);
    let token = d.ok(&["trust", "add", "browser", "--token"]).trim().to_string();

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let dashboard = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../dashboard"));
    let output = browser_command(port, &relay_socket)
        .current_dir(dashboard)
        .env("BERTH_URL", format!("https://{address}"))
        .env("BERTH_TOKEN", &token)
        .env("BERTH_SCREENSHOTS", &shots)
        .env("BERTH_CHROMIUM", CHROMIUM)
        .stdin(Stdio::null())
        .output()
        .expect("unshare, socat and node (scripts/install-deps.sh installs them and the dashboard's npm packages)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed (screenshots in {}):\n{stdout}\n{stderr}\ndaemon log:\n{}",
        shots.display(),
        d.log()
    );
    assert!(stdout.contains("dashboard: all steps passed"), "{stdout}");
    for shot in [
        "01-login",
        "02-container",
        "03-container-shell",
        "04-vm",
        "05-vm-console",
        "08-stopped",
    ] {
        assert!(shots.join(format!("{shot}.png")).exists(), "no screenshot {shot}");
    }

    // What the browser did is what the daemon holds, and the audit log says who did it.
    let listing: serde_json::Value = serde_json::from_str(&d.ok(&["ps", "-a", "--json"])).unwrap();
    let state = |name: &str| {
        listing
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .map(|i| i["state"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(state("dash-web").as_deref(), Some("exited"), "{listing:#}");
    assert_eq!(state("dash-vm").as_deref(), Some("exited"), "{listing:#}");
    let audit: serde_json::Value = serde_json::from_str(&d.ok(&["audit", "-n", "1000", "--json"])).unwrap();
    let entries = audit.as_array().unwrap();
    let by_browser = |method: &str, path: &str| {
        entries.iter().any(|e| {
            e["who"] == "browser" && e["method"] == method && e["path"].as_str().unwrap_or("").starts_with(path)
        })
    };
    assert!(by_browser("POST", "/v1/instances"), "{audit:#}");
    assert!(by_browser("POST", "/ui/logout"), "{audit:#}");
    assert!(
        entries
            .iter()
            .any(|e| e["who"] == "browser" && e["status"] == 403 && e["refused"].is_string()),
        "the request without the dashboard header is in the audit log as refused: {audit:#}"
    );
    // Logging out ended the session: nothing is trusted as the browser any more.
    assert!(!d.ok(&["trust", "ls"]).contains("browser"));
    d.ok(&["rm", "-f", "dash-web", "dash-vm"]);
}
