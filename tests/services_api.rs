//! The services API on a one-node cluster (`docker swarm init` on one berthd), driven with
//! the real docker CLI, docker-py and curl: `docker service create/ls/inspect (--pretty)/
//! update/rm`, `docker service ps`, `docker node ps`, a stale update version, every bad
//! input of issue #14 (no such image, `replicas=-1`, unknown and malformed constraints, a
//! duplicate name, ingress ports) answered with a Docker-shaped 4xx that writes nothing,
//! `GET /distribution/{name}/json`, and the Swarm counts of `docker info`.

use std::process::{Command, Output};

use anyhow::{ensure, Result};
use berth_testkit::daemon::{Berthd, DockerEnv};
use serde_json::{json, Value};

/// A one-node cluster of its own.
fn swarm() -> Result<DockerEnv> {
    let e = DockerEnv::new()?;
    let out = e.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
    ensure!(
        out.contains("Swarm initialized"),
        "swarm init printed: {out}"
    );
    Ok(e)
}

/// `curl` against the daemon's socket with a JSON body: (HTTP status, body as JSON).
fn curl(d: &Berthd, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "--unix-socket",
    ])
    .arg(d.socket());
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(b.to_string());
    }
    let out = c.arg(format!("http://berth{path}")).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((
        code.trim().parse()?,
        serde_json::from_str(body).unwrap_or(Value::Null),
    ))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Names of every service, as `docker service ls` shows them.
fn service_names(e: &DockerEnv) -> Result<Vec<String>> {
    Ok(e.ok(&["service", "ls", "--format", "{{.Name}}"])?
        .lines()
        .map(str::to_string)
        .collect())
}

fn inspect(e: &DockerEnv, name: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(&e.ok(&["service", "inspect", name])?)?;
    Ok(v[0].clone())
}

#[test]
fn service_create_ls_inspect_update_rm() -> Result<()> {
    let e = swarm()?;
    let img = e.img("busybox:latest");
    let id = e.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "2",
        "--label",
        "tier=front",
        "--env",
        "A=1",
        &img,
        "sleep",
        "1000",
    ])?;
    let id = id.trim();
    ensure!(
        id.len() == 25
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "service id {id:?}"
    );

    // ls: name, mode, replicas and the image without its digest, as the CLI shows them.
    let ls = e.ok(&["service", "ls"])?;
    let line = ls.lines().find(|l| l.contains("web")).unwrap_or("");
    ensure!(
        line.contains(&id[..12]) && line.contains("replicated") && line.contains("/2"),
        "service ls: {ls}"
    );
    ensure!(line.contains(&img), "service ls shows the image: {ls}");
    let ls = e.ok(&[
        "service",
        "ls",
        "--filter",
        "label=tier=front",
        "--filter",
        "mode=replicated",
        "-q",
    ])?;
    ensure!(ls.trim() == &id[..12], "filtered ls: {ls}");
    let ls = e.ok(&["service", "ls", "--filter", "mode=global", "-q"])?;
    ensure!(ls.trim().is_empty(), "mode=global matched: {ls}");

    // inspect: the spec as sent with the image pinned to the registry's digest.
    let v = inspect(&e, "web")?;
    ensure!(v["ID"] == id, "{v}");
    let digest = &e.fx.images["busybox:latest"].manifest_digest;
    ensure!(
        v["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == json!(format!("{img}@{digest}")),
        "image not pinned to the registry's digest {digest}: {v}"
    );
    ensure!(v["Spec"]["Labels"]["tier"] == "front", "{v}");
    ensure!(v["Spec"]["Mode"]["Replicated"]["Replicas"] == 2, "{v}");
    ensure!(
        v["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == json!(["A=1"]),
        "{v}"
    );
    ensure!(v["Version"]["Index"].as_u64().unwrap_or(0) > 0, "{v}");
    ensure!(v.get("PreviousSpec").is_none(), "{v}");
    // By id prefix too.
    ensure!(inspect(&e, &id[..6])?["ID"] == id);
    let pretty = e.ok(&["service", "inspect", "--pretty", "web"])?;
    ensure!(
        pretty.contains("Name:\t\tweb") && pretty.contains("Replicas:\t2"),
        "inspect --pretty: {pretty}"
    );
    ensure!(
        pretty.contains("Args:\t\tsleep 1000"),
        "inspect --pretty: {pretty}"
    );

    // `service ps` and `node ps` answer (tasks appear once the leader orchestrates).
    e.ok(&["service", "ps", "web"])?;
    e.ok(&["node", "ps"])?;
    let info = e.ok(&[
        "info",
        "--format",
        "{{.Swarm.Nodes}} {{.Swarm.Managers}} {{.Swarm.ControlAvailable}}",
    ])?;
    ensure!(info.trim() == "1 1 true", "docker info swarm: {info}");

    // update: a new spec at the current version; the old one becomes PreviousSpec.
    let old_version = v["Version"]["Index"].as_u64().unwrap_or(0);
    e.ok(&["service", "update", "--detach", "--replicas", "3", "web"])?;
    let v = inspect(&e, "web")?;
    ensure!(v["Spec"]["Mode"]["Replicated"]["Replicas"] == 3, "{v}");
    ensure!(
        v["PreviousSpec"]["Mode"]["Replicated"]["Replicas"] == 2,
        "{v}"
    );
    let new_version = v["Version"]["Index"].as_u64().unwrap_or(0);
    ensure!(
        new_version > old_version,
        "version {old_version} -> {new_version}"
    );
    ensure!(
        v["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == json!(format!("{img}@{digest}")),
        "the pinned image stays: {v}"
    );

    // A stale version: 409 with swarmkit's wording, nothing changes.
    let mut spec = v["Spec"].clone();
    spec["Mode"]["Replicated"]["Replicas"] = json!(7);
    let (code, body) = curl(
        &e.d,
        "POST",
        &format!("/v1.44/services/web/update?version={old_version}"),
        Some(&spec),
    )?;
    ensure!(code == 409, "stale update answered {code}: {body}");
    ensure!(
        body["message"] == "rpc error: code = Unknown desc = update out of sequence",
        "{body}"
    );
    let (code, body) = curl(&e.d, "POST", "/v1.44/services/web/update", Some(&spec))?;
    ensure!(
        code == 400
            && body["message"]
                .as_str()
                .unwrap_or("")
                .contains("invalid service version"),
        "{code} {body}"
    );
    let v = inspect(&e, "web")?;
    ensure!(
        v["Spec"]["Mode"]["Replicated"]["Replicas"] == 3,
        "stale update written: {v}"
    );
    ensure!(v["Version"]["Index"].as_u64() == Some(new_version), "{v}");

    // rollback=previous restores the previous spec; UpdateStatus says so.
    e.ok(&["service", "rollback", "--detach", "web"])?;
    let v = inspect(&e, "web")?;
    ensure!(
        v["Spec"]["Mode"]["Replicated"]["Replicas"] == 2,
        "rollback: {v}"
    );
    ensure!(
        v["UpdateStatus"]["State"]
            .as_str()
            .is_some_and(|s| s.starts_with("rollback_"))
            && v["UpdateStatus"]["StartedAt"].is_string(),
        "{v}"
    );

    // An update of what tasks run is stored (and rolled out: tests/services_agent.rs,
    // tests/services_update.rs), with the failure settings as sent.
    let v2 = e.img("busybox:v2s2");
    e.ok(&["service", "update", "--detach", "--image", &v2, "web"])?;
    let after = inspect(&e, "web")?;
    ensure!(
        after["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
            .as_str()
            .is_some_and(|i| i.contains("busybox:v2s2")),
        "image update: {after}"
    );
    e.ok(&[
        "service",
        "update",
        "--detach",
        "--update-failure-action",
        "rollback",
        "--update-max-failure-ratio",
        "0.5",
        "--rollback-parallelism",
        "2",
        "web",
    ])?;
    let after = inspect(&e, "web")?;
    ensure!(
        after["Spec"]["UpdateConfig"]["FailureAction"] == "rollback"
            && after["Spec"]["UpdateConfig"]["MaxFailureRatio"] == 0.5
            && after["Spec"]["RollbackConfig"]["Parallelism"] == 2,
        "{after}"
    );

    // A service without a name gets one, as dockerd names it.
    let unnamed = e.ok(&["service", "create", "--detach", &img])?;
    let name = e.ok(&[
        "service",
        "inspect",
        unnamed.trim(),
        "--format",
        "{{.Spec.Name}}",
    ])?;
    let name = name.trim();
    ensure!(
        regex::Regex::new("^[a-z]+_[a-z]+$")?.is_match(name),
        "generated name {name:?}"
    );
    e.ok(&["service", "rm", name])?;

    // rm by name; then it is gone everywhere.
    e.ok(&["service", "rm", "web"])?;
    ensure!(service_names(&e)?.is_empty(), "service ls after rm");
    let o = e.d.docker(&["service", "inspect", "web"])?;
    ensure!(!o.status.success(), "inspect after rm succeeded");
    let (code, body) = curl(&e.d, "GET", "/services/web", None)?;
    ensure!(
        code == 404 && body["message"] == "service web not found",
        "{code} {body}"
    );
    let (code, body) = curl(&e.d, "DELETE", "/v1.44/services/web", None)?;
    ensure!(
        code == 404 && body["message"] == "service web not found",
        "{code} {body}"
    );
    Ok(())
}

#[test]
fn service_bad_input_gets_a_4xx_and_writes_nothing() -> Result<()> {
    let e = swarm()?;
    let img = e.img("busybox:latest");
    e.ok(&[
        "service", "create", "--detach", "--name", "web", &img, "sleep", "1000",
    ])?;
    let before = inspect(&e, "web")?;

    // Each refused create, by the CLI, with the daemon's words on stderr.
    let nosuch = e.img("nosuchimage:latest");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--name", "nope", &nosuch], "No such image"),
        (
            vec!["--name", "web", &img],
            "name conflicts with an existing object",
        ),
        (
            vec!["--name", "WEB", &img],
            "name conflicts with an existing object",
        ),
        (
            vec!["--name", "c1", "--constraint", "node.role=worker", &img],
            "constraint expected one operator from ==, !=",
        ),
        (
            vec!["--name", "c2", "--constraint", "node.nosuchkey==x", &img],
            "node.nosuchkey",
        ),
        (
            vec!["--name", "bad_name!", &img],
            "name must be valid as a DNS name component",
        ),
        (
            vec![
                "--name",
                "p2",
                "--endpoint-mode",
                "dnsrr",
                "-p",
                "8080:80",
                &img,
            ],
            "EndpointSpec: port published with ingress mode can't be used with dnsrr mode",
        ),
        (
            vec!["--name", "m1", "--limit-memory", "1k", &img],
            "Minimum memory limit allowed is 6MB",
        ),
    ];
    for (args, want) in &cases {
        let mut full = vec!["service", "create", "--detach"];
        full.extend(args.iter().copied());
        let o = e.d.docker(&full)?;
        ensure!(!o.status.success(), "{args:?} succeeded");
        ensure!(
            stderr(&o).contains(want),
            "{args:?}: want {want:?}, got {}",
            stderr(&o)
        );
    }

    // Status codes, through the API directly.
    let spec = |name: &str, image: &str| json!({"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": image}}});
    let (code, body) = curl(
        &e.d,
        "POST",
        "/v1.44/services/create",
        Some(&spec("nope", &nosuch)),
    )?;
    ensure!(code == 400, "no such image: {code} {body}");
    let (code, body) = curl(&e.d, "POST", "/services/create", Some(&spec("web", &img)))?;
    ensure!(code == 409, "duplicate: {code} {body}");
    ensure!(
        body["message"]
            == "rpc error: code = AlreadyExists desc = name conflicts with an existing object: service web already exists",
        "{body}"
    );
    let mut neg = spec("neg", &img);
    neg["Mode"] = json!({"Replicated": {"Replicas": -1}});
    let (code, body) = curl(&e.d, "POST", "/v1.44/services/create", Some(&neg))?;
    ensure!(code == 400, "replicas -1: {code} {body}");
    let mut c = spec("c3", &img);
    c["TaskTemplate"]["Placement"] = json!({"Constraints": ["node.labels.zone"]});
    let (code, body) = curl(&e.d, "POST", "/v1.44/services/create", Some(&c))?;
    ensure!(code == 400, "malformed constraint: {code} {body}");
    // A secret reference without a target (swarmkit's validation and words).
    let mut s = spec("s1", &img);
    s["TaskTemplate"]["ContainerSpec"]["Secrets"] = json!([{"SecretName": "x", "SecretID": "y"}]);
    let (code, body) = curl(&e.d, "POST", "/v1.44/services/create", Some(&s))?;
    ensure!(
        code == 400
            && body["message"]
                .as_str()
                .unwrap_or("")
                .contains("malformed secret reference, no target provided"),
        "secrets: {code} {body}"
    );

    // docker-py: replicas=-1 is refused with dockerd's decode error.
    let script = r#"
import docker, sys
c = docker.DockerClient(base_url=sys.argv[1], version="auto")
try:
    c.services.create(sys.argv[2], name="neg", mode=docker.types.ServiceMode("replicated", replicas=-1))
    raise SystemExit("created")
except docker.errors.APIError as err:
    assert err.status_code == 400, err.status_code
    assert "cannot unmarshal number -1" in str(err), str(err)
print("ok")
"#;
    let o = Command::new("python3")
        .args(["-c", script, &e.d.host(), &img])
        .output()?;
    ensure!(
        String::from_utf8_lossy(&o.stdout).trim() == "ok",
        "docker-py: {} {}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );

    // Nothing was written: one service, unchanged.
    ensure!(
        service_names(&e)? == vec!["web".to_string()],
        "services: {:?}",
        service_names(&e)?
    );
    let after = inspect(&e, "web")?;
    ensure!(
        after["Version"] == before["Version"],
        "web changed: {before} -> {after}"
    );

    // Filters dockerd refuses.
    let (code, body) = curl(
        &e.d,
        "GET",
        "/services?filters=%7B%22bogus%22%3A%7B%22x%22%3Atrue%7D%7D",
        None,
    )?;
    ensure!(
        code == 400 && body["message"] == "Invalid filter 'bogus'",
        "{code} {body}"
    );
    let (code, body) = curl(
        &e.d,
        "GET",
        "/tasks?filters=%7B%22desired-state%22%3A%7B%22x%22%3Atrue%7D%7D",
        None,
    )?;
    ensure!(
        code == 400 && body["message"] == "Invalid desired-state filter: 'x'",
        "{code} {body}"
    );
    let (code, body) = curl(
        &e.d,
        "GET",
        "/tasks?filters=%7B%22service%22%3A%7B%22nosuch%22%3Atrue%7D%7D",
        None,
    )?;
    ensure!(
        code == 404 && body["message"] == "service nosuch not found",
        "{code} {body}"
    );
    let (code, body) = curl(&e.d, "GET", "/v1.44/tasks/nosuchtask", None)?;
    ensure!(
        code == 404 && body["message"] == "task nosuchtask not found",
        "{code} {body}"
    );
    let o = e.d.docker(&["service", "ps", "nosuch"])?;
    ensure!(
        !o.status.success() && stderr(&o).contains("no such service: nosuch"),
        "{}",
        stderr(&o)
    );
    Ok(())
}

#[test]
fn distribution_inspect_answers_from_the_registry() -> Result<()> {
    let e = DockerEnv::new()?;
    let img = e.img("busybox:latest");
    let (code, body) = curl(
        &e.d,
        "GET",
        &format!("/v1.44/distribution/{img}/json"),
        None,
    )?;
    ensure!(code == 200, "{code} {body}");
    let want = &e.fx.images["busybox:latest"];
    ensure!(
        body["Descriptor"]["digest"] == json!(want.manifest_digest.to_string()),
        "{body}"
    );
    ensure!(
        body["Descriptor"]["size"].as_u64().unwrap_or(0) > 0,
        "{body}"
    );
    ensure!(
        body["Descriptor"]["mediaType"]
            .as_str()
            .unwrap_or("")
            .contains("manifest"),
        "{body}"
    );
    let platforms = body["Platforms"].as_array().cloned().unwrap_or_default();
    ensure!(
        platforms
            .iter()
            .any(|p| p["os"] == "linux" && p["architecture"] == "amd64"),
        "{body}"
    );
    // A multi-platform index: its digest and every platform it offers.
    let multi = e.img("multi:latest");
    let (code, body) = curl(&e.d, "GET", &format!("/distribution/{multi}/json"), None)?;
    ensure!(code == 200, "{code} {body}");
    ensure!(
        body["Descriptor"]["digest"]
            == json!(e.fx.images["multi:latest"].manifest_digest.to_string()),
        "{body}"
    );
    ensure!(
        body["Descriptor"]["mediaType"] == "application/vnd.oci.image.index.v1+json",
        "{body}"
    );
    ensure!(
        body["Platforms"]
            == json!([{"architecture": "amd64", "os": "linux"},
                      {"architecture": "arm64", "os": "linux", "variant": "v8"}]),
        "{body}"
    );
    let (code, body) = curl(
        &e.d,
        "GET",
        &format!("/distribution/{}/json", e.img("nosuchimage:latest")),
        None,
    )?;
    ensure!(code == 404, "missing image: {code} {body}");
    ensure!(
        body["message"].as_str().unwrap_or("").contains("not found"),
        "{body}"
    );
    // Services need a swarm; dockerd's words otherwise.
    let (code, body) = curl(&e.d, "GET", "/services", None)?;
    ensure!(
        code == 503
            && body["message"]
                .as_str()
                .unwrap_or("")
                .contains("docker swarm init"),
        "{code} {body}"
    );
    Ok(())
}

/// With the leader loop and the agent: `docker service create` (not detached) waits for its
/// tasks through the `_up-to-date` task filter, and `service ls/ps`, `node ps`, `docker ps`
/// and task inspect agree; a scale converges; `service rm` removes the containers.
#[test]
fn service_tasks_run_and_every_view_agrees() -> Result<()> {
    let e = swarm()?;
    let img = e.img("busybox:latest");
    let cli = berth_testkit::daemon::docker_cli();
    let converge = |args: &[&str]| -> Result<String> {
        let o = Command::new("timeout")
            .arg("120")
            .arg(&cli)
            .args(args)
            .env("DOCKER_HOST", e.d.host())
            .output()?;
        ensure!(o.status.success(), "{args:?}: {}", stderr(&o));
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let out = converge(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        &img,
        "sleep",
        "1000",
    ])?;
    ensure!(out.contains("converged"), "service create progress: {out}");
    let ls = e.ok(&[
        "service",
        "ls",
        "--format",
        "{{.Name}} {{.Mode}} {{.Replicas}}",
    ])?;
    ensure!(ls.trim() == "web replicated 2/2", "service ls: {ls}");

    let ps = e.ok(&[
        "service",
        "ps",
        "web",
        "--format",
        "{{.Name}} {{.DesiredState}} {{.CurrentState}} {{.Node}}",
    ])?;
    let lines: Vec<&str> = ps.lines().collect();
    ensure!(lines.len() == 2, "service ps: {ps}");
    for (i, l) in lines.iter().enumerate() {
        ensure!(
            l.starts_with(&format!("web.{} Running Running", i + 1)),
            "service ps: {ps}"
        );
    }
    let node_ps = e.ok(&["node", "ps", "--format", "{{.Name}} {{.CurrentState}}"])?;
    ensure!(
        node_ps.lines().filter(|l| l.contains("Running")).count() == 2,
        "node ps: {node_ps}"
    );

    let ids = e.ok(&["service", "ps", "web", "-q", "--no-trunc"])?;
    let names = e.ok(&["ps", "--format", "{{.Names}}"])?;
    for id in ids.split_whitespace() {
        ensure!(
            names.contains(&format!(".{id}")),
            "docker ps {names} lacks task {id}"
        );
        let state = e.ok(&[
            "inspect",
            "--type",
            "task",
            "--format",
            "{{.Status.State}} {{.DesiredState}} {{.ServiceID}}",
            id,
        ])?;
        ensure!(
            state.trim().starts_with("running running "),
            "task inspect: {state}"
        );
        let (code, t) = curl(&e.d, "GET", &format!("/v1.44/tasks/{id}"), None)?;
        ensure!(code == 200, "{t}");
        let cid = t["Status"]["ContainerStatus"]["ContainerID"]
            .as_str()
            .unwrap_or("");
        let label = e.inspect(cid, "{{index .Config.Labels \"com.docker.swarm.task.id\"}}")?;
        ensure!(
            label == id,
            "container {cid} of task {id} has task label {label}"
        );
    }

    let out = converge(&["service", "scale", "web=3"])?;
    ensure!(out.contains("converged"), "scale progress: {out}");
    let ls = e.ok(&["service", "ls", "--format", "{{.Replicas}}"])?;
    ensure!(ls.trim() == "3/3", "service ls after scale: {ls}");
    let running = e.ok(&[
        "service",
        "ps",
        "web",
        "--filter",
        "desired-state=running",
        "-q",
    ])?;
    ensure!(running.lines().count() == 3, "running tasks: {running}");

    e.ok(&["service", "rm", "web"])?;
    berth_testkit::daemon::retry(std::time::Duration::from_secs(60), || {
        Ok(e.ok(&["ps", "-aq"])?.trim().is_empty().then_some(()))
    })?;
    Ok(())
}

/// Digest pinning when the registry cannot answer, as dockerd: a local image is used, an
/// unreachable registry leaves the reference unpinned with dockerd's warning (printed once
/// by the CLI, which asked `/distribution` itself; in the response only for API < 1.30).
#[test]
fn service_image_pinning_falls_back_like_dockerd() -> Result<()> {
    let e = swarm()?;
    let img = e.img("busybox:latest");
    e.ok(&["pull", "-q", &img])?;
    e.ok(&["tag", &img, "127.0.0.1:1/local:v1"])?;
    let o = e.d.docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        "loc",
        "127.0.0.1:1/local:v1",
        "sleep",
        "100",
    ])?;
    ensure!(o.status.success(), "{}", stderr(&o));
    let warned = stderr(&o)
        .matches("could not be accessed on a registry")
        .count();
    ensure!(
        warned == 1,
        "warning printed {warned} times: {}",
        stderr(&o)
    );
    let image = e.ok(&[
        "service",
        "inspect",
        "loc",
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
    ])?;
    ensure!(image.trim() == "127.0.0.1:1/local:v1", "image {image}");

    let spec =
        json!({"Name": "old", "TaskTemplate": {"ContainerSpec": {"Image": "127.0.0.1:1/none:v1"}}});
    let (code, body) = curl(&e.d, "POST", "/v1.29/services/create", Some(&spec))?;
    ensure!(code == 201, "{code} {body}");
    ensure!(
        body["Warnings"][0]
            .as_str()
            .unwrap_or("")
            .starts_with("image 127.0.0.1:1/none:v1 could not be accessed on a registry"),
        "{body}"
    );
    let spec =
        json!({"Name": "new", "TaskTemplate": {"ContainerSpec": {"Image": "127.0.0.1:1/none:v1"}}});
    let (code, body) = curl(&e.d, "POST", "/v1.44/services/create", Some(&spec))?;
    ensure!(
        code == 201 && body.get("Warnings").is_none(),
        "{code} {body}"
    );
    Ok(())
}

/// Host-mode published ports: the task's container binds them on its node (`docker ps`
/// shows the mapping) and `service ps` shows them in its PORTS column, as with dockerd.
#[test]
fn host_mode_ports_are_published_by_the_task_container() -> Result<()> {
    let e = swarm()?;
    let img = e.img("busybox:latest");
    e.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "hp",
        "--mode",
        "global",
        "-p",
        "published=18080,target=80,mode=host",
        &img,
        "sleep",
        "1000",
    ])?;
    berth_testkit::daemon::retry(std::time::Duration::from_secs(60), || {
        let ps = e.ok(&["service", "ps", "hp", "--format", "{{.CurrentState}}"])?;
        Ok(ps.starts_with("Running").then_some(()))
    })?;
    let ps = e.ok(&["service", "ps", "hp", "--format", "{{.Name}} {{.Ports}}"])?;
    ensure!(ps.contains("*:18080->80/tcp"), "service ps: {ps}");
    let ports = e.ok(&["ps", "--format", "{{.Ports}}"])?;
    ensure!(ports.contains("18080->80/tcp"), "docker ps: {ports}");
    let v = inspect(&e, "hp")?;
    ensure!(v["Endpoint"]["Ports"][0]["PublishedPort"] == 18080, "{v}");
    e.ok(&["service", "rm", "hp"])?;
    berth_testkit::daemon::retry(std::time::Duration::from_secs(60), || {
        Ok(e.ok(&["ps", "-aq"])?.trim().is_empty().then_some(()))
    })?;
    Ok(())
}

/// `swarm init` and `swarm update` options berth cannot honour yet (or bad ones) are refused by name
/// (they were dropped once: `--task-history-limit 10` answered "Swarm initialized" and kept
/// 5); the settings berth applies are taken at init (tests/stacks.rs covers `swarm update`);
/// `--availability` is honoured at init as at join.
#[test]
fn swarm_options_are_honoured_or_refused_by_name() -> Result<()> {
    let e = DockerEnv::new()?;
    for (flags, field) in [
        (vec!["--autolock"], "AutoLockManagers"),
        (vec!["--cert-expiry", "1h"], "CAConfig.NodeCertExpiry"),
        (vec!["--data-path-port", "7789"], "DataPathPort"),
        (
            vec!["--external-ca", "protocol=cfssl,url=https://ca.example"],
            "CAConfig.ExternalCAs",
        ),
        // Honoured since overlay networks (tests/overlay.rs); a bad one is refused.
        (
            vec![
                "--default-addr-pool",
                "10.20.0.0/16",
                "--default-addr-pool-mask-length",
                "31",
            ],
            "subnet size 31",
        ),
    ] {
        let mut args = vec!["swarm", "init", "--advertise-addr", "127.0.0.1"];
        args.extend(flags.iter().copied());
        let o = e.d.docker(&args)?;
        ensure!(!o.status.success(), "{flags:?} accepted");
        ensure!(stderr(&o).contains(field), "{flags:?}: {}", stderr(&o));
        let state = e.ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
        ensure!(
            state.trim() == "inactive",
            "{flags:?} left the node {state}"
        );
    }
    e.ok(&[
        "swarm",
        "init",
        "--advertise-addr",
        "127.0.0.1",
        "--availability",
        "drain",
        "--task-history-limit",
        "10",
        "--dispatcher-heartbeat",
        "1s",
    ])?;
    let spec = e.ok(&[
        "info",
        "--format",
        "{{.Swarm.Cluster.Spec.Orchestration.TaskHistoryRetentionLimit}} {{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}",
    ])?;
    ensure!(spec.trim() == "10 1s", "settings after init: {spec}");
    let availability = e.ok(&[
        "node",
        "inspect",
        "self",
        "--format",
        "{{.Spec.Availability}}",
    ])?;
    ensure!(
        availability.trim() == "drain",
        "availability {availability}"
    );
    let o = e.d.docker(&["swarm", "update", "--cert-expiry", "1h"])?;
    ensure!(
        !o.status.success(),
        "swarm update --cert-expiry 1h accepted"
    );
    ensure!(
        stderr(&o).contains("CAConfig.NodeCertExpiry"),
        "{}",
        stderr(&o)
    );
    // What `swarm update` sends back unchanged is accepted.
    e.ok(&["swarm", "update", "--cert-expiry", "2160h"])?;
    // A node name cannot be set (nodes are named by their hostname): refused, not dropped.
    let node = e.ok(&[
        "node",
        "inspect",
        "self",
        "--format",
        "{{.ID}} {{.Version.Index}}",
    ])?;
    let (id, version) = node.trim().split_once(' ').unwrap_or_default();
    let (status, body) = curl(
        &e.d,
        "POST",
        &format!("/nodes/{id}/update?version={version}"),
        Some(&json!({"Name": "renamed", "Role": "manager", "Availability": "drain"})),
    )?;
    ensure!(
        status == 400 && body["message"].as_str().unwrap_or("").contains("Spec.Name"),
        "{status} {body}"
    );
    Ok(())
}
