//! Networks of this node: a bridge each (the default one made at start-up), addresses for
//! instances, the devices that join them (veth for containers, tap for VMs), published
//! ports, bandwidth limits and a DNS responder on each gateway.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use berth_model::instance::short_id;
use berth_model::network::{InstanceAddress, Network, PortMapping, DEFAULT_NETWORK};
use berth_model::{Instance, InstanceKind};
use berth_net::firewall::{self, PortRule, BRIDGE_PREFIX};
use berth_net::links::{self, InterfaceAddress};
use berth_net::{dns, netns, shaping, Subnet};
use berth_store::StateStore;
use chrono::Utc;
use sha2::Digest;

use crate::error::{EngineError, EngineResult};

/// Names of instances on each network, for DNS.
type NameTable = Arc<RwLock<HashMap<String, HashMap<String, Ipv4Addr>>>>;

pub struct Networks {
    store: Arc<dyn StateStore>,
    netns_dir: PathBuf,
    default_subnet: Subnet,
    default_bridge: String,
    names: NameTable,
    dns_tasks: std::sync::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

fn net_error(e: berth_net::NetError) -> EngineError {
    EngineError::internal(e.to_string())
}

impl Networks {
    /// The bridge of a network: the configured one for the default network, else `bb-` and
    /// a short hash of the node's state directory and the name (interface names are short,
    /// and two daemons on one host must not share bridges).
    fn bridge_name(&self, network: &str) -> String {
        if network == DEFAULT_NETWORK {
            return self.default_bridge.clone();
        }
        let hash = sha2::Sha256::digest(format!("{}:{network}", self.netns_dir.display()).as_bytes());
        format!("{BRIDGE_PREFIX}{}", &hex::encode(hash)[..10])
    }
}

/// The host-side device of an instance: veth for containers, tap for VMs.
pub fn device_name(instance: &Instance) -> String {
    let prefix = if instance.kind == InstanceKind::Vm { "bt" } else { "bv" };
    format!("{prefix}{}", short_id(&instance.id))
}

/// The IFB device that carries a VM's outgoing traffic through its bandwidth limit (on kernels
/// without act_police).
pub fn ifb_name(instance: &Instance) -> String {
    format!("bi{}", short_id(&instance.id))
}

/// Where a container's network namespace is pinned.
pub fn netns_path(netns_dir: &Path, instance: &Instance) -> PathBuf {
    netns_dir.join(short_id(&instance.id))
}

fn mac_for(id: &str) -> String {
    let hash = sha2::Sha256::digest(id.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", hash[0], hash[1], hash[2])
}

fn subnet_of(network: &Network) -> EngineResult<Subnet> {
    Subnet::parse(&network.subnet).map_err(|e| EngineError::internal(format!("network {}: {e}", network.name)))
}

impl Networks {
    /// Sets up berth's firewall chains, the default network and every stored network.
    pub async fn start(
        store: Arc<dyn StateStore>,
        state_dir: &Path,
        default_subnet: &str,
        default_bridge: &str,
    ) -> EngineResult<Networks> {
        let default_subnet = Subnet::parse(default_subnet).map_err(|e| EngineError::invalid("default_subnet", e))?;
        if !default_bridge.starts_with(BRIDGE_PREFIX) || default_bridge.len() > 15 {
            return Err(EngineError::invalid(
                "default_bridge",
                format!(
                    "default_bridge '{default_bridge}' must start with {BRIDGE_PREFIX} and have at most 15 characters"
                ),
            ));
        }
        firewall::ensure_base().map_err(net_error)?;
        let networks = Networks {
            store,
            netns_dir: state_dir.join("netns"),
            default_subnet,
            default_bridge: default_bridge.to_string(),
            names: Arc::new(RwLock::new(HashMap::new())),
            dns_tasks: std::sync::Mutex::new(HashMap::new()),
        };
        let stored = networks.store.list_networks().await?;
        if !stored.iter().any(|n| n.name == DEFAULT_NETWORK) {
            let default = Network {
                name: DEFAULT_NETWORK.into(),
                bridge: networks.bridge_name(DEFAULT_NETWORK),
                subnet: default_subnet.to_string(),
                gateway: default_subnet.gateway().to_string(),
                internal: false,
                created_at: Utc::now(),
            };
            networks.store.put_network(&default).await?;
        }
        for network in networks.store.list_networks().await? {
            networks.bring_up(&network).await?;
        }
        Ok(networks)
    }

    pub fn netns_dir(&self) -> &Path {
        &self.netns_dir
    }

    async fn bring_up(&self, network: &Network) -> EngineResult<()> {
        let subnet = subnet_of(network)?;
        links::ensure_bridge(&network.bridge, subnet.gateway(), subnet.prefix)
            .await
            .map_err(net_error)?;
        firewall::add_network(&network.bridge, &subnet, network.internal).map_err(net_error)?;
        let names = self.names.clone();
        let name = network.name.clone();
        let lookup: dns::Lookup = Arc::new(move |query: &str| {
            names
                .read()
                .ok()
                .and_then(|table| table.get(&name).and_then(|n| n.get(query).copied()))
        });
        let gateway = subnet.gateway();
        let network_name = network.name.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = dns::serve(gateway, lookup).await {
                tracing::warn!(network = %network_name, error = %e, "DNS responder stopped");
            }
        });
        if let Some(old) = self
            .dns_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(network.name.clone(), task)
        {
            old.abort();
        }
        Ok(())
    }

    pub async fn list(&self) -> EngineResult<Vec<Network>> {
        Ok(self.store.list_networks().await?)
    }

    pub async fn get(&self, name: &str) -> EngineResult<Network> {
        self.list()
            .await?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| EngineError::not_found(format!("no such network: {name}; `berth network ls` lists them")))
    }

    pub async fn create(&self, name: &str, subnet: Option<&str>, internal: bool) -> EngineResult<Network> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid || matches!(name, "none" | "host") {
            return Err(EngineError::invalid(
                "name",
                format!("invalid network name '{name}': letters, digits, '_', '.', '-'; not none or host"),
            ));
        }
        let existing = self.list().await?;
        if existing.iter().any(|n| n.name == name) {
            return Err(EngineError::conflict(format!("network {name} already exists")));
        }
        let taken: Vec<Subnet> = existing.iter().filter_map(|n| Subnet::parse(&n.subnet).ok()).collect();
        // Subnets on the host's other interfaces (its uplink, VPNs, other tools' bridges): a
        // network over one of them would make its addresses unreachable.
        let own_bridges: Vec<&str> = existing.iter().map(|n| n.bridge.as_str()).collect();
        let host_subnets: Vec<(String, Subnet)> = links::host_ipv4_addresses()
            .await
            .map_err(net_error)?
            .into_iter()
            .filter(|(device, address, prefix)| {
                *prefix > 0 && !address.is_loopback() && !own_bridges.contains(&device.as_str())
            })
            .map(|(device, address, prefix)| {
                let prefix = prefix.min(32);
                let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
                let network = Ipv4Addr::from(u32::from(address) & mask);
                (device, Subnet { network, prefix })
            })
            .collect();
        let subnet = match subnet {
            Some(text) => {
                let subnet =
                    Subnet::parse(text).map_err(|e| EngineError::invalid("subnet", format!("--subnet {e}")))?;
                if let Some(other) = existing
                    .iter()
                    .find(|n| Subnet::parse(&n.subnet).is_ok_and(|s| s.overlaps(&subnet)))
                {
                    return Err(EngineError::invalid(
                        "subnet",
                        format!(
                            "--subnet {subnet} overlaps network {} ({}); choose another",
                            other.name, other.subnet
                        ),
                    ));
                }
                if let Some((device, used)) = host_subnets.iter().find(|(_, s)| s.overlaps(&subnet)) {
                    return Err(EngineError::invalid(
                        "subnet",
                        format!(
                            "--subnet {subnet} overlaps {}/{} on the host's interface {device}; choose another",
                            used.network, used.prefix
                        ),
                    ));
                }
                subnet
            }
            // The next free /24 after the default network's.
            None => (1..=254u32)
                .filter_map(|step| {
                    let base = u32::from(self.default_subnet.network).wrapping_add(step << 8);
                    Subnet::parse(&format!("{}/24", Ipv4Addr::from(base))).ok()
                })
                .find(|candidate| {
                    !taken.iter().any(|t| t.overlaps(candidate))
                        && !host_subnets.iter().any(|(_, h)| h.overlaps(candidate))
                })
                .ok_or_else(|| EngineError::conflict("no free /24 left; give --subnet"))?,
        };
        let network = Network {
            name: name.to_string(),
            bridge: self.bridge_name(name),
            subnet: subnet.to_string(),
            gateway: subnet.gateway().to_string(),
            internal,
            created_at: Utc::now(),
        };
        self.store.put_network(&network).await?;
        if let Err(e) = self.bring_up(&network).await {
            let _ = self.teardown(&network).await;
            let _ = self.store.delete_network(name).await;
            return Err(e);
        }
        Ok(network)
    }

    async fn teardown(&self, network: &Network) -> EngineResult<()> {
        if let Some(task) = self
            .dns_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&network.name)
        {
            task.abort();
        }
        if let Ok(subnet) = subnet_of(network) {
            firewall::remove_network(&network.bridge, &subnet, network.internal);
        }
        links::delete(&network.bridge).await.map_err(net_error)
    }

    /// Removes a network no instance is on.
    pub async fn remove(&self, name: &str, users: &[String]) -> EngineResult<()> {
        if name == DEFAULT_NETWORK {
            return Err(EngineError::invalid("name", "the default network cannot be removed"));
        }
        let network = self.get(name).await?;
        if let Some(user) = users.first() {
            return Err(EngineError::conflict(format!(
                "network {name} has instance {user} on it; remove the instance first"
            )));
        }
        self.teardown(&network).await?;
        self.store.delete_network(name).await?;
        Ok(())
    }

    /// An address on `network` that no instance record holds.
    pub async fn allocate(&self, network: &str, instances: &[Instance], id: &str) -> EngineResult<InstanceAddress> {
        let network = self.get(network).await?;
        let subnet = subnet_of(&network)?;
        let used: Vec<String> = instances
            .iter()
            .filter_map(|i| i.address.as_ref())
            .filter(|a| a.network == network.name)
            .map(|a| a.address.clone())
            .collect();
        let address = (2..=subnet.hosts())
            .filter_map(|n| subnet.host(n))
            .find(|a| !used.contains(&a.to_string()))
            .ok_or_else(|| EngineError::conflict(format!("network {} has no free address left", network.name)))?;
        Ok(InstanceAddress {
            network: network.name.clone(),
            address: address.to_string(),
            prefix: subnet.prefix,
            gateway: network.gateway.clone(),
            mac: mac_for(id),
        })
    }

    fn port_rules(instance: &Instance) -> Vec<PortRule> {
        let Some(address) = instance.address.as_ref().and_then(|a| a.address.parse().ok()) else {
            return Vec::new();
        };
        instance
            .spec
            .ports
            .iter()
            .map(|p: &PortMapping| PortRule {
                host_ip: p.host_ip.as_deref().and_then(|ip| ip.parse().ok()),
                host_port: p.host_port,
                address,
                port: p.port,
                protocol: p.protocol.clone(),
            })
            .collect()
    }

    fn register_name(&self, instance: &Instance) {
        if let Some(address) = instance.address.as_ref() {
            if let (Ok(ip), Ok(mut table)) = (address.address.parse(), self.names.write()) {
                table
                    .entry(address.network.clone())
                    .or_default()
                    .insert(instance.name.clone(), ip);
            }
        }
    }

    /// Joins a starting instance to its network: its device, ports, bandwidth and name.
    pub async fn attach(&self, instance: &Instance) -> EngineResult<()> {
        let Some(address) = instance.address.as_ref() else {
            return Ok(());
        };
        let network = self.get(&address.network).await?;
        let device = device_name(instance);
        let result = async {
            // Leftovers of a crash would block the names.
            let _ = links::delete(&device).await;
            let _ = links::delete(&ifb_name(instance)).await;
            match instance.kind {
                InstanceKind::Container => {
                    let path = netns_path(&self.netns_dir, instance);
                    netns::remove(&path);
                    netns::create(&path).map_err(net_error)?;
                    let inside = InterfaceAddress {
                        address: address
                            .address
                            .parse()
                            .map_err(|_| EngineError::internal("bad address"))?,
                        prefix: address.prefix,
                        gateway: address
                            .gateway
                            .parse()
                            .map_err(|_| EngineError::internal("bad gateway"))?,
                    };
                    links::attach_veth(&device, &network.bridge, &path, &inside)
                        .await
                        .map_err(net_error)?;
                }
                InstanceKind::Vm => links::create_tap(&device, &network.bridge).await.map_err(net_error)?,
            }
            if let Some(bits) = instance.limits.network_bits_per_second {
                // Towards the instance: the host side's egress.
                shaping::shape_egress(&device, bits).map_err(net_error)?;
                // From it: police the host side's ingress, or shape eth0 inside a container.
                if shaping::police_ingress(&device, bits).is_err() {
                    match instance.kind {
                        InstanceKind::Container => {
                            let path = netns_path(&self.netns_dir, instance);
                            netns::run_in(&path, move || shaping::shape_egress("eth0", bits))
                                .map_err(net_error)?
                                .map_err(net_error)?;
                        }
                        InstanceKind::Vm => shaping::shape_ingress_via_ifb(&device, &ifb_name(instance), bits)
                            .map_err(|e| {
                                EngineError::invalid(
                                    "bandwidth",
                                    format!("--bandwidth: limiting the VM's outgoing traffic failed (without act_police it needs the ifb device and act_mirred): {e}"),
                                )
                            })?,
                    }
                }
            }
            for rule in Self::port_rules(instance) {
                firewall::add_port(&rule).map_err(net_error)?;
            }
            Ok::<_, EngineError>(())
        }
        .await;
        if result.is_err() {
            self.detach(instance).await;
        } else {
            self.register_name(instance);
        }
        result
    }

    /// Removes the pinned network namespaces of all but `keep` (at daemon start: what a crash
    /// between steps left behind).
    pub fn sweep_namespaces(&self, keep: &[&Instance]) {
        let Ok(entries) = std::fs::read_dir(&self.netns_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.iter().any(|i| short_id(&i.id) == name) {
                tracing::info!(netns = %name, "removing a network namespace no running instance owns");
                netns::remove(&entry.path());
            }
        }
    }

    /// Undoes `attach`; quiet about what is already gone.
    pub async fn detach(&self, instance: &Instance) {
        let Some(address) = instance.address.as_ref() else {
            return;
        };
        for rule in Self::port_rules(instance) {
            firewall::remove_port(&rule);
        }
        if let Err(e) = links::delete(&device_name(instance)).await {
            tracing::warn!(id = %instance.id, error = %e, "removing the network device");
        }
        if instance.kind == InstanceKind::Vm && instance.limits.network_bits_per_second.is_some() {
            if let Err(e) = links::delete(&ifb_name(instance)).await {
                tracing::warn!(id = %instance.id, error = %e, "removing the IFB device");
            }
        }
        if instance.kind == InstanceKind::Container {
            netns::remove(&netns_path(&self.netns_dir, instance));
        }
        if let Ok(mut table) = self.names.write() {
            if let Some(names) = table.get_mut(&address.network) {
                names.remove(&instance.name);
            }
        }
    }

    /// After a daemon restart: names and port rules of instances that kept running.
    pub fn restore(&self, instance: &Instance) {
        self.register_name(instance);
        for rule in Self::port_rules(instance) {
            if let Err(e) = firewall::add_port(&rule) {
                tracing::warn!(id = %instance.id, error = %e, "restoring a published port");
            }
        }
    }
}
