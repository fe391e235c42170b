//! Cluster membership of this node: `docker swarm init/join/leave`, node administration,
//! and what `/info` and `/_ping` say about the cluster.
//!
//! Owns: the lifecycle of this berthd's [`ClusterNode`] (started at daemon start when the
//! data root holds cluster state, created by init/join, dropped by leave), the addresses a
//! node listens on and advertises, node liveness as this node observes it, and the mapping
//! of consensus errors onto service errors. Its [`ClusterPhase`] watch tells the loops that
//! run with the node (the agent and the leader loop, `agent.rs`) when to start, when to
//! let go of the node (before it is stopped or leaves) and when the node has left.
//!
//! Does not own: Raft, certificates and the replicated state (`berth-consensus`), HTTP
//! shapes (`api/swarm.rs`).
//!
//! ```text
//!  POST /swarm/init ──> init() ──> ClusterNode::init ──┐
//!  POST /swarm/join ──> join() ──> ClusterNode::join ──┼─> slot: Option<Arc<ClusterNode>>
//!  berthd start ─────> open() ──> restart | force_new ─┘        │
//!                                                               ├─> nodes()/update/remove
//!  prober (every 500 ms): TCP connect to each node's address ───┴─> Status.State, Reachability
//! ```
//!
//! Node liveness is what this node sees: a node is `ready` while its cluster port accepts
//! TCP connections from here. Every node probes on its own, so `docker node ls` on either
//! side of a partition shows the other side down.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use berth_consensus::{
    Availability, ClusterConfig, ClusterNode, ClusterState, ConsensusError, NodeId, NodeRecord,
    NodeRole, NodeUpdate, Rejection, TaskLogSource,
};
use serde::{Deserialize, Serialize};

use crate::error::ServiceError;

/// Swarm's default cluster port.
pub const DEFAULT_PORT: u16 = 2377;
/// How long an API write waits for the cluster to commit it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often every other node's cluster port is probed.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// A node not reached for this long is shown as down.
const DOWN_AFTER: Duration = Duration::from_secs(2);

const NOT_IN_SWARM: &str = "This node is not part of a swarm";
const ALREADY_IN_SWARM: &str =
    "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.";

/// Where this node listens for other nodes; kept next to the cluster state for restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ListenFile {
    listen_addr: SocketAddr,
}

impl ListenFile {
    fn path(dir: &Path) -> PathBuf {
        dir.join("berthd-listen.json")
    }
}

/// The local node's state, as `/info` and `/_ping` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalState {
    Inactive,
    Active {
        node_id: String,
        addr: String,
        manager: bool,
    },
    /// Cluster state exists but the node could not start.
    Error(String),
}

/// A node with what this node observes about it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub record: NodeRecord,
    /// Its port answered within the last [`DOWN_AFTER`] (always true for this node).
    pub reachable: bool,
    pub leader: bool,
    pub is_self: bool,
}

/// The cluster as `GET /swarm` and `/info` show it.
#[derive(Debug, Clone)]
pub struct SwarmView {
    pub cluster_id: String,
    pub version: u64,
    /// The default address pools (`DefaultAddrPool`, `SubnetSize`).
    pub address_pools: berth_consensus::state::AddressPools,
    /// The replicated settings (the `Spec` shown); `version` is the cluster's version.
    pub settings: berth_consensus::ClusterSettings,
    pub ca_cert_pem: String,
    pub tokens: Option<(String, String)>,
}

/// What `docker swarm init` and `join` ask for (addresses as the user typed them).
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    pub listen: String,
    pub advertise: String,
}

#[derive(Debug, Clone)]
pub struct ClusterService {
    inner: Arc<Inner>,
}

/// Whether the cluster loops of this node (agent, leader loop) should run; see
/// [`ClusterService::phase_watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterPhase {
    /// No cluster node runs (not a member, being stopped, or daemon shutdown): the loops
    /// stop and task containers stay.
    Inactive,
    /// A cluster node runs; the number changes with every (re)start of the node.
    Active(u64),
    /// This node left the cluster: its task containers go.
    Left {
        /// The id this node had.
        node_id: NodeId,
    },
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    hostname: String,
    slot: RwLock<Slot>,
    /// Serialises init, join and leave.
    ops: tokio::sync::Mutex<()>,
    last_seen: Mutex<HashMap<NodeId, Instant>>,
    phase: tokio::sync::watch::Sender<ClusterPhase>,
    generation: std::sync::atomic::AtomicU64,
    /// Serves this node's task logs to the other nodes.
    task_logs: Arc<dyn TaskLogSource>,
}

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Inactive,
    Active(Arc<ClusterNode>),
    Error(String),
}

impl ClusterService {
    /// Opens `<data-root>/cluster`: a member restarts its node (or, with
    /// `force_new_cluster`, becomes a one-manager cluster keeping all state); a failure
    /// leaves the engine running with the cluster in the error state. `task_logs` answers
    /// other nodes' requests for this node's task logs.
    pub async fn open(
        data_root: &Path,
        hostname: String,
        force_new_cluster: bool,
        task_logs: Arc<dyn TaskLogSource>,
    ) -> Self {
        let svc = ClusterService {
            inner: Arc::new(Inner {
                dir: data_root.join("cluster"),
                hostname,
                slot: RwLock::new(Slot::Inactive),
                ops: tokio::sync::Mutex::new(()),
                last_seen: Mutex::new(HashMap::new()),
                phase: tokio::sync::watch::channel(ClusterPhase::Inactive).0,
                generation: std::sync::atomic::AtomicU64::new(0),
                task_logs,
            }),
        };
        if ClusterNode::is_member(&svc.inner.dir) {
            let config = svc.config(svc.saved_listen_addr());
            let started = if force_new_cluster {
                tracing::warn!("--force-new-cluster: restarting as the only manager");
                ClusterNode::force_new_cluster(config).await
            } else {
                ClusterNode::restart(config).await
            };
            match started {
                Ok(node) => {
                    tracing::info!(node = %node_id_str(node.id()), "cluster node restarted");
                    svc.activate(node);
                }
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "cluster node did not start");
                    *svc.write_slot() = Slot::Error(error_chain(&e));
                }
            }
        } else if force_new_cluster {
            tracing::warn!("--force-new-cluster ignored: this node is not part of a cluster");
        }
        svc.spawn_prober();
        svc
    }

    fn write_slot(&self) -> std::sync::RwLockWriteGuard<'_, Slot> {
        self.inner.slot.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The running cluster node, if any. Holders must let go of it promptly: stopping or
    /// leaving waits until no one holds it (the loops started on [`Self::phase_watch`]
    /// are stopped first).
    pub fn node(&self) -> Option<Arc<ClusterNode>> {
        match &*self.inner.slot.read().unwrap_or_else(|p| p.into_inner()) {
            Slot::Active(n) => Some(n.clone()),
            _ => None,
        }
    }

    fn active(&self) -> Result<Arc<ClusterNode>, ServiceError> {
        self.node()
            .ok_or_else(|| ServiceError::unavailable(NOT_IN_SWARM))
    }

    fn activate(&self, node: ClusterNode) {
        self.activate_shared(Arc::new(node));
    }

    fn activate_shared(&self, node: Arc<ClusterNode>) {
        *self.write_slot() = Slot::Active(node);
        let generation = self
            .inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        self.inner
            .phase
            .send_replace(ClusterPhase::Active(generation));
    }

    /// Follows the node's lifecycle: `Active` after init, join or a restart, `Inactive`
    /// while it is being stopped (before its handle is taken: loops holding it must end),
    /// `Left` after a leave.
    pub fn phase_watch(&self) -> tokio::sync::watch::Receiver<ClusterPhase> {
        self.inner.phase.subscribe()
    }

    fn config(&self, listen: SocketAddr) -> ClusterConfig {
        let mut c = ClusterConfig::new(&self.inner.dir, listen);
        c.hostname = self.inner.hostname.clone();
        c.task_logs = Some(self.inner.task_logs.clone());
        // A follower stands for election once the leader lease (openraft: the maximum
        // election timeout) and then a random election timeout have passed without a
        // heartbeat: 0.9 to 1.2 s after a leader dies with these values (1.5 to 2 s with
        // the library's 500-1000 ms). Heartbeats every 100 ms leave 3 missed heartbeats of
        // slack before anyone stands.
        c.raft.heartbeat_ms = 100;
        c.raft.election_timeout_min_ms = 300;
        c.raft.election_timeout_max_ms = 600;
        c
    }

    fn saved_listen_addr(&self) -> SocketAddr {
        std::fs::read(ListenFile::path(&self.inner.dir))
            .ok()
            .and_then(|b| serde_json::from_slice::<ListenFile>(&b).ok())
            .map_or_else(
                || SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
                |f| f.listen_addr,
            )
    }

    fn save_listen_addr(&self, listen_addr: SocketAddr) -> Result<(), ServiceError> {
        let path = ListenFile::path(&self.inner.dir);
        let bytes = serde_json::to_vec(&ListenFile { listen_addr }).unwrap_or_default();
        std::fs::write(&path, bytes).map_err(|e| ServiceError::io("write", &path, e))
    }

    /// `docker swarm init`; returns the new node's id. With `force_new_cluster` on a node
    /// that already is a manager, restarts it as the only manager keeping all state.
    /// `pools`: `--default-addr-pool`/`--default-addr-pool-mask-length` (Swarm's
    /// defaults when `None`).
    pub async fn init(
        &self,
        addrs: &Addresses,
        force_new_cluster: bool,
        pools: Option<berth_consensus::state::AddressPools>,
    ) -> Result<String, ServiceError> {
        let _op = self.inner.ops.lock().await;
        if force_new_cluster && ClusterNode::is_member(&self.inner.dir) {
            return self.force_new_cluster().await;
        }
        if self.node().is_some() || ClusterNode::is_member(&self.inner.dir) {
            return Err(ServiceError::unavailable(ALREADY_IN_SWARM));
        }
        let listen = parse_listen_addr(&addrs.listen)?;
        let advertise = advertise_addr(&addrs.advertise, listen, None)?;
        let mut config = self.config(listen);
        config.advertise_addr = Some(advertise);
        if let Some(pools) = pools {
            config.address_pools = pools;
        }
        let node = ClusterNode::init(config).await.map_err(cluster_error)?;
        self.save_listen_addr(listen)?;
        let id = node_id_str(node.id());
        tracing::info!(node = %id, addr = %node.advertise_addr(), "cluster initialised");
        self.activate(node);
        Ok(id)
    }

    async fn force_new_cluster(&self) -> Result<String, ServiceError> {
        let listen = self.saved_listen_addr();
        if let Some(node) = self.take_node().await {
            node.shutdown().await.map_err(cluster_error)?;
        }
        let node = ClusterNode::force_new_cluster(self.config(listen))
            .await
            .map_err(|e| {
                *self.write_slot() = Slot::Error(error_chain(&e));
                cluster_error(e)
            })?;
        let id = node_id_str(node.id());
        self.activate(node);
        Ok(id)
    }

    /// `docker swarm join`.
    pub async fn join(
        &self,
        addrs: &Addresses,
        remote_addrs: &[String],
        token: &str,
    ) -> Result<(), ServiceError> {
        let _op = self.inner.ops.lock().await;
        if self.node().is_some() || ClusterNode::is_member(&self.inner.dir) {
            return Err(ServiceError::unavailable(ALREADY_IN_SWARM));
        }
        let remote = remote_addrs
            .iter()
            .find(|a| !a.is_empty())
            .ok_or_else(|| ServiceError::invalid("at least 1 RemoteAddr is required to join"))?;
        let remote = with_default_port(remote);
        if token.is_empty() {
            return Err(ServiceError::invalid("a join token is required to join"));
        }
        let listen = parse_listen_addr(&addrs.listen)?;
        let advertise = advertise_addr(&addrs.advertise, listen, Some(&remote))?;
        let mut config = self.config(listen);
        config.advertise_addr = Some(advertise);
        let node = ClusterNode::join(config, &remote, token)
            .await
            .map_err(cluster_error)?;
        self.save_listen_addr(listen)?;
        tracing::info!(node = %node_id_str(node.id()), %remote, "joined cluster");
        self.activate(node);
        // The CLI asks `/info` right after the join to print the role ("joined a swarm as
        // a manager"): answer once this node's own record, its role, reached its replica
        // (at most 5 s; the join itself is done either way).
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.node().is_some_and(|n| n.role().is_none()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Removes the node from the slot and waits until no request holds it any more.
    async fn take_node(&self) -> Option<ClusterNode> {
        let mut node = match std::mem::take(&mut *self.write_slot()) {
            Slot::Active(n) => n,
            _ => return None,
        };
        self.inner.phase.send_replace(ClusterPhase::Inactive);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Arc::try_unwrap(node) {
                Ok(n) => return Some(n),
                Err(shared) if Instant::now() < deadline => {
                    node = shared;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(shared) => {
                    // A request is stuck on the node: put it back rather than lose it.
                    self.activate_shared(shared);
                    return None;
                }
            }
        }
    }

    /// `docker swarm leave`. A manager must be forced (as in Docker); the node is demoted
    /// and removed through the cluster, and with `force` its local state goes even when the
    /// cluster cannot be reached.
    pub async fn leave(&self, force: bool) -> Result<(), ServiceError> {
        let _op = self.inner.ops.lock().await;
        let node = match self.node() {
            Some(n) => n,
            None if ClusterNode::is_member(&self.inner.dir) && force => {
                *self.write_slot() = Slot::Inactive;
                return self.remove_local_state();
            }
            None => return Err(ServiceError::unavailable(NOT_IN_SWARM)),
        };
        if node.role() == Some(NodeRole::Manager) && !force {
            return Err(ServiceError::unavailable(
                "You are attempting to leave the swarm on a node that is participating as a manager. \
                 Removing this node leaves fewer managers to keep quorum. \
                 Use `--force` to ignore this message.",
            ));
        }
        let node_id = node.id();
        drop(node);
        let node = self
            .take_node()
            .await
            .ok_or_else(|| ServiceError::unavailable("the cluster node is busy; try again"))?;
        let left = tokio::time::timeout(WRITE_TIMEOUT, node.leave()).await;
        *self.write_slot() = Slot::Inactive;
        match left {
            Ok(Ok(())) => {}
            Ok(Err(e)) if force => {
                tracing::warn!(error = %error_chain(&e), "leaving without the cluster's consent");
            }
            Err(_) if force => {
                tracing::warn!("leaving without the cluster's consent: no answer within 10 s");
            }
            Ok(Err(e)) => return Err(cluster_error(e)),
            Err(_) => {
                return Err(ServiceError::unavailable(
                    "the cluster did not confirm the leave within 10 s",
                ))
            }
        }
        self.inner
            .last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.remove_local_state()?;
        self.inner
            .phase
            .send_replace(ClusterPhase::Left { node_id });
        Ok(())
    }

    fn remove_local_state(&self) -> Result<(), ServiceError> {
        let dir = &self.inner.dir;
        for p in [
            dir.join("raft.redb"),
            dir.join("node.json"),
            dir.join("pki"),
            ListenFile::path(dir),
            // The node's WireGuard key (service::overlay_plane) goes with its membership.
            dir.join("wg.key"),
        ] {
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ServiceError::io("remove", &p, e)),
            }
        }
        Ok(())
    }

    /// What `/_ping` and `/info` report about this node.
    pub fn local_state(&self) -> LocalState {
        match &*self.inner.slot.read().unwrap_or_else(|p| p.into_inner()) {
            Slot::Inactive => LocalState::Inactive,
            Slot::Error(e) => LocalState::Error(e.clone()),
            Slot::Active(n) => LocalState::Active {
                node_id: node_id_str(n.id()),
                addr: n.advertise_addr().to_string(),
                manager: n.role() == Some(NodeRole::Manager),
            },
        }
    }

    /// `<data-root>/cluster`: the directory whose `pki/` holds this node's identity
    /// (`berth_consensus::pki::NodeIdentity::load` takes it).
    pub fn cluster_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The address the cluster's gRPC listens on (TCP); the mirror's peer transport
    /// binds the same address and port on UDP.
    pub fn listen_addr(&self) -> SocketAddr {
        self.saved_listen_addr()
    }

    /// This node's replica of the cluster state (no I/O), when it is a member.
    pub fn local_cluster_state(&self) -> Option<ClusterState> {
        self.node()
            .map(|n| n.state_view().read(|s: &ClusterState| s.clone()))
    }

    /// The cluster (`GET /swarm`); join tokens only on managers, as in Docker.
    pub async fn inspect(&self, with_tokens: bool) -> Result<SwarmView, ServiceError> {
        let node = self.active()?;
        let manager = node.role() == Some(NodeRole::Manager);
        if with_tokens && !manager {
            return Err(not_a_manager());
        }
        let state = node.state_view().read(|s: &ClusterState| s.clone());
        let tokens = if with_tokens {
            let t = tokio::time::timeout(WRITE_TIMEOUT, node.join_tokens())
                .await
                .map_err(|_| no_quorum())?
                .map_err(cluster_error)?;
            Some((t.worker.to_string(), t.manager.to_string()))
        } else {
            None
        };
        Ok(SwarmView {
            cluster_id: state.cluster_id.clone().unwrap_or_default(),
            version: state.settings.version,
            address_pools: state.address_pools.clone(),
            settings: state.settings.clone(),
            ca_cert_pem: std::fs::read_to_string(self.inner.dir.join("pki/ca.crt"))
                .unwrap_or_default(),
            tokens,
        })
    }

    /// This node's cluster handle if it is a manager; dockerd's 503 on a worker (and when
    /// not in a swarm).
    pub fn manager(&self) -> Result<Arc<ClusterNode>, ServiceError> {
        let node = self.active()?;
        if node.role() != Some(NodeRole::Manager) {
            return Err(not_a_manager());
        }
        Ok(node)
    }

    /// `docker swarm update`: replaces the cluster settings if the cluster is still at
    /// `expected_version` (else 400 `update out of sequence`, swarmkit's answer). Managers
    /// only, as in Docker.
    pub async fn update_settings(
        &self,
        expected_version: u64,
        settings: berth_consensus::ClusterSettings,
    ) -> Result<(), ServiceError> {
        self.manager()?;
        self.commit(berth_consensus::Command::UpdateClusterSettings {
            expected_version,
            settings,
        })
        .await
        .map(|_| ())
    }

    /// `docker swarm join-token --rotate`.
    pub async fn rotate_token(&self, role: NodeRole) -> Result<(), ServiceError> {
        let node = self.active()?;
        if node.role() != Some(NodeRole::Manager) {
            return Err(not_a_manager());
        }
        tokio::time::timeout(WRITE_TIMEOUT, node.rotate_join_token(role))
            .await
            .map_err(|_| no_quorum())?
            .map_err(cluster_error)
    }

    /// The running cluster node, for the services layer's reads (its replica) and writes;
    /// 503 with dockerd's words when this berthd is not part of a swarm.
    pub fn member(&self) -> Result<Arc<ClusterNode>, ServiceError> {
        self.node().ok_or_else(|| {
            ServiceError::unavailable(
                "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.",
            )
        })
    }

    /// Commits `command` through Raft from any node (forwarded to the leader), waiting at
    /// most [`WRITE_TIMEOUT`]. The outer error is "not a member" or "no quorum in time"
    /// (503); the inner result is the cluster's answer, for the caller to word its
    /// rejections ([`cluster_error`] maps the rest).
    pub async fn write(
        &self,
        command: berth_consensus::Command,
    ) -> Result<Result<berth_consensus::Response, ConsensusError>, ServiceError> {
        let node = self.member()?;
        tokio::time::timeout(WRITE_TIMEOUT, node.write(command))
            .await
            .map_err(|_| no_quorum())
    }

    /// Commits `command` and returns the cluster's answer. A refusal, whether answered
    /// (`Response::Rejected`) or raised (`ConsensusError::Rejected`), is worded by `reword`
    /// (the caller's Docker wording); other failures by [`cluster_error`].
    pub async fn commit_with(
        &self,
        command: berth_consensus::Command,
        reword: impl FnOnce(berth_consensus::Rejection) -> ServiceError,
    ) -> Result<berth_consensus::Response, ServiceError> {
        match self.write(command).await? {
            Ok(berth_consensus::Response::Rejected { rejection })
            | Err(ConsensusError::Rejected(rejection)) => Err(reword(rejection)),
            Ok(r) => Ok(r),
            Err(e) => Err(cluster_error(e)),
        }
    }

    /// [`ClusterService::commit_with`] with [`cluster_error`]'s wording of refusals.
    pub async fn commit(
        &self,
        command: berth_consensus::Command,
    ) -> Result<berth_consensus::Response, ServiceError> {
        self.commit_with(command, |r| cluster_error(ConsensusError::Rejected(r)))
            .await
    }

    /// Every node with its observed status (this node's replica: any node can answer).
    pub fn nodes(&self) -> Result<Vec<NodeView>, ServiceError> {
        let node = self.active()?;
        let me = node.id();
        let leader = node.leader();
        let records = node
            .state_view()
            .read(|s: &ClusterState| s.nodes.values().cloned().collect::<Vec<_>>());
        let seen = self
            .inner
            .last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(records
            .into_iter()
            .map(|record| NodeView {
                reachable: record.id == me
                    || seen
                        .get(&record.id)
                        .is_some_and(|t| t.elapsed() < DOWN_AFTER),
                leader: Some(record.id) == leader,
                is_self: record.id == me,
                record,
            })
            .collect())
    }

    /// This node's record, waiting up to 5 s for it to reach the local replica (right
    /// after a join).
    pub async fn node_view_self(&self) -> Result<NodeView, ServiceError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(me) = self.nodes()?.into_iter().find(|n| n.is_self) {
                return Ok(me);
            }
            if Instant::now() > deadline {
                return Err(ServiceError::unavailable(
                    "this node's record has not reached it yet; try again",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One node by id, unique id prefix or hostname.
    pub fn node_view(&self, name: &str) -> Result<NodeView, ServiceError> {
        let mut nodes = self.nodes()?;
        let mut matches: Vec<usize> = (0..nodes.len())
            .filter(|&i| !name.is_empty() && node_id_str(nodes[i].record.id).starts_with(name))
            .collect();
        if matches.is_empty() {
            matches = (0..nodes.len())
                .filter(|&i| nodes[i].record.hostname == name)
                .collect();
        }
        match matches.as_slice() {
            [one] => Ok(nodes.swap_remove(*one)),
            [] => Err(ServiceError::not_found(format!("node {name} not found"))),
            many => Err(ServiceError::invalid(format!(
                "node {name} is ambiguous ({} matches found)",
                many.len()
            ))),
        }
    }

    /// `POST /nodes/{id}/update`: a replacement spec checked against `version`.
    pub async fn update_node(
        &self,
        name: &str,
        version: u64,
        role: NodeRole,
        availability: Availability,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<(), ServiceError> {
        let target = self.node_view(name)?;
        let node = self.active()?;
        let update = NodeUpdate {
            expected_version: Some(version),
            role: (role != target.record.role).then_some(role),
            availability: Some(availability),
            labels: Some(labels),
        };
        tokio::time::timeout(WRITE_TIMEOUT, node.update_node(target.record.id, update))
            .await
            .map_err(|_| no_quorum())?
            .map_err(cluster_error)?;
        Ok(())
    }

    /// Sets only a node's availability, whatever its version (no `expected_version`: nothing
    /// else of the record is written, so a concurrent change of its description or labels
    /// is neither lost nor a conflict). Used for the `Availability` of `swarm init/join`.
    pub async fn set_availability(
        &self,
        name: &str,
        availability: Availability,
    ) -> Result<(), ServiceError> {
        let target = self.node_view(name)?;
        let node = self.active()?;
        let update = NodeUpdate {
            expected_version: None,
            role: None,
            availability: Some(availability),
            labels: None,
        };
        tokio::time::timeout(WRITE_TIMEOUT, node.update_node(target.record.id, update))
            .await
            .map_err(|_| no_quorum())?
            .map_err(cluster_error)?;
        Ok(())
    }

    /// `DELETE /nodes/{id}`: a node still reachable is removed only with `force`.
    pub async fn remove_node(&self, name: &str, force: bool) -> Result<(), ServiceError> {
        let target = self.node_view(name)?;
        let node = self.active()?;
        if target.record.role == NodeRole::Manager {
            return Err(ServiceError::conflict(format!(
                "node {} is a cluster manager: demote it to worker before removal",
                node_id_str(target.record.id)
            )));
        }
        if target.reachable && !force {
            return Err(ServiceError::conflict(format!(
                "node {} is not down and can't be removed",
                node_id_str(target.record.id)
            )));
        }
        tokio::time::timeout(WRITE_TIMEOUT, node.remove_node(target.record.id))
            .await
            .map_err(|_| no_quorum())?
            .map_err(cluster_error)
    }

    /// Stops the node at daemon shutdown; its state stays for the next start.
    pub async fn shutdown(&self) {
        if let Some(node) = self.take_node().await {
            if let Err(e) = node.shutdown().await {
                tracing::warn!(error = %error_chain(&e), "cluster node shutdown");
            }
        }
    }

    /// Probes every other node's cluster port; runs for the life of the daemon.
    fn spawn_prober(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let svc = ClusterService { inner };
                let Some(node) = svc.node() else { continue };
                let me = node.id();
                let targets: Vec<(NodeId, String)> = node.state_view().read(|s: &ClusterState| {
                    s.nodes
                        .values()
                        .filter(|n| n.id != me)
                        .map(|n| (n.id, n.addr.clone()))
                        .collect()
                });
                drop(node);
                let probes = targets.into_iter().map(|(id, addr)| async move {
                    let ok = tokio::time::timeout(
                        PROBE_EVERY,
                        tokio::net::TcpStream::connect(addr.as_str()),
                    )
                    .await
                    .is_ok_and(|r| r.is_ok());
                    (id, ok)
                });
                let results = futures::future::join_all(probes).await;
                let now = Instant::now();
                let mut seen = svc
                    .inner
                    .last_seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for (id, ok) in results {
                    if ok {
                        seen.insert(id, now);
                    }
                }
            }
        });
    }
}

/// Docker-style string id of a node.
pub fn node_id_str(id: NodeId) -> String {
    format!("{id:016x}")
}

fn not_a_manager() -> ServiceError {
    ServiceError::unavailable(
        "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. \
         Please run this command on a manager node or promote the current node to a manager.",
    )
}

fn no_quorum() -> ServiceError {
    ServiceError::unavailable(format!(
        "the cluster did not commit the change within {} s: no leader with a quorum is reachable",
        WRITE_TIMEOUT.as_secs()
    ))
}

/// The error with its sources, for messages that travel to the client.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

/// Consensus failures by what the client can do about them.
pub fn cluster_error(e: ConsensusError) -> ServiceError {
    let message = error_chain(&e);
    match &e {
        ConsensusError::Rejected(r) => match r {
            Rejection::NodeNotFound { .. }
            | Rejection::ServiceNotFound { .. }
            | Rejection::TaskNotFound { .. } => ServiceError::not_found(message),
            Rejection::NetworkNotFound { .. } | Rejection::EndpointNotFound { .. } => {
                ServiceError::not_found(r.to_string())
            }
            Rejection::NetworkNameConflict { .. }
            | Rejection::NetworkExists { .. }
            | Rejection::NetworkInUse { .. }
            | Rejection::AddressInUse { .. }
            | Rejection::EndpointExists { .. } => ServiceError::conflict(r.to_string()),
            Rejection::NotAttachable { .. } => ServiceError::Forbidden {
                message: r.to_string(),
            },
            Rejection::NetworkInvalid { .. }
            | Rejection::PoolExhausted
            | Rejection::AddressesExhausted { .. } => ServiceError::invalid(r.to_string()),
            Rejection::VersionMismatch { .. }
            | Rejection::LastManager { .. }
            | Rejection::RemoveManager { .. }
            | Rejection::NodeExists { .. }
            | Rejection::ServiceNameConflict { .. }
            | Rejection::ServiceExists { .. } => ServiceError::conflict(message),
            // `update out of sequence`, a rename, a task rule: the request was wrong.
            _ => ServiceError::invalid(message),
        },
        ConsensusError::MalformedToken { .. }
        | ConsensusError::CaFingerprintMismatch { .. }
        | ConsensusError::JoinRefused { .. } => ServiceError::invalid(message),
        ConsensusError::AlreadyMember { .. } => ServiceError::unavailable(ALREADY_IN_SWARM),
        ConsensusError::NotMember { .. } => ServiceError::unavailable(NOT_IN_SWARM),
        ConsensusError::Bind { .. } => ServiceError::invalid(message),
        ConsensusError::NotManager { .. } => not_a_manager(),
        _ if e.is_retryable() => ServiceError::unavailable(message),
        ConsensusError::Connect { .. } | ConsensusError::Rpc { .. } | ConsensusError::Shutdown => {
            ServiceError::unavailable(message)
        }
        _ => ServiceError::Cluster(message),
    }
}

/// `host:port` with Swarm's default port when none is given.
fn with_default_port(addr: &str) -> String {
    if addr.parse::<SocketAddr>().is_ok() {
        return addr.to_string();
    }
    match addr.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() && !addr.ends_with(']') => addr.to_string(),
        _ => format!("{addr}:{DEFAULT_PORT}"),
    }
}

/// `ListenAddr` as Docker accepts it: `IP[:PORT]` or `INTERFACE[:PORT]`; empty means
/// `0.0.0.0:2377`.
fn parse_listen_addr(s: &str) -> Result<SocketAddr, ServiceError> {
    if s.is_empty() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)));
    }
    let (host, port) = split_host_port(s)?;
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => interface_addr(host)?,
    };
    Ok(SocketAddr::new(ip, port.unwrap_or(DEFAULT_PORT)))
}

fn split_host_port(s: &str) -> Result<(&str, Option<u16>), ServiceError> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        let host = s
            .rsplit_once(':')
            .map_or(s, |(h, _)| h.trim_matches(['[', ']']));
        return Ok((host, Some(sa.port())));
    }
    if s.parse::<IpAddr>().is_ok() {
        return Ok((s, None));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .map_err(|_| ServiceError::invalid(format!("invalid port in address {s:?}")))?;
            Ok((h, Some(port)))
        }
        None => Ok((s, None)),
    }
}

/// The first IPv4 address (else IPv6) of interface `name`.
fn interface_addr(name: &str) -> Result<IpAddr, ServiceError> {
    let addrs = local_addresses()?;
    let mut of_if: Vec<IpAddr> = addrs
        .into_iter()
        .filter(|(i, _)| i == name)
        .map(|(_, a)| a)
        .collect();
    of_if.sort_by_key(|a| a.is_ipv6());
    of_if.first().copied().ok_or_else(|| {
        ServiceError::invalid(format!(
            "failed to listen on {name:?}: neither an IP address nor an interface with an address"
        ))
    })
}

/// (interface, address) of every configured address.
fn local_addresses() -> Result<Vec<(String, IpAddr)>, ServiceError> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| ServiceError::invalid(format!("listing interface addresses: {e}")))?;
    Ok(addrs
        .filter_map(|a| {
            let sa = a.address?;
            let ip = if let Some(v4) = sa.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(sa.as_sockaddr_in6()?.ip())
            };
            Some((a.interface_name, ip))
        })
        .collect())
}

/// The address other nodes dial: `AdvertiseAddr` (IP, IP:PORT or interface), else the
/// listen IP when specific, else the address that routes to `remote` (join), else the one
/// global address of this host.
fn advertise_addr(
    s: &str,
    listen: SocketAddr,
    remote: Option<&str>,
) -> Result<String, ServiceError> {
    let port_default = listen.port();
    if !s.is_empty() {
        let (host, port) = split_host_port(s)?;
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => interface_addr(host)?,
        };
        if ip.is_unspecified() {
            return Err(ServiceError::invalid(format!(
                "advertise address must be a non-zero IP address or network interface (with optional port number): {s}"
            )));
        }
        return Ok(SocketAddr::new(ip, port.unwrap_or(port_default)).to_string());
    }
    if !listen.ip().is_unspecified() {
        return Ok(listen.to_string());
    }
    if let Some(remote) = remote {
        if let Some(ip) = route_source(remote) {
            return Ok(SocketAddr::new(ip, port_default).to_string());
        }
    }
    let candidates: Vec<(String, IpAddr)> = local_addresses()?
        .into_iter()
        .filter(|(name, ip)| {
            !ip.is_loopback()
                && !ip.is_unspecified()
                && !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
                && name != "berth0"
                && !name.starts_with("br-")
        })
        .collect();
    match candidates.as_slice() {
        [(_, ip)] => Ok(SocketAddr::new(*ip, port_default).to_string()),
        [] => Err(ServiceError::invalid(
            "could not find the system's IP address - specify one with --advertise-addr",
        )),
        many => Err(ServiceError::invalid(format!(
            "could not choose an IP address to advertise since this system has multiple addresses ({}) - specify one with --advertise-addr",
            many.iter()
                .map(|(n, ip)| format!("{ip} on {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The local address the kernel picks to reach `remote` (`host:port`), without sending.
fn route_source(remote: &str) -> Option<IpAddr> {
    use std::net::ToSocketAddrs;
    let target = remote.to_socket_addrs().ok()?.next()?;
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = std::net::UdpSocket::bind(bind).ok()?;
    sock.connect(target).ok()?;
    Some(sock.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_take_swarms_default_port() {
        assert_eq!(
            parse_listen_addr("").unwrap(),
            "0.0.0.0:2377".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("0.0.0.0:4000").unwrap(),
            "0.0.0.0:4000".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("10.1.2.3").unwrap(),
            "10.1.2.3:2377".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("lo:2400").unwrap(),
            "127.0.0.1:2400".parse().unwrap()
        );
        assert!(parse_listen_addr("10.1.2.3:notaport").is_err());
        assert!(parse_listen_addr("no-such-interface0").is_err());
    }

    #[test]
    fn advertise_addresses() {
        let any: SocketAddr = "0.0.0.0:2377".parse().unwrap();
        assert_eq!(
            advertise_addr("10.0.0.5", any, None).unwrap(),
            "10.0.0.5:2377"
        );
        assert_eq!(
            advertise_addr("10.0.0.5:3000", any, None).unwrap(),
            "10.0.0.5:3000"
        );
        assert_eq!(
            advertise_addr("", "10.0.0.7:2377".parse().unwrap(), None).unwrap(),
            "10.0.0.7:2377"
        );
        assert_eq!(
            advertise_addr("", any, Some("127.0.0.1:2377")).unwrap(),
            "127.0.0.1:2377"
        );
        assert!(advertise_addr("0.0.0.0", any, None).is_err());
    }

    #[test]
    fn remote_addresses_get_the_default_port() {
        assert_eq!(with_default_port("10.0.0.1"), "10.0.0.1:2377");
        assert_eq!(with_default_port("10.0.0.1:4000"), "10.0.0.1:4000");
        assert_eq!(with_default_port("manager1"), "manager1:2377");
        assert_eq!(with_default_port("[::1]:4000"), "[::1]:4000");
    }

    #[test]
    fn rejections_map_to_client_errors() {
        let e = cluster_error(ConsensusError::Rejected(Rejection::NodeNotFound { id: 1 }));
        assert!(matches!(e, ServiceError::NotFound { .. }));
        let e = cluster_error(ConsensusError::Rejected(Rejection::VersionMismatch {
            id: 1,
            expected: 2,
            actual: 3,
        }));
        assert!(matches!(e, ServiceError::Conflict { .. }));
        let e = cluster_error(ConsensusError::NoLeader { attempts: 3 });
        assert!(matches!(e, ServiceError::Unavailable { .. }));
    }
}
