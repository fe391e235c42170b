//! docker-compose 1.29 (Debian's `/usr/bin/docker-compose`, through docker-py) against a
//! berthd this test starts: a project's whole life, as with dockerd.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};
use berth_testkit::daemon::DockerEnv;

/// A compose project in its own directory, driven against the test's berthd.
struct Project<'a> {
    env: &'a DockerEnv,
    dir: tempfile::TempDir,
    name: String,
}

impl Project<'_> {
    fn compose(&self, args: &[&str]) -> Result<Output> {
        Command::new("docker-compose")
            .args(["--no-ansi", "-p", &self.name])
            .args(args)
            .current_dir(self.dir.path())
            .env("DOCKER_HOST", self.env.d.host())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("COMPOSE_FILE")
            .env_remove("COMPOSE_PROJECT_NAME")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run docker-compose {}", args.join(" ")))
    }

    /// Runs docker-compose and fails unless it exits 0; returns (stdout, stderr).
    fn ok(&self, args: &[&str]) -> Result<(String, String)> {
        let out = self.compose(args)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!(
                "docker-compose {} failed ({}): {stdout}{stderr}\nberthd log:\n{}",
                args.join(" "),
                out.status,
                self.env.d.log()
            );
        }
        Ok((stdout, stderr))
    }

    /// IDs of the project's containers of `service`, sorted.
    fn ids(&self, service: &str) -> Result<Vec<String>> {
        let out = self.env.ok(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ])?;
        let mut ids: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        ids.sort();
        Ok(ids)
    }
}

fn write_project(dir: &Path, image: &str) -> Result<()> {
    // Both services stop at once on SIGTERM (the trap), so `down` takes no stop timeout.
    let yml = format!(
        r#"version: "3.7"
services:
  server:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; echo server-up; while :; do sleep 1; done"]
    volumes: ["data:/data"]
    networks: [back]
  client:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; echo client-up; while :; do sleep 1; done"]
    networks: [back]
volumes:
  data:
    labels:
      team: storage
networks:
  back:
    labels:
      team: net
"#
    );
    std::fs::write(dir.join("docker-compose.yml"), yml)?;
    Ok(())
}

#[test]
fn compose_up_again_scale_exec_logs_down() -> Result<()> {
    let env = DockerEnv::new()?;
    let dir = tempfile::Builder::new()
        .prefix("berth-compose-")
        .tempdir()?;
    let name = format!("bc{}", std::process::id());
    let p = Project {
        env: &env,
        dir,
        name: name.clone(),
    };
    write_project(p.dir.path(), &env.img("busybox:latest"))?;
    let net = format!("{name}_back");
    let vol = format!("{name}_data");

    p.ok(&["up", "-d"])?;
    let server = p.ids("server")?;
    let client = p.ids("client")?;
    assert_eq!(
        (server.len(), client.len()),
        (1, 1),
        "{server:?} {client:?}"
    );

    // What compose created is shown back as sent: labels (its own and the user's), no
    // options it did not set, a real creation time.
    let labels = env.ok(&["network", "inspect", "--format", "{{json .Labels}}", &net])?;
    let labels: serde_json::Value = serde_json::from_str(&labels)?;
    assert_eq!(labels["team"], "net", "{labels}");
    assert_eq!(
        labels["com.docker.compose.project"],
        name.as_str(),
        "{labels}"
    );
    assert_eq!(labels["com.docker.compose.network"], "back", "{labels}");
    let opts = env.ok(&["network", "inspect", "--format", "{{json .Options}}", &net])?;
    assert_eq!(opts.trim(), "{}");
    let created = env.ok(&["network", "inspect", "--format", "{{.Created}}", &net])?;
    assert!(!created.starts_with("0001-01-01"), "Created {created}");
    let vlabels = env.ok(&["volume", "inspect", "--format", "{{json .Labels}}", &vol])?;
    let vlabels: serde_json::Value = serde_json::from_str(&vlabels)?;
    assert_eq!(vlabels["team"], "storage", "{vlabels}");
    assert_eq!(vlabels["com.docker.compose.volume"], "data", "{vlabels}");

    // Unchanged project: nothing is recreated.
    let (_, err) = p.ok(&["up", "-d"])?;
    assert!(err.contains("is up-to-date"), "{err}");
    assert_eq!(p.ids("server")?, server);
    assert_eq!(p.ids("client")?, client);

    // Scale: one more client, the rest kept.
    p.ok(&["up", "-d", "--scale", "client=2"])?;
    assert_eq!(p.ids("server")?, server);
    let clients = p.ids("client")?;
    assert_eq!(clients.len(), 2, "{clients:?}");
    assert!(clients.contains(&client[0]), "{clients:?} keeps {client:?}");

    // exec: into the named volume, and by service name over the project network.
    let (out, _) = p.ok(&[
        "exec",
        "-T",
        "server",
        "sh",
        "-c",
        "echo kept > /data/f; cat /data/f",
    ])?;
    assert_eq!(out.trim(), "kept");
    let (out, _) = p.ok(&[
        "exec", "-T", "--index", "2", "client", "ping", "-c", "1", "server",
    ])?;
    assert!(out.contains("1 packets received"), "{out}");

    // logs
    let (out, _) = p.ok(&["logs", "--no-color", "server"])?;
    assert!(out.contains("server-up"), "{out}");
    let (out, _) = p.ok(&["logs", "--no-color", "client"])?;
    assert_eq!(out.matches("client-up").count(), 2, "{out}");

    // down -v: containers, network and volume gone.
    p.ok(&["down", "-v"])?;
    let left = env.ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={name}"),
    ])?;
    assert_eq!(left.trim(), "", "containers left");
    let nets = env.ok(&["network", "ls", "--format", "{{.Name}}"])?;
    assert!(!nets.lines().any(|n| n == net), "{nets}");
    let vols = env.ok(&["volume", "ls", "-q"])?;
    assert!(!vols.lines().any(|v| v == vol), "{vols}");
    Ok(())
}
