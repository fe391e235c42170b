//! Driver tests over the fakes: validation, rollback, teardown error collection,
//! reconciliation.

use super::*;
use crate::error::PortHolder;
use crate::ports::Protocol;
use crate::testing::{FakeFirewall, FakeLinks, FakePortProbe};

type Driver = BridgeDriver<FakeLinks, FakeFirewall, FakePortProbe>;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn driver_with_routes(routes: Vec<Ipv4Net>) -> Driver {
    BridgeDriver::new(
        FakeLinks::with_routes(routes),
        FakeFirewall::default(),
        FakePortProbe::default(),
        NetState::default(),
        DriverConfig::default(),
    )
}

fn hex(c: char) -> String {
    c.to_string().repeat(64)
}

/// A namespace file that exists (the driver records its inode).
fn netns_file(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, b"").unwrap();
    p
}

fn ep_req(
    id: char,
    container: char,
    network: &str,
    netns: PathBuf,
    ports: &[&str],
) -> EndpointRequest {
    EndpointRequest {
        endpoint_id: hex(id),
        container_id: hex(container),
        container_name: format!("c{container}"),
        aliases: vec![],
        network: network.into(),
        netns,
        address: None,
        ports: ports
            .iter()
            .map(|p| PortRequest::parse(p).unwrap())
            .collect(),
        dns_servers: vec![],
        taken_ifnames: vec![],
    }
}

fn user_net(id: char, name: &str, subnet: Option<&str>) -> NetworkRequest {
    NetworkRequest {
        id: hex(id),
        name: name.into(),
        subnet: subnet.map(net),
        gateway: None,
        internal: false,
        mtu: None,
        icc: true,
    }
}

#[tokio::test]
async fn default_network_avoids_host_routes_and_gets_berth0() {
    let mut d = driver_with_routes(vec![
        net("0.0.0.0/0"),
        net("172.17.0.0/16"),
        net("10.0.0.0/8"),
    ]);
    let n = d.ensure_default_network(&hex('0')).await.unwrap();
    assert_eq!(n.bridge, "berth0");
    assert_eq!(n.pool.subnet, net("172.18.0.0/16"));
    assert_eq!(n.pool.gateway, Ipv4Addr::new(172, 18, 0, 1));
    assert!(n.is_default);
    let link = d.links().link(&Netns::Host, "berth0").unwrap();
    assert_eq!(link.addresses, vec![(Ipv4Addr::new(172, 18, 0, 1), 16)]);
    assert!(link.up);
    assert_eq!(
        d.links()
            .sysctl("net/ipv4/conf/berth0/route_localnet")
            .as_deref(),
        Some("1")
    );
    assert!(d.firewall().table_present().await.unwrap());
    // Idempotent.
    let again = d.ensure_default_network(&hex('9')).await.unwrap();
    assert_eq!(again.id, hex('0'));
    assert_eq!(d.state().networks.len(), 1);
}

#[tokio::test]
async fn user_networks_validate_names_and_overlaps() {
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    let web = d.create_network(user_net('a', "web", None)).await.unwrap();
    assert_eq!(web.bridge, "br-aaaaaaaaaaaa");
    assert_eq!(web.pool.subnet, net("172.18.0.0/16"));
    assert!(matches!(
        d.create_network(user_net('b', "web", None)).await,
        Err(NetError::NetworkExists { .. })
    ));
    match d
        .create_network(user_net('b', "db", Some("172.18.5.0/24")))
        .await
    {
        Err(NetError::SubnetOverlap { other_network, .. }) => assert_eq!(other_network, "web"),
        other => panic!("expected overlap, got {other:?}"),
    }
    for reserved in ["host", "none", "bridge"] {
        assert!(matches!(
            d.create_network(user_net('c', reserved, None)).await,
            Err(NetError::NetworkExists { .. })
        ));
    }
    let mut req = user_net('b', "db", Some("10.50.0.0/24"));
    req.gateway = Some(Ipv4Addr::new(10, 50, 0, 254));
    let db = d.create_network(req).await.unwrap();
    assert_eq!(db.pool.gateway, Ipv4Addr::new(10, 50, 0, 254));
    // Failed creates left nothing behind.
    assert_eq!(d.state().networks.len(), 3);
    assert_eq!(
        d.links().names(&Netns::Host),
        vec!["berth0", "br-aaaaaaaaaaaa", "br-bbbbbbbbbbbb"]
    );
}

#[tokio::test]
async fn connect_builds_the_endpoint_and_publishes_ports() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    let ns = netns_file(&dir, "c1");
    let ep = d
        .connect(ep_req(
            '1',
            'c',
            "bridge",
            ns.clone(),
            &["18080:8080", "53/udp"],
        ))
        .await
        .unwrap();
    assert_eq!(ep.address, Ipv4Addr::new(172, 17, 0, 2));
    assert_eq!(ep.ifname, "eth0");
    assert_eq!(ep.ports[0].host_port, 18080);
    assert_eq!(ep.ports[1].host_port, 32768);
    let inside = Netns::Path(ns.clone());
    let eth0 = d.links().link(&inside, "eth0").unwrap();
    assert_eq!(eth0.addresses, vec![(Ipv4Addr::new(172, 17, 0, 2), 16)]);
    assert!(eth0.up);
    assert!(d.links().link(&inside, "lo").unwrap().up);
    assert_eq!(
        d.links().default_route(&inside),
        Some(Ipv4Addr::new(172, 17, 0, 1))
    );
    let host_end = d.links().link(&Netns::Host, &ep.host_veth).unwrap();
    assert_eq!(host_end.master.as_deref(), Some("berth0"));
    assert!(host_end.hairpin && host_end.up);
    let script = d.firewall().last().unwrap();
    assert!(
        script.contains("tcp dport 18080 dnat to 172.17.0.2:8080"),
        "{script}"
    );
    assert!(
        script.contains("udp dport 32768 dnat to 172.17.0.2:53"),
        "{script}"
    );
    // State round-trips with the endpoint in it.
    assert_eq!(
        &NetState::from_json(&d.state().to_json()).unwrap(),
        d.state()
    );
}

#[tokio::test]
async fn second_network_of_a_container_is_eth1_without_default_route() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    d.create_network(user_net('a', "web", None)).await.unwrap();
    let ns = netns_file(&dir, "c1");
    d.connect(ep_req('1', 'c', "bridge", ns.clone(), &[]))
        .await
        .unwrap();
    let second = d
        .connect(ep_req('2', 'c', "web", ns.clone(), &[]))
        .await
        .unwrap();
    assert_eq!(second.ifname, "eth1");
    assert!(!second.default_route);
    assert_eq!(
        d.links().default_route(&Netns::Path(ns.clone())),
        Some(Ipv4Addr::new(172, 17, 0, 1))
    );
    assert!(matches!(
        d.connect(ep_req('3', 'c', "web", ns, &[])).await,
        Err(NetError::AlreadyAttached { .. })
    ));
}

#[tokio::test]
async fn port_in_use_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    d.connect(ep_req(
        '1',
        'c',
        "bridge",
        netns_file(&dir, "c1"),
        &["18080:80"],
    ))
    .await
    .unwrap();
    let links_before = d.links().names(&Netns::Host);
    let err = d
        .connect(ep_req(
            '2',
            'd',
            "bridge",
            netns_file(&dir, "c2"),
            &["18080:80"],
        ))
        .await
        .unwrap_err();
    match &err {
        NetError::PortInUse {
            holder: PortHolder::Endpoint { endpoint },
            host_port: 18080,
            ..
        } => {
            assert_eq!(endpoint, &hex('1'))
        }
        other => panic!("expected PortInUse, got {other:?}"),
    }
    assert!(err.is_conflict());
    assert_eq!(d.links().names(&Netns::Host), links_before);
    // The address was not consumed either.
    let ep = d
        .connect(ep_req('2', 'd', "bridge", netns_file(&dir, "c2"), &[]))
        .await
        .unwrap();
    assert_eq!(ep.address, Ipv4Addr::new(172, 17, 0, 3));
    // A host socket holding the port is refused too.
    d.probe.hold(9090, Protocol::Tcp);
    let err = d
        .connect(ep_req(
            '3',
            'e',
            "bridge",
            netns_file(&dir, "c3"),
            &["9090:80"],
        ))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        NetError::PortInUse {
            holder: PortHolder::HostSocket,
            ..
        }
    ));
}

#[tokio::test]
async fn failed_setup_rolls_back_links_address_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    let ns = netns_file(&dir, "c1");
    d.links().fail_on(LinkOp::AddDefaultRoute {
        netns: Netns::Path(ns.clone()),
        gateway: Ipv4Addr::new(172, 17, 0, 1),
    });
    let err = d
        .connect(ep_req('1', 'c', "bridge", ns.clone(), &["18080:80"]))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Netlink { .. }));
    assert!(err.is_retryable());
    assert_eq!(d.links().names(&Netns::Host), vec!["berth0"]);
    assert!(d
        .links()
        .names(&Netns::Path(ns.clone()))
        .iter()
        .all(|n| n == "lo"));
    assert!(d.state().endpoints.is_empty());
    assert!(d.state().networks[&hex('0')].pool.allocated.is_empty());
    d.links().clear_failures();
    // A firewall failure after the links were made rolls them back as well.
    d.firewall().set_failing(true);
    assert!(matches!(
        d.connect(ep_req('1', 'c', "bridge", ns.clone(), &["18080:80"]))
            .await,
        Err(NetError::NftFailed { .. })
    ));
    assert_eq!(d.links().names(&Netns::Host), vec!["berth0"]);
    assert!(d.state().endpoints.is_empty());
    assert!(d.state().networks[&hex('0')].pool.allocated.is_empty());
}

#[tokio::test]
async fn missing_netns_is_refused() {
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    let err = d
        .connect(ep_req(
            '1',
            'c',
            "bridge",
            "/nonexistent/ns/net".into(),
            &[],
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Netns { .. }));
    assert!(d.links().names(&Netns::Host) == vec!["berth0"]);
}

#[tokio::test]
async fn disconnect_keeps_going_and_reports_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    let ep = d
        .connect(ep_req(
            '1',
            'c',
            "bridge",
            netns_file(&dir, "c1"),
            &["18080:80"],
        ))
        .await
        .unwrap();
    d.firewall().set_failing(true);
    d.links().fail_on(LinkOp::DeleteLink {
        name: ep.host_veth.clone(),
    });
    match d.disconnect(&ep.id).await {
        Err(NetError::Teardown { errors }) => {
            assert_eq!(errors.len(), 2, "{errors:?}");
            assert!(matches!(errors[0], NetError::NftFailed { .. }));
            assert!(matches!(errors[1], NetError::Netlink { .. }));
        }
        other => panic!("expected a teardown error, got {other:?}"),
    }
    // The endpoint is gone from the desired state and its address is free.
    assert!(d.state().endpoints.is_empty());
    assert!(d.state().networks[&hex('0')].pool.allocated.is_empty());
    assert!(matches!(
        d.disconnect(&ep.id).await,
        Err(NetError::EndpointNotFound { .. })
    ));
    // Reconciliation then removes the veth the failed teardown left.
    d.firewall().set_failing(false);
    d.links().clear_failures();
    let report = d.reconcile().await.unwrap();
    assert_eq!(report.plan.stale_links, vec![ep.host_veth.clone()]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(d.links().names(&Netns::Host), vec!["berth0"]);
    assert!(!d.firewall().last().unwrap().contains("18080"));
}

#[tokio::test]
async fn network_removal_is_refused_while_endpoints_are_attached() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver_with_routes(vec![]);
    d.create_network(user_net('a', "web", None)).await.unwrap();
    let ep = d
        .connect(ep_req('1', 'c', "web", netns_file(&dir, "c1"), &[]))
        .await
        .unwrap();
    assert!(matches!(
        d.remove_network("web").await,
        Err(NetError::NetworkHasEndpoints { .. })
    ));
    d.disconnect(&ep.id).await.unwrap();
    d.remove_network("aaaa").await.unwrap();
    assert!(d.links().names(&Netns::Host).is_empty());
    assert!(d.state().networks.is_empty());
    assert!(matches!(
        d.remove_network("web").await,
        Err(NetError::NetworkNotFound { .. })
    ));
}

#[tokio::test]
async fn reconcile_repairs_what_a_crash_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    d.create_network(user_net('a', "web", None)).await.unwrap();
    let alive = netns_file(&dir, "alive");
    let dead = netns_file(&dir, "dead");
    let lost = netns_file(&dir, "lost");
    let e1 = d
        .connect(ep_req('1', 'c', "bridge", alive.clone(), &["18080:80"]))
        .await
        .unwrap();
    let e2 = d
        .connect(ep_req('2', 'd', "web", dead.clone(), &[]))
        .await
        .unwrap();
    let e3 = d
        .connect(ep_req('3', 'e', "web", lost.clone(), &[]))
        .await
        .unwrap();
    let saved = d.state().to_json();

    // "Crash": the daemon dies; meanwhile container d exits (its netns and veth vanish),
    // container e's veth vanishes but its netns lives, the web bridge is deleted (so e1's
    // ports on it detach), a stray berth veth and a foreign bridge appear.
    let links = std::mem::take(&mut d.links);
    links.remove(&e2.host_veth);
    std::fs::remove_file(&dead).unwrap();
    links.remove(&e3.host_veth);
    links.remove("br-aaaaaaaaaaaa");
    links.insert("vethdeadbeef000", "veth", Some("berth0"), Some("berth"));
    links.insert("br-0123456789ab", "bridge", None, None);
    let fw = FakeFirewall::default();
    fw.set_present(true);
    links.clear_applied();

    let mut d = BridgeDriver::new(
        links,
        fw,
        FakePortProbe::default(),
        NetState::from_json(&saved).unwrap(),
        DriverConfig::default(),
    );
    let report = d.reconcile().await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.table_was_present);
    assert_eq!(report.plan.stale_links, vec!["vethdeadbeef000".to_string()]);
    assert_eq!(report.plan.missing_bridges, vec![hex('a')]);
    assert_eq!(report.plan.missing_endpoints, vec![e3.id.clone()]);
    assert_eq!(report.plan.orphaned_endpoints, vec![e2.id.clone()]);
    assert!(report.plan.detached_endpoints.is_empty());

    let host = d.links().names(&Netns::Host);
    assert!(host.contains(&"br-aaaaaaaaaaaa".to_string()));
    assert!(
        host.contains(&"br-0123456789ab".to_string()),
        "foreign bridge removed"
    );
    assert!(!host.contains(&"vethdeadbeef000".to_string()));
    assert_eq!(
        d.links()
            .link(&Netns::Host, &e3.host_veth)
            .unwrap()
            .master
            .as_deref(),
        Some("br-aaaaaaaaaaaa")
    );
    assert_eq!(
        d.links()
            .link(&Netns::Host, &e1.host_veth)
            .unwrap()
            .master
            .as_deref(),
        Some("berth0")
    );
    // One transaction, rebuilt from the desired state: the DNAT rule appears once.
    let scripts = d.firewall().scripts();
    assert_eq!(scripts.len(), 1);
    assert_eq!(scripts[0].matches("dport 18080").count(), 1);

    // The orphan is released by berthd through disconnect.
    d.disconnect(&e2.id).await.unwrap();
    // Reconciling again changes nothing.
    d.links().clear_applied();
    let again = d.reconcile().await.unwrap();
    assert_eq!(again.plan, ReconcilePlan::default());
    assert!(d
        .links()
        .applied()
        .iter()
        .all(|op| !matches!(op, LinkOp::DeleteLink { .. } | LinkOp::CreateVeth { .. })));
}

#[tokio::test]
async fn reconcile_reattaches_a_veth_whose_bridge_was_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    let ep = d
        .connect(ep_req('1', 'c', "bridge", netns_file(&dir, "c1"), &[]))
        .await
        .unwrap();
    d.links().remove("berth0");
    d.links().insert("berth0", "bridge", None, Some("berth"));
    let report = d.reconcile().await.unwrap();
    assert_eq!(report.plan.detached_endpoints, vec![ep.id.clone()]);
    assert_eq!(
        d.links()
            .link(&Netns::Host, &ep.host_veth)
            .unwrap()
            .master
            .as_deref(),
        Some("berth0")
    );
}

#[tokio::test]
async fn teardown_host_removes_every_berth_link_and_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    d.create_network(user_net('a', "web", None)).await.unwrap();
    d.connect(ep_req('1', 'c', "web", netns_file(&dir, "c1"), &["80"]))
        .await
        .unwrap();
    d.links().insert("eth9", "dummy", None, None);
    d.teardown_host().await.unwrap();
    assert_eq!(d.links().names(&Netns::Host), vec!["eth9"]);
    assert!(!d.firewall().table_present().await.unwrap());
    // Deletes ran veths before bridges.
    let deletes: Vec<String> = d
        .links()
        .applied()
        .into_iter()
        .filter_map(|op| match op {
            LinkOp::DeleteLink { name } => Some(name),
            _ => None,
        })
        .collect();
    assert!(deletes[0].starts_with("veth"), "{deletes:?}");
}

#[tokio::test]
async fn nft_runs_only_when_the_ruleset_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    assert_eq!(d.firewall().scripts().len(), 1);
    let plain = d
        .connect(ep_req('1', 'c', "bridge", netns_file(&dir, "c1"), &[]))
        .await
        .unwrap();
    assert_eq!(d.firewall().scripts().len(), 1, "no ports, no nft run");
    let web = d
        .connect(ep_req(
            '2',
            'd',
            "bridge",
            netns_file(&dir, "c2"),
            &["8080:80"],
        ))
        .await
        .unwrap();
    assert_eq!(d.firewall().scripts().len(), 2);
    d.disconnect(&plain.id).await.unwrap();
    assert_eq!(d.firewall().scripts().len(), 2);
    d.disconnect(&web.id).await.unwrap();
    assert_eq!(d.firewall().scripts().len(), 3);
    // The explicit sync and reconcile always apply.
    d.sync_firewall().await.unwrap();
    d.reconcile().await.unwrap();
    assert_eq!(d.firewall().scripts().len(), 5);
    // After a failed apply the next change is applied even if it looks the same.
    d.firewall().set_failing(true);
    assert!(d.sync_firewall().await.is_err());
    d.firewall().set_failing(false);
    d.connect(ep_req('3', 'e', "bridge", netns_file(&dir, "c3"), &[]))
        .await
        .unwrap();
    assert_eq!(d.firewall().scripts().len(), 6);
}

/// Compile-time check: berthd holds the real driver behind a tokio mutex and awaits its
/// futures inside spawned tasks, so they must be `Send` (and the driver `Send + Sync`).
#[allow(dead_code)]
async fn host_driver_and_its_futures_are_send(
    d: &mut crate::HostBridgeDriver,
    dns: &mut crate::DnsServers,
    req: EndpointRequest,
    net: NetworkRequest,
) {
    fn is_send<T: Send>(_: &T) {}
    fn is_sync<T: Send + Sync>() {}
    is_sync::<crate::HostBridgeDriver>();
    let f = d.connect(req);
    is_send(&f);
    drop(f);
    let f = d.create_network(net);
    is_send(&f);
    drop(f);
    let f = d.reconcile();
    is_send(&f);
    drop(f);
    let f = d.disconnect("x");
    is_send(&f);
    drop(f);
    let f = d.teardown_host();
    is_send(&f);
    drop(f);
    let state = NetState::default();
    let f = dns.sync(&state, &[]);
    is_send(&f);
}

#[tokio::test]
async fn a_failed_creation_does_not_delete_a_link_that_already_had_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    // Someone else's link squats the name berth would give the host end.
    let name = Endpoint::host_veth_for(&hex('1'));
    d.links().insert(&name, "veth", None, None);
    let err = d
        .connect(ep_req('1', 'c', "bridge", netns_file(&dir, "c1"), &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Netlink { .. }), "{err}");
    assert!(
        d.links().link(&Netns::Host, &name).is_some(),
        "squatter deleted"
    );
    assert!(d.state().endpoints.is_empty());
}

#[tokio::test]
async fn disconnecting_the_default_route_network_hands_the_route_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver_with_routes(vec![]);
    d.ensure_default_network(&hex('0')).await.unwrap();
    d.create_network(user_net('a', "web", None)).await.unwrap();
    let ns = netns_file(&dir, "c1");
    let first = d
        .connect(ep_req('1', 'c', "bridge", ns.clone(), &[]))
        .await
        .unwrap();
    let second = d
        .connect(ep_req('2', 'c', "web", ns.clone(), &[]))
        .await
        .unwrap();
    assert!(!second.default_route);
    d.disconnect(&first.id).await.unwrap();
    let web_gateway = d.state().networks[&hex('a')].pool.gateway;
    assert_eq!(
        d.links().default_route(&Netns::Path(ns.clone())),
        Some(web_gateway)
    );
    assert!(d.state().endpoints[&second.id].default_route);
    // When the container is gone, removing its endpoints does not try to route in it.
    let third = d
        .connect(ep_req('3', 'c', "bridge", ns.clone(), &[]))
        .await
        .unwrap();
    std::fs::remove_file(&ns).unwrap();
    d.links().fail_on(LinkOp::AddDefaultRoute {
        netns: Netns::Path(ns.clone()),
        gateway: Ipv4Addr::new(172, 17, 0, 1),
    });
    d.disconnect(&second.id).await.unwrap();
    d.disconnect(&third.id).await.unwrap();
}

#[tokio::test]
async fn network_mtu_applies_to_bridge_and_veths_and_defaults_from_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = BridgeDriver::new(
        FakeLinks::default(),
        FakeFirewall::default(),
        FakePortProbe::default(),
        NetState::default(),
        DriverConfig {
            mtu: Some(1450),
            ..DriverConfig::default()
        },
    );
    let mut req = user_net('a', "jumbo", None);
    req.mtu = Some(9000);
    d.create_network(req).await.unwrap();
    d.create_network(user_net('b', "plain", None))
        .await
        .unwrap();
    let ns = netns_file(&dir, "c1");
    d.connect(ep_req('1', 'c', "jumbo", ns.clone(), &[]))
        .await
        .unwrap();
    assert_eq!(
        d.links().link(&Netns::Host, "br-aaaaaaaaaaaa").unwrap().mtu,
        Some(9000)
    );
    assert_eq!(
        d.links().link(&Netns::Path(ns), "eth0").unwrap().mtu,
        Some(9000)
    );
    assert_eq!(
        d.links().link(&Netns::Host, "br-bbbbbbbbbbbb").unwrap().mtu,
        Some(1450)
    );
}
