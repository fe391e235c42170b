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
