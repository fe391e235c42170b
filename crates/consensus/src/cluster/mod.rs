//! The node handle berthd drives: init, join, restart, leave, writes, reads, node admin.
//!
//! Owns: the lifecycle of one node (data directory layout, Raft instance, gRPC server),
//! forwarding leader operations to the leader, the join protocol on the joining side, and
//! force-new-cluster.
//!
//! Does not own: the meaning of commands ([`crate::state`]), storage ([`crate::store`]),
//! wire encodings ([`crate::transport`]), certificates ([`crate::pki`]).
//!
//! ```text
//!  berthd ─> ClusterNode::write(cmd) ─> on_leader ─┬─ leader is me ──> execute_as_leader ─> raft.client_write
//!                                                  └─ leader is L ───> gRPC Forward ─> L: execute_as_leader
//!  joiner: GetCaCertificate ─> check fingerprint ─> Join(secret, CSR) ─> cert ─> start raft ─> AddMember
//! ```
//!
//! Managers are Raft voters; workers are Raft learners. Learners were chosen over plain
//! clients because every node then holds a replica of the state (the agent can read and
//! watch it locally, reads do not load the managers), promotion is a membership change of an
//! already caught-up node, and one code path serves both roles. Workers never hold the CA
//! key, and join-token secrets are not in the state (only their generations), so a
//! worker's replica grants nothing; later secret objects must be stored encrypted.
//!
//! Data directory: `node.json` (id, advertise address), `pki/` (certificates; `ca.key` on
//! managers), `raft.redb` (log, vote, applied state, snapshot).

mod batcher;
mod compaction;
mod config;
mod leader;
mod liveness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use config::NodeFile;
pub use config::{ClusterConfig, RaftTuning};

use crate::error::ConsensusError;
use crate::pki::seal::Sealed;
use crate::pki::{self, tls, JoinToken, NodeIdentity};
use crate::raft_types::Raft;
use crate::state::ObjectKind;
use crate::state::{
    ClusterState, Command, NodeId, NodeRecord, NodeRole, NodeSpec, NodeUpdate, Response,
};
use crate::store::{self, StateView};
use crate::transport::join::{JoinApplication, JoinGrant};
use crate::transport::leader_op::{
    LeaderReply, LeaderRequest, PlainValue, RemoteError, TaskCaller,
};
use crate::transport::network::{Network, PeerChannels};
use crate::transport::pb::cluster_client::ClusterClient;
use crate::transport::pb::tasks_client::TasksClient;
use crate::transport::pb::{ForwardResponse, GetCaCertificateRequest};
use crate::transport::task_logs::{TaskLogLine, TaskLogQuery, TaskLogSource};
use crate::transport::{server, MAX_MESSAGE_BYTES};

/// How long leader operations retry while no leader is known or the leader moves.
const LEADER_RETRY_WINDOW: Duration = Duration::from_secs(20);
/// Longest a heartbeat may take (one attempt, no retry): a late heartbeat is worthless, the
/// next one is due soon.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a write waits for this node to apply it after the leader committed it.
const LOCAL_APPLY_WAIT: Duration = Duration::from_secs(5);
/// Metadata key marking a forwarded request (the receiver must not forward again).
pub(crate) const FORWARDED: &str = "x-berth-forwarded";

/// Freshness of a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadConsistency {
    /// This node's applied state: may lag the leader, never blocks.
    Local,
    /// Confirmed by the leader with a quorum round (any node; forwarded when needed).
    Linearizable,
}

/// Both join tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinTokens {
    /// Grants the manager role.
    pub manager: JoinToken,
    /// Grants the worker role.
    pub worker: JoinToken,
}

impl std::fmt::Debug for JoinTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTokens").finish_non_exhaustive()
    }
}

/// Shared internals of a running node (also used by the gRPC server).
pub(crate) struct NodeCore {
    id: NodeId,
    data_dir: PathBuf,
    advertise_addr: String,
    raft: Raft,
    state: StateView,
    identity: RwLock<NodeIdentity>,
    peers: PeerChannels,
    batcher: batcher::WriteBatcher,
    liveness: Arc<liveness::LeaderLiveness>,
    task_logs: Option<Arc<dyn TaskLogSource>>,
}

impl NodeCore {
    pub(crate) fn identity(&self) -> NodeIdentity {
        self.identity
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn state_view(&self) -> StateView {
        self.state.clone()
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// What serves this node's task logs to other nodes, if anything.
    pub(crate) fn task_logs(&self) -> Option<Arc<dyn TaskLogSource>> {
        self.task_logs.clone()
    }

    /// Send `op` to the node at `addr`. `forwarded`: the receiver must execute, not forward.
    pub(crate) async fn forward_to(
        &self,
        addr: &str,
        op: &LeaderRequest,
        forwarded: bool,
    ) -> Result<LeaderReply, ConsensusError> {
        let channel = self.peers.get(addr)?;
        let mut client = ClusterClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(op.try_into()?);
        request.set_timeout(Duration::from_secs(40));
        if forwarded {
            request
                .metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        }
        let response: ForwardResponse = client
            .forward(request)
            .await
            .map_err(|status| ConsensusError::Rpc {
                rpc: "Forward",
                addr: addr.to_string(),
                status: Box::new(status),
            })?
            .into_inner();
        let result: Result<LeaderReply, RemoteError> = (&response).try_into()?;
        result.map_err(|e| e.into_error(addr))
    }

    /// Run `op` on the leader: here if this node leads, else forwarded. Retries while the
    /// leader is unknown or moves, up to [`LEADER_RETRY_WINDOW`].
    pub(crate) async fn on_leader(&self, op: LeaderRequest) -> Result<LeaderReply, ConsensusError> {
        self.on_leader_from(op, "", true, LEADER_RETRY_WINDOW).await
    }

    /// What Raft's metrics say about this node's leadership now.
    fn leader_view(&self) -> liveness::LeaderView {
        liveness::LeaderView::of(self.id, &self.raft.metrics().borrow())
    }

    /// Note `node`'s heartbeat in the leader's table; false when this node does not lead.
    pub(crate) fn record_heartbeat(&self, node: NodeId) -> bool {
        self.liveness
            .record(self.leader_view(), node, Instant::now())
    }

    async fn on_leader_from(
        &self,
        op: LeaderRequest,
        caller_fp: &str,
        may_forward: bool,
        retry_window: Duration,
    ) -> Result<LeaderReply, ConsensusError> {
        let deadline = Instant::now() + retry_window;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let leader = self.raft.current_leader().await;
            let result = match leader {
                Some(l) if l == self.id => self.execute_as_leader(op.clone(), caller_fp).await,
                Some(l) if may_forward => match self.member_addr(l) {
                    Some(addr) => self.forward_to(&addr, &op, true).await,
                    None => Err(ConsensusError::NoLeader { attempts }),
                },
                Some(l) => return Err(ConsensusError::NotLeader { leader: Some(l) }),
                None => Err(ConsensusError::NoLeader { attempts }),
            };
            match result {
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, attempts, "leader operation retried");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(ConsensusError::NoLeader { .. }) => {
                    return Err(ConsensusError::NoLeader { attempts })
                }
                other => return other,
            }
        }
    }

    /// Entry point of the `Forward` RPC.
    pub(crate) async fn handle_forward(
        &self,
        op: LeaderRequest,
        caller_fp: &str,
        forwarded: bool,
    ) -> Result<LeaderReply, ConsensusError> {
        if forwarded || matches!(op, LeaderRequest::FetchCaKey) {
            self.execute_as_leader(op, caller_fp).await
        } else {
            self.on_leader_from(op, caller_fp, true, LEADER_RETRY_WINDOW)
                .await
        }
    }
}

/// A running cluster node. Dropping it without [`shutdown`](Self::shutdown) leaves its
/// tasks running until the runtime stops; call `shutdown`.
pub struct ClusterNode {
    core: Arc<NodeCore>,
    local_addr: SocketAddr,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// Follows Raft's metrics into the leader's liveness table (aborted at shutdown).
    leadership_watcher: JoinHandle<()>,
    /// Asks Raft for snapshots and purges as the settings say (aborted at shutdown).
    compaction_watcher: JoinHandle<()>,
    /// Dropped to zero strong references once Raft's tasks have released the store.
    db: std::sync::Weak<redb::Database>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.core.id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

fn random_node_id() -> NodeId {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

fn raft_err(op: &'static str) -> impl FnOnce(openraft::error::Fatal<NodeId>) -> ConsensusError {
    move |e| ConsensusError::Raft {
        op,
        source: Box::new(e),
    }
}

impl ClusterNode {
    /// True when `data_dir` holds a cluster node (restart with [`restart`](Self::restart)).
    pub fn is_member(data_dir: &Path) -> bool {
        NodeFile::path(data_dir).exists() && NodeIdentity::exists(data_dir)
    }

    /// Create a new cluster with this node as its only manager (`docker swarm init`).
    pub async fn init(config: ClusterConfig) -> Result<ClusterNode, ConsensusError> {
        Self::refuse_existing(&config.data_dir)?;
        let listener = bind(config.listen_addr).await?;
        let local_addr = local_addr(&listener, config.listen_addr)?;
        let advertise = config
            .advertise_addr
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let id = random_node_id();
        let identity = pki::new_cluster(id)?;
        let cluster_id = hex::encode(rand::random::<[u8; 16]>());
        identity.save(&config.data_dir)?;
        let node = Self::start(
            &config,
            listener,
            local_addr,
            id,
            advertise.clone(),
            identity,
        )
        .await?;
        let members = BTreeMap::from([(id, BasicNode::new(advertise.clone()))]);
        node.core
            .raft
            .initialize(members)
            .await
            .map_err(|e| ConsensusError::Raft {
                op: "initialize",
                source: Box::new(e),
            })?;
        let first = NodeSpec {
            id,
            hostname: config.hostname.clone(),
            addr: advertise.clone(),
            role: NodeRole::Manager,
            cert_fingerprint: node.core.identity().cert_fingerprint(),
        };
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        node.write(Command::InitCluster {
            cluster_id: cluster_id.clone(),
            first_node: first,
            networking: Some(crate::state::InitNetworking {
                ingress_id: berth_orchestrator::task_id_from_bytes(rand::random()),
                pools: config.address_pools.clone(),
                at,
            }),
        })
        .await?;
        let settings = node.core.state.read(|s| s.settings.clone());
        if (
            settings.snapshot_interval,
            settings.log_entries_for_slow_followers,
        ) != (config.raft.snapshot_every, config.raft.keep_after_snapshot)
        {
            node.write(Command::UpdateClusterSettings {
                expected_version: settings.version,
                settings: crate::state::ClusterSettings {
                    snapshot_interval: config.raft.snapshot_every,
                    log_entries_for_slow_followers: config.raft.keep_after_snapshot,
                    ..settings
                },
            })
            .await?;
        }
        NodeFile::new(id, advertise, config.hostname.clone(), cluster_id).save(&config.data_dir)?;
        Ok(node)
    }

    /// Join the cluster that `remote_addr` (a manager's `host:port`) belongs to, with a
    /// `SWMTKN-1-...` token (`docker swarm join`).
    pub async fn join(
        config: ClusterConfig,
        remote_addr: &str,
        token: &str,
    ) -> Result<ClusterNode, ConsensusError> {
        Self::refuse_existing(&config.data_dir)?;
        let token: JoinToken = token.parse()?;
        // 1. The remote's CA, checked against the token's fingerprint.
        let ca_cert_der = fetch_ca(remote_addr).await?;
        let actual = pki::fingerprint(&ca_cert_der);
        if actual != token.ca_fingerprint {
            return Err(ConsensusError::CaFingerprintMismatch {
                expected: token.ca_fingerprint,
                actual,
            });
        }
        let listener = bind(config.listen_addr).await?;
        let local_addr = local_addr(&listener, config.listen_addr)?;
        let advertise = config
            .advertise_addr
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        // 2. Prove the secret over a server-verified connection, get a certificate.
        let id = random_node_id();
        let (key_der, csr_der) = pki::new_csr(id)?;
        let application = JoinApplication {
            secret: token.secret.clone(),
            node_id: id,
            hostname: config.hostname.clone(),
            advertise_addr: advertise.clone(),
            csr_der,
        };
        let grant = request_join(remote_addr, &ca_cert_der, application).await?;
        let identity = NodeIdentity {
            ca_cert_der,
            cert_der: grant.node_cert_der,
            key_der,
            ca_key_der: grant.ca_key_der,
        };
        tls::verify_node_cert(&identity.ca_cert_der, &identity.cert_der)?;
        identity.save(&config.data_dir)?;
        NodeFile::new(
            id,
            advertise.clone(),
            config.hostname.clone(),
            grant.cluster_id,
        )
        .save(&config.data_dir)?;
        // 3. Start Raft and the server, then ask the leader to add us as a member.
        let node = match Self::start(&config, listener, local_addr, id, advertise, identity).await {
            Ok(node) => node,
            Err(e) => {
                let _ = remove_cluster_files(&config.data_dir);
                return Err(e);
            }
        };
        let deadline = Instant::now() + LEADER_RETRY_WINDOW;
        loop {
            match node
                .core
                .forward_to(remote_addr, &LeaderRequest::AddMember { id }, false)
                .await
            {
                Ok(_) => break,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    // Leave the data dir as it was so the join can be retried; the admitted
                    // (never activated) node record can be removed with `remove_node`.
                    let _ = node.shutdown().await;
                    let _ = remove_cluster_files(&config.data_dir);
                    return Err(e);
                }
            }
        }
        Ok(node)
    }

    /// Restart a node from its data directory (certificates, Raft log and state).
    pub async fn restart(config: ClusterConfig) -> Result<ClusterNode, ConsensusError> {
        if !Self::is_member(&config.data_dir) {
            return Err(ConsensusError::NotMember {
                dir: config.data_dir.clone(),
            });
        }
        let file = NodeFile::load(&config.data_dir)?;
        let identity = NodeIdentity::load(&config.data_dir)?;
        let listener = bind(config.listen_addr).await?;
        let local_addr = local_addr(&listener, config.listen_addr)?;
        let advertise = config.advertise_addr.clone().unwrap_or(file.advertise_addr);
        Self::start(&config, listener, local_addr, file.id, advertise, identity).await
    }

    /// Quorum-loss recovery (`--force-new-cluster`): restart this manager as the only voter,
    /// keeping all state. Other managers are demoted to workers in the state and dropped
    /// from Raft membership (they must rejoin); workers stay learners.
    pub async fn force_new_cluster(config: ClusterConfig) -> Result<ClusterNode, ConsensusError> {
        if !Self::is_member(&config.data_dir) {
            return Err(ConsensusError::NotMember {
                dir: config.data_dir.clone(),
            });
        }
        let file = NodeFile::load(&config.data_dir)?;
        rewrite_membership_for_force_new_cluster(&config.data_dir, file.id)?;
        let node = Self::restart(config).await?;
        node.wait_for_leader(Duration::from_secs(20)).await?;
        node.write(Command::ForceNewCluster { survivor: file.id })
            .await?;
        Ok(node)
    }

    fn refuse_existing(data_dir: &Path) -> Result<(), ConsensusError> {
        if Self::is_member(data_dir) || data_dir.join("raft.redb").exists() {
            return Err(ConsensusError::AlreadyMember {
                dir: data_dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(data_dir).map_err(|e| ConsensusError::io(data_dir, e))
    }

    async fn start(
        config: &ClusterConfig,
        listener: tokio::net::TcpListener,
        local_addr: SocketAddr,
        id: NodeId,
        advertise_addr: String,
        identity: NodeIdentity,
    ) -> Result<ClusterNode, ConsensusError> {
        let path = config.data_dir.join("raft.redb");
        let (log_store, sm) = store::blocking(move || store::open(&path)).await?;
        let db = log_store.db_weak();
        let state = sm.view();
        let peers = PeerChannels::new(tls::client_config(&identity)?);
        let server_tls = tls::server_config(&identity)?;
        let raft_config = Arc::new(config.raft.openraft_config()?);
        let raft = Raft::new(id, raft_config, Network::new(peers.clone()), log_store, sm)
            .await
            .map_err(raft_err("start raft"))?;
        let batcher = batcher::WriteBatcher::spawn(raft.clone(), advertise_addr.clone());
        let liveness = Arc::new(liveness::LeaderLiveness::new(id));
        let leadership_watcher =
            tokio::spawn(watch_leadership(id, raft.metrics(), liveness.clone()));
        let compaction_watcher = tokio::spawn(compaction::watch(raft.clone(), state.clone()));
        let core = Arc::new(NodeCore {
            id,
            data_dir: config.data_dir.clone(),
            advertise_addr,
            batcher,
            raft,
            state,
            identity: RwLock::new(identity),
            peers,
            liveness,
            task_logs: config.task_logs.clone(),
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server_core = core.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.await;
            };
            if let Err(e) = server::serve(listener, server_tls, server_core, shutdown).await {
                tracing::error!(error = %e, "cluster gRPC server stopped");
            }
        });
        Ok(ClusterNode {
            core,
            local_addr,
            server: Some((stop_tx, task)),
            leadership_watcher,
            compaction_watcher,
            db,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.core.id
    }

    /// Address the gRPC server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Address other nodes use for this node.
    pub fn advertise_addr(&self) -> &str {
        &self.core.advertise_addr
    }

    /// Current leader as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.core.raft.metrics().borrow().current_leader
    }

    /// Wait until a leader is known.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ConsensusError> {
        let mut rx = self.core.raft.metrics();
        let wait = async {
            loop {
                if let Some(l) = rx.borrow_and_update().current_leader {
                    return Ok(l);
                }
                if rx.changed().await.is_err() {
                    return Err(ConsensusError::Shutdown);
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(ConsensusError::NoLeader { attempts: 1 }),
        }
    }

    /// Raft metrics (leader, term, log indexes, membership) as a watch channel.
    pub fn raft_metrics(
        &self,
    ) -> tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>> {
        self.core.raft.metrics()
    }

    /// Append a command through Raft, from any node (forwarded to the leader when this node
    /// is not it). Returns once committed and applied on the leader and applied on this
    /// node too (read-your-writes: a client that writes through a worker and reads back
    /// from it sees its write, as docker-py's `services.create` does); a `Rejected`
    /// response becomes [`ConsensusError::Rejected`].
    pub async fn write(&self, command: Command) -> Result<Response, ConsensusError> {
        match self
            .core
            .on_leader(LeaderRequest::Write { command })
            .await?
        {
            LeaderReply::Written { response, index } => {
                self.wait_applied_locally(index).await;
                Ok(response)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Seals `value` of the new object `id` of `kind` with the cluster's at-rest key (on the
    /// leader, which holds the CA key it is derived from; the value crosses only the mTLS
    /// channel). The sealed value goes into [`Command::CreateObject`].
    pub async fn seal_object(
        &self,
        kind: ObjectKind,
        id: &str,
        value: &[u8],
    ) -> Result<Sealed, ConsensusError> {
        let op = LeaderRequest::Seal {
            kind,
            id: id.to_string(),
            value: PlainValue::from_bytes(value),
        };
        match self.core.on_leader(op).await? {
            LeaderReply::Sealed { sealed } => Ok(sealed),
            other => Err(unexpected(other)),
        }
    }

    /// The values of objects `ids` of `kind`, opened by the leader. Secrets need `task`:
    /// a task of this node whose service references each of them (the leader checks this
    /// node's certificate); configs are open to any member. Errors: a `Rejected`
    /// ([`Rejection::ObjectNotFound`](crate::Rejection::ObjectNotFound),
    /// `ObjectNotForTask`, `NotTaskNode`), [`ConsensusError::Seal`] (a value that does not
    /// open), leader and transport errors.
    pub async fn open_objects(
        &self,
        kind: ObjectKind,
        ids: Vec<String>,
        task: Option<String>,
    ) -> Result<Vec<(String, Vec<u8>)>, ConsensusError> {
        let op = LeaderRequest::Open {
            kind,
            ids,
            task: task.map(|task_id| TaskCaller {
                node_id: self.core.id,
                task_id,
            }),
        };
        match self.core.on_leader(op).await? {
            LeaderReply::Opened { values } => values
                .into_iter()
                .map(|(id, v)| Ok((id, v.to_bytes()?)))
                .collect(),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until this node's state machine has applied log `index` (at most
    /// [`LOCAL_APPLY_WAIT`]). A committed entry reaches a follower with the leader's next
    /// append or heartbeat (every 100 ms in berthd), so this is short; past the bound the
    /// write stands and only the read-back may lag, which is logged.
    async fn wait_applied_locally(&self, index: u64) {
        let mut rx = self.core.state.applied_watch();
        let wait = async {
            while *rx.borrow_and_update() < index {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(LOCAL_APPLY_WAIT, wait).await.is_err() {
            tracing::warn!(
                index,
                "write committed but not applied on this node within {LOCAL_APPLY_WAIT:?}"
            );
        }
    }

    /// Tell the leader this node is alive (the agent calls it every 250 ms). Not a Raft
    /// write: one RPC to the leader (or a map insert when this node leads), which records
    /// the time in memory ([`heartbeats`](Self::heartbeats)). One attempt of at most
    /// [`HEARTBEAT_TIMEOUT`], no retry. Errors: [`ConsensusError::NoLeader`] (none known, or
    /// it did not answer in time), `NotLeader` (it just lost leadership), RPC errors.
    pub async fn heartbeat(&self) -> Result<(), ConsensusError> {
        let op = LeaderRequest::Heartbeat {
            node_id: self.core.id,
        };
        let attempt = self.core.on_leader_from(op, "", true, Duration::ZERO);
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, attempt).await {
            Ok(Ok(LeaderReply::Done)) => Ok(()),
            Ok(Ok(other)) => Err(unexpected(other)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConsensusError::NoLeader { attempts: 1 }),
        }
    }

    /// On the leader: when this leadership began (`since`: when this node saw itself lead
    /// in its current term) and when each node last heartbeated in it, this node counted
    /// as now. `None` on a node that does not lead. The table is in memory only and starts
    /// empty at every change of leader or term, so a new leader knows nothing of nodes that
    /// have not reached it yet: grant a grace period after `since` before calling one down.
    pub fn heartbeats(&self) -> Option<(Instant, BTreeMap<NodeId, Instant>)> {
        self.core
            .liveness
            .table(self.core.leader_view(), Instant::now())
    }

    /// A watch on the log index of the last entry applied to this node's state (see
    /// [`StateView::applied_watch`]): `changed()` resolves after every applied batch, when
    /// [`state_view`](Self::state_view) already shows it.
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.core.state.applied_watch()
    }

    /// Whether this node leads and its applied state holds every entry committed before
    /// its leadership began, i.e. it is safe to run the orchestrator on
    /// [`state_view`](Self::state_view).
    ///
    /// A new leader's log holds every committed entry (Raft's leader completeness), but its
    /// state machine may not have applied them yet: the previous leader's last
    /// `Orchestrate` (tasks created, assigned) may be committed and not applied here.
    /// Planning on that stale state would create or place the same tasks again (apply-time
    /// checks refuse some of that, not all, e.g. a second task for an empty-looking slot
    /// whose holder is in the unapplied entry). So readiness is: leader, and applied up to
    /// the last log index seen when this leadership began; those entries commit (with the
    /// new leader's first entry) and apply within a round trip.
    pub async fn is_ready_leader(&self) -> bool {
        if self.core.raft.current_leader().await != Some(self.core.id) {
            return false;
        }
        let Some(ready) = self
            .core
            .liveness
            .ready_index(self.core.leader_view(), Instant::now())
        else {
            return false;
        };
        let applied = self.core.state.last_applied().map_or(0, |l| l.index);
        applied >= ready
    }

    /// The cluster state.
    pub async fn state(
        &self,
        consistency: ReadConsistency,
    ) -> Result<ClusterState, ConsensusError> {
        match consistency {
            ReadConsistency::Local => Ok(self.core.state.read(|s| s.clone())),
            ReadConsistency::Linearizable => {
                match self.core.on_leader(LeaderRequest::Read).await? {
                    LeaderReply::State { state } => Ok(*state),
                    other => Err(unexpected(other)),
                }
            }
        }
    }

    /// The logs of the task containers `query` selects on the node at `addr` (a node's
    /// `host:port`), as that node's [`TaskLogSource`] reads them, in chunks of lines. The
    /// stream ends when that node's readers are done (a follow: never); dropping it cancels
    /// the call, which stops them. Errors: connecting, or the call refused (certificate,
    /// no source there); a failure mid-stream is the stream's last item.
    pub async fn task_logs(
        &self,
        addr: &str,
        query: &TaskLogQuery,
    ) -> Result<
        impl futures::Stream<Item = Result<Vec<TaskLogLine>, ConsensusError>> + Send + 'static,
        ConsensusError,
    > {
        let rpc_error = |addr: &str, status| ConsensusError::Rpc {
            rpc: "Tasks.Logs",
            addr: addr.to_string(),
            status: Box::new(status),
        };
        let channel = self.core.peers.get(addr)?;
        let mut client = TasksClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let streaming = client
            .logs(tonic::Request::new(query.into()))
            .await
            .map_err(|status| rpc_error(addr, status))?
            .into_inner();
        let addr = addr.to_string();
        Ok(futures::stream::unfold(Some(streaming), move |streaming| {
            let addr = addr.clone();
            async move {
                let mut streaming = streaming?;
                match streaming.message().await {
                    Ok(Some(chunk)) => Some((
                        Ok(chunk.lines.into_iter().map(TaskLogLine::from).collect()),
                        Some(streaming),
                    )),
                    Ok(None) => None,
                    Err(status) => Some((Err(rpc_error(&addr, status)), None)),
                }
            }
        }))
    }

    /// A view of this node's applied state (cheap, local; for watchers and the agent).
    pub fn state_view(&self) -> StateView {
        self.core.state.clone()
    }

    /// All nodes.
    pub async fn nodes(
        &self,
        consistency: ReadConsistency,
    ) -> Result<Vec<NodeRecord>, ConsensusError> {
        Ok(self.state(consistency).await?.nodes.into_values().collect())
    }

    /// This node's role as recorded in its applied state.
    pub fn role(&self) -> Option<NodeRole> {
        self.core
            .state
            .read(|s| s.nodes.get(&self.core.id).map(|n| n.role))
    }

    /// Both join tokens (`GET /swarm` `JoinTokens`). Any node; computed by the leader.
    pub async fn join_tokens(&self) -> Result<JoinTokens, ConsensusError> {
        match self.core.on_leader(LeaderRequest::JoinTokens).await? {
            LeaderReply::Tokens { manager, worker } => Ok(JoinTokens {
                manager: manager.parse()?,
                worker: worker.parse()?,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Invalidate `role`'s join token (`docker swarm join-token --rotate`).
    pub async fn rotate_join_token(&self, role: NodeRole) -> Result<(), ConsensusError> {
        self.core
            .on_leader(LeaderRequest::RotateJoinToken { role })
            .await?;
        Ok(())
    }

    /// Change a node's availability, labels or role (promote/demote change Raft
    /// membership too).
    pub async fn update_node(
        &self,
        id: NodeId,
        update: NodeUpdate,
    ) -> Result<NodeRecord, ConsensusError> {
        match self
            .core
            .on_leader(LeaderRequest::UpdateNode { id, update })
            .await?
        {
            LeaderReply::Written {
                response: Response::Node { node },
                index,
            } => {
                self.wait_applied_locally(index).await;
                Ok(node)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Remove a worker (demote managers first) and revoke its certificate.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ConsensusError> {
        self.core
            .on_leader(LeaderRequest::RemoveNode { id })
            .await?;
        Ok(())
    }

    /// Leave the cluster: demote (if a manager), remove this node, stop, and delete the
    /// cluster files from the data directory. The last manager cannot leave.
    pub async fn leave(self) -> Result<(), ConsensusError> {
        let id = self.core.id;
        if self.role() == Some(NodeRole::Manager) {
            self.update_node(
                id,
                NodeUpdate {
                    role: Some(NodeRole::Worker),
                    ..NodeUpdate::default()
                },
            )
            .await?;
        }
        self.remove_node(id).await?;
        let data_dir = self.core.data_dir.clone();
        self.shutdown().await?;
        remove_cluster_files(&data_dir)
    }

    /// Stop Raft and the server. The data directory is kept (restart with
    /// [`restart`](Self::restart)).
    pub async fn shutdown(mut self) -> Result<(), ConsensusError> {
        self.leadership_watcher.abort();
        self.compaction_watcher.abort();
        let raft_result = self.core.raft.shutdown().await;
        if let Some((stop, mut task)) = self.server.take() {
            let _ = stop.send(());
            if tokio::time::timeout(Duration::from_secs(3), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        raft_result.map_err(|e| ConsensusError::Raft {
            op: "shutdown",
            source: Box::new(e),
        })?;
        // openraft's replication and state-machine tasks end shortly after the core; wait
        // until they have dropped the database so a restart in this process can reopen it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.db.strong_count() > 0 {
            if Instant::now() > deadline {
                return Err(ConsensusError::Raft {
                    op: "shutdown",
                    source: "raft tasks still hold the store after 10 s".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// Delete `node.json`, `pki/` and `raft.redb`; reports the first failure after trying all.
fn remove_cluster_files(data_dir: &Path) -> Result<(), ConsensusError> {
    let mut errors = Vec::new();
    for path in [
        data_dir.join("raft.redb"),
        NodeFile::path(data_dir),
        data_dir.join("pki"),
    ] {
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = result {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "removing cluster file");
                errors.push(ConsensusError::io(path, e));
            }
        }
    }
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Follow Raft's metrics so a leadership's `since` is when it began, not when someone
/// first asked. Ends when Raft stops (its metrics channel closes).
async fn watch_leadership(
    me: NodeId,
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    live: Arc<liveness::LeaderLiveness>,
) {
    loop {
        let view = liveness::LeaderView::of(me, &metrics.borrow_and_update());
        live.observe(view, Instant::now());
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

fn unexpected(reply: LeaderReply) -> ConsensusError {
    ConsensusError::Rpc {
        rpc: "Forward",
        addr: String::new(),
        status: Box::new(tonic::Status::internal(format!(
            "unexpected reply {reply:?}"
        ))),
    }
}

/// Bind `addr`, waiting up to 5 s while the port is still held (a node restarted in the
/// same process whose previous listener is still closing).
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ConsensusError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && addr.port() != 0
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(source) => {
                return Err(ConsensusError::Bind {
                    addr: addr.to_string(),
                    source,
                })
            }
        }
    }
}

fn local_addr(
    listener: &tokio::net::TcpListener,
    requested: SocketAddr,
) -> Result<SocketAddr, ConsensusError> {
    listener
        .local_addr()
        .map_err(|source| ConsensusError::Bind {
            addr: requested.to_string(),
            source,
        })
}

async fn fetch_ca(remote_addr: &str) -> Result<Vec<u8>, ConsensusError> {
    let channel = tls::channel(remote_addr, tls::ca_fetch_client_config()?)?;
    let mut client = ClusterClient::new(channel);
    let mut request = tonic::Request::new(GetCaCertificateRequest {});
    request.set_timeout(Duration::from_secs(10));
    let response =
        client
            .get_ca_certificate(request)
            .await
            .map_err(|status| ConsensusError::Rpc {
                rpc: "GetCaCertificate",
                addr: remote_addr.to_string(),
                status: Box::new(status),
            })?;
    Ok(response.into_inner().ca_cert_der)
}

async fn request_join(
    remote_addr: &str,
    ca_cert_der: &[u8],
    application: JoinApplication,
) -> Result<JoinGrant, ConsensusError> {
    let channel = tls::channel(remote_addr, tls::join_client_config(ca_cert_der)?)?;
    let mut client = ClusterClient::new(channel);
    let mut request = tonic::Request::new(application.into());
    request.set_timeout(Duration::from_secs(40));
    match client.join(request).await {
        Ok(r) => JoinGrant::try_from(r.into_inner()).map_err(|status| ConsensusError::Rpc {
            rpc: "Join",
            addr: remote_addr.to_string(),
            status: Box::new(status),
        }),
        Err(status) if status.code() == tonic::Code::PermissionDenied => {
            Err(ConsensusError::JoinRefused {
                addr: remote_addr.to_string(),
                message: status.message().to_string(),
            })
        }
        Err(status) => Err(ConsensusError::Rpc {
            rpc: "Join",
            addr: remote_addr.to_string(),
            status: Box::new(status),
        }),
    }
}

/// Append a membership entry naming this node the only voter (workers stay learners),
/// in a term above any seen, before Raft starts. Raft then elects this node alone and
/// commits everything in its log.
fn rewrite_membership_for_force_new_cluster(
    data_dir: &Path,
    id: NodeId,
) -> Result<(), ConsensusError> {
    let (log_store, sm) = store::open(&data_dir.join("raft.redb"))?;
    let view = sm.view();
    let is_manager = view.read(|s| {
        s.nodes
            .get(&id)
            .is_some_and(|n| n.role == NodeRole::Manager)
    });
    if !is_manager {
        return Err(ConsensusError::NotManager {
            op: "force new cluster",
        });
    }
    let vote = log_store.stored_vote()?;
    let last = log_store.last_entry()?;
    let last_log_id = last.as_ref().map(|e| e.log_id).or(view.last_applied());
    let term = vote
        .map(|v| v.leader_id().term)
        .unwrap_or(0)
        .max(last_log_id.map(|l| l.leader_id.term).unwrap_or(0))
        + 1;
    let index = last_log_id.map(|l| l.index + 1).unwrap_or(0);
    let workers: Vec<NodeId> = view.read(|s| {
        s.nodes
            .values()
            .filter(|n| n.role == NodeRole::Worker)
            .map(|n| n.id)
            .collect()
    });
    let membership = view.membership();
    let nodes: BTreeMap<NodeId, BasicNode> = membership
        .nodes()
        .filter(|(n, _)| **n == id || workers.contains(n))
        .map(|(n, node)| (*n, node.clone()))
        .collect();
    let membership = Membership::new(vec![std::collections::BTreeSet::from([id])], nodes);
    let entry: Entry<crate::raft_types::TypeConfig> = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, id), index),
        payload: EntryPayload::Membership(membership),
    };
    log_store.append_blocking(&[entry])?;
    log_store.save_vote_blocking(&Vote::new(term, id))?;
    tracing::warn!(
        node = id,
        term,
        index,
        "force-new-cluster: this node is now the only voter"
    );
    Ok(())
}
