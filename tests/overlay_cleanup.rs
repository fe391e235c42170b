//! Overlay cleanup (issue #16), driven with the real docker CLI against a berth cluster of
//! 3 hosts ([`Cluster`]: each berthd in its own network namespace and data root, on one
//! veth LAN), with an encrypted and a plain attachable overlay and a container on each
//! network on every host:
//!
//! - host 2 leaves (`docker swarm leave --force` on it, `docker node rm` on the manager):
//!   no other host keeps an FDB entry pointing at its underlay or tunnel address, nor a
//!   neighbour entry of its containers, and their WireGuard devices drop its peer (their
//!   logs say so, naming the node). How long that took is printed; only the end state is
//!   asserted (generous deadline). Host 2 keeps no VXLAN, bridge, WireGuard device or
//!   overlay nftables table.
//! - host 0's berthd is killed with SIGKILL and started again: it reconciles what it
//!   finds (one WireGuard device of the same name, one VXLAN device per network, no
//!   duplicate) and the encrypted overlay carries traffic again.
//! - removing the encrypted network removes its VXLAN device, bridge and the WireGuard
//!   device everywhere; removing the plain one leaves nothing of the overlays.
//!
//! Cleanup: [`Cluster::with_task_cleanup`] removes every container, then every berthd and
//! netns goes.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use berth_testkit::cluster::Cluster;
use berth_testkit::daemon::retry;
use serde_json::Value;

/// The end-state deadline (3 berthd share 2 cores with other work); the measured times
/// are printed, never asserted.
const DEADLINE: Duration = Duration::from_secs(90);

/// Runs a program in host `i`'s network namespace; its stdout.
fn in_host(c: &Cluster, i: usize, program: &str, args: &[&str]) -> Result<String> {
    let out = c.h(i).in_netns(program, args).output()?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (address, MAC) of container `name` (on host `i`) on `net`.
fn endpoint(c: &Cluster, i: usize, name: &str, net: &str) -> Result<(String, String)> {
    let v: Value = serde_json::from_str(&c.h(i).docker_ok(&["inspect", name])?)?;
    let ep = &v[0]["NetworkSettings"]["Networks"][net];
    Ok((
        ep["IPAddress"].as_str().unwrap_or_default().to_string(),
        ep["MacAddress"].as_str().unwrap_or_default().to_string(),
    ))
}

/// The VNI of overlay `net`.
fn vni(c: &Cluster, net: &str) -> Result<u32> {
    let v: Value = serde_json::from_str(&c.h(0).docker_ok(&["network", "inspect", net])?)?;
    Ok(
        v[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
            .as_str()
            .unwrap_or_default()
            .parse()?,
    )
}

/// The FDB destination host `i` holds for `mac`, if any.
fn fdb_dst(c: &Cluster, i: usize, mac: &str) -> Result<Option<String>> {
    let fdb = in_host(c, i, "bridge", &["fdb", "show"])?;
    Ok(fdb
        .lines()
        .filter(|l| l.starts_with(mac))
        .find_map(|l| l.split(" dst ").nth(1)?.split_whitespace().next())
        .map(str::to_string))
}

/// The names of host `i`'s links of type `kind` (`ip -d link`'s `<kind> ` detail line).
fn links_of_kind(c: &Cluster, i: usize, kind: &str) -> Result<Vec<String>> {
    let out = in_host(c, i, "ip", &["-d", "-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter(|l| l.contains(&format!(" {kind} ")))
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect())
}

/// What host `i` keeps of the overlays: links with berth's overlay alias, VXLAN and TUN
/// (userspace WireGuard) or WireGuard devices, the overlay nftables table. Empty: clean.
fn overlay_residue(c: &Cluster, i: usize) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let links = in_host(c, i, "ip", &["-d", "-o", "link", "show"])?;
    for l in links.lines() {
        if l.contains("berth-ovl")
            || l.contains(" vxlan ")
            || l.contains(" tun ")
            || l.contains("wireguard")
        {
            left.push(l.to_string());
        }
    }
    let tables = in_host(c, i, "nft", &["list", "tables"])?;
    left.extend(
        tables
            .lines()
            .filter(|l| l.contains("berth_ovl"))
            .map(str::to_string),
    );
    Ok(left)
}

/// Polls until `f` holds no residue; prints the time it took; fails with the residue left
/// at the deadline.
fn until_clean(what: &str, f: impl Fn() -> Result<Vec<String>>) -> Result<()> {
    let started = Instant::now();
    let done = retry(DEADLINE, || Ok(f()?.is_empty().then_some(())));
    match done {
        Ok(()) => {
            println!("{what}: clean after {:?}", started.elapsed());
            Ok(())
        }
        Err(_) => anyhow::bail!("{what}: still there after {DEADLINE:?}: {:#?}", f()?),
    }
}

#[test]
fn leaving_crashing_and_removing_leave_no_overlay_residue() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let mut c = Cluster::new(3)?.with_task_cleanup();
    c.form(1)?;
    let pid = std::process::id();
    let (enc, plain) = (format!("enc{pid}"), format!("pln{pid}"));
    c.h(0).docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--opt",
        "encrypted",
        &enc,
    ])?;
    c.h(0)
        .docker_ok(&["network", "create", "-d", "overlay", "--attachable", &plain])?;
    let (enc_vni, plain_vni) = (vni(&c, &enc)?, vni(&c, &plain)?);
    for i in [1, 2] {
        retry(DEADLINE, || {
            let out = c
                .h(i)
                .docker_ok(&["network", "ls", "--format", "{{.Name}}"])?;
            Ok((out.contains(&enc) && out.contains(&plain)).then_some(()))
        })?;
    }
    let name = |net: &str, i: usize| format!("{net}-c{i}");
    for i in 0..3 {
        for net in [&enc, &plain] {
            c.h(i).docker_ok(&[
                "run",
                "-d",
                "--name",
                &name(net, i),
                "--network",
                net,
                &img,
                "sleep",
                "3600",
            ])?;
        }
    }
    // Every pair talks over the encrypted overlay (host 0 to hosts 1 and 2).
    let mut eps = Vec::new();
    for i in 0..3 {
        eps.push((
            endpoint(&c, i, &name(&enc, i), &enc)?,
            endpoint(&c, i, &name(&plain, i), &plain)?,
        ));
    }
    for j in [1, 2] {
        let ip = &eps[j].0 .0;
        let out = c.h(0).docker_ok(&[
            "exec",
            &name(&enc, 0),
            "sh",
            "-c",
            &format!("ping -c 1 -W 10 {ip} >/dev/null && echo ok"),
        ])?;
        ensure!(out.trim() == "ok", "host 0 to host {j} over {enc}: {out}");
    }
    // Host 0's entries for host 2: its underlay address (plain), its tunnel address
    // (encrypted).
    let h2_addr = c.hosts[2].addr.clone();
    let plain_dst = fdb_dst(&c, 0, &eps[2].1 .1)?;
    ensure!(
        plain_dst.as_deref() == Some(h2_addr.as_str()),
        "plain FDB entry of host 2's container: {plain_dst:?}"
    );
    let tunnel =
        fdb_dst(&c, 0, &eps[2].0 .1)?.context("no FDB entry for host 2's encrypted container")?;
    ensure!(
        tunnel.starts_with("169.254."),
        "encrypted FDB entry of host 2's container points at {tunnel}"
    );
    let h2_id = c.node_id(2)?;

    // Host 2 leaves; the manager removes it.
    let started = Instant::now();
    c.h(2).docker_ok(&["swarm", "leave", "--force"])?;
    // `node rm` as a user runs it. berth's leave already takes the node out of the
    // cluster when the managers answer ("not found" then); while the manager still counts
    // it as reachable it refuses ("is not down"), as Swarm does: retried.
    let rm = retry(DEADLINE, || {
        let out = c.h(0).docker(&["node", "rm", &h2_id])?;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        Ok((out.status.success() || err.contains("not found")).then_some(err))
    })
    .context("docker node rm of the left node never succeeded")?;
    println!(
        "node rm after the leave: {}",
        if rm.is_empty() { "removed" } else { rm.trim() }
    );
    println!("node rm succeeded {:?} after the leave", started.elapsed());
    let h2_ips = [eps[2].0 .0.clone(), eps[2].1 .0.clone()];
    for i in [0, 1] {
        let (tunnel, h2_addr, h2_ips) = (&tunnel, &h2_addr, &h2_ips);
        until_clean(&format!("host {i}'s entries for host 2"), || {
            let fdb = in_host(&c, i, "bridge", &["fdb", "show"])?;
            let neigh = in_host(&c, i, "ip", &["neigh", "show"])?;
            Ok(fdb
                .lines()
                .filter(|l| {
                    l.contains(&format!("dst {h2_addr} ")) || l.contains(&format!("dst {tunnel} "))
                })
                .chain(neigh.lines().filter(|l| {
                    h2_ips
                        .iter()
                        .any(|ip| l.split_whitespace().next() == Some(ip.as_str()))
                }))
                .map(str::to_string)
                .collect())
        })?;
        let log = c.h(i).log();
        ensure!(
            log.lines()
                .any(|l| l.contains("WireGuard peer removed") && l.contains(&h2_id)),
            "host {i}'s WireGuard device never dropped host 2's peer"
        );
    }
    until_clean("host 2's overlay links and table after leaving", || {
        overlay_residue(&c, 2)
    })?;
    // Its containers no longer claim the swarm's networks (dockerd: `Networks: {}`).
    for net in [&enc, &plain] {
        until_clean(
            &format!("host 2's container on {net} after leaving"),
            || {
                let shown = c.h(2).docker_ok(&[
                    "inspect",
                    "-f",
                    "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                    &name(net, 2),
                ])?;
                Ok(shown.split_whitespace().map(str::to_string).collect())
            },
        )?;
    }

    // Host 0's berthd dies with SIGKILL and starts again: it reconciles.
    let wg_before = links_of_kind(&c, 0, "tun")?;
    ensure!(wg_before.len() == 1, "host 0's TUN devices: {wg_before:?}");
    c.hosts[0].d.kill9()?;
    c.hosts[0].d.restart()?;
    let started = Instant::now();
    let ip1 = eps[1].0 .0.clone();
    retry(DEADLINE, || {
        let out = c.h(0).docker(&[
            "exec",
            &name(&enc, 0),
            "sh",
            "-c",
            &format!("ping -c 1 -W 2 {ip1} >/dev/null && echo ok"),
        ])?;
        Ok((String::from_utf8_lossy(&out.stdout).trim() == "ok").then_some(()))
    })
    .context("the encrypted overlay never carried traffic again after the restart")?;
    println!(
        "encrypted overlay answered {:?} after the restart",
        started.elapsed()
    );
    let wg_after = links_of_kind(&c, 0, "tun")?;
    ensure!(
        wg_after == wg_before,
        "TUN devices after the restart: {wg_after:?}, before: {wg_before:?}"
    );
    let mut vxlans = links_of_kind(&c, 0, "vxlan")?;
    vxlans.sort();
    ensure!(
        vxlans.len() == 2,
        "host 0's VXLAN devices after the restart: {vxlans:?}"
    );
    let out = in_host(&c, 0, "ip", &["-d", "-o", "link", "show"])?;
    for v in [enc_vni, plain_vni] {
        let n = out.matches(&format!("vxlan id {v} ")).count();
        ensure!(n == 1, "{n} VXLAN devices of VNI {v} on host 0: {out}");
    }

    // Removing the encrypted network removes its links everywhere, and the WireGuard
    // device with it; then the plain one, and nothing is left.
    for i in [0, 1] {
        c.h(i).docker_ok(&["rm", "-f", &name(&enc, i)])?;
    }
    c.h(1).docker_ok(&["network", "rm", &enc])?;
    for i in [0, 1] {
        until_clean(&format!("host {i}'s links of {enc}"), || {
            let out = in_host(&c, i, "ip", &["-d", "-o", "link", "show"])?;
            Ok(out
                .lines()
                .filter(|l| {
                    l.contains(&format!("vxlan id {enc_vni} "))
                        || l.contains(" tun ")
                        || l.contains("wireguard")
                        || l.contains(&format!("b{enc_vni:06x}:"))
                })
                .map(str::to_string)
                .collect())
        })?;
        let out = in_host(&c, i, "ip", &["-d", "-o", "link", "show"])?;
        ensure!(
            out.contains(&format!("vxlan id {plain_vni} ")),
            "host {i} lost the plain overlay: {out}"
        );
    }
    for i in [0, 1] {
        c.h(i).docker_ok(&["rm", "-f", &name(&plain, i)])?;
    }
    c.h(0).docker_ok(&["network", "rm", &plain])?;
    for i in [0, 1] {
        until_clean(
            &format!("host {i}'s overlays after removing both networks"),
            || overlay_residue(&c, i),
        )?;
    }
    Ok(())
}

/// A `docker run` on an overlay while the cluster has no quorum fails (no commit within
/// 10 s), but its endpoint was written and commits once quorum is back: the container was
/// never made, so nothing released it and `docker network rm` said "in use" forever. The
/// node's agent now releases endpoints whose container it does not know.
#[test]
fn an_endpoint_of_a_run_that_failed_without_quorum_is_released() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let mut c = Cluster::new(2)?.with_task_cleanup();
    c.form(2)?;
    let net = format!("phn{}", std::process::id());
    c.h(0)
        .docker_ok(&["network", "create", "-d", "overlay", "--attachable", &net])?;
    c.hosts[1].d.stop()?;
    let run = c.h(0).docker(&[
        "run",
        "-d",
        "--name",
        "phantom",
        "--network",
        &net,
        &img,
        "sleep",
        "600",
    ])?;
    ensure!(
        !run.status.success(),
        "run without quorum succeeded: {}",
        String::from_utf8_lossy(&run.stdout)
    );
    c.hosts[1].d.restart()?;
    let started = Instant::now();
    retry(DEADLINE, || {
        let rm = c.h(0).docker(&["network", "rm", &net])?;
        Ok(rm.status.success().then_some(()))
    })
    .with_context(|| format!("network {net} stayed in use: {}", c.h(0).log()))?;
    println!(
        "network removable {:?} after quorum came back",
        started.elapsed()
    );
    let ps = c.h(0).docker_ok(&["ps", "-aq"])?;
    ensure!(ps.trim().is_empty(), "a container was made after all: {ps}");
    Ok(())
}
