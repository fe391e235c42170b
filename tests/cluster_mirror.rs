//! The cluster mirror across hosts: five berthd hosts (network namespaces on one [`Lan`])
//! form a cluster with the docker CLI; every node's mirror routes each blob and tag to its
//! owner (rendezvous hashing over the live members) over QUIC with the node certificates.
//!
//! - All five `docker pull big` at the same moment from cold: the registry's own access
//!   log shows exactly one GET of each blob, the mirrors' upstream bytes stay within 1.05x
//!   the image size, and every node runs the image with identical content.
//! - The registry stopped after one node pulled `web`: the four others pull and run it
//!   (tags and blobs from their owners).
//!
//! The test runs its own registry (the fixture images pushed to it) so that its access
//! log holds only this test's requests; each berthd reaches it on the same loopback
//! address through a forwarder inside its network namespace.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
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

/// GETs of `/v2/<repo>/blobs/<digest>` in the registry's access log.
fn gets_of(log: &str, repo: &str, digest: &str) -> usize {
    let needle = format!("\"GET /v2/{repo}/blobs/{digest} ");
    log.lines().filter(|l| l.contains(&needle)).count()
}

#[test]
fn five_nodes_cold_pull_big_with_one_registry_fetch_per_blob_and_pull_without_the_registry(
) -> Result<()> {
    let (mut reg, fx) = berth_testkit::start_fixture_registry()?;
    let registry = reg.addr().to_string();
    let mut lan = Lan::new()?;
    let mut hosts = Vec::new();
    for _ in 0..5 {
        let d = Berthd::start(&[])?;
        let fwd = Forwarder::start(&d.netns(), &registry)?;
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
    Ok(())
}
