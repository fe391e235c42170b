//! The gRPC server: `Raft`, `Cluster` and `Tasks` services on one TLS listener.

use std::future::Future;
use std::sync::Arc;

use rustls::ServerConfig;
use tokio::net::TcpListener;
use tonic::{Request, Response as GrpcResponse, Status};

use super::join::JoinApplication;
use super::leader_op::{LeaderRequest, RemoteError};
use super::pb::cluster_server::{Cluster, ClusterServer};
use super::pb::raft_server::{Raft as RaftService, RaftServer};
use super::pb::tasks_server::{Tasks, TasksServer};
use super::pb::{
    ForwardRequest, ForwardResponse, GetCaCertificateRequest, GetCaCertificateResponse,
    JoinRequest, JoinResponse, RaftMessage, TaskLogsChunk, TaskLogsRequest,
};
use super::task_logs;
use super::{raft_message, MAX_MESSAGE_BYTES};
use crate::cluster::NodeCore;
use crate::pki::fingerprint;
use crate::raft_types::TypeConfig;
use crate::store::StateView;

/// Check the caller's certificate (already verified against the CA by rustls) against the
/// replicated revocation list. Roles are not checked here: a demoted manager (possibly
/// the leader that is demoting itself) must still finish the membership change.
fn authorize<T>(request: &Request<T>, state: &StateView) -> Result<(), Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a cluster client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a cluster client certificate is required"))?;
    let fp = fingerprint(leaf);
    if state.read(|s| s.revoked_certs.contains(&fp)) {
        return Err(Status::permission_denied(
            "certificate revoked (node removed)",
        ));
    }
    Ok(())
}

fn internal(e: &crate::error::ConsensusError) -> Status {
    Status::internal(super::leader_op::error_chain(e))
}

struct RaftRpc {
    raft: openraft::Raft<TypeConfig>,
    state: StateView,
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<GrpcResponse<RaftMessage>, Status> {
        authorize(&request, &self.state)?;
        let req =
            raft_message::decode("AppendEntries", request.get_ref()).map_err(|e| internal(&e))?;
        let result = self.raft.append_entries(req).await;
        let msg = raft_message::encode("AppendEntries", &result).map_err(|e| internal(&e))?;
        Ok(GrpcResponse::new(msg))
    }

    async fn vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<GrpcResponse<RaftMessage>, Status> {
        authorize(&request, &self.state)?;
        let req = raft_message::decode("Vote", request.get_ref()).map_err(|e| internal(&e))?;
        let result = self.raft.vote(req).await;
        let msg = raft_message::encode("Vote", &result).map_err(|e| internal(&e))?;
        Ok(GrpcResponse::new(msg))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<GrpcResponse<RaftMessage>, Status> {
        authorize(&request, &self.state)?;
        let req =
            raft_message::decode("InstallSnapshot", request.get_ref()).map_err(|e| internal(&e))?;
        let result = self.raft.install_snapshot(req).await;
        let msg = raft_message::encode("InstallSnapshot", &result).map_err(|e| internal(&e))?;
        Ok(GrpcResponse::new(msg))
    }
}

struct ClusterRpc {
    core: Arc<NodeCore>,
}

#[tonic::async_trait]
impl Cluster for ClusterRpc {
    async fn get_ca_certificate(
        &self,
        _request: Request<GetCaCertificateRequest>,
    ) -> Result<GrpcResponse<GetCaCertificateResponse>, Status> {
        Ok(GrpcResponse::new(GetCaCertificateResponse {
            ca_cert_der: self.core.identity().ca_cert_der.clone(),
        }))
    }

    async fn join(
        &self,
        request: Request<JoinRequest>,
    ) -> Result<GrpcResponse<JoinResponse>, Status> {
        let application = JoinApplication::from(request.into_inner());
        match self
            .core
            .on_leader(LeaderRequest::Join { application })
            .await
        {
            Ok(super::leader_op::LeaderReply::Joined { grant }) => {
                Ok(GrpcResponse::new(grant.into()))
            }
            Ok(other) => Err(Status::internal(format!(
                "unexpected leader reply {other:?}"
            ))),
            Err(crate::error::ConsensusError::JoinRefused { message, .. }) => {
                Err(Status::permission_denied(message))
            }
            Err(e) if e.is_retryable() => {
                Err(Status::unavailable(super::leader_op::error_chain(&e)))
            }
            Err(e) => Err(internal(&e)),
        }
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<GrpcResponse<ForwardResponse>, Status> {
        authorize(&request, &self.core.state_view())?;
        let certs = request.peer_certs();
        let caller_fp = certs
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| fingerprint(c))
            .unwrap_or_default();
        let forwarded = request.metadata().get(crate::cluster::FORWARDED).is_some();
        let op = LeaderRequest::try_from(request.get_ref()).map_err(|e| internal(&e))?;
        let result = self
            .core
            .handle_forward(op, &caller_fp, forwarded)
            .await
            .map_err(|e| RemoteError::from_error(&e));
        let response = ForwardResponse::try_from(&result).map_err(|e| internal(&e))?;
        Ok(GrpcResponse::new(response))
    }
}

struct TasksRpc {
    core: Arc<NodeCore>,
}

/// The chunks of one `Logs` call.
type LogChunks =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<TaskLogsChunk, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Tasks for TasksRpc {
    type LogsStream = LogChunks;

    async fn logs(
        &self,
        request: Request<TaskLogsRequest>,
    ) -> Result<GrpcResponse<Self::LogsStream>, Status> {
        authorize(&request, &self.core.state_view())?;
        let source = self
            .core
            .task_logs()
            .ok_or_else(|| Status::unimplemented("this node does not serve task logs"))?;
        let rx = source
            .open(request.into_inner().into())
            .map_err(|e| Status::internal(super::leader_op::error_chain(e.as_ref())))?;
        use futures::StreamExt;
        Ok(GrpcResponse::new(Box::pin(task_logs::chunks(rx).map(Ok))))
    }
}

/// Serve the three services on `listener` until `shutdown` resolves. TLS handshakes run per
/// connection, off the accept loop.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    core: Arc<NodeCore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let accept_loop = tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                        .await;
                match handshake {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(stream).await;
                    }
                    // A connection closed before any byte is the members' reachability
                    // probe (a plain TCP connect, every second): not worth a line.
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        tracing::trace!("connection closed before the TLS handshake");
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    let incoming = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|s| (Ok::<_, std::io::Error>(s), rx))
    });
    let raft = RaftServer::new(RaftRpc {
        raft: core.raft().clone(),
        state: core.state_view(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let tasks = TasksServer::new(TasksRpc { core: core.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let cluster = ClusterServer::new(ClusterRpc { core })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let result = tonic::transport::Server::builder()
        .add_service(raft)
        .add_service(cluster)
        .add_service(tasks)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    // Close the listening socket before returning, so the port can be bound again at once.
    accept_loop.abort();
    let _ = accept_loop.await;
    result
}
