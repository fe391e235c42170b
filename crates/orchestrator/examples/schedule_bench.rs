//! Benchmark (b) of issue #14: the pure scheduler placing tasks on simulated nodes.
//!
//! Scenarios (each run `RUNS` times, default 5, set with the first argument):
//! - `place`: `Scheduler::place` one task at a time, each call timed: 1,000 tasks on
//!   1,000 nodes and 10,000 tasks on 1,000 nodes, the service reserving CPU and memory (the
//!   resource filter works), plus the same with a constraint and a spread preference over
//!   10 zones;
//! - `plan`: one whole `plan()` pass (reconcile + schedule) creating and placing a service
//!   of 1,000 / 10,000 replicas on 1,000 nodes from an empty state; and the steady-state
//!   pass over 10,000 running tasks that finds nothing to do (the leader's periodic pass).
//!
//! Prints one JSON object: per scenario the decisions per second (median run) and the
//! per-task latency p50/p99 in microseconds (all runs pooled; `place` scenarios), or the
//! pass time in ms (median run; `plan` scenarios).
//!
//! Run: `cargo run --release -p berth-orchestrator --example schedule_bench [RUNS]`
//! (`bench/scheduler.sh`).

use std::collections::BTreeMap;
use std::time::Instant;

use berth_orchestrator::{
    plan_with, task_id_from_bytes, NodeInfo, PlanConfig, Platform, Resources, Scheduler, Service,
    ServiceSpec, TaskChange, TaskState, TaskStatus,
};
use serde_json::{json, Value};

const GIB: u64 = 1 << 30;

/// `n` nodes: 3 managers, the rest workers; 10 zones; 4-16 CPUs and 8-64 GiB.
fn nodes(n: u64) -> Vec<NodeInfo> {
    (1..=n)
        .map(|i| NodeInfo {
            id: i,
            id_str: format!("{:025}", i),
            hostname: format!("host-{i}"),
            role: if i <= 3 { "manager" } else { "worker" }.into(),
            active: true,
            drain: false,
            ready: i % 100 != 0, // 1% of the nodes down
            platform: Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
            },
            labels: BTreeMap::from([("zone".to_string(), format!("z{}", i % 10))]),
            engine_labels: BTreeMap::new(),
            capacity: Resources {
                nano_cpus: (4 + (i % 4) * 4) * 1_000_000_000,
                memory_bytes: (8 + (i % 8) * 8) * GIB,
            },
        })
        .collect()
}

fn spec(extra_placement: Value, replicas: u64) -> (Value, ServiceSpec) {
    let raw = json!({
        "Name": "bench",
        "Mode": {"Replicated": {"Replicas": replicas}},
        "TaskTemplate": {
            "ContainerSpec": {"Image": "busybox"},
            "Resources": {"Reservations": {"NanoCPUs": 100_000_000u64, "MemoryBytes": 64u64 << 20}},
            "Placement": extra_placement,
        }
    });
    let parsed = ServiceSpec::from_docker(&raw).expect("bench spec parses");
    (raw, parsed)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(&v, 0.5)
}

/// `Scheduler::place` timed per task.
fn bench_place(name: &str, tasks: u64, node_count: u64, placement: Value, runs: usize) -> Value {
    let nodes = nodes(node_count);
    let (_, spec) = spec(placement, tasks);
    let mut latencies_us: Vec<f64> = Vec::with_capacity(tasks as usize * runs);
    let mut rates = Vec::new();
    let mut placed_total = 0u64;
    for _ in 0..runs {
        let start = Instant::now();
        let mut scheduler = Scheduler::new(&nodes);
        let mut placed = 0u64;
        for _ in 0..tasks {
            let t0 = Instant::now();
            let r = scheduler.place("bench-service", &spec);
            latencies_us.push(t0.elapsed().as_secs_f64() * 1e6);
            placed += u64::from(r.is_ok());
        }
        let secs = start.elapsed().as_secs_f64();
        rates.push(tasks as f64 / secs);
        placed_total = placed;
    }
    latencies_us.sort_by(|a, b| a.total_cmp(b));
    json!({
        "scenario": name,
        "tasks": tasks,
        "nodes": node_count,
        "placed": placed_total,
        "runs": runs,
        "decisions_per_second": median(rates).round(),
        "p50_us": (percentile(&latencies_us, 0.5) * 10.0).round() / 10.0,
        "p99_us": (percentile(&latencies_us, 0.99) * 10.0).round() / 10.0,
    })
}

/// A whole `plan()` pass creating and placing `replicas` tasks.
/// With `steady`, the pass after that one (nothing to do) is timed instead.
fn bench_plan(name: &str, replicas: u64, node_count: u64, runs: usize, steady: bool) -> Value {
    let nodes = nodes(node_count);
    let (raw, spec) = spec(json!({}), replicas);
    let service = Service {
        id: "bench-service".into(),
        spec: raw,
        previous_spec: None,
        registry_auth: None,
        image: "busybox@sha256:00".into(),
        version: 1,
        created_at: 0,
        updated_at: 0,
        job_iteration: 0,
        template_version: 0,
        previous_image: None,
        previous_template_version: None,
        update_status: None,
        dynamic_ports: Vec::new(),
    };
    let services = BTreeMap::from([(service.id.clone(), service)]);
    let specs = BTreeMap::from([("bench-service".to_string(), spec)]);
    let mut tasks = BTreeMap::new();
    // The whole service in one pass (the default paces 1,000 new tasks per pass).
    let config = PlanConfig {
        max_new_tasks_per_service: replicas as usize,
        ..PlanConfig::default()
    };
    let mut n = 0u128;
    let mut ids = move || {
        n += 1;
        task_id_from_bytes(n.to_be_bytes())
    };
    let mut times_ms = Vec::new();
    let mut rates = Vec::new();
    let mut changes = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let p = plan_with(&services, &specs, &tasks, &nodes, 1, &mut ids, &config);
        let secs = start.elapsed().as_secs_f64();
        changes = p.changes.len();
        times_ms.push(secs * 1e3);
        rates.push(replicas as f64 / secs);
        if steady {
            // Apply the plan as the cluster state would (every task placed and running),
            // then time the passes that find nothing to do: what the leader runs every
            // 500 ms.
            for c in p.changes {
                if let TaskChange::Create { mut task } = c {
                    task.status = TaskStatus::new(TaskState::Running, 1, "started");
                    tasks.insert(task.id.clone(), task);
                }
            }
            times_ms.clear();
            rates.clear();
            for _ in 0..runs {
                let start = Instant::now();
                let p = plan_with(&services, &specs, &tasks, &nodes, 2, &mut ids, &config);
                times_ms.push(start.elapsed().as_secs_f64() * 1e3);
                changes = p.changes.len();
            }
            break;
        }
    }
    let mut out = json!({
        "scenario": name,
        "tasks": replicas,
        "nodes": node_count,
        "changes": changes,
        "runs": runs,
        "pass_ms": (median(times_ms) * 100.0).round() / 100.0,
    });
    if !steady {
        out["decisions_per_second"] = json!(median(rates).round());
    }
    out
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("RUNS must be a number"))
        .unwrap_or(5);
    let spread = json!({
        "Constraints": ["node.role==worker"],
        "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]
    });
    let results = vec![
        bench_place("place 1k tasks / 1k nodes", 1_000, 1_000, json!({}), runs),
        bench_place("place 10k tasks / 1k nodes", 10_000, 1_000, json!({}), runs),
        bench_place(
            "place 1k tasks / 1k nodes, constraint + spread over 10 zones",
            1_000,
            1_000,
            spread,
            runs,
        ),
        bench_plan(
            "plan() pass, 1k replicas / 1k nodes",
            1_000,
            1_000,
            runs,
            false,
        ),
        bench_plan(
            "plan() pass, 10k replicas / 1k nodes",
            10_000,
            1_000,
            runs,
            false,
        ),
        bench_plan(
            "plan() steady-state pass (nothing to do), 10k running tasks / 1k nodes",
            10_000,
            1_000,
            runs,
            true,
        ),
    ];
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "scheduler": results })).expect("json")
    );
}
