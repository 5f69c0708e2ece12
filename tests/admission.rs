//! Admission counts what instances reserve (their requests), not their ceilings: idle
//! containers without flags fit by the dozen, `--reserve-*` beyond the free room is refused
//! with what is short and leaves nothing, a type reserves its full size, and two runs racing
//! for the last room are not both admitted.

use crate::common::{error_line, stderr, Daemon};

fn info(d: &Daemon) -> serde_json::Value {
    serde_json::from_str(&d.ok(&["info", "--json"])).unwrap()
}

#[test]
fn idle_containers_without_flags_reserve_a_little_and_keep_their_ceiling() {
    let d = Daemon::with_busybox();
    let capacity_cpus = info(&d)["allocated"]["capacity_cpus"].as_f64().unwrap();
    // Each is limited to 1 CPU by default; charged that, this host would hold only
    // `capacity_cpus` of them.
    let count = 32;
    for n in 0..count {
        d.ok(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &format!("idle{n}"),
            "busybox",
            "sleep",
            "1000",
        ]);
    }
    let running = d.ok(&["ps", "-q"]);
    assert_eq!(running.lines().count(), count, "{running}");
    if capacity_cpus < count as f64 {
        eprintln!("{count} containers limited to 1 CPU each run on a capacity of {capacity_cpus} CPUs");
    }

    let record = d.inspect("idle0");
    assert_eq!(record["limits"]["cpus"], 1.0);
    assert_eq!(record["limits"]["memory_bytes"], 256u64 << 20);
    assert_eq!(record["requests"]["cpus"], 0.1);
    assert_eq!(record["requests"]["memory_bytes"], 64u64 << 20);

    let allocated = &info(&d)["allocated"];
    let reserved = allocated["cpus"].as_f64().unwrap();
    assert!((reserved - 0.1 * count as f64).abs() < 1e-6, "{allocated}");
    assert_eq!(allocated["memory_bytes"], (64u64 << 20) * count as u64);
    assert!((allocated["limit_cpus"].as_f64().unwrap() - count as f64).abs() < 1e-6);
    let text = d.ok(&["info"]);
    assert!(text.contains("reserved 3.20"), "{text}");
    assert!(text.contains("Default request: cpus 0.1, memory 64MiB"), "{text}");
}

#[test]
fn reservations_beyond_free_room_are_refused_with_what_is_short_and_leave_nothing() {
    let d = Daemon::with_busybox();
    let allocated = info(&d)["allocated"].clone();
    let capacity = allocated["capacity_memory_bytes"].as_u64().unwrap();
    let half = format!("{}", capacity / 2 + (64 << 20));
    d.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "first",
        "--memory",
        "unlimited",
        "--reserve-memory",
        &half,
        "busybox",
        "sleep",
        "1000",
    ]);
    let record = d.inspect("first");
    assert_eq!(record["limits"]["memory_bytes"], serde_json::Value::Null);
    assert_eq!(record["requests"]["memory_bytes"].as_u64().unwrap().to_string(), half);

    let refused = d.run(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "second",
        "--memory",
        "unlimited",
        "--reserve-memory",
        &half,
        "busybox",
        "sleep",
        "1000",
    ]);
    assert!(!refused.status.success());
    assert_eq!(stderr(&refused).lines().count(), 1, "{}", stderr(&refused));
    let line = error_line(&refused);
    assert!(
        line.contains("not enough room to start second: memory: it reserves") && line.contains("is free"),
        "{line}"
    );
    // Nothing is left behind, and the name is free again.
    assert_eq!(d.ok(&["ps", "-aq"]).lines().count(), 1);
    d.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "second",
        "busybox",
        "sleep",
        "1000",
    ]);

    // CPUs likewise: fill the rest of the CPU capacity with full-CPU reservations.
    let free_cpus = info(&d)["allocated"]["free_cpus"].as_f64().unwrap();
    let host_cpus = info(&d)["cpus"].as_u64().unwrap();
    let per = host_cpus.to_string();
    let fits = (free_cpus / host_cpus as f64).floor() as usize;
    for n in 0..fits {
        d.ok(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &format!("busy{n}"),
            "--cpus",
            &per,
            "--reserve-cpus",
            &per,
            "busybox",
            "sleep",
            "1000",
        ]);
    }
    let refused = d.run(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "one-more",
        "--cpus",
        &per,
        "busybox",
        "sleep",
        "1000",
    ]);
    assert!(
        error_line(&refused).contains("not enough room to start one-more: CPUs: it reserves"),
        "{}",
        stderr(&refused)
    );
    assert!(d.run(&["inspect", "one-more"]).status.code() != Some(0));

    // Growing a running instance's reservation needs room too; a request above its limit
    // is refused before anything is created.
    let grow = d.run(&["update", "--memory", "unlimited", "--reserve-memory", &half, "second"]);
    assert!(
        error_line(&grow).contains("not enough room to grow second"),
        "{}",
        stderr(&grow)
    );
    let record = d.inspect("second");
    assert_eq!(record["requests"]["memory_bytes"], 64u64 << 20);
    assert_eq!(record["limits"]["memory_bytes"], 256u64 << 20);
    let above = d.run(&["run", "--rm", "--cpus", "0.5", "--reserve-cpus", "1", "busybox", "true"]);
    assert!(
        error_line(&above).contains("--reserve-cpus 1 is above the CPU limit 0.5"),
        "{}",
        stderr(&above)
    );
    let above = d.run(&["create", "--reserve-memory", "1g", "busybox", "true"]);
    assert!(
        error_line(&above).contains("--reserve-memory 1GiB is above the memory limit 256MiB"),
        "{}",
        stderr(&above)
    );
    assert!(d.ok(&["ps", "-aq"]).lines().all(|id| !id.is_empty()));
    assert_eq!(d.ok(&["ps", "-aq"]).lines().count(), 2 + fits);
}

#[test]
fn an_instance_type_reserves_its_full_size() {
    let d = Daemon::with_busybox();
    d.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "typed",
        "--type",
        "t3.micro",
        "busybox",
        "sleep",
        "1000",
    ]);
    let record = d.inspect("typed");
    assert_eq!(record["requests"]["cpus"], 2.0);
    assert_eq!(record["requests"]["memory_bytes"], 1u64 << 30);
    assert_eq!(record["requests"]["cpus"], record["limits"]["cpus"]);
    let allocated = &info(&d)["allocated"];
    assert_eq!(allocated["cpus"], 2.0);
    assert_eq!(allocated["memory_bytes"], 1u64 << 30);
    // A flag that resizes the type resizes what it reserves.
    d.ok(&[
        "create", "--name", "smaller", "--type", "t3.micro", "--memory", "512m", "busybox", "true",
    ]);
    assert_eq!(d.inspect("smaller")["requests"]["memory_bytes"], 512u64 << 20);
    // Stopped instances reserve nothing.
    d.ok(&["stop", "-t", "1", "typed"]);
    assert_eq!(info(&d)["allocated"]["cpus"], 0.0);
}

#[test]
fn two_runs_racing_for_the_last_room_are_not_both_admitted() {
    let d = Daemon::with_busybox();
    for round in 0..3 {
        let free = info(&d)["allocated"]["free_memory_bytes"].as_u64().unwrap();
        let each = format!("{}", free / 10 * 6);
        let spawn = |name: String| {
            d.command(&[
                "run",
                "-d",
                "--network",
                "none",
                "--name",
                &name,
                "--memory",
                "unlimited",
                "--reserve-memory",
                &each,
                "busybox",
                "sleep",
                "1000",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        };
        let racers = [spawn(format!("a{round}")), spawn(format!("b{round}"))];
        let outputs: Vec<_> = racers.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        let admitted = outputs.iter().filter(|o| o.status.success()).count();
        assert_eq!(admitted, 1, "round {round}: {outputs:?}");
        let refused = outputs.iter().find(|o| !o.status.success()).unwrap();
        assert!(error_line(refused).contains("not enough room"), "{}", stderr(refused));
        let ids = d.ok(&["ps", "-aq"]);
        assert_eq!(ids.lines().count(), 1, "round {round}: {ids}");
        d.ok(&["rm", "-f", ids.trim()]);
    }
}
