//! Networking for both kinds: a Linux bridge per network with the gateway address, a veth
//! pair per container (its end moved into the container's network namespace) and a tap
//! device per VM, all over netlink (`rtnetlink`); NAT, port publishing and isolation as
//! iptables rules in berth's own chains; bandwidth with tc; names through a small DNS server.

pub mod dns;
pub mod firewall;
pub mod links;
pub mod netns;
pub mod overlay;
pub mod shaping;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetError {
    #[error("{context}: {message}")]
    Failed { context: String, message: String },
}

pub(crate) fn failed(context: impl Into<String>, message: impl ToString) -> NetError {
    NetError::Failed {
        context: context.into(),
        message: message.to_string(),
    }
}

pub type NetResult<T> = Result<T, NetError>;

/// An IPv4 subnet such as 10.89.0.0/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: std::net::Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("'{text}' is not a subnet like 10.90.0.0/24"))?;
        let address: std::net::Ipv4Addr = address.parse().map_err(|_| format!("'{text}': bad address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("'{text}': bad prefix length"))?;
        if !(8..=29).contains(&prefix) {
            return Err(format!("'{text}': the prefix length must be between 8 and 29"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Subnet {
            network: std::net::Ipv4Addr::from(u32::from(address) & mask),
            prefix,
        })
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    pub fn contains(&self, address: std::net::Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let mask = self.mask().min(other.mask());
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }

    /// The n-th host address (1 = the gateway).
    pub fn host(&self, n: u32) -> Option<std::net::Ipv4Addr> {
        let size = 1u32 << (32 - self.prefix);
        (n >= 1 && n < size - 1).then(|| std::net::Ipv4Addr::from(u32::from(self.network) + n))
    }

    pub fn gateway(&self) -> std::net::Ipv4Addr {
        self.host(1).unwrap_or(self.network)
    }

    pub fn hosts(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let subnet = Subnet::parse("10.89.0.7/24").unwrap();
        assert_eq!(subnet.to_string(), "10.89.0.0/24");
        assert_eq!(subnet.gateway().to_string(), "10.89.0.1");
        assert_eq!(subnet.host(2).unwrap().to_string(), "10.89.0.2");
        assert!(subnet.host(255).is_none());
        assert!(subnet.overlaps(&Subnet::parse("10.89.0.0/16").unwrap()));
        assert!(!subnet.overlaps(&Subnet::parse("10.90.0.0/24").unwrap()));
        assert!(Subnet::parse("10.0.0.0/31").is_err());
        assert!(Subnet::parse("nope").is_err());
    }
}
