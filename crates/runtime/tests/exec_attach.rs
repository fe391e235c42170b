//! Root integration tests: exec (tty and pipes), attach, resize, and live restore after the
//! process that started a container is killed with SIGKILL.

mod support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_runtime::protocol::{encode_frame, kind, resize_frame, FrameDecoder};
use berth_runtime::{AttachOptions, ExecOptions, Status};
use support::*;

const ALL: AttachOptions = AttachOptions {
    stdin: true,
    stdout: true,
    stderr: true,
};

fn sleeper(t: &TestRuntime) -> Result<String> {
    let mut o = opts();
    o.cmd = Some(vec!["sleep".into(), "1000".into()]);
    let id = t.create(o)?;
    t.rt.start(&id)?;
    Ok(id)
}

#[test]
fn exec_with_tty_gets_a_pty_and_resize_changes_stty_size() -> Result<()> {
    let t = TestRuntime::new()?;
    let id = sleeper(&t)?;
    let exec = t.rt.exec(
        &id,
        &ExecOptions {
            cmd: vec!["sh".into()],
            tty: true,
            open_stdin: true,
            ..Default::default()
        },
    )?;
    let mut s = t.rt.exec_attach(&id, &exec, ALL)?;
    let mut dec = FrameDecoder::default();
    let mut got = Vec::new();
    send(&mut s, encode_frame(kind::STDIN, b"tty; stty size\n"))?;
    let out = read_until(&mut s, &mut dec, &mut got, Some("24 80"))?;
    assert!(out.contains("/dev/pts/"), "{out}");
    t.rt.exec_resize(&id, &exec, 40, 100)?;
    send(&mut s, encode_frame(kind::STDIN, b"stty size\n"))?;
    read_until(&mut s, &mut dec, &mut got, Some("40 100"))?;
    // A resize frame on the attach stream works too.
    send(&mut s, resize_frame(33, 111))?;
    send(&mut s, encode_frame(kind::STDIN, b"stty size\n"))?;
    read_until(&mut s, &mut dec, &mut got, Some("33 111"))?;
    // A tty merges stderr into stdout.
    assert!(got.iter().all(|(k, _)| *k == kind::STDOUT));
    send(&mut s, encode_frame(kind::STDIN, b"exit 7\n"))?;
    let exit =
        t.rt.exec_wait(&id, &exec, Some(Duration::from_secs(20)))?
            .context("exec did not exit")?;
    assert_eq!(exit.code, 7);
    // The container itself keeps running.
    assert_eq!(t.rt.inspect(&id)?.status, Status::Running);
    Ok(())
}

#[test]
fn exec_without_tty_keeps_streams_apart_and_has_own_exit_code() -> Result<()> {
    let t = TestRuntime::new()?;
    let id = sleeper(&t)?;
    let exec = t.rt.exec(
        &id,
        &ExecOptions {
            cmd: sh("echo out; echo err >&2; echo $FOO; exit 5"),
            env: vec!["FOO=bar".into()],
            ..Default::default()
        },
    )?;
    // Output produced before the attach is kept for it.
    std::thread::sleep(Duration::from_millis(300));
    let mut s = t.rt.exec_attach(
        &id,
        &exec,
        AttachOptions {
            stdin: false,
            stdout: true,
            stderr: true,
        },
    )?;
    let mut got = Vec::new();
    read_until(&mut s, &mut FrameDecoder::default(), &mut got, None)?;
    let stream = |k: u8| -> String {
        got.iter()
            .filter(|(kk, _)| *kk == k)
            .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
            .collect()
    };
    assert_eq!(stream(kind::STDOUT), "out\nbar\n");
    assert_eq!(stream(kind::STDERR), "err\n");
    let exit =
        t.rt.exec_wait(&id, &exec, Some(Duration::from_secs(20)))?
            .unwrap();
    assert_eq!(exit.code, 5);
    // Exec output is not in the container's log.
    assert_eq!(t.output(&id, false)?, "");
    Ok(())
}

#[test]
fn attach_to_init_stdin_and_follow_logs() -> Result<()> {
    let t = TestRuntime::new()?;
    let mut o = opts();
    o.open_stdin = true;
    o.cmd = Some(sh("while read l; do echo got:$l; done; echo bye"));
    let id = t.create(o)?;
    t.rt.start(&id)?;
    let mut s = t.rt.attach(&id, ALL)?;
    let mut got = Vec::new();
    let mut dec = FrameDecoder::default();
    send(&mut s, encode_frame(kind::STDIN, b"hello\n"))?;
    read_until(&mut s, &mut dec, &mut got, Some("got:hello"))?;
    let follower = {
        let opts = berth_runtime::LogOptions {
            follow: true,
            ..berth_runtime::LogOptions::all()
        };
        let rt = &t.rt;
        let id = id.clone();
        std::thread::scope(|scope| {
            let h = scope.spawn(move || -> Result<Vec<String>> {
                Ok(rt
                    .logs(&id, opts)?
                    .map(|r| r.map(|r| r.log))
                    .collect::<Result<Vec<_>, _>>()?)
            });
            std::thread::sleep(Duration::from_millis(200));
            send(&mut s, encode_frame(kind::STDIN, b"again\n"))?;
            send(&mut s, encode_frame(kind::STDIN_CLOSE, b""))?;
            h.join().expect("follow thread")
        })?
    };
    // The follow ended by itself when the container exited, with every record.
    assert_eq!(follower, ["got:hello\n", "got:again\n", "bye\n"]);
    let exit = t.rt.wait(&id, Some(Duration::from_secs(20)))?.unwrap();
    assert_eq!(exit.code, 0);
    Ok(())
}

/// Not a test on its own: `live_restore_after_starter_is_killed` runs it in a child process
/// to start a container, then kills that process with SIGKILL.
#[test]
#[ignore = "helper process of live_restore_after_starter_is_killed"]
fn live_restore_starter() -> Result<()> {
    let root = std::env::var("BERTH_LR_ROOT").context("BERTH_LR_ROOT")?;
    let id = std::env::var("BERTH_LR_ID").context("BERTH_LR_ID")?;
    let t = TestRuntime::at(root.into(), false)?;
    let mut o = opts();
    o.open_stdin = true;
    o.cmd = Some(sh(
        "i=0; while [ $i -lt 5 ]; do echo line$i; i=$((i+1)); done; \
         while read l; do echo got:$l; done; echo bye",
    ));
    t.rt.create(t.request(&id, o))?;
    t.rt.start(&id)?;
    println!("STARTED");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn live_restore_after_starter_is_killed() -> Result<()> {
    let t = TestRuntime::new()?;
    let id = unique("lr");
    t.track(&id);
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "live_restore_starter",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BERTH_LR_ROOT", &t.root)
        .env("BERTH_LR_ID", &id)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("STARTED") {
                let _ = tx.send(());
            }
        }
    });
    let started = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    // SIGKILL exactly the process we spawned.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    child.wait()?;
    assert!(started, "starter never reported STARTED");

    // A fresh runtime over the same roots finds the container and its shim.
    let fresh = TestRuntime::at(t.root.clone(), false)?;
    let found = fresh.rt.list()?;
    let info = found
        .iter()
        .find(|c| c.id == id)
        .context("container not listed")?;
    assert_eq!(info.status, Status::Running);
    assert!(info.pid.is_some());
    assert!(eventually(Duration::from_secs(10), || fresh
        .output(&id, false)
        .map(|o| o == "line0\nline1\nline2\nline3\nline4\n")
        .unwrap_or(false)));

    let mut s = fresh.rt.attach(&id, ALL)?;
    send(&mut s, encode_frame(kind::STDIN, b"after-restore\n"))?;
    read_until(
        &mut s,
        &mut FrameDecoder::default(),
        &mut Vec::new(),
        Some("got:after-restore"),
    )?;

    let exit = fresh
        .rt
        .stop(&id, Some(Duration::from_secs(1)))?
        .context("no exit")?;
    assert_eq!(exit.code, 137, "sh as PID 1 ignores SIGTERM: {exit:?}");
    assert_eq!(fresh.rt.inspect(&id)?.status, Status::Exited);
    assert!(fresh.output(&id, false)?.ends_with("got:after-restore\n"));
    Ok(())
}

/// An init started for one attacher holds its output until that attacher comes, even when
/// the process has exited meanwhile: every byte arrives, more than a pipe holds, with
/// stdout and stderr apart.
#[test]
fn held_start_gives_a_late_attacher_all_output() -> Result<()> {
    let t = TestRuntime::new()?;
    let mut o = opts();
    o.cmd = Some(sh(
        "head -c 300000 /dev/zero | tr '\\0' x; printf '\\377\\000' >&2; exit 4",
    ));
    let id = t.create(o)?;
    t.rt.start_attached(&id, 1)?;
    // Whatever the process got to meanwhile, nothing was read yet: the attach gets it all.
    let mut s = t.rt.attach(
        &id,
        AttachOptions {
            stdin: false,
            stdout: true,
            stderr: true,
        },
    )?;
    let mut got = Vec::new();
    read_until(&mut s, &mut FrameDecoder::default(), &mut got, None)?;
    let stream = |k: u8| -> Vec<u8> {
        got.iter()
            .filter(|(kk, _)| *kk == k)
            .flat_map(|(_, p)| p.clone())
            .collect()
    };
    assert_eq!(stream(kind::STDOUT), vec![b'x'; 300_000]);
    assert_eq!(stream(kind::STDERR), b"\xff\x00");
    let exit = t.rt.wait(&id, Some(Duration::from_secs(20)))?.unwrap();
    assert_eq!(exit.code, 4);
    Ok(())
}

/// An exec nobody attaches to is waited for like any other: its exit does not wait for the
/// output it holds for a first attacher.
#[test]
fn exec_wait_without_an_attacher_returns_at_exit() -> Result<()> {
    let t = TestRuntime::new()?;
    let id = sleeper(&t)?;
    let exec = t.rt.exec(
        &id,
        &ExecOptions {
            cmd: sh("echo held; exit 6"),
            ..Default::default()
        },
    )?;
    let exit =
        t.rt.exec_wait(&id, &exec, Some(Duration::from_secs(20)))?
            .context("exec_wait timed out")?;
    assert_eq!(exit.code, 6);
    // The output is still there for a late attacher.
    let mut s = t.rt.exec_attach(
        &id,
        &exec,
        AttachOptions {
            stdin: false,
            stdout: true,
            stderr: true,
        },
    )?;
    let mut got = Vec::new();
    let out = read_until(&mut s, &mut FrameDecoder::default(), &mut got, None)?;
    assert_eq!(out, "held\n");
    Ok(())
}
