//! Local volumes: directories under `<data-root>/volumes/<name>/_data`, recorded in the
//! state database, removable only when no container uses them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::ServiceError;
use crate::store::{Store, VOLUMES};

/// The label Docker puts on volumes created without a name.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// A volume as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRecord {
    pub name: String,
    pub driver: String,
    pub mountpoint: PathBuf,
    /// RFC 3339.
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

impl VolumeRecord {
    pub fn is_anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }
}

/// What `create` is asked for.
#[derive(Debug, Clone, Default)]
pub struct CreateVolume {
    pub name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// Which volumes `list` and `prune` select.
#[derive(Debug, Clone, Default)]
pub struct VolumeFilter {
    /// Name patterns, any of which matches (see [`super::pattern::Pattern`]).
    pub names: Vec<String>,
    /// `key` or `key=value`.
    pub labels: Vec<String>,
    /// `label!` filters: volumes with any of these labels are left out.
    pub not_labels: Vec<String>,
    pub dangling: Option<bool>,
    pub drivers: Vec<String>,
    /// Prune named volumes too (API >= 1.42 prunes only anonymous ones by default).
    pub all: bool,
}

/// The volumes of this node.
#[derive(Debug, Clone)]
pub struct VolumeService {
    root: PathBuf,
    store: Store,
    state: Arc<Mutex<VolumeState>>,
}

#[derive(Debug, Default)]
struct VolumeState {
    volumes: BTreeMap<String, VolumeRecord>,
    /// Container IDs using each volume.
    users: HashMap<String, BTreeSet<String>>,
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_volume_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    name.len() >= 2 && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn label_matches(labels: &BTreeMap<String, String>, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(want),
    }
}

impl VolumeService {
    /// Loads the volumes recorded under `data_root`.
    pub fn open(data_root: &std::path::Path, store: Store) -> Result<Self, ServiceError> {
        let root = data_root.join("volumes");
        std::fs::create_dir_all(&root).map_err(|e| ServiceError::io("create", &root, e))?;
        let volumes = store.list::<VolumeRecord>(VOLUMES)?.into_iter().collect();
        Ok(VolumeService {
            root,
            store,
            state: Arc::new(Mutex::new(VolumeState {
                volumes,
                users: HashMap::new(),
            })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VolumeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a volume; an existing volume of the same name is returned unchanged.
    pub fn create(&self, req: CreateVolume, now: &str) -> Result<VolumeRecord, ServiceError> {
        let driver = req
            .driver
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "local".into());
        if driver != "local" {
            return Err(ServiceError::not_found(format!(
                "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            )));
        }
        if !req.driver_opts.is_empty() {
            let keys: Vec<&str> = req.driver_opts.keys().map(String::as_str).collect();
            return Err(ServiceError::invalid(format!(
                "local volume driver options are not supported by berth: {}",
                keys.join(", ")
            )));
        }
        let mut labels = req.labels;
        let name = match req.name.filter(|n| !n.is_empty()) {
            Some(n) => n,
            None => {
                labels.insert(ANONYMOUS_LABEL.into(), String::new());
                random_hex64()
            }
        };
        if !valid_volume_name(&name) {
            return Err(ServiceError::invalid(format!(
                "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
            )));
        }
        let mut st = self.lock();
        if let Some(v) = st.volumes.get(&name) {
            return Ok(v.clone());
        }
        let dir = self.root.join(&name);
        let data = dir.join("_data");
        std::fs::create_dir_all(&data).map_err(|e| ServiceError::io("create", &data, e))?;
        let rec = VolumeRecord {
            name: name.clone(),
            driver,
            mountpoint: data,
            created_at: now.to_string(),
            labels,
            options: BTreeMap::new(),
        };
        if let Err(e) = self.store.put(VOLUMES, &name, &rec) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        st.volumes.insert(name, rec.clone());
        Ok(rec)
    }

    pub fn inspect(&self, name: &str) -> Result<VolumeRecord, ServiceError> {
        self.lock()
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| ServiceError::not_found(format!("get {name}: no such volume")))
    }

    /// Containers using `name`.
    pub fn users(&self, name: &str) -> Vec<String> {
        self.lock()
            .users
            .get(name)
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records that `container` uses `name` (it must exist).
    pub fn acquire(&self, name: &str, container: &str) -> Result<VolumeRecord, ServiceError> {
        let mut st = self.lock();
        let rec = st
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| ServiceError::not_found(format!("get {name}: no such volume")))?;
        st.users
            .entry(name.to_string())
            .or_default()
            .insert(container.to_string());
        Ok(rec)
    }

    /// Records that `container` no longer uses `name`.
    pub fn release(&self, name: &str, container: &str) {
        let mut st = self.lock();
        if let Some(u) = st.users.get_mut(name) {
            u.remove(container);
            if u.is_empty() {
                st.users.remove(name);
            }
        }
    }

    pub fn list(&self, f: &VolumeFilter) -> Vec<VolumeRecord> {
        let names = super::pattern::AnyPattern::new(&f.names);
        let st = self.lock();
        st.volumes
            .values()
            .filter(|v| names.matches(&v.name))
            .filter(|v| f.labels.iter().all(|l| label_matches(&v.labels, l)))
            .filter(|v| !f.not_labels.iter().any(|l| label_matches(&v.labels, l)))
            .filter(|v| f.drivers.is_empty() || f.drivers.contains(&v.driver))
            .filter(|v| match f.dangling {
                None => true,
                Some(d) => d == st.users.get(&v.name).is_none_or(|u| u.is_empty()),
            })
            .cloned()
            .collect()
    }

    /// Removes a volume; refused while a container uses it. With `force`, a missing
    /// volume is not an error.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), ServiceError> {
        let mut st = self.lock();
        if !st.volumes.contains_key(name) {
            return if force {
                Ok(())
            } else {
                Err(ServiceError::not_found(format!(
                    "get {name}: no such volume"
                )))
            };
        }
        if let Some(users) = st.users.get(name).filter(|u| !u.is_empty()) {
            let ids: Vec<&str> = users.iter().map(String::as_str).collect();
            return Err(ServiceError::conflict(format!(
                "remove {name}: volume is in use - [{}]",
                ids.join(", ")
            )));
        }
        let dir = self.root.join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ServiceError::io("remove", &dir, e)),
        }
        self.store.delete(VOLUMES, name)?;
        st.volumes.remove(name);
        Ok(())
    }

    /// Removes unused volumes (anonymous ones unless `all`); returns names and bytes freed.
    pub fn prune(&self, f: &VolumeFilter) -> Result<(Vec<String>, u64), ServiceError> {
        let candidates: Vec<VolumeRecord> = self
            .list(&VolumeFilter {
                dangling: Some(true),
                ..f.clone()
            })
            .into_iter()
            .filter(|v| f.all || v.is_anonymous())
            .collect();
        let mut removed = Vec::new();
        let mut bytes = 0;
        for v in candidates {
            let size = dir_size(&v.mountpoint);
            match self.remove(&v.name, false) {
                Ok(()) => {
                    removed.push(v.name);
                    bytes += size;
                }
                // Taken into use since it was listed: keep it.
                Err(ServiceError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((removed, bytes))
    }
}

/// Bytes used by regular files under `path` (not following symlinks).
pub fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                total += md.len();
            }
        }
    }
    total
}

/// 64 random lowercase hex digits: Docker's shape for IDs and anonymous volume names.
pub fn random_hex64() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-22T00:00:00Z";

    fn svc() -> (tempfile::TempDir, VolumeService) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let svc = VolumeService::open(dir.path(), store).unwrap();
        (dir, svc)
    }

    #[test]
    fn names_follow_dockers_rule() {
        assert!(valid_volume_name("data"));
        assert!(valid_volume_name("a.b-c_d"));
        assert!(!valid_volume_name("x"));
        assert!(!valid_volume_name("-x"));
        assert!(!valid_volume_name("/host/dir"));
        assert!(!valid_volume_name("a b"));
    }

    #[test]
    fn create_is_idempotent_and_persists() {
        let (dir, s) = svc();
        let named = CreateVolume {
            name: Some("data".into()),
            ..Default::default()
        };
        let a = s.create(named.clone(), NOW).unwrap();
        assert!(a.mountpoint.ends_with("volumes/data/_data"));
        assert!(a.mountpoint.is_dir());
        std::fs::write(a.mountpoint.join("f"), b"x").unwrap();
        let b = s.create(named, "later").unwrap();
        assert_eq!(a, b, "second create returns the existing volume");
        let anon = s.create(CreateVolume::default(), NOW).unwrap();
        assert_eq!(anon.name.len(), 64);
        assert!(anon.is_anonymous());

        drop(s); // one process opens the state database at a time
        let store = Store::open(dir.path()).unwrap();
        let again = VolumeService::open(dir.path(), store).unwrap();
        assert_eq!(again.inspect("data").unwrap(), a);
        assert_eq!(again.list(&VolumeFilter::default()).len(), 2);
    }

    #[test]
    fn bad_input_changes_nothing() {
        let (_dir, s) = svc();
        let bad = s.create(
            CreateVolume {
                name: Some("../escape".into()),
                ..Default::default()
            },
            NOW,
        );
        assert!(matches!(bad, Err(ServiceError::InvalidArgument { .. })));
        let plugin = s.create(
            CreateVolume {
                name: Some("v1".into()),
                driver: Some("nfs".into()),
                ..Default::default()
            },
            NOW,
        );
        assert!(matches!(plugin, Err(ServiceError::NotFound { .. })));
        assert!(s.list(&VolumeFilter::default()).is_empty());
        assert!(matches!(
            s.inspect("nope"),
            Err(ServiceError::NotFound { .. })
        ));
        assert!(s.remove("nope", true).is_ok());
    }

    #[test]
    fn in_use_volumes_are_kept() {
        let (_dir, s) = svc();
        let v = s
            .create(
                CreateVolume {
                    name: Some("busy".into()),
                    ..Default::default()
                },
                NOW,
            )
            .unwrap();
        s.acquire("busy", "c1").unwrap();
        assert!(matches!(
            s.remove("busy", false),
            Err(ServiceError::Conflict { .. })
        ));
        let all = VolumeFilter {
            all: true,
            ..Default::default()
        };
        assert_eq!(s.prune(&all).unwrap().0, Vec::<String>::new());
        assert_eq!(
            s.list(&VolumeFilter {
                dangling: Some(false),
                ..Default::default()
            })
            .len(),
            1
        );
        s.release("busy", "c1");
        assert_eq!(s.prune(&all).unwrap().0, vec!["busy".to_string()]);
        assert!(!v.mountpoint.exists());
    }

    #[test]
    fn prune_keeps_named_volumes_unless_all() {
        let (_dir, s) = svc();
        s.create(
            CreateVolume {
                name: Some("named".into()),
                labels: [("team".to_string(), "a".to_string())].into(),
                ..Default::default()
            },
            NOW,
        )
        .unwrap();
        let anon = s.create(CreateVolume::default(), NOW).unwrap();
        let (removed, _) = s.prune(&VolumeFilter::default()).unwrap();
        assert_eq!(removed, vec![anon.name]);
        let by_label = VolumeFilter {
            labels: vec!["team=a".into()],
            ..Default::default()
        };
        assert_eq!(s.list(&by_label).len(), 1);
        let other = VolumeFilter {
            labels: vec!["team=b".into()],
            ..Default::default()
        };
        assert!(s.list(&other).is_empty());
    }
}
