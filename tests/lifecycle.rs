//! Running, attaching, detaching, exec, logs, stop/start and removal of containers.

use std::time::Duration;

use crate::common::{stderr, stdout, Daemon};

#[test]
fn run_streams_output_and_returns_the_exit_code() {
    let d = Daemon::with_busybox();
    let output = d.run(&["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(output.status.code(), Some(3), "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), "out\n");
    assert_eq!(stderr(&output), "err\n");
    // --rm: gone once run returns.
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
}

#[test]
fn run_without_rm_records_the_exit() {
    let d = Daemon::with_busybox();
    let output = d.run(&["run", "--name", "once", "busybox", "sh", "-c", "exit 5"]);
    assert_eq!(output.status.code(), Some(5));
    let record = d.inspect("once");
    assert_eq!(record["state"], "exited");
    assert_eq!(record["exit_code"], 5);
    assert_eq!(record["kind"], "container");
    assert!(record["finished_at"].is_string());
    assert!(record["started_at"].is_string());
    assert!(d.ok(&["ps", "-a"]).contains("Exited (5)"));
}

#[test]
fn stdin_is_forwarded_with_interactive() {
    let d = Daemon::with_busybox();
    let output = d.run_with_stdin(
        &["run", "--rm", "-i", "busybox", "sh", "-c", "cat; echo done"],
        b"line one\nline two\n",
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "line one\nline two\ndone\n");
}

#[test]
fn tty_gives_a_real_terminal() {
    let d = Daemon::with_busybox();
    let output = d.run(&[
        "run",
        "--rm",
        "-t",
        "busybox",
        "sh",
        "-c",
        "tty; test -t 1 && echo is-a-tty",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("is-a-tty\r\n"), "{text:?}");
}

#[test]
fn detached_lifecycle_logs_exec_stop_start_rm() {
    let d = Daemon::with_busybox();
    let id = d.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "busybox",
        "sh",
        "-c",
        "echo started; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
    ]);
    assert_eq!(id.trim().len(), 64);
    let record = d.wait_for("ticker", Duration::from_secs(5), |r| r["state"] == "running");
    assert_eq!(record["state"], "running");
    assert!(record["pid"].as_u64().unwrap_or(0) > 1);
    assert!(d.ok(&["ps"]).contains("ticker"));

    // exec: output and exit code of the exec'd process
    let exec = d.run(&["exec", "ticker", "sh", "-c", "echo from-exec; exit 4"]);
    assert_eq!(exec.status.code(), Some(4));
    assert_eq!(stdout(&exec), "from-exec\n");
    let piped = d.run_with_stdin(&["exec", "-i", "ticker", "cat"], b"via stdin\n");
    assert_eq!(stdout(&piped), "via stdin\n");

    // graceful stop: SIGTERM reaches the trap
    d.ok(&["stop", "-t", "5", "ticker"]);
    let record = d.inspect("ticker");
    assert_eq!(record["state"], "exited");
    assert_eq!(record["exit_code"], 0);
    let logs = d.ok(&["logs", "ticker"]);
    assert!(logs.contains("started") && logs.contains("bye"), "{logs}");

    // start again: same instance, writable layer kept, log appended
    d.ok(&["start", "ticker"]);
    let record = d.wait_for("ticker", Duration::from_secs(5), |r| r["state"] == "running");
    assert_eq!(record["restart_count"], 1);
    d.ok(&["restart", "-t", "5", "ticker"]);
    assert_eq!(d.inspect("ticker")["state"], "running");

    // a running instance is not removed without --force
    let refused = d.run(&["rm", "ticker"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    d.ok(&["rm", "-f", "ticker"]);
    assert!(!d.ok(&["ps", "-a"]).contains("ticker"));
    assert!(!d.instance_dir(id.trim()).exists(), "instance directory left behind");
}

#[test]
fn kill_wait_pause_and_unpause() {
    let d = Daemon::with_busybox();
    d.ok(&["run", "-d", "--name", "w", "busybox", "sh", "-c", "sleep 1; exit 4"]);
    assert_eq!(d.ok(&["wait", "w"]).trim(), "4");

    d.ok(&["run", "-d", "--name", "p", "busybox", "sleep", "100"]);
    d.ok(&["pause", "p"]);
    assert_eq!(d.inspect("p")["state"], "paused");
    assert!(d.ok(&["ps"]).contains("Paused"));
    d.ok(&["unpause", "p"]);
    assert_eq!(d.inspect("p")["state"], "running");
    // Like any PID 1, sleep ignores SIGTERM it has no handler for; SIGKILL always works.
    d.ok(&["kill", "p"]);
    let record = d.wait_for("p", Duration::from_secs(5), |r| r["state"] == "exited");
    assert_eq!(record["exit_code"], 137);

    d.ok(&[
        "run",
        "-d",
        "--name",
        "t",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 42' TERM; echo trapped; while true; do sleep 0.1; done",
    ]);
    // PID 1 drops a signal it has no handler for yet: send it once the trap is set.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !d.ok(&["logs", "t"]).contains("trapped") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    d.ok(&["kill", "-s", "SIGTERM", "t"]);
    let record = d.wait_for("t", Duration::from_secs(5), |r| r["state"] == "exited");
    assert_eq!(record["exit_code"], 42);
    let not_running = d.run(&["kill", "t"]);
    assert!(stderr(&not_running).contains("not running"), "{}", stderr(&not_running));
}

#[test]
fn logs_follow_sees_new_output() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "f",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; sleep 0.3; done",
    ]);
    let output = d.run(&["logs", "-f", "f"]);
    assert_eq!(stdout(&output), "line1\nline2\nline3\n");
    assert_eq!(d.ok(&["logs", "--tail", "1", "f"]), "line3\n");
    let stamped = d.ok(&["logs", "-t", "f"]);
    assert!(
        stamped.lines().all(|l| l.starts_with("20") && l.contains("Z line")),
        "{stamped}"
    );
}

#[test]
fn image_config_env_workdir_user_are_honoured() {
    let d = Daemon::with_busybox();
    let output = d.ok(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hello",
        "-w",
        "/tmp/work",
        "-u",
        "nobody",
        "busybox",
        "sh",
        "-c",
        "echo $GREETING; pwd; id -u; id -g; echo $HOME",
    ]);
    assert_eq!(output, "hello\n/tmp/work\n65534\n65534\n/nonexistent\n");
    let unknown = d.run(&["run", "--rm", "-u", "nosuchuser", "busybox", "true"]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("nosuchuser"), "{}", stderr(&unknown));
}

#[test]
fn restart_policies_start_again_until_the_user_stops() {
    let d = Daemon::with_busybox();
    // always: however it ends, with a doubling delay (0.1 s, 0.2 s, 0.4 s...).
    d.ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    ]);
    let record = d.wait_for("again", Duration::from_secs(15), |v| {
        v["restart_count"].as_u64().unwrap_or(0) >= 3
    });
    assert!(record["restart_count"].as_u64().unwrap_or(0) >= 3, "{record}");
    assert_eq!(record["spec"]["restart"], "always");
    // A stop by the user is never undone.
    d.ok(&["stop", "-t", "1", "again"]);
    let stopped = d.inspect("again")["restart_count"].clone();
    std::thread::sleep(Duration::from_secs(2));
    let after = d.inspect("again");
    assert_eq!(after["restart_count"], stopped, "{after}");
    assert_ne!(after["state"], "running", "{after}");

    // on-failure:2: twice more after a failure, then left exited.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ]);
    let record = d.wait_for("flaky", Duration::from_secs(10), |v| {
        v["restart_count"] == 2 && v["state"] == "exited"
    });
    assert_eq!(
        (record["restart_count"].as_u64(), record["state"].as_str()),
        (Some(2), Some("exited")),
        "{record}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.inspect("flaky")["restart_count"], 2);
    // on-failure and a clean exit: done.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "clean",
        "--restart",
        "on-failure",
        "busybox",
        "true",
    ]);
    std::thread::sleep(Duration::from_secs(1));
    let clean = d.inspect("clean");
    assert_eq!(
        (clean["restart_count"].as_u64(), clean["state"].as_str()),
        (Some(0), Some("exited")),
        "{clean}"
    );
    // A process killed from outside (not by berth) comes back under always.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "600",
    ]);
    let pid = d.inspect("svc")["pid"].as_u64().expect("pid");
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let back = d.wait_for("svc", Duration::from_secs(10), |v| {
        v["restart_count"] == 1 && v["state"] == "running"
    });
    assert_eq!(back["state"], "running", "{back}");
    assert_ne!(back["pid"].as_u64(), Some(pid));

    let refused = d.fails(&["run", "-d", "--restart", "sometimes", "busybox", "true"]);
    assert!(
        refused.contains("--restart") && refused.contains("on-failure"),
        "{refused}"
    );
    d.ok(&["rm", "-f", "again", "flaky", "clean", "svc"]);
}
