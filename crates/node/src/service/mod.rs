//! berthd's service layer: what each API call does, independent of HTTP.
//!
//! Owns: the rules of volumes, containers, images and events on this node, and their
//! records in the state database. Does not own HTTP shapes (api/) or kernel work (the
//! runtime, registry-mirror and overlay-net crates, which services call).

pub mod agent;
pub mod build;
pub mod cluster;
pub mod containers;
pub mod events;
pub mod images;
pub mod mesh;
pub mod networks;
pub mod objects;
pub mod orchestrator;
// The state -> data plane mapping; its reconcile loop is not wired yet (only its tests
// use it).
#[cfg_attr(not(test), allow(dead_code))]
pub mod overlay;
pub mod overlay_plane;
pub mod pattern;
pub mod peers;
pub mod services;
pub mod task_files;
pub mod task_logs;
pub mod task_spec;
pub mod volumes;
