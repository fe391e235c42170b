//! Multi-node tests: 3 managers + 2 workers in one process, on loopback ports, over real
//! mutual-TLS gRPC, each with its own data directory.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_consensus::{ClusterNode, ConsensusError, NodeRole, NodeUpdate, ReadConsistency};
use common::{eventually, Harness, Slot};

const WAIT: Duration = Duration::from_secs(20);

fn label_update(key: &str, value: &str) -> NodeUpdate {
    NodeUpdate {
        labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
        ..NodeUpdate::default()
    }
}

/// Every running slot sees `count` nodes and the same single leader; returns the leader.
async fn converged(slots: &[&Slot], count: usize) -> u64 {
    eventually("all nodes see every node and one leader", WAIT, || async {
        let mut leaders = Vec::new();
        for s in slots {
            let n = s.node();
            let nodes = n.nodes(ReadConsistency::Local).await.ok()?;
            if nodes.len() != count {
                return None;
            }
            leaders.push(n.leader()?);
        }
        leaders.dedup();
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

async fn label_of(node: &ClusterNode, id: u64, key: &str) -> Option<String> {
    let state = node.state(ReadConsistency::Local).await.ok()?;
    state.nodes.get(&id)?.labels.get(key).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_managers_two_workers_failover_catch_up_and_full_restart() {
    let h = Harness::new();
    let mut m1 = h.init("m1").await;
    let tokens = m1.node().join_tokens().await.expect("tokens");
    let manager_token = tokens.manager.to_string();
    let worker_token = tokens.worker.to_string();
    assert!(manager_token.starts_with("SWMTKN-1-"));
    assert_ne!(manager_token, worker_token);

    let mut m2 = h.join("m2", &m1, &manager_token).await;
    let mut m3 = h.join("m3", &m2, &manager_token).await; // via a non-leader manager
    let mut w1 = h.join("w1", &m1, &worker_token).await;
    let mut w2 = h.join("w2", &m3, &worker_token).await;

    let leader = converged(&[&m1, &m2, &m3, &w1, &w2], 5).await;
    // Roles as recorded, and Raft membership: 3 voters, 2 learners.
    let nodes = w1
        .node()
        .nodes(ReadConsistency::Linearizable)
        .await
        .expect("read from worker");
    assert_eq!(nodes.len(), 5);
    let managers: Vec<_> = nodes
        .iter()
        .filter(|n| n.role == NodeRole::Manager)
        .map(|n| n.id)
        .collect();
    assert_eq!(managers.len(), 3);
    for id in [m1.id(), m2.id(), m3.id()] {
        assert!(managers.contains(&id));
    }
    let metrics = m1.node().raft_metrics().borrow().clone();
    let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
    assert_eq!(voters.len(), 3, "voters: {voters:?}");
    let learners: Vec<u64> = metrics
        .membership_config
        .membership()
        .learner_ids()
        .collect();
    assert_eq!(learners.len(), 2, "learners: {learners:?}");
    assert!(learners.contains(&w1.id()) && learners.contains(&w2.id()));

    // A worker's write is forwarded to the leader.
    let w1_id = w1.id();
    w1.node()
        .update_node(w1_id, label_update("k", "before"))
        .await
        .expect("write from worker");

    // Leader shutdown: a new leader is elected.
    let slots: [&mut Slot; 5] = [&mut m1, &mut m2, &mut m3, &mut w1, &mut w2];
    let [m1, m2, m3, w1, w2] = slots;
    let leader_slot: &mut Slot = [&mut *m1, &mut *m2, &mut *m3]
        .into_iter()
        .find(|s| s.id() == leader)
        .expect("leader is a manager");
    let stopped_at = Instant::now();
    leader_slot.stop().await;
    let leader_name = leader_slot.name.clone();
    let survivors: Vec<&Slot> = [&*m1, &*m2, &*m3, &*w1, &*w2]
        .into_iter()
        .filter(|s| s.node.is_some())
        .collect();
    let new_leader = eventually("new leader elected", WAIT, || async {
        let mut seen = Vec::new();
        for s in &survivors {
            seen.push(s.node().leader()?);
        }
        seen.dedup();
        (seen.len() == 1 && seen[0] != leader).then(|| seen[0])
    })
    .await;
    let failover = stopped_at.elapsed();
    eprintln!(
        "failover: leader {leader_name} stopped, new leader {new_leader:x} after {failover:?}"
    );
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );

    // Writes continue, from a worker and from a manager.
    w2.node()
        .update_node(w1_id, label_update("k", "after"))
        .await
        .expect("write after failover");
    let follower_manager = survivors
        .iter()
        .find(|s| s.node().role() == Some(NodeRole::Manager))
        .expect("a surviving manager");
    follower_manager
        .node()
        .update_node(w1_id, label_update("k", "after2"))
        .await
        .expect("write from manager after failover");

    // The old leader restarts from its data dir, rejoins as follower and catches up.
    let old = [&mut *m1, &mut *m2, &mut *m3]
        .into_iter()
        .find(|s| s.node.is_none())
        .expect("stopped slot");
    old.restart().await;
    let old = &*old;
    eventually("old leader catches up", WAIT, || async {
        (label_of(old.node(), w1_id, "k").await.as_deref() == Some("after2")).then_some(())
    })
    .await;
    assert_ne!(
        old.node().leader(),
        Some(old.id()),
        "old leader came back as follower"
    );

    // A write acknowledged before every node stops is there after all restart.
    w2.node()
        .update_node(w1_id, label_update("durable", "yes"))
        .await
        .expect("durable write");
    let all: [&mut Slot; 5] = [m1, m2, m3, w1, w2];
    for s in all.iter() {
        assert!(s.node.is_some());
    }
    let [m1, m2, m3, w1, w2] = all;
    for s in [&mut *m1, &mut *m2, &mut *m3, &mut *w1, &mut *w2] {
        s.stop().await;
    }
    for s in [&mut *m1, &mut *m2, &mut *m3, &mut *w1, &mut *w2] {
        s.restart().await;
    }
    converged(&[&*m1, &*m2, &*m3, &*w1, &*w2], 5).await;
    for s in [&*m1, &*m2, &*m3, &*w1, &*w2] {
        eventually(
            "acknowledged write present after full restart",
            WAIT,
            || async {
                (label_of(s.node(), w1_id, "durable").await.as_deref() == Some("yes")).then_some(())
            },
        )
        .await;
    }
    let state = w1
        .node()
        .state(ReadConsistency::Linearizable)
        .await
        .expect("linearizable read");
    assert_eq!(
        state.nodes[&w1_id]
            .labels
            .get("durable")
            .map(String::as_str),
        Some("yes")
    );

    // Promote a worker, demote it again, remove the other worker.
    let w2_id = w2.id();
    let promoted = m1
        .node()
        .update_node(
            w1_id,
            NodeUpdate {
                role: Some(NodeRole::Manager),
                ..NodeUpdate::default()
            },
        )
        .await
        .expect("promote");
    assert_eq!(promoted.role, NodeRole::Manager);
    eventually("promoted worker is a voter", WAIT, || async {
        let m = m1.node().raft_metrics().borrow().clone();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        (voters.len() == 4 && voters.contains(&w1_id)).then_some(())
    })
    .await;
    // A promoted manager can hand out join tokens (it fetches the CA key).
    let tokens_from_promoted = w1.node().join_tokens().await.expect("tokens via promoted");
    assert_eq!(tokens_from_promoted.worker.to_string(), worker_token);
    w1.node()
        .update_node(
            w1_id,
            NodeUpdate {
                role: Some(NodeRole::Worker),
                ..NodeUpdate::default()
            },
        )
        .await
        .expect("demote");
    eventually("demoted node is a learner again", WAIT, || async {
        let m = m1.node().raft_metrics().borrow().clone();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let learners: Vec<u64> = m.membership_config.membership().learner_ids().collect();
        (voters.len() == 3 && learners.contains(&w1_id)).then_some(())
    })
    .await;
    m2.node().remove_node(w2_id).await.expect("remove worker");
    let nodes = m3
        .node()
        .nodes(ReadConsistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(nodes.len(), 4);
    // The removed node's certificate is revoked: its forwarded writes are refused.
    let err = w2
        .node()
        .update_node(w1_id, label_update("from", "removed"))
        .await
        .expect_err("removed node must not write");
    match &err {
        ConsensusError::Rpc { status, .. } => {
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{err:?}")
        }
        other => panic!("expected a refused RPC, got {other:?}"),
    }
    // Managers cannot be removed without demotion.
    let m3_id = m3.id();
    let err = m1
        .node()
        .remove_node(m3_id)
        .await
        .expect_err("manager removal refused");
    assert!(matches!(err, ConsensusError::Rejected(_)), "{err:?}");

    for s in [m1, m2, m3, w1, w2] {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_token_rotated_token_and_foreign_ca_are_refused() {
    let h = Harness::new();
    let mut a = h.init("a").await;
    let tokens = a.node().join_tokens().await.expect("tokens");
    let good = tokens.worker.clone();

    // Wrong secret, right CA.
    let mut wrong = good.clone();
    wrong.secret = "0".repeat(32);
    let err = h
        .try_join("x1", &a, &wrong.to_string())
        .await
        .expect_err("wrong secret");
    assert!(matches!(err, ConsensusError::JoinRefused { .. }), "{err:?}");

    // Token of another cluster: the CA fingerprint does not match.
    let mut b = h.init("b").await;
    let b_token = b.node().join_tokens().await.expect("b tokens").worker;
    let err = h
        .try_join("x2", &a, &b_token.to_string())
        .await
        .expect_err("foreign token");
    assert!(
        matches!(err, ConsensusError::CaFingerprintMismatch { .. }),
        "{err:?}"
    );

    // Malformed token.
    let err = h
        .try_join("x3", &a, "SWMTKN-1-nope")
        .await
        .expect_err("malformed");
    assert!(
        matches!(err, ConsensusError::MalformedToken { .. }),
        "{err:?}"
    );

    // Rotation: the old worker token stops working, the new one works.
    a.node()
        .rotate_join_token(NodeRole::Worker)
        .await
        .expect("rotate");
    let err = h
        .try_join("x4", &a, &good.to_string())
        .await
        .expect_err("rotated token");
    assert!(matches!(err, ConsensusError::JoinRefused { .. }), "{err:?}");
    let new = a.node().join_tokens().await.expect("tokens").worker;
    assert_ne!(new, good);
    let mut joined = h.join("x5", &a, &new.to_string()).await;
    eventually("joined node sees itself as a worker", WAIT, || async {
        (joined.node().role() == Some(NodeRole::Worker)).then_some(())
    })
    .await;

    // A certificate from another CA is refused at the TLS layer, even when the client
    // trusts our server. Control: our own identity succeeds on the same call.
    use berth_consensus::pki::{tls, NodeIdentity};
    use berth_consensus::transport::leader_op::LeaderRequest;
    use berth_consensus::transport::pb::cluster_client::ClusterClient;
    use berth_consensus::transport::pb::ForwardRequest;
    let ours = NodeIdentity::load(&a.dir).expect("a identity");
    let theirs = NodeIdentity::load(&b.dir).expect("b identity");
    let forged = NodeIdentity {
        ca_cert_der: ours.ca_cert_der.clone(),
        cert_der: theirs.cert_der.clone(),
        key_der: theirs.key_der.clone(),
        ca_key_der: None,
    };
    let call = |identity: Option<NodeIdentity>| {
        let addr = a.addr.to_string();
        let ca = ours.ca_cert_der.clone();
        async move {
            let config = match identity {
                Some(id) => tls::client_config(&id).expect("client config"),
                None => tls::join_client_config(&ca).expect("client config"),
            };
            let channel = tls::channel(&addr, config).expect("channel");
            let req = ForwardRequest::try_from(&LeaderRequest::Read).expect("encode");
            ClusterClient::new(channel).forward(req).await
        }
    };
    call(Some(ours.clone()))
        .await
        .expect("own certificate accepted");
    let status = call(Some(forged))
        .await
        .expect_err("foreign certificate refused");
    assert_ne!(status.code(), tonic::Code::Ok);
    let status = call(None).await.expect_err("no certificate refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    // The worker leaves: it is removed from the state and its cluster files are gone.
    let leaver = joined.node.take().expect("running");
    let leaver_id = leaver.id();
    leaver.leave().await.expect("leave");
    assert!(!ClusterNode::is_member(&joined.dir));
    let nodes = a
        .node()
        .nodes(ReadConsistency::Linearizable)
        .await
        .expect("read");
    assert!(
        nodes.iter().all(|n| n.id != leaver_id),
        "left node still listed"
    );
    assert_eq!(nodes.len(), 1);

    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn force_new_cluster_on_the_survivor_of_three_keeps_state() {
    let h = Harness::new();
    let mut m1 = h.init("m1").await;
    let token = m1
        .node()
        .join_tokens()
        .await
        .expect("tokens")
        .manager
        .to_string();
    let mut m2 = h.join("m2", &m1, &token).await;
    let mut m3 = h.join("m3", &m1, &token).await;
    converged(&[&m1, &m2, &m3], 3).await;
    let m1_id = m1.id();
    m2.node()
        .update_node(m1_id, label_update("keep", "me"))
        .await
        .expect("write");
    // Make sure m3 has applied it before it becomes the survivor.
    eventually("m3 applied the write", WAIT, || async {
        (label_of(m3.node(), m1_id, "keep").await.as_deref() == Some("me")).then_some(())
    })
    .await;

    // Two of three managers are gone for good.
    m1.stop().await;
    m2.stop().await;
    m3.stop().await;
    let survivor_config = m3.config();
    let survivor = ClusterNode::force_new_cluster(survivor_config)
        .await
        .expect("force new cluster");
    let survivor_id = survivor.id();
    assert_eq!(survivor.leader(), Some(survivor_id));
    let state = survivor
        .state(ReadConsistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(state.nodes.len(), 3, "all node records kept");
    assert_eq!(
        state.nodes[&m1_id].labels.get("keep").map(String::as_str),
        Some("me")
    );
    let managers: Vec<u64> = state.managers().map(|n| n.id).collect();
    assert_eq!(managers, vec![survivor_id]);
    // The one-node cluster takes writes.
    survivor
        .update_node(m1_id, label_update("after", "force"))
        .await
        .expect("write");
    let voters: Vec<u64> = survivor
        .raft_metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, vec![survivor_id]);
    survivor.shutdown().await.expect("shutdown");
    // And it restarts normally afterwards.
    m3.restart().await;
    m3.node()
        .wait_for_leader(WAIT)
        .await
        .expect("leader after restart");
    assert_eq!(
        label_of(m3.node(), m1_id, "after").await.as_deref(),
        Some("force")
    );
    m3.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_demotes_itself_and_leadership_moves() {
    let h = Harness::new();
    let mut m1 = h.init("m1").await;
    let token = m1
        .node()
        .join_tokens()
        .await
        .expect("tokens")
        .manager
        .to_string();
    let mut m2 = h.join("m2", &m1, &token).await;
    let mut m3 = h.join("m3", &m1, &token).await;
    let leader = converged(&[&m1, &m2, &m3], 3).await;
    let slots = [&m1, &m2, &m3];
    let leader_slot = slots
        .iter()
        .find(|s| s.id() == leader)
        .expect("leader slot");
    let demoted = leader_slot
        .node()
        .update_node(
            leader,
            NodeUpdate {
                role: Some(NodeRole::Worker),
                ..NodeUpdate::default()
            },
        )
        .await
        .expect("leader demotes itself");
    assert_eq!(demoted.role, NodeRole::Worker);
    let other = slots.iter().find(|s| s.id() != leader).expect("other");
    eventually("a new leader with two voters", WAIT, || async {
        let m = other.node().raft_metrics().borrow().clone();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let new_leader = m.current_leader?;
        (voters.len() == 2 && !voters.contains(&leader) && new_leader != leader).then_some(())
    })
    .await;
    // The demoted node still takes writes (forwarded) and follows as a learner.
    leader_slot
        .node()
        .update_node(leader, label_update("after", "demotion"))
        .await
        .expect("write from demoted node");
    for s in [&mut m1, &mut m2, &mut m3] {
        s.stop().await;
    }
}
