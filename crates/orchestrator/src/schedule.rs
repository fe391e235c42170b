//! The scheduler: tasks to nodes (swarmkit's `manager/scheduler`), as a filter pipeline
//! over the nodes, then spread.
//!
//! Filters, in swarmkit's order (`pipeline.go` `defaultFilters`), the first that fails
//! counts the node against itself:
//! 1. ready: the node heartbeats the leader and its availability is `active`
//!    (`ReadyFilter`: "N nodes not available for new tasks");
//! 2. resources: the service's CPU and memory reservations fit the node's capacity minus
//!    the reservations of the tasks on it whose observed state is not terminal
//!    (`ResourceFilter`: "insufficient resources on N nodes");
//! 3. constraints (`ConstraintFilter`: "scheduling constraints not satisfied on N nodes");
//! 4. platform: one of `Placement.Platforms` matches, `x86_64`=`amd64`,
//!    `aarch64`=`arm64`, an empty field matches anything (`PlatformFilter`: "unsupported
//!    platform on N nodes");
//! 5. max replicas per node: fewer than `MaxReplicas` active tasks of the service on the
//!    node (`MaxReplicasFilter`: "max replicas per node limit exceed").
//!
//! A task is *active* on its node while its desired state is `Running`/`Complete` and its
//! observed state is not terminal (swarmkit tracks tasks on a node from `Pending` to
//! `Running`, and counts those desired `<= Completed`).
//!
//! A task no node passes gets swarmkit's `no suitable node (<explanations>)`, the
//! explanations ordered by how many nodes each filter failed, most first (`Pipeline.Explain`),
//! or `no suitable node` when there are no nodes at all.
//!
//! Spread among the nodes that pass: the placement preferences first (for each
//! `Spread` descriptor in order, the label value group, nodes without the label forming
//! their own group, with the fewest tasks of the service on its passing nodes; ties to the
//! smaller value, the no-label group first), then the node with the fewest tasks of this
//! service, then the fewest tasks overall, then the lowest node id. Every decision is
//! recorded at once, so the next task of the same pass sees it.
//!
//! Cost: building costs O(tasks); each placement is O(nodes × (1 + preferences)), with
//! the per-node counts of a service held in one vector and the static filters (ready,
//! constraints, platform) of a service computed once.

use std::collections::HashMap;

use crate::constraint::{self, normalize_arch, strip_prefix_ci};
use crate::model::{NodeId, NodeInfo, Platform, Resources, ServiceSpec};

/// The filters of the pipeline, in swarmkit's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    Ready = 0,
    Resources = 1,
    Constraints = 2,
    Platform = 3,
    MaxReplicas = 4,
}

const FILTERS: usize = 5;

impl Filter {
    /// swarmkit's `Explain(nodes)` for each filter.
    fn explain(self, nodes: usize) -> String {
        let plural = |one: &str, many: String| if nodes == 1 { one.to_string() } else { many };
        match self {
            Filter::Ready => plural(
                "1 node not available for new tasks",
                format!("{nodes} nodes not available for new tasks"),
            ),
            Filter::Resources => plural(
                "insufficient resources on 1 node",
                format!("insufficient resources on {nodes} nodes"),
            ),
            Filter::Constraints => plural(
                "scheduling constraints not satisfied on 1 node",
                format!("scheduling constraints not satisfied on {nodes} nodes"),
            ),
            Filter::Platform => plural(
                "unsupported platform on 1 node",
                format!("unsupported platform on {nodes} nodes"),
            ),
            Filter::MaxReplicas => "max replicas per node limit exceed".to_string(),
        }
    }
}

const ALL_FILTERS: [Filter; FILTERS] = [
    Filter::Ready,
    Filter::Resources,
    Filter::Constraints,
    Filter::Platform,
    Filter::MaxReplicas,
];

/// Why a task could not be placed: how many nodes each filter turned away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoSuitableNode {
    failures: [usize; FILTERS],
}

impl NoSuitableNode {
    /// swarmkit's task error: `no suitable node (scheduling constraints not satisfied on 3
    /// nodes; insufficient resources on 1 node)`, the filters ordered by failure count
    /// (most first, ties in pipeline order); `no suitable node` when no node was
    /// considered at all.
    pub fn message(&self) -> String {
        let mut order: Vec<Filter> = ALL_FILTERS
            .iter()
            .copied()
            .filter(|f| self.failures[*f as usize] > 0)
            .collect();
        order.sort_by_key(|f| std::cmp::Reverse(self.failures[*f as usize]));
        if order.is_empty() {
            return "no suitable node".to_string();
        }
        let parts: Vec<String> = order
            .iter()
            .map(|f| f.explain(self.failures[*f as usize]))
            .collect();
        format!("no suitable node ({})", parts.join("; "))
    }
}

impl std::fmt::Display for NoSuitableNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// The outcome of the filters that do not depend on other tasks, per node, for one
/// service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Static {
    Pass,
    Fail(Filter),
}

#[derive(Debug)]
struct ServiceLoad {
    /// Active tasks of the service, per node position.
    per_node: Vec<u32>,
    /// Ready/constraints/platform per node position; computed at the first placement.
    statics: Option<Vec<Static>>,
    /// Per spread descriptor: (number of groups, group per node position). Groups are
    /// numbered in tie-break order: the nodes without the label first, then by value.
    groups: Vec<(usize, Vec<u32>)>,
}

/// The scheduler's view of the cluster for one pass: nodes, how many tasks each holds
/// (in total and per service) and the resources reserved on it. Build it with
/// [`Scheduler::new`], account the existing tasks with [`Scheduler::account`], then
/// [`Scheduler::place`] tasks one by one (each decision is recorded) or
/// [`Scheduler::check`] + [`Scheduler::record`] a task whose node is given (global
/// services).
#[derive(Debug)]
pub struct Scheduler<'a> {
    nodes: &'a [NodeInfo],
    pos: HashMap<NodeId, usize>,
    /// Active tasks per node position.
    active: Vec<u64>,
    /// Reservations of tasks not yet terminal per node position.
    reserved: Vec<Resources>,
    services: HashMap<String, ServiceLoad>,
}

impl<'a> Scheduler<'a> {
    /// An empty scheduler over `nodes` (any order; node ids unique).
    pub fn new(nodes: &'a [NodeInfo]) -> Self {
        Scheduler {
            nodes,
            pos: nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect(),
            active: vec![0; nodes.len()],
            reserved: vec![Resources::default(); nodes.len()],
            services: HashMap::new(),
        }
    }

    fn service_load(&mut self, service_id: &str) -> &mut ServiceLoad {
        if !self.services.contains_key(service_id) {
            self.services.insert(
                service_id.to_string(),
                ServiceLoad {
                    per_node: vec![0; self.nodes.len()],
                    statics: None,
                    groups: Vec::new(),
                },
            );
        }
        self.services
            .get_mut(service_id)
            .expect("service load inserted above")
    }

    /// Account a task that is already on `node`: `active` when its desired state is
    /// `Running`/`Complete` and its observed state not terminal (it counts for spread and
    /// max replicas), `holds` the
    /// reservations it holds (its service's, while its observed state is not terminal;
    /// zero otherwise). A node not in the node list is ignored.
    pub fn account(&mut self, node: NodeId, service_id: &str, active: bool, holds: Resources) {
        let Some(&i) = self.pos.get(&node) else {
            return;
        };
        self.reserved[i].nano_cpus = self.reserved[i].nano_cpus.saturating_add(holds.nano_cpus);
        self.reserved[i].memory_bytes = self.reserved[i]
            .memory_bytes
            .saturating_add(holds.memory_bytes);
        if active {
            self.active[i] += 1;
            self.service_load(service_id).per_node[i] += 1;
        }
    }

    /// Record a new task of `service_id` on `node` (active, holding the spec's
    /// reservations).
    pub fn record(&mut self, node: NodeId, service_id: &str, spec: &ServiceSpec) {
        self.account(node, service_id, true, spec.reservations);
    }

    /// Computes the static filter outcomes of a service once per scheduler.
    fn ensure_statics(&mut self, service_id: &str, spec: &ServiceSpec) {
        let nodes = self.nodes;
        let load = self.service_load(service_id);
        if load.statics.is_none() {
            load.statics = Some(nodes.iter().map(|n| static_filters(n, spec)).collect());
            load.groups = spec
                .placement
                .spread
                .iter()
                .map(|descriptor| {
                    let values: Vec<Option<&str>> =
                        nodes.iter().map(|n| label_value(n, descriptor)).collect();
                    let mut distinct = values.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    let ids = values
                        .iter()
                        .map(|v| distinct.binary_search(v).unwrap_or_default() as u32)
                        .collect();
                    (distinct.len(), ids)
                })
                .collect();
        }
    }

    /// Whether a task of `service_id` fits on `node` (all filters). Used for tasks whose
    /// node is fixed (global services). A node not in the list fails the ready filter.
    pub fn check(
        &mut self,
        node: NodeId,
        service_id: &str,
        spec: &ServiceSpec,
    ) -> Result<(), NoSuitableNode> {
        let mut failures = [0; FILTERS];
        let Some(&i) = self.pos.get(&node) else {
            failures[Filter::Ready as usize] = 1;
            return Err(NoSuitableNode { failures });
        };
        let st = static_filters(&self.nodes[i], spec);
        let count = self.service_load(service_id).per_node[i];
        match self.dynamic(i, st, count, spec) {
            Ok(()) => Ok(()),
            Err(f) => {
                failures[f as usize] = 1;
                Err(NoSuitableNode { failures })
            }
        }
    }

    /// The pipeline for node position `i` given its static outcome, in swarmkit's order.
    fn dynamic(&self, i: usize, st: Static, count: u32, spec: &ServiceSpec) -> Result<(), Filter> {
        if st == Static::Fail(Filter::Ready) {
            return Err(Filter::Ready);
        }
        let r = spec.reservations;
        if r.nano_cpus > 0 || r.memory_bytes > 0 {
            let cap = self.nodes[i].capacity;
            let used = self.reserved[i];
            if r.nano_cpus > cap.nano_cpus.saturating_sub(used.nano_cpus)
                || r.memory_bytes > cap.memory_bytes.saturating_sub(used.memory_bytes)
            {
                return Err(Filter::Resources);
            }
        }
        if let Static::Fail(f) = st {
            return Err(f);
        }
        if spec.placement.max_replicas > 0 && u64::from(count) >= spec.placement.max_replicas {
            return Err(Filter::MaxReplicas);
        }
        Ok(())
    }

    /// Choose a node for one task of `service_id` (filters, then spread) and record the
    /// decision. Errors with the reason no node fits.
    pub fn place(
        &mut self,
        service_id: &str,
        spec: &ServiceSpec,
    ) -> Result<NodeId, NoSuitableNode> {
        self.ensure_statics(service_id, spec);
        let load = &self.services[service_id];
        let counts = &load.per_node;
        let statics = load.statics.as_deref().unwrap_or_default();
        let mut failures = [0; FILTERS];
        let mut candidates: Vec<usize> = Vec::new();
        let mut best: Option<usize> = None;
        let key = |i: usize| (counts[i], self.active[i], self.nodes[i].id);
        for i in 0..self.nodes.len() {
            if let Err(f) = self.dynamic(i, statics[i], counts[i], spec) {
                failures[f as usize] += 1;
                continue;
            }
            if spec.placement.spread.is_empty() {
                if best.is_none_or(|b| key(i) < key(b)) {
                    best = Some(i);
                }
            } else {
                candidates.push(i);
            }
        }
        if !spec.placement.spread.is_empty() {
            for (groups, group_of) in &load.groups {
                if candidates.len() <= 1 {
                    break;
                }
                // Tasks of the service per group, over the nodes that passed.
                let mut per_group: Vec<Option<u64>> = vec![None; *groups];
                for &i in &candidates {
                    let g = &mut per_group[group_of[i] as usize];
                    *g = Some(g.unwrap_or(0) + u64::from(counts[i]));
                }
                let chosen = per_group
                    .iter()
                    .enumerate()
                    .filter_map(|(g, c)| c.map(|c| (c, g)))
                    .min()
                    .map(|(_, g)| g as u32);
                if let Some(g) = chosen {
                    candidates.retain(|&i| group_of[i] == g);
                }
            }
            best = candidates.iter().copied().min_by_key(|&i| key(i));
        }
        match best {
            Some(i) => {
                let node = self.nodes[i].id;
                self.record(node, service_id, spec);
                Ok(node)
            }
            None => Err(NoSuitableNode { failures }),
        }
    }
}

/// The value of a spread descriptor's label on `node` (`node.labels.zone`), `None` when
/// the node has no such label.
fn label_value<'n>(node: &'n NodeInfo, descriptor: &str) -> Option<&'n str> {
    if let Some(label) = strip_prefix_ci(descriptor, constraint::NODE_LABEL_PREFIX) {
        node.labels.get(label).map(String::as_str)
    } else if let Some(label) = strip_prefix_ci(descriptor, constraint::ENGINE_LABEL_PREFIX) {
        node.engine_labels.get(label).map(String::as_str)
    } else {
        None
    }
}

/// Ready, constraints and platform: the filters that do not depend on the tasks placed.
fn static_filters(node: &NodeInfo, spec: &ServiceSpec) -> Static {
    if !(node.ready && node.active && !node.drain) {
        return Static::Fail(Filter::Ready);
    }
    if !constraint::all_match(&spec.placement.constraints, node) {
        return Static::Fail(Filter::Constraints);
    }
    if !platform_matches(&spec.placement.platforms, &node.platform) {
        return Static::Fail(Filter::Platform);
    }
    Static::Pass
}

/// swarmkit `PlatformFilter`: no platforms = any; else one matches, an empty OS or
/// architecture matching anything, `x86_64`=`amd64`, `aarch64`=`arm64`.
pub fn platform_matches(platforms: &[Platform], node: &Platform) -> bool {
    platforms.is_empty()
        || platforms.iter().any(|p| {
            (p.architecture.is_empty()
                || normalize_arch(&p.architecture) == normalize_arch(&node.architecture))
                && (p.os.is_empty() || p.os == node.os)
        })
}

/// Whether `node` may keep running a task of `spec`, and receive a new one when it is
/// also `active`: ready, not drained, constraints and platform hold. Resources are not
/// re-checked for running tasks (swarmkit's constraint enforcer does not either).
pub fn node_eligible(node: &NodeInfo, spec: &ServiceSpec) -> bool {
    node.ready
        && !node.drain
        && constraint::all_match(&spec.placement.constraints, node)
        && platform_matches(&spec.placement.platforms, &node.platform)
}
