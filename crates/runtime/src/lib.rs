//! berth-runtime: the containers of one host.
//!
//! Owns (as it is built): overlayfs snapshots of unpacked image layers, the OCI runtime spec
//! derived from an image config plus run options, the adapter to youki's libcontainer and
//! libcgroups, the per-container supervisor (shim), container logs, exec and stats.
//!
//! Does not own: image pulls and the blob store (`berth-registry-mirror`), networking
//! (`berth-overlay-net`), the Engine API and cluster state (`berth-node`, `berth-consensus`).
pub mod unpack;
