//! Overlay networks as cluster objects, driven with the real docker CLI against a berth
//! cluster of 3 hosts ([`Cluster`]: each berthd in its own network namespace and data root,
//! on one veth LAN): created from any node (a worker too: the write is forwarded to the
//! leader), listed with scope `swarm` on every node, inspected in Docker's shape, addresses
//! allocated by the cluster (Swarm's default pool, or the pools given to `swarm init`),
//! removed from any node.
//!
//! Plain containers on attachable overlays across hosts: reach each other by name, alias
//! and address; a container on another overlay neither reaches nor resolves them; a
//! removed container leaves no forwarding or neighbour entry on the other hosts; removing
//! the networks leaves no VXLAN device, bridge or nftables table. A non-attachable overlay
//! is refused as swarmkit refuses it. Not yet here: service tasks on overlays.
//!
//! Cleanup: [`Cluster`]'s drop stops every berthd and removes its netns, then the LAN.

use anyhow::{ensure, Result};
use berth_testkit::cluster::Cluster;
use serde_json::Value;

/// `docker network inspect` of `name` on host `i`, parsed.
fn inspect(c: &Cluster, i: usize, name: &str) -> Result<Value> {
    let out = c.h(i).docker_ok(&["network", "inspect", name])?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v[0].clone())
}

/// `docker network ls` lines (`name driver scope`) on host `i`.
fn ls(c: &Cluster, i: usize) -> Result<Vec<String>> {
    let out = c.h(i).docker_ok(&[
        "network",
        "ls",
        "--format",
        "{{.Name}} {{.Driver}} {{.Scope}}",
    ])?;
    Ok(out.lines().map(str::to_string).collect())
}

/// The stderr of a docker command that must fail.
fn fails(c: &Cluster, i: usize, args: &[&str]) -> Result<String> {
    let out = c.h(i).docker(args)?;
    ensure!(
        !out.status.success(),
        "docker {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn overlay_networks_are_cluster_objects_seen_from_every_node() -> Result<()> {
    let c = Cluster::new(3)?;
    c.form(1)?;
    let name = format!("app{}", std::process::id());
    // From a worker: forwarded to the leader.
    let id = c.h(2).docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--subnet",
        "10.20.0.0/24",
        "--ip-range",
        "10.20.0.128/25",
        "--label",
        "team=a",
        "--opt",
        "encrypted",
        &name,
    ])?;
    let id = id.trim().to_string();
    ensure!(id.len() == 25, "swarm network id {id}");
    // Every node lists it (and the cluster's ingress) with scope swarm; its replica may lag
    // the write by a moment.
    for i in 0..3 {
        let lines = berth_testkit::daemon::retry(std::time::Duration::from_secs(30), || {
            let l = ls(&c, i)?;
            Ok(l.iter().any(|l| l.starts_with(&name)).then_some(l))
        })?;
        ensure!(
            lines.contains(&format!("{name} overlay swarm")),
            "host {i}: {lines:?}"
        );
        ensure!(
            lines.contains(&"ingress overlay swarm".to_string()),
            "host {i}: {lines:?}"
        );
        ensure!(
            lines.contains(&"bridge bridge local".to_string()),
            "host {i}: {lines:?}"
        );
    }
    let v = inspect(&c, 1, &name)?;
    ensure!(v["Id"] == id.as_str(), "{v}");
    ensure!(v["Scope"] == "swarm" && v["Driver"] == "overlay", "{v}");
    ensure!(v["Attachable"] == true && v["Ingress"] == false, "{v}");
    ensure!(v["Labels"]["team"] == "a", "{v}");
    ensure!(v["Options"]["encrypted"] == "", "{v}");
    ensure!(
        v["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "4097",
        "{v}"
    );
    let cfg = &v["IPAM"]["Config"][0];
    ensure!(
        cfg["Subnet"] == "10.20.0.0/24"
            && cfg["Gateway"] == "10.20.0.1"
            && cfg["IPRange"] == "10.20.0.128/25",
        "{v}"
    );
    // Filters by scope and driver.
    let swarm = c.h(0).docker_ok(&[
        "network",
        "ls",
        "--filter",
        "scope=swarm",
        "--format",
        "{{.Name}}",
    ])?;
    let mut swarm: Vec<&str> = swarm.lines().collect();
    swarm.sort();
    let mut want = vec!["ingress", name.as_str()];
    want.sort();
    ensure!(swarm == want, "{swarm:?}");
    // The ingress network: Swarm's 10.0.0.0/24, VNI 4096.
    let ingress = inspect(&c, 0, "ingress")?;
    ensure!(ingress["Ingress"] == true, "{ingress}");
    ensure!(
        ingress["IPAM"]["Config"][0]["Subnet"] == "10.0.0.0/24",
        "{ingress}"
    );
    ensure!(
        ingress["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "4096",
        "{ingress}"
    );
    // Without --subnet: the next /24 of the default pool, the next VNI.
    let other = format!("svc{}", std::process::id());
    c.h(0)
        .docker_ok(&["network", "create", "-d", "overlay", &other])?;
    let o = inspect(&c, 0, &other)?;
    ensure!(o["IPAM"]["Config"][0]["Subnet"] == "10.0.1.0/24", "{o}");
    ensure!(o["IPAM"]["Config"][0]["Gateway"] == "10.0.1.1", "{o}");
    ensure!(
        o["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "4098",
        "{o}"
    );
    ensure!(o["Attachable"] == false, "{o}");
    // Refusals: a taken name, an overlapping subnet, an unknown option.
    let e = fails(&c, 1, &["network", "create", "-d", "overlay", &name])?;
    ensure!(e.contains("already exists"), "{e}");
    // A local bridge network may not take an overlay's name either (dockerd's words).
    let e = fails(&c, 1, &["network", "create", &name])?;
    ensure!(
        e.contains(&format!("network with name {name} already exists")),
        "{e}"
    );
    let e = fails(
        &c,
        1,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.0.1.128/25",
            "overlap",
        ],
    )?;
    ensure!(e.contains("overlaps"), "{e}");
    let e = fails(
        &c,
        1,
        &[
            "network", "create", "-d", "overlay", "-o", "foo=bar", "badopt",
        ],
    )?;
    ensure!(e.contains("\"foo\" is not supported"), "{e}");
    // A non-attachable overlay is refused as swarmkit refuses it.
    let e = fails(
        &c,
        1,
        &["run", "--rm", "--network", &other, "busybox", "true"],
    )?;
    ensure!(e.contains("not manually attachable"), "{e}");
    // Removal from another node; gone everywhere.
    c.h(1).docker_ok(&["network", "rm", &name])?;
    c.h(2).docker_ok(&["network", "rm", &other])?;
    for i in 0..3 {
        berth_testkit::daemon::retry(std::time::Duration::from_secs(30), || {
            let l = ls(&c, i)?;
            Ok((!l
                .iter()
                .any(|l| l.starts_with(&name) || l.starts_with(&other)))
            .then_some(()))
        })?;
    }
    let e = fails(&c, 0, &["network", "inspect", &name])?;
    ensure!(e.contains("not found"), "{e}");
    Ok(())
}

#[test]
fn swarm_init_default_addr_pool_sets_the_subnets() -> Result<()> {
    let c = Cluster::new(1)?;
    let h = &c.hosts[0];
    h.d.docker_ok(&[
        "swarm",
        "init",
        "--advertise-addr",
        &h.addr,
        "--default-addr-pool",
        "10.200.0.0/16",
        "--default-addr-pool-mask-length",
        "26",
    ])?;
    let info = h.d.docker_ok(&[
        "info",
        "--format",
        "{{json .Swarm.Cluster.DefaultAddrPool}} {{.Swarm.Cluster.SubnetSize}}",
    ])?;
    ensure!(info.trim() == r#"["10.200.0.0/16"] 26"#, "{info}");
    let ingress = inspect(&c, 0, "ingress")?;
    ensure!(
        ingress["IPAM"]["Config"][0]["Subnet"] == "10.200.0.0/26",
        "{ingress}"
    );
    h.d.docker_ok(&["network", "create", "-d", "overlay", "pooled"])?;
    let v = inspect(&c, 0, "pooled")?;
    ensure!(v["IPAM"]["Config"][0]["Subnet"] == "10.200.0.64/26", "{v}");
    ensure!(v["IPAM"]["Config"][0]["Gateway"] == "10.200.0.65", "{v}");
    h.d.docker_ok(&["network", "rm", "pooled"])?;
    // A mask length the pool cannot hold is refused before anything is created.
    let c2 = Cluster::new(1)?;
    let h2 = &c2.hosts[0];
    let out = h2.d.docker(&[
        "swarm",
        "init",
        "--advertise-addr",
        &h2.addr,
        "--default-addr-pool",
        "10.200.0.0/16",
        "--default-addr-pool-mask-length",
        "31",
    ])?;
    ensure!(
        !out.status.success(),
        "swarm init with /31 subnets succeeded"
    );
    let state =
        h2.d.docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
    ensure!(state.trim() == "inactive", "{state}");
    Ok(())
}

/// Runs `ip`/`bridge`/`nft` in host `i`'s network namespace; its stdout.
fn in_host(c: &Cluster, i: usize, program: &str, args: &[&str]) -> Result<String> {
    let out = c.h(i).in_netns(program, args).output()?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn containers_on_an_attachable_overlay_reach_each_other_across_hosts() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let c = Cluster::new(3)?.with_task_cleanup();
    c.form(1)?;
    let pid = std::process::id();
    let (net, other) = (format!("ovl{pid}"), format!("far{pid}"));
    let (srv, cli, stranger) = (
        format!("srv{pid}"),
        format!("cli{pid}"),
        format!("str{pid}"),
    );
    let net_id = c
        .h(0)
        .docker_ok(&["network", "create", "-d", "overlay", "--attachable", &net])?;
    let net_id = net_id.trim().to_string();
    c.h(0)
        .docker_ok(&["network", "create", "-d", "overlay", "--attachable", &other])?;
    // Host 3's replica may lag the creation by a moment.
    for i in [1, 2] {
        berth_testkit::daemon::retry(std::time::Duration::from_secs(30), || {
            Ok(ls(&c, i)?
                .iter()
                .any(|l| l.starts_with(&other))
                .then_some(()))
        })?;
    }
    // A web server on host 3 (index 2), with an alias.
    c.h(2).docker_ok(&[
        "run",
        "-d",
        "--name",
        &srv,
        "--network",
        &net,
        "--network-alias",
        "webalias",
        &img,
        "sh",
        "-c",
        "mkdir -p /www && echo overlay-marker > /www/index.html && exec httpd -f -p 80 -h /www",
    ])?;
    let v: Value = serde_json::from_str(&c.h(2).docker_ok(&["inspect", &srv])?)?;
    let ep = &v[0]["NetworkSettings"]["Networks"][&net];
    ensure!(ep["NetworkID"] == net_id.as_str(), "{ep}");
    let ip = ep["IPAddress"].as_str().unwrap_or_default().to_string();
    ensure!(ip.starts_with("10.0."), "{ep}");
    let o: Vec<u8> = ip.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    let mac = format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
    ensure!(ep["MacAddress"] == mac.as_str(), "{ep}");
    // The network's inspect on host 3 lists it.
    let n = inspect(&c, 2, &net)?;
    ensure!(
        n["Containers"][v[0]["Id"].as_str().unwrap_or("-")]["Name"] == srv.as_str(),
        "{n}"
    );
    // A client on host 1 (index 0): by name, alias and address.
    c.h(0).docker_ok(&[
        "run",
        "-d",
        "--name",
        &cli,
        "--network",
        &net,
        &img,
        "sleep",
        "3600",
    ])?;
    let out = c.h(0).docker_ok(&[
        "exec",
        &cli,
        "sh",
        "-c",
        &format!(
            "ping -c 1 -W 5 {srv} >/dev/null && ping -c 1 -W 5 {ip} >/dev/null && \
             wget -q -O - http://{srv}/ && wget -q -O - http://{ip}/ && wget -q -O - http://webalias/"
        ),
    ])?;
    ensure!(
        out.matches("overlay-marker").count() == 3,
        "client on host 1 got: {out}"
    );
    // Host 1 holds the server's forwarding and neighbour entries now.
    let fdb = in_host(&c, 0, "bridge", &["fdb", "show"])?;
    ensure!(fdb.contains(&mac), "no FDB entry for {mac}: {fdb}");
    // A container on another overlay, on the same host as the client: neither resolves
    // nor reaches the server.
    c.h(0).docker_ok(&[
        "run",
        "-d",
        "--name",
        &stranger,
        "--network",
        &other,
        &img,
        "sleep",
        "3600",
    ])?;
    let out = c.h(0).docker_ok(&[
        "exec",
        &stranger,
        "sh",
        "-c",
        &format!(
            "nslookup {srv} >/dev/null 2>&1 && echo RESOLVED; \
             ping -c 2 -W 2 {ip} >/dev/null 2>&1 && echo REACHED; \
             timeout 5 wget -q -O - http://{ip}/ >/dev/null 2>&1 && echo FETCHED; echo done"
        ),
    ])?;
    ensure!(out.trim() == "done", "a container on {other} got: {out}");
    // The server goes: host 1 keeps no entry pointing at it.
    c.h(2).docker_ok(&["rm", "-f", &srv])?;
    let stale = || -> Result<Option<String>> {
        let fdb = in_host(&c, 0, "bridge", &["fdb", "show"])?;
        let neigh = in_host(&c, 0, "ip", &["neigh", "show"])?;
        let left: Vec<&str> = fdb
            .lines()
            .filter(|l| l.contains(&mac))
            .chain(
                neigh
                    .lines()
                    .filter(|l| l.split_whitespace().next() == Some(ip.as_str())),
            )
            .collect();
        Ok((!left.is_empty()).then(|| left.join("\n")))
    };
    let waited = berth_testkit::daemon::retry(std::time::Duration::from_secs(30), || {
        Ok(stale()?.is_none().then_some(()))
    });
    ensure!(
        waited.is_ok(),
        "host 1 keeps entries for the removed container: {:?}",
        stale()?
    );
    // Disconnect, then removal of everything: no VXLAN device, bridge or table left.
    c.h(0).docker_ok(&["network", "disconnect", &net, &cli])?;
    let v: Value = serde_json::from_str(&c.h(0).docker_ok(&["inspect", &cli])?)?;
    ensure!(v[0]["NetworkSettings"]["Networks"][&net].is_null(), "{v}");
    // Connected to the other overlay instead: it reaches the container there (by
    // address: its resolv.conf names the first network's server, as for bridges).
    c.h(0).docker_ok(&["network", "connect", &other, &cli])?;
    let v: Value = serde_json::from_str(&c.h(0).docker_ok(&["inspect", &stranger])?)?;
    let sip = v[0]["NetworkSettings"]["Networks"][&other]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let out = c.h(0).docker_ok(&[
        "exec",
        &cli,
        "sh",
        "-c",
        &format!("ping -c 1 -W 5 {sip} >/dev/null && echo ok"),
    ])?;
    ensure!(out.trim() == "ok", "{out}");
    c.h(0).docker_ok(&["rm", "-f", &cli, &stranger])?;
    c.h(0).docker_ok(&["network", "rm", &net, &other])?;
    for i in 0..3 {
        let clean = || -> Result<(bool, String)> {
            let links = in_host(&c, i, "ip", &["-d", "link", "show"])?;
            let tables = in_host(&c, i, "nft", &["list", "tables"])?;
            let clean = !links.contains("berth-ovl")
                && !links.contains("vxlan id")
                && !tables.contains("berth_ovl");
            Ok((clean, format!("{links}\n{tables}")))
        };
        let waited = berth_testkit::daemon::retry(std::time::Duration::from_secs(30), || {
            Ok(clean()?.0.then_some(()))
        });
        ensure!(
            waited.is_ok(),
            "host {i} keeps overlay residue: {}",
            clean()?.1
        );
    }
    Ok(())
}

/// An `--internal` overlay across two hosts: its containers reach each other by name (the
/// network's embedded DNS answers, as dockerd's does on internal networks; before, their
/// resolv.conf named the host's resolver, unreachable from an internal network, and no
/// name resolved), and still nothing outside: not another host's underlay address, not
/// the host itself beyond DNS.
#[test]
fn an_internal_overlay_resolves_names_and_has_no_way_out() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let c = Cluster::new(2)?.with_task_cleanup();
    c.form(1)?;
    let pid = std::process::id();
    let (net, a, b) = (format!("int{pid}"), format!("ia{pid}"), format!("ib{pid}"));
    c.h(0).docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--internal",
        &net,
    ])?;
    berth_testkit::daemon::retry(std::time::Duration::from_secs(30), || {
        Ok(ls(&c, 1)?.iter().any(|l| l.starts_with(&net)).then_some(()))
    })?;
    c.h(1).docker_ok(&[
        "run",
        "-d",
        "--name",
        &b,
        "--network",
        &net,
        &img,
        "sh",
        "-c",
        "mkdir -p /www && echo internal-ok > /www/index.html && exec httpd -f -p 80 -h /www",
    ])?;
    c.h(0).docker_ok(&[
        "run",
        "-d",
        "--name",
        &a,
        "--network",
        &net,
        &img,
        "sleep",
        "600",
    ])?;
    let page = berth_testkit::daemon::retry(std::time::Duration::from_secs(30), || {
        let out = c.h(0).docker(&[
            "exec",
            &a,
            "sh",
            "-c",
            &format!("timeout 5 wget -q -O - http://{b}/"),
        ])?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    })?;
    ensure!(page.trim() == "internal-ok", "by name: {page}");
    // No way out: not the other host's underlay address, not the host on the gateway.
    let gateway = inspect(&c, 0, &net)?["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(!gateway.is_empty(), "no gateway in the network's IPAM");
    // The gateway answers DNS only (ping would be answered on any other network).
    for target in [c.hosts[1].addr.clone(), gateway] {
        let out = c
            .h(0)
            .docker(&["exec", &a, "ping", "-c", "1", "-W", "2", &target])?;
        ensure!(
            !out.status.success(),
            "the internal overlay reached {target}"
        );
    }
    Ok(())
}

/// `--opt com.docker.network.driver.mtu` on an overlay (dockerd's overlay driver honours
/// it: networks whose underlay carries less than 1500 bytes): the containers' interface
/// on it has that MTU; a value that is no MTU, or one above what an encrypted overlay's
/// WireGuard carries, is refused by name. A container joining the default bridge, the
/// overlay, then a local network gets `eth0`..`eth2` (the drivers share the names).
#[test]
fn an_overlay_mtu_option_sets_the_containers_interface_mtu() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let c = Cluster::new(1)?.with_task_cleanup();
    c.form(1)?;
    let net = format!("mtu{}", std::process::id());
    const MTU: &str = "com.docker.network.driver.mtu";
    c.h(0).docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "-o",
        &format!("{MTU}=1400"),
        &net,
    ])?;
    let mtu = c.h(0).docker_ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        &img,
        "cat",
        "/sys/class/net/eth0/mtu",
    ])?;
    ensure!(mtu.trim() == "1400", "eth0 mtu {mtu:?}");
    // A container on the default bridge, then the overlay, then a local network: each
    // interface gets a free name (the local driver counted only its own: "eth1 exists").
    let both = format!("{net}c");
    let local = format!("{net}l");
    c.h(0)
        .docker_ok(&["run", "-d", "--name", &both, &img, "sleep", "600"])?;
    c.h(0).docker_ok(&["network", "connect", &net, &both])?;
    c.h(0).docker_ok(&["network", "create", &local])?;
    c.h(0).docker_ok(&["network", "connect", &local, &both])?;
    let links = c.h(0).docker_ok(&["exec", &both, "ls", "/sys/class/net"])?;
    let mut links: Vec<&str> = links.split_whitespace().collect();
    links.sort();
    ensure!(links == ["eth0", "eth1", "eth2", "lo"], "{links:?}");
    c.h(0).docker_ok(&["rm", "-f", &both])?;
    c.h(0).docker_ok(&["network", "rm", &local])?;
    for (opts, want) in [
        (
            vec!["-o", "com.docker.network.driver.mtu=big"],
            "invalid value \"big\"",
        ),
        (
            vec![
                "-o",
                "encrypted",
                "-o",
                "com.docker.network.driver.mtu=1450",
            ],
            "too large for an encrypted overlay",
        ),
    ] {
        let mut args = vec!["network", "create", "-d", "overlay"];
        args.extend(opts);
        args.push("mtubad");
        let out = c.h(0).docker(&args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    }
    c.h(0).docker_ok(&["network", "rm", &net])?;
    Ok(())
}
