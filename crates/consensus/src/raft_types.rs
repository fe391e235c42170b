//! openraft type configuration.
//!
//! openraft 0.9 (the stable line) rather than 0.10: 0.10 is an alpha whose API is still
//! changing, and a storage format tied to a moving API would need migrations for no gain.
//! 0.9 with the `storage-v2` feature already separates `RaftLogStorage` and
//! `RaftStateMachine`, which is the shape we want.

use std::io::Cursor;

use openraft::BasicNode;

use crate::state::{Command, Response};

openraft::declare_raft_types!(
    /// berth's Raft types: commands in, responses out, nodes addressed by `host:port`.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle type.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<u64>;
/// openraft storage error.
pub type StorageError = openraft::StorageError<u64>;
