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
//! - `-p 80` (no published port): the cluster allocates one from Swarm's dynamic range
//!   30000-32767, the same on every host, shown in `Endpoint.Ports` (the spec keeps 0) and
//!   by `service ls`; a second such service gets another; asking for an allocated port is
//!   refused; an update keeps it. UDP crosses the mesh too, and its task also sees the
//!   client's own address (a static UDP server from `tests/fixtures/mesh/udp_peer.c`,
//!   bind-mounted into the tasks).
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
    // On a node itself, through 127.0.0.1 too (the Swarm tutorial's `curl localhost:8080`).
    for i in 0..3 {
        let body = retry(CONVERGE, || {
            let out = c
                .h(i)
                .in_netns(
                    "curl",
                    &[
                        "-s",
                        "--max-time",
                        "5",
                        "http://127.0.0.1:8080/cgi-bin/peer",
                    ],
                )
                .output()?;
            Ok(out
                .status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
        })
        .with_context(|| format!("host {i} never answered on 127.0.0.1:8080"))?;
        ensure!(body.contains("task="), "host {i} on 127.0.0.1: {body:?}");
    }

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

/// `python3` in the client namespace: one UDP datagram to `ip:port`; the answer, or `None`.
fn fetch_udp(client: &NetnsGuard, ip: &str, port: u16) -> Result<Option<String>> {
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\n\
         s.sendto(b'hello', ('{ip}', {port}))\nprint(s.recvfrom(600)[0].decode())"
    );
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", client.name(), "python3", "-c", &script])
        .output()
        .context("run python3 in the client namespace")?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

/// The published port of `service`'s first `Endpoint.Ports` entry, and that entry's
/// `Endpoint.Spec.Ports` counterpart.
fn endpoint_port(c: &Cluster, i: usize, service: &str) -> Result<(u64, Value)> {
    let v: Value = serde_json::from_str(&c.h(i).docker_ok(&["service", "inspect", service])?)?;
    let endpoint = &v[0]["Endpoint"];
    let published = endpoint["Ports"][0]["PublishedPort"]
        .as_u64()
        .with_context(|| format!("no published port: {endpoint}"))?;
    Ok((published, endpoint["Spec"]["Ports"][0].clone()))
}

#[test]
fn dynamic_ports_come_from_30000_and_udp_crosses_the_mesh_with_the_client_address() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    // The UDP server, static so that it runs in busybox.
    let dir = tempfile::Builder::new().prefix("berth-e2e-udp").tempdir()?;
    let server = dir.path().join("udp_peer");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/mesh/udp_peer.c");
    let built = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&server)
        .arg(source)
        .output()?;
    ensure!(
        built.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let mut c = Cluster::new(3)?.with_task_cleanup();
    c.form(1)?;
    let client = NetnsGuard::create()?;
    let client_addr = c.lan.attach(client.name())?;

    // `-p 80`: a port from the dynamic range, the same on every host.
    let name = format!("dyn{}", std::process::id());
    c.h(1).docker_ok(&[
        "service",
        "create",
        "--detach",
        "-q",
        "--name",
        &name,
        "--replicas",
        "2",
        "-p",
        "80",
        &img,
        "sh",
        "-c",
        PEER_SERVER,
    ])?;
    wait_tasks(&c, &name, 2)?;
    let (port, spec_port) = endpoint_port(&c, 0, &name)?;
    ensure!((30000..=32767).contains(&port), "allocated {port}");
    ensure!(
        spec_port["PublishedPort"].as_u64().unwrap_or(0) == 0 && spec_port["TargetPort"] == 80,
        "the spec keeps what the client sent: {spec_port}"
    );
    for i in 1..3 {
        ensure!(
            endpoint_port(&c, i, &name)?.0 == port,
            "host {i} shows another port"
        );
    }
    let ls = c.h(2).docker_ok(&[
        "service",
        "ls",
        "--filter",
        &format!("name={name}"),
        "--format",
        "{{.Ports}}",
    ])?;
    ensure!(
        ls.trim() == format!("*:{port}->80/tcp"),
        "service ls PORTS: {ls:?}"
    );
    for (i, h) in c.hosts.iter().enumerate() {
        let url = format!("http://{}:{port}/cgi-bin/peer", h.addr);
        let body = retry(CONVERGE, || fetch(&client, &url))
            .with_context(|| format!("host {i} ({url}) never answered"))?;
        ensure!(peer(&body) == client_addr, "host {i}: {body:?}");
    }

    // A second dynamic service gets another port; asking for the first one is refused.
    let other = format!("{name}b");
    c.h(0).docker_ok(&[
        "service", "create", "--detach", "-q", "--name", &other, "-p", "8080", &img, "sleep",
        "1000",
    ])?;
    let (other_port, _) = endpoint_port(&c, 0, &other)?;
    ensure!(
        (30000..=32767).contains(&other_port) && other_port != port,
        "second service got {other_port}, first has {port}"
    );
    let out = c.h(2).docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        &format!("{name}c"),
        "--publish",
        &format!("{port}:80"),
        &img,
        "sleep",
        "1000",
    ])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "a third service got the allocated {port}"
    );
    ensure!(
        err.contains(&format!(
            "port '{port}' is already in use by service '{name}'"
        )),
        "{err}"
    );
    // An update keeps the allocation.
    c.h(0)
        .docker_ok(&["service", "update", "--detach", "--env-add", "X=1", &name])?;
    ensure!(
        endpoint_port(&c, 1, &name)?.0 == port,
        "the update moved the port"
    );
    c.h(0).docker_ok(&["service", "rm", &name, &other])?;

    // UDP through the mesh: every host answers, and the task sees the client.
    let udp = format!("udp{}", std::process::id());
    c.h(0).docker_ok(&[
        "service",
        "create",
        "--detach",
        "-q",
        "--name",
        &udp,
        "--replicas",
        "2",
        "--publish",
        "published=5353,target=53,protocol=udp",
        "--mount",
        &format!(
            "type=bind,source={},target=/udp_peer,readonly",
            server.display()
        ),
        &img,
        "/udp_peer",
        "53",
    ])?;
    wait_tasks(&c, &udp, 2)?;
    for (i, h) in c.hosts.iter().enumerate() {
        let body = retry(CONVERGE, || fetch_udp(&client, &h.addr.to_string(), 5353))
            .with_context(|| format!("host {i} never answered UDP 5353"))?;
        ensure!(
            body.strip_prefix("client=")
                .and_then(|r| r.split(' ').next())
                == Some(client_addr.to_string().as_str()),
            "host {i} answered {body:?}; the task should see the client {client_addr}"
        );
    }
    c.h(0).docker_ok(&["service", "rm", &udp])?;
    for i in 0..3 {
        wait_clean(&c, i, u16::try_from(port)?)?;
        wait_clean(&c, i, 5353)?;
    }
    drop(client);
    drop(c);
    drop(dir);
    Ok(())
}

/// With the ingress network removed, a service that publishes in ingress mode is refused
/// with swarmkit's FailedPrecondition (create and update); before, it was accepted and the
/// port was published nowhere. `mode=host` needs no ingress network and is still accepted.
#[test]
fn without_an_ingress_network_the_mesh_is_refused_by_name() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let c = Cluster::new(1)?.with_task_cleanup();
    c.form(1)?;
    let rm = c
        .h(0)
        .docker_cmd(&["network", "rm", "ingress"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().map(|mut s| s.write_all(b"y\n"));
            child.wait_with_output()
        })?;
    ensure!(
        rm.status.success(),
        "network rm ingress: {}",
        String::from_utf8_lossy(&rm.stderr)
    );
    const NEEDS: &str = "rpc error: code = FailedPrecondition desc = service needs ingress network, but no ingress network is present";
    let create = c.h(0).docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        "meshless",
        "--publish",
        "8086:80",
        &img,
        "sleep",
        "600",
    ])?;
    let err = String::from_utf8_lossy(&create.stderr);
    ensure!(
        !create.status.success() && err.contains(NEEDS),
        "create: {err}"
    );
    c.h(0).docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "hostport",
        "--publish",
        "mode=host,published=8087,target=80",
        &img,
        "sleep",
        "600",
    ])?;
    let update = c.h(0).docker(&[
        "service",
        "update",
        "--detach",
        "--publish-add",
        "8088:80",
        "hostport",
    ])?;
    let err = String::from_utf8_lossy(&update.stderr);
    ensure!(
        !update.status.success() && err.contains(NEEDS),
        "update: {err}"
    );
    Ok(())
}

/// The `docker ps` Networks column of `service`'s tasks on host `i`.
fn task_networks(c: &Cluster, i: usize, service: &str) -> Result<String> {
    let out = c.h(i).docker_ok(&[
        "ps",
        "--filter",
        &format!("label=com.docker.swarm.service.name={service}"),
        "--format",
        "{{.Networks}}",
    ])?;
    Ok(out.trim().to_string())
}

/// `--network host` (Swarm's predefined `host` network): every task runs in its node's
/// own namespace and serves on the node's port itself, the client's address unchanged;
/// the spec names the predefined network's swarm id, which `network inspect` shows with
/// scope `swarm` (and `service inspect --pretty` as `host`). `host` next to another
/// network or with a mesh port is refused at create (dockerd accepts the spec and then
/// rejects every task); `none` is not a swarm network (404 as in dockerd); `bridge` puts
/// the task on the node's default bridge.
#[test]
fn services_on_the_host_network_serve_from_the_nodes_namespace() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let mut c = Cluster::new(2)?.with_task_cleanup();
    c.form(1)?;
    let client = NetnsGuard::create()?;
    let client_addr = c.lan.attach(client.name())?;
    let name = format!("onhost{}", std::process::id());
    let server = PEER_SERVER.replace("-p 80 ", "-p 8089 ");
    c.h(0).docker_ok(&[
        "service",
        "create",
        "--detach",
        "-q",
        "--name",
        &name,
        "--mode",
        "global",
        "--network",
        "host",
        "--publish",
        "published=8089,target=8089,mode=host",
        &img,
        "sh",
        "-c",
        &server,
    ])?;
    let hosts = wait_tasks(&c, &name, 2)?;
    ensure!(hosts == [0, 1], "{hosts:?}");
    for (i, h) in c.hosts.iter().enumerate() {
        let url = format!("http://{}:8089/cgi-bin/peer", h.addr);
        let body = retry(CONVERGE, || fetch(&client, &url))
            .with_context(|| format!("host {i} ({url}) never answered"))?;
        ensure!(peer(&body) == client_addr, "{body:?}");
        let mode = task_networks(&c, i, &name)?;
        ensure!(mode == "host", "host {i}: task networks {mode:?}");
    }
    let vips = c.h(0).docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Endpoint.VirtualIPs}}",
        &name,
    ])?;
    let vips: Value = serde_json::from_str(vips.trim())?;
    let net_id = vips[0]["NetworkID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(
        vips.as_array().map(Vec::len) == Some(1) && vips[0].get("Addr").is_none(),
        "{vips}"
    );
    let net = c.h(1).docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{.Name}} {{.Scope}} {{.Driver}}",
        &net_id,
    ])?;
    ensure!(net.trim() == "host swarm host", "{net}");
    let pretty = c
        .h(0)
        .docker_ok(&["service", "inspect", "--pretty", &name])?;
    ensure!(pretty.contains("Networks: host"), "{pretty}");

    let refused = |args: &[&str], want: &str| -> Result<()> {
        let mut all = vec!["service", "create", "--detach", "--name", "refused"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[img.as_str(), "sleep", "600"]);
        let out = c.h(0).docker(&all)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
        Ok(())
    };
    c.h(0)
        .docker_ok(&["network", "create", "-d", "overlay", "hostov"])?;
    refused(
        &["--network", "host", "--network", "hostov"],
        "cannot be connected to any other network",
    )?;
    refused(
        &["--network", "host", "--publish", "8090:80"],
        "cannot publish ports through the routing mesh",
    )?;
    refused(
        &[
            "--network",
            "host",
            "--publish",
            "mode=host,published=8090,target=80",
        ],
        "published port 8090 must equal target port 80",
    )?;
    refused(&["--network", "none"], "network none not found")?;
    refused(
        &["--network", "name=bridge,alias=front"],
        "network aliases are not supported on the bridge network",
    )?;
    ensure!(
        c.h(0)
            .docker(&["service", "inspect", "refused"])?
            .status
            .code()
            == Some(1),
        "a refused service was created"
    );

    let bridged = format!("onbridge{}", std::process::id());
    c.h(0).docker_ok(&[
        "service",
        "create",
        "--detach",
        "-q",
        "--name",
        &bridged,
        "--network",
        "bridge",
        &img,
        "sleep",
        "600",
    ])?;
    let on = wait_tasks(&c, &bridged, 1)?;
    let nets = task_networks(&c, on[0], &bridged)?;
    ensure!(nets == "bridge", "{nets:?}");
    // `--network-rm bridge`: the CLI looks the name up with `scope=swarm`, which must give
    // the swarm's predefined network the spec holds, not the node's own.
    c.h(0).docker_ok(&[
        "service",
        "update",
        "--detach",
        "--network-rm",
        "bridge",
        &bridged,
    ])?;
    let left = c.h(0).docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.Networks}}",
        &bridged,
    ])?;
    ensure!(
        matches!(left.trim(), "null" | "[]"),
        "after --network-rm bridge: {left}"
    );
    c.h(0).docker_ok(&["service", "rm", &name, &bridged])?;
    drop(client);
    Ok(())
}
