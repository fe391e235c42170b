//! A shim started ahead of need. `berth-shim --standby` is exec'd, linked and initialised,
//! then waits for one [`StandbyOrder`] on its stdin; handing it a container's config spares
//! the start (and every exec) the launch of a fresh shim, about 1.2 ms of a 15 ms container
//! start on this kind of host (measured from spawn to the shim's `main`).
//!
//! Owns a `Runtime`'s one spare shim process: handing it out, starting its replacement on a
//! thread of its own (off the caller's path), and retiring it (stdin closed: the standby
//! exits) when the `Runtime` goes. Does not own what the shim does with its order: exactly
//! what `berth-shim <config>` does. When no spare is ready (concurrent starts, or one died),
//! a fresh shim is spawned as before.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::background::Background;
use crate::error::{Result, RuntimeError};
use crate::protocol::{self, StandbyOrder};

/// A running shim that reports on `stdout` (one [`protocol::Ready`] line); `child` is the
/// process to reap once it has forked the supervisor.
pub(crate) struct Launched {
    pub child: Child,
    pub stdout: ChildStdout,
    /// The shim was the spare (which may have died before it read the order).
    pub spare: bool,
}

struct Spare {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Spare {
    fn spawn(shim: &Path) -> std::io::Result<Spare> {
        let mut child = Command::new(shim)
            .arg("--standby")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => Ok(Spare {
                child,
                stdin,
                stdout,
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::io::Error::other("standby shim without pipes"))
            }
        }
    }

    /// Closes its stdin (the standby exits without doing anything) and reaps it.
    fn retire(self) {
        let Spare {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let _ = child.wait();
    }
}

#[derive(Default)]
struct Slot {
    spare: Option<Spare>,
    refilling: bool,
    closed: bool,
}

pub(crate) struct Spares {
    shim: PathBuf,
    slot: Arc<Mutex<Slot>>,
    background: Background,
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

impl Spares {
    /// Starts the first spare of `shim` in the background.
    pub fn new(shim: PathBuf, background: Background) -> Spares {
        let spares = Spares {
            shim,
            slot: Arc::default(),
            background,
        };
        spares.refill();
        spares
    }

    /// A shim working on `order`: the spare when one is ready, else a freshly spawned one.
    pub fn launch(&self, order: &StandbyOrder) -> Result<Launched> {
        let spare = {
            let mut slot = lock(&self.slot);
            slot.spare.take()
        };
        self.refill();
        if let Some(mut spare) = spare {
            // A spare that died meanwhile fails the write (EPIPE), which falls back here,
            // or (killed but not yet gone: the pipe still takes the order) never reports,
            // which the caller sees as a killed spare and retries with `launch_fresh`.
            if protocol::write_line(&mut spare.stdin, order).is_ok() {
                let Spare { child, stdout, .. } = spare;
                return Ok(Launched {
                    child,
                    stdout,
                    spare: true,
                });
            }
            spare.retire();
        }
        self.launch_fresh(order)
    }

    /// A freshly spawned shim working on `order` (no spare involved).
    pub fn launch_fresh(&self, order: &StandbyOrder) -> Result<Launched> {
        let diag = File::options()
            .create(true)
            .append(true)
            .open(&order.stderr)
            .map_err(|e| RuntimeError::io("open", &order.stderr, e))?;
        let mut child = Command::new(&self.shim)
            .arg(&order.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(diag)
            .spawn()
            .map_err(|e| RuntimeError::io("spawn", &self.shim, e))?;
        let stdout = child.stdout.take().ok_or(RuntimeError::Protocol {
            detail: "shim stdout not captured",
        })?;
        Ok(Launched {
            child,
            stdout,
            spare: false,
        })
    }

    /// Starts a new spare on a thread of its own unless one is ready or on its way.
    fn refill(&self) {
        {
            let mut slot = lock(&self.slot);
            if slot.closed || slot.refilling || slot.spare.is_some() {
                return;
            }
            slot.refilling = true;
        }
        let slot = Arc::clone(&self.slot);
        let shim = self.shim.clone();
        let started = self.background.spawn("spare-shim", move || {
            let spare = Spare::spawn(&shim);
            let mut s = lock(&slot);
            s.refilling = false;
            match spare {
                Ok(spare) if !s.closed && s.spare.is_none() => s.spare = Some(spare),
                Ok(spare) => {
                    drop(s);
                    spare.retire();
                }
                Err(e) => tracing::debug!(error = %e, "spare shim not started"),
            }
        });
        if !started {
            lock(&self.slot).refilling = false;
        }
    }
}

impl std::fmt::Debug for Spares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spares")
            .field("shim", &self.shim)
            .field("ready", &lock(&self.slot).spare.is_some())
            .finish()
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        let spare = {
            let mut slot = lock(&self.slot);
            slot.closed = true;
            slot.spare.take()
        };
        if let Some(spare) = spare {
            spare.retire();
        }
    }
}
