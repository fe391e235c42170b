//! A task's secret and config files: one tmpfs per task, bind-mounted file by file into
//! its container.
//!
//! Owns: the tmpfs at `<exec-root>/task-files/<task id>` (mode 0700, sized to its files),
//! writing each file there with its owner and mode, the read-only bind mounts
//! (`HostConfig.Mounts`) that put them at their targets, and unmounting a task's tmpfs once
//! the task is gone.
//!
//! Does not own: which files a task has ([`super::task_spec::task_files`]) or their values
//! (the agent asks the leader, which checks that the task is this node's and uses them).
//!
//! ```text
//!  leader ──mTLS──> values (memory) ──> tmpfs <exec-root>/task-files/<task>/{s0,c0,..}
//!                                           └─ bind, read-only ─> /run/secrets/<name>, <config target>
//! ```
//!
//! Nothing here touches the node's disk: the values live in the tmpfs (RAM) and in this
//! process's memory while they are written; the container's stored create body names only
//! the tmpfs paths. Swarm's dockerd, by contrast, keeps them in `tasks.db` and the
//! container's `config.v2.json`. A host reboot empties the tmpfs; the task's container is
//! then replaced by the orchestrator like any task whose node restarted.

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::ServiceError;

/// A file to put into a task's container.
pub struct TaskFile {
    /// Absolute path in the container.
    pub target: String,
    /// The value (a secret's plaintext: kept only in memory and in the tmpfs).
    pub data: Vec<u8>,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

impl std::fmt::Debug for TaskFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFile")
            .field("target", &self.target)
            .field("len", &self.data.len())
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

impl Drop for TaskFile {
    fn drop(&mut self) {
        self.data.fill(0);
    }
}

/// The tmpfs size for `files`: their bytes plus a page each and one for the directory.
pub fn tmpfs_size(files: &[TaskFile]) -> usize {
    const PAGE: usize = 4096;
    files
        .iter()
        .map(|f| f.data.len().div_ceil(PAGE) * PAGE + PAGE)
        .sum::<usize>()
        + PAGE
}

/// The bind mounts (Engine API `HostConfig.Mounts` entries) of `files` written in `dir`
/// as `f0`, `f1`, ... in order.
pub fn bind_mounts(dir: &Path, files: &[TaskFile]) -> Vec<Value> {
    files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({
                "Type": "bind",
                "Source": dir.join(format!("f{i}")).display().to_string(),
                "Target": f.target,
                "ReadOnly": true,
            })
        })
        .collect()
}

/// The task-files directory of one node.
#[derive(Debug, Clone)]
pub struct TaskFiles {
    root: PathBuf,
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ServiceError + 'a {
    move |e| ServiceError::io(what, path, e)
}

impl TaskFiles {
    /// Files under `<exec_root>/task-files`.
    pub fn new(exec_root: &Path) -> Self {
        TaskFiles {
            root: exec_root.join("task-files"),
        }
    }

    fn dir(&self, task_id: &str) -> PathBuf {
        self.root.join(task_id)
    }

    /// Whether `dir` is a mount point (another device than its parent).
    fn is_mounted(dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
            (Ok(d), Some(Ok(p))) => d.dev() != p.dev(),
            _ => false,
        }
    }

    /// Mounts the task's tmpfs (again, if it exists), writes `files` into it and returns
    /// the bind mounts that put them at their targets.
    pub fn prepare(&self, task_id: &str, files: &[TaskFile]) -> Result<Vec<Value>, ServiceError> {
        let dir = self.dir(task_id);
        if Self::is_mounted(&dir) {
            self.release(task_id)?;
        }
        std::fs::create_dir_all(&dir).map_err(io_err("create task files dir", &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod task files dir", &dir))?;
        let options = format!("mode=0700,size={}", tmpfs_size(files));
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some(options.as_str()),
        )
        .map_err(|e| ServiceError::io("mount task files tmpfs", &dir, e.into()))?;
        let written = (|| {
            for (i, f) in files.iter().enumerate() {
                let path = dir.join(format!("f{i}"));
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err("create task file", &path))?;
                out.write_all(&f.data)
                    .map_err(io_err("write task file", &path))?;
                std::os::unix::fs::fchown(&out, Some(f.uid), Some(f.gid))
                    .map_err(io_err("chown task file", &path))?;
                out.set_permissions(std::fs::Permissions::from_mode(f.mode))
                    .map_err(io_err("chmod task file", &path))?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = self.release(task_id);
            return Err(e);
        }
        Ok(bind_mounts(&dir, files))
    }

    /// Unmounts the task's tmpfs (lazily: containers keep their own bind mounts until they
    /// go) and removes its directory. Nothing to do when there is none.
    pub fn release(&self, task_id: &str) -> Result<(), ServiceError> {
        let dir = self.dir(task_id);
        if Self::is_mounted(&dir) {
            nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| ServiceError::io("unmount task files tmpfs", &dir, e.into()))?;
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ServiceError::io("remove task files dir", &dir, e)),
        }
    }

    /// Releases the files of every task not in `keep` (their records are gone), logging
    /// what fails and going on.
    pub fn sweep(&self, keep: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            if let Err(e) = self.release(&name) {
                tracing::warn!(task = %name, error = %e, "releasing a task's secret and config files");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(target: &str, data: &[u8]) -> TaskFile {
        TaskFile {
            target: target.into(),
            data: data.to_vec(),
            uid: 1,
            gid: 2,
            mode: 0o400,
        }
    }

    #[test]
    fn mounts_and_size_are_planned_from_the_files() {
        let files = [file("/run/secrets/a", b"x"), file("/etc/c", &[0; 5000])];
        let mounts = bind_mounts(Path::new("/r/task-files/t1"), &files);
        assert_eq!(
            mounts[0],
            json!({"Type": "bind", "Source": "/r/task-files/t1/f0", "Target": "/run/secrets/a", "ReadOnly": true})
        );
        assert_eq!(mounts[1]["Target"], "/etc/c");
        assert_eq!(tmpfs_size(&files), 4096 * 2 + 4096 * 3 + 4096);
        assert!(!format!("{:?}", files[0]).contains('x'));
    }

    /// As root (the test environment): the files land on a tmpfs with their owner and mode,
    /// and release unmounts and removes it.
    #[test]
    fn files_are_written_on_a_tmpfs_and_released() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let tf = TaskFiles::new(tmp.path());
        let mounts = tf
            .prepare("t1", &[file("/run/secrets/a", b"hunter2")])
            .unwrap();
        let src = PathBuf::from(mounts[0]["Source"].as_str().unwrap());
        assert_eq!(std::fs::read(&src).unwrap(), b"hunter2");
        use std::os::unix::fs::MetadataExt as _;
        let md = std::fs::metadata(&src).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (1, 2, 0o400));
        assert!(TaskFiles::is_mounted(&tf.dir("t1")));
        // Preparing again (a restarted bring-up) replaces the files.
        tf.prepare("t1", &[file("/x", b"two")]).unwrap();
        tf.sweep(&HashSet::from(["t1".to_string()]));
        assert!(TaskFiles::is_mounted(&tf.dir("t1")));
        tf.sweep(&HashSet::new());
        assert!(!tf.dir("t1").exists());
    }
}
