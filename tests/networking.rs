//! Bridge networking through the docker CLI: published ports (locally and from a second
//! "host"), user networks with name resolution and isolation, the network commands, clean
//! teardown, and ports that survive a daemon crash. Each daemon runs in its own network
//! namespace; the second host is another namespace joined to it by a veth pair.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use berth_testkit::daemon::{retry, Berthd, DockerEnv, NetnsGuard};

type Env = DockerEnv;

/// `curl` from the daemon's host namespace.
fn curl_on_host(e: &Env, url: &str) -> Result<String> {
    let out = e.d.in_netns("curl", &["-s", "-m", "5", url]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nft_ruleset(e: &Env) -> String {
    e.d.in_netns("nft", &["list", "ruleset"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn links(e: &Env) -> String {
    Command::new("ip")
        .args(["-n", &netns_name(&e.d), "-o", "link"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn netns_name(d: &Berthd) -> String {
    d.netns()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd.status()?;
    anyhow::ensure!(st.success(), "{cmd:?} failed");
    Ok(())
}

#[test]
fn published_port_answers_locally_and_from_a_second_host() -> Result<()> {
    let e = Env::new()?;
    let web = e.img("web:latest");
    e.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "18080:8080",
        &web,
        "httpd",
        "-f",
        "-v",
        "-p",
        "8080",
        "-h",
        "/www",
    ])?;
    let page = retry(Duration::from_secs(10), || {
        let p = curl_on_host(&e, "http://127.0.0.1:18080/")?;
        Ok(p.contains("hello from web").then_some(p))
    })?;
    assert_eq!(page, berth_testkit::image::WEB_INDEX_HTML);
    let ports = e.ok(&["port", "web"])?;
    assert!(ports.contains("8080/tcp -> 0.0.0.0:18080"), "{ports}");

    // A second host: its own namespace, a veth pair to the daemon's host.
    let other = NetnsGuard::create()?;
    let tag = std::process::id() % 200 + 20;
    let (va, vb) = (format!("bta{tag}"), format!("btb{tag}"));
    let (host_ip, peer_ip) = (format!("10.251.{tag}.1"), format!("10.251.{tag}.2"));
    let a = netns_name(&e.d);
    run(Command::new("ip").args([
        "link",
        "add",
        &va,
        "netns",
        &a,
        "type",
        "veth",
        "peer",
        "name",
        &vb,
        "netns",
        other.name(),
    ]))?;
    run(Command::new("ip").args([
        "-n",
        &a,
        "addr",
        "add",
        &format!("{host_ip}/24"),
        "dev",
        &va,
    ]))?;
    run(Command::new("ip").args(["-n", &a, "link", "set", &va, "up"]))?;
    run(Command::new("ip").args([
        "-n",
        other.name(),
        "addr",
        "add",
        &format!("{peer_ip}/24"),
        "dev",
        &vb,
    ]))?;
    run(Command::new("ip").args(["-n", other.name(), "link", "set", &vb, "up"]))?;
    let url = format!("http://{host_ip}:18080/");
    let page = retry(Duration::from_secs(10), || {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", other.path().display()))
            .args(["curl", "-s", "-m", "5", &url])
            .output()?;
        let p = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(p.contains("hello from web").then_some(p))
    })?;
    assert_eq!(page, berth_testkit::image::WEB_INDEX_HTML);
    // httpd saw the second host's own address: no SNAT on the way in.
    let logs = retry(Duration::from_secs(5), || {
        let out = e.d.docker(&["logs", "web"])?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(text.contains(&peer_ip).then_some(text))
    });
    assert!(logs.is_ok(), "httpd never logged {peer_ip}");

    // A port already published is refused with a clear error.
    let busy = e.d.docker(&["run", "-d", "-p", "18080:8080", &web])?;
    assert!(!busy.status.success());
    let err = String::from_utf8_lossy(&busy.stderr).to_lowercase();
    assert!(
        err.contains("18080") && (err.contains("in use") || err.contains("allocated")),
        "{err}"
    );
    Ok(())
}

#[test]
fn user_networks_resolve_names_and_stay_apart() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    let web = e.img("web:latest");
    e.ok(&["network", "create", "neta"])?;
    e.ok(&["network", "create", "netb"])?;
    e.ok(&["run", "-d", "--name", "w1", "--network", "neta", &web])?;
    e.ok(&[
        "run",
        "-d",
        "--name",
        "a1",
        "--network",
        "neta",
        "--network-alias",
        "db",
        &bb,
        "sleep",
        "60",
    ])?;
    let page = e.ok(&[
        "run",
        "--rm",
        "--network",
        "neta",
        &bb,
        "timeout",
        "10",
        "wget",
        "-q",
        "-O",
        "-",
        "http://w1:8080/",
    ])?;
    assert_eq!(page, berth_testkit::image::WEB_INDEX_HTML);
    // By container name, and by --network-alias.
    for name in ["a1", "db"] {
        let ping = e.d.docker(&[
            "run",
            "--rm",
            "--network",
            "neta",
            &bb,
            "ping",
            "-c",
            "1",
            "-W",
            "3",
            name,
        ])?;
        assert!(
            ping.status.success(),
            "ping {name}: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
    }

    let ip = e.ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Networks.neta.IPAddress}}",
        "a1",
    ])?;
    let ip = ip.trim();
    assert!(!ip.is_empty());
    let cross = e.d.docker(&[
        "run",
        "--rm",
        "--network",
        "netb",
        &bb,
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        ip,
    ])?;
    assert!(!cross.status.success(), "netb reached neta's container");
    let name = e.d.docker(&[
        "run",
        "--rm",
        "--network",
        "netb",
        &bb,
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "a1",
    ])?;
    assert!(
        !name.status.success(),
        "netb resolved neta's container name"
    );
    // Nor by asking neta's DNS server (its gateway, reachable through the host) directly:
    // it answers its own network only (REFUSED), as Docker's 127.0.0.11 does.
    let gw = e.ok(&[
        "network",
        "inspect",
        "--format",
        "{{(index .IPAM.Config 0).Gateway}}",
        "neta",
    ])?;
    let direct = e.d.docker(&[
        "run",
        "--rm",
        "--network",
        "netb",
        &bb,
        "nslookup",
        "a1",
        gw.trim(),
    ])?;
    let said = String::from_utf8_lossy(&direct.stdout);
    assert!(
        !said.contains(ip),
        "neta's DNS server answered a netb container: {said}"
    );
    let own = e.ok(&[
        "run",
        "--rm",
        "--network",
        "neta",
        &bb,
        "nslookup",
        "a1",
        gw.trim(),
    ])?;
    assert!(own.contains(ip), "neta's own container asked: {own}");

    // An internal network resolves its names too (its own embedded DNS server, as dockerd
    // answers on 127.0.0.11 there), and still has no way out.
    e.ok(&["network", "create", "--internal", "neti"])?;
    e.ok(&[
        "run",
        "-d",
        "--name",
        "i1",
        "--network",
        "neti",
        &bb,
        "sleep",
        "60",
    ])?;
    let ping_from_neti = |target: &str| {
        e.d.docker(&[
            "run",
            "--rm",
            "--network",
            "neti",
            &bb,
            "ping",
            "-c",
            "1",
            "-W",
            "3",
            target,
        ])
    };
    let inside = ping_from_neti("i1")?;
    assert!(
        inside.status.success(),
        "ping i1 on the internal network: {}{}",
        String::from_utf8_lossy(&inside.stdout),
        String::from_utf8_lossy(&inside.stderr)
    );
    let out = ping_from_neti(ip)?;
    assert!(
        !out.status.success(),
        "the internal network reached neta's container"
    );
    Ok(())
}

#[test]
fn network_commands_create_inspect_connect_disconnect_remove() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    let id = e.ok(&[
        "network",
        "create",
        "--subnet",
        "10.252.7.0/24",
        "--gateway",
        "10.252.7.1",
        "net1",
    ])?;
    assert_eq!(id.trim().len(), 64);
    let ls = e.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"])?;
    for want in ["bridge bridge", "host host", "none null", "net1 bridge"] {
        assert!(ls.lines().any(|l| l == want), "ls lacks {want}: {ls}");
    }
    let subnet = e.ok(&[
        "network",
        "inspect",
        "--format",
        "{{(index .IPAM.Config 0).Subnet}} {{(index .IPAM.Config 0).Gateway}}",
        "net1",
    ])?;
    assert_eq!(subnet.trim(), "10.252.7.0/24 10.252.7.1");

    e.ok(&["run", "-d", "--name", "cc", &bb, "sleep", "60"])?;
    // `--ip` (EndpointConfig.IPAMConfig) is refused by name, not dropped: before, connect
    // answered 200 and the container got the next free address.
    let ip =
        e.d.docker(&["network", "connect", "--ip", "10.252.7.200", "net1", "cc"])?;
    let err = String::from_utf8_lossy(&ip.stderr);
    assert!(
        !ip.status.success() && err.contains("EndpointConfig.IPAMConfig is not supported by berth"),
        "connect --ip: {err}"
    );
    e.ok(&["network", "connect", "--alias", "ccalias", "net1", "cc"])?;
    let addrs = e.ok(&["exec", "cc", "ip", "-4", "-o", "addr"])?;
    assert!(addrs.contains("10.252.7."), "{addrs}");
    // Started on the default bridge (the host's resolvers), connected later: it now asks
    // net1's embedded DNS and resolves its new neighbours, as with dockerd.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "dd",
        "--network",
        "net1",
        &bb,
        "sleep",
        "60",
    ])?;
    let dd_ip = e.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.net1.IPAddress}}",
        "dd",
    ])?;
    let looked = e.ok(&["exec", "cc", "nslookup", "dd"])?;
    assert!(
        looked.contains(dd_ip.trim()),
        "nslookup dd from cc: {looked}"
    );
    // On a second user network too: one server (net1's) answers the names of both, as
    // Docker's per-container resolver does; a container of net2 alone still gets none of
    // net1's.
    e.ok(&["network", "create", "--subnet", "10.252.8.0/24", "net2"])?;
    e.ok(&[
        "run",
        "-d",
        "--name",
        "ee",
        "--network",
        "net2",
        &bb,
        "sleep",
        "60",
    ])?;
    e.ok(&["network", "connect", "net2", "cc"])?;
    let ee_ip = e.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.net2.IPAddress}}",
        "ee",
    ])?;
    for (name, ip) in [("ee", ee_ip.trim()), ("dd", dd_ip.trim())] {
        let looked = e.ok(&["exec", "cc", "nslookup", name])?;
        assert!(looked.contains(ip), "nslookup {name} from cc: {looked}");
    }
    let stray = e.d.docker(&["exec", "ee", "nslookup", "dd"])?;
    assert!(
        !String::from_utf8_lossy(&stray.stdout).contains(dd_ip.trim()),
        "ee (net2 only) resolved net1's dd"
    );
    e.ok(&["network", "disconnect", "net2", "cc"])?;
    e.ok(&["rm", "-f", "dd", "ee"])?;
    e.ok(&["network", "rm", "net2"])?;
    let members = e.ok(&[
        "network",
        "inspect",
        "--format",
        "{{range .Containers}}{{.Name}}{{end}}",
        "net1",
    ])?;
    assert_eq!(members.trim(), "cc");
    let busy = e.d.docker(&["network", "rm", "net1"])?;
    assert!(
        !busy.status.success(),
        "removing a network in use must fail"
    );
    e.ok(&["network", "disconnect", "net1", "cc"])?;
    let addrs = e.ok(&["exec", "cc", "ip", "-4", "-o", "addr"])?;
    assert!(!addrs.contains("10.252.7."), "{addrs}");
    // Off its last network with embedded DNS: its resolvers are the host's again, not a
    // server that no longer answers it.
    let resolv = e.ok(&["exec", "cc", "cat", "/etc/resolv.conf"])?;
    assert!(
        !resolv.contains("10.252.7.1") && resolv.contains("nameserver "),
        "{resolv}"
    );
    e.ok(&["network", "rm", "net1"])?;
    assert!(!e
        .d
        .docker(&["network", "inspect", "net1"])?
        .status
        .success());
    let bridge_rm = e.d.docker(&["network", "rm", "bridge"])?;
    assert!(!bridge_rm.status.success());

    // --network none: only lo; host: the daemon host's interfaces.
    let none = e.ok(&["run", "--rm", "--network", "none", &bb, "ip", "-o", "link"])?;
    assert_eq!(none.lines().count(), 1, "{none}");
    Ok(())
}

#[test]
fn everything_is_gone_after_rm_and_daemon_stop() -> Result<()> {
    let mut e = Env::new()?;
    let web = e.img("web:latest");
    e.ok(&["network", "create", "gone"])?;
    e.ok(&["run", "-d", "-p", "18081:8080", &web])?;
    e.ok(&["run", "-d", "--network", "gone", &web])?;
    assert!(nft_ruleset(&e).contains("table ip berth"));
    assert!(links(&e).contains("berth0"));
    let ids = e.ok(&["ps", "-aq"])?;
    for id in ids.split_whitespace() {
        e.ok(&["rm", "-f", id])?;
    }
    e.ok(&["network", "rm", "gone"])?;
    e.d.stop()?;
    let links = links(&e);
    assert!(
        !links.contains("veth") && !links.contains("berth0") && !links.contains("br-"),
        "{links}"
    );
    assert!(!nft_ruleset(&e).contains("berth"), "{}", nft_ruleset(&e));
    e.d.restart()?;
    Ok(())
}

#[test]
fn ports_survive_a_daemon_kill_without_duplicate_rules() -> Result<()> {
    let mut e = Env::new()?;
    let web = e.img("web:latest");
    e.ok(&["pull", &web])?;
    for i in 0..5 {
        e.ok(&["run", "-d", "-p", &format!("{}:8080", 18090 + i), &web])?;
    }
    let answer_all = |e: &Env| -> Result<()> {
        for i in 0..5 {
            let url = format!("http://127.0.0.1:{}/", 18090 + i);
            retry(Duration::from_secs(10), || {
                Ok(curl_on_host(e, &url)?
                    .contains("hello from web")
                    .then_some(()))
            })?;
        }
        Ok(())
    };
    answer_all(&e)?;
    let before = nft_ruleset(&e);
    e.d.kill9()?;
    // Published ports keep answering while no daemon runs.
    answer_all(&e)?;
    e.d.restart()?;
    answer_all(&e)?;
    let after = nft_ruleset(&e);
    let dnat = |r: &str| r.lines().filter(|l| l.contains("dnat")).count();
    assert_eq!(
        dnat(&before),
        dnat(&after),
        "before:\n{before}\nafter:\n{after}"
    );
    assert_eq!(after.matches("table ip berth").count(), 1);
    Ok(())
}

#[test]
fn publish_all_and_address_bound_ports() -> Result<()> {
    let e = Env::new()?;
    let web = e.img("web:latest");
    // -P publishes the image's exposed port on a daemon-chosen host port.
    e.ok(&["run", "-d", "--name", "pub", "-P", &web])?;
    let port = e.ok(&["port", "pub", "8080/tcp"])?;
    let host_port: u16 = port
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    assert!(host_port >= 1024, "{port}");
    let url = format!("http://127.0.0.1:{host_port}/");
    retry(Duration::from_secs(10), || {
        Ok(curl_on_host(&e, &url)?
            .contains("hello from web")
            .then_some(()))
    })?;
    // -p ip:hostPort:containerPort binds that address only.
    e.ok(&[
        "run",
        "-d",
        "--name",
        "lo",
        "-p",
        "127.0.0.1:18070:8080",
        &web,
    ])?;
    retry(Duration::from_secs(10), || {
        Ok(curl_on_host(&e, "http://127.0.0.1:18070/")?
            .contains("hello from web")
            .then_some(()))
    })?;
    let ports = e.ok(&["port", "lo"])?;
    assert!(ports.contains("127.0.0.1:18070"), "{ports}");
    Ok(())
}
