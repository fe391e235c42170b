//! berthd pulls through its registry mirror, and nodes share one: `docker pull` on node A
//! goes docker CLI -> berthd -> A's mirror -> registry; a fresh node B configured with
//! `--registry-mirror http://A:5001` then pulls and runs the same image without one blob
//! request reaching the registry (counted in the registry's own access log), and keeps
//! pulling it through A after the registry is gone.
//!
//! The test runs its own registry (the fixture images pushed to it) so that its access
//! log holds only this test's requests; each berthd reaches it on the same loopback
//! address through a forwarder inside its network namespace.

use std::time::Duration;

use anyhow::{ensure, Result};
use berth_testkit::daemon::{retry, Berthd};
use berth_testkit::lan::Lan;
use berth_testkit::netns::Forwarder;

/// Blob GETs of `repo` in the registry's access log.
fn blob_gets(log: &str, repo: &str) -> usize {
    let needle = format!("\"GET /v2/{repo}/blobs/");
    log.lines().filter(|l| l.contains(&needle)).count()
}

/// A berthd on the LAN that reaches the test's registry at the same loopback address.
fn node(lan: &mut Lan, registry: &str, args: &[&str]) -> Result<(Berthd, Forwarder, String)> {
    let d = Berthd::start(args)?;
    let fwd = Forwarder::start(&d.netns(), registry)?;
    let addr = lan.attach(d.netns_name())?;
    Ok((d, fwd, addr))
}

fn metric(d: &Berthd, name: &str) -> Result<u64> {
    let out = d
        .in_netns("curl", &["-sf", "http://127.0.0.1:5001/metrics"])
        .output()?;
    ensure!(out.status.success(), "GET /metrics failed");
    let text = String::from_utf8(out.stdout)?;
    // The sum over every label set of the metric.
    let values: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.split_once('}')?.1
            } else {
                rest
            };
            value.trim().parse().ok()
        })
        .collect();
    ensure!(!values.is_empty(), "{name} missing from {text}");
    Ok(values.iter().sum())
}

#[test]
fn nodes_pull_through_one_mirror_and_keep_pulling_when_the_registry_is_gone() -> Result<()> {
    let (mut reg, fx) = berth_testkit::start_fixture_registry()?;
    let registry = reg.addr().to_string();
    let web = fx.reference("web:latest");
    let mut lan = Lan::new()?;
    // Tags are revalidated on every pull (TTL 0), so the stale-if-error path is the one
    // taken once the registry is gone.
    let (a, _fa, a_addr) = node(
        &mut lan,
        &registry,
        &["--mirror-addr", "0.0.0.0:5001", "--mirror-tag-ttl", "0"],
    )?;
    let mirror = format!("http://{a_addr}:5001");

    // A: the docker CLI pulls through berthd's own mirror.
    let out = a.docker_ok(&["pull", &web])?;
    ensure!(
        out.contains("Downloaded newer image"),
        "pull printed: {out}"
    );
    let log = reg.log();
    let layers = fx.image("web:latest").layers.len();
    let fetched = blob_gets(&log, "web");
    // Every layer and the config came from the registry once, through the mirror.
    assert_eq!(fetched, layers + 1, "registry log: {log}");
    assert!(metric(&a, "berth_mirror_upstream_bytes_total")? > 0);
    let info = a.docker_ok(&["info", "--format", "{{json .RegistryConfig.Mirrors}}"])?;
    assert!(info.contains("http://127.0.0.1:5001"), "{info}");

    // B: a fresh data root that uses A's mirror. No blob request reaches the registry.
    let (b, _fb, _) = node(&mut lan, &registry, &["--registry-mirror", &mirror])?;
    let hits_before = metric(&a, "berth_mirror_hits_total")?;
    b.docker_ok(&["pull", &web])?;
    assert_eq!(
        blob_gets(&reg.log(), "web"),
        fetched,
        "node B's pull reached the registry"
    );
    assert!(metric(&a, "berth_mirror_hits_total")? > hits_before);
    let page = b.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &web,
        "cat",
        "/www/index.html",
    ])?;
    assert!(!page.trim().is_empty());

    // The registry goes away: a third fresh node still pulls the tag A has seen, through
    // A (stale tag served), and gets a clear error for a tag nobody has seen.
    reg.stop();
    let (c, _fc, _) = node(&mut lan, &registry, &["--registry-mirror", &mirror])?;
    c.docker_ok(&["pull", &web])?;
    let id_c = c.docker_ok(&["image", "inspect", "--format", "{{.Id}}", &web])?;
    let id_a = a.docker_ok(&["image", "inspect", "--format", "{{.Id}}", &web])?;
    assert_eq!(id_c, id_a);
    assert!(metric(&a, "berth_mirror_stale_served_total")? > 0);
    let out = c.docker(&["pull", &fx.reference("web:never-pushed")])?;
    assert!(!out.status.success(), "an unknown tag pulled");
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("unknown tag with the registry gone: {err}");
    assert!(
        err.contains("never-pushed") && err.contains("never cached"),
        "{err}"
    );
    // A pulls its own image again with the registry gone.
    retry(Duration::from_secs(5), || {
        Ok(a.docker(&["pull", &web])?.status.success().then_some(()))
    })?;
    Ok(())
}
