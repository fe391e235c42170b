use super::*;

fn names() -> OverlayNames {
    OverlayNames::new("t1").unwrap()
}

fn observed() -> OverlayObserved {
    OverlayObserved {
        names: names(),
        ..OverlayObserved::default()
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn spec(id: &str, vni: u32, subnet: &str) -> OverlaySpec {
    OverlaySpec {
        id: id.into(),
        vni,
        subnet: subnet.into(),
        gateway: None,
        mtu: 0,
        internal: false,
        host_address: None,
        encrypted: false,
    }
}

fn ep(id: &str, net: &str, addr: &str, node: &str, local: bool) -> OverlayEndpoint {
    OverlayEndpoint {
        id: id.into(),
        network_id: net.into(),
        ip: ip(addr),
        mac: mac_for_ip(ip(addr)),
        node_addr: ip(node),
        local,
    }
}

fn desired() -> OverlayDesired {
    OverlayDesired {
        local_addr: ip("192.168.50.1"),
        networks: vec![spec("n1", 4097, "10.0.1.0/24")],
        endpoints: vec![
            ep("a", "n1", "10.0.1.2", "192.168.50.1", true),
            ep("b", "n1", "10.0.1.3", "192.168.50.2", false),
            ep("c", "n1", "10.0.1.4", "192.168.50.3", false),
            ep("x", "other", "10.0.9.4", "192.168.50.3", false),
        ],
    }
}

/// Applies a plan to an observed model the way the kernel would (for the fixpoint test).
fn simulate(obs: &mut OverlayObserved, plan: &[OverlayOp]) {
    let find = |obs: &mut OverlayObserved, n: &str| {
        let i = obs.links.iter().position(|l| l.name == n).expect("link");
        i
    };
    for op in plan {
        match op {
            OverlayOp::DeleteLink { name } => {
                obs.links.retain(|l| &l.name != name);
                obs.fdb.remove(name);
                obs.neighbours.remove(name);
            }
            OverlayOp::CreateBridge { name, mtu } => obs.links.push(ObservedOverlayLink {
                name: name.clone(),
                kind: Some("bridge".into()),
                mtu: Some(*mtu),
                ..Default::default()
            }),
            OverlayOp::CreateVxlan {
                name,
                vni,
                port,
                mtu,
            } => obs.links.push(ObservedOverlayLink {
                name: name.clone(),
                kind: Some("vxlan".into()),
                mtu: Some(*mtu),
                vni: Some(*vni),
                port: Some(*port),
                learning: Some(false),
                proxy: Some(true),
                ..Default::default()
            }),
            OverlayOp::SetMtu { link, mtu } => {
                let i = find(obs, link);
                obs.links[i].mtu = Some(*mtu)
            }
            OverlayOp::SetMac { link, mac } => {
                let i = find(obs, link);
                obs.links[i].mac = Some(*mac)
            }
            OverlayOp::SetMaster { link, bridge } => {
                let i = find(obs, link);
                obs.links[i].master = Some(bridge.clone())
            }
            OverlayOp::SetUp { link } => {
                let i = find(obs, link);
                obs.links[i].up = true
            }
            OverlayOp::AddAddress { link, ip, prefix } => {
                let i = find(obs, link);
                obs.links[i].addresses.push((*ip, *prefix))
            }
            OverlayOp::DelAddress { link, ip, prefix } => {
                let i = find(obs, link);
                obs.links[i].addresses.retain(|a| *a != (*ip, *prefix))
            }
            OverlayOp::AddFdb { vxlan, entry } => {
                obs.fdb.entry(vxlan.clone()).or_default().insert(*entry);
            }
            OverlayOp::DelFdb { vxlan, entry } => {
                obs.fdb.entry(vxlan.clone()).or_default().remove(entry);
            }
            OverlayOp::AddNeigh { vxlan, entry } => {
                obs.neighbours
                    .entry(vxlan.clone())
                    .or_default()
                    .insert(*entry);
            }
            OverlayOp::DelNeigh { vxlan, entry } => {
                obs.neighbours
                    .entry(vxlan.clone())
                    .or_default()
                    .remove(entry);
            }
        }
    }
}

#[test]
fn mac_is_libnetworks() {
    assert_eq!(mac_for_ip(ip("10.0.1.2")), [0x02, 0x42, 10, 0, 1, 2]);
    assert_eq!(format_mac(&mac_for_ip(ip("10.0.1.2"))), "02:42:0a:00:01:02");
}

#[test]
fn names_fit_ifnamsiz_and_carry_the_prefix() {
    let n = OverlayNames::new("abcd").unwrap();
    assert_eq!(n.bridge(0xffffff), "abcdbffffff");
    assert_eq!(n.vxlan(4097), "abcdx001001");
    let v = n.veth("n1", std::path::Path::new("/run/netns/c1"));
    assert!(v.starts_with("abcdv") && v.len() <= 15, "{v}");
    assert_ne!(v, n.veth("n2", std::path::Path::new("/run/netns/c1")));
    assert_eq!(v, n.veth("n1", std::path::Path::new("/run/netns/c1")));
    assert!(OverlayNames::new("").is_err());
    assert!(OverlayNames::new("toolong").is_err());
    assert!(OverlayNames::new("A-b").is_err());
    assert_eq!(n.alias(), "berth-ovl:abcd");
}

#[test]
fn empty_kernel_gets_bridge_vxlan_and_entries_for_remote_endpoints_only() {
    let plan = plan_overlay(&desired(), &observed());
    assert!(plan.contains(&OverlayOp::CreateBridge {
        name: "t1b001001".into(),
        mtu: 1450
    }));
    assert!(plan.contains(&OverlayOp::CreateVxlan {
        name: "t1x001001".into(),
        vni: 4097,
        port: 4789,
        mtu: 1450
    }));
    assert!(plan.contains(&OverlayOp::SetMaster {
        link: "t1x001001".into(),
        bridge: "t1b001001".into()
    }));
    let fdb: Vec<&OverlayOp> = plan
        .iter()
        .filter(|o| matches!(o, OverlayOp::AddFdb { .. }))
        .collect();
    assert_eq!(
        fdb,
        vec![
            &OverlayOp::AddFdb {
                vxlan: "t1x001001".into(),
                entry: FdbEntry {
                    mac: mac_for_ip(ip("10.0.1.3")),
                    dst: ip("192.168.50.2")
                }
            },
            &OverlayOp::AddFdb {
                vxlan: "t1x001001".into(),
                entry: FdbEntry {
                    mac: mac_for_ip(ip("10.0.1.4")),
                    dst: ip("192.168.50.3")
                }
            },
        ]
    );
    assert_eq!(
        plan.iter()
            .filter(|o| matches!(o, OverlayOp::AddNeigh { .. }))
            .count(),
        2
    );
    // No gateway, no host address: the bridge has no address.
    assert!(!plan
        .iter()
        .any(|o| matches!(o, OverlayOp::AddAddress { .. })));
    // Creation comes before configuration.
    let pos = |p: &OverlayOp| plan.iter().position(|o| o == p).unwrap();
    assert!(
        pos(&OverlayOp::CreateVxlan {
            name: "t1x001001".into(),
            vni: 4097,
            port: 4789,
            mtu: 1450
        }) < pos(&OverlayOp::SetUp {
            link: "t1x001001".into()
        })
    );
}

#[test]
fn plan_reaches_a_fixpoint() {
    let mut obs = observed();
    let mut d = desired();
    d.networks[0].gateway = Some(ip("10.0.1.1"));
    let plan = plan_overlay(&d, &obs);
    simulate(&mut obs, &plan);
    assert_eq!(plan_overlay(&d, &obs), vec![]);
}

#[test]
fn a_node_that_leaves_leaves_no_entry_behind() {
    let mut obs = observed();
    let d = desired();
    let first = plan_overlay(&d, &obs);
    simulate(&mut obs, &first);
    let mut gone = d.clone();
    gone.endpoints.retain(|e| e.node_addr != ip("192.168.50.3"));
    let plan = plan_overlay(&gone, &obs);
    assert_eq!(
        plan,
        vec![
            OverlayOp::DelFdb {
                vxlan: "t1x001001".into(),
                entry: FdbEntry {
                    mac: mac_for_ip(ip("10.0.1.4")),
                    dst: ip("192.168.50.3")
                }
            },
            OverlayOp::DelNeigh {
                vxlan: "t1x001001".into(),
                entry: NeighEntry {
                    ip: ip("10.0.1.4"),
                    mac: mac_for_ip(ip("10.0.1.4"))
                }
            },
        ]
    );
    simulate(&mut obs, &plan);
    let all: Vec<Ipv4Addr> = obs.fdb.values().flatten().map(|e| e.dst).collect();
    assert!(!all.contains(&ip("192.168.50.3")));
}

#[test]
fn a_node_that_changes_address_gets_its_entries_moved() {
    let mut obs = observed();
    let d = desired();
    let first = plan_overlay(&d, &obs);
    simulate(&mut obs, &first);
    let mut moved = d.clone();
    for e in &mut moved.endpoints {
        if e.node_addr == ip("192.168.50.3") {
            e.node_addr = ip("192.168.50.9");
        }
    }
    let plan = plan_overlay(&moved, &obs);
    assert_eq!(plan.len(), 2, "{plan:?}");
    assert!(matches!(&plan[0], OverlayOp::DelFdb { entry, .. } if entry.dst == ip("192.168.50.3")));
    assert!(matches!(&plan[1], OverlayOp::AddFdb { entry, .. } if entry.dst == ip("192.168.50.9")));
}

#[test]
fn stale_links_of_this_instance_are_deleted_and_wrong_vxlans_recreated() {
    let mut obs = observed();
    let first = plan_overlay(&desired(), &obs);
    simulate(&mut obs, &first);
    obs.links.push(ObservedOverlayLink {
        name: "t1b00beef".into(),
        kind: Some("bridge".into()),
        ..Default::default()
    });
    obs.links.push(ObservedOverlayLink {
        name: "t1vdeadbeef".into(),
        kind: Some("veth".into()),
        master: Some("t1b00beef".into()),
        ..Default::default()
    });
    obs.links.push(ObservedOverlayLink {
        name: "t1vcafecafe".into(),
        kind: Some("veth".into()),
        master: Some("t1b001001".into()),
        ..Default::default()
    });
    // Learning got turned on behind our back.
    let vx = obs
        .links
        .iter_mut()
        .find(|l| l.name == "t1x001001")
        .unwrap();
    vx.learning = Some(true);
    let plan = plan_overlay(&desired(), &obs);
    assert!(plan.contains(&OverlayOp::DeleteLink {
        name: "t1b00beef".into()
    }));
    assert!(plan.contains(&OverlayOp::DeleteLink {
        name: "t1vdeadbeef".into()
    }));
    assert!(!plan.contains(&OverlayOp::DeleteLink {
        name: "t1vcafecafe".into()
    }));
    assert!(plan.contains(&OverlayOp::DeleteLink {
        name: "t1x001001".into()
    }));
    // The re-created device gets its entries again.
    assert_eq!(
        plan.iter()
            .filter(|o| matches!(o, OverlayOp::AddFdb { .. }))
            .count(),
        2
    );
}

#[test]
fn removing_every_network_deletes_everything() {
    let mut obs = observed();
    let first = plan_overlay(&desired(), &obs);
    simulate(&mut obs, &first);
    let plan = plan_overlay(&OverlayDesired::default(), &obs);
    simulate(&mut obs, &plan);
    assert!(obs.links.is_empty(), "{obs:?}");
}

#[test]
fn bridge_address_is_the_host_address_else_the_gateway() {
    let mut s = spec("n", 1, "10.0.0.0/24");
    assert_eq!(s.bridge_address(), None);
    s.gateway = Some(ip("10.0.0.1"));
    assert_eq!(s.bridge_address(), Some(ip("10.0.0.1")));
    // Internal networks too: their embedded DNS server answers there.
    s.internal = true;
    assert_eq!(s.bridge_address(), Some(ip("10.0.0.1")));
    s.host_address = Some(ip("10.0.0.7"));
    assert_eq!(s.bridge_address(), Some(ip("10.0.0.7")));
    let d = OverlayDesired {
        local_addr: ip("192.168.0.1"),
        networks: vec![s],
        endpoints: vec![],
    };
    let plan = plan_overlay(&d, &observed());
    assert!(plan.contains(&OverlayOp::SetMac {
        link: "t1b000001".into(),
        mac: mac_for_ip(ip("10.0.0.7"))
    }));
    assert!(plan.contains(&OverlayOp::AddAddress {
        link: "t1b000001".into(),
        ip: ip("10.0.0.7"),
        prefix: 24
    }));
}

#[test]
fn validation_refuses_bad_vnis_and_addresses() {
    let mut d = desired();
    assert!(validate_desired(&d).is_ok());
    d.networks[0].vni = 0;
    assert!(validate_desired(&d).is_err());
    d.networks[0].vni = 1 << 24;
    assert!(validate_desired(&d).is_err());
    let mut d = desired();
    d.networks.push(spec("n2", 4097, "10.0.2.0/24"));
    assert!(validate_desired(&d).is_err());
    let mut d = desired();
    d.endpoints[0].ip = ip("10.9.9.9");
    assert!(validate_desired(&d).is_err());
    let mut d = desired();
    d.networks[0].subnet = "nonsense".into();
    assert!(validate_desired(&d).is_err());
}

#[test]
fn host_table_meshes_without_snat_and_isolates_overlays() {
    let mut d = desired();
    d.networks[0].gateway = Some(ip("10.0.1.1"));
    let mut internal = spec("n2", 4098, "10.0.2.0/24");
    internal.internal = true;
    internal.gateway = Some(ip("10.0.2.1"));
    d.networks.push(internal);
    let s = render_host_table(
        &d,
        &names(),
        4789,
        &[
            IngressRule {
                published: 8080,
                protocol: Protocol::Tcp,
                target_port: 80,
                backends: vec![ip("10.0.0.5"), ip("10.0.0.6")],
            },
            IngressRule {
                published: 9999,
                protocol: Protocol::Udp,
                target_port: 53,
                backends: vec![],
            },
        ],
        &[HostPortRule {
            published: 7000,
            protocol: Protocol::Tcp,
            target: ip("10.0.1.2"),
            target_port: 70,
        }],
    );
    assert!(s.starts_with("table ip berth_ovl_t1\ndelete table ip berth_ovl_t1\n"));
    assert!(s.contains(
        "tcp dport 8080 dnat to numgen random mod 2 map { 0 : 10.0.0.5, 1 : 10.0.0.6 } : 80"
    ));
    assert!(!s.contains("dport 9999"));
    assert!(s.contains("tcp dport 7000 dnat to 10.0.1.2:70"));
    // Only the non-internal network is masqueraded, and never DNATed traffic.
    assert!(
        s.contains("ip saddr 10.0.1.0/24 oifname != \"t1b001001\" ct status != dnat masquerade")
    );
    assert!(!s.contains("ip saddr 10.0.2.0/24"));
    assert!(s.contains("iifname \"t1b001002\" oifname != \"t1b001002\" drop"));
    assert!(s.contains("iifname \"t1b001001\" oifname { \"t1b001002\" } drop"));
    assert!(!s.contains("snat"));
    // From the internal network's bridge the host answers DNS only.
    assert!(s.contains(
        "iifname { \"t1b001002\" } meta l4proto { tcp, udp } th dport 53 accept\n\t\tiifname { \"t1b001002\" } ct state established,related accept\n\t\tiifname { \"t1b001002\" } drop"
    ));
    assert!(!s.contains("iifname { \"t1b001001\" }"));
    // No encrypted network: no filter on VXLAN.
    assert!(!s.contains("@th,96"));
}

#[test]
fn host_table_drops_plain_vxlan_of_encrypted_networks_off_the_tunnel() {
    let mut d = desired();
    let mut enc = spec("n3", 4099, "10.0.3.0/24");
    enc.encrypted = true;
    d.networks.push(enc);
    let s = render_host_table(&d, &names(), 4789, &[], &[]);
    assert_eq!(names().wireguard(), "t1wg");
    assert!(
        s.contains("iifname != \"t1wg\" udp dport 4789 @th,96,24 { 4099 } counter drop"),
        "{s}"
    );
    assert!(
        s.contains("oifname != \"t1wg\" udp dport 4789 @th,96,24 { 4099 } counter drop"),
        "{s}"
    );
    // The plain network's VNI is not filtered.
    assert!(!s.contains("4097 }"), "{s}");
    // nft refuses two chains of one name in a table.
    let chains: Vec<&str> = s
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain "))
        .collect();
    let unique: std::collections::BTreeSet<&&str> = chains.iter().collect();
    assert_eq!(unique.len(), chains.len(), "{s}");
    assert!(s.ends_with("\t}\n}\n"), "{s}");
}

/// berthd keeps the driver behind a `tokio::sync::Mutex` and awaits it from spawned tasks:
/// its futures must be `Send` (checked at compile time; never called).
#[allow(dead_code)]
fn driver_futures_are_send(d: &mut OverlayDriver, desired: &OverlayDesired, p: &std::path::Path) {
    fn send<T: Send>(_: &T) {}
    send(&d.reconcile(desired));
    send(&d.set_published(vec![], vec![]));
    send(&d.program_vips(p, &[]));
    send(&d.program_ingress_return(
        p,
        &IngressReturn {
            ifname: "eth0".into(),
            nodes: vec![],
        },
    ));
    send(&d.attach("n", p, "eth0", Ipv4Addr::LOCALHOST, 24, [0; 6], None));
    send(&d.detach("n", p));
    send(&d.teardown());
    fn sync<T: Send + Sync>() {}
    sync::<OverlayDriver>();
}

#[test]
fn a_node_with_the_mesh_answers_local_clients_on_loopback_too() {
    let mut d = desired();
    d.networks[0].host_address = Some(ip("10.0.0.2"));
    let s = render_host_table(&d, &names(), 4789, &[], &[]);
    assert!(s.contains("type nat hook output priority -100; policy accept;\n\t\tfib daddr type local jump published"));
    assert!(s.contains(&format!(
        "oifname \"{}\" ip saddr 127.0.0.0/8 masquerade",
        names().bridge(d.networks[0].vni)
    )));
    // Without the mesh, loopback is left alone.
    let s = render_host_table(&desired(), &names(), 4789, &[], &[]);
    assert!(s.contains("ip daddr != 127.0.0.0/8 fib daddr type local jump published"));
    assert!(!s.contains("127.0.0.0/8 masquerade"));
}
