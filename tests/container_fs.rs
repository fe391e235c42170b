//! A container's filesystem with the real docker CLI: `docker diff`, `commit` (+ `--change`,
//! `-m`, `-a`) then `run`, `export`, `cp` both ways (running and stopped containers, a
//! volume, hostile tars), sizes (`ps -s`, `inspect --size`, `system df`) and
//! `GraphDriver.Data`, against a berthd this test starts and the fixture registry.

use std::io::Write;
use std::process::Stdio;

use anyhow::{Context, Result};
use berth_testkit::daemon::DockerEnv;

fn tar_list(bytes: &[u8]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in tar::Archive::new(bytes).entries()? {
        out.push(e?.path()?.display().to_string());
    }
    Ok(out)
}

#[test]
fn diff_commit_export_sizes_and_graph_driver() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let id = e
        .ok(&[
            "run",
            "-d",
            &bb,
            "sh",
            "-c",
            "echo hi > /newfile && echo x >> /etc/passwd && rm /bin/ls && sleep 300",
        ])?
        .trim()
        .to_string();
    berth_testkit::daemon::retry(std::time::Duration::from_secs(20), || {
        Ok(e.ok(&["diff", &id])?.contains("A /newfile").then_some(()))
    })?;
    // running: the same changes docker diff lists
    let diff = e.ok(&["diff", &id])?;
    let lines: Vec<&str> = diff.lines().collect();
    for want in [
        "C /bin",
        "D /bin/ls",
        "C /etc",
        "C /etc/passwd",
        "A /newfile",
    ] {
        assert!(lines.contains(&want), "{want} in {diff}");
    }
    assert!(
        lines.iter().position(|l| *l == "C /bin") < lines.iter().position(|l| *l == "D /bin/ls"),
        "parent first: {diff}"
    );

    // inspect --size and GraphDriver
    let v: serde_json::Value = serde_json::from_str(&e.ok(&["inspect", "--size", &id])?)?;
    let c = &v[0];
    assert!(c["SizeRw"].as_u64().unwrap_or(0) > 0, "{c}");
    assert!(c["SizeRootFs"].as_u64() > c["SizeRw"].as_u64(), "{c}");
    assert_eq!(c["GraphDriver"]["Name"], "overlay2");
    let upper = c["GraphDriver"]["Data"]["UpperDir"].as_str().unwrap_or("");
    assert!(std::path::Path::new(upper).join("newfile").is_file(), "{c}");
    let lower = c["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap_or("");
    assert!(
        lower.split(':').all(|l| std::path::Path::new(l).is_dir()),
        "{lower}"
    );
    // ps -s: "<rw> (virtual <rootfs>)"
    let ps = e.ok(&["ps", "-s", "--format", "{{.Size}}"])?;
    assert!(ps.contains("virtual"), "{ps}");
    assert!(!ps.starts_with("0B"), "{ps}");
    let df = e.ok(&["system", "df", "-v", "--format", "{{json .}}"])?;
    assert!(df.contains(&id[..12]), "{df}");

    // commit with changes, paused by default; the image runs with them
    let img = e
        .ok(&[
            "commit",
            "-c",
            r#"CMD ["cat", "/newfile"]"#,
            "-c",
            "ENV FOO=bar",
            "-c",
            "LABEL team=fs",
            "-c",
            "EXPOSE 8080",
            "-c",
            "WORKDIR /srv",
            "-m",
            "a message",
            "-a",
            "someone",
            &id,
            "fsops/committed:1",
        ])?
        .trim()
        .to_string();
    assert!(img.starts_with("sha256:"), "{img}");
    assert_eq!(
        e.inspect(&id, "{{.State.Status}}")?,
        "running",
        "unpaused after the commit"
    );
    assert_eq!(e.ok(&["run", "--rm", "fsops/committed:1"])?.trim(), "hi");
    let env = e.ok(&["run", "--rm", "fsops/committed:1", "env"])?;
    assert!(env.contains("FOO=bar"), "{env}");
    assert_eq!(
        e.ok(&["run", "--rm", "fsops/committed:1", "pwd"])?.trim(),
        "/srv"
    );
    let ls = e.ok(&["run", "--rm", "fsops/committed:1", "ls", "/bin/ls"]);
    assert!(ls.is_err(), "the deletion is in the layer: {ls:?}");
    let meta = e.ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Comment}}|{{.Author}}|{{.Config.Labels.team}}|{{json .Config.ExposedPorts}}|{{len .RootFS.Layers}}",
        "fsops/committed:1",
    ])?;
    let base_layers = e.ok(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        &bb,
    ])?;
    let n: usize = base_layers.trim().parse()?;
    assert_eq!(
        meta.trim(),
        format!("a message|someone|fs|{{\"8080/tcp\":{{}}}}|{}", n + 1)
    );
    let hist = e.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.Comment}}",
        "fsops/committed:1",
    ])?;
    assert_eq!(hist.lines().next(), Some("a message"), "{hist}");

    // a change Docker does not allow
    let bad = e.d.docker(&["commit", "-c", "RUN true", &id])?;
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("run is not a valid change command"), "{err}");

    // export: the merged rootfs, without the deleted file
    let out = e.d.docker_cmd(&["export", &id]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = tar_list(&out.stdout)?;
    assert!(names.iter().any(|n| n == "newfile"), "{names:?}");
    assert!(names.iter().any(|n| n == "etc/passwd"), "{names:?}");
    assert!(!names.iter().any(|n| n == "bin/ls"), "{names:?}");

    // stopped containers too
    e.ok(&["stop", "-t", "0", &id])?;
    assert!(e.ok(&["diff", &id])?.contains("A /newfile"));
    let out = e.d.docker_cmd(&["export", &id]).output()?;
    assert!(tar_list(&out.stdout)?.iter().any(|n| n == "newfile"));

    // import --change: the exported rootfs back as an image with a config
    let tar_path = tempfile::NamedTempFile::new()?;
    std::fs::write(tar_path.path(), &out.stdout)?;
    e.ok(&[
        "import",
        "-c",
        r#"CMD ["cat", "/newfile"]"#,
        "-c",
        "ENV IMPORTED=yes",
        "-m",
        "imported here",
        tar_path.path().to_str().context("utf8")?,
        "fsops/imported:1",
    ])?;
    assert_eq!(e.ok(&["run", "--rm", "fsops/imported:1"])?.trim(), "hi");
    assert_eq!(
        e.ok(&[
            "image",
            "inspect",
            "--format",
            "{{.Comment}}|{{index .Config.Env 0}}",
            "fsops/imported:1"
        ])?
        .trim(),
        "imported here|IMPORTED=yes"
    );
    let bad = e.d.docker(&[
        "import",
        "-c",
        "COPY a b",
        tar_path.path().to_str().context("utf8")?,
    ])?;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("copy is not a valid change command"), "{err}");
    e.ok(&["rmi", "fsops/committed:1", "fsops/imported:1"]).ok();
    Ok(())
}

#[test]
fn cp_both_ways_running_and_stopped_and_hostile_tars() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let vol = format!("fsops-cp-{}", std::process::id());
    let id = e
        .ok(&[
            "run",
            "-d",
            "-v",
            &format!("{vol}:/data"),
            &bb,
            "sleep",
            "300",
        ])?
        .trim()
        .to_string();
    let tmp = tempfile::tempdir()?;
    let local = tmp.path().join("local.txt");
    std::fs::write(&local, "from the host\n")?;
    let l = local.to_str().context("utf8")?;

    // host -> running container, into the rootfs and into the volume
    e.ok(&["cp", l, &format!("{id}:/tmp/")])?;
    assert_eq!(
        e.ok(&["exec", &id, "cat", "/tmp/local.txt"])?,
        "from the host\n"
    );
    e.ok(&["cp", l, &format!("{id}:/data/in-volume.txt")])?;
    assert_eq!(
        e.ok(&["exec", &id, "cat", "/data/in-volume.txt"])?,
        "from the host\n"
    );
    // -a: owned by the container's user
    e.ok(&["cp", "-a", l, &format!("{id}:/tmp/owned.txt")])?;
    assert_eq!(
        e.ok(&["exec", &id, "stat", "-c", "%u:%g", "/tmp/owned.txt"])?
            .trim(),
        "0:0"
    );

    // container -> host: a file, a directory, a directory's contents
    let out = tmp.path().join("hostname");
    e.ok(&[
        "cp",
        &format!("{id}:/etc/hostname"),
        out.to_str().context("utf8")?,
    ])?;
    assert_eq!(
        std::fs::read_to_string(&out)?,
        e.ok(&["exec", &id, "cat", "/etc/hostname"])?
    );
    let etc = tmp.path().join("etc-copy");
    e.ok(&["cp", &format!("{id}:/etc"), etc.to_str().context("utf8")?])?;
    assert!(etc.join("passwd").is_file());
    let contents = tmp.path().join("contents");
    std::fs::create_dir(&contents)?;
    e.ok(&[
        "cp",
        &format!("{id}:/etc/."),
        contents.to_str().context("utf8")?,
    ])?;
    assert!(contents.join("passwd").is_file());
    let from_vol = tmp.path().join("from-vol.txt");
    e.ok(&[
        "cp",
        &format!("{id}:/data/in-volume.txt"),
        from_vol.to_str().context("utf8")?,
    ])?;
    assert_eq!(std::fs::read_to_string(&from_vol)?, "from the host\n");

    // errors as Docker gives them
    let missing = e.d.docker(&[
        "cp",
        &format!("{id}:/nope"),
        tmp.path().to_str().context("utf8")?,
    ])?;
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("Could not find the file /nope in container"),
        "{err}"
    );

    // hostile tars on stdin: a symlink to / then a file through it, and a ../ entry
    let escape = format!("berth-cp-escape-{}", std::process::id());
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "root", "/")?;
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, format!("root/tmp/{escape}"), &b"bad"[..])?;
    let symlink_tar = b.into_inner()?;
    let mut dotdot = Vec::new();
    {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(3);
        h.set_mode(0o644);
        let name = format!("../../../../../../tmp/{escape}-dd");
        h.as_gnu_mut().context("gnu")?.name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        dotdot.extend_from_slice(h.as_bytes());
        let mut block = [0u8; 512];
        block[..3].copy_from_slice(b"bad");
        dotdot.extend_from_slice(&block);
        dotdot.extend_from_slice(&[0u8; 1024]);
    }
    for (tarball, should_fail) in [(symlink_tar, false), (dotdot, true)] {
        let mut child =
            e.d.docker_cmd(&["cp", "-", &format!("{id}:/tmp")])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
        child.stdin.take().context("stdin")?.write_all(&tarball)?;
        let out = child.wait_with_output()?;
        assert_eq!(
            !out.status.success(),
            should_fail,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !std::path::Path::new("/tmp").join(&escape).exists(),
        "nothing on the host"
    );
    assert!(!std::path::Path::new("/tmp")
        .join(format!("{escape}-dd"))
        .exists());
    // the symlinked write landed inside the container
    assert_eq!(
        e.ok(&["exec", &id, "cat", &format!("/tmp/{escape}")])?,
        "bad"
    );

    // a stopped container: both ways, the volume too
    e.ok(&["stop", "-t", "0", &id])?;
    let back = tmp.path().join("back.txt");
    e.ok(&[
        "cp",
        &format!("{id}:/tmp/local.txt"),
        back.to_str().context("utf8")?,
    ])?;
    assert_eq!(std::fs::read_to_string(&back)?, "from the host\n");
    e.ok(&["cp", l, &format!("{id}:/stopped.txt")])?;
    let back_vol = tmp.path().join("back-vol.txt");
    e.ok(&[
        "cp",
        &format!("{id}:/data/in-volume.txt"),
        back_vol.to_str().context("utf8")?,
    ])?;
    assert_eq!(std::fs::read_to_string(&back_vol)?, "from the host\n");
    e.ok(&["start", &id])?;
    assert_eq!(
        e.ok(&["exec", &id, "cat", "/stopped.txt"])?,
        "from the host\n"
    );
    assert!(
        !std::process::Command::new("sh")
            .args(["-c", "mount | grep -q cproot"])
            .status()?
            .success(),
        "no temporary rootfs mount left"
    );
    e.ok(&["rm", "-f", &id])?;
    e.ok(&["volume", "rm", &vol])?;
    Ok(())
}
