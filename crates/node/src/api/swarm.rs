//! Swarm and node routes: `/swarm`, `/swarm/init|join|leave|update`, `/nodes`,
//! `/nodes/{id}`, `/nodes/{id}/update`; and the `Swarm` part of `/info`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_consensus::state::AddressPools;
use berth_consensus::{Availability, NodeRole};
use serde::Deserialize;
use serde_json::{json, Value};

use super::filters::Filters;
use super::{query_bool, ApiError, AppState, JsonBody};
use crate::service::cluster::{node_id_str, Addresses, LocalState, NodeView, SwarmView};
use crate::service::containers::config::is_unset;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/swarm", get(inspect))
        .route("/swarm/init", post(init))
        .route("/swarm/join", post(join))
        .route("/swarm/leave", post(leave))
        .route("/swarm/update", post(update))
        .route("/nodes", get(list))
        .route("/nodes/{id}", get(node_inspect).delete(node_remove))
        .route("/nodes/{id}/update", post(node_update))
}

/// Go's zero time: what Docker prints for a time it does not know.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitBody {
    #[serde(default)]
    listen_addr: String,
    #[serde(default)]
    advertise_addr: String,
    #[serde(default)]
    force_new_cluster: bool,
    #[serde(default)]
    availability: String,
    #[serde(default)]
    spec: Value,
    #[serde(default)]
    auto_lock_managers: bool,
    #[serde(default)]
    data_path_addr: String,
    #[serde(default)]
    data_path_port: u32,
    #[serde(default)]
    default_addr_pool: Vec<String>,
    #[serde(default)]
    subnet_size: u32,
}

/// `POST /swarm/init`. What berth cannot honour yet is refused by name rather than
/// dropped: a cluster spec other than [`spec`]'s values, autolock, a data path address or
/// port. `DefaultAddrPool`/`SubnetSize` become the cluster's address pools (checked as
/// swarmkit does: valid CIDRs, mask length 1..=29 and not shorter than a pool's prefix).
async fn init(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<InitBody>,
) -> Result<Json<String>, ApiError> {
    let refuse = |field: &str| {
        Err(ApiError::BadRequest(format!(
            "{field} is not supported by berth yet"
        )))
    };
    // Autolock is refused rather than implemented: its key-encryption key would have to
    // wrap every manager's `pki/ca.key` (from which the at-rest key of secrets and configs
    // is derived, `berth_consensus::pki::seal`) and its node key, and a locked manager
    // would then need `swarm unlock` before it can join the Raft group or serve TLS, a
    // start-up state berthd does not have. Without it, as in Swarm without autolock, the
    // keys are plain files (mode 0600) on each manager's disk, outside the replicated
    // state, so a copy of the Raft log or a snapshot alone opens no secret.
    if body.auto_lock_managers {
        return refuse("AutoLockManagers (docker swarm init --autolock)");
    }
    if !body.data_path_addr.is_empty() {
        return refuse("DataPathAddr (--data-path-addr)");
    }
    if !matches!(body.data_path_port, 0 | 4789) {
        return refuse("DataPathPort (--data-path-port)");
    }
    let pools = if body.default_addr_pool.is_empty() && matches!(body.subnet_size, 0 | 24) {
        None
    } else {
        let mut pools = AddressPools::default();
        if !body.default_addr_pool.is_empty() {
            pools.pools = body.default_addr_pool.clone();
        }
        if body.subnet_size != 0 {
            pools.mask_length = u8::try_from(body.subnet_size).unwrap_or(u8::MAX);
        }
        // swarmkit's checks, before anything is created.
        pools.validate().map_err(ApiError::BadRequest)?;
        Some(pools)
    };
    if let Some(field) = spec_change(&body.spec) {
        return Err(spec_change_refused(&field));
    }
    let availability = match body.availability.as_str() {
        "" => None,
        a => Some(parse_availability(a)?),
    };
    let addrs = Addresses {
        listen: body.listen_addr,
        advertise: body.advertise_addr,
    };
    let id = st
        .cluster
        .init(&addrs, body.force_new_cluster, pools)
        .await?;
    set_own_availability(&st, availability).await?;
    Ok(Json(id))
}

/// After init or join: the `Availability` the request asked for, unless active.
async fn set_own_availability(
    st: &AppState,
    availability: Option<Availability>,
) -> Result<(), ApiError> {
    if let Some(a) = availability.filter(|a| *a != Availability::Active) {
        let me = st.cluster.node_view_self().await?;
        st.cluster
            .set_availability(&node_id_str(me.record.id), a)
            .await?;
    }
    Ok(())
}

/// The first field of a requested cluster spec (dotted path) that is set and differs from
/// what berth runs with ([`spec`]): berth's cluster settings are fixed for now.
fn spec_change(theirs: &Value) -> Option<String> {
    fn walk(theirs: &Value, ours: &Value, path: &str) -> Option<String> {
        match theirs {
            Value::Object(o) => o.iter().find_map(|(k, v)| {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(v, ours.get(k).unwrap_or(&Value::Null), &sub)
            }),
            v if is_unset(v) || v == ours => None,
            _ => Some(path.to_string()),
        }
    }
    walk(theirs, &spec(), "")
}

fn spec_change_refused(field: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "changing the cluster spec ({field}) is not supported by berth"
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JoinBody {
    #[serde(default)]
    listen_addr: String,
    #[serde(default)]
    advertise_addr: String,
    #[serde(default)]
    remote_addrs: Option<Vec<String>>,
    #[serde(default)]
    join_token: String,
    #[serde(default)]
    availability: String,
    #[serde(default)]
    data_path_addr: String,
}

async fn join(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<JoinBody>,
) -> Result<(), ApiError> {
    if !body.data_path_addr.is_empty() {
        return Err(ApiError::BadRequest(
            "DataPathAddr (--data-path-addr) is not supported by berth yet".into(),
        ));
    }
    let availability = match body.availability.as_str() {
        "" => None,
        a => Some(parse_availability(a)?),
    };
    let addrs = Addresses {
        listen: body.listen_addr,
        advertise: body.advertise_addr,
    };
    st.cluster
        .join(
            &addrs,
            &body.remote_addrs.unwrap_or_default(),
            &body.join_token,
        )
        .await?;
    set_own_availability(&st, availability).await
}

#[derive(Debug, Deserialize)]
struct ForceQuery {
    force: Option<String>,
}

async fn leave(State(st): State<AppState>, Query(q): Query<ForceQuery>) -> Result<(), ApiError> {
    st.cluster.leave(query_bool(q.force.as_deref())?).await?;
    Ok(())
}

/// The cluster spec berth runs with (its values, in Docker's shape).
fn spec() -> Value {
    json!({
        "Name": "default",
        "Labels": {},
        "Orchestration": {"TaskHistoryRetentionLimit": 5},
        // Raft ticks of 100 ms: heartbeat every tick, elections after 5 to 10.
        "Raft": {"SnapshotInterval": 5000, "KeepOldSnapshots": 0,
                 "LogEntriesForSlowFollowers": 1000, "ElectionTick": 5, "HeartbeatTick": 1},
        // Nodes heartbeat the leader every 250 ms (service/orchestrator.rs).
        "Dispatcher": {"HeartbeatPeriod": 250_000_000u64},
        "CAConfig": {"NodeCertExpiry": 7_776_000_000_000_000u64},
        "TaskDefaults": {},
        "EncryptionConfig": {"AutoLockManagers": false},
    })
}

fn cluster_json(v: &SwarmView) -> Value {
    json!({
        "ID": v.cluster_id,
        "Version": {"Index": v.version},
        "CreatedAt": ZERO_TIME,
        "UpdatedAt": ZERO_TIME,
        "Spec": spec(),
        "TLSInfo": {"TrustRoot": v.ca_cert_pem, "CertIssuerSubject": "", "CertIssuerPublicKey": ""},
        "RootRotationInProgress": false,
        "DefaultAddrPool": v.address_pools.pools,
        "SubnetSize": v.address_pools.mask_length,
        "DataPathPort": 4789,
    })
}

async fn inspect(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let view = st.cluster.inspect(true).await?;
    let mut v = cluster_json(&view);
    if let Some((worker, manager)) = &view.tokens {
        v["JoinTokens"] = json!({"Worker": worker, "Manager": manager});
    }
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateQuery {
    version: Option<String>,
    rotate_worker_token: Option<String>,
    rotate_manager_token: Option<String>,
    rotate_manager_unlock_key: Option<String>,
}

/// `docker swarm join-token --rotate` and `docker swarm update`. Token rotation is
/// supported; a spec differing from berth's fixed one is refused, not ignored.
async fn update(
    State(st): State<AppState>,
    Query(q): Query<UpdateQuery>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(), ApiError> {
    if q.version.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::BadRequest("version is required".into()));
    }
    if query_bool(q.rotate_manager_unlock_key.as_deref())? {
        return Err(ApiError::BadRequest(
            "berth does not lock managers (no autolock), so there is no unlock key to rotate"
                .into(),
        ));
    }
    if let Some(field) = spec_change(&body) {
        return Err(spec_change_refused(&field));
    }
    if query_bool(q.rotate_worker_token.as_deref())? {
        st.cluster.rotate_token(NodeRole::Worker).await?;
    }
    if query_bool(q.rotate_manager_token.as_deref())? {
        st.cluster.rotate_token(NodeRole::Manager).await?;
    }
    Ok(())
}

fn node_json(n: &NodeView, engine_version: &str, hostname_os: &Value) -> Value {
    let r = &n.record;
    let ip = host_of(&r.addr);
    let mut v = json!({
        "ID": node_id_str(r.id),
        "Version": {"Index": r.version},
        "CreatedAt": ZERO_TIME,
        "UpdatedAt": ZERO_TIME,
        "Spec": {
            "Labels": r.labels,
            "Role": r.role.as_str(),
            "Availability": r.availability.as_str(),
        },
        "Description": match &r.description {
            // What the node's agent reported (SetNodeDescription).
            Some(d) => json!({
                "Hostname": r.hostname,
                "Platform": {"Architecture": d.architecture, "OS": d.os},
                "Resources": {"NanoCPUs": d.nano_cpus, "MemoryBytes": d.memory_bytes},
                "Engine": {"EngineVersion": d.engine_version, "Labels": d.engine_labels},
                "TLSInfo": {},
            }),
            None => json!({
                "Hostname": r.hostname,
                "Platform": hostname_os,
                "Resources": {},
                "Engine": {"EngineVersion": if n.is_self { engine_version } else { "" }},
                "TLSInfo": {},
            }),
        },
        "Status": {"State": if n.reachable { "ready" } else { "down" }, "Addr": ip},
    });
    if r.role == NodeRole::Manager {
        v["ManagerStatus"] = json!({
            "Leader": n.leader,
            "Reachability": if n.reachable { "reachable" } else { "unreachable" },
            "Addr": r.addr,
        });
    }
    v
}

/// The IP of a `host:port` (`[v6]:port` too), as Docker shows node addresses.
fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_matches(['[', ']'])
}

fn platform() -> Value {
    json!({"Architecture": std::env::consts::ARCH, "OS": "linux"})
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    filters: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let filters = Filters::parse(q.filters.as_deref())?;
    filters.only(&["id", "name", "role", "membership", "label", "node.label"])?;
    let ids = filters.get("id");
    let names = filters.get("name");
    let roles = filters.get("role");
    for r in &roles {
        if r != "manager" && r != "worker" {
            return Err(ApiError::BadRequest(format!("invalid filter 'role={r}'")));
        }
    }
    let labels = [filters.get("label"), filters.get("node.label")].concat();
    let memberships = filters.get("membership");
    let nodes = st.cluster.nodes()?;
    let platform = platform();
    let out = nodes
        .iter()
        .filter(|n| {
            let id = node_id_str(n.record.id);
            (ids.is_empty() || ids.iter().any(|i| id.starts_with(i.as_str())))
                && (names.is_empty() || names.contains(&n.record.hostname))
                && (roles.is_empty() || roles.iter().any(|r| r == n.record.role.as_str()))
                && (memberships.is_empty() || memberships.iter().any(|m| m == "accepted"))
                && labels.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => n.record.labels.get(k).is_some_and(|x| x == v),
                    None => n.record.labels.contains_key(l.as_str()),
                })
        })
        .map(|n| node_json(n, super::system::ENGINE_VERSION, &platform))
        .collect();
    Ok(Json(out))
}

async fn node_inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = st.cluster.node_view(&id)?;
    Ok(Json(node_json(
        &n,
        super::system::ENGINE_VERSION,
        &platform(),
    )))
}

async fn node_remove(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ForceQuery>,
) -> Result<(), ApiError> {
    st.cluster
        .remove_node(&id, query_bool(q.force.as_deref())?)
        .await?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct VersionQuery {
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeSpecBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    role: String,
    #[serde(default)]
    availability: String,
}

fn parse_availability(s: &str) -> Result<Availability, ApiError> {
    match s {
        "active" => Ok(Availability::Active),
        "pause" => Ok(Availability::Pause),
        "drain" => Ok(Availability::Drain),
        other => Err(ApiError::BadRequest(format!(
            "invalid availability {other:?}: expected active, pause or drain"
        ))),
    }
}

async fn node_update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
    JsonBody(body): JsonBody<NodeSpecBody>,
) -> Result<(), ApiError> {
    let version = q
        .version
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::BadRequest("version is required".into()))?
        .parse::<u64>()
        .map_err(|_| ApiError::BadRequest("invalid node version".into()))?;
    let role = match body.role.as_str() {
        "manager" => NodeRole::Manager,
        "worker" => NodeRole::Worker,
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid role {other:?}: expected manager or worker"
            )))
        }
    };
    if !body.name.is_empty() {
        return Err(ApiError::BadRequest(
            "Spec.Name of a node is not supported by berth (nodes are named by their hostname)"
                .into(),
        ));
    }
    let availability = parse_availability(&body.availability)?;
    st.cluster
        .update_node(
            &id,
            version,
            role,
            availability,
            body.labels.unwrap_or_default(),
        )
        .await?;
    Ok(())
}

/// The `Swarm` object of `/info`.
pub fn info_json(st: &AppState) -> Value {
    match st.cluster.local_state() {
        LocalState::Inactive => json!({
            "LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "",
            "ControlAvailable": false, "Error": "", "RemoteManagers": null,
        }),
        LocalState::Error(e) => json!({
            "LocalNodeState": "error", "NodeID": "", "NodeAddr": "",
            "ControlAvailable": false, "Error": e, "RemoteManagers": null,
        }),
        LocalState::Active {
            node_id,
            addr,
            manager,
        } => {
            let state = st.cluster.local_cluster_state().unwrap_or_default();
            let managers: Vec<Value> = state
                .nodes
                .values()
                .filter(|n| n.role == NodeRole::Manager)
                .map(|n| json!({"NodeID": node_id_str(n.id), "Addr": n.addr}))
                .collect();
            let mut v = json!({
                "LocalNodeState": "active",
                "NodeID": node_id,
                "NodeAddr": host_of(&addr),
                "ControlAvailable": manager,
                "Error": "",
                "Nodes": state.nodes.len(),
                "Managers": managers.len(),
                "RemoteManagers": managers,
            });
            if manager {
                let view = SwarmView {
                    cluster_id: state.cluster_id.clone().unwrap_or_default(),
                    version: state.last_index,
                    address_pools: state.address_pools.clone(),
                    ca_cert_pem: String::new(),
                    tokens: None,
                };
                v["Cluster"] = cluster_json(&view);
            }
            v
        }
    }
}

/// The `/_ping` `Swarm` header value.
pub fn ping_header(st: &AppState) -> &'static str {
    match st.cluster.local_state() {
        LocalState::Active { manager: true, .. } => "active/manager",
        LocalState::Active { manager: false, .. } => "active/worker",
        LocalState::Error(_) => "error",
        LocalState::Inactive => "inactive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_spec_is_refused_where_it_differs_from_berths() {
        // What the docker CLI sends for a plain `swarm init`: zero values.
        let plain = json!({"Labels": null, "Orchestration": {}, "Raft": {"ElectionTick": 0},
            "Dispatcher": {}, "CAConfig": {"ExternalCAs": null}, "TaskDefaults": {},
            "EncryptionConfig": {"AutoLockManagers": false}});
        assert_eq!(spec_change(&plain), None);
        // `swarm update` sends back the spec as inspected.
        assert_eq!(spec_change(&spec()), None);
        let mut history = spec();
        history["Orchestration"]["TaskHistoryRetentionLimit"] = json!(10);
        assert_eq!(
            spec_change(&history).as_deref(),
            Some("Orchestration.TaskHistoryRetentionLimit")
        );
        let heartbeat = json!({"Dispatcher": {"HeartbeatPeriod": 5_000_000_000u64}});
        assert_eq!(
            spec_change(&heartbeat).as_deref(),
            Some("Dispatcher.HeartbeatPeriod")
        );
        let ca = json!({"CAConfig": {"ExternalCAs": [{"Protocol": "cfssl", "URL": "https://ca"}]}});
        assert_eq!(spec_change(&ca).as_deref(), Some("CAConfig.ExternalCAs"));
    }
}
