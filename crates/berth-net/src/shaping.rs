//! Bandwidth with tc on the host side of an instance's device: a token bucket for traffic
//! towards the instance, ingress policing for traffic from it (or, on kernels without
//! act_police, a token bucket on an IFB device the traffic is redirected through).

use crate::{failed, NetResult};

fn tc(args: &[&str]) -> NetResult<()> {
    let output = berth_process::command("tc")
        .args(args)
        .output()
        .map_err(|e| failed("running tc", e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(failed(
        format!("tc {}", args.join(" ")),
        String::from_utf8_lossy(&output.stderr).trim(),
    ))
}

fn burst(bits_per_second: u64) -> String {
    // About 10 ms of traffic, at least 32 KiB (room for a train of full-size packets).
    format!("{}b", (bits_per_second / 8 / 100).max(32 * 1024))
}

/// A token bucket on `device`'s outgoing traffic.
pub fn shape_egress(device: &str, bits_per_second: u64) -> NetResult<()> {
    let rate = format!("{bits_per_second}bit");
    tc(&[
        "qdisc",
        "replace",
        "dev",
        device,
        "root",
        "tbf",
        "rate",
        &rate,
        "burst",
        &burst(bits_per_second),
        "latency",
        "50ms",
    ])
}

/// Policing of `device`'s incoming traffic; needs the kernel's act_police, which some
/// kernels lack (the caller then shapes at the other end where it can).
pub fn police_ingress(device: &str, bits_per_second: u64) -> NetResult<()> {
    let rate = format!("{bits_per_second}bit");
    let _ = tc(&["qdisc", "del", "dev", device, "ingress"]);
    tc(&["qdisc", "add", "dev", device, "ingress"])?;
    let result = tc(&[
        "filter",
        "add",
        "dev",
        device,
        "parent",
        "ffff:",
        "protocol",
        "all",
        "u32",
        "match",
        "u32",
        "0",
        "0",
        "police",
        "rate",
        &rate,
        "burst",
        &burst(bits_per_second),
        "drop",
        "flowid",
        ":1",
    ]);
    if result.is_err() {
        let _ = tc(&["qdisc", "del", "dev", device, "ingress"]);
    }
    result
}

/// Shapes `device`'s incoming traffic without act_police: a u32 filter redirects it (act_mirred)
/// to the IFB device `ifb`, whose egress gets the token bucket.
pub fn shape_ingress_via_ifb(device: &str, ifb: &str, bits_per_second: u64) -> NetResult<()> {
    let _ = ip(&["link", "del", ifb]);
    ip(&["link", "add", ifb, "type", "ifb"])?;
    let result = (|| {
        ip(&["link", "set", ifb, "up"])?;
        shape_egress(ifb, bits_per_second)?;
        let _ = tc(&["qdisc", "del", "dev", device, "ingress"]);
        tc(&["qdisc", "add", "dev", device, "ingress"])?;
        tc(&[
            "filter", "add", "dev", device, "parent", "ffff:", "protocol", "all", "u32", "match", "u32", "0", "0",
            "action", "mirred", "egress", "redirect", "dev", ifb,
        ])
    })();
    if result.is_err() {
        let _ = tc(&["qdisc", "del", "dev", device, "ingress"]);
        let _ = ip(&["link", "del", ifb]);
    }
    result
}

fn ip(args: &[&str]) -> NetResult<()> {
    let output = berth_process::command("ip")
        .args(args)
        .output()
        .map_err(|e| failed("running ip", e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(failed(
        format!("ip {}", args.join(" ")),
        String::from_utf8_lossy(&output.stderr).trim(),
    ))
}
