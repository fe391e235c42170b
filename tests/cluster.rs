//! berthd clusters driven with the docker CLI: `swarm init/join`, `node ls` from every node,
//! leader failover, a partition, a crash of every node, and quorum-loss recovery with
//! `--force-new-cluster`. Every berthd is a "host": its own network namespace and data root,
//! plugged by a veth pair into a bridge in a switch namespace ([`Cluster`]).
//!
//! Cluster writes in these tests are node label changes (`docker node update --label-add`):
//! each is one Raft command acknowledged only once committed on a quorum.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use berth_testkit::cluster::Cluster;
use berth_testkit::daemon::{retry, Berthd};

/// One row of `docker node ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    id: String,
    status: String,
    manager_status: String,
    is_self: bool,
}

fn node_id(d: &Berthd) -> Result<String> {
    Ok(d.docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"])?
        .trim()
        .to_string())
}

fn node_ls(d: &Berthd) -> Result<Vec<Row>> {
    let out = d.docker_ok(&[
        "node",
        "ls",
        "--format",
        "{{.ID}}|{{.Status}}|{{.ManagerStatus}}|{{.Self}}",
    ])?;
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            ensure!(f.len() == 4, "unexpected node ls line {l:?}");
            Ok(Row {
                id: f[0].to_string(),
                status: f[1].to_string(),
                manager_status: f[2].to_string(),
                is_self: f[3] == "true",
            })
        })
        .collect()
}

fn leader_of(rows: &[Row]) -> Option<String> {
    let leaders: Vec<&Row> = rows
        .iter()
        .filter(|r| r.manager_status == "Leader")
        .collect();
    match leaders.as_slice() {
        [one] => Some(one.id.clone()),
        _ => None,
    }
}

/// Waits until host `d` sees a leader other than `not`; returns it.
fn wait_leader(d: &Berthd, not: Option<&str>, timeout: Duration) -> Result<String> {
    retry(timeout, || {
        Ok(node_ls(d)
            .ok()
            .and_then(|rows| leader_of(&rows))
            .filter(|l| Some(l.as_str()) != not))
    })
    .with_context(|| format!("no leader (other than {not:?}) seen: {}", d.log()))
}

fn label_add(d: &Berthd, node: &str, key: &str, value: &str) -> Result<()> {
    d.docker_ok(&[
        "node",
        "update",
        "--label-add",
        &format!("{key}={value}"),
        node,
    ])?;
    Ok(())
}

fn labels(d: &Berthd, node: &str) -> Result<BTreeMap<String, String>> {
    let out = d.docker_ok(&["node", "inspect", "--format", "{{json .Spec.Labels}}", node])?;
    let v: Option<BTreeMap<String, String>> = serde_json::from_str(out.trim())?;
    Ok(v.unwrap_or_default())
}

/// Waits until `d`'s replica shows `key=value` on `node`.
fn wait_label(d: &Berthd, node: &str, key: &str, value: &str) -> Result<()> {
    retry(Duration::from_secs(20), || {
        Ok(labels(d, node)
            .ok()
            .filter(|l| l.get(key).map(String::as_str) == Some(value)))
    })
    .with_context(|| format!("{key}={value} never reached this node: {}", d.log()))?;
    Ok(())
}

#[test]
fn three_managers_two_workers_and_every_node_lists_all_five() -> Result<()> {
    let mut c = Cluster::new(5)?;
    c.form(3)?;
    let ids: Vec<String> = (0..5).map(|i| node_id(c.h(i))).collect::<Result<_>>()?;
    for i in 0..5 {
        let d = c.h(i);
        // Every node, a worker included, lists the five nodes, three managers, one leader.
        let rows = retry(Duration::from_secs(20), || {
            Ok(node_ls(d)
                .ok()
                .filter(|r| r.len() == 5 && r.iter().all(|r| r.status == "Ready")))
        })
        .with_context(|| format!("host {i} never listed 5 ready nodes: {}", d.log()))?;
        let managers: Vec<&Row> = rows
            .iter()
            .filter(|r| !r.manager_status.is_empty())
            .collect();
        assert_eq!(managers.len(), 3, "host {i}: {rows:?}");
        assert!(leader_of(&rows).is_some(), "host {i}: one leader: {rows:?}");
        for (j, id) in ids.iter().enumerate() {
            let row = rows.iter().find(|r| &r.id == id).context("node missing")?;
            assert_eq!(
                !row.manager_status.is_empty(),
                j < 3,
                "host {i} row {row:?}"
            );
            assert_eq!(row.is_self, i == j, "host {i} row {row:?}");
        }
        let info = d.docker_ok(&[
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.Nodes}} {{.Swarm.Managers}}",
        ])?;
        let want = if i < 3 {
            "active true 5 3"
        } else {
            "active false 5 3"
        };
        assert_eq!(info.trim(), want, "docker info on host {i}");
        // The plain table renders too.
        let table = d.docker_ok(&["node", "ls"])?;
        assert_eq!(table.lines().count(), 6, "{table}");
        assert!(
            table.contains("Leader") && table.contains("Reachable"),
            "{table}"
        );
    }
    // Workers do not hand out join tokens; managers do.
    let out = c.h(3).docker(&["swarm", "join-token", "-q", "worker"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a swarm manager"));

    // A worker accepts cluster writes too (forwarded to the leader).
    label_add(c.h(4), &ids[0], "from-worker", "1")?;
    wait_label(c.h(0), &ids[0], "from-worker", "1")?;

    // Node administration from a manager: promote, demote, drain.
    let m = c.h(1);
    m.docker_ok(&["node", "promote", &ids[3]])?;
    retry(Duration::from_secs(20), || {
        Ok(node_ls(c.h(3))
            .ok()
            .filter(|rows| rows.iter().filter(|r| !r.manager_status.is_empty()).count() == 4))
    })?;
    let control = c
        .h(3)
        .docker_ok(&["info", "--format", "{{.Swarm.ControlAvailable}}"])?;
    assert_eq!(control.trim(), "true");
    m.docker_ok(&["node", "demote", &ids[3]])?;
    m.docker_ok(&["node", "update", "--availability", "drain", &ids[4]])?;
    let avail = c.h(0).docker_ok(&[
        "node",
        "inspect",
        "--format",
        "{{.Spec.Availability}} {{.Spec.Role}}",
        &ids[4],
    ])?;
    assert_eq!(avail.trim(), "drain worker");
    let role = c
        .h(0)
        .docker_ok(&["node", "inspect", "--format", "{{.Spec.Role}}", &ids[3]])?;
    assert_eq!(role.trim(), "worker");

    // A manager does not leave without --force; a worker leaves and is gone from the list.
    let out = c.h(2).docker(&["swarm", "leave"])?;
    assert!(!out.status.success());
    c.h(4).docker_ok(&["swarm", "leave"])?;
    let state = c
        .h(4)
        .docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
    assert_eq!(state.trim(), "inactive");
    retry(Duration::from_secs(20), || {
        Ok(node_ls(c.h(0)).ok().filter(|r| r.len() == 4))
    })?;

    // A rotated token no longer admits anyone; the new one does.
    let old = c.h(0).docker_ok(&["swarm", "join-token", "-q", "worker"])?;
    c.h(0)
        .docker_ok(&["swarm", "join-token", "--rotate", "-q", "worker"])?;
    let new = c.h(0).docker_ok(&["swarm", "join-token", "-q", "worker"])?;
    assert_ne!(old, new);
    let remote = format!("{}:2377", c.hosts[0].addr);
    let out = c
        .h(4)
        .docker(&["swarm", "join", "--token", old.trim(), &remote])?;
    assert!(!out.status.success(), "a rotated token was accepted");
    c.h(4)
        .docker_ok(&["swarm", "join", "--token", new.trim(), &remote])?;
    retry(Duration::from_secs(20), || {
        Ok(node_ls(c.h(0)).ok().filter(|r| r.len() == 5))
    })?;

    // `node rm`: refused while the node is up (unless forced) and for managers; a worker
    // that is down goes.
    let out = c.h(0).docker(&["node", "rm", &ids[3]])?;
    assert!(!out.status.success(), "removed a node that is up");
    let out = c.h(0).docker(&["node", "rm", &ids[1]])?;
    assert!(!out.status.success(), "removed a manager");
    c.hosts[3].d.kill9()?;
    retry(Duration::from_secs(10), || {
        Ok(node_ls(c.h(0))
            .ok()
            .filter(|rows| rows.iter().any(|r| r.id == ids[3] && r.status == "Down")))
    })?;
    c.h(0).docker_ok(&["node", "rm", &ids[3]])?;
    retry(Duration::from_secs(20), || {
        Ok(node_ls(c.h(1))
            .ok()
            .filter(|rows| rows.len() == 4 && rows.iter().all(|r| r.id != ids[3])))
    })?;
    Ok(())
}

#[test]
fn a_wrong_token_or_another_clusters_token_is_refused() -> Result<()> {
    let c = Cluster::new(3)?;
    let first = &c.hosts[0];
    first
        .d
        .docker_ok(&["swarm", "init", "--advertise-addr", &first.addr])?;
    let remote = format!("{}:2377", first.addr);
    let token = first
        .d
        .docker_ok(&["swarm", "join-token", "-q", "worker"])?;
    let token = token.trim();

    // The right CA fingerprint with a wrong secret.
    let (prefix, _secret) = token.rsplit_once('-').context("token shape")?;
    let forged = format!("{prefix}-{}", "0".repeat(32));
    let out = c
        .h(1)
        .docker(&["swarm", "join", "--token", &forged, &remote])?;
    assert!(!out.status.success(), "forged token accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused"), "{err}");

    // A token of another cluster: its CA is not the one the remote presents.
    let other = &c.hosts[2];
    other
        .d
        .docker_ok(&["swarm", "init", "--advertise-addr", &other.addr])?;
    let foreign = other
        .d
        .docker_ok(&["swarm", "join-token", "-q", "worker"])?;
    let out = c
        .h(1)
        .docker(&["swarm", "join", "--token", foreign.trim(), &remote])?;
    assert!(!out.status.success(), "another cluster's token accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fingerprint"), "{err}");

    // A malformed token is a clear client error.
    let out = c
        .h(1)
        .docker(&["swarm", "join", "--token", "SWMTKN-1-nonsense", &remote])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));

    // Nothing changed: the refused host is in no cluster, the cluster has one node.
    let state = c
        .h(1)
        .docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
    assert_eq!(state.trim(), "inactive");
    assert_eq!(node_ls(c.h(0))?.len(), 1);
    // The refused host can still join with the right token.
    c.h(1)
        .docker_ok(&["swarm", "join", "--token", token, &remote])?;
    retry(Duration::from_secs(20), || {
        Ok(node_ls(c.h(0)).ok().filter(|r| r.len() == 2))
    })?;
    Ok(())
}

#[test]
fn the_leader_killed_a_new_one_takes_over_and_the_old_one_catches_up() -> Result<()> {
    let mut c = Cluster::new(3)?;
    c.form(3)?;
    let ids: Vec<String> = (0..3).map(|i| node_id(c.h(i))).collect::<Result<_>>()?;
    let old = wait_leader(c.h(0), None, Duration::from_secs(20))?;
    let li = ids.iter().position(|id| *id == old).context("leader id")?;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != li).collect();
    label_add(c.h(survivors[0]), &old, "before", "1")?;

    c.hosts[li].d.kill9()?;
    let t0 = Instant::now();
    let new = wait_leader(c.h(survivors[0]), Some(&old), Duration::from_secs(30))?;
    let failover = t0.elapsed();
    eprintln!(
        "leader failover: {} ms (goal: under 2 s)",
        failover.as_millis()
    );
    assert!(
        failover < Duration::from_secs(15),
        "failover took {failover:?}"
    );
    assert_ne!(new, old);

    // Writes continue, from either survivor.
    label_add(c.h(survivors[0]), &new, "after", "1")?;
    label_add(c.h(survivors[1]), &new, "after2", "1")?;
    // The dead node shows as down and unreachable.
    retry(Duration::from_secs(10), || {
        Ok(node_ls(c.h(survivors[1])).ok().filter(|rows| {
            rows.iter()
                .any(|r| r.id == old && r.status == "Down" && r.manager_status == "Unreachable")
        }))
    })?;

    // The old leader comes back as a follower and catches up.
    c.hosts[li].d.restart()?;
    let d = c.h(li);
    wait_label(d, &new, "after", "1")?;
    wait_label(d, &new, "after2", "1")?;
    assert_eq!(
        labels(d, &old)?.get("before").map(String::as_str),
        Some("1")
    );
    let rows = retry(Duration::from_secs(20), || {
        Ok(node_ls(d)
            .ok()
            .filter(|r| r.iter().all(|r| r.status == "Ready") && leader_of(r).is_some()))
    })?;
    let me = rows.iter().find(|r| r.is_self).context("self row")?;
    assert_eq!(me.manager_status, "Reachable", "{rows:?}");
    assert_eq!(leader_of(&rows).as_deref(), Some(new.as_str()));
    Ok(())
}

#[test]
fn a_partitioned_manager_cannot_commit_and_all_agree_after_healing() -> Result<()> {
    let c = Cluster::new(3)?;
    c.form(3)?;
    let ids: Vec<String> = (0..3).map(|i| node_id(c.h(i))).collect::<Result<_>>()?;
    let leader = wait_leader(c.h(0), None, Duration::from_secs(20))?;
    // Cut the leader away: it is the minority now.
    let cut = ids.iter().position(|id| *id == leader).context("leader")?;
    let majority: Vec<usize> = (0..3).filter(|&i| i != cut).collect();
    let target = &ids[majority[0]];
    label_add(c.h(cut), target, "acked", "0")?;
    c.lan.cut(cut as u8 + 1)?;

    // The minority cannot commit.
    let out = c
        .h(cut)
        .docker(&["node", "update", "--label-add", "minority=1", target])?;
    assert!(
        !out.status.success(),
        "a write committed on the minority side"
    );
    // The majority elects a leader and commits.
    let new = wait_leader(c.h(majority[0]), Some(&leader), Duration::from_secs(30))?;
    assert_ne!(new, leader);
    let mut acked = Vec::new();
    for (n, i) in majority.iter().enumerate() {
        let key = format!("majority{n}");
        label_add(c.h(*i), target, &key, "1")?;
        acked.push(key);
    }

    c.lan.heal(cut as u8 + 1)?;
    // All three agree, every acknowledged write is there.
    let want = labels(c.h(majority[0]), target)?;
    for i in 0..3 {
        let got = retry(Duration::from_secs(30), || {
            Ok(labels(c.h(i), target).ok().filter(|l| *l == want))
        })
        .with_context(|| format!("host {i} disagrees: {}", c.h(i).log()))?;
        for k in &acked {
            assert!(got.contains_key(k), "host {i} lost {k}: {got:?}");
        }
        assert_eq!(got.get("acked").map(String::as_str), Some("0"));
    }
    Ok(())
}

#[test]
fn acknowledged_writes_survive_kill9_of_every_node_and_force_new_cluster_recovers() -> Result<()> {
    let mut c = Cluster::new(3)?;
    c.form(3)?;
    let ids: Vec<String> = (0..3).map(|i| node_id(c.h(i))).collect::<Result<_>>()?;
    wait_leader(c.h(0), None, Duration::from_secs(20))?;
    label_add(c.h(1), &ids[0], "durable", "yes")?;
    for h in &mut c.hosts {
        h.d.kill9()?;
    }
    for h in &mut c.hosts {
        h.d.restart()?;
    }
    for i in 0..3 {
        wait_label(c.h(i), &ids[0], "durable", "yes")?;
    }
    wait_leader(c.h(0), None, Duration::from_secs(20))?;

    // Quorum loss: two managers gone for good.
    c.hosts[1].d.kill9()?;
    c.hosts[2].d.kill9()?;
    let out = c
        .h(0)
        .docker(&["node", "update", "--label-add", "lost=1", &ids[0]])?;
    assert!(!out.status.success(), "a write committed without quorum");

    c.hosts[0].d.restart_with(&["--force-new-cluster"])?;
    let d = c.h(0);
    let leader = wait_leader(d, None, Duration::from_secs(20))?;
    assert_eq!(leader, ids[0]);
    assert_eq!(
        labels(d, &ids[0])?.get("durable").map(String::as_str),
        Some("yes")
    );
    label_add(d, &ids[0], "recovered", "yes")?;
    wait_label(d, &ids[0], "recovered", "yes")?;
    let rows = node_ls(d)?;
    let managers: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.manager_status.is_empty())
        .collect();
    assert_eq!(managers.len(), 1, "{rows:?}");
    // The recovered cluster takes new members.
    let token = d.docker_ok(&["swarm", "join-token", "-q", "manager"])?;
    let fresh = Berthd::start(&[])?;
    c.lan.attach(fresh.netns_name())?;
    fresh.docker_ok(&[
        "swarm",
        "join",
        "--token",
        token.trim(),
        &format!("{}:2377", c.hosts[0].addr),
    ])?;
    wait_label(&fresh, &ids[0], "recovered", "yes")?;
    Ok(())
}
