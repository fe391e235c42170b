//! Secrets and configs on a berth cluster of 3 hosts ([`Cluster`]: a manager and two
//! workers, each berthd in its own network namespace and data root), with the real docker
//! CLI and docker-py:
//! - `docker secret create NAME -` from stdin, a config from a file; `secret ls` filters;
//!   `secret inspect` never shows the value; a label update goes through;
//! - a service pinned to the workers gets the secret at `/run/secrets/NAME` and the config
//!   at its target with its mode (read with `docker exec`, so the value never reaches a
//!   container log);
//! - `docker secret rm` of a secret in use is refused with Swarm's text; once the service
//!   is gone it is removed;
//! - docker-py against a worker creates a secret, a config and a service that uses them
//!   (`SecretReference`, `ConfigReference`), and its task reads them;
//! - no file under any host's root (data root with the Raft log and snapshots, exec root,
//!   the daemon's log) holds the secret's bytes or their base64, while the tasks run and
//!   after; the tasks' tmpfs mounts (memory) are other filesystems and not scanned.
//!
//! Cleanup: [`Cluster::with_task_cleanup`] removes every service and container, then each
//! berthd and its netns, then the LAN.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use berth_testkit::cluster::Cluster;
use berth_testkit::daemon::retry;

const CONVERGE: Duration = Duration::from_secs(60);

/// A string found nowhere else: the test's secret.
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("berth-{what}-{:x}-{nanos:x}", std::process::id())
}

/// The stderr of a docker command that must fail.
fn fails(c: &Cluster, i: usize, args: &[&str]) -> Result<String> {
    let out = c.h(i).docker(args)?;
    ensure!(
        !out.status.success(),
        "docker {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `docker ARGS` on host `i` until it succeeds (a node's replica may lag a write made
/// through another node by a heartbeat); its stdout.
fn eventually_ok(c: &Cluster, i: usize, args: &[&str]) -> Result<String> {
    retry(Duration::from_secs(10), || {
        let out = c.h(i).docker(args)?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    })
    .with_context(|| format!("docker {args:?} on host {i}"))
}

/// `docker secret create NAME -` on host `i` with `value` on stdin; returns the id.
fn create_secret_stdin(
    c: &Cluster,
    i: usize,
    name: &str,
    value: &str,
    labels: &[&str],
) -> Result<String> {
    use std::io::Write as _;
    let mut args = vec!["secret", "create"];
    for l in labels {
        args.extend(["--label", l]);
    }
    args.extend([name, "-"]);
    let mut child = c
        .h(i)
        .docker_cmd(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(value.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "secret create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The running task container of `service`: (host, container id).
fn task_container(c: &Cluster, service: &str) -> Result<(usize, String)> {
    retry(CONVERGE, || {
        for i in 0..c.hosts.len() {
            let out = c.h(i).docker_ok(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={service}"),
            ])?;
            if let Some(id) = out.split_whitespace().next() {
                return Ok(Some((i, id.to_string())));
            }
        }
        Ok(None)
    })
    .with_context(|| {
        let ps = c
            .h(0)
            .docker_ok(&["service", "ps", "--no-trunc", service])
            .unwrap_or_default();
        format!("no running task of {service}:\n{ps}\n{}", c.h(0).log())
    })
}

/// Files under `root` on `root`'s own filesystem (mounts below it, such as the tasks'
/// tmpfs and the containers' overlay mounts, are other filesystems: their disk-backed parts
/// are reached through their own directories) whose bytes contain any of `needles`.
/// Returns (matches, files scanned).
fn scan(root: &Path, needles: &[Vec<u8>]) -> Result<(Vec<String>, usize)> {
    let dev = std::fs::symlink_metadata(root)?.dev();
    let mut found = Vec::new();
    let mut scanned = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if md.dev() != dev {
                continue;
            }
            if md.is_dir() {
                stack.push(path);
            } else if md.is_file() {
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                scanned += 1;
                if needles
                    .iter()
                    .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
                {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    Ok((found, scanned))
}

/// The last log indexes of the Raft snapshots a berthd log says it wrote (built here or
/// installed from the leader): its `raft snapshot ... index=N` lines.
fn snapshot_indexes(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("raft snapshot"))
        .filter_map(|l| {
            let digits: String = l
                .split_once("index=")?
                .1
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// Scans every host's root for `secret` (its bytes and its base64); fails on any match.
fn scan_hosts(c: &Cluster, secret: &str, when: &str) -> Result<()> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret.as_bytes());
    let needles = vec![secret.as_bytes().to_vec(), b64.as_bytes().to_vec()];
    for i in 0..c.hosts.len() {
        let root = c.h(i).root();
        let (found, scanned) = scan(root, &needles)?;
        ensure!(
            found.is_empty(),
            "{when}: host {i}: the secret is in {found:?}"
        );
        let raft = c.h(i).data_root().join("cluster").join("raft.redb");
        ensure!(
            raft.exists() || std::fs::read_dir(c.h(i).data_root())?.count() > 0,
            "host {i}: nothing to scan"
        );
        ensure!(
            scanned > 10,
            "{when}: host {i}: only {scanned} files scanned"
        );
    }
    Ok(())
}

const DOCKER_PY: &str = r#"
import base64, sys
import docker
sock, name, value, image = sys.argv[1:5]
c = docker.DockerClient(base_url="unix://" + sock)
s = c.secrets.create(name=name + "-py", data=value.encode(), labels={"from": "py"})
cf = c.configs.create(name=name + "-pyconf", data=b"py-config-" + name.encode())
svc = c.services.create(
    image, command=["sleep", "1000"], name=name + "-py",
    constraints=["node.role==worker"],
    secrets=[docker.types.SecretReference(s.id, name + "-py", filename="py-secret", mode=0o400)],
    configs=[docker.types.ConfigReference(cf.id, name + "-pyconf", filename="/etc/py.conf")])
cs = c.services.get(svc.id).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
assert cs["Secrets"][0]["SecretID"] == s.id, cs
assert cs["Configs"][0]["ConfigID"] == cf.id, cs
api = c.api
attrs = api.inspect_secret(s.id)
assert "Data" not in attrs["Spec"], attrs
spec = attrs["Spec"]
spec["Labels"] = {"from": "py", "rotated": "yes"}
r = api._post_json(api._url("/secrets/{0}/update", s.id), data=spec,
                   params={"version": attrs["Version"]["Index"]})
api._raise_for_status(r)
after = api.inspect_secret(s.id)
assert after["Spec"]["Labels"] == {"from": "py", "rotated": "yes"}, after
assert after["Version"]["Index"] > attrs["Version"]["Index"], after
assert [x.id for x in c.secrets.list(filters={"label": "rotated=yes"})] == [s.id]
assert base64.b64decode(api.inspect_config(cf.id)["Spec"]["Data"]) == b"py-config-" + name.encode()
print(svc.id)
"#;

#[test]
fn secrets_reach_their_tasks_in_memory_and_no_node_stores_them_in_plain_text() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let c = Cluster::new(3)?.with_task_cleanup();
    c.form(1)?;
    let n = std::process::id();
    let secret = marker("secret");
    let name = format!("pw{n}");

    // Create from stdin; inspect never shows the value.
    let id = create_secret_stdin(&c, 0, &name, &secret, &["env=test"])?;
    ensure!(id.len() == 25, "secret id {id:?}");
    let other = create_secret_stdin(&c, 1, &format!("other{n}"), "not the marker", &[])?;
    let inspect = eventually_ok(&c, 2, &["secret", "inspect", &name])?;
    ensure!(!inspect.contains(&secret), "{inspect}");
    let v: serde_json::Value = serde_json::from_str(&inspect)?;
    ensure!(
        v[0]["ID"] == id.as_str() && v[0]["Spec"]["Name"] == name.as_str(),
        "{v}"
    );
    ensure!(v[0]["Spec"].get("Data").is_none(), "{v}");
    ensure!(v[0]["Spec"]["Labels"]["env"] == "test", "{v}");
    let dir = tempfile::tempdir()?;
    let other_file = dir.path().join("other");
    std::fs::write(&other_file, "x")?;
    let dup = fails(
        &c,
        0,
        &["secret", "create", &name, &other_file.display().to_string()],
    )?;
    ensure!(
        dup.contains(&format!(
            "rpc error: code = AlreadyExists desc = secret {name} already exists"
        )),
        "{dup}"
    );

    // ls filters.
    let ls = |filter: &str, want: &str| -> Result<()> {
        let mut last = String::new();
        retry(Duration::from_secs(10), || {
            last =
                c.h(1)
                    .docker_ok(&["secret", "ls", "--filter", filter, "--format", "{{.Name}}"])?;
            Ok((last.trim() == want).then_some(()))
        })
        .with_context(|| format!("secret ls --filter {filter}: {last:?}, not {want:?}"))
    };
    ls(&format!("name=pw{n}"), &name)?;
    ls("label=env=test", &name)?;
    ls(&format!("id={}", &other[..8]), &format!("other{n}"))?;
    let bad = fails(&c, 0, &["secret", "ls", "--filter", "bogus=1"])?;
    ensure!(
        bad.to_lowercase().contains("invalid filter 'bogus'"),
        "{bad}"
    );

    // A config from a file.
    let conf_file = dir.path().join("app.conf");
    let conf_value = format!("config-{n}\n");
    std::fs::write(&conf_file, &conf_value)?;
    let conf = format!("conf{n}");
    c.h(0)
        .docker_ok(&["config", "create", &conf, &conf_file.display().to_string()])?;
    let shown = eventually_ok(
        &c,
        1,
        &[
            "config",
            "inspect",
            "--format",
            "{{json .Spec.Data}}",
            &conf,
        ],
    )?;
    {
        use base64::Engine as _;
        let b64: String = serde_json::from_str(shown.trim())?;
        ensure!(
            base64::engine::general_purpose::STANDARD.decode(b64)? == conf_value.as_bytes(),
            "{shown}"
        );
    }

    // A service on the workers using both.
    let svc = format!("web{n}");
    c.h(0).docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &svc,
        "--constraint",
        "node.role==worker",
        "--secret",
        &name,
        "--config",
        &format!("source={conf},target=/etc/app.conf,mode=0640,uid=0,gid=0"),
        &img,
        "sleep",
        "1000",
    ])?;
    let (host, cid) = task_container(&c, &svc)?;
    ensure!(host != 0, "the task runs on the manager");
    let read = c
        .h(host)
        .docker_ok(&["exec", &cid, "cat", &format!("/run/secrets/{name}")])?;
    ensure!(read == secret, "read {read:?}");
    let stat = c
        .h(host)
        .docker_ok(&["exec", &cid, "stat", "-c", "%a %u %g", "/etc/app.conf"])?;
    ensure!(stat.trim() == "640 0 0", "{stat}");
    let content = c
        .h(host)
        .docker_ok(&["exec", &cid, "cat", "/etc/app.conf"])?;
    ensure!(content == conf_value, "{content:?}");
    let mode = c.h(host).docker_ok(&[
        "exec",
        &cid,
        "stat",
        "-c",
        "%a",
        &format!("/run/secrets/{name}"),
    ])?;
    ensure!(mode.trim() == "444", "{mode}");
    // In memory: the secret's file is on a tmpfs.
    let fs = c
        .h(host)
        .docker_ok(&["exec", &cid, "cat", "/proc/mounts"])?;
    ensure!(
        fs.lines()
            .any(|l| l.starts_with("tmpfs ") && l.contains(&format!("/run/secrets/{name} "))),
        "{fs}"
    );

    // In use: refused with Swarm's text.
    let refused = fails(&c, 1, &["secret", "rm", &name])?;
    ensure!(
        refused.contains(&format!(
            "secret '{name}' is in use by the following service: {svc}"
        )),
        "{refused}"
    );
    let refused = fails(&c, 0, &["config", "rm", &conf])?;
    ensure!(
        refused.contains(&format!(
            "config '{conf}' is in use by the following service: {svc}"
        )),
        "{refused}"
    );

    // docker-py against a worker.
    let py_secret = marker("pysecret");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(DOCKER_PY)
        .arg(c.h(2).socket())
        .args([&format!("py{n}"), &py_secret, &img])
        .output()?;
    if !out.status.success() {
        bail!(
            "docker-py: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            c.h(2).log()
        );
    }
    let (py_host, py_cid) = task_container(&c, &format!("py{n}-py"))?;
    let read = c
        .h(py_host)
        .docker_ok(&["exec", &py_cid, "cat", "/run/secrets/py-secret"])?;
    ensure!(read == py_secret, "{read:?}");
    let stat = c.h(py_host).docker_ok(&[
        "exec",
        &py_cid,
        "stat",
        "-c",
        "%a",
        "/run/secrets/py-secret",
    ])?;
    ensure!(stat.trim() == "400", "{stat}");
    let read = c
        .h(py_host)
        .docker_ok(&["exec", &py_cid, "cat", "/etc/py.conf"])?;
    ensure!(read == format!("py-config-py{n}"), "{read:?}");

    // A Raft snapshot on every node taken after both secrets were written, so the scan
    // below covers snapshots as well as the log and the applied state.
    let mut newest = 0u64;
    for s in [name.clone(), format!("py{n}-py")] {
        let index = c
            .h(0)
            .docker_ok(&["secret", "inspect", "-f", "{{.Version.Index}}", &s])?;
        newest = newest.max(index.trim().parse()?);
    }
    c.h(0)
        .docker_ok(&["swarm", "update", "--snapshot-interval", "1"])?;
    for i in 0..c.hosts.len() {
        retry(CONVERGE, || {
            Ok(snapshot_indexes(&c.h(i).log())
                .into_iter()
                .any(|x| x >= newest)
                .then_some(()))
        })
        .with_context(|| format!("host {i}: no Raft snapshot at or after index {newest}"))?;
    }

    // Nothing on any disk, while the tasks run.
    scan_hosts(&c, &secret, "tasks running")?;
    scan_hosts(&c, &py_secret, "tasks running")?;

    // Gone with the service: then the secret can go.
    c.h(0).docker_ok(&["service", "rm", &svc])?;
    retry(CONVERGE, || {
        Ok(c.h(0)
            .docker(&["secret", "rm", &name])?
            .status
            .success()
            .then_some(()))
    })
    .context("secret rm after the service was removed")?;
    let gone = fails(&c, 0, &["secret", "inspect", &name])?;
    ensure!(gone.contains("not found"), "{gone}");
    // Its tmpfs goes with the task's container.
    retry(CONVERGE, || {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let root = c.h(host).exec_root().join("task-files");
        let left = mounts
            .lines()
            .filter(|l| l.contains(&root.display().to_string()))
            .count();
        Ok((left <= 1).then_some(()))
    })
    .context("the task's tmpfs was not unmounted")?;

    scan_hosts(&c, &secret, "after removal")?;
    scan_hosts(&c, &py_secret, "after removal")?;
    Ok(())
}
