//! The host's loopback is not reachable from a berth bridge (kube-proxy CVE-2020-8558): a
//! neighbour on the bridge — here a network namespace of the test's own, joined to it with a
//! veth as a container or VM guest is — sends to 127.0.0.1 through the gateway, and a service
//! the host binds to 127.0.0.1 must not see it; published ports on 127.0.0.1 still work.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::Daemon;

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {}", args.join(" "));
}

/// A neighbour on a berth bridge: a namespace with a veth whose host end is a bridge port,
/// and a route to 127.0.0.1 through the gateway (its own loopback stays down, so 127.0.0.1
/// is not local there).
struct Neighbour {
    netns: String,
    host_end: String,
}

impl Neighbour {
    fn join(bridge: &str, address: &str, gateway: &str) -> Neighbour {
        let tag = std::process::id() % 100000;
        let netns = format!("btn{tag}");
        let host_end = format!("btn{tag}h");
        let inner = format!("btn{tag}n");
        ip(&["netns", "add", &netns]);
        let neighbour = Neighbour {
            netns: netns.clone(),
            host_end: host_end.clone(),
        };
        ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &inner]);
        ip(&["link", "set", &host_end, "master", bridge, "up"]);
        ip(&["link", "set", &inner, "netns", &netns]);
        neighbour.exec(&["ip", "addr", "add", address, "dev", &inner]);
        neighbour.exec(&["ip", "link", "set", &inner, "up"]);
        neighbour.exec(&["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"]);
        neighbour.exec(&["ip", "route", "add", "127.0.0.1/32", "via", gateway, "dev", &inner]);
        neighbour
    }

    fn exec(&self, args: &[&str]) {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "in {}: {}", self.netns, args.join(" "));
    }

    /// Tries an HTTP request from the neighbour; the host's listener tells whether it arrived.
    fn try_connect(&self, host: &str, port: u16) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.netns, "curl", "-s", "-m", "2"])
            .arg(format!("http://{host}:{port}/"))
            .output()
            .unwrap();
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_end]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

/// How many connections reach `listener` within `wait`.
fn connections(listener: &TcpListener, wait: Duration) -> usize {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + wait;
    let mut count = 0;
    while Instant::now() < deadline {
        if listener.accept().is_ok() {
            count += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    count
}

fn route_localnet(device: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{device}/route_localnet"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn a_bridge_neighbour_cannot_reach_the_hosts_loopback() {
    let d = Daemon::with_busybox();
    let port = crate::common::published::free_port();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("127.0.0.1:{port}:80"),
        "busybox",
        "sh",
        "-c",
        "mkdir -p /www && echo published > /www/index.html && httpd -f -p 80 -h /www",
    ]);
    let address = d.inspect("web")["address"].clone();
    let gateway = address["gateway"].as_str().unwrap().to_string();
    let networks: serde_json::Value = serde_json::from_str(&d.ok(&["network", "ls", "--json"])).unwrap();
    let bridge = networks
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "default")
        .and_then(|n| n["bridge"].as_str())
        .unwrap()
        .to_string();

    // The published port on 127.0.0.1 still works (this is what route_localnet is for).
    let deadline = Instant::now() + Duration::from_secs(5);
    let fetch = || {
        Command::new("curl")
            .args(["-s", "-m", "3", &format!("http://127.0.0.1:{port}/")])
            .output()
            .unwrap()
    };
    while fetch().stdout.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(String::from_utf8_lossy(&fetch().stdout), "published\n");

    // Only berth's bridge routes loopback; the neighbour's port and the uplink do not.
    assert_eq!(route_localnet(&bridge), "1");
    let neighbour = Neighbour::join(&bridge, &format!("{}.0.250/24", d.subnet_prefix), &gateway);
    assert_eq!(route_localnet(&neighbour.host_end), "0");
    let uplink = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "route", "show", "default"])
            .output()
            .unwrap()
            .stdout,
    )
    .split_whitespace()
    .skip_while(|w| *w != "dev")
    .nth(1)
    .map(str::to_string);
    if let Some(uplink) = uplink {
        assert_eq!(route_localnet(&uplink), "0", "{uplink}");
    }

    // The path works: a host service on the gateway's address is reachable from the neighbour.
    let on_gateway = TcpListener::bind((gateway.as_str(), 0)).unwrap();
    neighbour.try_connect(&gateway, on_gateway.local_addr().unwrap().port());
    assert_eq!(
        connections(&on_gateway, Duration::from_millis(500)),
        1,
        "the neighbour reaches the gateway"
    );

    // The attack: the same neighbour, to a service the host binds to 127.0.0.1.
    let on_loopback = TcpListener::bind("127.0.0.1:0").unwrap();
    neighbour.try_connect("127.0.0.1", on_loopback.local_addr().unwrap().port());
    assert_eq!(
        connections(&on_loopback, Duration::from_millis(500)),
        0,
        "a bridge neighbour reached a service on the host's 127.0.0.1"
    );
    d.ok(&["rm", "-f", "web"]);
}
