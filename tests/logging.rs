//! Log drivers and rotation, and berthd's daemon configuration file, through the real
//! docker CLI against a berthd this test starts (expected values are dockerd 20.10's).

use anyhow::{Context, Result};
use berth_testkit::daemon::{workspace_binary, Berthd, DockerEnv};

/// The lines `docker logs` returns.
fn log_lines(e: &DockerEnv, args: &[&str]) -> Result<Vec<String>> {
    let mut a = vec!["logs"];
    a.extend_from_slice(args);
    Ok(e.ok(&a)?.lines().map(String::from).collect())
}

fn files_named(dir: &std::path::Path, prefix: &str) -> Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    Ok(v)
}

#[test]
fn json_file_rotation_keeps_the_newest_lines_in_bounded_files() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    let id = e.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--log-opt",
        "max-size=10k",
        "--log-opt",
        "max-file=2",
        &bb,
        "sh",
        "-c",
        "seq 1 5000",
    ])?;
    let id = id.trim();
    e.ok(&["wait", id])?;
    assert_eq!(
        e.inspect(id, "{{json .HostConfig.LogConfig}}")?,
        r#"{"Type":"json-file","Config":{"max-file":"2","max-size":"10k"}}"#
    );
    let log_path = e.inspect(id, "{{.LogPath}}")?;
    let dir = std::path::Path::new(&log_path)
        .parent()
        .context("log dir")?;
    let name = std::path::Path::new(&log_path)
        .file_name()
        .context("log name")?
        .to_string_lossy()
        .into_owned();
    let files = files_named(dir, &name)?;
    assert_eq!(files, [name.clone(), format!("{name}.1")], "{files:?}");
    for f in &files {
        let len = std::fs::metadata(dir.join(f))?.len();
        assert!(len <= 10_000, "{f}: {len} bytes");
    }
    let lines = log_lines(&e, &[id])?;
    let n: Vec<u32> = lines.iter().map(|l| l.parse()).collect::<Result<_, _>>()?;
    assert!(n.len() > 100 && n.len() < 5000, "{} lines kept", n.len());
    let first = n[0];
    assert_eq!(
        n,
        (first..=5000).collect::<Vec<_>>(),
        "the newest lines, in order"
    );
    assert_eq!(
        log_lines(&e, &["--tail", "3", id])?,
        ["4998", "4999", "5000"]
    );
    Ok(())
}

#[test]
fn follow_reads_across_rotations_in_order() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    for driver in ["json-file", "local"] {
        // Enough files that nothing is dropped: every line must come out once, in order.
        let id = e.ok(&[
            "run",
            "-d",
            "--network",
            "none",
            "--log-driver",
            driver,
            "--log-opt",
            "max-size=2k",
            "--log-opt",
            "max-file=100",
            &bb,
            "sh",
            "-c",
            "sleep 1; seq 1 2000",
        ])?;
        let id = id.trim();
        let lines = log_lines(&e, &["--follow", id])?;
        let want: Vec<String> = (1..=2000).map(|i| i.to_string()).collect();
        assert_eq!(lines, want, "{driver}");
        let since = log_lines(&e, &["--since", "2000-01-01T00:00:00Z", "--tail", "2", id])?;
        assert_eq!(since, ["1999", "2000"], "{driver}");
    }
    Ok(())
}

#[test]
fn local_and_none_drivers_and_refused_configs() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    // local: bytes kept exactly, read back by docker logs; inspect shows it as given.
    let id = e.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--log-driver",
        "local",
        &bb,
        "sh",
        "-c",
        r#"printf 'a\001\377b\n'; echo second"#,
    ])?;
    let id = id.trim();
    e.ok(&["wait", id])?;
    assert_eq!(
        e.inspect(id, "{{json .HostConfig.LogConfig}}")?,
        r#"{"Type":"local","Config":{}}"#
    );
    let out = e.d.docker(&["logs", id])?;
    assert_eq!(out.stdout, b"a\x01\xffb\nsecond\n");

    // none: nothing kept; docker logs answers dockerd's error.
    let id = e.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--log-driver",
        "none",
        &bb,
        "echo",
        "hi",
    ])?;
    let id = id.trim();
    e.ok(&["wait", id])?;
    let out = e.d.docker(&["logs", id])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("configured logging driver does not support reading"),
        "{out:?}"
    );

    for (args, want) in [
        (
            vec!["--log-driver", "nosuch"],
            "error looking up logging plugin nosuch: plugin \"nosuch\" not found",
        ),
        (
            vec!["--log-opt", "bogus=1"],
            "unknown log opt 'bogus' for json-file log driver",
        ),
        (
            vec!["--log-driver", "local", "--log-opt", "bogus=1"],
            "unknown log opt 'bogus' for log driver local",
        ),
        (vec!["--log-opt", "max-size=abc"], "invalid size: 'abc'"),
    ] {
        let mut a = vec!["create"];
        a.extend(args.iter().copied());
        a.extend([bb.as_str(), "true"]);
        let out = e.d.docker(&a)?;
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    Ok(())
}

#[test]
fn daemon_json_sets_log_defaults_and_conflicts_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("daemon.json");
    std::fs::write(
        &cfg,
        r#"{"log-driver": "json-file", "log-opts": {"max-size": "5k", "max-file": "3"}}"#,
    )?;
    // Conflict: berthd exits non-zero naming the key, before it starts anything.
    let out = std::process::Command::new(workspace_binary("berthd")?)
        .args([
            "--config-file",
            cfg.to_str().context("path")?,
            "--log-driver",
            "local",
        ])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the following directives are specified both as a flag and in the configuration file: log-driver"),
        "{err}"
    );
    // Unknown keys too.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"bogus-key": 1}"#)?;
    let out = std::process::Command::new(workspace_binary("berthd")?)
        .args(["--config-file", bad.to_str().context("path")?])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("the following directives don't match any configuration option: bogus-key"));
    // A missing file given explicitly is an error.
    let out = std::process::Command::new(workspace_binary("berthd")?)
        .args(["--config-file", "/nonexistent/daemon.json"])
        .output()?;
    assert!(!out.status.success());

    // The file's defaults apply to containers that give no LogConfig.
    std::fs::write(
        &cfg,
        r#"{"log-driver": "local", "log-opts": {"max-size": "5k", "max-file": "3"}}"#,
    )?;
    let e = DockerEnv {
        fx: berth_testkit::Fixture::from_env()?,
        d: Berthd::start(&["--config-file", cfg.to_str().context("path")?])?,
    };
    assert_eq!(
        e.ok(&["info", "--format", "{{.LoggingDriver}}"])?.trim(),
        "local"
    );
    let bb = e.img("busybox:latest");
    let id = e.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        &bb,
        "sh",
        "-c",
        "seq 1 3000",
    ])?;
    let id = id.trim();
    e.ok(&["wait", id])?;
    assert_eq!(
        e.inspect(id, "{{json .HostConfig.LogConfig}}")?,
        r#"{"Type":"local","Config":{"max-file":"3","max-size":"5k"}}"#
    );
    // dockerd shows no LogPath for the local driver.
    assert_eq!(e.inspect(id, "{{.LogPath}}")?, "");
    let dir =
        e.d.data_root()
            .join("runtime/containers")
            .join(id)
            .join("local-logs");
    let files = files_named(&dir, "container.log")?;
    assert_eq!(
        files,
        ["container.log", "container.log.1.gz", "container.log.2.gz"],
        "local compresses rotated files by default"
    );
    let lines = log_lines(&e, &[id])?;
    assert_eq!(lines.last().map(String::as_str), Some("3000"));
    let n: Vec<u32> = lines.iter().map(|l| l.parse()).collect::<Result<_, _>>()?;
    assert_eq!(n, (n[0]..=3000).collect::<Vec<_>>());
    // A driver other than the default one does not take the default's options.
    let id = e.ok(&["create", "--log-driver", "json-file", &bb, "true"])?;
    assert_eq!(
        e.inspect(id.trim(), "{{json .HostConfig.LogConfig}}")?,
        r#"{"Type":"json-file","Config":{}}"#
    );
    Ok(())
}
