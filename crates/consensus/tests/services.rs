//! Services and tasks over a real cluster: 3 managers + 1 worker in one process, on
//! loopback ports, over mutual-TLS gRPC. Task status and node descriptions are accepted
//! only from the node they speak for; heartbeats reach the leader and its table starts
//! over when the leader changes; the applied-index watch fires on every node.

mod common;

use std::time::{Duration, Instant};

use berth_consensus::{
    ClusterNode, Command, ConsensusError, NodeDescription, NodeId, ReadConsistency, Rejection,
    Response,
};
use berth_orchestrator::{Service, Task, TaskChange, TaskState, TaskStatus};
use common::{eventually, Harness, Slot};

const WAIT: Duration = Duration::from_secs(20);

fn service(id: &str, name: &str) -> Service {
    Service {
        id: id.into(),
        spec: serde_json::json!({"Name": name, "Mode": {"Replicated": {"Replicas": 2}}}),
        previous_spec: None,
        registry_auth: None,
        image: "busybox:latest".into(),
        version: 0,
        created_at: 1,
        updated_at: 1,
        job_iteration: 0,
        template_version: 0,
        previous_image: None,
        previous_template_version: None,
        update_status: None,
        dynamic_ports: Vec::new(),
    }
}

fn task(id: &str, service_id: &str, slot: u64) -> Task {
    Task {
        id: id.into(),
        service_id: service_id.into(),
        slot,
        node_id: None,
        service_version: 0,
        image: "busybox:latest".into(),
        job_iteration: 0,
        restart_times: Vec::new(),
        template_version: 0,
        running_at: None,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::New, 1, "created"),
        created_at: 1,
        version: 0,
    }
}

fn running(at: u64) -> TaskStatus {
    let mut status = TaskStatus::new(TaskState::Running, at, "started");
    status.container_id = Some("c0ffee".into());
    status.pid = Some(4242);
    status
}

/// Every slot sees `count` nodes and one leader; returns it.
async fn converged(slots: &[&Slot], count: usize) -> NodeId {
    eventually("all nodes see every node and one leader", WAIT, || async {
        let mut leaders = Vec::new();
        for s in slots {
            let nodes = s.node().nodes(ReadConsistency::Local).await.ok()?;
            if nodes.len() != count {
                return None;
            }
            leaders.push(s.node().leader()?);
        }
        leaders.dedup();
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

/// Heartbeat until it succeeds (the leader may still be unknown to `node`).
async fn heartbeat(node: &ClusterNode) {
    eventually("heartbeat accepted", WAIT, || async {
        node.heartbeat().await.ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_status_auth_heartbeats_and_applied_watch() {
    let h = Harness::new();
    let mut m1 = h.init("m1").await;
    let tokens = m1.node().join_tokens().await.expect("tokens");
    let mut m2 = h.join("m2", &m1, &tokens.manager.to_string()).await;
    let mut m3 = h.join("m3", &m1, &tokens.manager.to_string()).await;
    let mut w1 = h.join("w1", &m1, &tokens.worker.to_string()).await;
    let leader = converged(&[&m1, &m2, &m3, &w1], 4).await;
    let (w1_id, m2_id) = (w1.id(), m2.id());

    // The applied-index watch of the worker fires for writes it did not make.
    let mut applied = w1.node().applied_watch();
    let before = *applied.borrow_and_update();

    // A worker creates a service (forwarded to the leader).
    let created = w1
        .node()
        .write(Command::CreateService {
            service: service("s1", "web"),
        })
        .await
        .expect("service created from a worker");
    let Response::Service { service: s1 } = created else {
        panic!("unexpected {created:?}")
    };
    assert!(s1.version > before);
    let duplicate = m2
        .node()
        .write(Command::CreateService {
            service: service("s2", "web"),
        })
        .await;
    assert!(
        matches!(
            duplicate,
            Err(ConsensusError::Rejected(
                Rejection::ServiceNameConflict { .. }
            ))
        ),
        "{duplicate:?}"
    );

    // The leader's decisions: t1 on the worker, t2 on m2.
    let orchestrated = m3
        .node()
        .write(Command::Orchestrate {
            changes: vec![
                TaskChange::Create {
                    task: task("t1", "s1", 1),
                },
                TaskChange::Create {
                    task: task("t2", "s1", 2),
                },
                TaskChange::Assign {
                    task_id: "t1".into(),
                    node_id: w1_id,
                },
                TaskChange::Assign {
                    task_id: "t2".into(),
                    node_id: m2_id,
                },
            ],
            at: 10,
        })
        .await
        .expect("orchestrate");
    assert_eq!(orchestrated, Response::Orchestrated { refused: vec![] });
    tokio::time::timeout(WAIT, applied.wait_for(|index| *index > s1.version))
        .await
        .expect("applied watch fired on the worker")
        .expect("watch open");
    let view = w1.node().state_view();
    eventually("the worker's replica shows its task", WAIT, || async {
        let t1 = view.read(|s| s.tasks.get("t1").cloned())?;
        (t1.node_id == Some(w1_id)).then_some(())
    })
    .await;

    // The worker reports its own task's status: accepted.
    let reported = w1
        .node()
        .write(Command::UpdateTaskStatus {
            task_id: "t1".into(),
            node_id: w1_id,
            status: running(20),
        })
        .await
        .expect("own task status");
    let Response::Task { task: t1 } = reported else {
        panic!("unexpected {reported:?}")
    };
    assert_eq!(t1.status, running(20));
    // Speaking for another node is refused by the leader, alone or inside a batch.
    for command in [
        Command::UpdateTaskStatus {
            task_id: "t2".into(),
            node_id: m2_id,
            status: running(21),
        },
        Command::Batch {
            commands: vec![Command::UpdateTaskStatus {
                task_id: "t2".into(),
                node_id: m2_id,
                status: running(21),
            }],
        },
        Command::SetNodeDescription {
            id: m2_id,
            description: NodeDescription::default(),
        },
    ] {
        let refused = w1.node().write(command).await;
        assert!(
            matches!(refused, Err(ConsensusError::NotCallerNode { node_id }) if node_id == m2_id),
            "{refused:?}"
        );
    }
    // Naming itself for another node's task: refused by the state (not its task).
    let not_its_task = w1
        .node()
        .write(Command::UpdateTaskStatus {
            task_id: "t2".into(),
            node_id: w1_id,
            status: running(22),
        })
        .await;
    assert!(
        matches!(
            not_its_task,
            Err(ConsensusError::Rejected(Rejection::NotTaskNode { .. }))
        ),
        "{not_its_task:?}"
    );
    // m2 reports t2 itself; nothing else touched it.
    let t2 = m1
        .node()
        .state(ReadConsistency::Linearizable)
        .await
        .expect("read")
        .tasks["t2"]
        .clone();
    assert_eq!(t2.status.state, TaskState::Assigned);
    m2.node()
        .write(Command::UpdateTaskStatus {
            task_id: "t2".into(),
            node_id: m2_id,
            status: running(23),
        })
        .await
        .expect("m2 reports its own task");
    // A node describes itself.
    let description = NodeDescription {
        os: "linux".into(),
        architecture: "x86_64".into(),
        nano_cpus: 2_000_000_000,
        memory_bytes: 1 << 30,
        engine_version: "test".into(),
        engine_labels: Default::default(),
    };
    let described = w1
        .node()
        .write(Command::SetNodeDescription {
            id: w1_id,
            description: description.clone(),
        })
        .await
        .expect("own description");
    let Response::Node { node } = described else {
        panic!("unexpected {described:?}")
    };
    assert_eq!(node.description, Some(description));

    // Heartbeats reach the leader; only the leader has a table.
    let slots = [&mut m1, &mut m2, &mut m3, &mut w1];
    let [m1, m2, m3, w1] = slots;
    let by_id = |id: NodeId| {
        [&*m1, &*m2, &*m3]
            .into_iter()
            .find(|s| s.id() == id)
            .expect("leader is a manager")
    };
    let leader_node = by_id(leader).node();
    let sent_at = Instant::now();
    for s in [&*m1, &*m2, &*m3, &*w1] {
        heartbeat(s.node()).await;
    }
    let (since, table) = leader_node.heartbeats().expect("leader has a table");
    assert!(since <= sent_at);
    for s in [&*m1, &*m2, &*m3, &*w1] {
        let at = table.get(&s.id()).copied();
        assert!(at.is_some_and(|at| at >= sent_at), "{}: {at:?}", s.name);
    }
    for s in [&*m1, &*m2, &*m3, &*w1] {
        if s.id() != leader {
            assert!(s.node().heartbeats().is_none(), "{} has a table", s.name);
            assert!(!s.node().is_ready_leader().await);
        }
    }
    eventually("leader ready", WAIT, || async {
        leader_node.is_ready_leader().await.then_some(())
    })
    .await;

    // Leader change: the new leader's table starts empty (but for itself).
    let stopped_at = Instant::now();
    let old = [&mut *m1, &mut *m2, &mut *m3]
        .into_iter()
        .find(|s| s.id() == leader)
        .expect("leader slot");
    old.stop().await;
    let survivors: Vec<&Slot> = [&*m1, &*m2, &*m3, &*w1]
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
    let new_node = survivors
        .iter()
        .find(|s| s.id() == new_leader)
        .expect("new leader slot")
        .node();
    let (since, table) = new_node.heartbeats().expect("new leader has a table");
    assert!(since >= stopped_at, "table of the new leadership");
    assert_eq!(table.keys().copied().collect::<Vec<_>>(), vec![new_leader]);
    eventually("new leader ready", WAIT, || async {
        new_node.is_ready_leader().await.then_some(())
    })
    .await;
    // It has applied everything the old leader committed.
    let t2 = new_node.state_view().read(|s| s.tasks["t2"].clone());
    assert_eq!(t2.status, running(23));
    let w1_node = survivors
        .iter()
        .find(|s| s.id() == w1_id)
        .expect("worker")
        .node();
    heartbeat(w1_node).await;
    let (_, table) = new_node.heartbeats().expect("new leader has a table");
    assert!(table.contains_key(&w1_id) && !table.contains_key(&leader));

    // The old leader comes back as a follower: no table.
    let old = [&mut *m1, &mut *m2, &mut *m3]
        .into_iter()
        .find(|s| s.node.is_none())
        .expect("stopped slot");
    old.restart().await;
    eventually("old leader follows", WAIT, || async {
        (old.node().leader().is_some_and(|l| l != old.id())).then_some(())
    })
    .await;
    assert!(old.node().heartbeats().is_none());
    assert!(!old.node().is_ready_leader().await);

    for s in [&mut *m1, &mut *m2, &mut *m3, &mut *w1] {
        s.stop().await;
    }
}
