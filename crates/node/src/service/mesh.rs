//! The routing mesh from the replicated state (issue #16): what every node publishes for
//! the services' ingress-mode ports (`--publish published=8080,target=80`), as pure
//! functions of the [`ClusterState`]; `service::overlay_plane` realises them.
//!
//! ```text
//!  ClusterState ─ wants_sandbox ─> this node's NodeSandbox endpoint on `ingress` (committed)
//!               ─ ingress_rules ─> IngressRule per published port ─> host table (nft DNAT)
//!               ─ sandbox_addrs ─> IngressReturn in each local task on `ingress`
//! ```
//!
//! Rules:
//! - A node holds a sandbox address on `ingress` (Swarm's `ingress-sbox`) while some
//!   service publishes in ingress mode, and none otherwise: a cluster without published
//!   services has no ingress bridge, VXLAN device or nft table on any node.
//! - Every node DNATs each published port (any local address, `fib daddr type local`) to
//!   one of the service's running tasks' addresses on `ingress`, on any node, chosen at
//!   random per connection (nftables `numgen`; no IPVS here), without SNAT: the task sees
//!   the client's address. A port with no running task is not answered.
//! - Each task on `ingress` routes its replies back through the node that forwarded the
//!   request (`berth_overlay_net::overlay::ingress`), which needs every node's sandbox
//!   address.
//!
//! `mode=host` ports are not here: they are the task container's own port bindings
//! (`service::task_spec`), published by its node like `docker run -p`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use berth_consensus::state::{service_ports, EndpointOwner};
use berth_consensus::{ClusterState, NodeId};
use berth_orchestrator::TaskState;
use berth_overlay_net::overlay::IngressRule;
use berth_overlay_net::ports::Protocol;

/// Whether node sandboxes must exist: the cluster has the `ingress` network and a service
/// publishes a port through it.
pub fn wants_sandbox(state: &ClusterState) -> bool {
    state.ingress_network().is_some()
        && state
            .services
            .values()
            .any(|s| berth_consensus::state::publishes_ingress(&s.spec))
}

/// Node `me`'s sandbox endpoint on `ingress` (its id), if the state has one.
pub fn sandbox_of(state: &ClusterState, me: NodeId) -> Option<String> {
    let ingress = state.ingress_network()?;
    state
        .endpoints_of_network(&ingress.id)
        .find(|e| e.node_id == Some(me) && e.owner == EndpointOwner::NodeSandbox)
        .map(|e| e.id.clone())
}

/// Every node's sandbox address on `ingress`, sorted (the return path's node set).
pub fn sandbox_addrs(state: &ClusterState) -> Vec<Ipv4Addr> {
    let Some(ingress) = state.ingress_network() else {
        return Vec::new();
    };
    let mut addrs: Vec<Ipv4Addr> = state
        .endpoints_of_network(&ingress.id)
        .filter(|e| e.owner == EndpointOwner::NodeSandbox)
        .map(|e| e.ip)
        .collect();
    addrs.sort();
    addrs
}

/// The routing mesh's DNAT rules, the same on every node: per ingress-mode published port
/// of every service, the addresses on `ingress` of its tasks whose observed state is
/// `Running` (sorted; none: the rule is left out and the port not answered).
pub fn ingress_rules(state: &ClusterState) -> Vec<IngressRule> {
    let Some(ingress) = state.ingress_network() else {
        return Vec::new();
    };
    let mut rules = Vec::new();
    for service in state.services.values() {
        let mut backends: Vec<Ipv4Addr> = state
            .endpoints_of_network(&ingress.id)
            .filter(|e| match &e.owner {
                EndpointOwner::Task { id, service_id } => {
                    *service_id == service.id
                        && state
                            .tasks
                            .get(id)
                            .is_some_and(|t| t.status.state == TaskState::Running)
                }
                _ => false,
            })
            .map(|e| e.ip)
            .collect();
        backends.sort();
        for port in service_ports(service) {
            let protocol = match port.protocol.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => continue, // refused at create (task_spec)
            };
            if !port.ingress || backends.is_empty() {
                continue;
            }
            rules.push(IngressRule {
                published: port.published,
                protocol,
                target_port: port.target,
                backends: backends.clone(),
            });
        }
    }
    rules.sort_by_key(|r| (r.published, r.protocol));
    rules
}

/// The local tasks on `ingress` whose observed state is `Running`: their container's
/// namespace file (`netns_dir/<container id>`) and their interface on `ingress` (`eth<i>`,
/// `i` = 1 + the network's place in the service's networks, as `attach_task` names them).
pub fn local_ingress_tasks(
    state: &ClusterState,
    me: NodeId,
    netns_dir: &Path,
) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let Some(ingress) = state.ingress_network() else {
        return out;
    };
    for e in state.endpoints_of_network(&ingress.id) {
        let EndpointOwner::Task { id, service_id } = &e.owner else {
            continue;
        };
        if e.node_id != Some(me) {
            continue;
        }
        let Some(task) = state.tasks.get(id) else {
            continue;
        };
        let (Some(cid), true) = (
            task.status.container_id.as_deref(),
            task.status.state == TaskState::Running,
        ) else {
            continue;
        };
        let Some(place) = state
            .services
            .get(service_id)
            .and_then(|s| state.service_networks(&s.spec).ok())
            .and_then(|nets| nets.iter().position(|n| *n == ingress.id))
        else {
            continue;
        };
        out.insert(netns_dir.join(cid), format!("eth{}", place + 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use berth_consensus::state::NodeSpec;
    use berth_consensus::{Command, NodeRole, Response};
    use berth_orchestrator::{Service, Task, TaskChange, TaskStatus};
    use serde_json::json;

    use super::*;

    fn node(id: NodeId) -> NodeSpec {
        NodeSpec {
            id,
            hostname: format!("h{id}"),
            addr: format!("10.77.0.{id}:2377"),
            role: NodeRole::Manager,
            cert_fingerprint: format!("fp{id}"),
        }
    }

    fn service(id: &str, ports: serde_json::Value) -> Service {
        Service {
            id: id.into(),
            spec: json!({"Name": id, "Mode": {"Replicated": {"Replicas": 1}},
                         "EndpointSpec": {"Ports": ports}}),
            previous_spec: None,
            registry_auth: None,
            image: "busybox@sha256:00".into(),
            version: 0,
            created_at: 0,
            updated_at: 0,
            job_iteration: 0,
            template_version: 0,
            previous_image: None,
            previous_template_version: None,
            update_status: None,
            dynamic_ports: Vec::new(),
        }
    }

    fn task(id: &str, service_id: &str, node_id: NodeId) -> Task {
        Task {
            id: id.into(),
            service_id: service_id.into(),
            slot: 1,
            node_id: Some(node_id),
            service_version: 0,
            image: "busybox@sha256:00".into(),
            job_iteration: 0,
            restart_times: Vec::new(),
            template_version: 0,
            running_at: None,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, 1, "assigned"),
            created_at: 1,
            version: 0,
        }
    }

    #[test]
    fn published_ports_go_to_running_tasks_and_sandboxes_follow_the_services() {
        let mut state = ClusterState::default();
        state.apply(
            1,
            &Command::InitCluster {
                cluster_id: "c".into(),
                first_node: node(1),
                networking: None,
            },
        );
        state.apply(2, &Command::AddNode(node(2)));
        assert!(!wants_sandbox(&state));
        let host_only = service(
            "h",
            json!([{"TargetPort": 80, "PublishedPort": 9090, "PublishMode": "host"}]),
        );
        state.apply(3, &Command::CreateService { service: host_only });
        assert!(!wants_sandbox(&state), "mode=host needs no mesh");
        let web = service(
            "web",
            json!([{"TargetPort": 80, "PublishedPort": 8080},
                   {"TargetPort": 53, "PublishedPort": 5353, "Protocol": "udp", "PublishMode": "ingress"}]),
        );
        state.apply(4, &Command::CreateService { service: web });
        assert!(wants_sandbox(&state));
        let ingress = state.ingress_network().unwrap().id.clone();
        for (i, n) in [(5, 1), (6, 2)] {
            let r = state.apply(
                i,
                &Command::AttachEndpoint {
                    id: format!("sbox{n}"),
                    network: ingress.clone(),
                    node_id: n,
                    owner: EndpointOwner::NodeSandbox,
                    requested_ip: None,
                },
            );
            assert!(matches!(r, Response::Endpoint { .. }), "{r:?}");
        }
        assert_eq!(sandbox_of(&state, 2).as_deref(), Some("sbox2"));
        assert_eq!(sandbox_addrs(&state).len(), 2);
        // A task assigned, not running yet: no rule.
        let r = state.apply(
            7,
            &Command::Orchestrate {
                changes: vec![TaskChange::Create {
                    task: task("t1", "web", 2),
                }],
                at: 1,
            },
        );
        assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
        let ip = state.task_endpoints("t1").next().unwrap().ip;
        assert!(ingress_rules(&state).is_empty());
        // Node 1 programs FDB/neighbour entries for the remote task's address until the
        // task has ended (its address stays allocated with the task record).
        let programmed = |s: &ClusterState| {
            crate::service::overlay::desired_overlays(s, 1)
                .unwrap()
                .endpoints
                .iter()
                .any(|e| e.ip == ip)
        };
        assert!(programmed(&state));
        state.tasks.get_mut("t1").unwrap().status.state = TaskState::Shutdown;
        assert!(!programmed(&state), "an ended task keeps an entry");
        state.tasks.get_mut("t1").unwrap().status.state = TaskState::Assigned;
        state.tasks.get_mut("t1").unwrap().status.state = TaskState::Running;
        let rules = ingress_rules(&state);
        assert_eq!(
            rules,
            vec![
                IngressRule {
                    published: 5353,
                    protocol: Protocol::Udp,
                    target_port: 53,
                    backends: vec![ip],
                },
                IngressRule {
                    published: 8080,
                    protocol: Protocol::Tcp,
                    target_port: 80,
                    backends: vec![ip],
                },
            ]
        );
        // The service goes: no sandbox wanted any more.
        state.apply(8, &Command::RemoveService { id: "web".into() });
        assert!(!wants_sandbox(&state));
    }
}
