//! Services on an overlay network, driven with the real docker CLI against a berth cluster
//! of 3 hosts ([`Cluster`]: each berthd in its own network namespace and data root, on one
//! veth LAN).
//!
//! `web` (3 replicas, one per host, a busybox httpd answering its container's hostname) on
//! an attachable overlay with a service alias, a `dnsrr` service on it too, a client
//! container on the overlay, and a stranger on another overlay:
//! - the client reaches `web` by name (its VIP, nftables DNAT in the client's namespace)
//!   and, over repeated requests, every replica answers; the alias resolves to the VIP;
//! - `tasks.web` (and `tasks.<alias>`) resolves to the three task addresses; the `dnsrr` service resolves to its
//!   task addresses and has no VIP; `service inspect` shows Swarm's `Endpoint.VirtualIPs`;
//! - a task reaches the service by name from its own namespace;
//! - scaled to 2, `tasks.web` and the VIP follow: only the 2 remaining replicas answer;
//! - the container on the other overlay neither resolves nor reaches `web`.
//!
//! Refusals: an unknown network (404 "network X not found") and a local network (the CLI,
//! resolving it with `scope=swarm`: 404 as with dockerd; the API given its name: 403,
//! dockerd's "cannot be used with services") write nothing.
//!
//! Cleanup: [`Cluster::with_task_cleanup`] removes every service and container, then each
//! berthd and its netns (its overlay links and tables go with the namespace), then the LAN.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_testkit::cluster::Cluster;
use berth_testkit::daemon::retry;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);
const FETCH_CONVERGE: Duration = Duration::from_secs(20);

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

/// The addresses busybox `nslookup NAME` prints for the name (after its `Name:` line);
/// empty when it does not resolve.
fn lookup(c: &Cluster, i: usize, container: &str, name: &str) -> Result<BTreeSet<String>> {
    let out = c.h(i).docker(&["exec", container, "nslookup", name])?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .filter(|a| !a.contains(':'))
        .collect())
}

/// Waits until `name` resolves in `container` to exactly `n` addresses; returns them.
fn resolves_to(
    c: &Cluster,
    i: usize,
    container: &str,
    name: &str,
    n: usize,
) -> Result<BTreeSet<String>> {
    let mut last = BTreeSet::new();
    retry(CONVERGE, || {
        last = lookup(c, i, container, name)?;
        Ok((last.len() == n).then(|| last.clone()))
    })
    .with_context(|| format!("{name} in {container}: never {n} addresses, last {last:?}"))
}

/// Running task containers of `service` on every host: (host, container name, hostname).
fn tasks(c: &Cluster, service: &str) -> Result<Vec<(usize, String, String)>> {
    let mut all = Vec::new();
    for i in 0..c.hosts.len() {
        let out = c.h(i).docker_ok(&[
            "ps",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
            "--format",
            "{{.Names}}",
        ])?;
        for name in out.lines() {
            let host = c
                .h(i)
                .docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", name])?;
            all.push((i, name.to_string(), host.trim().to_string()));
        }
    }
    Ok(all)
}

/// `rounds` requests to `url` from `container` on host `i`: the answers, one per line
/// (a failed request answers nothing).
fn fetch(c: &Cluster, i: usize, container: &str, url: &str, rounds: u32) -> Result<Vec<String>> {
    let script = format!(
        "for i in $(seq 1 {rounds}); do timeout 5 wget -q -O - {url} 2>/dev/null || echo FAILED; done"
    );
    let out = c
        .h(i)
        .docker_ok(&["exec", container, "sh", "-c", &script])?;
    Ok(out.lines().map(str::to_string).collect())
}

/// What a container's namespace holds (addresses, routes, nftables), for failure messages.
fn diag(c: &Cluster, i: usize, container: &str) -> String {
    let id = c
        .h(i)
        .docker_ok(&["inspect", "-f", "{{.Id}}", container])
        .unwrap_or_default();
    let netns = c.h(i).exec_root().join("netns").join(id.trim());
    let mut out = format!("{container} ({}):\n", netns.display());
    for args in [
        &["ip", "addr"][..],
        &["ip", "route"][..],
        &["nft", "list", "ruleset"][..],
    ] {
        let o = std::process::Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(args)
            .output();
        match o {
            Ok(o) => {
                out.push_str(&String::from_utf8_lossy(&o.stdout));
                out.push_str(&String::from_utf8_lossy(&o.stderr));
            }
            Err(e) => out.push_str(&e.to_string()),
        }
    }
    out
}

#[test]
fn a_service_on_an_overlay_is_reached_by_name_and_balanced_over_its_tasks() -> Result<()> {
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.reference("busybox:latest");
    let c = Cluster::new(3)?.with_task_cleanup();
    c.form(1)?;
    let pid = std::process::id();
    let (net, far, local) = (
        format!("ovl{pid}"),
        format!("far{pid}"),
        format!("loc{pid}"),
    );
    let (cli, stranger) = (format!("cli{pid}"), format!("str{pid}"));
    let net_id = c
        .h(0)
        .docker_ok(&["network", "create", "-d", "overlay", "--attachable", &net])?
        .trim()
        .to_string();
    c.h(0)
        .docker_ok(&["network", "create", "-d", "overlay", "--attachable", &far])?;
    for i in [1, 2] {
        retry(CONVERGE, || {
            let out = c
                .h(i)
                .docker_ok(&["network", "ls", "--format", "{{.Name}}"])?;
            Ok(out.lines().any(|l| l == far).then_some(()))
        })?;
    }

    // Refusals, nothing written.
    let e = fails(
        &c,
        1,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "nope",
            "--network",
            "nosuchnet",
            &img,
        ],
    )?;
    ensure!(e.contains("network nosuchnet not found"), "{e}");
    c.h(0).docker_ok(&["network", "create", &local])?;
    let e = fails(
        &c,
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "nope",
            "--network",
            &local,
            &img,
        ],
    )?;
    // The CLI resolves the name with `scope=swarm` first: not found, as with dockerd.
    ensure!(e.contains(&format!("network {local} not found")), "{e}");
    // A client that sends the name as it is (the API alone) gets dockerd's 403.
    let body = format!(
        r#"{{"Name":"nope","TaskTemplate":{{"ContainerSpec":{{"Image":"{img}"}},"Networks":[{{"Target":"{local}"}}]}}}}"#
    );
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(c.h(0).socket())
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
            "http://berth/services/create",
        ])
        .output()?;
    let answer = String::from_utf8_lossy(&out.stdout);
    ensure!(
        answer.ends_with("\n403")
            && answer.contains(&format!("The network {local} cannot be used with services")),
        "{answer}"
    );
    c.h(0).docker_ok(&["network", "rm", &local])?;
    let ls = c.h(0).docker_ok(&["service", "ls", "-q"])?;
    ensure!(ls.trim().is_empty(), "a refused service was written: {ls}");

    // `web`: 3 replicas answering their hostname; a dnsrr service; created from a worker.
    let web_cmd = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";
    c.h(2).docker_ok(&[
        "service",
        "create",
        "--detach",
        "-q",
        "--name",
        "web",
        "--replicas",
        "3",
        "--network",
        &format!("name={net},alias=site"),
        &img,
        "sh",
        "-c",
        web_cmd,
    ])?;
    c.h(0).docker_ok(&[
        "service",
        "create",
        "--detach",
        "-q",
        "--name",
        "rr",
        "--replicas",
        "2",
        "--endpoint-mode",
        "dnsrr",
        "--network",
        &net,
        &img,
        "sh",
        "-c",
        web_cmd,
    ])?;
    let web = retry(CONVERGE, || {
        let t = tasks(&c, "web")?;
        let hosts: BTreeSet<usize> = t.iter().map(|(i, _, _)| *i).collect();
        Ok((t.len() == 3 && hosts.len() == 3).then_some(t))
    })
    .with_context(|| {
        format!(
            "web never ran 3 tasks on 3 hosts: {}",
            c.h(0)
                .docker_ok(&["service", "ps", "--no-trunc", "web"])
                .unwrap_or_else(|e| e.to_string())
        )
    })?;
    let hostnames: BTreeSet<String> = web.iter().map(|(_, _, h)| h.clone()).collect();

    // Swarm's Endpoint: one VIP on the overlay; none for dnsrr.
    let v: Value = serde_json::from_str(&c.h(1).docker_ok(&["service", "inspect", "web"])?)?;
    let vips = v[0]["Endpoint"]["VirtualIPs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(vips.len() == 1, "{}", v[0]["Endpoint"]);
    ensure!(
        vips[0]["NetworkID"] == net_id.as_str(),
        "{}",
        v[0]["Endpoint"]
    );
    ensure!(
        v[0]["Endpoint"]["Spec"]["Mode"] == "vip",
        "{}",
        v[0]["Endpoint"]
    );
    ensure!(
        v[0]["Spec"]["TaskTemplate"]["Networks"][0]["Target"] == net_id.as_str(),
        "{}",
        v[0]["Spec"]
    );
    let addr = vips[0]["Addr"].as_str().unwrap_or_default();
    let vip = addr.split('/').next().unwrap_or_default().to_string();
    ensure!(addr.ends_with("/24") && vip.starts_with("10.0."), "{addr}");
    let v: Value = serde_json::from_str(&c.h(0).docker_ok(&["service", "inspect", "rr"])?)?;
    ensure!(
        v[0]["Endpoint"]["VirtualIPs"].is_null() && v[0]["Endpoint"]["Spec"]["Mode"] == "dnsrr",
        "{}",
        v[0]["Endpoint"]
    );

    // A client on the overlay (host 1) and a stranger on the other one (host 2).
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
    c.h(1).docker_ok(&[
        "run",
        "-d",
        "--name",
        &stranger,
        "--network",
        &far,
        &img,
        "sleep",
        "3600",
    ])?;
    let by_name = resolves_to(&c, 0, &cli, "web", 1)?;
    ensure!(
        by_name == BTreeSet::from([vip.clone()]),
        "web -> {by_name:?}"
    );
    let alias = resolves_to(&c, 0, &cli, "site", 1)?;
    ensure!(alias == by_name, "site -> {alias:?}");
    let task_ips = resolves_to(&c, 0, &cli, "tasks.web", 3)?;
    ensure!(!task_ips.contains(&vip), "tasks.web -> {task_ips:?}");
    // `tasks.<alias>` too, as libnetwork registers it (a stack's short service names are
    // such aliases).
    let alias_tasks = resolves_to(&c, 0, &cli, "tasks.site", 3)?;
    ensure!(alias_tasks == task_ips, "tasks.site -> {alias_tasks:?}");
    let rr = resolves_to(&c, 0, &cli, "rr", 2)?;
    let rr_tasks = resolves_to(&c, 0, &cli, "tasks.rr", 2)?;
    ensure!(rr == rr_tasks, "rr -> {rr:?}, tasks.rr -> {rr_tasks:?}");
    ensure!(rr.is_disjoint(&task_ips) && !rr.contains(&vip), "{rr:?}");

    // Every replica answers through the VIP, by name and by address.
    let mut seen = BTreeSet::new();
    let mut last = Vec::new();
    let all = retry(FETCH_CONVERGE, || {
        last = fetch(&c, 0, &cli, "http://web/", 30)?;
        seen.extend(last.iter().filter(|l| *l != "FAILED").cloned());
        Ok((seen == hostnames).then_some(()))
    });
    if all.is_err() && std::env::var_os("SVCNET_DEBUG").is_some() {
        eprintln!("DEBUG: cli {}; web {:?}; sleeping", cli, web);
        std::thread::sleep(Duration::from_secs(400));
    }
    ensure!(
        all.is_ok(),
        "replicas {hostnames:?}, answered {seen:?}; last round {last:?}; task {:?}: {:?}\n{}\n{}",
        task_ips.iter().next(),
        fetch(
            &c,
            0,
            &cli,
            &format!(
                "http://{}/",
                task_ips.iter().next().cloned().unwrap_or_default()
            ),
            1
        ),
        diag(&c, 0, &cli),
        diag(&c, web[0].0, &web[0].1),
    );
    let direct = fetch(&c, 0, &cli, &format!("http://{vip}/"), 6)?;
    ensure!(
        direct.iter().all(|l| hostnames.contains(l)),
        "by VIP: {direct:?}"
    );
    // Each task address answers with its own replica; the dnsrr service answers by name.
    for ip in &task_ips {
        let one = fetch(&c, 0, &cli, &format!("http://{ip}/"), 1)?;
        ensure!(hostnames.contains(&one[0]), "{ip}: {one:?}");
    }
    let rr_answers = fetch(&c, 0, &cli, "http://rr/", 2)?;
    ensure!(
        rr_answers.iter().all(|l| l != "FAILED" && !l.is_empty()),
        "rr: {rr_answers:?}"
    );
    // A task reaches the service from its own namespace (its VIP table and DNS).
    let (h, task_container, _) = &web[0];
    let from_task = fetch(&c, *h, task_container, "http://web/", 6)?;
    ensure!(
        from_task.iter().all(|l| hostnames.contains(l)),
        "from task {task_container}: {from_task:?}"
    );

    // The stranger on the other overlay neither resolves nor reaches web.
    let first_task = task_ips.iter().next().cloned().unwrap_or_default();
    let out = c.h(1).docker_ok(&[
        "exec",
        &stranger,
        "sh",
        "-c",
        &format!(
            "nslookup web 2>/dev/null | grep -q {vip} && echo RESOLVED; \
             timeout 5 wget -q -O - http://{vip}/ 2>/dev/null && echo REACHED; \
             timeout 5 wget -q -O - http://{first_task}/ 2>/dev/null && echo REACHED; echo done"
        ),
    ])?;
    ensure!(out.trim() == "done", "a container on {far} got: {out}");
    // A container on both overlays resolves the names of both (the server of its first
    // network answers for the other too).
    let dual = format!("dual{pid}");
    c.h(1).docker_ok(&[
        "run",
        "-d",
        "--name",
        &dual,
        "--network",
        &net,
        &img,
        "sleep",
        "3600",
    ])?;
    c.h(1).docker_ok(&["network", "connect", &far, &dual])?;
    let sip = c.h(1).docker_ok(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{far}\").IPAddress}}}}"),
        &stranger,
    ])?;
    ensure!(
        resolves_to(&c, 1, &dual, &stranger, 1)? == BTreeSet::from([sip.trim().to_string()]),
        "{dual} does not resolve {stranger} on {far}"
    );
    ensure!(
        resolves_to(&c, 1, &dual, "web", 1)? == BTreeSet::from([vip.clone()]),
        "{dual} does not resolve web on {net}"
    );
    c.h(1).docker_ok(&["rm", "-f", &dual])?;

    // A task shows its overlay as its network (inspect, `ps --filter network=`), not the
    // gateway bridge it gets out through; and a plain container of its host cannot reach
    // it there (Swarm's docker_gwbridge, inter-container communication off) nor on the
    // overlay.
    let shown = c.h(*h).docker_ok(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        task_container,
    ])?;
    ensure!(shown.trim() == net, "task networks: {shown:?}");
    let on_net = c.h(*h).docker_ok(&[
        "ps",
        "--filter",
        &format!("network={net}"),
        "--format",
        "{{.Names}}",
    ])?;
    ensure!(
        on_net.lines().any(|l| l == task_container),
        "ps --filter network={net}: {on_net:?}"
    );
    // Swarm's `NetworksAttachments` of each task: its overlay and its address there.
    let task_ids = c.h(0).docker_ok(&[
        "service",
        "ps",
        "-q",
        "--filter",
        "desired-state=running",
        "web",
    ])?;
    for id in task_ids.lines() {
        let v: Value = serde_json::from_str(&c.h(0).docker_ok(&[
            "inspect",
            "--type",
            "task",
            "--format",
            "{{json .NetworksAttachments}}",
            id,
        ])?)?;
        let on_net = v
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["Network"]["Spec"]["Name"] == net.as_str())
            .with_context(|| format!("task {id} attachments: {v}"))?;
        let addr = on_net["Addresses"][0].as_str().unwrap_or_default();
        ensure!(
            addr.ends_with("/24")
                && task_ips.contains(addr.trim_end_matches("/24"))
                && on_net["Network"]["ID"] == net_id.as_str(),
            "task {id}: {on_net}"
        );
    }
    let members = c.h(*h).docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.Name}} {{end}}",
        &net,
    ])?;
    ensure!(
        members.split_whitespace().any(|m| m == task_container),
        "network inspect {net} names {members:?}, not the task container {task_container}"
    );
    let gw_addrs = c.h(*h).docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.IPv4Address}} {{end}}",
        "docker_gwbridge",
    ])?;
    let gw_addrs: Vec<&str> = gw_addrs
        .split_whitespace()
        .filter_map(|a| a.split('/').next())
        .collect();
    ensure!(!gw_addrs.is_empty(), "no task on docker_gwbridge");
    // Nor through the node's routes into the overlay (the tasks' overlay addresses).
    let probe = gw_addrs
        .iter()
        .copied()
        .chain(task_ips.iter().map(String::as_str))
        .map(|a| format!("timeout 3 wget -q -O - http://{a}/ 2>/dev/null && echo REACHED {a};"))
        .collect::<String>();
    let plain = c.h(*h).docker_ok(&[
        "run",
        "--rm",
        &img,
        "sh",
        "-c",
        &format!("{probe} echo done"),
    ])?;
    ensure!(
        plain.trim() == "done",
        "a default-bridge container reached a task: {plain}"
    );

    // Scaled to 2: DNS and the VIP follow the tasks.
    c.h(0)
        .docker_ok(&["service", "scale", "--detach", "web=2"])?;
    let left = retry(CONVERGE, || {
        let t = tasks(&c, "web")?;
        Ok((t.len() == 2).then_some(t))
    })?;
    let left_names: BTreeSet<String> = left.iter().map(|(_, _, h)| h.clone()).collect();
    resolves_to(&c, 0, &cli, "tasks.web", 2)?;
    let mut last = Vec::new();
    let settled = retry(CONVERGE, || {
        last = fetch(&c, 0, &cli, "http://web/", 20)?;
        let got: BTreeSet<String> = last.iter().cloned().collect();
        Ok((got == left_names).then_some(()))
    });
    ensure!(
        settled.is_ok(),
        "after scale to 2 ({left_names:?}) the VIP answered {last:?}"
    );
    Ok(())
}
