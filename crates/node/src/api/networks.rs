//! Network routes: list, inspect, create, remove, connect, disconnect, prune. `host` and
//! `none` are listed as Docker lists them; bridge networks come from the network service.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_overlay_net::{NetState, Network, NetworkRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::filters::Filters;
use super::{ApiError, AppState, JsonBody};
use crate::service::containers::blocking;
use crate::service::events::Event;
use crate::service::networks::{
    default_bridge_options, parse_gateway, parse_subnet, NetworkMeta, HOST_NETWORK_ID,
    NONE_NETWORK_ID,
};
use crate::service::pattern::AnyPattern;
use crate::service::volumes::random_hex64;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

fn bridge_json(net: &Network, state: &NetState, meta: Option<&NetworkMeta>) -> Value {
    let containers: serde_json::Map<String, Value> = state
        .endpoints
        .values()
        .filter(|e| e.network_id == net.id)
        .map(|e| {
            let mac = e
                .mac_address()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            (
                e.container_id.clone(),
                json!({
                    "Name": e.container_name, "EndpointID": e.id, "MacAddress": mac,
                    "IPv4Address": format!("{}/{}", e.address, net.pool.subnet.prefix()),
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    let default_meta = NetworkMeta::default();
    let meta = meta.unwrap_or(&default_meta);
    // The default bridge shows the options the daemon set; a user network exactly the
    // options its client sent.
    let options = if net.is_default {
        default_bridge_options(net)
    } else {
        meta.options.clone()
    };
    let ipam_driver = if meta.ipam_driver.is_empty() {
        "default"
    } else {
        meta.ipam_driver.as_str()
    };
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": if meta.created.is_empty() { ZERO_TIME } else { meta.created.as_str() },
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": {"Driver": ipam_driver, "Options": meta.ipam_options, "Config": [{
            "Subnet": net.pool.subnet.to_string(), "Gateway": net.pool.gateway.to_string(),
        }]},
        "Internal": net.internal,
        "Attachable": meta.attachable,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": meta.labels,
    })
}

/// Go's zero time, what dockerd shows as `Created` of its predefined `host`/`none`.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn mode_json(name: &str, id: &str, driver: &str) -> Value {
    json!({
        "Name": name, "Id": id, "Created": ZERO_TIME, "Scope": "local",
        "Driver": driver, "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": []},
        "Internal": false, "Attachable": false, "Ingress": false,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": {}, "Options": {}, "Labels": {},
    })
}

fn all_networks(state: &NetState, meta: &BTreeMap<String, NetworkMeta>) -> Vec<Value> {
    let mut out: Vec<Value> = state
        .networks
        .values()
        .map(|n| bridge_json(n, state, meta.get(&n.id)))
        .collect();
    out.push(mode_json("host", HOST_NETWORK_ID, "host"));
    out.push(mode_json("none", NONE_NETWORK_ID, "null"));
    out
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    filters: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = Filters::parse(q.filters.as_deref())?;
    f.only(&["name", "id", "driver", "type", "label", "scope", "dangling"])?;
    let state = st.networks.state().await;
    let names = AnyPattern::new(&f.get("name"));
    let ids = AnyPattern::new(&f.get("id"));
    let drivers = f.get("driver");
    let labels = f.get("label");
    let types = f.get("type");
    for t in &types {
        if t != "builtin" && t != "custom" {
            return Err(ApiError::BadRequest(format!(
                "invalid filter: 'type'='{t}'"
            )));
        }
    }
    let scopes = f.get("scope");
    let dangling = f.bool("dangling")?;
    let mut all = all_networks(&state, &st.networks.meta());
    all.extend(overlay_networks(&st));
    let out: Vec<Value> = all
        .into_iter()
        .filter(|n| {
            let name = n["Name"].as_str().unwrap_or("");
            let id = n["Id"].as_str().unwrap_or("");
            let driver = n["Driver"].as_str().unwrap_or("");
            let builtin = matches!(name, "bridge" | "host" | "none");
            let used = n["Containers"].as_object().is_some_and(|c| !c.is_empty());
            names.matches(name)
                && ids.matches(id)
                && (drivers.is_empty() || drivers.iter().any(|x| x == driver))
                && labels.iter().all(|l| label_matches(&n["Labels"], l))
                && (types.is_empty() || types.iter().any(|t| (t == "builtin") == builtin))
                && (scopes.is_empty() || scopes.iter().any(|s| n["Scope"] == s.as_str()))
                && dangling.is_none_or(|d| d == (!builtin && !used))
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// A `label` filter value (`key` or `key=value`) against a `Labels` object.
fn label_matches(labels: &Value, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).and_then(Value::as_str) == Some(v),
        None => labels.get(want).is_some(),
    }
}

fn find(
    state: &NetState,
    meta: &BTreeMap<String, NetworkMeta>,
    overlays: Vec<Value>,
    key: &str,
) -> Result<Value, ApiError> {
    let mut all = all_networks(state, meta);
    all.extend(overlays);
    if let Some(n) = all.iter().find(|n| n["Id"] == key || n["Name"] == key) {
        return Ok(n.clone());
    }
    let matches: Vec<&Value> = all
        .iter()
        .filter(|n| n["Id"].as_str().is_some_and(|id| id.starts_with(key)))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::NotFound(format!("network {key} not found"))),
        _ => Err(ApiError::BadRequest(format!(
            "network {key} is ambiguous ({} matches found based on ID prefix)",
            matches.len()
        ))),
    }
}

/// `GET /networks/{id}` query: `scope` limits the lookup to `local` or `swarm` networks
/// (the CLI asks `scope=swarm` to resolve `service update --network-rm NAME`); `verbose`
/// (Swarm's per-service detail) is not kept by berth and refused when true.
#[derive(Debug, Default, Deserialize)]
struct InspectQuery {
    scope: Option<String>,
    verbose: Option<String>,
}

async fn inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<InspectQuery>,
) -> Result<Json<Value>, ApiError> {
    if q.verbose
        .as_deref()
        .is_some_and(|v| v == "1" || v == "true")
    {
        return Err(ApiError::BadRequest(
            "verbose network inspect (the per-service detail of swarm networks) is not supported by berth".into(),
        ));
    }
    let scope = q.scope.as_deref().unwrap_or_default();
    let (state, meta) = match scope {
        "" | "local" => (st.networks.state().await, st.networks.meta()),
        "swarm" => (NetState::default(), BTreeMap::new()),
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid scope {other:?}: local or swarm"
            )))
        }
    };
    let overlays = if scope == "local" {
        Vec::new()
    } else {
        overlay_networks(&st)
    };
    match find(&state, &meta, overlays, &id) {
        Err(ApiError::NotFound(m)) if scope != "local" => {
            predefined_network(&st, &id, scope == "swarm")
                .map(Json)
                .ok_or(ApiError::NotFound(m))
        }
        found => found.map(Json),
    }
}

/// Swarm's record of a predefined network (`host`, `bridge`) by its swarm id, which a
/// service's `Spec.TaskTemplate.Networks[].Target` holds (`docker service inspect
/// --pretty` looks it up to print the name): dockerd 20.10's shape of it, scope `swarm`,
/// label `com.docker.swarm.predefined`. By name only when `by_name` (`scope=swarm`);
/// otherwise the node's own network of that name answers.
fn predefined_network(st: &AppState, id: &str, by_name: bool) -> Option<Value> {
    let state = st.cluster.local_cluster_state()?;
    let (kind, pid) = state
        .predefined_network(id)
        .filter(|(_, pid)| by_name || pid == id)?;
    Some(json!({
        "Name": kind.name(),
        "Id": pid,
        "Created": "0001-01-01T00:00:00Z",
        "Scope": "swarm",
        "Driver": kind.name(),
        "EnableIPv6": false,
        "IPAM": {"Driver": "", "Options": null, "Config": []},
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": null,
        "Options": null,
        "Labels": {"com.docker.swarm.predefined": "true"},
    }))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamConfig {
    subnet: Option<String>,
    gateway: Option<String>,
    #[serde(rename = "IPRange")]
    ip_range: Option<String>,
    auxiliary_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ipam {
    driver: Option<String>,
    config: Option<Vec<IpamConfig>>,
    options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigReference {
    network: Option<String>,
}

/// The network create body of the Engine API (`NetworkCreateRequest`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    name: String,
    driver: Option<String>,
    scope: Option<String>,
    internal: Option<bool>,
    attachable: Option<bool>,
    ingress: Option<bool>,
    config_only: Option<bool>,
    config_from: Option<ConfigReference>,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    /// Ignored by dockerd since API 1.44 (it always checks); berth always refuses a
    /// duplicate name.
    #[serde(rename = "CheckDuplicate")]
    _check_duplicate: Option<bool>,
    options: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// The bridge driver option berth honours (the MTU of the bridge and its veths).
const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// The bridge driver option for inter-container communication (`false`: the network's
/// containers reach the gateway but not each other).
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

async fn create(
    State(st): State<AppState>,
    JsonBody(raw): JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let overlay = raw.get("Driver").and_then(Value::as_str) == Some("overlay");
    if !overlay {
        crate::service::containers::config::refuse_network_fields(&raw)?;
    }
    let b: CreateBody = serde_json::from_value(raw)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?;
    if b.name.is_empty() {
        return Err(ApiError::BadRequest("network name is required".into()));
    }
    if matches!(b.name.as_str(), "host" | "none" | "bridge") {
        return Err(ApiError::Forbidden(format!(
            "{} is a pre-defined network and cannot be created",
            b.name
        )));
    }
    if b.driver.as_deref() == Some("overlay") {
        return create_overlay(&st, b).await;
    }
    match b.driver.as_deref() {
        None | Some("") | Some("bridge") => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "network driver {other:?} is not supported on a single node: use bridge"
            )))
        }
    }
    match b.scope.as_deref() {
        None | Some("") | Some("local") => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Scope {other:?} is not supported for bridge networks: only \"local\""
            )))
        }
    }
    if b.enable_ipv6.unwrap_or(false) {
        return Err(ApiError::BadRequest(
            "IPv6 networks are not supported yet".into(),
        ));
    }
    if b.ingress.unwrap_or(false) {
        return Err(ApiError::BadRequest(
            "Ingress networks need swarm mode: not supported for bridge networks".into(),
        ));
    }
    if b.config_only.unwrap_or(false)
        || b.config_from
            .as_ref()
            .and_then(|c| c.network.as_deref())
            .is_some_and(|n| !n.is_empty())
    {
        return Err(ApiError::BadRequest(
            "ConfigOnly and ConfigFrom networks are not supported".into(),
        ));
    }
    let options = b.options.unwrap_or_default();
    let mut mtu = None;
    let mut icc = true;
    for (k, v) in &options {
        if k == MTU_OPTION {
            mtu = Some(crate::service::overlay::mtu_option(v).ok_or_else(|| {
                ApiError::BadRequest(format!("invalid value {v:?} for option {MTU_OPTION}"))
            })?);
        } else if k == ICC_OPTION {
            icc = berth_runtime::log_config::go_parse_bool(v).ok_or_else(|| {
                ApiError::BadRequest(format!("invalid value {v:?} for option {ICC_OPTION}"))
            })?;
        } else {
            return Err(ApiError::BadRequest(format!(
                "network option {k:?} is not supported by berth's bridge driver (supported: {MTU_OPTION}, {ICC_OPTION})"
            )));
        }
    }
    let ipam = b.ipam.unwrap_or(Ipam {
        driver: None,
        config: None,
        options: None,
    });
    let ipam_driver = match ipam.driver.as_deref() {
        None | Some("") | Some("default") => "default".to_string(),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "IPAM driver {other:?} is not supported: use \"default\""
            )))
        }
    };
    if let Some(k) = ipam.options.iter().flat_map(|o| o.keys()).next() {
        return Err(ApiError::BadRequest(format!(
            "IPAM option {k:?} is not supported by the default IPAM driver"
        )));
    }
    let configs = ipam.config.unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::BadRequest(
            "only one IPAM config (one IPv4 subnet) is supported".into(),
        ));
    }
    if let Some(c) = configs.first() {
        if c.ip_range.as_deref().is_some_and(|r| !r.is_empty()) {
            return Err(ApiError::BadRequest(
                "IPAM config IPRange is not supported: addresses come from the whole subnet".into(),
            ));
        }
        if c.auxiliary_addresses
            .as_ref()
            .is_some_and(|a| !a.is_empty())
        {
            return Err(ApiError::BadRequest(
                "IPAM config AuxiliaryAddresses is not supported".into(),
            ));
        }
    }
    let (subnet, gateway) = match configs.first() {
        Some(c) => (
            c.subnet
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(parse_subnet)
                .transpose()?,
            c.gateway
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(parse_gateway)
                .transpose()?,
        ),
        None => (None, None),
    };
    let meta = NetworkMeta {
        created: String::new(),
        options,
        labels: b.labels.unwrap_or_default(),
        ipam_driver,
        ipam_options: ipam.options,
        attachable: b.attachable.unwrap_or(false),
    };
    // A swarm-scoped network of that name (seen from this node) counts too, as dockerd
    // refuses a local network named like an overlay (and the overlay create above refuses
    // the reverse); two networks of one name would make `--network NAME` ambiguous.
    if st
        .cluster
        .local_cluster_state()
        .is_some_and(|s| s.networks.values().any(|n| n.spec.name == b.name))
    {
        return Err(ApiError::Conflict(format!(
            "network with name {} already exists",
            b.name
        )));
    }
    let net = st
        .networks
        .create(
            NetworkRequest {
                id: random_hex64(),
                name: b.name.clone(),
                subnet,
                gateway,
                internal: b.internal.unwrap_or(false),
                mtu,
                icc,
            },
            meta,
        )
        .await?;
    st.events.publish(Event::now(
        "network",
        "create",
        &net.id,
        [("name".to_string(), net.name.clone())].into(),
    ));
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": net.id, "Warning": ""})),
    ))
}

async fn remove(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if id == "host" || id == "none" || id == HOST_NETWORK_ID || id == NONE_NETWORK_ID {
        return Err(ApiError::Forbidden(format!(
            "{id} is a pre-defined network and cannot be removed"
        )));
    }
    let local = st.networks.state().await.find_network(&id).is_ok();
    if !local {
        if let Some(net) = st
            .cluster
            .local_cluster_state()
            .and_then(|s| s.network_by_ref(&id).cloned())
        {
            return remove_overlay(&st, net).await;
        }
    }
    let net = st.networks.remove(&id).await?;
    st.events.publish(Event::now(
        "network",
        "destroy",
        &net.id,
        [("name".to_string(), net.name)].into(),
    ));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConnectBody {
    container: String,
    /// Docker's `EndpointSettings`: only `Aliases` is honoured; any other key set (e.g.
    /// `IPAMConfig` from `--ip`) is refused by `refuse_unsupported_endpoint`.
    endpoint_config: Option<serde_json::Value>,
    force: Option<bool>,
}

async fn connect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ConnectBody>,
) -> Result<StatusCode, ApiError> {
    let aliases: Vec<String> = match &b.endpoint_config {
        Some(ep) => {
            crate::service::containers::config::refuse_unsupported_endpoint(ep, "EndpointConfig")?;
            match ep.get("Aliases") {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(a) => serde_json::from_value(a.clone())
                    .map_err(|e| ApiError::BadRequest(format!("EndpointConfig.Aliases: {e}")))?,
            }
        }
        None => Vec::new(),
    };
    refuse_overlay_attach(&st, &id).await?;
    let svc = st.containers.clone();
    let key = b.container.clone();
    let rec = blocking(move || svc.get(&key)).await?;
    // A container so far only on the default bridge asks the host's resolvers; joining a
    // network with embedded DNS points it at that network's server (dockerd rewrites
    // resolv.conf to its 127.0.0.11 then), or it would not resolve its new neighbours.
    let had_embedded_dns = rec
        .endpoints
        .iter()
        .any(|e| e.network != berth_overlay_net::state::DEFAULT_NETWORK_NAME);
    if let Some(net) = overlay_of(&st, &id).await {
        let att = st
            .networks
            .connect_overlay(&rec.id, &rec.name, &net, aliases)
            .await?;
        st.containers.add_overlay_endpoint(&rec.id, &att);
        if !had_embedded_dns {
            st.networks.point_resolv_at(&rec.id, net.gateway)?;
        }
        st.events.publish(Event::now(
            "network",
            "connect",
            &net.id,
            [
                ("name".to_string(), net.spec.name.clone()),
                ("container".to_string(), rec.id.clone()),
            ]
            .into(),
        ));
        return Ok(StatusCode::OK);
    }
    let (net, ep) = st
        .networks
        .connect(
            &rec.id,
            &rec.name,
            &id,
            aliases,
            rec.spec.name_resolution.dns.clone(),
        )
        .await?;
    st.containers.add_endpoint(&rec.id, &net, &ep);
    if !had_embedded_dns && !net.is_default {
        st.networks.point_resolv_at(&rec.id, net.pool.gateway)?;
    }
    st.events.publish(Event::now(
        "network",
        "connect",
        &net.id,
        [
            ("name".to_string(), net.name.clone()),
            ("container".to_string(), rec.id.clone()),
        ]
        .into(),
    ));
    Ok(StatusCode::OK)
}

/// Points the container's resolv.conf at the embedded DNS of a network it is still on
/// (the one it left may have been the one named there; the names of all its networks are
/// answered by each), or, with none left, back at what it had before it first joined one.
fn resolve_after_disconnect(
    st: &AppState,
    rec: &crate::service::containers::record::ContainerRecord,
    left: &str,
) -> Result<(), ApiError> {
    let next = rec
        .endpoints
        .iter()
        .filter(|e| {
            e.network_id != left && e.network != berth_overlay_net::state::DEFAULT_NETWORK_NAME
        })
        .find_map(|e| e.gateway.parse::<std::net::Ipv4Addr>().ok());
    match next {
        Some(gateway) => st.networks.point_resolv_at(&rec.id, gateway)?,
        None => st.networks.restore_resolv(&rec.id)?,
    }
    Ok(())
}

async fn disconnect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ConnectBody>,
) -> Result<StatusCode, ApiError> {
    let _force = b.force.unwrap_or(false);
    let svc = st.containers.clone();
    let key = b.container.clone();
    let rec = blocking(move || svc.get(&key)).await?;
    if let Some(net) = overlay_of(&st, &id).await {
        if !rec.endpoints.iter().any(|e| e.network_id == net.id) {
            return Err(ApiError::Forbidden(format!(
                "container {} is not connected to network {}",
                rec.id, net.spec.name
            )));
        }
        st.networks.disconnect_overlay(&rec.id, &net.id).await;
        st.containers.remove_endpoint(&rec.id, &net.id);
        resolve_after_disconnect(&st, &rec, &net.id)?;
        st.events.publish(Event::now(
            "network",
            "disconnect",
            &net.id,
            [
                ("name".to_string(), net.spec.name.clone()),
                ("container".to_string(), rec.id.clone()),
            ]
            .into(),
        ));
        return Ok(StatusCode::OK);
    }
    let state = st.networks.state().await;
    let net = state
        .find_network(&id)
        .map_err(|e| ApiError::NotFound(e.to_string()))?
        .clone();
    if net.name == crate::service::networks::GATEWAY_BRIDGE_NAME
        && rec
            .labels
            .contains_key(crate::service::agent::TASK_ID_LABEL)
    {
        // The task's only way out, which inspect does not list as one of its networks.
        return Err(ApiError::Forbidden(format!(
            "container {} is a swarm task: it cannot be disconnected from {}, its way out",
            rec.id, net.name
        )));
    }
    st.networks.disconnect(&rec.id, &net.id).await?;
    st.containers.remove_endpoint(&rec.id, &net.id);
    resolve_after_disconnect(&st, &rec, &net.id)?;
    st.events.publish(Event::now(
        "network",
        "disconnect",
        &net.id,
        [
            ("name".to_string(), net.name.clone()),
            ("container".to_string(), rec.id.clone()),
        ]
        .into(),
    ));
    Ok(StatusCode::OK)
}

/// `POST /networks/prune`: user networks no container is connected to, narrowed by the
/// `until` (created before) and `label` / `label!` filters.
async fn prune(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = Filters::parse(q.filters.as_deref())?;
    f.only(&["until", "label", "label!"])?;
    let until = f.until(super::now_nanos())?;
    let state = st.networks.state().await;
    let meta = st.networks.meta();
    let unused: Vec<Network> = state
        .networks
        .values()
        .filter(|n| !n.is_default && !state.endpoints.values().any(|e| e.network_id == n.id))
        .filter(|n| {
            let m = meta.get(&n.id).cloned().unwrap_or_default();
            let created = chrono::DateTime::parse_from_rfc3339(&m.created)
                .ok()
                .and_then(|c| c.timestamp_nanos_opt())
                .unwrap_or(i64::MIN);
            super::filters::labels_match(&f, &m.labels) && until.is_none_or(|u| created < u)
        })
        .cloned()
        .collect();
    let mut deleted = Vec::new();
    for n in unused {
        if st.networks.remove(&n.id).await.is_ok() {
            st.events.publish(Event::now(
                "network",
                "destroy",
                &n.id,
                [("name".to_string(), n.name.clone())].into(),
            ));
            deleted.push(n.name);
        }
    }
    Ok(Json(json!({"NetworksDeleted": deleted})))
}

/// Go's RFC 3339 with nanoseconds of a unix-ns instant.
fn rfc3339_of(ns: u64) -> String {
    chrono::DateTime::from_timestamp((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The overlay networks of the cluster as Docker shows them (scope `swarm`), or none when
/// this berthd is not in a swarm. Read from this node's replica: every node lists them.
fn overlay_networks(st: &AppState) -> Vec<Value> {
    let Some(state) = st.cluster.local_cluster_state() else {
        return Vec::new();
    };
    let me = st.cluster.node().map(|n| n.id());
    state
        .networks
        .values()
        .map(|n| overlay_json(n, &state, me))
        .collect()
}

fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Docker 20.10's shape of an overlay network (`docker network inspect` on a swarm node):
/// `Containers` are this node's endpoints on it; `Peers` the nodes hosting endpoints of it,
/// shown (as dockerd does) only on a node that has the network in use itself; the VNI in
/// `Options` as `com.docker.network.driver.overlay.vxlanid_list`.
fn overlay_json(
    n: &berth_consensus::state::Network,
    state: &berth_consensus::ClusterState,
    me: Option<berth_consensus::NodeId>,
) -> Value {
    use berth_consensus::state::EndpointOwner;
    let prefix = n.subnet_net().len;
    let local: Vec<_> = state
        .endpoints_of_network(&n.id)
        .filter(|e| e.node_id.is_some() && e.node_id == me)
        .collect();
    let containers: serde_json::Map<String, Value> = local
        .iter()
        .filter_map(|e| {
            let (key, name) = match &e.owner {
                EndpointOwner::Container { id, name, .. } => (id.clone(), name.clone()),
                EndpointOwner::Task { id, .. } => {
                    // Only a running task's container holds its endpoint (a stopped one
                    // was unplugged), as dockerd lists live endpoints only.
                    let task = state
                        .tasks
                        .get(id)
                        .filter(|t| t.status.state == berth_orchestrator::TaskState::Running)?;
                    let cid = task.status.container_id.clone()?;
                    let node = crate::service::cluster::node_id_str(task.node_id?);
                    let name = state.services.get(&task.service_id).map_or_else(
                        || id.clone(),
                        |s| crate::service::task_spec::task_container_name(s, task, &node),
                    );
                    (cid, name)
                }
                EndpointOwner::NodeSandbox => (
                    format!("{}-sbox", n.spec.name),
                    format!("{}-endpoint", n.spec.name),
                ),
                EndpointOwner::ServiceVip { .. } => return None,
            };
            Some((
                key,
                json!({
                    "Name": name, "EndpointID": e.id, "MacAddress": mac_string(&e.mac),
                    "IPv4Address": format!("{}/{prefix}", e.ip), "IPv6Address": "",
                }),
            ))
        })
        .collect();
    let mut options: serde_json::Map<String, Value> = n
        .spec
        .options
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    options.insert(
        "com.docker.network.driver.overlay.vxlanid_list".into(),
        Value::String(n.vni.to_string()),
    );
    let mut config = json!({"Subnet": n.subnet, "Gateway": n.gateway.to_string()});
    if let Some(r) = &n.spec.ip_range {
        config["IPRange"] = json!(r);
    }
    let mut v = json!({
        "Name": n.spec.name,
        "Id": n.id,
        "Created": rfc3339_of(n.created_at),
        "Scope": "swarm",
        "Driver": "overlay",
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": [config]},
        "Internal": n.spec.internal,
        "Attachable": n.spec.attachable,
        "Ingress": n.spec.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": n.spec.labels,
    });
    if !local.is_empty() {
        let hosts: std::collections::BTreeSet<_> = state
            .endpoints_of_network(&n.id)
            .filter_map(|e| e.node_id)
            .collect();
        let peers: Vec<Value> = hosts
            .iter()
            .filter_map(|id| state.nodes.get(id))
            .map(|node| {
                let ip = node
                    .addr
                    .rsplit_once(':')
                    .map_or(node.addr.as_str(), |(h, _)| h);
                json!({"Name": node.hostname, "IP": ip})
            })
            .collect();
        v["Peers"] = Value::Array(peers);
    }
    v
}

/// `POST /networks/create` with driver `overlay`: checked here, committed through the
/// cluster (from any node: the write is forwarded to the leader), where the leader's log
/// allocates its VNI and subnet.
async fn create_overlay(
    st: &AppState,
    b: CreateBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    use berth_consensus::state::NetworkSpec;
    use berth_consensus::{Command, Response};
    st.cluster.member()?;
    match b.scope.as_deref() {
        None | Some("") | Some("swarm") => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Scope {other:?} is not supported for overlay networks: only \"swarm\""
            )))
        }
    }
    if b.enable_ipv6.unwrap_or(false) {
        return Err(ApiError::BadRequest(
            "IPv6 networks are not supported yet".into(),
        ));
    }
    if b.config_only.unwrap_or(false)
        || b.config_from
            .as_ref()
            .and_then(|c| c.network.as_deref())
            .is_some_and(|n| !n.is_empty())
    {
        return Err(ApiError::BadRequest(
            "ConfigOnly and ConfigFrom networks are not supported".into(),
        ));
    }
    let options = b.options.unwrap_or_default();
    if let Some(k) = options
        .keys()
        .find(|k| k.as_str() != "encrypted" && k.as_str() != MTU_OPTION)
    {
        return Err(ApiError::BadRequest(format!(
            "network option {k:?} is not supported by berth's overlay driver (supported: encrypted, {MTU_OPTION})"
        )));
    }
    if let Some(v) = options.get(MTU_OPTION) {
        let mtu = crate::service::overlay::mtu_option(v).ok_or_else(|| {
            ApiError::BadRequest(format!("invalid value {v:?} for option {MTU_OPTION}"))
        })?;
        let most = crate::service::overlay::ENCRYPTED_MTU;
        if options.contains_key("encrypted") && mtu > most {
            return Err(ApiError::BadRequest(format!(
                "option {MTU_OPTION}={mtu} is too large for an encrypted overlay: its VXLAN rides in WireGuard, at most {most}"
            )));
        }
    }
    let ipam = b.ipam.unwrap_or(Ipam {
        driver: None,
        config: None,
        options: None,
    });
    match ipam.driver.as_deref() {
        None | Some("") | Some("default") => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "IPAM driver {other:?} is not supported: use \"default\""
            )))
        }
    }
    if let Some(k) = ipam.options.iter().flat_map(|o| o.keys()).next() {
        return Err(ApiError::BadRequest(format!(
            "IPAM option {k:?} is not supported by the default IPAM driver"
        )));
    }
    let configs = ipam.config.unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::BadRequest(
            "only one IPAM config (one IPv4 subnet) is supported".into(),
        ));
    }
    let c = configs.first().cloned();
    if c.as_ref()
        .and_then(|c| c.auxiliary_addresses.as_ref())
        .is_some_and(|a| !a.is_empty())
    {
        return Err(ApiError::BadRequest(
            "IPAM config AuxiliaryAddresses is not supported".into(),
        ));
    }
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let local = st.networks.state().await;
    if local.find_network(&b.name).is_ok() {
        return Err(ApiError::Conflict(format!(
            "network with name {} already exists",
            b.name
        )));
    }
    let spec = NetworkSpec {
        name: b.name.clone(),
        attachable: b.attachable.unwrap_or(false),
        internal: b.internal.unwrap_or(false),
        ingress: b.ingress.unwrap_or(false),
        labels: b.labels.unwrap_or_default(),
        options,
        subnet: nonempty(c.as_ref().and_then(|c| c.subnet.clone())),
        gateway: nonempty(c.as_ref().and_then(|c| c.gateway.clone())),
        ip_range: nonempty(c.as_ref().and_then(|c| c.ip_range.clone())),
    };
    let id = crate::service::services::new_object_id();
    let command = Command::CreateNetwork {
        id,
        spec,
        at: super::now_nanos() as u64,
    };
    let net = match st.cluster.commit(command).await? {
        Response::Network { network } => network,
        other => return Err(ApiError::Internal(format!("unexpected answer {other:?}"))),
    };
    publish_overlay_event(st, "create", &net);
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": net.id, "Warning": ""})),
    ))
}

/// `DELETE /networks/{id}` of an overlay network: refused by the cluster while a service
/// or an endpoint uses it.
async fn remove_overlay(
    st: &AppState,
    net: berth_consensus::state::Network,
) -> Result<StatusCode, ApiError> {
    use berth_consensus::{Command, Response};
    match st
        .cluster
        .commit(Command::RemoveNetwork {
            id: net.id.clone(),
            release_stopping: true,
        })
        .await?
    {
        Response::NetworkRemoved { .. } => {}
        other => return Err(ApiError::Internal(format!("unexpected answer {other:?}"))),
    }
    publish_overlay_event(st, "destroy", &net);
    Ok(StatusCode::NO_CONTENT)
}

/// The `network` event dockerd emits for an overlay network (`create`, `destroy`).
fn publish_overlay_event(st: &AppState, action: &str, net: &berth_consensus::state::Network) {
    st.events.publish(Event::now(
        "network",
        action,
        &net.id,
        [
            ("name".to_string(), net.spec.name.clone()),
            ("type".to_string(), "overlay".to_string()),
        ]
        .into(),
    ));
}

/// Plain containers on overlay networks: non-attachable ones refused as swarmkit refuses
/// them (403); attachable ones go to the overlay data plane of this node
/// (`service::overlay_plane`).
pub async fn refuse_overlay_attach(st: &AppState, network: &str) -> Result<(), ApiError> {
    if st.networks.state().await.find_network(network).is_ok() {
        return Ok(());
    }
    let Some(state) = st.cluster.local_cluster_state() else {
        return Ok(());
    };
    let Some(net) = state.network_by_ref(network) else {
        return Ok(());
    };
    if !net.spec.attachable {
        return Err(ApiError::Forbidden(format!(
            "Could not attach to network {network}: rpc error: code = PermissionDenied desc = network {network} not manually attachable"
        )));
    }
    if st.networks.overlay().is_none() {
        return Err(ApiError::NotImplemented(format!(
            "attaching containers to the overlay network {network}: this berthd has no overlay data plane"
        )));
    }
    Ok(())
}

/// The attachable overlay `network` of the cluster, when it is one (and not a local
/// network of that name).
async fn overlay_of(st: &AppState, network: &str) -> Option<berth_consensus::state::Network> {
    if st.networks.state().await.find_network(network).is_ok() {
        return None;
    }
    st.networks.overlay()?.network(network)
}
