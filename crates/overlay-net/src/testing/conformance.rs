//! Conformance suite every [`LinkExecutor`] must pass: the fake in unit tests and
//! [`crate::RtnetlinkExecutor`] as root in a throwaway namespace run the same checks, so the
//! fake the driver tests rely on behaves like the kernel where it matters.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::NetError;
use crate::links::{LinkExecutor, LinkOp, Netns, BERTH_ALIAS};

/// Runs the suite. `container_netns` is a namespace file the executor can create links in
/// (any path for the fake). Panics on the first difference from the expected behaviour.
pub async fn link_executor_suite<L: LinkExecutor>(links: &L, container_netns: &Path) {
    let bridge = "brconform0";
    let veth = "vconform0";
    let inside = Netns::Path(container_netns.to_path_buf());
    let ok = |r: Result<(), NetError>, what: &str| {
        if let Err(e) = r {
            panic!("{what}: {e}");
        }
    };

    // Bridges: creating twice is fine; addresses replace; the alias marks it as berth's.
    let create_bridge = LinkOp::CreateBridge {
        name: bridge.into(),
        mtu: Some(1400),
    };
    ok(links.apply(&create_bridge).await, "create bridge");
    ok(links.apply(&create_bridge).await, "create bridge again");
    let addr = LinkOp::AddAddress {
        netns: Netns::Host,
        link: bridge.into(),
        address: Ipv4Addr::new(10, 199, 0, 1),
        prefix: 24,
    };
    ok(links.apply(&addr).await, "bridge address");
    ok(links.apply(&addr).await, "bridge address again");
    ok(
        links
            .apply(&LinkOp::SetUp {
                netns: Netns::Host,
                link: bridge.into(),
            })
            .await,
        "bridge up",
    );
    let listed = links.list_links().await.expect("list links");
    let b = listed
        .iter()
        .find(|l| l.name == bridge)
        .expect("bridge listed");
    assert_eq!(b.kind.as_deref(), Some("bridge"));
    assert_eq!(b.alias.as_deref(), Some(BERTH_ALIAS));
    assert_eq!(b.mtu, Some(1400));

    // A step on a missing link says so.
    match links
        .apply(&LinkOp::SetUp {
            netns: Netns::Host,
            link: "nosuch0".into(),
        })
        .await
    {
        Err(NetError::LinkNotFound { name }) => assert_eq!(name, "nosuch0"),
        other => panic!("expected LinkNotFound, got {other:?}"),
    }

    // Veth with its peer created inside the namespace; a second identical create fails,
    // and a bridge cannot be "created" over it.
    let create_veth = LinkOp::CreateVeth {
        host: veth.into(),
        peer: "eth7".into(),
        peer_netns: container_netns.to_path_buf(),
        peer_mac: [0x02, 0x42, 10, 199, 0, 2],
        mtu: Some(1400),
    };
    ok(links.apply(&create_veth).await, "create veth");
    assert!(
        links.apply(&create_veth).await.is_err(),
        "duplicate veth accepted"
    );
    // A bridge cannot be "created" over a link of another kind.
    match links
        .apply(&LinkOp::CreateBridge {
            name: veth.into(),
            mtu: None,
        })
        .await
    {
        Err(NetError::LinkNotABridge { name, kind }) => {
            assert_eq!((name.as_str(), kind.as_deref()), (veth, Some("veth")))
        }
        other => panic!("expected LinkNotABridge, got {other:?}"),
    }
    ok(
        links
            .apply(&LinkOp::SetMaster {
                link: veth.into(),
                bridge: bridge.into(),
            })
            .await,
        "set master",
    );
    ok(
        links
            .apply(&LinkOp::SetHairpin {
                link: veth.into(),
                isolated: true,
            })
            .await,
        "hairpin",
    );
    ok(
        links
            .apply(&LinkOp::SetUp {
                netns: Netns::Host,
                link: veth.into(),
            })
            .await,
        "veth up",
    );
    let listed = links.list_links().await.expect("list links");
    let v = listed.iter().find(|l| l.name == veth).expect("veth listed");
    assert_eq!(v.kind.as_deref(), Some("veth"));
    assert_eq!(v.master.as_deref(), Some(bridge));
    assert_eq!(v.mtu, Some(1400));
    assert!(v.is_berths());
    assert!(
        !listed.iter().any(|l| l.name == "eth7"),
        "peer left in the host"
    );

    // Inside the namespace: address, up, lo, default route via the bridge.
    for op in [
        LinkOp::AddAddress {
            netns: inside.clone(),
            link: "eth7".into(),
            address: Ipv4Addr::new(10, 199, 0, 2),
            prefix: 24,
        },
        LinkOp::SetUp {
            netns: inside.clone(),
            link: "eth7".into(),
        },
        LinkOp::SetUp {
            netns: inside.clone(),
            link: "lo".into(),
        },
        LinkOp::AddDefaultRoute {
            netns: inside.clone(),
            gateway: Ipv4Addr::new(10, 199, 0, 1),
        },
    ] {
        ok(links.apply(&op).await, &format!("{op:?}"));
    }

    // Deleting the host end removes the pair; deleting again is fine.
    let delete = LinkOp::DeleteLink { name: veth.into() };
    ok(links.apply(&delete).await, "delete veth");
    ok(links.apply(&delete).await, "delete absent veth");
    ok(
        links.apply(&create_veth).await,
        "peer name free again after delete",
    );
    ok(links.apply(&delete).await, "delete veth again");

    ok(
        links
            .apply(&LinkOp::DeleteLink {
                name: bridge.into(),
            })
            .await,
        "delete bridge",
    );
    let listed = links.list_links().await.expect("list links");
    assert!(
        !listed.iter().any(|l| l.name == bridge || l.name == veth),
        "links left: {listed:?}"
    );
}
