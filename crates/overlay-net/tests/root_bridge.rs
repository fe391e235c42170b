//! Root tests of the real executor (rtnetlink + nft) in throwaway network namespaces: the
//! test's "host" is a fresh namespace, containers are namespaces, and a second host is a
//! namespace joined to the first by a veth pair. Nothing outside namespaces the tests
//! create is touched; every namespace is deleted on drop, pass or fail.

mod support;

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use berth_overlay_net::*;
use support::*;

fn hex(c: char) -> String {
    c.to_string().repeat(64)
}

fn driver(state: NetState) -> Result<HostBridgeDriver> {
    Ok(BridgeDriver::new(
        RtnetlinkExecutor::connect()?,
        NftCli::default(),
        BindProbe,
        state,
        DriverConfig::default(),
    ))
}

fn endpoint(id: char, network: &str, ns: &TestNetns, ports: &[&str]) -> EndpointRequest {
    EndpointRequest {
        endpoint_id: hex(id),
        container_id: format!("{id}{}", "0".repeat(63)),
        container_name: format!("c{id}"),
        aliases: vec![],
        network: network.into(),
        netns: ns.path(),
        address: None,
        ports: ports
            .iter()
            .map(|p| PortRequest::parse(p).unwrap())
            .collect(),
        dns_servers: vec![],
        taken_ifnames: Vec::new(),
    }
}

/// Links in `host` that berth created or that are bridges/veths other than the test's own
/// uplink.
async fn leftovers(links: &RtnetlinkExecutor) -> Result<Vec<String>> {
    Ok(links
        .list_links()
        .await?
        .into_iter()
        .filter(|l| {
            l.is_berths()
                || (matches!(l.kind.as_deref(), Some("bridge") | Some("veth"))
                    && !l.name.starts_with("uplink"))
        })
        .map(|l| l.name)
        .collect())
}

#[test]
fn containers_on_one_bridge_reach_each_other_and_other_bridges_are_isolated() -> Result<()> {
    require_root();
    let host = TestNetns::new()?;
    let (a, b, c) = (TestNetns::new()?, TestNetns::new()?, TestNetns::new()?);
    host.block_on(|| async {
        let mut d = driver(NetState::default())?;
        let bridge = d.ensure_default_network(&hex('0')).await?;
        assert_eq!(bridge.bridge, "berth0");
        let other = d
            .create_network(NetworkRequest {
                id: hex('f'),
                name: "other".into(),
                subnet: Some("10.251.0.0/24".parse()?),
                gateway: None,
                internal: false,
                mtu: Some(1400),
                icc: true,
            })
            .await?;
        let ea = d.connect(endpoint('a', "bridge", &a, &[])).await?;
        let eb = d.connect(endpoint('b', "bridge", &b, &[])).await?;
        let ec = d.connect(endpoint('c', "other", &c, &[])).await?;
        assert_eq!(ec.address, Ipv4Addr::new(10, 251, 0, 2));

        // Inside a container: eth0 with its address and lo up, default route via gateway.
        let addr = a.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?;
        assert!(addr.contains(&format!("{}/16", ea.address)), "{addr}");
        let route = a.ip(&["route", "show", "default"])?;
        assert!(
            route.contains(&format!("via {}", bridge.pool.gateway)),
            "{route}"
        );
        assert!(a.ip(&["link", "show", "lo"])?.contains("UP"));
        let [o1, o2, o3, o4] = ea.address.octets();
        let mac = format!("02:42:{o1:02x}:{o2:02x}:{o3:02x}:{o4:02x}");
        assert!(a.ip(&["link", "show", "eth0"])?.contains(&mac));
        assert!(a.ip(&["link", "show", "eth0"])?.contains("mtu 1500"));
        assert!(c.ip(&["link", "show", "eth0"])?.contains("mtu 1400"));

        assert!(
            a.reaches(&eb.address.to_string()),
            "a cannot reach b on the same bridge"
        );
        assert!(
            b.reaches(&ea.address.to_string()),
            "b cannot reach a on the same bridge"
        );
        assert!(
            c.reaches(&other.pool.gateway.to_string()),
            "c cannot reach its gateway"
        );
        assert!(
            !c.ping(&ea.address.to_string()),
            "c reached a across bridges"
        );
        assert!(
            !a.ping(&ec.address.to_string()),
            "a reached c across bridges"
        );

        // The isolation is berth's forward rule: without the table, the host routes
        // between the bridges and c reaches a.
        run(
            "ip",
            &[
                "netns", "exec", &host.name, "nft", "delete", "table", "ip", "berth",
            ],
        )?;
        assert!(
            c.reaches(&ea.address.to_string()),
            "routing between bridges is broken"
        );
        d.sync_firewall().await?;
        assert!(!c.ping(&ea.address.to_string()), "isolation not restored");

        for id in [&ea.id, &eb.id, &ec.id] {
            d.disconnect(id).await?;
        }
        d.remove_network("other").await?;
        d.teardown_host().await?;
        assert_eq!(leftovers(d.links()).await?, Vec::<String>::new());
        assert!(!d.firewall().table_present().await?);
        // The containers' eth0 went with the veth pairs.
        assert!(a.ip(&["link", "show", "eth0"]).is_err());
        anyhow::Ok(())
    })
}

/// Joins `remote` to `host` by a veth pair: host side 10.250.<n>.1/24, remote side .2.
fn uplink(host: &TestNetns, remote: &TestNetns, n: u8) -> Result<(Ipv4Addr, Ipv4Addr)> {
    host.ip(&[
        "link",
        "add",
        "uplink0",
        "type",
        "veth",
        "peer",
        "name",
        "uplink1",
        "netns",
        &remote.name,
    ])?;
    let h = Ipv4Addr::new(10, 250, n, 1);
    let r = Ipv4Addr::new(10, 250, n, 2);
    host.ip(&["addr", "add", &format!("{h}/24"), "dev", "uplink0"])?;
    host.ip(&["link", "set", "uplink0", "up"])?;
    remote.ip(&["addr", "add", &format!("{r}/24"), "dev", "uplink1"])?;
    remote.ip(&["link", "set", "uplink1", "up"])?;
    Ok((h, r))
}

#[test]
fn published_port_answers_on_localhost_and_from_another_host_with_real_source() -> Result<()> {
    require_root();
    let host = TestNetns::new()?;
    let remote = TestNetns::new()?;
    let web = TestNetns::new()?;
    let (host_ip, remote_ip) = uplink(&host, &remote, 1)?;
    let _server = PeerEchoServer::start(&web, 8080)?;
    let (gateway, saved) = host.block_on(|| async {
        let mut d = driver(NetState::default())?;
        let net = d.ensure_default_network(&hex('0')).await?;
        let ep = d
            .connect(endpoint('a', "bridge", &web, &["18080:8080"]))
            .await?;
        assert_eq!(ep.ports[0].host_port, 18080);
        anyhow::Ok((net.pool.gateway, d.state().to_json()))
    })?;

    // From the host itself through localhost: DNAT in output, source masqueraded to the
    // gateway (the container cannot answer 127.0.0.1).
    let seen = host.run_in(|| peer_seen_by(SocketAddr::from(([127, 0, 0, 1], 18080))))?;
    assert_eq!(seen, gateway.to_string());
    // From the host through its own non-loopback address.
    let seen = host.run_in(|| peer_seen_by(SocketAddr::from((host_ip, 18080))))?;
    assert!(!seen.is_empty());
    // From another host: DNAT in prerouting, the container sees the client's address.
    let seen = remote.run_in(|| peer_seen_by(SocketAddr::from((host_ip, 18080))))?;
    assert_eq!(seen, remote_ip.to_string());
    // From containers through the host's address: the container itself (hairpin) and a
    // neighbour on the same bridge (masqueraded so the reply comes back through the host).
    let neighbour = TestNetns::new()?;
    host.block_on(|| async {
        let mut d = driver(NetState::from_json(&saved)?)?;
        d.connect(endpoint('n', "bridge", &neighbour, &[])).await?;
        anyhow::Ok(())
    })?;
    let seen = web
        .run_in(|| peer_seen_by(SocketAddr::from((host_ip, 18080))))
        .context("hairpin: the container reaches its own published port")?;
    assert_eq!(seen, gateway.to_string());
    let seen = neighbour
        .run_in(|| peer_seen_by(SocketAddr::from((host_ip, 18080))))
        .context("a neighbour reaches a published port through the host")?;
    assert_eq!(seen, gateway.to_string());
    // A port nobody published is not forwarded.
    assert!(remote
        .run_in(|| peer_seen_by(SocketAddr::from((host_ip, 18081))))
        .is_err());

    host.block_on(|| async {
        // Restart from persisted state: a host socket on a port is refused with a clear
        // error, as is a port berth already published.
        let mut d = driver(NetState::default())?;
        d.ensure_default_network(&hex('0')).await?;
        let busy = std::net::TcpListener::bind("0.0.0.0:18090")?;
        let err = d
            .connect(endpoint('b', "bridge", &remote, &["18090:80"]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                NetError::PortInUse {
                    holder: PortHolder::HostSocket,
                    host_port: 18090,
                    ..
                }
            ),
            "{err}"
        );
        drop(busy);
        d.teardown_host().await?;
        assert_eq!(leftovers(d.links()).await?, Vec::<String>::new());
        assert!(!d.firewall().table_present().await?);
        anyhow::Ok(())
    })?;
    // After teardown the port no longer answers.
    assert!(host
        .run_in(|| peer_seen_by(SocketAddr::from(([127, 0, 0, 1], 18080))))
        .is_err());
    Ok(())
}

#[test]
fn restart_after_crash_keeps_ports_answering_without_duplicate_rules() -> Result<()> {
    require_root();
    let host = TestNetns::new()?;
    let containers: Vec<TestNetns> = (0..5).map(|_| TestNetns::new()).collect::<Result<_>>()?;
    let servers: Vec<PeerEchoServer> = containers
        .iter()
        .map(|c| PeerEchoServer::start(c, 80))
        .collect::<Result<_>>()?;
    let ids = ['a', 'b', 'c', 'd', 'e'];
    let lost = TestNetns::new()?;
    let (saved, lost_veth, gone_veth) = host.block_on(|| async {
        let mut d = driver(NetState::default())?;
        d.ensure_default_network(&hex('0')).await?;
        for (i, (c, id)) in containers.iter().zip(ids).enumerate() {
            let spec = format!("{}:80", 19000 + i);
            d.connect(endpoint(id, "bridge", c, &[&spec])).await?;
        }
        // What berthd persisted before a fourth container whose record is lost in the crash.
        let saved = d.state().to_json();
        let lost_ep = d.connect(endpoint('f', "bridge", &lost, &[])).await?;
        let gone_veth = d.state().endpoints[&hex('b')].host_veth.clone();
        // kill -9: the driver vanishes without cleaning up.
        drop(d);
        anyhow::Ok((saved, lost_ep.host_veth, gone_veth))
    })?;
    // While berthd is down every published port still answers: the rules are in the
    // kernel, not in a proxy process.
    for i in 0..5u16 {
        host.run_in(|| peer_seen_by(SocketAddr::from(([127, 0, 0, 1], 19000 + i))))
            .with_context(|| format!("port {} while the daemon is down", 19000 + i))?;
    }
    // Meanwhile someone deletes container b's host veth (its namespace lives on), and the
    // bridge itself (the other veths survive, detached).
    host.ip(&["link", "del", &gone_veth])?;
    host.ip(&["link", "del", "berth0"])?;
    assert!(host
        .run_in(|| peer_seen_by(SocketAddr::from(([127, 0, 0, 1], 19001))))
        .is_err());

    host.block_on(|| async {
        let mut d = driver(NetState::from_json(&saved)?)?;
        let report = d.reconcile().await?;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.table_was_present);
        assert_eq!(report.plan.missing_endpoints, vec![hex('b')]);
        assert_eq!(report.plan.missing_bridges, vec![hex('0')]);
        assert_eq!(
            report.plan.detached_endpoints,
            vec![hex('a'), hex('c'), hex('d'), hex('e')]
        );
        assert_eq!(report.plan.stale_links, vec![lost_veth.clone()]);
        assert!(
            lost.ip(&["link", "show", "eth0"]).is_err(),
            "stale pair survived"
        );
        // Reconciling twice more must not duplicate anything.
        d.reconcile().await?;
        d.reconcile().await?;
        let table = run(
            "ip",
            &[
                "netns", "exec", &host.name, "nft", "list", "table", "ip", "berth",
            ],
        )?;
        for i in 0..5 {
            assert_eq!(
                table.matches(&format!("dport {} ", 19000 + i)).count(),
                1,
                "{table}"
            );
        }
        assert_eq!(table.matches("masquerade").count(), 3, "{table}");
        for i in 0..5u16 {
            let seen = peer_seen_by(SocketAddr::from(([127, 0, 0, 1], 19000 + i)))
                .with_context(|| format!("port {} after restart", 19000 + i))?;
            assert_eq!(seen, d.state().networks[&hex('0')].pool.gateway.to_string());
        }
        d.teardown_host().await?;
        assert_eq!(leftovers(d.links()).await?, Vec::<String>::new());
        anyhow::Ok(())
    })?;
    drop(servers);
    Ok(())
}

#[test]
fn embedded_dns_resolves_names_on_the_same_user_network_only() -> Result<()> {
    require_root();
    let host = TestNetns::new()?;
    let (a, b, c) = (TestNetns::new()?, TestNetns::new()?, TestNetns::new()?);
    host.block_on(|| async {
        let mut d = driver(NetState::default())?;
        let mut dns = DnsServers::default();
        let app = d
            .create_network(NetworkRequest {
                id: hex('a'),
                name: "app".into(),
                subnet: Some("10.252.0.0/24".parse()?),
                gateway: None,
                internal: false,
                mtu: None,
                icc: true,
            })
            .await?;
        let other = d
            .create_network(NetworkRequest {
                id: hex('b'),
                name: "other".into(),
                subnet: Some("10.253.0.0/24".parse()?),
                gateway: None,
                internal: false,
                mtu: None,
                icc: true,
            })
            .await?;
        d.connect(endpoint('1', "app", &a, &[])).await?;
        let mut req = endpoint('2', "app", &b, &[]);
        req.container_name = "db".into();
        req.aliases = vec!["database".into()];
        let eb = d.connect(req).await?;
        d.connect(endpoint('3', "other", &c, &[])).await?;
        let errors = dns.sync(d.state(), &[]).await;
        assert!(errors.is_empty(), "{errors:?}");

        let gw = app.pool.gateway.to_string();
        for name in ["db", "database", "DB"] {
            let (ok, out) =
                output_in(&a, &["timeout", "5", "/bin/busybox", "nslookup", name, &gw]).await;
            assert!(ok, "nslookup {name} failed: {out}");
            assert!(out.contains(&eb.address.to_string()), "{out}");
        }
        // From the other network, through its own server, "db" is unknown (and with no
        // upstream reachable, unanswered).
        let gw_other = other.pool.gateway.to_string();
        let (ok, out) = output_in(
            &c,
            &["timeout", "3", "/bin/busybox", "nslookup", "db", &gw_other],
        )
        .await;
        assert!(!ok || !out.contains(&eb.address.to_string()), "{out}");

        // Disconnecting removes the name.
        d.disconnect(&eb.id).await?;
        dns.sync(d.state(), &[]).await;
        assert!(dns.get(&app.id).unwrap().local_addr().port() == 53);
        let (ok, out) =
            output_in(&a, &["timeout", "3", "/bin/busybox", "nslookup", "db", &gw]).await;
        assert!(!ok || !out.contains(&eb.address.to_string()), "{out}");
        drop(dns);
        d.teardown_host().await?;
        anyhow::Ok(())
    })
}

#[test]
fn udp_and_address_bound_and_daemon_chosen_ports_are_published() -> Result<()> {
    require_root();
    let host = TestNetns::new()?;
    let remote = TestNetns::new()?;
    let web = TestNetns::new()?;
    let (host_ip, remote_ip) = uplink(&host, &remote, 2)?;
    let _udp = UdpPeerEchoServer::start(&web, 5353)?;
    let _tcp = PeerEchoServer::start(&web, 80)?;
    let (chosen, other_port) = host.block_on(|| async {
        let mut d = driver(NetState::default())?;
        d.ensure_default_network(&hex('0')).await?;
        let spec_bound = format!("{host_ip}:18443:80");
        let ep = d
            .connect(endpoint(
                'a',
                "bridge",
                &web,
                &["15353:5353/udp", &spec_bound, "80", "127.0.0.1:18444:80"],
            ))
            .await?;
        assert_eq!(ep.ports[2].host_port, PortRange::default().first);
        anyhow::Ok((ep.ports[2].host_port, 18443u16))
    })?;
    // UDP from another host keeps the client's address.
    let seen = remote.run_in(|| udp_peer_seen_by(SocketAddr::from((host_ip, 15353))))?;
    assert_eq!(seen, remote_ip.to_string());
    // ip:hostPort:containerPort answers on that address only.
    let seen = remote.run_in(|| peer_seen_by(SocketAddr::from((host_ip, other_port))))?;
    assert_eq!(seen, remote_ip.to_string());
    assert!(host
        .run_in(|| peer_seen_by(SocketAddr::from(([127, 0, 0, 1], other_port))))
        .is_err());
    // 127.0.0.1:hostPort:containerPort answers on the host's loopback only.
    let seen = host.run_in(|| peer_seen_by(SocketAddr::from(([127, 0, 0, 1], 18444))))?;
    assert!(!seen.is_empty());
    assert!(remote
        .run_in(|| peer_seen_by(SocketAddr::from((host_ip, 18444))))
        .is_err());
    // The daemon-chosen port (publish-all style) answers too.
    let seen = remote.run_in(|| peer_seen_by(SocketAddr::from((host_ip, chosen))))?;
    assert_eq!(seen, remote_ip.to_string());
    host.block_on(|| async {
        let mut d = driver(NetState::default())?;
        d.teardown_host().await?;
        assert_eq!(leftovers(d.links()).await?, Vec::<String>::new());
        anyhow::Ok(())
    })
}

#[test]
fn internal_network_has_no_way_out() -> Result<()> {
    require_root();
    let host = TestNetns::new()?;
    let remote = TestNetns::new()?;
    let (a, b) = (TestNetns::new()?, TestNetns::new()?);
    let (_, remote_ip) = uplink(&host, &remote, 3)?;
    host.block_on(|| async {
        let mut d = driver(NetState::default())?;
        d.create_network(NetworkRequest {
            id: hex('e'),
            name: "backend".into(),
            subnet: Some("10.254.0.0/24".parse()?),
            gateway: None,
            internal: true,
            mtu: None,
            icc: true,
        })
        .await?;
        d.ensure_default_network(&hex('0')).await?;
        let ea = d.connect(endpoint('a', "backend", &a, &[])).await?;
        d.connect(endpoint('b', "bridge", &b, &[])).await?;
        assert!(
            b.reaches(&remote_ip.to_string()),
            "a normal network cannot get out"
        );
        assert!(
            !a.ping(&remote_ip.to_string()),
            "an internal network got out"
        );
        assert!(
            !b.ping(&ea.address.to_string()),
            "reached into an internal network"
        );
        d.teardown_host().await?;
        anyhow::Ok(())
    })
}

/// `enable_icc=false` (Docker's option, berth's `icc: false`): two containers of the
/// network cannot reach each other, each still reaches the gateway and the world.
#[test]
fn without_icc_containers_reach_the_gateway_and_out_but_not_each_other() -> Result<()> {
    require_root();
    let host = TestNetns::new()?;
    let remote = TestNetns::new()?;
    let (a, b) = (TestNetns::new()?, TestNetns::new()?);
    let (_, remote_ip) = uplink(&host, &remote, 5)?;
    host.block_on(|| async {
        let mut d = driver(NetState::default())?;
        let net = d
            .create_network(NetworkRequest {
                id: hex('f'),
                name: "gw".into(),
                subnet: Some("10.251.0.0/24".parse()?),
                gateway: None,
                internal: false,
                mtu: None,
                icc: false,
            })
            .await?;
        d.connect(endpoint('a', "gw", &a, &[])).await?;
        let eb = d.connect(endpoint('b', "gw", &b, &[])).await?;
        assert!(a.ping(&net.pool.gateway.to_string()), "gateway unreachable");
        assert!(a.reaches(&remote_ip.to_string()), "no way out");
        assert!(
            !a.ping(&eb.address.to_string()),
            "containers of an icc=false network reach each other"
        );
        d.teardown_host().await?;
        anyhow::Ok(())
    })
}

#[test]
fn rtnetlink_executor_passes_the_conformance_suite() -> Result<()> {
    require_root();
    let host = TestNetns::new()?;
    let container = TestNetns::new()?;
    let path = container.path();
    host.block_on(|| async {
        let links = RtnetlinkExecutor::connect()?;
        berth_overlay_net::testing::conformance::link_executor_suite(&links, &path).await;
        anyhow::Ok(())
    })?;
    // The suite's last veth is gone from the container as well.
    assert!(container.ip(&["link", "show", "eth7"]).is_err());
    Ok(())
}

#[test]
fn nft_transactions_are_all_or_nothing_and_deleting_the_table_is_idempotent() -> Result<()> {
    require_root();
    let host = TestNetns::new()?;
    host.block_on(|| async {
        let nft = NftCli::default();
        assert!(!nft.table_present().await?);
        // Deleting an absent table is fine (teardown must be re-runnable).
        nft.apply(&berth_overlay_net::firewall::delete_table_script())
            .await?;
        let mut state = NetState::default();
        state.networks.insert(
            hex('0'),
            Network {
                id: hex('0'),
                name: "bridge".into(),
                bridge: "berth0".into(),
                pool: AddressPool::new("172.17.0.0/16".parse()?, None)?,
                is_default: true,
                internal: false,
                mtu: None,
                icc: true,
            },
        );
        let good = Ruleset::from_state(&state).render();
        nft.apply(&good).await?;
        nft.apply(&good).await?;
        let before = String::from_utf8(
            tokio::process::Command::new("nft")
                .args(["list", "table", "ip", "berth"])
                .output()
                .await?
                .stdout,
        )?;
        assert_eq!(before.matches("masquerade").count(), 3, "{before}");
        // A broken transaction changes nothing, and says why.
        let broken = good.replace("policy accept;", "policy nonsense;");
        match nft.apply(&broken).await {
            Err(NetError::NftFailed {
                status: Some(1),
                stderr,
            }) => {
                assert!(stderr.contains("nonsense"), "{stderr}")
            }
            other => panic!("expected NftFailed, got {other:?}"),
        }
        let after = String::from_utf8(
            tokio::process::Command::new("nft")
                .args(["list", "table", "ip", "berth"])
                .output()
                .await?
                .stdout,
        )?;
        assert_eq!(before, after);
        nft.apply(&berth_overlay_net::firewall::delete_table_script())
            .await?;
        assert!(!nft.table_present().await?);
        anyhow::Ok(())
    })
}

#[test]
fn a_pinned_netns_file_carries_the_endpoint_and_removing_it_removes_the_veth() -> Result<()> {
    require_root();
    let host = TestNetns::new()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("netns").join("c1");
    // Unpins the namespace even if the test fails half way (before the tempdir goes).
    struct Unpin(std::path::PathBuf);
    impl Drop for Unpin {
        fn drop(&mut self) {
            let _ = remove_netns_file(&self.0);
        }
    }
    let _unpin = Unpin(file.clone());
    host.block_on(|| async {
        let mut d = driver(NetState::default())?;
        d.ensure_default_network(&hex('0')).await?;
        create_netns_file(&file)?;
        assert!(matches!(
            create_netns_file(&file),
            Err(NetError::Netns { .. })
        ));
        let ep = d.connect(endpoint_at('a', "bridge", &file)).await?;
        let veth_present = |links: Vec<ObservedLink>| links.iter().any(|l| l.name == ep.host_veth);
        assert!(veth_present(d.links().list_links().await?));
        // The container's namespace goes away (container exited, file removed): the kernel
        // removes the pair; disconnect then has nothing to delete and succeeds.
        remove_netns_file(&file)?;
        remove_netns_file(&file)?;
        assert!(!file.exists());
        let mut gone = false;
        for _ in 0..100 {
            if !veth_present(d.links().list_links().await?) {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(gone, "veth outlived its namespace");
        d.disconnect(&ep.id).await?;
        d.teardown_host().await?;
        anyhow::Ok(())
    })
}

fn endpoint_at(id: char, network: &str, netns: &std::path::Path) -> EndpointRequest {
    EndpointRequest {
        endpoint_id: hex(id),
        container_id: format!("{id}{}", "0".repeat(63)),
        container_name: format!("c{id}"),
        aliases: vec![],
        network: network.into(),
        netns: netns.to_path_buf(),
        address: None,
        ports: vec![],
        dns_servers: vec![],
        taken_ifnames: Vec::new(),
    }
}
