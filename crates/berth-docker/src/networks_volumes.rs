//! Networks and volumes. berth's networks are bridges with NAT and DNS (Docker's `bridge`
//! driver; berth's `default` network is Docker's `bridge`), and an instance is on exactly
//! one, chosen at create: connect and disconnect succeed only when they change nothing.
//! Volumes are berth's `local` (a sized ext4 image) and `nfs` drivers.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use berth_model::api::{CreateNetworkRequest, CreateVolumeRequest};
use berth_model::network::Network;
use berth_model::volume::Volume;
use berth_model::{ByteSize, Instance};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::containers::{all_instances, find, json_body};
use crate::create::refuse_set;
use crate::error::{DockerError, DockerResult};
use crate::labels::{Labels, Object};
use crate::params::{flag, name_matches, Filters};
use crate::view::{berth_network_name, docker_network_name, network_id};
use crate::{encode, Gateway, Shared};

/// Docker's built-in networks berth has as modes rather than objects.
const MODE_NETWORKS: &[(&str, &str)] = &[("host", "host"), ("none", "null")];

fn network_view(gateway: &Gateway, network: &Network, instances: &[Instance]) -> Value {
    let containers: BTreeMap<String, Value> = instances
        .iter()
        .filter(|i| i.spec.network == network.name)
        .filter_map(|i| {
            let address = i.address.as_ref()?;
            Some((
                i.id.clone(),
                json!({
                    "Name": i.name, "EndpointID": network_id(&i.id), "MacAddress": address.mac,
                    "IPv4Address": format!("{}/{}", address.address, address.prefix), "IPv6Address": "",
                }),
            ))
        })
        .collect();
    json!({
        "Name": docker_network_name(&network.name),
        "Id": network_id(&network.name),
        "Created": network.created_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": { "Driver": "default", "Options": null, "Config": [{ "Subnet": network.subnet, "Gateway": network.gateway }] },
        "Internal": network.internal,
        "Attachable": true,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": containers,
        // Compose compares these with its file's driver_opts: berth's bridge name is not one.
        "Options": {},
        "Labels": gateway.labels.get(Object::Network, &network.name),
    })
}

fn mode_network_view(name: &str, driver: &str) -> Value {
    json!({
        "Name": name, "Id": network_id(name), "Created": "0001-01-01T00:00:00Z", "Scope": "local",
        "Driver": driver, "EnableIPv6": false, "IPAM": { "Driver": "default", "Options": null, "Config": [] },
        "Internal": false, "Attachable": false, "Ingress": false, "ConfigFrom": { "Network": "" },
        "ConfigOnly": false, "Containers": {}, "Options": {}, "Labels": {},
    })
}

/// Every network as Docker shows them: berth's, then `host` and `none`.
async fn all_networks(gateway: &Gateway) -> DockerResult<Vec<Value>> {
    let networks: Vec<Network> = gateway.berth.get("/v1/networks").await?;
    let instances = all_instances(gateway).await?;
    let mut views: Vec<Value> = networks.iter().map(|n| network_view(gateway, n, &instances)).collect();
    views.extend(
        MODE_NETWORKS
            .iter()
            .map(|(name, driver)| mode_network_view(name, driver)),
    );
    Ok(views)
}

/// A network by Docker name or id (prefix).
async fn find_network(gateway: &Gateway, key: &str) -> DockerResult<Value> {
    let views = all_networks(gateway).await?;
    let by_name = views.iter().find(|v| v["Name"] == key);
    let by_id = || {
        let matching: Vec<&Value> = views
            .iter()
            .filter(|v| !key.is_empty() && v["Id"].as_str().is_some_and(|id| id.starts_with(key)))
            .collect();
        (matching.len() == 1).then(|| matching[0])
    };
    by_name
        .or_else(by_id)
        .cloned()
        .ok_or_else(|| DockerError::not_found(format!("network {key} not found")))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    filters: Option<String>,
}

pub async fn list_networks(State(gateway): Shared, Query(query): Query<ListQuery>) -> DockerResult<Json<Vec<Value>>> {
    let filters = Filters::parse(&query.filters, &["name", "id", "label", "driver", "type", "scope"])?;
    let views = all_networks(&gateway).await?;
    let text = |value: &Value| value.as_str().unwrap_or("").to_string();
    Ok(Json(
        views
            .into_iter()
            .filter(|v| {
                let labels: Labels = serde_json::from_value(v["Labels"].clone()).unwrap_or_default();
                let builtin = matches!(text(&v["Name"]).as_str(), "bridge" | "host" | "none");
                filters.any("name", |n| text(&v["Name"]).contains(n))
                    && filters.any("id", |id| text(&v["Id"]).starts_with(id))
                    && filters.any("driver", |d| text(&v["Driver"]) == d)
                    && filters.any("scope", |s| s == "local")
                    && filters.any("type", |t| (t == "builtin") == builtin)
                    && filters.labels_match(&labels)
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
pub struct InspectQuery {
    verbose: Option<String>,
}

pub async fn inspect_network(
    State(gateway): Shared,
    Path(id): Path<String>,
    Query(query): Query<InspectQuery>,
) -> DockerResult<Json<Value>> {
    if flag(&query.verbose) {
        return Err(DockerError::unsupported("verbose=1", "it describes swarm services"));
    }
    Ok(Json(find_network(&gateway, &id).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreateBody {
    name: Option<String>,
    /// Refused on name clashes in any case.
    check_duplicate: Option<bool>,
    driver: Option<String>,
    internal: Option<bool>,
    /// berth networks take any instance at create.
    attachable: Option<bool>,
    #[serde(rename = "IPAM")]
    ipam: Option<IpamConfig>,
    labels: Option<Labels>,
    scope: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    driver: Option<String>,
    config: Option<Vec<IpamPool>>,
    options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamPool {
    subnet: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// `POST /networks/create`
pub async fn create_network(State(gateway): Shared, body: Bytes) -> DockerResult<(StatusCode, Json<Value>)> {
    let body: NetworkCreateBody = json_body("network config", &body)?;
    refuse_set("", &body.other)?;
    let _ = (body.check_duplicate, body.attachable);
    let name = body
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| DockerError::bad_parameter("network name is required"))?;
    if matches!(name.as_str(), "bridge" | "host" | "none" | "default") {
        return Err(DockerError::conflict(format!(
            "network with name {name} already exists"
        )));
    }
    match body.driver.as_deref().unwrap_or("") {
        "" | "bridge" => {}
        other => {
            return Err(DockerError::unsupported(
                &format!("the network driver {other}"),
                "berth's networks are bridges (with a VXLAN overlay in a cluster)",
            ))
        }
    }
    if body.scope.as_deref().is_some_and(|s| !s.is_empty() && s != "local") {
        return Err(DockerError::unsupported(
            "Scope other than local",
            "berth's networks are local",
        ));
    }
    let mut subnet = None;
    if let Some(ipam) = body.ipam {
        if !matches!(ipam.driver.as_deref(), None | Some("") | Some("default")) {
            return Err(DockerError::unsupported(
                "IPAM.Driver",
                "berth assigns addresses itself",
            ));
        }
        if ipam.options.is_some_and(|o| !o.is_empty()) {
            return Err(DockerError::unsupported(
                "IPAM.Options",
                "berth assigns addresses itself",
            ));
        }
        let pools = ipam.config.unwrap_or_default();
        if pools.len() > 1 {
            return Err(DockerError::unsupported(
                "more than one IPAM.Config",
                "a berth network has one subnet",
            ));
        }
        if let Some(pool) = pools.into_iter().next() {
            refuse_set("IPAM.Config.", &pool.other)?;
            subnet = pool.subnet.filter(|s| !s.is_empty());
        }
    }
    let request = CreateNetworkRequest {
        name: name.clone(),
        subnet,
        internal: body.internal.unwrap_or(false),
    };
    let _: Network = gateway.berth.post("/v1/networks", &request).await?;
    gateway
        .labels
        .set(Object::Network, &name, body.labels.unwrap_or_default());
    tracing::info!(network = %name, "docker network create");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": network_id(&name), "Warning": "" })),
    ))
}

pub async fn remove_network(State(gateway): Shared, Path(id): Path<String>) -> DockerResult<StatusCode> {
    let view = find_network(&gateway, &id).await?;
    let name = view["Name"].as_str().unwrap_or("").to_string();
    if matches!(name.as_str(), "bridge" | "host" | "none") {
        return Err(DockerError::new(
            StatusCode::FORBIDDEN,
            format!("{name} is a pre-defined network and cannot be removed"),
        ));
    }
    gateway.berth.delete(&format!("/v1/networks/{}", encode(&name))).await?;
    gateway.labels.forget(Object::Network, &name);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectBody {
    container: Option<String>,
    /// Only with `disconnect`.
    force: Option<bool>,
    endpoint_config: Option<Value>,
}

/// Whether `container` is on the network `key` names; refuses a change berth cannot make.
async fn on_network(gateway: &Gateway, key: &str, body: &ConnectBody, verb: &str) -> DockerResult<(Instance, bool)> {
    let view = find_network(gateway, key).await?;
    let container = body
        .container
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| DockerError::bad_parameter("Container is required"))?;
    let instance = find(gateway, container).await?;
    let network = berth_network_name(view["Name"].as_str().unwrap_or(""));
    let on = instance.spec.network == network;
    if (verb == "connect") == on {
        return Ok((instance, on));
    }
    Err(DockerError::new(
        StatusCode::FORBIDDEN,
        format!(
            "berth cannot {verb} {} {} network {}: a berth instance is on exactly one network, chosen at create (it is on {})",
            instance.name,
            if verb == "connect" { "to" } else { "from" },
            docker_network_name(network),
            docker_network_name(&instance.spec.network),
        ),
    ))
}

/// `POST /networks/{id}/connect`: succeeds for the network the container is already on.
pub async fn connect(State(gateway): Shared, Path(id): Path<String>, body: Bytes) -> DockerResult<StatusCode> {
    let body: ConnectBody = json_body("connect config", &body)?;
    let (instance, _) = on_network(&gateway, &id, &body, "connect").await?;
    // New aliases would have to be set at create; the same ones are no change.
    let aliases: Vec<String> = body
        .endpoint_config
        .as_ref()
        .and_then(|c| c.get("Aliases"))
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default();
    let known = instance
        .spec
        .labels
        .get(crate::view::ALIASES_LABEL)
        .cloned()
        .unwrap_or_default();
    let short = berth_model::instance::short_id(&instance.id);
    if let Some(alias) = aliases
        .iter()
        .find(|a| a.as_str() != short && a.as_str() != instance.name && !known.split(',').any(|k| k == a.as_str()))
    {
        return Err(DockerError::unsupported(
            &format!("adding the alias {alias} after create"),
            "give aliases in NetworkingConfig at create",
        ));
    }
    Ok(StatusCode::OK)
}

pub async fn disconnect(State(gateway): Shared, Path(id): Path<String>, body: Bytes) -> DockerResult<StatusCode> {
    let body: ConnectBody = json_body("disconnect config", &body)?;
    let _ = body.force;
    on_network(&gateway, &id, &body, "disconnect").await?;
    Ok(StatusCode::OK)
}

/// `POST /networks/prune`: networks no instance uses.
pub async fn prune_networks(State(gateway): Shared, Query(query): Query<ListQuery>) -> DockerResult<Json<Value>> {
    let filters = Filters::parse(&query.filters, &["label", "until"])?;
    if !filters.get("until").is_empty() {
        return Err(DockerError::unsupported("the until filter", "prune by label"));
    }
    let networks: Vec<Network> = gateway.berth.get("/v1/networks").await?;
    let instances = all_instances(&gateway).await?;
    let mut deleted = Vec::new();
    for network in networks {
        if network.name == berth_model::network::DEFAULT_NETWORK
            || instances.iter().any(|i| i.spec.network == network.name)
            || !filters.labels_match(&gateway.labels.get(Object::Network, &network.name))
        {
            continue;
        }
        if gateway
            .berth
            .delete(&format!("/v1/networks/{}", encode(&network.name)))
            .await
            .is_ok()
        {
            gateway.labels.forget(Object::Network, &network.name);
            deleted.push(network.name);
        }
    }
    Ok(Json(json!({ "NetworksDeleted": deleted })))
}

/// A volume as Docker shows it.
pub(crate) fn volume_view(volume: &Volume, gateway: &Gateway) -> Value {
    // What it was created with, as Docker shows it; a volume made with berth's own CLI shows
    // its NFS source, if any.
    let mut options = gateway.labels.get(Object::VolumeOptions, &volume.name);
    if let (true, Some(nfs)) = (options.is_empty(), &volume.nfs) {
        options.insert("server".into(), nfs.server.clone());
        options.insert("share".into(), nfs.share.clone());
    }
    json!({
        "Name": volume.name,
        "Driver": volume.driver,
        "Mountpoint": volume.path,
        "CreatedAt": volume.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "Labels": gateway.labels.get(Object::Volume, &volume.name),
        "Scope": "local",
        "Options": options,
        "Status": { "size": ByteSize(volume.size_bytes).to_string() },
    })
}

fn volume_in_use(instances: &[Instance], name: &str) -> bool {
    instances
        .iter()
        .any(|i| i.spec.volumes.iter().any(|v| v.volume == name))
}

pub async fn list_volumes(State(gateway): Shared, Query(query): Query<ListQuery>) -> DockerResult<Json<Value>> {
    let filters = Filters::parse(&query.filters, &["name", "label", "driver", "dangling"])?;
    let volumes: Vec<Volume> = gateway.berth.get("/v1/volumes").await?;
    let instances = if filters.get("dangling").is_empty() {
        Vec::new()
    } else {
        all_instances(&gateway).await?
    };
    let listed: Vec<Value> = volumes
        .iter()
        .filter(|v| filters.any("name", |n| name_matches(n, &v.name)))
        .filter(|v| filters.any("driver", |d| d == v.driver))
        .filter(|v| filters.labels_match(&gateway.labels.get(Object::Volume, &v.name)))
        .filter(|v| {
            filters.any("dangling", |d| {
                flag(&Some(d.to_string())) != volume_in_use(&instances, &v.name)
            })
        })
        .map(|v| volume_view(v, &gateway))
        .collect();
    Ok(Json(json!({ "Volumes": listed, "Warnings": [] })))
}

async fn get_volume(gateway: &Gateway, name: &str) -> DockerResult<Volume> {
    gateway
        .berth
        .get(&format!("/v1/volumes/{}", encode(name)))
        .await
        .map_err(|e| {
            let e = DockerError::from(e);
            if e.status == StatusCode::NOT_FOUND {
                DockerError::not_found(format!("get {name}: no such volume"))
            } else {
                e
            }
        })
}

pub async fn inspect_volume(State(gateway): Shared, Path(name): Path<String>) -> DockerResult<Json<Value>> {
    Ok(Json(volume_view(&get_volume(&gateway, &name).await?, &gateway)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeCreateBody {
    name: Option<String>,
    driver: Option<String>,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<Labels>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// `POST /volumes/create`: `local` takes a `size` option (berth's volumes are sized ext4
/// images); `nfs` takes berth's `server`, `share` and `mode`.
pub async fn create_volume(State(gateway): Shared, body: Bytes) -> DockerResult<(StatusCode, Json<Value>)> {
    let body: VolumeCreateBody = json_body("volume config", &body)?;
    refuse_set("", &body.other)?;
    let name = body
        .name
        .filter(|n| !n.is_empty())
        // Docker names an unnamed volume with 64 hex digits.
        .unwrap_or_else(berth_model::instance::new_instance_id);
    let driver = body.driver.filter(|d| !d.is_empty()).unwrap_or_else(|| "local".into());
    let mut options = body.driver_opts.unwrap_or_default();
    let given_options = options.clone();
    let size_bytes = match driver.as_str() {
        "local" => {
            let size = options.remove("size");
            if let Some(key) = options.keys().next() {
                return Err(DockerError::unsupported(
                    &format!("the local driver option {key}"),
                    "berth's local volumes take size=SIZE only",
                ));
            }
            size.map(|s| {
                s.parse::<ByteSize>()
                    .map(|b| b.bytes())
                    .map_err(|e| DockerError::bad_parameter(format!("size={s}: {e}")))
            })
            .transpose()?
        }
        "nfs" => None,
        other => {
            return Err(DockerError::unsupported(
                &format!("the volume driver {other}"),
                "berth has the local and nfs drivers",
            ))
        }
    };
    if let Ok(existing) = get_volume(&gateway, &name).await {
        // Docker answers an existing volume of the same driver with itself.
        if existing.driver == driver {
            return Ok((StatusCode::CREATED, Json(volume_view(&existing, &gateway))));
        }
        return Err(DockerError::conflict(format!(
            "volume {name} already exists with the {} driver",
            existing.driver
        )));
    }
    let request = CreateVolumeRequest {
        name: name.clone(),
        size_bytes,
        driver: Some(driver),
        options,
    };
    let volume: Volume = gateway.berth.post("/v1/volumes", &request).await?;
    gateway
        .labels
        .set(Object::Volume, &name, body.labels.unwrap_or_default());
    gateway.labels.set(Object::VolumeOptions, &name, given_options);
    Ok((StatusCode::CREATED, Json(volume_view(&volume, &gateway))))
}

#[derive(Debug, Deserialize)]
pub struct RemoveVolumeQuery {
    force: Option<String>,
}

pub async fn remove_volume(
    State(gateway): Shared,
    Path(name): Path<String>,
    Query(query): Query<RemoveVolumeQuery>,
) -> DockerResult<StatusCode> {
    match gateway.berth.delete(&format!("/v1/volumes/{}", encode(&name))).await {
        Ok(_) => {}
        Err(e) => {
            let e = DockerError::from(e);
            // Docker's force: a missing volume is no error.
            if !(e.status == StatusCode::NOT_FOUND && flag(&query.force)) {
                return Err(if e.status == StatusCode::NOT_FOUND {
                    DockerError::not_found(format!("get {name}: no such volume"))
                } else {
                    e
                });
            }
        }
    }
    gateway.labels.forget(Object::Volume, &name);
    gateway.labels.forget(Object::VolumeOptions, &name);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /volumes/prune`: volumes no instance uses (Docker 20.10's meaning).
pub async fn prune_volumes(State(gateway): Shared, Query(query): Query<ListQuery>) -> DockerResult<Json<Value>> {
    let filters = Filters::parse(&query.filters, &["label"])?;
    let volumes: Vec<Volume> = gateway.berth.get("/v1/volumes").await?;
    let instances = all_instances(&gateway).await?;
    let mut deleted = Vec::new();
    for volume in volumes {
        if volume_in_use(&instances, &volume.name)
            || !filters.labels_match(&gateway.labels.get(Object::Volume, &volume.name))
        {
            continue;
        }
        if gateway
            .berth
            .delete(&format!("/v1/volumes/{}", encode(&volume.name)))
            .await
            .is_ok()
        {
            gateway.labels.forget(Object::Volume, &volume.name);
            gateway.labels.forget(Object::VolumeOptions, &volume.name);
            deleted.push(volume.name);
        }
    }
    // Volumes are thin images: what they held on disk is not measured, so none is claimed.
    Ok(Json(json!({ "VolumesDeleted": deleted, "SpaceReclaimed": 0 })))
}
