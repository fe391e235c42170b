//! Failed starts and byte-exact streams through the real docker CLI, against a berthd this
//! test starts: what dockerd 20.10 gives for the same commands (exit codes 127/126, the
//! runtime's message, `created` with ExitCode 127), every byte value and several MiB both
//! ways on every stream path, and no output lost when a process exits at once.

use std::io::Write;
use std::process::{Output, Stdio};

use anyhow::{Context, Result};
use berth_testkit::daemon::DockerEnv;

/// `docker ARGS` with `input` on its stdin; waits for it.
fn docker_with_input(e: &DockerEnv, args: &[&str], input: &[u8]) -> Result<Output> {
    let mut child =
        e.d.docker_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn docker {}", args.join(" ")))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = input.to_vec();
    // Written from a thread: the output is read meanwhile, so neither side blocks.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every byte value, then a pseudo-random MiB-sized tail (deterministic).
fn all_bytes(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).collect();
    let mut x: u32 = 0x2545_f491;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v
}

#[test]
fn failed_starts_exit_127_or_126_with_the_runtimes_message() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    // dockerd 20.10: `docker: Error response from daemon: ... exec: "nosuchcmd": executable
    // file not found in $PATH ...`, exit 127; the --rm container is gone.
    let out =
        e.d.docker(&["run", "--rm", "--network", "none", &bb, "nosuchcmd"])?;
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(r#"exec: "nosuchcmd": executable file not found in $PATH"#),
        "{}",
        text(&out.stderr)
    );
    // A directory: `exec: "/etc": permission denied`, 126.
    let out =
        e.d.docker(&["run", "--rm", "--network", "none", &bb, "/etc"])?;
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(r#"exec: "/etc": permission denied"#),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(e.ok(&["ps", "-aq"])?.trim(), "", "--rm removed both");

    // Detached: the start fails the same way; the container stays `created` with 127 and
    // the error.
    let out =
        e.d.docker(&["run", "-d", "--name", "topsy", &bb, "/bin/topsy"])?;
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("stat /bin/topsy: no such file or directory"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        e.inspect(
            "topsy",
            "{{.State.Status}} {{.State.ExitCode}} {{.State.Running}}"
        )?,
        "created 127 false"
    );
    let err = e.inspect("topsy", "{{.State.Error}}")?;
    assert!(
        err.contains(r#"exec: "/bin/topsy": stat /bin/topsy"#),
        "{err}"
    );
    // `docker start` of it fails again, as a 400 with the message.
    let out = e.d.docker(&["start", "topsy"])?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no such file or directory"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

#[test]
fn exec_start_failures_exit_126_with_the_message_on_stdout() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&[
        "run",
        "-d",
        "--name",
        "box1",
        "--network",
        "none",
        &bb,
        "sleep",
        "1000",
    ])?;
    // dockerd 20.10 prints each on stdout (with CRLF) and exits 126.
    let cases: [(&[&str], &str); 4] = [
        (
            &["exec", "box1", "nosuchcmd"],
            r#"exec: "nosuchcmd": executable file not found in $PATH"#,
        ),
        (
            &["exec", "-t", "box1", "nosuchcmd"],
            r#"exec: "nosuchcmd": executable file not found in $PATH"#,
        ),
        (
            &["exec", "-w", "/nope", "box1", "true"],
            r#"chdir to cwd ("/nope") set in config.json failed: no such file or directory"#,
        ),
        (
            &["exec", "-u", "nobody2", "box1", "true"],
            "unable to find user nobody2: no matching entries in passwd file",
        ),
    ];
    for (args, want) in cases {
        let out = e.d.docker(args)?;
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(126),
            "{args:?}: {stdout}{}",
            text(&out.stderr)
        );
        assert!(stdout.contains(want), "{args:?}: {stdout:?}");
        assert!(stdout.ends_with("\r\n"), "{args:?}: {stdout:?}");
    }
    // Over the API: a 101, then one stdout frame with the message; exec inspect has 126.
    let host = e.d.host();
    let sock = host.trim_start_matches("unix://");
    let created = std::process::Command::new("curl")
        .args([
            "-s",
            "--unix-socket",
            sock,
            "-XPOST",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"Cmd":["nosuchcmd"],"AttachStdout":true,"AttachStderr":true}"#,
            "http://x/containers/box1/exec",
        ])
        .output()?;
    let exec: serde_json::Value = serde_json::from_slice(&created.stdout)?;
    let exec_id = exec["Id"].as_str().context("exec id")?.to_string();
    let started = std::process::Command::new("curl")
        .args([
            "-s",
            "--unix-socket",
            sock,
            "-XPOST",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: tcp",
            "-d",
            "{}",
            "--max-time",
            "20",
            &format!("http://x/exec/{exec_id}/start"),
        ])
        .output()?;
    // One stdout frame: header, message, CRLF.
    let body = started.stdout;
    assert_eq!(body.first(), Some(&1u8), "{:?}", text(&body));
    assert!(body.ends_with(b"\r\n"), "{:?}", text(&body));
    let inspected = std::process::Command::new("curl")
        .args([
            "-s",
            "--unix-socket",
            sock,
            &format!("http://x/exec/{exec_id}/json"),
        ])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&inspected.stdout)?;
    assert_eq!(v["ExitCode"], 126, "{v}");
    assert_eq!(v["Running"], false, "{v}");
    Ok(())
}

#[test]
fn run_streams_are_byte_exact_both_ways() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let run = ["run", "--rm", "--network", "none"];
    // Every byte value out, non-tty, stdout and stderr apart.
    let out = e.d.docker(
        &[
            &run[..],
            &[
                &bb,
                "sh",
                "-c",
                r#"i=0; while [ $i -lt 256 ]; do printf "\\$(printf %o $i)"; i=$((i+1)); done; printf "\376\377err" >&2"#,
            ],
        ]
        .concat(),
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, (0..=255u8).collect::<Vec<_>>());
    assert_eq!(out.stderr, b"\xfe\xfferr");

    // Several MiB in: `wc -c` counts them all; `cat` gives them back unchanged.
    let big = all_bytes(4 << 20);
    let out = docker_with_input(&e, &[&run[..], &["-i", &bb, "wc", "-c"]].concat(), &big)?;
    assert_eq!(text(&out.stdout).trim(), (4 << 20).to_string());
    let out = docker_with_input(&e, &[&run[..], &["-i", &bb, "cat"]].concat(), &big)?;
    assert_eq!(out.stdout.len(), big.len(), "{}", text(&out.stderr));
    assert!(out.stdout == big, "cat changed the bytes");
    // Several MiB out on both streams at once, apart.
    let out = e.d.docker(
        &[
            &run[..],
            &[
                &bb,
                "sh",
                "-c",
                "head -c 3145728 /dev/zero | tr '\\0' o; head -c 2097152 /dev/zero | tr '\\0' e >&2",
            ],
        ]
        .concat(),
    )?;
    assert_eq!(out.stdout.len(), 3 << 20);
    assert!(out.stdout.iter().all(|b| *b == b'o'));
    assert_eq!(out.stderr.len(), 2 << 20);
    assert!(out.stderr.iter().all(|b| *b == b'e'));

    // With a tty, output is raw: the pty turns \n into \r\n, nothing else changes.
    let out = e.d.docker(
        &[
            &run[..],
            &["-t", &bb, "sh", "-c", r#"printf "\001\377\200x""#],
        ]
        .concat(),
    )?;
    assert_eq!(out.stdout, b"\x01\xff\x80x");

    // `docker logs` of the same bytes is what Go's JSON makes of them (invalid UTF-8 as
    // U+FFFD), as with dockerd's json-file.
    let id = e.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        &bb,
        "sh",
        "-c",
        r#"printf "\000\001\377\n""#,
    ])?;
    let id = id.trim();
    e.ok(&["wait", id])?;
    let out = e.d.docker(&["logs", id])?;
    assert_eq!(out.stdout, b"\x00\x01\xef\xbf\xbd\n");
    Ok(())
}

#[test]
fn attach_and_exec_streams_are_byte_exact() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "box1",
        "--network",
        "none",
        &bb,
        "sleep",
        "1000",
    ])?;
    let big = all_bytes(3 << 20);
    // Exec without a tty: stdin in, stdout and stderr apart.
    let out = docker_with_input(&e, &["exec", "-i", "box1", "cat"], &big)?;
    assert!(
        out.stdout == big,
        "exec cat changed {} bytes",
        out.stdout.len()
    );
    let out = docker_with_input(&e, &["exec", "-i", "box1", "sh", "-c", "cat >&2"], &big)?;
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr == big,
        "exec cat >&2 changed {} bytes",
        out.stderr.len()
    );
    let out = docker_with_input(&e, &["exec", "-i", "box1", "wc", "-c"], &big)?;
    assert_eq!(text(&out.stdout).trim(), (3 << 20).to_string());

    // Attach to a running container, stdin and stdout through the container's own pipes.
    let id = e
        .ok(&[
            "run",
            "-d",
            "-i",
            "--network",
            "none",
            &bb,
            "sh",
            "-c",
            "cat; echo done >&2",
        ])?
        .trim()
        .to_string();
    let out = docker_with_input(&e, &["attach", &id], &big)?;
    assert!(
        out.stdout == big,
        "attach changed {} bytes",
        out.stdout.len()
    );
    assert_eq!(text(&out.stderr), "done\n");
    Ok(())
}

#[test]
fn short_lived_output_is_never_lost() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    for i in 0..20 {
        let out = e.d.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-t",
            &bb,
            "sh",
            "-c",
            "echo out",
        ])?;
        assert_eq!(
            text(&out.stdout),
            "out\r\n",
            "run -t {i}: {}",
            text(&out.stderr)
        );
        let out =
            e.d.docker(&["run", "--rm", "--network", "none", &bb, "echo", "out"])?;
        assert_eq!(text(&out.stdout), "out\n", "run {i}: {}", text(&out.stderr));
    }
    e.ok(&[
        "run",
        "-d",
        "--name",
        "box1",
        "--network",
        "none",
        &bb,
        "sleep",
        "1000",
    ])?;
    for i in 0..20 {
        let want = format!("hi{i}\n");
        let out = e.d.docker(&["exec", "box1", "echo", &format!("hi{i}")])?;
        assert_eq!(text(&out.stdout), want, "exec {i}: {}", text(&out.stderr));
        let out =
            e.d.docker(&["exec", "-t", "box1", "echo", &format!("hi{i}")])?;
        assert_eq!(text(&out.stdout), format!("hi{i}\r\n"), "exec -t {i}");
        let out =
            e.d.docker(&["exec", "box1", "sh", "-c", "echo err >&2; exit 3"])?;
        assert_eq!(
            (out.status.code(), text(&out.stderr)),
            (Some(3), "err\n".into())
        );
    }
    // `docker start -a` of a created container gets its output from the first byte.
    e.ok(&[
        "create",
        "--name",
        "later",
        "--network",
        "none",
        &bb,
        "echo",
        "later-out",
    ])?;
    let out = e.d.docker(&["start", "-a", "later"])?;
    assert_eq!(text(&out.stdout), "later-out\n");
    Ok(())
}

/// docker-py's low-level client against berthd: a failed start is an `APIError` with
/// status 400 and the runtime's message, and leaves the container `created` with 127; a
/// failed exec has exit code 126. (docker-py reads an exec's output from the raw socket
/// under its HTTP buffer, so output that arrives with the 101 is lost to it whatever the
/// daemon does; dockerd and berth both start the process after the upgrade.)
#[test]
fn docker_py_sees_failed_starts() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    e.ok(&[
        "run",
        "-d",
        "--name",
        "box1",
        "--network",
        "none",
        &bb,
        "sleep",
        "1000",
    ])?;
    let script = r#"
import docker, sys
c = docker.APIClient(base_url=sys.argv[1], version="auto")
ctr = c.create_container(sys.argv[2], ["nosuchcmd"])
try:
    c.start(ctr["Id"])
    raise SystemExit("start succeeded")
except docker.errors.APIError as err:
    assert err.status_code == 400, err.status_code
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in str(err), str(err)
state = c.inspect_container(ctr["Id"])["State"]
assert (state["Status"], state["ExitCode"]) == ("created", 127), state
assert "nosuchcmd" in state["Error"], state
ex = c.exec_create("box1", ["nosuchcmd"])
c.exec_start(ex["Id"])
assert c.exec_inspect(ex["Id"])["ExitCode"] == 126
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &e.d.host(), &bb])
        .output()?;
    assert_eq!(
        text(&out.stdout),
        "ok\n",
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(())
}
