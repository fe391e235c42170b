//! Service and task routes: `/services`, `/services/create`, `/services/{id}`,
//! `/services/{id}/update`, `/tasks`, `/tasks/{id}`, and `/distribution/{name}/json` (the
//! docker CLI asks it before `service create`). Translates Docker's query parameters and
//! JSON shapes to [`ServicesService`] calls and back; decides nothing itself.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_orchestrator::{RestartCondition, ServiceMode, TaskState};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::filters::Filters;
use super::images::credentials;
use super::{query_bool, ApiError, ApiVersion, AppState, JsonBody};
use crate::service::containers::health::go_time;
use crate::service::services::{
    Distribution, ServiceFilters, ServiceView, ServicesService, TaskFilters, TaskView,
};

/// The service, task and distribution routes (unversioned; `/v1.NN` is stripped first).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/services", get(list))
        .route("/services/create", post(create))
        .route("/services/{id}", get(inspect).delete(remove))
        .route("/services/{id}/update", post(update))
        .route("/tasks", get(tasks))
        .route("/tasks/{id}", get(task))
        .route("/distribution/{*rest}", get(distribution))
}

/// Whether the daemon reports its own digest warnings: dockerd does for API < 1.30 only;
/// newer clients resolve the digest themselves (`/distribution`) and print the warning.
fn daemon_warns(version: Option<axum::Extension<ApiVersion>>) -> bool {
    version.is_some_and(|v| v.0 < ApiVersion(1, 30))
}

fn services(st: &AppState) -> ServicesService {
    ServicesService::new(st.cluster.clone(), st.images.clone())
        .with_local_networks(st.networks.clone())
}

/// Unix nanoseconds as Go's JSON writes a `time.Time`.
fn time(ns: u64) -> String {
    go_time(chrono::DateTime::from_timestamp_nanos(ns as i64))
}

/// Docker's "Invalid filter 'x'" for keys outside `allowed`.
fn only(filters: &Filters, allowed: &[&str]) -> Result<(), ApiError> {
    match filters
        .map()
        .keys()
        .find(|k| !allowed.contains(&k.as_str()))
    {
        Some(k) => Err(ApiError::BadRequest(format!("Invalid filter '{k}'"))),
        None => Ok(()),
    }
}

/// Swarm's defaults, as dockerd shows them with `insertDefaults=true`: the stop grace
/// period, the restart policy, update and rollback configs.
fn insert_defaults(spec: &mut Value, view: &ServiceView) {
    let Some(obj) = spec.as_object_mut() else {
        return;
    };
    let template = obj
        .entry("TaskTemplate")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(t) = template {
        if let Some(cs) = t.get_mut("ContainerSpec").and_then(Value::as_object_mut) {
            cs.entry("StopGracePeriod")
                .or_insert(json!(berth_orchestrator::spec::DEFAULT_STOP_GRACE_PERIOD));
        }
        let r = &view.spec.restart;
        let condition = match r.condition {
            RestartCondition::None => "none",
            RestartCondition::OnFailure => "on-failure",
            RestartCondition::Any => "any",
        };
        let mut policy =
            json!({"Condition": condition, "Delay": r.delay, "MaxAttempts": r.max_attempts});
        if r.window != 0 {
            policy["Window"] = json!(r.window);
        }
        t.insert("RestartPolicy".into(), policy);
    }
    if !view.spec.mode.is_job() {
        let default_update = json!({"Parallelism": 1, "FailureAction": "pause",
            "Monitor": 5_000_000_000u64, "MaxFailureRatio": 0, "Order": "stop-first"});
        for k in ["UpdateConfig", "RollbackConfig"] {
            match obj.get_mut(k).and_then(Value::as_object_mut) {
                Some(existing) => {
                    for (dk, dv) in default_update.as_object().into_iter().flatten() {
                        existing.entry(dk.clone()).or_insert(dv.clone());
                    }
                }
                None => {
                    obj.insert(k.into(), default_update.clone());
                }
            }
        }
    }
}

/// The spec as dockerd shows it: the client's, with the pinned image and the two values
/// dockerd's conversion always fills in (`Runtime`, `Isolation`).
fn shown_spec(spec: &Value, image: Option<&str>) -> Value {
    let mut spec = spec.clone();
    if let Some(t) = spec.get_mut("TaskTemplate").and_then(Value::as_object_mut) {
        if let Some(cs) = t.get_mut("ContainerSpec").and_then(Value::as_object_mut) {
            if let Some(image) = image {
                cs.insert("Image".into(), json!(image));
            }
            cs.entry("Isolation").or_insert(json!("default"));
        }
        t.entry("Runtime").or_insert(json!("container"));
    }
    spec
}

/// `Endpoint.Ports`: the spec's ports as [`spec_endpoint_ports`] shows them, with the
/// published port the cluster allocated in place of 0 for dynamic ingress ports
/// (Swarm shows the allocation there, and keeps 0 in `Endpoint.Spec.Ports`).
fn endpoint_ports(service: &berth_orchestrator::Service) -> Vec<Value> {
    let mut ports = spec_endpoint_ports(&service.spec);
    for p in &mut ports {
        let number = |key: &str| p.get(key).and_then(Value::as_u64).unwrap_or(0);
        if number("PublishedPort") != 0 || p["PublishMode"] != "ingress" {
            continue;
        }
        let target = number("TargetPort");
        let protocol = p["Protocol"].as_str().unwrap_or("tcp").to_ascii_lowercase();
        if let Some(d) = service
            .dynamic_ports
            .iter()
            .find(|d| u64::from(d.target) == target && d.protocol == protocol)
        {
            p["PublishedPort"] = json!(d.published);
        }
    }
    ports
}

/// `EndpointSpec.Ports` with Docker's defaults (`tcp`, `ingress`).
fn spec_endpoint_ports(spec: &Value) -> Vec<Value> {
    spec.pointer("/EndpointSpec/Ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    if let Some(o) = p.as_object_mut() {
                        o.entry("Protocol").or_insert(json!("tcp"));
                        o.entry("PublishMode").or_insert(json!("ingress"));
                    }
                    p
                })
                .collect()
        })
        .unwrap_or_default()
}

fn service_json(view: &ServiceView, insert: bool) -> Value {
    let s = &view.service;
    let mut spec = shown_spec(&s.spec, Some(&s.image));
    if insert {
        insert_defaults(&mut spec, view);
    }
    // dockerd's conversion always spells the replica count out (`Mode` absent or
    // `{"Replicated": {}}`, as `docker stack deploy` sends it, is 1 replica); the CLI's
    // progress display needs it.
    if let (ServiceMode::Replicated { replicas }, Some(obj)) =
        (&view.spec.mode, spec.as_object_mut())
    {
        obj.insert("Mode".into(), json!({"Replicated": {"Replicas": replicas}}));
    }
    let spec_ports = spec_endpoint_ports(&s.spec);
    let ports = endpoint_ports(s);
    let mode = s
        .spec
        .pointer("/EndpointSpec/Mode")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or("vip");
    let has_networks = !crate::service::task_spec::service_attachments(&s.spec).is_empty();
    let mut endpoint = if !ports.is_empty() {
        json!({"Spec": {"Mode": mode, "Ports": spec_ports}, "Ports": ports})
    } else if has_networks {
        json!({"Spec": {"Mode": mode}})
    } else {
        json!({"Spec": {}})
    };
    if !view.virtual_ips.is_empty() {
        // Swarm's `Endpoint.VirtualIPs`: one per network the service is on.
        endpoint["VirtualIPs"] = view
            .virtual_ips
            .iter()
            .map(|(net, addr)| match addr {
                Some(addr) => json!({"NetworkID": net, "Addr": addr}),
                None => json!({"NetworkID": net}),
            })
            .collect();
    }
    let mut v = json!({
        "ID": s.id,
        "Version": {"Index": s.version},
        "CreatedAt": time(s.created_at),
        "UpdatedAt": time(s.updated_at),
        "Spec": spec,
        "Endpoint": endpoint,
    });
    if let Some(prev) = &s.previous_spec {
        v["PreviousSpec"] = shown_spec(prev, s.previous_image.as_deref());
    }
    if let Some(u) = &s.update_status {
        // Docker's `UpdateStatus` (`CompletedAt` only once completed).
        let mut status = json!({"State": u.state.as_str(), "Message": u.message});
        if let Some(at) = u.started_at {
            status["StartedAt"] = json!(time(at));
        }
        if let Some(at) = u.completed_at {
            status["CompletedAt"] = json!(time(at));
        }
        v["UpdateStatus"] = status;
    }
    if let Some(c) = &view.counts {
        v["ServiceStatus"] = json!({
            "RunningTasks": c.running,
            "DesiredTasks": c.desired,
            "CompletedTasks": c.completed,
        });
    }
    if view.spec.mode.is_job() {
        v["JobStatus"] = json!({
            "JobIteration": {"Index": s.job_iteration},
            "LastExecution": time(s.updated_at),
        });
    }
    v
}

fn task_json(view: &TaskView) -> Value {
    let t = &view.task;
    let mut status = Map::new();
    status.insert("Timestamp".into(), json!(time(t.status.timestamp)));
    status.insert("State".into(), json!(t.status.state.as_str()));
    status.insert("Message".into(), json!(t.status.message));
    if let Some(err) = t.status.err.as_deref().filter(|e| !e.is_empty()) {
        status.insert("Err".into(), json!(err));
    }
    if let Some(cid) = &t.status.container_id {
        status.insert(
            "ContainerStatus".into(),
            json!({
                "ContainerID": cid,
                "PID": t.status.pid.unwrap_or(0),
                "ExitCode": t.status.exit_code.unwrap_or(0),
            }),
        );
    }
    let port_status = if view.ports.is_empty() {
        json!({})
    } else {
        json!({"Ports": view.ports})
    };
    status.insert("PortStatus".into(), port_status);
    let mut spec = view.template.clone();
    if let Some(cs) = spec.get_mut("ContainerSpec").and_then(Value::as_object_mut) {
        cs.entry("Isolation").or_insert(json!("default"));
    }
    let mut v = json!({
        "ID": t.id,
        "Version": {"Index": t.version},
        "CreatedAt": time(t.created_at),
        "UpdatedAt": time(t.created_at.max(t.status.timestamp)),
        "Labels": {},
        "Spec": spec,
        "ServiceID": t.service_id,
        "Status": Value::Object(status),
        "DesiredState": t.desired_state.as_str(),
    });
    if !view.global {
        v["Slot"] = json!(t.slot);
    }
    if let Some(n) = &view.node_id {
        v["NodeID"] = json!(n);
    }
    if t.job_iteration != 0 {
        v["JobIteration"] = json!({"Index": t.job_iteration});
    }
    if !view.networks.is_empty() {
        v["NetworksAttachments"] = view
            .networks
            .iter()
            .map(|(n, addr)| json!({"Network": swarm_network_json(n), "Addresses": [addr]}))
            .collect();
    }
    v
}

/// An overlay network as the swarm API (not the Engine's `/networks`) shows it, dockerd
/// 20.10's `swarm.Network`: what a task's `NetworksAttachments[].Network` holds.
fn swarm_network_json(n: &berth_consensus::state::Network) -> Value {
    let ipam = json!({
        "Driver": {"Name": "default"},
        "Configs": [{"Subnet": n.subnet, "Gateway": n.gateway.to_string()}],
    });
    let mut spec = json!({
        "Name": n.spec.name,
        "Labels": n.spec.labels,
        "DriverConfiguration": {"Name": "overlay"},
        "IPAMOptions": ipam,
        "Scope": "swarm",
    });
    for (key, on) in [
        ("Internal", n.spec.internal),
        ("Attachable", n.spec.attachable),
        ("Ingress", n.spec.ingress),
    ] {
        if on {
            spec[key] = json!(true);
        }
    }
    let mut options: Map<String, Value> = n
        .spec
        .options
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    options.insert(
        "com.docker.network.driver.overlay.vxlanid_list".into(),
        json!(n.vni.to_string()),
    );
    json!({
        "ID": n.id,
        "Version": {"Index": n.version},
        "CreatedAt": time(n.created_at),
        "UpdatedAt": time(n.created_at),
        "Spec": spec,
        "DriverState": {"Name": "overlay", "Options": options},
        "IPAMOptions": ipam,
    })
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    filters: Option<String>,
    status: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let filters = Filters::parse(q.filters.as_deref())?;
    only(&filters, &["id", "name", "label", "mode"])?;
    let f = ServiceFilters {
        ids: filters.get("id"),
        names: filters.get("name"),
        labels: filters.get("label"),
        modes: filters.get("mode"),
    };
    let status = query_bool(q.status.as_deref())?;
    let views = services(&st).list(&f, status)?;
    Ok(Json(views.iter().map(|v| service_json(v, false)).collect()))
}

async fn create(
    State(st): State<AppState>,
    api: Option<axum::Extension<ApiVersion>>,
    headers: HeaderMap,
    JsonBody(spec): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let creds = credentials(&headers)?;
    let written = services(&st).create(spec, creds).await?;
    let mut body = json!({"ID": written.id});
    if daemon_warns(api) && !written.warnings.is_empty() {
        body["Warnings"] = json!(written.warnings);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InspectQuery {
    insert_defaults: Option<String>,
}

async fn inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<InspectQuery>,
) -> Result<Json<Value>, ApiError> {
    let insert = query_bool(q.insert_defaults.as_deref())?;
    let view = services(&st).inspect(&id)?;
    Ok(Json(service_json(&view, insert)))
}

async fn remove(State(st): State<AppState>, Path(id): Path<String>) -> Result<(), ApiError> {
    services(&st).remove(&id).await?;
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateQuery {
    version: Option<String>,
    registry_auth_from: Option<String>,
    rollback: Option<String>,
}

async fn update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UpdateQuery>,
    api: Option<axum::Extension<ApiVersion>>,
    headers: HeaderMap,
    JsonBody(spec): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let raw = q.version.unwrap_or_default();
    let version = raw.parse::<u64>().map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid service version '{raw}': strconv.ParseUint: parsing \"{raw}\": invalid syntax"
        ))
    })?;
    // A service keeps the credentials of its create (or of the last update that sent
    // X-Registry-Auth); an update without them uses the stored ones (`spec`), and
    // `previous-spec` names the same stored credentials (berth keeps one set).
    match q.registry_auth_from.as_deref().unwrap_or("") {
        "" | "spec" | "previous-spec" => {}
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid registryAuthFrom value {other:?}: expected spec or previous-spec"
            )))
        }
    }
    let rollback = match q.rollback.as_deref().unwrap_or("") {
        "" => false,
        "previous" => true,
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid rollback value {other:?}: expected previous"
            )))
        }
    };
    let creds = credentials(&headers)?;
    let written = services(&st)
        .update(&id, version, spec, rollback, creds)
        .await?;
    let warnings = if !daemon_warns(api) || written.warnings.is_empty() {
        Value::Null
    } else {
        json!(written.warnings)
    };
    Ok(Json(json!({"Warnings": warnings})))
}

#[derive(Debug, Deserialize)]
struct TasksQuery {
    filters: Option<String>,
}

async fn tasks(
    State(st): State<AppState>,
    Query(q): Query<TasksQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let filters = Filters::parse(q.filters.as_deref())?;
    only(
        &filters,
        &[
            "id",
            "name",
            "label",
            "service",
            "node",
            "desired-state",
            "_up-to-date",
        ],
    )?;
    let desired_states = filters
        .get("desired-state")
        .iter()
        .map(|s| match TaskState::parse(s) {
            Some(st @ (TaskState::Running | TaskState::Shutdown | TaskState::Accepted)) => Ok(st),
            _ => Err(ApiError::BadRequest(format!(
                "Invalid desired-state filter: '{s}'"
            ))),
        })
        .collect::<Result<_, _>>()?;
    let f = TaskFilters {
        services: filters.get("service"),
        nodes: filters.get("node"),
        desired_states,
        names: filters.get("name"),
        ids: filters.get("id"),
        labels: filters.get("label"),
        up_to_date: filters.get("_up-to-date").iter().any(|v| v == "true"),
    };
    let views = services(&st).tasks(&f)?;
    Ok(Json(views.iter().map(task_json).collect()))
}

async fn task(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(task_json(&services(&st).task(&id)?)))
}

fn distribution_json(d: &Distribution) -> Value {
    let platforms: Vec<Value> = d
        .platforms
        .iter()
        .map(|(arch, os, variant)| {
            let mut p = json!({"architecture": arch, "os": os});
            if let Some(v) = variant.as_deref().filter(|v| !v.is_empty()) {
                p["variant"] = json!(v);
            }
            p
        })
        .collect();
    json!({
        "Descriptor": {"mediaType": d.media_type, "digest": d.digest, "size": d.size},
        "Platforms": platforms,
    })
}

async fn distribution(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let Some(name) = rest.strip_suffix("/json") else {
        return Err(ApiError::NotFound(format!(
            "page not found: /distribution/{rest}"
        )));
    };
    let creds = credentials(&headers)?;
    let d = services(&st).distribution(name, &creds).await?;
    Ok(Json(distribution_json(&d)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_orchestrator::{Service, ServiceSpec, Task, TaskStatus};

    fn view(spec: Value) -> ServiceView {
        ServiceView {
            spec: ServiceSpec::from_docker(&spec).unwrap(),
            virtual_ips: Vec::new(),
            service: Service {
                id: "svc".into(),
                spec,
                previous_spec: None,
                registry_auth: None,
                image: "busybox:latest@sha256:aa".into(),
                version: 11,
                created_at: 1_764_550_000_123_456_000,
                updated_at: 1_764_550_000_123_456_000,
                job_iteration: 0,
                template_version: 0,
                previous_image: None,
                previous_template_version: None,
                update_status: None,
                dynamic_ports: Vec::new(),
            },
            counts: None,
        }
    }

    #[test]
    fn service_json_has_dockerds_shape() {
        let v = view(json!({"Name": "web", "Labels": {},
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest", "Args": ["top"], "Init": false, "DNSConfig": {}},
                             "Resources": {"Limits": {}, "Reservations": {}}, "Placement": {}, "ForceUpdate": 0},
            "Mode": {"Replicated": {"Replicas": 2}}, "EndpointSpec": {"Mode": "vip"}}));
        let mut v = v;
        v.service.registry_auth = Some(berth_orchestrator::RegistryAuth {
            username: "someone".into(),
            password: "s3cret-pw".into(),
        });
        let j = service_json(&v, false);
        assert!(
            !j.to_string().contains("s3cret-pw"),
            "registry credentials never leave through the API: {j}"
        );
        assert_eq!(j["ID"], "svc");
        assert_eq!(j["Version"]["Index"], 11);
        assert_eq!(j["CreatedAt"], "2025-12-01T00:46:40.123456Z");
        assert_eq!(
            j["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
            "busybox:latest@sha256:aa"
        );
        assert_eq!(
            j["Spec"]["TaskTemplate"]["ContainerSpec"]["Isolation"],
            "default"
        );
        assert_eq!(j["Spec"]["TaskTemplate"]["Runtime"], "container");
        assert_eq!(j["Endpoint"], json!({"Spec": {}}));
        assert!(j.get("ServiceStatus").is_none());
        assert!(j.get("PreviousSpec").is_none());
        assert!(j["Spec"].get("UpdateConfig").is_none());
        let j = service_json(&v, true);
        assert_eq!(
            j["Spec"]["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"],
            10_000_000_000u64
        );
        assert_eq!(
            j["Spec"]["TaskTemplate"]["RestartPolicy"],
            json!({"Condition": "any", "Delay": 5_000_000_000u64, "MaxAttempts": 0})
        );
        assert_eq!(j["Spec"]["UpdateConfig"]["Order"], "stop-first");
        assert_eq!(j["Spec"]["RollbackConfig"]["FailureAction"], "pause");
    }

    #[test]
    fn host_ports_show_in_the_endpoint() {
        let v = view(
            json!({"Name": "hp", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
            "Mode": {"Global": {}},
            "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}]}}),
        );
        let j = service_json(&v, false);
        let port = json!({"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"});
        assert_eq!(
            j["Endpoint"],
            json!({"Spec": {"Mode": "vip", "Ports": [port.clone()]}, "Ports": [port]})
        );
    }

    #[test]
    fn task_json_has_dockerds_shape() {
        let mut status = TaskStatus::new(TaskState::Running, 2_000_000_000, "started");
        status.container_id = Some("c1".into());
        status.pid = Some(42);
        let t = TaskView {
            task: Task {
                id: "t1".into(),
                service_id: "svc".into(),
                slot: 2,
                node_id: Some(10),
                service_version: 11,
                image: "busybox:latest@sha256:aa".into(),
                job_iteration: 0,
                restart_times: Vec::new(),
                template_version: 0,
                running_at: None,
                desired_state: TaskState::Running,
                status,
                created_at: 1_000_000_000,
                version: 14,
            },
            template: json!({"ContainerSpec": {"Image": "busybox:latest@sha256:aa"}}),
            node_id: Some("000000000000000a".into()),
            global: false,
            ports: Vec::new(),
            networks: Vec::new(),
        };
        let j = task_json(&t);
        assert!(j.get("NetworksAttachments").is_none());
        assert_eq!(j["Slot"], 2);
        assert_eq!(j["NodeID"], "000000000000000a");
        assert_eq!(j["DesiredState"], "running");
        assert_eq!(j["Labels"], json!({}));
        assert_eq!(j["Status"]["State"], "running");
        assert_eq!(
            j["Status"]["ContainerStatus"],
            json!({"ContainerID": "c1", "PID": 42, "ExitCode": 0})
        );
        assert_eq!(j["Status"]["PortStatus"], json!({}));
        assert!(j["Status"].get("Err").is_none());
        assert_eq!(j["UpdatedAt"], "1970-01-01T00:00:02Z");
        let port = json!({"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"});
        let mut p = t.clone();
        p.ports = vec![port.clone()];
        assert_eq!(
            task_json(&p)["Status"]["PortStatus"],
            json!({"Ports": [port]})
        );
        let mut g = t.clone();
        g.global = true;
        g.node_id = None;
        g.task.node_id = None;
        let j = task_json(&g);
        assert!(j.get("Slot").is_none());
        assert!(j.get("NodeID").is_none());
    }
}
