//! Two daemons on one host (`--state-dir`, `--socket`), as the cluster's nodes on one machine
//! will be: with the same config and no per-daemon network settings, each owns its bridge,
//! subnet, iptables chains, cgroup parent and DNS; a clash the operator configured is refused
//! at start in one line naming the config key.

use std::process::Command;

use crate::common::{busybox_tar, cgroup_dir, Daemon};

const SHARED_CONFIG: &str = "[dns]\nupstreams = []\n[defaults]\nmemory = \"256m\"\n";

fn default_network(d: &Daemon) -> (String, berth_net::Subnet) {
    let networks: serde_json::Value = serde_json::from_str(&d.ok(&["network", "ls", "--json"])).unwrap();
    let default = networks
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "default")
        .unwrap()
        .clone();
    (
        default["bridge"].as_str().unwrap().to_string(),
        berth_net::Subnet::parse(default["subnet"].as_str().unwrap()).unwrap(),
    )
}

fn chain_exists(table: &str, chain: &str) -> bool {
    Command::new("iptables")
        .args(["-w", "-t", table, "-S", chain])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn two_daemons_own_their_bridges_subnets_chains_cgroups_and_dns() {
    let a = Daemon::start_with_exact_config(SHARED_CONFIG);
    let b = Daemon::start_with_exact_config(SHARED_CONFIG);
    for d in [&a, &b] {
        d.ok(&["image", "import", "--tag", "busybox", busybox_tar().to_str().unwrap()]);
        d.ok(&["run", "-d", "--name", "web", "busybox", "sleep", "600"]);
    }
    let (identity_a, identity_b) = (a.identity(), b.identity());
    assert_ne!(identity_a.id, identity_b.id);
    assert!(identity_a.tag.is_some() && identity_a.tag != identity_b.tag);

    let (bridge_a, subnet_a) = default_network(&a);
    let (bridge_b, subnet_b) = default_network(&b);
    assert_ne!(bridge_a, bridge_b);
    assert!(!subnet_a.overlaps(&subnet_b), "{subnet_a} and {subnet_b}");
    assert_eq!(bridge_a, identity_a.default_bridge());
    // Each bridge names its owner, for the other daemons to see.
    let note = std::fs::read_to_string(format!("/sys/class/net/{bridge_a}/ifalias")).unwrap();
    assert!(
        note.contains(&identity_a.id) && note.contains(a.state.to_str().unwrap()),
        "{note}"
    );

    let (chain_a, chain_b) = (a.dnat_chain(), b.dnat_chain());
    assert_ne!(chain_a, chain_b);
    assert!(chain_exists("nat", &chain_a) && chain_exists("nat", &chain_b));

    for (d, identity) in [(&a, &identity_a), (&b, &identity_b)] {
        let web = d.inspect("web");
        let id = web["id"].as_str().unwrap();
        let cgroup = cgroup_dir(id, "pids")
            .or_else(|| cgroup_dir(id, ""))
            .expect("the instance's cgroup");
        assert_eq!(
            cgroup.parent().unwrap().file_name().unwrap().to_string_lossy(),
            identity.cgroup_parent(),
            "{}",
            cgroup.display()
        );
        // Its own name, from its own responder.
        let address = web["address"]["address"].as_str().unwrap();
        let looked_up = d.ok(&["run", "--rm", "busybox", "nslookup", "web"]);
        assert!(looked_up.contains(address), "{looked_up}");
        assert!(!d.log().contains("Address already in use"), "{}", d.log());
    }
    assert_ne!(identity_a.cgroup_parent(), identity_b.cgroup_parent());
}

#[test]
fn a_configured_clash_is_refused_at_start_in_one_line() {
    let a = Daemon::with_busybox();
    a.ok(&["run", "-d", "--name", "web", "busybox", "sleep", "600"]);
    let (bridge, subnet) = default_network(&a);

    let line = Daemon::refused_with_exact_config(&format!(
        "default_bridge = \"{bridge}\"\ndefault_subnet = \"10.89.250.0/24\"\n{SHARED_CONFIG}"
    ));
    assert!(line.contains(&format!("bridge {bridge}")), "{line}");
    assert!(
        line.contains(a.state.to_str().unwrap()) && line.contains("running"),
        "{line}"
    );
    assert!(line.contains("set default_bridge in"), "{line}");

    let line = Daemon::refused_with_exact_config(&format!("default_subnet = \"{subnet}\"\n{SHARED_CONFIG}"));
    assert!(
        line.contains(&format!("overlaps {subnet} on the host's interface {bridge}")),
        "{line}"
    );
    assert!(line.contains("set default_subnet in"), "{line}");

    // The first daemon is untouched and still serves its names.
    assert!(std::fs::read_to_string(format!("/sys/class/net/{bridge}/ifalias"))
        .unwrap()
        .contains(a.state.to_str().unwrap()));
    let address = a.inspect("web")["address"]["address"].as_str().unwrap().to_string();
    let looked_up = a.ok(&["run", "--rm", "busybox", "nslookup", "web"]);
    assert!(looked_up.contains(&address), "{looked_up}");
}

#[test]
fn the_default_network_follows_a_changed_config_while_no_instance_is_on_it() {
    let mut d = Daemon::with_busybox();
    let (bridge, old) = default_network(&d);
    let moved = format!("{}.200.0/24", d.subnet_prefix);
    let config = format!("default_subnet = \"{moved}\"\ndefault_bridge = \"{bridge}\"\n");

    // An instance holds an address on it: refused, in one line, and nothing changed.
    d.ok(&["create", "--name", "held", "busybox", "true"]);
    d.kill9();
    d.rewrite_config(&config);
    let line = d.restart_refused();
    assert!(line.contains("default_subnet") && line.contains("held"), "{line}");
    d.rewrite_config(&format!("default_subnet = \"{old}\"\ndefault_bridge = \"{bridge}\"\n"));
    d.restart_only();
    assert_eq!(default_network(&d).1, old);

    // Without it, the network moves.
    d.ok(&["rm", "held"]);
    d.kill9();
    d.rewrite_config(&config);
    d.restart_only();
    assert_eq!(default_network(&d).1.to_string(), moved);
    let address = d.ok(&["run", "--rm", "busybox", "sh", "-c", "ip -4 -o addr show eth0"]);
    assert!(address.contains(&format!("{}.200.", d.subnet_prefix)), "{address}");
}
