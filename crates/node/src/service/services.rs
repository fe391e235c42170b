//! Swarm services and tasks as the Engine API serves them: `docker service
//! create/ls/inspect/update/rm`, `docker service ps`, `docker node ps`, and the image digest
//! resolution that pins every task of a service to the same bytes.
//!
//! Owns: validation of a service spec before anything is written (the orchestration part
//! through `berth_orchestrator::ServiceSpec::from_docker`, the container part through a dry
//! run of [`task_container`]), resolving a spec's image to `name:tag@digest` on its
//! registry, the lookups by id, id prefix or name, the list filters, and the wording of the
//! cluster's refusals as dockerd words them.
//!
//! Does not own: the replicated objects and their rules (`berth-consensus` applies the
//! commands), orchestration (the leader loop), running tasks (the agent), HTTP shapes
//! (api/services.rs).
//!
//! ```text
//!  create/update ─> from_docker + task_container dry run ─> resolve image ─> ClusterService::write
//!                                                             (registry)      (forwarded to the leader)
//!  list/inspect/tasks ─> this node's replica (any node, worker too)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_consensus::{ClusterNode, ClusterState, Command, ConsensusError, Rejection, Response};
use berth_orchestrator::{
    Nanos, RegistryAuth, Service, ServiceMode, ServiceSpec, Task, TaskState, TaskStatus,
};
use berth_registry_mirror::client::Repository;
use berth_registry_mirror::{Credentials, Error as ImageError, Reference};
use serde_json::Value;

use crate::error::ServiceError;
use crate::service::cluster::{cluster_error, node_id_str, ClusterService};
use crate::service::images::{image_error, ImageService};
use crate::service::task_spec::task_container;

/// dockerd's warning when a service's image could not be pinned to a digest.
fn unpinned_warning(image: &str) -> String {
    format!(
        "image {image} could not be accessed on a registry to record\nits digest. Each node will access {image} independently,\npossibly leading to different nodes running different\nversions of the image.\n"
    )
}

/// Docker's task counts of a service (`GET /services?status=true`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceCounts {
    /// Tasks whose observed state is `running`.
    pub running: u64,
    /// Tasks that should run: the replicas (replicated), the tasks to run on eligible
    /// nodes (global), the tasks a job still runs at once (jobs).
    pub desired: u64,
    /// Tasks that completed (jobs).
    pub completed: u64,
}

/// One service with what the API shows beside it.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// The replicated object.
    pub service: Service,
    /// The parsed orchestration view of its spec.
    pub spec: ServiceSpec,
    /// Task counts, when asked for.
    pub counts: Option<ServiceCounts>,
    /// Its virtual IPs as Swarm's `Endpoint.VirtualIPs` shows them: (network id,
    /// `address/prefix length`), one per network (none for `dnsrr`); the predefined `host`
    /// and `bridge` networks have no address (`None`), as in Swarm.
    pub virtual_ips: Vec<(String, Option<String>)>,
}

/// The virtual IPs of service `id` in the replicated state, ordered by network id.
fn virtual_ips(s: &ClusterState, id: &str) -> Vec<(String, Option<String>)> {
    let mut v: Vec<(String, Option<String>)> = s
        .service_vips(id)
        .filter_map(|e| {
            let net = s.networks.get(&e.network_id)?;
            Some((
                e.network_id.clone(),
                Some(format!("{}/{}", e.ip, net.subnet_net().len)),
            ))
        })
        .collect();
    if let Some(svc) = s
        .services
        .get(id)
        .filter(|svc| !berth_consensus::state::is_dnsrr(&svc.spec))
    {
        v.extend(
            s.service_predefined_networks(&svc.spec)
                .into_iter()
                .map(|(_, net)| (net, None)),
        );
    }
    v.sort();
    v
}

/// One task with what the API shows beside it.
#[derive(Debug, Clone)]
pub struct TaskView {
    /// The replicated object.
    pub task: Task,
    /// The `TaskTemplate` of its service's spec (`null` when the service is gone).
    pub template: Value,
    /// Docker-style id of its node.
    pub node_id: Option<String>,
    /// Global services have no slot in Docker's JSON.
    pub global: bool,
    /// `Status.PortStatus.Ports` of a running task: its service's host-mode published
    /// ports with a fixed published port (bound by the container on its node).
    pub ports: Vec<Value>,
    /// Swarm's `NetworksAttachments`: each overlay the task is on, with its address
    /// (`address/prefix length`), allocated with its assignment.
    pub networks: Vec<(berth_consensus::state::Network, String)>,
}

/// List filters of `GET /services`, already validated.
#[derive(Debug, Clone, Default)]
pub struct ServiceFilters {
    /// Id prefixes.
    pub ids: Vec<String>,
    /// Name prefixes.
    pub names: Vec<String>,
    /// `key` or `key=value` on the spec's `Labels`.
    pub labels: Vec<String>,
    /// `replicated`, `global`, `replicated-job`, `global-job`.
    pub modes: Vec<String>,
}

/// List filters of `GET /tasks`, already validated.
#[derive(Debug, Clone, Default)]
pub struct TaskFilters {
    /// Service ids, id prefixes or names.
    pub services: Vec<String>,
    /// Node ids, id prefixes or hostnames.
    pub nodes: Vec<String>,
    /// Desired states (`running`, `shutdown`, `accepted`).
    pub desired_states: Vec<TaskState>,
    /// Task name prefixes (`web.1`).
    pub names: Vec<String>,
    /// Task id prefixes.
    pub ids: Vec<String>,
    /// `key` or `key=value` on the labels of the task's service (swarmkit's
    /// `ServiceAnnotations`).
    pub labels: Vec<String>,
    /// `_up-to-date=true` (the docker CLI's progress display): only tasks created from
    /// their service's current spec version.
    pub up_to_date: bool,
}

/// What create and update answer besides the id: dockerd's warnings.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// The service id.
    pub id: String,
    /// Warnings (an image that could not be pinned).
    pub warnings: Vec<String>,
}

/// Services and tasks of the cluster this node is part of.
#[derive(Debug, Clone)]
pub struct ServicesService {
    cluster: ClusterService,
    images: ImageService,
    /// This node's local networks: a service naming one is refused as dockerd does.
    local_networks: Option<crate::service::networks::NetworkService>,
}

/// Swarm's id shape: 25 characters `[0-9a-z]`, the base-36 digits of a random 128-bit
/// number, left-padded with zeros.
pub fn new_object_id() -> String {
    let mut n: u128 = rand::random();
    let mut digits = Vec::with_capacity(25);
    while n > 0 {
        let d = (n % 36) as u8;
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
    }
    while digits.len() < 25 {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

fn now_nanos() -> Nanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as Nanos)
}

/// The service's name (`Spec.Name`).
pub fn spec_name(spec: &Value) -> &str {
    spec.get("Name").and_then(Value::as_str).unwrap_or("")
}

/// The image the spec asks for (`TaskTemplate.ContainerSpec.Image`).
pub fn spec_image(spec: &Value) -> &str {
    spec.pointer("/TaskTemplate/ContainerSpec/Image")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The mode's name as the `mode` filter and `docker service ls` spell it.
pub fn mode_name(mode: &ServiceMode) -> &'static str {
    match mode {
        ServiceMode::Replicated { .. } => "replicated",
        ServiceMode::Global => "global",
        ServiceMode::ReplicatedJob { .. } => "replicated-job",
        ServiceMode::GlobalJob => "global-job",
    }
}

fn spec_error(e: berth_orchestrator::spec::SpecError) -> ServiceError {
    let msg = e.to_string();
    // swarmkit's validation errors reach the client through gRPC, as dockerd shows them.
    if msg.starts_with("name must") {
        ServiceError::invalid(format!("rpc error: code = InvalidArgument desc = {msg}"))
    } else {
        ServiceError::invalid(msg)
    }
}

/// Whether `labels` (`key` or `key=value` filters) all hold on `have`.
pub fn labels_match(filters: &[String], have: &BTreeMap<String, String>) -> bool {
    filters.iter().all(|l| match l.split_once('=') {
        Some((k, v)) => have.get(k).is_some_and(|x| x == v),
        None => have.contains_key(l.as_str()),
    })
}

fn spec_labels(spec: &Value) -> BTreeMap<String, String> {
    spec.get("Labels")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Renames `keys` of `obj` to their canonical spelling where they match it only
/// case-insensitively (Go's JSON decoding, which dockerd uses, matches field names that
/// way; docker-py sends `{"replicated": {"Replicas": 2}}`).
fn canonical_keys(obj: &mut serde_json::Map<String, Value>, keys: &[&str]) {
    let found: Vec<(String, &str)> = obj
        .keys()
        .filter_map(|k| {
            let canon = keys
                .iter()
                .find(|c| c.eq_ignore_ascii_case(k) && **c != k)?;
            Some((k.clone(), *canon))
        })
        .collect();
    for (k, canon) in found {
        if !obj.contains_key(canon) {
            if let Some(v) = obj.remove(&k) {
                obj.insert(canon.to_string(), v);
            }
        }
    }
}

/// The spec with the keys dockerd would decode case-insensitively spelled as Docker
/// spells them: the top level and `Mode` (what clients are known to send in another
/// case). User data (label keys, options) is never touched.
pub fn normalize_spec(mut spec: Value) -> Value {
    if let Some(o) = spec.as_object_mut() {
        canonical_keys(
            o,
            &[
                "Name",
                "Labels",
                "TaskTemplate",
                "Mode",
                "UpdateConfig",
                "RollbackConfig",
                "Networks",
                "EndpointSpec",
            ],
        );
        if let Some(mode) = o.get_mut("Mode").and_then(Value::as_object_mut) {
            canonical_keys(
                mode,
                &["Replicated", "Global", "ReplicatedJob", "GlobalJob"],
            );
            for m in mode.values_mut().filter_map(Value::as_object_mut) {
                canonical_keys(m, &["Replicas", "MaxConcurrent", "TotalCompletions"]);
            }
        }
    }
    spec
}

/// Validates a spec as create and update need it: the orchestration part, then a dry run
/// of a task's container (what its create body would be refused for), on the node's
/// network when `host_network` (the spec names the predefined `host` network).
pub fn validate_spec(spec: &Value, host_network: bool) -> Result<ServiceSpec, ServiceError> {
    if !spec.is_object() {
        return Err(ServiceError::invalid(
            "the service spec must be a JSON object",
        ));
    }
    let parsed = ServiceSpec::from_docker(spec).map_err(spec_error)?;
    let image = spec_image(spec);
    if image.is_empty() {
        return Err(ServiceError::invalid(
            "rpc error: code = InvalidArgument desc = ContainerSpec: image reference must be provided",
        ));
    }
    ImageService::parse_reference(image)?;
    let service = Service {
        id: "0".repeat(25),
        spec: spec.clone(),
        previous_spec: None,
        registry_auth: None,
        image: image.to_string(),
        version: 0,
        created_at: 0,
        updated_at: 0,
        job_iteration: 0,
        template_version: 0,
        previous_image: None,
        previous_template_version: None,
        update_status: None,
        dynamic_ports: Vec::new(),
    };
    let slot = match parsed.mode {
        ServiceMode::Global | ServiceMode::GlobalJob => 0,
        _ => 1,
    };
    let task = Task {
        id: "0".repeat(25),
        service_id: service.id.clone(),
        slot,
        node_id: Some(1),
        service_version: 0,
        image: image.to_string(),
        job_iteration: 0,
        restart_times: Vec::new(),
        template_version: 0,
        running_at: None,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::New, 0, ""),
        created_at: 0,
        version: 0,
    };
    let network = if host_network {
        super::task_spec::TaskNetworkMode::Host
    } else {
        super::task_spec::TaskNetworkMode::DefaultBridge
    };
    task_container(&service, &task, &node_id_str(1), network)?;
    Ok(parsed)
}

impl ServicesService {
    /// Services over this berthd's cluster membership and image service (the registry
    /// client that resolves digests).
    pub fn new(cluster: ClusterService, images: ImageService) -> Self {
        ServicesService {
            cluster,
            images,
            local_networks: None,
        }
    }

    /// Also consults this node's local networks when resolving a service's networks.
    pub fn with_local_networks(
        mut self,
        networks: crate::service::networks::NetworkService,
    ) -> Self {
        self.local_networks = Some(networks);
        self
    }

    /// Resolves each `Networks[].Target` of the spec (`TaskTemplate.Networks`, else the
    /// deprecated top-level list) to the swarm network's id, as dockerd's
    /// `populateNetworkID` does; `host` and `bridge` resolve to the swarm's predefined
    /// networks (`berth_consensus::state::PredefinedNetwork`). Errors: another local network
    /// (403, dockerd's "cannot be used with services" text); no such network, `none`
    /// among them (404, "network X not found").
    async fn resolve_networks(&self, spec: &mut Value) -> Result<(), ServiceError> {
        let pointer = if spec
            .pointer("/TaskTemplate/Networks")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            "/TaskTemplate/Networks"
        } else {
            "/Networks"
        };
        let Some(list) = spec.pointer(pointer).and_then(Value::as_array).cloned() else {
            return Ok(());
        };
        let local = match &self.local_networks {
            Some(n) => Some(n.state().await),
            None => None,
        };
        let mut resolved = Vec::new();
        for mut n in list {
            let target = n
                .get("Target")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let found = self.read(|s| {
                s.network_by_ref(&target)
                    .map(|n| n.id.clone())
                    .or_else(|| s.predefined_network(&target).map(|(_, id)| id))
            })?;
            let id = match found {
                Some(id) => id,
                // The CLI sends a local network's id (it looks the name up first): a
                // predefined one stands for the swarm's network of that name, as in
                // dockerd's `populateNetworkID`; `none` has no swarm counterpart.
                None => {
                    let ln = local.as_ref().and_then(|l| l.find_network(&target).ok());
                    // The namespace-mode networks are no records of the local state.
                    let name = match (&ln, target.as_str()) {
                        (Some(ln), _) => ln.name.as_str(),
                        (None, crate::service::networks::HOST_NETWORK_ID) => "host",
                        (None, crate::service::networks::NONE_NETWORK_ID) => "none",
                        (None, t) => t,
                    };
                    match self.read(|s| s.predefined_network(name))? {
                        Some((_, id)) => id,
                        None if name == "none" => {
                            return Err(ServiceError::not_found("network none not found"))
                        }
                        None => {
                            if let Some(ln) = ln {
                                return Err(ServiceError::Forbidden {
                                    message: format!(
                                        "The network {} cannot be used with services. Only networks scoped to the swarm can be used, such as those created with the overlay driver.",
                                        ln.name
                                    ),
                                });
                            }
                            return Err(ServiceError::not_found(format!(
                                "network {target} not found"
                            )));
                        }
                    }
                }
            };
            // The node's own networks have no service discovery: an alias there would
            // name nothing.
            let aliased = n
                .get("Aliases")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            let predefined = self.read(|s| s.predefined_network(&id).map(|(p, _)| p.name()))?;
            if let (true, Some(name)) = (aliased, predefined) {
                return Err(ServiceError::invalid(format!(
                    "network aliases are not supported on the {name} network: it has no service discovery (use an overlay network)"
                )));
            }
            n["Target"] = Value::String(id);
            resolved.push(n);
        }
        if let Some(slot) = spec.pointer_mut(pointer) {
            *slot = Value::Array(resolved);
        }
        Ok(())
    }

    fn node(&self) -> Result<Arc<ClusterNode>, ServiceError> {
        self.cluster.member()
    }

    fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> Result<T, ServiceError> {
        Ok(self.node()?.state_view().read(f))
    }

    /// Commits `command`, wording the cluster's refusals as dockerd does.
    async fn write(&self, command: Command) -> Result<Response, ServiceError> {
        self.cluster.commit_with(command, rejection_error).await
    }

    /// swarmkit's controlapi (`CreateService`, `UpdateService`): a spec that publishes a
    /// port in ingress mode (the routing mesh) needs the ingress network; without one (the
    /// user removed it) it is refused with swarmkit's FailedPrecondition text instead of
    /// being accepted with a port that nothing publishes.
    fn refuse_without_ingress(&self, spec: &Value) -> Result<(), ServiceError> {
        let wants_mesh = berth_consensus::state::spec_ports(spec)
            .iter()
            .any(|p| p.ingress);
        if wants_mesh && self.read(|s| s.ingress_network().is_none())? {
            return Err(ServiceError::invalid(
                "rpc error: code = FailedPrecondition desc = service needs ingress network, but no ingress network is present",
            ));
        }
        Ok(())
    }

    /// `POST /services/create`: validates, pins the image, commits. A spec without a name
    /// gets a random one (as dockerd names it).
    pub async fn create(
        &self,
        spec: Value,
        credentials: Credentials,
    ) -> Result<Written, ServiceError> {
        self.node()?;
        refuse_bare_token(&credentials)?;
        let mut spec = normalize_spec(spec);
        if spec_name(&spec).is_empty() {
            if let Some(o) = spec.as_object_mut() {
                let seed: [u8; 8] = rand::random();
                let name =
                    crate::service::containers::names::NameIndex::default().generate_name(&seed);
                o.insert("Name".into(), Value::String(name));
            }
        }
        self.resolve_networks(&mut spec).await?;
        let host_network = self.read(|s| s.service_uses_host_network(&spec))?;
        validate_spec(&spec, host_network)?;
        self.refuse_without_ingress(&spec)?;
        let name = spec_name(&spec).to_string();
        if self.read(|s| name_taken(s, &name, None))? {
            return Err(name_conflict(&name));
        }
        let (image, warnings) = self.resolve_image(spec_image(&spec), &credentials).await?;
        let now = now_nanos();
        let service = Service {
            id: new_object_id(),
            spec,
            previous_spec: None,
            registry_auth: registry_auth(&credentials),
            image,
            version: 0,
            created_at: now,
            updated_at: now,
            job_iteration: 0,
            template_version: 0,
            previous_image: None,
            previous_template_version: None,
            update_status: None,
            dynamic_ports: Vec::new(),
        };
        match self.write(Command::CreateService { service }).await? {
            Response::Service { service } => Ok(Written {
                id: service.id,
                warnings,
            }),
            other => Err(ServiceError::Cluster(format!(
                "unexpected answer to a service create: {other:?}"
            ))),
        }
    }

    /// One service by full id, exact name, or unique id prefix (dockerd's order).
    pub fn inspect(&self, key: &str) -> Result<ServiceView, ServiceError> {
        let (service, virtual_ips) = self.read(|s| {
            find_service(s, key).map(|svc| {
                let vips = virtual_ips(s, &svc.id);
                (svc, vips)
            })
        })??;
        let spec = ServiceSpec::from_docker(&service.spec).map_err(spec_error)?;
        Ok(ServiceView {
            service,
            spec,
            counts: None,
            virtual_ips,
        })
    }

    /// `GET /services`: services matching every filter, with task counts when `status`.
    pub fn list(
        &self,
        filters: &ServiceFilters,
        status: bool,
    ) -> Result<Vec<ServiceView>, ServiceError> {
        // Members that are up, as `node ls` shows them.
        let active: std::collections::HashSet<berth_consensus::NodeId> = if status {
            self.cluster
                .nodes()?
                .into_iter()
                .filter(|n| n.reachable)
                .map(|n| n.record.id)
                .collect()
        } else {
            Default::default()
        };
        let (services, tasks) = self.read(|s| {
            let tasks: Vec<Task> = if status {
                s.tasks.values().cloned().collect()
            } else {
                Vec::new()
            };
            (
                s.services
                    .values()
                    .map(|svc| (svc.clone(), virtual_ips(s, &svc.id)))
                    .collect::<Vec<_>>(),
                tasks,
            )
        })?;
        let mut out = Vec::new();
        for (service, virtual_ips) in services {
            // A spec stored by the cluster was validated at create; one that no longer
            // parses (a newer rule) is still listed, as replicated with what it asks.
            let Ok(spec) = ServiceSpec::from_docker(&service.spec) else {
                continue;
            };
            let name = spec_name(&service.spec);
            let keep = (filters.ids.is_empty()
                || filters
                    .ids
                    .iter()
                    .any(|i| service.id.starts_with(i.as_str())))
                && (filters.names.is_empty()
                    || filters.names.iter().any(|n| name.starts_with(n.as_str())))
                && (filters.modes.is_empty()
                    || filters.modes.iter().any(|m| m == mode_name(&spec.mode)))
                && labels_match(&filters.labels, &spec_labels(&service.spec));
            if !keep {
                continue;
            }
            let counts = status.then(|| counts(&service, &spec, &tasks, &active));
            out.push(ServiceView {
                service,
                spec,
                counts,
                virtual_ips,
            });
        }
        out.sort_by_key(|a| a.service.created_at);
        Ok(out)
    }

    /// `POST /services/{id}/update`: a replacement spec checked against `version`
    /// (`update out of sequence` when stale). With `rollback`, the previous spec is
    /// restored instead of `spec`. The image is resolved again when the spec changes it.
    pub async fn update(
        &self,
        key: &str,
        version: u64,
        spec: Value,
        rollback: bool,
        credentials: Credentials,
    ) -> Result<Written, ServiceError> {
        refuse_bare_token(&credentials)?;
        let current = self.read(|s| find_service(s, key))??;
        if rollback {
            // swarmkit's manual rollback: the previous spec, pinned image and template
            // come back as they were (no new resolution), `UpdateStatus` says so and the
            // orchestrator rolls the tasks back paced by `RollbackConfig`.
            if current.previous_spec.is_none() {
                return Err(no_previous_spec(&current.id));
            }
            self.write(Command::RollbackService {
                id: current.id.clone(),
                expected_version: version,
                at: now_nanos(),
            })
            .await?;
            return Ok(Written {
                id: current.id,
                warnings: Vec::new(),
            });
        }
        let mut spec = normalize_spec(spec);
        self.resolve_networks(&mut spec).await?;
        let host_network = self.read(|s| s.service_uses_host_network(&spec))?;
        validate_spec(&spec, host_network)?;
        self.refuse_without_ingress(&spec)?;
        // New credentials replace the stored ones; without any, the service's own are
        // used (the CLI's `registryAuthFrom=spec`).
        let new_auth = registry_auth(&credentials);
        let credentials = match new_auth {
            Some(_) => credentials,
            None => pull_credentials(&current),
        };
        let new_image = spec_image(&spec);
        let (image, warnings) =
            if new_image == current.image || new_image == spec_image(&current.spec) {
                (current.image.clone(), Vec::new())
            } else {
                self.resolve_image(new_image, &credentials).await?
            };
        let command = Command::UpdateService {
            id: current.id.clone(),
            expected_version: version,
            spec,
            image,
            at: now_nanos(),
            registry_auth: new_auth,
        };
        self.write(command).await?;
        Ok(Written {
            id: current.id,
            warnings,
        })
    }

    /// `DELETE /services/{id}`: the service goes, its tasks are removed by their agents.
    pub async fn remove(&self, key: &str) -> Result<(), ServiceError> {
        let current = self.read(|s| find_service(s, key))??;
        self.write(Command::RemoveService { id: current.id })
            .await
            .map(|_| ())
    }

    /// `GET /tasks`: tasks matching every filter. Service and node filters name objects
    /// that must exist (dockerd answers 404 otherwise).
    pub fn tasks(&self, filters: &TaskFilters) -> Result<Vec<TaskView>, ServiceError> {
        let node_ids: Vec<u64> = filters
            .nodes
            .iter()
            .map(|n| self.cluster.node_view(n).map(|v| v.record.id))
            .collect::<Result<_, _>>()?;
        let views = self.read(|s| -> Result<Vec<TaskView>, ServiceError> {
            let service_ids: Vec<String> = filters
                .services
                .iter()
                .map(|k| find_service(s, k).map(|svc| svc.id))
                .collect::<Result<_, _>>()?;
            let mut out = Vec::new();
            for task in s.tasks.values() {
                let service = s.services.get(&task.service_id);
                let name = task_name(service, task);
                let keep = (service_ids.is_empty() || service_ids.contains(&task.service_id))
                    && (node_ids.is_empty() || task.node_id.is_some_and(|n| node_ids.contains(&n)))
                    && (filters.desired_states.is_empty()
                        || filters.desired_states.contains(&task.desired_state))
                    && (filters.names.is_empty()
                        || filters.names.iter().any(|n| name.starts_with(n.as_str())))
                    && (filters.ids.is_empty()
                        || filters.ids.iter().any(|i| task.id.starts_with(i.as_str())))
                    // swarmkit matches a task's `ServiceAnnotations.Labels` (`docker
                    // stack ps` lists by `com.docker.stack.namespace`).
                    && (filters.labels.is_empty()
                        || labels_match(
                            &filters.labels,
                            &service.map(|svc| spec_labels(&svc.spec)).unwrap_or_default(),
                        ))
                    && (!filters.up_to_date || service.is_some_and(|svc| up_to_date(svc, task)));
                if keep {
                    out.push(task_view(s, service, task));
                }
            }
            Ok(out)
        })??;
        Ok(views)
    }

    /// `GET /tasks/{id}`: by full id, then name, then unique id prefix.
    pub fn task(&self, key: &str) -> Result<TaskView, ServiceError> {
        self.read(|s| {
            if let Some(t) = s.tasks.get(key) {
                return Ok(task_view(s, s.services.get(&t.service_id), t));
            }
            let by_name: Vec<&Task> = s
                .tasks
                .values()
                .filter(|t| task_name(s.services.get(&t.service_id), t) == key)
                .collect();
            let matches = if by_name.is_empty() {
                s.tasks
                    .values()
                    .filter(|t| !key.is_empty() && t.id.starts_with(key))
                    .collect()
            } else {
                by_name
            };
            match matches.as_slice() {
                [t] => Ok(task_view(s, s.services.get(&t.service_id), t)),
                [] => Err(ServiceError::not_found(format!("task {key} not found"))),
                many => Err(ServiceError::invalid(format!(
                    "task {key} is ambiguous ({} matches found)",
                    many.len()
                ))),
            }
        })?
    }

    /// The image pinned to its registry digest (`name:tag@sha256:...`), with dockerd's
    /// warnings. A reference with a digest is kept. When the registry says the image does
    /// not exist, a local image of that name is used (pinned to its local repo digest when
    /// it has one); otherwise the create is refused (400, nothing written). When the
    /// registry cannot be reached, the local image's digest pins it if there is one, else
    /// the reference is kept unpinned with dockerd's warning.
    pub async fn resolve_image(
        &self,
        image: &str,
        credentials: &Credentials,
    ) -> Result<(String, Vec<String>), ServiceError> {
        let reference = ImageService::parse_reference(image)?;
        if reference.digest().is_some() {
            return Ok((image.to_string(), Vec::new()));
        }
        let tag = reference.tag().unwrap_or("latest").to_string();
        let familiar = format!("{}:{tag}", reference.familiar_name());
        match self.manifest_digest(&reference, credentials).await {
            Ok(digest) => Ok((format!("{familiar}@{digest}"), Vec::new())),
            Err(e) => {
                let local = self.local_pin(&reference, &familiar);
                let not_there = matches!(
                    e,
                    ImageError::ManifestNotFound { .. } | ImageError::Unauthorized { .. }
                ) || matches!(e, ImageError::RegistryStatus { status: 404, .. });
                match (local, not_there) {
                    (Some(pinned), _) => {
                        tracing::info!(%image, error = %e, "registry did not resolve the image; using the local one");
                        Ok((pinned, vec![unpinned_warning(&familiar)]))
                    }
                    (None, true) => Err(ServiceError::invalid(format!(
                        "No such image: {familiar}: the registry has no manifest for it ({})",
                        image_error(e)
                    ))),
                    (None, false) => {
                        tracing::warn!(%image, error = %e, "registry unreachable; service image left unpinned");
                        Ok((familiar.clone(), vec![unpinned_warning(&familiar)]))
                    }
                }
            }
        }
    }

    /// The digest of `reference`'s manifest (the index for a multi-platform image) on its
    /// registry.
    async fn manifest_digest(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<String, ImageError> {
        let repo = Repository {
            host: reference.registry_host().to_string(),
            path: reference.path().to_string(),
            credentials: credentials.clone(),
        };
        let m = self
            .images
            .images
            .client
            .get_manifest(&repo, &reference.manifest_reference())
            .await?;
        Ok(m.digest.to_string())
    }

    /// A local image of that name, pinned to its repo digest when it has one for the same
    /// repository; the name alone when it has none.
    fn local_pin(&self, reference: &Reference, familiar: &str) -> Option<String> {
        let details = self.images.inspect(familiar).ok()?;
        let prefix = format!("{}@", reference.familiar_name());
        let digest = details
            .repo_digests
            .iter()
            .find_map(|d| d.strip_prefix(&prefix).map(str::to_string));
        Some(match digest {
            Some(d) => format!("{familiar}@{d}"),
            None => familiar.to_string(),
        })
    }

    /// `GET /distribution/{name}/json`: the registry's descriptor of `name` and the
    /// platforms it offers (the index's entries, or the one image's config os/arch).
    pub async fn distribution(
        &self,
        name: &str,
        credentials: &Credentials,
    ) -> Result<Distribution, ServiceError> {
        let reference = ImageService::parse_reference(name)?;
        let repo = Repository {
            host: reference.registry_host().to_string(),
            path: reference.path().to_string(),
            credentials: credentials.clone(),
        };
        let client = &self.images.images.client;
        let fetched = client
            .get_manifest(&repo, &reference.manifest_reference())
            .await
            .map_err(|e| distribution_error(e, credentials))?;
        let manifest = berth_registry_mirror::manifest::Manifest::parse(
            &fetched.body,
            fetched.content_type.as_deref(),
            &fetched.digest,
        )
        .map_err(image_error)?;
        let media_type = manifest.media_type().to_string();
        let platforms = match &manifest {
            berth_registry_mirror::manifest::Manifest::Index(i) => i
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| (p.architecture.clone(), p.os.clone(), p.variant.clone()))
                .collect(),
            berth_registry_mirror::manifest::Manifest::Image(m) => {
                let resp = client
                    .get_blob(&repo, &m.config.digest)
                    .await
                    .map_err(|e| distribution_error(e, credentials))?;
                let body = resp.bytes().await.map_err(|e| {
                    ServiceError::unavailable(format!("reading the image config: {e}"))
                })?;
                let cfg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let s = |k: &str| cfg.get(k).and_then(Value::as_str).map(str::to_string);
                match (s("architecture"), s("os")) {
                    (Some(a), Some(o)) => vec![(a, o, s("variant"))],
                    _ => Vec::new(),
                }
            }
        };
        Ok(Distribution {
            media_type,
            digest: fetched.digest.to_string(),
            size: fetched.body.len() as u64,
            platforms,
        })
    }
}

/// `GET /distribution/{name}/json`'s content.
#[derive(Debug, Clone)]
pub struct Distribution {
    /// The manifest's media type.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// (architecture, os, variant) of each platform offered.
    pub platforms: Vec<(String, String, Option<String>)>,
}

/// Registry failures of `/distribution` as dockerd 20.10 reports them: a missing
/// manifest is 404; credentials the registry refuses are 401 ("unauthorized:
/// authentication required"); none where some are needed is 500 (`Head "<url>": no
/// basic auth credentials`); an unreachable registry 500 with the transport error.
fn distribution_error(e: ImageError, credentials: &Credentials) -> ServiceError {
    match e {
        ImageError::Unauthorized { message, .. } if *credentials != Credentials::Anonymous => {
            ServiceError::Unauthorized { message }
        }
        e => image_error(e),
    }
}

/// swarmkit's answer to a rollback of a service never updated (controlapi `UpdateService`:
/// `codes.FailedPrecondition`, which dockerd answers with 400 and the gRPC text).
fn no_previous_spec(id: &str) -> ServiceError {
    ServiceError::invalid(format!(
        "rpc error: code = FailedPrecondition desc = service {id} does not have a previous spec"
    ))
}

fn name_conflict(name: &str) -> ServiceError {
    ServiceError::conflict(format!(
        "rpc error: code = AlreadyExists desc = name conflicts with an existing object: service {name} already exists"
    ))
}

/// The cluster's refusals of service commands, worded as dockerd words them.
fn rejection_error(r: Rejection) -> ServiceError {
    match r {
        Rejection::ServiceNameConflict { name } => name_conflict(&name),
        Rejection::ServiceVersion { .. } => {
            ServiceError::conflict("rpc error: code = Unknown desc = update out of sequence")
        }
        Rejection::ServiceNotFound { id } => {
            ServiceError::not_found(format!("service {id} not found"))
        }
        Rejection::NoPreviousSpec { id } => no_previous_spec(&id),
        r @ (Rejection::PortInUse { .. }
        | Rejection::DynamicPortsExhausted { .. }
        | Rejection::ObjectRefsNotFound { .. }) => {
            ServiceError::invalid(format!("rpc error: code = InvalidArgument desc = {r}"))
        }
        Rejection::ServiceRename { .. } => ServiceError::invalid(
            "rpc error: code = Unimplemented desc = renaming services is not supported",
        ),
        r => cluster_error(ConsensusError::Rejected(r)),
    }
}

/// Whether another service (case-insensitively, as swarmkit's store compares) has `name`.
fn name_taken(s: &ClusterState, name: &str, except: Option<&str>) -> bool {
    s.services.values().any(|svc| {
        Some(svc.id.as_str()) != except && spec_name(&svc.spec).eq_ignore_ascii_case(name)
    })
}

/// A service by full id, exact name, then unique id prefix (dockerd's `getService`).
fn find_service(s: &ClusterState, key: &str) -> Result<Service, ServiceError> {
    if let Some(svc) = s.services.get(key) {
        return Ok(svc.clone());
    }
    let by_name: Vec<&Service> = s
        .services
        .values()
        .filter(|svc| spec_name(&svc.spec) == key)
        .collect();
    let matches = if by_name.is_empty() {
        s.services
            .values()
            .filter(|svc| !key.is_empty() && svc.id.starts_with(key))
            .collect()
    } else {
        by_name
    };
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ServiceError::not_found(format!("service {key} not found"))),
        many => Err(ServiceError::invalid(format!(
            "service {key} is ambiguous ({} matches found)",
            many.len()
        ))),
    }
}

/// A task's name as Swarm shows it: `<service>.<slot>` (global: `<service>.<node id>`),
/// followed by `.<task id>`, so a prefix filter finds both forms.
fn task_name(service: Option<&Service>, task: &Task) -> String {
    let svc = service.map(|s| spec_name(&s.spec)).unwrap_or("");
    let slot = if task.slot == 0 {
        task.node_id.map(node_id_str).unwrap_or_default()
    } else {
        task.slot.to_string()
    };
    format!("{svc}.{slot}.{}", task.id)
}

/// Whether `task` runs its service's current task template (swarmkit's "not dirty"): it
/// was created from the service's current `template_version`, which the cluster state
/// bumps only when an update changes what a task runs (`TaskTemplate`, `--force`,
/// `EndpointSpec`, the pinned image), not on a scale.
/// A registry token (`registrytoken` in `X-Registry-Auth`) cannot be kept for a service:
/// the replicated service record holds a username and password only, and a token
/// expires. Refused by name rather than dropped (the service's nodes would pull
/// anonymously).
fn refuse_bare_token(credentials: &Credentials) -> Result<(), ServiceError> {
    match credentials {
        Credentials::BearerToken(_) => Err(ServiceError::invalid(
            "registrytoken credentials cannot be kept for a service's nodes: send a username and password (docker login) with --with-registry-auth",
        )),
        _ => Ok(()),
    }
}

/// The credentials a service keeps for its nodes' pulls: a username and password sent
/// with `X-Registry-Auth`; anonymous keeps none (a bare token is refused before, by
/// [`refuse_bare_token`]).
fn registry_auth(credentials: &Credentials) -> Option<RegistryAuth> {
    match credentials {
        Credentials::Basic { username, password } => Some(RegistryAuth {
            username: username.clone(),
            password: password.clone(),
        }),
        Credentials::Anonymous | Credentials::BearerToken(_) => None,
    }
}

/// The credentials a node pulls a service's image with (see [`registry_auth`]).
pub fn pull_credentials(service: &Service) -> Credentials {
    match &service.registry_auth {
        Some(auth) => Credentials::Basic {
            username: auth.username.clone(),
            password: auth.password.clone(),
        },
        None => Credentials::Anonymous,
    }
}

fn up_to_date(service: &Service, task: &Task) -> bool {
    task.template_version == service.template_version
}

fn task_view(state: &ClusterState, service: Option<&Service>, task: &Task) -> TaskView {
    let mut networks: Vec<(berth_consensus::state::Network, String)> = state
        .task_endpoints(&task.id)
        .filter_map(|e| {
            let net = state.networks.get(&e.network_id)?;
            Some((net.clone(), format!("{}/{}", e.ip, net.subnet_net().len)))
        })
        .collect();
    networks.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let mut template = service
        .and_then(|s| s.spec.get("TaskTemplate").cloned())
        .unwrap_or(Value::Null);
    if let Some(cs) = template
        .get_mut("ContainerSpec")
        .and_then(Value::as_object_mut)
    {
        cs.insert("Image".into(), Value::String(task.image.clone()));
    }
    let global = service
        .and_then(|s| ServiceSpec::from_docker(&s.spec).ok())
        .is_some_and(|s| matches!(s.mode, ServiceMode::Global | ServiceMode::GlobalJob));
    let ports = match service {
        Some(s) if task.status.state == TaskState::Running => s
            .spec
            .pointer("/EndpointSpec/Ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| {
                p.get("PublishMode").and_then(Value::as_str) == Some("host")
                    && p.get("PublishedPort").and_then(Value::as_u64).unwrap_or(0) != 0
            })
            .map(|p| {
                let mut p = p.clone();
                if let Some(o) = p.as_object_mut() {
                    o.entry("Protocol").or_insert(Value::String("tcp".into()));
                }
                p
            })
            .collect(),
        _ => Vec::new(),
    };
    TaskView {
        task: task.clone(),
        template,
        node_id: task.node_id.map(node_id_str),
        global,
        ports,
        networks,
    }
}

/// Docker's `ServiceStatus` of one service. `active`: the nodes that are members and up;
/// a task on any other node (down, left, removed) reports no more, so its last `running`
/// does not count (dockerd counts running tasks on active nodes only).
fn counts(
    service: &Service,
    spec: &ServiceSpec,
    tasks: &[Task],
    active: &std::collections::HashSet<berth_consensus::NodeId>,
) -> ServiceCounts {
    let mine = tasks.iter().filter(|t| t.service_id == service.id);
    let mut c = ServiceCounts::default();
    let mut desired_running = 0;
    for t in mine {
        if t.status.state == TaskState::Running && t.node_id.is_some_and(|n| active.contains(&n)) {
            c.running += 1;
        }
        if t.status.state == TaskState::Complete && t.job_iteration == service.job_iteration {
            c.completed += 1;
        }
        if t.desired_state == TaskState::Running {
            desired_running += 1;
        }
    }
    c.desired = match spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global | ServiceMode::GlobalJob => desired_running,
        ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } => max_concurrent.min(total_completions.saturating_sub(c.completed)),
    };
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mode_keys_are_decoded_case_insensitively_as_dockerd_does() {
        let spec = normalize_spec(json!({"name": "web", "Labels": {"keep": "x", "KEEP2": "y"},
            "Mode": {"replicated": {"replicas": 3}}}));
        assert_eq!(spec["Name"], "web");
        assert_eq!(spec["Mode"], json!({"Replicated": {"Replicas": 3}}));
        assert_eq!(spec["Labels"], json!({"keep": "x", "KEEP2": "y"}));
        let neg = normalize_spec(
            json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
            "Mode": {"replicated": {"Replicas": -1}}}),
        );
        assert!(validate_spec(&neg, false)
            .unwrap_err()
            .to_string()
            .contains("cannot unmarshal number -1"));
    }

    #[test]
    fn tasks_are_up_to_date_when_made_from_the_current_template_version() {
        let t = |template_version: u64| Task {
            id: "t".into(),
            service_id: "s".into(),
            slot: 1,
            node_id: Some(1),
            service_version: 5,
            image: "i".into(),
            job_iteration: 0,
            restart_times: Vec::new(),
            template_version,
            running_at: None,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Running, 0, ""),
            created_at: 0,
            version: 1,
        };
        let svc = Service {
            id: "s".into(),
            spec: json!({"Mode": {"Replicated": {"Replicas": 3}}}),
            previous_spec: None,
            registry_auth: None,
            image: "i".into(),
            version: 9,
            created_at: 0,
            updated_at: 0,
            job_iteration: 0,
            template_version: 7,
            previous_image: None,
            previous_template_version: None,
            update_status: None,
            dynamic_ports: Vec::new(),
        };
        assert!(
            up_to_date(&svc, &t(7)),
            "a later scale leaves tasks up to date"
        );
        assert!(!up_to_date(&svc, &t(3)), "an older template is outdated");
    }

    #[test]
    fn services_keep_basic_credentials_for_their_nodes_pulls() {
        let basic = Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        let auth = registry_auth(&basic).expect("kept");
        assert_eq!((auth.username.as_str(), auth.password.as_str()), ("u", "p"));
        assert!(
            !format!("{auth:?}").contains("\"p\""),
            "Debug hides the password"
        );
        assert_eq!(registry_auth(&Credentials::Anonymous), None);
        let mut svc = Service {
            id: "s".into(),
            spec: serde_json::json!({"Name": "web"}),
            previous_spec: None,
            registry_auth: None,
            image: "i".into(),
            version: 1,
            created_at: 0,
            updated_at: 0,
            job_iteration: 0,
            template_version: 0,
            previous_image: None,
            previous_template_version: None,
            update_status: None,
            dynamic_ports: Vec::new(),
        };
        assert_eq!(pull_credentials(&svc), Credentials::Anonymous);
        svc.registry_auth = Some(auth);
        assert_eq!(pull_credentials(&svc), basic);
    }

    #[test]
    fn object_ids_have_swarms_shape() {
        for _ in 0..100 {
            let id = new_object_id();
            assert_eq!(id.len(), 25, "{id}");
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        }
        assert_ne!(new_object_id(), new_object_id());
    }

    #[test]
    fn specs_are_validated_before_anything_is_written() {
        let ok = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}});
        assert!(validate_spec(&ok, false).is_ok());
        let bad_name =
            json!({"Name": "bad_name!", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}});
        assert_eq!(
            validate_spec(&bad_name, false).unwrap_err().to_string(),
            "rpc error: code = InvalidArgument desc = name must be valid as a DNS name component"
        );
        let neg = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
                         "Mode": {"Replicated": {"Replicas": -1}}});
        assert!(validate_spec(&neg, false)
            .unwrap_err()
            .to_string()
            .contains("cannot unmarshal number -1"));
        let constraint = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"},
                                "Placement": {"Constraints": ["node.role=worker"]}}});
        assert!(validate_spec(&constraint, false)
            .unwrap_err()
            .to_string()
            .contains("constraint expected one operator"));
        let no_image = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {}}});
        assert!(validate_spec(&no_image, false)
            .unwrap_err()
            .to_string()
            .contains("image reference must be provided"));
        let bad_ref = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "UPPER"}}});
        assert!(validate_spec(&bad_ref, false).is_err());
        let secrets = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Secrets": [{"SecretName": "x"}]}}});
        assert!(validate_spec(&secrets, false)
            .unwrap_err()
            .to_string()
            .contains("malformed secret reference"));
    }

    fn state_with(services: &[(&str, &str)]) -> ClusterState {
        let mut s = ClusterState::default();
        for (id, name) in services {
            s.services.insert(
                id.to_string(),
                Service {
                    id: id.to_string(),
                    spec: json!({"Name": name}),
                    previous_spec: None,
                    registry_auth: None,
                    image: "busybox".into(),
                    version: 1,
                    created_at: 0,
                    updated_at: 0,
                    job_iteration: 0,
                    template_version: 0,
                    previous_image: None,
                    previous_template_version: None,
                    update_status: None,
                    dynamic_ports: Vec::new(),
                },
            );
        }
        s
    }

    #[test]
    fn services_are_found_by_id_name_then_prefix() {
        let s = state_with(&[("abc111", "web"), ("abc222", "db"), ("web", "other")]);
        assert_eq!(find_service(&s, "abc111").unwrap().id, "abc111");
        assert_eq!(find_service(&s, "db").unwrap().id, "abc222");
        assert_eq!(
            find_service(&s, "web").unwrap().id,
            "web",
            "a full id wins over a name"
        );
        assert_eq!(find_service(&s, "abc2").unwrap().id, "abc222");
        let e = find_service(&s, "abc").unwrap_err();
        assert!(matches!(e, ServiceError::InvalidArgument { .. }), "{e}");
        let e = find_service(&s, "nosuch").unwrap_err();
        assert_eq!(e.to_string(), "service nosuch not found");
        assert!(name_taken(&s, "WEB", None) || name_taken(&s, "DB", None));
        assert!(!name_taken(&s, "db", Some("abc222")));
    }

    #[test]
    fn rejections_are_worded_as_dockerd() {
        let e = rejection_error(Rejection::ServiceNameConflict { name: "web".into() });
        assert!(matches!(e, ServiceError::Conflict { .. }));
        assert_eq!(
            e.to_string(),
            "rpc error: code = AlreadyExists desc = name conflicts with an existing object: service web already exists"
        );
        let e = rejection_error(Rejection::ServiceVersion {
            id: "x".into(),
            expected: 1,
            actual: 2,
        });
        assert!(matches!(e, ServiceError::Conflict { .. }));
        assert!(e.to_string().ends_with("update out of sequence"));
    }

    #[test]
    fn counts_follow_the_mode() {
        let svc = Service {
            id: "s".into(),
            spec: json!({}),
            previous_spec: None,
            registry_auth: None,
            image: "i".into(),
            version: 1,
            created_at: 0,
            updated_at: 0,
            job_iteration: 0,
            template_version: 0,
            previous_image: None,
            previous_template_version: None,
            update_status: None,
            dynamic_ports: Vec::new(),
        };
        let task = |state: TaskState, desired: TaskState| Task {
            id: "t".into(),
            service_id: "s".into(),
            slot: 1,
            node_id: Some(1),
            service_version: 1,
            image: "i".into(),
            job_iteration: 0,
            restart_times: Vec::new(),
            template_version: 0,
            running_at: None,
            desired_state: desired,
            status: TaskStatus::new(state, 0, ""),
            created_at: 0,
            version: 1,
        };
        let tasks = vec![
            task(TaskState::Running, TaskState::Running),
            task(TaskState::Pending, TaskState::Running),
            task(TaskState::Shutdown, TaskState::Shutdown),
        ];
        let spec =
            ServiceSpec::from_docker(&json!({"Mode": {"Replicated": {"Replicas": 3}}})).unwrap();
        let active = std::collections::HashSet::from([1]);
        assert_eq!(
            counts(&svc, &spec, &tasks, &active),
            ServiceCounts {
                running: 1,
                desired: 3,
                completed: 0
            }
        );
        // A node that left (or is down) no longer vouches for its task running.
        let gone = std::collections::HashSet::from([2]);
        assert_eq!(counts(&svc, &spec, &tasks, &gone).running, 0);
        let spec = ServiceSpec::from_docker(&json!({"Mode": {"Global": {}}})).unwrap();
        assert_eq!(counts(&svc, &spec, &tasks, &active).desired, 2);
    }
}
