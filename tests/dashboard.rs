//! The web dashboard end to end in a real browser: Debian's chromium driven by playwright-core
//! (dashboard/test/dashboard.mjs) against a daemon serving HTTPS. The browser logs in with a
//! join token, creates a container and a VM from the form, sees their process trees, graphs
//! and logs, types into a shell and into the VM's console, stops both and logs out. The
//! screenshots are kept in target/tmp/dashboard-screenshots.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{busybox_tar, free_port, Daemon};

const CHROMIUM: &str = "/usr/bin/chromium";

#[test]
fn a_browser_logs_in_creates_a_container_and_a_vm_uses_their_consoles_and_stops_them() {
    let address = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with_args(&["--listen", &address], "");
    d.ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);
    let token = d.ok(&["trust", "add", "browser", "--token"]).trim().to_string();

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let dashboard = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../dashboard"));
    let output = Command::new("node")
        .arg("test/dashboard.mjs")
        .current_dir(dashboard)
        .env("BERTH_URL", format!("https://{address}"))
        .env("BERTH_TOKEN", &token)
        .env("BERTH_SCREENSHOTS", &shots)
        .env("BERTH_CHROMIUM", CHROMIUM)
        .stdin(Stdio::null())
        .output()
        .expect("node (scripts/install-deps.sh installs it and the dashboard's npm packages)");
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
