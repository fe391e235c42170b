//! The service lifecycle through the real docker CLI against berth clusters
//! ([`Cluster`]: each berthd in its own network namespace and data root, on one veth LAN).
//!
//! - `docker service logs` on 3 replicas over 3 nodes: every task's lines, from every node,
//!   with Swarm's `service.slot.task@node` prefixes (`--no-task-ids`: `service.slot@node`;
//!   `--raw`: none), stderr to stderr, `--tail`, `--timestamps`, `--since`; `-f` keeps
//!   bringing new lines of all three, and ending the client stops the readers on every
//!   node; tasks a scale places later on nodes that had none join a running `-f`. Query
//!   parameters berth does not know are refused by name (400).
//! - Health: a task whose container turns unhealthy is stopped, failed with Swarm's
//!   `unhealthy container` (shown by `docker service ps`) and replaced; a task with a health
//!   check stays `Starting` until its container is healthy (so an update, which waits for
//!   its new tasks to run, waits for them to be healthy).
//!
//! - A rolling update from image A to B, parallelism 1, delay 2 s, 4 replicas over 3
//!   managers, sampled all along: old and new side by side, never fewer than 3 running,
//!   all 4 on B at the end; back with start-first: never fewer than 4.
//!
//! Cleanup: [`Cluster::with_task_cleanup`] removes every service and container, then each
//! berthd and its netns, then the LAN.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use berth_testkit::cluster::Cluster;
use berth_testkit::daemon::retry;

const CONVERGE: Duration = Duration::from_secs(60);

/// A task of a service as `docker service ps` shows it.
#[derive(Debug, Clone)]
struct TaskRow {
    id: String,
    /// `service.slot`.
    name: String,
    node: String,
    desired: String,
    current: String,
    error: String,
}

/// Every task of `service` (`docker service ps --no-trunc`, as host `i` answers).
fn service_ps(c: &Cluster, i: usize, service: &str) -> Result<Vec<TaskRow>> {
    let out = c.h(i).docker_ok(&[
        "service",
        "ps",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.Name}}|{{.Node}}|{{.DesiredState}}|{{.CurrentState}}|{{.Error}}",
        service,
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let p: Vec<&str> = l.splitn(6, '|').collect();
            (p.len() == 6).then(|| TaskRow {
                id: p[0].to_string(),
                // History rows are shown as ` \_ name`.
                name: p[1].trim_start_matches([' ', '\\', '_']).to_string(),
                node: p[2].to_string(),
                desired: p[3].to_string(),
                current: p[4].to_string(),
                error: p[5].to_string(),
            })
        })
        .collect())
}

/// Waits until exactly `n` tasks of `service` run; returns them.
fn running_tasks(c: &Cluster, service: &str, n: usize) -> Result<Vec<TaskRow>> {
    let mut last = Vec::new();
    retry(CONVERGE, || {
        last = service_ps(c, 0, service)?;
        let up: Vec<TaskRow> = last
            .iter()
            .filter(|t| t.desired == "Running" && t.current.starts_with("Running"))
            .cloned()
            .collect();
        Ok((up.len() == n).then_some(up))
    })
    .with_context(|| format!("{service}: never {n} running tasks; last {last:?}"))
}

/// `docker service logs ARGS SERVICE` on host `i`: (stdout, stderr).
fn service_logs(c: &Cluster, i: usize, args: &[&str], service: &str) -> Result<(String, String)> {
    let mut all = vec!["service", "logs"];
    all.extend_from_slice(args);
    all.push(service);
    let out = c.h(i).docker(&all)?;
    ensure!(
        out.status.success(),
        "docker {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `prefix    | tick N` lines: the highest N per prefix.
fn ticks(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for l in text.lines() {
        let Some((prefix, msg)) = l.split_once("    | ") else {
            continue;
        };
        if let Some(n) = msg
            .strip_prefix("tick ")
            .and_then(|n| n.trim().parse::<u64>().ok())
        {
            let e = out.entry(prefix.to_string()).or_insert(0);
            *e = (*e).max(n);
        }
    }
    out
}

/// Occurrences of `needle` in host `i`'s berthd log.
fn log_count(c: &Cluster, i: usize, needle: &str) -> usize {
    c.h(i).log().matches(needle).count()
}

/// A raw `GET path` on host `i`'s API socket: (status line, body).
fn raw_get(c: &Cluster, i: usize, path: &str) -> Result<(String, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(c.h(i).socket())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: berth\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

const TICKER: &str =
    "echo to-stderr >&2; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";

/// A 3-manager cluster with a service `NAME` of `replicas` TICKER tasks, at most one per
/// node; returns the cluster and the service's name.
fn ticker_service(prefix: &str, replicas: u32) -> Result<(Cluster, String)> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let c = Cluster::new(3)?.with_task_cleanup();
    c.form(3)?;
    let svc = format!("{prefix}{}", std::process::id());
    c.h(0).docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &svc,
        "--replicas",
        &replicas.to_string(),
        "--replicas-max-per-node",
        "1",
        &img,
        "sh",
        "-c",
        TICKER,
    ])?;
    Ok((c, svc))
}

/// The 3 running tasks of `service`, checked to run one on each of the 3 hosts.
fn one_task_per_host(c: &Cluster, service: &str) -> Result<Vec<TaskRow>> {
    let tasks = running_tasks(c, service, 3)?;
    let hosts_with_tasks: BTreeSet<usize> = (0..3)
        .filter(|&i| {
            c.h(i)
                .docker_ok(&[
                    "ps",
                    "-q",
                    "--filter",
                    &format!("label=com.docker.swarm.service.name={service}"),
                ])
                .is_ok_and(|o| !o.trim().is_empty())
        })
        .collect();
    ensure!(
        hosts_with_tasks.len() == 3,
        "one task per node expected: {hosts_with_tasks:?} {tasks:?}"
    );
    Ok(tasks)
}

/// `docker service logs -f SERVICE` on host `i`: the client and its stdout lines.
fn follow_logs(
    c: &Cluster,
    i: usize,
    service: &str,
) -> Result<(std::process::Child, std::sync::mpsc::Receiver<String>)> {
    let mut child = c
        .h(i)
        .docker_cmd(&["service", "logs", "-f", service])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    // Ends when the client's stdout closes (the client is killed) or `rx` is dropped.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Ok((child, rx))
}

#[test]
fn service_logs_merge_every_node_with_swarm_prefixes_and_follow() -> Result<()> {
    let (c, svc) = ticker_service("logs", 3)?;
    let tasks = one_task_per_host(&c, &svc)?;
    // The CLI's prefix: service.slot.<task id, 12 characters>@<node hostname>.
    let prefixes: BTreeMap<String, String> = tasks
        .iter()
        .map(|t| {
            (
                format!("{}.{}@{}", t.name, &t.id[..12], t.node),
                format!("{}@{}", t.name, t.node),
            )
        })
        .collect();
    let want: BTreeSet<String> = prefixes.keys().cloned().collect();

    // Every task's lines, asked on another node than the one that created the service.
    let mut seen = BTreeMap::new();
    retry(CONVERGE, || {
        let (out, _) = service_logs(&c, 1, &[], &svc)?;
        seen = ticks(&out);
        Ok((seen.keys().cloned().collect::<BTreeSet<_>>() == want
            && seen.values().all(|n| *n >= 2))
        .then_some(()))
    })
    .with_context(|| format!("lines of every task expected under {want:?}; got {seen:?}"))?;
    let (out, err) = service_logs(&c, 1, &[], &svc)?;
    for p in &want {
        ensure!(
            err.lines().any(|l| l == format!("{p}    | to-stderr")),
            "stderr line of {p} missing: {err}"
        );
    }
    ensure!(
        out.lines()
            .all(|l| want.iter().any(|p| l.starts_with(&format!("{p}    | ")))),
        "a line without a task prefix: {out}"
    );

    // --no-task-ids: service.slot@node.
    let (out, _) = service_logs(&c, 2, &["--no-task-ids"], &svc)?;
    let short: BTreeSet<String> = ticks(&out).into_keys().collect();
    ensure!(
        short == prefixes.values().cloned().collect::<BTreeSet<_>>(),
        "--no-task-ids prefixes {short:?}, want {prefixes:?}"
    );
    // --raw: the lines as written.
    let (out, err) = service_logs(&c, 2, &["--raw"], &svc)?;
    ensure!(
        out.lines().all(|l| l.starts_with("tick ")) && out.lines().count() >= 9,
        "--raw: {out}"
    );
    ensure!(
        err.lines().filter(|l| *l == "to-stderr").count() == 3,
        "--raw stderr: {err}"
    );
    // --tail 1: the last line of each task.
    let (out, err) = service_logs(&c, 0, &["--tail", "1"], &svc)?;
    let last: Vec<&str> = out.lines().collect();
    ensure!(
        last.len() == 3 && ticks(&out).len() == 3 && err.is_empty(),
        "--tail 1: {out} / {err}"
    );
    // --timestamps, then --since the newest line of one task: nothing older comes back.
    let (out, _) = service_logs(&c, 0, &["--timestamps"], &svc)?;
    let stamp = regex::Regex::new(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (\S+)    \| (.*)$")?;
    let mut newest: Option<String> = None;
    for l in out.lines() {
        let m = stamp
            .captures(l)
            .with_context(|| format!("--timestamps line {l:?}"))?;
        ensure!(want.contains(&m[2]), "--timestamps prefix in {l:?}");
        if newest.as_deref().is_none_or(|n| n < &m[1]) {
            newest = Some(m[1].to_string());
        }
    }
    let since = newest.context("no line with --timestamps")?;
    let (out, _) = service_logs(&c, 0, &["--timestamps", "--since", &since], &svc)?;
    for l in out.lines() {
        let m = stamp.captures(l).with_context(|| format!("line {l:?}"))?;
        ensure!(&m[1] >= since.as_str(), "--since {since}: older line {l:?}");
        ensure!(
            &m[3] != "tick 0" && &m[3] != "to-stderr",
            "--since {since}: {l:?}"
        );
    }

    // Parameters berth does not support: 400 naming them.
    let (status, body) = raw_get(
        &c,
        0,
        &format!("/v1.44/services/{svc}/logs?stdout=1&until=10&bogus=1"),
    )?;
    ensure!(
        status.contains(" 400 ") && body.contains("bogus, until"),
        "{status}: {body}"
    );

    // -f: new lines of all three keep coming.
    let readers_before: Vec<usize> = (0..3)
        .map(|i| log_count(&c, i, "task log follow ended"))
        .collect();
    let (mut child, rx) = follow_logs(&c, 2, &svc)?;
    let baseline = ticks(&service_logs(&c, 0, &[], &svc)?.0);
    let mut fresh: BTreeSet<String> = BTreeSet::new();
    let deadline = Instant::now() + CONVERGE;
    while fresh != want {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                bail!("follow: new lines only from {fresh:?} of {want:?}");
            }
        };
        for (prefix, n) in ticks(&line) {
            if baseline.get(&prefix).is_some_and(|b| n > *b) {
                fresh.insert(prefix);
            }
        }
    }
    child.kill()?;
    child.wait()?;
    // Ending the client ends the readers on every node: each node's follow loop stops and
    // every reader it started ends.
    for (i, before) in readers_before.iter().enumerate() {
        retry(Duration::from_secs(30), || {
            let started = log_count(&c, i, "task log reader started");
            let ended = log_count(&c, i, "task log reader ended");
            let follows = log_count(&c, i, "task log follow ended");
            Ok((started == ended && follows > *before).then_some(()))
        })
        .with_context(|| {
            format!(
                "host {i}: log readers still running after the client left:\n{}",
                c.h(i).log()
            )
        })?;
    }
    Ok(())
}

/// `docker service logs -f` started while the service has one task: the tasks a scale
/// puts on the two other nodes join the stream (their nodes had nothing to stream when
/// the request came).
#[test]
fn service_logs_follow_brings_tasks_placed_later_on_other_nodes() -> Result<()> {
    let (c, svc) = ticker_service("later", 1)?;
    running_tasks(&c, &svc, 1)?;
    let (mut child, rx) = follow_logs(&c, 1, &svc)?;
    // The first task's lines come before the scale.
    let first = rx
        .recv_timeout(CONVERGE)
        .context("no line from the first task")?;
    c.h(0)
        .docker_ok(&["service", "scale", "--detach", &format!("{svc}=3")])?;
    let tasks = one_task_per_host(&c, &svc)?;
    // Every task's lines (the prefix is service.slot.<task id, 12 characters>@node).
    let want: BTreeSet<String> = tasks.iter().map(|t| t.id[..12].to_string()).collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let deadline = Instant::now() + CONVERGE;
    let mut line = first;
    loop {
        for prefix in ticks(&line).into_keys() {
            let task = prefix.trim().split('@').next().unwrap_or_default();
            if let Some((_, id)) = task.rsplit_once('.') {
                seen.insert(id.to_string());
            }
        }
        if seen == want {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("follow: lines only from tasks {seen:?} of {want:?}");
            }
        };
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// The task container of `service` on host `i` that runs (its name).
fn running_container(c: &Cluster, i: usize, service: &str) -> Result<String> {
    retry(CONVERGE, || {
        let out = c.h(i).docker_ok(&[
            "ps",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
            "--format",
            "{{.Names}}",
        ])?;
        let names: Vec<&str> = out.lines().collect();
        Ok((names.len() == 1).then(|| names[0].to_string()))
    })
    .with_context(|| format!("no single running container of {service}"))
}

#[test]
fn a_task_that_turns_unhealthy_fails_with_swarms_reason_and_is_replaced() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let c = Cluster::new(1)?.with_task_cleanup();
    c.form(1)?;
    let svc = format!("sick{}", std::process::id());
    c.h(0).docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &svc,
        "--health-cmd",
        "test ! -e /tmp/sick",
        "--health-interval",
        "1s",
        "--health-timeout",
        "5s",
        "--health-retries",
        "1",
        &img,
        "sleep",
        "1000",
    ])?;
    let first = running_tasks(&c, &svc, 1)?.remove(0);
    let container = running_container(&c, 0, &svc)?;
    c.h(0)
        .docker_ok(&["exec", &container, "touch", "/tmp/sick"])?;
    // The task fails with Swarm's reason and a replacement (a fresh container: healthy)
    // runs in its slot.
    let mut last = Vec::new();
    retry(CONVERGE, || {
        last = service_ps(&c, 0, &svc)?;
        let failed = last.iter().any(|t| {
            // The CLI quotes the error.
            t.id == first.id
                && t.current.starts_with("Failed")
                && t.error == "\"unhealthy container\""
        });
        let replaced = last.iter().any(|t| {
            t.id != first.id
                && t.name == first.name
                && t.desired == "Running"
                && t.current.starts_with("Running")
        });
        Ok((failed && replaced).then_some(()))
    })
    .with_context(|| format!("unhealthy task never failed and replaced: {last:?}"))?;
    // The unhealthy container was stopped.
    let state = c
        .h(0)
        .docker_ok(&["inspect", "--format", "{{.State.Status}}", &container])?;
    ensure!(state.trim() == "exited", "unhealthy container is {state}");
    Ok(())
}

#[test]
fn a_task_with_a_health_check_is_starting_until_healthy() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let c = Cluster::new(1)?.with_task_cleanup();
    c.form(1)?;
    let svc = format!("slow{}", std::process::id());
    c.h(0).docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &svc,
        "--health-cmd",
        "test -e /tmp/ready",
        "--health-interval",
        "1s",
        "--health-timeout",
        "5s",
        "--health-retries",
        "100000",
        &img,
        "sleep",
        "1000",
    ])?;
    let container = running_container(&c, 0, &svc)?;
    // Probes have failed (not yet unhealthy: many retries) and the task is still starting.
    retry(CONVERGE, || {
        let n = c.h(0).docker_ok(&[
            "inspect",
            "--format",
            "{{len .State.Health.Log}}",
            &container,
        ])?;
        Ok((n.trim().parse::<usize>().unwrap_or(0) >= 2).then_some(()))
    })
    .context("no failed probes recorded")?;
    let tasks = service_ps(&c, 0, &svc)?;
    ensure!(
        tasks.len() == 1 && tasks[0].current.starts_with("Starting"),
        "a container that is not healthy yet counts as running: {tasks:?}"
    );
    c.h(0)
        .docker_ok(&["exec", &container, "touch", "/tmp/ready"])?;
    let running = running_tasks(&c, &svc, 1)?;
    ensure!(running[0].id == tasks[0].id, "{running:?} {tasks:?}");
    Ok(())
}

/// The running tasks of `service` (desired and observed `Running`), by image: how many run
/// image `a` and how many image `b` (matched by name in the task's image reference).
fn running_by_image(
    c: &Cluster,
    i: usize,
    service: &str,
    a: &str,
    b: &str,
) -> Result<(usize, usize)> {
    let out = c.h(i).docker_ok(&[
        "service",
        "ps",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Image}}|{{.CurrentState}}",
        service,
    ])?;
    let mut counts = (0, 0);
    for line in out.lines() {
        let Some((image, state)) = line.split_once('|') else {
            continue;
        };
        if !state.starts_with("Running") {
            continue;
        }
        let name = image.rsplit('/').next().unwrap_or(image);
        if name.starts_with(&format!("{a}:")) {
            counts.0 += 1;
        } else if name.starts_with(&format!("{b}:")) {
            counts.1 += 1;
        }
    }
    Ok(counts)
}

/// Runs `docker service update ARGS SERVICE` (detached) on host 0 and samples the running
/// tasks on host 1 until all `replicas` run image `to`; every sample `(from, to)` seen.
fn sample_update(
    c: &Cluster,
    service: &str,
    (from, to): (&str, &str),
    replicas: usize,
    args: &[&str],
) -> Result<Vec<(usize, usize)>> {
    let mut update = vec!["service", "update", "--detach"];
    update.extend_from_slice(args);
    update.push(service);
    c.h(0).docker_ok(&update)?;
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (old, new) = running_by_image(c, 1, service, from, to)?;
        samples.push((old, new));
        if new == replicas && old == 0 {
            return Ok(samples);
        }
        ensure!(
            Instant::now() < deadline,
            "the update from {from} to {to} never finished; samples (old, new): {samples:?}; service ps: {}",
            c.h(0)
                .docker_ok(&["service", "ps", "--no-trunc", service])
                .unwrap_or_else(|e| e.to_string())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A rolling update from image A (busybox) to image B (web) on 4 replicas over 3 managers,
/// `--update-parallelism 1 --update-delay 2s` (stop-first): sampled all along, old and new
/// tasks run side by side and never fewer than 3 run; it ends with all 4 on B. Back to A
/// with `--update-order start-first`: never fewer than 4 run.
#[test]
fn a_rolling_update_keeps_replicas_running_and_start_first_keeps_all() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let (a, b) = (fx.reference("busybox:latest"), fx.reference("web:latest"));
    let c = Cluster::new(3)?.with_task_cleanup();
    c.form(3)?;
    let name = format!("roll{}", std::process::id());
    c.h(0).docker_ok(&[
        "service",
        "create",
        "--detach",
        "-q",
        "--name",
        &name,
        "--replicas",
        "4",
        &a,
        "sleep",
        "1000000",
    ])?;
    retry(CONVERGE, || {
        Ok((running_by_image(&c, 1, &name, "busybox", "web")? == (4, 0)).then_some(()))
    })
    .context("4 replicas of A never ran")?;

    let samples = sample_update(
        &c,
        &name,
        ("busybox", "web"),
        4,
        &[
            "--image",
            &b,
            "--update-parallelism",
            "1",
            "--update-delay",
            "2s",
            "--update-order",
            "stop-first",
        ],
    )?;
    println!("stop-first samples (A, B): {samples:?}");
    ensure!(
        samples.iter().all(|(old, new)| old + new >= 3),
        "fewer than 3 tasks ran during the stop-first update: {samples:?}"
    );
    ensure!(
        samples.iter().any(|&(old, new)| old > 0 && new > 0),
        "old and new never ran side by side: {samples:?}"
    );

    let samples = sample_update(
        &c,
        &name,
        ("web", "busybox"),
        4,
        &[
            "--image",
            &a,
            "--update-parallelism",
            "1",
            "--update-delay",
            "2s",
            "--update-order",
            "start-first",
        ],
    )?;
    println!("start-first samples (B, A): {samples:?}");
    ensure!(
        samples.iter().all(|(old, new)| old + new >= 4),
        "fewer than 4 tasks ran during the start-first update: {samples:?}"
    );
    // Completed once the last task has run for the monitor period (5 s by default).
    retry(CONVERGE, || {
        let state = c.h(2).docker_ok(&[
            "service",
            "inspect",
            "--format",
            "{{.UpdateStatus.State}}",
            &name,
        ])?;
        Ok((state.trim() == "completed").then_some(()))
    })
    .context("UpdateStatus never completed")?;
    c.h(0).docker_ok(&["service", "rm", &name])?;
    Ok(())
}
