//! Adapter to libcgroups: statistics, process lists and OOM events of a container's cgroup.
//!
//! Owns the reads of cgroup files for one container, given its cgroups path, and the
//! warm-up write that keeps container starts from waiting on the kernel (see
//! [`attach_warmer`]). Works on cgroup
//! v1, the hybrid layout (v1 controllers plus a cgroup2 mount) and pure v2, as libcgroups
//! detects it. Does not create cgroups (libcontainer does, from the spec); changes a live
//! container's limits (`docker update`, [`apply`]); removes them when a container's init
//! has exited ([`remove_dirs`]).

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

/// Applies new limits to a live container's cgroup through libcgroups' `apply` (memory,
/// cpu, cpuset and pids controllers, whichever `resources` names; v1, hybrid or v2).
/// `resources` must carry no device rules: on v1 libcgroups would rewrite the device
/// cgroup, starting with a deny-all, under the running container. `disable_oom_killer`
/// is the container's own `--oom-kill-disable` (libcgroups rewrites `memory.oom_control`).
/// Errors carry the kernel's refusal (e.g. EBUSY for a memory limit below usage).
pub fn apply(
    id: &str,
    cgroups_path: &str,
    resources: &oci_spec::runtime::LinuxResources,
    disable_oom_killer: bool,
) -> Result<()> {
    manager(id, cgroups_path)?
        .apply(&libcgroups::common::ControllerOpt {
            resources,
            disable_oom_killer,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| RuntimeError::Cgroup {
            op: "update",
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

/// A job for a thread of its own: a no-op move of this process into the cgroup it is
/// already in, so that the cgroup joins libcontainer makes while starting a container do
/// not wait for an RCU grace period. `None` when this process's cgroup is unknown.
///
/// Any write to a `cgroup.procs` file takes the kernel's global `cgroup_threadgroup_rwsem`
/// for writing; when no such write happened in roughly the last grace period, that waits
/// for one (5-8 ms on this kind of host, measured), and writes within it are nearly free
/// (0.1-0.3 ms). libcontainer's intermediate process joins the container's cgroups a few
/// milliseconds into every start (after the shim was spawned and the rootfs mounted): with
/// this write running meanwhile, the grace period elapses in parallel with that work
/// instead of after it. Best effort: any failure only means the start does not get faster.
pub fn attach_warmer() -> Option<impl FnOnce() + Send + 'static> {
    let procs = own_procs_file()?;
    Some(move || {
        let _ = std::fs::write(&procs, std::process::id().to_string());
    })
}

/// A mounted cgroup hierarchy, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    /// `None` for cgroup2; the controllers (super options) of a v1 hierarchy.
    controllers: Option<Vec<String>>,
    /// The hierarchy path shown at the mount point.
    root: PathBuf,
    point: PathBuf,
}

/// `cgroup.procs` of this process's own cgroup in the cgroup2 hierarchy, else in the first
/// mounted v1 hierarchy. The mounts are read once per process (mountinfo can be long and
/// this runs on every container start); the process's cgroup is read each time, so a
/// daemon moved to another cgroup is never moved back.
fn own_procs_file() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    own_procs_file_from(&own, mounts())
}

/// The mounted cgroup hierarchies, read once per process.
fn mounts() -> &'static [CgroupMount] {
    static MOUNTS: std::sync::OnceLock<Vec<CgroupMount>> = std::sync::OnceLock::new();
    MOUNTS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| cgroup_mounts(&m))
            .unwrap_or_default()
    })
}

/// Removes the container's cgroup (`cgroups_path`, absolute as in the spec) from every
/// mounted hierarchy, first killing whatever is still in it; hierarchies without it are
/// skipped. This is what libcgroups' `remove` does, minus building a cgroup manager, which
/// parses the mount table and `/proc/self/cgroup` once per controller (most of the 2 ms
/// libcontainer's delete took here, on the path between a container's exit and its exit
/// record). Errors name the first directory that would not go.
pub fn remove_dirs(cgroups_path: &str) -> std::io::Result<()> {
    let rel = Path::new(cgroups_path.trim_start_matches('/'));
    let mut first_err = None;
    for m in mounts() {
        if let Err(e) = remove_dir_killing(&m.point.join(rel)) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// `e` with `dir` in its message.
fn naming(dir: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()))
}

/// Kills the processes of one cgroup directory and removes it, retrying while the kernel
/// still counts exiting processes in it (up to 2 s, as libcgroups allows about as long).
fn remove_dir_killing(dir: &Path) -> std::io::Result<()> {
    use std::io::ErrorKind::NotFound;
    let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(p) => p,
        Err(e) if e.kind() == NotFound => return Ok(()),
        Err(e) => return Err(naming(dir, e)),
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == NotFound => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => return Err(naming(dir, e)),
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// The cgroup hierarchies of a `/proc/self/mountinfo` text, cgroup2 first.
fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut mounts: Vec<CgroupMount> = mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let (root, point, fstype) = (fields.get(3)?, fields.get(4)?, fields.get(sep + 1)?);
            let controllers = match *fstype {
                "cgroup2" => None,
                "cgroup" => Some(
                    fields
                        .get(sep + 3)
                        .copied()
                        .unwrap_or("")
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                ),
                _ => return None,
            };
            Some(CgroupMount {
                controllers,
                root: PathBuf::from(root),
                point: PathBuf::from(point),
            })
        })
        .collect();
    mounts.sort_by_key(|m| m.controllers.is_some());
    mounts
}

/// Pure part of [`own_procs_file`]: a `/proc/self/cgroup` text and the mounted hierarchies.
fn own_procs_file_from(own: &str, mounts: &[CgroupMount]) -> Option<PathBuf> {
    // (hierarchy controllers, path) per line: "0::/a" is cgroup2, "4:memory:/b" v1.
    let groups: Vec<(&str, &str)> = own
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _id = f.next()?;
            Some((f.next()?, f.next()?))
        })
        .collect();
    mounts.iter().find_map(|m| {
        let path = match &m.controllers {
            None => groups.iter().find(|(c, _)| c.is_empty()).map(|(_, p)| *p),
            Some(opts) => groups
                .iter()
                .find(|(c, _)| !c.is_empty() && c.split(',').all(|c| opts.iter().any(|o| o == c)))
                .map(|(_, p)| *p),
        }?;
        // The mount shows the hierarchy from `root` down; our path is from its top.
        let rel = Path::new(path).strip_prefix(&m.root).ok()?;
        Some(m.point.join(rel).join("cgroup.procs"))
    })
}

#[cfg(test)]
mod warm_tests {
    use super::*;

    const MOUNTINFO: &str = "\
29 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
30 29 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
33 29 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
34 29 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct";

    #[test]
    fn the_cgroup2_mount_is_preferred_and_paths_join() {
        let own = "4:memory:/m/x\n2:cpu,cpuacct:/c\n0::/user/slice\n";
        assert_eq!(
            own_procs_file_from(own, &cgroup_mounts(MOUNTINFO)),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/user/slice/cgroup.procs"
            ))
        );
    }

    #[test]
    fn v1_only_uses_the_matching_hierarchy() {
        let own = "4:memory:/m/x\n2:cpu,cpuacct:/c\n";
        let v1: String = MOUNTINFO
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            own_procs_file_from(own, &cgroup_mounts(&v1)),
            Some(PathBuf::from("/sys/fs/cgroup/memory/m/x/cgroup.procs"))
        );
    }

    #[test]
    fn a_mount_of_a_subtree_is_joined_below_its_root() {
        let mi = "30 29 0:27 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        assert_eq!(
            own_procs_file_from("0::/kubepods/pod1\n", &cgroup_mounts(mi)),
            Some(PathBuf::from("/sys/fs/cgroup/pod1/cgroup.procs"))
        );
        assert_eq!(
            own_procs_file_from("0::/elsewhere\n", &cgroup_mounts(mi)),
            None
        );
    }
}
