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
//!
//! P1 is usually started ahead of need as `berth-shim --standby` (see `spare.rs`): it waits
//! for a [`protocol::StandbyOrder`] (config path, diagnostics file) on stdin and then goes on
//! as `berth-shim <config>` would; closing its stdin without an order ends it.

mod supervisor;

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};
use crate::protocol::{self, Ready, ShimConfig, StandbyOrder};

/// Entry point of the `berth-shim` binary: `berth-shim <shim.json>`. Returns the exit code.
pub fn main_from_args() -> i32 {
    let mut args = std::env::args_os().skip(1);
    let Some(arg) = args.next() else {
        eprintln!("usage: berth-shim <shim.json> | berth-shim --standby");
        return 2;
    };
    let path = if arg == "--standby" {
        match standby_order() {
            Some(p) => p,
            None => return 0, // retired unused
        }
    } else {
        PathBuf::from(arg)
    };
    let config = match load_config(&path) {
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

/// A standby shim (started ahead of need by `Runtime`) waits here for its order on stdin,
/// then points stderr at the diagnostics file named there and stdin at /dev/null, as a
/// directly spawned shim has them. `None` when stdin closes without an order.
fn standby_order() -> Option<PathBuf> {
    let order: StandbyOrder = protocol::read_line(&mut std::io::stdin().lock()).ok()?;
    if let Ok(diag) = File::options()
        .create(true)
        .append(true)
        .open(&order.stderr)
    {
        let _ = nix::unistd::dup2(diag.as_raw_fd(), 2);
    }
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
    }
    Some(order.config)
}

fn load_config(path: &Path) -> Result<ShimConfig> {
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| RuntimeError::Json {
        what: "shim config",
        source,
    })
}
