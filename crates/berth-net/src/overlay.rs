//! A cluster's overlay: each node's default bridge has a VXLAN port, and the VXLAN floods
//! what it does not know (ARP, first packets) to every other node, as a head-end
//! replication list of all-zero forwarding entries; the bridges learn the rest. The device
//! and its list are made with iproute2's `ip` and `bridge` (rtnetlink 0.24 has no builder
//! for a VXLAN's flood list), like the IFB device of `shaping`.

use std::net::Ipv4Addr;

use crate::{failed, NetResult};

/// The UDP port of VXLAN (IANA's).
pub const VXLAN_PORT: u16 = 4789;

fn run(program: &str, args: &[&str]) -> NetResult<String> {
    let output = berth_process::command(program)
        .args(args)
        .output()
        .map_err(|e| failed(format!("running {program}"), e))?;
    if !output.status.success() {
        return Err(failed(
            format!("{program} {}", args.join(" ")),
            String::from_utf8_lossy(&output.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Makes VXLAN device `name` (network `vni`, sending from `local`) a port of `bridge`.
pub fn ensure_vxlan(name: &str, vni: u32, local: Ipv4Addr, bridge: &str) -> NetResult<()> {
    let exists = run("ip", &["link", "show", "dev", name]).is_ok();
    if !exists {
        run(
            "ip",
            &[
                "link",
                "add",
                name,
                "type",
                "vxlan",
                "id",
                &vni.to_string(),
                "local",
                &local.to_string(),
                "dstport",
                &VXLAN_PORT.to_string(),
                "nolearning",
            ],
        )?;
    }
    run("ip", &["link", "set", "dev", name, "master", bridge, "up"]).map(|_| ())
}

/// The nodes VXLAN `device` floods to now.
pub fn flood_peers(device: &str) -> NetResult<Vec<Ipv4Addr>> {
    let listed = run("bridge", &["fdb", "show", "dev", device])?;
    Ok(listed
        .lines()
        .filter(|line| line.starts_with("00:00:00:00:00:00"))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "dst")?;
            words.next()?.parse().ok()
        })
        .collect())
}

/// Makes `device` flood to exactly `peers`.
pub fn set_flood_peers(device: &str, peers: &[Ipv4Addr]) -> NetResult<()> {
    let current = flood_peers(device)?;
    for peer in peers.iter().filter(|p| !current.contains(p)) {
        run(
            "bridge",
            &[
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                device,
                "dst",
                &peer.to_string(),
            ],
        )?;
    }
    for gone in current.iter().filter(|c| !peers.contains(c)) {
        run(
            "bridge",
            &[
                "fdb",
                "del",
                "00:00:00:00:00:00",
                "dev",
                device,
                "dst",
                &gone.to_string(),
            ],
        )?;
    }
    Ok(())
}
