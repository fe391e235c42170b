//! berth-registry-mirror: OCI distribution for one node.
//!
//! Owns (as it is built): the content-addressed blob store, the registry client that pulls
//! and pushes images, the pull-through mirror server, single-flight fetches, cluster
//! owner-per-digest routing, peer transfer and garbage collection.
//!
//! Does not own: unpacking layers into snapshots (`berth-runtime`), the Engine API
//! (`berth-node`).
