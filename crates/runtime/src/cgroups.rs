//! Adapter to libcgroups: statistics, process lists and OOM events of a container's cgroup.
//!
//! Owns the reads of cgroup files for one container, given its cgroups path. Works on cgroup
//! v1, the hybrid layout (v1 controllers plus a cgroup2 mount) and pure v2, as libcgroups
//! detects it. Does not create cgroups (libcontainer does, from the spec).

use std::path::{Path, PathBuf};

use libcgroups::common::{create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager};

use crate::error::{Result, RuntimeError};

fn manager(id: &str, cgroups_path: &str) -> Result<AnyCgroupManager> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroups_path),
        systemd_cgroup: false,
        container_name: id.to_string(),
    })
    .map_err(|e| RuntimeError::Cgroup {
        op: "open",
        id: id.to_string(),
        message: e.to_string(),
    })
}

/// libcgroups' statistics of the container's cgroup.
pub fn stats(id: &str, cgroups_path: &str) -> Result<libcgroups::stats::Stats> {
    manager(id, cgroups_path)?
        .stats()
        .map_err(|e| RuntimeError::Cgroup {
            op: "stats",
            id: id.to_string(),
            message: e.to_string(),
        })
}

/// Host pids of every process in the container's cgroup.
pub fn pids(id: &str, cgroups_path: &str) -> Result<Vec<i32>> {
    let list = manager(id, cgroups_path)?
        .get_all_pids()
        .map_err(|e| RuntimeError::Cgroup {
            op: "list pids",
            id: id.to_string(),
            message: e.to_string(),
        })?;
    Ok(list.into_iter().map(|p| p.as_raw()).collect())
}

/// Removes the container's cgroups (teardown when libcontainer's state is gone).
pub fn remove(id: &str, cgroups_path: &str) -> Result<()> {
    manager(id, cgroups_path)?
        .remove()
        .map_err(|e| RuntimeError::Cgroup {
            op: "remove",
            id: id.to_string(),
            message: e.to_string(),
        })
}

/// The `oom_kill` counter in a memory.oom_control (v1) or memory.events (v2) text.
pub fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .filter_map(|v| v.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

/// The files that may hold the OOM-kill counter of a cgroups path, v1 first.
pub fn oom_files(cgroup_root: &Path, cgroups_path: &str) -> [PathBuf; 2] {
    let rel = cgroups_path.trim_start_matches('/');
    [
        cgroup_root
            .join("memory")
            .join(rel)
            .join("memory.oom_control"),
        cgroup_root.join(rel).join("memory.events"),
    ]
}

/// How many processes of the cgroup the kernel's OOM killer killed.
pub fn oom_kills(cgroups_path: &str) -> u64 {
    oom_files(Path::new("/sys/fs/cgroup"), cgroups_path)
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| parse_oom_kills(&t))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counter_parse() {
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            1
        );
        assert_eq!(parse_oom_kills("oom_kill_disable 0\n"), 0);
    }

    #[test]
    fn oom_file_locations() {
        let [v1, v2] = oom_files(Path::new("/sys/fs/cgroup"), "/berth/x");
        assert_eq!(
            v1,
            Path::new("/sys/fs/cgroup/memory/berth/x/memory.oom_control")
        );
        assert_eq!(v2, Path::new("/sys/fs/cgroup/berth/x/memory.events"));
    }
}
