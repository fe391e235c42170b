//! The cluster mirror across hosts: five berthd hosts (network namespaces on one [`Lan`])
//! form a cluster with the docker CLI; every node's mirror routes each blob and tag to its
//! owner (rendezvous hashing over the live members) over QUIC with the node certificates.
//!
//! - All five `docker pull big` at the same moment from cold: the registry's own access
//!   log shows exactly one GET of each blob, the mirrors' upstream bytes stay within 1.05x
//!   the image size, and every node runs the image with identical content.
//! - The registry stopped after one node pulled `web`: the four others pull and run it
//!   (tags and blobs from their owners); their mirrors answer `/v2/web/tags/list` and a
//!   `HEAD` of web's layer from the cluster, and a `HEAD` of a blob no one holds with 503. A node that leaves closes its peer transport
//!   and binds a new one when it joins again.
//! - kill -9 of the owner of big's layer in the middle of that transfer (the registry
//!   reached through a throttling relay): the four others still pull a correct image,
//!   with at most one more registry fetch of the layer, resumed where the cut left it
//!   (no survivor receives more than the image's bytes once).
//! - `docker info` on each node shows its mirror (`SystemStatus`): bytes from upstream,
//!   from peers and served to peers, cache hits, and its live peers.
//!
//! The test runs its own registry (the fixture images pushed to it) so that its access
//! log holds only this test's requests; each berthd reaches it on the same loopback
//! address through a forwarder inside its network namespace.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_registry_mirror::mirror::peers::{rendezvous_order, Member, OwnerKey};
use berth_registry_mirror::Digest;
use berth_testkit::daemon::{retry, Berthd};
use berth_testkit::lan::Lan;
use berth_testkit::netns::Forwarder;

struct Host {
    d: Berthd,
    _fwd: Forwarder,
    addr: String,
}

fn metric(d: &Berthd, name: &str) -> Result<u64> {
    let out = d
        .in_netns("curl", &["-sf", "http://127.0.0.1:5001/metrics"])
        .output()?;
    ensure!(out.status.success(), "GET /metrics failed");
    let text = String::from_utf8(out.stdout)?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .with_context(|| format!("{name} missing from {text}"))?
        .trim()
        .parse()
        .context("metric value")
}

/// The `Node Mirror` section of the docker CLI's `docker info` text (berthd's
/// `SystemStatus` pairs): `(key, value)` with the key trimmed, in order; the peers are the
/// entries after `Peers`.
fn mirror_info(d: &Berthd) -> Result<Vec<(String, String)>> {
    let text = d.docker_ok(&["info"])?;
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with(" Node Mirror: "));
    let head = lines
        .next()
        .with_context(|| format!("no Node Mirror in {text}"))?;
    let mut out = vec![(
        "Node Mirror".to_string(),
        head.trim_start()
            .trim_start_matches("Node Mirror: ")
            .to_string(),
    )];
    for l in lines.take_while(|l| l.starts_with("  ")) {
        let (k, v) = l.trim().split_once(": ").context("KEY: VALUE")?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// The first number of the value of `key` in [`mirror_info`]'s pairs.
fn info_number(pairs: &[(String, String)], key: &str) -> Result<u64> {
    let v = &pairs
        .iter()
        .find(|(k, _)| k == key)
        .with_context(|| format!("{key} missing from {pairs:?}"))?
        .1;
    v.split_whitespace()
        .next()
        .unwrap_or("")
        .parse()
        .with_context(|| format!("{key}: {v}"))
}

/// GETs of `/v2/<repo>/blobs/<digest>` in the registry's access log.
fn gets_of(log: &str, repo: &str, digest: &str) -> usize {
    let needle = format!("\"GET /v2/{repo}/blobs/{digest} ");
    log.lines().filter(|l| l.contains(&needle)).count()
}

/// Five berthd hosts on a LAN, each reaching `registry` (a host loopback address) through
/// a forwarder, formed into a cluster (host 0 the manager); returns once every mirror sees
/// its four peers.
fn cluster(registry: &str) -> Result<(Vec<Host>, Lan)> {
    let mut lan = Lan::new()?;
    let mut hosts = Vec::new();
    for _ in 0..5 {
        let d = Berthd::start(&[])?;
        let fwd = Forwarder::start(&d.netns(), registry)?;
        let addr = lan.attach(d.netns_name())?;
        hosts.push(Host { d, _fwd: fwd, addr });
    }
    let first = &hosts[0];
    first
        .d
        .docker_ok(&["swarm", "init", "--advertise-addr", &first.addr])?;
    let token = first
        .d
        .docker_ok(&["swarm", "join-token", "-q", "worker"])?;
    let remote = format!("{}:2377", first.addr);
    for h in &hosts[1..] {
        h.d.docker_ok(&["swarm", "join", "--token", token.trim(), &remote])?;
    }
    // Every mirror sees the four others as live peers (membership, then the prober).
    for h in &hosts {
        retry(Duration::from_secs(30), || {
            Ok((metric(&h.d, "berth_mirror_peers").ok() == Some(4)).then_some(()))
        })
        .with_context(|| format!("peers of {}: {}", h.addr, h.d.log()))?;
    }
    Ok((hosts, lan))
}

/// A TCP relay on 127.0.0.1 to `upstream` that pauses 5 ms after every 64 KiB it sends
/// back (about 12 MiB/s per connection), so a 50 MiB transfer lasts seconds. Stops on drop.
struct SlowRelay {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl SlowRelay {
    fn start(upstream: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, upstream) = (stop.clone(), upstream.to_string());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone(), server.try_clone());
                let (Ok(c2), Ok(s2)) = (c2, s2) else { continue };
                std::thread::spawn(move || pump(client, server, Duration::ZERO));
                std::thread::spawn(move || pump(s2, c2, Duration::from_millis(5)));
            }
        });
        Ok(SlowRelay { addr, stop })
    }
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, pause: Duration) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if n == buf.len() {
                    std::thread::sleep(pause);
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn node_id(d: &Berthd) -> Result<String> {
    Ok(d.docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"])?
        .trim()
        .to_string())
}

#[test]
fn kill_9_of_the_owner_mid_transfer_leaves_every_other_pull_correct() -> Result<()> {
    let (reg, fx) = berth_testkit::start_fixture_registry()?;
    let relay = SlowRelay::start(&reg.addr().to_string())?;
    let (mut hosts, _lan) = cluster(&relay.addr)?;
    let info = fx.image("big:latest");
    let layer = info
        .layers
        .iter()
        .max_by_key(|l| l.size)
        .context("big has layers")?;
    // The owner of the big layer, as every node computes it.
    let members: Vec<Member> = hosts
        .iter()
        .map(|h| {
            Ok(Member {
                id: node_id(&h.d)?,
                addr: format!("{}:2377", h.addr).parse()?,
            })
        })
        .collect::<Result<_>>()?;
    let key = OwnerKey::Digest(Digest::parse(&layer.digest)?);
    let owner_id = rendezvous_order(&key, &members)[0].id.clone();
    let owner = members
        .iter()
        .position(|m| m.id == owner_id)
        .context("owner")?;
    let big = format!("{}/big:latest", relay.addr);

    let others: Vec<usize> = (0..5).filter(|&i| i != owner).collect();
    let outcomes = std::thread::scope(|s| -> Result<Vec<Result<String>>> {
        let pulls: Vec<_> = others
            .iter()
            .map(|&i| {
                let d = &hosts[i].d;
                let big = big.clone();
                s.spawn(move || d.docker_ok(&["pull", &big]))
            })
            .collect();
        // The owner is fetching the layer (a few MiB in of 50): kill it.
        retry(Duration::from_secs(60), || {
            Ok(
                (metric(&hosts[owner].d, "berth_mirror_upstream_bytes_total")? > 4 << 20)
                    .then_some(()),
            )
        })?;
        let pid = hosts[owner].d.pid().context("owner pid")?;
        // SAFETY: kill(2) of the berthd child this test started (its PID is unreaped).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        Ok(pulls
            .into_iter()
            .map(|p| p.join().expect("pull thread"))
            .collect())
    })?;
    hosts[owner].d.kill9()?;
    for (i, o) in others.iter().zip(outcomes) {
        o.with_context(|| format!("host {i} pull after the owner died"))?;
    }
    let log = reg.log();
    let gets = gets_of(&log, "big", &layer.digest);
    eprintln!(
        "registry GETs of the big layer: {gets}; peer failures seen: {:?}",
        others
            .iter()
            .map(|&i| metric(&hosts[i].d, "berth_mirror_peer_failures_total"))
            .collect::<Vec<_>>()
    );
    // The owner died mid-transfer: the next node in rendezvous order resumed from the
    // registry (a Range GET) and the others followed it: exactly one more fetch.
    assert_eq!(gets, 2, "registry GETs of the big layer: {log}");
    // Resumed, not restarted: what each survivor received from the registry and from
    // peers together is the image once (layers, config, manifests), never the bytes it
    // had from the dead owner again (a range-less resume counts the skipped bytes).
    let image_bytes: u64 = info.layers.iter().map(|l| l.size).sum();
    for &i in &others {
        let got = metric(&hosts[i].d, "berth_mirror_upstream_bytes_total")?
            + metric(&hosts[i].d, "berth_mirror_peer_bytes_total")?;
        assert!(
            got <= image_bytes + (256 << 10),
            "host {i} received {got} bytes for an image of {image_bytes}"
        );
    }
    let want = hosts[others[0]].d.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &big,
        "sha256sum",
        "/data/random.bin",
    ])?;
    for &i in &others[1..] {
        let got = hosts[i].d.docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            &big,
            "sha256sum",
            "/data/random.bin",
        ])?;
        assert_eq!(got, want, "host {i}");
    }
    Ok(())
}

#[test]
fn five_nodes_cold_pull_big_with_one_registry_fetch_per_blob_and_pull_without_the_registry(
) -> Result<()> {
    let (mut reg, fx) = berth_testkit::start_fixture_registry()?;
    let (hosts, _lan) = cluster(&reg.addr().to_string())?;

    // All five pull big at the same moment, from cold.
    let big = fx.reference("big:latest");
    std::thread::scope(|s| -> Result<()> {
        let pulls: Vec<_> = hosts
            .iter()
            .map(|h| s.spawn(|| h.d.docker_ok(&["pull", &big])))
            .collect();
        for (i, p) in pulls.into_iter().enumerate() {
            let out = p.join().expect("pull thread")?;
            ensure!(
                out.contains("Downloaded newer image"),
                "host {i} pull printed: {out}"
            );
        }
        Ok(())
    })?;
    let log = reg.log();
    let info = fx.image("big:latest");
    for digest in info
        .layers
        .iter()
        .map(|l| l.digest.as_str())
        .chain([info.config_digest.as_str()])
    {
        assert_eq!(gets_of(&log, "big", digest), 1, "GETs of {digest}: {log}");
    }
    let image_bytes: u64 = info.layers.iter().map(|l| l.size).sum();
    let mut upstream = 0;
    let mut from_peers = 0;
    for h in &hosts {
        upstream += metric(&h.d, "berth_mirror_upstream_bytes_total")?;
        from_peers += metric(&h.d, "berth_mirror_peer_bytes_total")?;
    }
    eprintln!("big: {image_bytes} layer bytes; upstream {upstream}, from peers {from_peers}");
    assert!(
        upstream as f64 <= image_bytes as f64 * 1.05,
        "upstream bytes {upstream} for an image of {image_bytes}"
    );

    // `docker info` (the docker CLI) shows each node's mirror: the same counters, its
    // cache hits and its four live peers by node id.
    let ids: Vec<String> = hosts.iter().map(|h| node_id(&h.d)).collect::<Result<_>>()?;
    let (mut info_upstream, mut info_from, mut info_to) = (0, 0, 0);
    for (i, h) in hosts.iter().enumerate() {
        let pairs = mirror_info(&h.d)?;
        eprintln!("host {i}: {pairs:?}");
        assert_eq!(pairs[0].1, "127.0.0.1:5001", "{pairs:?}");
        info_upstream += info_number(&pairs, "Upstream Bytes")?;
        info_from += info_number(&pairs, "Bytes From Peers")?;
        info_to += info_number(&pairs, "Bytes Served To Peers")?;
        assert_eq!(info_number(&pairs, "Peers")?, 4, "{pairs:?}");
        let at = pairs.iter().position(|(k, _)| k == "Peers").expect("Peers");
        let mut listed: Vec<&str> = pairs[at + 1..].iter().map(|(k, _)| k.as_str()).collect();
        let mut others: Vec<&str> = ids
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, id)| id.as_str())
            .collect();
        listed.sort();
        others.sort();
        assert_eq!(listed, others, "host {i}'s peers: {pairs:?}");
        for (_, addr) in &pairs[at + 1..] {
            ensure!(addr.ends_with(":2377"), "peer address {addr}");
        }
    }
    assert_eq!(info_upstream, upstream, "docker info vs /metrics");
    assert_eq!(info_from, from_peers, "docker info vs /metrics");
    // Each layer came once from the registry to its owner, then to the four others.
    assert!(
        info_from >= 4 * image_bytes,
        "bytes from peers: {info_from}"
    );
    assert!(
        info_to >= 4 * image_bytes,
        "bytes served to peers: {info_to}"
    );
    // A blob every node stored (big's config) asked of a node's mirror is a cache hit.
    let before = info_number(&mirror_info(&hosts[1].d)?, "Cache Hits")?;
    let url = format!(
        "http://127.0.0.1:5001/v2/big/blobs/{}?ns={}",
        info.config_digest,
        reg.addr()
    );
    let out = hosts[1]
        .d
        .in_netns("curl", &["-sf", "-o", "/dev/null", &url])
        .output()?;
    ensure!(out.status.success(), "GET {url}");
    let after = info_number(&mirror_info(&hosts[1].d)?, "Cache Hits")?;
    assert_eq!(
        after,
        before + 1,
        "cache hits after a stored blob was asked for"
    );
    // Every node ran the image and sees the same 50 MiB file.
    let sums: Vec<String> = hosts
        .iter()
        .map(|h| {
            h.d.docker_ok(&[
                "run",
                "--rm",
                "--network",
                "none",
                &big,
                "sha256sum",
                "/data/random.bin",
            ])
        })
        .collect::<Result<_>>()?;
    assert!(
        sums.iter().all(|s| s == &sums[0] && !s.trim().is_empty()),
        "{sums:?}"
    );

    // One node pulls web; the registry stops; the other four still pull and run it.
    let web = fx.reference("web:latest");
    hosts[0].d.docker_ok(&["pull", &web])?;
    reg.stop();
    // Through each other node's mirror, with the registry gone: the tag list is the
    // cluster's resolved tags, a HEAD of web's layer is answered by the nodes holding it,
    // and a HEAD of a blob no one holds is Distribution's 503, not a hang.
    let web_info = fx.image("web:latest");
    let web_layer = web_info.layers.last().context("web has layers")?;
    let ns = reg.addr().to_string();
    for (i, h) in hosts.iter().enumerate().skip(1) {
        let curl = |args: &[&str]| -> Result<String> {
            let out = h.d.in_netns("curl", args).output()?;
            ensure!(out.status.success(), "curl {args:?} on host {i}");
            Ok(String::from_utf8(out.stdout)?)
        };
        let list = curl(&[
            "-sf",
            &format!("http://127.0.0.1:5001/v2/web/tags/list?ns={ns}"),
        ])?;
        let list: serde_json::Value = serde_json::from_str(&list)?;
        assert_eq!(
            list["tags"],
            serde_json::json!(["latest"]),
            "host {i}: {list}"
        );
        let head = curl(&[
            "-s",
            "-I",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %header{content-length}",
            &format!(
                "http://127.0.0.1:5001/v2/web/blobs/{}?ns={ns}",
                web_layer.digest
            ),
        ])?;
        assert_eq!(head, format!("200 {}", web_layer.size), "host {i}");
        let nobody = format!("sha256:{}", "0".repeat(64));
        let head = curl(&[
            "-s",
            "-I",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:5001/v2/web/blobs/{nobody}?ns={ns}"),
        ])?;
        assert_eq!(head, "503", "host {i}: HEAD of a blob no one holds");
    }
    for (i, h) in hosts.iter().enumerate().skip(1) {
        h.d.docker_ok(&["pull", &web])
            .with_context(|| format!("host {i} pull with the registry gone"))?;
        let page = h.d.docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            &web,
            "cat",
            "/www/index.html",
        ])?;
        ensure!(!page.trim().is_empty(), "host {i}: empty page");
    }

    // A node that leaves drops its peer transport; joining again binds a new one with
    // its new certificate, and it sees the four others again.
    let last = &hosts[4].d;
    last.docker_ok(&["swarm", "leave"])?;
    retry(Duration::from_secs(15), || {
        Ok(metric(last, "berth_mirror_peers").is_err().then_some(()))
    })
    .context("the peer transport outlived the cluster membership")?;
    let token = hosts[0]
        .d
        .docker_ok(&["swarm", "join-token", "-q", "worker"])?;
    let remote = format!("{}:2377", hosts[0].addr);
    last.docker_ok(&["swarm", "join", "--token", token.trim(), &remote])?;
    retry(Duration::from_secs(30), || {
        Ok((metric(last, "berth_mirror_peers").ok() == Some(4)).then_some(()))
    })
    .with_context(|| format!("peers after joining again: {}", last.log()))?;
    Ok(())
}
