//! iptables rules in berth's own chains (BERTH-POSTROUTING and BERTH-DNAT in nat,
//! BERTH-FORWARD in filter), jumped to once from the built-in chains. Rules of others are
//! never touched; berth's own are added idempotently and deleted exactly.

use std::net::Ipv4Addr;

use crate::{failed, NetResult, Subnet};

/// Every berth bridge is called `bb-…`, so one wildcard matches them all.
pub const BRIDGE_PREFIX: &str = "bb-";

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

/// Appends `rule` to `chain` of `table` unless it is there.
fn ensure(table: &str, chain: &str, rule: &[&str]) -> NetResult<()> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend_from_slice(rule);
    if iptables(&check).is_ok() {
        return Ok(());
    }
    let mut add = vec!["-t", table, "-A", chain];
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

/// berth's chains and the jumps to them; forwarding on. Safe to call again.
pub fn ensure_base() -> NetResult<()> {
    sysctl("net.ipv4.ip_forward", "1")?;
    // Published ports answer on 127.0.0.1 too: DNAT of loopback traffic needs this.
    sysctl("net.ipv4.conf.all.route_localnet", "1")?;
    for (table, chain) in [
        ("nat", "BERTH-POSTROUTING"),
        ("nat", "BERTH-DNAT"),
        ("filter", "BERTH-FORWARD"),
    ] {
        let _ = iptables(&["-t", table, "-N", chain]);
    }
    ensure("nat", "POSTROUTING", &["-j", "BERTH-POSTROUTING"])?;
    ensure(
        "nat",
        "PREROUTING",
        &["-m", "addrtype", "--dst-type", "LOCAL", "-j", "BERTH-DNAT"],
    )?;
    ensure(
        "nat",
        "OUTPUT",
        &["-m", "addrtype", "--dst-type", "LOCAL", "-j", "BERTH-DNAT"],
    )?;
    ensure("filter", "FORWARD", &["-j", "BERTH-FORWARD"])?;
    Ok(())
}

/// The rules of one network, as (table, chain, rule).
fn network_rules(bridge: &str, subnet: &Subnet, internal: bool) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let subnet = subnet.to_string();
    let others = format!("{BRIDGE_PREFIX}+");
    let mut rules = vec![
        (
            "filter",
            "BERTH-FORWARD",
            vec![
                "-i".into(),
                bridge.into(),
                "-o".into(),
                bridge.into(),
                "-j".into(),
                "ACCEPT".into(),
            ],
        ),
        (
            "filter",
            "BERTH-FORWARD",
            vec![
                "-o".into(),
                bridge.into(),
                "-m".into(),
                "conntrack".into(),
                "--ctstate".into(),
                "RELATED,ESTABLISHED,DNAT".into(),
                "-j".into(),
                "ACCEPT".into(),
            ],
        ),
        // Networks are isolated from each other.
        (
            "filter",
            "BERTH-FORWARD",
            vec![
                "-i".into(),
                bridge.into(),
                "-o".into(),
                others,
                "-j".into(),
                "DROP".into(),
            ],
        ),
        (
            "nat",
            "BERTH-POSTROUTING",
            vec![
                "-s".into(),
                "127.0.0.0/8".into(),
                "-o".into(),
                bridge.into(),
                "-j".into(),
                "MASQUERADE".into(),
            ],
        ),
    ];
    if internal {
        rules.push((
            "filter",
            "BERTH-FORWARD",
            vec!["-i".into(), bridge.into(), "-j".into(), "DROP".into()],
        ));
    } else {
        rules.push((
            "filter",
            "BERTH-FORWARD",
            vec!["-i".into(), bridge.into(), "-j".into(), "ACCEPT".into()],
        ));
        rules.push((
            "nat",
            "BERTH-POSTROUTING",
            vec![
                "-s".into(),
                subnet,
                "!".into(),
                "-o".into(),
                bridge.into(),
                "-j".into(),
                "MASQUERADE".into(),
            ],
        ));
    }
    rules
}

pub fn add_network(bridge: &str, subnet: &Subnet, internal: bool) -> NetResult<()> {
    for (table, chain, rule) in network_rules(bridge, subnet, internal) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        ensure(table, chain, &rule)?;
    }
    Ok(())
}

pub fn remove_network(bridge: &str, subnet: &Subnet, internal: bool) {
    for (table, chain, rule) in network_rules(bridge, subnet, internal) {
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        remove(table, chain, &rule);
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

pub fn add_port(rule: &PortRule) -> NetResult<()> {
    let args = port_rule(rule);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ensure("nat", "BERTH-DNAT", &args)
}

pub fn remove_port(rule: &PortRule) {
    let args = port_rule(rule);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    remove("nat", "BERTH-DNAT", &args);
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
