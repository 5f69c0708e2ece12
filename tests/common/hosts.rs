//! Test hosts: network namespaces joined by a bridge in this one, each with an address in
//! 198.51.100.0/24 (documentation addresses; nothing leaves the machine). A host is cut off
//! by taking its link down, as a pulled cable would, and healed by bringing it back.

use std::process::Command;

pub struct TestHosts {
    bridge: String,
    pub hosts: Vec<TestHost>,
}

pub struct TestHost {
    /// The `ip netns` name.
    pub netns: String,
    pub address: String,
    /// This namespace's end of the host's link (on the bridge).
    link: String,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl TestHosts {
    /// `count` hosts at 198.51.100.11, .12, ...; the bridge here is 198.51.100.1.
    pub fn new(count: usize) -> TestHosts {
        let tag = format!("{:04x}", super::rand_u32() & 0xffff);
        let bridge = format!("bth{tag}");
        // Room for VXLAN's 50 bytes around full 1500-byte frames of the instances.
        ip(&["link", "add", &bridge, "mtu", "1600", "type", "bridge"]);
        ip(&["addr", "add", "198.51.100.1/24", "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let mut hosts = TestHosts {
            bridge,
            hosts: Vec::new(),
        };
        for i in 0..count {
            let netns = format!("berth-h{tag}-{i}");
            let link = format!("bth{tag}h{i}");
            let address = format!("198.51.100.{}", 11 + i);
            ip(&["netns", "add", &netns]);
            ip(&[
                "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ]);
            ip(&["link", "set", &link, "master", &hosts.bridge, "up"]);
            ip(&["-n", &netns, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
            ip(&["-n", &netns, "link", "set", "eth0", "up"]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
            hosts.hosts.push(TestHost { netns, address, link });
        }
        hosts
    }

    /// Cuts host `index` off from every other (and from this namespace).
    pub fn cut(&self, index: usize) {
        ip(&["link", "set", &self.hosts[index].link, "down"]);
    }

    pub fn heal(&self, index: usize) {
        ip(&["link", "set", &self.hosts[index].link, "up"]);
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", &host.netns]).status();
            let _ = Command::new("ip").args(["link", "del", &host.link]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
    }
}
