//! Published ports reached as a client on the host reaches them: one HTTP/1.0 GET over TCP.
//! A port's first answer may take a moment (the server in the instance starts after `run -d`
//! returns); after that one, every request must be answered at once. When one is not, the
//! failure shows what the path looked like: the daemon's published-port rules, the nat
//! OUTPUT chain, whether the bridge routes loopback, the host's addresses and routes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

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
