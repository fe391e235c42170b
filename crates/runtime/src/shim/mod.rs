//! The per-container supervisor (`berth-shim`): one detached process per container init or
//! exec process.
//!
//! Owns, for its one process: the rootfs overlay mount, made inside a mount namespace of the
//! shim's own (so it vanishes with the shim and the host never unmounts), creation through
//! libcontainer (from this single-threaded process, since libcontainer forks), the stdio pipes or the pty master, the log file, the
//! reaping and the exit record, and the unix socket that serves [`crate::protocol`]. Does not
//! own the rootfs mount, the bundle or the decision to start or stop (the runtime's).
//!
//! ```text
//!  Runtime --spawn berth-shim shim.json (stdout = pipe)--> shim P1 --fork--> shim P2 (setsid)
//!     ^                                                    exits       | create+start container
//!     +------------- one Ready line on the pipe ----------------------+ then serves shim.sock
//!                                                                      | log, reap, exit record
//! ```
//!
//! Because P2 is reparented away from the starter, killing the daemon leaves every shim and
//! its container running; a new `Runtime` finds them by their sockets and pid files.

mod supervisor;

use std::io::Write;
use std::path::Path;

use crate::error::{Result, RuntimeError};
use crate::protocol::{self, Ready, ShimConfig};

/// Entry point of the `berth-shim` binary: `berth-shim <shim.json>`. Returns the exit code.
pub fn main_from_args() -> i32 {
    let mut args = std::env::args_os().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: berth-shim <shim.json>");
        return 2;
    };
    let config = match load_config(Path::new(&path)) {
        Ok(c) => c,
        Err(e) => {
            let _ = protocol::write_line(
                &mut std::io::stdout(),
                &Ready::Failed {
                    message: e.to_string(),
                },
            );
            return 1;
        }
    };
    match supervisor::detach() {
        Ok(true) => 0, // the original process: the detached child carries on
        Ok(false) => supervisor::run(config),
        Err(e) => {
            let _ = protocol::write_line(
                &mut std::io::stdout(),
                &Ready::Failed {
                    message: e.to_string(),
                },
            );
            let _ = std::io::stdout().flush();
            1
        }
    }
}

fn load_config(path: &Path) -> Result<ShimConfig> {
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| RuntimeError::Json {
        what: "shim config",
        source,
    })
}
