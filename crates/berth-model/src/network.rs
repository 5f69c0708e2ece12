//! Networks and an instance's place on one: addresses, published ports.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The network every instance joins unless told otherwise.
pub const DEFAULT_NETWORK: &str = "default";

/// A label of more names the instance answers to on its network's DNS, comma-separated
/// (Compose's service names, through the Docker API's network aliases).
pub const ALIASES_LABEL: &str = "berth.network.aliases";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Network {
    pub name: String,
    /// The Linux bridge (`bb-…`).
    pub bridge: String,
    /// e.g. 10.89.0.0/24
    pub subnet: String,
    pub gateway: String,
    /// No route to the outside (no NAT).
    #[serde(default)]
    pub internal: bool,
    pub created_at: DateTime<Utc>,
    /// In a cluster's overlay: the part of `subnet` this node gives addresses from (a /24 of
    /// its own, so no address is given twice across the nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// In a cluster: the VXLAN the bridge is joined to, spanning the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<Overlay>,
}

/// A cluster's overlay: every node's default bridge joined by one VXLAN segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Overlay {
    /// The VXLAN network identifier, the same on every node.
    pub vni: u32,
    /// The VXLAN device on this node (a port of the bridge).
    pub device: String,
    /// This node's address for VXLAN packets (`--advertise`).
    pub local: String,
}

/// A published port: `[IP:]HOSTPORT:PORT[/tcp|udp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortMapping {
    #[serde(default)]
    pub host_ip: Option<String>,
    pub host_port: u16,
    pub port: u16,
    pub protocol: String,
}

impl PortMapping {
    pub fn parse(text: &str) -> Result<PortMapping, String> {
        let (ports, protocol) = match text.rsplit_once('/') {
            Some((ports, protocol)) => (ports, protocol.to_ascii_lowercase()),
            None => (text, "tcp".to_string()),
        };
        if protocol != "tcp" && protocol != "udp" {
            return Err(format!("'{text}': protocol '{protocol}' is neither tcp nor udp"));
        }
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host_port, port) = match parts.as_slice() {
            [host_port, port] => (None, *host_port, *port),
            [ip, host_port, port] => (Some(*ip), *host_port, *port),
            _ => return Err(format!("'{text}' is not [IP:]HOSTPORT:PORT[/tcp|udp]")),
        };
        let number = |p: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("'{text}': '{p}' is not a port (1-65535)")),
                Ok(n) => Ok(n),
            }
        };
        if let Some(ip) = host_ip {
            ip.parse::<std::net::Ipv4Addr>()
                .map_err(|_| format!("'{text}': '{ip}' is not an IPv4 address"))?;
        }
        Ok(PortMapping {
            host_ip: host_ip.map(str::to_string),
            host_port: number(host_port)?,
            port: number(port)?,
            protocol,
        })
    }

    /// Two mappings that would take the same host port.
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.host_port == other.host_port
            && self.protocol == other.protocol
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host_ip {
            Some(ip) => write!(f, "{ip}:{}->{}/{}", self.host_port, self.port, self.protocol),
            None => write!(f, "{}->{}/{}", self.host_port, self.port, self.protocol),
        }
    }
}

/// Where a running instance is on its network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceAddress {
    pub network: String,
    pub address: String,
    pub prefix: u8,
    pub gateway: String,
    pub mac: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports() {
        let p = PortMapping::parse("8080:80").unwrap();
        assert_eq!(
            (p.host_ip.as_deref(), p.host_port, p.port, p.protocol.as_str()),
            (None, 8080, 80, "tcp")
        );
        let p = PortMapping::parse("127.0.0.1:53:53/udp").unwrap();
        assert_eq!(p.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(p.protocol, "udp");
        assert!(PortMapping::parse("80").is_err());
        assert!(PortMapping::parse("0:80").is_err());
        assert!(PortMapping::parse("8080:80/sctp").is_err());
        assert!(PortMapping::parse("x.y:1:2").is_err());
        assert!(p.clashes_with(&PortMapping::parse("53:54/udp").unwrap()));
        assert!(!p.clashes_with(&PortMapping::parse("53:54/tcp").unwrap()));
    }
}
