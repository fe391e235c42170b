//! The Docker Engine API through the real docker CLI: images, containers, exec, logs,
//! volumes, limits, restart policies, live restore and bad input, against a berthd this test
//! starts and the fixture registry.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use berth_testkit::daemon::{retry, DockerEnv};

type Env = DockerEnv;

/// Polls `f` until it returns true or `timeout` passes.
fn eventually(
    e: &Env,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<bool>,
) -> Result<()> {
    retry(timeout, || Ok(f()?.then_some(())))
        .map_err(|err| anyhow::anyhow!("waiting for {what}: {err}\n{}", e.d.log()))
}

#[test]
fn pull_images_inspect_history_tag_rmi() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    let out = e.ok(&["pull", &bb])?;
    assert!(
        out.contains("Pull complete") || out.contains("Downloaded newer image"),
        "{out}"
    );
    let want = e.fx.image("busybox:latest");
    assert_eq!(
        e.ok(&["image", "inspect", "--format", "{{.Id}}", &bb])?
            .trim(),
        want.config_digest
    );
    assert_eq!(
        e.ok(&[
            "image",
            "inspect",
            "--format",
            "{{.Os}}/{{.Architecture}} {{index .RootFS.Layers 0}}",
            &bb
        ])?
        .trim(),
        format!("linux/amd64 {}", want.layers[0].diff_id)
    );
    let again = e.ok(&["pull", &bb])?;
    assert!(again.contains("Image is up to date"), "{again}");
    let images = e.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])?;
    assert!(images.lines().any(|l| l == bb), "{images}");
    let hist = e.ok(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", &bb])?;
    assert!(hist.contains("busybox-static rootfs"), "{hist}");

    e.ok(&["tag", &bb, "mine:v1"])?;
    let images = e.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])?;
    assert!(images.contains("mine:v1"), "{images}");
    let rmi = e.ok(&["rmi", "mine:v1"])?;
    assert!(rmi.contains("Untagged: mine:v1"), "{rmi}");
    // Still there under its first name.
    e.ok(&["image", "inspect", &bb])?;
    let rmi = e.ok(&["rmi", &bb])?;
    assert!(rmi.contains("Deleted: sha256:"), "{rmi}");
    let gone = e.d.docker(&["image", "inspect", &bb])?;
    assert!(!gone.status.success());
    Ok(())
}

#[test]
fn run_prints_output_passes_exit_codes_and_pulls_missing_images() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    // Not pulled yet: run pulls it first.
    let out = e.d.docker(&["run", "--rm", &bb, "echo", "hi"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout)?, "hi\n");
    let out = e.d.docker(&[
        "run",
        "--rm",
        &bb,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ])?;
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8(out.stdout)?, "out\n");
    assert_eq!(String::from_utf8(out.stderr)?, "err\n");
    // --rm removed them.
    assert_eq!(e.ok(&["ps", "-aq"])?.trim(), "");
    Ok(())
}

#[test]
fn detached_web_lifecycle() -> Result<()> {
    let e = Env::new()?;
    let web = e.img("web:latest");
    let id = e
        .ok(&["run", "-d", "--name", "web", &web])?
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    let ps = e.ok(&["ps", "--format", "{{.Names}} {{.Status}}"])?;
    assert!(ps.starts_with("web Up"), "{ps}");
    assert_eq!(
        e.inspect("web", "{{.State.Running}} {{.Config.WorkingDir}}")?,
        "true /www"
    );

    let page = e.ok(&["exec", "web", "cat", "/www/index.html"])?;
    assert_eq!(page, berth_testkit::image::WEB_INDEX_HTML);
    let code = e.d.docker(&["exec", "web", "sh", "-c", "exit 3"])?;
    assert_eq!(code.status.code(), Some(3));

    let top = e.ok(&["top", "web"])?;
    assert!(top.contains("httpd"), "{top}");
    let stats = e.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}}",
        "web",
    ])?;
    assert!(stats.starts_with("web 1"), "{stats}");

    // httpd ignores SIGTERM: stop falls back to SIGKILL after -t.
    let t0 = Instant::now();
    e.ok(&["stop", "-t", "1", "web"])?;
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        e.inspect("web", "{{.State.Status}} {{.State.ExitCode}}")?,
        "exited 137"
    );
    let ps = e.ok(&["ps", "-q"])?;
    assert_eq!(ps.trim(), "");
    let ps_a = e.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"])?;
    assert!(ps_a.contains("web Exited (137)"), "{ps_a}");

    e.ok(&["start", "web"])?;
    e.ok(&["kill", "-s", "KILL", "web"])?;
    assert_eq!(
        e.inspect("web", "{{.State.Status}} {{.State.ExitCode}}")?,
        "exited 137"
    );
    e.ok(&["restart", "-t", "0", "web"])?;
    assert_eq!(e.inspect("web", "{{.State.Status}}")?, "running");

    e.ok(&["rename", "web", "web2"])?;
    assert_eq!(e.inspect(&id[..12], "{{.Name}}")?, "/web2");
    let missing = e.d.docker(&["inspect", "web"])?;
    assert!(!missing.status.success());

    // wait returns the exit code once it stops.
    let waiter =
        e.d.docker_cmd(&["wait", "web2"])
            .stdout(Stdio::piped())
            .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    e.ok(&["kill", "web2"])?;
    let out = waiter.wait_with_output()?;
    assert_eq!(String::from_utf8(out.stdout)?.trim(), "137");

    e.ok(&["rm", "-f", "web2"])?;
    assert_eq!(e.ok(&["ps", "-aq"])?.trim(), "");

    // prune removes stopped containers only.
    let bb = e.img("busybox:latest");
    e.ok(&["run", "--name", "done1", &bb, "true"])?;
    e.ok(&["run", "-d", "--name", "alive", &bb, "sleep", "30"])?;
    let pruned = e.ok(&["container", "prune", "-f"])?;
    assert!(pruned.contains("Deleted Containers"), "{pruned}");
    let left = e.ok(&["ps", "-a", "--format", "{{.Names}}"])?;
    assert_eq!(left.trim(), "alive");
    Ok(())
}

#[test]
fn logs_and_follow() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    let id = e
        .ok(&[
            "run",
            "-d",
            &bb,
            "sh",
            "-c",
            "echo one; echo two >&2; sleep 1; echo three; sleep 1",
        ])?
        .trim()
        .to_string();
    // -f follows new lines until the container exits.
    let out = e.d.docker(&["logs", "-f", &id])?;
    assert_eq!(String::from_utf8(out.stdout)?, "one\nthree\n");
    assert_eq!(String::from_utf8(out.stderr)?, "two\n");
    let tail = e.ok(&["logs", "--tail", "1", &id])?;
    assert_eq!(tail, "three\n");
    let ts = e.ok(&["logs", "-t", &id])?;
    assert!(
        ts.lines().all(|l| l.len() > 30 && l.as_bytes()[4] == b'-'),
        "{ts}"
    );
    Ok(())
}

#[test]
fn attach_to_a_running_container() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    let id = e
        .ok(&[
            "run",
            "-d",
            &bb,
            "sh",
            "-c",
            "sleep 1; echo attached-out; sleep 0.5",
        ])?
        .trim()
        .to_string();
    let out = e.d.docker(&["attach", &id])?;
    assert_eq!(String::from_utf8(out.stdout)?, "attached-out\n");
    Ok(())
}

/// Runs `cmd` under a pty (util-linux `script`), typing `input`; returns what it printed.
fn under_pty(e: &Env, cmd: &str, input: &[u8]) -> Result<String> {
    let mut child = std::process::Command::new("script")
        .args(["-qfec", cmd, "/dev/null"])
        .env("DOCKER_HOST", e.d.host())
        .env("DOCKER_CONFIG", e.d.root().join("docker-config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn script")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    std::thread::sleep(Duration::from_millis(1500));
    // Type line by line, as a user would; a write error means the command already ended
    // (its output tells why).
    for chunk in input.split_inclusive(|b| *b == b'\n') {
        if stdin.write_all(chunk).and_then(|()| stdin.flush()).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            child.kill()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn interactive_tty_run_and_exec() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let out = under_pty(
        &e,
        &format!(
            "{} run -it --rm {bb} sh",
            berth_testkit::daemon::docker_cli().display()
        ),
        b"echo typed-$((6*7))\n\x04",
    )?;
    assert!(out.contains("typed-42"), "{out}");
    assert_eq!(
        e.ok(&["ps", "-aq"])?.trim(),
        "",
        "--rm removed it after Ctrl-D"
    );

    let web = e.img("web:latest");
    e.ok(&["run", "-d", "--name", "web", &web])?;
    let out = under_pty(
        &e,
        &format!(
            "{} exec -it web sh",
            berth_testkit::daemon::docker_cli().display()
        ),
        b"cat /www/index.html; echo exec-$((2*21))\n\x04",
    )?;
    let log = e.d.log();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert!(
        out.contains("exec-42") && out.contains("hello from web"),
        "{out}\n{}",
        problems.join("\n")
    );
    Ok(())
}

#[test]
fn volumes_keep_data_and_binds_share_host_dirs() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&[
        "run",
        "--rm",
        "-v",
        "keep:/data",
        &bb,
        "sh",
        "-c",
        "echo persisted > /data/f",
    ])?;
    let out = e.ok(&["run", "--rm", "-v", "keep:/data", &bb, "cat", "/data/f"])?;
    assert_eq!(out, "persisted\n");
    assert!(e.ok(&["volume", "ls", "-q"])?.lines().any(|l| l == "keep"));
    let mp = e.ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", "keep"])?;
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(mp.trim()).join("f"))?,
        "persisted\n"
    );

    let host = tempfile::tempdir()?;
    std::fs::write(host.path().join("in"), "from-host\n")?;
    let bind = format!("{}:/data", host.path().display());
    let out = e.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        &bb,
        "sh",
        "-c",
        "cat /data/in; echo back > /data/out",
    ])?;
    assert_eq!(out, "from-host\n");
    assert_eq!(std::fs::read_to_string(host.path().join("out"))?, "back\n");

    // In use: refused; after the container is gone: removed.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "keep:/data",
        &bb,
        "sleep",
        "30",
    ])?;
    let busy = e.d.docker(&["volume", "rm", "keep"])?;
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use"));
    e.ok(&["rm", "-f", "user"])?;
    e.ok(&["volume", "rm", "keep"])?;
    Ok(())
}

#[test]
fn memory_limit_oom_and_restart_policy() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    let id = e
        .ok(&[
            "run",
            "-d",
            "--memory",
            "32m",
            &bb,
            "sh",
            "-c",
            "head -c 200m /dev/zero | tail",
        ])?
        .trim()
        .to_string();
    eventually(&e, Duration::from_secs(30), "the OOM kill", || {
        Ok(e.inspect(&id, "{{.State.Status}}")? == "exited")
    })?;
    assert_eq!(e.inspect(&id, "{{.State.OOMKilled}}")?, "true");

    let id = e
        .ok(&[
            "run",
            "-d",
            "--restart",
            "on-failure:2",
            &bb,
            "sh",
            "-c",
            "exit 1",
        ])?
        .trim()
        .to_string();
    eventually(&e, Duration::from_secs(30), "two restarts", || {
        Ok(e.inspect(&id, "{{.RestartCount}} {{.State.Status}}")? == "2 exited")
    })?;
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        e.inspect(&id, "{{.RestartCount}} {{.State.ExitCode}}")?,
        "2 1"
    );
    Ok(())
}

#[test]
fn containers_survive_a_daemon_kill() -> Result<()> {
    let mut e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        &bb,
        "sh",
        "-c",
        "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.2; done",
    ])?;
    std::thread::sleep(Duration::from_millis(700));
    e.d.kill9()?;
    std::thread::sleep(Duration::from_millis(700));
    e.d.restart()?;
    let ps = e.ok(&["ps", "--format", "{{.Names}} {{.Status}}"])?;
    assert!(ps.starts_with("ticker Up"), "{ps}");
    let logs = e.ok(&["logs", "ticker"])?;
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines.len() >= 5, "{logs}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("tick{i}"), "log is complete and in order");
    }
    e.ok(&["stop", "-t", "1", "ticker"])?;
    assert_eq!(e.inspect("ticker", "{{.State.Status}}")?, "exited");
    Ok(())
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let missing = e.d.docker(&["container", "inspect", "no-such-container"])?;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No such container"));
    let bad_ref = e.d.docker(&["run", "--rm", "BAD::REF", "true"])?;
    assert!(!bad_ref.status.success());
    assert!(String::from_utf8_lossy(&bad_ref.stderr)
        .to_lowercase()
        .contains("invalid"));

    e.ok(&["create", "--name", "taken", &bb, "true"])?;
    let dup = e.d.docker(&["create", "--name", "taken", &bb, "true"])?;
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already in use"));
    assert_eq!(e.ok(&["ps", "-aq"])?.lines().count(), 1);

    // Malformed JSON at the socket: 400 with a message, nothing created.
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(e.d.socket())
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            "{\"Image\":",
            "http://berth/v1.50/containers/create",
        ])
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    let (body, code) = text.rsplit_once('\n').context("status")?;
    assert_eq!(code, "400", "{body}");
    let v: serde_json::Value = serde_json::from_str(body)?;
    assert!(v["message"].is_string());
    assert_eq!(e.ok(&["ps", "-aq"])?.lines().count(), 1);
    Ok(())
}

#[test]
fn push_save_and_load() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let pushed = e.img("pushed:v1");
    e.ok(&["tag", &bb, &pushed])?;
    let out = e.ok(&["push", &pushed])?;
    assert!(out.contains("digest: sha256:"), "{out}");
    // The registry now serves it with the same config.
    let reg = berth_testkit::registry::Pusher::new(&e.fx.registry);
    let (m, _) = reg.get(
        "/v2/pushed/manifests/v1",
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
    )?;
    let m: serde_json::Value = serde_json::from_slice(&m)?;
    assert_eq!(
        m["config"]["digest"],
        e.fx.image("busybox:latest").config_digest.as_str()
    );

    let dir = tempfile::tempdir()?;
    let tar = dir.path().join("bb.tar");
    let tar_s = tar.display().to_string();
    e.ok(&["save", "-o", &tar_s, &bb])?;
    let id = e.ok(&["image", "inspect", "--format", "{{.Id}}", &bb])?;
    e.ok(&["rmi", "-f", &bb, &pushed])?;
    assert!(!e.d.docker(&["image", "inspect", &bb])?.status.success());
    let out = e.ok(&["load", "-i", &tar_s])?;
    assert!(out.contains("Loaded image"), "{out}");
    assert_eq!(e.ok(&["image", "inspect", "--format", "{{.Id}}", &bb])?, id);
    let run = e.ok(&["run", "--rm", &bb, "echo", "loaded"])?;
    assert_eq!(run, "loaded\n");
    Ok(())
}

#[test]
fn info_system_df_and_events() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    let mut events =
        e.d.docker_cmd(&[
            "events",
            "--format",
            "{{.Type}} {{.Action}}",
            "--filter",
            "type=container",
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    e.ok(&["run", "--name", "evt", &bb, "true"])?;
    e.ok(&["volume", "create", "dfvol"])?;
    let info = e.ok(&[
        "info",
        "--format",
        "{{.Containers}} {{.ContainersStopped}} {{.Images}}",
    ])?;
    assert_eq!(info.trim(), "1 1 1");
    let df = e.ok(&["system", "df", "--format", "{{.Type}} {{.TotalCount}}"])?;
    assert!(df.contains("Images 1"), "{df}");
    assert!(df.contains("Containers 1"), "{df}");
    assert!(df.contains("Local Volumes 1"), "{df}");
    e.ok(&["rm", "evt"])?;
    std::thread::sleep(Duration::from_millis(300));
    events.kill()?;
    let out = events.wait_with_output()?;
    let text = String::from_utf8(out.stdout)?;
    for want in [
        "container create",
        "container start",
        "container die",
        "container destroy",
    ] {
        assert!(text.contains(want), "events lack {want}: {text}");
    }
    Ok(())
}

/// `docker image prune` (with and without `-a`), `container prune --filter until=`,
/// `volume prune` (anonymous only since API 1.42, `-a`, `label!`, everything unused for an
/// older API) and `network prune --filter label=`, as dockerd prunes them.
#[test]
fn prune_removes_what_dockerd_removes() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    let web = e.img("web:latest");
    e.ok(&["pull", "-q", &bb])?;
    e.ok(&["pull", "-q", &web])?;
    e.ok(&["tag", &bb, "keep:1"])?;
    let tags = || -> Result<Vec<String>> {
        let mut t: Vec<String> = e
            .ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])?
            .lines()
            .map(str::to_string)
            .collect();
        t.sort();
        Ok(t)
    };
    // A stopped container keeps its image in use.
    e.ok(&["create", "--name", "user", "-v", "/anon", &bb, "true"])?;

    // Without -a only dangling images go: there are none.
    let out = e.ok(&["image", "prune", "-f"])?;
    assert_eq!(out.trim(), "Total reclaimed space: 0B");
    // -a with a label no image has: nothing.
    let out = e.ok(&["image", "prune", "-a", "-f", "--filter", "label=nosuch"])?;
    assert_eq!(out.trim(), "Total reclaimed space: 0B");
    // -a: every image no container uses.
    let out = e.ok(&["image", "prune", "-a", "-f"])?;
    assert!(out.contains(&format!("untagged: {web}")), "{out}");
    assert!(out.contains("deleted: sha256:"), "{out}");
    assert!(!out.contains("Total reclaimed space: 0B"), "{out}");
    let mut want = vec![bb.clone(), "keep:1".to_string()];
    want.sort();
    assert_eq!(tags()?, want);

    // A container created just now is not older than an hour.
    let out = e.ok(&["container", "prune", "-f", "--filter", "until=1h"])?;
    assert_eq!(out.trim(), "Total reclaimed space: 0B");
    assert_eq!(e.ok(&["ps", "-aq"])?.lines().count(), 1);
    let bad =
        e.d.docker(&["container", "prune", "-f", "--filter", "until=soon"])?;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("failed to parse value as time or duration")
    );
    e.ok(&["container", "prune", "-f"])?;
    assert_eq!(e.ok(&["ps", "-aq"])?.trim(), "");
    // Now nothing uses busybox: -a removes both its tags and the image.
    e.ok(&["image", "prune", "-a", "-f"])?;
    assert_eq!(tags()?, Vec::<String>::new());

    // Volumes: the container's anonymous one, a named one, a labelled named one.
    e.ok(&["volume", "create", "named"])?;
    e.ok(&["volume", "create", "--label", "keep=1", "labelled"])?;
    let vols = || -> Result<usize> { Ok(e.ok(&["volume", "ls", "-q"])?.lines().count()) };
    assert_eq!(vols()?, 3);
    e.ok(&["volume", "prune", "-f"])?;
    assert_eq!(e.ok(&["volume", "ls", "-q"])?.trim(), "labelled\nnamed");
    e.ok(&["volume", "prune", "-a", "-f", "--filter", "label!=keep"])?;
    assert_eq!(e.ok(&["volume", "ls", "-q"])?.trim(), "labelled");
    // An API older than 1.42 prunes named volumes too.
    let out = std::process::Command::new("curl")
        .args(["-s", "-X", "POST", "--unix-socket"])
        .arg(e.d.socket())
        .arg("http://berth/v1.41/volumes/prune")
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["VolumesDeleted"], serde_json::json!(["labelled"]), "{v}");

    // Networks: only the labelled one goes.
    e.ok(&["network", "create", "--label", "team=a", "pa"])?;
    e.ok(&["network", "create", "pb"])?;
    let out = e.ok(&["network", "prune", "-f", "--filter", "label=team=a"])?;
    assert!(out.contains("pa"), "{out}");
    let nets = e.ok(&["network", "ls", "--format", "{{.Name}}"])?;
    assert!(
        nets.lines().any(|n| n == "pb") && !nets.lines().any(|n| n == "pa"),
        "{nets}"
    );
    e.ok(&["network", "rm", "pb"])?;

    // `docker system prune` prunes containers, networks, images and the build cache
    // (berthd has none, so nothing to delete there).
    e.ok(&["create", "--name", "stopped", &bb, "true"])?;
    let out = e.ok(&["system", "prune", "-a", "-f"])?;
    assert!(out.contains("Deleted Containers:"), "{out}");
    assert!(out.contains(&format!("untagged: {bb}")), "{out}");
    assert_eq!(e.ok(&["ps", "-aq"])?.trim(), "");
    Ok(())
}
