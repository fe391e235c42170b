//! openraft's `RaftNetworkFactory`/`RaftNetwork` over the `Raft` gRPC service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::pb::raft_client::RaftClient;
use super::pb::RaftMessage;
use super::{raft_message, MAX_MESSAGE_BYTES};
use crate::error::ConsensusError;
use crate::pki::tls;
use crate::raft_types::TypeConfig;
use crate::state::NodeId;

/// Pool of mTLS channels to peers, keyed by address. Cheap to clone.
#[derive(Clone)]
pub struct PeerChannels {
    tls: Arc<ClientConfig>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl std::fmt::Debug for PeerChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerChannels").finish_non_exhaustive()
    }
}

impl PeerChannels {
    /// Channels authenticated with `tls` (from [`tls::client_config`]).
    pub fn new(tls: Arc<ClientConfig>) -> Self {
        PeerChannels {
            tls,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The (lazily connecting) channel to `addr`.
    pub fn get(&self, addr: &str) -> Result<Channel, ConsensusError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let ch = tls::channel(addr, self.tls.clone())?;
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

/// Creates one [`NetworkClient`] per target node.
#[derive(Clone, Debug)]
pub struct Network {
    peers: PeerChannels,
}

impl Network {
    /// A network over `peers`.
    pub fn new(peers: PeerChannels) -> Self {
        Network { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        NetworkClient {
            target,
            addr: node.addr.clone(),
            channel: self.peers.get(&node.addr),
        }
    }
}

/// Raft RPCs to one peer.
#[derive(Debug)]
pub struct NetworkClient {
    target: NodeId,
    addr: String,
    channel: Result<Channel, ConsensusError>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl NetworkClient {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = match &self.channel {
            Ok(ch) => ch.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let message =
            raft_message::encode(rpc, req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(message);
        request.set_timeout(option.hard_ttl());
        let result = match rpc {
            "AppendEntries" => client.append_entries(request).await,
            "Vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let reply: RaftMessage = match result {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let err = ConsensusError::Rpc {
                    rpc,
                    addr: self.addr.clone(),
                    status: Box::new(status),
                };
                return Err(if err.is_retryable() {
                    RPCError::Unreachable(Unreachable::new(&err))
                } else {
                    RPCError::Network(NetworkError::new(&err))
                });
            }
        };
        let decoded: Result<Resp, RaftError<NodeId, E>> = raft_message::decode(rpc, &reply)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                BasicNode::new(self.addr.clone()),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for NetworkClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call("AppendEntries", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call("InstallSnapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call("Vote", &rpc, &option).await
    }
}
