//! Test hosts: network namespaces joined by a bridge in this one, each with an address in
//! 198.51.100.0/24 (documentation addresses; nothing leaves the machine). A host is cut off
//! by taking its link down, as a pulled cable would, and healed by bringing it back.
//!
//! Tests run two at a time, so the /24 is split into two slots (/25 each) and a set of hosts
//! holds its slot for its life: two bridges with one address would route each other's
//! traffic into the wrong set.

use std::process::Command;
use std::sync::{Mutex, MutexGuard};

pub struct TestHosts {
    bridge: String,
    pub hosts: Vec<TestHost>,
    /// This set's bridge address, which its hosts reach the test (NFS, registry) through.
    pub gateway: String,
    _slot: MutexGuard<'static, ()>,
}

static SLOTS: [Mutex<()>; 2] = [Mutex::new(()), Mutex::new(())];

/// Waits for a free slot; returns its index and the guard.
fn take_slot() -> (usize, MutexGuard<'static, ()>) {
    loop {
        for (index, slot) in SLOTS.iter().enumerate() {
            match slot.try_lock() {
                Ok(guard) => return (index, guard),
                // A test that failed while holding it: the slot is free all the same.
                Err(std::sync::TryLockError::Poisoned(poisoned)) => return (index, poisoned.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Deletes a bridge an interrupted run left holding `address`.
fn remove_stale_bridge(address: &str) {
    let Ok(output) = Command::new("ip").args(["-br", "addr"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        if name.starts_with("bth") && line.contains(&format!(" {address}/")) {
            let _ = Command::new("ip").args(["link", "del", name]).status();
        }
    }
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
    /// `count` hosts at 198.51.100.11, .12, ... (slot 0) or .139, .140, ... (slot 1); the
    /// bridge here is 198.51.100.1 or .129.
    pub fn new(count: usize) -> TestHosts {
        let (slot, guard) = take_slot();
        let base = 128 * slot;
        let gateway = format!("198.51.100.{}", base + 1);
        remove_stale_bridge(&gateway);
        let tag = format!("{:04x}", super::rand_u32() & 0xffff);
        let bridge = format!("bth{tag}");
        // Room for VXLAN's 50 bytes around full 1500-byte frames of the instances.
        ip(&["link", "add", &bridge, "mtu", "1600", "type", "bridge"]);
        ip(&["addr", "add", &format!("{gateway}/25"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let mut hosts = TestHosts {
            bridge,
            hosts: Vec::new(),
            gateway,
            _slot: guard,
        };
        for i in 0..count {
            let netns = format!("berth-h{tag}-{i}");
            let link = format!("bth{tag}h{i}");
            let address = format!("198.51.100.{}", base + 11 + i);
            ip(&["netns", "add", &netns]);
            ip(&[
                "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ]);
            ip(&["link", "set", &link, "master", &hosts.bridge, "up"]);
            ip(&["-n", &netns, "addr", "add", &format!("{address}/25"), "dev", "eth0"]);
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
