//! Tests of whole passes: a small simulated cluster (`World`) whose `apply` checks every
//! change as [`TaskChange`] documents (the rules `berth-consensus` applies), and whose
//! agents move observed states the way a node's agent does.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::*;

const S: u64 = 1_000_000_000;
const GIB: u64 = 1 << 30;

fn node(id: NodeId, role: &str) -> NodeInfo {
    NodeInfo {
        id,
        id_str: format!("node{id:021}"),
        hostname: format!("host{id}"),
        role: role.into(),
        active: true,
        drain: false,
        ready: true,
        platform: Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
        },
        labels: BTreeMap::new(),
        engine_labels: BTreeMap::new(),
        capacity: Resources {
            nano_cpus: 2_000_000_000,
            memory_bytes: 2 * GIB,
        },
    }
}

struct World {
    services: BTreeMap<String, Service>,
    specs: BTreeMap<String, ServiceSpec>,
    tasks: BTreeMap<String, Task>,
    nodes: Vec<NodeInfo>,
    now: Nanos,
    next_id: u64,
    index: u64,
    config: PlanConfig,
}

impl World {
    /// Nodes 1..=3 managers, the rest workers.
    fn new(n: u64) -> World {
        World {
            services: BTreeMap::new(),
            specs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            nodes: (1..=n)
                .map(|i| node(i, if i <= 3 { "manager" } else { "worker" }))
                .collect(),
            now: 1_000 * S,
            next_id: 0,
            index: 100,
            config: PlanConfig::default(),
        }
    }

    fn node_mut(&mut self, id: NodeId) -> &mut NodeInfo {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    fn set_service(&mut self, id: &str, spec: Value) {
        self.set_service_image(id, spec, "busybox@sha256:00");
    }

    /// Creates or updates a service as the cluster state does (`template_version` bumped
    /// only when what a task runs changed).
    fn set_service_image(&mut self, id: &str, spec: Value, image: &str) {
        self.index += 1;
        let parsed = ServiceSpec::from_docker(&spec).unwrap();
        let old = self.services.get(id).cloned();
        let job_iteration = match &old {
            Some(o) if parsed.mode.is_job() => o.job_iteration + 1,
            Some(o) => o.job_iteration,
            None => 0,
        };
        let template_version = match &old {
            Some(o) if crate::spec::same_task_template(&o.spec, &o.image, &spec, image) => {
                o.template_version
            }
            _ => self.index,
        };
        self.services.insert(
            id.to_string(),
            Service {
                id: id.to_string(),
                spec,
                previous_spec: old.as_ref().map(|o| o.spec.clone()),
                previous_image: old.as_ref().map(|o| o.image.clone()),
                previous_template_version: old.map(|o| o.template_version),
                update_status: None,
                dynamic_ports: Vec::new(),
                registry_auth: None,
                image: image.into(),
                version: self.index,
                created_at: self.now,
                updated_at: self.now,
                job_iteration,
                template_version,
            },
        );
        self.specs.insert(id.to_string(), parsed);
    }

    fn remove_service(&mut self, id: &str) {
        self.services.remove(id);
        self.specs.remove(id);
        for t in self.tasks.values_mut() {
            if t.service_id == id {
                t.desired_state = TaskState::Remove;
            }
        }
    }

    fn plan(&mut self) -> Plan {
        let next = &mut self.next_id;
        let mut ids = || {
            *next += 1;
            format!("task{:021}", *next)
        };
        plan_with(
            &self.services,
            &self.specs,
            &self.tasks,
            &self.nodes,
            self.now,
            &mut ids,
            &self.config,
        )
    }

    /// Applies the changes as the cluster state does; returns the refused indices.
    fn apply(&mut self, changes: &[TaskChange]) -> Vec<usize> {
        let mut refused = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            self.index += 1;
            let ok = match c {
                TaskChange::Create { task } => {
                    let replacement = self
                        .services
                        .get(&task.service_id)
                        .is_some_and(|s| s.template_version == task.template_version);
                    let taken = self.tasks.values().any(|t| {
                        t.service_id == task.service_id
                            && t.slot == task.slot
                            && (task.slot != 0 || t.node_id == task.node_id)
                            && matches!(
                                t.desired_state,
                                TaskState::Ready | TaskState::Running | TaskState::Complete
                            )
                            && !(replacement && t.template_version != task.template_version)
                    });
                    if taken || self.tasks.contains_key(&task.id) {
                        false
                    } else {
                        let mut task = task.clone();
                        task.version = self.index;
                        self.tasks.insert(task.id.clone(), task);
                        true
                    }
                }
                TaskChange::Assign { task_id, node_id } => match self.tasks.get_mut(task_id) {
                    Some(t)
                        if t.node_id.is_none()
                            && matches!(
                                t.desired_state,
                                TaskState::Ready | TaskState::Running | TaskState::Complete
                            ) =>
                    {
                        t.node_id = Some(*node_id);
                        t.status = TaskStatus::new(TaskState::Assigned, self.now, "assigned");
                        true
                    }
                    _ => false,
                },
                TaskChange::Unschedulable { task_id, err } => match self.tasks.get_mut(task_id) {
                    Some(t) if t.node_id.is_none() => {
                        t.status = TaskStatus::new(
                            TaskState::Pending,
                            self.now,
                            "pending task scheduling",
                        );
                        t.status.err = Some(err.clone());
                        true
                    }
                    _ => false,
                },
                TaskChange::SetDesired { task_id, desired } => match self.tasks.get_mut(task_id) {
                    Some(t) if *desired > t.desired_state => {
                        t.desired_state = *desired;
                        true
                    }
                    _ => false,
                },
                TaskChange::UpdateStatus {
                    service_id,
                    service_version,
                    status,
                    rollback,
                } => match self.services.get_mut(service_id) {
                    Some(s) if s.version == *service_version && !*rollback => {
                        s.update_status = Some(status.clone());
                        true
                    }
                    // The automatic rollback, as the cluster state applies it.
                    Some(s) if s.version == *service_version && s.previous_spec.is_some() => {
                        s.spec = s.previous_spec.take().unwrap();
                        s.image = s.previous_image.take().unwrap();
                        s.template_version = s.previous_template_version.take().unwrap();
                        s.version = self.index;
                        s.update_status = Some(status.clone());
                        let parsed = ServiceSpec::from_docker(&s.spec).unwrap();
                        self.specs.insert(service_id.clone(), parsed);
                        true
                    }
                    _ => false,
                },
                TaskChange::Delete { task_id } => match self.tasks.get(task_id) {
                    Some(t) if t.status.state.is_terminal() || t.node_id.is_none() => {
                        self.tasks.remove(task_id);
                        true
                    }
                    _ => false,
                },
            };
            if !ok {
                refused.push(i);
            }
        }
        refused
    }

    /// One pass, applied; every change must be accepted.
    fn step(&mut self) -> Plan {
        let p = self.plan();
        let refused = self.apply(&p.changes);
        assert!(
            refused.is_empty(),
            "refused {refused:?} of {:#?}",
            p.changes
        );
        p
    }

    /// The agents of ready nodes: assigned live tasks run (jobs complete), tasks desired
    /// to stop are stopped.
    fn agents(&mut self) {
        let ready: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.ready)
            .map(|n| n.id)
            .collect();
        for t in self.tasks.values_mut() {
            let Some(n) = t.node_id else { continue };
            if !ready.contains(&n) || t.status.state.is_terminal() {
                continue;
            }
            match t.desired_state {
                // Held (stop-first): prepared, not started.
                TaskState::Ready => {
                    if t.status.state < TaskState::Ready {
                        t.status = TaskStatus::new(TaskState::Ready, self.now, "prepared");
                    }
                }
                TaskState::Running | TaskState::Complete => {
                    if t.status.state != TaskState::Running {
                        t.status = TaskStatus::new(TaskState::Running, self.now, "started");
                        t.running_at.get_or_insert(self.now);
                    }
                }
                _ => t.status = TaskStatus::new(TaskState::Shutdown, self.now, "shutdown"),
            }
        }
    }

    /// Passes and agents until nothing changes; then one more pass must decide nothing.
    fn settle(&mut self) {
        for _ in 0..30 {
            let p = self.step();
            self.agents();
            if p.changes.is_empty() {
                let again = self.plan();
                assert!(
                    again.changes.is_empty(),
                    "not idempotent: {:#?}",
                    again.changes
                );
                return;
            }
        }
        panic!("did not settle");
    }

    fn task_exits(&mut self, id: &str, state: TaskState, code: i64) {
        let t = self.tasks.get_mut(id).unwrap();
        t.status = TaskStatus::new(state, self.now, "exited");
        t.status.exit_code = Some(code);
    }

    fn live(&self, service: &str) -> Vec<&Task> {
        self.tasks
            .values()
            .filter(|t| {
                t.service_id == service
                    && matches!(
                        t.desired_state,
                        TaskState::Ready | TaskState::Running | TaskState::Complete
                    )
            })
            .collect()
    }

    fn running_per_node(&self, service: &str) -> BTreeMap<NodeId, usize> {
        let mut m = BTreeMap::new();
        for t in self.live(service) {
            if t.status.state == TaskState::Running {
                *m.entry(t.node_id.unwrap()).or_default() += 1;
            }
        }
        m
    }

    fn of(&self, service: &str) -> Vec<&Task> {
        self.tasks
            .values()
            .filter(|t| t.service_id == service)
            .collect()
    }

    /// At most one live task per slot (per node for slot 0) and template version (a
    /// start-first replacement runs beside the task it replaces).
    fn assert_no_duplicates(&self) {
        let mut seen = std::collections::BTreeSet::new();
        for t in self.tasks.values() {
            if matches!(
                t.desired_state,
                TaskState::Ready | TaskState::Running | TaskState::Complete
            ) {
                let key = (
                    t.service_id.clone(),
                    t.slot,
                    if t.slot == 0 { t.node_id } else { None },
                    t.template_version,
                );
                assert!(seen.insert(key), "two live tasks in a slot: {t:?}");
            }
        }
    }
}

fn replicated(n: u64) -> Value {
    json!({"Name": "web", "Mode": {"Replicated": {"Replicas": n}}})
}

fn creates(p: &Plan) -> Vec<&Task> {
    p.changes
        .iter()
        .filter_map(|c| match c {
            TaskChange::Create { task } => Some(task),
            _ => None,
        })
        .collect()
}

#[test]
fn six_replicas_spread_over_five_nodes() {
    let mut w = World::new(5);
    w.set_service("s1", replicated(6));
    let p = w.plan();
    // Created already assigned, in slots 1..=6, in one pass.
    let c = creates(&p);
    assert_eq!(c.len(), 6);
    assert!(c
        .iter()
        .all(|t| t.node_id.is_some() && t.status.state == TaskState::Assigned));
    assert_eq!(
        c.iter().map(|t| t.slot).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(p.changes.len(), 6);
    w.apply(&p.changes);
    w.agents();
    w.settle();
    let per_node = w.running_per_node("s1");
    assert_eq!(per_node.len(), 5, "{per_node:?}");
    assert_eq!(per_node.values().sum::<usize>(), 6);
    assert!(per_node.values().all(|&c| (1..=2).contains(&c)));
}

#[test]
fn plan_is_deterministic() {
    let mut a = World::new(5);
    a.set_service("s1", replicated(7));
    a.set_service("s2", json!({"Mode": {"Global": {}}}));
    let mut b = World::new(5);
    b.set_service("s1", replicated(7));
    b.set_service("s2", json!({"Mode": {"Global": {}}}));
    assert_eq!(a.plan(), b.plan());
}

#[test]
fn scale_2_to_8_to_2() {
    let mut w = World::new(5);
    w.set_service("s1", replicated(2));
    w.settle();
    assert_eq!(w.running_per_node("s1").values().sum::<usize>(), 2);
    w.set_service("s1", replicated(8));
    w.settle();
    let per_node = w.running_per_node("s1");
    assert_eq!(per_node.values().sum::<usize>(), 8);
    assert_eq!(per_node.len(), 5);
    assert!(per_node.values().all(|&c| (1..=2).contains(&c)));
    let mut slots: Vec<u64> = w.live("s1").iter().map(|t| t.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, (1..=8).collect::<Vec<_>>());
    w.set_service("s1", replicated(2));
    w.settle();
    let per_node = w.running_per_node("s1");
    assert_eq!(per_node.values().sum::<usize>(), 2);
    // The nodes with two copies lost theirs first: the two left are on different nodes.
    assert_eq!(per_node.len(), 2, "{per_node:?}");
    // Removed tasks are gone once stopped.
    assert!(w
        .of("s1")
        .iter()
        .all(|t| t.desired_state != TaskState::Remove));
    assert_eq!(w.of("s1").len(), 2);
}

#[test]
fn scale_down_prefers_busiest_node_then_highest_slot() {
    let mut w = World::new(3);
    w.set_service("s1", replicated(3));
    w.settle();
    // Put slot 1 and 2 on node 1 and slot 3 on node 2 by hand.
    for t in w.tasks.values_mut() {
        t.node_id = Some(if t.slot <= 2 { 1 } else { 2 });
    }
    w.set_service("s1", replicated(2));
    let p = w.plan();
    let removed: Vec<u64> = p
        .changes
        .iter()
        .filter_map(|c| match c {
            TaskChange::SetDesired {
                task_id,
                desired: TaskState::Remove,
            } => Some(w.tasks[task_id].slot),
            _ => None,
        })
        .collect();
    assert_eq!(removed, vec![2]);
    // Equal ranks: the highest slot goes.
    let mut w = World::new(3);
    w.set_service("s1", replicated(3));
    w.settle();
    w.set_service("s1", replicated(1));
    let p = w.plan();
    let mut removed: Vec<u64> = p
        .changes
        .iter()
        .filter_map(|c| match c {
            TaskChange::SetDesired { task_id, .. } => Some(w.tasks[task_id].slot),
            _ => None,
        })
        .collect();
    removed.sort_unstable();
    assert_eq!(removed, vec![2, 3]);
}

#[test]
fn global_one_task_per_node_and_a_late_joiner_gets_one() {
    let mut w = World::new(4);
    w.set_service("g", json!({"Name": "g", "Mode": {"Global": {}}}));
    let p = w.plan();
    let c = creates(&p);
    assert_eq!(c.len(), 4);
    assert!(c
        .iter()
        .all(|t| t.slot == 0 && t.status.state == TaskState::Assigned));
    w.apply(&p.changes);
    w.settle();
    assert_eq!(
        w.running_per_node("g"),
        BTreeMap::from([(1, 1), (2, 1), (3, 1), (4, 1)])
    );
    w.nodes.push(node(5, "worker"));
    let p = w.step();
    let c = creates(&p);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].node_id, Some(5));
    w.settle();
    assert_eq!(w.running_per_node("g").len(), 5);
    w.assert_no_duplicates();
}

#[test]
fn global_task_shut_down_when_its_node_is_no_longer_eligible() {
    let mut w = World::new(3);
    w.node_mut(2).labels.insert("zone".into(), "a".into());
    w.node_mut(3).labels.insert("zone".into(), "a".into());
    w.set_service(
        "g",
        json!({"Mode": {"Global": {}}, "TaskTemplate": {"Placement": {"Constraints": ["node.labels.zone==a"]}}}),
    );
    w.settle();
    assert_eq!(w.running_per_node("g"), BTreeMap::from([(2, 1), (3, 1)]));
    // The label goes: the task is shut down, not replaced elsewhere.
    w.node_mut(3).labels.clear();
    let p = w.step();
    assert_eq!(p.changes.len(), 1);
    assert!(matches!(
        p.changes[0],
        TaskChange::SetDesired {
            desired: TaskState::Shutdown,
            ..
        }
    ));
    w.agents();
    w.settle();
    assert_eq!(w.running_per_node("g"), BTreeMap::from([(2, 1)]));
    // Back: a new task there.
    w.node_mut(3).labels.insert("zone".into(), "a".into());
    w.settle();
    assert_eq!(w.running_per_node("g"), BTreeMap::from([(2, 1), (3, 1)]));
    // Paused: keeps its task, but a paused node that loses its task gets none.
    w.node_mut(3).active = false;
    w.settle();
    assert_eq!(w.running_per_node("g"), BTreeMap::from([(2, 1), (3, 1)]));
}

#[test]
fn constraints_on_role_and_labels() {
    let mut w = World::new(5);
    w.set_service(
        "s1",
        json!({"Mode": {"Replicated": {"Replicas": 4}}, "TaskTemplate": {"Placement": {"Constraints": ["node.role==worker"]}}}),
    );
    w.settle();
    let per_node = w.running_per_node("s1");
    assert_eq!(per_node, BTreeMap::from([(4, 2), (5, 2)]));
    w.node_mut(2).labels.insert("zone".into(), "a".into());
    w.set_service(
        "s2",
        json!({"Mode": {"Replicated": {"Replicas": 3}}, "TaskTemplate": {"Placement": {"Constraints": ["node.labels.zone==a"]}}}),
    );
    w.settle();
    assert_eq!(w.running_per_node("s2"), BTreeMap::from([(2, 3)]));
}

#[test]
fn unsatisfiable_constraint_pending_with_swarms_reason_without_churn() {
    let mut w = World::new(5);
    w.set_service(
        "s1",
        json!({"Mode": {"Replicated": {"Replicas": 2}}, "TaskTemplate": {"Placement": {"Constraints": ["node.labels.zone==nowhere"]}}}),
    );
    let p = w.step();
    // Create, then its Unschedulable right after.
    assert_eq!(p.changes.len(), 4);
    assert!(matches!(p.changes[0], TaskChange::Create { .. }));
    let msg = "no suitable node (scheduling constraints not satisfied on 5 nodes)";
    assert!(matches!(&p.changes[1], TaskChange::Unschedulable { err, .. } if err == msg));
    for t in w.live("s1") {
        assert_eq!(t.node_id, None);
        assert_eq!(t.status.state, TaskState::Pending);
        assert_eq!(t.status.err.as_deref(), Some(msg));
    }
    // No churn: nothing new while nothing changed.
    assert_eq!(w.plan().changes, vec![]);
    // The reason changes with the cluster: one node goes down.
    w.node_mut(5).ready = false;
    let p = w.step();
    let msg = "no suitable node (scheduling constraints not satisfied on 4 nodes; 1 node not available for new tasks)";
    assert_eq!(p.changes.len(), 2);
    assert!(p
        .changes
        .iter()
        .all(|c| matches!(c, TaskChange::Unschedulable { err, .. } if err == msg)));
    // A label makes it placeable: assigned, not recreated.
    w.node_mut(4).labels.insert("zone".into(), "nowhere".into());
    let p = w.step();
    assert_eq!(p.changes.len(), 2);
    assert!(p
        .changes
        .iter()
        .all(|c| matches!(c, TaskChange::Assign { node_id: 4, .. })));
}

#[test]
fn explanations_follow_swarms_order_and_plurals() {
    let mut w = World::new(4);
    for id in 1..=3 {
        w.node_mut(id).role = "manager".into();
    }
    w.node_mut(4).capacity.memory_bytes = GIB / 2;
    w.set_service(
        "s1",
        json!({"TaskTemplate": {"Placement": {"Constraints": ["node.role==worker"]},
            "Resources": {"Reservations": {"MemoryBytes": GIB}}}}),
    );
    let p = w.plan();
    assert!(
        matches!(&p.changes[1], TaskChange::Unschedulable { err, .. }
        if err == "no suitable node (scheduling constraints not satisfied on 3 nodes; insufficient resources on 1 node)")
    );
    // No nodes at all.
    let mut w = World::new(0);
    w.set_service("s1", replicated(1));
    let p = w.plan();
    assert!(
        matches!(&p.changes[1], TaskChange::Unschedulable { err, .. } if err == "no suitable node")
    );
    // Platform and max replicas.
    let mut w = World::new(2);
    w.node_mut(2).platform.architecture = "arm64".into();
    w.set_service(
        "s1",
        json!({"Mode": {"Replicated": {"Replicas": 2}}, "TaskTemplate": {"Placement": {"MaxReplicas": 1, "Platforms": [{"Architecture": "x86_64", "OS": "linux"}]}}}),
    );
    let p = w.step();
    let errs: Vec<&str> = p
        .changes
        .iter()
        .filter_map(|c| match c {
            TaskChange::Unschedulable { err, .. } => Some(err.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        errs,
        vec![
            "no suitable node (unsupported platform on 1 node; max replicas per node limit exceed)"
        ]
    );
    assert_eq!(
        w.live("s1").iter().filter(|t| t.node_id == Some(1)).count(),
        1
    );
}

#[test]
fn memory_reservation_larger_than_any_node_is_insufficient_resources() {
    let mut w = World::new(5);
    w.set_service(
        "s1",
        json!({"TaskTemplate": {"Resources": {"Reservations": {"MemoryBytes": 64 * GIB}}}}),
    );
    let p = w.step();
    assert!(
        matches!(&p.changes[1], TaskChange::Unschedulable { err, .. }
        if err == "no suitable node (insufficient resources on 5 nodes)")
    );
    assert_eq!(w.plan().changes, vec![]);
}

#[test]
fn reservations_count_tasks_already_placed_and_placed_in_the_same_pass() {
    let mut w = World::new(3);
    // 2 GiB per node, 800 MiB per task: two fit on a node.
    w.set_service(
        "s1",
        json!({"Mode": {"Replicated": {"Replicas": 7}}, "TaskTemplate": {"Resources": {"Reservations": {"MemoryBytes": 800u64 << 20}}}}),
    );
    let p = w.step();
    let placed = creates(&p).iter().filter(|t| t.node_id.is_some()).count();
    assert_eq!(placed, 6);
    assert!(p
        .changes
        .iter()
        .any(|c| matches!(c, TaskChange::Unschedulable { err, .. }
        if err == "no suitable node (insufficient resources on 3 nodes)")));
    w.settle();
    // A stopped task's reservation is released: the pending one takes its place.
    let victim = w
        .live("s1")
        .iter()
        .find(|t| t.node_id == Some(2))
        .unwrap()
        .id
        .clone();
    w.set_service(
        "s1",
        json!({"Mode": {"Replicated": {"Replicas": 7}}, "TaskTemplate": {"Resources": {"Reservations": {"MemoryBytes": 800u64 << 20}},
            "RestartPolicy": {"Condition": "none"}}}),
    );
    w.task_exits(&victim, TaskState::Failed, 1);
    w.settle();
    assert_eq!(w.running_per_node("s1").values().sum::<usize>(), 6);
    assert_eq!(w.running_per_node("s1")[&2], 2);
}

#[test]
fn spread_preference_over_label_values_with_unlabelled_group() {
    let mut w = World::new(5);
    w.node_mut(1).labels.insert("zone".into(), "a".into());
    for id in 2..=4 {
        w.node_mut(id).labels.insert("zone".into(), "b".into());
    }
    w.set_service(
        "s1",
        json!({"Mode": {"Replicated": {"Replicas": 6}}, "TaskTemplate": {"Placement": {"Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]}}}),
    );
    w.settle();
    let per_node = w.running_per_node("s1");
    // zone a (node 1), zone b (nodes 2-4), no zone (node 5): two tasks each group.
    assert_eq!(per_node[&1], 2);
    assert_eq!(per_node[&5], 2);
    let zone_b: usize = (2..=4)
        .map(|n| per_node.get(&n).copied().unwrap_or(0))
        .sum();
    assert_eq!(zone_b, 2);
}

#[test]
fn spread_prefers_fewest_tasks_overall_after_fewest_of_the_service() {
    let mut w = World::new(3);
    w.set_service("busy", json!({"Mode": {"Global": {}}, "TaskTemplate": {"Placement": {"Constraints": ["node.hostname!=host3"]}}}));
    w.settle();
    w.set_service("s1", replicated(1));
    w.settle();
    assert_eq!(w.running_per_node("s1"), BTreeMap::from([(3, 1)]));
}

#[test]
fn on_failure_with_max_attempts_2_gives_exactly_three_tasks() {
    let mut w = World::new(3);
    w.set_service(
        "s1",
        json!({"Mode": {"Replicated": {"Replicas": 1}}, "TaskTemplate": {"RestartPolicy": {"Condition": "on-failure", "MaxAttempts": 2, "Delay": S}}}),
    );
    w.settle();
    for _ in 0..6 {
        let live: Vec<String> = w
            .live("s1")
            .iter()
            .filter(|t| !t.status.state.is_terminal())
            .map(|t| t.id.clone())
            .collect();
        for id in live {
            w.task_exits(&id, TaskState::Failed, 1);
        }
        w.now += 2 * S;
        w.settle();
    }
    let all = w.of("s1");
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(all.iter().all(|t| t.status.state == TaskState::Failed));
    assert!(all.iter().all(|t| t.desired_state == TaskState::Shutdown));
    let mut times: Vec<usize> = all.iter().map(|t| t.restart_times.len()).collect();
    times.sort_unstable();
    assert_eq!(times, vec![0, 1, 2]);
}

#[test]
fn max_attempts_hold_when_history_is_trimmed() {
    let mut w = World::new(2);
    w.config.task_history_retention = 2;
    w.set_service(
        "s1",
        json!({"TaskTemplate": {"RestartPolicy": {"Condition": "any", "MaxAttempts": 4, "Delay": 0}}}),
    );
    w.settle();
    let mut created = 1;
    for _ in 0..10 {
        let live: Vec<String> = w
            .live("s1")
            .iter()
            .filter(|t| !t.status.state.is_terminal())
            .map(|t| t.id.clone())
            .collect();
        for id in &live {
            w.task_exits(id, TaskState::Complete, 0);
        }
        let before = w.next_id;
        w.settle();
        created += (w.next_id - before) as usize;
        assert!(w.of("s1").len() <= 2);
    }
    assert_eq!(created, 5);
}

#[test]
fn restart_window_counts_only_recent_restarts() {
    let mut w = World::new(2);
    w.set_service(
        "s1",
        json!({"TaskTemplate": {"RestartPolicy": {"Condition": "any", "MaxAttempts": 1, "Delay": 0, "Window": 10 * S}}}),
    );
    w.settle();
    let fail = |w: &mut World| {
        let id = w
            .live("s1")
            .iter()
            .find(|t| !t.status.state.is_terminal())
            .map(|t| t.id.clone());
        if let Some(id) = id {
            w.task_exits(&id, TaskState::Failed, 1);
        }
    };
    fail(&mut w);
    w.settle(); // restart 1 at t0
    assert_eq!(w.of("s1").len(), 2);
    w.now += 5 * S;
    fail(&mut w);
    w.settle(); // within the window: no restart
    assert_eq!(w.of("s1").len(), 2);
    assert!(w.live("s1").is_empty());
    // A new spec version resets the count (swarmkit): restarts again.
    w.now += 60 * S;
    w.set_service(
        "s1",
        json!({"TaskTemplate": {"RestartPolicy": {"Condition": "any", "MaxAttempts": 1, "Delay": 0, "Window": 10 * S}}}),
    );
    w.settle();
    assert_eq!(w.live("s1").len(), 1);
    // Failures further apart than the window each restart.
    for _ in 0..3 {
        w.now += 20 * S;
        fail(&mut w);
        w.settle();
        assert_eq!(w.live("s1").len(), 1);
    }
}

#[test]
fn restart_delay_is_respected_through_wake_at() {
    let mut w = World::new(2);
    w.set_service(
        "s1",
        json!({"TaskTemplate": {"RestartPolicy": {"Delay": 5 * S}}}),
    );
    w.settle();
    let id = w.live("s1")[0].id.clone();
    w.task_exits(&id, TaskState::Failed, 1);
    let failed_at = w.now;
    w.now += S;
    let p = w.step();
    assert_eq!(
        p.changes,
        vec![TaskChange::SetDesired {
            task_id: id.clone(),
            desired: TaskState::Shutdown
        }]
    );
    assert_eq!(p.wake_at, Some(failed_at + 5 * S));
    w.now += 3 * S;
    let p = w.plan();
    assert!(p.changes.is_empty());
    assert_eq!(p.wake_at, Some(failed_at + 5 * S));
    w.now = failed_at + 5 * S;
    let p = w.step();
    assert_eq!(creates(&p).len(), 1);
    assert_eq!(p.wake_at, None);
}

#[test]
fn restart_conditions() {
    // none: an exit (any code) is final, and the slot is not refilled.
    let mut w = World::new(2);
    w.set_service(
        "s1",
        json!({"TaskTemplate": {"RestartPolicy": {"Condition": "none"}}}),
    );
    w.settle();
    let id = w.live("s1")[0].id.clone();
    w.task_exits(&id, TaskState::Failed, 1);
    w.now += 10 * S;
    w.settle();
    assert_eq!(w.of("s1").len(), 1);
    // on-failure: exit 0 is final, exit 1 restarts.
    let mut w = World::new(2);
    w.set_service(
        "s1",
        json!({"TaskTemplate": {"RestartPolicy": {"Condition": "on-failure"}}}),
    );
    w.settle();
    let id = w.live("s1")[0].id.clone();
    w.task_exits(&id, TaskState::Complete, 0);
    w.now += 10 * S;
    w.settle();
    assert_eq!(w.of("s1").len(), 1);
    let mut w = World::new(2);
    w.set_service(
        "s1",
        json!({"TaskTemplate": {"RestartPolicy": {"Condition": "on-failure"}}}),
    );
    w.settle();
    let id = w.live("s1")[0].id.clone();
    w.task_exits(&id, TaskState::Rejected, 1);
    w.now += 10 * S;
    w.settle();
    assert_eq!(w.of("s1").len(), 2);
    // any (the default): exit 0 restarts too.
    let mut w = World::new(2);
    w.set_service("s1", replicated(1));
    w.settle();
    let id = w.live("s1")[0].id.clone();
    w.task_exits(&id, TaskState::Complete, 0);
    w.now += 10 * S;
    w.settle();
    assert_eq!(w.of("s1").len(), 2);
    assert_eq!(w.live("s1").len(), 1);
}

#[test]
fn drain_moves_tasks_away_at_once() {
    let mut w = World::new(3);
    w.set_service("s1", replicated(3));
    w.settle();
    assert_eq!(w.running_per_node("s1").len(), 3);
    w.node_mut(2).drain = true;
    w.node_mut(2).active = false;
    let p = w.step();
    // Shut down and replaced in the same pass, no restart delay.
    assert_eq!(p.changes.len(), 2);
    assert!(matches!(
        p.changes[0],
        TaskChange::SetDesired {
            desired: TaskState::Shutdown,
            ..
        }
    ));
    let c = creates(&p);
    assert_eq!(c.len(), 1);
    assert!(matches!(c[0].node_id, Some(1) | Some(3)));
    assert!(c[0].restart_times.is_empty());
    w.agents();
    w.settle();
    let per_node = w.running_per_node("s1");
    assert!(!per_node.contains_key(&2));
    assert_eq!(per_node.values().sum::<usize>(), 3);
}

#[test]
fn node_down_tasks_replaced_and_no_duplicates_after_it_returns() {
    let mut w = World::new(3);
    w.set_service("s1", replicated(6));
    w.settle();
    assert_eq!(w.running_per_node("s1")[&3], 2);
    w.node_mut(3).ready = false;
    let p = w.step();
    assert_eq!(creates(&p).len(), 2);
    assert!(creates(&p)
        .iter()
        .all(|t| matches!(t.node_id, Some(1) | Some(2))));
    w.agents();
    w.settle();
    // The old tasks stay Running on the dead node (nobody reports), desired Shutdown, and
    // are never recreated again.
    for _ in 0..3 {
        w.now += 10 * S;
        assert_eq!(w.plan().changes, vec![]);
    }
    assert_eq!(w.live("s1").len(), 6);
    // It comes back: its agent stops the replaced tasks; nothing is placed twice.
    w.node_mut(3).ready = true;
    w.agents();
    w.settle();
    w.assert_no_duplicates();
    assert_eq!(w.running_per_node("s1").values().sum::<usize>(), 6);
    assert!(!w.running_per_node("s1").contains_key(&3));
    let on3: Vec<&Task> = w
        .of("s1")
        .into_iter()
        .filter(|t| t.node_id == Some(3))
        .collect();
    assert_eq!(on3.len(), 2);
    assert!(on3
        .iter()
        .all(|t| t.desired_state == TaskState::Shutdown && t.status.state == TaskState::Shutdown));
}

#[test]
fn a_node_that_disappears_from_the_list_counts_as_down() {
    let mut w = World::new(3);
    w.set_service("s1", replicated(3));
    w.settle();
    w.nodes.retain(|n| n.id != 1);
    w.settle();
    assert_eq!(w.running_per_node("s1").values().sum::<usize>(), 3);
    assert!(!w.running_per_node("s1").contains_key(&1));
}

#[test]
fn a_plan_applied_twice_after_a_leader_change_places_nothing_twice() {
    let mut w = World::new(4);
    w.set_service("s1", replicated(2));
    w.set_service("g", json!({"Mode": {"Global": {}}}));
    w.settle();
    // A failure, a lost node and a scale-up at once.
    let id = w.live("s1")[0].id.clone();
    w.task_exits(&id, TaskState::Failed, 1);
    w.now += 10 * S;
    w.node_mut(4).ready = false;
    w.set_service("s1", replicated(10));
    let p = w.plan();
    assert!(!p.changes.is_empty());
    assert!(w.apply(&p.changes).is_empty());
    let after_once = w.tasks.clone();
    // The old leader's batch is committed again (or a new leader recomputed the same on
    // the old state): every Create is refused, the rest is a no-op or refused.
    let refused = w.apply(&p.changes);
    for (i, c) in p.changes.iter().enumerate() {
        if matches!(
            c,
            TaskChange::Create { .. } | TaskChange::SetDesired { .. } | TaskChange::Assign { .. }
        ) {
            assert!(refused.contains(&i), "change {i} applied twice: {c:?}");
        }
    }
    let strip = |m: &BTreeMap<String, Task>| {
        m.values()
            .map(|t| (t.id.clone(), t.node_id, t.desired_state, t.status.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&w.tasks), strip(&after_once));
    w.assert_no_duplicates();
    // A second plan computed from the same old state by a new leader (fresh ids): its
    // creates are refused as well.
    let mut old = World::new(4);
    old.set_service("s1", replicated(2));
    old.set_service("g", json!({"Mode": {"Global": {}}}));
    old.settle();
    let id = old.live("s1")[0].id.clone();
    old.task_exits(&id, TaskState::Failed, 1);
    old.now += 10 * S;
    old.node_mut(4).ready = false;
    old.set_service("s1", replicated(10));
    old.next_id = 10_000;
    let p2 = old.plan();
    let refused = w.apply(&p2.changes);
    for (i, c) in p2.changes.iter().enumerate() {
        if matches!(c, TaskChange::Create { .. }) {
            assert!(refused.contains(&i), "duplicate create accepted: {c:?}");
        }
    }
    w.assert_no_duplicates();
    w.agents();
    w.settle();
    assert_eq!(w.live("s1").len(), 10);
}

#[test]
fn history_is_trimmed_to_the_retention_limit() {
    let mut w = World::new(2);
    w.set_service(
        "s1",
        json!({"TaskTemplate": {"RestartPolicy": {"Delay": 0}}}),
    );
    w.settle();
    for _ in 0..8 {
        let id = w.live("s1")[0].id.clone();
        w.task_exits(&id, TaskState::Failed, 1);
        w.now += S;
        w.settle();
        assert!(w.of("s1").len() <= 5);
    }
    assert_eq!(w.of("s1").len(), 5);
    assert_eq!(w.live("s1").len(), 1);
    // The newest are kept.
    let newest_live = w.live("s1")[0].created_at;
    assert!(w.of("s1").iter().all(|t| t.created_at <= newest_live));
    w.config.task_history_retention = 2;
    w.settle();
    assert_eq!(w.of("s1").len(), 2);
}

#[test]
fn removed_service_tasks_go_to_remove_then_are_deleted() {
    let mut w = World::new(3);
    w.set_service("s1", replicated(3));
    w.settle();
    let ids: Vec<String> = w.of("s1").iter().map(|t| t.id.clone()).collect();
    w.services.remove("s1");
    w.specs.remove("s1");
    let p = w.step();
    assert_eq!(p.changes.len(), 3);
    assert!(p.changes.iter().all(|c| matches!(
        c,
        TaskChange::SetDesired {
            desired: TaskState::Remove,
            ..
        }
    )));
    // Not yet stopped: nothing more.
    assert_eq!(w.plan().changes, vec![]);
    w.agents();
    let p = w.step();
    assert_eq!(
        p.changes,
        ids.iter()
            .map(|id| TaskChange::Delete {
                task_id: id.clone()
            })
            .collect::<Vec<_>>()
    );
    assert!(w.tasks.is_empty());
    // The driver's RemoveService sets Remove itself; unassigned tasks go at once.
    let mut w = World::new(1);
    w.set_service(
        "s2",
        json!({"TaskTemplate": {"Placement": {"Constraints": ["node.role==nobody"]}}}),
    );
    w.settle();
    w.remove_service("s2");
    w.settle();
    assert!(w.tasks.is_empty());
}

#[test]
fn replicated_job_runs_to_completion_within_max_concurrent_and_reruns_on_update() {
    let mut w = World::new(3);
    w.set_service(
        "j",
        json!({"Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}}}),
    );
    let mut completed = 0;
    for _ in 0..20 {
        w.settle();
        let live: Vec<&Task> = w
            .live("j")
            .into_iter()
            .filter(|t| !t.status.state.is_terminal())
            .collect();
        assert!(live.len() <= 2, "more than MaxConcurrent at once");
        assert!(live.iter().all(|t| t.desired_state == TaskState::Complete));
        let Some(id) = live.first().map(|t| t.id.clone()) else {
            break;
        };
        w.task_exits(&id, TaskState::Complete, 0);
        completed += 1;
    }
    assert_eq!(completed, 5);
    let done: Vec<u64> = w
        .of("j")
        .iter()
        .filter(|t| t.status.state == TaskState::Complete)
        .map(|t| t.slot)
        .collect();
    assert_eq!(done.len(), 5);
    assert_eq!(w.of("j").len(), 5);
    // Finished: nothing more, ever.
    w.now += 100 * S;
    assert_eq!(w.plan().changes, vec![]);
    // An update bumps the job iteration: it runs again.
    w.set_service(
        "j",
        json!({"Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}}}),
    );
    let p = w.step();
    assert_eq!(creates(&p).len(), 2);
    assert!(creates(&p).iter().all(|t| t.job_iteration == 1));
    w.assert_no_duplicates();
}

#[test]
fn failed_job_task_restarts_on_failure_by_default() {
    let mut w = World::new(2);
    w.set_service(
        "j",
        json!({"Mode": {"ReplicatedJob": {}}, "TaskTemplate": {"RestartPolicy": {"Delay": 0}}}),
    );
    w.settle();
    let id = w.live("j")[0].id.clone();
    w.task_exits(&id, TaskState::Failed, 1);
    w.settle();
    assert_eq!(w.of("j").len(), 2);
    let id = w.live("j")[0].id.clone();
    w.task_exits(&id, TaskState::Complete, 0);
    w.settle();
    assert_eq!(w.of("j").len(), 2);
    assert_eq!(w.live("j").len(), 1);
}

#[test]
fn global_job_runs_once_per_node_and_again_per_iteration() {
    let mut w = World::new(3);
    w.set_service("gj", json!({"Mode": {"GlobalJob": {}}}));
    w.settle();
    let ids: Vec<String> = w.live("gj").iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids.len(), 3);
    for id in &ids {
        w.task_exits(id, TaskState::Complete, 0);
    }
    w.now += 100 * S;
    w.settle();
    assert_eq!(w.of("gj").len(), 3);
    // A late joiner runs it too.
    w.nodes.push(node(4, "worker"));
    w.settle();
    assert_eq!(w.of("gj").len(), 4);
    w.set_service("gj", json!({"Mode": {"GlobalJob": {}}}));
    w.settle();
    assert_eq!(
        w.live("gj").iter().filter(|t| t.job_iteration == 1).count(),
        4
    );
    w.assert_no_duplicates();
}

#[test]
fn task_ids_have_swarms_shape() {
    assert_eq!(task_id_from_bytes([0; 16]), "0".repeat(25));
    let max = task_id_from_bytes([0xff; 16]);
    assert_eq!(max.len(), 25);
    // 2^128 - 1 in base 36.
    assert_eq!(max, "f5lxx1zz5pnorynqglhzmsp33");
    let mut one = [0u8; 16];
    one[15] = 37;
    assert_eq!(task_id_from_bytes(one), format!("{}11", "0".repeat(23)));
}

#[test]
fn scheduler_places_a_thousand_tasks_evenly() {
    let nodes: Vec<NodeInfo> = (1..=100).map(|i| node(i, "worker")).collect();
    let spec =
        ServiceSpec::from_docker(&json!({"Mode": {"Replicated": {"Replicas": 1000}}})).unwrap();
    let mut s = Scheduler::new(&nodes);
    let mut per_node = BTreeMap::new();
    for _ in 0..1000 {
        *per_node.entry(s.place("svc", &spec).unwrap()).or_insert(0) += 1;
    }
    assert!(per_node.values().all(|&c| c == 10));
}

/// A deterministic pseudo-random sequence (no randomness in the crate or its tests).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn random_event_sequences_settle_idempotently_without_duplicates() {
    for seed in 0..40 {
        let mut rng = Lcg(seed);
        let mut w = World::new(6);
        w.config.task_history_retention = 1 + rng.next(5) as usize;
        w.node_mut(5).labels.insert("zone".into(), "a".into());
        w.set_service("r", replicated(4));
        w.set_service(
            "g",
            json!({"Mode": {"Global": {}}, "TaskTemplate": {"Placement": {"Constraints": ["node.labels.zone!=b"]}}}),
        );
        w.set_service(
            "j",
            json!({"Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 4}},
                "TaskTemplate": {"RestartPolicy": {"Delay": 0, "MaxAttempts": 3}}}),
        );
        w.set_service(
            "c",
            json!({"Mode": {"Replicated": {"Replicas": 3}}, "TaskTemplate": {
                "RestartPolicy": {"Condition": "on-failure", "MaxAttempts": 2, "Delay": 2 * S},
                "Resources": {"Reservations": {"MemoryBytes": GIB}}}}),
        );
        w.settle();
        for _ in 0..30 {
            match rng.next(9) {
                0 => {
                    let n = 1 + rng.next(6);
                    let ready = w.node_mut(n).ready;
                    w.node_mut(n).ready = !ready;
                }
                1 => {
                    let n = 1 + rng.next(6);
                    let node = w.node_mut(n);
                    node.drain = !node.drain;
                    node.active = !node.drain;
                }
                2 => w.set_service("r", replicated(rng.next(9))),
                3 => {
                    let n = 1 + rng.next(6);
                    let zone = if rng.next(2) == 0 { "a" } else { "b" };
                    w.node_mut(n).labels.insert("zone".into(), zone.into());
                }
                4 | 5 => {
                    let running: Vec<String> = w
                        .tasks
                        .values()
                        .filter(|t| t.status.state == TaskState::Running)
                        .map(|t| t.id.clone())
                        .collect();
                    if !running.is_empty() {
                        let id = running[rng.next(running.len() as u64) as usize].clone();
                        let (state, code) = if rng.next(2) == 0 {
                            (TaskState::Failed, 1)
                        } else {
                            (TaskState::Complete, 0)
                        };
                        w.task_exits(&id, state, code);
                    }
                }
                6 => w.now += rng.next(10) * S,
                7 => {
                    let id = 7 + rng.next(3);
                    if !w.nodes.iter().any(|n| n.id == id) {
                        w.nodes.push(node(id, "worker"));
                    }
                }
                _ => w.set_service(
                    "j",
                    json!({"Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 4}},
                        "TaskTemplate": {"RestartPolicy": {"Delay": 0, "MaxAttempts": 3}}}),
                ),
            }
            // Every pass applies cleanly, the state settles, and one more pass is empty.
            w.settle();
            w.assert_no_duplicates();
            // Replicated services hold their replica count in live tasks, bounded by
            // restart policy exhaustion (never above it).
            let replicas = match w.specs["r"].mode {
                ServiceMode::Replicated { replicas } => replicas as usize,
                _ => unreachable!(),
            };
            // (a slot may be waiting for its restart delay: its count, not its live task)
            assert!(w.live("r").len() <= replicas, "seed {seed}");
            let slots: std::collections::BTreeSet<u64> = w
                .of("r")
                .iter()
                .filter(|t| t.desired_state < TaskState::Remove)
                .map(|t| t.slot)
                .collect();
            assert_eq!(slots.len(), replicas, "seed {seed}");
            if w.nodes.iter().any(|n| n.ready && n.active) {
                let mut later = World {
                    services: w.services.clone(),
                    specs: w.specs.clone(),
                    tasks: w.tasks.clone(),
                    nodes: w.nodes.clone(),
                    now: w.now + 60 * S,
                    next_id: w.next_id,
                    index: w.index,
                    config: w.config,
                };
                later.settle();
                assert_eq!(later.live("r").len(), replicas, "seed {seed}");
            }
            assert!(w.live("c").len() <= 3);
            let limit = w.config.task_history_retention;
            let mut per_slot: BTreeMap<(String, u64, Option<NodeId>), usize> = BTreeMap::new();
            for t in w.tasks.values() {
                if t.desired_state < TaskState::Remove {
                    let key = (
                        t.service_id.clone(),
                        t.slot,
                        if t.slot == 0 { t.node_id } else { None },
                    );
                    *per_slot.entry(key).or_default() += 1;
                }
            }
            // History may exceed the limit only by tasks that may still run (on a node that
            // is down, nobody can report them stopped).
            for ((service, slot, node), count) in per_slot {
                if count > limit {
                    let unreported = w
                        .tasks
                        .values()
                        .filter(|t| {
                            t.service_id == service
                                && t.slot == slot
                                && (slot != 0 || t.node_id == node)
                                && !t.status.state.is_terminal()
                                && t.node_id.is_some()
                        })
                        .count();
                    assert!(
                        count - limit <= unreported,
                        "seed {seed}: {service} slot {slot} holds {count}"
                    );
                }
            }
        }
    }
}

#[test]
fn stopped_tasks_do_not_count_for_max_replicas_or_spread() {
    // One node, at most one task of the job on it: the completed ones do not block it.
    let mut w = World::new(1);
    w.set_service(
        "j",
        json!({"Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 3}},
            "TaskTemplate": {"Placement": {"MaxReplicas": 1}}}),
    );
    for _ in 0..3 {
        w.settle();
        let running: Vec<String> = w
            .live("j")
            .iter()
            .filter(|t| t.status.state == TaskState::Running)
            .map(|t| t.id.clone())
            .collect();
        assert_eq!(running.len(), 1, "{:#?}", w.of("j"));
        w.task_exits(&running[0], TaskState::Complete, 0);
    }
    w.settle();
    assert_eq!(
        w.of("j")
            .iter()
            .filter(|t| t.status.state == TaskState::Complete)
            .count(),
        3
    );
}

#[test]
fn global_tasks_only_where_they_fit_and_not_on_paused_nodes() {
    let mut w = World::new(4);
    w.node_mut(2).capacity.memory_bytes = GIB / 2;
    w.node_mut(3).active = false; // paused
    w.set_service(
        "g",
        json!({"Mode": {"Global": {}}, "TaskTemplate": {"Resources": {"Reservations": {"MemoryBytes": GIB}}}}),
    );
    w.settle();
    assert_eq!(w.running_per_node("g"), BTreeMap::from([(1, 1), (4, 1)]));
    // Unpaused: it gets one. More memory: so does node 2.
    w.node_mut(3).active = true;
    w.node_mut(2).capacity.memory_bytes = 4 * GIB;
    w.settle();
    assert_eq!(
        w.running_per_node("g"),
        BTreeMap::from([(1, 1), (2, 1), (3, 1), (4, 1)])
    );
}

#[test]
fn huge_counts_are_created_in_bounded_passes() {
    let mut w = World::new(3);
    w.config.max_new_tasks_per_service = 100;
    w.set_service("s1", replicated(250));
    assert_eq!(creates(&w.step()).len(), 100);
    assert_eq!(creates(&w.step()).len(), 100);
    assert_eq!(creates(&w.step()).len(), 50);
    w.settle();
    assert_eq!(w.live("s1").len(), 250);
    // A job of a trillion completions, 3 at a time: a pass costs no more than 3 tasks.
    let mut w = World::new(3);
    w.set_service(
        "j",
        json!({"Mode": {"ReplicatedJob": {"MaxConcurrent": 3, "TotalCompletions": 1_000_000_000_000u64}}}),
    );
    let p = w.step();
    assert_eq!(creates(&p).len(), 3);
    w.settle();
    assert_eq!(w.live("j").len(), 3);
}

#[test]
fn many_unplaceable_tasks_share_one_explanation() {
    let mut w = World::new(3);
    w.node_mut(3).ready = false;
    w.set_service(
        "s1",
        json!({"Mode": {"Replicated": {"Replicas": 4}},
            "TaskTemplate": {"Resources": {"Reservations": {"MemoryBytes": GIB + GIB / 2}}}}),
    );
    let p = w.step();
    let errs: Vec<&str> = p
        .changes
        .iter()
        .filter_map(|c| match c {
            TaskChange::Unschedulable { err, .. } => Some(err.as_str()),
            _ => None,
        })
        .collect();
    // Two fit (one per ready node); the other two are told why, identically.
    assert_eq!(
        errs,
        vec![
            "no suitable node (insufficient resources on 2 nodes; 1 node not available for new tasks)";
            2
        ]
    );
    assert_eq!(w.plan().changes, vec![]);
}

fn with_update(n: u64, update: Value) -> Value {
    json!({"Name": "web", "Mode": {"Replicated": {"Replicas": n}}, "UpdateConfig": update})
}

impl World {
    /// Live tasks of `service` made from its current template, and from older ones.
    fn by_template(&self, service: &str) -> (usize, usize) {
        let current = self.services[service].template_version;
        let live = self.live(service);
        let new = live
            .iter()
            .filter(|t| t.template_version == current)
            .count();
        (new, live.len() - new)
    }

    /// Tasks of `service` observed running and wanted running.
    fn running_live(&self, service: &str) -> usize {
        self.live(service)
            .iter()
            .filter(|t| t.status.state == TaskState::Running)
            .count()
    }

    /// Passes and agents until a pass decides nothing, checking after every pass that a
    /// repeated pass on the applied state decides nothing, that no slot holds two tasks of
    /// one template, and that at least `min_running` tasks run (measured after the pass
    /// and after the agents acted). Returns the number of tasks created by each pass (passes
    /// that only start held stop-first replacements left out).
    fn roll(&mut self, service: &str, min_running: usize) -> Vec<usize> {
        let mut created = Vec::new();
        for _ in 0..60 {
            let p = self.step();
            let again = self.plan();
            assert!(
                again.changes.is_empty(),
                "not idempotent: {:#?}",
                again.changes
            );
            self.assert_no_duplicates();
            assert!(
                self.running_live(service) >= min_running,
                "only {} running after a pass",
                self.running_live(service)
            );
            self.agents();
            assert!(self.running_live(service) >= min_running);
            if p.changes.is_empty() {
                return created;
            }
            // A pass that only lets held stop-first replacements start is not a step of
            // the update's pacing.
            if !only_starts_held(&p) {
                created.push(creates(&p).len());
            }
        }
        panic!("the update did not finish");
    }

    /// Every live task of `service` runs its current template, `n` of them, all running.
    fn assert_updated(&self, service: &str, n: usize) {
        assert_eq!(self.by_template(service), (n, 0));
        assert_eq!(self.running_live(service), n);
    }
}

/// The pass only moves held tasks (desired `Ready`) on to `Running`.
fn only_starts_held(p: &Plan) -> bool {
    !p.changes.is_empty()
        && p.changes.iter().all(|c| {
            matches!(
                c,
                TaskChange::SetDesired {
                    desired: TaskState::Running,
                    ..
                }
            )
        })
}

/// Stop-first (the default): the replacement is created and prepared but held at desired
/// `Ready` until the task it replaces has stopped (swarmkit's restart supervisor,
/// `DelayStart` with `waitStop`), at most [`reconcile::HELD_START_TIMEOUT`]; a task on a
/// lost node is not waited for.
#[test]
fn a_stop_first_replacement_starts_only_once_the_old_task_stopped() {
    let mut w = World::new(3);
    w.set_service("s1", replicated(1));
    w.settle();
    let old = w.live("s1")[0].id.clone();
    w.set_service_image("s1", replicated(1), "busybox@sha256:11");
    let p = w.step();
    let new = creates(&p)[0].id.clone();
    assert_eq!(w.tasks[&new].desired_state, TaskState::Ready);
    assert_eq!(w.tasks[&old].desired_state, TaskState::Shutdown);
    // The old task takes its time to stop (its stop grace period): the new one waits,
    // and the pass says when it stops waiting.
    let p = w.step();
    assert!(p.changes.is_empty(), "{:#?}", p.changes);
    assert_eq!(
        p.wake_at,
        Some(w.tasks[&new].created_at + reconcile::HELD_START_TIMEOUT)
    );
    w.now += 10 * S;
    w.task_exits(&old, TaskState::Shutdown, 137);
    let p = w.step();
    assert!(only_starts_held(&p), "{:#?}", p.changes);
    assert_eq!(w.tasks[&new].desired_state, TaskState::Running);

    // An old task that never reports its stop: started after the timeout.
    w.settle();
    let old = w.live("s1")[0].id.clone();
    w.set_service_image("s1", replicated(1), "busybox@sha256:22");
    let new = creates(&w.step())[0].id.clone();
    w.now += reconcile::HELD_START_TIMEOUT - 1;
    assert!(w.step().changes.is_empty());
    w.now += 1;
    assert!(only_starts_held(&w.step()));
    assert_eq!(w.tasks[&new].desired_state, TaskState::Running);
    assert_ne!(w.tasks[&old].status.state, TaskState::Shutdown);

    // The old task's node is lost: nothing to wait for.
    w.agents();
    w.settle();
    let old = w.live("s1")[0].clone();
    w.set_service_image("s1", replicated(1), "busybox@sha256:33");
    let new = creates(&w.step())[0].id.clone();
    w.node_mut(old.node_id.unwrap()).ready = false;
    let p = w.step();
    assert!(
        p.changes.iter().any(|c| matches!(c, TaskChange::SetDesired { task_id, desired: TaskState::Running } if *task_id == new)),
        "{:#?}",
        p.changes
    );
}

#[test]
fn image_change_replaces_every_task_one_at_a_time_by_default() {
    let mut w = World::new(3);
    w.set_service("s1", replicated(3));
    w.settle();
    let before = w.services["s1"].template_version;
    w.set_service_image("s1", replicated(3), "busybox@sha256:11");
    assert_ne!(w.services["s1"].template_version, before);
    assert_eq!(w.by_template("s1"), (0, 3));
    // Parallelism 1, stop-first: one slot per pass, never fewer than 2 running.
    assert_eq!(w.roll("s1", 2), vec![1, 1, 1]);
    w.assert_updated("s1", 3);
    assert!(w.live("s1").iter().all(|t| t.image == "busybox@sha256:11"));
    // The old tasks were shut down, one per slot.
    let old: Vec<&Task> = w
        .of("s1")
        .into_iter()
        .filter(|t| t.template_version == before)
        .collect();
    assert_eq!(old.len(), 3);
    assert!(old
        .iter()
        .all(|t| t.desired_state == TaskState::Shutdown && t.status.state.is_terminal()));
    let mut slots: Vec<u64> = w.live("s1").iter().map(|t| t.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, vec![1, 2, 3]);
}

#[test]
fn update_parallelism_replaces_that_many_at_once_and_zero_all() {
    let mut w = World::new(3);
    w.set_service("s1", with_update(5, json!({"Parallelism": 2})));
    w.settle();
    w.set_service_image(
        "s1",
        with_update(5, json!({"Parallelism": 2})),
        "busybox@sha256:22",
    );
    // The last pass completes the update (`Monitor` 0: no wait).
    assert_eq!(w.roll("s1", 3), vec![2, 2, 1, 0]);
    w.assert_updated("s1", 5);

    w.set_service_image(
        "s1",
        with_update(5, json!({"Parallelism": 0})),
        "busybox@sha256:33",
    );
    assert_eq!(w.roll("s1", 0), vec![5, 0]);
    w.assert_updated("s1", 5);
}

#[test]
fn update_delay_waits_after_each_replacement_runs() {
    let mut w = World::new(3);
    let spec = with_update(3, json!({"Parallelism": 1, "Delay": 10 * S}));
    w.set_service("s1", spec.clone());
    w.settle();
    w.set_service_image("s1", spec, "busybox@sha256:11");
    // The first replacement starts at once (stop-first: held at `Ready` until the old
    // task stopped, then started by the next pass).
    let p = w.step();
    assert_eq!(creates(&p).len(), 1);
    w.agents();
    assert!(only_starts_held(&w.step()));
    w.agents();
    let started = w.now;
    // Not the next one before the delay has passed since it ran.
    let p = w.step();
    assert!(creates(&p).is_empty(), "{:#?}", p.changes);
    assert_eq!(p.wake_at, Some(started + 10 * S));
    w.now = started + 10 * S - 1;
    let p = w.step();
    assert!(creates(&p).is_empty());
    assert_eq!(p.wake_at, Some(started + 10 * S));
    w.now = started + 10 * S;
    let p = w.step();
    assert_eq!(creates(&p).len(), 1);
    w.agents();
    assert!(only_starts_held(&w.step()));
    w.agents();
    w.now += 10 * S;
    let p = w.step();
    assert_eq!(creates(&p).len(), 1);
    w.agents();
    w.settle();
    w.assert_updated("s1", 3);
}

#[test]
fn start_first_keeps_every_replica_running_through_the_update() {
    let mut w = World::new(3);
    let spec = with_update(4, json!({"Parallelism": 1, "Order": "start-first"}));
    w.set_service("s1", spec.clone());
    w.settle();
    w.set_service_image("s1", spec, "busybox@sha256:11");
    // The new task is created beside the old one, which keeps its desired state.
    let p = w.step();
    assert_eq!(creates(&p).len(), 1);
    assert!(!p
        .changes
        .iter()
        .any(|c| matches!(c, TaskChange::SetDesired { .. })));
    assert_eq!(w.by_template("s1"), (1, 4));
    // Nothing more until it runs; then the old one goes and the next slot starts.
    assert!(w.plan().changes.is_empty());
    w.agents();
    assert_eq!(w.running_live("s1"), 5);
    let p = w.step();
    assert_eq!(creates(&p).len(), 1);
    assert_eq!(
        p.changes
            .iter()
            .filter(|c| matches!(
                c,
                TaskChange::SetDesired {
                    desired: TaskState::Shutdown,
                    ..
                }
            ))
            .count(),
        1
    );
    w.agents();
    // Never fewer than 4 running.
    w.roll("s1", 4);
    w.assert_updated("s1", 4);
}

#[test]
fn stop_first_is_the_default_order() {
    let mut w = World::new(3);
    w.set_service("s1", replicated(2));
    w.settle();
    w.set_service_image("s1", replicated(2), "busybox@sha256:11");
    let p = w.step();
    // The old task's SetDesired comes before the Create that reuses its slot.
    let kinds: Vec<&str> = p
        .changes
        .iter()
        .map(|c| match c {
            TaskChange::SetDesired { .. } => "set",
            TaskChange::Create { .. } => "create",
            TaskChange::UpdateStatus { .. } => "status",
            _ => "other",
        })
        .collect();
    // The update starts ("update in progress") in the same pass.
    assert_eq!(kinds, vec!["status", "set", "create"]);
    assert_eq!(w.running_live("s1"), 1);
}

#[test]
fn scaling_does_not_replace_running_tasks() {
    let mut w = World::new(3);
    w.set_service("s1", replicated(2));
    w.settle();
    let version = w.services["s1"].template_version;
    let ids: Vec<String> = w.live("s1").iter().map(|t| t.id.clone()).collect();
    w.set_service("s1", replicated(4));
    assert_eq!(w.services["s1"].template_version, version);
    let p = w.step();
    assert_eq!(creates(&p).len(), 2);
    assert_eq!(p.changes.len(), 2, "{:#?}", p.changes);
    w.agents();
    w.settle();
    assert_eq!(w.by_template("s1"), (4, 0));
    for id in ids {
        assert_eq!(w.tasks[&id].desired_state, TaskState::Running);
    }
}

#[test]
fn force_update_replaces_tasks_with_the_same_spec() {
    let mut w = World::new(3);
    let spec = |force: u64| {
        json!({"Name": "web", "Mode": {"Replicated": {"Replicas": 2}},
               "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "ForceUpdate": force}})
    };
    w.set_service("s1", spec(0));
    w.settle();
    let ids: Vec<String> = w.live("s1").iter().map(|t| t.id.clone()).collect();
    w.set_service("s1", spec(1));
    assert_eq!(w.by_template("s1"), (0, 2));
    assert_eq!(w.roll("s1", 1), vec![1, 1]);
    w.assert_updated("s1", 2);
    for id in ids {
        assert_eq!(w.tasks[&id].desired_state, TaskState::Shutdown);
    }
}

#[test]
fn env_change_replaces_and_the_same_spec_sent_back_does_not() {
    let mut w = World::new(3);
    let spec = |env: Value| {
        json!({"Name": "web", "Mode": {"Replicated": {"Replicas": 2}},
               "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Env": env}}})
    };
    w.set_service("s1", spec(json!([])));
    w.settle();
    let version = w.services["s1"].template_version;
    // The docker CLI sends back the spec as inspected: the pinned image and defaults.
    let mut back = spec(Value::Null);
    back["TaskTemplate"]["ContainerSpec"]["Image"] = json!("busybox:latest@sha256:00");
    back["TaskTemplate"]["ContainerSpec"]["Isolation"] = json!("default");
    back["TaskTemplate"]["ForceUpdate"] = json!(0);
    w.set_service("s1", back);
    assert_eq!(w.services["s1"].template_version, version);
    assert!(w.plan().changes.is_empty());
    w.set_service("s1", spec(json!(["X=1"])));
    assert_ne!(w.services["s1"].template_version, version);
    assert_eq!(w.roll("s1", 1), vec![1, 1]);
    w.assert_updated("s1", 2);
}

#[test]
fn global_services_are_updated_node_by_node() {
    let mut w = World::new(4);
    let spec = json!({"Name": "g", "Mode": {"Global": {}}});
    w.set_service("g", spec.clone());
    w.settle();
    assert_eq!(w.live("g").len(), 4);
    w.set_service_image("g", spec, "busybox@sha256:11");
    assert_eq!(w.roll("g", 3), vec![1, 1, 1, 1]);
    w.assert_updated("g", 4);
    let per_node = w.running_per_node("g");
    assert_eq!(per_node.len(), 4);
    assert!(per_node.values().all(|&c| c == 1));
}

#[test]
fn global_start_first_runs_both_on_the_node_until_the_new_one_runs() {
    let mut w = World::new(2);
    let spec = json!({"Name": "g", "Mode": {"Global": {}},
                      "UpdateConfig": {"Parallelism": 0, "Order": "start-first"}});
    w.set_service("g", spec.clone());
    w.settle();
    w.set_service_image("g", spec, "busybox@sha256:11");
    let p = w.step();
    assert_eq!(creates(&p).len(), 2);
    assert_eq!(w.by_template("g"), (2, 2));
    // Both run on each node until the new one runs; then the old one goes.
    w.agents();
    assert_eq!(w.running_live("g"), 4);
    w.roll("g", 2);
    w.assert_updated("g", 2);
}

#[test]
fn a_failing_replacement_pauses_the_update_by_default_and_an_update_resumes_it() {
    let mut w = World::new(3);
    w.set_service("s1", replicated(3));
    w.settle();
    w.set_service_image("s1", replicated(3), "busybox@sha256:bad");
    let p = w.step();
    let new = creates(&p)[0].id.clone();
    let started = w.now;
    assert_eq!(
        w.services["s1"].update_status.as_ref().unwrap().state,
        update::UpdateState::Updating
    );
    w.agents();
    w.now += S;
    w.task_exits(&new, TaskState::Failed, 1);
    w.step();
    let status = w.services["s1"].update_status.clone().unwrap();
    assert_eq!(
        status,
        update::UpdateStatus {
            state: update::UpdateState::Paused,
            started_at: Some(started),
            completed_at: None,
            message: format!("update paused due to failure or early termination of task {new}"),
        }
    );
    // Paused: the restart policy still replaces the failed task after its delay, but no
    // other slot is touched.
    for _ in 0..10 {
        w.now += S;
        w.step();
        w.agents();
    }
    assert_eq!(w.by_template("s1"), (1, 2));
    assert_eq!(
        w.services["s1"].update_status.as_ref().unwrap().state,
        update::UpdateState::Paused
    );
    // `docker service update` (the same spec) clears the status: the update goes on.
    w.set_service_image("s1", replicated(3), "busybox@sha256:bad");
    w.roll("s1", 2);
    w.assert_updated("s1", 3);
    assert_eq!(
        w.services["s1"].update_status.as_ref().unwrap().state,
        update::UpdateState::Updating,
        "completed only once the monitor period has passed"
    );
    w.now += 5 * S;
    w.step();
    let status = w.services["s1"].update_status.clone().unwrap();
    assert_eq!(status.state, update::UpdateState::Completed);
    assert_eq!(status.message, "update completed");
    assert_eq!(status.completed_at, Some(w.now));
}

/// An update whose new tasks exit within `Monitor` rolls itself back: the service gets
/// its previous spec, image and template version, the failed slot returns to the old
/// template and the slots never updated are left alone.
#[test]
fn failure_action_rollback_returns_the_service_to_its_previous_spec() {
    let mut w = World::new(3);
    let spec = with_update(
        3,
        json!({"Parallelism": 1, "FailureAction": "rollback", "Monitor": 2 * S}),
    );
    w.set_service("s1", spec.clone());
    w.settle();
    let before = w.services["s1"].clone();
    let old_ids: Vec<String> = w.live("s1").iter().map(|t| t.id.clone()).collect();
    w.set_service_image("s1", spec.clone(), "busybox@sha256:bad");
    let p = w.step();
    let new = creates(&p)[0].id.clone();
    w.agents();
    w.now += S;
    w.task_exits(&new, TaskState::Failed, 1);
    let p = w.step();
    assert!(p
        .changes
        .iter()
        .any(|c| matches!(c, TaskChange::UpdateStatus { rollback: true, .. })));
    let s = &w.services["s1"];
    assert_eq!(s.spec, before.spec);
    assert_eq!(s.image, before.image);
    assert_eq!(s.template_version, before.template_version);
    assert_eq!(s.previous_spec, None);
    let status = s.update_status.clone().unwrap();
    assert_eq!(status.state, update::UpdateState::RollbackStarted);
    assert_eq!(
        status.message,
        format!("update rolled back due to failure or early termination of task {new}")
    );
    for _ in 0..20 {
        w.now += S;
        w.step();
        w.agents();
    }
    w.assert_updated("s1", 3);
    assert!(w.live("s1").iter().all(|t| t.image == before.image));
    // The two slots never updated keep their tasks.
    let kept = w
        .live("s1")
        .iter()
        .filter(|t| old_ids.contains(&t.id))
        .count();
    assert_eq!(kept, 2);
    let status = w.services["s1"].update_status.clone().unwrap();
    assert_eq!(status.state, update::UpdateState::RollbackCompleted);
    assert_eq!(status.message, "rollback completed");
}

/// A new task that stops after `Monitor` is no failure of the update (the restart
/// policy's business); one that stops within it is, and `continue` ignores failures.
#[test]
fn monitor_bounds_what_counts_as_a_failure_and_continue_ignores_failures() {
    for (action, fails_after, paused) in [
        ("pause", 3 * S, false),
        ("pause", S, true),
        ("continue", S, false),
    ] {
        let mut w = World::new(3);
        let spec = with_update(
            2,
            json!({"Parallelism": 1, "FailureAction": action, "Monitor": 2 * S}),
        );
        w.set_service("s1", spec.clone());
        w.settle();
        w.set_service_image("s1", spec.clone(), "busybox@sha256:11");
        let p = w.step();
        let new = creates(&p)[0].id.clone();
        w.agents();
        // Held until the old task stopped, then started.
        assert!(only_starts_held(&w.step()));
        w.agents();
        w.now += fails_after;
        w.task_exits(&new, TaskState::Failed, 1);
        w.step();
        let state = w.services["s1"].update_status.as_ref().unwrap().state;
        assert_eq!(
            state == update::UpdateState::Paused,
            paused,
            "{action} after {fails_after}"
        );
    }
}

#[test]
fn a_start_first_replacement_that_fails_is_retried_after_the_restart_delay() {
    let mut w = World::new(3);
    // `continue`: the failure does not pause the update; the restart policy retries.
    let spec = with_update(
        2,
        json!({"Parallelism": 1, "Order": "start-first", "FailureAction": "continue"}),
    );
    w.set_service("s1", spec.clone());
    w.settle();
    w.set_service_image("s1", spec, "busybox@sha256:bad");
    let p = w.step();
    let new = creates(&p)[0].id.clone();
    w.agents();
    w.task_exits(&new, TaskState::Failed, 1);
    let failed_at = w.now;
    let p = w.step();
    assert!(creates(&p).is_empty());
    assert_eq!(p.wake_at, Some(failed_at + 5 * S));
    assert_eq!(w.running_live("s1"), 2, "the old tasks keep running");
    w.now = failed_at + 5 * S;
    let p = w.step();
    assert_eq!(creates(&p).len(), 1);
    w.agents();
    w.roll("s1", 2);
    w.assert_updated("s1", 2);
}
