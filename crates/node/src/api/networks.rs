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

use super::filters::Filters;
use super::{ApiError, AppState, JsonBody};
use crate::service::containers::blocking;
use crate::service::events::Event;
use crate::service::networks::{parse_gateway, parse_subnet, HOST_NETWORK_ID, NONE_NETWORK_ID};
use crate::service::pattern::any_matches;
use crate::service::prune::PruneFilter;
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

fn bridge_json(net: &Network, state: &NetState) -> Value {
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
    json!({
        "Name": net.name,
        "Id": net.id,
        "Created": "0001-01-01T00:00:00Z",
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": [{
            "Subnet": net.pool.subnet.to_string(), "Gateway": net.pool.gateway.to_string(),
        }]},
        "Internal": net.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigOnly": false,
        "Containers": containers,
        "Options": {"com.docker.network.bridge.name": net.bridge},
        "Labels": {},
    })
}

fn mode_json(name: &str, id: &str, driver: &str) -> Value {
    json!({
        "Name": name, "Id": id, "Created": "0001-01-01T00:00:00Z", "Scope": "local",
        "Driver": driver, "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": []},
        "Internal": false, "Attachable": false, "Ingress": false, "ConfigOnly": false,
        "Containers": {}, "Options": {}, "Labels": {},
    })
}

fn all_networks(state: &NetState) -> Vec<Value> {
    let mut out: Vec<Value> = state
        .networks
        .values()
        .map(|n| bridge_json(n, state))
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
    let state = st.networks.state().await;
    Ok(Json(Value::Array(filter_networks(
        all_networks(&state),
        &f,
    )?)))
}

/// Networks dockerd always has.
fn predefined(name: &str) -> bool {
    matches!(name, "bridge" | "host" | "none" | "default" | "ingress")
}

/// dockerd's `FilterNetworks` over inspect-shaped networks: `driver` and `scope` exact,
/// `name` and `id` as patterns (see [`Pattern`]), every `label` must match, `dangling`
/// (unused, not predefined) and `type` (`builtin` or `custom`).
fn filter_networks(nets: Vec<Value>, f: &Filters) -> Result<Vec<Value>, ApiError> {
    f.only(&["name", "id", "driver", "type", "label", "scope", "dangling"])?;
    let (names, ids, labels) = (f.get("name"), f.get("id"), f.get("label"));
    let (drivers, scopes) = (f.get("driver"), f.get("scope"));
    let dangling = match f.get("dangling").as_slice() {
        [] => None,
        [v] => match v.as_str() {
            "1" | "true" => Some(true),
            "0" | "false" => Some(false),
            _ => {
                return Err(ApiError::BadRequest(
                    r#"invalid value for filter 'dangling', must be "true" (or "1"), or "false" (or "0")"#
                        .into(),
                ))
            }
        },
        _ => {
            return Err(ApiError::BadRequest(
                r#"got more than one value for filter key "dangling""#.into(),
            ))
        }
    };
    let types = f.get("type");
    if let Some(t) = types
        .iter()
        .find(|t| !matches!(t.as_str(), "builtin" | "custom"))
    {
        return Err(ApiError::BadRequest(format!(
            "Invalid filter: 'type'='{t}'"
        )));
    }
    let str_of = |n: &Value, k: &str| n[k].as_str().unwrap_or("").to_string();
    Ok(nets
        .into_iter()
        .filter(|n| {
            let name = str_of(n, "Name");
            let used = n["Containers"].as_object().is_some_and(|c| !c.is_empty());
            (drivers.is_empty() || drivers.contains(&str_of(n, "Driver")))
                && any_matches(&names, &name)
                && any_matches(&ids, &str_of(n, "Id"))
                && labels.iter().all(|l| {
                    let (k, v) = l
                        .split_once('=')
                        .map_or((l.as_str(), None), |(k, v)| (k, Some(v)));
                    match (n["Labels"].get(k).and_then(Value::as_str), v) {
                        (Some(have), Some(want)) => have == want,
                        (Some(_), None) => true,
                        (None, _) => false,
                    }
                })
                && (scopes.is_empty() || scopes.contains(&str_of(n, "Scope")))
                && dangling.is_none_or(|d| d == (!predefined(&name) && !used))
                && (types.is_empty() || types.iter().any(|t| (t == "builtin") == predefined(&name)))
        })
        .collect())
}

fn find(state: &NetState, key: &str) -> Result<Value, ApiError> {
    let all = all_networks(state);
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

async fn inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let state = st.networks.state().await;
    Ok(Json(find(&state, &id)?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamConfig {
    subnet: Option<String>,
    gateway: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ipam {
    config: Option<Vec<IpamConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    name: String,
    driver: Option<String>,
    internal: Option<bool>,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
}

async fn create(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    if b.name.is_empty() {
        return Err(ApiError::BadRequest("network name is required".into()));
    }
    if matches!(b.name.as_str(), "host" | "none" | "bridge") {
        return Err(ApiError::Forbidden(format!(
            "{} is a pre-defined network and cannot be created",
            b.name
        )));
    }
    match b.driver.as_deref() {
        None | Some("") | Some("bridge") => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "network driver {other:?} is not supported on a single node: use bridge"
            )))
        }
    }
    if b.enable_ipv6.unwrap_or(false) {
        return Err(ApiError::BadRequest(
            "IPv6 networks are not supported yet".into(),
        ));
    }
    let configs = b.ipam.and_then(|i| i.config).unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::BadRequest(
            "only one IPAM config (one IPv4 subnet) is supported".into(),
        ));
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
    let net = st
        .networks
        .create(NetworkRequest {
            id: random_hex64(),
            name: b.name.clone(),
            subnet,
            gateway,
            internal: b.internal.unwrap_or(false),
            mtu: None,
        })
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
struct EndpointConfig {
    aliases: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConnectBody {
    container: String,
    endpoint_config: Option<EndpointConfig>,
    force: Option<bool>,
}

async fn connect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ConnectBody>,
) -> Result<StatusCode, ApiError> {
    let svc = st.containers.clone();
    let key = b.container.clone();
    let rec = blocking(move || svc.get(&key)).await?;
    let aliases = b
        .endpoint_config
        .and_then(|e| e.aliases)
        .unwrap_or_default();
    let (net, ep) = st
        .networks
        .connect(&rec.id, &rec.name, &id, aliases)
        .await?;
    st.containers.add_endpoint(&rec.id, &net, &ep);
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

async fn disconnect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ConnectBody>,
) -> Result<StatusCode, ApiError> {
    let _force = b.force.unwrap_or(false);
    let svc = st.containers.clone();
    let key = b.container.clone();
    let rec = blocking(move || svc.get(&key)).await?;
    let state = st.networks.state().await;
    let net = state
        .find_network(&id)
        .map_err(|e| ApiError::NotFound(e.to_string()))?
        .clone();
    st.networks.disconnect(&rec.id, &net.id).await?;
    st.containers.remove_endpoint(&rec.id, &net.id);
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

#[derive(Debug, Deserialize)]
struct PruneQuery {
    filters: Option<String>,
}

/// `until`, `label` and `label!` over a network as inspect shows it (its `Labels` and
/// `Created`).
fn prune_allows(filter: &PruneFilter, net: &Value) -> bool {
    let labels: std::collections::BTreeMap<String, String> = net["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let created = net["Created"]
        .as_str()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(i64::MIN);
    filter.allows(&labels, created)
}

async fn prune(
    State(st): State<AppState>,
    Query(q): Query<PruneQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = Filters::parse(q.filters.as_deref())?;
    f.only(&["label", "label!", "until"])?;
    let filter = PruneFilter::new(
        f.get("label"),
        f.get("label!"),
        &f.get("until"),
        super::now_nanos(),
    )?;
    let state = st.networks.state().await;
    let unused: Vec<Network> = state
        .networks
        .values()
        .filter(|n| !n.is_default && !state.endpoints.values().any(|e| e.network_id == n.id))
        .filter(|n| prune_allows(&filter, &bridge_json(n, &state)))
        .cloned()
        .collect();
    let mut deleted = Vec::new();
    for n in unused {
        if st.networks.remove(&n.id).await.is_ok() {
            deleted.push(n.name);
        }
    }
    Ok(Json(json!({"NetworksDeleted": deleted})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> Vec<Value> {
        let mut n1 = mode_json("n1", "aaaa1111", "bridge");
        n1["Labels"] = json!({"team": "a", "tier": "db"});
        let mut n10 = mode_json("n10", "bbbb2222", "bridge");
        n10["Containers"] = json!({"c1": {}});
        vec![
            n1,
            n10,
            mode_json("host", HOST_NETWORK_ID, "host"),
            mode_json("none", NONE_NETWORK_ID, "null"),
        ]
    }

    fn names(filters: &str) -> Result<Vec<String>, ApiError> {
        let f = Filters::parse(Some(filters))?;
        Ok(filter_networks(nets(), &f)?
            .iter()
            .map(|n| n["Name"].as_str().unwrap().to_string())
            .collect())
    }

    #[test]
    fn prune_filters_read_labels_and_created() {
        let mut n = mode_json("n1", "aaaa1111", "bridge");
        n["Labels"] = json!({"keep": "yes"});
        n["Created"] = json!("2023-11-14T22:13:20Z");
        let f = |l: &[&str], nl: &[&str], u: &[&str]| {
            let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            PruneFilter::new(s(l), s(nl), &s(u), 1_800_000_000_000_000_000).unwrap()
        };
        assert!(prune_allows(&f(&["keep=yes"], &[], &[]), &n));
        assert!(!prune_allows(&f(&[], &["keep"], &[]), &n));
        assert!(prune_allows(&f(&[], &[], &["1h"]), &n));
        assert!(prune_allows(&f(&[], &[], &["1700000000"]), &n));
        assert!(!prune_allows(&f(&[], &[], &["1699999999"]), &n));
    }

    #[test]
    fn network_filters_as_dockerd_applies_them() {
        assert_eq!(names(r#"{"name":{"^n1$":true}}"#).unwrap(), ["n1"]);
        assert_eq!(
            names(r#"{"name":{"n1":true,"host":true}}"#).unwrap(),
            ["n1", "n10", "host"]
        );
        assert_eq!(names(r#"{"id":{"a1111":true}}"#).unwrap(), ["n1"]);
        assert_eq!(
            names(r#"{"label":{"team=a":true,"tier":true}}"#).unwrap(),
            ["n1"]
        );
        assert!(names(r#"{"label":{"team=a":true,"other":true}}"#)
            .unwrap()
            .is_empty());
        assert_eq!(names(r#"{"dangling":{"true":true}}"#).unwrap(), ["n1"]);
        assert_eq!(
            names(r#"{"dangling":{"0":true}}"#).unwrap(),
            ["n10", "host", "none"]
        );
        assert_eq!(
            names(r#"{"type":{"builtin":true}}"#).unwrap(),
            ["host", "none"]
        );
        assert_eq!(names(r#"{"type":{"custom":true}}"#).unwrap(), ["n1", "n10"]);
        assert_eq!(names(r#"{"driver":{"null":true}}"#).unwrap(), ["none"]);
        assert!(names(r#"{"type":{"bogus":true}}"#).is_err());
        assert!(names(r#"{"dangling":{"maybe":true}}"#).is_err());
        assert!(names(r#"{"scope":{"swarm":true}}"#).unwrap().is_empty());
    }
}
