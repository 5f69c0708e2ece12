//! Networking for both kinds: addresses on a bridge, names through berth's DNS, published
//! ports (on 127.0.0.1 and the host's own addresses), NAT to an outside host (a separate
//! network namespace), isolated networks, bandwidth limits, and nothing left behind.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::published::{self, NatView};
use crate::common::{stderr, stdout, Daemon};

fn links_named(prefixes: &[&str], id: &str) -> Vec<String> {
    let output = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| {
            l.split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        })
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)) && n.contains(&id[..12]))
        .collect()
}

/// Whether the devices named so are gone within 10 s: a container's veth pair goes with its
/// namespace, in the kernel's own cleanup work shortly after `rm` returns.
fn links_gone(prefixes: &[&str], id: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !links_named(prefixes, id).is_empty() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn dnat_rules_for(d: &Daemon, address: &str) -> usize {
    let output = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", &d.dnat_chain()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains(address))
        .count()
}

fn host_address() -> String {
    let output = Command::new("hostname").arg("-I").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn containers_and_vms_reach_each_other_by_name_and_through_published_ports() {
    let d = Daemon::with_busybox();
    let port = published::free_port();
    let vm_port = published::free_port();
    let web = d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "sh",
        "-c",
        "mkdir -p /www && echo hello-container > /www/index.html && httpd -f -p 80 -h /www",
    ]);
    let web = web.trim().to_string();
    let address = d.inspect("web")["address"]["address"].as_str().unwrap().to_string();
    assert!(address.starts_with(&format!("{}.0.", d.subnet_prefix)), "{address}");
    // by name and by address, from another container
    assert_eq!(
        d.ok(&["run", "--rm", "busybox", "wget", "-qO-", "http://web/"]),
        "hello-container\n"
    );
    assert_eq!(
        d.ok(&["run", "--rm", "busybox", "wget", "-qO-", &format!("http://{address}/")]),
        "hello-container\n"
    );
    // published on the host's loopback and its own address (the first answer waited for: it
    // once took more than 5 s with the suite's VMs and browser busy on both cores)
    let nat = NatView::of(&d);
    let first = published::first_answer("127.0.0.1", port, "/", Duration::from_secs(20), &nat);
    assert_eq!(first, "hello-container\n");
    assert_eq!(
        published::answer_now(&host_address(), port, "/", &nat),
        "hello-container\n"
    );
    // the same port cannot be published twice
    let clash = d.run(&["run", "-d", "-p", &format!("{port}:8080"), "busybox", "sleep", "10"]);
    assert!(
        stderr(&clash).contains("already published by web"),
        "{}",
        stderr(&clash)
    );
    let none = d.run(&["run", "--rm", "--network", "none", "-p", "9999:80", "busybox", "true"]);
    assert!(stderr(&none).contains("--network none"), "{}", stderr(&none));
    // the published port is held on the host while web runs, and a port a program on the
    // host listens on is refused (the rules would have taken its connections without a word)
    assert!(TcpListener::bind(("0.0.0.0", port)).is_err(), "port {port} is not held");
    let listener = TcpListener::bind(("0.0.0.0", published::free_port())).unwrap();
    let busy = listener.local_addr().unwrap().port();
    let refused = d.run(&[
        "run",
        "-d",
        "--name",
        "late",
        "-p",
        &format!("{busy}:80"),
        "busybox",
        "sleep",
        "10",
    ]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains(&format!("host port 0.0.0.0:{busy}/tcp is in use on this host")),
        "{}",
        stderr(&refused)
    );
    assert!(
        !d.ok(&["ps", "-a"]).contains("late"),
        "a refused start leaves no instance"
    );
    drop(listener);

    // a VM on the same network: it reaches the container by name, the container reaches it
    d.ok(&[
        "run",
        "-d",
        "--vm",
        "--name",
        "vweb",
        "-p",
        &format!("{vm_port}:80"),
        "busybox",
        "sh",
        "-c",
        "mkdir -p /www && echo hello-vm > /www/index.html && httpd -f -p 80 -h /www",
    ]);
    assert_eq!(
        d.ok(&["exec", "vweb", "wget", "-qO-", "http://web/"]),
        "hello-container\n"
    );
    assert_eq!(
        d.ok(&["run", "--rm", "busybox", "wget", "-qO-", "http://vweb/"]),
        "hello-vm\n"
    );
    assert_eq!(published::answer_now("127.0.0.1", vm_port, "/", &nat), "hello-vm\n");
    let vm = d.inspect("vweb")["id"].as_str().unwrap().to_string();
    let vm_address = d.inspect("vweb")["address"]["address"].as_str().unwrap().to_string();

    // removal leaves no device, namespace, rule or held port behind
    d.ok(&["rm", "-f", "web", "vweb"]);
    assert!(
        TcpListener::bind(("0.0.0.0", port)).is_ok(),
        "port {port} is still held"
    );
    // A VM's tap is deleted by `rm` itself, a container's veth by the kernel soon after.
    assert!(links_named(&["bv", "bt"], &vm).is_empty());
    assert!(links_gone(&["bv"], &web), "{:?}", links_named(&["bv"], &web));
    assert_eq!(dnat_rules_for(&d, &address) + dnat_rules_for(&d, &vm_address), 0);
    assert_eq!(
        std::fs::read_dir(d.state.join("netns")).map(|e| e.count()).unwrap_or(0),
        0
    );
}

/// An "outside" host: a network namespace with a veth to the host, serving HTTP that
/// answers with the client's address.
struct Outside {
    name: String,
    server: Child,
}

impl Outside {
    fn start(tag: u32) -> Outside {
        let name = format!("bto{tag}");
        let run = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().unwrap();
            assert!(status.success(), "ip {}", args.join(" "));
        };
        run(&["netns", "add", &name]);
        run(&[
            "link",
            "add",
            &format!("{name}h"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}o"),
        ]);
        run(&["link", "set", &format!("{name}o"), "netns", &name]);
        run(&["addr", "add", "203.0.113.1/24", "dev", &format!("{name}h")]);
        run(&["link", "set", &format!("{name}h"), "up"]);
        run(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            "203.0.113.2/24",
            "dev",
            &format!("{name}o"),
        ]);
        run(&["netns", "exec", &name, "ip", "link", "set", &format!("{name}o"), "up"]);
        run(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        let server = Command::new("ip")
            .args(["netns", "exec", &name, "python3", "-c",
                "import http.server\nclass H(http.server.BaseHTTPRequestHandler):\n def do_GET(self):\n  b=self.client_address[0].encode()\n  self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)\n def log_message(self,*a): pass\nhttp.server.HTTPServer(('203.0.113.2', 8000), H).serve_forever()"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // python takes a moment to start; wait until the port answers
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let probe = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &name,
                    "curl",
                    "-s",
                    "-m",
                    "1",
                    "http://203.0.113.2:8000/",
                ])
                .output()
                .unwrap();
            if probe.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Outside { name, server }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}h", self.name)])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

#[test]
fn nat_isolation_networks_and_bandwidth() {
    let d = Daemon::with_busybox();
    let outside = Outside::start(std::process::id() % 10000);
    // NAT: the outside host sees the host's address, not the container's.
    let seen = d.ok(&["run", "--rm", "busybox", "wget", "-qO-", "http://203.0.113.2:8000/"]);
    assert_eq!(seen, "203.0.113.1", "masqueraded to the host's address");

    // Networks: created with the next free subnet, isolated from each other.
    let created = d.ok(&["network", "create", "back"]);
    assert!(created.contains(&format!("{}.1.0/24", d.subnet_prefix)), "{created}");
    let clash = format!("{}.0.128/25", d.subnet_prefix);
    let overlap = d.run(&["network", "create", "--subnet", &clash, "clash"]);
    assert!(
        stderr(&overlap).contains("overlaps network default"),
        "{}",
        stderr(&overlap)
    );
    // Nor over a subnet the host already has on an interface (here the outside's veth).
    let host_clash = d.run(&["network", "create", "--subnet", "203.0.113.0/24", "clash"]);
    assert!(
        stderr(&host_clash).contains("on the host's interface"),
        "{}",
        stderr(&host_clash)
    );
    d.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "back",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/tmp/blob bs=1M count=2 2>/dev/null; httpd -f -p 80 -h /tmp",
    ]);
    let same = d.run(&[
        "run",
        "--rm",
        "--network",
        "back",
        "busybox",
        "wget",
        "-qO",
        "/dev/null",
        "http://srv/blob",
    ]);
    assert!(same.status.success(), "{}", stderr(&same));
    let srv_address = d.inspect("srv")["address"]["address"].as_str().unwrap().to_string();
    let other = d.run(&[
        "run",
        "--rm",
        "busybox",
        "wget",
        "-T",
        "2",
        "-qO",
        "/dev/null",
        &format!("http://{srv_address}/blob"),
    ]);
    assert!(!other.status.success(), "networks are isolated");
    // Creates at once (as Compose makes a stack's services) get an address each.
    let names: Vec<String> = (0..6).map(|n| format!("burst{n}")).collect();
    std::thread::scope(|scope| {
        for name in &names {
            let d = &d;
            scope.spawn(move || d.ok(&["create", "--name", name, "--network", "back", "busybox", "true"]));
        }
    });
    let mut addresses: Vec<String> = names
        .iter()
        .map(|name| d.inspect(name)["address"]["address"].as_str().unwrap().to_string())
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), names.len(), "one address each: {addresses:?}");
    for name in &names {
        d.ok(&["rm", name]);
    }
    let internal = d.ok(&["network", "create", "--internal", "sealed"]);
    assert!(internal.contains("sealed"));
    let sealed = d.run(&[
        "run",
        "--rm",
        "--network",
        "sealed",
        "busybox",
        "wget",
        "-T",
        "2",
        "-qO-",
        "http://203.0.113.2:8000/",
    ]);
    assert!(!sealed.status.success(), "an internal network has no way out");

    // Bandwidth: 2 MiB at 8 Mbit/s takes about 2.1 s; unlimited it is instant.
    let started = Instant::now();
    d.ok(&[
        "run",
        "--rm",
        "--network",
        "back",
        "--bandwidth",
        "8mbit",
        "busybox",
        "wget",
        "-qO",
        "/dev/null",
        "http://srv/blob",
    ]);
    let limited = started.elapsed().as_secs_f64();
    assert!(limited > 1.6 && limited < 6.0, "2 MiB at 8 Mbit/s took {limited:.2}s");
    // A VM's own traffic is limited too (through an IFB device where the kernel cannot
    // police): the same 2 MiB served by a VM, timed where it arrives.
    d.ok(&[
        "run",
        "--vm",
        "-d",
        "--name",
        "vsrc",
        "--network",
        "back",
        "--bandwidth",
        "8mbit",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/tmp/blob bs=1M count=2 2>/dev/null; touch /tmp/ready; httpd -f -p 80 -h /tmp",
    ]);
    let timed = d.ok(&[
        "run",
        "--rm",
        "--network",
        "back",
        "busybox",
        "sh",
        "-c",
        "for i in $(seq 150); do wget -qO /dev/null http://vsrc/ready 2>/dev/null && break; sleep 0.2; done; \
         { time -f %e wget -qO /dev/null http://vsrc/blob; } 2>&1",
    ]);
    let from_vm: f64 = timed.trim().lines().last().unwrap_or("").parse().unwrap_or(0.0);
    assert!(
        from_vm > 1.6 && from_vm < 6.0,
        "2 MiB from a VM at 8 Mbit/s took {timed:?}"
    );
    let vm_id = d.inspect("vsrc")["id"].as_str().unwrap().to_string();
    assert_eq!(links_named(&["bi"], &vm_id).len(), 1, "the VM's IFB device");
    d.ok(&["rm", "-f", "vsrc"]);
    assert!(links_named(&["bi", "bt"], &vm_id).is_empty(), "no tap or IFB left");

    let in_use = d.run(&["network", "rm", "back"]);
    assert!(stderr(&in_use).contains("has instance srv"), "{}", stderr(&in_use));
    d.ok(&["rm", "-f", "srv"]);
    d.ok(&["network", "rm", "back", "sealed"]);
    let listing = d.ok(&["network", "ls"]);
    assert!(listing.contains("default") && !listing.contains("back"), "{listing}");
    let host = d.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "sh",
        "-c",
        "cat /proc/net/dev | grep -c :",
    ]);
    assert!(
        host.trim().parse::<u32>().unwrap() > 1,
        "--network host sees the host's interfaces"
    );
    drop(outside);
    let _ = stdout;
}

#[test]
fn a_networked_container_survives_a_daemon_crash() {
    let mut d = Daemon::with_busybox();
    let port = published::free_port();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "kept",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "sh",
        "-c",
        "mkdir -p /www && echo still-serving > /www/index.html && httpd -f -p 80 -h /www",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    d.crash_and_restart();
    assert_eq!(
        published::answer_now("127.0.0.1", port, "/", &NatView::of(&d)),
        "still-serving\n"
    );
    assert!(
        TcpListener::bind(("0.0.0.0", port)).is_err(),
        "the restarted daemon holds port {port} again"
    );
    assert_eq!(
        d.ok(&["run", "--rm", "busybox", "wget", "-qO-", "http://kept/"]),
        "still-serving\n"
    );
    let id = d.inspect("kept")["id"].as_str().unwrap().to_string();
    d.ok(&["rm", "-f", "kept"]);
    assert!(links_gone(&["bv"], &id), "{:?}", links_named(&["bv"], &id));
}
