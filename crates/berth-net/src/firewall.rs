//! iptables rules in chains of one daemon's own (`BERTH-POSTROUTING` and `BERTH-DNAT` in nat,
//! `BERTH-FORWARD` and `BERTH-INPUT` in filter; a daemon with a node tag has `BERTH-<tag>-…`),
//! jumped to once from the built-in chains. Rules of others are never touched; berth's own
//! are added idempotently and deleted exactly.

use std::net::Ipv4Addr;

use crate::{failed, NetResult, Subnet};

/// Every berth bridge is called `bb-…`, so one wildcard matches them all.
pub const BRIDGE_PREFIX: &str = "bb-";

/// iptables refuses chain names longer than this.
const MAX_CHAIN_NAME: usize = 28;

fn iptables(args: &[&str]) -> Result<(), String> {
    let output = berth_process::command("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// Appends `rule` to `chain` of `table` unless it is there (or inserts it first, `at_top`).
fn ensure(table: &str, chain: &str, rule: &[&str], at_top: bool) -> NetResult<()> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend_from_slice(rule);
    if iptables(&check).is_ok() {
        return Ok(());
    }
    let mut add = vec!["-t", table, if at_top { "-I" } else { "-A" }, chain];
    add.extend_from_slice(rule);
    iptables(&add).map_err(|e| failed(format!("adding an iptables rule to {table}/{chain}"), e))
}

/// Deletes `rule` from `chain` while it is there.
fn remove(table: &str, chain: &str, rule: &[&str]) {
    let mut delete = vec!["-t", table, "-D", chain];
    delete.extend_from_slice(rule);
    while iptables(&delete).is_ok() {}
}

fn sysctl(key: &str, value: &str) -> NetResult<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| failed(format!("setting {key}"), e))
}

/// Whether `device` routes 127.0.0.0/8 (the host's loopback) to and from its neighbours.
fn route_localnet(device: &str, on: bool) -> NetResult<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{device}/route_localnet");
    std::fs::write(&path, if on { "1" } else { "0" })
        .map_err(|e| failed(format!("setting route_localnet of {device}"), e))
}

/// Whether the host routes 127.0.0.0/8 on every interface (`net.ipv4.conf.all.route_localnet`,
/// which berth before this version set): any neighbour could then reach services bound to the
/// host's loopback, except on berth's bridges, which drop such traffic.
pub fn loopback_routed_everywhere() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/route_localnet").is_ok_and(|v| v.trim() == "1")
}

/// Turns `net.ipv4.conf.all.route_localnet` off again (berth's bridges keep their own
/// setting, which published ports on 127.0.0.1 need).
pub fn stop_routing_loopback_everywhere() -> std::io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/conf/all/route_localnet", "0")
}

/// A rule as (table, chain, arguments).
type Rule = (&'static str, String, Vec<String>);

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// One daemon's chains. The daemon of the default state directory keeps the names berth has
/// always used (`BERTH-DNAT`, …); every other daemon's carry its node tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firewall {
    postrouting: String,
    dnat: String,
    forward: String,
    input: String,
}

impl Firewall {
    /// Chains named `BERTH-…` (`tag` None) or `BERTH-<tag>-…`.
    pub fn new(tag: Option<&str>) -> NetResult<Firewall> {
        let prefix = match tag {
            None => "BERTH".to_string(),
            Some(tag) => format!("BERTH-{tag}"),
        };
        let firewall = Firewall {
            postrouting: format!("{prefix}-POSTROUTING"),
            dnat: format!("{prefix}-DNAT"),
            forward: format!("{prefix}-FORWARD"),
            input: format!("{prefix}-INPUT"),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-';
        if firewall.postrouting.len() > MAX_CHAIN_NAME || !prefix.chars().all(valid) {
            return Err(failed(
                "naming iptables chains",
                format!("'{prefix}' gives chain names iptables refuses (letters, digits, '-'; at most {MAX_CHAIN_NAME} characters)"),
            ));
        }
        Ok(firewall)
    }

    /// The nat chain that holds published ports.
    pub fn dnat_chain(&self) -> &str {
        &self.dnat
    }

    /// The jumps to the chains: (table, built-in chain, rule, inserted at the top).
    fn jumps(&self) -> Vec<(&'static str, &'static str, Vec<String>, bool)> {
        vec![
            ("nat", "POSTROUTING", args(&["-j", &self.postrouting]), false),
            (
                "nat",
                "PREROUTING",
                args(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", &self.dnat]),
                false,
            ),
            (
                "nat",
                "OUTPUT",
                args(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", &self.dnat]),
                false,
            ),
            ("filter", "FORWARD", args(&["-j", &self.forward]), false),
            // The loopback guard has to come before any ACCEPT of the host's own rules.
            ("filter", "INPUT", args(&["-j", &self.input]), true),
        ]
    }

    fn chains(&self) -> [(&'static str, &str); 4] {
        [
            ("nat", &self.postrouting),
            ("nat", &self.dnat),
            ("filter", &self.forward),
            ("filter", &self.input),
        ]
    }

    /// The chains and the jumps to them; forwarding on. Safe to call again.
    pub fn ensure_base(&self) -> NetResult<()> {
        sysctl("net.ipv4.ip_forward", "1")?;
        for (table, chain) in self.chains() {
            let _ = iptables(&["-t", table, "-N", chain]);
        }
        for (table, chain, rule, at_top) in self.jumps() {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            ensure(table, chain, &rule, at_top)?;
        }
        Ok(())
    }

    /// Removes the jumps, then flushes and deletes the chains (a node that is gone for good;
    /// tests).
    pub fn remove_all(&self) {
        for (table, chain, rule, _) in self.jumps() {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            remove(table, chain, &rule);
        }
        for (table, chain) in self.chains() {
            let _ = iptables(&["-t", table, "-F", chain]);
            let _ = iptables(&["-t", table, "-X", chain]);
        }
    }

    /// The rules of one network.
    fn network_rules(&self, bridge: &str, subnet: &Subnet, internal: bool) -> Vec<Rule> {
        let others = format!("{BRIDGE_PREFIX}+");
        let mut rules: Vec<Rule> = vec![
            // The bridge routes 127.0.0.0/8 for published ports on 127.0.0.1 (see add_network),
            // so a neighbour on it could send to the host's loopback services (kube-proxy
            // CVE-2020-8558): only replies of those connections may come in. First, so that
            // it is in place before the bridge routes loopback.
            (
                "filter",
                self.input.clone(),
                args(&[
                    "-i",
                    bridge,
                    "-d",
                    "127.0.0.0/8",
                    "-m",
                    "conntrack",
                    "!",
                    "--ctstate",
                    "RELATED,ESTABLISHED,DNAT",
                    "-j",
                    "DROP",
                ]),
            ),
            (
                "filter",
                self.forward.clone(),
                args(&["-i", bridge, "-o", bridge, "-j", "ACCEPT"]),
            ),
            (
                "filter",
                self.forward.clone(),
                args(&[
                    "-o",
                    bridge,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "RELATED,ESTABLISHED,DNAT",
                    "-j",
                    "ACCEPT",
                ]),
            ),
            // Networks are isolated from each other (any daemon's).
            (
                "filter",
                self.forward.clone(),
                args(&["-i", bridge, "-o", &others, "-j", "DROP"]),
            ),
            // Published ports on 127.0.0.1: the host's loopback traffic leaves through the
            // bridge with the gateway's address.
            (
                "nat",
                self.postrouting.clone(),
                args(&["-s", "127.0.0.0/8", "-o", bridge, "-j", "MASQUERADE"]),
            ),
        ];
        if internal {
            rules.push(("filter", self.forward.clone(), args(&["-i", bridge, "-j", "DROP"])));
        } else {
            rules.push(("filter", self.forward.clone(), args(&["-i", bridge, "-j", "ACCEPT"])));
            rules.push((
                "nat",
                self.postrouting.clone(),
                args(&["-s", &subnet.to_string(), "!", "-o", bridge, "-j", "MASQUERADE"]),
            ));
        }
        rules
    }

    /// The rules of a network, and 127.0.0.0/8 routed on its bridge (for published ports on
    /// 127.0.0.1, and on no other interface).
    pub fn add_network(&self, bridge: &str, subnet: &Subnet, internal: bool) -> NetResult<()> {
        for (table, chain, rule) in self.network_rules(bridge, subnet, internal) {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            ensure(table, &chain, &rule, false)?;
        }
        route_localnet(bridge, true)
    }

    pub fn remove_network(&self, bridge: &str, subnet: &Subnet, internal: bool) {
        // Before the drop rule goes (the bridge may be gone already).
        let _ = route_localnet(bridge, false);
        for (table, chain, rule) in self.network_rules(bridge, subnet, internal) {
            let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
            remove(table, &chain, &rule);
        }
    }

    pub fn add_port(&self, rule: &PortRule) -> NetResult<()> {
        let args = port_rule(rule);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ensure("nat", &self.dnat, &args, false)
    }

    pub fn remove_port(&self, rule: &PortRule) {
        let args = port_rule(rule);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        remove("nat", &self.dnat, &args);
    }
}

/// A published port: traffic to the host's `host_port` (on `host_ip`, or any of its
/// addresses) goes to the instance's `address:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub address: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
}

fn port_rule(rule: &PortRule) -> Vec<String> {
    let mut args = vec!["-p".to_string(), rule.protocol.clone()];
    if let Some(ip) = rule.host_ip {
        args.extend(["-d".to_string(), ip.to_string()]);
    }
    args.extend([
        "--dport".to_string(),
        rule.host_port.to_string(),
        "-j".to_string(),
        "DNAT".to_string(),
        "--to-destination".to_string(),
        format!("{}:{}", rule.address, rule.port),
    ]);
    args
}

/// Lines of berth's chains that mention `text` (leak checks, diagnostics).
pub fn rules_mentioning(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["nat", "filter"] {
        if let Ok(output) = berth_process::command("iptables")
            .args(["-w", "-t", table, "-S"])
            .output()
        {
            found.extend(
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter(|l| l.contains("BERTH") && l.contains(text))
                    .map(str::to_string),
            );
        }
    }
    found
}
