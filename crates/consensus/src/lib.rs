//! berth-consensus: the replicated cluster state.
//!
//! Owns (as it is built): the deterministic state machine `apply(command) -> response`, its
//! openraft integration with redb log and state-machine storage, snapshots, membership, and
//! the raft RPCs between nodes.
//!
//! Does not own: the Docker API for swarm/nodes (`berth-node`), running tasks (the agent in
//! `berth-node`), networking (`berth-overlay-net`).
