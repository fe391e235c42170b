//! Services on one node through the real docker CLI: the leader loop places the tasks and
//! the node agent runs them as containers named and labelled as Swarm names them, restarts
//! failed ones as the restart policy says, removes them with the service or when the node
//! leaves, and adopts them again after a restart of berthd. (Multi-node behaviour is in
//! tests/services.rs.)

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Result};
use berth_testkit::daemon::{retry, Berthd, DockerEnv};

/// A single-node swarm on a berthd of its own; leaves the swarm (which removes the task
/// containers) before the engine's own cleanup runs, so no task is recreated meanwhile.
struct Swarm {
    e: DockerEnv,
}

impl Swarm {
    fn new() -> Result<Self> {
        Self::with_args(&[])
    }

    /// With extra berthd arguments.
    fn with_args(args: &[&str]) -> Result<Self> {
        let e = DockerEnv {
            fx: berth_testkit::Fixture::from_env()?,
            d: Berthd::start(args)?,
        };
        let out = e.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
        ensure!(out.contains("Swarm initialized"), "{out}");
        Ok(Swarm { e })
    }

    /// Polls `f` until it returns `Some`, with berthd's log in the error.
    fn eventually<T>(&self, what: &str, f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
        retry(Duration::from_secs(60), f)
            .map_err(|err| anyhow::anyhow!("waiting for {what}: {err}\n{}", self.e.d.log()))
    }

    /// `docker ps` rows of `service`'s containers: (name, task id label, status), `all`
    /// including exited ones.
    fn containers(&self, service: &str, all: bool) -> Result<Vec<(String, String, String)>> {
        let filter = format!("label=com.docker.swarm.service.name={service}");
        let mut args = vec![
            "ps",
            "--filter",
            &filter,
            "--format",
            "{{.Names}}|{{.Label \"com.docker.swarm.task.id\"}}|{{.Status}}",
        ];
        if all {
            args.push("-a");
        }
        Ok(self
            .e
            .ok(&args)?
            .lines()
            .filter_map(|l| {
                let mut p = l.splitn(3, '|');
                Some((
                    p.next()?.to_string(),
                    p.next()?.to_string(),
                    p.next()?.to_string(),
                ))
            })
            .collect())
    }

    /// Waits until `n` containers of `service` run; returns their names.
    fn running(&self, service: &str, n: usize) -> Result<Vec<String>> {
        self.eventually(&format!("{n} running containers of {service}"), || {
            let rows = self.containers(service, false)?;
            let up = rows.iter().filter(|r| r.2.starts_with("Up")).count();
            Ok((up == n && rows.len() == n).then(|| rows.into_iter().map(|r| r.0).collect()))
        })
    }

    fn pid(&self, container: &str) -> Result<String> {
        self.e.inspect(container, "{{.State.Pid}}")
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = self.e.d.docker(&["swarm", "leave", "--force"]);
        // The agent removes the task containers after the leave; let it finish before the
        // engine's own cleanup and shutdown.
        let _ = retry(Duration::from_secs(30), || {
            let ids = self.e.d.docker_ok(&["ps", "-aq"])?;
            Ok(ids.trim().is_empty().then_some(()))
        });
    }
}

/// `<service>.<slot>.<task id>` with Swarm's 25-character task id.
fn is_task_name(name: &str, service: &str) -> bool {
    let re = regex::Regex::new(&format!(
        "^{}\\.[1-9][0-9]*\\.[0-9a-z]{{25}}$",
        regex::escape(service)
    ))
    .expect("regex");
    re.is_match(name)
}

#[test]
fn replicas_run_as_named_labelled_containers_and_go_with_the_service() -> Result<()> {
    let s = Swarm::new()?;
    let bb = s.e.img("busybox:latest");
    s.e.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "3",
        &bb,
        "sleep",
        "1000",
    ])?;
    let names = s.running("web", 3)?;
    for n in &names {
        assert!(is_task_name(n, "web"), "{names:?}");
    }
    let slots: BTreeSet<&str> = names.iter().map(|n| n.split('.').nth(1).unwrap()).collect();
    assert_eq!(slots, BTreeSet::from(["1", "2", "3"]), "{names:?}");
    // Swarm's labels, as `docker ps` shows them.
    let service_id =
        s.e.ok(&["service", "inspect", "--format", "{{.ID}}", "web"])?;
    let node_id = s.e.ok(&["info", "--format", "{{.Swarm.NodeID}}"])?;
    for row in s.containers("web", false)? {
        let labels = s.e.inspect(&row.0, "{{json .Config.Labels}}")?;
        let labels: serde_json::Value = serde_json::from_str(&labels)?;
        assert_eq!(labels["com.docker.swarm.service.name"], "web", "{labels}");
        assert_eq!(labels["com.docker.swarm.service.id"], service_id.trim());
        assert_eq!(labels["com.docker.swarm.node.id"], node_id.trim());
        assert_eq!(labels["com.docker.swarm.task.id"], row.1.as_str());
        let task_name = format!("web.{}.{}", row.0.split('.').nth(1).unwrap(), row.1);
        assert_eq!(labels["com.docker.swarm.task.name"], task_name.as_str());
        assert_eq!(row.0, task_name);
    }
    s.e.ok(&["service", "rm", "web"])?;
    s.eventually("the service's containers to be removed", || {
        Ok(s.containers("web", true)?.is_empty().then_some(()))
    })?;
    Ok(())
}

#[test]
fn on_failure_restarts_stop_after_max_attempts() -> Result<()> {
    let s = Swarm::new()?;
    let bb = s.e.img("busybox:latest");
    s.e.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "flaky",
        "--restart-condition",
        "on-failure",
        "--restart-max-attempts",
        "2",
        "--restart-delay",
        "100ms",
        &bb,
        "sh",
        "-c",
        "exit 1",
    ])?;
    let failed = |rows: &[(String, String, String)]| {
        rows.iter()
            .filter(|r| r.2.starts_with("Exited (1)"))
            .count()
    };
    s.eventually("three failed attempts", || {
        let rows = s.containers("flaky", true)?;
        Ok((failed(&rows) == 3).then_some(()))
    })?;
    // No fourth attempt: give the orchestrator many restart delays to (wrongly) make one.
    std::thread::sleep(Duration::from_secs(3));
    let rows = s.containers("flaky", true)?;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(failed(&rows), 3, "{rows:?}");
    let tasks: BTreeSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        tasks.len(),
        3,
        "each attempt is a task of its own: {rows:?}"
    );
    // Every attempt ran in slot 1.
    assert!(rows.iter().all(|r| r.0.starts_with("flaky.1.")), "{rows:?}");
    Ok(())
}

#[test]
fn a_task_that_cannot_start_fails_with_dockers_error() -> Result<()> {
    let s = Swarm::new()?;
    let bb = s.e.img("busybox:latest");
    s.e.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "broken",
        "--restart-condition",
        "none",
        &bb,
        "/no/such/binary",
    ])?;
    let row = s.eventually("the task to fail", || {
        let out = s.e.ok(&[
            "service",
            "ps",
            "broken",
            "--no-trunc",
            "--format",
            "{{.CurrentState}}|{{.Error}}",
        ])?;
        Ok(out
            .lines()
            .find(|l| l.starts_with("Failed"))
            .map(str::to_string))
    })?;
    assert!(
        row.contains("starting container failed:") && row.contains("/no/such/binary"),
        "{row}"
    );
    // The container stays (as Swarm keeps a failed task's container), created, not running.
    let rows = s.containers("broken", true)?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(!rows[0].2.starts_with("Up"), "{rows:?}");
    Ok(())
}

#[test]
fn containers_of_trimmed_task_history_are_removed() -> Result<()> {
    let s = Swarm::new()?;
    let bb = s.e.img("busybox:latest");
    s.e.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "churn",
        "--restart-condition",
        "any",
        "--restart-delay",
        "0s",
        &bb,
        "sh",
        "-c",
        "exit 3",
    ])?;
    // Attempts pile up beyond the history limit (5 per slot, Swarm's default).
    let mut seen = BTreeSet::new();
    s.eventually("more attempts than the task history keeps", || {
        for row in s.containers("churn", true)? {
            seen.insert(row.1);
        }
        Ok((seen.len() >= 9).then_some(()))
    })?;
    // Then the containers on the node are exactly those of the tasks the cluster keeps:
    // the containers of trimmed tasks were removed.
    s.eventually("containers to match the kept tasks", || {
        let tasks: BTreeSet<String> =
            s.e.ok(&[
                "service",
                "ps",
                "churn",
                "--no-trunc",
                "--format",
                "{{.ID}}",
            ])?
            .lines()
            .map(str::to_string)
            .collect();
        let containers: BTreeSet<String> = s
            .containers("churn", true)?
            .into_iter()
            .map(|r| r.1)
            .collect();
        // The service keeps restarting, so compare one moment's view, allowing the
        // newest task (created between the two reads) on either side.
        let diff = tasks.symmetric_difference(&containers).count();
        Ok((tasks.len() <= 7 && containers.len() <= 7 && diff <= 1).then_some(()))
    })?;
    s.e.ok(&["service", "rm", "churn"])?;
    s.eventually("the service's containers to be removed", || {
        Ok(s.containers("churn", true)?.is_empty().then_some(()))
    })?;
    Ok(())
}

#[test]
fn a_replicated_job_runs_each_task_to_completion() -> Result<()> {
    let s = Swarm::new()?;
    let bb = s.e.img("busybox:latest");
    s.e.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "batch",
        "--mode",
        "replicated-job",
        "--replicas",
        "2",
        &bb,
        "sh",
        "-c",
        "echo done",
    ])?;
    let states = s.eventually("both job tasks to complete", || {
        let out = s.e.ok(&[
            "service",
            "ps",
            "batch",
            "--format",
            "{{.DesiredState}}|{{.CurrentState}}",
        ])?;
        let lines: Vec<String> = out.lines().map(str::to_string).collect();
        Ok(
            (lines.len() == 2 && lines.iter().all(|l| l.starts_with("Complete|Complete")))
                .then_some(lines),
        )
    })?;
    assert_eq!(states.len(), 2);
    let rows = s.containers("batch", true)?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.2.starts_with("Exited (0)")),
        "{rows:?}"
    );
    for r in &rows {
        assert_eq!(s.e.ok(&["logs", &r.0])?.trim(), "done");
    }
    Ok(())
}

#[test]
fn engine_labels_reach_the_scheduler() -> Result<()> {
    let s = Swarm::with_args(&["--label", "zone=a"])?;
    let bb = s.e.img("busybox:latest");
    let info = s.e.ok(&["info", "--format", "{{json .Labels}}"])?;
    assert_eq!(info.trim(), r#"["zone=a"]"#);
    // The node's agent reports them (and the node's platform and capacity) to the cluster.
    let desc = s.eventually("the node description", || {
        let out = s.e.ok(&[
            "node",
            "inspect",
            "self",
            "--format",
            "{{json .Description}}",
        ])?;
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        Ok((v["Engine"]["Labels"]["zone"] == "a").then_some(v))
    })?;
    assert_eq!(desc["Platform"]["OS"], "linux", "{desc}");
    assert!(
        desc["Resources"]["NanoCPUs"].as_u64().unwrap_or(0) >= 1_000_000_000,
        "{desc}"
    );
    assert!(
        desc["Resources"]["MemoryBytes"].as_u64().unwrap_or(0) > 0,
        "{desc}"
    );
    s.e.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "here",
        "--constraint",
        "engine.labels.zone==a",
        &bb,
        "sleep",
        "1000",
    ])?;
    s.e.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "nowhere",
        "--constraint",
        "engine.labels.zone==b",
        &bb,
        "sleep",
        "1000",
    ])?;
    s.running("here", 1)?;
    let pending = s.eventually("the unplaceable task to say why", || {
        let out = s.e.ok(&[
            "service",
            "ps",
            "nowhere",
            "--no-trunc",
            "--format",
            "{{.CurrentState}}|{{.Error}}",
        ])?;
        Ok(out
            .lines()
            .find(|l| l.starts_with("Pending") && l.contains("no suitable node"))
            .map(str::to_string))
    })?;
    assert!(
        pending.contains("scheduling constraints not satisfied on 1 node"),
        "{pending}"
    );
    assert!(s.containers("nowhere", true)?.is_empty());
    Ok(())
}

#[test]
fn task_containers_are_adopted_after_a_berthd_restart() -> Result<()> {
    let mut s = Swarm::new()?;
    let bb = s.e.img("busybox:latest");
    s.e.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "keep",
        "--replicas",
        "2",
        &bb,
        "sleep",
        "1000",
    ])?;
    let names = s.running("keep", 2)?;
    let pids: Vec<String> = names.iter().map(|n| s.pid(n)).collect::<Result<_>>()?;
    s.e.d.restart()?;
    // Same containers, same processes, none added.
    let after = s.running("keep", 2)?;
    let mut sorted = after.clone();
    sorted.sort();
    let mut before = names.clone();
    before.sort();
    assert_eq!(sorted, before);
    for (n, pid) in names.iter().zip(&pids) {
        assert_eq!(&s.pid(n)?, pid, "{n} kept its process");
    }
    // The adopted tasks are watched again: a killed task is replaced.
    let victim = &names[0];
    let pid: i32 = pids[0].trim().parse()?;
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    ensure!(killed.success(), "kill -9 {pid}");
    s.eventually("the killed task to be replaced", || {
        let rows = s.containers("keep", false)?;
        let up: Vec<&String> = rows
            .iter()
            .filter(|r| r.2.starts_with("Up"))
            .map(|r| &r.0)
            .collect();
        Ok((up.len() == 2 && !up.contains(&victim)).then_some(()))
    })?;
    // Leaving the swarm removes this node's task containers.
    s.e.ok(&["swarm", "leave", "--force"])?;
    s.eventually("task containers removed after leaving", || {
        Ok(s.containers("keep", true)?.is_empty().then_some(()))
    })?;
    Ok(())
}

/// Runs the docker CLI and fails unless it exits 0 within `within`; returns stdout. For
/// commands that wait for something (a `service update` without `--detach` waits until the
/// update converged): a hang fails the test with the command's output so far instead of
/// stalling it.
fn docker_within(s: &Swarm, within: Duration, args: &[&str]) -> Result<String> {
    use std::io::Read;
    let mut child =
        s.e.d
            .docker_cmd(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out)?;
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err)?;
    }
    match status {
        Some(st) if st.success() => Ok(out),
        Some(st) => anyhow::bail!("docker {} failed ({st}): {out}{err}", args.join(" ")),
        None => anyhow::bail!(
            "docker {} did not return within {within:?}: {out}{err}\n{}",
            args.join(" "),
            s.e.d.log()
        ),
    }
}

#[test]
fn service_update_replaces_running_tasks_and_the_cli_sees_it_converge() -> Result<()> {
    let s = Swarm::new()?;
    let bb = s.e.img("busybox:latest");
    let web = s.e.img("web:latest");
    s.e.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "2",
        &bb,
        "sleep",
        "1000",
    ])?;
    let first: BTreeSet<String> = s.running("web", 2)?.into_iter().collect();
    // The tasks' containers now: names, env and image, 2 running, none of `before`.
    let current = |before: &BTreeSet<String>| -> Result<BTreeSet<String>> {
        let names: BTreeSet<String> = s.running("web", 2)?.into_iter().collect();
        assert!(
            names.is_disjoint(before),
            "old task containers still run: {names:?} / {before:?}"
        );
        Ok(names)
    };
    let env_of = |name: &str| s.e.inspect(name, "{{json .Config.Env}}");
    let image_of = |name: &str| s.e.inspect(name, "{{.Config.Image}}");

    // Without --detach the CLI waits until every task runs the new spec: it returns only
    // when the tasks were replaced.
    let within = Duration::from_secs(120);
    docker_within(
        &s,
        within,
        &["service", "update", "--env-add", "X=1", "web"],
    )?;
    let second = current(&first)?;
    for n in &second {
        assert!(env_of(n)?.contains("\"X=1\""), "{n}: {}", env_of(n)?);
        assert!(image_of(n)?.contains("busybox"), "{}", image_of(n)?);
    }

    docker_within(&s, within, &["service", "update", "--image", &web, "web"])?;
    let third = current(&second)?;
    for n in &third {
        assert!(
            image_of(n)?.contains("web:latest@sha256:"),
            "{}",
            image_of(n)?
        );
        assert!(
            env_of(n)?.contains("\"X=1\""),
            "the env is kept: {}",
            env_of(n)?
        );
    }
    let ps = s.e.ok(&[
        "service",
        "ps",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Image}}",
        "web",
    ])?;
    assert_eq!(ps.lines().count(), 2, "{ps}");
    assert!(ps.lines().all(|l| l.contains("web:latest")), "{ps}");

    // A scale keeps the running tasks.
    docker_within(&s, within, &["service", "scale", "web=3"])?;
    let scaled: BTreeSet<String> = s.running("web", 3)?.into_iter().collect();
    assert!(third.is_subset(&scaled), "{third:?} / {scaled:?}");
    docker_within(&s, within, &["service", "scale", "web=2"])?;
    let third: BTreeSet<String> = s.running("web", 2)?.into_iter().collect();

    // --force replaces them with the same spec.
    docker_within(&s, within, &["service", "update", "--force", "web"])?;
    let fourth = current(&third)?;
    for n in &fourth {
        assert!(
            image_of(n)?.contains("web:latest@sha256:"),
            "{}",
            image_of(n)?
        );
    }
    // The docker CLI's --update-* flags (it sends its defaults for the rest: failure action
    // pause, monitor 5 s) are honoured: start-first, two at once.
    docker_within(
        &s,
        within,
        &[
            "service",
            "update",
            "--update-order",
            "start-first",
            "--update-parallelism",
            "2",
            "--update-delay",
            "1s",
            "--env-add",
            "Y=2",
            "web",
        ],
    )?;
    let fifth = current(&fourth)?;
    for n in &fifth {
        assert!(env_of(n)?.contains("\"Y=2\""), "{n}: {}", env_of(n)?);
    }
    Ok(())
}

/// `docker restart` of a task's container ends its task (the restart kills it: the task
/// fails and is replaced); the restarted container is stopped again rather than left
/// running beside the replacement, task-less (holding its ports).
#[test]
fn a_restarted_task_container_does_not_keep_running_beside_its_replacement() -> Result<()> {
    let s = Swarm::new()?;
    let bb = s.e.img("busybox:latest");
    s.e.ok(&[
        "service", "create", "--detach", "--name", "rs", &bb, "sleep", "1000",
    ])?;
    let first = s.running("rs", 1)?.remove(0);
    s.e.ok(&["restart", "-t", "1", &first])?;
    let second = s.eventually("a replacement task running", || {
        let rows = s.containers("rs", false)?;
        Ok(rows
            .iter()
            .find(|r| r.0 != first && r.2.starts_with("Up"))
            .map(|r| r.0.clone()))
    })?;
    s.eventually("the restarted container of the ended task to stop", || {
        let running = s.e.inspect(&first, "{{.State.Running}}")?;
        Ok((running.trim() == "false").then_some(()))
    })?;
    let rows = s.containers("rs", false)?;
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        [second.as_str()],
        "{rows:?}"
    );
    Ok(())
}
