//! Update order, the way a Swarm user sees it (real docker CLI).
//!
//! - `stop_first_update_starts_the_new_task_after_the_old_one_stopped`: with the default
//!   `--update-order stop-first`, the replacement is created and prepared but held at
//!   desired `Ready` until the old task has stopped (swarmkit's restart supervisor,
//!   `DelayStart(.., waitStop=true)`, at most 1 minute), so a one-replica service never
//!   runs two containers, even when the old one (`sleep`, which ignores SIGTERM) lives out
//!   its stop grace period.
//!
//! Cleanup: the service is removed on the way out; [`DockerEnv`] removes every container,
//! then berthd and its netns.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_testkit::daemon::{retry, DockerEnv};

const CONVERGE: Duration = Duration::from_secs(60);

/// Removes the service on drop (before [`DockerEnv`] removes the containers), so no agent
/// starts a task container while they are removed.
struct ServiceGuard<'a>(&'a DockerEnv, String);

impl Drop for ServiceGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.d.docker(&["service", "rm", &self.1]);
    }
}

#[test]
fn stop_first_update_starts_the_new_task_after_the_old_one_stopped() -> Result<()> {
    let e = DockerEnv::new()?;
    e.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
    let name = format!("sf{}", std::process::id());
    e.ok(&[
        "service",
        "create",
        "-d",
        "-q",
        "--name",
        &name,
        "--stop-grace-period",
        "5s",
        &e.img("busybox:latest"),
        "sleep",
        "1000000",
    ])?;
    let _service = ServiceGuard(&e, name.clone());
    let filter = format!("label=com.docker.swarm.service.name={name}");
    let containers = |e: &DockerEnv| -> Result<Vec<String>> {
        Ok(e.ok(&["ps", "-aq", "--filter", &filter])?
            .split_whitespace()
            .map(str::to_string)
            .collect())
    };
    retry(CONVERGE, || {
        let c = containers(&e)?;
        Ok((c.len() == 1 && e.inspect(&c[0], "{{.State.Running}}")? == "true").then_some(()))
    })
    .context("the first task never ran")?;
    let old = containers(&e)?.remove(0);

    e.ok(&["service", "update", "-d", "--force", &name])?;
    // Both containers exist and the old one has exited (its grace period is over).
    let new = retry(CONVERGE, || {
        let c = containers(&e)?;
        let new = c.into_iter().find(|id| *id != old);
        let old_exited = e.inspect(&old, "{{.State.Running}}")? == "false";
        Ok(match new {
            Some(n) if old_exited && e.inspect(&n, "{{.State.Running}}")? == "true" => Some(n),
            _ => None,
        })
    })
    .context("the replacement never ran after the old task exited")?;
    let finished = e.inspect(&old, "{{.State.FinishedAt}}")?;
    let started = e.inspect(&new, "{{.State.StartedAt}}")?;
    let finished = chrono::DateTime::parse_from_rfc3339(&finished)?;
    let started = chrono::DateTime::parse_from_rfc3339(&started)?;
    ensure!(
        started >= finished,
        "stop-first: the new task started at {started} while the old one ran until {finished}"
    );
    Ok(())
}
