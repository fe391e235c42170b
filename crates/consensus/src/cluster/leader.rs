//! What the leader does for [`LeaderRequest`]s, local or forwarded.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use super::NodeCore;
use crate::error::ConsensusError;
use crate::pki::seal::{config_aad, secret_aad, AtRestKey};
use crate::pki::{self, token, JoinToken};
use crate::state::{Command, NodeId, NodeRole, NodeSpec, ObjectKind, Rejection, Response};
use crate::transport::join::{JoinApplication, JoinGrant};
use crate::transport::leader_op::{LeaderReply, LeaderRequest, PlainValue};

/// Associated data of an object's value.
fn object_aad(kind: ObjectKind, id: &str) -> Vec<u8> {
    match kind {
        ObjectKind::Secret => secret_aad(id),
        ObjectKind::Config => config_aad(id),
    }
}

/// How long adding a learner may take to catch up before the join fails (retryable).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a demoted leader stays quiet waiting for the voters to elect a successor.
const LEADERSHIP_HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a linearizable read waits for the leader to apply its log (retryable after).
const READ_APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The nodes `command` speaks for (observed task status, node description, WireGuard
/// key), in batches too: only those nodes may send it.
fn nodes_speaking(command: &Command, out: &mut Vec<NodeId>) {
    match command {
        Command::UpdateTaskStatus { node_id, .. } => out.push(*node_id),
        Command::SetNodeDescription { id, .. } | Command::SetNodeWgKey { id, .. } => out.push(*id),
        Command::Batch { commands } => {
            for c in commands {
                nodes_speaking(c, out);
            }
        }
        _ => {}
    }
}

fn write_err(
    op: &'static str,
    e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> ConsensusError {
    if let Some(f) = e.forward_to_leader() {
        return ConsensusError::NotLeader {
            leader: f.leader_id,
        };
    }
    ConsensusError::Raft {
        op,
        source: Box::new(e),
    }
}

impl NodeCore {
    /// Append `command` through Raft on this node, which must be the leader (group-committed
    /// with concurrent writes).
    pub(crate) async fn write_local(
        &self,
        command: Command,
    ) -> Result<(Response, u64), ConsensusError> {
        match self.batcher.write(command).await? {
            (Response::Rejected { rejection }, _) => Err(ConsensusError::Rejected(rejection)),
            ok => Ok(ok),
        }
    }

    async fn change_membership(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> Result<(), ConsensusError> {
        self.raft
            .change_membership(change, retain)
            .await
            .map_err(|e| write_err("change membership", e))?;
        Ok(())
    }

    fn in_membership(&self, id: NodeId) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let found = m.membership_config.nodes().any(|(n, _)| *n == id);
        found
    }

    /// Execute `op`; the caller presented certificate fingerprint `caller_fp` ("" when local).
    pub(crate) async fn execute_as_leader(
        &self,
        op: LeaderRequest,
        caller_fp: &str,
    ) -> Result<LeaderReply, ConsensusError> {
        // Handing out the CA key does not need leadership.
        if let LeaderRequest::FetchCaKey = op {
            return self.give_ca_key(caller_fp);
        }
        let leader = self.raft.current_leader().await;
        if leader != Some(self.id) {
            return Err(ConsensusError::NotLeader { leader });
        }
        match op {
            LeaderRequest::FetchCaKey => self.give_ca_key(caller_fp),
            LeaderRequest::Write { command } => {
                let mut named = Vec::new();
                nodes_speaking(&command, &mut named);
                for node_id in named {
                    self.authorize_node(caller_fp, node_id)?;
                }
                let (response, index) = self.write_local(command).await?;
                Ok(LeaderReply::Written { response, index })
            }
            LeaderRequest::Read => {
                self.raft
                    .ensure_linearizable()
                    .await
                    .map_err(|e| match e.forward_to_leader() {
                        Some(f) => ConsensusError::NotLeader {
                            leader: f.leader_id,
                        },
                        None => ConsensusError::Raft {
                            op: "ensure linearizable",
                            source: Box::new(e),
                        },
                    })?;
                // openraft 0.9's read index is max(noop, committed). A leader restarted in its
                // old term (committed vote for itself) neither appends a new noop nor knows
                // its old commit index, so that can lag entries it acknowledged before the
                // restart. Waiting until everything in the leader's log at this point is
                // applied covers every committed entry (in-flight ones commit as long as
                // this node stays leader); seen in tests/kill9.rs.
                let last_log_index = self.raft.metrics().borrow().last_log_index;
                self.raft
                    .wait(Some(READ_APPLY_TIMEOUT))
                    .applied_index_at_least(last_log_index, "read index")
                    .await
                    .map_err(|_| ConsensusError::NoLeader { attempts: 1 })?;
                Ok(LeaderReply::State {
                    state: Box::new(self.state.read(|s| s.clone())),
                })
            }
            LeaderRequest::Join { application } => {
                let grant = self.admit(application).await?;
                Ok(LeaderReply::Joined { grant })
            }
            LeaderRequest::AddMember { id } => {
                let node = self
                    .state
                    .read(|s| s.nodes.get(&id).cloned())
                    .ok_or(Rejection::NodeNotFound { id })?;
                let caller_is_manager = self.state.read(|s| {
                    s.node_by_fingerprint(caller_fp)
                        .is_some_and(|n| n.role == NodeRole::Manager)
                });
                if caller_fp != node.cert_fingerprint && !caller_is_manager {
                    return Err(ConsensusError::NotManager { op: "add member" });
                }
                let add = self
                    .raft
                    .add_learner(id, BasicNode::new(node.addr.clone()), true);
                match tokio::time::timeout(CATCH_UP_TIMEOUT, add).await {
                    Ok(r) => {
                        r.map_err(|e| write_err("add learner", e))?;
                    }
                    Err(_) => return Err(ConsensusError::NoLeader { attempts: 1 }),
                }
                if node.role == NodeRole::Manager {
                    self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await?;
                }
                Ok(LeaderReply::Done)
            }
            LeaderRequest::UpdateNode { id, update } => {
                let before = self
                    .state
                    .read(|s| s.nodes.get(&id).cloned())
                    .ok_or(Rejection::NodeNotFound { id })?;
                let (response, index) = self
                    .write_local(Command::UpdateNode {
                        id,
                        update: update.clone(),
                    })
                    .await?;
                match (before.role, update.role) {
                    (NodeRole::Worker, Some(NodeRole::Manager)) => {
                        if !self.in_membership(id) {
                            self.raft
                                .add_learner(id, BasicNode::new(before.addr.clone()), true)
                                .await
                                .map_err(|e| write_err("add learner", e))?;
                        }
                        self.change_membership(
                            ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                            false,
                        )
                        .await?;
                    }
                    (NodeRole::Manager, Some(NodeRole::Worker)) => {
                        self.change_membership(
                            ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                            true,
                        )
                        .await?;
                        if id == self.id {
                            self.hand_over_leadership().await;
                        }
                    }
                    _ => {}
                }
                Ok(LeaderReply::Written { response, index })
            }
            LeaderRequest::RemoveNode { id } => {
                let node = self
                    .state
                    .read(|s| s.nodes.get(&id).cloned())
                    .ok_or(Rejection::NodeNotFound { id })?;
                if node.role == NodeRole::Manager {
                    return Err(Rejection::RemoveManager { id }.into());
                }
                if self.in_membership(id) {
                    self.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await?;
                }
                let (response, index) = self.write_local(Command::RemoveNode { id }).await?;
                Ok(LeaderReply::Written { response, index })
            }
            LeaderRequest::JoinTokens => {
                let (manager, worker) = self.join_tokens_local().await?;
                Ok(LeaderReply::Tokens {
                    manager: manager.to_string(),
                    worker: worker.to_string(),
                })
            }
            LeaderRequest::RotateJoinToken { role } => {
                let (response, index) = self.write_local(Command::RotateJoinToken { role }).await?;
                Ok(LeaderReply::Written { response, index })
            }
            LeaderRequest::Seal { kind, id, value } => {
                let key = self.at_rest_key().await?;
                let aad = object_aad(kind, &id);
                Ok(LeaderReply::Sealed {
                    sealed: key.seal_random(&aad, &value.to_bytes()?),
                })
            }
            LeaderRequest::Open { kind, ids, task } => {
                if kind == ObjectKind::Secret {
                    let Some(task) = &task else {
                        return Err(Rejection::ObjectNotForTask {
                            kind,
                            id: ids.first().cloned().unwrap_or_default(),
                            task: String::new(),
                        }
                        .into());
                    };
                    self.authorize_node(caller_fp, task.node_id)?;
                    for id in &ids {
                        self.state
                            .read(|s| s.task_may_read(kind, id, &task.task_id, task.node_id))?;
                    }
                }
                let key = self.at_rest_key().await?;
                let mut values = Vec::with_capacity(ids.len());
                for id in ids {
                    let sealed = self
                        .state
                        .read(|s| s.objects(kind).get(&id).map(|o| o.data.clone()))
                        .ok_or_else(|| Rejection::ObjectNotFound {
                            kind,
                            id: id.clone(),
                        })?;
                    let plain = key.open(&object_aad(kind, &id), &sealed)?;
                    values.push((id, PlainValue::from_bytes(&plain)));
                }
                Ok(LeaderReply::Opened { values })
            }
            LeaderRequest::Heartbeat { node_id } => {
                self.authorize_node(caller_fp, node_id)?;
                if self.record_heartbeat(node_id) {
                    Ok(LeaderReply::Done)
                } else {
                    Err(ConsensusError::NotLeader {
                        leader: self.raft.metrics().borrow().current_leader,
                    })
                }
            }
        }
    }

    /// A request speaking for `node_id` (its task status, description or heartbeat) must
    /// come from that node: the caller's certificate fingerprint is the one recorded for
    /// it. Local calls (`caller_fp` empty: this node's own berthd) are trusted. A request
    /// relayed by a node that is not the leader carries the relay's certificate and is
    /// refused too; every node forwards straight to the leader it knows, so that only
    /// happens while the leader moves, and the caller's retry reaches the new leader.
    fn authorize_node(&self, caller_fp: &str, node_id: NodeId) -> Result<(), ConsensusError> {
        if caller_fp.is_empty() {
            return Ok(());
        }
        let holds = self.state.read(|s| {
            s.nodes
                .get(&node_id)
                .is_some_and(|n| n.cert_fingerprint == caller_fp)
        });
        if holds {
            Ok(())
        } else {
            Err(ConsensusError::NotCallerNode { node_id })
        }
    }

    /// The at-rest key of secret and config values, derived from this manager's CA key.
    async fn at_rest_key(&self) -> Result<AtRestKey, ConsensusError> {
        let ca_key = self.ensure_ca_key().await?;
        let cluster_id = self
            .state
            .read(|s| s.cluster_id.clone().unwrap_or_default());
        AtRestKey::derive(&ca_key, &cluster_id)
    }

    fn give_ca_key(&self, caller_fp: &str) -> Result<LeaderReply, ConsensusError> {
        let caller_is_manager = self.state.read(|s| {
            s.node_by_fingerprint(caller_fp)
                .is_some_and(|n| n.role == NodeRole::Manager)
        });
        if !caller_is_manager {
            return Err(ConsensusError::NotManager { op: "fetch CA key" });
        }
        let der = self
            .identity()
            .ca_key_der
            .ok_or(ConsensusError::NotManager { op: "fetch CA key" })?;
        Ok(LeaderReply::CaKey { der })
    }

    /// openraft 0.9 keeps a leader that removed itself from the voters as leader (of a
    /// cluster it no longer votes in) and has no leadership transfer. Going quiet makes the
    /// voters elect one of themselves; the higher term then turns this node into a learner.
    async fn hand_over_leadership(&self) {
        self.raft.runtime_config().heartbeat(false);
        let me = self.id;
        let moved = self
            .raft
            .wait(Some(LEADERSHIP_HANDOVER_TIMEOUT))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "leadership handed over",
            )
            .await;
        if moved.is_err() {
            tracing::warn!("demoted leader: no other leader elected in time");
        }
        self.raft.runtime_config().heartbeat(true);
    }

    /// Both join tokens from this node's CA key and applied state.
    pub(crate) async fn join_tokens_local(&self) -> Result<(JoinToken, JoinToken), ConsensusError> {
        let ca_key = self.ensure_ca_key().await?;
        let identity = self.identity();
        let (cluster_id, gens) = self
            .state
            .read(|s| (s.cluster_id.clone().unwrap_or_default(), s.tokens.clone()));
        let make = |role: NodeRole| JoinToken {
            ca_fingerprint: identity.ca_fingerprint(),
            secret: token::token_secret(&ca_key, &cluster_id, role, gens.get(role)),
        };
        Ok((make(NodeRole::Manager), make(NodeRole::Worker)))
    }

    /// Check the token secret, sign the CSR and record the node.
    async fn admit(&self, app: JoinApplication) -> Result<JoinGrant, ConsensusError> {
        let refuse = |message: &str| ConsensusError::JoinRefused {
            addr: self.advertise_addr.clone(),
            message: message.to_string(),
        };
        let ca_key = self.ensure_ca_key().await?;
        let identity = self.identity();
        let (cluster_id, gens, exists) = self.state.read(|s| {
            (
                s.cluster_id.clone().unwrap_or_default(),
                s.tokens.clone(),
                s.nodes.contains_key(&app.node_id),
            )
        });
        let role = token::role_for_secret(&ca_key, &cluster_id, &gens, &app.secret)
            .ok_or_else(|| refuse("invalid or rotated join token"))?;
        if exists || app.node_id == 0 {
            return Err(refuse("node id already in use"));
        }
        let cert = pki::sign_csr(&identity.ca_cert_der, &ca_key, app.node_id, &app.csr_der)
            .map_err(|_| refuse("invalid certificate signing request"))?;
        let spec = NodeSpec {
            id: app.node_id,
            hostname: app.hostname.clone(),
            addr: app.advertise_addr.clone(),
            role,
            cert_fingerprint: pki::fingerprint(&cert),
        };
        self.write_local(Command::AddNode(spec)).await?;
        tracing::info!(node = app.node_id, role = role.as_str(), addr = %app.advertise_addr, "node admitted");
        Ok(JoinGrant {
            node_cert_der: cert,
            role,
            ca_key_der: (role == NodeRole::Manager).then(|| ca_key.clone()),
            cluster_id,
        })
    }

    /// The CA key, fetched from another manager if this (promoted) manager lacks it.
    pub(crate) async fn ensure_ca_key(&self) -> Result<Vec<u8>, ConsensusError> {
        if let Some(key) = self.identity().ca_key_der {
            return Ok(key);
        }
        let me_manager = self.state.read(|s| {
            s.nodes
                .get(&self.id)
                .is_some_and(|n| n.role == NodeRole::Manager)
        });
        if !me_manager {
            return Err(ConsensusError::NotManager {
                op: "use the CA key",
            });
        }
        let managers: Vec<(NodeId, String)> = self.state.read(|s| {
            s.managers()
                .filter(|n| n.id != self.id)
                .map(|n| (n.id, n.addr.clone()))
                .collect()
        });
        let mut last_err = ConsensusError::NotManager {
            op: "use the CA key",
        };
        for (_, addr) in managers {
            match self
                .forward_to(&addr, &LeaderRequest::FetchCaKey, true)
                .await
            {
                Ok(LeaderReply::CaKey { der }) => {
                    pki::NodeIdentity::save_ca_key(&self.data_dir, &der)?;
                    self.identity
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .ca_key_der = Some(der.clone());
                    return Ok(der);
                }
                Ok(_) => {}
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// Addresses of the nodes Raft knows, for forwarding.
    pub(crate) fn member_addr(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let from_membership = metrics
            .borrow()
            .membership_config
            .nodes()
            .find(|(n, _)| **n == id)
            .map(|(_, node)| node.addr.clone());
        from_membership.or_else(|| {
            self.state
                .read(|s| s.nodes.get(&id).map(|n| n.addr.clone()))
        })
    }
}
