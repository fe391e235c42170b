//! Stacks and swarm settings, driven with the real docker CLI and docker-py.
//!
//! - `docker stack deploy -c compose.yml NAME` on a one-node cluster: the CLI creates the
//!   stack's overlay network and services (labelled `com.docker.stack.namespace=NAME`);
//!   `stack ls`, `stack services` and `stack ps` find them by that label; deploying the
//!   same file again changes no task; removing the services and at once the network (what
//!   `stack rm` does) leaves no service, network, task or container behind. `stack rm`
//!   itself also lists secrets and configs: its test waits for the secrets branch.
//! - `docker swarm update` on a cluster of 2 managers and a worker: the settings berth
//!   applies (`--task-history-limit`, `--dispatcher-heartbeat`, `--snapshot-interval`,
//!   `--max-snapshots 0`) are replicated (another node's `docker info` shows them) and
//!   applied (a forced update keeps only the configured task history); what berth cannot
//!   apply is refused with a 400 naming the field; docker-py's `client.swarm.update`; the
//!   worker answers `GET /swarm` and join-token requests with dockerd's 503.
//! - The worker's answers compared with a private dockerd 20.10 swarm (a manager and a
//!   worker on a LAN of their own): the same status and message for `GET /swarm`,
//!   `POST /swarm/update` and `docker swarm join-token`.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_testkit::cluster::Cluster;
use berth_testkit::daemon::{retry, Berthd, DockerEnv};
use berth_testkit::dockerd::Dockerd;
use berth_testkit::lan::Lan;

/// How long the cluster gets to converge after a change (2 shared cores).
const CONVERGE: Duration = Duration::from_secs(60);

/// A unique stack name for this run.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id())
}

fn lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// A compose file with two services on one stack network.
fn compose_file(dir: &std::path::Path, image: &str) -> Result<std::path::PathBuf> {
    let path = dir.join("compose.yml");
    std::fs::write(
        &path,
        format!(
            r#"version: "3.8"
services:
  web:
    image: {image}
    command: ["sleep", "1000000"]
    networks: [back]
    deploy:
      replicas: 2
  db:
    image: {image}
    command: ["sleep", "1000000"]
    networks: [back]
    deploy:
      labels:
        tier: data
networks:
  back:
    driver: overlay
    labels:
      purpose: test
"#
        ),
    )?;
    Ok(path)
}

/// `docker stack services NAME` as `name replicas` lines, sorted.
fn stack_services(e: &DockerEnv, stack: &str) -> Result<Vec<String>> {
    Ok(lines(&e.ok(&[
        "stack",
        "services",
        stack,
        "--format",
        "{{.Name}} {{.Replicas}}",
    ])?))
}

/// `docker stack ps NAME` (running tasks) as `id name state` lines, sorted.
fn stack_tasks(e: &DockerEnv, stack: &str) -> Result<Vec<String>> {
    Ok(lines(&e.ok(&[
        "stack",
        "ps",
        stack,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.ID}} {{.Name}} {{.CurrentState}}",
    ])?))
}

#[test]
fn stack_deploy_ls_ps_services_and_redeploy() -> Result<()> {
    let e = DockerEnv::new()?;
    e.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
    let stack = unique("st");
    let dir = tempfile::tempdir()?;
    let file = compose_file(dir.path(), &e.img("busybox:latest"))?;
    let file = file.to_str().context("path")?;

    let out = e.ok(&["stack", "deploy", "--detach=false", "-c", file, &stack])?;
    ensure!(
        out.contains(&format!("Creating network {stack}_back"))
            && out.contains(&format!("Creating service {stack}_web"))
            && out.contains(&format!("Creating service {stack}_db")),
        "stack deploy printed: {out}"
    );

    let ls = e.ok(&["stack", "ls", "--format", "{{.Name}} {{.Services}}"])?;
    ensure!(
        ls.lines().any(|l| l == format!("{stack} 2")),
        "stack ls: {ls}"
    );
    let want = vec![format!("{stack}_db 1/1"), format!("{stack}_web 2/2")];
    retry(CONVERGE, || {
        Ok((stack_services(&e, &stack)? == want).then_some(()))
    })
    .with_context(|| format!("stack services: {:?}", stack_services(&e, &stack)))?;
    let tasks = retry(CONVERGE, || {
        let t = stack_tasks(&e, &stack)?;
        Ok((t.len() == 3 && t.iter().all(|l| l.contains(" Running "))).then_some(t))
    })
    .with_context(|| format!("stack ps: {:?}", stack_tasks(&e, &stack)))?;
    let mut names: Vec<&str> = tasks.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    names.sort_unstable();
    ensure!(
        names
            == [
                format!("{stack}_db.1"),
                format!("{stack}_web.1"),
                format!("{stack}_web.2")
            ],
        "stack ps: {tasks:?}"
    );

    // What the CLI made: the network and the services carry the namespace label, the
    // services are on the network under their short name.
    let net = format!("{stack}_back");
    let nets = e.ok(&[
        "network",
        "ls",
        "--filter",
        &format!("label=com.docker.stack.namespace={stack}"),
        "--format",
        "{{.Name}} {{.Driver}} {{.Scope}}",
    ])?;
    ensure!(
        nets.trim() == format!("{net} overlay swarm"),
        "stack networks: {nets}"
    );
    let purpose = e.ok(&[
        "network",
        "inspect",
        &net,
        "--format",
        "{{index .Labels \"purpose\"}}",
    ])?;
    ensure!(purpose.trim() == "test", "network labels: {purpose}");
    let db = e.ok(&[
        "service",
        "inspect",
        &format!("{stack}_db"),
        "--format",
        "{{index .Spec.Labels \"com.docker.stack.namespace\"}} {{index .Spec.Labels \"tier\"}} {{(index .Spec.TaskTemplate.Networks 0).Aliases}}",
    ])?;
    ensure!(
        db.trim() == format!("{stack} data [db]"),
        "db service: {db}"
    );

    // Deploying the same file again changes no task.
    let specs = |e: &DockerEnv| -> Result<String> {
        e.ok(&[
            "service",
            "inspect",
            &format!("{stack}_web"),
            &format!("{stack}_db"),
            "--format",
            "{{json .Spec}}",
        ])
    };
    let before = specs(&e)?;
    let out = e.ok(&["stack", "deploy", "--detach=false", "-c", file, &stack])?;
    ensure!(
        out.contains(&format!("Updating service {stack}_web")) && !out.contains("Creating"),
        "second deploy printed: {out}"
    );
    ensure!(specs(&e)? == before, "the second deploy changed a spec");
    let all_tasks = e.ok(&["stack", "ps", &stack, "--format", "{{.ID}}"])?;
    ensure!(
        all_tasks.lines().count() == 3,
        "the second deploy made tasks: {all_tasks}"
    );
    let id_name = |t: &[String]| -> Vec<String> {
        t.iter()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    let after = stack_tasks(&e, &stack)?;
    ensure!(
        id_name(&after) == id_name(&tasks),
        "tasks after the second deploy: {after:?}, before: {tasks:?}"
    );

    // What `stack rm` does (services, then at once the network), by hand: the stopping
    // tasks do not hold the network (swarmkit's rule).
    e.ok(&[
        "service",
        "rm",
        &format!("{stack}_db"),
        &format!("{stack}_web"),
    ])?;
    e.ok(&["network", "rm", &net])?;
    nothing_left(&e, &stack, &net)
}

/// A stack with a secret and a config (both from files next to the compose file) used by
/// its service: the task reads them at their targets; `docker stack rm` removes the
/// services, the network, the secret and the config (the CLI lists them with the
/// `com.docker.stack.namespace` label filter).
#[test]
fn stack_with_a_secret_and_a_config_deploys_and_rm_leaves_nothing() -> Result<()> {
    let e = DockerEnv::new()?;
    e.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
    let stack = unique("sr");
    let dir = tempfile::tempdir()?;
    let marker = format!("stack-secret-{}", std::process::id());
    std::fs::write(dir.path().join("token.txt"), &marker)?;
    std::fs::write(dir.path().join("app.conf"), "listen=8080\n")?;
    let file = dir.path().join("compose.yml");
    std::fs::write(
        &file,
        format!(
            r#"version: "3.8"
services:
  web:
    image: {image}
    command: ["sleep", "1000000"]
    networks: [back]
    secrets: [token]
    configs:
      - source: app
        target: /etc/app.conf
        mode: 0440
networks:
  back:
    driver: overlay
secrets:
  token:
    file: ./token.txt
configs:
  app:
    file: ./app.conf
"#,
            image = e.img("busybox:latest")
        ),
    )?;
    e.ok(&[
        "stack",
        "deploy",
        "--detach=false",
        "-c",
        file.to_str().context("path")?,
        &stack,
    ])?;
    let secrets = e.ok(&["secret", "ls", "--format", "{{.Name}}"])?;
    ensure!(
        secrets.contains(&format!("{stack}_token")),
        "secret ls: {secrets}"
    );
    let configs = e.ok(&["config", "ls", "--format", "{{.Name}}"])?;
    ensure!(
        configs.contains(&format!("{stack}_app")),
        "config ls: {configs}"
    );
    let container = retry(CONVERGE, || {
        let ids = e.ok(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={stack}_web"),
        ])?;
        Ok(ids.lines().next().map(str::to_string))
    })
    .context("the stack's web task never ran")?;
    let read = e.ok(&["exec", &container, "cat", "/run/secrets/token"])?;
    ensure!(
        read == marker,
        "the task read {read:?} at /run/secrets/token"
    );
    let conf = e.ok(&["exec", &container, "stat", "-c", "%a %s", "/etc/app.conf"])?;
    ensure!(conf.trim() == "440 12", "config at /etc/app.conf: {conf}");

    let net = format!("{stack}_back");
    let out = e.ok(&["stack", "rm", &stack])?;
    ensure!(
        out.contains(&format!("Removing service {stack}_web"))
            && out.contains(&format!("Removing network {net}"))
            && out.contains(&format!("Removing secret {stack}_token"))
            && out.contains(&format!("Removing config {stack}_app")),
        "stack rm printed: {out}"
    );
    nothing_left(&e, &stack, &net)?;
    let secrets = e.ok(&["secret", "ls", "-q"])?;
    let configs = e.ok(&["config", "ls", "-q"])?;
    ensure!(
        secrets.trim().is_empty() && configs.trim().is_empty(),
        "left after stack rm: secrets {secrets:?}, configs {configs:?}"
    );
    Ok(())
}

/// No service, container or network of the stack is left, and the stack commands say so.
fn nothing_left(e: &DockerEnv, stack: &str, net: &str) -> Result<()> {
    retry(CONVERGE, || {
        let services = e.ok(&["service", "ls", "-q"])?;
        let containers = e.ok(&["ps", "-aq"])?;
        Ok((services.trim().is_empty() && containers.trim().is_empty()).then_some(()))
    })
    .context("services or containers left after the stack's removal")?;
    let nets = e.ok(&["network", "ls", "--format", "{{.Name}}"])?;
    ensure!(!nets.contains(net), "network left: {nets}");
    let ls = e.ok(&["stack", "ls", "--format", "{{.Name}}"])?;
    ensure!(!ls.contains(stack), "stack ls after rm: {ls}");
    let o = e.d.docker(&["stack", "ps", stack])?;
    ensure!(
        String::from_utf8_lossy(&o.stderr).contains("nothing found in stack"),
        "stack ps after rm: {o:?}"
    );
    Ok(())
}

/// `python3 -c SCRIPT HOST ARGS...`: its stdout, failing unless it exits 0.
fn python(script: &str, args: &[&str]) -> Result<String> {
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()?;
    ensure!(
        o.status.success(),
        "docker-py: {} {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// dockerd 20.10's answer to cluster reads and writes on a worker (503).
const NOT_A_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";

fn settings_of(d: &Berthd) -> Result<String> {
    Ok(d.docker_ok(&[
        "info",
        "--format",
        "{{.Swarm.Cluster.Spec.Orchestration.TaskHistoryRetentionLimit}} {{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}} {{.Swarm.Cluster.Spec.Raft.SnapshotInterval}} {{.Swarm.Cluster.Spec.Raft.LogEntriesForSlowFollowers}}",
    ])?
    .trim()
    .to_string())
}

#[test]
fn swarm_update_settings_are_replicated_applied_or_refused() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let c = Cluster::new(3)?.with_task_cleanup();
    c.form(2)?;
    let (m0, m1, w) = (c.h(0), c.h(1), c.h(2));
    ensure!(
        settings_of(m1)? == "5 250ms 5000 1000",
        "defaults: {}",
        settings_of(m1)?
    );

    m0.docker_ok(&[
        "swarm",
        "update",
        "--task-history-limit",
        "2",
        "--dispatcher-heartbeat",
        "500ms",
        "--snapshot-interval",
        "300",
        "--max-snapshots",
        "0",
        "--cert-expiry",
        "2160h",
    ])?;
    // Replicated: the other manager shows them.
    retry(CONVERGE, || {
        Ok((settings_of(m1)? == "2 500ms 300 1000").then_some(()))
    })
    .with_context(|| format!("m1 sees {:?}", settings_of(m1)))?;

    // Applied: the history limit trims a slot's tasks to 2 after three forced updates, and
    // the worker (heartbeating every 500 ms now) stays ready.
    let img = fx.reference("busybox:latest");
    m0.docker_ok(&[
        "service",
        "create",
        "--name",
        "hist",
        "--replicas",
        "1",
        "--constraint",
        "node.role==worker",
        &img,
        "sleep",
        "1000000",
    ])?;
    for _ in 0..3 {
        m0.docker_ok(&["service", "update", "--force", "hist"])?;
    }
    retry(CONVERGE, || {
        let ps = m0.docker_ok(&["service", "ps", "hist", "--format", "{{.ID}}"])?;
        Ok((ps.lines().count() == 2).then_some(()))
    })
    .with_context(|| {
        format!(
            "service ps hist: {:?}",
            m0.docker_ok(&["service", "ps", "hist"])
        )
    })?;
    let ready = m0.docker_ok(&["node", "ls", "--format", "{{.Status}}"])?;
    ensure!(
        ready.lines().all(|l| l == "Ready"),
        "nodes after the heartbeat change: {ready}"
    );
    m0.docker_ok(&["service", "rm", "hist"])?;

    // Refused by name, nothing changed.
    for (flags, field) in [
        (vec!["--cert-expiry", "1h"], "CAConfig.NodeCertExpiry"),
        (vec!["--max-snapshots", "3"], "Raft.KeepOldSnapshots"),
        (vec!["--autolock"], "EncryptionConfig.AutoLockManagers"),
        (
            vec!["--external-ca", "protocol=cfssl,url=https://ca.example"],
            "CAConfig.ExternalCAs",
        ),
    ] {
        let mut args = vec!["swarm", "update"];
        args.extend(flags.iter().copied());
        let o = m1.docker(&args)?;
        let err = String::from_utf8_lossy(&o.stderr);
        ensure!(
            !o.status.success() && err.contains(field),
            "{flags:?}: {err}"
        );
    }
    ensure!(
        settings_of(m0)? == "2 500ms 300 1000",
        "{}",
        settings_of(m0)?
    );

    // docker-py against a manager: a partial spec keeps what it leaves out.
    let script = r#"
import docker, sys
c = docker.DockerClient(base_url=sys.argv[1], version="auto")
c.swarm.reload()
c.swarm.update(snapshot_interval=400, log_entries_for_slow_followers=200,
               task_history_retention_limit=3)
c.swarm.reload()
s = c.swarm.attrs["Spec"]
print(s["Raft"]["SnapshotInterval"], s["Raft"]["LogEntriesForSlowFollowers"],
      s["Orchestration"]["TaskHistoryRetentionLimit"], s["Dispatcher"]["HeartbeatPeriod"])
try:
    c.swarm.update(keep_old_snapshots=2)
    raise SystemExit("keep_old_snapshots accepted")
except docker.errors.APIError as err:
    assert err.status_code == 400 and "Raft.KeepOldSnapshots" in str(err), str(err)
"#;
    let out = python(script, &[&m0.host()])?;
    ensure!(out == "400 200 3 500000000", "docker-py update: {out}");
    retry(CONVERGE, || {
        Ok((settings_of(m1)? == "3 500ms 400 200").then_some(()))
    })
    .with_context(|| format!("m1 sees {:?}", settings_of(m1)))?;

    // The worker: dockerd's 503 for the cluster object and its join tokens.
    for args in [
        vec!["swarm", "join-token", "worker"],
        vec!["swarm", "update", "--task-history-limit", "4"],
    ] {
        let o = w.docker(&args)?;
        let err = String::from_utf8_lossy(&o.stderr);
        ensure!(
            !o.status.success() && err.contains(NOT_A_MANAGER),
            "{args:?} on the worker: {err}"
        );
    }
    let script = r#"
import docker, sys
c = docker.DockerClient(base_url=sys.argv[1], version="auto")
for call in (lambda: c.swarm.reload(), lambda: c.api.update_swarm(version=1, swarm_spec={})):
    try:
        call()
        raise SystemExit("a worker answered")
    except docker.errors.APIError as err:
        assert err.status_code == 503, err.status_code
        print(err.explanation)
"#;
    let out = python(script, &[&w.host()])?;
    ensure!(
        out.lines().count() == 2 && out.lines().all(|l| l == NOT_A_MANAGER),
        "docker-py on the worker: {out}"
    );
    Ok(())
}

/// `curl` on a daemon socket: (HTTP status, the `message` of the JSON body or the body).
fn curl(socket: &std::path::Path, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .arg("--unix-socket")
        .arg(socket)
        .arg(format!("http://d/v1.41{path}"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    Ok((code.trim().parse()?, message))
}

/// What a worker answers to the cluster requests a client may send it.
fn worker_answers(
    socket: &std::path::Path,
    docker: impl Fn(&[&str]) -> Result<std::process::Output>,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (method, path, body) in [
        ("GET", "/swarm", ""),
        ("POST", "/swarm/update?version=1", "{}"),
        (
            "POST",
            "/swarm/update?version=1&rotateWorkerToken=true",
            "{}",
        ),
    ] {
        let (code, message) = curl(socket, method, path, body)?;
        out.push(format!("{method} {path}: {code} {message}"));
    }
    for args in [
        ["swarm", "join-token", "worker"],
        ["swarm", "join-token", "manager"],
    ] {
        let o = docker(&args)?;
        out.push(format!(
            "docker {}: {} {}",
            args.join(" "),
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(out)
}

#[test]
fn a_worker_answers_cluster_requests_as_dockerd_does() -> Result<()> {
    // dockerd 20.10: a manager and a worker on a LAN of their own.
    let mut lan = Lan::new()?;
    let (manager, worker) = (Dockerd::start(&[])?, Dockerd::start(&[])?);
    let addr = lan.attach(manager.netns_name())?;
    lan.attach(worker.netns_name())?;
    let ok = |d: &Dockerd, args: &[&str]| -> Result<String> {
        let o = d.docker(args)?;
        ensure!(
            o.status.success(),
            "dockerd: docker {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    ok(&manager, &["swarm", "init", "--advertise-addr", &addr])?;
    let token = ok(&manager, &["swarm", "join-token", "-q", "worker"])?;
    ok(
        &worker,
        &["swarm", "join", "--token", &token, &format!("{addr}:2377")],
    )?;
    let reference = worker_answers(&worker.socket(), |a| worker.docker(a))?;

    let c = Cluster::new(2)?;
    c.form(1)?;
    let w = c.h(1);
    let ours = worker_answers(&w.socket(), |a| w.docker(a))?;
    ensure!(
        ours == reference,
        "berthd's worker answers\n{}\ndockerd's\n{}",
        ours.join("\n"),
        reference.join("\n")
    );
    ensure!(
        reference[0].contains(NOT_A_MANAGER) && reference[0].contains(" 503 "),
        "{reference:?}"
    );
    Ok(())
}
