//! Host ports held for published ports, as Docker's proxy holds them. A published port is
//! NAT rules only: nothing told a program on the host, or another berth daemon on it, that the
//! port was taken, and whichever rules or listener came first took the connections without a
//! word (a test saw its port answer nothing while another daemon's older rule for the same
//! port sent them elsewhere). A socket bound and listening on the host port makes the clash an
//! error at start, on both sides, and keeps the port from other programs while the instance
//! runs. The socket never accepts: the rules rewrite every connection to the port before it
//! could reach it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;

use berth_net::firewall::PortRule;

/// A socket holding one host port.
#[derive(Debug)]
enum Held {
    // Never read: holding them open is their whole job.
    Tcp(#[allow(dead_code)] TcpListener),
    Udp(#[allow(dead_code)] UdpSocket),
}

/// A host port that cannot be held: another program or daemon holds it, or its address is
/// not one of this host's.
#[derive(Debug, thiserror::Error)]
pub enum PortTaken {
    #[error("host port {address}/{protocol} is in use on this host (another program, or another berth daemon, listens on it); choose another host port for -p")]
    InUse { address: SocketAddr, protocol: String },
    #[error("host address {} of -p {address}/{protocol} is not an address of this host; publish on one of its addresses, or give the port alone", address.ip())]
    NotLocal { address: SocketAddr, protocol: String },
    #[error("holding host port {address}/{protocol}: {source}")]
    Other {
        address: SocketAddr,
        protocol: String,
        #[source]
        source: std::io::Error,
    },
}

impl PortTaken {
    fn new(address: SocketAddr, protocol: &str, source: std::io::Error) -> PortTaken {
        let protocol = protocol.to_string();
        match source.kind() {
            std::io::ErrorKind::AddrInUse => PortTaken::InUse { address, protocol },
            std::io::ErrorKind::AddrNotAvailable => PortTaken::NotLocal { address, protocol },
            _ => PortTaken::Other {
                address,
                protocol,
                source,
            },
        }
    }

    pub fn address(&self) -> SocketAddr {
        match self {
            PortTaken::InUse { address, .. }
            | PortTaken::NotLocal { address, .. }
            | PortTaken::Other { address, .. } => *address,
        }
    }
}

/// One held port: its address and protocol, and the socket holding it.
#[derive(Debug)]
struct HeldPort {
    address: SocketAddr,
    protocol: String,
    // Never read: holding it open is its whole job.
    #[allow(dead_code)]
    socket: Held,
}

/// The held ports, by instance id.
#[derive(Debug, Default)]
pub struct PortHolds {
    held: Mutex<HashMap<String, Vec<HeldPort>>>,
}

impl PortHolds {
    /// Holds every host port of `rules` for the instance `id` (replacing what it held), or
    /// none of them when one is taken. A port the instance holds already (a restart that
    /// attaches again) keeps its socket: letting it go and binding it again would leave a
    /// moment in which another program could take it.
    pub fn hold(&self, id: &str, rules: &[PortRule]) -> Result<(), PortTaken> {
        let mut before = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .unwrap_or_default();
        let mut ports = Vec::with_capacity(rules.len());
        for rule in rules {
            let address = SocketAddr::new(
                IpAddr::V4(rule.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)),
                rule.host_port,
            );
            if let Some(at) = before
                .iter()
                .position(|port| port.address == address && port.protocol == rule.protocol)
            {
                ports.push(before.swap_remove(at));
                continue;
            }
            let socket = match rule.protocol.as_str() {
                "udp" => UdpSocket::bind(address).map(Held::Udp),
                _ => TcpListener::bind(address).map(Held::Tcp),
            };
            match socket {
                Ok(socket) => ports.push(HeldPort {
                    address,
                    protocol: rule.protocol.clone(),
                    socket,
                }),
                Err(source) => return Err(PortTaken::new(address, &rule.protocol, source)),
            }
        }
        if !ports.is_empty() {
            self.held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.to_string(), ports);
        }
        Ok(())
    }

    /// Lets the instance's host ports go; nothing when it held none.
    pub fn release(&self, id: &str) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(port: u16, protocol: &str) -> PortRule {
        PortRule {
            host_ip: Some(Ipv4Addr::LOCALHOST),
            host_port: port,
            address: Ipv4Addr::new(10, 0, 0, 2),
            port: 80,
            protocol: protocol.to_string(),
        }
    }

    #[test]
    fn a_port_a_listener_holds_is_refused_and_nothing_of_the_instance_is_held() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = listener.local_addr().unwrap().port();
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        let free_port = free.local_addr().unwrap().port();
        drop(free);

        let holds = PortHolds::default();
        let error = holds
            .hold("a", &[rule(free_port, "tcp"), rule(taken, "tcp")])
            .unwrap_err();
        assert_eq!(error.address().port(), taken);
        assert!(error.to_string().contains("choose another host port"), "{error}");
        // The free port was not kept by the refused instance.
        assert!(TcpListener::bind(("127.0.0.1", free_port)).is_ok());
    }

    #[test]
    fn held_ports_are_refused_to_others_until_released() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);

        let holds = PortHolds::default();
        holds.hold("a", &[rule(port, "udp")]).unwrap();
        assert!(holds.hold("b", &[rule(port, "udp")]).is_err());
        assert!(UdpSocket::bind(("127.0.0.1", port)).is_err());
        // Holding again for the same instance (a restart) is not a clash with itself.
        holds.hold("a", &[rule(port, "udp")]).unwrap();
        holds.release("a");
        holds.hold("b", &[rule(port, "udp")]).unwrap();
    }

    #[test]
    fn an_address_the_host_does_not_have_is_named_as_such() {
        let mut elsewhere = rule(8080, "tcp");
        elsewhere.host_ip = Some(Ipv4Addr::new(192, 0, 2, 1));
        let error = PortHolds::default().hold("a", &[elsewhere]).unwrap_err();
        assert!(matches!(error, PortTaken::NotLocal { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("192.0.2.1 of -p 192.0.2.1:8080/tcp is not an address of this host"),
            "{error}"
        );
    }
}
