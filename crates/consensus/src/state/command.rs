//! Commands (the Raft log's application payload) and their responses.
//!
//! Log entries outlive the code that wrote them, so variants are only ever *added*: a
//! changed shape becomes a new variant, and old variants stay decodable and applicable.

use berth_orchestrator::{Nanos, RegistryAuth, Service, Task, TaskChange, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};

use super::networks::{AddressPools, EndpointOwner, Network, NetworkEndpoint, NetworkSpec};
use super::node::{NodeDescription, NodeId, NodeRecord, NodeRole, NodeSpec, NodeUpdate};
use super::secrets::{ObjectKind, SealedObject};
use super::settings::ClusterSettings;

/// A change to the cluster state. Applied by [`ClusterState::apply`](super::ClusterState::apply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// First command of a cluster: names it and records the first manager.
    InitCluster {
        /// Random id chosen by the initialising node.
        cluster_id: String,
        /// The first manager.
        first_node: NodeSpec,
        /// The cluster's networking (`swarm init --default-addr-pool`) and its `ingress`
        /// network. Absent in entries written before networks existed: the default pools
        /// and an `ingress` id derived from the cluster id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        networking: Option<InitNetworking>,
    },
    /// Record a node admitted with a join token.
    AddNode(NodeSpec),
    /// Change a node's role, availability or labels.
    UpdateNode {
        /// Node to change.
        id: NodeId,
        /// Fields to change.
        update: NodeUpdate,
    },
    /// Forget a node and revoke its certificate. Managers must be demoted first.
    RemoveNode {
        /// Node to remove.
        id: NodeId,
    },
    /// Invalidate the current join token of one role (the cluster object's version becomes
    /// the entry's index).
    RotateJoinToken {
        /// Which token.
        role: NodeRole,
    },
    /// Several commands in one log entry (group commit of concurrent writes). Applied in
    /// order; each gets its own response, a rejected one does not stop the others.
    Batch {
        /// The commands.
        commands: Vec<Command>,
    },
    /// Make a single remaining manager the only manager after quorum loss: every other
    /// manager is demoted to worker in the state (they are no longer Raft voters).
    ForceNewCluster {
        /// The surviving manager.
        survivor: NodeId,
    },
    /// Record a new service (`POST /services/create`). Its `version` and `template_version`
    /// become the entry's index; `created_at`/`updated_at` are taken as given. Refused when
    /// the id exists ([`Rejection::ServiceExists`]), the spec has no `Name`
    /// ([`Rejection::ServiceNameMissing`]), another service has the name, compared
    /// case-insensitively as swarmkit's store does ([`Rejection::ServiceNameConflict`]),
    /// a published port meets another service's ([`Rejection::PortInUse`]), or a secret or
    /// config reference names no object of that id and name
    /// ([`Rejection::ObjectRefsNotFound`]).
    CreateService {
        /// The service; `service.spec["Name"]` is its name.
        service: Service,
    },
    /// Replace a service's spec (`POST /services/{id}/update?version=`). The old spec
    /// becomes `previous_spec`, `version` the entry's index, `updated_at` = `at`; jobs
    /// (`Mode` has `ReplicatedJob` or `GlobalJob`) get `job_iteration + 1`;
    /// `template_version` becomes the entry's index when what a task runs changed
    /// (`berth_orchestrator::spec::same_task_template`: `TaskTemplate` with `ForceUpdate`,
    /// `EndpointSpec`, the pinned image), so the orchestrator rolls the tasks. Refused when
    /// the service is missing ([`Rejection::ServiceNotFound`]), at another version
    /// ([`Rejection::ServiceVersion`]), renamed ([`Rejection::ServiceRename`]), when a
    /// published port meets another service's ([`Rejection::PortInUse`]) or a secret or
    /// config reference names no object ([`Rejection::ObjectRefsNotFound`]).
    UpdateService {
        /// Service id.
        id: String,
        /// The version the client read (`?version=`).
        expected_version: u64,
        /// The new `ServiceSpec` JSON exactly as the client sent it.
        spec: serde_json::Value,
        /// The image pinned to the digest resolved for this update.
        image: String,
        /// When (unix ns, chosen by the driver).
        at: Nanos,
        /// New registry credentials (the update sent `X-Registry-Auth`); `None` keeps the
        /// service's. Absent in entries written before the field existed, which therefore
        /// apply as they did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        registry_auth: Option<RegistryAuth>,
    },
    /// Forget a service (`DELETE /services/{id}`); every task of it gets desired state
    /// `Remove` (the agents stop and remove the containers, the orchestrator deletes the
    /// records once terminal). Refused when missing ([`Rejection::ServiceNotFound`]).
    RemoveService {
        /// Service id.
        id: String,
    },
    /// Roll a service back to its `PreviousSpec` (`POST /services/{id}/update?rollback=previous`,
    /// `docker service rollback`), as swarmkit's controlapi does: spec, pinned image and
    /// template version are swapped with the previous ones (so a second rollback returns),
    /// `version` = the entry's index, and `UpdateStatus` is `rollback_started` /
    /// `"manually requested rollback"` at `at`; the orchestrator then rolls the tasks back
    /// paced by the (restored) spec's `RollbackConfig`. Refused when missing
    /// ([`Rejection::ServiceNotFound`]), at another version ([`Rejection::ServiceVersion`])
    /// or without a previous spec ([`Rejection::NoPreviousSpec`]).
    RollbackService {
        /// Service id.
        id: String,
        /// The version the client read (`?version=`).
        expected_version: u64,
        /// When (unix ns, chosen by the driver).
        at: Nanos,
    },
    /// One orchestration pass of the leader, batched: each change is checked against the
    /// state as left by the changes before it (see [`TaskChange`]'s variants) and applied,
    /// or refused on its own; the response lists the refused ones
    /// ([`Response::Orchestrated`]). Beyond [`TaskChange`]'s rules: a created task's service
    /// must exist ([`Rejection::ServiceNotFound`]) and so must the node it is created or
    /// assigned on ([`Rejection::NodeNotFound`]); an id is created once
    /// ([`Rejection::TaskExists`]). Each changed task gets `version` = the entry's index;
    /// restating a task's current desired state or pending reason changes nothing.
    Orchestrate {
        /// The decisions, in order.
        changes: Vec<TaskChange>,
        /// When they were made (unix ns): the timestamp of statuses they write.
        at: Nanos,
    },
    /// A node's agent reports a task's observed status. Accepted only from the task's node
    /// ([`Rejection::NotTaskNode`]) and only forward in [`TaskState`] order
    /// ([`Rejection::StaleTaskStatus`]); the same state again is accepted (it may add the
    /// container id, the pid after an adoption, the exit code or a newer message), an
    /// identical status changes nothing.
    UpdateTaskStatus {
        /// Task id.
        task_id: String,
        /// The reporting node (the leader checks it against the caller's certificate).
        node_id: NodeId,
        /// The observed status.
        status: TaskStatus,
    },
    /// Record an overlay network (`POST /networks/create`, driver `overlay`): VNI, subnet
    /// and gateway are allocated here (rules in `networks.rs`). Refused when the id exists
    /// ([`Rejection::NetworkExists`]), the name is taken
    /// ([`Rejection::NetworkNameConflict`]), the addresses are invalid or overlap another
    /// network ([`Rejection::NetworkInvalid`]) or the pools are used up
    /// ([`Rejection::PoolExhausted`]).
    CreateNetwork {
        /// Random id chosen by the driver (25 base-36 characters).
        id: String,
        /// What the client asked for.
        spec: NetworkSpec,
        /// When (unix ns, chosen by the driver).
        at: Nanos,
    },
    /// Forget a network (`DELETE /networks/{id}`). Refused while a service uses it or any
    /// endpoint is on it ([`Rejection::NetworkInUse`]); with `release_stopping`, as
    /// swarmkit's `RemoveNetwork`: a task's endpoint holds the network only while the task
    /// is wanted and not stopped (desired and observed state at most `Running`), the
    /// others go with the network (`docker stack rm` removes the services, then at once
    /// their networks).
    RemoveNetwork {
        /// Network id.
        id: String,
        /// Release the endpoints of tasks being stopped. Absent (false) in entries written
        /// before the rule, which therefore apply as they did.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        release_stopping: bool,
    },
    /// A node plugs a container (or its routing-mesh sandbox) into a network; the address
    /// is allocated here (the lowest free, or `requested_ip` when free). Plain containers
    /// need an attachable network ([`Rejection::NotAttachable`]).
    AttachEndpoint {
        /// Endpoint id chosen by the node.
        id: String,
        /// Network id or name.
        network: String,
        /// The node hosting it (checked against the caller's certificate by the leader).
        node_id: NodeId,
        /// Who it is for.
        owner: EndpointOwner,
        /// `--ip`.
        #[serde(default)]
        requested_ip: Option<std::net::Ipv4Addr>,
    },
    /// A node unplugs one of its endpoints; its address is free again.
    DetachEndpoint {
        /// Endpoint id.
        id: String,
        /// The node hosting it.
        node_id: NodeId,
    },
    /// A node records its WireGuard public key (base64), with which the others add it as
    /// a peer for encrypted overlays.
    SetNodeWgKey {
        /// The node (checked against the caller's certificate by the leader).
        id: NodeId,
        /// Base64 public key.
        public_key: String,
        /// The UDP port its device listens on when it is not the default 51820 (another
        /// process of the node's network namespace had that one); `None`: 51820.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listen_port: Option<u16>,
    },
    /// A node reports its platform, resources and engine (its agent, at start). The record's
    /// `version` moves only when the description changed.
    SetNodeDescription {
        /// The node (the leader checks it against the caller's certificate).
        id: NodeId,
        /// What it reports.
        description: NodeDescription,
    },
    /// Replace the cluster settings (`POST /swarm/update?version=`); their `version`
    /// becomes the entry's index. Refused when the client read another version
    /// ([`Rejection::ClusterVersion`]) or a value is out of range
    /// ([`Rejection::SettingsInvalid`]).
    UpdateClusterSettings {
        /// The cluster version the client read.
        expected_version: u64,
        /// All the settings (the API merged the client's changes into the current ones);
        /// `version` is ignored.
        settings: ClusterSettings,
    },
    /// Record a secret or config (`POST /secrets/create`, `/configs/create`) whose value
    /// the driver sealed ([`crate::pki::seal`]); `version` becomes the entry's index.
    /// Refused when the id exists ([`Rejection::ObjectExists`]) or another object of the
    /// kind has the name, compared case-insensitively ([`Rejection::ObjectNameConflict`]).
    CreateObject {
        /// Secret or config.
        kind: ObjectKind,
        /// The object (value sealed).
        object: SealedObject,
    },
    /// Replace an object's labels (`POST /secrets/{id}/update?version=`): the only change
    /// Swarm allows. `version` becomes the entry's index, `updated_at` = `at`. Refused when
    /// missing ([`Rejection::ObjectNotFound`]) or at another version
    /// ([`Rejection::ObjectVersion`]).
    UpdateObject {
        /// Secret or config.
        kind: ObjectKind,
        /// Object id.
        id: String,
        /// The version the client read.
        expected_version: u64,
        /// The new labels.
        labels: std::collections::BTreeMap<String, String>,
        /// When (unix ns, chosen by the driver).
        at: Nanos,
    },
    /// Forget an object (`DELETE /secrets/{id}`). Refused when missing
    /// ([`Rejection::ObjectNotFound`]) or while a service's spec references it
    /// ([`Rejection::ObjectInUse`]).
    RemoveObject {
        /// Secret or config.
        kind: ObjectKind,
        /// Object id.
        id: String,
    },
}

/// The networking a cluster starts with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitNetworking {
    /// Id of the `ingress` network (random, chosen by the initialising node).
    pub ingress_id: String,
    /// The default address pools.
    pub pools: AddressPools,
    /// When (unix ns): the `ingress` network's creation time.
    pub at: Nanos,
}

/// Why `apply` refused a command. Rejections are deterministic results, identical on every
/// replica, not storage errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    /// `InitCluster` on an initialised state.
    #[error("the cluster is already initialised")]
    AlreadyInitialized,
    /// Any other command before `InitCluster`.
    #[error("the cluster is not initialised")]
    NotInitialized,
    /// A node with this id exists.
    #[error("node {id} already exists")]
    NodeExists {
        /// The id.
        id: NodeId,
    },
    /// No node with this id.
    #[error("node {id} not found")]
    NodeNotFound {
        /// The id.
        id: NodeId,
    },
    /// Optimistic concurrency check failed.
    #[error("node {id} is at version {actual}, not {expected}")]
    VersionMismatch {
        /// The id.
        id: NodeId,
        /// Version the caller expected.
        expected: u64,
        /// Version found.
        actual: u64,
    },
    /// The change would leave the cluster without a manager.
    #[error("node {id} is the last manager")]
    LastManager {
        /// The id.
        id: NodeId,
    },
    /// A manager must be demoted before it is removed.
    #[error("node {id} is a manager: demote it first")]
    RemoveManager {
        /// The id.
        id: NodeId,
    },
    /// Another service has this name (swarmkit's `ErrNameConflict` wording).
    #[error("name conflicts with an existing object")]
    ServiceNameConflict {
        /// The name asked for.
        name: String,
    },
    /// A service with this id exists.
    #[error("service {id} already exists")]
    ServiceExists {
        /// The id.
        id: String,
    },
    /// The spec has no (or an empty) `Name`.
    #[error("service {id}: the spec has no name")]
    ServiceNameMissing {
        /// The id.
        id: String,
    },
    /// No service with this id.
    #[error("service {id} not found")]
    ServiceNotFound {
        /// The id.
        id: String,
    },
    /// The update was computed from another version of the service (swarmkit's wording).
    #[error("update out of sequence")]
    ServiceVersion {
        /// The id.
        id: String,
        /// Version the client sent.
        expected: u64,
        /// Version found.
        actual: u64,
    },
    /// A rollback of a service that was never updated (swarmkit's wording).
    #[error("service {id} does not have a previous spec")]
    NoPreviousSpec {
        /// The id.
        id: String,
    },
    /// A published port of the spec meets another service's (swarmkit's
    /// `checkPortConflicts`: an ingress port conflicts with any port of the same number and
    /// protocol, a host-mode port only with an ingress one; host-mode ports may repeat).
    /// `mode` is `an ingress port` or `a host-published port` (swarmkit's wording).
    #[error("port '{port}' is already in use by service '{name}' ({id}) as {mode}")]
    PortInUse {
        /// The published port.
        port: u16,
        /// The other service's name.
        name: String,
        /// The other service's id.
        id: String,
        /// `an ingress port` or `a host-published port`.
        mode: String,
    },
    /// An ingress port without a published number needs one from the dynamic range
    /// ([`super::DYNAMIC_PORT_RANGE`]) and every port of it is published already.
    #[error("no published port is free in the dynamic range 30000-32767 for {protocol}")]
    DynamicPortsExhausted {
        /// `tcp`, `udp` or `sctp`.
        protocol: String,
    },
    /// An update changed the service's name (swarmkit's wording).
    #[error("renaming services is not supported")]
    ServiceRename {
        /// The id.
        id: String,
    },
    /// No task with this id.
    #[error("task {id} not found")]
    TaskNotFound {
        /// The id.
        id: String,
    },
    /// A task with this id exists.
    #[error("task {id} already exists")]
    TaskExists {
        /// The id.
        id: String,
    },
    /// The new task's slot (replicated and jobs: service and slot; global: service and node)
    /// already holds a task whose desired state is `Running` or `Complete`.
    #[error("slot of task {id} is held by task {holder}")]
    SlotTaken {
        /// The new task.
        id: String,
        /// The task holding the slot.
        holder: String,
    },
    /// `Assign`/`Unschedulable` on a task that already has a node.
    #[error("task {id} is already assigned to node {node_id}")]
    TaskAssigned {
        /// The task.
        id: String,
        /// Its node.
        node_id: NodeId,
    },
    /// `Assign` of a task whose desired state is not `Running` or `Complete`.
    #[error("task {id} is not to run (desired state {desired:?})")]
    TaskNotRunnable {
        /// The task.
        id: String,
        /// Its desired state.
        desired: TaskState,
    },
    /// `SetDesired` backwards.
    #[error("task {id}: desired state cannot move back from {current:?} to {requested:?}")]
    DesiredBackwards {
        /// The task.
        id: String,
        /// Its desired state.
        current: TaskState,
        /// The one asked for.
        requested: TaskState,
    },
    /// `Delete` of a task whose container may still run (assigned, observed state below
    /// `Complete`).
    #[error("task {id} may still be running on node {node_id} (state {state:?})")]
    TaskMayRun {
        /// The task.
        id: String,
        /// Its node.
        node_id: NodeId,
        /// Its observed state.
        state: TaskState,
    },
    /// A task status reported by a node the task is not assigned to.
    #[error("task {id} is not assigned to node {node_id}")]
    NotTaskNode {
        /// The task.
        id: String,
        /// The reporting node.
        node_id: NodeId,
    },
    /// A network with this id exists.
    #[error("network {id} already exists")]
    NetworkExists {
        /// The id.
        id: String,
    },
    /// Another network has this name (Docker's wording).
    #[error("network with name {name} already exists")]
    NetworkNameConflict {
        /// The name.
        name: String,
    },
    /// No network with this id or name (Docker's wording).
    #[error("network {id} not found")]
    NetworkNotFound {
        /// The id or name asked for.
        id: String,
    },
    /// Bad addresses or options; the reason is Docker's wording where it has one.
    #[error("{detail}")]
    NetworkInvalid {
        /// Why.
        detail: String,
    },
    /// The default pools have no free subnet (or no VNI is left).
    #[error("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")]
    PoolExhausted,
    /// The network is in use (Docker's wording for services and endpoints).
    #[error("network {name} is in use by {by}")]
    NetworkInUse {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
        /// What uses it (`service web`, `container c1`).
        by: String,
    },
    /// A plain container asked to join a network made without `--attachable`
    /// (swarmkit's wording).
    #[error("network {name} not manually attachable")]
    NotAttachable {
        /// The network.
        name: String,
    },
    /// The requested address is taken.
    #[error("Address already in use: {ip} on network {network}")]
    AddressInUse {
        /// The address.
        ip: String,
        /// The network.
        network: String,
    },
    /// No free address is left in the network's range.
    #[error("no available IPv4 addresses on network {network}")]
    AddressesExhausted {
        /// The network.
        network: String,
    },
    /// An endpoint with this id exists.
    #[error("endpoint {id} already exists")]
    EndpointExists {
        /// The id.
        id: String,
    },
    /// No endpoint with this id on the caller's node.
    #[error("endpoint {id} not found")]
    EndpointNotFound {
        /// The id.
        id: String,
    },
    /// The settings update was computed from another version of the cluster (swarmkit's
    /// wording).
    #[error("update out of sequence")]
    ClusterVersion {
        /// Version the client sent.
        expected: u64,
        /// Version found.
        actual: u64,
    },
    /// A cluster setting is out of range; `detail` names the field (Swarm's spec path).
    #[error("invalid cluster spec: {detail}")]
    SettingsInvalid {
        /// Which field and why.
        detail: String,
    },
    /// A task status older than the recorded one (observed state moves only forward).
    #[error("task {id}: status {reported:?} is older than the recorded {current:?}")]
    StaleTaskStatus {
        /// The task.
        id: String,
        /// Recorded observed state.
        current: TaskState,
        /// Reported state.
        reported: TaskState,
    },
    /// A secret or config with this id exists.
    #[error("{kind} {id} already exists")]
    ObjectExists {
        /// Secret or config.
        kind: ObjectKind,
        /// The id.
        id: String,
    },
    /// Another object of the kind has this name (swarmkit's `AlreadyExists` text).
    #[error("{kind} {name} already exists")]
    ObjectNameConflict {
        /// Secret or config.
        kind: ObjectKind,
        /// The name.
        name: String,
    },
    /// No object of the kind with this id.
    #[error("{kind} {id} not found")]
    ObjectNotFound {
        /// Secret or config.
        kind: ObjectKind,
        /// The id.
        id: String,
    },
    /// Optimistic concurrency check of an object update failed (swarmkit's text).
    #[error("update out of sequence")]
    ObjectVersion {
        /// Secret or config.
        kind: ObjectKind,
        /// The id.
        id: String,
        /// Version the client read.
        expected: u64,
        /// Version found.
        actual: u64,
    },
    /// Removal of an object services reference (swarmkit's text).
    #[error("{kind} '{name}' is in use by the following {}: {}", if services.len() == 1 { "service" } else { "services" }, services.join(", "))]
    ObjectInUse {
        /// Secret or config.
        kind: ObjectKind,
        /// Its name.
        name: String,
        /// Names of the services using it.
        services: Vec<String>,
    },
    /// A service spec references objects that do not exist, or by another name
    /// (swarmkit's `checkSecretExistence` text).
    #[error("{kind}{} not found: {}", if names.len() == 1 { "" } else { "s" }, names.join(", "))]
    ObjectRefsNotFound {
        /// Secret or config.
        kind: ObjectKind,
        /// The names referenced.
        names: Vec<String>,
    },
    /// A node asked for the value of an object the task's service does not reference.
    #[error("{kind} {id} is not used by task {task}")]
    ObjectNotForTask {
        /// Secret or config.
        kind: ObjectKind,
        /// The object.
        id: String,
        /// The task.
        task: String,
    },
}

/// Result of applying one log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// A Raft-internal entry (blank or membership) was applied.
    Internal,
    /// The cluster was initialised.
    ClusterInitialized {
        /// Its id.
        cluster_id: String,
    },
    /// The node record after the change (`AddNode`, `UpdateNode`, `SetNodeDescription`).
    Node {
        /// The record.
        node: NodeRecord,
    },
    /// The node was removed.
    NodeRemoved {
        /// The id.
        id: NodeId,
    },
    /// The join token of `role` is now at `generation`.
    TokenRotated {
        /// Role.
        role: NodeRole,
        /// New generation.
        generation: u64,
    },
    /// Quorum-loss recovery recorded; the listed managers were demoted.
    ForcedNewCluster {
        /// Managers demoted to workers.
        demoted: Vec<NodeId>,
    },
    /// The service after `CreateService` or `UpdateService`.
    Service {
        /// The service.
        service: Service,
    },
    /// The service was removed (its tasks now have desired state `Remove`).
    ServiceRemoved {
        /// Its id.
        id: String,
    },
    /// `Orchestrate` was applied; these changes (index into `changes`) were refused and
    /// changed nothing, every other one was applied.
    Orchestrated {
        /// Index of each refused change and why.
        refused: Vec<(usize, Rejection)>,
    },
    /// The task after `UpdateTaskStatus`.
    Task {
        /// The task.
        task: Task,
    },
    /// The network after `CreateNetwork`.
    Network {
        /// The network.
        network: Network,
    },
    /// The network was removed.
    NetworkRemoved {
        /// Its id.
        id: String,
    },
    /// The endpoint after `AttachEndpoint`.
    Endpoint {
        /// The endpoint.
        endpoint: NetworkEndpoint,
    },
    /// The endpoint was removed.
    EndpointRemoved {
        /// Its id.
        id: String,
    },
    /// The cluster settings after `UpdateClusterSettings`.
    Settings {
        /// The settings.
        settings: ClusterSettings,
    },
    /// Responses of a `Batch`, in order.
    Batch {
        /// One per command.
        responses: Vec<Response>,
    },
    /// A secret or config as recorded.
    Object {
        /// Secret or config.
        kind: ObjectKind,
        /// The object.
        object: SealedObject,
    },
    /// A secret or config was removed.
    ObjectRemoved {
        /// Secret or config.
        kind: ObjectKind,
        /// Its id.
        id: String,
    },
    /// The command was refused; the state is unchanged.
    Rejected {
        /// Why.
        rejection: Rejection,
    },
}
