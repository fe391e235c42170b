//! Swarm and node routes: `/swarm`, `/swarm/init|join|leave|update`, `/nodes`,
//! `/nodes/{id}`, `/nodes/{id}/update`; and the `Swarm` part of `/info`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_consensus::state::AddressPools;
use berth_consensus::{Availability, ClusterSettings, NodeRole};
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

/// `POST /swarm/init`. The `Spec` is merged into the default settings ([`merge_spec`])
/// and written right after the cluster exists. What berth cannot honour yet is refused by
/// name rather than dropped: spec fields [`merge_spec`] refuses, autolock, a data path
/// address or port. `DefaultAddrPool`/`SubnetSize` become the cluster's address pools (checked as
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
    let defaults = ClusterSettings::default();
    let settings = merge_spec(&defaults, &body.spec)?;
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
    if settings != defaults {
        // `docker swarm init --task-history-limit …`: the new cluster's first change.
        let version = st.cluster.inspect(false).await?.version;
        st.cluster.update_settings(version, settings).await?;
    }
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

/// Swarm's default `CAConfig.NodeCertExpiry` (90 days, ns), the only value berth shows and
/// accepts: its node certificates are issued once at join and not renewed.
const NODE_CERT_EXPIRY_NS: u64 = 7_776_000_000_000_000;
/// Raft ticks of 100 ms: heartbeat every tick, elections after 5 to 10 (fixed).
const ELECTION_TICK: u64 = 5;
const HEARTBEAT_TICK: u64 = 1;

/// `current` with the client's cluster `Spec` merged in, as dockerd merges it
/// (`MergeSwarmSpecToGRPC`): a field left out, `null` or zero keeps its value;
/// `TaskHistoryRetentionLimit` and `KeepOldSnapshots` are pointers there, so a number
/// (0 too) sets them. Fields berth cannot apply are refused by name (400), never dropped.
fn merge_spec(current: &ClusterSettings, body: &Value) -> Result<ClusterSettings, ApiError> {
    fn leaves<'a>(v: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
        match v {
            // `Labels` is a value, not a tree.
            Value::Object(o) if path != "Labels" => {
                for (k, v) in o {
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    leaves(v, &sub, out);
                }
            }
            v => out.push((path.to_string(), v)),
        }
    }
    let bad = |field: &str, want: &str| {
        ApiError::BadRequest(format!("invalid cluster spec: {field} must be {want}"))
    };
    let refuse = |field: &str, why: &str| {
        ApiError::BadRequest(format!("{field} is not supported by berth: {why}"))
    };
    let uint = |field: &str, v: &Value| v.as_u64().ok_or_else(|| bad(field, "a number >= 0"));
    let mut out = current.clone();
    let mut all = Vec::new();
    if !body.is_null() {
        leaves(body, "", &mut all);
    }
    for (path, v) in all {
        if v.is_null() {
            continue;
        }
        match path.as_str() {
            "Name" => {
                if !matches!(v.as_str(), Some("" | "default")) {
                    return Err(refuse("Name", "the cluster is named \"default\""));
                }
            }
            "Labels" => {
                let labels = v
                    .as_object()
                    .ok_or_else(|| bad("Labels", "an object of strings"))?;
                out.labels.clear();
                for (k, v) in labels {
                    let v = v
                        .as_str()
                        .ok_or_else(|| bad("Labels", "an object of strings"))?;
                    out.labels.insert(k.clone(), v.to_string());
                }
            }
            "Orchestration.TaskHistoryRetentionLimit" => {
                out.task_history_retention_limit =
                    v.as_i64().ok_or_else(|| bad(&path, "a number"))?;
            }
            "Raft.SnapshotInterval" => match uint(&path, v)? {
                0 => {}
                n => out.snapshot_interval = n,
            },
            "Raft.LogEntriesForSlowFollowers" => match uint(&path, v)? {
                0 => {}
                n => out.log_entries_for_slow_followers = n,
            },
            "Raft.KeepOldSnapshots" => {
                if uint(&path, v)? != 0 {
                    return Err(refuse(&path, "each node keeps only its latest snapshot"));
                }
            }
            "Raft.ElectionTick" | "Raft.HeartbeatTick" => {
                let fixed = if path == "Raft.ElectionTick" {
                    ELECTION_TICK
                } else {
                    HEARTBEAT_TICK
                };
                if !matches!(uint(&path, v)?, 0) && v.as_u64() != Some(fixed) {
                    return Err(refuse(
                        &path,
                        &format!("berth's Raft timing is fixed ({fixed} ticks of 100 ms)"),
                    ));
                }
            }
            "Dispatcher.HeartbeatPeriod" => match uint(&path, v)? {
                0 => {}
                n => out.heartbeat_period_ns = n,
            },
            "CAConfig.NodeCertExpiry" => {
                if !matches!(uint(&path, v)?, 0 | NODE_CERT_EXPIRY_NS) {
                    return Err(refuse(
                        &path,
                        "node certificates are issued once at join and not renewed",
                    ));
                }
            }
            "EncryptionConfig.AutoLockManagers" => {
                if v.as_bool() == Some(true) {
                    return Err(refuse(
                        &path,
                        "managers are not locked (docker swarm update --autolock)",
                    ));
                }
            }
            _ if is_unset(v) => {}
            "CAConfig.ExternalCAs" => return Err(refuse(&path, "the cluster CA is berth's own")),
            "CAConfig.SigningCACert" | "CAConfig.SigningCAKey" | "CAConfig.ForceRotate" => {
                return Err(refuse(&path, "the cluster CA cannot be rotated"))
            }
            "TaskDefaults.LogDriver.Name" | "TaskDefaults.LogDriver.Options" => {
                return Err(refuse(
                    "TaskDefaults.LogDriver",
                    "tasks use their service's log driver",
                ))
            }
            other => return Err(refuse(other, "unknown cluster spec field")),
        }
    }
    out.validate().map_err(ApiError::BadRequest)?;
    Ok(out)
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

/// The cluster spec in Docker's shape: the replicated settings and berth's fixed values.
fn spec(settings: &ClusterSettings) -> Value {
    json!({
        "Name": "default",
        "Labels": settings.labels,
        "Orchestration": {"TaskHistoryRetentionLimit": settings.task_history_retention_limit},
        "Raft": {"SnapshotInterval": settings.snapshot_interval, "KeepOldSnapshots": 0,
                 "LogEntriesForSlowFollowers": settings.log_entries_for_slow_followers,
                 "ElectionTick": ELECTION_TICK, "HeartbeatTick": HEARTBEAT_TICK},
        "Dispatcher": {"HeartbeatPeriod": settings.heartbeat_period_ns},
        "CAConfig": {"NodeCertExpiry": NODE_CERT_EXPIRY_NS},
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
        "Spec": spec(&v.settings),
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

/// `docker swarm join-token --rotate` and `docker swarm update` (merged as [`merge_spec`]
/// says; the settings are written only when they change). Managers only (503 on a
/// worker, dockerd's words).
async fn update(
    State(st): State<AppState>,
    Query(q): Query<UpdateQuery>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(), ApiError> {
    st.cluster.manager()?;
    if q.version.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::BadRequest("version is required".into()));
    }
    if query_bool(q.rotate_manager_unlock_key.as_deref())? {
        return Err(ApiError::BadRequest(
            "berth does not lock managers (no autolock), so there is no unlock key to rotate"
                .into(),
        ));
    }
    let version = q
        .version
        .as_deref()
        .unwrap_or("")
        .parse::<u64>()
        .map_err(|_| ApiError::BadRequest("invalid cluster version".into()))?;
    let current = st.cluster.inspect(false).await?;
    let settings = merge_spec(&current.settings, &body)?;
    if settings != current.settings {
        st.cluster.update_settings(version, settings).await?;
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
                    version: state.settings.version,
                    address_pools: state.address_pools.clone(),
                    settings: state.settings.clone(),
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

    fn refused(body: Value) -> String {
        match merge_spec(&ClusterSettings::default(), &body) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{body} was not refused: {other:?}"),
        }
    }

    #[test]
    fn a_cluster_spec_is_merged_into_the_settings() {
        let defaults = ClusterSettings::default();
        // What the docker CLI sends for a plain `swarm init`: zero values, no change.
        let plain = json!({"Labels": null, "Orchestration": {}, "Raft": {"ElectionTick": 0},
            "Dispatcher": {}, "CAConfig": {"ExternalCAs": null}, "TaskDefaults": {},
            "EncryptionConfig": {"AutoLockManagers": false}});
        assert_eq!(merge_spec(&defaults, &plain).unwrap(), defaults);
        // `swarm update` sends back the spec as inspected.
        assert_eq!(merge_spec(&defaults, &spec(&defaults)).unwrap(), defaults);
        // `docker swarm update --task-history-limit 0 --dispatcher-heartbeat 1s
        // --snapshot-interval 100` on top of it.
        let mut changed = spec(&defaults);
        changed["Orchestration"]["TaskHistoryRetentionLimit"] = json!(0);
        changed["Dispatcher"]["HeartbeatPeriod"] = json!(1_000_000_000u64);
        changed["Raft"]["SnapshotInterval"] = json!(100);
        changed["Labels"] = json!({"team": "a"});
        let merged = merge_spec(&defaults, &changed).unwrap();
        assert_eq!(
            merged,
            ClusterSettings {
                task_history_retention_limit: 0,
                heartbeat_period_ns: 1_000_000_000,
                snapshot_interval: 100,
                labels: [("team".to_string(), "a".to_string())].into(),
                ..defaults.clone()
            }
        );
        // docker-py's partial spec keeps what it leaves out.
        let partial = json!({"Raft": {"LogEntriesForSlowFollowers": 200},
            "CAConfig": {"NodeCertExpiry": NODE_CERT_EXPIRY_NS}});
        let merged2 = merge_spec(&merged, &partial).unwrap();
        assert_eq!(merged2.log_entries_for_slow_followers, 200);
        assert_eq!(merged2.heartbeat_period_ns, 1_000_000_000);
    }

    #[test]
    fn fields_berth_cannot_apply_are_refused_by_name() {
        for (body, field) in [
            (
                json!({"CAConfig": {"ExternalCAs": [{"Protocol": "cfssl", "URL": "https://ca"}]}}),
                "CAConfig.ExternalCAs",
            ),
            (
                json!({"CAConfig": {"NodeCertExpiry": 3_600_000_000_000u64}}),
                "CAConfig.NodeCertExpiry",
            ),
            (
                json!({"Raft": {"KeepOldSnapshots": 2}}),
                "Raft.KeepOldSnapshots",
            ),
            (json!({"Raft": {"ElectionTick": 20}}), "Raft.ElectionTick"),
            (
                json!({"EncryptionConfig": {"AutoLockManagers": true}}),
                "EncryptionConfig.AutoLockManagers",
            ),
            (
                json!({"TaskDefaults": {"LogDriver": {"Name": "syslog"}}}),
                "TaskDefaults.LogDriver",
            ),
            (json!({"Name": "other"}), "Name"),
            (json!({"Frobnicate": 1}), "Frobnicate"),
        ] {
            let m = refused(body);
            assert!(m.starts_with(field), "{m}");
        }
        let m = refused(json!({"Dispatcher": {"HeartbeatPeriod": 1000}}));
        assert!(m.contains("Dispatcher.HeartbeatPeriod"), "{m}");
        let m = refused(json!({"Raft": {"SnapshotInterval": "often"}}));
        assert!(m.contains("Raft.SnapshotInterval"), "{m}");
    }
}
