//! Services and tasks in the replicated state: the apply rules of `CreateService`,
//! `UpdateService`, `RemoveService`, `Orchestrate` and `UpdateTaskStatus` (swarmkit's task
//! model: the spec is the client's, desired state is written by managers, observed status
//! only by the task's node).
//!
//! Every rule checks first and changes after, so a refused command (or a refused change of
//! an `Orchestrate` batch) leaves the state as it was. Each changed object gets
//! `version = index` (the log index of the entry), Docker's `Version.Index`.

use berth_orchestrator::update::UpdateStatus;
use berth_orchestrator::{Nanos, RegistryAuth, Service, Task, TaskChange, TaskState, TaskStatus};

use super::{ClusterState, NodeId, Rejection, Response};

/// Message of a task the scheduler placed (swarmkit's wording).
pub const ASSIGNED_MESSAGE: &str = "scheduler assigned task to node";
/// Message of a task that fits on no node (swarmkit's wording).
pub const PENDING_MESSAGE: &str = "pending task scheduling";

/// A service's name: `spec["Name"]`.
pub fn service_name(spec: &serde_json::Value) -> Option<&str> {
    spec.get("Name")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
}

/// Whether the spec's `Mode` is a job (`ReplicatedJob` or `GlobalJob`).
fn is_job(spec: &serde_json::Value) -> bool {
    spec.get("Mode")
        .and_then(|m| m.as_object())
        .is_some_and(|m| m.contains_key("ReplicatedJob") || m.contains_key("GlobalJob"))
}

/// Names compare case-insensitively, as in swarmkit's store (`strings.ToLower` in its name
/// index): `web` and `WEB` conflict.
fn same_name(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

/// Rolls `service` back to its previous spec, pinned image and template version, with
/// `status`: `keep_previous` swaps them (the manual rollback: a second one returns),
/// otherwise nothing previous is left (the automatic rollback, as swarmkit's updater).
fn roll_back(
    service: &mut Service,
    index: u64,
    at: Nanos,
    status: UpdateStatus,
    keep_previous: bool,
) -> Result<(), Rejection> {
    let Some(previous) = service.previous_spec.take() else {
        return Err(Rejection::NoPreviousSpec {
            id: service.id.clone(),
        });
    };
    // Services stored before the pinned previous image was kept: the spec's image as
    // written.
    let previous_image = service.previous_image.take().unwrap_or_else(|| {
        previous
            .pointer("/TaskTemplate/ContainerSpec/Image")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    });
    let previous_template = service.previous_template_version.take().unwrap_or(index);
    let spec = std::mem::replace(&mut service.spec, previous);
    let image = std::mem::replace(&mut service.image, previous_image);
    let template = std::mem::replace(&mut service.template_version, previous_template);
    if keep_previous {
        service.previous_spec = Some(spec);
        service.previous_image = Some(image);
        service.previous_template_version = Some(template);
    }
    service.version = index;
    service.updated_at = at;
    service.update_status = Some(status);
    Ok(())
}

/// A desired state that holds a task's slot: a replacement must move it on first.
/// `Ready` is a stop-first replacement held until the task it replaces is down.
fn holds_slot(desired: TaskState) -> bool {
    matches!(
        desired,
        TaskState::Ready | TaskState::Running | TaskState::Complete
    )
}

/// swarmkit's dynamic port range (manager/allocator/portallocator.go `dynamicPortStart`
/// to `dynamicPortEnd`): ingress ports that name no published port get one from it.
pub const DYNAMIC_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// One port a service publishes, as the routing mesh and Docker's `Endpoint.Ports` see
/// it: the published port (for a dynamic ingress port, the one the cluster allocated),
/// the container's target port, the protocol (`tcp`, `udp`, `sctp`, lower case) and
/// whether it is published in ingress mode (the mesh) or host mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `PublishedPort`, 1-65535.
    pub published: u16,
    /// `TargetPort`.
    pub target: u16,
    /// `Protocol`, lower case, `tcp` when the spec gives none.
    pub protocol: String,
    /// `PublishMode` is `ingress` (or empty, Docker's default) rather than `host`.
    pub ingress: bool,
}

/// The spec's `EndpointSpec.Ports` as written: `published` is 0 where the spec names none.
pub fn spec_ports(spec: &serde_json::Value) -> Vec<ServicePort> {
    spec.pointer("/EndpointSpec/Ports")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let number = |key: &str| {
                p.get(key)
                    .and_then(|v| v.as_u64())
                    .map_or(Some(0), |n| u16::try_from(n).ok())
            };
            let protocol = p
                .get("Protocol")
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .unwrap_or("tcp")
                .to_ascii_lowercase();
            let ingress = p
                .get("PublishMode")
                .and_then(|m| m.as_str())
                .is_none_or(|m| m.is_empty() || m == "ingress");
            Some(ServicePort {
                published: number("PublishedPort")?,
                target: number("TargetPort")?,
                protocol,
                ingress,
            })
        })
        .collect()
}

/// The ports a service publishes: the spec's ports with a published number, and its
/// ingress ports without one with the number the cluster allocated
/// ([`Service::dynamic_ports`], matched by target port and protocol). Host-mode ports
/// without a number are left out (Docker lets the node pick one per task; berth refuses
/// them when the task is created).
pub fn service_ports(service: &Service) -> Vec<ServicePort> {
    spec_ports(&service.spec)
        .into_iter()
        .filter_map(|mut port| {
            if port.published == 0 {
                if !port.ingress {
                    return None;
                }
                port.published = service
                    .dynamic_ports
                    .iter()
                    .find(|d| d.target == port.target && d.protocol == port.protocol)?
                    .published;
            }
            Some(port)
        })
        .collect()
}

impl ClusterState {
    /// swarmkit's `checkPortConflicts` (manager/controlapi/service.go): a port the spec
    /// publishes in ingress mode may not be published by another service in any mode; one
    /// it publishes in host mode may not be another service's ingress port. `except` is
    /// the service being updated.
    pub(super) fn check_port_conflicts(
        &self,
        service: &Service,
        except: Option<&str>,
    ) -> Result<(), Rejection> {
        let mine = service_ports(service);
        if mine.is_empty() {
            return Ok(());
        }
        for other in self.services.values() {
            if Some(other.id.as_str()) == except {
                continue;
            }
            for theirs in service_ports(other) {
                let meets = |want_ingress: Option<bool>| {
                    mine.iter().any(|p| {
                        p.published == theirs.published
                            && p.protocol == theirs.protocol
                            && want_ingress.is_none_or(|w| w == p.ingress)
                    })
                };
                let mode = if theirs.ingress {
                    // Any port of ours on it conflicts.
                    meets(None).then_some("an ingress port")
                } else {
                    meets(Some(true)).then_some("a host-published port")
                };
                if let Some(mode) = mode {
                    return Err(Rejection::PortInUse {
                        port: theirs.published,
                        name: service_name(&other.spec).unwrap_or_default().to_string(),
                        id: other.id.clone(),
                        mode: mode.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The dynamic ports `service` should have for its current spec: one per ingress port
    /// without a published number, keeping the number it already has for the same target
    /// port and protocol, else the lowest in [`DYNAMIC_PORT_RANGE`] that no other service
    /// publishes with that protocol and that the spec does not name itself (swarmkit's
    /// portallocator, which also hands out the lowest free port).
    ///
    /// # Errors
    /// [`Rejection::DynamicPortsExhausted`] when the range has no free port left.
    fn dynamic_ports_for(
        &self,
        service: &Service,
    ) -> Result<Vec<berth_orchestrator::DynamicPort>, Rejection> {
        let spec = spec_ports(&service.spec);
        if !spec.iter().any(|p| p.published == 0 && p.ingress) {
            return Ok(Vec::new());
        }
        // Every (port, protocol) published already: by the spec itself, by other services
        // (their dynamic ports included); allocations are added as they are made.
        let mut taken: std::collections::BTreeSet<(u16, String)> = spec
            .iter()
            .filter(|p| p.published != 0)
            .map(|p| (p.published, p.protocol.clone()))
            .collect();
        for other in self.services.values().filter(|o| o.id != service.id) {
            taken.extend(
                service_ports(other)
                    .into_iter()
                    .map(|p| (p.published, p.protocol)),
            );
        }
        let mut allocated: Vec<berth_orchestrator::DynamicPort> = Vec::new();
        for port in spec.into_iter().filter(|p| p.published == 0 && p.ingress) {
            if allocated
                .iter()
                .any(|d| d.target == port.target && d.protocol == port.protocol)
            {
                continue;
            }
            let free = |candidate: u16| !taken.contains(&(candidate, port.protocol.clone()));
            let kept = service
                .dynamic_ports
                .iter()
                .find(|d| d.target == port.target && d.protocol == port.protocol)
                .map(|d| d.published);
            let published = kept
                .filter(|&p| free(p))
                .or_else(|| DYNAMIC_PORT_RANGE.clone().find(|&p| free(p)))
                .ok_or_else(|| Rejection::DynamicPortsExhausted {
                    protocol: port.protocol.clone(),
                })?;
            taken.insert((published, port.protocol.clone()));
            allocated.push(berth_orchestrator::DynamicPort {
                target: port.target,
                protocol: port.protocol,
                published,
            });
        }
        Ok(allocated)
    }

    /// After a rollback replaced a service's spec: give the restored spec its dynamic
    /// ports (kept where the target and protocol match). A shortage leaves the ports as
    /// they were: the rollback stands, as the restored spec was valid once.
    fn reallocate_dynamic_ports(&mut self, id: &str) {
        let Some(service) = self.services.get(id) else {
            return;
        };
        if let Ok(ports) = self.dynamic_ports_for(service) {
            if let Some(service) = self.services.get_mut(id) {
                service.dynamic_ports = ports;
            }
        }
    }

    pub(super) fn create_service(
        &mut self,
        index: u64,
        service: &Service,
    ) -> Result<Response, Rejection> {
        if self.services.contains_key(&service.id) {
            return Err(Rejection::ServiceExists {
                id: service.id.clone(),
            });
        }
        let name = service_name(&service.spec).ok_or_else(|| Rejection::ServiceNameMissing {
            id: service.id.clone(),
        })?;
        if self.service_by_name(name).is_some() {
            return Err(Rejection::ServiceNameConflict {
                name: name.to_string(),
            });
        }
        self.service_networks(&service.spec)?;
        self.check_references(&service.spec)?;
        let mut service = service.clone();
        // What a client sends is not an allocation: the state makes its own.
        service.dynamic_ports = Vec::new();
        service.dynamic_ports = self.dynamic_ports_for(&service)?;
        self.check_port_conflicts(&service, None)?;
        service.version = index;
        service.template_version = index;
        self.services.insert(service.id.clone(), service.clone());
        if let Err(rejection) = self.sync_service_vips(&service) {
            self.services.remove(&service.id);
            self.drop_service_vips(&service.id);
            return Err(rejection);
        }
        Ok(Response::Service { service })
    }

    pub(super) fn update_service(
        &mut self,
        index: u64,
        id: &str,
        expected_version: u64,
        (spec, image, registry_auth): (&serde_json::Value, &str, Option<&RegistryAuth>),
        at: Nanos,
    ) -> Result<Response, Rejection> {
        self.service_networks(spec)?;
        self.check_references(spec)?;
        let current = self
            .services
            .get(id)
            .ok_or_else(|| Rejection::ServiceNotFound { id: id.to_string() })?;
        let mut candidate = current.clone();
        candidate.spec = spec.clone();
        candidate.dynamic_ports = self.dynamic_ports_for(&candidate)?;
        self.check_port_conflicts(&candidate, Some(id))?;
        let dynamic_ports = candidate.dynamic_ports;
        let service = self
            .services
            .get_mut(id)
            .ok_or_else(|| Rejection::ServiceNotFound { id: id.to_string() })?;
        if service.version != expected_version {
            return Err(Rejection::ServiceVersion {
                id: id.to_string(),
                expected: expected_version,
                actual: service.version,
            });
        }
        if service_name(spec) != service_name(&service.spec) {
            return Err(Rejection::ServiceRename { id: id.to_string() });
        }
        let new_template = if berth_orchestrator::spec::same_task_template(
            &service.spec,
            &service.image,
            spec,
            image,
        ) {
            service.template_version
        } else {
            index
        };
        let old_template = std::mem::replace(&mut service.template_version, new_template);
        service.previous_template_version = Some(old_template);
        let previous = std::mem::replace(&mut service.spec, spec.clone());
        service.previous_spec = Some(previous);
        service.dynamic_ports = dynamic_ports;
        let previous_image = std::mem::replace(&mut service.image, image.to_string());
        service.previous_image = Some(previous_image);
        // A new update starts from no status (swarmkit's controlapi resets it), so a
        // paused update is resumed by the next `docker service update`.
        service.update_status = None;
        if let Some(auth) = registry_auth {
            service.registry_auth = Some(auth.clone());
        }
        service.version = index;
        service.updated_at = at;
        if is_job(spec) {
            service.job_iteration += 1;
        }
        let service = service.clone();
        // Checked above; only an address shortage can refuse here, and then the service
        // keeps the VIPs it had (the update stands, as the spec was valid).
        let _ = self.sync_service_vips(&service);
        Ok(Response::Service { service })
    }

    /// `Command::RollbackService`: the manual rollback (see its docs).
    pub(super) fn rollback_service(
        &mut self,
        index: u64,
        id: &str,
        expected_version: u64,
        at: Nanos,
    ) -> Result<Response, Rejection> {
        let service = self
            .services
            .get_mut(id)
            .ok_or_else(|| Rejection::ServiceNotFound { id: id.to_string() })?;
        if service.version != expected_version {
            return Err(Rejection::ServiceVersion {
                id: id.to_string(),
                expected: expected_version,
                actual: service.version,
            });
        }
        roll_back(service, index, at, UpdateStatus::manual_rollback(at), true)?;
        self.reallocate_dynamic_ports(id);
        let service = self.services[id].clone();
        let _ = self.sync_service_vips(&service);
        Ok(Response::Service { service })
    }

    pub(super) fn remove_service(&mut self, index: u64, id: &str) -> Result<Response, Rejection> {
        if self.services.remove(id).is_none() {
            return Err(Rejection::ServiceNotFound { id: id.to_string() });
        }
        self.drop_service_vips(id);
        for task in self.tasks.values_mut() {
            if task.service_id == id && task.desired_state < TaskState::Remove {
                task.desired_state = TaskState::Remove;
                task.version = index;
            }
        }
        Ok(Response::ServiceRemoved { id: id.to_string() })
    }

    pub(super) fn orchestrate(
        &mut self,
        index: u64,
        changes: &[TaskChange],
        at: Nanos,
    ) -> Response {
        let refused = changes
            .iter()
            .enumerate()
            .filter_map(|(i, change)| {
                self.apply_task_change(index, change, at)
                    .err()
                    .map(|r| (i, r))
            })
            .collect();
        Response::Orchestrated { refused }
    }

    fn task_mut(&mut self, id: &str) -> Result<&mut Task, Rejection> {
        self.tasks
            .get_mut(id)
            .ok_or_else(|| Rejection::TaskNotFound { id: id.to_string() })
    }

    /// One change of an `Orchestrate` batch, checked as [`TaskChange`]'s docs say.
    fn apply_task_change(
        &mut self,
        index: u64,
        change: &TaskChange,
        at: Nanos,
    ) -> Result<(), Rejection> {
        match change {
            TaskChange::Create { task } => {
                if self.tasks.contains_key(&task.id) {
                    return Err(Rejection::TaskExists {
                        id: task.id.clone(),
                    });
                }
                if !self.services.contains_key(&task.service_id) {
                    return Err(Rejection::ServiceNotFound {
                        id: task.service_id.clone(),
                    });
                }
                if let Some(node_id) = task.node_id {
                    if !self.nodes.contains_key(&node_id) {
                        return Err(Rejection::NodeNotFound { id: node_id });
                    }
                }
                if holds_slot(task.desired_state) {
                    if let Some(holder) = self.slot_blocker(task) {
                        return Err(Rejection::SlotTaken {
                            id: task.id.clone(),
                            holder: holder.id.clone(),
                        });
                    }
                }
                let mut task = task.clone();
                task.version = index;
                self.allocate_task_endpoints(&task);
                self.tasks.insert(task.id.clone(), task);
                Ok(())
            }
            TaskChange::Assign { task_id, node_id } => {
                if !self.nodes.contains_key(node_id) {
                    return Err(Rejection::NodeNotFound { id: *node_id });
                }
                let task = self.task_mut(task_id)?;
                if let Some(current) = task.node_id {
                    return Err(Rejection::TaskAssigned {
                        id: task_id.clone(),
                        node_id: current,
                    });
                }
                if !holds_slot(task.desired_state) {
                    return Err(Rejection::TaskNotRunnable {
                        id: task_id.clone(),
                        desired: task.desired_state,
                    });
                }
                task.node_id = Some(*node_id);
                task.status = TaskStatus::new(TaskState::Assigned, at, ASSIGNED_MESSAGE);
                task.version = index;
                let task = task.clone();
                self.allocate_task_endpoints(&task);
                Ok(())
            }
            TaskChange::Unschedulable { task_id, err } => {
                let task = self.task_mut(task_id)?;
                if let Some(current) = task.node_id {
                    return Err(Rejection::TaskAssigned {
                        id: task_id.clone(),
                        node_id: current,
                    });
                }
                // Re-stating the same reason is not a change: no new timestamp or version
                // on every pass while the task waits.
                if task.status.state == TaskState::Pending
                    && task.status.err.as_deref() == Some(err.as_str())
                {
                    return Ok(());
                }
                let mut status = TaskStatus::new(TaskState::Pending, at, PENDING_MESSAGE);
                status.err = Some(err.clone());
                task.status = status;
                task.version = index;
                Ok(())
            }
            TaskChange::SetDesired { task_id, desired } => {
                let task = self.task_mut(task_id)?;
                if *desired < task.desired_state {
                    return Err(Rejection::DesiredBackwards {
                        id: task_id.clone(),
                        current: task.desired_state,
                        requested: *desired,
                    });
                }
                if *desired != task.desired_state {
                    task.desired_state = *desired;
                    task.version = index;
                }
                Ok(())
            }
            TaskChange::UpdateStatus {
                service_id,
                service_version,
                status,
                rollback,
            } => self.apply_update_status(
                index,
                (service_id, *service_version),
                status,
                *rollback,
                at,
            ),
            TaskChange::Delete { task_id } => {
                let task = self
                    .tasks
                    .get(task_id)
                    .ok_or_else(|| Rejection::TaskNotFound {
                        id: task_id.clone(),
                    })?;
                if let Some(node_id) = task.node_id {
                    if !task.status.state.is_terminal() {
                        return Err(Rejection::TaskMayRun {
                            id: task_id.clone(),
                            node_id,
                            state: task.status.state,
                        });
                    }
                }
                self.tasks.remove(task_id);
                self.drop_task_endpoints(task_id);
                Ok(())
            }
        }
    }

    /// `TaskChange::UpdateStatus` (see its docs).
    fn apply_update_status(
        &mut self,
        index: u64,
        (service_id, service_version): (&str, u64),
        status: &UpdateStatus,
        rollback: bool,
        at: Nanos,
    ) -> Result<(), Rejection> {
        let service =
            self.services
                .get_mut(service_id)
                .ok_or_else(|| Rejection::ServiceNotFound {
                    id: service_id.to_string(),
                })?;
        if service.version != service_version {
            return Err(Rejection::ServiceVersion {
                id: service_id.to_string(),
                expected: service_version,
                actual: service.version,
            });
        }
        if !rollback {
            // A status change is not a spec change: `version` stays (it keys the restart
            // history of the service's tasks).
            service.update_status = Some(status.clone());
            return Ok(());
        }
        roll_back(service, index, at, status.clone(), false)?;
        self.reallocate_dynamic_ports(service_id);
        let service = self.services[service_id].clone();
        let _ = self.sync_service_vips(&service);
        Ok(())
    }

    /// The task that keeps `task` out of its slot, if any: one holding the slot (same
    /// service and slot for replicated services and jobs, `slot > 0`; same service and node
    /// for global ones, `slot == 0`; desired state `Running` or `Complete`), unless `task`
    /// is a start-first replacement of it. A rolling update with `start-first` order
    /// creates the new task before the old one is shut down, so a task made from the
    /// service's current template (`task.template_version ==
    /// service.template_version`) may join a slot whose holders were all made from older
    /// templates. Never two of the same (or a newer) template: a stale or repeated plan
    /// still cannot place a slot twice.
    fn slot_blocker(&self, task: &Task) -> Option<&Task> {
        let replacement = self
            .services
            .get(&task.service_id)
            .is_some_and(|s| s.template_version == task.template_version);
        self.tasks.values().find(|t| {
            t.service_id == task.service_id
                && holds_slot(t.desired_state)
                && if task.slot == 0 {
                    t.slot == 0 && t.node_id == task.node_id
                } else {
                    t.slot == task.slot
                }
                && !(replacement && t.template_version != task.template_version)
        })
    }

    pub(super) fn update_task_status(
        &mut self,
        index: u64,
        task_id: &str,
        node_id: NodeId,
        status: &TaskStatus,
    ) -> Result<Response, Rejection> {
        let task = self.task_mut(task_id)?;
        if task.node_id != Some(node_id) {
            return Err(Rejection::NotTaskNode {
                id: task_id.to_string(),
                node_id,
            });
        }
        if status.state < task.status.state {
            return Err(Rejection::StaleTaskStatus {
                id: task_id.to_string(),
                current: task.status.state,
                reported: status.state,
            });
        }
        if task.running_at.is_none() && status.state == TaskState::Running {
            task.running_at = Some(status.timestamp);
        }
        if task.status != *status {
            task.status = status.clone();
            task.version = index;
        }
        Ok(Response::Task { task: task.clone() })
    }

    /// The service named `name` (case-insensitive, as swarmkit).
    pub fn service_by_name(&self, name: &str) -> Option<&Service> {
        self.services
            .values()
            .find(|s| service_name(&s.spec).is_some_and(|n| same_name(n, name)))
    }

    /// The tasks of service `service_id`, in id order.
    pub fn tasks_of_service<'a>(&'a self, service_id: &'a str) -> impl Iterator<Item = &'a Task> {
        self.tasks
            .values()
            .filter(move |t| t.service_id == service_id)
    }

    /// The tasks assigned to node `node_id`, in id order (what its agent runs).
    pub fn tasks_of_node(&self, node_id: NodeId) -> impl Iterator<Item = &Task> {
        self.tasks
            .values()
            .filter(move |t| t.node_id == Some(node_id))
    }
}

#[cfg(test)]
mod tests {
    use berth_orchestrator::TaskChange;
    use serde_json::json;

    use super::*;
    use crate::state::{Command, NodeDescription, NodeRole, NodeSpec};

    fn node_spec(id: NodeId) -> NodeSpec {
        NodeSpec {
            id,
            hostname: format!("host{id}"),
            addr: format!("127.0.0.1:{}", 7000 + id),
            role: if id == 1 {
                NodeRole::Manager
            } else {
                NodeRole::Worker
            },
            cert_fingerprint: format!("fp{id}"),
        }
    }

    /// Initialised at index 1, nodes 2 and 3 added at 2 and 3.
    fn cluster() -> ClusterState {
        let mut state = ClusterState::default();
        state.apply(
            1,
            &Command::InitCluster {
                cluster_id: "c".into(),
                first_node: node_spec(1),
                networking: None,
            },
        );
        state.apply(2, &Command::AddNode(node_spec(2)));
        state.apply(3, &Command::AddNode(node_spec(3)));
        state
    }

    fn service(id: &str, name: &str) -> Service {
        Service {
            id: id.into(),
            spec: json!({"Name": name, "Mode": {"Replicated": {"Replicas": 2}}}),
            previous_spec: None,
            registry_auth: None,
            image: "busybox:latest@sha256:00".into(),
            version: 0,
            created_at: 100,
            updated_at: 100,
            job_iteration: 0,
            template_version: 0,
            previous_image: None,
            previous_template_version: None,
            update_status: None,
            dynamic_ports: Vec::new(),
        }
    }

    fn task(id: &str, service_id: &str, slot: u64, node_id: Option<NodeId>) -> Task {
        Task {
            id: id.into(),
            service_id: service_id.into(),
            slot,
            node_id,
            service_version: 4,
            image: "busybox:latest@sha256:00".into(),
            job_iteration: 0,
            restart_times: Vec::new(),
            template_version: 0,
            running_at: None,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::New, 50, "created"),
            created_at: 50,
            version: 0,
        }
    }

    fn rejected(r: Response) -> Rejection {
        match r {
            Response::Rejected { rejection } => rejection,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn create(state: &mut ClusterState, index: u64, s: Service) -> Response {
        state.apply(index, &Command::CreateService { service: s })
    }

    fn orchestrate(state: &mut ClusterState, index: u64, changes: Vec<TaskChange>) -> Vec<usize> {
        match state.apply(index, &Command::Orchestrate { changes, at: 1_000 }) {
            Response::Orchestrated { refused } => refused.into_iter().map(|(i, _)| i).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Apply `command` at `index` and expect a refusal that changes nothing but
    /// `last_index`.
    fn refused_unchanged(state: &mut ClusterState, index: u64, command: &Command) -> Rejection {
        let before = state.clone();
        let rejection = rejected(state.apply(index, command));
        let mut after = state.clone();
        after.last_index = before.last_index;
        assert_eq!(after, before, "a refused {command:?} changed the state");
        rejection
    }

    /// The one refusal of a single-change `Orchestrate`, with the state unchanged.
    fn refused_change(state: &mut ClusterState, index: u64, change: TaskChange) -> Rejection {
        let before = state.clone();
        let r = state.apply(
            index,
            &Command::Orchestrate {
                changes: vec![change],
                at: 1_000,
            },
        );
        let Response::Orchestrated { mut refused } = r else {
            panic!("unexpected {r:?}")
        };
        assert_eq!(refused.len(), 1);
        let mut after = state.clone();
        after.last_index = before.last_index;
        assert_eq!(after, before);
        refused.remove(0).1
    }

    /// Cluster with service `s1` (index 4) and task `t1` in slot 1, unassigned (index 5).
    fn with_task() -> ClusterState {
        let mut state = cluster();
        create(&mut state, 4, service("s1", "web"));
        let refused = orchestrate(
            &mut state,
            5,
            vec![TaskChange::Create {
                task: task("t1", "s1", 1, None),
            }],
        );
        assert!(refused.is_empty());
        state
    }

    /// As [`with_task`], `t1` assigned to node 2 at index 6.
    fn with_assigned_task() -> ClusterState {
        let mut state = with_task();
        let refused = orchestrate(
            &mut state,
            6,
            vec![TaskChange::Assign {
                task_id: "t1".into(),
                node_id: 2,
            }],
        );
        assert!(refused.is_empty());
        state
    }

    fn status(state: TaskState, at: u64) -> TaskStatus {
        TaskStatus::new(state, at, state.as_str())
    }

    #[test]
    fn dynamic_ingress_ports_are_allocated_kept_and_freed() {
        let mut state = cluster();
        let with_ports = |id: &str, name: &str, ports: serde_json::Value| {
            let mut s = service(id, name);
            s.spec["EndpointSpec"] = json!({ "Ports": ports });
            s
        };
        let dynamic = |state: &ClusterState, id: &str| {
            service_ports(&state.services[id])
                .into_iter()
                .map(|p| (p.published, p.target, p.protocol))
                .collect::<Vec<_>>()
        };
        // A client-sent allocation is ignored; the lowest free port is taken.
        let mut first = with_ports("s1", "web", json!([{"TargetPort": 80}]));
        first.dynamic_ports = vec![berth_orchestrator::DynamicPort {
            target: 80,
            protocol: "tcp".into(),
            published: 31000,
        }];
        create(&mut state, 4, first);
        assert_eq!(dynamic(&state, "s1"), vec![(30000, 80, "tcp".to_string())]);
        assert_eq!(
            state.services["s1"]
                .spec
                .pointer("/EndpointSpec/Ports/0/PublishedPort"),
            None,
            "the spec stays as the client wrote it"
        );
        // A second service gets the next one; a spec naming 30001 skips it; udp has its own.
        create(
            &mut state,
            5,
            with_ports(
                "s2",
                "api",
                json!([{"TargetPort": 8080},
                       {"TargetPort": 9, "PublishedPort": 30001},
                       {"TargetPort": 53, "Protocol": "udp"}]),
            ),
        );
        assert_eq!(
            dynamic(&state, "s2"),
            vec![
                (30002, 8080, "tcp".to_string()),
                (30001, 9, "tcp".to_string()),
                (30000, 53, "udp".to_string())
            ]
        );
        // Asking for an allocated port explicitly is a conflict.
        let taken = with_ports(
            "s3",
            "late",
            json!([{"TargetPort": 80, "PublishedPort": 30000}]),
        );
        assert!(matches!(
            rejected(create(&mut state, 6, taken)),
            Rejection::PortInUse { port: 30000, .. }
        ));
        // An update keeps the port of the same target; a new target gets a new port; a
        // port the update drops is freed.
        let version = state.services["s1"].version;
        let spec = with_ports(
            "s1",
            "web",
            json!([{"TargetPort": 80}, {"TargetPort": 443}]),
        )
        .spec;
        let r = state.apply(
            7,
            &Command::UpdateService {
                id: "s1".into(),
                expected_version: version,
                spec,
                image: "img".into(),
                registry_auth: None,
                at: 7,
            },
        );
        assert!(matches!(r, Response::Service { .. }), "{r:?}");
        assert_eq!(
            dynamic(&state, "s1"),
            vec![
                (30000, 80, "tcp".to_string()),
                (30003, 443, "tcp".to_string())
            ]
        );
        // The manual rollback restores the first spec and its port only.
        let version = state.services["s1"].version;
        let r = state.apply(
            8,
            &Command::RollbackService {
                id: "s1".into(),
                expected_version: version,
                at: 8,
            },
        );
        assert!(matches!(r, Response::Service { .. }), "{r:?}");
        assert_eq!(dynamic(&state, "s1"), vec![(30000, 80, "tcp".to_string())]);
        // Removing a service frees its ports for the next one.
        let r = state.apply(9, &Command::RemoveService { id: "s2".into() });
        assert!(matches!(r, Response::ServiceRemoved { .. }), "{r:?}");
        create(
            &mut state,
            10,
            with_ports("s4", "next", json!([{"TargetPort": 1}])),
        );
        assert_eq!(dynamic(&state, "s4"), vec![(30001, 1, "tcp".to_string())]);
    }

    #[test]
    fn published_ports_conflict_as_swarmkit_checks_them() {
        let mut state = cluster();
        let with_ports = |id: &str, name: &str, ports: serde_json::Value| {
            let mut s = service(id, name);
            s.spec["EndpointSpec"] = json!({ "Ports": ports });
            s
        };
        create(
            &mut state,
            4,
            with_ports(
                "s1",
                "web",
                json!([{"TargetPort": 80, "PublishedPort": 8080},
                       {"TargetPort": 81, "PublishedPort": 9090, "PublishMode": "host"}]),
            ),
        );
        // Same number, other protocol: no conflict.
        let udp = with_ports(
            "s2",
            "dns",
            json!([{"TargetPort": 53, "PublishedPort": 8080, "Protocol": "udp"}]),
        );
        assert!(matches!(
            create(&mut state, 5, udp),
            Response::Service { .. }
        ));
        // A host-mode port on another's ingress port.
        let r = refused_unchanged(
            &mut state,
            6,
            &Command::CreateService {
                service: with_ports(
                    "s3",
                    "b",
                    json!([{"TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}]),
                ),
            },
        );
        assert_eq!(
            r.to_string(),
            "port '8080' is already in use by service 'web' (s1) as an ingress port"
        );
        // An ingress port on another's host-mode port.
        let r = refused_unchanged(
            &mut state,
            7,
            &Command::CreateService {
                service: with_ports(
                    "s3",
                    "b",
                    json!([{"TargetPort": 80, "PublishedPort": 9090}]),
                ),
            },
        );
        assert_eq!(
            r.to_string(),
            "port '9090' is already in use by service 'web' (s1) as a host-published port"
        );
        // Host-mode ports may repeat (the scheduler keeps them apart).
        let host = with_ports(
            "s4",
            "c",
            json!([{"TargetPort": 80, "PublishedPort": 9090, "PublishMode": "host"}]),
        );
        assert!(matches!(
            create(&mut state, 8, host),
            Response::Service { .. }
        ));
        // An update keeps its own ports.
        let mut spec = state.services["s1"].spec.clone();
        spec["Labels"] = json!({"a": "b"});
        let r = state.apply(
            9,
            &Command::UpdateService {
                id: "s1".into(),
                expected_version: 4,
                spec,
                image: "busybox:latest@sha256:00".into(),
                registry_auth: None,
                at: 200,
            },
        );
        assert!(matches!(r, Response::Service { .. }), "{r:?}");
    }

    #[test]
    fn create_service_stamps_version_and_refuses_duplicates() {
        let mut state = cluster();
        let Response::Service { service: s } = create(&mut state, 4, service("s1", "web")) else {
            panic!("not created")
        };
        assert_eq!((s.version, s.created_at), (4, 100));
        assert_eq!(state.services["s1"], s);
        assert_eq!(
            refused_unchanged(
                &mut state,
                5,
                &Command::CreateService {
                    service: service("s1", "other")
                }
            ),
            Rejection::ServiceExists { id: "s1".into() }
        );
        let conflict = refused_unchanged(
            &mut state,
            6,
            &Command::CreateService {
                service: service("s2", "web"),
            },
        );
        assert_eq!(
            conflict,
            Rejection::ServiceNameConflict { name: "web".into() }
        );
        assert_eq!(
            conflict.to_string(),
            "name conflicts with an existing object"
        );
        // swarmkit's name index is case-insensitive.
        assert_eq!(
            refused_unchanged(
                &mut state,
                7,
                &Command::CreateService {
                    service: service("s2", "WEB")
                }
            ),
            Rejection::ServiceNameConflict { name: "WEB".into() }
        );
        let mut nameless = service("s3", "");
        assert_eq!(
            refused_unchanged(
                &mut state,
                8,
                &Command::CreateService {
                    service: nameless.clone()
                }
            ),
            Rejection::ServiceNameMissing { id: "s3".into() }
        );
        nameless.spec = json!({"Mode": {"Global": {}}});
        assert_eq!(
            rejected(create(&mut state, 9, nameless)),
            Rejection::ServiceNameMissing { id: "s3".into() }
        );
        // A removed service's name is free again.
        assert_eq!(
            state.apply(10, &Command::RemoveService { id: "s1".into() }),
            Response::ServiceRemoved { id: "s1".into() }
        );
        assert!(matches!(
            create(&mut state, 11, service("s2", "web")),
            Response::Service { .. }
        ));
        assert_eq!(
            state.service_by_name("Web").map(|s| s.id.as_str()),
            Some("s2")
        );
    }

    #[test]
    fn rollback_swaps_spec_image_and_template_and_an_update_clears_the_status() {
        use berth_orchestrator::update::{UpdateState, UpdateStatus};
        let mut state = cluster();
        create(&mut state, 4, service("s1", "web"));
        let rollback = |expected_version| Command::RollbackService {
            id: "s1".into(),
            expected_version,
            at: 300,
        };
        let never_updated = refused_unchanged(&mut state, 5, &rollback(4));
        assert_eq!(never_updated, Rejection::NoPreviousSpec { id: "s1".into() });
        assert_eq!(
            never_updated.to_string(),
            "service s1 does not have a previous spec"
        );
        let original = state.services["s1"].clone();
        let new_spec = json!({"Name": "web", "Mode": {"Replicated": {"Replicas": 2}},
                              "TaskTemplate": {"ContainerSpec": {"Image": "busybox:1"}}});
        state.apply(
            6,
            &Command::UpdateService {
                id: "s1".into(),
                expected_version: 4,
                spec: new_spec.clone(),
                image: "busybox:1@sha256:11".into(),
                at: 200,
                registry_auth: None,
            },
        );
        let s = state.services["s1"].clone();
        assert_eq!(s.template_version, 6);
        assert_eq!(s.previous_template_version, Some(4));
        assert_eq!(s.previous_image.as_deref(), Some(original.image.as_str()));
        let Response::Service { service: s } = state.apply(7, &rollback(6)) else {
            panic!("not rolled back")
        };
        assert_eq!(
            (&s.spec, &s.image, s.template_version, s.version),
            (&original.spec, &original.image, 4, 7)
        );
        assert_eq!(s.previous_spec.as_ref(), Some(&new_spec));
        assert_eq!(s.update_status, Some(UpdateStatus::manual_rollback(300)));
        assert_eq!(
            s.update_status.as_ref().unwrap().state,
            UpdateState::RollbackStarted
        );
        // A second rollback returns to the update's spec.
        let Response::Service { service: s } = state.apply(8, &rollback(7)) else {
            panic!("not rolled back")
        };
        assert_eq!((&s.spec, s.template_version), (&new_spec, 6));
        // An update starts from no status.
        state.apply(
            9,
            &Command::UpdateService {
                id: "s1".into(),
                expected_version: 8,
                spec: new_spec.clone(),
                image: "busybox:1@sha256:11".into(),
                at: 400,
                registry_auth: None,
            },
        );
        assert_eq!(state.services["s1"].update_status, None);
        assert_eq!(state.services["s1"].template_version, 6, "same template");
        // The orchestrator's status changes check the version and keep it.
        let status = UpdateStatus {
            state: UpdateState::Paused,
            started_at: Some(1),
            completed_at: None,
            message: "m".into(),
        };
        let change = |service_version, rollback| TaskChange::UpdateStatus {
            service_id: "s1".into(),
            service_version,
            status: status.clone(),
            rollback,
        };
        assert_eq!(orchestrate(&mut state, 10, vec![change(8, false)]), vec![0]);
        assert_eq!(
            orchestrate(&mut state, 11, vec![change(9, false)]),
            Vec::<usize>::new()
        );
        assert_eq!(state.services["s1"].version, 9);
        assert_eq!(state.services["s1"].update_status, Some(status.clone()));
        // The automatic rollback leaves no previous spec.
        assert_eq!(
            orchestrate(&mut state, 12, vec![change(9, true)]),
            Vec::<usize>::new()
        );
        let s = &state.services["s1"];
        assert_eq!((s.version, s.template_version), (12, 6));
        assert_eq!(s.previous_spec, None);
        assert_eq!(orchestrate(&mut state, 13, vec![change(12, true)]), vec![0]);
    }

    #[test]
    fn update_service_checks_version_keeps_previous_spec_and_bumps_jobs() {
        let mut state = cluster();
        create(&mut state, 4, service("s1", "web"));
        let new_spec = json!({"Name": "web", "Mode": {"Replicated": {"Replicas": 5}}});
        let update = |expected_version, spec: &serde_json::Value| Command::UpdateService {
            id: "s1".into(),
            expected_version,
            spec: spec.clone(),
            image: "busybox:1@sha256:11".into(),
            at: 200,
            registry_auth: None,
        };
        let stale = refused_unchanged(&mut state, 5, &update(3, &new_spec));
        assert_eq!(
            stale,
            Rejection::ServiceVersion {
                id: "s1".into(),
                expected: 3,
                actual: 4
            }
        );
        assert_eq!(stale.to_string(), "update out of sequence");
        let renamed = json!({"Name": "api", "Mode": {"Replicated": {"Replicas": 5}}});
        assert_eq!(
            refused_unchanged(&mut state, 6, &update(4, &renamed)),
            Rejection::ServiceRename { id: "s1".into() }
        );
        let Response::Service { service: s } = state.apply(7, &update(4, &new_spec)) else {
            panic!("not updated")
        };
        assert_eq!(s.spec, new_spec);
        assert_eq!(s.previous_spec, Some(service("s1", "web").spec));
        assert_eq!(
            (s.version, s.created_at, s.updated_at, s.job_iteration),
            (7, 100, 200, 0)
        );
        assert_eq!(s.image, "busybox:1@sha256:11");
        // The old version is stale now.
        assert!(matches!(
            rejected(state.apply(8, &update(4, &new_spec))),
            Rejection::ServiceVersion { actual: 7, .. }
        ));
        let missing = Command::UpdateService {
            id: "nope".into(),
            expected_version: 1,
            spec: new_spec.clone(),
            image: String::new(),
            at: 0,
            registry_auth: None,
        };
        let not_found = refused_unchanged(&mut state, 9, &missing);
        assert_eq!(not_found.to_string(), "service nope not found");

        // Jobs run again after every update.
        let mut job = service("j1", "job");
        job.spec = json!({"Name": "job", "Mode": {"ReplicatedJob": {"MaxConcurrent": 1}}});
        create(&mut state, 10, job.clone());
        let Response::Service { service: j } = state.apply(
            11,
            &Command::UpdateService {
                id: "j1".into(),
                expected_version: 10,
                spec: job.spec.clone(),
                image: job.image.clone(),
                at: 300,
                registry_auth: None,
            },
        ) else {
            panic!("job not updated")
        };
        assert_eq!(j.job_iteration, 1);
    }

    #[test]
    fn template_version_moves_only_when_what_a_task_runs_changes() {
        let mut state = cluster();
        let mut s1 = service("s1", "web");
        s1.spec = json!({"Name": "web", "Mode": {"Replicated": {"Replicas": 2}},
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest"}}});
        let Response::Service { service: s } = create(&mut state, 4, s1.clone()) else {
            panic!("not created")
        };
        assert_eq!(s.template_version, 4, "set at create");
        let mut index = 4;
        let mut update = |state: &mut ClusterState, spec: serde_json::Value, image: &str| {
            let version = state.services["s1"].version;
            index += 1;
            let r = state.apply(
                index,
                &Command::UpdateService {
                    id: "s1".into(),
                    expected_version: version,
                    spec,
                    image: image.into(),
                    at: 200,
                    registry_auth: None,
                },
            );
            let Response::Service { service } = r else {
                panic!("not updated: {r:?}")
            };
            (index, service.template_version)
        };
        let pinned = s1.image.clone();
        // A scale keeps it.
        let mut spec = s1.spec.clone();
        spec["Mode"]["Replicated"]["Replicas"] = json!(5);
        assert_eq!(update(&mut state, spec.clone(), &pinned).1, 4);
        // So does the spec as the docker CLI sends it back after an inspect: the pinned
        // image, dockerd's filled-in values, zero values.
        let mut back = spec.clone();
        back["TaskTemplate"]["ContainerSpec"]["Image"] = json!(pinned.clone());
        back["TaskTemplate"]["ContainerSpec"]["Isolation"] = json!("default");
        back["TaskTemplate"]["ContainerSpec"]["Args"] = json!(null);
        back["TaskTemplate"]["ForceUpdate"] = json!(0);
        back["TaskTemplate"]["Runtime"] = json!("container");
        back["UpdateConfig"] = json!({"Parallelism": 2});
        assert_eq!(update(&mut state, back.clone(), &pinned).1, 4);
        // A changed container, --force, the endpoint or the pinned image bump it.
        let mut env = back.clone();
        env["TaskTemplate"]["ContainerSpec"]["Env"] = json!(["X=1"]);
        let (i, v) = update(&mut state, env.clone(), &pinned);
        assert_eq!(v, i);
        let mut force = env.clone();
        force["TaskTemplate"]["ForceUpdate"] = json!(1);
        let (i, v) = update(&mut state, force.clone(), &pinned);
        assert_eq!(v, i);
        let mut endpoint = force.clone();
        endpoint["EndpointSpec"] = json!({"Ports": [{"TargetPort": 80, "PublishedPort": 8080}]});
        let (i, v) = update(&mut state, endpoint.clone(), &pinned);
        assert_eq!(v, i);
        let (i, v) = update(&mut state, endpoint.clone(), "busybox:1.36@sha256:22");
        assert_eq!(v, i);
        // And nothing else does.
        let mut labels = endpoint.clone();
        labels["Labels"] = json!({"a": "b"});
        assert_eq!(update(&mut state, labels, "busybox:1.36@sha256:22").1, i);
        assert_eq!(state.services["s1"].template_version, i);
    }

    #[test]
    fn a_start_first_replacement_may_join_a_slot_of_an_older_template_only() {
        // t1 (template 0) in slot 1 of s1; s1's template moves to 6.
        let mut state = with_task();
        let spec = state.services["s1"].spec.clone();
        state.apply(
            6,
            &Command::UpdateService {
                id: "s1".into(),
                expected_version: 4,
                spec,
                image: "busybox:1.36@sha256:22".into(),
                at: 200,
                registry_auth: None,
            },
        );
        assert_eq!(state.services["s1"].template_version, 6);
        let current = |id: &str| {
            let mut t = task(id, "s1", 1, None);
            t.template_version = 6;
            t
        };
        // The replacement of the current template joins t1's slot.
        assert!(orchestrate(
            &mut state,
            7,
            vec![TaskChange::Create {
                task: current("t2")
            }]
        )
        .is_empty());
        // A second one of the same template does not: the slot is never placed twice.
        assert_eq!(
            refused_change(
                &mut state,
                8,
                TaskChange::Create {
                    task: current("t3")
                }
            ),
            Rejection::SlotTaken {
                id: "t3".into(),
                holder: "t2".into()
            }
        );
        // Nor one of an older template than the service's (a stale plan).
        let mut stale = task("t4", "s1", 1, None);
        stale.template_version = 5;
        assert!(matches!(
            refused_change(&mut state, 9, TaskChange::Create { task: stale }),
            Rejection::SlotTaken { .. }
        ));
        // Once t1 is shut down, t2 alone holds the slot.
        assert!(orchestrate(
            &mut state,
            10,
            vec![TaskChange::SetDesired {
                task_id: "t1".into(),
                desired: TaskState::Shutdown
            }]
        )
        .is_empty());
        assert_eq!(
            refused_change(
                &mut state,
                11,
                TaskChange::Create {
                    task: current("t5")
                }
            ),
            Rejection::SlotTaken {
                id: "t5".into(),
                holder: "t2".into()
            }
        );
    }

    #[test]
    fn an_update_replaces_registry_credentials_only_when_it_brings_some() {
        let mut state = cluster();
        let mut svc = service("s1", "web");
        svc.registry_auth = Some(RegistryAuth {
            username: "a".into(),
            password: "1".into(),
        });
        create(&mut state, 4, svc);
        let spec = json!({"Name": "web", "Mode": {"Replicated": {"Replicas": 2}}});
        let update = |expected_version, registry_auth| Command::UpdateService {
            id: "s1".into(),
            expected_version,
            spec: spec.clone(),
            image: "busybox:1@sha256:11".into(),
            at: 200,
            registry_auth,
        };
        state.apply(5, &update(4, None));
        assert_eq!(
            state.services["s1"]
                .registry_auth
                .as_ref()
                .unwrap()
                .username,
            "a"
        );
        let b = RegistryAuth {
            username: "b".into(),
            password: "2".into(),
        };
        state.apply(6, &update(5, Some(b.clone())));
        assert_eq!(state.services["s1"].registry_auth, Some(b));
        // An entry written before the field existed decodes and keeps the credentials.
        let old: Command = serde_json::from_value(json!({"type": "update_service", "id": "s1",
            "expected_version": 6, "spec": spec, "image": "busybox:1@sha256:11", "at": 300}))
        .unwrap();
        state.apply(7, &old);
        assert_eq!(
            state.services["s1"]
                .registry_auth
                .as_ref()
                .unwrap()
                .username,
            "b"
        );
    }

    #[test]
    fn remove_service_marks_every_task_remove() {
        let mut state = with_task();
        create(&mut state, 6, service("s2", "other"));
        let mut t2 = task("t2", "s1", 2, None);
        t2.desired_state = TaskState::Shutdown;
        let refused = orchestrate(
            &mut state,
            7,
            vec![
                TaskChange::Create { task: t2 },
                TaskChange::Create {
                    task: task("t3", "s2", 1, None),
                },
            ],
        );
        assert!(refused.is_empty());
        assert_eq!(
            refused_unchanged(&mut state, 8, &Command::RemoveService { id: "x".into() }),
            Rejection::ServiceNotFound { id: "x".into() }
        );
        state.apply(9, &Command::RemoveService { id: "s1".into() });
        assert!(!state.services.contains_key("s1"));
        for id in ["t1", "t2"] {
            assert_eq!(state.tasks[id].desired_state, TaskState::Remove);
            assert_eq!(state.tasks[id].version, 9);
        }
        assert_eq!(state.tasks["t3"].desired_state, TaskState::Running);
        assert_eq!(state.tasks["t3"].version, 7);
        // Tasks of a removed service cannot be created any more.
        assert_eq!(
            refused_change(
                &mut state,
                10,
                TaskChange::Create {
                    task: task("t4", "s1", 3, None)
                }
            ),
            Rejection::ServiceNotFound { id: "s1".into() }
        );
    }

    #[test]
    fn create_task_refuses_a_held_slot() {
        let mut state = with_task();
        assert_eq!(state.tasks["t1"].version, 5);
        assert_eq!(
            refused_change(
                &mut state,
                6,
                TaskChange::Create {
                    task: task("t1", "s1", 9, None)
                }
            ),
            Rejection::TaskExists { id: "t1".into() }
        );
        assert_eq!(
            refused_change(
                &mut state,
                7,
                TaskChange::Create {
                    task: task("t2", "s1", 1, None)
                }
            ),
            Rejection::SlotTaken {
                id: "t2".into(),
                holder: "t1".into()
            }
        );
        // Another slot, or the same slot of another service, is free.
        create(&mut state, 8, service("s2", "other"));
        let refused = orchestrate(
            &mut state,
            9,
            vec![
                TaskChange::Create {
                    task: task("t2", "s1", 2, None),
                },
                TaskChange::Create {
                    task: task("t3", "s2", 1, None),
                },
            ],
        );
        assert!(refused.is_empty());
        // A replacement moves the holder on first, earlier in the same batch.
        let refused = orchestrate(
            &mut state,
            10,
            vec![
                TaskChange::SetDesired {
                    task_id: "t1".into(),
                    desired: TaskState::Shutdown,
                },
                TaskChange::Create {
                    task: task("t4", "s1", 1, None),
                },
            ],
        );
        assert!(refused.is_empty());
        assert_eq!(state.tasks["t4"].version, 10);
        // A job task at desired Complete holds its slot too.
        let refused = orchestrate(
            &mut state,
            11,
            vec![
                TaskChange::SetDesired {
                    task_id: "t4".into(),
                    desired: TaskState::Complete,
                },
                TaskChange::Create {
                    task: task("t5", "s1", 1, None),
                },
            ],
        );
        assert_eq!(refused, vec![1]);
    }

    #[test]
    fn global_tasks_are_unique_per_node() {
        let mut state = cluster();
        let mut global = service("g1", "agent");
        global.spec = json!({"Name": "agent", "Mode": {"Global": {}}});
        create(&mut state, 4, global);
        let refused = orchestrate(
            &mut state,
            5,
            vec![
                TaskChange::Create {
                    task: task("a", "g1", 0, Some(2)),
                },
                TaskChange::Create {
                    task: task("b", "g1", 0, Some(3)),
                },
                TaskChange::Create {
                    task: task("c", "g1", 0, Some(2)),
                },
            ],
        );
        assert_eq!(refused, vec![2]);
        assert_eq!(state.tasks.len(), 2);
        assert!(!state.tasks.contains_key("c"));
        // Not on a node the cluster does not have (removed since the plan).
        assert_eq!(
            refused_change(
                &mut state,
                6,
                TaskChange::Create {
                    task: task("d", "g1", 0, Some(42))
                }
            ),
            Rejection::NodeNotFound { id: 42 }
        );
    }

    #[test]
    fn assign_places_only_unassigned_runnable_tasks() {
        let mut state = with_task();
        assert_eq!(
            refused_change(
                &mut state,
                6,
                TaskChange::Assign {
                    task_id: "t1".into(),
                    node_id: 42
                }
            ),
            Rejection::NodeNotFound { id: 42 }
        );
        assert_eq!(
            refused_change(
                &mut state,
                7,
                TaskChange::Assign {
                    task_id: "nope".into(),
                    node_id: 2
                }
            ),
            Rejection::TaskNotFound { id: "nope".into() }
        );
        assert!(orchestrate(
            &mut state,
            8,
            vec![TaskChange::Assign {
                task_id: "t1".into(),
                node_id: 2
            }]
        )
        .is_empty());
        let t1 = &state.tasks["t1"];
        assert_eq!(t1.node_id, Some(2));
        assert_eq!(
            t1.status,
            TaskStatus::new(
                TaskState::Assigned,
                1_000,
                "scheduler assigned task to node"
            )
        );
        assert_eq!(t1.version, 8);
        // Never placed twice.
        assert_eq!(
            refused_change(
                &mut state,
                9,
                TaskChange::Assign {
                    task_id: "t1".into(),
                    node_id: 3
                }
            ),
            Rejection::TaskAssigned {
                id: "t1".into(),
                node_id: 2
            }
        );
        // A task that is to stop is not placed.
        let refused = orchestrate(
            &mut state,
            10,
            vec![
                TaskChange::Create {
                    task: task("t2", "s1", 2, None),
                },
                TaskChange::SetDesired {
                    task_id: "t2".into(),
                    desired: TaskState::Shutdown,
                },
            ],
        );
        assert!(refused.is_empty());
        assert_eq!(
            refused_change(
                &mut state,
                11,
                TaskChange::Assign {
                    task_id: "t2".into(),
                    node_id: 3
                }
            ),
            Rejection::TaskNotRunnable {
                id: "t2".into(),
                desired: TaskState::Shutdown
            }
        );
    }

    #[test]
    fn unschedulable_marks_unassigned_tasks_pending_once() {
        let mut state = with_task();
        let why = "no suitable node (scheduling constraints not satisfied on 3 nodes)";
        let change = TaskChange::Unschedulable {
            task_id: "t1".into(),
            err: why.into(),
        };
        assert!(orchestrate(&mut state, 6, vec![change.clone()]).is_empty());
        let t1 = state.tasks["t1"].clone();
        assert_eq!(t1.status.state, TaskState::Pending);
        assert_eq!(t1.status.message, "pending task scheduling");
        assert_eq!(t1.status.err.as_deref(), Some(why));
        assert_eq!((t1.status.timestamp, t1.version), (1_000, 6));
        // The same reason again changes nothing; another reason is recorded.
        assert!(orchestrate(&mut state, 7, vec![change]).is_empty());
        assert_eq!(state.tasks["t1"], t1);
        let other = TaskChange::Unschedulable {
            task_id: "t1".into(),
            err: "no suitable node (insufficient resources on 3 nodes)".into(),
        };
        assert!(orchestrate(&mut state, 8, vec![other.clone()]).is_empty());
        assert_eq!(state.tasks["t1"].version, 8);
        // Then placed: no longer unschedulable.
        orchestrate(
            &mut state,
            9,
            vec![TaskChange::Assign {
                task_id: "t1".into(),
                node_id: 3,
            }],
        );
        assert_eq!(
            refused_change(&mut state, 10, other),
            Rejection::TaskAssigned {
                id: "t1".into(),
                node_id: 3
            }
        );
    }

    #[test]
    fn desired_state_moves_only_forward() {
        let mut state = with_task();
        let set = |desired| TaskChange::SetDesired {
            task_id: "t1".into(),
            desired,
        };
        assert!(orchestrate(&mut state, 6, vec![set(TaskState::Shutdown)]).is_empty());
        assert_eq!(state.tasks["t1"].desired_state, TaskState::Shutdown);
        assert_eq!(state.tasks["t1"].version, 6);
        // Same again: accepted, no change.
        assert!(orchestrate(&mut state, 7, vec![set(TaskState::Shutdown)]).is_empty());
        assert_eq!(state.tasks["t1"].version, 6);
        assert_eq!(
            refused_change(&mut state, 8, set(TaskState::Running)),
            Rejection::DesiredBackwards {
                id: "t1".into(),
                current: TaskState::Shutdown,
                requested: TaskState::Running
            }
        );
        assert!(orchestrate(&mut state, 9, vec![set(TaskState::Remove)]).is_empty());
        assert_eq!(state.tasks["t1"].desired_state, TaskState::Remove);
    }

    #[test]
    fn delete_waits_until_the_container_cannot_run() {
        let mut state = with_assigned_task();
        let delete = TaskChange::Delete {
            task_id: "t1".into(),
        };
        assert_eq!(
            refused_change(&mut state, 7, delete.clone()),
            Rejection::TaskMayRun {
                id: "t1".into(),
                node_id: 2,
                state: TaskState::Assigned
            }
        );
        state.apply(
            8,
            &Command::UpdateTaskStatus {
                task_id: "t1".into(),
                node_id: 2,
                status: status(TaskState::Shutdown, 2_000),
            },
        );
        assert!(orchestrate(&mut state, 9, vec![delete.clone()]).is_empty());
        assert!(!state.tasks.contains_key("t1"));
        assert_eq!(
            refused_change(&mut state, 10, delete),
            Rejection::TaskNotFound { id: "t1".into() }
        );
        // A task that never got a node can go at once.
        let mut state = with_task();
        assert!(orchestrate(
            &mut state,
            6,
            vec![TaskChange::Delete {
                task_id: "t1".into()
            }]
        )
        .is_empty());
        assert!(state.tasks.is_empty());
    }

    #[test]
    fn task_status_comes_from_its_node_and_moves_forward() {
        let mut state = with_assigned_task();
        let report = |node_id, status: TaskStatus| Command::UpdateTaskStatus {
            task_id: "t1".into(),
            node_id,
            status,
        };
        assert_eq!(
            refused_unchanged(&mut state, 7, &report(3, status(TaskState::Running, 10))),
            Rejection::NotTaskNode {
                id: "t1".into(),
                node_id: 3
            }
        );
        let Response::Task { task: t } = state.apply(8, &report(2, status(TaskState::Running, 10)))
        else {
            panic!("not accepted")
        };
        assert_eq!((t.status.state, t.version), (TaskState::Running, 8));
        assert_eq!(
            t.running_at,
            Some(10),
            "when it first ran: an update's Monitor counts from it"
        );
        assert_eq!(
            refused_unchanged(&mut state, 9, &report(2, status(TaskState::Starting, 11))),
            Rejection::StaleTaskStatus {
                id: "t1".into(),
                current: TaskState::Running,
                reported: TaskState::Starting
            }
        );
        // The same state with more detail (container, pid after an adoption) is accepted.
        let mut detailed = status(TaskState::Running, 12);
        detailed.container_id = Some("c0ffee".into());
        detailed.pid = Some(4242);
        state.apply(10, &report(2, detailed.clone()));
        assert_eq!(state.tasks["t1"].status, detailed);
        assert_eq!(state.tasks["t1"].version, 10);
        // An identical report changes nothing.
        assert!(matches!(
            state.apply(11, &report(2, detailed.clone())),
            Response::Task { .. }
        ));
        assert_eq!(state.tasks["t1"].version, 10);
        let mut failed = status(TaskState::Failed, 13);
        failed.exit_code = Some(1);
        state.apply(12, &report(2, failed.clone()));
        assert_eq!(state.tasks["t1"].status, failed);
        assert_eq!(
            refused_unchanged(
                &mut state,
                13,
                &Command::UpdateTaskStatus {
                    task_id: "nope".into(),
                    node_id: 2,
                    status: failed,
                }
            ),
            Rejection::TaskNotFound { id: "nope".into() }
        );
        // An unassigned task has no node to report it.
        let mut state = with_task();
        assert_eq!(
            rejected(state.apply(6, &report(2, status(TaskState::Running, 1)))),
            Rejection::NotTaskNode {
                id: "t1".into(),
                node_id: 2
            }
        );
    }

    #[test]
    fn node_description_is_recorded_and_versioned_on_change() {
        let mut state = cluster();
        let description = NodeDescription {
            os: "linux".into(),
            architecture: "x86_64".into(),
            nano_cpus: 2_000_000_000,
            memory_bytes: 1 << 30,
            engine_version: "0.1.0".into(),
            engine_labels: [("disk".to_string(), "ssd".to_string())].into(),
        };
        let set = |id| Command::SetNodeDescription {
            id,
            description: description.clone(),
        };
        let Response::Node { node } = state.apply(4, &set(2)) else {
            panic!("not set")
        };
        assert_eq!(node.description.as_ref(), Some(&description));
        assert_eq!(node.version, 4);
        state.apply(5, &set(2));
        assert_eq!(state.nodes[&2].version, 4);
        assert_eq!(
            refused_unchanged(&mut state, 6, &set(9)),
            Rejection::NodeNotFound { id: 9 }
        );
    }

    #[test]
    fn orchestrate_reports_refused_changes_and_applies_the_rest() {
        let mut state = with_task();
        let r = state.apply(
            6,
            &Command::Orchestrate {
                changes: vec![
                    TaskChange::Create {
                        task: task("t2", "s1", 2, None),
                    },
                    TaskChange::Create {
                        task: task("t3", "s1", 2, None),
                    },
                    TaskChange::Assign {
                        task_id: "t2".into(),
                        node_id: 3,
                    },
                    TaskChange::Assign {
                        task_id: "t9".into(),
                        node_id: 3,
                    },
                    TaskChange::Assign {
                        task_id: "t1".into(),
                        node_id: 2,
                    },
                ],
                at: 7_000,
            },
        );
        assert_eq!(
            r,
            Response::Orchestrated {
                refused: vec![
                    (
                        1,
                        Rejection::SlotTaken {
                            id: "t3".into(),
                            holder: "t2".into()
                        }
                    ),
                    (3, Rejection::TaskNotFound { id: "t9".into() }),
                ]
            }
        );
        assert_eq!(state.tasks.len(), 2);
        assert_eq!(state.tasks["t2"].node_id, Some(3));
        assert_eq!(state.tasks["t1"].node_id, Some(2));
        assert_eq!(state.tasks["t1"].status.timestamp, 7_000);
        // The response survives the log's encoding.
        let wire = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&wire).unwrap(), r);
    }

    #[test]
    fn services_and_tasks_apply_identically_on_every_replica() {
        let mut spec2 = service("s1", "web").spec;
        spec2["Mode"]["Replicated"]["Replicas"] = json!(3);
        let log = vec![
            Command::CreateService {
                service: service("s1", "web"),
            },
            Command::Orchestrate {
                changes: vec![
                    TaskChange::Create {
                        task: task("t1", "s1", 1, None),
                    },
                    TaskChange::Create {
                        task: task("t2", "s1", 2, None),
                    },
                    TaskChange::Assign {
                        task_id: "t1".into(),
                        node_id: 2,
                    },
                    TaskChange::Unschedulable {
                        task_id: "t2".into(),
                        err: "no suitable node".into(),
                    },
                ],
                at: 10,
            },
            Command::UpdateTaskStatus {
                task_id: "t1".into(),
                node_id: 2,
                status: status(TaskState::Running, 20),
            },
            Command::UpdateService {
                id: "s1".into(),
                expected_version: 4,
                spec: spec2,
                image: "busybox@sha256:22".into(),
                at: 30,
                registry_auth: None,
            },
            Command::Batch {
                commands: vec![
                    Command::CreateService {
                        service: service("s2", "web"),
                    },
                    Command::RemoveService { id: "s1".into() },
                ],
            },
        ];
        let run = || {
            let mut state = cluster();
            let responses: Vec<Response> = log
                .iter()
                .enumerate()
                .map(|(i, c)| state.apply(i as u64 + 4, c))
                .collect();
            (state, responses)
        };
        let (a, ra) = run();
        let (b, rb) = run();
        assert_eq!(ra, rb);
        assert_eq!(a, b);
        assert_eq!(a.encode().unwrap(), b.encode().unwrap());
        assert!(a
            .tasks
            .values()
            .all(|t| t.desired_state == TaskState::Remove));
        // The log's encoding round-trips every new command.
        for c in &log {
            let wire = serde_json::to_vec(c).unwrap();
            assert_eq!(&serde_json::from_slice::<Command>(&wire).unwrap(), c);
        }
    }
}
