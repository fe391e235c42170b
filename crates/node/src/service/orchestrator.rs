//! The leader loop: runs the pure orchestrator (`berth-orchestrator`) on the Raft leader
//! and commits its decisions through the cluster.
//!
//! Owns: when a pass runs, building the scheduler's view of the nodes ([`NodeInfo`]) from
//! the replicated node records, their reported descriptions and the leader's heartbeat
//! table, the cache of parsed service specs, and committing a pass's changes as one
//! `Command::Orchestrate` write.
//!
//! Does not own: what the decisions are (`berth_orchestrator::plan`), how they are checked
//! and applied (`berth-consensus`'s pure `apply`), running the tasks (the agent,
//! [`super::agent`]).
//!
//! ```text
//!  applied_watch / every 500 ms / wake_at / a heartbeat going stale ──> is_ready_leader? ──> local state
//!     ──> NodeInfo[] (records + description + heartbeats) ──> plan(now, new_id)
//!     ──> Command::Orchestrate { changes } (one write per pass) ──> Raft ──> apply
//! ```
//!
//! The loop runs on every node and acts only while this node is the leader and has applied
//! everything committed in its term (`is_ready_leader`): a new leader continues from the
//! replicated state where the old one stopped, and the state machine refuses a decision
//! that no longer fits the state it meets (a slot already filled), so nothing is placed
//! twice. Each pass awaits its own write (which returns once applied on this leader) before
//! the next pass reads the state, so a pass never runs twice on the same state.
//!
//! # Liveness
//!
//! Every node's agent heartbeats the leader every `Dispatcher.HeartbeatPeriod` of the
//! cluster settings (250 ms by default, `docker swarm update --dispatcher-heartbeat`). A
//! node is ready for scheduling while its last heartbeat is younger than six periods
//! ([`Liveness::down_after`]; 1.5 s by default: far above the jitter of a loaded host, yet
//! a dead node's tasks are replaced within about 2 s, well under the 5 s goal; Swarm takes
//! ~20 s by its defaults). The heartbeat table lives only in the leader's memory, so a new
//! leader knows nobody's heartbeat yet: for [`Liveness::grace`] (at least [`LEADER_GRACE`],
//! 3 s, and two down-timeouts) after it became
//! leader it counts every node that has reported its description as ready, which keeps it
//! from moving every task of a healthy cluster after an election. A node that has never
//! reported its description is not ready (the scheduler needs its platform and capacity).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_consensus::{
    Availability, ClusterNode, ClusterSettings, ClusterState, Command, NodeId, NodeRecord, Response,
};
use berth_orchestrator::constraint::normalize_arch;
use berth_orchestrator::{NodeInfo, Platform, Resources, ServiceSpec};

use super::cluster::node_id_str;

/// After becoming leader, every node with a description counts as ready for at least this
/// long (the new leader has not heard anyone's heartbeat yet).
pub const LEADER_GRACE: Duration = Duration::from_secs(3);

/// The leader's liveness rules, from the cluster's heartbeat period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// A node whose last heartbeat is older than this is down (its tasks are replaced).
    pub down_after: Duration,
    /// After becoming leader, every node with a description counts as ready this long.
    pub grace: Duration,
}

impl Liveness {
    /// Down after the settings' six heartbeat periods; the grace is the longer of
    /// [`LEADER_GRACE`] and two down-timeouts.
    pub fn of(settings: &ClusterSettings) -> Self {
        let down_after = settings.down_after();
        Liveness {
            down_after,
            grace: LEADER_GRACE.max(down_after * 2),
        }
    }
}

impl Default for Liveness {
    /// With the default settings: down after 1.5 s, 3 s of grace.
    fn default() -> Self {
        Liveness::of(&ClusterSettings::default())
    }
}
/// A pass runs at least this often on the leader (node liveness changes without any
/// applied change).
const PASS_EVERY: Duration = Duration::from_millis(500);
/// How long one pass's write may take before the pass is given up (the next pass reads
/// the state again).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Unix time in nanoseconds.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Whether a node is ready for scheduling, on the leader at `now`: it heartbeated within
/// `rules.down_after`, or this node became leader (`leader_since`) less than `rules.grace`
/// ago. `last` is its last heartbeat, if any.
pub fn is_live(
    last: Option<Instant>,
    leader_since: Instant,
    now: Instant,
    rules: &Liveness,
) -> bool {
    if now.saturating_duration_since(leader_since) < rules.grace {
        return true;
    }
    last.is_some_and(|t| now.saturating_duration_since(t) < rules.down_after)
}

/// The scheduler's view of every node: the node records (role, availability, labels),
/// their reported descriptions (platform with Go's architecture name, capacity, engine
/// labels) and liveness from the
/// leader's heartbeat table (`leader_since`, `beats`) at `now` under `rules`. A node
/// without a description is never ready.
pub fn node_infos(
    nodes: &BTreeMap<NodeId, NodeRecord>,
    leader_since: Instant,
    beats: &BTreeMap<NodeId, Instant>,
    now: Instant,
    rules: &Liveness,
) -> Vec<NodeInfo> {
    nodes
        .values()
        .map(|n| {
            let d = n.description.as_ref();
            NodeInfo {
                id: n.id,
                id_str: node_id_str(n.id),
                hostname: n.hostname.clone(),
                role: n.role.as_str().to_string(),
                active: n.availability == Availability::Active,
                drain: n.availability == Availability::Drain,
                ready: d.is_some() && is_live(beats.get(&n.id).copied(), leader_since, now, rules),
                platform: Platform {
                    os: d.map(|d| d.os.clone()).unwrap_or_default(),
                    architecture: d
                        .map(|d| normalize_arch(&d.architecture).to_string())
                        .unwrap_or_default(),
                },
                labels: n.labels.clone(),
                engine_labels: d.map(|d| d.engine_labels.clone()).unwrap_or_default(),
                capacity: Resources {
                    nano_cpus: d.map_or(0, |d| d.nano_cpus),
                    memory_bytes: d.map_or(0, |d| d.memory_bytes),
                },
            }
        })
        .collect()
}

/// Parsed service specs by (service id, version): parsing happens once per spec version.
#[derive(Debug, Default)]
struct SpecCache {
    /// By service id: the version parsed and its spec (`None`: it does not parse).
    parsed: HashMap<String, (u64, Option<ServiceSpec>)>,
}

impl SpecCache {
    /// The parsed spec of every service of `state`; services whose spec does not parse
    /// (the API validated it, so only a spec from a newer berth) are left out (and left
    /// alone by the orchestrator), logged once per version.
    fn specs(&mut self, state: &ClusterState) -> BTreeMap<String, ServiceSpec> {
        self.parsed.retain(|id, _| state.services.contains_key(id));
        let mut out = BTreeMap::new();
        for (id, svc) in &state.services {
            let fresh = matches!(self.parsed.get(id), Some((v, _)) if *v == svc.version);
            if !fresh {
                let spec = match ServiceSpec::from_docker(&svc.spec) {
                    Ok(spec) => Some(spec),
                    Err(e) => {
                        tracing::warn!(service = %id, error = %e, "service spec does not parse; not orchestrated");
                        None
                    }
                };
                self.parsed.insert(id.clone(), (svc.version, spec));
            }
            if let Some((_, Some(spec))) = self.parsed.get(id) {
                out.insert(id.clone(), spec.clone());
            }
        }
        out
    }
}

/// Runs the leader loop for `node` until the task is aborted (the cluster stops or this
/// node leaves).
pub async fn run(node: Arc<ClusterNode>) {
    let mut applied = node.applied_watch();
    let mut cache = SpecCache::default();
    let mut wake = Wake::default();
    loop {
        let wait = wake.wait(Instant::now(), unix_nanos());
        tokio::select! {
            r = applied.changed() => {
                if r.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
        if !node.is_ready_leader().await {
            wake = Wake::default();
            continue;
        }
        wake = pass(&node, &mut cache).await;
    }
}

/// When the next pass is due besides the next applied change: at the plan's `wake_at` (a
/// restart delay expires), when a node's liveness may change (a heartbeat goes stale, the
/// grace after the leader change ends), at the latest after [`PASS_EVERY`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Wake {
    /// Unix ns.
    plan: Option<u64>,
    liveness: Option<Instant>,
}

impl Wake {
    fn wait(&self, now: Instant, now_ns: u64) -> Duration {
        let mut wait = PASS_EVERY;
        if let Some(w) = self.plan {
            wait = wait.min(Duration::from_nanos(w.saturating_sub(now_ns)));
        }
        if let Some(l) = self.liveness {
            wait = wait.min(l.saturating_duration_since(now));
        }
        wait
    }
}

/// The next instant after `now` at which [`is_live`] may turn false for a node that is
/// live now: the end of the leader grace, or a heartbeat turning `rules.down_after` old.
pub fn next_liveness_change(
    leader_since: Instant,
    beats: &BTreeMap<NodeId, Instant>,
    now: Instant,
    rules: &Liveness,
) -> Option<Instant> {
    let grace_end = leader_since + rules.grace;
    let stale = beats
        .values()
        .map(|t| *t + rules.down_after)
        .filter(|t| *t > now)
        .min();
    [(grace_end > now).then_some(grace_end), stale]
        .into_iter()
        .flatten()
        .min()
}

/// One orchestration pass on the leader; returns when the next one is due.
async fn pass(node: &ClusterNode, cache: &mut SpecCache) -> Wake {
    let Some((leader_since, beats)) = node.heartbeats() else {
        return Wake::default();
    };
    let now = Instant::now();
    let now_ns = unix_nanos();
    let (plan, liveness) = node.state_view().read(|state: &ClusterState| {
        let rules = Liveness::of(&state.settings);
        let liveness = next_liveness_change(leader_since, &beats, now, &rules);
        let specs = cache.specs(state);
        let nodes = node_infos(&state.nodes, leader_since, &beats, now, &rules);
        let mut new_id = || berth_orchestrator::task_id_from_bytes(rand::random());
        let config = berth_orchestrator::PlanConfig {
            task_history_retention: state.settings.task_history_retention(),
            ..berth_orchestrator::PlanConfig::default()
        };
        let plan = berth_orchestrator::plan_with(
            &state.services,
            &specs,
            &state.tasks,
            &nodes,
            now_ns,
            &mut new_id,
            &config,
        );
        (plan, liveness)
    });
    let wake = Wake {
        plan: plan.wake_at,
        liveness,
    };
    if plan.changes.is_empty() {
        return wake;
    }
    let count = plan.changes.len();
    let write = node.write(Command::Orchestrate {
        changes: plan.changes.clone(),
        at: now_ns,
    });
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(Response::Orchestrated { refused })) => {
            for (i, why) in &refused {
                tracing::debug!(change = ?plan.changes.get(*i), reason = %why, "orchestrator change refused");
            }
            tracing::debug!(
                changes = count,
                refused = refused.len(),
                "orchestration pass committed"
            );
        }
        Ok(Ok(other)) => {
            tracing::warn!(response = ?other, "unexpected response to an orchestration write");
        }
        Ok(Err(e)) => tracing::info!(error = %e, "orchestration write failed"),
        Err(_) => tracing::info!("orchestration write not committed within 10 s"),
    }
    wake
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_consensus::{NodeDescription, NodeRole};

    #[test]
    fn the_next_pass_comes_when_a_heartbeat_goes_stale_or_the_grace_ends() {
        let since = Instant::now();
        let now = since + Duration::from_secs(1);
        let beats: BTreeMap<NodeId, Instant> = [
            (1, now),
            (2, now - Duration::from_millis(1000)),
            (3, now - Duration::from_secs(5)),
        ]
        .into();
        // Node 2's heartbeat goes stale 500 ms from now, before the grace ends (2 s).
        assert_eq!(
            next_liveness_change(since, &beats, now, &Liveness::default()),
            Some(now + Duration::from_millis(500))
        );
        // After the grace, with node 1 only: when its heartbeat goes stale.
        let later = since + Duration::from_secs(4);
        let beats: BTreeMap<NodeId, Instant> = [(1, later)].into();
        assert_eq!(
            next_liveness_change(since, &beats, later, &Liveness::default()),
            Some(later + Liveness::default().down_after)
        );
        assert_eq!(
            next_liveness_change(since, &BTreeMap::new(), later, &Liveness::default()),
            None
        );
        let wake = Wake {
            plan: Some(1_000_000_100),
            liveness: Some(later + Duration::from_millis(300)),
        };
        assert_eq!(wake.wait(later, 1_000_000_000), Duration::from_nanos(100));
        let wake = Wake {
            plan: None,
            liveness: Some(later + Duration::from_millis(300)),
        };
        assert_eq!(wake.wait(later, 0), Duration::from_millis(300));
        assert_eq!(Wake::default().wait(later, 0), PASS_EVERY);
    }

    #[test]
    fn specs_are_parsed_once_per_version_and_bad_ones_left_out() {
        let service =
            |id: &str, version: u64, spec: serde_json::Value| berth_orchestrator::Service {
                id: id.into(),
                spec,
                previous_spec: None,
                registry_auth: None,
                image: "busybox:latest".into(),
                version,
                created_at: 1,
                updated_at: 1,
                job_iteration: 0,
                template_version: 0,
                previous_image: None,
                previous_template_version: None,
                update_status: None,
                dynamic_ports: Vec::new(),
            };
        let mut state = ClusterState::default();
        state.services.insert(
            "a".into(),
            service(
                "a",
                3,
                serde_json::json!({"Name": "web", "Mode": {"Replicated": {"Replicas": 2}}}),
            ),
        );
        state.services.insert(
            "b".into(),
            service(
                "b",
                4,
                serde_json::json!({"Name": "bad", "Mode": {"Nonsense": {}}}),
            ),
        );
        let mut cache = SpecCache::default();
        let specs = cache.specs(&state);
        assert_eq!(specs.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(specs["a"].name, "web");
        assert_eq!(cache.parsed["b"], (4, None), "the failure is remembered");
        // A new version is parsed again; a removed service is forgotten.
        state.services.insert(
            "a".into(),
            service(
                "a",
                9,
                serde_json::json!({"Name": "web", "Mode": {"Replicated": {"Replicas": 5}}}),
            ),
        );
        state.services.remove("b");
        let specs = cache.specs(&state);
        assert_eq!(
            specs["a"].mode,
            berth_orchestrator::ServiceMode::Replicated { replicas: 5 }
        );
        assert_eq!(cache.parsed.len(), 1);
    }

    #[test]
    fn machine_names_become_go_architectures() {
        assert_eq!(normalize_arch("x86_64"), "amd64");
        assert_eq!(normalize_arch("amd64"), "amd64");
        assert_eq!(normalize_arch("aarch64"), "arm64");
        assert_eq!(normalize_arch("armv7l"), "arm");
        assert_eq!(normalize_arch("i686"), "386");
        assert_eq!(normalize_arch("ppc64le"), "ppc64le");
        assert_eq!(normalize_arch("mips64"), "mips64");
    }

    fn record(id: NodeId, availability: Availability, described: bool) -> NodeRecord {
        NodeRecord {
            id,
            hostname: format!("host{id}"),
            addr: format!("10.0.0.{id}:2377"),
            role: if id == 1 {
                NodeRole::Manager
            } else {
                NodeRole::Worker
            },
            availability,
            labels: [("zone".to_string(), "a".to_string())].into(),
            cert_fingerprint: String::new(),
            created_index: 1,
            version: 1,
            description: described.then(|| NodeDescription {
                os: "linux".into(),
                architecture: "x86_64".into(),
                nano_cpus: 2_000_000_000,
                memory_bytes: 1 << 30,
                engine_version: "0.1.0".into(),
                engine_labels: [("disk".to_string(), "ssd".to_string())].into(),
            }),
            wg_public_key: None,
            wg_listen_port: None,
        }
    }

    #[test]
    fn liveness_follows_heartbeats_after_the_grace_period() {
        let since = Instant::now();
        let now = since + Duration::from_secs(10);
        let rules = Liveness::default();
        assert!(is_live(
            Some(now - Duration::from_millis(1400)),
            since,
            now,
            &rules
        ));
        assert!(!is_live(
            Some(now - Duration::from_millis(1500)),
            since,
            now,
            &rules
        ));
        assert!(!is_live(None, since, now, &rules));
        // A slower heartbeat (`--dispatcher-heartbeat 1s`): down after 6 s, 12 s of grace.
        let slow = Liveness::of(&ClusterSettings {
            heartbeat_period_ns: 1_000_000_000,
            ..ClusterSettings::default()
        });
        assert_eq!(
            slow,
            Liveness {
                down_after: Duration::from_secs(6),
                grace: Duration::from_secs(12)
            }
        );
        let later = since + Duration::from_secs(20);
        assert!(is_live(
            Some(later - Duration::from_secs(5)),
            since,
            later,
            &slow
        ));
    }

    #[test]
    fn every_node_is_live_during_the_grace_after_a_leader_change() {
        let since = Instant::now();
        let now = since + Duration::from_millis(2900);
        let rules = Liveness::default();
        assert!(is_live(None, since, now, &rules));
        assert!(is_live(
            Some(since - Duration::from_secs(60)),
            since,
            now,
            &rules
        ));
        let after = since + LEADER_GRACE;
        assert!(!is_live(None, since, after, &rules));
    }

    #[test]
    fn node_infos_combine_records_descriptions_and_heartbeats() {
        let nodes: BTreeMap<NodeId, NodeRecord> = [
            (1, record(1, Availability::Active, true)),
            (2, record(2, Availability::Drain, true)),
            (3, record(3, Availability::Pause, false)),
            (4, record(4, Availability::Active, true)),
        ]
        .into();
        let since = Instant::now();
        let now = since + Duration::from_secs(10);
        let beats: BTreeMap<NodeId, Instant> = [
            (1, now),
            (2, now - Duration::from_millis(200)),
            (3, now),
            (4, now - Duration::from_secs(2)),
        ]
        .into();
        let infos = node_infos(&nodes, since, &beats, now, &Liveness::default());
        assert_eq!(infos.len(), 4);
        let one = &infos[0];
        assert_eq!(one.id_str, node_id_str(1));
        assert_eq!(one.hostname, "host1");
        assert_eq!(one.role, "manager");
        assert!(one.active && !one.drain && one.ready);
        assert_eq!(one.platform.os, "linux");
        assert_eq!(one.platform.architecture, "amd64");
        assert_eq!(one.labels["zone"], "a");
        assert_eq!(one.engine_labels["disk"], "ssd");
        assert_eq!(one.capacity.nano_cpus, 2_000_000_000);
        assert_eq!(one.capacity.memory_bytes, 1 << 30);
        let two = &infos[1];
        assert_eq!(two.role, "worker");
        assert!(!two.active && two.drain && two.ready);
        // Heartbeating but never described: not ready.
        let three = &infos[2];
        assert!(!three.active && !three.drain && !three.ready);
        assert_eq!(three.capacity, Resources::default());
        // Described but silent for 2 s: down.
        assert!(!infos[3].ready);
    }
}
