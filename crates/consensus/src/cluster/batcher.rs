//! Group commit on the leader: concurrent writes queued while a log append is in flight
//! go into the next log entry together (`Command::Batch`), so one fsync round serves many.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::ConsensusError;
use crate::raft_types::Raft;
use crate::state::{Command, NodeId, Response};
use crate::transport::leader_op::RemoteError;

/// Most commands in one log entry.
const MAX_BATCH: usize = 512;
/// Log appends in flight at once (pipelining between batches).
const IN_FLIGHT: usize = 2;

type Reply = oneshot::Sender<Result<(Response, u64), ConsensusError>>;

/// Handle to the batching task. The task ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub(crate) struct WriteBatcher {
    tx: mpsc::Sender<(Command, Reply)>,
}

impl WriteBatcher {
    /// Start the batching task for `raft`.
    pub(crate) fn spawn(raft: Raft, addr: String) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(raft, rx, addr));
        WriteBatcher { tx }
    }

    /// Append `command`; resolves once its entry is committed and applied on this node.
    /// Deterministic rejections come back as `Ok(Response::Rejected)`.
    pub(crate) async fn write(&self, command: Command) -> Result<(Response, u64), ConsensusError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((command, reply))
            .await
            .map_err(|_| ConsensusError::Shutdown)?;
        rx.await.map_err(|_| ConsensusError::Shutdown)?
    }
}

fn write_err(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ConsensusError {
    if let Some(f) = e.forward_to_leader() {
        return ConsensusError::NotLeader {
            leader: f.leader_id,
        };
    }
    ConsensusError::Raft {
        op: "client write",
        source: Box::new(e),
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<(Command, Reply)>, addr: String) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        // Everything that queued while we waited for a slot joins this entry.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        let addr = addr.clone();
        tokio::spawn(async move {
            let _permit = permit;
            commit(&raft, batch, &addr).await;
        });
    }
}

async fn commit(raft: &Raft, mut batch: Vec<(Command, Reply)>, addr: &str) {
    if batch.len() == 1 {
        let (command, reply) = batch.remove(0);
        let result = raft
            .client_write(command)
            .await
            .map(|r| (r.data, r.log_id.index))
            .map_err(write_err);
        let _ = reply.send(result);
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
    match raft.client_write(Command::Batch { commands }).await {
        Ok(r) => {
            let index = r.log_id.index;
            match r.data {
                Response::Batch { responses } if responses.len() == replies.len() => {
                    for (reply, response) in replies.into_iter().zip(responses) {
                        let _ = reply.send(Ok((response, index)));
                    }
                }
                // The whole batch was refused (e.g. state not initialised).
                other => {
                    for reply in replies {
                        let _ = reply.send(Ok((other.clone(), index)));
                    }
                }
            }
        }
        Err(e) => {
            let e = write_err(e);
            let wire = RemoteError::from_error(&e);
            for reply in replies {
                let _ = reply.send(Err(wire.clone().into_error(addr)));
            }
        }
    }
}
