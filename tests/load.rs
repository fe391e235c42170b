//! Load and oversized input against a berthd this test starts (issue #19): 1,000 concurrent
//! `GET /containers/json` (raw HTTP on the unix socket, as the docker CLI sends it) mixed
//! with real `docker ps` processes, 100 concurrent `docker run --rm`, and the daemon's
//! memory back near its idle level afterwards; request heads over dockerd's limit get 431
//! (compared with Debian's dockerd 20.10) and JSON bodies over berthd's limit a 413, with
//! the daemon still serving. Correctness only: the timings are in bench/load.sh.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_testkit::daemon::{retry, Berthd, DockerEnv};
use berth_testkit::dockerd::Dockerd;

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); returns the status
/// code and the body. A server that closes the connection early while the request is still
/// being written (as both daemons do after a 431) still has its answer read.
fn http(
    sock: &Path,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    let mut s = UnixStream::connect(sock).with_context(|| format!("connect {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: berth-load-test\r\n{headers}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    // EPIPE/ECONNRESET while writing: the server answered early and closed; read the answer.
    let _ = s.write_all(&req);
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !out.is_empty() => break,
            Err(e) => return Err(e).context("read response"),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP response: {:?}", &text[..text.len().min(200)]))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Resident set size of `pid` in KiB (`VmRSS` in /proc/PID/status).
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS in /proc/PID/status")
}

/// A head of one ~1.1 MiB header field: over Go's 1 MiB + 4 KiB.
fn big_header() -> String {
    format!("X-Big: {}\r\n", "a".repeat(1100 * 1024))
}

#[test]
fn oversized_heads_get_431_like_dockerd_and_oversized_bodies_413() -> Result<()> {
    let b = Berthd::start(&[])?;
    let sock = b.socket();

    // The reference: dockerd 20.10 answers a head over 1 MiB + 4 KiB with 431.
    let mut d = Dockerd::start(&[])?;
    let (docker_status, _) = http(&d.socket(), "GET", "/containers/json", &big_header(), b"")?;
    d.stop()?;
    assert_eq!(docker_status, 431, "dockerd's answer to a 1.1 MiB header");

    let (status, _) = http(&sock, "GET", "/containers/json", &big_header(), b"")?;
    assert_eq!(status, docker_status, "berthd's answer to a 1.1 MiB header");
    // A head of many small fields, under the byte limit but over berthd's field count.
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _) = http(&sock, "GET", "/containers/json", &many, b"")?;
    assert_eq!(status, 431, "2000 header fields");
    // Under both limits: a 900 KiB field and 500 fields are served.
    let fine = format!("X-Big: {}\r\n", "a".repeat(900 * 1024));
    assert_eq!(http(&sock, "GET", "/containers/json", &fine, b"")?.0, 200);
    let some: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(http(&sock, "GET", "/containers/json", &some, b"")?.0, 200);

    // JSON bodies over 2 MiB: a Docker-shaped 413, for create and for exec start alike.
    let mut body = br#"{"Image":"busybox","Labels":{"a":""#.to_vec();
    body.extend(std::iter::repeat_n(b'b', 3 << 20));
    body.extend_from_slice(br#""}}"#);
    let (status, msg) = http(&sock, "POST", "/v1.41/containers/create", "", &body)?;
    assert_eq!(status, 413, "{msg}");
    let v: serde_json::Value = serde_json::from_str(&msg).context(msg.clone())?;
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("request body too large"),
        "{msg}"
    );
    let (status, msg) = http(&sock, "POST", "/exec/nonexistent/start", "", &body)?;
    assert_eq!(status, 413, "{msg}");
    // A 100 MiB body announced by Content-Length is refused without being buffered.
    let (status, _) = {
        let mut s = UnixStream::connect(&sock)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(
            b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n\
              Content-Length: 104857600\r\nConnection: close\r\n\r\n",
        )?;
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..8 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let code: u16 = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, out)
    };
    assert_eq!(status, 413);
    // Under the limit the same endpoint parses the body (the image is unknown: 404).
    let (status, msg) = http(
        &sock,
        "POST",
        "/containers/create",
        "",
        br#"{"Image":"no-such-image-here"}"#,
    )?;
    assert_eq!(status, 404, "{msg}");
    // And the daemon still serves.
    assert_eq!(
        http(&sock, "GET", "/_ping", "", b"")?,
        (200, "OK".to_string())
    );
    Ok(())
}

#[test]
fn thousand_concurrent_ps_and_hundred_run_rm_complete_and_memory_returns() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", "-q", &bb])?;
    let pid = e.d.pid().context("berthd pid")?;
    let sock = e.d.socket();
    // Warm up (lazy statics, allocator arenas of the worker threads) before the idle level.
    for _ in 0..20 {
        assert_eq!(
            http(&sock, "GET", "/v1.50/containers/json", "", b"")?.0,
            200
        );
    }
    e.ok(&["run", "--rm", &bb, "true"])?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss_kib(pid)?;

    // 1,000 API clients at once, plus 20 docker CLI processes.
    let clis: Vec<_> = (0..20)
        .map(|_| {
            let mut c = e.d.docker_cmd(&["ps", "-a"]);
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(1000));
    let handles: Vec<_> = (0..1000)
        .map(|_| {
            let sock = sock.clone();
            let barrier = barrier.clone();
            std::thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(move || {
                    barrier.wait();
                    http(&sock, "GET", "/v1.50/containers/json?all=1", "", b"")
                })
                .expect("spawn client thread")
        })
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        match h.join().expect("client thread") {
            Ok((200, body)) if body.trim_start().starts_with('[') => {}
            other => failures.push(format!("{other:?}")),
        }
    }
    for child in clis {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of 1020 ps calls failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }

    // 100 `docker run --rm` at once.
    let runs: Vec<_> = (0..100)
        .map(|i| {
            let mut c =
                e.d.docker_cmd(&["run", "--rm", &bb, "echo", &format!("run-{i}")]);
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn()
        })
        .collect::<std::io::Result<_>>()?;
    for (i, child) in runs.into_iter().enumerate() {
        let out: std::process::Output = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || stdout.trim() != format!("run-{i}") {
            failures.push(format!(
                "run {i}: {} {stdout:?} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of 100 runs failed: {:?}\n{}",
            failures.len(),
            &failures[..failures.len().min(5)],
            e.d.log()
        );
    }
    // --rm removed them all.
    retry(Duration::from_secs(60), || {
        Ok(e.ok(&["ps", "-aq"])?.trim().is_empty().then_some(()))
    })?;

    // Memory back near idle: within 64 MiB or half the idle level, whichever is larger
    // (the allocator keeps some freed pages; the load peaks far above that).
    let tolerance = (idle / 2).max(64 * 1024);
    let after = retry(Duration::from_secs(60), || {
        let now = rss_kib(pid)?;
        Ok((now <= idle + tolerance).then_some(now))
    })
    .with_context(|| {
        format!(
            "RSS did not return within {tolerance} KiB of idle {idle} KiB: now {} KiB",
            rss_kib(pid).unwrap_or(0)
        )
    })?;
    eprintln!("berthd RSS: idle {idle} KiB, after {after} KiB");
    Ok(())
}
