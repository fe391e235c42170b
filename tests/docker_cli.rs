//! The stock docker CLI against a berthd this test starts.

use anyhow::Result;
use berth_testkit::daemon::Berthd;

#[test]
fn version_and_info_answer() -> Result<()> {
    let d = Berthd::start(&[])?;
    let v = d.docker_ok(&[
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.Os}}",
    ])?;
    assert_eq!(v.trim(), "1.50 linux");
    let info = d.docker_ok(&["info", "--format", "{{.DockerRootDir}}"])?;
    assert_eq!(info.trim(), d.data_root().display().to_string());
    // SystemTime is the daemon's clock (the CLI parses it as RFC 3339).
    let t = d.docker_ok(&["info", "--format", "{{.SystemTime}}"])?;
    let t = chrono::DateTime::parse_from_rfc3339(t.trim())?;
    let skew = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds();
    assert!(skew.abs() < 600, "SystemTime {t} is not this host's clock");
    // ID: a UUID made once per data root, the same after a restart.
    let id = d
        .docker_ok(&["info", "--format", "{{.ID}}"])?
        .trim()
        .to_string();
    let parts: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12], "engine id {id:?}");
    let mut d = d;
    d.restart()?;
    assert_eq!(d.docker_ok(&["info", "--format", "{{.ID}}"])?.trim(), id);
    Ok(())
}

#[test]
fn volumes_create_list_inspect_remove() -> Result<()> {
    let d = Berthd::start(&[])?;
    let name = d.docker_ok(&["volume", "create", "--label", "team=a", "data1"])?;
    assert_eq!(name.trim(), "data1");
    let ls = d.docker_ok(&["volume", "ls", "--format", "{{.Name}} {{.Driver}}"])?;
    assert_eq!(ls.trim(), "data1 local");
    let mp = d.docker_ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", "data1"])?;
    assert!(
        std::path::Path::new(mp.trim()).is_dir(),
        "mountpoint {mp} exists"
    );
    let by_label = d.docker_ok(&["volume", "ls", "-q", "--filter", "label=team=b"])?;
    assert_eq!(by_label.trim(), "");

    // A restart keeps it.
    let mut d = d;
    d.restart()?;
    let ls = d.docker_ok(&["volume", "ls", "-q"])?;
    assert_eq!(ls.trim(), "data1");

    d.docker_ok(&["volume", "rm", "data1"])?;
    assert!(!std::path::Path::new(mp.trim()).exists());
    let missing = d.docker(&["volume", "inspect", "data1"])?;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such volume"));
    Ok(())
}

#[test]
fn bad_input_gets_docker_shaped_errors() -> Result<()> {
    let d = Berthd::start(&[])?;
    let bad = d.docker(&["volume", "create", "bad/name"])?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid characters"));
    assert_eq!(d.docker_ok(&["volume", "ls", "-q"])?.trim(), "");

    // Malformed JSON straight at the socket: 400 with {"message": ...}.
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(d.socket())
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            "{not json",
            "http://berth/v1.50/volumes/create",
        ])
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    let (body, code) = text.rsplit_once('\n').expect("status line");
    assert_eq!(code, "400");
    let v: serde_json::Value = serde_json::from_str(body)?;
    assert!(v["message"].as_str().unwrap_or("").contains("invalid JSON"));
    Ok(())
}

/// `curl` against the daemon's socket: (HTTP status, body as JSON or Null).
fn curl(
    d: &Berthd,
    method: &str,
    path: &str,
    body: Option<&std::path::Path>,
) -> Result<(String, serde_json::Value)> {
    let mut c = std::process::Command::new("curl");
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
        c.args(["-H", "Content-Type: application/x-tar", "--data-binary"])
            .arg(format!("@{}", b.display()));
    }
    let out = c.arg(format!("http://berth{path}")).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    Ok((
        code.to_string(),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    ))
}

#[test]
fn unpadded_layer_imports_and_underscore_names_work() -> Result<()> {
    let d = Berthd::start(&[])?;
    let dir = tempfile::tempdir()?;
    // A layer whose stream ends right after the last file's data, as umoci 0.4.7 writes.
    let data = b"hello from an unpadded layer\n";
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append_data(&mut h, "www/index.html", &data[..])?;
    let full = b.into_inner()?;
    let cut = full.len() - 1024 - 512 + data.len();
    let layer = dir.path().join("layer.tar");
    std::fs::write(&layer, &full[..cut])?;

    // Docker's grammar allows `_` (docker-py names its test images `dockerpytest_<hex>`);
    // a repository without a tag is tagged `latest`, as dockerd does.
    d.docker_ok(&["import", layer.to_str().unwrap(), "dockerpytest_7c8b"])?;
    let tags = d.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])?;
    assert_eq!(tags.trim(), "dockerpytest_7c8b:latest");
    let py = format!(
        "import docker\n\
         c = docker.DockerClient(base_url='{}')\n\
         assert c.images.get('dockerpytest_7c8b').tag('dockerpytest_7c8b', 'py_1')\n\
         print(sorted(c.images.get('dockerpytest_7c8b:py_1').tags))\n",
        d.host()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &py])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout)?.trim(),
        "['dockerpytest_7c8b:latest', 'dockerpytest_7c8b:py_1']"
    );
    Ok(())
}

#[test]
fn bad_image_input_is_a_4xx_with_docker_messages() -> Result<()> {
    let d = Berthd::start(&[])?;
    let dir = tempfile::tempdir()?;
    let garbage = dir.path().join("garbage");
    let bytes: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, bytes)?;
    let empty = dir.path().join("empty.tar");
    std::fs::write(&empty, tar::Builder::new(Vec::new()).into_inner()?)?;

    // A corrupt or empty `docker load` archive, a corrupt import: the client's fault.
    for (path, file, want) in [
        ("/v1.41/images/load", &garbage, "invalid tar archive"),
        ("/v1.41/images/load", &empty, "no manifest.json"),
        (
            "/v1.41/images/create?fromSrc=-&repo=imp",
            &garbage,
            "unpacking failed",
        ),
    ] {
        let (code, body) = curl(&d, "POST", path, Some(file))?;
        assert_eq!(code, "400", "{path}: {body}");
        let msg = body["message"].as_str().unwrap_or("");
        assert!(msg.contains(want), "{path}: {msg}");
        assert!(msg.is_ascii(), "{path}: raw bytes in {msg:?}");
    }
    let out = d
        .docker_cmd(&["load", "-i", garbage.to_str().unwrap()])
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid tar archive"));

    // A name that is no reference: 400 "invalid reference format" for inspect, history,
    // remove and tag (dockerd 20.10 answers all four so); a valid one naming nothing: 404.
    for (method, path) in [
        ("GET", "/v1.41/images/Bad%20Ref/json"),
        ("GET", "/v1.41/images/Bad%20Ref/history"),
        ("DELETE", "/v1.41/images/Bad%20Ref"),
        ("POST", "/v1.41/images/Bad%20Ref/tag?repo=x"),
    ] {
        let (code, body) = curl(&d, method, path, None)?;
        assert_eq!(code, "400", "{method} {path}: {body}");
        let msg = body["message"].as_str().unwrap_or("");
        assert!(msg.contains("invalid reference format"), "{path}: {msg}");
    }
    for (method, path) in [
        ("GET", "/v1.41/images/nosuch/json"),
        ("DELETE", "/v1.41/images/nosuch"),
        ("POST", "/v1.41/images/nosuch/tag?repo=x"),
    ] {
        let (code, body) = curl(&d, method, path, None)?;
        assert_eq!(code, "404", "{method} {path}: {body}");
        assert!(body["message"]
            .as_str()
            .unwrap_or("")
            .contains("No such image"));
    }
    Ok(())
}

#[test]
fn network_create_fields_are_shown_back_and_survive_a_restart() -> Result<()> {
    let mut d = Berthd::start(&[])?;
    d.docker_ok(&[
        "network",
        "create",
        "--label",
        "team=a",
        "--opt",
        "com.docker.network.driver.mtu=1400",
        "--attachable",
        "kept",
    ])?;
    let fmt = "{{json .Labels}} {{json .Options}} {{.Attachable}} {{.IPAM.Driver}} {{.Created}}";
    let before = d.docker_ok(&["network", "inspect", "--format", fmt, "kept"])?;
    assert!(
        before
            .starts_with(r#"{"team":"a"} {"com.docker.network.driver.mtu":"1400"} true default "#),
        "{before}"
    );
    assert!(!before.contains("0001-01-01"), "{before}");
    let listed = d.docker_ok(&[
        "network",
        "ls",
        "--filter",
        "label=team=a",
        "--format",
        "{{.Name}}",
    ])?;
    assert_eq!(listed.trim(), "kept");
    d.restart()?;
    let after = d.docker_ok(&["network", "inspect", "--format", fmt, "kept"])?;
    assert_eq!(after, before);
    // An option berth's bridge driver does not implement is refused, not dropped.
    let bad = d.docker(&[
        "network",
        "create",
        "--opt",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "x",
    ])?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("enable_ip_masquerade"));
    d.docker_ok(&["network", "rm", "kept"])?;
    Ok(())
}

/// `docker rmi` of an image a container uses gives dockerd's conflicts (its
/// daemon/images/image_delete.go): a reference needs force, an ID used by a stopped
/// container needs force, one used by a running container cannot be forced.
#[test]
fn rmi_of_an_image_in_use_gives_dockerds_conflicts() -> Result<()> {
    let e = berth_testkit::daemon::DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let id = e.ok(&["image", "inspect", "--format", "{{.Id}}", &bb])?;
    let short = id.trim().trim_start_matches("sha256:")[..12].to_string();
    let c = e.ok(&["create", "--network", "none", &bb, "sleep", "60"])?;
    let c = c.trim()[..12].to_string();

    let out = e.d.docker(&["rmi", &bb])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "conflict: unable to remove repository reference \"{bb}\" (must force) - container {c} is using its referenced image {short}"
        )),
        "{err}"
    );
    let out = e.d.docker(&["rmi", &short])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "conflict: unable to delete {short} (must be forced) - image is being used by stopped container {c}"
        )),
        "{err}"
    );
    e.ok(&["start", &c])?;
    let out = e.d.docker(&["rmi", "-f", &short])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "conflict: unable to delete {short} (cannot be forced) - image is being used by running container {c}"
        )),
        "{err}"
    );
    // Still there, still tagged.
    e.ok(&["image", "inspect", &bb])?;
    e.ok(&["rm", "-f", &c])?;
    e.ok(&["rmi", &bb])?;
    Ok(())
}
