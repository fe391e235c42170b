//! Overlay networks as cluster objects, driven with the real docker CLI against a berth
//! cluster of 3 hosts ([`Cluster`]: each berthd in its own network namespace and data root,
//! on one veth LAN): created from any node (a worker too: the write is forwarded to the
//! leader), listed with scope `swarm` on every node, inspected in Docker's shape, addresses
//! allocated by the cluster (Swarm's default pool, or the pools given to `swarm init`),
//! removed from any node.
//!
//! Not yet here (the overlay data plane is not wired to containers in this branch):
//! containers and tasks on overlays. What berth refuses instead is checked: `docker run
//! --network <overlay>` is refused by name, a non-attachable overlay as swarmkit refuses it.
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
    // Containers: refused by name for now; a non-attachable overlay as swarmkit refuses it.
    let e = fails(
        &c,
        1,
        &["run", "--rm", "--network", &other, "busybox", "true"],
    )?;
    ensure!(e.contains("not manually attachable"), "{e}");
    let e = fails(
        &c,
        1,
        &["run", "--rm", "--network", &name, "busybox", "true"],
    )?;
    ensure!(e.contains("not supported by berth yet"), "{e}");
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
