//! The routing mesh (issue #16), driven with the real docker CLI against a berth cluster of
//! 3 hosts ([`Cluster`]: each berthd in its own network namespace and data root, on one veth
//! LAN), plus a client namespace of the test plugged into the same LAN:
//!
//! ```text
//!   client ns 10.77.S.4 ──┐
//!   host 0    10.77.S.1 ──┼── LAN switch
//!   host 1    10.77.S.2 ──┤      (each host: berthd; `ingress` overlay between them)
//!   host 2    10.77.S.3 ──┘
//! ```
//!
//! - `--publish published=8080,target=80` (ingress mode): a request from the client to
//!   EACH host's address on 8080 is answered by a task (on any host), and the task reports
//!   the client's own address as its peer (Swarm's mesh shows the ingress node's instead:
//!   moby#25526). `service ls` shows `*:8080->80/tcp`, inspect `Endpoint.Ports` as Swarm.
//!   Another service publishing 8080 is refused with swarmkit's message. Removing the
//!   service leaves no nftables table, rule or overlay link of the mesh on any host.
//! - `mode=host`: only the host that runs the task answers.
//!
//! The task is busybox httpd with a CGI script that prints `REMOTE_ADDR`.
//!
//! Cleanup: the client namespace goes first (drop order), then [`Cluster`]'s drop removes
//! every service and container on every host, stops every berthd and removes its netns,
//! then the LAN.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_testkit::cluster::Cluster;
use berth_testkit::daemon::{retry, NetnsGuard};
use serde_json::Value;

/// How long the cluster gets to converge (3 berthd share 2 cores with other work).
const CONVERGE: Duration = Duration::from_secs(60);

/// A web server whose `/cgi-bin/peer` prints the client address it sees and the task's
/// hostname (its container id).
const PEER_SERVER: &str = "mkdir -p /www/cgi-bin && \
    printf '#!/bin/sh\\necho \"Content-Type: text/plain\"\\necho\\necho \"client=$REMOTE_ADDR task=$(hostname)\"\\n' > /www/cgi-bin/peer && \
    chmod +x /www/cgi-bin/peer && exec httpd -f -p 80 -h /www";

/// `curl` from the client namespace; the body, or `None` when it got no answer.
fn fetch(client: &NetnsGuard, url: &str) -> Result<Option<String>> {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            client.name(),
            "curl",
            "-s",
            "--max-time",
            "5",
            url,
        ])
        .output()
        .context("run curl in the client namespace")?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

/// The client address a `/cgi-bin/peer` answer names (httpd listens on IPv6 too, so an
/// IPv4 peer reads `[::ffff:10.77.1.4]`).
fn peer(body: &str) -> &str {
    let addr = body
        .strip_prefix("client=")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default();
    addr.strip_prefix("[::ffff:")
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr)
}

/// Runs `program` in host `i`'s network namespace; its stdout.
fn in_host(c: &Cluster, i: usize, program: &str, args: &[&str]) -> Result<String> {
    let out = c.h(i).in_netns(program, args).output()?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Hosts running a task of `service` (by `docker ps` on each).
fn task_hosts(c: &Cluster, service: &str) -> Result<Vec<usize>> {
    let mut hosts = Vec::new();
    for i in 0..c.hosts.len() {
        let out = c.h(i).docker_ok(&[
            "ps",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
            "--format",
            "{{.Names}}",
        ])?;
        hosts.extend(std::iter::repeat_n(i, out.lines().count()));
    }
    Ok(hosts)
}

/// Waits until `n` tasks of `service` run; the hosts running them.
fn wait_tasks(c: &Cluster, service: &str, n: usize) -> Result<Vec<usize>> {
    retry(CONVERGE, || {
        let hosts = task_hosts(c, service)?;
        Ok((hosts.len() == n).then_some(hosts))
    })
    .with_context(|| {
        format!(
            "{service}: never {n} tasks running; service ps: {}",
            c.h(0)
                .docker_ok(&["service", "ps", "--no-trunc", service])
                .unwrap_or_else(|e| e.to_string())
        )
    })
}

/// Waits until host `i` holds nothing of the mesh: no overlay table or link of berth, no
/// rule naming `port`.
fn wait_clean(c: &Cluster, i: usize, port: u16) -> Result<()> {
    let residue = || -> Result<Option<String>> {
        let rules = in_host(c, i, "nft", &["list", "ruleset"])?;
        let links = in_host(c, i, "ip", &["-d", "link", "show"])?;
        let left = rules.contains("berth_ovl")
            || rules.contains(&format!("dport {port}"))
            || links.contains("berth-ovl")
            || links.contains("vxlan id");
        Ok(left.then(|| format!("{rules}\n{links}")))
    };
    let waited = retry(CONVERGE, || Ok(residue()?.is_none().then_some(())));
    ensure!(
        waited.is_ok(),
        "host {i} keeps routing-mesh residue: {}",
        residue()?.unwrap_or_default()
    );
    Ok(())
}

#[test]
fn a_published_port_answers_on_every_host_and_the_task_sees_the_client() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let mut c = Cluster::new(3)?.with_task_cleanup();
    c.form(1)?;
    let client = NetnsGuard::create()?;
    let client_addr = c.lan.attach(client.name())?;
    let name = format!("mesh{}", std::process::id());
    let id = c
        .h(1)
        .docker_ok(&[
            "service",
            "create",
            "--detach",
            "-q",
            "--name",
            &name,
            "--replicas",
            "2",
            "--publish",
            "published=8080,target=80",
            &img,
            "sh",
            "-c",
            PEER_SERVER,
        ])?
        .trim()
        .to_string();
    wait_tasks(&c, &name, 2)?;

    // What the CLI shows, as Swarm shows it.
    let ports = c.h(2).docker_ok(&[
        "service",
        "ls",
        "--filter",
        &format!("name={name}"),
        "--format",
        "{{.Ports}}",
    ])?;
    ensure!(
        ports.trim() == "*:8080->80/tcp",
        "service ls PORTS: {ports:?}"
    );
    let v: Value = serde_json::from_str(&c.h(0).docker_ok(&["service", "inspect", &name])?)?;
    let want = serde_json::json!([{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]);
    ensure!(v[0]["Endpoint"]["Ports"] == want, "{}", v[0]["Endpoint"]);
    ensure!(
        v[0]["Endpoint"]["Spec"]["Ports"] == want,
        "{}",
        v[0]["Endpoint"]
    );

    // Every host answers on 8080, and the serving task sees the client's own address.
    let mut served_by = std::collections::BTreeSet::new();
    for (i, h) in c.hosts.iter().enumerate() {
        let url = format!("http://{}:8080/cgi-bin/peer", h.addr);
        let body = retry(CONVERGE, || fetch(&client, &url))
            .with_context(|| format!("host {i} ({url}) never answered"))?;
        ensure!(
            peer(&body) == client_addr,
            "host {i} answered {body:?}; the task should see the client {client_addr}"
        );
        // More requests: each answered, each with the client's address.
        for _ in 0..4 {
            let body = fetch(&client, &url)?
                .with_context(|| format!("host {i} ({url}) stopped answering"))?;
            ensure!(peer(&body) == client_addr, "{body:?}");
            served_by.insert(body.split("task=").nth(1).unwrap_or_default().to_string());
        }
    }
    println!("tasks that served: {served_by:?}");

    // Another service may not take 8080 (swarmkit's check and words).
    let out = c.h(0).docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        &format!("{name}b"),
        "--publish",
        "8080:80",
        &img,
        "sleep",
        "100",
    ])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a second service got 8080");
    ensure!(
        err.contains(&format!(
            "port '8080' is already in use by service '{name}' ({id}) as an ingress port"
        )),
        "{err}"
    );

    // Removing the service removes every rule, table and link of the mesh on every host.
    c.h(0).docker_ok(&["service", "rm", &name])?;
    for i in 0..3 {
        wait_clean(&c, i, 8080)?;
    }
    ensure!(
        fetch(
            &client,
            &format!("http://{}:8080/cgi-bin/peer", c.hosts[0].addr)
        )?
        .is_none(),
        "host 0 still answers 8080"
    );
    drop(client);
    Ok(())
}

#[test]
fn mode_host_answers_only_on_the_hosts_that_run_a_task() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let mut c = Cluster::new(3)?.with_task_cleanup();
    c.form(1)?;
    let client = NetnsGuard::create()?;
    let client_addr = c.lan.attach(client.name())?;
    let name = format!("hostp{}", std::process::id());
    c.h(0).docker_ok(&[
        "service",
        "create",
        "--detach",
        "-q",
        "--name",
        &name,
        "--publish",
        "published=8081,target=80,mode=host",
        &img,
        "sh",
        "-c",
        PEER_SERVER,
    ])?;
    let hosts = wait_tasks(&c, &name, 1)?;
    let ports = c.h(0).docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Endpoint.Ports}}",
        &name,
    ])?;
    let v: Value = serde_json::from_str(ports.trim())?;
    ensure!(
        v[0]["PublishMode"] == "host" && v[0]["PublishedPort"] == 8081,
        "{v}"
    );
    for (i, h) in c.hosts.iter().enumerate() {
        let url = format!("http://{}:8081/cgi-bin/peer", h.addr);
        if hosts.contains(&i) {
            let body = retry(CONVERGE, || fetch(&client, &url))
                .with_context(|| format!("task host {i} ({url}) never answered"))?;
            ensure!(peer(&body) == client_addr, "{body:?}");
        } else {
            ensure!(
                fetch(&client, &url)?.is_none(),
                "host {i} runs no task of {name} but answers 8081"
            );
        }
    }
    c.h(0).docker_ok(&["service", "rm", &name])?;
    for i in 0..3 {
        wait_clean(&c, i, 8081)?;
    }
    drop(client);
    Ok(())
}
