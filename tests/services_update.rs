//! Rolling updates that fail, and rollbacks, on a one-node swarm through the real docker
//! CLI: `--update-failure-action rollback` rolls a service back by itself,
//! `--update-failure-action pause` stops the update with Swarm's message, and
//! `docker service rollback` returns a service to its previous spec, and `--force`
//! redeploys. What is checked is
//! what users see: `UpdateStatus` and the spec in `docker service inspect`, and the task
//! containers in `docker ps`. Waits poll with generous bounds; nothing is timed.

use std::time::Duration;

use anyhow::{ensure, Result};
use berth_testkit::daemon::{retry, Berthd, DockerEnv};

/// A single-node swarm on a berthd of its own; leaves the swarm (which removes the task
/// containers) before the engine's own cleanup runs.
struct Swarm {
    e: DockerEnv,
}

impl Swarm {
    fn new() -> Result<Self> {
        let e = DockerEnv {
            fx: berth_testkit::Fixture::from_env()?,
            d: Berthd::start(&[])?,
        };
        let out = e.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
        ensure!(out.contains("Swarm initialized"), "{out}");
        Ok(Swarm { e })
    }

    /// Polls `f` until it returns `Some`, with berthd's log in the error.
    fn eventually<T>(&self, what: &str, f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
        retry(Duration::from_secs(120), f)
            .map_err(|err| anyhow::anyhow!("waiting for {what}: {err}\n{}", self.e.d.log()))
    }

    /// `docker service inspect --format`.
    fn svc(&self, service: &str, format: &str) -> Result<String> {
        Ok(self
            .e
            .ok(&["service", "inspect", "--format", format, service])?
            .trim()
            .to_string())
    }

    /// Waits until the service's `UpdateStatus.State` is `state`; returns its message.
    fn wait_state(&self, service: &str, state: &str) -> Result<String> {
        self.eventually(&format!("UpdateStatus {state}"), || {
            let got = self.svc(
                service,
                "{{if .UpdateStatus}}{{.UpdateStatus.State}}|{{.UpdateStatus.Message}}{{end}}",
            )?;
            Ok(got.strip_prefix(&format!("{state}|")).map(str::to_string))
        })
    }

    /// Waits until exactly `n` containers of `service` run, all with command `cmd`.
    fn running_with(&self, service: &str, n: usize, cmd: &str) -> Result<()> {
        let filter = format!("label=com.docker.swarm.service.name={service}");
        self.eventually(
            &format!("{n} containers of {service} running {cmd}"),
            || {
                let out = self.e.ok(&[
                    "ps",
                    "--filter",
                    &filter,
                    "--format",
                    "{{.Command}}|{{.Status}}",
                ])?;
                let rows: Vec<&str> = out.lines().collect();
                let ok = rows.len() == n
                    && rows.iter().all(|r| {
                        r.contains(cmd) && r.split('|').nth(1).is_some_and(|s| s.starts_with("Up"))
                    });
                Ok(ok.then_some(()))
            },
        )
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = self.e.d.docker(&["swarm", "leave", "--force"]);
        let _ = retry(Duration::from_secs(30), || {
            let ids = self.e.d.docker_ok(&["ps", "-aq"])?;
            Ok(ids.trim().is_empty().then_some(()))
        });
    }
}

/// Swarm's pause message: `<what> paused due to failure or early termination of task
/// <25-character task id>`.
fn is_pause_message(msg: &str, what: &str) -> bool {
    let re = regex::Regex::new(&format!(
        "^{what} paused due to failure or early termination of task [0-9a-z]{{25}}$"
    ))
    .expect("regex");
    re.is_match(msg)
}

fn create(s: &Swarm, name: &str) -> Result<()> {
    let bb = s.e.img("busybox:latest");
    s.e.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        name,
        "--replicas",
        "2",
        &bb,
        "sleep",
        "1000",
    ])?;
    s.running_with(name, 2, "sleep 1000")?;
    ensure!(
        s.svc(name, "{{json .UpdateStatus}}")? == "null",
        "no update yet"
    );
    Ok(())
}

/// An update whose tasks exit 1 within `--update-monitor`, with `--update-failure-action
/// rollback`: the service rolls itself back to the previous spec.
#[test]
fn an_update_whose_tasks_exit_1_rolls_itself_back() -> Result<()> {
    let s = Swarm::new()?;
    create(&s, "web")?;
    s.e.ok(&[
        "service",
        "update",
        "--detach",
        "--args",
        "false",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "2s",
        "web",
    ])?;
    let msg = s.wait_state("web", "rollback_completed")?;
    assert_eq!(msg, "rollback completed");
    assert_eq!(
        s.svc("web", "{{json .Spec.TaskTemplate.ContainerSpec.Args}}")?,
        r#"["sleep","1000"]"#
    );
    // swarmkit's automatic rollback leaves no previous spec.
    assert_eq!(s.svc("web", "{{json .PreviousSpec}}")?, "null");
    assert_ne!(s.svc("web", "{{.UpdateStatus.CompletedAt}}")?, "<no value>");
    s.running_with("web", 2, "sleep 1000")?;
    // The update's tasks failed and stay in the history.
    let ps = s.e.ok(&[
        "service",
        "ps",
        "--no-trunc",
        "--format",
        "{{.CurrentState}}|{{.Error}}",
        "web",
    ])?;
    assert!(ps.contains("task: non-zero exit (1)"), "{ps}");

    // `--force` redeploys every task with the same spec, and the update completes.
    let filter = "label=com.docker.swarm.service.name=web";
    let before = s.e.ok(&["ps", "--filter", filter, "--format", "{{.ID}}"])?;
    s.e.ok(&["service", "update", "--detach", "--force", "web"])?;
    assert_eq!(s.wait_state("web", "completed")?, "update completed");
    s.running_with("web", 2, "sleep 1000")?;
    let after = s.e.ok(&["ps", "--filter", filter, "--format", "{{.ID}}"])?;
    for id in before.lines() {
        assert!(
            !after.contains(id),
            "{id} still runs after --force: {after}"
        );
    }
    Ok(())
}

/// `--update-failure-action pause` stops the update with Swarm's message; `docker service
/// rollback` returns the service to its previous spec; a second rollback returns to the
/// update's spec, and `docker service update --rollback` does the same as the first.
#[test]
fn a_failing_update_pauses_and_docker_service_rollback_returns_to_the_previous_spec() -> Result<()>
{
    let s = Swarm::new()?;
    create(&s, "api")?;
    s.e.ok(&[
        "service",
        "update",
        "--detach",
        "--args",
        "false",
        "--update-failure-action",
        "pause",
        "--update-monitor",
        "2s",
        "api",
    ])?;
    let msg = s.wait_state("api", "paused")?;
    assert!(is_pause_message(&msg, "update"), "{msg}");
    // Paused: the other replica was not touched.
    let filter = "label=com.docker.swarm.service.name=api";
    let sleeping =
        s.e.ok(&["ps", "--filter", filter, "--format", "{{.Command}}"])?;
    assert!(sleeping.contains("sleep 1000"), "{sleeping}");

    let out = s.e.ok(&["service", "rollback", "--detach", "api"])?;
    assert!(out.contains("api"), "{out}");
    let msg = s.wait_state("api", "rollback_completed")?;
    assert_eq!(msg, "rollback completed");
    assert_eq!(
        s.svc("api", "{{json .Spec.TaskTemplate.ContainerSpec.Args}}")?,
        r#"["sleep","1000"]"#
    );
    // The manual rollback keeps the spec it left as the previous one.
    assert_eq!(
        s.svc(
            "api",
            "{{json .PreviousSpec.TaskTemplate.ContainerSpec.Args}}"
        )?,
        r#"["false"]"#
    );
    s.running_with("api", 2, "sleep 1000")?;

    // A service never updated has nothing to roll back to.
    let bb = s.e.img("busybox:latest");
    s.e.ok(&[
        "service", "create", "--detach", "--name", "fresh", &bb, "sleep", "1000",
    ])?;
    let out =
        s.e.d
            .docker(&["service", "rollback", "--detach", "fresh"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let id = s.svc("fresh", "{{.ID}}")?;
    // dockerd passes swarmkit's gRPC error text through.
    assert_eq!(
        err.trim(),
        format!(
            "Error response from daemon: rpc error: code = FailedPrecondition desc = \
             service {id} does not have a previous spec"
        )
    );

    // `docker service update --rollback` after a good update returns to the spec before.
    s.e.ok(&[
        "service",
        "update",
        "--detach",
        "--args",
        "sleep 2000",
        "api",
    ])?;
    s.running_with("api", 2, "sleep 2000")?;
    s.e.ok(&["service", "update", "--detach", "--rollback", "api"])?;
    s.wait_state("api", "rollback_completed")?;
    s.running_with("api", 2, "sleep 1000")?;
    Ok(())
}
