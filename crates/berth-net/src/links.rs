//! Network devices over netlink (rtnetlink): bridges with their gateway address, veth pairs
//! whose inner end is configured inside a container's namespace, tap devices for VMs.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{new_connection, Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::{failed, netns, NetResult};

async fn handle() -> NetResult<Handle> {
    let (connection, handle, _) = new_connection().map_err(|e| failed("opening a netlink socket", e))?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The index of the device called `name`, if there is one.
async fn index_of(handle: &Handle, name: &str) -> NetResult<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        // ENODEV: no such device.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(failed(format!("looking up {name}"), e)),
    }
}

pub async fn exists(name: &str) -> NetResult<bool> {
    Ok(index_of(&handle().await?, name).await?.is_some())
}

/// A bridge with the gateway address, up; created unless it exists.
pub async fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix: u8) -> NetResult<()> {
    let handle = handle().await?;
    let index = match index_of(&handle, name).await? {
        Some(index) => index,
        None => {
            handle
                .link()
                .add(LinkBridge::new(name).up().build())
                .execute()
                .await
                .map_err(|e| failed(format!("creating bridge {name}"), e))?;
            index_of(&handle, name)
                .await?
                .ok_or_else(|| failed(format!("creating bridge {name}"), "it did not appear"))?
        }
    };
    // The kernel may ignore the index filter (without strict checking): filter here too.
    let has_address = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map(|addresses| {
            addresses
                .iter()
                .any(|a| a.header.index == index && a.header.family == rtnetlink::packet_route::AddressFamily::Inet)
        })
        .unwrap_or(false);
    if !has_address {
        handle
            .address()
            .add(index, IpAddr::V4(gateway), prefix)
            .execute()
            .await
            .map_err(|e| failed(format!("giving {name} its address {gateway}/{prefix}"), e))?;
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| failed(format!("bringing {name} up"), e))
}

/// Every device's alias (`ip link set … alias`), where berth notes which daemon owns a
/// bridge, by device name; asked of netlink, so it is this network namespace's (sysfs shows
/// the namespace that mounted it).
pub async fn aliases() -> NetResult<std::collections::HashMap<String, String>> {
    use rtnetlink::packet_route::link::LinkAttribute;
    let handle = handle().await?;
    let links: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| failed("listing the host's devices", e))?;
    Ok(links
        .iter()
        .filter_map(|link| {
            let name = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            })?;
            let alias = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfAlias(alias) if !alias.trim().is_empty() => Some(alias.trim().to_string()),
                _ => None,
            })?;
            Some((name, alias))
        })
        .collect())
}

/// One device's alias; `None` when it has none or does not exist.
pub async fn alias(name: &str) -> Option<String> {
    aliases().await.ok()?.remove(name)
}

pub async fn set_alias(name: &str, alias: &str) -> NetResult<()> {
    use rtnetlink::packet_route::link::LinkAttribute;
    let handle = handle().await?;
    let index = index_of(&handle, name)
        .await?
        .ok_or_else(|| failed(format!("noting the owner of {name}"), "no such device"))?;
    let mut message = LinkUnspec::new_with_index(index).build();
    message.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(|e| failed(format!("noting the owner of {name}"), e))
}

/// The host's IPv4 addresses: (interface, address, prefix length), from its address table.
pub async fn host_ipv4_addresses() -> NetResult<Vec<(String, Ipv4Addr, u8)>> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let handle = handle().await?;
    let messages: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| failed("listing the host's addresses", e))?;
    Ok(messages
        .iter()
        .filter_map(|message| {
            let mut label = String::new();
            let mut address = None;
            for attribute in &message.attributes {
                match attribute {
                    AddressAttribute::Label(name) => label = name.clone(),
                    AddressAttribute::Local(IpAddr::V4(v4)) => address = Some(*v4),
                    AddressAttribute::Address(IpAddr::V4(v4)) if address.is_none() => address = Some(*v4),
                    _ => {}
                }
            }
            address.map(|a| (label, a, message.header.prefix_len))
        })
        .collect())
}

/// Deletes a device if it exists.
pub async fn delete(name: &str) -> NetResult<()> {
    let handle = handle().await?;
    if let Some(index) = index_of(&handle, name).await? {
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| failed(format!("deleting {name}"), e))?;
    }
    Ok(())
}

/// Where an interface inside a namespace gets its address.
#[derive(Debug, Clone)]
pub struct InterfaceAddress {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// A veth pair: `host_name` on `bridge`, its peer as `eth0` in the namespace at `netns_path`
/// with `address` and a default route through the gateway.
///
/// One request makes the pair with the peer born inside the namespace as `eth0` and the host
/// end on the bridge and up (the peer comes up inside: a veth cannot be up before its pair
/// exists, ENOTCONN): moving a device between namespaces afterwards waits for an RCU
/// grace period in the kernel (milliseconds), and each further request is a round trip.
pub async fn attach_veth(
    host_name: &str,
    bridge: &str,
    netns_path: &Path,
    address: &InterfaceAddress,
) -> NetResult<()> {
    let handle = handle().await?;
    let context = format!("creating {host_name}");
    let bridge_index = index_of(&handle, bridge)
        .await?
        .ok_or_else(|| failed(&context, format!("bridge {bridge} is missing")))?;
    let namespace = File::open(netns_path).map_err(|e| failed(&context, e))?;
    let peer = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new()
        .name("eth0".to_string())
        .setns_by_fd(namespace.as_raw_fd())
        .build();
    let pair = LinkVeth::new(host_name, "eth0")
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .controller(bridge_index)
        .up()
        .build();
    handle
        .link()
        .add(pair)
        .execute()
        .await
        .map_err(|e| failed(&context, e))?;
    let result = configure_inside(netns_path.to_path_buf(), address.clone());
    if result.is_err() {
        let _ = delete(host_name).await;
    }
    result
}

/// Inside the namespace: eth0 gets its address, lo comes up, and the default route goes
/// through the gateway. Netlink sockets belong to the namespace they are opened in, so this
/// runs on a thread of its own with its own small runtime.
fn configure_inside(netns_path: PathBuf, address: InterfaceAddress) -> NetResult<()> {
    netns::run_in(&netns_path, move || -> NetResult<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed("starting a runtime in the namespace", e))?;
        runtime.block_on(async {
            let handle = handle().await?;
            let index = index_of(&handle, "eth0")
                .await?
                .ok_or_else(|| failed("configuring eth0", "eth0 is missing"))?;
            handle
                .address()
                .add(index, IpAddr::V4(address.address), address.prefix)
                .execute()
                .await
                .map_err(|e| failed("giving eth0 its address", e))?;
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(|e| failed("bringing eth0 up", e))?;
            // A fresh namespace numbers its devices from 1, lo first.
            let lo = index_of(&handle, "lo").await?.unwrap_or(1);
            let _ = handle
                .link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await;
            handle
                .route()
                .add(RouteMessageBuilder::<Ipv4Addr>::new().gateway(address.gateway).build())
                .execute()
                .await
                .map_err(|e| failed("adding the default route", e))
        })
    })?
}

const TUNSETIFF: libc::c_ulong = 0x400454ca;
const TUNSETPERSIST: libc::c_ulong = 0x400454cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A persistent tap device on `bridge` for a VM's qemu to open by name.
pub async fn create_tap(name: &str, bridge: &str) -> NetResult<()> {
    let context = format!("creating tap {name}");
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| failed(&context, e))?;
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(failed(&context, "name too long"));
    }
    request.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: TUNSETIFF and TUNSETPERSIST read an ifreq we own, on the tun fd we opened.
    unsafe {
        if libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut request) < 0 {
            return Err(failed(&context, std::io::Error::last_os_error()));
        }
        if libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST, 1) < 0 {
            return Err(failed(&context, std::io::Error::last_os_error()));
        }
    }
    drop(tun);
    let handle = handle().await?;
    let bridge_index = index_of(&handle, bridge)
        .await?
        .ok_or_else(|| failed(&context, format!("bridge {bridge} is missing")))?;
    let index = index_of(&handle, name)
        .await?
        .ok_or_else(|| failed(&context, "tap missing"))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).controller(bridge_index).up().build())
        .execute()
        .await
        .map_err(|e| failed(format!("attaching {name} to {bridge}"), e))
}
