//! Networks of this node: a bridge each (the default one made at start-up), addresses for
//! instances, the devices that join them (veth for containers, tap for VMs), published
//! ports, bandwidth limits and a DNS responder on each gateway.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_model::instance::short_id;
use berth_model::network::{InstanceAddress, Network, PortMapping, DEFAULT_NETWORK};
use berth_model::{Instance, InstanceKind};
use berth_net::dns::{self, OutsideNames, ResponderConfig};
use berth_net::firewall::{self, Firewall, PortRule, BRIDGE_PREFIX};
use berth_net::links::{self, InterfaceAddress};
use berth_net::{netns, shaping, Subnet};
use berth_store::Store;
use chrono::Utc;
use sha2::Digest;

use crate::config::DaemonConfig;
use crate::error::{EngineError, EngineResult};
use crate::identity::{BridgeOwner, NodeIdentity};
use crate::port_holds::PortHolds;

/// Names of instances on each network, for DNS.
type NameTable = Arc<RwLock<HashMap<String, HashMap<String, Ipv4Addr>>>>;

/// Held while a daemon sets up networks (at start, `network create`), so two daemons starting
/// at once cannot both pick the same free subnet.
const HOST_NETWORK_LOCK: &str = "/run/berth/networks.lock";

/// The default network of a daemon that is not the default state directory's, when the config
/// names no subnet: the first free /24 from here on (10.89.0.0/24 stays the default one's).
const FIRST_DERIVED_SUBNET: Ipv4Addr = Ipv4Addr::new(10, 89, 1, 0);
const LEGACY_DEFAULT_SUBNET: &str = "10.89.0.0/24";

/// Where this node's instances are listed: the instances' store (etcd in a cluster, where
/// only those of `node` are this node's; the node's own database on one host).
#[derive(Clone)]
pub struct InstanceSource {
    pub store: Store,
    pub node: Option<String>,
}

impl InstanceSource {
    pub async fn list(&self) -> Result<Vec<berth_model::Instance>, berth_store::StoreError> {
        let mut instances = self.store.list_instances().await?;
        if let Some(node) = &self.node {
            instances.retain(|i| &i.node == node);
        }
        Ok(instances)
    }
}

/// The cluster's overlay as this node takes part in it: the cluster's subnet, this node's
/// /24 of it for addresses, the node's gateway in it, the VXLAN id and the node's address.
#[derive(Debug, Clone)]
pub struct OverlayPlan {
    pub subnet: Subnet,
    pub pool: Subnet,
    pub gateway: Ipv4Addr,
    pub vni: u32,
    pub local: Ipv4Addr,
}

pub struct Networks {
    store: Store,
    /// This node's instances (the default network may not change under them).
    instances: InstanceSource,
    state_dir: PathBuf,
    netns_dir: PathBuf,
    node_id: String,
    /// The alias this node gives its bridges: who owns them, for other daemons to see.
    owner_note: String,
    firewall: Firewall,
    /// Where DNS responders forward outside names (networks that are not internal).
    upstreams: Vec<SocketAddr>,
    default_subnet: Subnet,
    /// In a cluster with an overlay: what this node's default network is part of.
    overlay: Option<OverlayPlan>,
    /// Names of other nodes' instances on the default network (the overlay's DNS).
    remote_names: std::sync::Mutex<std::collections::HashSet<String>>,
    names: NameTable,
    dns_tasks: std::sync::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Addresses given out whose instances are not recorded yet (network, address).
    claims: ClaimSet,
    /// Serializes allocations (each reads the claims, then the records).
    allocating: tokio::sync::Mutex<()>,
    /// The host ports of running instances' published ports, held against other programs.
    port_holds: PortHolds,
}

type ClaimSet = Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>;

/// An address given to an instance that is not recorded yet; no other allocation gets it
/// while this lives. Drop it once the instance record holds the address (or was not made).
#[derive(Debug)]
pub struct AddressClaim {
    pub address: InstanceAddress,
    claims: ClaimSet,
}

impl AddressClaim {
    fn new(address: InstanceAddress, claims: ClaimSet) -> AddressClaim {
        claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((address.network.clone(), address.address.clone()));
        AddressClaim { address, claims }
    }
}

impl Drop for AddressClaim {
    fn drop(&mut self) {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(self.address.network.clone(), self.address.address.clone()));
    }
}

fn net_error(e: berth_net::NetError) -> EngineError {
    EngineError::internal(e.to_string())
}

impl Networks {
    /// The bridge of a network other than the default one: `bb-` and a short hash of the node's
    /// id and the name (interface names are short, and two nodes on one host must not share
    /// bridges).
    fn bridge_name(&self, network: &str) -> String {
        let hash = sha2::Sha256::digest(format!("{}:{network}", self.node_id).as_bytes());
        format!("{BRIDGE_PREFIX}{}", &hex::encode(hash)[..10])
    }

    /// The iptables chain of this node's published ports.
    pub fn dnat_chain(&self) -> &str {
        self.firewall.dnat_chain()
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

/// The first of 255 /24s from `first` on that overlaps neither `taken` nor `host`.
fn first_free(first: Ipv4Addr, taken: &[Subnet], host: &[(String, Subnet)]) -> Option<Subnet> {
    (0..255u32)
        .filter_map(|step| {
            let base = u32::from(first).checked_add(step << 8)?;
            Subnet::parse(&format!("{}/24", Ipv4Addr::from(base))).ok()
        })
        .find(|candidate| {
            !taken.iter().any(|t| t.overlaps(candidate)) && !host.iter().any(|(_, h)| h.overlaps(candidate))
        })
}

async fn host_network_lock() -> EngineResult<nix::fcntl::Flock<std::fs::File>> {
    tokio::task::spawn_blocking(|| {
        let path = Path::new(HOST_NETWORK_LOCK);
        if let Some(parent) = path.parent() {
            // /run/berth also holds the API socket: it must stay traversable.
            crate::create_traversable_dir(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("locking {}: {e}", path.display()))
    })
    .await
    .map_err(|e| EngineError::internal(e.to_string()))?
    .map_err(EngineError::internal)
}

/// Which config key (or other action) resolves a clash over `network`, and to what.
fn clash_fix(network: &Network, config: &DaemonConfig, key: &str, to: &str) -> String {
    if network.name == DEFAULT_NETWORK {
        format!("set {key} in {} to {to}", config.config_file.display())
    } else {
        "free it, or stop the daemon that holds it".to_string()
    }
}

impl Networks {
    /// Sets up this node's firewall chains, the default network and every stored network.
    /// Refuses, in one line naming the config key, a bridge or subnet another daemon holds.
    pub async fn start(
        store: Store,
        instances: InstanceSource,
        state_dir: &Path,
        identity: &NodeIdentity,
        config: &DaemonConfig,
        overlay: Option<OverlayPlan>,
    ) -> EngineResult<Networks> {
        let firewall = identity.firewall().map_err(|e| EngineError::internal(e.to_string()))?;
        let _host_lock = host_network_lock().await?;
        if firewall::loopback_routed_everywhere() {
            // berth before this version set it for every interface, so a host upgraded
            // from it would keep routing 127.0.0.0/8 from any neighbour until a reboot.
            match firewall::stop_routing_loopback_everywhere() {
                Ok(()) => tracing::warn!(
                    "net.ipv4.conf.all.route_localnet was 1 (older berth set it): every interface routed the host's \
                     127.0.0.0/8; turned it off, berth's bridges keep their own setting. A tool that needs it \
                     everywhere (kube-proxy's localhost NodePorts) must set it again"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "net.ipv4.conf.all.route_localnet is 1 and could not be turned off")
                }
            }
        }
        let mut networks = Networks {
            store,
            instances,
            state_dir: state_dir.to_path_buf(),
            netns_dir: state_dir.join("netns"),
            node_id: identity.id.clone(),
            owner_note: identity.owner_note(state_dir),
            firewall,
            upstreams: config.dns_upstreams.clone().unwrap_or_else(dns::host_resolvers),
            default_subnet: Subnet::parse(LEGACY_DEFAULT_SUBNET).map_err(EngineError::internal)?,
            overlay,
            remote_names: Default::default(),
            names: Arc::new(RwLock::new(HashMap::new())),
            dns_tasks: std::sync::Mutex::new(HashMap::new()),
            claims: Default::default(),
            allocating: tokio::sync::Mutex::new(()),
            port_holds: PortHolds::default(),
        };
        let default = networks.default_network(identity, config).await?;
        networks.default_subnet = subnet_of(&default)?;
        let stored = networks.store.list_networks().await?;
        for network in stored.iter().filter(|n| n.name != DEFAULT_NETWORK) {
            networks.check_clashes(network, config).await?;
        }
        // Only once nothing clashes: a daemon that refuses to start leaves nothing behind.
        networks.firewall.ensure_base().map_err(net_error)?;
        for network in stored {
            networks.bring_up(&network).await?;
        }
        Ok(networks)
    }

    /// The default network's record: as stored, with the config's bridge and subnet where it
    /// names them, else derived from the node's identity; checked for clashes, then stored.
    async fn default_network(&self, identity: &NodeIdentity, config: &DaemonConfig) -> EngineResult<Network> {
        if let Some(plan) = &self.overlay {
            return self.overlay_default(plan, identity, config).await;
        }
        let configured_subnet = config
            .default_subnet
            .as_deref()
            .map(|text| {
                Subnet::parse(text).map_err(|e| {
                    EngineError::invalid(
                        "default_subnet",
                        format!("default_subnet in {}: {e}", config.config_file.display()),
                    )
                })
            })
            .transpose()?;
        if let Some(bridge) = &config.default_bridge {
            let valid = bridge.starts_with(BRIDGE_PREFIX)
                && bridge.len() <= 15
                && bridge
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(EngineError::invalid(
                    "default_bridge",
                    format!(
                        "default_bridge '{bridge}' in {} must start with {BRIDGE_PREFIX} and have at most 15 letters, digits, '-' or '_'",
                        config.config_file.display()
                    ),
                ));
            }
        }
        let stored = self.store.list_networks().await?;
        let record = match stored.iter().find(|n| n.name == DEFAULT_NETWORK) {
            Some(record) => {
                let bridge = config.default_bridge.clone().unwrap_or_else(|| record.bridge.clone());
                let subnet = match configured_subnet {
                    Some(subnet) => subnet,
                    None => subnet_of(record)?,
                };
                if bridge == record.bridge && subnet.to_string() == record.subnet {
                    record.clone()
                } else {
                    self.replace_default(record, bridge, subnet, config).await?
                }
            }
            None => {
                let subnet = match configured_subnet {
                    Some(subnet) => subnet,
                    None if identity.tag.is_none() => {
                        Subnet::parse(LEGACY_DEFAULT_SUBNET).map_err(EngineError::internal)?
                    }
                    None => self.free_subnet(FIRST_DERIVED_SUBNET, &stored, config).await?,
                };
                Network {
                    name: DEFAULT_NETWORK.into(),
                    bridge: config
                        .default_bridge
                        .clone()
                        .unwrap_or_else(|| identity.default_bridge()),
                    subnet: subnet.to_string(),
                    gateway: subnet.gateway().to_string(),
                    internal: false,
                    created_at: Utc::now(),
                    pool: None,
                    overlay: None,
                }
            }
        };
        self.check_clashes(&record, config).await?;
        self.store.put_network(&record).await?;
        Ok(record)
    }

    /// In a cluster with an overlay: the default network spans the nodes (the cluster's
    /// subnet; this node's /24 of it; a VXLAN port on the bridge).
    async fn overlay_default(
        &self,
        plan: &OverlayPlan,
        identity: &NodeIdentity,
        config: &DaemonConfig,
    ) -> EngineResult<Network> {
        let bridge = config
            .default_bridge
            .clone()
            .unwrap_or_else(|| identity.default_bridge());
        let hash = sha2::Sha256::digest(format!("{}:overlay", self.node_id).as_bytes());
        let record = Network {
            name: DEFAULT_NETWORK.into(),
            bridge: bridge.clone(),
            subnet: plan.subnet.to_string(),
            gateway: plan.gateway.to_string(),
            internal: false,
            created_at: Utc::now(),
            pool: Some(plan.pool.to_string()),
            overlay: Some(berth_model::network::Overlay {
                vni: plan.vni,
                device: format!("bx{}", &hex::encode(hash)[..10]),
                local: plan.local.to_string(),
            }),
        };
        let stored = self.store.list_networks().await?;
        if let Some(old) = stored.iter().find(|n| n.name == DEFAULT_NETWORK) {
            let same = old.subnet == record.subnet && old.gateway == record.gateway && old.pool == record.pool;
            if same && old.bridge == record.bridge {
                return Ok(Network {
                    created_at: old.created_at,
                    ..record
                });
            }
            let users = self.default_network_users().await?;
            if !users.is_empty() {
                return Err(EngineError::conflict(format!(
                    "the cluster's overlay gives this node's default network {} (gateway {}), but instances {} hold addresses on its old one ({}); remove them first",
                    record.subnet,
                    record.gateway,
                    users.join(", "),
                    old.subnet
                )));
            }
            if let Ok(old_subnet) = subnet_of(old) {
                self.firewall.remove_network(&old.bridge, &old_subnet, old.internal);
            }
            let _ = links::delete(&old.bridge).await;
        }
        self.check_clashes(&record, config).await?;
        self.store.put_network(&record).await?;
        Ok(record)
    }

    /// This node's instances holding an address on the default network (which may not move
    /// under them).
    async fn default_network_users(&self) -> EngineResult<Vec<String>> {
        Ok(self
            .instances
            .list()
            .await?
            .into_iter()
            .filter(|i| i.address.as_ref().is_some_and(|a| a.network == DEFAULT_NETWORK))
            .map(|i| i.name)
            .collect())
    }

    /// Floods the overlay to these nodes (their advertised addresses), if this node has one.
    pub fn set_overlay_peers(&self, peers: &[Ipv4Addr]) -> EngineResult<()> {
        let Some(plan) = &self.overlay else { return Ok(()) };
        let hash = sha2::Sha256::digest(format!("{}:overlay", self.node_id).as_bytes());
        let device = format!("bx{}", &hex::encode(hash)[..10]);
        let peers: Vec<Ipv4Addr> = peers.iter().copied().filter(|p| *p != plan.local).collect();
        berth_net::overlay::set_flood_peers(&device, &peers).map_err(net_error)
    }

    /// Whether the default network spans the cluster.
    pub fn has_overlay(&self) -> bool {
        self.overlay.is_some()
    }

    /// Other nodes' instances on the default network, by name, for this node's DNS.
    pub fn set_remote_names(&self, remote: &[(String, Ipv4Addr)]) {
        let mut known = self.remote_names.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(mut table) = self.names.write() else { return };
        let names = table.entry(DEFAULT_NETWORK.to_string()).or_default();
        for gone in known.iter().filter(|n| !remote.iter().any(|(r, _)| r == *n)) {
            names.remove(gone);
        }
        known.clear();
        for (name, address) in remote {
            names.insert(name.clone(), *address);
            known.insert(name.clone());
        }
    }

    /// The default network moved to the bridge and subnet the config now names: allowed while
    /// no instance holds an address on it (their addresses and devices would be stranded).
    async fn replace_default(
        &self,
        record: &Network,
        bridge: String,
        subnet: Subnet,
        config: &DaemonConfig,
    ) -> EngineResult<Network> {
        let users = self.default_network_users().await?;
        if !users.is_empty() {
            return Err(EngineError::conflict(format!(
                "default_bridge/default_subnet in {} ({bridge}, {subnet}) differ from the default network's ({}, {}), which instances {} are on; remove them first or restore the old values",
                config.config_file.display(),
                record.bridge,
                record.subnet,
                users.join(", ")
            )));
        }
        let aliases = links::aliases().await.map_err(net_error)?;
        if self.owns(&record.bridge, std::slice::from_ref(&record.bridge), &aliases) {
            if let Ok(old) = subnet_of(record) {
                self.firewall.remove_network(&record.bridge, &old, record.internal);
            }
            links::delete(&record.bridge).await.map_err(net_error)?;
        }
        tracing::info!(bridge = %bridge, subnet = %subnet, "the default network follows the config");
        Ok(Network {
            bridge,
            subnet: subnet.to_string(),
            gateway: subnet.gateway().to_string(),
            ..record.clone()
        })
    }

    /// Whether a bridge is this node's: its note names this node (and this state directory, or
    /// one no daemon runs on: the directory moved), or it has no note and the store has it.
    fn owns(&self, bridge: &str, stored_bridges: &[String], aliases: &HashMap<String, String>) -> bool {
        match aliases.get(bridge) {
            Some(note) => BridgeOwner::parse(note).is_some_and(|owner| {
                owner.node == self.node_id && (owner.state_dir == self.state_dir || !owner.running())
            }),
            None => stored_bridges.iter().any(|b| b == bridge),
        }
    }

    /// Subnets on the host's interfaces other than this node's bridges (its uplink, VPNs,
    /// other daemons' and tools' bridges): a network over one of them would make its addresses
    /// unreachable.
    async fn foreign_subnets(&self, stored: &[Network]) -> EngineResult<Vec<(String, Subnet)>> {
        let stored_bridges: Vec<String> = stored.iter().map(|n| n.bridge.clone()).collect();
        let aliases = links::aliases().await.map_err(net_error)?;
        Ok(links::host_ipv4_addresses()
            .await
            .map_err(net_error)?
            .into_iter()
            .filter(|(device, address, prefix)| {
                *prefix > 0 && !address.is_loopback() && !self.owns(device, &stored_bridges, &aliases)
            })
            .map(|(device, address, prefix)| {
                let prefix = prefix.min(32);
                let network = Ipv4Addr::from(u32::from(address) & (u32::MAX << (32 - prefix)));
                (device, Subnet { network, prefix })
            })
            .collect())
    }

    /// The first /24 from `first` on that no network and no host interface has.
    async fn free_subnet(&self, first: Ipv4Addr, stored: &[Network], config: &DaemonConfig) -> EngineResult<Subnet> {
        let taken: Vec<Subnet> = stored.iter().filter_map(|n| Subnet::parse(&n.subnet).ok()).collect();
        let host = self.foreign_subnets(stored).await?;
        first_free(first, &taken, &host).ok_or_else(|| {
            EngineError::conflict(format!(
                "no free /24 from {first} on for the default network; set default_subnet in {}",
                config.config_file.display()
            ))
        })
    }

    /// Refuses a network whose bridge another daemon (or tool) owns, or whose subnet is on an
    /// interface of the host that is not this node's.
    async fn check_clashes(&self, network: &Network, config: &DaemonConfig) -> EngineResult<()> {
        let stored = self.store.list_networks().await?;
        let mut stored_bridges: Vec<String> = stored.iter().map(|n| n.bridge.clone()).collect();
        stored_bridges.push(network.bridge.clone());
        let aliases = links::aliases().await.map_err(net_error)?;
        if !self.owns(&network.bridge, &stored_bridges, &aliases) {
            let holder = match aliases
                .get(&network.bridge)
                .map(String::as_str)
                .and_then(BridgeOwner::parse)
            {
                Some(owner) if owner.node == self.node_id => format!(
                    "{} with this node's id ({} was copied; give one copy a new identity by removing its node.json)",
                    owner.describe(),
                    self.state_dir.display()
                ),
                Some(owner) => owner.describe(),
                None => "another program (it is not noted as berth's)".to_string(),
            };
            return Err(EngineError::conflict(format!(
                "bridge {} of network {} belongs to {holder}; {}",
                network.bridge,
                network.name,
                clash_fix(
                    network,
                    config,
                    "default_bridge",
                    "another bridge name (bb-…, at most 15 characters)"
                )
            )));
        }
        let subnet = subnet_of(network)?;
        let mut others: Vec<Network> = stored.into_iter().filter(|n| n.name != network.name).collect();
        others.push(network.clone());
        if let Some((device, used)) = self
            .foreign_subnets(&others)
            .await?
            .into_iter()
            .find(|(_, used)| used.overlaps(&subnet))
        {
            let holder = match links::alias(&device).await.as_deref().and_then(BridgeOwner::parse) {
                Some(owner) => format!(" ({})", owner.describe()),
                None => String::new(),
            };
            return Err(EngineError::conflict(format!(
                "subnet {subnet} of network {} overlaps {used} on the host's interface {device}{holder}; {}",
                network.name,
                clash_fix(network, config, "default_subnet", "a free subnet")
            )));
        }
        Ok(())
    }

    pub fn netns_dir(&self) -> &Path {
        &self.netns_dir
    }

    async fn bring_up(&self, network: &Network) -> EngineResult<()> {
        let subnet = subnet_of(network)?;
        // The subnet's first address, or in an overlay this node's own gateway in it.
        let gateway: Ipv4Addr = network.gateway.parse().unwrap_or_else(|_| subnet.gateway());
        links::ensure_bridge(&network.bridge, gateway, subnet.prefix)
            .await
            .map_err(net_error)?;
        if let Some(overlay) = &network.overlay {
            let local = overlay
                .local
                .parse()
                .map_err(|_| EngineError::internal(format!("overlay address {}", overlay.local)))?;
            berth_net::overlay::ensure_vxlan(&overlay.device, overlay.vni, local, &network.bridge)
                .map_err(net_error)?;
        }
        links::set_alias(&network.bridge, &self.owner_note)
            .await
            .map_err(net_error)?;
        self.firewall
            .add_network(&network.bridge, &subnet, network.internal)
            .map_err(net_error)?;
        let names = self.names.clone();
        let name = network.name.clone();
        let lookup: dns::Lookup = Arc::new(move |query: &str| {
            names
                .read()
                .ok()
                .and_then(|table| table.get(&name).and_then(|n| n.get(query).copied()))
        });
        let outside = if network.internal {
            OutsideNames::Refuse
        } else if self.upstreams.is_empty() {
            OutsideNames::Unknown
        } else {
            OutsideNames::Forward(self.upstreams.clone())
        };
        let socket = self.bind_dns(network, gateway).await?;
        let task = dns::spawn(
            socket,
            ResponderConfig {
                lookup,
                clients: subnet,
                outside,
            },
        );
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

    /// The DNS socket of a network: a clash if something else holds the port.
    async fn bind_dns(&self, network: &Network, gateway: Ipv4Addr) -> EngineResult<tokio::net::UdpSocket> {
        let mut tries = 0;
        loop {
            match dns::bind(gateway).await {
                Ok(socket) => return Ok(socket),
                // A responder of this network that was just aborted may still hold it.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(EngineError::conflict(format!(
                        "network {}: cannot answer DNS on {gateway}:53: {e}; another DNS server holds that port there or on all addresses: stop it or make it listen on its own addresses only",
                        network.name
                    )))
                }
            }
        }
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
        // Listed under the lock: a concurrent create must see the network made before it.
        let _host_lock = host_network_lock().await?;
        let existing = self.list().await?;
        if existing.iter().any(|n| n.name == name) {
            return Err(EngineError::conflict(format!("network {name} already exists")));
        }
        let taken: Vec<Subnet> = existing.iter().filter_map(|n| Subnet::parse(&n.subnet).ok()).collect();
        let host_subnets = self.foreign_subnets(&existing).await?;
        let subnet = match subnet {
            Some(text) => {
                let subnet =
                    Subnet::parse(text).map_err(|e| EngineError::invalid("subnet", format!("--subnet {e}")))?;
                if let Some(other) = existing
                    .iter()
                    .find(|n| Subnet::parse(&n.subnet).is_ok_and(|s| s.overlaps(&subnet)))
                {
                    return Err(EngineError::conflict_in(
                        "subnet",
                        format!(
                            "--subnet {subnet} overlaps network {} ({}); choose another",
                            other.name, other.subnet
                        ),
                    ));
                }
                if let Some((device, used)) = host_subnets.iter().find(|(_, s)| s.overlaps(&subnet)) {
                    return Err(EngineError::conflict_in(
                        "subnet",
                        format!("--subnet {subnet} overlaps {used} on the host's interface {device}; choose another"),
                    ));
                }
                subnet
            }
            // The next free /24 after the default network's.
            None => {
                let after_default = Ipv4Addr::from(u32::from(self.default_subnet.network).wrapping_add(1 << 8));
                first_free(after_default, &taken, &host_subnets)
                    .ok_or_else(|| EngineError::conflict("no free /24 left; give --subnet"))?
            }
        };
        let network = Network {
            name: name.to_string(),
            bridge: self.bridge_name(name),
            subnet: subnet.to_string(),
            gateway: subnet.gateway().to_string(),
            internal,
            created_at: Utc::now(),
            pool: None,
            overlay: None,
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
            self.firewall.remove_network(&network.bridge, &subnet, network.internal);
        }
        links::delete(&network.bridge).await.map_err(net_error)
    }

    /// Removes a network no instance is on.
    pub async fn remove(&self, name: &str, users: &[String]) -> EngineResult<()> {
        if name == DEFAULT_NETWORK {
            // The network exists and stays: a conflict with the daemon's own use of it.
            return Err(EngineError::conflict("the default network cannot be removed"));
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

    /// An address on `network` that no instance of this node holds and no other allocation in
    /// flight has been given. Keep the claim until the instance carrying the address is
    /// recorded: two creates at once (Compose starts its services together) would otherwise
    /// both read the same instance list and get the same address.
    pub async fn allocate(&self, network: &str, id: &str) -> EngineResult<AddressClaim> {
        let network = self.get(network).await?;
        let subnet = subnet_of(&network)?;
        // In an overlay, from this node's own part of the subnet.
        let pool = match &network.pool {
            Some(pool) => {
                Subnet::parse(pool).map_err(|e| EngineError::internal(format!("network {}: {e}", network.name)))?
            }
            None => subnet,
        };
        // One allocation at a time; the claims in flight are read before the records, so an
        // address whose claim ends meanwhile is already in the records read after.
        let _turn = self.allocating.lock().await;
        let mut used: std::collections::HashSet<String> = self
            .claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(claimed_network, _)| claimed_network == &network.name)
            .map(|(_, address)| address.clone())
            .collect();
        used.extend(
            self.instances
                .list()
                .await?
                .into_iter()
                .filter_map(|i| i.address)
                .filter(|a| a.network == network.name)
                .map(|a| a.address),
        );
        let address = (2..=pool.hosts())
            .filter_map(|n| pool.host(n))
            .find(|a| !used.contains(&a.to_string()) && a.to_string() != network.gateway)
            .ok_or_else(|| EngineError::conflict(format!("network {} has no free address left", network.name)))?;
        let address = InstanceAddress {
            network: network.name.clone(),
            address: address.to_string(),
            prefix: subnet.prefix,
            gateway: network.gateway.clone(),
            mac: mac_for(id),
        };
        Ok(AddressClaim::new(address, self.claims.clone()))
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
                let names = table.entry(address.network.clone()).or_default();
                names.insert(instance.name.clone(), ip);
                for alias in dns_aliases(instance) {
                    names.insert(alias.to_string(), ip);
                }
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
            let rules = Self::port_rules(instance);
            self.port_holds
                .hold(&instance.id, &rules)
                .map_err(|e| EngineError::conflict(e.to_string()))?;
            for rule in rules {
                self.firewall.add_port(&rule).map_err(net_error)?;
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
            self.firewall.remove_port(&rule);
        }
        self.port_holds.release(&instance.id);
        // A container's veth pair goes with its namespace: unpinning the namespace (below)
        // lets the kernel delete both ends in its own cleanup work, off this path, where an
        // explicit delete waits for an RCU grace period (about 20 ms per container here). A
        // restart that finds the old host end still there deletes it first (`attach`).
        if instance.kind != InstanceKind::Container {
            if let Err(e) = links::delete(&device_name(instance)).await {
                tracing::warn!(id = %instance.id, error = %e, "removing the network device");
            }
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
                // An alias another instance took over since stays with that one.
                let own = address.address.parse::<Ipv4Addr>().ok();
                for alias in dns_aliases(instance) {
                    if names.get(alias).copied() == own {
                        names.remove(alias);
                    }
                }
            }
        }
    }

    /// After a daemon restart: names and port rules of instances that kept running.
    pub fn restore(&self, instance: &Instance) {
        self.register_name(instance);
        let rules = Self::port_rules(instance);
        // The rules come back either way: the instance still serves through them.
        if let Err(e) = self.port_holds.hold(&instance.id, &rules) {
            tracing::warn!(id = %instance.id, error = %e, "holding a published port's host port again");
        }
        for rule in rules {
            if let Err(e) = self.firewall.add_port(&rule) {
                tracing::warn!(id = %instance.id, error = %e, "restoring a published port");
            }
        }
    }
}

/// More names an instance answers to on its network (the Docker API's network aliases).
fn dns_aliases(instance: &Instance) -> impl Iterator<Item = &str> {
    instance
        .spec
        .labels
        .get(berth_model::network::ALIASES_LABEL)
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .filter(|alias| !alias.is_empty())
}
