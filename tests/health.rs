//! Health checks and `docker ps` filters through the real docker CLI, against a berthd this
//! test starts and the fixture registry. Expected texts are dockerd 20.10's.

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_testkit::daemon::{retry, DockerEnv};
use serde_json::{json, Value};

type Env = DockerEnv;

const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `docker inspect` until `{{.State.Health.Status}}` is `want`.
fn wait_health(e: &Env, name: &str, want: &str) -> Result<()> {
    retry(DEADLINE, || {
        let s = e.inspect(name, "{{if .State.Health}}{{.State.Health.Status}}{{end}}")?;
        Ok((s == want).then_some(()))
    })
    .with_context(|| format!("waiting for {name} to be {want}\n{}", e.d.log()))
}

fn health(e: &Env, name: &str) -> Result<Value> {
    Ok(serde_json::from_str(
        &e.inspect(name, "{{json .State.Health}}")?,
    )?)
}

/// `docker ps` names, one per line, in order.
fn ps_names(e: &Env, args: &[&str]) -> Result<Vec<String>> {
    let mut a = vec!["ps", "--format", "{{.Names}}"];
    a.extend_from_slice(args);
    Ok(e.ok(&a)?.lines().map(str::to_string).collect())
}

/// Starts `docker events` with `args`; `finish` stops it and returns what it printed.
fn events(e: &Env, args: &[&str]) -> Result<Child> {
    let mut a = vec!["events"];
    a.extend_from_slice(args);
    let child = e.d.docker_cmd(&a).stdout(Stdio::piped()).spawn()?;
    // The subscription is in place once the CLI has connected; a ping round-trip later it is.
    std::thread::sleep(Duration::from_millis(300));
    Ok(child)
}

fn finish(mut child: Child) -> Result<String> {
    child.kill()?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("events stdout")?
        .read_to_string(&mut out)?;
    child.wait()?;
    Ok(out)
}

#[test]
fn health_cmd_goes_unhealthy_then_healthy_with_ps_status_filter_and_events() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let ev = events(
        &e,
        &[
            "--filter",
            "event=health_status",
            "--format",
            "{{.Actor.Attributes.name}} {{.Action}}",
        ],
    )?;
    // A check that has not run yet: starting.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--network",
        "none",
        "--health-cmd",
        "true",
        "--health-interval",
        "1h",
        &bb,
        "sleep",
        "1000",
    ])?;
    assert_eq!(
        health(&e, "slow")?,
        json!({"Status": "starting", "FailingStreak": 0, "Log": []})
    );
    let status = e.ok(&["ps", "--filter", "name=^slow$", "--format", "{{.Status}}"])?;
    assert!(
        status.trim().starts_with("Up ") && status.trim().ends_with(" (health: starting)"),
        "{status}"
    );
    assert_eq!(ps_names(&e, &["--filter", "health=starting"])?, ["slow"]);
    assert_eq!(
        e.inspect("slow", "{{json .Config.Healthcheck}}")?,
        r#"{"Test":["CMD-SHELL","true"],"Interval":3600000000000}"#
    );

    e.ok(&[
        "run",
        "-d",
        "--name",
        "hc",
        "--network",
        "none",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        &bb,
        "sleep",
        "1000",
    ])?;
    e.ok(&[
        "run",
        "-d",
        "--name",
        "plain",
        "--network",
        "none",
        &bb,
        "sleep",
        "1000",
    ])?;
    wait_health(&e, "hc", "unhealthy")?;
    let h = health(&e, "hc")?;
    assert!(h["FailingStreak"].as_i64().unwrap() >= 2, "{h}");
    let log = h["Log"].as_array().context("Log")?;
    assert!(!log.is_empty() && log.len() <= 5, "{h}");
    for entry in log {
        assert_eq!(entry["ExitCode"], 1, "{h}");
        assert_eq!(entry["Output"], "", "{h}");
        assert!(entry["Start"].as_str().unwrap() <= entry["End"].as_str().unwrap());
    }
    let status = e.ok(&["ps", "--filter", "name=^hc$", "--format", "{{.Status}}"])?;
    assert!(status.trim().ends_with(" (unhealthy)"), "{status}");
    assert_eq!(ps_names(&e, &["--filter", "health=unhealthy"])?, ["hc"]);

    e.ok(&["exec", "hc", "touch", "/tmp/ok"])?;
    wait_health(&e, "hc", "healthy")?;
    let h = health(&e, "hc")?;
    assert_eq!(h["FailingStreak"], 0, "{h}");
    assert_eq!(h["Log"].as_array().unwrap().last().unwrap()["ExitCode"], 0);
    let status = e.ok(&["ps", "--filter", "name=^hc$", "--format", "{{.Status}}"])?;
    assert!(
        status.trim().starts_with("Up ") && status.trim().ends_with(" (healthy)"),
        "{status}"
    );
    assert_eq!(ps_names(&e, &["--filter", "health=healthy"])?, ["hc"]);
    // Finished probes leave no exec records behind (a full log: at least 5 probes ran).
    retry(DEADLINE, || {
        Ok((e.inspect("hc", "{{len .State.Health.Log}}")? == "5").then_some(()))
    })?;
    let id = e.inspect("hc", "{{.Id}}")?;
    let execs =
        e.d.data_root()
            .join("runtime/containers")
            .join(&id)
            .join("execs");
    let left = std::fs::read_dir(&execs)
        .with_context(|| execs.display().to_string())?
        .count();
    assert!(left <= 3, "{left} exec records kept in {}", execs.display());
    assert_eq!(ps_names(&e, &["--filter", "health=none"])?, ["plain"]);
    assert_eq!(
        ps_names(
            &e,
            &["--filter", "health=healthy", "--filter", "health=starting"]
        )?,
        ["hc", "slow"]
    );
    let bad = e.d.docker(&["ps", "--filter", "health=bogus"])?;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("Unrecognised filter value for health: bogus"),
        "{bad:?}"
    );
    assert_eq!(e.inspect("plain", "{{json .State.Health}}")?, "null");

    // A user's exec: the same events as a probe's, as dockerd emits them.
    let unix_now = || {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
    };
    let since = unix_now();
    e.ok(&["exec", "plain", "sh", "-c", "exit 0"])?;
    let text = retry(DEADLINE, || {
        let out = e.ok(&[
            "events",
            "--since",
            &since,
            "--until",
            &unix_now(),
            "--filter",
            "container=plain",
            "--format",
            "{{.Action}}|{{.Actor.Attributes.execID}}|{{.Actor.Attributes.exitCode}}",
        ])?;
        Ok((out.lines().count() >= 3).then_some(out))
    })?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let exec_id = lines[0]
        .strip_prefix("exec_create: sh -c exit 0|")
        .and_then(|r| r.split('|').next())
        .with_context(|| text.clone())?;
    assert_eq!(exec_id.len(), 64, "{text}");
    assert!(
        lines[1].starts_with(&format!("exec_start: sh -c exit 0|{exec_id}|")),
        "{text}"
    );
    assert_eq!(lines[2], format!("exec_die|{exec_id}|0"), "{text}");
    // Event filter keys are AND'ed (values of one key OR'ed), as dockerd does.
    let until = unix_now();
    let both = |image: &str| {
        e.ok(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "container=plain",
            "--filter",
            &format!("image={image}"),
            "--format",
            "{{.Action}}",
        ])
    };
    assert_eq!(both(&bb)?.lines().count(), 3);
    assert_eq!(both("nosuchimage")?, "");

    // Stopped: the monitor ends and dockerd reports unhealthy; a start resets to starting.
    e.ok(&["stop", "-t", "0", "hc"])?;
    assert_eq!(e.inspect("hc", "{{.State.Health.Status}}")?, "unhealthy");
    e.ok(&["start", "hc"])?;
    let h = health(&e, "hc")?;
    assert_eq!(h["FailingStreak"], 0, "{h}");
    wait_health(&e, "hc", "healthy")?;

    let text = finish(ev)?;
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("hc ")).collect();
    assert_eq!(
        lines.first().copied(),
        Some("hc health_status: unhealthy"),
        "{text}"
    );
    assert!(lines.contains(&"hc health_status: healthy"), "{text}");
    Ok(())
}

#[test]
fn probe_timeout_output_and_exec_events() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let ev = events(
        &e,
        &["--filter", "container=slowprobe", "--format", "{{json .}}"],
    )?;
    e.ok(&[
        "run",
        "-d",
        "--name",
        "slowprobe",
        "--network",
        "none",
        "--health-cmd",
        "echo out; echo err >&2; sleep 30",
        "--health-timeout",
        "300ms",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        &bb,
        "sleep",
        "1000",
    ])?;
    wait_health(&e, "slowprobe", "unhealthy")?;
    let h = health(&e, "slowprobe")?;
    assert_eq!(h["Log"][0]["ExitCode"], -1, "{h}");
    assert_eq!(
        h["Log"][0]["Output"], "Health check exceeded timeout (300ms)",
        "{h}"
    );
    // Output of a probe that finishes: stdout and stderr, as dockerd keeps them.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "talky",
        "--network",
        "none",
        "--health-cmd",
        "echo out; echo err >&2; exit 3",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        &bb,
        "sleep",
        "1000",
    ])?;
    wait_health(&e, "talky", "unhealthy")?;
    let h = health(&e, "talky")?;
    assert_eq!(h["Log"][0]["ExitCode"], 3, "{h}");
    assert_eq!(h["Log"][0]["Output"], "out\nerr\n", "{h}");
    // The killed probe's exec dies.
    retry(DEADLINE, || {
        let s = e.inspect("slowprobe", "{{len .State.Health.Log}}")?;
        Ok((s.parse::<usize>()? >= 2).then_some(()))
    })?;
    let text = finish(ev)?;
    let seen: Vec<(String, String, String)> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("event JSON");
            let attr = |k: &str| {
                v["Actor"]["Attributes"][k]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            };
            (
                v["Action"].as_str().unwrap_or("").to_string(),
                attr("execID"),
                attr("exitCode"),
            )
        })
        .collect();
    let probe = "/bin/sh -c echo out; echo err >&2; sleep 30";
    let created = seen
        .iter()
        .find(|(a, _, _)| *a == format!("exec_create: {probe}"))
        .with_context(|| format!("no exec_create: {text}"))?;
    assert_eq!(created.1.len(), 64, "{text}");
    assert!(
        seen.iter()
            .any(|(a, x, _)| *a == format!("exec_start: {probe}") && *x == created.1),
        "{text}"
    );
    assert!(
        seen.iter()
            .any(|(a, x, c)| a == "exec_die" && *x == created.1 && c == "137"),
        "{text}"
    );
    assert!(
        seen.iter().any(|(a, _, _)| a == "health_status: unhealthy"),
        "{text}"
    );
    Ok(())
}

/// `POST /containers/create` with `body`; the status code and the JSON answer.
fn create_raw(e: &Env, body: &Value) -> Result<(String, Value)> {
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(e.d.socket())
        .args(["-X", "POST", "-H", "Content-Type: application/json", "-d"])
        .arg(body.to_string())
        .arg("http://berth/v1.44/containers/create")
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    let (json, code) = text.rsplit_once('\n').context("status")?;
    Ok((code.to_string(), serde_json::from_str(json)?))
}

/// A `docker save` archive of the fixture busybox layer with `config` as its image config.
fn image_archive(e: &Env, tag: &str, config: Value) -> Result<Vec<u8>> {
    image_archive_at(e, tag, config, "2023-11-14T22:13:20Z")
}

/// As [`image_archive`], created at `created` (RFC 3339).
fn image_archive_at(e: &Env, tag: &str, config: Value, created: &str) -> Result<Vec<u8>> {
    let layer = &e.fx.image("busybox:latest").layers[0];
    let url = format!("http://{}/v2/busybox/blobs/{}", e.fx.registry, layer.digest);
    let mut blob = Vec::new();
    ureq::get(&url)
        .call()?
        .into_reader()
        .read_to_end(&mut blob)?;
    let cfg = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "busybox"}],
    });
    let cfg = serde_json::to_vec(&cfg)?;
    let manifest = serde_json::to_vec(&json!([
        {"Config": "config.json", "RepoTags": [tag], "Layers": ["layer.tar.gz"]}
    ]))?;
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("config.json", &cfg),
        ("layer.tar.gz", &blob),
        ("manifest.json", &manifest),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data.as_slice())?;
    }
    Ok(tar.into_inner()?)
}

#[test]
fn image_healthcheck_is_merged_and_no_healthcheck_disables_it() -> Result<()> {
    let e = Env::new()?;
    let archive = image_archive(
        &e,
        "hcimage:test",
        json!({
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sleep", "1000"],
            "Healthcheck": {"Test": ["CMD-SHELL", "echo probed; test -f /tmp/ok"],
                            "Interval": 1_000_000_000i64, "Retries": 1},
        }),
    )?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("hc.tar");
    std::fs::write(&path, archive)?;
    e.ok(&["load", "-i", path.to_str().unwrap()])?;

    e.ok(&[
        "run",
        "-d",
        "--name",
        "fromimage",
        "--network",
        "none",
        "hcimage:test",
    ])?;
    assert_eq!(
        e.inspect("fromimage", "{{json .Config.Healthcheck}}")?,
        r#"{"Test":["CMD-SHELL","echo probed; test -f /tmp/ok"],"Interval":1000000000,"Retries":1}"#
    );
    wait_health(&e, "fromimage", "unhealthy")?;
    assert_eq!(health(&e, "fromimage")?["Log"][0]["Output"], "probed\n");
    e.ok(&["exec", "fromimage", "touch", "/tmp/ok"])?;
    wait_health(&e, "fromimage", "healthy")?;

    // Container fields override the image's, the rest is inherited.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "override",
        "--network",
        "none",
        "--health-interval",
        "1h",
        "hcimage:test",
    ])?;
    assert_eq!(
        e.inspect("override", "{{json .Config.Healthcheck}}")?,
        r#"{"Test":["CMD-SHELL","echo probed; test -f /tmp/ok"],"Interval":3600000000000,"Retries":1}"#
    );
    assert_eq!(
        e.inspect("override", "{{.State.Health.Status}}")?,
        "starting"
    );

    // --no-healthcheck: Test ["NONE"] (the other fields still merged, as dockerd does), no
    // State.Health, no "(health" in ps.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "nocheck",
        "--network",
        "none",
        "--no-healthcheck",
        "hcimage:test",
    ])?;
    assert_eq!(
        e.inspect("nocheck", "{{json .Config.Healthcheck}}")?,
        r#"{"Test":["NONE"],"Interval":1000000000,"Retries":1}"#
    );
    assert_eq!(e.inspect("nocheck", "{{json .State.Health}}")?, "null");
    let status = e.ok(&["ps", "--filter", "name=nocheck", "--format", "{{.Status}}"])?;
    assert!(!status.contains("health"), "{status}");
    assert_eq!(ps_names(&e, &["--filter", "health=none"])?, ["nocheck"]);

    // dockerd's validation (the CLI checks some of it itself: ask the API directly).
    for (hc, message) in [
        (
            json!({"Test": ["CMD", "true"], "Interval": 5}),
            "Interval in Healthcheck cannot be less than 1ms",
        ),
        (
            json!({"Test": ["CMD", "true"], "Retries": -1}),
            "Retries in Healthcheck cannot be negative",
        ),
        (
            json!({"Test": ["CMD", "true"], "StartInterval": 999}),
            "StartInterval in Healthcheck cannot be less than 1ms",
        ),
    ] {
        let (code, body) = create_raw(&e, &json!({"Image": "hcimage:test", "Healthcheck": hc}))?;
        assert_eq!(code, "400", "{body}");
        assert_eq!(body["message"], message, "{body}");
    }
    Ok(())
}

#[test]
fn health_monitors_resume_after_a_daemon_restart() -> Result<()> {
    let mut e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    e.ok(&[
        "run",
        "-d",
        "--name",
        "survivor",
        "--network",
        "none",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        &bb,
        "sh",
        "-c",
        "touch /tmp/ok; exec sleep 1000",
    ])?;
    wait_health(&e, "survivor", "healthy")?;
    e.d.restart()?;
    assert_eq!(e.inspect("survivor", "{{.State.Status}}")?, "running");
    e.ok(&["exec", "survivor", "rm", "/tmp/ok"])?;
    wait_health(&e, "survivor", "unhealthy")?;
    e.ok(&["exec", "survivor", "touch", "/tmp/ok"])?;
    wait_health(&e, "survivor", "healthy")?;
    Ok(())
}

#[test]
fn ps_filters_as_dockerd_applies_them() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let run = |name: &str, extra: &[&str]| -> Result<()> {
        let mut a = vec!["run", "-d", "--name", name, "--network", "none"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[&bb, "sleep", "1000"]);
        e.ok(&a).map(drop)
    };
    run("us1", &["-l", "a=1", "-l", "b=2"])?;
    run("us10", &["-l", "a=1"])?;
    e.ok(&[
        "create",
        "--name",
        "xus1",
        "--network",
        "none",
        "-v",
        "/data",
        &bb,
    ])?;
    let out = e.d.docker(&[
        "run",
        "--name",
        "done",
        "--network",
        "none",
        &bb,
        "sh",
        "-c",
        "exit 3",
    ])?;
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    let names = |args: &[&str]| ps_names(&e, args);
    assert_eq!(names(&["--filter", "name=^us1$"])?, ["us1"]);
    assert_eq!(names(&["--filter", "name=us1"])?, ["us10", "us1"]);
    assert_eq!(
        names(&["--filter", "name=^us1$", "--filter", "name=^us10$"])?,
        ["us10", "us1"]
    );
    assert_eq!(
        names(&["-a", "--filter", "name=^xus1$", "--filter", "name=^done$"])?,
        ["done", "xus1"]
    );
    assert!(names(&["-a", "--filter", "name=["])?.is_empty());
    assert_eq!(
        names(&["--filter", "label=a=1", "--filter", "label=b=2"])?,
        ["us1"]
    );
    assert_eq!(
        names(&["--filter", "label=a", "--filter", "label=b"])?,
        ["us1"]
    );
    assert!(names(&["--filter", "label=a=1", "--filter", "label=a=2"])?.is_empty());
    assert_eq!(
        names(&["--filter", "label=a", "--filter", "name=10"])?,
        ["us10"]
    );
    assert_eq!(names(&["--filter", "status=created"])?, ["xus1"]);
    assert_eq!(
        names(&["--filter", "status=created", "--filter", "status=exited"])?,
        ["done", "xus1"]
    );
    assert!(names(&["--filter", "exited=3"])?.is_empty());
    assert_eq!(names(&["-a", "--filter", "exited=3"])?, ["done"]);
    assert_eq!(names(&["--filter", "before=us10"])?, ["us1"]);
    assert_eq!(names(&["--filter", "since=us1"])?, ["us10"]);
    assert_eq!(names(&["-a", "--filter", "since=us10"])?, ["done", "xus1"]);
    assert_eq!(names(&["-n", "2"])?, ["done", "xus1"]);
    assert_eq!(names(&["-a", "--filter", "volume=/data"])?, ["xus1"]);
    assert_eq!(names(&["--filter", "network=none"])?, ["us10", "us1"]);
    assert_eq!(names(&["--filter", "is-task=false"])?, ["us10", "us1"]);
    assert!(names(&["-a", "--filter", "is-task=true"])?.is_empty());
    assert_eq!(
        names(&["-a", "--filter", &format!("ancestor={bb}")])?.len(),
        4
    );
    assert!(names(&["-a", "--filter", "ancestor=nosuchimage"])?.is_empty());
    let id = e.inspect("us10", "{{.Id}}")?;
    assert_eq!(
        names(&["--filter", &format!("id={}", &id[..12])])?,
        ["us10"]
    );
    assert!(names(&["--filter", &format!("id={}", &id[4..12])])?.is_empty());

    for (filter, message) in [
        ("status=foo", "Invalid filter 'status=foo'"),
        ("exited=x", "strconv.Atoi: parsing \"x\": invalid syntax"),
        ("is-task=maybe", "Invalid filter 'is-task=[maybe]'"),
        (
            "publish=80:80",
            "filter for 'publish' should not contain ':': 80:80",
        ),
        ("bogus=1", "Invalid filter 'bogus'"),
        ("since=nonexist", "no such container nonexist"),
    ] {
        let out = e.d.docker(&["ps", "--filter", filter])?;
        assert!(!out.status.success(), "{filter}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{filter}: {err}");
    }
    Ok(())
}

#[test]
fn volume_and_network_ls_filters_as_dockerd_applies_them() -> Result<()> {
    let e = Env::new()?;
    for v in ["ab", "abc"] {
        e.ok(&["volume", "create", v])?;
    }
    let vols = |args: &[&str]| -> Result<Vec<String>> {
        let mut a = vec!["volume", "ls", "-q"];
        a.extend_from_slice(args);
        Ok(e.ok(&a)?.lines().map(str::to_string).collect())
    };
    assert_eq!(vols(&["--filter", "name=^ab$"])?, ["ab"]);
    assert_eq!(
        vols(&["--filter", "name=^ab$", "--filter", "name=c$"])?,
        ["ab", "abc"]
    );
    assert!(vols(&["--filter", "name=["])?.is_empty());

    e.ok(&["network", "create", "--label", "team=a", "n1"])?;
    e.ok(&["network", "create", "n10"])?;
    let nets = |args: &[&str]| -> Result<Vec<String>> {
        let mut a = vec!["network", "ls", "--format", "{{.Name}}"];
        a.extend_from_slice(args);
        let mut v: Vec<String> = e.ok(&a)?.lines().map(str::to_string).collect();
        v.sort();
        Ok(v)
    };
    assert_eq!(nets(&["--filter", "name=^n1$"])?, ["n1"]);
    assert_eq!(
        nets(&["--filter", "name=^n1$", "--filter", "name=^host$"])?,
        ["host", "n1"]
    );
    assert_eq!(nets(&["--filter", "type=custom"])?, ["n1", "n10"]);
    assert_eq!(
        nets(&["--filter", "type=builtin"])?,
        ["bridge", "host", "none"]
    );
    assert_eq!(nets(&["--filter", "dangling=true"])?, ["n1", "n10"]);
    let id = e.ok(&["network", "inspect", "--format", "{{.Id}}", "n10"])?;
    assert_eq!(
        nets(&["--filter", &format!("id={}", &id.trim()[2..10])])?,
        ["n10"]
    );
    let bad = e.d.docker(&["network", "ls", "--filter", "type=bogus"])?;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid filter: 'type'='bogus'"),
        "{bad:?}"
    );
    Ok(())
}

#[test]
fn compose_healthcheck_turns_healthy_and_gates_depends_on() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(
        &file,
        format!(
            r#"version: "2.4"
services:
  web:
    image: {bb}
    command: ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 1000"]
    network_mode: none
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      retries: 60
  client:
    image: {bb}
    command: ["sleep", "1000"]
    network_mode: none
    depends_on:
      web:
        condition: service_healthy
"#
        ),
    )?;
    let compose = |args: &[&str]| -> Result<std::process::Output> {
        Ok(std::process::Command::new("docker-compose")
            .arg("-p")
            .arg("hcproj")
            .arg("-f")
            .arg(&file)
            .args(args)
            .env("DOCKER_HOST", e.d.host())
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null())
            .output()?)
    };
    let up = compose(&["up", "-d"])?;
    assert!(up.status.success(), "{up:?}\n{}", e.d.log());
    // `up` returns once client started, which it does only after web is healthy.
    assert_eq!(
        e.inspect("hcproj_web_1", "{{.State.Health.Status}}")?,
        "healthy"
    );
    assert_eq!(
        e.inspect("hcproj_client_1", "{{.State.Status}}")?,
        "running"
    );
    assert_eq!(
        e.inspect("hcproj_web_1", "{{json .Config.Healthcheck}}")?,
        r#"{"Test":["CMD","test","-f","/tmp/ready"],"Interval":1000000000,"Retries":60}"#
    );
    let down = compose(&["down"])?;
    assert!(down.status.success(), "{down:?}");
    Ok(())
}

#[test]
fn image_ls_label_before_and_since_filters() -> Result<()> {
    let e = Env::new()?;
    let dir = tempfile::tempdir()?;
    for (tag, labels, created) in [
        (
            "lbl-a:v1",
            json!({"team": "a", "tier": "db"}),
            "2023-01-01T00:00:00Z",
        ),
        ("lbl-b:v1", json!({"team": "b"}), "2024-01-01T00:00:00Z"),
    ] {
        let cfg = json!({"Cmd": ["sh"], "Labels": labels});
        let path = dir.path().join(format!("{tag}.tar"));
        std::fs::write(&path, image_archive_at(&e, tag, cfg, created)?)?;
        e.ok(&["load", "-i", path.to_str().unwrap()])?;
    }
    let repos = |args: &[&str]| -> Result<Vec<String>> {
        let mut a = vec!["images", "--format", "{{.Repository}}"];
        a.extend_from_slice(args);
        let mut v: Vec<String> = e.ok(&a)?.lines().map(str::to_string).collect();
        v.sort();
        Ok(v)
    };
    assert_eq!(repos(&["--filter", "label=team=a"])?, ["lbl-a"]);
    assert_eq!(repos(&["--filter", "label=team"])?, ["lbl-a", "lbl-b"]);
    assert_eq!(
        repos(&["--filter", "label=team", "--filter", "label=tier"])?,
        ["lbl-a"]
    );
    assert_eq!(repos(&["--filter", "since=lbl-a:v1"])?, ["lbl-b"]);
    assert_eq!(repos(&["--filter", "before=lbl-b:v1"])?, ["lbl-a"]);
    let bad = e.d.docker(&["images", "--filter", "before=nosuch:v1"])?;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("No such image: nosuch:v1"),
        "{bad:?}"
    );
    Ok(())
}

#[test]
fn prune_filters_until_and_not_label() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    for (name, label) in [("keepme", "keep=yes"), ("dropme", "keep=no")] {
        e.ok(&[
            "create",
            "--name",
            name,
            "-l",
            label,
            "--network",
            "none",
            &bb,
        ])?;
    }
    // Created within the last hour: `until=1h` keeps both.
    e.ok(&["container", "prune", "-f", "--filter", "until=1h"])?;
    assert_eq!(ps_names(&e, &["-a"])?, ["dropme", "keepme"]);
    e.ok(&["container", "prune", "-f", "--filter", "label!=keep=yes"])?;
    assert_eq!(ps_names(&e, &["-a"])?, ["keepme"]);
    let bad =
        e.d.docker(&["container", "prune", "-f", "--filter", "until=soon"])?;
    assert!(!bad.status.success(), "{bad:?}");

    e.ok(&["volume", "create", "--label", "keep=yes", "v-keep"])?;
    e.ok(&["volume", "create", "v-drop"])?;
    e.ok(&["volume", "prune", "-a", "-f", "--filter", "label!=keep"])?;
    assert_eq!(e.ok(&["volume", "ls", "-q"])?.trim(), "v-keep");
    Ok(())
}
