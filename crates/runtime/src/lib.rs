//! berth-runtime: the containers of one host.
//!
//! Owns: overlayfs snapshots of unpacked image layers ([`snapshot`]), the OCI runtime spec
//! derived from an image config plus run options ([`spec`]), the container lifecycle rules
//! ([`lifecycle`]), the per-container supervisor (`berth-shim`, [`shim`]) and its wire
//! protocol ([`protocol`]), container logs ([`logs`]), and the [`Runtime`] API that ties them
//! together. Only [`oci`] (libcontainer), [`cgroups`] (libcgroups) and the shim's
//! supervisor loop touch the kernel.
//!
//! Does not own: image pulls and the blob store (`berth-registry-mirror`), networking
//! (`berth-overlay-net`), the Engine API and cluster state (`berth-node`, `berth-consensus`).
//!
//! ```text
//!  berthd --Runtime API--> Runtime ---order---> berth-shim (one per container, detached;
//!                            |                     started ahead as a standby, spare.rs)
//!                            |   \                 | mounts the overlay (MountPlan from the
//!                            |    \--unix socket-->| SnapshotStore) in its own mount ns,
//!                            v                     | libcontainer build/start, owns stdio,
//!                      SnapshotStore               | log file, exit record, attach, kill
//!                      (layers, upper dirs,        v
//!                       mount plan)           container init (PID 1 in its namespaces)
//! ```

//! # Using it from berthd
//!
//! ```text
//!  let rt = Arc::new(Runtime::open(RuntimeConfig {
//!      data_root: "/var/lib/berth/runtime".into(),   // snapshots, records, logs
//!      exec_root: "/run/berth/runtime".into(),       // shim sockets, libcontainer state
//!      shim_path: RuntimeConfig::shim_next_to_current_exe().unwrap(), // berth-shim binary
//!  })?);
//!  // layers: unpack each into rt.snapshots().begin_layer(), then commit_layer(dir, chain_id)
//!  rt.create(CreateRequest { id, layers: chain_ids, image: image_config, options })?;
//!  rt.start(&id)?;   rt.wait(&id, None)?;   rt.logs(&id, LogOptions::all())?;
//!  rt.exec(&id, &ExecOptions{..})? -> exec_id; rt.exec_attach / exec_resize / exec_wait
//!  rt.stop(&id, Some(timeout))?;  rt.delete(&id, force)?;
//! ```
//!
//! Every `Runtime` method blocks: call it from `tokio::task::spawn_blocking`. `Runtime` is
//! `Send + Sync`; share one `Arc<Runtime>`. Containers outlive the process that started them:
//! a new `Runtime` over the same roots sees them in `list()` with their current status.

mod background;
pub mod cgroups;
pub mod changes;
pub mod container_fs;
pub mod error;
pub mod lifecycle;
pub mod log_config;
pub mod logs;
pub mod oci;
pub mod protocol;
pub mod rotate;
pub mod runtime;
pub mod seccomp;
pub mod shim;
pub mod snapshot;
mod spare;
pub mod spec;
pub mod unpack;

pub use changes::{changes, write_layer_tar, Change, ChangeKind};
pub use error::{Result, RuntimeError};
pub use lifecycle::{Action, Status};
pub use runtime::{
    AttachOptions, ContainerInfo, CreateRequest, ExecOptions, ExitCause, ExitStatus, LogOptions,
    LogStream, Runtime, RuntimeConfig, Stats, TopResult,
};
