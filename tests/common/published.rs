//! Published ports reached as a client on the host reaches them: one HTTP/1.0 GET over TCP.
//! A port's first answer may take a moment (the server in the instance starts after `run -d`
//! returns); after that one, every request must be answered at once. When one is not, the
//! failure shows what the path looked like: the daemon's published-port rules, the nat
//! OUTPUT chain, whether the bridge routes loopback, the host's addresses and routes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Where `free_port` looks: below the ephemeral ports `common::free_port` hands out, above the
/// fixed ports some tests publish (Compose's 18090 in `stacks`).
const FIRST_PORT: u16 = 20000;
const PORTS: u16 = 10000;

/// A host port for a test to publish: in no NAT rule already and free to bind. The host's
/// nat OUTPUT chain jumps to every daemon's published-port chain in turn, so a rule for the
/// same port in a chain that comes earlier — another test's daemon, or one a killed test
/// left behind — would take the connections, and a test would see its port answer nothing.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let rules = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .expect("iptables -t nat -S");
    // Each test process starts at a place of its own, so that two runs at once rarely meet.
    let start = (std::process::id() % 100) as u16 * (PORTS / 100);
    for _ in 0..PORTS {
        let port = FIRST_PORT + (start + NEXT.fetch_add(1, Ordering::Relaxed) % PORTS) % PORTS;
        let in_a_rule = rules.contains(&format!("--dport {port} "));
        if !in_a_rule && TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no port in {FIRST_PORT}-{} is free of NAT rules and listeners",
        FIRST_PORT + PORTS - 1
    );
}

/// What to show of a daemon's NAT when a published port does not answer.
#[derive(Default)]
pub struct NatView {
    /// The daemon's published-port chain (`Daemon::dnat_chain`).
    pub dnat_chain: Option<String>,
    /// The daemon's default bridge (`Daemon::bridge`).
    pub bridge: Option<String>,
}

impl NatView {
    pub fn of(daemon: &super::Daemon) -> NatView {
        NatView {
            dnat_chain: Some(daemon.dnat_chain()),
            bridge: daemon.bridge.clone(),
        }
    }

    fn describe(&self) -> String {
        let run = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
                .unwrap_or_else(|e| format!("{program}: {e}\n"))
        };
        let mut out = String::new();
        match &self.dnat_chain {
            Some(chain) => out += &format!("nat {chain}:\n{}", run("iptables", &["-w", "-t", "nat", "-S", chain])),
            None => out += &format!("nat table:\n{}", run("iptables", &["-w", "-t", "nat", "-S"])),
        }
        out += &format!("nat OUTPUT:\n{}", run("iptables", &["-w", "-t", "nat", "-S", "OUTPUT"]));
        if let Some(bridge) = &self.bridge {
            let setting = std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"))
                .unwrap_or_else(|e| format!("{e}\n"));
            out += &format!("route_localnet of {bridge}: {setting}");
        }
        out += &format!("addresses:\n{}", run("ip", &["-o", "-4", "addr"]));
        out += &format!("routes:\n{}", run("ip", &["route"]));
        out
    }
}

/// The body of one GET of `path` from `host:port` (read timeout 5 s).
pub fn get(host: &str, port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    match reply.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_string()),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP reply: {reply:?}"),
        )),
    }
}

/// The first answer of a port just published: retried for up to `within` while nothing (or
/// an empty body) comes back.
pub fn first_answer(host: &str, port: u16, path: &str, within: Duration, nat: &NatView) -> String {
    let deadline = Instant::now() + within;
    loop {
        let attempt = get(host, port, path);
        match attempt {
            Ok(body) if !body.is_empty() => return body,
            _ if Instant::now() > deadline => panic!(
                "nothing answered on {host}:{port}{path} within {within:?}: {attempt:?}\n{}",
                nat.describe()
            ),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The answer of a port that has answered before: one request, no second chance.
pub fn answer_now(host: &str, port: u16, path: &str, nat: &NatView) -> String {
    match get(host, port, path) {
        Ok(body) => body,
        Err(e) => panic!("{host}:{port}{path} did not answer: {e}\n{}", nat.describe()),
    }
}
