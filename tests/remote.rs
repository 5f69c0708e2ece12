//! Remote access over HTTPS (`berth daemon --listen`): a client joins with a one-time
//! token, works through `--remote`, is refused once no longer trusted; a used token, a
//! garbled one and an untrusted certificate are refused; a changed server certificate is
//! caught by the pin; every mutating call and every refusal is in the audit log.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::registry::Registry;
use crate::common::{busybox_tar, temp_dir, Daemon, BERTH};

/// berth as a remote client with its configuration in `dir` (never the socket).
fn client(dir: &Path, args: &[&str]) -> Output {
    Command::new(BERTH)
        .args(args)
        .env("BERTH_CONFIG_DIR", dir)
        .env("BERTH_HOST", "/nonexistent/berth.sock")
        .env_remove("BERTH_REMOTE")
        .stdin(Stdio::null())
        .output()
        .expect("run berth")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn client_ok(dir: &Path, args: &[&str]) -> String {
    let output = client(dir, args);
    assert!(
        output.status.success(),
        "berth {} failed: {}",
        args.join(" "),
        text(&output.stderr)
    );
    text(&output.stdout)
}

fn client_fails(dir: &Path, args: &[&str]) -> String {
    let output = client(dir, args);
    assert!(!output.status.success(), "berth {} succeeded", args.join(" "));
    text(&output.stderr)
}

#[test]
fn a_client_joins_with_a_token_works_remotely_and_is_refused_once_untrusted() {
    let address = format!("127.0.0.1:{}", crate::common::free_port());
    let url = format!("https://{address}");
    let d = Daemon::start_with_args(&["--listen", &address], "");
    d.ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);

    // Without --listen a token is refused; here the daemon listens.
    let token = d.ok(&["trust", "add", "alice", "--token"]).trim().to_string();
    assert!(!token.is_empty());

    let alice = temp_dir("remote-alice");
    let added = client_ok(&alice, &["remote", "add", "r1", &url, "--token", &token]);
    assert!(added.contains("trusted there as alice"), "{added}");
    assert!(alice.join("client.crt").exists() && alice.join("client.key").exists());
    // The client's key is its owner's only.
    let mode = std::fs::metadata(alice.join("client.key")).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077, 0);

    // Everything works through the remote, with --remote or BERTH_REMOTE.
    client_ok(
        &alice,
        &[
            "--remote",
            "r1",
            "run",
            "-d",
            "--name",
            "viaremote",
            "busybox",
            "sleep",
            "600",
        ],
    );
    assert!(client_ok(&alice, &["--remote", "r1", "ps"]).contains("viaremote"));
    let inspected = Command::new(BERTH)
        .args(["inspect", "viaremote"])
        .env("BERTH_CONFIG_DIR", &alice)
        .env("BERTH_REMOTE", "r1")
        .output()
        .unwrap();
    assert!(inspected.status.success(), "{}", text(&inspected.stderr));
    assert_eq!(
        client_ok(&alice, &["--remote", "r1", "exec", "viaremote", "echo", "over https"]),
        "over https\n"
    );
    let trusted: serde_json::Value = serde_json::from_str(&d.ok(&["trust", "ls", "--json"])).unwrap();
    assert_eq!(trusted[0]["name"], "alice");
    assert_eq!(trusted[0]["added_by"], "token");

    // The token was good once; a garbled one is refused before any connection.
    let bob = temp_dir("remote-bob");
    let used = client_fails(&bob, &["remote", "add", "r2", &url, "--token", &token]);
    assert!(used.contains("wrong, used or expired"), "{used}");
    let garbled = client_fails(&bob, &["remote", "add", "r2", &url, "--token", "not-a-token"]);
    assert!(garbled.contains("not a berth join token"), "{garbled}");
    assert!(!bob.join("remotes.json").exists(), "a failed add saved a remote");

    // A client whose certificate is not trusted gets a clear refusal and nothing changes.
    let remotes = std::fs::read_to_string(alice.join("remotes.json")).unwrap();
    std::fs::write(bob.join("remotes.json"), remotes.replace("\"r1\"", "\"r2\"")).unwrap();
    let refused = client_fails(&bob, &["--remote", "r2", "rm", "-f", "viaremote"]);
    assert!(
        refused.contains("is not trusted") && refused.contains("berth trust add"),
        "{refused}"
    );
    assert_eq!(d.inspect("viaremote")["state"], "running");

    // A server whose certificate is not the pinned one is refused by the client.
    let pinned: serde_json::Value = serde_json::from_str(&remotes).unwrap();
    let fingerprint = pinned["remotes"]["r1"]["fingerprint"].as_str().unwrap().to_string();
    std::fs::write(
        bob.join("remotes.json"),
        remotes
            .replace("\"r1\"", "\"r2\"")
            .replace(&fingerprint, &"0".repeat(64)),
    )
    .unwrap();
    let impostor = client_fails(&bob, &["--remote", "r2", "ps"]);
    assert!(impostor.contains("not the pinned"), "{impostor}");

    // No longer trusted: refused.
    d.ok(&["trust", "rm", "alice"]);
    let revoked = client_fails(&alice, &["--remote", "r1", "ps"]);
    assert!(revoked.contains("is not trusted"), "{revoked}");

    // The audit log names who did what, refusals included.
    let audit: serde_json::Value = serde_json::from_str(&d.ok(&["audit", "-n", "1000", "--json"])).unwrap();
    let entries = audit.as_array().unwrap();
    let by = |who: &str, method: &str, path: &str| {
        entries
            .iter()
            .any(|e| e["who"] == who && e["method"] == method && e["path"].as_str().unwrap_or("").starts_with(path))
    };
    assert!(by("alice", "POST", "/v1/instances"), "{audit:#}");
    assert!(by("local uid 0", "POST", "/v1/trust"), "{audit:#}");
    assert!(by("local uid 0", "DELETE", "/v1/trust/alice"), "{audit:#}");
    assert!(
        entries
            .iter()
            .any(|e| e["who"].as_str().unwrap_or("").starts_with("untrusted ")
                && e["status"] == 403
                && e["refused"].is_string()),
        "{audit:#}"
    );
    d.ok(&["rm", "-f", "viaremote"]);
}

#[test]
fn a_project_client_sees_its_instances_only_within_quotas_and_never_the_host() {
    let address = format!("127.0.0.1:{}", crate::common::free_port());
    let url = format!("https://{address}");
    let d = Daemon::start_with_args(&["--listen", &address], "");
    d.ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);
    d.ok(&["run", "-d", "--name", "roots", "busybox", "sleep", "600"]);
    d.ok(&["volume", "create", "rootvol"]);
    // The project's images come from a registry, as a tenant's would.
    let registry = Registry::start();
    let shared = format!("127.0.0.1:{}/team/busybox:1", registry.port);
    d.ok(&["image", "tag", "busybox", &shared]);
    d.ok(&["image", "push", "--insecure", &shared]);

    // A project must exist before a client is confined to it.
    let missing = d.fails(&["trust", "add", "bob", "--token", "--project", "team"]);
    assert!(missing.contains("no project team"), "{missing}");
    d.ok(&[
        "project",
        "create",
        "team",
        "--max-instances",
        "2",
        "--max-memory",
        "200m",
    ]);
    let token = d
        .ok(&["trust", "add", "bob", "--token", "--project", "team"])
        .trim()
        .to_string();
    let bob = temp_dir("remote-project");
    client_ok(&bob, &["remote", "add", "r", &url, "--token", &token]);
    let as_bob = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--remote".to_string(), "r".to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    };
    let ok = |args: &[&str]| {
        let args = as_bob(args);
        client_ok(&bob, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let fails = |args: &[&str]| {
        let args = as_bob(args);
        client_fails(&bob, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Images: root's are not the project's until its client pulls them.
    assert_eq!(ok(&["image", "ls", "-q"]).trim(), "", "a new project has no images");
    let unpulled = fails(&["run", "--rm", "busybox", "true"]);
    assert!(unpulled.contains("no image busybox in this project"), "{unpulled}");
    ok(&["image", "pull", "--insecure", &shared]);
    let images = ok(&["image", "ls"]);
    assert!(images.contains("team/busybox"), "{images}");
    let image = shared.as_str();

    // Its instances land in the project; root's are invisible and untouchable.
    ok(&["run", "-d", "--name", "b1", "--memory", "64m", image, "sleep", "600"]);
    assert_eq!(d.inspect("b1")["spec"]["labels"]["berth.project"], "team");
    let listed = ok(&["ps", "-a"]);
    assert!(listed.contains("b1") && !listed.contains("roots"), "{listed}");
    assert!(fails(&["inspect", "roots"]).contains("no such instance"));
    assert!(fails(&["rm", "-f", "roots"]).contains("no such instance"));
    assert_eq!(d.inspect("roots")["state"], "running");

    // Quotas: memory, then the instance count.
    let memory = fails(&["run", "-d", "--name", "b2", "--memory", "150m", image, "sleep", "600"]);
    assert!(memory.contains("memory quota"), "{memory}");
    ok(&["run", "-d", "--name", "b2", "--memory", "64m", image, "sleep", "600"]);
    let count = fails(&["run", "-d", "--name", "b3", "--memory", "16m", image, "true"]);
    assert!(count.contains("instances quota is 2"), "{count}");
    // Raising a limit later is held to the quota too.
    let raised = fails(&["update", "--memory", "150m", "b1"]);
    assert!(raised.contains("memory quota"), "{raised}");
    ok(&["update", "--memory", "80m", "b1"]);

    // Nothing that reaches the host; nothing outside the project's instances.
    let bind = fails(&["run", "--rm", "-v", "/etc:/host", image, "true"]);
    assert!(bind.contains("host path"), "{bind}");
    let host_net = fails(&["run", "--rm", "--network", "host", image, "true"]);
    assert!(host_net.contains("host's network"), "{host_net}");
    let unconfined = fails(&["run", "--rm", "--security-opt", "seccomp=unconfined", image, "true"]);
    assert!(unconfined.contains("confinement"), "{unconfined}");
    let import = fails(&["image", "import", "--tag", "x", busybox_tar().to_str().unwrap()]);
    assert!(import.contains("project team"), "{import}");
    let trust = fails(&["trust", "add", "mallory", "--token"]);
    assert!(trust.contains("project team"), "{trust}");

    // Volumes and networks: its own, made by its client; root's are none of its business.
    assert_eq!(ok(&["volume", "ls", "-q"]).trim(), "");
    assert!(fails(&["volume", "inspect", "rootvol"]).contains("no such volume"));
    assert!(fails(&["volume", "rm", "rootvol"]).contains("no such volume"));
    let borrowed = fails(&["run", "--rm", "-v", "rootvol:/data", image, "true"]);
    assert!(borrowed.contains("no volume rootvol in this project"), "{borrowed}");
    ok(&["volume", "create", "teamvol"]);
    ok(&["network", "create", "teamnet"]);
    assert_eq!(ok(&["volume", "ls", "-q"]).trim(), "teamvol");
    assert!(!d.ok(&["volume", "ls"]).is_empty());
    let networks = ok(&["network", "ls"]);
    assert!(
        networks.contains("teamnet") && networks.contains("default"),
        "{networks}"
    );
    assert!(fails(&["network", "rm", "default"]).contains("root's to change"));
    ok(&["rm", "-f", "b2"]);
    assert_eq!(
        ok(&[
            "run",
            "--rm",
            "--memory",
            "32m",
            "--network",
            "teamnet",
            "-v",
            "teamvol:/data",
            image,
            "sh",
            "-c",
            "echo kept > /data/f && cat /data/f"
        ]),
        "kept\n"
    );

    // A project with instances or volumes stays; emptied, it goes.
    assert!(d.fails(&["project", "rm", "team"]).contains("still has"));
    ok(&["rm", "-f", "b1"]);
    let kept = d.fails(&["project", "rm", "team"]);
    assert!(
        kept.contains("volume teamvol") || kept.contains("network teamnet"),
        "{kept}"
    );
    ok(&["volume", "rm", "teamvol"]);
    ok(&["network", "rm", "teamnet"]);
    // Removing its image drops the project's claim; root's copy stays.
    ok(&["image", "rm", image]);
    assert_eq!(ok(&["image", "ls", "-q"]).trim(), "");
    assert!(d.ok(&["image", "ls"]).contains("team/busybox"));
    let projects = d.ok(&["project", "ls"]);
    assert!(projects.contains("team") && projects.contains("0/2"), "{projects}");
    d.ok(&["project", "rm", "team"]);
    d.ok(&["rm", "-f", "roots"]);
}
